"""Every data type of shardplan, and the abstract bases its stages implement.

Reading this module alone shows the architecture:

    Workload + Topology --(enumerators)--> ShardingOption per table
                        --(CostModel)-----> ShardCost per shard and rank class
                        --(solver)--------> Assignment (option per table, rank per shard)
                        --(plans.build)---> Plan (shards, per-rank memory/time, summary)

All specs are frozen, keyword-only dataclasses validated in ``__post_init__``; parsing
(YAML, CSV, CLI) lives in :mod:`shardplan.loaders` and turns strings into the enums below
before anything reaches these constructors. Units are in field names: ``_bytes``,
``_bytes_per_s``, ``_s``, ``_ms``.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import TYPE_CHECKING, Callable, Iterator, Mapping, Sequence

import numpy as np

from shardplan.errors import SpecError

if TYPE_CHECKING:  # pragma: no cover
    import networkx as nx
    import pandas as pd


# ---------------------------------------------------------------------------------------------
# Enums: small choice sets. Only members travel inward; strings stop at the loaders.
# ---------------------------------------------------------------------------------------------


class ShardingType(StrEnum):
    TABLE_WISE = "table_wise"
    ROW_WISE = "row_wise"
    COLUMN_WISE = "column_wise"
    TABLE_ROW_WISE = "table_row_wise"
    TABLE_COLUMN_WISE = "table_column_wise"
    DATA_PARALLEL = "data_parallel"
    GRID_SHARD = "grid_shard"  # column blocks across hosts, each row-wise within its host

    @property
    def short(self) -> str:
        return _SHORT[self]


_SHORT = {
    ShardingType.TABLE_WISE: "TW",
    ShardingType.ROW_WISE: "RW",
    ShardingType.COLUMN_WISE: "CW",
    ShardingType.TABLE_ROW_WISE: "TWRW",
    ShardingType.TABLE_COLUMN_WISE: "TWCW",
    ShardingType.DATA_PARALLEL: "DP",
    ShardingType.GRID_SHARD: "GRID",
}


class PlacementKind(StrEnum):
    """Where a shard's rows live. ``uvm_caching`` keeps a cache of hot rows in HBM."""

    HBM = "hbm"
    UVM_CACHING = "uvm_caching"
    UVM = "uvm"
    DDR = "ddr"


class DType(StrEnum):
    FP32 = "fp32"
    FP16 = "fp16"
    BF16 = "bf16"
    INT8 = "int8"
    INT4 = "int4"

    @property
    def bits(self) -> int:
        return _DTYPE_BITS[self]

    @property
    def is_quantized(self) -> bool:
        return self in (DType.INT8, DType.INT4)


_DTYPE_BITS = {DType.FP32: 32, DType.FP16: 16, DType.BF16: 16, DType.INT8: 8, DType.INT4: 4}


class Optimizer(StrEnum):
    NONE = "none"
    SGD = "sgd"
    ADAGRAD = "adagrad"
    ROWWISE_ADAGRAD = "rowwise_adagrad"
    ADAM = "adam"


class BatchScope(StrEnum):
    PER_RANK = "per_rank"
    GLOBAL = "global"


class Mode(StrEnum):
    TRAINING = "training"
    INFERENCE = "inference"


class LinkType(StrEnum):
    NVLINK2 = "nvlink2"
    NVLINK3 = "nvlink3"
    NVLINK4 = "nvlink4"
    PCIE4 = "pcie4"
    PCIE5 = "pcie5"
    LOOPBACK = "loopback"


class NetworkType(StrEnum):
    INFINIBAND = "infiniband"
    ROCE = "roce"
    ETHERNET = "ethernet"
    LOOPBACK = "loopback"


class Tier(StrEnum):
    HBM = "hbm"
    DDR = "ddr"


