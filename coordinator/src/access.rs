//! Operator roles and operator tokens: what an operator may do, and the bearer tokens
//! an admin makes for people and tools without a certificate.
//!
//! A token is `flotilla-token-v1.CLUSTER.ID.SECRET`: `CLUSTER` the 16 hex digits of
//! the cluster id (so a token of another cluster is told apart from an unknown one),
//! `ID` its public id (what `tokens list` and `tokens revoke` show), `SECRET` 32 hex
//! digits the cluster keeps only the SHA-256 of. The token is answered once, to the
//! admin who made it; every coordinator checks it against its applied state.

use std::fmt;
use std::time::Duration;

use flotilla_net::pki::OperatorRole;
use flotilla_proto::v1;

use crate::error::CoordinatorError;
use crate::state::{OperatorTokenRecord, RoleRecord};

/// The prefix of every operator token, with the format's version.
pub const TOKEN_PREFIX: &str = "flotilla-token-v1";

/// The longest an operator token may live.
pub const MAX_TOKEN_TTL: Duration = Duration::from_secs(366 * 86_400);

/// The role as the state keeps it.
pub fn role_record(role: OperatorRole) -> RoleRecord {
    match role {
        OperatorRole::Viewer => RoleRecord::Viewer,
        OperatorRole::Deployer => RoleRecord::Deployer,
        OperatorRole::Admin => RoleRecord::Admin,
    }
}

/// The role of a kept record.
pub fn role_of(record: RoleRecord) -> OperatorRole {
    match record {
        RoleRecord::Viewer => OperatorRole::Viewer,
        RoleRecord::Deployer => OperatorRole::Deployer,
        RoleRecord::Admin => OperatorRole::Admin,
    }
}

/// The role on the wire.
pub fn role_wire(role: Option<OperatorRole>) -> v1::OperatorRole {
    match role {
        None => v1::OperatorRole::Unspecified,
        Some(OperatorRole::Viewer) => v1::OperatorRole::Viewer,
        Some(OperatorRole::Deployer) => v1::OperatorRole::Deployer,
        Some(OperatorRole::Admin) => v1::OperatorRole::Admin,
    }
}

/// The role a request names; `None` for UNSPECIFIED or a value this build does not know.
pub fn role_from_wire(role: i32) -> Option<OperatorRole> {
    match v1::OperatorRole::try_from(role).ok()? {
        v1::OperatorRole::Unspecified => None,
        v1::OperatorRole::Viewer => Some(OperatorRole::Viewer),
        v1::OperatorRole::Deployer => Some(OperatorRole::Deployer),
        v1::OperatorRole::Admin => Some(OperatorRole::Admin),
    }
}

/// An operator token, parsed.
#[derive(Clone, PartialEq, Eq)]
pub struct OperatorToken {
    /// The cluster that made it.
    pub cluster: String,
    /// Its public id.
    pub id: String,
    /// The secret.
    pub secret: String,
}

impl fmt::Debug for OperatorToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OperatorToken").field("cluster", &self.cluster).field("id", &self.id).finish_non_exhaustive()
    }
}

impl fmt::Display for OperatorToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{TOKEN_PREFIX}.{}.{}.{}", self.cluster, self.id, self.secret)
    }
}

impl std::str::FromStr for OperatorToken {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let hex = |p: &str, len: usize| p.len() == len && p.chars().all(|c| c.is_ascii_hexdigit());
        match s.trim().split('.').collect::<Vec<_>>().as_slice() {
            [prefix, cluster, id, secret] if *prefix == TOKEN_PREFIX => {
                if !hex(cluster, 16) || !hex(id, 8) || !hex(secret, 32) {
                    return Err("the operator token is damaged: a part is not hexadecimal of the right length".into());
                }
                Ok(Self {
                    cluster: cluster.to_ascii_lowercase(),
                    id: id.to_ascii_lowercase(),
                    secret: secret.to_ascii_lowercase(),
                })
            }
            [prefix, ..] if prefix.starts_with("flotilla-token-") => Err(format!(
                "the operator token is of format `{prefix}`; this build reads `{TOKEN_PREFIX}` (make one with `flotilla tokens create`)"
            )),
            [prefix, ..] if prefix.starts_with("flotilla-join-") => {
                Err("that is a join token (for enrolling agents), not an operator token".into())
            }
            _ => Err(format!("not an operator token: it should look like `{TOKEN_PREFIX}.CLUSTER.ID.SECRET`")),
        }
    }
}

