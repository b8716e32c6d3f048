//! The Raft log in segment files: append-only records with checksums, written by the
//! caller and made durable by one `fdatasync` shared by every append queued before it.
//!
//! ```text
//! <data>/log/<index of the first record, 20 digits>.seg
//!   header   24 bytes: "FLOTLOG\n", segment format (u32 LE), 0 (u32 LE),
//!            the index of the entry before the segment's first (u64 LE; all ones: none)
//!   record   length (u32 LE) | CRC-32 (u32 LE) | index (u64 LE) | payload (length bytes)
//! ```
//!
//! The CRC-32 covers the length, the index and the payload. A payload is one encoded log
//! entry (`raft::codec`). Records of a segment have consecutive indexes starting at the
//! one in its name. The last segment is the one appended to; a new one is started when
//! it holds [`SEGMENT_BYTES`], or when an append does not continue the log (openraft may
//! append past a hole). Each header names the entry that came before the segment, so a
//! segment lost from the middle or the start of the log is told from such a hole.
//! An append at an index the log already holds replaces that entry and every later one.
//!
//! Recovery ([`SegmentLog::open`]): a record that is cut short or fails its checksum at
//! the end of the **last** segment is what a crash during an append leaves behind (that
//! append was never acknowledged: acknowledgement waits for the fsync that covers it),
//! so the segment is cut back to the last whole record and a warning names the bytes
//! discarded. The same in any earlier segment, a record whose index is not the next one,
//! or a segment whose header names an entry the segment before it does not end with is
//! corruption: the log is refused with the file and offset, and nothing is repaired.
//!
//! Durability: [`SegmentLog::append`] writes with one `pwrite` and returns; the caller
//! makes the writes durable with [`SegmentLog::active`] and `sync_data` (the store's flush
//! thread does it once for every append queued since its last flush). Starting a new
//! segment first syncs the one it replaces, so syncing the last segment covers every
//! write made before. [`SegmentLog::truncate`] and [`SegmentLog::purge`] are durable when
//! they return. A failed write (a full disk) cuts the segment back to where the write
//! began and returns the error: the log is as it was before the call.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::ops::Bound;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The log directory inside a data directory.
pub const LOG_DIR: &str = "log";

/// The layout of segment files this build writes and reads (header and records). Bump it
/// on any change of that layout; it is checked in every segment's header.
pub const SEGMENT_FORMAT: u32 = 1;

/// A segment is closed and a new one started once it holds this many bytes.
pub const SEGMENT_BYTES: u64 = 64 * 1024 * 1024;

const MAGIC: &[u8; 8] = b"FLOTLOG\n";
const HEADER_BYTES: u64 = 24;
const NO_INDEX: u64 = u64::MAX;
const RECORD_HEADER_BYTES: u64 = 16;
const SUFFIX: &str = ".seg";

/// Why the log could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum SegmentError {
    /// A file operation failed (a full disk, a failed device, missing permissions).
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// A segment holds something this build did not write there.
    #[error("{}: {what}; the Raft log is damaged: restore a backup or resync this node from the cluster", path.display())]
    Corrupt {
        /// The segment (or the log directory).
        path: PathBuf,
        /// What is wrong, and where.
        what: String,
    },
    /// A segment is in a layout this build does not read.
    #[error(
        "{}: log segment format {found}, but this build reads segment format {SEGMENT_FORMAT} only",
        path.display()
    )]
    UnsupportedFormat {
        /// The segment.
        path: PathBuf,
        /// The format in its header.
        found: u32,
    },
    /// An append does not continue the log.
    #[error("appending entry {index} to a log whose next entry is {next}")]
    NotNext {
        /// The first index of the append.
        index: u64,
        /// The index the log expects.
        next: u64,
    },
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> SegmentError + '_ {
    move |source| SegmentError::Io { path: path.to_owned(), source }
}

/// One segment file.
#[derive(Debug)]
struct Segment {
    /// The index of its first record (its name).
    first: u64,
    /// The index of the entry before its first in the log, when it was started.
    prev: Option<u64>,
    path: PathBuf,
    file: Arc<File>,
    /// The byte offset of each record: record `first + i` starts at `offsets[i]`.
    offsets: Vec<u64>,
    /// The end of the last whole record: where the next one is written.
    end: u64,
}

impl Segment {
    fn last(&self) -> Option<u64> {
        (!self.offsets.is_empty()).then(|| self.first + self.offsets.len() as u64 - 1)
    }

