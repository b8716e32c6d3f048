//! The engine's decisions: given a release's [`Run`], its plan and the time, what to
//! commit next. Pure: no I/O, no clock (the time is an argument), no
//! randomness; the same inputs always give the same facts.

use std::collections::BTreeSet;
use std::time::Duration;

use flotilla_shared::analysis::Verdict;
use flotilla_shared::inventory::Fleet;
use flotilla_shared::model::{HostCount, HostId, OnFailure, RollbackScope, ServiceName};
use flotilla_shared::plan::{NodeId, Plan, RollbackRequest, RollbackStep, split_batches};
use flotilla_shared::window::Hold;

use super::ENGINE;
use super::analysis::{self, Next, SampleRequest};
use super::fact::{BatchSpec, CommandId, Dispatch, Fact, Outcome, RollbackAction, Terminal};
use super::run::{GateState, HostState, Phase, Run, ServiceRun, ServiceState, StageState, StepKind};
use super::text::{self, count};

/// What the engine works from besides the run: the release's id, its plan and the
/// fleet it was planned against.
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    /// The release id (command ids are derived from it).
    pub release: &'a str,
    /// The plan, built from the submitted spec and `fleet`.
    pub plan: &'a Plan,
    /// The fleet as it was when the release was created (previous versions, labels).
    pub fleet: &'a Fleet,
}

/// What the engine knows of the world right now.
pub struct Env<'a> {
    /// The leader's clock.
    pub now_unix_ms: i64,
    /// Whether a host's agent is online.
    pub online: &'a dyn Fn(&HostId) -> bool,
    /// Whether the deployment windows hold a batch of a service on these hosts now
    /// (`flotilla_shared::window::hold` over the cluster's windows at `now_unix_ms`).
    /// Asked only before a batch or a migration is sent, never on the rollback path.
    pub hold: &'a dyn Fn(&ServiceName, &[HostId]) -> Option<Hold>,
}

fn no_windows(_: &ServiceName, _: &[HostId]) -> Option<Hold> {
    None
}

impl<'a> Env<'a> {
    /// The world at `now_unix_ms` with these agents online and no deployment windows.
    pub fn new(now_unix_ms: i64, online: &'a dyn Fn(&HostId) -> bool) -> Self {
        Self { now_unix_ms, online, hold: &no_windows }
    }

    /// The same world with deployment windows.
    pub fn with_windows(self, hold: &'a dyn Fn(&ServiceName, &[HostId]) -> Option<Hold>) -> Self {
        Self { hold, ..self }
    }
}

impl std::fmt::Debug for Env<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Env").field("now_unix_ms", &self.now_unix_ms).finish_non_exhaustive()
    }
}

/// What to commit next, and when to look again if nothing else happens.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Decision {
    /// Facts to propose, in order; each decided against `run.version + position`.
    pub facts: Vec<Fact>,
    /// The earliest deadline that would change the decision (ms since the epoch).
    pub wake_at: Option<i64>,
    /// Rounds of canary analysis queries due: the leader runs them and commits what
    /// they return as [`Fact::AnalysisSampled`].
    pub samples: Vec<SampleRequest>,
}

struct Decider<'a, 'r> {
    ctx: Context<'a>,
    env: &'a Env<'a>,
    run: &'r Run,
    next_command: u64,
    out: Decision,
}

/// Decides what to commit next for a release.
pub fn decide(run: &Run, ctx: Context<'_>, env: &Env<'_>) -> Decision {
    let mut d = Decider { ctx, env, run, next_command: run.next_command, out: Decision::default() };
    d.decide();
    d.out
}

