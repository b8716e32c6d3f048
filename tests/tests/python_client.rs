//! The coordinator API as an independent client meets it: the Python example in
//! `examples/python` (stubs generated from the proto files with `grpcio-tools`, errors
//! read with `grpcio-status`) against three real coordinators and real agents.
//!
//! The example plans a release, starts it with `--watch --approve-all` while this test
//! kills the leader its watch is attached to, resumes the watch on another coordinator
//! printing every event exactly once, approves the canary stage and sees the release
//! succeed; then it rolls the release back. Then `test_api_conventions.py` checks with
//! stock tooling what grpcurl-like clients rely on: server reflection v1 and v1alpha, a
//! call by name with reflected messages only, and every kind of error detail.
//!
//! Needs `python3` with the packages of `examples/python/requirements.txt`; without
//! them the test passes with a note, unless `FLOTILLA_REQUIRE_PYTHON=1` (as CI sets),
//! which makes their absence a failure.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use flotilla_proto::v1::{self, ReleaseState};
use flotilla_tests::fleet::{AppSpec, TestFleet, app_inventory, describe, event_lines, shop_hosts};
use flotilla_tests::{eventually, wait_for_exit};

/// Agents: two per role, hosts 1-3 in the canary cell.
const HOSTS: usize = 6;

/// Longest the whole test may take.
const TEST_BOUND: Duration = Duration::from_secs(240);

/// Longest a release (or its rollback) may take.
const RELEASE: Duration = Duration::from_secs(150);

/// Longest a short command of the example (`plan`, stub generation) may take.
const SHORT: Duration = Duration::from_secs(60);

/// Longest the Python conventions test may take.
const CONVENTIONS: Duration = Duration::from_secs(120);

/// Longest the inventory may take to show what the hosts run.
const INVENTORY: Duration = Duration::from_secs(30);

/// The Python modules the example and its test import.
const MODULES: &str = "grpc, grpc_tools, grpc_status, grpc_reflection, google.rpc.error_details_pb2, pytest";

fn example_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("the workspace root").join("examples").join("python")
}

/// Whether `python3` can import every module the example needs; fails the test instead
/// when `FLOTILLA_REQUIRE_PYTHON=1`.
#[allow(clippy::print_stderr, reason = "a skipped test must say so where the test runner shows it")]
fn python_ready() -> bool {
    let probe = Command::new("python3").arg("-c").arg(format!("import {MODULES}")).stdin(Stdio::null()).output();
    let why = match probe {
        Ok(out) if out.status.success() => return true,
        Ok(out) => String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        Err(e) => format!("python3 does not run: {e}"),
    };
    let install = format!("python3 -m pip install -r {}", example_dir().join("requirements.txt").display());
    assert!(
        std::env::var("FLOTILLA_REQUIRE_PYTHON").as_deref() != Ok("1"),
        "FLOTILLA_REQUIRE_PYTHON=1 but python3 cannot import {MODULES} ({why}); install them with `{install}`"
    );
    eprintln!("note: skipping the Python client test: python3 cannot import {MODULES} ({why}); `{install}` enables it");
    false
}

/// A Python process of the test, its output in files; killed when dropped.
struct Script {
    what: String,
    child: Child,
    stdout: PathBuf,
    stderr: PathBuf,
}

