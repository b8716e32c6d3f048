//! The coordinator's errors and their one mapping to gRPC statuses.

use flotilla_proto::status::{invalid_spec, not_leader};
use flotilla_proto::v1;
use tonic::Status;

use crate::raft::NodeId;

/// Why a coordinator could not serve a request.
#[derive(Debug, thiserror::Error)]
pub enum CoordinatorError {
    /// This node is not the leader; the leader is known.
    #[error("this coordinator is not the leader; the leader is node {leader_id} at {leader_addr}")]
    NotLeader {
        /// The leader's node id.
        leader_id: NodeId,
        /// Its advertised address.
        leader_addr: String,
    },
    /// There is no leader right now (an election is running, or no quorum).
    #[error("no leader is elected right now; retry shortly")]
    NoLeader,
    /// This coordinator is stopping and takes no more writes or streams; the client
    /// retries on another one.
    #[error("coordinator {node_id} is shutting down; retry on another coordinator")]
    ShuttingDown {
        /// This node's id.
        node_id: NodeId,
    },
    /// A spec that cannot be accepted, already rendered with file, line and column.
    #[error("{rendered}")]
    BadSpec {
        /// The errors as the CLI prints them.
        rendered: String,
        /// The same errors, structured.
        errors: v1::SpecErrors,
    },
    /// A bad argument other than a spec.
    #[error("{0}")]
    InvalidArgument(String),
    /// Something named does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The request conflicts with the current state.
    #[error("{0}")]
    FailedPrecondition(String),
    /// Raft or storage failed.
    #[error("{0}")]
    Internal(String),
}

impl From<CoordinatorError> for Status {
    fn from(e: CoordinatorError) -> Status {
        match e {
            CoordinatorError::NotLeader { leader_id, leader_addr } => {
                not_leader(&v1::NotLeader { leader_id, leader_addr })
            }
            CoordinatorError::NoLeader => not_leader(&v1::NotLeader { leader_id: 0, leader_addr: String::new() }),
            e @ CoordinatorError::ShuttingDown { .. } => Status::unavailable(e.to_string()),
            CoordinatorError::BadSpec { rendered, errors } => invalid_spec(rendered, &errors),
            CoordinatorError::InvalidArgument(m) => Status::invalid_argument(m),
            CoordinatorError::NotFound(m) => Status::not_found(m),
            CoordinatorError::FailedPrecondition(m) => Status::failed_precondition(m),
            CoordinatorError::Internal(m) => Status::internal(m),
        }
    }
}
