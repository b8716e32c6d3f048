//! Releases of the six-service sample app through real processes on loopback: three
//! `flotilla-coordinator`s, nine `flotilla-agent`s (roles db/api/web, the first three in
//! the canary cell) and the sample service's real tar.gz artifacts.
//!
//! Every test first installs version 1 everywhere, then releases version 2, mostly in two
//! stages (canary cell, then the rest) with canaries, 1 s bakes and the `smoke` gate
//! (guided failure: in one stage, all hosts at once), and checks
//! what the coordinators say (release status and events over gRPC, the CLI's JSON, the
//! fleet inventory) against what the hosts really run (the agents' journals and logs,
//! the `current` symlinks and the sample processes).

use std::collections::BTreeMap;
use std::time::Duration;

use flotilla_proto::v1::{self, EventKind as K, ReleaseState};
use flotilla_sample_service::Behaviour;
use flotilla_tests::fleet::{
    APP, AppSpec, EDGES, HostSpec, TestFleet, app_inventory, describe, dispatched_steps, event_lines, events_of,
    shop_hosts,
};

/// Agents: three per role, hosts 1-3 in the canary cell.
const HOSTS: usize = 9;

/// Longest a release of the app may take.
const RELEASE: Duration = Duration::from_secs(180);

/// Longest the inventory may take to show what the hosts run (heartbeats every 500 ms).
const INVENTORY: Duration = Duration::from_secs(30);

/// Starts the fleet and installs version 1 of every service on every host.
async fn fleet_on_version_1() -> (TestFleet, Vec<HostSpec>) {
    let hosts = shop_hosts(HOSTS);
    let fleet = TestFleet::start(3, &hosts).await.unwrap_or_else(|e| panic!("starting the fleet: {e:#}"));
    let spec = fleet.ok(AppSpec::install(1).toml());
    let id = fleet.ok(fleet.submit("shop-v1.toml", &spec).await);
    let r = fleet.ok(fleet.wait_finished(&id, RELEASE).await);
    assert_eq!(r.state, ReleaseState::Succeeded as i32, "installing version 1: {}\n{}", describe(&r), fleet.logs());
    fleet.ok(fleet.wait_inventory(&app_inventory(&hosts, |_, _| "1.0.0".to_owned()), INVENTORY).await);
    (fleet, hosts)
}

/// Submits `spec` and waits for the release to end; returns its id, status and events.
async fn release(fleet: &TestFleet, spec: &AppSpec) -> (String, v1::Release, Vec<v1::ReleaseEvent>) {
    let text = fleet.ok(spec.toml());
    let id = fleet.ok(fleet.submit("shop.toml", &text).await);
    let r = fleet.ok(fleet.wait_finished(&id, RELEASE).await);
    let events = fleet.ok(fleet.events(&id).await);
    (id, r, events)
}

/// A version that answers 503 on every host outside the canary cell: the canary stage
/// passes, the main stage fails after its dependents started.
fn broken_outside_canary(hosts: &[HostSpec]) -> Behaviour {
    Behaviour {
        unhealthy_on: hosts.iter().filter(|h| h.label("cell") != "canary").map(|h| h.id.clone()).collect(),
        ..Behaviour::default()
    }
}

/// Index of the first event of `kind` about `service` in `stage`.
fn index_of(events: &[v1::ReleaseEvent], kind: K, stage: &str, service: &str) -> Option<u64> {
    events
        .iter()
        .find(|e| e.kind == kind as i32 && e.stage == stage && e.services.iter().any(|s| s == service))
        .map(|e| e.index)
}

fn assert_state(fleet: &TestFleet, r: &v1::Release, events: &[v1::ReleaseEvent], want: ReleaseState) {
    assert_eq!(
        r.state,
        want as i32,
        "release {} should be {want:?}, is {}\nevents:\n  {}\n{}",
        r.id,
        describe(r),
        event_lines(events),
        fleet.logs()
    );
}

/// Every step the release sent ran exactly once, on its host, and is journaled there as
/// done; no step of any release started twice on any agent.
fn assert_every_step_ran_once(fleet: &TestFleet, events: &[v1::ReleaseEvent]) {
    let audit = fleet.step_audit();
    assert!(audit.executed_twice().is_empty(), "steps executed more than once: {:?}", audit.executed_twice());
    let dispatched = dispatched_steps(events);
    assert!(!dispatched.is_empty(), "the release sent steps");
    for (cid, host) in &dispatched {
        let ran = audit.executed.get(cid).cloned().unwrap_or_default();
        assert_eq!(
            ran,
            vec![host.clone()],
            "step {cid} (sent to {host}) should have run exactly once, on {host}\nevents:\n  {}",
            event_lines(events)
        );
        let journaled = fleet.journal(host).into_iter().find(|r| r["command_id"] == cid.as_str());
        let state = journaled.as_ref().map(|r| r["state"].clone());
        assert_eq!(state, Some(serde_json::json!("done")), "{host}'s journal record of {cid}: {journaled:?}");
    }
}

