"""The front door: read the data once, stream every feature's statistics, finish them.

Per feature it keeps a histogram of ids per record, the access counts per id
(:class:`shardplan.stats.counting.IdCounter`) and a spatially sampled lookup stream
(:class:`shardplan.stats.lru.LruSampler`); memory is bounded by ``exact_limit`` and
``lru_accesses`` per feature, whatever the input's size. At the end the Zipf fit, the
hot-row share, the LRU hit curve and the id-order finding are computed from them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from shardplan.errors import SpecError
from shardplan.stats.counting import (
    DistinctCounter,
    IdCounter,
    LengthHistogram,
    require_datasketches,
)
from shardplan.stats.lru import LruSampler, hit_curve, shuffled
from shardplan.stats.order import id_order_finding
from shardplan.stats.readers import Reader
from shardplan.stats.types import (
    DataFormat,
    FeatureBatch,
    FeatureStats,
    IdStats,
    LruOrder,
    Phase,
    ProgressFn,
    ProgressUpdate,
    RecordBatch,
    SampleMode,
    StatsOptions,
    StatsResult,
    TableStats,
)
from shardplan.stats.zipf import fit_zipf

#: Ids ranked per feature (the fit uses the reliable ones, the hot share and the plot these).
TOP_IDS = 1 << 16
#: Most-frequent counts kept per feature for the rank-frequency plot.
PLOT_TOP = 10_000


def make_reader(fmt: DataFormat, paths: Sequence[str | Path], options: StatsOptions) -> Reader:
    """The reader of ``fmt`` over ``paths``. Raises MissingDependencyError when the format's
    optional packages are missing."""
    ps = tuple(Path(p) for p in paths)
    if fmt is DataFormat.CRITEO:
        from shardplan.stats.criteo import CriteoReader
        return CriteoReader(ps, options)
    if fmt is DataFormat.MOVIELENS:
        from shardplan.stats.movielens import MovieLensReader
        return MovieLensReader(ps, options)
    if fmt is DataFormat.PARQUET:
        from shardplan.stats.parquet import ParquetReader
        return ParquetReader(ps, options)
    from shardplan.stats.kjt import KjtReader
    return KjtReader(ps, options)


class FeatureAccumulator:
    """Streaming statistics of one feature with ids."""

    def __init__(self, options: StatsOptions) -> None:
        self.options = options
        self.lengths = LengthHistogram()
        self.counter = IdCounter(options.exact_limit, TOP_IDS)
        self.lru = LruSampler(options.lru_accesses)
        self.unhashed = None if options.hash_size is None else \
            DistinctCounter(options.exact_limit, options.hash_size)

    def add(self, batch: FeatureBatch, first_record: int) -> None:
        """Take ``batch``, whose first record is record ``first_record`` of the input."""
        self.lengths.add(batch.lengths)
        values = batch.values
        if self.unhashed is not None:
            self.unhashed.add(values)
            values = values % np.uint64(self.options.hash_size)
        half = ((first_record + np.arange(batch.num_records)) & 1).astype(np.uint8)
        self.counter.add(values, np.repeat(half, batch.lengths))
        self.lru.add(values)

    def result(self, order: LruOrder) -> IdStats:
        """The feature's statistics; ``order``: stream or shuffled (seeded by ``seed``)."""
        rc = self.counter.result()
        # hashed: min(distinct ids, hash size) rows, as MLPerf sizes its tables (ids that
        # collide under the modulo still leave the table that many rows); never fewer than
        # the hashed ids seen (an HLL estimate may fall under them)
        rows = max(rc.distinct, 1 if self.unhashed is None else self.unhashed.result(), 1)
        zipf = fit_zipf(rc.ranked_b[: rc.reliable], rc.accesses_b, rows)
        hot_rows = hot_share = None
        k = min(max(1, round(self.options.hot_row_fraction * rows)), len(rc.ranked_ids))
        if 0 < k < rows and rc.accesses_b > 0:
            hot_rows = k / rows
            hot_share = float(rc.ranked_b[:k].sum()) / rc.accesses_b
        sample = self.lru.sample()
        if order is LruOrder.SHUFFLED:
            sample = shuffled(sample, np.random.default_rng(self.options.seed))
        curve = hit_curve(sample, rows, self.options.cache_ratios)
        return IdStats(
            accesses=rc.accesses_a + rc.accesses_b, distinct=rc.distinct, count_mode=rc.mode,
            rows=rows, zipf=zipf, hot_row_fraction=hot_rows, hot_access_fraction=hot_share,
            hit_curve=curve, lru_sample_rate=self.lru.used_fraction, lru_order=order,
            id_order=id_order_finding(rc.top_ids, rc.top_counts),
            top_counts=tuple(int(c) for c in rc.top_counts[:PLOT_TOP]))


