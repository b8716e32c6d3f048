//! A plan as the wire shows it: `shared::plan::Plan` turned into the structured
//! `flotilla.v1.Plan` message (the same content as the JSON document of
//! `docs/plan-json.md`, for API clients). Pure conversion.

use std::time::Duration;

use flotilla_proto::v1;
use flotilla_shared::model::{DepKind, LabelSelector};
use flotilla_shared::plan::{EdgeKind, PLAN_FORMAT_VERSION, Plan, RollbackPlan, RollbackStep};
use flotilla_shared::spec::SourceFile;

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn selector(s: &LabelSelector) -> v1::LabelSelector {
    v1::LabelSelector { match_labels: s.0.clone().into_iter().collect() }
}

fn rollback(rb: &RollbackPlan) -> v1::PlannedRollback {
    v1::PlannedRollback {
        failed: rb.failed.as_ref().map(ToString::to_string).unwrap_or_default(),
        scope: rb.scope.as_str().to_owned(),
        members: rb
            .members
            .iter()
            .map(|m| v1::RollbackMember { service: m.service.to_string(), reason: m.reason.clone() })
            .collect(),
        steps: rb
            .steps
            .iter()
            .map(|s| match s {
                RollbackStep::Rollback { service } => v1::RollbackStep {
                    action: v1::RollbackAction::Rollback as i32,
                    service: service.to_string(),
                    reason: String::new(),
                },
                RollbackStep::MigrateDown { service } => v1::RollbackStep {
                    action: v1::RollbackAction::MigrateDown as i32,
                    service: service.to_string(),
                    reason: String::new(),
                },
                RollbackStep::Pause { service, reason } => v1::RollbackStep {
                    action: v1::RollbackAction::Pause as i32,
                    service: service.to_string(),
                    reason: reason.clone(),
                },
            })
            .collect(),
    }
}

