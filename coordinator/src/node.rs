//! One running coordinator: its storage, its Raft, and the writes and reads the gRPC
//! services make through it.
//!
//! Writes are proposals: the leader stamps the time into the command, commits it
//! through Raft and returns what applying it produced. Reads that must be current
//! ([`Node::read`]) confirm the leadership with a quorum, then wait until the state
//! machine has applied everything that may have been acknowledged before the read.
//!
//! That wait needs care after a restart. openraft 0.9 resumes the leadership a node held
//! when it stopped (its vote on disk is committed and its own) without an election and
//! without a new blank entry, and its read index is then the larger of the term's first
//! entry and the committed log id read from disk. The committed id is persisted lazily
//! (`store/log.rs`), and the state machine is rebuilt only up to it, so after a `kill -9`
//! it can trail what this leader had already committed and acknowledged: a read served
//! right after the restart would miss those writes until the followers' next
//! acknowledgements advanced the commit. A node that resumes its leadership therefore
//! remembers the end of its log at start, and its reads in that term also wait until
//! that index is applied (it commits as soon as a quorum holds it again; entries of a
//! leader's own term are never truncated while it leads). Any later leadership has a
//! new term, whose blank entry openraft's read index covers.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use flotilla_net::ClientSecurity;
use flotilla_proto::status::Reason;
use openraft::error::{CheckIsLeaderError, ClientWriteError, RaftError};
use openraft::metrics::WaitError;
use openraft::storage::RaftLogStorage;
use openraft::{BasicNode, ChangeMembers, SnapshotPolicy, Vote};

use crate::error::CoordinatorError;
use crate::leadership::Leadership;
use crate::raft::identity::ClusterIdentity;
use crate::raft::network::Network;
use crate::raft::proposer::{ProposeError, Proposer};
use crate::raft::{NodeId, Raft};
use crate::state::{Op, Response, State};
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
    /// Packs concurrent writes into shared log entries (`raft/proposer.rs`).
    proposer: Proposer,
    state: SharedState,
    security: ClientSecurity,
    identity: ClusterIdentity,
    sequence: AtomicU64,
    /// The leadership resumed at start, until its log is known to be applied.
    resumed: Mutex<Option<ResumedLeadership>>,
    /// How long a linearizable read may wait for the state machine to catch up.
    read_timeout: Duration,
    /// Channels to the leader for forwarding client writes, by address: one multiplexed
    /// connection (and TLS session) reused by every forwarded call.
    forward_channels: Mutex<BTreeMap<String, tonic::transport::Channel>>,
    /// Where this node is in its life: serving, draining for a stop, or closing.
    lifecycle: tokio::sync::watch::Sender<Lifecycle>,
    /// Whether this node leads and still hears from a quorum (see `leadership`).
    leadership: tokio::sync::watch::Receiver<Leadership>,
    /// Whether this node answers Raft requests (see `formation`).
    raft_gate: crate::formation::RaftGate,
}

/// Where a node is in its life. A stop goes `Serving` → `Draining` → `Closing`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Lifecycle {
    /// Normal operation.
    Serving,
    /// Stopping: no new writes, watch streams or agent sessions are taken; the
    /// leadership is being handed over. Streams already open keep flowing.
    Draining,
    /// Stopping: open streams are ended with a leader hint; the servers then stop.
    Closing,
}

/// How long a read waits for its read index to be applied before answering that no
/// leader can serve it (the client retries).
const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// A leadership this node held when it stopped and resumed at start without an
/// election (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ResumedLeadership {
    /// The vote it resumed: committed, for this node.
    vote: Vote<NodeId>,
    /// The last log index on disk at start. Everything up to it may have been
    /// committed and acknowledged before the restart.
    last_log_index: u64,
}

