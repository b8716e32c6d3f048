//! Who may call what: every gRPC call is checked against the identity in the caller's
//! certificate before any service sees it, and the checked [`Caller`] is handed to the
//! services in the request's extensions.
//!
//! The TLS handshake asks for a client certificate but does not require one (a host
//! that joins has none yet); the connection's [`Peer`] says what the certificate is
//! worth, judged once per connection. [`AuthLayer`] then applies one table:
//!
//! | calls | who |
//! |---|---|
//! | `RaftPeer` | coordinators |
//! | `Releases`, `Fleet`, `Cluster` | operators, and coordinators (a follower forwards writes with its own certificate) |
//! | `AgentLink`, `Enrolment.Renew` | agents (and then only as the host their certificate names) |
//! | `Enrolment.Join`, health | anyone: the join token is the credential |
//! | reflection, anything else | any identity of the cluster |
//!
//! A call without a certificate the CA vouches for answers UNAUTHENTICATED; a call by
//! the wrong role PERMISSION_DENIED; both name the identity and the call. With
//! `--insecure` there are no identities and every call passes.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use flotilla_net::pki::{CertInfo, PeerIdentity, Role};
use flotilla_net::{Peer, PeerInfo};
use flotilla_proto::status::Reason;
use tonic::Status;
use tonic::body::Body;
use tonic::codegen::Service;
use tonic::codegen::http::{Request, Response};

use crate::error::CoordinatorError;

/// Metadata a coordinator adds to a call it forwards: who the call is for (taken from
/// coordinators only).
pub const ON_BEHALF_OF: &str = "x-flotilla-on-behalf-of";

/// The authenticated caller of a request, as the services see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// The cluster runs `--insecure`: nobody is authenticated.
    Insecure,
    /// No certificate (only for calls anyone may make).
    Anonymous,
    /// A certificate of the cluster naming this identity.
    Identified {
        /// Who.
        identity: PeerIdentity,
        /// The certificate (key digest, validity).
        cert: CertInfo,
    },
}

impl Caller {
    /// The caller of `request` (its extensions carry it once [`AuthLayer`] let it
    /// through; a request that did not pass the layer, in tests, is `Insecure`).
    pub fn of<T>(request: &tonic::Request<T>) -> Caller {
        request.extensions().get::<Caller>().cloned().unwrap_or(Caller::Insecure)
    }

    /// Who a request acts for, in words: the caller, or, for a call a coordinator
    /// forwarded, whom that coordinator forwarded it for ([`ON_BEHALF_OF`]).
    pub fn actor_of<T>(request: &tonic::Request<T>) -> String {
        let caller = Caller::of(request);
        let forwarded = request.metadata().get(ON_BEHALF_OF).and_then(|v| v.to_str().ok());
        match (&caller, forwarded) {
            (Caller::Identified { identity, .. }, Some(actor)) if identity.role == Role::Coordinator => {
                actor.to_owned()
            }
            _ => caller.actor(),
        }
    }

    /// The identity, if there is one.
    pub fn identity(&self) -> Option<&PeerIdentity> {
        match self {
            Caller::Identified { identity, .. } => Some(identity),
            _ => None,
        }
    }

    /// Who, in words, for audit records and events: `operator alice`, or `anonymous`.
    pub fn actor(&self) -> String {
        match self {
            Caller::Identified { identity, .. } => identity.to_string(),
            Caller::Insecure | Caller::Anonymous => "anonymous".to_owned(),
        }
    }
}

/// Which callers a call takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Policy {
    /// Anyone, with or without a certificate.
    Anyone,
    /// Any identity of the cluster.
    AnyIdentity,
    /// These roles only.
    Roles(&'static [Role], &'static str),
}

