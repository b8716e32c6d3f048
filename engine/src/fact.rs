//! Facts: what the release engine decided, what an agent reported, what an operator
//! asked. Every fact is committed through Raft before anything acts on it; applying
//! facts in log order rebuilds a release's [`Run`](super::Run) on every coordinator.

use std::fmt;

use flotilla_shared::analysis::Report;
use flotilla_shared::model::{HostId, ServiceName};
use serde::{Deserialize, Serialize};

use super::analysis::Sample;
use super::text::count;

/// The id of one command sent to one agent, unique in the cluster: the release's id
/// and the command's number in the release, written `<release>.<n>` (the form agents,
/// events and the API carry, and the form stored). Ordered by release, then number.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CommandId {
    release: String,
    number: u64,
}

impl CommandId {
    /// Command `number` of `release`.
    pub fn new(release: &str, number: u64) -> Self {
        Self { release: release.to_owned(), number }
    }

    /// The release it belongs to.
    pub fn release(&self) -> &str {
        &self.release
    }

    /// Its number in the release (from 1).
    pub fn number(&self) -> u64 {
        self.number
    }
}

impl fmt::Display for CommandId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.release, self.number)
    }
}

/// A string that is not `<release>.<n>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotACommandId(pub String);

impl fmt::Display for NotACommandId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?} is not a command id (<release>.<number>)", self.0)
    }
}

impl std::error::Error for NotACommandId {}

impl std::str::FromStr for CommandId {
    type Err = NotACommandId;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || NotACommandId(s.to_owned());
        let (release, number) = s.rsplit_once('.').ok_or_else(bad)?;
        // Only the form `Display` writes: no sign, no leading zero.
        let canonical = !number.starts_with(['+', '0']) || number == "0";
        let number: u64 = number.parse().ok().filter(|_| canonical).ok_or_else(bad)?;
        if release.is_empty() {
            return Err(bad());
        }
        Ok(Self { release: release.to_owned(), number })
    }
}

impl Serialize for CommandId {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for CommandId {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A host and the command it was sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dispatch {
    /// The host.
    pub host: HostId,
    /// The command it runs.
    pub command_id: CommandId,
}

/// One batch of a service's rollout in a stage, as fixed when the service starts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchSpec {
    /// `canary`, `25%`, `100%`, `rest`, or `retry` for failed hosts deployed again.
    pub name: String,
    /// The hosts this batch adds.
    pub hosts: Vec<HostId>,
}

/// How a step ended, as the engine records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// It did what it was asked.
    Succeeded,
    /// It failed; the reason says why.
    Failed,
    /// It was cancelled before it finished (the host kept its previous version).
    Cancelled,
    /// The agent refused it (a stale term).
    Refused,
    /// The agent could not finish it for reasons of its own (it restarted in the
    /// middle, a disk error); the host kept exactly one version. Deploys, migrations
    /// and gate checks are sent again (as new steps) up to [`MAX_ATTEMPTS`] times.
    Interrupted,
}

/// How many times the engine tries a deploy, a migration or a gate check on a host
/// when the agent reports it interrupted, before counting it as failed.
pub const MAX_ATTEMPTS: usize = 3;

impl Outcome {
    /// Whether the step did what it was asked.
    pub fn ok(self) -> bool {
        self == Outcome::Succeeded
    }
}

/// What a pending approval is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ApprovalKind {
    /// A gate with `approval = true`.
    Gate,
    /// A stage with `approval = true`: approves starting the next stage.
    Stage,
}

impl fmt::Display for ApprovalKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ApprovalKind::Gate => "gate",
            ApprovalKind::Stage => "stage",
        })
    }
}

/// One step of a decided rollback.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RollbackAction {
    /// Take the service back to its previous version on every host the release
    /// gave the new version.
    Rollback(ServiceName),
    /// Run the service's `migrate_down` once.
    MigrateDown(ServiceName),
    /// Stop for a human, saying why.
    Pause(ServiceName, String),
}

impl fmt::Display for RollbackAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RollbackAction::Rollback(s) => write!(f, "roll back {s}"),
            RollbackAction::MigrateDown(s) => write!(f, "run migrate_down of {s}"),
            RollbackAction::Pause(s, why) => write!(f, "pause at {s}: {why}"),
        }
    }
}

/// How a release ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Terminal {
    /// Every service done in every stage.
    Succeeded,
    /// Rolled back.
    RolledBack,
    /// Failed without a complete rollback.
    Failed,
    /// Aborted by an operator.
    Aborted,
}

