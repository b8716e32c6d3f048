//! Leadership as everything that acts only on the leader sees it: the Raft leader that
//! still hears from a quorum of voters (check-quorum).
//!
//! A leader cut off from the other coordinators stays leader in Raft until it hears of
//! a higher term, which only happens once the partition heals. The majority elects a
//! new leader within an election timeout, but agents that can still reach the old one
//! would keep their sessions with it, and the new leader would count them lost and
//! make no progress. So a leader that has not heard from a quorum within its lease —
//! twice the longest election timeout, after which the others have certainly stopped
//! waiting for it — stops acting as leader towards agents and clients: the hub sends
//! its agent sessions away (with no hint: the agents try the other coordinators), the
//! release engine stops, and writes answer `NO_LEADER` so clients go elsewhere. Raft
//! itself is left alone: if the quorum answers again the node resumes at once; if
//! another node leads, Raft deposes it when the partition heals.
//!
//! A voter answered when openraft's `RaftMetrics::millis_since_quorum_ack` says so
//! (heartbeats count; the time is that of the request's sending, which under a deep
//! pipeline of appends lags behind), or when its matched log index moved since the
//! last metrics (an append it answered just now): under write load the appends keep
//! the lease fresh whatever the pipeline's depth. Both are read at each
//! change of role and on a timer (every heartbeat interval), since the metrics change
//! with every step of Raft's loop and an isolated leader's may stand still.

use std::collections::BTreeMap;
use std::time::Duration;

use openraft::{BasicNode, RaftMetrics, ServerState};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::raft::NodeId;

/// What a node knows of the leadership.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Leadership {
    /// The node's current term.
    pub term: u64,
    /// Whether this node leads in `term` and a quorum of voters answered it within the
    /// lease: only then does it act as leader towards agents and clients.
    pub leading: bool,
    /// Whether this node leads in Raft but no quorum answered it within the lease.
    pub isolated: bool,
    /// Another node that leads, with its address, when known.
    pub leader: Option<(NodeId, String)>,
}

type Metrics = RaftMetrics<NodeId, BasicNode>;

/// Follows one node's Raft metrics and decides whether it still leads.
#[derive(Debug)]
pub(crate) struct QuorumLease {
    lease: Duration,
    /// When a quorum last answered this node's leadership (or when it began: a new
    /// leader has a lease to hear from the others).
    acked_at: Option<Instant>,
    /// The term of the leadership `acked_at` is about.
    term: u64,
    /// Per voter, the matched log index last seen and when it last moved.
    matched: BTreeMap<NodeId, (Option<u64>, Instant)>,
}

impl QuorumLease {
    pub(crate) fn new(lease: Duration) -> Self {
        Self { lease, acked_at: None, term: 0, matched: BTreeMap::new() }
    }

    /// Takes in a metrics snapshot seen at `now`.
    pub(crate) fn observe(&mut self, m: &Metrics, now: Instant) {
        if !raft_leads(m) {
            self.acked_at = None;
            self.matched.clear();
            return;
        }
        if self.acked_at.is_none() || self.term != m.current_term {
            self.term = m.current_term;
            self.acked_at = Some(now);
            self.matched.clear();
        }
        if let Some(ms) = m.millis_since_quorum_ack {
            let acked = now.checked_sub(Duration::from_millis(ms)).unwrap_or(now);
            self.acked_at = self.acked_at.max(Some(acked));
        }
        // Voters whose matched index moved answered an append just now.
        let membership = m.membership_config.membership();
        let voters: Vec<NodeId> = membership.voter_ids().collect();
        let mut answered: Vec<Instant> = Vec::with_capacity(voters.len());
        for voter in &voters {
            if *voter == m.id {
                answered.push(now);
                continue;
            }
            let index = m.replication.as_ref().and_then(|r| r.get(voter).cloned().flatten()).map(|l| l.index);
            let entry = self.matched.entry(*voter).or_insert((index, self.acked_at.unwrap_or(now)));
            if entry.0 != index {
                *entry = (index, now);
            }
            answered.push(entry.1);
        }
        // The time by which a quorum (a majority of voters) had answered.
        answered.sort_unstable_by(|a, b| b.cmp(a));
        if let Some(quorum) = answered.get(voters.len() / 2) {
            self.acked_at = self.acked_at.max(Some(*quorum));
        }
    }

