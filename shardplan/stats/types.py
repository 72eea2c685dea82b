"""Data types of ``shardplan stats``: the options, the id batches readers yield, and the
statistics measured per feature and per table.

Everything here is a frozen, keyword-only dataclass validated in ``__post_init__`` (or an
enum); the statistics modules compute them, :mod:`shardplan.stats.workload` turns them into
a :class:`shardplan.types.Workload`, :mod:`shardplan.stats.report` draws them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Callable

import numpy as np

from shardplan.errors import ShardplanError
from shardplan.types import IdOrder

# ---------------------------------------------------------------------------------------------
# Choice sets
# ---------------------------------------------------------------------------------------------


class DataFormat(StrEnum):
    """Input formats ``shardplan stats`` reads (docs/stats.md has each layout)."""

    CRITEO = "criteo"
    MOVIELENS = "movielens"
    PARQUET = "parquet"
    KJT = "kjt"


class SampleMode(StrEnum):
    """How ``--sample N`` picks its N records: the first N, or N drawn uniformly (seeded)."""

    PREFIX = "prefix"
    UNIFORM = "uniform"


class LruOrder(StrEnum):
    """The lookup order the LRU hit curve is measured in: the records' order in the files
    (``stream``), a seeded random order of them (``shuffled``: training on shuffled data), or
    the format's own choice (``auto``: shuffled for MovieLens, whose files are sorted by
    user; the files' order for the others)."""

    AUTO = "auto"
    STREAM = "stream"
    SHUFFLED = "shuffled"


class CountMode(StrEnum):
    """How a feature's ids were counted: exactly, or by sketches once past the exact limit."""

    EXACT = "exact"
    SKETCH = "sketch"


class MissingDependencyError(ShardplanError):
    """An optional package that this input needs is not installed (exit 1, one line)."""


# ---------------------------------------------------------------------------------------------
# Options
# ---------------------------------------------------------------------------------------------

#: Cache ratios (cached rows / rows) at which the LRU hit curve is measured.
DEFAULT_CACHE_RATIOS: tuple[float, ...] = (0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5)
#: Distinct ids per feature counted exactly (about 24 bytes each); past it, sketches.
DEFAULT_EXACT_LIMIT = 1 << 20
#: Accesses per feature kept for the LRU simulation (8 bytes each); spatial sampling halves
#: its rate whenever the kept stream would grow past this.
DEFAULT_LRU_ACCESSES = 1 << 19
#: Embedding width written to the workload (MLPerf DLRM-DCNv2 uses 128 for every table).
DEFAULT_EMBEDDING_DIM = 128
#: Samples per step per rank written to the workload (the CSV loader's default too).
DEFAULT_BATCH_SIZE = 512
#: Share of rows called hot for the hot-row / hot-access statistic.
DEFAULT_HOT_ROW_FRACTION = 0.01


