//! What one HTTP request reads from the live node: a plain snapshot of its Raft
//! metrics, its committed index, the applied state's fleet and releases, and the agent
//! sessions open here, taken once per request and then rendered.

use std::time::Duration;

use openraft::{BasicNode, RaftMetrics, ServerState};

use crate::engine::Status;
use crate::fleet::AgentHub;
use crate::node::Node;
use crate::raft::NodeId;
use crate::state::State;
use crate::stats;

/// How long a request waits for the Raft core to report its committed index.
const CORE_TIMEOUT: Duration = Duration::from_secs(1);

/// Active releases listed on the status page; the rest are counted.
const MAX_LISTED_RELEASES: usize = 50;

/// Every release state, in the order they are shown and exported.
pub const RELEASE_STATES: [Status; 9] = [
    Status::Pending,
    Status::Running,
    Status::AwaitingApproval,
    Status::Paused,
    Status::RollingBack,
    Status::Succeeded,
    Status::RolledBack,
    Status::Failed,
    Status::Aborted,
];

/// A release state as a label value and on the page.
pub fn release_state_name(status: Status) -> &'static str {
    match status {
        Status::Pending => "pending",
        Status::Running => "running",
        Status::AwaitingApproval => "awaiting_approval",
        Status::Paused => "paused",
        Status::RollingBack => "rolling_back",
        Status::Succeeded => "succeeded",
        Status::RolledBack => "rolled_back",
        Status::Failed => "failed",
        Status::Aborted => "aborted",
    }
}

/// This node's Raft role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Leads the cluster.
    Leader,
    /// A voter following a leader (or waiting for one).
    Follower,
    /// Running for election.
    Candidate,
    /// Receives the log but does not vote.
    Learner,
    /// Raft has stopped.
    Shutdown,
}

impl Role {
    /// Every role, in the order they are exported.
    pub const ALL: [Role; 5] = [Role::Leader, Role::Follower, Role::Candidate, Role::Learner, Role::Shutdown];

    /// The role's name, as a label value and on the page.
    pub fn name(self) -> &'static str {
        match self {
            Role::Leader => "leader",
            Role::Follower => "follower",
            Role::Candidate => "candidate",
            Role::Learner => "learner",
            Role::Shutdown => "shutdown",
        }
    }
}

impl From<ServerState> for Role {
    fn from(state: ServerState) -> Self {
        match state {
            ServerState::Leader => Role::Leader,
            ServerState::Follower => Role::Follower,
            ServerState::Candidate => Role::Candidate,
            ServerState::Learner => Role::Learner,
            ServerState::Shutdown => Role::Shutdown,
        }
    }
}

/// One member of the cluster as this node sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberView {
    /// Its node id.
    pub id: NodeId,
    /// Its advertised address.
    pub addr: String,
    /// A voter (`false`: a learner).
    pub voter: bool,
    /// The last log index the leader knows it holds (on the leader, for the others).
    pub matched_index: Option<u64>,
}

/// One release that has not finished.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReleaseView {
    /// Its id.
    pub id: String,
    /// Its name from the spec.
    pub name: String,
    /// Where it stands.
    pub status: Status,
    /// Who submitted it; empty when unknown.
    pub created_by: String,
    /// When it was submitted (leader's clock).
    pub created_unix_ms: i64,
}

