//! Shared helpers of the agent's integration tests: the sample service binary, real
//! artifacts, step builders, HTTP probes and waiting with deadlines.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use flotilla_agent::step::StepPhase;
use flotilla_agent::step::{Action, Artifact, Deploy, HealthCheck, Hooks, Probe, RunSpec, Step};
use flotilla_agent::{Executor, ExecutorConfig, StepHandle};
use flotilla_sample_service::{Behaviour, Package};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// The sample service binary (built once per test binary).
pub fn sample_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        flotilla_sample_service::build_binary(Path::new(env!("CARGO_TARGET_TMPDIR"))).expect("build the sample service")
    })
    .clone()
}

/// A free loopback port (bound and released; good enough for tests).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

/// One test's world: a temp dir with the agent's data dir and an artifacts dir, and the
/// service's port. Kills every process left in it on drop.
pub struct World {
    pub dir: tempfile::TempDir,
    pub port: u16,
}

impl World {
    pub fn new() -> Self {
        Self { dir: tempfile::tempdir().expect("tempdir"), port: free_port() }
    }

    pub fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn artifacts(&self) -> PathBuf {
        self.dir.path().join("artifacts")
    }

    pub fn config(&self) -> ExecutorConfig {
        let mut config = ExecutorConfig::new(self.data(), "test-host");
        config.restart_backoff = flotilla_agent::driver::process::Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(2),
        };
        config
    }

    pub async fn executor(&self) -> Executor {
        let (executor, recovered) = Executor::open(self.config()).await.expect("open the executor");
        assert!(recovered.is_empty(), "nothing to recover: {recovered:?}");
        executor
    }

    /// A packaged sample service version whose behaviour is healthy.
    pub fn package(&self, version: &str) -> Package {
        self.package_with(version, &Behaviour::healthy(version))
    }

    pub fn package_with(&self, version: &str, behaviour: &Behaviour) -> Package {
        let dir = self.artifacts().join(format!("{version}-{}", unique()));
        flotilla_sample_service::package(&dir, &sample_bin(), version, behaviour).expect("package")
    }

    /// A deploy step of the sample service `web` on this world's port.
    pub fn deploy(&self, id: &str, version: &str, package: &Package) -> Deploy {
        Deploy {
            service: "web".to_owned(),
            version: version.to_owned(),
            artifact: Artifact { url: package.file_url(), sha256: package.sha256.clone() },
            run: RunSpec {
                command: "bin/sample".to_owned(),
                args: vec!["--port".to_owned(), self.port.to_string()],
                env: BTreeMap::from([("COMMAND_ID".to_owned(), id.to_owned())]),
            },
            hooks: Hooks::default(),
            health: vec![HealthCheck {
                probe: Probe::Http {
                    url: format!("http://127.0.0.1:{}/healthz", self.port),
                    expect_status: 200,
                    body_contains: String::new(),
                },
                interval_ms: 50,
                timeout_ms: 500,
            }],
            healthy_for_ms: 200,
            healthy_deadline_ms: 10_000,
            hook_timeout_ms: 10_000,
            stop_timeout_ms: 2_000,
            migrate: false,
            provides: BTreeMap::from([("web-api".to_owned(), version.to_owned())]),
        }
    }

    /// `GET /version` of the service, trimmed; `None` when it does not answer 200.
    pub async fn version(&self) -> Option<String> {
        match http_get(self.port, "/version").await {
            Some((200, body)) => Some(body.trim().to_owned()),
            _ => None,
        }
    }

    /// Waits until the service answers `/version` with `version`.
    pub async fn wait_serving(&self, version: &str) {
        let port = self.port;
        let want = version.to_owned();
        wait_until(Duration::from_secs(15), &format!("web to serve {version} on port {port}"), || {
            let want = want.clone();
            async move { matches!(http_get(port, "/version").await, Some((200, body)) if body.trim() == want) }
        })
        .await;
    }

    /// The version `current` points at.
    pub fn current(&self) -> Option<String> {
        std::fs::read_link(self.data().join("services/web/current"))
            .ok()
            .and_then(|t| t.file_name().map(|n| n.to_string_lossy().into_owned()))
    }

    /// Pids of live processes whose working directory is `releases/<version>` of web.
    pub fn processes_of(&self, version: &str) -> Vec<u32> {
        let Ok(dir) = self.data().join("services/web/releases").join(version).canonicalize() else { return Vec::new() };
        processes_in(&dir)
    }
}

