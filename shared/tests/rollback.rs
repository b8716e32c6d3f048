//! Rollback closure and order for every scope and dependency kind.

use std::collections::BTreeSet;

use flotilla_shared::fixtures::{fleet, host, release, service};
use flotilla_shared::inventory::Installed;
use flotilla_shared::plan::{Plan, RollbackPlan, RollbackRequest, RollbackStep};
use flotilla_shared::{DepKind, Fleet, ReleaseSpec, RollbackScope, ServiceName};

fn names(list: &[&str]) -> BTreeSet<ServiceName> {
    list.iter().map(|&s| ServiceName::from(s)).collect()
}

fn rollback(
    spec: &ReleaseSpec,
    fleet: Option<&Fleet>,
    failed: &str,
    scope: RollbackScope,
    started: &[&str],
) -> RollbackPlan {
    let plan = Plan::build(spec, fleet).expect("plans");
    let failed = ServiceName::from(failed);
    plan.rollback(RollbackRequest {
        failed: Some(&failed),
        also_failed: &[],
        scope,
        started: &names(started),
        expired: &BTreeSet::new(),
    })
}

fn order(plan: &RollbackPlan) -> Vec<&str> {
    plan.members.iter().map(|m| m.service.as_str()).collect()
}

fn steps(plan: &RollbackPlan) -> Vec<String> {
    plan.steps.iter().map(ToString::to_string).collect()
}

/// db <-data- ledger <-hard- payments <-config- web, and search <-soft- web; mail alone.
fn shop() -> ReleaseSpec {
    release("shop")
        .with(service("db", "2.0.0").migrations(true))
        .with(service("ledger", "1.1.0").depends("db", DepKind::Data))
        .with(service("payments", "2.4.0").depends("ledger", DepKind::Hard))
        .with(service("search", "5.0.0"))
        .with(service("web", "3.0.0").depends("payments", DepKind::Config).depends("search", DepKind::Soft))
        .with(service("mail", "1.0.0"))
}

const ALL: &[&str] = &["db", "ledger", "payments", "search", "web", "mail"];

#[test]
fn cascade_from_a_hard_dependency_takes_its_dependents_first() {
    let plan = rollback(&shop(), None, "ledger", RollbackScope::Cascade, ALL);
    assert_eq!(order(&plan), ["web", "payments", "ledger"]);
    assert_eq!(plan.members[0].reason, "depends on payments (config)");
    assert_eq!(plan.members[1].reason, "depends on ledger (hard)");
    assert_eq!(plan.members[2].reason, "failed");
}

#[test]
fn cascade_over_a_data_dependency_runs_migrate_down_after_the_dependents() {
    let plan = rollback(&shop(), None, "db", RollbackScope::Cascade, ALL);
    assert_eq!(order(&plan), ["web", "payments", "ledger", "db"]);
    assert_eq!(
        steps(&plan),
        ["roll back web", "roll back payments", "roll back ledger", "run migrate_down of db", "roll back db"]
    );
}

#[test]
fn a_data_dependency_without_migrate_down_pauses_after_its_dependents() {
    let spec = release("r")
        .with(service("db", "2.0.0").migrations(false))
        .with(service("ledger", "1.1.0").depends("db", DepKind::Data));
    let plan = rollback(&spec, None, "db", RollbackScope::Cascade, &["db", "ledger"]);
    assert_eq!(order(&plan), ["ledger", "db"]);
    assert!(matches!(&plan.steps[0], RollbackStep::Rollback { service } if service.as_str() == "ledger"));
    match &plan.steps[1] {
        RollbackStep::Pause { service, reason } => {
            assert_eq!(service.as_str(), "db");
            assert!(reason.contains("no migrate_down"), "{reason}");
        }
        other => panic!("expected a pause, got {other}"),
    }
    assert_eq!(plan.steps.len(), 2, "db itself is not rolled back automatically");
}

#[test]
fn a_config_dependency_cascades() {
    let plan = rollback(&shop(), None, "payments", RollbackScope::Cascade, ALL);
    assert_eq!(order(&plan), ["web", "payments"]);
}

#[test]
fn a_soft_dependency_does_not_cascade() {
    let plan = rollback(&shop(), None, "search", RollbackScope::Cascade, ALL);
    assert_eq!(order(&plan), ["search"]);
}

