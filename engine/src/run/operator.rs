//! What operators do to a release: approve a gate or a stage, pause (the engine
//! pauses too), resume, abort, note, and, when a release paused on a failed host,
//! retry that host or exclude it from the rest of the release (guided failure).

use flotilla_shared::model::{HostId, ServiceName};

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
        self.resume(at, |_| true);
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
    /// they failed in (their cancelled hosts, and the failed hosts `retry` picks, are
    /// deployed again; the other failed hosts stay failed and count against
    /// `max_failed`); deadlines restart.
    fn resume(&mut self, at: i64, retry: impl Fn(&HostId) -> bool) {
        let stage = self.stage;
        let mut retried = false;
        if self.phase == Phase::Forward
            && let Some(st) = self.stages.get_mut(stage)
        {
            for svc in st.services.values_mut() {
                match svc.state {
                    ServiceState::Failed => {
                        for (host, state) in &mut svc.hosts {
                            // A cancelled deploy is not a failure: it always goes again.
                            let again = match state {
                                HostState::Failed(_) => retry(host),
                                HostState::Cancelled => true,
                                _ => false,
                            };
                            if again {
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

    /// The services of the current stage a host failed in, after the checks every
    /// guided-failure choice makes: the release rolls forward, is paused, and the host
    /// failed in this stage.
    fn failed_here(&self, host: &HostId, choice: &str) -> Result<Vec<ServiceName>, Refusal> {
        if self.phase != Phase::Forward {
            return refuse(format!("the release is not rolling forward, so there is no failed host to {choice}"));
        }
        if self.paused.is_none() {
            return refuse(format!(
                "the release is not paused: a host can be {choice}d only while the release is paused on its failure"
            ));
        }
        let stage = self.stage_name(self.stage);
        let failed: Vec<ServiceName> = self
            .stages
            .get(self.stage)
            .into_iter()
            .flat_map(|st| st.services.iter())
            .filter(|(_, svc)| matches!(svc.hosts.get(host), Some(HostState::Failed(_))))
            .map(|(name, _)| name.clone())
            .collect();
        if failed.is_empty() {
            let mut others: Vec<&HostId> = self
                .stages
                .get(self.stage)
                .into_iter()
                .flat_map(|st| st.services.values())
                .flat_map(|svc| svc.failed_hosts().map(|(h, _)| h))
                .collect();
            others.sort();
            others.dedup();
            let listed = if others.is_empty() {
                "no host failed there".to_owned()
            } else {
                format!("failed there: {}", text::join_hosts(others.into_iter()))
            };
            return refuse(format!("host {host} has not failed in stage {stage} ({listed})"));
        }
        Ok(failed)
    }

    /// An operator has a failed host tried again: it goes back to waiting in every
    /// service of the stage it failed in, those services go again from their batch,
    /// and the release goes on (other failed hosts stay failed).
    pub(super) fn host_retried(&mut self, at: i64, host: &HostId, actor: &str, reason: &str) -> Result<(), Refusal> {
        let services = self.failed_here(host, "retry")?;
        self.paused = None;
        self.resume(at, |h| h == host);
        let stage = self.stage_name(self.stage);
        let e = self.record(at, EventKind::HostRetried, text::host_retried(host, &services, &stage, actor, reason));
        e.stage = stage;
        e.actor = actor.to_owned();
        e.hosts = vec![host.clone()];
        e.services = services;
        Ok(())
    }

    /// An operator excludes a failed host from the rest of the release: in every service
    /// of its stage it has not finished (and in those that start later, see
    /// `service_started`) it is excluded, so nothing more of the rollout is sent to it;
    /// each of those services counts it against `max_failed`; the release goes on
    /// (other failed hosts stay failed). A rollback still takes back a version that went
    /// live on it.
    pub(super) fn host_excluded(&mut self, at: i64, host: &HostId, actor: &str, reason: &str) -> Result<(), Refusal> {
        // Checked first; every service it names has the host failed, so it is among
        // those the loop below excludes it from.
        self.failed_here(host, "exclude")?;
        let why = text::exclusion(actor, reason);
        let mut services = Vec::new();
        if let Some(st) = self.stages.get_mut(self.stage) {
            for (name, svc) in &mut st.services {
                if let Some(state) = svc.hosts.get_mut(host)
                    && matches!(state, HostState::Failed(_) | HostState::Cancelled | HostState::Waiting)
                {
                    *state = HostState::Excluded(why.clone());
                    services.push(name.clone());
                }
            }
        }
        self.paused = None;
        self.resume(at, |_| false);
        let stage = self.stage_name(self.stage);
        let e = self.record(at, EventKind::HostExcluded, text::host_excluded(host, &services, &stage, &why));
        e.stage = stage;
        e.actor = actor.to_owned();
        e.hosts = vec![host.clone()];
        e.services = services;
        Ok(())
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
