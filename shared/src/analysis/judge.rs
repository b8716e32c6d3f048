//! The canary judgement: every metric's samples are judged against its [`Criteria`],
//! and the metrics' outcomes are combined into one [`Verdict`] with a score and a reason.
//! The rules are set out in the [module documentation](super).

use serde::{Deserialize, Serialize};

use super::format::{num, signed, statistic};
use super::stats::{self, MannWhitney};

/// Which change of a metric is bad.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// A higher canary is bad (error ratio, latency).
    Increase,
    /// A lower canary is bad (throughput, success ratio).
    Decrease,
    /// Any significant change is bad.
    Either,
}

impl Direction {
    /// Whether `change` goes the bad way.
    pub fn is_bad(self, change: Change) -> bool {
        matches!(
            (self, change),
            (Direction::Increase | Direction::Either, Change::Higher)
                | (Direction::Decrease | Direction::Either, Change::Lower)
        )
    }
}

/// How a metric is judged.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Check {
    /// Canary against baseline with Mann-Whitney: the change is significant when the
    /// confidence interval of the shift excludes 0.
    Compare {
        /// Which change is bad.
        direction: Direction,
        /// A factor ≥ 1: a significant change in the bad direction still passes while the
        /// canary mean is at most the baseline mean × factor (increase) or at least the
        /// baseline mean ÷ factor (decrease). For a negative baseline mean the allowance
        /// is taken on its magnitude. Not finite or below 1: ignored.
        #[serde(default)]
        allowed_change: Option<f64>,
        /// A factor (> 1 to be useful): a significant change in the bad direction beyond
        /// it (measured like `allowed_change`) fails the whole judgement, critical metric
        /// or not (Kayenta's criticalIncrease/criticalDecrease). Not finite or below 1:
        /// ignored.
        #[serde(default)]
        critical_change: Option<f64>,
    },
    /// No baseline: the canary's mean must stay within these bounds (a bound that is NaN
    /// is ignored).
    Threshold {
        /// The canary mean fails above this.
        #[serde(default)]
        max: Option<f64>,
        /// The canary mean fails below this.
        #[serde(default)]
        min: Option<f64>,
    },
}

/// One metric's judging rules.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Criteria {
    /// The metric's name, as it appears in explanations.
    pub name: String,
    /// How it is judged.
    pub check: Check,
    /// A critical metric that fails fails the whole judgement, whatever the score.
    #[serde(default)]
    pub critical: bool,
    /// Without enough data the judgement is inconclusive; otherwise a metric without data
    /// is left out of the score.
    #[serde(default)]
    pub must_have_data: bool,
    /// Its weight in the score (default 1; 0 judges it without scoring it).
    #[serde(default = "default_weight")]
    pub weight: u32,
}

/// The default [`Criteria::weight`].
fn default_weight() -> u32 {
    1
}

impl Criteria {
    /// A [`Check::Compare`] metric in `direction`, weight 1, neither critical nor required.
    pub fn compare(name: impl Into<String>, direction: Direction) -> Criteria {
        Criteria::new(name, Check::Compare { direction, allowed_change: None, critical_change: None })
    }

    /// A [`Check::Threshold`] metric with these bounds, weight 1, neither critical nor
    /// required.
    pub fn threshold(name: impl Into<String>, min: Option<f64>, max: Option<f64>) -> Criteria {
        Criteria::new(name, Check::Threshold { max, min })
    }

    /// Criteria with `check`, weight 1, neither critical nor required.
    pub fn new(name: impl Into<String>, check: Check) -> Criteria {
        Criteria { name: name.into(), check, critical: false, must_have_data: false, weight: 1 }
    }

    /// Marks the metric critical.
    #[must_use]
    pub fn mark_critical(mut self) -> Criteria {
        self.critical = true;
        self
    }

    /// Makes data for the metric required.
    #[must_use]
    pub fn require_data(mut self) -> Criteria {
        self.must_have_data = true;
        self
    }

    /// Sets the metric's weight in the score.
    #[must_use]
    pub fn with_weight(mut self, weight: u32) -> Criteria {
        self.weight = weight;
        self
    }

