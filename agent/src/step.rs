//! Steps the agent executes and what it reports about them: plain Rust mirrors of the
//! `flotilla.v1` messages in `proto/flotilla/v1/agent.proto` (`Step`, `StepProgress`,
//! `StepResult`, ...), field for field, so that converting to and from the wire is a
//! mechanical mapping done by the session. Durations are `*_ms` like on the wire.
//!
//! They are serde types too: the step journal stores them, and
//! `flotilla-agent local-deploy --step FILE` reads a [`Step`] as JSON.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// A command for the agent (`flotilla.v1.Step`). Executed at most once per
/// `command_id`; refused when `term` is lower than the highest term seen.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Step {
    /// Unique, opaque command id.
    pub command_id: String,
    /// The term of the leader that committed the intent.
    pub term: u64,
    /// The release it belongs to; empty outside a release.
    #[serde(default)]
    pub release_id: String,
    /// The stage it belongs to; empty when none.
    #[serde(default)]
    pub stage: String,
    /// What to do.
    pub action: Action,
}

/// What a step does (`Step.action`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Install and activate a version.
    Deploy(Box<Deploy>),
    /// Go back to an earlier version.
    Rollback(Rollback),
    /// Stop a service.
    Stop(Stop),
    /// Run a gate's command.
    RunCheck(RunCheck),
    /// Re-check a service's health for a while.
    Bake(Bake),
    /// Run one hook of an installed version.
    RunHook(RunHook),
}

impl Action {
    /// The service the action is about (none for a gate check).
    pub fn service(&self) -> Option<&str> {
        match self {
            Self::Deploy(d) => Some(&d.service),
            Self::Rollback(r) => Some(&r.service),
            Self::Stop(s) => Some(&s.service),
            Self::Bake(b) => Some(&b.service),
            Self::RunHook(h) => Some(&h.service),
            Self::RunCheck(_) => None,
        }
    }

    /// The action's name (`deploy`, `rollback`, ...).
    pub fn name(&self) -> &'static str {
        match self {
            Self::Deploy(_) => "deploy",
            Self::Rollback(_) => "rollback",
            Self::Stop(_) => "stop",
            Self::RunCheck(_) => "run_check",
            Self::Bake(_) => "bake",
            Self::RunHook(_) => "run_hook",
        }
    }
}

/// Where to get an artifact (`flotilla.v1.Artifact`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Artifact {
    /// `http://`, `https://` or `file://` URL of a tar or tar.gz archive.
    pub url: String,
    /// Its sha256, 64 hex digits; checked before unpacking.
    pub sha256: String,
}

/// How to run a service's process (`flotilla.v1.RunSpec`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct RunSpec {
    /// The program, relative to the release directory or absolute.
    pub command: String,
    /// Its arguments.
    #[serde(default)]
    pub args: Vec<String>,
    /// Extra environment (`FLOTILLA_SERVICE`, `FLOTILLA_VERSION`, `FLOTILLA_HOST` are added).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
}

/// A service's hooks (`flotilla.v1.Hooks`): command lines run by `/bin/sh -c` in the
/// release directory; empty means none.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Hooks {
    /// After unpacking, before anything else (the old version still runs).
    pub before_install: String,
    /// After `before_install`, still before the old version is stopped (as CodeDeploy's
    /// `AfterInstall`: files in place, nothing activated).
    pub after_install: String,
    /// The schema migration (only when `Deploy::migrate` is set).
    pub migrate: String,
    /// Undoes `migrate` (run by a `RunHook` step).
    pub migrate_down: String,
    /// A self check after the new process started; failing fails the step.
    pub validate: String,
}

/// Which hook (`flotilla.v1.HookKind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HookKind {
    /// `before_install`.
    BeforeInstall,
    /// `after_install`.
    AfterInstall,
    /// `migrate`.
    Migrate,
    /// `migrate_down`.
    MigrateDown,
    /// `validate`.
    Validate,
}

impl HookKind {
    /// The hook's name as in the spec (`before_install`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::BeforeInstall => "before_install",
            Self::AfterInstall => "after_install",
            Self::Migrate => "migrate",
            Self::MigrateDown => "migrate_down",
            Self::Validate => "validate",
        }
    }
}

