//! The statistics behind canary analysis: the Mann-Whitney U test of the canary sample
//! against the baseline sample, the Hodges-Lehmann estimate of the shift between them
//! with its distribution-free confidence interval, Tukey's outlier fences, and a mean
//! and median that ignore non-finite values.
//!
//! All functions drop non-finite values (NaN, ±inf) first and never panic.

use serde::{Deserialize, Serialize};

use super::exact::UDistribution;
use super::normal;
use super::select::{self, Axis, Tuning};
use super::sort;

/// Both samples smaller than this (and no ties): the exact null distribution of U is
/// used, as R's `wilcox.test` does by default.
pub const EXACT_LIMIT: usize = 50;

/// At most this many (canary, baseline) pairs: twice the count must fit in a `u64`.
/// (No sample that fits in memory comes near.)
const MAX_PAIRS: u64 = u64::MAX / 4;

/// Mann-Whitney U test of canary against baseline and the Hodges-Lehmann shift.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct MannWhitney {
    /// U statistic of the canary sample: the number of (canary, baseline) pairs where the
    /// canary value is larger, ties counting one half. Ranges over `0..=m n`; `m n / 2`
    /// when the samples do not differ.
    pub u: f64,
    /// The normal-approximation statistic, tie- and continuity-corrected:
    /// `(U - m n / 2 - sign * 0.5) / sigma`. Reported even when the p-value is exact.
    pub z: f64,
    /// Two-sided p-value: of the hypothesis that neither sample tends to be larger.
    pub p_value: f64,
    /// Whether the p-value and interval come from the exact null distribution of U
    /// (both samples below [`EXACT_LIMIT`] and no ties) rather than the normal
    /// approximation.
    pub exact: bool,
    /// Hodges-Lehmann estimate of canary minus baseline: the median of all `m n` pairwise
    /// differences `c_i - b_j` (the mean of the middle two when `m n` is even).
    pub shift: f64,
    /// Lower end of the confidence interval of the shift: the `k`-th smallest pairwise
    /// difference (see [`mann_whitney`] for `k`).
    pub low: f64,
    /// Upper end: the `(m n + 1 - k)`-th smallest pairwise difference.
    pub high: f64,
}

/// Mann-Whitney U test of `canary` against `baseline`, with the Hodges-Lehmann shift and
/// its confidence interval at `confidence` (e.g. `0.98`). Non-finite values are dropped.
/// `None` if either side is empty after that, or `confidence` is not in `(0, 1)` (or, in
/// theory, when `m n` exceeds 2^62).
///
/// The p-value is two-sided. With both samples below [`EXACT_LIMIT`] values and no tied
/// values at all, it comes from the exact null distribution of U (R's `wilcox.test`
/// default); otherwise from the normal approximation with the tie correction
/// `sigma^2 = m n / 12 * (N + 1 - sum(t^3 - t) / (N (N - 1)))` (`N = m + n`, `t` the
/// sizes of groups of equal values) and the continuity correction, as R's `wilcox.test`
/// with `correct = TRUE` and scipy's `mannwhitneyu(method="asymptotic")`.
///
/// The interval `[D(k), D(mn + 1 - k)]`, `D(i)` the `i`-th smallest pairwise difference,
/// is the set of shifts the test would not reject at level `alpha = 1 - confidence`
/// (Hollander & Wolfe; R's `wilcox.test(conf.int = TRUE)`):
/// - exact: `k` is the `alpha / 2` quantile of the null distribution of U (the smallest
///   `q` with `P(U <= q) >= alpha / 2`, R's `qwilcox`), at least 1. With tiny samples the
///   interval can then cover more than `confidence` asks (R warns "requested conf.level
///   not achievable"); with one value per side it is the single difference;
/// - normal: `k = floor(m n / 2 - 1/2 - z(1 - alpha/2) sigma) + 1`, at least 1: where the
///   continuity-corrected statistic crosses the normal quantile, the order statistic that
///   R's root search (`uniroot`, tolerance 1e-4) converges to.
///
/// When every value on both sides is the same, the samples cannot differ: U is `m n / 2`,
/// p is 1 and the shift and interval are 0.
///
/// Cost: sorting both sides, then `O((m + n) log(m n))` for the order statistics, which
/// are found without materialising the `m n` differences.
pub fn mann_whitney(canary: &[f64], baseline: &[f64], confidence: f64) -> Option<MannWhitney> {
    if !valid_confidence(confidence) {
        return None;
    }
    mann_whitney_sorted(&sorted_finite(canary), &sorted_finite(baseline), confidence)
}

