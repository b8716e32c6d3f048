//! Snapshot files: their byte layout and their directory.
//!
//! A snapshot is the same bytes on disk and on the wire:
//!
//! ```text
//! b"FLOTSNAP" | header length (u32, big-endian) | header (JSON) | state (binary codec)
//! ```
//!
//! The header carries the format version, the snapshot id, the last log id and the
//! membership; it stays JSON so every version can read the version. A reader checks the
//! magic and the version before it parses anything else, so a snapshot from another
//! format version (older or newer) is refused with both versions named. The state is
//! encoded with `raft::codec`, straight from the applied state (no copy of it is made).
//!
//! Files are written to a temporary name, fsynced, renamed into place and the directory
//! fsynced, so a crash leaves either the old file or the complete new one.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use openraft::{BasicNode, SnapshotMeta};
use serde::{Deserialize, Serialize};

use super::spaces::{FORMAT_VERSION, MIN_READABLE_FORMAT};
use crate::raft::{NodeId, codec};
use crate::state::State;

const MAGIC: &[u8; 8] = b"FLOTSNAP";
const PREFIX_LEN: usize = MAGIC.len() + 4;

/// The header of a snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotHeader {
    /// The on-disk format version of the snapshot.
    pub format_version: u32,
    /// Id, last log id and membership.
    pub meta: SnapshotMeta<NodeId, BasicNode>,
}

/// Why snapshot bytes could not be read.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// The snapshot is in a format this build does not read.
    #[error(
        "snapshot format version {found} is not supported: this flotilla-coordinator reads format version {supported}"
    )]
    UnsupportedFormat {
        /// The snapshot's version.
        found: u32,
        /// The version this build reads.
        supported: u32,
    },
    /// The bytes are not a complete snapshot.
    #[error("malformed snapshot: {0}")]
    Malformed(String),
    /// The snapshot could not be encoded.
    #[error("encoding: {0}")]
    Encode(String),
}

/// Encodes a snapshot of `state` described by `meta`. `size_hint` is the size of the
/// previous snapshot, if any, to allocate once.
pub fn encode(
    meta: &SnapshotMeta<NodeId, BasicNode>,
    state: &State,
    size_hint: usize,
) -> Result<Vec<u8>, SnapshotError> {
    let header = serde_json::to_vec(&SnapshotHeader { format_version: FORMAT_VERSION, meta: meta.clone() })
        .map_err(|e| SnapshotError::Encode(format!("header: {e}")))?;
    let header_len = u32::try_from(header.len()).map_err(|_| SnapshotError::Encode("header too long".into()))?;
    let mut out = Vec::with_capacity(PREFIX_LEN + header.len() + size_hint.max(4096));
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&header_len.to_be_bytes());
    out.extend_from_slice(&header);
    codec::encode_into(state, out).map_err(|e| SnapshotError::Encode(format!("state: {e}")))
}

/// Reads the header of snapshot `bytes`; returns it and where the state starts.
pub fn decode_header(bytes: &[u8]) -> Result<(SnapshotHeader, usize), SnapshotError> {
    let malformed = |what: &str| SnapshotError::Malformed(what.to_owned());
    if bytes.len() < PREFIX_LEN || &bytes[..MAGIC.len()] != MAGIC {
        return Err(malformed("it does not start with the snapshot magic bytes"));
    }
    let mut len = [0u8; 4];
    len.copy_from_slice(&bytes[MAGIC.len()..PREFIX_LEN]);
    let end = usize::try_from(u32::from_be_bytes(len))
        .ok()
        .and_then(|len| PREFIX_LEN.checked_add(len))
        .filter(|end| *end <= bytes.len())
        .ok_or_else(|| malformed("the header runs past the end"))?;
    let header = &bytes[PREFIX_LEN..end];

    /// Reads only the version, whatever else the header of another version holds.
    #[derive(Deserialize)]
    struct Version {
        format_version: u32,
    }
    let version: Version =
        serde_json::from_slice(header).map_err(|e| SnapshotError::Malformed(format!("header: {e}")))?;
    if !(MIN_READABLE_FORMAT..=FORMAT_VERSION).contains(&version.format_version) {
        return Err(SnapshotError::UnsupportedFormat { found: version.format_version, supported: FORMAT_VERSION });
    }
    let header = serde_json::from_slice(header).map_err(|e| SnapshotError::Malformed(format!("header: {e}")))?;
    Ok((header, end))
}

