//! The API's error model: gRPC's richer error model, as Google's APIs use it.
//!
//! Every error a coordinator answers carries, in the status details
//! (`grpc-status-details-bin`), a `google.rpc.Status` whose code and message repeat
//! the call's, and whose `details` are `Any`-packed messages:
//!
//! - always a `google.rpc.ErrorInfo` with a machine-readable [`Reason`] and the
//!   [`ERROR_DOMAIN`]; its `metadata` names what the reason is about (e.g.
//!   `release_id`);
//! - for INVALID_ARGUMENT, a `google.rpc.BadRequest` naming each bad field (a bad
//!   spec: one violation of `spec_toml` per error, described as `file:line:col:
//!   message`) and, for a refused spec, `flotilla.v1.SpecErrors` with the structured
//!   diagnostics;
//! - for NOT_FOUND and ALREADY_EXISTS, a `google.rpc.ResourceInfo` naming the
//!   resource;
//! - for UNAVAILABLE, a `google.rpc.RetryInfo` saying when to retry and, when another
//!   coordinator leads, `flotilla.v1.NotLeader` with the leader's address (retry
//!   there at once).
//!
//! Stock clients decode this with their own tooling (`grpcio-status`'
//! `rpc_status.from_call` in Python, `status.FromError(err).Details()` in Go,
//! [`tonic_types::StatusExt`] in Rust). The helpers here build those statuses for the
//! coordinator and read the Flotilla-specific details back for Flotilla's clients.

use std::collections::HashMap;
use std::time::Duration;

use prost::Message as _;
use prost::bytes::Bytes;
use prost_types::Any;
use tonic::{Code, Status};
use tonic_types::pb;

use crate::v1::{NotLeader, SpecErrors};

/// The `domain` of every `google.rpc.ErrorInfo` a coordinator sends.
pub const ERROR_DOMAIN: &str = "flotilla.v1";

/// The prefix of every type URL in `google.rpc.Status.details`.
const TYPE_URL_PREFIX: &str = "type.googleapis.com/";

/// The type URL of a packed [`NotLeader`].
pub const NOT_LEADER_TYPE_URL: &str = "type.googleapis.com/flotilla.v1.NotLeader";
/// The type URL of a packed [`SpecErrors`].
pub const SPEC_ERRORS_TYPE_URL: &str = "type.googleapis.com/flotilla.v1.SpecErrors";

/// Why a call failed, as `google.rpc.ErrorInfo.reason` says it: stable names a client
/// can branch on (the status message is for people and may change).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// UNAVAILABLE: this coordinator does not lead; `NotLeader` names the leader.
    NotLeader,
    /// UNAVAILABLE: no leader is elected right now.
    NoLeader,
    /// UNAVAILABLE: this coordinator is stopping; retry on another.
    ShuttingDown,
    /// INVALID_ARGUMENT: the release spec is refused (`SpecErrors` says where and why).
    InvalidSpec,
    /// INVALID_ARGUMENT: a request field is missing or malformed (`BadRequest` names it).
    InvalidField,
    /// NOT_FOUND: no release with that id.
    ReleaseNotFound,
    /// NOT_FOUND: the release has no such service, gate or stage.
    ReleasePartNotFound,
    /// NOT_FOUND: no host with that id.
    HostNotFound,
    /// NOT_FOUND: no coordinator node with that id.
    NodeNotFound,
    /// ALREADY_EXISTS: the idempotency key was used for another spec.
    IdempotencyKeyReused,
    /// FAILED_PRECONDITION: the release's state does not allow the action.
    ReleaseStateConflict,
    /// FAILED_PRECONDITION: the release waits for no approval, or for several and the
    /// request names none.
    ApprovalNotPending,
    /// FAILED_PRECONDITION: the membership change is unsafe or another one is running.
    MembershipChangeRefused,
    /// FAILED_PRECONDITION: the peer speaks a protocol revision this build cannot serve.
    ProtocolUnsupported,
    /// FAILED_PRECONDITION: the request conflicts with the cluster's state otherwise.
    StateConflict,
    /// FAILED_PRECONDITION: an unfinished release deploys one of the same services to
    /// one of the same hosts (`release_id` in the metadata names it).
    ReleaseConflict,
    /// UNAUTHENTICATED: no client certificate, or one the cluster's CA does not vouch
    /// for (another CA's, expired, naming no Flotilla identity).
    Unauthenticated,
    /// PERMISSION_DENIED: the caller's role may not make the call, or an agent acts as
    /// another host than its certificate names.
    PermissionDenied,
    /// UNAUTHENTICATED or PERMISSION_DENIED: a join token that is unknown, expired,
    /// used up or revoked, or that does not allow the host.
    JoinTokenRefused,
    /// NOT_FOUND: no join token with that id.
    JoinTokenNotFound,
    /// ALREADY_EXISTS: the host id is enrolled with another key.
    HostAlreadyEnrolled,
    /// FAILED_PRECONDITION: the coordinators hold no CA key, so nobody can enrol.
    EnrolmentDisabled,
    /// NOT_FOUND: no operator token with that id.
    TokenNotFound,
    /// PERMISSION_DENIED: the approval must come from someone else (not the release's
    /// author) or from a higher role, as the spec says.
    ApproverNotAllowed,
    /// INTERNAL: Raft or storage failed.
    Internal,
    /// NOT_FOUND: no deployment window with that name.
    WindowNotFound,
    /// NOT_FOUND: no webhook with that name.
    HookNotFound,
}

