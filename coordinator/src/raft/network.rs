//! The Raft transport between coordinators: openraft's requests carried over the
//! `RaftPeer` gRPC service, encoded with the binary codec (`codec.rs`) in the messages'
//! payload fields.
//!
//! Each peer gets its own channel, separate from client traffic, with message limits
//! raised for append batches and snapshot chunks. A peer that cannot be reached is
//! retried after a short, growing pause ([`PEER_BACKOFF`]), so a restarted node is
//! caught up within a fraction of a second rather than openraft's default 500 ms.

use std::time::Duration;

use flotilla_net::ClientSecurity;
use flotilla_proto::v1::raft_peer_client::RaftPeerClient;
use flotilla_proto::v1::{self, raft_reply};
use openraft::BasicNode;
use openraft::error::{InstallSnapshotError, NetworkError, PayloadTooLarge, RPCError, RaftError, Unreachable};
use openraft::network::{Backoff, RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest,
    VoteResponse,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tonic::transport::Channel;

use super::identity::ClusterIdentity;
use super::{NodeId, TypeConfig, codec};

/// Largest gRPC message between coordinators (append batches, snapshot chunks).
pub const MAX_PEER_MESSAGE: usize = 64 * 1024 * 1024;

/// Pauses before retrying a peer that could not be reached: growing from the first to
/// the last, then the last again. Short enough that a restarted node catches up (and
/// takes part in the next election with a current log) almost as soon as it listens.
pub const PEER_BACKOFF: [Duration; 3] =
    [Duration::from_millis(50), Duration::from_millis(100), Duration::from_millis(200)];

/// Encodes an openraft value for the wire.
pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    codec::encode(value).expect("openraft messages encode")
}

/// Decodes an openraft value from the wire. (The error is reported as a
/// `serde_json::Error`, the type the `RaftPeer` service maps to a status.)
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, serde_json::Error> {
    codec::decode(bytes).map_err(<serde_json::Error as serde::de::Error>::custom)
}

/// Creates a [`PeerClient`] per target node.
#[derive(Debug, Clone)]
pub struct Network {
    node_id: NodeId,
    security: ClientSecurity,
    identity: ClusterIdentity,
    connect_timeout: Duration,
}

/// How often an idle peer connection is pinged, and how long a ping may go unanswered
/// before the connection counts as dead: a peer that vanished without closing its
/// connections (a host that lost power, a container whose network went away) is
/// noticed and redialled instead of every heartbeat timing out on a dead connection.
const PEER_KEEP_ALIVE: Duration = Duration::from_secs(1);

/// A lazily connected channel to peer `addr`. Dials give up after `connect_timeout`, so
/// a dial to an address that does not answer (a restarting node's address swallows
/// SYNs until it is back) is retried soon, and the peer hears heartbeats again within
/// its election timeout once it is up, rather than after the kernel's SYN retries.
pub fn peer_channel(
    addr: &str,
    security: &ClientSecurity,
    connect_timeout: Duration,
) -> Result<Channel, flotilla_net::NetError> {
    Ok(flotilla_net::endpoint(addr, security)?
        .configure(|ep| {
            ep.connect_timeout(connect_timeout)
                .http2_keep_alive_interval(PEER_KEEP_ALIVE)
                .keep_alive_timeout(PEER_KEEP_ALIVE)
        })
        .connect_lazy())
}

impl Network {
    /// The network of node `node_id`, dialing peers with `security`; its requests
    /// carry the cluster id of `identity`.
    /// Dials give up after `connect_timeout` (the election timeout's lower bound).
    pub fn new(
        node_id: NodeId,
        security: ClientSecurity,
        identity: ClusterIdentity,
        connect_timeout: Duration,
    ) -> Self {
        Self { node_id, security, identity, connect_timeout }
    }
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = PeerClient;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> PeerClient {
        let mut peer = PeerClient {
            from: self.node_id,
            target,
            addr: node.addr.clone(),
            client: Err(flotilla_net::NetError::BadAddress { addr: node.addr.clone(), why: "not dialled".into() }),
            identity: self.identity.clone(),
            security: self.security.clone(),
            connect_timeout: self.connect_timeout,
            unanswered: false,
        };
        peer.redial();
        peer
    }
}

