//! The agent's configuration: a TOML file (`--config FILE`) whose every key is also a
//! flag; a flag given on the command line overrides the file.
//!
//! ```toml
//! host_id = "web-3"
//! coordinators = ["coord-1.internal:7600", "coord-2.internal:7600", "coord-3.internal:7600"]
//! data_dir = "/var/lib/flotilla/agent"
//! keep_releases = 3
//! max_artifact_bytes = 1073741824
//! fetch_timeout_ms = 600000
//! tls_ca = "/etc/flotilla/ca.pem"
//! tls_cert = "/etc/flotilla/web-3.pem"
//! tls_key = "/etc/flotilla/web-3.key"
//!
//! [labels]
//! role = "web"
//! zone = "a"
//! ```
//!
//! [`AgentConfig::load`] reads the file, applies the flags and validates the result;
//! every problem found is reported at once ([`ConfigError::Invalid`]).

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use clap::Parser;
use flotilla_shared::transport::{TlsProblem, Transport, check_host_port};
use serde::{Deserialize, Serialize};

/// The environment variable that may carry `--join`'s token. Services, hooks and
/// health checks the agent starts never see it.
pub const JOIN_TOKEN_ENV: &str = "FLOTILLA_JOIN_TOKEN";

/// Default of [`AgentConfig::data_dir`].
pub const DEFAULT_DATA_DIR: &str = "/var/lib/flotilla/agent";

/// Default of [`AgentConfig::keep_releases`].
pub const DEFAULT_KEEP_RELEASES: u32 = 3;

/// Default of [`AgentConfig::max_artifact_bytes`]: 1 GiB.
pub const DEFAULT_MAX_ARTIFACT_BYTES: u64 = 1 << 30;

/// Default of [`AgentConfig::fetch_timeout_ms`]: 10 minutes.
pub const DEFAULT_FETCH_TIMEOUT_MS: u64 = 600_000;

/// Longest host id accepted (a fully qualified host name fits).
const MAX_HOST_ID_LEN: usize = 253;

/// Longest label name accepted.
const MAX_LABEL_KEY_LEN: usize = 63;

/// Longest label value accepted.
const MAX_LABEL_VALUE_LEN: usize = 253;

/// The agent's command line. Every config key has a flag (`host_id` is `--host-id`,
/// the `labels` table is the repeatable `--label k=v`); flags override the file given
/// with `--config`.
#[derive(Debug, Clone, Default, Parser)]
#[command(
    name = "flotilla-agent",
    version,
    about = "Flotilla agent: deploys, supervises and health-checks services on this host",
    after_help = "Every flag is also a key of the --config TOML file (--host-id is host_id, \
                  --label k=v adds to the [labels] table); a flag overrides the file. Without \
                  TLS files the agent uses the certificate it enrolled for (in DATA_DIR/identity), \
                  enrolling first with --join TOKEN; TLS files need --tls-ca, --tls-cert and \
                  --tls-key together; plaintext needs an explicit --insecure."
)]
pub struct AgentArgs {
    /// TOML config file; flags override its keys.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Validate the configuration, print the effective config as TOML and exit.
    #[arg(long)]
    pub check_config: bool,
    /// This host's id, unique in the fleet (key `host_id`) [default: the host name].
    #[arg(long, value_name = "ID")]
    pub host_id: Option<String>,
    /// Coordinators to dial, `HOST:PORT` comma-separated (key `coordinators`, a list).
    #[arg(long, value_name = "ADDRS", value_delimiter = ',')]
    pub coordinators: Vec<String>,
    /// Directory of releases, logs and the step journal (key `data_dir`)
    /// [default: /var/lib/flotilla/agent].
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// A host label `k=v`; repeatable (key: the `[labels]` table). Adds to the file's
    /// labels, replacing a label of the same name.
    #[arg(long = "label", value_name = "K=V")]
    pub labels: Vec<Label>,
    /// How many releases per service to keep on disk, the running one included
    /// (key `keep_releases`) [default: 3].
    #[arg(long, value_name = "N")]
    pub keep_releases: Option<u32>,
    /// Largest artifact accepted, in bytes (key `max_artifact_bytes`) [default: 1 GiB].
    #[arg(long, value_name = "BYTES")]
    pub max_artifact_bytes: Option<u64>,
    /// How long an artifact download may take, in milliseconds (key `fetch_timeout_ms`)
    /// [default: 600000].
    #[arg(long, value_name = "MS")]
    pub fetch_timeout_ms: Option<u64>,
    /// CA certificate (PEM) that coordinators' certificates must chain to (key `tls_ca`).
    #[arg(long, value_name = "FILE")]
    pub tls_ca: Option<PathBuf>,
    /// This agent's client certificate chain (PEM) (key `tls_cert`).
    #[arg(long, value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,
    /// This agent's private key (PEM) (key `tls_key`).
    #[arg(long, value_name = "FILE")]
    pub tls_key: Option<PathBuf>,
    /// Dial coordinators in plaintext, without TLS (key `insecure`) [default: false].
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub insecure: Option<bool>,
    /// Enrol this host with a join token (from `flotilla agents token create`) before
    /// starting: the agent checks the coordinators against the CA the token pins,
    /// makes its key here and stores the certificate it gets in DATA_DIR/identity.
    /// Ignored once enrolled, unless the certificate has expired. Not a config key.
    #[arg(long = "join", value_name = "TOKEN", env = JOIN_TOKEN_ENV, hide_env_values = true)]
    pub join: Option<String>,
}

