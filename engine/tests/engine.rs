//! The release engine without a network: releases driven through `decide` and
//! `Run::apply` by a simulated fleet that answers steps, asserting the order of
//! dispatches, rollback sets and their order, gates, approvals, windows and pauses.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use flotilla_engine::{
    Action, ApprovalKind, CommandId, Context, Env, EventKind, Fact, Outcome, Phase, RollbackAction, Run, ServiceState,
    StepKind, Terminal, decide, rollback_decision,
};
use flotilla_shared::fixtures::{fleet, host, release, service};
use flotilla_shared::model::{HostCount, HostId, Labels, OnFailure, RollbackScope, ServiceName};
use flotilla_shared::plan::Plan;
use flotilla_shared::window::{self, Effect, When, Window};
use flotilla_shared::{DepKind, Fleet, ReleaseSpec};

type Failing = Box<dyn Fn(&HostId, &StepKind) -> Option<String>>;

/// A release, its fleet, and agents that answer every step at once (unless held).
struct Sim {
    plan: Plan,
    fleet: Fleet,
    run: Run,
    now: i64,
    offline: BTreeSet<HostId>,
    failing: Failing,
    /// Steps of these services get no answer until released.
    held: BTreeSet<String>,
    facts: Vec<Fact>,
    executed: BTreeMap<CommandId, u32>,
    /// Deployment windows, evaluated at `now` as the leader does.
    windows: Vec<Window>,
}

impl Sim {
    fn new(spec: &ReleaseSpec, fleet: Fleet) -> Self {
        let plan = Plan::build(spec, Some(&fleet)).expect("the spec plans");
        Self {
            plan,
            fleet,
            run: Run::new(),
            now: 1_000_000,
            offline: BTreeSet::new(),
            failing: Box::new(|_, _| None),
            held: BTreeSet::new(),
            facts: Vec::new(),
            executed: BTreeMap::new(),
            windows: Vec::new(),
        }
    }

    fn failing(mut self, f: impl Fn(&HostId, &StepKind) -> Option<String> + 'static) -> Self {
        self.failing = Box::new(f);
        self
    }

    fn ctx(&self) -> Context<'_> {
        Context { release: "r-1", plan: &self.plan, fleet: &self.fleet }
    }

    fn decide(&self) -> flotilla_engine::Decision {
        let offline = self.offline.clone();
        let online = move |h: &HostId| !offline.contains(h);
        let hold = |svc: &ServiceName, hosts: &[HostId]| {
            let labels: Vec<&Labels> =
                hosts.iter().filter_map(|h| self.fleet.hosts.iter().find(|x| &x.id == h)).map(|x| &x.labels).collect();
            window::hold(&self.windows, svc, &labels, self.now)
        };
        decide(&self.run, self.ctx(), &Env::new(self.now, &online).with_windows(&hold))
    }

    /// Applies a fact, checking that its actions send exactly the steps it added and
    /// cancel exactly the steps it asked to stop.
    fn apply(&mut self, fact: Fact) {
        let before: BTreeMap<CommandId, bool> = self.run.steps.iter().map(|(id, s)| (id.clone(), s.cancel)).collect();
        let actions = match self.run.apply(self.now, &fact) {
            Ok(actions) => actions,
            Err(e) => panic!("the engine decided a fact that does not apply: {fact}: {e}"),
        };
        let added: Vec<Action> = (self.run.steps.iter())
            .filter(|(id, _)| !before.contains_key(*id))
            .map(|(id, s)| Action::Send { command: id.clone(), host: s.host.clone() })
            .collect();
        let stopped: Vec<Action> = (self.run.steps.iter())
            .filter(|(id, s)| s.cancel && before.get(*id) == Some(&false))
            .map(|(id, s)| Action::Cancel { command: id.clone(), host: s.host.clone() })
            .collect();
        let mut expected = [added, stopped].concat();
        let mut actions_sorted = actions;
        let key = |a: &Action| (matches!(a, Action::Cancel { .. }), a.command().clone());
        expected.sort_by_key(key);
        actions_sorted.sort_by_key(key);
        assert_eq!(actions_sorted, expected, "the actions of {fact}");
        self.facts.push(fact);
    }

    /// One round of decisions; whether there were any.
    fn round(&mut self) -> bool {
        let facts = self.decide().facts;
        let any = !facts.is_empty();
        for f in facts {
            self.apply(f);
        }
        any
    }

    fn service_of(kind: &StepKind) -> String {
        match kind {
            StepKind::Deploy(s)
            | StepKind::Bake(s, _)
            | StepKind::Migrate(s)
            | StepKind::MigrateDown(s)
            | StepKind::Rollback(s, _) => s.to_string(),
            StepKind::Check(g) => format!("gate:{g}"),
        }
    }

    /// Answers every outstanding step that is not held; whether there were any.
    fn answer(&mut self) -> bool {
        let due: Vec<(CommandId, HostId, StepKind)> = self
            .run
            .outstanding()
            .filter(|(_, s)| !self.held.contains(&Self::service_of(&s.kind)) && !self.offline.contains(&s.host))
            .map(|(id, s)| (id.clone(), s.host.clone(), s.kind.clone()))
            .collect();
        for (id, host, kind) in &due {
            let cancelled = self.run.steps[id].cancel;
            *self.executed.entry(id.clone()).or_default() += 1;
            let (outcome, reason) = match (self.failing)(host, kind) {
                _ if cancelled => (Outcome::Cancelled, String::new()),
                Some(why) => (Outcome::Failed, why),
                None => (Outcome::Succeeded, String::new()),
            };
            self.apply(Fact::StepReported { command_id: id.clone(), outcome, reason });
        }
        !due.is_empty()
    }

    /// Decides and answers until nothing moves.
    fn settle(&mut self) {
        for _ in 0..10_000 {
            if self.round() || self.answer() {
                continue;
            }
            return;
        }
        panic!("the release never settled");
    }

    fn operator(&mut self, fact: Fact) {
        self.apply(fact);
    }

    fn terminal(&self) -> Option<Terminal> {
        match self.run.phase {
            Phase::Finished(t) => Some(t),
            _ => None,
        }
    }

    /// `service@stage` in the order services started (skips included).
    fn started(&self) -> Vec<String> {
        self.facts
            .iter()
            .filter_map(|f| match f {
                Fact::ServiceStarted { stage, service, .. } => Some(format!("{service}@{stage}")),
                _ => None,
            })
            .collect()
    }

    /// Position of the first fact matching `pred`.
    fn position(&self, pred: impl Fn(&Fact) -> bool) -> Option<usize> {
        self.facts.iter().position(pred)
    }

    fn done_at(&self, service: &str, stage: usize) -> usize {
        self.position(|f| matches!(f, Fact::ServiceDone { stage: s, service: x } if *s == stage && x.as_str() == service))
            .or_else(|| {
                self.position(|f| matches!(f, Fact::ServiceStarted { stage: s, service: x, batches, .. } if *s == stage && x.as_str() == service && batches.is_empty()))
            })
            .unwrap_or_else(|| panic!("{service} never finished in stage {stage}"))
    }

    fn started_at(&self, service: &str, stage: usize) -> usize {
        self.position(
            |f| matches!(f, Fact::ServiceStarted { stage: s, service: x, .. } if *s == stage && x.as_str() == service),
        )
        .unwrap_or_else(|| panic!("{service} never started in stage {stage}"))
    }

    /// Rollback actions in the order they were sent.
    fn rollback_order(&self) -> Vec<String> {
        let Some(rb) = &self.run.rollback else { return Vec::new() };
        self.facts
            .iter()
            .filter_map(|f| match f {
                Fact::RollbackStarted { action, batch: 0, .. } => Some(rb.actions[*action].to_string()),
                _ => None,
            })
            .collect()
    }

    fn members(&self) -> Vec<String> {
        self.run.rollback.as_ref().map(|rb| rb.members.iter().map(|(s, _)| s.to_string()).collect()).unwrap_or_default()
    }

    fn events(&self, kind: EventKind) -> Vec<String> {
        self.run.events.iter().filter(|e| e.kind == kind).map(|e| e.message.clone()).collect()
    }

    fn state(&self, stage: usize, service: &str) -> ServiceState {
        self.run.service(stage, &ServiceName::from(service)).expect("service in stage").state
    }
}

