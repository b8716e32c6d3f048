//! The host's execution history: `<data>/journal/history.jsonl`, one
//! [`HostHistoryRecord`] per line (JSON, [`HOST_HISTORY_FORMAT`]), appended by the
//! executor in the order it acts:
//!
//! - `started` when a step begins executing: it was admitted by the journal and, for a
//!   step about a service, holds that service's lock (so the `started` .. `finished`
//!   spans of one service never overlap);
//! - `finished` when its result is journaled (also for a step resolved at start after
//!   the agent died during it, and for a step cancelled while it waited for its
//!   service, which has no `started` line: it never began);
//! - `refused` when its term is below the highest seen;
//! - `cancelled_unreceived` when a cancel names a step the agent never received (the
//!   journal keeps a tombstone for it, see `journal`).
//!
//! A step answered from the journal (a repeat) writes nothing.
//!
//! Each line is written with one `O_APPEND` write and `fdatasync`ed before the step
//! goes on: a `started` line is durable before any effect of its step. A line torn by
//! a crash (no trailing newline) is cut off before the next append, and ignored by
//! [`read`]. The file is bounded: when the next line would take it past the limit
//! ([`DEFAULT_MAX_BYTES`], 16 MiB), it is renamed to `history.1.jsonl` (replacing the
//! older one) first, so at most two files' worth of history is kept.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write as _};
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use flotilla_shared::history::{HOST_HISTORY_FORMAT, HostHistoryEntry, HostHistoryRecord};

use crate::layout::{now_unix_ms, sync_dir};
use crate::step::Step;

/// The file being appended to, in the journal directory.
pub const HISTORY_FILE: &str = "history.jsonl";

/// The previous file, once [`HISTORY_FILE`] reached its bound.
pub const ROTATED_FILE: &str = "history.1.jsonl";

/// The bound of [`HISTORY_FILE`].
pub const DEFAULT_MAX_BYTES: u64 = 16 * 1024 * 1024;

/// Why the history could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    /// Reading or writing a history file failed.
    #[error("history {}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// A line that is not a history record (not the torn last line of a crash).
    #[error("history {}:{line}: not a history record: {message}", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// The line number, from 1.
        line: usize,
        /// Why.
        message: String,
    },
    /// A line written by a newer agent.
    #[error("history {}:{line}: format {found} is newer than this agent's ({HOST_HISTORY_FORMAT}); upgrade the agent", path.display())]
    Format {
        /// The file.
        path: PathBuf,
        /// The line number, from 1.
        line: usize,
        /// Its format.
        found: u64,
    },
}

/// The appending side of a host's history (see the module documentation).
#[derive(Debug)]
pub struct HistoryLog {
    dir: PathBuf,
    max_bytes: u64,
    /// One append (and rotation) at a time.
    lock: Mutex<()>,
}

impl HistoryLog {
    /// The history in the journal directory `dir`, bounded at [`DEFAULT_MAX_BYTES`].
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self::with_max_bytes(dir, DEFAULT_MAX_BYTES)
    }

    /// The history in `dir`, rotated when the next line would take [`HISTORY_FILE`]
    /// past `max_bytes`.
    pub fn with_max_bytes(dir: impl Into<PathBuf>, max_bytes: u64) -> Self {
        Self { dir: dir.into(), max_bytes, lock: Mutex::new(()) }
    }

    /// The file being appended to.
    pub fn path(&self) -> PathBuf {
        self.dir.join(HISTORY_FILE)
    }

    /// Appends `record` durably (written and `fdatasync`ed when this returns).
    pub fn append(&self, record: &HostHistoryRecord) -> Result<(), HistoryError> {
        let mut line = serde_json::to_vec(record).map_err(|e| HistoryError::Io {
            path: self.path(),
            source: io::Error::new(io::ErrorKind::InvalidData, e),
        })?;
        line.push(b'\n');
        let _one_at_a_time = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        let path = self.path();
        let io_err = |source| HistoryError::Io { path: path.clone(), source };
        let (mut file, mut len) = self.open().map_err(io_err)?;
        len = cut_torn_tail(&file, len).map_err(io_err)?;
        if len > 0 && len.saturating_add(line.len() as u64) > self.max_bytes {
            drop(file);
            fs::rename(&path, self.dir.join(ROTATED_FILE)).map_err(io_err)?;
            sync_dir(&self.dir).map_err(|source| HistoryError::Io { path: self.dir.clone(), source })?;
            (file, len) = self.open().map_err(io_err)?;
        }
        file.write_all(&line).map_err(io_err)?;
        file.sync_data().map_err(io_err)?;
        if len == 0 {
            // A new file: its directory entry must be durable too.
            sync_dir(&self.dir).map_err(|source| HistoryError::Io { path: self.dir.clone(), source })?;
        }
        Ok(())
    }

    /// [`HISTORY_FILE`] opened for appending (created when missing), and its length.
    fn open(&self) -> io::Result<(File, u64)> {
        fs::create_dir_all(&self.dir)?;
        let file = OpenOptions::new().append(true).read(true).create(true).open(self.path())?;
        let len = file.metadata()?.len();
        Ok((file, len))
    }
}