/// On every (host, service) of `expected`: exactly one sample server runs, from the
/// expected version's directory, which `current` points at.
fn assert_one_version_per_service(fleet: &TestFleet, expected: &BTreeMap<(String, String), String>) {
    for ((host, service), version) in expected {
        let procs = fleet.service_processes(host, service);
        let versions: Vec<&str> = procs.iter().map(|(_, v)| v.as_str()).collect();
        assert_eq!(versions, vec![version.as_str()], "sample processes of {service} on {host}: {procs:?}");
        assert_eq!(fleet.current_version(host, service).as_deref(), Some(version.as_str()), "{host}'s {service}");
    }
}

/// The rollback of a `ledger` broken in the main stage: exactly ledger and its started
/// dependents, dependents first, each finished before the next starts; nothing else.
fn assert_cascade_of_ledger(events: &[v1::ReleaseEvent]) {
    let lines = event_lines(events);
    let failed: Vec<&str> =
        events_of(events, K::ServiceFailed).iter().flat_map(|e| e.services.iter().map(String::as_str)).collect();
    assert_eq!(failed, ["ledger"], "only ledger fails\n  {lines}");
    assert!(
        index_of(events, K::ServiceFailed, "main", "ledger").is_some(),
        "ledger fails in stage main (it is healthy in the canary cell)\n  {lines}"
    );
    let decided = events_of(events, K::RollbackStarted);
    assert_eq!(decided.len(), 1, "one rollback decision\n  {lines}");
    assert_eq!(
        decided[0].services,
        ["web", "payments", "ledger"],
        "the rollback set is ledger and its started dependents (payments: hard, web: config on payments), \
         dependents first; db (ledger's dependency), auth (a provider) and search (soft) are not in it\n  {lines}"
    );
    let started: Vec<&str> = events_of(events, K::ServiceRollbackStarted)
        .iter()
        .flat_map(|e| e.services.iter().map(String::as_str))
        .collect();
    let back: Vec<&str> =
        events_of(events, K::ServiceRolledBack).iter().flat_map(|e| e.services.iter().map(String::as_str)).collect();
    let mut started_once = started.clone();
    started_once.dedup();
    assert_eq!(started_once, ["web", "payments", "ledger"], "rollbacks start in reverse dependency order\n  {lines}");
    assert_eq!(back, ["web", "payments", "ledger"], "services are back in reverse dependency order\n  {lines}");
    // Strictly one after the other: a service starts rolling back only once the one
    // before it is back.
    for pair in ["web", "payments", "ledger"].windows(2) {
        let done = index_of_any_stage(events, K::ServiceRolledBack, pair[0]);
        let next = index_of_any_stage(events, K::ServiceRollbackStarted, pair[1]);
        assert!(
            done < next,
            "{} is back (event {done:?}) before {} starts back (event {next:?})\n  {lines}",
            pair[0],
            pair[1]
        );
    }
    assert!(events_of(events, K::MigrateDownStarted).is_empty(), "db is not rolled back: no migrate_down\n  {lines}");
}

fn index_of_any_stage(events: &[v1::ReleaseEvent], kind: K, service: &str) -> Option<u64> {
    events.iter().find(|e| e.kind == kind as i32 && e.services.iter().any(|s| s == service)).map(|e| e.index)
}