fn hosts(n: usize, labels: &[(&str, &str)], services: &[(&str, &str)]) -> Vec<flotilla_shared::inventory::Host> {
    (1..=n).map(|i| host(&format!("h{i}"), labels, services)).collect()
}

fn quick(s: flotilla_shared::spec::ServiceSpec) -> flotilla_shared::spec::ServiceSpec {
    let mut s = s;
    s.policy.bake = Duration::ZERO;
    s
}

/// db <-data- ledger <-hard- payments <-config- web; search <-soft- web;
/// auth provides `auth-api` that payments requires; mail alone.
fn shop() -> ReleaseSpec {
    release("shop")
        .with(quick(service("db", "2.0.0").migrations(true)))
        .with(quick(service("ledger", "1.1.0").depends("db", DepKind::Data)))
        .with(quick(service("auth", "3.2.0").provides("auth-api", "3.2.0")))
        .with(quick(service("payments", "2.4.0").depends("ledger", DepKind::Hard).requires("auth-api", "^3.2")))
        .with(quick(service("search", "5.0.0")))
        .with(quick(service("web", "3.0.0").depends("payments", DepKind::Config).depends("search", DepKind::Soft)))
        .with(quick(service("mail", "1.0.0")))
}

fn shop_fleet() -> Fleet {
    let old = [
        ("db", "1.0.0"),
        ("ledger", "1.0.0"),
        ("auth", "3.1.0"),
        ("payments", "2.3.0"),
        ("search", "4.0.0"),
        ("web", "2.0.0"),
        ("mail", "0.9.0"),
    ];
    fleet(hosts(4, &[], &old))
}

const EDGES: &[(&str, &str)] =
    &[("db", "ledger"), ("ledger", "payments"), ("auth", "payments"), ("payments", "web"), ("search", "web")];

#[test]
fn every_service_starts_in_a_stage_only_after_its_dependencies_finished_there() {
    let spec = shop().stages("cell", &["canary"]);
    let mut f = shop_fleet();
    f.hosts[0].labels.insert("cell".into(), "canary".into());
    let mut sim = Sim::new(&spec, f);
    sim.settle();
    assert_eq!(sim.terminal(), Some(Terminal::Succeeded), "{:#?}", sim.run.events);
    for stage in 0..2 {
        for (dep, dependent) in EDGES {
            assert!(
                sim.done_at(dep, stage) < sim.started_at(dependent, stage),
                "{dependent} started before {dep} finished in stage {stage}: {:?}",
                sim.started()
            );
        }
    }
    // Stages in order: nothing of stage 1 before every service finished in stage 0.
    let last_of_stage_0 =
        ["db", "ledger", "auth", "payments", "search", "web", "mail"].iter().map(|s| sim.done_at(s, 0)).max().unwrap();
    let first_of_stage_1 = sim.started_at("db", 1).min(sim.started_at("mail", 1));
    assert!(last_of_stage_0 < first_of_stage_1);
    // Every host step ran exactly once; every host ends on the target.
    assert!(sim.executed.values().all(|&n| n == 1));
    let deploys = sim.run.steps.values().filter(|s| matches!(s.kind, StepKind::Deploy(_))).count();
    assert_eq!(deploys, 7 * 4);
}

#[test]
fn an_independent_chain_does_not_wait_for_a_slow_service_in_an_earlier_wave() {
    // slow (wave 1) <- after-slow (wave 2); fast (wave 1) <- after-fast (wave 2).
    let spec = release("r")
        .with(quick(service("slow", "1.0.0")))
        .with(quick(service("after-slow", "1.0.0").depends("slow", DepKind::Hard)))
        .with(quick(service("fast", "1.0.0")))
        .with(quick(service("after-fast", "1.0.0").depends("fast", DepKind::Hard)));
    let mut sim = Sim::new(&spec, fleet(hosts(2, &[], &[])));
    sim.held.insert("slow".into());
    sim.settle();
    assert_eq!(sim.state(0, "after-fast"), ServiceState::Done, "the critical path, not wave barriers");
    assert_eq!(sim.state(0, "slow"), ServiceState::Deploying);
    assert_eq!(sim.state(0, "after-slow"), ServiceState::Waiting);
    sim.held.clear();
    sim.settle();
    assert_eq!(sim.terminal(), Some(Terminal::Succeeded));
}

#[test]
fn batches_go_canary_then_cumulative_sizes_each_baked_and_hosts_at_target_are_skipped() {
    let mut web = service("web", "2.0.0");
    web.policy.canary = HostCount::Hosts(1);
    web.policy.batches = vec![HostCount::Percent(5_000), HostCount::ALL];
    web.policy.bake = Duration::from_secs(30);
    let spec = release("r").with(web);
    let mut all = hosts(10, &[], &[("web", "1.0.0")]);
    all.extend([host("h11", &[], &[("web", "2.0.0")]), host("h12", &[], &[("web", "2.0.0")])]);
    let mut sim = Sim::new(&spec, fleet(all));
    sim.settle();
    assert_eq!(sim.terminal(), Some(Terminal::Succeeded));
    let batches: Vec<(usize, usize)> = sim
        .facts
        .iter()
        .filter_map(|f| match f {
            Fact::BatchStarted { batch, dispatches, .. } => Some((*batch, dispatches.len())),
            _ => None,
        })
        .collect();
    assert_eq!(batches, [(0, 1), (1, 4), (2, 5)]);
    // Each batch bakes before the next starts.
    let kinds: Vec<&str> = sim
        .facts
        .iter()
        .filter_map(|f| match f {
            Fact::BatchStarted { .. } => Some("batch"),
            Fact::BakeStarted { duration_ms: 30_000, .. } => Some("bake"),
            Fact::BatchDone { .. } => Some("done"),
            _ => None,
        })
        .collect();
    assert_eq!(kinds, ["batch", "bake", "done", "batch", "bake", "done", "batch", "bake", "done"]);
    let skipped = sim
        .run
        .service(0, &"web".into())
        .unwrap()
        .hosts
        .values()
        .filter(|h| **h == flotilla_engine::HostState::Skipped)
        .count();
    assert_eq!(skipped, 2);
    assert!(!sim.run.steps.values().any(|s| s.host.as_str() == "h11" || s.host.as_str() == "h12"));
}

#[test]
fn a_release_whose_hosts_all_run_the_target_deploys_nothing() {
    let spec = release("r").with(quick(service("web", "2.0.0")));
    let mut sim = Sim::new(&spec, fleet(hosts(3, &[], &[("web", "2.0.0")])));
    sim.settle();
    assert_eq!(sim.terminal(), Some(Terminal::Succeeded));
    assert!(sim.run.steps.is_empty());
    assert_eq!(sim.state(0, "web"), ServiceState::Skipped);
}

#[test]
fn failed_hosts_up_to_max_failed_are_tolerated_and_one_more_fails_the_service() {
    let mut web = quick(service("web", "2.0.0"));
    web.policy.max_failed = 1;
    web.policy.on_failure = OnFailure::Pause;
    let spec = release("r").with(web);
    let one_bad = |h: &HostId, k: &StepKind| {
        (h.as_str() == "h3" && matches!(k, StepKind::Deploy(_)))
            .then(|| "health check http 127.0.0.1:8080/healthz: status 503 (3 of 3 samples)".to_owned())
    };
    let mut sim = Sim::new(&spec, fleet(hosts(4, &[], &[]))).failing(one_bad);
    sim.settle();
    assert_eq!(sim.terminal(), Some(Terminal::Succeeded));
    assert!(sim.events(EventKind::ServiceDone)[0].contains("with 1 host failed (within max_failed)"));

    let two_bad = |h: &HostId, k: &StepKind| {
        (matches!(h.as_str(), "h3" | "h4") && matches!(k, StepKind::Deploy(_)))
            .then(|| "process exited with status 1".to_owned())
    };
    let mut web = quick(service("web", "2.0.0"));
    web.policy.max_failed = 1;
    web.policy.on_failure = OnFailure::Pause;
    let mut sim = Sim::new(&release("r").with(web), fleet(hosts(4, &[], &[]))).failing(two_bad);
    sim.settle();
    assert_eq!(sim.state(0, "web"), ServiceState::Failed);
    let paused = sim.run.paused.clone().expect("on_failure = pause pauses");
    assert!(paused.contains("web failed in stage all"), "{paused}");
    assert!(paused.contains("host h3 failed: deploy failed: process exited with status 1"), "{paused}");
    assert!(paused.contains("2 hosts failed, max_failed is 1"), "{paused}");
}

