//! One running coordinator: its storage, its Raft, and the writes and reads the gRPC
//! services make through it.
//!
//! Writes are proposals: the leader stamps the time into the command, commits it
//! through Raft and returns what applying it produced. Reads that must be current go
//! through `ensure_linearizable` on the leader.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use flotilla_net::ClientSecurity;
use openraft::error::{ClientWriteError, RaftError};
use openraft::{BasicNode, ChangeMembers, SnapshotPolicy};

use crate::error::CoordinatorError;
use crate::raft::network::Network;
use crate::raft::{NodeId, Raft};
use crate::state::{Command, Op, Response, State};
use crate::store::{self, SharedState};

/// Raft timing and log compaction settings.
#[derive(Debug, Clone)]
pub struct RaftSettings {
    /// Leader heartbeat interval.
    pub heartbeat: Duration,
    /// Lower bound of the randomized election timeout.
    pub election_min: Duration,
    /// Upper bound of the randomized election timeout.
    pub election_max: Duration,
    /// A snapshot is built after this many applied entries since the last one.
    pub snapshot_logs: u64,
    /// Entries kept in the log behind the latest snapshot (for slow followers).
    pub keep_logs: u64,
}

impl Default for RaftSettings {
    fn default() -> Self {
        Self {
            heartbeat: Duration::from_millis(50),
            election_min: Duration::from_millis(150),
            election_max: Duration::from_millis(300),
            snapshot_logs: 10_000,
            keep_logs: 1_000,
        }
    }
}

impl RaftSettings {
    fn openraft_config(&self) -> Result<openraft::Config, CoordinatorError> {
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        openraft::Config {
            cluster_name: "flotilla".to_owned(),
            heartbeat_interval: ms(self.heartbeat),
            election_timeout_min: ms(self.election_min),
            election_timeout_max: ms(self.election_max),
            snapshot_policy: SnapshotPolicy::LogsSinceLast(self.snapshot_logs),
            max_in_snapshot_log_to_keep: self.keep_logs,
            // Chunks of a snapshot sent to a lagging or new node.
            snapshot_max_chunk_size: 1024 * 1024,
            max_payload_entries: 512,
            ..Default::default()
        }
        .validate()
        .map_err(|e| CoordinatorError::InvalidArgument(format!("raft settings: {e}")))
    }
}

/// A coordinator's Raft and state, shared by its services.
#[derive(Clone)]
pub struct Node {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("id", &self.inner.id)
            .field("advertise", &self.inner.advertise)
            .finish_non_exhaustive()
    }
}

struct Inner {
    id: NodeId,
    advertise: String,
    raft: Raft,
    state: SharedState,
    security: ClientSecurity,
    sequence: AtomicU64,
}

impl Node {
    /// Opens the node's storage under `data_dir` and starts its Raft. Peers are dialed
    /// with `security`.
    pub async fn start(
        id: NodeId,
        advertise: String,
        data_dir: &Path,
        settings: &RaftSettings,
        security: ClientSecurity,
    ) -> Result<Self, CoordinatorError> {
        let (log_store, state_machine) =
            store::open(data_dir).map_err(|e| CoordinatorError::Internal(format!("opening storage: {e}")))?;
        let state = state_machine.shared_state();
        let config = Arc::new(settings.openraft_config()?);
        let network = Network::new(id, security.clone());
        let raft = Raft::new(id, config, network, log_store, state_machine)
            .await
            .map_err(|e| CoordinatorError::Internal(format!("starting raft: {e}")))?;
        Ok(Self { inner: Arc::new(Inner { id, advertise, raft, state, security, sequence: AtomicU64::new(0) }) })
    }