/// Whether `confidence` is usable: strictly between 0 and 1.
pub(crate) fn valid_confidence(confidence: f64) -> bool {
    confidence > 0.0 && confidence < 1.0
}

/// [`mann_whitney`] on samples already finite and sorted ascending.
pub(crate) fn mann_whitney_sorted(c: &[f64], b: &[f64], confidence: f64) -> Option<MannWhitney> {
    let (m, n) = (c.len(), b.len());
    if m == 0 || n == 0 || !valid_confidence(confidence) {
        return None;
    }
    let total = u64::try_from(m).ok()?.checked_mul(u64::try_from(n).ok()?).filter(|&t| t <= MAX_PAIRS)?;
    let mn = total as f64;
    if c[0] == c[m - 1] && b[0] == b[n - 1] && c[0] == b[0] {
        return Some(MannWhitney { u: mn / 2.0, z: 0.0, p_value: 1.0, exact: false, shift: 0.0, low: 0.0, high: 0.0 });
    }
    let alpha = 1.0 - confidence;
    let middle: &[u64] = if total % 2 == 1 { &[total / 2 + 1] } else { &[total / 2, total / 2 + 1] };
    let tuning = Tuning::DEFAULT;
    let (ca, ba) = (Axis::from_sorted(c), Axis::from_sorted(b));

    let (u2, exact, sigma, p, values) = if m < EXACT_LIMIT && n < EXACT_LIMIT {
        let walk = merge_walk(&ca, &ba);
        let sigma = sigma(m, n, walk.tie_term);
        let (exact, p, k) = match (walk.ties, UDistribution::new(m, n)) {
            (false, Some(dist)) => (true, dist.p_value(walk.u2 / 2), dist.quantile(alpha / 2.0).max(1)),
            _ => (false, normal_p(z_statistic(walk.u2, mn, sigma)), normal_rank(total, sigma, alpha)),
        };
        let mut ranks = vec![k, total + 1 - k];
        ranks.extend_from_slice(middle);
        let (values, _) = select::order_statistics(&ca, &ba, &ranks, false, &tuning)?;
        (walk.u2, exact, sigma, p, values)
    } else {
        // Ties across the samples are only known once the differences at zero are
        // counted (in the same pass as the order statistics); assume none, and redo the
        // interval in the rare case they change its ranks.
        let within = run_tie_term(&ca) + run_tie_term(&ba);
        let first_sigma = sigma(m, n, within);
        let first_k = normal_rank(total, first_sigma, alpha);
        let mut ranks = vec![first_k, total + 1 - first_k];
        ranks.extend_from_slice(middle);
        let (mut values, zeros) = select::order_statistics(&ca, &ba, &ranks, true, &tuning)?;
        let zeros = zeros?;
        let u2 = 2 * (total - zeros.below - zeros.equal) + zeros.equal;
        let sigma = if zeros.equal > 0 { sigma(m, n, merge_walk(&ca, &ba).tie_term) } else { first_sigma };
        let k = normal_rank(total, sigma, alpha);
        if k != first_k {
            let (ends, _) = select::order_statistics(&ca, &ba, &[k, total + 1 - k], false, &tuning)?;
            values[..2].copy_from_slice(&ends);
        }
        let p = normal_p(z_statistic(u2, mn, sigma));
        (u2, false, sigma, p, values)
    };
    let shift = match values[2..] {
        [one] => one,
        [a, b] => midpoint(a, b),
        _ => return None,
    };
    Some(MannWhitney {
        u: u2 as f64 / 2.0,
        z: z_statistic(u2, mn, sigma),
        p_value: p,
        exact,
        shift: shift + 0.0,
        low: values[0] + 0.0,
        high: values[1] + 0.0,
    })
}

/// The k-th smallest (1-based) of the pairwise differences `canary[i] - baseline[j]`,
/// found without materialising them; non-finite values are dropped first. `None` when a
/// side is empty or `k` is not in `1..=m n`. A difference that overflows counts as
/// `±f64::MAX`.
pub fn kth_pairwise_difference(canary: &[f64], baseline: &[f64], k: u64) -> Option<f64> {
    let (c, b) = (Axis::from_sorted(&sorted_finite(canary)), Axis::from_sorted(&sorted_finite(baseline)));
    let (values, _) = select::order_statistics(&c, &b, &[k], false, &Tuning::DEFAULT)?;
    values.first().copied()
}

