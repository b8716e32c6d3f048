//! A release's execution state and how committed facts change it. Applying is
//! deterministic: it reads the fact, the time the leader stamped into it and nothing
//! else, so every coordinator holds the same [`Run`] for the same log.

use std::collections::BTreeMap;

use flotilla_shared::model::{HostId, ServiceName};
use serde::{Deserialize, Serialize};

use super::action::Action;
use super::event::{Event, EventKind, count};
use super::fact::{
    ApprovalKind, BatchSpec, CommandId, Dispatch, Fact, MAX_ATTEMPTS, Outcome, RollbackAction, Terminal,
};
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
        }
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
            self.next_command = self.next_command.max(d.command_id.number() + 1);
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

    #[allow(clippy::too_many_lines)]
    fn apply_fact(&mut self, at: i64, fact: &Fact, out: &mut Vec<Action>) -> Result<(), Refusal> {
        match fact {
            Fact::StageStarted { stage, name, services, gates } => {
                if *stage != self.stages.len() {
                    return refuse(format!(
                        "stage {stage} cannot start: {} started",
                        count(self.stages.len(), "stage", "stages")
                    ));
                }
                if let Some(prev) = self.stages.last()
                    && prev.state != StageState::Done
                {
                    return refuse("the previous stage is not done");
                }
                self.stages.push(StageRun {
                    name: name.clone(),
                    state: StageState::Running,
                    services: services.iter().map(|s| (s.clone(), ServiceRun::waiting())).collect(),
                    gates: gates.iter().map(|g| (g.clone(), GateState::Pending)).collect(),
                });
                self.stage = *stage;
                self.approvals.retain(|a| a.kind != ApprovalKind::Stage);
                let first = self.phase == Phase::Pending;
                self.phase = Phase::Forward;
                if first {
                    self.reason.clear();
                }
                let e = self.record(at, EventKind::StageStarted, format!("stage {name} started"));
                e.stage = name.clone();
            }
            Fact::ServiceStarted { stage, service, version, batches, skipped, from, progress_deadline_ms } => {
                let stage_name = self.stage_name(*stage);
                let run = self.service_mut(*stage, service)?;
                if run.state != ServiceState::Waiting {
                    return refuse(format!("{service} already started in stage {stage_name}"));
                }
                run.version = version.clone();
                run.batches = batches.clone();
                run.from = from.iter().cloned().collect();
                run.hosts =
                    batches.iter().flat_map(|b| b.hosts.iter().map(|h| (h.clone(), HostState::Waiting))).collect();
                run.hosts.extend(skipped.iter().map(|h| (h.clone(), HostState::Skipped)));
                run.started_unix_ms = at;
                run.progress_deadline_ms = *progress_deadline_ms;
                let (kind, message) = if batches.is_empty() {
                    run.state = ServiceState::Skipped;
                    run.finished_unix_ms = at;
                    let why = if skipped.is_empty() {
                        format!("{service} has no hosts in stage {stage_name}")
                    } else {
                        let all = if skipped.len() == 1 { "its only host" } else { "all its hosts" };
                        format!("{service} skipped in stage {stage_name}: {all} already run {version}")
                    };
                    run.reason = why.clone();
                    (EventKind::ServiceDone, why)
                } else {
                    run.state = ServiceState::Deploying;
                    run.deadline_unix_ms = deadline(at, *progress_deadline_ms);
                    let hosts: usize = batches.iter().map(|b| b.hosts.len()).sum();
                    let names: Vec<&str> = batches.iter().map(|b| b.name.as_str()).collect();
                    let mut msg = format!(
                        "{service} {version} started in stage {stage_name}: {} in {} {}",
                        count(hosts, "host", "hosts"),
                        if names.len() == 1 { "batch" } else { "batches" },
                        names.join(", ")
                    );
                    if !skipped.is_empty() {
                        msg.push_str(&format!(
                            "; {} already at {version} skipped",
                            count(skipped.len(), "host", "hosts")
                        ));
                    }
                    (EventKind::ServiceStarted, msg)
                };
                let e = self.record(at, kind, message);
                e.stage = stage_name;
                e.services = vec![service.clone()];
                e.version = version.clone();
            }
            Fact::MigrationStarted { stage, service, dispatch } => {
                let stage_name = self.stage_name(*stage);
                let run = self.service_mut(*stage, service)?;
                if run.state != ServiceState::Deploying
                    || run.batch != 0
                    || run.hosts.values().any(|h| *h != HostState::Waiting)
                {
                    return refuse(format!("{service} cannot migrate now"));
                }
                if self.migrated.contains(service)
                    || self.steps.values().any(|s| s.kind == StepKind::Migrate(service.clone()) && s.outcome.is_none())
                {
                    return refuse(format!("{service} already migrated or migrating"));
                }
                let run = self.service_mut(*stage, service)?;
                run.state = ServiceState::Migrating;
                let version = run.version.clone();
                self.add_steps(at, *stage, std::slice::from_ref(dispatch), || StepKind::Migrate(service.clone()), out);
                let e = self.record(
                    at,
                    EventKind::MigrationStarted,
                    format!("{service} {version}: migrate hook sent to {}", dispatch.host),
                );
                e.stage = stage_name;
                e.services = vec![service.clone()];
                e.hosts = vec![dispatch.host.clone()];
                e.command_ids = vec![dispatch.command_id.clone()];
                e.version = version;
            }
            Fact::BatchStarted { stage, service, batch, dispatches, offline } => {
                let stage_name = self.stage_name(*stage);
                let run = self.service_mut(*stage, service)?;
                if run.state != ServiceState::Deploying || *batch != run.batch || *batch >= run.batches.len() {
                    return refuse(format!("{service} cannot start batch {batch}"));
                }
                if dispatches
                    .iter()
                    .map(|d| &d.host)
                    .chain(offline)
                    .any(|h| run.hosts.get(h) != Some(&HostState::Waiting))
                {
                    return refuse(format!("a host of batch {batch} of {service} is not waiting to deploy"));
                }
                run.state = ServiceState::Deploying;
                run.batch = *batch;
                run.deadline_unix_ms = deadline(at, run.progress_deadline_ms);
                for d in dispatches {
                    run.hosts.insert(d.host.clone(), HostState::Deploying(d.command_id.clone()));
                }
                for h in offline {
                    run.hosts
                        .insert(h.clone(), HostState::Failed(format!("host {h} was offline when its batch started")));
                }
                let batch_name = run.batches[*batch].name.clone();
                let version = run.version.clone();
                self.add_steps(at, *stage, dispatches, || StepKind::Deploy(service.clone()), out);
                let mut msg = format!(
                    "{service} {version}: batch {batch_name} sent to {}",
                    join_hosts(dispatches.iter().map(|d| &d.host))
                );
                if !offline.is_empty() {
                    msg.push_str(&format!("; offline, counted as failed: {}", join_hosts(offline.iter())));
                }
                let e = self.record(at, EventKind::BatchStarted, msg);
                e.stage = stage_name;
                e.services = vec![service.clone()];
                e.batch = batch_name;
                e.hosts = dispatches.iter().map(|d| d.host.clone()).chain(offline.iter().cloned()).collect();
                e.command_ids = dispatches.iter().map(|d| d.command_id.clone()).collect();
                e.version = version;
            }
            Fact::BakeStarted { stage, service, batch, duration_ms, dispatches } => {
                let stage_name = self.stage_name(*stage);
                let run = self.service_mut(*stage, service)?;
                if run.state != ServiceState::Deploying || run.batch != *batch {
                    return refuse(format!("{service} batch {batch} is not deploying"));
                }
                for d in dispatches {
                    if run.hosts.get(&d.host) != Some(&HostState::Deployed) {
                        return refuse(format!("{} is not deployed", d.host));
                    }
                    run.hosts.insert(d.host.clone(), HostState::Baking(d.command_id.clone()));
                }
                run.state = ServiceState::Baking;
                let batch_name = run.batches[*batch].name.clone();
                let version = run.version.clone();
                let duration = *duration_ms;
                self.add_steps(at, *stage, dispatches, || StepKind::Bake(service.clone(), duration), out);
                let e = self.record(
                    at,
                    EventKind::BakeStarted,
                    format!(
                        "{service} {version}: batch {batch_name} healthy, baking for {}",
                        flotilla_shared::model::format_duration(std::time::Duration::from_millis(duration))
                    ),
                );
                e.stage = stage_name;
                e.services = vec![service.clone()];
                e.batch = batch_name;
                e.command_ids = dispatches.iter().map(|d| d.command_id.clone()).collect();
                e.hosts = dispatches.iter().map(|d| d.host.clone()).collect();
            }
            Fact::BatchDone { stage, service, batch } => {
                let stage_name = self.stage_name(*stage);
                let run = self.service_mut(*stage, service)?;
                if !matches!(run.state, ServiceState::Deploying | ServiceState::Baking) || run.batch != *batch {
                    return refuse(format!("{service} batch {batch} is not running"));
                }
                for state in run.hosts.values_mut() {
                    if *state == HostState::Deployed {
                        *state = HostState::Done;
                    }
                }
                run.state = ServiceState::Deploying;
                run.batch = *batch + 1;
                run.deadline_unix_ms = deadline(at, run.progress_deadline_ms);
                let batch_name = run.batches[*batch].name.clone();
                let msg = format!(
                    "{service} {}: batch {batch_name} done ({} of {} healthy)",
                    run.version,
                    run.hosts_done(),
                    count(run.hosts.len(), "host", "hosts")
                );
                let e = self.record(at, EventKind::BatchDone, msg);
                e.stage = stage_name;
                e.services = vec![service.clone()];
                e.batch = batch_name;
            }
            Fact::ServiceDone { stage, service } => {
                let stage_name = self.stage_name(*stage);
                let run = self.service_mut(*stage, service)?;
                if run.state != ServiceState::Deploying || run.batch != run.batches.len() {
                    return refuse(format!("{service} has batches left"));
                }
                run.state = ServiceState::Done;
                run.finished_unix_ms = at;
                run.deadline_unix_ms = 0;
                let failed = run.failed_hosts().count();
                let mut msg = format!("{service} {} done in stage {stage_name}", run.version);
                if failed > 0 {
                    msg.push_str(&format!(" with {} failed (within max_failed)", count(failed, "host", "hosts")));
                }
                let version = run.version.clone();
                let e = self.record(at, EventKind::ServiceDone, msg);
                e.stage = stage_name;
                e.services = vec![service.clone()];
                e.version = version;
            }
            Fact::ServiceFailed { stage, service, reason } => {
                let stage_name = self.stage_name(*stage);
                let run = self.service_mut(*stage, service)?;
                if !matches!(run.state, ServiceState::Deploying | ServiceState::Baking | ServiceState::Migrating) {
                    return refuse(format!("{service} is not running"));
                }
                run.state = ServiceState::Failed;
                run.finished_unix_ms = at;
                run.deadline_unix_ms = 0;
                run.reason = reason.clone();
                self.stages[*stage].state = StageState::Failed;
                self.failure = Some(Failure { stage: *stage, services: vec![service.clone()], reason: reason.clone() });
                let e = self.record(
                    at,
                    EventKind::ServiceFailed,
                    format!("{service} failed in stage {stage_name}: {reason}"),
                );
                e.stage = stage_name;
                e.services = vec![service.clone()];
            }
            Fact::StepReported { command_id, outcome, reason } => {
                self.apply_report(at, command_id, *outcome, reason)?
            }
            Fact::GateStarted { stage, gate, dispatch } => {
                let stage_name = self.stage_name(*stage);
                let state = self
                    .stage_mut(*stage)?
                    .gates
                    .get_mut(gate)
                    .ok_or_else(|| Refusal::Invalid(format!("no gate {gate}")))?;
                if *state != GateState::Pending {
                    return refuse(format!("gate {gate} already started"));
                }
                *state = GateState::Running(dispatch.command_id.clone());
                self.add_steps(at, *stage, std::slice::from_ref(dispatch), || StepKind::Check(gate.clone()), out);
                let e =
                    self.record(at, EventKind::GateStarted, format!("gate {gate}: check sent to {}", dispatch.host));
                e.stage = stage_name;
                e.gate = gate.clone();
                e.hosts = vec![dispatch.host.clone()];
                e.command_ids = vec![dispatch.command_id.clone()];
            }
            Fact::GateDone { stage, gate, after, passed, reason } => {
                let stage_name = self.stage_name(*stage);
                let st = self.stage_mut(*stage)?;
                let state = st.gates.get_mut(gate).ok_or_else(|| Refusal::Invalid(format!("no gate {gate}")))?;
                if matches!(state, GateState::Passed | GateState::Failed(_) | GateState::Cancelled) {
                    return refuse(format!("gate {gate} already ended"));
                }
                *state = if *passed { GateState::Passed } else { GateState::Failed(reason.clone()) };
                if !*passed {
                    let why = format!("gate {gate} failed: {reason}");
                    for name in after {
                        if let Some(svc) = st.services.get_mut(name) {
                            svc.state = ServiceState::Failed;
                            svc.reason = why.clone();
                            svc.finished_unix_ms = at;
                        }
                    }
                    st.state = StageState::Failed;
                    self.failure = Some(Failure { stage: *stage, services: after.clone(), reason: why });
                }
                let (kind, msg) = if *passed {
                    (EventKind::GatePassed, format!("gate {gate} passed in stage {stage_name}{}", suffix(reason)))
                } else {
                    (EventKind::GateFailed, format!("gate {gate} failed in stage {stage_name}: {reason}"))
                };
                let e = self.record(at, kind, msg);
                e.stage = stage_name;
                e.gate = gate.clone();
            }
            Fact::ApprovalRequired { kind, name, stage } => {
                if self.approvals.iter().any(|a| a.kind == *kind && a.name == *name && a.stage == *stage) {
                    return refuse(format!("approval of {kind} {name} is already required"));
                }
                let stage_name = self.stage_name(*stage);
                match kind {
                    ApprovalKind::Gate => {
                        let gates = &mut self.stage_mut(*stage)?.gates;
                        match gates.get_mut(name) {
                            Some(state) if matches!(state, GateState::Pending | GateState::Running(_)) => {
                                *state = GateState::AwaitingApproval;
                            }
                            _ => return refuse(format!("gate {name} cannot wait for approval now")),
                        }
                    }
                    ApprovalKind::Stage => self.stage_mut(*stage)?.state = StageState::AwaitingApproval,
                }
                self.approvals.push(Approval { kind: *kind, name: name.clone(), stage: *stage, since_unix_ms: at });
                let what = match kind {
                    ApprovalKind::Gate => format!("gate {name} in stage {stage_name}"),
                    ApprovalKind::Stage => format!("stage {name} is done; the next stage"),
                };
                let e = self.record(
                    at,
                    EventKind::ApprovalRequired,
                    format!("{what} waits for approval (flotilla release approve)"),
                );
                e.stage = stage_name;
                if *kind == ApprovalKind::Gate {
                    e.gate = name.clone();
                }
            }
            Fact::Approved { kind, name, actor, comment } => {
                let Some(pos) = self.approvals.iter().position(|a| a.kind == *kind && a.name == *name) else {
                    return refuse(format!("no approval of {kind} {name} is pending"));
                };
                let approval = self.approvals.remove(pos);
                let stage_name = self.stage_name(approval.stage);
                match kind {
                    ApprovalKind::Gate => {
                        if let Some(state) = self.stage_mut(approval.stage)?.gates.get_mut(name) {
                            *state = GateState::Passed;
                        }
                    }
                    ApprovalKind::Stage => self.stage_mut(approval.stage)?.state = StageState::Done,
                }
                let e = self.record(
                    at,
                    EventKind::Approved,
                    format!("{kind} {name} approved by {actor}{}", suffix(comment)),
                );
                e.stage = stage_name;
                e.actor = actor.clone();
                if *kind == ApprovalKind::Gate {
                    e.gate = name.clone();
                }
            }
            Fact::StageDone { stage, await_approval } => {
                let st = self.stage_mut(*stage)?;
                if st.state != StageState::Running {
                    return refuse(format!("stage {} is not running", st.name));
                }
                st.state = if *await_approval { StageState::AwaitingApproval } else { StageState::Done };
                let name = st.name.clone();
                let e = self.record(at, EventKind::StageDone, format!("stage {name} done"));
                e.stage = name.clone();
                if *await_approval {
                    self.approvals.push(Approval {
                        kind: ApprovalKind::Stage,
                        name: name.clone(),
                        stage: *stage,
                        since_unix_ms: at,
                    });
                    let e = self.record(
                        at,
                        EventKind::ApprovalRequired,
                        format!("stage {name} is done; the next stage starts once approved (flotilla release approve)"),
                    );
                    e.stage = name;
                }
            }
            Fact::Paused { actor, reason } => {
                if self.paused.is_some() {
                    return refuse("the release is already paused");
                }
                self.paused = Some(reason.clone());
                if actor == super::ENGINE {
                    // The engine's reaction to the failure is this pause.
                    self.failure = None;
                }
                let e = self.record(at, EventKind::Paused, format!("paused by {actor}: {reason}"));
                e.actor = actor.clone();
            }
            Fact::Resumed { actor, reason } => {
                if self.paused.is_none() {
                    return refuse("the release is not paused");
                }
                self.paused = None;
                self.resume(at);
                let e = self.record(at, EventKind::Resumed, format!("resumed by {actor}{}", suffix(reason)));
                e.actor = actor.clone();
            }
            Fact::Aborted { actor, reason } => {
                self.finish(at, Terminal::Aborted, format!("aborted by {actor}{}", suffix(reason)));
                if let Some(e) = self.events.last_mut() {
                    e.actor = actor.clone();
                }
            }
            Fact::RollbackDecided { actor, reason, members, actions, cancelled } => {
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
                self.reason = reason.clone();
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
                        } else if in_set.contains(&name)
                            && !matches!(svc.state, ServiceState::Waiting | ServiceState::Skipped)
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
                    members: members.clone(),
                    actions: actions.clone(),
                    position: 0,
                    batch: None,
                    dispatched: Vec::new(),
                    failed: Vec::new(),
                });
                let order: Vec<&str> = members.iter().map(|(s, _)| s.as_str()).collect();
                let mut msg = format!("rollback decided by {actor}: {reason}; rolling back {}", order.join(", "));
                if order.is_empty() {
                    msg = format!("rollback decided by {actor}: {reason}; no service had started");
                }
                if !cancelled.is_empty() {
                    let c: Vec<&str> = cancelled.iter().map(ServiceName::as_str).collect();
                    msg.push_str(&format!("; not started, cancelled: {}", c.join(", ")));
                }
                let e = self.record(at, EventKind::RollbackStarted, msg);
                e.services = members.iter().map(|(s, _)| s.clone()).collect();
                e.actor = actor.clone();
            }
            Fact::RollbackStarted { action, batch, dispatches } => {
                let Some(rb) = self.rollback.as_mut() else { return refuse("no rollback in progress") };
                if *action != rb.position || *batch != rb.batch.map_or(0, |b| b + 1) {
                    return refuse(format!("rollback action {action} batch {batch} is not next"));
                }
                if rb.dispatched.iter().any(|d| self.steps.get(&d.command_id).is_none_or(|s| s.outcome.is_none())) {
                    return refuse("the previous rollback batch is still running");
                }
                let act = rb
                    .actions
                    .get(*action)
                    .cloned()
                    .ok_or_else(|| Refusal::Invalid(format!("no rollback action {action}")))?;
                rb.batch = Some(*batch);
                rb.dispatched = dispatches.clone();
                let stage = self.stage;
                let (kind, msg, service) = match &act {
                    RollbackAction::Rollback(s) => {
                        let from = self.previous_versions(s);
                        let kinds: Vec<(HostId, StepKind)> = dispatches
                            .iter()
                            .map(|d| {
                                (d.host.clone(), StepKind::Rollback(s.clone(), from.get(&d.host).cloned().flatten()))
                            })
                            .collect();
                        for (d, (_, k)) in dispatches.iter().zip(kinds) {
                            self.add_steps(at, stage, std::slice::from_ref(d), || k.clone(), out);
                        }
                        (
                            EventKind::ServiceRollbackStarted,
                            format!("{s}: rolling back on {}", join_hosts(dispatches.iter().map(|d| &d.host))),
                            s.clone(),
                        )
                    }
                    RollbackAction::MigrateDown(s) => {
                        self.add_steps(at, stage, dispatches, || StepKind::MigrateDown(s.clone()), out);
                        (
                            EventKind::MigrateDownStarted,
                            format!("{s}: migrate_down sent to {}", join_hosts(dispatches.iter().map(|d| &d.host))),
                            s.clone(),
                        )
                    }
                    RollbackAction::Pause(s, _) => return refuse(format!("rollback action {action} ({s}) is a pause")),
                };
                let e = self.record(at, kind, msg);
                e.services = vec![service];
                e.hosts = dispatches.iter().map(|d| d.host.clone()).collect();
                e.command_ids = dispatches.iter().map(|d| d.command_id.clone()).collect();
            }
            Fact::RollbackActionDone { action } => {
                let Some(rb) = self.rollback.as_mut() else { return refuse("no rollback in progress") };
                if *action != rb.position {
                    return refuse(format!("rollback action {action} is not the current one"));
                }
                let act = rb.actions[*action].clone();
                rb.position += 1;
                rb.batch = None;
                rb.dispatched.clear();
                rb.failed.clear();
                let (kind, msg, service) = match act {
                    RollbackAction::Rollback(s) => {
                        for stage in &mut self.stages {
                            if let Some(svc) = stage.services.get_mut(&s)
                                && svc.state == ServiceState::RollingBack
                            {
                                svc.state = ServiceState::RolledBack;
                                svc.finished_unix_ms = at;
                            }
                        }
                        let to = self.previous_versions(&s);
                        let mut versions: Vec<String> =
                            to.values().map(|v| v.clone().unwrap_or_else(|| "none".to_owned())).collect();
                        versions.sort();
                        versions.dedup();
                        (EventKind::ServiceRolledBack, format!("{s} is back at {}", versions.join(", ")), s)
                    }
                    RollbackAction::MigrateDown(s) => {
                        (EventKind::MigrateDownDone, format!("{s}: migrate_down succeeded"), s)
                    }
                    RollbackAction::Pause(s, why) => {
                        (EventKind::Resumed, format!("rollback goes on past {s} ({why}): an operator resumed"), s)
                    }
                };
                let e = self.record(at, kind, msg);
                e.services = vec![service];
            }
            Fact::Finished { terminal, reason } => self.finish(at, *terminal, reason.clone()),
            Fact::Noted { actor, text } => {
                let e = self.record(at, EventKind::Note, text.clone());
                e.actor = actor.clone();
            }
            Fact::LeaderChanged { node, resent } => {
                let e = self.record(
                    at,
                    EventKind::LeaderChanged,
                    match resent.len() {
                        0 => format!(
                            "coordinator {node} leads now and took the release over; no step was waiting for a result"
                        ),
                        n => format!(
                            "coordinator {node} leads now and took the release over; {} without a result {} sent again \
                             (now, or when the host's agent connects to it)",
                            count(n, "step", "steps"),
                            if n == 1 { "is" } else { "are" }
                        ),
                    },
                );
                e.command_ids = resent.clone();
            }
        }
        Ok(())
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

    fn apply_report(&mut self, at: i64, command_id: &CommandId, outcome: Outcome, reason: &str) -> Result<(), Refusal> {
        let step = match self.steps.finish(command_id, outcome, reason, at) {
            None => return refuse(format!("no step {command_id} in this release")),
            Some(Err(())) => return refuse(format!("step {command_id} already has a result")),
            Some(Ok(step)) => step.clone(),
        };
        let host = step.host.clone();
        let stage_name = self.stage_name(step.stage);
        // An interrupted step is tried again while attempts remain.
        let attempts = self.steps.attempts(step.stage, &step.host, &step.kind);
        let retry = outcome == Outcome::Interrupted && attempts < MAX_ATTEMPTS;
        let failed_reason = |what: &str| match outcome {
            Outcome::Failed => format!("{what}: {reason}"),
            Outcome::Interrupted if retry => {
                format!("{what}: {reason}; trying again (attempt {} of {MAX_ATTEMPTS})", attempts + 1)
            }
            Outcome::Interrupted => format!("{what}: {reason} (after {attempts} attempts)"),
            Outcome::Cancelled => format!("{what}: cancelled"),
            Outcome::Refused => format!("{what}: refused by the agent ({reason})"),
            Outcome::Succeeded => String::new(),
        };
        let (kind, message, service) = match &step.kind {
            StepKind::Deploy(s) | StepKind::Bake(s, _) => {
                let baking = matches!(step.kind, StepKind::Bake(..));
                let in_rollback = self.phase == Phase::RollingBack;
                let forward = self.phase == Phase::Forward;
                let run = self.service_mut(step.stage, s)?;
                let current = run.hosts.get(&host).cloned();
                let mine = matches!(&current, Some(HostState::Deploying(c) | HostState::Baking(c)) if c == command_id);
                if mine {
                    let next = match (outcome, baking) {
                        (Outcome::Succeeded, false) => HostState::Deployed,
                        (Outcome::Succeeded, true) => HostState::Done,
                        (Outcome::Cancelled, false) => HostState::Cancelled,
                        (Outcome::Interrupted, false) if retry && forward => HostState::Waiting,
                        // Baked again, not deployed again: the deploy succeeded, and an
                        // agent that restarts starts its services that died with it.
                        (Outcome::Interrupted, true) if retry && forward => HostState::Deployed,
                        _ => HostState::Failed(failed_reason(if baking {
                            "unhealthy during bake"
                        } else {
                            "deploy failed"
                        })),
                    };
                    // A bake to try again: the batch goes back to deploying, which
                    // bakes its deployed hosts (hosts still baking finish their bake).
                    if baking && next == HostState::Deployed {
                        run.state = ServiceState::Deploying;
                    }
                    run.hosts.insert(host.clone(), next);
                    if outcome.ok() && (forward || in_rollback) {
                        run.deadline_unix_ms = if forward { deadline(at, run.progress_deadline_ms) } else { 0 };
                    }
                }
                let version = run.version.clone();
                let (kind, msg) = if outcome.ok() && baking {
                    (EventKind::HostBaked, format!("{s} {version} baked on {host}: healthy through the bake"))
                } else if outcome.ok() {
                    (EventKind::HostSucceeded, format!("{s} {version} deployed and healthy on {host}"))
                } else {
                    let what = if baking {
                        format!("{s} {version} unhealthy during bake on {host}")
                    } else {
                        format!("{s} {version} failed on {host}")
                    };
                    (EventKind::HostFailed, failed_reason(&what))
                };
                (kind, msg, Some(s.clone()))
            }
            StepKind::Migrate(s) => {
                if outcome.ok() {
                    self.migrated.push(s.clone());
                    if let Ok(run) = self.service_mut(step.stage, s)
                        && run.state == ServiceState::Migrating
                    {
                        run.state = ServiceState::Deploying;
                        run.deadline_unix_ms = deadline(at, run.progress_deadline_ms);
                    }
                    (EventKind::MigrationDone, format!("{s}: migrate hook succeeded on {host}"), Some(s.clone()))
                } else {
                    if retry
                        && let Ok(run) = self.service_mut(step.stage, s)
                        && run.state == ServiceState::Migrating
                    {
                        // Back to before the migration: the engine sends it again.
                        run.state = ServiceState::Deploying;
                    }
                    (
                        EventKind::HostFailed,
                        failed_reason(&format!("{s}: migrate hook failed on {host}")),
                        Some(s.clone()),
                    )
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
                let msg = if outcome.ok() {
                    format!("gate {gate}: check succeeded on {host}")
                } else {
                    failed_reason(&format!("gate {gate}: check failed on {host}"))
                };
                let e =
                    self.record(at, if outcome.ok() { EventKind::HostSucceeded } else { EventKind::HostFailed }, msg);
                e.stage = stage_name;
                e.gate = gate.clone();
                e.hosts = vec![host];
                e.command_ids = vec![command_id.clone()];
                return Ok(());
            }
            StepKind::Rollback(s, to) => {
                let to = to.clone().unwrap_or_else(|| "none (stopped)".to_owned());
                if !outcome.ok()
                    && let Some(rb) = self.rollback.as_mut()
                {
                    rb.failed.push((host.clone(), reason.to_owned()));
                }
                if outcome.ok() {
                    (EventKind::HostSucceeded, format!("{s} back at {to} on {host}"), Some(s.clone()))
                } else {
                    (
                        EventKind::HostFailed,
                        failed_reason(&format!("{s}: rollback to {to} failed on {host}")),
                        Some(s.clone()),
                    )
                }
            }
            StepKind::MigrateDown(s) => {
                if !outcome.ok()
                    && let Some(rb) = self.rollback.as_mut()
                {
                    rb.failed.push((host.clone(), reason.to_owned()));
                }
                if outcome.ok() {
                    (EventKind::HostSucceeded, format!("{s}: migrate_down succeeded on {host}"), Some(s.clone()))
                } else {
                    (
                        EventKind::HostFailed,
                        failed_reason(&format!("{s}: migrate_down failed on {host}")),
                        Some(s.clone()),
                    )
                }
            }
        };
        let e = self.record(at, kind, message);
        e.stage = stage_name;
        e.services = service.into_iter().collect();
        e.hosts = vec![host];
        e.command_ids = vec![command_id.clone()];
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

    fn finish(&mut self, at: i64, terminal: Terminal, reason: String) {
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
                        svc.reason = format!("stopped part way: {reason}");
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
}

impl Default for Run {
    fn default() -> Self {
        Self::new()
    }
}

fn deadline(at: i64, ms: u64) -> i64 {
    at.saturating_add(i64::try_from(ms).unwrap_or(i64::MAX))
}

fn suffix(text: &str) -> String {
    if text.is_empty() { String::new() } else { format!(": {text}") }
}

/// `web-1, web-2` (at most 8 named, then a count).
pub fn join_hosts<'a>(hosts: impl Iterator<Item = &'a HostId>) -> String {
    let all: Vec<&str> = hosts.map(HostId::as_str).collect();
    if all.len() <= 8 { all.join(", ") } else { format!("{} and {} more", all[..8].join(", "), all.len() - 8) }
}
