//! Talking to a coordinator cluster: connection flags shared by every remote command,
//! and the `cluster` and `release` commands served today.

use std::io::Write;
use std::path::PathBuf;

use anyhow::anyhow;
use flotilla_net::{ClientSecurity, LeaderError, TlsMaterial, call_leader, channel};
use flotilla_proto::status::{Reason, has_reason, spec_errors};
use flotilla_proto::v1::cluster_client::ClusterClient;
use flotilla_proto::v1::{self, MemberRole, RaftState};
use flotilla_shared::transport::{Transport, check_host_port};

use crate::{Failure, json};

/// How to reach the cluster; every flag also reads an environment variable.
#[derive(Debug, Clone, clap::Args)]
pub struct Connection {
    /// Coordinators to try, `HOST:PORT` comma-separated; the leader is followed from there.
    #[arg(long, global = true, env = "FLOTILLA_COORDINATORS", value_delimiter = ',', default_value = "127.0.0.1:7600")]
    coordinators: Vec<String>,
    /// CA certificate (PEM) the coordinators' certificates must chain to.
    #[arg(long, global = true, env = "FLOTILLA_TLS_CA", value_name = "FILE")]
    tls_ca: Option<PathBuf>,
    /// This client's certificate (PEM).
    #[arg(long, global = true, env = "FLOTILLA_TLS_CERT", value_name = "FILE")]
    tls_cert: Option<PathBuf>,
    /// This client's private key (PEM).
    #[arg(long, global = true, env = "FLOTILLA_TLS_KEY", value_name = "FILE")]
    tls_key: Option<PathBuf>,
    /// Talk plaintext to coordinators that run with --insecure.
    #[arg(long, global = true, env = "FLOTILLA_INSECURE", value_parser = clap::builder::BoolishValueParser::new())]
    insecure: bool,
}

impl Connection {
    pub(crate) fn security(&self) -> Result<ClientSecurity, Failure> {
        let transport = Transport::from_settings(
            self.tls_ca.as_ref(),
            self.tls_cert.as_ref(),
            self.tls_key.as_ref(),
            self.insecure,
        )
        .map_err(|e| Failure::Usage(e.into()))?;
        match transport {
            Transport::Tls(files) => {
                TlsMaterial::load(&files).map(ClientSecurity::Tls).map_err(|e| Failure::Usage(e.into()))
            }
            Transport::Insecure => Ok(ClientSecurity::Insecure),
        }
    }

    pub(crate) fn addrs(&self) -> Result<Vec<String>, Failure> {
        for addr in &self.coordinators {
            check_host_port(addr).map_err(|why| Failure::Usage(anyhow!("coordinator `{addr}`: {why}")))?;
        }
        Ok(self.coordinators.clone())
    }
}

/// `flotilla cluster ...`
#[derive(Debug, clap::Subcommand)]
pub enum ClusterCommand {
    /// Members, voters and learners, the leader, the term, and each node's last log
    /// and applied index.
    Status,
    /// Add a node: it joins as a learner, catches up, then becomes a voter.
    Add {
        /// `ID=HOST:PORT` of the new node (already running, without --bootstrap).
        member: String,
        /// Keep it a learner (a non-voting replica).
        #[arg(long)]
        learner: bool,
    },
    /// Remove a node from the cluster.
    Remove {
        /// The node id.
        id: u64,
    },
}

pub(crate) fn runtime() -> Result<tokio::runtime::Runtime, Failure> {
    tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| Failure::Operational(e.into()))
}

pub(crate) fn remote_failure(e: LeaderError) -> Failure {
    match e {
        LeaderError::Status(status) if spec_errors(&status).is_some() => {
            Failure::Usage(anyhow!("{}", status.message()))
        }
        LeaderError::Status(status) if status.code() == tonic::Code::InvalidArgument => {
            Failure::Usage(anyhow!("{}", status.message()))
        }
        // An idempotency key given again for another spec: the invocation is wrong.
        LeaderError::Status(status) if has_reason(&status, Reason::IdempotencyKeyReused) => {
            Failure::Usage(anyhow!("{}", status.message()))
        }
        LeaderError::NoAddress => Failure::Usage(e.into()),
        other => Failure::Operational(other.into()),
    }
}

pub(crate) fn print(text: &str) -> Result<(), Failure> {
    std::io::stdout().lock().write_all(text.as_bytes()).map_err(|e| Failure::Operational(e.into()))
}

