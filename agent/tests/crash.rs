//! `kill -9` of a real agent process (`flotilla-agent local-deploy`) in the middle of
//! each deploy phase, then a restart with the same step: the step is reported either
//! completed or failed with "agent restarted during <phase>", the service runs exactly
//! one version (the old one unless the step completed) and serves it, the command is
//! not executed twice, and the host's history shows it started once and finished once.

mod support;

use std::io::{BufRead as _, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use flotilla_agent::step::{Action, Bake, Step, StepOutcome, StepResult};
use flotilla_shared::history::HostHistoryEntry;
use support::{World, count_lines, deploy_step, step};

const AGENT: &str = env!("CARGO_BIN_EXE_flotilla-agent");

/// Runs `local-deploy` to the end; returns its JSON lines.
fn run_agent(world: &World, step_file: &Path) -> Vec<serde_json::Value> {
    let output = Command::new(AGENT)
        .args(["local-deploy", "--host-id", "crash-host", "--restart-backoff-ms", "100", "--data-dir"])
        .arg(world.data())
        .arg("--step")
        .arg(step_file)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run the agent");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.code().is_some_and(|c| c == 0 || c == 3),
        "agent failed: {:?}\n{}\n{}",
        output.status,
        stdout,
        String::from_utf8_lossy(&output.stderr)
    );
    stdout.lines().map(|l| serde_json::from_str(l).expect("JSON line")).collect()
}

/// Starts `local-deploy` paused at `pause` (or, with `pause` `hook`, unpaused until a
/// hook process runs), waits until it is there, and kills it with SIGKILL.
fn kill_agent_at(world: &World, step_file: &Path, pause: &str) {
    let mut command = Command::new(AGENT);
    command
        .args(["local-deploy", "--host-id", "crash-host", "--data-dir"])
        .arg(world.data())
        .arg("--step")
        .arg(step_file);
    if pause != "hook" {
        command.args(["--pause-at", pause]);
    }
    let mut child =
        command.env("RUST_LOG", "warn").stdout(Stdio::piped()).stderr(Stdio::null()).spawn().expect("spawn the agent");
    let stdout = child.stdout.take().expect("stdout");
    let mut seen = Vec::new();
    for line in BufReader::new(stdout).lines() {
        let line = line.expect("line");
        let there = if pause == "hook" {
            line.contains("hook before_install") && wait_for_hook_process(world)
        } else {
            line.contains("\"detail\":\"paused at")
        };
        seen.push(line);
        if there {
            child.kill().expect("kill -9"); // SIGKILL
            let _ = child.wait();
            return;
        }
    }
    let status = child.wait();
    panic!("the agent never paused at {pause} ({status:?}):\n{}", seen.join("\n"));
}

