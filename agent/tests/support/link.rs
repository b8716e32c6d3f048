//! Helpers of the session tests: a small in-test `AgentLink` server (tonic on
//! 127.0.0.1, optionally with mutual TLS) that hands each session to the test, the real
//! `flotilla-agent` daemon as a child process, and a test certificate authority.

#![allow(dead_code)]

use std::fs::File;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use flotilla_proto::v1 as pb;
use flotilla_proto::v1::agent_link_server::{AgentLink, AgentLinkServer};
use flotilla_proto::v1::agent_message::Msg as Out;
use flotilla_proto::v1::coordinator_message::Msg as In;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

/// How long a test waits for any one message.
pub const MESSAGE_WAIT: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------- server

type Outbound = mpsc::Sender<Result<pb::CoordinatorMessage, Status>>;

struct Service {
    sessions: mpsc::Sender<ServerSession>,
}

#[tonic::async_trait]
impl AgentLink for Service {
    type SessionStream = ReceiverStream<Result<pb::CoordinatorMessage, Status>>;

    async fn session(
        &self,
        request: Request<Streaming<pb::AgentMessage>>,
    ) -> Result<Response<Self::SessionStream>, Status> {
        let mut streaming = request.into_inner();
        let (in_tx, inbound) = mpsc::channel(4096);
        tokio::spawn(async move {
            loop {
                match streaming.message().await {
                    Ok(Some(m)) => {
                        if in_tx.send(Ok(m)).await.is_err() {
                            return;
                        }
                    }
                    Ok(None) => return,
                    Err(status) => {
                        let _ = in_tx.send(Err(status)).await;
                        return;
                    }
                }
            }
        });
        let (outbound, out_rx) = mpsc::channel(1024);
        let session = ServerSession {
            inbound,
            outbound: Some(outbound),
            progress: Vec::new(),
            heartbeats: Vec::new(),
            results: Vec::new(),
        };
        self.sessions.send(session).await.map_err(|_| Status::unavailable("test server is gone"))?;
        Ok(Response::new(ReceiverStream::new(out_rx)))
    }
}

/// An `AgentLink` server on loopback, on its own runtime so that [`TestServer::stop`]
/// kills it and every connection at once, like a crashed coordinator.
pub struct TestServer {
    pub addr: SocketAddr,
    sessions: mpsc::Receiver<ServerSession>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl TestServer {
    /// A server on a free port; with `tls`, it requires client certificates of its CA.
    pub fn start(tls: Option<&TlsPaths>) -> Self {
        Self::start_on("127.0.0.1:0".parse().expect("addr"), tls)
    }

    /// A server on `addr` (e.g. the address of a stopped one).
    pub fn start_on(addr: SocketAddr, tls: Option<&TlsPaths>) -> Self {
        let deadline = Instant::now() + Duration::from_secs(10);
        let listener = loop {
            match std::net::TcpListener::bind(addr) {
                Ok(l) => break l,
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(e) => panic!("bind {addr}: {e}"),
            }
        };
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("local addr");
        let runtime =
            tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("server runtime");
        let (tx, sessions) = mpsc::channel(16);
        let material = tls.map(TlsPaths::material);
        runtime.spawn(async move {
            let listener = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
            let mut builder = tonic::transport::Server::builder();
            if let Some(material) = material {
                builder = builder.tls_config(material.server_config()).expect("server TLS");
            }
            let incoming = tonic::transport::server::TcpIncoming::from(listener);
            let _ =
                builder.add_service(AgentLinkServer::new(Service { sessions: tx })).serve_with_incoming(incoming).await;
        });
        Self { addr, sessions, runtime: Some(runtime) }
    }

    /// `127.0.0.1:PORT`.
    pub fn address(&self) -> String {
        self.addr.to_string()
    }

    /// Kills the server and every session (connections are dropped, not closed).
    pub fn stop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }

    /// The next session an agent opens.
    pub async fn next_session(&mut self) -> ServerSession {
        tokio::time::timeout(MESSAGE_WAIT, self.sessions.recv())
            .await
            .expect("timed out waiting for the agent to open a session")
            .expect("the server runs")
    }

