//! `flotilla agents` as a user runs it: the real binary against a real single-node
//! `flotilla-coordinator` process, with a fake agent registered over `AgentLink`.

#[allow(dead_code)]
mod support;

use std::process::Output;
use std::time::{Duration, Instant};

use flotilla_proto::v1;
use flotilla_proto::v1::coordinator_message::Msg;
use support::{Coordinator, free_port, register_agent, registration, stdout};

const DEADLINE: Duration = Duration::from_secs(20);

fn flotilla(addr: &str, args: &[&str]) -> Output {
    support::flotilla(addr, &[&["agents"], args].concat())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_lists_registered_hosts_as_a_table_and_json_and_filters_by_label() {
    let mut coordinator = Coordinator::start();
    let addr = coordinator.addr.clone();
    let mut session = register_agent(&addr, registration("web-1", &[("role", "web")])).await;

    let out = flotilla(&addr, &[]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].starts_with("HOST") && lines[0].contains("SERVICES"), "{text}");
    for needle in ["web-1", "online", "0.1.0", "role=web", "web 1.4.0"] {
        assert!(lines[1].contains(needle), "missing {needle:?} in:\n{text}");
    }

    let out = flotilla(&addr, &["--label", "role=db", "--all"]);
    assert!(out.status.success());
    assert_eq!(stdout(&out), "no hosts match the labels\n");

    // `-o json` prints the `ListAgentsResponse` in the canonical protobuf JSON mapping.
    let out = flotilla(&addr, &["--label", "role=web", "-o", "json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).expect("valid JSON");
    let host = &doc["hosts"][0];
    assert_eq!(host["hostId"], "web-1");
    assert_eq!(host["state"], "HOST_STATE_ONLINE");
    assert_eq!(host["connectedNodeId"], "1", "uint64 is a string");
    assert_eq!(host["labels"], serde_json::json!({"role": "web"}));
    assert_eq!(host["services"][0]["state"], "SERVICE_RUN_STATE_RUNNING");
    let listed: v1::ListAgentsResponse = serde_json::from_slice(&out.stdout).expect("a ListAgentsResponse");
    assert_eq!(listed.hosts.len(), 1);
    assert_eq!(listed.hosts[0].host_id, "web-1");
    assert_eq!(listed.hosts[0].state, v1::HostState::Online as i32);
    assert_eq!(listed.hosts[0].services[0].version, "1.4.0");
    assert!(listed.hosts[0].registered_unix_ms > 0);

    // SIGTERM with an agent connected: the agent is sent away and the process stops.
    coordinator.terminate();
    let hint = tokio::time::timeout(DEADLINE, session.message()).await.expect("an answer before the deadline");
    assert!(
        matches!(hint, Ok(Some(v1::CoordinatorMessage { msg: Some(Msg::LeaderHint(_)) }))),
        "expected a LeaderHint, got {hint:?}"
    );
    let deadline = Instant::now() + DEADLINE;
    let status = loop {
        if let Some(status) = coordinator.child.try_wait().expect("wait works") {
            break status;
        }
        assert!(Instant::now() < deadline, "the coordinator did not stop after SIGTERM");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(status.success(), "{status:?}");
}

#[test]
fn agents_exit_codes_tell_bad_usage_from_an_unreachable_cluster() {
    let bad_label = flotilla("127.0.0.1:7600", &["--label", "role"]);
    assert_eq!(bad_label.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad_label.stderr).contains("expected KEY=VALUE"));

    let unreachable = flotilla(&format!("127.0.0.1:{}", free_port()), &[]);
    assert_eq!(unreachable.status.code(), Some(1), "{}", String::from_utf8_lossy(&unreachable.stderr));
    assert!(String::from_utf8_lossy(&unreachable.stderr).starts_with("error: "));
}
