//! Harness for Flotilla's cross-process tests: real `flotilla-coordinator` processes on
//! loopback with generated configs and certificates, killed and restarted at will.
//!
//! Every wait has a deadline; nothing sleeps and hopes.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use flotilla_net::pki::Role;
use flotilla_net::{ClientSecurity, LeaderClient, channel};
use flotilla_proto::v1::cluster_client::ClusterClient;
use flotilla_proto::v1::releases_client::ReleasesClient;
use flotilla_proto::v1::{self, RaftState};

/// The path of a workspace binary, (re)built once per test process so a test never
/// runs a stale build (cargo does nothing when it is up to date).
///
/// With `FLOTILLA_BIN_DIR` set, the binary is taken from that directory as it is,
/// unbuilt: how a benchmark compares two builds in one session (copy each build's
/// binaries aside, then run the bench against each directory in turn).
pub fn binary(name: &str) -> PathBuf {
    if let Some(dir) = std::env::var_os("FLOTILLA_BIN_DIR") {
        let path = PathBuf::from(dir).join(name);
        assert!(path.is_file(), "FLOTILLA_BIN_DIR has no {name}: {}", path.display());
        return path;
    }
    static BUILT: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
    let exe = std::env::current_exe().expect("the test knows its path");
    // target/<profile>/deps/<test> -> target/<profile>
    let profile_dir = exe.parent().and_then(Path::parent).expect("a target dir").to_path_buf();
    let path = profile_dir.join(name);
    let mut built = BUILT.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if !built.iter().any(|b| b == name) {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
        let mut cmd = Command::new(cargo);
        cmd.args(["build", "--quiet", "--workspace", "--bin", name]);
        if profile_dir.ends_with("release") {
            cmd.arg("--release");
        }
        let status = cmd.status().expect("cargo runs");
        assert!(status.success(), "building {name} failed");
        built.push(name.to_owned());
    }
    path
}

/// Waits up to `within` for `child` to exit and returns its status; a child still
/// running at the deadline is killed, reaped, and `None` returned.
pub async fn wait_for_exit(child: &mut Child, within: Duration) -> std::io::Result<Option<std::process::ExitStatus>> {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Some(status));
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Ok(None);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A command for a workspace script that runs cargo itself (`deploy/images/build`,
/// `deploy/packages/build`), without the variables `cargo test` gives a test process
/// (`CARGO_MANIFEST_DIR`, `CARGO_PKG_*`, ...): the nested build would otherwise see
/// another environment than the same command run from a shell, and rebuild the release
/// tree each time one follows the other.
pub fn workspace_script(path: &Path) -> Command {
    let mut cmd = Command::new(path);
    for (key, _) in std::env::vars_os() {
        let name = key.to_string_lossy();
        let keep = matches!(name.as_ref(), "CARGO_HOME" | "CARGO_TARGET_DIR" | "CARGO_TERM_COLOR");
        if !keep && (name.starts_with("CARGO") || name == "LD_LIBRARY_PATH" || name == "OUT_DIR") {
            cmd.env_remove(&key);
        }
    }
    cmd
}

/// A free loopback port (bound then released; the caller binds it right after).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free port")
}

/// Polls `check` until it returns `Some`, or fails after `timeout` with `what`.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return Ok(v);
        }
        if Instant::now() >= deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub use flotilla_net::testing::{TRUST_DOMAIN, TestCa, TlsPaths};

/// Options for a test cluster.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// Mutual TLS (`true`) or `--insecure`.
    pub tls: bool,
    /// `--snapshot-logs`.
    pub snapshot_logs: u64,
    /// `--keep-logs`.
    pub keep_logs: u64,
    /// Give every node an `--http` address (metrics, probes, status page); see
    /// [`TestCluster::http_url`] and [`TestCluster::http_client`].
    pub http: bool,
    /// With `tls`: enrolment with join tokens on, agent certificates issued for this
    /// many milliseconds (`--tls-ca-key` with [`TestCa::key_file`],
    /// `--agent-cert-ttl-ms`). `None`: no CA key, enrolment off.
    pub agent_cert_ttl_ms: Option<u64>,
    /// More flags for every coordinator (`--finished-release-max-count 3`, ...).
    pub args: Vec<String>,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        Self {
            tls: false,
            snapshot_logs: 10_000,
            keep_logs: 1_000,
            http: false,
            agent_cert_ttl_ms: None,
            args: Vec::new(),
        }
    }
}

