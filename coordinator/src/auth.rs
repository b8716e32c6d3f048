//! Who may call what: every gRPC call is authenticated (the identity in the caller's
//! certificate, or an operator token) and checked against the role the call needs
//! before any service sees it; the services find the checked [`Caller`] and [`Actor`]
//! in the request's extensions. Calls that ask to change something are recorded in
//! the audit trail, allowed or refused (see [`crate::audit`]).
//!
//! The TLS handshake asks for a client certificate but does not require one (a host
//! that joins has none yet, an operator may use a token); the connection's [`Peer`]
//! says what the certificate is worth, judged once per connection. An operator's role
//! is bound into their certificate (`urn:flotilla:role:ROLE`) or kept with their token
//! in the replicated state; nothing a client says about itself is taken. Then one
//! table decides:
//!
//! | calls | who |
//! |---|---|
//! | `RaftPeer` | coordinators |
//! | reads of `Releases`, `Fleet`, `Cluster`, `Access`, `Policy` | operators: viewer and up |
//! | `Releases` Create, Approve, Pause, Resume, Abort, Rollback; `Fleet.Drain` | operators: deployer and up |
//! | `Cluster` AddNode, RemoveNode, Backup; join tokens, `Fleet.ForgetHost`; operator tokens; `Policy` writes | operators: admin |
//! | `AgentLink`, `Enrolment.Renew` | agents (and then only as the host their certificate names) |
//! | `Enrolment.Join`, health | anyone |
//! | `Access.WhoAmI`, reflection, anything else | any authenticated caller |
//!
//! Coordinators may call what operators may: a follower forwards a write to the leader
//! with its own certificate and the operator it acts for in [`ON_BEHALF_OF`], and the
//! leader checks that operator's role again. A call without a credential the cluster
//! vouches for answers UNAUTHENTICATED; a call by the wrong role PERMISSION_DENIED;
//! both name the identity, its role and the call. With `--insecure` there are no
//! identities and every call passes.
//!
//! A token is made through the leader and reaches the other coordinators as they apply
//! the log, so a follower that does not know a token yet waits up to
//! [`UNKNOWN_TOKEN_GRACE`] for it to arrive before refusing it: a token works at every
//! coordinator as soon as `flotilla tokens create` returns. (A revocation takes effect
//! at each coordinator as it applies it, normally within a heartbeat.)

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use flotilla_net::pki::{CertInfo, OperatorRole, PeerIdentity, Role};
use flotilla_net::{Peer, PeerInfo};
use flotilla_proto::status::Reason;
use tonic::Status;
use tonic::body::Body;
use tonic::codegen::Service;
use tonic::codegen::http::{HeaderMap, Request, Response};

use crate::access;
use crate::audit::{AuditNote, Auditor};
use crate::error::CoordinatorError;
use crate::node::Node;
use crate::state::{AuditRecord, OperatorTokenRecord};

/// Metadata a coordinator adds to a call it forwards: the operator it acts for and
/// their role, `NAME... ROLE` (`operator alice admin`); taken from coordinators only.
pub const ON_BEHALF_OF: &str = "x-flotilla-on-behalf-of";

/// How long a coordinator that does not lead waits for an operator token it does not
/// know to reach its state (one made a moment ago through another coordinator) before
/// refusing it.
pub const UNKNOWN_TOKEN_GRACE: Duration = Duration::from_secs(3);

/// The authenticated caller of a request, as the services see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// The cluster runs `--insecure`: nobody is authenticated.
    Insecure,
    /// No credential (only for calls anyone may make).
    Anonymous,
    /// A certificate of the cluster naming this identity.
    Identified {
        /// Who.
        identity: PeerIdentity,
        /// The certificate (key digest, validity, operator role).
        cert: CertInfo,
    },
    /// An operator token of the cluster.
    Token(OperatorTokenRecord),
}

impl Caller {
    /// The caller of `request` (its extensions carry it once [`AuthLayer`] let it
    /// through; a request that did not pass the layer, in tests, is `Insecure`).
    pub fn of<T>(request: &tonic::Request<T>) -> Caller {
        request.extensions().get::<Caller>().cloned().unwrap_or(Caller::Insecure)
    }

    /// The identity, if there is one.
    pub fn identity(&self) -> Option<&PeerIdentity> {
        match self {
            Caller::Identified { identity, .. } => Some(identity),
            _ => None,
        }
    }

