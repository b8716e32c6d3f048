//! Facts a run must refuse without changing anything, and facts no run may panic on.
//!
//! A run is applied on every replica from the committed log, so a refused fact must
//! leave it exactly as it was, and no fact, however malformed (a buggy or older
//! leader may commit one), may panic: each case drives a release to the point where
//! the fact applies, applies it, and compares the run with a clone taken before; a
//! deterministic fuzzer then throws generated facts at every state of a release.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::Duration;

use flotilla_engine::{
    Approval, ApprovalKind, CommandId, Context, Dispatch, Env, Fact, HostState, Outcome, Phase, Refusal,
    RollbackAction, Run, ServiceState, StepKind, Steps, Terminal, decide, rollback_decision,
};
use flotilla_shared::fixtures::{fleet, host, release, service};
use flotilla_shared::model::{HostCount, HostId, RollbackScope, ServiceName};
use flotilla_shared::plan::Plan;
use flotilla_shared::{DepKind, Fleet, ReleaseSpec};

const RELEASE: &str = "r-1";

/// A release driven one fact at a time: the engine's decisions first, then agents
/// that answer every step with success, then operators that approve what waits.
struct Drive {
    plan: Plan,
    fleet: Fleet,
    run: Run,
    now: i64,
    /// Every state the run went through, the first one included.
    states: Vec<Run>,
    /// The fact applied to each state (`facts[i]` took `states[i]` to `states[i + 1]`).
    facts: Vec<Fact>,
}

impl Drive {
    fn new(spec: &ReleaseSpec, fleet: Fleet) -> Self {
        let plan = Plan::build(spec, Some(&fleet)).expect("the spec plans");
        Self { plan, fleet, run: Run::new(), now: 1_000_000, states: vec![Run::new()], facts: Vec::new() }
    }

    fn apply(&mut self, fact: &Fact) {
        if let Err(e) = self.run.apply(self.now, fact) {
            panic!("a fact of the drive does not apply: {fact}: {e}");
        }
        self.states.push(self.run.clone());
        self.facts.push(fact.clone());
    }

    /// The next fact of the release, if anything is left to happen.
    fn next_fact(&self) -> Option<Fact> {
        let online = |_: &HostId| true;
        let ctx = Context { release: RELEASE, plan: &self.plan, fleet: &self.fleet };
        let env = Env::new(self.now, &online);
        if let Some(f) = decide(&self.run, ctx, &env).facts.into_iter().next() {
            return Some(f);
        }
        if let Some((id, _)) = self.run.outstanding().next() {
            return Some(Fact::StepReported {
                command_id: id.clone(),
                outcome: Outcome::Succeeded,
                reason: String::new(),
            });
        }
        let a = self.run.approvals.first()?;
        Some(Fact::Approved { kind: a.kind, name: a.name.clone(), actor: "alice".into(), comment: String::new() })
    }

    /// Applies the release's facts one by one until `stop` holds of the run.
    fn until(&mut self, what: &str, stop: impl Fn(&Run) -> bool) -> &mut Self {
        while !stop(&self.run) {
            let Some(fact) = self.next_fact() else {
                panic!("the release ended before {what}: {:#?}", self.run.events)
            };
            self.apply(&fact);
        }
        self
    }

    /// Runs the release to its end.
    fn settle(&mut self) -> &mut Self {
        while let Some(fact) = self.next_fact() {
            self.apply(&fact);
        }
        self
    }

    /// A step id the release has not used.
    fn fresh(&self, k: u64) -> CommandId {
        CommandId::new(RELEASE, self.run.next_command + k)
    }

    /// An operator's rollback of the whole release.
    fn roll_back(&mut self) -> &mut Self {
        let ctx = Context { release: RELEASE, plan: &self.plan, fleet: &self.fleet };
        let fact =
            rollback_decision(&self.run, ctx, self.now, &[], RollbackScope::Release, "ops", "bad numbers".into());
        self.apply(&fact);
        self
    }
}

fn hosts(n: usize, services: &[(&str, &str)]) -> Fleet {
    fleet((1..=n).map(|i| host(&format!("h{i}"), &[], services)).collect())
}

