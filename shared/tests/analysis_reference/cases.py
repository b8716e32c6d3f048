"""The cases of shared/tests/analysis.rs, defined once for the reference scripts.

Every value is built with IEEE-754 basic operations only (integer arithmetic, then one
division or addition), so Python, R and Rust produce bit-identical inputs.
"""


def shift10():
    # Error ratios: a clear regression, fully separated.
    x = [0.051, 0.048, 0.055, 0.050, 0.049, 0.052, 0.047, 0.053, 0.058, 0.046]
    y = [0.002, 0.003, 0.001, 0.0025, 0.004, 0.0021, 0.0032, 0.0018, 0.0027, 0.0035]
    return x, y


def overlap10():
    # Overlapping samples, a modest shift.
    x = [1.12, -0.35, 0.87, 2.01, 0.44, 1.56, 0.05, 1.93, 0.71, 1.28]
    y = [0.31, -0.82, 0.15, 1.07, -0.44, 0.62, -1.21, 0.88, -0.05, 0.27]
    return x, y


def ties():
    # Error ratios, mostly exactly zero: ties within and across the samples.
    x = [0, 0, 0, 0.01, 0, 0.02, 0, 0, 0.03, 0, 0.01, 0]
    y = [0, 0, 0, 0, 0, 0.01, 0, 0, 0, 0, 0, 0, 0, 0.01, 0]
    return [float(v) for v in x], [float(v) for v in y]


def tiny11():
    return [3.0], [1.0]


def tiny23():
    return [1.5, 2.5], [1.0, 3.0, 4.0]


def identical():
    return [0.3] * 5, [0.3] * 5


def unequal7x30():
    # Distinct, no value shared: x has odd numerators, y even ones (over 20).
    x = [(2 * ((i * 53) % 97) + 1 + 30) / 20 for i in range(1, 8)]
    y = [(2 * ((j * 37) % 101)) / 20 for j in range(1, 31)]
    return x, y


def quantised60x80():
    # Values on a 0.5 grid: many ties, normal approximation with the tie correction.
    x = [((i * 13) % 23 + 2) / 2 for i in range(1, 61)]
    y = [((j * 7) % 19) / 2 for j in range(1, 81)]
    return x, y


def large2000():
    # 2,000 a side, no ties; canary shifted up by 2.5 (500 / 200).
    x = [(2 * ((i * 7919) % 10007) + 1 + 500) / 200 for i in range(1, 2001)]
    y = [(2 * ((j * 104729) % 10009)) / 200 for j in range(1, 2001)]
    return x, y


CASES = {
    "shift10": shift10,
    "overlap10": overlap10,
    "ties": ties,
    "tiny11": tiny11,
    "tiny23": tiny23,
    "identical": identical,
    "unequal7x30": unequal7x30,
    "quantised60x80": quantised60x80,
    "large2000": large2000,
}