/// The agent's configuration (the TOML file's shape, and after [`AgentConfig::load`]
/// the effective, validated configuration).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AgentConfig {
    /// This host's id, unique in the fleet (`[A-Za-z0-9][A-Za-z0-9._-]*`, at most 253
    /// characters). Default: the machine's host name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host_id: Option<String>,
    /// Coordinators to dial, as `HOST:PORT`; the agent follows leader hints from there.
    /// Required (no default).
    pub coordinators: Vec<String>,
    /// Directory of releases, logs and the step journal. Default `/var/lib/flotilla/agent`.
    pub data_dir: PathBuf,
    /// How many releases per service to keep on disk, the running one included (for
    /// instant local rollback); at least 1. Default 3.
    pub keep_releases: u32,
    /// Largest artifact accepted, in bytes. Default 1 GiB.
    pub max_artifact_bytes: u64,
    /// How long an artifact download may take, in milliseconds. Default 600000 (10 min).
    pub fetch_timeout_ms: u64,
    /// CA certificate (PEM). Default: none. TLS needs `tls_ca`, `tls_cert` and `tls_key`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_ca: Option<PathBuf>,
    /// Client certificate chain (PEM) of this agent. Default: none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_cert: Option<PathBuf>,
    /// Private key (PEM) of this agent. Default: none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_key: Option<PathBuf>,
    /// Plaintext gRPC, without TLS. Default `false`; required (and only allowed)
    /// when no TLS file is given.
    pub insecure: bool,
    /// The host's labels, matched by release selectors (`role = "web"`). Names are
    /// `[A-Za-z0-9][A-Za-z0-9._/-]*` (at most 63 characters); values are at most 253
    /// characters without control characters. An enrolled host may claim only labels
    /// its join token carries (none claimed: all of them). Default: none.
    pub labels: BTreeMap<String, String>,
    /// The join token given with `--join` (never read from or written to the file).
    #[serde(skip)]
    pub join: Option<String>,
}

impl Default for AgentConfig {
    fn default() -> Self {
        Self {
            host_id: None,
            coordinators: Vec::new(),
            data_dir: PathBuf::from(DEFAULT_DATA_DIR),
            keep_releases: DEFAULT_KEEP_RELEASES,
            max_artifact_bytes: DEFAULT_MAX_ARTIFACT_BYTES,
            fetch_timeout_ms: DEFAULT_FETCH_TIMEOUT_MS,
            tls_ca: None,
            tls_cert: None,
            tls_key: None,
            insecure: false,
            labels: BTreeMap::new(),
            join: None,
        }
    }
}

