//! The `Cluster` service: membership and Raft status, adding and removing nodes.

use std::time::Duration;

use flotilla_proto::v1::cluster_client::ClusterClient;
use flotilla_proto::v1::cluster_server::Cluster;
use flotilla_proto::v1::{self, MemberRole, RaftState};
use openraft::ServerState;
use tonic::{Request, Response, Status};

use super::on_leader;
use crate::audit::AuditNote;
use crate::error::CoordinatorError;
use crate::node::Node;

/// Serves `Cluster` for one node.
#[derive(Debug, Clone)]
pub struct ClusterService {
    node: Node,
}

impl ClusterService {
    /// The service of `node`.
    pub fn new(node: Node) -> Self {
        Self { node }
    }
}

/// This node's view of the cluster: membership, leader and term from its Raft metrics;
/// its own log and applied index; on the leader, each follower's matched index.
pub fn status(node: &Node) -> v1::ClusterStatus {
    let m = node.raft().metrics().borrow().clone();
    let membership = m.membership_config.membership();
    let voters: Vec<u64> = membership.voter_ids().collect();
    let leader_addr =
        m.current_leader.and_then(|l| membership.get_node(&l)).map(|n| n.addr.clone()).unwrap_or_default();
    let version = Some(flotilla_proto::version_info(env!("CARGO_PKG_VERSION"), []));
    let seen = node.read_local(|s| s.members_seen().clone());
    let members = membership
        .nodes()
        .map(|(&id, n)| {
            let is_self = id == node.id();
            let matched = m.replication.as_ref().and_then(|r| r.get(&id).copied().flatten()).map(|l| l.index);
            let state = if is_self {
                match m.state {
                    ServerState::Leader => RaftState::Leader,
                    ServerState::Follower => RaftState::Follower,
                    ServerState::Candidate => RaftState::Candidate,
                    ServerState::Learner => RaftState::Learner,
                    ServerState::Shutdown => RaftState::Shutdown,
                }
            } else if Some(id) == m.current_leader {
                RaftState::Leader
            } else {
                RaftState::Unspecified
            };
            v1::ClusterMember {
                node_id: id,
                addr: n.addr.clone(),
                role: if voters.contains(&id) { MemberRole::Voter } else { MemberRole::Learner } as i32,
                state: state as i32,
                last_log_index: if is_self { m.last_log_index } else { None },
                applied_index: if is_self { m.last_applied.map(|l| l.index) } else { None },
                matched_index: if is_self { m.last_log_index } else { matched },
                version: if is_self { version.clone() } else { None },
                reachable: is_self || matched.is_some() || Some(id) == m.current_leader,
                holds_log: seen.contains(&id),
            }
        })
        .collect();
    v1::ClusterStatus {
        node_id: node.id(),
        leader_id: m.current_leader.unwrap_or_default(),
        leader_addr,
        term: m.current_term,
        committed_index: m.last_applied.map_or(0, |l| l.index),
        members,
        version,
        membership_changing: m.membership_config.membership().get_joint_config().len() > 1,
    }
}

/// How long the leader waits for a member's answer when it builds its view.
const MEMBER_ASK_TIMEOUT: Duration = Duration::from_millis(500);

/// The leader's view: its own status, with every other member's state, indexes and
/// version as that member reports them (asked in parallel; a member that does not
/// answer within [`MEMBER_ASK_TIMEOUT`] is unreachable and its state unknown).
pub async fn leader_view(node: &Node) -> v1::ClusterStatus {
    let mut view = status(node);
    let asks = view.members.iter().filter(|m| m.node_id != node.id()).map(|m| {
        let (id, addr) = (m.node_id, m.addr.clone());
        async move {
            let ch = node.forward_channel(&addr).ok()?;
            let mut req = Request::new(v1::StatusRequest { local: true });
            req.set_timeout(MEMBER_ASK_TIMEOUT);
            let answer = tokio::time::timeout(MEMBER_ASK_TIMEOUT, ClusterClient::new(ch).status(req)).await;
            let own = answer.ok()?.ok()?.into_inner().status?;
            own.members.into_iter().find(|m| m.node_id == id)
        }
    });
    let answers: Vec<v1::ClusterMember> = futures::future::join_all(asks).await.into_iter().flatten().collect();
    for member in view.members.iter_mut().filter(|m| m.node_id != node.id()) {
        match answers.iter().find(|a| a.node_id == member.node_id) {
            Some(own) => {
                member.state = own.state;
                member.last_log_index = own.last_log_index;
                member.applied_index = own.applied_index;
                member.version.clone_from(&own.version);
                member.reachable = true;
            }
            None => {
                member.state = RaftState::Unspecified as i32;
                member.reachable = false;
            }
        }
    }
    view
}