#[test]
fn a_cascade_rollback_takes_exactly_the_dependents_of_the_failed_service_back_in_reverse_order() {
    // payments fails on its canary: web (config dep of payments) rolls back first, then
    // payments; db, ledger, auth, search, mail stay upgraded.
    let bad = |_: &HostId, k: &StepKind| {
        matches!(k, StepKind::Deploy(s) if s.as_str() == "payments")
            .then(|| "health check http 127.0.0.1:8080/healthz: status 503 (3 of 3 samples)".to_owned())
    };
    // web must have started for it to be in the set: give payments hosts web lacks?
    // Instead fail payments in its LAST batch, after web could not start yet: web
    // depends on payments, so it never starts and is cancelled.
    let mut sim = Sim::new(&shop(), shop_fleet()).failing(bad);
    sim.settle();
    assert_eq!(sim.terminal(), Some(Terminal::RolledBack), "{:#?}", sim.run.events);
    assert_eq!(sim.members(), ["payments"]);
    let decided = sim.facts.iter().find_map(|f| match f {
        Fact::RollbackDecided { cancelled, reason, .. } => Some((cancelled.clone(), reason.clone())),
        _ => None,
    });
    let (cancelled, reason) = decided.unwrap();
    assert_eq!(cancelled, [ServiceName::from("web")]);
    assert!(reason.contains("payments failed in stage all: canary host h1 failed: deploy failed: health check http 127.0.0.1:8080/healthz: status 503 (3 of 3 samples)"), "{reason}");
    // The canary's failed deploy was undone by its agent; nothing went live, so no
    // rollback step was needed.
    assert!(sim.rollback_order().is_empty());
    for kept in ["db", "ledger", "auth", "search", "mail"] {
        assert_eq!(sim.state(0, kept), ServiceState::Done, "{kept} stays upgraded");
    }
    assert_eq!(sim.state(0, "web"), ServiceState::Cancelled);
}

/// A service outside the rollback set that is still deploying when the rollback is
/// done keeps its step: the release ends only once that step has reported, so nothing
/// of a finished release still runs and no host event follows its last one.
#[test]
fn a_rolled_back_release_ends_only_after_the_steps_still_running_outside_the_set_report() {
    let bad = |_: &HostId, k: &StepKind| {
        matches!(k, StepKind::Deploy(s) if s.as_str() == "payments").then(|| "health check failed".to_owned())
    };
    let mut sim = Sim::new(&shop(), shop_fleet()).failing(bad);
    sim.held.insert("mail".to_owned());
    sim.settle();
    assert_eq!(sim.members(), ["payments"]);
    assert_eq!(sim.terminal(), None, "mail's deploy still runs: {:#?}", sim.run.events);
    assert!(sim.run.outstanding().all(|(_, s)| matches!(&s.kind, StepKind::Deploy(x) if x.as_str() == "mail")));
    sim.held.clear();
    sim.settle();
    assert_eq!(sim.terminal(), Some(Terminal::RolledBack));
    // mail's rollout stopped with the rollback; the host that got it keeps it.
    let mail: Vec<&StepKind> =
        sim.run.steps.values().map(|s| &s.kind).filter(|k| Sim::service_of(k) == "mail").collect();
    assert!(mail.iter().all(|k| matches!(k, StepKind::Deploy(_))), "mail is not rolled back: {mail:?}");
    assert_eq!(sim.run.events.last().map(|e| e.kind), Some(EventKind::ReleaseRolledBack), "{:#?}", sim.run.events);
}

#[test]
fn a_failure_after_dependents_started_rolls_them_back_first() {
    // Stage canary passes completely; in stage rest, ledger fails on its canary while
    // its dependents payments and web are done in the canary stage: they roll back
    // (web, payments, ledger), then db's migrate_down is not needed (db is not in the
    // set); auth, search and mail stay.
    let spec = shop().stages("cell", &["canary"]);
    let mut f = shop_fleet();
    f.hosts[0].labels.insert("cell".into(), "canary".into());
    let bad = |h: &HostId, k: &StepKind| {
        (h.as_str() == "h2" && matches!(k, StepKind::Deploy(s) if s.as_str() == "ledger"))
            .then(|| "process exited".to_owned())
    };
    let mut sim = Sim::new(&spec, f).failing(bad);
    sim.settle();
    assert_eq!(sim.terminal(), Some(Terminal::RolledBack), "{:#?}", sim.run.events);
    assert_eq!(sim.members(), ["web", "payments", "ledger"]);
    assert_eq!(sim.rollback_order(), ["roll back web", "roll back payments", "roll back ledger"]);
    // Only hosts where the new version went live roll back: h1 (canary stage) for all
    // three; ledger's failed canary h2 was undone by its agent.
    let rolled: BTreeSet<(String, String)> = sim
        .run
        .steps
        .values()
        .filter_map(|s| match &s.kind {
            StepKind::Rollback(svc, to) => {
                Some((svc.to_string(), format!("{}->{}", s.host, to.clone().unwrap_or_default())))
            }
            _ => None,
        })
        .collect();
    let expected: BTreeSet<(String, String)> =
        [("web", "h1->2.0.0"), ("payments", "h1->2.3.0"), ("ledger", "h1->1.0.0")]
            .iter()
            .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
            .collect();
    assert_eq!(rolled, expected);
    for kept in ["db", "auth", "search", "mail"] {
        assert_ne!(sim.state(0, kept), ServiceState::RolledBack, "{kept} stays where it is");
    }
    let back = sim.events(EventKind::ServiceRolledBack);
    assert_eq!(back, ["web is back at 2.0.0", "payments is back at 2.3.0", "ledger is back at 1.0.0"]);
}

#[test]
fn scope_service_rolls_back_only_the_failed_one_and_scope_release_every_started_one() {
    let spec_with = |scope: RollbackScope| {
        let mut s = shop().stages("cell", &["canary"]);
        for svc in &mut s.services {
            svc.policy.rollback_scope = scope;
        }
        s
    };
    let fleet_with_canary = || {
        let mut f = shop_fleet();
        f.hosts[0].labels.insert("cell".into(), "canary".into());
        f
    };
    let bad = |h: &HostId, k: &StepKind| {
        (h.as_str() == "h2" && matches!(k, StepKind::Deploy(s) if s.as_str() == "ledger")).then(|| "boom".to_owned())
    };
    let mut sim = Sim::new(&spec_with(RollbackScope::Service), fleet_with_canary()).failing(bad);
    sim.settle();
    assert_eq!(sim.members(), ["ledger"]);
    assert_eq!(sim.rollback_order(), ["roll back ledger"]);

    let mut sim = Sim::new(&spec_with(RollbackScope::Release), fleet_with_canary()).failing(bad);
    sim.settle();
    // Every started service, dependents first; db has migrate_down, which runs after
    // its dependents are back, before db itself goes back.
    assert_eq!(sim.members(), ["web", "payments", "ledger", "db", "auth", "search", "mail"]);
    let order = sim.rollback_order();
    let pos = |s: &str| order.iter().position(|x| x == s).unwrap_or_else(|| panic!("{s} missing from {order:?}"));
    assert!(pos("roll back ledger") < pos("run migrate_down of db"));
    assert!(pos("run migrate_down of db") < pos("roll back db"));
    assert_eq!(sim.terminal(), Some(Terminal::RolledBack));
}

