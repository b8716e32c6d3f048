//! `AgentLink` and `Fleet` against real coordinators: an in-process two-node cluster
//! (`Node` + `serve` + `AgentHub` on loopback ports) and a fake agent written with the
//! generated tonic client. Every wait has a deadline.

use std::collections::HashMap;
use std::future::Future;
use std::time::{Duration, Instant};

use flotilla_coordinator::fleet::{AgentHub, AgentReport, HubSettings};
use flotilla_coordinator::node::{Node, RaftSettings};
use flotilla_coordinator::server;
use flotilla_net::{ClientSecurity, channel};
use flotilla_proto::v1::agent_link_client::AgentLinkClient;
use flotilla_proto::v1::coordinator_message::Msg;
use flotilla_proto::v1::fleet_client::FleetClient;
use flotilla_proto::v1::{self, HostState, agent_message};
use tokio::sync::{mpsc, oneshot};
use tonic::{Code, Status};

const DEADLINE: Duration = Duration::from_secs(10);

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("FLOTILLA_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("off"));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_test_writer().try_init();
}

/// Polls `check` until it returns `Some`, failing after [`DEADLINE`] with `what`.
async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out after {DEADLINE:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Awaits `f` for at most [`DEADLINE`].
async fn within<T>(what: &str, f: impl Future<Output = T>) -> T {
    tokio::time::timeout(DEADLINE, f).await.unwrap_or_else(|_| panic!("timed out after {DEADLINE:?}: {what}"))
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free port")
}

/// One in-process coordinator.
struct Coordinator {
    node: Node,
    hub: AgentHub,
    addr: String,
    stop: Option<oneshot::Sender<()>>,
    _dir: tempfile::TempDir,
}

impl Coordinator {
    fn fleet(&self) -> FleetClient<tonic::transport::Channel> {
        FleetClient::new(channel(&self.addr, &ClientSecurity::Insecure).expect("a valid address"))
    }

    async fn list(&self, labels: &[(&str, &str)], include_lost: bool) -> Vec<v1::Host> {
        let labels = labels.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        let req = v1::ListAgentsRequest { labels, include_lost };
        self.fleet().list_agents(req).await.expect("ListAgents answers").into_inner().hosts
    }

    /// The host as this node's `ListAgents` shows it, lost ones included.
    async fn host(&self, id: &str) -> Option<v1::Host> {
        self.list(&[], true).await.into_iter().find(|h| h.host_id == id)
    }
}

impl Drop for Coordinator {
    fn drop(&mut self) {
        self.hub.shutdown();
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// A two-node cluster, leader first.
struct Cluster {
    nodes: Vec<Coordinator>,
}

impl Cluster {
    async fn start(settings: HubSettings) -> Self {
        init_tracing();
        let addrs: Vec<(u64, String)> = (1..=2).map(|id| (id, format!("127.0.0.1:{}", free_port()))).collect();
        let mut nodes = Vec::new();
        for (id, addr) in &addrs {
            let dir = tempfile::tempdir().expect("a temp dir");
            let node = Node::start(*id, addr.clone(), dir.path(), &RaftSettings::default(), ClientSecurity::Insecure)
                .await
                .expect("the node starts");
            let hub = AgentHub::start(node.clone(), settings.clone());
            let (stop, stopped) = oneshot::channel::<()>();
            let listener = tokio::net::TcpListener::bind(addr.as_str()).await.expect("the address is free");
            let enroller = flotilla_coordinator::enrolment::Enroller::disabled();
            let (auditor, _queue) = flotilla_coordinator::audit::Auditor::new();
            let options = server::ServeOptions {
                auditor,
                retention: flotilla_coordinator::state::Retention::default(),
                prometheus: false,
            };
            tokio::spawn(server::serve(node.clone(), hub.clone(), listener, None, enroller, options, async move {
                let _ = stopped.await;
            }));
            nodes.push(Coordinator { node, hub, addr: addr.clone(), stop: Some(stop), _dir: dir });
        }
        nodes[0].node.bootstrap(&addrs).await.expect("bootstrap");
        let leader = eventually("a leader whose hub accepts sessions", || {
            let found = nodes.iter().position(|n| n.hub.leader_term().is_some());
            async move { found }
        })
        .await;
        if leader != 0 {
            nodes.swap(0, leader);
        }
        let leader_id = nodes[0].node.id();
        eventually("the follower to know the leader", || {
            let known = nodes[1].node.raft().metrics().borrow().current_leader == Some(leader_id);
            async move { known.then_some(()) }
        })
        .await;
        Self { nodes }
    }

    fn leader(&self) -> &Coordinator {
        &self.nodes[0]
    }

    fn follower(&self) -> &Coordinator {
        &self.nodes[1]
    }
}

fn settings(lease_ms: u64, heartbeat_ms: u64) -> HubSettings {
    HubSettings {
        lease: Duration::from_millis(lease_ms),
        heartbeat_interval: Duration::from_millis(heartbeat_ms),
        ..HubSettings::default()
    }
}

/// Long enough that no lease expires during a test that does not heartbeat.
fn relaxed() -> HubSettings {
    settings(30_000, 1_000)
}

fn service(name: &str, version: &str, provides: &[(&str, &str)]) -> v1::ServiceInstance {
    v1::ServiceInstance {
        service: name.to_owned(),
        version: version.to_owned(),
        state: v1::ServiceRunState::Running as i32,
        pid: 4242,
        provides: provides.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(),
        ..Default::default()
    }
}

fn register(host: &str, instance: &str) -> v1::Register {
    v1::Register {
        host_id: host.to_owned(),
        labels: HashMap::from([("role".to_owned(), "web".to_owned()), ("zone".to_owned(), "a".to_owned())]),
        version: Some(flotilla_proto::version_info("0.1.0", [])),
        instance_id: instance.to_owned(),
        inventory: vec![service("web", "1.4.0", &[("web-api", "1.4.0")])],
        highest_term: 0,
        running_command_ids: vec!["c-running".to_owned()],
    }
}

/// An agent's session, driven by hand.
struct FakeAgent {
    tx: Option<mpsc::Sender<v1::AgentMessage>>,
    rx: Option<tonic::Streaming<v1::CoordinatorMessage>>,
    /// A refusal that came back as the call's answer rather than on the stream.
    refused: Option<Status>,
}

impl FakeAgent {
    /// Opens a session on `addr` and sends `first` (normally a `Register`).
    async fn connect(addr: &str, first: agent_message::Msg) -> Self {
        let (tx, rx) = mpsc::channel::<v1::AgentMessage>(64);
        tx.send(v1::AgentMessage { msg: Some(first) }).await.expect("queued");
        let outgoing = futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|m| (m, rx)) });
        let mut client = AgentLinkClient::new(channel(addr, &ClientSecurity::Insecure).expect("a valid address"));
        match within("the session call", client.session(outgoing)).await {
            Ok(resp) => Self { tx: Some(tx), rx: Some(resp.into_inner()), refused: None },
            Err(status) => Self { tx: Some(tx), rx: None, refused: Some(status) },
        }
    }

    async fn register(addr: &str, host: &str, instance: &str) -> Self {
        Self::connect(addr, agent_message::Msg::Register(register(host, instance))).await
    }

    /// The next message: `Ok(None)` when the stream ended cleanly.
    async fn next(&mut self) -> Result<Option<Msg>, Status> {
        if let Some(status) = self.refused.take() {
            return Err(status);
        }
        let Some(rx) = self.rx.as_mut() else { return Ok(None) };
        let next = within("the next coordinator message", rx.message()).await?;
        Ok(next.map(|m| m.msg.expect("a message with content")))
    }

    async fn expect(&mut self, what: &str) -> Msg {
        match self.next().await {
            Ok(Some(m)) => m,
            other => panic!("expected {what}, got {other:?}"),
        }
    }

    async fn welcome(&mut self) -> v1::Welcome {
        match self.expect("Welcome").await {
            Msg::Welcome(w) => w,
            other => panic!("expected Welcome, got {other:?}"),
        }
    }

    async fn send(&self, msg: agent_message::Msg) {
        let tx = self.tx.as_ref().expect("the agent's side is open");
        tx.send(v1::AgentMessage { msg: Some(msg) }).await.expect("the request stream is open");
    }

    /// Ends the agent's side of the session.
    fn hang_up(&mut self) {
        self.tx = None;
    }
}

