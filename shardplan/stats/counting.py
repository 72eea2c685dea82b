"""Streaming counts of one feature in bounded memory: ids per record, and access counts per id.

Access counts are kept for two halves of the records (even and odd record numbers): the
Zipf fit ranks ids on one half and counts them on the other (:mod:`shardplan.stats.zipf`), so
sampling noise cannot pass for skew. Counting is exact up to ``exact_limit`` distinct ids
(sorted numpy arrays, about 24 bytes an id, merged in amortised batches); past it the feature
switches to Apache DataSketches: an HLL sketch for the distinct count and one frequent-items
sketch per half for the heavy hitters, so memory stays bounded on data larger than RAM.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from shardplan.stats.types import CountMode, MissingDependencyError, PoolingStats

#: log2 of HLL buckets: relative standard error about 1.04 / sqrt(2**14) = 0.8%.
HLL_LG_K = 14
#: log2 of a frequent-items sketch's map: tracks up to 0.75 x 2**14 ids; counts are exact to
#: within 3.5 / 2**14 = 0.02% of the half's accesses (DataSketches' a-priori error).
FREQUENT_LG_MAX_K = 14
#: Ranks enter the Zipf fit one by one while their count in the ranking half is at least this
#: (Poisson error <= 25%); rarer ids are ranked by noise and join the grouped tail.
RANK_MIN_COUNT = 16
#: A feature's pending chunk counts are merged once they outnumber its merged ids (or this).
MERGE_MIN_PENDING = 1 << 16


def require_datasketches():
    """The ``datasketches`` module. Raises MissingDependencyError naming the extra."""
    try:
        import datasketches
    except ImportError:
        raise MissingDependencyError(
            "shardplan stats needs datasketches and pyarrow (the stats extra of shardplan); "
            "install them with: pip install datasketches pyarrow") from None
    return datasketches


def mix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64 (its increment, then its finaliser) over uint64 ids: a fixed, well-spread 64-bit hash (the same on
    every machine), used to sample ids and to break count ties without favouring small ids."""
    with np.errstate(over="ignore"):
        z = x.astype(np.uint64) + np.uint64(0x9E3779B97F4A7C15)  # so that 0 does not map to 0
        z ^= z >> np.uint64(30)
        z *= np.uint64(0xBF58476D1CE4E5B9)
        z ^= z >> np.uint64(27)
        z *= np.uint64(0x94D049BB133111EB)
        z ^= z >> np.uint64(31)
    return z


