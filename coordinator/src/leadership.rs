//! Leadership as everything that acts only on the leader sees it: the Raft leader that
//! still hears from a quorum of voters (check-quorum).
//!
//! A leader cut off from the other coordinators stays leader in Raft until it hears of
//! a higher term, which only happens once the partition heals. The majority elects a
//! new leader within an election timeout, but agents that can still reach the old one
//! would keep their sessions with it, and the new leader would count them lost and
//! make no progress. So a leader that has not heard from a quorum within its lease —
//! the longest election timeout, after which the others have certainly stopped
//! waiting for it — stops acting as leader towards agents and clients: the hub sends
//! its agent sessions away (with no hint: the agents try the other coordinators), the
//! release engine stops, and writes answer `NO_LEADER` so clients go elsewhere. Raft
//! itself is left alone: if the quorum answers again the node resumes at once; if
//! another node leads, Raft deposes it when the partition heals.
//!
//! The time a quorum last answered comes from openraft's
//! `RaftMetrics::millis_since_quorum_ack` (the leader's heartbeats count), read each
//! time the metrics change and checked again on a timer, since an isolated leader's
//! metrics may stand still.

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
}

impl QuorumLease {
    pub(crate) fn new(lease: Duration) -> Self {
        Self { lease, acked_at: None, term: 0 }
    }

    /// Takes in a metrics snapshot seen at `now`.
    pub(crate) fn observe(&mut self, m: &Metrics, now: Instant) {
        if !raft_leads(m) {
            self.acked_at = None;
            return;
        }
        if self.acked_at.is_none() || self.term != m.current_term {
            self.term = m.current_term;
            self.acked_at = Some(now);
        }
        if let Some(ms) = m.millis_since_quorum_ack {
            let acked = now.checked_sub(Duration::from_millis(ms)).unwrap_or(now);
            self.acked_at = self.acked_at.max(Some(acked));
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
        loop {
            tokio::select! {
                changed = metrics.changed() => {
                    if changed.is_err() {
                        tx.send_modify(|l| { l.leading = false; l.isolated = false; });
                        return;
                    }
                    quorum.observe(&metrics.borrow_and_update(), Instant::now());
                }
                _ = tick.tick() => {}
                () = tx.closed() => return,
            }
            let view = quorum.view(&metrics.borrow(), Instant::now());
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
