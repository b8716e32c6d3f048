//! Talking to a coordinator cluster: connection flags shared by every remote command,
//! [`Remote`], the one way every remote call of the CLI goes (each carries the
//! operator token of `--token`, when there is one), and the `cluster` commands.

use std::future::Future;
use std::io::Write;
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::anyhow;
use flotilla_net::{ClientSecurity, LeaderClient, LeaderError, NetError, ServerTrust, TlsMaterial, channel};
use flotilla_proto::status::{Reason, has_reason, spec_errors};
use flotilla_proto::v1::cluster_client::ClusterClient;
use flotilla_proto::v1::{self, MemberRole, RaftState};
use flotilla_shared::transport::{TlsProblem, Transport, check_host_port};
use tonic::metadata::{AsciiMetadataValue, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;

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
    /// An operator token (`flotilla tokens create`), sent with every call as
    /// `authorization: Bearer TOKEN`. With a token, --tls-ca alone is enough: the
    /// coordinators are verified against the CA and no client certificate is needed.
    #[arg(long, global = true, env = "FLOTILLA_TOKEN", value_name = "TOKEN", hide_env_values = true)]
    token: Option<Secret>,
}

/// The text of `--token`: never printed (its `Debug` hides it), and checked only when
/// a command uses it, so no error message ever repeats it.
#[derive(Clone)]
pub struct Secret(String);

impl std::str::FromStr for Secret {
    type Err = std::convert::Infallible;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self(s.trim().to_owned()))
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

impl Connection {
    /// The operator token, if one was given (an empty one is none).
    fn token(&self) -> Option<&str> {
        self.token.as_ref().map(|t| t.0.as_str()).filter(|t| !t.is_empty())
    }

    fn security(&self) -> Result<ClientSecurity, Failure> {
        let usage = |e: NetError| Failure::Usage(e.into());
        if self.token().is_some() {
            if self.insecure {
                return Err(Failure::Usage(anyhow!(
                    "an operator token needs TLS, and --insecure talks plaintext: drop --insecure and pass --tls-ca (the cluster's CA certificate)"
                )));
            }
            if self.tls_cert.is_none() && self.tls_key.is_none() {
                let ca = self.tls_ca.as_ref().ok_or_else(|| {
                    Failure::Usage(anyhow!(
                        "an operator token needs TLS: pass --tls-ca (the cluster's CA certificate) to verify the coordinators with; no client certificate is needed"
                    ))
                })?;
                return ServerTrust::load(ca).map(ClientSecurity::ServerOnly).map_err(usage);
            }
        }
        let transport = Transport::from_settings(
            self.tls_ca.as_ref(),
            self.tls_cert.as_ref(),
            self.tls_key.as_ref(),
            self.insecure,
        )
        .map_err(|e| match e {
            TlsProblem::Unconfigured | TlsProblem::Incomplete { .. } if self.token().is_none() => {
                Failure::Usage(anyhow!("{e}; with an operator token, --tls-ca and --token are enough"))
            }
            other => Failure::Usage(other.into()),
        })?;
        match transport {
            Transport::Tls(files) => TlsMaterial::load(&files).map(ClientSecurity::Tls).map_err(usage),
            Transport::Insecure => Ok(ClientSecurity::Insecure),
        }
    }

    /// What every call carries: `authorization: Bearer TOKEN` with a token, nothing
    /// without one.
    fn bearer(&self) -> Result<Bearer, Failure> {
        let Some(token) = self.token() else { return Ok(Bearer(None)) };
        if token.starts_with("flotilla-join-v1.") {
            return Err(Failure::Usage(anyhow!(
                "the token given with --token (or FLOTILLA_TOKEN) is a join token, with which hosts enrol their agents; operators use an operator token (`flotilla tokens create`)"
            )));
        }
        let garbled = || {
            Failure::Usage(anyhow!(
                "the token given with --token (or FLOTILLA_TOKEN) contains characters no token has (spaces, control or non-ASCII characters): copy it again"
            ))
        };
        if !token.chars().all(|c| c.is_ascii_graphic()) {
            return Err(garbled());
        }
        let mut value: AsciiMetadataValue =
            MetadataValue::try_from(format!("Bearer {token}")).map_err(|_| garbled())?;
        // Never indexed by HTTP/2 header compression.
        value.set_sensitive(true);
        Ok(Bearer(Some(value)))
    }

