//! The step journal: one JSON record per `command_id` under `<data>/journal/`, written
//! durably (temporary file, fsync, rename, fsync dir) BEFORE a step starts, at each
//! phase, and at the end with the result.
//!
//! It gives the agent's two promises to the coordinators:
//! - a `command_id` is executed at most once: [`Journal::admit`] answers a repeat with
//!   the recorded record instead of admitting it again;
//! - a step from a term lower than the highest seen is refused; the highest term is
//!   persisted (`term.json`) before a step of a new term runs.
//!
//! A record still "in progress" when the agent starts means the agent died during the
//! step; the executor resolves it (see `executor`).
//!
//! A finished record also carries whether its result was acknowledged by the
//! coordinators (`ResultAck`, i.e. committed to their log): results not acknowledged
//! are re-sent on every new session, across agent restarts too, until they are.
//!
//! A cancel of a step the agent never received leaves a tombstone
//! ([`Journal::tombstone`]): a finished record without a step whose result is
//! `Cancelled` (`cancelled before it was received: <reason>`). The step, should it
//! arrive later, is [`Admission::Known`]: answered with that result, never executed.
//! Its result is reported and re-sent until acknowledged like any other.
//!
//! Formats: 2 added tombstones (`step` may be absent); records of format 1 are read as
//! they are, and a newer format is refused.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::layout::{self, read_json, write_json_atomic};
use crate::step::{Step, StepPhase, StepResult};

/// Format version of journal records and `term.json`; a newer one is refused.
pub const JOURNAL_FORMAT: u32 = 2;

/// Why the journal could not be used.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// Reading or writing a journal file failed.
    #[error("journal {}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// A record written by a newer agent.
    #[error("journal {}: format {found} is newer than this agent's ({JOURNAL_FORMAT}); upgrade the agent", path.display())]
    Format {
        /// The file.
        path: PathBuf,
        /// Its format.
        found: u32,
    },
}

/// Where a journaled step stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecordState {
    /// Accepted and not finished (on agent start: interrupted).
    InProgress,
    /// Finished; `result` is set.
    Done,
}

/// What ran before a deploy or rollback touched a service: what an interrupted step is
/// resolved back to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Prior {
    /// The version `current` pointed at; `None` on a first install.
    pub version: Option<String>,
    /// Whether its process was running.
    pub running: bool,
    /// The version the step activates.
    pub target: String,
    /// The service's activation count when the step started (a higher count after a
    /// crash means the step's activation completed).
    #[serde(default)]
    pub activations: u64,
}

/// One step's journal record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JournalRecord {
    /// [`JOURNAL_FORMAT`] when written.
    pub format: u32,
    /// The step's command id.
    pub command_id: String,
    /// The step as received; `None` for a tombstone (a cancel of a step that was never
    /// received: only its `Cancelled` result is kept).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<Step>,
    /// In progress or done.
    pub state: RecordState,
    /// The phase last entered.
    pub phase: StepPhase,
    /// The phase's detail (`hook before_install`).
    #[serde(default)]
    pub detail: String,
    /// What ran before (deploys and rollbacks).
    #[serde(default)]
    pub prior: Option<Prior>,
    /// When the step was accepted.
    pub started_unix_ms: i64,
    /// When the record was last written.
    pub updated_unix_ms: i64,
    /// The result, once done.
    #[serde(default)]
    pub result: Option<StepResult>,
    /// Whether the coordinators acknowledged the result (committed it); until then it is
    /// re-sent on every session.
    #[serde(default)]
    pub acked: bool,
}

impl JournalRecord {
    /// Whether this is a tombstone: a step cancelled before it was received.
    pub fn is_tombstone(&self) -> bool {
        self.step.is_none()
    }
}

/// The answer of [`Journal::admit`].
#[derive(Debug)]
pub enum Admission {
    /// New: the record is journaled (phase `accepted`); execute the step.
    Admitted(Box<JournalRecord>),
    /// This `command_id` is already journaled: do not execute it again.
    Known(Box<JournalRecord>),
    /// The step's term is lower than the highest seen.
    Refused {
        /// The highest term seen.
        highest_term: u64,
    },
}

