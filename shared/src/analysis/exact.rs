//! The exact null distribution of the Mann-Whitney U statistic for two samples without
//! ties: the number of the `C(m + n, m)` equally likely rank arrangements giving each
//! value of U. These are the coefficients of the Gaussian binomial `[m + n choose m]_q`,
//! built as `prod_{i=1..m} (1 - q^(n+i)) / (1 - q^i)` in exact 128-bit integers (the
//! largest count, for 49 against 49, is below 2^95), so the p-values and quantiles are
//! exact up to the final division — as R's `pwilcox`/`qwilcox`, which `wilcox.test` uses.

/// The null distribution of U for sample sizes `m` and `n`, up to the middle (it is
/// symmetric about `m n / 2`).
#[derive(Debug, Clone)]
pub(crate) struct UDistribution {
    /// `counts[u]`: arrangements with `U = u`, for `u` in `0..=floor(m n / 2)`.
    counts: Vec<u128>,
    /// `m n`.
    max: u64,
    /// `C(m + n, m)`, the number of arrangements.
    total: u128,
}

impl UDistribution {
    /// The distribution for sizes `m` and `n`; `None` when `C(m + n, m)` does not fit in
    /// 128 bits or the sizes are zero. Meant for small samples: work is `O(m * m n)`.
    pub(crate) fn new(m: usize, n: usize) -> Option<UDistribution> {
        if m == 0 || n == 0 {
            return None;
        }
        let (m, n) = if m <= n { (m, n) } else { (n, m) };
        let mut total: u128 = 1;
        for i in 1..=m {
            // C(n + i, i) = C(n + i - 1, i - 1) * (n + i) / i, exact at every step.
            total = total.checked_mul(u128::try_from(n + i).ok()?)? / u128::try_from(i).ok()?;
        }
        let max = u64::try_from(m).ok()?.checked_mul(u64::try_from(n).ok()?)?;
        let half = usize::try_from(max / 2).ok()?;
        // Power series modulo q^(half + 1); every intermediate is an integer polynomial
        // whose coefficients are bounded by twice a Gaussian binomial's, far inside i128.
        let mut series = vec![0i128; half + 1];
        series[0] = 1;
        for i in 1..=m {
            let up = n + i;
            for u in (up..=half).rev() {
                series[u] -= series[u - up];
            }
            for u in i..=half {
                series[u] += series[u - i];
            }
        }
        let counts = series.into_iter().map(|c| u128::try_from(c).unwrap_or(0)).collect();
        Some(UDistribution { counts, max, total })
    }

    /// `P(U <= u)` for `u <= m n / 2`, else `P(U >= u)`: the tail `u` lies in.
    fn tail(&self, u: u64) -> f64 {
        let u = u.min(self.max - u);
        let upto = usize::try_from(u).unwrap_or(usize::MAX).min(self.counts.len() - 1);
        let sum: u128 = self.counts[..=upto].iter().sum();
        sum as f64 / self.total as f64
    }

    /// The two-sided p-value of an observed (integer) U: twice its tail, at most 1.
    pub(crate) fn p_value(&self, u: u64) -> f64 {
        (2.0 * self.tail(u.min(self.max))).min(1.0)
    }

    /// The smallest `q` with `P(U <= q) >= p` (R's `qwilcox`, including its
    /// `10 * DBL_EPSILON` fuzz), for `p < 0.5`; at most the middle.
    pub(crate) fn quantile(&self, p: f64) -> u64 {
        let p = p - 10.0 * f64::EPSILON;
        let mut sum: u128 = 0;
        for (q, &c) in self.counts.iter().enumerate() {
            sum += c;
            if sum as f64 / self.total as f64 >= p {
                return q as u64;
            }
        }
        self.max / 2
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_distributions() {
        // m = 2, n = 3: U in 0..=6 with counts 1 1 2 2 2 1 1 (10 arrangements).
        let d = UDistribution::new(2, 3).unwrap();
        assert_eq!(d.counts, vec![1, 1, 2, 2]);
        assert_eq!(d.total, 10);
        assert_eq!(d.p_value(0), 0.2);
        assert_eq!(d.p_value(6), 0.2);
        assert_eq!(d.p_value(3), 1.0);
        assert_eq!(d.quantile(0.01), 0);
        assert_eq!(d.quantile(0.15), 1);
        let d = UDistribution::new(1, 1).unwrap();
        assert_eq!(d.counts, vec![1]);
        assert_eq!(d.total, 2);
        assert_eq!(d.p_value(1), 1.0);
    }

    #[test]
    fn counts_sum_to_the_binomial() {
        for (m, n) in [(1, 7), (5, 5), (10, 10), (7, 30), (49, 49), (49, 3)] {
            let d = UDistribution::new(m, n).unwrap();
            let half: u128 = d.counts.iter().sum();
            let max = (m * n) as u128;
            // Symmetric: the full sum doubles the half, minus the middle when m n is even.
            let full = if max % 2 == 0 { 2 * half - d.counts[(max / 2) as usize] } else { 2 * half };
            assert_eq!(full, d.total, "{m} x {n}");
        }
        assert!(UDistribution::new(0, 3).is_none());
    }
}