/// One coordinator process.
#[derive(Debug)]
pub struct Coordinator {
    /// Its node id.
    pub id: u64,
    /// Its `127.0.0.1:PORT`.
    pub addr: String,
    /// Its `--http` address, `127.0.0.1:PORT`, when the cluster has them.
    pub http: Option<String>,
    data_dir: PathBuf,
    log: PathBuf,
    bootstrap: String,
    /// Its certificate (a coordinator's, for its node id), in TLS mode: issued once,
    /// kept across restarts.
    tls: Option<TlsPaths>,
    child: Option<Child>,
}

/// Creates a release with the one-service spec [`tiny_spec`] and idempotency key `key`
/// through `client`; returns its id.
pub async fn write_via(client: &LeaderClient, key: &str) -> anyhow::Result<String> {
    let req = v1::CreateRequest {
        spec_toml: tiny_spec(key),
        file_name: format!("{key}.toml"),
        idempotency_key: key.to_owned(),
    };
    let resp = client
        .call(|ch| {
            let req = req.clone();
            async move {
                let mut r = tonic::Request::new(req);
                r.set_timeout(Duration::from_secs(5));
                ReleasesClient::new(ch).create(r).await.map(|r| r.into_inner())
            }
        })
        .await?;
    Ok(resp.release.map(|r| r.id).unwrap_or_default())
}

/// Adds `text` as a note to release `id` through `client` (`Releases.Annotate`).
pub async fn note_via(client: &LeaderClient, id: &str, text: &str) -> anyhow::Result<()> {
    let req = v1::AnnotateRequest { release_id: id.to_owned(), text: text.to_owned() };
    client
        .call(|ch| {
            let req = req.clone();
            async move {
                let mut r = tonic::Request::new(req);
                r.set_timeout(Duration::from_secs(5));
                ReleasesClient::new(ch).annotate(r).await.map(|r| r.into_inner())
            }
        })
        .await?;
    Ok(())
}

/// A cluster of coordinator processes in a temporary directory.
#[derive(Debug)]
pub struct TestCluster {
    dir: tempfile::TempDir,
    opts: ClusterOptions,
    ca: Option<TestCa>,
    client: ClientSecurity,
    /// The certificate files of the harness's client (operator `client`), in TLS mode.
    operator_tls: Option<TlsPaths>,
    /// The certificate files of the harness's HTTP client, in TLS mode.
    client_tls: Option<TlsPaths>,
    leader: LeaderClient,
    /// The nodes by id.
    pub nodes: BTreeMap<u64, Coordinator>,
    /// The stand-in host's task ([`host`]), when started inside a tokio runtime.
    host: Option<tokio::task::AbortHandle>,
}

