//! Durable storage of the Raft log, vote and state machine.
//!
//! A coordinator's data directory holds:
//!
//! ```text
//! <data>/db/                     the key-value engine (sled): format, raft_meta, sm_meta
//! <data>/log/<first index>.seg   the Raft log's segment files (`segments.rs`)
//! <data>/snapshots/<seq>.snap    the current state machine snapshot (one file)
//! ```
//!
//! [`open`] checks the on-disk format version (migrating older ones), then returns
//! openraft's two storage halves: [`LogStore`] (log and vote, `log.rs`) and
//! [`StateMachineStore`] (the state machine and its snapshots, `state_machine.rs`). The
//! log's entries are in segment files written for it: an append is one write and the
//! appends of a moment share one `fdatasync`. Everything else sits on the storage
//! boundary in `kv.rs` ([`KvEngine`], typed [`KeySpace`]s); `sled.rs` implements it.

use std::io;
use std::path::{Path, PathBuf};

pub mod flush;
pub mod kv;
pub mod log;
pub mod segments;
pub mod sled;
pub mod snapshot;
pub mod spaces;
pub mod state_machine;

pub use self::sled::SledEngine;
pub use kv::{KeySpace, KvEngine, KvError, ValueEncoding, WriteBatch};
pub use log::{LogOpenError, LogReader, LogStore};
pub use spaces::FORMAT_VERSION;
pub use state_machine::{Applied, SharedState, SnapshotBuilder, StateMachineStore};

use crate::state::State;
use spaces::{Format, FormatKey, FormatRecord, RaftLog, RaftMeta, SmMeta};

/// The engine's directory inside a data directory.
pub const DB_DIR: &str = "db";
/// The snapshot directory inside a data directory.
pub const SNAPSHOT_DIR: &str = "snapshots";
pub use segments::LOG_DIR;

