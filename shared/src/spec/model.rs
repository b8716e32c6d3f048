//! The validated release spec: typed values the planner and engine work with.
//!
//! Every value here has passed validation; nothing in this module parses or fails.
//! Source positions are kept only where later checks (against a live fleet, or the
//! dependency cycle check) still need to point back into the file.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use semver::{Version, VersionReq};
use serde::{Deserialize, Serialize};

use crate::analysis::{Criteria, Settings};
use crate::model::{DepKind, HostCount, LabelSelector, OnFailure, RollbackScope, ServiceName};
use crate::spec::source::Span;

/// A whole release spec.
#[derive(Debug, Clone, PartialEq)]
pub struct ReleaseSpec {
    /// The release name, `[a-z0-9-]{1,63}`.
    pub release: String,
    /// When the change it ships was made (`changed_at`, Unix ms), for lead time.
    pub changed_unix_ms: Option<i64>,
    /// Stages in order. Never empty: a spec without `[[stage]]` gets one stage over all hosts.
    pub stages: Vec<StageSpec>,
    /// Services in the order the spec lists them.
    pub services: Vec<ServiceSpec>,
    /// Gates in the order the spec lists them.
    pub gates: Vec<GateSpec>,
}

impl ReleaseSpec {
    /// The service with this name, if the release has it.
    pub fn service(&self, name: &str) -> Option<&ServiceSpec> {
        self.services.iter().find(|s| s.name.as_str() == name)
    }
}

/// A slice of the fleet that receives the whole release before the next one does.
#[derive(Debug, Clone, PartialEq)]
pub struct StageSpec {
    /// Unique stage name.
    pub name: String,
    /// Which hosts belong to the stage. `None`: every host not covered by an earlier stage.
    pub hosts: Option<LabelSelector>,
    /// Whether a human must approve before the NEXT stage starts.
    pub approval: bool,
    /// Who may give that approval; open (anyone who may approve) when `approval` is
    /// `true` or `false`, and when there is no approval.
    pub approval_by: ApprovalRule,
    /// Where the stage is declared, for errors found when planning against a fleet.
    pub span: Span,
}

/// Who may give an approval: every condition must hold.
///
/// Written in the spec as `approval = { by = "other-than-author" }`, `{ by = "admin" }` or
/// `{ by = ["other-than-author", "admin"] }`; `approval = true` is the open rule. The
/// coordinator checks the rule when an approval is given, on top of the deployer role
/// every approval needs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ApprovalRule {
    /// The approver must be another identity than the one that created the release, as
    /// the two appear in events (`operator alice`, `token ci-bot`).
    pub other_than_author: bool,
    /// The least role the approver must hold (admin includes deployer); `None`: any role
    /// that may approve.
    pub role: Option<ApproverRole>,
}

impl ApprovalRule {
    /// Whether the rule sets no condition: anyone who may approve at all may.
    pub fn is_open(&self) -> bool {
        !self.other_than_author && self.role.is_none()
    }

    /// Who may approve, as a noun phrase for messages: "an admin", "someone other than
    /// the release's author", "someone other than the release's author holding the admin
    /// role", or "anyone who may approve" for the open rule.
    pub fn describe(&self) -> String {
        match (self.other_than_author, self.role) {
            (false, None) => "anyone who may approve".to_owned(),
            (false, Some(ApproverRole::Deployer)) => "a deployer".to_owned(),
            (false, Some(ApproverRole::Admin)) => "an admin".to_owned(),
            (true, None) => "someone other than the release's author".to_owned(),
            (true, Some(role)) => format!("someone other than the release's author holding the {role} role"),
        }
    }
}

/// An operator role that may approve, from the least to the most: an admin holds the
/// deployer role too. (The viewer role cannot approve at all.)
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ApproverRole {
    /// Any operator who may deploy.
    Deployer,
    /// An operator holding the admin role.
    Admin,
}

impl ApproverRole {
    /// Every role that may approve, from the least to the most.
    pub const ALL: [ApproverRole; 2] = [ApproverRole::Deployer, ApproverRole::Admin];