    /// Byte range of the records `from..=to`, which it holds.
    fn byte_range(&self, from: u64, to: u64) -> (u64, u64) {
        let start = self.offsets[usize::try_from(from - self.first).unwrap_or(usize::MAX)];
        let after = usize::try_from(to + 1 - self.first).unwrap_or(usize::MAX);
        let end = self.offsets.get(after).copied().unwrap_or(self.end);
        (start, end)
    }
}

/// Records to read from one file, as [`SegmentLog::spans`] found them.
#[derive(Debug, Clone)]
pub struct Span {
    file: Arc<File>,
    path: PathBuf,
    first: u64,
    count: u64,
    start: u64,
    end: u64,
}

impl Span {
    /// Reads the span's records: `(index, payload)`, checking each checksum and index.
    pub fn read(&self) -> Result<Vec<(u64, Vec<u8>)>, SegmentError> {
        let len = usize::try_from(self.end - self.start).map_err(|_| self.corrupt("span too large".to_owned()))?;
        let mut bytes = vec![0; len];
        self.file.read_exact_at(&mut bytes, self.start).map_err(io_error(&self.path))?;
        let mut records = Vec::with_capacity(usize::try_from(self.count).unwrap_or(0));
        let mut at = 0usize;
        for index in self.first..self.first + self.count {
            match parse_record(&bytes[at..]) {
                Parsed::Record { index: found, payload, len } if found == index => {
                    records.push((index, payload.to_vec()));
                    at += len;
                }
                Parsed::Record { index: found, .. } => {
                    return Err(self.corrupt(format!(
                        "the record at offset {} is entry {found}, expected entry {index}",
                        self.start + at as u64
                    )));
                }
                Parsed::Short | Parsed::BadChecksum => {
                    return Err(self.corrupt(format!(
                        "entry {index} at offset {} no longer reads back whole",
                        self.start + at as u64
                    )));
                }
            }
        }
        Ok(records)
    }

    fn corrupt(&self, what: String) -> SegmentError {
        SegmentError::Corrupt { path: self.path.clone(), what }
    }
}

enum Parsed<'a> {
    Record { index: u64, payload: &'a [u8], len: usize },
    Short,
    BadChecksum,
}

fn parse_record(bytes: &[u8]) -> Parsed<'_> {
    let Some(header) = bytes.get(..RECORD_HEADER_BYTES as usize) else { return Parsed::Short };
    let len = u32::from_le_bytes(header[0..4].try_into().expect("4 bytes"));
    let crc = u32::from_le_bytes(header[4..8].try_into().expect("4 bytes"));
    let index = u64::from_le_bytes(header[8..16].try_into().expect("8 bytes"));
    let total = RECORD_HEADER_BYTES as usize + len as usize;
    let Some(payload) = bytes.get(RECORD_HEADER_BYTES as usize..total) else { return Parsed::Short };
    if checksum(len, index, payload) != crc {
        return Parsed::BadChecksum;
    }
    Parsed::Record { index, payload, len: total }
}

fn checksum(len: u32, index: u64, payload: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&len.to_le_bytes());
    hasher.update(&index.to_le_bytes());
    hasher.update(payload);
    hasher.finalize()
}

fn encode_record(out: &mut Vec<u8>, index: u64, payload: &[u8]) -> Result<(), SegmentError> {
    let len = u32::try_from(payload.len()).map_err(|_| SegmentError::Corrupt {
        path: PathBuf::new(),
        what: format!("entry {index} is {} bytes, more than a record holds", payload.len()),
    })?;
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&checksum(len, index, payload).to_le_bytes());
    out.extend_from_slice(&index.to_le_bytes());
    out.extend_from_slice(payload);
    Ok(())
}

fn header(prev: Option<u64>) -> [u8; HEADER_BYTES as usize] {
    let mut header = [0; HEADER_BYTES as usize];
    header[..8].copy_from_slice(MAGIC);
    header[8..12].copy_from_slice(&SEGMENT_FORMAT.to_le_bytes());
    header[16..24].copy_from_slice(&prev.unwrap_or(NO_INDEX).to_le_bytes());
    header
}

fn segment_name(first: u64) -> String {
    format!("{first:020}{SUFFIX}")
}

