//! The release engine: a pure state machine that turns a planned
//! release into committed facts, and the step commands those facts imply.
//!
//! Two halves, both pure (no I/O, no clock, no randomness):
//! - [`Run::apply`] applies a committed [`Fact`] to a release's [`Run`]; every
//!   coordinator does this in log order, so every coordinator holds the same runs.
//! - [`decide`] reads a run, the plan and the time and says which facts to commit next
//!   (a batch to start, a service done, a failure, a rollback...).
//!
//! The leader's driver (`crate::driver`) is the thin async shell around them: it
//! commits decisions through Raft BEFORE sending the steps they create, commits every
//! agent report BEFORE the engine reacts to it, and re-sends every step without a
//! committed result after a leader change. Decisions carry the run version they were
//! made against and are refused if the run moved on, so two leaders can never both
//! start the same batch.

mod decide;
mod event;
mod fact;
mod run;
pub mod steps;

pub use decide::{Context, Decision, Env, decide, rollback_decision, started_services};
pub use event::{Event, EventKind};
pub use fact::{ApprovalKind, BatchSpec, CommandId, Dispatch, Fact, MAX_ATTEMPTS, Outcome, RollbackAction, Terminal};
pub(crate) use run::join_hosts;
pub use run::{
    Approval, Failure, GateState, HostState, Phase, Refusal, RollbackRun, Run, ServiceRun, ServiceState, StageRun,
    StageState, Status, StepKind, StepRecord, command_id,
};

/// The actor recorded for the engine's own decisions.
pub const ENGINE: &str = "engine";

/// Rebuilds a release's plan from what the state machine keeps: the spec text and the
/// fleet it was planned against. Deterministic, so every leader executes the same plan.
pub fn replan(
    spec_text: &str,
    file_name: &str,
    fleet_json: &str,
) -> Result<(flotilla_shared::plan::Plan, flotilla_shared::inventory::Fleet), String> {
    use flotilla_shared::spec::{self, SourceFile};
    let fleet: flotilla_shared::inventory::Fleet = if fleet_json.is_empty() {
        flotilla_shared::inventory::Fleet::default()
    } else {
        serde_json::from_str(fleet_json).map_err(|e| format!("the stored fleet does not parse: {e}"))?
    };
    let source = SourceFile::new(file_name, spec_text);
    let spec = spec::parse(&source).map_err(|e| e.to_string())?;
    let plan = flotilla_shared::plan::Plan::build(&spec, Some(&fleet)).map_err(|d| source.locate_all(d).to_string())?;
    Ok((plan, fleet))
}