/// web on `n` hosts: a canary of one host, then the rest, each batch baked for 30s.
fn web_release(n: usize) -> Drive {
    let mut web = service("web", "2.0.0");
    web.policy.canary = HostCount::Hosts(1);
    web.policy.batches = vec![HostCount::ALL];
    web.policy.bake = Duration::from_secs(30);
    Drive::new(&release("r").with(web), hosts(n, &[("web", "1.0.0")]))
}

fn web(run: &Run) -> Option<&flotilla_engine::ServiceRun> {
    run.service(0, &ServiceName::from("web"))
}

fn dispatch(host: &str, command_id: CommandId) -> Dispatch {
    Dispatch { host: HostId::from(host), command_id }
}

/// Applies `fact`, which must be refused as invalid with a reason containing
/// `phrase`, leaving the run exactly as it was.
#[track_caller]
fn assert_refused(run: &mut Run, fact: &Fact, phrase: &str) {
    let before = run.clone();
    match run.apply(2_000_000, fact) {
        Err(Refusal::Invalid(why)) => assert!(why.contains(phrase), "{fact}: refused with {why:?}, not {phrase:?}"),
        other => panic!("{fact}: {other:?}, not refused as invalid"),
    }
    assert!(*run == before, "the refused fact {fact} changed the run");
}

#[test]
fn a_bake_with_one_host_not_deployed_marks_no_host_baking() {
    let mut d = web_release(3);
    d.until("the canary is deployed", |r| {
        web(r)
            .is_some_and(|w| w.state == ServiceState::Deploying && w.hosts.values().any(|h| *h == HostState::Deployed))
    });
    let canary = web(&d.run).unwrap().hosts.iter().find(|(_, s)| **s == HostState::Deployed).unwrap().0.clone();
    let bake =
        |dispatches| Fact::BakeStarted { stage: 0, service: "web".into(), batch: 0, duration_ms: 30_000, dispatches };
    // The canary is deployed; h3 still waits for its batch.
    let fact = bake(vec![dispatch(canary.as_str(), d.fresh(0)), dispatch("h3", d.fresh(1))]);
    assert_refused(&mut d.run, &fact, "h3 is not deployed");
    // The same host twice: the second step would find it baking already.
    let fact = bake(vec![dispatch(canary.as_str(), d.fresh(0)), dispatch(canary.as_str(), d.fresh(1))]);
    assert_refused(&mut d.run, &fact, "is not deployed");
    // The run goes on as if nothing happened.
    d.settle();
    assert_eq!(d.run.phase, Phase::Finished(Terminal::Succeeded));
}

#[test]
fn a_bake_or_a_batch_done_of_a_batch_past_the_last_is_refused() {
    let mut d = web_release(3);
    d.until("every batch is done", |r| {
        web(r).is_some_and(|w| w.state == ServiceState::Deploying && w.batch == w.batches.len())
    });
    let len = web(&d.run).unwrap().batches.len();
    assert_eq!(len, 2, "canary and the rest");
    let bake =
        Fact::BakeStarted { stage: 0, service: "web".into(), batch: len, duration_ms: 30_000, dispatches: vec![] };
    assert_refused(&mut d.run, &bake, "batch 2 of web does not exist (web has 2 batches)");
    let done = Fact::BatchDone { stage: 0, service: "web".into(), batch: len };
    assert_refused(&mut d.run, &done, "batch 2 of web does not exist (web has 2 batches)");
    let start = Fact::BatchStarted { stage: 0, service: "web".into(), batch: len, dispatches: vec![], offline: vec![] };
    assert_refused(&mut d.run, &start, "batch 2 of web does not exist (web has 2 batches)");
    d.settle();
    assert_eq!(d.run.phase, Phase::Finished(Terminal::Succeeded));
}

