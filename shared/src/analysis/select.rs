//! Order statistics of the pairwise differences `canary[i] - baseline[j]` of two sorted,
//! finite samples, found exactly without materialising the `m × n` differences.
//!
//! Each sample is run-length encoded into an [`Axis`]: its distinct values, each with
//! its multiplicity. Metrics are often quantised (latency in 0.1 ms, CPU in 0.5 %, error
//! ratios that are mostly exactly 0), and then the grid below is far smaller than `m × n`.
//!
//! With the baseline's values negated and reversed, the differences are the entries
//! `rows[i] + cols[j]` of a grid ascending along both axes (the axis with more distinct
//! values gives the rows), entry `(i, j)` counting `weight(row i) × weight(col j)` times.
//! The order holds for the computed `f64` sums too, since rounding is monotone; sums that
//! overflow are clamped to `±f64::MAX`, which is monotone as well. Every value returned
//! is an entry of that grid: bit for bit what sorting all the differences would give.
//!
//! The number of entries below a value `d` is a staircase walk: the boundary column of
//! each row only moves left as the rows grow, so counting costs `O(rows + cols)`.
//!
//! 1. A grid of at most [`Tuning::materialise`] distinct entries is materialised, sorted.
//! 2. Otherwise about one in `stride` values of each (expanded) sample form a subsample
//!    grid, solved recursively for ranks a margin either side of each wanted rank (scaled
//!    to the subsample). Those values bracket the wanted ranks in the full grid, to within
//!    the margin: the subsample's quantisation error, about
//!    `stride × (m / sqrt(n) + n / sqrt(m))` ranks.
//! 3. One fused staircase pass counts, for every bracket `[lo, hi]`, the entries below
//!    `lo`, equal to `lo`, equal to `hi`, and collects those strictly between; each
//!    wanted rank is then selected among the collected few (or is `lo` or `hi`).
//! 4. A bracket that misses its rank, or holds more entries than it may collect, falls
//!    back to a generic search: per-row windows narrowed by pivots that alternate between
//!    interpolation and the weighted median of the windows' middle entries
//!    (Johnson & Mizoguchi), which removes at least a quarter of the candidates per pass.
//!    It is exact whatever the data; it is only slower.

/// Knobs of the search. Tests shrink them so every path runs on small inputs.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Tuning {
    /// Materialise and sort the grid when it has at most this many distinct entries.
    pub(crate) materialise: u64,
    /// Grids with fewer distinct rows or columns than this are not subsampled.
    pub(crate) min_side: usize,
    /// Subsampling stride (at least 2).
    pub(crate) stride: usize,
    /// Bracket margin, in units of the subsample's expected quantisation error.
    pub(crate) margin: f64,
    /// The generic search enumerates its candidates once there are at most this many.
    pub(crate) enumerate: u64,
}

impl Tuning {
    /// The tuning used outside tests.
    pub(crate) const DEFAULT: Tuning =
        Tuning { materialise: 1024, min_side: 16, stride: 4, margin: 1.5, enumerate: 4096 };
}

/// A sorted sample, run-length encoded: its distinct values ascending, each with the
/// number of times it occurs.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Axis {
    values: Vec<f64>,
    /// `cum[j]`: how many values lie below `values[j]`; one longer than `values`.
    cum: Vec<u64>,
}

impl Axis {
    /// Encodes a sorted, finite sample (values equal under `==` merge; `-0.0` and `0.0`
    /// are one value).
    pub(crate) fn from_sorted(sorted: &[f64]) -> Axis {
        if !sorted.windows(2).any(|w| w[0] == w[1]) {
            // No ties (the usual case for continuous metrics): a copy.
            return Axis { values: sorted.to_vec(), cum: (0..=sorted.len() as u64).collect() };
        }
        let mut values = Vec::with_capacity(sorted.len());
        let mut cum = Vec::with_capacity(sorted.len() + 1);
        cum.push(0);
        for (i, &x) in sorted.iter().enumerate() {
            if values.last() == Some(&x) {
                if let Some(c) = cum.last_mut() {
                    *c += 1;
                }
            } else {
                values.push(x);
                cum.push(i as u64 + 1);
            }
        }
        Axis { values, cum }
    }

    /// Distinct values.
    pub(crate) fn distinct(&self) -> usize {
        self.values.len()
    }

    /// Values counted with multiplicity.
    pub(crate) fn total(&self) -> u64 {
        self.cum.last().copied().unwrap_or(0)
    }