/// A committed fact about one release. Stages are indexes into the plan's stages.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Fact {
    /// A stage starts (the first one starts the release).
    StageStarted {
        /// The stage.
        stage: usize,
        /// Its name.
        name: String,
        /// Every service of the release, in plan order.
        services: Vec<ServiceName>,
        /// Every gate of the release.
        gates: Vec<String>,
    },
    /// A service starts in a stage with these batches (hosts at the target are skipped).
    ServiceStarted {
        /// The stage.
        stage: usize,
        /// The service.
        service: ServiceName,
        /// Its target version.
        version: String,
        /// Its batches, canary first; empty when nothing is left to deploy.
        batches: Vec<BatchSpec>,
        /// Hosts of the stage already at the target version.
        skipped: Vec<HostId>,
        /// Per host, the version it ran before (none: not installed).
        from: Vec<(HostId, Option<String>)>,
        /// How long the service may go without progress, in ms.
        progress_deadline_ms: u64,
    },
    /// A service's `migrate` hook is sent to one host.
    MigrationStarted {
        /// The stage.
        stage: usize,
        /// The service.
        service: ServiceName,
        /// Where it runs.
        dispatch: Dispatch,
    },
    /// A batch is sent: deploy steps to its online hosts; offline hosts count as failed.
    BatchStarted {
        /// The stage.
        stage: usize,
        /// The service.
        service: ServiceName,
        /// The batch's position.
        batch: usize,
        /// The deploy steps.
        dispatches: Vec<Dispatch>,
        /// Hosts that were offline when the batch started.
        offline: Vec<HostId>,
    },
    /// The batch's healthy hosts are sent bake steps.
    BakeStarted {
        /// The stage.
        stage: usize,
        /// The service.
        service: ServiceName,
        /// The batch's position.
        batch: usize,
        /// How long health is watched, in ms.
        duration_ms: u64,
        /// The bake steps.
        dispatches: Vec<Dispatch>,
    },
    /// A batch is deployed and baked.
    BatchDone {
        /// The stage.
        stage: usize,
        /// The service.
        service: ServiceName,
        /// The batch's position.
        batch: usize,
    },
    /// A service is done in a stage.
    ServiceDone {
        /// The stage.
        stage: usize,
        /// The service.
        service: ServiceName,
    },
    /// A service failed in a stage.
    ServiceFailed {
        /// The stage.
        stage: usize,
        /// The service.
        service: ServiceName,
        /// Why, precisely.
        reason: String,
    },
    /// An agent reported how a step ended.
    StepReported {
        /// The step.
        command_id: CommandId,
        /// How it ended.
        outcome: Outcome,
        /// Why it failed (empty on success).
        reason: String,
    },
    /// A gate's check is sent to one host.
    GateStarted {
        /// The stage.
        stage: usize,
        /// The gate.
        gate: String,
        /// Where it runs.
        dispatch: Dispatch,
    },
    /// A gate passed or failed. A failed gate fails the services it runs after.
    GateDone {
        /// The stage.
        stage: usize,
        /// The gate.
        gate: String,
        /// The services it runs after.
        after: Vec<ServiceName>,
        /// Whether it passed.
        passed: bool,
        /// Why it failed, or what passing it meant.
        reason: String,
    },
    /// The release waits for a human.
    ApprovalRequired {
        /// Gate or stage.
        kind: ApprovalKind,
        /// The gate's or stage's name.
        name: String,
        /// The stage it belongs to.
        stage: usize,
    },
    /// A human approved.
    Approved {
        /// Gate or stage.
        kind: ApprovalKind,
        /// The gate's or stage's name.
        name: String,
        /// Who.
        actor: String,
        /// Their note.
        comment: String,
    },
    /// Every service and gate of a stage is done.
    StageDone {
        /// The stage.
        stage: usize,
        /// Whether a human approves before the next stage starts.
        await_approval: bool,
    },
    /// The release pauses: an operator asked, or a failure with `on_failure = "pause"`,
    /// or a rollback that cannot go on by itself.
    Paused {
        /// Who (`engine` for the engine).
        actor: String,
        /// Why.
        reason: String,
    },
    /// An operator resumed the release.
    Resumed {
        /// Who.
        actor: String,
        /// Why.
        reason: String,
    },
    /// An operator aborted the release: nothing more is sent; hosts stay as they are.
    Aborted {
        /// Who.
        actor: String,
        /// Why.
        reason: String,
    },
    /// A rollback was decided.
    RollbackDecided {
        /// Who (`engine` for an automatic rollback).
        actor: String,
        /// Why, as a sentence.
        reason: String,
        /// The rollback set in rollback order, each with why it is in it.
        members: Vec<(ServiceName, String)>,
        /// What to do, in order.
        actions: Vec<RollbackAction>,
        /// Services that had not started: they are cancelled.
        cancelled: Vec<ServiceName>,
    },
    /// One rollback action starts (for a rollback, one batch of it).
    RollbackStarted {
        /// The action's position in the rollback.
        action: usize,
        /// The batch's position for a rollback action (0 otherwise).
        batch: usize,
        /// The steps (a host that is offline gets its step when it is back).
        dispatches: Vec<Dispatch>,
    },
    /// One rollback action (all its batches) is done.
    RollbackActionDone {
        /// The action's position in the rollback.
        action: usize,
    },
    /// The release reached its end.
    Finished {
        /// How.
        terminal: Terminal,
        /// Why, as a sentence.
        reason: String,
    },
    /// A new leader took the release over and sent again the steps without a result.
    LeaderChanged {
        /// The new leader's node id.
        node: u64,
        /// The steps without a result, each sent again (at once, or when its host's
        /// agent connects to the new leader).
        resent: Vec<CommandId>,
    },
    /// An operator's note on the release's history. It changes nothing else: not the
    /// run's version (engine decisions in flight stay valid), and it is taken after
    /// the release finished too. (Appended: stored facts keep their variant indexes.)
    Noted {
        /// Who.
        actor: String,
        /// The note.
        text: String,
    },
    /// A batch's canary analysis starts: its metrics are sampled on both sides every
    /// interval until they are judged. (Appended, as above.)
    AnalysisStarted {
        /// The stage.
        stage: usize,
        /// The service.
        service: ServiceName,
        /// The batch's position.
        batch: usize,
        /// The metrics judged at this batch.
        metrics: Vec<String>,
        /// Hosts running the new version.
        canary: Vec<HostId>,
        /// Hosts of the stage still running the version it replaces.
        baseline: Vec<HostId>,
        /// The versions the baseline runs.
        baseline_versions: Vec<String>,
        /// Time between rounds, in ms.
        interval_ms: u64,
    },
    /// One round of an analysis's queries, as Prometheus answered the leader: an input,
    /// like an agent's report. (Appended, as above.)
    AnalysisSampled {
        /// The stage.
        stage: usize,
        /// The service.
        service: ServiceName,
        /// The batch's position.
        batch: usize,
        /// The round's position (a round committed twice is refused).
        round: usize,
        /// Per metric.
        samples: Vec<Sample>,
    },
    /// An analysis was judged from its committed rounds. (Appended, as above.)
    AnalysisJudged {
        /// The stage.
        stage: usize,
        /// The service.
        service: ServiceName,
        /// The batch's position.
        batch: usize,
        /// The verdict, the score and every metric's result.
        report: Report,
    },
    /// An operator has a host that failed in the current stage tried again: its
    /// failed services deploy it again, and the paused release goes on. (Appended, as
    /// above.)
    HostRetried {
        /// The host.
        host: HostId,
        /// Who.
        actor: String,
        /// Why.
        reason: String,
    },
    /// An operator excludes a host that failed in the current stage from the rest of
    /// the release: nothing more of the release is sent to it, it counts against each
    /// of its services' `max_failed`, and the paused release goes on. (Appended, as
    /// above.)
    HostExcluded {
        /// The host.
        host: HostId,
        /// Who.
        actor: String,
        /// Why.
        reason: String,
    },
    /// A service's next batch waits: the deployment windows hold it (a freeze is in
    /// effect, or allow windows apply and none is open). The leader evaluates the
    /// windows with its clock and commits what they said, so every replica shows the
    /// same; decided again when the windows change or `until_unix_ms` comes. Rollbacks
    /// never wait. (Appended, as above.)
    WindowHeld {
        /// The stage.
        stage: usize,
        /// The service.
        service: ServiceName,
        /// The batch that waits.
        batch: usize,
        /// Why, naming the windows and when it goes on.
        reason: String,
        /// When the windows let it go; `None` when none opens within a week.
        until_unix_ms: Option<i64>,
    },
}

