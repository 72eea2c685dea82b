"""``shardplan stats``: workload statistics from real data (docs/stats.md).

Reads Criteo, MovieLens, Parquet/Arrow or TorchRec KJT batches in one streaming pass with
bounded memory and measures, per feature: rows (distinct ids, after optional modulo
hashing), pooling factor (mean and percentiles), a maximum-likelihood Zipf exponent with its
fit quality, the hot-row share, an LRU cache-hit curve and whether id order follows
popularity; then writes a workload the loaders accept.

Modules: ``types`` (options and results), ``readers`` (shared reading and parsing) with one
module per format (``criteo``, ``movielens``, ``parquet``, ``kjt``), ``counting`` (exact and
sketched counts), ``zipf`` (the fit), ``lru`` (hit curves), ``order`` (the id-order finding),
``collect`` (the front door), ``workload`` (the written workload), ``report`` (HTML).
Needs the [stats] extra (datasketches, pyarrow); nothing here imports torch except ``kjt``.

Example:
    >>> from shardplan.stats import DataFormat, StatsOptions, collect_stats, workload_of
    >>> result = collect_stats(["train.txt"], DataFormat.CRITEO,
    ...                        StatsOptions(sample=1_000_000))          # doctest: +SKIP
    >>> workload_of(result).tables[0].name                            # doctest: +SKIP
    't_cat_0'
"""

from shardplan.stats.collect import collect_stats
from shardplan.stats.types import (
    CountMode,
    DataFormat,
    FeatureStats,
    IdOrderFinding,
    IdStats,
    LruOrder,
    MissingDependencyError,
    PoolingStats,
    SampleMode,
    StatsOptions,
    StatsResult,
    TableStats,
    ZipfFit,
)
from shardplan.stats.workload import access_of, workload_of, workload_yaml, write_atomic

__all__ = ["CountMode", "DataFormat", "FeatureStats", "IdOrderFinding", "IdStats", "LruOrder",
           "MissingDependencyError", "PoolingStats", "SampleMode", "StatsOptions", "StatsResult",
           "TableStats", "ZipfFit", "access_of", "collect_stats", "workload_of", "workload_yaml",
           "write_atomic"]
