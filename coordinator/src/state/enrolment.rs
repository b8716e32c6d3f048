//! Join tokens and enrolled hosts, replicated: which tokens may enrol which hosts,
//! how often and until when, and which key each enrolled host's certificate must have.
//!
//! A token's secret is never here: the leader makes the secret, keeps only its SHA-256
//! in the command, and hands the token to the operator who asked. Every check of a
//! token happens in [`EnrolmentState::apply`] at the command's time, so two joins
//! racing for a token's last use cannot both have it.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use super::Response;

/// A join token as the cluster keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinTokenRecord {
    /// The public part of the token.
    pub id: String,
    /// `sha256:HEX` of the token's secret.
    pub secret_sha256: String,
    /// When it was made (leader's clock).
    pub created_unix_ms: i64,
    /// When it stops enrolling hosts.
    pub expires_unix_ms: i64,
    /// How many hosts it may enrol.
    pub uses_allowed: u32,
    /// How many it enrolled.
    pub uses: u32,
    /// The labels its hosts may claim.
    pub labels: BTreeMap<String, String>,
    /// Host ids it may enrol (`*` matches any run); empty: any.
    pub host_id_pattern: String,
    /// Revoked by an operator.
    pub revoked: bool,
    /// Who made it.
    pub created_by: String,
    /// The hosts it enrolled, in order.
    pub enrolled_hosts: Vec<String>,
    /// `sha256:HEX` of the public key of the CA it pins.
    pub ca_pin: String,
}

impl JoinTokenRecord {
    /// Whether it can enrol a host at `at`; if not, why.
    pub fn usable(&self, at: i64) -> Result<(), EnrolmentRefusal> {
        if self.revoked {
            Err(EnrolmentRefusal::TokenRevoked(self.id.clone()))
        } else if at >= self.expires_unix_ms {
            Err(EnrolmentRefusal::TokenExpired(self.id.clone()))
        } else if self.uses >= self.uses_allowed {
            Err(EnrolmentRefusal::TokenUsedUp { id: self.id.clone(), uses: self.uses })
        } else {
            Ok(())
        }
    }
}

/// A host's enrolment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostEnrolment {
    /// The token it enrolled with.
    pub token_id: String,
    /// `sha256:HEX` of its current certificate's public key.
    pub key_sha256: String,
    /// The labels it may claim.
    pub labels: BTreeMap<String, String>,
    /// When it enrolled.
    pub enrolled_unix_ms: i64,
    /// When its current certificate was issued.
    pub issued_unix_ms: i64,
    /// When its current certificate expires.
    pub expires_unix_ms: i64,
    /// How many times it renewed.
    pub renewals: u64,
}

/// Why an enrolment or a renewal is refused; what the API answers depends on it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(rename_all = "snake_case")]
pub enum EnrolmentRefusal {
    /// No token with that id, or the secret does not match (the two look the same).
    #[error("the join token is not known to this cluster")]
    TokenUnknown,
    /// Past its expiry.
    #[error("join token {0} has expired")]
    TokenExpired(String),
    /// Every use spent.
    #[error("join token {id} is used up ({uses} of {uses} hosts enrolled)")]
    TokenUsedUp {
        /// The token.
        id: String,
        /// Its uses.
        uses: u32,
    },
    /// Revoked by an operator.
    #[error("join token {0} was revoked")]
    TokenRevoked(String),
    /// The token does not allow the host id.
    #[error("join token {id} may enrol only hosts matching `{pattern}`, not {host}")]
    HostNotAllowed {
        /// The token.
        id: String,
        /// Its pattern.
        pattern: String,
        /// The host asked for.
        host: String,
    },
    /// The host id is enrolled with another key.
    #[error(
        "host {0} is enrolled already, with another key; if this is the same host with a new key, run `flotilla agents forget {0}` first"
    )]
    HostEnrolled(String),
    /// The host is not enrolled (renewal, forget).
    #[error("host {0} is not enrolled")]
    NotEnrolled(String),
    /// A renewal from a certificate that is not the host's current one.
    #[error("host {0} renewed with a certificate that is not its current one")]
    StaleKey(String),
    /// No token with that id (revoke).
    #[error("no join token {0}")]
    NoSuchToken(String),
}

