//! What a check found: per rule, how much it examined and what it found wrong, each
//! finding naming the records it comes from (release events by index and term, host
//! history lines by number, API writes by position). A report without violations still
//! says what was examined, so "nothing wrong" is never "nothing read".

use std::fmt;

use serde::ser::{SerializeMap, SerializeStruct};
use serde::{Serialize, Serializer};

/// One rule of the checker. [`Rule::id`] is its stable name in reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Rule {
    /// No command ran twice; at most one successful deploy or migration per release,
    /// service and host, and a new attempt only after the previous one failed.
    AtMostOnce,
    /// Two steps of one service never run at once on one host.
    NoOverlap,
    /// Within a stage, a service starts only after its hard and data dependencies are
    /// done there.
    DependencyOrder,
    /// On each host, a service deploys only after its config dependencies deployed there.
    ConfigOrder,
    /// A service's `migrate` hook succeeds at most once per release, and never runs
    /// again after it did.
    MigrationOnce,
    /// Rollback steps stay within the decided rollback set and follow its order.
    RollbackOrderAndSet,
    /// No host executes a step of a deposed leader; event logs have gapless indexes and
    /// non-decreasing terms.
    TermFencing,
    /// Every host ends on the version its newest release's outcome implies.
    FinalVersions,
    /// Every acknowledged write is visible in the final state.
    NoLostWrite,
}

impl Rule {
    /// Every rule, in report order.
    pub const ALL: [Rule; 9] = [
        Rule::AtMostOnce,
        Rule::NoOverlap,
        Rule::DependencyOrder,
        Rule::ConfigOrder,
        Rule::MigrationOnce,
        Rule::RollbackOrderAndSet,
        Rule::TermFencing,
        Rule::FinalVersions,
        Rule::NoLostWrite,
    ];

    /// The rule's id, as reports name it.
    pub fn id(self) -> &'static str {
        match self {
            Rule::AtMostOnce => "at-most-once",
            Rule::NoOverlap => "no-overlap",
            Rule::DependencyOrder => "dependency-order",
            Rule::ConfigOrder => "config-order",
            Rule::MigrationOnce => "migration-once",
            Rule::RollbackOrderAndSet => "rollback-order-and-set",
            Rule::TermFencing => "term-fencing",
            Rule::FinalVersions => "final-versions",
            Rule::NoLostWrite => "no-lost-write",
        }
    }

    /// The rule whose id is `id`.
    pub fn from_id(id: &str) -> Option<Rule> {
        Rule::ALL.into_iter().find(|r| r.id() == id)
    }

    fn index(self) -> usize {
        Rule::ALL.iter().position(|r| *r == self).unwrap_or(0)
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.id())
    }
}

impl Serialize for Rule {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.id())
    }
}

/// How serious a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// The history breaks the rule.
    Violation,
    /// The history lacks what the rule needs, so this part was not checked.
    CannotCheck,
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Severity::Violation => "violation",
            Severity::CannotCheck => "cannot check",
        })
    }
}

/// A record of the history a finding is about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "record", rename_all = "snake_case")]
pub enum Record {
    /// A release event.
    Event {
        /// The release.
        release_id: String,
        /// The event's index in the release's log.
        index: u64,
        /// The term it was committed in (0: not recorded).
        term: u64,
        /// Its kind (`EVENT_KIND_BATCH_STARTED`).
        kind: String,
    },
    /// A line of a host's execution history.
    HostLine {
        /// The host.
        host: String,
        /// The 1-based line number in the host's history.
        line: usize,
        /// What the line records: `started`, `finished`, `refused` or `cancelled_unreceived`.
        event: String,
        /// The step's command id.
        command_id: String,
        /// The term on the line.
        term: u64,
    },
    /// A release as a whole (its final state).
    Release {
        /// The release.
        release_id: String,
        /// Its final state (`RELEASE_STATE_SUCCEEDED`), empty when unknown.
        state: String,
    },
    /// A service in a host's final inventory.
    Inventory {
        /// The host.
        host: String,
        /// The service.
        service: String,
        /// The version it reports; `None` when the service is absent.
        version: Option<String>,
    },
    /// A host as a whole.
    Host {
        /// The host.
        host: String,
    },
    /// An API write.
    Write {
        /// Its 0-based position in `writes`.
        position: usize,
        /// The gRPC method.
        method: String,
        /// The release it names.
        release_id: String,
    },
}