    /// Each distinct value with its multiplicity, ascending.
    pub(crate) fn runs(&self) -> impl Iterator<Item = (f64, u64)> + '_ {
        self.values.iter().zip(self.cum.windows(2)).map(|(&v, w)| (v, w[1] - w[0]))
    }

    /// Whether every value occurs once.
    fn unit(&self) -> bool {
        self.total() == self.values.len() as u64
    }

    /// The values negated, ascending (so reversed), with their multiplicities.
    fn negated(&self) -> Axis {
        let total = self.total();
        let values = self.values.iter().rev().map(|&v| -v).collect();
        let cum = self.cum.iter().rev().map(|&c| total - c).collect();
        Axis { values, cum }
    }

    /// About one in `s` of the values counted with multiplicity, spread evenly over the
    /// whole sample: the `t`-th of `k = ceil(total / s)` picks is the value at position
    /// `(t + 1/2) total / k - 1/2` (the middle of the `t`-th of `k` equal slices), rounded
    /// up and down alternately. Any systematic offset (a fixed index in each block, or a
    /// partial block left out at the end) would shift every scaled rank by a multiple of
    /// `m + n` and make the brackets miss.
    fn subsample(&self, s: usize) -> Axis {
        if self.values.is_empty() {
            return self.clone();
        }
        let total = self.total();
        let k = total.div_ceil(s.max(1) as u64).max(1);
        // position_t = ((2t + 1) total - k) / 2k, kept as quotient and remainder and
        // advanced by 2 total / 2k a pick (no division per pick).
        let den = 2 * k;
        let (step_q, step_r) = ((2 * total) / den, (2 * total) % den);
        let (mut q, mut r) = ((total - k) / den, (total - k) % den);
        let mut values = Vec::new();
        let mut cum = vec![0u64];
        let mut j = 0;
        for t in 0..k {
            let position = if t % 2 == 0 && r > 0 { q + 1 } else { q };
            while j + 1 < self.values.len() && self.cum[j + 1] <= position {
                j += 1;
            }
            if values.last() == Some(&self.values[j]) {
                if let Some(c) = cum.last_mut() {
                    *c = t + 1;
                }
            } else {
                values.push(self.values[j]);
                cum.push(t + 1);
            }
            q += step_q;
            r += step_r;
            if r >= den {
                r -= den;
                q += 1;
            }
        }
        Axis { values, cum }
    }
}

/// How many differences fall below zero and on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ZeroCounts {
    /// Differences `< 0` (canary value below the baseline value).
    pub(crate) below: u64,
    /// Differences `== 0` (equal values).
    pub(crate) equal: u64,
}

/// The values at `ranks` (1-based; `1` is the smallest) of the sorted pairwise differences
/// `canary - baseline`, in the order asked; with `zero`, also how many differences are
/// below and equal to zero. `None` when a sample is empty, `m n` overflows `u64`, or a
/// rank is outside `1..=m n`.
pub(crate) fn order_statistics(
    canary: &Axis,
    baseline: &Axis,
    ranks: &[u64],
    zero: bool,
    tuning: &Tuning,
) -> Option<(Vec<f64>, Option<ZeroCounts>)> {
    if canary.distinct() == 0 || baseline.distinct() == 0 {
        return None;
    }
    let total = canary.total().checked_mul(baseline.total())?;
    if ranks.iter().any(|&k| k == 0 || k > total) {
        return None;
    }
    let negated = baseline.negated();
    let (rows, cols) = if canary.distinct() >= negated.distinct() { (canary, &negated) } else { (&negated, canary) };
    let mut wanted = ranks.to_vec();
    wanted.sort_unstable();
    wanted.dedup();
    let first = rows.values[0] + cols.values[0];
    let last = rows.values[rows.distinct() - 1] + cols.values[cols.distinct() - 1];
    let clamp = !(first.is_finite() && last.is_finite());
    let (values, zeros) = match (clamp, rows.unit() && cols.unit()) {
        (false, true) => solve::<false, false>(rows, cols, &wanted, zero, tuning),
        (false, false) => solve::<false, true>(rows, cols, &wanted, zero, tuning),
        (true, true) => solve::<true, false>(rows, cols, &wanted, zero, tuning),
        (true, false) => solve::<true, true>(rows, cols, &wanted, zero, tuning),
    };
    let out = ranks
        .iter()
        .map(|k| wanted.binary_search(k).ok().and_then(|i| values.get(i)).map_or(f64::NAN, |&v| v + 0.0))
        .collect();
    Some((out, zeros))
}

/// A grid entry: `a + b`, clamped to the finite range when `CLAMP` (only needed when the
/// grid's extreme sums overflow).
#[inline(always)]
fn add<const CLAMP: bool>(a: f64, b: f64) -> f64 {
    let s = a + b;
    if CLAMP { s.clamp(-f64::MAX, f64::MAX) } else { s }
}

