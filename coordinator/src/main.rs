//! The `flotilla-coordinator` binary: parses flags and the config file, and with
//! `--check-config` prints the effective configuration.

use std::io::Write as _;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser as _;
use flotilla_coordinator::{CoordinatorArgs, CoordinatorConfig};

/// Exit code for a configuration the daemon cannot use (bad usage).
const EXIT_BAD_CONFIG: u8 = 2;

fn main() -> ExitCode {
    let args = CoordinatorArgs::parse();
    match run(&args) {
        Ok(code) => code,
        Err(err) => {
            let _ = writeln!(std::io::stderr(), "flotilla-coordinator: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &CoordinatorArgs) -> anyhow::Result<ExitCode> {
    let config = match CoordinatorConfig::load(args) {
        Ok(config) => config,
        Err(err) => {
            writeln!(std::io::stderr(), "flotilla-coordinator: {err}")?;
            return Ok(ExitCode::from(EXIT_BAD_CONFIG));
        }
    };
    if args.check_config {
        let mut out = std::io::stdout().lock();
        out.write_all(config.to_toml().as_bytes()).context("writing the effective config")?;
        out.flush()?;
        return Ok(ExitCode::SUCCESS);
    }
    writeln!(
        std::io::stderr(),
        "flotilla-coordinator: the configuration of node {} is valid, but serving is not built yet; \
         nothing was started (use --check-config to print the effective configuration)",
        config.node_id
    )?;
    Ok(ExitCode::FAILURE)
}