def _merge_counts(ids: np.ndarray, a: np.ndarray, b: np.ndarray
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sum counts of equal ids: (sorted distinct ids, their half-A counts, half-B counts)."""
    order = np.argsort(ids, kind="stable")
    s = ids[order]
    if len(s) == 0:
        return s, a[:0], b[:0]
    start = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])
    return s[start], np.add.reduceat(a[order], start), np.add.reduceat(b[order], start)


def rank_order(ids: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Indices that sort ids by count, descending; equal counts in hash order (not id order,
    so that ties cannot make id order look like popularity order)."""
    return np.lexsort((mix64(ids), -counts))


@dataclass(frozen=True, kw_only=True, slots=True)
class RankedCounts:
    """The counts the Zipf fit, the hot-row share and the id-order finding need.

    Attributes:
        distinct: distinct ids (exact, or the HLL estimate).
        accesses_a, accesses_b: accesses in the even and the odd records.
        ranked_ids: ids ranked by their half-A count, descending (in sketch mode only the
            heavy hitters the sketch is sure of).
        ranked_b: the half-B counts of ``ranked_ids``.
        reliable: how many leading ``ranked_ids`` have a half-A count of at least
            ``RANK_MIN_COUNT`` (the ranks the Zipf fit takes one by one).
        top_ids, top_counts: the most frequent ids by total count, descending.
        mode: exact or sketch.
    """

    distinct: int
    accesses_a: int
    accesses_b: int
    ranked_ids: np.ndarray
    ranked_b: np.ndarray
    reliable: int
    top_ids: np.ndarray
    top_counts: np.ndarray
    mode: CountMode


class IdCounter:
    """Access counts per id of one feature, in two halves; exact, then sketched.

    Args:
        exact_limit: distinct ids counted exactly before switching to sketches.
        top: how many ids to rank in the result (the fit and the plot use at most these).
    """

    def __init__(self, exact_limit: int, top: int) -> None:
        self.exact_limit, self.top = exact_limit, top
        self.mode = CountMode.EXACT
        self.ids = np.zeros(0, np.uint64)
        self.a = np.zeros(0, np.int64)
        self.b = np.zeros(0, np.int64)
        self._pending: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self._pending_n = 0
        self.accesses_a = self.accesses_b = 0
        self._hll = self._freq_a = self._freq_b = None

    def add(self, values: np.ndarray, half: np.ndarray) -> None:
        """Count ``values`` (uint64); ``half[i]`` (0 or 1) says which half value i is in."""
        if len(values) == 0:
            return
        u, inv = np.unique(values, return_inverse=True)
        in_b = half.astype(bool)
        b = np.bincount(inv[in_b], minlength=len(u)).astype(np.int64)
        a = np.bincount(inv, minlength=len(u)).astype(np.int64) - b
        nb = int(in_b.sum())
        self.accesses_a += len(values) - nb
        self.accesses_b += nb
        if self.mode is CountMode.SKETCH:
            self._sketch_update(u, a, b)
            return
        self._pending.append((u, a, b))
        self._pending_n += len(u)
        if self._pending_n >= max(len(self.ids), MERGE_MIN_PENDING):
            self._merge()

    def _merge(self) -> None:
        if not self._pending:
            return
        parts = [(self.ids, self.a, self.b), *self._pending]
        self.ids, self.a, self.b = _merge_counts(*(np.concatenate(x) for x in zip(*parts)))
        self._pending, self._pending_n = [], 0
        if len(self.ids) > self.exact_limit:
            self._to_sketch()

    def _to_sketch(self) -> None:
        ds = require_datasketches()
        self.mode = CountMode.SKETCH
        self._hll = ds.hll_sketch(HLL_LG_K)
        self._freq_a = ds.frequent_items_sketch(FREQUENT_LG_MAX_K)
        self._freq_b = ds.frequent_items_sketch(FREQUENT_LG_MAX_K)
        ids, a, b = self.ids, self.a, self.b
        self.ids, self.a, self.b = self.ids[:0], self.a[:0], self.b[:0]
        self._sketch_update(ids, a, b)

    def _sketch_update(self, u: np.ndarray, a: np.ndarray, b: np.ndarray) -> None:
        hll, fa, fb = self._hll.update, self._freq_a.update, self._freq_b.update
        for x, ca, cb in zip(u.tolist(), a.tolist(), b.tolist()):
            hll(x)
            if ca:
                fa(x, ca)
            if cb:
                fb(x, cb)

    def result(self) -> RankedCounts:
        """The ranked counts (merges what is pending first)."""
        if self.mode is CountMode.EXACT:
            self._merge()
        if self.mode is CountMode.EXACT:
            ranked = rank_order(self.ids, self.a)[: self.top]
            ranked = ranked[self.a[ranked] > 0]
            total = self.a + self.b
            top = rank_order(self.ids, total)[: self.top]
            return RankedCounts(
                distinct=len(self.ids), accesses_a=self.accesses_a, accesses_b=self.accesses_b,
                ranked_ids=self.ids[ranked], ranked_b=self.b[ranked],
                reliable=int(np.sum(self.a[ranked] >= RANK_MIN_COUNT)), top_ids=self.ids[top],
                top_counts=total[top], mode=self.mode)
        ds = require_datasketches()
        sure = ds.frequent_items_error_type.NO_FALSE_POSITIVES
        fa, fb = self._freq_a, self._freq_b
        ids_a = np.array([it[0] for it in fa.get_frequent_items(sure)], np.uint64)
        est_a = np.array([fa.get_estimate(int(x)) for x in ids_a], np.int64)
        ranked = rank_order(ids_a, est_a)[: self.top]
        ranked_ids = ids_a[ranked]
        ranked_b = np.array([fb.get_estimate(int(x)) for x in ranked_ids], np.int64)
        both = np.union1d(ids_a, np.array([it[0] for it in fb.get_frequent_items(sure)],
                                          np.uint64))
        total = np.array([fa.get_estimate(int(x)) + fb.get_estimate(int(x)) for x in both],
                         np.int64)
        top = rank_order(both, total)[: self.top]
        distinct = max(int(round(self._hll.get_estimate())), len(both))
        return RankedCounts(
            distinct=distinct, accesses_a=self.accesses_a, accesses_b=self.accesses_b,
            ranked_ids=ranked_ids, ranked_b=ranked_b,
            reliable=int(np.sum(est_a[ranked] >= RANK_MIN_COUNT)), top_ids=both[top],
            top_counts=total[top], mode=self.mode)


class DistinctCounter:
    """Distinct values of a stream, counted up to ``cap`` (past it only "at least ``cap``"
    matters): exactly (sorted numpy arrays) up to ``exact_limit`` values, then an HLL sketch.

    It counts a feature's ids before ``--hash-size`` hashing: a hashed table has
    min(distinct ids, hash size) rows, as in MLPerf's preprocessing.

    Args:
        exact_limit: distinct values counted exactly before switching to an HLL sketch.
        cap: the count that settles the answer; counting stops there.
    """

    def __init__(self, exact_limit: int, cap: int) -> None:
        self.exact_limit, self.cap = exact_limit, cap
        self.values = np.zeros(0, np.uint64)
        self._pending: list[np.ndarray] = []
        self._pending_n = 0
        self._hll = None
        self._reached = False

    def add(self, values: np.ndarray) -> None:
        """Count ``values`` (uint64)."""
        if self._reached or len(values) == 0:
            return
        u = np.unique(values)
        if self._hll is not None:
            update = self._hll.update
            for x in u.tolist():
                update(x)
            self._reached = self._hll.get_estimate() >= self.cap
            return
        self._pending.append(u)
        self._pending_n += len(u)
        if self._pending_n >= max(len(self.values), MERGE_MIN_PENDING):
            self._merge()

    def _merge(self) -> None:
        if not self._pending:
            return
        self.values = np.unique(np.concatenate([self.values, *self._pending]))
        self._pending, self._pending_n = [], 0
        if len(self.values) >= self.cap:
            self._reached = True
            self.values = self.values[:0]
        elif len(self.values) > self.exact_limit:
            self._hll = require_datasketches().hll_sketch(HLL_LG_K)
            for x in self.values.tolist():
                self._hll.update(x)
            self.values = self.values[:0]

    def result(self) -> int:
        """min(distinct values, ``cap``): exact below ``exact_limit``, else an HLL estimate."""
        if self._hll is None and not self._reached:
            self._merge()
        if self._reached:
            return self.cap
        if self._hll is not None:
            return min(int(round(self._hll.get_estimate())), self.cap)
        return len(self.values)


class LengthHistogram:
    """How many records had each number of ids (exact: lengths are small integers)."""

    def __init__(self) -> None:
        self.counts = np.zeros(1, np.int64)

    def add(self, lengths: np.ndarray) -> None:
        if len(lengths):
            self.add_counts(np.bincount(lengths))

    def add_counts(self, length_counts: np.ndarray) -> None:
        """Add a histogram (``length_counts[k]`` records with k ids)."""
        if len(length_counts) > len(self.counts):
            self.counts = np.pad(self.counts, (0, len(length_counts) - len(self.counts)))
        self.counts[: len(length_counts)] += length_counts

    @property
    def records(self) -> int:
        return int(self.counts.sum())

    def stats(self) -> PoolingStats:
        """Mean and percentiles (nearest rank) of ids per record."""
        n = self.records
        if n == 0:
            return PoolingStats(mean=0.0, p50=0, p90=0, p99=0, max=0)
        k = np.arange(len(self.counts))
        cum = np.cumsum(self.counts)

        def pct(q: float) -> int:
            return int(np.searchsorted(cum, q * n, side="left"))

        return PoolingStats(mean=float((k * self.counts).sum() / n), p50=pct(0.5), p90=pct(0.9),
                            p99=pct(0.99), max=int(np.flatnonzero(self.counts)[-1]))