/// The normal-approximation standard deviation of U, tie-corrected by `tie_term`
/// (`sum(t^3 - t)` over groups of equal values in the combined sample).
fn sigma(m: usize, n: usize, tie_term: f64) -> f64 {
    let (mf, nf) = (m as f64, n as f64);
    let big_n = mf + nf;
    let variance = mf * nf / 12.0 * ((big_n + 1.0) - tie_term / (big_n * (big_n - 1.0)));
    variance.max(0.0).sqrt()
}

/// `(U - m n / 2 - sign(U - m n / 2) / 2) / sigma` from `2 U`; 0 when `sigma` is 0.
fn z_statistic(u2: u64, mn: f64, sigma: f64) -> f64 {
    let dz = u2 as f64 / 2.0 - mn / 2.0;
    let correction = if dz > 0.0 {
        0.5
    } else if dz < 0.0 {
        -0.5
    } else {
        0.0
    };
    if sigma > 0.0 { (dz - correction) / sigma } else { 0.0 }
}

/// Two-sided normal p-value of `z`.
fn normal_p(z: f64) -> f64 {
    (2.0 * normal::cdf(-z.abs())).min(1.0)
}

/// The rank `k` of the lower interval end under the normal approximation.
fn normal_rank(total: u64, sigma: f64, alpha: f64) -> u64 {
    let zq = -normal::quantile(alpha / 2.0);
    let x = total as f64 / 2.0 - 0.5 - zq * sigma;
    if x >= 0.0 { ((x.floor() as u64).saturating_add(1)).clamp(1, total) } else { 1 }
}

/// `(a + b) / 2` without overflowing.
fn midpoint(a: f64, b: f64) -> f64 {
    let s = a + b;
    if s.is_finite() { s / 2.0 } else { a / 2.0 + b / 2.0 }
}

/// What one merge of the two sorted samples yields.
#[derive(Debug, Clone, Copy)]
struct Walk {
    /// Twice U.
    u2: u64,
    /// `sum(t^3 - t)` over groups of equal values in the combined sample.
    tie_term: f64,
    /// Whether any value occurs twice anywhere.
    ties: bool,
}

/// Merges the encoded samples value by value.
fn merge_walk(c: &Axis, b: &Axis) -> Walk {
    let cr: Vec<(f64, u64)> = c.runs().collect();
    let br: Vec<(f64, u64)> = b.runs().collect();
    let (mut i, mut j) = (0usize, 0usize);
    let mut smaller = 0u64; // baseline values below the current one
    let mut walk = Walk { u2: 0, tie_term: 0.0, ties: false };
    loop {
        let v = match (cr.get(i), br.get(j)) {
            (Some(x), Some(y)) => x.0.min(y.0),
            (Some(x), None) => x.0,
            (None, Some(y)) => y.0,
            (None, None) => break,
        };
        let a = cr.get(i).filter(|x| x.0 == v).map_or(0, |x| x.1);
        let bb = br.get(j).filter(|y| y.0 == v).map_or(0, |y| y.1);
        // Each of the a canary values beats the smaller baseline values and ties bb.
        walk.u2 += a * (2 * smaller + bb);
        if a + bb > 1 {
            let t = (a + bb) as f64;
            walk.tie_term += t * t * t - t;
            walk.ties = true;
        }
        i += usize::from(a > 0);
        j += usize::from(bb > 0);
        smaller += bb;
    }
    walk
}

/// `sum(t^3 - t)` over the runs of equal values of one sample.
fn run_tie_term(x: &Axis) -> f64 {
    x.runs()
        .filter(|&(_, t)| t > 1)
        .map(|(_, t)| {
            let t = t as f64;
            t * t * t - t
        })
        .sum()
}

/// The finite values, with `-0.0` made `0.0`, in their order.
pub(crate) fn clean(samples: &[f64]) -> Vec<f64> {
    samples.iter().filter(|x| x.is_finite()).map(|&x| x + 0.0).collect()
}

/// The finite values, sorted ascending.
pub(crate) fn sorted_finite(samples: &[f64]) -> Vec<f64> {
    let mut v = clean(samples);
    sort::sort_finite(&mut v);
    v
}

/// Drops outliers by Tukey's fences: values outside `[Q1 - factor IQR, Q3 + factor IQR]`
/// (quartiles by linear interpolation, R's default type 7; `factor` 1.5 is Tukey's
/// "outlier", 3 his "far out"), keeping the others in their order. Non-finite values are
/// always dropped.
///
/// When the IQR is 0 every (finite) value is kept: a metric that is constant but for a
/// few spikes would otherwise lose every spike, and the spikes are what a canary
/// analysis must see. A `factor` that is negative or not finite also keeps everything.
pub fn remove_outliers(samples: &[f64], factor: f64) -> Vec<f64> {
    let kept = clean(samples);
    let mut sorted = kept.clone();
    sort::sort_finite(&mut sorted);
    match tukey_fences(&sorted, factor) {
        Some((lo, hi)) => kept.into_iter().filter(|&x| x >= lo && x <= hi).collect(),
        None => kept,
    }
}