/// Everything the HTTP endpoints show, read from the node at request time.
#[derive(Debug, Clone, PartialEq)]
pub struct StatusView {
    /// This node's id.
    pub node_id: NodeId,
    /// This node's advertised gRPC address.
    pub advertise: String,
    /// The coordinator's version.
    pub version: &'static str,
    /// Why Raft stopped, when it did.
    pub raft_error: Option<String>,
    /// This node's role.
    pub role: Role,
    /// The current leader, when known.
    pub leader_id: Option<NodeId>,
    /// The current term.
    pub term: u64,
    /// The last index in this node's log.
    pub last_log_index: Option<u64>,
    /// The last index this node knows to be committed; `None` when none is, or when
    /// the Raft core did not answer in time (see `core_answered`).
    pub committed_index: Option<u64>,
    /// Whether the Raft core answered the committed-index question.
    pub core_answered: bool,
    /// The last index applied to the state machine.
    pub applied_index: Option<u64>,
    /// The last index included in the latest snapshot.
    pub snapshot_index: Option<u64>,
    /// The last index purged from the log.
    pub purged_index: Option<u64>,
    /// On the leader: the time since a quorum last acknowledged it.
    pub quorum_ack_age: Option<Duration>,
    /// The members, voters and learners, by id.
    pub members: Vec<MemberView>,
    /// Hosts the state knows.
    pub agents_known: u64,
    /// Hosts whose agent the leader holds a live lease on.
    pub agents_online: u64,
    /// Agent sessions open on this node (only the leader accepts them).
    pub sessions_open: u64,
    /// Releases per state, in [`RELEASE_STATES`] order.
    pub releases_by_state: [u64; RELEASE_STATES.len()],
    /// Releases that have not finished, oldest first, at most 50.
    pub active_releases: Vec<ReleaseView>,
    /// How many releases have not finished.
    pub active_total: usize,
    /// Audit records this node's writer committed since it started.
    pub audit_committed: u64,
    /// Audit records this node dropped since it started (queue full, no leader in time).
    pub audit_dropped: u64,
    /// Delivery figures over the last 30 days from this node's applied state: every
    /// service together first (`service` none), then each service.
    pub delivery: Vec<stats::Figures>,
    /// Per webhook, from this node's applied state.
    pub hooks: Vec<HookView>,
}

/// A webhook's deliveries, as `/metrics` shows them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookView {
    /// Its name.
    pub name: String,
    /// Deliveries its receiver accepted.
    pub delivered: u64,
    /// Attempts that failed.
    pub failed: u64,
    /// Events still to deliver.
    pub pending: u64,
}

impl StatusView {
    /// Reads the view from the live node: its Raft metrics, its committed index (asked
    /// of the Raft core, waiting at most a second), its applied state and the hub.
    pub async fn read(node: &Node, hub: &AgentHub) -> Self {
        let committed = node.raft().with_raft_state(|st| st.committed.map(|l| l.index));
        let committed = tokio::time::timeout(CORE_TIMEOUT, committed).await.ok().and_then(Result::ok);
        let metrics = node.raft().metrics().borrow().clone();
        let sessions = hub.connected_hosts().len();
        let (mut view, changes) = node.read_local(|state| {
            (Self::from_parts(node.advertise(), &metrics, committed, state, sessions), stats::changes(state))
        });
        let now = crate::node::now_unix_ms();
        let (overall, services) = stats::figures(&changes, now.saturating_sub(stats::DEFAULT_PERIOD_MS), now, None);
        view.delivery = std::iter::once(overall).chain(services).collect();
        view
    }

