//! The history as the rules read it: each host's lines paired into executions (a
//! `started` line with the `finished` line of the same command after it), each
//! release's events indexed by the command ids they dispatch and report, and the
//! plan read back into edges and placements.

use std::collections::{BTreeMap, HashMap};

use flotilla_proto::v1;
use flotilla_shared::history::{HostHistoryEntry, HostHistoryRecord};

use crate::Options;
use crate::history::{History, HostRecord};
use crate::report::Record;

/// What a step did, from its `started` line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Class {
    /// `deploy`.
    Deploy,
    /// `bake`.
    Bake,
    /// `run_hook` with hook `migrate`.
    Migrate,
    /// `run_hook` with hook `migrate_down`.
    MigrateDown,
    /// `rollback`.
    Rollback,
    /// `stop`: the rollback of a service that was not installed before the release.
    Stop,
    /// `run_check`.
    Check,
    /// Anything else (another hook, an action this checker does not know).
    Other,
}

impl Class {
    fn of(action: &str, hook: Option<&str>) -> Self {
        match (action, hook) {
            ("deploy", _) => Class::Deploy,
            ("bake", _) => Class::Bake,
            ("rollback", _) => Class::Rollback,
            ("stop", _) => Class::Stop,
            ("run_check", _) => Class::Check,
            ("run_hook", Some("migrate")) => Class::Migrate,
            ("run_hook", Some("migrate_down")) => Class::MigrateDown,
            _ => Class::Other,
        }
    }

    /// Whether the step is part of a rollback: `rollback`, `stop` or `migrate_down`.
    pub(crate) fn rolls_back(self) -> bool {
        matches!(self, Class::Rollback | Class::Stop | Class::MigrateDown)
    }
}

/// The `finished` line of an execution.
#[derive(Debug, Clone, Copy)]
pub(crate) struct End<'h> {
    /// 1-based line number.
    pub line: usize,
    /// The host's clock.
    pub at_ms: i64,
    /// `succeeded`, `failed`, `cancelled`, `skipped` or `refused`.
    pub outcome: &'h str,
    /// The service's version after the step.
    pub version: Option<&'h str>,
    /// The term on the line.
    pub term: u64,
}

/// One execution of a step on a host: a `started` line and, when there is one, the
/// `finished` line of the same command after it.
#[derive(Debug, Clone)]
pub(crate) struct Exec<'h> {
    pub host: &'h str,
    pub command_id: &'h str,
    pub release_id: &'h str,
    /// The stage from the line; the plan's stage of the host when the line has none.
    pub stage: &'h str,
    pub term: u64,
    pub action: &'h str,
    pub class: Class,
    pub service: Option<&'h str>,
    pub version: Option<&'h str>,
    /// 1-based line number of the `started` line.
    pub line: usize,
    /// The host's clock at the start.
    pub at_ms: i64,
    pub end: Option<End<'h>>,
}

impl<'h> Exec<'h> {
    /// Whether it finished with outcome `succeeded`.
    pub(crate) fn succeeded(&self) -> bool {
        self.end.is_some_and(|e| e.outcome == "succeeded")
    }

    /// The `started` line as a record.
    pub(crate) fn start_record(&self) -> Record {
        Record::HostLine {
            host: self.host.to_owned(),
            line: self.line,
            event: "started".to_owned(),
            command_id: self.command_id.to_owned(),
            term: self.term,
        }
    }

    /// The `finished` line as a record (the `started` line when there is none).
    pub(crate) fn end_record(&self) -> Record {
        match self.end {
            Some(e) => Record::HostLine {
                host: self.host.to_owned(),
                line: e.line,
                event: format!("finished {}", e.outcome),
                command_id: self.command_id.to_owned(),
                term: e.term,
            },
            None => self.start_record(),
        }
    }

    /// The `started` line, and the `finished` line when there is one.
    pub(crate) fn records(&self) -> Vec<Record> {
        let mut out = vec![self.start_record()];
        if self.end.is_some() {
            out.push(self.end_record());
        }
        out
    }

