//! Releases as the wire shows them: a stored release and its run turned into
//! `flotilla.v1` messages (state, per-stage and per-service progress, approvals,
//! events), and a compacted release's summary likewise. Pure conversions.

use flotilla_proto::v1;
use flotilla_shared::analysis::{Change, MetricReport, Outcome as MetricOutcome, Verdict};
use flotilla_shared::plan::Plan;

use crate::engine::{self, ApprovalKind, Event, EventKind, GateState, HostState, Phase, Run, Status, Terminal};
use crate::state::{CompactedRelease, ReleaseRecord};

/// The wire state of a release.
pub fn release_state(run: &Run) -> v1::ReleaseState {
    status(run.status())
}

/// The wire state of a release that ended as `t`.
pub fn terminal_state(t: Terminal) -> v1::ReleaseState {
    status(match t {
        Terminal::Succeeded => Status::Succeeded,
        Terminal::RolledBack => Status::RolledBack,
        Terminal::Failed => Status::Failed,
        Terminal::Aborted => Status::Aborted,
    })
}

fn status(s: Status) -> v1::ReleaseState {
    match s {
        Status::Pending => v1::ReleaseState::Pending,
        Status::Running => v1::ReleaseState::Running,
        Status::AwaitingApproval => v1::ReleaseState::AwaitingApproval,
        Status::Paused => v1::ReleaseState::Paused,
        Status::RollingBack => v1::ReleaseState::RollingBack,
        Status::Succeeded => v1::ReleaseState::Succeeded,
        Status::RolledBack => v1::ReleaseState::RolledBack,
        Status::Failed => v1::ReleaseState::Failed,
        Status::Aborted => v1::ReleaseState::Aborted,
    }
}

/// Why the release is where it is, when that needs saying.
pub fn release_reason(run: &Run) -> String {
    if let Some(p) = &run.paused {
        return p.clone();
    }
    if let Some(a) = run.approvals.first() {
        return match a.kind {
            ApprovalKind::Gate => format!("gate {} waits for approval", a.name),
            ApprovalKind::Stage => format!("stage {} is done; the next stage waits for approval", a.name),
        };
    }
    if run.phase == Phase::Pending {
        return "submitted; waiting for the release engine".to_owned();
    }
    run.reason.clone()
}

fn service_state(s: engine::ServiceState) -> v1::ServiceState {
    use engine::ServiceState as S;
    match s {
        S::Waiting => v1::ServiceState::Waiting,
        S::Migrating => v1::ServiceState::Migrating,
        S::Deploying => v1::ServiceState::Deploying,
        S::Baking => v1::ServiceState::Baking,
        S::Done => v1::ServiceState::Done,
        S::Skipped => v1::ServiceState::Skipped,
        S::Failed => v1::ServiceState::Failed,
        S::RollingBack => v1::ServiceState::RollingBack,
        S::RolledBack => v1::ServiceState::RolledBack,
        S::Cancelled => v1::ServiceState::Cancelled,
    }
}

fn stage_state(s: engine::StageState) -> v1::StageState {
    use engine::StageState as S;
    match s {
        S::Running => v1::StageState::Running,
        S::AwaitingApproval => v1::StageState::AwaitingApproval,
        S::Done => v1::StageState::Done,
        S::Failed => v1::StageState::Failed,
        S::Cancelled => v1::StageState::Cancelled,
    }
}

fn gate_status(name: &str, g: &GateState) -> v1::GateStatus {
    let (state, reason) = match g {
        GateState::Pending => (v1::GateState::Pending, String::new()),
        GateState::Running(_) => (v1::GateState::Running, String::new()),
        GateState::AwaitingApproval => (v1::GateState::AwaitingApproval, String::new()),
        GateState::Passed => (v1::GateState::Passed, String::new()),
        GateState::Failed(why) => (v1::GateState::Failed, why.clone()),
        GateState::Cancelled => (v1::GateState::Cancelled, String::new()),
    };
    v1::GateStatus { gate: name.to_owned(), state: state as i32, reason }
}

