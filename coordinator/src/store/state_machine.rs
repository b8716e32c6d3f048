//! The state machine: Flotilla's [`State`] in memory, made durable by snapshot files.
//!
//! Apply runs [`State::apply`] for normal entries and records membership entries; it
//! writes nothing to disk. What is durable is the current snapshot (a file under
//! `snapshots/`, named by the `sm_meta` record) plus the Raft log. On start the state
//! is loaded from the snapshot and `applied_state` reports the snapshot's last log id;
//! openraft then re-applies the log from there up to the committed log id it reads from
//! the log store, and the leader's commits bring it the rest of the way.
//!
//! A snapshot is switched in by writing its file (temp file, fsync, rename), then
//! pointing the `sm_meta` record at it and flushing; older files are removed after
//! that. Installing a received snapshot persists it the same way before the in-memory
//! state is replaced, under one write lock, together with the last applied log id and
//! membership.

use std::fmt;
use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard};

use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{
    BasicNode, EntryPayload, LogId, OptionalSend, RaftSnapshotBuilder, SnapshotMeta, StorageError, StorageIOError,
    StoredMembership,
};

use super::StoreError;
use super::kv::KvEngine;
use super::sled::SledEngine;
use super::snapshot::{self, SnapshotDir};
use super::spaces::{SmMeta, SmMetaKey, SnapshotRecord};
use crate::raft::{Entry, NodeId, TypeConfig};
use crate::state::{Response, State};

/// The applied state and where it stands in the log.
#[derive(Debug, Clone, Default)]
pub struct Applied {
    /// Flotilla's replicated state.
    pub state: State,
    /// The last log id applied to `state`.
    pub last_applied: Option<LogId<NodeId>>,
    /// The last membership applied.
    pub membership: StoredMembership<NodeId, BasicNode>,
}

/// A handle on the applied state, shared by the state machine and the node's readers.
/// Readers hold the lock only for the closure they pass; apply waits for them.
#[derive(Clone, Default)]
pub struct SharedState {
    inner: Arc<RwLock<Applied>>,
}

impl fmt::Debug for SharedState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedState").field("last_applied", &self.last_applied()).finish_non_exhaustive()
    }
}

impl SharedState {
    fn new(applied: Applied) -> Self {
        Self { inner: Arc::new(RwLock::new(applied)) }
    }

    /// Runs `f` on the applied state.
    pub fn read<T>(&self, f: impl FnOnce(&State) -> T) -> T {
        f(&self.guard().state)
    }

    /// The last log id applied to the state.
    pub fn last_applied(&self) -> Option<LogId<NodeId>> {
        self.guard().last_applied
    }

    /// The last membership applied.
    pub fn membership(&self) -> StoredMembership<NodeId, BasicNode> {
        self.guard().membership.clone()
    }

    /// Runs `f` on everything applied (state, last log id, membership) as of one index,
    /// under the read lock: for encoding it whole without copying it first.
    pub fn read_applied<T>(&self, f: impl FnOnce(&Applied) -> T) -> T {
        f(&self.guard())
    }

    /// A copy of everything applied.
    pub fn snapshot(&self) -> Applied {
        self.guard().clone()
    }

    fn guard(&self) -> RwLockReadGuard<'_, Applied> {
        // Apply never panics half-way through a state change it cannot undo.
        self.inner.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn replace(&self, applied: Applied) {
        *self.inner.write().unwrap_or_else(PoisonError::into_inner) = applied;
    }
}

/// The state machine of one coordinator.
#[derive(Debug, Clone)]
pub struct StateMachineStore<E: KvEngine = SledEngine> {
    inner: Arc<Inner<E>>,
}

/// Builds snapshots of a [`StateMachineStore`].
#[derive(Debug)]
pub struct SnapshotBuilder<E: KvEngine = SledEngine> {
    inner: Arc<Inner<E>>,
}

#[derive(Debug)]
struct Inner<E> {
    engine: E,
    dir: SnapshotDir,
    applied: SharedState,
    /// Serializes building and installing snapshots.
    snapshots: tokio::sync::Mutex<Snapshots>,
}

#[derive(Debug)]
struct Snapshots {
    current: Option<SnapshotRecord>,
    next_seq: u64,
    /// The size of the last snapshot built, to allocate the next one at once.
    last_size: usize,
}

