"""The workload: tables (``TableSpec`` with its ``Placement``, ``AccessSkew`` and
``TableConstraints``) plus the batch they are trained or served with (``Workload``)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Mapping

from shardplan.types.checks import _check, _is_int
from shardplan.types.enums import BatchScope, DType, Mode, Optimizer, PlacementKind, ShardingType


@dataclass(frozen=True, kw_only=True, slots=True)
class Placement:
    """A placement kind, with the HBM cache ratio (cached rows / rows) for ``uvm_caching``."""

    kind: PlacementKind = PlacementKind.HBM
    cache_ratio: float | None = None

    def __post_init__(self) -> None:
        if self.kind is PlacementKind.UVM_CACHING:
            _check(
                self.cache_ratio is not None and 0.0 < self.cache_ratio < 1.0,
                "cache_ratio",
                self.cache_ratio,
                "uvm_caching needs a cache ratio strictly between 0 and 1",
            )
        else:
            _check(self.cache_ratio is None, "cache_ratio", self.cache_ratio,
                   f"only uvm_caching takes a cache ratio, not {self.kind.value}")

    def __str__(self) -> str:
        if self.kind is PlacementKind.UVM_CACHING:
            return f"{self.kind.value}@{self.cache_ratio:g}"
        return self.kind.value

    @classmethod
    def parse(cls, text: str) -> Placement:
        """``hbm``, ``uvm``, ``ddr`` or ``uvm_caching@0.2``. Raises ValueError."""
        kind, _, ratio = text.partition("@")
        return cls(kind=PlacementKind(kind), cache_ratio=float(ratio) if ratio else None)


HBM = Placement()


class IdOrder(StrEnum):
    """How a table's ids map to its rows, which decides how evenly contiguous row blocks
    (row-wise and table-row-wise shards) are hit.

    ``hashed``: ids are hashed (MLPerf/TorchRec preprocessing), so hot rows are spread
    evenly over the rows and every row block gets lookups in proportion to its rows.
    ``frequency``: id order follows popularity (id 0 the most frequent, as in
    frequency-sorted vocabularies), so the first row block gets most lookups.
    """

    HASHED = "hashed"
    FREQUENCY = "frequency"


@dataclass(frozen=True, kw_only=True, slots=True)
class AccessSkew:
    """How unevenly rows are accessed; decides UVM cache hit rates and, with ``id_order``,
    how evenly row blocks are hit.

    Give a Zipf exponent (rank-frequency law over rows), or a hot-row fraction with the
    fraction of accesses that go to those hot rows, or a measured hit curve, or a model and
    a curve (the curve then decides cache hit rates, the model the row-block loads).

    Attributes:
        zipf_exponent: exponent ``s`` of access frequency ~ rank^-s.
        hot_row_fraction: share of rows that are hot.
        hot_access_fraction: share of accesses that go to the hot rows.
        id_order: how ids map to rows (:class:`IdOrder`).
        hit_curve: measured (cache ratio, hit rate) points of an LRU cache, cache ratios
            strictly increasing in (0, 1), hit rates non-decreasing in [0, 1] (what
            ``shardplan stats`` measures); between points the rate is interpolated linearly,
            with (0, 0) and (1, 1) as end points.
    """

    zipf_exponent: float | None = None
    hot_row_fraction: float | None = None
    hot_access_fraction: float | None = None
    id_order: IdOrder = IdOrder.HASHED
    hit_curve: tuple[tuple[float, float], ...] | None = None

    def __post_init__(self) -> None:
        has_zipf = self.zipf_exponent is not None
        has_hot = self.hot_row_fraction is not None
        has_curve = self.hit_curve is not None
        _check(not (has_zipf and has_hot), "access", self,
               "give zipf_exponent or hot_row_fraction, not both")
        _check(has_zipf or has_hot or has_curve, "access", self,
               "give zipf_exponent, hot_row_fraction (with hot_access_fraction) or hit_curve")
        if has_zipf:
            _check(self.zipf_exponent > 0, "zipf_exponent", self.zipf_exponent, "must be > 0")
            _check(self.hot_access_fraction is None, "hot_access_fraction",
                   self.hot_access_fraction, "only goes with hot_row_fraction")
        elif has_hot:
            _check(0 < self.hot_row_fraction < 1, "hot_row_fraction", self.hot_row_fraction,
                   "must be between 0 and 1")
            haf = self.hot_access_fraction
            _check(haf is not None and 0 < haf <= 1, "hot_access_fraction", haf,
                   "hot_row_fraction needs hot_access_fraction in (0, 1]")
        else:
            _check(self.hot_access_fraction is None, "hot_access_fraction",
                   self.hot_access_fraction, "only goes with hot_row_fraction")
        if has_curve:
            pts = self.hit_curve
            _check(len(pts) > 0 and all(len(p) == 2 for p in pts), "hit_curve", pts,
                   "must be a non-empty list of [cache_ratio, hit_rate] pairs")
            xs = [float(p[0]) for p in pts]
            ys = [float(p[1]) for p in pts]
            _check(all(0.0 < x < 1.0 for x in xs) and all(a < b for a, b in zip(xs, xs[1:])),
                   "hit_curve", pts, "cache ratios must be strictly increasing, each in (0, 1)")
            _check(all(0.0 <= y <= 1.0 for y in ys) and all(a <= b for a, b in zip(ys, ys[1:])),
                   "hit_curve", pts, "hit rates must be non-decreasing, each in [0, 1]")
            object.__setattr__(self, "hit_curve", tuple(zip(xs, ys)))

    @property
    def has_model(self) -> bool:
        """A Zipf or hot-row model is given (not only a measured curve)."""
        return self.zipf_exponent is not None or self.hot_row_fraction is not None


@dataclass(frozen=True, kw_only=True, slots=True)
class TableConstraints:
    """Per-table user constraints. ``None`` means unconstrained."""

    sharding_types: tuple[ShardingType, ...] | None = None
    placements: tuple[PlacementKind, ...] | None = None
    pinned_ranks: tuple[int, ...] | None = None
    min_column_shard_width: int | None = None

    def __post_init__(self) -> None:
        if self.sharding_types is not None:
            _check(len(self.sharding_types) > 0, "sharding_types", self.sharding_types,
                   "must list at least one sharding type (or be left out)")
        if self.placements is not None:
            _check(len(self.placements) > 0, "placements", self.placements,
                   "must list at least one placement (or be left out)")
        if self.pinned_ranks is not None:
            _check(len(self.pinned_ranks) > 0 and all(r >= 0 for r in self.pinned_ranks),
                   "pinned_ranks", self.pinned_ranks, "must be non-negative rank numbers")
        if self.min_column_shard_width is not None:
            _check(self.min_column_shard_width > 0, "min_column_shard_width",
                   self.min_column_shard_width, "must be > 0")

    def allows(self, sharding_type: ShardingType) -> bool:
        return self.sharding_types is None or sharding_type in self.sharding_types

    def allows_placement(self, kind: PlacementKind) -> bool:
        return self.placements is None or kind in self.placements


@dataclass(frozen=True, kw_only=True, slots=True)
class TableSpec:
    """One embedding table.

    Attributes:
        name: unique table name.
        num_embeddings: rows.
        embedding_dim: columns.
        pooling_factor: mean ids looked up per sample, summed over the features it serves.
        features: the input features this table serves (one table may serve several).
        dtype: storage type of the weights.
        optimizer: ``None`` means the workload's default optimizer.
        access: access skew, ``None`` means uniform.
        constraints: user constraints on sharding and placement.
    """

    name: str
    num_embeddings: int
    embedding_dim: int
    pooling_factor: float = 1.0
    features: tuple[str, ...] = ()
    dtype: DType = DType.FP32
    optimizer: Optimizer | None = None
    access: AccessSkew | None = None
    constraints: TableConstraints = field(default_factory=TableConstraints)

    def __post_init__(self) -> None:
        _check(isinstance(self.name, str) and self.name != "", "name", self.name,
               "must be a non-empty string")
        _check(_is_int(self.num_embeddings) and self.num_embeddings > 0, "num_embeddings",
               self.num_embeddings, "must be a positive integer")
        _check(_is_int(self.embedding_dim) and self.embedding_dim > 0, "embedding_dim",
               self.embedding_dim, "must be a positive integer")
        _check(isinstance(self.pooling_factor, (int, float)) and math.isfinite(self.pooling_factor)
               and self.pooling_factor > 0, "pooling_factor", self.pooling_factor,
               "must be a positive number")
        if not self.features:
            object.__setattr__(self, "features", (self.name,))

    @property
    def num_features(self) -> int:
        return len(self.features)


@dataclass(frozen=True, kw_only=True, slots=True)
class Workload:
    """Tables plus the batch they are trained or served with.

    Attributes:
        name: a label for reports.
        tables: the embedding tables, names unique.
        batch_size: samples per step, per rank or for the whole cluster (``batch_scope``).
        batch_scope: whether ``batch_size`` is per rank or global.
        mode: training (optimizer state, backward) or inference.
        default_optimizer: the optimizer of tables that name none.
        colocate: groups of tables that must share ranks (each group placed on the same rank).
        separate: groups of tables no two of which may share a rank.
        source: where the numbers came from.
    """

    name: str = "workload"
    tables: tuple[TableSpec, ...]
    batch_size: int
    batch_scope: BatchScope = BatchScope.PER_RANK
    mode: Mode = Mode.TRAINING
    default_optimizer: Optimizer = Optimizer.ROWWISE_ADAGRAD
    colocate: tuple[tuple[str, ...], ...] = ()
    separate: tuple[tuple[str, ...], ...] = ()
    source: str = ""
    _index: Mapping[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        _check(len(self.tables) > 0, "tables", "[]", "a workload needs at least one table")
        _check(_is_int(self.batch_size) and self.batch_size > 0, "batch_size", self.batch_size,
               "must be a positive integer")
        seen: set[str] = set()
        for t in self.tables:
            _check(t.name not in seen, "tables", t.name, "duplicate table name")
            seen.add(t.name)
        for kind, groups in (("colocate", self.colocate), ("separate", self.separate)):
            for g in groups:
                _check(len(g) >= 2, kind, g, "a group needs at least two tables")
                for name in g:
                    _check(name in seen, kind, name, "names no table of this workload")
        object.__setattr__(self, "_index", {t.name: i for i, t in enumerate(self.tables)})

    def table(self, name: str) -> TableSpec:
        """The table named ``name`` (KeyError if none)."""
        return self.tables[self._index[name]]

    def optimizer_of(self, table: TableSpec) -> Optimizer:
        """The optimizer that updates ``table``: its own, else the workload's default."""
        if self.mode is Mode.INFERENCE:
            return Optimizer.NONE
        return table.optimizer if table.optimizer is not None else self.default_optimizer

    def batch_per_rank(self, world_size: int) -> float:
        if self.batch_scope is BatchScope.PER_RANK:
            return float(self.batch_size)
        return self.batch_size / world_size

    def global_batch(self, world_size: int) -> float:
        if self.batch_scope is BatchScope.GLOBAL:
            return float(self.batch_size)
        return float(self.batch_size * world_size)
