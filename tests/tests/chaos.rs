//! Faults on real hosts: the compose cluster in containers (three coordinators, four
//! agent hosts, a private network) releasing the chaos app while faults are injected,
//! and the whole recorded history checked by `flotilla-check` (`tests/src/chaos.rs`).
//!
//! First a leader is cut off from the other coordinators for a whole release while
//! every agent can still reach it: it must give its agents up, and the release must
//! finish on the majority's side during the partition. Then the rounds: by default a
//! short fixed round (the leader paused past the election timeout, an agent killed in
//! the middle of its steps and the release then rolled back by an operator, a broken
//! version rolled back by the engine while a follower is cut off, a follower's data
//! directory lost and the node brought back as a new member, an agent killed in the
//! middle of a migration);
//! with `FLOTILLA_CHAOS_SEED` (and `FLOTILLA_CHAOS_ROUNDS`, default 10) a seeded random
//! schedule, the soak (BENCHMARKS.md has the command), of the faults
//! `FLOTILLA_CHAOS_FAULTS` names (comma-separated, e.g. `kill-agent-migrating`), else of
//! all. A failure prints the seed.
//!
//! Needs a Docker engine and root (iptables in the containers' namespaces); without an
//! engine the test passes with a note, unless `FLOTILLA_REQUIRE_DOCKER=1`.

use std::time::Duration;

use flotilla_tests::chaos::{
    Chaos, Ending, Fault, Phase, Round, RoundResult, faults_from_env, schedule_of, seed_from_env,
};
use flotilla_tests::compose::{COORDINATORS, FORM, docker_or_skip};

/// The default short round's seed (it names the saved history).
const SHORT_ROUND_SEED: u64 = 0;

fn short_round() -> Vec<Round> {
    let round = |index, fault, hold_ms, ending, agent| Round {
        index,
        fault,
        after: Duration::from_millis(1_500),
        hold: Duration::from_millis(hold_ms),
        ending,
        agent,
    };
    vec![
        round(0, Fault::PauseLeader, 8_000, Ending::Succeeds, 0),
        round(1, Fault::KillAgent, 3_000, Ending::RolledBackByOperator, 2),
        round(2, Fault::IsolateFollower, 5_000, Ending::RollsBack, 0),
        round(3, Fault::LoseFollowerData, 2_000, Ending::Succeeds, 0),
        round(4, Fault::KillAgentIn(Phase::Migrate), 3_000, Ending::Succeeds, 0),
    ]
}

#[test]
#[allow(
    clippy::print_stderr,
    reason = "each round's line and the checker's report are for the person running the soak"
)]
fn releases_end_as_their_specs_say_through_partitions_pauses_and_kills_and_the_history_checks_clean() {
    if !docker_or_skip() {
        return;
    }
    flotilla_tests::compose::build_images();
    let seeded = std::env::var("FLOTILLA_CHAOS_SEED").is_ok();
    let seed = seed_from_env(SHORT_ROUND_SEED);
    let mut chaos = Chaos::start(seed).unwrap_or_else(|e| panic!("seed {seed}: starting the cluster: {e:#}"));

    // A leader cut off from the other coordinators for a whole release, its agents
    // still able to reach it: the majority elects a new leader, the old one gives its
    // agents up (no quorum answered it within the lease), and the release finishes on
    // the majority's side while the partition lasts.
    let (leader_id, _) = chaos.project.leader().expect("a leader");
    let leader = COORDINATORS[usize::try_from(leader_id).unwrap() - 1];
    let others: Vec<&str> = COORDINATORS.iter().copied().filter(|c| *c != leader).collect();
    let version = chaos.next_version();
    let id = chaos.release("chaos-isolated-leader", version).expect("the release is acknowledged");
    let cut_at = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap();
    let started = std::time::Instant::now();
    chaos.project.cut(leader, &others).expect("cutting the leader off");
    let state = chaos.wait_finished(&id, flotilla_tests::chaos::RELEASE);
    let isolated_log = chaos.project.log_of(leader);
    chaos.project.heal(leader).expect("healing the partition");
    let state =
        state.unwrap_or_else(|e| panic!("the release during the partition ({}): {e:#}", chaos.save_logs().display()));
    assert_eq!(state, "RELEASE_STATE_SUCCEEDED", "the release finished while {leader} was cut off");
    chaos.installed(version);
    chaos.results.push(RoundResult {
        round: Round {
            index: 0,
            fault: Fault::IsolateLeader,
            after: Duration::ZERO,
            hold: started.elapsed(),
            ending: Ending::Succeeds,
            agent: 0,
        },
        release_id: id,
        state,
        fault_unix_ms: i64::try_from(cut_at.as_millis()).unwrap(),
        target: leader.to_owned(),
    });
    assert!(
        isolated_log.contains("no quorum of coordinators answered within the lease"),
        "{leader} noticed it had lost the quorum:\n{isolated_log}"
    );
    assert!(
        isolated_log.contains("no longer leading: closing agent sessions"),
        "{leader} sent its agents away:\n{isolated_log}"
    );
    chaos.project.wait_cluster(FORM);

    let rounds = if seeded {
        let n = std::env::var("FLOTILLA_CHAOS_ROUNDS").ok().and_then(|s| s.parse().ok()).unwrap_or(10);
        let faults = faults_from_env().unwrap_or_else(|e| panic!("{e}"));
        schedule_of(seed, n, &faults)
    } else {
        short_round()
    };
    for round in &rounds {
        if let Err(e) = chaos.run_round(round) {
            let logs = chaos.save_logs();
            panic!(
                "seed {seed} (FLOTILLA_CHAOS_SEED={seed} to replay), round {}, logs in {}: {e:#}",
                round.index,
                logs.display()
            );
        }
        if let Some(done) = chaos.results.last() {
            eprint!("{}", flotilla_tests::chaos::round_line(done, None));
        }
    }

    let (report, history, dir) = chaos.check().unwrap_or_else(|e| panic!("seed {seed}: gathering the history: {e:#}"));
    eprintln!(
        "{report}\n{}\n{}\nhistory, report and logs: {}",
        chaos.summary(Some(&history)),
        flotilla_tests::chaos::by_fault(&chaos.results, &history),
        dir.display()
    );
    let violations: Vec<String> = report.violations().map(ToString::to_string).collect();
    assert!(violations.is_empty(), "seed {seed}: the checker found violations:\n{}", violations.join("\n"));
    assert!(report.input().releases >= rounds.len() + 2, "every release was checked: {report}");
}
