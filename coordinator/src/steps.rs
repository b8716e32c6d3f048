//! The commands an agent receives, built from a step record and the release's spec.
//! Pure: the same record and spec always give the same command, so a new leader
//! sends exactly what its predecessor sent (with its own term).

use std::time::Duration;

use flotilla_proto::v1;
use flotilla_shared::spec::{HealthCheck, Probe, ReleaseSpec, ServiceSpec};

use crate::engine::{StepKind, StepRecord};

/// The command for a step, sent in leader term `term`; `None` when the spec does not
/// have what the step names (a bug, logged by the caller).
pub fn build(
    release: &str,
    command_id: &str,
    term: u64,
    step: &StepRecord,
    spec: &ReleaseSpec,
    stage: &str,
) -> Option<v1::Step> {
    let service = |name: &str| spec.service(name);
    let action = match &step.kind {
        StepKind::Deploy(s) => v1::step::Action::Deploy(deploy(service(s.as_str())?)),
        StepKind::Bake(s, duration_ms) => {
            let svc = service(s.as_str())?;
            v1::step::Action::Bake(v1::Bake {
                service: svc.name.to_string(),
                version: svc.version.to_string(),
                duration_ms: *duration_ms,
                health: svc.health.iter().map(health).collect(),
            })
        }
        StepKind::Migrate(s) => {
            let svc = service(s.as_str())?;
            hook(svc, v1::HookKind::Migrate, svc.hooks.migrate.clone()?)
        }
        StepKind::MigrateDown(s) => {
            let svc = service(s.as_str())?;
            hook(svc, v1::HookKind::MigrateDown, svc.hooks.migrate_down.clone()?)
        }
        StepKind::Rollback(s, Some(to)) => {
            let svc = service(s.as_str())?;
            v1::step::Action::Rollback(v1::Rollback {
                service: svc.name.to_string(),
                to_version: to.clone(),
                from_version: svc.version.to_string(),
                fallback: None,
            })
        }
        StepKind::Rollback(s, None) => {
            let svc = service(s.as_str())?;
            v1::step::Action::Stop(v1::Stop {
                service: svc.name.to_string(),
                stop_timeout_ms: ms(svc.run.stop_timeout),
            })
        }
        StepKind::Check(gate) => {
            let g = spec.gates.iter().find(|g| &g.name == gate)?;
            let exec = g.exec.as_ref()?;
            v1::step::Action::RunCheck(v1::RunCheck {
                gate: g.name.clone(),
                command: exec.command.clone(),
                env: [
                    ("FLOTILLA_RELEASE".to_owned(), release.to_owned()),
                    ("FLOTILLA_GATE".to_owned(), g.name.clone()),
                ]
                .into_iter()
                .collect(),
                timeout_ms: ms(exec.timeout),
            })
        }
    };
    Some(v1::Step {
        command_id: command_id.to_owned(),
        term,
        release_id: release.to_owned(),
        stage: stage.to_owned(),
        action: Some(action),
    })
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn artifact(svc: &ServiceSpec) -> v1::Artifact {
    v1::Artifact { url: svc.artifact.url.clone(), sha256: svc.artifact.sha256.clone() }
}

fn hook(svc: &ServiceSpec, kind: v1::HookKind, command: String) -> v1::step::Action {
    v1::step::Action::RunHook(v1::RunHook {
        service: svc.name.to_string(),
        version: svc.version.to_string(),
        hook: kind as i32,
        command,
        timeout_ms: ms(svc.policy.hook_timeout),
        artifact: Some(artifact(svc)),
    })
}

fn health(check: &HealthCheck) -> v1::HealthCheck {
    let probe = match &check.probe {
        Probe::Http { url, expect_status, .. } => {
            v1::health_check::Probe::Http(v1::HttpCheck { url: url.clone(), expect_status: u32::from(*expect_status) })
        }
        Probe::Tcp { addr } => v1::health_check::Probe::Tcp(v1::TcpCheck { addr: addr.clone() }),
        Probe::Exec { command } => v1::health_check::Probe::Exec(v1::ExecCheck { command: command.clone() }),
    };
    v1::HealthCheck { probe: Some(probe), interval_ms: ms(check.interval), timeout_ms: ms(check.timeout) }
}

/// The deploy command of a service's target version.
pub fn deploy(svc: &ServiceSpec) -> v1::Deploy {
    let opt = |h: &Option<String>| h.clone().unwrap_or_default();
    v1::Deploy {
        service: svc.name.to_string(),
        version: svc.version.to_string(),
        artifact: Some(artifact(svc)),
        run: Some(v1::RunSpec {
            command: svc.run.command.clone(),
            args: svc.run.args.clone(),
            env: svc.run.env.clone().into_iter().collect(),
        }),
        hooks: Some(v1::Hooks {
            before_install: opt(&svc.hooks.before_install),
            after_install: opt(&svc.hooks.after_install),
            // The migration runs once per release as its own step, never with a deploy.
            migrate: String::new(),
            migrate_down: String::new(),
            validate: opt(&svc.hooks.validate),
        }),
        health: svc.health.iter().map(health).collect(),
        healthy_for_ms: ms(svc.policy.healthy_for),
        healthy_deadline_ms: ms(svc.policy.healthy_deadline),
        hook_timeout_ms: ms(svc.policy.hook_timeout),
        stop_timeout_ms: ms(svc.run.stop_timeout),
        migrate: false,
        provides: svc.provides.iter().map(|(k, v)| (k.clone(), v.to_string())).collect(),
    }
}