/// The policy of a call by its path (`/flotilla.v1.Releases/Create`).
fn policy(path: &str) -> Policy {
    let service = path.trim_start_matches('/').split('/').next().unwrap_or_default();
    match service {
        "flotilla.v1.RaftPeer" => Policy::Roles(&[Role::Coordinator], "coordinators"),
        "flotilla.v1.Releases" | "flotilla.v1.Fleet" | "flotilla.v1.Cluster" => {
            Policy::Roles(&[Role::Operator, Role::Coordinator], "operators")
        }
        "flotilla.v1.AgentLink" => Policy::Roles(&[Role::Agent], "agents"),
        "flotilla.v1.Enrolment" if path.ends_with("/Join") => Policy::Anyone,
        "flotilla.v1.Enrolment" => Policy::Roles(&[Role::Agent], "agents"),
        "grpc.health.v1.Health" => Policy::Anyone,
        _ => Policy::AnyIdentity,
    }
}

/// Decides a call: the caller to hand to the service, or the refusal.
fn decide(path: &str, peer: &Peer, trust_domain: Option<&str>) -> Result<Caller, CoordinatorError> {
    let call = path.trim_start_matches('/');
    let policy = policy(path);
    let caller = match peer {
        Peer::Plaintext => return Ok(Caller::Insecure),
        Peer::Anonymous => Caller::Anonymous,
        Peer::Refused(why) => {
            if policy == Policy::Anyone {
                return Ok(Caller::Anonymous);
            }
            return Err(CoordinatorError::unauthenticated(Reason::Unauthenticated, format!("{call} refused: {why}")));
        }
        Peer::Trusted(cert) => match cert.identities.as_slice() {
            [identity] if trust_domain.is_none_or(|d| d == identity.trust_domain) => {
                Caller::Identified { identity: identity.clone(), cert: cert.clone() }
            }
            [identity] => {
                return Err(CoordinatorError::unauthenticated(
                    Reason::Unauthenticated,
                    format!(
                        "{call} refused: {identity} belongs to trust domain `{}`, this cluster is `{}`",
                        identity.trust_domain,
                        trust_domain.unwrap_or_default()
                    ),
                ));
            }
            _ if policy == Policy::Anyone => return Ok(Caller::Anonymous),
            _ => {
                return Err(CoordinatorError::unauthenticated(
                    Reason::Unauthenticated,
                    format!(
                        "{call} refused: the certificate {} names no Flotilla identity (one URI `spiffe://DOMAIN/ROLE/NAME`); issue certificates with `flotilla tls`",
                        cert.describe()
                    ),
                ));
            }
        },
    };
    match (policy, &caller) {
        (Policy::Anyone, _) => Ok(caller),
        (_, Caller::Anonymous | Caller::Insecure) => Err(CoordinatorError::unauthenticated(
            Reason::Unauthenticated,
            format!("{call} needs a client certificate from the cluster's CA; none was presented"),
        )),
        (Policy::AnyIdentity, _) => Ok(caller),
        (Policy::Roles(roles, who), Caller::Identified { identity, .. }) => {
            if roles.contains(&identity.role) {
                Ok(caller)
            } else {
                Err(CoordinatorError::permission_denied(
                    Reason::PermissionDenied,
                    format!("{identity} may not call {call}: it is for {who}"),
                ))
            }
        }
    }
}

/// The tower layer that checks every call (see the module's table).
#[derive(Debug, Clone)]
pub struct AuthLayer {
    /// The cluster's trust domain (from this node's own certificate); `None` when
    /// identities are not checked against one.
    trust_domain: Option<String>,
}

impl AuthLayer {
    /// A layer for a cluster whose identities are in `trust_domain`.
    pub fn new(trust_domain: Option<String>) -> Self {
        Self { trust_domain }
    }
}

impl<S> tower_layer::Layer<S> for AuthLayer {
    type Service = Auth<S>;

    fn layer(&self, inner: S) -> Auth<S> {
        Auth { inner, trust_domain: self.trust_domain.clone() }
    }
}

/// The service [`AuthLayer`] makes.
#[derive(Debug, Clone)]
pub struct Auth<S> {
    inner: S,
    trust_domain: Option<String>,
}

