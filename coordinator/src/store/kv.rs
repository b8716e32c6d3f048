//! The storage boundary: an ordered, durable key-value engine with typed key spaces.
//!
//! Everything above this module speaks in key spaces ([`KeySpace`]): a stable name, a key
//! type with an order-preserving byte encoding ([`Key`]) and a serde value type. Engines
//! ([`KvEngine`]) only see bytes and key-space names, so replacing sled means writing one
//! more implementation of [`KvEngine`], not touching the Raft storage code.
//!
//! Values are encoded with the compact binary codec of `raft::codec`: log entries are
//! most of what is written, and it is smaller and cheaper to write and parse than JSON
//! (no escaping of the spec text every entry carries). A key space whose record every
//! version must read — the format record — says so with [`ValueEncoding::Json`].

use std::collections::BTreeMap;
use std::fmt::{self, Debug};
use std::ops::{Bound, RangeBounds};

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::raft::codec;

/// A stored pair as engines see it: encoded key, encoded value.
pub type RawPair = (Vec<u8>, Vec<u8>);

/// A stored pair of key space `S`.
pub type Pair<S> = (<S as KeySpace>::Key, <S as KeySpace>::Value);

/// The final value (`None`: removed) of every key a batch touches, per key space name.
pub type ResolvedBatch = BTreeMap<&'static str, BTreeMap<Vec<u8>, Option<Vec<u8>>>>;

/// How the values of a key space are encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueEncoding {
    /// `raft::codec`: compact, not self-describing.
    Binary,
    /// JSON: for records every version of the software must be able to read.
    Json,
}

/// A typed key space: one ordered map from `Key` to `Value` inside an engine.
pub trait KeySpace: 'static {
    /// The key space's stable name. It is part of the on-disk format: renaming it loses
    /// the data written under the old name.
    const NAME: &'static str;
    /// How values are encoded. Part of the on-disk format.
    const ENCODING: ValueEncoding = ValueEncoding::Binary;
    /// The key type.
    type Key: Key;
    /// The value type.
    type Value: Serialize + DeserializeOwned;
}

/// A key with an order-preserving byte encoding: `a < b` exactly when
/// `a.encode() < b.encode()` compared as bytes.
pub trait Key: Sized {
    /// Encodes the key.
    fn encode(&self) -> Vec<u8>;
    /// Decodes a key written by [`Key::encode`].
    fn decode(bytes: &[u8]) -> Result<Self, KvError>;
}

impl Key for u64 {
    /// Big-endian, so byte order is numeric order.
    fn encode(&self) -> Vec<u8> {
        self.to_be_bytes().to_vec()
    }

    fn decode(bytes: &[u8]) -> Result<Self, KvError> {
        let array: [u8; 8] =
            bytes.try_into().map_err(|_| KvError::Corrupt(format!("a u64 key has 8 bytes, found {}", bytes.len())))?;
        Ok(u64::from_be_bytes(array))
    }
}

/// Why a key-value operation failed.
#[derive(Debug, thiserror::Error)]
pub enum KvError {
    /// The engine failed (I/O error, corruption detected by the engine, ...).
    #[error("storage engine error: {0}")]
    Engine(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// A value could not be encoded or decoded.
    #[error("key space {space}: value codec: {source}")]
    Codec {
        /// The key space.
        space: &'static str,
        /// The codec's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// Stored bytes do not have the shape this build expects.
    #[error("corrupt data: {0}")]
    Corrupt(String),
}

/// One write of a [`WriteBatch`], at the byte level engines see.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BatchOp {
    /// Set `key` to `value`.
    Put {
        /// The key space's name.
        space: &'static str,
        /// The encoded key.
        key: Vec<u8>,
        /// The encoded value.
        value: Vec<u8>,
    },
    /// Remove `key` if present.
    Delete {
        /// The key space's name.
        space: &'static str,
        /// The encoded key.
        key: Vec<u8>,
    },
    /// Remove every key in a range, including keys put earlier in the same batch.
    DeleteRange {
        /// The key space's name.
        space: &'static str,
        /// The encoded lower bound.
        from: Bound<Vec<u8>>,
        /// The encoded upper bound.
        to: Bound<Vec<u8>>,
    },
}

/// Writes to one or more key spaces that an engine applies atomically: after a crash
/// either all of them are visible or none is, and readers never see a part of it.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct WriteBatch {
    ops: Vec<BatchOp>,
}

