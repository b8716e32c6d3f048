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
use std::time::{Duration, Instant};

use flotilla_tests::compose::{AGENTS, FORM, Project, all_online, docker_or_skip, text};
use flotilla_tests::fleet::StepAudit;

/// Longest one release may take.
const RELEASE: Duration = Duration::from_secs(300);

/// The labels each agent host's join token gives it (deploy/compose/setup).
const LABELS: [&str; 4] = ["cell=canary,role=db", "cell=canary,role=app", "cell=main,role=app", "cell=main,role=app"];

#[test]
fn the_compose_cluster_releases_the_sample_app_across_agent_containers_through_a_rolling_restart() {
    if !docker_or_skip() {
        return;
    }
    flotilla_tests::compose::build_images();
    let project = Project::new("flotilla-test");
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
    project.setup();
    let tokens_made = token_files();
    // The test's second release bakes longer, so the rolling restart happens inside it.
    let v2 = std::fs::read_to_string(project.work.path().join("shop-v2.toml")).expect("the v2 spec");
    std::fs::write(project.work.path().join("shop-v2-slow.toml"), v2.replace("bake = \"2s\"", "bake = \"6s\""))
        .expect("writing the slow spec");

    let up = project.run(&["up", "--detach", "--no-build"]);
    assert!(up.status.success(), "docker-compose up: {}", text(&up));
    project.wait_cluster(FORM);
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
    project.setup();
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
