//! The coordinator's side of enrolment: the CA key it signs agent certificates with,
//! the lifetime of those certificates, and making join tokens.
//!
//! Every coordinator that may lead loads the CA key (`tls_ca_key`); without it the
//! node answers enrolment calls with FAILED_PRECONDITION (ENROLMENT_DISABLED). A
//! certificate is signed before its enrolment is committed and handed out only once
//! the commit succeeded, so a refused join leaves nothing usable behind.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use flotilla_net::pki::{ClusterCa, Role, SignedRequest};
use flotilla_net::{CaPin, JoinToken, TlsMaterial};
use flotilla_proto::status::Reason;

use crate::error::CoordinatorError;
use crate::state::{EnrolmentRefusal, JoinTokenRecord};

/// The longest a join token may live.
pub const MAX_TOKEN_TTL: Duration = Duration::from_secs(30 * 86_400);

/// Signs agent certificates for this node (when it holds the CA key).
#[derive(Clone)]
pub struct Enroller {
    ca: Arc<RwLock<Option<Arc<ClusterCa>>>>,
    files: Option<(PathBuf, PathBuf)>,
    ttl: Duration,
    trust: Option<TlsMaterial>,
}

impl std::fmt::Debug for Enroller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Enroller").field("files", &self.files).field("ttl", &self.ttl).finish_non_exhaustive()
    }
}

/// What a token request asks for.
#[derive(Debug, Clone, Default)]
pub struct TokenRequest {
    /// How long it enrols hosts.
    pub ttl: Duration,
    /// How many hosts (0 means 1).
    pub uses: u32,
    /// The labels its hosts may claim.
    pub labels: std::collections::BTreeMap<String, String>,
    /// Host ids it may enrol (`*` wildcards); empty: any.
    pub host_id_pattern: String,
}

impl Enroller {
    /// An enroller without a CA key: every enrolment call is refused.
    pub fn disabled() -> Self {
        Self { ca: Arc::new(RwLock::new(None)), files: None, ttl: flotilla_net::pki::AGENT_LIFETIME, trust: None }
    }

    /// Loads the CA whose key is `ca_key` from the trust bundle `ca_bundle`; issued
    /// certificates live `ttl`; `trust` is the node's TLS material, whose CA bundle is
    /// what agents are told to trust.
    pub fn load(ca_bundle: &Path, ca_key: &Path, ttl: Duration, trust: TlsMaterial) -> Result<Self, CoordinatorError> {
        let ca = ClusterCa::load_files(ca_bundle, ca_key)
            .map_err(|e| CoordinatorError::InvalidArgument(format!("tls_ca_key: {e}")))?;
        Ok(Self {
            ca: Arc::new(RwLock::new(Some(Arc::new(ca)))),
            files: Some((ca_bundle.to_owned(), ca_key.to_owned())),
            ttl,
            trust: Some(trust),
        })
    }

    /// Reads the CA key and bundle again (after a CA rotation); on an error the CA
    /// in use stays.
    pub fn reload(&self) -> Result<(), CoordinatorError> {
        let Some((bundle, key)) = &self.files else { return Ok(()) };
        let ca = ClusterCa::load_files(bundle, key)
            .map_err(|e| CoordinatorError::InvalidArgument(format!("tls_ca_key: {e}")))?;
        *self.ca.write().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(Arc::new(ca));
        Ok(())
    }

    fn ca(&self) -> Result<Arc<ClusterCa>, CoordinatorError> {
        self.ca.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone().ok_or_else(|| {
            CoordinatorError::precondition(
                Reason::EnrolmentDisabled,
                "this coordinator holds no CA key (`tls_ca_key`), so it cannot enrol agents",
            )
        })
    }

    /// The pin of the CA agents are enrolled under.
    pub fn pin(&self) -> Result<CaPin, CoordinatorError> {
        let pin = self.ca()?.pin();
        pin.parse().map_err(|e: String| CoordinatorError::Internal(e))
    }

    /// The CA certificates agents trust (PEM).
    pub fn trust_bundle(&self) -> String {
        self.trust.as_ref().map(|t| String::from_utf8_lossy(&t.ca_pem()).into_owned()).unwrap_or_default()
    }