impl WriteBatch {
    /// An empty batch.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets `key` to `value` in `S`.
    pub fn put<S: KeySpace>(&mut self, key: &S::Key, value: &S::Value) -> Result<&mut Self, KvError> {
        let value = encode_value::<S>(value)?;
        self.ops.push(BatchOp::Put { space: S::NAME, key: key.encode(), value });
        Ok(self)
    }

    /// Removes `key` from `S`.
    pub fn delete<S: KeySpace>(&mut self, key: &S::Key) -> &mut Self {
        self.ops.push(BatchOp::Delete { space: S::NAME, key: key.encode() });
        self
    }

    /// Removes every key of `S` inside `range`.
    pub fn delete_range<S: KeySpace>(&mut self, range: impl RangeBounds<S::Key>) -> &mut Self {
        let (from, to) = encode_range::<S>(&range);
        self.ops.push(BatchOp::DeleteRange { space: S::NAME, from, to });
        self
    }

    /// Whether the batch writes nothing.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// The writes, in the order they were added (a later write to a key wins).
    pub fn ops(&self) -> &[BatchOp] {
        &self.ops
    }
}

/// An ordered, durable key-value engine.
///
/// Engines implement the byte-level methods; everything else uses the typed methods
/// provided on top of them. Writes become visible to readers when [`KvEngine::write`]
/// returns and durable when a later [`KvEngine::flush`] returns: a successful flush
/// makes every write that returned before it survive a crash, and a crash never keeps
/// a later write while losing an earlier one.
pub trait KvEngine: Clone + Debug + Send + Sync + 'static {
    /// The value under `key` in `space`.
    fn get_raw(&self, space: &'static str, key: &[u8]) -> Result<Option<Vec<u8>>, KvError>;

    /// Pairs of `space` with keys in `(from, to)`, in key order, at most `limit` of them
    /// (`usize::MAX` for all), from the greatest key down when `reverse`.
    fn scan_raw(
        &self,
        space: &'static str,
        from: Bound<Vec<u8>>,
        to: Bound<Vec<u8>>,
        reverse: bool,
        limit: usize,
    ) -> Result<Vec<RawPair>, KvError>;

    /// Applies `batch` atomically.
    fn write(&self, batch: &WriteBatch) -> Result<(), KvError>;

    /// Blocks until every write that returned before this call is on stable storage.
    fn flush(&self) -> Result<(), KvError>;

    /// The value under `key` in `S`.
    fn get<S: KeySpace>(&self, key: &S::Key) -> Result<Option<S::Value>, KvError> {
        self.get_raw(S::NAME, &key.encode())?.map(|bytes| decode_value::<S>(&bytes)).transpose()
    }

    /// The pairs of `S` with keys in `range`, in key order, at most `limit` of them.
    fn range<S: KeySpace>(&self, range: impl RangeBounds<S::Key>, limit: usize) -> Result<Vec<Pair<S>>, KvError> {
        let (from, to) = encode_range::<S>(&range);
        decode_pairs::<S>(self.scan_raw(S::NAME, from, to, false, limit)?)
    }

    /// The pair of `S` with the greatest key.
    fn last<S: KeySpace>(&self) -> Result<Option<Pair<S>>, KvError> {
        let pairs = self.scan_raw(S::NAME, Bound::Unbounded, Bound::Unbounded, true, 1)?;
        Ok(decode_pairs::<S>(pairs)?.pop())
    }

    /// Whether `S` holds no key.
    fn is_empty<S: KeySpace>(&self) -> Result<bool, KvError> {
        Ok(self.scan_raw(S::NAME, Bound::Unbounded, Bound::Unbounded, false, 1)?.is_empty())
    }

    /// Sets one key and applies it as a batch of one.
    fn put<S: KeySpace>(&self, key: &S::Key, value: &S::Value) -> Result<(), KvError> {
        let mut batch = WriteBatch::new();
        batch.put::<S>(key, value)?;
        self.write(&batch)
    }
}

