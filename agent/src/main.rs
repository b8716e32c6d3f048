//! The `flotilla-agent` binary: parses flags and the config file, and with
//! `--check-config` prints the effective configuration.
//!
//! `flotilla-agent local-deploy --data-dir DIR --step FILE` (hidden, for tests and
//! debugging) runs one step from a JSON file with the real executor, without a
//! coordinator, printing one JSON line per event on stdout (see [`local_deploy`]).

use std::io::Write as _;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser as _;
use flotilla_agent::{AgentArgs, AgentConfig};

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
    writeln!(
        std::io::stderr(),
        "flotilla-agent: the configuration of host {} is valid, but the agent is not built yet; \
         nothing was started (use --check-config to print the effective configuration)",
        config.host_id()
    )?;
    Ok(ExitCode::FAILURE)
}
