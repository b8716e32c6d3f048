//! The English of a release's history, in one place: the message of every event the
//! run records, the reasons it writes into hosts, services and gates, and the small
//! helpers (`count`, `join_hosts`) facts and decisions phrase their sentences with.
//! Operators, tests and scripts read these sentences: change one only on purpose.
//! (The reasons of refusals stay beside the checks that refuse.)

use std::collections::BTreeMap;
use std::time::Duration;

use flotilla_shared::analysis::{Outcome as MetricOutcome, Report, Verdict};
use flotilla_shared::model::{HostId, ServiceName, format_duration};

use super::fact::{ApprovalKind, BatchSpec, MAX_ATTEMPTS, Outcome};

/// `n` and the noun, singular for one (`1 host`, `3 hosts`), as event messages say it.
pub(crate) fn count(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// `web-1, web-2` (at most 8 named, then a count).
pub fn join_hosts<'a>(hosts: impl Iterator<Item = &'a HostId>) -> String {
    let all: Vec<&str> = hosts.map(HostId::as_str).collect();
    if all.len() <= 8 { all.join(", ") } else { format!("{} and {} more", all[..8].join(", "), all.len() - 8) }
}

/// `: text`, or nothing for no text (an optional comment or reason).
fn suffix(text: &str) -> String {
    if text.is_empty() { String::new() } else { format!(": {text}") }
}

// Rolling forward: stages, services, batches, gates, approvals.

/// A stage started.
pub(crate) fn stage_started(name: &str) -> String {
    format!("stage {name} started")
}

/// A service with nothing to deploy in a stage (`skipped` of its hosts there are
/// already at `version`); also the service's reason.
pub(crate) fn service_skipped(service: &ServiceName, stage: &str, version: &str, skipped: usize) -> String {
    if skipped == 0 {
        format!("{service} has no hosts in stage {stage}")
    } else {
        let all = if skipped == 1 { "its only host" } else { "all its hosts" };
        format!("{service} skipped in stage {stage}: {all} already run {version}")
    }
}

/// A service started rolling out in a stage, in `batches`; `skipped` hosts are
/// already at `version`.
pub(crate) fn service_started(
    service: &ServiceName,
    version: &str,
    stage: &str,
    batches: &[BatchSpec],
    skipped: usize,
) -> String {
    let hosts: usize = batches.iter().map(|b| b.hosts.len()).sum();
    let names: Vec<&str> = batches.iter().map(|b| b.name.as_str()).collect();
    let mut msg = format!(
        "{service} {version} started in stage {stage}: {} in {} {}",
        count(hosts, "host", "hosts"),
        if names.len() == 1 { "batch" } else { "batches" },
        names.join(", ")
    );
    if skipped > 0 {
        msg.push_str(&format!("; {} already at {version} skipped", count(skipped, "host", "hosts")));
    }
    msg
}

/// A service's `migrate` hook was sent.
pub(crate) fn migration_started(service: &ServiceName, version: &str, host: &HostId) -> String {
    format!("{service} {version}: migrate hook sent to {host}")
}

/// Why a host offline when its batch started failed.
pub(crate) fn offline_host(host: &HostId) -> String {
    format!("host {host} was offline when its batch started")
}

/// A batch's deploys were sent to `sent`; the `offline` hosts count as failed.
pub(crate) fn batch_started<'a>(
    service: &ServiceName,
    version: &str,
    batch: &str,
    sent: impl Iterator<Item = &'a HostId>,
    offline: &[HostId],
) -> String {
    let mut msg = format!("{service} {version}: batch {batch} sent to {}", join_hosts(sent));
    if !offline.is_empty() {
        msg.push_str(&format!("; offline, counted as failed: {}", join_hosts(offline.iter())));
    }
    msg
}

/// A batch's healthy hosts bake for `duration_ms`.
pub(crate) fn bake_started(service: &ServiceName, version: &str, batch: &str, duration_ms: u64) -> String {
    format!(
        "{service} {version}: batch {batch} healthy, baking for {}",
        format_duration(Duration::from_millis(duration_ms))
    )
}

/// A batch is done; `done` of the service's `hosts` hosts in the stage are healthy.
pub(crate) fn batch_done(service: &ServiceName, version: &str, batch: &str, done: usize, hosts: usize) -> String {
    format!("{service} {version}: batch {batch} done ({done} of {} healthy)", count(hosts, "host", "hosts"))
}

/// A service is done in a stage, with `failed` hosts tolerated.
pub(crate) fn service_done(service: &ServiceName, version: &str, stage: &str, failed: usize) -> String {
    let mut msg = format!("{service} {version} done in stage {stage}");
    if failed > 0 {
        msg.push_str(&format!(" with {} failed (within max_failed)", count(failed, "host", "hosts")));
    }
    msg
}

