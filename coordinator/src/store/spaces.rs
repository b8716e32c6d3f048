//! The key spaces of a coordinator's data directory and the on-disk format record.
//!
//! | key space | key | value |
//! |---|---|---|
//! | `format` | [`FormatKey`] | [`FormatRecord`]: the on-disk format version |
//! | `raft_log` | log index (u64) | a Raft log [`Entry`]: formats 5 and older only (see [`FORMAT_VERSION`]) |
//! | `raft_meta` | [`RaftMetaKey`] | vote, committed log id, last purged log id, cluster id |
//! | `sm_meta` | [`SmMetaKey`] | the durable image of the state machine: its snapshot |
//!
//! Values are binary (`raft::codec`) except the format record, which is JSON so that
//! every version can read which version wrote the data.

use openraft::{BasicNode, LogId, SnapshotMeta, Vote};
use serde::{Deserialize, Serialize};

use super::kv::{Key, KeySpace, KvError, ValueEncoding};
use crate::raft::identity::ClusterId;
use crate::raft::{Entry, NodeId};

/// The version of the on-disk format this build writes and reads: the key spaces and
/// their encodings, and the snapshot file layout. Bump it on any incompatible change.
///
/// - 1: values and snapshot state as JSON.
/// - 2: values (but the format record) and snapshot state in the binary codec.
/// - 3: the state keeps join tokens and enrolled hosts (a field at the end of the
///   snapshot state, a new command at the end of the log entry's operations). Format 2
///   is read and migrated: its log entries are valid format 3 entries, and its
///   snapshot state is read as format 2 and given an empty enrolment.
/// - 4: the state keeps operator tokens and the audit trail (in place of an audit list
///   no build wrote to); two new commands at the end of the log entry's operations,
///   and the audit command, never proposed before, carries its records. Formats 2 and
///   3 are read and migrated: their log entries are valid format 4 entries, and their
///   snapshot state is read as written and given no tokens and an empty trail.
/// - 5: release events record the term of the entry that committed them (a field at
///   the end of each event in the snapshot state). Formats 2 to 4 are read and
///   migrated: their log entries are valid format 5 entries, and their events are
///   given term 0 ("not known").
/// - 6: the Raft log moves out of the engine into segment files (`<data>/log/`, their
///   own layout in `segments.rs`, versioned in each file's header); the `raft_log` key
///   space is empty. Formats 2 to 5 are migrated on open: their entries are copied
///   into fresh segments and synced, then one atomic write removes them from the
///   engine and records format 6 (a crash before it redoes the copy). A release fact
///   may be an operator's note and a release event a note (variants at the end), which
///   format 5 builds cannot decode, in log entries and snapshots alike.
/// - 7: a release keeps its submission once, with the fleet it was planned against
///   typed instead of as JSON, and the state ends with the compacted releases
///   (finished releases beyond the retention, kept as summaries). A release is
///   submitted by a new operation at the end of the log entry's operations, and
///   finished releases are compacted by another; format 6 log entries are valid
///   format 7 entries (their submissions still applied), and format 5 and 6 snapshot
///   states are read as written and migrated (each fleet parsed once, no history).
/// - 8: a release's run ends with its canary analyses (each batch's sides, rounds of
///   samples and verdict), and release facts and events have analysis variants at the
///   end, which format 7 builds cannot decode. Format 7 log entries are valid format 8
///   entries; format 2 to 7 snapshot states are read as written and migrated (no
///   analyses).
/// - 9: guided failure: release facts and events have variants at the end (a host
///   retried, a host excluded) and a host in a service's run may be excluded (a
///   variant at the end of its state), which format 8 builds cannot decode; a compacted
///   release ends with its change time and each of its services with when it
///   finished (for delivery figures). Format 8 log entries are valid format 9 entries;
///   format 2 to 8 snapshot states are read as written and migrated (change and finish
///   times not known: 0).
/// - 10: release policy: the state ends with the deployment windows, a log entry's
///   operation may change them (a variant at the end), and release facts and events
///   have a variant at the end (a batch held by the windows), which format 9 builds
///   cannot decode. Format 9 log entries are valid format 10 entries; format 2 to 9
///   snapshot states are read as written and migrated (no windows).
pub const FORMAT_VERSION: u32 = 10;

/// The oldest format this build reads (and migrates to [`FORMAT_VERSION`]).
pub const MIN_READABLE_FORMAT: u32 = 2;

/// The `format` key space: what version of the format the data is in.
#[derive(Debug)]
pub struct Format;

impl KeySpace for Format {
    const NAME: &'static str = "format";
    const ENCODING: ValueEncoding = ValueEncoding::Json;
    type Key = FormatKey;
    type Value = FormatRecord;
}

