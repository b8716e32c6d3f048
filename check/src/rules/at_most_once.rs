//! `at-most-once`: no command id has two `started` lines, on one host or on two (a
//! command goes to the one host its dispatching event names); per release,
//! service and host, at most one deploy (and one migration) succeeded, and a further
//! attempt starts only after the previous one finished without success — the engine's
//! retry of an interrupted step, up to [`MAX_ATTEMPTS`] attempts, or a deploy again
//! after an operator's resume (which sends failed hosts, also hosts that deployed and
//! then failed their bake, their deploy again).

use std::collections::BTreeMap;

use super::MAX_ATTEMPTS;
use crate::index::{Class, Ctx, Exec};
use crate::report::{Report, Rule};

const RULE: Rule = Rule::AtMostOnce;

pub(crate) fn check(ctx: &Ctx<'_>, report: &mut Report) {
    report.declare(RULE, "command ids");
    report.declare(RULE, "deploy attempt groups");
    report.declare(RULE, "migration attempt groups");
    for host in &ctx.hosts {
        let mut starts: BTreeMap<&str, Vec<&Exec<'_>>> = BTreeMap::new();
        for e in &host.execs {
            starts.entry(e.command_id).or_default().push(e);
        }
        report.count(RULE, "command ids", starts.len());
        for (cid, list) in &starts {
            if list.len() > 1 {
                let lines: Vec<String> = list.iter().map(|e| e.line.to_string()).collect();
                report.violation(
                    RULE,
                    format!("command {cid} started {} times on {} (lines {})", list.len(), host.name, lines.join(", ")),
                    list.iter().map(|e| e.start_record()).collect(),
                );
            }
        }
    }

    // Command ids are unique in the cluster: each goes to the one host its event names.
    let mut hosts_of: BTreeMap<&str, Vec<&Exec<'_>>> = BTreeMap::new();
    for e in ctx.execs() {
        hosts_of.entry(e.command_id).or_default().push(e);
    }
    for (cid, list) in &hosts_of {
        let mut hosts: Vec<&str> = list.iter().map(|e| e.host).collect();
        hosts.dedup();
        if hosts.len() > 1 {
            report.violation(
                RULE,
                format!("command {cid} started on {} hosts: {}", hosts.len(), hosts.join(", ")),
                list.iter().map(|e| e.start_record()).collect(),
            );
        }
        for e in list {
            let Some(view) = ctx.releases.get(e.release_id) else { continue };
            let Some(d) = view.dispatched.get(cid) else { continue };
            if d.host != e.host {
                report.violation(
                    RULE,
                    format!(
                        "{} started, but event #{} sent {cid} to {}",
                        e.describe(),
                        view.events()[d.pos].index,
                        d.host
                    ),
                    vec![view.event_record(d.pos), e.start_record()],
                );
            }
        }
    }

    // Per (release, service, host): deploys, and migrations, in history order.
    let mut groups: BTreeMap<(&str, &str, &str, bool), Vec<&Exec<'_>>> = BTreeMap::new();
    for e in ctx.execs() {
        let Some(service) = e.service else { continue };
        let migration = match e.class {
            Class::Deploy => false,
            Class::Migrate => true,
            _ => continue,
        };
        if !e.release_id.is_empty() {
            groups.entry((e.release_id, service, e.host, migration)).or_default().push(e);
        }
    }
    for ((release, service, host, migration), list) in &groups {
        let what = if *migration { "migration" } else { "deploy" };
        report.count(RULE, if *migration { "migration attempt groups" } else { "deploy attempt groups" }, 1);
        for (n, pair) in list.windows(2).enumerate() {
            let (prev, next) = (pair[0], pair[1]);
            let attempt = n + 2;
            let records = || prev.records().into_iter().chain([next.start_record()]).collect();
            let head = format!("release {release}: {service} {what} attempt {attempt} on {host} ({})", next.command_id);
            match prev.end {
                Some(end) if end.line < next.line && prev.succeeded() => {
                    if *migration {
                        report.violation(
                            RULE,
                            format!("{head} started after attempt {} ({}) had succeeded", attempt - 1, prev.command_id),
                            records(),
                        );
                        continue;
                    }
                    match resumed(ctx, release, prev, next) {
                        Between::Resumed => {}
                        Between::NotResumed => report.violation(
                            RULE,
                            format!(
                                "{head} started after attempt {} ({}) had succeeded, with no operator resume between them",
                                attempt - 1,
                                prev.command_id
                            ),
                            records(),
                        ),
                        Between::Unknown(why) => report.cannot_check(
                            RULE,
                            format!(
                                "{head} started after attempt {} ({}) had succeeded; whether an operator resumed in \
                                 between is unknown: {why}",
                                attempt - 1,
                                prev.command_id
                            ),
                            records(),
                        ),
                    }
                }
                Some(end) if end.line < next.line => {
                    if attempt <= MAX_ATTEMPTS {
                        continue;
                    }
                    match resumed(ctx, release, prev, next) {
                        Between::Resumed => {}
                        Between::NotResumed => report.violation(
                            RULE,
                            format!(
                                "{head} is beyond the engine's {MAX_ATTEMPTS} attempts, with no operator resume since \
                                 attempt {}",
                                attempt - 1
                            ),
                            records(),
                        ),
                        Between::Unknown(why) => report.cannot_check(
                            RULE,
                            format!(
                                "{head} is beyond the engine's {MAX_ATTEMPTS} attempts; whether an operator resumed \
                                 since attempt {} is unknown: {why}",
                                attempt - 1
                            ),
                            records(),
                        ),
                    }
                }
                _ => report.violation(
                    RULE,
                    format!("{head} started while attempt {} ({}) had not finished", attempt - 1, prev.command_id),
                    records(),
                ),
            }
        }
    }
}

enum Between {
    Resumed,
    NotResumed,
    Unknown(String),
}

/// Whether the release's events show an operator resume between the events that
/// dispatched `prev` and `next`.
fn resumed(ctx: &Ctx<'_>, release: &str, prev: &Exec<'_>, next: &Exec<'_>) -> Between {
    let Some(view) = ctx.releases.get(release) else {
        return Between::Unknown("the release is not in the history".to_owned());
    };
    if view.events.is_none() {
        return Between::Unknown("the release's events are not in the history".to_owned());
    }
    match (view.dispatched.get(prev.command_id), view.dispatched.get(next.command_id)) {
        (Some(a), Some(b)) if view.resumed_between(a.pos, b.pos) => Between::Resumed,
        (Some(_), Some(_)) => Between::NotResumed,
        (a, _) => {
            let missing = if a.is_none() { prev.command_id } else { next.command_id };
            Between::Unknown(format!("no event of the release dispatched {missing}"))
        }
    }
}
