//! One whole coordinator as a value: storage, Raft, the agent hub, the release engine,
//! the gRPC server and (with `--http`) the HTTP server, started from a
//! [`CoordinatorConfig`] and stopped on demand.
//! The `flotilla-coordinator` binary runs one until SIGTERM; `flotilla demo` runs
//! three in one process.
//!
//! A stop is bounded by `shutdown_timeout_ms` whatever is connected, and leaves the
//! cluster serving: the node drains (no new writes, watches or agent sessions), a
//! leader hands its leadership to the most caught-up voter, then open watch streams
//! and agent sessions end with the new leader's address, the servers stop, and what is
//! still open when the time is up is dropped.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use flotilla_net::{ClientSecurity, TlsMaterial};
use flotilla_shared::transport::Transport;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::audit::{self, Auditor};
use crate::config::CoordinatorConfig;
use crate::enrolment::Enroller;
use crate::error::CoordinatorError;
use crate::fleet::AgentHub;
use crate::http::{HttpListener, HttpServer, HttpTls};
use crate::node::{Lifecycle, Node, RaftSettings};
use crate::state::Retention;
use crate::{driver, server};

/// How long stopping Raft (after the servers) may take.
const RAFT_STOP_TIMEOUT: Duration = Duration::from_secs(2);

/// A running coordinator.
#[derive(Debug)]
pub struct Daemon {
    node: Node,
    hub: AgentHub,
    engine: JoinHandle<()>,
    /// The webhooks' deliveries (on the leader).
    notifier: JoinHandle<()>,
    server: JoinHandle<Result<(), tonic::transport::Error>>,
    http: Option<HttpServer>,
    stop: Option<oneshot::Sender<()>>,
    shutdown_timeout: Duration,
    certificates: Certificates,
    /// Background tasks stopped with the daemon: the certificate watcher, the
    /// formation of a node with no Raft state, the leader's record of members.
    tasks: Vec<JoinHandle<()>>,
}

/// What [`Daemon::reload_certificates`] reloads: the node's TLS files and the CA key.
#[derive(Debug, Clone)]
struct Certificates {
    tls: Option<TlsMaterial>,
    enroller: Enroller,
    /// Every file, watched for changes.
    files: Vec<PathBuf>,
}

/// How often the certificate files are checked for changes.
const WATCH_INTERVAL: Duration = Duration::from_secs(2);

impl Certificates {
    fn reload(&self) -> Result<(), CoordinatorError> {
        if let Some(tls) = &self.tls {
            tls.reload().map_err(|e| CoordinatorError::InvalidArgument(e.to_string()))?;
        }
        self.enroller.reload()
    }

    fn stamps(&self) -> Vec<Option<std::time::SystemTime>> {
        self.files.iter().map(|f| std::fs::metadata(f).and_then(|m| m.modified()).ok()).collect()
    }

    /// Reloads whenever a file's modification time changes (and stays put for one
    /// interval, so a file being rewritten is not read half-way).
    async fn watch(self) {
        let mut seen = self.stamps();
        let mut tick = tokio::time::interval(WATCH_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tick.tick().await;
            let now = self.stamps();
            if now == seen {
                continue;
            }
            tokio::time::sleep(WATCH_INTERVAL / 2).await;
            if self.stamps() != now {
                continue;
            }
            seen = now;
            match self.reload() {
                Ok(()) => tracing::info!("certificate files changed: reloaded"),
                Err(e) => tracing::error!("certificate files changed but cannot be used, the old ones stay: {e}"),
            }
        }
    }
}

