//! Hand-made histories for the checker's tests: a small recorder that writes events and
//! host lines the way the release engine and the agents do (same kinds, same fields per
//! kind, one shared clock), and the `shop` scenario built with it: release `r0`
//! installs `shop` 1.0.0 on five hosts, then release `r1` takes it to 2.0.0 over two
//! stages with every dependency kind, a migration, a bake, a stage approval, an
//! interrupted deploy tried again and a leader change — ending SUCCEEDED
//! ([`clean`]) or, when `web` fails in the second stage, ROLLED_BACK with a
//! `migrate_down` and a `stop` ([`rolled_back`]). Violating histories are small edits
//! of these, made with the finders and editors at the end.

use std::collections::BTreeMap;

use flotilla_check::{CREATE_METHOD, History, HostRecord, Write};
use flotilla_proto::v1;
use flotilla_proto::v1::EventKind as K;
use flotilla_shared::history::{HOST_HISTORY_FORMAT, HostHistoryEntry, HostHistoryRecord};

pub const DB: [&str; 2] = ["db-1", "db-2"];
pub const APPS: [&str; 3] = ["app-1", "app-2", "app-3"];
pub const CANARY: &str = "canary";
pub const PROD: &str = "prod";

/// A step's outcome as the agent writes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Succeeded,
    Failed,
}

/// Records one history: releases, events, host lines, writes, with one clock.
#[derive(Debug)]
pub struct Recorder {
    pub now: i64,
    pub term: u64,
    hosts: BTreeMap<String, HostRecord>,
    /// Per host and service: the version and whether it is stopped.
    inventory: BTreeMap<String, BTreeMap<String, (String, bool)>>,
    releases: Vec<v1::Release>,
    events: BTreeMap<String, Vec<v1::ReleaseEvent>>,
    writes: Vec<Write>,
    release: String,
    next_command: u64,
    created: i64,
}

impl Recorder {
    pub fn new(hosts: &[&str]) -> Self {
        Self {
            now: 1_000,
            term: 1,
            hosts: hosts
                .iter()
                .map(|h| {
                    ((*h).to_owned(), HostRecord { host: (*h).to_owned(), history: Vec::new(), services: Vec::new() })
                })
                .collect(),
            inventory: BTreeMap::new(),
            releases: Vec::new(),
            events: BTreeMap::new(),
            writes: Vec::new(),
            release: String::new(),
            next_command: 1,
            created: 0,
        }
    }

    fn tick(&mut self) -> i64 {
        self.now += 10;
        self.now
    }

    /// A release is created (an acknowledged `Create`).
    pub fn create(&mut self, id: &str) {
        self.release = id.to_owned();
        self.next_command = 1;
        self.created = self.tick();
        self.writes.push(Write { method: CREATE_METHOD.to_owned(), release_id: id.to_owned(), acknowledged: true });
        self.event(K::ReleaseCreated, "", &[]);
    }

    /// A write the client made.
    pub fn write(&mut self, method: &str, release_id: &str, acknowledged: bool) {
        self.writes.push(Write { method: method.to_owned(), release_id: release_id.to_owned(), acknowledged });
    }

    /// Appends an event of the current release, stamped with the clock and term.
    pub fn event(&mut self, kind: K, stage: &str, services: &[&str]) -> &mut v1::ReleaseEvent {
        let at = self.tick();
        let term = self.term;
        let log = self.events.entry(self.release.clone()).or_default();
        log.push(v1::ReleaseEvent {
            release_id: self.release.clone(),
            index: log.len() as u64 + 1,
            at_unix_ms: at,
            kind: kind as i32,
            message: format!("{} {}", kind.as_str_name(), services.join(", ")),
            release_state: v1::ReleaseState::Running as i32,
            stage: stage.to_owned(),
            services: services.iter().map(|s| (*s).to_owned()).collect(),
            actor: "engine".to_owned(),
            term,
            ..Default::default()
        });
        log.last_mut().expect("just pushed")
    }

    fn command(&mut self) -> String {
        let id = format!("{}.{}", self.release, self.next_command);
        self.next_command += 1;
        id
    }

