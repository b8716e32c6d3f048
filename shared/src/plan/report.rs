//! The plan as a stable, serializable document: what `flotilla plan --output json` prints
//! and the `Plan` RPC returns. The shape is documented in `docs/plan-json.md`; fields are
//! only ever added, and `format` changes when anything else would.

use serde::Serialize;

use crate::model::{HostCount, HostId, LabelSelector, ServiceName};
use crate::plan::{Batch, EdgeKind, Plan, RollbackPlan, batches};
use crate::spec::{SourceFile, SpecError};

/// The version of the JSON document's shape.
pub const PLAN_FORMAT_VERSION: u32 = 1;

/// A whole plan.
#[derive(Debug, Clone, Serialize)]
pub struct PlanReport {
    /// [`PLAN_FORMAT_VERSION`].
    pub format: u32,
    /// The release name.
    pub release: String,
    /// Whether hosts were known (a fleet or inventory was given).
    pub fleet_known: bool,
    /// Stages in order.
    pub stages: Vec<StageReport>,
    /// Dependency levels, numbered from 1.
    pub waves: Vec<WaveReport>,
    /// Every service with its dependencies and wave.
    pub services: Vec<ServiceReport>,
    /// Gates.
    pub gates: Vec<GateReport>,
    /// Per stage and service: hosts and batches (hosts only when the fleet is known).
    pub rollouts: Vec<RolloutReport>,
    /// Per service: what its failure would roll back, assuming everything has started.
    pub rollback: Vec<RollbackPlan>,
    /// Warnings, located in the spec.
    pub warnings: Vec<WarningReport>,
}

/// A stage.
#[derive(Debug, Clone, Serialize)]
pub struct StageReport {
    /// Its name.
    pub name: String,
    /// Its selector; absent for the catch-all stage.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hosts: Option<LabelSelector>,
    /// Whether a human approves before the next stage.
    pub approval: bool,
    /// Its hosts, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host_ids: Option<Vec<HostId>>,
}

/// A wave.
#[derive(Debug, Clone, Serialize)]
pub struct WaveReport {
    /// Its number, from 1.
    pub wave: u32,
    /// Its services, in release order.
    pub services: Vec<ServiceName>,
}

/// A service.
#[derive(Debug, Clone, Serialize)]
pub struct ServiceReport {
    /// Its name.
    pub name: ServiceName,
    /// Its target version.
    pub version: String,
    /// Its wave.
    pub wave: u32,
    /// Its host selector.
    pub hosts: LabelSelector,
    /// Edges into it: what it waits for inside the release.
    pub depends_on: Vec<EdgeReport>,
    /// Gates it waits for.
    pub gated_by: Vec<String>,
    /// Canary size.
    pub canary: HostCount,
    /// Cumulative batch sizes.
    pub batches: Vec<HostCount>,
    /// Bake time, e.g. `30s`.
    pub bake: String,
    /// `rollback` or `pause`.
    pub on_failure: String,
    /// `cascade`, `service` or `release`.
    pub rollback_scope: String,
}

/// An edge into a service.
#[derive(Debug, Clone, Serialize)]
pub struct EdgeReport {
    /// The service depended on.
    pub service: ServiceName,
    /// `hard`, `data`, `config`, `soft` or `contract`.
    pub kind: &'static str,
    /// For contract edges, the contract's name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub contract: Option<String>,
}

/// A gate.
#[derive(Debug, Clone, Serialize)]
pub struct GateReport {
    /// Its name.
    pub name: String,
    /// Services it waits for.
    pub after: Vec<ServiceName>,
    /// It opens after this wave.
    pub after_wave: u32,
    /// Services that wait for it.
    pub blocks: Vec<ServiceName>,
    /// The command it runs, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exec: Option<String>,
    /// Whether a human approves.
    pub approval: bool,
}

/// A service's rollout in a stage.
#[derive(Debug, Clone, Serialize)]
pub struct RolloutReport {
    /// The stage.
    pub stage: String,
    /// The service.
    pub service: ServiceName,
    /// Batches in order. Without a fleet, only names (sizes).
    pub batches: Vec<BatchReport>,
    /// Hosts already at the target version, when known.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub skipped: Vec<HostId>,
}