/// The structured plan; `source` places warnings.
pub fn plan(p: &Plan, source: &SourceFile) -> v1::Plan {
    let spec = p.spec();
    let graph = p.graph();
    let waves = graph
        .waves()
        .iter()
        .enumerate()
        .map(|(i, ws)| v1::PlanWave {
            wave: u32::try_from(i + 1).unwrap_or(u32::MAX),
            services: ws.iter().map(|&v| graph.name(v).to_string()).collect(),
        })
        .collect();
    let edges = graph
        .edges()
        .iter()
        .map(|e| {
            let (kind, contract, compatible) = match &e.kind {
                EdgeKind::Dep(DepKind::Hard) => (v1::EdgeKind::Hard, String::new(), false),
                EdgeKind::Dep(DepKind::Data) => (v1::EdgeKind::Data, String::new(), false),
                EdgeKind::Dep(DepKind::Config) => (v1::EdgeKind::Config, String::new(), false),
                EdgeKind::Dep(DepKind::Soft) => (v1::EdgeKind::Soft, String::new(), false),
                EdgeKind::Contract { contract, old_version_compatible } => {
                    (v1::EdgeKind::Contract, contract.clone(), *old_version_compatible)
                }
            };
            v1::PlanEdge {
                dependency: graph.name(e.dependency).to_string(),
                dependent: graph.name(e.dependent).to_string(),
                kind: kind as i32,
                contract,
                old_version_compatible: compatible,
            }
        })
        .collect();
    let services = spec
        .services
        .iter()
        .enumerate()
        .map(|(v, s)| v1::PlannedService {
            name: s.name.to_string(),
            version: s.version.to_string(),
            hosts: Some(selector(&s.hosts)),
            wave: graph.wave(v),
            has_migrate: s.hooks.migrate.is_some(),
            has_migrate_down: s.hooks.migrate_down.is_some(),
            gated_by: p.gated_by(v).iter().map(|&g| p.gates()[g].name.clone()).collect(),
            canary: s.policy.canary.to_string(),
            batches: s.policy.batches.iter().map(ToString::to_string).collect(),
            bake_ms: ms(s.policy.bake),
            max_failed: s.policy.max_failed,
            progress_deadline_ms: ms(s.policy.progress_deadline),
            on_failure: format!("{:?}", s.policy.on_failure).to_lowercase(),
            rollback_scope: s.policy.rollback_scope.as_str().to_owned(),
        })
        .collect();
    let stages = p
        .stages()
        .iter()
        .enumerate()
        .map(|(i, st)| v1::PlannedStage {
            index: u32::try_from(i).unwrap_or(u32::MAX),
            name: st.name.clone(),
            selector: st.selector.as_ref().map(selector),
            approval: st.approval,
            hosts: st.hosts.iter().flatten().map(ToString::to_string).collect(),
            rollouts: (0..spec.services.len())
                .filter_map(|v| {
                    p.rollout(i, v).map(|r| v1::StageRollout {
                        service: graph.name(v).to_string(),
                        batches: r
                            .batches
                            .iter()
                            .enumerate()
                            .map(|(b, batch)| v1::PlannedBatch {
                                index: u32::try_from(b).unwrap_or(u32::MAX),
                                name: batch.name.clone(),
                                hosts: batch.hosts.iter().map(ToString::to_string).collect(),
                            })
                            .collect(),
                        skipped_hosts: r.skipped.iter().map(ToString::to_string).collect(),
                    })
                })
                .collect(),
        })
        .collect();
    let gates = p
        .gates()
        .iter()
        .map(|g| {
            let gs = spec.gates.iter().find(|x| x.name == g.name);
            v1::PlannedGate {
                name: g.name.clone(),
                after: g.after.iter().map(|&v| graph.name(v).to_string()).collect(),
                blocks: g.blocks.iter().map(|&v| graph.name(v).to_string()).collect(),
                after_wave: g.after_wave,
                approval: gs.is_some_and(|x| x.approval),
                exec: gs.and_then(|x| x.exec.as_ref()).map(|e| v1::GateExec {
                    command: e.command.clone(),
                    on: Some(selector(&e.on)),
                    timeout_ms: ms(e.timeout),
                }),
            }
        })
        .collect();
    let whole = p.rollback(flotilla_shared::plan::RollbackRequest {
        failed: None,
        also_failed: &[],
        scope: flotilla_shared::model::RollbackScope::Release,
        started: &spec.services.iter().map(|s| s.name.clone()).collect(),
        expired: &std::collections::BTreeSet::new(),
    });
    v1::Plan {
        release: spec.release.clone(),
        fleet_known: p.fleet_known(),
        services,
        waves,
        edges,
        stages,
        gates,
        rollback_order: whole.services().iter().map(ToString::to_string).collect(),
        warnings: p
            .warnings()
            .iter()
            .map(|w| {
                let e = source.locate(w.clone());
                v1::Diagnostic {
                    severity: v1::Severity::Warning as i32,
                    location: Some(v1::SourceLocation {
                        file: e.file.clone(),
                        line: u32::try_from(e.line).unwrap_or(u32::MAX),
                        column: u32::try_from(e.column).unwrap_or(u32::MAX),
                    }),
                    message: e.message.clone(),
                    rendered: e.to_string(),
                }
            })
            .collect(),
        rollbacks: (0..spec.services.len()).map(|v| rollback(&p.rollback_if_failed(v))).collect(),
        format: PLAN_FORMAT_VERSION,
    }
}

#[cfg(test)]
mod tests {
    use flotilla_shared::DepKind;
    use flotilla_shared::fixtures::{fleet, host, release, service};

    use super::*;

    #[test]
    fn the_structured_plan_carries_waves_edges_stages_batches_and_rollbacks() {
        let spec = release("shop")
            .with(service("db", "2.0.0").migrations(false))
            .with(service("api", "2.0.0").depends("db", DepKind::Data))
            .gate("smoke", &["api"]);
        let f = fleet(vec![host("h1", &[], &[("db", "1.0.0")]), host("h2", &[], &[])]);
        let p = Plan::build(&spec, Some(&f)).expect("plans");
        let out = plan(&p, &SourceFile::new("shop.toml", ""));
        assert_eq!(out.release, "shop");
        assert!(out.fleet_known);
        assert_eq!(out.waves.iter().map(|w| w.services.clone()).collect::<Vec<_>>(), [vec!["db"], vec!["api"]]);
        assert_eq!(out.edges.len(), 1);
        assert_eq!(out.edges[0].kind, v1::EdgeKind::Data as i32);
        assert_eq!(out.stages.len(), 1);
        assert_eq!(out.stages[0].rollouts.len(), 2);
        assert_eq!(out.gates[0].blocks, Vec::<String>::new());
        assert_eq!(out.rollback_order, ["api", "db"]);
        // db's migration has no migrate_down: its rollback pauses there.
        let db = &out.rollbacks[0];
        assert_eq!(db.failed, "db");
        assert!(db.steps.iter().any(|s| s.action == v1::RollbackAction::Pause as i32));
        assert_eq!(out.format, PLAN_FORMAT_VERSION);
    }
}
