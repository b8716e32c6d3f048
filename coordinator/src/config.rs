//! The coordinator's configuration: a TOML file (`--config FILE`) whose every key is
//! also a flag; a flag given on the command line overrides the file.
//!
//! ```toml
//! node_id = 1
//! data_dir = "/var/lib/flotilla/coordinator"
//! listen = "0.0.0.0:7600"
//! advertise = "coord-1.internal:7600"
//! http = "127.0.0.1:7680"
//! bootstrap = ["1=coord-1.internal:7600", "2=coord-2.internal:7600", "3=coord-3.internal:7600"]
//! tls_ca = "/etc/flotilla/ca.pem"
//! tls_cert = "/etc/flotilla/coord-1.pem"
//! tls_key = "/etc/flotilla/coord-1.key"
//! tls_ca_key = "/etc/flotilla/ca.key"
//! agent_cert_ttl_ms = 86400000
//! audit_max_records = 100000
//! audit_max_age_ms = 7776000000
//! finished_release_max_count = 100
//! finished_release_max_age_ms = 2592000000
//! compacted_release_max_count = 10000
//! prometheus_url = "http://prometheus.internal:9090"
//! prometheus_timeout_ms = 5000
//! agent_lease_ms = 10000
//! agent_heartbeat_ms = 2000
//! shutdown_timeout_ms = 5000
//!
//! [[notify]]
//! name = "releases-channel"
//! url = "https://hooks.slack.com/services/T000/B000/XXXX"
//! events = ["needs_approval", "paused", "failed", "rolled_back", "succeeded"]
//! format = "slack"
//! ```
//!
//! `[[notify]]` (webhooks told about releases) is the one key with no flag: the leader
//! sets each into the replicated policy, where `flotilla policy hook` sees it.
//!
//! [`CoordinatorConfig::load`] reads the file, applies the flags and validates the
//! result; every problem found is reported at once ([`ConfigError::Invalid`]).

use std::collections::BTreeSet;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use clap::Parser;
use flotilla_shared::transport::{TlsProblem, Transport, check_host_port};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Default of [`CoordinatorConfig::listen`].
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7600";

/// Default of [`CoordinatorConfig::data_dir`].
pub const DEFAULT_DATA_DIR: &str = "/var/lib/flotilla/coordinator";

/// The coordinator's command line. Every config key has a flag of the same name
/// (`node_id` is `--node-id`); flags override the file given with `--config`.
#[derive(Debug, Clone, Default, Parser)]
#[command(
    name = "flotilla-coordinator",
    version,
    about = "Flotilla coordinator: one node of the Raft cluster that stores and runs releases",
    after_help = "Every flag is also a key of the --config TOML file (--node-id is node_id); \
                  a flag overrides the file. TLS needs --tls-ca, --tls-cert and --tls-key \
                  together; plaintext needs an explicit --insecure."
)]
pub struct CoordinatorArgs {
    /// TOML config file; flags override its keys.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Validate the configuration, print the effective config as TOML and exit.
    #[arg(long)]
    pub check_config: bool,
    /// This node's Raft id: non-zero, unique in the cluster (key `node_id`).
    #[arg(long, value_name = "ID")]
    pub node_id: Option<u64>,
    /// Directory of the Raft log, snapshots and state (key `data_dir`)
    /// [default: /var/lib/flotilla/coordinator].
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Address the gRPC server binds (key `listen`) [default: 127.0.0.1:7600].
    #[arg(long, value_name = "IP:PORT")]
    pub listen: Option<SocketAddr>,
    /// Address peers, agents and clients reach this node at (key `advertise`)
    /// [default: the listen address].
    #[arg(long, value_name = "HOST:PORT")]
    pub advertise: Option<String>,
    /// Address of the metrics / web UI HTTP server (key `http`) [default: none].
    #[arg(long, value_name = "IP:PORT")]
    pub http: Option<SocketAddr>,
    /// Initial cluster members, `ID=HOST:PORT` comma-separated (key `bootstrap`,
    /// a list of strings). Used once, on a node without state.
    #[arg(long, value_name = "ID=ADDR", value_delimiter = ',')]
    pub bootstrap: Vec<BootstrapMember>,
    /// CA certificate (PEM) that peers' certificates must chain to (key `tls_ca`).
    #[arg(long, value_name = "FILE")]
    pub tls_ca: Option<PathBuf>,
    /// This node's certificate chain (PEM) (key `tls_cert`).
    #[arg(long, value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,
    /// This node's private key (PEM) (key `tls_key`).
    #[arg(long, value_name = "FILE")]
    pub tls_key: Option<PathBuf>,
    /// The cluster CA's private key (PEM): with it this node signs the certificates
    /// of agents that join with a token, and their renewals (key `tls_ca_key`)
    /// [default: none, enrolment disabled].
    #[arg(long, value_name = "FILE")]
    pub tls_ca_key: Option<PathBuf>,
    /// How long an agent certificate issued at enrolment or renewal is valid, in
    /// milliseconds; agents renew at two thirds of it (key `agent_cert_ttl_ms`)
    /// [default: 86400000, 24 hours].
    #[arg(long, value_name = "MS")]
    pub agent_cert_ttl_ms: Option<u64>,
    /// How many audit records the cluster keeps; the oldest go first (key
    /// `audit_max_records`) [default: 100000]. The leader's setting applies.
    #[arg(long, value_name = "N")]
    pub audit_max_records: Option<u64>,
    /// How long the cluster keeps an audit record, in milliseconds; 0 keeps them
    /// until `audit_max_records` pushes them out (key `audit_max_age_ms`)
    /// [default: 7776000000, 90 days]. The leader's setting applies.
    #[arg(long, value_name = "MS")]
    pub audit_max_age_ms: Option<u64>,
    /// How many finished releases the cluster keeps whole (spec, plan, events,
    /// steps), the most recently finished first; older ones are compacted to a
    /// summary (key `finished_release_max_count`) [default: 100]. The leader's
    /// setting applies.
    #[arg(long, value_name = "N")]
    pub finished_release_max_count: Option<u64>,
    /// How long a finished release is kept whole, in milliseconds; 0 keeps them by
    /// number only (key `finished_release_max_age_ms`) [default: 2592000000, 30
    /// days]. The leader's setting applies.
    #[arg(long, value_name = "MS")]
    pub finished_release_max_age_ms: Option<u64>,
    /// How many compacted releases (summaries) the cluster keeps; the oldest go
    /// first (key `compacted_release_max_count`) [default: 10000]. The leader's
    /// setting applies.
    #[arg(long, value_name = "N")]
    pub compacted_release_max_count: Option<u64>,
    /// The Prometheus server canary analysis queries, `http://` or `https://` (key
    /// `prometheus_url`) [default: none: a release whose spec has metrics is
    /// refused]. The leader's setting applies.
    #[arg(long, value_name = "URL")]
    pub prometheus_url: Option<String>,
    /// A CA certificate (PEM) to trust for an `https` Prometheus, besides the
    /// system's (key `prometheus_ca`) [default: none].
    #[arg(long, value_name = "FILE")]
    pub prometheus_ca: Option<PathBuf>,
    /// The limit of one Prometheus query, in milliseconds (key
    /// `prometheus_timeout_ms`) [default: 5000].
    #[arg(long, value_name = "MS")]
    pub prometheus_timeout_ms: Option<u64>,
    /// Serve and dial plaintext, without TLS (key `insecure`) [default: false].
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub insecure: Option<bool>,
    /// Leader heartbeat interval in milliseconds (key `heartbeat_ms`) [default: 50].
    #[arg(long, value_name = "MS")]
    pub heartbeat_ms: Option<u64>,
    /// Minimum election timeout in milliseconds; the maximum is twice this
    /// (key `election_timeout_ms`) [default: 150].
    #[arg(long, value_name = "MS")]
    pub election_timeout_ms: Option<u64>,
    /// Build a snapshot after this many log entries since the last one
    /// (key `snapshot_logs`) [default: 10000].
    #[arg(long, value_name = "N")]
    pub snapshot_logs: Option<u64>,
    /// Log entries kept behind the latest snapshot for slow followers
    /// (key `keep_logs`) [default: 1000].
    #[arg(long, value_name = "N")]
    pub keep_logs: Option<u64>,
    /// How long the leader keeps a host's lease without hearing from its agent, in
    /// milliseconds (key `agent_lease_ms`) [default: 10000].
    #[arg(long, value_name = "MS")]
    pub agent_lease_ms: Option<u64>,
    /// How often agents send a heartbeat, in milliseconds; at most half the lease
    /// (key `agent_heartbeat_ms`) [default: 2000].
    #[arg(long, value_name = "MS")]
    pub agent_heartbeat_ms: Option<u64>,
    /// How long a stop (SIGTERM) may take, in milliseconds: a leader hands its
    /// leadership over, then open streams and calls are ended and the process exits
    /// whatever is still connected (key `shutdown_timeout_ms`) [default: 5000].
    #[arg(long, value_name = "MS")]
    pub shutdown_timeout_ms: Option<u64>,
    /// Instead of serving: back up or restore this coordinator's state.
    #[command(subcommand)]
    pub command: Option<CoordinatorCommand>,
}