fn parse_segment_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(SUFFIX)?;
    (digits.len() == 20 && digits.bytes().all(|b| b.is_ascii_digit())).then(|| digits.parse().ok()).flatten()
}

/// What opening the log found and repaired.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Recovery {
    /// Segments read.
    pub segments: usize,
    /// Records read.
    pub records: u64,
    /// Bytes of a partly written record cut from the end of the last segment.
    pub torn_bytes: u64,
    /// Segments removed because every record in them was purged.
    pub purged_segments: usize,
}

/// The Raft log's segment files in one directory.
#[derive(Debug)]
pub struct SegmentLog {
    dir: PathBuf,
    /// In order of their first index; the last is appended to.
    segments: Vec<Segment>,
    /// The last index removed from the log, if any.
    purged: Option<u64>,
    segment_bytes: u64,
}

impl SegmentLog {
    /// Opens (creating if needed) the log in `dir`, where every entry up to `purged` has
    /// been removed. Repairs a torn tail and refuses corruption, as the module says.
    pub fn open(dir: &Path, purged: Option<u64>) -> Result<(Self, Recovery), SegmentError> {
        Self::open_with_segment_bytes(dir, purged, SEGMENT_BYTES)
    }

    /// [`SegmentLog::open`] with segments of `segment_bytes` (tests use small ones).
    pub fn open_with_segment_bytes(
        dir: &Path,
        purged: Option<u64>,
        segment_bytes: u64,
    ) -> Result<(Self, Recovery), SegmentError> {
        fs::create_dir_all(dir).map_err(io_error(dir))?;
        let mut names = Vec::new();
        for item in fs::read_dir(dir).map_err(io_error(dir))? {
            let item = item.map_err(io_error(dir))?;
            if let Some(first) = item.file_name().to_str().and_then(parse_segment_name) {
                names.push((first, item.path()));
            }
        }
        names.sort();
        let mut recovery = Recovery::default();
        let mut segments: Vec<Segment> = Vec::with_capacity(names.len());
        let count = names.len();
        for (i, (first, path)) in names.into_iter().enumerate() {
            let is_last = i + 1 == count;
            if let Some(segment) = load_segment(first, path, is_last, &mut recovery)? {
                segments.push(segment);
            }
        }
        recovery.segments = segments.len();
        let mut log = Self { dir: dir.to_owned(), segments, purged, segment_bytes };
        if let Some(upto) = purged {
            recovery.purged_segments = log.remove_purged(upto)?;
        }
        log.check_continuity()?;
        recovery.records = log.segments.iter().map(|s| s.offsets.len() as u64).sum();
        Ok((log, recovery))
    }

    /// Every segment follows the one its header names, and the first one follows an
    /// entry that was purged: no segment is missing.
    fn check_continuity(&self) -> Result<(), SegmentError> {
        for pair in self.segments.windows(2) {
            let (before, after) = (&pair[0], &pair[1]);
            let Some(last) = before.last() else {
                return Err(SegmentError::Corrupt {
                    path: before.path.clone(),
                    what: format!("an empty segment before {}", after.path.display()),
                });
            };
            if after.prev != Some(last) || after.first <= last {
                return Err(SegmentError::Corrupt {
                    path: after.path.clone(),
                    what: format!(
                        "follows entry {}, but the segment before it ends at entry {last}: a segment is missing",
                        after.prev.map_or_else(|| "none".to_owned(), |p| p.to_string())
                    ),
                });
            }
        }
        if let Some(first) = self.segments.first()
            && let Some(prev) = first.prev
            && self.purged.is_none_or(|purged| prev > purged)
        {
            return Err(SegmentError::Corrupt {
                path: first.path.clone(),
                what: format!(
                    "follows entry {prev}, which the log neither holds nor purged: a segment before it is missing"
                ),
            });
        }
        Ok(())
    }

    /// The directory of the segments.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The first entry the log holds.
    pub fn first_index(&self) -> Option<u64> {
        let first = self.segments.iter().find(|s| !s.offsets.is_empty())?.first;
        Some(self.purged.map_or(first, |p| first.max(p + 1))).filter(|&f| self.last_index().is_some_and(|l| f <= l))
    }

    /// The last entry the log holds.
    pub fn last_index(&self) -> Option<u64> {
        self.segments.iter().rev().find_map(Segment::last).filter(|&last| self.purged.is_none_or(|p| last > p))
    }