/// A service failed in a stage.
pub(crate) fn service_failed(service: &ServiceName, stage: &str, reason: &str) -> String {
    format!("{service} failed in stage {stage}: {reason}")
}

/// A gate's check was sent.
pub(crate) fn gate_started(gate: &str, host: &HostId) -> String {
    format!("gate {gate}: check sent to {host}")
}

/// Why the services a failed gate runs after failed (and the failure's reason).
pub(crate) fn gate_failure(gate: &str, reason: &str) -> String {
    format!("gate {gate} failed: {reason}")
}

/// A gate passed; `reason` says what passing it meant, if anything.
pub(crate) fn gate_passed(gate: &str, stage: &str, reason: &str) -> String {
    format!("gate {gate} passed in stage {stage}{}", suffix(reason))
}

/// A gate failed.
pub(crate) fn gate_failed(gate: &str, stage: &str, reason: &str) -> String {
    format!("gate {gate} failed in stage {stage}: {reason}")
}

/// A gate, or the stage after a done stage, waits for a human.
pub(crate) fn approval_required(kind: ApprovalKind, name: &str, stage: &str) -> String {
    let what = match kind {
        ApprovalKind::Gate => format!("gate {name} in stage {stage}"),
        ApprovalKind::Stage => format!("stage {name} is done; the next stage"),
    };
    format!("{what} waits for approval (flotilla release approve)")
}

/// A stage is done.
pub(crate) fn stage_done(name: &str) -> String {
    format!("stage {name} done")
}

/// A stage is done and the next one waits for a human.
pub(crate) fn stage_awaits_approval(name: &str) -> String {
    format!("stage {name} is done; the next stage starts once approved (flotilla release approve)")
}

// Agents' reports.

/// How a step ended, for the sentences that say so.
#[derive(Debug, Clone, Copy)]
pub(crate) struct StepEnd<'a> {
    /// How it ended.
    pub outcome: Outcome,
    /// The agent's reason.
    pub reason: &'a str,
    /// How many times the step was sent (this one included).
    pub attempts: usize,
    /// Whether it is sent again.
    pub retry: bool,
}

impl StepEnd<'_> {
    /// `what` (what failed), then how the step ended; empty for a success.
    pub(crate) fn failed(&self, what: &str) -> String {
        let Self { outcome, reason, attempts, retry } = *self;
        match outcome {
            Outcome::Failed => format!("{what}: {reason}"),
            Outcome::Interrupted if retry => {
                format!("{what}: {reason}; trying again (attempt {} of {MAX_ATTEMPTS})", attempts + 1)
            }
            Outcome::Interrupted => format!("{what}: {reason} (after {attempts} attempts)"),
            Outcome::Cancelled => format!("{what}: cancelled"),
            Outcome::Refused => format!("{what}: refused by the agent ({reason})"),
            Outcome::Succeeded => String::new(),
        }
    }
}

/// Why a host whose deploy or bake did not succeed failed.
pub(crate) fn host_failure(baking: bool, end: &StepEnd<'_>) -> String {
    end.failed(if baking { "unhealthy during bake" } else { "deploy failed" })
}

/// A host stayed healthy through its bake.
pub(crate) fn host_baked(service: &ServiceName, version: &str, host: &HostId) -> String {
    format!("{service} {version} baked on {host}: healthy through the bake")
}

/// A host was deployed and is healthy.
pub(crate) fn host_deployed(service: &ServiceName, version: &str, host: &HostId) -> String {
    format!("{service} {version} deployed and healthy on {host}")
}

/// A host's deploy or bake did not succeed.
pub(crate) fn host_step_failed(
    service: &ServiceName,
    version: &str,
    host: &HostId,
    baking: bool,
    end: &StepEnd<'_>,
) -> String {
    let what = if baking {
        format!("{service} {version} unhealthy during bake on {host}")
    } else {
        format!("{service} {version} failed on {host}")
    };
    end.failed(&what)
}

/// A `migrate` hook succeeded.
pub(crate) fn migration_done(service: &ServiceName, host: &HostId) -> String {
    format!("{service}: migrate hook succeeded on {host}")
}

/// A `migrate` hook did not succeed.
pub(crate) fn migration_failed(service: &ServiceName, host: &HostId, end: &StepEnd<'_>) -> String {
    end.failed(&format!("{service}: migrate hook failed on {host}"))
}

/// A gate's check succeeded on a host.
pub(crate) fn check_succeeded(gate: &str, host: &HostId) -> String {
    format!("gate {gate}: check succeeded on {host}")
}

/// A gate's check did not succeed on a host.
pub(crate) fn check_failed(gate: &str, host: &HostId, end: &StepEnd<'_>) -> String {
    end.failed(&format!("gate {gate}: check failed on {host}"))
}

