//! Local deploys of real sample-service artifacts with real processes: deploy, upgrade,
//! rollback, no-op redeploys, at-most-once execution, terms, re-adoption after the
//! executor is dropped, supervision, stop, gate checks, hooks, bake and retention.

mod support;

use std::time::Duration;

use flotilla_agent::driver::{Driver, DriverEvent};
use flotilla_agent::step::{
    Action, Bake, HookKind, Probe, Rollback, RunCheck, RunHook, RunState, StepFailure, StepOutcome, StepPhase, Stop,
};
use flotilla_sample_service::Behaviour;
use support::{World, count_lines, deploy_step, step, wait_until};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploy_upgrade_and_rollback() {
    let world = World::new();
    let executor = world.executor().await;
    let v1 = world.package("1.0.0");
    let v2 = world.package("2.0.0");

    let mut handle = executor.execute(deploy_step("d1", 1, world.deploy("d1", "1.0.0", &v1)));
    let mut phases = Vec::new();
    while let Some(p) = handle.progress.recv().await {
        phases.push(p.phase);
    }
    let r1 = handle.finish().await;
    assert_eq!(r1.outcome, StepOutcome::Succeeded, "{r1:?}");
    assert_eq!(
        phases,
        vec![
            StepPhase::Accepted,
            StepPhase::Fetching,
            StepPhase::Verifying,
            StepPhase::Unpacking,
            StepPhase::Stopping,
            StepPhase::Installing,
            StepPhase::Starting,
            StepPhase::CheckingHealth
        ]
    );
    let service = r1.service.as_ref().expect("service");
    assert_eq!((service.version.as_str(), service.state), ("1.0.0", RunState::Running));
    assert!(service.pid > 0);
    assert_eq!(service.provides.get("web-api").map(String::as_str), Some("1.0.0"));
    let health = &r1.health[0];
    assert_eq!(health.target, format!("http http://127.0.0.1:{}/healthz", world.port));
    assert!(health.passing && health.samples >= 1 && health.latency_p99_us >= health.latency_p50_us, "{health:?}");
    assert_eq!(world.version().await.as_deref(), Some("1.0.0"));
    // The service's environment.
    let env = std::fs::read_to_string(format!("/proc/{}/environ", service.pid)).expect("environ");
    for var in ["FLOTILLA_SERVICE=web", "FLOTILLA_VERSION=1.0.0", "FLOTILLA_HOST=test-host", "COMMAND_ID=d1"] {
        assert!(env.split('\0').any(|v| v == var), "{var} missing");
    }
    let log = std::fs::read_to_string(world.data().join("services/web/logs/1.0.0.log")).expect("log");
    assert!(log.contains("listening on 127.0.0.1"), "{log}");

    let r2 = executor.run(deploy_step("d2", 1, world.deploy("d2", "2.0.0", &v2)), &no_progress()).await;
    assert_eq!(r2.outcome, StepOutcome::Succeeded, "{r2:?}");
    assert_eq!(world.version().await.as_deref(), Some("2.0.0"));
    assert_eq!(world.current().as_deref(), Some("2.0.0"));
    assert_eq!(r2.service.as_ref().expect("service").kept_versions, vec!["1.0.0".to_owned()]);
    assert!(world.processes_of("1.0.0").is_empty(), "1.0.0 was stopped");

    let rollback = Action::Rollback(Rollback {
        service: "web".into(),
        to_version: String::new(),
        from_version: "2.0.0".into(),
        fallback: None,
    });
    let r3 = executor.run(step("rb1", 1, rollback), &no_progress()).await;
    assert_eq!(r3.outcome, StepOutcome::Succeeded, "{r3:?}");
    assert_eq!(world.version().await.as_deref(), Some("1.0.0"));
    assert_eq!(world.current().as_deref(), Some("1.0.0"));
    assert!(world.processes_of("2.0.0").is_empty(), "2.0.0 was stopped");

    // The same version again, healthy: nothing to do.
    let pid = executor.driver().status("web").expect("status").pid;
    let r4 = executor.run(deploy_step("d3", 1, world.deploy("d3", "1.0.0", &v1)), &no_progress()).await;
    assert_eq!(r4.outcome, StepOutcome::Skipped, "{r4:?}");
    assert_eq!(r4.reason, "already at 1.0.0");
    assert_eq!(executor.driver().status("web").expect("status").pid, pid, "not restarted");

    // Re-deploying 2.0.0 uses the kept release (no fetch): remove the artifact to prove it.
    std::fs::remove_file(&v2.path).expect("rm artifact");
    let r5 = executor.run(deploy_step("d4", 1, world.deploy("d4", "2.0.0", &v2)), &no_progress()).await;
    assert_eq!(r5.outcome, StepOutcome::Succeeded, "{r5:?}");
    world.wait_serving("2.0.0").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_runs_at_most_once_and_lower_terms_are_refused() {
    let world = World::new();
    let executor = world.executor().await;
    let v1 = world.package("1.0.0");
    let counter = world.dir.path().join("count");
    let mut deploy = world.deploy("once", "1.0.0", &v1);
    deploy.hooks.before_install = format!("echo run >> {}", counter.display());

    // Twice concurrently, then once more after it finished.
    let a = executor.execute(deploy_step("once", 5, deploy.clone()));
    let b = executor.execute(deploy_step("once", 5, deploy.clone()));
    let (a, b) = (a.finish().await, b.finish().await);
    assert_eq!(a.outcome, StepOutcome::Succeeded, "{a:?}");
    assert_eq!(b.outcome, StepOutcome::Succeeded, "{b:?}");
    assert!(a.replayed != b.replayed, "exactly one of them executed: {} {}", a.replayed, b.replayed);
    let c = executor.run(deploy_step("once", 5, deploy.clone()), &no_progress()).await;
    assert!(c.replayed);
    let executed = if a.replayed { &b } else { &a };
    assert_eq!(c.started_unix_ms, executed.started_unix_ms, "the recorded result");
    assert_eq!(count_lines(&counter), 1, "the hook ran once");

    // A lower term is refused, also after a restart of the agent.
    let check = |id: &str, term| {
        step(
            id,
            term,
            Action::RunCheck(RunCheck {
                gate: "g".into(),
                command: "true".into(),
                env: Default::default(),
                timeout_ms: 0,
            }),
        )
    };
    let refused = executor.run(check("old-leader", 4), &no_progress()).await;
    assert_eq!(refused.outcome, StepOutcome::Refused, "{refused:?}");
    assert!(
        refused.reason.contains("term 4 is lower than the highest term this agent has seen (5)"),
        "{}",
        refused.reason
    );
    drop(executor);
    let executor = world.executor().await;
    assert_eq!(executor.highest_term(), 5);
    assert_eq!(executor.run(check("old-leader-2", 4), &no_progress()).await.outcome, StepOutcome::Refused);
    assert_eq!(executor.run(check("new-leader", 6), &no_progress()).await.outcome, StepOutcome::Succeeded);
    assert_eq!(executor.highest_term(), 6);
    // The repeat is still answered from the journal after the restart.
    let again = executor.run(deploy_step("once", 5, deploy), &no_progress()).await;
    assert!(again.replayed && again.outcome == StepOutcome::Succeeded, "{again:?}");
    assert_eq!(count_lines(&counter), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_outlive_the_executor_and_are_readopted_then_supervised() {
    let world = World::new();
    let v1 = world.package("1.0.0");
    let pid = {
        let executor = world.executor().await;
        let r = executor.run(deploy_step("d1", 1, world.deploy("d1", "1.0.0", &v1)), &no_progress()).await;
        assert_eq!(r.outcome, StepOutcome::Succeeded, "{r:?}");
        r.service.expect("service").pid
    };
    // The executor is gone; the service is not.
    assert_eq!(world.version().await.as_deref(), Some("1.0.0"));
    let executor = world.executor().await;
    let status = executor.driver().status("web").expect("re-adopted");
    assert_eq!((status.pid, status.state), (pid, RunState::Running), "same process, not restarted");
    let inventory = executor.inventory();
    assert_eq!(inventory.len(), 1);
    assert_eq!((inventory[0].version.as_str(), inventory[0].pid), ("1.0.0", pid));

    // The re-adopted process crashes: supervision restarts it and reports it.
    let mut events = executor.driver().subscribe();
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGKILL).expect("kill");
    let crashed = tokio::time::timeout(Duration::from_secs(10), events.recv()).await.expect("event").expect("recv");
    assert!(matches!(&crashed, DriverEvent::Crashed { pid: p, .. } if *p == pid), "{crashed:?}");
    let restarted = tokio::time::timeout(Duration::from_secs(10), events.recv()).await.expect("event").expect("recv");
    let DriverEvent::Restarted { pid: new_pid, restarts, .. } = restarted else { panic!("{restarted:?}") };
    assert_ne!(new_pid, pid);
    assert_eq!(restarts, 1);
    world.wait_serving("1.0.0").await;
    assert_eq!(executor.inventory()[0].restarts, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_looping_service_is_restarted_with_backoff() {
    let world = World::new();
    let executor = world.executor().await;
    let v1 = world.package_with("1.0.0", &Behaviour { crash_after_ms: Some(700), ..Behaviour::healthy("1.0.0") });
    let mut deploy = world.deploy("d1", "1.0.0", &v1);
    deploy.healthy_for_ms = 0;
    let r = executor.run(deploy_step("d1", 1, deploy), &no_progress()).await;
    assert_eq!(r.outcome, StepOutcome::Succeeded, "{r:?}");
    let mut events = executor.driver().subscribe();
    let mut delays = Vec::new();
    while delays.len() < 3 {
        match tokio::time::timeout(Duration::from_secs(10), events.recv()).await.expect("event").expect("recv") {
            DriverEvent::Crashed { restart_in, exit, .. } => {
                assert!(exit.contains("exit status: 3"), "{exit}");
                delays.push(restart_in);
            }
            DriverEvent::Restarted { .. } => {}
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(delays, vec![Duration::from_millis(100), Duration::from_millis(200), Duration::from_millis(400)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_checks_hooks_and_bake() {
    let world = World::new();
    let executor = world.executor().await;
    let v1 = world.package("1.0.0");
    let marker = world.dir.path().join("migrated-down");
    let mut deploy = world.deploy("d1", "1.0.0", &v1);
    deploy.hooks.migrate_down = format!("echo down > {}", marker.display());
    assert!(executor.run(deploy_step("d1", 1, deploy), &no_progress()).await.is_success());

    let bake = |id: &str, health| {
        step(id, 1, Action::Bake(Bake { service: "web".into(), version: "1.0.0".into(), duration_ms: 300, health }))
    };
    let baked = executor.run(bake("b1", Vec::new()), &no_progress()).await;
    assert_eq!(baked.outcome, StepOutcome::Succeeded, "{baked:?}");
    assert!(baked.health[0].samples >= 3, "{baked:?}");
    let bad_check = flotilla_agent::step::HealthCheck {
        probe: Probe::Http {
            url: format!("http://127.0.0.1:{}/nope", world.port),
            expect_status: 200,
            body_contains: String::new(),
        },
        interval_ms: 50,
        timeout_ms: 500,
    };
    let unhealthy = executor.run(bake("b2", vec![bad_check]), &no_progress()).await;
    assert_eq!(unhealthy.failure, Some(StepFailure::Unhealthy), "{unhealthy:?}");
    assert_eq!(
        unhealthy.reason,
        format!("http http://127.0.0.1:{}/nope: status 404 (1 of 1 samples failed)", world.port)
    );

    let check = |id: &str, command: &str| {
        step(
            id,
            1,
            Action::RunCheck(RunCheck {
                gate: "smoke".into(),
                command: command.into(),
                env: Default::default(),
                timeout_ms: 500,
            }),
        )
    };
    let ok = executor.run(check("c1", "echo all good"), &no_progress()).await;
    assert_eq!((ok.outcome, ok.exit_code), (StepOutcome::Succeeded, Some(0)));
    assert!(ok.output_tail.contains("all good"), "{ok:?}");
    let failed = executor.run(check("c2", "echo broken >&2; exit 4"), &no_progress()).await;
    assert_eq!((failed.failure, failed.exit_code), (Some(StepFailure::Check), Some(4)));
    assert_eq!(failed.reason, "check smoke (`echo broken >&2; exit 4`) exited with status 4: broken");
    let slow = executor.run(check("c3", "sleep 30"), &no_progress()).await;
    assert_eq!(slow.failure, Some(StepFailure::Check));
    assert!(slow.reason.contains("timed out after 500ms"), "{}", slow.reason);

    let hook = Action::RunHook(RunHook {
        service: "web".into(),
        version: "1.0.0".into(),
        hook: HookKind::MigrateDown,
        command: format!("echo down > {}", marker.display()),
        timeout_ms: 5000,
        artifact: None,
    });
    let ran = executor.run(step("h1", 1, hook), &no_progress()).await;
    assert_eq!(ran.outcome, StepOutcome::Succeeded, "{ran:?}");
    assert!(marker.exists());

    let stopped = executor
        .run(step("s1", 1, Action::Stop(Stop { service: "web".into(), stop_timeout_ms: 0 })), &no_progress())
        .await;
    assert_eq!(stopped.outcome, StepOutcome::Succeeded, "{stopped:?}");
    assert!(stopped.reason.contains("stopped with SIGTERM"), "{}", stopped.reason);
    assert_eq!(stopped.service.expect("service").state, RunState::Stopped);
    assert_eq!(world.version().await, None);
    // Stopped stays stopped across an agent restart.
    drop(executor);
    let executor = world.executor().await;
    // An absence check: give supervision a few restart-backoff periods in which it must
    // NOT start the stopped service again.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(world.version().await, None);
    assert!(!executor.driver().status("web").is_some_and(|s| s.is_running()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_releases_are_pruned_but_never_the_current_or_previous() {
    let world = World::new();
    let mut config = world.config();
    config.keep_releases = 2;
    let (executor, _) = flotilla_agent::Executor::open(config).await.expect("open");
    for (i, version) in ["1.0.0", "1.1.0", "1.2.0", "1.3.0"].iter().enumerate() {
        let package = world.package(version);
        let id = format!("d{i}");
        let r = executor.run(deploy_step(&id, 1, world.deploy(&id, version, &package)), &no_progress()).await;
        assert_eq!(r.outcome, StepOutcome::Succeeded, "{r:?}");
    }
    let installed = flotilla_agent::layout::Layout::new(world.data()).installed_versions("web").expect("list");
    assert_eq!(installed, vec!["1.2.0", "1.3.0"]);
    assert!(!world.data().join("services/web/logs/1.0.0.log").exists());
    let rollback = Action::Rollback(Rollback {
        service: "web".into(),
        to_version: String::new(),
        from_version: String::new(),
        fallback: None,
    });
    let r = executor.run(step("rb", 1, rollback), &no_progress()).await;
    assert_eq!(r.outcome, StepOutcome::Succeeded, "{r:?}");
    world.wait_serving("1.2.0").await;
    let gone = Action::Rollback(Rollback {
        service: "web".into(),
        to_version: "1.0.0".into(),
        from_version: String::new(),
        fallback: None,
    });
    let r = executor.run(step("rb2", 1, gone), &no_progress()).await;
    assert_eq!(r.failure, Some(StepFailure::NoPrevious), "{r:?}");
    assert_eq!(r.reason, "web 1.0.0 is not kept on this host (kept: 1.2.0, 1.3.0) and no fallback was given");
    wait_until(Duration::from_secs(1), "still serving", || async { world.version().await.as_deref() == Some("1.2.0") })
        .await;
}

fn no_progress() -> tokio::sync::mpsc::UnboundedSender<flotilla_agent::step::StepProgress> {
    tokio::sync::mpsc::unbounded_channel().0
}
