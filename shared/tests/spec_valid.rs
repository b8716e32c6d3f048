//! Valid release specs parse into the expected typed values: defaults, overrides,
//! health checks, hooks, contracts, dependencies, stages and gates.

use std::collections::BTreeMap;
use std::time::Duration;

use flotilla_shared::model::{DepKind, HostCount, LabelSelector, OnFailure, RollbackScope, ServiceName};
use flotilla_shared::spec::{
    GateExec, HealthCheck, Hooks, Probe, ReleaseSpec, RolloutPolicy, SourceFile, StageSpec, parse,
};
use semver::{Version, VersionReq};

const FULL: &str = r#"
release = "checkout-2026-11-22"

[defaults]
canary = "10%"
batches = [2, "50%", "100%"]
bake = "1m"
max_failed = 1
on_failure = "pause"
hook_timeout = "2m"

[[stage]]
name = "canary-cell"
hosts = { cell = "canary" }
approval = true

[[stage]]
name = "rest"

[[service]]
name = "payments"
version = "2.4.0"
hosts = { role = "payments" }
artifact = { url = "https://artifacts.example.com/payments-2.4.0.tar.gz", sha256 = "ABCDEF0123456789abcdef0123456789ABCDEF0123456789abcdef0123456789" }
run = { command = "bin/payments", args = ["--port", "8080"], env = { RUST_LOG = "info" }, stop_timeout = "20s" }
hooks = { before_install = "bin/drain", migrate = "bin/migrate up", migrate_down = "bin/migrate down", validate = "bin/selfcheck" }
health = [
  { http = "http://127.0.0.1:8080/healthz", expect_status = 204, body = "ok", interval = "2s", timeout = "1s" },
  { tcp = "127.0.0.1:8080" },
  { exec = "bin/ping-db" },
]
healthy_for = "10s"
provides = { "payments-api" = "2.4.0" }
requires = { "auth-api" = "^3.1", "ledger-api" = ">=1.2, <2" }
depends_on = [
  { service = "auth" },
  { service = "ledger-db", kind = "data" },
  { service = "config-store", kind = "config" },
  { service = "metrics", kind = "soft" },
]
canary = 1
rollback_scope = "service"

[[service]]
name = "ledger-db"
version = "1.0.0-rc.1"
hosts = { role = "db" }
artifact = { url = "file:///srv/artifacts/ledger-db.tar.gz", sha256 = "0000000000000000000000000000000000000000000000000000000000000000" }
run = { command = "bin/ledger" }
hooks = { migrate = "bin/migrate" }
batches = ["12.5%", 3]

[[gate]]
name = "smoke"
after = ["payments", "ledger-db"]
exec = { command = "scripts/smoke.sh", on = { role = "web" }, timeout = "2m" }
approval = true

[[gate]]
name = "sign-off"
after = ["payments"]
approval = true
"#;

/// Parses a spec that must be valid.
fn parse_ok(text: &str) -> ReleaseSpec {
    match parse(&SourceFile::new("release.toml", text)) {
        Ok(spec) => spec,
        Err(errors) => panic!("the spec should parse:\n{errors}"),
    }
}

/// A selector from label pairs.
fn selector(pairs: &[(&str, &str)]) -> LabelSelector {
    LabelSelector(pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect())
}

/// The policy `[defaults]` of [`FULL`] sets.
fn full_defaults() -> RolloutPolicy {
    RolloutPolicy {
        canary: HostCount::Percent(1_000),
        batches: vec![HostCount::Hosts(2), HostCount::Percent(5_000), HostCount::ALL],
        bake: Duration::from_secs(60),
        max_failed: 1,
        on_failure: OnFailure::Pause,
        hook_timeout: Duration::from_secs(120),
        ..RolloutPolicy::default()
    }
}

#[test]
fn full_spec_parses_release_and_stages() {
    let spec = parse_ok(FULL);
    assert_eq!(spec.release, "checkout-2026-11-22");
    let stages: Vec<(&str, Option<&LabelSelector>, bool)> =
        spec.stages.iter().map(|s| (s.name.as_str(), s.hosts.as_ref(), s.approval)).collect();
    assert_eq!(stages, [("canary-cell", Some(&selector(&[("cell", "canary")])), true), ("rest", None, false)]);
    let names: Vec<&str> = spec.services.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["payments", "ledger-db"]);
}

