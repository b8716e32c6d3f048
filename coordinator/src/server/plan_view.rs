//! A plan as the wire shows it: `shared::plan::Plan` turned into the structured
//! `flotilla.v1.Plan` message, which `Releases.Plan` returns and whose canonical
//! protobuf JSON `flotilla plan --output json` prints (`docs/plan-json.md`). Pure
//! conversion; public (`flotilla_coordinator::plan_view`) so the CLI uses the same.

use std::time::Duration;

use flotilla_proto::v1;
use flotilla_shared::model::{DepKind, LabelSelector};
use flotilla_shared::plan::{EdgeKind, PLAN_FORMAT_VERSION, Plan, RollbackPlan, RollbackStep, describe_batches};
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

/// One service's rollout in one stage: its batches with their hosts when the fleet is
/// known (none when the stage has no host for it), or, offline, the batches described
/// by size (`canary (1 host)`, `25%`, `rest`) without hosts, as the table shows them.
fn rollout(p: &Plan, stage: usize, v: usize) -> Option<v1::StageRollout> {
    let batch = |index: usize, name: String, hosts: Vec<String>| v1::PlannedBatch {
        index: u32::try_from(index).unwrap_or(u32::MAX),
        name,
        hosts,
    };
    let service = p.graph().name(v).to_string();
    if !p.fleet_known() {
        let described = describe_batches(&p.spec().services[v].policy);
        return Some(v1::StageRollout {
            service,
            batches: described.into_iter().enumerate().map(|(b, name)| batch(b, name, Vec::new())).collect(),
            skipped_hosts: Vec::new(),
        });
    }
    p.rollout(stage, v).map(|r| v1::StageRollout {
        service,
        batches: r
            .batches
            .iter()
            .enumerate()
            .map(|(b, x)| batch(b, x.name.clone(), x.hosts.iter().map(ToString::to_string).collect()))
            .collect(),
        skipped_hosts: r.skipped.iter().map(ToString::to_string).collect(),
    })
}

/// The structured plan; `source` places warnings.
pub fn plan(p: &Plan, source: &SourceFile) -> v1::Plan {
    let spec = p.spec();
    let graph = p.graph();
    let in_wave_order: Vec<usize> = graph.waves().into_iter().flatten().collect();
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
            rollouts: in_wave_order.iter().filter_map(|&v| rollout(p, i, v)).collect(),
            approvers: spec
                .stages
                .iter()
                .find(|x| x.name == st.name)
                .map(|x| approvers(x.approval_by))
                .unwrap_or_default(),
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
                approvers: gs.map(|x| approvers(x.approval_by)).unwrap_or_default(),
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

/// Who may approve under `rule`, in words; empty for the open rule (the plan's and a
/// pending approval's `approvers`).
pub fn approvers(rule: flotilla_shared::spec::ApprovalRule) -> String {
    if rule.is_open() { String::new() } else { rule.describe() }
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

    #[test]
    fn rollouts_go_in_wave_order_with_hosts_or_offline_with_batches_described_by_size() {
        // `web` comes first in the spec but in the second wave.
        let spec = release("shop")
            .with(service("web", "2.0.0").depends("api", DepKind::Hard))
            .with(service("api", "2.0.0"))
            .stages("cell", &["canary"]);
        let f = fleet(vec![host("c1", &[("cell", "canary")], &[]), host("m1", &[], &[("api", "2.0.0")])]);
        let online = plan(&Plan::build(&spec, Some(&f)).expect("plans"), &SourceFile::new("shop.toml", ""));
        let order = |p: &v1::Plan, stage: usize| -> Vec<String> {
            p.stages[stage].rollouts.iter().map(|r| r.service.clone()).collect()
        };
        assert_eq!(order(&online, 0), ["api", "web"]);
        assert_eq!(online.stages[0].hosts, ["c1"]);
        let canary_web = &online.stages[0].rollouts[1];
        assert_eq!(canary_web.batches.iter().flat_map(|b| b.hosts.clone()).collect::<Vec<_>>(), ["c1"]);
        let rest_api = &online.stages[1].rollouts[0];
        assert_eq!((rest_api.batches.len(), rest_api.skipped_hosts.clone()), (0, vec!["m1".to_owned()]));

        let offline = plan(&Plan::build(&spec, None).expect("plans"), &SourceFile::new("shop.toml", ""));
        assert!(!offline.fleet_known);
        for stage in 0..2 {
            assert_eq!(order(&offline, stage), ["api", "web"]);
            assert!(offline.stages[stage].hosts.is_empty());
        }
        let web = &offline.stages[0].rollouts[1];
        let described: Vec<(u32, &str)> = web.batches.iter().map(|b| (b.index, b.name.as_str())).collect();
        let expected = describe_batches(&spec.services[0].policy);
        assert_eq!(described.len(), expected.len());
        for (i, ((index, name), want)) in described.iter().zip(&expected).enumerate() {
            assert_eq!((*index as usize, *name), (i, want.as_str()));
        }
        assert!(web.batches.iter().all(|b| b.hosts.is_empty()) && web.skipped_hosts.is_empty());
    }
}
