//! `flotilla tls ...`: the cluster's certificate authority and the certificates of
//! coordinators, operators and agents, made with `flotilla_net::pki` (no openssl).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::anyhow;
use flotilla_net::pki::{self, ClusterCa, Issued, OperatorRole, PkiError, Role, ServerName};

use crate::Failure;
use crate::remote::print;

/// How long the agents' certificates of a `--dev` set are valid.
const DEV_AGENT_LIFETIME: Duration = Duration::from_secs(30 * 86_400);

/// Where the CA and the issued files live unless `--dir` says otherwise.
const DEFAULT_DIR: &str = "flotilla-pki";

/// `flotilla tls`: a subcommand, or `--dev DIR` for a whole local set.
#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true, arg_required_else_help = true)]
pub struct TlsArgs {
    /// Write a complete set for a cluster on this machine into DIR: a CA,
    /// coordinators 1 to 3 (for 127.0.0.1, ::1 and localhost), operator `admin` (role
    /// admin) and an agent per --agent (valid for 30 days).
    #[arg(long, value_name = "DIR")]
    dev: Option<PathBuf>,
    /// With --dev: also issue an agent certificate for this host id (repeatable).
    #[arg(long = "agent", value_name = "HOST_ID", requires = "dev")]
    agents: Vec<String>,
    #[command(subcommand)]
    command: Option<TlsCommand>,
}

/// The CA directory, shared by every subcommand.
#[derive(Debug, clap::Args)]
struct CaDir {
    /// The directory of the CA (`ca.pem`, `ca.key`); issued files are written there.
    #[arg(long, env = "FLOTILLA_PKI_DIR", default_value = DEFAULT_DIR, value_name = "DIR")]
    dir: PathBuf,
}

#[derive(Debug, clap::Subcommand)]
enum TlsCommand {
    /// Make the cluster's CA: `ca.pem` (give it to every process) and `ca.key` (keep
    /// it off the fleet; it signs every identity).
    Init {
        #[command(flatten)]
        ca: CaDir,
        /// The trust domain every identity it issues names (`spiffe://DOMAIN/...`).
        #[arg(long, default_value = pki::DEFAULT_TRUST_DOMAIN)]
        trust_domain: String,
        /// How long the CA is valid.
        #[arg(long, default_value = "3650days", value_parser = humantime::parse_duration)]
        valid_for: Duration,
    },
    /// Issue a coordinator's certificate (server and client): `coordinator-ID.pem/.key`.
    Coordinator {
        /// The coordinator's node id.
        id: u64,
        /// A name clients and peers dial it by: a DNS name or an IP (repeatable; at
        /// least one, the host of its `advertise` address).
        #[arg(long = "san", value_name = "NAME|IP", required = true)]
        sans: Vec<String>,
        #[command(flatten)]
        ca: CaDir,
        /// How long it is valid.
        #[arg(long, default_value = "365days", value_parser = humantime::parse_duration)]
        valid_for: Duration,
    },
    /// Issue an operator's certificate (client only) naming the operator and what they
    /// may do: `operator-NAME.pem/.key`.
    Operator {
        /// Who it is, as events and logs name them.
        name: String,
        /// What the operator may do, bound into the certificate: `viewer` reads only;
        /// `deployer` also starts, approves, pauses, resumes, aborts and rolls back
        /// releases and drains hosts; `admin` may do everything.
        #[arg(long, value_name = "viewer|deployer|admin")]
        role: OperatorRole,
        #[command(flatten)]
        ca: CaDir,
        /// How long it is valid.
        #[arg(long, default_value = "90days", value_parser = humantime::parse_duration)]
        valid_for: Duration,
    },
    /// Issue a host agent's certificate (client only) naming its host id:
    /// `agent-HOST_ID.pem/.key`.
    Agent {
        /// The host id the agent registers as.
        host_id: String,
        #[command(flatten)]
        ca: CaDir,
        /// How long it is valid.
        #[arg(long, default_value = "24h", value_parser = humantime::parse_duration)]
        valid_for: Duration,
    },
}

