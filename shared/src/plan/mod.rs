//! The planner: from a validated spec (and, when known, the fleet) to stages, waves,
//! per-service batches, gates and rollback plans. Pure: no I/O, no clock.
//!
//! [`Plan::build`] is what `flotilla plan` prints and what the release engine executes.

mod batches;
mod graph;
mod rollback;

use std::collections::{BTreeMap, BTreeSet, HashMap};

pub use batches::{Batch, describe as describe_batches, split as split_batches};
pub use graph::{Cycle, Edge, EdgeKind, NodeId, ServiceGraph};
pub use rollback::{Member, RollbackPlan, RollbackRequest, RollbackStep};

use crate::inventory::{Fleet, Host};
use crate::model::{HostId, LabelSelector, ServiceName};
use crate::spec::{Diagnostic, ReleaseSpec, Requirement};

/// The version of the plan document's shape: `format` of the `flotilla.v1.Plan`
/// message, whose canonical protobuf JSON `flotilla plan --output json` prints
/// (`docs/plan-json.md`). 1 was the hand-written document of earlier builds; 2 is
/// the `flotilla.v1.Plan` message.
pub const PLAN_FORMAT_VERSION: u32 = 2;

/// Index of a stage in [`Plan::stages`].
pub type StageId = usize;

/// Index of a gate in [`Plan::gates`].
pub type GateId = usize;

/// A planned release.
#[derive(Debug, Clone)]
pub struct Plan {
    spec: ReleaseSpec,
    graph: ServiceGraph,
    stages: Vec<StagePlan>,
    /// `rollouts[stage][service]`: the service's rollout in the stage, when hosts are known.
    rollouts: Vec<Vec<Option<Rollout>>>,
    gates: Vec<GatePlan>,
    /// Per service, the gates it waits for in every stage.
    gated_by: Vec<Vec<GateId>>,
    warnings: Vec<Diagnostic>,
    fleet_known: bool,
}

/// A stage as planned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StagePlan {
    /// The stage's name.
    pub name: String,
    /// Its selector; `None` for the catch-all stage.
    pub selector: Option<LabelSelector>,
    /// Whether a human approves before the next stage.
    pub approval: bool,
    /// The hosts in the stage, when the fleet is known. Each host is in the first stage
    /// whose selector matches it.
    pub hosts: Option<Vec<HostId>>,
}

/// One service's rollout in one stage, when the fleet is known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rollout {
    /// The batches, canary first; together they hold every host still to deploy.
    pub batches: Vec<Batch>,
    /// Hosts of the stage that already run the target version.
    pub skipped: Vec<HostId>,
}

impl Rollout {
    /// Whether nothing is left to deploy in this stage.
    pub fn is_noop(&self) -> bool {
        self.batches.is_empty()
    }
}

/// A gate as planned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatePlan {
    /// The gate's name.
    pub name: String,
    /// The services that must be done (in a stage) before the gate runs there.
    pub after: Vec<NodeId>,
    /// The services that wait for the gate: dependents of the `after` services.
    pub blocks: Vec<NodeId>,
    /// The wave after which the gate opens: the last wave among `after`.
    pub after_wave: u32,
}