    /// Appends a line to a host's history.
    pub fn line(&mut self, host: &str, command_id: &str, stage: &str, entry: HostHistoryEntry) {
        let record = HostHistoryRecord {
            format: HOST_HISTORY_FORMAT,
            at_unix_ms: self.tick(),
            command_id: command_id.to_owned(),
            term: self.term,
            release_id: self.release.clone(),
            stage: stage.to_owned(),
            entry,
        };
        self.hosts.get_mut(host).expect("a known host").history.push(record);
    }

    /// A step runs on a host: its `started` and `finished` lines; the inventory follows.
    #[allow(clippy::too_many_arguments)]
    pub fn run(
        &mut self,
        host: &str,
        command_id: &str,
        stage: &str,
        action: &str,
        service: &str,
        version: Option<&str>,
        hook: Option<&str>,
        outcome: Outcome,
    ) {
        let started = HostHistoryEntry::Started {
            action: action.to_owned(),
            service: Some(service.to_owned()),
            version: version.map(str::to_owned),
            hook: hook.map(str::to_owned),
        };
        self.line(host, command_id, stage, started);
        let inv = self.inventory.entry(host.to_owned()).or_default();
        if outcome == Outcome::Succeeded {
            match action {
                "deploy" | "rollback" => {
                    inv.insert(service.to_owned(), (version.unwrap_or_default().to_owned(), false));
                }
                "stop" => {
                    if let Some(entry) = inv.get_mut(service) {
                        entry.1 = true;
                    }
                }
                _ => {}
            }
        }
        let after = inv.get(service).map(|(v, _)| v.clone());
        let outcome = match outcome {
            Outcome::Succeeded => "succeeded",
            Outcome::Failed => "failed",
        };
        self.line(host, command_id, stage, HostHistoryEntry::Finished { outcome: outcome.to_owned(), version: after });
    }

    /// A step's result as the engine records it (HOST_SUCCEEDED, HOST_FAILED, HOST_BAKED,
    /// MIGRATION_DONE): stage, service, host, command id.
    pub fn result(&mut self, kind: K, stage: &str, service: &str, host: &str, command_id: &str) {
        let e = self.event(kind, stage, &[service]);
        e.hosts = vec![host.to_owned()];
        e.command_ids = vec![command_id.to_owned()];
    }

    pub fn stage_started(&mut self, stage: &str) {
        self.event(K::StageStarted, stage, &[]);
    }

    pub fn stage_done(&mut self, stage: &str) {
        self.event(K::StageDone, stage, &[]);
    }

    pub fn service_started(&mut self, stage: &str, service: &str, version: &str) {
        self.event(K::ServiceStarted, stage, &[service]).version = version.to_owned();
    }

    pub fn service_done(&mut self, stage: &str, service: &str, version: &str) {
        self.event(K::ServiceDone, stage, &[service]).version = version.to_owned();
    }

    /// The service's `migrate` hook runs on one host and succeeds.
    pub fn migrate(&mut self, stage: &str, service: &str, version: &str, host: &str) {
        let c = self.command();
        let e = self.event(K::MigrationStarted, stage, &[service]);
        e.hosts = vec![host.to_owned()];
        e.command_ids = vec![c.clone()];
        e.version = version.to_owned();
        self.run(host, &c, stage, "run_hook", service, Some(version), Some("migrate"), Outcome::Succeeded);
        self.result(K::MigrationDone, stage, service, host, &c);
    }

    /// BATCH_STARTED for `hosts`: the command ids, in host order.
    pub fn batch_started(
        &mut self,
        stage: &str,
        service: &str,
        version: &str,
        batch: &str,
        hosts: &[&str],
    ) -> Vec<String> {
        let commands: Vec<String> = hosts.iter().map(|_| self.command()).collect();
        let e = self.event(K::BatchStarted, stage, &[service]);
        e.batch = batch.to_owned();
        e.version = version.to_owned();
        e.hosts = hosts.iter().map(|h| (*h).to_owned()).collect();
        e.command_ids = commands.clone();
        commands
    }

