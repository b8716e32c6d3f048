//! The host's execution history (`journal/history.jsonl`): what the real executor
//! appends as steps start, finish and are refused (never two steps of one service
//! open at once, nothing for a repeat), and the reader: a line torn by a crash is
//! ignored, a newer format or a broken line is refused with its file and line, and
//! rotation past the bound keeps both files readable in order.

mod support;

use std::io::Write as _;
use std::time::Duration;

use flotilla_agent::history::{self, HISTORY_FILE, HistoryError, HistoryLog, ROTATED_FILE};
use flotilla_agent::step::{Action, HookKind, RunCheck, RunHook, StepOutcome, StepPhase, Stop};
use flotilla_shared::history::{HOST_HISTORY_FORMAT, HostHistoryEntry, HostHistoryRecord};
use support::{World, deploy_step, step, until_phase};

fn check(id: &str, term: u64) -> flotilla_agent::step::Step {
    step(
        id,
        term,
        Action::RunCheck(RunCheck { gate: "g".into(), command: "true".into(), env: Default::default(), timeout_ms: 0 }),
    )
}

/// The entries of `command_id`, in order.
fn entries_of(records: &[HostHistoryRecord], command_id: &str) -> Vec<HostHistoryEntry> {
    records.iter().filter(|r| r.command_id == command_id).map(|r| r.entry.clone()).collect()
}

fn started(action: &str, version: &str, hook: Option<&str>) -> HostHistoryEntry {
    HostHistoryEntry::Started {
        action: action.to_owned(),
        service: Some("web".to_owned()),
        version: Some(version.to_owned()),
        hook: hook.map(str::to_owned),
    }
}