#[test]
fn a_report_of_a_step_whose_service_is_not_in_its_stage_records_no_result() {
    let mut d = web_release(2);
    d.until("the canary deploys", |r| r.outstanding().any(|(_, s)| matches!(s.kind, StepKind::Deploy(_))));
    let (id, _) = d.run.outstanding().next().map(|(i, s)| (i.clone(), s.clone())).unwrap();
    // A run whose step names what its stages do not hold (a step map restored from
    // elsewhere): the report is refused, and the step keeps no result.
    let with_step = |run: &Run, change: &dyn Fn(&mut flotilla_engine::StepRecord)| {
        let mut run = run.clone();
        let mut all: std::collections::BTreeMap<_, _> = run.steps.iter().map(|(i, s)| (i.clone(), s.clone())).collect();
        change(all.get_mut(&id).unwrap());
        run.steps = Steps::from(all);
        run
    };
    let report = Fact::StepReported { command_id: id.clone(), outcome: Outcome::Succeeded, reason: String::new() };
    let mut ghost = with_step(&d.run, &|s| s.kind = StepKind::Deploy("ghost".into()));
    assert_refused(&mut ghost, &report, "ghost is not in stage 0");
    let mut later = with_step(&d.run, &|s| s.stage = 5);
    assert_refused(&mut later, &report, "stage 5 has not started");
    let mut baked = with_step(&d.run, &|s| s.kind = StepKind::Bake("ghost".into(), 1_000));
    assert_refused(&mut baked, &report, "ghost is not in stage 0");
    // The step as it is takes its report.
    d.run.apply(d.now, &report).expect("the report applies");
}

#[test]
fn a_rollback_batch_sent_for_a_pause_leaves_the_rollback_as_it_was() {
    let mut d = web_release(2);
    d.until("the canary deploys", |r| r.outstanding().next().is_some());
    d.apply(&Fact::RollbackDecided {
        actor: "ops".into(),
        reason: "bad numbers".into(),
        members: vec![("web".into(), "it failed".into())],
        actions: vec![
            RollbackAction::Pause("web".into(), "past its rollback window".into()),
            RollbackAction::Rollback("web".into()),
        ],
        cancelled: vec![],
    });
    let fact = Fact::RollbackStarted { action: 0, batch: 0, dispatches: vec![dispatch("h1", d.fresh(0))] };
    assert_refused(&mut d.run, &fact, "rollback action 0 (web) is a pause");
    let rb = d.run.rollback.as_ref().unwrap();
    assert_eq!((rb.batch, rb.dispatched.len()), (None, 0));
}

#[test]
fn a_rollback_action_past_the_last_is_refused() {
    let mut d = Drive::new(
        &release("r").with(service("api", "2.0.0")).with(service("web", "2.0.0").depends("api", DepKind::Hard)),
        hosts(2, &[("api", "1.0.0"), ("web", "1.0.0")]),
    );
    d.settle().roll_back();
    d.until("every rollback action is done", |r| {
        r.phase == Phase::RollingBack && r.rollback.as_ref().is_some_and(|rb| rb.position == rb.actions.len())
    });
    assert_eq!(d.run.rollback.as_ref().unwrap().actions.len(), 2);
    let done = Fact::RollbackActionDone { action: 2 };
    assert_refused(&mut d.run, &done, "rollback action 2 does not exist (the rollback has 2 actions)");
    let started = Fact::RollbackStarted { action: 2, batch: 0, dispatches: vec![] };
    assert_refused(&mut d.run, &started, "rollback action 2 does not exist (the rollback has 2 actions)");
    d.settle();
    assert_eq!(d.run.phase, Phase::Finished(Terminal::RolledBack));

    // A rollback of nothing: no action is current from the start.
    let mut d = web_release(2);
    d.until("the canary deploys", |r| r.outstanding().next().is_some());
    d.apply(&Fact::RollbackDecided {
        actor: "ops".into(),
        reason: "stop".into(),
        members: vec![],
        actions: vec![],
        cancelled: vec![],
    });
    assert_refused(&mut d.run, &Fact::RollbackActionDone { action: 0 }, "the rollback has 0 actions");
}