impl<E: KvEngine> StateMachineStore<E> {
    /// Opens the state machine over `engine` with snapshot files in `dir`: loads the
    /// current snapshot, if any, and removes leftover files.
    #[tracing::instrument(skip_all, fields(dir = %dir.display()))]
    pub fn open(engine: E, dir: PathBuf) -> Result<Self, StoreError> {
        let dir = SnapshotDir::open(dir.clone()).map_err(|source| StoreError::Io { path: dir, source })?;
        let current = engine.get::<SmMeta>(&SmMetaKey::CurrentSnapshot)?;
        let applied = match &current {
            None => Applied::default(),
            Some(record) => load(&dir, record)?,
        };
        let keep = current.as_ref().map(SnapshotRecord::file_name);
        dir.remove_all_but(keep.as_deref()).map_err(|source| StoreError::Io { path: dir.path().to_owned(), source })?;
        tracing::info!(
            snapshot = ?current.as_ref().map(|r| &r.meta.snapshot_id),
            last_applied = ?applied.last_applied,
            "state machine loaded"
        );
        let next_seq = current.as_ref().map_or(1, |r| r.seq + 1);
        Ok(Self {
            inner: Arc::new(Inner {
                engine,
                dir,
                applied: SharedState::new(applied),
                snapshots: tokio::sync::Mutex::new(Snapshots { current, next_seq, last_size: 0 }),
            }),
        })
    }

    /// The applied state, for the node's reads.
    pub fn shared_state(&self) -> SharedState {
        self.inner.applied.clone()
    }

    /// The directory holding snapshot files.
    pub fn snapshot_dir(&self) -> &Path {
        self.inner.dir.path()
    }
}

/// Loads the snapshot `record` points at.
fn load(dir: &SnapshotDir, record: &SnapshotRecord) -> Result<Applied, StoreError> {
    let path = dir.file(&record.file_name());
    let bytes = dir.read(&record.file_name()).map_err(|source| StoreError::Io { path: path.clone(), source })?;
    let (header, state) =
        snapshot::decode(&bytes).map_err(|source| StoreError::Snapshot { path: path.clone(), source })?;
    if header.meta != record.meta {
        return Err(StoreError::Snapshot {
            path,
            source: snapshot::SnapshotError::Malformed(format!(
                "the file holds snapshot {} but the store expects {}",
                header.meta, record.meta
            )),
        });
    }
    Ok(Applied { state, last_applied: record.meta.last_log_id, membership: record.meta.last_membership.clone() })
}

/// Makes `bytes` the current snapshot on disk: file first, then the record, then the
/// older files go.
fn persist<E: KvEngine>(
    engine: &E,
    dir: &SnapshotDir,
    record: &SnapshotRecord,
    bytes: &[u8],
) -> Result<(), StoreError> {
    let name = record.file_name();
    dir.write_atomically(&name, bytes).map_err(|source| StoreError::Io { path: dir.file(&name), source })?;
    engine.put::<SmMeta>(&SmMetaKey::CurrentSnapshot, record)?;
    engine.flush()?;
    if let Err(e) = dir.remove_all_but(Some(&name)) {
        // The new snapshot is in place; leftovers are removed on the next start.
        tracing::warn!(dir = %dir.path().display(), error = %e, "could not remove older snapshots");
    }
    Ok(())
}

/// Runs blocking file and engine work off the async runtime.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(f).await.map_err(|e| StoreError::Task(e.to_string()))?
}