#[test]
fn a_migration_runs_once_before_the_first_batch_of_the_first_stage_that_has_the_service() {
    let spec = shop().stages("cell", &["canary"]);
    let mut f = shop_fleet();
    f.hosts[0].labels.insert("cell".into(), "canary".into());
    let mut sim = Sim::new(&spec, f);
    sim.settle();
    assert_eq!(sim.terminal(), Some(Terminal::Succeeded));
    let migrations: Vec<usize> = sim
        .facts
        .iter()
        .filter_map(|f| match f {
            Fact::MigrationStarted { stage, .. } => Some(*stage),
            _ => None,
        })
        .collect();
    assert_eq!(migrations, [0], "once per release, in the first stage");
    let migrated = sim.position(|f| matches!(f, Fact::StepReported { command_id, .. } if matches!(sim.run.steps[command_id].kind, StepKind::Migrate(_)))).unwrap();
    let first_batch =
        sim.position(|f| matches!(f, Fact::BatchStarted { service, .. } if service.as_str() == "db")).unwrap();
    assert!(migrated < first_batch, "the migration succeeds before db's first batch");
    // ledger (data dependent) starts only after db finished, i.e. after the migration.
    assert!(sim.done_at("db", 0) < sim.started_at("ledger", 0));
}

#[test]
fn an_irreversible_migration_pauses_the_rollback_after_its_dependents_are_back() {
    let spec = release("r")
        .with(quick(service("db", "2.0.0").migrations(false)))
        .with(quick(service("app", "2.0.0").depends("db", DepKind::Data)))
        .stages("cell", &["canary"]);
    let mut f = fleet(hosts(3, &[], &[("db", "1.0.0"), ("app", "1.0.0")]));
    f.hosts[0].labels.insert("cell".into(), "canary".into());
    let bad = |h: &HostId, k: &StepKind| {
        (h.as_str() == "h2" && matches!(k, StepKind::Deploy(s) if s.as_str() == "app")).then(|| "boom".to_owned())
    };
    let mut spec = spec;
    for s in &mut spec.services {
        s.policy.rollback_scope = RollbackScope::Release;
    }
    let mut sim = Sim::new(&spec, f).failing(bad);
    sim.settle();
    assert_eq!(sim.rollback_order(), ["roll back app"]);
    let paused = sim.run.paused.clone().expect("the rollback pauses at db");
    assert!(paused.contains("rollback stopped at db"), "{paused}");
    assert!(paused.contains("no migrate_down"), "{paused}");
    assert_eq!(sim.run.phase, Phase::RollingBack);
    // A human resumes: the rollback goes on past db and ends.
    sim.operator(Fact::Resumed { actor: "ops".into(), reason: "restored by hand".into() });
    sim.settle();
    assert_eq!(sim.terminal(), Some(Terminal::RolledBack));
}

#[test]
fn a_gate_runs_after_its_services_in_each_stage_and_holds_their_dependents() {
    let spec = release("r")
        .with(quick(service("api", "2.0.0")))
        .with(quick(service("web", "2.0.0").depends("api", DepKind::Hard)))
        .with(quick(service("mail", "2.0.0")))
        .gate("smoke", &["api"])
        .stages("cell", &["canary"]);
    let mut f = fleet(hosts(3, &[], &[]));
    f.hosts[0].labels.insert("cell".into(), "canary".into());
    let mut sim = Sim::new(&spec, f);
    sim.held.insert("gate:smoke".into());
    sim.settle();
    assert_eq!(sim.state(0, "api"), ServiceState::Done);
    assert_eq!(sim.state(0, "web"), ServiceState::Waiting, "web waits for the gate after api");
    assert_eq!(sim.state(0, "mail"), ServiceState::Done, "mail does not");
    sim.held.clear();
    sim.settle();
    assert_eq!(sim.terminal(), Some(Terminal::Succeeded));
    let gates: Vec<usize> = sim
        .facts
        .iter()
        .filter_map(|f| match f {
            Fact::GateStarted { stage, .. } => Some(*stage),
            _ => None,
        })
        .collect();
    assert_eq!(gates, [0, 1], "the gate runs in each stage");
    for stage in 0..2 {
        let gate_passed =
            sim.position(|f| matches!(f, Fact::GateDone { stage: s, passed: true, .. } if *s == stage)).unwrap();
        assert!(sim.done_at("api", stage) < gate_passed && gate_passed < sim.started_at("web", stage));
    }
}

#[test]
fn a_failed_gate_fails_its_after_services_and_rolls_them_back() {
    let spec = release("r")
        .with(quick(service("api", "2.0.0")))
        .with(quick(service("web", "2.0.0").depends("api", DepKind::Hard)))
        .with(quick(service("mail", "2.0.0")))
        .gate("smoke", &["api"]);
    let bad = |_: &HostId, k: &StepKind| {
        matches!(k, StepKind::Check(_)).then(|| "exit status 1: smoke test failed".to_owned())
    };
    let mut sim = Sim::new(&spec, fleet(hosts(2, &[], &[("api", "1.0.0")]))).failing(bad);
    sim.settle();
    assert_eq!(sim.terminal(), Some(Terminal::RolledBack));
    assert_eq!(sim.members(), ["api"]);
    let failed = sim.events(EventKind::GateFailed);
    assert!(failed[0].contains("its check failed on h1: exit status 1: smoke test failed"), "{failed:?}");
    assert_eq!(sim.state(0, "web"), ServiceState::Cancelled);
}

#[test]
fn stage_and_gate_approvals_wait_for_a_human() {
    let mut spec = release("r")
        .with(quick(service("api", "2.0.0")))
        .with(quick(service("web", "2.0.0").depends("api", DepKind::Hard)))
        .gate("signoff", &["api"])
        .stages("cell", &["canary"]);
    spec.gates[0].exec = None;
    spec.gates[0].approval = true;
    spec.stages[0].approval = true;
    let mut f = fleet(hosts(2, &[], &[]));
    f.hosts[0].labels.insert("cell".into(), "canary".into());
    let mut sim = Sim::new(&spec, f);
    sim.settle();
    assert_eq!(sim.run.approvals.len(), 1);
    assert_eq!(sim.run.approvals[0].kind, ApprovalKind::Gate);
    assert_eq!(sim.state(0, "web"), ServiceState::Waiting);
    sim.operator(Fact::Approved {
        kind: ApprovalKind::Gate,
        name: "signoff".into(),
        actor: "alice".into(),
        comment: String::new(),
    });
    sim.settle();
    assert_eq!(sim.run.approvals.len(), 1);
    assert_eq!(sim.run.approvals[0].kind, ApprovalKind::Stage);
    assert_eq!(sim.run.stages.len(), 1, "the next stage waits for the stage approval");
    sim.operator(Fact::Approved {
        kind: ApprovalKind::Stage,
        name: "canary".into(),
        actor: "alice".into(),
        comment: "looks good".into(),
    });
    sim.settle();
    // Stage rest: the gate needs approval again there.
    assert_eq!(sim.run.approvals[0].kind, ApprovalKind::Gate);
    sim.operator(Fact::Approved {
        kind: ApprovalKind::Gate,
        name: "signoff".into(),
        actor: "bob".into(),
        comment: String::new(),
    });
    sim.settle();
    assert_eq!(sim.terminal(), Some(Terminal::Succeeded));
    assert!(sim.events(EventKind::Approved).iter().any(|m| m == "stage canary approved by alice: looks good"));
}