#[test]
fn an_approval_whose_stage_is_missing_stays_pending() {
    let mut d = web_release(2);
    d.until("the canary deploys", |r| r.outstanding().next().is_some());
    // A run holding an approval of a stage it has not started (restored from
    // elsewhere): approving it is refused, and it stays pending.
    d.run.approvals.push(Approval { kind: ApprovalKind::Gate, name: "signoff".into(), stage: 3, since_unix_ms: 1 });
    let fact = Fact::Approved {
        kind: ApprovalKind::Gate,
        name: "signoff".into(),
        actor: "bob".into(),
        comment: String::new(),
    };
    assert_refused(&mut d.run, &fact, "stage 3 has not started");
}

#[test]
fn a_step_id_at_the_end_of_the_range_does_not_overflow_the_counter() {
    let mut d = web_release(2);
    d.until("the canary is about to start", |r| {
        web(r).is_some_and(|w| w.state == ServiceState::Deploying && r.steps.is_empty())
    });
    let next = d.run.next_command;
    let canary = web(&d.run).unwrap().batches[0].hosts[0].clone();
    let fact = Fact::BatchStarted {
        stage: 0,
        service: "web".into(),
        batch: 0,
        dispatches: vec![dispatch(canary.as_str(), CommandId::new(RELEASE, u64::MAX))],
        offline: vec![],
    };
    d.run.apply(d.now, &fact).expect("the batch starts");
    assert_eq!(d.run.next_command, next, "an id the engine never hands out leaves the counter alone");
}

/// A small deterministic generator (xorshift64*): the same cases on every run.
struct Gen(u64);

impl Gen {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    fn coin(&mut self) -> bool {
        self.next() & 1 == 1
    }

    fn pick<T: Clone>(&mut self, from: &[T]) -> T {
        from[self.below(from.len())].clone()
    }
}

/// Names and numbers taken from the run (so that facts get past the first checks)
/// and some it does not hold.
struct Pool {
    stages: Vec<usize>,
    services: Vec<ServiceName>,
    hosts: Vec<HostId>,
    ids: Vec<CommandId>,
    gates: Vec<String>,
    indexes: Vec<usize>,
}

impl Pool {
    fn of(run: &Run) -> Self {
        let mut services: Vec<ServiceName> = vec!["ghost".into()];
        let mut gates = vec!["ghost-gate".to_owned()];
        let mut indexes = vec![0, 1, 2, 3, usize::MAX];
        for st in &run.stages {
            services.extend(st.services.keys().cloned());
            gates.extend(st.gates.keys().cloned());
            for svc in st.services.values() {
                indexes.extend([svc.batch, svc.batches.len(), svc.batches.len() + 1]);
            }
        }
        if let Some(rb) = &run.rollback {
            indexes.extend([rb.position, rb.actions.len(), rb.actions.len() + 1]);
            indexes.extend(rb.batch.map(|b| b + 1));
        }
        let mut ids: Vec<CommandId> = run.steps.iter().map(|(id, _)| id.clone()).collect();
        ids.extend([
            CommandId::new(RELEASE, run.next_command),
            CommandId::new(RELEASE, run.next_command + 1),
            CommandId::new(RELEASE, u64::MAX),
            CommandId::new("other", 1),
        ]);
        let mut approvals: Vec<String> = run.approvals.iter().map(|a| a.name.clone()).collect();
        gates.append(&mut approvals);
        gates.extend(run.stages.iter().map(|s| s.name.clone()));
        Self {
            stages: vec![0, 1, 2, run.stage, run.stages.len(), usize::MAX],
            services,
            hosts: ["h1", "h2", "h3", "ghost-host"].map(HostId::from).to_vec(),
            ids,
            gates,
            indexes,
        }
    }
}

impl Pool {
    /// A step id: one the run holds, or (half the time) one of the edges (the next
    /// ones, the last one a `u64` holds, another release's).
    fn id(&self, g: &mut Gen) -> CommandId {
        let edges = &self.ids[self.ids.len() - 4..];
        if g.coin() { g.pick(edges) } else { g.pick(&self.ids) }
    }
}

fn dispatches(g: &mut Gen, p: &Pool) -> Vec<Dispatch> {
    (0..g.below(4)).map(|_| Dispatch { host: g.pick(&p.hosts), command_id: g.pick(&p.ids) }).collect()
}

