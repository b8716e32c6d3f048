//! `flotilla demo`, the README's main command, run as a user runs it: three
//! coordinators, agents and the sample app in one process; a release that succeeds,
//! one with a broken service that rolls back with its dependents, dependents first,
//! one whose leading coordinator stops in the middle, and a demo stopped with SIGTERM
//! that leaves nothing behind.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use flotilla_net::pki::{self, PeerIdentity, Role};

/// Longest a whole demo may take (about a minute on a quiet machine).
const DEMO: Duration = Duration::from_secs(300);

/// A running `flotilla demo` with its output in files.
struct Demo {
    child: Child,
    out: PathBuf,
    _dir: tempfile::TempDir,
}

impl Demo {
    fn start(args: &[&str]) -> Self {
        let dir = tempfile::tempdir().expect("a temp dir");
        let out = dir.path().join("demo.out");
        let file = std::fs::File::create(&out).expect("the output file");
        let child = Command::new(env!("CARGO_BIN_EXE_flotilla"))
            .arg("demo")
            .args(args)
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("the output file"))
            .stderr(file)
            .spawn()
            .expect("flotilla demo starts");
        Self { child, out, _dir: dir }
    }

    fn output(&self) -> String {
        std::fs::read_to_string(&self.out).unwrap_or_default()
    }

    /// Waits for the demo to end; its exit code and everything it printed. A demo still
    /// running after `within` is killed and the test fails.
    fn finish(mut self, within: Duration) -> (i32, String) {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().expect("waiting for the demo") {
                return (status.code().unwrap_or(-1), self.output());
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!("the demo did not end within {within:?}:\n{}", self.output());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits until the demo printed `needle`.
    fn wait_for(&self, needle: &str, within: Duration) {
        let deadline = Instant::now() + within;
        while !self.output().contains(needle) {
            assert!(
                Instant::now() < deadline,
                "the demo did not print `{needle}` within {within:?}:\n{}",
                self.output()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn demo(args: &[&str]) -> (i32, String) {
    Demo::start(args).finish(DEMO)
}

fn position(text: &str, needle: &str) -> usize {
    text.find(needle).unwrap_or_else(|| panic!("`{needle}` not in the demo's output:\n{text}"))
}

/// The processes whose working directory is under `dir`.
fn processes_under(dir: &Path) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    entries
        .flatten()
        .filter_map(|e| {
            let pid = e.file_name().to_str()?.parse::<i32>().ok()?;
            let cwd = std::fs::read_link(e.path().join("cwd")).ok()?;
            cwd.starts_with(dir).then_some(pid)
        })
        .collect()
}

#[test]
fn the_demo_releases_the_sample_app_through_both_stages() {
    let (code, out) = demo(&["--agents", "6", "--keep"]);
    assert_eq!(code, 0, "{out}");
    // Every process ran with a certificate of the run's own CA, naming it.
    assert!(position(&out, "starting three coordinators (mutual TLS)") < position(&out, "release shop-v1"));
    let kept = out.lines().find_map(|l| l.strip_prefix("demo files kept in ")).expect("the kept directory");
    let kept = Path::new(kept.trim());
    for (file, role, name) in [
        ("coordinator-2.pem", Role::Coordinator, "2"),
        ("agent-host-6.pem", Role::Agent, "host-6"),
        ("operator-demo.pem", Role::Operator, "demo"),
    ] {
        let pem = std::fs::read_to_string(kept.join("pki").join(file)).expect("a certificate of the demo");
        let want = PeerIdentity::new(pki::DEFAULT_TRUST_DOMAIN, role, name).expect("an identity");
        assert_eq!(pki::identities_of(&pem), [want], "{file}");
        let operator_role = pki::CertInfo::parse_pem(&pem).expect("a certificate").operator_role;
        let admin = (role == Role::Operator).then_some(pki::OperatorRole::Admin);
        assert_eq!(operator_role, admin, "{file}: the demo's operator is an admin, no one else has a role");
    }
    std::fs::remove_dir_all(kept).expect("the kept directory is removed");
    // Dependency order inside a stage, the migration first, the gate before web.
    let migrated = position(&out, "[canary] db: migrate hook succeeded");
    let db_done = position(&out, "[canary] db 2.0.0 done in stage canary");
    let ledger_started = position(&out, "[canary] ledger 2.0.0 started in stage canary");
    let gate = position(&out, "[canary] gate smoke passed in stage canary");
    let web_started = position(&out, "[canary] web 2.0.0 started in stage canary");
    assert!(migrated < db_done && db_done < ledger_started && gate < web_started, "{out}");
    let main_started = position(&out, "[main] stage main started");
    assert!(position(&out, "[canary] stage canary done") < main_started);
    position(&out, "release succeeded: 6 services in 2 stages");
}

#[test]
fn a_broken_service_rolls_back_with_its_dependents_dependents_first() {
    let (code, out) = demo(&["--agents", "6", "--fail", "ledger"]);
    assert_eq!(code, 0, "{out}");
    let decided = position(&out, "rolling back web, payments, ledger");
    let web = position(&out, "web is back at 1.0.0");
    let payments = position(&out, "payments is back at 1.0.0");
    let ledger = position(&out, "ledger is back at 1.0.0");
    assert!(decided < web && web < payments && payments < ledger, "{out}");
    position(&out, "the broken ledger was caught and rolled back");
    assert!(!out.contains("db is back"), "db does not depend on ledger and stays: {out}");
}

/// The README's `demo --kill-leader`: the leading coordinator stops while the release
/// deploys and is watched; another takes the release over and it succeeds.
#[test]
fn the_leader_stopped_in_the_middle_of_the_release_hands_it_to_another_that_finishes_it() {
    let (code, out) = demo(&["--agents", "6", "--kill-leader"]);
    assert_eq!(code, 0, "{out}");
    let stopping = position(&out, "==> stopping the leader, coordinator");
    let stopped = position(&out, "==> coordinator stopped");
    let took_over = position(&out, "leads now and took the release over");
    assert!(stopping < stopped && stopping < took_over, "{out}");
    let succeeded = position(&out, "release succeeded: 6 services in 2 stages");
    assert!(took_over < succeeded, "{out}");
    position(&out, "==> the release succeeded");
}

/// SIGTERM (what `timeout` and service managers send) in the middle of the release
/// ends the demo like Ctrl-C: its sample services are stopped and its directory is gone.
#[test]
fn a_demo_stopped_with_sigterm_leaves_no_process_and_no_directory_behind() {
    let demo = Demo::start(&["--agents", "6"]);
    demo.wait_for("submitted release shop-v2", DEMO);
    let out = demo.output();
    let dir = out
        .lines()
        .find_map(|l| l.strip_prefix("==> working in "))
        .map(PathBuf::from)
        .unwrap_or_else(|| panic!("the demo says where it works:\n{out}"));
    assert!(!processes_under(&dir).is_empty(), "the sample services run under {}", dir.display());
    let pid = nix::unistd::Pid::from_raw(i32::try_from(demo.child.id()).expect("a pid"));
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("SIGTERM sent");
    let (code, out) = demo.finish(Duration::from_secs(30));
    assert_eq!(code, 1, "a terminated demo exits 1:\n{out}");
    assert!(out.contains("terminated (SIGTERM)"), "{out}");
    assert!(!dir.exists(), "the demo's directory {} is removed", dir.display());
    let left = processes_under(&dir);
    assert!(left.is_empty(), "processes left under {}: {left:?}", dir.display());
}

/// The README's `demo --fail-metrics payments`: payments 2.0.0 answers 5 % of its
/// requests with 500 while its health checks pass; canary analysis against the demo's
/// Prometheus fails it at its canary (in the canary cell, against the hosts the next
/// stage would deploy to), and it rolls back before any other host gets it. Needs
/// `prometheus` on the PATH: without one the test passes with a note, unless
/// `FLOTILLA_REQUIRE_PROMETHEUS=1` (as CI sets).
#[test]
#[allow(clippy::print_stderr, reason = "a skipped test must say so where the test runner shows it")]
fn a_version_failing_only_by_its_metrics_is_caught_at_its_canary_and_rolled_back() {
    if !flotilla_sample_service::prometheus::available() {
        assert!(
            std::env::var("FLOTILLA_REQUIRE_PROMETHEUS").as_deref() != Ok("1"),
            "FLOTILLA_REQUIRE_PROMETHEUS=1 but no `prometheus` is on the PATH"
        );
        eprintln!("no prometheus on the PATH: skipping the --fail-metrics demo");
        return;
    }
    let (code, out) = demo(&["--agents", "6", "--fail-metrics", "payments"]);
    assert_eq!(code, 0, "{out}");
    let healthy = position(&out, "[canary] payments 2.0.0 deployed and healthy on host-2");
    let started = position(&out, "[canary] payments canary analysis started: 1 metric (error_ratio)");
    let failed = position(&out, "[canary] payments canary failed analysis");
    let back = position(&out, "payments is back at 1.0.0");
    assert!(healthy < started && started < failed && failed < back, "{out}");
    // The canary's median error ratio is measured from real requests: about
    // the 5% the broken version answers with errors, never exactly.
    let lead = "critical metric error_ratio failed: error_ratio canary ";
    let at = position(&out, lead) + lead.len();
    let (ratio, rest) = out[at..].split_once(' ').unwrap_or_else(|| panic!("no ratio after `{lead}`: {out}"));
    let ratio: f64 = ratio.parse().unwrap_or_else(|e| panic!("`{ratio}` after `{lead}` is not a number ({e}): {out}"));
    assert!((0.03..=0.08).contains(&ratio), "canary error ratio {ratio} is not about 5%: {out}");
    assert!(rest.starts_with("vs baseline 0 ("), "the baseline's error ratio is not 0: {out}");
    assert!(!out.contains("[main]"), "no host past the canary cell got the version: {out}");
    position(&out, "==> as expected, canary analysis caught the errors of payments at its canary");
}

#[test]
fn the_failing_flags_name_a_service_of_the_app_and_exclude_each_other() {
    let (code, out) = demo(&["--fail-metrics", "nope"]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("--fail-metrics nope: the demo app has db, auth, ledger, payments, search, web"), "{out}");
    let (code, out) = demo(&["--fail", "web", "--fail-metrics", "db"]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("cannot be used with"), "{out}");
}
