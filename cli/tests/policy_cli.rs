//! Deployment windows as a user drives them: the real `flotilla` binary against a real
//! `flotilla-coordinator` process, with agents over `AgentLink` that do every step at
//! once. A release started in a freeze sends nothing, says why and until when, and
//! goes on by itself when the freeze ends; a rollback inside a freeze does not wait.

#[allow(dead_code)]
mod support;

use std::time::{Duration, Instant};

use flotilla_proto::v1::{self, EventKind, ReleaseState};
use flotilla_shared::window::format_instant;
use support::{Coordinator, DEADLINE, flotilla, flotilla_json, obliging_agent, registration, stdout};

const SPEC: &str = r#"
release = "frozen-shop"

[defaults]
canary = 1
batches = ["100%"]
bake = "0s"
progress_deadline = "60s"

[[service]]
name = "web"
version = "2.0.0"
hosts = { role = "web" }
artifact = { url = "file:///nonexistent/web-2.0.0.tar.gz", sha256 = "dcde0999384087862880355ce56cd8a03e60322bd8487739299042478242dfd4" }
run = { command = "bin/web" }
"#;

/// How long the freeze of the test lasts: long enough to see the release held.
const FREEZE: Duration = Duration::from_secs(8);

fn show(addr: &str, id: &str) -> v1::Release {
    let shown: v1::GetResponse = flotilla_json(addr, &["release", "show", id]);
    shown.release.expect("GetResponse.release")
}