fn rollback_actions(g: &mut Gen, p: &Pool) -> Vec<RollbackAction> {
    (0..g.below(4))
        .map(|_| match g.below(3) {
            0 => RollbackAction::Rollback(g.pick(&p.services)),
            1 => RollbackAction::MigrateDown(g.pick(&p.services)),
            _ => RollbackAction::Pause(g.pick(&p.services), "why".into()),
        })
        .collect()
}

/// A fact of any kind, its fields drawn from `p`.
fn any_fact(g: &mut Gen, p: &Pool) -> Fact {
    let kinds = [ApprovalKind::Gate, ApprovalKind::Stage];
    let outcomes = [Outcome::Succeeded, Outcome::Failed, Outcome::Cancelled, Outcome::Refused, Outcome::Interrupted];
    let terminals = [Terminal::Succeeded, Terminal::RolledBack, Terminal::Failed, Terminal::Aborted];
    let durations = [0, 30_000, u64::MAX];
    let actor = if g.coin() { flotilla_engine::ENGINE } else { "ops" }.to_owned();
    match g.below(25) {
        0 => Fact::StageStarted {
            stage: g.pick(&p.stages),
            name: g.pick(&p.gates),
            services: p.services.iter().filter(|_| g.coin()).cloned().collect(),
            gates: p.gates.iter().filter(|_| g.coin()).cloned().collect(),
        },
        1 => {
            let batches = (0..g.below(3))
                .map(|i| flotilla_engine::BatchSpec {
                    name: format!("b{i}"),
                    hosts: p.hosts.iter().filter(|_| g.coin()).cloned().collect(),
                })
                .collect();
            Fact::ServiceStarted {
                stage: g.pick(&p.stages),
                service: g.pick(&p.services),
                version: "9.0.0".into(),
                batches,
                skipped: p.hosts.iter().filter(|_| g.coin()).cloned().collect(),
                from: p.hosts.iter().filter(|_| g.coin()).map(|h| (h.clone(), Some("1.0.0".into()))).collect(),
                progress_deadline_ms: g.pick(&durations),
            }
        }
        2 => Fact::MigrationStarted {
            stage: g.pick(&p.stages),
            service: g.pick(&p.services),
            dispatch: Dispatch { host: g.pick(&p.hosts), command_id: g.pick(&p.ids) },
        },
        3 => Fact::BatchStarted {
            stage: g.pick(&p.stages),
            service: g.pick(&p.services),
            batch: g.pick(&p.indexes),
            dispatches: dispatches(g, p),
            offline: p.hosts.iter().filter(|_| g.below(4) == 0).cloned().collect(),
        },
        4 => Fact::BakeStarted {
            stage: g.pick(&p.stages),
            service: g.pick(&p.services),
            batch: g.pick(&p.indexes),
            duration_ms: g.pick(&durations),
            dispatches: dispatches(g, p),
        },
        5 => Fact::BatchDone { stage: g.pick(&p.stages), service: g.pick(&p.services), batch: g.pick(&p.indexes) },
        6 => Fact::ServiceDone { stage: g.pick(&p.stages), service: g.pick(&p.services) },
        7 => Fact::ServiceFailed { stage: g.pick(&p.stages), service: g.pick(&p.services), reason: "boom".into() },
        8..=10 => Fact::StepReported { command_id: g.pick(&p.ids), outcome: g.pick(&outcomes), reason: "why".into() },
        11 => Fact::GateStarted {
            stage: g.pick(&p.stages),
            gate: g.pick(&p.gates),
            dispatch: Dispatch { host: g.pick(&p.hosts), command_id: g.pick(&p.ids) },
        },
        12 => Fact::GateDone {
            stage: g.pick(&p.stages),
            gate: g.pick(&p.gates),
            after: p.services.iter().filter(|_| g.coin()).cloned().collect(),
            passed: g.coin(),
            reason: "checked".into(),
        },
        13 => Fact::ApprovalRequired { kind: g.pick(&kinds), name: g.pick(&p.gates), stage: g.pick(&p.stages) },
        14 => Fact::Approved { kind: g.pick(&kinds), name: g.pick(&p.gates), actor, comment: String::new() },
        15 => Fact::StageDone { stage: g.pick(&p.stages), await_approval: g.coin() },
        16 => Fact::Paused { actor, reason: "hold on".into() },
        17 => Fact::Resumed { actor, reason: "go on".into() },
        18 => Fact::Aborted { actor, reason: "enough".into() },
        19 => Fact::RollbackDecided {
            actor,
            reason: "back".into(),
            members: p.services.iter().filter(|_| g.coin()).map(|s| (s.clone(), "why".into())).collect(),
            actions: rollback_actions(g, p),
            cancelled: p.services.iter().filter(|_| g.coin()).cloned().collect(),
        },
        20 | 21 => Fact::RollbackStarted {
            action: g.pick(&p.indexes),
            batch: g.pick(&p.indexes),
            dispatches: dispatches(g, p),
        },
        22 => Fact::RollbackActionDone { action: g.pick(&p.indexes) },
        23 => Fact::Finished { terminal: g.pick(&terminals), reason: "the end".into() },
        _ => match g.below(5) {
            0 => Fact::LeaderChanged { node: g.next(), resent: vec![g.pick(&p.ids)] },
            1 => Fact::Noted { actor, text: "a note".into() },
            2 => Fact::HostRetried { host: g.pick(&p.hosts), actor, reason: "try again".into() },
            3 => Fact::WindowHeld {
                stage: g.pick(&p.stages),
                service: g.pick(&p.services),
                batch: g.pick(&p.indexes),
                reason: "held by freeze f".into(),
                until_unix_ms: g.coin().then_some(5_000),
            },
            _ => Fact::HostExcluded { host: g.pick(&p.hosts), actor, reason: "bad disk".into() },
        },
    }
}

