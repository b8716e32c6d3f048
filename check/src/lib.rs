//! Flotilla's history checker: what a chaos round recorded (every release's final
//! state and event log, every host's execution history and final inventory, the API
//! writes the client made) checked against the rules a correct Flotilla never breaks.
//!
//! ```text
//! let history = History::from_json(&text)?;        // the HISTORY document
//! let report = check(&history, &Options::default());
//! if !report.is_clean() { /* report lists each violation and its records */ }
//! ```
//!
//! [`check`] is pure: it reads the history it is given and nothing else. Each rule
//! ([`Rule`]) counts what it examined, reports every violation with the records it
//! comes from (release id, event index and term, host, command id, history line), and
//! says so — as [`Severity::CannotCheck`], never a silent pass — when the history lacks
//! what the rule needs. `docs/history-checker.md` describes the document and the rules.

mod history;
mod index;
mod report;
mod rules;

pub use history::{CREATE_METHOD, HISTORY_FORMAT, History, HistoryError, HostRecord, Write};
pub use report::{Checked, Finding, InputSummary, Record, Report, Rule, Severity};

/// How to check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Options {
    /// How far apart (ms) two clocks may be when the checker compares times from
    /// different clocks: two hosts' history lines, or a host line and an event the
    /// leader stamped. 0 (the default) suits hosts that share one clock, as containers
    /// on one machine do. Lines of one host are compared by their order, never by time.
    pub skew_ms: u64,
}

/// Checks a history against every [`Rule`].
pub fn check(history: &History, options: &Options) -> Report {
    let ctx = index::Ctx::new(history, options);
    let input = InputSummary {
        releases: history.releases.len(),
        events: history.events.values().map(Vec::len).sum(),
        hosts: history.hosts.len(),
        host_lines: history.hosts.iter().map(|h| h.history.len()).sum(),
        writes: history.writes.len(),
    };
    let mut report = Report::new(history.seed, input);
    rules::run(&ctx, &mut report);
    report
}