/// Waits (up to 10 s) until a process runs in `releases/2.0.0` (the hanging hook).
fn wait_for_hook_process(world: &World) -> bool {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::time::Instant::now() < deadline {
        if !world.processes_of("2.0.0").is_empty() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

fn result_of(lines: &[serde_json::Value], kind: &str) -> Option<StepResult> {
    lines.iter().find_map(|l| l.get(kind)).map(|v| serde_json::from_value(v.clone()).expect("a StepResult"))
}

fn write_step(world: &World, name: &str, step: &Step) -> std::path::PathBuf {
    let path = world.dir.path().join(name);
    std::fs::write(&path, serde_json::to_vec_pretty(step).expect("json")).expect("write step");
    path
}

/// Deploys 1.0.0 with a real agent, kills the agent during the 2.0.0 deploy at
/// `pause`, restarts it with the same step, and checks the invariants.
async fn kill_during(pause: &str) {
    let world = World::new();
    let v1 = world.package("1.0.0");
    let v2 = world.package("2.0.0");
    let first = write_step(&world, "v1.json", &deploy_step("v1", 1, world.deploy("v1", "1.0.0", &v1)));
    let lines = run_agent(&world, &first);
    assert_eq!(result_of(&lines, "result").expect("result").outcome, StepOutcome::Succeeded, "{lines:?}");
    let old_pid = process_pid(&world);
    world.wait_serving("1.0.0").await;

    let counter = world.dir.path().join("before_install.count");
    let migrations = world.dir.path().join("migrate.count");
    let mut d = world.deploy("v2", "2.0.0", &v2);
    d.hooks.before_install = format!("echo run >> {}", counter.display());
    if pause == "hook" {
        // Hangs: the hook's process outlives the killed agent and must be cleaned up.
        d.hooks.before_install.push_str("; sleep 30");
    }
    d.hooks.migrate = format!("echo run >> {}", migrations.display());
    d.migrate = true;
    let second = write_step(&world, "v2.json", &deploy_step("v2", 1, d));
    kill_agent_at(&world, &second, pause);

    // The service keeps running while no agent runs (unless the agent was past the stop).
    let lines = run_agent(&world, &second);
    let recovered = result_of(&lines, "recovered").expect("the interrupted step is resolved at start");
    let result = result_of(&lines, "result").expect("result");
    assert!(result.replayed, "the repeat is answered from the journal: {result:?}");
    assert_eq!(result.outcome, recovered.outcome);
    assert_eq!(result.reason, recovered.reason);
    let phase = match pause.trim_end_matches(":end") {
        "hook" => "running_hook (hook before_install)",
        p => p,
    };
    // Only a step killed after its activation was recorded had in fact completed.
    let completed = pause == "checking_health:end";
    assert_eq!(result.outcome == StepOutcome::Succeeded, completed, "{pause}: {result:?}");
    let version = match result.outcome {
        StepOutcome::Failed => {
            assert!(
                result.reason.starts_with(&format!("agent restarted during {phase}")),
                "{pause}: {}",
                result.reason
            );
            "1.0.0"
        }
        StepOutcome::Succeeded => "2.0.0",
        other => panic!("{pause}: unexpected outcome {other:?}: {result:?}"),
    };
    // Exactly one version: `current`, the recorded process and what answers HTTP agree,
    // and nothing of the other version runs.
    assert_eq!(world.current().as_deref(), Some(version), "{pause}");
    world.wait_serving(version).await;
    let other = if version == "1.0.0" { "2.0.0" } else { "1.0.0" };
    assert!(world.processes_of(other).is_empty(), "{pause}: {other} still runs");
    let pids = world.processes_of(version);
    assert_eq!(pids, vec![process_pid(&world)], "{pause}: one process of {version}, the recorded one");
    if !matches!(phase, "stopping" | "installing" | "starting" | "checking_health") || pause == "stopping" {
        // Before the stop: the old process was never touched.
        assert_eq!(pids, vec![old_pid], "{pause}: the old process was never touched");
    }
    if completed {
        assert!(result.reason.starts_with("completed before the agent restarted"), "{}", result.reason);
    }
    // Never executed twice: not on the restart, not on a third repeat.
    assert!(count_lines(&counter) <= 1, "{pause}: before_install ran {} times", count_lines(&counter));
    assert!(count_lines(&migrations) <= 1, "{pause}: migrate ran {} times", count_lines(&migrations));
    let before = (count_lines(&counter), count_lines(&migrations));
    let again = result_of(&run_agent(&world, &second), "result").expect("result");
    assert!(again.replayed && again.outcome == result.outcome, "{again:?}");
    assert_eq!((count_lines(&counter), count_lines(&migrations)), before);
    // The history shows the step began once and ended once, resolved at the restart.
    let history = flotilla_agent::history::read(&world.data()).expect("history");
    let v2: Vec<&HostHistoryEntry> = history.iter().filter(|r| r.command_id == "v2").map(|r| &r.entry).collect();
    let finished =
        HostHistoryEntry::Finished { outcome: result.outcome.as_str().to_owned(), version: Some(version.to_owned()) };
    assert!(
        matches!(v2.as_slice(), [HostHistoryEntry::Started { version: Some(v), .. }, end] if v == "2.0.0" && **end == finished),
        "{pause}: {v2:?}"
    );
    // The service still runs after the last agent exited.
    world.wait_serving(version).await;
}

fn process_pid(world: &World) -> u32 {
    let record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(world.data().join("services/web/process.json")).expect("process.json"))
            .expect("json");
    u32::try_from(record["pid"].as_u64().expect("pid")).expect("u32")
}

macro_rules! kill_tests {
    ($($name:ident => $pause:literal,)*) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            tokio::time::timeout(Duration::from_secs(120), kill_during($pause)).await.expect("finishes");
        }
    )*};
}