/// The fences `(Q1 - factor IQR, Q3 + factor IQR)` of a sorted finite sample; `None`
/// when everything is to be kept (see [`remove_outliers`]).
pub(crate) fn tukey_fences(sorted: &[f64], factor: f64) -> Option<(f64, f64)> {
    if !(factor.is_finite() && factor >= 0.0) {
        return None;
    }
    let q1 = quantile_sorted(sorted, 0.25)?;
    let q3 = quantile_sorted(sorted, 0.75)?;
    let iqr = q3 - q1;
    (iqr > 0.0 && iqr.is_finite()).then_some((q1 - factor * iqr, q3 + factor * iqr))
}

/// The `p`-quantile of a sorted sample by linear interpolation (type 7); `None` if empty.
pub(crate) fn quantile_sorted(sorted: &[f64], p: f64) -> Option<f64> {
    let last = sorted.len().checked_sub(1)?;
    let h = last as f64 * p.clamp(0.0, 1.0);
    let i = (h.floor() as usize).min(last);
    let f = h - i as f64;
    let (a, b) = (sorted[i], sorted[(i + 1).min(last)]);
    let d = b - a;
    Some(if f == 0.0 {
        a
    } else if d.is_finite() {
        a + d * f
    } else {
        a * (1.0 - f) + b * f
    })
}

/// Mean of the finite values; `None` when there are none. Never overflows: a sum past
/// `f64::MAX` is redone on the values scaled down by their count.
pub fn mean(samples: &[f64]) -> Option<f64> {
    let finite = clean(samples);
    (!finite.is_empty()).then(|| mean_finite(&finite))
}

/// Mean of finite values (0 when empty).
pub(crate) fn mean_finite(v: &[f64]) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    let n = v.len() as f64;
    // Four running sums: independent additions, so this is not bound by their latency.
    let mut sums = [0.0f64; 4];
    let chunks = v.chunks_exact(4);
    let rest: f64 = chunks.remainder().iter().sum();
    for chunk in chunks {
        for (s, &x) in sums.iter_mut().zip(chunk) {
            *s += x;
        }
    }
    let sum = (sums[0] + sums[1]) + (sums[2] + sums[3]) + rest;
    if sum.is_finite() { sum / n } else { v.iter().map(|&x| x / n).sum() }
}

/// Median of the finite values (the mean of the middle two for an even count); `None`
/// when there are none.
pub fn median(samples: &[f64]) -> Option<f64> {
    median_sorted(&sorted_finite(samples))
}

/// Median of a sorted sample; `None` if empty.
pub(crate) fn median_sorted(sorted: &[f64]) -> Option<f64> {
    let n = sorted.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(sorted[n / 2]),
        _ => Some(midpoint(sorted[n / 2 - 1], sorted[n / 2])),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_walk_counts_pairs_and_ties() {
        let axis = Axis::from_sorted;
        let w = merge_walk(&axis(&[1.0, 2.0, 2.0, 5.0]), &axis(&[0.0, 2.0, 3.0]));
        // 1 beats 0; each 2 beats 0 and ties 2; 5 beats all three: 1 + 2 * 1.5 + 3 = 7.
        assert_eq!(w.u2, 14);
        assert!(w.ties);
        assert_eq!(w.tie_term, 24.0); // one group of three 2s
        let w = merge_walk(&axis(&[1.0, 3.0]), &axis(&[2.0]));
        assert_eq!((w.u2, w.ties, w.tie_term), (2, false, 0.0));
        assert_eq!(run_tie_term(&axis(&[1.0, 1.0, 2.0, 3.0, 3.0, 3.0])), 6.0 + 24.0);
    }

    #[test]
    fn quartiles_interpolate_like_r() {
        let x = [1.0, 2.0, 3.0, 4.0, 10.0];
        assert_eq!(quantile_sorted(&x, 0.25), Some(2.0));
        assert_eq!(quantile_sorted(&x, 0.75), Some(4.0));
        assert_eq!(quantile_sorted(&[1.0, 2.0], 0.25), Some(1.25));
        assert_eq!(quantile_sorted(&[-f64::MAX, f64::MAX], 0.5), Some(0.0));
        assert_eq!(quantile_sorted(&[], 0.5), None);
    }
}