/// Per-stage progress: started stages from the run; stages not started yet from the
/// plan, as pending (or cancelled once the release ended).
fn stages(run: &Run, plan: Option<&Plan>) -> Vec<v1::StageStatus> {
    let mut out = Vec::new();
    let order: Vec<String> = plan.map_or_else(Vec::new, |p| {
        p.graph().topological_order().iter().map(|&v| p.graph().name(v).to_string()).collect()
    });
    for (index, st) in run.stages.iter().enumerate() {
        let mut services: Vec<v1::ServiceStatus> = st
            .services
            .iter()
            .map(|(name, s)| {
                let mut from: Vec<String> = s.from.values().filter_map(Clone::clone).collect();
                from.sort();
                from.dedup();
                let count = |f: fn(&HostState) -> bool| {
                    u32::try_from(s.hosts.values().filter(|h| f(h)).count()).unwrap_or(u32::MAX)
                };
                let target = if s.version.is_empty() {
                    plan.and_then(|p| p.spec().service(name.as_str()))
                        .map(|x| x.version.to_string())
                        .unwrap_or_default()
                } else {
                    s.version.clone()
                };
                v1::ServiceStatus {
                    service: name.to_string(),
                    target_version: target,
                    from_versions: from,
                    state: service_state(s.state) as i32,
                    batch: u32::try_from(s.batch.min(s.batches.len().saturating_sub(1))).unwrap_or(0),
                    batches_total: u32::try_from(s.batches.len()).unwrap_or(u32::MAX),
                    hosts_total: u32::try_from(s.hosts.len()).unwrap_or(u32::MAX),
                    hosts_done: count(|h| matches!(h, HostState::Done)),
                    hosts_failed: count(|h| matches!(h, HostState::Failed(_))),
                    hosts_skipped: count(|h| matches!(h, HostState::Skipped)),
                    reason: s.reason.clone(),
                    started_unix_ms: s.started_unix_ms,
                    finished_unix_ms: s.finished_unix_ms,
                    progress_deadline_unix_ms: s.deadline_unix_ms,
                    excluded_hosts: s.excluded_hosts().map(ToString::to_string).collect(),
                    failed_hosts: s
                        .failed_hosts()
                        .map(|(h, why)| v1::FailedHost { host: h.to_string(), reason: why.to_owned() })
                        .collect(),
                }
            })
            .collect();
        services.sort_by_key(|s| order.iter().position(|o| *o == s.service).unwrap_or(usize::MAX));
        out.push(v1::StageStatus {
            index: u32::try_from(index).unwrap_or(u32::MAX),
            name: st.name.clone(),
            state: stage_state(st.state) as i32,
            services,
            gates: st.gates.iter().map(|(n, g)| gate_status(n, g)).collect(),
        });
    }
    if let Some(plan) = plan {
        for (index, st) in plan.stages().iter().enumerate().skip(run.stages.len()) {
            let state = if run.is_finished() || run.phase == Phase::RollingBack {
                v1::StageState::Cancelled
            } else {
                v1::StageState::Pending
            };
            out.push(v1::StageStatus {
                index: u32::try_from(index).unwrap_or(u32::MAX),
                name: st.name.clone(),
                state: state as i32,
                services: Vec::new(),
                gates: Vec::new(),
            });
        }
    }
    out
}