/// Changes to tokens and enrolments.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EnrolmentOp {
    /// A new token (id, secret digest, limits chosen by the leader).
    CreateToken(JoinTokenRecord),
    /// An operator revoked a token.
    RevokeToken {
        /// The token.
        id: String,
    },
    /// A host enrols with a token for the key of its certificate request.
    Enrol {
        /// The token's id.
        token_id: String,
        /// `sha256:HEX` of the secret presented.
        secret_sha256: String,
        /// The host id.
        host: String,
        /// `sha256:HEX` of the host's public key.
        key_sha256: String,
        /// When the certificate to be issued expires.
        expires_unix_ms: i64,
    },
    /// An enrolled host renews its certificate for a new key.
    Renew {
        /// The host id.
        host: String,
        /// The key of the certificate it called with.
        old_key_sha256: String,
        /// The key of the new certificate.
        key_sha256: String,
        /// When the new certificate expires.
        expires_unix_ms: i64,
    },
    /// An operator forgot a host's enrolment: its key is refused until its certificate
    /// expires, and the host id may enrol again.
    Forget {
        /// The host id.
        host: String,
    },
}

impl fmt::Display for EnrolmentOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EnrolmentOp::CreateToken(t) => write!(f, "create join token {}", t.id),
            EnrolmentOp::RevokeToken { id } => write!(f, "revoke join token {id}"),
            EnrolmentOp::Enrol { host, token_id, .. } => write!(f, "enrol {host} with join token {token_id}"),
            EnrolmentOp::Renew { host, .. } => write!(f, "renew the certificate of {host}"),
            EnrolmentOp::Forget { host } => write!(f, "forget the enrolment of {host}"),
        }
    }
}

/// Tokens, enrolled hosts and the keys of forgotten hosts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnrolmentState {
    tokens: BTreeMap<String, JoinTokenRecord>,
    hosts: BTreeMap<String, HostEnrolment>,
    /// Keys of forgotten enrolments, refused until their certificate would expire
    /// (Unix ms): key digest → expiry.
    revoked_keys: BTreeMap<String, i64>,
}

impl EnrolmentState {
    /// Applies one change at `at` (leader's clock).
    pub fn apply(&mut self, at: i64, op: &EnrolmentOp) -> Response {
        self.revoked_keys.retain(|_, expires| *expires > at);
        let result = match op {
            EnrolmentOp::CreateToken(token) => {
                if self.tokens.contains_key(&token.id) {
                    return Response::Refused { reason: format!("join token id {} is taken", token.id) };
                }
                self.tokens.insert(token.id.clone(), token.clone());
                Ok(Response::Done)
            }
            EnrolmentOp::RevokeToken { id } => match self.tokens.get_mut(id) {
                Some(token) => {
                    token.revoked = true;
                    Ok(Response::Done)
                }
                None => Err(EnrolmentRefusal::NoSuchToken(id.clone())),
            },
            EnrolmentOp::Enrol { token_id, secret_sha256, host, key_sha256, expires_unix_ms } => {
                self.enrol(at, token_id, secret_sha256, host, key_sha256, *expires_unix_ms)
            }
            EnrolmentOp::Renew { host, old_key_sha256, key_sha256, expires_unix_ms } => {
                match self.hosts.get_mut(host) {
                    None => Err(EnrolmentRefusal::NotEnrolled(host.clone())),
                    Some(e) if e.key_sha256 != *old_key_sha256 => Err(EnrolmentRefusal::StaleKey(host.clone())),
                    Some(e) => {
                        e.key_sha256 = key_sha256.clone();
                        e.issued_unix_ms = at;
                        e.expires_unix_ms = *expires_unix_ms;
                        e.renewals += 1;
                        Ok(Response::Done)
                    }
                }
            }
            EnrolmentOp::Forget { host } => match self.hosts.remove(host) {
                Some(e) => {
                    self.revoked_keys.insert(e.key_sha256, e.expires_unix_ms);
                    Ok(Response::Done)
                }
                None => Err(EnrolmentRefusal::NotEnrolled(host.clone())),
            },
        };
        result.unwrap_or_else(Response::EnrolmentRefused)
    }