/// The answer of [`Journal::tombstone`].
#[derive(Debug)]
pub enum Tombstone {
    /// The tombstone is journaled (durably).
    Written(Box<JournalRecord>),
    /// The command is journaled already (executing, finished, or a tombstone): nothing
    /// was written.
    Known(Box<JournalRecord>),
    /// The cancel's term is lower than the highest seen: nothing was written.
    Refused {
        /// The highest term seen.
        highest_term: u64,
    },
}

#[derive(Debug, Serialize, Deserialize)]
struct TermFile {
    format: u32,
    highest_term: u64,
}

/// The on-disk step journal.
#[derive(Debug)]
pub struct Journal {
    dir: PathBuf,
    highest_term: Mutex<u64>,
}

impl Journal {
    /// Opens (creating) the journal in `dir`.
    pub fn open(dir: &Path) -> Result<Self, JournalError> {
        fs::create_dir_all(dir).map_err(|source| JournalError::Io { path: dir.to_owned(), source })?;
        let term_path = dir.join("term.json");
        let term: Option<TermFile> =
            read_json(&term_path).map_err(|source| JournalError::Io { path: term_path.clone(), source })?;
        if let Some(t) = &term
            && t.format > JOURNAL_FORMAT
        {
            return Err(JournalError::Format { path: term_path, found: t.format });
        }
        Ok(Self { dir: dir.to_owned(), highest_term: Mutex::new(term.map_or(0, |t| t.highest_term)) })
    }