    /// A batch deploys on every host; each host's outcome as given (all succeed when
    /// `failed` is empty).
    pub fn batch(&mut self, stage: &str, service: &str, version: &str, batch: &str, hosts: &[&str], failed: &[&str]) {
        let commands = self.batch_started(stage, service, version, batch, hosts);
        for (h, c) in hosts.iter().zip(&commands) {
            let outcome = if failed.contains(h) { Outcome::Failed } else { Outcome::Succeeded };
            self.run(h, c, stage, "deploy", service, Some(version), None, outcome);
        }
        for (h, c) in hosts.iter().zip(&commands) {
            let kind = if failed.contains(h) { K::HostFailed } else { K::HostSucceeded };
            self.result(kind, stage, service, h, c);
        }
    }

    /// The batch's hosts bake.
    pub fn bake(&mut self, stage: &str, service: &str, version: &str, batch: &str, hosts: &[&str]) {
        let commands: Vec<String> = hosts.iter().map(|_| self.command()).collect();
        let e = self.event(K::BakeStarted, stage, &[service]);
        e.batch = batch.to_owned();
        e.hosts = hosts.iter().map(|h| (*h).to_owned()).collect();
        e.command_ids = commands.clone();
        for (h, c) in hosts.iter().zip(&commands) {
            self.run(h, c, stage, "bake", service, Some(version), None, Outcome::Succeeded);
        }
        for (h, c) in hosts.iter().zip(&commands) {
            self.result(K::HostBaked, stage, service, h, c);
        }
    }

    pub fn batch_done(&mut self, stage: &str, service: &str, batch: &str) {
        self.event(K::BatchDone, stage, &[service]).batch = batch.to_owned();
    }

    /// A whole service in a stage: started, its batches deployed (and baked), done.
    pub fn service(&mut self, stage: &str, service: &str, version: &str, batches: &[(&str, &[&str])], bake: bool) {
        self.service_started(stage, service, version);
        for (name, hosts) in batches {
            self.batch(stage, service, version, name, hosts, &[]);
            if bake {
                self.bake(stage, service, version, name, hosts);
            }
            self.batch_done(stage, service, name);
        }
        self.service_done(stage, service, version);
    }

    /// The stage waits for approval and an operator gives it (an acknowledged `Approve`).
    pub fn approve_stage(&mut self, stage: &str, by: &str) {
        self.event(K::ApprovalRequired, stage, &[]);
        let release = self.release.clone();
        self.write("flotilla.v1.Releases/Approve", &release, true);
        self.event(K::Approved, stage, &[]).actor = by.to_owned();
    }

    /// The rollback is decided: the set in order.
    pub fn rollback_decided(&mut self, set: &[&str]) {
        self.event(K::RollbackStarted, "", set);
    }

    /// One rollback action's batch: `rollback` to `to` (a `stop` when `to` is `None`) on
    /// each host, reported in stage `stage` (the stage the release was in).
    pub fn roll_back(&mut self, stage: &str, service: &str, to: Option<&str>, hosts: &[&str]) {
        let commands: Vec<String> = hosts.iter().map(|_| self.command()).collect();
        let e = self.event(K::ServiceRollbackStarted, "", &[service]);
        e.hosts = hosts.iter().map(|h| (*h).to_owned()).collect();
        e.command_ids = commands.clone();
        for (h, c) in hosts.iter().zip(&commands) {
            match to {
                Some(v) => self.run(h, c, stage, "rollback", service, Some(v), None, Outcome::Succeeded),
                None => self.run(h, c, stage, "stop", service, None, None, Outcome::Succeeded),
            }
        }
        for (h, c) in hosts.iter().zip(&commands) {
            self.result(K::HostSucceeded, stage, service, h, c);
        }
        self.event(K::ServiceRolledBack, "", &[service]);
    }

    /// The service's `migrate_down` runs on one host.
    pub fn migrate_down(&mut self, stage: &str, service: &str, version: &str, host: &str) {
        let c = self.command();
        let e = self.event(K::MigrateDownStarted, "", &[service]);
        e.hosts = vec![host.to_owned()];
        e.command_ids = vec![c.clone()];
        self.run(host, &c, stage, "run_hook", service, Some(version), Some("migrate_down"), Outcome::Succeeded);
        self.result(K::HostSucceeded, stage, service, host, &c);
        self.event(K::MigrateDownDone, "", &[service]);
    }