/// The full wire view of a release. `plan` adds stages not started yet.
pub fn release(r: &ReleaseRecord, plan: Option<&Plan>) -> v1::Release {
    let run = &r.run;
    v1::Release {
        id: r.submitted.id.clone(),
        name: r.submitted.name.clone(),
        state: release_state(run) as i32,
        reason: release_reason(run),
        spec_toml: r.submitted.spec_text.clone(),
        file_name: r.submitted.file_name.clone(),
        idempotency_key: r.submitted.idempotency_key.clone(),
        plan: None,
        stages: stages(run, plan),
        pending_approvals: run
            .approvals
            .iter()
            .map(|a| v1::PendingApproval {
                kind: match a.kind {
                    ApprovalKind::Gate => v1::ApprovalKind::Gate,
                    ApprovalKind::Stage => v1::ApprovalKind::Stage,
                } as i32,
                name: a.name.clone(),
                stage: run.stages.get(a.stage).map(|s| s.name.clone()).unwrap_or_default(),
                since_unix_ms: a.since_unix_ms,
                approvers: plan.map(|p| approvers(p, a.kind, &a.name)).unwrap_or_default(),
            })
            .collect(),
        approvals: run
            .events
            .iter()
            .filter(|e| e.kind == EventKind::Approved)
            .map(|e| v1::GivenApproval {
                kind: if e.gate.is_empty() { v1::ApprovalKind::Stage } else { v1::ApprovalKind::Gate } as i32,
                name: if e.gate.is_empty() { e.stage.clone() } else { e.gate.clone() },
                stage: e.stage.clone(),
                approved_by: e.actor.clone(),
                approved_unix_ms: e.at_unix_ms,
            })
            .collect(),
        created_unix_ms: r.created_unix_ms,
        updated_unix_ms: run.updated_unix_ms.max(r.created_unix_ms),
        finished_unix_ms: run.finished_unix_ms,
        last_event_index: run.last_event_index(),
        created_by: r.submitted.created_by.clone(),
        compacted: false,
        analyses: run.analyses.iter().map(|a| analysis(run, a)).collect(),
        notifications: Vec::new(),
    }
}

/// The wire view of a batch's canary analysis.
fn analysis(run: &Run, a: &engine::Analysis) -> v1::CanaryAnalysis {
    let report = a.report.as_ref();
    let count = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
    v1::CanaryAnalysis {
        stage: run.stages.get(a.stage).map(|s| s.name.clone()).unwrap_or_default(),
        service: a.service.to_string(),
        batch: a.batch_name.clone(),
        canary_hosts: a.canary.iter().map(ToString::to_string).collect(),
        baseline_hosts: a.baseline.iter().map(ToString::to_string).collect(),
        version: a.version.clone(),
        baseline_versions: a.baseline_versions.clone(),
        metrics: a.metrics.clone(),
        started_unix_ms: a.started_unix_ms,
        rounds: count(a.rounds.len()),
        complete_rounds: count(a.complete_rounds()),
        verdict: report.map_or(v1::AnalysisVerdict::Unspecified, |r| match r.verdict {
            Verdict::Pass => v1::AnalysisVerdict::Pass,
            Verdict::Marginal => v1::AnalysisVerdict::Marginal,
            Verdict::Fail => v1::AnalysisVerdict::Fail,
            Verdict::Inconclusive => v1::AnalysisVerdict::Inconclusive,
        }) as i32,
        score: report.map_or(0.0, |r| r.score),
        reason: report.map(|r| r.reason.clone()).unwrap_or_default(),
        results: report.map(|r| r.metrics.iter().map(metric_result).collect()).unwrap_or_default(),
        judged_unix_ms: a.judged_unix_ms,
        accepted_by: a.accepted_by.clone().unwrap_or_default(),
    }
}

/// The wire view of one metric's result.
fn metric_result(m: &MetricReport) -> v1::MetricResult {
    let test = m.test.as_ref();
    v1::MetricResult {
        name: m.name.clone(),
        outcome: match m.outcome {
            MetricOutcome::Pass => v1::MetricOutcome::Pass,
            MetricOutcome::Fail => v1::MetricOutcome::Fail,
            MetricOutcome::NoData => v1::MetricOutcome::NoData,
            MetricOutcome::QueryErrors => v1::MetricOutcome::QueryErrors,
        } as i32,
        change: match m.change {
            Change::None => v1::MetricChange::None,
            Change::Higher => v1::MetricChange::Higher,
            Change::Lower => v1::MetricChange::Lower,
        } as i32,
        critical: m.critical,
        critical_failure: m.critical_failure,
        weight: m.weight,
        canary_count: m.canary.count,
        canary_mean: m.canary.mean,
        canary_median: m.canary.median,
        baseline_count: m.baseline.count,
        baseline_mean: m.baseline.mean,
        baseline_median: m.baseline.median,
        tested: test.is_some(),
        u: test.map_or(0.0, |t| t.u),
        p_value: test.map_or(0.0, |t| t.p_value),
        shift: test.map_or(0.0, |t| t.shift),
        shift_low: test.map_or(0.0, |t| t.low),
        shift_high: test.map_or(0.0, |t| t.high),
        ratio: m.ratio,
        query_errors: m.query_errors,
        explanation: m.explanation.clone(),
    }
}

