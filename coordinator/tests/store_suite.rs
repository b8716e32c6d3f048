//! Runs openraft's storage conformance suite against the store: the log in segment
//! files, its metadata and the state machine's bookkeeping in sled.

use flotilla_coordinator::raft::{NodeId, TypeConfig};
use flotilla_coordinator::store::{self, LogStore, StateMachineStore};
use openraft::StorageError;
use openraft::testing::{StoreBuilder, Suite};
use tempfile::TempDir;

/// Opens a store in a fresh temporary directory; the directory lives as long as the
/// returned guard.
struct StoreBuilderInTempDir;

impl StoreBuilder<TypeConfig, LogStore, StateMachineStore, TempDir> for StoreBuilderInTempDir {
    async fn build(&self) -> Result<(TempDir, LogStore, StateMachineStore), StorageError<NodeId>> {
        let dir = tempfile::tempdir().map_err(|e| openraft::StorageIOError::write(&e))?;
        let (log, sm) = store::open(dir.path()).map_err(|e| openraft::StorageIOError::write(&e))?;
        Ok((dir, log, sm))
    }
}

#[test]
fn the_store_passes_openraft_storage_suite() -> Result<(), Box<StorageError<NodeId>>> {
    Suite::test_all(StoreBuilderInTempDir).map_err(Box::new)
}
