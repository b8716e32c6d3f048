//! `final-versions`: every host ends on the version the outcome of the newest release
//! whose plan put the service on it implies (newest by creation time, then by position
//! in `releases`):
//!
//! - SUCCEEDED: the plan's target version — unless the release never deployed the
//!   service there and its events show the host failed (within `max_failed`) or an
//!   operator excluded it, which leaves the host as its history last left it;
//! - ROLLED_BACK, for a service in the rollback set: the version its rollback step on
//!   that host went back to (absent or stopped after a `stop`, the rollback of a
//!   service that was not installed before); without a rollback step there, the version
//!   before the release when the host's history shows it, and anything but the target
//!   when the release had deployed it there;
//! - anything else (FAILED, ABORTED, a release still running, services of a rolled-back
//!   release outside its set): the version after the last successful deploy, rollback
//!   or stop of the service in the host's history.
//!
//! A host whose history does not tell (nothing ever ran there for the service) cannot
//! be checked, and says so.

use std::collections::{BTreeMap, BTreeSet};

use flotilla_proto::v1;

use crate::index::{Class, Ctx, Exec, HostView, Placement, ReleaseView, kind, placements, target};
use crate::report::{Record, Report, Rule};

const RULE: Rule = Rule::FinalVersions;

/// What a host should report for a service at the end.
enum Expect<'h> {
    /// This version.
    Version(&'h str),
    /// No entry, or a stopped one.
    Absent,
    /// Anything but this version.
    Not(&'h str),
    /// The history does not tell.
    Unknown,
}

/// An expectation with why, and the records it rests on.
struct Expectation<'h> {
    expect: Expect<'h>,
    why: String,
    basis: Vec<Record>,
}

pub(crate) fn check(ctx: &Ctx<'_>, report: &mut Report) {
    report.declare(RULE, "services on hosts");
    let mut order: Vec<(usize, &v1::Release)> = ctx.history.releases.iter().enumerate().collect();
    order.sort_by_key(|(pos, r)| (r.created_unix_ms, *pos));
    let mut newest: BTreeMap<(&str, &str), (&ReleaseView<'_>, Placement<'_>)> = BTreeMap::new();
    for (_, r) in order {
        let Some(view) = ctx.releases.get(r.id.as_str()) else { continue };
        let Some(plan) = &r.plan else {
            report.cannot_check(
                RULE,
                format!(
                    "release {}: its plan is not in the history, so the hosts it put services on are unknown",
                    r.id
                ),
                vec![view.record()],
            );
            continue;
        };
        if !plan.fleet_known {
            report.cannot_check(
                RULE,
                format!("release {} was planned without the fleet, so the hosts it put services on are unknown", r.id),
                vec![view.record()],
            );
            continue;
        }
        for p in placements(plan) {
            newest.insert((p.service, p.host), (view, p));
        }
    }

    let mut missing: BTreeSet<(&str, &str)> = BTreeSet::new();
    for ((service, host), (view, placement)) in &newest {
        let Some(hv) = ctx.hosts.iter().find(|h| h.name == *host) else {
            if missing.insert((view.id, host)) {
                report.cannot_check(
                    RULE,
                    format!("release {} put services on {host}, which is not in the history's hosts", view.id),
                    vec![view.record(), Record::Host { host: (*host).to_owned() }],
                );
            }
            continue;
        };
        report.count(RULE, "services on hosts", 1);
        let exp = expectation(view, hv, service, placement);
        let entry = hv.inventory(service);
        let runs = entry.map(|e| e.version.as_str());
        let stopped = entry.is_some_and(|e| e.state == v1::ServiceRunState::Stopped as i32);
        let (ok, should) = match exp.expect {
            Expect::Version(v) => (runs == Some(v), format!("run {v}")),
            Expect::Absent => (entry.is_none() || stopped, "be absent or stopped".to_owned()),
            Expect::Not(v) => (runs != Some(v), format!("run anything but {v}")),
            Expect::Unknown => {
                report.cannot_check(
                    RULE,
                    format!("{host}: the version {service} should end on is unknown: {}", exp.why),
                    vec![view.record(), inventory(host, service, runs)],
                );
                continue;
            }
        };
        if ok {
            continue;
        }
        let state = match (runs, stopped) {
            (None, _) => format!("does not have {service}"),
            (Some(v), true) => format!("has {service} {v} (stopped)"),
            (Some(v), false) => format!("runs {service} {v}"),
        };
        let mut records = vec![inventory(host, service, runs), view.record()];
        records.extend(exp.basis);
        report.violation(RULE, format!("{host} {state} at the end, but should {should}: {}", exp.why), records);
    }
}