    fn is_coordinator(&self) -> bool {
        self.identity().is_some_and(|i| i.role == Role::Coordinator)
    }
}

/// Who a call acts for: the operator (by certificate or token) a coordinator
/// forwarded it for, or the caller itself. What audit records and events name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    /// `operator alice`, `token ci-bot`, `agent web-1`, `coordinator 2`, `anonymous`.
    pub name: String,
    /// The operator role; `None` for callers that are not operators (and for all with
    /// `--insecure`).
    pub role: Option<OperatorRole>,
    /// `certificate`, `token ID`, `coordinator N` (forwarded), `none` or `insecure`.
    pub authenticated_by: String,
    /// When the credential expires (ms); 0 when it does not or is unknown.
    pub expires_unix_ms: i64,
}

impl Actor {
    /// The actor of `request` (see [`Caller::of`]).
    pub fn of<T>(request: &tonic::Request<T>) -> Actor {
        request.extensions().get::<Actor>().cloned().unwrap_or_else(Actor::insecure)
    }

    fn insecure() -> Self {
        Self { name: "anonymous".into(), role: None, authenticated_by: "insecure".into(), expires_unix_ms: 0 }
    }

    fn anonymous() -> Self {
        Self { name: "anonymous".into(), role: None, authenticated_by: "none".into(), expires_unix_ms: 0 }
    }

    /// The actor as a coordinator forwards it ([`ON_BEHALF_OF`]); `None` for actors
    /// without a role (anonymous with `--insecure`).
    pub fn forwarded(&self) -> Option<String> {
        self.role.map(|role| format!("{} {role}", self.name))
    }

    /// Whether this is the insecure cluster's nobody (to whom every call is open).
    pub fn is_insecure(&self) -> bool {
        self.authenticated_by == "insecure"
    }
}

/// Which callers a call takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Need {
    /// Anyone, with or without a credential.
    Anyone,
    /// Any authenticated caller.
    AnyIdentity,
    /// These kinds of peer only, by certificate.
    Peers(&'static [Role], &'static str),
    /// Operators of at least this role (and coordinators, which forward).
    Operator(OperatorRole),
}

/// What a call needs, by its path (`/flotilla.v1.Releases/Create`), and whether it asks
/// to change something (and so is audited).
fn need(path: &str) -> (Need, bool) {
    use OperatorRole::{Admin, Deployer, Viewer};
    let mut parts = path.trim_start_matches('/').splitn(2, '/');
    let (service, method) = (parts.next().unwrap_or_default(), parts.next().unwrap_or_default());
    match (service, method) {
        ("flotilla.v1.RaftPeer", _) => (Need::Peers(&[Role::Coordinator], "coordinators"), false),
        ("flotilla.v1.AgentLink", _) => (Need::Peers(&[Role::Agent], "agents"), false),
        ("flotilla.v1.Enrolment", "Join") => (Need::Anyone, true),
        ("flotilla.v1.Enrolment", _) => (Need::Peers(&[Role::Agent], "agents"), true),
        ("grpc.health.v1.Health", _) => (Need::Anyone, false),
        ("flotilla.v1.Access", "WhoAmI") => (Need::AnyIdentity, false),
        ("flotilla.v1.Releases", "Plan" | "Get" | "List" | "Watch" | "Stats")
        | ("flotilla.v1.Fleet", "ListAgents" | "GetHost" | "ListJoinTokens")
        | ("flotilla.v1.Cluster", "Status")
        | ("flotilla.v1.Access", "ListTokens" | "ListAudit")
        | ("flotilla.v1.Policy", "ListWindows" | "ListHooks") => (Need::Operator(Viewer), false),
        (
            "flotilla.v1.Releases",
            "Create" | "Approve" | "Pause" | "Resume" | "Abort" | "Rollback" | "Annotate" | "RetryHost" | "ExcludeHost",
        )
        | ("flotilla.v1.Fleet", "Drain") => (Need::Operator(Deployer), true),
        // Everything else of the operators' services, including methods added later
        // without an entry here, is for admins.
        (
            "flotilla.v1.Releases"
            | "flotilla.v1.Fleet"
            | "flotilla.v1.Cluster"
            | "flotilla.v1.Access"
            | "flotilla.v1.Policy",
            _,
        ) => (Need::Operator(Admin), true),
        _ => (Need::AnyIdentity, false),
    }
}

