//! What operators do to a release: approve a gate or a stage, pause (the engine
//! pauses too), resume, abort, and note.

use super::{GateState, HostState, Phase, Refusal, Run, ServiceState, StageState, deadline, refuse};
use crate::event::EventKind;
use crate::fact::{ApprovalKind, RollbackAction, Terminal};
use crate::text;

impl Run {
    /// A human approves a pending gate (it passes) or stage (it is done).
    pub(super) fn approved(
        &mut self,
        at: i64,
        kind: ApprovalKind,
        name: &str,
        actor: &str,
        comment: &str,
    ) -> Result<(), Refusal> {
        let Some(pos) = self.approvals.iter().position(|a| a.kind == kind && a.name == name) else {
            return refuse(format!("no approval of {kind} {name} is pending"));
        };
        // Checked before the approval is taken off: a refused fact changes nothing.
        let stage = self.stage_mut(self.approvals[pos].stage)?;
        match kind {
            ApprovalKind::Gate => {
                if let Some(state) = stage.gates.get_mut(name) {
                    *state = GateState::Passed;
                }
            }
            ApprovalKind::Stage => stage.state = StageState::Done,
        }
        let approval = self.approvals.remove(pos);
        let stage_name = self.stage_name(approval.stage);
        let e = self.record(at, EventKind::Approved, text::approved(kind, name, actor, comment));
        e.stage = stage_name;
        e.actor = actor.to_owned();
        if kind == ApprovalKind::Gate {
            e.gate = name.to_owned();
        }
        Ok(())
    }

    /// The release pauses (an operator, or the engine reacting to a failure).
    pub(super) fn paused(&mut self, at: i64, actor: &str, reason: &str) -> Result<(), Refusal> {
        if self.paused.is_some() {
            return refuse("the release is already paused");
        }
        self.paused = Some(reason.to_owned());
        if actor == crate::ENGINE {
            // The engine's reaction to the failure is this pause.
            self.failure = None;
        }
        let e = self.record(at, EventKind::Paused, text::paused(actor, reason));
        e.actor = actor.to_owned();
        Ok(())
    }

    /// An operator resumes a paused release.
    pub(super) fn resumed(&mut self, at: i64, actor: &str, reason: &str) -> Result<(), Refusal> {
        if self.paused.is_none() {
            return refuse("the release is not paused");
        }
        self.paused = None;
        self.resume(at);
        let accepted = self.accept_analyses(actor);
        let mut message = text::resumed(actor, reason);
        if !accepted.is_empty() {
            message = format!("{message}; {}", text::analyses_accepted(&accepted));
        }
        let e = self.record(at, EventKind::Resumed, message);
        e.actor = actor.to_owned();
        Ok(())
    }

    /// After a resume: failed services in the current stage go again from the batch
    /// they failed in (their failed hosts are deployed again); deadlines restart.
    fn resume(&mut self, at: i64) {
        let stage = self.stage;
        let mut retried = false;
        if self.phase == Phase::Forward
            && let Some(st) = self.stages.get_mut(stage)
        {
            for svc in st.services.values_mut() {
                match svc.state {
                    ServiceState::Failed => {
                        for state in svc.hosts.values_mut() {
                            if matches!(state, HostState::Failed(_) | HostState::Cancelled) {
                                *state = HostState::Waiting;
                            }
                        }
                        svc.state = ServiceState::Deploying;
                        svc.reason.clear();
                        svc.finished_unix_ms = 0;
                        svc.deadline_unix_ms = deadline(at, svc.progress_deadline_ms);
                        retried = true;
                    }
                    ServiceState::Deploying | ServiceState::Baking | ServiceState::Migrating => {
                        svc.deadline_unix_ms = deadline(at, svc.progress_deadline_ms);
                    }
                    _ => {}
                }
            }
            if retried {
                st.state = StageState::Running;
            }
            for gate in st.gates.values_mut() {
                if matches!(gate, GateState::Failed(_)) {
                    *gate = GateState::Pending;
                }
            }
        }
        self.failure = None;
        // A rollback paused at an action that needs a human goes on past it.
        if self.phase == Phase::RollingBack
            && let Some(rb) = self.rollback.as_mut()
            && matches!(rb.actions.get(rb.position), Some(RollbackAction::Pause(..)))
        {
            rb.position += 1;
        }
    }

    /// An operator aborts the release: it ends; nothing more is sent.
    pub(super) fn aborted(&mut self, at: i64, actor: &str, reason: &str) -> Result<(), Refusal> {
        self.finish(at, Terminal::Aborted, text::aborted(actor, reason));
        if let Some(e) = self.events.last_mut() {
            e.actor = actor.to_owned();
        }
        Ok(())
    }

    /// An operator notes something in the release's history; nothing else changes.
    pub(super) fn noted(&mut self, at: i64, actor: &str, note: &str) -> Result<(), Refusal> {
        let e = self.record(at, EventKind::Note, text::note(note));
        e.actor = actor.to_owned();
        Ok(())
    }
}