/// Runs a `cluster` command. With `json_out` it prints the answer of the call it made
/// (`StatusResponse`, `AddNodeResponse` or `RemoveNodeResponse`) and nothing else; the
/// table asks a member the answer has no indexes for for its own view.
pub fn cluster(conn: &Connection, cmd: &ClusterCommand, json_out: bool) -> Result<(), Failure> {
    let security = conn.security()?;
    let addrs = conn.addrs()?;
    runtime()?.block_on(async {
        let status = match cmd {
            ClusterCommand::Status => {
                // Any node answers; prefer what the leader knows.
                let resp = call_leader(&addrs, &security, |ch| async move {
                    ClusterClient::new(ch).status(v1::StatusRequest { local: false }).await.map(|r| r.into_inner())
                })
                .await
                .map_err(remote_failure)?;
                if json_out {
                    return print(&json::pretty(&resp)?);
                }
                resp.status.ok_or_else(|| Failure::Operational(anyhow!("empty status")))?
            }
            ClusterCommand::Add { member, learner } => {
                let (id, addr) = member
                    .split_once('=')
                    .and_then(|(id, addr)| id.parse::<u64>().ok().map(|id| (id, addr.to_owned())))
                    .ok_or_else(|| Failure::Usage(anyhow!("expected ID=HOST:PORT, got `{member}`")))?;
                let req = v1::AddNodeRequest { node_id: id, addr, learner_only: *learner };
                let resp = call_leader(&addrs, &security, |ch| {
                    let req = req.clone();
                    async move { ClusterClient::new(ch).add_node(req).await.map(|r| r.into_inner()) }
                })
                .await
                .map_err(remote_failure)?;
                if json_out {
                    return print(&json::pretty(&resp)?);
                }
                resp.status.unwrap_or_default()
            }
            ClusterCommand::Remove { id } => {
                let req = v1::RemoveNodeRequest { node_id: *id };
                let resp = call_leader(&addrs, &security, |ch| async move {
                    ClusterClient::new(ch).remove_node(req).await.map(|r| r.into_inner())
                })
                .await
                .map_err(remote_failure)?;
                if json_out {
                    return print(&json::pretty(&resp)?);
                }
                resp.status.unwrap_or_default()
            }
        };
        let nodes = per_node(&status, &security).await;
        print(&status_table(&status, &nodes))
    })
}

/// Each member's own view (its state, last log and applied index), `None` when
/// unreachable: as the answer has it when it knows the member's indexes (the leader's
/// view), otherwise asked of the member itself.
async fn per_node(status: &v1::ClusterStatus, security: &ClientSecurity) -> Vec<Option<v1::ClusterMember>> {
    let mut out = Vec::new();
    for m in &status.members {
        if m.last_log_index.is_some() {
            out.push(Some(m.clone()));
            continue;
        }
        let own = async {
            let ch = channel(&m.addr, security).ok()?;
            let mut client = ClusterClient::new(ch);
            let mut req = tonic::Request::new(v1::StatusRequest { local: true });
            req.set_timeout(std::time::Duration::from_secs(2));
            let s = client.status(req).await.ok()?.into_inner().status?;
            s.members.into_iter().find(|x| x.node_id == m.node_id)
        };
        out.push(own.await);
    }
    out
}

fn role(m: &v1::ClusterMember) -> &'static str {
    if m.role == MemberRole::Voter as i32 { "voter" } else { "learner" }
}

fn state(m: Option<&v1::ClusterMember>) -> &'static str {
    match m.map(|m| RaftState::try_from(m.state).unwrap_or(RaftState::Unspecified)) {
        None => "unreachable",
        Some(RaftState::Leader) => "leader",
        Some(RaftState::Follower) => "follower",
        Some(RaftState::Candidate) => "candidate",
        Some(RaftState::Learner) => "learner",
        Some(RaftState::Shutdown) => "shutdown",
        Some(RaftState::Unspecified) => "unknown",
    }
}

fn opt(v: Option<u64>) -> String {
    v.map_or("-".to_owned(), |v| v.to_string())
}

fn status_table(s: &v1::ClusterStatus, nodes: &[Option<v1::ClusterMember>]) -> String {
    let mut out = format!(
        "leader: {}  term: {}  committed: {}{}\n\n{:<6} {:<22} {:<8} {:<12} {:>10} {:>10}\n",
        if s.leader_id == 0 { "none".to_owned() } else { format!("{} ({})", s.leader_id, s.leader_addr) },
        s.term,
        s.committed_index,
        if s.membership_changing { "  (membership change in progress)" } else { "" },
        "NODE",
        "ADDRESS",
        "ROLE",
        "STATE",
        "LAST LOG",
        "APPLIED"
    );
    for (m, own) in s.members.iter().zip(nodes) {
        out.push_str(&format!(
            "{:<6} {:<22} {:<8} {:<12} {:>10} {:>10}\n",
            m.node_id,
            m.addr,
            role(m),
            state(own.as_ref()),
            opt(own.as_ref().and_then(|o| o.last_log_index)),
            opt(own.as_ref().and_then(|o| o.applied_index)),
        ));
    }
    out
}
