//! A release's execution state and how committed facts change it. Applying is
//! deterministic: it reads the fact, the time the leader stamped into it and nothing
//! else, so every coordinator holds the same [`Run`] for the same log.
//!
//! This module holds the run's types, its queries and [`Run::apply_committed`], which
//! hands each fact to the handler of its concern; the handlers check the fact against
//! the run (refusing it with a [`Refusal`]), then change the run and record events
//! whose sentences come from `crate::text`:
//! - `forward`: rolling forward (stages, services, migrations, batches, bakes, gates);
//! - `reports`: agents' reports of how their steps ended;
//! - `operator`: what operators do (approve, pause, resume, abort, note, and retry or
//!   exclude a failed host);
//! - `rollback`: a rollback decided, its actions sent and done;
//! - `lifecycle`: the release's end and the leaders that take it over;
//! - `analysis`: canary analyses started, sampled and judged.
//!
//! Every replica applies the same committed log, so every handler keeps two rules for
//! any fact, however malformed (a buggy or older leader may commit one): a refused
//! fact changes nothing (every check comes before the first change), and no fact
//! panics (an index or a name a fact carries is looked up, never indexed with).

mod analysis;
mod forward;
mod lifecycle;
mod operator;
mod reports;
mod rollback;

use std::collections::BTreeMap;

use flotilla_shared::model::{HostId, ServiceName};
use serde::{Deserialize, Serialize};

use super::action::Action;
use super::analysis::Analysis;
use super::event::{Event, EventKind};
use super::fact::{ApprovalKind, BatchSpec, CommandId, Dispatch, Fact, Outcome, RollbackAction, Terminal};
use super::steps::Steps;

/// What a step does, as the run records it. The full command is built from the spec
/// when it is sent (and sent again).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum StepKind {
    /// Install and activate the service's target version.
    Deploy(ServiceName),
    /// Watch the service's health for a while.
    Bake(ServiceName, u64),
    /// Run the service's `migrate` hook with its target version.
    Migrate(ServiceName),
    /// Run the service's `migrate_down` hook with its target version.
    MigrateDown(ServiceName),
    /// Go back to this version (none: the service was not installed before; stop it).
    Rollback(ServiceName, Option<String>),
    /// Run a gate's check.
    Check(String),
}

/// One command sent to one host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepRecord {
    /// The host.
    pub host: HostId,
    /// The stage it belongs to.
    pub stage: usize,
    /// What it does.
    pub kind: StepKind,
    /// When its intent was committed.
    pub sent_unix_ms: i64,
    /// How it ended; `None` while no result is committed.
    pub outcome: Option<(Outcome, String)>,
    /// When its result was committed.
    pub finished_unix_ms: i64,
    /// Whether the engine asked the agent to stop it.
    pub cancel: bool,
}

/// Where one host of a service is in a stage.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum HostState {
    /// Its batch has not started.
    Waiting,
    /// Already at the target version.
    Skipped,
    /// Its deploy step runs.
    Deploying(CommandId),
    /// Deployed and healthy; waiting for its batch's bake.
    Deployed,
    /// Its bake step runs.
    Baking(CommandId),
    /// Healthy at the target version.
    Done,
    /// Failed; the reason says why.
    Failed(String),
    /// Its deploy was cancelled; it kept its previous version.
    Cancelled,
    /// An operator excluded the host from the rest of the release after it failed:
    /// nothing more is sent to it, and it counts against `max_failed`. The text says
    /// who and why. (Appended: stored states keep their variant indexes.)
    Excluded(String),
}

/// The state of one service in one stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ServiceState {
    /// Waiting for dependencies or gates.
    Waiting,
    /// Its `migrate` hook runs.
    Migrating,
    /// A batch deploys.
    Deploying,
    /// A batch bakes.
    Baking,
    /// Every batch healthy and baked.
    Done,
    /// Nothing to do in this stage.
    Skipped,
    /// Failed.
    Failed,
    /// Rolling back (any stage).
    RollingBack,
    /// Back at its previous version.
    RolledBack,
    /// Never started: cancelled.
    Cancelled,
}