impl OperatorToken {
    /// `sha256:HEX` of the secret: what the cluster keeps and compares.
    pub fn secret_sha256(&self) -> String {
        flotilla_net::pki::key_digest(self.secret.as_bytes())
    }
}

/// What a token request asks for, checked.
#[derive(Debug, Clone)]
pub struct TokenRequest {
    /// Its role.
    pub role: OperatorRole,
    /// How long it works.
    pub ttl: Duration,
    /// Its name; empty: its id.
    pub name: String,
}

impl TokenRequest {
    /// Checks a wire request.
    pub fn from_wire(req: &v1::CreateTokenRequest) -> Result<Self, CoordinatorError> {
        let role = role_from_wire(req.role).ok_or_else(|| CoordinatorError::InvalidField {
            field: "role",
            message: "an operator token needs a role: viewer, deployer or admin".to_owned(),
        })?;
        let ttl = Duration::from_millis(req.ttl_ms);
        if ttl.is_zero() || ttl > MAX_TOKEN_TTL {
            return Err(CoordinatorError::InvalidField {
                field: "ttl_ms",
                message: format!(
                    "an operator token lives more than 0 and at most a year, not {}",
                    humantime::format_duration(ttl)
                ),
            });
        }
        let name = req.name.trim();
        let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@');
        if name.len() > 64 || !name.chars().all(allowed) {
            return Err(CoordinatorError::InvalidField {
                field: "name",
                message: format!("token name `{name}`: use at most 64 letters, digits, `.`, `_`, `-` or `@`"),
            });
        }
        Ok(Self { role, ttl, name: name.to_owned() })
    }
}

/// Makes a token of cluster `cluster` for `request`: its text (shown once) and the
/// record the cluster keeps.
pub fn make_token(
    cluster: &str,
    request: &TokenRequest,
    created_by: String,
    now_unix_ms: i64,
) -> Result<(OperatorToken, OperatorTokenRecord), CoordinatorError> {
    let token = OperatorToken {
        cluster: cluster.to_owned(),
        id: crate::enrolment::random_hex(4)?,
        secret: crate::enrolment::random_hex(16)?,
    };
    let name = if request.name.is_empty() { format!("t-{}", token.id) } else { request.name.clone() };
    let record = OperatorTokenRecord {
        id: token.id.clone(),
        name,
        role: role_record(request.role),
        secret_sha256: token.secret_sha256(),
        created_unix_ms: now_unix_ms,
        expires_unix_ms: now_unix_ms.saturating_add(i64::try_from(request.ttl.as_millis()).unwrap_or(i64::MAX)),
        created_by,
        revoked_by: String::new(),
        revoked_unix_ms: 0,
    };
    Ok((token, record))
}

/// Why a bearer token is refused (the words of an UNAUTHENTICATED answer), with the
/// name it was made under when the cluster knows it (for the audit record).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRefusal {
    /// Why.
    pub why: String,
    /// `token NAME`, when the token is known.
    pub actor: Option<String>,
}

/// Checks `text` (the bearer token of a call) against the tokens this node has applied,
/// for cluster `cluster` (`None`: the node has no cluster id, any is taken) at `now`.
pub fn check_token(
    text: &str,
    cluster: Option<&str>,
    lookup: impl FnOnce(&str) -> Option<OperatorTokenRecord>,
    now_unix_ms: i64,
) -> Result<OperatorTokenRecord, TokenRefusal> {
    let refuse = |why: String, actor: Option<String>| TokenRefusal { why, actor };
    let token: OperatorToken = text.parse().map_err(|why| refuse(why, None))?;
    if let Some(cluster) = cluster
        && token.cluster != cluster
    {
        return Err(refuse(
            format!("operator token {} was made by cluster {}; this is cluster {cluster}", token.id, token.cluster),
            None,
        ));
    }
    let record = lookup(&token.id)
        .ok_or_else(|| refuse(format!("operator token {} is not known to this cluster", token.id), None))?;
    let actor = Some(format!("token {}", record.name));
    if record.secret_sha256 != token.secret_sha256() {
        return Err(refuse(format!("the secret of operator token {} does not match", token.id), None));
    }
    if record.revoked() {
        return Err(refuse(
            format!(
                "operator token {} ({}) was revoked by {} at {}",
                record.id,
                record.name,
                record.revoked_by,
                flotilla_net::pki::format_unix(record.revoked_unix_ms / 1000)
            ),
            actor,
        ));
    }
    if now_unix_ms >= record.expires_unix_ms {
        return Err(refuse(
            format!(
                "operator token {} ({}) expired at {}",
                record.id,
                record.name,
                flotilla_net::pki::format_unix(record.expires_unix_ms / 1000)
            ),
            actor,
        ));
    }
    Ok(record)
}

