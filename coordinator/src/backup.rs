//! Backups of a coordinator's state and restores from them (the disaster-recovery
//! path: every coordinator's data lost, or a cluster moved to new machines).
//!
//! A backup is a coordinator snapshot (`store/snapshot.rs`: magic, JSON header with the
//! format version, the last log id and the membership, then the state), made from the
//! answering node's applied state by `Cluster.Backup` and written by
//! `flotilla-coordinator snapshot save`. It holds every release with its events, the
//! fleet and the audit trail as of one log index.
//!
//! [`restore`] turns a backup into a fresh data directory for one node of a new cluster
//! (offline, like `etcdutl snapshot restore`): the state machine starts from the backup
//! with the membership of the node's `bootstrap` list, the cluster identity of that list
//! is recorded, and the node's vote is set to the backup's term (or `min_term`, when
//! higher), so the first election of the restored cluster starts a term above every
//! entry it holds. Every node of the new cluster is restored from the same file with the
//! same list and then started; they elect a leader and carry on from the backup.

use std::io::{Cursor, Write as _};
use std::path::{Path, PathBuf};

use flotilla_proto::v1;
use openraft::storage::{RaftLogStorage, RaftStateMachine};
use openraft::{BasicNode, Membership, SnapshotMeta, StoredMembership, Vote};

use crate::config::CoordinatorConfig;
use crate::error::CoordinatorError;
use crate::node::Node;
use crate::raft::NodeId;
use crate::raft::identity::ClusterIdentity;
use crate::store::{self, snapshot};

/// Bytes per `Cluster.Backup` chunk.
pub const CHUNK: usize = 1024 * 1024;

/// A backup of `node`'s applied state and what it holds, encoded straight from the
/// state under its read lock (as snapshots are built: the state is never copied).
pub fn make(node: &Node) -> Result<(Vec<u8>, v1::BackupInfo), CoordinatorError> {
    node.read_applied(|applied| encode_backup(node.id(), applied))
}

fn encode_backup(node_id: NodeId, applied: &store::Applied) -> Result<(Vec<u8>, v1::BackupInfo), CoordinatorError> {
    let last = applied.last_applied.ok_or_else(|| {
        CoordinatorError::precondition(
            flotilla_proto::status::Reason::StateConflict,
            "this node has applied nothing yet: there is nothing to back up",
        )
    })?;
    let meta = SnapshotMeta {
        last_log_id: Some(last),
        last_membership: applied.membership.clone(),
        snapshot_id: format!("backup-{node_id}-{}-{}", last.leader_id.term, last.index),
    };
    let bytes = snapshot::encode(&meta, &applied.state, 0)
        .map_err(|e| CoordinatorError::Internal(format!("encoding the backup: {e}")))?;
    let info = v1::BackupInfo {
        node_id,
        last_log_index: last.index,
        last_log_term: last.leader_id.term,
        format_version: store::FORMAT_VERSION,
        size_bytes: bytes.len() as u64,
        releases: applied.state.releases().count() as u64,
        hosts: applied.state.fleet().agents().len() as u64,
    };
    Ok((bytes, info))
}

/// Why a backup cannot be restored.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    /// The file is not a backup this build reads.
    #[error("{path}: {source}")]
    Unreadable {
        /// The backup file.
        path: PathBuf,
        /// Why.
        source: snapshot::SnapshotError,
    },
    /// The target data directory already holds data.
    #[error(
        "data directory {0} is not empty: a restore makes a new node and never overwrites one; move the old directory away first"
    )]
    DataDirInUse(PathBuf),
    /// The configuration lacks what a restore needs.
    #[error("{0}")]
    Config(String),
    /// Reading, writing or the store failed.
    #[error("{0}")]
    Io(String),
}

/// What a restore wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Restored {
    /// The last log index of the restored state.
    pub last_log_index: u64,
    /// The term the restored node starts from (its first election is one above).
    pub term: u64,
    /// Releases in the restored state.
    pub releases: usize,
    /// The members of the new cluster.
    pub members: Vec<(NodeId, String)>,
}

/// Reads and checks a backup file: magic, format version, the whole state decodes.
pub fn read(path: &Path) -> Result<(snapshot::SnapshotHeader, crate::state::State), RestoreError> {
    let bytes = std::fs::read(path).map_err(|e| RestoreError::Io(format!("reading {}: {e}", path.display())))?;
    snapshot::decode(&bytes).map_err(|source| RestoreError::Unreadable { path: path.to_owned(), source })
}

/// Writes a fresh data directory for `config`'s node from the backup at `backup` (see
/// the module documentation). The directory must not hold anything yet.
pub async fn restore(backup: &Path, config: &CoordinatorConfig, min_term: u64) -> Result<Restored, RestoreError> {
    let members = config.bootstrap_pairs();
    if members.is_empty() {
        return Err(RestoreError::Config(
            "a restore needs the new cluster's `bootstrap` list (every node restored with the same one)".into(),
        ));
    }
    let data_dir = &config.data_dir;
    let in_use = std::fs::read_dir(data_dir).map(|mut d| d.next().is_some()).unwrap_or(false);
    if in_use {
        return Err(RestoreError::DataDirInUse(data_dir.clone()));
    }
    let (header, state) = read(backup)?;
    let last = header.meta.last_log_id.ok_or_else(|| RestoreError::Unreadable {
        path: backup.to_owned(),
        source: snapshot::SnapshotError::Malformed("the backup has no last log id".into()),
    })?;
    let voters: std::collections::BTreeMap<NodeId, BasicNode> =
        members.iter().map(|(id, addr)| (*id, BasicNode { addr: addr.clone() })).collect();
    let voter_ids = voters.keys().copied().collect();
    let membership = Membership::new(vec![voter_ids], voters);
    let meta = SnapshotMeta {
        last_log_id: Some(last),
        last_membership: StoredMembership::new(Some(last), membership),
        snapshot_id: format!("restored-{}-{}", last.leader_id.term, last.index),
    };
    let bytes =
        snapshot::encode(&meta, &state, 0).map_err(|e| RestoreError::Io(format!("encoding the snapshot: {e}")))?;
    let failed =
        |what: &str, e: &dyn std::fmt::Display| RestoreError::Io(format!("{what} in {}: {e}", data_dir.display()));

    let (mut log, mut machine) = store::open(data_dir).map_err(|e| failed("opening the store", &e))?;
    machine.install_snapshot(&meta, Box::new(Cursor::new(bytes))).await.map_err(|e| failed("writing the state", &e))?;
    let term = last.leader_id.term.max(min_term);
    log.save_vote(&Vote::new(term, config.node_id)).await.map_err(|e| failed("writing the vote", &e))?;
    let identity = ClusterIdentity::new(config.node_id, None, log.cluster_id_writer());
    if let Err(other) = identity.claim(&members).map_err(|e| failed("recording the cluster id", &e))? {
        return Err(RestoreError::Io(format!("{} already belongs to cluster {other}", data_dir.display())));
    }
    let marker = data_dir.join("RESTORED");
    let note = format!(
        "restored from {} (log index {}, term {}); started at term {term}\n",
        backup.display(),
        last.index,
        last.leader_id.term
    );
    std::fs::File::create(&marker)
        .and_then(|mut f| f.write_all(note.as_bytes()).and_then(|()| f.sync_all()))
        .map_err(|e| failed("writing RESTORED", &e))?;
    Ok(Restored { last_log_index: last.index, term, releases: state.releases().count(), members })
}
