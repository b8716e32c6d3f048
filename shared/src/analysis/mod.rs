//! Canary analysis: whether a rollout batch's new version (the canary hosts) behaves like
//! the old one (baseline hosts taking the same traffic), judged from samples of each
//! metric on both — in the manner of Spinnaker Kayenta's Mann-Whitney classifier and
//! score, with Argo Rollouts' inconclusive outcome for missing or failed measurements.
//!
//! Pure: no randomness, no clock, no I/O. Deterministic, and no input panics it (NaN,
//! infinities, empty or huge samples, huge values).
//!
//! # Method
//!
//! A comparison ([`Check::Compare`]) runs the Mann-Whitney U test of the canary sample
//! against the baseline sample ([`stats::mann_whitney`]): distribution-free, so latency
//! tails and ratios stuck at zero need no normality. The change is measured by the
//! Hodges-Lehmann shift, the median of all pairwise differences `canary_i - baseline_j`,
//! with its distribution-free confidence interval at `Settings::confidence` (order
//! statistics of those differences, as R's `wilcox.test(conf.int = TRUE)`). The canary
//! is significantly **higher** when the whole interval lies above 0, **lower** when it
//! lies below, otherwise unchanged. Small samples without ties use the exact null
//! distribution of U; others the normal approximation, tie- and continuity-corrected.
//! The `m × n` differences are never materialised (a sorted-matrix selection finds the
//! order statistics exactly), so a test of 10,000 samples a side takes under a
//! millisecond, sorting included.
//!
//! A threshold ([`Check::Threshold`]) needs no baseline: the canary mean must stay within
//! its bounds.
//!
//! # Rules
//!
//! Samples: non-finite values are dropped; then, if `Settings::outliers` is set, values
//! outside Tukey's fences ([`stats::remove_outliers`]) on each side separately.
//!
//! Each metric ([`MetricReport`]), in this order:
//! 1. more query errors than `query_error_limit` → [`Outcome::QueryErrors`];
//! 2. fewer than `samples` values on the canary, or on the baseline for a comparison →
//!    [`Outcome::NoData`];
//! 3. a comparison fails iff the change goes the bad way ([`Direction`]: higher for
//!    `Increase` and `Either`, lower for `Decrease` and `Either`) and the canary mean is
//!    not within `allowed_change` of the baseline mean. It is a critical failure iff it
//!    fails and the metric is critical, or the bad change goes beyond `critical_change`
//!    (whether or not the metric is critical; the metric then fails too);
//! 4. a threshold fails iff the canary mean is above `max` (change higher) or below `min`
//!    (lower); a critical failure iff it fails and the metric is critical.
//!
//! The verdict ([`Report`]), first rule that applies:
//! 1. any critical failure → [`Verdict::Fail`], whatever the score;
//! 2. any metric with query errors, or without data but `must_have_data` →
//!    [`Verdict::Inconclusive`];
//! 3. no metric judged (none given, or all without data) → inconclusive: a missing metric
//!    never counts as a pass; likewise when every judged metric has weight 0;
//! 4. otherwise the score is `100 × (weight of passed metrics) / (weight of passed and
//!    failed metrics)` — metrics without data (not required) are left out — and the
//!    verdict is [`Verdict::Pass`] at `pass_score` or more, [`Verdict::Marginal`] at
//!    `marginal_score` or more, else [`Verdict::Fail`].
//!
//! Invalid [`Settings`] (see [`Settings::validate`]) give an inconclusive report with no
//! metrics.
//!
//! Every metric carries a one-line explanation, and the report a one-sentence reason:
//!
//! ```text
//! error_ratio canary 0.0509 vs baseline 0.00258 (U=100, p=1.083e-5, shift +0.048 [+0.045, +0.0515] at 98%): higher, failed (critical)
//! p99_latency canary mean 0.82 above max 0.5: failed
//! error_ratio: no data on the baseline (0 of 5 samples needed)
//! failed analysis: score 50 (pass 95, marginal 75); critical metric error_ratio failed
//! ```
//!
//! ```
//! use flotilla_shared::analysis::{judge, Criteria, Direction, Samples, Settings, Verdict};
//!
//! let canary = [0.051, 0.048, 0.055, 0.050, 0.049, 0.052, 0.047, 0.053];
//! let baseline = [0.002, 0.003, 0.001, 0.002, 0.004, 0.002, 0.003, 0.002];
//! let report = judge(
//!     &Settings::default(),
//!     &[(Criteria::compare("error_ratio", Direction::Increase).mark_critical(), Samples::new(&canary, &baseline))],
//! );
//! assert_eq!(report.verdict, Verdict::Fail);
//! println!("{}", report.metrics[0].explanation);
//! ```

mod exact;
mod format;
pub mod judge;
mod normal;
pub mod query;
mod select;
mod sort;
pub mod stats;

pub use judge::{
    Change, Check, Criteria, Direction, MetricReport, Outcome, Report, Samples, Settings, SettingsError, Summary,
    Verdict, judge,
};
pub use stats::{MannWhitney, kth_pairwise_difference, mann_whitney, mean, median, remove_outliers};