    /// The release ends: its terminal event, and the release as `Releases.Get` returns it.
    pub fn finish(&mut self, name: &str, plan: v1::Plan, state: v1::ReleaseState) {
        let kind = match state {
            v1::ReleaseState::Succeeded => K::ReleaseSucceeded,
            v1::ReleaseState::RolledBack => K::ReleaseRolledBack,
            v1::ReleaseState::Failed => K::ReleaseFailed,
            _ => K::ReleaseAborted,
        };
        self.event(kind, "", &[]);
        let log = self.events.get_mut(&self.release).expect("the release has events");
        for e in log.iter_mut() {
            e.release_state = v1::ReleaseState::Running as i32;
        }
        if let Some(last) = log.last_mut() {
            last.release_state = state as i32;
        }
        let last = log.len() as u64;
        self.releases.push(v1::Release {
            id: self.release.clone(),
            name: name.to_owned(),
            state: state as i32,
            file_name: format!("{name}.toml"),
            plan: Some(plan),
            created_unix_ms: self.created,
            updated_unix_ms: self.now,
            finished_unix_ms: self.now,
            last_event_index: last,
            created_by: "operator alice".to_owned(),
            ..Default::default()
        });
    }

    /// The history, with each host's final inventory.
    pub fn history(self, seed: Option<u64>) -> History {
        let mut hosts: Vec<HostRecord> = self.hosts.into_values().collect();
        for h in &mut hosts {
            for (service, (version, stopped)) in self.inventory.get(&h.host).into_iter().flatten() {
                h.services.push(v1::ServiceInstance {
                    service: service.clone(),
                    version: version.clone(),
                    state: if *stopped { v1::ServiceRunState::Stopped } else { v1::ServiceRunState::Running } as i32,
                    ..Default::default()
                });
            }
        }
        History { seed, releases: self.releases, events: self.events, hosts, writes: self.writes, ..History::new() }
    }
}

// ------------------------------------------------------------------ the shop scenario

