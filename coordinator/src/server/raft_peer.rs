//! The `RaftPeer` service: hands openraft's requests from other coordinators to the
//! local Raft and sends its answers back.

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
}

impl std::fmt::Debug for RaftPeerService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RaftPeerService").finish_non_exhaustive()
    }
}

impl RaftPeerService {
    /// The service in front of `raft`, for requests of the cluster `identity` names.
    pub fn new(raft: Raft, identity: ClusterIdentity) -> Self {
        Self { raft, identity }
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
        Some(env) if !flotilla_proto::protocol_supported(env.protocol_version) => {
            Err(Status::failed_precondition(format!(
                "node {} speaks protocol {}, this node accepts {}..={}",
                env.from_node_id,
                env.protocol_version,
                flotilla_proto::MIN_PROTOCOL_VERSION,
                flotilla_proto::PROTOCOL_VERSION
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
        self.admit(req.envelope.as_ref(), true)?;
        let rpc = decode(&req.payload).map_err(|e| bad_payload(&e))?;
        reply(self.raft.append_entries(rpc).await)
    }

    async fn vote(&self, request: Request<v1::VoteRequest>) -> Result<Response<v1::RaftReply>, Status> {
        let req = request.into_inner();
        self.admit(req.envelope.as_ref(), false)?;
        let rpc = decode(&req.payload).map_err(|e| bad_payload(&e))?;
        reply(self.raft.vote(rpc).await)
    }

    async fn install_snapshot(
        &self,
        request: Request<v1::InstallSnapshotRequest>,
    ) -> Result<Response<v1::RaftReply>, Status> {
        let req = request.into_inner();
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
}
