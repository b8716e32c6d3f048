//! `rollback-order-and-set`: a release's rollback steps (`rollback`, `stop` — the
//! rollback of a service that was not installed before — and the `migrate_down` hook)
//! run only after its rollback was decided (the ROLLBACK_STARTED event, whose
//! `services` are the rollback set in order, dependents first), only for services in
//! that set, and in its order: for A before B in the set, every rollback step of A
//! finished before any of B started, and a service's `migrate_down` finished before
//! its own rollback started. Order is read from the events (SERVICE_ROLLBACK_STARTED
//! and MIGRATE_DOWN_STARTED dispatch the steps, HOST_SUCCEEDED/HOST_FAILED report
//! them; compared by index) and from host lines (by line order on one host, by time
//! with the skew tolerance across hosts).

use flotilla_proto::v1;

use crate::index::{Class, Ctx, Exec, ReleaseView, kind};
use crate::report::{Report, Rule};

const RULE: Rule = Rule::RollbackOrderAndSet;

pub(crate) fn check(ctx: &Ctx<'_>, report: &mut Report) {
    use v1::EventKind as K;
    report.declare(RULE, "release logs");
    report.declare(RULE, "rollback decisions");
    report.declare(RULE, "rollback executions");
    report.declare(RULE, "rollback events");
    report.declare(RULE, "ordered pairs by events");
    report.declare(RULE, "ordered pairs by host lines");
    for view in ctx.releases.values() {
        let execs: Vec<&Exec<'_>> = ctx.execs_of(view.id).filter(|e| e.class.rolls_back()).collect();
        if view.events.is_none() {
            if !execs.is_empty() {
                report.cannot_check(
                    RULE,
                    format!(
                        "release {}: {} rollback steps ran, but its events are not in the history, so its rollback \
                         set and order are unknown",
                        view.id,
                        execs.len()
                    ),
                    execs.iter().map(|e| e.start_record()).collect(),
                );
            }
            continue;
        }
        report.count(RULE, "release logs", 1);
        let events = view.events();
        let decisions: Vec<usize> = (0..events.len()).filter(|&p| kind(&events[p]) == K::RollbackStarted).collect();
        let starts: Vec<usize> = (0..events.len())
            .filter(|&p| matches!(kind(&events[p]), K::ServiceRollbackStarted | K::MigrateDownStarted))
            .collect();
        report.count(RULE, "rollback decisions", decisions.len());
        report.count(RULE, "rollback executions", execs.len());
        report.count(RULE, "rollback events", starts.len());
        if decisions.len() > 1 {
            let which: Vec<String> = decisions.iter().map(|&p| format!("#{}", events[p].index)).collect();
            report.violation(
                RULE,
                format!(
                    "release {}: a rollback was decided {} times (events {})",
                    view.id,
                    decisions.len(),
                    which.join(", ")
                ),
                decisions.iter().map(|&p| view.event_record(p)).collect(),
            );
        }
        let Some(&decision) = decisions.first() else {
            for e in &execs {
                report.violation(
                    RULE,
                    format!("release {} never decided a rollback, yet {} ran", view.id, e.describe()),
                    vec![view.record(), e.start_record()],
                );
            }
            for &p in &starts {
                report.violation(
                    RULE,
                    format!(
                        "release {} never decided a rollback, yet event #{} started one for {}",
                        view.id,
                        events[p].index,
                        events[p].services.join(", ")
                    ),
                    vec![view.event_record(p)],
                );
            }
            continue;
        };
        let set: Vec<&str> = events[decision].services.iter().map(String::as_str).collect();
        let named = format!("[{}] (event #{})", set.join(", "), events[decision].index);

        for &p in &starts {
            let service = events[p].services.first().map_or("", String::as_str);
            if p < decision {
                report.violation(
                    RULE,
                    format!(
                        "release {}: event #{} started {service}'s rollback before the rollback was decided (event #{})",
                        view.id, events[p].index, events[decision].index
                    ),
                    vec![view.event_record(decision), view.event_record(p)],
                );
            }
            if !set.contains(&service) {
                report.violation(
                    RULE,
                    format!(
                        "release {}: event #{} rolls back {service}, which is not in the rollback set {named}",
                        view.id, events[p].index
                    ),
                    vec![view.event_record(decision), view.event_record(p)],
                );
            }
        }
        for e in &execs {
            let service = e.service.unwrap_or("");
            if !set.contains(&service) {
                report.violation(
                    RULE,
                    format!(
                        "release {}: {} ran, but {service} is not in the rollback set {named}",
                        view.id,
                        e.describe()
                    ),
                    vec![view.event_record(decision), e.start_record()],
                );
            }
        }

        // The phases in the order the set implies: each member's migrate_down, then its rollback.
        let mut phases: Vec<Phase<'_, '_>> = Vec::new();
        for service in &set {
            for migrate_down in [true, false] {
                let event_kind = if migrate_down { K::MigrateDownStarted } else { K::ServiceRollbackStarted };
                phases.push(Phase {
                    label: format!("the {} of {service}", if migrate_down { "migrate_down" } else { "rollback" }),
                    events: starts
                        .iter()
                        .copied()
                        .filter(|&p| {
                            kind(&events[p]) == event_kind
                                && events[p].services.first().map(String::as_str) == Some(service)
                        })
                        .collect(),
                    execs: execs
                        .iter()
                        .copied()
                        .filter(|e| {
                            e.service == Some(service)
                                && if migrate_down {
                                    e.class == Class::MigrateDown
                                } else {
                                    e.class != Class::MigrateDown
                                }
                        })
                        .collect(),
                });
            }
        }
        for (i, a) in phases.iter().enumerate() {
            for b in &phases[i + 1..] {
                by_events(view, a, b, report);
                by_host_lines(ctx, view, a, b, report);
            }
        }
    }
}