/// A batch.
#[derive(Debug, Clone, Serialize)]
pub struct BatchReport {
    /// `canary`, `25%`, `rest`...
    pub batch: String,
    /// The hosts it adds, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hosts: Option<Vec<HostId>>,
}

/// A warning with its place in the spec.
#[derive(Debug, Clone, Serialize)]
pub struct WarningReport {
    /// What to know.
    pub message: String,
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub column: usize,
}

impl PlanReport {
    /// The document for a plan; `source` places warnings.
    pub fn new(plan: &Plan, source: &SourceFile) -> Self {
        let spec = plan.spec();
        let graph = plan.graph();
        let name = |v: usize| graph.name(v).clone();
        let stages = plan
            .stages()
            .iter()
            .map(|s| StageReport {
                name: s.name.clone(),
                hosts: s.selector.clone(),
                approval: s.approval,
                host_ids: s.hosts.clone(),
            })
            .collect();
        let waves = graph
            .waves()
            .into_iter()
            .zip(1..)
            .map(|(nodes, wave)| WaveReport { wave, services: nodes.into_iter().map(name).collect() })
            .collect();
        let services = spec
            .services
            .iter()
            .enumerate()
            .map(|(v, s)| ServiceReport {
                name: s.name.clone(),
                version: s.version.to_string(),
                wave: graph.wave(v),
                hosts: s.hosts.clone(),
                depends_on: graph
                    .dependencies(v)
                    .map(|e| EdgeReport {
                        service: name(e.dependency),
                        kind: e.kind.label(),
                        contract: match &e.kind {
                            EdgeKind::Contract { contract, .. } => Some(contract.clone()),
                            EdgeKind::Dep(_) => None,
                        },
                    })
                    .collect(),
                gated_by: plan.gated_by(v).iter().map(|&g| plan.gates()[g].name.clone()).collect(),
                canary: s.policy.canary,
                batches: s.policy.batches.clone(),
                bake: humantime::format_duration(s.policy.bake).to_string(),
                on_failure: s.policy.on_failure.to_string(),
                rollback_scope: s.policy.rollback_scope.to_string(),
            })
            .collect();
        let gates = plan
            .gates()
            .iter()
            .zip(&spec.gates)
            .map(|(g, gs)| GateReport {
                name: g.name.clone(),
                after: g.after.iter().map(|&v| name(v)).collect(),
                after_wave: g.after_wave,
                blocks: g.blocks.iter().map(|&v| name(v)).collect(),
                exec: gs.exec.as_ref().map(|e| e.command.clone()),
                approval: gs.approval,
            })
            .collect();
        let mut rollouts = Vec::new();
        for (si, stage) in plan.stages().iter().enumerate() {
            for (v, svc) in spec.services.iter().enumerate() {
                let report = match (plan.fleet_known(), plan.rollout(si, v)) {
                    (false, _) => RolloutReport {
                        stage: stage.name.clone(),
                        service: svc.name.clone(),
                        batches: batches::describe(&svc.policy)
                            .into_iter()
                            .map(|batch| BatchReport { batch, hosts: None })
                            .collect(),
                        skipped: Vec::new(),
                    },
                    (true, None) => continue,
                    (true, Some(r)) => RolloutReport {
                        stage: stage.name.clone(),
                        service: svc.name.clone(),
                        batches: r.batches.iter().map(batch_report).collect(),
                        skipped: r.skipped.clone(),
                    },
                };
                rollouts.push(report);
            }
        }
        let rollback = (0..graph.len()).map(|v| plan.rollback_if_failed(v)).collect();
        let warnings = plan
            .warnings()
            .iter()
            .map(|w| {
                let SpecError { line, column, message, .. } = source.locate(w.clone());
                WarningReport { message, line, column }
            })
            .collect();
        PlanReport {
            format: PLAN_FORMAT_VERSION,
            release: spec.release.clone(),
            fleet_known: plan.fleet_known(),
            stages,
            waves,
            services,
            gates,
            rollouts,
            rollback,
            warnings,
        }
    }
}

fn batch_report(b: &Batch) -> BatchReport {
    BatchReport { batch: b.name.clone(), hosts: Some(b.hosts.clone()) }
}