    /// The index the next append must start at, if the log constrains it (an empty log
    /// that never purged anything takes any).
    pub fn next_index(&self) -> Option<u64> {
        match (self.last_index(), self.purged) {
            (Some(last), _) => Some(last + 1),
            (None, Some(purged)) => Some(purged + 1),
            (None, None) => None,
        }
    }

    /// The segment being appended to: syncing it makes every append made before durable.
    pub fn active(&self) -> Option<(Arc<File>, PathBuf)> {
        self.segments.last().map(|s| (s.file.clone(), s.path.clone()))
    }

    /// Writes `records` (consecutive indexes) at the log's end: after its last entry,
    /// past a hole, or in place of the entries from the first record's index on. Not
    /// durable until the active segment is synced (a replacement's truncation is).
    pub fn append(&mut self, records: &[(u64, Vec<u8>)]) -> Result<(), SegmentError> {
        let Some(&(index, _)) = records.first() else { return Ok(()) };
        for (i, (at, _)) in records.iter().enumerate() {
            if *at != index + i as u64 {
                return Err(SegmentError::NotNext { index: *at, next: index + i as u64 });
            }
        }
        // Entries at or below the purge point are in the snapshot already: nothing
        // reads them from the log again, so they are not written.
        let skip =
            self.purged.map_or(0, |purged| usize::try_from((purged + 1).saturating_sub(index)).unwrap_or(usize::MAX));
        let Some(&(index, _)) = records.get(skip) else { return Ok(()) };
        let records = &records[skip..];
        let next = self.next_index();
        if next.is_some_and(|next| index < next) {
            self.truncate(index)?;
        }
        self.make_room(index)?;
        let segment = self.segments.last_mut().expect("make_room leaves a segment to append to");
        let mut bytes = Vec::with_capacity(records.iter().map(|(_, p)| p.len() + RECORD_HEADER_BYTES as usize).sum());
        let mut offsets = Vec::with_capacity(records.len());
        for (index, payload) in records {
            offsets.push(segment.end + bytes.len() as u64);
            encode_record(&mut bytes, *index, payload)
                .map_err(|e| SegmentError::Corrupt { path: segment.path.clone(), what: e.to_string() })?;
        }
        if let Err(source) = segment.file.write_all_at(&bytes, segment.end) {
            // Leave the log as it was: cut off whatever part of the write landed.
            if let Err(e) = segment.file.set_len(segment.end) {
                tracing::error!(segment = %segment.path.display(), error = %e, "could not cut back a failed append");
            }
            return Err(SegmentError::Io { path: segment.path.clone(), source });
        }
        segment.offsets.extend(offsets);
        segment.end += bytes.len() as u64;
        Ok(())
    }

    /// Makes sure the last segment can take the record `index`, the log's next or one
    /// past a hole: starts the log's first segment, replaces an empty last segment named
    /// for another index, or starts a new one when the last is full or `index` does not
    /// follow it.
    fn make_room(&mut self, index: u64) -> Result<(), SegmentError> {
        if let Some(last) = self.segments.last() {
            if last.offsets.is_empty() {
                if last.first == index {
                    return Ok(());
                }
                let last = self.segments.pop().expect("a last segment");
                remove_file(&last.path)?;
            } else if last.end < self.segment_bytes && last.last().is_some_and(|l| l + 1 == index) {
                return Ok(());
            } else {
                // Everything in the closed segment is durable before the next one exists,
                // so syncing the last segment always covers every earlier write.
                last.file.sync_data().map_err(io_error(&last.path))?;
            }
        }
        let prev = self.segments.iter().rev().find_map(Segment::last).or(self.purged);
        let segment = create_segment(&self.dir, index, prev)?;
        self.segments.push(segment);
        Ok(())
    }

    /// Removes every entry from `since` on, durably.
    pub fn truncate(&mut self, since: u64) -> Result<(), SegmentError> {
        // Later segments go first: a crash in between leaves a shorter log or the old
        // one, never a gap.
        let mut removed = false;
        while let Some(last) = self.segments.last()
            && last.first >= since
        {
            let last = self.segments.pop().expect("a last segment");
            remove_file(&last.path)?;
            removed = true;
        }
        if removed {
            sync_dir(&self.dir)?;
        }
        if let Some(segment) = self.segments.last_mut()
            && segment.last().is_some_and(|last| last >= since)
        {
            let keep = usize::try_from(since - segment.first).unwrap_or(usize::MAX);
            let end = segment.offsets[keep];
            segment.file.set_len(end).map_err(io_error(&segment.path))?;
            segment.file.sync_all().map_err(io_error(&segment.path))?;
            segment.offsets.truncate(keep);
            segment.end = end;
        }
        Ok(())
    }

