//! `--output json` of every remote command as a user runs it (docs/json-output.md): the
//! real `flotilla` binary against a real `flotilla-coordinator` process, with fake
//! agents over `AgentLink` that do every step at once. Each command must print the API
//! message of the call it made, in the canonical protobuf JSON mapping: the output
//! parses back into that message with the serde implementations of `flotilla-proto`,
//! and the raw JSON has lowerCamelCase names, enum names and 64-bit integers as strings.

#[allow(dead_code)]
mod support;

use std::time::Instant;

use flotilla_proto::v1::{self, ReleaseState};
use support::{Coordinator, DEADLINE, flotilla, flotilla_json, obliging_agent, registration, stdout};

/// A release of `web` in two stages: `canary` (hosts with `cell = "canary"`, approved
/// before the next stage) and `main`.
const SPEC: &str = r#"
release = "json-shop"

[defaults]
canary = 0
batches = ["100%"]
bake = "0s"
progress_deadline = "60s"

[[stage]]
name = "canary"
hosts = { cell = "canary" }
approval = true

[[stage]]
name = "main"

[[service]]
name = "web"
version = "2.0.0"
hosts = { role = "web" }
artifact = { url = "file:///nonexistent/web-2.0.0.tar.gz", sha256 = "dcde0999384087862880355ce56cd8a03e60322bd8487739299042478242dfd4" }
run = { command = "bin/web" }
"#;

fn state_name(state: i32) -> &'static str {
    ReleaseState::try_from(state).unwrap_or(ReleaseState::Unspecified).as_str_name()
}

