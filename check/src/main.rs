//! `flotilla-check HISTORY.json`: checks what a chaos round recorded against every
//! rule of the history checker and prints the report.
//!
//! Exit codes: 0 no violation, 1 violations found (the report names them), 2 the
//! history could not be read or is not a valid history document (the error names the
//! file, and the line and column where the JSON is wrong).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, anyhow};
use clap::{Parser, ValueEnum};
use flotilla_check::{History, Options, Report, check};

/// Checks a Flotilla chaos round's history: no step ran twice or overlapped, services
/// started after their dependencies, migrations ran once, rollbacks kept their set and
/// order, no deposed leader's step executed, hosts ended on the right versions and no
/// acknowledged write was lost.
///
/// Exit codes: 0 no violation, 1 violations found, 2 unreadable or invalid history.
#[derive(Debug, Parser)]
#[command(name = "flotilla-check", version, about)]
struct Args {
    /// The HISTORY document: JSON, format 1 (docs/history-checker.md).
    history: PathBuf,
    /// How to print the report.
    #[arg(long, short, value_enum, default_value_t = Output::Text)]
    output: Output,
    /// How far apart two clocks may be, in ms, when times from different clocks are
    /// compared (two hosts' lines, a host line and a leader's event).
    #[arg(long, value_name = "N", default_value_t = 0)]
    skew_ms: u64,
    /// Exit 1 also when a part of the history could not be checked.
    #[arg(long)]
    strict: bool,
}

/// How to print the report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Output {
    /// Human-readable text.
    Text,
    /// The report as one JSON document.
    Json,
}

/// A failure with the exit code it maps to.
#[derive(Debug)]
enum Failure {
    /// 1: the history breaks a rule.
    Violations,
    /// 2: the history could not be read or is not valid.
    Input(anyhow::Error),
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Violations) => ExitCode::from(1),
        Err(Failure::Input(e)) => {
            #[allow(clippy::print_stderr)]
            {
                eprintln!("error: {e:#}");
            }
            ExitCode::from(2)
        }
    }
}

fn run(args: &Args) -> Result<(), Failure> {
    let history = read(&args.history).map_err(Failure::Input)?;
    let report = check(&history, &Options { skew_ms: args.skew_ms });
    print(&report, args.output).map_err(Failure::Input)?;
    let failed = !report.is_clean() || (args.strict && report.cannot_checks().next().is_some());
    if failed { Err(Failure::Violations) } else { Ok(()) }
}

fn read(path: &Path) -> anyhow::Result<History> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    History::from_json(&text).map_err(|e| anyhow!("{}: {e}", path.display()))
}

fn print(report: &Report, output: Output) -> anyhow::Result<()> {
    let text = match output {
        Output::Text => report.to_string(),
        Output::Json => serde_json::to_string_pretty(report).context("cannot render the report as JSON")? + "\n",
    };
    #[allow(clippy::print_stdout)]
    {
        print!("{text}");
    }
    Ok(())
}