/// How the agent secures its connections.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgentSecurity {
    /// Mutual TLS with files an operator issued (`tls_ca`, `tls_cert`, `tls_key`).
    Files(flotilla_shared::transport::TlsFiles),
    /// Plaintext (`insecure`).
    Insecure,
    /// Mutual TLS with the certificate the agent enrolled for (`--join`), renewed by
    /// the agent.
    Enrolled,
}

/// One `--label k=v` flag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Label {
    /// The label's name.
    pub key: String,
    /// Its value.
    pub value: String,
}

impl FromStr for Label {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let Some((key, value)) = s.split_once('=') else {
            return Err(format!("label `{s}` is not K=V (e.g. role=web)"));
        };
        let (key, value) = (key.trim(), value.trim());
        check_label(key, value)?;
        Ok(Self { key: key.to_owned(), value: value.to_owned() })
    }
}

impl fmt::Display for Label {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}={}", self.key, self.value)
    }
}

/// Why a configuration could not be used.
pub type ConfigError = flotilla_net::config::ConfigError<Problem>;

/// One broken rule of a merged configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    /// `--join` with another way to secure the connection.
    #[error("--join enrols this host and keeps the certificate it gets; it cannot be combined with {0}")]
    JoinWith(&'static str),
    /// A join token that does not parse.
    #[error("--join: {0}")]
    BadJoinToken(String),
    /// No host id given and the host name could not be read.
    #[error("host_id is required: pass --host-id ID or set `host_id` (the host name could not be determined)")]
    MissingHostId,
    /// A host id with characters or a length that is not allowed.
    #[error(
        "host_id `{0}` is not valid: use letters, digits, `.`, `_` and `-`, starting with a letter or digit, at most 253 characters"
    )]
    BadHostId(String),
    /// No coordinator to dial.
    #[error(
        "coordinators is required: pass --coordinators HOST:PORT[,HOST:PORT...] or set `coordinators = [\"HOST:PORT\"]`"
    )]
    NoCoordinators,
    /// A coordinator address that is not `HOST:PORT`.
    #[error("coordinator `{value}`: {why}")]
    BadCoordinator {
        /// The value given.
        value: String,
        /// What is wrong with it.
        why: String,
    },
    /// The same coordinator listed twice.
    #[error("coordinator `{0}` is listed twice")]
    DuplicateCoordinator(String),
    /// A label with a bad name or value (from the file).
    #[error("{0}")]
    BadLabel(String),
    /// The same label given twice with different values on the command line.
    #[error("--label {key} is given twice ({first:?} and {second:?})")]
    DuplicateLabel {
        /// The label's name.
        key: String,
        /// Its first value.
        first: String,
        /// Its second value.
        second: String,
    },
    /// `keep_releases` is 0.
    #[error("keep_releases must be at least 1 (the running release is always kept)")]
    KeepNoReleases,
    /// An artifact limit that is 0.
    #[error("{0} must be above 0")]
    ZeroLimit(&'static str),
    /// A data dir that is empty.
    #[error("data_dir must not be empty")]
    EmptyDataDir,
    /// A TLS rule is broken.
    #[error("{0}")]
    Tls(TlsProblem),
}

impl AgentConfig {
    /// The effective configuration: the `--config` file if any (else the defaults),
    /// overridden by the flags given, then validated and completed (`host_id` from
    /// the host name when unset).
    pub fn load(args: &AgentArgs) -> Result<Self, ConfigError> {
        Self::load_with_hostname(args, system_hostname)
    }

