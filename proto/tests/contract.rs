//! The contract as built: every service and method of the API is in the descriptor
//! set, and generated clients and servers talk to each other over real loopback TCP.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::time::Duration;

use flotilla_proto::v1::agent_link_client::AgentLinkClient;
use flotilla_proto::v1::agent_link_server::{AgentLink, AgentLinkServer};
use flotilla_proto::v1::cluster_client::ClusterClient;
use flotilla_proto::v1::cluster_server::{Cluster, ClusterServer};
use flotilla_proto::v1::{
    AddNodeRequest, AddNodeResponse, AgentMessage, ClusterMember, ClusterStatus, CoordinatorMessage, Heartbeat,
    MemberRole, NotLeader, RaftState, Register, RemoveNodeRequest, RemoveNodeResponse, StatusRequest, StatusResponse,
    Welcome, agent_message, coordinator_message,
};
use flotilla_proto::{FILE_DESCRIPTOR_SET, PACKAGE, PROTOCOL_VERSION, status, version_info};
use prost::Message as _;
use prost_types::FileDescriptorSet;
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt as _};
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Channel, Server};
use tonic::{Code, Request, Response, Status, Streaming};

/// A method: (name, client streaming, server streaming).
type Method = (&'static str, bool, bool);

/// Every service and RPC the contract promises.
const EXPECTED: &[(&str, &[Method])] = &[
    (
        "Releases",
        &[
            ("Plan", false, false),
            ("Create", false, false),
            ("Get", false, false),
            ("List", false, false),
            ("Watch", false, true),
            ("Approve", false, false),
            ("Pause", false, false),
            ("Resume", false, false),
            ("Abort", false, false),
            ("Rollback", false, false),
            ("Annotate", false, false),
            ("RetryHost", false, false),
            ("ExcludeHost", false, false),
            ("Stats", false, false),
        ],
    ),
    (
        "Fleet",
        &[
            ("ListAgents", false, false),
            ("GetHost", false, false),
            ("Drain", false, false),
            ("CreateJoinToken", false, false),
            ("ListJoinTokens", false, false),
            ("RevokeJoinToken", false, false),
            ("ForgetHost", false, false),
        ],
    ),
    ("Enrolment", &[("Join", false, false), ("Renew", false, false)]),
    (
        "Cluster",
        &[("Status", false, false), ("AddNode", false, false), ("RemoveNode", false, false), ("Backup", false, true)],
    ),
    ("AgentLink", &[("Session", true, true)]),
    (
        "RaftPeer",
        &[
            ("AppendEntries", false, false),
            ("Vote", false, false),
            ("InstallSnapshot", false, false),
            ("TimeoutNow", false, false),
            ("RecordAudit", false, false),
            ("Probe", false, false),
        ],
    ),
    (
        "Policy",
        &[
            ("SetWindow", false, false),
            ("RemoveWindow", false, false),
            ("ListWindows", false, false),
            ("SetHook", false, false),
            ("RemoveHook", false, false),
            ("ListHooks", false, false),
        ],
    ),
    (
        "Access",
        &[
            ("WhoAmI", false, false),
            ("CreateToken", false, false),
            ("ListTokens", false, false),
            ("RevokeToken", false, false),
            ("ListAudit", false, false),
        ],
    ),
];

fn descriptors() -> FileDescriptorSet {
    FileDescriptorSet::decode(FILE_DESCRIPTOR_SET).expect("FILE_DESCRIPTOR_SET decodes")
}

#[test]
fn every_service_and_method_is_in_the_descriptor_set() {
    let fds = descriptors();
    let mut services = BTreeMap::new();
    for file in &fds.file {
        if file.package() != PACKAGE {
            continue;
        }
        for service in &file.service {
            services.insert(service.name().to_owned(), service.clone());
        }
    }
    let expected_names: Vec<&str> = EXPECTED.iter().map(|(name, _)| *name).collect();
    let mut actual_names: Vec<&str> = services.keys().map(String::as_str).collect();
    actual_names.sort_unstable();
    let mut sorted_expected = expected_names.clone();
    sorted_expected.sort_unstable();
    assert_eq!(actual_names, sorted_expected, "services of {PACKAGE}");

    for (service, methods) in EXPECTED {
        let descriptor = &services[*service];
        let actual: Vec<(&str, bool, bool)> =
            descriptor.method.iter().map(|m| (m.name(), m.client_streaming(), m.server_streaming())).collect();
        assert_eq!(actual, methods.to_vec(), "methods of {PACKAGE}.{service}");
    }
}

#[test]
fn descriptor_set_is_self_contained_and_documented() {
    let fds = descriptors();
    let names: Vec<&str> = fds.file.iter().map(|f| f.name()).collect();
    for file in ["common", "releases", "fleet", "cluster", "agent", "raft", "enrolment"] {
        assert!(names.contains(&format!("flotilla/v1/{file}.proto").as_str()), "{file}.proto missing from {names:?}");
    }
    // Every import is in the set too, so reflection clients can resolve everything.
    for file in &fds.file {
        for dep in &file.dependency {
            assert!(names.contains(&dep.as_str()), "{} imports {dep}, not in the set", file.name());
        }
    }
    // Comments are kept (reflection clients show them).
    let documented = fds
        .file
        .iter()
        .filter_map(|f| f.source_code_info.as_ref())
        .flat_map(|info| &info.location)
        .filter(|loc| loc.leading_comments.as_deref().is_some_and(|c| !c.trim().is_empty()))
        .count();
    assert!(documented > 200, "only {documented} documented elements");
}

#[test]
fn every_message_field_and_enum_value_has_a_comment() {
    // Paths in SourceCodeInfo: 4 = message_type, 2 = field, 5 = enum_type, 2 = value,
    // 6 = service, 2 = method. Check every message, field, enum, value, service and method.
    let fds = descriptors();
    let mut missing = Vec::new();
    for file in fds.file.iter().filter(|f| f.package() == PACKAGE) {
        let info = file.source_code_info.as_ref().expect("source info kept");
        let commented: std::collections::HashSet<Vec<i32>> = info
            .location
            .iter()
            .filter(|l| l.leading_comments.as_deref().is_some_and(|c| !c.trim().is_empty()))
            .map(|l| l.path.clone())
            .collect();
        let mut check = |path: Vec<i32>, what: String| {
            if !commented.contains(&path) {
                missing.push(format!("{}: {what}", file.name()));
            }
        };
        for (mi, msg) in file.message_type.iter().enumerate() {
            check(vec![4, mi as i32], msg.name().to_owned());
            for (fi, field) in msg.field.iter().enumerate() {
                check(vec![4, mi as i32, 2, fi as i32], format!("{}.{}", msg.name(), field.name()));
            }
        }
        for (ei, en) in file.enum_type.iter().enumerate() {
            check(vec![5, ei as i32], en.name().to_owned());
            for (vi, value) in en.value.iter().enumerate() {
                check(vec![5, ei as i32, 2, vi as i32], value.name().to_owned());
            }
        }
        for (si, svc) in file.service.iter().enumerate() {
            check(vec![6, si as i32], svc.name().to_owned());
            for (mi, method) in svc.method.iter().enumerate() {
                check(vec![6, si as i32, 2, mi as i32], format!("{}.{}", svc.name(), method.name()));
            }
        }
    }
    assert!(missing.is_empty(), "undocumented: {missing:#?}");
}

// ---------------------------------------------------------------- loopback

/// A one-node cluster that answers Status, and refuses writes with a leader hint.
#[derive(Debug)]
struct OneNode;

#[tonic::async_trait]
impl Cluster for OneNode {
    async fn status(&self, request: Request<StatusRequest>) -> Result<Response<StatusResponse>, Status> {
        let local = request.into_inner().local;
        Ok(Response::new(StatusResponse {
            status: Some(ClusterStatus {
                node_id: 1,
                leader_id: 1,
                leader_addr: if local { String::new() } else { "127.0.0.1:7600".to_owned() },
                term: 7,
                committed_index: 42,
                members: vec![ClusterMember {
                    node_id: 1,
                    addr: "127.0.0.1:7600".to_owned(),
                    role: MemberRole::Voter.into(),
                    state: RaftState::Leader.into(),
                    last_log_index: Some(42),
                    applied_index: Some(41),
                    matched_index: None,
                    version: Some(version_info("0.1.0", ["test".to_owned()])),
                    reachable: true,
                    holds_log: true,
                }],
                version: Some(version_info("0.1.0", [])),
                membership_changing: false,
            }),
        }))
    }

    async fn add_node(&self, _request: Request<AddNodeRequest>) -> Result<Response<AddNodeResponse>, Status> {
        Err(status::not_leader(&NotLeader { leader_id: 3, leader_addr: "127.0.0.1:7603".to_owned() }))
    }

    async fn remove_node(&self, request: Request<RemoveNodeRequest>) -> Result<Response<RemoveNodeResponse>, Status> {
        Err(Status::not_found(format!("node {} is not a member", request.into_inner().node_id)))
    }

    type BackupStream = Pin<Box<dyn Stream<Item = Result<flotilla_proto::v1::BackupChunk, Status>> + Send>>;

    async fn backup(
        &self,
        _request: Request<flotilla_proto::v1::BackupRequest>,
    ) -> Result<Response<Self::BackupStream>, Status> {
        Err(Status::failed_precondition("this node has applied nothing yet"))
    }
}

/// Welcomes a registered agent, then echoes each heartbeat's sequence as the term of a welcome.
#[derive(Debug)]
struct EchoLink;

type SessionStream = Pin<Box<dyn Stream<Item = Result<CoordinatorMessage, Status>> + Send>>;

#[tonic::async_trait]
impl AgentLink for EchoLink {
    type SessionStream = SessionStream;

    async fn session(
        &self,
        request: Request<Streaming<AgentMessage>>,
    ) -> Result<Response<Self::SessionStream>, Status> {
        let mut inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(8);
        tokio::spawn(async move {
            while let Some(message) = inbound.next().await {
                let reply = match message.map(|m| m.msg) {
                    Ok(Some(agent_message::Msg::Register(register))) => {
                        if register.version.as_ref().map(|v| v.protocol_version) != Some(PROTOCOL_VERSION) {
                            Err(Status::failed_precondition("protocol mismatch"))
                        } else {
                            Ok(welcome(0))
                        }
                    }
                    Ok(Some(agent_message::Msg::Heartbeat(heartbeat))) => Ok(welcome(heartbeat.seq)),
                    Ok(_) => Err(Status::invalid_argument("unexpected message")),
                    Err(status) => Err(status),
                };
                if tx.send(reply).await.is_err() {
                    break;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

fn welcome(term: u64) -> CoordinatorMessage {
    CoordinatorMessage {
        msg: Some(coordinator_message::Msg::Welcome(Welcome {
            node_id: 1,
            term,
            lease_ms: 10_000,
            heartbeat_interval_ms: 1_000,
            version: Some(version_info("0.1.0", [])),
        })),
    }
}

/// Serves `router` on a fresh 127.0.0.1 port; returns the address and a shutdown trigger.
async fn serve(router: tonic::transport::server::Router) -> (SocketAddr, oneshot::Sender<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind loopback");
    let addr = listener.local_addr().expect("local addr");
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    tokio::spawn(async move {
        router
            .serve_with_incoming_shutdown(TcpIncoming::from(listener), async {
                let _ = stop_rx.await;
            })
            .await
            .expect("server runs");
    });
    (addr, stop_tx)
}

async fn channel(addr: SocketAddr) -> Channel {
    Channel::from_shared(format!("http://{addr}"))
        .expect("valid uri")
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(10))
        .connect()
        .await
        .expect("connect over loopback")
}

#[tokio::test]
async fn cluster_client_and_server_talk_over_loopback() {
    let (addr, stop) = serve(Server::builder().add_service(ClusterServer::new(OneNode))).await;
    let mut client = ClusterClient::new(channel(addr).await);

    let status = client
        .status(StatusRequest { local: false })
        .await
        .expect("status answers")
        .into_inner()
        .status
        .expect("status set");
    assert_eq!((status.node_id, status.leader_id, status.term), (1, 1, 7));
    assert_eq!(status.leader_addr, "127.0.0.1:7600");
    let member = &status.members[0];
    assert_eq!(member.role(), MemberRole::Voter);
    assert_eq!(member.state(), RaftState::Leader);
    assert_eq!((member.last_log_index, member.applied_index, member.matched_index), (Some(42), Some(41), None));
    assert_eq!(member.version.as_ref().map(|v| v.protocol_version), Some(PROTOCOL_VERSION));

    // A write on a non-leader carries the leader hint in the status details, end to end.
    let err = client
        .add_node(AddNodeRequest { node_id: 4, addr: "127.0.0.1:7604".to_owned(), learner_only: false })
        .await
        .expect_err("not the leader");
    assert_eq!(err.code(), Code::Unavailable);
    assert_eq!(status::leader_hint(&err), Some(NotLeader { leader_id: 3, leader_addr: "127.0.0.1:7603".to_owned() }));

    let err = client.remove_node(RemoveNodeRequest { node_id: 9 }).await.expect_err("unknown node");
    assert_eq!(err.code(), Code::NotFound);
    assert_eq!(err.message(), "node 9 is not a member");

    let _ = stop.send(());
}

#[tokio::test]
async fn agent_link_session_streams_both_ways_over_loopback() {
    let (addr, stop) = serve(Server::builder().add_service(AgentLinkServer::new(EchoLink))).await;
    let mut client = AgentLinkClient::new(channel(addr).await);

    let (tx, rx) = mpsc::channel(8);
    tx.send(AgentMessage {
        msg: Some(agent_message::Msg::Register(Register {
            host_id: "web-1".to_owned(),
            labels: [("role".to_owned(), "web".to_owned())].into(),
            version: Some(version_info("0.1.0", ["driver.process".to_owned()])),
            instance_id: "i-1".to_owned(),
            inventory: Vec::new(),
            highest_term: 0,
            running_command_ids: Vec::new(),
        })),
    })
    .await
    .expect("queue register");
    let mut inbound = client.session(ReceiverStream::new(rx)).await.expect("session opens").into_inner();

    let first = inbound.message().await.expect("stream ok").expect("a message");
    assert!(matches!(first.msg, Some(coordinator_message::Msg::Welcome(Welcome { term: 0, .. }))));

    for seq in 1..=3 {
        tx.send(AgentMessage {
            msg: Some(agent_message::Msg::Heartbeat(Heartbeat {
                seq,
                sent_unix_ms: 0,
                running_command_ids: Vec::new(),
                inventory: None,
            })),
        })
        .await
        .expect("queue heartbeat");
        let reply = inbound.message().await.expect("stream ok").expect("a message");
        match reply.msg {
            Some(coordinator_message::Msg::Welcome(w)) => assert_eq!(w.term, seq),
            other => panic!("unexpected {other:?}"),
        }
    }

    // Ending the agent side ends the coordinator side.
    drop(tx);
    assert!(inbound.message().await.expect("clean end").is_none());
    let _ = stop.send(());
}