def _sampled(reader: Reader, options: StatsOptions, progress: ProgressFn | None
             ) -> tuple[Iterator[RecordBatch], int | None]:
    """The reader's batches cut to the sample, and the input's record count when known
    (``progress`` hears how far counting it is)."""
    batches = reader.batches()
    n = options.sample
    if n is None:
        return batches, None
    if options.sample_mode is SampleMode.PREFIX:
        def prefix() -> Iterator[RecordBatch]:
            left = n
            for b in batches:
                if b.num_records >= left:
                    keep = np.zeros(b.num_records, bool)
                    keep[:left] = True
                    yield b.select(keep)
                    batches.close()  # closes the file now
                    return
                left -= b.num_records
                yield b
        return prefix(), None
    step = None
    if progress is not None and reader.progress_unit == "bytes":
        size = reader.progress_total()

        def step(done: int) -> None:
            progress(ProgressUpdate(done=done, total=size, unit="bytes", records=0,
                                    phase=Phase.COUNTING))
    total = reader.count_records(step)
    rng = np.random.default_rng(options.seed)

    def uniform() -> Iterator[RecordBatch]:
        # Exactly min(n, total) records, each subset equally likely: per batch, how many of
        # the still-wanted records fall in it is hypergeometric, then which ones is uniform.
        want, left = min(n, total), total
        for b in batches:
            m = b.num_records
            take = int(rng.hypergeometric(m, left - m, want)) if want and left > m else \
                min(want, m)
            keep = np.zeros(m, bool)
            keep[rng.choice(m, size=take, replace=False)] = True
            want, left = want - take, left - m
            if take:
                yield b.select(keep)
    return uniform(), total


def collect_stats(paths: Sequence[str | Path], fmt: DataFormat, options: StatsOptions | None = None,
                  *, progress: ProgressFn | None = None) -> StatsResult:
    """Read ``paths`` as ``fmt`` and measure every feature.

    Args:
        paths: input files, read in order as one stream.
        fmt: their format.
        options: sample, hashing and limits; defaults when None.
        progress: called after each batch with how far the read is.

    Returns:
        The statistics per table.

    Raises:
        SpecError: a file is missing, empty or malformed (naming file, line and field), or
            holds no records.
        MissingDependencyError: the [stats] extra (or torchrec, for ``kjt``) is missing.

    Example:
        >>> from shardplan.stats import collect_stats, DataFormat
        >>> result = collect_stats(["day_0.gz"], DataFormat.CRITEO)   # doctest: +SKIP
        >>> [(t.name, t.ids.rows) for t in result.tables][:1]           # doctest: +SKIP
        [('t_cat_0', 39884)]
    """
    options = options or StatsOptions()
    if not paths:
        raise SpecError("no input files; pass at least one DATA file")
    require_datasketches()
    reader = make_reader(fmt, paths, options)
    layout = reader.layout()
    id_features = {t.id_feature for t in layout}
    accs = {name: FeatureAccumulator(options) for name in id_features}
    only_lengths = {f: LengthHistogram() for t in layout for f in t.features if f not in accs}
    batches, total = _sampled(reader, options, progress)
    total_units = reader.progress_total()
    records = 0
    for batch in batches:
        for name, acc in accs.items():
            acc.add(batch.features[name], records)
        for name, hist in only_lengths.items():
            if name in batch.lengths_only:
                hist.add(batch.lengths_only[name])
        records += batch.num_records
        if progress is not None:
            progress(ProgressUpdate(done=batch.bytes_done, total=total_units,
                                    unit=reader.progress_unit, records=records))
    if records == 0:
        raise SpecError("no records in the input (only a header?); pass data with records",
                        source=str(paths[0]))
    order = options.lru_order
    if order is LruOrder.AUTO:
        order = LruOrder.STREAM if reader.training_order else LruOrder.SHUFFLED
    ids = {}
    for i, (name, acc) in enumerate(accs.items()):
        if progress is not None:
            progress(ProgressUpdate(done=i, total=len(accs), unit="features", records=records,
                                    phase=Phase.MEASURING))
        ids[name] = acc.result(order)
    tables, skipped = [], []
    for t in layout:
        feats = []
        for f in t.features:
            hist = accs[f].lengths if f in accs else only_lengths[f]
            feats.append(FeatureStats(name=f, pooling=hist.stats(),
                                      ids=ids[f] if f in accs else None))
        stats = TableStats(name=t.name, features=tuple(feats), ids=ids[t.id_feature])
        if stats.ids.accesses == 0:
            skipped.append((t.name, "no ids in the records read (the feature is always missing)"))
            continue
        tables.append(stats)
    skipped += [(c, "not integer ids (left out)") for c in reader.left_out]
    return StatsResult(format=fmt, paths=tuple(str(p) for p in paths), records=records,
                       records_total=total, options=options, tables=tuple(tables),
                       skipped=tuple(skipped))
