//! Who looks at the dashboard and what they may do there.
//!
//! A browser proves who it is like any client of the cluster: with a client
//! certificate of the cluster's CA (judged per connection), or with an operator token,
//! given once on the sign-in page and then kept in a session cookie (`HttpOnly`,
//! `SameSite=Strict`, `Secure` under TLS) that every request presents. The token is
//! checked against the applied state on every request, so a revoked or expired token
//! ends the session at once. Each decision is the gRPC port's ([`decide_on`]), for the
//! gRPC method the page or action stands for.
//!
//! Every form carries a token bound to the visitor ([`form_token`]): a page of another
//! site cannot post an action in the visitor's name, even with a client certificate the
//! browser would present by itself.

use axum::http::HeaderMap;
use flotilla_net::peer::Peer;
use flotilla_net::pki::OperatorRole;
use sha2::{Digest, Sha256};

use crate::auth::{Actor, Presented, decide_on};
use crate::error::CoordinatorError;
use crate::http::Endpoints;

/// The session cookie's name.
pub(crate) const COOKIE: &str = "flotilla_session";

/// The longest a session cookie lives (the token's own expiry ends it sooner).
pub(crate) const SESSION_MAX_AGE_S: i64 = 12 * 3600;

/// Who is asking, and whether they may do what they ask.
#[derive(Debug)]
pub(crate) struct Visitor {
    /// Whom the request acts for.
    pub actor: Actor,
    /// The session's operator token, if the visitor signed in with one.
    pub token: Option<String>,
    /// Whether they may make the call asked about.
    pub verdict: Result<(), CoordinatorError>,
}

impl Visitor {
    /// Whether this visitor may make releases move: deployers and admins, and anyone on
    /// an `--insecure` cluster.
    pub(crate) fn may_act(&self) -> bool {
        self.actor.is_insecure() || self.actor.role.is_some_and(|r| r >= OperatorRole::Deployer)
    }

    /// How the header names them: `operator alice (deployer)`.
    pub(crate) fn describe(&self) -> String {
        match self.actor.role {
            _ if self.actor.is_insecure() => "anyone (the cluster runs --insecure)".to_owned(),
            Some(role) => format!("{} ({role})", self.actor.name),
            None => self.actor.name.clone(),
        }
    }
}

/// The operator token of the session cookie, if any.
pub(crate) fn session_token(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| {
            let (name, value) = pair.trim().split_once('=')?;
            (name == COOKIE && !value.is_empty()).then(|| value.to_owned())
        })
}

/// Decides the request as the gRPC port would decide a call to `path` (say
/// `/flotilla.v1.Releases/Get`) by the same caller: the session's token if there is one,
/// else the connection's certificate.
pub(crate) fn visitor(e: &Endpoints, peer: &Peer, headers: &HeaderMap, path: &str) -> Visitor {
    visitor_with(e, peer, session_token(headers), path)
}

/// As [`visitor`], with the operator token given (the sign-in form's).
pub(crate) fn visitor_with(e: &Endpoints, peer: &Peer, token: Option<String>, path: &str) -> Visitor {
    let presented = Presented { bearer: token.as_deref(), on_behalf_of: None };
    let decision = decide_on(Some(&e.node), e.trust_domain.as_deref(), path, peer, presented);
    Visitor { actor: decision.actor, token, verdict: decision.verdict }
}

/// The form token of `visitor`: a digest of this process's key, whom they act for and
/// their session's token. Forms carry it; an action whose form does not is refused.
pub(crate) fn form_token(e: &Endpoints, visitor: &Visitor) -> String {
    let mut h = Sha256::new();
    h.update(b"flotilla dashboard form v1\0");
    h.update(e.form_key.as_deref().map_or(&[][..], |k| k.as_slice()));
    h.update(visitor.actor.name.as_bytes());
    h.update([0]);
    h.update(visitor.token.as_deref().unwrap_or_default().as_bytes());
    h.finalize().iter().take(16).map(|b| format!("{b:02x}")).collect()
}

/// Whether `given` is the visitor's form token (compared in constant time); never
/// without a key.
pub(crate) fn form_token_matches(e: &Endpoints, visitor: &Visitor, given: &str) -> bool {
    if e.form_key.is_none() {
        return false;
    }
    let want = form_token(e, visitor);
    want.len() == given.len() && want.bytes().zip(given.bytes()).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
}

/// The `Set-Cookie` value that starts a session with `token` for `max_age_s` seconds.
pub(crate) fn start_cookie(token: &str, tls: bool, max_age_s: i64) -> String {
    let secure = if tls { "; Secure" } else { "" };
    format!("{COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age_s}{secure}")
}

/// The `Set-Cookie` value that ends the session.
pub(crate) fn end_cookie(tls: bool) -> String {
    start_cookie("", tls, 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_session_cookie_is_found_among_others_and_set_strictly() {
        let mut headers = HeaderMap::new();
        headers.insert("cookie", "a=1; flotilla_session=flotilla-token-v1.x.y.z; b=2".parse().unwrap());
        assert_eq!(session_token(&headers).as_deref(), Some("flotilla-token-v1.x.y.z"));
        headers.insert("cookie", "flotilla_session=; other=3".parse().unwrap());
        assert_eq!(session_token(&headers), None);
        let set = start_cookie("T", true, 60);
        for part in ["flotilla_session=T", "HttpOnly", "SameSite=Strict", "Max-Age=60", "Secure", "Path=/"] {
            assert!(set.contains(part), "{set}");
        }
        assert!(!start_cookie("T", false, 60).contains("Secure"));
        assert!(end_cookie(true).contains("Max-Age=0"));
    }
}
