//! `flotilla-agent local-deploy`: runs one step from a JSON file with the real executor
//! and no coordinator. Every event is one JSON line on stdout:
//! `{"recovered": StepResult}` for steps resolved at open (an earlier agent died during
//! them), `{"progress": StepProgress}` per phase, and `{"result": StepResult}` at the
//! end. Exit code 0 when the step succeeded or was skipped, 3 when it did not, 1 on an
//! operational error. The services it starts keep running after it exits.
//!
//! `--pause-at PHASE[:end]` (tests only) freezes the step at that point so that a test
//! can `kill -9` the agent there.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser as _;
use flotilla_agent::driver::process::Backoff;
use flotilla_agent::executor::PausePoint;
use flotilla_agent::step::Step;
use flotilla_agent::{Executor, ExecutorConfig};

/// Exit code of a step that did not succeed.
const EXIT_STEP_FAILED: u8 = 3;

/// Flags of `flotilla-agent local-deploy`.
#[derive(Debug, clap::Parser)]
#[command(name = "flotilla-agent local-deploy", about = "Run one step locally, without a coordinator")]
struct LocalDeployArgs {
    /// The agent's data directory.
    #[arg(long, value_name = "DIR")]
    data_dir: PathBuf,
    /// The step, as JSON (`flotilla_agent::step::Step`).
    #[arg(long, value_name = "FILE")]
    step: PathBuf,
    /// The host id given to services as FLOTILLA_HOST.
    #[arg(long, value_name = "ID", default_value = "local")]
    host_id: String,
    /// Releases kept per service.
    #[arg(long, value_name = "N", default_value_t = flotilla_agent::config::DEFAULT_KEEP_RELEASES)]
    keep_releases: u32,
    /// First restart delay of crashed services, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 1000)]
    restart_backoff_ms: u64,
    /// Tests only: freeze the step at `PHASE` (after it is journaled) or `PHASE:end`.
    #[arg(long, value_name = "PHASE[:end]", hide = true)]
    pause_at: Option<PausePoint>,
}

/// Runs `flotilla-agent local-deploy` (arguments from the process's command line).
pub fn main() -> ExitCode {
    let args = LocalDeployArgs::parse_from(std::env::args_os().skip(1));
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "flotilla-agent local-deploy: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(&args)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(EXIT_STEP_FAILED),
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "flotilla-agent local-deploy: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn emit(kind: &str, value: &impl serde::Serialize) -> anyhow::Result<()> {
    let line = serde_json::json!({ kind: value });
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}")?;
    out.flush()?;
    Ok(())
}

async fn run(args: &LocalDeployArgs) -> anyhow::Result<bool> {
    let text = std::fs::read_to_string(&args.step).with_context(|| format!("reading {}", args.step.display()))?;
    let step: Step =
        serde_json::from_str(&text).with_context(|| format!("parsing the step in {}", args.step.display()))?;
    let mut config = ExecutorConfig::new(&args.data_dir, &args.host_id);
    config.keep_releases = args.keep_releases;
    config.restart_backoff = Backoff { initial: Duration::from_millis(args.restart_backoff_ms), ..Backoff::default() };
    config.pause_at = args.pause_at;
    let (executor, recovered) = Executor::open(config).await.context("opening the executor")?;
    for result in &recovered {
        emit("recovered", result)?;
    }
    let mut handle = executor.execute(step);
    while let Some(progress) = handle.progress.recv().await {
        emit("progress", &progress)?;
    }
    let result = handle.finish().await;
    emit("result", &result)?;
    Ok(result.is_success())
}