class Stage(StrEnum):
    """Stages of one training step, in the order they run on every rank. Every stage ends in
    (or is) a collective that synchronises its participants."""

    INPUT_DIST = "input_dist"  # ids and lengths to the shard holders (pipelined: the next batch's)
    FWD_COMPUTE = "fwd_compute"
    FWD_COMM = "fwd_comm"  # output distribution: pooled embeddings back to the sample owners
    BWD_COMM = "bwd_comm"  # their gradients, the reverse way
    BWD_COMPUTE = "bwd_compute"
    DP_SYNC = "dp_sync"  # data-parallel gradient all-reduce

    @property
    def lanes(self) -> tuple[Lane, ...]:
        return _STAGE_LANES[self]

    @property
    def is_comm(self) -> bool:
        return self in (Stage.INPUT_DIST, Stage.FWD_COMM, Stage.BWD_COMM, Stage.DP_SYNC)


class Lane(StrEnum):
    """What a rank spends time on within a stage: compute, or one direction of its links.

    A communication stage has a send and a receive lane: a rank's links are full duplex, so
    the stage takes it the longer of the two (not their sum, and not half of either).
    The all-reduce of data-parallel gradients is symmetric (a ring sends what it receives):
    one lane.
    """

    INPUT_SEND = "input_send"
    INPUT_RECV = "input_recv"
    FWD_COMPUTE = "fwd_compute"
    OUTPUT_SEND = "output_send"
    OUTPUT_RECV = "output_recv"
    GRAD_SEND = "grad_send"
    GRAD_RECV = "grad_recv"
    BWD_COMPUTE = "bwd_compute"
    DP_SYNC = "dp_sync"

    @property
    def stage(self) -> Stage:
        return _LANE_STAGE[self]


_STAGE_LANES: dict[Stage, tuple[Lane, ...]] = {
    Stage.INPUT_DIST: (Lane.INPUT_SEND, Lane.INPUT_RECV),
    Stage.FWD_COMPUTE: (Lane.FWD_COMPUTE,),
    Stage.FWD_COMM: (Lane.OUTPUT_SEND, Lane.OUTPUT_RECV),
    Stage.BWD_COMM: (Lane.GRAD_SEND, Lane.GRAD_RECV),
    Stage.BWD_COMPUTE: (Lane.BWD_COMPUTE,),
    Stage.DP_SYNC: (Lane.DP_SYNC,),
}
_LANE_STAGE: dict[Lane, Stage] = {ln: st for st, lns in _STAGE_LANES.items() for ln in lns}
#: Lane order of every per-lane array (``Perf.as_tuple``, the solvers' load matrices).
LANES: tuple[Lane, ...] = tuple(Lane)
#: For each stage (``Stage`` order), the indices of its lanes in ``LANES``.
STAGE_LANE_INDEX: tuple[tuple[int, ...], ...] = tuple(
    tuple(LANES.index(ln) for ln in _STAGE_LANES[st]) for st in Stage)


class Composition(StrEnum):
    """How a step's time is composed from per-rank lane times (see ``StepModel``).

    ``synchronized``: every stage ends in a collective that waits for its slowest
    participant, so the step is the sum over stages of the slowest rank's stage time
    (TorchRec's critical-path estimate has this form). ``per_rank``: each rank's stages add
    up and the step is the slowest rank's sum (ranks never wait for each other: a lower bound).
    """

    SYNCHRONIZED = "synchronized"
    PER_RANK = "per_rank"


def _check(cond: bool, field_name: str, value: object, why: str) -> None:
    """Raise ``SpecError`` (a ``ShardplanError``, also a ``ValueError``) naming the field."""
    if not cond:
        raise SpecError(f"{field_name}={value!r}: {why}", key_path=None)


# ---------------------------------------------------------------------------------------------
# Resources: values with their own arithmetic, so solver code reads like the problem.
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True, slots=True)
class Memory:
    """Bytes per tier: device memory (HBM) and host memory (DDR)."""

    hbm: float = 0.0
    ddr: float = 0.0

    def __add__(self, other: Memory) -> Memory:
        return Memory(hbm=self.hbm + other.hbm, ddr=self.ddr + other.ddr)

    def __sub__(self, other: Memory) -> Memory:
        return Memory(hbm=self.hbm - other.hbm, ddr=self.ddr - other.ddr)

    def scale(self, k: float) -> Memory:
        return Memory(hbm=self.hbm * k, ddr=self.ddr * k)

    def fits_in(self, capacity: Memory) -> bool:
        return self.hbm <= capacity.hbm and self.ddr <= capacity.ddr

    def get(self, tier: Tier) -> float:
        return self.hbm if tier is Tier.HBM else self.ddr

    def as_dict(self) -> dict[str, float]:
        return {Tier.HBM.value: self.hbm, Tier.DDR.value: self.ddr}