/// Why storage could not be opened or written.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A file or directory operation failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// The key-value engine failed.
    #[error(transparent)]
    Kv(#[from] KvError),
    /// The data is in an on-disk format this build does not read.
    #[error(
        "the data in {} is in on-disk format version {found}, but this flotilla-coordinator ({}) reads format \
         version {supported} only; {}",
        path.display(),
        env!("CARGO_PKG_VERSION"),
        format_advice(*found, *supported)
    )]
    UnsupportedFormat {
        /// The data directory.
        path: PathBuf,
        /// The version found on disk.
        found: u32,
        /// The version this build reads.
        supported: u32,
    },
    /// The engine holds data but no format record: not written by a coordinator, or
    /// damaged.
    #[error("the data in {} has no format record; it was not written by flotilla-coordinator or is damaged", path.display())]
    MissingFormat {
        /// The data directory.
        path: PathBuf,
    },
    /// A snapshot file cannot be used.
    #[error("snapshot {}: {source}", path.display())]
    Snapshot {
        /// The snapshot file.
        path: PathBuf,
        /// What is wrong with it.
        #[source]
        source: snapshot::SnapshotError,
    },
    /// A snapshot could not be encoded.
    #[error("encoding a snapshot: {0}")]
    Encode(#[source] snapshot::SnapshotError),
    /// The Raft log could not be opened.
    #[error(transparent)]
    Log(#[from] LogOpenError),
    /// The Raft log's segments could not be written while migrating the format.
    #[error(transparent)]
    Segments(#[from] segments::SegmentError),
    /// A blocking storage task failed to run.
    #[error("storage task failed: {0}")]
    Task(String),
}

fn format_advice(found: u32, supported: u32) -> &'static str {
    if found > supported {
        "it was written by a newer release: run that release (or newer) on this data directory"
    } else {
        "there is no migration from that version: restore a backup or resync this node from the cluster"
    }
}

/// Opens (creating if needed) the storage in `data_dir`.
#[tracing::instrument(skip_all, fields(data_dir = %data_dir.as_ref().display()))]
pub fn open(data_dir: impl AsRef<Path>) -> Result<(LogStore, StateMachineStore), StoreError> {
    let data_dir = data_dir.as_ref();
    let db_dir = data_dir.join(DB_DIR);
    std::fs::create_dir_all(&db_dir).map_err(|source| StoreError::Io { path: db_dir.clone(), source })?;
    let engine = SledEngine::open(&db_dir)?;
    open_with(engine, data_dir, data_dir.join(SNAPSHOT_DIR))
}

/// Opens the storage over any engine, with snapshot files in `snapshot_dir` and the Raft
/// log in `data_dir`/[`LOG_DIR`].
pub fn open_with<E: KvEngine>(
    engine: E,
    data_dir: &Path,
    snapshot_dir: PathBuf,
) -> Result<(LogStore<E>, StateMachineStore<E>), StoreError> {
    let log_dir = data_dir.join(LOG_DIR);
    check_format(&engine, data_dir, &log_dir)?;
    let state_machine = StateMachineStore::open(engine.clone(), snapshot_dir)?;
    let log = LogStore::open(engine, &log_dir)?;
    Ok((log, state_machine))
}

/// Checks the format record, writing it (durably) into an empty store and migrating an
/// older one.
fn check_format<E: KvEngine>(engine: &E, data_dir: &Path, log_dir: &Path) -> Result<(), StoreError> {
    match engine.get::<Format>(&FormatKey::Version)? {
        Some(record) if record.version == FORMAT_VERSION => Ok(()),
        Some(record) if record.version >= spaces::MIN_READABLE_FORMAT && record.version < FORMAT_VERSION => {
            // Older log entries are valid entries of this format, and snapshots carry
            // their own version and are migrated as they are read. Up to format 5 the
            // log moves from the engine to segment files, and the format record says
            // so in the same atomic write that removes it from the engine.
            let moved = if record.version < SEGMENTS_FORMAT { move_log_to_segments(engine, log_dir)? } else { 0 };
            let mut batch = WriteBatch::new();
            if record.version < SEGMENTS_FORMAT {
                batch.delete_range::<RaftLog>(..);
            }
            batch.put::<Format>(&FormatKey::Version, &FormatRecord::current())?;
            engine.write(&batch)?;
            engine.flush()?;
            tracing::info!(
                from = record.version,
                to = FORMAT_VERSION,
                log_entries = moved,
                "migrated the storage format"
            );
            Ok(())
        }
        Some(record) => Err(StoreError::UnsupportedFormat {
            path: data_dir.to_owned(),
            found: record.version,
            supported: FORMAT_VERSION,
        }),
        None => {
            if !(engine.is_empty::<RaftLog>()? && engine.is_empty::<RaftMeta>()? && engine.is_empty::<SmMeta>()?) {
                return Err(StoreError::MissingFormat { path: data_dir.to_owned() });
            }
            // Segments without a format record are what a crash during the first start
            // left: they hold nothing acknowledged.
            segments::discard(log_dir)?;
            engine.put::<Format>(&FormatKey::Version, &FormatRecord::current())?;
            engine.flush()?;
            tracing::info!(version = FORMAT_VERSION, "initialized storage");
            Ok(())
        }
    }
}

/// The first format whose Raft log is in segment files.
const SEGMENTS_FORMAT: u32 = 6;

/// How many entries are copied from the engine to the segments per write.
const MIGRATION_CHUNK: usize = 1024;

/// Copies the log entries a format-5-or-older store kept in the engine into fresh segment
/// files and syncs them; returns how many. Segments left by an interrupted migration are
/// discarded first: the engine's copy stays the log until the format record moves on.
fn move_log_to_segments<E: KvEngine>(engine: &E, log_dir: &Path) -> Result<u64, StoreError> {
    segments::discard(log_dir)?;
    let purged = match engine.get::<RaftMeta>(&spaces::RaftMetaKey::LastPurged)? {
        Some(spaces::RaftMetaValue::LogId(id)) => Some(id.index),
        _ => None,
    };
    let (mut log, _) = segments::SegmentLog::open(log_dir, purged)?;
    let mut from = std::ops::Bound::Unbounded;
    let mut moved = 0;
    loop {
        let chunk = engine.range::<RaftLog>((from, std::ops::Bound::Unbounded), MIGRATION_CHUNK)?;
        let Some((last, _)) = chunk.last() else { break };
        from = std::ops::Bound::Excluded(*last);
        let mut records = Vec::with_capacity(chunk.len());
        for (index, entry) in &chunk {
            let bytes = crate::raft::codec::encode(entry)
                .map_err(|e| KvError::Codec { space: RaftLog::NAME, source: Box::new(e) })?;
            records.push((*index, bytes));
        }
        log.append(&records)?;
        moved += records.len() as u64;
    }
    if let Some((file, path)) = log.active() {
        file.sync_data().map_err(|source| StoreError::Io { path, source })?;
    }
    Ok(moved)
}

/// Runs `f` on the applied state behind `state`.
pub fn with_state<T>(state: &SharedState, f: impl FnOnce(&State) -> T) -> T {
    state.read(f)
}
