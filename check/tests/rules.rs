//! Every rule against hand-made histories: the clean `shop` upgrade and its rolled-back
//! variant pass every rule, each having examined something; for each rule, a small edit
//! of a clean history breaks it, and the report names the rule and the offending
//! records; parts a history does not let a rule check are reported as such.

#[allow(dead_code)]
mod support;

use flotilla_check::{Finding, History, Options, Record, Report, Rule, Severity, check};
use flotilla_proto::v1;
use flotilla_proto::v1::EventKind as K;
use flotilla_shared::history::HostHistoryEntry;
use support::{CANARY, PROD};

fn run(h: &History) -> Report {
    check(h, &Options::default())
}

fn findings(report: &Report, rule: Rule, severity: Severity) -> Vec<&Finding> {
    report.of(rule).filter(|f| f.severity == severity).collect()
}

/// The violations of `rule`; fails unless there is at least one.
fn violations(report: &Report, rule: Rule) -> Vec<&Finding> {
    let found = findings(report, rule, Severity::Violation);
    assert!(!found.is_empty(), "expected a {rule} violation:\n{report}");
    found
}

fn names_line(f: &Finding, host: &str, command: &str, event: &str) -> bool {
    f.records.iter().any(|r| {
        matches!(r, Record::HostLine { host: h, command_id: c, event: e, .. }
            if h == host && c == command && e.starts_with(event))
    })
}

fn names_event(f: &Finding, release: &str, index: u64) -> bool {
    f.records
        .iter()
        .any(|r| matches!(r, Record::Event { release_id, index: i, .. } if release_id == release && *i == index))
}

/// The only rules with findings are `rules`.
fn only(report: &Report, rules: &[Rule]) {
    for f in report.findings() {
        assert!(rules.contains(&f.rule), "unexpected finding of {}:\n{report}", f.rule);
    }
}

fn assert_passes_every_rule(h: &History) -> Report {
    let report = run(h);
    assert!(report.is_clean(), "{report}");
    assert!(report.findings().is_empty(), "{report}");
    for rule in Rule::ALL {
        assert!(report.checked(rule).total() > 0, "{rule} examined nothing:\n{report}");
    }
    report
}

// ------------------------------------------------------------------ clean histories

#[test]
fn the_clean_upgrade_passes_every_rule() {
    let report = assert_passes_every_rule(&support::clean());
    assert_eq!(report.seed(), Some(42));
    assert!(report.checked(Rule::DependencyOrder).get("dependency pairs by events") >= 4, "{report}");
    assert!(report.checked(Rule::DependencyOrder).get("dependency pairs by host lines") >= 4, "{report}");
    assert!(report.checked(Rule::ConfigOrder).get("config pairs on hosts") >= 6, "{report}");
    assert_eq!(report.checked(Rule::MigrationOnce).get("migrate executions"), 1, "{report}");
    assert!(report.checked(Rule::AtMostOnce).get("deploy attempt groups") > 0, "{report}");
    assert!(report.checked(Rule::TermFencing).get("steps against their dispatch") > 0, "{report}");
    assert_eq!(report.checked(Rule::FinalVersions).get("services on hosts"), 14, "{report}");
    assert_eq!(report.checked(Rule::NoLostWrite).get("acknowledged creates"), 2, "{report}");
    assert_eq!(report.checked(Rule::NoLostWrite).get("acknowledged operator actions"), 1, "{report}");
}

#[test]
fn the_clean_rollback_passes_every_rule() {
    let report = assert_passes_every_rule(&support::rolled_back());
    assert_eq!(report.checked(Rule::RollbackOrderAndSet).get("rollback decisions"), 1, "{report}");
    // web 2, worker 3 (stops), api 3, db 1 migrate_down + 2, config 3.
    assert_eq!(report.checked(Rule::RollbackOrderAndSet).get("rollback executions"), 14, "{report}");
    assert!(report.checked(Rule::RollbackOrderAndSet).get("ordered pairs by host lines") >= 15, "{report}");
    assert!(report.checked(Rule::RollbackOrderAndSet).get("ordered pairs by events") >= 15, "{report}");
}

