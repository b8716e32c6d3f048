//! A host's execution history: what an agent appends to `DATA_DIR/journal/history.jsonl`
//! each time a step begins executing, ends, is refused for its term or is cancelled
//! before it arrived. The step journal keeps one record per command (its latest state);
//! the history keeps every transition in the order the agent made them, so a checker
//! can prove from it that nothing ran twice, overlapped or ran for a deposed leader.
//!
//! One JSON object per line, each with [`HOST_HISTORY_FORMAT`]; a reader refuses a
//! newer format. Times are the host's clock.

use serde::{Deserialize, Serialize};

/// Format of a history line. Bump it when a field changes meaning or a required one is
/// added; readers refuse lines of a newer format.
pub const HOST_HISTORY_FORMAT: u32 = 1;

/// One line of a host's execution history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostHistoryRecord {
    /// [`HOST_HISTORY_FORMAT`] when written.
    pub format: u32,
    /// When (the host's clock).
    pub at_unix_ms: i64,
    /// The step's command id.
    pub command_id: String,
    /// The term the step (or the cancel) was sent with.
    pub term: u64,
    /// The release the step belongs to; empty outside a release.
    #[serde(default)]
    pub release_id: String,
    /// The stage it belongs to; empty when none.
    #[serde(default)]
    pub stage: String,
    /// What happened.
    #[serde(flatten)]
    pub entry: HostHistoryEntry,
}

/// What happened to a step on the host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum HostHistoryEntry {
    /// The step begins executing: it was admitted (never seen before, term not below
    /// the highest seen) and holds its service's lock.
    Started {
        /// `deploy`, `rollback`, `stop`, `run_check`, `bake` or `run_hook`.
        action: String,
        /// The service; `None` for a gate check.
        #[serde(default)]
        service: Option<String>,
        /// The version the step activates or runs against (deploy: the target;
        /// rollback: the version gone back to; hook: the installed version).
        #[serde(default)]
        version: Option<String>,
        /// For `run_hook`: which hook (`migrate`, `migrate_down`, ...).
        #[serde(default)]
        hook: Option<String>,
    },
    /// The step ended (executed, or resolved after the agent restarted during it).
    Finished {
        /// `succeeded`, `failed`, `cancelled`, `skipped` or `refused`.
        outcome: String,
        /// The service's version after the step, when it concerns a service.
        #[serde(default)]
        version: Option<String>,
    },
    /// The step was refused: its term is below the highest the host had seen.
    Refused {
        /// The highest term seen when it arrived.
        highest_term: u64,
    },
    /// A cancel arrived for a step the host had not received: the step is recorded as
    /// cancelled and will never execute.
    CancelledUnreceived {
        /// Why it was cancelled.
        reason: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_is_flat_json_tagged_by_event() {
        let record = HostHistoryRecord {
            format: HOST_HISTORY_FORMAT,
            at_unix_ms: 5,
            command_id: "r1.3".into(),
            term: 2,
            release_id: "r1".into(),
            stage: "canary".into(),
            entry: HostHistoryEntry::Started {
                action: "deploy".into(),
                service: Some("api".into()),
                version: Some("2.0.0".into()),
                hook: None,
            },
        };
        let line = serde_json::to_string(&record).expect("serializes");
        assert!(line.contains(r#""event":"started""#), "{line}");
        assert!(line.contains(r#""command_id":"r1.3""#), "{line}");
        let back: HostHistoryRecord = serde_json::from_str(&line).expect("parses");
        assert_eq!(back, record);
    }
}
