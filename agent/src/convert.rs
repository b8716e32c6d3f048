//! Conversions between the wire messages of `flotilla.v1` (`flotilla_proto::v1`) and
//! the agent's plain types in [`crate::step`].
//!
//! Towards the wire (`From`) nothing can fail. From the wire (`TryFrom`) every message
//! is checked: a missing `oneof` or required message, an enum value that is unknown or
//! `*_UNSPECIFIED` where a value is required, a version that is not semver, or a number
//! out of range becomes a [`ConvertError`] naming the field (`step.deploy.health[1].probe`),
//! never a panic. Empty strings are not checked here; the executor refuses what it
//! cannot run (an empty run command, a bad sha256) with a failed result.

use std::collections::{BTreeMap, HashMap};

use flotilla_proto::v1 as pb;

use crate::step::{
    Action, Artifact, Bake, Deploy, HealthCheck, HealthCheckKind, HealthCheckReport, HookKind, Hooks, Probe, Rollback,
    RunCheck, RunHook, RunSpec, RunState, ServiceInstance, Step, StepFailure, StepOutcome, StepPhase, StepProgress,
    StepResult, Stop,
};

/// A wire message the agent cannot use: which field, and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {problem}")]
pub struct ConvertError {
    /// The field's path from the message's root (`step.deploy.artifact`).
    pub field: String,
    /// What is wrong (`is missing`, `unknown enum value 42`).
    pub problem: String,
}

impl ConvertError {
    fn new(field: &str, problem: impl Into<String>) -> Self {
        Self { field: field.to_owned(), problem: problem.into() }
    }

    fn missing(field: &str) -> Self {
        Self::new(field, "is missing")
    }
}

type Result<T> = std::result::Result<T, ConvertError>;

// ---------------------------------------------------------------------- helpers

fn required<T>(value: Option<T>, field: &str) -> Result<T> {
    value.ok_or_else(|| ConvertError::missing(field))
}

/// A prost enum field (an `i32` on the wire): unknown values are refused; the
/// `*_UNSPECIFIED` value (0) is `None`.
fn enum_value<E: TryFrom<i32>>(raw: i32, field: &str) -> Result<Option<E>> {
    if raw == 0 {
        return Ok(None);
    }
    E::try_from(raw).map(Some).map_err(|_| ConvertError::new(field, format!("unknown enum value {raw}")))
}

/// As [`enum_value`], and `*_UNSPECIFIED` is refused too.
fn enum_required<E: TryFrom<i32>>(raw: i32, field: &str) -> Result<E> {
    enum_value(raw, field)?.ok_or_else(|| ConvertError::new(field, "is unspecified"))
}

/// A semver version, as text.
fn version(text: String, field: &str) -> Result<String> {
    match semver::Version::parse(&text) {
        Ok(_) => Ok(text),
        Err(e) if text.is_empty() => {
            Err(ConvertError::new(field, format!("is empty (expected a semver version: {e})")))
        }
        Err(e) => Err(ConvertError::new(field, format!("`{text}` is not a semver version: {e}"))),
    }
}

/// A semver version or empty (meaning "any" / "the default").
fn optional_version(text: String, field: &str) -> Result<String> {
    if text.is_empty() { Ok(text) } else { version(text, field) }
}

fn sorted(map: HashMap<String, String>) -> BTreeMap<String, String> {
    map.into_iter().collect()
}

fn unsorted(map: BTreeMap<String, String>) -> HashMap<String, String> {
    map.into_iter().collect()
}

// ---------------------------------------------------------------------- enums

impl From<StepPhase> for pb::StepPhase {
    fn from(phase: StepPhase) -> Self {
        match phase {
            StepPhase::Accepted => Self::Accepted,
            StepPhase::Fetching => Self::Fetching,
            StepPhase::Verifying => Self::Verifying,
            StepPhase::Unpacking => Self::Unpacking,
            StepPhase::RunningHook => Self::RunningHook,
            StepPhase::Migrating => Self::Migrating,
            StepPhase::Stopping => Self::Stopping,
            StepPhase::Installing => Self::Installing,
            StepPhase::Starting => Self::Starting,
            StepPhase::CheckingHealth => Self::CheckingHealth,
            StepPhase::Baking => Self::Baking,
            StepPhase::RunningCheck => Self::RunningCheck,
            StepPhase::Reverting => Self::Reverting,
        }
    }
}