    /// As [`AgentConfig::load`], with the host name (for a missing `host_id`) from `hostname`.
    pub fn load_with_hostname(
        args: &AgentArgs,
        hostname: impl FnOnce() -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let mut config = match &args.config {
            Some(path) => Self::from_file(path)?,
            None => Self::default(),
        };
        let problems = config.apply(args);
        config.validate_with(problems, hostname)
    }

    /// Reads a config file (not validated).
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        flotilla_net::config::read(path)
    }

    /// Parses config TOML (not validated); `origin` names it in errors.
    pub fn from_toml(text: &str, origin: &Path) -> Result<Self, ConfigError> {
        flotilla_net::config::parse(text, origin)
    }

    /// Overrides keys with the flags that were given. `--label` flags add to the
    /// labels (replacing one of the same name); `--coordinators` replaces the list.
    /// Returns the problems of the flags themselves (a label given twice).
    pub fn apply(&mut self, args: &AgentArgs) -> Vec<Problem> {
        let mut problems = Vec::new();
        if let Some(host_id) = &args.host_id {
            self.host_id = Some(host_id.clone());
        }
        if !args.coordinators.is_empty() {
            self.coordinators.clone_from(&args.coordinators);
        }
        if let Some(dir) = &args.data_dir {
            self.data_dir.clone_from(dir);
        }
        let mut from_flags: BTreeMap<&str, &str> = BTreeMap::new();
        for label in &args.labels {
            match from_flags.insert(&label.key, &label.value) {
                Some(first) if first != label.value => problems.push(Problem::DuplicateLabel {
                    key: label.key.clone(),
                    first: first.to_owned(),
                    second: label.value.clone(),
                }),
                _ => {}
            }
        }
        for (key, value) in from_flags {
            self.labels.insert(key.to_owned(), value.to_owned());
        }
        if let Some(keep) = args.keep_releases {
            self.keep_releases = keep;
        }
        if let Some(max) = args.max_artifact_bytes {
            self.max_artifact_bytes = max;
        }
        if let Some(ms) = args.fetch_timeout_ms {
            self.fetch_timeout_ms = ms;
        }
        // An empty token (`FLOTILLA_JOIN_TOKEN=` left in an environment file) is none.
        if let Some(token) = args.join.as_ref().filter(|t| !t.trim().is_empty()) {
            self.join = Some(token.trim().to_owned());
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
        if let Some(insecure) = args.insecure {
            self.insecure = insecure;
        }
        problems
    }

    /// Checks every rule, reporting all problems at once; on success fills in
    /// `host_id` from the machine's host name when unset.
    pub fn validate(self) -> Result<Self, ConfigError> {
        self.validate_with(Vec::new(), system_hostname)
    }

    fn validate_with(
        mut self,
        mut problems: Vec<Problem>,
        hostname: impl FnOnce() -> Option<String>,
    ) -> Result<Self, ConfigError> {
        if self.host_id.is_none() {
            self.host_id = hostname().map(|h| h.trim().to_owned()).filter(|h| !h.is_empty());
        }
        match &self.host_id {
            None => problems.push(Problem::MissingHostId),
            Some(id) if !valid_host_id(id) => problems.push(Problem::BadHostId(id.clone())),
            Some(_) => {}
        }
        if self.coordinators.is_empty() {
            problems.push(Problem::NoCoordinators);
        }
        for (i, addr) in self.coordinators.iter().enumerate() {
            if let Err(why) = check_host_port(addr) {
                problems.push(Problem::BadCoordinator { value: addr.clone(), why });
            } else if self.coordinators[..i].contains(addr) {
                problems.push(Problem::DuplicateCoordinator(addr.clone()));
            }
        }
        if self.data_dir.as_os_str().is_empty() {
            problems.push(Problem::EmptyDataDir);
        }
        if self.keep_releases == 0 {
            problems.push(Problem::KeepNoReleases);
        }
        if self.max_artifact_bytes == 0 {
            problems.push(Problem::ZeroLimit("max_artifact_bytes"));
        }
        if self.fetch_timeout_ms == 0 {
            problems.push(Problem::ZeroLimit("fetch_timeout_ms"));
        }
        for (key, value) in &self.labels {
            if let Err(why) = check_label(key, value) {
                problems.push(Problem::BadLabel(why));
            }
        }
        match self.security() {
            Err(tls) => problems.push(Problem::Tls(tls)),
            Ok(AgentSecurity::Files(_)) if self.join.is_some() => problems.push(Problem::JoinWith("--tls-*")),
            Ok(AgentSecurity::Insecure) if self.join.is_some() => problems.push(Problem::JoinWith("--insecure")),
            Ok(_) => {}
        }
        if let Some(token) = &self.join
            && let Err(why) = token.parse::<flotilla_net::JoinToken>()
        {
            problems.push(Problem::BadJoinToken(why));
        }
        if problems.is_empty() { Ok(self) } else { Err(ConfigError::Invalid { problems }) }
    }

    /// The host id (empty before validation when none was given).
    pub fn host_id(&self) -> &str {
        self.host_id.as_deref().unwrap_or_default()
    }

    /// How the agent secures its connections: TLS files given by hand, plaintext, or
    /// (neither) the certificate it enrolled for.
    pub fn security(&self) -> Result<AgentSecurity, TlsProblem> {
        match Transport::from_settings(
            self.tls_ca.as_ref(),
            self.tls_cert.as_ref(),
            self.tls_key.as_ref(),
            self.insecure,
        ) {
            Ok(Transport::Tls(files)) => Ok(AgentSecurity::Files(files)),
            Ok(Transport::Insecure) => Ok(AgentSecurity::Insecure),
            Err(TlsProblem::Unconfigured) => Ok(AgentSecurity::Enrolled),
            Err(other) => Err(other),
        }
    }

    /// Where the enrolled identity lives: `DATA_DIR/identity`.
    pub fn identity_dir(&self) -> PathBuf {
        self.data_dir.join("identity")
    }

    /// The configuration as TOML (what `--check-config` prints).
    pub fn to_toml(&self) -> String {
        flotilla_net::config::to_toml(self)
    }
}

