//! The Raft log and vote: openraft's `RaftLogStorage` over the storage boundary.
//!
//! Durability: `append` writes its entries in one atomic batch and hands openraft's
//! callback to the flush thread, which completes it only after the engine's flush has
//! returned. `save_vote`, `truncate` and `purge` return only after their flush. The
//! committed log id is written without a flush of its own: it becomes durable with the
//! next flush (the engine never keeps a later write while losing an earlier one), and a
//! stale committed id on restart only means re-applying less of the log before the
//! leader's next commit, never more than was committed.
//!
//! Concurrency: openraft calls the write methods one at a time (`&mut self`); log
//! readers ([`LogReader`]) read concurrently through the engine, which shows each batch
//! entirely or not at all.
//!
//! Recent entries: every entry is read again right after it is appended — by each
//! replication stream on a leader and by apply on every node — so the most recent
//! [`RECENT_ENTRIES`] are also kept in memory and served from there, not read back and
//! decoded from the engine. The cache is updated after the engine on append and before
//! it on truncate and purge, so a reader that misses it finds the same entries in the
//! engine.

use std::collections::VecDeque;
use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::sync::{Arc, Mutex, PoisonError};

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{AnyError, LogId, OptionalSend, RaftLogReader, StorageError, StorageIOError, Vote};

use super::flush::Flusher;
use super::kv::{KvEngine, KvError, WriteBatch};
use super::sled::SledEngine;
use super::spaces::{RaftLog, RaftMeta, RaftMetaKey, RaftMetaValue};
use crate::raft::identity::ClusterId;
use crate::raft::{Entry, NodeId, TypeConfig};

/// How many of the most recently appended entries are kept in memory.
pub const RECENT_ENTRIES: usize = 4096;

/// The Raft log and vote of one coordinator.
#[derive(Debug)]
pub struct LogStore<E: KvEngine = SledEngine> {
    engine: E,
    flusher: Flusher,
    recent: Arc<Mutex<RecentEntries>>,
}

/// A reader of the log, used by replication tasks while the log is being appended to.
#[derive(Debug, Clone)]
pub struct LogReader<E: KvEngine = SledEngine> {
    engine: E,
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

impl<E: KvEngine> LogStore<E> {
    /// A log store over `engine`, with its own flush thread.
    pub fn new(engine: E) -> io::Result<Self> {
        let flusher = Flusher::start(engine.clone())?;
        Ok(Self { engine, flusher, recent: Arc::default() })
    }

    /// The engine, for reading the log outside openraft (tests, tools).
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
        match self.engine.get::<RaftMeta>(&key)? {
            None => Ok(None),
            Some(RaftMetaValue::LogId(id)) => Ok(Some(id)),
            Some(other) => Err(KvError::Corrupt(format!("raft_meta {key:?} holds {other:?}, not a log id"))),
        }
    }

    async fn write_durably(&self, batch: &WriteBatch) -> Result<(), KvError> {
        self.engine.write(batch)?;
        self.flusher.flush().await
    }
}

impl<E: KvEngine> RaftLogReader<TypeConfig> for LogStore<E> {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError<NodeId>> {
        Ok(read_entries(&self.engine, &self.recent, range).map_err(|e| StorageIOError::read_logs(&e))?)
    }
}

impl<E: KvEngine> RaftLogReader<TypeConfig> for LogReader<E> {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError<NodeId>> {
        Ok(read_entries(&self.engine, &self.recent, range).map_err(|e| StorageIOError::read_logs(&e))?)
    }
}

fn read_entries<E: KvEngine>(
    engine: &E,
    recent: &Mutex<RecentEntries>,
    range: impl RangeBounds<u64>,
) -> Result<Vec<Entry>, KvError> {
    if let Some(entries) = lock(recent).get(&range) {
        return Ok(entries);
    }
    let bounds: (Bound<u64>, Bound<u64>) = (range.start_bound().cloned(), range.end_bound().cloned());
    Ok(engine.range::<RaftLog>(bounds, usize::MAX)?.into_iter().map(|(_, entry)| entry).collect())
}

impl<E: KvEngine> RaftLogStorage<TypeConfig> for LogStore<E> {
    type LogReader = LogReader<E>;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError<NodeId>> {
        let last_purged = self.meta_log_id(RaftMetaKey::LastPurged).map_err(|e| StorageIOError::read_logs(&e))?;
        let last = self.engine.last::<RaftLog>().map_err(|e| StorageIOError::read_logs(&e))?;
        let last_log_id = last.map(|(_, entry)| entry.log_id).or(last_purged);
        Ok(LogState { last_purged_log_id: last_purged, last_log_id })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        LogReader { engine: self.engine.clone(), recent: self.recent.clone() }
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError<NodeId>> {
        let mut batch = WriteBatch::new();
        batch
            .put::<RaftMeta>(&RaftMetaKey::Vote, &RaftMetaValue::Vote(*vote))
            .map_err(|e| StorageIOError::write_vote(&e))?;
        self.write_durably(&batch).await.map_err(|e| StorageIOError::write_vote(&e))?;
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
        // Durable with the next flush; see the module documentation.
        self.engine.write(&batch).map_err(|e| StorageIOError::write(&e))?;
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<NodeId>>, StorageError<NodeId>> {
        Ok(self.meta_log_id(RaftMetaKey::Committed).map_err(|e| StorageIOError::read(&e))?)
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> Result<(), StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut batch = WriteBatch::new();
        let entries: Vec<Entry> = entries.into_iter().collect();
        for entry in &entries {
            batch.put::<RaftLog>(&entry.log_id.index, entry).map_err(|e| StorageIOError::write_logs(&e))?;
        }
        self.engine.write(&batch).map_err(|e| StorageIOError::write_logs(&e))?;
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
        let mut batch = WriteBatch::new();
        batch.delete_range::<RaftLog>(log_id.index..);
        self.write_durably(&batch).await.map_err(|e| StorageIOError::write_logs(&e))?;
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        tracing::debug!(upto = %log_id, "purging the raft log");
        lock(&self.recent).purge(log_id.index);
        let mut batch = WriteBatch::new();
        batch
            .put::<RaftMeta>(&RaftMetaKey::LastPurged, &RaftMetaValue::LogId(log_id))
            .map_err(|e| StorageIOError::write_logs(&e))?;
        batch.delete_range::<RaftLog>(..=log_id.index);
        self.write_durably(&batch).await.map_err(|e| StorageIOError::write_logs(&e))?;
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