@dataclass(frozen=True, kw_only=True, slots=True)
class Perf:
    """Estimated milliseconds per lane (see :class:`Lane`) of one step, on one rank.

    A stage's time on the rank is the longest of its lanes (``stage(st)``); the rank's busy
    time is the sum of its stage times (``total``). How ranks' stages compose into the step
    time is the cost model's ``StepModel``, not a property of one rank.
    """

    input_send: float = 0.0
    input_recv: float = 0.0
    fwd_compute: float = 0.0
    output_send: float = 0.0
    output_recv: float = 0.0
    grad_send: float = 0.0
    grad_recv: float = 0.0
    bwd_compute: float = 0.0
    dp_sync: float = 0.0

    def __add__(self, other: Perf) -> Perf:
        return Perf(**{ln.value: getattr(self, ln.value) + getattr(other, ln.value) for ln in LANES})

    def scale(self, k: float) -> Perf:
        return Perf(**{ln.value: getattr(self, ln.value) * k for ln in LANES})

    @classmethod
    def from_lanes(cls, values: Sequence[float]) -> Perf:
        """From per-lane values in ``LANES`` order."""
        return cls(**{ln.value: float(v) for ln, v in zip(LANES, values)})

    def as_tuple(self) -> tuple[float, ...]:
        """Per-lane values in ``LANES`` order."""
        return tuple(getattr(self, ln.value) for ln in LANES)

    def lane(self, lane: Lane) -> float:
        return getattr(self, lane.value)

    def stage(self, stage: Stage) -> float:
        """The stage's time on this rank: its longest lane."""
        return max(getattr(self, ln.value) for ln in stage.lanes)

    def get(self, stage: Stage) -> float:
        return self.stage(stage)

    @property
    def input_dist(self) -> float:
        return self.stage(Stage.INPUT_DIST)

    @property
    def fwd_comm(self) -> float:
        return self.stage(Stage.FWD_COMM)

    @property
    def bwd_comm(self) -> float:
        return self.stage(Stage.BWD_COMM)

    @property
    def compute(self) -> float:
        return self.fwd_compute + self.bwd_compute

    @property
    def comm(self) -> float:
        return self.input_dist + self.fwd_comm + self.bwd_comm + self.dp_sync

    @property
    def total(self) -> float:
        """The rank's busy time: the sum of its stage times, no overlap."""
        return self.compute + self.comm

    def as_dict(self) -> dict[str, float]:
        """Per-stage times (``Stage`` values)."""
        return {s.value: self.stage(s) for s in Stage}

    def lanes_dict(self) -> dict[str, float]:
        """Per-lane times (``Lane`` values)."""
        return {ln.value: getattr(self, ln.value) for ln in LANES}


# ---------------------------------------------------------------------------------------------
# Workload
# ---------------------------------------------------------------------------------------------


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


def _is_int(x: object) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


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


# ---------------------------------------------------------------------------------------------
# Topology
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True, slots=True)
class DeviceModel:
    """An accelerator (or a CPU process standing in for one)."""

    model: str
    hbm_capacity_bytes: int
    hbm_bandwidth_bytes_per_s: float

    def __post_init__(self) -> None:
        _check(self.hbm_capacity_bytes > 0, "hbm_capacity", self.hbm_capacity_bytes, "must be > 0")
        _check(self.hbm_bandwidth_bytes_per_s > 0, "hbm_bandwidth",
               self.hbm_bandwidth_bytes_per_s, "must be > 0")


