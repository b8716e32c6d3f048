//! Planning against a fleet: stages, batches, skipped hosts, gates, and the checks only a
//! fleet makes possible.

use flotilla_shared::fixtures::{fleet, host, release, service};
use flotilla_shared::inventory::Installed;
use flotilla_shared::plan::Plan;
use flotilla_shared::{DepKind, Fleet, HostId, ServiceName};

fn ids(hosts: &[HostId]) -> Vec<&str> {
    hosts.iter().map(HostId::as_str).collect()
}

/// Two canary-cell web hosts, six more web hosts, two db hosts.
fn shop_fleet() -> Fleet {
    let mut hosts = vec![
        host("web-1", &[("role", "web"), ("cell", "canary")], &[("web", "1.0.0")]),
        host("web-2", &[("role", "web"), ("cell", "canary")], &[("web", "2.0.0")]),
    ];
    for i in 3..=8 {
        hosts.push(host(&format!("web-{i}"), &[("role", "web"), ("cell", "main")], &[("web", "1.0.0")]));
    }
    hosts.push(host("db-1", &[("role", "db"), ("cell", "canary")], &[]));
    hosts.push(host("db-2", &[("role", "db"), ("cell", "main")], &[]));
    fleet(hosts)
}

#[test]
fn hosts_go_to_the_first_stage_that_selects_them_and_batches_skip_hosts_at_target() {
    let spec = release("r")
        .stages("cell", &["canary"])
        .with(service("db", "2.0.0").on("role", "db"))
        .with(service("web", "2.0.0").on("role", "web").depends("db", DepKind::Hard));
    let fleet = shop_fleet();
    let plan = Plan::build(&spec, Some(&fleet)).unwrap();
    let stages = plan.stages();
    assert_eq!(stages.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(), ["canary", "rest"]);
    assert_eq!(ids(stages[0].hosts.as_ref().unwrap()), ["web-1", "web-2", "db-1"]);
    assert_eq!(stages[1].hosts.as_ref().unwrap().len(), 7);

    let web = plan.graph().node(&ServiceName::from("web")).unwrap();
    let canary = plan.rollout(0, web).unwrap();
    assert_eq!(ids(&canary.skipped), ["web-2"], "web-2 already runs 2.0.0");
    assert_eq!(canary.batches.len(), 1);
    assert_eq!(ids(&canary.batches[0].hosts), ["web-1"]);

    let rest = plan.rollout(1, web).unwrap();
    let sizes: Vec<(&str, usize)> = rest.batches.iter().map(|b| (b.name.as_str(), b.hosts.len())).collect();
    assert_eq!(sizes, [("canary", 1), ("25%", 1), ("100%", 4)]);
}

#[test]
fn the_footprint_is_every_host_a_service_is_deployed_to_in_any_stage() {
    let spec = release("r")
        .stages("cell", &["canary"])
        .with(service("db", "2.0.0").on("role", "db"))
        .with(service("web", "2.0.0").on("role", "web").depends("db", DepKind::Hard));
    let plan = Plan::build(&spec, Some(&shop_fleet())).unwrap();
    let footprint = plan.footprint();
    let of = |s: &str| footprint[&ServiceName::from(s)].iter().map(HostId::as_str).collect::<Vec<_>>();
    assert_eq!(of("db"), ["db-1", "db-2"]);
    // web-2 already runs 2.0.0: the release does not touch it.
    assert_eq!(of("web"), ["web-1", "web-3", "web-4", "web-5", "web-6", "web-7", "web-8"]);
    assert!(Plan::build(&spec, None).unwrap().footprint().is_empty(), "no fleet, no footprint");
}

#[test]
fn a_service_without_hosts_in_a_stage_has_no_rollout_there() {
    let spec =
        release("r").stages("cell", &["canary"]).with(service("db", "2.0.0").on("role", "db").on("cell", "main"));
    let fleet = shop_fleet();
    let plan = Plan::build(&spec, Some(&fleet)).unwrap();
    assert!(plan.rollout(0, 0).is_none());
    assert_eq!(ids(&plan.rollout(1, 0).unwrap().batches[0].hosts), ["db-2"]);
}

#[test]
fn selectors_that_match_no_host_are_refused() {
    let spec = release("r").with(service("api", "1.0.0").on("role", "api"));
    let errors = Plan::build(&spec, Some(&shop_fleet())).unwrap_err();
    assert_eq!(errors[0].message, "`api` selects hosts role=api but no host in the fleet matches");

    let spec = release("r").stages("cell", &["blue"]).with(service("web", "2.0.0").on("role", "web"));
    let errors = Plan::build(&spec, Some(&shop_fleet())).unwrap_err();
    assert_eq!(errors[0].message, "stage `blue` has no hosts");
}

