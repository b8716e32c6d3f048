//! The release engine: a pure state machine that turns a planned
//! release into committed facts, and the step commands those facts imply.
//!
//! It is a crate of its own, depending on the domain model and serde only, so that
//! it can do no I/O and read no clock. Two halves, both pure (no I/O, no clock, no
//! randomness):
//! - [`Run::apply`] applies a committed [`Fact`] to a release's [`Run`]; every
//!   coordinator does this in log order, so every coordinator holds the same runs.
//! - [`decide`] reads a run, the plan and the time and says which facts to commit next
//!   (a batch to start, a service done, a failure, a rollback...).
//!
//! The coordinator leader's driver (`flotilla_coordinator::driver`) is the thin async shell around them: it
//! commits decisions through Raft BEFORE sending the steps they create, commits every
//! agent report BEFORE the engine reacts to it, and re-sends every step without a
//! committed result after a leader change. Decisions carry the run version they were
//! made against and are refused if the run moved on, so two leaders can never both
//! start the same batch.

mod action;
mod analysis;
mod decide;
mod event;
mod fact;
mod run;
mod steps;
mod text;

pub use action::Action;
pub use analysis::{Analysis, MetricQuery, Round, Sample, SampleRequest};
pub use decide::{Context, Decision, Env, decide, rollback_decision, started_services};
pub use event::{Event, EventKind};
pub use fact::{
    ApprovalKind, BatchSpec, CommandId, Dispatch, Fact, MAX_ATTEMPTS, NotACommandId, Outcome, RollbackAction, Terminal,
};
pub use run::{
    Approval, Failure, GateState, HostState, Phase, Refusal, RollbackRun, Run, ServiceRun, ServiceState, StageRun,
    StageState, Status, StepKind, StepRecord,
};
pub use steps::Steps;
pub use text::join_hosts;

/// The actor recorded for the engine's own decisions.
pub const ENGINE: &str = "engine";
