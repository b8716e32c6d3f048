//! The compose deployment (`deploy/compose`) as a user runs it, in containers: the
//! images (`deploy/images/build`), the setup step (certificates, specs, the
//! coordinators started and a join token per agent host), `docker-compose up` of the
//! four agent hosts on a private network with mutual TLS, which enrol with their tokens
//! and register with the tokens' labels (a recreated agent container comes back on its
//! volume's identity, without a new token), a release of the sample app from the CLI
//! container across the agent containers, then a second release during which every
//! coordinator container is restarted in turn (`docker-compose restart`, which sends
//! SIGTERM), and which still succeeds with every step run exactly once.
//!
//! Needs a Docker engine; without one the test passes with a note, unless
//! `FLOTILLA_REQUIRE_DOCKER=1` (as CI sets), which makes a missing engine a failure.

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use flotilla_tests::fleet::StepAudit;

/// Longest the cluster may take to form and see every agent.
const FORM: Duration = Duration::from_secs(180);

/// Longest one release may take.
const RELEASE: Duration = Duration::from_secs(300);

/// Longest any other docker-compose call may take.
const CALL: Duration = Duration::from_secs(120);

const AGENTS: [&str; 4] = ["agent-1", "agent-2", "agent-3", "agent-4"];

/// The labels each agent host's join token gives it (deploy/compose/setup).
const LABELS: [&str; 4] = ["cell=canary,role=db", "cell=canary,role=app", "cell=main,role=app", "cell=main,role=app"];

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("the workspace root").to_owned()
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

fn docker_available() -> bool {
    Command::new("docker").arg("info").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok_and(|s| s.success())
}

/// One compose project of the test, taken down (with its volumes) when dropped.
struct Project {
    name: String,
    work: tempfile::TempDir,
}

impl Project {
    /// `docker-compose` for this project, ended by coreutils' `timeout` after `within`.
    fn compose_within(&self, within: Duration) -> Command {
        let mut cmd = Command::new("timeout");
        cmd.arg("--kill-after=10").arg(within.as_secs().to_string()).arg("docker-compose");
        self.project_args(&mut cmd);
        cmd
    }

    fn project_args(&self, cmd: &mut Command) {
        cmd.arg("--project-name")
            .arg(&self.name)
            .arg("--file")
            .arg(repo().join("deploy/compose/docker-compose.yml"))
            .env("FLOTILLA_COMPOSE_WORK", self.work.path())
            .stdin(Stdio::null());
    }

    /// Runs `docker-compose ARGS` (at most [`CALL`]); its output.
    fn run(&self, args: &[&str]) -> Output {
        self.compose_within(CALL).args(args).output().expect("docker-compose runs")
    }

    /// Runs the CLI container: `flotilla ARGS` (at most [`CALL`]).
    fn cli(&self, args: &[&str]) -> Output {
        self.cli_within(args, CALL)
    }

    /// Runs the CLI container: `flotilla ARGS`, ended after `within`.
    fn cli_within(&self, args: &[&str], within: Duration) -> Output {
        self.compose_within(within).args(["run", "--rm", "-T", "cli"]).args(args).output().expect("docker-compose runs")
    }

