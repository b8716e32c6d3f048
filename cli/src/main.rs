//! The `flotilla` command-line tool: plans releases and, against a cluster, drives them.

mod access;
mod agents;
mod demo;
mod json;
mod plan;
mod policy;
mod release;
mod remote;
mod render;
mod stats;
mod tls;
mod tokens;

use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

/// Releases many interdependent services as one unit.
#[derive(Debug, Parser)]
#[command(name = "flotilla", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    connection: remote::Connection,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Show how a release would run: stages, waves, batches, gates and rollback order.
    ///
    /// Offline: no cluster is needed. With `--hosts`, hosts and batches are computed
    /// from an inventory and the spec is checked against it.
    Plan(plan::PlanArgs),
    /// Inspect and change the coordinator cluster.
    Cluster {
        #[command(subcommand)]
        command: remote::ClusterCommand,
        /// How to print the result.
        #[arg(long, short, global = true, value_enum, default_value_t = TextOrJson::Table)]
        output: TextOrJson,
    },
    /// List the fleet's hosts and their agents: state, drain mark, version, labels and
    /// the services each runs.
    ///
    /// Exit codes: 0 listed (also when nothing matches), 1 no coordinator answered,
    /// 2 bad usage.
    Agents(agents::AgentsArgs),
    /// Submit, follow and steer releases.
    Release {
        #[command(subcommand)]
        command: release::ReleaseCommand,
        /// How to print the result.
        #[arg(long, short, global = true, value_enum, default_value_t = TextOrJson::Table)]
        output: TextOrJson,
    },
    /// Run the whole system in this process: three coordinators, several agents and a
    /// six-service sample app in real artifacts; release it with live progress.
    ///
    /// Exit codes: 0 the demo ran as asked (with --fail: the broken service was rolled
    /// back), 1 something went wrong, 3 the release did not end as expected.
    Demo(demo::DemoArgs),
    /// Operator tokens: credentials with a role (viewer, deployer or admin) that
    /// scripts and CI pass with --token instead of a client certificate.
    ///
    /// Exit codes: 0 done, 1 no coordinator answered or the call was refused
    /// (UNAUTHENTICATED, PERMISSION_DENIED, no such token), 2 bad usage.
    Tokens {
        #[command(subcommand)]
        command: access::TokensCommand,
        /// How to print the result.
        #[arg(long, short, global = true, value_enum, default_value_t = TextOrJson::Table)]
        output: TextOrJson,
    },
    /// The audit trail: every call that asked to change something, allowed or refused,
    /// newest first: when, who (and their role), what, the outcome, and from where.
    ///
    /// Exit codes: 0 listed (also when nothing matches), 1 no coordinator answered or
    /// the call was refused, 2 bad usage.
    Audit(access::AuditArgs),
    /// Who the cluster takes this CLI's credentials for: the identity, its role, how it
    /// was authenticated (certificate or token) and until when.
    ///
    /// Exit codes: 0 answered, 1 no coordinator answered, 2 bad usage.
    Whoami(access::WhoAmIArgs),
    /// Delivery figures from the cluster's release history (DORA's four keys), overall
    /// and per service: deployment frequency, lead time (from the spec's `changed_at`,
    /// else the release's creation, to the service finishing its last stage), change
    /// failure rate and time to restore.
    ///
    /// Exit codes: 0 answered (also when no release ended in the period), 1 no
    /// coordinator answered or the call was refused, 2 bad usage.
    Stats(stats::StatsArgs),
    /// Release policy: deployment windows and freezes (`policy window set|list|remove`).
    ///
    /// Exit codes: 0 done, 1 no coordinator answered or the call was refused (setting
    /// or removing a window needs the admin role; no such window), 2 bad usage (a
    /// window that does not parse).
    Policy {
        #[command(subcommand)]
        command: policy::PolicyCommand,
        /// How to print the result.
        #[arg(long, short, global = true, value_enum, default_value_t = TextOrJson::Table)]
        output: TextOrJson,
    },
    /// Make the cluster's certificate authority and issue the certificates of
    /// coordinators, operators and agents (each names its holder:
    /// `spiffe://DOMAIN/ROLE/NAME`).
    ///
    /// Nothing is ever overwritten. Exit codes: 0 written, 1 a file could not be read
    /// or written, 2 bad usage (a bad name, a file that exists already, no CA).
    Tls(tls::TlsArgs),
}

/// How to print results of remote commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TextOrJson {
    /// Human-readable text.
    Table,
    /// The API's answer, a `flotilla.v1` message, in the canonical protobuf JSON
    /// mapping (docs/json-output.md); event streams as JSON Lines.
    Json,
}

/// How to print results.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// Human-readable text.
    Table,
    /// The `flotilla.v1.Plan` message in the canonical protobuf JSON mapping
    /// (docs/plan-json.md).
    Json,
    /// A Graphviz graph of services, dependencies and gates.
    Dot,
}

/// A failure with the exit code it maps to.
#[derive(Debug)]
pub enum Failure {
    /// 1: something went wrong talking to the cluster or the machine.
    Operational(anyhow::Error),
    /// 2: bad usage or a bad spec; the message says what to fix.
    Usage(anyhow::Error),
    /// 3: the release did not succeed (rolled back, failed or aborted).
    NotSucceeded(anyhow::Error),
}

impl Failure {
    fn code(&self) -> u8 {
        match self {
            Failure::Operational(_) => 1,
            Failure::Usage(_) => 2,
            Failure::NotSucceeded(_) => 3,
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Plan(args) => plan::run(&args),
        Command::Cluster { command, output } => remote::cluster(&cli.connection, &command, output == TextOrJson::Json),
        Command::Release { command, output } => release::run(&cli.connection, &command, output == TextOrJson::Json),
        Command::Demo(args) => demo::run(&args),
        Command::Agents(args) => agents::run(&cli.connection, &args),
        Command::Tls(args) => tls::run(&args),
        Command::Tokens { command, output } => access::tokens(&cli.connection, &command, output),
        Command::Audit(args) => access::audit(&cli.connection, &args),
        Command::Whoami(args) => access::whoami(&cli.connection, &args),
        Command::Stats(args) => stats::run(&cli.connection, &args),
        Command::Policy { command, output } => policy::run(&cli.connection, &command, output),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            let (Failure::Operational(e) | Failure::Usage(e) | Failure::NotSucceeded(e)) = &failure;
            // Spec errors render themselves fully; other errors get the usual prefix.
            if e.downcast_ref::<flotilla_shared::SpecErrors>().is_some() {
                #[allow(clippy::print_stderr)]
                {
                    eprintln!("{e}");
                }
            } else {
                #[allow(clippy::print_stderr)]
                {
                    eprintln!("error: {e:#}");
                }
            }
            ExitCode::from(failure.code())
        }
    }
}