/// The `shop` plan at `version`: db and config (wave 1), api (wave 2: data on db,
/// config on config), web (wave 3: hard on api); with `worker` (wave 3: soft on db,
/// contract `orders-api` from api) and db's migration when `v2`. Stages `canary`
/// (app-1, db-1; approval) and `prod` (app-2, app-3, db-2; api in a canary and a rest
/// batch).
pub fn shop_plan(version: &str, v2: bool) -> v1::Plan {
    let service = |name: &str, wave: u32, migrate: bool| v1::PlannedService {
        name: name.to_owned(),
        version: version.to_owned(),
        wave,
        has_migrate: migrate,
        has_migrate_down: migrate,
        on_failure: "rollback".to_owned(),
        rollback_scope: "release".to_owned(),
        ..Default::default()
    };
    let edge = |dependency: &str, dependent: &str, kind: v1::EdgeKind, contract: &str| v1::PlanEdge {
        dependency: dependency.to_owned(),
        dependent: dependent.to_owned(),
        kind: kind as i32,
        contract: contract.to_owned(),
        old_version_compatible: false,
    };
    let mut services =
        vec![service("db", 1, v2), service("config", 1, false), service("api", 2, false), service("web", 3, false)];
    let mut edges = vec![
        edge("db", "api", v1::EdgeKind::Data, ""),
        edge("config", "api", v1::EdgeKind::Config, ""),
        edge("api", "web", v1::EdgeKind::Hard, ""),
    ];
    if v2 {
        services.push(service("worker", 3, false));
        edges.push(edge("db", "worker", v1::EdgeKind::Soft, ""));
        edges.push(edge("api", "worker", v1::EdgeKind::Contract, "orders-api"));
    }
    let batch = |index: u32, name: &str, hosts: &[&str]| v1::PlannedBatch {
        index,
        name: name.to_owned(),
        hosts: hosts.iter().map(|h| (*h).to_owned()).collect(),
    };
    let rollout = |service: &str, batches: Vec<v1::PlannedBatch>| v1::StageRollout {
        service: service.to_owned(),
        batches,
        skipped_hosts: Vec::new(),
    };
    let app_services: Vec<&str> =
        if v2 { vec!["config", "api", "web", "worker"] } else { vec!["config", "api", "web"] };
    let mut canary = vec![rollout("db", vec![batch(0, "100%", &["db-1"])])];
    canary.extend(app_services.iter().map(|s| rollout(s, vec![batch(0, "100%", &["app-1"])])));
    let mut prod = vec![rollout("db", vec![batch(0, "100%", &["db-2"])])];
    for s in &app_services {
        prod.push(if *s == "api" {
            rollout(s, vec![batch(0, "canary", &["app-2"]), batch(1, "rest", &["app-3"])])
        } else {
            rollout(s, vec![batch(0, "100%", &["app-2", "app-3"])])
        });
    }
    let stage =
        |index: u32, name: &str, approval: bool, hosts: &[&str], rollouts: Vec<v1::StageRollout>| v1::PlannedStage {
            index,
            name: name.to_owned(),
            approval,
            hosts: hosts.iter().map(|h| (*h).to_owned()).collect(),
            rollouts,
            ..Default::default()
        };
    let waves = vec![
        v1::PlanWave { wave: 1, services: vec!["db".to_owned(), "config".to_owned()] },
        v1::PlanWave { wave: 2, services: vec!["api".to_owned()] },
        v1::PlanWave { wave: 3, services: app_services[2..].iter().map(|s| (*s).to_owned()).collect() },
    ];
    let mut rollback_order: Vec<String> = app_services[2..].iter().map(|s| (*s).to_owned()).collect();
    rollback_order.extend(["api", "db", "config"].map(str::to_owned));
    v1::Plan {
        release: "shop".to_owned(),
        fleet_known: true,
        services,
        waves,
        edges,
        stages: vec![
            stage(0, CANARY, true, &["app-1", "db-1"], canary),
            stage(1, PROD, false, &["app-2", "app-3", "db-2"], prod),
        ],
        rollback_order,
        format: 2,
        ..Default::default()
    }
}

/// `r0`: shop 1.0.0 installed on every host, stage by stage.
fn install(rec: &mut Recorder) {
    rec.create("r0");
    for (stage, db, apps) in [(CANARY, &["db-1"][..], &["app-1"][..]), (PROD, &["db-2"][..], &["app-2", "app-3"][..])] {
        rec.stage_started(stage);
        rec.service(stage, "db", "1.0.0", &[("100%", db)], false);
        rec.service(stage, "config", "1.0.0", &[("100%", apps)], false);
        rec.service(stage, "api", "1.0.0", &[("100%", apps)], false);
        rec.service(stage, "web", "1.0.0", &[("100%", apps)], false);
        rec.stage_done(stage);
    }
    rec.finish("shop", shop_plan("1.0.0", false), v1::ReleaseState::Succeeded);
}