/// What the layer knows of the cluster to check credentials with.
#[allow(missing_debug_implementations)]
pub struct Checks<'a> {
    /// The cluster's trust domain; `None` when identities are not checked against one.
    pub trust_domain: Option<&'a str>,
    /// The cluster id operator tokens must carry; `None`: any.
    pub cluster_id: Option<&'a str>,
    /// The operator token of an id, as this node applied it.
    pub token: &'a dyn Fn(&str) -> Option<OperatorTokenRecord>,
    /// Now (ms since the epoch).
    pub now_unix_ms: i64,
}

/// What a call carries besides its connection.
#[derive(Debug, Clone, Copy, Default)]
pub struct Presented<'a> {
    /// The bearer token of `authorization: Bearer TOKEN`.
    pub bearer: Option<&'a str>,
    /// [`ON_BEHALF_OF`].
    pub on_behalf_of: Option<&'a str>,
}

impl<'a> Presented<'a> {
    /// What `headers` carry. A malformed `authorization` is presented as a token the
    /// check refuses.
    pub fn of(headers: &'a HeaderMap) -> Self {
        let bearer = headers.get("authorization").map(|v| {
            let v = v.to_str().unwrap_or_default().trim();
            match v.split_once(' ') {
                Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => token.trim(),
                _ => v,
            }
        });
        let on_behalf_of = headers.get(ON_BEHALF_OF).and_then(|v| v.to_str().ok());
        Self { bearer, on_behalf_of }
    }
}

/// A decision: the caller, whom it acts for, and whether the call may go on.
#[derive(Debug)]
pub struct Decision {
    /// The caller.
    pub caller: Caller,
    /// Whom it acts for (also for a refusal, for its audit record).
    pub actor: Actor,
    /// The refusal, if any.
    pub verdict: Result<(), CoordinatorError>,
}

fn unauthenticated(message: String) -> CoordinatorError {
    CoordinatorError::unauthenticated(Reason::Unauthenticated, message)
}

fn denied(message: String) -> CoordinatorError {
    CoordinatorError::permission_denied(Reason::PermissionDenied, message)
}