    /// The cluster as these flags reach it: what every remote command calls through.
    pub(crate) fn remote(&self) -> Result<Remote, Failure> {
        let security = self.security()?;
        let bearer = self.bearer()?;
        Ok(Remote { leader: LeaderClient::new(self.addrs()?, security.clone()), security, bearer })
    }

    pub(crate) fn addrs(&self) -> Result<Vec<String>, Failure> {
        for addr in &self.coordinators {
            check_host_port(addr).map_err(|why| Failure::Usage(anyhow!("coordinator `{addr}`: {why}")))?;
        }
        Ok(self.coordinators.clone())
    }
}

/// Adds `authorization: Bearer TOKEN` to every call of a channel it wraps: the one
/// place the CLI's calls get the operator token. Its `Debug` hides the token.
#[derive(Clone, Default)]
pub struct Bearer(Option<AsciiMetadataValue>);

impl std::fmt::Debug for Bearer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() { "Bearer(..)" } else { "Bearer(none)" })
    }
}

impl Interceptor for Bearer {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = &self.0 {
            request.metadata_mut().insert("authorization", value.clone());
        }
        Ok(request)
    }
}

/// A channel to a coordinator whose every call carries the [`Bearer`]: what the CLI's
/// gRPC clients are made on.
pub(crate) type Channel = InterceptedService<tonic::transport::Channel, Bearer>;

/// The cluster as a command reaches it: calls on the leader (following hints) or on one
/// coordinator, each carrying the operator token when there is one.
#[derive(Debug)]
pub(crate) struct Remote {
    leader: LeaderClient,
    security: ClientSecurity,
    bearer: Bearer,
}

impl Remote {
    /// A lazily connected channel to the coordinator at `addr`.
    pub(crate) fn channel(&self, addr: &str) -> Result<Channel, NetError> {
        Ok(InterceptedService::new(channel(addr, &self.security)?, self.bearer.clone()))
    }
}

/// What makes calls on the cluster's leader: a [`Remote`], or the bare [`LeaderClient`]
/// of a cluster the CLI runs itself (the demo's, whose operator certificate is all it
/// needs). Every call is made on a [`Channel`], so it carries the token if there is one.
pub(crate) trait Calls {
    /// The leader-following client.
    fn leader(&self) -> &LeaderClient;

    /// What each call carries.
    fn bearer(&self) -> Bearer;

    /// [`LeaderClient::call`] on channels that add the [`Bearer`].
    async fn on_leader<T, F, Fut>(&self, mut call: F) -> Result<T, LeaderError>
    where
        F: FnMut(Channel) -> Fut,
        Fut: Future<Output = Result<T, tonic::Status>>,
    {
        let bearer = self.bearer();
        self.leader().call(|ch| call(InterceptedService::new(ch, bearer.clone()))).await
    }

    /// See [`LeaderClient::note_status`].
    fn note_status(&self, status: &tonic::Status) {
        self.leader().note_status(status);
    }
}

impl Calls for Remote {
    fn leader(&self) -> &LeaderClient {
        &self.leader
    }

    fn bearer(&self) -> Bearer {
        self.bearer.clone()
    }
}

impl Calls for LeaderClient {
    fn leader(&self) -> &LeaderClient {
        self
    }