    /// For a step that changes what runs (deploy, rollback, stop) and succeeded: the
    /// version running after it, `None` for a stop.
    pub(crate) fn version_after(&self) -> Option<Option<&'h str>> {
        let end = self.end.filter(|e| e.outcome == "succeeded")?;
        match self.class {
            Class::Deploy | Class::Rollback => Some(end.version.or(self.version)),
            Class::Stop => Some(None),
            _ => None,
        }
    }

    /// `api deploy r1.3 on web-1 (line 4)`.
    pub(crate) fn describe(&self) -> String {
        let what = match self.class {
            Class::Migrate => "migrate hook".to_owned(),
            Class::MigrateDown => "migrate_down hook".to_owned(),
            _ => self.action.to_owned(),
        };
        match self.service {
            Some(s) => format!("{s} {what} {} on {} (line {})", self.command_id, self.host, self.line),
            None => format!("{what} {} on {} (line {})", self.command_id, self.host, self.line),
        }
    }
}

/// One host: its executions in the order their `started` lines appear.
#[derive(Debug)]
pub(crate) struct HostView<'h> {
    pub name: &'h str,
    pub record: &'h HostRecord,
    pub execs: Vec<Exec<'h>>,
    /// `finished` lines with no `started` line of their command before them.
    pub orphans: Vec<(usize, &'h HostHistoryRecord)>,
}

impl<'h> HostView<'h> {
    fn build(record: &'h HostRecord, stage_of: &HashMap<(&'h str, &'h str), &'h str>) -> Self {
        let mut execs: Vec<Exec<'h>> = Vec::new();
        let mut open: HashMap<&'h str, usize> = HashMap::new();
        let mut orphans = Vec::new();
        for (i, line) in record.history.iter().enumerate() {
            let n = i + 1;
            match &line.entry {
                HostHistoryEntry::Started { action, service, version, hook } => {
                    let stage = if line.stage.is_empty() {
                        stage_of.get(&(line.release_id.as_str(), record.host.as_str())).copied().unwrap_or("")
                    } else {
                        line.stage.as_str()
                    };
                    open.insert(&line.command_id, execs.len());
                    execs.push(Exec {
                        host: &record.host,
                        command_id: &line.command_id,
                        release_id: &line.release_id,
                        stage,
                        term: line.term,
                        action,
                        class: Class::of(action, hook.as_deref()),
                        service: service.as_deref(),
                        version: version.as_deref(),
                        line: n,
                        at_ms: line.at_unix_ms,
                        end: None,
                    });
                }
                HostHistoryEntry::Finished { outcome, version } => match open.remove(line.command_id.as_str()) {
                    Some(at) => {
                        execs[at].end = Some(End {
                            line: n,
                            at_ms: line.at_unix_ms,
                            outcome,
                            version: version.as_deref(),
                            term: line.term,
                        });
                    }
                    None => orphans.push((n, line)),
                },
                HostHistoryEntry::Refused { .. } | HostHistoryEntry::CancelledUnreceived { .. } => {}
            }
        }
        Self { name: &record.host, record, execs, orphans }
    }

    /// The host's final inventory entry for `service`.
    pub(crate) fn inventory(&self, service: &str) -> Option<&'h v1::ServiceInstance> {
        self.record.services.iter().find(|s| s.service == service)
    }
}

/// The kind of an event (UNSPECIFIED for a kind this build does not know).
pub(crate) fn kind(e: &v1::ReleaseEvent) -> v1::EventKind {
    v1::EventKind::try_from(e.kind).unwrap_or(v1::EventKind::Unspecified)
}

/// An event as a record.
pub(crate) fn event_record(release: &str, e: &v1::ReleaseEvent) -> Record {
    Record::Event {
        release_id: release.to_owned(),
        index: e.index,
        term: e.term,
        kind: kind(e).as_str_name().to_owned(),
    }
}

/// The event that sent a command to a host.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Dispatch<'h> {
    /// Position in the release's event list.
    pub pos: usize,
    pub host: &'h str,
}

