//! The `flotilla-coordinator` binary: reads its configuration, opens its storage,
//! joins or forms the Raft cluster and serves gRPC (with the release engine on the
//! leader) until SIGTERM or Ctrl-C; see [`Daemon`].

use anyhow::Context as _;
use clap::Parser as _;
use flotilla_coordinator::daemon::Daemon;
use flotilla_coordinator::{CoordinatorArgs, CoordinatorConfig};
use std::io::Write as _;
use std::process::ExitCode;
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
    let colour = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(colour).init();
}

async fn run(config: CoordinatorConfig) -> anyhow::Result<()> {
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut daemon = Daemon::start(&config).await?;
    tokio::select! {
        served = daemon.serve_until_stopped() => return served.map_err(Into::into),
        _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
        _ = tokio::signal::ctrl_c() => tracing::info!("interrupted: shutting down"),
    }
    let _ = daemon.stop().await;
    Ok(())
}
