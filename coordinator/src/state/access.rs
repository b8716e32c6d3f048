//! Operator tokens and the audit trail, replicated.
//!
//! A token's secret is never here: the leader draws it, commits only its SHA-256, and
//! answers the token once to the admin who asked. Every coordinator checks a token
//! against its applied copy of this state, so a revocation holds on a coordinator as
//! soon as it has applied it.
//!
//! The audit trail is a bounded queue: each [`AuditBatch`] carries the retention the
//! proposing leader was configured with, and applying it drops the records beyond
//! it, so every replica keeps the same records whatever its own configuration says.

use std::collections::{BTreeMap, VecDeque};
use std::fmt;

use serde::{Deserialize, Serialize};

use super::Response;

/// An operator's role, as the state keeps it (the certificate and the API spell it
/// `viewer`, `deployer`, `admin`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RoleRecord {
    /// Reads only.
    Viewer,
    /// Drives releases.
    Deployer,
    /// Everything.
    Admin,
}

/// An operator token as the cluster keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OperatorTokenRecord {
    /// The public part of the token.
    pub id: String,
    /// The name its calls are recorded under.
    pub name: String,
    /// Its role.
    pub role: RoleRecord,
    /// `sha256:HEX` of its secret.
    pub secret_sha256: String,
    /// When it was made (leader's clock).
    pub created_unix_ms: i64,
    /// When it stops working.
    pub expires_unix_ms: i64,
    /// Who made it.
    pub created_by: String,
    /// Who revoked it; empty while it is not revoked.
    pub revoked_by: String,
    /// When it was revoked; 0 while it is not.
    pub revoked_unix_ms: i64,
}

impl OperatorTokenRecord {
    /// Whether it was revoked.
    pub fn revoked(&self) -> bool {
        self.revoked_unix_ms != 0
    }

    /// Whether calls with it are taken at `now`.
    pub fn live(&self, now: i64) -> bool {
        !self.revoked() && now < self.expires_unix_ms
    }
}

/// One call that asked to change something, allowed or refused.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// Its position in the trail, from 1 (assigned when applied).
    pub seq: u64,
    /// When it was committed (the leader's clock, assigned when applied).
    pub at_unix_ms: i64,
    /// Who (`operator alice`, `token ci-bot`, `anonymous`...).
    pub actor: String,
    /// The operator role; empty for others.
    pub role: String,
    /// `Service/Method`.
    pub method: String,
    /// What it acted on; empty when unknown.
    pub target: String,
    /// The release concerned; empty when none.
    pub release_id: String,
    /// The caller's address.
    pub peer: String,
    /// The coordinator that served the call.
    pub node_id: u64,
    /// `OK` or the gRPC code's name.
    pub code: String,
    /// The `ErrorInfo` reason of a refusal.
    pub reason: String,
    /// The refusal's message.
    pub message: String,
}

/// How much of the audit trail every replica keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Retention {
    /// At most this many records (the oldest go first).
    pub max_records: u64,
    /// Records older than this (by the leader's clock) go; 0: no age limit.
    pub max_age_ms: u64,
}

impl Default for Retention {
    fn default() -> Self {
        Self { max_records: 100_000, max_age_ms: 90 * 24 * 3_600_000 }
    }
}

/// Audit records to append, with the retention to apply after.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditBatch {
    /// The records (their `seq` and `at_unix_ms` are assigned when applied).
    pub records: Vec<AuditRecord>,
    /// What to keep.
    pub retention: Retention,
}

/// Changes to operator tokens.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AccessOp {
    /// A new token (id, secret digest, role and expiry chosen by the leader).
    CreateToken(OperatorTokenRecord),
    /// An admin revoked a token.
    RevokeToken {
        /// The token.
        id: String,
        /// Who revoked it.
        by: String,
    },
}

impl fmt::Display for AccessOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AccessOp::CreateToken(t) => write!(f, "operator token {} ({}) created by {}", t.id, t.name, t.created_by),
            AccessOp::RevokeToken { id, by } => write!(f, "operator token {id} revoked by {by}"),
        }
    }
}

/// How long a token that can no longer be used stays listed.
const DEAD_TOKEN_KEPT_MS: i64 = 30 * 24 * 3_600_000;

/// Tokens and the audit trail.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessState {
    tokens: BTreeMap<String, OperatorTokenRecord>,
    audit: VecDeque<AuditRecord>,
    /// The `seq` of the last record appended (0: none yet).
    last_seq: u64,
}

impl AccessState {
    /// Applies a token change at `at`.
    pub fn apply(&mut self, at: i64, op: &AccessOp) -> Response {
        match op {
            AccessOp::CreateToken(record) => {
                if self.tokens.contains_key(&record.id) {
                    return Response::Refused { reason: format!("operator token id {} is taken", record.id) };
                }
                // Tokens dead for a while are forgotten, so the list stays bounded.
                self.tokens.retain(|_, t| {
                    let died = if t.revoked() { t.revoked_unix_ms } else { t.expires_unix_ms };
                    died > at - DEAD_TOKEN_KEPT_MS
                });
                self.tokens.insert(record.id.clone(), record.clone());
                Response::Done
            }
            AccessOp::RevokeToken { id, by } => match self.tokens.get_mut(id) {
                None => Response::Refused { reason: format!("no operator token {id}") },
                Some(t) if t.revoked() => Response::Done,
                Some(t) => {
                    t.revoked_by = by.clone();
                    t.revoked_unix_ms = at;
                    Response::Done
                }
            },
        }
    }