#[test]
fn service_overrides_apply_per_key_over_defaults() {
    let spec = parse_ok(FULL);
    let payments = spec.service("payments").expect("payments");
    let expected = RolloutPolicy {
        canary: HostCount::Hosts(1),
        rollback_scope: RollbackScope::Service,
        healthy_for: Duration::from_secs(10),
        ..full_defaults()
    };
    assert_eq!(payments.policy, expected);

    let ledger = spec.service("ledger-db").expect("ledger-db");
    let expected = RolloutPolicy { batches: vec![HostCount::Percent(1_250), HostCount::Hosts(3)], ..full_defaults() };
    assert_eq!(ledger.policy, expected);
}

#[test]
fn service_values_are_typed() {
    let spec = parse_ok(FULL);
    let payments = spec.service("payments").expect("payments");
    assert_eq!(payments.name, ServiceName::new("payments"));
    assert_eq!(payments.version, Version::new(2, 4, 0));
    assert_eq!(payments.hosts, selector(&[("role", "payments")]));
    assert_eq!(payments.artifact.url, "https://artifacts.example.com/payments-2.4.0.tar.gz");
    assert_eq!(
        payments.artifact.sha256, "abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789",
        "stored lowercase"
    );
    assert_eq!(payments.run.command, "bin/payments");
    assert_eq!(payments.run.args, ["--port", "8080"]);
    assert_eq!(payments.run.env, BTreeMap::from([("RUST_LOG".to_owned(), "info".to_owned())]));
    assert_eq!(payments.run.stop_timeout, Duration::from_secs(20));
    assert_eq!(
        payments.hooks,
        Hooks {
            before_install: Some("bin/drain".to_owned()),
            after_install: None,
            migrate: Some("bin/migrate up".to_owned()),
            migrate_down: Some("bin/migrate down".to_owned()),
            validate: Some("bin/selfcheck".to_owned()),
        }
    );

    let ledger = spec.service("ledger-db").expect("ledger-db");
    assert_eq!(ledger.version, Version::parse("1.0.0-rc.1").expect("version"));
    assert_eq!(ledger.artifact.url, "file:///srv/artifacts/ledger-db.tar.gz");
    assert_eq!(ledger.run.stop_timeout, Duration::from_secs(10), "default stop_timeout");
    assert!(ledger.health.is_empty() && ledger.depends_on.is_empty());
}

#[test]
fn health_checks_keep_their_settings_and_defaults() {
    let spec = parse_ok(FULL);
    let payments = spec.service("payments").expect("payments");
    let default_timing =
        |probe| HealthCheck { probe, interval: Duration::from_secs(1), timeout: Duration::from_millis(500) };
    assert_eq!(
        payments.health,
        [
            HealthCheck {
                probe: Probe::Http {
                    url: "http://127.0.0.1:8080/healthz".to_owned(),
                    expect_status: 204,
                    body: Some("ok".to_owned()),
                },
                interval: Duration::from_secs(2),
                timeout: Duration::from_secs(1),
            },
            default_timing(Probe::Tcp { addr: "127.0.0.1:8080".to_owned() }),
            default_timing(Probe::Exec { command: "bin/ping-db".to_owned() }),
        ]
    );
}

#[test]
fn contracts_and_dependencies_are_typed() {
    let spec = parse_ok(FULL);
    let payments = spec.service("payments").expect("payments");
    assert_eq!(payments.provides, BTreeMap::from([("payments-api".to_owned(), Version::new(2, 4, 0))]));
    let requires: BTreeMap<&str, &VersionReq> = payments.requires.iter().map(|(k, r)| (k.as_str(), &r.range)).collect();
    assert_eq!(
        requires,
        BTreeMap::from([
            ("auth-api", &VersionReq::parse("^3.1").expect("range")),
            ("ledger-api", &VersionReq::parse(">=1.2, <2").expect("range")),
        ])
    );
    let deps: Vec<(&str, DepKind)> = payments.depends_on.iter().map(|d| (d.service.as_str(), d.kind)).collect();
    assert_eq!(
        deps,
        [
            ("auth", DepKind::Hard),
            ("ledger-db", DepKind::Data),
            ("config-store", DepKind::Config),
            ("metrics", DepKind::Soft)
        ]
    );
}