impl Reason {
    /// The UPPER_SNAKE_CASE name sent in `ErrorInfo.reason`.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::NotLeader => "NOT_LEADER",
            Reason::NoLeader => "NO_LEADER",
            Reason::ShuttingDown => "SHUTTING_DOWN",
            Reason::InvalidSpec => "INVALID_SPEC",
            Reason::InvalidField => "INVALID_FIELD",
            Reason::ReleaseNotFound => "RELEASE_NOT_FOUND",
            Reason::ReleasePartNotFound => "RELEASE_PART_NOT_FOUND",
            Reason::HostNotFound => "HOST_NOT_FOUND",
            Reason::NodeNotFound => "NODE_NOT_FOUND",
            Reason::IdempotencyKeyReused => "IDEMPOTENCY_KEY_REUSED",
            Reason::ReleaseStateConflict => "RELEASE_STATE_CONFLICT",
            Reason::ApprovalNotPending => "APPROVAL_NOT_PENDING",
            Reason::MembershipChangeRefused => "MEMBERSHIP_CHANGE_REFUSED",
            Reason::ProtocolUnsupported => "PROTOCOL_UNSUPPORTED",
            Reason::StateConflict => "STATE_CONFLICT",
            Reason::ReleaseConflict => "RELEASE_CONFLICT",
            Reason::Unauthenticated => "UNAUTHENTICATED",
            Reason::PermissionDenied => "PERMISSION_DENIED",
            Reason::JoinTokenRefused => "JOIN_TOKEN_REFUSED",
            Reason::JoinTokenNotFound => "JOIN_TOKEN_NOT_FOUND",
            Reason::HostAlreadyEnrolled => "HOST_ALREADY_ENROLLED",
            Reason::EnrolmentDisabled => "ENROLMENT_DISABLED",
            Reason::TokenNotFound => "TOKEN_NOT_FOUND",
            Reason::ApproverNotAllowed => "APPROVER_NOT_ALLOWED",
            Reason::Internal => "INTERNAL",
            Reason::WindowNotFound => "WINDOW_NOT_FOUND",
            Reason::HookNotFound => "HOOK_NOT_FOUND",
        }
    }

    /// Every reason, for documentation and tests.
    pub const ALL: [Reason; 27] = [
        Reason::NotLeader,
        Reason::NoLeader,
        Reason::ShuttingDown,
        Reason::InvalidSpec,
        Reason::InvalidField,
        Reason::ReleaseNotFound,
        Reason::ReleasePartNotFound,
        Reason::HostNotFound,
        Reason::NodeNotFound,
        Reason::IdempotencyKeyReused,
        Reason::ReleaseStateConflict,
        Reason::ApprovalNotPending,
        Reason::MembershipChangeRefused,
        Reason::ProtocolUnsupported,
        Reason::StateConflict,
        Reason::ReleaseConflict,
        Reason::Unauthenticated,
        Reason::PermissionDenied,
        Reason::JoinTokenRefused,
        Reason::JoinTokenNotFound,
        Reason::HostAlreadyEnrolled,
        Reason::EnrolmentDisabled,
        Reason::TokenNotFound,
        Reason::ApproverNotAllowed,
        Reason::Internal,
        Reason::WindowNotFound,
        Reason::HookNotFound,
    ];
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A status in the richer error model under construction: the code, the message, the
/// `ErrorInfo` and any further details; [`ErrorBuilder::build`] encodes it.
#[derive(Debug, Clone)]
pub struct ErrorBuilder {
    code: Code,
    message: String,
    info: pb::ErrorInfo,
    details: Vec<Any>,
}

