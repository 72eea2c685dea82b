"""LRU cache-hit curves from an id stream: spatially sampled stack distances.

What it measures: the hit rate of an LRU cache holding ``floor(ratio x rows)`` rows, updated on
every lookup in stream order, at each cache ratio, scored on the second half of the kept
stream after the first half has warmed the cache (a cold cache would count every first touch
as a miss, which a long training run pays only once).

How: an LRU cache of C rows hits a lookup exactly when fewer than C distinct other ids were
looked up since the previous lookup of the same id (its *stack distance*, Mattson et al.
1970), so one pass of stack distances gives the hit rate at every cache size. Distances are
computed offline in O(n log^2 n) vectorised numpy (:func:`stack_distances`). To bound memory
the stream is spatially sampled as in SHARDS (Waldspurger et al., FAST 2015): an id is kept
with all its lookups when its hash falls under a threshold (rate R), distances in the sample
scale by 1/R, and the SHARDS_adj correction takes out the luck of which hot ids were kept; the
rate halves whenever the kept stream would outgrow its budget. Without sampling (a stream
within budget) the curve is exactly that of an LRU simulation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from shardplan.stats.counting import mix64

HASH_BITS = 24  # sampling threshold resolution: rates are multiples of 2**-24
#: Share of the kept stream that warms the cache before hits are counted.
WARMUP_FRACTION = 0.5
#: Fewest ids a spatial sample may keep; below it the sampler keeps a window of the latest
#: lookups instead (SHARDS needs enough sampled ids for its rate to stand for the table).
MIN_SAMPLED_IDS = 64


@dataclass(frozen=True, kw_only=True, slots=True)
class SampledStream:
    """Kept lookups: their ids and their positions in the full stream (in order), how many
    lookups were offered in all, and the share of ids kept."""

    values: np.ndarray
    positions: np.ndarray
    offered: int
    rate: float


class LruSampler:
    """Keeps a spatially sampled id stream of at most ``max_accesses`` lookups (16 bytes
    each: the id and its position).

    When halving the rate would leave fewer than ``MIN_SAMPLED_IDS`` ids (a table of few ids,
    each looked up more often than the budget allows), spatial sampling could no longer stand
    for the table: the sampler keeps the latest ``max_accesses`` lookups of every id instead
    (a window, scored as a stream of its own).
    """

    def __init__(self, max_accesses: int) -> None:
        self.max_accesses = max_accesses
        self.threshold = 1 << HASH_BITS
        self.window = False
        self._ring: np.ndarray | None = None  # window mode: the latest lookups, a ring
        self._values: list[np.ndarray] = []
        self._positions: list[np.ndarray] = []
        self._kept = 0
        self._offered = 0

    @property
    def rate(self) -> float:
        """Share of ids kept (1 in window mode: every id, the latest lookups)."""
        return 1.0 if self.window else self.threshold / (1 << HASH_BITS)

    @property
    def used_fraction(self) -> float:
        """Share of the offered lookups the hit curve is computed from (about ``rate`` under
        spatial sampling; the window's share in window mode)."""
        if self._offered == 0:
            return 1.0
        return min(self._kept, self.max_accesses) / self._offered if self.window else self.rate

    def add(self, values: np.ndarray) -> None:
        """Offer ``values`` (uint64 ids, in stream order)."""
        if self.window:
            self._offered += len(values)
            self._append(values[-self.max_accesses:])
            return
        raw = values
        pos = np.arange(self._offered, self._offered + len(values), dtype=np.int64)
        self._offered += len(values)
        if self.threshold < (1 << HASH_BITS):
            keep = self._keep(values, self.threshold)
            values, pos = values[keep], pos[keep]
        if len(values) == 0:
            return
        self._values.append(values)
        self._positions.append(pos)
        self._kept += len(values)
        while self._kept > self.max_accesses:
            s = self.sample()
            half = self.threshold // 2
            keep = self._keep(s.values, half)
            if half == 0 or len(np.unique(s.values[keep])) < MIN_SAMPLED_IDS:
                # everything seen so far is kept at rate 1; otherwise only this batch is whole
                whole = s.values if self.threshold == 1 << HASH_BITS else raw
                self.window, self._values, self._positions, self._kept = True, [], [], 0
                self._append(whole[-self.max_accesses:])
                return
            self.threshold = half
            self._values, self._positions = [s.values[keep]], [s.positions[keep]]
            self._kept = int(keep.sum())

    def _append(self, values: np.ndarray) -> None:
        """Window mode: write ``values`` (at most ``max_accesses``) into the ring of the latest
        ``max_accesses`` lookups; ``_kept`` counts every lookup written."""
        if self._ring is None:
            self._ring = np.zeros(self.max_accesses, np.uint64)
        k, at = len(values), self._kept % self.max_accesses
        first = min(k, self.max_accesses - at)
        self._ring[at:at + first] = values[:first]
        self._ring[:k - first] = values[first:]
        self._kept += k

    @staticmethod
    def _keep(values: np.ndarray, threshold: int) -> np.ndarray:
        return (mix64(values) >> np.uint64(64 - HASH_BITS)) < np.uint64(threshold)

    def sample(self) -> SampledStream:
        """The kept lookups so far (in window mode: the window, as a stream of its own)."""
        if self.window:
            if self._ring is None:
                values = np.zeros(0, np.uint64)
            elif self._kept < self.max_accesses:
                values = self._ring[:self._kept]
            else:
                at = self._kept % self.max_accesses
                values = np.concatenate([self._ring[at:], self._ring[:at]])
            return SampledStream(values=values, positions=np.arange(len(values)),
                                 offered=len(values), rate=1.0)
        if len(self._values) > 1:
            self._values = [np.concatenate(self._values)]
            self._positions = [np.concatenate(self._positions)]
        values = self._values[0] if self._values else np.zeros(0, np.uint64)
        positions = self._positions[0] if self._positions else np.zeros(0, np.int64)
        return SampledStream(values=values, positions=positions, offered=self._offered,
                             rate=self.rate)


def shuffled(sample: SampledStream, rng: np.random.Generator) -> SampledStream:
    """``sample`` as if the whole stream had been shuffled first: the kept lookups in a random
    order, at random positions of the stream (a spatial sample of a shuffled stream is a
    random order of the same lookups, each position equally likely)."""
    n = len(sample.values)
    if n == 0:
        return sample
    positions = np.sort(rng.choice(sample.offered, size=n, replace=False)).astype(np.int64)
    return SampledStream(values=sample.values[rng.permutation(n)], positions=positions,
                         offered=sample.offered, rate=sample.rate)


def stack_distances(stream: np.ndarray) -> np.ndarray:
    """LRU stack distance of every lookup: the number of distinct other ids looked up since
    the previous lookup of the same id; -1 for a first lookup.

    For a lookup at t whose id was last looked up at p, the distance is (t - p - 1) minus the
    lookups j in (p, t) whose id comes again before t (those are repeats inside the window),
    i.e. the (previous, repeat) pairs (j, k) with p < j and k < t. That 2-d dominance count is
    answered for all t at once with a merge-sort tree over the pairs in repeat order: each
    prefix splits into power-of-two blocks, each block sorted, one ``searchsorted`` a level.

    Args:
        stream: ids (any integer dtype), in lookup order.

    Returns:
        int64 distances, -1 where the id is new.
    """
    n = len(stream)
    dist = np.full(n, -1, np.int64)
    if n < 2:
        return dist
    order = np.argsort(stream, kind="stable")
    same = stream[order[1:]] == stream[order[:-1]]
    prev = np.full(n, -1, np.int64)
    prev[order[1:][same]] = order[:-1][same]  # consecutive lookups of one id
    # Repeats t (sorted) with their previous lookups p are also the pairs (left=p, right=t)
    # sorted by right; the pairs with right < t[i] are the first i, so prefix i is i.
    t = np.flatnonzero(prev >= 0)
    if len(t) == 0:
        return dist
    p = prev[t]
    m = len(t)
    prefix = np.arange(m, dtype=np.int64)
    inside = np.zeros(m, np.int64)
    width = np.int64(n)  # > any position: key = block * width + left
    vals = p.copy()
    level = 0
    while (1 << level) <= m:
        block = prefix >> level
        keys = np.sort(block * width + vals, kind="stable")  # merges the two sorted runs
        vals = keys - block * width
        sel = (block & 1).astype(bool)
        if sel.any():
            b = block[sel] - 1
            end = (b + 1) << level
            inside[sel] += end - np.searchsorted(keys, b * width + p[sel], side="right")
        level += 1
    dist[t] = (t - p - 1) - inside
    return dist


def hit_curve(sample: SampledStream, rows: int, ratios: tuple[float, ...],
              warmup_fraction: float = WARMUP_FRACTION) -> tuple[tuple[float, float], ...]:
    """LRU hit rate at each cache ratio, from a spatially sampled stream.

    Lookups at positions from ``warmup_fraction`` of the offered stream on are scored. A cache
    of C rows holds C x rate sampled ids, so a kept lookup hits when its sampled stack
    distance is below that. SHARDS_adj corrects the sample's size: the kept lookups scored
    differ from the expected rate x offered by the heavy ids that happened to be kept or not
    (a hot id's lookups are nearly all short-distance hits), so the difference is added to
    the hits at the smallest distance and the rate is over the expected count.

    Args:
        sample: the kept lookups (:meth:`LruSampler.sample`).
        rows: the table's rows (cache rows = floor(cache ratio x rows)).
        ratios: cache ratios, increasing.
        warmup_fraction: leading share of the stream that only warms the cache.

    Returns:
        (ratio, hit rate) pairs; hit rates never decrease with the ratio (LRU inclusion).
    """
    start = int(sample.offered * warmup_fraction)
    expected = sample.rate * (sample.offered - start)
    if expected <= 0:
        return tuple((r, 0.0) for r in ratios)
    scored = sample.positions >= start
    d = stack_distances(sample.values)[scored]
    surplus = int(scored.sum()) - expected
    d = np.sort(d[d >= 0])
    out = []
    for r in ratios:
        capacity = math.floor(r * rows) * sample.rate  # whole cache rows, scaled to the sample
        hits = int(np.searchsorted(d, capacity, side="left")) if capacity > 0 else 0
        adjusted = (hits - surplus) / expected if capacity > 0 else 0.0
        out.append((r, min(max(adjusted, 0.0), 1.0)))
    return tuple(out)