impl fmt::Display for Record {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Record::Event { release_id, index, term, kind } => {
                write!(f, "release {release_id} event #{index} {kind} (term {term})")
            }
            Record::HostLine { host, line, event, command_id, term } => {
                write!(f, "host {host} line {line}: {event} {command_id} (term {term})")
            }
            Record::Release { release_id, state } if state.is_empty() => write!(f, "release {release_id}"),
            Record::Release { release_id, state } => write!(f, "release {release_id} ({state})"),
            Record::Inventory { host, service, version: Some(v) } => {
                write!(f, "host {host} inventory: {service} {v}")
            }
            Record::Inventory { host, service, version: None } => {
                write!(f, "host {host} inventory: no {service}")
            }
            Record::Host { host } => write!(f, "host {host}"),
            Record::Write { position, method, release_id } => {
                write!(f, "write #{position} {method}")?;
                if !release_id.is_empty() {
                    write!(f, " (release {release_id})")?;
                }
                Ok(())
            }
        }
    }
}

/// One thing a rule found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// The rule.
    pub rule: Rule,
    /// A violation, or a part the history did not let the rule check.
    pub severity: Severity,
    /// What is wrong (or missing), as a sentence.
    pub message: String,
    /// The records it is about.
    pub records: Vec<Record>,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} [{}] {}", self.severity, self.rule, self.message)?;
        for r in &self.records {
            write!(f, "\n    {r}")?;
        }
        Ok(())
    }
}

/// How much of the history the checker read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct InputSummary {
    /// Releases in `releases`.
    pub releases: usize,
    /// Events over all release logs.
    pub events: usize,
    /// Hosts.
    pub hosts: usize,
    /// Host history lines over all hosts.
    pub host_lines: usize,
    /// API writes.
    pub writes: usize,
}

/// What one rule examined: named counters in a fixed order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checked(Vec<(&'static str, u64)>);

impl Checked {
    /// The counter named `what` (0 when the rule has none of that name).
    pub fn get(&self, what: &str) -> u64 {
        self.0.iter().find(|(w, _)| *w == what).map_or(0, |(_, n)| *n)
    }

    /// The sum of every counter: zero means the rule examined nothing.
    pub fn total(&self) -> u64 {
        self.0.iter().map(|(_, n)| n).sum()
    }

    /// The counters, in order.
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        self.0.iter().copied()
    }

    fn add(&mut self, what: &'static str, n: u64) {
        match self.0.iter_mut().find(|(w, _)| *w == what) {
            Some((_, c)) => *c += n,
            None => self.0.push((what, n)),
        }
    }
}

impl Serialize for Checked {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (what, n) in &self.0 {
            map.serialize_entry(what, n)?;
        }
        map.end()
    }
}

/// The result of checking a history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    seed: Option<u64>,
    input: InputSummary,
    checked: Vec<Checked>,
    findings: Vec<Finding>,
}

impl Report {
    pub(crate) fn new(seed: Option<u64>, input: InputSummary) -> Self {
        Self { seed, input, checked: Rule::ALL.iter().map(|_| Checked(Vec::new())).collect(), findings: Vec::new() }
    }

    /// Declares a counter of `rule` so it shows up (as 0) even when nothing was counted.
    pub(crate) fn declare(&mut self, rule: Rule, what: &'static str) {
        self.checked[rule.index()].add(what, 0);
    }

    /// Counts `n` more things `rule` examined.
    pub(crate) fn count(&mut self, rule: Rule, what: &'static str, n: usize) {
        self.checked[rule.index()].add(what, u64::try_from(n).unwrap_or(u64::MAX));
    }

    /// Records a violation of `rule`.
    pub(crate) fn violation(&mut self, rule: Rule, message: String, records: Vec<Record>) {
        self.findings.push(Finding { rule, severity: Severity::Violation, message, records });
    }

    /// Records a part `rule` could not check.
    pub(crate) fn cannot_check(&mut self, rule: Rule, message: String, records: Vec<Record>) {
        self.findings.push(Finding { rule, severity: Severity::CannotCheck, message, records });
    }

