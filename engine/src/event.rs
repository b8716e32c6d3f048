//! A release's history: one event per thing that happened, each saying what and why,
//! indexed from 1 without gaps (what `Releases.Watch` streams and resumes from).

use flotilla_shared::model::{HostId, ServiceName};
use serde::{Deserialize, Serialize};

use super::fact::CommandId;
use super::run::Status;

/// What an event records (the wire's `EventKind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[allow(missing_docs)]
pub enum EventKind {
    ReleaseCreated,
    StageStarted,
    StageDone,
    ServiceStarted,
    MigrationStarted,
    MigrationDone,
    BatchStarted,
    HostSucceeded,
    HostFailed,
    BakeStarted,
    BatchDone,
    ServiceDone,
    ServiceFailed,
    GateStarted,
    GatePassed,
    GateFailed,
    ApprovalRequired,
    Approved,
    Paused,
    Resumed,
    RollbackStarted,
    ServiceRollbackStarted,
    ServiceRolledBack,
    MigrateDownStarted,
    MigrateDownDone,
    ServiceCancelled,
    HostLost,
    HostBack,
    LeaderChanged,
    ReleaseSucceeded,
    ReleaseRolledBack,
    ReleaseFailed,
    ReleaseAborted,
    /// One host stayed healthy through its batch's bake (appended: stored events
    /// keep their variant indexes).
    HostBaked,
    /// An operator's note (appended, as above).
    Note,
    /// A batch's canary analysis started (appended, as above).
    AnalysisStarted,
    /// A round of an analysis's queries failed (appended, as above).
    AnalysisQueryFailed,
    /// A batch passed its canary analysis (appended, as above).
    AnalysisPassed,
    /// A batch's canary analysis was marginal or inconclusive: a human decides
    /// (appended, as above).
    AnalysisInconclusive,
    /// A batch failed its canary analysis (appended, as above).
    AnalysisFailed,
    /// An operator had a failed host tried again (appended, as above).
    HostRetried,
    /// An operator excluded a host from the rest of the release (appended, as above).
    HostExcluded,
    /// Deployment windows hold a service's next batch (appended, as above).
    WindowHeld,
}

/// One thing that happened to a release, with why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Position in the release's history, from 1.
    pub index: u64,
    /// When (the leader's clock, stamped into the fact).
    pub at_unix_ms: i64,
    /// What kind.
    pub kind: EventKind,
    /// What happened and why, as a sentence.
    pub message: String,
    /// The stage concerned; empty when none.
    pub stage: String,
    /// The services concerned.
    pub services: Vec<ServiceName>,
    /// The gate concerned; empty when none.
    pub gate: String,
    /// The batch concerned, by name; empty when none.
    pub batch: String,
    /// The hosts concerned.
    pub hosts: Vec<HostId>,
    /// The steps concerned.
    pub command_ids: Vec<CommandId>,
    /// The version concerned; empty when none.
    pub version: String,
    /// `engine`, or the operator who caused it.
    pub actor: String,
    /// The release's status after the event.
    pub status: Status,
    /// The leader term of the log entry that committed it (0: not committed through the
    /// log, or recorded by a build older than format 5).
    pub term: u64,
}

impl Event {
    pub fn new(index: u64, at_unix_ms: i64, kind: EventKind, message: String) -> Self {
        Self {
            index,
            at_unix_ms,
            kind,
            message,
            stage: String::new(),
            services: Vec::new(),
            gate: String::new(),
            batch: String::new(),
            hosts: Vec::new(),
            command_ids: Vec::new(),
            version: String::new(),
            actor: super::ENGINE.to_owned(),
            status: Status::Pending,
            term: 0,
        }
    }
}