#[test]
fn cascade_skips_services_that_have_not_started() {
    let plan = rollback(&shop(), None, "ledger", RollbackScope::Cascade, &["db", "ledger", "search"]);
    assert_eq!(order(&plan), ["ledger"]);
    // And does not walk through an unstarted service to reach a started one.
    let plan = rollback(&shop(), None, "ledger", RollbackScope::Cascade, &["db", "ledger", "web"]);
    assert_eq!(order(&plan), ["ledger"]);
}

#[test]
fn service_scope_rolls_back_only_the_failed_service() {
    let plan = rollback(&shop(), None, "ledger", RollbackScope::Service, ALL);
    assert_eq!(order(&plan), ["ledger"]);
}

#[test]
fn release_scope_rolls_back_every_started_service_in_reverse_dependency_order() {
    let plan = rollback(&shop(), None, "mail", RollbackScope::Release, &["db", "ledger", "payments", "search", "mail"]);
    // Highest wave first; inside a wave, release order.
    assert_eq!(order(&plan), ["payments", "ledger", "db", "search", "mail"]);
    assert_eq!(
        steps(&plan),
        [
            "roll back payments",
            "roll back ledger",
            "run migrate_down of db",
            "roll back db",
            "roll back search",
            "roll back mail"
        ]
    );
}

#[test]
fn whole_release_rollback_by_an_operator() {
    let plan = Plan::build(&shop(), None).unwrap();
    let started = names(ALL);
    let rb = plan.rollback(RollbackRequest {
        failed: None,
        also_failed: &[],
        scope: RollbackScope::Cascade,
        started: &started,
        expired: &BTreeSet::new(),
    });
    assert_eq!(order(&rb), ["web", "payments", "ledger", "db", "search", "mail"]);
    assert!(rb.members.iter().all(|m| m.reason == "the whole release rolls back"));
}

#[test]
fn a_contract_consumer_is_pulled_into_the_rollback_of_its_provider() {
    let spec = release("r")
        .with(service("auth", "4.0.0").provides("auth-api", "4.0.0"))
        .with(service("web", "2.0.0").requires("auth-api", "^4"));
    let plan = rollback(&spec, None, "auth", RollbackScope::Cascade, &["auth", "web"]);
    assert_eq!(order(&plan), ["web", "auth"]);
    assert!(plan.members[0].reason.starts_with("requires contract `auth-api` from auth"), "{}", plan.members[0].reason);
}

#[test]
fn a_contract_consumer_stays_when_the_providers_old_version_still_serves_it() {
    let spec = release("r")
        .with(service("auth", "3.2.0").provides("auth-api", "3.2.0"))
        .with(service("web", "2.0.0").requires("auth-api", "^3.1"));
    let mut h = host("h1", &[], &[("web", "1.0.0")]);
    h.services.insert(
        ServiceName::from("auth"),
        Installed::Detailed {
            version: "3.1.0".parse().unwrap(),
            provides: [("auth-api".to_owned(), "3.1.0".parse().unwrap())].into(),
        },
    );
    let fleet = fleet(vec![h]);
    let plan = rollback(&spec, Some(&fleet), "auth", RollbackScope::Cascade, &["auth", "web"]);
    assert_eq!(order(&plan), ["auth"]);
}

#[test]
fn services_past_their_rollback_window_pause_instead_of_rolling_back() {
    let plan = Plan::build(&shop(), None).unwrap();
    let failed = ServiceName::from("ledger");
    let rb = plan.rollback(RollbackRequest {
        failed: Some(&failed),
        also_failed: &[],
        scope: RollbackScope::Cascade,
        started: &names(ALL),
        expired: &names(&["payments"]),
    });
    assert_eq!(order(&rb), ["web", "payments", "ledger"]);
    match &rb.steps[1] {
        RollbackStep::Pause { service, reason } => {
            assert_eq!(service.as_str(), "payments");
            assert!(reason.contains("rollback_window (1h)"), "{reason}");
        }
        other => panic!("expected a pause, got {other}"),
    }
}

#[test]
fn offline_plans_use_each_services_own_scope() {
    let spec = shop();
    let mut spec = spec;
    spec.services[1].policy.rollback_scope = RollbackScope::Service;
    let plan = Plan::build(&spec, None).unwrap();
    let ledger = plan.graph().node(&ServiceName::from("ledger")).unwrap();
    assert_eq!(order(&plan.rollback_if_failed(ledger)), ["ledger"]);
    let db = plan.graph().node(&ServiceName::from("db")).unwrap();
    assert_eq!(order(&plan.rollback_if_failed(db)), ["web", "payments", "ledger", "db"]);
}
