//! The rules, one module each. Every rule declares its counters first (so a report
//! shows what a rule looks at even when the history has none of it), then counts what
//! it examines and records its findings.

mod at_most_once;
mod config_order;
mod dependency_order;
mod final_versions;
mod migration_once;
mod no_lost_write;
mod no_overlap;
mod rollback;
mod term_fencing;

use crate::index::Ctx;
use crate::report::Report;

/// How many times the engine sends a deploy, a migration or a gate check to one host
/// when the agent reports it interrupted (the coordinator's `MAX_ATTEMPTS`); a further
/// attempt needs an operator's resume.
pub(crate) const MAX_ATTEMPTS: usize = 3;

/// Runs every rule.
pub(crate) fn run(ctx: &Ctx<'_>, report: &mut Report) {
    at_most_once::check(ctx, report);
    no_overlap::check(ctx, report);
    dependency_order::check(ctx, report);
    config_order::check(ctx, report);
    migration_once::check(ctx, report);
    rollback::check(ctx, report);
    term_fencing::check(ctx, report);
    final_versions::check(ctx, report);
    no_lost_write::check(ctx, report);
}