/// One part of a rollback: a member's migrate_down, or its rollback.
struct Phase<'a, 'h> {
    label: String,
    /// Positions of the events that dispatched its steps.
    events: Vec<usize>,
    execs: Vec<&'a Exec<'h>>,
}

fn by_events(view: &ReleaseView<'_>, a: &Phase<'_, '_>, b: &Phase<'_, '_>, report: &mut Report) {
    let Some(&b_first) = b.events.iter().min() else { return };
    if a.events.is_empty() {
        return;
    }
    report.count(RULE, "ordered pairs by events", 1);
    let events = view.events();
    for &p in &a.events {
        for cmd in &events[p].command_ids {
            let (ok, when, mut records) = match view.results.get(cmd.as_str()) {
                Some(&r) => (
                    r < b_first,
                    format!("had not finished (it did at event #{})", events[r].index),
                    vec![view.event_record(r)],
                ),
                None => (false, "never reported a result".to_owned(), vec![view.event_record(p)]),
            };
            if ok {
                continue;
            }
            records.push(view.event_record(b_first));
            report.violation(
                RULE,
                format!(
                    "release {}: {} started at event #{} while step {cmd} of {} {when}; {} comes before {} in \
                     the rollback order",
                    view.id, b.label, events[b_first].index, a.label, a.label, b.label
                ),
                records,
            );
            return;
        }
    }
}

fn by_host_lines(ctx: &Ctx<'_>, view: &ReleaseView<'_>, a: &Phase<'_, '_>, b: &Phase<'_, '_>, report: &mut Report) {
    if a.execs.is_empty() || b.execs.is_empty() {
        return;
    }
    report.count(RULE, "ordered pairs by host lines", 1);
    for x in &a.execs {
        for y in &b.execs {
            if ctx.ended_before(x, y) {
                continue;
            }
            let when = match x.end {
                Some(end) => format!("had not finished (it finished at {} ms, line {})", end.at_ms, end.line),
                None => "never finished".to_owned(),
            };
            report.violation(
                RULE,
                format!(
                    "release {}: {} started at {} ms while {} {when}; {} comes before {} in the rollback order \
                     (skew tolerance {} ms)",
                    view.id,
                    y.describe(),
                    y.at_ms,
                    x.describe(),
                    a.label,
                    b.label,
                    ctx.skew()
                ),
                x.records().into_iter().chain([y.start_record()]).collect(),
            );
            return;
        }
    }
}