/// `r1` up to the point where web and worker start in `prod`: the canary stage (db's
/// migration first, web baked), its approval, then in prod a leader change while db
/// deploys (and the old leader's copy of the step refused), config, and api with its
/// rest batch interrupted once and tried again.
fn upgrade_until_web(rec: &mut Recorder) {
    const V: &str = "2.0.0";
    rec.create("r1");
    rec.write(CREATE_METHOD, "", false);
    rec.stage_started(CANARY);
    rec.service_started(CANARY, "db", V);
    rec.migrate(CANARY, "db", V, "db-1");
    rec.batch(CANARY, "db", V, "100%", &["db-1"], &[]);
    rec.batch_done(CANARY, "db", "100%");
    rec.service_done(CANARY, "db", V);
    rec.service(CANARY, "config", V, &[("100%", &["app-1"])], false);
    rec.service(CANARY, "api", V, &[("100%", &["app-1"])], false);
    rec.service(CANARY, "web", V, &[("100%", &["app-1"])], true);
    rec.service(CANARY, "worker", V, &[("100%", &["app-1"])], false);
    rec.stage_done(CANARY);
    rec.approve_stage(CANARY, "operator bob");

    rec.stage_started(PROD);
    rec.service_started(PROD, "db", V);
    let c = rec.batch_started(PROD, "db", V, "100%", &["db-2"]).remove(0);
    rec.run("db-2", &c, PROD, "deploy", "db", Some(V), None, Outcome::Succeeded);
    // The leader dies before the result is committed; its successor sends the step again.
    rec.term = 2;
    rec.event(K::LeaderChanged, "", &[]).command_ids = vec![c.clone()];
    rec.term = 1;
    rec.line("db-2", &c, PROD, HostHistoryEntry::Refused { highest_term: 2 });
    rec.term = 2;
    rec.result(K::HostSucceeded, PROD, "db", "db-2", &c);
    rec.batch_done(PROD, "db", "100%");
    rec.service_done(PROD, "db", V);
    rec.service(PROD, "config", V, &[("100%", &["app-2", "app-3"])], false);

    rec.service_started(PROD, "api", V);
    rec.batch(PROD, "api", V, "canary", &["app-2"], &[]);
    rec.batch_done(PROD, "api", "canary");
    // The agent on app-3 restarts in the middle of the deploy: interrupted, tried again.
    rec.batch(PROD, "api", V, "rest", &["app-3"], &["app-3"]);
    rec.batch(PROD, "api", V, "rest", &["app-3"], &[]);
    rec.batch_done(PROD, "api", "rest");
    rec.service_done(PROD, "api", V);
}

/// The shop upgraded to 2.0.0: r0 then r1, SUCCEEDED.
pub fn clean() -> History {
    let mut rec = Recorder::new(&[APPS[0], APPS[1], APPS[2], DB[0], DB[1]]);
    install(&mut rec);
    upgrade_until_web(&mut rec);
    rec.service(PROD, "worker", "2.0.0", &[("100%", &["app-2", "app-3"])], false);
    rec.service(PROD, "web", "2.0.0", &[("100%", &["app-2", "app-3"])], true);
    rec.stage_done(PROD);
    rec.finish("shop", shop_plan("2.0.0", true), v1::ReleaseState::Succeeded);
    rec.history(Some(42))
}

/// The shop upgraded to 2.0.0 without app-3: worker fails there in prod, an operator
/// excludes app-3, and web goes to app-2 only; SUCCEEDED, app-3 left on web 1.0.0.
pub fn excluded() -> History {
    let mut rec = Recorder::new(&[APPS[0], APPS[1], APPS[2], DB[0], DB[1]]);
    install(&mut rec);
    upgrade_until_web(&mut rec);
    rec.service_started(PROD, "worker", "2.0.0");
    rec.batch(PROD, "worker", "2.0.0", "100%", &["app-2", "app-3"], &["app-3"]);
    rec.event(K::ServiceFailed, PROD, &["worker"]);
    rec.event(K::Paused, "", &[]);
    let e = rec.event(K::HostExcluded, PROD, &["worker", "web"]);
    e.hosts = vec!["app-3".to_owned()];
    e.actor = "operator bob".to_owned();
    rec.batch_done(PROD, "worker", "100%");
    rec.service_done(PROD, "worker", "2.0.0");
    rec.service(PROD, "web", "2.0.0", &[("100%", &["app-2"])], true);
    rec.stage_done(PROD);
    rec.finish("shop", shop_plan("2.0.0", true), v1::ReleaseState::Succeeded);
    rec.history(Some(42))
}