    /// Forms the cluster from `members` unless this node already has Raft state (a
    /// restart ignores the bootstrap list). Returns whether it initialized.
    pub async fn bootstrap(&self, members: &[(NodeId, String)]) -> Result<bool, CoordinatorError> {
        if members.is_empty()
            || self.inner.raft.is_initialized().await.map_err(|e| CoordinatorError::Internal(e.to_string()))?
        {
            return Ok(false);
        }
        let nodes: BTreeMap<NodeId, BasicNode> =
            members.iter().map(|(id, addr)| (*id, BasicNode { addr: addr.clone() })).collect();
        match self.inner.raft.initialize(nodes).await {
            Ok(()) => Ok(true),
            // Another bootstrap member got there first: the cluster is formed.
            Err(RaftError::APIError(openraft::error::InitializeError::NotAllowed(_))) => Ok(false),
            Err(e) => Err(CoordinatorError::Internal(format!("bootstrap: {e}"))),
        }
    }

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.inner.id
    }

    /// The address peers and clients reach this node at.
    pub fn advertise(&self) -> &str {
        &self.inner.advertise
    }

    /// The Raft handle.
    pub fn raft(&self) -> &Raft {
        &self.inner.raft
    }

    /// How this node dials other coordinators (forwarding).
    pub fn security(&self) -> &ClientSecurity {
        &self.inner.security
    }

    /// `Ok` when this node is the leader; otherwise who is, if anyone.
    pub fn check_leader(&self) -> Result<(), CoordinatorError> {
        let metrics = self.inner.raft.metrics().borrow().clone();
        match metrics.current_leader {
            Some(leader) if leader == self.inner.id => Ok(()),
            Some(leader) => {
                let addr = metrics.membership_config.membership().get_node(&leader).map(|n| n.addr.clone());
                match addr {
                    Some(leader_addr) => Err(CoordinatorError::NotLeader { leader_id: leader, leader_addr }),
                    None => Err(CoordinatorError::NoLeader),
                }
            }
            None => Err(CoordinatorError::NoLeader),
        }
    }

    /// Commits `op`, stamped with the leader's clock, and returns what applying it produced.
    pub async fn propose(&self, op: Op) -> Result<Response, CoordinatorError> {
        let cmd = Command { at_unix_ms: now_unix_ms(), op };
        match self.inner.raft.client_write(cmd).await {
            Ok(resp) => Ok(resp.data),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(fwd))) => Err(match fwd.leader_node {
                Some(node) => {
                    CoordinatorError::NotLeader { leader_id: fwd.leader_id.unwrap_or_default(), leader_addr: node.addr }
                }
                None => CoordinatorError::NoLeader,
            }),
            Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(e))) => {
                Err(CoordinatorError::FailedPrecondition(e.to_string()))
            }
            Err(RaftError::Fatal(e)) => Err(CoordinatorError::Internal(format!("raft stopped: {e}"))),
        }
    }

    /// Reads the state after making sure this leader's view is current (linearizable).
    pub async fn read<T>(&self, f: impl FnOnce(&State) -> T) -> Result<T, CoordinatorError> {
        self.inner.raft.ensure_linearizable().await.map_err(|e| match e {
            RaftError::APIError(openraft::error::CheckIsLeaderError::ForwardToLeader(fwd)) => match fwd.leader_node {
                Some(node) => {
                    CoordinatorError::NotLeader { leader_id: fwd.leader_id.unwrap_or_default(), leader_addr: node.addr }
                }
                None => CoordinatorError::NoLeader,
            },
            RaftError::APIError(openraft::error::CheckIsLeaderError::QuorumNotEnough(_)) => CoordinatorError::NoLeader,
            RaftError::Fatal(e) => CoordinatorError::Internal(format!("raft stopped: {e}")),
        })?;
        Ok(self.read_local(f))
    }

    /// Reads this node's applied state without checking it is current.
    pub fn read_local<T>(&self, f: impl FnOnce(&State) -> T) -> T {
        store::with_state(&self.inner.state, f)
    }

    /// A new release id: unique per leader and time (`r-<ms hex>-<node><seq>`).
    pub fn next_release_id(&self) -> String {
        let seq = self.inner.sequence.fetch_add(1, Ordering::Relaxed);
        format!("r-{:x}-{}{seq:x}", now_unix_ms(), self.inner.id)
    }

    /// Adds a node: first as a learner that catches up, then as a voter unless
    /// `learner_only`. Leader only.
    pub async fn add_node(&self, id: NodeId, addr: String, learner_only: bool) -> Result<(), CoordinatorError> {
        self.check_leader()?;
        self.inner.raft.add_learner(id, BasicNode { addr }, true).await.map_err(|e| membership_error(&e))?;
        if !learner_only {
            self.inner
                .raft
                .change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])), false)
                .await
                .map_err(|e| membership_error(&e))?;
        }
        Ok(())
    }

    /// Removes a node from the voters and the learners. Leader only.
    pub async fn remove_node(&self, id: NodeId) -> Result<(), CoordinatorError> {
        self.check_leader()?;
        let membership = self.inner.raft.metrics().borrow().membership_config.clone();
        let is_voter = membership.membership().voter_ids().any(|v| v == id);
        let is_node = membership.membership().get_node(&id).is_some();
        if !is_node {
            return Err(CoordinatorError::NotFound(format!("node {id} is not a member of the cluster")));
        }
        if is_voter {
            self.inner
                .raft
                .change_membership(ChangeMembers::RemoveVoters(BTreeSet::from([id])), false)
                .await
                .map_err(|e| membership_error(&e))?;
        }
        self.inner
            .raft
            .change_membership(ChangeMembers::RemoveNodes(BTreeSet::from([id])), false)
            .await
            .map_err(|e| membership_error(&e))?;
        Ok(())
    }

    /// Stops Raft (flushing what it must).
    pub async fn shutdown(&self) {
        if let Err(e) = self.inner.raft.shutdown().await {
            tracing::warn!(error = %e, "raft did not shut down cleanly");
        }
    }
}

fn membership_error(e: &RaftError<NodeId, ClientWriteError<NodeId, BasicNode>>) -> CoordinatorError {
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(fwd)) => match &fwd.leader_node {
            Some(node) => CoordinatorError::NotLeader {
                leader_id: fwd.leader_id.unwrap_or_default(),
                leader_addr: node.addr.clone(),
            },
            None => CoordinatorError::NoLeader,
        },
        RaftError::APIError(ClientWriteError::ChangeMembershipError(e)) => {
            CoordinatorError::FailedPrecondition(e.to_string())
        }
        RaftError::Fatal(e) => CoordinatorError::Internal(format!("raft stopped: {e}")),
    }
}

/// Milliseconds since the Unix epoch on this node's clock. Only the leader's reading
/// is ever stored (stamped into commands).
pub fn now_unix_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}