@dataclass(frozen=True, kw_only=True, slots=True)
class HostSpec:
    ddr_capacity_bytes: int
    ddr_bandwidth_bytes_per_s: float
    pcie_bandwidth_bytes_per_s: float

    def __post_init__(self) -> None:
        _check(self.ddr_capacity_bytes >= 0, "ddr_capacity", self.ddr_capacity_bytes, "must be >= 0")
        _check(self.ddr_bandwidth_bytes_per_s > 0, "ddr_bandwidth",
               self.ddr_bandwidth_bytes_per_s, "must be > 0")
        _check(self.pcie_bandwidth_bytes_per_s > 0, "pcie_bandwidth",
               self.pcie_bandwidth_bytes_per_s, "must be > 0")


@dataclass(frozen=True, kw_only=True, slots=True)
class Link:
    """A link: bandwidth per direction and one-way latency."""

    type: LinkType | NetworkType
    bandwidth_bytes_per_s: float
    latency_s: float

    def __post_init__(self) -> None:
        _check(self.bandwidth_bytes_per_s > 0, "bandwidth", self.bandwidth_bytes_per_s, "must be > 0")
        _check(self.latency_s >= 0, "latency", self.latency_s, "must be >= 0")


@dataclass(frozen=True, kw_only=True, slots=True)
class HostGroup:
    """Identical hosts. A heterogeneous cluster has several groups.

    Attributes:
        intra_host_link: each device's link into the host fabric (NVSwitch or PCIe switch).
        network: each host's link to the cluster network; ``bandwidth_bytes_per_s`` is the
            host's total over all its NICs, shared by its devices.
    """

    name: str
    hosts: int
    devices_per_host: int
    device: DeviceModel
    host: HostSpec
    intra_host_link: Link
    network: Link

    def __post_init__(self) -> None:
        _check(_is_int(self.hosts) and self.hosts > 0, "hosts", self.hosts, "must be a positive integer")
        _check(_is_int(self.devices_per_host) and self.devices_per_host > 0, "devices_per_host",
               self.devices_per_host, "must be a positive integer")

    @property
    def num_devices(self) -> int:
        return self.hosts * self.devices_per_host


@dataclass(frozen=True, kw_only=True, slots=True)
class RankInfo:
    rank: int
    host: int
    local_rank: int
    group: int  # index into Topology.host_groups: ranks of one group cost the same