/// Reads a whole snapshot.
pub fn decode(bytes: &[u8]) -> Result<(SnapshotHeader, State), SnapshotError> {
    let (header, start) = decode_header(bytes)?;
    let malformed = |e: codec::CodecError| SnapshotError::Malformed(format!("state: {e}"));
    let state = if header.format_version == 2 {
        codec::decode::<crate::state::StateV2>(&bytes[start..]).map_err(malformed)?.into()
    } else if header.format_version == 3 {
        codec::decode::<crate::state::StateV3>(&bytes[start..]).map_err(malformed)?.into()
    } else if header.format_version == 4 {
        codec::decode::<crate::state::StateV4>(&bytes[start..]).map_err(malformed)?.into()
    } else if header.format_version <= 6 {
        codec::decode::<crate::state::StateV6>(&bytes[start..]).map_err(malformed)?.into()
    } else if header.format_version == 7 {
        codec::decode::<crate::state::StateV7>(&bytes[start..]).map_err(malformed)?.into()
    } else if header.format_version == 8 {
        codec::decode::<crate::state::StateV8>(&bytes[start..]).map_err(malformed)?.into()
    } else if header.format_version == 9 {
        codec::decode::<crate::state::StateV9>(&bytes[start..]).map_err(malformed)?.into()
    } else {
        codec::decode(&bytes[start..]).map_err(malformed)?
    };
    Ok((header, state))
}

/// The directory holding snapshot files.
#[derive(Debug, Clone)]
pub struct SnapshotDir {
    path: PathBuf,
}

impl SnapshotDir {
    /// Opens the directory, creating it if needed.
    pub fn open(path: PathBuf) -> io::Result<Self> {
        fs::create_dir_all(&path)?;
        Ok(Self { path })
    }

