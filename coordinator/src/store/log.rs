//! The Raft log and vote: openraft's `RaftLogStorage` over the log's segment files
//! (`segments.rs`) and the key-value engine.
//!
//! Where things are: log entries in segment files; the vote, the committed log id, the
//! last purged log id and the cluster id in the engine's `raft_meta` key space.
//!
//! Durability: `append` writes its entries to the last segment and hands openraft's
//! callback to the flush thread, which completes it only after its next `fdatasync` of
//! that segment: appends made while a sync runs share the next one. `save_vote` and
//! `purge` return after the engine's flush, `truncate` after its own sync. The committed
//! log id is written to the engine without a flush of its own and may trail, or on a
//! follower run ahead of, the entries that survived a crash: it is read back as at most
//! the last log id the node holds, and a stale one only means re-applying less of the
//! log before the leader's next commit, never more than was committed.
//!
//! Concurrency: openraft calls the write methods one at a time (`&mut self`); log
//! readers ([`LogReader`]) read concurrently: they find where entries are under a read
//! lock and read the files outside it.
//!
//! Recent entries: every entry is read again right after it is appended — by each
//! replication stream on a leader and by apply on every node — so the most recent
//! [`RECENT_ENTRIES`] are also kept in memory and served from there, not read back and
//! decoded from the files. The cache is updated after the files on append and before
//! them on truncate and purge, so a reader that misses it finds the same entries in the
//! files.

use std::collections::VecDeque;
use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{AnyError, LogId, OptionalSend, RaftLogReader, StorageError, StorageIOError, Vote};

use super::flush::{FlushError, Flusher};
use super::kv::{KvEngine, KvError, WriteBatch};
use super::segments::{Recovery, SegmentError, SegmentLog};
use super::sled::SledEngine;
use super::spaces::{RaftMeta, RaftMetaKey, RaftMetaValue};
use crate::raft::identity::ClusterId;
use crate::raft::{Entry, NodeId, TypeConfig, codec};

/// How many of the most recently appended entries are kept in memory.
pub const RECENT_ENTRIES: usize = 4096;

/// The Raft log and vote of one coordinator.
#[derive(Debug)]
pub struct LogStore<E: KvEngine = SledEngine> {
    engine: E,
    segments: Arc<RwLock<SegmentLog>>,
    flusher: Flusher,
    recent: Arc<Mutex<RecentEntries>>,
}

/// A reader of the log, used by replication tasks while the log is being appended to.
#[derive(Debug, Clone)]
pub struct LogReader {
    segments: Arc<RwLock<SegmentLog>>,
    recent: Arc<Mutex<RecentEntries>>,
}

/// The most recently appended entries, with consecutive indexes ending at the end of
/// the log (empty until the first append after opening).
#[derive(Debug, Default)]
struct RecentEntries {
    entries: VecDeque<Entry>,
}

impl RecentEntries {
    fn push(&mut self, entry: Entry) {
        if self.entries.back().is_some_and(|last| last.log_id.index + 1 != entry.log_id.index) {
            self.entries.clear();
        }
        self.entries.push_back(entry);
        if self.entries.len() > RECENT_ENTRIES {
            self.entries.pop_front();
        }
    }

    /// Forgets the entries from `index` on.
    fn truncate(&mut self, index: u64) {
        while self.entries.back().is_some_and(|e| e.log_id.index >= index) {
            self.entries.pop_back();
        }
    }

    /// Forgets the entries up to `index`.
    fn purge(&mut self, index: u64) {
        while self.entries.front().is_some_and(|e| e.log_id.index <= index) {
            self.entries.pop_front();
        }
    }

    /// The entries in `range` if all of them are here.
    fn get(&self, range: &impl RangeBounds<u64>) -> Option<Vec<Entry>> {
        let first = self.entries.front()?.log_id.index;
        let end = self.entries.back()?.log_id.index + 1;
        let start = match range.start_bound() {
            Bound::Included(&i) => i,
            Bound::Excluded(&i) => i.checked_add(1)?,
            Bound::Unbounded => 0,
        };
        // The cache ends where the log ends, so an open range ends with it.
        let stop = match range.end_bound() {
            Bound::Included(&i) => i.checked_add(1)?.min(end),
            Bound::Excluded(&i) => i.min(end),
            Bound::Unbounded => end,
        };
        if start < first || start > end {
            return None;
        }
        let from = usize::try_from(start - first).ok()?;
        let to = usize::try_from(stop.max(start) - first).ok()?;
        Some(self.entries.range(from..to).cloned().collect())
    }
}

