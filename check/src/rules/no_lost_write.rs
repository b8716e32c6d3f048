//! `no-lost-write`: every acknowledged write is visible at the end. An acknowledged
//! `Releases/Create` names a release that is among `releases`; acknowledged operator
//! actions on a release (`Approve`, `Pause`, `Resume`, `Abort`, `Rollback`) each left
//! their event in its log: at least as many APPROVED, operator PAUSED, operator
//! RESUMED, RELEASE_ABORTED and operator ROLLBACK_STARTED events as acknowledged
//! writes of each (an operator's events carry the operator as actor, the engine's own
//! carry `engine`).

use std::collections::BTreeMap;

use flotilla_proto::v1;

use crate::history::CREATE_METHOD;
use crate::index::{Ctx, kind};
use crate::report::{Record, Report, Rule};

const RULE: Rule = Rule::NoLostWrite;

const RELEASES: &str = "flotilla.v1.Releases/";
const ENGINE: &str = "engine";

pub(crate) fn check(ctx: &Ctx<'_>, report: &mut Report) {
    report.declare(RULE, "acknowledged creates");
    report.declare(RULE, "acknowledged operator actions");
    let record = |position: usize, method: &str, release_id: &str| Record::Write {
        position,
        method: method.to_owned(),
        release_id: release_id.to_owned(),
    };
    let mut actions: BTreeMap<(&str, &str), Vec<usize>> = BTreeMap::new();
    for (pos, w) in ctx.history.writes.iter().enumerate().filter(|(_, w)| w.acknowledged) {
        let rec = || vec![record(pos, &w.method, &w.release_id)];
        let Some(name) = w.method.strip_prefix(RELEASES) else {
            report.cannot_check(
                RULE,
                format!("write #{pos}: {} is not a method whose effect this checker can look for", w.method),
                rec(),
            );
            continue;
        };
        if w.method == CREATE_METHOD {
            report.count(RULE, "acknowledged creates", 1);
        } else if matches!(name, "Approve" | "Pause" | "Resume" | "Abort" | "Rollback") {
            report.count(RULE, "acknowledged operator actions", 1);
        } else {
            report.cannot_check(
                RULE,
                format!("write #{pos}: {} is not a write whose effect this checker can look for", w.method),
                rec(),
            );
            continue;
        }
        if w.release_id.is_empty() {
            report.cannot_check(RULE, format!("write #{pos}: the acknowledged {name} names no release id"), rec());
            continue;
        }
        let present = ctx.history.releases.iter().any(|r| r.id == w.release_id);
        if !present {
            let what = if name == "Create" { "created" } else { "acted on" };
            report.violation(
                RULE,
                format!(
                    "write #{pos}: an acknowledged {name} {what} release {}, which is not among the releases at the end",
                    w.release_id
                ),
                rec(),
            );
            continue;
        }
        if name != "Create" {
            actions.entry((w.release_id.as_str(), name)).or_default().push(pos);
        }
    }

    use v1::EventKind as K;
    for ((release, name), positions) in &actions {
        let Some(view) = ctx.releases.get(release) else { continue };
        let Some(events) = view.events else {
            report.cannot_check(
                RULE,
                format!(
                    "release {release}: {} acknowledged {name} writes, but its events are not in the history",
                    positions.len()
                ),
                positions.iter().map(|&p| record(p, &ctx.history.writes[p].method, release)).collect(),
            );
            continue;
        };
        let by_operator = |e: &v1::ReleaseEvent| e.actor != ENGINE;
        let (label, seen) = match *name {
            "Approve" => ("APPROVED", events.iter().filter(|e| kind(e) == K::Approved).count()),
            "Pause" => {
                ("PAUSED by an operator", events.iter().filter(|e| kind(e) == K::Paused && by_operator(e)).count())
            }
            "Resume" => {
                ("RESUMED by an operator", events.iter().filter(|e| kind(e) == K::Resumed && by_operator(e)).count())
            }
            "Abort" => ("RELEASE_ABORTED", events.iter().filter(|e| kind(e) == K::ReleaseAborted).count()),
            _ => (
                "ROLLBACK_STARTED by an operator",
                events.iter().filter(|e| kind(e) == K::RollbackStarted && by_operator(e)).count(),
            ),
        };
        if seen < positions.len() {
            let mut records: Vec<Record> =
                positions.iter().map(|&p| record(p, &ctx.history.writes[p].method, release)).collect();
            records.push(view.record());
            report.violation(
                RULE,
                format!(
                    "release {release}: {} acknowledged {name} writes, but its log holds only {seen} {label} events",
                    positions.len()
                ),
                records,
            );
        }
    }
}
