//! Agents' reports: how a step ended, and what follows on the run from it (a host
//! deployed, baked or failed, a migration done, a gate's check, a rollback step, an
//! interrupted step made ready to be sent again).

use flotilla_shared::model::{HostId, ServiceName};

use super::{GateState, HostState, Phase, Refusal, Run, ServiceState, StepKind, StepRecord, deadline, refuse};
use crate::event::EventKind;
use crate::fact::{CommandId, MAX_ATTEMPTS, Outcome};
use crate::text::{self, StepEnd};

impl Run {
    /// An agent reported how a step ended: recorded once per step.
    pub(super) fn step_reported(
        &mut self,
        at: i64,
        command_id: &CommandId,
        outcome: Outcome,
        reason: &str,
    ) -> Result<(), Refusal> {
        // Every check before the result is recorded: a refused report changes nothing.
        let Some(step) = self.steps.get(command_id) else {
            return refuse(format!("no step {command_id} in this release"));
        };
        if step.outcome.is_some() {
            return refuse(format!("step {command_id} already has a result"));
        }
        if let StepKind::Deploy(s) | StepKind::Bake(s, _) = &step.kind {
            // The host it ran on moves on in its service's run.
            self.service_in(step.stage, s)?;
        }
        let step = match self.steps.finish(command_id, outcome, reason, at) {
            Some(Ok(step)) => step.clone(),
            // Checked above.
            None | Some(Err(())) => return refuse(format!("step {command_id} cannot take a result")),
        };
        let host = step.host.clone();
        let stage_name = self.stage_name(step.stage);
        // An interrupted step is tried again while attempts remain.
        let attempts = self.steps.attempts(step.stage, &step.host, &step.kind);
        let retry = outcome == Outcome::Interrupted && attempts < MAX_ATTEMPTS;
        let end = StepEnd { outcome, reason, attempts, retry };
        let (kind, message) = match &step.kind {
            StepKind::Deploy(s) | StepKind::Bake(s, _) => self.host_step_reported(at, command_id, &step, s, &end)?,
            StepKind::Migrate(s) => {
                if outcome.ok() {
                    self.migrated.push(s.clone());
                    if let Ok(run) = self.service_mut(step.stage, s)
                        && run.state == ServiceState::Migrating
                    {
                        run.state = ServiceState::Deploying;
                        run.deadline_unix_ms = deadline(at, run.progress_deadline_ms);
                    }
                    (EventKind::MigrationDone, text::migration_done(s, &host))
                } else {
                    if retry
                        && let Ok(run) = self.service_mut(step.stage, s)
                        && run.state == ServiceState::Migrating
                    {
                        // Back to before the migration: the engine sends it again.
                        run.state = ServiceState::Deploying;
                    }
                    (EventKind::HostFailed, text::migration_failed(s, &host, &end))
                }
            }
            StepKind::Check(gate) => {
                if retry
                    && let Ok(st) = self.stage_mut(step.stage)
                    && let Some(state) = st.gates.get_mut(gate)
                    && *state == GateState::Running(command_id.clone())
                {
                    *state = GateState::Pending;
                }
                if outcome.ok() {
                    (EventKind::HostSucceeded, text::check_succeeded(gate, &host))
                } else {
                    (EventKind::HostFailed, text::check_failed(gate, &host, &end))
                }
            }
            StepKind::Rollback(s, to) => {
                self.rollback_step_reported(&end, &host);
                if outcome.ok() {
                    (EventKind::HostSucceeded, text::host_rolled_back(s, to.as_deref(), &host))
                } else {
                    (EventKind::HostFailed, text::host_rollback_failed(s, to.as_deref(), &host, &end))
                }
            }
            StepKind::MigrateDown(s) => {
                self.rollback_step_reported(&end, &host);
                if outcome.ok() {
                    (EventKind::HostSucceeded, text::migrate_down_succeeded_on(s, &host))
                } else {
                    (EventKind::HostFailed, text::migrate_down_failed_on(s, &host, &end))
                }
            }
        };
        let e = self.record(at, kind, message);
        e.stage = stage_name;
        match &step.kind {
            StepKind::Check(gate) => e.gate = gate.clone(),
            StepKind::Deploy(s)
            | StepKind::Bake(s, _)
            | StepKind::Migrate(s)
            | StepKind::Rollback(s, _)
            | StepKind::MigrateDown(s) => e.services = vec![s.clone()],
        }
        e.hosts = vec![host];
        e.command_ids = vec![command_id.clone()];
        Ok(())
    }

    /// A deploy or a bake ended: the host moves on if the step is still the one it
    /// runs (deployed, baked, sent again, failed). Returns the event to record.
    fn host_step_reported(
        &mut self,
        at: i64,
        command_id: &CommandId,
        step: &StepRecord,
        service: &ServiceName,
        end: &StepEnd<'_>,
    ) -> Result<(EventKind, String), Refusal> {
        let baking = matches!(step.kind, StepKind::Bake(..));
        let in_rollback = self.phase == Phase::RollingBack;
        let forward = self.phase == Phase::Forward;
        let host = &step.host;
        // Found: `step_reported` checked it before recording the result.
        let run = self.service_mut(step.stage, service)?;
        let current = run.hosts.get(host).cloned();
        let mine = matches!(&current, Some(HostState::Deploying(c) | HostState::Baking(c)) if c == command_id);
        if mine {
            let next = match (end.outcome, baking) {
                (Outcome::Succeeded, false) => HostState::Deployed,
                (Outcome::Succeeded, true) => HostState::Done,
                (Outcome::Cancelled, false) => HostState::Cancelled,
                (Outcome::Interrupted, false) if end.retry && forward => HostState::Waiting,
                // Baked again, not deployed again: the deploy succeeded, and an
                // agent that restarts starts its services that died with it.
                (Outcome::Interrupted, true) if end.retry && forward => HostState::Deployed,
                _ => HostState::Failed(text::host_failure(baking, end)),
            };
            // A bake to try again: the batch goes back to deploying, which
            // bakes its deployed hosts (hosts still baking finish their bake).
            if baking && next == HostState::Deployed {
                run.state = ServiceState::Deploying;
            }
            run.hosts.insert(host.clone(), next);
            if end.outcome.ok() && (forward || in_rollback) {
                run.deadline_unix_ms = if forward { deadline(at, run.progress_deadline_ms) } else { 0 };
            }
        }
        let version = &run.version;
        Ok(if end.outcome.ok() && baking {
            (EventKind::HostBaked, text::host_baked(service, version, host))
        } else if end.outcome.ok() {
            (EventKind::HostSucceeded, text::host_deployed(service, version, host))
        } else {
            (EventKind::HostFailed, text::host_step_failed(service, version, host, baking, end))
        })
    }

    /// A step of the rollback ended: a host it failed on is remembered for the engine
    /// to react to.
    fn rollback_step_reported(&mut self, end: &StepEnd<'_>, host: &HostId) {
        if !end.outcome.ok()
            && let Some(rb) = self.rollback.as_mut()
        {
            rb.failed.push((host.clone(), end.reason.to_owned()));
        }
    }
}