/// The wire view of a compacted release: its summary, with what each stage did to
/// each service as its stages.
pub fn compacted(c: &CompactedRelease) -> v1::Release {
    let mut stages: Vec<v1::StageStatus> = Vec::new();
    for s in &c.services {
        if stages.last().is_none_or(|st| st.name != s.stage) {
            stages.push(v1::StageStatus {
                index: u32::try_from(stages.len()).unwrap_or(u32::MAX),
                name: s.stage.clone(),
                state: v1::StageState::Unspecified as i32,
                services: Vec::new(),
                gates: Vec::new(),
            });
        }
        let stage = stages.last_mut().expect("pushed above");
        stage.services.push(v1::ServiceStatus {
            service: s.service.to_string(),
            target_version: s.version.clone(),
            from_versions: s.from_versions.clone(),
            state: service_state(s.state) as i32,
            hosts_total: s.hosts,
            hosts_done: s.hosts_done,
            hosts_failed: s.hosts_failed,
            ..v1::ServiceStatus::default()
        });
    }
    for stage in &mut stages {
        let all =
            |wanted: &[v1::ServiceState]| stage.services.iter().all(|s| wanted.iter().any(|w| *w as i32 == s.state));
        let state = if all(&[v1::ServiceState::Done, v1::ServiceState::Skipped]) {
            v1::StageState::Done
        } else if stage.services.iter().any(|s| s.state == v1::ServiceState::Failed as i32) {
            v1::StageState::Failed
        } else {
            v1::StageState::Cancelled
        };
        stage.state = state as i32;
    }
    v1::Release {
        id: c.id.clone(),
        name: c.name.clone(),
        state: terminal_state(c.outcome) as i32,
        reason: c.reason.clone(),
        file_name: c.file_name.clone(),
        stages,
        created_unix_ms: c.created_unix_ms,
        updated_unix_ms: c.finished_unix_ms.max(c.created_unix_ms),
        finished_unix_ms: c.finished_unix_ms,
        last_event_index: c.last_event_index,
        created_by: c.created_by.clone(),
        compacted: true,
        ..v1::Release::default()
    }
}

/// A compacted release in a list.
pub fn compacted_summary(c: &CompactedRelease) -> v1::ReleaseSummary {
    let mut services: Vec<&str> = c.services.iter().map(|s| s.service.as_str()).collect();
    services.sort_unstable();
    services.dedup();
    let done = c.services.iter().filter(|s| s.state == engine::ServiceState::Done).count();
    v1::ReleaseSummary {
        id: c.id.clone(),
        name: c.name.clone(),
        state: terminal_state(c.outcome) as i32,
        reason: c.reason.clone(),
        stage: c.services.last().map(|s| s.stage.clone()).unwrap_or_default(),
        services_total: u32::try_from(services.len()).unwrap_or(u32::MAX),
        services_done: u32::try_from(done.min(services.len())).unwrap_or(u32::MAX),
        created_unix_ms: c.created_unix_ms,
        updated_unix_ms: c.finished_unix_ms.max(c.created_unix_ms),
        finished_unix_ms: c.finished_unix_ms,
        compacted: true,
    }
}

/// Who may give the approval of gate or stage `name`, in words; empty when the spec
/// does not restrict it.
fn approvers(plan: &Plan, kind: ApprovalKind, name: &str) -> String {
    let rule = match kind {
        ApprovalKind::Gate => plan.spec().gates.iter().find(|g| *g.name == *name).map(|g| g.approval_by),
        ApprovalKind::Stage => plan.spec().stages.iter().find(|st| st.name == name).map(|st| st.approval_by),
    };
    rule.map(super::plan_view::approvers).unwrap_or_default()
}

