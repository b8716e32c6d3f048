//! How a coordinator with no Raft state and a bootstrap list takes part: it forms the
//! cluster, joins the one that exists, or, if that cluster had already seen it hold a
//! log, stays out of Raft because its data was lost.
//!
//! An empty data directory looks the same whether the node never ran or lost its disk,
//! and the second must not simply start again: it would have forgotten its vote (and
//! could grant a second one in a term it already voted in, electing two leaders) and
//! the entries it acknowledged (a quorum counted on them). So before such a node
//! answers any Raft request (its [`RaftGate`] is closed meanwhile) it asks the other
//! members of its bootstrap list what they know (`RaftPeer.Probe`), and [`decide`]s:
//!
//! - **Form**: a majority of the list (this node included) answered, and none has
//!   Raft state: the first formation. The node initializes the cluster from the list.
//! - **Join**: a member has Raft state and either does not list this node (an operator
//!   removed it: it waits to be added, `flotilla cluster add ID=ADDR`), or lists it but
//!   never saw it hold a log (it started later than the others at the first
//!   formation): the gate opens and the leader replicates to it.
//! - **Lost**: a member lists this node and saw it hold a log: its data is gone. It
//!   stays out of Raft, saying so in its log, until an operator removes it
//!   (`flotilla cluster remove ID`); it then joins as a new member when added again
//!   (`flotilla cluster add ID=ADDR`), first as a learner that catches up.
//! - **Wait**: too few members answered; ask again.
//!
//! The leader records which members hold a log ([`mark_seen`]): every member whose
//! replication it has seen acknowledge an entry, itself included.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use flotilla_proto::v1;
use flotilla_proto::v1::raft_peer_client::RaftPeerClient;

use crate::node::Node;
use crate::raft::NodeId;
use crate::state::Op;

/// How long one probe of a member may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);
/// The first pause between rounds of probes (and how often the leader records members
/// that hold a log, at most).
const PROBE_EVERY: Duration = Duration::from_secs(1);
/// The longest pause between rounds of probes.
const PROBE_BACKOFF_MAX: Duration = Duration::from_secs(5);
/// How often a node waiting on its formation says so again in its log.
const REMIND_EVERY: Duration = Duration::from_secs(30);

/// Whether this node answers Raft requests. Closed while a node with no Raft state
/// finds out whether it may take part; open otherwise.
#[derive(Debug, Clone)]
pub struct RaftGate(Arc<AtomicBool>);

impl Default for RaftGate {
    fn default() -> Self {
        Self(Arc::new(AtomicBool::new(true)))
    }
}

impl RaftGate {
    /// Whether Raft requests are answered.
    pub fn is_open(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }

    /// Stops answering Raft requests.
    pub fn close(&self) {
        self.0.store(false, Ordering::Release);
    }

    /// Answers Raft requests again.
    pub fn open(&self) {
        self.0.store(true, Ordering::Release);
    }
}

/// What a member of the bootstrap list answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// It has no Raft state either.
    Uninitialized,
    /// It belongs to a cluster with these members, and has seen these hold a log.
    Cluster {
        /// Voters and learners.
        members: BTreeSet<NodeId>,
        /// Members seen holding a log.
        seen: BTreeSet<NodeId>,
    },
    /// It belongs to a cluster but cannot say more (a build before the probe).
    Initialized,
}

impl Answer {
    /// The answer a probe reply stands for.
    pub fn of(reply: &v1::ProbeReply) -> Self {
        if !reply.initialized {
            return Self::Uninitialized;
        }
        Self::Cluster {
            members: reply.voters.iter().chain(&reply.learners).copied().collect(),
            seen: reply.seen.iter().copied().collect(),
        }
    }
}

/// What a node with no Raft state does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Form the cluster from the bootstrap list.
    Form,
    /// Take part: the cluster exists and does not count on data this node lost.
    Join {
        /// Whether the cluster lists this node already (else it waits to be added).
        member: bool,
    },
    /// The cluster saw this node hold a log, which is gone: stay out.
    Lost {
        /// The member that said so.
        by: NodeId,
    },
    /// Too few members answered.
    Wait,
}