impl ResumedLeadership {
    /// Reads the vote and the log end `log` holds for node `id`, before Raft starts.
    async fn detect(id: NodeId, log: &mut store::LogStore) -> Result<Option<Self>, CoordinatorError> {
        let failed =
            |e: openraft::StorageError<NodeId>| CoordinatorError::Internal(format!("reading the raft log: {e}"));
        let Some(vote) = log.read_vote().await.map_err(failed)? else { return Ok(None) };
        if !vote.is_committed() || vote.leader_id().voted_for() != Some(id) {
            return Ok(None);
        }
        let last = log.get_log_state().await.map_err(failed)?.last_log_id;
        Ok(last.map(|l| Self { vote, last_log_index: l.index }))
    }

    /// Whether `vote` is of a later term: this leadership is over, and any later one
    /// of this node starts with a blank entry that its read index covers. (Metrics
    /// published before Raft's start show an older vote: the leadership still holds.)
    fn is_over(&self, vote: &Vote<NodeId>) -> bool {
        vote.leader_id().get_term() > self.vote.leader_id().get_term()
    }
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
        let (mut log_store, state_machine) =
            store::open(data_dir).map_err(|e| CoordinatorError::Internal(format!("opening storage: {e}")))?;
        let resumed = ResumedLeadership::detect(id, &mut log_store).await?;
        if let Some(r) = &resumed {
            tracing::info!(vote = %r.vote, last_log_index = r.last_log_index, "resuming the leadership held before the restart; reads wait until the log up to the last index is applied");
        }
        let stored =
            log_store.cluster_id().map_err(|e| CoordinatorError::Internal(format!("reading the cluster id: {e}")))?;
        let identity = ClusterIdentity::new(id, stored, log_store.cluster_id_writer());
        let state = state_machine.shared_state();
        let config = Arc::new(settings.openraft_config()?);
        let network = Network::new(id, security.clone(), identity.clone(), settings.election_min);
        let raft = Raft::new(id, config, network, log_store, state_machine)
            .await
            .map_err(|e| CoordinatorError::Internal(format!("starting raft: {e}")))?;
        // A leader stops acting as one once no quorum answered it for twice the longest
        // election timeout: by then the others have stopped waiting for it, and a leader
        // that is merely slow under load (its followers answer late) is not taken for
        // one cut off.
        let leadership = crate::leadership::follow(raft.metrics(), settings.election_max * 2, settings.heartbeat);
        Ok(Self {
            inner: Arc::new(Inner {
                id,
                advertise,
                proposer: Proposer::start(raft.clone(), now_unix_ms),
                raft,
                state,
                security,
                identity,
                forward_channels: Mutex::default(),
                sequence: AtomicU64::new(0),
                resumed: Mutex::new(resumed),
                read_timeout: READ_TIMEOUT,
                lifecycle: tokio::sync::watch::Sender::new(Lifecycle::Serving),
                leadership,
                raft_gate: crate::formation::RaftGate::default(),
            }),
        })
    }

    /// Takes the identity of the cluster `members` form, for a node about to form it:
    /// called before the node serves, so that the first request from another member is
    /// already checked against it. A node with Raft state keeps the cluster it has.
    pub async fn claim_bootstrap_identity(&self, members: &[(NodeId, String)]) -> Result<(), CoordinatorError> {
        if members.is_empty() || self.is_initialized().await? {
            return Ok(());
        }
        match self.inner.identity.claim(members) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(existing)) => {
                tracing::warn!(cluster = %existing, "this node already joined a cluster; the bootstrap list does not describe it and is ignored");
                Ok(())
            }
            Err(e) => Err(CoordinatorError::Internal(format!("recording the cluster id: {e}"))),
        }
    }

    /// Whether this node answers Raft requests (closed while a node with no Raft state
    /// finds out whether it may take part: see [`crate::formation`]).
    pub fn raft_gate(&self) -> &crate::formation::RaftGate {
        &self.inner.raft_gate
    }

    /// Whether this node has Raft state (it formed or joined a cluster).
    pub async fn is_initialized(&self) -> Result<bool, CoordinatorError> {
        self.inner.raft.is_initialized().await.map_err(|e| CoordinatorError::Internal(e.to_string()))
    }

    /// Forms the cluster from `members` unless this node already has Raft state (a
    /// restart ignores the bootstrap list). Returns whether it initialized.
    pub async fn bootstrap(&self, members: &[(NodeId, String)]) -> Result<bool, CoordinatorError> {
        if members.is_empty() || self.is_initialized().await? {
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

    /// The cluster this node belongs to.
    pub fn identity(&self) -> &ClusterIdentity {
        &self.inner.identity
    }

    /// How this node dials other coordinators (forwarding).
    pub fn security(&self) -> &ClientSecurity {
        &self.inner.security
    }

    /// The channel this node forwards client writes on to the leader at `addr`, made
    /// once and kept (a channel reconnects by itself when its connection drops).
    pub fn forward_channel(&self, addr: &str) -> Result<tonic::transport::Channel, flotilla_net::NetError> {
        let mut channels = self.inner.forward_channels.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(ch) = channels.get(addr) {
            return Ok(ch.clone());
        }
        let ch = flotilla_net::channel(addr, &self.inner.security)?;
        // Leaders come and go; keep only the few addresses a cluster has.
        if channels.len() >= 16 {
            channels.clear();
        }
        channels.insert(addr.to_owned(), ch.clone());
        Ok(ch)
    }

    /// Whether this node leads and still hears from a quorum of coordinators, as the
    /// hub, the release engine and writes follow it.
    pub fn leadership(&self) -> tokio::sync::watch::Receiver<Leadership> {
        self.inner.leadership.clone()
    }

    /// `Ok` when this node is the leader and serving; otherwise who leads, if anyone
    /// (a leader that is stopping answers [`CoordinatorError::ShuttingDown`]; one that
    /// no quorum answers any more, [`CoordinatorError::NoLeader`]).
    pub fn check_leader(&self) -> Result<(), CoordinatorError> {
        if self.inner.leadership.borrow().isolated {
            return Err(CoordinatorError::NoLeader);
        }
        let metrics = self.inner.raft.metrics().borrow().clone();
        match metrics.current_leader {
            Some(leader) if leader == self.inner.id && self.lifecycle() != Lifecycle::Serving => {
                Err(CoordinatorError::ShuttingDown { node_id: self.inner.id })
            }
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
    /// Writes that arrive together share a log entry (see [`Proposer`]).
    /// A node that is stopping proposes nothing more (its leadership is being handed
    /// over, which needs its log to stand still).
    pub async fn propose(&self, op: Op) -> Result<Response, CoordinatorError> {
        if self.lifecycle() != Lifecycle::Serving {
            return Err(CoordinatorError::ShuttingDown { node_id: self.inner.id });
        }
        // A leader cut off from the quorum could not commit; the client goes elsewhere.
        if self.inner.leadership.borrow().isolated {
            return Err(CoordinatorError::NoLeader);
        }
        // A leader that loses its quorum while the entry waits answers at once instead of
        // waiting for the partition to heal (the entry commits only if the quorum answers
        // this leader again; the caller cannot tell, as after any lost answer).
        let mut leadership = self.inner.leadership.clone();
        let written = tokio::select! {
            written = self.inner.proposer.propose(op) => written,
            _ = leadership.wait_for(|l| l.isolated) => return Err(CoordinatorError::NoLeader),
        };
        match written {
            Ok(response) => Ok(response),
            Err(ProposeError::Raft(e)) => Err(match *e {
                RaftError::APIError(ClientWriteError::ForwardToLeader(fwd)) => match fwd.leader_node {
                    Some(node) => CoordinatorError::NotLeader {
                        leader_id: fwd.leader_id.unwrap_or_default(),
                        leader_addr: node.addr,
                    },
                    None => CoordinatorError::NoLeader,
                },
                RaftError::APIError(ClientWriteError::ChangeMembershipError(e)) => {
                    CoordinatorError::precondition(Reason::MembershipChangeRefused, e.to_string())
                }
                RaftError::Fatal(e) => CoordinatorError::Internal(format!("raft stopped: {e}")),
            }),
            Err(ProposeError::Stopped) => Err(CoordinatorError::ShuttingDown { node_id: self.inner.id }),
            Err(e @ ProposeError::Unanswered { .. }) => Err(CoordinatorError::Internal(e.to_string())),
        }
    }

    /// Reads the state after making sure this leader's view is current (linearizable):
    /// the leadership is confirmed by a quorum, then the read waits until every entry
    /// that may have been acknowledged before it is applied.
    pub async fn read<T>(&self, f: impl FnOnce(&State) -> T) -> Result<T, CoordinatorError> {
        self.wait_read_index().await?;
        Ok(self.read_local(f))
    }

    /// Reads the state a write is about to be built from (a release's planning fleet),
    /// without confirming the leadership with a quorum first: the write that follows
    /// goes through Raft, which refuses it if the leadership is gone, so a quorum round
    /// here would only add one to every write.
    ///
    /// The state read holds at least every entry committed before this leader's term:
    /// on the fast path the leader has already applied an entry of its own term (its
    /// blank entry or later), and after a resumed leadership (see [`ResumedLeadership`])
    /// or before that first apply it falls back to [`Node::read`].
    pub async fn read_for_write<T>(&self, f: impl FnOnce(&State) -> T) -> Result<T, CoordinatorError> {
        let settled = {
            let m = self.inner.raft.metrics();
            let m = m.borrow();
            m.current_leader == Some(self.inner.id)
                && m.last_applied
                    .is_some_and(|l| l.leader_id.term == m.current_term && l.leader_id.node_id == self.inner.id)
                && self.pending_resumed(&m.vote).is_none()
        };
        if settled { Ok(self.read_local(f)) } else { self.read(f).await }
    }

    /// The resumed leadership whose log is not yet known to be applied, unless `vote`
    /// shows it is over (it is forgotten once applied or over).
    fn pending_resumed(&self, vote: &Vote<NodeId>) -> Option<ResumedLeadership> {
        let mut resumed = self.inner.resumed.lock().unwrap_or_else(PoisonError::into_inner);
        if resumed.is_some_and(|r| r.is_over(vote)) {
            *resumed = None;
        }
        *resumed
    }

    fn resumed_applied(&self, applied: ResumedLeadership) {
        let mut resumed = self.inner.resumed.lock().unwrap_or_else(PoisonError::into_inner);
        if *resumed == Some(applied) {
            *resumed = None;
        }
    }

    /// Confirms the leadership and waits until the read index is applied.
    async fn wait_read_index(&self) -> Result<(), CoordinatorError> {
        let deadline = Instant::now() + self.inner.read_timeout;
        loop {
            // Taken before the leadership check: a leadership that ends after it only
            // makes the wait below stop early and the read start over.
            let vote = self.inner.raft.metrics().borrow().vote;
            let resumed = self.pending_resumed(&vote);
            let (read_log_id, _) = self.inner.raft.get_read_log_id().await.map_err(|e| read_error(&e))?;
            let mut index = read_log_id.map(|l| l.index);
            if let Some(r) = resumed {
                index = index.max(Some(r.last_log_index));
            }
            let Some(index) = index else { return Ok(()) };
            let timeout = deadline.saturating_duration_since(Instant::now());
            let waited = self
                .inner
                .raft
                .wait(Some(timeout))
                .metrics(
                    |m| {
                        m.last_applied.is_some_and(|l| l.index >= index)
                            || resumed.is_some_and(|r| r.is_over(&m.vote))
                            || m.running_state.is_err()
                    },
                    "the read index is applied",
                )
                .await;
            match waited {
                Ok(m) if m.last_applied.is_some_and(|l| l.index >= index) => {
                    if let Some(r) = resumed {
                        self.resumed_applied(r);
                    }
                    return Ok(());
                }
                Ok(m) if m.running_state.is_err() => {
                    return Err(CoordinatorError::Internal("raft stopped while a read waited".to_owned()));
                }
                // The resumed leadership ended before its log was applied: start over
                // under the current vote (a new leadership reads past its blank entry).
                Ok(_) if Instant::now() < deadline => continue,
                Ok(_) | Err(WaitError::Timeout(..)) => {
                    tracing::debug!(index, "a linearizable read timed out waiting for its read index to be applied");
                    return Err(CoordinatorError::NoLeader);
                }
                Err(WaitError::ShuttingDown) => {
                    return Err(CoordinatorError::Internal("raft is shutting down".to_owned()));
                }
            }
        }
    }

    /// Reads this node's applied state without checking it is current.
    pub fn read_local<T>(&self, f: impl FnOnce(&State) -> T) -> T {
        store::with_state(&self.inner.state, f)
    }

    /// Runs `f` on everything this node has applied (state, last log id, membership) as
    /// of one index, under the state's read lock (apply waits meanwhile).
    pub fn read_applied<T>(&self, f: impl FnOnce(&store::Applied) -> T) -> T {
        self.inner.state.read_applied(f)
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
            return Err(CoordinatorError::NotFound {
                reason: Reason::NodeNotFound,
                resource_type: "flotilla.v1.ClusterMember",
                name: id.to_string(),
                message: format!("node {id} is not a member of the cluster"),
            });
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
        // The change is committed; let the metrics catch up, so the status answered
        // next no longer lists the node (they follow the commit within moments).
        let _ = self
            .inner
            .raft
            .wait(Some(Duration::from_secs(2)))
            .metrics(|m| m.membership_config.membership().get_node(&id).is_none(), "the removal is in the metrics")
            .await;
        Ok(())
    }

    /// Where this node is in its life.
    pub fn lifecycle(&self) -> Lifecycle {
        *self.inner.lifecycle.borrow()
    }

    /// Follows [`Node::lifecycle`] (for streams that end when the node closes).
    pub fn lifecycle_changes(&self) -> tokio::sync::watch::Receiver<Lifecycle> {
        self.inner.lifecycle.subscribe()
    }

    /// Moves the node's life forward to `to` (never back).
    pub fn advance_lifecycle(&self, to: Lifecycle) {
        self.inner.lifecycle.send_if_modified(|now| {
            let moved = to > *now;
            if moved {
                *now = to;
            }
            moved
        });
    }

    /// Hands this node's leadership to the most caught-up voter before it stops, so
    /// the cluster has a new leader within a round trip instead of an election timeout
    /// (Raft's TimeoutNow; openraft 0.9 has no leadership transfer of its own).
    ///
    /// The node must be draining ([`Lifecycle::Draining`]): it proposes nothing more,
    /// so its log stands still. Once a voter's matched index reaches the end of the
    /// log, that voter is asked to start an election at once; the old leader's vote
    /// (its own lease is long past, see openraft's vote handling) makes it win in a
    /// three-node cluster without waiting for the others' leases. Returns the new
    /// leader, or why there is none by `deadline` (the others then elect after their
    /// timeout, as after a crash).
    pub async fn hand_over_leadership(&self, deadline: tokio::time::Instant) -> Result<NodeId, String> {
        let me = self.inner.id;
        let mut metrics = self.inner.raft.metrics();
        let mut asked: Option<NodeId> = None;
        loop {
            let m = metrics.borrow_and_update().clone();
            match m.current_leader {
                Some(leader) if leader != me => return Ok(leader),
                None if asked.is_none() => return Err("this node is not the leader".to_owned()),
                _ => {}
            }
            if asked.is_none() && m.current_leader == Some(me) {
                let last = m.last_log_index.unwrap_or(0);
                let membership = m.membership_config.membership();
                let matched = |id: &NodeId| {
                    m.replication.as_ref().and_then(|r| r.get(id).cloned().flatten()).map_or(0, |l| l.index)
                };
                let target = membership.voter_ids().filter(|v| *v != me).max_by_key(|v| (matched(v), u64::MAX - v));
                let Some(target) = target else { return Err("no other voter to hand over to".to_owned()) };
                if matched(&target) >= last {
                    let addr = membership.get_node(&target).map(|n| n.addr.clone()).unwrap_or_default();
                    match crate::raft::network::timeout_now(
                        me,
                        target,
                        &addr,
                        &self.inner.security,
                        &self.inner.identity,
                        m.current_term,
                        last,
                        deadline,
                    )
                    .await
                    {
                        Ok(()) => {
                            tracing::info!(
                                to = target,
                                term = m.current_term,
                                last_log_index = last,
                                "handing the leadership over"
                            );
                            asked = Some(target);
                        }
                        Err(why) => return Err(format!("node {target} did not take the leadership: {why}")),
                    }
                }
            }
            match tokio::time::timeout_at(deadline, metrics.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return Err("raft stopped".to_owned()),
                Err(_) => {
                    return Err(match asked {
                        Some(t) => format!("node {t} started an election but no new leader was known in time"),
                        None => "no voter caught up with the log in time".to_owned(),
                    });
                }
            }
        }
    }

    /// Stops Raft (flushing what it must).
    pub async fn shutdown(&self) {
        if let Err(e) = self.inner.raft.shutdown().await {
            tracing::warn!(error = %e, "raft did not shut down cleanly");
        }
    }
}

fn read_error(e: &RaftError<NodeId, CheckIsLeaderError<NodeId, BasicNode>>) -> CoordinatorError {
    match e {
        RaftError::APIError(CheckIsLeaderError::ForwardToLeader(fwd)) => match &fwd.leader_node {
            Some(node) => CoordinatorError::NotLeader {
                leader_id: fwd.leader_id.unwrap_or_default(),
                leader_addr: node.addr.clone(),
            },
            None => CoordinatorError::NoLeader,
        },
        RaftError::APIError(CheckIsLeaderError::QuorumNotEnough(_)) => CoordinatorError::NoLeader,
        RaftError::Fatal(e) => CoordinatorError::Internal(format!("raft stopped: {e}")),
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
            CoordinatorError::precondition(Reason::MembershipChangeRefused, e.to_string())
        }
        RaftError::Fatal(e) => CoordinatorError::Internal(format!("raft stopped: {e}")),
    }
}

/// Milliseconds since the Unix epoch on this node's clock. Only the leader's reading
/// is ever stored (stamped into commands).
pub fn now_unix_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::sync::atomic::AtomicBool;

    use flotilla_proto::v1::raft_peer_server::{RaftPeer, RaftPeerServer};
    use flotilla_proto::v1::{self, raft_reply};
    use openraft::raft::{AppendEntriesRequest, AppendEntriesResponse};
    use openraft::storage::RaftLogStorageExt;
    use openraft::{CommittedLeaderId, EntryPayload, LogId, Membership, ServerState};
    use tonic::{Request, Response, Status};

    use super::*;
    use crate::raft::network::{decode, encode};
    use crate::raft::{Entry, TypeConfig};

    /// A follower whose log ends at index `has` and whose disk takes no entries until
    /// `accept` is set. It answers heartbeats, so the leader's leadership checks pass.
    struct StuckFollower {
        has: u64,
        accept: Arc<AtomicBool>,
    }

    #[tonic::async_trait]
    impl RaftPeer for StuckFollower {
        async fn append_entries(
            &self,
            request: Request<v1::AppendEntriesRequest>,
        ) -> Result<Response<v1::RaftReply>, Status> {
            let rpc: AppendEntriesRequest<TypeConfig> =
                decode(&request.into_inner().payload).map_err(|e| Status::invalid_argument(e.to_string()))?;
            let prev = rpc.prev_log_id.map_or(0, |l| l.index);
            let reply = if self.accept.load(Ordering::SeqCst) || (rpc.entries.is_empty() && prev <= self.has) {
                AppendEntriesResponse::<NodeId>::Success
            } else if rpc.entries.is_empty() {
                AppendEntriesResponse::Conflict
            } else {
                return Err(Status::unavailable("this follower's disk is stuck"));
            };
            Ok(Response::new(v1::RaftReply { result: Some(raft_reply::Result::Payload(encode(&reply))) }))
        }

        async fn vote(&self, _request: Request<v1::VoteRequest>) -> Result<Response<v1::RaftReply>, Status> {
            Err(Status::unavailable("this follower does not vote"))
        }

        async fn install_snapshot(
            &self,
            _request: Request<v1::InstallSnapshotRequest>,
        ) -> Result<Response<v1::RaftReply>, Status> {
            Err(Status::unavailable("this follower takes no snapshot"))
        }

        async fn timeout_now(
            &self,
            _request: Request<v1::TimeoutNowRequest>,
        ) -> Result<Response<v1::TimeoutNowReply>, Status> {
            Err(Status::unavailable("this follower takes no leadership"))
        }

        async fn record_audit(
            &self,
            _request: Request<v1::RecordAuditRequest>,
        ) -> Result<Response<v1::RecordAuditReply>, Status> {
            Err(Status::unavailable("this follower does not lead"))
        }

        async fn probe(&self, _request: Request<v1::ProbeRequest>) -> Result<Response<v1::ProbeReply>, Status> {
            Err(Status::unimplemented("this follower answers no probes"))
        }
    }

    fn entry(index: u64, payload: EntryPayload<TypeConfig>) -> Entry {
        Entry { log_id: LogId::new(CommittedLeaderId::new(1, 1), index), payload }
    }

    fn applied_index(node: &Node) -> u64 {
        node.raft().metrics().borrow().last_applied.map_or(0, |l| l.index)
    }

    /// The stale read after a full restart: node 1 led term 1 with node 2, committed
    /// (and acknowledged) its log up to index 12, and was killed before the committed
    /// id past 2 reached its disk. It restarts and resumes its leadership; node 2 is
    /// back but cannot take entries yet. A read must not answer from the state at
    /// index 2: it waits (and gives up) until the log is applied, then sees all of it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_resumed_leader_reads_nothing_older_than_its_log_at_restart() {
        const LAST: u64 = 12;
        const COMMITTED_ON_DISK: u64 = 2;
        let dir = tempfile::tempdir().unwrap();

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let follower_addr = listener.local_addr().unwrap().to_string();
        let accept = Arc::new(AtomicBool::new(false));
        let follower = StuckFollower { has: COMMITTED_ON_DISK, accept: accept.clone() };
        let server = tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(RaftPeerServer::new(follower))
                .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
        );

        {
            let (mut log, _sm) = store::open(dir.path()).unwrap();
            let nodes =
                BTreeMap::from([(1, BasicNode { addr: "127.0.0.1:1".into() }), (2, BasicNode { addr: follower_addr })]);
            let membership = Membership::new(vec![BTreeSet::from([1, 2])], nodes);
            // As `initialize` writes it: the membership at index 0.
            let mut entries = vec![entry(0, EntryPayload::Membership(membership))];
            entries.extend((1..=LAST).map(|i| entry(i, EntryPayload::Blank)));
            log.save_vote(&Vote::new_committed(1, 1)).await.unwrap();
            log.blocking_append(entries).await.unwrap();
            log.save_committed(Some(LogId::new(CommittedLeaderId::new(1, 1), COMMITTED_ON_DISK))).await.unwrap();
            log.blocking_append([]).await.unwrap();
        }

        let mut node =
            Node::start(1, "127.0.0.1:1".into(), dir.path(), &RaftSettings::default(), ClientSecurity::Insecure)
                .await
                .unwrap();
        Arc::get_mut(&mut node.inner).expect("the only handle").read_timeout = Duration::from_millis(500);

        // Read at once, as a client reconnecting after the restart would.
        let first = node.read(|_| ()).await;
        let metrics = node.raft().wait(Some(Duration::from_secs(10))).state(ServerState::Leader, "resumed").await;
        let term = metrics.expect("node 1 resumes its leadership without an election").current_term;
        assert_eq!(term, 1, "no election took place");
        // The state applied so far ends with an entry of the leader's own term (index
        // 2, term 1), so only the resumed leadership keeps a read for a write from
        // answering with it.
        let for_write = node.read_for_write(|_| ()).await;
        for (what, result) in [("a read", first), ("a read for a write", for_write)] {
            match result {
                Ok(()) => assert!(
                    applied_index(&node) >= LAST,
                    "{what} answered from the state at index {} while the log up to {LAST} may have been acknowledged",
                    applied_index(&node)
                ),
                Err(CoordinatorError::NoLeader) => {}
                Err(e) => panic!("unexpected error of {what}: {e}"),
            }
        }
        assert!(applied_index(&node) < LAST, "nothing past index {COMMITTED_ON_DISK} can commit yet");

        accept.store(true, Ordering::SeqCst);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            match node.read(|_| ()).await {
                Ok(()) => break,
                Err(e) => assert!(Instant::now() < deadline, "no read succeeded once the follower took entries: {e}"),
            }
        }
        assert!(applied_index(&node) >= LAST, "the read saw the whole log");
        node.read_for_write(|_| ()).await.expect("a read for a write once the log is applied");
        node.shutdown().await;
        server.abort();
    }

    /// A node that forms a cluster of one and leads it.
    async fn sole_leader(dir: &Path) -> Node {
        let node = Node::start(1, "127.0.0.1:1".into(), dir, &RaftSettings::default(), ClientSecurity::Insecure)
            .await
            .unwrap();
        assert!(node.bootstrap(&[(1, "127.0.0.1:1".to_owned())]).await.unwrap());
        node.raft().wait(Some(Duration::from_secs(10))).state(ServerState::Leader, "sole leader").await.unwrap();
        node
    }

    fn audit_op(i: usize) -> Op {
        let record = crate::state::AuditRecord { method: format!("call-{i}"), ..Default::default() };
        Op::Audit(crate::state::AuditBatch { records: vec![record], retention: crate::state::Retention::default() })
    }

    fn unknown_release_op(i: usize) -> Op {
        Op::Release {
            release: format!("missing-{i}"),
            expect: None,
            fact: crate::engine::Fact::Noted { actor: "test".into(), text: "a note".into() },
        }
    }

    /// Writes made at once share log entries (group commit), yet each is applied once,
    /// in full, and each caller gets the answer to its own operation.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_writes_share_log_entries_and_each_caller_gets_its_own_answer() {
        const WRITES: usize = 400;
        let dir = tempfile::tempdir().unwrap();
        let node = sole_leader(dir.path()).await;
        let before = node.raft().metrics().borrow().last_log_index.unwrap_or(0);
        let writes = (0..WRITES).map(|i| {
            let node = node.clone();
            tokio::spawn(async move {
                // Every other write is refused by the state machine, with its own reason.
                let op = if i % 2 == 0 { audit_op(i) } else { unknown_release_op(i) };
                (i, node.propose(op).await)
            })
        });
        for written in futures::future::join_all(writes).await {
            let (i, response) = written.unwrap();
            let response = response.unwrap_or_else(|e| panic!("write {i} failed: {e}"));
            if i % 2 == 0 {
                assert_eq!(response, crate::state::Response::Done, "write {i}");
            } else {
                assert_eq!(response, crate::state::Response::NoRelease { id: format!("missing-{i}") }, "write {i}");
            }
        }
        let entries = node.raft().metrics().borrow().last_log_index.unwrap_or(0) - before;
        assert!(entries < WRITES as u64, "{WRITES} concurrent writes took {entries} entries: none were shared");
        let mut got: Vec<String> = node.read_local(|s| s.access().audit().map(|r| r.method.clone()).collect());
        let mut expected: Vec<String> = (0..WRITES).step_by(2).map(|i| format!("call-{i}")).collect();
        got.sort();
        expected.sort();
        assert_eq!(got, expected, "every audit write applied exactly once");
        node.shutdown().await;
    }

    /// When the entry cannot be committed (no cluster to lead yet), every write in it
    /// fails as a write on its own would: with no leader to send the client to.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_write_of_an_entry_that_cannot_commit_fails_with_it() {
        let dir = tempfile::tempdir().unwrap();
        let node = Node::start(1, "127.0.0.1:1".into(), dir.path(), &RaftSettings::default(), ClientSecurity::Insecure)
            .await
            .unwrap();
        let writes = (0..64).map(|i| {
            let node = node.clone();
            tokio::spawn(async move { node.propose(audit_op(i)).await })
        });
        for written in futures::future::join_all(writes).await {
            match written.unwrap() {
                Err(CoordinatorError::NoLeader) => {}
                other => panic!("a write on a node that leads nothing answered {other:?}"),
            }
        }
        assert_eq!(node.read_local(|s| s.access().audit().count()), 0, "nothing was applied");
        node.shutdown().await;
    }
}