/// What `flotilla-coordinator` does instead of serving.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum CoordinatorCommand {
    /// Back up the state of a running coordinator, or restore a node from a backup.
    #[command(subcommand)]
    Snapshot(SnapshotCommand),
}

/// `flotilla-coordinator snapshot ...`.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum SnapshotCommand {
    /// Save a backup of a running coordinator's state (every release with its events,
    /// the fleet, the audit trail) to FILE. Asks this node (its `advertise` address, or
    /// --from) with the TLS files of the configuration.
    Save {
        /// Where to write the backup (written to a temporary name, checked, then renamed).
        file: PathBuf,
        /// The coordinator to back up, `HOST:PORT` [default: this node's address].
        #[arg(long, value_name = "HOST:PORT")]
        from: Option<String>,
    },
    /// Make this node's data directory (`data_dir`, which must be empty) from a backup,
    /// as a member of the new cluster of its `bootstrap` list. Restore every node of the
    /// new cluster from the same file with the same list, then start them.
    Restore {
        /// The backup to restore.
        file: PathBuf,
        /// Start the restored cluster's terms above this one: give the highest term the
        /// agents have seen when the backup is older than the cluster's last term
        /// (agents refuse steps from a term below it) [default: the backup's term].
        #[arg(long, value_name = "TERM", default_value_t = 0)]
        min_term: u64,
    },
}