fn finished(outcome: &str, version: &str) -> HostHistoryEntry {
    HostHistoryEntry::Finished { outcome: outcome.to_owned(), version: Some(version.to_owned()) }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deploy_writes_started_then_finished_with_its_version_and_a_repeat_writes_nothing() {
    let world = World::new();
    let executor = world.executor().await;
    let v1 = world.package("1.0.0");
    let d1 = deploy_step("d1", 1, world.deploy("d1", "1.0.0", &v1));
    let result = executor.execute(d1.clone()).finish().await;
    assert_eq!(result.outcome, StepOutcome::Succeeded, "{result:?}");
    let hook = RunHook {
        service: "web".into(),
        version: "1.0.0".into(),
        hook: HookKind::MigrateDown,
        command: "true".into(),
        timeout_ms: 10_000,
        artifact: None,
    };
    let result = executor.execute(step("h1", 1, Action::RunHook(hook))).finish().await;
    assert_eq!(result.outcome, StepOutcome::Succeeded, "{result:?}");

    let records = history::read(&world.data()).expect("read");
    assert_eq!(entries_of(&records, "d1"), vec![started("deploy", "1.0.0", None), finished("succeeded", "1.0.0")]);
    assert_eq!(
        entries_of(&records, "h1"),
        vec![started("run_hook", "1.0.0", Some("migrate_down")), finished("succeeded", "1.0.0")]
    );
    let d1_start = records.iter().find(|r| r.command_id == "d1").expect("d1");
    assert_eq!((d1_start.format, d1_start.term, d1_start.release_id.as_str()), (HOST_HISTORY_FORMAT, 1, "r1"));
    assert!(records.windows(2).all(|w| w[0].at_unix_ms <= w[1].at_unix_ms), "in order: {records:?}");

    let again = executor.execute(d1).finish().await;
    assert!(again.replayed, "{again:?}");
    assert_eq!(history::read(&world.data()).expect("read"), records, "a repeat is not in the history");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_with_a_term_below_the_highest_seen_writes_refused() {
    let world = World::new();
    let executor = world.executor().await;
    assert_eq!(executor.execute(check("c5", 5)).finish().await.outcome, StepOutcome::Succeeded);
    assert_eq!(executor.execute(check("c3", 3)).finish().await.outcome, StepOutcome::Refused);

    let records = history::read(&world.data()).expect("read");
    assert_eq!(
        entries_of(&records, "c5"),
        vec![
            HostHistoryEntry::Started { action: "run_check".into(), service: None, version: None, hook: None },
            HostHistoryEntry::Finished { outcome: "succeeded".into(), version: None },
        ]
    );
    assert_eq!(entries_of(&records, "c3"), vec![HostHistoryEntry::Refused { highest_term: 5 }]);
    assert_eq!(records.iter().find(|r| r.command_id == "c3").map(|r| r.term), Some(3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn steps_of_one_service_never_overlap_in_the_history() {
    let world = World::new();
    let executor = world.executor().await;
    let v1 = world.package("1.0.0");
    let v2 = world.package("2.0.0");
    let mut d = world.deploy("d1", "1.0.0", &v1);
    d.hooks.before_install = "true".into();
    let mut first = executor.execute(deploy_step("d1", 1, d));
    until_phase(&mut first, StepPhase::RunningHook).await;
    // Queued behind d1 on web; the gate check has no service and runs at once.
    let second = executor.execute(deploy_step("d2", 1, world.deploy("d2", "2.0.0", &v2)));
    let third = executor.execute(step("s1", 1, Action::Stop(Stop { service: "web".into(), stop_timeout_ms: 0 })));
    let gate = executor.execute(check("g1", 1));
    for handle in [first, second, third, gate] {
        let result = tokio::time::timeout(Duration::from_secs(60), handle.finish()).await.expect("the step ends");
        assert!(result.is_success(), "{result:?}");
    }

    let records = history::read(&world.data()).expect("read");
    let web: Vec<&HostHistoryRecord> =
        records.iter().filter(|r| ["d1", "d2", "s1"].contains(&r.command_id.as_str())).collect();
    let mut open: Option<&str> = None;
    let mut order = Vec::new();
    for record in &web {
        match &record.entry {
            HostHistoryEntry::Started { .. } => {
                assert_eq!(open, None, "{} started while {open:?} was open: {web:?}", record.command_id);
                open = Some(&record.command_id);
                order.push(record.command_id.as_str());
            }
            HostHistoryEntry::Finished { .. } => {
                assert_eq!(open, Some(record.command_id.as_str()), "{web:?}");
                open = None;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(open, None);
    assert_eq!(order.len(), 3, "every step of web started once: {web:?}");
    assert_eq!(order[0], "d1", "d1 held web first");
    assert_eq!(entries_of(&records, "g1").len(), 2, "the gate check is in the history too");
}

fn record(id: &str) -> HostHistoryRecord {
    HostHistoryRecord {
        format: HOST_HISTORY_FORMAT,
        at_unix_ms: 1_700_000_000_000,
        command_id: id.to_owned(),
        term: 1,
        release_id: "r1".to_owned(),
        stage: String::new(),
        entry: HostHistoryEntry::Finished { outcome: "succeeded".to_owned(), version: Some("1.0.0".to_owned()) },
    }
}

fn ids(records: &[HostHistoryRecord]) -> Vec<String> {
    records.iter().map(|r| r.command_id.clone()).collect()
}

#[test]
fn the_reader_ignores_a_torn_last_line_and_the_next_append_cuts_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = HistoryLog::new(dir.path());
    log.append(&record("a")).expect("append");
    log.append(&record("b")).expect("append");
    // An append cut short by a crash: no trailing newline.
    let mut file = std::fs::OpenOptions::new().append(true).open(log.path()).expect("open");
    file.write_all(br#"{"format":1,"at_unix_ms":17000"#).expect("torn write");
    drop(file);
    assert_eq!(ids(&history::read(dir.path()).expect("read")), vec!["a", "b"]);

    log.append(&record("c")).expect("append after the crash");
    assert_eq!(ids(&history::read(dir.path()).expect("read")), vec!["a", "b", "c"]);
}

#[test]
fn the_reader_refuses_a_newer_format_or_a_broken_line_naming_its_file_and_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let good = serde_json::to_string(&record("a")).expect("json");
    let mut newer = serde_json::to_value(record("b")).expect("json");
    newer["format"] = (HOST_HISTORY_FORMAT + 1).into();
    let path = dir.path().join(HISTORY_FILE);
    std::fs::write(&path, format!("{good}\n{newer}\n{good}\n")).expect("write");
    let err = history::read(dir.path()).expect_err("a newer format");
    assert!(matches!(err, HistoryError::Format { line: 2, .. }), "{err:?}");
    let text = err.to_string();
    assert!(text.contains(&format!("{}:2", path.display())), "names the file and line: {text}");
    assert!(text.contains("upgrade the agent"), "{text}");

    std::fs::write(&path, format!("{good}\n{{\"format\":1,\"at_un\n{good}\n")).expect("write");
    let err = history::read(dir.path()).expect_err("a broken line in the middle");
    assert!(matches!(err, HistoryError::Parse { line: 2, .. }), "{err:?}");
    assert!(err.to_string().contains(&format!("{}:2", path.display())), "{err}");
}

#[test]
fn rotation_past_the_bound_keeps_both_files_readable_in_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bound = 1024;
    let log = HistoryLog::with_max_bytes(dir.path(), bound);
    let line_len = serde_json::to_string(&record("c00")).expect("json").len() as u64 + 1;
    let appended: Vec<String> = (0..40).map(|i| format!("c{i:02}")).collect();
    for id in &appended {
        log.append(&record(id)).expect("append");
    }
    let current = dir.path().join(HISTORY_FILE);
    let rotated = dir.path().join(ROTATED_FILE);
    for file in [&current, &rotated] {
        let len = std::fs::metadata(file).expect("both files exist").len();
        assert!(len <= bound && len + line_len > bound / 2, "{}: {len} bytes", file.display());
    }

    let read = ids(&history::read(dir.path()).expect("read"));
    let lines = |p: &std::path::Path| std::fs::read_to_string(p).expect("read").lines().count();
    assert_eq!(read.len(), lines(&rotated) + lines(&current));
    assert!(read.len() > lines(&current), "the rotated file is read too");
    assert_eq!(read, appended[appended.len() - read.len()..], "the newest lines, oldest first");
}