    /// Forgets every entry up to `upto` and removes the segments that hold nothing else.
    /// The caller records `upto` durably first: a segment left behind by a crash is
    /// removed on the next open.
    pub fn purge(&mut self, upto: u64) -> Result<(), SegmentError> {
        self.purged = Some(self.purged.map_or(upto, |p| p.max(upto)));
        if self.remove_purged(upto)? > 0 {
            sync_dir(&self.dir)?;
        }
        Ok(())
    }

    /// Removes the segments whose every record is at or below `upto`; returns how many.
    fn remove_purged(&mut self, upto: u64) -> Result<usize, SegmentError> {
        let keep_from = self.segments.iter().position(|s| s.last().is_none_or(|last| last > upto));
        let remove = keep_from.unwrap_or(self.segments.len());
        for segment in self.segments.drain(..remove) {
            remove_file(&segment.path)?;
        }
        Ok(remove)
    }

    /// Where the live entries in `from..to` are: one span per segment, in order. Entries
    /// the log does not hold are left out.
    pub fn spans(&self, from: Bound<u64>, to: Bound<u64>) -> Vec<Span> {
        let (Some(first), Some(last)) = (self.first_index(), self.last_index()) else { return Vec::new() };
        let start = match from {
            Bound::Included(i) => i,
            Bound::Excluded(i) => i.saturating_add(1),
            Bound::Unbounded => first,
        }
        .max(first);
        let stop = match to {
            Bound::Included(i) => i,
            Bound::Excluded(0) => return Vec::new(),
            Bound::Excluded(i) => i - 1,
            Bound::Unbounded => last,
        }
        .min(last);
        if start > stop {
            return Vec::new();
        }
        let mut spans = Vec::new();
        for segment in &self.segments {
            let Some(seg_last) = segment.last() else { continue };
            let (a, b) = (start.max(segment.first), stop.min(seg_last));
            if a > b {
                continue;
            }
            let (byte_start, byte_end) = segment.byte_range(a, b);
            spans.push(Span {
                file: segment.file.clone(),
                path: segment.path.clone(),
                first: a,
                count: b - a + 1,
                start: byte_start,
                end: byte_end,
            });
        }
        spans
    }

    /// Reads the live entries in `from..to`: `(index, payload)` in index order.
    pub fn read(&self, from: Bound<u64>, to: Bound<u64>) -> Result<Vec<(u64, Vec<u8>)>, SegmentError> {
        let mut records = Vec::new();
        for span in self.spans(from, to) {
            records.extend(span.read()?);
        }
        Ok(records)
    }
}

/// Removes every segment file in `dir` (the directory stays: it may be a mount point).
pub fn discard(dir: &Path) -> Result<(), SegmentError> {
    let items = match fs::read_dir(dir) {
        Ok(items) => items,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(source) => return Err(SegmentError::Io { path: dir.to_owned(), source }),
    };
    let mut removed = false;
    for item in items {
        let item = item.map_err(io_error(dir))?;
        if item.file_name().to_str().and_then(parse_segment_name).is_some() {
            remove_file(&item.path())?;
            removed = true;
        }
    }
    if removed {
        sync_dir(dir)?;
    }
    Ok(())
}