    /// Appends a batch of audit records committed at `at`, then applies its retention.
    pub fn record(&mut self, at: i64, batch: &AuditBatch) -> Response {
        for record in &batch.records {
            self.last_seq += 1;
            self.audit.push_back(AuditRecord { seq: self.last_seq, at_unix_ms: at, ..record.clone() });
        }
        let max = usize::try_from(batch.retention.max_records).unwrap_or(usize::MAX);
        while self.audit.len() > max {
            self.audit.pop_front();
        }
        if batch.retention.max_age_ms > 0 {
            let oldest = at.saturating_sub(i64::try_from(batch.retention.max_age_ms).unwrap_or(i64::MAX));
            while self.audit.front().is_some_and(|r| r.at_unix_ms < oldest) {
                self.audit.pop_front();
            }
        }
        Response::Done
    }

    /// A token by id.
    pub fn token(&self, id: &str) -> Option<&OperatorTokenRecord> {
        self.tokens.get(id)
    }

    /// Every token kept, newest first.
    pub fn tokens(&self) -> Vec<&OperatorTokenRecord> {
        let mut all: Vec<&OperatorTokenRecord> = self.tokens.values().collect();
        all.sort_by(|a, b| b.created_unix_ms.cmp(&a.created_unix_ms).then_with(|| b.id.cmp(&a.id)));
        all
    }

    /// The audit trail kept, oldest first.
    pub fn audit(&self) -> impl DoubleEndedIterator<Item = &AuditRecord> {
        self.audit.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(id: &str, created: i64, expires: i64) -> OperatorTokenRecord {
        OperatorTokenRecord {
            id: id.into(),
            name: id.into(),
            role: RoleRecord::Viewer,
            secret_sha256: "sha256:00".into(),
            created_unix_ms: created,
            expires_unix_ms: expires,
            created_by: "operator root".into(),
            revoked_by: String::new(),
            revoked_unix_ms: 0,
        }
    }

    fn records(n: usize) -> AuditBatch {
        let records = (0..n).map(|i| AuditRecord { method: format!("Releases/Create#{i}"), ..AuditRecord::default() });
        AuditBatch { records: records.collect(), retention: Retention { max_records: 5, max_age_ms: 1_000 } }
    }

    #[test]
    fn a_revoked_token_is_dead_and_stays_revoked_by_its_first_revoker() {
        let mut s = AccessState::default();
        assert_eq!(s.apply(10, &AccessOp::CreateToken(token("t-1", 10, 100))), Response::Done);
        assert!(s.token("t-1").unwrap().live(50));
        assert!(!s.token("t-1").unwrap().live(100), "dead at its expiry");
        s.apply(20, &AccessOp::RevokeToken { id: "t-1".into(), by: "operator a".into() });
        s.apply(30, &AccessOp::RevokeToken { id: "t-1".into(), by: "operator b".into() });
        let t = s.token("t-1").unwrap();
        assert!(!t.live(50));
        assert_eq!((t.revoked_by.as_str(), t.revoked_unix_ms), ("operator a", 20));
        assert!(matches!(
            s.apply(40, &AccessOp::RevokeToken { id: "t-9".into(), by: "x".into() }),
            Response::Refused { .. }
        ));
        assert!(matches!(s.apply(40, &AccessOp::CreateToken(token("t-1", 40, 90))), Response::Refused { .. }));
    }

    #[test]
    fn tokens_dead_for_a_month_are_forgotten_when_another_is_made() {
        let mut s = AccessState::default();
        s.apply(0, &AccessOp::CreateToken(token("old", 0, 1_000)));
        s.apply(1_000 + DEAD_TOKEN_KEPT_MS, &AccessOp::CreateToken(token("new", 1, 2 * DEAD_TOKEN_KEPT_MS)));
        let ids: Vec<&str> = s.tokens().iter().map(|t| t.id.as_str()).collect();
        assert_eq!(ids, ["new"]);
    }

    #[test]
    fn the_trail_numbers_records_and_keeps_only_what_the_retention_allows() {
        let mut s = AccessState::default();
        s.record(1_000, &records(3));
        s.record(1_500, &records(4));
        let kept: Vec<(u64, i64)> = s.audit().map(|r| (r.seq, r.at_unix_ms)).collect();
        assert_eq!(kept, [(3, 1_000), (4, 1_500), (5, 1_500), (6, 1_500), (7, 1_500)]);
        // Past the age limit, the older records go; the numbering goes on.
        s.record(2_600, &records(1));
        let kept: Vec<u64> = s.audit().map(|r| r.seq).collect();
        assert_eq!(kept, [8]);
    }
}
