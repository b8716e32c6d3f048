//! Flotilla's replicated state: the commands the leader proposes, and their
//! deterministic application to releases, agents, the event log and the audit trail.
//!
//! Apply is a pure function of the state and the entry: it never reads a clock or a
//! random source. The leader stamps the time (`Command::at_unix_ms`) and every id into
//! the command before proposing it, so every node applies the same thing the same way.
//!
//! Encoding rule for every type stored here: serde's default representations only
//! (externally tagged enums; no `tag`, `untagged`, `flatten` or skipped fields), so the
//! log and snapshots can use a compact non-self-describing binary codec.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

mod fleet;

pub use fleet::{AgentRecord, FleetEvent, FleetOp, FleetState};

/// The id of a release, assigned by the leader (`r-…`).
pub type ReleaseId = String;

/// One command, as proposed by the leader and stored in the Raft log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Command {
    /// When the leader proposed it, in milliseconds since the Unix epoch.
    pub at_unix_ms: i64,
    /// What to do.
    pub op: Op,
}

/// The operations of the state machine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    /// Submit a release. A second submission with the same idempotency key returns the
    /// first release instead of creating another.
    CreateRelease {
        /// The id the leader chose.
        id: ReleaseId,
        /// The client's idempotency key; empty means none.
        idempotency_key: String,
        /// The release name from the spec.
        name: String,
        /// The spec's file name, for error messages.
        file_name: String,
        /// The spec's text, as submitted.
        spec_text: String,
    },
    /// Append an event to a release's history.
    RecordEvent {
        /// The release.
        release: ReleaseId,
        /// What kind of event (`release_created`, `batch_started`, ...).
        kind: String,
        /// What happened and why, as a sentence.
        message: String,
    },
    /// A change to the fleet (agents registered, lost, back).
    Fleet(FleetOp),
    /// Record an operator action.
    Audit {
        /// Who did it (certificate subject, or `anonymous` in insecure mode).
        actor: String,
        /// What they did.
        action: String,
    },
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Op::CreateRelease { id, name, .. } => write!(f, "create release {name} as {id}"),
            Op::RecordEvent { release, kind, .. } => write!(f, "record {kind} on {release}"),
            Op::Fleet(op) => op.fmt(f),
            Op::Audit { actor, action } => write!(f, "audit: {actor} {action}"),
        }
    }
}

/// What applying a command produced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Response {
    /// Membership changes and blank entries.
    None,
    /// A release submission: the release that stands for it.
    Release {
        /// Its id.
        id: ReleaseId,
        /// `false` when the idempotency key matched an earlier submission.
        created: bool,
    },
    /// An event was appended at this index of the event log.
    Event {
        /// The event's index (from 1, no gaps).
        index: u64,
    },
    /// The command was refused; the state did not change.
    Refused {
        /// Why.
        reason: String,
    },
    /// Done, nothing to report.
    Done,
}

/// A submitted release as the state machine keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleaseRecord {
    /// Its id.
    pub id: ReleaseId,
    /// The release name from the spec.
    pub name: String,
    /// The spec's file name.
    pub file_name: String,
    /// The spec's text.
    pub spec_text: String,
    /// When it was submitted (leader's clock).
    pub created_unix_ms: i64,
    /// The Raft log index it was committed at.
    pub created_index: u64,
}

/// One entry of the event log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Position in the log, from 1, without gaps.
    pub index: u64,
    /// The release it belongs to, if any.
    pub release: Option<ReleaseId>,
    /// When it happened (leader's clock).
    pub at_unix_ms: i64,
    /// What kind of event.
    pub kind: String,
    /// What happened and why.
    pub message: String,
}

/// One entry of the audit trail.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// When (leader's clock).
    pub at_unix_ms: i64,
    /// Who.
    pub actor: String,
    /// What.
    pub action: String,
}

/// The whole replicated state. Serialized as a snapshot.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    releases: BTreeMap<ReleaseId, ReleaseRecord>,
    by_idempotency_key: BTreeMap<String, ReleaseId>,
    fleet: FleetState,
    events: Vec<Event>,
    audit: Vec<AuditEntry>,
}