/// A release in a list.
pub fn summary(r: &ReleaseRecord, services_total: usize) -> v1::ReleaseSummary {
    let run = &r.run;
    let last = run.stages.last();
    let done = last.map_or(0, |st| {
        let last_stage = run.stages.len();
        if run.phase == Phase::Finished(Terminal::Succeeded) || last_stage == 0 {
            st.services.len()
        } else {
            st.services.values().filter(|s| s.state.finished()).count()
        }
    });
    v1::ReleaseSummary {
        id: r.submitted.id.clone(),
        name: r.submitted.name.clone(),
        state: release_state(run) as i32,
        reason: release_reason(run),
        stage: last.map(|s| s.name.clone()).unwrap_or_default(),
        services_total: u32::try_from(services_total).unwrap_or(u32::MAX),
        services_done: u32::try_from(done).unwrap_or(u32::MAX),
        created_unix_ms: r.created_unix_ms,
        updated_unix_ms: run.updated_unix_ms.max(r.created_unix_ms),
        finished_unix_ms: run.finished_unix_ms,
        compacted: false,
    }
}

fn event_kind(k: EventKind) -> v1::EventKind {
    use v1::EventKind as W;
    match k {
        EventKind::ReleaseCreated => W::ReleaseCreated,
        EventKind::StageStarted => W::StageStarted,
        EventKind::StageDone => W::StageDone,
        EventKind::ServiceStarted => W::ServiceStarted,
        EventKind::MigrationStarted => W::MigrationStarted,
        EventKind::MigrationDone => W::MigrationDone,
        EventKind::BatchStarted => W::BatchStarted,
        EventKind::HostSucceeded => W::HostSucceeded,
        EventKind::HostFailed => W::HostFailed,
        EventKind::BakeStarted => W::BakeStarted,
        EventKind::BatchDone => W::BatchDone,
        EventKind::ServiceDone => W::ServiceDone,
        EventKind::ServiceFailed => W::ServiceFailed,
        EventKind::GateStarted => W::GateStarted,
        EventKind::GatePassed => W::GatePassed,
        EventKind::GateFailed => W::GateFailed,
        EventKind::ApprovalRequired => W::ApprovalRequired,
        EventKind::Approved => W::Approved,
        EventKind::Paused => W::Paused,
        EventKind::Resumed => W::Resumed,
        EventKind::RollbackStarted => W::RollbackStarted,
        EventKind::ServiceRollbackStarted => W::ServiceRollbackStarted,
        EventKind::ServiceRolledBack => W::ServiceRolledBack,
        EventKind::MigrateDownStarted => W::MigrateDownStarted,
        EventKind::MigrateDownDone => W::MigrateDownDone,
        EventKind::ServiceCancelled => W::ServiceCancelled,
        EventKind::HostLost => W::HostLost,
        EventKind::HostBack => W::HostBack,
        EventKind::LeaderChanged => W::LeaderChanged,
        EventKind::ReleaseSucceeded => W::ReleaseSucceeded,
        EventKind::ReleaseRolledBack => W::ReleaseRolledBack,
        EventKind::ReleaseFailed => W::ReleaseFailed,
        EventKind::ReleaseAborted => W::ReleaseAborted,
        EventKind::HostBaked => W::HostBaked,
        EventKind::Note => W::Note,
        EventKind::AnalysisStarted => W::AnalysisStarted,
        EventKind::AnalysisQueryFailed => W::AnalysisQueryFailed,
        EventKind::AnalysisPassed => W::AnalysisPassed,
        EventKind::AnalysisInconclusive => W::AnalysisInconclusive,
        EventKind::AnalysisFailed => W::AnalysisFailed,
        EventKind::HostRetried => W::HostRetried,
        EventKind::HostExcluded => W::HostExcluded,
        EventKind::WindowHeld => W::WindowHeld,
    }
}

/// One event on the wire.
pub fn event(release_id: &str, e: &Event) -> v1::ReleaseEvent {
    v1::ReleaseEvent {
        release_id: release_id.to_owned(),
        index: e.index,
        at_unix_ms: e.at_unix_ms,
        kind: event_kind(e.kind) as i32,
        message: e.message.clone(),
        release_state: status(e.status) as i32,
        stage: e.stage.clone(),
        services: e.services.iter().map(ToString::to_string).collect(),
        gate: e.gate.clone(),
        batch: e.batch.clone(),
        hosts: e.hosts.iter().map(ToString::to_string).collect(),
        command_ids: e.command_ids.iter().map(ToString::to_string).collect(),
        version: e.version.clone(),
        actor: e.actor.clone(),
        term: e.term,
    }
}