/// Entries at the `ranks` (sorted, distinct, in range) of the grid `rows × cols`.
/// `W`: some multiplicity is above 1 (else every weight is 1 and is not looked up).
fn solve<const C: bool, const W: bool>(
    rows: &Axis,
    cols: &Axis,
    ranks: &[u64],
    zero: bool,
    t: &Tuning,
) -> (Vec<f64>, Option<ZeroCounts>) {
    let (m, n) = (rows.distinct(), cols.distinct());
    if ranks.is_empty() && !zero {
        return (Vec::new(), None);
    }
    if m as u64 * n as u64 <= t.materialise {
        return materialised::<C>(rows, cols, ranks, zero);
    }
    let s = t.stride;
    if m.min(n) < t.min_side.max(2 * s) || s < 2 {
        let values = ranks.iter().map(|&k| generic::<C>(rows, cols, k, t.enumerate)).collect();
        let zeros = zero.then(|| zero_counts(&fused::<C, W>(rows, cols, &[Bracket::ZERO])[0]));
        return (values, zeros);
    }

    // The subsample grid, and how far (in full-grid ranks) its scaled order statistics
    // may stray from the full grid's.
    let (big_m, big_n) = (rows.total(), cols.total());
    let total = big_m * big_n;
    let sub_rows = rows.subsample(s);
    let sub_cols = cols.subsample(s);
    let sub_total = sub_rows.total() * sub_cols.total();
    let (mf, nf) = (big_m as f64, big_n as f64);
    let cell = (s * s) as f64;
    let margin = t.margin * s as f64 * (mf / nf.sqrt() + nf / mf.sqrt()) + cell;
    let sub_margin = (margin / cell).ceil() + 1.0;

    // Ranks close together share one bracket.
    let mut groups: Vec<(usize, usize)> = Vec::new();
    for (i, &k) in ranks.iter().enumerate() {
        match groups.last_mut() {
            Some(g) if ((k - ranks[g.1]) as f64) <= 2.0 * margin => g.1 = i,
            _ => groups.push((i, i)),
        }
    }
    let scale = |k: u64| (k as f64 - 0.5) / total as f64 * sub_total as f64 + 0.5;
    // Subsample ranks bounding each group; `None` stands for the grid's own extreme.
    let ends: Vec<(Option<u64>, Option<u64>)> = groups
        .iter()
        .map(|&(a, b)| {
            let lo = scale(ranks[a]) - sub_margin;
            let hi = scale(ranks[b]) + sub_margin;
            let lo = (lo >= 1.0).then(|| (lo.floor() as u64).clamp(1, sub_total));
            let hi = (hi <= sub_total as f64).then(|| (hi.ceil() as u64).clamp(1, sub_total));
            (lo, hi)
        })
        .collect();
    let mut sub_ranks: Vec<u64> = ends.iter().flat_map(|&(lo, hi)| [lo, hi]).flatten().collect();
    sub_ranks.sort_unstable();
    sub_ranks.dedup();
    let sub_unit = sub_rows.unit() && sub_cols.unit();
    let (sub_values, _) = if sub_unit {
        solve::<C, false>(&sub_rows, &sub_cols, &sub_ranks, false, t)
    } else {
        solve::<C, true>(&sub_rows, &sub_cols, &sub_ranks, false, t)
    };
    let sub_value = |k: Option<u64>| k.and_then(|k| sub_ranks.binary_search(&k).ok()).and_then(|i| sub_values.get(i));

    let min = add::<C>(rows.values[0], cols.values[0]);
    let max = add::<C>(rows.values[m - 1], cols.values[n - 1]);
    let mut brackets: Vec<Bracket> = groups
        .iter()
        .zip(&ends)
        .map(|(&(a, b), &(lo, hi))| {
            let lo = sub_value(lo).copied().unwrap_or(min);
            let hi = sub_value(hi).copied().unwrap_or(max).max(lo);
            let cap = ((ranks[b] - ranks[a]) as f64 + 4.0 * margin + 64.0).min(total as f64) as usize;
            Bracket { lo, hi, cap }
        })
        .collect();
    if zero {
        brackets.push(Bracket::ZERO);
    }
    let mut counted = fused::<C, W>(rows, cols, &brackets);
    let zeros = if zero { counted.pop().map(|z| zero_counts(&z)) } else { None };

    let mut values = vec![0.0; ranks.len()];
    for (&(a, b), bracket) in groups.iter().zip(counted.iter_mut()) {
        for i in a..=b {
            values[i] = bracket.resolve(ranks[i]).unwrap_or_else(|| generic::<C>(rows, cols, ranks[i], t.enumerate));
        }
    }
    (values, zeros)
}

/// Entries with their multiplicities, sorted by value.
fn sort_weighted(entries: &mut [(f64, u64)]) {
    entries.sort_unstable_by(|a, b| a.0.total_cmp(&b.0));
}

/// The value at weighted rank `k` (1-based) of entries sorted by value.
fn weighted_rank(sorted: &[(f64, u64)], k: u64) -> Option<f64> {
    let mut seen = 0u64;
    sorted
        .iter()
        .find(|&&(_, w)| {
            seen += w;
            seen >= k
        })
        .map(|&(v, _)| v)
}

/// The value at weighted rank `k` (1-based) of unsorted entries: quickselect on the
/// values, descending into the side whose weight holds the rank. Expected `O(n)`.
fn weighted_select(entries: &mut [(f64, u64)], mut k: u64) -> Option<f64> {
    let mut part = entries;
    loop {
        if part.len() <= 32 {
            sort_weighted(part);
            return weighted_rank(part, k);
        }
        let middle = part.len() / 2;
        let (left, pivot, right) = part.select_nth_unstable_by(middle, |a, b| a.0.total_cmp(&b.0));
        // Everything left is <= the pivot, everything right >= it.
        let below: u64 = left.iter().map(|e| e.1).sum();
        if k <= below {
            part = left;
        } else if k <= below + pivot.1 {
            return Some(pivot.0);
        } else {
            k -= below + pivot.1;
            part = right;
        }
    }
}