/// The shop upgrade rolled back: web fails on app-3 in prod, and the whole release
/// rolls back (scope `release`) in the order web, worker, api, db (migrate_down, then
/// rollback), config; worker, new in 2.0.0, is stopped.
pub fn rolled_back() -> History {
    let mut rec = Recorder::new(&[APPS[0], APPS[1], APPS[2], DB[0], DB[1]]);
    install(&mut rec);
    upgrade_until_web(&mut rec);
    rec.service(PROD, "worker", "2.0.0", &[("100%", &["app-2", "app-3"])], false);
    rec.service_started(PROD, "web", "2.0.0");
    rec.batch(PROD, "web", "2.0.0", "100%", &["app-2", "app-3"], &["app-3"]);
    rec.event(K::ServiceFailed, PROD, &["web"]);
    rec.rollback_decided(&["web", "worker", "api", "db", "config"]);
    rec.roll_back(PROD, "web", Some("1.0.0"), &["app-1", "app-2"]);
    rec.roll_back(PROD, "worker", None, &APPS);
    rec.roll_back(PROD, "api", Some("1.0.0"), &APPS);
    rec.migrate_down(PROD, "db", "2.0.0", "db-1");
    rec.roll_back(PROD, "db", Some("1.0.0"), &DB);
    rec.roll_back(PROD, "config", Some("1.0.0"), &APPS);
    rec.finish("shop", shop_plan("2.0.0", true), v1::ReleaseState::RolledBack);
    rec.history(Some(7))
}

// ------------------------------------------------------------------ finders and editors

/// A host's record.
pub fn host<'a>(h: &'a mut History, name: &str) -> &'a mut HostRecord {
    h.hosts.iter_mut().find(|x| x.host == name).unwrap_or_else(|| panic!("no host {name}"))
}

/// The 0-based position of the line of `host` recording `event` (`started` or
/// `finished`) of the first step of `release` matching `action` and `service`.
pub fn line_of(h: &History, host_name: &str, release: &str, action: &str, service: &str, event: &str) -> usize {
    let lines = &h.hosts.iter().find(|x| x.host == host_name).expect("host").history;
    let command = lines
        .iter()
        .find_map(|l| match &l.entry {
            HostHistoryEntry::Started { action: a, service: Some(s), .. }
                if l.release_id == release && a == action && s == service =>
            {
                Some(l.command_id.clone())
            }
            _ => None,
        })
        .unwrap_or_else(|| panic!("no {action} of {service} in {release} on {host_name}"));
    lines
        .iter()
        .position(|l| {
            l.command_id == command
                && matches!(
                    (&l.entry, event),
                    (HostHistoryEntry::Started { .. }, "started") | (HostHistoryEntry::Finished { .. }, "finished")
                )
        })
        .unwrap_or_else(|| panic!("no {event} line of {command}"))
}

/// The command id on a line.
pub fn command_at(h: &History, host_name: &str, pos: usize) -> String {
    h.hosts.iter().find(|x| x.host == host_name).expect("host").history[pos].command_id.clone()
}

/// Moves a host's line from position `from` to just after position `after` (positions
/// before the move).
pub fn move_line_after(h: &mut History, host_name: &str, from: usize, after: usize) {
    let lines = &mut host(h, host_name).history;
    let line = lines.remove(from);
    let to = if from < after { after } else { after + 1 };
    lines.insert(to, line);
}

/// A release's event log.
pub fn events<'a>(h: &'a mut History, release: &str) -> &'a mut Vec<v1::ReleaseEvent> {
    h.events.get_mut(release).unwrap_or_else(|| panic!("no events of {release}"))
}

/// The position of the first event of `kind` in `stage` about `service`.
pub fn event_pos(h: &History, release: &str, kind: K, stage: &str, service: &str) -> usize {
    h.events[release]
        .iter()
        .position(|e| {
            e.kind == kind as i32 && e.stage == stage && e.services.first().map(String::as_str) == Some(service)
        })
        .unwrap_or_else(|| panic!("no {} of {service} in {stage}", kind.as_str_name()))
}

/// Moves an event to just after another (positions before the move) and numbers the log
/// again from 1, as a log committed in that order would be.
pub fn move_event_after(h: &mut History, release: &str, from: usize, after: usize) {
    let log = events(h, release);
    let e = log.remove(from);
    let to = if from < after { after } else { after + 1 };
    log.insert(to, e);
    for (i, e) in log.iter_mut().enumerate() {
        e.index = i as u64 + 1;
    }
}

/// A service's entry in a host's final inventory.
pub fn inventory<'a>(h: &'a mut History, host_name: &str, service: &str) -> &'a mut v1::ServiceInstance {
    host(h, host_name).services.iter_mut().find(|s| s.service == service).expect("the host has the service")
}