/// The version a rollback step takes a host back to (none: the service is stopped).
fn rollback_target(to: Option<&str>) -> &str {
    to.unwrap_or("none (stopped)")
}

/// A host went back to its previous version.
pub(crate) fn host_rolled_back(service: &ServiceName, to: Option<&str>, host: &HostId) -> String {
    format!("{service} back at {} on {host}", rollback_target(to))
}

/// A host's rollback did not succeed.
pub(crate) fn host_rollback_failed(
    service: &ServiceName,
    to: Option<&str>,
    host: &HostId,
    end: &StepEnd<'_>,
) -> String {
    end.failed(&format!("{service}: rollback to {} failed on {host}", rollback_target(to)))
}

/// A `migrate_down` hook succeeded on a host.
pub(crate) fn migrate_down_succeeded_on(service: &ServiceName, host: &HostId) -> String {
    format!("{service}: migrate_down succeeded on {host}")
}

/// A `migrate_down` hook did not succeed on a host.
pub(crate) fn migrate_down_failed_on(service: &ServiceName, host: &HostId, end: &StepEnd<'_>) -> String {
    end.failed(&format!("{service}: migrate_down failed on {host}"))
}

// Rollbacks.

/// A rollback was decided: `members` go back in order, `cancelled` never started.
pub(crate) fn rollback_decided(
    actor: &str,
    reason: &str,
    members: &[(ServiceName, String)],
    cancelled: &[ServiceName],
) -> String {
    let order: Vec<&str> = members.iter().map(|(s, _)| s.as_str()).collect();
    let mut msg = if order.is_empty() {
        format!("rollback decided by {actor}: {reason}; no service had started")
    } else {
        format!("rollback decided by {actor}: {reason}; rolling back {}", order.join(", "))
    };
    if !cancelled.is_empty() {
        let c: Vec<&str> = cancelled.iter().map(ServiceName::as_str).collect();
        msg.push_str(&format!("; not started, cancelled: {}", c.join(", ")));
    }
    msg
}

/// A batch of a service's rollback was sent.
pub(crate) fn service_rollback_started<'a>(service: &ServiceName, hosts: impl Iterator<Item = &'a HostId>) -> String {
    format!("{service}: rolling back on {}", join_hosts(hosts))
}

/// A service's `migrate_down` was sent.
pub(crate) fn migrate_down_started<'a>(service: &ServiceName, hosts: impl Iterator<Item = &'a HostId>) -> String {
    format!("{service}: migrate_down sent to {}", join_hosts(hosts))
}

/// A service is back at the versions its hosts ran before (`none`: not installed).
pub(crate) fn service_rolled_back(service: &ServiceName, previous: &BTreeMap<HostId, Option<String>>) -> String {
    let mut versions: Vec<String> = previous.values().map(|v| v.clone().unwrap_or_else(|| "none".to_owned())).collect();
    versions.sort();
    versions.dedup();
    format!("{service} is back at {}", versions.join(", "))
}

/// A service's `migrate_down` is done.
pub(crate) fn migrate_down_done(service: &ServiceName) -> String {
    format!("{service}: migrate_down succeeded")
}

/// A rollback that paused for a human goes on.
pub(crate) fn rollback_past_pause(service: &ServiceName, why: &str) -> String {
    format!("rollback goes on past {service} ({why}): an operator resumed")
}

// Operators.

/// The release paused.
pub(crate) fn paused(actor: &str, reason: &str) -> String {
    format!("paused by {actor}: {reason}")
}

/// An operator resumed the release.
pub(crate) fn resumed(actor: &str, reason: &str) -> String {
    format!("resumed by {actor}{}", suffix(reason))
}

/// An operator had a failed host tried again in its failed services; the release goes
/// on.
pub(crate) fn host_retried(host: &HostId, services: &[ServiceName], stage: &str, actor: &str, reason: &str) -> String {
    let names: Vec<&str> = services.iter().map(ServiceName::as_str).collect();
    format!(
        "{host} retried by {actor}{}: {} deploy it again in stage {stage}; the release goes on",
        suffix(reason),
        names.join(", ")
    )
}

/// Why a host is excluded: who excluded it, and their reason (the host's state's text).
pub(crate) fn exclusion(actor: &str, reason: &str) -> String {
    format!("excluded by {actor}{}", suffix(reason))
}

/// An operator excluded a failed host from the rest of the release; the release goes
/// on without it.
pub(crate) fn host_excluded(host: &HostId, services: &[ServiceName], stage: &str, why: &str) -> String {
    let names: Vec<&str> = services.iter().map(ServiceName::as_str).collect();
    format!(
        "{host} {why}: the rest of the release goes on without it ({} in stage {stage}; counted against \
         max_failed)",
        names.join(", ")
    )
}