#[test]
fn a_service_finished_longer_than_its_rollback_window_ago_is_not_rolled_back_automatically() {
    let mut api = quick(service("api", "2.0.0"));
    api.policy.rollback_window = Duration::from_secs(60);
    let mut web = quick(service("web", "2.0.0").depends("api", DepKind::Hard));
    web.policy.rollback_scope = RollbackScope::Release;
    let spec = release("r").with(api).with(web);
    let mut sim = Sim::new(&spec, fleet(hosts(2, &[], &[("api", "1.0.0"), ("web", "1.0.0")])));
    sim.held.insert("web".into());
    sim.settle();
    assert_eq!(sim.state(0, "api"), ServiceState::Done);
    sim.now += 120_000;
    sim.failing = Box::new(|_, k| matches!(k, StepKind::Deploy(s) if s.as_str() == "web").then(|| "boom".to_owned()));
    sim.held.clear();
    sim.settle();
    assert_eq!(sim.members(), ["web", "api"]);
    assert_eq!(sim.rollback_order(), Vec::<String>::new(), "web's failed canary was undone locally");
    let paused = sim.run.paused.clone().expect("paused at api");
    assert!(paused.contains("rollback stopped at api"), "{paused}");
    assert!(paused.contains("rollback_window (1m)"), "{paused}");
}

#[test]
fn on_failure_pause_waits_and_resume_deploys_the_failed_hosts_again() {
    let mut web = quick(service("web", "2.0.0"));
    web.policy.on_failure = OnFailure::Pause;
    let spec = release("r").with(web);
    let mut sim = Sim::new(&spec, fleet(hosts(3, &[], &[])))
        .failing(|h, k| (h.as_str() == "h1" && matches!(k, StepKind::Deploy(_))).then(|| "fetch failed".to_owned()));
    sim.settle();
    assert!(sim.run.paused.is_some());
    assert_eq!(sim.decide().facts, [], "nothing is decided while paused");
    sim.failing = Box::new(|_, _| None);
    sim.operator(Fact::Resumed { actor: "ops".into(), reason: "artifact server fixed".into() });
    sim.settle();
    assert_eq!(sim.terminal(), Some(Terminal::Succeeded));
    let h1_deploys =
        sim.run.steps.values().filter(|s| s.host.as_str() == "h1" && matches!(s.kind, StepKind::Deploy(_))).count();
    assert_eq!(h1_deploys, 2, "the failed canary host is deployed again after resume");
}

#[test]
fn an_operator_abort_stops_dispatching_and_leaves_hosts_as_they_are() {
    let spec = release("r")
        .with(quick(service("api", "2.0.0")))
        .with(quick(service("web", "2.0.0").depends("api", DepKind::Hard)));
    let mut sim = Sim::new(&spec, fleet(hosts(2, &[], &[])));
    sim.held.insert("api".into());
    sim.settle();
    sim.operator(Fact::Aborted { actor: "ops".into(), reason: "wrong artifact".into() });
    sim.held.clear();
    sim.settle();
    assert_eq!(sim.terminal(), Some(Terminal::Aborted));
    assert!(!sim.run.steps.values().any(|s| matches!(&s.kind, StepKind::Deploy(x) if x.as_str() == "web")));
    assert!(!sim.run.steps.values().any(|s| matches!(s.kind, StepKind::Rollback(..))));
}

#[test]
fn no_progress_within_the_deadline_fails_the_service_and_the_engine_says_when_to_look_again() {
    let mut web = quick(service("web", "2.0.0"));
    web.policy.progress_deadline = Duration::from_secs(600);
    web.policy.on_failure = OnFailure::Pause;
    let mut sim = Sim::new(&release("r").with(web), fleet(hosts(2, &[], &[])));
    sim.held.insert("web".into());
    sim.settle();
    let wake = sim.decide().wake_at.expect("a deadline to wake up for");
    assert_eq!(wake, sim.now + 600_000);
    sim.now = wake;
    sim.settle();
    let paused = sim.run.paused.clone().unwrap();
    assert!(paused.contains("no progress for 10m (progress_deadline); no result from h1"), "{paused}");
}

#[test]
fn a_host_offline_when_its_batch_starts_counts_as_failed() {
    let mut web = quick(service("web", "2.0.0"));
    web.policy.canary = HostCount::Hosts(0);
    web.policy.max_failed = 1;
    let mut sim = Sim::new(&release("r").with(web), fleet(hosts(3, &[], &[])));
    sim.offline.insert(HostId::from("h2"));
    sim.settle();
    assert_eq!(sim.terminal(), Some(Terminal::Succeeded));
    let run = sim.run.service(0, &"web".into()).unwrap();
    assert_eq!(run.failed_hosts().map(|(h, _)| h.to_string()).collect::<Vec<_>>(), ["h2"]);
    let batches = sim.events(EventKind::BatchStarted);
    assert!(batches.iter().any(|m| m.ends_with("sent to h3; offline, counted as failed: h2")), "{batches:?}");
}

#[test]
fn an_operator_rollback_after_success_takes_the_whole_release_back_within_its_window() {
    let spec = release("r")
        .with(quick(service("api", "2.0.0")))
        .with(quick(service("web", "2.0.0").depends("api", DepKind::Hard)));
    let mut sim = Sim::new(&spec, fleet(hosts(2, &[], &[("api", "1.0.0"), ("web", "1.0.0")])));
    sim.settle();
    assert_eq!(sim.terminal(), Some(Terminal::Succeeded));
    sim.now += 60_000;
    let fact =
        rollback_decision(&sim.run, sim.ctx(), sim.now, &[], RollbackScope::Release, "ops", "bad numbers".into());
    sim.operator(fact);
    sim.settle();
    assert_eq!(sim.terminal(), Some(Terminal::RolledBack));
    assert_eq!(sim.rollback_order(), ["roll back web", "roll back api"]);
    assert_eq!(sim.run.steps.values().filter(|s| matches!(s.kind, StepKind::Rollback(..))).count(), 4);
}

#[test]
fn rollback_of_one_service_after_success_takes_its_closure() {
    let spec = shop();
    let mut sim = Sim::new(&spec, shop_fleet());
    sim.settle();
    let fact = rollback_decision(
        &sim.run,
        sim.ctx(),
        sim.now,
        &["ledger".into()],
        RollbackScope::Cascade,
        "ops",
        "ledger is slow".into(),
    );
    let Fact::RollbackDecided { actions, .. } = &fact else { panic!("a rollback") };
    assert_eq!(
        actions,
        &[
            RollbackAction::Rollback("web".into()),
            RollbackAction::Rollback("payments".into()),
            RollbackAction::Rollback("ledger".into())
        ]
    );
}

#[test]
fn a_steps_outcome_is_recorded_once_and_a_stale_decision_does_not_apply() {
    let spec = release("r").with(quick(service("web", "2.0.0")));
    let mut sim = Sim::new(&spec, fleet(hosts(1, &[], &[])));
    sim.held.insert("web".into());
    sim.settle();
    let (id, _) = sim.run.outstanding().next().map(|(i, s)| (i.clone(), s.clone())).unwrap();
    let report = Fact::StepReported { command_id: id, outcome: Outcome::Succeeded, reason: String::new() };
    sim.run.apply(sim.now, &report).unwrap();
    assert!(sim.run.apply(sim.now, &report).is_err(), "a second result for a step is refused");
    // A decision made against the old run (the same batch again) is refused.
    let again = Fact::BatchStarted {
        stage: 0,
        service: "web".into(),
        batch: 0,
        dispatches: vec![flotilla_engine::Dispatch { host: "h1".into(), command_id: CommandId::new("r-1", 99) }],
        offline: vec![],
    };
    assert!(sim.run.apply(sim.now, &again).is_err());
}

#[test]
fn replaying_the_same_facts_rebuilds_the_same_run() {
    let mut sim = Sim::new(&shop(), shop_fleet()).failing(|h, k| {
        (h.as_str() == "h2" && matches!(k, StepKind::Deploy(s) if s.as_str() == "web")).then(|| "x".to_owned())
    });
    sim.settle();
    let mut replay = Run::new();
    for f in &sim.facts {
        replay.apply(sim.now, f).unwrap();
    }
    assert_eq!(replay, sim.run);
}