#[test]
fn a_dependency_outside_the_release_must_run_in_the_fleet() {
    let spec = release("r").with(service("web", "2.0.0").depends("cache", DepKind::Hard));
    let errors = Plan::build(&spec, Some(&shop_fleet())).unwrap_err();
    assert_eq!(
        errors[0].message,
        "`web` depends on `cache`, which is neither in this release nor running in the fleet"
    );

    let with_cache = fleet(vec![host("h", &[], &[("cache", "1.0.0")])]);
    let plan = Plan::build(&spec, Some(&with_cache)).unwrap();
    assert!(plan.graph().edges().is_empty(), "external dependencies add no edge");

    let offline = Plan::build(&spec, None).unwrap();
    assert!(offline.warnings()[0].message.contains("not checked"), "{:?}", offline.warnings());
}

#[test]
fn contracts_order_consumers_after_providers() {
    let spec = release("r")
        .with(service("web", "2.0.0").requires("auth-api", "^3.1"))
        .with(service("auth", "3.2.0").provides("auth-api", "3.2.0"));
    let plan = Plan::build(&spec, None).unwrap();
    let g = plan.graph();
    let (web, auth) = (g.node(&"web".into()).unwrap(), g.node(&"auth".into()).unwrap());
    assert!(g.wave(web) > g.wave(auth));
    assert_eq!(g.dependencies(web).next().unwrap().kind.to_string(), "contract `auth-api`");
}

#[test]
fn a_requirement_the_release_breaks_is_refused() {
    let spec = release("r")
        .with(service("web", "2.0.0").requires("auth-api", "^3.1"))
        .with(service("auth", "4.0.0").provides("auth-api", "4.0.0"));
    let errors = Plan::build(&spec, None).unwrap_err();
    assert_eq!(
        errors[0].message,
        "`web` requires `auth-api` ^3.1, which nothing in the release provides (auth 4.0.0 provides `auth-api` 4.0.0) or the fleet serves"
    );
}

#[test]
fn a_requirement_served_by_the_fleet_is_accepted() {
    let spec = release("r").with(service("web", "2.0.0").requires("auth-api", "^3.1"));
    let mut h = host("h", &[], &[]);
    h.services.insert(
        ServiceName::from("auth"),
        Installed::Detailed {
            version: "3.1.4".parse().unwrap(),
            provides: [("auth-api".into(), "3.1.4".parse().unwrap())].into(),
        },
    );
    assert!(Plan::build(&spec, Some(&fleet(vec![h.clone()]))).is_ok());
    let errors = Plan::build(&spec, Some(&fleet(vec![host("h", &[], &[])]))).unwrap_err();
    assert!(errors[0].message.starts_with("`web` requires `auth-api` ^3.1"), "{}", errors[0].message);
    // Offline, the fleet cannot be asked: a warning, not an error.
    assert_eq!(Plan::build(&spec, None).unwrap().warnings().len(), 1);
}

#[test]
fn gates_block_the_dependents_of_their_after_services() {
    let spec = release("r")
        .with(service("auth", "1.0.0"))
        .with(service("payments", "1.0.0").depends("auth", DepKind::Hard))
        .with(service("web", "1.0.0").depends("payments", DepKind::Hard))
        .with(service("mail", "1.0.0").depends("auth", DepKind::Soft))
        .gate("smoke", &["payments", "auth"]);
    let plan = Plan::build(&spec, None).unwrap();
    let gate = &plan.gates()[0];
    let g = plan.graph();
    let blocked: Vec<&str> = gate.blocks.iter().map(|&v| g.name(v).as_str()).collect();
    assert_eq!(blocked, ["web", "mail"], "payments is in `after`, so it does not wait for the gate");
    assert_eq!(gate.after_wave, 2);
    assert_eq!(plan.gated_by(g.node(&"web".into()).unwrap()), [0]);
}

#[test]
fn a_gate_that_waits_for_its_own_dependents_is_refused() {
    let spec = release("r")
        .with(service("auth", "1.0.0"))
        .with(service("cache", "1.0.0").depends("auth", DepKind::Hard))
        .with(service("web", "1.0.0").depends("cache", DepKind::Hard))
        .gate("smoke", &["auth", "web"]);
    let errors = Plan::build(&spec, None).unwrap_err();
    assert!(errors[0].message.starts_with("gate `smoke` can never open: "), "{}", errors[0].message);
    assert!(errors[0].message.contains("cache"), "{}", errors[0].message);
}