/// Decides for node `me` of bootstrap list `list` from the `answers` of the others.
pub fn decide(me: NodeId, list: &BTreeSet<NodeId>, answers: &BTreeMap<NodeId, Answer>) -> Decision {
    let mut member = false;
    let mut exists = false;
    for (&by, answer) in answers {
        match answer {
            Answer::Cluster { members, seen } => {
                if members.contains(&me) && seen.contains(&me) {
                    return Decision::Lost { by };
                }
                member |= members.contains(&me);
                exists = true;
            }
            Answer::Initialized => exists = true,
            Answer::Uninitialized => {}
        }
    }
    if exists {
        return Decision::Join { member };
    }
    let answered = 1 + answers.keys().filter(|id| **id != me && list.contains(id)).count();
    if answered > list.len() / 2 { Decision::Form } else { Decision::Wait }
}

/// Asks `addr` (member `target`) what it knows of the cluster.
async fn probe(node: &Node, target: NodeId, addr: &str) -> Result<Answer, String> {
    let channel =
        crate::raft::network::peer_channel(addr, node.security(), PROBE_TIMEOUT).map_err(|e| e.to_string())?;
    let term = node.raft().metrics().borrow().current_term;
    let mut request = tonic::Request::new(v1::ProbeRequest {
        envelope: crate::raft::network::envelope(node.id(), target, term, node.identity()),
    });
    request.set_timeout(PROBE_TIMEOUT);
    match RaftPeerClient::new(channel).probe(request).await {
        Ok(reply) => Ok(Answer::of(&reply.into_inner())),
        Err(status) if status.code() == tonic::Code::Unimplemented => Ok(Answer::Initialized),
        Err(status) => Err(format!("{}: {}", status.code(), status.message())),
    }
}

/// Finds out how node `node` (no Raft state, its gate closed) takes part in the
/// cluster of bootstrap list `members`, then opens its gate (and forms the cluster
/// when it is the first formation). Runs until it has decided; a node whose data was
/// lost keeps asking, so that it joins once an operator has removed it.
pub async fn run(node: Node, members: Vec<(NodeId, String)>) {
    let me = node.id();
    let list: BTreeSet<NodeId> = members.iter().map(|(id, _)| *id).collect();
    let mut reminded: Option<(Decision, Instant)> = None;
    let mut pause = PROBE_EVERY;
    loop {
        let asks = members.iter().filter(|(id, _)| *id != me).map(|(id, addr)| {
            let node = node.clone();
            async move { (*id, probe(&node, *id, addr).await) }
        });
        let mut answers = BTreeMap::new();
        let mut silent = Vec::new();
        for (id, answer) in futures::future::join_all(asks).await {
            match answer {
                Ok(answer) => {
                    answers.insert(id, answer);
                }
                Err(why) => silent.push(format!("node {id}: {why}")),
            }
        }
        let decision = decide(me, &list, &answers);
        match decision {
            Decision::Form => {
                node.raft_gate().open();
                match node.bootstrap(&members).await {
                    Ok(true) => tracing::info!(members = members.len(), "formed the cluster"),
                    Ok(false) => tracing::info!("existing cluster state found; bootstrap list ignored"),
                    Err(e) => tracing::warn!(error = %e, "bootstrap failed"),
                }
                return;
            }
            Decision::Join { member } => {
                node.raft_gate().open();
                if member {
                    tracing::info!("the cluster exists and lists this node, which never held a log: joining it");
                } else {
                    tracing::info!(
                        "the cluster exists and does not list this node: waiting to be added \
                         (flotilla cluster add {me}={})",
                        node.advertise()
                    );
                }
                return;
            }
            Decision::Lost { .. } | Decision::Wait => {
                let due = reminded.as_ref().is_none_or(|(said, at)| *said != decision || at.elapsed() >= REMIND_EVERY);
                if due {
                    if let Decision::Lost { by } = decision {
                        tracing::error!(
                            answered_by = by,
                            "this node has no Raft state, but the cluster saw it hold a log: its data directory \
                             was lost or wiped. It takes no part in Raft (it could vote twice in a term, or \
                             forget entries a quorum counted on) until it is removed and added again: \
                             flotilla cluster remove {me}, then flotilla cluster add {me}={}",
                            node.advertise()
                        );
                    } else {
                        tracing::info!(
                            answered = answers.len(),
                            of = members.len() - 1,
                            "waiting for a majority of the bootstrap list to answer before forming the cluster; \
                             no answer from {}",
                            silent.join("; ")
                        );
                    }
                    reminded = Some((decision, Instant::now()));
                }
                // Asked again soon, then less often: a member of another cluster logs
                // each refused probe.
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(PROBE_BACKOFF_MAX);
            }
        }
    }
}