fn lock(recent: &Mutex<RecentEntries>) -> std::sync::MutexGuard<'_, RecentEntries> {
    recent.lock().unwrap_or_else(PoisonError::into_inner)
}

fn read(segments: &RwLock<SegmentLog>) -> std::sync::RwLockReadGuard<'_, SegmentLog> {
    segments.read().unwrap_or_else(PoisonError::into_inner)
}

fn write(segments: &RwLock<SegmentLog>) -> std::sync::RwLockWriteGuard<'_, SegmentLog> {
    segments.write().unwrap_or_else(PoisonError::into_inner)
}

/// Why the log could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum LogOpenError {
    /// The engine could not be read.
    #[error(transparent)]
    Kv(#[from] KvError),
    /// The segment files could not be read.
    #[error(transparent)]
    Segments(#[from] SegmentError),
    /// The flush thread could not be started.
    #[error("starting the log's flush thread: {0}")]
    Thread(#[source] io::Error),
}

impl<E: KvEngine> LogStore<E> {
    /// Opens the log: its segments in `log_dir`, its metadata in `engine`; starts its
    /// flush thread.
    pub fn open(engine: E, log_dir: &Path) -> Result<Self, LogOpenError> {
        let purged = meta_log_id(&engine, RaftMetaKey::LastPurged)?.map(|id| id.index);
        let (segments, recovery) = SegmentLog::open(log_dir, purged)?;
        report(log_dir, &recovery);
        let segments = Arc::new(RwLock::new(segments));
        let synced = segments.clone();
        let flusher = Flusher::start(move || {
            let active = read(&synced).active();
            match active {
                Some((file, path)) => {
                    file.sync_data().map_err(|source| FlushError::from(SegmentError::Io { path, source }))
                }
                None => Ok(()),
            }
        })
        .map_err(LogOpenError::Thread)?;
        Ok(Self { engine, segments, flusher, recent: Arc::default() })
    }

    /// The engine that holds the log's metadata.
    pub fn engine(&self) -> &E {
        &self.engine
    }

    /// The cluster this node's data belongs to, once known.
    pub fn cluster_id(&self) -> Result<Option<ClusterId>, KvError> {
        match self.engine.get::<RaftMeta>(&RaftMetaKey::ClusterId)? {
            None => Ok(None),
            Some(RaftMetaValue::Cluster(id)) => Ok(Some(id)),
            Some(other) => Err(KvError::Corrupt(format!("raft_meta ClusterId holds {other:?}, not a cluster id"))),
        }
    }

    /// Records the cluster this node belongs to, durably (the engine is flushed before
    /// this returns). Called once in a node's life, outside openraft's write path.
    pub fn cluster_id_writer(&self) -> impl Fn(&ClusterId) -> Result<(), KvError> + Send + Sync + 'static {
        let engine = self.engine.clone();
        move |id| {
            engine.put::<RaftMeta>(&RaftMetaKey::ClusterId, &RaftMetaValue::Cluster(id.clone()))?;
            engine.flush()
        }
    }

    fn meta_log_id(&self, key: RaftMetaKey) -> Result<Option<LogId<NodeId>>, KvError> {
        meta_log_id(&self.engine, key)
    }

    /// Writes `batch` to the engine and flushes it, off the async runtime.
    async fn write_durably(&self, batch: WriteBatch) -> Result<(), KvError> {
        let engine = self.engine.clone();
        tokio::task::spawn_blocking(move || {
            engine.write(&batch)?;
            engine.flush()
        })
        .await
        .map_err(|e| KvError::Engine(format!("storage task failed: {e}").into()))?
    }

    /// Runs `f` on the segments off the async runtime (it syncs files).
    async fn with_segments(
        &self,
        f: impl FnOnce(&mut SegmentLog) -> Result<(), SegmentError> + Send + 'static,
    ) -> Result<(), SegmentError> {
        let segments = self.segments.clone();
        tokio::task::spawn_blocking(move || f(&mut write(&segments))).await.map_err(|e| SegmentError::Io {
            path: read(&self.segments).dir().to_owned(),
            source: io::Error::other(format!("storage task failed: {e}")),
        })?
    }

    /// The last log id the log holds (not counting purged entries).
    fn last_entry_id(&self) -> Result<Option<LogId<NodeId>>, SegmentError> {
        let last = read(&self.segments).last_index();
        let Some(last) = last else { return Ok(None) };
        Ok(read_entries(&self.segments, &self.recent, last..=last)?.pop().map(|entry| entry.log_id))
    }
}

fn meta_log_id<E: KvEngine>(engine: &E, key: RaftMetaKey) -> Result<Option<LogId<NodeId>>, KvError> {
    match engine.get::<RaftMeta>(&key)? {
        None => Ok(None),
        Some(RaftMetaValue::LogId(id)) => Ok(Some(id)),
        Some(other) => Err(KvError::Corrupt(format!("raft_meta {key:?} holds {other:?}, not a log id"))),
    }
}

fn report(log_dir: &Path, recovery: &Recovery) {
    if recovery.torn_bytes > 0 || recovery.purged_segments > 0 {
        tracing::warn!(
            dir = %log_dir.display(),
            segments = recovery.segments,
            entries = recovery.records,
            torn_bytes = recovery.torn_bytes,
            purged_segments = recovery.purged_segments,
            "opened the raft log after repairing what a crash left"
        );
    } else {
        tracing::debug!(dir = %log_dir.display(), segments = recovery.segments, entries = recovery.records, "opened the raft log");
    }
}

impl<E: KvEngine> RaftLogReader<TypeConfig> for LogStore<E> {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError<NodeId>> {
        Ok(read_entries(&self.segments, &self.recent, range).map_err(|e| StorageIOError::read_logs(&e))?)
    }
}

impl RaftLogReader<TypeConfig> for LogReader {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError<NodeId>> {
        Ok(read_entries(&self.segments, &self.recent, range).map_err(|e| StorageIOError::read_logs(&e))?)
    }
}

fn read_entries(
    segments: &RwLock<SegmentLog>,
    recent: &Mutex<RecentEntries>,
    range: impl RangeBounds<u64>,
) -> Result<Vec<Entry>, SegmentError> {
    if let Some(entries) = lock(recent).get(&range) {
        return Ok(entries);
    }
    // Find the records under the lock, read and decode them outside it.
    let spans = read(segments).spans(range.start_bound().cloned(), range.end_bound().cloned());
    let mut entries = Vec::new();
    for span in spans {
        for (index, bytes) in span.read()? {
            let entry: Entry = codec::decode(&bytes).map_err(|e| SegmentError::Corrupt {
                path: read(segments).dir().to_owned(),
                what: format!("entry {index} does not decode: {e}"),
            })?;
            entries.push(entry);
        }
    }
    Ok(entries)
}

impl<E: KvEngine> RaftLogStorage<TypeConfig> for LogStore<E> {
    type LogReader = LogReader;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError<NodeId>> {
        let last_purged = self.meta_log_id(RaftMetaKey::LastPurged).map_err(|e| StorageIOError::read_logs(&e))?;
        let last = self.last_entry_id().map_err(|e| StorageIOError::read_logs(&e))?;
        Ok(LogState { last_purged_log_id: last_purged, last_log_id: last.or(last_purged) })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        LogReader { segments: self.segments.clone(), recent: self.recent.clone() }
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError<NodeId>> {
        let mut batch = WriteBatch::new();
        batch
            .put::<RaftMeta>(&RaftMetaKey::Vote, &RaftMetaValue::Vote(*vote))
            .map_err(|e| StorageIOError::write_vote(&e))?;
        self.write_durably(batch).await.map_err(|e| StorageIOError::write_vote(&e))?;
        Ok(())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError<NodeId>> {
        match self.engine.get::<RaftMeta>(&RaftMetaKey::Vote).map_err(|e| StorageIOError::read_vote(&e))? {
            None => Ok(None),
            Some(RaftMetaValue::Vote(vote)) => Ok(Some(vote)),
            Some(other) => {
                Err(StorageIOError::read_vote(AnyError::error(format!("raft_meta Vote holds {other:?}, not a vote")))
                    .into())
            }
        }
    }

    async fn save_committed(&mut self, committed: Option<LogId<NodeId>>) -> Result<(), StorageError<NodeId>> {
        let mut batch = WriteBatch::new();
        match committed {
            Some(id) => {
                batch
                    .put::<RaftMeta>(&RaftMetaKey::Committed, &RaftMetaValue::LogId(id))
                    .map_err(|e| StorageIOError::write(&e))?;
            }
            None => {
                batch.delete::<RaftMeta>(&RaftMetaKey::Committed);
            }
        }
        // Durable with the engine's next flush; see the module documentation.
        self.engine.write(&batch).map_err(|e| StorageIOError::write(&e))?;
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<NodeId>>, StorageError<NodeId>> {
        let committed = self.meta_log_id(RaftMetaKey::Committed).map_err(|e| StorageIOError::read(&e))?;
        let Some(committed) = committed else { return Ok(None) };
        // A follower may have learned of a commit beyond the entries a crash left it:
        // what it holds up to there is committed, what it lost is not known here.
        let state = self.get_log_state().await?;
        match state.last_log_id {
            Some(last) if last.index < committed.index => {
                tracing::info!(%committed, held = %last, "the committed log id on disk is past the log's end; using the log's end");
                Ok(Some(last))
            }
            None => Ok(None),
            Some(_) => Ok(Some(committed)),
        }
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> Result<(), StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let entries: Vec<Entry> = entries.into_iter().collect();
        let mut records = Vec::with_capacity(entries.len());
        for entry in &entries {
            let bytes = codec::encode(entry).map_err(|e| StorageIOError::write_logs(&e))?;
            records.push((entry.log_id.index, bytes));
        }
        // A page-cache write of a few hundred bytes per entry: done here, synced by the
        // flush thread.
        write(&self.segments).append(&records).map_err(|e| StorageIOError::write_logs(&e))?;
        let mut recent = lock(&self.recent);
        for entry in entries {
            recent.push(entry);
        }
        drop(recent);
        // The entries are readable now; openraft learns they are durable from the
        // callback, which the flush thread calls after its next flush.
        self.flusher
            .after_flush(Box::new(move |result| {
                callback.log_io_completed(result.map_err(|e| io::Error::other(e.to_string())));
            }))
            .map_err(|e| StorageIOError::write_logs(&e))?;
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        tracing::debug!(since = %log_id, "truncating the raft log");
        lock(&self.recent).truncate(log_id.index);
        let since = log_id.index;
        self.with_segments(move |segments| segments.truncate(since))
            .await
            .map_err(|e| StorageIOError::write_logs(&e))?;
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        tracing::debug!(upto = %log_id, "purging the raft log");
        lock(&self.recent).purge(log_id.index);
        // The purge is recorded before any file goes: a crash in between leaves segments
        // that the next open removes.
        let mut batch = WriteBatch::new();
        batch
            .put::<RaftMeta>(&RaftMetaKey::LastPurged, &RaftMetaValue::LogId(log_id))
            .map_err(|e| StorageIOError::write_logs(&e))?;
        self.write_durably(batch).await.map_err(|e| StorageIOError::write_logs(&e))?;
        let upto = log_id.index;
        self.with_segments(move |segments| segments.purge(upto)).await.map_err(|e| StorageIOError::write_logs(&e))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use openraft::{CommittedLeaderId, EntryPayload, LogId};

    use super::*;

    fn blank(index: u64) -> Entry {
        Entry { log_id: LogId::new(CommittedLeaderId::new(1, 1), index), payload: EntryPayload::Blank }
    }

    fn indexes(entries: Option<Vec<Entry>>) -> Option<Vec<u64>> {
        entries.map(|e| e.iter().map(|e| e.log_id.index).collect())
    }

    #[test]
    fn recent_entries_serve_only_ranges_they_hold_whole() {
        let mut recent = RecentEntries::default();
        assert_eq!(indexes(recent.get(&(0..))), None);
        for i in 5..=9 {
            recent.push(blank(i));
        }
        assert_eq!(indexes(recent.get(&(6..8))), Some(vec![6, 7]));
        assert_eq!(indexes(recent.get(&(7..))), Some(vec![7, 8, 9]));
        assert_eq!(indexes(recent.get(&(8..=20))), Some(vec![8, 9]), "the log ends where the cache ends");
        assert_eq!(indexes(recent.get(&(10..))), Some(vec![]));
        assert_eq!(indexes(recent.get(&(4..7))), None, "index 4 is only in the engine");
        assert_eq!(indexes(recent.get(&(..7))), None);
        recent.truncate(8);
        assert_eq!(indexes(recent.get(&(5..))), Some(vec![5, 6, 7]));
        recent.purge(5);
        assert_eq!(indexes(recent.get(&(5..))), None);
        assert_eq!(indexes(recent.get(&(6..))), Some(vec![6, 7]));
        recent.push(blank(12));
        assert_eq!(indexes(recent.get(&(6..))), None, "a gap empties the cache");
        assert_eq!(indexes(recent.get(&(12..))), Some(vec![12]));
        for i in 13..13 + RECENT_ENTRIES as u64 {
            recent.push(blank(i));
        }
        assert_eq!(recent.entries.len(), RECENT_ENTRIES);
        assert_eq!(indexes(recent.get(&(12..13))), None);
    }
}