impl Drop for World {
    fn drop(&mut self) {
        if let Ok(root) = self.dir.path().canonicalize() {
            for pid in processes_under(&root) {
                let _ =
                    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGKILL);
            }
        }
    }
}

/// Live (non-zombie) processes whose cwd is exactly `dir`.
pub fn processes_in(dir: &Path) -> Vec<u32> {
    live_processes().into_iter().filter(|(_, cwd)| cwd == dir).map(|(p, _)| p).collect()
}

fn processes_under(root: &Path) -> Vec<u32> {
    live_processes().into_iter().filter(|(_, cwd)| cwd.starts_with(root)).map(|(p, _)| p).collect()
}

fn live_processes() -> Vec<(u32, PathBuf)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
        if flotilla_agent::driver::process::proc_start_ticks(pid).is_none() {
            continue;
        }
        if let Ok(cwd) = std::fs::read_link(format!("/proc/{pid}/cwd")) {
            out.push((pid, cwd));
        }
    }
    out
}

pub fn step(id: &str, term: u64, action: Action) -> Step {
    Step { command_id: id.to_owned(), term, release_id: "r1".to_owned(), stage: String::new(), action }
}

pub fn deploy_step(id: &str, term: u64, deploy: Deploy) -> Step {
    step(id, term, Action::Deploy(Box::new(deploy)))
}

fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

/// A plain HTTP GET on loopback: (status, body).
pub async fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let work = async {
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.ok()?;
        stream
            .write_all(format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").as_bytes())
            .await
            .ok()?;
        let mut response = String::new();
        stream.read_to_string(&mut response).await.ok()?;
        let status = response.split_whitespace().nth(1)?.parse().ok()?;
        let body = response.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
        Some((status, body))
    };
    tokio::time::timeout(Duration::from_secs(2), work).await.ok().flatten()
}