impl ServiceState {
    /// Whether the service no longer holds up its dependents in this stage.
    pub fn finished(self) -> bool {
        matches!(self, ServiceState::Done | ServiceState::Skipped)
    }
}

/// One service in one stage.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceRun {
    /// Its state.
    pub state: ServiceState,
    /// Its target version.
    pub version: String,
    /// Its batches, fixed when it started.
    pub batches: Vec<BatchSpec>,
    /// The current (or last) batch.
    pub batch: usize,
    /// Per host of the stage that runs it.
    pub hosts: BTreeMap<HostId, HostState>,
    /// Per host, the version it ran before.
    pub from: BTreeMap<HostId, Option<String>>,
    /// When it started; 0 when not yet.
    pub started_unix_ms: i64,
    /// When it reached a final state; 0 when not yet.
    pub finished_unix_ms: i64,
    /// When it fails for lack of progress; 0 when not running.
    pub deadline_unix_ms: i64,
    /// How long it may go without progress.
    pub progress_deadline_ms: u64,
    /// Why it is in its state, when that needs saying.
    pub reason: String,
}

impl ServiceRun {
    fn waiting() -> Self {
        Self {
            state: ServiceState::Waiting,
            version: String::new(),
            batches: Vec::new(),
            batch: 0,
            hosts: BTreeMap::new(),
            from: BTreeMap::new(),
            started_unix_ms: 0,
            finished_unix_ms: 0,
            deadline_unix_ms: 0,
            progress_deadline_ms: 0,
            reason: String::new(),
        }
    }

    /// Hosts that failed in this stage.
    pub fn failed_hosts(&self) -> impl Iterator<Item = (&HostId, &str)> {
        self.hosts.iter().filter_map(|(h, s)| match s {
            HostState::Failed(why) => Some((h, why.as_str())),
            _ => None,
        })
    }

    /// Hosts an operator excluded from the release.
    pub fn excluded_hosts(&self) -> impl Iterator<Item = &HostId> {
        self.hosts.iter().filter(|(_, s)| matches!(s, HostState::Excluded(_))).map(|(h, _)| h)
    }

    /// Hosts done or skipped.
    pub fn hosts_done(&self) -> usize {
        self.hosts.values().filter(|s| matches!(s, HostState::Done | HostState::Skipped)).count()
    }
}

/// The state of a gate in a stage.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum GateState {
    /// Its `after` services are not done.
    Pending,
    /// Its check runs.
    Running(CommandId),
    /// Waiting for a human.
    AwaitingApproval,
    /// Passed.
    Passed,
    /// Failed.
    Failed(String),
    /// Never ran.
    Cancelled,
}

/// The state of a stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum StageState {
    /// Services roll out in it.
    Running,
    /// Done; waiting for approval before the next stage.
    AwaitingApproval,
    /// Every service and gate done.
    Done,
    /// A service failed in it.
    Failed,
    /// Never finished (rolled back or aborted).
    Cancelled,
}

/// One started stage.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StageRun {
    /// Its name.
    pub name: String,
    /// Its state.
    pub state: StageState,
    /// Per service of the release.
    pub services: BTreeMap<ServiceName, ServiceRun>,
    /// Per gate of the release.
    pub gates: BTreeMap<String, GateState>,
}

/// A pending human approval.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Approval {
    /// Gate or stage.
    pub kind: ApprovalKind,
    /// The gate's or stage's name.
    pub name: String,
    /// The stage it belongs to.
    pub stage: usize,
    /// Since when.
    pub since_unix_ms: i64,
}

/// A failure the engine has not reacted to yet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    /// The stage.
    pub stage: usize,
    /// The services that failed together (one, or a failed gate's `after` set).
    pub services: Vec<ServiceName>,
    /// Why.
    pub reason: String,
}