fn load_segment(
    first: u64,
    path: PathBuf,
    is_last: bool,
    recovery: &mut Recovery,
) -> Result<Option<Segment>, SegmentError> {
    let bytes = fs::read(&path).map_err(io_error(&path))?;
    let corrupt = |what: String| SegmentError::Corrupt { path: path.clone(), what };
    if (bytes.len() as u64) < HEADER_BYTES {
        if is_last {
            // Created as the log moved to it, and the crash came before its header was
            // durable: nothing was ever acknowledged from it.
            tracing::warn!(segment = %path.display(), bytes = bytes.len(), "removing a log segment whose header was never written whole");
            remove_file(&path)?;
            return Ok(None);
        }
        return Err(corrupt(format!("{} bytes, shorter than a segment header", bytes.len())));
    }
    if &bytes[..8] != MAGIC {
        return Err(corrupt("not a Flotilla log segment (its header does not start with FLOTLOG)".to_owned()));
    }
    let format = u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes"));
    if format != SEGMENT_FORMAT {
        return Err(SegmentError::UnsupportedFormat { path, found: format });
    }
    let prev = Some(u64::from_le_bytes(bytes[16..24].try_into().expect("8 bytes"))).filter(|&p| p != NO_INDEX);
    let mut offsets = Vec::new();
    let mut at = HEADER_BYTES as usize;
    let mut index = first;
    while at < bytes.len() {
        match parse_record(&bytes[at..]) {
            Parsed::Record { index: found, len, .. } if found == index => {
                offsets.push(at as u64);
                at += len;
                index += 1;
            }
            Parsed::Record { index: found, .. } => {
                return Err(corrupt(format!("the record at offset {at} is entry {found}, expected entry {index}")));
            }
            bad @ (Parsed::Short | Parsed::BadChecksum) => {
                let what = if matches!(bad, Parsed::Short) { "cut short" } else { "failing its checksum" };
                if !is_last {
                    return Err(corrupt(format!("entry {index} at offset {at} is {what}")));
                }
                let torn = bytes.len() - at;
                tracing::warn!(
                    segment = %path.display(), offset = at, bytes = torn, entry = index,
                    "discarding a partly written entry at the end of the log ({what}): a crash interrupted its append, which was never acknowledged"
                );
                let file = OpenOptions::new().write(true).open(&path).map_err(io_error(&path))?;
                file.set_len(at as u64).map_err(io_error(&path))?;
                file.sync_all().map_err(io_error(&path))?;
                recovery.torn_bytes += torn as u64;
                break;
            }
        }
    }
    let file = OpenOptions::new().read(true).write(true).open(&path).map_err(io_error(&path))?;
    Ok(Some(Segment { first, prev, path, file: Arc::new(file), offsets, end: at as u64 }))
}

fn create_segment(dir: &Path, first: u64, prev: Option<u64>) -> Result<Segment, SegmentError> {
    let path = dir.join(segment_name(first));
    let file =
        OpenOptions::new().read(true).write(true).create(true).truncate(true).open(&path).map_err(io_error(&path))?;
    let written = file.write_all_at(&header(prev), 0).and_then(|()| file.sync_all());
    if let Err(source) = written {
        // A segment that cannot hold its header is no segment: leave nothing behind.
        drop(file);
        let _ = fs::remove_file(&path);
        return Err(SegmentError::Io { path, source });
    }
    sync_dir(dir)?;
    Ok(Segment { first, prev, path, file: Arc::new(file), offsets: Vec::new(), end: HEADER_BYTES })
}

fn remove_file(path: &Path) -> Result<(), SegmentError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(SegmentError::Io { path: path.to_owned(), source }),
    }
}