    fn enrol(
        &mut self,
        at: i64,
        token_id: &str,
        secret_sha256: &str,
        host: &str,
        key_sha256: &str,
        expires_unix_ms: i64,
    ) -> Result<Response, EnrolmentRefusal> {
        let token = match self.tokens.get(token_id) {
            Some(t) if t.secret_sha256 == secret_sha256 => t,
            _ => return Err(EnrolmentRefusal::TokenUnknown),
        };
        let existing = self.hosts.get(host);
        if existing.is_some_and(|e| e.key_sha256 != key_sha256) {
            return Err(EnrolmentRefusal::HostEnrolled(host.to_owned()));
        }
        // The same host with the same key and token, while the token is good, is asking
        // again for an answer lost on the way: it spends no other use. Anything else
        // (a first enrolment, or the enrolled key back with a new token after its
        // certificate expired offline) needs a usable token that allows the host.
        let retry = existing.is_some_and(|e| e.token_id == token_id) && !token.revoked && at < token.expires_unix_ms;
        if !retry {
            token.usable(at)?;
            if !token.host_id_pattern.is_empty() && !glob_matches(&token.host_id_pattern, host) {
                return Err(EnrolmentRefusal::HostNotAllowed {
                    id: token.id.clone(),
                    pattern: token.host_id_pattern.clone(),
                    host: host.to_owned(),
                });
            }
        }
        let enrolled_unix_ms = existing.map_or(at, |e| e.enrolled_unix_ms);
        let renewals = existing.map_or(0, |e| e.renewals);
        let token = self.tokens.get_mut(token_id).expect("just found");
        if !retry {
            token.uses += 1;
            token.enrolled_hosts.push(host.to_owned());
        }
        self.hosts.insert(
            host.to_owned(),
            HostEnrolment {
                token_id: token_id.to_owned(),
                key_sha256: key_sha256.to_owned(),
                labels: token.labels.clone(),
                enrolled_unix_ms,
                issued_unix_ms: at,
                expires_unix_ms,
                renewals,
            },
        );
        Ok(Response::Done)
    }

    /// A token by id.
    pub fn token(&self, id: &str) -> Option<&JoinTokenRecord> {
        self.tokens.get(id)
    }

    /// Every token, oldest first.
    pub fn tokens(&self) -> Vec<&JoinTokenRecord> {
        let mut all: Vec<_> = self.tokens.values().collect();
        all.sort_by(|a, b| (a.created_unix_ms, &a.id).cmp(&(b.created_unix_ms, &b.id)));
        all
    }

    /// A host's enrolment.
    pub fn host(&self, host: &str) -> Option<&HostEnrolment> {
        self.hosts.get(host)
    }

    /// Whether a key belongs to a forgotten enrolment whose certificate has not
    /// expired yet.
    pub fn key_revoked(&self, key_sha256: &str, now: i64) -> bool {
        self.revoked_keys.get(key_sha256).is_some_and(|expires| *expires > now)
    }
}