    /// The leadership at `now`, from the last snapshot taken in.
    pub(crate) fn view(&self, m: &Metrics, now: Instant) -> Leadership {
        let raft_leads = raft_leads(m);
        let fresh = self.acked_at.is_some_and(|t| now.saturating_duration_since(t) <= self.lease);
        let leader = match m.current_leader {
            Some(leader) if leader != m.id => m
                .membership_config
                .membership()
                .get_node(&leader)
                .map(|n| (leader, n.addr.clone()))
                .filter(|(_, addr)| !addr.is_empty()),
            _ => None,
        };
        Leadership { term: m.current_term, leading: raft_leads && fresh, isolated: raft_leads && !fresh, leader }
    }
}

/// What a change of leadership changes: the node's role, its term, who leads.
fn role_of(m: &Metrics) -> (ServerState, u64, Option<NodeId>) {
    (m.state, m.current_term, m.current_leader)
}

fn raft_leads(m: &Metrics) -> bool {
    m.state == ServerState::Leader && m.current_leader == Some(m.id)
}

/// Starts following `metrics`: the returned receiver holds the node's leadership, checked
/// on every metrics change and every `check_every`. It ends with the metrics (when Raft
/// stops), leaving the last value (set to not leading).
pub(crate) fn follow(
    mut metrics: watch::Receiver<Metrics>,
    lease: Duration,
    check_every: Duration,
) -> watch::Receiver<Leadership> {
    let mut quorum = QuorumLease::new(lease);
    let first = {
        let m = metrics.borrow_and_update();
        quorum.observe(&m, Instant::now());
        quorum.view(&m, Instant::now())
    };
    let (tx, rx) = watch::channel(first);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(check_every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut seen = role_of(&metrics.borrow());
        loop {
            tokio::select! {
                changed = metrics.changed() => {
                    if changed.is_err() {
                        tx.send_modify(|l| { l.leading = false; l.isolated = false; });
                        return;
                    }
                    // The metrics change with every step of Raft's loop; only a change of
                    // role, term or leader is acted on at once, the quorum's answers are
                    // sampled on the timer.
                    let role = role_of(&metrics.borrow_and_update());
                    if role == seen {
                        continue;
                    }
                    seen = role;
                }
                _ = tick.tick() => {}
                () = tx.closed() => return,
            }
            // The latest metrics are taken in on every wake, the timer's too: a task that
            // ran late (a busy node) judges by what Raft reports now, not by what it saw
            // before it was delayed.
            let now = Instant::now();
            let view = {
                let m = metrics.borrow_and_update();
                quorum.observe(&m, now);
                quorum.view(&m, now)
            };
            tx.send_if_modified(|now| {
                if *now == view {
                    return false;
                }
                if view.isolated && !now.isolated {
                    tracing::warn!(term = view.term, lease_ms = lease.as_millis() as u64, "no quorum of coordinators answered within the lease: no longer acting as leader towards agents and clients");
                } else if now.isolated && view.leading {
                    tracing::info!(term = view.term, "a quorum of coordinators answers again: leading");
                }
                *now = view;
                true
            });
        }
    });
    rx
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use openraft::{Membership, StoredMembership, Vote};

    use super::*;

    fn metrics(state: ServerState, leader: Option<NodeId>, term: u64, since_ack: Option<u64>) -> Metrics {
        let nodes: BTreeMap<NodeId, BasicNode> =
            (1..=3).map(|id| (id, BasicNode { addr: format!("node-{id}:7600") })).collect();
        let membership = Membership::new(vec![nodes.keys().copied().collect()], nodes);
        let mut m = Metrics::new_initial(1);
        m.state = state;
        m.current_leader = leader;
        m.current_term = term;
        m.vote = Vote::new_committed(term, leader.unwrap_or(1));
        m.millis_since_quorum_ack = since_ack;
        m.membership_config = std::sync::Arc::new(StoredMembership::new(None, membership));
        m
    }

    const LEASE: Duration = Duration::from_millis(300);

    #[test]
    fn a_leader_that_hears_from_a_quorum_leads() {
        let t0 = Instant::now();
        let mut q = QuorumLease::new(LEASE);
        let m = metrics(ServerState::Leader, Some(1), 4, Some(20));
        q.observe(&m, t0);
        let view = q.view(&m, t0 + Duration::from_millis(200));
        assert_eq!(view, Leadership { term: 4, leading: true, isolated: false, leader: None });
    }

    #[test]
    fn a_leader_no_quorum_answered_within_the_lease_is_isolated_until_one_answers_again() {
        let t0 = Instant::now();
        let mut q = QuorumLease::new(LEASE);
        let m = metrics(ServerState::Leader, Some(1), 4, Some(0));
        q.observe(&m, t0);
        // Its metrics stand still (the others do not answer): the timer finds it out.
        let later = t0 + LEASE + Duration::from_millis(1);
        assert_eq!(q.view(&m, later), Leadership { term: 4, leading: false, isolated: true, leader: None });
        // A snapshot showing the last ack long ago keeps it isolated.
        q.observe(&metrics(ServerState::Leader, Some(1), 4, Some(500)), later);
        assert!(q.view(&m, later).isolated);
        // A quorum answers again.
        let again = later + Duration::from_millis(50);
        q.observe(&metrics(ServerState::Leader, Some(1), 4, Some(5)), again);
        assert!(q.view(&m, again).leading);
    }

    /// Under write load the acknowledged requests were sent long ago (a deep pipeline),
    /// but a follower whose matched index keeps moving answers all the time.
    #[test]
    fn a_follower_whose_matched_index_moves_keeps_the_lease_fresh_under_a_deep_pipeline() {
        let t0 = Instant::now();
        let mut q = QuorumLease::new(LEASE);
        let at = |index: u64, since_ack: u64| {
            let mut m = metrics(ServerState::Leader, Some(1), 4, Some(since_ack));
            let log = |i| Some(openraft::LogId::new(openraft::CommittedLeaderId::new(4, 1), i));
            m.replication = Some(BTreeMap::from([(1, log(index)), (2, log(index)), (3, None)]));
            m
        };
        q.observe(&at(10, 0), t0);
        let mut now = t0;
        for step in 1..=10u64 {
            now += Duration::from_millis(100);
            // The acked request left 500 ms ago: past the lease on its own.
            q.observe(&at(10 + step * 50, 500), now);
            assert!(q.view(&at(10 + step * 50, 500), now).leading, "step {step}: node 2 keeps answering");
        }
        // Node 2 stops answering too: the lease runs out.
        let later = now + LEASE + Duration::from_millis(1);
        q.observe(&at(510, 500 + LEASE.as_millis() as u64), later);
        assert!(q.view(&at(510, 800), later).isolated);
    }

    #[test]
    fn a_new_leadership_gets_a_lease_before_any_quorum_answer() {
        let t0 = Instant::now();
        let mut q = QuorumLease::new(LEASE);
        let m = metrics(ServerState::Leader, Some(1), 5, None);
        q.observe(&m, t0);
        assert!(q.view(&m, t0 + Duration::from_millis(100)).leading);
        assert!(q.view(&m, t0 + LEASE * 2).isolated, "nobody answered a whole lease long");
    }

    #[test]
    fn a_follower_names_the_leader_and_never_leads() {
        let t0 = Instant::now();
        let mut q = QuorumLease::new(LEASE);
        let m = metrics(ServerState::Follower, Some(2), 6, None);
        q.observe(&m, t0);
        let view = q.view(&m, t0);
        assert_eq!(
            view,
            Leadership { term: 6, leading: false, isolated: false, leader: Some((2, "node-2:7600".into())) }
        );
    }
}
