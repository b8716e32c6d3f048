//! Every fault ends in a failed step with a clear reason, and the OLD version still
//! runs and serves HTTP: bad artifacts (sha256 mismatch, truncated download,
//! unreachable URL, `../x`, absolute paths, escaping symlinks and hard links), a hook
//! that hangs past its timeout (before and after the old process was stopped), a
//! process that exits at once, health never reached, a dependency contract missing.

mod support;

use flotilla_agent::Executor;
use flotilla_agent::step::{Deploy, StepFailure, StepOutcome, StepResult};
use flotilla_sample_service::Behaviour;
use support::{RawEntry, World, deploy_step, raw_tarball, sample_entries, truncating_server};

/// A world where 1.0.0 runs healthily; returns its pid.
async fn running_v1(world: &World) -> (Executor, u32) {
    let executor = world.executor().await;
    let v1 = world.package("1.0.0");
    let r = executor.run(deploy_step("v1", 1, world.deploy("v1", "1.0.0", &v1)), &no_progress()).await;
    assert_eq!(r.outcome, StepOutcome::Succeeded, "{r:?}");
    (executor, r.service.expect("service").pid)
}

/// Deploys `deploy` as 2.0.0, expects a failure of `kind` whose reason contains
/// `reason`, and checks that 1.0.0 still runs and serves (with the same pid when the
/// old process was never stopped).
async fn fails(
    world: &World,
    executor: &Executor,
    old_pid: u32,
    deploy: Deploy,
    kind: StepFailure,
    reason: &str,
    old_untouched: bool,
) -> StepResult {
    let r = executor.run(deploy_step("v2", 1, deploy), &no_progress()).await;
    assert_eq!(r.outcome, StepOutcome::Failed, "{r:?}");
    assert_eq!(r.failure, Some(kind), "{r:?}");
    assert!(r.reason.contains(reason), "reason {:?} should contain {reason:?}", r.reason);
    assert!(!r.reason.contains("reverting to the previous version failed"), "{}", r.reason);
    assert_eq!(world.current().as_deref(), Some("1.0.0"));
    assert_eq!(world.version().await.as_deref(), Some("1.0.0"), "the old version serves");
    let service = r.service.clone().expect("service");
    assert_eq!((service.version.as_str(), service.state), ("1.0.0", flotilla_agent::step::RunState::Running));
    if old_untouched {
        assert_eq!(service.pid, old_pid, "the old process was never stopped");
    }
    assert!(world.processes_of("2.0.0").is_empty(), "nothing of 2.0.0 runs");
    r
}