    /// The directory's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The path of file `name`.
    pub fn file(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    /// Writes `bytes` to file `name` so that after a crash it is either absent or
    /// complete.
    pub fn write_atomically(&self, name: &str, bytes: &[u8]) -> io::Result<()> {
        let tmp = self.path.join(format!("{name}.tmp"));
        let mut file = File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        drop(file);
        fs::rename(&tmp, self.file(name))?;
        self.sync()
    }

    /// Reads file `name`.
    pub fn read(&self, name: &str) -> io::Result<Vec<u8>> {
        fs::read(self.file(name))
    }

    /// Removes every snapshot and temporary file except `keep`.
    pub fn remove_all_but(&self, keep: Option<&str>) -> io::Result<()> {
        let mut removed = false;
        for entry in fs::read_dir(&self.path)? {
            let entry = entry?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if Some(name) != keep && (name.ends_with(".snap") || name.ends_with(".tmp")) {
                fs::remove_file(entry.path())?;
                removed = true;
            }
        }
        if removed { self.sync() } else { Ok(()) }
    }

    /// Fsyncs the directory so renames and removals in it are durable.
    fn sync(&self) -> io::Result<()> {
        File::open(&self.path)?.sync_all()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_snapshot_round_trips_and_a_newer_version_is_refused() {
        let meta = SnapshotMeta { snapshot_id: "1-1-1".to_owned(), ..Default::default() };
        let bytes = encode(&meta, &State::default(), 0).unwrap();
        let (header, state) = decode(&bytes).unwrap();
        assert_eq!(header.meta, meta);
        assert_eq!(state, State::default());

        let with_version = |header: &[u8]| {
            let mut bytes = MAGIC.to_vec();
            bytes.extend_from_slice(&u32::try_from(header.len()).unwrap().to_be_bytes());
            bytes.extend_from_slice(header);
            bytes.extend_from_slice(b"{}");
            bytes
        };
        let newer = format!(r#"{{"format_version":{},"something":"new"}}"#, FORMAT_VERSION + 1);
        let err = decode(&with_version(newer.as_bytes())).unwrap_err();
        assert!(
            matches!(err, SnapshotError::UnsupportedFormat { found, supported: FORMAT_VERSION } if found == FORMAT_VERSION + 1),
            "{err}"
        );
        // A JSON snapshot of format version 1 is refused by its header, before its state
        // is parsed.
        let err = decode(&with_version(br#"{"format_version":1,"meta":{}}"#)).unwrap_err();
        assert!(matches!(err, SnapshotError::UnsupportedFormat { found: 1, supported: FORMAT_VERSION }), "{err}");
        assert!(matches!(decode(b"garbage"), Err(SnapshotError::Malformed(_))));

        let mut longer = bytes;
        longer.push(0);
        assert!(matches!(decode(&longer), Err(SnapshotError::Malformed(_))), "trailing bytes are refused");
    }

    /// A snapshot of `format` holding `state` encoded as that format wrote it.
    fn old_snapshot(format: u32, state: &impl Serialize) -> (SnapshotMeta<NodeId, BasicNode>, Vec<u8>) {
        let meta = SnapshotMeta { snapshot_id: "1-1-1".to_owned(), ..Default::default() };
        let header = serde_json::to_vec(&SnapshotHeader { format_version: format, meta: meta.clone() }).unwrap();
        let mut bytes = MAGIC.to_vec();
        bytes.extend_from_slice(&u32::try_from(header.len()).unwrap().to_be_bytes());
        bytes.extend_from_slice(&header);
        (meta, codec::encode_into(state, bytes).unwrap())
    }

    #[test]
    fn a_format_2_snapshot_is_read_and_migrated() {
        let (meta, bytes) = old_snapshot(2, &crate::state::StateV2::default());
        let (header, state) = decode(&bytes).unwrap();
        assert_eq!((header.format_version, header.meta), (2, meta));
        assert_eq!(state, State::default());
        // Read as the current format, the same bytes are too short: the migration is
        // what reads them.
        let (_, start) = decode_header(&bytes).unwrap();
        assert!(codec::decode::<State>(&bytes[start..]).is_err());
    }

    #[test]
    fn a_format_3_snapshot_is_read_and_migrated() {
        let (meta, bytes) = old_snapshot(3, &crate::state::StateV3::default());
        let (header, state) = decode(&bytes).unwrap();
        assert_eq!((header.format_version, header.meta), (3, meta));
        assert_eq!(state, State::default());
        let (_, start) = decode_header(&bytes).unwrap();
        assert!(codec::decode::<State>(&bytes[start..]).is_err());
    }

    /// Format 4's events had no term (`state::legacy` checks the migration of a release
    /// and its events); its snapshots are read through that layout.
    #[test]
    fn a_format_4_snapshot_is_read_and_migrated() {
        let (meta, bytes) = old_snapshot(4, &crate::state::StateV4::default());
        let (header, state) = decode(&bytes).unwrap();
        assert_eq!((header.format_version, header.meta), (4, meta));
        assert_eq!(state, State::default());
    }

    /// Format 7's runs had no canary analyses (`state::legacy` checks the migration of
    /// a release); its snapshots are read through that layout.
    #[test]
    fn a_format_7_snapshot_is_read_and_migrated() {
        let (meta, bytes) = old_snapshot(7, &crate::state::StateV7::default());
        let (header, state) = decode(&bytes).unwrap();
        assert_eq!((header.format_version, header.meta), (7, meta));
        assert_eq!(state, State::default());
    }

    /// Format 8's compacted releases had no change time (`state::legacy` checks the
    /// migration of one); its snapshots are read through that layout.
    #[test]
    fn a_format_8_snapshot_is_read_and_migrated() {
        let (meta, bytes) = old_snapshot(8, &crate::state::StateV8::default());
        let (header, state) = decode(&bytes).unwrap();
        assert_eq!((header.format_version, header.meta), (8, meta));
        assert_eq!(state, State::default());
    }

    /// Format 9's state ended before the release policy; its snapshots are read
    /// through that layout (no windows).
    #[test]
    fn a_format_9_snapshot_is_read_and_migrated() {
        let (meta, bytes) = old_snapshot(9, &crate::state::StateV9::default());
        let (header, state) = decode(&bytes).unwrap();
        assert_eq!((header.format_version, header.meta), (9, meta));
        assert_eq!(state, State::default());
    }
}
