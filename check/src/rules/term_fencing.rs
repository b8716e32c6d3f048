//! `term-fencing`: on each host, in history order, no `started` line has a term below
//! the highest term of an earlier `started`, `refused` (its `highest_term` too) or
//! `cancelled_unreceived` line — the agent fences deposed leaders; no step starts with
//! a term below the term its dispatching event was committed in; and each release's
//! event log has indexes 1..n without gaps, terms that never decrease, and (once the
//! release has ended) as many events as the release's `last_event_index` says.

use flotilla_proto::v1;
use flotilla_shared::history::HostHistoryEntry;

use crate::index::Ctx;
use crate::report::{Record, Report, Rule};

const RULE: Rule = Rule::TermFencing;

pub(crate) fn check(ctx: &Ctx<'_>, report: &mut Report) {
    report.declare(RULE, "host lines");
    report.declare(RULE, "events");
    report.declare(RULE, "steps against their dispatch");
    for host in &ctx.hosts {
        // The highest term seen so far, and the line that showed it.
        let mut highest: Option<(u64, Record)> = None;
        for (i, line) in host.record.history.iter().enumerate() {
            report.count(RULE, "host lines", 1);
            let record = |event: &str| Record::HostLine {
                host: host.name.to_owned(),
                line: i + 1,
                event: event.to_owned(),
                command_id: line.command_id.clone(),
                term: line.term,
            };
            let (seen, event) = match &line.entry {
                HostHistoryEntry::Started { .. } => {
                    if let Some((term, earlier)) = &highest
                        && line.term < *term
                    {
                        report.violation(
                            RULE,
                            format!(
                                "{} started {} with term {} on line {}, after the host had seen term {term}",
                                host.name,
                                line.command_id,
                                line.term,
                                i + 1
                            ),
                            vec![earlier.clone(), record("started")],
                        );
                    }
                    (line.term, "started")
                }
                HostHistoryEntry::Refused { highest_term } => (line.term.max(*highest_term), "refused"),
                HostHistoryEntry::CancelledUnreceived { .. } => (line.term, "cancelled_unreceived"),
                HostHistoryEntry::Finished { .. } => continue,
            };
            if highest.as_ref().is_none_or(|(t, _)| seen > *t) {
                highest = Some((seen, record(event)));
            }
        }
    }

    for view in ctx.releases.values() {
        let Some(events) = view.events else { continue };
        report.count(RULE, "events", events.len());
        if let Some((pos, e)) = events.iter().enumerate().find(|(p, e)| e.index != *p as u64 + 1) {
            report.violation(
                RULE,
                format!(
                    "release {}: event {} of its log has index {}; indexes run 1..n without gaps",
                    view.id,
                    pos + 1,
                    e.index
                ),
                vec![view.event_record(pos)],
            );
        }
        let unstamped = events.iter().filter(|e| e.term == 0).count();
        if unstamped > 0 {
            let first = events.iter().position(|e| e.term == 0).unwrap_or(0);
            report.cannot_check(
                RULE,
                format!(
                    "release {}: {unstamped} of its {} events carry no term (0), so whether terms decrease along its \
                     log, and whether its steps started with a term below their dispatch's, is unknown",
                    view.id,
                    events.len()
                ),
                vec![view.event_record(first)],
            );
        } else {
            for (pos, w) in events.windows(2).enumerate() {
                if w[1].term < w[0].term {
                    report.violation(
                        RULE,
                        format!(
                            "release {}: event #{} was committed in term {}, after event #{} in term {}",
                            view.id, w[1].index, w[1].term, w[0].index, w[0].term
                        ),
                        vec![view.event_record(pos), view.event_record(pos + 1)],
                    );
                }
            }
        }
        let terminal = matches!(
            view.state(),
            v1::ReleaseState::Succeeded
                | v1::ReleaseState::RolledBack
                | v1::ReleaseState::Failed
                | v1::ReleaseState::Aborted
        );
        if let Some(r) = view.release
            && terminal
            && r.last_event_index != events.len() as u64
        {
            report.violation(
                RULE,
                format!(
                    "release {} ended with last event index {}, but its log holds {} events",
                    view.id,
                    r.last_event_index,
                    events.len()
                ),
                vec![view.record()],
            );
        }
    }

    for e in ctx.execs() {
        let Some(view) = ctx.releases.get(e.release_id) else { continue };
        let Some(d) = view.dispatched.get(e.command_id) else { continue };
        let ev = &view.events()[d.pos];
        if ev.term == 0 {
            continue;
        }
        report.count(RULE, "steps against their dispatch", 1);
        if e.term < ev.term {
            report.violation(
                RULE,
                format!(
                    "{} started with term {}, below term {} that its dispatch (event #{}) was committed in",
                    e.describe(),
                    e.term,
                    ev.term,
                    ev.index
                ),
                vec![view.event_record(d.pos), e.start_record()],
            );
        }
    }
}