impl<E: KvEngine> RaftStateMachine<TypeConfig> for StateMachineStore<E> {
    type SnapshotBuilder = SnapshotBuilder<E>;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<NodeId>>, StoredMembership<NodeId, BasicNode>), StorageError<NodeId>> {
        let applied = self.inner.applied.guard();
        Ok((applied.last_applied, applied.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Response>, StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut applied = self.inner.applied.inner.write().unwrap_or_else(PoisonError::into_inner);
        let entries = entries.into_iter();
        let mut responses = Vec::with_capacity(entries.size_hint().0);
        for entry in entries {
            let response = match entry.payload {
                EntryPayload::Blank => Response::None,
                EntryPayload::Normal(command) => {
                    applied.state.apply(entry.log_id.index, entry.log_id.leader_id.term, &command)
                }
                EntryPayload::Membership(membership) => {
                    let members = membership.nodes().map(|(id, _)| *id).collect();
                    applied.state.keep_members_seen(&members);
                    applied.membership = StoredMembership::new(Some(entry.log_id), membership);
                    Response::None
                }
            };
            applied.last_applied = Some(entry.log_id);
            responses.push(response);
        }
        Ok(responses)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        SnapshotBuilder { inner: self.inner.clone() }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError<NodeId>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    #[tracing::instrument(skip_all, fields(snapshot = %meta))]
    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError<NodeId>> {
        let failed = |e: StoreError| StorageIOError::write_snapshot(Some(meta.signature()), &e);
        let mut snapshots = self.inner.snapshots.lock().await;
        let record = SnapshotRecord { seq: snapshots.next_seq, meta: meta.clone() };
        snapshots.next_seq += 1;
        let bytes = snapshot.into_inner();
        let inner = self.inner.clone();
        let persisted = record.clone();
        let state = blocking(move || {
            let (header, state) = snapshot::decode(&bytes)
                .map_err(|source| StoreError::Snapshot { path: PathBuf::from("received snapshot"), source })?;
            if header.meta != persisted.meta {
                return Err(StoreError::Snapshot {
                    path: PathBuf::from("received snapshot"),
                    source: snapshot::SnapshotError::Malformed(format!(
                        "its header describes snapshot {} but it was sent as {}",
                        header.meta, persisted.meta
                    )),
                });
            }
            persist(&inner.engine, &inner.dir, &persisted, &bytes)?;
            Ok(state)
        })
        .await
        .map_err(failed)?;
        self.inner.applied.replace(Applied {
            state,
            last_applied: meta.last_log_id,
            membership: meta.last_membership.clone(),
        });
        tracing::info!(file = %self.inner.dir.file(&record.file_name()).display(), "snapshot installed");
        snapshots.current = Some(record);
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError<NodeId>> {
        let snapshots = self.inner.snapshots.lock().await;
        let Some(record) = snapshots.current.clone() else { return Ok(None) };
        let dir = self.inner.dir.clone();
        let name = record.file_name();
        let bytes =
            blocking(move || dir.read(&name).map_err(|source| StoreError::Io { path: dir.file(&name), source }))
                .await
                .map_err(|e| StorageIOError::read_snapshot(Some(record.meta.signature()), &e))?;
        Ok(Some(Snapshot { meta: record.meta, snapshot: Box::new(Cursor::new(bytes)) }))
    }
}

impl<E: KvEngine> RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder<E> {
    #[tracing::instrument(skip_all)]
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError<NodeId>> {
        let mut snapshots = self.inner.snapshots.lock().await;
        let seq = snapshots.next_seq;
        snapshots.next_seq += 1;
        let current = snapshots.current.as_ref().map(|c| c.meta.last_log_id);
        let size_hint = snapshots.last_size;
        let inner = self.inner.clone();
        let (record, bytes, newer_exists) = blocking(move || {
            // Encoded straight from the applied state under its read lock: apply waits
            // while it is encoded, but the state is never copied.
            let (meta, bytes) = {
                let applied = inner.applied.guard();
                let snapshot_id = match applied.last_applied {
                    Some(id) => format!("{}-{}-{seq}", id.leader_id.term, id.index),
                    None => format!("0-0-{seq}"),
                };
                let meta = SnapshotMeta {
                    last_log_id: applied.last_applied,
                    last_membership: applied.membership.clone(),
                    snapshot_id,
                };
                let bytes = snapshot::encode(&meta, &applied.state, size_hint).map_err(StoreError::Encode)?;
                (meta, bytes)
            };
            let record = SnapshotRecord { seq, meta };
            // A snapshot installed while this one was waiting for the lock may be newer.
            let newer_exists = current.is_some_and(|last| last > record.meta.last_log_id);
            if !newer_exists {
                persist(&inner.engine, &inner.dir, &record, &bytes)?;
            }
            Ok((record, bytes, newer_exists))
        })
        .await
        .map_err(|e| StorageIOError::write_snapshot(None, &e))?;
        let meta = record.meta.clone();
        snapshots.last_size = bytes.len();
        if !newer_exists {
            tracing::info!(
                snapshot = %meta,
                bytes = bytes.len(),
                file = %self.inner.dir.file(&record.file_name()).display(),
                "snapshot built"
            );
            snapshots.current = Some(record);
        }
        Ok(Snapshot { meta, snapshot: Box::new(Cursor::new(bytes)) })
    }
}