impl ErrorBuilder {
    /// A status with `code`, `message` and an `ErrorInfo` of `reason`.
    pub fn new(code: Code, reason: Reason, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            info: pb::ErrorInfo {
                reason: reason.as_str().to_owned(),
                domain: ERROR_DOMAIN.to_owned(),
                metadata: HashMap::new(),
            },
            details: Vec::new(),
        }
    }

    /// Adds `key = value` to the `ErrorInfo` metadata.
    pub fn meta(mut self, key: &str, value: &dyn std::fmt::Display) -> Self {
        self.info.metadata.insert(key.to_owned(), value.to_string());
        self
    }

    /// Adds a `google.rpc.BadRequest` naming the bad fields (`field`, `description`).
    pub fn bad_request<'a>(mut self, violations: impl IntoIterator<Item = (&'a str, String)>) -> Self {
        let field_violations = violations
            .into_iter()
            .map(|(field, description)| pb::bad_request::FieldViolation {
                field: field.to_owned(),
                description,
                ..Default::default()
            })
            .collect();
        self.details.push(pack("google.rpc.BadRequest", &pb::BadRequest { field_violations }));
        self
    }

    /// Adds a `google.rpc.ResourceInfo` naming the resource concerned.
    pub fn resource(mut self, resource_type: &str, resource_name: &str, description: &str) -> Self {
        let info = pb::ResourceInfo {
            resource_type: resource_type.to_owned(),
            resource_name: resource_name.to_owned(),
            owner: String::new(),
            description: description.to_owned(),
        };
        self.details.push(pack("google.rpc.ResourceInfo", &info));
        self
    }

    /// Adds a `google.rpc.RetryInfo`: retry no sooner than `delay`.
    pub fn retry_after(mut self, delay: Duration) -> Self {
        let retry_delay = prost_types::Duration {
            seconds: i64::try_from(delay.as_secs()).unwrap_or(i64::MAX),
            nanos: i32::try_from(delay.subsec_nanos()).unwrap_or(0),
        };
        self.details.push(pack("google.rpc.RetryInfo", &pb::RetryInfo { retry_delay: Some(retry_delay) }));
        self
    }

    /// Adds a Flotilla message, packed with its type URL (`flotilla.v1.<name>`).
    pub fn detail(mut self, type_url: &str, message: &impl prost::Message) -> Self {
        self.details.push(Any { type_url: type_url.to_owned(), value: message.encode_to_vec() });
        self
    }

    /// The status, with the `google.rpc.Status` in its details.
    pub fn build(self) -> Status {
        let mut details = Vec::with_capacity(self.details.len() + 1);
        details.push(pack("google.rpc.ErrorInfo", &self.info));
        details.extend(self.details);
        let rpc = pb::Status { code: self.code as i32, message: self.message.clone(), details };
        Status::with_details(self.code, self.message, Bytes::from(rpc.encode_to_vec()))
    }
}

fn pack(full_name: &str, message: &impl prost::Message) -> Any {
    Any { type_url: format!("{TYPE_URL_PREFIX}{full_name}"), value: message.encode_to_vec() }
}

