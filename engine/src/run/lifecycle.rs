//! The release's end (decided by the engine, or an operator's abort) and the leaders
//! that take it over.

use super::{Phase, Refusal, Run, ServiceState, StageState};
use crate::event::EventKind;
use crate::fact::{CommandId, Terminal};
use crate::text;

impl Run {
    /// The release reached its end.
    pub(super) fn finished(&mut self, at: i64, terminal: Terminal, reason: &str) -> Result<(), Refusal> {
        self.finish(at, terminal, reason.to_owned());
        Ok(())
    }

    /// Ends the release: stages and services still running are cancelled where they
    /// are (their hosts stay as they are); `reason` is the release's and its last
    /// event's.
    pub(super) fn finish(&mut self, at: i64, terminal: Terminal, reason: String) {
        self.phase = Phase::Finished(terminal);
        self.finished_unix_ms = at;
        self.paused = None;
        self.approvals.clear();
        self.reason = reason.clone();
        for stage in &mut self.stages {
            if matches!(stage.state, StageState::Running | StageState::AwaitingApproval) {
                stage.state = StageState::Cancelled;
            }
            for svc in stage.services.values_mut() {
                svc.deadline_unix_ms = 0;
                match svc.state {
                    ServiceState::Waiting => svc.state = ServiceState::Cancelled,
                    // Stopped part way: its hosts stay as they are.
                    ServiceState::Deploying | ServiceState::Baking | ServiceState::Migrating => {
                        svc.state = ServiceState::Cancelled;
                        svc.reason = text::stopped_part_way(&reason);
                        svc.finished_unix_ms = at;
                    }
                    _ => {}
                }
            }
        }
        let kind = match terminal {
            Terminal::Succeeded => EventKind::ReleaseSucceeded,
            Terminal::RolledBack => EventKind::ReleaseRolledBack,
            Terminal::Failed => EventKind::ReleaseFailed,
            Terminal::Aborted => EventKind::ReleaseAborted,
        };
        self.record(at, kind, reason);
    }

    /// A new leader took the release over and sent again the steps without a result.
    pub(super) fn leader_changed(&mut self, at: i64, node: u64, resent: &[CommandId]) -> Result<(), Refusal> {
        let e = self.record(at, EventKind::LeaderChanged, text::leader_changed(node, resent.len()));
        e.command_ids = resent.to_vec();
        Ok(())
    }
}
