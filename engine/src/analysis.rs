//! Canary analysis in the engine: what a batch's analysis records (the hosts on each
//! side, every round of samples, the verdict), what the leader must query next, and
//! when the samples are judged.
//!
//! The engine does no I/O: [`crate::decide`] asks for a round of queries
//! ([`SampleRequest`], rendered from the spec's PromQL templates), the leader's driver
//! runs them against Prometheus and commits what came back as
//! [`crate::Fact::AnalysisSampled`], and a later decision judges the committed samples
//! with [`flotilla_shared::analysis::judge`] and commits the report as
//! [`crate::Fact::AnalysisJudged`]. A new leader therefore continues an analysis from
//! its committed rounds, and replaying the log gives the same verdict.
//!
//! A batch's analysis compares the hosts that run the new version (every batch of the
//! service in the stage so far: the canary) with the hosts of the same stage still
//! running the version it replaces (the baseline), which serve the same traffic at the
//! same time. When no host of the stage is left on the old version (a stage with one
//! host of the service, or its last batch), the baseline is the hosts later stages will
//! deploy to, still on the old version. When there is none either (the last batch of
//! the last stage), comparisons have no baseline: only threshold metrics are judged,
//! and a service without any has no analysis at that batch.

use flotilla_shared::analysis::{Check, Criteria, Outcome, Report, Samples, Verdict, judge, query};
use flotilla_shared::model::{HostId, ServiceName};
use flotilla_shared::spec::{AnalysisPolicy, ServiceSpec};
use serde::{Deserialize, Serialize};

/// What one metric's queries returned in one round.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    /// The metric's name.
    pub metric: String,
    /// The values of the canary's query (one per series; none: no data).
    pub canary: Vec<f64>,
    /// The values of the baseline's query (empty for a threshold metric).
    pub baseline: Vec<f64>,
    /// Why a query failed, when one did (its values then are empty).
    pub error: Option<String>,
}

/// One round of queries, taken at the time stamped into its fact.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Round {
    /// When it was committed (the leader's clock).
    pub at_unix_ms: i64,
    /// Per metric of the analysis.
    pub samples: Vec<Sample>,
}

impl Round {
    /// Whether every query of the round answered.
    pub fn complete(&self) -> bool {
        self.samples.iter().all(|s| s.error.is_none())
    }
}

/// The analysis of one batch of one service in one stage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Analysis {
    /// The stage.
    pub stage: usize,
    /// The service.
    pub service: ServiceName,
    /// The batch's position.
    pub batch: usize,
    /// The batch's name (`canary`, `25%`...).
    pub batch_name: String,
    /// The metrics judged at this batch, by name.
    pub metrics: Vec<String>,
    /// Hosts running the new version.
    pub canary: Vec<HostId>,
    /// Hosts of the stage still running the version it replaces.
    pub baseline: Vec<HostId>,
    /// The new version.
    pub version: String,
    /// The versions the baseline runs.
    pub baseline_versions: Vec<String>,
    /// Time between rounds, in ms.
    pub interval_ms: u64,
    /// When it started.
    pub started_unix_ms: i64,
    /// Every round taken, in order.
    pub rounds: Vec<Round>,
    /// The verdict, once judged.
    pub report: Option<Report>,
    /// When it was judged; 0 before.
    pub judged_unix_ms: i64,
    /// Who resumed the release past a marginal or inconclusive verdict (accepting it).
    pub accepted_by: Option<String>,
}

// Samples are finite (the driver drops NaN and infinities before committing them), so
// equality is an equivalence on every analysis the engine holds.
impl Eq for Analysis {}

impl Analysis {
    /// When the next round is due: one interval after the last (or after the start).
    pub fn next_round_at(&self) -> i64 {
        let interval = i64::try_from(self.interval_ms).unwrap_or(i64::MAX);
        let last = self.rounds.last().map_or(self.started_unix_ms, |r| r.at_unix_ms);
        last.saturating_add(interval)
    }

    /// Rounds in which every query answered.
    pub fn complete_rounds(&self) -> usize {
        self.rounds.iter().filter(|r| r.complete()).count()
    }

    /// Judges the rounds taken at or after `since` (the lookback) against the spec's
    /// criteria and settings.
    pub fn judge(&self, spec: &ServiceSpec, since: i64) -> Report {
        let policy = &spec.policy;
        let rounds: Vec<&Round> = self.rounds.iter().filter(|r| r.at_unix_ms >= since).collect();
        let mut columns: Vec<(&Criteria, Vec<f64>, Vec<f64>, u32)> = Vec::new();
        for name in &self.metrics {
            let Some(metric) = policy.metrics.iter().find(|m| &m.criteria.name == name) else { continue };
            let (mut canary, mut baseline, mut errors) = (Vec::new(), Vec::new(), 0u32);
            for sample in rounds.iter().flat_map(|r| r.samples.iter().filter(|s| &s.metric == name)) {
                if sample.error.is_some() {
                    errors = errors.saturating_add(1);
                }
                canary.extend_from_slice(&sample.canary);
                baseline.extend_from_slice(&sample.baseline);
            }
            columns.push((&metric.criteria, canary, baseline, errors));
        }
        let inputs: Vec<(Criteria, Samples<'_>)> = columns
            .iter()
            .map(|(criteria, canary, baseline, errors)| {
                ((*criteria).clone(), Samples { canary, baseline, query_errors: *errors })
            })
            .collect();
        judge(&policy.analysis.settings, &inputs)
    }
}

/// The queries of one round of a batch's analysis, for the leader to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SampleRequest {
    /// The stage.
    pub stage: usize,
    /// The service.
    pub service: ServiceName,
    /// The batch's position.
    pub batch: usize,
    /// The round to take (the number of rounds taken so far): committing a round
    /// twice is refused.
    pub round: usize,
    /// Per metric.
    pub queries: Vec<MetricQuery>,
}