    /// Runs the CLI and fails the test unless it exits 0; its stdout.
    fn cli_ok(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(out.status.success(), "flotilla {}: {}\n{}", args.join(" "), text(&out), self.logs());
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The logs of one service's containers.
    fn log_of(&self, service: &str) -> String {
        String::from_utf8_lossy(&self.run(&["logs", "--no-color", service]).stdout).into_owned()
    }

    /// The last lines of every container's log, for failure messages.
    fn logs(&self) -> String {
        let mut out = String::new();
        for service in ["coordinator-1", "coordinator-2", "coordinator-3", "agent-1", "agent-4", "artifacts"] {
            let log = self.log_of(service);
            let lines: Vec<&str> = log.lines().collect();
            out.push_str(&format!("--- {service}:\n{}\n", lines[lines.len().saturating_sub(30)..].join("\n")));
        }
        out
    }

    /// Polls the CLI with `args` until `done` accepts its JSON output.
    fn wait_json(&self, args: &[&str], within: Duration, what: &str, done: impl Fn(&serde_json::Value) -> bool) {
        let deadline = Instant::now() + within;
        loop {
            let out = self.cli(args);
            let last = text(&out);
            if out.status.success()
                && let Ok(v) = serde_json::from_slice::<serde_json::Value>(&out.stdout)
                && done(&v)
            {
                return;
            }
            assert!(Instant::now() < deadline, "{what} within {within:?}; last answer:\n{last}\n{}", self.logs());
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// Waits until the coordinators agree on a leader that sees all three members.
    fn wait_cluster(&self, within: Duration) {
        self.wait_json(&["cluster", "status", "--output", "json"], within, "a leader with three members", |v| {
            // A `StatusResponse` in the canonical JSON mapping: uint64 as strings.
            let members = v["status"]["members"].as_array().map_or(0, Vec::len);
            v["status"]["leaderId"].as_str().is_some_and(|id| id != "0") && members == 3
        });
    }
}

impl Drop for Project {
    fn drop(&mut self) {
        let _ = self.compose_within(CALL).args(["down", "--volumes", "--remove-orphans", "--timeout", "5"]).output();
    }
}

#[test]
fn the_compose_cluster_releases_the_sample_app_across_agent_containers_through_a_rolling_restart() {
    if !docker_available() {
        assert!(
            std::env::var("FLOTILLA_REQUIRE_DOCKER").as_deref() != Ok("1"),
            "FLOTILLA_REQUIRE_DOCKER=1 but no Docker engine answers `docker info`"
        );
        return;
    }
    let root = repo();
    let built =
        flotilla_tests::workspace_script(&root.join("deploy/images/build")).output().expect("deploy/images/build runs");
    assert!(built.status.success(), "deploy/images/build: {}", text(&built));

    let project = Project {
        name: format!("flotilla-test-{}", std::process::id()),
        work: tempfile::Builder::new().prefix("flotilla-compose-").tempdir().expect("a temp dir"),
    };
    // The setup starts the coordinators of the project docker-compose is told to use.
    let setup = || {
        let out = Command::new("timeout")
            .arg("--kill-after=10")
            .arg(FORM.as_secs().to_string())
            .arg(root.join("deploy/compose/setup"))
            .env("FLOTILLA_COMPOSE_WORK", project.work.path())
            .env("COMPOSE_PROJECT_NAME", &project.name)
            .stdin(Stdio::null())
            .output()
            .expect("deploy/compose/setup runs");
        assert!(out.status.success(), "deploy/compose/setup: {}\n{}", text(&out), project.logs());
    };
    // The agents' join tokens, one file each, readable by their owner only.
    let token_files = || {
        AGENTS.map(|agent| {
            let file = project.work.path().join(format!("join/{agent}.env"));
            let written = std::fs::read_to_string(&file).expect("the agent's token file");
            assert!(written.starts_with("FLOTILLA_JOIN_TOKEN=flotilla-join-v1."), "{}: {written}", file.display());
            let mode = std::fs::metadata(&file).expect("the token file").permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{}", file.display());
            written
        })
    };
    setup();
    let tokens_made = token_files();
    // The test's second release bakes longer, so the rolling restart happens inside it.
    let v2 = std::fs::read_to_string(project.work.path().join("shop-v2.toml")).expect("the v2 spec");
    std::fs::write(project.work.path().join("shop-v2-slow.toml"), v2.replace("bake = \"2s\"", "bake = \"6s\""))
        .expect("writing the slow spec");

    let up = project.run(&["up", "--detach", "--no-build"]);
    assert!(up.status.success(), "docker-compose up: {}", text(&up));
    project.wait_cluster(FORM);
    let all_online = |v: &serde_json::Value| {
        v["hosts"].as_array().is_some_and(|hosts| {
            hosts.len() == AGENTS.len() && hosts.iter().all(|h| h["state"].as_str() == Some("HOST_STATE_ONLINE"))
        })
    };
    project.wait_json(&["agents", "--output", "json"], FORM, "four agents online", all_online);
    // Each enrolled with its own token, used once, and has its token's labels (the
    // agents claim none).
    let listed = project.cli_ok(&["agents"]);
    for (agent, labels) in AGENTS.iter().zip(LABELS) {
        assert!(
            listed.lines().any(|l| l.starts_with(&format!("{agent} ")) && l.contains("online") && l.contains(labels)),
            "{agent} online with {labels}:\n{listed}"
        );
    }
    let tokens = project.cli_ok(&["agents", "token", "list", "--all", "--output", "json"]);
    let tokens: serde_json::Value = serde_json::from_str(&tokens).expect("json");
    let mut enrolled: Vec<String> = tokens["tokens"]
        .as_array()
        .expect("the tokens")
        .iter()
        .map(|t| {
            assert_eq!((t["uses"].as_u64(), t["usesAllowed"].as_u64()), (Some(1), Some(1)), "{t}");
            t["enrolledHosts"]
                .as_array()
                .map_or(String::new(), |h| h.iter().filter_map(serde_json::Value::as_str).collect::<Vec<_>>().join(","))
        })
        .collect();
    enrolled.sort();
    assert_eq!(enrolled, AGENTS.map(str::to_owned), "{tokens:#}");
    // The setup run again keeps the token files of the hosts the cluster knows, and
    // makes no token.
    setup();
    assert_eq!(token_files(), tokens_made, "a second setup changed the token files");
    let listed = project.cli_ok(&["agents", "token", "list", "--all", "--output", "json"]);
    let count =
        serde_json::from_str::<serde_json::Value>(&listed).expect("json")["tokens"].as_array().map_or(0, Vec::len);
    assert_eq!(count, AGENTS.len(), "a second setup made tokens: {listed}");
    // A new container on the agent's volume runs on the identity kept there: its spent
    // token is ignored.
    let recreated = project.run(&["up", "--detach", "--no-build", "--no-deps", "--force-recreate", "agent-4"]);
    assert!(recreated.status.success(), "recreating agent-4: {}", text(&recreated));
    let deadline = Instant::now() + FORM;
    loop {
        let log = project.log_of("agent-4");
        if log.contains("session established") {
            assert!(log.contains("already enrolled"), "the recreated agent-4 ran on its enrolled identity:\n{log}");
            break;
        }
        assert!(Instant::now() < deadline, "the recreated agent-4 never registered:\n{log}\n{}", project.logs());
        std::thread::sleep(Duration::from_millis(500));
    }
    project.wait_json(&["agents", "--output", "json"], FORM, "four agents online again", all_online);

    // A first install of the app on every agent container.
    let installed = project.cli_within(&["release", "start", "/work/shop-v1.toml", "--watch"], RELEASE);
    assert!(installed.status.success(), "installing 1.0.0: {}\n{}", text(&installed), project.logs());
    assert!(text(&installed).contains("ended: succeeded"), "{}", text(&installed));

    // The upgrade, with every coordinator restarted in turn in the middle of it.
    let started = project.cli_ok(&["release", "start", "/work/shop-v2-slow.toml", "--output", "json"]);
    let id = serde_json::from_str::<serde_json::Value>(&started).expect("json")["release"]["id"]
        .as_str()
        .expect("a release id")
        .to_owned();
    let status = project.cli_ok(&["cluster", "status", "--output", "json"]);
    let term_before = serde_json::from_str::<serde_json::Value>(&status).expect("json")["status"]["term"]
        .as_str()
        .and_then(|t| t.parse::<u64>().ok())
        .unwrap_or(0);
    for n in 1..=3 {
        let shown = project.cli_ok(&["release", "show", &id, "--output", "json"]);
        let state = serde_json::from_str::<serde_json::Value>(&shown).expect("json")["release"]["state"].clone();
        assert!(
            state == "RELEASE_STATE_RUNNING" || state == "RELEASE_STATE_PENDING",
            "release {id} ended before coordinator-{n} restarted:\n{shown}"
        );
        let restarted = project.run(&["restart", "--timeout", "15", &format!("coordinator-{n}")]);
        assert!(restarted.status.success(), "restarting coordinator-{n}: {}", text(&restarted));
        project.wait_cluster(FORM);
    }
    let watched = project.cli_within(&["release", "watch", &id], RELEASE);
    assert!(watched.status.success(), "release {id}: {}\n{}", text(&watched), project.logs());
    assert!(text(&watched).contains("ended: succeeded"), "{}", text(&watched));

    // Every coordinator stopped on SIGTERM, in time, and the leader handed over.
    let coordinator_logs: Vec<String> = (1..=3).map(|n| project.log_of(&format!("coordinator-{n}"))).collect();
    for (n, log) in coordinator_logs.iter().enumerate() {
        assert!(log.contains("SIGTERM: shutting down"), "coordinator-{} got SIGTERM:\n{log}", n + 1);
        assert!(!log.contains("dropping them"), "coordinator-{} hit its shutdown timeout:\n{log}", n + 1);
    }
    let stops: Vec<&str> = coordinator_logs
        .iter()
        .flat_map(|l| l.lines())
        .filter(|l| {
            l.contains("SIGTERM") || l.contains("hand") || l.contains("dropping them") || l.contains("leading:")
        })
        .collect();
    let handovers =
        coordinator_logs.iter().flat_map(|l| l.lines()).filter(|l| l.contains("leadership handed over")).count();
    assert!(handovers >= 1, "the leader handed over when it was restarted:\n{}", stops.join("\n"));
    // Every new term came from a hand-over: no restarted coordinator stood for election
    // and took the leadership from a healthy leader (it heard the leader in time).
    let mut terms: Vec<u64> = coordinator_logs
        .iter()
        .flat_map(|l| l.lines())
        .filter(|l| l.contains("leading: accepting agent sessions"))
        .filter_map(|l| l.split(" term=").nth(1)?.split_whitespace().next()?.parse().ok())
        .filter(|t| *t > term_before)
        .collect();
    terms.sort_unstable();
    terms.dedup();
    assert_eq!(
        terms.len(),
        handovers,
        "leader terms after the restarts began {terms:?}, hand-overs {handovers}:\n{}",
        stops.join("\n")
    );
    // No step ran twice on any host.
    let logs: Vec<(&str, String)> = AGENTS.iter().map(|a| (*a, project.log_of(a))).collect();
    let audit = StepAudit::from_logs(logs.iter().map(|(h, l)| (*h, l.as_str())));
    assert!(!audit.executed.is_empty(), "the agents' logs show the steps they executed");
    assert!(audit.executed_twice().is_empty(), "steps executed twice: {:?}", audit.executed_twice());
    // And the fleet runs 2.0.0 everywhere.
    project.wait_json(&["agents", "--output", "json"], FORM, "every service at 2.0.0", |v| {
        v["hosts"].as_array().is_some_and(|hosts| {
            hosts.iter().all(|h| {
                h["services"]
                    .as_array()
                    .is_some_and(|s| !s.is_empty() && s.iter().all(|s| s["version"].as_str() == Some("2.0.0")))
            })
        })
    });
}