/// Polls `cond` every 20 ms until it holds; panics after `within`.
pub async fn wait_until<F, Fut>(within: Duration, what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    loop {
        if cond().await {
            return;
        }
        assert!(Instant::now() < deadline, "timed out after {within:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Lines in a file (0 when missing).
pub fn count_lines(path: &Path) -> usize {
    std::fs::read_to_string(path).map(|t| t.lines().count()).unwrap_or(0)
}

/// A tar.gz with raw entries (names written into the header as given, so that unsafe
/// paths the `tar` builder refuses can be produced). Returns (path, sha256).
pub fn raw_tarball(dir: &Path, name: &str, entries: &[RawEntry]) -> Package {
    std::fs::create_dir_all(dir).expect("mkdir");
    let path = dir.join(name);
    let file = std::fs::File::create(&path).expect("create");
    let mut gz = flate2::write::GzEncoder::new(file, flate2::Compression::fast());
    for entry in entries {
        let mut header = tar::Header::new_old();
        {
            let bytes = header.as_old_mut();
            bytes.name[..entry.path.len()].copy_from_slice(entry.path.as_bytes());
            if let Some(link) = &entry.link {
                bytes.linkname[..link.len()].copy_from_slice(link.as_bytes());
            }
        }
        header.set_mode(entry.mode);
        header.set_size(entry.content.len() as u64);
        header.set_mtime(1_700_000_000);
        header.set_entry_type(entry.kind);
        header.set_cksum();
        gz.write_all(header.as_bytes()).expect("header");
        gz.write_all(&entry.content).expect("content");
        let pad = (512 - entry.content.len() % 512) % 512;
        gz.write_all(&vec![0u8; pad]).expect("pad");
    }
    gz.write_all(&[0u8; 1024]).expect("end");
    gz.finish().expect("finish");
    let (sha256, size) = flotilla_sample_service::sha256_file(&path).expect("sha");
    Package { path, sha256, size }
}

/// One raw tar entry.
pub struct RawEntry {
    pub path: String,
    pub kind: tar::EntryType,
    pub content: Vec<u8>,
    pub link: Option<String>,
    pub mode: u32,
}

impl RawEntry {
    pub fn file(path: &str, content: &[u8], mode: u32) -> Self {
        Self { path: path.to_owned(), kind: tar::EntryType::Regular, content: content.to_vec(), link: None, mode }
    }

    pub fn symlink(path: &str, target: &str) -> Self {
        Self {
            path: path.to_owned(),
            kind: tar::EntryType::Symlink,
            content: Vec::new(),
            link: Some(target.to_owned()),
            mode: 0o777,
        }
    }

    pub fn hardlink(path: &str, target: &str) -> Self {
        Self {
            path: path.to_owned(),
            kind: tar::EntryType::Link,
            content: Vec::new(),
            link: Some(target.to_owned()),
            mode: 0o644,
        }
    }
}

/// The entries of a healthy sample artifact (the binary and its behaviour), to which a
/// test adds an unsafe entry.
pub fn sample_entries(version: &str) -> Vec<RawEntry> {
    let mut bin = Vec::new();
    std::fs::File::open(sample_bin()).expect("bin").read_to_end(&mut bin).expect("read bin");
    vec![
        RawEntry::file("bin/sample", &bin, 0o755),
        RawEntry::file("behaviour.toml", Behaviour::healthy(version).to_toml().as_bytes(), 0o644),
    ]
}

/// Serves one HTTP response that announces `announced` bytes but sends only `body`,
/// then closes; as many connections as come. Returns the URL.
pub fn truncating_server(body: Vec<u8>, announced: usize) -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for stream in listener.incoming().take(8) {
            let Ok(mut stream) = stream else { continue };
            let mut buf = [0u8; 4096];
            let _ = stream.read(&mut buf);
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Type: application/gzip\r\nContent-Length: {announced}\r\nConnection: close\r\n\r\n"
            );
            let _ = stream.write_all(&body);
            let _ = stream.flush();
        }
    });
    format!("http://127.0.0.1:{port}/artifact.tar.gz")
}

/// Serves `body` with a correct Content-Length to every connection. Returns the URL.
pub fn http_server(body: Vec<u8>) -> String {
    truncating_server_len(body)
}

fn truncating_server_len(body: Vec<u8>) -> String {
    let len = body.len();
    truncating_server(body, len)
}

/// Accepts connections, answers headers announcing 1 MB, then sends nothing for 60 s.
pub fn stalling_server() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming().take(4) {
            let Ok(mut stream) = stream else { continue };
            let mut buf = [0u8; 4096];
            let _ = stream.read(&mut buf);
            let _ = write!(stream, "HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n");
            held.push(stream);
        }
        std::thread::sleep(Duration::from_secs(60));
    });
    format!("http://127.0.0.1:{port}/stall.tar.gz")
}

/// Runs `flotilla-agent local-deploy` with `step` on the world's data dir (the state
/// an agent finds at start).
pub fn local_deploy(world: &World, step: &Step) {
    let file = world.dir.path().join(format!("{}.json", step.command_id));
    std::fs::write(&file, serde_json::to_vec(step).expect("json")).expect("write step");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_flotilla-agent"))
        .args(["local-deploy", "--host-id", "test-host", "--data-dir"])
        .arg(world.data())
        .arg("--step")
        .arg(&file)
        .current_dir(world.dir.path())
        .output()
        .expect("run local-deploy");
    assert!(output.status.success(), "local-deploy failed: {}", String::from_utf8_lossy(&output.stderr));
}

/// Reads progress until `phase` is reported (panics if the step ends first).
pub async fn until_phase(handle: &mut StepHandle, phase: StepPhase) {
    let wait = async {
        while let Some(p) = handle.progress.recv().await {
            if p.phase == phase {
                return;
            }
        }
        panic!("the step ended before {phase}");
    };
    tokio::time::timeout(Duration::from_secs(30), wait).await.unwrap_or_else(|_| panic!("no {phase} within 30 s"));
}