/// One release: its final state, plan and events.
#[derive(Debug)]
pub(crate) struct ReleaseView<'h> {
    pub id: &'h str,
    pub release: Option<&'h v1::Release>,
    pub events: Option<&'h [v1::ReleaseEvent]>,
    /// Command id -> the event that dispatched it.
    pub dispatched: HashMap<&'h str, Dispatch<'h>>,
    /// Command id -> the position of the event that reported its result.
    pub results: HashMap<&'h str, usize>,
}

impl<'h> ReleaseView<'h> {
    fn build(id: &'h str, release: Option<&'h v1::Release>, events: Option<&'h [v1::ReleaseEvent]>) -> Self {
        use v1::EventKind as K;
        let mut dispatched = HashMap::new();
        let mut results = HashMap::new();
        for (pos, e) in events.unwrap_or_default().iter().enumerate() {
            match kind(e) {
                // BATCH_STARTED lists the dispatched hosts first, then the offline ones
                // (which get no command): the first `command_ids.len()` hosts pair up.
                K::BatchStarted
                | K::MigrationStarted
                | K::BakeStarted
                | K::GateStarted
                | K::ServiceRollbackStarted
                | K::MigrateDownStarted => {
                    for (c, h) in e.command_ids.iter().zip(&e.hosts) {
                        dispatched.entry(c.as_str()).or_insert(Dispatch { pos, host: h.as_str() });
                    }
                }
                K::HostSucceeded | K::HostFailed | K::HostBaked | K::MigrationDone => {
                    for c in &e.command_ids {
                        results.entry(c.as_str()).or_insert(pos);
                    }
                }
                _ => {}
            }
        }
        Self { id, release, events, dispatched, results }
    }

    /// The plan, when the release and its plan are in the history.
    pub(crate) fn plan(&self) -> Option<&'h v1::Plan> {
        self.release.and_then(|r| r.plan.as_ref())
    }

    /// The final state (UNSPECIFIED when the release is not in the history).
    pub(crate) fn state(&self) -> v1::ReleaseState {
        self.release.and_then(|r| v1::ReleaseState::try_from(r.state).ok()).unwrap_or(v1::ReleaseState::Unspecified)
    }

    /// The release as a record.
    pub(crate) fn record(&self) -> Record {
        let state = match self.state() {
            v1::ReleaseState::Unspecified => String::new(),
            s => s.as_str_name().to_owned(),
        };
        Record::Release { release_id: self.id.to_owned(), state }
    }

    /// The events (empty when the log is not in the history).
    pub(crate) fn events(&self) -> &'h [v1::ReleaseEvent] {
        self.events.unwrap_or_default()
    }

    /// An event as a record.
    pub(crate) fn event_record(&self, pos: usize) -> Record {
        event_record(self.id, &self.events()[pos])
    }

    /// Whether an operator resumed the release between the events at positions `a`
    /// and `b` (exclusive).
    pub(crate) fn resumed_between(&self, a: usize, b: usize) -> bool {
        let (lo, hi) = if a < b { (a, b) } else { (b, a) };
        self.events().iter().enumerate().any(|(i, e)| i > lo && i < hi && kind(e) == v1::EventKind::Resumed)
    }
}

/// A plan's edge.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Edge<'h> {
    pub dependency: &'h str,
    pub dependent: &'h str,
    pub kind: v1::EdgeKind,
}

/// The plan's edges.
pub(crate) fn edges(plan: &v1::Plan) -> Vec<Edge<'_>> {
    plan.edges
        .iter()
        .map(|e| Edge {
            dependency: &e.dependency,
            dependent: &e.dependent,
            kind: v1::EdgeKind::try_from(e.kind).unwrap_or(v1::EdgeKind::Unspecified),
        })
        .collect()
}

/// Where a plan puts a service: one host in one stage.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Placement<'h> {
    pub service: &'h str,
    pub host: &'h str,
    /// Already at the target version when planned.
    pub skipped: bool,
}