/// A rollback in progress.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RollbackRun {
    /// The rollback set in order, each with why.
    pub members: Vec<(ServiceName, String)>,
    /// What to do, in order.
    pub actions: Vec<RollbackAction>,
    /// The action in progress (== `actions.len()` when all are done).
    pub position: usize,
    /// The batch of the current rollback action that was sent last.
    pub batch: Option<usize>,
    /// The steps of the current action's current batch.
    pub dispatched: Vec<Dispatch>,
    /// Hosts the current action failed on.
    pub failed: Vec<(HostId, String)>,
}

/// Where a release is overall.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Phase {
    /// Accepted; the engine has not started it.
    Pending,
    /// Rolling forward.
    Forward,
    /// Rolling back.
    RollingBack,
    /// Ended.
    Finished(Terminal),
}

/// Where a release stands, as operators see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Status {
    /// Accepted, not started.
    Pending,
    /// Rolling forward.
    Running,
    /// Waiting for a human approval.
    AwaitingApproval,
    /// Paused; the reason says why.
    Paused,
    /// Rolling back.
    RollingBack,
    /// Ended: every service done in every stage.
    Succeeded,
    /// Ended: rolled back.
    RolledBack,
    /// Ended: failed without a complete rollback.
    Failed,
    /// Ended: aborted by an operator.
    Aborted,
}

/// A release's whole execution state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Run {
    /// Facts applied so far; a decision is proposed against this number.
    pub version: u64,
    /// The next command number (ids are `<release>.<n>`).
    pub next_command: u64,
    /// Where it is.
    pub phase: Phase,
    /// Why the release is paused, when it is.
    pub paused: Option<String>,
    /// Why it is in its phase, when that needs saying.
    pub reason: String,
    /// The current (or last) stage.
    pub stage: usize,
    /// Stages started so far, in order.
    pub stages: Vec<StageRun>,
    /// Every step sent, by command id.
    pub steps: Steps,
    /// Services whose `migrate` hook succeeded in this release.
    pub migrated: Vec<ServiceName>,
    /// Approvals waited for.
    pub approvals: Vec<Approval>,
    /// A failure not reacted to yet.
    pub failure: Option<Failure>,
    /// The rollback, once decided.
    pub rollback: Option<RollbackRun>,
    /// The release's history, from index 1.
    pub events: Vec<Event>,
    /// When the last fact was applied.
    pub updated_unix_ms: i64,
    /// When it ended; 0 while it runs.
    pub finished_unix_ms: i64,
    /// The canary analyses of its batches, in the order they started.
    pub analyses: Vec<Analysis>,
}

/// Why a fact was not applied. A refused fact changes nothing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Refusal {
    /// The fact was decided against version `expected` of the run, which another
    /// fact (a decision, a report, an operator) has moved on to `version` since:
    /// decide again against the run as it is.
    Stale {
        /// The version the decision was made against.
        expected: u64,
        /// The run's version.
        version: u64,
    },
    /// The release has finished; it takes only reports, rollbacks and notes.
    Finished,
    /// The fact does not fit the run as it is (out of order, an unknown step, a
    /// second result): why.
    Invalid(String),
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::Stale { expected, version } => {
                write!(f, "decided against version {expected} of the run, which is at version {version}")
            }
            Refusal::Finished => f.write_str("the release has finished"),
            Refusal::Invalid(why) => f.write_str(why),
        }
    }
}

impl std::error::Error for Refusal {}

fn refuse<T>(why: impl Into<String>) -> Result<T, Refusal> {
    Err(Refusal::Invalid(why.into()))
}

impl Run {
    /// A release nothing has happened to yet.
    pub fn new() -> Self {
        Self {
            version: 0,
            next_command: 1,
            phase: Phase::Pending,
            paused: None,
            reason: String::new(),
            stage: 0,
            stages: Vec::new(),
            steps: Steps::new(),
            migrated: Vec::new(),
            approvals: Vec::new(),
            failure: None,
            rollback: None,
            events: Vec::new(),
            updated_unix_ms: 0,
            finished_unix_ms: 0,
            analyses: Vec::new(),
        }
    }