@dataclass(frozen=True, kw_only=True, slots=True)
class Topology:
    """Hosts, devices and links. Ranks are numbered host by host, group by group.

    Attributes:
        hbm_reserved_fraction: share of each device's HBM kept for the dense model, activations
            and the allocator; the planner may use the rest.
        workload_path: a default workload named by the topology file, if any.
    """

    name: str
    host_groups: tuple[HostGroup, ...]
    hbm_reserved_fraction: float = 0.0
    description: str = ""
    workload_path: str | None = field(default=None, compare=False)
    _ranks: tuple[RankInfo, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        _check(len(self.host_groups) > 0, "host_groups", "[]", "a topology needs a host group")
        _check(0.0 <= self.hbm_reserved_fraction < 1.0, "hbm_reserved_fraction",
               self.hbm_reserved_fraction, "must be in [0, 1)")
        names = [g.name for g in self.host_groups]
        _check(len(set(names)) == len(names), "host_groups", names, "group names must be unique")
        ranks, host = [], 0
        for gi, g in enumerate(self.host_groups):
            for _ in range(g.hosts):
                for lr in range(g.devices_per_host):
                    ranks.append(RankInfo(rank=len(ranks), host=host, local_rank=lr, group=gi))
                host += 1
        object.__setattr__(self, "_ranks", tuple(ranks))

    @property
    def world_size(self) -> int:
        return len(self._ranks)

    @property
    def num_hosts(self) -> int:
        return sum(g.hosts for g in self.host_groups)

    @property
    def ranks(self) -> tuple[RankInfo, ...]:
        return self._ranks

    def rank(self, r: int) -> RankInfo:
        return self._ranks[r]

    def group_of(self, r: int) -> HostGroup:
        return self.host_groups[self._ranks[r].group]

    def ranks_of_host(self, host: int) -> tuple[int, ...]:
        return tuple(ri.rank for ri in self._ranks if ri.host == host)

    def hosts_of_group(self, gi: int) -> tuple[int, ...]:
        return tuple(sorted({ri.host for ri in self._ranks if ri.group == gi}))

    def capacity(self, r: int) -> Memory:
        """Usable bytes per tier on rank ``r``: HBM less the reserve; the host's DDR split
        evenly among its devices."""
        g = self.group_of(r)
        return Memory(
            hbm=g.device.hbm_capacity_bytes * (1.0 - self.hbm_reserved_fraction),
            ddr=g.host.ddr_capacity_bytes / g.devices_per_host,
        )

    def sharding_group(self, replicas: int) -> Topology:
        """The topology one sharding group of a 2D plan sees (TorchRec's ``DMPCollection``):
        the model is sharded over ``world / replicas`` ranks and replicated ``replicas`` times,
        each replica on ranks of the same host (TorchRec's default: the replicas' weight sync
        runs over the intra-host fabric). Every host keeps ``devices_per_host / replicas`` of
        its devices in the group, with that share of the host's NICs, DDR and DDR bandwidth.

        Raises:
            ValueError: ``replicas`` does not divide every group's devices per host.
        """
        if replicas == 1:
            return self
        groups = []
        for g in self.host_groups:
            _check(replicas >= 1 and g.devices_per_host % replicas == 0, "replicas", replicas,
                   f"must divide the {g.devices_per_host} devices per host of group {g.name!r}")
            groups.append(replace(
                g, devices_per_host=g.devices_per_host // replicas,
                host=replace(g.host, ddr_capacity_bytes=g.host.ddr_capacity_bytes // replicas,
                             ddr_bandwidth_bytes_per_s=g.host.ddr_bandwidth_bytes_per_s / replicas),
                network=replace(g.network,
                                bandwidth_bytes_per_s=g.network.bandwidth_bytes_per_s / replicas)))
        return Topology(name=f"{self.name}/{replicas}x", host_groups=tuple(groups),
                        hbm_reserved_fraction=self.hbm_reserved_fraction,
                        description=f"one of {replicas} sharding groups of {self.name}")

    def graph(self) -> nx.Graph:
        """The topology as a networkx graph (built by :func:`shardplan.topology.build_graph`)."""
        from shardplan.topology import build_graph

        return build_graph(self)


# ---------------------------------------------------------------------------------------------
# Planning: options, costs, assignments
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True, slots=True)
class ShardSpec:
    """A rectangle of a table: rows [row_offset, row_offset+num_rows) x cols likewise."""

    row_offset: int
    num_rows: int
    col_offset: int
    num_cols: int


@dataclass(frozen=True, kw_only=True, slots=True)
class ShardingOption:
    """One way to shard one table: a sharding type, a placement and the shards it makes.

    ``candidate_ranks[i]`` restricts where shard ``i`` may go (``None``: any rank). Row-wise
    and data-parallel shards are fixed to one rank each; table-row-wise shards to the ranks
    of one host.
    """

    table: str
    sharding_type: ShardingType
    placement: Placement
    shards: tuple[ShardSpec, ...]
    candidate_ranks: tuple[tuple[int, ...] | None, ...]

    def __post_init__(self) -> None:
        _check(len(self.shards) == len(self.candidate_ranks), "candidate_ranks",
               len(self.candidate_ranks), "needs one entry per shard")

    @property
    def label(self) -> str:
        return f"{self.sharding_type.short}x{len(self.shards)}/{self.placement}"


@dataclass(frozen=True, kw_only=True, slots=True)
class ShardCost:
    """What one shard costs the rank that holds it (or, for an option's everywhere-cost, each
    rank; for a sharding group's fixed cost, each participant)."""

    memory: Memory
    perf: Perf

    def __add__(self, other: ShardCost) -> ShardCost:
        return ShardCost(memory=self.memory + other.memory, perf=self.perf + other.perf)


ZERO_COST = ShardCost(memory=Memory(), perf=Perf())