/// Polls `release show` until `done` holds for the release.
fn wait_for(addr: &str, id: &str, what: &str, done: impl Fn(&v1::Release) -> bool) -> v1::Release {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let r = show(addr, id);
        if done(&r) {
            return r;
        }
        assert!(Instant::now() < deadline, "release {id}: not {what} after {DEADLINE:?}: {r:#?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Every event of a finished release (`release watch --output json` ends with it, and
/// exits 3 when the release did not succeed).
fn events(addr: &str, id: &str) -> Vec<v1::ReleaseEvent> {
    let out = flotilla(addr, &["release", "watch", id, "--output", "json"]);
    assert!(matches!(out.status.code(), Some(0 | 3)), "release watch: {}", String::from_utf8_lossy(&out.stderr));
    stdout(&out).lines().map(|l| serde_json::from_str(l).expect("an event per line")).collect()
}

fn kind(e: &v1::ReleaseEvent) -> EventKind {
    EventKind::try_from(e.kind).unwrap_or(EventKind::Unspecified)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_started_in_a_freeze_waits_says_why_and_starts_when_it_ends_and_a_rollback_does_not_wait() {
    let coordinator = Coordinator::start();
    let addr = coordinator.addr.clone();
    obliging_agent(&addr, registration("web-1", &[("role", "web")])).await;
    obliging_agent(&addr, registration("web-2", &[("role", "web")])).await;
    let dir = tempfile::tempdir().expect("a temp dir");
    let spec = dir.path().join("frozen-shop.toml");
    std::fs::write(&spec, SPEC).expect("the spec is written");
    let spec = spec.to_str().expect("a UTF-8 path");

    // No windows yet; then a freeze from now.
    assert!(stdout(&flotilla(&addr, &["policy", "window", "list"])).contains("no deployment windows"));
    let until = format!("{}s", FREEZE.as_secs());
    let out =
        flotilla(&addr, &["policy", "window", "set", "year-end", "--deny", "--until", &until, "--reason", "peak"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout(&out).starts_with("window year-end set: deny "), "{}", stdout(&out));
    let listed: v1::ListWindowsResponse = flotilla_json(&addr, &["policy", "window", "list"]);
    let [freeze] = listed.windows.as_slice() else { panic!("one window: {listed:?}") };
    assert!(freeze.in_effect, "{freeze:?}");
    let end = freeze.once.as_ref().expect("a one-off window").until_unix_ms;
    assert_eq!(freeze.next_change_unix_ms, end);
    assert_eq!(freeze.reason, "peak");

    // The release is held at its first batch: nothing is sent, and it says why.
    let created: v1::CreateResponse = flotilla_json(&addr, &["release", "start", spec]);
    let id = created.release.expect("CreateResponse.release").id;
    let held = wait_for(&addr, &id, "held", |r| {
        r.stages.first().and_then(|s| s.services.first()).is_some_and(|s| !s.reason.is_empty())
    });
    let web = &held.stages[0].services[0];
    let expected = format!("held by freeze year-end (every service): peak; goes on at {}", format_instant(end));
    assert_eq!(web.reason, expected);
    assert_eq!((web.hosts_done, web.hosts_failed), (0, 0));
    assert_eq!(held.state, ReleaseState::Running as i32);
    let text = stdout(&flotilla(&addr, &["release", "show", &id]));
    assert!(text.contains(&expected), "release show says why and until when:\n{text}");

    // It goes on by itself when the freeze ends, and nothing went out before.
    let done = wait_for(&addr, &id, "succeeded", |r| r.state == ReleaseState::Succeeded as i32);
    assert!(done.stages[0].services[0].reason.is_empty(), "{done:#?}");
    let history = events(&addr, &id);
    let held_events: Vec<&v1::ReleaseEvent> = history.iter().filter(|e| kind(e) == EventKind::WindowHeld).collect();
    assert_eq!(held_events.len(), 1, "held once: {held_events:#?}");
    assert!(held_events[0].message.starts_with("web batch canary in stage all waits: held by freeze year-end"));
    let first_batch = history.iter().find(|e| kind(e) == EventKind::BatchStarted).expect("a batch started");
    assert!(first_batch.at_unix_ms >= end, "the first batch went out at {} before the freeze ended at {end}", {
        first_batch.at_unix_ms
    });

    // A new freeze, for an hour: a rollback of the release does not wait for it.
    let out = flotilla(&addr, &["policy", "window", "set", "incident", "--deny", "--until", "1h"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = flotilla(&addr, &["release", "rollback", &id, "--reason", "bad numbers"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    wait_for(&addr, &id, "rolled back", |r| r.state == ReleaseState::RolledBack as i32);
    let history = events(&addr, &id);
    assert_eq!(history.iter().filter(|e| kind(e) == EventKind::WindowHeld).count(), 1, "the rollback never waited");
    assert!(history.iter().any(|e| kind(e) == EventKind::ServiceRolledBack), "web was rolled back");

    // Windows are removed by name; an unknown one is refused and says so.
    let out = flotilla(&addr, &["policy", "window", "remove", "incident"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = flotilla(&addr, &["policy", "window", "remove", "incident"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("there is no window incident"), "{err}");
    let listed: v1::ListWindowsResponse = flotilla_json(&addr, &["policy", "window", "list"]);
    let names: Vec<&str> = listed.windows.iter().map(|w| w.name.as_str()).collect();
    assert_eq!(names, ["year-end"]);
    assert!(!listed.windows[0].in_effect, "the freeze is over");

    // A window that does not parse is refused before any call, with exit code 2.
    let out = flotilla(
        &addr,
        &["policy", "window", "set", "office", "--allow", "--days", "mon-fri", "--start", "09:00", "--end", "17:00"],
    );
    assert_eq!(out.status.code(), Some(2), "--tz is required with --days");
    let out = flotilla(
        &addr,
        &[
            "policy", "window", "set", "office", "--allow", "--days", "mon-fry", "--start", "9:00", "--end", "17:00",
            "--tz", "UTC",
        ],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("`fry` is not a day"));
    // A weekly one is stored as its days, times and zone.
    let set: v1::SetWindowResponse = flotilla_json(
        &addr,
        &[
            "policy",
            "window",
            "set",
            "office",
            "--allow",
            "--days",
            "mon-fri",
            "--start",
            "09:00",
            "--end",
            "17:30",
            "--tz",
            "Europe/Berlin",
            "--service",
            "web",
            "--hosts",
            "role=web",
        ],
    );
    let w = set.window.expect("SetWindowResponse.window");
    let weekly = w.weekly.expect("a weekly window");
    assert_eq!(
        (weekly.days.as_str(), weekly.start.as_str(), weekly.end.as_str(), weekly.time_zone.as_str()),
        ("mon,tue,wed,thu,fri", "09:00", "17:30", "Europe/Berlin")
    );
    assert_eq!(w.services, ["web"]);
    assert_eq!(w.host_labels.get("role").map(String::as_str), Some("web"));
    assert!(w.next_change_unix_ms > 0);

    // The freeze of docs/operations.md, as written there, replaces the one of that name.
    let out = flotilla(
        &addr,
        &[
            "policy",
            "window",
            "set",
            "year-end",
            "--deny",
            "--from",
            "2026-12-24T00:00:00Z",
            "--until",
            "2027-01-04T00:00:00Z",
            "--reason",
            "peak traffic",
        ],
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let listed: v1::ListWindowsResponse = flotilla_json(&addr, &["policy", "window", "list"]);
    let year_end = listed.windows.iter().find(|w| w.name == "year-end").expect("year-end is listed");
    let once = year_end.once.as_ref().expect("a one-off window");
    assert_eq!(
        (format_instant(once.from_unix_ms), format_instant(once.until_unix_ms), year_end.reason.as_str()),
        ("2026-12-24T00:00:00Z".to_owned(), "2027-01-04T00:00:00Z".to_owned(), "peak traffic")
    );
    let text = stdout(&flotilla(&addr, &["policy", "window", "list"]));
    assert!(text.contains("2026-12-24T00:00:00Z to 2027-01-04T00:00:00Z") && text.contains("office"), "{text}");
    let out = flotilla(&addr, &["policy", "window", "remove", "year-end"]);
    assert_eq!(stdout(&out), "window year-end removed\n");
    let listed: v1::ListWindowsResponse = flotilla_json(&addr, &["policy", "window", "list"]);
    assert_eq!(listed.windows.iter().map(|w| w.name.as_str()).collect::<Vec<_>>(), ["office"]);
}