/// Resolves a batch into the final state of every touched key, per key space, given
/// the keys currently stored in a range (`existing`). Engines without native range
/// deletes or multi-key atomic writes use it to build what they commit.
pub fn resolve_batch(
    batch: &WriteBatch,
    mut existing: impl FnMut(&'static str, &Bound<Vec<u8>>, &Bound<Vec<u8>>) -> Result<Vec<Vec<u8>>, KvError>,
) -> Result<ResolvedBatch, KvError> {
    let mut out = ResolvedBatch::new();
    for op in batch.ops() {
        match op {
            BatchOp::Put { space, key, value } => {
                out.entry(space).or_default().insert(key.clone(), Some(value.clone()));
            }
            BatchOp::Delete { space, key } => {
                out.entry(space).or_default().insert(key.clone(), None);
            }
            BatchOp::DeleteRange { space, from, to } => {
                let writes = out.entry(space).or_default();
                let range = (from.clone(), to.clone());
                for (key, value) in writes.iter_mut() {
                    if range.contains(key) {
                        *value = None;
                    }
                }
                for key in existing(space, from, to)? {
                    writes.insert(key, None);
                }
            }
        }
    }
    Ok(out)
}

impl fmt::Display for BatchOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BatchOp::Put { space, key, value } => write!(f, "put {space}/{key:02x?} ({} bytes)", value.len()),
            BatchOp::Delete { space, key } => write!(f, "delete {space}/{key:02x?}"),
            BatchOp::DeleteRange { space, from, to } => write!(f, "delete {space}/{from:02x?}..{to:02x?}"),
        }
    }
}

fn encode_value<S: KeySpace>(value: &S::Value) -> Result<Vec<u8>, KvError> {
    let failed = |source: Box<dyn std::error::Error + Send + Sync>| KvError::Codec { space: S::NAME, source };
    match S::ENCODING {
        ValueEncoding::Binary => codec::encode(value).map_err(|e| failed(e.into())),
        ValueEncoding::Json => serde_json::to_vec(value).map_err(|e| failed(e.into())),
    }
}

fn decode_value<S: KeySpace>(bytes: &[u8]) -> Result<S::Value, KvError> {
    let failed = |source: Box<dyn std::error::Error + Send + Sync>| KvError::Codec { space: S::NAME, source };
    match S::ENCODING {
        ValueEncoding::Binary => codec::decode(bytes).map_err(|e| failed(e.into())),
        ValueEncoding::Json => serde_json::from_slice(bytes).map_err(|e| failed(e.into())),
    }
}

fn decode_pairs<S: KeySpace>(pairs: Vec<RawPair>) -> Result<Vec<Pair<S>>, KvError> {
    pairs.into_iter().map(|(k, v)| Ok((S::Key::decode(&k)?, decode_value::<S>(&v)?))).collect()
}

fn encode_range<S: KeySpace>(range: &impl RangeBounds<S::Key>) -> (Bound<Vec<u8>>, Bound<Vec<u8>>) {
    let encode = |bound: Bound<&S::Key>| match bound {
        Bound::Included(k) => Bound::Included(k.encode()),
        Bound::Excluded(k) => Bound::Excluded(k.encode()),
        Bound::Unbounded => Bound::Unbounded,
    };
    (encode(range.start_bound()), encode(range.end_bound()))
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Numbers;
    impl KeySpace for Numbers {
        const NAME: &'static str = "numbers";
        type Key = u64;
        type Value = String;
    }

    #[test]
    fn u64_keys_sort_numerically_as_bytes() {
        let keys = [0u64, 1, 255, 256, 65_535, 1 << 40, u64::MAX];
        for pair in keys.windows(2) {
            assert!(pair[0].encode() < pair[1].encode(), "{} < {}", pair[0], pair[1]);
            assert_eq!(u64::decode(&pair[1].encode()).unwrap(), pair[1]);
        }
        assert!(matches!(u64::decode(&[1, 2]), Err(KvError::Corrupt(_))));
    }

    #[test]
    fn a_range_delete_removes_keys_put_earlier_in_the_same_batch() {
        let mut batch = WriteBatch::new();
        batch.put::<Numbers>(&3, &"three".to_owned()).unwrap();
        batch.put::<Numbers>(&9, &"nine".to_owned()).unwrap();
        batch.delete_range::<Numbers>(5..);
        batch.put::<Numbers>(&10, &"ten".to_owned()).unwrap();
        let resolved = resolve_batch(&batch, |_, _, _| Ok(vec![7u64.encode()])).unwrap();
        let writes = &resolved["numbers"];
        assert!(writes[&3u64.encode()].is_some());
        assert_eq!(writes[&7u64.encode()], None);
        assert_eq!(writes[&9u64.encode()], None);
        assert!(writes[&10u64.encode()].is_some());
    }
}