impl Script {
    /// Starts `python3 ARGS` in `dir` with the generated stubs in `stubs`, its output in
    /// `dir/NAME.out` and `dir/NAME.err`.
    fn spawn(dir: &Path, stubs: &Path, name: &str, args: &[&str], env: &[(&str, &str)]) -> Self {
        let stdout = dir.join(format!("{name}.out"));
        let stderr = dir.join(format!("{name}.err"));
        let child = Command::new("python3")
            .args(args)
            .current_dir(dir)
            .env("FLOTILLA_STUBS", stubs)
            // Nothing written into the source tree (__pycache__), output unbuffered.
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .env("PYTHONUNBUFFERED", "1")
            // Only what the test passes reaches the example from the environment.
            .env_remove("FLOTILLA_COORDINATORS")
            .env_remove("FLOTILLA_INSECURE")
            .env_remove("FLOTILLA_TLS_CA")
            .env_remove("FLOTILLA_TLS_CERT")
            .env_remove("FLOTILLA_TLS_KEY")
            .env_remove("FLOTILLA_TEST_SPEC")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&stdout).expect("a stdout file"))
            .stderr(std::fs::File::create(&stderr).expect("a stderr file"))
            .spawn()
            .expect("python3 starts");
        Self { what: format!("python3 {}", args.join(" ")), child, stdout, stderr }
    }

    /// What it printed on stdout so far.
    fn stdout(&self) -> String {
        std::fs::read_to_string(&self.stdout).unwrap_or_default()
    }

    /// What it printed on stderr so far.
    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// Both outputs, for failure messages.
    fn output(&self) -> String {
        format!("{}\n--- stdout:\n{}\n--- stderr:\n{}", self.what, self.stdout(), self.stderr())
    }

    /// Waits up to `within` for it to exit; its exit code (the test fails if it is
    /// still running then, or was killed by a signal).
    async fn exit_code(&mut self, within: Duration) -> i32 {
        match wait_for_exit(&mut self.child, within).await.expect("waiting for python3") {
            Some(status) => status.code().unwrap_or_else(|| panic!("{status}: {}", self.output())),
            None => panic!("still running after {within:?} (killed): {}", self.output()),
        }
    }
}

impl Drop for Script {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The event lines the example printed: (index, kind) per `INDEX KIND MESSAGE` line.
fn printed_events(stdout: &str) -> Vec<(u64, String)> {
    stdout
        .lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            let index = words.next()?.parse().ok()?;
            Some((index, words.next()?.to_owned()))
        })
        .collect()
}

/// The short name the example prints for an event kind (`BATCH_STARTED`).
fn short_kind(kind: i32) -> String {
    let name = v1::EventKind::try_from(kind).map_or("EVENT_KIND_UNKNOWN", |k| k.as_str_name());
    name.trim_start_matches("EVENT_KIND_").to_owned()
}