/// Reads the ranks off all the distinct entries of a small grid: by selection when every
/// weight is 1, else by sorting.
fn materialised<const C: bool>(rows: &Axis, cols: &Axis, ranks: &[u64], zero: bool) -> (Vec<f64>, Option<ZeroCounts>) {
    if rows.unit() && cols.unit() {
        let mut all = Vec::with_capacity(rows.distinct() * cols.distinct());
        for &r in &rows.values {
            all.extend(cols.values.iter().map(|&c| add::<C>(r, c)));
        }
        let zeros = zero.then(|| ZeroCounts {
            below: all.iter().filter(|&&x| x < 0.0).count() as u64,
            equal: all.iter().filter(|&&x| x == 0.0).count() as u64,
        });
        // Ascending ranks: each selection leaves everything above its rank to the right.
        let mut values = Vec::with_capacity(ranks.len());
        let mut from = 0;
        for &k in ranks {
            let index = usize::try_from(k - 1).unwrap_or(usize::MAX);
            match all.get_mut(from..).filter(|rest| index >= from && index - from < rest.len()) {
                Some(rest) => {
                    let (_, v, _) = rest.select_nth_unstable_by(index - from, f64::total_cmp);
                    values.push(*v);
                    from = index;
                }
                None => values.push(f64::NAN),
            }
        }
        return (values, zeros);
    }
    let mut all = Vec::with_capacity(rows.distinct() * cols.distinct());
    for (r, rw) in rows.runs() {
        all.extend(cols.runs().map(|(c, cw)| (add::<C>(r, c), rw * cw)));
    }
    sort_weighted(&mut all);
    let values = ranks.iter().map(|&k| weighted_rank(&all, k).unwrap_or(f64::NAN)).collect();
    let zeros = zero.then(|| {
        let below = all.iter().filter(|e| e.0 < 0.0).map(|e| e.1).sum();
        let equal = all.iter().filter(|e| e.0 == 0.0).map(|e| e.1).sum();
        ZeroCounts { below, equal }
    });
    (values, zeros)
}

/// A value range whose entries one staircase pass counts (and, strictly inside, collects).
#[derive(Debug, Clone, Copy)]
struct Bracket {
    lo: f64,
    hi: f64,
    /// How many distinct entries strictly inside it may be collected.
    cap: usize,
}

impl Bracket {
    /// Counts the entries below and equal to zero.
    const ZERO: Bracket = Bracket { lo: 0.0, hi: 0.0, cap: 0 };
}

/// What a staircase pass found for one [`Bracket`] (counts with multiplicity).
#[derive(Debug)]
struct Counted {
    lo: f64,
    hi: f64,
    /// Whether entries in `(lo, hi]` are counted at all (`lo < hi`).
    band: bool,
    /// At most this many distinct entries in `(lo, hi)` are collected.
    cap: usize,
    /// Entries `< lo`.
    below: u64,
    /// Entries `== lo`.
    eq_lo: u64,
    /// Entries in `(lo, hi)`, and the first `len` distinct ones (unless `overflow`) in
    /// `buf`, their multiplicities in `weights` (when weighted).
    mid: u64,
    buf: Vec<f64>,
    weights: Vec<u64>,
    len: usize,
    overflow: bool,
    /// Entries `== hi` (when `lo < hi`).
    eq_hi: u64,
}

/// Brackets walked together in one pass: their staircases are independent chains the
/// processor overlaps; more spill the hot counters out of registers.
const PER_PASS: usize = 2;
const _: () = assert!(PER_PASS >= 1 && PER_PASS <= 3, "fused() dispatches passes of 1 to 3 brackets");

/// Counts every bracket, in passes over the rows of up to [`PER_PASS`] brackets.
fn fused<const C: bool, const W: bool>(rows: &Axis, cols: &Axis, brackets: &[Bracket]) -> Vec<Counted> {
    let mut states: Vec<Counted> = brackets.iter().map(Counted::new::<W>).collect();
    let rows_count = rows.distinct().max(1);
    for chunk in states.chunks_mut(PER_PASS) {
        // Brackets holding more than one entry per four rows get four candidates a row.
        let dense = chunk.iter().any(|s| s.band && s.cap / 4 > rows_count / 4);
        match (chunk, dense) {
            ([a], false) => pass::<C, W, 1, 2>(rows, cols, [a]),
            ([a, b], false) => pass::<C, W, 2, 2>(rows, cols, [a, b]),
            ([a, b, c], false) => pass::<C, W, 3, 2>(rows, cols, [a, b, c]),
            ([a], true) => pass::<C, W, 1, 4>(rows, cols, [a]),
            ([a, b], true) => pass::<C, W, 2, 4>(rows, cols, [a, b]),
            ([a, b, c], true) => pass::<C, W, 3, 4>(rows, cols, [a, b, c]),
            _ => {}
        }
    }
    for state in states.iter_mut() {
        state.buf.truncate(state.len);
        state.weights.truncate(state.len);
    }
    states
}

/// Columns `..j` counted with multiplicity.
#[inline(always)]
fn upto<const W: bool>(cols: &Axis, j: usize) -> u64 {
    if W { cols.cum[j] } else { j as u64 }
}

/// Work a pass leaves for later: the rest of row `row`'s entries for bracket `k` from
/// column `from` on, after counting the run equal to `lo` there first when `equal`.
#[derive(Debug, Clone, Copy, Default)]
struct Deferred {
    row: usize,
    from: usize,
    k: usize,
    equal: bool,
}