    /// The chaos schedule's seed, when the history gave one.
    pub fn seed(&self) -> Option<u64> {
        self.seed
    }

    /// How much of the history was read.
    pub fn input(&self) -> InputSummary {
        self.input
    }

    /// What `rule` examined.
    pub fn checked(&self, rule: Rule) -> &Checked {
        &self.checked[rule.index()]
    }

    /// Every finding, in the order the rules found them.
    pub fn findings(&self) -> &[Finding] {
        &self.findings
    }

    /// The violations.
    pub fn violations(&self) -> impl Iterator<Item = &Finding> {
        self.findings.iter().filter(|f| f.severity == Severity::Violation)
    }

    /// The parts that could not be checked.
    pub fn cannot_checks(&self) -> impl Iterator<Item = &Finding> {
        self.findings.iter().filter(|f| f.severity == Severity::CannotCheck)
    }

    /// The findings of one rule.
    pub fn of(&self, rule: Rule) -> impl Iterator<Item = &Finding> {
        self.findings.iter().filter(move |f| f.rule == rule)
    }

    /// Whether no rule was violated (parts that could not be checked do not count).
    pub fn is_clean(&self) -> bool {
        self.violations().next().is_none()
    }

    fn tally(&self, rule: Rule, severity: Severity) -> usize {
        self.findings.iter().filter(|f| f.rule == rule && f.severity == severity).count()
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let violations = self.violations().count();
        let cannot = self.cannot_checks().count();
        write!(
            f,
            "history check: {}, {}",
            plural(violations, "violation", "violations"),
            plural(cannot, "part that cannot be checked", "parts that cannot be checked")
        )?;
        if let Some(seed) = self.seed {
            write!(f, " (seed {seed})")?;
        }
        let i = self.input;
        writeln!(
            f,
            "\nread {}, {}, {}, {}, {}\n",
            plural(i.releases, "release", "releases"),
            plural(i.events, "event", "events"),
            plural(i.hosts, "host", "hosts"),
            plural(i.host_lines, "host history line", "host history lines"),
            plural(i.writes, "write", "writes")
        )?;
        let width = Rule::ALL.iter().map(|r| r.id().len()).max().unwrap_or(0);
        for rule in Rule::ALL {
            let v = self.tally(rule, Severity::Violation);
            let c = self.tally(rule, Severity::CannotCheck);
            let verdict = match (v, c) {
                (0, 0) => "ok".to_owned(),
                (0, c) => format!("ok, {c} not checked"),
                (v, 0) => format!("FAILED ({v})"),
                (v, c) => format!("FAILED ({v}), {c} not checked"),
            };
            let checked: Vec<String> = self.checked(rule).iter().map(|(what, n)| format!("{what}: {n}")).collect();
            let checked = if checked.is_empty() { "nothing".to_owned() } else { checked.join(", ") };
            writeln!(f, "  {:width$}  {verdict:<22}  checked {checked}", rule.id())?;
        }
        for finding in &self.findings {
            write!(f, "\n{finding}\n")?;
        }
        Ok(())
    }
}

impl Serialize for Report {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct RuleView<'a> {
            id: Rule,
            violations: usize,
            cannot_check: usize,
            checked: &'a Checked,
        }
        let rules: Vec<RuleView<'_>> = Rule::ALL
            .iter()
            .map(|&rule| RuleView {
                id: rule,
                violations: self.tally(rule, Severity::Violation),
                cannot_check: self.tally(rule, Severity::CannotCheck),
                checked: self.checked(rule),
            })
            .collect();
        let mut st = s.serialize_struct("Report", 7)?;
        st.serialize_field("seed", &self.seed)?;
        st.serialize_field("clean", &self.is_clean())?;
        st.serialize_field("input", &self.input)?;
        st.serialize_field("violations", &self.violations().count())?;
        st.serialize_field("cannot_check", &self.cannot_checks().count())?;
        st.serialize_field("rules", &rules)?;
        st.serialize_field("findings", &self.findings)?;
        st.end()
    }
}

/// `n` and the noun, singular for one.
pub(crate) fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}