/// What a node answers a probe with: what it has applied.
pub fn answer(node: &Node, initialized: bool) -> v1::ProbeReply {
    let metrics = node.raft().metrics().borrow().clone();
    let membership = metrics.membership_config.membership();
    v1::ProbeReply {
        initialized,
        voters: membership.voter_ids().collect(),
        learners: membership.learner_ids().collect(),
        seen: node.read_local(|s| s.members_seen().iter().copied().collect()),
        leader_id: metrics.current_leader.unwrap_or(0),
    }
}

/// On the leader: records the members that hold a log (each acknowledged an entry to
/// it, or is the leader) and are not recorded yet. Runs until Raft stops.
pub async fn mark_seen(node: Node) {
    let mut metrics = node.raft().metrics();
    loop {
        let unseen: BTreeSet<NodeId> = {
            let m = metrics.borrow_and_update();
            let leading = m.current_leader == Some(m.id) && node.leadership().borrow().leading;
            let members: BTreeSet<NodeId> = m.membership_config.membership().nodes().map(|(id, _)| *id).collect();
            let holding = m.replication.iter().flat_map(|r| r.iter()).filter(|(_, matched)| matched.is_some());
            let holding: BTreeSet<NodeId> = holding.map(|(id, _)| *id).chain([m.id]).collect();
            if leading {
                let seen = node.read_local(|s| s.members_seen().clone());
                holding.into_iter().filter(|id| members.contains(id) && !seen.contains(id)).collect()
            } else {
                BTreeSet::new()
            }
        };
        if !unseen.is_empty() {
            match node.propose(Op::MembersSeen(unseen.clone())).await {
                Ok(_) => tracing::debug!(members = ?unseen, "recorded members that hold a log"),
                Err(e) => tracing::debug!(error = %e, "recording members that hold a log"),
            }
        }
        // Once a change is seen, at most once per second: a leader under write load
        // changes its metrics with every entry.
        tokio::time::sleep(PROBE_EVERY).await;
        if metrics.changed().await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(ids: &[NodeId]) -> BTreeSet<NodeId> {
        ids.iter().copied().collect()
    }

    fn cluster(members: &[NodeId], seen: &[NodeId]) -> Answer {
        Answer::Cluster { members: set(members), seen: set(seen) }
    }

    #[test]
    fn a_first_formation_needs_a_majority_of_the_list_without_state() {
        let list = set(&[1, 2, 3]);
        assert_eq!(decide(1, &list, &BTreeMap::new()), Decision::Wait);
        let one = BTreeMap::from([(2, Answer::Uninitialized)]);
        assert_eq!(decide(1, &list, &one), Decision::Form);
        assert_eq!(decide(1, &set(&[1]), &BTreeMap::new()), Decision::Form, "a cluster of one forms alone");
        let five = set(&[1, 2, 3, 4, 5]);
        assert_eq!(decide(1, &five, &one), Decision::Wait, "two of five is no majority");
        let two = BTreeMap::from([(2, Answer::Uninitialized), (4, Answer::Uninitialized)]);
        assert_eq!(decide(1, &five, &two), Decision::Form);
    }

    #[test]
    fn a_node_the_cluster_saw_hold_a_log_lost_its_data_and_stays_out() {
        let list = set(&[1, 2, 3]);
        let answers = BTreeMap::from([(1, cluster(&[1, 2, 3], &[1, 2, 3])), (2, Answer::Uninitialized)]);
        assert_eq!(decide(3, &list, &answers), Decision::Lost { by: 1 });
        // One member that has not applied the record yet does not outvote one that has.
        let answers = BTreeMap::from([(1, cluster(&[1, 2, 3], &[1, 2])), (2, cluster(&[1, 2, 3], &[1, 2, 3]))]);
        assert_eq!(decide(3, &list, &answers), Decision::Lost { by: 2 });
    }

    #[test]
    fn a_member_that_never_held_a_log_or_was_removed_joins_the_cluster() {
        let list = set(&[1, 2, 3]);
        let late = BTreeMap::from([(1, cluster(&[1, 2, 3], &[1, 2]))]);
        assert_eq!(decide(3, &list, &late), Decision::Join { member: true }, "it started after the others formed");
        let removed = BTreeMap::from([(1, cluster(&[1, 2], &[1, 2])), (2, cluster(&[1, 2], &[1, 2]))]);
        assert_eq!(decide(3, &list, &removed), Decision::Join { member: false }, "it waits to be added");
        let older = BTreeMap::from([(1, Answer::Initialized)]);
        assert_eq!(decide(3, &list, &older), Decision::Join { member: false }, "a member too old to say more");
    }
}