/// Decides a call to `path` over a connection from `peer`.
pub fn decide(path: &str, peer: &Peer, presented: Presented<'_>, checks: &Checks<'_>) -> Decision {
    let call = path.trim_start_matches('/');
    let (need, _) = need(path);
    let refuse = |caller: Caller, actor: Actor, e: CoordinatorError| Decision { caller, actor, verdict: Err(e) };
    let pass = |caller: Caller, actor: Actor| Decision { caller, actor, verdict: Ok(()) };
    if *peer == Peer::Plaintext {
        return pass(Caller::Insecure, Actor::insecure());
    }
    // Who the caller is.
    let (caller, actor) = if let Some(text) = presented.bearer {
        match access::check_token(text, checks.cluster_id, checks.token, checks.now_unix_ms) {
            Ok(token) => {
                let actor = Actor {
                    name: format!("token {}", token.name),
                    role: Some(access::role_of(token.role)),
                    authenticated_by: format!("token {}", token.id),
                    expires_unix_ms: token.expires_unix_ms,
                };
                (Caller::Token(token), actor)
            }
            Err(_) if need == Need::Anyone => return pass(Caller::Anonymous, Actor::anonymous()),
            Err(refusal) => {
                let actor = Actor { name: refusal.actor.unwrap_or_else(|| "anonymous".into()), ..Actor::anonymous() };
                return refuse(Caller::Anonymous, actor, unauthenticated(format!("{call} refused: {}", refusal.why)));
            }
        }
    } else {
        match peer {
            Peer::Plaintext | Peer::Anonymous => (Caller::Anonymous, Actor::anonymous()),
            Peer::Refused(_) if need == Need::Anyone => return pass(Caller::Anonymous, Actor::anonymous()),
            Peer::Refused(why) => {
                return refuse(
                    Caller::Anonymous,
                    Actor::anonymous(),
                    unauthenticated(format!("{call} refused: {why}")),
                );
            }
            Peer::Trusted(cert) => match cert.identities.as_slice() {
                [identity] if checks.trust_domain.is_none_or(|d| d == identity.trust_domain) => {
                    let role = if identity.role == Role::Operator { cert.operator_role } else { None };
                    let actor = Actor {
                        name: identity.to_string(),
                        role,
                        authenticated_by: "certificate".into(),
                        expires_unix_ms: cert.not_after.saturating_mul(1000),
                    };
                    (Caller::Identified { identity: identity.clone(), cert: cert.clone() }, actor)
                }
                _ if need == Need::Anyone => return pass(Caller::Anonymous, Actor::anonymous()),
                [identity] => {
                    let why = format!(
                        "{call} refused: {identity} belongs to trust domain `{}`, this cluster is `{}`",
                        identity.trust_domain,
                        checks.trust_domain.unwrap_or_default()
                    );
                    return refuse(Caller::Anonymous, Actor::anonymous(), unauthenticated(why));
                }
                _ => {
                    let why = format!(
                        "{call} refused: the certificate {} names no Flotilla identity (one URI `spiffe://DOMAIN/ROLE/NAME`); issue certificates with `flotilla tls`",
                        cert.describe()
                    );
                    return refuse(Caller::Anonymous, Actor::anonymous(), unauthenticated(why));
                }
            },
        }
    };
    // What it may do.
    match (need, &caller) {
        (Need::Anyone, _) => pass(caller, actor),
        (_, Caller::Anonymous | Caller::Insecure) => {
            let why = format!(
                "{call} needs a client certificate from the cluster's CA or an operator token; neither was presented"
            );
            refuse(caller, actor, unauthenticated(why))
        }
        (Need::AnyIdentity, _) => pass(caller, actor),
        (Need::Peers(roles, _), Caller::Identified { identity, .. }) if roles.contains(&identity.role) => {
            pass(caller, actor)
        }
        (Need::Peers(_, who), _) => {
            let e = denied(format!("{} may not call {call}: it is for {who}", actor.name));
            refuse(caller, actor, e)
        }
        (Need::Operator(needed), Caller::Identified { identity, .. }) if identity.role == Role::Coordinator => {
            match presented.on_behalf_of {
                None => pass(caller, actor),
                Some(forwarded) => match parse_forwarded(forwarded) {
                    Some((name, role)) => {
                        let actor = Actor {
                            name,
                            role: Some(role),
                            authenticated_by: identity.to_string(),
                            expires_unix_ms: 0,
                        };
                        operator_may(call, needed, caller, actor)
                    }
                    None => {
                        let e = denied(format!(
                            "{identity} forwarded {call} for `{forwarded}` without the role the caller holds (a coordinator of an older build); call the leader directly or upgrade that coordinator"
                        ));
                        refuse(caller, actor, e)
                    }
                },
            }
        }
        (Need::Operator(_), Caller::Identified { identity, .. }) if identity.role != Role::Operator => {
            let e = denied(format!("{identity} may not call {call}: it is for operators"));
            refuse(caller, actor, e)
        }
        (Need::Operator(needed), _) => operator_may(call, needed, caller, actor),
    }
}

/// An operator's call: allowed when their role is at least `needed`.
fn operator_may(call: &str, needed: OperatorRole, caller: Caller, actor: Actor) -> Decision {
    let verdict = match actor.role {
        Some(role) if role >= needed => Ok(()),
        Some(role) => {
            Err(denied(format!("{} (role {role}) may not call {call}: it needs the {needed} role", actor.name)))
        }
        None => Err(denied(format!(
            "{} may not call {call}: its certificate names no operator role (issue a new one with `flotilla tls operator NAME --role ROLE`)",
            actor.name
        ))),
    };
    Decision { caller, actor, verdict }
}

/// `NAME... ROLE` of [`ON_BEHALF_OF`].
fn parse_forwarded(text: &str) -> Option<(String, OperatorRole)> {
    let (name, role) = text.trim().rsplit_once(' ')?;
    Some((name.to_owned(), role.parse().ok()?))
}

/// The tower layer that checks every call (see the module's table) and writes the
/// audit trail.
#[derive(Debug, Clone)]
pub struct AuthLayer {
    /// The cluster's trust domain (from this node's own certificate); `None` when
    /// identities are not checked against one.
    trust_domain: Option<String>,
    /// The node whose state holds the operator tokens, and its auditor.
    cluster: Option<(Node, Auditor)>,
}

impl AuthLayer {
    /// A layer for a cluster whose identities are in `trust_domain`.
    pub fn new(trust_domain: Option<String>) -> Self {
        Self { trust_domain, cluster: None }
    }

    /// Checks operator tokens against `node`'s state, and records audited calls with
    /// `auditor`.
    pub fn with_cluster(mut self, node: Node, auditor: Auditor) -> Self {
        self.cluster = Some((node, auditor));
        self
    }
}

impl<S> tower_layer::Layer<S> for AuthLayer {
    type Service = Auth<S>;