    /// The spelling used in specs and output.
    pub fn as_str(self) -> &'static str {
        match self {
            ApproverRole::Deployer => "deployer",
            ApproverRole::Admin => "admin",
        }
    }
}

impl fmt::Display for ApproverRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a service rolls out and reacts to failure; `[defaults]` sets these for every service.
#[derive(Debug, Clone, PartialEq)]
pub struct RolloutPolicy {
    /// Hosts in the first batch; zero means no canary.
    pub canary: HostCount,
    /// Cumulative batch sizes after the canary. The last one always covers every host.
    pub batches: Vec<HostCount>,
    /// How long health is re-checked after each batch before the next starts.
    pub bake: Duration,
    /// Failed hosts tolerated per service per stage.
    pub max_failed: u32,
    /// A service with no progress for this long fails.
    pub progress_deadline: Duration,
    /// What a failure of this service does to the release.
    pub on_failure: OnFailure,
    /// Which services a failure of this service rolls back.
    pub rollback_scope: RollbackScope,
    /// No automatic rollback of this service once it finished longer than this ago.
    pub rollback_window: Duration,
    /// Health checks must pass continuously this long for a host to be healthy.
    pub healthy_for: Duration,
    /// A host not healthy this long after its start fails.
    pub healthy_deadline: Duration,
    /// Time limit for each hook.
    pub hook_timeout: Duration,
    /// How canary analysis samples and judges.
    pub analysis: AnalysisPolicy,
    /// What canary analysis measures; none: batches are judged by health alone.
    pub metrics: Vec<MetricSpec>,
}

impl RolloutPolicy {
    /// Whether batches of the service are judged by their metrics too.
    pub fn analyses(&self) -> bool {
        self.analysis.enabled && !self.metrics.is_empty()
    }
}

/// How canary analysis samples and judges a batch (`[defaults.analysis]`,
/// `[service.analysis]`).
#[derive(Debug, Clone, PartialEq)]
pub struct AnalysisPolicy {
    /// `false` turns analysis off even when metrics are set.
    pub enabled: bool,
    /// Time between samples.
    pub interval: Duration,
    /// Only samples this recent are judged; `None`: every sample of the batch.
    pub lookback: Option<Duration>,
    /// Confidence, scores, samples needed, query-error limit, outliers.
    pub settings: Settings,
}

impl Default for AnalysisPolicy {
    /// Sample every 10 s; judge with the defaults of [`Settings`].
    fn default() -> Self {
        Self { enabled: true, interval: Duration::from_secs(10), lookback: None, settings: Settings::default() }
    }
}

/// One metric of canary analysis: a PromQL template and how to judge what it returns.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricSpec {
    /// The query, with `{{service}}`, `{{version}}`, `{{hosts}}` and `{{interval}}`
    /// filled in per side (see [`crate::analysis::query`]).
    pub query: String,
    /// Its name, the comparison or threshold, and how much it counts.
    pub criteria: Criteria,
    /// Where the `[[metric]]` table is.
    pub span: Span,
}

impl Default for RolloutPolicy {
    /// The defaults a spec gets for what it leaves out.
    fn default() -> Self {
        Self {
            canary: HostCount::Hosts(1),
            batches: vec![HostCount::Percent(2_500), HostCount::ALL],
            bake: Duration::from_secs(30),
            max_failed: 0,
            progress_deadline: Duration::from_secs(600),
            on_failure: OnFailure::Rollback,
            rollback_scope: RollbackScope::Cascade,
            rollback_window: Duration::from_secs(3_600),
            healthy_for: Duration::from_secs(5),
            healthy_deadline: Duration::from_secs(120),
            hook_timeout: Duration::from_secs(300),
            analysis: AnalysisPolicy::default(),
            metrics: Vec::new(),
        }
    }
}

