//! The `RaftPeer` service: hands openraft's requests from other coordinators to the
//! local Raft and sends its answers back, and commits the audit records followers
//! send their leader.

use flotilla_proto::v1::raft_peer_server::RaftPeer;
use flotilla_proto::v1::{self, raft_reply};
use openraft::raft::InstallSnapshotRequest;
use serde::Serialize;
use tonic::{Request, Response, Status};

use crate::raft::identity::ClusterIdentity;
use crate::raft::network::{decode, encode};
use crate::raft::{NodeId, Raft};

/// Serves `RaftPeer` for one node.
#[derive(Clone)]
pub struct RaftPeerService {
    raft: Raft,
    identity: ClusterIdentity,
    /// The node: audit records are proposed on it (with this retention), its Raft gate
    /// says whether Raft requests are answered, and it answers probes.
    node: Option<(crate::node::Node, crate::state::Retention)>,
}

impl std::fmt::Debug for RaftPeerService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RaftPeerService").finish_non_exhaustive()
    }
}

impl RaftPeerService {
    /// The service in front of `raft`, for requests of the cluster `identity` names.
    pub fn new(raft: Raft, identity: ClusterIdentity) -> Self {
        Self { raft, identity, node: None }
    }

    /// Serves for `node`: takes followers' audit records and proposes them with
    /// `retention`, answers Raft requests only while the node's Raft gate is open, and
    /// answers probes.
    pub fn with_node(mut self, node: crate::node::Node, retention: crate::state::Retention) -> Self {
        self.node = Some((node, retention));
        self
    }

    /// Refuses a Raft request while the node's gate is closed.
    fn gate(&self) -> Result<(), Status> {
        match &self.node {
            Some((node, _)) if !node.raft_gate().is_open() => Err(Status::unavailable(format!(
                "node {} takes no part in Raft: it has no Raft state and has not found out yet whether it may \
                 (its log says why)",
                node.id()
            ))),
            _ => Ok(()),
        }
    }

    /// Checks a request's protocol and cluster; `replicates` for requests that carry
    /// the log to this node (a new node joins the cluster of the first of them).
    fn admit(&self, envelope: Option<&v1::RaftEnvelope>, replicates: bool) -> Result<(), Status> {
        check_protocol(envelope)?;
        self.identity.check(envelope, replicates).map_err(|refusal| Status::failed_precondition(refusal.to_string()))
    }
}

fn bad_payload(e: &serde_json::Error) -> Status {
    Status::invalid_argument(format!("undecodable raft payload: {e}"))
}

fn check_protocol(envelope: Option<&v1::RaftEnvelope>) -> Result<(), Status> {
    match envelope {
        Some(env) if !flotilla_proto::peer_protocol_supported(env.protocol_version) => {
            let theirs = if env.software_version.is_empty() {
                "a build from before 0.1.0".to_owned()
            } else {
                format!("flotilla {}", env.software_version)
            };
            let order = if env.protocol_version < flotilla_proto::MIN_PEER_PROTOCOL_VERSION {
                "stop every coordinator of the older build and start them all on the newer one (its Raft messages cannot be read by this build)"
            } else {
                "upgrade this node to the newer build"
            };
            Err(Status::failed_precondition(format!(
                "node {} ({theirs}) speaks coordinator protocol {}; this node (flotilla {}) accepts {}..={}: {order}",
                env.from_node_id,
                env.protocol_version,
                env!("CARGO_PKG_VERSION"),
                flotilla_proto::MIN_PEER_PROTOCOL_VERSION,
                flotilla_proto::PEER_PROTOCOL_VERSION
            )))
        }
        _ => Ok(()),
    }
}

fn reply<T: Serialize, E: Serialize>(result: Result<T, E>) -> Result<Response<v1::RaftReply>, Status> {
    let result = match result {
        Ok(v) => raft_reply::Result::Payload(encode(&v)),
        Err(e) => raft_reply::Result::Error(encode(&e)),
    };
    Ok(Response::new(v1::RaftReply { result: Some(result) }))
}

#[tonic::async_trait]
impl RaftPeer for RaftPeerService {
    async fn append_entries(
        &self,
        request: Request<v1::AppendEntriesRequest>,
    ) -> Result<Response<v1::RaftReply>, Status> {
        let req = request.into_inner();
        self.gate()?;
        self.admit(req.envelope.as_ref(), true)?;
        let rpc = decode(&req.payload).map_err(|e| bad_payload(&e))?;
        reply(self.raft.append_entries(rpc).await)
    }