/// The coordinator's configuration (the TOML file's shape, and after
/// [`CoordinatorConfig::load`] the effective, validated configuration).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CoordinatorConfig {
    /// This node's Raft id: non-zero and unique in the cluster. Required (no default;
    /// 0 means "not set").
    pub node_id: u64,
    /// Directory of the Raft log, snapshots and state. Default `/var/lib/flotilla/coordinator`.
    pub data_dir: PathBuf,
    /// Address the gRPC server binds (peers, agents, CLI). Default `127.0.0.1:7600`.
    pub listen: SocketAddr,
    /// `HOST:PORT` that peers, agents and clients reach this node at. Default: the
    /// listen address (which must then not be a wildcard like `0.0.0.0`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub advertise: Option<String>,
    /// Address of the metrics / web UI HTTP server. Default: none (not served).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http: Option<SocketAddr>,
    /// The initial cluster, as `ID=HOST:PORT` entries. Nodes started with the same
    /// list form the cluster once; a restart with existing state ignores it.
    /// Default: empty (join an existing cluster through `Cluster.AddNode`).
    pub bootstrap: Vec<BootstrapMember>,
    /// CA certificate (PEM). Default: none. TLS needs `tls_ca`, `tls_cert` and `tls_key`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_ca: Option<PathBuf>,
    /// Certificate chain (PEM) of this node. Default: none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_cert: Option<PathBuf>,
    /// Private key (PEM) of this node. Default: none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_key: Option<PathBuf>,
    /// The cluster CA's private key (PEM), to sign agent certificates at enrolment
    /// and renewal; its certificate must be among `tls_ca`'s. Every node that may lead
    /// needs it for enrolment to work. Default: none (enrolment disabled).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_ca_key: Option<PathBuf>,
    /// Lifetime of agent certificates issued at enrolment and renewal, milliseconds
    /// (agents renew at two thirds of it). At least 1000. Default 86400000 (24 hours).
    pub agent_cert_ttl_ms: u64,
    /// How many audit records the cluster keeps (the oldest go first); at least 1000.
    /// The leader's setting applies to what it commits. Default 100000.
    pub audit_max_records: u64,
    /// How long an audit record is kept, milliseconds; 0: no age limit. The leader's
    /// setting applies. Default 7776000000 (90 days).
    pub audit_max_age_ms: u64,
    /// How many finished releases are kept whole, the most recently finished first;
    /// older ones are compacted to a summary. At least 1. The leader's setting
    /// applies. Default 100.
    pub finished_release_max_count: u64,
    /// How long a finished release is kept whole, milliseconds; 0: by number only.
    /// The leader's setting applies. Default 2592000000 (30 days).
    pub finished_release_max_age_ms: u64,
    /// How many compacted releases are kept (the oldest go first). The leader's
    /// setting applies. Default 10000.
    pub compacted_release_max_count: u64,
    /// The Prometheus server canary analysis queries (`http://` or `https://`).
    /// Default: none (an analysis then finds every query failing, and pauses).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prometheus_url: Option<String>,
    /// A CA (PEM) to trust for an `https` Prometheus. Default: none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prometheus_ca: Option<PathBuf>,
    /// The limit of one Prometheus query, milliseconds. Above 0. Default 5000.
    pub prometheus_timeout_ms: u64,
    /// Plaintext gRPC, without TLS. Default `false`; required (and only allowed)
    /// when no TLS file is given.
    pub insecure: bool,
    /// Leader heartbeat interval, milliseconds. Default 50.
    pub heartbeat_ms: u64,
    /// Minimum election timeout, milliseconds (the maximum is twice this); at least
    /// three heartbeats. Default 150.
    pub election_timeout_ms: u64,
    /// A snapshot is built after this many log entries since the last one. Default 10000.
    pub snapshot_logs: u64,
    /// Log entries kept behind the latest snapshot, so a briefly lagging follower
    /// catches up from the log rather than a snapshot. Default 1000.
    pub keep_logs: u64,
    /// How long the leader keeps a host's lease without hearing from its agent,
    /// milliseconds; when it runs out the host is marked lost (through Raft).
    /// Default 10000.
    pub agent_lease_ms: u64,
    /// How often agents send a heartbeat (told to them in `Welcome`), milliseconds;
    /// above 0 and at most half of `agent_lease_ms`. Default 2000.
    pub agent_heartbeat_ms: u64,
    /// How long a stop (SIGTERM, [`crate::daemon::Daemon::stop`]) may take,
    /// milliseconds: a leader first hands its leadership to the most caught-up
    /// voter, then watch streams, agent sessions and calls still open are ended
    /// with a leader hint, and what remains after this long is dropped. Above 0.
    /// Default 5000.
    pub shutdown_timeout_ms: u64,
    /// Webhooks told about releases (file only). Each leader sets them into the
    /// replicated policy when it takes over, so give every coordinator the same list.
    /// Default: none.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notify: Vec<NotifyConfig>,
}

/// One `[[notify]]` webhook of the configuration file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotifyConfig {
    /// Its name, unique in the cluster.
    pub name: String,
    /// Where requests go (`http://` or `https://`).
    pub url: String,
    /// What it is told about: `started`, `needs_approval`, `paused`, `failed`,
    /// `rolled_back`, `succeeded`, `aborted`.
    pub events: Vec<String>,
    /// `json` (default) or `slack`.
    #[serde(default = "default_notify_format")]
    pub format: String,
}

fn default_notify_format() -> String {
    "json".to_owned()
}

impl NotifyConfig {
    /// The hook it stands for, or what is wrong with it.
    pub fn hook(&self) -> Result<crate::state::Hook, String> {
        use crate::state::{Hook, HookFormat, NotifyKind};
        let name = self.name.trim();
        if !crate::state::valid_name(name) {
            return Err(format!("name `{name}`: a name is 1 to 63 letters, digits, `-`, `_` or `.`"));
        }
        crate::server::policy::check_hook_url(self.url.trim())?;
        let kinds = self.events.iter().map(|e| NotifyKind::parse(e)).collect::<Result<BTreeSet<_>, _>>()?;
        if kinds.is_empty() {
            return Err("events is empty: name what the hook is told about (started, succeeded, ...)".to_owned());
        }
        let format = match self.format.trim() {
            "json" => HookFormat::Json,
            "slack" => HookFormat::Slack,
            other => return Err(format!("format `{other}`: use json or slack")),
        };
        Ok(Hook { name: name.to_owned(), url: self.url.trim().to_owned(), kinds, format, from_config: true })
    }
}

impl CoordinatorConfig {
    /// The `[[notify]]` webhooks (validated: each is one).
    pub fn hooks(&self) -> Vec<crate::state::Hook> {
        self.notify.iter().filter_map(|n| n.hook().ok()).collect()
    }

    /// The release history this node keeps, and proposes while it leads.
    pub fn release_retention(&self) -> crate::state::ReleaseRetention {
        crate::state::ReleaseRetention {
            max_finished: self.finished_release_max_count,
            max_age_ms: self.finished_release_max_age_ms,
            max_compacted: self.compacted_release_max_count,
        }
    }
}

impl Default for CoordinatorConfig {
    fn default() -> Self {
        Self {
            node_id: 0,
            data_dir: PathBuf::from(DEFAULT_DATA_DIR),
            listen: DEFAULT_LISTEN.parse().expect("the default listen address parses"),
            advertise: None,
            http: None,
            bootstrap: Vec::new(),
            tls_ca: None,
            tls_cert: None,
            tls_key: None,
            tls_ca_key: None,
            agent_cert_ttl_ms: 86_400_000,
            audit_max_records: crate::state::Retention::default().max_records,
            audit_max_age_ms: crate::state::Retention::default().max_age_ms,
            finished_release_max_count: crate::state::ReleaseRetention::default().max_finished,
            finished_release_max_age_ms: crate::state::ReleaseRetention::default().max_age_ms,
            compacted_release_max_count: crate::state::ReleaseRetention::default().max_compacted,
            prometheus_url: None,
            prometheus_ca: None,
            prometheus_timeout_ms: 5_000,
            insecure: false,
            heartbeat_ms: 50,
            election_timeout_ms: 150,
            snapshot_logs: 10_000,
            keep_logs: 1_000,
            agent_lease_ms: 10_000,
            agent_heartbeat_ms: 2_000,
            shutdown_timeout_ms: 5_000,
            notify: Vec::new(),
        }
    }
}

/// One entry of `bootstrap`: a node id and the address it advertises (`2=10.0.0.2:7600`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BootstrapMember {
    /// The node id (non-zero).
    pub id: u64,
    /// Its advertised `HOST:PORT`.
    pub addr: String,
}