/// One deployable service at its target version.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceSpec {
    /// Unique service name.
    pub name: ServiceName,
    /// The target version.
    pub version: Version,
    /// Which hosts run the service; empty selects every host.
    pub hosts: LabelSelector,
    /// Where the artifact is and what it must hash to.
    pub artifact: Artifact,
    /// How to run the service.
    pub run: RunSpec,
    /// Lifecycle hooks.
    pub hooks: Hooks,
    /// Health checks, all of which must pass.
    pub health: Vec<HealthCheck>,
    /// Contracts this version serves, with the version it serves.
    pub provides: BTreeMap<String, Version>,
    /// Contracts this version needs, as semver ranges.
    pub requires: BTreeMap<String, Requirement>,
    /// Dependencies written in the spec.
    pub depends_on: Vec<Dependency>,
    /// Rollout and failure policy after `[defaults]` and overrides.
    pub policy: RolloutPolicy,
    /// Where the `[[service]]` table is, for errors found when planning against a fleet.
    pub span: Span,
}

/// A contract a service needs: `"auth-api" = "^3.1"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requirement {
    /// The versions of the contract that will do.
    pub range: VersionReq,
    /// Where the range is written.
    pub span: Span,
}

/// A dependency edge as written: `{ service = "auth", kind = "hard" }`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dependency {
    /// The service depended on; it may be outside the release (already in the fleet).
    pub service: ServiceName,
    /// What kind of dependency this is.
    pub kind: DepKind,
    /// Where the entry is written.
    pub span: Span,
}

/// The artifact to fetch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Artifact {
    /// `http://`, `https://` or `file://` URL of a tar or tar.gz.
    pub url: String,
    /// Expected SHA-256 of the artifact, 64 lowercase hex digits.
    pub sha256: String,
}

/// How the agent runs the service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunSpec {
    /// Program to start, relative to the release directory or absolute.
    pub command: String,
    /// Arguments.
    pub args: Vec<String>,
    /// Extra environment variables.
    pub env: BTreeMap<String, String>,
    /// Time between SIGTERM and SIGKILL when stopping.
    pub stop_timeout: Duration,
}

/// Lifecycle hooks, each a shell command run in the release directory.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Hooks {
    /// Before the new release is unpacked into place.
    pub before_install: Option<String>,
    /// After unpacking, before the old process stops.
    pub after_install: Option<String>,
    /// Schema or data migration, once per release on one host.
    pub migrate: Option<String>,
    /// Undoes `migrate` during a rollback; none means the migration is irreversible.
    pub migrate_down: Option<String>,
    /// After the new process started, before health checks count.
    pub validate: Option<String>,
}

/// One health check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheck {
    /// What to probe.
    pub probe: Probe,
    /// Time between samples.
    pub interval: Duration,
    /// Time limit for one sample.
    pub timeout: Duration,
}

/// What a health check probes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    /// An HTTP GET that must answer with `expect_status` (and contain `body` if given).
    Http {
        /// The URL to fetch.
        url: String,
        /// The status that counts as healthy.
        expect_status: u16,
        /// A substring the body must contain.
        body: Option<String>,
    },
    /// A TCP connect to `host:port`.
    Tcp {
        /// The address to connect to.
        addr: String,
    },
    /// A command that must exit 0.
    Exec {
        /// The shell command.
        command: String,
    },
}

/// A check between parts of a release.
#[derive(Debug, Clone, PartialEq)]
pub struct GateSpec {
    /// Unique gate name.
    pub name: String,
    /// The gate runs once these services are done, in each stage.
    pub after: Vec<ServiceName>,
    /// A command run on one matching agent.
    pub exec: Option<GateExec>,
    /// Whether a human must approve too.
    pub approval: bool,
    /// Who may give that approval; open (anyone who may approve) when `approval` is
    /// `true` or `false`, and when there is no approval.
    pub approval_by: ApprovalRule,
    /// Where the gate is declared.
    pub span: Span,
}

/// The command a gate runs.
#[derive(Debug, Clone, PartialEq)]
pub struct GateExec {
    /// The shell command.
    pub command: String,
    /// Which agents may run it; one of them does.
    pub on: LabelSelector,
    /// Time limit.
    pub timeout: Duration,
}
