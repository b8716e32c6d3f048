//! `flotilla demo`, the README's main command, run as a user runs it: three
//! coordinators, agents and the sample app in one process; a release that succeeds,
//! and one with a broken service that rolls back with its dependents, dependents
//! first.

use std::process::Command;

fn demo(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_flotilla")).arg("demo").args(args).output().expect("flotilla demo runs");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.code().unwrap_or(-1), text)
}

fn position(text: &str, needle: &str) -> usize {
    text.find(needle).unwrap_or_else(|| panic!("`{needle}` not in the demo's output:\n{text}"))
}

#[test]
fn the_demo_releases_the_sample_app_through_both_stages() {
    let (code, out) = demo(&["--agents", "6"]);
    assert_eq!(code, 0, "{out}");
    position(&out, "release shop-v1");
    // Dependency order inside a stage, the migration first, the gate before web.
    let migrated = position(&out, "[canary] db: migrate hook succeeded");
    let db_done = position(&out, "[canary] db 2.0.0 done in stage canary");
    let ledger_started = position(&out, "[canary] ledger 2.0.0 started in stage canary");
    let gate = position(&out, "[canary] gate smoke passed in stage canary");
    let web_started = position(&out, "[canary] web 2.0.0 started in stage canary");
    assert!(migrated < db_done && db_done < ledger_started && gate < web_started, "{out}");
    let main_started = position(&out, "[main] stage main started");
    assert!(position(&out, "[canary] stage canary done") < main_started);
    position(&out, "release succeeded: 6 services in 2 stages");
}

#[test]
fn a_broken_service_rolls_back_with_its_dependents_dependents_first() {
    let (code, out) = demo(&["--agents", "6", "--fail", "ledger"]);
    assert_eq!(code, 0, "{out}");
    let decided = position(&out, "rolling back web, payments, ledger");
    let web = position(&out, "web is back at 1.0.0");
    let payments = position(&out, "payments is back at 1.0.0");
    let ledger = position(&out, "ledger is back at 1.0.0");
    assert!(decided < web && web < payments && payments < ledger, "{out}");
    position(&out, "the broken ledger was caught and rolled back");
    assert!(!out.contains("db is back"), "db does not depend on ledger and stays: {out}");
}