/// One health check probe (`flotilla.v1.HealthCheck.probe`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Probe {
    /// HTTP GET.
    Http {
        /// The URL.
        url: String,
        /// The expected status; 0: any 2xx.
        #[serde(default)]
        expect_status: u16,
        /// A substring the body must contain (not on the wire yet; empty: none).
        #[serde(default, skip_serializing_if = "String::is_empty")]
        body_contains: String,
    },
    /// TCP connect to `host:port`.
    Tcp {
        /// The address.
        addr: String,
    },
    /// A command run by `/bin/sh -c` in the release directory; exit 0 is healthy.
    Exec {
        /// The command line.
        command: String,
    },
}

/// One health check (`flotilla.v1.HealthCheck`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthCheck {
    /// The probe.
    pub probe: Probe,
    /// Time between samples; 0: 1 s.
    #[serde(default)]
    pub interval_ms: u64,
    /// Per-sample timeout; 0: 1 s.
    #[serde(default)]
    pub timeout_ms: u64,
}

impl HealthCheck {
    /// The interval, defaulted.
    pub fn interval(&self) -> Duration {
        ms_or(self.interval_ms, 1000)
    }

    /// The per-sample timeout, defaulted.
    pub fn timeout(&self) -> Duration {
        ms_or(self.timeout_ms, 1000)
    }
}

/// Install and activate `version` of `service` (`flotilla.v1.Deploy`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deploy {
    /// The service name.
    pub service: String,
    /// The version to run.
    pub version: String,
    /// The artifact (not fetched again when the version is kept with the same sha256).
    pub artifact: Artifact,
    /// How to run it.
    pub run: RunSpec,
    /// Its hooks.
    #[serde(default)]
    pub hooks: Hooks,
    /// Health checks that must pass.
    #[serde(default)]
    pub health: Vec<HealthCheck>,
    /// Checks must pass continuously this long; 0: one passing sample of each.
    #[serde(default)]
    pub healthy_for_ms: u64,
    /// Fail when not healthy this long after start; 0: 60 s.
    #[serde(default)]
    pub healthy_deadline_ms: u64,
    /// Timeout of each hook; 0: 5 min.
    #[serde(default)]
    pub hook_timeout_ms: u64,
    /// SIGTERM to SIGKILL delay when stopping; 0: 10 s.
    #[serde(default)]
    pub stop_timeout_ms: u64,
    /// Run the `migrate` hook before activating.
    #[serde(default)]
    pub migrate: bool,
    /// Contracts this version serves (recorded in the inventory).
    #[serde(default)]
    pub provides: BTreeMap<String, String>,
}

impl Deploy {
    /// `healthy_for`, as a duration.
    pub fn healthy_for(&self) -> Duration {
        Duration::from_millis(self.healthy_for_ms)
    }

    /// `healthy_deadline`, defaulted.
    pub fn healthy_deadline(&self) -> Duration {
        ms_or(self.healthy_deadline_ms, 60_000)
    }

    /// The hook timeout, defaulted.
    pub fn hook_timeout(&self) -> Duration {
        ms_or(self.hook_timeout_ms, 300_000)
    }

    /// The stop timeout, defaulted.
    pub fn stop_timeout(&self) -> Duration {
        ms_or(self.stop_timeout_ms, 10_000)
    }
}

/// Go back to an earlier version (`flotilla.v1.Rollback`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rollback {
    /// The service name.
    pub service: String,
    /// The version to return to; empty: the one that ran before the current one.
    #[serde(default)]
    pub to_version: String,
    /// The version expected to run now; empty: any.
    #[serde(default)]
    pub from_version: String,
    /// The full deploy of the target, used when the host does not keep it.
    #[serde(default)]
    pub fallback: Option<Box<Deploy>>,
}

/// Stop a service; it stays installed (`flotilla.v1.Stop`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stop {
    /// The service name.
    pub service: String,
    /// SIGTERM to SIGKILL delay; 0: the service's recorded one.
    #[serde(default)]
    pub stop_timeout_ms: u64,
}

/// Run a gate's command once (`flotilla.v1.RunCheck`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunCheck {
    /// The gate name (for logs).
    pub gate: String,
    /// The command line, run by `/bin/sh -c` in the data directory.
    pub command: String,
    /// Extra environment.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// How long it may run; 0: 5 min.
    #[serde(default)]
    pub timeout_ms: u64,
}

/// Re-check the running service's health for a while (`flotilla.v1.Bake`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bake {
    /// The service name.
    pub service: String,
    /// The version expected to run; empty: any.
    #[serde(default)]
    pub version: String,
    /// How long to watch.
    pub duration_ms: u64,
    /// The checks; empty: the ones recorded with the version's deploy.
    #[serde(default)]
    pub health: Vec<HealthCheck>,
}