impl Plan {
    /// Plans a release. With a fleet, also checks what only the fleet can tell
    /// (dependencies and contracts outside the release, selectors that match no host)
    /// and computes each service's hosts and batches per stage; without one those
    /// checks become warnings and batches are described by size only.
    ///
    /// Errors carry spans into the spec's source; place them with
    /// [`crate::spec::SourceFile::locate_all`].
    pub fn build(spec: &ReleaseSpec, fleet: Option<&Fleet>) -> Result<Plan, Vec<Diagnostic>> {
        let mut errors = Vec::new();
        let mut warnings = Vec::new();

        let graph = match build_graph(spec, fleet, &mut errors, &mut warnings) {
            Ok(g) => g,
            Err(cycle) => {
                errors.push(cycle_diagnostic(spec, &cycle));
                return Err(errors);
            }
        };

        let (gates, gated_by) = plan_gates(spec, &graph, &mut errors);
        let stages = plan_stages(spec, fleet, &mut errors, &mut warnings);
        if let Some(fleet) = fleet {
            check_selectors(spec, fleet, &stages, &mut errors, &mut warnings);
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        let rollouts = match fleet {
            Some(fleet) => plan_rollouts(spec, fleet, &stages),
            None => vec![vec![None; spec.services.len()]; stages.len()],
        };
        Ok(Plan {
            spec: spec.clone(),
            graph,
            stages,
            rollouts,
            gates,
            gated_by,
            warnings,
            fleet_known: fleet.is_some(),
        })
    }

    /// The spec the plan was built from.
    pub fn spec(&self) -> &ReleaseSpec {
        &self.spec
    }

    /// The dependency graph; node ids are positions in `spec().services`.
    pub fn graph(&self) -> &ServiceGraph {
        &self.graph
    }

    /// The stages, in order.
    pub fn stages(&self) -> &[StagePlan] {
        &self.stages
    }

    /// A service's rollout in a stage, when the fleet is known; `None` also when the
    /// service has no hosts in that stage.
    pub fn rollout(&self, stage: StageId, service: NodeId) -> Option<&Rollout> {
        self.rollouts[stage][service].as_ref()
    }

    /// What the release deploys where: per service, every host a batch of any stage
    /// deploys it to (hosts already at the target version are not touched, so not
    /// included). Empty when the fleet is not known. Two releases whose footprints
    /// share a service on a host must not run at once.
    pub fn footprint(&self) -> BTreeMap<ServiceName, BTreeSet<HostId>> {
        let mut out: BTreeMap<ServiceName, BTreeSet<HostId>> = BTreeMap::new();
        for per_stage in &self.rollouts {
            for (service, rollout) in per_stage.iter().enumerate() {
                let Some(rollout) = rollout else { continue };
                let hosts = rollout.batches.iter().flat_map(|b| b.hosts.iter().cloned());
                out.entry(self.graph.name(service).clone()).or_default().extend(hosts);
            }
        }
        out.retain(|_, hosts| !hosts.is_empty());
        out
    }

    /// The gates.
    pub fn gates(&self) -> &[GatePlan] {
        &self.gates
    }

    /// The gates a service waits for in each stage, besides its dependencies.
    pub fn gated_by(&self, service: NodeId) -> &[GateId] {
        &self.gated_by[service]
    }

    /// Things worth knowing that do not stop the release.
    pub fn warnings(&self) -> &[Diagnostic] {
        &self.warnings
    }

    /// Whether the plan was made against a fleet (hosts and batches are known).
    pub fn fleet_known(&self) -> bool {
        self.fleet_known
    }

    /// The rollback set and steps for a failure or an operator's rollback.
    pub fn rollback(&self, req: RollbackRequest<'_>) -> RollbackPlan {
        rollback::compute(&self.graph, &self.spec.services, req)
    }

    /// The rollback that a failure of `failed` triggers under its own `rollback_scope`,
    /// assuming every service has started and none is past its window: what an
    /// offline plan shows.
    pub fn rollback_if_failed(&self, failed: NodeId) -> RollbackPlan {
        rollback::if_everything_started(
            &self.graph,
            &self.spec.services,
            self.graph.name(failed),
            self.spec.services[failed].policy.rollback_scope,
        )
    }
}

/// Edges from `depends_on` entries inside the release and from contracts; checks
/// dependencies and `requires` that reach outside the release.
fn build_graph(
    spec: &ReleaseSpec,
    fleet: Option<&Fleet>,
    errors: &mut Vec<Diagnostic>,
    warnings: &mut Vec<Diagnostic>,
) -> Result<ServiceGraph, Cycle> {
    let names: Vec<ServiceName> = spec.services.iter().map(|s| s.name.clone()).collect();
    let index: BTreeMap<&ServiceName, NodeId> = names.iter().enumerate().map(|(i, n)| (n, i)).collect();
    let mut edges = Vec::new();

    for (v, svc) in spec.services.iter().enumerate() {
        for dep in &svc.depends_on {
            match index.get(&dep.service) {
                Some(&d) => {
                    edges.push(Edge { dependency: d, dependent: v, kind: EdgeKind::Dep(dep.kind) });
                }
                None => match fleet {
                    Some(f) if f.runs(&dep.service) => {}
                    Some(_) => errors.push(
                        Diagnostic::new(
                            dep.span,
                            format!(
                                "`{}` depends on `{}`, which is neither in this release nor running in the fleet",
                                svc.name, dep.service
                            ),
                        )
                        .with_help(format!("add `{}` to the release, fix the name, or remove the dependency", dep.service)),
                    ),
                    None => warnings.push(Diagnostic::new(
                        dep.span,
                        format!(
                            "`{}` depends on `{}`, which is not in this release; without a fleet it was not checked that `{}` runs",
                            svc.name, dep.service, dep.service
                        ),
                    )),
                },
            }
        }
    }

    // Contracts: who provides what, in the release.
    let mut providers: BTreeMap<&str, Vec<(NodeId, &semver::Version)>> = BTreeMap::new();
    for (p, svc) in spec.services.iter().enumerate() {
        for (contract, version) in &svc.provides {
            providers.entry(contract.as_str()).or_default().push((p, version));
        }
    }
    for (v, svc) in spec.services.iter().enumerate() {
        for (contract, Requirement { range, span }) in &svc.requires {
            let in_release = providers.get(contract.as_str()).map(Vec::as_slice).unwrap_or_default();
            let matching: Vec<NodeId> =
                in_release.iter().filter(|(p, ver)| *p != v && range.matches(ver)).map(|&(p, _)| p).collect();
            for &p in &matching {
                let old_version_compatible = previous_serves(fleet, &names[p], contract, range);
                edges.push(Edge {
                    dependency: p,
                    dependent: v,
                    kind: EdgeKind::Contract { contract: contract.clone(), old_version_compatible },
                });
            }
            if !matching.is_empty() {
                continue;
            }
            // Not served by the new versions in the release: the fleet must serve it, from
            // services this release does not replace.
            let replaced: BTreeSet<&ServiceName> = names.iter().collect();
            let shipped: Vec<String> = in_release
                .iter()
                .filter(|(p, _)| *p != v)
                .map(|(p, ver)| format!("{} {} provides `{contract}` {ver}", names[*p], spec.services[*p].version))
                .collect();
            let served_by_fleet = fleet.is_some_and(|f| {
                f.hosts.iter().flat_map(|h| &h.services).any(|(name, inst)| {
                    !replaced.contains(name)
                        && inst.provides().and_then(|p| p.get(contract)).is_some_and(|ver| range.matches(ver))
                })
            });
            if served_by_fleet {
                continue;
            }
            let message =
                format!("`{}` requires `{contract}` {range}, which nothing in the release provides", svc.name);
            let message = if shipped.is_empty() { message } else { format!("{message} ({})", shipped.join("; ")) };
            if fleet.is_some() || !shipped.is_empty() {
                errors.push(Diagnostic::new(*span, format!("{message} or the fleet serves")).with_help(format!(
                    "ship a version that provides `{contract}` matching {range}, or relax the range in `requires`"
                )));
            } else {
                warnings.push(Diagnostic::new(
                    *span,
                    format!("{message}; without a fleet it was not checked that a running service serves it"),
                ));
            }
        }
    }
    ServiceGraph::new(names, edges)
}

/// Whether every host running `provider` now serves a version of `contract` in `range`.
/// Unknown (no fleet, no host running it, or no provides recorded) is `false`.
fn previous_serves(fleet: Option<&Fleet>, provider: &ServiceName, contract: &str, range: &semver::VersionReq) -> bool {
    let Some(fleet) = fleet else { return false };
    let mut running = fleet.hosts.iter().filter_map(|h| h.services.get(provider)).peekable();
    running.peek().is_some()
        && running.all(|inst| inst.provides().and_then(|p| p.get(contract)).is_some_and(|v| range.matches(v)))
}

fn cycle_diagnostic(spec: &ReleaseSpec, cycle: &Cycle) -> Diagnostic {
    let name = |v: NodeId| spec.services[v].name.as_str();
    let mut text = String::new();
    for e in &cycle.edges {
        text.push_str(name(e.dependent));
        text.push_str(" -> ");
    }
    text.push_str(name(cycle.services[0]));
    let kinds: Vec<String> =
        cycle.edges.iter().map(|e| format!("{} -> {} ({})", name(e.dependent), name(e.dependency), e.kind)).collect();
    // Point at the first edge of the cycle as written in the spec.
    let first = &cycle.edges[0];
    let span = spec.services[first.dependent]
        .depends_on
        .iter()
        .find(|d| d.service == spec.services[first.dependency].name)
        .map_or(spec.services[first.dependent].span, |d| d.span);
    Diagnostic::new(span, format!("dependency cycle: {text}")).with_help(format!(
        "a release needs an order where every service starts after what it depends on; remove or soften one of: {}",
        kinds.join(", ")
    ))
}

/// Gates: what each waits for and which services wait for it. A gate that waits, through
/// dependencies, for a service that itself waits for the gate can never open: refused.
fn plan_gates(
    spec: &ReleaseSpec,
    graph: &ServiceGraph,
    errors: &mut Vec<Diagnostic>,
) -> (Vec<GatePlan>, Vec<Vec<GateId>>) {
    let n = graph.len();
    let mut gates = Vec::with_capacity(spec.gates.len());
    let mut gated_by = vec![Vec::new(); n];
    for (gi, gate) in spec.gates.iter().enumerate() {
        let after: Vec<NodeId> = gate.after.iter().filter_map(|s| graph.node(s)).collect();
        let in_after: BTreeSet<NodeId> = after.iter().copied().collect();
        let blocks: BTreeSet<NodeId> = after
            .iter()
            .flat_map(|&a| graph.dependents(a).map(|e| e.dependent))
            .filter(|w| !in_after.contains(w))
            .collect();
        for &b in &blocks {
            gated_by[b].push(gi);
        }
        let after_wave = after.iter().map(|&a| graph.wave(a)).max().unwrap_or(0);
        gates.push(GatePlan { name: gate.name.clone(), after, blocks: blocks.into_iter().collect(), after_wave });
    }
    if gates.is_empty() {
        return (gates, gated_by);
    }
    // Services and gates together must still be acyclic.
    let mut names: Vec<ServiceName> = (0..n).map(|v| graph.name(v).clone()).collect();
    names.extend(spec.gates.iter().map(|g| ServiceName::new(format!("gate `{}`", g.name))));
    let mut edges: Vec<Edge> = graph.edges().to_vec();
    let via_gate = EdgeKind::Dep(crate::model::DepKind::Hard);
    for (gi, g) in gates.iter().enumerate() {
        let node = n + gi;
        edges.extend(g.after.iter().map(|&a| Edge { dependency: a, dependent: node, kind: via_gate.clone() }));
        edges.extend(g.blocks.iter().map(|&b| Edge { dependency: node, dependent: b, kind: via_gate.clone() }));
    }
    if let Err(cycle) = ServiceGraph::new(names.clone(), edges) {
        let gate_at = cycle.services.iter().find(|&&v| v >= n).map_or(0, |&v| v - n);
        let mut path: Vec<&str> = cycle.services.iter().map(|&v| names[v].as_str()).collect();
        path.push(names[cycle.services[0]].as_str());
        errors.push(
            Diagnostic::new(
                spec.gates[gate_at].span,
                format!("gate `{}` can never open: {}", spec.gates[gate_at].name, path.join(" waits for ")),
            )
            .with_help("a gate blocks the dependents of its `after` services; remove from `after` any service that depends on another one in it, or move the gate"),
        );
    }
    (gates, gated_by)
}

/// Stages, and with a fleet their hosts: each host in the first stage that selects it.
fn plan_stages(
    spec: &ReleaseSpec,
    fleet: Option<&Fleet>,
    errors: &mut Vec<Diagnostic>,
    warnings: &mut Vec<Diagnostic>,
) -> Vec<StagePlan> {
    let mut stages: Vec<StagePlan> = spec
        .stages
        .iter()
        .map(|s| StagePlan {
            name: s.name.clone(),
            selector: s.hosts.clone(),
            approval: s.approval,
            hosts: fleet.map(|_| Vec::new()),
        })
        .collect();
    let Some(fleet) = fleet else { return stages };
    let mut uncovered = Vec::new();
    for host in &fleet.hosts {
        let stage = spec.stages.iter().position(|s| s.hosts.as_ref().is_none_or(|sel| sel.matches(&host.labels)));
        match stage {
            Some(i) => stages[i].hosts.get_or_insert_with(Vec::new).push(host.id.clone()),
            None => uncovered.push(host.id.as_str()),
        }
    }
    for (stage, plan) in spec.stages.iter().zip(&stages) {
        if plan.hosts.as_ref().is_some_and(Vec::is_empty) {
            let diag = Diagnostic::new(stage.span, format!("stage `{}` has no hosts", stage.name));
            match &stage.hosts {
                Some(sel) => errors.push(diag.with_help(format!(
                    "no host of the fleet that an earlier stage did not take matches {sel}; fix the selector or remove the stage"
                ))),
                None => warnings.push(diag),
            }
        }
    }
    if !uncovered.is_empty() {
        let span = spec.stages.last().map(|s| s.span).unwrap_or_default();
        warnings.push(
            Diagnostic::new(span, format!("no stage covers {} host(s): {}", uncovered.len(), uncovered.join(", ")))
                .with_help("these hosts receive nothing; add a last [[stage]] without `hosts` to cover them"),
        );
    }
    stages
}

/// Service and gate selectors must match at least one host of the fleet.
fn check_selectors(
    spec: &ReleaseSpec,
    fleet: &Fleet,
    stages: &[StagePlan],
    errors: &mut Vec<Diagnostic>,
    warnings: &mut Vec<Diagnostic>,
) {
    let matches = |sel: &LabelSelector| fleet.hosts.iter().filter(|h| sel.matches(&h.labels)).count();
    let staged: BTreeSet<&HostId> = stages.iter().flat_map(|s| s.hosts.iter().flatten()).collect();
    for svc in &spec.services {
        if matches(&svc.hosts) == 0 {
            errors.push(
                Diagnostic::new(
                    svc.span,
                    format!("`{}` selects hosts {} but no host in the fleet matches", svc.name, svc.hosts),
                )
                .with_help("fix the `hosts` selector or label the hosts"),
            );
        } else if !fleet.hosts.iter().any(|h| svc.hosts.matches(&h.labels) && staged.contains(&h.id)) {
            warnings.push(Diagnostic::new(
                svc.span,
                format!("no stage covers any host of `{}`; it will not be deployed", svc.name),
            ));
        }
    }
    for gate in &spec.gates {
        if let Some(exec) = &gate.exec
            && matches(&exec.on) == 0
        {
            errors.push(
                Diagnostic::new(
                    gate.span,
                    format!("gate `{}` runs on hosts {} but no host in the fleet matches", gate.name, exec.on),
                )
                .with_help("fix `exec.on` so at least one agent can run the check"),
            );
        }
    }
}

/// Per stage and service: the hosts still to deploy, in batches, and those already there.
fn plan_rollouts(spec: &ReleaseSpec, fleet: &Fleet, stages: &[StagePlan]) -> Vec<Vec<Option<Rollout>>> {
    let hosts_by_id: BTreeMap<&HostId, &Host> = fleet.hosts.iter().map(|h| (&h.id, h)).collect();
    stages
        .iter()
        .map(|stage| {
            let stage_hosts: Vec<&Host> =
                stage.hosts.iter().flatten().filter_map(|id| hosts_by_id.get(id).copied()).collect();
            // Many services share a selector: match each distinct one once per stage.
            let mut selected: HashMap<&LabelSelector, Vec<&Host>> = HashMap::new();
            spec.services
                .iter()
                .map(|svc| {
                    let mine = selected.entry(&svc.hosts).or_insert_with(|| {
                        stage_hosts.iter().copied().filter(|h| svc.hosts.matches(&h.labels)).collect()
                    });
                    if mine.is_empty() {
                        return None;
                    }
                    let at_target = |h: &Host| h.services.get(&svc.name).is_some_and(|i| i.version() == &svc.version);
                    let pending: Vec<HostId> = mine.iter().filter(|h| !at_target(h)).map(|h| h.id.clone()).collect();
                    let skipped = mine.iter().filter(|h| at_target(h)).map(|h| h.id.clone()).collect();
                    Some(Rollout { batches: batches::split(&svc.policy, pending), skipped })
                })
                .collect()
        })
        .collect()
}
