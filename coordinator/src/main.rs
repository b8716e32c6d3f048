//! The `flotilla-coordinator` binary: reads its configuration, opens its storage,
//! joins or forms the Raft cluster and serves gRPC until SIGTERM or Ctrl-C.

use std::io::Write as _;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser as _;
use flotilla_coordinator::node::{Node, RaftSettings};
use flotilla_coordinator::server;
use flotilla_coordinator::{CoordinatorArgs, CoordinatorConfig};
use flotilla_net::{ClientSecurity, TlsMaterial};
use flotilla_shared::transport::Transport;
use tokio::signal::unix::{SignalKind, signal};

/// Exit code for a configuration the daemon cannot use (bad usage).
const EXIT_BAD_CONFIG: u8 = 2;

fn main() -> ExitCode {
    let args = CoordinatorArgs::parse();
    let config = match CoordinatorConfig::load(&args) {
        Ok(config) => config,
        Err(err) => {
            let _ = writeln!(std::io::stderr(), "flotilla-coordinator: {err}");
            return ExitCode::from(EXIT_BAD_CONFIG);
        }
    };
    if args.check_config {
        let mut out = std::io::stdout().lock();
        return match out.write_all(config.to_toml().as_bytes()) {
            Ok(()) => ExitCode::SUCCESS,
            Err(_) => ExitCode::FAILURE,
        };
    }
    init_tracing();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "flotilla-coordinator: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!("{err:#}");
            let _ = writeln!(std::io::stderr(), "flotilla-coordinator: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("FLOTILLA_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,openraft=warn"));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
}

async fn run(config: CoordinatorConfig) -> anyhow::Result<()> {
    let tls = match config.transport().context("transport")? {
        Transport::Tls(files) => Some(TlsMaterial::load(&files)?),
        Transport::Insecure => None,
    };
    let security = tls.clone().map_or(ClientSecurity::Insecure, ClientSecurity::Tls);
    let settings = RaftSettings {
        heartbeat: Duration::from_millis(config.heartbeat_ms),
        election_min: Duration::from_millis(config.election_timeout_ms),
        election_max: Duration::from_millis(config.election_timeout_ms * 2),
        snapshot_logs: config.snapshot_logs,
        keep_logs: config.keep_logs,
    };
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("creating data dir {}", config.data_dir.display()))?;
    let node = Node::start(config.node_id, config.advertise_addr(), &config.data_dir, &settings, security).await?;
    tracing::info!(node = config.node_id, listen = %config.listen, advertise = %node.advertise(), tls = tls.is_some(), "coordinator starting");

    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let shutdown = async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
            _ = tokio::signal::ctrl_c() => tracing::info!("interrupted: shutting down"),
        }
    };
    let server = tokio::spawn(server::serve(node.clone(), config.listen, tls.clone(), shutdown));

    // Bootstrap once the server listens, so peers can vote.
    let pairs = config.bootstrap_pairs();
    if !pairs.is_empty() {
        match node.bootstrap(&pairs).await {
            Ok(true) => tracing::info!(members = pairs.len(), "formed the cluster"),
            Ok(false) => tracing::info!("existing cluster state found; bootstrap list ignored"),
            Err(e) => tracing::warn!(error = %e, "bootstrap failed"),
        }
    }
    let served = server.await.context("server task")?;
    node.shutdown().await;
    served.context("serving gRPC")?;
    tracing::info!("stopped");
    Ok(())
}