impl State {
    /// Applies one command committed at `log_index`. Deterministic: the result depends
    /// only on `self`, `log_index` and `cmd`.
    pub fn apply(&mut self, log_index: u64, cmd: &Command) -> Response {
        let at = cmd.at_unix_ms;
        match &cmd.op {
            Op::CreateRelease { id, idempotency_key, name, file_name, spec_text } => {
                if !idempotency_key.is_empty()
                    && let Some(existing) = self.by_idempotency_key.get(idempotency_key)
                {
                    return Response::Release { id: existing.clone(), created: false };
                }
                if self.releases.contains_key(id) {
                    return Response::Refused { reason: format!("release id {id} is taken") };
                }
                self.releases.insert(
                    id.clone(),
                    ReleaseRecord {
                        id: id.clone(),
                        name: name.clone(),
                        file_name: file_name.clone(),
                        spec_text: spec_text.clone(),
                        created_unix_ms: at,
                        created_index: log_index,
                    },
                );
                if !idempotency_key.is_empty() {
                    self.by_idempotency_key.insert(idempotency_key.clone(), id.clone());
                }
                self.push_event(Some(id.clone()), at, "release_created", format!("release {name} submitted as {id}"));
                Response::Release { id: id.clone(), created: true }
            }
            Op::RecordEvent { release, kind, message } => {
                if !self.releases.contains_key(release) {
                    return Response::Refused { reason: format!("no release {release}") };
                }
                let index = self.push_event(Some(release.clone()), at, kind, message.clone());
                Response::Event { index }
            }
            Op::Fleet(op) => self.fleet.apply(at, op),
            Op::Audit { actor, action } => {
                self.audit.push(AuditEntry { at_unix_ms: at, actor: actor.clone(), action: action.clone() });
                Response::Done
            }
        }
    }

    fn push_event(&mut self, release: Option<ReleaseId>, at: i64, kind: &str, message: String) -> u64 {
        let index = self.events.len() as u64 + 1;
        self.events.push(Event { index, release, at_unix_ms: at, kind: kind.to_owned(), message });
        index
    }

    /// A release by id.
    pub fn release(&self, id: &str) -> Option<&ReleaseRecord> {
        self.releases.get(id)
    }

    /// Every release, oldest first.
    pub fn releases(&self) -> impl Iterator<Item = &ReleaseRecord> {
        let mut all: Vec<&ReleaseRecord> = self.releases.values().collect();
        all.sort_by_key(|r| r.created_index);
        all.into_iter()
    }

    /// The fleet: every host's agent.
    pub fn fleet(&self) -> &FleetState {
        &self.fleet
    }

    /// Events with an index above `after`, optionally of one release, at most `limit`.
    pub fn events_after(&self, after: u64, release: Option<&str>, limit: usize) -> Vec<&Event> {
        let start = usize::try_from(after).unwrap_or(usize::MAX).min(self.events.len());
        self.events[start..]
            .iter()
            .filter(|e| release.is_none_or(|r| e.release.as_deref() == Some(r)))
            .take(limit)
            .collect()
    }

    /// The index of the last event (0 when there is none).
    pub fn last_event_index(&self) -> u64 {
        self.events.len() as u64
    }

    /// The audit trail, oldest first.
    pub fn audit(&self) -> &[AuditEntry] {
        &self.audit
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn create(id: &str, key: &str) -> Command {
        Command {
            at_unix_ms: 1_000,
            op: Op::CreateRelease {
                id: id.to_owned(),
                idempotency_key: key.to_owned(),
                name: "shop".to_owned(),
                file_name: "shop.toml".to_owned(),
                spec_text: "release = \"shop\"".to_owned(),
            },
        }
    }

    #[test]
    fn an_idempotency_key_returns_the_first_release() {
        let mut s = State::default();
        assert_eq!(s.apply(1, &create("r-1", "k")), Response::Release { id: "r-1".into(), created: true });
        assert_eq!(s.apply(2, &create("r-2", "k")), Response::Release { id: "r-1".into(), created: false });
        assert_eq!(s.releases().count(), 1);
        assert_eq!(s.apply(3, &create("r-3", "")), Response::Release { id: "r-3".into(), created: true });
        assert_eq!(s.release("r-3").unwrap().created_index, 3);
    }

    #[test]
    fn the_event_log_is_indexed_from_one_and_readable_from_an_index() {
        let mut s = State::default();
        s.apply(1, &create("r-1", ""));
        let ev = |m: &str| Command {
            at_unix_ms: 2_000,
            op: Op::RecordEvent { release: "r-1".into(), kind: "note".into(), message: m.into() },
        };
        assert_eq!(s.apply(2, &ev("a")), Response::Event { index: 2 });
        assert_eq!(s.apply(3, &ev("b")), Response::Event { index: 3 });
        let after_one: Vec<u64> = s.events_after(1, Some("r-1"), 10).iter().map(|e| e.index).collect();
        assert_eq!(after_one, [2, 3]);
        assert_eq!(s.events_after(3, None, 10).len(), 0);
        assert_eq!(s.events_after(0, None, 1).len(), 1);
        let refused = Command {
            at_unix_ms: 0,
            op: Op::RecordEvent { release: "nope".into(), kind: "x".into(), message: String::new() },
        };
        assert!(matches!(s.apply(4, &refused), Response::Refused { .. }));
        assert_eq!(s.last_event_index(), 3);
    }

    #[test]
    fn applying_the_same_log_twice_gives_the_same_state() {
        let log = [create("r-1", "k"), create("r-2", "k"), create("r-3", "")];
        let run = || {
            let mut s = State::default();
            let out: Vec<Response> = log.iter().enumerate().map(|(i, c)| s.apply(i as u64 + 1, c)).collect();
            (s, out)
        };
        assert_eq!(run(), run());
    }
}