fn phase_from_wire(raw: i32, field: &str) -> Result<StepPhase> {
    Ok(match enum_required::<pb::StepPhase>(raw, field)? {
        pb::StepPhase::Unspecified => return Err(ConvertError::new(field, "is unspecified")),
        pb::StepPhase::Accepted => StepPhase::Accepted,
        pb::StepPhase::Fetching => StepPhase::Fetching,
        pb::StepPhase::Verifying => StepPhase::Verifying,
        pb::StepPhase::Unpacking => StepPhase::Unpacking,
        pb::StepPhase::RunningHook => StepPhase::RunningHook,
        pb::StepPhase::Migrating => StepPhase::Migrating,
        pb::StepPhase::Stopping => StepPhase::Stopping,
        pb::StepPhase::Installing => StepPhase::Installing,
        pb::StepPhase::Starting => StepPhase::Starting,
        pb::StepPhase::CheckingHealth => StepPhase::CheckingHealth,
        pb::StepPhase::Baking => StepPhase::Baking,
        pb::StepPhase::RunningCheck => StepPhase::RunningCheck,
        pb::StepPhase::Reverting => StepPhase::Reverting,
    })
}

impl From<StepOutcome> for pb::StepOutcome {
    fn from(outcome: StepOutcome) -> Self {
        match outcome {
            StepOutcome::Succeeded => Self::Succeeded,
            StepOutcome::Failed => Self::Failed,
            StepOutcome::Cancelled => Self::Cancelled,
            StepOutcome::Refused => Self::Refused,
            StepOutcome::Skipped => Self::Skipped,
        }
    }
}

fn outcome_from_wire(raw: i32, field: &str) -> Result<StepOutcome> {
    Ok(match enum_required::<pb::StepOutcome>(raw, field)? {
        pb::StepOutcome::Unspecified => return Err(ConvertError::new(field, "is unspecified")),
        pb::StepOutcome::Succeeded => StepOutcome::Succeeded,
        pb::StepOutcome::Failed => StepOutcome::Failed,
        pb::StepOutcome::Cancelled => StepOutcome::Cancelled,
        pb::StepOutcome::Refused => StepOutcome::Refused,
        pb::StepOutcome::Skipped => StepOutcome::Skipped,
    })
}

impl From<StepFailure> for pb::StepFailure {
    fn from(failure: StepFailure) -> Self {
        match failure {
            StepFailure::Fetch => Self::Fetch,
            StepFailure::Verify => Self::Verify,
            StepFailure::Unpack => Self::Unpack,
            StepFailure::Hook => Self::Hook,
            StepFailure::HookTimeout => Self::HookTimeout,
            StepFailure::Start => Self::Start,
            StepFailure::ProcessExited => Self::ProcessExited,
            StepFailure::HealthDeadline => Self::HealthDeadline,
            StepFailure::Unhealthy => Self::Unhealthy,
            StepFailure::Check => Self::Check,
            StepFailure::NoPrevious => Self::NoPrevious,
            StepFailure::Internal => Self::Internal,
        }
    }
}

/// `STEP_FAILURE_UNSPECIFIED` is `None` (the step did not fail).
fn failure_from_wire(raw: i32, field: &str) -> Result<Option<StepFailure>> {
    Ok(enum_value::<pb::StepFailure>(raw, field)?.and_then(|f| {
        Some(match f {
            pb::StepFailure::Unspecified => return None,
            pb::StepFailure::Fetch => StepFailure::Fetch,
            pb::StepFailure::Verify => StepFailure::Verify,
            pb::StepFailure::Unpack => StepFailure::Unpack,
            pb::StepFailure::Hook => StepFailure::Hook,
            pb::StepFailure::HookTimeout => StepFailure::HookTimeout,
            pb::StepFailure::Start => StepFailure::Start,
            pb::StepFailure::ProcessExited => StepFailure::ProcessExited,
            pb::StepFailure::HealthDeadline => StepFailure::HealthDeadline,
            pb::StepFailure::Unhealthy => StepFailure::Unhealthy,
            pb::StepFailure::Check => StepFailure::Check,
            pb::StepFailure::NoPrevious => StepFailure::NoPrevious,
            pb::StepFailure::Internal => StepFailure::Internal,
        })
    }))
}

impl From<HealthCheckKind> for pb::HealthCheckKind {
    fn from(kind: HealthCheckKind) -> Self {
        match kind {
            HealthCheckKind::Http => Self::Http,
            HealthCheckKind::Tcp => Self::Tcp,
            HealthCheckKind::Exec => Self::Exec,
        }
    }
}

