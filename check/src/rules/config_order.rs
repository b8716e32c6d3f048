//! `config-order`: for a config dependency D of a service S, on each host that runs
//! both in a release, every deploy of D there finished before S's first deploy there
//! started (one host's history, so by line order).

use flotilla_proto::v1;

use crate::index::{Class, Ctx, Exec, edges};
use crate::report::{Report, Rule};

const RULE: Rule = Rule::ConfigOrder;

pub(crate) fn check(ctx: &Ctx<'_>, report: &mut Report) {
    report.declare(RULE, "config edges");
    report.declare(RULE, "config pairs on hosts");
    for view in ctx.releases.values() {
        let Some(plan) = view.plan() else {
            if ctx.execs_of(view.id).next().is_some() {
                report.cannot_check(
                    RULE,
                    format!(
                        "release {}: its plan is not in the history, so its config dependencies are unknown",
                        view.id
                    ),
                    vec![view.record()],
                );
            }
            continue;
        };
        for edge in edges(plan).into_iter().filter(|e| e.kind == v1::EdgeKind::Config) {
            report.count(RULE, "config edges", 1);
            for host in &ctx.hosts {
                let deploys = |service: &str| -> Vec<&Exec<'_>> {
                    host.execs
                        .iter()
                        .filter(|e| e.release_id == view.id && e.class == Class::Deploy && e.service == Some(service))
                        .collect()
                };
                let Some(first) = deploys(edge.dependent).into_iter().next() else { continue };
                let dependency = deploys(edge.dependency);
                if dependency.is_empty() {
                    continue;
                }
                report.count(RULE, "config pairs on hosts", 1);
                for d in dependency {
                    if d.end.is_some_and(|end| end.line < first.line) {
                        continue;
                    }
                    let when = match d.end {
                        Some(end) => format!("it finished at line {}", end.line),
                        None => "it never finished".to_owned(),
                    };
                    report.violation(
                        RULE,
                        format!(
                            "release {}: {} started before its config dependency's {} had finished ({when})",
                            view.id,
                            first.describe(),
                            d.describe()
                        ),
                        d.records().into_iter().chain([first.start_record()]).collect(),
                    );
                }
            }
        }
    }
}
