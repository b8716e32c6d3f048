//! Harness for release tests with real processes: `flotilla-coordinator`s with short
//! agent leases, `flotilla-agent`s with host ids, labels and data dirs (killed with
//! SIGKILL and restarted on the same data), the six-service sample app packaged into
//! real artifacts and its release specs, and readers for what happened: the release and
//! its events over gRPC, the fleet inventory, the agents' journals and logs, and the
//! sample processes running on each host.
//!
//! Tests using a [`TestFleet`] run one at a time within a test process (each starts a
//! dozen processes and, while it releases, a dozen more sample services). Every wait has
//! a deadline. The sample services keep running when their agent dies (by design);
//! dropping the fleet kills every process whose working directory is under its
//! temporary directory.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail};
use flotilla_net::{ClientSecurity, LeaderClient, channel};
use flotilla_proto::v1::{
    self, cluster_client::ClusterClient, fleet_client::FleetClient, releases_client::ReleasesClient,
};
use flotilla_sample_service::{Behaviour, Package};
use tonic::transport::Channel;

use crate::{binary, eventually, free_port};

/// `--agent-lease-ms` of the coordinators: a killed agent is marked lost this long after
/// its last message.
pub const AGENT_LEASE_MS: u64 = 3_000;

/// `--agent-heartbeat-ms` of the coordinators.
pub const AGENT_HEARTBEAT_MS: u64 = 500;

/// How long one gRPC call may take.
const RPC_TIMEOUT: Duration = Duration::from_secs(3);

/// Serializes the fleets of one test process.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

// ------------------------------------------------------------------ the sample app

pub use flotilla_sample_service::APP;

/// The app's ordering edges as (dependency, dependent, kind), the contract edge included.
pub const EDGES: &[(&str, &str, &str)] = &[
    ("db", "ledger", "data"),
    ("ledger", "payments", "hard"),
    ("auth", "payments", "contract"),
    ("payments", "web", "config"),
    ("search", "web", "soft"),
];

/// The services hosts of `role` run.
pub fn services_of_role(role: &str) -> Vec<&'static str> {
    APP.iter().filter(|(_, r, _)| *r == role).map(|(n, _, _)| *n).collect()
}

/// A host to run an agent for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostSpec {
    /// Its host id.
    pub id: String,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
}

impl HostSpec {
    /// The value of label `key`, or "".
    pub fn label(&self, key: &str) -> &str {
        self.labels.get(key).map_or("", String::as_str)
    }
}

/// `n` hosts `host-1..host-n` for the app: roles db, api, web in turn; the first three
/// are `cell = "canary"`, the others `cell = "main"`.
pub fn shop_hosts(n: usize) -> Vec<HostSpec> {
    (1..=n)
        .map(|i| {
            let role = ["db", "api", "web"][(i - 1) % 3];
            let cell = if i <= 3 { "canary" } else { "main" };
            HostSpec {
                id: format!("host-{i}"),
                labels: [("role".to_owned(), role.to_owned()), ("cell".to_owned(), cell.to_owned())].into(),
            }
        })
        .collect()
}

/// The target directory of this test build (`target/<profile>`).
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test knows its path");
    exe.parent().and_then(Path::parent).expect("a target dir").to_path_buf()
}

/// The sample service binary, built once per test process (and reused across runs
/// while newer than its sources).
pub fn sample_binary() -> anyhow::Result<PathBuf> {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    if let Some(p) = BIN.get() {
        return Ok(p.clone());
    }
    let built = flotilla_sample_service::build_binary(&profile_dir().join("flotilla-tests-fleet").join("sample-bin"))
        .context("building the sample service")?;
    Ok(BIN.get_or_init(|| built).clone())
}

