//! Which cluster a coordinator belongs to, checked on every Raft message.
//!
//! Nodes started with the same `--bootstrap` list derive the same [`ClusterId`] from it
//! and keep it on disk; a node added later with `cluster add` adopts the id of the first
//! leader that replicates to it. Every `RaftPeer` request carries the sender's cluster id
//! and the id of the node it is meant for, and a receiver refuses a request of another
//! cluster or for another node with `FAILED_PRECONDITION`. So nodes started with
//! different bootstrap lists, a data directory copied from another cluster, or an
//! address now used by another node, end up refusing each other with an error that
//! names both sides, instead of mixing two logs (which openraft cannot recover from).
//!
//! A request without a cluster id (a sender whose data predates the check) is accepted.

use std::collections::BTreeSet;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};

use flotilla_proto::v1;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::NodeId;
use crate::store::KvError;

/// The identity of a cluster: a digest of the member list it was formed from, and the
/// list itself for people reading errors.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterId {
    /// 16 hex digits of the SHA-256 of [`ClusterId::formed_from`].
    pub id: String,
    /// The bootstrap members as `ID=ADDR` in id order, comma-separated.
    pub formed_from: String,
}

impl ClusterId {
    /// The id of the cluster formed from `members`, whatever their order.
    pub fn from_bootstrap(members: &[(NodeId, String)]) -> Self {
        let mut sorted: Vec<&(NodeId, String)> = members.iter().collect();
        sorted.sort();
        let formed_from = sorted.iter().map(|(id, addr)| format!("{id}={addr}")).collect::<Vec<_>>().join(",");
        let digest = Sha256::digest(formed_from.as_bytes());
        let id = digest.iter().take(8).map(|b| format!("{b:02x}")).collect();
        Self { id, formed_from }
    }
}

impl fmt::Display for ClusterId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.formed_from.is_empty() {
            write!(f, "{}", self.id)
        } else {
            write!(f, "{} (formed from {})", self.id, self.formed_from)
        }
    }
}

/// Why a peer's request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The request was meant for another node id at this address.
    #[error(
        "node {sender} sent a request for node {wanted} to node {this} (its address now belongs to node {this}); \
         fix the membership or the node's --advertise address"
    )]
    WrongNode {
        /// This node.
        this: NodeId,
        /// The node the sender meant.
        wanted: NodeId,
        /// The sender.
        sender: NodeId,
    },
    /// The request came from another cluster.
    #[error(
        "node {sender} belongs to cluster {theirs}, node {this} to cluster {ours}: they were started with \
         different --bootstrap lists or with data directories of different clusters; refusing its request"
    )]
    OtherCluster {
        /// This node.
        this: NodeId,
        /// This node's cluster.
        ours: ClusterId,
        /// The sender.
        sender: NodeId,
        /// The sender's cluster id.
        theirs: String,
    },
    /// This node has no cluster yet and could not record the one it was joining.
    #[error("node {this} cannot record that it joins cluster {theirs} (from node {sender}): {reason}")]
    CannotJoin {
        /// This node.
        this: NodeId,
        /// The sender.
        sender: NodeId,
        /// The cluster it was joining.
        theirs: String,
        /// Why the record failed.
        reason: String,
    },
}

/// Writes a cluster id durably.
type Persist = dyn Fn(&ClusterId) -> Result<(), KvError> + Send + Sync;

/// This node's cluster identity, shared by its transport (which sends it) and its
/// `RaftPeer` service (which checks it).
#[derive(Clone)]
pub struct ClusterIdentity {
    node_id: NodeId,
    inner: Arc<Mutex<Inner>>,
    persist: Arc<Persist>,
}

#[derive(Default)]
struct Inner {
    id: Option<ClusterId>,
    /// Refusals already logged, by sender and cluster id, so each is logged once.
    reported: BTreeSet<(NodeId, String)>,
}

impl fmt::Debug for ClusterIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClusterIdentity").field("node_id", &self.node_id).field("id", &self.current()).finish()
    }
}

