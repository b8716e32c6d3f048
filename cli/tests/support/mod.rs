//! What the CLI's cluster tests share: real `flotilla-coordinator` processes on
//! loopback, fake agents that speak `AgentLink`, and the `flotilla` binary run as a
//! user runs it.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use flotilla_net::{ClientSecurity, channel};
use flotilla_proto::v1::agent_link_client::AgentLinkClient;
use flotilla_proto::v1::coordinator_message::Msg;
use flotilla_proto::v1::{self, agent_message, step};
use tonic::codegen::tokio_stream::wrappers::ReceiverStream;
use tonic::codegen::tokio_stream::{self, StreamExt as _};

/// How long a test waits for anything.
pub const DEADLINE: Duration = Duration::from_secs(30);

/// The coordinator binary, built once per test process first (cargo does nothing when
/// it is up to date). It is built with the workspace's features, as `cargo test
/// --workspace` builds it, so that no dependency is compiled a second time with
/// another feature set.
fn coordinator_binary() -> PathBuf {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BUILT.get_or_init(build_coordinator).clone()
}

fn build_coordinator() -> PathBuf {
    let exe = std::env::current_exe().expect("the test knows its path");
    let profile_dir = exe.parent().and_then(Path::parent).expect("target/<profile>").to_path_buf();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let mut build = Command::new(cargo);
    build.args(["build", "--quiet", "--workspace", "--bin", "flotilla-coordinator"]);
    if profile_dir.ends_with("release") {
        build.arg("--release");
    }
    assert!(build.status().expect("cargo runs").success(), "building flotilla-coordinator failed");
    profile_dir.join("flotilla-coordinator")
}

/// A port nothing listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free port")
}

/// A coordinator process and its data directory, removed on drop.
#[derive(Debug)]
pub struct Coordinator {
    pub child: Child,
    pub addr: String,
    dir: PathBuf,
}

impl Coordinator {
    /// Node 1 of a new single-node cluster.
    pub fn start() -> Self {
        let addr = format!("127.0.0.1:{}", free_port());
        let bootstrap = format!("1={addr}");
        Self::spawn(1, addr, &["--bootstrap", &bootstrap])
    }

    /// Node `id`, started without `--bootstrap`: it waits to be added (`cluster add`).
    pub fn joiner(id: u64) -> Self {
        Self::spawn(id, format!("127.0.0.1:{}", free_port()), &[])
    }

    /// Node 1 of a new single-node cluster over mutual TLS with these PEM files.
    pub fn start_tls(ca: &Path, cert: &Path, key: &Path) -> Self {
        let addr = format!("127.0.0.1:{}", free_port());
        let bootstrap = format!("1={addr}");
        let files = [("--tls-ca", ca), ("--tls-cert", cert), ("--tls-key", key)];
        let tls: Vec<String> =
            files.iter().flat_map(|(flag, p)| [(*flag).to_owned(), p.display().to_string()]).collect();
        let mut args: Vec<&str> = tls.iter().map(String::as_str).collect();
        args.extend(["--bootstrap", &bootstrap]);
        Self::spawn_secured(1, addr, &args)
    }

    fn spawn(id: u64, addr: String, extra: &[&str]) -> Self {
        Self::spawn_secured(id, addr, &[&["--insecure"], extra].concat())
    }