/// This test process's artifact directory; directories of test processes that ended are
/// removed on first use.
fn artifacts_dir() -> anyhow::Result<PathBuf> {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    if let Some(d) = DIR.get() {
        return Ok(d.clone());
    }
    let root = profile_dir().join("flotilla-tests-fleet").join("artifacts");
    if let Ok(entries) = std::fs::read_dir(&root) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let ended = name.strip_prefix("pid-").is_some_and(|pid| !Path::new("/proc").join(pid).exists());
            if ended {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
    let dir = root.join(format!("pid-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    Ok(DIR.get_or_init(|| dir).clone())
}

/// The artifact of `service` at `version` behaving as `behaviour`, packaged once per test
/// process.
pub fn artifact(service: &str, version: &str, behaviour: &Behaviour) -> anyhow::Result<Package> {
    static CACHE: Mutex<BTreeMap<(String, String, String), Package>> = Mutex::new(BTreeMap::new());
    let key = (service.to_owned(), version.to_owned(), behaviour.to_toml());
    let mut cache = CACHE.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(p) = cache.get(&key) {
        return Ok(p.clone());
    }
    let dir = artifacts_dir()?.join(format!("{service}-{version}-{}", cache.len()));
    let pkg = flotilla_sample_service::package(&dir, &sample_binary()?, version, behaviour)
        .with_context(|| format!("packaging {service} {version}"))?;
    cache.insert(key, pkg.clone());
    Ok(pkg)
}

/// A release spec of the app at one version.
#[derive(Debug, Clone)]
pub struct AppSpec {
    major: u32,
    staged: bool,
    canary_approval: bool,
    defaults: BTreeMap<String, String>,
    service_keys: BTreeMap<String, BTreeMap<String, String>>,
    behaviours: BTreeMap<String, Behaviour>,
}

impl AppSpec {
    /// Version `major`.0.0 on every host at once: one stage, no canary, no bake (how a
    /// test installs the version it starts from).
    pub fn install(major: u32) -> Self {
        let defaults = [
            ("canary", "0"),
            ("batches", r#"["100%"]"#),
            ("bake", r#""0s""#),
            ("healthy_for", r#""500ms""#),
            ("healthy_deadline", r#""20s""#),
            ("progress_deadline", r#""60s""#),
        ];
        Self {
            major,
            staged: false,
            canary_approval: false,
            defaults: defaults.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(),
            service_keys: BTreeMap::new(),
            behaviours: BTreeMap::new(),
        }
    }

    /// Version `major`.0.0 in two stages (`canary`: hosts with `cell = "canary"`, then
    /// `main`: the rest), each service with a canary host, then the rest, a 1 s bake after
    /// each batch, and the gate `smoke` (an exec on a web host) after `payments`, which
    /// `web` waits for. Failures roll back with scope cascade.
    pub fn staged(major: u32) -> Self {
        let mut spec = Self::install(major);
        spec.staged = true;
        for (k, v) in [
            ("canary", "1"),
            ("bake", r#""1s""#),
            ("healthy_deadline", r#""5s""#),
            ("rollback_scope", r#""cascade""#),
            ("on_failure", r#""rollback""#),
            ("max_failed", "0"),
        ] {
            spec.defaults.insert(k.to_owned(), v.to_owned());
        }
        spec
    }

    /// Sets a `[defaults]` key (`value` is TOML: `"2s"` with its quotes, `1`).
    #[must_use]
    pub fn default_key(mut self, key: &str, value: &str) -> Self {
        self.defaults.insert(key.to_owned(), value.to_owned());
        self
    }

    /// Sets a key of one service (`value` is TOML).
    #[must_use]
    pub fn service_key(mut self, service: &str, key: &str, value: &str) -> Self {
        self.service_keys.entry(service.to_owned()).or_default().insert(key.to_owned(), value.to_owned());
        self
    }

    /// Ships `service` with this behaviour (its `version` is set to this spec's).
    #[must_use]
    pub fn behaviour(mut self, service: &str, mut behaviour: Behaviour) -> Self {
        behaviour.version = Some(self.version());
        self.behaviours.insert(service.to_owned(), behaviour);
        self
    }

    /// The `canary` stage waits for an approval before `main` starts.
    #[must_use]
    pub fn canary_approval(mut self) -> Self {
        self.canary_approval = true;
        self
    }

    /// The version every service gets (`2.0.0`).
    pub fn version(&self) -> String {
        format!("{}.0.0", self.major)
    }

    /// The spec's TOML, packaging the artifacts it names.
    pub fn toml(&self) -> anyhow::Result<String> {
        let v = self.version();
        let mut s = String::new();
        let _ = writeln!(s, "release = \"shop-v{}{}\"\n", self.major, if self.staged { "-staged" } else { "" });
        let _ = writeln!(s, "[defaults]");
        for (k, val) in &self.defaults {
            let _ = writeln!(s, "{k} = {val}");
        }
        let _ = writeln!(s);
        if self.staged {
            let _ = writeln!(
                s,
                "[[stage]]\nname = \"canary\"\nhosts = {{ cell = \"canary\" }}\napproval = {}\n\n[[stage]]\nname = \"main\"\n",
                self.canary_approval
            );
            let _ = writeln!(
                s,
                "[[gate]]\nname = \"smoke\"\nafter = [\"payments\"]\nexec = {{ command = \"echo smoke test passed\", on = {{ role = \"web\" }}, timeout = \"30s\" }}\n"
            );
        }
        for (name, role, extra) in APP {
            let behaviour = self.behaviours.get(*name).cloned().unwrap_or_else(|| Behaviour::healthy(&v));
            let pkg = artifact(name, &v, &behaviour)?;
            let _ = writeln!(s, "[[service]]\nname = \"{name}\"\nversion = \"{v}\"\nhosts = {{ role = \"{role}\" }}");
            let _ = writeln!(s, "artifact = {{ url = \"{}\", sha256 = \"{}\" }}", pkg.file_url(), pkg.sha256);
            let _ =
                writeln!(s, "run = {{ command = \"bin/sample\", args = [\"--port\", \"0\"], stop_timeout = \"2s\" }}");
            let _ =
                writeln!(s, "health = [{{ exec = \"bin/sample --check\", interval = \"200ms\", timeout = \"2s\" }}]");
            if !extra.is_empty() {
                let _ = writeln!(s, "{}", extra.replace("{V}", &self.major.to_string()));
            }
            for (k, val) in self.service_keys.get(*name).into_iter().flatten() {
                let _ = writeln!(s, "{k} = {val}");
            }
            let _ = writeln!(s);
        }
        Ok(s)
    }
}

// ------------------------------------------------------------------ processes

#[derive(Debug)]
struct CoordinatorProc {
    addr: String,
    /// Its `--http` address, when the fleet serves HTTP.
    http: Option<String>,
    data_dir: PathBuf,
    log: PathBuf,
    child: Mutex<Option<Child>>,
}

#[derive(Debug)]
struct AgentProc {
    spec: HostSpec,
    data_dir: PathBuf,
    log: PathBuf,
    child: Mutex<Option<Child>>,
    /// The join token it enrols with, in an enrolled fleet.
    join: Option<String>,
}

/// How a test fleet's processes secure their connections.
#[derive(Debug, Clone)]
enum FleetSecurity {
    /// Everything plaintext (`--insecure`).
    Insecure,
    /// Mutual TLS under a cluster CA in `pki`: coordinators hold the CA key and enrol
    /// agents, which join with tokens; the harness and the CLI are operator `admin`.
    Enrolled {
        /// `ca.pem`, `ca.key`, `coordinator-N.*`, `operator-admin.*`.
        pki: PathBuf,
        /// The lifetime of agent certificates.
        agent_cert_ttl: Duration,
    },
}

impl FleetSecurity {
    fn file(pki: &Path, stem: &str, ext: &str) -> PathBuf {
        pki.join(format!("{stem}.{ext}"))
    }

    /// The TLS flags of a process whose files are `ROLE-NAME.*` (none when insecure).
    fn tls_flags(&self, stem: &str) -> Vec<std::ffi::OsString> {
        match self {
            FleetSecurity::Insecure => vec!["--insecure".into()],
            FleetSecurity::Enrolled { pki, .. } => vec![
                "--tls-ca".into(),
                pki.join(flotilla_net::pki::CA_CERT_FILE).into(),
                "--tls-cert".into(),
                Self::file(pki, stem, "pem").into(),
                "--tls-key".into(),
                Self::file(pki, stem, "key").into(),
            ],
        }
    }

    /// How the harness's own client connects.
    fn client(&self) -> anyhow::Result<ClientSecurity> {
        match self {
            FleetSecurity::Insecure => Ok(ClientSecurity::Insecure),
            FleetSecurity::Enrolled { pki, .. } => Ok(ClientSecurity::Tls(flotilla_net::TlsMaterial::from_pem(
                std::fs::read(pki.join(flotilla_net::pki::CA_CERT_FILE))?,
                std::fs::read(Self::file(pki, OPERATOR, "pem"))?,
                std::fs::read(Self::file(pki, OPERATOR, "key"))?,
            )?)),
        }
    }

    /// A CA, a certificate per coordinator (for 127.0.0.1) and the operator's, under `pki`.
    fn make_pki(pki: &Path, coordinators: u64) -> anyhow::Result<()> {
        use flotilla_net::pki::{self, ClusterCa, OperatorRole, Role};
        let ca = ClusterCa::create(crate::TRUST_DOMAIN, pki::CA_LIFETIME)?;
        ca.write(pki)?;
        let loopback = "127.0.0.1".parse()?;
        for id in 1..=coordinators {
            ca.issue(Role::Coordinator, &id.to_string(), std::slice::from_ref(&loopback), pki::COORDINATOR_LIFETIME)?
                .write(pki)?;
        }
        ca.issue_operator("admin", OperatorRole::Admin, pki::OPERATOR_LIFETIME)?.write(pki)?;
        Ok(())
    }
}

/// The file stem of the enrolled fleet's operator.
const OPERATOR: &str = "operator-admin";

/// A `flotilla` CLI process started by [`TestFleet::spawn_cli`]; killed when dropped.
#[derive(Debug)]
pub struct CliProc {
    child: Child,
    stdout: PathBuf,
    stderr: PathBuf,
}

impl CliProc {
    /// What it printed on stdout so far.
    pub fn stdout(&self) -> String {
        std::fs::read_to_string(&self.stdout).unwrap_or_default()
    }

    /// What it printed on stderr so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// Waits up to `within` for it to exit; returns its exit code (killed and an error
    /// if it is still running then).
    pub async fn wait(&mut self, within: Duration) -> anyhow::Result<Option<i32>> {
        match crate::wait_for_exit(&mut self.child, within).await? {
            Some(status) => Ok(status.code()),
            None => bail!("flotilla was still running after {within:?} (killed); stderr:\n{}", self.stderr()),
        }
    }
}

impl Drop for CliProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// CPU time (user + system) used so far by process `pid` (`self` for this one), from
/// `/proc` (Linux), with the kernel's usual 100 ticks per second.
pub fn cpu_time(pid: &str) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The fields after the command name, which is in parentheses: utime and stime are
    // the 12th and 13th of them.
    let fields: Vec<&str> =
        stat.rsplit_once(')').map(|(_, rest)| rest.split_whitespace().collect()).unwrap_or_default();
    let ticks: u64 = fields.get(11..13).map_or(0, |f| f.iter().filter_map(|v| v.parse::<u64>().ok()).sum());
    Duration::from_millis(ticks * 10)
}

fn kill9(child: &Mutex<Option<Child>>) {
    if let Some(mut c) = child.lock().unwrap_or_else(PoisonError::into_inner).take() {
        let _ = c.kill();
        let _ = c.wait();
    }
}

fn running(child: &Mutex<Option<Child>>) -> bool {
    child.lock().unwrap_or_else(PoisonError::into_inner).is_some()
}

/// What the agents' logs say about steps.
#[derive(Debug, Default, Clone)]
pub struct StepAudit {
    /// Per command id, the host of every execution that started ("executing step"; a
    /// repeat answered from the journal is not an execution).
    pub executed: BTreeMap<String, Vec<String>>,
    /// Per command id, how many times an agent received it ("step received").
    pub received: BTreeMap<String, usize>,
    /// Per command id, the host of every step a restarted agent resolved.
    pub resolved: BTreeMap<String, Vec<String>>,
}

impl StepAudit {
    /// What agents' logs say: `(host, log text)` per agent (a line may carry a prefix,
    /// as `docker-compose logs` adds).
    pub fn from_logs<'a>(logs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        let mut audit = Self::default();
        for (host, log) in logs {
            for line in log.lines() {
                let Some(cid) = log_field(line, "command_id") else { continue };
                if line.contains(" executing step") {
                    audit.executed.entry(cid.to_owned()).or_default().push(host.to_owned());
                } else if line.contains(" step received") {
                    *audit.received.entry(cid.to_owned()).or_default() += 1;
                } else if line.contains("resolved a step interrupted") {
                    audit.resolved.entry(cid.to_owned()).or_default().push(host.to_owned());
                }
            }
        }
        audit
    }

    /// Command ids whose execution started more than once.
    pub fn executed_twice(&self) -> Vec<(&str, &[String])> {
        self.executed.iter().filter(|(_, h)| h.len() > 1).map(|(c, h)| (c.as_str(), h.as_slice())).collect()
    }
}

/// The value of ` name=VALUE` in a tracing log line.
fn log_field<'a>(line: &'a str, name: &str) -> Option<&'a str> {
    let at = line.find(&format!(" {name}="))? + name.len() + 2;
    let rest = &line[at..];
    Some(rest.split_whitespace().next().unwrap_or("").trim_matches('"'))
}

/// Three (or more) coordinators and a set of agents on loopback, in a temporary directory.
#[derive(Debug)]
pub struct TestFleet {
    coordinators: BTreeMap<u64, CoordinatorProc>,
    agents: BTreeMap<String, AgentProc>,
    addrs: Vec<String>,
    client: LeaderClient,
    security: FleetSecurity,
    /// Extra flags every coordinator is started with.
    coordinator_args: Vec<String>,
    dir: Option<tempfile::TempDir>,
    path: PathBuf,
    _serial: tokio::sync::MutexGuard<'static, ()>,
}

impl TestFleet {
    /// Starts `coordinators` coordinators forming one cluster (plaintext, agent lease
    /// [`AGENT_LEASE_MS`]), then one agent per host, and waits until every host is online.
    pub async fn start(coordinators: u64, hosts: &[HostSpec]) -> anyhow::Result<Self> {
        Self::start_with(coordinators, hosts, None, Vec::new()).await
    }

    /// As [`TestFleet::start`], every coordinator started with these extra flags too
    /// (`--prometheus-url URL`).
    pub async fn start_with_args(coordinators: u64, hosts: &[HostSpec], args: &[String]) -> anyhow::Result<Self> {
        Self::start_with(coordinators, hosts, None, args.to_vec()).await
    }

    /// As [`TestFleet::start`], over mutual TLS under a cluster CA the coordinators hold
    /// the key of: each agent enrols with a join token made for its host id and labels
    /// (`flotilla agents token create`, run as operator `admin`), and its certificates
    /// live `agent_cert_ttl`.
    pub async fn start_enrolled(
        coordinators: u64,
        hosts: &[HostSpec],
        agent_cert_ttl: Duration,
    ) -> anyhow::Result<Self> {
        Self::start_with(coordinators, hosts, Some(agent_cert_ttl), Vec::new()).await
    }

    /// As [`TestFleet::start_enrolled`] (agent certificates living an hour), every
    /// coordinator also serving HTTP (`--http`: metrics, probes, the dashboard) on a port
    /// of its own; see [`TestFleet::http_url`].
    pub async fn start_with_dashboard(coordinators: u64, hosts: &[HostSpec]) -> anyhow::Result<Self> {
        Self::start_with_http(coordinators, hosts, Some(Duration::from_secs(3_600)), Vec::new(), true).await
    }

    async fn start_with(
        coordinators: u64,
        hosts: &[HostSpec],
        enrolled: Option<Duration>,
        coordinator_args: Vec<String>,
    ) -> anyhow::Result<Self> {
        Self::start_with_http(coordinators, hosts, enrolled, coordinator_args, false).await
    }

    async fn start_with_http(
        coordinators: u64,
        hosts: &[HostSpec],
        enrolled: Option<Duration>,
        coordinator_args: Vec<String>,
        http: bool,
    ) -> anyhow::Result<Self> {
        let serial = SERIAL.lock().await;
        // Build (or check) the binaries before anything starts.
        tokio::task::spawn_blocking(|| {
            for name in ["flotilla-coordinator", "flotilla-agent", "flotilla"] {
                binary(name);
            }
            sample_binary()
        })
        .await??;
        let dir = tempfile::Builder::new().prefix("flotilla-release-test-").tempdir()?;
        let path = dir.path().to_owned();
        let security = match enrolled {
            None => FleetSecurity::Insecure,
            Some(agent_cert_ttl) => {
                let pki = path.join("pki");
                FleetSecurity::make_pki(&pki, coordinators)?;
                FleetSecurity::Enrolled { pki, agent_cert_ttl }
            }
        };
        let addrs: Vec<String> = (0..coordinators).map(|_| format!("127.0.0.1:{}", free_port())).collect();
        let client = LeaderClient::new(addrs.clone(), security.client()?);
        let mut fleet = Self {
            coordinators: BTreeMap::new(),
            agents: BTreeMap::new(),
            addrs: addrs.clone(),
            client,
            security,
            dir: Some(dir),
            path,
            coordinator_args,
            _serial: serial,
        };
        for (i, addr) in addrs.iter().enumerate() {
            let id = i as u64 + 1;
            let node = CoordinatorProc {
                addr: addr.clone(),
                http: http.then(|| format!("127.0.0.1:{}", free_port())),
                data_dir: fleet.path.join(format!("coordinator-{id}")),
                log: fleet.path.join(format!("coordinator-{id}.log")),
                child: Mutex::new(None),
            };
            fleet.coordinators.insert(id, node);
            fleet.spawn_coordinator(id)?;
        }
        if let Err(e) = fleet.leader(Duration::from_secs(30)).await {
            bail!("{e:#}\n{}", fleet.logs());
        }
        for host in hosts {
            let join = match fleet.security {
                FleetSecurity::Insecure => None,
                FleetSecurity::Enrolled { .. } => Some(fleet.join_token(host).await?),
            };
            let agent = AgentProc {
                spec: host.clone(),
                data_dir: fleet.path.join(format!("agent-{}", host.id)),
                log: fleet.path.join(format!("agent-{}.log", host.id)),
                child: Mutex::new(None),
                join,
            };
            fleet.agents.insert(host.id.clone(), agent);
            fleet.spawn_agent(&host.id)?;
        }
        let ids: Vec<String> = hosts.iter().map(|h| h.id.clone()).collect();
        if let Err(e) = fleet.wait_hosts_state(&ids, v1::HostState::Online, Duration::from_secs(60)).await {
            bail!("{e:#}\n{}", fleet.logs());
        }
        Ok(fleet)
    }

    /// The temporary directory everything lives in.
    pub fn dir(&self) -> &Path {
        &self.path
    }

    /// The coordinators' addresses.
    pub fn addrs(&self) -> &[String] {
        &self.addrs
    }

    /// `path` on coordinator `id`'s HTTP listener (`https://` in an enrolled fleet), if
    /// the fleet serves HTTP.
    pub fn http_url(&self, id: u64, path: &str) -> Option<String> {
        let addr = self.coordinators.get(&id)?.http.as_ref()?;
        let scheme = if matches!(self.security, FleetSecurity::Insecure) { "http" } else { "https" };
        Some(format!("{scheme}://{addr}{path}"))
    }

    /// A client of the coordinators that follows the leader.
    pub fn client(&self) -> &LeaderClient {
        &self.client
    }

    /// How the harness's client connects (operator `admin` in an enrolled fleet).
    pub fn client_security(&self) -> anyhow::Result<ClientSecurity> {
        self.security.client()
    }

    /// The directory of the enrolled fleet's CA and certificates.
    pub fn pki_dir(&self) -> Option<&Path> {
        match &self.security {
            FleetSecurity::Insecure => None,
            FleetSecurity::Enrolled { pki, .. } => Some(pki),
        }
    }

    /// A join token for one host, with its id and labels, made with the CLI.
    async fn join_token(&self, host: &HostSpec) -> anyhow::Result<String> {
        let mut args = vec!["agents".to_owned(), "token".into(), "create".into(), "--ttl".into(), "10m".into()];
        args.extend(["--host-id".to_owned(), host.id.clone()]);
        for (k, v) in &host.labels {
            args.extend(["--label".to_owned(), format!("{k}={v}")]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        Ok(self.cli(&args).await?.trim().to_owned())
    }

    fn spawn_coordinator(&self, id: u64) -> anyhow::Result<()> {
        // Every node gets the whole membership (ids are 1.. in address order).
        let bootstrap =
            self.addrs.iter().enumerate().map(|(i, a)| format!("{}={a}", i + 1)).collect::<Vec<_>>().join(",");
        let node = self.coordinators.get(&id).ok_or_else(|| anyhow!("no coordinator {id}"))?;
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&node.log)?;
        let mut cmd = Command::new(binary("flotilla-coordinator"));
        cmd.arg("--node-id")
            .arg(id.to_string())
            .arg("--data-dir")
            .arg(&node.data_dir)
            .arg("--listen")
            .arg(&node.addr)
            .arg("--bootstrap")
            .arg(bootstrap)
            .args(self.security.tls_flags(&format!("coordinator-{id}")))
            .arg("--agent-lease-ms")
            .arg(AGENT_LEASE_MS.to_string())
            .arg("--agent-heartbeat-ms")
            .arg(AGENT_HEARTBEAT_MS.to_string())
            .args(&self.coordinator_args)
            .args(node.http.iter().flat_map(|addr| ["--http", addr.as_str()]))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .env("FLOTILLA_LOG", "info,openraft=warn");
        if let FleetSecurity::Enrolled { pki, agent_cert_ttl } = &self.security {
            cmd.arg("--tls-ca-key")
                .arg(pki.join(flotilla_net::pki::CA_KEY_FILE))
                .arg("--agent-cert-ttl-ms")
                .arg(agent_cert_ttl.as_millis().to_string());
        }
        *node.child.lock().unwrap_or_else(PoisonError::into_inner) =
            Some(cmd.spawn().context("starting flotilla-coordinator")?);
        Ok(())
    }

    fn spawn_agent(&self, host: &str) -> anyhow::Result<()> {
        let coordinators = self.addrs.join(",");
        let agent = self.agents.get(host).ok_or_else(|| anyhow!("no agent {host}"))?;
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&agent.log)?;
        let mut cmd = Command::new(binary("flotilla-agent"));
        cmd.arg("--host-id").arg(host).arg("--coordinators").arg(coordinators).arg("--data-dir").arg(&agent.data_dir);
        match &agent.join {
            // Ignored by an agent that enrolled already.
            Some(token) => cmd.env("FLOTILLA_JOIN_TOKEN", token),
            None => cmd.arg("--insecure"),
        };
        for (k, v) in &agent.spec.labels {
            cmd.arg("--label").arg(format!("{k}={v}"));
        }
        cmd.stdin(Stdio::null()).stdout(log.try_clone()?).stderr(log).env("RUST_LOG", "info");
        *agent.child.lock().unwrap_or_else(PoisonError::into_inner) =
            Some(cmd.spawn().context("starting flotilla-agent")?);
        Ok(())
    }

    // -------------------------------------------------------------- coordinators

    async fn status_of(&self, id: u64) -> Option<v1::ClusterStatus> {
        let node = self.coordinators.get(&id)?;
        if !running(&node.child) {
            return None;
        }
        let mut client = ClusterClient::new(channel(&node.addr, &self.security.client().ok()?).ok()?);
        let mut req = tonic::Request::new(v1::StatusRequest { local: true });
        req.set_timeout(Duration::from_secs(2));
        client.status(req).await.ok()?.into_inner().status
    }

    /// Waits until every running coordinator agrees on one running leader; returns it.
    pub async fn leader(&self, timeout: Duration) -> anyhow::Result<u64> {
        eventually(timeout, "an agreed leader among the running coordinators", || async {
            let mut leader = None;
            for (&id, n) in &self.coordinators {
                if !running(&n.child) {
                    continue;
                }
                let s = self.status_of(id).await?;
                if s.leader_id == 0 || leader.is_some_and(|l| l != s.leader_id) {
                    return None;
                }
                leader = Some(s.leader_id);
            }
            leader.filter(|l| self.coordinators.get(l).is_some_and(|n| running(&n.child)))
        })
        .await
    }

    /// `kill -9` of coordinator `id`.
    pub fn kill9_coordinator(&self, id: u64) {
        if let Some(n) = self.coordinators.get(&id) {
            kill9(&n.child);
        }
    }

    /// `kill -9` of the current leader (the one the coordinators agree on); returns its id.
    pub async fn kill9_leader(&self) -> anyhow::Result<u64> {
        let leader = self.leader(Duration::from_secs(10)).await?;
        self.kill9_coordinator(leader);
        Ok(leader)
    }

    /// SIGTERM of coordinator `id`; waits up to `within` for it to exit and returns how
    /// long it took and its exit code. A coordinator still running then is killed and
    /// the call fails.
    pub async fn terminate_coordinator(&self, id: u64, within: Duration) -> anyhow::Result<(Duration, Option<i32>)> {
        let node = self.coordinators.get(&id).ok_or_else(|| anyhow!("no coordinator {id}"))?;
        let child = node.child.lock().unwrap_or_else(PoisonError::into_inner).take();
        let Some(mut child) = child else { bail!("coordinator {id} is not running") };
        let sent = Instant::now();
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::Signal::SIGTERM)
            .context("sending SIGTERM")?;
        match crate::wait_for_exit(&mut child, within).await? {
            Some(status) => Ok((sent.elapsed(), status.code())),
            None => bail!("coordinator {id} was still running {within:?} after SIGTERM (killed)"),
        }
    }

    /// The process ids of the running coordinators.
    pub fn coordinator_pids(&self) -> Vec<u32> {
        self.coordinators
            .values()
            .filter_map(|n| n.child.lock().unwrap_or_else(PoisonError::into_inner).as_ref().map(Child::id))
            .collect()
    }

    /// Sends SIGHUP to every running coordinator: they reload their certificates.
    pub fn sighup_coordinators(&self) -> anyhow::Result<()> {
        for node in self.coordinators.values() {
            if let Some(child) = node.child.lock().unwrap_or_else(PoisonError::into_inner).as_ref() {
                let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id())?);
                nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGHUP).context("sending SIGHUP")?;
            }
        }
        Ok(())
    }

    /// The log of coordinator `id` so far.
    pub fn coordinator_log(&self, id: u64) -> String {
        self.coordinators.get(&id).map(|n| std::fs::read_to_string(&n.log).unwrap_or_default()).unwrap_or_default()
    }

    /// The address of coordinator `id`.
    pub fn coordinator_addr(&self, id: u64) -> Option<&str> {
        self.coordinators.get(&id).map(|n| n.addr.as_str())
    }

    /// Starts the `flotilla` CLI with `args` against the coordinators listed in
    /// `addrs` order (the first is the one a call goes to first), its stdout and stderr
    /// in files under the test directory named after `name`.
    pub fn spawn_cli(&self, name: &str, addrs: &[&str], args: &[&str]) -> anyhow::Result<CliProc> {
        let stdout = self.path.join(format!("{name}.out"));
        let stderr = self.path.join(format!("{name}.err"));
        let child = Command::new(binary("flotilla"))
            .arg("--coordinators")
            .arg(addrs.join(","))
            .args(self.security.tls_flags(OPERATOR))
            .args(args)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&stdout)?)
            .stderr(std::fs::File::create(&stderr)?)
            .spawn()
            .context("starting flotilla")?;
        Ok(CliProc { child, stdout, stderr })
    }

    /// Restarts a killed coordinator on its data.
    pub fn restart_coordinator(&self, id: u64) -> anyhow::Result<()> {
        self.kill9_coordinator(id);
        self.spawn_coordinator(id)
    }

    // -------------------------------------------------------------- agents

    /// `kill -9` of `host`'s agent (its services keep running).
    pub fn kill9_agent(&self, host: &str) {
        if let Some(a) = self.agents.get(host) {
            kill9(&a.child);
        }
    }

    /// Restarts `host`'s agent on the same data dir and flags.
    pub fn restart_agent(&self, host: &str) -> anyhow::Result<()> {
        self.kill9_agent(host);
        self.spawn_agent(host)
    }

    /// Sends SIGHUP to `host`'s agent: it reloads its certificate files.
    pub fn sighup_agent(&self, host: &str) -> anyhow::Result<()> {
        let agent = self.agents.get(host).ok_or_else(|| anyhow!("no agent {host}"))?;
        let child = agent.child.lock().unwrap_or_else(PoisonError::into_inner);
        let child = child.as_ref().ok_or_else(|| anyhow!("agent {host} is not running"))?;
        let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id())?);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGHUP).context("sending SIGHUP")?;
        Ok(())
    }

    /// `host`'s agent data directory.
    pub fn agent_data_dir(&self, host: &str) -> PathBuf {
        self.agents.get(host).map(|a| a.data_dir.clone()).unwrap_or_default()
    }

    /// `host`'s agent log (every run of it).
    pub fn agent_log(&self, host: &str) -> String {
        self.agents.get(host).and_then(|a| std::fs::read_to_string(&a.log).ok()).unwrap_or_default()
    }

    /// Every journal record of `host`'s agent, as JSON.
    pub fn journal(&self, host: &str) -> Vec<serde_json::Value> {
        let dir = self.agent_data_dir(host).join("journal");
        let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
        entries
            .flatten()
            .filter(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                (name.starts_with("c-") || name.starts_with("h-")) && name.ends_with(".json")
            })
            .filter_map(|e| std::fs::read(e.path()).ok())
            .filter_map(|bytes| serde_json::from_slice(&bytes).ok())
            .collect()
    }

    /// What every agent's log says about steps.
    pub fn step_audit(&self) -> StepAudit {
        let logs: Vec<(String, String)> = self.agents.keys().map(|h| (h.clone(), self.agent_log(h))).collect();
        StepAudit::from_logs(logs.iter().map(|(h, l)| (h.as_str(), l.as_str())))
    }

    /// The sample server processes running `service` on `host` (not health checks): pid
    /// and the version directory each runs from.
    pub fn service_processes(&self, host: &str, service: &str) -> Vec<(i32, String)> {
        let releases = self.agent_data_dir(host).join("services").join(service).join("releases");
        let mut out = Vec::new();
        let Ok(entries) = std::fs::read_dir("/proc") else { return out };
        for e in entries.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|p| p.parse::<i32>().ok()) else { continue };
            let Ok(cwd) = std::fs::read_link(e.path().join("cwd")) else { continue };
            let Ok(rest) = cwd.strip_prefix(&releases) else { continue };
            let cmdline = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
            let args: Vec<String> =
                cmdline.split(|b| *b == 0).map(|a| String::from_utf8_lossy(a).into_owned()).collect();
            let server =
                args.first().is_some_and(|a| a.ends_with("bin/sample")) && !args.iter().any(|a| a == "--check");
            if server && let Some(version) = rest.components().next() {
                out.push((pid, version.as_os_str().to_string_lossy().into_owned()));
            }
        }
        out.sort();
        out
    }

    /// The version `host`'s `current` symlink of `service` points at.
    pub fn current_version(&self, host: &str, service: &str) -> Option<String> {
        let link = self.agent_data_dir(host).join("services").join(service).join("current");
        let target = std::fs::read_link(link).ok()?;
        target.file_name().map(|n| n.to_string_lossy().into_owned())
    }

    // -------------------------------------------------------------- gRPC

    async fn rpc<T, F, Fut>(&self, call: F) -> anyhow::Result<T>
    where
        F: FnMut(Channel) -> Fut,
        Fut: Future<Output = Result<T, tonic::Status>>,
    {
        self.client.call(call).await.map_err(|e| anyhow!("{e}"))
    }

    /// Submits a spec; returns the release id.
    pub async fn submit(&self, file_name: &str, spec_toml: &str) -> anyhow::Result<String> {
        static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let req = v1::CreateRequest {
            spec_toml: spec_toml.to_owned(),
            file_name: file_name.to_owned(),
            idempotency_key: format!("test-{}-{n}", std::process::id()),
        };
        let resp = self
            .rpc(|ch| {
                let mut r = tonic::Request::new(req.clone());
                r.set_timeout(RPC_TIMEOUT);
                async move { ReleasesClient::new(ch).create(r).await.map(tonic::Response::into_inner) }
            })
            .await
            .context("submitting the release")?;
        resp.release.map(|r| r.id).ok_or_else(|| anyhow!("Create answered without a release"))
    }

    /// A release with its full status.
    pub async fn release(&self, id: &str) -> anyhow::Result<v1::Release> {
        let req = v1::GetRequest { release_id: id.to_owned() };
        let resp = self
            .rpc(|ch| {
                let mut r = tonic::Request::new(req.clone());
                r.set_timeout(RPC_TIMEOUT);
                async move { ReleasesClient::new(ch).get(r).await.map(tonic::Response::into_inner) }
            })
            .await?;
        resp.release.ok_or_else(|| anyhow!("Get answered without a release"))
    }

    /// Polls the release until `check` holds.
    pub async fn wait_release<F>(
        &self,
        id: &str,
        what: &str,
        timeout: Duration,
        mut check: F,
    ) -> anyhow::Result<v1::Release>
    where
        F: FnMut(&v1::Release) -> bool,
    {
        let deadline = Instant::now() + timeout;
        let mut last = None;
        loop {
            if let Ok(r) = self.release(id).await {
                if check(&r) {
                    return Ok(r);
                }
                last = Some(r);
            }
            if Instant::now() >= deadline {
                bail!(
                    "timed out after {timeout:?} waiting for {what}; the release was last {}",
                    last.as_ref().map_or("unreadable".to_owned(), describe)
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until the release reached a terminal state.
    pub async fn wait_finished(&self, id: &str, timeout: Duration) -> anyhow::Result<v1::Release> {
        self.wait_release(id, &format!("release {id} to finish"), timeout, |r| is_terminal(r.state)).await
    }

    /// Every event of the release so far, in order.
    pub async fn events(&self, id: &str) -> anyhow::Result<Vec<v1::ReleaseEvent>> {
        let last = self.release(id).await?.last_event_index;
        let mut events: Vec<v1::ReleaseEvent> = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        while events.last().map_or(0, |e| e.index) < last {
            if Instant::now() > deadline {
                bail!("read {} of the {last} events of {id} within 20 s", events.len());
            }
            let after = events.last().map_or(0, |e| e.index);
            let Ok(mut stream) = self.watch_stream(id, after).await else {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            };
            loop {
                let next = tokio::time::timeout(Duration::from_secs(2), stream.message()).await;
                match next {
                    Ok(Ok(Some(e))) => {
                        let done = e.index >= last;
                        events.push(e);
                        if done {
                            break;
                        }
                    }
                    _ => break,
                }
            }
        }
        Ok(events)
    }

    async fn watch_stream(&self, id: &str, after: u64) -> anyhow::Result<tonic::Streaming<v1::ReleaseEvent>> {
        let req = v1::WatchRequest { release_id: id.to_owned(), after_index: after };
        self.rpc(|ch| {
            let mut r = tonic::Request::new(req.clone());
            r.set_timeout(Duration::from_secs(600));
            async move { ReleasesClient::new(ch).watch(r).await.map(tonic::Response::into_inner) }
        })
        .await
    }

    /// Follows the release's events (resuming after disconnects) until one matches
    /// `wanted`; returns it. Fails when the release ends first or at the deadline.
    pub async fn wait_event<F>(&self, id: &str, timeout: Duration, mut wanted: F) -> anyhow::Result<v1::ReleaseEvent>
    where
        F: FnMut(&v1::ReleaseEvent) -> bool,
    {
        let deadline = Instant::now() + timeout;
        let mut after = 0;
        let mut seen = Vec::new();
        while Instant::now() < deadline {
            let Ok(mut stream) = self.watch_stream(id, after).await else {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            };
            loop {
                let left = deadline.saturating_duration_since(Instant::now());
                match tokio::time::timeout(left, stream.message()).await {
                    Ok(Ok(Some(e))) => {
                        after = e.index;
                        if wanted(&e) {
                            return Ok(e);
                        }
                        seen.push(format!("{} {}", kind_name(e.kind), e.message));
                        if is_terminal(e.release_state) {
                            bail!("release {id} ended without the awaited event; events:\n  {}", seen.join("\n  "));
                        }
                    }
                    _ => break,
                }
            }
        }
        bail!("timed out after {timeout:?} waiting for an event of {id}; events:\n  {}", seen.join("\n  "))
    }

    /// Resumes a paused release.
    pub async fn resume(&self, id: &str, reason: &str) -> anyhow::Result<v1::Release> {
        let req = v1::ResumeRequest { release_id: id.to_owned(), reason: reason.to_owned() };
        let resp = self
            .rpc(|ch| {
                let mut r = tonic::Request::new(req.clone());
                r.set_timeout(RPC_TIMEOUT);
                async move { ReleasesClient::new(ch).resume(r).await.map(tonic::Response::into_inner) }
            })
            .await?;
        resp.release.ok_or_else(|| anyhow!("Resume answered without a release"))
    }

    /// Approves the release's single pending approval.
    pub async fn approve(&self, id: &str) -> anyhow::Result<v1::Release> {
        let req = v1::ApproveRequest { release_id: id.to_owned(), target: None, comment: "test".to_owned() };
        let resp = self
            .rpc(|ch| {
                let mut r = tonic::Request::new(req.clone());
                r.set_timeout(RPC_TIMEOUT);
                async move { ReleasesClient::new(ch).approve(r).await.map(tonic::Response::into_inner) }
            })
            .await?;
        resp.release.ok_or_else(|| anyhow!("Approve answered without a release"))
    }

    /// The fleet's hosts (`include_lost`: also the lost ones).
    pub async fn hosts(&self, include_lost: bool) -> anyhow::Result<Vec<v1::Host>> {
        let req = v1::ListAgentsRequest { labels: Default::default(), include_lost };
        let resp = self
            .rpc(|ch| {
                let mut r = tonic::Request::new(req.clone());
                r.set_timeout(RPC_TIMEOUT);
                async move { FleetClient::new(ch).list_agents(r).await.map(tonic::Response::into_inner) }
            })
            .await?;
        Ok(resp.hosts)
    }

    /// Waits until each of `hosts` is in `state` as the cluster sees it.
    pub async fn wait_hosts_state(
        &self,
        hosts: &[String],
        state: v1::HostState,
        timeout: Duration,
    ) -> anyhow::Result<()> {
        eventually(timeout, &format!("hosts {hosts:?} to be {state:?}"), || async {
            let listed = self.hosts(true).await.ok()?;
            hosts.iter().all(|h| listed.iter().any(|x| &x.host_id == h && x.state == state as i32)).then_some(())
        })
        .await
    }

    /// The inventory: (host, service) -> (version, run state), for online and lost hosts.
    pub async fn inventory(&self) -> anyhow::Result<BTreeMap<(String, String), (String, v1::ServiceRunState)>> {
        let mut out = BTreeMap::new();
        for h in self.hosts(true).await? {
            for s in h.services {
                let state = v1::ServiceRunState::try_from(s.state).unwrap_or(v1::ServiceRunState::Unspecified);
                out.insert((h.host_id.clone(), s.service), (s.version, state));
            }
        }
        Ok(out)
    }

    /// Waits until the inventory is exactly `expected` ((host, service) -> version), every
    /// service running.
    pub async fn wait_inventory(
        &self,
        expected: &BTreeMap<(String, String), String>,
        timeout: Duration,
    ) -> anyhow::Result<()> {
        let last = Mutex::new(BTreeMap::new());
        let found = eventually(timeout, "the fleet inventory to match", || async {
            let inv = self.inventory().await.ok()?;
            let got: BTreeMap<(String, String), String> = inv
                .iter()
                .filter(|(_, (_, st))| *st == v1::ServiceRunState::Running)
                .map(|(k, (v, _))| (k.clone(), v.clone()))
                .collect();
            let ok = &got == expected;
            *last.lock().unwrap_or_else(PoisonError::into_inner) = got;
            ok.then_some(())
        })
        .await;
        found.map_err(|e| {
            let got = last.into_inner().unwrap_or_else(PoisonError::into_inner);
            anyhow!("{e}:\n  expected (running) {expected:?}\n  got (running)      {got:?}")
        })
    }

    /// Runs the `flotilla` CLI against the coordinators; returns its stdout, or fails
    /// with its exit code and stderr.
    pub async fn cli(&self, args: &[&str]) -> anyhow::Result<String> {
        let mut cmd = Command::new(binary("flotilla"));
        cmd.arg("--coordinators").arg(self.addrs.join(",")).args(self.security.tls_flags(OPERATOR)).args(args);
        let what = format!("flotilla {}", args.join(" "));
        let out = tokio::task::spawn_blocking(move || cmd.output()).await??;
        if !out.status.success() {
            bail!("{what} exited with {}: {}", out.status, String::from_utf8_lossy(&out.stderr));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// The last lines of every process's log, for failure messages.
    pub fn logs(&self) -> String {
        let tail = |path: &Path| {
            let text = std::fs::read_to_string(path).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(25)..].join("\n    ")
        };
        let mut out = format!("test directory: {}\n", self.path.display());
        for (id, n) in &self.coordinators {
            let _ = writeln!(out, "--- coordinator {id} ({}):\n    {}", n.addr, tail(&n.log));
        }
        for (host, a) in &self.agents {
            let _ = writeln!(out, "--- agent {host}:\n    {}", tail(&a.log));
        }
        out
    }

    /// Unwraps `result`, or panics with its error and the processes' logs.
    pub fn ok<T>(&self, result: anyhow::Result<T>) -> T {
        match result {
            Ok(v) => v,
            Err(e) => panic!("{e:#}\n{}", self.logs()),
        }
    }
}

impl Drop for TestFleet {
    fn drop(&mut self) {
        for a in self.agents.values() {
            kill9(&a.child);
        }
        for n in self.coordinators.values() {
            kill9(&n.child);
        }
        stop_services(&self.path);
        if std::env::var_os("FLOTILLA_TEST_KEEP").is_some()
            && let Some(dir) = self.dir.take()
        {
            let _ = dir.keep();
        }
    }
}

/// Kills every process whose working directory is under `dir` (the sample services the
/// agents started, which outlive their agents by design), with its process group.
pub fn stop_services(dir: &Path) {
    use nix::sys::signal::{Signal, kill, killpg};
    use nix::unistd::Pid;
    let Ok(entries) = std::fs::read_dir("/proc") else { return };
    let me = std::process::id();
    for e in entries.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|p| p.parse::<i32>().ok()) else { continue };
        if pid.unsigned_abs() == me {
            continue;
        }
        let under = std::fs::read_link(e.path().join("cwd")).is_ok_and(|c| c.starts_with(dir));
        if under {
            // The sample servers lead their own process groups.
            let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
    }
}

// ------------------------------------------------------------------ reading releases

/// Whether a release state is terminal.
pub fn is_terminal(state: i32) -> bool {
    matches!(
        v1::ReleaseState::try_from(state),
        Ok(v1::ReleaseState::Succeeded
            | v1::ReleaseState::RolledBack
            | v1::ReleaseState::Failed
            | v1::ReleaseState::Aborted)
    )
}

/// An event kind's name (`BatchStarted`).
pub fn kind_name(kind: i32) -> String {
    v1::EventKind::try_from(kind).map_or_else(|_| format!("kind {kind}"), |k| format!("{k:?}"))
}

/// A one-paragraph description of a release's state, for failure messages.
pub fn describe(r: &v1::Release) -> String {
    let state = v1::ReleaseState::try_from(r.state).map_or_else(|_| r.state.to_string(), |s| format!("{s:?}"));
    let mut out = format!("{state} ({})", r.reason);
    for st in &r.stages {
        let _ = write!(out, "; stage {} {:?}:", st.name, v1::StageState::try_from(st.state).unwrap_or_default());
        for s in &st.services {
            let ss = v1::ServiceState::try_from(s.state).unwrap_or_default();
            let _ = write!(out, " {}={ss:?}", s.service);
        }
        for g in &st.gates {
            let _ = write!(out, " gate {}={:?}", g.gate, v1::GateState::try_from(g.state).unwrap_or_default());
        }
    }
    out
}

/// The events as readable lines (`12 BatchStarted [main] db: ...`), for failure messages.
pub fn event_lines(events: &[v1::ReleaseEvent]) -> String {
    events
        .iter()
        .map(|e| format!("{:>3} {} [{}] {}", e.index, kind_name(e.kind), e.stage, e.message))
        .collect::<Vec<_>>()
        .join("\n  ")
}

/// The events of one kind.
pub fn events_of(events: &[v1::ReleaseEvent], kind: v1::EventKind) -> Vec<&v1::ReleaseEvent> {
    events.iter().filter(|e| e.kind == kind as i32).collect()
}

/// The command ids of every step the release sent to a host, with that host: deploys,
/// bakes, migrations, gate checks, rollbacks and migrate_downs.
pub fn dispatched_steps(events: &[v1::ReleaseEvent]) -> BTreeMap<String, String> {
    use v1::EventKind as K;
    let mut out = BTreeMap::new();
    for e in events {
        let k = v1::EventKind::try_from(e.kind).unwrap_or(K::Unspecified);
        if matches!(
            k,
            K::BatchStarted
                | K::BakeStarted
                | K::MigrationStarted
                | K::GateStarted
                | K::ServiceRollbackStarted
                | K::MigrateDownStarted
        ) {
            // Hosts and command ids are listed in the same order (offline hosts, which
            // get no command, come last).
            for (cid, host) in e.command_ids.iter().zip(&e.hosts) {
                out.insert(cid.clone(), host.clone());
            }
        }
    }
    out
}

/// The expected inventory of a fleet of `hosts` running the app: for each host and each
/// service of its role, `version(host, service)`.
pub fn app_inventory(
    hosts: &[HostSpec],
    mut version: impl FnMut(&HostSpec, &str) -> String,
) -> BTreeMap<(String, String), String> {
    let mut out = BTreeMap::new();
    for h in hosts {
        for s in services_of_role(h.label("role")) {
            out.insert((h.id.clone(), s.to_owned()), version(h, s));
        }
    }
    out
}
