//! `flotilla demo`: the whole system in one process on a fresh machine.
//! Three coordinators (temporary data dirs, loopback ports, mutual TLS with a cluster
//! CA made for the run), several agents, and a
//! six-service sample app packaged into real tar.gz artifacts; it installs version 1
//! everywhere, then releases version 2 across two stages with canaries, bakes, a data
//! migration and a gate, with live progress. `--fail SERVICE` ships a broken version
//! of one service and shows the cascading rollback; `--fail-metrics SERVICE` ships a
//! version of one service that answers 5 % of its requests with errors while its health
//! checks pass, and shows canary analysis against a local Prometheus catch it at its
//! canary; `--kill-leader` stops the leading coordinator in the middle of the release
//! and shows it carry on.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail};
use flotilla_coordinator::CoordinatorConfig;
use flotilla_coordinator::daemon::Daemon;
use flotilla_net::pki::{self, ClusterCa, OperatorRole, PeerIdentity, Role, ServerName};
use flotilla_net::{ClientSecurity, LeaderClient, LeaderError, TlsMaterial};
use flotilla_proto::v1;
use flotilla_proto::v1::fleet_client::FleetClient;
use flotilla_proto::v1::releases_client::ReleasesClient;
use flotilla_sample_service::{APP, Behaviour, Package};
use tokio::sync::watch;

use crate::Failure;
use crate::release::{state_name, watch_release};
use crate::remote::print;

/// `flotilla demo` flags.
#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// How many agents (hosts) to run; at least 6 (two per role). The first three
    /// form the canary cell.
    #[arg(long, default_value_t = 9)]
    agents: usize,
    /// Ship a broken version 2 of this service (db, auth, ledger, payments, search or
    /// web): its health check fails, and the release rolls it back with everything
    /// that depends on it, dependents first.
    #[arg(long, value_name = "SERVICE", conflicts_with = "fail_metrics")]
    fail: Option<String>,
    /// Ship a version 2 of this service that answers 5 % of its requests with 500
    /// while its health checks pass: every batch is judged by its error ratio against
    /// the hosts still on version 1, and the analysis catches it at its canary. Needs
    /// `prometheus` on the PATH (Debian: apt-get install prometheus); the demo runs one.
    #[arg(long, value_name = "SERVICE")]
    fail_metrics: Option<String>,
    /// Stop the leading coordinator while the release deploys; the new leader carries on.
    #[arg(long)]
    kill_leader: bool,
    /// Keep the demo's directory (data, logs, artifacts) instead of deleting it.
    #[arg(long)]
    keep: bool,
}

/// Runs the demo.
pub fn run(args: &DemoArgs) -> Result<(), Failure> {
    if args.agents < 6 {
        return Err(Failure::Usage(anyhow!("--agents must be at least 6 (two hosts per role)")));
    }
    for (flag, service) in [("--fail", &args.fail), ("--fail-metrics", &args.fail_metrics)] {
        if let Some(f) = service
            && !APP.iter().any(|(name, _, _)| name == f)
        {
            let names: Vec<&str> = APP.iter().map(|(n, _, _)| *n).collect();
            return Err(Failure::Usage(anyhow!("{flag} {f}: the demo app has {}", names.join(", "))));
        }
    }
    if args.fail_metrics.is_some() && !flotilla_sample_service::prometheus::available() {
        return Err(Failure::Usage(anyhow!(
            "--fail-metrics needs `prometheus` on the PATH to judge the release by its metrics \
             (Debian: apt-get install prometheus)"
        )));
    }
    let runtime =
        tokio::runtime::Builder::new_multi_thread().enable_all().build().map_err(|e| Failure::Operational(e.into()))?;
    let dir =
        tempfile::Builder::new().prefix("flotilla-demo-").tempdir().map_err(|e| Failure::Operational(e.into()))?;
    // Ctrl-C and SIGTERM (as `timeout` and service managers send it) end the demo the
    // same way: everything it started is stopped and its directory removed.
    let result = runtime.block_on(async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .map_err(|e| Failure::Operational(anyhow!("installing the SIGTERM handler: {e}")))?;
        tokio::select! {
            result = demo(args, dir.path()) => result,
            _ = tokio::signal::ctrl_c() => Err(Failure::Operational(anyhow!("interrupted"))),
            _ = term.recv() => Err(Failure::Operational(anyhow!("terminated (SIGTERM)"))),
        }
    });
    // Coordinators and agents stop with the runtime; their services are stopped below.
    drop(runtime);
    stop_services(dir.path());
    if args.keep {
        let kept = dir.keep();
        let _ = print(&format!("demo files kept in {}\n", kept.display()));
    }
    result
}

