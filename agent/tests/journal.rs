//! The step journal across agent versions and cancels, with the real executor: a
//! record written in format 1 (before tombstones existed) still loads and replays its
//! result; a cancel of a step never received journals a tombstone that answers the step
//! for good, across restarts; a cancel of a finished step, or from a leader older than
//! the highest term seen, changes nothing.

mod support;

use flotilla_agent::executor::Cancellation;
use flotilla_agent::step::{Action, RunCheck, Step, StepOutcome};
use flotilla_shared::history::HostHistoryEntry;
use support::{World, count_lines, step};

fn check(id: &str, term: u64, command: String) -> Step {
    step(id, term, Action::RunCheck(RunCheck { gate: "g".into(), command, env: Default::default(), timeout_ms: 0 }))
}

/// A finished, unacknowledged record exactly as agents writing journal format 1 wrote
/// it (`COUNTER` is replaced by a path).
const FORMAT_1_RECORD: &str = r#"{
  "format": 1,
  "command_id": "old-1",
  "step": {
    "command_id": "old-1",
    "term": 3,
    "release_id": "r0",
    "stage": "",
    "action": {
      "run_check": {
        "gate": "g",
        "command": "echo run >> COUNTER",
        "env": {},
        "timeout_ms": 0
      }
    }
  },
  "state": "done",
  "phase": "running_check",
  "detail": "gate g",
  "prior": null,
  "started_unix_ms": 1700000000000,
  "updated_unix_ms": 1700000000500,
  "result": {
    "command_id": "old-1",
    "term": 3,
    "outcome": "succeeded",
    "failure": null,
    "reason": "",
    "health": [],
    "service": null,
    "exit_code": 0,
    "output_tail": "",
    "started_unix_ms": 1700000000000,
    "finished_unix_ms": 1700000000500,
    "replayed": false
  },
  "acked": false
}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_format_1_record_still_loads_and_replays_its_result() {
    let world = World::new();
    let counter = world.dir.path().join("old.count");
    let journal = world.data().join("journal");
    std::fs::create_dir_all(&journal).expect("mkdir");
    let text = FORMAT_1_RECORD.replace("COUNTER", &counter.display().to_string());
    std::fs::write(journal.join("c-old-1.json"), &text).expect("write the record");
    std::fs::write(journal.join("term.json"), r#"{"format":1,"highest_term":3}"#).expect("write the term");
    let old: serde_json::Value = serde_json::from_str(&text).expect("json");
    let old_step: Step = serde_json::from_value(old["step"].clone()).expect("the step");

    let executor = world.executor().await;
    assert_eq!(executor.highest_term(), 3);
    let unacked = executor.unacked_results().expect("list");
    assert_eq!(unacked.iter().map(|r| r.command_id.as_str()).collect::<Vec<_>>(), vec!["old-1"]);
    let replay = executor.execute(old_step.clone()).finish().await;
    assert!(replay.replayed, "answered from the journal: {replay:?}");
    assert_eq!((replay.outcome, replay.finished_unix_ms), (StepOutcome::Succeeded, 1_700_000_000_500));
    assert_eq!(count_lines(&counter), 0, "not executed again");

    // Rewritten by this agent (acknowledged), it still loads.
    assert!(executor.mark_acked("old-1").expect("ack"));
    drop(executor);
    let executor = world.executor().await;
    assert!(executor.unacked_results().expect("list").is_empty());
    let replay = executor.execute(old_step).finish().await;
    assert!(replay.replayed && replay.outcome == StepOutcome::Succeeded, "{replay:?}");
    assert_eq!(count_lines(&counter), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_of_a_step_not_received_journals_a_tombstone_that_answers_it_for_good() {
    let world = World::new();
    let counter = world.dir.path().join("c1.count");
    let c1 = check("c1", 1, format!("echo run >> {}", counter.display()));
    let executor = world.executor().await;

    let Cancellation::Tombstoned(tombstone) = executor.cancel_step("c1", 2, "rollback of r1").expect("cancel") else {
        panic!("a tombstone for a step not received")
    };
    assert_eq!((tombstone.command_id.as_str(), tombstone.term), ("c1", 2));
    assert_eq!((tombstone.outcome, tombstone.failure, tombstone.replayed), (StepOutcome::Cancelled, None, false));
    assert_eq!(tombstone.reason, "cancelled before it was received: rollback of r1");
    assert!(executor.is_journaled("c1"));
    assert_eq!(executor.cancel_step("c1", 2, "again").expect("cancel"), Cancellation::Finished);

    let replay = executor.execute(c1.clone()).finish().await;
    assert!(replay.replayed, "{replay:?}");
    assert_eq!((replay.outcome, replay.reason.as_str()), (StepOutcome::Cancelled, tombstone.reason.as_str()));
    assert_eq!(count_lines(&counter), 0, "never executed");

    drop(executor);
    let executor = world.executor().await;
    assert_eq!(executor.unacked_results().expect("list"), vec![(*tombstone).clone()], "reported until acknowledged");
    let replay = executor.execute(c1).finish().await;
    assert!(replay.replayed && replay.outcome == StepOutcome::Cancelled, "{replay:?}");
    assert_eq!(count_lines(&counter), 0, "never executed, after a restart too");

    // A finished step keeps its result.
    let c2 = check("c2", 2, "true".into());
    assert_eq!(executor.execute(c2.clone()).finish().await.outcome, StepOutcome::Succeeded);
    assert_eq!(executor.cancel_step("c2", 2, "too late").expect("cancel"), Cancellation::Finished);
    let again = executor.execute(c2).finish().await;
    assert!(again.replayed && again.outcome == StepOutcome::Succeeded, "{again:?}");

    // A cancel from a leader older than the highest term seen (2) leaves nothing.
    assert_eq!(executor.cancel_step("c3", 1, "stale").expect("cancel"), Cancellation::Refused { highest_term: 2 });
    assert!(!executor.is_journaled("c3"));
    let c3 = executor.execute(check("c3", 2, "true".into())).finish().await;
    assert!(!c3.replayed && c3.outcome == StepOutcome::Succeeded, "{c3:?}");

    let history = flotilla_agent::history::read(&world.data()).expect("history");
    let c1_lines: Vec<_> = history.iter().filter(|r| r.command_id == "c1").collect();
    assert_eq!(c1_lines.len(), 1, "{history:?}");
    assert_eq!(c1_lines[0].term, 2);
    assert_eq!(c1_lines[0].entry, HostHistoryEntry::CancelledUnreceived { reason: "rollback of r1".into() });
    let c3_events: Vec<_> = history.iter().filter(|r| r.command_id == "c3").map(|r| &r.entry).collect();
    assert!(matches!(c3_events.as_slice(), [HostHistoryEntry::Started { .. }, HostHistoryEntry::Finished { .. }]));
}
