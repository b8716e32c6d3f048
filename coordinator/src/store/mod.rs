//! Durable storage of the Raft log, vote and state machine.
//!
//! A coordinator's data directory holds:
//!
//! ```text
//! <data>/db/                     the key-value engine (sled): format, raft_log, raft_meta, sm_meta
//! <data>/snapshots/<seq>.snap    the current state machine snapshot (one file)
//! ```
//!
//! [`open`] checks the on-disk format version, then returns openraft's two storage
//! halves: [`LogStore`] (log and vote, `log.rs`) and [`StateMachineStore`] (the state
//! machine and its snapshots, `state_machine.rs`). Both sit on the storage boundary in
//! `kv.rs` ([`KvEngine`], typed [`KeySpace`]s); `sled.rs` implements it.

use std::io;
use std::path::{Path, PathBuf};

pub mod flush;
pub mod kv;
pub mod log;
pub mod sled;
pub mod snapshot;
pub mod spaces;
pub mod state_machine;

pub use self::sled::SledEngine;
pub use kv::{KeySpace, KvEngine, KvError, ValueEncoding, WriteBatch};
pub use log::{LogReader, LogStore};
pub use spaces::FORMAT_VERSION;
pub use state_machine::{Applied, SharedState, SnapshotBuilder, StateMachineStore};

use crate::state::State;
use spaces::{Format, FormatKey, FormatRecord, RaftLog, RaftMeta, SmMeta};

/// The engine's directory inside a data directory.
pub const DB_DIR: &str = "db";
/// The snapshot directory inside a data directory.
pub const SNAPSHOT_DIR: &str = "snapshots";

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

/// Opens the storage over any engine, with snapshot files in `snapshot_dir`.
/// `data_dir` only names the data in errors.
pub fn open_with<E: KvEngine>(
    engine: E,
    data_dir: &Path,
    snapshot_dir: PathBuf,
) -> Result<(LogStore<E>, StateMachineStore<E>), StoreError> {
    check_format(&engine, data_dir)?;
    let state_machine = StateMachineStore::open(engine.clone(), snapshot_dir)?;
    let log = LogStore::new(engine).map_err(|source| StoreError::Io { path: data_dir.to_owned(), source })?;
    Ok((log, state_machine))
}

/// Checks the format record, writing it (durably) into an empty store.
fn check_format<E: KvEngine>(engine: &E, data_dir: &Path) -> Result<(), StoreError> {
    match engine.get::<Format>(&FormatKey::Version)? {
        Some(record) if record.version == FORMAT_VERSION => Ok(()),
        Some(record) if record.version >= spaces::MIN_READABLE_FORMAT && record.version < FORMAT_VERSION => {
            // Older log entries are valid entries of this format, and snapshots carry
            // their own version and are migrated as they are read.
            engine.put::<Format>(&FormatKey::Version, &FormatRecord::current())?;
            engine.flush()?;
            tracing::info!(from = record.version, to = FORMAT_VERSION, "migrated the storage format");
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
            engine.put::<Format>(&FormatKey::Version, &FormatRecord::current())?;
            engine.flush()?;
            tracing::info!(version = FORMAT_VERSION, "initialized storage");
            Ok(())
        }
    }
}

/// Runs `f` on the applied state behind `state`.
pub fn with_state<T>(state: &SharedState, f: impl FnOnce(&State) -> T) -> T {
    state.read(f)
}