// Samples and scores are finite numbers (the driver drops NaN and infinities before
// committing samples, and the judgement makes none), so equality is an equivalence.
impl Eq for Fact {}

impl Fact {
    /// Whether the fact is the engine's own decision (proposed with the run version it
    /// was decided against, and refused if the run moved on), as opposed to an input
    /// from an agent or an operator.
    pub fn is_decision(&self) -> bool {
        !matches!(
            self,
            Fact::StepReported { .. }
                | Fact::Approved { .. }
                | Fact::Resumed { .. }
                | Fact::Aborted { .. }
                | Fact::LeaderChanged { .. }
                | Fact::Noted { .. }
                | Fact::AnalysisSampled { .. }
                | Fact::HostRetried { .. }
                | Fact::HostExcluded { .. }
        ) && !matches!(self, Fact::Paused { actor, .. } | Fact::RollbackDecided { actor, .. } if actor != super::ENGINE)
    }
}

impl fmt::Display for Fact {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fact::StageStarted { name, .. } => write!(f, "stage {name} started"),
            Fact::ServiceStarted { service, stage, .. } => write!(f, "{service} started in stage {stage}"),
            Fact::MigrationStarted { service, dispatch, .. } => {
                write!(f, "{service} migration sent to {}", dispatch.host)
            }
            Fact::BatchStarted { service, batch, dispatches, .. } => {
                write!(f, "{service} batch {batch} sent to {}", count(dispatches.len(), "host", "hosts"))
            }
            Fact::BakeStarted { service, batch, .. } => write!(f, "{service} batch {batch} baking"),
            Fact::BatchDone { service, batch, .. } => write!(f, "{service} batch {batch} done"),
            Fact::ServiceDone { service, stage } => write!(f, "{service} done in stage {stage}"),
            Fact::ServiceFailed { service, reason, .. } => write!(f, "{service} failed: {reason}"),
            Fact::StepReported { command_id, outcome, .. } => write!(f, "step {command_id} {outcome:?}"),
            Fact::GateStarted { gate, .. } => write!(f, "gate {gate} started"),
            Fact::GateDone { gate, passed, .. } => {
                write!(f, "gate {gate} {}", if *passed { "passed" } else { "failed" })
            }
            Fact::ApprovalRequired { kind, name, .. } => write!(f, "approval of {kind} {name} required"),
            Fact::Approved { kind, name, actor, .. } => write!(f, "{kind} {name} approved by {actor}"),
            Fact::StageDone { stage, .. } => write!(f, "stage {stage} done"),
            Fact::Paused { actor, .. } => write!(f, "paused by {actor}"),
            Fact::Resumed { actor, .. } => write!(f, "resumed by {actor}"),
            Fact::Aborted { actor, .. } => write!(f, "aborted by {actor}"),
            Fact::RollbackDecided { members, .. } => {
                write!(f, "rollback of {} decided", count(members.len(), "service", "services"))
            }
            Fact::RollbackStarted { action, batch, .. } => write!(f, "rollback action {action} batch {batch} sent"),
            Fact::RollbackActionDone { action } => write!(f, "rollback action {action} done"),
            Fact::Finished { terminal, .. } => write!(f, "finished: {terminal:?}"),
            Fact::LeaderChanged { node, resent } => {
                write!(f, "leader {node} took over, {} to send again", count(resent.len(), "step", "steps"))
            }
            Fact::Noted { actor, .. } => write!(f, "note by {actor}"),
            Fact::AnalysisStarted { service, batch, .. } => write!(f, "{service} batch {batch} analysis started"),
            Fact::AnalysisSampled { service, batch, round, .. } => {
                write!(f, "{service} batch {batch} analysis round {round} sampled")
            }
            Fact::AnalysisJudged { service, batch, report, .. } => {
                write!(f, "{service} batch {batch} analysis judged: {:?}", report.verdict)
            }
            Fact::HostRetried { host, actor, .. } => write!(f, "{host} retried by {actor}"),
            Fact::HostExcluded { host, actor, .. } => write!(f, "{host} excluded by {actor}"),
            Fact::WindowHeld { service, batch, .. } => write!(f, "{service} batch {batch} held by deployment windows"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_command_id_reads_back_only_the_form_it_is_written_in() {
        let id = CommandId::new("shop-2026.12.05", 12);
        assert_eq!(id.to_string(), "shop-2026.12.05.12");
        assert_eq!("shop-2026.12.05.12".parse::<CommandId>(), Ok(id.clone()), "the release may hold dots");
        assert_eq!(id.release(), "shop-2026.12.05");
        assert_eq!(id.number(), 12);
        for bad in ["", "r", "r.", ".1", "r.x", "r.-1", "r.+1", "r.01", "r.1 "] {
            assert_eq!(bad.parse::<CommandId>(), Err(NotACommandId(bad.to_owned())), "{bad:?}");
        }
        assert!(CommandId::new("r", 2) < CommandId::new("r", 10), "numbers compare as numbers");
    }
}
