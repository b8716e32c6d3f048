//! Which services a failure rolls back, why each one, and in what order.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;

use serde::Serialize;

use crate::model::{RollbackScope, ServiceName};
use crate::plan::graph::{EdgeKind, NodeId, ServiceGraph};
use crate::spec::ServiceSpec;

/// What to compute a rollback for.
#[derive(Debug, Clone, Copy)]
pub struct RollbackRequest<'a> {
    /// The service that failed (or that an operator asked to roll back), or `None` for
    /// the whole release.
    pub failed: Option<&'a ServiceName>,
    /// Services that failed together with `failed` (a failed gate fails every service
    /// it runs after); each is treated like `failed`. Ignored when `failed` is `None`.
    pub also_failed: &'a [ServiceName],
    /// Which services the rollback reaches; ignored when `failed` is `None`.
    pub scope: RollbackScope,
    /// Services that have started in the release (deployed to at least one host).
    /// Only these are rolled back; services not started are cancelled instead.
    pub started: &'a BTreeSet<ServiceName>,
    /// Services that finished longer than their `rollback_window` ago: not rolled back
    /// automatically; the rollback pauses at them. The engine decides this from its clock.
    pub expired: &'a BTreeSet<ServiceName>,
}

/// The services a rollback reaches and the steps that take them back, dependents first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RollbackPlan {
    /// The failed service, or `None` for a whole-release rollback.
    pub failed: Option<ServiceName>,
    /// The scope that was applied.
    pub scope: RollbackScope,
    /// Every service in the rollback set, with why it is there, in rollback order.
    pub members: Vec<Member>,
    /// What to do, in order. A [`RollbackStep::Pause`] stops the rollback until a human
    /// resumes it.
    pub steps: Vec<RollbackStep>,
}

impl RollbackPlan {
    /// The names in the rollback set, in rollback order.
    pub fn services(&self) -> Vec<&ServiceName> {
        self.members.iter().map(|m| &m.service).collect()
    }
}

/// A service in the rollback set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Member {
    /// The service.
    pub service: ServiceName,
    /// Why it rolls back, as a sentence fragment: `failed`,
    /// `depends on payments (hard)`, `requires contract `payments-api` from payments`.
    pub reason: String,
}

/// One step of a rollback.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum RollbackStep {
    /// Roll the service back to its previous version on every host it reached.
    Rollback {
        /// The service.
        service: ServiceName,
    },
    /// Run the service's `migrate_down` hook once (with the new version's code, which
    /// knows how to undo its migration), after every dependent is back.
    MigrateDown {
        /// The service.
        service: ServiceName,
    },
    /// Stop and wait for a human.
    Pause {
        /// The service the rollback stopped at.
        service: ServiceName,
        /// Why it cannot go on by itself.
        reason: String,
    },
}

impl fmt::Display for RollbackStep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RollbackStep::Rollback { service } => write!(f, "roll back {service}"),
            RollbackStep::MigrateDown { service } => write!(f, "run migrate_down of {service}"),
            RollbackStep::Pause { service, reason } => write!(f, "pause at {service}: {reason}"),
        }
    }
}

/// Computes the rollback set and its steps.
pub(crate) fn compute(graph: &ServiceGraph, services: &[ServiceSpec], req: RollbackRequest<'_>) -> RollbackPlan {
    let started = |v: NodeId| req.started.contains(graph.name(v));
    let expired = |s: &ServiceName| req.expired.contains(s);
    let failure = Failure { failed: req.failed, also_failed: req.also_failed, scope: req.scope };
    compute_with(graph, services, failure, &started, &expired)
}

/// The rollback a failure of `failed` triggers under `scope` when every service has
/// started and none is past its window. Its cost follows the size of the rollback set,
/// not of the release (a plan shows one for every service).
pub(crate) fn if_everything_started(
    graph: &ServiceGraph,
    services: &[ServiceSpec],
    failed: &ServiceName,
    scope: RollbackScope,
) -> RollbackPlan {
    let failure = Failure { failed: Some(failed), also_failed: &[], scope };
    compute_with(graph, services, failure, &|_| true, &|_| false)
}

