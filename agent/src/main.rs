//! The `flotilla-agent` binary: parses flags and the config file and runs the agent
//! daemon (the session with the coordinators and the local executor) until SIGTERM or
//! SIGINT; the services it supervises keep running after it stops. With
//! `--check-config` it prints the effective configuration instead.
//!
//! `flotilla-agent local-deploy --data-dir DIR --step FILE` (hidden, for tests and
//! debugging) runs one step from a JSON file with the real executor, without a
//! coordinator, printing one JSON line per event on stdout (see [`local_deploy`]).

use std::io::Write as _;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser as _;
use flotilla_agent::{AgentArgs, AgentConfig, session};
use tokio::signal::unix::{SignalKind, signal};

mod local_deploy;

/// Exit code for a configuration the daemon cannot use (bad usage).
const EXIT_BAD_CONFIG: u8 = 2;

fn main() -> ExitCode {
    if std::env::args_os().nth(1).is_some_and(|a| a == "local-deploy") {
        return local_deploy::main();
    }
    let args = AgentArgs::parse();
    match run(&args) {
        Ok(code) => code,
        Err(err) => {
            let _ = writeln!(std::io::stderr(), "flotilla-agent: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &AgentArgs) -> anyhow::Result<ExitCode> {
    let config = match AgentConfig::load(args) {
        Ok(config) => config,
        Err(err) => {
            writeln!(std::io::stderr(), "flotilla-agent: {err}")?;
            return Ok(ExitCode::from(EXIT_BAD_CONFIG));
        }
    };
    if args.check_config {
        let mut out = std::io::stdout().lock();
        out.write_all(config.to_toml().as_bytes()).context("writing the effective config")?;
        out.flush()?;
        return Ok(ExitCode::SUCCESS);
    }
    init_tracing();
    // Two workers: the session, supervision and health checks are all I/O bound, and
    // every extra thread costs memory on every host.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("flotilla-agent")
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let result = runtime.block_on(daemon(&config));
    // Steps still running are abandoned (journaled: resolved at the next start); a
    // blocking task (an unpack) gets a moment to end. Services keep running.
    runtime.shutdown_timeout(Duration::from_secs(2));
    result?;
    Ok(ExitCode::SUCCESS)
}

async fn daemon(config: &AgentConfig) -> anyhow::Result<()> {
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut sigterm = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut sigint = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    tokio::spawn(async move {
        let which = tokio::select! {
            _ = sigterm.recv() => "SIGTERM",
            _ = sigint.recv() => "SIGINT",
        };
        tracing::info!(signal = which, "stopping the agent; supervised services keep running");
        let _ = stop_tx.send(true);
    });
    tracing::info!(host_id = %config.host_id(), version = env!("CARGO_PKG_VERSION"), data_dir = %config.data_dir.display(), "flotilla-agent starting");
    session::run_agent(config, stop_rx).await?;
    tracing::info!("flotilla-agent stopped");
    Ok(())
}

fn init_tracing() {
    use std::io::IsTerminal as _;
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
}