/// The machine's host name, from the kernel (Linux) or `/etc/hostname`.
pub fn system_hostname() -> Option<String> {
    ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .iter()
        .filter_map(|path| std::fs::read_to_string(path).ok())
        .map(|name| name.trim().to_owned())
        .find(|name| !name.is_empty())
}

fn valid_host_id(id: &str) -> bool {
    id.len() <= MAX_HOST_ID_LEN
        && id.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && id.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

/// Checks a label's name and value.
fn check_label(key: &str, value: &str) -> Result<(), String> {
    if key.is_empty() {
        return Err(format!("label `{key}={value}` has an empty name"));
    }
    if key.len() > MAX_LABEL_KEY_LEN
        || !key.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        || !key.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '/'))
    {
        return Err(format!(
            "label name `{key}` is not valid: use letters, digits, `.`, `_`, `-` and `/`, starting with a letter or digit, at most {MAX_LABEL_KEY_LEN} characters"
        ));
    }
    if value.len() > MAX_LABEL_VALUE_LEN || value.chars().any(char::is_control) {
        return Err(format!(
            "label `{key}`: the value must be at most {MAX_LABEL_VALUE_LEN} characters without control characters"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use flotilla_shared::transport::TlsFiles;

    fn args(flags: &[&str]) -> AgentArgs {
        let mut argv = vec!["flotilla-agent"];
        argv.extend_from_slice(flags);
        AgentArgs::try_parse_from(argv).expect("flags parse")
    }

    fn load(flags: &[&str]) -> Result<AgentConfig, ConfigError> {
        AgentConfig::load_with_hostname(&args(flags), || Some("box-1\n".to_owned()))
    }

    fn problems(result: Result<AgentConfig, ConfigError>) -> Vec<Problem> {
        match result {
            Err(ConfigError::Invalid { problems }) => problems,
            other => panic!("expected an invalid config, got {other:?}"),
        }
    }

    /// A config file in a fresh temporary directory.
    struct TempFile(PathBuf);

    impl TempFile {
        fn new(name: &str, text: &str) -> Self {
            let dir = std::env::temp_dir().join(format!("flotilla-agent-config-{}-{name}", std::process::id()));
            std::fs::create_dir_all(&dir).expect("temp dir");
            let path = dir.join("agent.toml");
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

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    #[test]
    fn defaults_with_flags_only() {
        let config = load(&["--coordinators", "127.0.0.1:7600", "--insecure"]).expect("valid");
        assert_eq!(config.host_id(), "box-1", "host_id defaults to the host name");
        assert_eq!(config.coordinators, vec!["127.0.0.1:7600".to_owned()]);
        assert_eq!(config.data_dir, PathBuf::from(DEFAULT_DATA_DIR));
        assert_eq!(config.keep_releases, DEFAULT_KEEP_RELEASES);
        assert!(config.labels.is_empty());
        assert_eq!(config.security(), Ok(AgentSecurity::Insecure));
    }

    #[test]
    fn file_is_read_and_flags_override_it() {
        let file = TempFile::new(
            "override",
            r#"
host_id = "web-3"
coordinators = ["c1:7600", "c2:7600", "c3:7600"]
data_dir = "/srv/agent"
keep_releases = 5
tls_ca = "/etc/flotilla/ca.pem"
tls_cert = "/etc/flotilla/web-3.pem"
tls_key = "/etc/flotilla/web-3.key"

[labels]
role = "web"
zone = "a"
"#,
        );
        let from_file = load(&["--config", file.path()]).expect("valid file");
        assert_eq!(from_file.host_id(), "web-3");
        assert_eq!(from_file.coordinators.len(), 3);
        assert_eq!(from_file.data_dir, PathBuf::from("/srv/agent"));
        assert_eq!(from_file.keep_releases, 5);
        assert_eq!(from_file.labels, labels(&[("role", "web"), ("zone", "a")]));
        assert_eq!(
            from_file.security(),
            Ok(AgentSecurity::Files(TlsFiles {
                ca: "/etc/flotilla/ca.pem".into(),
                cert: "/etc/flotilla/web-3.pem".into(),
                key: "/etc/flotilla/web-3.key".into(),
            }))
        );

        let overridden = load(&[
            "--config",
            file.path(),
            "--host-id",
            "web-4",
            "--coordinators",
            "c9:7600,c8:7600",
            "--label",
            "zone=b",
            "--label",
            "cell=canary",
            "--keep-releases",
            "2",
        ])
        .expect("valid override");
        assert_eq!(overridden.host_id(), "web-4");
        assert_eq!(overridden.coordinators, vec!["c9:7600".to_owned(), "c8:7600".to_owned()]);
        assert_eq!(overridden.labels, labels(&[("cell", "canary"), ("role", "web"), ("zone", "b")]));
        assert_eq!(overridden.keep_releases, 2);
        // Keys without a flag keep the file's value.
        assert_eq!(overridden.data_dir, from_file.data_dir);
        assert_eq!(overridden.tls_ca, from_file.tls_ca);
    }

    #[test]
    fn labels_parse_with_clear_errors() {
        assert_eq!("role=web".parse::<Label>(), Ok(Label { key: "role".to_owned(), value: "web".to_owned() }));
        assert_eq!("topology.io/zone=".parse::<Label>().map(|l| l.value), Ok(String::new()));
        assert_eq!("a=b=c".parse::<Label>().map(|l| l.value), Ok("b=c".to_owned()));
        let cases = [
            ("role", "is not K=V"),
            ("=web", "has an empty name"),
            ("-role=web", "label name `-role` is not valid"),
            ("ro le=web", "label name `ro le` is not valid"),
            ("role=w\u{7}eb", "without control characters"),
        ];
        for (input, expected) in cases {
            let err = input.parse::<Label>().expect_err(input);
            assert!(err.contains(expected), "{input}: {err}");
        }
        let err = AgentArgs::try_parse_from(["flotilla-agent", "--label", "role"]).expect_err("bad flag");
        let text = err.to_string();
        assert!(text.contains("--label") && text.contains("is not K=V"), "{text}");
    }

    #[test]
    fn labels_from_the_file_are_checked_and_flags_may_not_contradict_each_other() {
        let file =
            TempFile::new("labels", "coordinators = [\"c:1\"]\ninsecure = true\n[labels]\n\"bad key\" = \"x\"\n");
        let err = problems(load(&["--config", file.path()]));
        assert!(matches!(&err[..], [Problem::BadLabel(why)] if why.contains("`bad key`")), "{err:?}");

        let err = problems(load(&["--coordinators", "c:1", "--insecure", "--label", "role=web", "--label", "role=db"]));
        assert_eq!(
            err,
            vec![Problem::DuplicateLabel { key: "role".to_owned(), first: "web".to_owned(), second: "db".to_owned() }]
        );
        // Repeating the same label is harmless.
        load(&["--coordinators", "c:1", "--insecure", "--label", "role=web", "--label", "role=web"]).expect("valid");
    }

    #[test]
    fn coordinators_are_required_and_checked() {
        assert_eq!(problems(load(&["--insecure"])), vec![Problem::NoCoordinators]);
        let err = problems(load(&["--insecure", "--coordinators", "c1:7600,c1,c1:7600,https://c2:7600"]));
        assert_eq!(err.len(), 3, "{err:?}");
        assert!(matches!(&err[0], Problem::BadCoordinator { value, .. } if value == "c1"), "{err:?}");
        assert_eq!(err[1], Problem::DuplicateCoordinator("c1:7600".to_owned()));
        assert!(matches!(&err[2], Problem::BadCoordinator { why, .. } if why.contains("without a scheme")), "{err:?}");
    }

    #[test]
    fn host_id_falls_back_to_the_host_name_and_is_checked() {
        let a = args(&["--coordinators", "c:1", "--insecure"]);
        let err = problems(AgentConfig::load_with_hostname(&a, || None));
        assert_eq!(err, vec![Problem::MissingHostId]);
        let err = problems(AgentConfig::load_with_hostname(&a, || Some("  ".to_owned())));
        assert_eq!(err, vec![Problem::MissingHostId]);
        let err = problems(load(&["--coordinators", "c:1", "--insecure", "--host-id", "web 3"]));
        assert_eq!(err, vec![Problem::BadHostId("web 3".to_owned())]);
        let ok = load(&["--coordinators", "c:1", "--insecure", "--host-id", "web-3.zone-a.example.com"]).expect("fqdn");
        assert_eq!(ok.host_id(), "web-3.zone-a.example.com");
    }

    #[test]
    fn artifact_limits_have_defaults_and_must_be_positive() {
        let config = load(&["--coordinators", "c:1", "--insecure"]).expect("valid");
        assert_eq!((config.max_artifact_bytes, config.fetch_timeout_ms), (1 << 30, 600_000));
        let config =
            load(&["--coordinators", "c:1", "--insecure", "--max-artifact-bytes", "1000", "--fetch-timeout-ms", "5"])
                .expect("valid");
        assert_eq!((config.max_artifact_bytes, config.fetch_timeout_ms), (1000, 5));
        assert_eq!(
            problems(load(&[
                "--coordinators",
                "c:1",
                "--insecure",
                "--max-artifact-bytes",
                "0",
                "--fetch-timeout-ms",
                "0"
            ])),
            vec![Problem::ZeroLimit("max_artifact_bytes"), Problem::ZeroLimit("fetch_timeout_ms")]
        );
    }

    #[test]
    fn keep_releases_must_keep_the_running_one() {
        assert_eq!(
            problems(load(&["--coordinators", "c:1", "--insecure", "--keep-releases", "0"])),
            vec![Problem::KeepNoReleases]
        );
    }

    #[test]
    fn tls_needs_all_three_files_or_insecure() {
        let base = ["--coordinators", "c:1"];
        let with = |extra: &[&str]| {
            let mut flags = base.to_vec();
            flags.extend_from_slice(extra);
            load(&flags)
        };
        // Neither files nor --insecure: the enrolled certificate (made with --join).
        assert_eq!(with(&[]).map(|c| c.security()).ok(), Some(Ok(AgentSecurity::Enrolled)));
        assert_eq!(
            problems(with(&["--tls-ca", "ca.pem", "--tls-key", "k.pem"])),
            vec![Problem::Tls(TlsProblem::Incomplete { missing: vec!["--tls-cert"] })]
        );
        assert_eq!(
            problems(with(&["--insecure", "--tls-cert", "c.pem", "--tls-key", "k.pem"])),
            vec![Problem::Tls(TlsProblem::InsecureWithTls { given: vec!["--tls-cert", "--tls-key"] })]
        );
        assert!(matches!(
            with(&["--tls-ca", "ca.pem", "--tls-cert", "c.pem", "--tls-key", "k.pem"]).map(|c| c.security()),
            Ok(Ok(AgentSecurity::Files(_)))
        ));
        let file = TempFile::new("insecure", "coordinators = [\"c:1\"]\ninsecure = true\n");
        assert_eq!(
            load(&["--config", file.path(), "--insecure=false"]).map(|c| c.security()).ok(),
            Some(Ok(AgentSecurity::Enrolled))
        );
    }

    #[test]
    fn join_takes_a_token_and_goes_with_enrolment_only() {
        let token = format!("flotilla-join-v1.{}.0a1b2c3d.{}", "ab".repeat(32), "f".repeat(32));
        let config = load(&["--coordinators", "c:1", "--join", &token]).expect("valid");
        assert_eq!(config.join.as_deref(), Some(token.as_str()));
        assert!(!config.to_toml().contains(&token), "the token is never printed");
        assert_eq!(
            problems(load(&["--coordinators", "c:1", "--join", &token, "--insecure"])),
            vec![Problem::JoinWith("--insecure")]
        );
        assert_eq!(load(&["--coordinators", "c:1", "--join", " "]).map(|c| c.join).ok(), Some(None), "empty is none");
        let damaged = problems(load(&["--coordinators", "c:1", "--join", "abc"]));
        assert!(matches!(damaged.as_slice(), [Problem::BadJoinToken(why)] if why.contains("not a join token")));
    }

    #[test]
    fn unknown_keys_in_the_file_are_refused_with_their_place() {
        let err = AgentConfig::from_toml("coordinators = []\nlabel = \"role=web\"\n", Path::new("a.toml"))
            .expect_err("unknown key");
        let text = err.to_string();
        assert!(text.starts_with("config file a.toml:"), "{text}");
        assert!(text.contains("label") && text.contains("line 2"), "{text}");
        let err = AgentConfig::from_toml("keep_releases = -1\n", Path::new("a.toml")).expect_err("negative");
        assert!(err.to_string().contains("keep_releases"), "{err}");
    }

    #[test]
    fn missing_file_is_a_read_error() {
        let err = load(&["--config", "/nonexistent/agent.toml"]).expect_err("missing file");
        assert!(matches!(err, ConfigError::Read { .. }), "{err:?}");
    }

    #[test]
    fn effective_config_prints_as_toml_that_loads_back() {
        let config = load(&["--coordinators", "c1:7600,c2:7600", "--insecure", "--label", "role=web"]).expect("valid");
        let text = config.to_toml();
        assert!(text.contains("host_id = \"box-1\""), "{text}");
        assert!(text.contains("[labels]\nrole = \"web\""), "{text}");
        let back = AgentConfig::from_toml(&text, Path::new("printed.toml")).expect("reparses");
        assert_eq!(back, config);
    }
}
