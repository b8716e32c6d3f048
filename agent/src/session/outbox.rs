//! Step results waiting for the coordinators' `ResultAck`, oldest first.
//!
//! A result whose step is journaled ("durable") stays here until it is acknowledged:
//! it is sent once per session (and again within a session when it stays
//! unacknowledged for a while). The journal keeps the same set on disk (records not
//! marked acked), which is how it survives an agent restart. A result that is not
//! journaled (a refusal, an invalid step) is sent once and forgotten: the coordinator
//! gets the same answer again if it repeats the step.
//!
//! The set is bounded by the journal's size (finished records are pruned at start).

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use crate::step::StepResult;

#[derive(Debug)]
struct Entry {
    result: StepResult,
    durable: bool,
    /// The session it was last sent on, and when.
    sent: Option<(u64, Instant)>,
}

/// Results not acknowledged yet.
#[derive(Debug, Default)]
pub struct Outbox {
    /// By insertion order.
    entries: BTreeMap<u64, Entry>,
    by_id: HashMap<String, u64>,
    next: u64,
}

impl Outbox {
    /// Adds (or replaces) the result of its command id.
    pub fn insert(&mut self, result: StepResult, durable: bool) {
        if let Some(old) = self.by_id.remove(&result.command_id) {
            self.entries.remove(&old);
        }
        let seq = self.next;
        self.next += 1;
        self.by_id.insert(result.command_id.clone(), seq);
        self.entries.insert(seq, Entry { result, durable, sent: None });
    }

    /// Forgets `command_id` (acknowledged). Returns whether it was here.
    pub fn ack(&mut self, command_id: &str) -> bool {
        match self.by_id.remove(command_id) {
            Some(seq) => self.entries.remove(&seq).is_some(),
            None => false,
        }
    }

    /// Up to `budget` results to send now on `session`, oldest first: those not sent
    /// on this session yet and those sent longer than `resend_after` ago. They are
    /// marked sent; results that are not durable are dropped once taken.
    pub fn take_due(&mut self, session: u64, now: Instant, resend_after: Duration, budget: usize) -> Vec<StepResult> {
        let mut out = Vec::new();
        let mut sent_once = Vec::new();
        for (seq, entry) in &mut self.entries {
            if out.len() >= budget {
                break;
            }
            let due = match entry.sent {
                Some((s, at)) => s != session || now.saturating_duration_since(at) >= resend_after,
                None => true,
            };
            if !due {
                continue;
            }
            entry.sent = Some((session, now));
            out.push(entry.result.clone());
            if !entry.durable {
                sent_once.push(*seq);
            }
        }
        for seq in sent_once {
            if let Some(entry) = self.entries.remove(&seq) {
                self.by_id.remove(&entry.result.command_id);
            }
        }
        out
    }

    /// How many results wait.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether none waits.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::step::StepOutcome;

    fn result(id: &str) -> StepResult {
        StepResult {
            command_id: id.to_owned(),
            term: 1,
            outcome: StepOutcome::Succeeded,
            failure: None,
            reason: String::new(),
            health: Vec::new(),
            service: None,
            exit_code: None,
            output_tail: String::new(),
            started_unix_ms: 0,
            finished_unix_ms: 0,
            replayed: false,
        }
    }

    fn ids(results: Vec<StepResult>) -> Vec<String> {
        results.into_iter().map(|r| r.command_id).collect()
    }

    #[test]
    fn results_are_sent_once_per_session_until_acknowledged() {
        let mut outbox = Outbox::default();
        let t0 = Instant::now();
        let resend = Duration::from_secs(30);
        outbox.insert(result("a"), true);
        outbox.insert(result("b"), true);
        outbox.insert(result("refused"), false);
        assert_eq!(ids(outbox.take_due(1, t0, resend, 2)), vec!["a", "b"], "the budget bounds a batch");
        assert_eq!(ids(outbox.take_due(1, t0, resend, 10)), vec!["refused"]);
        assert!(outbox.take_due(1, t0, resend, 10).is_empty(), "nothing twice on one session");
        assert_eq!(outbox.len(), 2, "a result that is not journaled is sent once");
        assert_eq!(ids(outbox.take_due(1, t0 + resend, resend, 10)), vec!["a", "b"], "re-sent when unacknowledged");
        assert!(outbox.ack("a"));
        assert!(!outbox.ack("a"));
        assert_eq!(ids(outbox.take_due(2, t0, resend, 10)), vec!["b"], "a new session gets every unacknowledged one");
        // A newer result for the same command replaces the old one.
        outbox.insert(result("b"), true);
        assert_eq!(outbox.len(), 1);
        assert_eq!(ids(outbox.take_due(2, t0, resend, 10)), vec!["b"]);
        assert!(outbox.ack("b") && outbox.is_empty());
    }
}