/// One pass over the rows for `N` brackets, their hot counters in local arrays. For row
/// value `r` (multiplicity `rw`) and each bracket: moves the `< lo` boundary left (it
/// never moves right as rows grow), and counts the entries up to `hi`, of which `B` (2
/// or 4) are handled without branching. The rare rest — a run of entries equal to `lo`,
/// or more than `B` entries in the bracket — is deferred to after the pass, so the loop
/// makes no calls and keeps its counters in registers.
fn pass<const C: bool, const W: bool, const N: usize, const B: usize>(
    rows: &Axis,
    cols: &Axis,
    states: [&mut Counted; N],
) {
    let values = cols.values.as_slice();
    let n = values.len();
    let lo: [f64; N] = std::array::from_fn(|k| states[k].lo);
    let hi: [f64; N] = std::array::from_fn(|k| states[k].hi);
    let band: [bool; N] = std::array::from_fn(|k| states[k].band);
    let mut states = states;
    let mut p = [n; N];
    let mut below = [0u64; N];
    let mut mid = [0u64; N];
    let mut eq_hi = [0u64; N];
    let mut deferred = vec![Deferred::default(); N * rows.distinct() / 8 + 64];
    let mut pending = 0usize;
    for (i, &r) in rows.values.iter().enumerate() {
        let rw = if W { rows.cum[i + 1] - rows.cum[i] } else { 1 };
        for k in 0..N {
            let l = lo[k];
            let mut pk = p[k];
            // Branch-free steps of four: the boundary usually moves zero to two columns.
            loop {
                if pk >= 4 {
                    let w = &values[pk - 4..pk];
                    let moved = usize::from(add::<C>(r, w[0]) >= l)
                        + usize::from(add::<C>(r, w[1]) >= l)
                        + usize::from(add::<C>(r, w[2]) >= l)
                        + usize::from(add::<C>(r, w[3]) >= l);
                    pk -= moved;
                    if moved < 4 {
                        break;
                    }
                } else {
                    while pk > 0 && add::<C>(r, values[pk - 1]) >= l {
                        pk -= 1;
                    }
                    break;
                }
            }
            p[k] = pk;
            below[k] += rw * upto::<W>(cols, pk);
            let equal = pk < n && add::<C>(r, values[pk]) <= l;
            if !band[k] && !equal {
                continue;
            }
            if band[k] && !equal && pk + B <= n {
                // A narrow bracket holds few entries of a row: write B candidates and
                // keep those below `hi`, without branching on them.
                let h = hi[k];
                let a: [f64; B] = std::array::from_fn(|t| add::<C>(r, values[pk + t]));
                let under: usize = a.iter().map(|&x| usize::from(x < h)).sum();
                let within: usize = a.iter().map(|&x| usize::from(x <= h)).sum();
                states[k].keep::<W, B>(&a, under, rw, cols, pk);
                let mid_end = upto::<W>(cols, pk + under);
                mid[k] += rw * (mid_end - upto::<W>(cols, pk));
                eq_hi[k] += rw * (upto::<W>(cols, pk + within) - mid_end);
                if within < B {
                    continue;
                }
            }
            let from = if equal || pk + B > n { pk } else { pk + B };
            if let Some(slot) = deferred.get_mut(pending) {
                *slot = Deferred { row: i, from, k, equal };
            }
            pending += 1;
        }
    }
    for (k, state) in states.iter_mut().enumerate() {
        state.below = below[k];
        state.mid += mid[k];
        state.eq_hi += eq_hi[k];
    }
    if pending > deferred.len() {
        // More rare cases than room: redo them all the slow way, row by row.
        deferred = slow_jobs::<C, W, N, B>(rows, cols, &lo, &hi, &band);
        pending = deferred.len();
    }
    for job in &deferred[..pending] {
        let (row, from) = (job.row, job.from);
        let rw = if W { rows.cum[row + 1] - rows.cum[row] } else { 1 };
        let r = rows.values[row];
        let state = &mut states[job.k];
        let from = if job.equal { state.equal_run::<C, W>(r, rw, cols, from) } else { from };
        if state.band {
            state.extend::<C, W>(r, rw, cols, from);
        }
    }
}

/// Every job a [`pass`] would have deferred, found row by row with bisection (when the
/// pass ran out of room for them: only with pathological ties).
fn slow_jobs<const C: bool, const W: bool, const N: usize, const B: usize>(
    rows: &Axis,
    cols: &Axis,
    lo: &[f64; N],
    hi: &[f64; N],
    band: &[bool; N],
) -> Vec<Deferred> {
    let values = cols.values.as_slice();
    let n = values.len();
    let mut jobs = Vec::new();
    for (i, &r) in rows.values.iter().enumerate() {
        for k in 0..N {
            let pk = values.partition_point(|&c| add::<C>(r, c) < lo[k]);
            let equal = pk < n && add::<C>(r, values[pk]) <= lo[k];
            let crowded = band[k] && pk + B <= n && add::<C>(r, values[pk + B - 1]) <= hi[k];
            if equal || (band[k] && pk + B > n) {
                jobs.push(Deferred { row: i, from: pk, k, equal });
            } else if crowded {
                jobs.push(Deferred { row: i, from: pk + B, k, equal: false });
            }
        }
    }
    jobs
}

/// The counts at zero from a [`Bracket::ZERO`] pass.
fn zero_counts(counted: &Counted) -> ZeroCounts {
    ZeroCounts { below: counted.below, equal: counted.eq_lo }
}

impl Counted {
    /// A bracket's state before the pass over `n` columns.
    fn new<const W: bool>(b: &Bracket) -> Counted {
        let band = b.lo < b.hi;
        let room = if band { b.cap + 4 } else { 0 };
        Counted {
            lo: b.lo,
            hi: b.hi,
            band,
            cap: b.cap,
            below: 0,
            eq_lo: 0,
            mid: 0,
            buf: vec![0.0; room],
            weights: if W { vec![0; room] } else { Vec::new() },
            len: 0,
            overflow: false,
            eq_hi: 0,
        }
    }