@dataclass(frozen=True, kw_only=True, slots=True)
class StatsOptions:
    """What to read and how to measure it.

    Attributes:
        sample: read at most this many records (lines, ratings, rows, samples); None: all.
        sample_mode: the first ``sample`` records, or ``sample`` drawn uniformly with ``seed``.
        seed: seed of the uniform sample and of the shuffled LRU order.
        hash_size: map every id to ``id % hash_size`` first (MLPerf's modulo hashing); a
            table then has min(distinct ids, hash_size) rows; None: ids as they are.
        exact_limit: distinct ids per feature counted exactly; past it a feature switches to
            sketches (HLL for the distinct count, frequent items for the heavy hitters).
        lru_accesses: accesses per feature kept for the LRU simulation.
        cache_ratios: cache sizes (cached rows / rows) of the measured hit curve.
        lru_order: the lookup order of the LRU simulation (:class:`LruOrder`).
        hot_row_fraction: share of rows called hot.
        history: MovieLens only: the user-history window (last ``history`` rated movies);
            0 leaves the history feature out.
        features: Parquet only: the columns to read; None: every integer or list column.
        embedding_dim: embedding width of every table in the written workload.
        batch_size: samples per step per rank in the written workload.
    """

    sample: int | None = None
    sample_mode: SampleMode = SampleMode.PREFIX
    seed: int = 0
    hash_size: int | None = None
    exact_limit: int = DEFAULT_EXACT_LIMIT
    lru_accesses: int = DEFAULT_LRU_ACCESSES
    cache_ratios: tuple[float, ...] = DEFAULT_CACHE_RATIOS
    lru_order: LruOrder = LruOrder.AUTO
    hot_row_fraction: float = DEFAULT_HOT_ROW_FRACTION
    history: int = 0
    features: tuple[str, ...] | None = None
    embedding_dim: int = DEFAULT_EMBEDDING_DIM
    batch_size: int = DEFAULT_BATCH_SIZE

    def __post_init__(self) -> None:
        def check(cond: bool, name: str, value: object, why: str) -> None:
            if not cond:
                raise ValueError(f"{name}={value!r}: {why}")

        check(self.sample is None or self.sample > 0, "sample", self.sample, "must be > 0")
        check(self.hash_size is None or self.hash_size > 0, "hash_size", self.hash_size,
              "must be > 0")
        check(self.exact_limit > 0, "exact_limit", self.exact_limit, "must be > 0")
        check(self.lru_accesses >= 2, "lru_accesses", self.lru_accesses, "must be >= 2")
        r = self.cache_ratios
        check(len(r) > 0 and all(0.0 < x < 1.0 for x in r)
              and all(a < b for a, b in zip(r, r[1:])), "cache_ratios", r,
              "must be strictly increasing, each in (0, 1)")
        check(0.0 < self.hot_row_fraction < 1.0, "hot_row_fraction", self.hot_row_fraction,
              "must be in (0, 1)")
        check(self.history >= 0, "history", self.history, "must be >= 0")
        check(self.features is None or len(self.features) > 0, "features", self.features,
              "must name at least one column (or be left out)")
        check(self.embedding_dim > 0, "embedding_dim", self.embedding_dim, "must be > 0")
        check(self.batch_size > 0, "batch_size", self.batch_size, "must be > 0")


# ---------------------------------------------------------------------------------------------
# What readers yield
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True, slots=True)
class FeatureBatch:
    """One feature's ids for a run of consecutive records (a jagged array).

    Attributes:
        values: the ids of all records, record after record (uint64).
        lengths: ids per record (0: the feature is missing there), summing to ``len(values)``.
    """

    values: np.ndarray
    lengths: np.ndarray

    def __post_init__(self) -> None:
        if self.values.ndim != 1 or self.lengths.ndim != 1:
            raise ValueError("values and lengths must be 1-d arrays")
        if int(self.lengths.sum()) != len(self.values):
            raise ValueError(f"lengths sum to {int(self.lengths.sum())}, values has "
                             f"{len(self.values)}")

    @property
    def num_records(self) -> int:
        return len(self.lengths)

    def select(self, keep: np.ndarray) -> FeatureBatch:
        """The records where the boolean mask ``keep`` is true."""
        return FeatureBatch(values=self.values[np.repeat(keep, self.lengths)],
                            lengths=self.lengths[keep])


@dataclass(frozen=True, kw_only=True, slots=True)
class RecordBatch:
    """Consecutive records of the input, every feature's ids for them.

    Attributes:
        num_records: records in this batch (lines, ratings, rows, samples).
        features: feature name -> its ids, each with ``num_records`` lengths.
        lengths_only: feature name -> ids per record, for a feature whose ids are another
            feature's (MovieLens's user history looks up the movie table).
        bytes_done: how far into the input the reader is (for progress), in the reader's
            progress unit.
    """

    num_records: int
    features: dict[str, FeatureBatch]
    lengths_only: dict[str, np.ndarray] = field(default_factory=dict)
    bytes_done: int = 0

    def select(self, keep: np.ndarray) -> RecordBatch:
        """The records where the boolean mask ``keep`` is true."""
        return RecordBatch(num_records=int(keep.sum()), bytes_done=self.bytes_done,
                           features={k: f.select(keep) for k, f in self.features.items()},
                           lengths_only={k: v[keep] for k, v in self.lengths_only.items()})


class Phase(StrEnum):
    """What a run is doing: counting the records (before a uniform sample), reading them, or
    measuring each feature once read (Zipf fit, LRU hit curve)."""

    COUNTING = "counting"
    READING = "reading"
    MEASURING = "measuring"


@dataclass(frozen=True, kw_only=True, slots=True)
class ProgressUpdate:
    """How far the run is: ``done`` of ``total`` (``unit``: bytes, records or features) in
    ``phase``, and the records read so far."""

    done: int
    total: int
    unit: str
    records: int
    phase: Phase = Phase.READING