#[test]
fn gates_are_typed_with_defaults() {
    let spec = parse_ok(FULL);
    let gates: Vec<(&str, Vec<&str>, Option<&GateExec>, bool)> = spec
        .gates
        .iter()
        .map(|g| (g.name.as_str(), g.after.iter().map(ServiceName::as_str).collect(), g.exec.as_ref(), g.approval))
        .collect();
    let smoke = GateExec {
        command: "scripts/smoke.sh".to_owned(),
        on: selector(&[("role", "web")]),
        timeout: Duration::from_secs(120),
    };
    assert_eq!(
        gates,
        [("smoke", vec!["payments", "ledger-db"], Some(&smoke), true), ("sign-off", vec!["payments"], None, true)]
    );

    let spec = parse_ok(&FULL.replace(r#", timeout = "2m" }"#, " }"));
    let exec = spec.gates[0].exec.as_ref().expect("exec");
    assert_eq!(exec.timeout, Duration::from_secs(300), "default gate timeout");
}

#[test]
fn spans_point_back_into_the_file() {
    let source = SourceFile::new("release.toml", FULL);
    let spec = parse(&source).expect("valid");
    let payments = spec.service("payments").expect("payments");
    assert_eq!(&FULL[payments.span.start..payments.span.end], "[[service]]");
    let ledger_dep = &payments.depends_on[1];
    assert_eq!(&FULL[ledger_dep.span.start..ledger_dep.span.end], r#"{ service = "ledger-db", kind = "data" }"#);
    assert_eq!(&FULL[spec.stages[1].span.start..spec.stages[1].span.end], "[[stage]]");
    let sign_off = FULL.rfind("[[gate]]").expect("second gate");
    assert_eq!(spec.gates[1].span.start, sign_off);
    assert_eq!(source.line_col(sign_off), (FULL[..sign_off].lines().count() + 1, 1));
}

#[test]
fn minimal_spec_gets_every_default_and_one_stage_over_all_hosts() {
    let spec = parse_ok(
        r#"
release = "minimal"
[[service]]
name = "web"
version = "0.1.0"
artifact = { url = "http://example.com/web.tar", sha256 = "ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff" }
run = { command = "bin/web" }
health = [{ http = "http://127.0.0.1/" }]
"#,
    );
    assert_eq!(
        spec.stages,
        [StageSpec {
            name: "all".to_owned(),
            hosts: None,
            approval: false,
            approval_by: Default::default(),
            span: Default::default()
        }]
    );
    let web = &spec.services[0];
    assert_eq!(web.policy, RolloutPolicy::default());
    assert_eq!(web.hosts, LabelSelector::all());
    assert_eq!(web.hooks, Hooks::default());
    assert_eq!(
        web.health,
        [HealthCheck {
            probe: Probe::Http { url: "http://127.0.0.1/".to_owned(), expect_status: 200, body: None },
            interval: Duration::from_secs(1),
            timeout: Duration::from_millis(500),
        }]
    );
    assert!(spec.gates.is_empty());
}

/// The policy of a one-service spec whose `[defaults]` table has `defaults`.
fn policy_with_defaults(defaults: &str) -> RolloutPolicy {
    let text = format!(
        r#"
release = "r"
[defaults]
{defaults}
[[service]]
name = "web"
version = "1.0.0"
artifact = {{ url = "https://example.com/web.tar.gz", sha256 = "0000000000000000000000000000000000000000000000000000000000000000" }}
run = {{ command = "bin/web" }}
"#
    );
    parse_ok(&text).services.remove(0).policy
}

#[test]
fn fractional_percentages_are_kept_in_basis_points() {
    let policy = policy_with_defaults(
        r#"canary = "0.5%"
batches = ["12.5%", "33.33%", "100%"]"#,
    );
    assert_eq!(policy.canary, HostCount::Percent(50));
    assert_eq!(policy.batches, [HostCount::Percent(1_250), HostCount::Percent(3_333), HostCount::ALL]);
}

#[test]
fn batches_that_stop_short_of_every_host_are_accepted() {
    let policy = policy_with_defaults(
        r#"canary = 0
batches = [1, "25%", 5]"#,
    );
    assert_eq!(policy.canary, HostCount::Hosts(0));
    assert_eq!(policy.batches, [HostCount::Hosts(1), HostCount::Percent(2_500), HostCount::Hosts(5)]);
}

#[test]
fn changed_at_is_the_change_time_in_unix_milliseconds_whatever_its_offset() {
    let base = |at: &str| format!("release = \"r\"\n{at}\n");
    assert_eq!(parse_ok(&base("")).changed_unix_ms, None);
    let utc = parse_ok(&base("changed_at = 2026-12-01T09:30:00Z")).changed_unix_ms;
    assert_eq!(utc, Some(1_796_117_400_000));
    let paris = parse_ok(&base("changed_at = 2026-12-01T10:30:00.250+01:00")).changed_unix_ms;
    assert_eq!(paris, Some(1_796_117_400_250), "the offset is applied and milliseconds kept");
}