impl Daemon {
    /// Opens storage, starts Raft, the hub, the engine and the servers, and forms the
    /// cluster from the bootstrap list unless this node already has state. The HTTP
    /// address (when configured) is bound first: one that cannot be had fails the start
    /// before anything else runs.
    pub async fn start(config: &CoordinatorConfig) -> Result<Self, CoordinatorError> {
        let transport = config.transport().map_err(|e| CoordinatorError::InvalidArgument(e.to_string()))?;
        let tls = match &transport {
            Transport::Tls(files) => {
                Some(TlsMaterial::load(files).map_err(|e| CoordinatorError::InvalidArgument(e.to_string()))?)
            }
            Transport::Insecure => None,
        };
        let http = match config.http {
            Some(addr) => {
                let http_tls = tls.clone().map(HttpTls::new);
                Some(HttpListener::bind(addr, http_tls).await?)
            }
            None => None,
        };
        let enroller = match (&config.tls_ca_key, &transport, &tls) {
            (Some(key), Transport::Tls(files), Some(tls)) => {
                Enroller::load(&files.ca, key, Duration::from_millis(config.agent_cert_ttl_ms), tls.clone())?
            }
            _ => Enroller::disabled(),
        };
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .map_err(|e| CoordinatorError::Internal(format!("cannot listen for gRPC on {}: {e}", config.listen)))?;
        let security = tls.clone().map_or(ClientSecurity::Insecure, ClientSecurity::Tls);
        let settings = RaftSettings {
            heartbeat: Duration::from_millis(config.heartbeat_ms),
            election_min: Duration::from_millis(config.election_timeout_ms),
            election_max: Duration::from_millis(config.election_timeout_ms * 2),
            snapshot_logs: config.snapshot_logs,
            keep_logs: config.keep_logs,
        };
        std::fs::create_dir_all(&config.data_dir)
            .map_err(|e| CoordinatorError::Internal(format!("creating data dir {}: {e}", config.data_dir.display())))?;
        let node = Node::start(config.node_id, config.advertise_addr(), &config.data_dir, &settings, security).await?;
        tracing::info!(node = config.node_id, listen = %config.listen, advertise = %node.advertise(), tls = tls.is_some(), "coordinator starting");
        let pairs = config.bootstrap_pairs();
        node.claim_bootstrap_identity(&pairs).await?;
        // A node with no Raft state answers no Raft request until it knows whether it
        // forms the cluster, joins it, or lost its data (see `formation`).
        let forming = !pairs.is_empty() && !node.is_initialized().await?;
        if forming {
            node.raft_gate().close();
        }
        if let Some(cluster) = node.identity().current() {
            tracing::info!(%cluster, "cluster identity");
        }
        let hub = AgentHub::start(node.clone(), config.hub_settings());
        let prometheus = crate::prometheus::Prometheus::new(config.prometheus().as_ref(), config.node_id)
            .map_err(CoordinatorError::Internal)?;
        let engine = driver::spawn(node.clone(), hub.clone(), config.release_retention(), prometheus);
        let notifier = crate::notify::spawn(node.clone(), config.hooks());

        let (stop, stopped) = oneshot::channel::<()>();
        let closing = hub.clone();
        let shutdown = async move {
            let _ = stopped.await;
            // Agent streams would hold the server open: send agents elsewhere first.
            closing.shutdown();
        };
        let retention = Retention { max_records: config.audit_max_records, max_age_ms: config.audit_max_age_ms };
        let (auditor, audit_queue) = Auditor::new();
        tokio::spawn(audit::run(node.clone(), audit_queue, auditor.counts().clone(), retention));
        let server = tokio::spawn(server::serve(
            node.clone(),
            hub.clone(),
            listener,
            tls.clone(),
            enroller.clone(),
            server::ServeOptions { auditor: auditor.clone(), retention, prometheus: config.prometheus_url.is_some() },
            shutdown,
        ));
        let mut files: Vec<PathBuf> = match &transport {
            Transport::Tls(f) => vec![f.ca.clone(), f.cert.clone(), f.key.clone()],
            Transport::Insecure => Vec::new(),
        };
        files.extend(config.tls_ca_key.clone());
        let certificates = Certificates { tls: tls.clone(), enroller, files };
        let mut tasks: Vec<JoinHandle<()>> = Vec::new();
        if tls.is_some() {
            tasks.push(tokio::spawn(certificates.clone().watch()));
        }
        tasks.push(tokio::spawn(crate::formation::mark_seen(node.clone())));
        let http = http.map(|listener| listener.serve(node.clone(), hub.clone(), auditor.counts().clone()));

        if forming {
            tasks.push(tokio::spawn(crate::formation::run(node.clone(), pairs)));
        } else if !pairs.is_empty() {
            tracing::info!("existing cluster state found; bootstrap list ignored");
        }
        Ok(Self {
            node,
            hub,
            engine,
            notifier,
            server,
            http,
            stop: Some(stop),
            shutdown_timeout: Duration::from_millis(config.shutdown_timeout_ms),
            certificates,
            tasks,
        })
    }