/// An operator aborted the release (also the release's reason).
pub(crate) fn aborted(actor: &str, reason: &str) -> String {
    format!("aborted by {actor}{}", suffix(reason))
}

/// A human approved a gate or a stage.
pub(crate) fn approved(kind: ApprovalKind, name: &str, actor: &str, comment: &str) -> String {
    format!("{kind} {name} approved by {actor}{}", suffix(comment))
}

/// An operator's note: its text as written.
pub(crate) fn note(text: &str) -> String {
    text.to_owned()
}

// The release's end and its leaders.

/// Why a service that was running when the release ended is cancelled.
pub(crate) fn stopped_part_way(reason: &str) -> String {
    format!("stopped part way: {reason}")
}

/// A new leader took the release over, sending again `resent` steps.
pub(crate) fn leader_changed(node: u64, resent: usize) -> String {
    match resent {
        0 => format!("coordinator {node} leads now and took the release over; no step was waiting for a result"),
        n => format!(
            "coordinator {node} leads now and took the release over; {} without a result {} sent again \
             (now, or when the host's agent connects to it)",
            count(n, "step", "steps"),
            if n == 1 { "is" } else { "are" }
        ),
    }
}

// Canary analysis.

/// A batch's analysis started.
pub(crate) fn analysis_started(
    service: &ServiceName,
    batch: &str,
    metrics: &[String],
    interval_ms: u64,
    canary: usize,
    baseline: usize,
    baseline_versions: &[String],
) -> String {
    let mut msg = format!(
        "{service} {batch} analysis started: {} ({}) every {}, {} vs ",
        count(metrics.len(), "metric", "metrics"),
        metrics.join(", "),
        format_duration(Duration::from_millis(interval_ms)),
        count(canary, "canary host", "canary hosts"),
    );
    if baseline == 0 {
        msg.push_str("no baseline (no host of the stage is left on the old version; thresholds only)");
    } else {
        msg.push_str(&format!(
            "{} on {}",
            count(baseline, "baseline host", "baseline hosts"),
            baseline_versions.join(", ")
        ));
    }
    msg
}

/// Queries of an analysis round failed: `errors` is (metric, why) of each.
pub(crate) fn analysis_query_failed(service: &ServiceName, batch: &str, errors: &[(&str, &str)]) -> String {
    let (metric, why) = errors.first().copied().unwrap_or_default();
    let mut msg = format!("{service} {batch} analysis: query of {metric} failed: {why}");
    if errors.len() > 1 {
        msg.push_str(&format!(" (and {} more)", count(errors.len() - 1, "metric", "metrics")));
    }
    msg
}

/// A batch's analysis was judged: the verdict and score, then the metrics that did not
/// pass, each explained.
pub(crate) fn analysis_judged(service: &ServiceName, batch: &str, report: &Report) -> String {
    let mut msg = format!("{service} {batch} {}", report.reason);
    let explained: Vec<&str> =
        report.metrics.iter().filter(|m| m.outcome != MetricOutcome::Pass).map(|m| m.explanation.as_str()).collect();
    if !explained.is_empty() {
        msg.push_str(": ");
        msg.push_str(&explained.join("; "));
    }
    msg
}

/// Why a service failed its batch's analysis (the service's reason).
pub(crate) fn analysis_failure(batch: &str, report: &Report) -> String {
    let failed: Vec<&str> =
        report.metrics.iter().filter(|m| m.outcome == MetricOutcome::Fail).map(|m| m.explanation.as_str()).collect();
    let mut msg = format!("{batch} {}", report.reason);
    if !failed.is_empty() {
        msg.push_str(": ");
        msg.push_str(&failed.join("; "));
    }
    msg
}

/// Why the engine paused for a marginal or inconclusive analysis.
pub(crate) fn analysis_pause(service: &ServiceName, batch: &str, report: &Report) -> String {
    let verdict = if report.verdict == Verdict::Marginal { "marginal" } else { "inconclusive" };
    format!(
        "{}; the {verdict} analysis needs a human: resume to accept the batch and go on, or roll back, or abort",
        analysis_judged(service, batch, report)
    )
}

/// Analyses an operator resumed past: accepted when marginal or inconclusive, run
/// again (with the retried service) when failed.
pub(crate) fn analyses_accepted(which: &[String]) -> String {
    format!("resumes past the analysis of {}", which.join(", "))
}

/// Deployment windows hold a service's next batch.
pub(crate) fn window_held(service: &ServiceName, batch: &str, stage: &str, reason: &str) -> String {
    format!("{service} batch {batch} in stage {stage} waits: {reason}")
}