    /// The canary analysis of a batch, if it has one.
    pub fn analysis(&self, stage: usize, service: &ServiceName, batch: usize) -> Option<&Analysis> {
        self.analyses.iter().rev().find(|a| a.stage == stage && a.batch == batch && &a.service == service)
    }

    /// Why a host was excluded from the release (who and why), if it was: the
    /// exclusion holds for every service of the host's stage, started or not.
    pub fn exclusion(&self, host: &HostId) -> Option<&str> {
        self.stages.iter().flat_map(|st| st.services.values()).find_map(|svc| match svc.hosts.get(host) {
            Some(HostState::Excluded(why)) => Some(why.as_str()),
            _ => None,
        })
    }

    /// Whether the release has ended.
    pub fn is_finished(&self) -> bool {
        matches!(self.phase, Phase::Finished(_))
    }

    /// The last event's index (0 when none).
    pub fn last_event_index(&self) -> u64 {
        self.events.len() as u64
    }

    /// A service's run in a stage.
    pub fn service(&self, stage: usize, service: &ServiceName) -> Option<&ServiceRun> {
        self.stages.get(stage).and_then(|s| s.services.get(service))
    }

    /// Steps sent whose result is not committed, in command order.
    pub fn outstanding(&self) -> impl Iterator<Item = (&CommandId, &StepRecord)> {
        self.steps.outstanding()
    }

    /// What a leader does for the steps without a result (those sent to `host` only,
    /// when given): send each again, or, for a step the release asked to stop, send
    /// only its cancel (never the step again: an agent that had not received it
    /// records it as cancelled). After a leader change, and when an agent connects.
    pub fn resend(&self, host: Option<&HostId>) -> Vec<Action> {
        let action = |(id, step): (&CommandId, &StepRecord)| {
            let (command, host) = (id.clone(), step.host.clone());
            if step.cancel { Action::Cancel { command, host } } else { Action::Send { command, host } }
        };
        match host {
            Some(h) => self.steps.on_host(h).filter(|(_, s)| s.outcome.is_none()).map(action).collect(),
            None => self.steps.outstanding().map(action).collect(),
        }
    }

