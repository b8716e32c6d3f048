//! `migration-once`: per release and service, at most one execution of the `migrate`
//! hook succeeded (over every host), and no migrate hook started after one had
//! succeeded (line order on one host, time with the skew tolerance across hosts). The
//! events agree: at most one MIGRATION_DONE per service, and no MIGRATION_STARTED
//! after it.

use std::collections::BTreeMap;

use flotilla_proto::v1;

use crate::index::{Class, Ctx, Exec, kind};
use crate::report::{Report, Rule};

const RULE: Rule = Rule::MigrationOnce;

pub(crate) fn check(ctx: &Ctx<'_>, report: &mut Report) {
    report.declare(RULE, "migrated services");
    report.declare(RULE, "migrate executions");
    report.declare(RULE, "migration events");
    let mut groups: BTreeMap<(&str, &str), Vec<&Exec<'_>>> = BTreeMap::new();
    for e in ctx.execs().filter(|e| e.class == Class::Migrate && !e.release_id.is_empty()) {
        if let Some(service) = e.service {
            groups.entry((e.release_id, service)).or_default().push(e);
        }
    }
    for ((release, service), list) in &groups {
        report.count(RULE, "migrated services", 1);
        report.count(RULE, "migrate executions", list.len());
        let succeeded: Vec<&Exec<'_>> = list.iter().copied().filter(|e| e.succeeded()).collect();
        if succeeded.len() > 1 {
            let which: Vec<String> = succeeded.iter().map(|e| e.describe()).collect();
            report.violation(
                RULE,
                format!(
                    "release {release}: the migrate hook of {service} succeeded {} times: {}",
                    succeeded.len(),
                    which.join(", ")
                ),
                succeeded.iter().map(|e| e.end_record()).collect(),
            );
        }
        for m in &succeeded {
            for x in list.iter().filter(|x| ctx.started_after(m, x)) {
                report.violation(
                    RULE,
                    format!("release {release}: {} started after {} had succeeded", x.describe(), m.describe()),
                    vec![m.end_record(), x.start_record()],
                );
            }
        }
    }

    use v1::EventKind as K;
    for view in ctx.releases.values() {
        let events = view.events();
        let mut per_service: BTreeMap<&str, (Vec<usize>, Vec<usize>)> = BTreeMap::new();
        for (pos, e) in events.iter().enumerate() {
            let Some(service) = e.services.first() else { continue };
            match kind(e) {
                K::MigrationStarted => per_service.entry(service).or_default().0.push(pos),
                K::MigrationDone => per_service.entry(service).or_default().1.push(pos),
                _ => continue,
            }
            report.count(RULE, "migration events", 1);
        }
        for (service, (started, done)) in &per_service {
            if done.len() > 1 {
                report.violation(
                    RULE,
                    format!("release {}: {} MIGRATION_DONE events for {service}", view.id, done.len()),
                    done.iter().map(|&p| view.event_record(p)).collect(),
                );
            }
            let Some(&first) = done.first() else { continue };
            for &s in started.iter().filter(|&&s| s > first) {
                report.violation(
                    RULE,
                    format!(
                        "release {}: {service}'s migration started again (event #{}) after it was done (event #{})",
                        view.id, events[s].index, events[first].index
                    ),
                    vec![view.event_record(first), view.event_record(s)],
                );
            }
        }
    }
}
