"""Reference values for shared/tests/analysis.rs (see README.md).

    python3 reference.py cases > cases.txt        # the inputs, for R
    Rscript reference.R cases.txt > r.txt         # R's wilcox.test
    python3 reference.py report r.txt             # scipy + brute force + R, as Rust

scipy gives U and the p-value (method "exact" where R uses the exact distribution, else
"asymptotic" with the continuity correction); sorting every pairwise difference gives
the Hodges-Lehmann shift and, for the normal approximation, the interval's order
statistics at k = floor(mn/2 - 1/2 - z sigma) + 1 (R's interval there comes from a root
search with tolerance 1e-4, so it is compared with a tolerance instead).
"""

import math
import sys

import numpy as np
import scipy
from scipy.stats import mannwhitneyu, norm

from cases import CASES

CONFIDENCE = 0.98


def sigma(x, y):
    m, n = len(x), len(y)
    N = m + n
    _, counts = np.unique(np.concatenate([x, y]), return_counts=True)
    ties = float(np.sum(counts.astype(float) ** 3 - counts))
    return math.sqrt(m * n / 12 * ((N + 1) - ties / (N * (N - 1)))), ties > 0


def main():
    if sys.argv[1] == "cases":
        for name, make in CASES.items():
            x, y = make()
            print(name)
            print(" ".join(repr(float(v)) for v in x))
            print(" ".join(repr(float(v)) for v in y))
        return
    r = {}
    with open(sys.argv[2]) as f:
        for line in f:
            parts = line.split()
            if parts:
                r[parts[0]] = parts[1:]
    print(f"// scipy {scipy.__version__}, numpy {np.__version__}, Python {sys.version.split()[0]}")
    for name, make in CASES.items():
        x, y = (np.array(v, dtype=float) for v in make())
        m, n = len(x), len(y)
        s, tied = sigma(x, y)
        exact = m < 50 and n < 50 and not tied
        diffs = np.sort(np.subtract.outer(x, y).ravel())
        mn = m * n
        hl = diffs[mn // 2] if mn % 2 else (diffs[mn // 2 - 1] + diffs[mn // 2]) / 2
        if s == 0:
            u, p = mn / 2, 1.0
        else:
            res = mannwhitneyu(x, y, alternative="two-sided", method="exact" if exact else "asymptotic", use_continuity=True)
            u, p = float(res.statistic), float(res.pvalue)
        if exact or s == 0:
            k = None
        else:
            z = -norm.ppf((1 - CONFIDENCE) / 2)
            k = max(1, math.floor(mn / 2 - 0.5 - z * s) + 1)
        lo_k = diffs[k - 1] if k else float("nan")
        hi_k = diffs[mn - k] if k else float("nan")
        # Shortest round-trip form of R's 17 digits (the same double).
        rv = [repr(float(v)) for v in r.get(name, ["nan"] * 5)]
        print(
            f'Ref {{ name: "{name}", u: {u!r}, p: {p!r}, exact: {str(exact).lower()}, shift: {float(hl)!r}, '
            f"k: {k or 0}, low_k: {float(lo_k)!r}, high_k: {float(hi_k)!r}, "
            f"r_w: {rv[0]}, r_p: {rv[1]}, r_low: {rv[2]}, r_high: {rv[3]}, r_estimate: {rv[4]} }},"
        )


if __name__ == "__main__":
    main()