    async fn vote(&self, request: Request<v1::VoteRequest>) -> Result<Response<v1::RaftReply>, Status> {
        let req = request.into_inner();
        self.gate()?;
        self.admit(req.envelope.as_ref(), false)?;
        let rpc = decode(&req.payload).map_err(|e| bad_payload(&e))?;
        reply(self.raft.vote(rpc).await)
    }

    async fn install_snapshot(
        &self,
        request: Request<v1::InstallSnapshotRequest>,
    ) -> Result<Response<v1::RaftReply>, Status> {
        let req = request.into_inner();
        self.gate()?;
        self.admit(req.envelope.as_ref(), true)?;
        let meta = req.meta.ok_or_else(|| Status::invalid_argument("install_snapshot without meta"))?;
        let rpc: InstallSnapshotRequest<crate::raft::TypeConfig> = InstallSnapshotRequest {
            vote: decode::<openraft::Vote<NodeId>>(&req.vote).map_err(|e| bad_payload(&e))?,
            meta: decode(&meta.payload).map_err(|e| bad_payload(&e))?,
            offset: req.offset,
            data: req.data,
            done: req.done,
        };
        reply(self.raft.install_snapshot(rpc).await)
    }

    /// Starts an election at once for a stopping leader that hands its leadership to
    /// this node, if this node follows it in its term and holds its whole log.
    async fn timeout_now(
        &self,
        request: Request<v1::TimeoutNowRequest>,
    ) -> Result<Response<v1::TimeoutNowReply>, Status> {
        let req = request.into_inner();
        self.gate()?;
        self.admit(req.envelope.as_ref(), false)?;
        let env = req.envelope.unwrap_or_default();
        let refusal = hand_over_refusal(&self.raft.metrics().borrow(), &env, req.last_log_index);
        let refused = match refusal {
            Some(reason) => reason,
            None => {
                self.raft.trigger().elect().await.map_err(|e| Status::internal(format!("raft stopped: {e}")))?;
                tracing::info!(
                    from = env.from_node_id,
                    term = env.term,
                    "the leader is stopping and handed its leadership here: starting an election"
                );
                return Ok(Response::new(v1::TimeoutNowReply { started: true, reason: String::new() }));
            }
        };
        tracing::info!(from = env.from_node_id, reason = %refused, "not taking the leadership over");
        Ok(Response::new(v1::TimeoutNowReply { started: false, reason: refused }))
    }

    /// Commits a follower's audit records, when this node leads (UNAVAILABLE with the
    /// leader's address otherwise).
    async fn record_audit(
        &self,
        request: Request<v1::RecordAuditRequest>,
    ) -> Result<Response<v1::RecordAuditReply>, Status> {
        let req = request.into_inner();
        self.admit(req.envelope.as_ref(), false)?;
        let Some((node, retention)) = &self.node else {
            return Err(Status::unimplemented("this node does not take audit records"));
        };
        let records: Vec<crate::state::AuditRecord> = crate::raft::codec::decode(&req.payload)
            .map_err(|e| Status::invalid_argument(format!("undecodable audit records: {e}")))?;
        node.check_leader()?;
        crate::audit::propose(node, records, *retention).await?;
        Ok(Response::new(v1::RecordAuditReply {}))
    }

    /// Says what this node knows of its cluster (see `formation`).
    async fn probe(&self, request: Request<v1::ProbeRequest>) -> Result<Response<v1::ProbeReply>, Status> {
        let req = request.into_inner();
        self.admit(req.envelope.as_ref(), false)?;
        let Some((node, _)) = &self.node else {
            return Err(Status::unimplemented("this node answers no probes"));
        };
        let initialized = node.is_initialized().await?;
        Ok(Response::new(crate::formation::answer(node, initialized)))
    }
}