impl TestCluster {
    /// Starts `n` coordinators that bootstrap one cluster.
    pub fn start(n: u64, opts: ClusterOptions) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let ca = if opts.tls { Some(TestCa::new(&dir.path().join("pki"), "flotilla")?) } else { None };
        let operator_tls = ca.as_ref().map(|ca| ca.issue(Role::Operator, "client")).transpose()?;
        let client = operator_tls.as_ref().map_or(ClientSecurity::Insecure, TlsPaths::security);
        let client_tls = ca.as_ref().map(|ca| ca.issue(Role::Operator, "http-client")).transpose()?;
        // The stand-in host dials as the agent of exactly the host id it registers.
        let host_security = match &ca {
            Some(ca) => ca.issue(Role::Agent, host::TEST_HOST)?.security(),
            None => ClientSecurity::Insecure,
        };
        let addrs: Vec<(u64, String)> = (1..=n).map(|id| (id, format!("127.0.0.1:{}", free_port()))).collect();
        let bootstrap = addrs.iter().map(|(id, a)| format!("{id}={a}")).collect::<Vec<_>>().join(",");
        let leader = LeaderClient::new(addrs.iter().map(|(_, a)| a.clone()).collect(), client.clone());
        // Releases are planned against the live fleet: one stand-in host registers.
        let host = tokio::runtime::Handle::try_current().ok().map(|rt| {
            rt.spawn(host::run(addrs.iter().map(|(_, a)| a.clone()).collect(), host_security)).abort_handle()
        });
        let mut cluster =
            Self { dir, opts, ca, client, operator_tls, client_tls, leader, nodes: BTreeMap::new(), host };
        for (id, addr) in addrs {
            cluster.add_process(id, addr, bootstrap.clone())?;
        }
        Ok(cluster)
    }

    /// The temporary directory everything lives in.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The certificate authority, in TLS mode.
    pub fn ca(&self) -> Option<&TestCa> {
        self.ca.as_ref()
    }

    /// How the harness's client connects.
    pub fn client_security(&self) -> &ClientSecurity {
        &self.client
    }

    /// The TLS files of the harness's client, operator `client`, in TLS mode: for the
    /// `flotilla` CLI (`--tls-ca`, `--tls-cert`, `--tls-key`).
    pub fn operator_tls(&self) -> Option<TlsPaths> {
        self.operator_tls.clone()
    }

    /// Starts a new coordinator process `id` (without bootstrap: it waits to be added).
    pub fn start_joiner(&mut self, id: u64) -> anyhow::Result<String> {
        let addr = format!("127.0.0.1:{}", free_port());
        self.add_process(id, addr.clone(), String::new())?;
        Ok(addr)
    }

    /// Starts a new coordinator process `id` with its own `--bootstrap` list: the
    /// cluster's members and itself, a list the running members were not started with
    /// (an operator's mistake the cluster must refuse).
    pub fn start_with_other_bootstrap(&mut self, id: u64) -> anyhow::Result<String> {
        let addr = format!("127.0.0.1:{}", free_port());
        let mut members: Vec<String> = self.nodes.values().map(|n| format!("{}={}", n.id, n.addr)).collect();
        members.push(format!("{id}={addr}"));
        self.add_process(id, addr.clone(), members.join(","))?;
        Ok(addr)
    }

    /// Whether node `id`'s process is still running (it has not exited on its own).
    pub fn is_running(&mut self, id: u64) -> bool {
        self.nodes.get_mut(&id).and_then(|n| n.child.as_mut()).is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    fn add_process(&mut self, id: u64, addr: String, bootstrap: String) -> anyhow::Result<()> {
        let data_dir = self.dir.path().join(format!("node-{id}"));
        let log = self.dir.path().join(format!("node-{id}.log"));
        let http = self.opts.http.then(|| format!("127.0.0.1:{}", free_port()));
        let tls = self.ca.as_ref().map(|ca| ca.issue(Role::Coordinator, &id.to_string())).transpose()?;
        let mut node = Coordinator { id, addr, http, data_dir, log, bootstrap, tls, child: None };
        self.spawn(&mut node)?;
        self.nodes.insert(id, node);
        Ok(())
    }

    /// The `flotilla-coordinator` command line the harness runs `node` with.
    fn command(&self, node: &Coordinator) -> anyhow::Result<Command> {
        let mut cmd = Command::new(binary("flotilla-coordinator"));
        cmd.arg("--node-id")
            .arg(node.id.to_string())
            .arg("--data-dir")
            .arg(&node.data_dir)
            .arg("--listen")
            .arg(&node.addr)
            .arg("--snapshot-logs")
            .arg(self.opts.snapshot_logs.to_string())
            .arg("--keep-logs")
            .arg(self.opts.keep_logs.to_string());
        if !node.bootstrap.is_empty() {
            cmd.arg("--bootstrap").arg(&node.bootstrap);
        }
        if let Some(http) = &node.http {
            cmd.arg("--http").arg(http);
        }
        cmd.args(&self.opts.args);
        match &node.tls {
            Some(paths) => {
                cmd.arg("--tls-ca").arg(&paths.ca).arg("--tls-cert").arg(&paths.cert).arg("--tls-key").arg(&paths.key);
                if let (Some(ttl), Some(ca)) = (self.opts.agent_cert_ttl_ms, &self.ca) {
                    cmd.arg("--tls-ca-key").arg(ca.key_file()).arg("--agent-cert-ttl-ms").arg(ttl.to_string());
                }
            }
            None => {
                cmd.arg("--insecure");
            }
        }
        Ok(cmd)
    }

    fn spawn(&self, node: &mut Coordinator) -> anyhow::Result<()> {
        let mut cmd = self.command(node)?;
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&node.log)?;
        cmd.stdin(Stdio::null()).stdout(log.try_clone()?).stderr(log).env("FLOTILLA_LOG", "info,openraft=warn");
        node.child = Some(cmd.spawn().context("starting flotilla-coordinator")?);
        Ok(())
    }

    /// Runs `flotilla-coordinator` with node `id`'s flags (its config, as the harness
    /// starts it) followed by `args`, e.g. `snapshot save FILE`; returns its output.
    pub fn run_tool(&self, id: u64, args: &[&str]) -> anyhow::Result<std::process::Output> {
        let node = self.nodes.get(&id).ok_or_else(|| anyhow!("no node {id}"))?;
        let mut cmd = self.command(node)?;
        Ok(cmd.args(args).stdin(Stdio::null()).output()?)
    }

    /// Deletes the data directory of stopped node `id` (a lost disk).
    pub fn wipe(&mut self, id: u64) -> anyhow::Result<()> {
        let node = self.nodes.get(&id).ok_or_else(|| anyhow!("no node {id}"))?;
        if node.child.is_some() {
            bail!("node {id} is running; stop it before wiping its data");
        }
        if node.data_dir.exists() {
            std::fs::remove_dir_all(&node.data_dir)?;
        }
        Ok(())
    }

    /// `kill -9` a node.
    pub fn kill9(&mut self, id: u64) {
        if let Some(mut child) = self.nodes.get_mut(&id).and_then(|n| n.child.take()) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// `kill -9` a node without waiting for it (usable while the cluster is shared);
    /// [`TestCluster::kill9`] or [`TestCluster::restart`] reaps it later.
    pub fn kill9_shared(&self, id: u64) {
        if let Some(child) = self.nodes.get(&id).and_then(|n| n.child.as_ref()) {
            let _ = Command::new("kill").args(["-KILL", &child.id().to_string()]).status();
        }
    }

    /// SIGTERM a node without waiting for it (its graceful stop runs while the caller
    /// watches the cluster); [`TestCluster::wait_exited`] reaps it.
    pub fn sigterm(&self, id: u64) {
        if let Some(child) = self.nodes.get(&id).and_then(|n| n.child.as_ref()) {
            let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap_or(i32::MAX));
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        }
    }

    /// Waits up to `timeout` for a signalled node to exit and reaps it; returns its exit
    /// code. A node still running then is killed and the call fails.
    pub async fn wait_exited(&mut self, id: u64, timeout: Duration) -> anyhow::Result<Option<i32>> {
        let node = self.nodes.get_mut(&id).ok_or_else(|| anyhow!("no node {id}"))?;
        let Some(mut child) = node.child.take() else { bail!("node {id} is not running") };
        match wait_for_exit(&mut child, timeout).await? {
            Some(status) => Ok(status.code()),
            None => bail!("node {id} was still running {timeout:?} after SIGTERM (killed)"),
        }
    }

    /// SIGTERM a node and wait for it to exit; returns its exit status code.
    pub fn terminate(&mut self, id: u64) -> Option<i32> {
        let mut child = self.nodes.get_mut(&id).and_then(|n| n.child.take())?;
        let pid = child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        child.wait().ok().and_then(|s| s.code())
    }

    /// Restarts a stopped node with the same data dir and flags.
    pub fn restart(&mut self, id: u64) -> anyhow::Result<()> {
        self.kill9(id);
        let mut node = self.nodes.remove(&id).ok_or_else(|| anyhow!("no node {id}"))?;
        let spawned = self.spawn(&mut node);
        self.nodes.insert(id, node);
        spawned
    }

    /// The process ids of running nodes.
    pub fn pids(&self) -> Vec<u32> {
        self.nodes.values().filter_map(|n| n.child.as_ref().map(Child::id)).collect()
    }

    /// The addresses of running nodes.
    pub fn live_addrs(&self) -> Vec<String> {
        self.nodes.values().filter(|n| n.child.is_some()).map(|n| n.addr.clone()).collect()
    }

    /// A node's log, for failure messages.
    pub fn log_of(&self, id: u64) -> String {
        self.nodes.get(&id).and_then(|n| std::fs::read_to_string(&n.log).ok()).unwrap_or_default()
    }

    /// The URL of `path` on node `id`'s `--http` listener (`https` in TLS mode), when
    /// the cluster was started with [`ClusterOptions::http`].
    pub fn http_url(&self, id: u64, path: &str) -> Option<String> {
        let addr = self.nodes.get(&id)?.http.as_ref()?;
        let scheme = if self.ca.is_some() { "https" } else { "http" };
        Some(format!("{scheme}://{addr}{path}"))
    }

    /// An HTTP client for the nodes' `--http` listeners: in TLS mode it trusts only the
    /// cluster's CA and presents a certificate the CA issued.
    pub fn http_client(&self) -> anyhow::Result<reqwest::Client> {
        http_client(self.client_tls.as_ref())
    }

    /// `GET` `path` from node `id`'s `--http` listener with [`TestCluster::http_client`]:
    /// the status code and the body.
    pub async fn http_get(&self, id: u64, path: &str) -> anyhow::Result<(u16, String)> {
        let url = self.http_url(id, path).ok_or_else(|| anyhow!("node {id} has no --http address"))?;
        http_get(&self.http_client()?, &url).await
    }

    /// The cluster status as node `id` sees it.
    pub async fn status_of(&self, id: u64) -> Option<v1::ClusterStatus> {
        let addr = &self.nodes.get(&id)?.addr;
        let mut client = ClusterClient::new(channel(addr, &self.client).ok()?);
        let mut req = tonic::Request::new(v1::StatusRequest { local: true });
        req.set_timeout(Duration::from_secs(2));
        client.status(req).await.ok()?.into_inner().status
    }

    /// Waits until every running node agrees on one leader among the running nodes.
    pub async fn wait_leader(&self, timeout: Duration) -> anyhow::Result<u64> {
        let leader = self.agreed_leader(timeout).await?;
        if self.host.is_some() {
            self.wait_host(timeout).await?;
        }
        Ok(leader)
    }

    /// Waits until the stand-in host ([`host::TEST_HOST`]) is registered and online in
    /// the leader's state, so that releases can be planned.
    pub async fn wait_host(&self, timeout: Duration) -> anyhow::Result<()> {
        eventually(timeout, "the stand-in host registered", || async {
            let listed = self
                .leader
                .call(|ch| async move {
                    v1::fleet_client::FleetClient::new(ch)
                        .list_agents(v1::ListAgentsRequest::default())
                        .await
                        .map(|r| r.into_inner())
                })
                .await
                .ok()?;
            listed.hosts.iter().any(|h| h.host_id == host::TEST_HOST).then_some(())
        })
        .await
    }

    async fn agreed_leader(&self, timeout: Duration) -> anyhow::Result<u64> {
        eventually(timeout, "an agreed leader", || async {
            let mut leader = None;
            for (&id, n) in &self.nodes {
                if n.child.is_none() {
                    continue;
                }
                let s = self.status_of(id).await?;
                if s.leader_id == 0 || leader.is_some_and(|l| l != s.leader_id) {
                    return None;
                }
                leader = Some(s.leader_id);
            }
            leader.filter(|l| self.nodes.get(l).is_some_and(|n| n.child.is_some()))
        })
        .await
    }

    /// Waits until node `id` has applied at least `index`.
    pub async fn wait_applied(&self, id: u64, index: u64, timeout: Duration) -> anyhow::Result<()> {
        eventually(timeout, &format!("node {id} to apply index {index}"), || async {
            let s = self.status_of(id).await?;
            let me = s.members.iter().find(|m| m.node_id == id)?;
            (me.applied_index? >= index).then_some(())
        })
        .await
    }

    /// The state of node `id` as it reports it.
    pub async fn raft_state(&self, id: u64) -> Option<RaftState> {
        let s = self.status_of(id).await?;
        let me = s.members.iter().find(|m| m.node_id == id)?;
        RaftState::try_from(me.state).ok()
    }

    /// Submits a minimal release to the leader (following hints from any bootstrap
    /// node), with `key` as idempotency key; returns the release id.
    pub async fn write(&self, key: &str) -> anyhow::Result<String> {
        write_via(&self.leader, key).await
    }

    /// Adds `text` as a note to release `id` (`Releases.Annotate`): the smallest entry a
    /// client can have replicated.
    pub async fn note(&self, id: &str, text: &str) -> anyhow::Result<()> {
        note_via(&self.leader, id, text).await
    }

    /// A client of this cluster with connections of its own (the harness's calls share
    /// one HTTP/2 connection per coordinator; a load generator spreads its writers over
    /// several, as a pool of real clients would).
    pub fn new_client(&self) -> LeaderClient {
        LeaderClient::new(self.nodes.values().map(|n| n.addr.clone()).collect(), self.client.clone())
    }

    /// The first listing of release ids that succeeds within `timeout`. Failed calls
    /// (no leader yet, a read that could not be served) are retried; a listing that
    /// succeeds is returned as it is, never retried for its content, so callers can
    /// check that a linearizable read is fresh.
    pub async fn first_listing(&self, timeout: Duration) -> anyhow::Result<Vec<String>> {
        eventually(timeout, "a listing that succeeds", || async { self.release_ids().await.ok() }).await
    }

    /// Every release id the cluster lists (a linearizable read on the leader).
    pub async fn release_ids(&self) -> anyhow::Result<Vec<String>> {
        let mut ids = Vec::new();
        let mut token = String::new();
        loop {
            let req = v1::ListRequest { page_size: 1_000, page_token: token.clone(), ..Default::default() };
            let resp = self
                .leader
                .call(|ch| {
                    let req = req.clone();
                    async move { ReleasesClient::new(ch).list(req).await.map(|r| r.into_inner()) }
                })
                .await?;
            ids.extend(resp.releases.into_iter().map(|r| r.id));
            if resp.next_page_token.is_empty() {
                return Ok(ids);
            }
            token = resp.next_page_token;
        }
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        if let Some(host) = self.host.take() {
            host.abort();
        }
        let ids: Vec<u64> = self.nodes.keys().copied().collect();
        for id in ids {
            self.kill9(id);
        }
    }
}