impl FromStr for BootstrapMember {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let Some((id, addr)) = s.split_once('=') else {
            return Err(format!("bootstrap entry `{s}` is not ID=HOST:PORT (e.g. 1=10.0.0.1:7600)"));
        };
        let id: u64 = id
            .trim()
            .parse()
            .map_err(|_| format!("bootstrap entry `{s}`: node id `{}` is not a positive integer", id.trim()))?;
        if id == 0 {
            return Err(format!("bootstrap entry `{s}`: node ids start at 1"));
        }
        let addr = addr.trim();
        check_host_port(addr).map_err(|why| format!("bootstrap entry `{s}`: {why}"))?;
        Ok(Self { id, addr: addr.to_owned() })
    }
}

impl fmt::Display for BootstrapMember {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}={}", self.id, self.addr)
    }
}

impl Serialize for BootstrapMember {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for BootstrapMember {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// Why a configuration could not be used.
pub type ConfigError = flotilla_net::config::ConfigError<Problem>;

/// One broken rule of a merged configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    /// A CA key on a plaintext node.
    #[error("tls_ca_key needs TLS: agents enrol only over TLS (drop --insecure, or drop --tls-ca-key)")]
    CaKeyWithoutTls,
    /// Agent certificates too short-lived.
    #[error("audit_max_records is {audit_max_records}: keep at least 1000 audit records")]
    AuditRecords {
        /// The value.
        audit_max_records: u64,
    },
    /// No finished release kept whole.
    #[error(
        "finished_release_max_count is 0: keep at least the last finished release whole (its events are what a watcher reads as it ends)"
    )]
    FinishedReleases,
    /// A Prometheus URL that is not one.
    #[error("prometheus_url `{url}` is not an http:// or https:// URL with a host, like http://prometheus:9090")]
    PrometheusUrl {
        /// The value given.
        url: String,
    },
    /// A Prometheus CA without an https URL.
    #[error("prometheus_ca is set but prometheus_url is not an https:// URL: the CA would never be used")]
    PrometheusCaWithoutHttps,
    /// A zero query limit.
    #[error("prometheus_timeout_ms is 0: give a query limit above 0, like 5000")]
    PrometheusTimeout,
    /// A `[[notify]]` webhook that is not one.
    #[error("[[notify]] number {position}: {why}")]
    Notify {
        /// Its position in the file, from 1.
        position: usize,
        /// What is wrong.
        why: String,
    },
    /// Two `[[notify]]` webhooks of one name.
    #[error("[[notify]] name `{name}` is given twice: each webhook has its own name")]
    NotifyTwice {
        /// The name.
        name: String,
    },
    #[error("agent_cert_ttl_ms is {agent_cert_ttl_ms}: agent certificates must live at least 1000 ms")]
    AgentCertTtl {
        /// The value given.
        agent_cert_ttl_ms: u64,
    },
    /// No node id.
    #[error("node_id is required: pass --node-id N or set `node_id = N` (a non-zero integer unique in the cluster)")]
    MissingNodeId,
    /// `advertise` is not `HOST:PORT`.
    #[error("advertise `{value}`: {why}")]
    BadAdvertise {
        /// The value given.
        value: String,
        /// What is wrong with it.
        why: String,
    },
    /// `advertise` unset while `listen` is a wildcard address nobody can dial.
    #[error(
        "listen {listen} is a wildcard address that peers cannot dial: set --advertise (key `advertise`) to HOST:PORT they can reach"
    )]
    WildcardListen {
        /// The listen address.
        listen: SocketAddr,
    },
    /// Two bootstrap entries share a node id.
    #[error("bootstrap lists node {id} twice ({first} and {second})")]
    DuplicateBootstrapId {
        /// The id.
        id: u64,
        /// Its first address.
        first: String,
        /// Its second address.
        second: String,
    },
    /// Two bootstrap entries share an address.
    #[error("bootstrap lists address {addr} for two nodes ({first} and {second})")]
    DuplicateBootstrapAddr {
        /// The address.
        addr: String,
        /// The first node id.
        first: u64,
        /// The second node id.
        second: u64,
    },
    /// Heartbeats too slow for the election timeout (or zero).
    #[error(
        "election_timeout_ms ({election_timeout_ms}) must be at least three heartbeats (heartbeat_ms {heartbeat_ms}, which must be above 0)"
    )]
    Timing {
        /// The heartbeat interval given.
        heartbeat_ms: u64,
        /// The election timeout given.
        election_timeout_ms: u64,
    },
    /// `snapshot_logs` is 0.
    #[error("snapshot_logs must be at least 1")]
    SnapshotLogs,
    /// `shutdown_timeout_ms` is 0.
    #[error("shutdown_timeout_ms must be above 0 (a stop needs time to hand the leadership over)")]
    ShutdownTimeout,
    /// Agent heartbeats too slow for the lease (or zero).
    #[error(
        "agent_lease_ms ({agent_lease_ms}) must be at least two heartbeats (agent_heartbeat_ms {agent_heartbeat_ms}, which must be above 0)"
    )]
    AgentLease {
        /// The heartbeat interval given.
        agent_heartbeat_ms: u64,
        /// The lease given.
        agent_lease_ms: u64,
    },
    /// This node is not in its own bootstrap list.
    #[error("node_id {node_id} is not in bootstrap ({members}): every node of the initial cluster must list itself")]
    NotInBootstrap {
        /// This node's id.
        node_id: u64,
        /// The ids listed.
        members: String,
    },
    /// A data dir that is empty.
    #[error("data_dir must not be empty")]
    EmptyDataDir,
    /// A TLS rule is broken.
    #[error("{0}")]
    Tls(TlsProblem),
}

impl CoordinatorConfig {
    /// The effective configuration: the `--config` file if any (else the defaults),
    /// overridden by the flags given, then validated and completed (`advertise`
    /// filled in from `listen`).
    pub fn load(args: &CoordinatorArgs) -> Result<Self, ConfigError> {
        let mut config = match &args.config {
            Some(path) => Self::from_file(path)?,
            None => Self::default(),
        };
        config.apply(args);
        config.validate()
    }

