//! The structured status details of the contract: [`NotLeader`] on UNAVAILABLE and
//! [`SpecErrors`] on INVALID_ARGUMENT, carried as the protobuf-encoded message in the
//! status details (`grpc-status-details-bin`), not wrapped in `google.rpc.Status`.

use prost::Message as _;
use prost::bytes::Bytes;
use tonic::{Code, Status};

use crate::v1::{NotLeader, SpecErrors};

/// An UNAVAILABLE status pointing at the leader, with [`NotLeader`] details.
/// Clients retry the call on `leader.leader_addr`.
pub fn not_leader(leader: &NotLeader) -> Status {
    let message = if leader.leader_addr.is_empty() {
        "this coordinator is not the leader and no leader is known".to_owned()
    } else {
        format!("this coordinator is not the leader; the leader is node {} at {}", leader.leader_id, leader.leader_addr)
    };
    Status::with_details(Code::Unavailable, message, Bytes::from(leader.encode_to_vec()))
}

/// The leader hint of a status made by [`not_leader`]: `Some` only for an
/// UNAVAILABLE status whose details decode as a [`NotLeader`] with an address.
pub fn leader_hint(status: &Status) -> Option<NotLeader> {
    if status.code() != Code::Unavailable || status.details().is_empty() {
        return None;
    }
    NotLeader::decode(status.details()).ok().filter(|hint| !hint.leader_addr.is_empty())
}

/// An INVALID_ARGUMENT status for a refused spec: `rendered` is the full text the
/// CLI prints; the details carry the diagnostics as [`SpecErrors`].
pub fn invalid_spec(rendered: impl Into<String>, errors: &SpecErrors) -> Status {
    Status::with_details(Code::InvalidArgument, rendered, Bytes::from(errors.encode_to_vec()))
}

/// The diagnostics of a status made by [`invalid_spec`], if it is one.
pub fn spec_errors(status: &Status) -> Option<SpecErrors> {
    if status.code() != Code::InvalidArgument || status.details().is_empty() {
        return None;
    }
    SpecErrors::decode(status.details()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::v1::{Diagnostic, Severity, SourceLocation};

    #[test]
    fn not_leader_round_trips_through_status_details() {
        let hint = NotLeader { leader_id: 2, leader_addr: "10.0.0.2:7600".to_owned() };
        let status = not_leader(&hint);
        assert_eq!(status.code(), Code::Unavailable);
        assert!(status.message().contains("node 2 at 10.0.0.2:7600"));
        assert_eq!(leader_hint(&status), Some(hint));
    }

    #[test]
    fn plain_unavailable_has_no_hint() {
        assert_eq!(leader_hint(&Status::unavailable("no leader")), None);
        let unknown = not_leader(&NotLeader::default());
        assert_eq!(leader_hint(&unknown), None);
        assert_eq!(leader_hint(&Status::invalid_argument("x")), None);
    }

    #[test]
    fn spec_errors_round_trip() {
        let errors = SpecErrors {
            errors: vec![Diagnostic {
                severity: Severity::Error as i32,
                location: Some(SourceLocation { file: "spec.toml".to_owned(), line: 3, column: 1 }),
                message: "unknown key `verison`".to_owned(),
                rendered: "spec.toml:3:1: unknown key `verison`".to_owned(),
            }],
        };
        let status = invalid_spec("spec.toml:3:1: unknown key `verison`", &errors);
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(spec_errors(&status), Some(errors));
        assert_eq!(spec_errors(&Status::invalid_argument("plain")), None);
    }
}