/// Why this node (whose Raft metrics are `m`) must not start an election for the
/// hand-over `env` asks for, or `None` when it may.
fn hand_over_refusal(
    m: &openraft::RaftMetrics<NodeId, openraft::BasicNode>,
    env: &v1::RaftEnvelope,
    leader_last_index: u64,
) -> Option<String> {
    if m.current_leader != Some(env.from_node_id) || m.current_leader == Some(m.id) {
        return Some(format!(
            "this node does not follow node {} (its leader is {:?})",
            env.from_node_id, m.current_leader
        ));
    }
    if m.current_term != env.term {
        return Some(format!("this node is in term {}, the request in term {}", m.current_term, env.term));
    }
    if !m.membership_config.membership().voter_ids().any(|v| v == m.id) {
        return Some("this node is not a voter".to_owned());
    }
    let last = m.last_log_index.unwrap_or(0);
    if last < leader_last_index {
        return Some(format!("this node's log ends at {last}, the leader's at {leader_last_index}"));
    }
    None
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::sync::Arc;

    use openraft::{BasicNode, Membership, RaftMetrics, StoredMembership};

    use super::*;

    /// Node 2 following node 1 in term 3 with its log at index 10, in {1, 2, 3}.
    fn follower() -> RaftMetrics<NodeId, BasicNode> {
        let mut m = RaftMetrics::new_initial(2);
        m.current_leader = Some(1);
        m.current_term = 3;
        m.last_log_index = Some(10);
        let voters: BTreeSet<NodeId> = [1, 2, 3].into_iter().collect();
        m.membership_config = Arc::new(StoredMembership::new(None, Membership::new(vec![voters], None)));
        m
    }

    fn from_leader(term: u64) -> v1::RaftEnvelope {
        v1::RaftEnvelope { from_node_id: 1, to_node_id: 2, term, ..Default::default() }
    }

    #[test]
    fn a_caught_up_voter_takes_the_leadership_its_leader_hands_over() {
        assert_eq!(hand_over_refusal(&follower(), &from_leader(3), 10), None);
        assert_eq!(hand_over_refusal(&follower(), &from_leader(3), 7), None);
    }

    #[test]
    fn a_hand_over_is_refused_by_a_node_that_is_behind_follows_another_or_is_in_another_term() {
        let behind = hand_over_refusal(&follower(), &from_leader(3), 11).expect("refused");
        assert!(behind.contains("log ends at 10, the leader's at 11"), "{behind}");
        let stale = hand_over_refusal(&follower(), &from_leader(2), 10).expect("refused");
        assert!(stale.contains("term 3, the request in term 2"), "{stale}");
        let other = v1::RaftEnvelope { from_node_id: 3, ..from_leader(3) };
        assert!(hand_over_refusal(&follower(), &other, 10).expect("refused").contains("does not follow node 3"));
        let mut learner = follower();
        let voters: BTreeSet<NodeId> = [1, 3].into_iter().collect();
        let learners: BTreeSet<NodeId> = [2].into_iter().collect();
        learner.membership_config =
            Arc::new(StoredMembership::new(None, Membership::new(vec![voters], Some(learners))));
        assert!(hand_over_refusal(&learner, &from_leader(3), 10).expect("refused").contains("not a voter"));
    }

    #[test]
    fn a_peer_of_another_coordinator_protocol_is_refused_naming_both_builds_and_the_upgrade_order() {
        let old = v1::RaftEnvelope { from_node_id: 3, protocol_version: 1, ..Default::default() };
        let status = check_protocol(Some(&old)).expect_err("protocol 1 is refused");
        assert_eq!(status.code(), tonic::Code::FailedPrecondition);
        let text = status.message();
        assert!(text.contains("node 3 (a build from before"), "{text}");
        assert!(text.contains("speaks coordinator protocol 1"), "{text}");
        assert!(text.contains(&format!("flotilla {}", env!("CARGO_PKG_VERSION"))), "{text}");
        assert!(text.contains("stop every coordinator of the older build"), "{text}");
        let newer = v1::RaftEnvelope {
            from_node_id: 3,
            protocol_version: flotilla_proto::PEER_PROTOCOL_VERSION + 1,
            software_version: "9.9.9".to_owned(),
            ..Default::default()
        };
        let text = check_protocol(Some(&newer)).expect_err("a newer protocol is refused").message().to_owned();
        assert!(text.contains("node 3 (flotilla 9.9.9)") && text.contains("upgrade this node"), "{text}");
        let same = v1::RaftEnvelope { protocol_version: flotilla_proto::PEER_PROTOCOL_VERSION, ..Default::default() };
        assert!(check_protocol(Some(&same)).is_ok());
    }
}