/// One metric's rendered queries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricQuery {
    /// The metric's name.
    pub metric: String,
    /// The PromQL for the canary.
    pub canary: String,
    /// The PromQL for the baseline (`None`: a threshold metric).
    pub baseline: Option<String>,
}

/// The sides and metrics of a batch's analysis, as [`crate::Fact::AnalysisStarted`]
/// carries them; `None` when nothing can be judged at this batch (no metric, or no
/// baseline and no threshold metric).
pub(crate) struct Sides {
    pub(crate) metrics: Vec<String>,
    pub(crate) canary: Vec<HostId>,
    pub(crate) baseline: Vec<HostId>,
    pub(crate) baseline_versions: Vec<String>,
}

/// The metrics a batch's analysis judges, given whether it has a baseline.
pub(crate) fn sides(spec: &ServiceSpec, canary: Vec<HostId>, baseline: Vec<(HostId, String)>) -> Option<Sides> {
    if !spec.policy.analyses() || canary.is_empty() {
        return None;
    }
    let has_baseline = !baseline.is_empty();
    let metrics: Vec<String> = spec
        .policy
        .metrics
        .iter()
        .filter(|m| has_baseline || matches!(m.criteria.check, Check::Threshold { .. }))
        .map(|m| m.criteria.name.clone())
        .collect();
    if metrics.is_empty() {
        return None;
    }
    let mut baseline_versions: Vec<String> = baseline.iter().map(|(_, v)| v.clone()).collect();
    baseline_versions.sort();
    baseline_versions.dedup();
    Some(Sides { metrics, canary, baseline: baseline.into_iter().map(|(h, _)| h).collect(), baseline_versions })
}

/// The queries of the next round of `analysis`.
pub(crate) fn request(spec: &ServiceSpec, analysis: &Analysis) -> SampleRequest {
    let hosts = |hosts: &[HostId]| hosts.iter().map(|h| h.as_str().to_owned()).collect::<Vec<String>>();
    let (canary_hosts, baseline_hosts) = (hosts(&analysis.canary), hosts(&analysis.baseline));
    let canary_versions = vec![analysis.version.clone()];
    let interval = std::time::Duration::from_millis(analysis.interval_ms);
    let side = |versions, hosts| query::Side { service: spec.name.as_str(), versions, hosts, interval };
    let queries = analysis
        .metrics
        .iter()
        .filter_map(|name| spec.policy.metrics.iter().find(|m| &m.criteria.name == name))
        .map(|m| MetricQuery {
            metric: m.criteria.name.clone(),
            canary: query::render(&m.query, &side(&canary_versions, &canary_hosts)),
            baseline: match m.criteria.check {
                Check::Compare { .. } => {
                    Some(query::render(&m.query, &side(&analysis.baseline_versions, &baseline_hosts)))
                }
                Check::Threshold { .. } => None,
            },
        })
        .collect();
    SampleRequest {
        stage: analysis.stage,
        service: analysis.service.clone(),
        batch: analysis.batch,
        round: analysis.rounds.len(),
        queries,
    }
}

/// What a batch's analysis needs next.
pub(crate) enum Next {
    /// Judge now, with this report.
    Judge(Report),
    /// Take a round now.
    Sample(SampleRequest),
    /// Nothing until then.
    WaitUntil(i64),
}

/// What comes next for an analysis not yet judged, at `now`, with the bake over or not.
///
/// Judged at once when a critical metric fails or a metric's queries fail beyond the
/// limit (waiting would change neither); otherwise once the bake is over and `samples`
/// rounds in which every query answered are in. A metric still short of samples then
/// (a new process not scraped yet, a sparse series) gets up to twice as many rounds
/// before it is judged as having no data.
pub(crate) fn next(spec: &ServiceSpec, analysis: &Analysis, now: i64, bake_over: bool) -> Next {
    let policy: &AnalysisPolicy = &spec.policy.analysis;
    let since =
        policy.lookback.map_or(i64::MIN, |l| now.saturating_sub(i64::try_from(l.as_millis()).unwrap_or(i64::MAX)));
    if !analysis.rounds.is_empty() {
        let report = analysis.judge(spec, since);
        let early = report.verdict == Verdict::Fail && report.metrics.iter().any(|m| m.critical_failure)
            || report.metrics.iter().any(|m| m.outcome == Outcome::QueryErrors);
        let needed = policy.settings.samples as usize;
        let complete = analysis.complete_rounds();
        let settled =
            complete >= needed.saturating_mul(2) || report.metrics.iter().all(|m| m.outcome != Outcome::NoData);
        if early || (bake_over && complete >= needed && settled) {
            return Next::Judge(report);
        }
    }
    let due = analysis.next_round_at();
    if now >= due { Next::Sample(request(spec, analysis)) } else { Next::WaitUntil(due) }
}
