//! `flotilla agents` as a user runs it: the real binary against a real single-node
//! `flotilla-coordinator` process, with a fake agent registered over `AgentLink`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use flotilla_net::{ClientSecurity, channel};
use flotilla_proto::v1::agent_link_client::AgentLinkClient;
use flotilla_proto::v1::coordinator_message::Msg;
use flotilla_proto::v1::{self, agent_message};
use tonic::codegen::tokio_stream::{self, StreamExt as _};

const DEADLINE: Duration = Duration::from_secs(20);

/// The coordinator binary, built first (cargo does nothing when it is up to date).
fn coordinator_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("the test knows its path");
    let profile_dir = exe.parent().and_then(Path::parent).expect("target/<profile>").to_path_buf();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let mut build = Command::new(cargo);
    build.args(["build", "--quiet", "-p", "flotilla-coordinator", "--bin", "flotilla-coordinator"]);
    if profile_dir.ends_with("release") {
        build.arg("--release");
    }
    assert!(build.status().expect("cargo runs").success(), "building flotilla-coordinator failed");
    profile_dir.join("flotilla-coordinator")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free port")
}

/// A coordinator process and its data directory, removed on drop.
struct Coordinator {
    child: Child,
    addr: String,
    dir: PathBuf,
}

impl Coordinator {
    fn start() -> Self {
        let addr = format!("127.0.0.1:{}", free_port());
        let dir = std::env::temp_dir().join(format!("flotilla-agents-cli-{}-{}", std::process::id(), free_port()));
        std::fs::create_dir_all(&dir).expect("a data dir");
        let child = Command::new(coordinator_binary())
            .args(["--node-id", "1", "--insecure", "--listen", &addr, "--bootstrap", &format!("1={addr}")])
            .arg("--data-dir")
            .arg(&dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("the coordinator starts");
        Self { child, addr, dir }
    }

    fn terminate(&self) {
        let status = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status().expect("kill runs");
        assert!(status.success());
    }
}

impl Drop for Coordinator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Registers `web-1` and keeps its session open; retries until the leader welcomes it.
async fn register_agent(addr: &str) -> tonic::Streaming<v1::CoordinatorMessage> {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let register = v1::AgentMessage {
            msg: Some(agent_message::Msg::Register(v1::Register {
                host_id: "web-1".into(),
                labels: [("role".to_owned(), "web".to_owned())].into(),
                version: Some(flotilla_proto::version_info("0.1.0", [])),
                instance_id: "i-1".into(),
                inventory: vec![v1::ServiceInstance {
                    service: "web".into(),
                    version: "1.4.0".into(),
                    state: v1::ServiceRunState::Running as i32,
                    ..Default::default()
                }],
                ..Default::default()
            })),
        };
        let outgoing = tokio_stream::iter([register]).chain(tokio_stream::pending());
        let mut client = AgentLinkClient::new(channel(addr, &ClientSecurity::Insecure).expect("a valid address"));
        if let Ok(resp) = client.session(outgoing).await {
            let mut stream = resp.into_inner();
            if let Ok(Ok(Some(v1::CoordinatorMessage { msg: Some(Msg::Welcome(_)) }))) =
                tokio::time::timeout(DEADLINE, stream.message()).await
            {
                return stream;
            }
        }
        assert!(Instant::now() < deadline, "the coordinator never welcomed the agent");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn flotilla(addr: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_flotilla"))
        .args(["--coordinators", addr, "--insecure", "agents"])
        .args(args)
        .output()
        .expect("flotilla runs")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_lists_registered_hosts_as_a_table_and_json_and_filters_by_label() {
    let mut coordinator = Coordinator::start();
    let addr = coordinator.addr.clone();
    let mut session = register_agent(&addr).await;

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

    let out = flotilla(&addr, &["--label", "role=web", "-o", "json"]);
    assert!(out.status.success());
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).expect("valid JSON");
    assert_eq!(doc[0]["host_id"], "web-1");
    assert_eq!(doc[0]["state"], "online");
    assert_eq!(doc[0]["connected_node_id"], 1);
    assert_eq!(doc[0]["services"][0]["version"], "1.4.0");

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