#[test]
fn a_bake_interrupted_by_an_agent_restart_bakes_the_host_again_without_deploying_it_again() {
    let mut web = quick(service("web", "2.0.0"));
    web.policy.bake = Duration::from_secs(5);
    // Two hosts in one batch: one bake is interrupted while the other goes on.
    web.policy.canary = HostCount::Hosts(0);
    web.policy.batches = vec![HostCount::ALL];
    let mut sim = Sim::new(&release("r").with(web), fleet(hosts(2, &[], &[])));
    sim.held.insert("web".into());
    sim.settle();
    let mut interrupted = false;
    for _ in 0..20 {
        let due: Vec<CommandId> = sim.run.outstanding().map(|(id, _)| id.clone()).collect();
        if due.is_empty() {
            break;
        }
        for id in due {
            let baking = matches!(sim.run.steps[&id].kind, StepKind::Bake(..));
            let (outcome, reason) = if baking && !interrupted {
                interrupted = true;
                (Outcome::Interrupted, "agent restarted during baking (1 check(s) for 1s)".to_owned())
            } else {
                (Outcome::Succeeded, String::new())
            };
            sim.apply(Fact::StepReported { command_id: id, outcome, reason });
        }
        sim.settle();
    }
    assert!(interrupted, "a bake was interrupted");
    assert_eq!(sim.terminal(), Some(Terminal::Succeeded), "{:#?}", sim.events(EventKind::HostFailed));
    let said = sim.events(EventKind::HostFailed);
    assert!(said.iter().any(|m| m.contains("agent restarted during baking") && m.contains("trying again")), "{said:?}");
    let count = |bake: bool| sim.run.steps.values().filter(|s| matches!(s.kind, StepKind::Bake(..)) == bake).count();
    assert_eq!((count(false), count(true)), (2, 3), "each host deployed once, one baked twice: {:#?}", sim.run.steps);
}

#[test]
fn a_step_interrupted_by_an_agent_restart_is_sent_again_and_fails_only_after_its_attempts() {
    use flotilla_engine::MAX_ATTEMPTS;
    let mut web = quick(service("web", "2.0.0"));
    web.policy.on_failure = OnFailure::Pause;
    let db = quick(service("db", "2.0.0").migrations(true));
    let spec = release("r").with(db).with(web).gate("smoke", &["web"]);
    let mut sim = Sim::new(&spec, fleet(hosts(2, &[], &[])));
    // The first attempt of every step is interrupted (the agent restarted mid-step).
    sim.held.extend(["db".to_owned(), "web".to_owned(), "gate:smoke".to_owned()]);
    sim.settle();
    let mut interrupted = BTreeSet::new();
    for _ in 0..20 {
        let due: Vec<CommandId> = sim.run.outstanding().map(|(id, _)| id.clone()).collect();
        if due.is_empty() {
            break;
        }
        for id in due {
            let step = sim.run.steps[&id].clone();
            let key = (step.host.to_string(), format!("{:?}", step.kind));
            let outcome = if interrupted.insert(key) { Outcome::Interrupted } else { Outcome::Succeeded };
            let reason = if outcome == Outcome::Interrupted {
                "agent restarted during starting".to_owned()
            } else {
                String::new()
            };
            sim.apply(Fact::StepReported { command_id: id, outcome, reason });
        }
        sim.settle();
    }
    assert_eq!(sim.terminal(), Some(Terminal::Succeeded), "{:#?}", sim.events(EventKind::HostFailed));
    let retried = sim.events(EventKind::HostFailed);
    assert!(
        retried.iter().any(|m| m.contains("agent restarted during starting; trying again (attempt 2 of 3)")),
        "{retried:?}"
    );
    let migrations = sim.run.steps.values().filter(|s| matches!(s.kind, StepKind::Migrate(_))).count();
    assert_eq!(migrations, 2, "the interrupted migration ran again once");

    // Interrupted on every attempt: the host fails after MAX_ATTEMPTS.
    let mut web = quick(service("web", "2.0.0"));
    web.policy.on_failure = OnFailure::Pause;
    let mut sim = Sim::new(&release("r").with(web), fleet(hosts(1, &[], &[])));
    sim.held.insert("web".into());
    sim.settle();
    for _ in 0..10 {
        let due: Vec<CommandId> = sim.run.outstanding().map(|(id, _)| id.clone()).collect();
        for id in due {
            sim.apply(Fact::StepReported { command_id: id, outcome: Outcome::Interrupted, reason: "disk full".into() });
        }
        sim.settle();
    }
    let deploys = sim.run.steps.values().filter(|s| matches!(s.kind, StepKind::Deploy(_))).count();
    assert_eq!(deploys, MAX_ATTEMPTS);
    assert!(
        sim.run.paused.as_deref().is_some_and(|p| p.contains("disk full (after 3 attempts)")),
        "{:?}",
        sim.run.paused
    );
}

#[test]
fn steps_asked_to_stop_are_owed_their_cancel_and_never_sent_again() {
    let mut web = quick(service("web", "2.0.0"));
    web.policy.canary = HostCount::Hosts(0);
    web.policy.batches = vec![HostCount::ALL];
    let mut sim = Sim::new(&release("r").with(web), fleet(hosts(3, &[], &[])));
    sim.held.insert("web".into());
    sim.settle();
    let deploys: Vec<(CommandId, HostId)> = sim.run.outstanding().map(|(id, s)| (id.clone(), s.host.clone())).collect();
    assert_eq!(deploys.len(), 3, "one deploy per host, all running");
    let sends = |d: &[(CommandId, HostId)]| -> Vec<Action> {
        d.iter().map(|(command, host)| Action::Send { command: command.clone(), host: host.clone() }).collect()
    };
    assert_eq!(sim.run.resend(None), sends(&deploys), "a new leader sends every step without a result");
    assert_eq!(sim.run.resend(Some(&deploys[1].1)), sends(&deploys[1..2]), "a host that connects gets its own");
    assert_eq!(sim.run.cancels().count(), 0);

    // h1 answers; then an operator rolls the release back while h2 and h3 deploy.
    let report =
        Fact::StepReported { command_id: deploys[0].0.clone(), outcome: Outcome::Succeeded, reason: String::new() };
    sim.operator(report);
    let rollback =
        rollback_decision(&sim.run, sim.ctx(), sim.now, &[], RollbackScope::Release, "ops", "stop it".into());
    let actions = sim.run.clone().apply(sim.now, &rollback).expect("a rollback applies");
    let cancels: Vec<Action> = deploys[1..]
        .iter()
        .map(|(command, host)| Action::Cancel { command: command.clone(), host: host.clone() })
        .collect();
    assert_eq!(actions, cancels, "the running deploys are asked to stop, the finished one is not");
    sim.operator(rollback);
    assert_eq!(sim.run.resend(None), cancels, "owed: the cancels, never the steps again");
    assert_eq!(sim.run.resend(Some(&deploys[2].1)), cancels[1..]);
    assert_eq!(sim.run.cancels().collect::<Vec<_>>(), cancels);
    let cancelled =
        Fact::StepReported { command_id: deploys[1].0.clone(), outcome: Outcome::Cancelled, reason: String::new() };
    sim.operator(cancelled);
    assert_eq!(sim.run.cancels().collect::<Vec<_>>(), cancels[1..], "a step with a result is owed nothing");
}

/// Deploy steps sent to `host`.
fn deploys_to(sim: &Sim, host: &str) -> usize {
    sim.run.steps.values().filter(|s| s.host.as_str() == host && matches!(s.kind, StepKind::Deploy(_))).count()
}

