//! Flotilla's Raft: the openraft type configuration and the types built on it.

use std::io::Cursor;

use openraft::{BasicNode, TokioRuntime};

use crate::state::{Command, Response};

pub mod codec;
pub mod identity;
pub mod network;
pub mod proposer;

/// A coordinator's id in the cluster; never 0.
pub type NodeId = u64;

openraft::declare_raft_types!(
    /// The openraft type configuration of a Flotilla coordinator.
    pub TypeConfig:
        D = Command,
        R = Response,
        NodeId = NodeId,
        Node = BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = TokioRuntime,
);

/// The Raft handle of a coordinator.
pub type Raft = openraft::Raft<TypeConfig>;

/// A log entry.
pub type Entry = openraft::Entry<TypeConfig>;

/// A storage error.
pub type StorageError = openraft::StorageError<NodeId>;