    /// The node (Raft and state).
    pub fn node(&self) -> &Node {
        &self.node
    }

    /// The agent hub.
    pub fn hub(&self) -> &AgentHub {
        &self.hub
    }

    /// The address the HTTP server listens on, when it runs.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http.as_ref().map(HttpServer::local_addr)
    }

    /// Reads the TLS files and the CA key again (SIGHUP, or a file changed): new
    /// connections use them, open ones keep theirs, the cluster is not dropped. On an
    /// error the old material stays in use.
    pub fn reload_certificates(&self) -> Result<(), CoordinatorError> {
        self.certificates.reload()
    }

    /// Waits until the server stops (after [`Daemon::stop`], or on an error).
    pub async fn serve_until_stopped(&mut self) -> Result<(), CoordinatorError> {
        let served = (&mut self.server).await;
        self.finish().await;
        match served {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(CoordinatorError::Internal(format!("serving gRPC: {e}"))),
            Err(e) => Err(CoordinatorError::Internal(format!("server task: {e}"))),
        }
    }

    /// Resolves when Raft stops on its own — it could not write its storage (a full
    /// disk, a failed device) — with why. A coordinator in that state cannot take part
    /// in the cluster any more.
    pub fn raft_failed(&self) -> impl Future<Output = String> + Send + 'static {
        let mut metrics = self.node.raft().metrics();
        async move {
            loop {
                if let Err(fatal) = &metrics.borrow_and_update().running_state {
                    return fatal.to_string();
                }
                if metrics.changed().await.is_err() {
                    return "raft stopped".to_owned();
                }
            }
        }
    }

    /// Stops within the shutdown timeout: drains, hands the leadership over when this
    /// node leads, ends open streams with a leader hint, stops the servers (dropping
    /// what is still connected when the time is up), then the engine and Raft.
    /// Returns the node the leadership was handed to, when this node led and could.
    pub async fn stop(mut self) -> Option<u64> {
        let started = tokio::time::Instant::now();
        let deadline = started + self.shutdown_timeout;
        self.node.advance_lifecycle(Lifecycle::Draining);
        self.engine.abort();
        self.notifier.abort();
        let mut handed_to = None;
        let leads = self.node.raft().metrics().borrow().current_leader == Some(self.node.id());
        if leads {
            // Half the time at most, so the streams get the rest to end cleanly.
            let handover_by = started + self.shutdown_timeout / 2;
            match self.node.hand_over_leadership(handover_by).await {
                Ok(leader) => {
                    tracing::info!(leader, "leadership handed over");
                    handed_to = Some(leader);
                }
                Err(why) => {
                    tracing::warn!(%why, "could not hand the leadership over; the others elect a leader after their election timeout");
                }
            }
        }
        self.node.advance_lifecycle(Lifecycle::Closing);
        self.request_stop();
        if tokio::time::timeout_at(deadline, &mut self.server).await.is_err() {
            tracing::warn!(
                timeout_ms = u64::try_from(self.shutdown_timeout.as_millis()).unwrap_or(u64::MAX),
                "calls still open at the shutdown timeout; dropping them"
            );
            self.server.abort();
        }
        self.finish().await;
        handed_to
    }

    /// Asks the servers to stop; [`Daemon::serve_until_stopped`] then returns.
    pub fn request_stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(http) = &self.http {
            http.request_stop();
        }
    }

    async fn finish(&mut self) {
        for task in self.tasks.drain(..) {
            task.abort();
        }
        if let Some(http) = self.http.take() {
            http.stop().await;
        }
        self.engine.abort();
        self.notifier.abort();
        self.hub.shutdown();
        if tokio::time::timeout(RAFT_STOP_TIMEOUT, self.node.shutdown()).await.is_err() {
            tracing::warn!("raft did not stop within {RAFT_STOP_TIMEOUT:?}; leaving it");
        }
        tracing::info!("stopped");
    }
}