/// Run one hook of an installed version (`flotilla.v1.RunHook`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunHook {
    /// The service name.
    pub service: String,
    /// The version whose release directory the hook runs in.
    pub version: String,
    /// Which hook.
    pub hook: HookKind,
    /// The command line.
    pub command: String,
    /// How long it may run; 0: 5 min.
    #[serde(default)]
    pub timeout_ms: u64,
    /// Where to fetch the version if it is not kept on the host.
    #[serde(default)]
    pub artifact: Option<Artifact>,
}

/// The phase a step is in (`flotilla.v1.StepPhase`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepPhase {
    /// Accepted and journaled.
    Accepted,
    /// Downloading the artifact.
    Fetching,
    /// Checking its sha256.
    Verifying,
    /// Unpacking into the release directory.
    Unpacking,
    /// Running a hook (the detail names it).
    RunningHook,
    /// Running `migrate` or `migrate_down`.
    Migrating,
    /// Stopping the old process.
    Stopping,
    /// Switching the `current` symlink.
    Installing,
    /// Starting the new process.
    Starting,
    /// Waiting for health checks to pass for `healthy_for`.
    CheckingHealth,
    /// Re-checking health during a bake.
    Baking,
    /// Running a gate check.
    RunningCheck,
    /// Undoing a failed deploy (back to the previous version).
    Reverting,
}

impl StepPhase {
    /// Every phase, in wire order.
    pub const ALL: [Self; 13] = [
        Self::Accepted,
        Self::Fetching,
        Self::Verifying,
        Self::Unpacking,
        Self::RunningHook,
        Self::Migrating,
        Self::Stopping,
        Self::Installing,
        Self::Starting,
        Self::CheckingHealth,
        Self::Baking,
        Self::RunningCheck,
        Self::Reverting,
    ];

    /// The phase's name (`checking_health`), as in reasons like
    /// `agent restarted during checking_health`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Accepted => "accepted",
            Self::Fetching => "fetching",
            Self::Verifying => "verifying",
            Self::Unpacking => "unpacking",
            Self::RunningHook => "running_hook",
            Self::Migrating => "migrating",
            Self::Stopping => "stopping",
            Self::Installing => "installing",
            Self::Starting => "starting",
            Self::CheckingHealth => "checking_health",
            Self::Baking => "baking",
            Self::RunningCheck => "running_check",
            Self::Reverting => "reverting",
        }
    }

    /// Parses [`StepPhase::as_str`].
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.as_str() == name)
    }

    /// Whether the old process may have been touched by the time this phase starts
    /// (for a deploy or rollback).
    pub fn touches_old(self) -> bool {
        matches!(self, Self::Stopping | Self::Installing | Self::Starting | Self::CheckingHealth | Self::Reverting)
    }
}

impl fmt::Display for StepPhase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A step moved to a new phase (`flotilla.v1.StepProgress`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepProgress {
    /// The step's command id.
    pub command_id: String,
    /// The new phase.
    pub phase: StepPhase,
    /// A short human detail (`hook before_install`).
    pub detail: String,
    /// The agent's clock.
    pub at_unix_ms: i64,
}

/// What happened to a step (`flotilla.v1.StepOutcome`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepOutcome {
    /// Done.
    Succeeded,
    /// Failed: `failure` and `reason` say how.
    Failed,
    /// Stopped by a cancel before it finished.
    Cancelled,
    /// Not executed: its term is lower than the highest seen.
    Refused,
    /// Nothing to do: the host already ran the version healthily.
    Skipped,
}

impl StepOutcome {
    /// The outcome's name (`succeeded`, `failed`, `cancelled`, `refused`, `skipped`), as
    /// serialized.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
            Self::Refused => "refused",
            Self::Skipped => "skipped",
        }
    }
}

/// Why a step failed (`flotilla.v1.StepFailure`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepFailure {
    /// Download error, timeout or size limit.
    Fetch,
    /// sha256 mismatch.
    Verify,
    /// Unreadable archive or unsafe entries.
    Unpack,
    /// A hook exited non-zero.
    Hook,
    /// A hook ran past its timeout.
    HookTimeout,
    /// The process could not be started.
    Start,
    /// The process exited.
    ProcessExited,
    /// Health not reached within `healthy_deadline`.
    HealthDeadline,
    /// Unhealthy during a bake.
    Unhealthy,
    /// A gate check exited non-zero or timed out.
    Check,
    /// The version to roll back to is not kept and no fallback was given.
    NoPrevious,
    /// The agent itself failed (I/O error, invalid step, restart mid-step).
    Internal,
}