/// What failed and how far the rollback reaches: a [`RollbackRequest`] without the
/// sets of started and expired services, which [`compute_with`] asks about instead.
#[derive(Clone, Copy)]
struct Failure<'a> {
    failed: Option<&'a ServiceName>,
    also_failed: &'a [ServiceName],
    scope: RollbackScope,
}

/// [`compute`] with whether a service started, and whether it is past its window,
/// asked through `started` and `expired`.
fn compute_with(
    graph: &ServiceGraph,
    services: &[ServiceSpec],
    req: Failure<'_>,
    started: &dyn Fn(NodeId) -> bool,
    expired: &dyn Fn(&ServiceName) -> bool,
) -> RollbackPlan {
    let n = graph.len();
    // Only the services in the set: a cascade from one service touches its dependents,
    // not the whole release.
    let mut reason: BTreeMap<NodeId, String> = BTreeMap::new();

    match req.failed.and_then(|f| graph.node(f)) {
        None => {
            for v in (0..n).filter(|&v| started(v)) {
                reason.insert(v, "the whole release rolls back".to_owned());
            }
        }
        Some(failed) => {
            let seeds: Vec<NodeId> =
                std::iter::once(failed).chain(req.also_failed.iter().filter_map(|s| graph.node(s))).collect();
            for &seed in &seeds {
                reason.insert(seed, "failed".to_owned());
            }
            match req.scope {
                RollbackScope::Service => {}
                RollbackScope::Release => {
                    for v in (0..n).filter(|&v| started(v)) {
                        reason.entry(v).or_insert_with(|| format!("scope is release: {} failed", graph.name(failed)));
                    }
                }
                RollbackScope::Cascade => {
                    let mut queue = VecDeque::from(seeds);
                    while let Some(v) = queue.pop_front() {
                        for e in graph.dependents(v) {
                            let w = e.dependent;
                            if reason.contains_key(&w) || !started(w) || !e.kind.cascades() {
                                continue;
                            }
                            let why = match &e.kind {
                                EdgeKind::Dep(kind) => format!("depends on {} ({kind})", graph.name(v)),
                                EdgeKind::Contract { contract, .. } => format!(
                                    "requires contract `{contract}` from {}, whose previous version does not serve a compatible one",
                                    graph.name(v)
                                ),
                            };
                            reason.insert(w, why);
                            queue.push_back(w);
                        }
                    }
                }
            }
        }
    }

    // Dependents first: a dependent's wave is always above its dependencies', so the
    // highest wave goes first; inside a wave, release order.
    let mut order: Vec<(NodeId, String)> = reason.into_iter().collect();
    order.sort_by_key(|&(v, _)| (std::cmp::Reverse(graph.wave(v)), v));

    let mut members = Vec::with_capacity(order.len());
    let mut steps = Vec::with_capacity(order.len());
    for (v, why) in order {
        let service = graph.name(v).clone();
        let spec = &services[v];
        members.push(Member { service: service.clone(), reason: why });
        if expired(&service) {
            let window = humantime::format_duration(spec.policy.rollback_window);
            steps.push(RollbackStep::Pause {
                service,
                reason: format!(
                    "finished longer than its rollback_window ({window}) ago; not rolled back automatically"
                ),
            });
            continue;
        }
        match (&spec.hooks.migrate, &spec.hooks.migrate_down) {
            (Some(_), None) => steps.push(RollbackStep::Pause {
                service,
                reason: "its migration has no migrate_down, so it cannot be undone automatically; its dependents are back on their previous versions".to_owned(),
            }),
            (Some(_), Some(_)) => {
                steps.push(RollbackStep::MigrateDown { service: service.clone() });
                steps.push(RollbackStep::Rollback { service });
            }
            (None, _) => steps.push(RollbackStep::Rollback { service }),
        }
    }
    RollbackPlan { failed: req.failed.cloned(), scope: req.scope, members, steps }
}
