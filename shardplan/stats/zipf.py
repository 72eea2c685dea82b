"""Maximum-likelihood Zipf exponent of a table's accesses, with a fit-quality measure.

The model is the one the cost model uses (:func:`shardplan.estimators.compute.popularity_cdf`):
over ``N`` rows, the row of popularity rank r gets a share r^-s / H(N, s) of the lookups,
H(N, s) = sum_{r<=N} r^-s.

Ranks are taken from one half of the records and counts from the other (even and odd
records, :class:`shardplan.stats.counting.IdCounter`): ranking and counting on the same data
makes sampling noise look like skew (uniform ids with ~10 lookups each fit s ~ 0.2 that way;
with the split they fit s = 0). The likelihood is grouped: the K ranks known individually
contribute sum_r c_r log p_r(s), the lookups of all other rows one term c_tail log P(r > K),
so a sketch that knows only the heavy hitters fits the same law as exact counts.

The exponent maximises that likelihood over [0, ``MAX_EXPONENT``]: a grid, then golden-section
search around the best grid point. Fit quality is a Kolmogorov-Smirnov distance on the
access-share curve: max over k <= K of |measured share of the top k rows - fitted share|.
"""

from __future__ import annotations

import math

import numpy as np

from shardplan.stats.types import ZipfFit

MAX_EXPONENT = 4.0  # no recommender table is skewed past this; the search stops there
GRID_STEP = 0.02
SEARCH_TOL = 1e-4
EXACT_TERMS = 4096  # H(n, s): terms summed exactly, the rest by Euler-Maclaurin
#: Fewest lookups in the counting half for a fit at all.
MIN_FIT_ACCESSES = 100


def harmonic(n: int, s: float) -> float:
    """H(n, s) = sum_{r=1..n} r^-s: the first ``EXACT_TERMS`` exactly, the tail by
    Euler-Maclaurin (relative error far below 1e-9 past 4,096 terms)."""
    if n <= 0:
        return 0.0
    a = min(n, EXACT_TERMS)
    head = float(np.sum(np.arange(1, a + 1, dtype=np.float64) ** -s))
    if n <= a:
        return head
    if abs(s - 1.0) < 1e-12:
        integral = math.log(n / a)
    else:
        integral = (n ** (1.0 - s) - a ** (1.0 - s)) / (1.0 - s)
    # sum_{r=a+1}^{n} f(r) ~ int_a^n f + (f(n) - f(a)) / 2 - (f'(n) - f'(a)) / 12, f = x^-s
    return head + integral + (n ** -s - a ** -s) / 2.0 + s * (a ** (-s - 1.0) - n ** (-s - 1.0)) / 12.0


def _log_likelihood(s: float, sum_c_log_r: float, known: float, tail: float, k: int,
                    n: int) -> float:
    hn = harmonic(n, s)
    ll = -s * sum_c_log_r - (known + tail) * math.log(hn)
    if tail > 0 and n > k:
        ll += tail * math.log(max(hn - harmonic(k, s), 1e-300))
    return ll


def fit_zipf(ranked_counts: np.ndarray, total: int, support: int) -> ZipfFit | None:
    """The Zipf exponent that best explains ``ranked_counts``.

    Args:
        ranked_counts: lookups of the rows ranked 1, 2, ..., K (ranked on other data, so not
            necessarily descending).
        total: all lookups counted (those of the K rows and of the rest).
        support: rows of the table (N >= K).

    Returns:
        The fit, or None with fewer than ``MIN_FIT_ACCESSES`` lookups, fewer than two rows
        or no ranked row.
    """
    c = np.asarray(ranked_counts, dtype=np.float64)
    k = len(c)
    if total < MIN_FIT_ACCESSES or support < 2 or k == 0:
        return None
    n = max(support, k)
    known = float(c.sum())
    tail = max(float(total) - known, 0.0)
    sum_c_log_r = float(c @ np.log(np.arange(1, k + 1, dtype=np.float64)))

    def nll(s: float) -> float:
        return -_log_likelihood(s, sum_c_log_r, known, tail, k, n)

    grid = np.arange(0.0, MAX_EXPONENT + GRID_STEP / 2, GRID_STEP)
    values = [nll(float(s)) for s in grid]
    i = int(np.argmin(values))
    lo, hi = float(grid[max(i - 1, 0)]), float(grid[min(i + 1, len(grid) - 1)])
    s = _golden_min(nll, lo, hi)
    if nll(float(grid[i])) < nll(s):
        s = float(grid[i])
    s = round(s, 4)
    return ZipfFit(exponent=s, ks_distance=ks_distance(c, total, n, s), ranks=k, support=n)


def _golden_min(f, lo: float, hi: float) -> float:
    g = (math.sqrt(5.0) - 1.0) / 2.0
    a, b = lo, hi
    x1, x2 = b - g * (b - a), a + g * (b - a)
    f1, f2 = f(x1), f(x2)
    while b - a > SEARCH_TOL:
        if f1 <= f2:
            b, x2, f2 = x2, x1, f1
            x1 = b - g * (b - a)
            f1 = f(x1)
        else:
            a, x1, f1 = x1, x2, f2
            x2 = a + g * (b - a)
            f2 = f(x2)
    return (a + b) / 2.0


def zipf_share(k: int, n: int, s: float) -> float:
    """Share of lookups that the top ``k`` of ``n`` rows get under Zipf(s): H(k, s) / H(n, s)."""
    return harmonic(k, s) / harmonic(n, s)


def ks_distance(ranked_counts: np.ndarray, total: int, n: int, s: float) -> float:
    """max over k <= K of |measured share of the top k rows - H(k, s) / H(n, s)|."""
    c = np.asarray(ranked_counts, dtype=np.float64)
    if len(c) == 0 or total <= 0:
        return 0.0
    measured = np.cumsum(c) / total
    r = np.arange(1, len(c) + 1, dtype=np.float64)
    model = np.cumsum(r ** -s) / harmonic(n, s)
    return round(float(np.max(np.abs(measured - model))), 6)