    /// A new token: its text (shown once) and the record the cluster keeps.
    pub fn new_token(
        &self,
        request: &TokenRequest,
        created_by: String,
        now_unix_ms: i64,
    ) -> Result<(JoinToken, JoinTokenRecord), CoordinatorError> {
        let pin = self.pin()?;
        if request.ttl.is_zero() || request.ttl > MAX_TOKEN_TTL {
            return Err(CoordinatorError::InvalidField {
                field: "ttl_ms",
                message: format!(
                    "a join token lives more than 0 and at most 30 days, not {}",
                    humantime::format_duration(request.ttl)
                ),
            });
        }
        if !request.host_id_pattern.is_empty()
            && flotilla_net::pki::PeerIdentity::new("x", Role::Agent, &request.host_id_pattern.replace('*', "x"))
                .is_err()
        {
            return Err(CoordinatorError::InvalidField {
                field: "host_id_pattern",
                message: format!(
                    "host id pattern `{}` may hold only letters, digits, `.`, `-`, `_` and `*`",
                    request.host_id_pattern
                ),
            });
        }
        for (k, v) in &request.labels {
            let ok = |t: &str| t.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '/'));
            if k.is_empty() || !ok(k) || !ok(v) {
                return Err(CoordinatorError::InvalidField {
                    field: "labels",
                    message: format!(
                        "label `{k}={v}`: keys (not empty) and values hold letters, digits, `.`, `-`, `_` and `/`"
                    ),
                });
            }
        }
        let token = JoinToken { pin: pin.clone(), id: random_hex(4)?, secret: random_hex(16)? };
        let ttl_ms = i64::try_from(request.ttl.as_millis()).unwrap_or(i64::MAX);
        let record = JoinTokenRecord {
            id: token.id.clone(),
            secret_sha256: token.secret_sha256(),
            created_unix_ms: now_unix_ms,
            expires_unix_ms: now_unix_ms.saturating_add(ttl_ms),
            uses_allowed: request.uses.max(1),
            uses: 0,
            labels: request.labels.clone(),
            host_id_pattern: request.host_id_pattern.clone(),
            revoked: false,
            created_by,
            enrolled_hosts: Vec::new(),
            ca_pin: pin.to_string(),
        };
        Ok((token, record))
    }

    /// Checks that `token` was made for this cluster's CA.
    pub fn check_pin(&self, token: &JoinToken) -> Result<(), CoordinatorError> {
        let ours = self.pin()?;
        if token.pin == ours {
            Ok(())
        } else {
            Err(CoordinatorError::unauthenticated(
                Reason::JoinTokenRefused,
                format!(
                    "join token {} pins CA {}, but this cluster's CA is {ours}: it was made for another cluster",
                    token.id, token.pin
                ),
            ))
        }
    }

    /// Signs an agent certificate for `host` for the key of `csr_der`.
    pub fn sign(&self, csr_der: &[u8], host: &str) -> Result<SignedRequest, CoordinatorError> {
        self.ca()?.sign_request(csr_der, Role::Agent, host, self.ttl).map_err(|e| match e {
            flotilla_net::pki::PkiError::Name(message) if message.contains("certificate request") => {
                CoordinatorError::InvalidField { field: "csr_der", message }
            }
            flotilla_net::pki::PkiError::Name(message) => CoordinatorError::InvalidField { field: "host_id", message },
            other => CoordinatorError::Internal(format!("signing an agent certificate: {other}")),
        })
    }
}

/// A refusal of the state machine as the API answers it.
pub fn refusal(r: EnrolmentRefusal) -> CoordinatorError {
    let message = r.to_string();
    match r {
        EnrolmentRefusal::TokenUnknown
        | EnrolmentRefusal::TokenExpired(_)
        | EnrolmentRefusal::TokenUsedUp { .. }
        | EnrolmentRefusal::TokenRevoked(_) => CoordinatorError::unauthenticated(Reason::JoinTokenRefused, message),
        EnrolmentRefusal::HostNotAllowed { .. } => {
            CoordinatorError::permission_denied(Reason::JoinTokenRefused, message)
        }
        EnrolmentRefusal::HostEnrolled(host) => CoordinatorError::HostEnrolled { host, message },
        EnrolmentRefusal::NotEnrolled(host) => CoordinatorError::no_host(&host, message),
        EnrolmentRefusal::StaleKey(_) => CoordinatorError::permission_denied(Reason::PermissionDenied, message),
        EnrolmentRefusal::NoSuchToken(id) => CoordinatorError::NotFound {
            reason: Reason::JoinTokenNotFound,
            resource_type: "flotilla.v1.JoinToken",
            name: id,
            message,
        },
    }
}

pub(crate) fn random_hex(bytes: usize) -> Result<String, CoordinatorError> {
    let mut buf = vec![0u8; bytes];
    getrandom::fill(&mut buf)
        .map_err(|e| CoordinatorError::Internal(format!("no randomness for a join token: {e}")))?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}