    /// Counts the run of entries equal to `lo` starting at column `from` of row `r`;
    /// returns where it ends.
    #[inline(never)]
    fn equal_run<const C: bool, const W: bool>(&mut self, r: f64, rw: u64, cols: &Axis, from: usize) -> usize {
        let lo = self.lo;
        let end = from + prefix(&cols.values[from..], |c| add::<C>(r, c) <= lo);
        self.eq_lo += rw * (upto::<W>(cols, end) - upto::<W>(cols, from));
        end
    }

    /// Writes the candidates `a` (columns `q..q + B`) and keeps the first `under`.
    #[inline(always)]
    fn keep<const W: bool, const B: usize>(&mut self, a: &[f64; B], under: usize, rw: u64, cols: &Axis, q: usize) {
        let len = self.len;
        if let Some(slots) = self.buf.get_mut(len..len + B) {
            slots.copy_from_slice(a);
            if W {
                for (t, slot) in self.weights[len..len + B].iter_mut().enumerate() {
                    *slot = rw * (cols.cum[q + t + 1] - cols.cum[q + t]);
                }
            }
            self.len = len + under;
        } else if under > 0 {
            self.overflow = true;
        }
    }

    /// The rest of a row's entries in `(lo, hi]` from column `from` on.
    #[inline(never)]
    fn extend<const C: bool, const W: bool>(&mut self, r: f64, rw: u64, cols: &Axis, from: usize) {
        let hi = self.hi;
        let rest = &cols.values[from..];
        let under = prefix(rest, |c| add::<C>(r, c) < hi);
        let within = under + prefix(&rest[under..], |c| add::<C>(r, c) <= hi);
        if under > 0 {
            if self.len + under > self.buf.len() {
                self.grow(under);
            }
            if self.len + under <= self.buf.len() {
                for (k, &c) in rest[..under].iter().enumerate() {
                    self.buf[self.len + k] = add::<C>(r, c);
                    if W {
                        let j = from + k;
                        self.weights[self.len + k] = rw * (cols.cum[j + 1] - cols.cum[j]);
                    }
                }
                self.len += under;
            } else {
                self.overflow = true;
            }
        }
        let mid_end = upto::<W>(cols, from + under);
        self.mid += rw * (mid_end - upto::<W>(cols, from));
        self.eq_hi += rw * (upto::<W>(cols, from + within) - mid_end);
    }

    /// Makes room for `more` entries if the cap allows (else leaves it short, and the
    /// caller marks the overflow).
    #[cold]
    fn grow(&mut self, more: usize) {
        let wanted = self.len + more;
        if self.overflow || wanted > self.cap.saturating_add(2) {
            return;
        }
        let room = wanted.max(self.buf.len() * 2).min(self.cap.saturating_add(2));
        self.buf.resize(room, 0.0);
        if !self.weights.is_empty() {
            self.weights.resize(room, 0);
        }
    }

    /// The entry of rank `k` if this bracket pins it down.
    fn resolve(&mut self, k: u64) -> Option<f64> {
        let mut r = k.checked_sub(self.below).filter(|&r| r > 0)?;
        if r <= self.eq_lo {
            return Some(self.lo);
        }
        r -= self.eq_lo;
        if r <= self.mid {
            if self.overflow {
                return None;
            }
            if self.weights.is_empty() {
                if self.buf.len() as u64 != self.mid {
                    return None;
                }
                let (_, v, _) = self.buf.select_nth_unstable_by((r - 1) as usize, f64::total_cmp);
                return Some(*v);
            }
            let mut entries: Vec<(f64, u64)> = self.buf.iter().copied().zip(self.weights.iter().copied()).collect();
            if entries.iter().map(|e| e.1).sum::<u64>() != self.mid {
                return None;
            }
            return weighted_select(&mut entries, r);
        }
        r -= self.mid;
        (r <= self.eq_hi).then_some(self.hi)
    }
}

/// How many leading values of `sorted` satisfy `pred`, which holds on a prefix: a scan
/// of the first few, then galloping and bisection, so a short prefix (the usual case: a
/// narrow bracket holds a few entries of a row at most) costs a few comparisons and a
/// long one a logarithmic number.
#[inline]
fn prefix(sorted: &[f64], pred: impl Fn(f64) -> bool) -> usize {
    const SCAN: usize = 4;
    for (i, &x) in sorted.iter().take(SCAN).enumerate() {
        if !pred(x) {
            return i;
        }
    }
    let n = sorted.len();
    let mut known = SCAN.min(n); // pred holds below `known`
    let mut step = SCAN;
    while known + step <= n && pred(sorted[known + step - 1]) {
        known += step;
        step *= 2;
    }
    let end = (known + step).min(n);
    known + sorted[known..end].partition_point(|&x| pred(x))
}

/// Most passes the generic search makes before it enumerates whatever is left (each
/// weighted-median pass removes at least a quarter, so this is never reached).
const MAX_ROUNDS: usize = 400;