async fn next_report(reports: &mut mpsc::Receiver<AgentReport>) -> AgentReport {
    within("the next agent report", reports.recv()).await.expect("the hub keeps the report channel open")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registration_commits_the_host_with_labels_and_inventory_on_every_node() {
    let cluster = Cluster::start(relaxed()).await;
    let (leader, follower) = (cluster.leader(), cluster.follower());
    let mut agent = FakeAgent::register(&leader.addr, "web-1", "i-1").await;
    let welcome = agent.welcome().await;
    assert_eq!(welcome.node_id, leader.node.id());
    assert_eq!(Some(welcome.term), leader.hub.leader_term());
    assert_eq!((welcome.lease_ms, welcome.heartbeat_interval_ms), (30_000, 1_000));
    assert_eq!(welcome.version.map(|v| v.protocol_version), Some(flotilla_proto::PROTOCOL_VERSION));
    assert_eq!(leader.hub.connected_hosts(), ["web-1"]);

    // Committed through Raft: the follower's applied state has it.
    let host = eventually("web-1 on the follower", || async { follower.host("web-1").await }).await;
    assert_eq!(host.state, HostState::Online as i32);
    assert_eq!(host.labels.get("role").map(String::as_str), Some("web"));
    assert_eq!(host.agent_version.as_ref().map(|v| v.software_version.as_str()), Some("0.1.0"));
    assert_eq!(host.connected_node_id, leader.node.id(), "a follower reports the leader");
    let web = &host.services[0];
    assert_eq!((web.service.as_str(), web.version.as_str()), ("web", "1.4.0"));
    assert_eq!(web.state, v1::ServiceRunState::Running as i32);
    assert_eq!(web.provides.get("web-api").map(String::as_str), Some("1.4.0"));
    assert_eq!(web.pid, 0, "process details are not replicated");
    assert!(host.registered_unix_ms > 0 && host.state_changed_unix_ms >= host.registered_unix_ms);

    // Label filters.
    assert_eq!(follower.list(&[("role", "web")], false).await.len(), 1);
    assert_eq!(follower.list(&[("role", "web"), ("zone", "b")], false).await.len(), 0);

    // The leader knows when it last heard from the agent.
    let on_leader = leader
        .fleet()
        .get_host(v1::GetHostRequest { host_id: "web-1".into(), recent_steps: 0 })
        .await
        .expect("GetHost")
        .into_inner();
    let on_leader = on_leader.host.expect("a host");
    assert!(on_leader.last_seen_unix_ms > 0);
    assert_eq!(on_leader.connected_node_id, leader.node.id());
    let missing = follower.fleet().get_host(v1::GetHostRequest { host_id: "nope".into(), recent_steps: 0 }).await;
    assert_eq!(missing.expect_err("unknown host").code(), Code::NotFound);

    // The planner sees it on every node.
    let planning = follower.node.read_local(|s| s.fleet().planning_fleet());
    assert_eq!(planning.hosts.len(), 1);
    assert_eq!(planning.provided_versions("web-api").map(ToString::to_string).collect::<Vec<_>>(), ["1.4.0"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_answers_a_leader_hint_and_ends_the_stream() {
    let cluster = Cluster::start(relaxed()).await;
    let (leader, follower) = (cluster.leader(), cluster.follower());
    let mut agent = FakeAgent::register(&follower.addr, "web-1", "i-1").await;
    match agent.expect("LeaderHint").await {
        Msg::LeaderHint(hint) => {
            assert_eq!(hint.leader_id, leader.node.id());
            assert_eq!(hint.leader_addr, leader.addr);
        }
        other => panic!("expected LeaderHint, got {other:?}"),
    }
    assert_eq!(agent.next().await.expect("a clean end"), None, "the stream ends after the hint");
    assert!(follower.hub.connected_hosts().is_empty());
    assert!(leader.list(&[], true).await.is_empty(), "nothing was registered");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missed_lease_marks_the_host_lost_through_raft_and_a_new_session_brings_it_back() {
    let cluster = Cluster::start(settings(600, 150)).await;
    let (leader, follower) = (cluster.leader(), cluster.follower());
    let mut reports = leader.hub.subscribe();

    // Heartbeats keep the lease: three leases' worth of them.
    let mut agent = FakeAgent::register(&leader.addr, "web-1", "i-1").await;
    agent.welcome().await;
    let until = Instant::now() + Duration::from_millis(1_800);
    let mut seq = 0;
    while Instant::now() < until {
        seq += 1;
        agent.send(agent_message::Msg::Heartbeat(v1::Heartbeat { seq, ..Default::default() })).await;
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    let host = follower.host("web-1").await.expect("registered");
    assert_eq!(host.state, HostState::Online as i32, "heartbeats renewed the lease");
    assert_eq!(leader.hub.connected_hosts(), ["web-1"]);

    // Silence: the lease expires, the loss is committed, the session is closed.
    let lost = eventually("web-1 lost on the follower", || async {
        follower.host("web-1").await.filter(|h| h.state == HostState::Lost as i32)
    })
    .await;
    assert!(lost.state_changed_unix_ms > lost.registered_unix_ms);
    assert!(follower.list(&[], false).await.is_empty(), "lost hosts are listed only with include_lost");
    assert_eq!(agent.next().await.expect("the leader ends the stream"), None);
    assert!(leader.hub.connected_hosts().is_empty());
    assert!(follower.node.read_local(|s| s.fleet().planning_fleet()).hosts.is_empty());
    let mut saw = Vec::new();
    while saw.len() < 2 {
        saw.push(next_report(&mut reports).await);
    }
    assert!(matches!(&saw[0], AgentReport::Connected { host, .. } if host == "web-1"), "{saw:?}");
    assert_eq!(saw[1], AgentReport::Disconnected { host: "web-1".into() });
    let history = follower.node.read_local(|s| s.fleet().history().last().map(|e| e.message.clone()));
    assert!(history.is_some_and(|m| m.contains("is offline: no message from its agent")), "the reason is recorded");

    // A new session brings it back.
    let mut again = FakeAgent::register(&leader.addr, "web-1", "i-1").await;
    again.welcome().await;
    eventually("web-1 back online on the follower", || async {
        follower.host("web-1").await.filter(|h| h.state == HostState::Online as i32)
    })
    .await;
    let back = follower.node.read_local(|s| s.fleet().history().last().map(|e| e.message.clone()));
    assert!(back.is_some_and(|m| m.contains("is back online")), "the return is recorded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_sent_through_the_hub_reaches_the_agent_and_its_result_reaches_the_subscriber() {
    let cluster = Cluster::start(relaxed()).await;
    let leader = cluster.leader();
    let hub = &leader.hub;
    let mut reports = hub.subscribe();
    let mut agent = FakeAgent::register(&leader.addr, "web-1", "i-7").await;
    let term = agent.welcome().await.term;
    assert_eq!(
        next_report(&mut reports).await,
        AgentReport::Connected {
            host: "web-1".into(),
            instance_id: "i-7".into(),
            running_command_ids: vec!["c-running".into()],
        }
    );

    let step = v1::Step {
        command_id: "c-1".into(),
        term,
        release_id: "r-1".into(),
        stage: "canary".into(),
        action: Some(v1::step::Action::Stop(v1::Stop { service: "web".into(), stop_timeout_ms: 0 })),
    };
    hub.send("web-1", step.clone()).expect("web-1 is connected");
    assert_eq!(agent.expect("Step").await, Msg::Step(step.clone()));

    let progress = v1::StepProgress {
        command_id: "c-1".into(),
        phase: v1::StepPhase::Stopping as i32,
        detail: "SIGTERM".into(),
        at_unix_ms: 1,
    };
    agent.send(agent_message::Msg::Progress(progress.clone())).await;
    assert_eq!(next_report(&mut reports).await, AgentReport::Progress { host: "web-1".into(), progress });
    let result = v1::StepResult {
        command_id: "c-1".into(),
        term,
        outcome: v1::StepOutcome::Succeeded as i32,
        ..Default::default()
    };
    agent.send(agent_message::Msg::Result(result.clone())).await;
    assert_eq!(next_report(&mut reports).await, AgentReport::Result { host: "web-1".into(), result });

    hub.ack("web-1", vec!["c-1".into()]);
    assert_eq!(agent.expect("ResultAck").await, Msg::Ack(v1::ResultAck { command_ids: vec!["c-1".into()] }));
    hub.cancel("web-1", "c-2", 1, "release aborted");
    assert_eq!(
        agent.expect("Cancel").await,
        Msg::Cancel(v1::Cancel { command_id: "c-2".into(), reason: "release aborted".into(), term: 1 })
    );

    let err = hub.send("db-1", step.clone()).expect_err("db-1 never connected");
    assert_eq!(err.host, "db-1");
    assert!(err.to_string().contains("db-1 is not connected"), "{err}");

    agent.hang_up();
    assert_eq!(next_report(&mut reports).await, AgentReport::Disconnected { host: "web-1".into() });
    assert!(hub.connected_hosts().is_empty());
    assert!(hub.send("web-1", step).is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_protocol_mismatch_or_a_missing_register_is_refused() {
    let cluster = Cluster::start(relaxed()).await;
    let leader = cluster.leader();
    let mut future_agent = register("web-1", "i-1");
    future_agent.version =
        Some(v1::VersionInfo { protocol_version: 99, software_version: "9.0.0".into(), features: Vec::new() });
    let mut agent = FakeAgent::connect(&leader.addr, agent_message::Msg::Register(future_agent)).await;
    let status = agent.next().await.expect_err("refused");
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    let text = status.message();
    assert!(text.contains("protocol 99") && text.contains("9.0.0"), "names the agent's version: {text}");
    assert!(
        text.contains(&format!("speaks protocol {}", flotilla_proto::PROTOCOL_VERSION)),
        "names this coordinator's version: {text}"
    );

    let mut agent =
        FakeAgent::connect(&leader.addr, agent_message::Msg::Heartbeat(v1::Heartbeat { seq: 1, ..Default::default() }))
            .await;
    let status = agent.next().await.expect_err("refused");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("must be Register"), "{status:?}");
    assert!(leader.list(&[], true).await.is_empty(), "nothing was registered");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_is_a_leader_write_visible_in_list_agents() {
    let cluster = Cluster::start(relaxed()).await;
    let (leader, follower) = (cluster.leader(), cluster.follower());
    let mut agent = FakeAgent::register(&leader.addr, "web-1", "i-1").await;
    agent.welcome().await;

    // Sent to the follower: forwarded to the leader.
    let drained = follower
        .fleet()
        .drain(v1::DrainRequest { host_id: "web-1".into(), undrain: false, reason: "disk swap".into() })
        .await
        .expect("Drain")
        .into_inner()
        .host
        .expect("the host");
    assert!(drained.drained);
    assert_eq!(drained.drain_reason, "disk swap");
    let listed = eventually("the drain on the follower", || async {
        follower.list(&[], false).await.into_iter().find(|h| h.drained)
    })
    .await;
    assert_eq!(listed.drain_reason, "disk swap");
    assert_eq!(listed.state, HostState::Online as i32, "a drained host stays online");

    let undrained = leader
        .fleet()
        .drain(v1::DrainRequest { host_id: "web-1".into(), undrain: true, reason: "done".into() })
        .await
        .expect("Undrain")
        .into_inner()
        .host
        .expect("the host");
    assert!(!undrained.drained && undrained.drain_reason.is_empty());
    let unknown = leader
        .fleet()
        .drain(v1::DrainRequest { host_id: "nope".into(), undrain: false, reason: String::new() })
        .await
        .expect_err("unknown host");
    assert_eq!(unknown.code(), Code::NotFound);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_session_for_the_same_host_replaces_the_first() {
    let cluster = Cluster::start(relaxed()).await;
    let leader = cluster.leader();
    let mut reports = leader.hub.subscribe();
    let mut first = FakeAgent::register(&leader.addr, "web-1", "i-1").await;
    first.welcome().await;
    let mut second = FakeAgent::register(&leader.addr, "web-1", "i-1").await;
    second.welcome().await;
    assert_eq!(first.next().await.expect("a clean end"), None, "the first session is closed");

    let step = v1::Step { command_id: "c-1".into(), ..Default::default() };
    leader.hub.send("web-1", step.clone()).expect("connected");
    assert_eq!(second.expect("Step").await, Msg::Step(step));
    for _ in 0..2 {
        assert!(matches!(next_report(&mut reports).await, AgentReport::Connected { .. }));
    }
    assert!(reports.try_recv().is_err(), "no Disconnected for a replaced session");
    assert_eq!(leader.hub.connected_hosts(), ["web-1"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_heartbeat_inventory_change_is_committed() {
    let cluster = Cluster::start(relaxed()).await;
    let (leader, follower) = (cluster.leader(), cluster.follower());
    let mut agent = FakeAgent::register(&leader.addr, "web-1", "i-1").await;
    agent.welcome().await;
    let mut crashed = service("web", "1.4.0", &[]);
    crashed.state = v1::ServiceRunState::Crashed as i32;
    agent
        .send(agent_message::Msg::Heartbeat(v1::Heartbeat {
            seq: 1,
            inventory: Some(v1::Inventory { services: vec![crashed, service("api", "2.0.0", &[])] }),
            ..Default::default()
        }))
        .await;
    let host = eventually("the new inventory on the follower", || async {
        follower.host("web-1").await.filter(|h| h.services.len() == 2)
    })
    .await;
    let names: Vec<&str> = host.services.iter().map(|s| s.service.as_str()).collect();
    assert_eq!(names, ["api", "web"]);
    assert_eq!(host.services[1].state, v1::ServiceRunState::Crashed as i32);
    let planning = follower.node.read_local(|s| s.fleet().planning_fleet());
    let running: Vec<&str> = planning.hosts[0].services.keys().map(|s| s.0.as_str()).collect();
    assert_eq!(running, ["api"], "a crashed service is not counted as running for planning");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_leadership_sends_every_session_a_leader_hint() {
    let cluster = Cluster::start(relaxed()).await;
    let (leader, follower) = (cluster.leader(), cluster.follower());
    let mut agent = FakeAgent::register(&leader.addr, "web-1", "i-1").await;
    agent.welcome().await;
    eventually("web-1 on the follower", || async { follower.host("web-1").await }).await;

    // The follower starts an election; the old leader steps down on seeing its term.
    let old_term = leader.hub.leader_term().expect("leading");
    follower.node.raft().trigger().elect().await.expect("an election is triggered");
    match agent.expect("LeaderHint").await {
        Msg::LeaderHint(hint) => {
            assert_ne!(hint.leader_id, leader.node.id(), "the hint does not point back at the deposed leader");
        }
        other => panic!("expected LeaderHint, got {other:?}"),
    }
    assert_eq!(agent.next().await.expect("a clean end"), None, "the stream ends after the hint");

    // The agent follows it to whichever node leads next (either may win the election);
    // the host stays online throughout.
    let next = eventually("a leader in a later term", || {
        let found = cluster.nodes.iter().find(|n| n.hub.leader_term().is_some_and(|t| t > old_term));
        async move { found }
    })
    .await;
    let mut again = FakeAgent::register(&next.addr, "web-1", "i-1").await;
    let welcome = again.welcome().await;
    assert_eq!(welcome.node_id, next.node.id());
    assert!(welcome.term > old_term);
    for node in &cluster.nodes {
        assert_eq!(node.host("web-1").await.expect("known").state, HostState::Online as i32);
    }
}