    fn layer(&self, inner: S) -> Auth<S> {
        Auth { inner, trust_domain: self.trust_domain.clone(), cluster: self.cluster.clone() }
    }
}

/// What [`Auth`] answers a call with.
type Served<E> = Pin<Box<dyn Future<Output = Result<Response<Body>, E>> + Send>>;

/// The service [`AuthLayer`] makes.
#[derive(Debug, Clone)]
pub struct Auth<S> {
    inner: S,
    trust_domain: Option<String>,
    cluster: Option<(Node, Auditor)>,
}

/// Decides a call to `path` from `peer` presenting `presented`, with the operator tokens
/// and cluster id of `node`'s applied state (none: tokens are unknown) and identities
/// checked against `trust_domain`. The gRPC layer and the HTTP listener's dashboard
/// both decide through this.
pub fn decide_on(
    node: Option<&Node>,
    trust_domain: Option<&str>,
    path: &str,
    peer: &Peer,
    presented: Presented<'_>,
) -> Decision {
    let cluster_id = node.and_then(|node| node.identity().current()).map(|c| c.id);
    let token = |id: &str| node.and_then(|node| node.read_local(|s| s.access().token(id).cloned()));
    let checks = Checks {
        trust_domain,
        cluster_id: cluster_id.as_deref(),
        token: &token,
        now_unix_ms: crate::node::now_unix_ms(),
    };
    decide(path, peer, presented, &checks)
}

impl<S> Auth<S> {
    fn decide(&self, path: &str, peer: &Peer, headers: &HeaderMap) -> Decision {
        let node = self.cluster.as_ref().map(|(node, _)| node);
        decide_on(node, self.trust_domain.as_deref(), path, peer, Presented::of(headers))
    }

    /// The token of `headers` this node does not know yet and may still learn: it is
    /// well formed, of this cluster, and this node does not lead (the leader applies a
    /// token before its maker hears of it).
    fn token_to_await(&self, headers: &HeaderMap) -> Option<(Node, String)> {
        let (node, _) = self.cluster.as_ref()?;
        let token: access::OperatorToken = Presented::of(headers).bearer?.parse().ok()?;
        let cluster = node.identity().current().map(|c| c.id);
        let unknown = cluster.is_none_or(|c| c == token.cluster)
            && !node.leadership().borrow().leading
            && node.read_local(|s| s.access().token(&token.id).is_none());
        unknown.then(|| (node.clone(), token.id))
    }
}

/// Waits until `node` has applied the token `id`, for at most [`UNKNOWN_TOKEN_GRACE`].
async fn await_token(node: Node, id: String) {
    let mut metrics = node.raft().metrics();
    let known = |node: &Node| node.read_local(|s| s.access().token(&id).is_some());
    let arrived = async {
        while !known(&node) {
            // Every apply changes the metrics; a stopped Raft ends the wait.
            if metrics.changed().await.is_err() {
                return;
            }
        }
    };
    if tokio::time::timeout(UNKNOWN_TOKEN_GRACE, arrived).await.is_err() {
        tracing::debug!(token = %id, "an unknown operator token did not arrive within the grace");
    }
}

impl<S> Service<Request<Body>> for Auth<S>
where
    S: Service<Request<Body>, Response = Response<Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = Served<S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        if let Some((node, id)) = self.token_to_await(request.headers()) {
            // The service that was made ready goes with the call; this one keeps a clone.
            let inner = self.inner.clone();
            let inner = std::mem::replace(&mut self.inner, inner);
            let mut ready = Auth { inner, trust_domain: self.trust_domain.clone(), cluster: self.cluster.clone() };
            return Box::pin(async move {
                await_token(node, id).await;
                ready.check_and_call(request).await
            });
        }
        self.check_and_call(request)
    }
}