impl<S> Service<Request<Body>> for Auth<S>
where
    S: Service<Request<Body>, Response = Response<Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<Body>) -> Self::Future {
        let peer = request.extensions().get::<PeerInfo>().map_or(Peer::Plaintext, |info| info.peer.clone());
        match decide(request.uri().path(), &peer, self.trust_domain.as_deref()) {
            Ok(caller) => {
                request.extensions_mut().insert(caller);
                Box::pin(self.inner.call(request))
            }
            Err(refusal) => {
                let remote = request.extensions().get::<PeerInfo>().and_then(|i| i.remote);
                tracing::info!(call = %request.uri().path(), ?remote, "refused: {refusal}");
                Box::pin(std::future::ready(Ok(Status::from(refusal).into_http())))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trusted(role: Role, name: &str) -> Peer {
        let identity = PeerIdentity::new("prod", role, name).unwrap();
        Peer::Trusted(CertInfo {
            identities: vec![identity],
            subject: String::new(),
            not_before: 0,
            not_after: 1,
            key_sha256: "sha256:00".into(),
        })
    }

    fn refusal(path: &str, peer: &Peer) -> (tonic::Code, String) {
        let status = Status::from(decide(path, peer, Some("prod")).unwrap_err());
        (status.code(), status.message().to_owned())
    }

    #[test]
    fn each_role_reaches_its_own_services_only() {
        use tonic::Code;
        let agent = trusted(Role::Agent, "web-1");
        let operator = trusted(Role::Operator, "alice");
        let coordinator = trusted(Role::Coordinator, "2");
        for path in ["/flotilla.v1.Releases/Create", "/flotilla.v1.Fleet/Drain", "/flotilla.v1.Cluster/Status"] {
            assert!(decide(path, &operator, Some("prod")).is_ok(), "{path}");
            assert!(decide(path, &coordinator, Some("prod")).is_ok(), "{path}");
            let (code, message) = refusal(path, &agent);
            assert_eq!(code, Code::PermissionDenied);
            assert!(message.starts_with("agent web-1 may not call flotilla.v1."), "{message}");
        }
        assert_eq!(refusal("/flotilla.v1.RaftPeer/Append", &agent).0, Code::PermissionDenied);
        assert_eq!(refusal("/flotilla.v1.RaftPeer/Append", &operator).0, Code::PermissionDenied);
        assert!(decide("/flotilla.v1.RaftPeer/Append", &coordinator, Some("prod")).is_ok());
        assert!(decide("/flotilla.v1.AgentLink/Session", &agent, Some("prod")).is_ok());
        assert_eq!(refusal("/flotilla.v1.AgentLink/Session", &operator).0, Code::PermissionDenied);
        assert!(decide("/flotilla.v1.Enrolment/Renew", &agent, Some("prod")).is_ok());
    }

    #[test]
    fn without_a_trusted_identity_only_join_and_health_pass() {
        use tonic::Code;
        for peer in [Peer::Anonymous, Peer::Refused("the certificate of agent x expired".into())] {
            assert_eq!(decide("/flotilla.v1.Enrolment/Join", &peer, Some("prod")).ok(), Some(Caller::Anonymous));
            assert_eq!(decide("/grpc.health.v1.Health/Check", &peer, Some("prod")).ok(), Some(Caller::Anonymous));
            let (code, message) = refusal("/flotilla.v1.Releases/Create", &peer);
            assert_eq!(code, Code::Unauthenticated);
            assert!(message.starts_with("flotilla.v1.Releases/Create "), "{message}");
        }
        let (_, message) = refusal("/flotilla.v1.Releases/Create", &Peer::Anonymous);
        assert!(message.contains("none was presented"), "{message}");
        let other_domain = match trusted(Role::Operator, "alice") {
            Peer::Trusted(mut cert) => {
                cert.identities[0].trust_domain = "staging".into();
                Peer::Trusted(cert)
            }
            _ => unreachable!(),
        };
        assert_eq!(refusal("/flotilla.v1.Releases/Create", &other_domain).0, Code::Unauthenticated);
        assert_eq!(decide("/flotilla.v1.Releases/Create", &Peer::Plaintext, Some("prod")).ok(), Some(Caller::Insecure));
    }
}