    /// Reads a config file (not validated).
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        flotilla_net::config::read(path)
    }

    /// Parses config TOML (not validated); `origin` names it in errors.
    pub fn from_toml(text: &str, origin: &Path) -> Result<Self, ConfigError> {
        flotilla_net::config::parse(text, origin)
    }

    /// Overrides keys with the flags that were given.
    pub fn apply(&mut self, args: &CoordinatorArgs) {
        if let Some(node_id) = args.node_id {
            self.node_id = node_id;
        }
        if let Some(dir) = &args.data_dir {
            self.data_dir.clone_from(dir);
        }
        if let Some(listen) = args.listen {
            self.listen = listen;
        }
        if let Some(advertise) = &args.advertise {
            self.advertise = Some(advertise.clone());
        }
        if let Some(http) = args.http {
            self.http = Some(http);
        }
        if !args.bootstrap.is_empty() {
            self.bootstrap.clone_from(&args.bootstrap);
        }
        if let Some(ca) = &args.tls_ca {
            self.tls_ca = Some(ca.clone());
        }
        if let Some(cert) = &args.tls_cert {
            self.tls_cert = Some(cert.clone());
        }
        if let Some(key) = &args.tls_key {
            self.tls_key = Some(key.clone());
        }
        if let Some(key) = &args.tls_ca_key {
            self.tls_ca_key = Some(key.clone());
        }
        if let Some(insecure) = args.insecure {
            self.insecure = insecure;
        }
        if let Some(url) = &args.prometheus_url {
            self.prometheus_url = Some(url.clone());
        }
        if let Some(ca) = &args.prometheus_ca {
            self.prometheus_ca = Some(ca.clone());
        }
        for (flag, key) in [
            (args.heartbeat_ms, &mut self.heartbeat_ms),
            (args.election_timeout_ms, &mut self.election_timeout_ms),
            (args.snapshot_logs, &mut self.snapshot_logs),
            (args.keep_logs, &mut self.keep_logs),
            (args.agent_lease_ms, &mut self.agent_lease_ms),
            (args.agent_heartbeat_ms, &mut self.agent_heartbeat_ms),
            (args.shutdown_timeout_ms, &mut self.shutdown_timeout_ms),
            (args.agent_cert_ttl_ms, &mut self.agent_cert_ttl_ms),
            (args.audit_max_records, &mut self.audit_max_records),
            (args.audit_max_age_ms, &mut self.audit_max_age_ms),
            (args.finished_release_max_count, &mut self.finished_release_max_count),
            (args.finished_release_max_age_ms, &mut self.finished_release_max_age_ms),
            (args.compacted_release_max_count, &mut self.compacted_release_max_count),
            (args.prometheus_timeout_ms, &mut self.prometheus_timeout_ms),
        ] {
            if let Some(value) = flag {
                *key = value;
            }
        }
    }

    /// Checks every rule, reporting all problems at once; on success fills in
    /// `advertise` from `listen` when unset.
    pub fn validate(mut self) -> Result<Self, ConfigError> {
        let mut problems = Vec::new();
        if self.node_id == 0 {
            problems.push(Problem::MissingNodeId);
        }
        if self.data_dir.as_os_str().is_empty() {
            problems.push(Problem::EmptyDataDir);
        }
        match &self.advertise {
            Some(value) => {
                if let Err(why) = check_host_port(value) {
                    problems.push(Problem::BadAdvertise { value: value.clone(), why });
                }
            }
            None if self.listen.ip().is_unspecified() => {
                problems.push(Problem::WildcardListen { listen: self.listen });
            }
            None => {}
        }
        problems.extend(check_bootstrap(self.node_id, &self.bootstrap));
        if self.heartbeat_ms == 0 || self.election_timeout_ms < 3 * self.heartbeat_ms {
            problems.push(Problem::Timing {
                heartbeat_ms: self.heartbeat_ms,
                election_timeout_ms: self.election_timeout_ms,
            });
        }
        if self.snapshot_logs == 0 {
            problems.push(Problem::SnapshotLogs);
        }
        if self.agent_heartbeat_ms == 0 || self.agent_lease_ms < 2 * self.agent_heartbeat_ms {
            problems.push(Problem::AgentLease {
                agent_heartbeat_ms: self.agent_heartbeat_ms,
                agent_lease_ms: self.agent_lease_ms,
            });
        }
        if self.shutdown_timeout_ms == 0 {
            problems.push(Problem::ShutdownTimeout);
        }
        if let Err(tls) = self.transport() {
            problems.push(Problem::Tls(tls));
        }
        if self.tls_ca_key.is_some() && self.insecure {
            problems.push(Problem::CaKeyWithoutTls);
        }
        if self.agent_cert_ttl_ms < 1_000 {
            problems.push(Problem::AgentCertTtl { agent_cert_ttl_ms: self.agent_cert_ttl_ms });
        }
        if self.audit_max_records < 1_000 {
            problems.push(Problem::AuditRecords { audit_max_records: self.audit_max_records });
        }
        if self.finished_release_max_count < 1 {
            problems.push(Problem::FinishedReleases);
        }
        problems.extend(self.prometheus_problems());
        let mut names = BTreeSet::new();
        for (i, n) in self.notify.iter().enumerate() {
            match n.hook() {
                Ok(hook) if !names.insert(hook.name.clone()) => problems.push(Problem::NotifyTwice { name: hook.name }),
                Ok(_) => {}
                Err(why) => problems.push(Problem::Notify { position: i + 1, why }),
            }
        }
        if !problems.is_empty() {
            return Err(ConfigError::Invalid { problems });
        }
        if self.advertise.is_none() {
            self.advertise = Some(self.listen.to_string());
        }
        Ok(self)
    }

    /// What is wrong with the Prometheus settings.
    fn prometheus_problems(&self) -> Vec<Problem> {
        let mut problems = Vec::new();
        if let Some(url) = &self.prometheus_url {
            let scheme_ok = url.starts_with("http://") || url.starts_with("https://");
            let host = url.split_once("://").map_or("", |(_, rest)| rest);
            if !scheme_ok || host.is_empty() || host.starts_with('/') {
                problems.push(Problem::PrometheusUrl { url: url.clone() });
            }
        }
        if self.prometheus_ca.is_some() && !self.prometheus_url.as_deref().is_some_and(|u| u.starts_with("https://")) {
            problems.push(Problem::PrometheusCaWithoutHttps);
        }
        if self.prometheus_timeout_ms == 0 {
            problems.push(Problem::PrometheusTimeout);
        }
        problems
    }

    /// The Prometheus server canary analysis queries, when one is configured.
    pub fn prometheus(&self) -> Option<crate::prometheus::PrometheusSettings> {
        self.prometheus_url.as_ref().map(|url| crate::prometheus::PrometheusSettings {
            url: url.clone(),
            ca: self.prometheus_ca.clone(),
            timeout: std::time::Duration::from_millis(self.prometheus_timeout_ms),
        })
    }

    /// The address this node is reached at: `advertise`, or the listen address.
    pub fn advertise_addr(&self) -> String {
        self.advertise.clone().unwrap_or_else(|| self.listen.to_string())
    }

    /// The bootstrap list as `(node id, address)` pairs.
    pub fn bootstrap_pairs(&self) -> Vec<(u64, String)> {
        self.bootstrap.iter().map(|m| (m.id, m.addr.clone())).collect()
    }

    /// The agent hub's lease and heartbeat settings (queue sizes at their defaults).
    pub fn hub_settings(&self) -> crate::fleet::HubSettings {
        crate::fleet::HubSettings {
            lease: std::time::Duration::from_millis(self.agent_lease_ms),
            heartbeat_interval: std::time::Duration::from_millis(self.agent_heartbeat_ms),
            ..Default::default()
        }
    }

    /// The transport the TLS rule selects: all three TLS files, or `insecure`.
    pub fn transport(&self) -> Result<Transport, TlsProblem> {
        Transport::from_settings(self.tls_ca.as_ref(), self.tls_cert.as_ref(), self.tls_key.as_ref(), self.insecure)
    }

    /// The configuration as TOML (what `--check-config` prints).
    pub fn to_toml(&self) -> String {
        flotilla_net::config::to_toml(self)
    }
}