fn check_kind_from_wire(raw: i32, field: &str) -> Result<HealthCheckKind> {
    Ok(match enum_required::<pb::HealthCheckKind>(raw, field)? {
        pb::HealthCheckKind::Unspecified => return Err(ConvertError::new(field, "is unspecified")),
        pb::HealthCheckKind::Http => HealthCheckKind::Http,
        pb::HealthCheckKind::Tcp => HealthCheckKind::Tcp,
        pb::HealthCheckKind::Exec => HealthCheckKind::Exec,
    })
}

impl From<HookKind> for pb::HookKind {
    fn from(kind: HookKind) -> Self {
        match kind {
            HookKind::BeforeInstall => Self::BeforeInstall,
            HookKind::AfterInstall => Self::AfterInstall,
            HookKind::Migrate => Self::Migrate,
            HookKind::MigrateDown => Self::MigrateDown,
            HookKind::Validate => Self::Validate,
        }
    }
}

fn hook_kind_from_wire(raw: i32, field: &str) -> Result<HookKind> {
    Ok(match enum_required::<pb::HookKind>(raw, field)? {
        pb::HookKind::Unspecified => return Err(ConvertError::new(field, "is unspecified")),
        pb::HookKind::BeforeInstall => HookKind::BeforeInstall,
        pb::HookKind::AfterInstall => HookKind::AfterInstall,
        pb::HookKind::Migrate => HookKind::Migrate,
        pb::HookKind::MigrateDown => HookKind::MigrateDown,
        pb::HookKind::Validate => HookKind::Validate,
    })
}

impl From<RunState> for pb::ServiceRunState {
    fn from(state: RunState) -> Self {
        match state {
            RunState::Starting => Self::Starting,
            RunState::Running => Self::Running,
            RunState::Stopped => Self::Stopped,
            RunState::Crashed => Self::Crashed,
            RunState::Failed => Self::Failed,
        }
    }
}

fn run_state_from_wire(raw: i32, field: &str) -> Result<RunState> {
    Ok(match enum_required::<pb::ServiceRunState>(raw, field)? {
        pb::ServiceRunState::Unspecified => return Err(ConvertError::new(field, "is unspecified")),
        pb::ServiceRunState::Starting => RunState::Starting,
        pb::ServiceRunState::Running => RunState::Running,
        pb::ServiceRunState::Stopped => RunState::Stopped,
        pb::ServiceRunState::Crashed => RunState::Crashed,
        pb::ServiceRunState::Failed => RunState::Failed,
    })
}

// ---------------------------------------------------------------------- steps, to the wire

impl From<Artifact> for pb::Artifact {
    fn from(a: Artifact) -> Self {
        Self { url: a.url, sha256: a.sha256 }
    }
}

impl From<RunSpec> for pb::RunSpec {
    fn from(r: RunSpec) -> Self {
        Self { command: r.command, args: r.args, env: unsorted(r.env) }
    }
}

impl From<Hooks> for pb::Hooks {
    fn from(h: Hooks) -> Self {
        Self {
            before_install: h.before_install,
            after_install: h.after_install,
            migrate: h.migrate,
            migrate_down: h.migrate_down,
            validate: h.validate,
        }
    }
}

/// The wire has no `body_contains` for HTTP checks yet; it is dropped.
impl From<HealthCheck> for pb::HealthCheck {
    fn from(c: HealthCheck) -> Self {
        let probe = match c.probe {
            Probe::Http { url, expect_status, body_contains: _ } => {
                pb::health_check::Probe::Http(pb::HttpCheck { url, expect_status: u32::from(expect_status) })
            }
            Probe::Tcp { addr } => pb::health_check::Probe::Tcp(pb::TcpCheck { addr }),
            Probe::Exec { command } => pb::health_check::Probe::Exec(pb::ExecCheck { command }),
        };
        Self { probe: Some(probe), interval_ms: c.interval_ms, timeout_ms: c.timeout_ms }
    }
}

impl From<Deploy> for pb::Deploy {
    fn from(d: Deploy) -> Self {
        Self {
            service: d.service,
            version: d.version,
            artifact: Some(d.artifact.into()),
            run: Some(d.run.into()),
            hooks: Some(d.hooks.into()),
            health: d.health.into_iter().map(Into::into).collect(),
            healthy_for_ms: d.healthy_for_ms,
            healthy_deadline_ms: d.healthy_deadline_ms,
            hook_timeout_ms: d.hook_timeout_ms,
            stop_timeout_ms: d.stop_timeout_ms,
            migrate: d.migrate,
            provides: unsorted(d.provides),
        }
    }
}