/// The connection from this node to one peer.
#[derive(Debug)]
pub struct PeerClient {
    from: NodeId,
    target: NodeId,
    addr: String,
    client: Result<RaftPeerClient<Channel>, flotilla_net::NetError>,
    identity: ClusterIdentity,
    security: ClientSecurity,
    connect_timeout: Duration,
    /// The last call got no answer: it failed to reach the peer, or openraft gave up
    /// on it (its timeout drops the call, so the call never sees its own failure).
    unanswered: bool,
}

type RpcResult<T, E = openraft::error::Infallible> = Result<T, RPCError<NodeId, BasicNode, RaftError<NodeId, E>>>;

/// The envelope of a request from `from` to `target` in `term`.
pub(crate) fn envelope(
    from: NodeId,
    target: NodeId,
    term: u64,
    identity: &ClusterIdentity,
) -> Option<v1::RaftEnvelope> {
    Some(v1::RaftEnvelope {
        from_node_id: from,
        to_node_id: target,
        term,
        protocol_version: flotilla_proto::PEER_PROTOCOL_VERSION,
        cluster_id: identity.wire_id(),
        software_version: env!("CARGO_PKG_VERSION").to_owned(),
    })
}

/// Asks voter `target` at `addr` to start an election now: the hand-over of a leader
/// of `term` that is stopping, whose log ends at `last_log_index` (see
/// `Node::hand_over_leadership`). `Ok` once the target started one.
#[allow(clippy::too_many_arguments)]
pub async fn timeout_now(
    from: NodeId,
    target: NodeId,
    addr: &str,
    security: &ClientSecurity,
    identity: &ClusterIdentity,
    term: u64,
    last_log_index: u64,
    deadline: tokio::time::Instant,
) -> Result<(), String> {
    let ch = peer_channel(addr, security, deadline.saturating_duration_since(tokio::time::Instant::now()))
        .map_err(|e| e.to_string())?;
    let mut request =
        tonic::Request::new(v1::TimeoutNowRequest { envelope: envelope(from, target, term, identity), last_log_index });
    request.set_timeout(deadline.saturating_duration_since(tokio::time::Instant::now()));
    let reply =
        RaftPeerClient::new(ch).timeout_now(request).await.map_err(|s| format!("{}: {}", s.code(), s.message()))?;
    let reply = reply.into_inner();
    if reply.started { Ok(()) } else { Err(reply.reason) }
}

impl PeerClient {
    fn envelope(&self, term: u64) -> Option<v1::RaftEnvelope> {
        envelope(self.from, self.target, term, &self.identity)
    }

    /// A new channel to the peer, dropping the old one and its connection.
    fn redial(&mut self) {
        self.client = peer_channel(&self.addr, &self.security, self.connect_timeout).map(|ch| {
            RaftPeerClient::new(ch)
                .max_decoding_message_size(MAX_PEER_MESSAGE)
                .max_encoding_message_size(MAX_PEER_MESSAGE)
        });
    }

    /// The client for the next call. After a call that got no answer the connection is
    /// not trusted: a peer that went away without closing it (a restarted container, a
    /// host that lost power) leaves a connection that swallows every request until
    /// keep-alive notices, which takes longer than an election timeout, so the peer
    /// would hear no heartbeat and stand for election. A fresh connection instead
    /// reaches the peer as soon as it listens again.
    fn client(&mut self) -> Result<RaftPeerClient<Channel>, Unreachable> {
        if std::mem::replace(&mut self.unanswered, true) {
            self.redial();
        }
        match &self.client {
            Ok(client) => Ok(client.clone()),
            Err(e) => Err(Unreachable::new(e)),
        }
    }

    /// Turns a gRPC reply into openraft's result.
    // The error type is openraft's, required by the `RaftNetwork` trait.
    #[allow(clippy::result_large_err)]
    fn reply<T, E>(&mut self, reply: Result<tonic::Response<v1::RaftReply>, tonic::Status>) -> RpcResult<T, E>
    where
        T: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        // Any answer from the peer, even a refusal, shows the connection works.
        self.unanswered = reply.as_ref().is_err_and(|status| {
            matches!(status.code(), tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::Cancelled)
        });
        let reply = reply.map_err(|status| match status.code() {
            tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::Cancelled => {
                RPCError::Unreachable(Unreachable::new(&PeerStatus(self.addr.clone(), status)))
            }
            _ => RPCError::Network(NetworkError::new(&PeerStatus(self.addr.clone(), status))),
        })?;
        match reply.into_inner().result {
            Some(raft_reply::Result::Payload(bytes)) => {
                decode(&bytes).map_err(|e| RPCError::Network(NetworkError::new(&e)))
            }
            Some(raft_reply::Result::Error(bytes)) => {
                let err: RaftError<NodeId, E> = decode(&bytes).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
                Err(RPCError::RemoteError(openraft::error::RemoteError::new(self.target, err)))
            }
            None => Err(RPCError::Network(NetworkError::new(&PeerStatus(
                self.addr.clone(),
                tonic::Status::internal("empty reply"),
            )))),
        }
    }
}