/// Polls `release show ID --output json` until the release is in `state`.
fn wait_state(addr: &str, id: &str, state: ReleaseState) -> v1::Release {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let shown: v1::GetResponse = flotilla_json(addr, &["release", "show", id]);
        let release = shown.release.expect("GetResponse.release");
        if release.state == state as i32 {
            return release;
        }
        assert!(
            Instant::now() < deadline,
            "release {id} is {} after {DEADLINE:?}, expected {}",
            state_name(release.state),
            state.as_str_name()
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

fn raw(addr: &str, args: &[&str]) -> serde_json::Value {
    flotilla_json(addr, args)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_release_command_prints_its_api_answer_as_canonical_json() {
    let coordinator = Coordinator::start();
    let addr = coordinator.addr.clone();
    obliging_agent(&addr, registration("web-1", &[("role", "web"), ("cell", "canary")])).await;
    obliging_agent(&addr, registration("web-2", &[("role", "web"), ("cell", "main")])).await;
    let dir = tempfile::tempdir().expect("a temp dir");
    let spec = dir.path().join("json-shop.toml");
    std::fs::write(&spec, SPEC).expect("the spec is written");
    let spec = spec.to_str().expect("a UTF-8 path");

    // release start → CreateResponse.
    let changed_at = ["--changed-at", "2026-01-02T03:04:05Z"];
    let start = [&["release", "start", spec, "--idempotency-key", "k-1"][..], &changed_at[..]].concat();
    let created: v1::CreateResponse = flotilla_json(&addr, &start);
    assert!(created.created);
    let release = created.release.expect("CreateResponse.release");
    let id = release.id.clone();
    assert!(!id.is_empty());
    assert_eq!((release.name.as_str(), release.idempotency_key.as_str()), ("json-shop", "k-1"));
    assert!(release.created_unix_ms > 0);
    assert_eq!(release.plan.as_ref().map(|p| p.release.as_str()), Some("json-shop"), "the plan it executes");
    // The same key again: the first release, `created` false, printed (not left out).
    let again = raw(&addr, &start);
    assert_eq!(again["created"], false, "{again}");
    assert_eq!(again["release"]["id"], id.as_str());
    assert_eq!(again["release"]["name"], "json-shop");
    assert_eq!(again["release"]["idempotencyKey"], "k-1");
    assert_eq!(again["release"]["createdUnixMs"], release.created_unix_ms.to_string(), "int64 as a string");
    assert!(again["release"].get("created_unix_ms").is_none(), "lowerCamelCase names only: {again}");

    // The canary stage is done on web-1 and waits for its approval.
    let waiting = wait_state(&addr, &id, ReleaseState::AwaitingApproval);
    assert_eq!(waiting.stages[0].services[0].hosts_done, 1);

    // release show → GetResponse, as JSON: enum names, int64 as strings, every field.
    let shown = raw(&addr, &["release", "show", &id]);
    let r = &shown["release"];
    assert_eq!(r["state"], "RELEASE_STATE_AWAITING_APPROVAL", "{shown}");
    assert_eq!(r["pendingApprovals"][0]["kind"], "APPROVAL_KIND_STAGE");
    assert_eq!(r["pendingApprovals"][0]["name"], "canary");
    assert_eq!(r["stages"][0]["name"], "canary");
    assert_eq!(r["stages"][0]["state"], "STAGE_STATE_AWAITING_APPROVAL");
    assert_eq!(r["stages"][0]["services"][0]["service"], "web");
    assert_eq!(r["stages"][0]["services"][0]["state"], "SERVICE_STATE_DONE");
    assert_eq!(r["stages"][0]["services"][0]["hostsDone"], 1, "uint32 is a number");
    assert_eq!(r["stages"][1]["name"], "main");
    assert_eq!(r["stages"][1]["state"], "STAGE_STATE_PENDING");
    assert_eq!(r["stages"][1]["services"], serde_json::json!([]), "empty lists are printed");
    assert_eq!(r["finishedUnixMs"], "0", "fields at their default value are printed");
    let web = &r["stages"][0]["services"][0];
    assert_eq!((&web["reason"], &web["hostsFailed"]), (&"".into(), &0.into()), "default values are printed: {shown}");
    assert_eq!(r["plan"]["format"], 2);
    assert!(r["lastEventIndex"].as_str().and_then(|i| i.parse::<u64>().ok()).is_some_and(|i| i > 1), "{shown}");

    // release list → ListResponse.
    let listed: v1::ListResponse = flotilla_json(&addr, &["release", "list"]);
    let summary = listed.releases.iter().find(|s| s.id == id).expect("the release is listed");
    assert_eq!((summary.state, summary.services_total), (ReleaseState::AwaitingApproval as i32, 1));
    assert_eq!(raw(&addr, &["release", "list"])["nextPageToken"], "");

    // release pause / resume → PauseResponse / ResumeResponse.
    let paused: v1::PauseResponse = flotilla_json(&addr, &["release", "pause", &id, "--reason", "lunch"]);
    let paused = paused.release.expect("PauseResponse.release");
    assert_eq!((state_name(paused.state), paused.id.as_str()), ("RELEASE_STATE_PAUSED", id.as_str()));
    let resumed = raw(&addr, &["release", "resume", &id, "--reason", "back"]);
    assert_eq!(resumed["release"]["state"], "RELEASE_STATE_AWAITING_APPROVAL", "{resumed}");

    // release approve → ApproveResponse; then the main stage runs on web-2.
    let approved: v1::ApproveResponse = flotilla_json(&addr, &["release", "approve", &id, "--comment", "looks good"]);
    let approved = approved.release.expect("ApproveResponse.release");
    assert!(approved.pending_approvals.is_empty());
    assert_ne!(approved.state, ReleaseState::AwaitingApproval as i32);
    let done = wait_state(&addr, &id, ReleaseState::Succeeded);
    assert!(done.finished_unix_ms > 0);
    assert!(done.spec_toml.starts_with("changed_at = 2026-01-02T03:04:05Z\n"), "{}", done.spec_toml);

    // stats → StatsResponse: one deployment of web, its lead time from the change's time.
    let stats: v1::StatsResponse = flotilla_json(&addr, &["stats", "--since", "3650d"]);
    let all = stats.overall.expect("StatsResponse.overall");
    assert_eq!((all.changes, all.failed, all.lead_times_from_change), (1, 0, 1), "{all:?}");
    let changed = 1_767_323_045_000; // 2026-01-02T03:04:05Z
    assert!(all.lead_time_median_ms.is_some_and(|ms| ms >= done.finished_unix_ms - changed - 1_000), "{all:?}");
    assert_eq!(stats.services.iter().map(|s| s.service.as_str()).collect::<Vec<_>>(), ["web"]);
    let out = flotilla(&addr, &["stats", "--service", "web"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = stdout(&out);
    assert!(text.starts_with("delivery over the last 30days\n"), "{text}");
    assert!(text.lines().any(|l| l.starts_with("web ") && l.ends_with("change")), "{text}");

    // release note → AnnotateResponse (empty); a note is taken after the release ended,
    // and a note that is too long is refused with what is wrong.
    assert_eq!(
        raw(&addr, &["release", "note", &id, "p99", "steady", "after", "the", "rollout"]),
        serde_json::json!({})
    );
    let out = flotilla(&addr, &["release", "note", &id, "second look: fine"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(stdout(&out), format!("note added to release {id}\n"));
    let long = "x".repeat(1025);
    let out = flotilla(&addr, &["release", "note", &id, &long]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("1025 bytes") && err.contains("1024"), "{err}");

    // release watch → one ReleaseEvent per line (JSON Lines), the whole history of an
    // ended release, and exit 0 because it succeeded.
    let out = flotilla(&addr, &["release", "watch", &id, "--output", "json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = stdout(&out);
    let events: Vec<v1::ReleaseEvent> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: not a ReleaseEvent line: {l}")))
        .collect();
    assert_eq!(
        events.iter().map(|e| e.index).collect::<Vec<_>>(),
        (1..=u64::try_from(events.len()).unwrap()).collect::<Vec<_>>(),
        "every event once, in order:\n{text}"
    );
    assert!(events.iter().all(|e| e.release_id == id));
    assert_eq!(events[0].kind, v1::EventKind::ReleaseCreated as i32);
    let notes: Vec<&v1::ReleaseEvent> = events.iter().filter(|e| e.kind == v1::EventKind::Note as i32).collect();
    assert_eq!(
        notes.iter().map(|e| e.message.as_str()).collect::<Vec<_>>(),
        ["p99 steady after the rollout", "second look: fine"],
        "{text}"
    );
    assert!(notes.iter().all(|e| !e.actor.is_empty() && e.release_state == ReleaseState::Succeeded as i32));
    let last = events.iter().rev().find(|e| e.kind != v1::EventKind::Note as i32).expect("events");
    assert_eq!(
        (last.kind, last.release_state),
        (v1::EventKind::ReleaseSucceeded as i32, ReleaseState::Succeeded as i32)
    );
    let approval = events.iter().find(|e| e.kind == v1::EventKind::Approved as i32).expect("the approval event");
    assert!(approval.message.contains("looks good"), "{}", approval.message);
    let first: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    assert_eq!(first["kind"], "EVENT_KIND_RELEASE_CREATED");
    assert_eq!(first["index"], "1");
    assert_eq!(first["releaseId"], id.as_str());

    // release start --watch → the new release's events, one ReleaseEvent per line, until
    // it ends (a spec without the approval runs through; web-2 is already at 2.0.0).
    let unattended = std::path::Path::new(spec).with_file_name("unattended.toml");
    std::fs::write(&unattended, SPEC.replace("approval = true", "approval = false")).expect("the spec is written");
    let unattended = unattended.to_str().expect("a UTF-8 path");
    let out = flotilla(&addr, &["release", "start", unattended, "--watch", "--output", "json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = stdout(&out);
    let watched: Vec<v1::ReleaseEvent> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: not a ReleaseEvent line: {l}")))
        .collect();
    assert_eq!(watched.first().map(|e| (e.index, e.kind)), Some((1, v1::EventKind::ReleaseCreated as i32)), "{text}");
    assert!(watched.iter().all(|e| e.release_id == watched[0].release_id && e.release_id != id), "{text}");
    assert_eq!(watched.last().map(|e| e.kind), Some(v1::EventKind::ReleaseSucceeded as i32), "{text}");

    // release rollback → RollbackResponse: the rollback set and the release.
    let rolled: v1::RollbackResponse = flotilla_json(&addr, &["release", "rollback", &id, "--reason", "oops"]);
    assert_eq!(rolled.services, ["web"]);
    let rolled = rolled.release.expect("RollbackResponse.release");
    assert!(
        matches!(ReleaseState::try_from(rolled.state), Ok(ReleaseState::RollingBack | ReleaseState::RolledBack)),
        "{}",
        state_name(rolled.state)
    );

    // release abort → AbortResponse, on a second release, once the first has rolled
    // back (releases of a service to a host never overlap).
    wait_state(&addr, &id, ReleaseState::RolledBack);
    let second: v1::CreateResponse = flotilla_json(&addr, &["release", "start", spec]);
    let second = second.release.expect("CreateResponse.release").id;
    assert_ne!(second, id);
    let aborted = raw(&addr, &["release", "abort", &second, "--reason", "wrong day"]);
    assert_eq!(aborted["release"]["id"], second.as_str());
    assert_eq!(aborted["release"]["state"], "RELEASE_STATE_ABORTED", "{aborted}");
    assert_ne!(aborted["release"]["finishedUnixMs"], "0");

    // The rollback made the first release a failed change, not restored since (it
    // ended after the unattended release deployed web); the aborted release is not a
    // change.
    let stats = raw(&addr, &["stats"]);
    assert_eq!(stats["overall"]["changes"], 2, "{stats}");
    assert_eq!(stats["overall"]["failed"], 1, "{stats}");
    assert_eq!(stats["overall"]["changeFailureRate"], 0.5, "{stats}");
    assert_eq!(stats["overall"]["unrestored"], 1, "{stats}");
    assert_eq!(stats["overall"]["leadTimesFromCreation"], 1, "the unattended release had no changed_at: {stats}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_commands_print_their_api_answer_as_canonical_json() {
    let coordinator = Coordinator::start();
    let addr = coordinator.addr.clone();

    // cluster status → StatusResponse (once node 1 leads).
    let deadline = Instant::now() + DEADLINE;
    let status = loop {
        let out = flotilla(&addr, &["cluster", "status", "--output", "json"]);
        if out.status.success() {
            let resp: v1::StatusResponse = serde_json::from_slice(&out.stdout).expect("a StatusResponse");
            let status = resp.status.expect("StatusResponse.status");
            if status.leader_id == 1 {
                break status;
            }
        }
        assert!(Instant::now() < deadline, "no leader: {}", String::from_utf8_lossy(&out.stderr));
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    assert_eq!((status.node_id, status.leader_addr.as_str(), status.members.len()), (1, addr.as_str(), 1));
    assert!(status.term >= 1);
    let doc = raw(&addr, &["cluster", "status"]);
    let member = &doc["status"]["members"][0];
    assert_eq!(doc["status"]["leaderId"], "1", "uint64 is a string: {doc}");
    assert_eq!(member["nodeId"], "1");
    assert_eq!(member["addr"], addr.as_str());
    assert_eq!(member["role"], "MEMBER_ROLE_VOTER");
    assert_eq!(member["state"], "RAFT_STATE_LEADER");
    assert_eq!(doc["status"]["membershipChanging"], false);

    // cluster add → AddNodeResponse; cluster remove → RemoveNodeResponse.
    let joiner = Coordinator::joiner(2);
    let added = raw(&addr, &["cluster", "add", &format!("2={}", joiner.addr), "--learner"]);
    let members = added["status"]["members"].as_array().expect("members");
    let two = members.iter().find(|m| m["nodeId"] == "2").unwrap_or_else(|| panic!("node 2 is a member: {added}"));
    assert_eq!(two["role"], "MEMBER_ROLE_LEARNER");
    assert_eq!(two["addr"], joiner.addr.as_str());
    let removed: v1::RemoveNodeResponse = flotilla_json(&addr, &["cluster", "remove", "2"]);
    let removed = removed.status.expect("RemoveNodeResponse.status");
    assert_eq!((removed.node_id, removed.leader_id), (1, 1));
    let ids: Vec<u64> = removed.members.iter().map(|m| m.node_id).collect();
    assert_eq!(ids, [1], "the answer is the membership after the removal");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_release_and_a_reused_key_exit_with_their_codes_and_say_why() {
    let coordinator = Coordinator::start();
    let addr = coordinator.addr.clone();
    obliging_agent(&addr, registration("web-1", &[("role", "web"), ("cell", "canary")])).await;

    // Watching a release nobody has: exit 1 (an operational error, not bad usage), at
    // once, naming the id.
    let started = Instant::now();
    let out = flotilla(&addr, &["release", "watch", "r-does-not-exist"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("no release r-does-not-exist"), "{stderr}");
    assert!(started.elapsed() < std::time::Duration::from_secs(3), "took {:?}", started.elapsed());

    // A key used before for another spec: exit 2 (bad usage), naming the release.
    let dir = tempfile::tempdir().expect("a temp dir");
    let (one, two) = (dir.path().join("one.toml"), dir.path().join("two.toml"));
    std::fs::write(&one, SPEC).expect("the spec is written");
    std::fs::write(&two, SPEC.replace("approval = true", "approval = false")).expect("the spec is written");
    let first: v1::CreateResponse =
        flotilla_json(&addr, &["release", "start", one.to_str().unwrap(), "--idempotency-key", "k-9"]);
    let id = first.release.expect("CreateResponse.release").id;
    let out = flotilla(&addr, &["release", "start", two.to_str().unwrap(), "--idempotency-key", "k-9"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains(&format!("already used for release {id}")), "{stderr}");
}
