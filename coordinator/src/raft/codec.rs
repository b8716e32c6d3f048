//! The binary encoding of what Raft stores and sends: log entries and the raft
//! metadata in the key-value engine, snapshot state, and openraft's messages between
//! coordinators.
//!
//! [postcard]: compact (varint integers, length-prefixed strings, variant indexes for
//! enums), not self-describing, and stable in its 1.x wire format. It relies on the rule
//! the state types follow (`state/mod.rs`): serde's default representations only, no
//! `tag`, `untagged`, `flatten` or skipped fields. A value encodes to the same bytes on
//! every node, and decoding refuses bytes that do not fit the type or trail it.
//!
//! Changing what these bytes mean (the codec, or a field or variant of a stored type in
//! an incompatible way) changes the on-disk format: bump `store::FORMAT_VERSION`.

use serde::Serialize;
use serde::de::DeserializeOwned;

/// Why a value could not be encoded or decoded.
pub type CodecError = postcard::Error;

/// Encodes `value`.
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, CodecError> {
    postcard::to_stdvec(value)
}

/// Encodes `value` at the end of `out`.
pub fn encode_into<T: Serialize + ?Sized>(value: &T, out: Vec<u8>) -> Result<Vec<u8>, CodecError> {
    postcard::to_extend(value, out)
}

/// Decodes a whole value from `bytes`; trailing bytes are an error.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    let (value, rest) = postcard::take_from_bytes(bytes)?;
    if rest.is_empty() { Ok(value) } else { Err(postcard::Error::DeserializeBadEncoding) }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};
    use std::fmt::Debug;

    use openraft::error::{Fatal, InstallSnapshotError, RaftError, SnapshotMismatch};
    use openraft::raft::{AppendEntriesRequest, AppendEntriesResponse, VoteRequest, VoteResponse};
    use openraft::{BasicNode, CommittedLeaderId, EntryPayload, LogId, Membership, SnapshotSegmentId, Vote};
    use serde_reflection::{Tracer, TracerConfig};

    use super::*;
    use crate::raft::{Entry, NodeId, TypeConfig};
    use crate::state::{Command, Op, Response, State};

    /// Encodes and decodes `value`, checks it comes back equal (by `Debug` for the
    /// openraft types without `PartialEq`), and that a truncated or extended encoding is
    /// refused.
    fn round_trip<T: Serialize + DeserializeOwned + Debug>(value: &T) -> Vec<u8> {
        let bytes = encode(value).unwrap_or_else(|e| panic!("encoding {value:?}: {e}"));
        let back: T = decode(&bytes).unwrap_or_else(|e| panic!("decoding {value:?}: {e}"));
        assert_eq!(format!("{back:?}"), format!("{value:?}"));
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(decode::<T>(&longer).is_err(), "trailing bytes after {value:?} are refused");
        if !bytes.is_empty() {
            assert!(decode::<T>(&bytes[..bytes.len() - 1]).is_err(), "a truncated {value:?} is refused");
        }
        bytes
    }

    fn log_id(term: u64, index: u64) -> LogId<NodeId> {
        LogId::new(CommittedLeaderId::new(term, 2), index)
    }

    /// A tracer whose sample strings are command ids (`<release>.<n>`), the one string
    /// in these types with a required shape; any other string takes it as well.
    fn tracer() -> Tracer {
        Tracer::new(TracerConfig::default().default_string_value("r-1.1".to_owned()))
    }

    /// One value of every variant of `Op`, whatever the variants are today: traced from
    /// its serde shape, so new variants are covered without editing this test.
    fn every_op() -> Vec<Op> {
        let mut tracer = tracer();
        let (_, ops) = tracer
            .trace_simple_type::<Op>()
            .unwrap_or_else(|e| panic!("state::Op must be traceable by serde-reflection (plain serde types): {e}"));
        assert!(!ops.is_empty());
        ops
    }

    #[test]
    fn every_op_variant_round_trips_as_a_command_and_a_log_entry() {
        let ops = every_op();
        let variants: BTreeSet<String> =
            ops.iter().map(|op| format!("{op:?}").split([' ', '(', '{']).next().unwrap().to_owned()).collect();
        assert_eq!(variants.len(), ops.len(), "one value per variant: {variants:?}");
        for (i, op) in ops.into_iter().enumerate() {
            round_trip(&op);
            let command = Command { at_unix_ms: -1_700_000_000_000, op };
            round_trip(&command);
            let index = u64::try_from(i).unwrap() + 1;
            round_trip(&Entry { log_id: log_id(7, index), payload: EntryPayload::Normal(command) });
        }
        let mut tracer = tracer();
        let (_, responses) = tracer.trace_simple_type::<Response>().expect("state::Response is traceable");
        for response in &responses {
            round_trip(response);
        }
    }

    #[test]
    fn a_state_built_from_every_op_round_trips() {
        let mut state = State::default();
        for (i, op) in every_op().into_iter().enumerate() {
            state.apply(u64::try_from(i).unwrap() + 1, 1, &Command { at_unix_ms: 1_000, op });
        }
        let bytes = encode(&state).unwrap();
        assert_eq!(decode::<State>(&bytes).unwrap(), state);
    }

    #[test]
    fn openraft_entries_and_messages_round_trip() {
        let nodes = BTreeMap::from([
            (1, BasicNode { addr: "10.0.0.1:7600".into() }),
            (2, BasicNode { addr: "10.0.0.2:7600".into() }),
            (4, BasicNode { addr: "10.0.0.4:7600".into() }),
        ]);
        let membership = Membership::new(vec![BTreeSet::from([1, 2]), BTreeSet::from([1, 2, 4])], nodes);
        let entries: Vec<Entry> = vec![
            Entry { log_id: log_id(1, 0), payload: EntryPayload::Membership(membership) },
            Entry { log_id: log_id(1, 1), payload: EntryPayload::Blank },
            Entry {
                log_id: log_id(1, u64::MAX),
                payload: EntryPayload::Normal(Command { at_unix_ms: 0, op: every_op().remove(0) }),
            },
        ];
        for entry in &entries {
            round_trip(entry);
        }
        round_trip(&AppendEntriesRequest::<TypeConfig> {
            vote: Vote::new_committed(3, 2),
            prev_log_id: Some(log_id(1, 9)),
            leader_commit: None,
            entries,
        });
        for response in [
            AppendEntriesResponse::Success,
            AppendEntriesResponse::PartialSuccess(Some(log_id(2, 3))),
            AppendEntriesResponse::Conflict,
            AppendEntriesResponse::HigherVote(Vote::new(9, 3)),
        ] {
            round_trip(&response);
        }
        round_trip(&VoteRequest { vote: Vote::new(4, 1), last_log_id: Some(log_id(3, 40)) });
        round_trip(&VoteResponse { vote: Vote::new(4, 1), vote_granted: true, last_log_id: None });
        round_trip(&RaftError::<NodeId, InstallSnapshotError>::APIError(InstallSnapshotError::SnapshotMismatch(
            SnapshotMismatch {
                expect: SnapshotSegmentId { id: "1-2-3".into(), offset: 0 },
                got: SnapshotSegmentId { id: "1-2-3".into(), offset: 1 << 20 },
            },
        )));
        round_trip(&RaftError::<NodeId, InstallSnapshotError>::Fatal(Fatal::Stopped));
    }
}