fn inventory(host: &str, service: &str, version: Option<&str>) -> Record {
    Record::Inventory { host: host.to_owned(), service: service.to_owned(), version: version.map(str::to_owned) }
}

fn expectation<'h>(
    view: &ReleaseView<'h>,
    hv: &HostView<'h>,
    service: &str,
    placement: &Placement<'h>,
) -> Expectation<'h> {
    let here: Vec<&Exec<'h>> = hv.execs.iter().filter(|e| e.service == Some(service)).collect();
    let ours = |e: &&&Exec<'h>| e.release_id == view.id;
    let deployed = here.iter().filter(ours).find(|e| e.class == Class::Deploy && e.succeeded());
    let target = view.plan().and_then(|p| target(p, service)).unwrap_or("");
    let id = view.id;
    match view.state() {
        v1::ReleaseState::Succeeded => {
            if let Some(d) = deployed {
                return Expectation {
                    expect: Expect::Version(target),
                    why: format!("release {id} succeeded and deployed {service} {target} there"),
                    basis: d.records(),
                };
            }
            if placement.skipped {
                return Expectation {
                    expect: Expect::Version(target),
                    why: format!("release {id} succeeded; the host already ran {target} when it was planned"),
                    basis: Vec::new(),
                };
            }
            // The host failed, or an operator excluded it: the release left it alone.
            let left_alone = failed_in_events(view, service, hv.name)
                .map(|pos| (pos, format!("failed for {service}")))
                .or_else(|| excluded_in_events(view, hv.name).map(|pos| (pos, "excluded by an operator".to_owned())));
            if let Some((pos, how)) = left_alone {
                let mut e = last_known(&here, service, hv.name, None);
                e.why = format!(
                    "release {id} succeeded with {} {how} (event #{}); {}",
                    hv.name,
                    view.events()[pos].index,
                    e.why
                );
                e.basis.insert(0, view.event_record(pos));
                return e;
            }
            Expectation {
                expect: Expect::Version(target),
                why: format!("release {id} succeeded and its plan puts {service} {target} there"),
                basis: Vec::new(),
            }
        }
        v1::ReleaseState::RolledBack => {
            let Some(decision) = view.events().iter().position(|e| kind(e) == v1::EventKind::RollbackStarted) else {
                return Expectation {
                    expect: Expect::Unknown,
                    why: format!("release {id} rolled back, but no ROLLBACK_STARTED event names its rollback set"),
                    basis: Vec::new(),
                };
            };
            if !view.events()[decision].services.iter().any(|s| s == service) {
                let mut e = last_known(&here, service, hv.name, None);
                e.why = format!("release {id} rolled back without {service}; {}", e.why);
                return e;
            }
            let rolled =
                here.iter().filter(ours).rfind(|e| matches!(e.class, Class::Rollback | Class::Stop) && e.succeeded());
            if let Some(rb) = rolled {
                let (expect, why) = match rb.version_after() {
                    Some(Some(v)) => (Expect::Version(v), format!("release {id} rolled {service} back there to {v}")),
                    _ => (
                        Expect::Absent,
                        format!("release {id} stopped {service} there in its rollback (it was not installed before)"),
                    ),
                };
                return Expectation { expect, why, basis: rb.records() };
            }
            if let Some(d) = deployed {
                let before = last_known(&here, service, hv.name, Some(first_line(&here, id)));
                if !matches!(before.expect, Expect::Unknown) {
                    let mut e = before;
                    e.why = format!(
                        "release {id} rolled {service} back, which it had deployed there, and no rollback step ran \
                         there; before the release {}",
                        e.why
                    );
                    e.basis.extend(d.records());
                    return e;
                }
                return Expectation {
                    expect: Expect::Not(target),
                    why: format!(
                        "release {id} rolled {service} back, which it had deployed there, and no rollback step ran \
                         there"
                    ),
                    basis: d.records(),
                };
            }
            if placement.skipped {
                return Expectation {
                    expect: Expect::Version(target),
                    why: format!(
                        "release {id} rolled back, but the host already ran {target} before it and was skipped"
                    ),
                    basis: Vec::new(),
                };
            }
            let mut e = last_known(&here, service, hv.name, None);
            e.why = format!("release {id} rolled back without having deployed {service} there; {}", e.why);
            e
        }
        state => {
            let mut e = last_known(&here, service, hv.name, None);
            let state = match state {
                v1::ReleaseState::Unspecified => "is in an unknown state".to_owned(),
                s => format!("ended {}", s.as_str_name().trim_start_matches("RELEASE_STATE_")),
            };
            e.why = format!("release {id} {state}; {}", e.why);
            e
        }
    }
}