    /// Sets a [`Check::Compare`]'s `allowed_change` (no effect on a threshold).
    #[must_use]
    pub fn with_allowed_change(mut self, factor: f64) -> Criteria {
        if let Check::Compare { allowed_change, .. } = &mut self.check {
            *allowed_change = Some(factor);
        }
        self
    }

    /// Sets a [`Check::Compare`]'s `critical_change` (no effect on a threshold).
    #[must_use]
    pub fn with_critical_change(mut self, factor: f64) -> Criteria {
        if let Check::Compare { critical_change, .. } = &mut self.check {
            *critical_change = Some(factor);
        }
        self
    }
}

/// Settings of a judgement.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Settings {
    /// Confidence level of the shift's interval, in `(0, 1)`; default 0.98.
    pub confidence: f64,
    /// A score at least this passes; default 95.
    pub pass_score: f64,
    /// A score at least this (and below `pass_score`) is marginal; default 75.
    pub marginal_score: f64,
    /// Values needed on each side a check uses, after cleaning; default 5 (0 counts as 1).
    pub samples: u32,
    /// More query errors than this make a metric inconclusive; default 2.
    pub query_error_limit: u32,
    /// Tukey factor for dropping outliers (see [`stats::remove_outliers`]); `None`, the
    /// default, keeps every sample.
    pub outliers: Option<f64>,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            confidence: 0.98,
            pass_score: 95.0,
            marginal_score: 75.0,
            samples: 5,
            query_error_limit: 2,
            outliers: None,
        }
    }
}

/// Why [`Settings`] cannot be used.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SettingsError {
    /// `confidence` is not strictly between 0 and 1.
    #[error("confidence {0} is not strictly between 0 and 1")]
    Confidence(f64),
    /// A score bound is not a finite number.
    #[error("{name} {value} is not a finite number")]
    Score {
        /// Which bound.
        name: &'static str,
        /// Its value.
        value: f64,
    },
    /// The outlier factor is negative or not finite.
    #[error("outlier factor {0} is not a finite number at least 0")]
    Outliers(f64),
}

impl Settings {
    /// Checks the settings; [`judge`] reports invalid ones as an inconclusive judgement.
    pub fn validate(&self) -> Result<(), SettingsError> {
        if !stats::valid_confidence(self.confidence) {
            return Err(SettingsError::Confidence(self.confidence));
        }
        for (name, value) in [("pass_score", self.pass_score), ("marginal_score", self.marginal_score)] {
            if !value.is_finite() {
                return Err(SettingsError::Score { name, value });
            }
        }
        match self.outliers {
            Some(f) if !(f.is_finite() && f >= 0.0) => Err(SettingsError::Outliers(f)),
            _ => Ok(()),
        }
    }
}

/// One metric's samples for a judgement.
#[derive(Debug, Clone, Copy, Default)]
pub struct Samples<'a> {
    /// Values from the canary hosts.
    pub canary: &'a [f64],
    /// Values from the baseline hosts (unused by a threshold).
    pub baseline: &'a [f64],
    /// How many queries for the metric failed.
    pub query_errors: u32,
}

impl<'a> Samples<'a> {
    /// Canary and baseline values, no query errors.
    pub fn new(canary: &'a [f64], baseline: &'a [f64]) -> Samples<'a> {
        Samples { canary, baseline, query_errors: 0 }
    }

    /// Canary values only (for a threshold).
    pub fn canary_only(canary: &'a [f64]) -> Samples<'a> {
        Samples { canary, baseline: &[], query_errors: 0 }
    }

    /// The same samples with `errors` query errors.
    #[must_use]
    pub fn with_query_errors(mut self, errors: u32) -> Samples<'a> {
        self.query_errors = errors;
        self
    }
}

/// The judgement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Score at least `pass_score`, no critical failure, nothing inconclusive.
    Pass,
    /// Score in `[marginal_score, pass_score)`.
    Marginal,
    /// A critical failure, or a score below `marginal_score`.
    Fail,
    /// Query errors, required data missing, nothing judged, or invalid settings.
    Inconclusive,
}

