//! `no-overlap`: on one host, two steps of the same service never run at once. A step
//! runs from its `started` line to its `finished` line, in history order; a step with
//! no `finished` line runs until the end, so it overlaps every later step of its
//! service. The last step of a service cut off by the end of the history is no overlap;
//! it is a violation only when its release claims to have succeeded (the engine cannot
//! have had its result). A `finished` line with no `started` line is a step cancelled
//! while it waited for its service (it never began) when its outcome is `cancelled`;
//! any other such line (an early part of the history missing, e.g. rotated away) leaves
//! that step unchecked, and says so.

use std::collections::{BTreeMap, BTreeSet};

use flotilla_proto::v1;
use flotilla_shared::history::HostHistoryEntry;

use crate::index::Ctx;
use crate::report::{Record, Report, Rule};

const RULE: Rule = Rule::NoOverlap;

pub(crate) fn check(ctx: &Ctx<'_>, report: &mut Report) {
    report.declare(RULE, "steps");
    report.declare(RULE, "services on hosts");
    report.declare(RULE, "steps cancelled before they began");
    for host in &ctx.hosts {
        // (line, is start, execution) for every step of a service, in line order.
        let mut marks: Vec<(usize, bool, usize)> = Vec::new();
        for (i, e) in host.execs.iter().enumerate() {
            if e.service.is_some() {
                marks.push((e.line, true, i));
                if let Some(end) = e.end {
                    marks.push((end.line, false, i));
                }
            }
        }
        marks.sort_unstable();
        let mut running: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
        let mut services = BTreeSet::new();
        for (_, start, i) in marks {
            let e = &host.execs[i];
            let Some(service) = e.service else { continue };
            let on = running.entry(service).or_default();
            if !start {
                on.retain(|&x| x != i);
                continue;
            }
            report.count(RULE, "steps", 1);
            services.insert(service);
            for &o in on.iter() {
                let other = &host.execs[o];
                let open = if other.end.is_none() { "; it never finished" } else { "" };
                report.violation(
                    RULE,
                    format!("{} started while {} had not finished{open}", e.describe(), other.describe()),
                    vec![other.start_record(), e.start_record()],
                );
            }
            on.push(i);
        }
        report.count(RULE, "services on hosts", services.len());

        for e in host.execs.iter().filter(|e| e.end.is_none()) {
            let Some(service) = e.service else { continue };
            let last = !host.execs.iter().any(|x| x.service == Some(service) && x.line > e.line);
            if !last || e.release_id.is_empty() {
                continue;
            }
            if let Some(view) = ctx.releases.get(e.release_id)
                && view.state() == v1::ReleaseState::Succeeded
            {
                report.violation(
                    RULE,
                    format!(
                        "{} never finished (the history ends with it running), yet release {} claims success",
                        e.describe(),
                        e.release_id
                    ),
                    vec![e.start_record(), view.record()],
                );
            }
        }

        for (line, rec) in &host.orphans {
            // A step cancelled while it waited for its service never began: the agent
            // writes its `finished` line alone.
            if matches!(&rec.entry, HostHistoryEntry::Finished { outcome, .. } if outcome == "cancelled") {
                report.count(RULE, "steps cancelled before they began", 1);
                continue;
            }
            report.cannot_check(
                RULE,
                format!(
                    "line {line} on {} finishes {}, which has no started line before it: when it ran is unknown",
                    host.name, rec.command_id
                ),
                vec![Record::HostLine {
                    host: host.name.to_owned(),
                    line: *line,
                    event: "finished".to_owned(),
                    command_id: rec.command_id.clone(),
                    term: rec.term,
                }],
            );
        }
    }
}