/// Cuts a torn last line (one without its newline: an append interrupted by a crash or
/// a failed write) so that the next line starts on a line of its own. Returns the new
/// length.
fn cut_torn_tail(file: &File, len: u64) -> io::Result<u64> {
    if len == 0 {
        return Ok(0);
    }
    let mut last = [0u8; 1];
    file.read_exact_at(&mut last, len - 1)?;
    if last[0] == b'\n' {
        return Ok(len);
    }
    // Back to the last newline, a block at a time.
    let mut end = len;
    let mut block = vec![0u8; 4096];
    let keep = loop {
        if end == 0 {
            break 0;
        }
        let start = end.saturating_sub(block.len() as u64);
        let chunk = &mut block[..usize::try_from(end - start).unwrap_or(0)];
        file.read_exact_at(chunk, start)?;
        if let Some(i) = chunk.iter().rposition(|b| *b == b'\n') {
            break start + i as u64 + 1;
        }
        end = start;
    };
    tracing::warn!(torn_bytes = len - keep, "cutting a history line torn by an interrupted append");
    file.set_len(keep)?;
    file.sync_data()?;
    Ok(keep)
}

/// A history line about `step`.
pub fn record_for(step: &Step, entry: HostHistoryEntry) -> HostHistoryRecord {
    HostHistoryRecord {
        format: HOST_HISTORY_FORMAT,
        at_unix_ms: now_unix_ms(),
        command_id: step.command_id.clone(),
        term: step.term,
        release_id: step.release_id.clone(),
        stage: step.stage.clone(),
        entry,
    }
}

/// Reads a host's history, oldest first: [`ROTATED_FILE`] then [`HISTORY_FILE`], in
/// `dir`, which is the journal directory or a data directory (its `journal/`). Missing
/// files are empty. A torn last line (no trailing newline: the agent died during an
/// append) is ignored; any other line that is not a record of a known format is an
/// error naming its file and line.
pub fn read(dir: &Path) -> Result<Vec<HostHistoryRecord>, HistoryError> {
    let nested = dir.join("journal");
    let dir = if nested.is_dir() { nested } else { dir.to_owned() };
    let mut out = Vec::new();
    for name in [ROTATED_FILE, HISTORY_FILE] {
        read_file(&dir.join(name), &mut out)?;
    }
    Ok(out)
}

fn read_file(path: &Path, out: &mut Vec<HostHistoryRecord>) -> Result<(), HistoryError> {
    let bytes = match fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(source) => return Err(HistoryError::Io { path: path.to_owned(), source }),
    };
    // Only complete lines: what follows the last newline is a torn append.
    let complete = bytes.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
    for (index, line) in bytes[..complete].split(|b| *b == b'\n').enumerate() {
        let number = index + 1;
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let parse_error =
            |e: serde_json::Error| HistoryError::Parse { path: path.to_owned(), line: number, message: e.to_string() };
        let value: serde_json::Value = serde_json::from_slice(line).map_err(parse_error)?;
        let found = value.get("format").and_then(serde_json::Value::as_u64).unwrap_or(0);
        if found > u64::from(HOST_HISTORY_FORMAT) {
            return Err(HistoryError::Format { path: path.to_owned(), line: number, found });
        }
        out.push(serde_json::from_value(value).map_err(parse_error)?);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(id: &str) -> HostHistoryRecord {
        HostHistoryRecord {
            format: HOST_HISTORY_FORMAT,
            at_unix_ms: 1,
            command_id: id.to_owned(),
            term: 1,
            release_id: String::new(),
            stage: String::new(),
            entry: HostHistoryEntry::Refused { highest_term: 2 },
        }
    }

    #[test]
    fn a_torn_tail_longer_than_a_block_is_cut_back_to_the_last_line() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = HistoryLog::new(dir.path());
        log.append(&line("a")).expect("append");
        let mut file = OpenOptions::new().append(true).open(log.path()).expect("open");
        file.write_all(&vec![b'x'; 10_000]).expect("torn bytes");
        drop(file);
        log.append(&line("b")).expect("append");
        let ids: Vec<String> = read(dir.path()).expect("read").into_iter().map(|r| r.command_id).collect();
        assert_eq!(ids, vec!["a", "b"]);
    }
}