    /// The cancels of the steps the release asked to stop that have no result yet.
    pub fn cancels(&self) -> impl Iterator<Item = Action> + '_ {
        self.steps.cancelling().map(|(id, step)| Action::Cancel { command: id.clone(), host: step.host.clone() })
    }

    /// Records a release event; `at` and the actor come from the fact.
    pub fn record(&mut self, at: i64, kind: EventKind, message: String) -> &mut Event {
        let index = self.events.len() as u64 + 1;
        self.events.push(Event::new(index, at, kind, message));
        self.events.last_mut().expect("just pushed")
    }

    fn stage_mut(&mut self, stage: usize) -> Result<&mut StageRun, Refusal> {
        match self.stages.get_mut(stage) {
            Some(s) => Ok(s),
            None => refuse(format!("stage {stage} has not started")),
        }
    }

    fn service_mut(&mut self, stage: usize, service: &ServiceName) -> Result<&mut ServiceRun, Refusal> {
        match self.stage_mut(stage)?.services.get_mut(service) {
            Some(s) => Ok(s),
            None => refuse(format!("{service} is not in stage {stage}")),
        }
    }

    /// [`Run::service`], refused as [`Run::service_mut`] refuses: for the checks a
    /// handler makes before it changes anything.
    fn service_in(&self, stage: usize, service: &ServiceName) -> Result<&ServiceRun, Refusal> {
        let Some(st) = self.stages.get(stage) else { return refuse(format!("stage {stage} has not started")) };
        match st.services.get(service) {
            Some(s) => Ok(s),
            None => refuse(format!("{service} is not in stage {stage}")),
        }
    }

    fn stage_name(&self, stage: usize) -> String {
        self.stages.get(stage).map(|s| s.name.clone()).unwrap_or_default()
    }

    fn add_steps(
        &mut self,
        at: i64,
        stage: usize,
        dispatches: &[Dispatch],
        kind: impl Fn() -> StepKind,
        out: &mut Vec<Action>,
    ) {
        for d in dispatches {
            self.steps.insert(
                d.command_id.clone(),
                StepRecord {
                    host: d.host.clone(),
                    stage,
                    kind: kind(),
                    sent_unix_ms: at,
                    outcome: None,
                    finished_unix_ms: 0,
                    cancel: false,
                },
            );
            // An id the engine never hands out (`u64::MAX`) leaves the counter as it
            // is rather than overflowing it.
            if let Some(next) = d.command_id.number().checked_add(1) {
                self.next_command = self.next_command.max(next);
            }
            out.push(Action::Send { command: d.command_id.clone(), host: d.host.clone() });
        }
    }

    /// Applies a fact at `at` (the leader's clock) outside the log: its events carry
    /// no term (engine tests and previews). Refused facts change nothing. `actor`
    /// defaults to `engine` in events. Returns what the leader must do now that the
    /// fact holds (the steps it created to send, the steps it stopped to cancel).
    pub fn apply(&mut self, at: i64, fact: &Fact) -> Result<Vec<Action>, Refusal> {
        self.apply_committed(at, 0, None, fact)
    }

    /// [`Run::apply`] for a fact committed by the leader of `term`: the events it records
    /// carry that term, so a history shows which leader decided what. A decision carries
    /// the run version it was made against (`expect`) and is refused as
    /// [`Refusal::Stale`] if the run has moved on.
    pub fn apply_committed(
        &mut self,
        at: i64,
        term: u64,
        expect: Option<u64>,
        fact: &Fact,
    ) -> Result<Vec<Action>, Refusal> {
        if let Some(expected) = expect
            && expected != self.version
        {
            return Err(Refusal::Stale { expected, version: self.version });
        }
        // A note changes nothing the engine decides on, so it leaves the version alone.
        let note = matches!(fact, Fact::Noted { .. });
        if self.is_finished() && !note && !matches!(fact, Fact::StepReported { .. } | Fact::RollbackDecided { .. }) {
            return Err(Refusal::Finished);
        }
        let before = self.events.len();
        let mut actions = Vec::new();
        self.apply_fact(at, fact, &mut actions)?;
        if !note {
            self.version += 1;
            self.updated_unix_ms = at;
        }
        let status = self.status();
        for e in &mut self.events[before..] {
            e.status = status;
            e.term = term;
        }
        Ok(actions)
    }

    /// Where the release stands, as operators see it.
    pub fn status(&self) -> Status {
        match self.phase {
            Phase::Finished(Terminal::Succeeded) => Status::Succeeded,
            Phase::Finished(Terminal::RolledBack) => Status::RolledBack,
            Phase::Finished(Terminal::Failed) => Status::Failed,
            Phase::Finished(Terminal::Aborted) => Status::Aborted,
            _ if self.paused.is_some() => Status::Paused,
            Phase::RollingBack => Status::RollingBack,
            _ if !self.approvals.is_empty() => Status::AwaitingApproval,
            Phase::Forward => Status::Running,
            Phase::Pending => Status::Pending,
        }
    }

    /// Applies one fact, handing it to the concern it belongs to: each handler checks
    /// that the fact fits the run (refusing it otherwise), then changes the run and
    /// records the events that say what happened.
    fn apply_fact(&mut self, at: i64, fact: &Fact, out: &mut Vec<Action>) -> Result<(), Refusal> {
        match fact {
            // Rolling forward (`forward`): stages, services, migrations, batches, gates.
            Fact::StageStarted { stage, name, services, gates } => {
                self.stage_started(at, *stage, name, services, gates)
            }
            Fact::ServiceStarted { stage, service, version, batches, skipped, from, progress_deadline_ms } => {
                self.service_started(at, *stage, service, version, batches, skipped, from, *progress_deadline_ms)
            }
            Fact::MigrationStarted { stage, service, dispatch } => {
                self.migration_started(at, *stage, service, dispatch, out)
            }
            Fact::BatchStarted { stage, service, batch, dispatches, offline } => {
                self.batch_started(at, *stage, service, *batch, dispatches, offline, out)
            }
            Fact::BakeStarted { stage, service, batch, duration_ms, dispatches } => {
                self.bake_started(at, *stage, service, *batch, *duration_ms, dispatches, out)
            }
            Fact::BatchDone { stage, service, batch } => self.batch_done(at, *stage, service, *batch),
            Fact::ServiceDone { stage, service } => self.service_done(at, *stage, service),
            Fact::ServiceFailed { stage, service, reason } => self.service_failed(at, *stage, service, reason),
            Fact::GateStarted { stage, gate, dispatch } => self.gate_started(at, *stage, gate, dispatch, out),
            Fact::GateDone { stage, gate, after, passed, reason } => {
                self.gate_done(at, *stage, gate, after, *passed, reason)
            }
            Fact::ApprovalRequired { kind, name, stage } => self.approval_required(at, *kind, name, *stage),
            Fact::StageDone { stage, await_approval } => self.stage_done(at, *stage, *await_approval),
            // Agents' reports (`reports`).
            Fact::StepReported { command_id, outcome, reason } => self.step_reported(at, command_id, *outcome, reason),
            // Operators (`operator`).
            Fact::Approved { kind, name, actor, comment } => self.approved(at, *kind, name, actor, comment),
            Fact::Paused { actor, reason } => self.paused(at, actor, reason),
            Fact::Resumed { actor, reason } => self.resumed(at, actor, reason),
            Fact::Aborted { actor, reason } => self.aborted(at, actor, reason),
            Fact::Noted { actor, text } => self.noted(at, actor, text),
            Fact::HostRetried { host, actor, reason } => self.host_retried(at, host, actor, reason),
            Fact::HostExcluded { host, actor, reason } => self.host_excluded(at, host, actor, reason),
            Fact::WindowHeld { stage, service, batch, reason, .. } => {
                self.window_held(at, *stage, service, *batch, reason)
            }
            // Rolling back (`rollback`).
            Fact::RollbackDecided { actor, reason, members, actions, cancelled } => {
                self.rollback_decided(at, actor, reason, members, actions, cancelled, out)
            }
            Fact::RollbackStarted { action, batch, dispatches } => {
                self.rollback_started(at, *action, *batch, dispatches, out)
            }
            Fact::RollbackActionDone { action } => self.rollback_action_done(at, *action),
            // The release's end and its leaders (`lifecycle`).
            Fact::Finished { terminal, reason } => self.finished(at, *terminal, reason),
            Fact::LeaderChanged { node, resent } => self.leader_changed(at, *node, resent),
            // Canary analysis (`analysis`).
            Fact::AnalysisStarted {
                stage,
                service,
                batch,
                metrics,
                canary,
                baseline,
                baseline_versions,
                interval_ms,
            } => self.analysis_started(
                at,
                *stage,
                service,
                *batch,
                metrics,
                canary,
                baseline,
                baseline_versions,
                *interval_ms,
            ),
            Fact::AnalysisSampled { stage, service, batch, round, samples } => {
                self.analysis_sampled(at, *stage, service, *batch, *round, samples)
            }
            Fact::AnalysisJudged { stage, service, batch, report } => {
                self.analysis_judged(at, *stage, service, *batch, report)
            }
        }
    }

    /// Per host, the version a service ran before this release (from its first stage
    /// that deployed it there).
    pub fn previous_versions(&self, service: &ServiceName) -> BTreeMap<HostId, Option<String>> {
        let mut out = BTreeMap::new();
        for stage in &self.stages {
            if let Some(svc) = stage.services.get(service) {
                for (h, v) in &svc.from {
                    out.entry(h.clone()).or_insert_with(|| v.clone());
                }
            }
        }
        out
    }
}

impl Default for Run {
    fn default() -> Self {
        Self::new()
    }
}

/// `ms` after `at` (saturating): when a service without progress since `at` fails.
fn deadline(at: i64, ms: u64) -> i64 {
    at.saturating_add(i64::try_from(ms).unwrap_or(i64::MAX))
}