/// Every (service, host) the plan's rollouts name (a host is in one stage).
pub(crate) fn placements(plan: &v1::Plan) -> Vec<Placement<'_>> {
    let mut out = Vec::new();
    for st in &plan.stages {
        for r in &st.rollouts {
            for b in &r.batches {
                for h in &b.hosts {
                    out.push(Placement { service: &r.service, host: h, skipped: false });
                }
            }
            for h in &r.skipped_hosts {
                out.push(Placement { service: &r.service, host: h, skipped: true });
            }
        }
    }
    out
}

/// The planned target version of a service.
pub(crate) fn target<'p>(plan: &'p v1::Plan, service: &str) -> Option<&'p str> {
    plan.services.iter().find(|s| s.name == service).map(|s| s.version.as_str())
}

/// The history, indexed.
#[derive(Debug)]
pub(crate) struct Ctx<'h> {
    pub history: &'h History,
    pub options: &'h Options,
    pub hosts: Vec<HostView<'h>>,
    /// Every release id the history mentions (in `releases`, `events` or host lines).
    pub releases: BTreeMap<&'h str, ReleaseView<'h>>,
}

impl<'h> Ctx<'h> {
    pub(crate) fn new(history: &'h History, options: &'h Options) -> Self {
        let by_id: HashMap<&str, &v1::Release> = history.releases.iter().map(|r| (r.id.as_str(), r)).collect();
        // A line without a stage belongs to the stage its release's plan put the host in.
        let mut stage_of: HashMap<(&str, &str), &str> = HashMap::new();
        for r in &history.releases {
            for st in r.plan.iter().flat_map(|p| &p.stages) {
                for h in &st.hosts {
                    stage_of.entry((r.id.as_str(), h.as_str())).or_insert(st.name.as_str());
                }
            }
        }
        let hosts: Vec<HostView<'h>> = history.hosts.iter().map(|h| HostView::build(h, &stage_of)).collect();
        let mut ids: Vec<&'h str> = history.releases.iter().map(|r| r.id.as_str()).collect();
        ids.extend(history.events.keys().map(String::as_str));
        ids.extend(hosts.iter().flat_map(|h| h.execs.iter().map(|e| e.release_id)).filter(|id| !id.is_empty()));
        let releases = ids
            .into_iter()
            .map(|id| {
                let events = history.events.get(id).map(Vec::as_slice);
                (id, ReleaseView::build(id, by_id.get(id).copied(), events))
            })
            .collect();
        Self { history, options, hosts, releases }
    }

    /// Every execution on every host.
    pub(crate) fn execs(&self) -> impl Iterator<Item = &Exec<'h>> {
        self.hosts.iter().flat_map(|h| h.execs.iter())
    }

    /// The executions of one release.
    pub(crate) fn execs_of<'a>(&'a self, release: &'a str) -> impl Iterator<Item = &'a Exec<'h>> + 'a {
        self.execs().filter(move |e| e.release_id == release)
    }

    /// The skew tolerance in ms.
    pub(crate) fn skew(&self) -> i64 {
        i64::try_from(self.options.skew_ms).unwrap_or(i64::MAX)
    }

    /// Whether `a` certainly ended before `b` started: by line order on one host, by
    /// time (with the skew tolerance) across hosts. An unfinished `a` never did.
    pub(crate) fn ended_before(&self, a: &Exec<'_>, b: &Exec<'_>) -> bool {
        match a.end {
            None => false,
            Some(end) if a.host == b.host => end.line < b.line,
            Some(end) => end.at_ms <= b.at_ms.saturating_add(self.skew()),
        }
    }

    /// Whether `b` certainly started after `a` ended (the strict reading of
    /// [`Ctx::ended_before`]: across hosts, beyond the skew tolerance).
    pub(crate) fn started_after(&self, a: &Exec<'_>, b: &Exec<'_>) -> bool {
        match a.end {
            None => false,
            Some(end) if a.host == b.host => b.line > end.line,
            Some(end) => b.at_ms > end.at_ms.saturating_add(self.skew()),
        }
    }
}