impl From<Action> for pb::step::Action {
    fn from(action: Action) -> Self {
        match action {
            Action::Deploy(d) => Self::Deploy((*d).into()),
            Action::Rollback(r) => Self::Rollback(pb::Rollback {
                service: r.service,
                to_version: r.to_version,
                from_version: r.from_version,
                fallback: r.fallback.map(|d| (*d).into()),
            }),
            Action::Stop(s) => Self::Stop(pb::Stop { service: s.service, stop_timeout_ms: s.stop_timeout_ms }),
            Action::RunCheck(c) => Self::RunCheck(pb::RunCheck {
                gate: c.gate,
                command: c.command,
                env: unsorted(c.env),
                timeout_ms: c.timeout_ms,
            }),
            Action::Bake(b) => Self::Bake(pb::Bake {
                service: b.service,
                version: b.version,
                duration_ms: b.duration_ms,
                health: b.health.into_iter().map(Into::into).collect(),
            }),
            Action::RunHook(h) => Self::RunHook(pb::RunHook {
                service: h.service,
                version: h.version,
                hook: pb::HookKind::from(h.hook).into(),
                command: h.command,
                timeout_ms: h.timeout_ms,
                artifact: h.artifact.map(Into::into),
            }),
        }
    }
}

impl From<Step> for pb::Step {
    fn from(s: Step) -> Self {
        Self {
            command_id: s.command_id,
            term: s.term,
            release_id: s.release_id,
            stage: s.stage,
            action: Some(s.action.into()),
        }
    }
}

// ---------------------------------------------------------------------- steps, from the wire

fn artifact_from_wire(a: pb::Artifact) -> Artifact {
    Artifact { url: a.url, sha256: a.sha256 }
}

fn health_check_from_wire(c: pb::HealthCheck, field: &str) -> Result<HealthCheck> {
    let probe = match required(c.probe, &format!("{field}.probe"))? {
        pb::health_check::Probe::Http(h) => Probe::Http {
            url: h.url,
            expect_status: match u16::try_from(h.expect_status) {
                Ok(status) if status == 0 || (100..=599).contains(&status) => status,
                _ => {
                    return Err(ConvertError::new(
                        &format!("{field}.http.expect_status"),
                        format!("{} is not an HTTP status (100-599, or 0 for any 2xx)", h.expect_status),
                    ));
                }
            },
            body_contains: String::new(),
        },
        pb::health_check::Probe::Tcp(t) => Probe::Tcp { addr: t.addr },
        pb::health_check::Probe::Exec(e) => Probe::Exec { command: e.command },
    };
    Ok(HealthCheck { probe, interval_ms: c.interval_ms, timeout_ms: c.timeout_ms })
}

fn health_checks_from_wire(checks: Vec<pb::HealthCheck>, field: &str) -> Result<Vec<HealthCheck>> {
    checks.into_iter().enumerate().map(|(i, c)| health_check_from_wire(c, &format!("{field}[{i}]"))).collect()
}

fn deploy_from_wire(d: pb::Deploy, field: &str) -> Result<Deploy> {
    let run = required(d.run, &format!("{field}.run"))?;
    let provides = d
        .provides
        .into_iter()
        .map(|(contract, v)| {
            let v = version(v, &format!("{field}.provides[{contract}]"))?;
            Ok((contract, v))
        })
        .collect::<Result<BTreeMap<_, _>>>()?;
    let hooks = d.hooks.unwrap_or_default();
    Ok(Deploy {
        version: version(d.version, &format!("{field}.version"))?,
        service: d.service,
        artifact: artifact_from_wire(required(d.artifact, &format!("{field}.artifact"))?),
        run: RunSpec { command: run.command, args: run.args, env: sorted(run.env) },
        hooks: Hooks {
            before_install: hooks.before_install,
            after_install: hooks.after_install,
            migrate: hooks.migrate,
            migrate_down: hooks.migrate_down,
            validate: hooks.validate,
        },
        health: health_checks_from_wire(d.health, &format!("{field}.health"))?,
        healthy_for_ms: d.healthy_for_ms,
        healthy_deadline_ms: d.healthy_deadline_ms,
        hook_timeout_ms: d.hook_timeout_ms,
        stop_timeout_ms: d.stop_timeout_ms,
        migrate: d.migrate,
        provides,
    })
}