@dataclass(frozen=True, kw_only=True, slots=True)
class GroupKey:
    """A sharding group: the tables one set of fused collectives serves (TorchRec issues one
    input dist and one output dist per sharding type and module, and DDP buckets the
    data-parallel gradients). Its fixed cost (the calls' latencies, kernel launches) is paid
    once if any table of the plan uses it.

    Attributes:
        sharding_type: the sharding type of its tables.
        ranks: the ranks some of its collectives run over only (row-wise over a subset: the
            reduce-scatter among them); ``None``: all collectives run over all ranks.
    """

    sharding_type: ShardingType
    ranks: tuple[int, ...] | None = None

    @property
    def label(self) -> str:
        return self.sharding_type.short if self.ranks is None else \
            f"{self.sharding_type.short}@{len(self.ranks)}"


def row_span(ranks: Sequence[int], table_rows: int, world: int) -> tuple[int, ...] | None:
    """The ranks a row-wise table's collectives run over: ``None`` when its blocks sit on
    ranks ``0, 1, ...`` of every rank it can use (row-wise over all ranks; a table with fewer
    rows than ranks uses the first ``rows``), else its ranks in order (row-wise over a subset:
    a reduce-scatter among them, then an all-to-all to the sample owners). The cost model and
    the executor both decide by this."""
    if tuple(ranks) == tuple(range(min(table_rows, world))):
        return None
    return tuple(sorted(set(ranks)))


@dataclass(frozen=True, kw_only=True, slots=True)
class StepModel:
    """How per-rank lane times (``Lane``) compose into the step time.

    Attributes:
        composition: ``synchronized`` (sum over stages of the slowest rank) or ``per_rank``
            (the slowest rank's sum); see :class:`Composition`.
        pipelined: TorchRec's ``TrainPipelineSparseDist``: the next batch's input dist runs
            while this batch computes, so the step is the longer of the input dist and the
            rest; ``False``: stages run one after the other.
    """

    composition: Composition = Composition.SYNCHRONIZED
    pipelined: bool = True

    def compose(self, stage_t):
        """[..., S] stage times -> [...] step times (see the class docstring)."""
        if self.pipelined:
            return np.maximum(stage_t[..., 0], stage_t[..., 1:].sum(-1))
        return stage_t.sum(-1)

    def stage_times(self, load):
        """[..., L] lane times -> [..., S] stage times (each the longest of its lanes)."""
        load = np.asarray(load, dtype=float)
        return np.stack([load[..., list(ix)].max(-1) for ix in STAGE_LANE_INDEX], -1)

    def rank_time(self, perf: Perf) -> float:
        """One rank's step time if it ran alone: its stages composed (pipelined: the longer of
        its input dist and the rest)."""
        return self.rank_time_lanes(perf.as_tuple())

    def rank_time_lanes(self, lanes) -> float:
        """:meth:`rank_time` of per-lane values in ``LANES`` order."""
        return float(self.compose(self.stage_times(lanes)))

    def makespan(self, load) -> float:
        """The step time of a [ranks, L] lane-time matrix."""
        load = np.asarray(load, dtype=float)
        if self.composition is Composition.SYNCHRONIZED:
            return float(self.compose(self.stage_times(load.max(0))))
        return float(self.compose(self.stage_times(load)).max())

    def makespan_if_added(self, load, colmax, current: float, ranks, add):
        """Step times if ``add[i]`` ([n, L]) were added on rank ``ranks[i]`` (one at a time),
        given the matrix ``load``, its column maxima ``colmax`` and its step time."""
        rows = load[ranks] + add
        if self.composition is Composition.SYNCHRONIZED:
            return self.compose(self.stage_times(np.maximum(colmax[None, :], rows)))
        return np.maximum(current, self.compose(self.stage_times(rows)))

    def as_dict(self) -> dict[str, object]:
        return {"composition": self.composition.value, "pipelined": self.pipelined}


