//! Rolling back: a rollback decided (by the engine or an operator), its actions sent
//! batch by batch, and each action done.

use flotilla_shared::model::ServiceName;

use super::{GateState, Phase, Refusal, RollbackRun, Run, ServiceState, StageState, StepKind, refuse};
use crate::action::Action;
use crate::event::EventKind;
use crate::fact::{Dispatch, RollbackAction, Terminal};
use crate::text;

impl Run {
    /// A rollback is decided: the release stops rolling forward, the steps of the
    /// services that roll back are asked to stop, services that never started are
    /// cancelled (one argument per field of the fact, and the actions).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn rollback_decided(
        &mut self,
        at: i64,
        actor: &str,
        reason: &str,
        members: &[(ServiceName, String)],
        actions: &[RollbackAction],
        cancelled: &[ServiceName],
        out: &mut Vec<Action>,
    ) -> Result<(), Refusal> {
        if self.phase == Phase::RollingBack {
            return refuse("a rollback is already in progress");
        }
        if matches!(self.phase, Phase::Finished(Terminal::RolledBack | Terminal::Aborted | Terminal::Failed)) {
            return refuse("the release has finished without succeeding; there is nothing to roll back");
        }
        self.phase = Phase::RollingBack;
        self.finished_unix_ms = 0;
        self.paused = None;
        self.failure = None;
        self.approvals.clear();
        self.reason = reason.to_owned();
        let in_set: Vec<&ServiceName> = members.iter().map(|(s, _)| s).collect();
        for stage in &mut self.stages {
            if matches!(stage.state, StageState::Running | StageState::AwaitingApproval) {
                stage.state = StageState::Cancelled;
            }
            for gate in stage.gates.values_mut() {
                if matches!(gate, GateState::Pending | GateState::AwaitingApproval | GateState::Running(_)) {
                    *gate = GateState::Cancelled;
                }
            }
            for (name, svc) in &mut stage.services {
                if cancelled.contains(name) && svc.state == ServiceState::Waiting {
                    svc.state = ServiceState::Cancelled;
                } else if in_set.contains(&name) && !matches!(svc.state, ServiceState::Waiting | ServiceState::Skipped)
                {
                    svc.state = ServiceState::RollingBack;
                    svc.deadline_unix_ms = 0;
                } else if matches!(svc.state, ServiceState::Waiting) {
                    svc.state = ServiceState::Cancelled;
                }
            }
        }
        // Steps still running for services that roll back are cancelled.
        let stopped = self.steps.cancel_where(|kind| match kind {
            StepKind::Deploy(s) | StepKind::Bake(s, _) | StepKind::Migrate(s) => in_set.contains(&s),
            StepKind::Check(_) => true,
            _ => false,
        });
        out.extend(stopped.into_iter().map(|(command, host)| Action::Cancel { command, host }));
        self.rollback = Some(RollbackRun {
            members: members.to_vec(),
            actions: actions.to_vec(),
            position: 0,
            batch: None,
            dispatched: Vec::new(),
            failed: Vec::new(),
        });
        let e = self.record(at, EventKind::RollbackStarted, text::rollback_decided(actor, reason, members, cancelled));
        e.services = members.iter().map(|(s, _)| s.clone()).collect();
        e.actor = actor.to_owned();
        Ok(())
    }

    /// The next batch of the current rollback action is sent, once the previous
    /// batch's steps all have a result.
    pub(super) fn rollback_started(
        &mut self,
        at: i64,
        action: usize,
        batch: usize,
        dispatches: &[Dispatch],
        out: &mut Vec<Action>,
    ) -> Result<(), Refusal> {
        // Every check before the first change: a refused fact changes nothing.
        let Some(rb) = self.rollback.as_mut() else { return refuse("no rollback in progress") };
        let next = match rb.batch {
            None => Some(0),
            Some(b) => b.checked_add(1),
        };
        if action != rb.position || Some(batch) != next {
            return refuse(format!("rollback action {action} batch {batch} is not next"));
        }
        if rb.dispatched.iter().any(|d| self.steps.get(&d.command_id).is_none_or(|s| s.outcome.is_none())) {
            return refuse("the previous rollback batch is still running");
        }
        let (service, migrate_down) = match rb.actions.get(action) {
            None => return refuse(no_action(action, rb.actions.len())),
            Some(RollbackAction::Pause(s, _)) => return refuse(format!("rollback action {action} ({s}) is a pause")),
            Some(RollbackAction::Rollback(s)) => (s.clone(), false),
            Some(RollbackAction::MigrateDown(s)) => (s.clone(), true),
        };
        rb.batch = Some(batch);
        rb.dispatched = dispatches.to_vec();
        let stage = self.stage;
        let hosts = || dispatches.iter().map(|d| &d.host);
        let s = &service;
        let (kind, message) = if migrate_down {
            self.add_steps(at, stage, dispatches, || StepKind::MigrateDown(s.clone()), out);
            (EventKind::MigrateDownStarted, text::migrate_down_started(s, hosts()))
        } else {
            let from = self.previous_versions(s);
            for d in dispatches {
                let to = StepKind::Rollback(s.clone(), from.get(&d.host).cloned().flatten());
                self.add_steps(at, stage, std::slice::from_ref(d), || to.clone(), out);
            }
            (EventKind::ServiceRollbackStarted, text::service_rollback_started(s, hosts()))
        };
        let e = self.record(at, kind, message);
        e.services = vec![service];
        e.hosts = hosts().cloned().collect();
        e.command_ids = dispatches.iter().map(|d| d.command_id.clone()).collect();
        Ok(())
    }

    /// The current rollback action is done (a pause: an operator resumed past it);
    /// the rollback moves on to the next.
    pub(super) fn rollback_action_done(&mut self, at: i64, action: usize) -> Result<(), Refusal> {
        let Some(rb) = self.rollback.as_mut() else { return refuse("no rollback in progress") };
        if action != rb.position {
            return refuse(format!("rollback action {action} is not the current one"));
        }
        // Every action done (`position == actions.len()`): there is no current one.
        let Some(act) = rb.actions.get(action).cloned() else {
            return refuse(no_action(action, rb.actions.len()));
        };
        rb.position += 1;
        rb.batch = None;
        rb.dispatched.clear();
        rb.failed.clear();
        let (kind, message, service) = match act {
            RollbackAction::Rollback(s) => {
                for stage in &mut self.stages {
                    if let Some(svc) = stage.services.get_mut(&s)
                        && svc.state == ServiceState::RollingBack
                    {
                        svc.state = ServiceState::RolledBack;
                        svc.finished_unix_ms = at;
                    }
                }
                (EventKind::ServiceRolledBack, text::service_rolled_back(&s, &self.previous_versions(&s)), s)
            }
            RollbackAction::MigrateDown(s) => (EventKind::MigrateDownDone, text::migrate_down_done(&s), s),
            RollbackAction::Pause(s, why) => (EventKind::Resumed, text::rollback_past_pause(&s, &why), s),
        };
        let e = self.record(at, kind, message);
        e.services = vec![service];
        Ok(())
    }
}

/// Why a fact naming rollback action `action` of a rollback of `len` actions is refused.
fn no_action(action: usize, len: usize) -> String {
    format!("rollback action {action} does not exist (the rollback has {})", text::count(len, "action", "actions"))
}