/// The line of the release's first step of the service on the host.
fn first_line(here: &[&Exec<'_>], release: &str) -> usize {
    here.iter().filter(|e| e.release_id == release).map(|e| e.line).min().unwrap_or(usize::MAX)
}

/// The version the host's history last left the service on (before line `before` when
/// given): after the last successful deploy, rollback or stop.
fn last_known<'h>(here: &[&Exec<'h>], service: &str, host: &str, before: Option<usize>) -> Expectation<'h> {
    let last = here
        .iter()
        .filter(|e| before.is_none_or(|b| e.line < b))
        .filter_map(|e| e.version_after().map(|v| (e, v)))
        .next_back();
    match last {
        Some((e, Some(v))) => Expectation {
            expect: Expect::Version(v),
            why: format!("the host's history last left {service} on {v} ({})", e.describe()),
            basis: e.records(),
        },
        Some((e, None)) => Expectation {
            expect: Expect::Absent,
            why: format!("the host's history last stopped {service} ({})", e.describe()),
            basis: e.records(),
        },
        None => Expectation {
            expect: Expect::Unknown,
            why: format!("no deploy, rollback or stop of {service} on {host} succeeded in its history"),
            basis: Vec::new(),
        },
    }
}

/// The position of the event in which an operator excluded the host from the rest of
/// the release (it covers every service the release had not deployed there yet).
fn excluded_in_events(view: &ReleaseView<'_>, host: &str) -> Option<usize> {
    view.events().iter().position(|e| kind(e) == v1::EventKind::HostExcluded && e.hosts.iter().any(|h| h == host))
}

/// The position of an event showing the host failed for the service: a deploy or bake
/// reported failed, or the host offline when its batch started.
fn failed_in_events(view: &ReleaseView<'_>, service: &str, host: &str) -> Option<usize> {
    use v1::EventKind as K;
    let events = view.events();
    events.iter().enumerate().find_map(|(pos, e)| {
        if e.services.first().map(String::as_str) != Some(service) {
            return None;
        }
        let failed = match kind(e) {
            K::BatchStarted => e.hosts.iter().skip(e.command_ids.len()).any(|h| h == host),
            K::HostFailed => {
                e.hosts.iter().any(|h| h == host)
                    && e.command_ids.iter().any(|c| {
                        view.dispatched
                            .get(c.as_str())
                            .is_some_and(|d| matches!(kind(&events[d.pos]), K::BatchStarted | K::BakeStarted))
                    })
            }
            _ => false,
        };
        failed.then_some(pos)
    })
}