#[test]
fn retry_deploys_only_the_named_failed_host_again_and_exclude_lets_the_release_go_on_without_another() {
    let mut web = quick(service("web", "2.0.0"));
    web.policy.on_failure = OnFailure::Pause;
    web.policy.canary = HostCount::Hosts(0);
    let mut sim = Sim::new(&release("r").with(web), fleet(hosts(4, &[], &[]))).failing(|h, k| {
        (matches!(h.as_str(), "h2" | "h3") && matches!(k, StepKind::Deploy(_))).then(|| "disk full".to_owned())
    });
    sim.settle();
    assert!(sim.run.paused.as_deref().is_some_and(|p| p.contains("host h2 failed")), "{:?}", sim.run.paused);

    // h2's disk is cleaned: retrying it deploys h2 again and nothing else.
    sim.failing =
        Box::new(|h, k| (h.as_str() == "h3" && matches!(k, StepKind::Deploy(_))).then(|| "disk full".to_owned()));
    sim.operator(Fact::HostRetried { host: "h2".into(), actor: "ops".into(), reason: "disk cleaned".into() });
    assert_eq!(sim.run.paused, None, "a retry goes on");
    sim.settle();
    assert_eq!((deploys_to(&sim, "h2"), deploys_to(&sim, "h3")), (2, 1), "only the retried host is deployed again");
    // h3 is still failed, so the service fails again, naming it.
    let paused = sim.run.paused.clone().expect("h3 still failed");
    assert!(paused.contains("host h3 failed: deploy failed: disk full"), "{paused}");
    assert_eq!(
        sim.events(EventKind::HostRetried),
        ["h2 retried by ops: disk cleaned: web deploy it again in stage all; the release goes on"]
    );

    // h3 is excluded: the service finishes without it, and nothing more goes to it.
    sim.operator(Fact::HostExcluded { host: "h3".into(), actor: "ops".into(), reason: "hardware fault".into() });
    sim.settle();
    assert_eq!(sim.terminal(), Some(Terminal::Succeeded));
    assert_eq!(deploys_to(&sim, "h3"), 1);
    let run = sim.run.service(0, &"web".into()).unwrap();
    assert_eq!(run.excluded_hosts().map(HostId::as_str).collect::<Vec<_>>(), ["h3"]);
    assert_eq!(sim.run.exclusion(&"h3".into()), Some("excluded by ops: hardware fault"));
    let excluded = sim.events(EventKind::HostExcluded);
    assert_eq!(
        excluded,
        ["h3 excluded by ops: hardware fault: the rest of the release goes on without it (web in stage all; counted \
          against max_failed)"]
    );
}

#[test]
fn an_excluded_host_is_left_out_of_services_that_start_later_and_counts_against_max_failed() {
    let mut api = quick(service("api", "2.0.0"));
    api.policy.on_failure = OnFailure::Pause;
    let mut web = quick(service("web", "2.0.0").depends("api", DepKind::Hard));
    web.policy.on_failure = OnFailure::Pause;
    let spec = release("r").with(api).with(web);
    let mut sim = Sim::new(&spec, fleet(hosts(3, &[], &[]))).failing(|h, k| {
        (h.as_str() == "h2" && matches!(k, StepKind::Deploy(s) if s.as_str() == "api")).then(|| "bad NIC".to_owned())
    });
    sim.settle();
    assert_eq!(sim.state(0, "web"), ServiceState::Waiting, "web waits for api");
    sim.operator(Fact::HostExcluded { host: "h2".into(), actor: "ops".into(), reason: String::new() });
    // web, which started after the exclusion, fails on h3: with h2 excluded, no
    // failure is left in max_failed = 0.
    sim.failing = Box::new(|h, k| {
        (h.as_str() == "h3" && matches!(k, StepKind::Deploy(s) if s.as_str() == "web")).then(|| "crashed".to_owned())
    });
    sim.settle();
    let web = sim.run.service(0, &"web".into()).unwrap();
    assert_eq!(
        web.hosts.get(&HostId::from("h2")),
        Some(&flotilla_engine::HostState::Excluded("excluded by ops".into()))
    );
    assert!(
        !sim.run
            .steps
            .values()
            .any(|s| s.host.as_str() == "h2" && matches!(&s.kind, StepKind::Deploy(x) if x.as_str() == "web")),
        "nothing of web is sent to the excluded host"
    );
    let paused = sim.run.paused.clone().expect("web fails on h3");
    assert!(
        paused.contains("host h3 failed: deploy failed: crashed (1 host failed, 1 host excluded, max_failed is 0)"),
        "{paused}"
    );
}

#[test]
fn retry_and_exclude_are_refused_unless_the_release_is_paused_on_that_host_and_change_nothing() {
    let mut web = quick(service("web", "2.0.0"));
    web.policy.on_failure = OnFailure::Pause;
    let mut sim = Sim::new(&release("r").with(web), fleet(hosts(3, &[], &[])));
    sim.held.insert("web".into());
    sim.settle();
    let refused = |sim: &mut Sim, fact: Fact| {
        let before = sim.run.clone();
        let why = sim.run.apply(sim.now, &fact).expect_err("refused").to_string();
        assert_eq!(sim.run, before, "a refused {fact} changes nothing");
        why
    };
    let retry = |host: &str| Fact::HostRetried { host: host.into(), actor: "ops".into(), reason: String::new() };
    let exclude = |host: &str| Fact::HostExcluded { host: host.into(), actor: "ops".into(), reason: String::new() };
    assert!(refused(&mut sim, retry("h1")).contains("the release is not paused"));

    sim.held.clear();
    sim.failing = Box::new(|h, k| (h.as_str() == "h1" && matches!(k, StepKind::Deploy(_))).then(|| "no".to_owned()));
    sim.settle();
    assert!(sim.run.paused.is_some());
    assert_eq!(refused(&mut sim, exclude("h3")), "host h3 has not failed in stage all (failed there: h1)");
    assert_eq!(refused(&mut sim, retry("nowhere")), "host nowhere has not failed in stage all (failed there: h1)");

    sim.operator(rollback_decision(
        &sim.run,
        sim.ctx(),
        sim.now,
        &["web".into()],
        RollbackScope::Service,
        "ops",
        "enough".into(),
    ));
    assert!(refused(&mut sim, exclude("h1")).contains("not rolling forward"));
}

#[test]
fn a_retry_also_deploys_the_hosts_whose_deploy_was_cancelled_again() {
    let mut web = quick(service("web", "2.0.0"));
    web.policy.on_failure = OnFailure::Pause;
    web.policy.canary = HostCount::Hosts(0);
    web.policy.batches = vec![HostCount::ALL];
    let mut sim = Sim::new(&release("r").with(web), fleet(hosts(3, &[], &[])));
    sim.held.insert("web".into());
    sim.settle();
    let sent: Vec<(CommandId, HostId)> = sim.run.outstanding().map(|(id, s)| (id.clone(), s.host.clone())).collect();
    assert_eq!(sent.len(), 3, "one batch of every host");
    for (command_id, host) in sent {
        let (outcome, reason) = match host.as_str() {
            "h1" => (Outcome::Failed, "disk full".to_owned()),
            "h2" => (Outcome::Cancelled, String::new()),
            _ => (Outcome::Succeeded, String::new()),
        };
        sim.apply(Fact::StepReported { command_id, outcome, reason });
    }
    sim.held.clear();
    sim.settle();
    assert!(sim.run.paused.as_deref().is_some_and(|p| p.contains("host h1 failed")), "{:?}", sim.run.paused);

    sim.operator(Fact::HostRetried { host: "h1".into(), actor: "ops".into(), reason: String::new() });
    sim.settle();
    assert_eq!(sim.terminal(), Some(Terminal::Succeeded));
    assert_eq!(
        (deploys_to(&sim, "h1"), deploys_to(&sim, "h2"), deploys_to(&sim, "h3")),
        (2, 2, 1),
        "the retried host and the cancelled one go again; the deployed one does not"
    );
}

// ------------------------------------------------------------------ deployment windows

fn freeze(name: &str, from: i64, until: i64) -> Window {
    Window {
        name: name.to_owned(),
        effect: Effect::Deny,
        services: BTreeSet::new(),
        hosts: Default::default(),
        when: When::Once { from_unix_ms: from, until_unix_ms: until },
        reason: "year-end freeze".to_owned(),
    }
}

fn api_and_web() -> (ReleaseSpec, Fleet) {
    let spec = release("r")
        .with(quick(service("api", "2.0.0")))
        .with(quick(service("web", "2.0.0").depends("api", DepKind::Hard)));
    (spec, fleet(hosts(2, &[], &[("api", "1.0.0"), ("web", "1.0.0")])))
}