/// Runs `flotilla tls ...`.
pub fn run(args: &TlsArgs) -> Result<(), Failure> {
    let report = match (&args.dev, &args.command) {
        (Some(dir), _) => dev(dir, &args.agents)?,
        (None, Some(TlsCommand::Init { ca, trust_domain, valid_for })) => {
            let made = ClusterCa::create(trust_domain, *valid_for).map_err(usage)?;
            made.write(&ca.dir).map_err(usage)?;
            init_report(&ca.dir, &made)
        }
        (None, Some(TlsCommand::Coordinator { id, sans, ca, valid_for })) => {
            let names = sans.iter().map(|s| s.parse::<ServerName>()).collect::<Result<Vec<_>, _>>().map_err(usage)?;
            let issued = load(&ca.dir)?.issue(Role::Coordinator, &id.to_string(), &names, *valid_for).map_err(usage)?;
            written(&ca.dir, &issued, &names, None)?
        }
        (None, Some(TlsCommand::Operator { name, role, ca, valid_for })) => {
            let issued = load(&ca.dir)?.issue_operator(name, *role, *valid_for).map_err(usage)?;
            written(&ca.dir, &issued, &[], Some(*role))?
        }
        (None, Some(TlsCommand::Agent { host_id, ca, valid_for })) => {
            let issued = load(&ca.dir)?.issue(Role::Agent, host_id, &[], *valid_for).map_err(usage)?;
            written(&ca.dir, &issued, &[], None)?
        }
        (None, None) => {
            return Err(Failure::Usage(anyhow!("name a subcommand or --dev DIR (see flotilla tls --help)")));
        }
    };
    print(&report)
}

/// A bad name, an existing file: what the user must change (exit 2); a file that
/// cannot be read or written: operational (exit 1).
fn usage(e: PkiError) -> Failure {
    match e {
        PkiError::Io { .. } => Failure::Operational(e.into()),
        _ => Failure::Usage(e.into()),
    }
}

fn init_report(dir: &Path, ca: &ClusterCa) -> String {
    format!(
        "wrote {} and {} (trust domain {})\nCA pin {}\n",
        dir.join(pki::CA_CERT_FILE).display(),
        dir.join(pki::CA_KEY_FILE).display(),
        ca.trust_domain(),
        ca.pin()
    )
}

/// The CA in `dir`; a missing one is the user's to make (exit 2).
fn load(dir: &Path) -> Result<ClusterCa, Failure> {
    ClusterCa::load(dir).map_err(|e| match e {
        PkiError::Io { .. } => {
            Failure::Usage(anyhow!("{e}; make the CA first with `flotilla tls init --dir {}`", dir.display()))
        }
        other => usage(other),
    })
}

/// Writes `issued` into `dir` and says what was written: its identity, the names a
/// coordinator answers to, an operator's role.
fn written(dir: &Path, issued: &Issued, sans: &[ServerName], role: Option<OperatorRole>) -> Result<String, Failure> {
    let (cert, key) = issued.write(dir).map_err(usage)?;
    let names = if sans.is_empty() {
        String::new()
    } else {
        format!(", for {}", sans.iter().map(ToString::to_string).collect::<Vec<_>>().join(", "))
    };
    let role = role.map(|r| format!(", role {r}")).unwrap_or_default();
    Ok(format!("wrote {} and {} ({}{names}{role})\n", cert.display(), key.display(), issued.identity.uri()))
}

/// A CA and everything a three-coordinator cluster on this machine needs.
fn dev(dir: &Path, agents: &[String]) -> Result<String, Failure> {
    let ca = ClusterCa::create(pki::DEFAULT_TRUST_DOMAIN, pki::CA_LIFETIME).map_err(usage)?;
    // Everything is made before anything is written, so a bad --agent writes nothing.
    let local: Vec<ServerName> = ["127.0.0.1", "::1", "localhost"].iter().map(|s| s.parse().expect("valid")).collect();
    // Each with the names it answers to and, for the operator, its role.
    let mut issued = Vec::new();
    for id in 1..=3 {
        issued.push((
            ca.issue(Role::Coordinator, &id.to_string(), &local, pki::COORDINATOR_LIFETIME),
            &local[..],
            None,
        ));
    }
    let admin = OperatorRole::Admin;
    issued.push((ca.issue_operator("admin", admin, pki::OPERATOR_LIFETIME), &[], Some(admin)));
    for host in agents {
        issued.push((ca.issue(Role::Agent, host, &[], DEV_AGENT_LIFETIME), &[], None));
    }
    let issued: Vec<(Issued, &[ServerName], Option<OperatorRole>)> = issued
        .into_iter()
        .map(|(i, sans, role)| i.map(|i| (i, sans, role)))
        .collect::<Result<_, _>>()
        .map_err(usage)?;
    ca.write(dir).map_err(usage)?;
    let mut report = init_report(dir, &ca);
    for (one, sans, role) in &issued {
        report.push_str(&written(dir, one, sans, *role)?);
    }
    Ok(report)
}