    /// The view of a node with these metrics and state. `committed` is the Raft core's
    /// answer (`None` when it did not answer); `sessions` the agent sessions open here.
    pub fn from_parts(
        advertise: &str,
        metrics: &RaftMetrics<NodeId, BasicNode>,
        committed: Option<Option<u64>>,
        state: &State,
        sessions: usize,
    ) -> Self {
        let membership = metrics.membership_config.membership();
        let voters: Vec<NodeId> = membership.voter_ids().collect();
        let members = membership
            .nodes()
            .map(|(&id, node)| MemberView {
                id,
                addr: node.addr.clone(),
                voter: voters.contains(&id),
                matched_index: metrics
                    .replication
                    .as_ref()
                    .filter(|_| id != metrics.id)
                    .and_then(|r| r.get(&id).copied().flatten())
                    .map(|l| l.index),
            })
            .collect();

        let agents = state.fleet().agents();
        let mut releases_by_state = [0u64; RELEASE_STATES.len()];
        for release in state.releases() {
            let status = release.run.status();
            if let Some(slot) = RELEASE_STATES.iter().position(|s| *s == status) {
                releases_by_state[slot] += 1;
            }
        }
        let mut active: Vec<ReleaseView> = state
            .active_releases()
            .map(|r| ReleaseView {
                id: r.submitted.id.clone(),
                name: r.submitted.name.clone(),
                status: r.run.status(),
                created_by: r.submitted.created_by.clone(),
                created_unix_ms: r.created_unix_ms,
            })
            .collect();
        active.sort_by(|a, b| (a.created_unix_ms, &a.id).cmp(&(b.created_unix_ms, &b.id)));
        let active_total = active.len();
        active.truncate(MAX_LISTED_RELEASES);

        Self {
            node_id: metrics.id,
            advertise: advertise.to_owned(),
            version: env!("CARGO_PKG_VERSION"),
            raft_error: metrics.running_state.as_ref().err().map(ToString::to_string),
            role: metrics.state.into(),
            leader_id: metrics.current_leader,
            term: metrics.current_term,
            last_log_index: metrics.last_log_index,
            committed_index: committed.flatten(),
            core_answered: committed.is_some(),
            applied_index: metrics.last_applied.map(|l| l.index),
            snapshot_index: metrics.snapshot.map(|l| l.index),
            purged_index: metrics.purged.map(|l| l.index),
            quorum_ack_age: metrics.millis_since_quorum_ack.map(Duration::from_millis),
            members,
            agents_known: agents.len() as u64,
            agents_online: agents.values().filter(|a| a.online).count() as u64,
            sessions_open: sessions as u64,
            releases_by_state,
            active_releases: active,
            active_total,
            audit_committed: 0,
            audit_dropped: 0,
            delivery: Vec::new(),
            hooks: state
                .policy()
                .hooks()
                .map(|h| HookView {
                    name: h.hook.name.clone(),
                    delivered: h.delivered,
                    failed: h.failed,
                    pending: state.undelivered(h),
                })
                .collect(),
        }
    }

    /// The leader's advertised address, when the leader is known and a member.
    pub fn leader_addr(&self) -> Option<&str> {
        let leader = self.leader_id?;
        self.members.iter().find(|m| m.id == leader).map(|m| m.addr.as_str())
    }

    /// Voters among the members.
    pub fn voters(&self) -> usize {
        self.members.iter().filter(|m| m.voter).count()
    }

    /// Learners among the members.
    pub fn learners(&self) -> usize {
        self.members.iter().filter(|m| !m.voter).count()
    }

    /// Whether this node can serve: it knows a leader and has applied everything it
    /// knows to be committed, or it is the leader. `Err` says why not, in one line.
    pub fn readiness(&self) -> Result<String, String> {
        if let Some(e) = &self.raft_error {
            return Err(format!("raft has stopped: {e}"));
        }
        let Some(leader) = self.leader_id else {
            return Err(format!("no leader is known in term {} (this node is {})", self.term, self.role.name()));
        };
        if leader == self.node_id {
            return Ok(format!("leader in term {}", self.term));
        }
        if !self.core_answered {
            return Err("the raft core did not report its committed index in time".to_owned());
        }
        let applied = self.applied_index;
        match self.committed_index {
            Some(committed) if applied.is_none_or(|a| a < committed) => Err(format!(
                "applied index {} is behind committed index {committed}",
                applied.map_or_else(|| "none".to_owned(), |a| a.to_string())
            )),
            committed => Ok(format!(
                "following leader {leader} in term {}, applied {} of committed {}",
                self.term,
                applied.map_or_else(|| "none".to_owned(), |a| a.to_string()),
                committed.map_or_else(|| "none".to_owned(), |c| c.to_string())
            )),
        }
    }
}