/// The entry of rank `k` by the generic search (see the module documentation).
fn generic<const C: bool>(rows: &Axis, cols: &Axis, k: u64, enumerate: u64) -> f64 {
    let (m, n) = (rows.distinct(), cols.distinct());
    let (rv, cv) = (rows.values.as_slice(), cols.values.as_slice());
    let weight = |i: usize| rows.cum[i + 1] - rows.cum[i];
    // Row i's candidates are columns start[i]..end[i]; all entries left of them are below
    // the answer, all right of them above it.
    let mut start = vec![0usize; m];
    let mut end = vec![n; m];
    let mut lt = vec![0usize; m];
    let mut le = vec![0usize; m];
    let mut active: Vec<usize> = (0..m).collect();
    let mut below = 0u64; // with multiplicity
    let mut candidates = m as u64 * n as u64; // distinct entries
    let mut weighted = rows.total() * cols.total(); // candidates with multiplicity
    let mut low = add::<C>(rv[0], cv[0]);
    let mut high = add::<C>(rv[m - 1], cv[n - 1]);
    let mut interpolate = true;
    for _ in 0..MAX_ROUNDS {
        if candidates <= enumerate.max(1) {
            break;
        }
        let guess = if interpolate {
            let fraction = ((k - below) as f64 - 0.5) / weighted as f64;
            Some(low + (high - low) * fraction).filter(|d| d.is_finite() && *d > low && *d < high)
        } else {
            None
        };
        let pivot = guess.unwrap_or_else(|| weighted_median::<C>(rv, cv, &active, &start, &end));
        let (mut count_lt, mut count_le) = (below, below);
        for &i in &active {
            let r = rv[i];
            let window = &cv[start[i]..end[i]];
            let a = window.partition_point(|&c| add::<C>(r, c) < pivot);
            let b = a + window[a..].partition_point(|&c| add::<C>(r, c) <= pivot);
            lt[i] = start[i] + a;
            le[i] = start[i] + b;
            count_lt += weight(i) * (cols.cum[lt[i]] - cols.cum[start[i]]);
            count_le += weight(i) * (cols.cum[le[i]] - cols.cum[start[i]]);
        }
        let before = candidates;
        if count_le < k {
            for &i in &active {
                start[i] = le[i];
            }
            below = count_le;
            low = pivot;
        } else if count_lt >= k {
            for &i in &active {
                end[i] = lt[i];
            }
            high = pivot;
        } else {
            return pivot; // count_lt < k <= count_le: the pivot is the entry
        }
        active.retain(|&i| start[i] < end[i]);
        candidates = active.iter().map(|&i| (end[i] - start[i]) as u64).sum();
        weighted = active.iter().map(|&i| weight(i) * (cols.cum[end[i]] - cols.cum[start[i]])).sum();
        interpolate = candidates.saturating_mul(2) <= before;
    }
    let mut band = Vec::with_capacity(usize::try_from(candidates).unwrap_or(0));
    for &i in &active {
        let (r, rw) = (rv[i], weight(i));
        band.extend((start[i]..end[i]).map(|j| (add::<C>(r, cv[j]), rw * (cols.cum[j + 1] - cols.cum[j]))));
    }
    sort_weighted(&mut band);
    weighted_rank(&band, k - below).unwrap_or(high)
}