/// One metric's outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Judged and fine.
    Pass,
    /// Judged and bad.
    Fail,
    /// Too few values on a side the check needs.
    NoData,
    /// More query errors than the limit.
    QueryErrors,
}

/// What the test found, whatever the direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Change {
    /// No significant change (or not judged).
    None,
    /// The canary is significantly higher (a threshold: above its max).
    Higher,
    /// The canary is significantly lower (a threshold: below its min).
    Lower,
}

/// Summary of one side's samples, after dropping non-finite values and outliers.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// Values kept.
    pub count: u32,
    /// Their mean; 0 when there are none.
    pub mean: f64,
    /// Their median; 0 when there are none.
    pub median: f64,
    /// Non-finite values dropped.
    pub non_finite: u32,
    /// Outliers dropped.
    pub outliers: u32,
}

/// One metric's part of the judgement.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricReport {
    /// The metric's name.
    pub name: String,
    /// Its outcome.
    pub outcome: Outcome,
    /// What the test found.
    pub change: Change,
    /// Whether the metric is flagged critical.
    pub critical: bool,
    /// Whether data was required for it.
    pub must_have_data: bool,
    /// Whether this metric alone fails the judgement.
    pub critical_failure: bool,
    /// Its weight in the score.
    pub weight: u32,
    /// The canary side.
    pub canary: Summary,
    /// The baseline side.
    pub baseline: Summary,
    /// The Mann-Whitney test, for a judged comparison.
    pub test: Option<MannWhitney>,
    /// Canary mean ÷ baseline mean; `None` when undefined (no data, a zero baseline mean,
    /// or a result that is not finite).
    pub ratio: Option<f64>,
    /// Query errors reported for it.
    pub query_errors: u32,
    /// One line saying what was found and why.
    pub explanation: String,
}

/// The judgement of all metrics.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// The judgement.
    pub verdict: Verdict,
    /// `100 × passed weight ÷ judged weight`; 0 when nothing with weight was judged.
    pub score: f64,
    /// Each metric, in the order given.
    pub metrics: Vec<MetricReport>,
    /// One sentence: the verdict, the score and the metrics that failed or were missing.
    pub reason: String,
}