/// How many entries to send instead, when `entries` encoded to `bytes` would make an
/// AppendEntries larger than half the peer message limit (openraft then sends that many
/// for a while). A single entry goes as it is: it cannot be split.
fn fewer_entries(entries: usize, bytes: usize) -> Option<u64> {
    (entries > 1 && bytes > MAX_PEER_MESSAGE / 2).then(|| (entries / 2).max(1) as u64)
}

/// A gRPC failure talking to a peer, as an error openraft can carry.
#[derive(Debug)]
struct PeerStatus(String, tonic::Status);

impl std::fmt::Display for PeerStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "peer {}: {}: {}", self.0, self.1.code(), self.1.message())
    }
}

impl std::error::Error for PeerStatus {}

impl RaftNetwork<TypeConfig> for PeerClient {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<AppendEntriesResponse<NodeId>> {
        let payload = encode(&rpc);
        if let Some(fewer) = fewer_entries(rpc.entries.len(), payload.len()) {
            return Err(RPCError::PayloadTooLarge(PayloadTooLarge::new_entries_hint(fewer)));
        }
        let mut client = self.client().map_err(RPCError::Unreachable)?;
        let req = v1::AppendEntriesRequest {
            envelope: self.envelope(rpc.vote.leader_id().term),
            entry_count: rpc.entries.len() as u32,
            payload,
        };
        let mut request = tonic::Request::new(req);
        request.set_timeout(option.hard_ttl());
        let reply = client.append_entries(request).await;
        self.reply(reply)
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<InstallSnapshotResponse<NodeId>, InstallSnapshotError> {
        let mut client = self.client().map_err(RPCError::Unreachable)?;
        let req = v1::InstallSnapshotRequest {
            envelope: self.envelope(rpc.vote.leader_id().term),
            vote: encode(&rpc.vote),
            meta: Some(v1::SnapshotMeta {
                snapshot_id: rpc.meta.snapshot_id.clone(),
                last_log_index: rpc.meta.last_log_id.map_or(0, |l| l.index),
                last_log_term: rpc.meta.last_log_id.map_or(0, |l| l.leader_id.term),
                payload: encode(&rpc.meta),
            }),
            offset: rpc.offset,
            data: rpc.data,
            done: rpc.done,
        };
        let mut request = tonic::Request::new(req);
        request.set_timeout(option.hard_ttl());
        let reply = client.install_snapshot(request).await;
        self.reply(reply)
    }

    fn backoff(&self) -> Backoff {
        let last = PEER_BACKOFF[PEER_BACKOFF.len() - 1];
        Backoff::new(PEER_BACKOFF.into_iter().chain(std::iter::repeat(last)))
    }

    async fn vote(&mut self, rpc: VoteRequest<NodeId>, option: RPCOption) -> RpcResult<VoteResponse<NodeId>> {
        let mut client = self.client().map_err(RPCError::Unreachable)?;
        let req = v1::VoteRequest { envelope: self.envelope(rpc.vote.leader_id().term), payload: encode(&rpc) };
        let mut request = tonic::Request::new(req);
        request.set_timeout(option.hard_ttl());
        let reply = client.vote(request).await;
        self.reply(reply)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_append_near_the_message_limit_asks_for_fewer_entries() {
        assert_eq!(fewer_entries(512, 1024), None, "a small append goes as it is");
        assert_eq!(fewer_entries(512, MAX_PEER_MESSAGE / 2 + 1), Some(256));
        assert_eq!(fewer_entries(3, MAX_PEER_MESSAGE), Some(1));
        assert_eq!(fewer_entries(1, MAX_PEER_MESSAGE * 2), None, "one entry cannot be split");
    }
}