class CostModel(ABC):
    """Estimates memory and time. Linear by construction, so solvers can optimise it exactly:

        rank r's lanes = rank_overhead(group(r))
                       + sum over sharding groups used: group_cost(key, group(r))
                       + sum over options chosen: everywhere_cost(option, group(r))
                       + sum over shards placed on r: shard_cost(option, i, group(r))

    and the step time is ``step.makespan`` of the ranks' lanes (a max/sum of linear terms,
    which an integer program expresses exactly). Costs depend on a rank only through its host
    group (``RankInfo.group``) and, for group costs, whether it takes part in the group's
    collectives, so solvers evaluate each shard once per group.
    """

    name: str = "cost-model"
    step: StepModel = StepModel()

    @abstractmethod
    def shard_cost(self, option: ShardingOption, shard_index: int, group: int) -> ShardCost:
        """Cost of shard ``shard_index`` of ``option`` on a rank of host group ``group``."""

    def shard_costs(self, option: ShardingOption, group: int) -> list[ShardCost]:
        """Costs of all shards of ``option`` on a rank of ``group`` (override to vectorise)."""
        return [self.shard_cost(option, i, group) for i in range(len(option.shards))]

    @abstractmethod
    def everywhere_cost(self, option: ShardingOption, group: int) -> ShardCost:
        """Cost every rank of ``group`` pays because the table is sharded this way (e.g. the
        buffers and all-to-all receives of its pooled outputs for the rank's own samples)."""

    @abstractmethod
    def rank_overhead(self, group: int) -> ShardCost:
        """Fixed cost of a rank of ``group`` whatever the plan."""

    def group_key(self, option: ShardingOption) -> GroupKey | None:
        """The sharding group ``option`` joins (None: it joins none, no fixed cost)."""
        return None

    def group_cost(self, key: GroupKey, group: int) -> ShardCost:
        """Fixed cost every rank of host group ``group`` pays once if any table uses sharding
        group ``key`` (e.g. the latencies of its world-wide all-to-alls)."""
        return ZERO_COST

    def group_member_cost(self, key: GroupKey, group: int) -> ShardCost:
        """What a rank of ``key.ranks`` (of host group ``group``) pays on top of
        ``group_cost``, for the collectives that run among those ranks only."""
        return ZERO_COST

    def total(self, perf: Perf) -> float:
        """A rank's own step time from its lanes (``step.rank_time``); the plan's step time
        composes all ranks (``step.makespan``)."""
        return self.step.rank_time(perf)

    def describe(self) -> dict[str, object]:
        """What the plan records about the model (name, profile, options)."""
        return {"name": self.name}


@dataclass(frozen=True, kw_only=True, slots=True)
class Assignment:
    """A solver's answer: for each table (workload order) its option and its shards' ranks."""

    options: tuple[ShardingOption, ...]
    ranks: tuple[tuple[int, ...], ...]

    def __post_init__(self) -> None:
        _check(len(self.options) == len(self.ranks), "ranks", len(self.ranks),
               "needs one rank tuple per option")
        for o, rs in zip(self.options, self.ranks):
            _check(len(rs) == len(o.shards), "ranks", (o.table, rs), "needs one rank per shard")

    def placed(self) -> Iterator[tuple[ShardingOption, int, int]]:
        """(option, shard index, rank) for every placed shard."""
        for o, rs in zip(self.options, self.ranks):
            for i, r in enumerate(rs):
                yield o, i, r


@dataclass(frozen=True, kw_only=True, slots=True)
class ProgressReport:
    """A solver's news while it runs: the best makespan found so far and the best lower bound
    known, after a phase (``greedy``, ``local_search``, ``ilp``, ...)."""

    phase: str
    best_ms: float | None = None
    bound_ms: float | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class PlanningContext:
    """What a solver gets: the problem, the cost model, the options and the budget.

    ``progress``, when given, receives a ``ProgressReport`` after each phase of a solver
    (see ``report``); it must be cheap and must not raise. ``cache`` holds what the stages
    derive from the context once and share (the solvers' cost tables).
    """

    workload: Workload
    topology: Topology
    cost_model: CostModel
    options: Mapping[str, Sequence[ShardingOption]]
    time_limit_s: float = 60.0
    threads: int = 1
    seed: int = 0
    progress: Callable[[ProgressReport], None] | None = None
    cache: dict = field(default_factory=dict, compare=False, repr=False)

    def report(self, phase: str, best_ms: float | None = None,
               bound_ms: float | None = None) -> None:
        """Tell ``progress`` (if any) the best makespan and bound so far."""
        if self.progress is not None:
            self.progress(ProgressReport(phase=phase, best_ms=best_ms, bound_ms=bound_ms))