/// How long a client waits before retrying when no leader is known: about one
/// election.
pub const NO_LEADER_RETRY: Duration = Duration::from_millis(250);

/// An UNAVAILABLE status pointing at the leader: `ErrorInfo` NOT_LEADER (metadata
/// `leader_id`, `leader_addr`), `NotLeader`, and `RetryInfo` of zero (retry on the
/// leader at once). With no leader address, the NO_LEADER status instead.
pub fn not_leader(leader: &NotLeader) -> Status {
    if leader.leader_addr.is_empty() {
        return no_leader();
    }
    let message = format!(
        "this coordinator is not the leader; the leader is node {} at {}",
        leader.leader_id, leader.leader_addr
    );
    ErrorBuilder::new(Code::Unavailable, Reason::NotLeader, message)
        .meta("leader_id", &leader.leader_id)
        .meta("leader_addr", &leader.leader_addr)
        .detail(NOT_LEADER_TYPE_URL, leader)
        .retry_after(Duration::ZERO)
        .build()
}

/// An UNAVAILABLE status for a cluster without a leader: `ErrorInfo` NO_LEADER and a
/// `RetryInfo` of [`NO_LEADER_RETRY`].
pub fn no_leader() -> Status {
    ErrorBuilder::new(Code::Unavailable, Reason::NoLeader, "no leader is elected right now; retry shortly")
        .retry_after(NO_LEADER_RETRY)
        .build()
}

/// The `google.rpc.Status` of a status's details, when it carries one.
pub fn rpc_status(status: &Status) -> Option<pb::Status> {
    if status.details().is_empty() {
        return None;
    }
    pb::Status::decode(status.details()).ok()
}

fn unpack<M: prost::Message + Default>(status: &Status, type_url: &str) -> Option<M> {
    rpc_status(status)?.details.iter().find(|any| any.type_url == type_url).and_then(|any| M::decode(&*any.value).ok())
}

/// The leader hint of an UNAVAILABLE status: `Some` when its details carry a
/// `NotLeader` with an address.
///
/// Coordinators of protocol revision 1 sent the bare `NotLeader` as the details; that
/// form is read too, so a client of this build follows an older coordinator's hint.
pub fn leader_hint(status: &Status) -> Option<NotLeader> {
    if status.code() != Code::Unavailable || status.details().is_empty() {
        return None;
    }
    let hint = match rpc_status(status) {
        Some(rpc) if !rpc.details.is_empty() => unpack::<NotLeader>(status, NOT_LEADER_TYPE_URL),
        // Revision 1: the details are the NotLeader itself (which also decodes as a
        // google.rpc.Status with no details).
        _ => NotLeader::decode(status.details()).ok(),
    };
    hint.filter(|hint| !hint.leader_addr.is_empty())
}

/// The most errors of a refused spec that its status carries. A status travels in
/// HTTP/2 trailers, which clients cap (16 KiB by default), so a spec with thousands of
/// errors is answered with its first ones and the count, not with a stream reset.
pub const MAX_REPORTED_SPEC_ERRORS: usize = 10;

/// The most bytes of one error's text (its message, or its rendering with the source
/// excerpt) that a status carries.
pub const MAX_SPEC_ERROR_BYTES: usize = 512;