    /// The highest leader term seen.
    pub fn highest_term(&self) -> u64 {
        *self.highest_term.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The record of `command_id`, if journaled.
    pub fn get(&self, command_id: &str) -> Result<Option<JournalRecord>, JournalError> {
        self.read(&self.record_path(command_id))
    }

    /// Admits `step` at most once: a journaled `command_id` is [`Admission::Known`]; a
    /// term below the highest seen is [`Admission::Refused`]; otherwise the highest term
    /// is raised (durably) and a record in phase `accepted` is written before this
    /// returns [`Admission::Admitted`].
    pub fn admit(&self, step: &Step, prior: Option<Prior>, now_unix_ms: i64) -> Result<Admission, JournalError> {
        let mut highest = self.highest_term.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(record) = self.get(&step.command_id)? {
            return Ok(Admission::Known(Box::new(record)));
        }
        if step.term < *highest {
            return Ok(Admission::Refused { highest_term: *highest });
        }
        if step.term > *highest {
            let path = self.dir.join("term.json");
            write_json_atomic(&path, &TermFile { format: JOURNAL_FORMAT, highest_term: step.term })
                .map_err(|source| JournalError::Io { path, source })?;
            *highest = step.term;
        }
        let record = JournalRecord {
            format: JOURNAL_FORMAT,
            command_id: step.command_id.clone(),
            step: Some(step.clone()),
            state: RecordState::InProgress,
            phase: StepPhase::Accepted,
            detail: String::new(),
            prior,
            started_unix_ms: now_unix_ms,
            updated_unix_ms: now_unix_ms,
            result: None,
            acked: false,
        };
        self.write(&record)?;
        Ok(Admission::Admitted(Box::new(record)))
    }

    /// Journals a tombstone for `result.command_id`, a command the agent has not
    /// received, whose `result` (outcome `Cancelled`) is then its answer for good: a
    /// finished record without a step, not acknowledged. Nothing is written when the
    /// command is journaled already ([`Tombstone::Known`]) or when `result.term` is
    /// below the highest term seen ([`Tombstone::Refused`]: a deposed leader's cancel).
    /// Under the same lock as [`Journal::admit`], so an admission of the same id comes
    /// wholly before or wholly after.
    pub fn tombstone(&self, result: &StepResult) -> Result<Tombstone, JournalError> {
        let highest = self.highest_term.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(record) = self.get(&result.command_id)? {
            return Ok(Tombstone::Known(Box::new(record)));
        }
        if result.term < *highest {
            return Ok(Tombstone::Refused { highest_term: *highest });
        }
        let record = JournalRecord {
            format: JOURNAL_FORMAT,
            command_id: result.command_id.clone(),
            step: None,
            state: RecordState::Done,
            phase: StepPhase::Accepted,
            detail: "cancelled before it was received".to_owned(),
            prior: None,
            started_unix_ms: result.started_unix_ms,
            updated_unix_ms: result.finished_unix_ms,
            result: Some(result.clone()),
            acked: false,
        };
        self.write(&record)?;
        Ok(Tombstone::Written(Box::new(record)))
    }

    /// Writes `record` (a new phase, or the end with its result).
    pub fn write(&self, record: &JournalRecord) -> Result<(), JournalError> {
        let path = self.record_path(&record.command_id);
        write_json_atomic(&path, record).map_err(|source| JournalError::Io { path, source })
    }

    /// Every record still in progress, oldest first.
    pub fn in_progress(&self) -> Result<Vec<JournalRecord>, JournalError> {
        let mut records: Vec<_> = self.records()?.into_iter().filter(|r| r.state == RecordState::InProgress).collect();
        records.sort_by_key(|r| r.started_unix_ms);
        Ok(records)
    }

    /// Marks the result of `command_id` acknowledged (durably). Returns whether a
    /// finished, unacknowledged record was marked (`false`: unknown, still running, or
    /// already acknowledged).
    pub fn mark_acked(&self, command_id: &str) -> Result<bool, JournalError> {
        // Under the term lock, so that a concurrent admission of the same id cannot
        // interleave (records of running steps are never acknowledged anyway).
        let _serialize = self.highest_term.lock().unwrap_or_else(|e| e.into_inner());
        match self.get(command_id)? {
            Some(mut record) if record.state == RecordState::Done && !record.acked => {
                record.acked = true;
                self.write(&record)?;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    /// The results of finished steps not acknowledged yet, oldest first.
    pub fn unacked_results(&self) -> Result<Vec<StepResult>, JournalError> {
        let mut records: Vec<_> =
            self.records()?.into_iter().filter(|r| r.state == RecordState::Done && !r.acked).collect();
        records.sort_by_key(|r| r.updated_unix_ms);
        Ok(records.into_iter().filter_map(|r| r.result).collect())
    }

    /// Deletes the oldest finished records beyond the newest `keep` (a coordinator
    /// re-sends only commands without a committed report, which are recent).
    /// Acknowledged records go first; unacknowledged ones only when they alone are more
    /// than `keep` (so the journal stays bounded even without acknowledgements).
    pub fn prune(&self, keep: usize) -> Result<usize, JournalError> {
        let mut done: Vec<_> = self.records()?.into_iter().filter(|r| r.state == RecordState::Done).collect();
        if done.len() <= keep {
            return Ok(0);
        }
        // Kept first: unacknowledged, then the newest.
        done.sort_by_key(|r| (r.acked, std::cmp::Reverse(r.updated_unix_ms)));
        let mut removed = 0;
        for record in &done[keep..] {
            if !record.acked {
                tracing::warn!(command_id = %record.command_id, "pruning a result the coordinators never acknowledged");
            }
            let path = self.record_path(&record.command_id);
            layout::remove_file_if_exists(&path).map_err(|source| JournalError::Io { path, source })?;
            removed += 1;
        }
        Ok(removed)
    }

    fn records(&self) -> Result<Vec<JournalRecord>, JournalError> {
        let entries = fs::read_dir(&self.dir).map_err(|source| JournalError::Io { path: self.dir.clone(), source })?;
        let mut out = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|source| JournalError::Io { path: self.dir.clone(), source })?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if (name.starts_with("c-") || name.starts_with("h-")) && name.ends_with(".json") {
                out.extend(self.read(&entry.path())?);
            }
        }
        Ok(out)
    }

    fn read(&self, path: &Path) -> Result<Option<JournalRecord>, JournalError> {
        // Read the format first so that a newer record is refused with a clear error
        // rather than a parse error.
        let value: Option<serde_json::Value> =
            read_json(path).map_err(|source| JournalError::Io { path: path.to_owned(), source })?;
        let Some(value) = value else { return Ok(None) };
        let found = value.get("format").and_then(serde_json::Value::as_u64).unwrap_or(0);
        if found > u64::from(JOURNAL_FORMAT) {
            return Err(JournalError::Format {
                path: path.to_owned(),
                found: u32::try_from(found).unwrap_or(u32::MAX),
            });
        }
        serde_json::from_value(value).map(Some).map_err(|e| JournalError::Io {
            path: path.to_owned(),
            source: io::Error::new(io::ErrorKind::InvalidData, e),
        })
    }

    /// `c-<id>.json` for ids of safe characters, else `h-<sha256 of id>.json`.
    fn record_path(&self, command_id: &str) -> PathBuf {
        let safe = !command_id.is_empty()
            && command_id.len() <= 160
            && command_id.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
        let name = if safe {
            format!("c-{command_id}.json")
        } else {
            let digest = Sha256::digest(command_id.as_bytes());
            format!("h-{}.json", digest.iter().map(|b| format!("{b:02x}")).collect::<String>())
        };
        self.dir.join(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::step::{Action, RunCheck};

    fn step(id: &str, term: u64) -> Step {
        Step {
            command_id: id.to_owned(),
            term,
            release_id: String::new(),
            stage: String::new(),
            action: Action::RunCheck(RunCheck {
                gate: "g".into(),
                command: "true".into(),
                env: Default::default(),
                timeout_ms: 0,
            }),
        }
    }

    #[test]
    fn admits_once_refuses_lower_terms_and_survives_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let journal = Journal::open(dir.path()).expect("open");
        assert!(matches!(journal.admit(&step("a", 2), None, 1).expect("admit"), Admission::Admitted(_)));
        assert!(matches!(journal.admit(&step("a", 2), None, 2).expect("admit"), Admission::Known(_)));
        assert!(matches!(
            journal.admit(&step("b", 1), None, 3).expect("admit"),
            Admission::Refused { highest_term: 2 }
        ));
        let weird = "release/1 step:deploy web@2";
        assert!(matches!(journal.admit(&step(weird, 3), None, 4).expect("admit"), Admission::Admitted(_)));
        drop(journal);

        let journal = Journal::open(dir.path()).expect("reopen");
        assert_eq!(journal.highest_term(), 3);
        assert!(matches!(journal.admit(&step(weird, 3), None, 5).expect("admit"), Admission::Known(_)));
        let open = journal.in_progress().expect("list");
        assert_eq!(open.iter().map(|r| r.command_id.as_str()).collect::<Vec<_>>(), vec!["a", weird]);

        let mut done = open[0].clone();
        done.state = RecordState::Done;
        journal.write(&done).expect("write");
        assert_eq!(journal.in_progress().expect("list").len(), 1);
        assert_eq!(journal.prune(0).expect("prune"), 1);
        assert!(journal.get("a").expect("get").is_none());
    }

    fn finish(journal: &Journal, id: &str, at: i64) {
        let mut record = journal.get(id).expect("get").expect("journaled");
        record.state = RecordState::Done;
        record.updated_unix_ms = at;
        let step = record.step.clone().expect("a step's record");
        record.result = Some(StepResult::new(&step, crate::step::StepOutcome::Succeeded, at));
        journal.write(&record).expect("write");
    }

    #[test]
    fn acks_are_durable_and_only_finished_unacked_results_are_listed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let journal = Journal::open(dir.path()).expect("open");
        for (id, at) in [("a", 1), ("b", 2), ("c", 3)] {
            journal.admit(&step(id, 1), None, at).expect("admit");
        }
        finish(&journal, "b", 20);
        finish(&journal, "a", 10);
        let ids = |results: Vec<StepResult>| results.into_iter().map(|r| r.command_id).collect::<Vec<_>>();
        // "c" still runs: nothing to re-send for it.
        assert_eq!(ids(journal.unacked_results().expect("list")), vec!["a", "b"]);
        assert!(journal.mark_acked("a").expect("ack"));
        assert!(!journal.mark_acked("a").expect("ack again"), "already acknowledged");
        assert!(!journal.mark_acked("c").expect("ack running"), "a running step has no result to acknowledge");
        assert!(!journal.mark_acked("zzz").expect("ack unknown"));
        drop(journal);

        let journal = Journal::open(dir.path()).expect("reopen");
        assert_eq!(ids(journal.unacked_results().expect("list")), vec!["b"]);
        assert!(journal.get("a").expect("get").expect("a").acked);
    }

    #[test]
    fn pruning_removes_acknowledged_records_first() {
        let dir = tempfile::tempdir().expect("tempdir");
        let journal = Journal::open(dir.path()).expect("open");
        for (id, at) in [("old-unacked", 1), ("acked-1", 2), ("acked-2", 3), ("new-unacked", 4)] {
            journal.admit(&step(id, 1), None, at).expect("admit");
            finish(&journal, id, at);
        }
        journal.mark_acked("acked-1").expect("ack");
        journal.mark_acked("acked-2").expect("ack");
        assert_eq!(journal.prune(2).expect("prune"), 2);
        assert!(journal.get("old-unacked").expect("get").is_some(), "unacknowledged results are kept");
        assert!(journal.get("new-unacked").expect("get").is_some());
        // More unacknowledged records than `keep`: the oldest go, the journal stays bounded.
        assert_eq!(journal.prune(1).expect("prune"), 1);
        assert!(journal.get("old-unacked").expect("get").is_none());
    }

    fn cancelled(id: &str, term: u64) -> StepResult {
        let mut result = StepResult::new(&step(id, term), crate::step::StepOutcome::Cancelled, 7);
        result.reason = "cancelled before it was received: rollback".into();
        result
    }

    #[test]
    fn a_tombstone_answers_a_later_admission_and_replaces_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let journal = Journal::open(dir.path()).expect("open");
        let Tombstone::Written(record) = journal.tombstone(&cancelled("t", 1)).expect("tombstone") else {
            panic!("written")
        };
        assert!(record.is_tombstone() && record.state == RecordState::Done && !record.acked);
        drop(journal);

        let journal = Journal::open(dir.path()).expect("reopen");
        let Admission::Known(known) = journal.admit(&step("t", 1), None, 8).expect("admit") else {
            panic!("the tombstone answers the step")
        };
        assert_eq!(known.result, Some(cancelled("t", 1)));
        assert_eq!(journal.unacked_results().expect("list"), vec![cancelled("t", 1)], "reported until acknowledged");
        assert!(journal.mark_acked("t").expect("ack"));
        assert!(matches!(journal.tombstone(&cancelled("t", 1)).expect("again"), Tombstone::Known(_)));

        // A step admitted (or finished) keeps its record.
        journal.admit(&step("a", 3), None, 9).expect("admit");
        let Tombstone::Known(kept) = journal.tombstone(&cancelled("a", 3)).expect("tombstone") else { panic!("known") };
        assert_eq!(kept.step, Some(step("a", 3)));
        assert!(journal.get("a").expect("get").expect("a").result.is_none(), "unchanged");

        // A deposed leader's cancel leaves nothing.
        assert!(matches!(
            journal.tombstone(&cancelled("old", 2)).expect("tombstone"),
            Tombstone::Refused { highest_term: 3 }
        ));
        assert!(journal.get("old").expect("get").is_none());
    }

    #[test]
    fn newer_formats_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let journal = Journal::open(dir.path()).expect("open");
        let Admission::Admitted(mut record) = journal.admit(&step("x", 1), None, 1).expect("admit") else {
            panic!("admitted")
        };
        record.format = JOURNAL_FORMAT + 1;
        journal.write(&record).expect("write");
        let err = journal.get("x").expect_err("newer format");
        assert!(err.to_string().contains("upgrade the agent"), "{err}");
    }
}
