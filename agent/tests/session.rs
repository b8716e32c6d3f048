//! The agent's session with the coordinators, end to end: the real `flotilla-agent`
//! daemon against a small in-test `AgentLink` server. Registration, heartbeats, steps
//! with progress and results, re-sending until acknowledged (across restarts too),
//! at-most-once and term fencing over the wire, leader hints, reconnects, cancel (of
//! a running step and of one not received yet), mutual TLS, protocol mismatches and a
//! clean stop that leaves services running.

#[path = "support/link.rs"]
mod link;
mod support;

use flotilla_agent::step::{Action, RunCheck, Step};
use flotilla_net::pki::Role;
use flotilla_net::testing::TestCa;
use flotilla_proto::v1 as pb;
use flotilla_proto::v1::coordinator_message::Msg as In;
use flotilla_sample_service::Behaviour;
use flotilla_shared::history::HostHistoryEntry;
use link::{AgentProcess, HOST_ID, TestServer};
use support::{World, count_lines, deploy_step, local_deploy, step};

/// Heartbeat interval the test server asks for.
const BEAT_MS: u64 = 100;

fn agent(world: &World, coordinators: &[String]) -> AgentProcess {
    AgentProcess::start(world.dir.path(), &world.data(), coordinators, None)
}

fn check_step(id: &str, term: u64, command: String) -> Step {
    step(
        id,
        term,
        Action::RunCheck(RunCheck { gate: "g".into(), command, env: Default::default(), timeout_ms: 30_000 }),
    )
}