/// A rollback decision for a failure of `failed` (with its scope) or, with `None`, of
/// the whole release: the fact to commit. Used by the engine on failures and by the
/// `Rollback` operator action (`scope` then is cascade for one service).
pub fn rollback_decision(
    run: &Run,
    ctx: Context<'_>,
    now_unix_ms: i64,
    failed: &[ServiceName],
    scope: RollbackScope,
    actor: &str,
    reason: String,
) -> Fact {
    let plan = ctx.plan;
    let started = started_services(run);
    let expired: BTreeSet<ServiceName> = plan
        .spec()
        .services
        .iter()
        .filter(|s| !failed.contains(&s.name))
        .filter(|s| {
            let finished = last_finished(run, &s.name);
            finished > 0 && now_unix_ms.saturating_sub(finished) > millis(s.policy.rollback_window)
        })
        .map(|s| s.name.clone())
        .collect();
    let rb = plan.rollback(RollbackRequest {
        failed: failed.first(),
        also_failed: failed.get(1..).unwrap_or_default(),
        scope,
        started: &started,
        expired: &expired,
    });
    let members: Vec<(ServiceName, String)> =
        rb.members.iter().map(|m| (m.service.clone(), m.reason.clone())).collect();
    let actions = rb
        .steps
        .iter()
        .map(|s| match s {
            RollbackStep::Rollback { service } => RollbackAction::Rollback(service.clone()),
            RollbackStep::MigrateDown { service } => RollbackAction::MigrateDown(service.clone()),
            RollbackStep::Pause { service, reason } => RollbackAction::Pause(service.clone(), reason.clone()),
        })
        .collect();
    let cancelled = if run.is_finished() {
        Vec::new()
    } else {
        plan.spec().services.iter().map(|s| s.name.clone()).filter(|s| !started.contains(s)).collect()
    };
    Fact::RollbackDecided { actor: actor.to_owned(), reason, members, actions, cancelled }
}

/// Services that reached at least one host in the release (a deploy or migration was
/// sent).
pub fn started_services(run: &Run) -> BTreeSet<ServiceName> {
    run.steps
        .values()
        .filter_map(|s| match &s.kind {
            StepKind::Deploy(svc) | StepKind::Migrate(svc) => Some(svc.clone()),
            _ => None,
        })
        .collect()
}

fn last_finished(run: &Run, service: &ServiceName) -> i64 {
    run.stages
        .iter()
        .filter_map(|st| st.services.get(service))
        .filter(|s| s.state == ServiceState::Done)
        .map(|s| s.finished_unix_ms)
        .max()
        .unwrap_or(0)
}

/// The sequence number in a command id (`<release>.<n>`).
fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