/// An HTTP client (rustls) with short timeouts. With `tls`, it trusts only that CA and
/// presents that certificate; without, it speaks plaintext.
pub fn http_client(tls: Option<&TlsPaths>) -> anyhow::Result<reqwest::Client> {
    let mut builder = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(5));
    if let Some(tls) = tls {
        let ca = std::fs::read(&tls.ca).with_context(|| format!("reading {}", tls.ca.display()))?;
        let mut identity = std::fs::read(&tls.cert).with_context(|| format!("reading {}", tls.cert.display()))?;
        identity.extend(std::fs::read(&tls.key).with_context(|| format!("reading {}", tls.key.display()))?);
        builder = builder
            .add_root_certificate(reqwest::Certificate::from_pem(&ca)?)
            .identity(reqwest::Identity::from_pem(&identity)?);
    }
    Ok(builder.build()?)
}

/// `GET` `url`: the status code and the body.
pub async fn http_get(client: &reqwest::Client, url: &str) -> anyhow::Result<(u16, String)> {
    let resp = client.get(url).send().await?;
    let status = resp.status().as_u16();
    Ok((status, resp.text().await?))
}

/// Asserts that `result` is a refusal with `code` and the `ErrorInfo` `reason`;
/// returns its message.
#[track_caller]
pub fn refused<T: std::fmt::Debug>(
    result: Result<T, tonic::Status>,
    code: tonic::Code,
    reason: flotilla_proto::status::Reason,
) -> String {
    let status = result.expect_err("the call must be refused");
    assert_eq!(status.code(), code, "{status:?}");
    let info = flotilla_proto::status::error_info(&status).unwrap_or_else(|| panic!("no ErrorInfo in {status:?}"));
    assert_eq!(info.reason, reason.as_str(), "{status:?}");
    status.message().to_owned()
}

/// The smallest valid release spec, named after `key`.
pub fn tiny_spec(key: &str) -> String {
    let name: String =
        key.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '-' }).take(63).collect();
    format!(
        "release = \"{name}\"\n\n[[service]]\nname = \"svc\"\nversion = \"1.0.0\"\nartifact = {{ url = \"file:///a.tgz\", sha256 = \"{}\" }}\nrun = {{ command = \"bin/svc\" }}\n",
        "0".repeat(64)
    )
}

pub mod chaos;
pub mod compose;
pub mod fleet;
pub mod host;
pub mod prometheus;