/// `fact` with one field changed: a near miss of a fact that applies, which gets
/// past the first checks of its handler to the later ones.
fn near_miss(g: &mut Gen, p: &Pool, fact: &Fact) -> Fact {
    let mut f = fact.clone();
    let index = |g: &mut Gen, i: &mut usize| {
        *i = match g.below(3) {
            0 => i.wrapping_add(1),
            1 => i.wrapping_sub(1),
            _ => g.pick(&p.indexes),
        }
    };
    let mistake = g.below(4);
    let dispatches = |g: &mut Gen, ds: &mut Vec<Dispatch>| match (mistake, ds.is_empty()) {
        (0, _) | (_, true) => ds.push(Dispatch { host: g.pick(&p.hosts), command_id: g.pick(&p.ids) }),
        (1, false) => ds.push(ds[g.below(ds.len())].clone()),
        (2, false) => {
            let at = g.below(ds.len());
            ds[at].host = g.pick(&p.hosts);
        }
        _ => {
            let at = g.below(ds.len());
            ds[at].command_id = p.id(g);
        }
    };
    match &mut f {
        Fact::MigrationStarted { dispatch, .. } | Fact::GateStarted { dispatch, .. } if g.coin() => {
            if g.coin() {
                dispatch.host = g.pick(&p.hosts)
            } else {
                dispatch.command_id = p.id(g)
            }
        }
        Fact::ServiceStarted { stage, service, .. }
        | Fact::MigrationStarted { stage, service, .. }
        | Fact::ServiceDone { stage, service }
        | Fact::ServiceFailed { stage, service, .. } => {
            if g.coin() {
                index(g, stage)
            } else {
                *service = g.pick(&p.services)
            }
        }
        Fact::BatchStarted { stage, service, batch, dispatches: ds, .. }
        | Fact::BakeStarted { stage, service, batch, dispatches: ds, .. } => match g.below(4) {
            0 => index(g, stage),
            1 => *service = g.pick(&p.services),
            2 => index(g, batch),
            _ => dispatches(g, ds),
        },
        Fact::BatchDone { stage, service, batch } => match g.below(3) {
            0 => index(g, stage),
            1 => *service = g.pick(&p.services),
            _ => index(g, batch),
        },
        Fact::StepReported { command_id, outcome, .. } => {
            if g.coin() {
                *command_id = p.id(g);
            } else {
                *outcome = [Outcome::Failed, Outcome::Interrupted, Outcome::Cancelled][g.below(3)];
            }
        }
        Fact::GateStarted { stage, gate, .. } | Fact::GateDone { stage, gate, .. } => {
            if g.coin() {
                index(g, stage)
            } else {
                *gate = g.pick(&p.gates)
            }
        }
        Fact::StageStarted { stage, .. } | Fact::StageDone { stage, .. } => index(g, stage),
        Fact::ApprovalRequired { stage, name, .. } => {
            if g.coin() {
                index(g, stage)
            } else {
                *name = g.pick(&p.gates)
            }
        }
        Fact::RollbackStarted { action, batch, dispatches: ds } => match g.below(3) {
            0 => index(g, action),
            1 => index(g, batch),
            _ => dispatches(g, ds),
        },
        Fact::RollbackActionDone { action } => index(g, action),
        Fact::RollbackDecided { actions, .. } => *actions = rollback_actions(g, p),
        _ => return any_fact(g, p),
    }
    f
}