fn action_from_wire(action: Option<pb::step::Action>) -> Result<Action> {
    let Some(action) = action else {
        return Err(ConvertError::new(
            "step.action",
            "is missing (none of deploy, rollback, stop, run_check, bake, run_hook is set)",
        ));
    };
    Ok(match action {
        pb::step::Action::Deploy(d) => Action::Deploy(Box::new(deploy_from_wire(d, "step.deploy")?)),
        pb::step::Action::Rollback(r) => Action::Rollback(Rollback {
            to_version: optional_version(r.to_version, "step.rollback.to_version")?,
            from_version: optional_version(r.from_version, "step.rollback.from_version")?,
            fallback: match r.fallback {
                Some(d) => Some(Box::new(deploy_from_wire(d, "step.rollback.fallback")?)),
                None => None,
            },
            service: r.service,
        }),
        pb::step::Action::Stop(s) => Action::Stop(Stop { service: s.service, stop_timeout_ms: s.stop_timeout_ms }),
        pb::step::Action::RunCheck(c) => Action::RunCheck(RunCheck {
            gate: c.gate,
            command: c.command,
            env: sorted(c.env),
            timeout_ms: c.timeout_ms,
        }),
        pb::step::Action::Bake(b) => Action::Bake(Bake {
            version: optional_version(b.version, "step.bake.version")?,
            health: health_checks_from_wire(b.health, "step.bake.health")?,
            service: b.service,
            duration_ms: b.duration_ms,
        }),
        pb::step::Action::RunHook(h) => Action::RunHook(RunHook {
            version: version(h.version, "step.run_hook.version")?,
            hook: hook_kind_from_wire(h.hook, "step.run_hook.hook")?,
            service: h.service,
            command: h.command,
            timeout_ms: h.timeout_ms,
            artifact: h.artifact.map(artifact_from_wire),
        }),
    })
}

impl TryFrom<pb::Step> for Step {
    type Error = ConvertError;

    fn try_from(s: pb::Step) -> Result<Self> {
        if s.command_id.is_empty() {
            return Err(ConvertError::new("step.command_id", "is empty"));
        }
        Ok(Self {
            action: action_from_wire(s.action)?,
            command_id: s.command_id,
            term: s.term,
            release_id: s.release_id,
            stage: s.stage,
        })
    }
}

// ---------------------------------------------------------------------- reports

impl From<StepProgress> for pb::StepProgress {
    fn from(p: StepProgress) -> Self {
        Self {
            command_id: p.command_id,
            phase: pb::StepPhase::from(p.phase).into(),
            detail: p.detail,
            at_unix_ms: p.at_unix_ms,
        }
    }
}

impl TryFrom<pb::StepProgress> for StepProgress {
    type Error = ConvertError;

    fn try_from(p: pb::StepProgress) -> Result<Self> {
        Ok(Self {
            phase: phase_from_wire(p.phase, "progress.phase")?,
            command_id: p.command_id,
            detail: p.detail,
            at_unix_ms: p.at_unix_ms,
        })
    }
}

impl From<HealthCheckReport> for pb::HealthCheckReport {
    fn from(r: HealthCheckReport) -> Self {
        Self {
            index: r.index,
            kind: pb::HealthCheckKind::from(r.kind).into(),
            target: r.target,
            samples: r.samples,
            failures: r.failures,
            latency_p50_us: r.latency_p50_us,
            latency_p99_us: r.latency_p99_us,
            last_error: r.last_error,
            passing: r.passing,
        }
    }
}

fn report_from_wire(r: pb::HealthCheckReport, field: &str) -> Result<HealthCheckReport> {
    Ok(HealthCheckReport {
        kind: check_kind_from_wire(r.kind, &format!("{field}.kind"))?,
        index: r.index,
        target: r.target,
        samples: r.samples,
        failures: r.failures,
        latency_p50_us: r.latency_p50_us,
        latency_p99_us: r.latency_p99_us,
        last_error: r.last_error,
        passing: r.passing,
    })
}

impl From<ServiceInstance> for pb::ServiceInstance {
    fn from(s: ServiceInstance) -> Self {
        Self {
            service: s.service,
            version: s.version,
            state: pb::ServiceRunState::from(s.state).into(),
            pid: s.pid,
            started_unix_ms: s.started_unix_ms,
            provides: unsorted(s.provides),
            kept_versions: s.kept_versions,
            restarts: s.restarts,
        }
    }
}

fn instance_from_wire(s: pb::ServiceInstance, field: &str) -> Result<ServiceInstance> {
    Ok(ServiceInstance {
        state: run_state_from_wire(s.state, &format!("{field}.state"))?,
        service: s.service,
        version: s.version,
        pid: s.pid,
        started_unix_ms: s.started_unix_ms,
        provides: sorted(s.provides),
        kept_versions: s.kept_versions,
        restarts: s.restarts,
    })
}

impl TryFrom<pb::ServiceInstance> for ServiceInstance {
    type Error = ConvertError;

    fn try_from(s: pb::ServiceInstance) -> Result<Self> {
        instance_from_wire(s, "service")
    }
}

