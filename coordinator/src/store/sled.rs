//! The sled implementation of the storage boundary: one sled `Db`, one `Tree` per key
//! space.
//!
//! A batch that touches one key space is one sled batch; a batch over several key spaces
//! is one sled transaction over their trees. Both are atomic for readers and on
//! recovery. `flush` is sled's `flush`: it fsyncs sled's log, which holds the writes of
//! every tree in the order they were made.

use std::collections::HashMap;
use std::fmt;
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};

use sled::Transactional;
use sled::transaction::{ConflictableTransactionError, TransactionError};

use super::kv::{KvEngine, KvError, RawPair, WriteBatch, resolve_batch};

/// Memory sled may use for its page cache.
const CACHE_BYTES: u64 = 64 * 1024 * 1024;

/// A sled database holding Flotilla's key spaces.
#[derive(Clone)]
pub struct SledEngine {
    inner: Arc<Inner>,
}

struct Inner {
    db: sled::Db,
    path: PathBuf,
    trees: RwLock<HashMap<&'static str, sled::Tree>>,
}

impl fmt::Debug for SledEngine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SledEngine").field("path", &self.inner.path).finish_non_exhaustive()
    }
}

impl SledEngine {
    /// Opens (or creates) the database in directory `path`. Only one process may have it
    /// open at a time.
    pub fn open(path: &Path) -> Result<Self, KvError> {
        let db = sled::Config::new().path(path).cache_capacity(CACHE_BYTES).open().map_err(engine_error)?;
        Ok(Self { inner: Arc::new(Inner { db, path: path.to_owned(), trees: RwLock::default() }) })
    }

    /// The database directory.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    fn tree(&self, space: &'static str) -> Result<sled::Tree, KvError> {
        if let Some(tree) = self.inner.trees.read().unwrap_or_else(PoisonError::into_inner).get(space) {
            return Ok(tree.clone());
        }
        let tree = self.inner.db.open_tree(space).map_err(engine_error)?;
        self.inner.trees.write().unwrap_or_else(PoisonError::into_inner).insert(space, tree.clone());
        Ok(tree)
    }
}

impl SledEngine {
    /// The keys of `space` inside a range, without reading their values.
    fn keys_in(
        &self,
        space: &'static str,
        from: &Bound<Vec<u8>>,
        to: &Bound<Vec<u8>>,
    ) -> Result<Vec<Vec<u8>>, KvError> {
        if is_empty_range(from, to) {
            return Ok(Vec::new());
        }
        self.tree(space)?
            .range::<Vec<u8>, _>((from.clone(), to.clone()))
            .keys()
            .map(|key| key.map(|k| k.to_vec()).map_err(engine_error))
            .collect()
    }
}

impl KvEngine for SledEngine {
    fn get_raw(&self, space: &'static str, key: &[u8]) -> Result<Option<Vec<u8>>, KvError> {
        Ok(self.tree(space)?.get(key).map_err(engine_error)?.map(|v| v.to_vec()))
    }

    fn scan_raw(
        &self,
        space: &'static str,
        from: Bound<Vec<u8>>,
        to: Bound<Vec<u8>>,
        reverse: bool,
        limit: usize,
    ) -> Result<Vec<RawPair>, KvError> {
        if is_empty_range(&from, &to) {
            return Ok(Vec::new());
        }
        let iter = self.tree(space)?.range::<Vec<u8>, _>((from, to));
        let pairs = |item: sled::Result<(sled::IVec, sled::IVec)>| {
            item.map(|(k, v)| (k.to_vec(), v.to_vec())).map_err(engine_error)
        };
        if reverse { iter.rev().take(limit).map(pairs).collect() } else { iter.take(limit).map(pairs).collect() }
    }

    fn write(&self, batch: &WriteBatch) -> Result<(), KvError> {
        let resolved = resolve_batch(batch, |space, from, to| self.keys_in(space, from, to))?;
        let mut trees = Vec::with_capacity(resolved.len());
        let mut batches = Vec::with_capacity(resolved.len());
        for (space, writes) in resolved {
            let mut sled_batch = sled::Batch::default();
            for (key, value) in writes {
                match value {
                    Some(value) => sled_batch.insert(key, value),
                    None => sled_batch.remove(key),
                }
            }
            trees.push(self.tree(space)?);
            batches.push(sled_batch);
        }
        if trees.len() < 2 {
            // Zero or one key space: a plain sled batch is atomic.
            for (tree, batch) in trees.iter().zip(batches) {
                tree.apply_batch(batch).map_err(engine_error)?;
            }
            return Ok(());
        }
        trees
            .as_slice()
            .transaction(|views| {
                for (view, batch) in views.iter().zip(&batches) {
                    view.apply_batch(batch)?;
                }
                Ok::<(), ConflictableTransactionError<()>>(())
            })
            .map_err(|e| match e {
                TransactionError::Storage(e) => engine_error(e),
                TransactionError::Abort(()) => KvError::Corrupt("a write batch transaction aborted".to_owned()),
            })
    }

    fn flush(&self) -> Result<(), KvError> {
        self.inner.db.flush().map(drop).map_err(engine_error)
    }
}

/// sled panics on a range whose start is above its end; such a range holds nothing.
fn is_empty_range(from: &Bound<Vec<u8>>, to: &Bound<Vec<u8>>) -> bool {
    match (from, to) {
        (Bound::Included(a), Bound::Included(b)) => a > b,
        (Bound::Included(a) | Bound::Excluded(a), Bound::Excluded(b)) | (Bound::Excluded(a), Bound::Included(b)) => {
            a >= b
        }
        _ => false,
    }
}

fn engine_error(e: sled::Error) -> KvError {
    KvError::Engine(Box::new(e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::kv::KeySpace;

    struct Left;
    impl KeySpace for Left {
        const NAME: &'static str = "left";
        type Key = u64;
        type Value = u64;
    }
    struct Right;
    impl KeySpace for Right {
        const NAME: &'static str = "right";
        type Key = u64;
        type Value = String;
    }

    #[test]
    fn batches_over_two_key_spaces_apply_together_and_ranges_read_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let engine = SledEngine::open(dir.path()).unwrap();
        let mut batch = WriteBatch::new();
        for i in [5u64, 1, 300, 2] {
            batch.put::<Left>(&i, &(i * 10)).unwrap();
        }
        batch.put::<Right>(&1, &"one".to_owned()).unwrap();
        engine.write(&batch).unwrap();
        let keys: Vec<u64> = engine.range::<Left>(.., usize::MAX).unwrap().into_iter().map(|(k, _)| k).collect();
        assert_eq!(keys, [1, 2, 5, 300]);
        assert_eq!(engine.last::<Left>().unwrap(), Some((300, 3000)));
        assert_eq!(engine.range::<Left>(2..5, usize::MAX).unwrap(), [(2, 20)]);
        assert_eq!(engine.range::<Left>(.., 2).unwrap().len(), 2);
        assert_eq!(engine.get::<Right>(&1).unwrap().as_deref(), Some("one"));
        #[allow(clippy::reversed_empty_ranges)]
        let empty = engine.range::<Left>(9..3, usize::MAX).unwrap();
        assert!(empty.is_empty());

        let mut batch = WriteBatch::new();
        batch.delete_range::<Left>(..=5).delete::<Right>(&1);
        engine.write(&batch).unwrap();
        assert_eq!(engine.range::<Left>(.., usize::MAX).unwrap(), [(300, 3000)]);
        assert!(engine.is_empty::<Right>().unwrap());
        engine.flush().unwrap();
    }
}