    fn spawn_secured(id: u64, addr: String, extra: &[&str]) -> Self {
        let dir = std::env::temp_dir().join(format!("flotilla-cli-test-{}-{}", std::process::id(), free_port()));
        std::fs::create_dir_all(&dir).expect("a data dir");
        let child = Command::new(coordinator_binary())
            .args(["--node-id", &id.to_string(), "--listen", &addr])
            .args(extra)
            .arg("--data-dir")
            .arg(&dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("the coordinator starts");
        Self { child, addr, dir }
    }

    /// Sends the process SIGTERM.
    pub fn terminate(&self) {
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

/// The `Register` of a host with these labels, running `web` 1.4.0.
pub fn registration(host_id: &str, labels: &[(&str, &str)]) -> v1::Register {
    v1::Register {
        host_id: host_id.into(),
        labels: labels.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(),
        version: Some(flotilla_proto::version_info("0.1.0", [])),
        instance_id: format!("i-{host_id}"),
        inventory: vec![v1::ServiceInstance {
            service: "web".into(),
            version: "1.4.0".into(),
            state: v1::ServiceRunState::Running as i32,
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// Registers a host and keeps its session open, sending nothing more; retries until
/// the leader welcomes it.
pub async fn register_agent(addr: &str, register: v1::Register) -> tonic::Streaming<v1::CoordinatorMessage> {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let first = v1::AgentMessage { msg: Some(agent_message::Msg::Register(register.clone())) };
        let outgoing = tokio_stream::iter([first]).chain(tokio_stream::pending());
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

/// A host whose agent does every step at once and successfully: it heartbeats and
/// answers each `Step` with a `StepResult` that says the service now runs the version.
/// Runs until the test ends.
pub async fn obliging_agent(addr: &str, register: v1::Register) {
    let deadline = Instant::now() + DEADLINE;
    let (tx, mut stream) = loop {
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        let first = v1::AgentMessage { msg: Some(agent_message::Msg::Register(register.clone())) };
        tx.send(first).await.expect("the channel is open");
        let mut client = AgentLinkClient::new(channel(addr, &ClientSecurity::Insecure).expect("a valid address"));
        if let Ok(resp) = client.session(ReceiverStream::new(rx)).await {
            let mut stream = resp.into_inner();
            if let Ok(Ok(Some(v1::CoordinatorMessage { msg: Some(Msg::Welcome(w)) }))) =
                tokio::time::timeout(DEADLINE, stream.message()).await
            {
                let beat = tx.clone();
                let every = Duration::from_millis(w.heartbeat_interval_ms.clamp(50, 1_000));
                tokio::spawn(async move {
                    for seq in 1.. {
                        tokio::time::sleep(every).await;
                        let msg = agent_message::Msg::Heartbeat(v1::Heartbeat { seq, ..Default::default() });
                        if beat.send(v1::AgentMessage { msg: Some(msg) }).await.is_err() {
                            return;
                        }
                    }
                });
                break (tx, stream);
            }
        }
        assert!(Instant::now() < deadline, "the coordinator never welcomed the agent");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    tokio::spawn(async move {
        while let Ok(Some(message)) = stream.message().await {
            let Some(Msg::Step(step)) = message.msg else { continue };
            let result = v1::AgentMessage { msg: Some(agent_message::Msg::Result(done(&step))) };
            if tx.send(result).await.is_err() {
                return;
            }
        }
    });
}

/// The successful result of `step`.
fn done(step: &v1::Step) -> v1::StepResult {
    let running = |service: &str, version: &str| v1::ServiceInstance {
        service: service.to_owned(),
        version: version.to_owned(),
        state: v1::ServiceRunState::Running as i32,
        ..Default::default()
    };
    let service = match &step.action {
        Some(step::Action::Deploy(d)) => Some(running(&d.service, &d.version)),
        Some(step::Action::Bake(b)) => Some(running(&b.service, &b.version)),
        Some(step::Action::Rollback(r)) => {
            Some(running(&r.service, if r.to_version.is_empty() { "1.4.0" } else { &r.to_version }))
        }
        Some(step::Action::RunHook(h)) => Some(running(&h.service, &h.version)),
        Some(step::Action::Stop(s)) => Some(v1::ServiceInstance {
            service: s.service.clone(),
            state: v1::ServiceRunState::Stopped as i32,
            ..Default::default()
        }),
        Some(step::Action::RunCheck(_)) | None => None,
    };
    let now = i64::try_from(SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis())).unwrap_or(0);
    v1::StepResult {
        command_id: step.command_id.clone(),
        term: step.term,
        outcome: v1::StepOutcome::Succeeded as i32,
        service,
        started_unix_ms: now,
        finished_unix_ms: now,
        ..Default::default()
    }
}

/// Runs `flotilla --coordinators ADDR --insecure ARGS...`.
pub fn flotilla(addr: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_flotilla"))
        .args(["--coordinators", addr, "--insecure"])
        .args(args)
        .output()
        .expect("flotilla runs")
}

/// Its standard output.
pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Runs `flotilla ARGS... --output json`, which must succeed, and reads what it printed
/// as the API message `T`.
pub fn flotilla_json<T: serde::de::DeserializeOwned>(addr: &str, args: &[&str]) -> T {
    let out = flotilla(addr, &[args, &["--output", "json"]].concat());
    let said = format!("{}{}", stdout(&out), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "flotilla {}: {said}", args.join(" "));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("flotilla {}: {e}:\n{said}", args.join(" ")))
}