/// The demo's certificates: a cluster CA, coordinators 1 to 3 for 127.0.0.1, an agent
/// per host and the operator `demo` (an admin) the demo's client uses, written under
/// `dir`.
struct DemoPki {
    dir: PathBuf,
    operator: ClientSecurity,
}

impl DemoPki {
    fn make(dir: &Path, hosts: usize) -> anyhow::Result<Self> {
        let ca = ClusterCa::create(pki::DEFAULT_TRUST_DOMAIN, pki::CA_LIFETIME)?;
        ca.write(dir)?;
        let loopback: ServerName = "127.0.0.1".parse()?;
        let lifetime = Duration::from_secs(86_400);
        for id in 1..=3 {
            ca.issue(Role::Coordinator, &id.to_string(), std::slice::from_ref(&loopback), lifetime)?.write(dir)?;
        }
        for i in 1..=hosts {
            ca.issue(Role::Agent, &format!("host-{i}"), &[], lifetime)?.write(dir)?;
        }
        let operator = ca.issue_operator("demo", OperatorRole::Admin, lifetime)?;
        operator.write(dir)?;
        let security = ClientSecurity::Tls(TlsMaterial::from_pem(ca.cert_pem(), operator.cert_pem, operator.key_pem)?);
        Ok(Self { dir: dir.to_owned(), operator: security })
    }

    /// The `tls_ca`, `tls_cert` and `tls_key` lines of the config of `role` `name`.
    fn config_keys(&self, role: Role, name: &str) -> String {
        let file = |f: String| format!("{:?}", self.dir.join(f).display().to_string());
        let stem = PeerIdentity::new(pki::DEFAULT_TRUST_DOMAIN, role, name)
            .expect("the demo's names are valid identities")
            .file_stem();
        format!(
            "tls_ca = {}\ntls_cert = {}\ntls_key = {}\n",
            file(pki::CA_CERT_FILE.to_owned()),
            file(format!("{stem}.pem")),
            file(format!("{stem}.key"))
        )
    }
}