impl<S> Auth<S>
where
    S: Service<Request<Body>, Response = Response<Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    /// Decides `request` and serves or refuses it (and records it when audited).
    fn check_and_call(&mut self, mut request: Request<Body>) -> Served<S::Error> {
        let info = request.extensions().get::<PeerInfo>().cloned();
        let peer = info.as_ref().map_or(Peer::Plaintext, |info| info.peer.clone());
        let path = request.uri().path().to_owned();
        let Decision { caller, actor, verdict } = self.decide(&path, &peer, request.headers());
        // Calls that ask for a change are recorded where a client made them: a call a
        // coordinator forwards was recorded by that coordinator.
        let auditor = match &self.cluster {
            Some((node, auditor)) if need(&path).1 && !caller.is_coordinator() => Some((node.id(), auditor.clone())),
            _ => None,
        };
        let record = auditor.as_ref().map(|(node_id, _)| AuditRecord {
            actor: actor.name.clone(),
            role: actor.role.map(|r| r.to_string()).unwrap_or_default(),
            method: path.trim_start_matches('/').trim_start_matches("flotilla.v1.").to_owned(),
            peer: info.as_ref().and_then(|i| i.remote).map(|a| a.to_string()).unwrap_or_default(),
            node_id: *node_id,
            ..AuditRecord::default()
        });
        match verdict {
            Ok(()) => {
                request.extensions_mut().insert(caller);
                request.extensions_mut().insert(actor);
                let (Some((_, auditor)), Some(mut record)) = (auditor, record) else {
                    return Box::pin(self.inner.call(request));
                };
                let note = AuditNote::default();
                request.extensions_mut().insert(note.clone());
                let served = self.inner.call(request);
                Box::pin(async move {
                    let response = served.await?;
                    let status = Status::from_header_map(response.headers()).filter(|s| s.code() != tonic::Code::Ok);
                    // A call this node did not serve (not the leader, stopping) is
                    // recorded where the client retries it.
                    if status.as_ref().is_none_or(|s| s.code() != tonic::Code::Unavailable) {
                        note.fill(&mut record);
                        crate::audit::set_outcome(&mut record, status.as_ref());
                        auditor.submit(record);
                    }
                    Ok(response)
                })
            }
            Err(refusal) => {
                let status = Status::from(refusal);
                tracing::info!(call = %path, remote = ?info.and_then(|i| i.remote), "refused: {}", status.message());
                if let (Some((_, auditor)), Some(mut record)) = (auditor, record) {
                    crate::audit::set_outcome(&mut record, Some(&status));
                    auditor.submit(record);
                }
                Box::pin(std::future::ready(Ok(status.into_http())))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use tonic::Code;

    use super::*;
    use crate::state::RoleRecord;

    fn trusted_as(role: Role, name: &str, operator_role: Option<OperatorRole>) -> Peer {
        let identity = PeerIdentity::new("prod", role, name).unwrap();
        Peer::Trusted(CertInfo {
            identities: vec![identity],
            subject: String::new(),
            not_before: 0,
            not_after: 1,
            key_sha256: "sha256:00".into(),
            operator_role,
        })
    }

    fn trusted(role: Role, name: &str) -> Peer {
        let operator_role = (role == Role::Operator).then_some(OperatorRole::Admin);
        trusted_as(role, name, operator_role)
    }

    fn token(id: &str, role: RoleRecord, revoked: bool) -> (String, OperatorTokenRecord) {
        let request = access::TokenRequest {
            role: access::role_of(role),
            ttl: Duration::from_secs(60),
            name: format!("bot-{id}"),
        };
        let (text, mut record) = access::make_token("0123456789abcdef", &request, "operator root".into(), 0).unwrap();
        if revoked {
            record.revoked_by = "operator root".into();
            record.revoked_unix_ms = 5;
        }
        (text.to_string(), record)
    }

    fn check(path: &str, peer: &Peer, presented: Presented<'_>, tokens: &[OperatorTokenRecord]) -> Decision {
        let lookup = |id: &str| tokens.iter().find(|t| t.id == id).cloned();
        let checks = Checks {
            trust_domain: Some("prod"),
            cluster_id: Some("0123456789abcdef"),
            token: &lookup,
            now_unix_ms: 10,
        };
        decide(path, peer, presented, &checks)
    }

    fn ok(path: &str, peer: &Peer) -> bool {
        check(path, peer, Presented::default(), &[]).verdict.is_ok()
    }

    fn refusal(path: &str, peer: &Peer) -> (Code, String) {
        let status = Status::from(check(path, peer, Presented::default(), &[]).verdict.unwrap_err());
        (status.code(), status.message().to_owned())
    }

    #[test]
    fn each_kind_of_peer_reaches_its_own_services_only() {
        let agent = trusted(Role::Agent, "web-1");
        let operator = trusted(Role::Operator, "alice");
        let coordinator = trusted(Role::Coordinator, "2");
        for path in ["/flotilla.v1.Releases/Create", "/flotilla.v1.Fleet/Drain", "/flotilla.v1.Cluster/Status"] {
            assert!(ok(path, &operator), "{path}");
            assert!(ok(path, &coordinator), "{path}");
            let (code, message) = refusal(path, &agent);
            assert_eq!(code, Code::PermissionDenied);
            assert!(message.starts_with("agent web-1 may not call flotilla.v1."), "{message}");
        }
        assert_eq!(refusal("/flotilla.v1.RaftPeer/Append", &agent).0, Code::PermissionDenied);
        assert_eq!(refusal("/flotilla.v1.RaftPeer/Append", &operator).0, Code::PermissionDenied);
        assert!(ok("/flotilla.v1.RaftPeer/Append", &coordinator));
        assert!(ok("/flotilla.v1.AgentLink/Session", &agent));
        assert_eq!(refusal("/flotilla.v1.AgentLink/Session", &operator).0, Code::PermissionDenied);
        assert!(ok("/flotilla.v1.Enrolment/Renew", &agent));
    }

    #[test]
    fn each_operator_role_may_do_its_own_and_no_more() {
        let viewer = trusted_as(Role::Operator, "vera", Some(OperatorRole::Viewer));
        let deployer = trusted_as(Role::Operator, "dan", Some(OperatorRole::Deployer));
        let admin = trusted_as(Role::Operator, "ada", Some(OperatorRole::Admin));
        let reads = [
            "/flotilla.v1.Releases/List",
            "/flotilla.v1.Releases/Watch",
            "/flotilla.v1.Releases/Plan",
            "/flotilla.v1.Fleet/ListAgents",
            "/flotilla.v1.Cluster/Status",
            "/flotilla.v1.Access/ListAudit",
            "/flotilla.v1.Policy/ListWindows",
            "/flotilla.v1.Policy/ListHooks",
        ];
        let deploys = ["/flotilla.v1.Releases/Create", "/flotilla.v1.Releases/Approve", "/flotilla.v1.Fleet/Drain"];
        let admins = [
            "/flotilla.v1.Cluster/AddNode",
            "/flotilla.v1.Cluster/Backup",
            "/flotilla.v1.Fleet/CreateJoinToken",
            "/flotilla.v1.Fleet/ForgetHost",
            "/flotilla.v1.Access/CreateToken",
            "/flotilla.v1.Releases/SomethingNew",
            "/flotilla.v1.Policy/SetWindow",
            "/flotilla.v1.Policy/RemoveWindow",
            "/flotilla.v1.Policy/SetHook",
        ];
        for path in reads {
            assert!(ok(path, &viewer) && ok(path, &deployer) && ok(path, &admin), "{path}");
        }
        for path in deploys {
            let (code, message) = refusal(path, &viewer);
            assert_eq!(code, Code::PermissionDenied, "{path}");
            assert!(
                message.contains("operator vera (role viewer) may not call")
                    && message.contains("needs the deployer role"),
                "{message}"
            );
            assert!(ok(path, &deployer) && ok(path, &admin), "{path}");
        }
        for path in admins {
            let (_, message) = refusal(path, &deployer);
            assert!(
                message.contains("operator dan (role deployer)") && message.contains("needs the admin role"),
                "{message}"
            );
            assert!(ok(path, &admin), "{path}");
        }
        assert!(ok("/flotilla.v1.Access/WhoAmI", &viewer));
        assert_eq!(refusal("/flotilla.v1.Access/WhoAmI", &Peer::Anonymous).0, Code::Unauthenticated);
        let (code, message) = refusal("/flotilla.v1.Releases/List", &trusted_as(Role::Operator, "old", None));
        assert_eq!(code, Code::PermissionDenied);
        assert!(message.contains("names no operator role"), "{message}");
    }

    #[test]
    fn a_token_stands_for_its_role_and_a_dead_one_for_nobody() {
        let (live_text, live) = token("1", RoleRecord::Deployer, false);
        let (dead_text, dead) = token("2", RoleRecord::Admin, true);
        let tokens = [live.clone(), dead.clone()];
        let with = |text: &str, path: &str| {
            check(path, &Peer::Anonymous, Presented { bearer: Some(text), on_behalf_of: None }, &tokens)
        };
        let d = with(&live_text, "/flotilla.v1.Releases/Create");
        assert!(d.verdict.is_ok());
        assert_eq!(d.actor.name, format!("token {}", live.name));
        assert_eq!(d.actor.role, Some(OperatorRole::Deployer));
        assert_eq!(d.caller, Caller::Token(live));
        let denied = Status::from(with(&live_text, "/flotilla.v1.Cluster/AddNode").verdict.unwrap_err());
        assert_eq!(denied.code(), Code::PermissionDenied);
        let d = with(&dead_text, "/flotilla.v1.Releases/List");
        assert_eq!(d.actor.name, format!("token {}", dead.name), "a refused known token is named for the audit");
        let status = Status::from(d.verdict.unwrap_err());
        assert_eq!(status.code(), Code::Unauthenticated);
        assert!(status.message().contains("was revoked by operator root"), "{}", status.message());
        // Calls anyone may make pass with a bad token, as anonymous.
        assert!(with(&dead_text, "/flotilla.v1.Enrolment/Join").verdict.is_ok());
        // A token outweighs the connection's certificate.
        let viewer = trusted_as(Role::Operator, "vera", Some(OperatorRole::Viewer));
        let presented = Presented { bearer: Some(&live_text), on_behalf_of: None };
        assert!(check("/flotilla.v1.Releases/Create", &viewer, presented, &tokens).verdict.is_ok());
    }

    #[test]
    fn a_coordinator_acts_for_the_operator_it_forwards_and_never_for_more() {
        let coordinator = trusted(Role::Coordinator, "2");
        let forwarded = |who: &'static str| {
            check(
                "/flotilla.v1.Releases/Create",
                &coordinator,
                Presented { bearer: None, on_behalf_of: Some(who) },
                &[],
            )
        };
        let d = forwarded("operator alice deployer");
        assert!(d.verdict.is_ok());
        assert_eq!((d.actor.name.as_str(), d.actor.role), ("operator alice", Some(OperatorRole::Deployer)));
        let d = forwarded("token ci viewer");
        assert_eq!(d.actor.name, "token ci");
        assert!(Status::from(d.verdict.unwrap_err()).message().contains("token ci (role viewer) may not call"));
        let d = forwarded("operator alice");
        let message = Status::from(d.verdict.unwrap_err()).message().to_owned();
        assert!(message.contains("older build"), "{message}");
        // An operator cannot claim to be forwarding.
        let admin = trusted(Role::Operator, "ada");
        let d = check(
            "/flotilla.v1.Releases/Create",
            &admin,
            Presented { bearer: None, on_behalf_of: Some("operator root admin") },
            &[],
        );
        assert_eq!(d.actor.name, "operator ada");
    }

    #[test]
    fn without_a_credential_only_join_and_health_pass() {
        for peer in [Peer::Anonymous, Peer::Refused("the certificate of agent x expired".into())] {
            for open in ["/flotilla.v1.Enrolment/Join", "/grpc.health.v1.Health/Check"] {
                let d = check(open, &peer, Presented::default(), &[]);
                assert_eq!((d.caller, d.verdict.is_ok()), (Caller::Anonymous, true), "{open}");
            }
            let (code, message) = refusal("/flotilla.v1.Releases/Create", &peer);
            assert_eq!(code, Code::Unauthenticated);
            assert!(message.starts_with("flotilla.v1.Releases/Create "), "{message}");
        }
        let (_, message) = refusal("/flotilla.v1.Releases/Create", &Peer::Anonymous);
        assert!(message.contains("neither was presented"), "{message}");
        let other_domain = match trusted(Role::Operator, "alice") {
            Peer::Trusted(mut cert) => {
                cert.identities[0].trust_domain = "staging".into();
                Peer::Trusted(cert)
            }
            _ => unreachable!(),
        };
        assert_eq!(refusal("/flotilla.v1.Releases/Create", &other_domain).0, Code::Unauthenticated);
        let insecure = check("/flotilla.v1.Releases/Create", &Peer::Plaintext, Presented::default(), &[]);
        assert_eq!((insecure.caller, insecure.verdict.is_ok()), (Caller::Insecure, true));
    }

    #[test]
    fn calls_that_ask_for_a_change_are_audited_and_reads_are_not() {
        for path in [
            "/flotilla.v1.Releases/Create",
            "/flotilla.v1.Releases/Rollback",
            "/flotilla.v1.Fleet/Drain",
            "/flotilla.v1.Cluster/AddNode",
            "/flotilla.v1.Access/RevokeToken",
            "/flotilla.v1.Enrolment/Join",
        ] {
            assert!(need(path).1, "{path}");
        }
        for path in ["/flotilla.v1.Releases/Get", "/flotilla.v1.Access/ListAudit", "/flotilla.v1.RaftPeer/Vote"] {
            assert!(!need(path).1, "{path}");
        }
    }
}