/// The kind of a health check (`flotilla.v1.HealthCheckKind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HealthCheckKind {
    /// HTTP GET.
    Http,
    /// TCP connect.
    Tcp,
    /// Command.
    Exec,
}

/// What one health check saw during a step (`flotilla.v1.HealthCheckReport`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthCheckReport {
    /// Position in the step's check list.
    pub index: u32,
    /// Its kind.
    pub kind: HealthCheckKind,
    /// The check as a human reads it (`http http://127.0.0.1:8080/healthz`).
    pub target: String,
    /// How many samples ran.
    pub samples: u32,
    /// How many failed.
    pub failures: u32,
    /// Median latency.
    pub latency_p50_us: u64,
    /// 99th percentile latency.
    pub latency_p99_us: u64,
    /// The last failure; empty when none.
    pub last_error: String,
    /// Whether it passed at its last sample.
    pub passing: bool,
}

/// The run state of a service (`flotilla.v1.ServiceRunState`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunState {
    /// Started, health not yet established.
    Starting,
    /// Running.
    Running,
    /// Stopped on purpose.
    Stopped,
    /// Exited unexpectedly; being restarted with backoff.
    Crashed,
    /// Never started, or restarting gave up.
    Failed,
}

/// One installed service (`flotilla.v1.ServiceInstance`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceInstance {
    /// The service name.
    pub service: String,
    /// The version `current` points at; empty when none.
    pub version: String,
    /// Its run state.
    pub state: RunState,
    /// The process id; 0 when none.
    pub pid: u32,
    /// When the process started; 0 when none.
    pub started_unix_ms: i64,
    /// Contracts the version serves.
    pub provides: BTreeMap<String, String>,
    /// Other versions kept on disk, newest first.
    pub kept_versions: Vec<String>,
    /// Supervisor restarts since activation.
    pub restarts: u32,
}

/// A finished step (`flotilla.v1.StepResult`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepResult {
    /// The step's command id.
    pub command_id: String,
    /// The term it was sent with.
    pub term: u64,
    /// What happened.
    pub outcome: StepOutcome,
    /// Why it failed; `None` unless failed.
    pub failure: Option<StepFailure>,
    /// The precise reason (on failure; a note for a skip or refusal).
    pub reason: String,
    /// Per health check, in the step's order.
    pub health: Vec<HealthCheckReport>,
    /// The service after the step; `None` for checks.
    pub service: Option<ServiceInstance>,
    /// For hooks and checks: the exit code; `None` when killed or not applicable.
    pub exit_code: Option<i32>,
    /// For hooks and checks: the end of their output (at most 4 KiB).
    pub output_tail: String,
    /// When it started.
    pub started_unix_ms: i64,
    /// When it finished.
    pub finished_unix_ms: i64,
    /// Whether this is a recorded result answering a repeat.
    pub replayed: bool,
}

impl StepResult {
    /// A result with `outcome` and nothing else filled in.
    pub fn new(step: &Step, outcome: StepOutcome, started_unix_ms: i64) -> Self {
        Self::ended_at_once(step.command_id.clone(), step.term, outcome, String::new(), started_unix_ms)
    }

    /// The result of a step that ended before it began (never received, or unreadable):
    /// `outcome` and `reason` at `now`, nothing else.
    pub fn ended_at_once(
        command_id: String,
        term: u64,
        outcome: StepOutcome,
        reason: String,
        now_unix_ms: i64,
    ) -> Self {
        Self {
            command_id,
            term,
            outcome,
            failure: None,
            reason,
            health: Vec::new(),
            service: None,
            exit_code: None,
            output_tail: String::new(),
            started_unix_ms: now_unix_ms,
            finished_unix_ms: now_unix_ms,
            replayed: false,
        }
    }

    /// Whether the step ended well (succeeded or skipped).
    pub fn is_success(&self) -> bool {
        matches!(self.outcome, StepOutcome::Succeeded | StepOutcome::Skipped)
    }
}

fn ms_or(ms: u64, default_ms: u64) -> Duration {
    Duration::from_millis(if ms == 0 { default_ms } else { ms })
}