#[test]
fn a_release_started_in_a_freeze_waits_sends_nothing_and_starts_when_the_freeze_ends() {
    let (spec, fleet) = api_and_web();
    let mut sim = Sim::new(&spec, fleet);
    let end = sim.now + 3_600_000;
    sim.windows = vec![freeze("year-end", sim.now - 60_000, end)];
    sim.settle();
    assert!(sim.run.steps.is_empty(), "nothing is sent in a freeze");
    let held: Vec<&Fact> = sim.facts.iter().filter(|f| matches!(f, Fact::WindowHeld { .. })).collect();
    assert_eq!(held.len(), 1, "the hold is committed once: {held:?}");
    let Fact::WindowHeld { service, batch, until_unix_ms, reason, .. } = held[0] else { unreachable!() };
    assert_eq!((service.as_str(), *batch, *until_unix_ms), ("api", 0, Some(end)));
    assert!(reason.contains("freeze year-end (every service): year-end freeze"), "{reason}");
    let api = sim.run.service(0, &ServiceName::from("api")).unwrap();
    assert_eq!(&api.reason, reason, "the service says why it waits");
    assert_eq!(api.deadline_unix_ms, 0, "a held service cannot miss its progress deadline");
    assert_eq!(sim.decide().wake_at, Some(end), "the engine looks again when the freeze ends");
    let event = sim.events(EventKind::WindowHeld);
    assert_eq!(event.len(), 1);
    assert!(event[0].starts_with("api batch canary in stage all waits: held by freeze year-end"), "{}", event[0]);

    // A minute before the end, still nothing; at the end, the release goes through.
    sim.now = end - 60_000;
    sim.settle();
    assert!(sim.run.steps.is_empty());
    sim.now = end;
    sim.settle();
    assert_eq!(sim.terminal(), Some(Terminal::Succeeded));
    assert!(sim.run.service(0, &ServiceName::from("api")).unwrap().reason.is_empty(), "the hold is over");
    assert_eq!(sim.run.steps.len(), 4, "api and web on both hosts");
}

#[test]
fn a_freeze_set_during_a_release_holds_the_next_batch_and_a_failure_inside_it_still_rolls_back() {
    let (spec, fleet) = api_and_web();
    let mut sim = Sim::new(&spec, fleet);
    // api's canary goes out before the freeze; its answer is held.
    sim.held.insert("api".into());
    sim.settle();
    assert_eq!(sim.run.steps.len(), 1, "api's canary");
    sim.windows = vec![freeze("incident", sim.now, sim.now + 86_400_000)];
    sim.held.clear();
    sim.settle();
    // The canary finished; the next batch waits for the freeze.
    assert_eq!(sim.run.steps.len(), 1, "nothing more goes out in the freeze");
    assert_eq!(sim.events(EventKind::WindowHeld).len(), 1);
    assert!(sim.terminal().is_none());

    // An operator rolls back inside the freeze: the rollback is not held.
    let fact = rollback_decision(&sim.run, sim.ctx(), sim.now, &[], RollbackScope::Release, "ops", "bad".into());
    sim.operator(fact);
    sim.settle();
    assert_eq!(sim.terminal(), Some(Terminal::RolledBack));
    assert_eq!(sim.rollback_order(), ["roll back api"]);
    assert_eq!(sim.events(EventKind::WindowHeld).len(), 1, "the rollback never asked the windows");
}

#[test]
fn an_automatic_rollback_of_a_succeeded_service_proceeds_inside_a_freeze() {
    // web fails on its canary while a freeze (set after api went out) covers every
    // service: its rollback scope (the release) takes api back anyway.
    let (mut spec, fleet) = api_and_web();
    spec.services[1].policy.rollback_scope = RollbackScope::Release;
    let mut sim = Sim::new(&spec, fleet).failing(|_, k| {
        matches!(k, StepKind::Deploy(s) if s.as_str() == "web").then(|| "health check failed".to_owned())
    });
    sim.held.insert("web".into());
    sim.settle();
    assert_eq!(sim.state(0, "api"), ServiceState::Done);
    let web_canary = sim.run.steps.values().filter(|s| s.kind == StepKind::Deploy("web".into())).count();
    assert_eq!(web_canary, 1);
    sim.windows = vec![freeze("incident", sim.now, sim.now + 86_400_000)];
    sim.held.clear();
    sim.settle();
    assert_eq!(sim.terminal(), Some(Terminal::RolledBack), "{:#?}", sim.run.events);
    assert_eq!(sim.rollback_order(), ["roll back api"], "web's failed canary was undone by its agent");
    assert!(sim.events(EventKind::WindowHeld).is_empty());
}

#[test]
fn windows_select_by_service_and_host_labels() {
    let spec = release("r").with(quick(service("api", "2.0.0"))).with(quick(service("web", "2.0.0")));
    let mut prod = hosts(2, &[("env", "prod")], &[("api", "1.0.0"), ("web", "1.0.0")]);
    for (i, h) in prod.iter_mut().enumerate() {
        h.id = HostId::new(format!("p{}", i + 1));
    }
    let mut all = hosts(2, &[("env", "dev")], &[("api", "1.0.0"), ("web", "1.0.0")]);
    all.extend(prod);
    let mut sim = Sim::new(&spec, fleet(all));
    let mut w = freeze("api-prod", sim.now - 1, sim.now + 60_000);
    w.services.insert(ServiceName::from("api"));
    w.hosts = flotilla_shared::LabelSelector([("env".to_owned(), "prod".to_owned())].into());
    sim.windows = vec![w];
    sim.settle();
    // web is not in the freeze; api's batches with a prod host wait.
    assert_eq!(sim.state(0, "web"), ServiceState::Done);
    assert_eq!(sim.state(0, "api"), ServiceState::Deploying);
    let api_hosts: BTreeSet<String> = sim
        .run
        .steps
        .values()
        .filter(|s| s.kind == StepKind::Deploy("api".into()))
        .map(|s| s.host.to_string())
        .collect();
    assert!(api_hosts.iter().all(|h| h.starts_with('h')), "no api step reached a prod host: {api_hosts:?}");
    sim.now += 60_000;
    sim.settle();
    assert_eq!(sim.terminal(), Some(Terminal::Succeeded));
}

#[test]
fn a_host_retried_inside_a_freeze_waits_for_it_even_from_an_earlier_batch() {
    // h1 fails in the canary (tolerated: max_failed = 1), h2 in the next batch: the
    // release pauses. A freeze starts; h1 is retried: it waits, in batch 0, while the
    // service is at batch 1.
    let mut web = quick(service("web", "2.0.0"));
    web.policy.on_failure = OnFailure::Pause;
    web.policy.max_failed = 1;
    web.policy.canary = HostCount::Hosts(1);
    web.policy.batches = vec![HostCount::ALL];
    let broken = std::rc::Rc::new(std::cell::RefCell::new(BTreeSet::from(["h1".to_owned(), "h2".to_owned()])));
    let failing = broken.clone();
    let mut sim = Sim::new(&release("r").with(web), fleet(hosts(3, &[], &[]))).failing(move |h, k| {
        (matches!(k, StepKind::Deploy(_)) && failing.borrow().contains(h.as_str())).then(|| "broken".to_owned())
    });
    sim.settle();
    assert!(sim.run.paused.as_deref().is_some_and(|p| p.contains("2 hosts failed")), "{:?}", sim.run.paused);
    let web = ServiceName::from("web");
    assert_eq!(sim.run.service(0, &web).unwrap().batch, 1);

    let end = sim.now + 600_000;
    sim.windows = vec![freeze("incident", sim.now, end)];
    broken.borrow_mut().clear();
    sim.operator(Fact::HostRetried { host: "h1".into(), actor: "ops".into(), reason: String::new() });
    sim.settle();
    assert_eq!(sim.events(EventKind::WindowHeld).len(), 1, "h1 waits for the freeze");
    assert_eq!(deploys_to(&sim, "h1"), 1, "not sent again yet");
    assert!(sim.decide().facts.is_empty(), "nothing more to decide until the freeze ends");
    sim.now = end;
    sim.settle();
    assert_eq!(deploys_to(&sim, "h1"), 2, "sent again once the freeze ended");
    assert!(sim.terminal().is_none() || sim.terminal() == Some(Terminal::Succeeded));
}