fn bad_artifact(world: &World, url: String, sha256: String) -> Deploy {
    let v2 = world.package("2.0.0");
    let mut d = world.deploy("v2", "2.0.0", &v2);
    d.artifact.url = url;
    d.artifact.sha256 = sha256;
    d
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sha256_mismatch() {
    let world = World::new();
    let (executor, pid) = running_v1(&world).await;
    let v2 = world.package("2.0.0");
    let wrong = "0".repeat(64);
    let d = bad_artifact(&world, v2.file_url(), wrong.clone());
    let expected =
        format!("sha256 mismatch for {}: expected {wrong}, got {} ({} bytes)", v2.file_url(), v2.sha256, v2.size);
    fails(&world, &executor, pid, d, StepFailure::Verify, &expected, true).await;
    assert!(!world.data().join("services/web/releases/2.0.0").exists(), "nothing unpacked");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncated_download() {
    let world = World::new();
    let (executor, pid) = running_v1(&world).await;
    let v2 = world.package("2.0.0");
    let bytes = std::fs::read(&v2.path).expect("read");
    let url = truncating_server(bytes[..bytes.len() / 2].to_vec(), bytes.len());
    let d = bad_artifact(&world, url.clone(), v2.sha256.clone());
    let expected = format!("fetching {url}: download truncated: got {} of {} bytes", bytes.len() / 2, bytes.len());
    fails(&world, &executor, pid, d, StepFailure::Fetch, &expected, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn download_over_http_works() {
    let world = World::new();
    let (executor, _) = running_v1(&world).await;
    let v2 = world.package("2.0.0");
    let url = support::http_server(std::fs::read(&v2.path).expect("read"));
    let d = bad_artifact(&world, url, v2.sha256.clone());
    let r = executor.run(deploy_step("v2", 1, d), &no_progress()).await;
    assert_eq!(r.outcome, StepOutcome::Succeeded, "{r:?}");
    world.wait_serving("2.0.0").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_url() {
    let world = World::new();
    let (executor, pid) = running_v1(&world).await;
    let port = support::free_port();
    let url = format!("http://127.0.0.1:{port}/a.tar.gz");
    let d = bad_artifact(&world, url.clone(), "a".repeat(64));
    let r = fails(&world, &executor, pid, d, StepFailure::Fetch, &format!("fetching {url}: "), true).await;
    assert!(r.reason.contains("Connection refused"), "{}", r.reason);
    let missing = format!("file://{}/missing.tar.gz", world.dir.path().display());
    let d = bad_artifact(&world, missing.clone(), "a".repeat(64));
    let r = executor.run(deploy_step("v2-file", 1, d), &no_progress()).await;
    assert_eq!(r.failure, Some(StepFailure::Fetch));
    assert_eq!(r.reason, format!("fetching {missing}: No such file or directory (os error 2)"));
}

async fn unsafe_tarball(extra: RawEntry, expected: &str) {
    let world = World::new();
    let (executor, pid) = running_v1(&world).await;
    let mut entries = sample_entries("2.0.0");
    entries.push(extra);
    let tarball = raw_tarball(&world.artifacts(), "evil.tar.gz", &entries);
    let d = bad_artifact(&world, tarball.file_url(), tarball.sha256.clone());
    fails(&world, &executor, pid, d, StepFailure::Unpack, expected, true).await;
    assert!(!world.data().join("services/web/releases/2.0.0").exists(), "nothing renamed into place");
    assert!(!world.dir.path().join("x").exists() && !world.data().join("services/web/x").exists());
    let leftovers: Vec<_> =
        std::fs::read_dir(world.data().join("services/web/tmp")).map(|d| d.flatten().collect()).unwrap_or_default();
    assert!(leftovers.is_empty(), "temporary files cleaned up: {leftovers:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tarball_with_dotdot() {
    unsafe_tarball(RawEntry::file("../x", b"evil", 0o644), "archive entry \"../x\": path has a `..` component").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tarball_with_absolute_path() {
    unsafe_tarball(
        RawEntry::file("/tmp/flotilla-evil", b"evil", 0o644),
        "archive entry \"/tmp/flotilla-evil\": absolute path",
    )
    .await;
    assert!(!std::path::Path::new("/tmp/flotilla-evil").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tarball_with_escaping_symlink() {
    unsafe_tarball(
        RawEntry::symlink("lib/escape", "../../../../etc"),
        "archive entry \"lib/escape\": symlink target \"../../../../etc\" escapes the release directory",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tarball_with_absolute_symlink_and_link_chain_and_hardlink() {
    unsafe_tarball(
        RawEntry::symlink("etc", "/etc"),
        "archive entry \"etc\": symlink target \"/etc\" is absolute (it escapes the release directory)",
    )
    .await;
    unsafe_tarball(RawEntry::hardlink("passwd", "../../etc/passwd"), "archive entry \"passwd\": hard link target")
        .await;
    // Each link stays inside on its own; together they climb out.
    let world = World::new();
    let (executor, pid) = running_v1(&world).await;
    let mut entries = sample_entries("2.0.0");
    entries.push(RawEntry::symlink("a", "b/.."));
    entries.push(RawEntry::symlink("b", "."));
    let tarball = raw_tarball(&world.artifacts(), "chain.tar.gz", &entries);
    let d = bad_artifact(&world, tarball.file_url(), tarball.sha256.clone());
    fails(
        &world,
        &executor,
        pid,
        d,
        StepFailure::Unpack,
        "archive entry \"a\": symlink target \"b/..\" escapes the release directory through other links",
        true,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hook_hanging_past_its_timeout_before_the_stop() {
    let world = World::new();
    let (executor, pid) = running_v1(&world).await;
    let v2 = world.package("2.0.0");
    let mut d = world.deploy("v2", "2.0.0", &v2);
    d.hooks.before_install = "echo preparing; sleep 30".into();
    d.hook_timeout_ms = 300;
    let started = std::time::Instant::now();
    let r = fails(
        &world,
        &executor,
        pid,
        d,
        StepFailure::HookTimeout,
        "hook before_install (`echo preparing; sleep 30`) timed out after 300ms and was killed",
        true,
    )
    .await;
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
    assert!(r.output_tail.contains("preparing"), "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hook_hanging_past_its_timeout_after_the_stop_reverts() {
    let world = World::new();
    let (executor, pid) = running_v1(&world).await;
    let v2 = world.package("2.0.0");
    let mut d = world.deploy("v2", "2.0.0", &v2);
    d.hooks.validate = "sleep 30".into();
    d.hook_timeout_ms = 300;
    fails(
        &world,
        &executor,
        pid,
        d,
        StepFailure::HookTimeout,
        "hook validate (`sleep 30`) timed out after 300ms",
        false,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn process_that_exits_at_once() {
    let world = World::new();
    let (executor, pid) = running_v1(&world).await;
    let v2 = world
        .package_with("2.0.0", &Behaviour { crash_after_ms: Some(0), exit_code: 3, ..Behaviour::healthy("2.0.0") });
    let d = world.deploy("v2", "2.0.0", &v2);
    let r = fails(
        &world,
        &executor,
        pid,
        d,
        StepFailure::ProcessExited,
        "process of web 2.0.0 exited (exit status: 3); last log line: sample: crashing at once with exit code 3",
        false,
    )
    .await;
    assert!(r.output_tail.contains("crashing at once"), "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_never_reaching_healthy() {
    let world = World::new();
    let (executor, pid) = running_v1(&world).await;
    let v2 = world.package_with("2.0.0", &Behaviour { unhealthy: true, ..Behaviour::healthy("2.0.0") });
    let mut d = world.deploy("v2", "2.0.0", &v2);
    d.healthy_deadline_ms = 1000;
    let expected = format!("health not reached within 1s: http http://127.0.0.1:{}/healthz: status 503 (", world.port);
    let r = fails(&world, &executor, pid, d, StepFailure::HealthDeadline, &expected, false).await;
    let report = &r.health[0];
    assert!(report.samples >= 5 && report.samples == report.failures && !report.passing, "{report:?}");
    assert_eq!(report.last_error, "status 503");
    assert!(r.reason.ends_with(&format!("({} of {} samples failed)", report.failures, report.samples)), "{}", r.reason);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_dependency_contract_refuses_to_start() {
    let world = World::new();
    let (executor, pid) = running_v1(&world).await;
    let dep = format!("http://127.0.0.1:{}/contract", support::free_port());
    let v2 = world.package_with(
        "2.0.0",
        &Behaviour { requires: Some((dep.clone(), "^2".into())), ..Behaviour::healthy("2.0.0") },
    );
    let d = world.deploy("v2", "2.0.0", &v2);
    fails(
        &world,
        &executor,
        pid,
        d,
        StepFailure::ProcessExited,
        &format!("refusing to start: dependency contract at {dep} is unreachable"),
        false,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_install_failure_leaves_nothing_running() {
    let world = World::new();
    let executor = world.executor().await;
    let v1 = world.package_with("1.0.0", &Behaviour { unhealthy: true, ..Behaviour::healthy("1.0.0") });
    let mut d = world.deploy("v1", "1.0.0", &v1);
    d.healthy_deadline_ms = 500;
    let r = executor.run(deploy_step("v1", 1, d), &no_progress()).await;
    assert_eq!(r.failure, Some(StepFailure::HealthDeadline), "{r:?}");
    assert_eq!(world.current(), None);
    assert_eq!(world.version().await, None);
    assert!(world.processes_of("1.0.0").is_empty());
}

fn no_progress() -> tokio::sync::mpsc::UnboundedSender<flotilla_agent::step::StepProgress> {
    tokio::sync::mpsc::unbounded_channel().0
}

/// 1.0.0 deployed by one agent; a second agent (re-adopting it) with `limits`.
async fn limited_agent(
    world: &World,
    limits: impl FnOnce(&mut flotilla_agent::artifact::ArtifactLimits),
) -> (Executor, u32) {
    let (first, pid) = running_v1(world).await;
    drop(first);
    let mut config = world.config();
    limits(&mut config.artifact_limits);
    let (executor, recovered) = Executor::open(config).await.expect("open");
    assert!(recovered.is_empty());
    (executor, pid)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn artifact_over_the_size_limit() {
    let world = World::new();
    let (executor, pid) = limited_agent(&world, |l| l.max_bytes = 100_000).await;
    let v2 = world.package("2.0.0");
    let d = world.deploy("v2", "2.0.0", &v2);
    let expected = format!("fetching {}: artifact is larger than the limit of 100000 bytes", v2.file_url());
    fails(&world, &executor, pid, d, StepFailure::Fetch, &expected, true).await;
    let url = support::http_server(std::fs::read(&v2.path).expect("read"));
    let d = bad_artifact(&world, url.clone(), v2.sha256.clone());
    let r = executor.run(deploy_step("v2-http", 1, d), &no_progress()).await;
    assert_eq!(r.reason, format!("fetching {url}: artifact is larger than the limit of 100000 bytes"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn download_past_its_timeout() {
    let world = World::new();
    let (executor, pid) = limited_agent(&world, |l| l.timeout = std::time::Duration::from_millis(500)).await;
    let url = support::stalling_server();
    let d = bad_artifact(&world, url.clone(), "a".repeat(64));
    fails(&world, &executor, pid, d, StepFailure::Fetch, &format!("fetching {url}: timed out after 500ms"), true).await;
}