/// A kept token on the wire.
pub fn token_wire(t: &OperatorTokenRecord) -> v1::OperatorToken {
    v1::OperatorToken {
        id: t.id.clone(),
        name: t.name.clone(),
        role: role_wire(Some(role_of(t.role))) as i32,
        created_unix_ms: t.created_unix_ms,
        expires_unix_ms: t.expires_unix_ms,
        created_by: t.created_by.clone(),
        revoked: t.revoked(),
        revoked_by: t.revoked_by.clone(),
        revoked_unix_ms: t.revoked_unix_ms,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLUSTER: &str = "0123456789abcdef";

    fn made(ttl_ms: u64) -> (OperatorToken, OperatorTokenRecord) {
        let request =
            TokenRequest { role: OperatorRole::Viewer, ttl: Duration::from_millis(ttl_ms), name: "bob".into() };
        make_token(CLUSTER, &request, "operator root".into(), 1_000).unwrap()
    }

    #[test]
    fn a_token_reads_back_and_passes_until_it_expires() {
        let (token, record) = made(10_000);
        let text = token.to_string();
        assert!(text.starts_with("flotilla-token-v1.0123456789abcdef."), "{text}");
        assert_eq!(text.parse::<OperatorToken>().unwrap(), token);
        assert_eq!(record.expires_unix_ms, 11_000);
        let lookup = |id: &str| (id == record.id).then(|| record.clone());
        assert_eq!(check_token(&text, Some(CLUSTER), lookup, 5_000), Ok(record.clone()));
        let expired = check_token(&text, Some(CLUSTER), lookup, 11_000).unwrap_err();
        assert!(expired.why.contains("expired at"), "{expired:?}");
        assert_eq!(expired.actor.as_deref(), Some("token bob"));
    }

    #[test]
    fn each_bad_token_is_refused_saying_why() {
        let (token, record) = made(10_000);
        let lookup = |id: &str| (id == record.id).then(|| record.clone());
        let why = |text: &str| check_token(text, Some(CLUSTER), lookup, 5_000).unwrap_err().why;
        let other_cluster = OperatorToken { cluster: "fedcba9876543210".into(), ..token.clone() };
        assert!(
            why(&other_cluster.to_string())
                .contains("made by cluster fedcba9876543210; this is cluster 0123456789abcdef")
        );
        let unknown = OperatorToken { id: "00000000".into(), ..token.clone() };
        assert!(why(&unknown.to_string()).contains("not known to this cluster"));
        let wrong = OperatorToken { secret: "0".repeat(32), ..token.clone() };
        assert!(why(&wrong.to_string()).contains("does not match"));
        assert!(why("hello").starts_with("not an operator token"));
        assert!(why("flotilla-join-v1.aa.bb.cc").contains("join token"));
        assert!(why("flotilla-token-v9.a.b.c").contains("this build reads `flotilla-token-v1`"));
        let revoked =
            OperatorTokenRecord { revoked_by: "operator root".into(), revoked_unix_ms: 2_000, ..record.clone() };
        let refusal = check_token(&token.to_string(), Some(CLUSTER), |_| Some(revoked.clone()), 5_000).unwrap_err();
        assert!(refusal.why.contains("was revoked by operator root"), "{refusal:?}");
        // A node without a cluster id takes any.
        assert!(check_token(&other_cluster.to_string(), None, lookup, 5_000).is_ok());
    }

    #[test]
    fn a_token_request_needs_a_role_a_lifetime_and_a_plain_name() {
        let ok = v1::CreateTokenRequest { role: v1::OperatorRole::Deployer as i32, ttl_ms: 60_000, name: "ci".into() };
        assert_eq!(TokenRequest::from_wire(&ok).unwrap().role, OperatorRole::Deployer);
        let field = |req: v1::CreateTokenRequest| match TokenRequest::from_wire(&req).unwrap_err() {
            CoordinatorError::InvalidField { field, .. } => field,
            other => panic!("{other:?}"),
        };
        assert_eq!(field(v1::CreateTokenRequest { role: 0, ..ok.clone() }), "role");
        assert_eq!(field(v1::CreateTokenRequest { ttl_ms: 0, ..ok.clone() }), "ttl_ms");
        assert_eq!(field(v1::CreateTokenRequest { ttl_ms: 400 * 86_400_000, ..ok.clone() }), "ttl_ms");
        assert_eq!(field(v1::CreateTokenRequest { name: "a b".into(), ..ok }), "name");
    }
}