# ---------------------------------------------------------------------------------------------
# Plan: what the planner writes. Serialised by shardplan.plans.
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True, slots=True)
class Shard:
    rank: int
    row_offset: int
    num_rows: int
    col_offset: int
    num_cols: int
    placement: Placement = HBM


@dataclass(frozen=True, kw_only=True, slots=True)
class TablePlan:
    name: str
    num_embeddings: int
    embedding_dim: int
    sharding_type: ShardingType
    shards: tuple[Shard, ...]

    @property
    def ranks(self) -> tuple[int, ...]:
        return tuple(sorted({s.rank for s in self.shards}))


@dataclass(frozen=True, kw_only=True, slots=True)
class RankPlan:
    rank: int
    host: int
    device: str
    memory_bytes: Memory
    capacity_bytes: Memory
    estimated_ms: Perf
    total_ms: float


@dataclass(frozen=True, kw_only=True, slots=True)
class Summary:
    makespan_ms: float
    lower_bound_ms: float | None
    solver: str
    num_tables: int
    num_ranks: int
    solve_time_s: float
    sharding_mix: Mapping[str, int]
    status: str = "feasible"


@dataclass(frozen=True, kw_only=True, slots=True)
class Provenance:
    solver: str
    solver_options: Mapping[str, object]
    shardplan_version: str
    inputs_sha256: str
    cost_model: Mapping[str, object]


@dataclass(frozen=True, kw_only=True, slots=True)
class Plan:
    """A sharding plan, self-contained: it embeds the workload and topology it was made for.

    Attributes:
        replicas: 2D sparse parallelism (TorchRec's ``DMPCollection``): the plan shards the
            tables over ``topology`` (one sharding group) and runs on
            ``replicas x topology.world_size`` ranks, each shard replicated on ``replicas``
            ranks of one host, the replicas' weights and optimizer state averaged every
            ``cost model options.replica_sync_steps`` steps. 1: an ordinary plan.
    """

    tables: tuple[TablePlan, ...]
    ranks: tuple[RankPlan, ...]
    summary: Summary
    provenance: Provenance
    workload: Workload
    topology: Topology
    replicas: int = 1

    def table(self, name: str) -> TablePlan:
        for t in self.tables:
            if t.name == name:
                return t
        raise KeyError(name)

    def to_dataframe(self) -> pd.DataFrame:
        """One row per table (see :func:`shardplan.frames.table_frame`)."""
        from shardplan.frames import table_frame

        return table_frame(self)

    def rank_frame(self) -> pd.DataFrame:
        """One row per rank (see :func:`shardplan.frames.rank_frame`)."""
        from shardplan.frames import rank_frame

        return rank_frame(self)

    def shard_frame(self) -> pd.DataFrame:
        """One row per shard (see :func:`shardplan.frames.shard_frame`)."""
        from shardplan.frames import shard_frame

        return shard_frame(self)


@dataclass(frozen=True, kw_only=True, slots=True)
class SolveResult:
    """What a solver returns.

    Attributes:
        assignment: the option and ranks chosen per table.
        status: ``optimal``, ``feasible`` (time limit hit), ...
        lower_bound_ms: the best bound the solver proved, if any.
        details: solver-specific facts (objective, gap, iterations), JSON-serialisable.
    """

    assignment: Assignment
    status: str = "feasible"
    lower_bound_ms: float | None = None
    details: Mapping[str, object] = field(default_factory=dict)


class Solver(ABC):
    """A placement algorithm. Subclasses are small; ``solve`` is all they must define."""

    name: str = "solver"

    @abstractmethod
    def solve(self, ctx: PlanningContext) -> SolveResult:
        """Choose an option per table and a rank per shard. Raises InfeasiblePlanError."""

    def options(self) -> dict[str, object]:
        """The solver's settings, recorded in the plan's provenance."""
        return {}