ProgressFn = Callable[[ProgressUpdate], None]


# ---------------------------------------------------------------------------------------------
# Statistics
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True, slots=True)
class PoolingStats:
    """Ids per record: the pooling factor and its distribution (missing counts as 0)."""

    mean: float
    p50: int
    p90: int
    p99: int
    max: int


@dataclass(frozen=True, kw_only=True, slots=True)
class ZipfFit:
    """A maximum-likelihood Zipf exponent over ``support`` rows, with its fit quality.

    Attributes:
        exponent: ``s`` of access share ~ rank^-s.
        ks_distance: fit quality: the largest gap, over the ranks known individually, between
            the measured share of accesses to the hottest k rows and the fitted law's share
            (0 is a perfect fit; a uniform table fitted with s = 0 scores the noise).
        ranks: ranks whose counts entered the fit individually (the rest as one group).
        support: rows the law is spread over (the table's rows).
    """

    exponent: float
    ks_distance: float
    ranks: int
    support: int


@dataclass(frozen=True, kw_only=True, slots=True)
class IdOrderFinding:
    """Whether id value order follows popularity.

    Attributes:
        spearman: rank correlation between id value and access count over the ``ids``
            most frequent ids (-1: the smaller the id the more frequent, 0: unrelated).
        ids: how many frequent ids it was computed over.
        order: the verdict for the workload: ``frequency`` when |spearman| reaches the
            threshold, else ``hashed``.
    """

    spearman: float
    ids: int
    order: IdOrder


@dataclass(frozen=True, kw_only=True, slots=True)
class IdStats:
    """What the ids of one feature say about its table.

    Attributes:
        accesses: ids looked up (over all records read).
        distinct: distinct ids seen (after hashing); exact or an HLL estimate.
        count_mode: exact counting, or sketches.
        rows: the table's rows: ``distinct``; with a hash size N, min(distinct ids before
            hashing, N), MLPerf's min(cardinality, N) (hashed ids that collide do not
            make the table smaller).
        zipf: the Zipf fit, None when there is too little data.
        hot_row_fraction: share of rows taken as hot (the hottest ones).
        hot_access_fraction: share of accesses that went to them.
        hit_curve: LRU hit rate at each cache ratio: (cache ratio, hit rate) pairs.
        lru_sample_rate: share of the lookups the LRU simulation used: about the share of
            ids kept (spatial sampling), or the window's share (a table of few ids, each
            looked up more often than ``lru_accesses``: the latest lookups of every id).
        lru_order: the lookup order the hit curve was measured in (stream or shuffled).
        id_order: the id-order finding, None with too few frequent ids.
        top_counts: access counts of the most frequent ids, descending (for the plot).
    """

    accesses: int
    distinct: int
    count_mode: CountMode
    rows: int
    zipf: ZipfFit | None
    hot_row_fraction: float | None
    hot_access_fraction: float | None
    hit_curve: tuple[tuple[float, float], ...]
    lru_sample_rate: float
    lru_order: LruOrder
    id_order: IdOrderFinding | None
    top_counts: tuple[int, ...]


@dataclass(frozen=True, kw_only=True, slots=True)
class FeatureStats:
    """One input feature: its pooling, and its id statistics (None for a feature that reuses
    another feature's ids, such as MovieLens's user history)."""

    name: str
    pooling: PoolingStats
    ids: IdStats | None


@dataclass(frozen=True, kw_only=True, slots=True)
class TableStats:
    """One embedding table: the features it serves; ``ids`` are its rows' statistics."""

    name: str
    features: tuple[FeatureStats, ...]
    ids: IdStats

    @property
    def pooling_factor(self) -> float:
        """Mean ids per sample summed over the table's features (``TableSpec`` semantics)."""
        return sum(f.pooling.mean for f in self.features)


@dataclass(frozen=True, kw_only=True, slots=True)
class StatsResult:
    """Everything one ``shardplan stats`` run measured.

    Attributes:
        format: the input format.
        paths: the files read, as given.
        records: records read (after sampling).
        records_total: records in the input when known (a uniform sample counts them first).
        options: the options used.
        tables: per table, in input order.
        skipped: features left out, with why (never present, no ids).
    """

    format: DataFormat
    paths: tuple[str, ...]
    records: int
    records_total: int | None
    options: StatsOptions
    tables: tuple[TableStats, ...]
    skipped: tuple[tuple[str, str], ...] = ()