#[tonic::async_trait]
impl Cluster for ClusterService {
    type BackupStream =
        std::pin::Pin<Box<dyn futures::Stream<Item = Result<v1::BackupChunk, Status>> + Send + 'static>>;

    /// A backup of this node's applied state, in chunks.
    async fn backup(&self, request: Request<v1::BackupRequest>) -> Result<Response<Self::BackupStream>, Status> {
        let node = self.node.clone();
        AuditNote::of(&request).target(format!("the state of node {}", node.id()));
        let (bytes, info) = tokio::task::spawn_blocking(move || crate::backup::make(&node))
            .await
            .map_err(|e| Status::internal(format!("backup task: {e}")))??;
        tracing::info!(
            last_log_index = info.last_log_index,
            bytes = info.size_bytes,
            releases = info.releases,
            "backup taken"
        );
        let mut info = Some(info);
        let chunks: Vec<Result<v1::BackupChunk, Status>> = bytes
            .chunks(crate::backup::CHUNK)
            .map(|data| Ok(v1::BackupChunk { info: info.take(), data: data.to_vec() }))
            .collect();
        Ok(Response::new(Box::pin(futures::stream::iter(chunks))))
    }

    /// The leader's view (forwarded to the leader when this node follows), or this
    /// node's own view when asked `local` or when no leader is known here.
    async fn status(&self, request: Request<v1::StatusRequest>) -> Result<Response<v1::StatusResponse>, Status> {
        let leaderless =
            matches!(self.node.check_leader(), Err(CoordinatorError::NoLeader | CoordinatorError::ShuttingDown { .. }));
        if request.get_ref().local || leaderless {
            return Ok(Response::new(v1::StatusResponse { status: Some(status(&self.node)) }));
        }
        let node = self.node.clone();
        on_leader(
            &self.node,
            request,
            |_| async move { Ok(v1::StatusResponse { status: Some(leader_view(&node).await) }) },
            |ch, req| async move { ClusterClient::new(ch).status(req).await },
        )
        .await
    }

    async fn add_node(&self, request: Request<v1::AddNodeRequest>) -> Result<Response<v1::AddNodeResponse>, Status> {
        let node = self.node.clone();
        let asked = request.get_ref();
        AuditNote::of(&request).target(format!("node {} at {}", asked.node_id, asked.addr));
        on_leader(
            &self.node,
            request,
            |req| async move {
                if req.node_id == 0 {
                    return Err(CoordinatorError::InvalidField {
                        field: "node_id",
                        message: "node id 0 is reserved; use a positive id".into(),
                    });
                }
                flotilla_shared::transport::check_host_port(&req.addr).map_err(|why| {
                    CoordinatorError::InvalidField { field: "addr", message: format!("address `{}`: {why}", req.addr) }
                })?;
                node.add_node(req.node_id, req.addr, req.learner_only).await?;
                Ok(v1::AddNodeResponse { status: Some(leader_view(&node).await) })
            },
            |ch, req| async move { ClusterClient::new(ch).add_node(req).await },
        )
        .await
    }

    async fn remove_node(
        &self,
        request: Request<v1::RemoveNodeRequest>,
    ) -> Result<Response<v1::RemoveNodeResponse>, Status> {
        let node = self.node.clone();
        AuditNote::of(&request).target(format!("node {}", request.get_ref().node_id));
        on_leader(
            &self.node,
            request,
            |req| async move {
                node.remove_node(req.node_id).await?;
                Ok(v1::RemoveNodeResponse { status: Some(leader_view(&node).await) })
            },
            |ch, req| async move { ClusterClient::new(ch).remove_node(req).await },
        )
        .await
    }
}