fn check_bootstrap(node_id: u64, members: &[BootstrapMember]) -> Vec<Problem> {
    let mut problems = Vec::new();
    for (i, a) in members.iter().enumerate() {
        for b in &members[..i] {
            if a.id == b.id && a.addr != b.addr {
                problems.push(Problem::DuplicateBootstrapId {
                    id: a.id,
                    first: b.addr.clone(),
                    second: a.addr.clone(),
                });
            } else if a.addr == b.addr && a.id != b.id {
                problems.push(Problem::DuplicateBootstrapAddr { addr: a.addr.clone(), first: b.id, second: a.id });
            }
        }
    }
    if node_id != 0 && !members.is_empty() && !members.iter().any(|m| m.id == node_id) {
        let ids: BTreeSet<u64> = members.iter().map(|m| m.id).collect();
        let members = ids.iter().map(u64::to_string).collect::<Vec<_>>().join(", ");
        problems.push(Problem::NotInBootstrap { node_id, members });
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;
    use flotilla_shared::transport::TlsFiles;

    fn args(flags: &[&str]) -> CoordinatorArgs {
        let mut argv = vec!["flotilla-coordinator"];
        argv.extend_from_slice(flags);
        CoordinatorArgs::try_parse_from(argv).expect("flags parse")
    }

    fn load(flags: &[&str]) -> Result<CoordinatorConfig, ConfigError> {
        CoordinatorConfig::load(&args(flags))
    }

    fn problems(result: Result<CoordinatorConfig, ConfigError>) -> Vec<Problem> {
        match result {
            Err(ConfigError::Invalid { problems }) => problems,
            other => panic!("expected an invalid config, got {other:?}"),
        }
    }

    /// A config file in a fresh temporary directory.
    struct TempFile(PathBuf);

    impl TempFile {
        fn new(name: &str, text: &str) -> Self {
            let dir = std::env::temp_dir().join(format!("flotilla-coordinator-config-{}-{name}", std::process::id()));
            std::fs::create_dir_all(&dir).expect("temp dir");
            let path = dir.join("coordinator.toml");
            std::fs::write(&path, text).expect("write temp config");
            Self(path)
        }

        fn path(&self) -> &str {
            self.0.to_str().expect("utf-8 temp path")
        }
    }

    impl Drop for TempFile {
        fn drop(&mut self) {
            if let Some(dir) = self.0.parent() {
                let _ = std::fs::remove_dir_all(dir);
            }
        }
    }

    #[test]
    fn defaults_with_flags_only() {
        let config = load(&["--node-id", "1", "--insecure"]).expect("valid");
        assert_eq!(config.node_id, 1);
        assert_eq!(config.listen, "127.0.0.1:7600".parse::<SocketAddr>().expect("addr"));
        assert_eq!(config.advertise.as_deref(), Some("127.0.0.1:7600"), "advertise defaults to listen");
        assert_eq!(config.data_dir, PathBuf::from(DEFAULT_DATA_DIR));
        assert_eq!(config.http, None);
        assert!(config.bootstrap.is_empty());
        assert_eq!(config.transport(), Ok(Transport::Insecure));
    }

    #[test]
    fn file_is_read_and_flags_override_it() {
        let file = TempFile::new(
            "override",
            r#"
node_id = 1
data_dir = "/srv/flotilla"
listen = "0.0.0.0:7600"
advertise = "coord-1.internal:7600"
http = "127.0.0.1:7680"
bootstrap = ["1=coord-1.internal:7600", "2=coord-2.internal:7600", "3=coord-3.internal:7600"]
tls_ca = "/etc/flotilla/ca.pem"
tls_cert = "/etc/flotilla/c1.pem"
tls_key = "/etc/flotilla/c1.key"
"#,
        );
        let from_file = load(&["--config", file.path()]).expect("valid file");
        assert_eq!(from_file.node_id, 1);
        assert_eq!(from_file.data_dir, PathBuf::from("/srv/flotilla"));
        assert_eq!(from_file.http, Some("127.0.0.1:7680".parse().expect("addr")));
        assert_eq!(
            from_file.bootstrap_pairs(),
            vec![
                (1, "coord-1.internal:7600".to_owned()),
                (2, "coord-2.internal:7600".to_owned()),
                (3, "coord-3.internal:7600".to_owned()),
            ]
        );
        assert_eq!(
            from_file.transport(),
            Ok(Transport::Tls(TlsFiles {
                ca: "/etc/flotilla/ca.pem".into(),
                cert: "/etc/flotilla/c1.pem".into(),
                key: "/etc/flotilla/c1.key".into(),
            }))
        );

        let overridden = load(&[
            "--config",
            file.path(),
            "--node-id",
            "2",
            "--advertise",
            "coord-2.internal:7600",
            "--data-dir",
            "/tmp/c2",
            "--bootstrap",
            "1=a:1,2=b:2",
            "--tls-key",
            "/other.key",
        ])
        .expect("valid override");
        assert_eq!(overridden.node_id, 2);
        assert_eq!(overridden.advertise_addr(), "coord-2.internal:7600");
        assert_eq!(overridden.data_dir, PathBuf::from("/tmp/c2"));
        assert_eq!(overridden.bootstrap_pairs(), vec![(1, "a:1".to_owned()), (2, "b:2".to_owned())]);
        assert_eq!(overridden.tls_key, Some(PathBuf::from("/other.key")));
        // Keys without a flag keep the file's value.
        assert_eq!(overridden.http, from_file.http);
        assert_eq!(overridden.listen, from_file.listen);
    }

    #[test]
    fn insecure_flag_can_be_switched_off_explicitly() {
        let file = TempFile::new("insecure", "node_id = 1\ninsecure = true\n");
        let config = load(&["--config", file.path()]).expect("valid");
        assert_eq!(config.transport(), Ok(Transport::Insecure));
        let err = problems(load(&["--config", file.path(), "--insecure=false"]));
        assert_eq!(err, vec![Problem::Tls(TlsProblem::Unconfigured)]);
    }

    #[test]
    fn unknown_keys_and_bad_values_in_the_file_are_refused_with_their_place() {
        let err = CoordinatorConfig::from_toml("node_id = 1\nlisten_addr = \"x\"\n", Path::new("c.toml"))
            .expect_err("unknown key");
        let text = err.to_string();
        assert!(text.starts_with("config file c.toml:"), "{text}");
        assert!(text.contains("listen_addr"), "{text}");
        assert!(text.contains("line 2"), "{text}");

        let err = CoordinatorConfig::from_toml("bootstrap = [\"1=a:1\", \"two=b:2\"]\n", Path::new("c.toml"))
            .expect_err("bad bootstrap");
        assert!(err.to_string().contains("node id `two` is not a positive integer"), "{err}");

        let err =
            CoordinatorConfig::from_toml("listen = \"localhost\"\n", Path::new("c.toml")).expect_err("bad listen");
        assert!(err.to_string().contains("listen"), "{err}");
    }

    #[test]
    fn missing_file_is_a_read_error() {
        let err = load(&["--config", "/nonexistent/flotilla.toml"]).expect_err("missing file");
        assert!(matches!(err, ConfigError::Read { .. }), "{err:?}");
        assert!(err.to_string().contains("/nonexistent/flotilla.toml"), "{err}");
    }

    #[test]
    fn bootstrap_entries_parse_with_clear_errors() {
        let ok: BootstrapMember = " 3 = [::1]:7603 ".parse().expect("valid");
        assert_eq!(ok, BootstrapMember { id: 3, addr: "[::1]:7603".to_owned() });
        assert_eq!(ok.to_string(), "3=[::1]:7603");

        let cases = [
            ("10.0.0.1:7600", "is not ID=HOST:PORT"),
            ("x=10.0.0.1:7600", "node id `x` is not a positive integer"),
            ("-1=10.0.0.1:7600", "is not a positive integer"),
            ("0=10.0.0.1:7600", "node ids start at 1"),
            ("1=10.0.0.1", "expected HOST:PORT"),
            ("1=10.0.0.1:http", "port `http` is not a number"),
            ("1=10.0.0.1:0", "port `0` is not a number between 1 and 65535"),
            ("1=:7600", "the host part is empty"),
            ("1=http://a:7600", "without a scheme"),
            ("1=::1:7600", "IPv6 address must be in brackets"),
        ];
        for (input, expected) in cases {
            let err = input.parse::<BootstrapMember>().expect_err(input);
            assert!(err.contains(expected), "{input}: {err}");
        }

        // Through clap, a bad entry is a usage error that names the flag.
        let err = CoordinatorArgs::try_parse_from(["flotilla-coordinator", "--bootstrap", "1=a:1,b:2"])
            .expect_err("bad flag");
        let text = err.to_string();
        assert!(text.contains("--bootstrap") && text.contains("is not ID=HOST:PORT"), "{text}");
    }

    #[test]
    fn bootstrap_list_is_checked_as_a_whole() {
        let err = problems(load(&["--node-id", "4", "--insecure", "--bootstrap", "1=a:1,2=b:2,1=c:3,3=b:2"]));
        assert_eq!(
            err,
            vec![
                Problem::DuplicateBootstrapId { id: 1, first: "a:1".to_owned(), second: "c:3".to_owned() },
                Problem::DuplicateBootstrapAddr { addr: "b:2".to_owned(), first: 2, second: 3 },
                Problem::NotInBootstrap { node_id: 4, members: "1, 2, 3".to_owned() },
            ]
        );
        // The same entry twice is harmless.
        load(&["--node-id", "1", "--insecure", "--bootstrap", "1=a:1,1=a:1"]).expect("valid");
    }

    #[test]
    fn the_prometheus_settings_are_checked_and_become_the_client_settings() {
        let config = load(&[
            "--node-id",
            "1",
            "--insecure",
            "--prometheus-url",
            "https://prom.internal:9090/prefix",
            "--prometheus-ca",
            "/etc/ca.pem",
            "--prometheus-timeout-ms",
            "2500",
        ])
        .expect("valid");
        let p = config.prometheus().expect("configured");
        assert_eq!(
            (p.url.as_str(), p.timeout),
            ("https://prom.internal:9090/prefix", std::time::Duration::from_millis(2500))
        );
        assert_eq!(p.ca.as_deref(), Some(Path::new("/etc/ca.pem")));
        assert!(load(&["--node-id", "1", "--insecure"]).expect("valid").prometheus().is_none(), "none by default");
        assert_eq!(
            problems(load(&["--node-id", "1", "--insecure", "--prometheus-url", "prom:9090"])),
            vec![Problem::PrometheusUrl { url: "prom:9090".to_owned() }]
        );
        assert_eq!(
            problems(load(&[
                "--node-id",
                "1",
                "--insecure",
                "--prometheus-url",
                "http://prom:9090",
                "--prometheus-ca",
                "/ca.pem",
                "--prometheus-timeout-ms",
                "0"
            ])),
            vec![Problem::PrometheusCaWithoutHttps, Problem::PrometheusTimeout]
        );
    }

    #[test]
    fn node_id_is_required() {
        assert_eq!(problems(load(&["--insecure"])), vec![Problem::MissingNodeId]);
        assert_eq!(problems(load(&["--insecure", "--node-id", "0"])), vec![Problem::MissingNodeId]);
    }

    #[test]
    fn the_shutdown_timeout_defaults_to_five_seconds_and_must_be_above_zero() {
        assert_eq!(load(&["--node-id", "1", "--insecure"]).expect("valid").shutdown_timeout_ms, 5_000);
        let config = load(&["--node-id", "1", "--insecure", "--shutdown-timeout-ms", "800"]).expect("valid");
        assert_eq!(config.shutdown_timeout_ms, 800);
        let err = problems(load(&["--node-id", "1", "--insecure", "--shutdown-timeout-ms", "0"]));
        assert_eq!(err, vec![Problem::ShutdownTimeout]);
    }

    #[test]
    fn wildcard_listen_needs_advertise() {
        let err = problems(load(&["--node-id", "1", "--insecure", "--listen", "0.0.0.0:7600"]));
        assert_eq!(err, vec![Problem::WildcardListen { listen: "0.0.0.0:7600".parse().expect("addr") }]);
        let ok = load(&["--node-id", "1", "--insecure", "--listen", "0.0.0.0:7600", "--advertise", "10.0.0.1:7600"])
            .expect("valid");
        assert_eq!(ok.advertise_addr(), "10.0.0.1:7600");
        let err = problems(load(&["--node-id", "1", "--insecure", "--advertise", "nope"]));
        assert!(matches!(&err[..], [Problem::BadAdvertise { .. }]), "{err:?}");
    }

    #[test]
    fn tls_needs_all_three_files_or_insecure() {
        assert_eq!(problems(load(&["--node-id", "1"])), vec![Problem::Tls(TlsProblem::Unconfigured)]);
        assert_eq!(
            problems(load(&["--node-id", "1", "--tls-ca", "ca.pem", "--tls-cert", "c.pem"])),
            vec![Problem::Tls(TlsProblem::Incomplete { missing: vec!["--tls-key"] })]
        );
        assert_eq!(
            problems(load(&["--node-id", "1", "--tls-key", "c.key"])),
            vec![Problem::Tls(TlsProblem::Incomplete { missing: vec!["--tls-ca", "--tls-cert"] })]
        );
        assert_eq!(
            problems(load(&["--node-id", "1", "--insecure", "--tls-ca", "ca.pem"])),
            vec![Problem::Tls(TlsProblem::InsecureWithTls { given: vec!["--tls-ca"] })]
        );
        let tls = load(&["--node-id", "1", "--tls-ca", "ca.pem", "--tls-cert", "c.pem", "--tls-key", "c.key"])
            .expect("valid");
        assert!(matches!(tls.transport(), Ok(Transport::Tls(_))));

        let text = ConfigError::Invalid { problems: vec![Problem::Tls(TlsProblem::Unconfigured)] }.to_string();
        assert!(text.contains("--insecure to run plaintext on purpose"), "{text}");
    }

    #[test]
    fn agent_lease_and_heartbeat_have_defaults_flags_and_a_rule() {
        let config = load(&["--node-id", "1", "--insecure"]).expect("valid");
        let hub = config.hub_settings();
        assert_eq!(hub.lease, std::time::Duration::from_secs(10));
        assert_eq!(hub.heartbeat_interval, std::time::Duration::from_secs(2));

        let file = TempFile::new("agent-lease", "node_id = 1\ninsecure = true\nagent_lease_ms = 3000\n");
        let config = load(&["--config", file.path(), "--agent-heartbeat-ms", "1000"]).expect("valid");
        assert_eq!((config.agent_lease_ms, config.agent_heartbeat_ms), (3_000, 1_000));

        let err = problems(load(&["--node-id", "1", "--insecure", "--agent-lease-ms", "3000"]));
        assert_eq!(err, vec![Problem::AgentLease { agent_heartbeat_ms: 2_000, agent_lease_ms: 3_000 }]);
        let err = problems(load(&["--node-id", "1", "--insecure", "--agent-heartbeat-ms", "0"]));
        assert!(err[0].to_string().contains("which must be above 0"), "{err:?}");
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let err = load(&["--node-id", "0", "--bootstrap", "1=a:1", "--tls-cert", "c.pem"]).expect_err("invalid");
        let text = err.to_string();
        assert!(text.starts_with("invalid configuration:\n  - node_id is required"), "{text}");
        assert!(text.contains("incomplete TLS"), "{text}");
        assert_eq!(text.lines().count(), 3, "{text}");
    }

    #[test]
    fn effective_config_prints_as_toml_that_loads_back() {
        let config = load(&[
            "--node-id",
            "2",
            "--insecure",
            "--http",
            "127.0.0.1:7680",
            "--bootstrap",
            "1=a:7600,2=127.0.0.1:7600",
        ])
        .expect("valid");
        let text = config.to_toml();
        assert!(text.contains("node_id = 2"), "{text}");
        assert!(text.contains("advertise = \"127.0.0.1:7600\""), "{text}");
        assert!(text.contains("\"1=a:7600\""), "{text}");
        let back = CoordinatorConfig::from_toml(&text, Path::new("printed.toml")).expect("reparses");
        assert_eq!(back, config);
    }

    #[test]
    fn notify_hooks_are_read_from_the_file_and_each_bad_one_is_named() {
        let text = r#"
node_id = 1
insecure = true

[[notify]]
name = "chat"
url = "https://hooks.example.com/T0/B0"
events = ["paused", "failed"]
format = "slack"

[[notify]]
name = "audit"
url = "http://audit.internal/flotilla"
events = ["started", "succeeded"]
"#;
        let config =
            CoordinatorConfig::from_toml(text, Path::new("c.toml")).expect("parses").validate().expect("valid");
        let hooks = config.hooks();
        assert_eq!(hooks.len(), 2);
        assert_eq!((hooks[0].name.as_str(), hooks[0].format), ("chat", crate::state::HookFormat::Slack));
        assert_eq!(hooks[1].format, crate::state::HookFormat::Json, "json by default");
        assert!(hooks.iter().all(|h| h.from_config));
        let back = CoordinatorConfig::from_toml(&config.to_toml(), Path::new("printed.toml")).expect("reparses");
        assert_eq!(back.notify, config.notify, "printed and read back");

        let bad = r#"
node_id = 1
insecure = true

[[notify]]
name = "chat"
url = "hooks.example.com"
events = ["paused"]

[[notify]]
name = "chat"
url = "http://a.internal/"
events = ["deployed"]

[[notify]]
name = "chat"
url = "http://a.internal/"
events = ["failed"]
format = "xml"
"#;
        let why: Vec<String> =
            problems(CoordinatorConfig::from_toml(bad, Path::new("c.toml")).expect("parses").validate())
                .iter()
                .map(ToString::to_string)
                .collect();
        assert_eq!(why.len(), 3, "{why:?}");
        assert!(why[0].starts_with("[[notify]] number 1: `hooks.example.com` is not a URL"), "{why:?}");
        assert!(why[1].starts_with("[[notify]] number 2: `deployed` is not an event"), "{why:?}");
        assert_eq!(why[2], "[[notify]] number 3: format `xml`: use json or slack");
    }
}