impl ClusterIdentity {
    /// The identity of node `node_id`, `stored` on disk (if any), kept with `persist`.
    pub fn new(
        node_id: NodeId,
        stored: Option<ClusterId>,
        persist: impl Fn(&ClusterId) -> Result<(), KvError> + Send + Sync + 'static,
    ) -> Self {
        Self {
            node_id,
            inner: Arc::new(Mutex::new(Inner { id: stored, reported: BTreeSet::new() })),
            persist: Arc::new(persist),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The cluster this node belongs to, once known.
    pub fn current(&self) -> Option<ClusterId> {
        self.lock().id.clone()
    }

    /// The id sent with this node's requests (empty while unknown).
    pub fn wire_id(&self) -> String {
        self.lock().id.as_ref().map(|c| c.id.clone()).unwrap_or_default()
    }

    /// Takes the identity of the cluster `members` form, for a node about to form it.
    /// A node that already has one keeps it (it is the cluster this node's data belongs
    /// to) and the mismatch, if any, is returned for the caller to report.
    pub fn claim(&self, members: &[(NodeId, String)]) -> Result<Result<(), ClusterId>, KvError> {
        let wanted = ClusterId::from_bootstrap(members);
        let mut inner = self.lock();
        match &inner.id {
            Some(existing) if existing.id == wanted.id => Ok(Ok(())),
            Some(existing) => Ok(Err(existing.clone())),
            None => {
                (self.persist)(&wanted)?;
                inner.id = Some(wanted);
                Ok(Ok(()))
            }
        }
    }

    /// Checks a request's envelope. A node that has no identity yet adopts the sender's
    /// when `adopt` (requests that replicate the log to it: it is joining that cluster).
    pub fn check(&self, envelope: Option<&v1::RaftEnvelope>, adopt: bool) -> Result<(), Refusal> {
        let Some(env) = envelope else { return Ok(()) };
        let refusal = if env.to_node_id != 0 && env.to_node_id != self.node_id {
            Refusal::WrongNode { this: self.node_id, wanted: env.to_node_id, sender: env.from_node_id }
        } else {
            let mut inner = self.lock();
            match &inner.id {
                _ if env.cluster_id.is_empty() => return Ok(()),
                Some(ours) if ours.id == env.cluster_id => return Ok(()),
                Some(ours) => Refusal::OtherCluster {
                    this: self.node_id,
                    ours: ours.clone(),
                    sender: env.from_node_id,
                    theirs: env.cluster_id.clone(),
                },
                None if !adopt => return Ok(()),
                None => {
                    let joined = ClusterId { id: env.cluster_id.clone(), formed_from: String::new() };
                    match (self.persist)(&joined) {
                        Ok(()) => {
                            tracing::info!(cluster = %joined, leader = env.from_node_id, "joined the cluster");
                            inner.id = Some(joined);
                            return Ok(());
                        }
                        // Not adopted: the request is refused and the leader retries.
                        Err(e) => Refusal::CannotJoin {
                            this: self.node_id,
                            sender: env.from_node_id,
                            theirs: env.cluster_id.clone(),
                            reason: e.to_string(),
                        },
                    }
                }
            }
        };
        let key = (env.from_node_id, format!("{}/{}", env.cluster_id, env.to_node_id));
        if self.lock().reported.insert(key) {
            tracing::error!("{refusal}");
        }
        Err(refusal)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn members(list: &[(NodeId, &str)]) -> Vec<(NodeId, String)> {
        list.iter().map(|(id, a)| (*id, (*a).to_owned())).collect()
    }

    fn envelope(from: NodeId, to: NodeId, cluster: &str) -> v1::RaftEnvelope {
        v1::RaftEnvelope { from_node_id: from, to_node_id: to, cluster_id: cluster.to_owned(), ..Default::default() }
    }

    #[test]
    fn the_id_depends_on_the_members_not_their_order() {
        let a = ClusterId::from_bootstrap(&members(&[(2, "b:1"), (1, "a:1"), (3, "c:1")]));
        let b = ClusterId::from_bootstrap(&members(&[(1, "a:1"), (3, "c:1"), (2, "b:1")]));
        assert_eq!(a, b);
        assert_eq!(a.formed_from, "1=a:1,2=b:1,3=c:1");
        assert_eq!(a.id.len(), 16);
        assert_ne!(a.id, ClusterId::from_bootstrap(&members(&[(1, "a:1"), (2, "b:1")])).id);
        assert_ne!(a.id, ClusterId::from_bootstrap(&members(&[(1, "a:1"), (2, "b:1"), (3, "c:2")])).id);
    }

    #[test]
    fn requests_of_another_cluster_or_for_another_node_are_refused() {
        let saved: Arc<Mutex<Vec<ClusterId>>> = Arc::default();
        let log = saved.clone();
        let identity = ClusterIdentity::new(2, None, move |c| {
            log.lock().unwrap().push(c.clone());
            Ok(())
        });
        let ours = ClusterId::from_bootstrap(&members(&[(1, "a:1"), (2, "b:1")]));
        assert_eq!(identity.claim(&members(&[(2, "b:1"), (1, "a:1")])).unwrap(), Ok(()));
        assert_eq!(identity.wire_id(), ours.id);
        assert_eq!(*saved.lock().unwrap(), vec![ours.clone()]);

        assert_eq!(identity.check(Some(&envelope(1, 2, &ours.id)), true), Ok(()));
        assert_eq!(identity.check(Some(&envelope(1, 2, "")), true), Ok(()), "a sender without an id");
        let refused = identity.check(Some(&envelope(3, 2, "0123456789abcdef")), true).unwrap_err();
        assert!(matches!(&refused, Refusal::OtherCluster { sender: 3, theirs, .. } if theirs == "0123456789abcdef"));
        let message = refused.to_string();
        assert!(message.contains("1=a:1,2=b:1") && message.contains("different --bootstrap lists"), "{message}");
        assert_eq!(
            identity.check(Some(&envelope(1, 3, &ours.id)), true),
            Err(Refusal::WrongNode { this: 2, wanted: 3, sender: 1 })
        );
        // A node with data keeps its cluster when given another bootstrap list.
        assert_eq!(identity.claim(&members(&[(2, "b:1")])).unwrap(), Err(ours));
        assert_eq!(saved.lock().unwrap().len(), 1);
    }

    #[test]
    fn a_new_node_joins_the_cluster_that_replicates_to_it() {
        let identity = ClusterIdentity::new(4, None, |_| Ok(()));
        assert_eq!(identity.check(Some(&envelope(1, 4, "aaaaaaaaaaaaaaaa")), false), Ok(()), "a vote adopts nothing");
        assert_eq!(identity.current(), None);
        assert_eq!(identity.check(Some(&envelope(1, 4, "aaaaaaaaaaaaaaaa")), true), Ok(()));
        assert_eq!(identity.wire_id(), "aaaaaaaaaaaaaaaa");
        assert!(identity.check(Some(&envelope(9, 4, "bbbbbbbbbbbbbbbb")), true).is_err());

        let unwritable = ClusterIdentity::new(5, None, |_| Err(KvError::Corrupt("disk full".to_owned())));
        let refused = unwritable.check(Some(&envelope(1, 5, "aaaaaaaaaaaaaaaa")), true).unwrap_err();
        assert!(matches!(&refused, Refusal::CannotJoin { reason, .. } if reason.contains("disk full")), "{refused}");
        assert_eq!(unwritable.current(), None, "nothing adopted that is not on disk");
    }
}