/// The weighted median of the active rows' middle candidates, each weighted by its row's
/// number of candidates: at least a quarter of the candidates lie on either side of it.
fn weighted_median<const C: bool>(rows: &[f64], cols: &[f64], active: &[usize], start: &[usize], end: &[usize]) -> f64 {
    let mut mids: Vec<(f64, u64)> = active
        .iter()
        .map(|&i| {
            let width = end[i] - start[i];
            (add::<C>(rows[i], cols[start[i] + width / 2]), width as u64)
        })
        .collect();
    sort_weighted(&mut mids);
    let total: u64 = mids.iter().map(|&(_, w)| w).sum();
    weighted_rank(&mids, total.div_ceil(2).max(1)).unwrap_or(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Every difference, sorted: the reference.
    fn brute(c: &[f64], b: &[f64]) -> Vec<f64> {
        let mut all: Vec<f64> =
            c.iter().flat_map(|&x| b.iter().map(move |&y| (x - y).clamp(-f64::MAX, f64::MAX))).collect();
        all.sort_unstable_by(f64::total_cmp);
        all
    }

    fn sorted(mut v: Vec<f64>) -> Vec<f64> {
        v.sort_unstable_by(f64::total_cmp);
        v
    }

    /// Checks every rank (or a spread of them) under `tuning`.
    fn check(c: &[f64], b: &[f64], tuning: &Tuning) {
        let all = brute(c, b);
        let total = all.len() as u64;
        let ranks: Vec<u64> = if total <= 300 {
            (1..=total).collect()
        } else {
            // Spread over the whole range, tails included, and the four an interval needs.
            let mut ranks: Vec<u64> = (0..60).map(|i| 1 + i * (total - 1) / 59).collect();
            ranks.extend([total / 2, total / 2 + 1, total / 2 - total / 50, total / 2 + total / 50]);
            ranks
        };
        let (values, zeros) =
            order_statistics(&Axis::from_sorted(c), &Axis::from_sorted(b), &ranks, true, tuning).unwrap();
        for (&k, &v) in ranks.iter().zip(&values) {
            let want = all[(k - 1) as usize] + 0.0;
            assert_eq!(v.to_bits(), want.to_bits(), "rank {k} of {total}: {v} vs {want} under {tuning:?}");
        }
        let below = all.iter().filter(|&&d| d < 0.0).count() as u64;
        let equal = all.iter().filter(|&&d| d == 0.0).count() as u64;
        assert_eq!(zeros, Some(ZeroCounts { below, equal }));
    }

    /// Tunings that force each path on small grids.
    const TINY: [Tuning; 4] = [
        // generic only, enumerating at once or never
        Tuning { materialise: 0, min_side: usize::MAX, stride: 4, margin: 1.0, enumerate: 1 },
        Tuning { materialise: 0, min_side: usize::MAX, stride: 4, margin: 1.0, enumerate: 7 },
        // subsampling with a tiny margin (brackets miss, the generic search catches them)
        Tuning { materialise: 4, min_side: 2, stride: 2, margin: 0.01, enumerate: 1 },
        // subsampling with a normal margin
        Tuning { materialise: 16, min_side: 4, stride: 2, margin: 1.0, enumerate: 4 },
    ];

    fn sample() -> impl Strategy<Value = Vec<f64>> {
        prop::collection::vec(
            prop_oneof![
                4 => -100.0f64..100.0,
                3 => (-5i32..5).prop_map(f64::from),
                1 => Just(0.0),
                1 => prop_oneof![Just(f64::MAX), Just(-f64::MAX), Just(1e300), Just(-1e300)],
            ],
            1..40,
        )
        .prop_map(sorted)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(150))]
        #[test]
        fn selection_equals_sorting_every_difference(c in sample(), b in sample()) {
            for tuning in TINY.iter().chain([&Tuning::DEFAULT]) {
                check(&c, &b, tuning);
            }
        }
    }

    /// A deterministic generator for the larger cases.
    fn series(n: usize, seed: u64, f: impl Fn(f64, u64) -> f64) -> Vec<f64> {
        let mut rng = crate::fixtures::XorShift(seed);
        sorted(
            (0..n)
                .map(|_| {
                    let s = rng.next_u64();
                    f((s >> 11) as f64 / (1u64 << 53) as f64, s)
                })
                .collect(),
        )
    }

    #[test]
    fn larger_grids_against_sorting() {
        let cases: Vec<(Vec<f64>, Vec<f64>)> = vec![
            (series(300, 1, |u, _| u * 10.0), series(250, 2, |u, _| u * 10.0 + 0.5)),
            (series(400, 3, |u, _| (u * 8.0).exp()), series(90, 4, |u, _| (u * 7.0).exp())),
            // mostly zeros, as error ratios are
            (
                series(500, 5, |u, s| if s % 4 == 0 { u * 0.01 } else { 0.0 }),
                series(300, 6, |u, s| if s % 3 == 0 { u * 0.02 } else { 0.0 }),
            ),
            // few distinct values
            (series(350, 7, |_, s| (s % 5) as f64), series(280, 8, |_, s| (s % 3) as f64)),
            // quantised
            (series(600, 13, |u, _| (u * 300.0).round() / 10.0), series(500, 14, |u, _| (u * 290.0).round() / 10.0)),
            // outliers and extreme values
            (
                series(300, 9, |u, s| if s % 50 == 0 { f64::MAX } else { u }),
                series(200, 10, |u, s| if s % 40 == 0 { -f64::MAX } else { u }),
            ),
            // skinny
            (series(3, 11, |u, _| u), series(2000, 12, |u, _| u)),
        ];
        for (c, b) in &cases {
            // The generic-only tunings narrow a candidate at a time: only on smaller grids
            // (the proptest covers them thoroughly), or a debug build takes minutes.
            let small = c.len() * b.len() <= 40_000;
            for tuning in TINY.iter().skip(if small { 0 } else { 2 }).chain([&Tuning::DEFAULT]) {
                check(c, b, tuning);
                check(b, c, tuning);
            }
        }
    }

    proptest! {
        #[test]
        fn weighted_selection_equals_sorting(entries in prop::collection::vec(((-20i32..20).prop_map(f64::from), 1u64..5), 1..200), pick in 0.0f64..1.0) {
            let mut sorted = entries.clone();
            sort_weighted(&mut sorted);
            let total: u64 = entries.iter().map(|e| e.1).sum();
            let k = 1 + ((pick * total as f64) as u64).min(total - 1);
            let mut entries = entries;
            prop_assert_eq!(weighted_select(&mut entries, k), weighted_rank(&sorted, k));
        }
    }

    #[test]
    fn axes_encode_runs() {
        let a = Axis::from_sorted(&[0.0, 0.0, 1.0, 2.0, 2.0, 2.0]);
        assert_eq!(a.runs().collect::<Vec<_>>(), vec![(0.0, 2), (1.0, 1), (2.0, 3)]);
        assert_eq!((a.distinct(), a.total(), a.unit()), (3, 6, false));
        assert_eq!(a.negated().runs().collect::<Vec<_>>(), vec![(-2.0, 3), (-1.0, 1), (-0.0, 2)]);
        let s = Axis::from_sorted(&(0..100).map(f64::from).collect::<Vec<_>>()).subsample(4);
        assert_eq!(s.total(), 25);
        assert_eq!(s.runs().next(), Some((2.0, 1)));
        assert_eq!(s.runs().last(), Some((98.0, 1)));
    }

    #[test]
    fn rejects_what_it_cannot_answer() {
        let one = Axis::from_sorted(&[1.0]);
        let none = Axis::from_sorted(&[]);
        assert!(order_statistics(&none, &one, &[1], false, &Tuning::DEFAULT).is_none());
        assert!(order_statistics(&one, &one, &[0], false, &Tuning::DEFAULT).is_none());
        assert!(order_statistics(&one, &one, &[2], false, &Tuning::DEFAULT).is_none());
    }
}