fn outcome(result: &pb::StepResult) -> pb::StepOutcome {
    pb::StepOutcome::try_from(result.outcome).expect("a known outcome")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registers_with_host_labels_version_and_inventory_then_heartbeats_inventory_changes_only() {
    let world = World::new();
    let v1 = world.package("1.0.0");
    local_deploy(&world, &deploy_step("d1", 4, world.deploy("d1", "1.0.0", &v1)));
    let mut server = TestServer::start(None);
    let _agent = agent(&world, &[server.address()]);

    let mut s = server.next_session().await;
    let register = s.register().await;
    assert_eq!(register.host_id, "test-host");
    assert_eq!(register.labels.get("role").map(String::as_str), Some("web"));
    assert_eq!(register.labels.get("zone").map(String::as_str), Some("a"));
    let version = register.version.as_ref().expect("version");
    assert_eq!(version.protocol_version, flotilla_proto::PROTOCOL_VERSION);
    assert_eq!(version.software_version, env!("CARGO_PKG_VERSION"));
    assert!(version.features.iter().any(|f| f == "step.cancel"), "{:?}", version.features);
    assert_eq!(register.instance_id.len(), 32, "a random 128-bit id: {}", register.instance_id);
    assert_eq!(register.highest_term, 4, "the term of the step run before");
    assert!(register.running_command_ids.is_empty());
    let [web] = register.inventory.as_slice() else { panic!("one service: {:?}", register.inventory) };
    assert_eq!((web.service.as_str(), web.version.as_str()), ("web", "1.0.0"));
    assert_eq!(web.state, pb::ServiceRunState::Running as i32);
    assert_eq!(web.provides.get("web-api").map(String::as_str), Some("1.0.0"));
    let old_pid = web.pid;
    assert!(old_pid > 0);

    s.welcome(BEAT_MS).await;
    // The local step's result was never acknowledged: it is delivered now.
    let result = s.next_result().await;
    assert_eq!((result.command_id.as_str(), outcome(&result)), ("d1", pb::StepOutcome::Succeeded));
    s.ack(&["d1"]).await;

    let beats: Vec<pb::Heartbeat> = {
        let mut beats = Vec::new();
        for _ in 0..3 {
            beats.push(s.next_heartbeat().await);
        }
        beats
    };
    let first = s.heartbeats[0].seq;
    assert_eq!(first, 1, "heartbeats count from 1 in a session");
    assert!(beats.windows(2).all(|w| w[1].seq == w[0].seq + 1), "consecutive: {beats:?}");
    assert!(s.heartbeats.iter().all(|h| h.inventory.is_none()), "the inventory did not change since Register");

    // The service crashes; the supervisor restarts it: the next heartbeats carry the
    // full inventory once.
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(old_pid as i32), nix::sys::signal::Signal::SIGKILL)
        .expect("kill the service");
    let changed = s
        .until_heartbeat(|h| {
            h.inventory.as_ref().is_some_and(|i| i.services.iter().any(|i| i.pid != 0 && i.pid != old_pid))
        })
        .await
        .inventory
        .expect("inventory");
    assert_eq!(changed.services.len(), 1);
    assert!(changed.services[0].restarts >= 1, "{changed:?}");
    world.wait_serving("1.0.0").await;
    // Settled (the inventory is the same from one heartbeat to the next): no more.
    s.clear_heartbeats();
    s.until_heartbeat(|h| h.inventory.is_none()).await;
    for _ in 0..3 {
        let beat = s.next_heartbeat().await;
        assert!(beat.inventory.is_none(), "sent once per change: {beat:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deploy_step_streams_progress_per_phase_and_a_success_result() {
    let world = World::new();
    let v1 = world.package("1.0.0");
    let mut server = TestServer::start(None);
    let _agent = agent(&world, &[server.address()]);
    let mut s = server.next_session().await;
    assert!(s.register().await.inventory.is_empty(), "nothing installed yet");
    s.welcome(BEAT_MS).await;

    s.step(deploy_step("d1", 1, world.deploy("d1", "1.0.0", &v1))).await;
    let result = s.next_result().await;
    assert_eq!(outcome(&result), pb::StepOutcome::Succeeded, "{result:?}");
    assert_eq!((result.command_id.as_str(), result.term, result.replayed), ("d1", 1, false));
    let service = result.service.as_ref().expect("service");
    assert_eq!((service.version.as_str(), service.state), ("1.0.0", pb::ServiceRunState::Running as i32));
    assert!(result.health.first().is_some_and(|h| h.passing && h.samples >= 1), "{:?}", result.health);
    let phases: Vec<pb::StepPhase> =
        s.progress.iter().map(|p| pb::StepPhase::try_from(p.phase).expect("known phase")).collect();
    use pb::StepPhase as P;
    assert_eq!(
        phases,
        vec![
            P::Accepted,
            P::Fetching,
            P::Verifying,
            P::Unpacking,
            P::Stopping,
            P::Installing,
            P::Starting,
            P::CheckingHealth
        ]
    );
    world.wait_serving("1.0.0").await;
    s.ack(&["d1"]).await;
    // The inventory changed since Register: heartbeats carried it (during the deploy or
    // after it), ending with the running 1.0.0.
    s.until_heartbeat(|h| {
        h.inventory.as_ref().is_some_and(|i| {
            i.services.len() == 1
                && i.services[0].version == "1.0.0"
                && i.services[0].state == pb::ServiceRunState::Running as i32
        })
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_are_resent_on_every_session_and_across_restarts_until_acknowledged() {
    let world = World::new();
    let counter = world.dir.path().join("check.count");
    let mut server = TestServer::start(None);
    let mut agent1 = agent(&world, &[server.address()]);

    let mut s1 = server.next_session().await;
    let instance = s1.register().await.instance_id;
    s1.welcome(BEAT_MS).await;
    s1.step(check_step("c1", 1, format!("echo run >> {}", counter.display()))).await;
    let first = s1.next_result().await;
    assert_eq!(outcome(&first), pb::StepOutcome::Succeeded, "{first:?}");
    s1.end(); // no ack

    let mut s2 = server.next_session().await;
    assert_eq!(s2.register().await.instance_id, instance, "a reconnect, not a restart");
    s2.welcome(BEAT_MS).await;
    let again = s2.next_result().await;
    assert_eq!(again, first, "the same result, sent again on the new session");

    agent1.kill(); // SIGKILL: the result is still not acknowledged
    let agent2 = agent(&world, &[server.address()]);
    let mut s3 = server.next_session().await;
    assert_ne!(s3.register().await.instance_id, instance, "a new process");
    s3.welcome(BEAT_MS).await;
    assert_eq!(s3.next_result().await, first, "still sent after a restart");
    s3.ack(&["c1"]).await;
    s3.end();

    let mut s4 = server.next_session().await;
    s4.register().await;
    s4.welcome(BEAT_MS).await;
    assert!(s4.results_during_heartbeats(3).await.is_empty(), "acknowledged: not sent again");
    drop(agent2);

    let _agent3 = agent(&world, &[server.address()]);
    let mut s5 = server.next_session().await;
    s5.register().await;
    s5.welcome(BEAT_MS).await;
    assert!(s5.results_during_heartbeats(3).await.is_empty(), "the acknowledgement survived the restart");
    assert_eq!(count_lines(&counter), 1, "executed once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeated_command_id_is_answered_from_the_journal_and_not_executed_twice() {
    let world = World::new();
    let v1 = world.package("1.0.0");
    let counter = world.dir.path().join("hook.count");
    let mut d = world.deploy("d1", "1.0.0", &v1);
    d.hooks.before_install = format!("echo run >> {}", counter.display());
    let mut server = TestServer::start(None);
    let _agent = agent(&world, &[server.address()]);
    let mut s = server.next_session().await;
    s.register().await;
    s.welcome(BEAT_MS).await;

    s.step(deploy_step("d1", 1, d.clone())).await;
    let first = s.next_result().await;
    assert_eq!(outcome(&first), pb::StepOutcome::Succeeded, "{first:?}");
    assert!(!first.replayed);
    s.ack(&["d1"]).await;
    let progress_before = s.progress.len();

    s.step(deploy_step("d1", 1, d)).await;
    let repeat = s.next_result().await;
    assert!(repeat.replayed, "answered from the journal: {repeat:?}");
    assert_eq!(outcome(&repeat), pb::StepOutcome::Succeeded);
    assert_eq!(repeat.finished_unix_ms, first.finished_unix_ms, "the recorded result");
    assert_eq!(s.progress.len(), progress_before, "no phase ran again");
    assert_eq!(count_lines(&counter), 1, "the hook ran once");
    assert_eq!(
        repeat.service.as_ref().map(|i| i.pid),
        first.service.as_ref().map(|i| i.pid),
        "the process was not restarted"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_with_a_lower_term_than_seen_is_refused() {
    let world = World::new();
    let counter = world.dir.path().join("old-leader.count");
    let mut server = TestServer::start(None);
    let mut agent1 = agent(&world, &[server.address()]);
    let mut s = server.next_session().await;
    s.register().await;
    s.welcome(BEAT_MS).await;

    s.step(check_step("new-leader", 5, "true".to_owned())).await;
    assert_eq!(outcome(&s.next_result().await), pb::StepOutcome::Succeeded);
    s.step(check_step("old-leader", 3, format!("echo run >> {}", counter.display()))).await;
    let refused = s.next_result().await;
    assert_eq!(outcome(&refused), pb::StepOutcome::Refused, "{refused:?}");
    assert!(
        refused.reason.contains("term 3 is lower than the highest term this agent has seen (5)"),
        "{}",
        refused.reason
    );
    assert_eq!(count_lines(&counter), 0, "not executed");

    assert_eq!(agent1.terminate().code(), Some(0));
    let _agent2 = agent(&world, &[server.address()]);
    let mut s2 = server.next_session().await;
    assert_eq!(s2.register().await.highest_term, 5, "the highest term is durable");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_of_a_step_not_received_keeps_it_from_ever_running_across_restarts() {
    let world = World::new();
    let v1 = world.package("1.0.0");
    let counter = world.dir.path().join("hook.count");
    let mut d = world.deploy("d9", "1.0.0", &v1);
    d.hooks.before_install = format!("echo run >> {}", counter.display());
    let mut server = TestServer::start(None);
    let mut agent1 = agent(&world, &[server.address()]);
    let mut s = server.next_session().await;
    s.register().await;
    s.welcome(BEAT_MS).await;

    // A newer leader cancelled d9 (a rollback) before this agent received it; the step
    // itself comes next on the same stream.
    s.cancel_in_term("d9", "rollback of web", 2).await;
    s.step(deploy_step("d9", 1, d.clone())).await;
    let tombstone = s.next_result().await;
    assert_eq!(
        (tombstone.command_id.as_str(), outcome(&tombstone), tombstone.replayed, tombstone.term),
        ("d9", pb::StepOutcome::Cancelled, false, 2),
        "{tombstone:?}"
    );
    assert_eq!(tombstone.reason, "cancelled before it was received: rollback of web");
    let replay = s.next_result().await;
    assert_eq!(
        (replay.command_id.as_str(), outcome(&replay), replay.replayed),
        ("d9", pb::StepOutcome::Cancelled, true),
        "the step is answered with the recorded result: {replay:?}"
    );
    assert_eq!(replay.reason, tombstone.reason);
    assert!(s.progress.iter().all(|p| p.command_id != "d9"), "no phase ran: {:?}", s.progress);

    let never_ran = |world: &World| {
        assert!(!world.data().join("services/web/releases/1.0.0").exists(), "not installed");
        assert_eq!(world.current(), None, "no current link");
        assert_eq!(count_lines(&counter), 0, "no hook ran");
        let history = flotilla_agent::history::read(&world.data()).expect("the history reads");
        let d9: Vec<&HostHistoryEntry> = history.iter().filter(|r| r.command_id == "d9").map(|r| &r.entry).collect();
        assert_eq!(
            d9,
            vec![&HostHistoryEntry::CancelledUnreceived { reason: "rollback of web".to_owned() }],
            "a tombstone and no start: {history:?}"
        );
    };
    never_ran(&world);

    // Not acknowledged: a restarted agent still knows the tombstone and reports it.
    agent1.kill();
    let _agent2 = agent(&world, &[server.address()]);
    let mut s2 = server.next_session().await;
    s2.register().await;
    s2.welcome(BEAT_MS).await;
    assert_eq!(s2.next_result().await, tombstone, "the tombstone's result is re-sent after a restart");
    s2.step(deploy_step("d9", 1, d)).await;
    let again = s2.next_result().await;
    assert_eq!((outcome(&again), again.replayed), (pb::StepOutcome::Cancelled, true), "{again:?}");
    s2.ack(&["d9"]).await;
    never_ran(&world);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_hint_sends_the_agent_to_the_leader() {
    let world = World::new();
    let mut follower = TestServer::start(None);
    let mut leader = TestServer::start(None);
    let _agent = agent(&world, &[follower.address()]);

    let mut s = follower.next_session().await;
    let instance = s.register().await.instance_id;
    s.send(In::LeaderHint(pb::LeaderHint { leader_id: 2, leader_addr: leader.address() })).await;
    s.end();

    let mut l = leader.next_session().await;
    assert_eq!(l.register().await.instance_id, instance, "the same agent, at the leader");
    l.welcome(BEAT_MS).await;
    assert_eq!(l.next_heartbeat().await.seq, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_known_leader_the_agent_tries_the_next_coordinator() {
    let world = World::new();
    let mut first = TestServer::start(None);
    let mut second = TestServer::start(None);
    let _agent = agent(&world, &[first.address(), second.address()]);

    let mut s = first.next_session().await;
    s.register().await;
    s.send(In::LeaderHint(pb::LeaderHint { leader_id: 0, leader_addr: String::new() })).await;
    s.end();

    let mut next = second.next_session().await;
    next.register().await;
    next.welcome(BEAT_MS).await;
    assert_eq!(next.next_heartbeat().await.seq, 1);
}

/// A TCP relay to `upstream` that can freeze: it then stops moving bytes either way
/// but keeps every connection open, as a paused coordinator or a network that drops
/// packets does.
async fn freezable_relay(upstream: std::net::SocketAddr) -> (String, std::sync::Arc<std::sync::atomic::AtomicBool>) {
    use std::sync::atomic::{AtomicBool, Ordering};
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let frozen = std::sync::Arc::new(AtomicBool::new(false));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    let flag = frozen.clone();
    tokio::spawn(async move {
        while let Ok((inbound, _)) = listener.accept().await {
            let outbound = tokio::net::TcpStream::connect(upstream).await.expect("upstream");
            let (ri, wi) = inbound.into_split();
            let (ro, wo) = outbound.into_split();
            for (mut from, mut to) in [
                (
                    Box::new(ri) as Box<dyn tokio::io::AsyncRead + Unpin + Send>,
                    Box::new(wo) as Box<dyn tokio::io::AsyncWrite + Unpin + Send>,
                ),
                (Box::new(ro), Box::new(wi)),
            ] {
                let flag = flag.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 16 * 1024];
                    loop {
                        let Ok(n) = from.read(&mut buf).await else { return };
                        if n == 0 {
                            return;
                        }
                        // Frozen: the bytes are swallowed and the connection stays open.
                        if !flag.load(Ordering::SeqCst) && to.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                });
            }
        }
    });
    (addr, frozen)
}

/// A coordinator that freezes (paused, or cut off by a network that drops packets)
/// answers nothing but keeps the connection open: the agent's pings go unanswered, it
/// gives the session up within seconds and dials the next coordinator.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_coordinator_that_stops_answering_is_left_for_the_next_one_within_seconds() {
    let world = World::new();
    let mut frozen_server = TestServer::start(None);
    let mut next_server = TestServer::start(None);
    let (relay, frozen) = freezable_relay(frozen_server.addr).await;
    let _agent = agent(&world, &[relay, next_server.address()]);
    let mut s = frozen_server.next_session().await;
    s.register().await;
    // Heartbeats seconds apart, as on a real fleet: they cannot fill the stream's flow
    // control window (which would end the session another way) before the deadline.
    s.welcome(5_000).await;
    s.next_heartbeat().await;

    frozen.store(true, std::sync::atomic::Ordering::SeqCst);
    // Well under the 30 s a dead TCP peer would take with keep-alive pings alone.
    let within = std::time::Duration::from_secs(15);
    let mut next = tokio::time::timeout(within, next_server.next_session())
        .await
        .unwrap_or_else(|_| panic!("the agent still waited on the frozen coordinator after {within:?}"));
    next.register().await;
    next.welcome(BEAT_MS).await;
    assert_eq!(next.next_heartbeat().await.seq, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_reconnects_when_the_server_comes_back() {
    let world = World::new();
    let mut server = TestServer::start(None);
    let addr = server.addr;
    let agent = agent(&world, &[server.address()]);
    let mut s = server.next_session().await;
    let instance = s.register().await.instance_id;
    s.welcome(BEAT_MS).await;
    s.next_heartbeat().await;

    server.stop();
    drop(s);
    // The agent notices and keeps trying (connections refused meanwhile).
    agent.until_logged("session ended", 1).await;
    agent.until_logged("reconnecting", 3).await;

    let mut back = TestServer::start_on(addr, None);
    let mut s = back.next_session().await;
    assert_eq!(s.register().await.instance_id, instance);
    s.welcome(BEAT_MS).await;
    assert_eq!(s.next_heartbeat().await.seq, 1, "a new session counts from 1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_stops_a_long_deploy_and_the_host_stays_on_the_old_version() {
    let world = World::new();
    let v1 = world.package("1.0.0");
    let v2 = world.package_with("2.0.0", &Behaviour { unhealthy: true, ..Behaviour::healthy("2.0.0") });
    let mut server = TestServer::start(None);
    let _agent = agent(&world, &[server.address()]);
    let mut s = server.next_session().await;
    s.register().await;
    s.welcome(BEAT_MS).await;
    s.step(deploy_step("d1", 1, world.deploy("d1", "1.0.0", &v1))).await;
    assert_eq!(outcome(&s.next_result().await), pb::StepOutcome::Succeeded);
    s.ack(&["d1"]).await;

    let mut d2 = world.deploy("d2", "2.0.0", &v2);
    d2.healthy_deadline_ms = 120_000;
    s.step(deploy_step("d2", 1, d2)).await;
    s.until_progress("d2", pb::StepPhase::CheckingHealth).await;
    s.until_heartbeat(|h| h.running_command_ids == ["d2"]).await;
    s.cancel("d2", "release aborted").await;
    let result = s.next_result().await;
    assert_eq!(outcome(&result), pb::StepOutcome::Cancelled, "{result:?}");
    assert_eq!(result.failure, pb::StepFailure::Unspecified as i32);
    assert!(result.reason.starts_with("cancelled during checking_health: release aborted"), "{}", result.reason);
    assert_eq!(result.service.as_ref().map(|i| i.version.as_str()), Some("1.0.0"));
    assert_eq!(world.current().as_deref(), Some("1.0.0"));
    world.wait_serving("1.0.0").await;
    assert!(world.processes_of("2.0.0").is_empty(), "nothing of 2.0.0 runs");
    assert_eq!(world.processes_of("1.0.0").len(), 1, "one process of 1.0.0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_sessions_work_and_plaintext_or_foreign_certificates_are_refused() {
    let world = World::new();
    let pki = world.dir.path().join("pki");
    let ca = TestCa::new(&pki, "fleet").expect("a CA");
    let server_tls = ca.issue(Role::Coordinator, "1").expect("issue");
    let agent_tls = ca.issue(Role::Agent, HOST_ID).expect("issue");

    // Mutual TLS with certificates of the fleet's CA.
    let mut server = TestServer::start(Some(&server_tls));
    let _agent = AgentProcess::start(world.dir.path(), &world.data(), &[server.address()], Some(&agent_tls));
    let mut s = server.next_session().await;
    assert_eq!(s.register().await.host_id, HOST_ID);
    s.welcome(BEAT_MS).await;
    assert_eq!(s.next_heartbeat().await.seq, 1);

    // An agent configured for TLS does not talk to a plaintext server.
    let mut plaintext = TestServer::start(None);
    let dir2 = world.dir.path().join("agent2");
    std::fs::create_dir_all(&dir2).expect("mkdir");
    let agent2 = AgentProcess::start(&dir2, &dir2.join("data"), &[plaintext.address()], Some(&agent_tls));
    agent2.until_logged("session ended", 2).await;
    assert!(plaintext.try_next_session().is_none(), "no session over plaintext");
    assert!(
        agent2.log_text().lines().filter(|l| l.contains("session ended")).all(|l| l.contains("reason=connecting:")),
        "refused while connecting (TLS handshake):\n{}",
        agent2.log_text()
    );

    // A certificate from another CA is refused by the server, though it names the
    // same host.
    let other = TestCa::new(&pki, "other").expect("a CA");
    let mut foreign = other.issue(Role::Agent, HOST_ID).expect("issue");
    foreign.ca.clone_from(&agent_tls.ca); // trusts the server, but is not trusted by it
    let dir3 = world.dir.path().join("agent3");
    std::fs::create_dir_all(&dir3).expect("mkdir");
    let agent3 = AgentProcess::start(&dir3, &dir3.join("data"), &[server.address()], Some(&foreign));
    agent3.until_logged("session ended", 2).await;
    assert!(server.try_next_session().is_none(), "no session with a foreign certificate");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_protocol_mismatch_is_logged_with_both_versions_and_retried_slowly() {
    let world = World::new();
    let mut server = TestServer::start(None);
    let agent = agent(&world, &[server.address()]);
    let mut s = server.next_session().await;
    s.register().await;
    // A coordinator newer than this agent's protocol, which no longer accepts it.
    let theirs = flotilla_proto::PROTOCOL_VERSION + 1;
    s.end_with(tonic::Status::failed_precondition(format!(
        "protocol mismatch: the coordinator speaks flotilla.v1 protocol {theirs} (accepts {theirs}..={theirs}), \
         the agent {}",
        flotilla_proto::PROTOCOL_VERSION
    )))
    .await;

    agent.until_logged("protocol mismatch", 1).await;
    let log = agent.log_text();
    let line = log.lines().find(|l| l.contains("protocol mismatch")).expect("logged");
    assert!(line.contains(&format!("agent_protocol={}", flotilla_proto::PROTOCOL_VERSION)), "ours: {line}");
    assert!(line.contains(&format!("the coordinator speaks flotilla.v1 protocol {theirs}")), "theirs: {line}");
    let retry_ms: u64 = line
        .split("retry_in_ms=")
        .nth(1)
        .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse().ok())
        .expect("retry_in_ms logged");
    assert!((30_000..=60_000).contains(&retry_ms), "retried slowly: {retry_ms} ms");
    assert!(server.try_next_session().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_the_agent_and_its_services_keep_running() {
    let world = World::new();
    let v1 = world.package("1.0.0");
    let mut server = TestServer::start(None);
    let mut agent1 = agent(&world, &[server.address()]);
    let mut s = server.next_session().await;
    s.register().await;
    s.welcome(BEAT_MS).await;
    s.step(deploy_step("d1", 1, world.deploy("d1", "1.0.0", &v1))).await;
    let result = s.next_result().await;
    assert_eq!(outcome(&result), pb::StepOutcome::Succeeded);
    let pid = result.service.expect("service").pid;
    s.ack(&["d1"]).await;

    let status = agent1.terminate();
    assert_eq!(status.code(), Some(0), "a clean stop:\n{}", agent1.log_text());
    assert!(agent1.log_text().contains("flotilla-agent stopped"));
    world.wait_serving("1.0.0").await;
    assert_eq!(world.processes_of("1.0.0"), vec![pid], "the service kept running");

    // The next agent re-adopts it (same pid) and reports it.
    let _agent2 = agent(&world, &[server.address()]);
    let mut s2 = server.next_session().await;
    let register = s2.register().await;
    assert_eq!(register.inventory.first().map(|i| (i.version.as_str(), i.pid)), Some(("1.0.0", pid)));
}
