//! Rolling forward: the engine's decisions that start stages, services, migrations,
//! batches, bakes and gates, wait for approvals, and end services and stages.

use std::collections::{BTreeMap, BTreeSet};

use flotilla_shared::model::{HostId, ServiceName};

use super::{
    Approval, Failure, GateState, HostState, Phase, Refusal, Run, ServiceRun, ServiceState, StageRun, StageState,
    StepKind, deadline, refuse,
};
use crate::action::Action;
use crate::event::EventKind;
use crate::fact::{ApprovalKind, BatchSpec, Dispatch};
use crate::text::{self, count};

impl Run {
    /// A stage starts (the first one starts the release): after the previous one is done.
    pub(super) fn stage_started(
        &mut self,
        at: i64,
        stage: usize,
        name: &str,
        services: &[ServiceName],
        gates: &[String],
    ) -> Result<(), Refusal> {
        if stage != self.stages.len() {
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
            name: name.to_owned(),
            state: StageState::Running,
            services: services.iter().map(|s| (s.clone(), ServiceRun::waiting())).collect(),
            gates: gates.iter().map(|g| (g.clone(), GateState::Pending)).collect(),
        });
        self.stage = stage;
        self.approvals.retain(|a| a.kind != ApprovalKind::Stage);
        let first = self.phase == Phase::Pending;
        self.phase = Phase::Forward;
        if first {
            self.reason.clear();
        }
        let e = self.record(at, EventKind::StageStarted, text::stage_started(name));
        e.stage = name.to_owned();
        Ok(())
    }

    /// A waiting service starts in a stage with its batches (one argument per field of
    /// the fact); with none, it is skipped there.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn service_started(
        &mut self,
        at: i64,
        stage: usize,
        service: &ServiceName,
        version: &str,
        batches: &[BatchSpec],
        skipped: &[HostId],
        from: &[(HostId, Option<String>)],
        progress_deadline_ms: u64,
    ) -> Result<(), Refusal> {
        let stage_name = self.stage_name(stage);
        // A host an operator excluded from the release is excluded here too.
        let hosts: BTreeMap<HostId, HostState> = batches
            .iter()
            .flat_map(|b| b.hosts.iter())
            .map(|h| {
                let state = self.exclusion(h).map_or(HostState::Waiting, |why| HostState::Excluded(why.to_owned()));
                (h.clone(), state)
            })
            .collect();
        let run = self.service_mut(stage, service)?;
        if run.state != ServiceState::Waiting {
            return refuse(format!("{service} already started in stage {stage_name}"));
        }
        run.version = version.to_owned();
        run.batches = batches.to_vec();
        run.from = from.iter().cloned().collect();
        run.hosts = hosts;
        run.hosts.extend(skipped.iter().map(|h| (h.clone(), HostState::Skipped)));
        run.started_unix_ms = at;
        run.progress_deadline_ms = progress_deadline_ms;
        let (kind, message) = if batches.is_empty() {
            run.state = ServiceState::Skipped;
            run.finished_unix_ms = at;
            let why = text::service_skipped(service, &stage_name, version, skipped.len());
            run.reason = why.clone();
            (EventKind::ServiceDone, why)
        } else {
            run.state = ServiceState::Deploying;
            run.deadline_unix_ms = deadline(at, progress_deadline_ms);
            (EventKind::ServiceStarted, text::service_started(service, version, &stage_name, batches, skipped.len()))
        };
        let e = self.record(at, kind, message);
        e.stage = stage_name;
        e.services = vec![service.clone()];
        e.version = version.to_owned();
        Ok(())
    }

    /// A service's `migrate` hook is sent, once per release, before its first batch.
    pub(super) fn migration_started(
        &mut self,
        at: i64,
        stage: usize,
        service: &ServiceName,
        dispatch: &Dispatch,
        out: &mut Vec<Action>,
    ) -> Result<(), Refusal> {
        let stage_name = self.stage_name(stage);
        let run = self.service_mut(stage, service)?;
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
        let run = self.service_mut(stage, service)?;
        run.state = ServiceState::Migrating;
        run.deadline_unix_ms = deadline(at, run.progress_deadline_ms);
        run.reason.clear();
        let version = run.version.clone();
        self.add_steps(at, stage, std::slice::from_ref(dispatch), || StepKind::Migrate(service.clone()), out);
        let e =
            self.record(at, EventKind::MigrationStarted, text::migration_started(service, &version, &dispatch.host));
        e.stage = stage_name;
        e.services = vec![service.clone()];
        e.hosts = vec![dispatch.host.clone()];
        e.command_ids = vec![dispatch.command_id.clone()];
        e.version = version;
        Ok(())
    }

    /// A service's next batch is sent to its online hosts; its offline hosts fail
    /// (one argument per field of the fact, and the actions).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn batch_started(
        &mut self,
        at: i64,
        stage: usize,
        service: &ServiceName,
        batch: usize,
        dispatches: &[Dispatch],
        offline: &[HostId],
        out: &mut Vec<Action>,
    ) -> Result<(), Refusal> {
        let stage_name = self.stage_name(stage);
        let run = self.service_mut(stage, service)?;
        if run.state != ServiceState::Deploying || batch != run.batch {
            return refuse(format!("{service} cannot start batch {batch}"));
        }
        let Some(spec) = run.batches.get(batch) else {
            return refuse(no_batch(service, batch, run.batches.len()));
        };
        if dispatches.iter().map(|d| &d.host).chain(offline).any(|h| run.hosts.get(h) != Some(&HostState::Waiting)) {
            return refuse(format!("a host of batch {batch} of {service} is not waiting to deploy"));
        }
        let batch_name = spec.name.clone();
        run.state = ServiceState::Deploying;
        run.batch = batch;
        run.deadline_unix_ms = deadline(at, run.progress_deadline_ms);
        run.reason.clear();
        for d in dispatches {
            run.hosts.insert(d.host.clone(), HostState::Deploying(d.command_id.clone()));
        }
        for h in offline {
            run.hosts.insert(h.clone(), HostState::Failed(text::offline_host(h)));
        }
        let version = run.version.clone();
        self.add_steps(at, stage, dispatches, || StepKind::Deploy(service.clone()), out);
        let message = text::batch_started(service, &version, &batch_name, dispatches.iter().map(|d| &d.host), offline);
        let e = self.record(at, EventKind::BatchStarted, message);
        e.stage = stage_name;
        e.services = vec![service.clone()];
        e.batch = batch_name;
        e.hosts = dispatches.iter().map(|d| d.host.clone()).chain(offline.iter().cloned()).collect();
        e.command_ids = dispatches.iter().map(|d| d.command_id.clone()).collect();
        e.version = version;
        Ok(())
    }

    /// Deployment windows hold a deploying service's next batch: nothing is sent, the
    /// service says why, and its progress deadline stops (it starts again with the
    /// batch).
    pub(super) fn window_held(
        &mut self,
        at: i64,
        stage: usize,
        service: &ServiceName,
        batch: usize,
        reason: &str,
    ) -> Result<(), Refusal> {
        let stage_name = self.stage_name(stage);
        if self.phase != Phase::Forward || stage != self.stage {
            return refuse(format!("{service} in stage {stage_name} is not rolling forward"));
        }
        let run = self.service_mut(stage, service)?;
        let Some(spec) = run.batches.get(batch) else {
            return refuse(no_batch(service, batch, run.batches.len()));
        };
        // What `decide` holds: a host of this batch or of an earlier one (retried)
        // waits to deploy.
        let waits =
            run.batches[..=batch].iter().flat_map(|b| &b.hosts).any(|h| run.hosts.get(h) == Some(&HostState::Waiting));
        if run.state != ServiceState::Deploying || batch != run.batch || !waits {
            return refuse(format!("batch {batch} of {service} is not about to start"));
        }
        let batch_name = spec.name.clone();
        run.reason = reason.to_owned();
        run.deadline_unix_ms = 0;
        let e = self.record(at, EventKind::WindowHeld, text::window_held(service, &batch_name, &stage_name, reason));
        e.stage = stage_name;
        e.services = vec![service.clone()];
        e.batch = batch_name;
        Ok(())
    }

    /// The deployed hosts of the deploying batch are sent bake steps (one argument per
    /// field of the fact, and the actions).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn bake_started(
        &mut self,
        at: i64,
        stage: usize,
        service: &ServiceName,
        batch: usize,
        duration_ms: u64,
        dispatches: &[Dispatch],
        out: &mut Vec<Action>,
    ) -> Result<(), Refusal> {
        let stage_name = self.stage_name(stage);
        // Every check before the first change: a refused fact changes nothing.
        let run = self.service_in(stage, service)?;
        if run.state != ServiceState::Deploying || run.batch != batch {
            return refuse(format!("{service} batch {batch} is not deploying"));
        }
        let Some(spec) = run.batches.get(batch) else {
            return refuse(no_batch(service, batch, run.batches.len()));
        };
        let mut baking = BTreeSet::new();
        for d in dispatches {
            // A host sent two bake steps: the second finds it baking already.
            if run.hosts.get(&d.host) != Some(&HostState::Deployed) || !baking.insert(&d.host) {
                return refuse(format!("{} is not deployed", d.host));
            }
        }
        let batch_name = spec.name.clone();
        let run = self.service_mut(stage, service)?;
        for d in dispatches {
            run.hosts.insert(d.host.clone(), HostState::Baking(d.command_id.clone()));
        }
        run.state = ServiceState::Baking;
        let version = run.version.clone();
        self.add_steps(at, stage, dispatches, || StepKind::Bake(service.clone(), duration_ms), out);
        let e =
            self.record(at, EventKind::BakeStarted, text::bake_started(service, &version, &batch_name, duration_ms));
        e.stage = stage_name;
        e.services = vec![service.clone()];
        e.batch = batch_name;
        e.command_ids = dispatches.iter().map(|d| d.command_id.clone()).collect();
        e.hosts = dispatches.iter().map(|d| d.host.clone()).collect();
        Ok(())
    }

    /// The running batch is deployed and baked: the service moves on to the next one.
    pub(super) fn batch_done(
        &mut self,
        at: i64,
        stage: usize,
        service: &ServiceName,
        batch: usize,
    ) -> Result<(), Refusal> {
        let stage_name = self.stage_name(stage);
        let run = self.service_mut(stage, service)?;
        if !matches!(run.state, ServiceState::Deploying | ServiceState::Baking) || run.batch != batch {
            return refuse(format!("{service} batch {batch} is not running"));
        }
        let Some(spec) = run.batches.get(batch) else {
            return refuse(no_batch(service, batch, run.batches.len()));
        };
        let batch_name = spec.name.clone();
        for state in run.hosts.values_mut() {
            if *state == HostState::Deployed {
                *state = HostState::Done;
            }
        }
        run.state = ServiceState::Deploying;
        run.batch = batch + 1;
        run.deadline_unix_ms = deadline(at, run.progress_deadline_ms);
        let message = text::batch_done(service, &run.version, &batch_name, run.hosts_done(), run.hosts.len());
        let e = self.record(at, EventKind::BatchDone, message);
        e.stage = stage_name;
        e.services = vec![service.clone()];
        e.batch = batch_name;
        Ok(())
    }

    /// A service with no batch left is done in a stage.
    pub(super) fn service_done(&mut self, at: i64, stage: usize, service: &ServiceName) -> Result<(), Refusal> {
        let stage_name = self.stage_name(stage);
        let run = self.service_mut(stage, service)?;
        if run.state != ServiceState::Deploying || run.batch != run.batches.len() {
            return refuse(format!("{service} has batches left"));
        }
        run.state = ServiceState::Done;
        run.finished_unix_ms = at;
        run.deadline_unix_ms = 0;
        let message = text::service_done(service, &run.version, &stage_name, run.failed_hosts().count());
        let version = run.version.clone();
        let e = self.record(at, EventKind::ServiceDone, message);
        e.stage = stage_name;
        e.services = vec![service.clone()];
        e.version = version;
        Ok(())
    }

    /// A running service fails, and with it its stage: a failure for the engine to
    /// react to.
    pub(super) fn service_failed(
        &mut self,
        at: i64,
        stage: usize,
        service: &ServiceName,
        reason: &str,
    ) -> Result<(), Refusal> {
        let stage_name = self.stage_name(stage);
        let st = self.stage_mut(stage)?;
        let Some(run) = st.services.get_mut(service) else {
            return refuse(format!("{service} is not in stage {stage}"));
        };
        if !matches!(run.state, ServiceState::Deploying | ServiceState::Baking | ServiceState::Migrating) {
            return refuse(format!("{service} is not running"));
        }
        run.state = ServiceState::Failed;
        run.finished_unix_ms = at;
        run.deadline_unix_ms = 0;
        run.reason = reason.to_owned();
        st.state = StageState::Failed;
        self.failure = Some(Failure { stage, services: vec![service.clone()], reason: reason.to_owned() });
        let e = self.record(at, EventKind::ServiceFailed, text::service_failed(service, &stage_name, reason));
        e.stage = stage_name;
        e.services = vec![service.clone()];
        Ok(())
    }

    /// A pending gate's check is sent.
    pub(super) fn gate_started(
        &mut self,
        at: i64,
        stage: usize,
        gate: &str,
        dispatch: &Dispatch,
        out: &mut Vec<Action>,
    ) -> Result<(), Refusal> {
        let stage_name = self.stage_name(stage);
        let state =
            self.stage_mut(stage)?.gates.get_mut(gate).ok_or_else(|| Refusal::Invalid(format!("no gate {gate}")))?;
        if *state != GateState::Pending {
            return refuse(format!("gate {gate} already started"));
        }
        *state = GateState::Running(dispatch.command_id.clone());
        self.add_steps(at, stage, std::slice::from_ref(dispatch), || StepKind::Check(gate.to_owned()), out);
        let e = self.record(at, EventKind::GateStarted, text::gate_started(gate, &dispatch.host));
        e.stage = stage_name;
        e.gate = gate.to_owned();
        e.hosts = vec![dispatch.host.clone()];
        e.command_ids = vec![dispatch.command_id.clone()];
        Ok(())
    }

    /// A gate that has not ended passes or fails; failing fails the services it runs
    /// after, and its stage.
    pub(super) fn gate_done(
        &mut self,
        at: i64,
        stage: usize,
        gate: &str,
        after: &[ServiceName],
        passed: bool,
        reason: &str,
    ) -> Result<(), Refusal> {
        let stage_name = self.stage_name(stage);
        let st = self.stage_mut(stage)?;
        let state = st.gates.get_mut(gate).ok_or_else(|| Refusal::Invalid(format!("no gate {gate}")))?;
        if matches!(state, GateState::Passed | GateState::Failed(_) | GateState::Cancelled) {
            return refuse(format!("gate {gate} already ended"));
        }
        *state = if passed { GateState::Passed } else { GateState::Failed(reason.to_owned()) };
        if !passed {
            let why = text::gate_failure(gate, reason);
            for name in after {
                if let Some(svc) = st.services.get_mut(name) {
                    svc.state = ServiceState::Failed;
                    svc.reason = why.clone();
                    svc.finished_unix_ms = at;
                }
            }
            st.state = StageState::Failed;
            self.failure = Some(Failure { stage, services: after.to_vec(), reason: why });
        }
        let (kind, message) = if passed {
            (EventKind::GatePassed, text::gate_passed(gate, &stage_name, reason))
        } else {
            (EventKind::GateFailed, text::gate_failed(gate, &stage_name, reason))
        };
        let e = self.record(at, kind, message);
        e.stage = stage_name;
        e.gate = gate.to_owned();
        Ok(())
    }

    /// A gate (pending or running), or a stage, waits for a human.
    pub(super) fn approval_required(
        &mut self,
        at: i64,
        kind: ApprovalKind,
        name: &str,
        stage: usize,
    ) -> Result<(), Refusal> {
        if self.approvals.iter().any(|a| a.kind == kind && a.name == name && a.stage == stage) {
            return refuse(format!("approval of {kind} {name} is already required"));
        }
        let stage_name = self.stage_name(stage);
        match kind {
            ApprovalKind::Gate => {
                let gates = &mut self.stage_mut(stage)?.gates;
                match gates.get_mut(name) {
                    Some(state) if matches!(state, GateState::Pending | GateState::Running(_)) => {
                        *state = GateState::AwaitingApproval;
                    }
                    _ => return refuse(format!("gate {name} cannot wait for approval now")),
                }
            }
            ApprovalKind::Stage => self.stage_mut(stage)?.state = StageState::AwaitingApproval,
        }
        self.approvals.push(Approval { kind, name: name.to_owned(), stage, since_unix_ms: at });
        let e = self.record(at, EventKind::ApprovalRequired, text::approval_required(kind, name, &stage_name));
        e.stage = stage_name;
        if kind == ApprovalKind::Gate {
            e.gate = name.to_owned();
        }
        Ok(())
    }

    /// Every service and gate of a running stage is done; the next stage may wait
    /// for a human.
    pub(super) fn stage_done(&mut self, at: i64, stage: usize, await_approval: bool) -> Result<(), Refusal> {
        let st = self.stage_mut(stage)?;
        if st.state != StageState::Running {
            return refuse(format!("stage {} is not running", st.name));
        }
        st.state = if await_approval { StageState::AwaitingApproval } else { StageState::Done };
        let name = st.name.clone();
        let e = self.record(at, EventKind::StageDone, text::stage_done(&name));
        e.stage = name.clone();
        if await_approval {
            self.approvals.push(Approval { kind: ApprovalKind::Stage, name: name.clone(), stage, since_unix_ms: at });
            let e = self.record(at, EventKind::ApprovalRequired, text::stage_awaits_approval(&name));
            e.stage = name;
        }
        Ok(())
    }
}

/// Why a fact naming batch `batch` of a service with `len` batches is refused.
fn no_batch(service: &ServiceName, batch: usize, len: usize) -> String {
    format!("batch {batch} of {service} does not exist ({service} has {})", count(len, "batch", "batches"))
}
