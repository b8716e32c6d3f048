//! The coordinator's errors and their one mapping to gRPC statuses in the richer
//! error model (`google.rpc.Status` with `ErrorInfo` and further details; see
//! `flotilla_proto::status`).

use flotilla_proto::status::{ErrorBuilder, Reason, invalid_spec, no_leader, not_leader};
use flotilla_proto::v1;
use tonic::{Code, Status};

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
    /// A request field that is missing or malformed.
    #[error("{message}")]
    InvalidField {
        /// The field's name in the request message (`release_id`).
        field: &'static str,
        /// What is wrong with it, as a sentence.
        message: String,
    },
    /// A bad setting or argument outside a request (configuration, flags).
    #[error("{0}")]
    InvalidArgument(String),
    /// Something named does not exist.
    #[error("{message}")]
    NotFound {
        /// Which kind of thing (RELEASE_NOT_FOUND, HOST_NOT_FOUND, ...).
        reason: Reason,
        /// Its API type (`flotilla.v1.Release`) or kind (`service`).
        resource_type: &'static str,
        /// Its id or name.
        name: String,
        /// What is missing, as a sentence.
        message: String,
    },
    /// An idempotency key was used before for another spec.
    #[error(
        "idempotency key `{key}` was already used for release {release_id} with a different spec; \
         use a new key to submit this spec, or `Releases.Get` {release_id} for the earlier one"
    )]
    KeyReused {
        /// The key.
        key: String,
        /// The release the key stands for.
        release_id: String,
    },
    /// An unfinished release deploys one of the same services to one of the same hosts.
    #[error("{0}")]
    ReleaseConflict(crate::state::ReleaseConflict),
    /// The request conflicts with the current state.
    #[error("{message}")]
    FailedPrecondition {
        /// Which conflict, for clients to branch on.
        reason: Reason,
        /// Why, as a sentence.
        message: String,
    },
    /// The caller is not authenticated (UNAUTHENTICATED) or may not do this
    /// (PERMISSION_DENIED).
    #[error("{message}")]
    Denied {
        /// UNAUTHENTICATED or PERMISSION_DENIED.
        code: Code,
        /// Which refusal, for clients to branch on.
        reason: Reason,
        /// Who tried what, and why not, as a sentence.
        message: String,
    },
    /// A host id is enrolled with another key.
    #[error("{message}")]
    HostEnrolled {
        /// The host.
        host: String,
        /// Why, as a sentence.
        message: String,
    },
    /// Raft or storage failed.
    #[error("{0}")]
    Internal(String),
}

impl CoordinatorError {
    /// NOT_FOUND for an unknown release id.
    pub fn no_release(id: &str) -> Self {
        CoordinatorError::NotFound {
            reason: Reason::ReleaseNotFound,
            resource_type: "flotilla.v1.Release",
            name: id.to_owned(),
            message: format!("no release {id}"),
        }
    }

    /// NOT_FOUND for an unknown host id.
    pub fn no_host(id: &str, message: String) -> Self {
        CoordinatorError::NotFound {
            reason: Reason::HostNotFound,
            resource_type: "flotilla.v1.Host",
            name: id.to_owned(),
            message,
        }
    }

    /// NOT_FOUND for a service, gate or stage (`kind`) a release does not have.
    pub fn no_part(kind: &'static str, name: &str, message: String) -> Self {
        CoordinatorError::NotFound {
            reason: Reason::ReleasePartNotFound,
            resource_type: kind,
            name: name.to_owned(),
            message,
        }
    }

    /// FAILED_PRECONDITION with `reason`.
    pub fn precondition(reason: Reason, message: impl Into<String>) -> Self {
        CoordinatorError::FailedPrecondition { reason, message: message.into() }
    }

    /// UNAUTHENTICATED with `reason`.
    pub fn unauthenticated(reason: Reason, message: impl Into<String>) -> Self {
        CoordinatorError::Denied { code: Code::Unauthenticated, reason, message: message.into() }
    }

    /// PERMISSION_DENIED with `reason`.
    pub fn permission_denied(reason: Reason, message: impl Into<String>) -> Self {
        CoordinatorError::Denied { code: Code::PermissionDenied, reason, message: message.into() }
    }

    /// INVALID_ARGUMENT for a request whose `field` is empty.
    pub fn missing(field: &'static str) -> Self {
        CoordinatorError::InvalidField { field, message: format!("`{field}` is empty; it is required") }
    }
}

impl From<CoordinatorError> for Status {
    fn from(e: CoordinatorError) -> Status {
        let message = e.to_string();
        match e {
            CoordinatorError::NotLeader { leader_id, leader_addr } => {
                not_leader(&v1::NotLeader { leader_id, leader_addr })
            }
            CoordinatorError::NoLeader => no_leader(),
            CoordinatorError::ShuttingDown { node_id } => {
                ErrorBuilder::new(Code::Unavailable, Reason::ShuttingDown, message)
                    .meta("node_id", &node_id)
                    .retry_after(std::time::Duration::ZERO)
                    .build()
            }
            CoordinatorError::BadSpec { rendered, errors } => invalid_spec(rendered, &errors),
            CoordinatorError::InvalidField { field, message } => {
                ErrorBuilder::new(Code::InvalidArgument, Reason::InvalidField, message.clone())
                    .meta("field", &field)
                    .bad_request([(field, message)])
                    .build()
            }
            CoordinatorError::InvalidArgument(m) => {
                ErrorBuilder::new(Code::InvalidArgument, Reason::InvalidField, m).build()
            }
            CoordinatorError::NotFound { reason, resource_type, name, message } => {
                // The metadata key names what the id is: `release_id`, `host_id`,
                // `node_id`, or the part of a release (`service`, `gate`, `stage`).
                let key = match reason {
                    Reason::ReleaseNotFound => "release_id",
                    Reason::HostNotFound => "host_id",
                    Reason::NodeNotFound => "node_id",
                    _ => resource_type,
                };
                ErrorBuilder::new(Code::NotFound, reason, message.clone())
                    .meta(key, &name)
                    .resource(resource_type, &name, &message)
                    .build()
            }
            CoordinatorError::KeyReused { key, release_id } => {
                ErrorBuilder::new(Code::AlreadyExists, Reason::IdempotencyKeyReused, message)
                    .meta("idempotency_key", &key)
                    .meta("release_id", &release_id)
                    .resource("flotilla.v1.Release", &release_id, "the release the idempotency key stands for")
                    .build()
            }
            CoordinatorError::ReleaseConflict(conflict) => {
                ErrorBuilder::new(Code::FailedPrecondition, Reason::ReleaseConflict, message)
                    .meta("release_id", &conflict.release)
                    .build()
            }
            CoordinatorError::FailedPrecondition { reason, message } => {
                ErrorBuilder::new(Code::FailedPrecondition, reason, message).build()
            }
            CoordinatorError::Denied { code, reason, message } => ErrorBuilder::new(code, reason, message).build(),
            CoordinatorError::HostEnrolled { host, message } => {
                ErrorBuilder::new(Code::AlreadyExists, Reason::HostAlreadyEnrolled, message.clone())
                    .meta("host_id", &host)
                    .resource("flotilla.v1.HostEnrolment", &host, &message)
                    .build()
            }
            CoordinatorError::Internal(m) => ErrorBuilder::new(Code::Internal, Reason::Internal, m).build(),
        }
    }
}