/// The keys of the `format` key space.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum FormatKey {
    /// The format record.
    Version,
}

/// The on-disk format record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FormatRecord {
    /// The format version the data is in.
    pub version: u32,
    /// The software that first wrote the data (`flotilla-coordinator 0.1.0`), for humans.
    pub written_by: String,
}

impl FormatRecord {
    /// The record this build writes.
    pub fn current() -> Self {
        Self { version: FORMAT_VERSION, written_by: format!("flotilla-coordinator {}", env!("CARGO_PKG_VERSION")) }
    }
}

/// The `raft_log` key space: log entries by index, where formats 5 and older kept the
/// Raft log; read only to migrate it to segment files.
#[derive(Debug)]
pub struct RaftLog;

impl KeySpace for RaftLog {
    const NAME: &'static str = "raft_log";
    type Key = u64;
    type Value = Entry;
}

/// The `raft_meta` key space: Raft's own durable state besides the log.
#[derive(Debug)]
pub struct RaftMeta;

impl KeySpace for RaftMeta {
    const NAME: &'static str = "raft_meta";
    type Key = RaftMetaKey;
    type Value = RaftMetaValue;
}

/// The keys of the `raft_meta` key space.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum RaftMetaKey {
    /// The vote ([`RaftMetaValue::Vote`]).
    Vote,
    /// The last committed log id this node knows of ([`RaftMetaValue::LogId`]).
    Committed,
    /// The last log id removed from the log ([`RaftMetaValue::LogId`]).
    LastPurged,
    /// The cluster this node belongs to ([`RaftMetaValue::Cluster`]).
    ClusterId,
}

/// The values of the `raft_meta` key space.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RaftMetaValue {
    /// A vote.
    Vote(Vote<NodeId>),
    /// A log id.
    LogId(LogId<NodeId>),
    /// The cluster's identity.
    Cluster(ClusterId),
}

/// The `sm_meta` key space: what state machine image is durable.
#[derive(Debug)]
pub struct SmMeta;

impl KeySpace for SmMeta {
    const NAME: &'static str = "sm_meta";
    type Key = SmMetaKey;
    type Value = SnapshotRecord;
}

/// The keys of the `sm_meta` key space.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum SmMetaKey {
    /// The current snapshot.
    CurrentSnapshot,
}

/// The current snapshot: the state machine's durable image. Its `meta` holds the last
/// applied log id and membership of that image; the state applied after it is rebuilt
/// from the log on start.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotRecord {
    /// Local sequence number; names the file (`snapshots/<seq>.snap`).
    pub seq: u64,
    /// The snapshot's metadata (id, last log id, membership).
    pub meta: SnapshotMeta<NodeId, BasicNode>,
}

impl SnapshotRecord {
    /// The snapshot's file name inside the snapshot directory.
    pub fn file_name(&self) -> String {
        snapshot_file_name(self.seq)
    }
}

/// The file name of the snapshot with local sequence number `seq`. Names come from a
/// local counter, never from a snapshot id received from a peer.
pub fn snapshot_file_name(seq: u64) -> String {
    format!("{seq:020}.snap")
}

/// Keys that are one tag byte. The tags are part of the on-disk format.
macro_rules! tag_key {
    ($ty:ty { $($variant:ident = $tag:literal),+ $(,)? }) => {
        impl Key for $ty {
            fn encode(&self) -> Vec<u8> {
                match self {
                    $(Self::$variant => vec![$tag],)+
                }
            }

            fn decode(bytes: &[u8]) -> Result<Self, KvError> {
                match bytes {
                    $([$tag] => Ok(Self::$variant),)+
                    _ => Err(KvError::Corrupt(format!(
                        "unknown {} key {bytes:02x?}",
                        stringify!($ty)
                    ))),
                }
            }
        }
    };
}

tag_key!(FormatKey { Version = 1 });
tag_key!(RaftMetaKey { Vote = 1, Committed = 2, LastPurged = 3, ClusterId = 4 });
tag_key!(SmMetaKey { CurrentSnapshot = 1 });

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tag_keys_round_trip_and_refuse_unknown_tags() {
        for key in [RaftMetaKey::Vote, RaftMetaKey::Committed, RaftMetaKey::LastPurged, RaftMetaKey::ClusterId] {
            assert_eq!(RaftMetaKey::decode(&key.encode()).unwrap(), key);
        }
        assert!(RaftMetaKey::Vote.encode() < RaftMetaKey::LastPurged.encode());
        assert!(matches!(SmMetaKey::decode(&[9]), Err(KvError::Corrupt(_))));
        assert_eq!(snapshot_file_name(7), "00000000000000000007.snap");
    }
}
