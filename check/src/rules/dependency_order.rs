//! `dependency-order`: within a stage, no service starts before every hard and data
//! dependency of it is done in that stage. By events: the service's first
//! SERVICE_STARTED, MIGRATION_STARTED or BATCH_STARTED of the stage comes after the
//! dependency's SERVICE_DONE of the stage (by index). By host lines: the service's
//! earliest `started` deploy or migrate line in the stage is not earlier than that
//! SERVICE_DONE (the leader's clock against the host's, with the skew tolerance), and
//! comes after every deploy, bake and migrate step of the dependency in the stage
//! finished (by line order on one host, by time with the skew tolerance across hosts).

use flotilla_proto::v1;

use crate::index::{Class, Ctx, Edge, ReleaseView, edges, kind};
use crate::report::{Report, Rule};

const RULE: Rule = Rule::DependencyOrder;

pub(crate) fn check(ctx: &Ctx<'_>, report: &mut Report) {
    report.declare(RULE, "dependency pairs by events");
    report.declare(RULE, "dependency pairs by host lines");
    for view in ctx.releases.values() {
        let Some(plan) = view.plan() else {
            if view.events.is_some() || ctx.execs_of(view.id).next().is_some() {
                report.cannot_check(
                    RULE,
                    format!("release {}: its plan is not in the history, so its dependencies are unknown", view.id),
                    vec![view.record()],
                );
            }
            continue;
        };
        let all = edges(plan);
        for e in all.iter().filter(|e| e.kind == v1::EdgeKind::Unspecified) {
            report.cannot_check(
                RULE,
                format!(
                    "release {}: the edge {} -> {} has a kind this checker does not know",
                    view.id, e.dependency, e.dependent
                ),
                vec![view.record()],
            );
        }
        let deps: Vec<Edge<'_>> =
            all.into_iter().filter(|e| matches!(e.kind, v1::EdgeKind::Hard | v1::EdgeKind::Data)).collect();
        if deps.is_empty() {
            continue;
        }
        if view.events.is_none() {
            report.cannot_check(
                RULE,
                format!("release {}: its events are not in the history; only host lines are checked", view.id),
                vec![view.record()],
            );
        }
        for stage in &plan.stages {
            for edge in &deps {
                by_events(view, &stage.name, edge, report);
                by_host_lines(ctx, view, &stage.name, edge, report);
            }
        }
    }
}

fn kind_name(k: v1::EdgeKind) -> &'static str {
    match k {
        v1::EdgeKind::Hard => "hard",
        v1::EdgeKind::Data => "data",
        v1::EdgeKind::Config => "config",
        v1::EdgeKind::Soft => "soft",
        v1::EdgeKind::Contract => "contract",
        v1::EdgeKind::Unspecified => "unknown",
    }
}

/// The position of the dependency's SERVICE_DONE in the stage.
fn done_in(view: &ReleaseView<'_>, stage: &str, service: &str) -> Option<usize> {
    view.events().iter().position(|e| {
        kind(e) == v1::EventKind::ServiceDone && e.stage == stage && e.services.iter().any(|s| s == service)
    })
}

fn by_events(view: &ReleaseView<'_>, stage: &str, edge: &Edge<'_>, report: &mut Report) {
    use v1::EventKind as K;
    let events = view.events();
    let Some(start) = events.iter().position(|e| {
        matches!(kind(e), K::ServiceStarted | K::MigrationStarted | K::BatchStarted)
            && e.stage == stage
            && e.services.first().map(String::as_str) == Some(edge.dependent)
    }) else {
        return;
    };
    report.count(RULE, "dependency pairs by events", 1);
    let head =
        format!("release {} stage {stage}: {} started (event #{})", view.id, edge.dependent, events[start].index);
    let dep = format!("its {} dependency {}", kind_name(edge.kind), edge.dependency);
    match done_in(view, stage, edge.dependency) {
        Some(done) if done < start => {}
        Some(done) => report.violation(
            RULE,
            format!("{head} before {dep} was done there (event #{})", events[done].index),
            vec![view.event_record(done), view.event_record(start)],
        ),
        None => report.violation(
            RULE,
            format!("{head}, but {dep} was never done in that stage"),
            vec![view.event_record(start)],
        ),
    }
}

fn by_host_lines(ctx: &Ctx<'_>, view: &ReleaseView<'_>, stage: &str, edge: &Edge<'_>, report: &mut Report) {
    let Some(first) = ctx
        .execs_of(view.id)
        .filter(|e| {
            e.stage == stage && e.service == Some(edge.dependent) && matches!(e.class, Class::Deploy | Class::Migrate)
        })
        .min_by_key(|e| (e.at_ms, e.line))
    else {
        return;
    };
    report.count(RULE, "dependency pairs by host lines", 1);
    let head = format!("release {} stage {stage}: {} started at {} ms", view.id, first.describe(), first.at_ms);
    let dep = format!("its {} dependency {}", kind_name(edge.kind), edge.dependency);
    if let Some(done) = done_in(view, stage, edge.dependency) {
        let ev = &view.events()[done];
        if first.at_ms.saturating_add(ctx.skew()) < ev.at_unix_ms {
            report.violation(
                RULE,
                format!(
                    "{head}, before {dep} was done there at {} ms (event #{}; skew tolerance {} ms)",
                    ev.at_unix_ms,
                    ev.index,
                    ctx.skew()
                ),
                vec![view.event_record(done), first.start_record()],
            );
        }
    }
    for d in ctx.execs_of(view.id).filter(|e| {
        e.stage == stage
            && e.service == Some(edge.dependency)
            && matches!(e.class, Class::Deploy | Class::Bake | Class::Migrate)
    }) {
        if ctx.ended_before(d, first) {
            continue;
        }
        let when = match d.end {
            Some(end) => format!("it finished at {} ms, line {}", end.at_ms, end.line),
            None => "it never finished".to_owned(),
        };
        report.violation(
            RULE,
            format!("{head} while {dep} was still running there: {} ({when})", d.describe()),
            d.records().into_iter().chain([first.start_record()]).collect(),
        );
    }
}
