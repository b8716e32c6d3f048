//! Cancelling steps in the executor (what the session does on a `Cancel`): the step
//! ends CANCELLED, whatever it was running (a hook, a gate check) is killed, and the
//! service is left on exactly one version, the old one; a cancelled command is
//! journaled, so it is answered, never executed, when repeated.

mod support;

use std::time::Duration;

use flotilla_agent::step::{Action, RunCheck, RunState, StepOutcome, StepPhase, Stop};
use flotilla_agent::{Executor, StepHandle};
use flotilla_sample_service::Behaviour;
use support::{World, count_lines, deploy_step, processes_in, step, until_phase, wait_until};

async fn deploy_v1(world: &World, executor: &Executor) -> u32 {
    let v1 = world.package("1.0.0");
    let r = executor.execute(deploy_step("d1", 1, world.deploy("d1", "1.0.0", &v1))).finish().await;
    assert_eq!(r.outcome, StepOutcome::Succeeded, "{r:?}");
    r.service.expect("service").pid
}

async fn finish_within(handle: StepHandle, within: Duration) -> flotilla_agent::step::StepResult {
    tokio::time::timeout(within, handle.finish()).await.expect("the cancelled step ends promptly")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_during_a_hanging_hook_kills_it_and_keeps_the_old_version() {
    let world = World::new();
    let executor = world.executor().await;
    let old_pid = deploy_v1(&world, &executor).await;
    let counter = world.dir.path().join("hook.count");
    let v2 = world.package("2.0.0");
    let mut d = world.deploy("d2", "2.0.0", &v2);
    d.hooks.before_install = format!("echo run >> {}; sleep 30", counter.display());
    d.hook_timeout_ms = 120_000;
    let mut handle = executor.execute(deploy_step("d2", 1, d.clone()));
    until_phase(&mut handle, StepPhase::RunningHook).await;
    wait_until(Duration::from_secs(10), "the hook to run", || async { count_lines(&counter) == 1 }).await;

    assert!(executor.cancel("d2", "release r1 aborted"), "the running step is cancellable");
    let result = finish_within(handle, Duration::from_secs(10)).await;
    assert_eq!(result.outcome, StepOutcome::Cancelled, "{result:?}");
    assert_eq!(result.failure, None);
    assert!(
        result.reason.starts_with("cancelled during running_hook: release r1 aborted"),
        "the reason says where and why: {}",
        result.reason
    );
    wait_until(Duration::from_secs(5), "the hook's processes to be killed", || async {
        world.processes_of("2.0.0").is_empty()
    })
    .await;
    // Nothing of the old version was touched.
    assert_eq!(world.current().as_deref(), Some("1.0.0"));
    assert_eq!(world.processes_of("1.0.0"), vec![old_pid]);
    world.wait_serving("1.0.0").await;

    let again = executor.execute(deploy_step("d2", 1, d)).finish().await;
    assert!(again.replayed && again.outcome == StepOutcome::Cancelled, "a repeat is answered: {again:?}");
    assert_eq!(count_lines(&counter), 1, "the hook ran once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_during_health_checks_reverts_to_the_old_version() {
    let world = World::new();
    let executor = world.executor().await;
    deploy_v1(&world, &executor).await;
    let v2 = world.package_with("2.0.0", &Behaviour { unhealthy: true, ..Behaviour::healthy("2.0.0") });
    let mut d = world.deploy("d2", "2.0.0", &v2);
    d.healthy_deadline_ms = 120_000;
    let mut handle = executor.execute(deploy_step("d2", 1, d));
    until_phase(&mut handle, StepPhase::CheckingHealth).await;
    world.wait_serving("2.0.0").await;

    assert!(executor.cancel("d2", "rollback of web"));
    let result = finish_within(handle, Duration::from_secs(30)).await;
    assert_eq!(result.outcome, StepOutcome::Cancelled, "{result:?}");
    assert!(result.reason.starts_with("cancelled during checking_health: rollback of web"), "{}", result.reason);
    assert!(result.reason.ends_with("web is back on 1.0.0"), "{}", result.reason);
    // Exactly one version: current, the recorded process and what answers agree.
    let service = result.service.expect("service");
    assert_eq!((service.version.as_str(), service.state), ("1.0.0", RunState::Running));
    assert_eq!(world.current().as_deref(), Some("1.0.0"));
    world.wait_serving("1.0.0").await;
    assert!(world.processes_of("2.0.0").is_empty(), "2.0.0 was stopped");
    assert_eq!(world.processes_of("1.0.0"), vec![service.pid]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_of_a_gate_check_kills_its_command() {
    let world = World::new();
    let executor = world.executor().await;
    let check =
        RunCheck { gate: "soak".into(), command: "sleep 30".into(), env: Default::default(), timeout_ms: 120_000 };
    let mut handle = executor.execute(step("g1", 1, Action::RunCheck(check)));
    until_phase(&mut handle, StepPhase::RunningCheck).await;
    let root = world.data().canonicalize().expect("data dir");
    wait_until(Duration::from_secs(10), "the check to run", || async { !processes_in(&root).is_empty() }).await;

    assert!(executor.cancel("g1", ""));
    let result = finish_within(handle, Duration::from_secs(10)).await;
    assert_eq!(result.outcome, StepOutcome::Cancelled, "{result:?}");
    assert_eq!(result.reason, "cancelled during running_check");
    wait_until(Duration::from_secs(5), "the check's command to be killed", || async { processes_in(&root).is_empty() })
        .await;
    assert!(!executor.cancel("g1", "again"), "a finished step keeps its result");
    assert!(!executor.cancel("never-sent", "x"), "an unknown step is not cancellable");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_cancelled_while_it_waits_for_its_service_never_runs() {
    let world = World::new();
    let executor = world.executor().await;
    let v1_pid = deploy_v1(&world, &executor).await;
    let v2 = world.package("2.0.0");
    let mut d = world.deploy("d2", "2.0.0", &v2);
    d.hooks.before_install = "sleep 30".into();
    let mut busy = executor.execute(deploy_step("d2", 1, d));
    until_phase(&mut busy, StepPhase::RunningHook).await;

    // Queued behind d2 on the same service.
    let stop = Action::Stop(Stop { service: "web".into(), stop_timeout_ms: 0 });
    let queued = executor.execute(step("s1", 1, stop.clone()));
    assert!(executor.cancel("s1", "not needed"));
    let result = finish_within(queued, Duration::from_secs(10)).await;
    assert_eq!(result.outcome, StepOutcome::Cancelled, "{result:?}");
    assert_eq!(result.reason, "cancelled during accepted: not needed");
    assert_eq!(executor.running_command_ids(), vec!["d2".to_owned()], "d2 still runs");

    assert!(executor.cancel("d2", "done"));
    assert_eq!(finish_within(busy, Duration::from_secs(10)).await.outcome, StepOutcome::Cancelled);
    let again = executor.execute(step("s1", 1, stop)).finish().await;
    assert!(again.replayed && again.outcome == StepOutcome::Cancelled, "{again:?}");
    // The stop never ran: the old version still runs, untouched.
    assert_eq!(world.processes_of("1.0.0"), vec![v1_pid]);
    world.wait_serving("1.0.0").await;
}