/// An INVALID_ARGUMENT status for a refused spec: `rendered` is the full text the
/// CLI prints; the details carry `ErrorInfo` INVALID_SPEC (metadata `errors`: how many
/// there are), a `BadRequest` with one violation of `spec_toml` per error, and the
/// diagnostics as `SpecErrors`. At most [`MAX_REPORTED_SPEC_ERRORS`] errors, each cut
/// to [`MAX_SPEC_ERROR_BYTES`], are carried; the message then ends with how many
/// there were.
pub fn invalid_spec(rendered: impl Into<String>, errors: &SpecErrors) -> Status {
    let total = errors.errors.len();
    let too_long =
        |d: &crate::v1::Diagnostic| d.message.len() > MAX_SPEC_ERROR_BYTES || d.rendered.len() > MAX_SPEC_ERROR_BYTES;
    let (rendered, carried) = if total > MAX_REPORTED_SPEC_ERRORS || errors.errors.iter().any(too_long) {
        let mut carried = SpecErrors { errors: errors.errors.iter().take(MAX_REPORTED_SPEC_ERRORS).cloned().collect() };
        for d in &mut carried.errors {
            clip(&mut d.message, MAX_SPEC_ERROR_BYTES);
            clip(&mut d.rendered, MAX_SPEC_ERROR_BYTES);
        }
        let mut text = carried.errors.iter().map(|d| d.rendered.as_str()).collect::<Vec<_>>().join("\n\n");
        if total > carried.errors.len() {
            text.push_str(&format!("\n\n{total} errors; the first {} are shown", carried.errors.len()));
        }
        (text, carried)
    } else {
        (rendered.into(), errors.clone())
    };
    let violations = carried.errors.iter().map(|d| {
        let at = d.location.as_ref().map_or_else(String::new, |l| format!("{}:{}:{}: ", l.file, l.line, l.column));
        ("spec_toml", format!("{at}{}", d.message))
    });
    ErrorBuilder::new(Code::InvalidArgument, Reason::InvalidSpec, rendered)
        .meta("errors", &total)
        .bad_request(violations)
        .detail(SPEC_ERRORS_TYPE_URL, &carried)
        .build()
}

/// Cuts `text` to at most `max` bytes, at a character boundary, marking the cut.
fn clip(text: &mut String, max: usize) {
    if text.len() <= max {
        return;
    }
    let mut end = max.saturating_sub(3);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
    text.push_str("...");
}

/// The diagnostics of a status made by [`invalid_spec`], if it is one.
pub fn spec_errors(status: &Status) -> Option<SpecErrors> {
    if status.code() != Code::InvalidArgument {
        return None;
    }
    unpack(status, SPEC_ERRORS_TYPE_URL)
}

/// The `ErrorInfo` of a status, if it carries one.
pub fn error_info(status: &Status) -> Option<pb::ErrorInfo> {
    unpack(status, "type.googleapis.com/google.rpc.ErrorInfo")
}