/// Every state a release goes through, each with the fact that comes next (a
/// migration, a gate, a stage approval, batches with bakes, then an operator's
/// rollback with a `migrate_down`).
fn states() -> Vec<(Run, Fact)> {
    let mut db = service("db", "2.0.0").migrations(true);
    db.policy.bake = Duration::ZERO;
    let mut web = service("web", "3.0.0").depends("db", DepKind::Hard);
    web.policy.canary = HostCount::Hosts(1);
    web.policy.batches = vec![HostCount::ALL];
    web.policy.bake = Duration::from_secs(5);
    let mut spec = release("r").with(db).with(web).gate("smoke", &["web"]).stages("cell", &["canary"]);
    spec.stages[0].approval = true;
    let mut f = hosts(3, &[("db", "1.0.0"), ("web", "2.0.0")]);
    f.hosts[0].labels.insert("cell".into(), "canary".into());
    let mut d = Drive::new(&spec, f);
    d.settle();
    assert_eq!(d.run.phase, Phase::Finished(Terminal::Succeeded), "{:#?}", d.run.events);
    d.roll_back().settle();
    assert_eq!(d.run.phase, Phase::Finished(Terminal::RolledBack), "{:#?}", d.run.events);
    d.states.into_iter().zip(d.facts).collect()
}

/// From every state of a release, sequences of facts (near misses of the fact that
/// comes next, and facts of any kind), each applied to the run the previous one left:
/// none panics, and a refused one leaves the run as it was.
#[test]
fn no_fact_panics_and_a_refused_one_changes_nothing_from_any_state_of_a_release() {
    let states = states();
    assert!(states.len() > 50, "{} states", states.len());
    let mut g = Gen(0x5eed_f1a7_a11a_0001);
    let (mut refused, mut applied) = (0, 0);
    for (i, (start, next)) in states.iter().enumerate() {
        for _ in 0..6 {
            let mut run = start.clone();
            for _ in 0..8 {
                let pool = Pool::of(&run);
                let fact = if g.coin() { near_miss(&mut g, &pool, next) } else { any_fact(&mut g, &pool) };
                let expect = match g.below(4) {
                    0 => Some(run.version),
                    1 => Some(run.version + 1),
                    _ => None,
                };
                let before = run.clone();
                let result = catch_unwind(AssertUnwindSafe(|| run.apply_committed(5_000_000, 7, expect, &fact)));
                match result {
                    Err(_) => panic!("state {i}: applying {fact:?} panicked; the run was {before:#?}"),
                    Ok(Err(why)) => {
                        refused += 1;
                        assert!(run == before, "state {i}: {fact:?} was refused ({why}) but changed the run");
                    }
                    Ok(Ok(_)) => applied += 1,
                }
            }
        }
    }
    assert!(refused > 100 && applied > 100, "{refused} refused, {applied} applied: the cases reach both");
}