    /// A session opened already, if any.
    pub fn try_next_session(&mut self) -> Option<ServerSession> {
        self.sessions.try_recv().ok()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One session as the test server sees it: what the agent sends, and a way to answer.
/// Progress, heartbeats and results seen while waiting for something else are kept.
pub struct ServerSession {
    inbound: mpsc::Receiver<Result<pb::AgentMessage, Status>>,
    outbound: Option<Outbound>,
    pub progress: Vec<pb::StepProgress>,
    pub heartbeats: Vec<pb::Heartbeat>,
    pub results: Vec<pb::StepResult>,
}

impl ServerSession {
    /// The agent's next message; `None` once its stream ended.
    pub async fn recv(&mut self) -> Option<Out> {
        let next = tokio::time::timeout(MESSAGE_WAIT, self.inbound.recv())
            .await
            .expect("timed out waiting for a message from the agent");
        match next {
            Some(Ok(m)) => Some(m.msg.expect("a message with a body")),
            Some(Err(_)) | None => None,
        }
    }

    /// The first message, which must be `Register`.
    pub async fn register(&mut self) -> pb::Register {
        match self.recv().await {
            Some(Out::Register(r)) => r,
            other => panic!("expected Register first, got {other:?}"),
        }
    }

    pub async fn send(&mut self, msg: In) {
        let tx = self.outbound.as_ref().expect("session still open");
        tx.send(Ok(pb::CoordinatorMessage { msg: Some(msg) })).await.expect("the session's stream is open");
    }

    /// Welcome with a heartbeat interval.
    pub async fn welcome(&mut self, heartbeat_ms: u64) {
        self.send(In::Welcome(pb::Welcome {
            node_id: 1,
            term: 1,
            lease_ms: 10_000,
            heartbeat_interval_ms: heartbeat_ms,
            version: Some(flotilla_proto::version_info("test", Vec::new())),
        }))
        .await;
    }

    pub async fn step(&mut self, step: flotilla_agent::step::Step) {
        self.send(In::Step(step.into())).await;
    }

    pub async fn cancel(&mut self, command_id: &str, reason: &str) {
        self.cancel_in_term(command_id, reason, 1).await;
    }

    pub async fn cancel_in_term(&mut self, command_id: &str, reason: &str, term: u64) {
        self.send(In::Cancel(pb::Cancel { command_id: command_id.to_owned(), reason: reason.to_owned(), term })).await;
    }

    pub async fn ack(&mut self, ids: &[&str]) {
        self.send(In::Ack(pb::ResultAck { command_ids: ids.iter().map(|s| (*s).to_owned()).collect() })).await;
    }

    /// Keeps what arrives; returns it too.
    async fn next(&mut self) -> Out {
        let msg = self.recv().await.expect("the agent's stream ended");
        match &msg {
            Out::Progress(p) => self.progress.push(p.clone()),
            Out::Heartbeat(h) => self.heartbeats.push(h.clone()),
            Out::Result(r) => self.results.push(r.clone()),
            Out::Register(_) => panic!("Register in the middle of a session"),
        }
        msg
    }

    /// The next result (progress and heartbeats before it are kept).
    pub async fn next_result(&mut self) -> pb::StepResult {
        loop {
            if let Out::Result(r) = self.next().await {
                return r;
            }
        }
    }

    /// Waits for the next progress event in `phase` of `command_id`.
    pub async fn until_progress(&mut self, command_id: &str, phase: pb::StepPhase) {
        if self.progress.iter().any(|p| p.command_id == command_id && p.phase == phase as i32) {
            return;
        }
        loop {
            if let Out::Progress(p) = self.next().await
                && p.command_id == command_id
                && p.phase == phase as i32
            {
                return;
            }
        }
    }

    /// The next heartbeat (anything before it is kept).
    pub async fn next_heartbeat(&mut self) -> pb::Heartbeat {
        loop {
            if let Out::Heartbeat(h) = self.next().await {
                return h;
            }
        }
    }

    /// The first heartbeat, among those kept and those to come, that satisfies `pred`
    /// (waits at most [`MESSAGE_WAIT`] in all).
    pub async fn until_heartbeat(&mut self, mut pred: impl FnMut(&pb::Heartbeat) -> bool) -> pb::Heartbeat {
        if let Some(h) = self.heartbeats.iter().find(|h| pred(h)) {
            return h.clone();
        }
        let wait = async {
            loop {
                let h = self.next_heartbeat().await;
                if pred(&h) {
                    return h;
                }
            }
        };
        tokio::time::timeout(MESSAGE_WAIT, wait).await.expect("timed out waiting for a matching heartbeat")
    }

    /// Forgets the heartbeats kept so far.
    pub fn clear_heartbeats(&mut self) {
        self.heartbeats.clear();
    }

    /// Waits for `n` more heartbeats and returns the results that came meanwhile.
    pub async fn results_during_heartbeats(&mut self, n: usize) -> Vec<pb::StepResult> {
        let before = self.results.len();
        for _ in 0..n {
            self.next_heartbeat().await;
        }
        self.results[before..].to_vec()
    }

    /// Ends the stream cleanly (the agent sees it closed).
    pub fn end(&mut self) {
        self.outbound = None;
    }

    /// Ends the stream with `status`.
    pub async fn end_with(&mut self, status: Status) {
        if let Some(tx) = self.outbound.take() {
            let _ = tx.send(Err(status)).await;
        }
    }

    /// Waits until the agent's side of the stream is gone.
    pub async fn until_closed(&mut self) {
        while self.recv().await.is_some() {}
    }
}

// ---------------------------------------------------------------------- agent

const AGENT: &str = env!("CARGO_BIN_EXE_flotilla-agent");

/// The host id [`AgentProcess::start`] gives the agent (what its certificate must name).
pub const HOST_ID: &str = "test-host";

/// The real `flotilla-agent` daemon, its stderr in a file.
pub struct AgentProcess {
    child: Child,
    pub log: PathBuf,
}

impl AgentProcess {
    /// Starts the daemon on `data` dialling `coordinators`, with host id [`HOST_ID`],
    /// labels `role=web` and `zone=a`, plaintext unless `tls` is given.
    pub fn start(dir: &Path, data: &Path, coordinators: &[String], tls: Option<&TlsPaths>) -> Self {
        static STARTS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = STARTS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let log = dir.join(format!("agent-{n}.log"));
        let mut command = Command::new(AGENT);
        command
            .args(["--host-id", HOST_ID, "--label", "role=web", "--label", "zone=a", "--data-dir"])
            .arg(data)
            .arg("--coordinators")
            .arg(coordinators.join(","));
        match tls {
            Some(paths) => {
                command
                    .arg("--tls-ca")
                    .arg(&paths.ca)
                    .arg("--tls-cert")
                    .arg(&paths.cert)
                    .arg("--tls-key")
                    .arg(&paths.key);
            }
            None => {
                command.arg("--insecure");
            }
        }
        let child = command
            .current_dir(dir)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(File::create(&log).expect("agent log")))
            .spawn()
            .expect("spawn flotilla-agent");
        Self { child, log }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the log has `n` lines containing `needle`.
    pub async fn until_logged(&self, needle: &str, n: usize) {
        let deadline = Instant::now() + MESSAGE_WAIT;
        while self.log_text().lines().filter(|l| l.contains(needle)).count() < n {
            assert!(Instant::now() < deadline, "the agent never logged `{needle}` {n} times:\n{}", self.log_text());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGTERM; waits (up to 10 s) for the exit.
    pub fn terminate(&mut self) -> ExitStatus {
        signal(self.child.id(), nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            assert!(Instant::now() < deadline, "the agent did not stop on SIGTERM:\n{}", self.log_text());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for AgentProcess {
    #[allow(clippy::print_stderr)]
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!("--- agent log {} ---\n{}", self.log.display(), self.log_text());
        }
    }
}

fn signal(pid: u32, signal: nix::sys::signal::Signal) {
    let pid = nix::unistd::Pid::from_raw(i32::try_from(pid).expect("pid"));
    let _ = nix::sys::signal::kill(pid, signal);
}

// ---------------------------------------------------------------------- TLS

pub use flotilla_net::testing::TlsPaths;