/// Whether `status` carries an `ErrorInfo` of `reason` in Flotilla's domain.
pub fn has_reason(status: &Status, reason: Reason) -> bool {
    error_info(status).is_some_and(|info| info.domain == ERROR_DOMAIN && info.reason == reason.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::v1::{Diagnostic, Severity, SourceLocation};
    use tonic_types::StatusExt as _;

    #[test]
    fn not_leader_carries_error_info_retry_info_and_the_hint() {
        let hint = NotLeader { leader_id: 2, leader_addr: "10.0.0.2:7600".to_owned() };
        let status = not_leader(&hint);
        assert_eq!(status.code(), Code::Unavailable);
        assert!(status.message().contains("node 2 at 10.0.0.2:7600"));
        assert_eq!(leader_hint(&status), Some(hint));
        // What a stock client sees: google.rpc.Status with the same code and message.
        let rpc = rpc_status(&status).unwrap();
        assert_eq!(rpc.code, Code::Unavailable as i32);
        assert_eq!(rpc.message, status.message());
        let info = status.get_details_error_info().unwrap();
        assert_eq!((info.reason.as_str(), info.domain.as_str()), ("NOT_LEADER", ERROR_DOMAIN));
        assert_eq!(info.metadata["leader_addr"], "10.0.0.2:7600");
        assert_eq!(status.get_details_retry_info().unwrap().retry_delay, Some(Duration::ZERO));
        assert!(has_reason(&status, Reason::NotLeader));
    }

    #[test]
    fn no_leader_has_retry_info_and_no_hint() {
        let status = not_leader(&NotLeader::default());
        assert_eq!(status.code(), Code::Unavailable);
        assert_eq!(leader_hint(&status), None);
        assert!(has_reason(&status, Reason::NoLeader));
        assert_eq!(status.get_details_retry_info().unwrap().retry_delay, Some(NO_LEADER_RETRY));
        assert_eq!(leader_hint(&Status::unavailable("no leader")), None);
        assert_eq!(leader_hint(&Status::invalid_argument("x")), None);
    }

    #[test]
    fn a_revision_1_bare_hint_is_still_followed() {
        let hint = NotLeader { leader_id: 3, leader_addr: "10.0.0.3:7600".to_owned() };
        let status = Status::with_details(Code::Unavailable, "not the leader", Bytes::from(hint.encode_to_vec()));
        assert_eq!(leader_hint(&status), Some(hint));
    }

    #[test]
    fn spec_errors_are_bad_request_violations_and_spec_errors() {
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
        let bad = status.get_details_bad_request().unwrap();
        assert_eq!(bad.field_violations.len(), 1);
        assert_eq!(bad.field_violations[0].field, "spec_toml");
        assert_eq!(bad.field_violations[0].description, "spec.toml:3:1: unknown key `verison`");
        assert!(has_reason(&status, Reason::InvalidSpec));
        assert_eq!(spec_errors(&Status::invalid_argument("plain")), None);
    }

    /// Ten thousand errors (a 10,000-service spec against a fleet that runs none of it)
    /// make a status that fits in the trailers a client accepts, and still says how
    /// many errors there were and where the first ones are.
    #[test]
    fn a_spec_with_thousands_of_errors_is_refused_within_a_clients_trailer_limit() {
        let diagnostic = |i: usize| Diagnostic {
            severity: Severity::Error as i32,
            location: Some(SourceLocation { file: "big.toml".to_owned(), line: 3 + 7 * i as u32, column: 1 }),
            message: format!("`svc-{i:05}` selects hosts * but no host in the fleet matches"),
            rendered: format!(
                "error: `svc-{i:05}` selects hosts * but no host in the fleet matches\n --> big.toml:{}:1\n{}",
                3 + 7 * i,
                "x".repeat(if i == 0 { 5_000 } else { 150 })
            ),
        };
        let errors = SpecErrors { errors: (0..10_000).map(diagnostic).collect() };
        let full: String = errors.errors.iter().map(|d| d.rendered.as_str()).collect::<Vec<_>>().join("\n\n");
        let status = invalid_spec(full, &errors);
        let headers = status.clone().into_http::<()>();
        let trailer_bytes: usize = headers.headers().iter().map(|(k, v)| k.as_str().len() + v.len()).sum();
        assert!(trailer_bytes < 16 * 1024, "a refused spec's status takes {trailer_bytes} bytes of headers");
        assert!(status.message().ends_with("10000 errors; the first 10 are shown"), "{}", status.message());
        assert!(status.message().starts_with("error: `svc-00000` selects hosts *"));
        let carried = spec_errors(&status).unwrap();
        assert_eq!(carried.errors.len(), MAX_REPORTED_SPEC_ERRORS);
        assert!(carried.errors.iter().all(|d| d.rendered.len() <= MAX_SPEC_ERROR_BYTES));
        assert_eq!(carried.errors[9].location.as_ref().unwrap().line, 66);
        assert_eq!(status.get_details_error_info().unwrap().metadata["errors"], "10000");
        assert_eq!(status.get_details_bad_request().unwrap().field_violations.len(), MAX_REPORTED_SPEC_ERRORS);
    }

    #[test]
    fn every_reason_is_upper_snake_case_and_distinct() {
        let mut seen = std::collections::HashSet::new();
        for reason in Reason::ALL {
            let name = reason.as_str();
            assert!(name.len() <= 63 && name.chars().all(|c| c.is_ascii_uppercase() || c == '_'), "{name}");
            assert!(seen.insert(name), "{name} twice");
        }
    }

    #[test]
    fn resource_info_names_the_resource() {
        let status = ErrorBuilder::new(Code::NotFound, Reason::ReleaseNotFound, "no release r-9")
            .meta("release_id", &"r-9")
            .resource("flotilla.v1.Release", "r-9", "no release r-9")
            .build();
        let info = status.get_details_resource_info().unwrap();
        assert_eq!((info.resource_type.as_str(), info.resource_name.as_str()), ("flotilla.v1.Release", "r-9"));
        assert_eq!(error_info(&status).unwrap().metadata["release_id"], "r-9");
    }
}