kill_tests! {
    kill_during_accepted_end => "accepted:end",
    kill_during_fetching => "fetching",
    kill_during_verifying => "verifying",
    kill_during_unpacking => "unpacking",
    kill_during_unpacking_end => "unpacking:end",
    kill_during_before_install_hook => "running_hook",
    kill_while_a_hook_process_runs => "hook",
    kill_during_migrating => "migrating",
    kill_during_stopping => "stopping",
    kill_during_stopping_end => "stopping:end",
    kill_during_installing => "installing",
    kill_during_installing_end => "installing:end",
    kill_during_starting => "starting",
    kill_during_starting_end => "starting:end",
    kill_during_checking_health => "checking_health",
    kill_during_checking_health_end => "checking_health:end",
}

/// A container killed during a bake takes the agent and the service's process with it:
/// the restarted agent reports the bake interrupted and starts the service again at the
/// version it runs (the coordinator then bakes it again, without deploying it again).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bake_cut_by_a_kill_of_the_agent_and_its_service_restarts_the_service() {
    let world = World::new();
    let v1 = world.package("1.0.0");
    let first = write_step(&world, "v1.json", &deploy_step("v1", 1, world.deploy("v1", "1.0.0", &v1)));
    let lines = run_agent(&world, &first);
    assert_eq!(result_of(&lines, "result").expect("result").outcome, StepOutcome::Succeeded, "{lines:?}");
    world.wait_serving("1.0.0").await;

    let bake =
        Action::Bake(Bake { service: "web".into(), version: "1.0.0".into(), duration_ms: 60_000, health: vec![] });
    let bake = write_step(&world, "bake.json", &step("b1", 1, bake));
    kill_agent_at(&world, &bake, "baking");
    // What a container kill does to the service too.
    let pid = process_pid(&world);
    Command::new("kill").args(["-9", &pid.to_string()]).status().expect("kill -9 of the service");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while Path::new(&format!("/proc/{pid}/stat")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default().contains(") Z")
    {
        assert!(std::time::Instant::now() < deadline, "the service process {pid} did not die");
        std::thread::sleep(Duration::from_millis(20));
    }

    let lines = run_agent(&world, &bake);
    let recovered = result_of(&lines, "recovered").expect("the interrupted bake is reported");
    assert_eq!(recovered.outcome, StepOutcome::Failed, "{lines:?}");
    assert!(recovered.reason.contains("agent restarted during baking"), "{}", recovered.reason);
    assert_ne!(process_pid(&world), pid, "the service was started again");
    world.wait_serving("1.0.0").await;
}

/// The agent's join token (`FLOTILLA_JOIN_TOKEN` in its environment) is its own: hooks
/// and services it starts never see it, while the rest of its environment passes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_join_token_never_reaches_hooks_or_services() {
    let world = World::new();
    let v1 = world.package("1.0.0");
    let seen = world.dir.path().join("hook.env");
    let mut d = world.deploy("v1", "1.0.0", &v1);
    d.hooks.before_install = format!("env > {}", seen.display());
    let step = write_step(&world, "v1.json", &deploy_step("v1", 1, d));
    let output = Command::new(AGENT)
        .args(["local-deploy", "--host-id", "crash-host", "--data-dir"])
        .arg(world.data())
        .arg("--step")
        .arg(&step)
        .env("RUST_LOG", "warn")
        .env("FLOTILLA_JOIN_TOKEN", "flotilla-join-v1.secret-of-the-agent")
        .env("FLOTILLA_TEST_MARK", "passed-on")
        .output()
        .expect("run the agent");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let env = std::fs::read_to_string(&seen).expect("the hook ran");
    assert!(env.contains("FLOTILLA_TEST_MARK=passed-on"), "the hook sees the agent's environment:\n{env}");
    assert!(!env.contains("FLOTILLA_JOIN_TOKEN"), "the hook saw the token:\n{env}");
    let pid = process_pid(&world);
    let service_env = std::fs::read(format!("/proc/{pid}/environ")).expect("the service's environment");
    assert!(!String::from_utf8_lossy(&service_env).contains("FLOTILLA_JOIN_TOKEN"), "the service saw the token");
}