/// After a ledger cascade: ledger, payments and web back at 1.0.0 on every host; db,
/// auth and search (outside the set) still at 2.0.0.
fn after_ledger_cascade(hosts: &[HostSpec]) -> BTreeMap<(String, String), String> {
    app_inventory(hosts, |_, s| if ["ledger", "payments", "web"].contains(&s) { "1.0.0" } else { "2.0.0" }.to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn six_services_in_two_stages_with_a_gate_roll_out_in_dependency_order_and_every_host_runs_version_2() {
    let (fleet, hosts) = fleet_on_version_1().await;
    let (id, r, events) = release(&fleet, &AppSpec::staged(2)).await;
    assert_state(&fleet, &r, &events, ReleaseState::Succeeded);
    let lines = event_lines(&events);

    // Every service done in every stage, every host healthy, the gate passed in each.
    let stages: Vec<&str> = r.stages.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(stages, ["canary", "main"]);
    for st in &r.stages {
        assert_eq!(st.services.len(), APP.len(), "stage {}", st.name);
        for s in &st.services {
            assert_eq!(s.state, v1::ServiceState::Done as i32, "{} in stage {}: {}", s.service, st.name, describe(&r));
            assert!(s.hosts_total >= 1 && s.hosts_done == s.hosts_total && s.hosts_failed == 0, "{s:?}");
            assert_eq!(s.target_version, "2.0.0");
            assert_eq!(s.from_versions, ["1.0.0"], "{} came from version 1", s.service);
        }
        let gates: Vec<(&str, i32)> = st.gates.iter().map(|g| (g.gate.as_str(), g.state)).collect();
        assert_eq!(gates, [("smoke", v1::GateState::Passed as i32)], "stage {}", st.name);
    }

    // Inside each stage, a service starts only once its dependencies are done there,
    // the gate runs after payments and web waits for it; main starts after canary.
    for stage in ["canary", "main"] {
        for (dep, dependent, kind) in EDGES {
            let done = index_of(&events, K::ServiceDone, stage, dep);
            let started = index_of(&events, K::ServiceStarted, stage, dependent);
            assert!(
                done.is_some() && started.is_some() && done < started,
                "{dependent} starts in {stage} (event {started:?}) after {dep} is done there (event {done:?}, {kind})\n  {lines}"
            );
        }
        let in_stage = |kind: K| events.iter().find(|e| e.kind == kind as i32 && e.stage == stage).map(|e| e.index);
        let gate_started = in_stage(K::GateStarted);
        let gate_passed = in_stage(K::GatePassed);
        assert!(index_of(&events, K::ServiceDone, stage, "payments") < gate_started, "gate after payments\n  {lines}");
        assert!(gate_passed < index_of(&events, K::ServiceStarted, stage, "web"), "web after the gate\n  {lines}");
    }
    let canary_done = events.iter().find(|e| e.kind == K::StageDone as i32 && e.stage == "canary").map(|e| e.index);
    let first_main = events.iter().find(|e| e.stage == "main").map(|e| e.index);
    assert!(canary_done.is_some() && canary_done < first_main, "stage main starts after canary is done\n  {lines}");

    // Canary first: in the main stage (two hosts per service), one host, a bake, then the rest.
    for (service, _, _) in APP {
        let of = |kind: K| -> Vec<&v1::ReleaseEvent> {
            events
                .iter()
                .filter(|e| e.kind == kind as i32 && e.stage == "main" && e.services.iter().any(|s| s == service))
                .collect()
        };
        let batches = of(K::BatchStarted);
        assert_eq!(batches.len(), 2, "{service}: a canary batch and the rest in main\n  {lines}");
        assert_eq!(batches[0].hosts.len(), 1, "{service}'s canary is one host");
        let bake = of(K::BakeStarted).first().map(|e| e.index);
        assert!(bake.is_some_and(|b| batches[0].index < b && b < batches[1].index), "{service}: canary baked first");
    }
    let migrations = events_of(&events, K::MigrationStarted);
    assert_eq!(migrations.len(), 1, "db's migrate hook runs once per release\n  {lines}");
    assert_eq!((migrations[0].stage.as_str(), migrations[0].services.as_slice()), ("canary", &["db".to_owned()][..]));

    assert_every_step_ran_once(&fleet, &events);

    // What the hosts run: the inventory (gRPC and CLI) and the processes themselves.
    let v2 = app_inventory(&hosts, |_, _| "2.0.0".to_owned());
    fleet.ok(fleet.wait_inventory(&v2, INVENTORY).await);
    assert_one_version_per_service(&fleet, &v2);
    let agents: v1::ListAgentsResponse =
        serde_json::from_str(&fleet.ok(fleet.cli(&["agents", "-o", "json"]).await)).expect("a ListAgentsResponse");
    assert_eq!(agents.hosts.len(), HOSTS);
    for h in &agents.hosts {
        assert_eq!(h.state, v1::HostState::Online as i32, "{h:?}");
        for s in &h.services {
            assert_eq!((s.version.as_str(), s.state), ("2.0.0", v1::ServiceRunState::Running as i32), "{h:?}");
        }
    }
    let shown: v1::GetResponse =
        serde_json::from_str(&fleet.ok(fleet.cli(&["release", "show", &id, "-o", "json"]).await)).expect("JSON");
    let shown = shown.release.expect("GetResponse.release");
    assert_eq!(shown.state, ReleaseState::Succeeded as i32, "{}", describe(&shown));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_broken_outside_the_canary_cell_rolls_back_with_its_started_dependents_in_reverse_order() {
    let (fleet, hosts) = fleet_on_version_1().await;
    let spec = AppSpec::staged(2).behaviour("ledger", broken_outside_canary(&hosts));
    let (_, r, events) = release(&fleet, &spec).await;
    assert_state(&fleet, &r, &events, ReleaseState::RolledBack);
    assert_cascade_of_ledger(&events);
    assert_every_step_ran_once(&fleet, &events);
    let expected = after_ledger_cascade(&hosts);
    fleet.ok(fleet.wait_inventory(&expected, INVENTORY).await);
    assert_one_version_per_service(&fleet, &expected);
}

/// When, in a release, the leader is killed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Moment {
    /// Right after the first batch of the main stage was sent.
    Batch,
    /// Right after the first bake of the main stage was sent.
    Bake,
    /// Right after the first service rollback was sent (ledger broken as above).
    Rollback,
}

async fn kill_the_leader_during(moment: Moment) {
    let (fleet, hosts) = fleet_on_version_1().await;
    let mut spec = AppSpec::staged(2);
    if moment == Moment::Rollback {
        spec = spec.behaviour("ledger", broken_outside_canary(&hosts));
    }
    let text = fleet.ok(spec.toml());
    let id = fleet.ok(fleet.submit("shop.toml", &text).await);
    let trigger = fleet.ok(fleet
        .wait_event(&id, RELEASE, |e| match moment {
            Moment::Batch => e.kind == K::BatchStarted as i32 && e.stage == "main",
            Moment::Bake => e.kind == K::BakeStarted as i32 && e.stage == "main",
            Moment::Rollback => e.kind == K::ServiceRollbackStarted as i32,
        })
        .await);
    let killed = fleet.ok(fleet.kill9_leader().await);
    let next = fleet.ok(fleet.leader(Duration::from_secs(30)).await);
    assert_ne!(killed, next);

    let r = fleet.ok(fleet.wait_finished(&id, RELEASE).await);
    let events = fleet.ok(fleet.events(&id).await);
    let lines = event_lines(&events);
    let want = if moment == Moment::Rollback { ReleaseState::RolledBack } else { ReleaseState::Succeeded };
    assert_state(&fleet, &r, &events, want);

    // The new leader took the release over, and the steps in flight when the leader
    // died were reported to it: their reports come after its LEADER_CHANGED event (a
    // new leader commits that before it handles any report). (The events' `term` field
    // would say this directly, but the coordinator leaves it 0.)
    let took_over = events_of(&events, K::LeaderChanged)
        .into_iter()
        .find(|e| e.index > trigger.index)
        .unwrap_or_else(|| panic!("a LEADER_CHANGED event after the kill\n  {lines}"));
    assert!(!trigger.command_ids.is_empty(), "the trigger event sent steps: {trigger:?}");
    let report_of = |cid: &String| {
        let reported = [K::HostSucceeded, K::HostBaked, K::HostFailed].map(|k| k as i32);
        let report = events.iter().find(|e| reported.contains(&e.kind) && e.command_ids.contains(cid));
        report.unwrap_or_else(|| panic!("no report of {cid}\n  {lines}"))
    };
    // LEADER_CHANGED lists what the new leader sends again: every step in flight at the
    // kill, each of which had no result then, and its message counts them.
    for cid in &trigger.command_ids {
        assert!(took_over.command_ids.contains(cid), "{cid} is not among the steps sent again: {took_over:?}");
    }
    for cid in &took_over.command_ids {
        assert!(report_of(cid).index > took_over.index, "{cid} had a result before the takeover\n  {lines}");
    }
    let n = took_over.command_ids.len();
    let counted = format!("{n} step{} without a result", if n == 1 { "" } else { "s" });
    assert!(took_over.message.contains(&counted), "`{}` does not say `{counted}`", took_over.message);
    let done = if moment == Moment::Bake { K::HostBaked } else { K::HostSucceeded };
    for cid in &trigger.command_ids {
        let report = report_of(cid);
        assert_eq!(report.kind, done as i32, "{cid}: {}", report.message);
        assert!(
            report.index > took_over.index,
            "{cid} (sent at event {}) is reported at event {}, after the takeover at event {}: it was in flight \
             when the leader died\n  {lines}",
            trigger.index,
            report.index,
            took_over.index
        );
    }
    assert_every_step_ran_once(&fleet, &events);

    let expected = if moment == Moment::Rollback {
        assert_cascade_of_ledger(&events);
        after_ledger_cascade(&hosts)
    } else {
        app_inventory(&hosts, |_, _| "2.0.0".to_owned())
    };
    fleet.ok(fleet.wait_inventory(&expected, INVENTORY).await);
    assert_one_version_per_service(&fleet, &expected);
    // The killed coordinator rejoins and catches up with the finished release.
    fleet.ok(fleet.restart_coordinator(killed));
    fleet.ok(fleet.leader(Duration::from_secs(30)).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_leader_during_a_batch_finishes_the_release_with_every_step_run_once() {
    kill_the_leader_during(Moment::Batch).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_leader_during_a_bake_finishes_the_release_with_every_step_run_once() {
    kill_the_leader_during(Moment::Bake).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_leader_during_a_rollback_finishes_the_rollback_with_every_step_run_once() {
    kill_the_leader_during(Moment::Rollback).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_killed_mid_deploy_and_restarted_leaves_its_host_on_one_version_and_the_release_finishes() {
    let (fleet, hosts) = fleet_on_version_1().await;
    // search 2.0.0 listens only after 1.5 s: its deploy waits in `checking_health`.
    let slow = Behaviour { start_delay_ms: 1_500, ..Behaviour::default() };
    let spec = AppSpec::staged(2).behaviour("search", slow);
    let text = fleet.ok(spec.toml());
    let id = fleet.ok(fleet.submit("shop.toml", &text).await);

    // host-3 (the canary cell's web host) gets search first; kill its agent while that
    // deploy has started the new process and waits for its health.
    let victim = "host-3";
    let deadline = std::time::Instant::now() + RELEASE;
    let interrupted = loop {
        let running = fleet.journal(victim).into_iter().find(|r| {
            r["state"] == "in_progress"
                && r["phase"] == "checking_health"
                && r["step"]["action"]["deploy"]["service"] == "search"
        });
        if let Some(r) = running {
            break r["command_id"].as_str().unwrap_or_default().to_owned();
        }
        assert!(std::time::Instant::now() < deadline, "search never deployed on {victim}\n{}", fleet.logs());
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    fleet.kill9_agent(victim);
    let stranded = fleet.service_processes(victim, "search");
    assert_eq!(stranded.len(), 1, "the new search process outlives its agent: {stranded:?}");
    fleet.ok(fleet.restart_agent(victim));

    let r = fleet.ok(fleet.wait_finished(&id, RELEASE).await);
    let events = fleet.ok(fleet.events(&id).await);
    let lines = event_lines(&events);
    assert_state(&fleet, &r, &events, ReleaseState::Succeeded);

    // The interrupted step ran once; the restarted agent resolved it (not ran it again)
    // and reported it; the engine sent search to the host again as a new step.
    let audit = fleet.step_audit();
    assert_eq!(audit.executed.get(&interrupted), Some(&vec![victim.to_owned()]), "{interrupted} ran once");
    assert_eq!(audit.resolved.get(&interrupted), Some(&vec![victim.to_owned()]), "{interrupted} resolved at restart");
    let report = events
        .iter()
        .find(|e| e.kind == K::HostFailed as i32 && e.command_ids.contains(&interrupted))
        .unwrap_or_else(|| panic!("the interrupted step is reported failed\n  {lines}"));
    assert!(report.message.contains("agent restarted during"), "{}", report.message);
    assert_every_step_ran_once(&fleet, &events);

    // Every host, the victim included, runs exactly one version of each service: 2.0.0.
    let v2 = app_inventory(&hosts, |_, _| "2.0.0".to_owned());
    fleet.ok(fleet.wait_inventory(&v2, INVENTORY).await);
    assert_one_version_per_service(&fleet, &v2);
}

/// How long a coordinator may take to exit after SIGTERM: its shutdown timeout (5 s by
/// default) and the process's own exit.
const STOP_BOUND: Duration = Duration::from_secs(10);

/// SIGTERM of the leader while a `flotilla release watch` is attached to it: the leader
/// hands its leadership over and exits within its shutdown timeout, the watch's stream
/// ends with the new leader's address and the CLI resumes there from its last event,
/// printing every event once, and the release succeeds with every step run once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_of_the_leader_with_a_watch_attached_exits_in_time_and_the_watch_resumes_elsewhere() {
    let (fleet, hosts) = fleet_on_version_1().await;
    let text = fleet.ok(AppSpec::staged(2).toml());
    let id = fleet.ok(fleet.submit("shop.toml", &text).await);
    let leader = fleet.ok(fleet.leader(Duration::from_secs(10)).await);
    let leader_addr = fleet.coordinator_addr(leader).expect("the leader's address").to_owned();
    // The watch goes to the leader first.
    let mut addrs = vec![leader_addr.as_str()];
    addrs.extend(fleet.addrs().iter().map(String::as_str).filter(|a| *a != leader_addr));
    let mut watch = fleet.ok(fleet.spawn_cli("watch", &addrs, &["release", "watch", &id, "--output", "json"]));
    let batch =
        fleet.ok(fleet.wait_event(&id, RELEASE, |e| e.kind == K::BatchStarted as i32 && e.stage == "main").await);
    let printed = |watch: &flotilla_tests::fleet::CliProc| -> Vec<u64> {
        watch
            .stdout()
            .lines()
            .filter_map(|l| serde_json::from_str::<v1::ReleaseEvent>(l).ok())
            .map(|e| e.index)
            .collect()
    };
    fleet.ok(flotilla_tests::eventually(RELEASE, "the watch to print the main stage's first batch", || async {
        printed(&watch).contains(&batch.index).then_some(())
    })
    .await);
    let (took, code) = fleet.ok(fleet.terminate_coordinator(leader, STOP_BOUND).await);
    assert_eq!(code, Some(0), "coordinator {leader} exit code after SIGTERM\n{}", fleet.coordinator_log(leader));
    let log = fleet.coordinator_log(leader);
    assert!(log.contains("leadership handed over"), "the stopping leader handed over (took {took:?}):\n{log}");
    let next = fleet.ok(fleet.leader(Duration::from_secs(30)).await);
    assert_ne!(next, leader);

    let code = fleet.ok(watch.wait(RELEASE).await);
    assert_eq!(code, Some(0), "the watch exits 0 once the release succeeded; stderr:\n{}", watch.stderr());
    let r = fleet.ok(fleet.wait_finished(&id, RELEASE).await);
    let events = fleet.ok(fleet.events(&id).await);
    assert_state(&fleet, &r, &events, ReleaseState::Succeeded);
    let all: Vec<u64> = events.iter().map(|e| e.index).collect();
    assert_eq!(printed(&watch), all, "the watch printed every event once, in order, across the leader's stop");
    assert_every_step_ran_once(&fleet, &events);
    let expected = app_inventory(&hosts, |_, _| "2.0.0".to_owned());
    fleet.ok(fleet.wait_inventory(&expected, INVENTORY).await);
    assert_one_version_per_service(&fleet, &expected);
}

/// A rolling restart of the coordinators in the middle of a release: each in turn gets
/// SIGTERM, exits within its shutdown timeout and is started again on its data, and the
/// next is stopped only once the cluster agrees on a leader again. The release succeeds
/// with every step run exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_of_every_coordinator_during_a_release_leaves_it_succeeding_with_every_step_run_once() {
    let (fleet, hosts) = fleet_on_version_1().await;
    let text = fleet.ok(AppSpec::staged(2).toml());
    let id = fleet.ok(fleet.submit("shop.toml", &text).await);
    fleet.ok(fleet.wait_event(&id, RELEASE, |e| e.kind == K::BatchStarted as i32).await);
    for node in 1..=3 {
        let r = fleet.ok(fleet.release(&id).await);
        assert_eq!(
            r.finished_unix_ms,
            0,
            "the release ended before coordinator {node} was restarted: {}",
            describe(&r)
        );
        let (_, code) = fleet.ok(fleet.terminate_coordinator(node, STOP_BOUND).await);
        assert_eq!(code, Some(0), "coordinator {node} exit code after SIGTERM\n{}", fleet.coordinator_log(node));
        fleet.ok(fleet.restart_coordinator(node));
        fleet.ok(fleet.leader(Duration::from_secs(30)).await);
    }
    let r = fleet.ok(fleet.wait_finished(&id, RELEASE).await);
    let events = fleet.ok(fleet.events(&id).await);
    assert_state(&fleet, &r, &events, ReleaseState::Succeeded);
    assert_every_step_ran_once(&fleet, &events);
    let expected = app_inventory(&hosts, |_, _| "2.0.0".to_owned());
    fleet.ok(fleet.wait_inventory(&expected, INVENTORY).await);
    assert_one_version_per_service(&fleet, &expected);
}

/// Runs `flotilla ARGS` against the fleet and returns its stdout; it must exit 0.
async fn cli(fleet: &TestFleet, name: &str, args: &[&str]) -> String {
    let addrs: Vec<&str> = fleet.addrs().iter().map(String::as_str).collect();
    let mut proc = fleet.ok(fleet.spawn_cli(name, &addrs, args));
    let code = fleet.ok(proc.wait(Duration::from_secs(30)).await);
    assert_eq!(code, Some(0), "flotilla {args:?}: {}{}", proc.stdout(), proc.stderr());
    proc.stdout()
}

/// Guided failure through the CLI: a release pauses on `auth` failing on host-5; a retry
/// deploys only host-5 again (it fails again, the version is broken there); excluding
/// host-5 lets the release go on without it (auth, and payments that starts later, never
/// deploy there); host-9 is offline when `web` reaches it, and once its agent is back,
/// retrying it deploys it and the release succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_release_retries_one_failed_host_excludes_another_and_succeeds_without_it() {
    let (fleet, hosts) = fleet_on_version_1().await;
    let (bad, offline) = ("host-5", "host-9");
    let spec = AppSpec::install(2)
        .default_key("on_failure", r#""pause""#)
        .default_key("healthy_deadline", r#""3s""#)
        .behaviour("auth", Behaviour { unhealthy_on: vec![bad.to_owned()], ..Behaviour::default() });
    let id = fleet.ok(fleet.submit("shop.toml", &fleet.ok(spec.toml())).await);
    let paused = ReleaseState::Paused as i32;
    let on = |host: &'static str| {
        move |r: &v1::Release| {
            r.state == paused
                && r.stages.iter().flat_map(|s| &s.services).any(|s| s.failed_hosts.iter().any(|f| f.host == host))
        }
    };
    fleet.ok(fleet.wait_release(&id, "the release to pause on host-5", RELEASE, on(bad)).await);
    let show = cli(&fleet, "show-paused", &["release", "show", &id]).await;
    assert!(show.contains(&format!("flotilla release retry|exclude {id} --host {bad}")), "{show}");

    // While it is paused, host-9's agent goes away.
    fleet.kill9_agent(offline);
    fleet.ok(fleet.wait_hosts_state(&[offline.to_owned()], v1::HostState::Lost, Duration::from_secs(20)).await);

    // A retry deploys host-5 again, and only host-5; auth is still broken there.
    let out = cli(&fleet, "retry-bad", &["release", "retry", &id, "--host", bad, "--reason", "one more try"]).await;
    assert!(out.contains(&format!("release {id}: {bad} deploys again; now running")), "{out}");
    let retried = fleet.ok(fleet.wait_event(&id, RELEASE, |e| e.kind == K::HostRetried as i32).await);
    assert_eq!(
        (retried.hosts.as_slice(), retried.services.as_slice()),
        ([bad.to_owned()].as_slice(), ["auth".to_owned()].as_slice())
    );
    let auth_deploys = |events: &[v1::ReleaseEvent], host: &str| {
        events_of(events, K::BatchStarted)
            .iter()
            .filter(|e| e.services.iter().any(|s| s == "auth") && e.hosts.iter().any(|h| h == host))
            .count()
    };
    let r = fleet.ok(fleet
        .wait_release(&id, "auth to fail on host-5 again", RELEASE, |r| {
            r.state == paused && events_after(r, retried.index)
        })
        .await);
    let events = fleet.ok(fleet.events(&id).await);
    assert_eq!(auth_deploys(&events, bad), 2, "host-5 got auth twice\n  {}", event_lines(&events));
    assert_eq!(auth_deploys(&events, "host-2"), 1, "host-2 (healthy) got auth once\n  {}", event_lines(&events));
    assert!(r.reason.contains(bad), "{}", r.reason);

    // Excluding host-5: the release goes on without it.
    let args = ["release", "exclude", &id, "--host", bad, "--reason", "bad disk", "--output", "json"];
    let out: serde_json::Value = serde_json::from_str(&cli(&fleet, "exclude", &args).await).expect("JSON");
    let auth =
        out["release"]["stages"][0]["services"].as_array().and_then(|s| s.iter().find(|s| s["service"] == "auth"));
    assert_eq!(auth.map(|a| a["excludedHosts"].clone()), Some(serde_json::json!([bad])), "ExcludeHostResponse: {out}");
    // web reaches host-9, which is offline: it counts as failed and the release pauses.
    let r = fleet.ok(fleet.wait_release(&id, "the release to pause on host-9", RELEASE, on(offline)).await);
    assert!(
        r.reason.contains(offline) && r.reason.contains("offline"),
        "the pause says {offline} was offline: {}",
        r.reason
    );
    let events = fleet.ok(fleet.events(&id).await);
    let offline_batch = events
        .iter()
        .find(|e| {
            e.kind == K::BatchStarted as i32
                && e.services.iter().any(|s| s == "web")
                && e.hosts.iter().any(|h| h == offline)
        })
        .unwrap_or_else(|| panic!("a batch with {offline}\n  {}", event_lines(&events)));
    assert!(offline_batch.message.contains(&format!("offline, counted as failed: {offline}")), "{offline_batch:?}");
    let web_steps_to = |events: &[v1::ReleaseEvent], host: &str| {
        let web: Vec<&String> = events_of(events, K::BatchStarted)
            .iter()
            .filter(|e| e.services.iter().any(|s| s == "web"))
            .flat_map(|e| &e.command_ids)
            .collect();
        dispatched_steps(events).iter().filter(|(cid, h)| *h == host && web.contains(cid)).count()
    };
    assert_eq!(web_steps_to(&events, offline), 0, "no step of web was sent to the offline host");
    // Once the host is back, retrying it deploys it and the release completes.
    fleet.ok(fleet.restart_agent(offline));
    fleet.ok(fleet.wait_hosts_state(&[offline.to_owned()], v1::HostState::Online, Duration::from_secs(30)).await);
    let args = ["release", "retry", &id, "--host", offline, "--output", "json"];
    let out: serde_json::Value = serde_json::from_str(&cli(&fleet, "retry-offline", &args).await).expect("JSON");
    assert_eq!(out["release"]["id"], id.as_str(), "RetryHostResponse: {out}");
    assert_ne!(out["release"]["state"], "RELEASE_STATE_PAUSED", "RetryHostResponse: {out}");

    let r = fleet.ok(fleet.wait_finished(&id, RELEASE).await);
    let events = fleet.ok(fleet.events(&id).await);
    assert_state(&fleet, &r, &events, ReleaseState::Succeeded);
    let lines = event_lines(&events);
    let excluded = events_of(&events, K::HostExcluded);
    assert_eq!(excluded.len(), 1, "one exclusion\n  {lines}");
    assert!(excluded[0].message.contains("excluded by") && excluded[0].message.contains("bad disk"), "{lines}");
    assert_eq!(events_of(&events, K::HostRetried).len(), 2, "{lines}");
    assert_eq!(web_steps_to(&events, offline), 1, "after the retry, web went to {offline}\n  {lines}");
    let services =
        |name: &str| r.stages.iter().flat_map(|s| &s.services).find(|s| s.service == name).cloned().unwrap_or_default();
    assert_eq!(services("auth").excluded_hosts, [bad], "{}", describe(&r));
    assert_eq!(services("payments").excluded_hosts, [bad], "payments started after the exclusion: {}", describe(&r));
    let payments_to_bad = events_of(&events, K::BatchStarted)
        .iter()
        .any(|e| e.services.iter().any(|s| s == "payments") && e.hosts.iter().any(|h| h == bad));
    assert!(!payments_to_bad, "nothing of payments went to the excluded host\n  {lines}");
    assert_every_step_ran_once(&fleet, &events);
    // host-5 keeps auth and payments 1.0.0, and ledger too unless it finished there
    // before the exclusion; every other host runs 2.0.0.
    let ledger_kept = services("ledger").excluded_hosts.iter().any(|h| h == bad);
    let want = app_inventory(&hosts, |h, s| {
        let kept = h.id == bad && (s == "auth" || s == "payments" || (s == "ledger" && ledger_kept));
        if kept { "1.0.0" } else { "2.0.0" }.to_owned()
    });
    fleet.ok(fleet.wait_inventory(&want, INVENTORY).await);
    assert_one_version_per_service(&fleet, &want);
    let show = cli(&fleet, "show-done", &["release", "show", &id]).await;
    assert!(show.contains(&format!("excluded: {bad}")), "{show}");
}

/// Whether the release has events after `index`.
fn events_after(r: &v1::Release, index: u64) -> bool {
    r.last_event_index > index
}