impl From<StepResult> for pb::StepResult {
    fn from(r: StepResult) -> Self {
        Self {
            command_id: r.command_id,
            term: r.term,
            outcome: pb::StepOutcome::from(r.outcome).into(),
            failure: r.failure.map_or(pb::StepFailure::Unspecified, pb::StepFailure::from).into(),
            reason: r.reason,
            health: r.health.into_iter().map(Into::into).collect(),
            service: r.service.map(Into::into),
            exit_code: r.exit_code,
            output_tail: r.output_tail,
            started_unix_ms: r.started_unix_ms,
            finished_unix_ms: r.finished_unix_ms,
            replayed: r.replayed,
        }
    }
}

impl TryFrom<pb::StepResult> for StepResult {
    type Error = ConvertError;

    fn try_from(r: pb::StepResult) -> Result<Self> {
        Ok(Self {
            outcome: outcome_from_wire(r.outcome, "result.outcome")?,
            failure: failure_from_wire(r.failure, "result.failure")?,
            health: r
                .health
                .into_iter()
                .enumerate()
                .map(|(i, h)| report_from_wire(h, &format!("result.health[{i}]")))
                .collect::<Result<_>>()?,
            service: r.service.map(|s| instance_from_wire(s, "result.service")).transpose()?,
            command_id: r.command_id,
            term: r.term,
            reason: r.reason,
            exit_code: r.exit_code,
            output_tail: r.output_tail,
            started_unix_ms: r.started_unix_ms,
            finished_unix_ms: r.finished_unix_ms,
            replayed: r.replayed,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deploy(version: &str) -> Deploy {
        Deploy {
            service: "web".into(),
            version: version.into(),
            artifact: Artifact { url: "file:///a.tar.gz".into(), sha256: "ab".repeat(32) },
            run: RunSpec {
                command: "bin/web".into(),
                args: vec!["--port".into(), "8080".into()],
                env: BTreeMap::from([("A".into(), "1".into()), ("B".into(), "2".into())]),
            },
            hooks: Hooks {
                before_install: "echo before".into(),
                after_install: "echo after".into(),
                migrate: "migrate up".into(),
                migrate_down: "migrate down".into(),
                validate: "curl -f localhost".into(),
            },
            health: vec![
                HealthCheck {
                    probe: Probe::Http {
                        url: "http://127.0.0.1:8080/healthz".into(),
                        expect_status: 204,
                        body_contains: String::new(),
                    },
                    interval_ms: 100,
                    timeout_ms: 200,
                },
                HealthCheck { probe: Probe::Tcp { addr: "127.0.0.1:8080".into() }, interval_ms: 0, timeout_ms: 0 },
                HealthCheck { probe: Probe::Exec { command: "true".into() }, interval_ms: 5, timeout_ms: 6 },
            ],
            healthy_for_ms: 1,
            healthy_deadline_ms: 2,
            hook_timeout_ms: 3,
            stop_timeout_ms: 4,
            migrate: true,
            provides: BTreeMap::from([("web-api".into(), "2.1.0".into())]),
        }
    }

    fn step(action: Action) -> Step {
        Step { command_id: "c-1".into(), term: 7, release_id: "r-1".into(), stage: "canary".into(), action }
    }

    fn every_action() -> Vec<Action> {
        vec![
            Action::Deploy(Box::new(deploy("2.1.0"))),
            Action::Rollback(Rollback {
                service: "web".into(),
                to_version: "1.0.0".into(),
                from_version: "2.1.0".into(),
                fallback: Some(Box::new(deploy("1.0.0"))),
            }),
            Action::Rollback(Rollback {
                service: "web".into(),
                to_version: String::new(),
                from_version: String::new(),
                fallback: None,
            }),
            Action::Stop(Stop { service: "web".into(), stop_timeout_ms: 9 }),
            Action::RunCheck(RunCheck {
                gate: "smoke".into(),
                command: "./smoke.sh".into(),
                env: BTreeMap::from([("X".into(), "y".into())]),
                timeout_ms: 10,
            }),
            Action::Bake(Bake {
                service: "web".into(),
                version: "2.1.0".into(),
                duration_ms: 60_000,
                health: deploy("2.1.0").health,
            }),
            Action::RunHook(RunHook {
                service: "db".into(),
                version: "3.0.0-rc.1+build.5".into(),
                hook: HookKind::MigrateDown,
                command: "migrate down".into(),
                timeout_ms: 11,
                artifact: Some(Artifact { url: "https://x/db.tar".into(), sha256: "cd".repeat(32) }),
            }),
        ]
    }

    #[test]
    fn every_step_action_round_trips() {
        for action in every_action() {
            let original = step(action);
            let wire = pb::Step::from(original.clone());
            // Through the bytes too, as a coordinator would send it.
            let bytes = prost::Message::encode_to_vec(&wire);
            let decoded: pb::Step = prost::Message::decode(bytes.as_slice()).expect("decodes");
            assert_eq!(Step::try_from(decoded).expect("converts back"), original);
        }
    }

    #[test]
    fn every_hook_kind_round_trips() {
        for hook in [
            HookKind::BeforeInstall,
            HookKind::AfterInstall,
            HookKind::Migrate,
            HookKind::MigrateDown,
            HookKind::Validate,
        ] {
            let raw: i32 = pb::HookKind::from(hook).into();
            assert_eq!(hook_kind_from_wire(raw, "h"), Ok(hook));
        }
    }

    #[test]
    fn progress_round_trips_in_every_phase() {
        for phase in StepPhase::ALL {
            let p = StepProgress { command_id: "c".into(), phase, detail: "hook before_install".into(), at_unix_ms: 5 };
            assert_eq!(StepProgress::try_from(pb::StepProgress::from(p.clone())), Ok(p));
        }
    }

    fn result(outcome: StepOutcome, failure: Option<StepFailure>) -> StepResult {
        StepResult {
            command_id: "c-9".into(),
            term: 3,
            outcome,
            failure,
            reason: "health check http: status 503 (3 of 3 samples)".into(),
            health: vec![
                HealthCheckReport {
                    index: 0,
                    kind: HealthCheckKind::Http,
                    target: "http http://127.0.0.1/healthz".into(),
                    samples: 3,
                    failures: 3,
                    latency_p50_us: 100,
                    latency_p99_us: 900,
                    last_error: "status 503".into(),
                    passing: false,
                },
                HealthCheckReport {
                    index: 1,
                    kind: HealthCheckKind::Exec,
                    target: "exec true".into(),
                    samples: 1,
                    failures: 0,
                    latency_p50_us: 1,
                    latency_p99_us: 1,
                    last_error: String::new(),
                    passing: true,
                },
            ],
            service: Some(ServiceInstance {
                service: "web".into(),
                version: "1.0.0".into(),
                state: RunState::Running,
                pid: 42,
                started_unix_ms: 1_700_000_000_000,
                provides: BTreeMap::from([("web-api".into(), "1.0.0".into())]),
                kept_versions: vec!["0.9.0".into(), "0.8.0".into()],
                restarts: 2,
            }),
            exit_code: Some(-1),
            output_tail: "last line\n".into(),
            started_unix_ms: 10,
            finished_unix_ms: 20,
            replayed: true,
        }
    }

    #[test]
    fn results_round_trip_with_every_outcome_failure_and_state() {
        let failures = [
            StepFailure::Fetch,
            StepFailure::Verify,
            StepFailure::Unpack,
            StepFailure::Hook,
            StepFailure::HookTimeout,
            StepFailure::Start,
            StepFailure::ProcessExited,
            StepFailure::HealthDeadline,
            StepFailure::Unhealthy,
            StepFailure::Check,
            StepFailure::NoPrevious,
            StepFailure::Internal,
        ];
        let mut cases: Vec<StepResult> = failures.into_iter().map(|f| result(StepOutcome::Failed, Some(f))).collect();
        for outcome in [StepOutcome::Succeeded, StepOutcome::Cancelled, StepOutcome::Refused, StepOutcome::Skipped] {
            cases.push(result(outcome, None));
        }
        for state in [RunState::Starting, RunState::Running, RunState::Stopped, RunState::Crashed, RunState::Failed] {
            let mut r = result(StepOutcome::Succeeded, None);
            r.service.as_mut().expect("service").state = state;
            r.exit_code = None;
            cases.push(r);
        }
        let mut check = result(StepOutcome::Succeeded, None);
        check.service = None;
        cases.push(check);
        for original in cases {
            let wire = pb::StepResult::from(original.clone());
            let bytes = prost::Message::encode_to_vec(&wire);
            let decoded: pb::StepResult = prost::Message::decode(bytes.as_slice()).expect("decodes");
            assert_eq!(StepResult::try_from(decoded), Ok(original));
        }
    }

    #[test]
    fn an_inventory_entry_round_trips() {
        let instance = result(StepOutcome::Succeeded, None).service.expect("service");
        assert_eq!(ServiceInstance::try_from(pb::ServiceInstance::from(instance.clone())), Ok(instance));
    }

    fn wire_deploy() -> pb::Step {
        pb::Step::from(step(Action::Deploy(Box::new(deploy("2.1.0")))))
    }

    fn deploy_of(s: &mut pb::Step) -> &mut pb::Deploy {
        match s.action.as_mut() {
            Some(pb::step::Action::Deploy(d)) => d,
            other => panic!("not a deploy: {other:?}"),
        }
    }

    fn refused(s: pb::Step) -> ConvertError {
        Step::try_from(s).expect_err("refused")
    }

    #[test]
    fn bad_wire_steps_name_the_field() {
        let mut s = wire_deploy();
        s.action = None;
        let e = refused(s);
        assert_eq!(e.field, "step.action");
        assert!(e.to_string().starts_with("step.action: is missing"), "{e}");

        let mut s = wire_deploy();
        s.command_id.clear();
        assert_eq!(refused(s).field, "step.command_id");

        let mut s = wire_deploy();
        deploy_of(&mut s).artifact = None;
        assert_eq!(refused(s), ConvertError::missing("step.deploy.artifact"));

        let mut s = wire_deploy();
        deploy_of(&mut s).run = None;
        assert_eq!(refused(s), ConvertError::missing("step.deploy.run"));

        let mut s = wire_deploy();
        deploy_of(&mut s).health[1].probe = None;
        assert_eq!(refused(s), ConvertError::missing("step.deploy.health[1].probe"));

        let mut s = wire_deploy();
        deploy_of(&mut s).version = "2.1".into();
        let e = refused(s);
        assert_eq!(e.field, "step.deploy.version");
        assert!(e.problem.contains("`2.1` is not a semver version"), "{e}");

        let mut s = wire_deploy();
        deploy_of(&mut s).version.clear();
        assert_eq!(refused(s).field, "step.deploy.version");

        let mut s = wire_deploy();
        deploy_of(&mut s).provides.insert("db-api".into(), "latest".into());
        assert_eq!(refused(s).field, "step.deploy.provides[db-api]");

        let mut s = wire_deploy();
        if let Some(pb::health_check::Probe::Http(h)) = deploy_of(&mut s).health[0].probe.as_mut() {
            h.expect_status = 70_000;
        }
        assert_eq!(refused(s).field, "step.deploy.health[0].http.expect_status");

        let mut s = pb::Step::from(step(every_action().remove(1)));
        if let Some(pb::step::Action::Rollback(r)) = s.action.as_mut() {
            r.to_version = "one".into();
        }
        assert_eq!(refused(s).field, "step.rollback.to_version");

        let mut s = pb::Step::from(step(every_action().remove(1)));
        if let Some(pb::step::Action::Rollback(r)) = s.action.as_mut() {
            r.fallback.as_mut().expect("fallback").artifact = None;
        }
        assert_eq!(refused(s), ConvertError::missing("step.rollback.fallback.artifact"));

        let run_hook = || pb::Step::from(step(every_action().remove(6)));
        let mut s = run_hook();
        if let Some(pb::step::Action::RunHook(h)) = s.action.as_mut() {
            h.hook = 0;
        }
        assert_eq!(refused(s), ConvertError::new("step.run_hook.hook", "is unspecified"));
        let mut s = run_hook();
        if let Some(pb::step::Action::RunHook(h)) = s.action.as_mut() {
            h.hook = 99;
        }
        assert_eq!(refused(s), ConvertError::new("step.run_hook.hook", "unknown enum value 99"));
    }

    #[test]
    fn bad_wire_reports_name_the_field() {
        let good = pb::StepResult::from(result(StepOutcome::Failed, Some(StepFailure::Hook)));
        let mut r = good.clone();
        r.outcome = 0;
        assert_eq!(StepResult::try_from(r), Err(ConvertError::new("result.outcome", "is unspecified")));
        let mut r = good.clone();
        r.failure = 77;
        assert_eq!(StepResult::try_from(r), Err(ConvertError::new("result.failure", "unknown enum value 77")));
        let mut r = good.clone();
        r.health[1].kind = 0;
        assert_eq!(StepResult::try_from(r).map_err(|e| e.field), Err("result.health[1].kind".to_owned()));
        let mut r = good;
        r.service.as_mut().expect("service").state = 12;
        assert_eq!(StepResult::try_from(r).map_err(|e| e.field), Err("result.service.state".to_owned()));
        let p = pb::StepProgress { command_id: "c".into(), phase: 0, detail: String::new(), at_unix_ms: 0 };
        assert_eq!(StepProgress::try_from(p), Err(ConvertError::new("progress.phase", "is unspecified")));
    }
}