fn kinds_of(events: &[(u64, String)]) -> Vec<&str> {
    events.iter().map(|(_, k)| k.as_str()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_example_drives_a_release_through_a_leader_kill_and_stock_tooling_reads_every_error() {
    if !python_ready() {
        return;
    }
    if tokio::time::timeout(TEST_BOUND, scenario()).await.is_err() {
        panic!("the Python client test took longer than {TEST_BOUND:?}");
    }
}

async fn scenario() {
    let hosts = shop_hosts(HOSTS);
    let fleet = TestFleet::start(3, &hosts).await.unwrap_or_else(|e| panic!("starting the fleet: {e:#}"));
    let dir = fleet.dir().to_owned();
    let example = example_dir();
    let stubs = dir.join("python-stubs");

    // The stubs, generated from the proto files as the README says.
    let script = example.join("generate_stubs.py");
    let mut generate =
        Script::spawn(&dir, &stubs, "generate", &[&script.to_string_lossy(), &stubs.to_string_lossy()], &[]);
    assert_eq!(generate.exit_code(SHORT).await, 0, "generating the stubs: {}", generate.output());
    assert!(stubs.join("flotilla/v1/releases_pb2_grpc.py").is_file(), "{}", generate.output());
    drop(generate);

    // Version 1 everywhere (through the harness), the specs as files.
    let v1_spec = fleet.ok(AppSpec::install(1).toml());
    let installed = fleet.ok(fleet.submit("shop-v1.toml", &v1_spec).await);
    let r = fleet.ok(fleet.wait_finished(&installed, RELEASE).await);
    assert_eq!(r.state, ReleaseState::Succeeded as i32, "installing version 1: {}\n{}", describe(&r), fleet.logs());
    let v1_path = dir.join("shop-v1.toml");
    std::fs::write(&v1_path, &v1_spec).expect("writing the v1 spec");
    let v2_path = dir.join("shop-v2.toml");
    std::fs::write(&v2_path, fleet.ok(AppSpec::staged(2).canary_approval().toml())).expect("writing the v2 spec");
    let bad_path = dir.join("bad.toml");
    std::fs::write(&bad_path, "release = \"x\"\n[[service]]\nname = \"svc\"\nverison = \"1\"\n").expect("bad spec");

    // `flotilla_example.py --coordinators ADDRS --insecure COMMAND...`
    let example_py = example.join("flotilla_example.py").to_string_lossy().into_owned();
    let run = |name: &str, coordinators: &str, command: &[&str]| {
        let mut args = vec![example_py.as_str(), "--coordinators", coordinators, "--insecure"];
        args.extend_from_slice(command);
        Script::spawn(&dir, &stubs, name, &args, &[])
    };
    let all = fleet.addrs().join(",");
    let v2 = v2_path.to_string_lossy().into_owned();
    let bad = bad_path.to_string_lossy().into_owned();

    // plan: the live fleet's plan; a broken spec exits 2 naming each error's place.
    let mut plan = run("plan", &all, &["plan", &v2]);
    assert_eq!(plan.exit_code(SHORT).await, 0, "{}", plan.output());
    let planned = plan.stdout();
    assert!(planned.contains("planned against the live fleet"), "{}", plan.output());
    assert!(planned.contains("stage canary (approval before the next stage)"), "{}", plan.output());
    assert!(planned.contains("stage main"), "{}", plan.output());
    let mut refused = run("plan-bad", &all, &["plan", &bad]);
    assert_eq!(refused.exit_code(SHORT).await, 2, "{}", refused.output());
    let why = refused.stderr();
    assert!(why.contains("error: INVALID_SPEC (INVALID_ARGUMENT)"), "{}", refused.output());
    assert!(why.contains("invalid spec_toml: bad.toml:4:1: unknown key `verison`"), "{}", refused.output());
    assert!(why.contains("--> bad.toml:4:1"), "the rendered diagnostic: {}", refused.output());

    // start --watch --approve-all, attached to the leader first; the leader is killed
    // once the watch printed the first batch.
    let leader = fleet.ok(fleet.leader(Duration::from_secs(30)).await);
    let leader_addr = fleet.coordinator_addr(leader).expect("the leader's address").to_owned();
    let mut order = vec![leader_addr.clone()];
    order.extend(fleet.addrs().iter().filter(|a| **a != leader_addr).cloned());
    let order = order.join(",");
    let mut start = run("start", &order, &["start", &v2, "--watch", "--approve-all"]);
    let printed_batch = eventually(RELEASE, "the example to print the first BATCH_STARTED", || async {
        printed_events(&start.stdout()).iter().any(|(_, k)| k == "BATCH_STARTED").then_some(())
    })
    .await;
    if let Err(e) = printed_batch {
        panic!("{e:#}: {}\n{}", start.output(), fleet.logs());
    }
    fleet.kill9_coordinator(leader);
    let next = fleet.ok(fleet.leader(Duration::from_secs(30)).await);
    assert_ne!(next, leader, "a new leader");

    let code = start.exit_code(RELEASE).await;
    assert_eq!(code, 0, "the example's release: {}\n{}", start.output(), fleet.logs());
    let out = start.stdout();
    let id = out
        .lines()
        .next()
        .and_then(|l| l.strip_prefix("release "))
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or_else(|| panic!("no release id in {}", start.output()))
        .to_owned();
    let printed = printed_events(&out);
    let indexes: Vec<u64> = printed.iter().map(|(i, _)| *i).collect();
    assert_eq!(
        indexes,
        (1..=printed.len() as u64).collect::<Vec<_>>(),
        "every event once, in order: {}",
        start.output()
    );
    let kinds = kinds_of(&printed);
    assert_eq!(kinds.last(), Some(&"RELEASE_SUCCEEDED"), "{}", start.output());
    assert!(out.contains(&format!("release {id} ended: SUCCEEDED")), "{}", start.output());
    let required = kinds.iter().position(|k| *k == "APPROVAL_REQUIRED");
    let approved = kinds.iter().position(|k| *k == "APPROVED");
    assert!(required.is_some() && required < approved, "the example approved the canary stage: {}", start.output());
    assert!(kinds.contains(&"LEADER_CHANGED"), "the leader was killed mid-release: {}", start.output());
    let notes = start.stderr();
    assert!(notes.contains(&format!("watch of {id} on {leader_addr} ended")), "the watch lost the leader: {notes}");
    assert!(notes.contains("resuming after event"), "the watch resumed: {notes}");
    assert!(notes.contains("approving stage canary"), "{notes}");

    // What the cluster recorded is what the example printed.
    let r = fleet.ok(fleet.release(&id).await);
    let events = fleet.ok(fleet.events(&id).await);
    assert_eq!(r.state, ReleaseState::Succeeded as i32, "{}\n  {}", describe(&r), event_lines(&events));
    let recorded: Vec<(u64, String)> = events.iter().map(|e| (e.index, short_kind(e.kind))).collect();
    assert_eq!(printed, recorded, "the example printed the release's events exactly");
    fleet.ok(fleet.wait_inventory(&app_inventory(&hosts, |_, _| "2.0.0".to_owned()), INVENTORY).await);
    drop(start);

    // The killed coordinator comes back; then the example rolls the release back.
    fleet.ok(fleet.restart_coordinator(leader));
    fleet.ok(fleet.leader(Duration::from_secs(30)).await);
    let mut rollback = run("rollback", &all, &["rollback", &id, "--watch"]);
    assert_eq!(rollback.exit_code(RELEASE).await, 0, "{}\n{}", rollback.output(), fleet.logs());
    let back = printed_events(&rollback.stdout());
    let last = printed.len() as u64;
    let indexes: Vec<u64> = back.iter().map(|(i, _)| *i).collect();
    assert_eq!(indexes, (last + 1..=last + back.len() as u64).collect::<Vec<_>>(), "{}", rollback.output());
    let kinds = kinds_of(&back);
    assert_eq!(kinds.first(), Some(&"ROLLBACK_STARTED"), "{}", rollback.output());
    assert_eq!(kinds.last(), Some(&"RELEASE_ROLLED_BACK"), "{}", rollback.output());
    let r = fleet.ok(fleet.release(&id).await);
    assert_eq!(r.state, ReleaseState::RolledBack as i32, "{}", describe(&r));
    fleet.ok(fleet.wait_inventory(&app_inventory(&hosts, |_, _| "1.0.0".to_owned()), INVENTORY).await);
    drop(rollback);

    // Stock tooling: reflection, calls by name, every error detail. Its release of
    // version 1 (hosts already run it) shows a reused idempotency key.
    let test_file = example.join("test_api_conventions.py");
    let args = ["-m", "pytest", "-q", "-p", "no:cacheprovider", test_file.to_str().expect("a UTF-8 path")];
    let v1 = v1_path.to_string_lossy().into_owned();
    let env = [("FLOTILLA_COORDINATORS", all.as_str()), ("FLOTILLA_INSECURE", "1"), ("FLOTILLA_TEST_SPEC", &v1)];
    let mut conventions = Script::spawn(&dir, &stubs, "pytest", &args, &env);
    let code = conventions.exit_code(CONVENTIONS).await;
    assert_eq!(code, 0, "{}\n{}", conventions.output(), fleet.logs());
    let summary = conventions.stdout();
    assert!(summary.contains(" passed") && !summary.contains("skipped"), "{}", conventions.output());
}