/// Makes the directory's entries (files created or removed) durable.
fn sync_dir(dir: &Path) -> Result<(), SegmentError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(io_error(dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload(index: u64) -> Vec<u8> {
        format!("entry {index} {}", "x".repeat((index % 7) as usize * 10)).into_bytes()
    }

    fn append(log: &mut SegmentLog, indexes: std::ops::RangeInclusive<u64>) {
        let records: Vec<(u64, Vec<u8>)> = indexes.map(|i| (i, payload(i))).collect();
        log.append(&records).unwrap();
    }

    /// A log in a new directory with entries `1..=last`, appended one at a time into
    /// segments of `segment_bytes`.
    fn written(segment_bytes: u64, last: u64) -> (tempfile::TempDir, SegmentLog) {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) = SegmentLog::open_with_segment_bytes(dir.path(), None, segment_bytes).unwrap();
        for i in 1..=last {
            append(&mut log, i..=i);
        }
        (dir, log)
    }

    fn all(log: &SegmentLog) -> Vec<u64> {
        let records = log.read(Bound::Unbounded, Bound::Unbounded).unwrap();
        for (index, bytes) in &records {
            assert_eq!(bytes, &payload(*index), "entry {index} reads back as written");
        }
        records.into_iter().map(|(i, _)| i).collect()
    }

    fn segment_files(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> =
            fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        names.sort();
        names
    }

    #[test]
    fn appends_read_back_across_segments_and_after_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, recovery) = SegmentLog::open_with_segment_bytes(dir.path(), None, 512).unwrap();
        assert_eq!(recovery, Recovery::default());
        assert_eq!((log.first_index(), log.last_index(), log.next_index()), (None, None, None));
        append(&mut log, 0..=3);
        for i in 4..=40 {
            append(&mut log, i..=i);
        }
        assert!(segment_files(dir.path()).len() > 3, "{:?}", segment_files(dir.path()));
        assert_eq!(all(&log), (0..=40).collect::<Vec<_>>());
        let middle = log.read(Bound::Included(9), Bound::Excluded(23)).unwrap();
        assert_eq!(middle.iter().map(|r| r.0).collect::<Vec<_>>(), (9..23).collect::<Vec<_>>());
        assert!(matches!(
            log.append(&[(7, payload(7)), (9, payload(9))]),
            Err(SegmentError::NotNext { index: 9, next: 8 })
        ));
        drop(log);

        let (log, recovery) = SegmentLog::open_with_segment_bytes(dir.path(), None, 512).unwrap();
        assert_eq!(recovery.records, 41);
        assert_eq!(recovery.torn_bytes, 0);
        assert_eq!(all(&log), (0..=40).collect::<Vec<_>>());
        assert_eq!(log.next_index(), Some(41));
    }

    #[test]
    fn truncation_and_purge_are_durable_and_keep_the_log_continuous() {
        let (dir, mut log) = written(400, 30);
        log.truncate(17).unwrap();
        assert_eq!(log.last_index(), Some(16));
        append(&mut log, 17..=20);
        log.purge(8).unwrap();
        assert_eq!(log.first_index(), Some(9));
        assert_eq!(all(&log), (9..=20).collect::<Vec<_>>());
        let files = segment_files(dir.path());
        drop(log);

        let (mut log, recovery) = SegmentLog::open_with_segment_bytes(dir.path(), Some(8), 400).unwrap();
        assert_eq!(recovery.purged_segments, 0, "purge removed its segments itself");
        assert_eq!(segment_files(dir.path()), files);
        assert_eq!(all(&log), (9..=20).collect::<Vec<_>>());
        // A purge past the end (a snapshot installed from the leader) empties the log,
        // which then continues after the snapshot.
        log.purge(100).unwrap();
        assert_eq!((log.first_index(), log.last_index(), log.next_index()), (None, None, Some(101)));
        append(&mut log, 101..=103);
        drop(log);
        let (log, _) = SegmentLog::open_with_segment_bytes(dir.path(), Some(100), 400).unwrap();
        assert_eq!(all(&log), vec![101, 102, 103]);
        assert_eq!(segment_files(dir.path()), vec![segment_name(101)]);
    }

    #[test]
    fn a_crash_left_segment_older_than_the_purge_is_removed_on_open() {
        let (dir, log) = written(300, 20);
        drop(log);
        // The purge was recorded, the crash came before its files were removed.
        let (log, recovery) = SegmentLog::open_with_segment_bytes(dir.path(), Some(12), 300).unwrap();
        assert!(recovery.purged_segments > 0);
        assert_eq!(all(&log), (13..=20).collect::<Vec<_>>());
    }

    #[test]
    fn a_torn_tail_is_cut_back_to_the_last_whole_entry() {
        for cut in [1, 7, 16, 20] {
            let dir = tempfile::tempdir().unwrap();
            let (mut log, _) = SegmentLog::open(dir.path(), None).unwrap();
            append(&mut log, 1..=5);
            let path = dir.path().join(segment_name(1));
            let whole = fs::metadata(&path).unwrap().len();
            append(&mut log, 6..=6);
            drop(log);
            let file = OpenOptions::new().write(true).open(&path).unwrap();
            file.set_len(whole + cut).unwrap();
            drop(file);

            let (mut log, recovery) = SegmentLog::open(dir.path(), None).unwrap();
            assert_eq!(recovery.torn_bytes, cut, "cut at {cut}");
            assert_eq!(all(&log), (1..=5).collect::<Vec<_>>());
            assert_eq!(fs::metadata(&path).unwrap().len(), whole);
            append(&mut log, 6..=7);
            assert_eq!(all(&log), (1..=7).collect::<Vec<_>>());
        }
    }

    #[test]
    fn a_last_entry_that_fails_its_checksum_is_discarded() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) = SegmentLog::open(dir.path(), None).unwrap();
        append(&mut log, 1..=3);
        drop(log);
        let path = dir.path().join(segment_name(1));
        let mut bytes = fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        fs::write(&path, &bytes).unwrap();
        let (log, recovery) = SegmentLog::open(dir.path(), None).unwrap();
        assert!(recovery.torn_bytes > 0);
        assert_eq!(all(&log), vec![1, 2]);
    }

    #[test]
    fn damage_before_the_tail_is_refused_with_the_file_and_offset() {
        let (dir, log) = written(200, 12);
        drop(log);
        let first = dir.path().join(segment_name(1));
        let mut bytes = fs::read(&first).unwrap();
        bytes[HEADER_BYTES as usize + RECORD_HEADER_BYTES as usize] ^= 0x01;
        fs::write(&first, &bytes).unwrap();
        let err = SegmentLog::open_with_segment_bytes(dir.path(), None, 200).unwrap_err();
        let message = err.to_string();
        assert!(matches!(err, SegmentError::Corrupt { .. }), "{message}");
        assert!(message.contains(&segment_name(1)) && message.contains(&format!("offset {HEADER_BYTES}")), "{message}");
        assert!(message.contains("checksum"), "{message}");
        assert_eq!(fs::read(&first).unwrap(), bytes, "nothing is repaired");
    }

    #[test]
    fn a_missing_segment_and_a_foreign_format_are_refused() {
        let (dir, log) = written(200, 12);
        drop(log);
        let names = segment_files(dir.path());
        assert!(names.len() >= 3, "{names:?}");
        fs::remove_file(dir.path().join(&names[1])).unwrap();
        let err = SegmentLog::open_with_segment_bytes(dir.path(), None, 200).unwrap_err();
        assert!(err.to_string().contains("a segment is missing"), "{err}");
        fs::remove_file(dir.path().join(&names[0])).unwrap();
        let err = SegmentLog::open_with_segment_bytes(dir.path(), None, 200).unwrap_err();
        assert!(err.to_string().contains("a segment before it is missing"), "{err}");

        let other = tempfile::tempdir().unwrap();
        let mut bytes = header(None).to_vec();
        bytes[8] = 9;
        fs::write(other.path().join(segment_name(1)), &bytes).unwrap();
        let err = SegmentLog::open(other.path(), None).unwrap_err();
        assert!(matches!(err, SegmentError::UnsupportedFormat { found: 9, .. }), "{err}");
        assert!(err.to_string().contains("segment format 9"), "{err}");
    }

    #[test]
    fn a_last_segment_without_its_header_is_removed() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) = SegmentLog::open(dir.path(), None).unwrap();
        append(&mut log, 1..=4);
        drop(log);
        fs::write(dir.path().join(segment_name(5)), b"FLOT").unwrap();
        let (mut log, _) = SegmentLog::open(dir.path(), None).unwrap();
        assert_eq!(segment_files(dir.path()), vec![segment_name(1)]);
        append(&mut log, 5..=5);
        assert_eq!(all(&log), (1..=5).collect::<Vec<_>>());
    }

    #[test]
    fn an_append_past_a_hole_or_over_held_entries_survives_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) = SegmentLog::open(dir.path(), None).unwrap();
        append(&mut log, 1..=3);
        // Past a hole: a new segment that names the entry before it.
        append(&mut log, 6..=7);
        assert_eq!(all(&log), vec![1, 2, 3, 6, 7]);
        assert_eq!(segment_files(dir.path()), vec![segment_name(1), segment_name(6)]);
        // At or below the purge point: covered by the snapshot, not written.
        log.purge(1).unwrap();
        log.append(&[(1, b"late".to_vec())]).unwrap();
        assert_eq!(all(&log), vec![2, 3, 6, 7]);
        // Over held entries: they and every later one are replaced.
        log.append(&[(2, b"two again".to_vec())]).unwrap();
        let records = log.read(Bound::Unbounded, Bound::Unbounded).unwrap();
        assert_eq!(records, vec![(2, b"two again".to_vec())]);
        append(&mut log, 3..=4);
        append(&mut log, 10..=10);
        drop(log);
        let (log, recovery) = SegmentLog::open(dir.path(), Some(1)).unwrap();
        assert_eq!(recovery.torn_bytes, 0);
        let indexes: Vec<u64> =
            log.read(Bound::Unbounded, Bound::Unbounded).unwrap().into_iter().map(|r| r.0).collect();
        assert_eq!(indexes, vec![2, 3, 4, 10]);
        assert_eq!(log.next_index(), Some(11));
    }
}