fn millis_u64(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl Decider<'_, '_> {
    fn push(&mut self, fact: Fact) {
        self.out.facts.push(fact);
    }

    fn wake(&mut self, at: i64) {
        if at > 0 {
            self.out.wake_at = Some(self.out.wake_at.map_or(at, |w| w.min(at)));
        }
    }

    fn dispatch(&mut self, host: &HostId) -> Dispatch {
        let id = CommandId::new(self.ctx.release, self.next_command);
        self.next_command += 1;
        Dispatch { host: host.clone(), command_id: id }
    }

    fn online(&self, host: &HostId) -> bool {
        (self.env.online)(host)
    }

    fn decide(&mut self) {
        let run = self.run;
        if run.is_finished() || run.paused.is_some() {
            return;
        }
        match run.phase {
            Phase::Pending => self.start_stage(0),
            Phase::RollingBack => self.roll_back(),
            Phase::Forward => {
                if let Some(failure) = &run.failure {
                    self.react_to_failure(&failure.services, &failure.reason);
                    return;
                }
                let stage = run.stage;
                match run.stages.get(stage).map(|s| s.state) {
                    Some(StageState::Running) => self.forward(stage),
                    Some(StageState::Done) => {
                        if stage + 1 < self.ctx.plan.stages().len() {
                            self.start_stage(stage + 1);
                        } else {
                            let n = self.ctx.plan.spec().services.len();
                            self.push(Fact::Finished {
                                terminal: Terminal::Succeeded,
                                reason: format!(
                                    "release succeeded: {} in {}",
                                    count(n, "service", "services"),
                                    count(self.ctx.plan.stages().len(), "stage", "stages")
                                ),
                            });
                        }
                    }
                    _ => {}
                }
            }
            Phase::Finished(_) => {}
        }
    }

    fn start_stage(&mut self, stage: usize) {
        let plan = self.ctx.plan;
        self.push(Fact::StageStarted {
            stage,
            name: plan.stages()[stage].name.clone(),
            services: plan.spec().services.iter().map(|s| s.name.clone()).collect(),
            gates: plan.gates().iter().map(|g| g.name.clone()).collect(),
        });
    }

    fn react_to_failure(&mut self, failed: &[ServiceName], reason: &str) {
        let Some(first) = failed.first().and_then(|f| self.ctx.plan.spec().service(f.as_str())) else { return };
        let stage_name = &self.ctx.plan.stages()[self.run.stage.min(self.ctx.plan.stages().len() - 1)].name;
        let names: Vec<&str> = failed.iter().map(ServiceName::as_str).collect();
        let what = format!("{} failed in stage {stage_name}: {reason}", names.join(", "));
        match first.policy.on_failure {
            OnFailure::Pause => self.push(Fact::Paused {
                actor: ENGINE.to_owned(),
                reason: format!("{what}; on_failure is pause: resume to retry, or roll back, or abort"),
            }),
            OnFailure::Rollback => {
                let fact = rollback_decision(
                    self.run,
                    self.ctx,
                    self.env.now_unix_ms,
                    failed,
                    first.policy.rollback_scope,
                    ENGINE,
                    what,
                );
                self.push(fact);
            }
        }
    }

    // ------------------------------------------------------------------ roll forward

    fn forward(&mut self, stage: usize) {
        let plan = self.ctx.plan;
        let st = &self.run.stages[stage];
        let graph = plan.graph();
        for &v in graph.topological_order() {
            let name = graph.name(v);
            let Some(svc) = st.services.get(name) else { continue };
            let before = self.out.facts.len();
            match svc.state {
                ServiceState::Waiting if self.ready(stage, v) => self.start_service(stage, v),
                ServiceState::Migrating => self.migrating(stage, v, svc),
                ServiceState::Deploying => self.deploying(stage, v, svc),
                ServiceState::Baking => self.baking(stage, v, svc),
                _ => {}
            }
            // A failure (or a pause) is decided alone: the reaction to it comes next.
            if let Some(Fact::ServiceFailed { .. } | Fact::Paused { .. }) = self.out.facts.get(before) {
                let failed = self.out.facts.remove(before);
                self.out.facts = vec![failed];
                return;
            }
        }
        self.gates(stage);
        if self.out.facts.iter().any(|f| matches!(f, Fact::GateDone { passed: false, .. })) {
            self.out.facts.retain(|f| matches!(f, Fact::GateDone { passed: false, .. }));
            self.out.facts.truncate(1);
            return;
        }
        if self.out.facts.is_empty() && self.stage_complete(stage) {
            let await_approval = plan.stages()[stage].approval && stage + 1 < plan.stages().len();
            self.push(Fact::StageDone { stage, await_approval });
        }
    }

    /// Whether a waiting service may start in a stage: every dependency finished there
    /// and every gate it waits for passed there.
    fn ready(&self, stage: usize, v: NodeId) -> bool {
        let graph = self.ctx.plan.graph();
        let st = &self.run.stages[stage];
        let deps_done = graph
            .dependencies(v)
            .all(|e| st.services.get(graph.name(e.dependency)).is_some_and(|s| s.state.finished()));
        let gates_passed = self
            .ctx
            .plan
            .gated_by(v)
            .iter()
            .all(|&g| st.gates.get(&self.ctx.plan.gates()[g].name) == Some(&GateState::Passed));
        deps_done && gates_passed
    }

    fn start_service(&mut self, stage: usize, v: NodeId) {
        let plan = self.ctx.plan;
        let spec = &plan.spec().services[v];
        let (batches, skipped) = match plan.rollout(stage, v) {
            Some(r) => (
                r.batches.iter().map(|b| BatchSpec { name: b.name.clone(), hosts: b.hosts.clone() }).collect(),
                r.skipped.clone(),
            ),
            None => (Vec::new(), Vec::new()),
        };
        let from = batches
            .iter()
            .flat_map(|b: &BatchSpec| b.hosts.iter())
            .map(|h| (h.clone(), self.installed_version(h, &spec.name)))
            .collect();
        self.push(Fact::ServiceStarted {
            stage,
            service: spec.name.clone(),
            version: spec.version.to_string(),
            batches,
            skipped,
            from,
            progress_deadline_ms: millis_u64(spec.policy.progress_deadline),
        });
    }

    fn installed_version(&self, host: &HostId, service: &ServiceName) -> Option<String> {
        self.ctx
            .fleet
            .hosts
            .iter()
            .find(|h| &h.id == host)
            .and_then(|h| h.services.get(service))
            .map(|i| i.version().to_string())
    }

    fn past_deadline(&mut self, stage: usize, svc: &ServiceRun, name: &ServiceName) -> bool {
        if svc.deadline_unix_ms == 0 {
            return false;
        }
        if self.env.now_unix_ms < svc.deadline_unix_ms {
            self.wake(svc.deadline_unix_ms);
            return false;
        }
        let waiting: Vec<&str> = svc
            .hosts
            .iter()
            .filter(|(_, s)| matches!(s, HostState::Deploying(_) | HostState::Baking(_)))
            .map(|(h, _)| h.as_str())
            .collect();
        let pd = flotilla_shared::model::format_duration(Duration::from_millis(svc.progress_deadline_ms));
        let mut reason = format!("no progress for {pd} (progress_deadline)");
        if !waiting.is_empty() {
            reason.push_str(&format!("; no result from {}", waiting.join(", ")));
        }
        self.push(Fact::ServiceFailed { stage, service: name.clone(), reason });
        true
    }

    fn migrating(&mut self, stage: usize, v: NodeId, svc: &ServiceRun) {
        let name = self.ctx.plan.graph().name(v).clone();
        // The latest migration step decides (an interrupted one may have been retried).
        let latest = self
            .run
            .steps
            .iter()
            .filter(|(_, s)| s.kind == StepKind::Migrate(name.clone()))
            .max_by_key(|(id, _)| id.number())
            .map(|(_, s)| s);
        let failed = latest.filter(|s| matches!(&s.outcome, Some((o, _)) if !o.ok()));
        if let Some(step) = failed {
            let why = step.outcome.as_ref().map(|(_, r)| r.clone()).unwrap_or_default();
            self.push(Fact::ServiceFailed {
                stage,
                service: name,
                reason: format!("migrate hook failed on {}: {why}", step.host),
            });
            return;
        }
        self.past_deadline(stage, svc, &name);
    }

    fn deploying(&mut self, stage: usize, v: NodeId, svc: &ServiceRun) {
        let spec = &self.ctx.plan.spec().services[v];
        let name = spec.name.clone();
        if svc.batch >= svc.batches.len() {
            self.push(Fact::ServiceDone { stage, service: name });
            return;
        }
        let k = svc.batch;
        let active: Vec<&HostId> = svc.batches[..=k].iter().flat_map(|b| b.hosts.iter()).collect();
        let state = |h: &HostId| svc.hosts.get(h).cloned().unwrap_or(HostState::Waiting);
        if active.iter().any(|h| matches!(state(h), HostState::Deploying(_))) {
            self.past_deadline(stage, svc, &name);
            return;
        }
        let waiting: Vec<&HostId> = active.iter().copied().filter(|h| state(h) == HostState::Waiting).collect();
        if !waiting.is_empty() {
            // A batch boundary: the deployment windows may hold what comes next.
            let hosts: Vec<HostId> = waiting.iter().map(|h| (*h).clone()).collect();
            if let Some(hold) = (self.env.hold)(&name, &hosts) {
                if let Some(until) = hold.until_unix_ms {
                    self.wake(until);
                }
                if svc.reason != hold.reason {
                    self.push(Fact::WindowHeld {
                        stage,
                        service: name,
                        batch: k,
                        reason: hold.reason,
                        until_unix_ms: hold.until_unix_ms,
                    });
                }
                return;
            }
            if spec.hooks.migrate.is_some() && !self.run.migrated.contains(&name) {
                let host = waiting.iter().copied().find(|h| self.online(h)).cloned();
                match host {
                    Some(h) => {
                        let dispatch = self.dispatch(&h);
                        self.push(Fact::MigrationStarted { stage, service: name, dispatch });
                    }
                    None => self.push(Fact::ServiceFailed {
                        stage,
                        service: name,
                        reason: "no host of its first batch is online to run its migrate hook".to_owned(),
                    }),
                }
                return;
            }
            let (online, offline): (Vec<&HostId>, Vec<&HostId>) = waiting.into_iter().partition(|h| self.online(h));
            let dispatches = online.into_iter().map(|h| self.dispatch(h)).collect();
            self.push(Fact::BatchStarted {
                stage,
                service: name,
                batch: k,
                dispatches,
                offline: offline.into_iter().cloned().collect(),
            });
            return;
        }
        if self.too_many_failed(stage, &name, svc, spec.policy.max_failed) {
            return;
        }
        let deployed: Vec<&HostId> = active.iter().copied().filter(|h| state(h) == HostState::Deployed).collect();
        if !deployed.is_empty() && !spec.policy.bake.is_zero() {
            let dispatches = deployed.into_iter().map(|h| self.dispatch(h)).collect();
            self.push(Fact::BakeStarted {
                stage,
                service: name.clone(),
                batch: k,
                duration_ms: millis_u64(spec.policy.bake),
                dispatches,
            });
            // The analysis samples while the batch bakes.
            if self.run.analysis(stage, &name, k).is_none()
                && let Some(start) = self.analysis_start(stage, v, svc)
            {
                self.push(start);
            }
            return;
        }
        if !self.analysed(stage, v, svc, true) {
            return;
        }
        self.push(Fact::BatchDone { stage, service: name, batch: k });
    }

    fn baking(&mut self, stage: usize, v: NodeId, svc: &ServiceRun) {
        let spec = &self.ctx.plan.spec().services[v];
        let name = spec.name.clone();
        if svc.hosts.values().any(|s| matches!(s, HostState::Baking(_))) {
            if !self.past_deadline(stage, svc, &name) {
                self.analysed(stage, v, svc, false);
            }
            return;
        }
        if self.too_many_failed(stage, &name, svc, spec.policy.max_failed) {
            return;
        }
        if !self.analysed(stage, v, svc, true) {
            return;
        }
        self.push(Fact::BatchDone { stage, service: name, batch: svc.batch });
    }

    // ------------------------------------------------------------------ canary analysis

    /// The analysis of the service's current batch, when the spec asks for one and the
    /// batch has something to judge (see [`analysis::sides`]).
    fn analysis_start(&self, stage: usize, v: NodeId, svc: &ServiceRun) -> Option<Fact> {
        let spec = &self.ctx.plan.spec().services[v];
        let k = svc.batch;
        let state = |h: &HostId| svc.hosts.get(h).cloned().unwrap_or(HostState::Waiting);
        let canary: Vec<HostId> = svc
            .batches
            .get(..=k)?
            .iter()
            .flat_map(|b| b.hosts.iter())
            .filter(|h| matches!(state(h), HostState::Deployed | HostState::Baking(_) | HostState::Done))
            .cloned()
            .collect();
        let mut baseline: Vec<(HostId, String)> = svc
            .batches
            .get(k + 1..)
            .unwrap_or_default()
            .iter()
            .flat_map(|b| b.hosts.iter())
            .filter(|h| state(h) == HostState::Waiting)
            .filter_map(|h| svc.from.get(h).cloned().flatten().map(|v| (h.clone(), v)))
            .collect();
        // No host of the stage is left on the old version (a canary cell of one host per
        // service, or the last batch): the hosts later stages will deploy to still run
        // it, serving at the same time.
        if baseline.is_empty() {
            let plan = self.ctx.plan;
            let target = spec.version.to_string();
            baseline = (stage + 1..plan.stages().len())
                .filter_map(|later| plan.rollout(later, v))
                .flat_map(|r| r.batches.iter().flat_map(|b| b.hosts.iter()))
                .filter_map(|h| self.installed_version(h, &spec.name).filter(|v| *v != target).map(|v| (h.clone(), v)))
                .collect();
        }
        let sides = analysis::sides(spec, canary, baseline)?;
        Some(Fact::AnalysisStarted {
            stage,
            service: spec.name.clone(),
            batch: k,
            metrics: sides.metrics,
            canary: sides.canary,
            baseline: sides.baseline,
            baseline_versions: sides.baseline_versions,
            interval_ms: millis_u64(spec.policy.analysis.interval).max(1),
        })
    }

    /// Whether the batch's analysis lets the batch finish: the service has none at this
    /// batch, or it passed, or a human accepted its marginal or inconclusive verdict.
    /// Otherwise decides what the analysis needs next: to start (again, after a human
    /// resumed past a failed one), a round of queries, its judgement, or the reaction
    /// to its verdict (a failed service, or a pause for a human).
    fn analysed(&mut self, stage: usize, v: NodeId, svc: &ServiceRun, bake_over: bool) -> bool {
        let spec = &self.ctx.plan.spec().services[v];
        if !spec.policy.analyses() {
            return true;
        }
        let Some(a) = self.run.analysis(stage, &spec.name, svc.batch) else {
            return match self.analysis_start(stage, v, svc) {
                Some(start) => {
                    self.push(start);
                    false
                }
                None => true,
            };
        };
        let Some(report) = &a.report else {
            let now = self.env.now_unix_ms;
            match analysis::next(spec, a, now, bake_over) {
                Next::Judge(report) => {
                    self.push(Fact::AnalysisJudged { stage, service: spec.name.clone(), batch: svc.batch, report })
                }
                Next::Sample(request) => {
                    // Looked at again when the round is committed, or an interval on.
                    self.wake(now.saturating_add(i64::try_from(a.interval_ms).unwrap_or(i64::MAX)));
                    self.out.samples.push(request);
                }
                Next::WaitUntil(at) => self.wake(at),
            }
            return false;
        };
        match (report.verdict, a.accepted_by.is_some()) {
            (Verdict::Pass, _) | (Verdict::Marginal | Verdict::Inconclusive, true) => true,
            (Verdict::Fail, true) => match self.analysis_start(stage, v, svc) {
                Some(start) => {
                    self.push(start);
                    false
                }
                None => true,
            },
            (Verdict::Fail, false) => {
                let reason = text::analysis_failure(&a.batch_name, report);
                self.push(Fact::ServiceFailed { stage, service: spec.name.clone(), reason });
                false
            }
            (Verdict::Marginal | Verdict::Inconclusive, false) => {
                let reason = text::analysis_pause(&spec.name, &a.batch_name, report);
                self.push(Fact::Paused { actor: ENGINE.to_owned(), reason });
                false
            }
        }
    }

    /// Whether the service has more failed hosts than `max_failed` allows, deciding its
    /// failure if so. Hosts an operator excluded count as failed, and the operator's
    /// exclusions widen the allowance to their number: with `max_failed = 0` and one
    /// host excluded, the next failed host fails the service; with `max_failed = 2`, the
    /// exclusion used one of the two.
    fn too_many_failed(&mut self, stage: usize, name: &ServiceName, svc: &ServiceRun, max_failed: u32) -> bool {
        let failed: Vec<(&HostId, &str)> = svc.failed_hosts().collect();
        let excluded = svc.excluded_hosts().count();
        if failed.len() + excluded <= (max_failed as usize).max(excluded) {
            return false;
        }
        let (host, why) = failed[0];
        let batch =
            svc.batches.iter().find(|b| b.hosts.contains(host)).map_or_else(|| "a".to_owned(), |b| b.name.clone());
        let mut reason = format!("{batch} host {host} failed: {why}");
        if excluded > 0 {
            reason.push_str(&format!(
                " ({} failed, {} excluded, max_failed is {max_failed})",
                count(failed.len(), "host", "hosts"),
                count(excluded, "host", "hosts")
            ));
        } else if failed.len() > 1 {
            reason.push_str(&format!(" ({} failed, max_failed is {max_failed})", count(failed.len(), "host", "hosts")));
        }
        self.push(Fact::ServiceFailed { stage, service: name.clone(), reason });
        true
    }

    fn gates(&mut self, stage: usize) {
        let plan = self.ctx.plan;
        let st = &self.run.stages[stage];
        for gate in plan.gates() {
            let spec = plan.spec().gates.iter().find(|g| g.name == gate.name).expect("plan gates come from the spec");
            let after: Vec<ServiceName> = gate.after.iter().map(|&v| plan.graph().name(v).clone()).collect();
            match st.gates.get(&gate.name) {
                Some(GateState::Pending) => {
                    let ready = after.iter().all(|s| st.services.get(s).is_some_and(|s| s.state.finished()));
                    if !ready {
                        continue;
                    }
                    match &spec.exec {
                        Some(exec) => {
                            let host = self
                                .ctx
                                .fleet
                                .hosts
                                .iter()
                                .filter(|h| exec.on.matches(&h.labels))
                                .map(|h| h.id.clone())
                                .filter(|h| self.run.exclusion(h).is_none())
                                .find(|h| self.online(h));
                            match host {
                                Some(h) => {
                                    let dispatch = self.dispatch(&h);
                                    self.push(Fact::GateStarted { stage, gate: gate.name.clone(), dispatch });
                                }
                                None => self.push(Fact::GateDone {
                                    stage,
                                    gate: gate.name.clone(),
                                    after,
                                    passed: false,
                                    reason: format!("no online host matches its `on` selector {:?}", exec.on.0),
                                }),
                            }
                        }
                        None if spec.approval => self.push(Fact::ApprovalRequired {
                            kind: super::fact::ApprovalKind::Gate,
                            name: gate.name.clone(),
                            stage,
                        }),
                        None => self.push(Fact::GateDone {
                            stage,
                            gate: gate.name.clone(),
                            after,
                            passed: true,
                            reason: String::new(),
                        }),
                    }
                }
                Some(GateState::Running(cmd)) => match self.run.steps.get(cmd).and_then(|s| s.outcome.clone()) {
                    Some((Outcome::Succeeded, _)) if spec.approval => self.push(Fact::ApprovalRequired {
                        kind: super::fact::ApprovalKind::Gate,
                        name: gate.name.clone(),
                        stage,
                    }),
                    Some((Outcome::Succeeded, _)) => self.push(Fact::GateDone {
                        stage,
                        gate: gate.name.clone(),
                        after,
                        passed: true,
                        reason: "its check succeeded".to_owned(),
                    }),
                    Some((_, why)) => {
                        let host = self.run.steps.get(cmd).map(|s| s.host.to_string()).unwrap_or_default();
                        self.push(Fact::GateDone {
                            stage,
                            gate: gate.name.clone(),
                            after,
                            passed: false,
                            reason: format!("its check failed on {host}: {why}"),
                        });
                    }
                    None => {}
                },
                _ => {}
            }
        }
    }

    fn stage_complete(&self, stage: usize) -> bool {
        let st = &self.run.stages[stage];
        st.services.values().all(|s| s.state.finished()) && st.gates.values().all(|g| *g == GateState::Passed)
    }

    // ------------------------------------------------------------------ roll back

    fn roll_back(&mut self) {
        let Some(rb) = &self.run.rollback else { return };
        let Some(action) = rb.actions.get(rb.position) else {
            // Steps of services outside the rollback set may still run (they keep their
            // new version): the release ends only when nothing of it runs any more.
            if self.run.steps.any_outstanding() {
                return;
            }
            let names: Vec<&str> = rb.members.iter().map(|(s, _)| s.as_str()).collect();
            let reason = if names.is_empty() {
                format!("release rolled back ({}); no service had started", self.run.reason)
            } else {
                format!(
                    "release rolled back ({}): {} back at their previous versions",
                    self.run.reason,
                    names.join(", ")
                )
            };
            self.push(Fact::Finished { terminal: Terminal::RolledBack, reason });
            return;
        };
        let position = rb.position;
        match action.clone() {
            RollbackAction::Pause(service, why) => self.push(Fact::Paused {
                actor: ENGINE.to_owned(),
                reason: format!("rollback stopped at {service}: {why}; resume to go on without it, or abort"),
            }),
            RollbackAction::Rollback(service) => self.roll_back_service(position, &service),
            RollbackAction::MigrateDown(service) => {
                if rb.batch.is_none() {
                    let host = self.migrate_down_host(&service);
                    match host {
                        Some(h) => {
                            let dispatch = self.dispatch(&h);
                            self.push(Fact::RollbackStarted { action: position, batch: 0, dispatches: vec![dispatch] });
                        }
                        None => self.push(Fact::Finished {
                            terminal: Terminal::Failed,
                            reason: format!("rollback failed: no host is known to run {service} for its migrate_down"),
                        }),
                    }
                    return;
                }
                if !self.batch_finished() {
                    return;
                }
                if let Some((host, why)) = rb.failed.first() {
                    self.push(Fact::Finished {
                        terminal: Terminal::Failed,
                        reason: format!("rollback failed: migrate_down of {service} failed on {host}: {why}"),
                    });
                    return;
                }
                self.push(Fact::RollbackActionDone { action: position });
            }
        }
    }

    /// Whether every step of the current rollback batch has a result.
    fn batch_finished(&self) -> bool {
        let rb = self.run.rollback.as_ref().expect("rolling back");
        rb.dispatched.iter().all(|d| self.run.steps.get(&d.command_id).is_some_and(|s| s.outcome.is_some()))
    }

    /// Hosts where the release's new version of `service` went live: they go back.
    fn hosts_to_roll_back(&self, service: &ServiceName) -> Vec<HostId> {
        let mut seen = BTreeSet::new();
        let mut hosts = Vec::new();
        for step in self.run.steps.values() {
            if step.kind == StepKind::Deploy(service.clone())
                && matches!(step.outcome, Some((Outcome::Succeeded, _)))
                && seen.insert(step.host.clone())
            {
                hosts.push(step.host.clone());
            }
        }
        hosts
    }

    fn migrate_down_host(&self, service: &ServiceName) -> Option<HostId> {
        let migrated_on = self
            .run
            .steps
            .values()
            .find(|s| {
                s.kind == StepKind::Migrate(service.clone()) && matches!(s.outcome, Some((Outcome::Succeeded, _)))
            })
            .map(|s| s.host.clone());
        migrated_on
            .into_iter()
            .chain(self.hosts_to_roll_back(service))
            .find(|h| self.online(h))
            .or_else(|| self.hosts_to_roll_back(service).into_iter().next())
    }

    fn roll_back_service(&mut self, position: usize, service: &ServiceName) {
        let rb = self.run.rollback.as_ref().expect("rolling back");
        // Steps of the service still running were asked to stop; wait for their results.
        let busy = self.run.outstanding().any(|(_, s)| match &s.kind {
            StepKind::Deploy(x) | StepKind::Bake(x, _) | StepKind::Migrate(x) => x == service,
            _ => false,
        });
        if busy {
            return;
        }
        let Some(spec) = self.ctx.plan.spec().service(service.as_str()) else {
            self.push(Fact::RollbackActionDone { action: position });
            return;
        };
        let mut policy = spec.policy.clone();
        policy.canary = HostCount::Hosts(0);
        let batches = split_batches(&policy, self.hosts_to_roll_back(service));
        let next = match rb.batch {
            None => 0,
            Some(b) => {
                if !self.batch_finished() {
                    return;
                }
                if let Some((host, why)) = rb.failed.first() {
                    self.push(Fact::Finished {
                        terminal: Terminal::Failed,
                        reason: format!("rollback failed: {service} could not go back on {host}: {why}"),
                    });
                    return;
                }
                b + 1
            }
        };
        match batches.get(next) {
            Some(batch) => {
                let dispatches = batch.hosts.iter().map(|h| self.dispatch(h)).collect();
                self.push(Fact::RollbackStarted { action: position, batch: next, dispatches });
            }
            None => self.push(Fact::RollbackActionDone { action: position }),
        }
    }
}