/// Judges `metrics` under `settings`. Deterministic, and never panics whatever the
/// samples hold (see the [module documentation](super) for the rules).
pub fn judge(settings: &Settings, metrics: &[(Criteria, Samples<'_>)]) -> Report {
    if let Err(e) = settings.validate() {
        return Report {
            verdict: Verdict::Inconclusive,
            score: 0.0,
            metrics: Vec::new(),
            reason: format!("inconclusive analysis: invalid settings: {e}"),
        };
    }
    combine(settings, judge_metrics(settings, metrics))
}

/// Below this many samples in all (both sides of every metric), a judgement runs on the
/// calling thread alone: a real batch's few hundred samples a metric take microseconds.
const PARALLEL_SAMPLES: usize = 100_000;

/// Each metric judged, in the order given. Large judgements (at least [`PARALLEL_SAMPLES`]
/// samples) spread their metrics over up to `available_parallelism` threads — the calling
/// one and scoped ones, all joined before this returns — taking the next metric as each
/// finishes one. Each report depends on its own metric only, so the result is the same
/// whatever the threads and their timing.
fn judge_metrics(settings: &Settings, metrics: &[(Criteria, Samples<'_>)]) -> Vec<MetricReport> {
    let judge_one = |(criteria, samples): &(Criteria, Samples<'_>)| judge_metric(settings, criteria, samples);
    let samples: usize = metrics.iter().map(|(_, s)| s.canary.len().saturating_add(s.baseline.len())).sum();
    let threads = if samples < PARALLEL_SAMPLES {
        1
    } else {
        std::thread::available_parallelism().map_or(1, std::num::NonZero::get).min(metrics.len())
    };
    if threads <= 1 {
        return metrics.iter().map(judge_one).collect();
    }
    let next = std::sync::atomic::AtomicUsize::new(0);
    let work = || {
        let mut done = Vec::new();
        loop {
            let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let Some(metric) = metrics.get(i) else { return done };
            done.push((i, judge_one(metric)));
        }
    };
    let mut slots: Vec<Option<MetricReport>> = metrics.iter().map(|_| None).collect();
    std::thread::scope(|scope| {
        // A thread the system refuses is simply not there: the others take its share.
        let helpers: Vec<_> = (1..threads)
            .filter_map(|_| std::thread::Builder::new().name("judge".into()).spawn_scoped(scope, work).ok())
            .collect();
        let mut done = work();
        for helper in helpers {
            match helper.join() {
                Ok(theirs) => done.extend(theirs),
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
        for (i, report) in done {
            slots[i] = Some(report);
        }
    });
    slots.into_iter().flatten().collect()
}

/// One side's cleaned, sorted values, outliers excluded from `start..end`.
struct Side {
    sorted: Vec<f64>,
    start: usize,
    end: usize,
    summary: Summary,
}

impl Side {
    fn prepare(samples: &[f64], outliers: Option<f64>) -> Side {
        let sorted = stats::sorted_finite(samples);
        let (start, end) = match outliers.and_then(|f| stats::tukey_fences(&sorted, f)) {
            Some((lo, hi)) => (sorted.partition_point(|&x| x < lo), sorted.partition_point(|&x| x <= hi)),
            None => (0, sorted.len()),
        };
        let kept = &sorted[start..end];
        let summary = Summary {
            count: count(kept.len()),
            mean: stats::mean_finite(kept),
            median: stats::median_sorted(kept).unwrap_or(0.0),
            non_finite: count(samples.len() - sorted.len()),
            outliers: count(sorted.len() - kept.len()),
        };
        Side { sorted, start, end, summary }
    }

    fn values(&self) -> &[f64] {
        &self.sorted[self.start..self.end]
    }
}

/// A count as `u32`, saturating.
fn count(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// Canary mean ÷ baseline mean when defined.
fn ratio(canary: &Summary, baseline: &Summary) -> Option<f64> {
    let r = canary.mean / baseline.mean;
    (canary.count > 0 && baseline.count > 0 && baseline.mean != 0.0 && r.is_finite()).then_some(r + 0.0)
}

/// A usable change factor: finite and at least 1.
fn factor(f: Option<f64>) -> Option<f64> {
    f.filter(|f| f.is_finite() && *f >= 1.0)
}

/// Whether a `change` of the canary mean stays within `factor` of the baseline mean.
fn within(change: Change, canary: f64, baseline: f64, factor: f64) -> bool {
    match change {
        Change::Higher => canary <= baseline + (factor - 1.0) * baseline.abs(),
        Change::Lower => canary >= baseline - (1.0 - 1.0 / factor) * baseline.abs(),
        Change::None => true,
    }
}

/// The lower-case word for a change.
fn word(change: Change) -> &'static str {
    match change {
        Change::None => "no significant change",
        Change::Higher => "higher",
        Change::Lower => "lower",
    }
}

fn judge_metric(settings: &Settings, criteria: &Criteria, samples: &Samples<'_>) -> MetricReport {
    let name = criteria.name.as_str();
    let canary = Side::prepare(samples.canary, settings.outliers);
    let baseline = Side::prepare(samples.baseline, settings.outliers);
    let mut report = MetricReport {
        name: criteria.name.clone(),
        outcome: Outcome::NoData,
        change: Change::None,
        critical: criteria.critical,
        must_have_data: criteria.must_have_data,
        critical_failure: false,
        weight: criteria.weight,
        canary: canary.summary,
        baseline: baseline.summary,
        test: None,
        ratio: ratio(&canary.summary, &baseline.summary),
        query_errors: samples.query_errors,
        explanation: String::new(),
    };
    if samples.query_errors > settings.query_error_limit {
        report.outcome = Outcome::QueryErrors;
        report.explanation =
            format!("{name}: {} query errors (limit {})", samples.query_errors, settings.query_error_limit);
        return report;
    }
    let needed = settings.samples.max(1);
    let compare = matches!(criteria.check, Check::Compare { .. });
    let mut short = Vec::new();
    if canary.summary.count < needed {
        short.push(format!("the canary {}", shortfall(&canary.summary, needed)));
    }
    if compare && baseline.summary.count < needed {
        short.push(format!("the baseline {}", shortfall(&baseline.summary, needed)));
    }
    if !short.is_empty() {
        report.explanation = format!("{name}: no data on {}", short.join(" or "));
        return report;
    }

    let (cm, bm) = (canary.summary.mean, baseline.summary.mean);
    match &criteria.check {
        Check::Compare { direction, allowed_change, critical_change } => {
            let Some(test) = stats::mann_whitney_sorted(canary.values(), baseline.values(), settings.confidence) else {
                report.explanation = format!("{name}: the samples could not be tested");
                return report;
            };
            let change = if test.low > 0.0 {
                Change::Higher
            } else if test.high < 0.0 {
                Change::Lower
            } else {
                Change::None
            };
            let bad = direction.is_bad(change);
            let allowed = factor(*allowed_change).filter(|&f| bad && within(change, cm, bm, f));
            let beyond = factor(*critical_change).filter(|&f| bad && !within(change, cm, bm, f));
            let failed = bad && allowed.is_none();
            report.critical_failure = (criteria.critical && failed) || beyond.is_some();
            report.outcome = if failed || report.critical_failure { Outcome::Fail } else { Outcome::Pass };
            report.change = change;
            report.test = Some(test);
            let ratio = report.ratio.map(|r| format!(" (ratio {})", num(r))).unwrap_or_default();
            let finding = match (bad, beyond, allowed) {
                (false, _, _) if change == Change::None => "no significant change, passed".to_owned(),
                (false, _, _) => format!("{}, passed", word(change)),
                (true, Some(f), _) => {
                    format!("{} beyond critical change ×{}{ratio}, failed (critical)", word(change), num(f))
                }
                (true, None, Some(f)) => {
                    format!("{} but within allowed change ×{}{ratio}, passed", word(change), num(f))
                }
                (true, None, None) if criteria.critical => format!("{}, failed (critical)", word(change)),
                (true, None, None) => format!("{}, failed", word(change)),
            };
            report.explanation = format!(
                "{name} canary {} vs baseline {} (U={}, p={}, shift {} [{}, {}] at {}%): {finding}",
                num(cm),
                num(bm),
                statistic(test.u),
                num(test.p_value),
                signed(test.shift),
                signed(test.low),
                signed(test.high),
                num(settings.confidence * 100.0),
            );
        }
        Check::Threshold { max, min } => {
            let above = max.filter(|&mx| cm > mx);
            let below = min.filter(|&mn| cm < mn);
            let failed = above.is_some() || below.is_some();
            report.change = if above.is_some() {
                Change::Higher
            } else if below.is_some() {
                Change::Lower
            } else {
                Change::None
            };
            report.outcome = if failed { Outcome::Fail } else { Outcome::Pass };
            report.critical_failure = criteria.critical && failed;
            let finding = match (above, below, min.filter(|x| !x.is_nan()), max.filter(|x| !x.is_nan())) {
                (Some(mx), _, _, _) => format!("above max {}", num(mx)),
                (None, Some(mn), _, _) => format!("below min {}", num(mn)),
                (None, None, Some(mn), Some(mx)) => format!("within [{}, {}]", num(mn), num(mx)),
                (None, None, Some(mn), None) => format!("not below min {}", num(mn)),
                (None, None, None, Some(mx)) => format!("not above max {}", num(mx)),
                (None, None, None, None) => "with no bounds set".to_owned(),
            };
            let outcome = match (failed, criteria.critical) {
                (false, _) => "passed",
                (true, false) => "failed",
                (true, true) => "failed (critical)",
            };
            report.explanation = format!("{name} canary mean {} {finding}: {outcome}", num(cm));
        }
    }
    report
}

/// `(2 of 5 samples needed; 3 non-finite and 1 outlier dropped)`.
fn shortfall(side: &Summary, needed: u32) -> String {
    let mut dropped = Vec::new();
    if side.non_finite > 0 {
        dropped.push(format!("{} non-finite", side.non_finite));
    }
    if side.outliers > 0 {
        dropped.push(format!("{} outlier{}", side.outliers, if side.outliers == 1 { "" } else { "s" }));
    }
    let dropped = if dropped.is_empty() { String::new() } else { format!("; {} dropped", dropped.join(" and ")) };
    format!("({} of {needed} samples needed{dropped})", side.count)
}

/// `a`, `a and b`, `a, b and c`.
fn names<'a>(metrics: impl Iterator<Item = &'a MetricReport>) -> String {
    let names: Vec<&str> = metrics.map(|m| m.name.as_str()).collect();
    match names.as_slice() {
        [] => String::new(),
        [one] => (*one).to_owned(),
        [init @ .., last] => format!("{} and {last}", init.join(", ")),
    }
}

/// Combines the metrics' outcomes into the verdict (precedence in the module docs).
fn combine(settings: &Settings, metrics: Vec<MetricReport>) -> Report {
    let weight_of = |outcome: Outcome| -> u64 {
        metrics.iter().filter(|m| m.outcome == outcome).map(|m| u64::from(m.weight)).sum()
    };
    let passed = weight_of(Outcome::Pass);
    let judged = passed + weight_of(Outcome::Fail);
    let score = if judged > 0 { 100.0 * passed as f64 / judged as f64 } else { 0.0 };
    let scored =
        format!("score {} (pass {}, marginal {})", num(score), num(settings.pass_score), num(settings.marginal_score));
    let scored = if judged > 0 { scored } else { "no score".to_owned() };

    let critical: Vec<&MetricReport> = metrics.iter().filter(|m| m.critical_failure).collect();
    let errors: Vec<&MetricReport> = metrics.iter().filter(|m| m.outcome == Outcome::QueryErrors).collect();
    let no_data =
        |required: bool| metrics.iter().filter(move |m| m.outcome == Outcome::NoData && m.must_have_data == required);
    let failed: Vec<&MetricReport> = metrics.iter().filter(|m| m.outcome == Outcome::Fail).collect();
    let any_judged = metrics.iter().any(|m| matches!(m.outcome, Outcome::Pass | Outcome::Fail));

    let (verdict, reason) = if !critical.is_empty() {
        let plural = if critical.len() == 1 { "metric" } else { "metrics" };
        (Verdict::Fail, format!("failed analysis: {scored}; critical {plural} {} failed", names(critical.into_iter())))
    } else if !errors.is_empty() || no_data(true).next().is_some() {
        let mut parts = Vec::new();
        if !errors.is_empty() {
            parts.push(format!("query errors on {}", names(errors.into_iter())));
        }
        if no_data(true).next().is_some() {
            parts.push(format!("no data on {} (required)", names(no_data(true))));
        }
        (Verdict::Inconclusive, format!("inconclusive analysis: {}", parts.join("; ")))
    } else if metrics.is_empty() {
        (Verdict::Inconclusive, "inconclusive analysis: no metrics to judge".to_owned())
    } else if !any_judged {
        (
            Verdict::Inconclusive,
            format!("inconclusive analysis: no metric was judged (no data on {})", names(no_data(false))),
        )
    } else if judged == 0 {
        (Verdict::Inconclusive, "inconclusive analysis: every judged metric has weight 0".to_owned())
    } else {
        let (verdict, word) = if score >= settings.pass_score {
            (Verdict::Pass, "passed")
        } else if score >= settings.marginal_score {
            (Verdict::Marginal, "marginal")
        } else {
            (Verdict::Fail, "failed")
        };
        let mut reason = format!("{word} analysis: {scored}");
        if !failed.is_empty() {
            reason.push_str(&format!("; failed: {}", names(failed.into_iter())));
        }
        if no_data(false).next().is_some() {
            reason.push_str(&format!("; no data (not scored): {}", names(no_data(false))));
        }
        (verdict, reason)
    };
    Report { verdict, score, metrics, reason }
}