#[test]
fn a_history_reads_back_from_its_json_and_checks_the_same() {
    for h in [support::clean(), support::rolled_back()] {
        let text = serde_json::to_string_pretty(&h).expect("serializes");
        assert!(text.contains(r#""kind": "EVENT_KIND_BATCH_STARTED""#), "canonical protobuf JSON");
        let back = History::from_json(&text).expect("reads back");
        assert_eq!(back, h);
        assert_eq!(run(&back), run(&h));
    }
}

#[test]
fn the_report_renders_every_rule_and_what_it_checked() {
    let text = run(&support::clean()).to_string();
    assert!(text.starts_with("history check: 0 violations, 0 parts that cannot be checked (seed 42)"), "{text}");
    for rule in Rule::ALL {
        assert!(text.contains(rule.id()), "{text}");
    }
    assert!(text.contains("config pairs on hosts"), "{text}");
}

// ------------------------------------------------------------------ at-most-once

#[test]
fn at_most_once_flags_a_command_started_twice() {
    let mut h = support::clean();
    let start = support::line_of(&h, "app-2", "r1", "deploy", "api", "started");
    let end = support::line_of(&h, "app-2", "r1", "deploy", "api", "finished");
    let command = support::command_at(&h, "app-2", start);
    let lines = &mut support::host(&mut h, "app-2").history;
    let again = [lines[start].clone(), lines[end].clone()];
    lines.extend(again);
    let n = lines.len();
    let report = run(&h);
    let found = violations(&report, Rule::AtMostOnce);
    assert!(
        found.iter().any(|f| names_line(f, "app-2", &command, "started")
            && f.records.iter().any(|r| matches!(r, Record::HostLine { line, .. } if *line == n - 1))),
        "{report}"
    );
    assert!(
        found.iter().any(|f| f.message.contains(&format!("command {command} started 2 times on app-2"))),
        "{report}"
    );
}

#[test]
fn at_most_once_flags_a_retry_started_before_the_interrupted_attempt_finished() {
    let mut h = support::clean();
    // api's rest batch on app-3 ran twice: attempt 1 (interrupted), then attempt 2.
    let first_end = support::line_of(&h, "app-3", "r1", "deploy", "api", "finished");
    let first = support::command_at(&h, "app-3", first_end);
    let second_start = first_end + 1;
    let second = support::command_at(&h, "app-3", second_start);
    assert_ne!(first, second);
    support::move_line_after(&mut h, "app-3", first_end, second_start);
    let report = run(&h);
    let found = violations(&report, Rule::AtMostOnce);
    assert!(
        found.iter().any(|f| f.message.contains("attempt 2") && names_line(f, "app-3", &second, "started")),
        "{report}"
    );
}

/// Deploys web (which nothing depends on) on app-2 once more in r1: a new command,
/// dispatched by a new BATCH_STARTED inserted before the release's last event, with an
/// operator resume before it when `resumed`.
fn deploy_again_after_success(resumed: bool) -> (History, String) {
    let mut h = support::clean();
    let command = "r1.99".to_owned();
    let pos = support::event_pos(&h, "r1", K::BatchStarted, PROD, "web");
    let log = support::events(&mut h, "r1");
    let mut batch = log[pos].clone();
    batch.hosts = vec!["app-2".to_owned()];
    batch.command_ids = vec![command.clone()];
    let last = log.len() - 1;
    let mut inserted = vec![batch];
    if resumed {
        let mut resume = log[last].clone();
        resume.kind = K::Resumed as i32;
        resume.actor = "operator bob".to_owned();
        inserted.insert(0, resume);
    }
    for (i, e) in inserted.into_iter().enumerate() {
        log.insert(last + i, e);
    }
    for (i, e) in log.iter_mut().enumerate() {
        e.index = i as u64 + 1;
    }
    let n = log.len() as u64;
    h.releases.iter_mut().find(|r| r.id == "r1").expect("r1").last_event_index = n;
    let start = support::line_of(&h, "app-2", "r1", "deploy", "web", "started");
    let lines = &mut support::host(&mut h, "app-2").history;
    let mut again = [lines[start].clone(), lines[start + 1].clone()];
    for l in &mut again {
        l.command_id = command.clone();
        l.at_unix_ms = 1_000_000;
    }
    lines.extend(again);
    (h, command)
}

#[test]
fn at_most_once_flags_a_second_successful_deploy_without_a_resume() {
    let (h, command) = deploy_again_after_success(false);
    let report = run(&h);
    let found = violations(&report, Rule::AtMostOnce);
    assert!(
        found.iter().any(|f| f.message.contains("had succeeded") && names_line(f, "app-2", &command, "started")),
        "{report}"
    );
    only(&report, &[Rule::AtMostOnce]);
}

#[test]
fn at_most_once_allows_a_deploy_again_after_an_operator_resume() {
    let (h, _) = deploy_again_after_success(true);
    let report = run(&h);
    assert!(report.is_clean(), "{report}");
}

// ------------------------------------------------------------------ no-overlap

#[test]
fn no_overlap_flags_a_bake_started_before_its_deploy_finished() {
    let mut h = support::clean();
    let deploy_end = support::line_of(&h, "app-1", "r1", "deploy", "web", "finished");
    let bake_start = support::line_of(&h, "app-1", "r1", "bake", "web", "started");
    let deploy = support::command_at(&h, "app-1", deploy_end);
    let bake = support::command_at(&h, "app-1", bake_start);
    support::move_line_after(&mut h, "app-1", deploy_end, bake_start);
    let report = run(&h);
    let found = violations(&report, Rule::NoOverlap);
    assert!(
        found.iter().any(|f| names_line(f, "app-1", &deploy, "started") && names_line(f, "app-1", &bake, "started")),
        "{report}"
    );
    only(&report, &[Rule::NoOverlap]);
}

#[test]
fn no_overlap_flags_a_succeeded_release_whose_step_never_finished() {
    let mut h = support::clean();
    let end = support::line_of(&h, "app-3", "r1", "bake", "web", "finished");
    let command = support::command_at(&h, "app-3", end);
    support::host(&mut h, "app-3").history.remove(end);
    let report = run(&h);
    let found = violations(&report, Rule::NoOverlap);
    assert!(found.iter().any(|f| f.message.contains("never finished") && names_line(f, "app-3", &command, "started")));
}

// ------------------------------------------------------------------ dependency-order

#[test]
fn dependency_order_flags_a_service_started_before_its_data_dependency_was_done_by_events() {
    let mut h = support::clean();
    let done = support::event_pos(&h, "r1", K::ServiceDone, CANARY, "db");
    let api = support::event_pos(&h, "r1", K::ServiceStarted, CANARY, "api");
    support::move_event_after(&mut h, "r1", done, api);
    let report = run(&h);
    let found = violations(&report, Rule::DependencyOrder);
    // After the move, api's SERVICE_STARTED is one place earlier: index (api - 1) + 1.
    let api_index = api as u64;
    assert!(
        found.iter().any(|f| f.message.contains("data dependency db") && names_event(f, "r1", api_index)),
        "{report}"
    );
    only(&report, &[Rule::DependencyOrder]);
}

/// Moves the `started` line of api's canary deploy on app-1 to `at` ms.
fn api_starts_at(h: &mut History, at: impl Fn(i64) -> i64) -> String {
    let done = support::event_pos(h, "r1", K::ServiceDone, CANARY, "db");
    let done_at = h.events["r1"][done].at_unix_ms;
    let start = support::line_of(h, "app-1", "r1", "deploy", "api", "started");
    let line = &mut support::host(h, "app-1").history[start];
    line.at_unix_ms = at(done_at);
    line.command_id.clone()
}

#[test]
fn dependency_order_flags_a_deploy_started_on_a_host_before_the_dependency_was_done() {
    let mut h = support::clean();
    let command = api_starts_at(&mut h, |done| done - 5);
    let report = run(&h);
    let found = violations(&report, Rule::DependencyOrder);
    assert!(found.iter().any(|f| names_line(f, "app-1", &command, "started")), "{report}");

    // Within the clock-skew tolerance, the same history passes.
    let report = check(&h, &Options { skew_ms: 10 });
    assert!(report.is_clean(), "{report}");
}

#[test]
fn dependency_order_flags_a_deploy_started_while_the_dependency_still_ran() {
    let mut h = support::clean();
    // Before db's migration on db-1 even finished.
    let migrate_end = h
        .hosts
        .iter()
        .find(|x| x.host == "db-1")
        .expect("db-1")
        .history
        .iter()
        .find(|l| l.release_id == "r1" && matches!(l.entry, HostHistoryEntry::Finished { .. }))
        .expect("the migration's end")
        .at_unix_ms;
    let command = api_starts_at(&mut h, |_| migrate_end - 1);
    let report = run(&h);
    let found = violations(&report, Rule::DependencyOrder);
    assert!(
        found.iter().any(|f| f.message.contains("still running") && names_line(f, "app-1", &command, "started")),
        "{report}"
    );
}

// ------------------------------------------------------------------ config-order

#[test]
fn config_order_flags_a_deploy_started_before_its_config_dependency_finished_on_the_host() {
    let mut h = support::clean();
    let config_end = support::line_of(&h, "app-1", "r1", "deploy", "config", "finished");
    let api_start = support::line_of(&h, "app-1", "r1", "deploy", "api", "started");
    let config = support::command_at(&h, "app-1", config_end);
    let api = support::command_at(&h, "app-1", api_start);
    support::move_line_after(&mut h, "app-1", config_end, api_start);
    let report = run(&h);
    let found = violations(&report, Rule::ConfigOrder);
    assert!(
        found.iter().any(|f| names_line(f, "app-1", &config, "finished") && names_line(f, "app-1", &api, "started")),
        "{report}"
    );
    only(&report, &[Rule::ConfigOrder]);
}

// ------------------------------------------------------------------ migration-once

#[test]
fn migration_once_flags_a_migration_run_again_after_it_succeeded() {
    let mut h = support::clean();
    let start = support::line_of(&h, "db-1", "r1", "run_hook", "db", "started");
    let mut again = {
        let lines = &support::host(&mut h, "db-1").history;
        [lines[start].clone(), lines[start + 1].clone()]
    };
    for l in &mut again {
        l.command_id = "r1.98".to_owned();
        l.at_unix_ms += 1_000_000;
    }
    support::host(&mut h, "db-2").history.extend(again);
    let report = run(&h);
    let found = violations(&report, Rule::MigrationOnce);
    assert!(found.iter().any(|f| f.message.contains("succeeded 2 times")), "{report}");
    assert!(
        found.iter().any(|f| f.message.contains("started after") && names_line(f, "db-2", "r1.98", "started")),
        "{report}"
    );
}

#[test]
fn migration_once_flags_a_migration_started_again_in_the_events() {
    let mut h = support::clean();
    let started = support::event_pos(&h, "r1", K::MigrationStarted, CANARY, "db");
    let done = started + 2; // MIGRATION_STARTED, HOST lines, MIGRATION_DONE, then the batch
    let log = support::events(&mut h, "r1");
    assert_eq!(log[done - 1].kind, K::MigrationDone as i32);
    let last = log.len() - 1;
    let again = log[started].clone();
    log.insert(last, again);
    for (i, e) in log.iter_mut().enumerate() {
        e.index = i as u64 + 1;
    }
    let n = log.len() as u64;
    h.releases.iter_mut().find(|r| r.id == "r1").expect("r1").last_event_index = n;
    let report = run(&h);
    let found = violations(&report, Rule::MigrationOnce);
    assert!(found.iter().any(|f| names_event(f, "r1", n - 1)), "{report}");
}

// ------------------------------------------------------------------ rollback-order-and-set

fn decision(h: &mut History) -> &mut v1::ReleaseEvent {
    support::events(h, "r1").iter_mut().find(|e| e.kind == K::RollbackStarted as i32).expect("a rollback decision")
}

#[test]
fn rollback_order_flags_a_dependency_rolled_back_before_its_dependent() {
    let mut h = support::rolled_back();
    // Decided with config before api (and db), but the hosts rolled config back last.
    decision(&mut h).services = ["web", "worker", "config", "api", "db"].map(str::to_owned).to_vec();
    let report = run(&h);
    let found = violations(&report, Rule::RollbackOrderAndSet);
    let says = "the rollback of config comes before the rollback of api";
    assert!(
        found.iter().any(|f| f.message.contains(says)
            && f.records.iter().any(|r| matches!(r, Record::HostLine { host, .. } if host.starts_with("app-")))),
        "{report}"
    );
    assert!(
        found.iter().any(|f| f.message.contains(says) && f.records.iter().any(|r| matches!(r, Record::Event { .. }))),
        "{report}"
    );
    only(&report, &[Rule::RollbackOrderAndSet]);
}

#[test]
fn rollback_set_flags_a_service_rolled_back_outside_the_decided_set() {
    let mut h = support::rolled_back();
    let d = decision(&mut h);
    d.services.retain(|s| s != "worker");
    let index = d.index;
    let report = run(&h);
    let found = violations(&report, Rule::RollbackOrderAndSet);
    let stop = found
        .iter()
        .find(|f| f.message.contains("worker stop") && f.message.contains("not in the rollback set"))
        .unwrap_or_else(|| panic!("{report}"));
    assert!(names_event(stop, "r1", index), "{report}");
    assert!(stop.records.iter().any(|r| matches!(r, Record::HostLine { event, .. } if event == "started")));
}

#[test]
fn rollback_flags_a_rollback_step_of_a_release_that_never_decided_one() {
    let mut h = support::clean();
    let start = support::line_of(&h, "app-1", "r1", "deploy", "web", "started");
    let lines = &mut support::host(&mut h, "app-1").history;
    let mut rb = [lines[start].clone(), lines[start + 1].clone()];
    for l in &mut rb {
        l.command_id = "r1.97".to_owned();
    }
    rb[0].entry = HostHistoryEntry::Started {
        action: "rollback".to_owned(),
        service: Some("web".to_owned()),
        version: Some("2.0.0".to_owned()),
        hook: None,
    };
    lines.extend(rb);
    let report = run(&h);
    let found = violations(&report, Rule::RollbackOrderAndSet);
    assert!(
        found
            .iter()
            .any(|f| f.message.contains("never decided a rollback") && names_line(f, "app-1", "r1.97", "started")),
        "{report}"
    );
}

// ------------------------------------------------------------------ term-fencing

#[test]
fn term_fencing_flags_a_step_started_with_a_deposed_leaders_term() {
    let mut h = support::clean();
    // config's prod deploy on app-2 runs after the leader change (term 2).
    let start = support::line_of(&h, "app-2", "r1", "deploy", "config", "started");
    let line = &mut support::host(&mut h, "app-2").history[start];
    assert_eq!(line.term, 2);
    line.term = 1;
    let command = line.command_id.clone();
    // Just before it, the host refuses a stale step of term 1: it has seen term 2.
    let mut seen = support::host(&mut h, "app-2").history[start].clone();
    seen.command_id = "r1.96".to_owned();
    seen.term = 1;
    seen.entry = HostHistoryEntry::Refused { highest_term: 2 };
    support::host(&mut h, "app-2").history.insert(start, seen);
    let report = run(&h);
    let found = violations(&report, Rule::TermFencing);
    assert!(
        found.iter().any(|f| f.message.contains("after the host had seen term 2")
            && names_line(f, "app-2", &command, "started")
            && names_line(f, "app-2", "r1.96", "refused")),
        "{report}"
    );
    // Its dispatch was committed in term 2, too.
    assert!(found.iter().any(|f| f.message.contains("below term 2 that its dispatch")), "{report}");
}

#[test]
fn term_fencing_flags_an_event_log_whose_term_goes_down() {
    let mut h = support::clean();
    let log = support::events(&mut h, "r1");
    let pos = log.len() - 2;
    assert_eq!(log[pos].term, 2);
    log[pos].term = 1;
    let index = log[pos].index;
    let report = run(&h);
    let found = violations(&report, Rule::TermFencing);
    assert!(found.iter().any(|f| names_event(f, "r1", index) && f.message.contains("in term 1")), "{report}");
}

#[test]
fn term_fencing_flags_a_gap_in_event_indexes() {
    let mut h = support::clean();
    support::events(&mut h, "r1").remove(5);
    let report = run(&h);
    let found = violations(&report, Rule::TermFencing);
    assert!(found.iter().any(|f| f.message.contains("has index 7") && names_event(f, "r1", 7)), "{report}");
    assert!(found.iter().any(|f| f.message.contains("last event index")), "{report}");
}

// ------------------------------------------------------------------ final-versions

#[test]
fn final_versions_flags_a_host_left_on_the_old_version_of_a_succeeded_release() {
    let mut h = support::clean();
    support::inventory(&mut h, "app-3", "api").version = "1.0.0".to_owned();
    let report = run(&h);
    let found = violations(&report, Rule::FinalVersions);
    assert!(
        found.iter().any(|f| f.message.contains("app-3 runs api 1.0.0")
            && f.message.contains("should run 2.0.0")
            && f.records.iter().any(|r| matches!(r, Record::Inventory { host, .. } if host == "app-3"))),
        "{report}"
    );
    only(&report, &[Rule::FinalVersions]);
}

#[test]
fn final_versions_leaves_a_host_an_operator_excluded_on_what_it_ran() {
    let h = support::excluded();
    let report = run(&h);
    assert!(findings(&report, Rule::FinalVersions, Severity::Violation).is_empty(), "{report}");
    // ... and still holds it to what it ran: app-3 may not run web 2.0.0 unannounced.
    let mut h = h;
    support::inventory(&mut h, "app-3", "web").version = "2.0.0".to_owned();
    let report = run(&h);
    let found = violations(&report, Rule::FinalVersions);
    assert!(
        found
            .iter()
            .any(|f| f.message.contains("app-3 runs web 2.0.0") && f.message.contains("excluded by an operator")),
        "{report}"
    );
}

#[test]
fn final_versions_flags_a_new_service_still_running_after_its_rollback() {
    let mut h = support::rolled_back();
    support::inventory(&mut h, "app-1", "worker").state = v1::ServiceRunState::Running as i32;
    let report = run(&h);
    let found = violations(&report, Rule::FinalVersions);
    assert!(
        found.iter().any(|f| f.message.contains("app-1 runs worker 2.0.0")
            && f.message.contains("absent or stopped")
            && f.records.iter().any(|r| matches!(r, Record::HostLine { event, .. } if event == "started"))),
        "{report}"
    );
}

#[test]
fn final_versions_flags_a_host_the_rollback_skipped() {
    let mut h = support::rolled_back();
    support::inventory(&mut h, "db-2", "db").version = "2.0.0".to_owned();
    let report = run(&h);
    let found = violations(&report, Rule::FinalVersions);
    assert!(found.iter().any(|f| f.message.contains("db-2 runs db 2.0.0") && f.message.contains("should run 1.0.0")));
}

// ------------------------------------------------------------------ no-lost-write

#[test]
fn no_lost_write_flags_an_acknowledged_create_whose_release_is_gone() {
    let mut h = support::clean();
    h.writes.push(flotilla_check::Write {
        method: flotilla_check::CREATE_METHOD.to_owned(),
        release_id: "r9".to_owned(),
        acknowledged: true,
    });
    let position = h.writes.len() - 1;
    let report = run(&h);
    let found = violations(&report, Rule::NoLostWrite);
    assert!(
        found.iter().any(|f| f.message.contains("release r9")
            && f.records.iter().any(|r| matches!(r, Record::Write { position: p, .. } if *p == position))),
        "{report}"
    );
    only(&report, &[Rule::NoLostWrite]);
}

#[test]
fn no_lost_write_flags_an_acknowledged_pause_without_its_event() {
    let mut h = support::clean();
    h.writes.push(flotilla_check::Write {
        method: "flotilla.v1.Releases/Pause".to_owned(),
        release_id: "r1".to_owned(),
        acknowledged: true,
    });
    let report = run(&h);
    let found = violations(&report, Rule::NoLostWrite);
    assert!(found.iter().any(|f| f.message.contains("1 acknowledged Pause writes")), "{report}");
}

// ------------------------------------------------------------------ cannot check

#[test]
fn events_without_terms_cannot_be_checked_for_term_order() {
    let mut h = support::clean();
    for e in support::events(&mut h, "r1") {
        e.term = 0;
    }
    let report = run(&h);
    assert!(report.is_clean(), "{report}");
    let cannot = findings(&report, Rule::TermFencing, Severity::CannotCheck);
    assert_eq!(cannot.len(), 1, "{report}");
    assert!(cannot[0].message.contains("carry no term"), "{report}");
}

#[test]
fn a_release_without_its_plan_or_events_is_reported_as_not_checked() {
    let mut h = support::clean();
    h.releases.iter_mut().find(|r| r.id == "r1").expect("r1").plan = None;
    let report = run(&h);
    for rule in [Rule::DependencyOrder, Rule::ConfigOrder, Rule::FinalVersions] {
        assert!(!findings(&report, rule, Severity::CannotCheck).is_empty(), "{rule}:\n{report}");
    }

    let mut h = support::rolled_back();
    h.events.remove("r1");
    let report = run(&h);
    assert!(!findings(&report, Rule::RollbackOrderAndSet, Severity::CannotCheck).is_empty(), "{report}");
    assert!(!findings(&report, Rule::FinalVersions, Severity::CannotCheck).is_empty(), "{report}");
    assert!(report.to_string().contains("cannot check [rollback-order-and-set]"), "{report}");
}

#[test]
fn a_step_cancelled_before_it_began_has_only_its_finished_line() {
    let mut h = support::clean();
    let end = support::line_of(&h, "app-1", "r1", "deploy", "web", "finished");
    let mut alone = support::host(&mut h, "app-1").history[end].clone();
    alone.command_id = "r1.95".to_owned();
    alone.entry = HostHistoryEntry::Finished { outcome: "cancelled".to_owned(), version: Some("1.0.0".to_owned()) };
    support::host(&mut h, "app-1").history.push(alone.clone());
    let report = run(&h);
    assert!(report.findings().is_empty(), "{report}");
    assert_eq!(report.checked(Rule::NoOverlap).get("steps cancelled before they began"), 1, "{report}");

    // Any other outcome without a `started` line: when it ran is unknown.
    alone.entry = HostHistoryEntry::Finished { outcome: "succeeded".to_owned(), version: Some("2.0.0".to_owned()) };
    support::host(&mut h, "app-1").history.push(alone);
    let report = run(&h);
    assert!(report.is_clean(), "{report}");
    let cannot = findings(&report, Rule::NoOverlap, Severity::CannotCheck);
    assert!(cannot.iter().any(|f| names_line(f, "app-1", "r1.95", "finished")), "{report}");
}