/// Whether `name` matches `pattern`, where `*` matches any run of characters
/// (possibly empty) and everything else itself.
pub fn glob_matches(pattern: &str, name: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    let [first, middle @ .., last] = parts.as_slice() else { return pattern == name };
    let Some(mut rest) = name.strip_prefix(first) else { return false };
    for part in middle {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(id: &str, uses: u32, pattern: &str) -> JoinTokenRecord {
        JoinTokenRecord {
            id: id.into(),
            secret_sha256: format!("sha256:{id}"),
            created_unix_ms: 0,
            expires_unix_ms: 10_000,
            uses_allowed: uses,
            uses: 0,
            labels: BTreeMap::from([("zone".into(), "a".into())]),
            host_id_pattern: pattern.into(),
            revoked: false,
            created_by: "operator alice".into(),
            enrolled_hosts: Vec::new(),
            ca_pin: "sha256:00".into(),
        }
    }

    fn enrol(id: &str, host: &str, key: &str) -> EnrolmentOp {
        EnrolmentOp::Enrol {
            token_id: id.into(),
            secret_sha256: format!("sha256:{id}"),
            host: host.into(),
            key_sha256: key.into(),
            expires_unix_ms: 90_000,
        }
    }

    fn refused(r: Response) -> EnrolmentRefusal {
        match r {
            Response::EnrolmentRefused(why) => why,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn a_token_enrols_as_many_hosts_as_it_allows_until_it_expires_or_is_revoked() {
        let mut s = EnrolmentState::default();
        s.apply(0, &EnrolmentOp::CreateToken(token("t1", 2, "")));
        assert_eq!(s.apply(1, &enrol("t1", "web-1", "k1")), Response::Done);
        assert_eq!(s.host("web-1").unwrap().labels["zone"], "a");
        assert_eq!(s.apply(2, &enrol("t1", "web-2", "k2")), Response::Done);
        let before = s.clone();
        assert_eq!(
            refused(s.apply(3, &enrol("t1", "web-3", "k3"))),
            EnrolmentRefusal::TokenUsedUp { id: "t1".into(), uses: 2 }
        );
        assert_eq!(s, before, "a refusal changes nothing");

        s.apply(0, &EnrolmentOp::CreateToken(token("t2", 5, "")));
        assert_eq!(refused(s.apply(10_000, &enrol("t2", "web-3", "k3"))), EnrolmentRefusal::TokenExpired("t2".into()));
        s.apply(4, &EnrolmentOp::RevokeToken { id: "t2".into() });
        assert_eq!(refused(s.apply(5, &enrol("t2", "web-3", "k3"))), EnrolmentRefusal::TokenRevoked("t2".into()));
        let mut wrong_secret = enrol("t2", "web-3", "k3");
        if let EnrolmentOp::Enrol { secret_sha256, .. } = &mut wrong_secret {
            *secret_sha256 = "sha256:guess".into();
        }
        assert_eq!(refused(s.apply(5, &wrong_secret)), EnrolmentRefusal::TokenUnknown);
        assert_eq!(refused(s.apply(5, &enrol("nope", "web-3", "k3"))), EnrolmentRefusal::TokenUnknown);
    }

    #[test]
    fn an_enrolled_host_id_is_refused_with_another_key_until_it_is_forgotten() {
        let mut s = EnrolmentState::default();
        s.apply(0, &EnrolmentOp::CreateToken(token("t1", 3, "web-*")));
        assert_eq!(s.apply(1, &enrol("t1", "web-1", "k1")), Response::Done);
        // The same key again (a lost answer): no use spent.
        assert_eq!(s.apply(2, &enrol("t1", "web-1", "k1")), Response::Done);
        assert_eq!(s.token("t1").unwrap().uses, 1);
        // The same key with a new token (its certificate expired offline): a use of it.
        s.apply(2, &EnrolmentOp::CreateToken(token("t3", 1, "")));
        assert_eq!(s.apply(3, &enrol("t3", "web-1", "k1")), Response::Done);
        assert_eq!((s.token("t3").unwrap().uses, s.host("web-1").unwrap().enrolled_unix_ms), (1, 1));
        assert_eq!(refused(s.apply(3, &enrol("t1", "web-1", "k2"))), EnrolmentRefusal::HostEnrolled("web-1".into()));
        assert!(matches!(refused(s.apply(3, &enrol("t1", "db-1", "k9"))), EnrolmentRefusal::HostNotAllowed { .. }));

        assert_eq!(s.apply(4, &EnrolmentOp::Forget { host: "web-1".into() }), Response::Done);
        assert!(s.key_revoked("k1", 5));
        assert!(!s.key_revoked("k1", 90_000), "refused only while its certificate could be used");
        assert_eq!(s.apply(6, &enrol("t1", "web-1", "k2")), Response::Done);
        assert_eq!(s.host("web-1").unwrap().key_sha256, "k2");
    }

    #[test]
    fn a_renewal_moves_the_host_to_its_new_key_only_from_its_current_one() {
        let mut s = EnrolmentState::default();
        s.apply(0, &EnrolmentOp::CreateToken(token("t1", 1, "")));
        s.apply(1, &enrol("t1", "web-1", "k1"));
        let renew = |old: &str, new: &str| EnrolmentOp::Renew {
            host: "web-1".into(),
            old_key_sha256: old.into(),
            key_sha256: new.into(),
            expires_unix_ms: 99_000,
        };
        assert_eq!(s.apply(2, &renew("k1", "k2")), Response::Done);
        assert_eq!(refused(s.apply(3, &renew("k1", "k3"))), EnrolmentRefusal::StaleKey("web-1".into()));
        let e = s.host("web-1").unwrap();
        assert_eq!((e.key_sha256.as_str(), e.renewals, e.expires_unix_ms), ("k2", 1, 99_000));
    }

    #[test]
    fn host_id_patterns_use_stars_only() {
        for (p, n, want) in [
            ("web-*", "web-1", true),
            ("web-*", "db-1", false),
            ("*", "", true),
            ("*.eu", "a.eu", true),
            ("a*b*c", "axxbyyc", true),
            ("a*b*c", "acb", false),
            ("ab*ba", "aba", false),
            ("exact", "exact", true),
            ("exact", "exactly", false),
        ] {
            assert_eq!(glob_matches(p, n), want, "{p} {n}");
        }
    }
}