fn say(text: &str) -> Result<(), Failure> {
    print(&format!("==> {text}\n"))
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

async fn demo(args: &DemoArgs, dir: &Path) -> Result<(), Failure> {
    let op = |e: anyhow::Error| Failure::Operational(e);
    say(&format!("working in {}", dir.display()))?;

    say("building the sample service and packaging the app's artifacts")?;
    let binary = flotilla_sample_service::build_binary(&dir.join("build"))
        .context("building the sample service (needs rustc)")
        .map_err(op)?;
    let mut artifacts: BTreeMap<(String, u32), Package> = BTreeMap::new();
    for (name, _, _) in APP {
        for version in [1, 2] {
            let mut behaviour = Behaviour::healthy(&format!("{version}.0.0"));
            if version == 2 && args.fail.as_deref() == Some(*name) {
                // Broken only outside the canary cell: the canary stage passes, the
                // main stage fails after dependents started, so the rollback cascades.
                behaviour.unhealthy_on = (4..=args.agents).map(|i| format!("host-{i}")).collect();
            }
            if version == 2 && args.fail_metrics.as_deref() == Some(*name) {
                behaviour = behaviour.with_error_ratio(0.05);
            }
            let pkg = flotilla_sample_service::package(
                &dir.join("artifacts").join(name),
                &binary,
                &format!("{version}.0.0"),
                &behaviour,
            )
            .map_err(|e| op(e.into()))?;
            artifacts.insert(((*name).to_owned(), version), pkg);
        }
    }

    let prometheus = match &args.fail_metrics {
        Some(_) => {
            say("starting Prometheus, scraping every sample service once a second")?;
            let port = free_port().map_err(op)?;
            let p = flotilla_sample_service::prometheus::LocalPrometheus::start(
                &dir.join("prometheus"),
                port,
                Duration::from_secs(30),
            )
            .map_err(|e| op(anyhow!("starting prometheus: {e}")))?;
            Some(p)
        }
        None => None,
    };
    let sd_dir = prometheus.as_ref().map(flotilla_sample_service::prometheus::LocalPrometheus::sd_dir);
    let prometheus_key = prometheus.as_ref().map(|p| format!("prometheus_url = \"{}\"\n", p.url())).unwrap_or_default();

    let pki_dir = dir.join("pki");
    say(&format!("making a cluster CA and certificates for every process in {}", pki_dir.display()))?;
    let tls = DemoPki::make(&pki_dir, args.agents).map_err(op)?;

    say("starting three coordinators (mutual TLS)")?;
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect::<anyhow::Result<_>>().map_err(op)?;
    let addrs: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    let bootstrap = addrs.iter().enumerate().map(|(i, a)| format!("\"{}={a}\"", i + 1)).collect::<Vec<_>>().join(", ");
    let mut daemons: Vec<Option<Daemon>> = Vec::new();
    for (i, addr) in addrs.iter().enumerate() {
        let data = dir.join(format!("coordinator-{}", i + 1));
        let text = format!(
            "node_id = {}\ndata_dir = {:?}\nlisten = \"{addr}\"\nbootstrap = [{bootstrap}]\n{}{prometheus_key}agent_lease_ms = 3000\nagent_heartbeat_ms = 500\n",
            i + 1,
            data.display().to_string(),
            tls.config_keys(Role::Coordinator, &(i + 1).to_string()),
        );
        let config = CoordinatorConfig::from_toml(&text, Path::new("demo.toml"))
            .and_then(CoordinatorConfig::validate)
            .map_err(|e| op(anyhow!("{e}")))?;
        daemons.push(Some(Daemon::start(&config).await.map_err(|e| op(e.into()))?));
    }

    let hosts = args.agents;
    say(&format!("starting {hosts} agents (roles db, api, web; the first three hosts form the canary cell)"))?;
    let (stop_agents, agents_stop) = watch::channel(false);
    let mut agents = Vec::new();
    for i in 1..=hosts {
        let role = ["db", "api", "web"][(i - 1) % 3];
        let cell = if i <= 3 { "canary" } else { "main" };
        let text = format!(
            "host_id = \"host-{i}\"\ncoordinators = [{}]\ndata_dir = {:?}\n{}[labels]\nrole = \"{role}\"\ncell = \"{cell}\"\n",
            addrs.iter().map(|a| format!("\"{a}\"")).collect::<Vec<_>>().join(", "),
            dir.join(format!("agent-{i}")).display().to_string(),
            tls.config_keys(Role::Agent, &format!("host-{i}")),
        );
        let config = flotilla_agent::AgentConfig::from_toml(&text, Path::new("agent.toml"))
            .and_then(flotilla_agent::AgentConfig::validate)
            .map_err(|e| op(anyhow!("{e}")))?;
        let stop = agents_stop.clone();
        agents.push(tokio::spawn(async move {
            if let Err(e) = flotilla_agent::session::run_agent(&config, stop).await {
                tracing::error!(error = %e, "agent stopped");
            }
        }));
    }

    let client = LeaderClient::new(addrs.clone(), tls.operator.clone());
    wait_for_agents(&client, hosts).await.map_err(op)?;

    say("installing version 1 of every service everywhere")?;
    let v1_id = submit(&client, "shop.toml", &spec(1, &artifacts, sd_dir.as_deref())).await?;
    watch_quietly(&client, &v1_id).await?;

    let title = match (&args.fail, &args.fail_metrics) {
        (Some(f), _) => {
            format!("releasing version 2 (with a broken {f}): stages canary then main, canaries, bakes, a gate")
        }
        (_, Some(f)) => format!(
            "releasing version 2 (with a {f} answering 5% of requests with errors, health green): \
             each batch judged by its error ratio against the hosts still on version 1"
        ),
        _ => "releasing version 2: stages canary then main, canaries, bakes, a migration and a gate".to_owned(),
    };
    say(&title)?;
    let id = submit(&client, "shop.toml", &spec(2, &artifacts, sd_dir.as_deref())).await?;
    let killer = args.kill_leader.then(|| {
        let client = LeaderClient::new(addrs.clone(), tls.operator.clone());
        let id = id.clone();
        tokio::spawn(async move { wait_until_deploying(&client, &id).await })
    });
    let watched = if let Some(killer) = killer {
        // Stop the leader once the release is deploying, while it is watched.
        let watch = watch_release(&client, &id, 0, false);
        tokio::pin!(watch);
        tokio::select! {
            result = &mut watch => result,
            ready = killer => {
                if ready.unwrap_or(false) {
                    kill_leader(&mut daemons).await?;
                }
                watch.await
            }
        }
    } else {
        watch_release(&client, &id, 0, false).await
    };

    let _ = stop_agents.send(true);
    for a in agents {
        let _ = a.await;
    }
    for d in daemons.into_iter().flatten() {
        let _ = d.stop().await;
    }
    drop(prometheus);
    let failing = args.fail.as_ref().or(args.fail_metrics.as_ref());
    match (failing, watched) {
        (None, Ok(())) => say("the release succeeded"),
        (Some(f), Err(Failure::NotSucceeded(_))) if args.fail_metrics.is_some() => say(&format!(
            "as expected, canary analysis caught the errors of {f} at its canary, with its health checks green, and rolled it back"
        )),
        (Some(f), Err(Failure::NotSucceeded(_))) => {
            say(&format!("as expected, the broken {f} was caught and rolled back with its dependents"))
        }
        (_, Ok(())) => Err(Failure::NotSucceeded(anyhow!("the broken service was not caught"))),
        (_, Err(e)) => Err(e),
    }
}

async fn wait_for_agents(client: &LeaderClient, hosts: usize) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let listed = client
            .call(|ch| async move {
                FleetClient::new(ch)
                    .list_agents(v1::ListAgentsRequest::default())
                    .await
                    .map(tonic::Response::into_inner)
            })
            .await;
        if let Ok(list) = listed
            && list.hosts.len() >= hosts
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("the agents did not all register within 60 s");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn submit(client: &LeaderClient, file: &str, text: &str) -> Result<String, Failure> {
    // The key makes the retries below safe: a second submission returns the first.
    let key = format!("demo-{file}-{}-{}", text.len(), std::process::id());
    let req = v1::CreateRequest { spec_toml: text.to_owned(), file_name: file.to_owned(), idempotency_key: key };
    let deadline = Instant::now() + Duration::from_secs(30);
    let resp = loop {
        let answer = client
            .call(|ch| {
                let req = req.clone();
                async move { ReleasesClient::new(ch).create(req).await.map(tonic::Response::into_inner) }
            })
            .await;
        match answer {
            Ok(resp) => break resp,
            // A refused spec will not get better.
            Err(LeaderError::Status(s)) => return Err(crate::remote::remote_failure(LeaderError::Status(s))),
            // No leader right now (an election): wait for one.
            Err(e) if Instant::now() > deadline => return Err(crate::remote::remote_failure(e)),
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    };
    let r = resp.release.unwrap_or_default();
    say(&format!("submitted release {} as {}", r.name, r.id))?;
    Ok(r.id)
}

async fn get(client: &LeaderClient, id: &str) -> Option<v1::Release> {
    let req = v1::GetRequest { release_id: id.to_owned() };
    client
        .call(|ch| {
            let req = req.clone();
            async move { ReleasesClient::new(ch).get(req).await.map(tonic::Response::into_inner) }
        })
        .await
        .ok()
        .and_then(|r| r.release)
}

/// Waits for a release to end without printing its events; fails unless it succeeded.
async fn watch_quietly(client: &LeaderClient, id: &str) -> Result<(), Failure> {
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        if let Some(r) = get(client, id).await {
            let state = v1::ReleaseState::try_from(r.state).unwrap_or(v1::ReleaseState::Unspecified);
            match state {
                v1::ReleaseState::Succeeded => return say(&format!("release {id} succeeded")),
                v1::ReleaseState::RolledBack | v1::ReleaseState::Failed | v1::ReleaseState::Aborted => {
                    return Err(Failure::NotSucceeded(anyhow!("release {id} {}: {}", state_name(r.state), r.reason)));
                }
                _ => {}
            }
        }
        if Instant::now() > deadline {
            return Err(Failure::Operational(anyhow!("release {id} did not finish within 180 s")));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Whether the release reached a service deploying or baking in its second stage.
async fn wait_until_deploying(client: &LeaderClient, id: &str) -> bool {
    let deadline = Instant::now() + Duration::from_secs(180);
    while Instant::now() < deadline {
        if let Some(r) = get(client, id).await {
            let busy = r.stages.iter().any(|s| {
                s.services.iter().any(|x| {
                    matches!(
                        v1::ServiceState::try_from(x.state),
                        Ok(v1::ServiceState::Deploying | v1::ServiceState::Baking)
                    )
                })
            });
            if busy {
                return true;
            }
            if r.finished_unix_ms != 0 {
                return false;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

async fn kill_leader(daemons: &mut [Option<Daemon>]) -> Result<(), Failure> {
    let leader = daemons.iter().position(|d| d.as_ref().is_some_and(|d| d.node().check_leader().is_ok()));
    if let Some(i) = leader
        && let Some(d) = daemons[i].take()
    {
        say(&format!("stopping the leader, coordinator {}, in the middle of the release", i + 1))?;
        match d.stop().await {
            Some(next) => say(&format!(
                "coordinator stopped; it handed its leadership to coordinator {next}, which takes the release over"
            ))?,
            None => say("coordinator stopped; the others elect a new leader, which takes the release over")?,
        }
    }
    Ok(())
}

/// The error ratio per host of a side of a batch, over 5 s, of the sample service.
const ERROR_RATIO: &str = r#"sum by (host) (rate(flotilla_sample_requests_total{service="{{service}}",version=~"{{version}}",host=~"{{hosts}}",code="500"}[5s])) / sum by (host) (rate(flotilla_sample_requests_total{service="{{service}}",version=~"{{version}}",host=~"{{hosts}}"}[5s]))"#;

/// The release spec of version `v` of the app; with `sd_dir`, every service announces
/// itself to Prometheus there, and version 2's batches are judged by their error ratio.
fn spec(v: u32, artifacts: &BTreeMap<(String, u32), Package>, sd_dir: Option<&Path>) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "release = \"shop-v{v}\"\n");
    let _ = writeln!(s, "[defaults]");
    if v == 1 {
        let _ = writeln!(
            s,
            "canary = 0\nbatches = [\"100%\"]\nbake = \"0s\"\nhealthy_for = \"500ms\"\nhealthy_deadline = \"20s\"\n"
        );
    } else {
        let _ = writeln!(
            s,
            "canary = 1\nbatches = [\"100%\"]\nbake = \"2s\"\nhealthy_for = \"1s\"\nhealthy_deadline = \"10s\"\nrollback_scope = \"cascade\"\n"
        );
        let _ = writeln!(
            s,
            "[[stage]]\nname = \"canary\"\nhosts = {{ cell = \"canary\" }}\n\n[[stage]]\nname = \"main\"\n"
        );
        let _ = writeln!(
            s,
            "[[gate]]\nname = \"smoke\"\nafter = [\"payments\"]\nexec = {{ command = \"echo smoke test passed\", on = {{ role = \"web\" }}, timeout = \"30s\" }}\n"
        );
        if sd_dir.is_some() {
            let _ = writeln!(s, "[defaults.analysis]\ninterval = \"2s\"\nsamples = 5\n");
            let _ = writeln!(
                s,
                "[[defaults.metric]]\nname = \"error_ratio\"\nquery = '{ERROR_RATIO}'\ncritical = true\nmust_have_data = true\n"
            );
        }
    }
    let sd_args = sd_dir.map(|d| format!(", \"--prometheus-sd\", {:?}", d.display().to_string())).unwrap_or_default();
    for (name, role, extra) in APP {
        let pkg = &artifacts[&((*name).to_owned(), v)];
        let _ = writeln!(s, "[[service]]\nname = \"{name}\"\nversion = \"{v}.0.0\"\nhosts = {{ role = \"{role}\" }}");
        let _ = writeln!(s, "artifact = {{ url = \"{}\", sha256 = \"{}\" }}", pkg.file_url(), pkg.sha256);
        let _ = writeln!(
            s,
            "run = {{ command = \"bin/sample\", args = [\"--port\", \"0\"{sd_args}], stop_timeout = \"2s\" }}"
        );
        let _ = writeln!(s, "health = [{{ exec = \"bin/sample --check\", interval = \"200ms\", timeout = \"2s\" }}]");
        if !extra.is_empty() {
            let _ = writeln!(s, "{}", extra.replace("{V}", &v.to_string()));
        }
        let _ = writeln!(s);
    }
    s
}

/// The sample processes the agents started keep running when agents stop (by
/// design); the demo stops every process whose working directory is under its dir.
fn stop_services(dir: &Path) {
    let Ok(entries) = std::fs::read_dir("/proc") else { return };
    let me = std::process::id();
    for e in entries.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|p| p.parse::<i32>().ok()) else { continue };
        if pid as u32 == me {
            continue;
        }
        let cwd: Option<PathBuf> = std::fs::read_link(e.path().join("cwd")).ok();
        if cwd.is_some_and(|c| c.starts_with(dir)) {
            // These are the demo's own sample servers, each leading its process group.
            let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
        }
    }
}