    fn bearer(&self) -> Bearer {
        Bearer::default()
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
    let remote = conn.remote()?;
    runtime()?.block_on(async {
        let status = match cmd {
            ClusterCommand::Status => {
                // Any node answers; prefer what the leader knows.
                let resp = remote
                    .on_leader(|ch| async move {
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
                let resp = remote
                    .on_leader(|ch| {
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
                let resp = remote
                    .on_leader(
                        |ch| async move { ClusterClient::new(ch).remove_node(req).await.map(|r| r.into_inner()) },
                    )
                    .await
                    .map_err(remote_failure)?;
                if json_out {
                    return print(&json::pretty(&resp)?);
                }
                resp.status.unwrap_or_default()
            }
        };
        let nodes = per_node(&status, &remote).await;
        print(&status_table(&status, &nodes))
    })
}

/// Each member's own view (its state, last log and applied index), `None` when
/// unreachable: as the answer has it when it knows the member's indexes (the leader's
/// view), otherwise asked of the member itself.
async fn per_node(status: &v1::ClusterStatus, remote: &Remote) -> Vec<Option<v1::ClusterMember>> {
    let mut out = Vec::new();
    for m in &status.members {
        if m.last_log_index.is_some() {
            out.push(Some(m.clone()));
            continue;
        }
        let own = async {
            let ch = remote.channel(&m.addr).ok()?;
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

/// This machine's clock, in ms since the Unix epoch.
pub fn now_unix_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use clap::Parser;
    use flotilla_net::pki::{CA_LIFETIME, ClusterCa};

    use super::*;

    #[derive(Debug, Parser)]
    struct Flags {
        #[command(flatten)]
        connection: Connection,
    }

    fn connection(args: &[&str]) -> Connection {
        Flags::try_parse_from([&["flotilla"], args].concat()).expect("the flags parse").connection
    }

    fn usage_error(result: Result<impl std::fmt::Debug, Failure>) -> String {
        match result {
            Err(Failure::Usage(e)) => e.to_string(),
            other => panic!("expected a usage error, got {other:?}"),
        }
    }

    const TOKEN: &str = "flotilla-token-v1.c0ffee.0a1b2c3d.00112233445566778899aabbccddeeff";

    #[test]
    fn a_token_needs_tls_and_the_ca_alone_is_enough() {
        let dir = tempfile::tempdir().unwrap();
        let ca_path = dir.path().join("ca.pem");
        std::fs::write(&ca_path, ClusterCa::create("prod", CA_LIFETIME).unwrap().cert_pem()).unwrap();
        let ca = ca_path.to_str().unwrap();

        let with_ca = connection(&["--token", TOKEN, "--tls-ca", ca]);
        assert!(matches!(with_ca.security(), Ok(ClientSecurity::ServerOnly(_))));

        let insecure = usage_error(connection(&["--token", TOKEN, "--insecure"]).security());
        assert!(insecure.contains("needs TLS") && insecure.contains("--insecure"), "{insecure}");
        let insecure_with_ca = usage_error(connection(&["--token", TOKEN, "--insecure", "--tls-ca", ca]).security());
        assert!(insecure_with_ca.contains("needs TLS"), "{insecure_with_ca}");
        let no_ca = usage_error(connection(&["--token", TOKEN]).security());
        assert!(no_ca.contains("--tls-ca"), "{no_ca}");
        // A certificate without its key is still incomplete.
        let half = usage_error(connection(&["--token", TOKEN, "--tls-ca", ca, "--tls-cert", ca]).security());
        assert!(half.contains("--tls-key"), "{half}");
        // Without a token the CA alone is not enough, and the error says what would be.
        let no_token = usage_error(connection(&["--tls-ca", ca]).security());
        assert!(no_token.contains("--tls-cert") && no_token.contains("--token"), "{no_token}");
        // An empty token (FLOTILLA_TOKEN= ) is none.
        assert!(matches!(connection(&["--token", " ", "--insecure"]).security(), Ok(ClientSecurity::Insecure)));
        assert!(connection(&["--token", "", "--insecure"]).bearer().unwrap().0.is_none());
    }

    #[test]
    fn the_token_rides_on_every_call_and_is_never_shown() {
        let conn = connection(&["--token", &format!("  {TOKEN}\n")]);
        let mut bearer = conn.bearer().unwrap();
        let request = bearer.call(tonic::Request::new(())).unwrap();
        let sent = request.metadata().get("authorization").expect("the header");
        assert_eq!(sent.to_str().unwrap(), format!("Bearer {TOKEN}"), "trimmed");
        assert!(sent.is_sensitive());
        for shown in [format!("{conn:?}"), format!("{bearer:?}"), format!("{:?}", conn.remote().err())] {
            assert!(!shown.contains("c0ffee"), "{shown}");
        }
        let mut none = Bearer::default();
        assert!(none.call(tonic::Request::new(())).unwrap().metadata().get("authorization").is_none());
    }

    #[test]
    fn tokens_that_cannot_be_operator_tokens_are_refused_without_repeating_them() {
        let join = "flotilla-join-v1.aa.0a1b2c3d.00112233445566778899aabbccddeeff";
        let e = usage_error(connection(&["--token", join]).bearer());
        assert!(e.contains("join token") && !e.contains("0a1b2c3d"), "{e}");
        let e = usage_error(connection(&["--token", "secret with spaces"]).bearer());
        assert!(e.contains("characters") && !e.contains("secret"), "{e}");
        let e = usage_error(connection(&["--token", "sécret"]).bearer());
        assert!(!e.contains("sécret"), "{e}");
    }
}
