"""The embedding cost model: memory, compute and communication of every shard, per host group,
priced the way TorchRec's runtime runs a step (``docs/cost-model.md``).

Linear by construction (``shardplan.types.CostModel``): a rank's lane times (``Lane``: compute,
and the send and receive directions of each communication stage) are its fixed overhead, plus
the fixed cost of each sharding group the plan uses (one set of fused collectives per sharding
type, as TorchRec issues one input dist and one output dist per sharding type; DDP buckets the
data-parallel gradients), plus each chosen option's everywhere-cost (what every rank pays for
a table sharded that way: its own ids going out, its pooled outputs coming back), plus the
costs of the shards it holds. The step time composes the ranks' lanes (``StepModel``: by
default every stage waits for its slowest participant, and the next batch's input dist runs
behind this batch's compute). Each cost is itemised by :class:`Component` so
:func:`shardplan.estimators.breakdown` can show why a rank is slow. Pieces: :mod:`.memory`,
:mod:`.compute`, :mod:`.comm`; coefficients: :mod:`.profiles`.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from shardplan.errors import SpecError
from shardplan.estimators import compute, memory
from shardplan.estimators.comm import CollectiveModel, GroupLinks, LinearCost, Span, group_links
from shardplan.estimators.profiles import (
    Collective,
    DeviceProfile,
    load_profile,
    profile_for_device,
)
from shardplan.types import (
    LANES,
    Composition,
    CostModel,
    DType,
    GroupKey,
    IdOrder,
    Lane,
    Memory,
    Mode,
    Optimizer,
    Perf,
    PlacementKind,
    ShardCost,
    ShardingOption,
    ShardingType,
    StepModel,
    TableSpec,
    Topology,
    Workload,
    row_span,
)

DEFAULT_PIPELINE_DEPTH = 3  # TorchRec TrainPipelineSparseDist keeps 3 batches on device: one in fwd/bwd, one in input dist, one being copied in
DEFAULT_DDP_BUCKET_BYTES = 25 * 2**20  # torch DistributedDataParallel bucket_cap_mb default: 25 MiB
#: Collectives of one input dist: TorchRec's KJTAllToAll sends the lengths, then the ids
#: (``torchrec/distributed/dist_data.py``: splits and lengths all-to-alls, then values).
INPUT_DIST_CALLS = 2


class Component(StrEnum):
    """What a cost item pays for (rows of the breakdown)."""

    WEIGHTS = "weights"
    OPTIMIZER_STATE = "optimizer_state"
    CACHE = "uvm_cache"
    GRADIENT = "dense_gradient"
    BACKWARD_WORKSPACE = "backward_workspace"
    INPUT_BUFFERS = "input_buffers"
    OUTPUT_BUFFERS = "output_buffers"
    LOCAL_INPUT = "local_input"
    POOLED_OUTPUTS = "pooled_outputs"
    LOOKUP = "lookup"
    UPDATE = "update"
    TABLE_OVERHEAD = "table_overhead"
    INPUT_DIST = "input_dist"
    OUTPUT_DIST = "output_dist"
    GRAD_DIST = "grad_dist"
    ALL_REDUCE = "all_reduce"
    KERNEL_LAUNCH = "kernel_launch"
    COLLECTIVE_LATENCY = "collective_latency"
    REPLICA_SYNC = "replica_sync"
    HBM_RESERVE = "hbm_reserve"


@dataclass(frozen=True, kw_only=True, slots=True)
class CostModelOptions:
    """Modelling choices, recorded in the plan.

    Attributes:
        pipeline_depth: batches of input a pipelined trainer holds on device at once (ids,
            lengths); 3 for TorchRec's ``TrainPipelineSparseDist`` (default), 1 unpipelined.
        hbm_reserved_fraction: HBM kept for the dense model, activations and the allocator.
            ``None`` uses the topology's ``hbm_reserved_fraction`` (already taken off
            ``Topology.capacity``); a number replaces it, charged (or credited) as a per-rank
            memory overhead of (this - topology's) x HBM capacity.
        pipelined: the next batch's input dist overlaps this batch's compute (TorchRec's
            ``TrainPipelineSparseDist``, default); ``False``: every stage runs in turn.
        composition: how ranks' stages make the step time (:class:`Composition`); the default,
            ``synchronized``, was chosen by measurement (``docs/cost-model.md``).
        output_dtype: dtype of pooled embeddings on the wire and in buffers (fp32 default as in
            TorchRec; fp16/bf16 model quantised communication).
        ddp_bucket_bytes: data-parallel gradients are all-reduced in buckets of this size
            (torch DDP's ``bucket_cap_mb``, 25 MiB): one call per bucket.
        replicas: 2D sparse parallelism (TorchRec's ``DMPCollection``): the topology is one
            sharding group and every shard has this many replicas on ranks of one host; 1: none.
        replica_sync_steps: the replicas' weights and optimizer state are averaged (one
            all-reduce among a shard's replicas, over the intra-host fabric) every this many
            steps (``DMPCollection.sync()``); its cost is spread over them.
    """

    pipeline_depth: int = DEFAULT_PIPELINE_DEPTH
    hbm_reserved_fraction: float | None = None
    pipelined: bool = True
    composition: Composition = Composition.SYNCHRONIZED
    output_dtype: DType = DType.FP32
    ddp_bucket_bytes: int = DEFAULT_DDP_BUCKET_BYTES
    replicas: int = 1
    replica_sync_steps: int = 1

    def __post_init__(self) -> None:
        if not (isinstance(self.pipeline_depth, int) and self.pipeline_depth >= 1):
            raise SpecError(f"pipeline_depth={self.pipeline_depth!r}: must be an integer >= 1 "
                            "(batches in flight; 3 for TorchRec's TrainPipelineSparseDist)")
        f = self.hbm_reserved_fraction
        if f is not None and not 0.0 <= f < 1.0:
            raise SpecError(f"hbm_reserved_fraction={f!r}: must be in [0, 1) or None (use the "
                            "topology's)")
        if self.output_dtype.is_quantized:
            raise SpecError(f"output_dtype={self.output_dtype.value!r}: pooled outputs are "
                            "fp32, fp16 or bf16")
        for name in ("replicas", "replica_sync_steps"):
            v = getattr(self, name)
            if not (isinstance(v, int) and not isinstance(v, bool) and v >= 1):
                raise SpecError(f"{name}={v!r}: must be an integer >= 1")
        if not (isinstance(self.ddp_bucket_bytes, int) and self.ddp_bucket_bytes > 0):
            raise SpecError(f"ddp_bucket_bytes={self.ddp_bucket_bytes!r}: must be a positive "
                            "integer (torch DDP's default is 25 MiB = 26214400)")

    @property
    def step(self) -> StepModel:
        return StepModel(composition=self.composition, pipelined=self.pipelined)

    def as_dict(self) -> dict[str, Any]:
        return {"pipeline_depth": self.pipeline_depth,
                "hbm_reserved_fraction": self.hbm_reserved_fraction,
                "pipelined": self.pipelined, "composition": self.composition.value,
                "output_dtype": self.output_dtype.value, "ddp_bucket_bytes": self.ddp_bucket_bytes,
                "replicas": self.replicas, "replica_sync_steps": self.replica_sync_steps}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> CostModelOptions:
        """The inverse of :meth:`as_dict`. Raises SpecError (a missing key or bad value)."""
        try:
            return cls(pipeline_depth=int(d["pipeline_depth"]),
                       hbm_reserved_fraction=d["hbm_reserved_fraction"],
                       pipelined=bool(d["pipelined"]), composition=Composition(d["composition"]),
                       output_dtype=DType(d["output_dtype"]),
                       ddp_bucket_bytes=int(d["ddp_bucket_bytes"]),
                       replicas=int(d.get("replicas", 1)),
                       replica_sync_steps=int(d.get("replica_sync_steps", 1)))
        except (KeyError, TypeError, ValueError) as exc:
            raise SpecError(f"cost-model options are incomplete or malformed ({exc!r})",
                            key_path="provenance.cost_model.options") from None


@dataclass(frozen=True, slots=True)
class _Table:
    spec: TableSpec
    optimizer: Optimizer
    pf: float
    features: int
    frequency_ordered: bool  # row blocks are hit unevenly (IdOrder.FREQUENCY with skew)


@dataclass(frozen=True, slots=True)
class _Group:
    """What a rank of one host group needs: its links, coefficients and collective lines."""

    links: GroupLinks
    profile: DeviceProfile
    bw: compute.Bandwidths
    a2a: LinearCost  # all-to-all over all ranks
    rail: LinearCost  # all-to-all among the ranks of one local index, one per host
    rs: LinearCost  # reduce-scatter over all ranks (RW partial sums)
    ag: LinearCost  # all-gather over all ranks (RW gradients)
    rs_host: LinearCost  # reduce-scatter within a host (TWRW)
    ag_host: LinearCost  # all-gather within a host (TWRW)
    ar: LinearCost  # all-reduce over all ranks (one DDP bucket)
    inter_s_per_byte: float  # to one rank of another host over the NIC share
    replica: LinearCost  # all-reduce among a shard's replicas (2D), inside one host


Items = tuple[tuple[Component, ShardCost], ...]

_ROW_SPLIT = (ShardingType.ROW_WISE, ShardingType.TABLE_ROW_WISE, ShardingType.GRID_SHARD)
_COL_SPLIT = (ShardingType.COLUMN_WISE, ShardingType.TABLE_COLUMN_WISE, ShardingType.GRID_SHARD)
_HOST_ROWS = (ShardingType.TABLE_ROW_WISE, ShardingType.GRID_SHARD)
_NL = len(LANES)
_LANE_INDEX = {ln: i for i, ln in enumerate(LANES)}

# A raw item: (component, hbm, ddr, lane ms...) as plain floats; objects built once per shape.
Raw = tuple


def _mem(c: Component, *, hbm: float = 0.0, ddr: float = 0.0) -> Raw:
    return (c, hbm, ddr) + (0.0,) * _NL


def _t(c: Component, lanes: Mapping[Lane, float]) -> Raw:
    """Lane times given in seconds, stored in ms."""
    v = [0.0] * _NL
    for ln, s in lanes.items():
        v[_LANE_INDEX[ln]] += s * 1e3
    return (c, 0.0, 0.0, *v)


def _both(send: Lane, recv: Lane, s: float) -> dict[Lane, float]:
    """A time paid on both directions of a stage (a latency, a symmetric ring)."""
    return {send: s, recv: s}


def _cost(row: Sequence[float]) -> ShardCost:
    return ShardCost(memory=Memory(hbm=row[0], ddr=row[1]), perf=Perf.from_lanes(row[2:]))


def _items(raw: Sequence[Raw]) -> Items:
    return tuple((r[0], _cost(r[1:])) for r in raw)


def _sum(raw: Sequence[Raw]) -> ShardCost:
    if not raw:
        return _cost((0.0,) * (2 + _NL))
    return _cost([sum(col) for col in list(zip(*raw))[1:]])


class EmbeddingCostModel(CostModel):
    """Memory and time of embedding shards, per host group. See the module docstring.

    Args:
        workload: the tables and batch.
        topology: the cluster.
        profiles: one profile per host group (``topology.host_groups`` order); ``None`` picks
            the bundled profile of each group's device model (:func:`profile_for_device`).
        options: modelling choices (:class:`CostModelOptions`).

    Raises:
        SpecError: ``profiles`` has the wrong length.
    """

    name = "embedding-v2"

    def __init__(self, workload: Workload, topology: Topology, *,
                 profiles: Sequence[DeviceProfile] | None = None,
                 options: CostModelOptions | None = None) -> None:
        self.workload = workload
        self.topology = topology
        self.options = options or CostModelOptions()
        self.step = self.options.step
        if profiles is None:
            profiles = [profile_for_device(g.device.model) for g in topology.host_groups]
        if len(profiles) != len(topology.host_groups):
            raise SpecError(f"got {len(profiles)} profiles for {len(topology.host_groups)} host "
                            "groups; give one per group (or none for the bundled ones)")
        self.profiles = tuple(profiles)
        self.world = topology.world_size
        self.training = workload.mode is Mode.TRAINING
        self.batch_local = workload.batch_per_rank(self.world)
        self.batch_global = workload.global_batch(self.world)
        self.out_bytes = self.options.output_dtype.bits / 8
        self._tables = {t.name: _Table(t, workload.optimizer_of(t), float(t.pooling_factor),
                                       t.num_features,
                                       t.access is not None
                                       and t.access.id_order is IdOrder.FREQUENCY)
                        for t in workload.tables}
        links = group_links(topology, [p.coefficients for p in self.profiles])
        # each collective of a sharding group is linearised at the most it can carry: every
        # table in the group (a tangent of the concave cost, so an upper bound elsewhere; its
        # error is bounded by the protocols' latency difference, where a tangent at a small
        # size would overprice big groups without bound; docs/cost-model.md)
        pooled = sum(self.batch_global * t.num_features * t.embedding_dim * self.out_bytes
                     for t in workload.tables)
        grads = sum(t.num_embeddings * t.embedding_dim * memory.gradient_element_bytes(t.dtype)
                    for t in workload.tables)
        b_ar = float(min(self.options.ddp_bucket_bytes, grads))
        b_host = pooled / topology.num_hosts
        b_rep = sum(memory.weight_bytes(t.num_embeddings, t.embedding_dim, t.dtype)
                    for t in workload.tables) / self.world
        self._groups = []
        for hg, prof, ln in zip(topology.host_groups, self.profiles, links):
            co = prof.coefficients
            bw = compute.Bandwidths(
                hbm_fwd=hg.device.hbm_bandwidth_bytes_per_s * co.lookup_bandwidth_efficiency,
                hbm_bwd=hg.device.hbm_bandwidth_bytes_per_s * co.backward_bandwidth_efficiency,
                pcie=hg.host.pcie_bandwidth_bytes_per_s * co.pcie_bandwidth_efficiency,
                # the host's DRAM bandwidth is shared by its devices
                ddr=hg.host.ddr_bandwidth_bytes_per_s / hg.devices_per_host * co.ddr_bandwidth_efficiency)
            cm = CollectiveModel(ln, co)
            rail = cm.cost(Collective.ALL_TO_ALL, pooled, Span.RAIL)
            inter = (rail.s_per_byte * ln.hosts / (ln.hosts - 1)) if ln.hosts > 1 else 0.0
            self._groups.append(_Group(
                links=ln, profile=prof, bw=bw,
                a2a=cm.cost(Collective.ALL_TO_ALL, pooled),
                rail=rail,
                rs=cm.cost(Collective.REDUCE_SCATTER, pooled),
                ag=cm.cost(Collective.REDUCE_SCATTER, pooled),  # all-gather: reduce-scatter's line
                rs_host=cm.cost(Collective.REDUCE_SCATTER, b_host, Span.HOST),
                ag_host=cm.cost(Collective.REDUCE_SCATTER, b_host, Span.HOST),
                ar=cm.cost(Collective.ALL_REDUCE, b_ar),
                inter_s_per_byte=inter,
                replica=cm.cost(Collective.ALL_REDUCE, b_rep, Span.HOST, self.options.replicas)))
        self._cost_memo: dict[tuple, dict[tuple[int, int, int], ShardCost]] = {}
        self._hits: dict[tuple[str, float], float] = {}
        self._every_memo: dict[tuple, ShardCost] = {}
        self._overhead_memo: dict[int, ShardCost] = {}
        self._group_memo: dict[tuple[GroupKey, int, bool], ShardCost] = {}
        self._span_memo: dict[int, tuple[ShardingOption, tuple[int, ...] | None]] = {}
        self._span_line_memo: dict[tuple[int, int, int], tuple[LinearCost, LinearCost]] = {}
        self._pooled_total = pooled
        self._host_of = [ri.host for ri in topology.ranks]

    # -- the CostModel interface --------------------------------------------------------------

    def shard_cost(self, option: ShardingOption, shard_index: int, group: int) -> ShardCost:
        s = option.shards[shard_index]
        costs = self._costs_of(option, group)
        key = self._shape_key(option, s.row_offset, s.num_rows, s.num_cols)
        c = costs.get(key)
        return c if c is not None else self._shard(option, group, key, costs)

    def shard_costs(self, option: ShardingOption, group: int) -> list[ShardCost]:
        """Per-shard costs, each distinct shape costed once."""
        costs = self._costs_of(option, group)
        keys = [self._shape_key(option, s.row_offset, s.num_rows, s.num_cols)
                for s in option.shards]
        for k in sorted(set(keys) - costs.keys()):
            self._shard(option, group, k, costs)
        return list(map(costs.__getitem__, keys))

    def everywhere_cost(self, option: ShardingOption, group: int) -> ShardCost:
        span = self.span_of(option)
        key = (option.table, option.sharding_type, len(option.shards), group, span is None)
        c = self._every_memo.get(key)
        if c is None:
            self._check_group(group)
            c = self._every_memo[key] = _sum(self._everywhere(
                self._table(option.table), option.sharding_type, len(option.shards), group,
                span))
        return c

    def rank_overhead(self, group: int) -> ShardCost:
        c = self._overhead_memo.get(group)
        return c if c is not None else self.overhead_items(group)[1]

    def group_key(self, option: ShardingOption) -> GroupKey | None:
        return GroupKey(sharding_type=option.sharding_type, ranks=self.span_of(option))

    def group_cost(self, key: GroupKey, group: int) -> ShardCost:
        return self._group(key, group, False)

    def group_member_cost(self, key: GroupKey, group: int) -> ShardCost:
        return self._group(key, group, True)

    def _group(self, key: GroupKey, group: int, member: bool) -> ShardCost:
        c = self._group_memo.get((key, group, member))
        if c is None:
            self._check_group(group)
            c = self._group_memo[key, group, member] = _sum(
                self._group_terms(key, group, member))
        return c

    def span_of(self, option: ShardingOption) -> tuple[int, ...] | None:
        """The ranks a row-wise option's reduce-scatter runs over (None: all ranks), from the
        ranks its shards are fixed to (:func:`shardplan.types.row_span`)."""
        if option.sharding_type is not ShardingType.ROW_WISE:
            return None
        hit = self._span_memo.get(id(option))
        if hit is not None and hit[0] is option:
            return hit[1]
        cands = option.candidate_ranks
        if any(c is None or len(c) != 1 for c in cands):
            span = None
        else:
            span = row_span([c[0] for c in cands], self._table(option.table).spec.num_embeddings,
                            self.world)
        self._span_memo[id(option)] = (option, span)
        return span

    def describe(self) -> dict[str, object]:
        return {"name": self.name, "options": self.options.as_dict(),
                "profiles": {hg.name: p.describe()
                             for hg, p in zip(self.topology.host_groups, self.profiles)}}

    # -- itemised costs (for the breakdown) ---------------------------------------------------

    def shard_items(self, option: ShardingOption, shard_index: int, group: int) -> Items:
        """The cost of one shard, itemised by component (sums to ``shard_cost``)."""
        self._check_group(group)
        s = option.shards[shard_index]
        return _items(self._shard_terms(self._table(option.table), option, group, s.row_offset,
                                        s.num_rows, s.num_cols))

    def _span_lines(self, gi: int, span: tuple[int, ...]) -> tuple[LinearCost, LinearCost]:
        """(reduce-scatter, all-gather) among the ranks of ``span``."""
        hosts = len({self._host_of[r] for r in span})
        key = (gi, len(span), hosts)
        hit = self._span_line_memo.get(key)
        if hit is None:
            g = self._groups[gi]
            cm = CollectiveModel(g.links, g.profile.coefficients)
            rs = cm.cost(Collective.REDUCE_SCATTER, self._pooled_total, Span.GROUP, len(span),
                         hosts)
            hit = self._span_line_memo[key] = (rs, rs)
        return hit

    def everywhere_items(self, option: ShardingOption, group: int) -> tuple[Items, ShardCost]:
        """The everywhere-cost of ``option`` on a rank of ``group``, itemised, and its sum."""
        self._check_group(group)
        raw = self._everywhere(self._table(option.table), option.sharding_type,
                               len(option.shards), group, self.span_of(option))
        return _items(raw), self.everywhere_cost(option, group)

    def group_items(self, key: GroupKey, group: int, member: bool = False
                    ) -> tuple[Items, ShardCost]:
        """The fixed cost of sharding group ``key`` on a rank of ``group`` (``member``: the
        extra of a rank in ``key.ranks``), itemised."""
        self._check_group(group)
        return _items(self._group_terms(key, group, member)), self._group(key, group, member)

    def overhead_items(self, group: int) -> tuple[Items, ShardCost]:
        """The fixed cost of a rank of ``group``, itemised, and its sum."""
        self._check_group(group)
        raw = self._overhead(group)
        c = self._overhead_memo.get(group)
        if c is None:
            c = self._overhead_memo[group] = _sum(raw)
        return _items(raw), c

    def collective_lines(self, group: int) -> dict[str, LinearCost]:
        """The linearised collective calls of a rank of ``group`` (for reports and tests)."""
        self._check_group(group)
        g = self._groups[group]
        return {"all_to_all": g.a2a, "all_to_all_rail": g.rail, "reduce_scatter": g.rs,
                "all_gather": g.ag, "reduce_scatter_host": g.rs_host,
                "all_gather_host": g.ag_host, "all_reduce": g.ar}

    # -- internals ----------------------------------------------------------------------------

    def _table(self, name: str) -> _Table:
        try:
            return self._tables[name]
        except KeyError:
            raise SpecError(f"option for table {name!r}, which is not in workload "
                            f"{self.workload.name!r}") from None

    def _check_group(self, group: int) -> None:
        if not 0 <= group < len(self._groups):
            raise SpecError(f"host group {group} does not exist; the topology has "
                            f"{len(self._groups)}")

    def _shape_key(self, option: ShardingOption, row_offset: int, rows: int, cols: int
                   ) -> tuple[int, int, int]:
        # a frequency-ordered table's row blocks differ by where they start, not only by size
        skewed = option.sharding_type in _ROW_SPLIT and self._table(option.table).frequency_ordered
        return (row_offset if skewed else 0, rows, cols)

    def _costs_of(self, option: ShardingOption, group: int) -> dict[tuple[int, int, int], ShardCost]:
        span = self.span_of(option)
        hosts = len({self._host_of[r] for r in span}) if span else 0
        key = (option.table, option.sharding_type, option.placement, len(option.shards), group,
               hosts)
        m = self._cost_memo.get(key)
        if m is None:
            self._check_group(group)
            m = self._cost_memo[key] = {}
        return m

    def _shard(self, option: ShardingOption, group: int, key: tuple[int, int, int],
               costs: dict[tuple[int, int, int], ShardCost]) -> ShardCost:
        c = costs[key] = _sum(self._shard_terms(self._table(option.table), option, group, *key))
        return c

    def _hit_rate(self, t: _Table, cache_ratio: float) -> float:
        key = (t.spec.name, cache_ratio)
        h = self._hits.get(key)
        if h is None:
            h = self._hits[key] = compute.hit_rate(t.spec.access, cache_ratio, t.spec.num_embeddings)
        return h

    def _ids_on_shard(self, t: _Table, st: ShardingType, row_offset: int, rows: int) -> float:
        if st is ShardingType.DATA_PARALLEL:
            return self.batch_local * t.pf
        if st in _ROW_SPLIT:
            share = compute.block_share(t.spec.access, row_offset, rows, t.spec.num_embeddings)
            return self.batch_global * t.pf * share
        return self.batch_global * t.pf

    def _shard_terms(self, t: _Table, option: ShardingOption, gi: int, row_offset: int,
                     rows: int, cols: int) -> tuple[Raw, ...]:
        st, kind = option.sharding_type, option.placement.kind
        g = self._groups[gi]
        co = g.profile.coefficients
        dtype = t.spec.dtype
        train = self.training
        dp = st is ShardingType.DATA_PARALLEL
        ids = self._ids_on_shard(t, st, row_offset, rows)
        samples = (self.batch_local if dp else self.batch_global) * t.features
        rb = memory.row_bytes(cols, dtype)
        state_row = memory.optimizer_state_bytes_per_row(t.optimizer, cols) if train else 0.0
        weights = rows * rb
        state = rows * state_row
        on_hbm = kind is PlacementKind.HBM
        items: list[Raw] = []

        # memory
        items.append(_mem(Component.WEIGHTS, **{"hbm" if on_hbm else "ddr": weights}))
        if train:
            items.append(_mem(Component.OPTIMIZER_STATE, **{"hbm" if on_hbm else "ddr": state}))
        if kind is PlacementKind.UVM_CACHING:
            items.append(_mem(Component.CACHE, hbm=memory.cache_bytes(
                rows, cols, dtype, option.placement.cache_ratio)))
        grad_el = memory.gradient_element_bytes(dtype)
        if dp and train:
            items.append(_mem(Component.GRADIENT, hbm=rows * cols * grad_el))
        if train:
            items.append(_mem(Component.BACKWARD_WORKSPACE, hbm=memory.backward_workspace_bytes(ids)))
        if not dp:
            items.append(_mem(Component.INPUT_BUFFERS,
                              hbm=memory.input_bytes(ids, samples) * self.options.pipeline_depth))
        out_buf = memory.pooled_bytes(samples, cols, self.out_bytes)
        items.append(_mem(Component.OUTPUT_BUFFERS, hbm=out_buf * (2 if train else 1)))

        # compute
        hit = self._hit_rate(t, option.placement.cache_ratio) if kind is PlacementKind.UVM_CACHING else 1.0
        row_b, other_b = compute.forward_bytes(ids, rb, samples, cols, self.out_bytes, memory.ID_BYTES)
        fwd_s = (row_b * compute.row_read_s_per_byte(kind, g.bw, hit, backward=False)
                 + other_b / g.bw.hbm_fwd)
        items.append(_t(Component.LOOKUP, {Lane.FWD_COMPUTE: fwd_s}))
        per_table_s = co.per_table_overhead_us * 1e-6
        if train:
            if dp:
                # dense path (TorchRec DP): scatter-add into a dense gradient, then an
                # elementwise optimizer step over the whole replica
                other = samples * cols * self.out_bytes + 2.0 * ids * cols * grad_el
                dense = rows * (2.0 * rb + cols * grad_el + 2.0 * state_row)
                bwd_s = (other + dense) / g.bw.hbm_bwd
            else:
                rmw, other = compute.backward_bytes(ids, rb, state_row, samples, cols,
                                                    self.out_bytes,
                                                    memory.BACKWARD_WORKSPACE_BYTES_PER_ID,
                                                    rows=rows)
                bwd_s = (rmw * compute.row_read_s_per_byte(kind, g.bw, hit, backward=True)
                         + other / g.bw.hbm_bwd)
            items.append(_t(Component.UPDATE, {Lane.BWD_COMPUTE: bwd_s}))
            items.append(_t(Component.TABLE_OVERHEAD, {Lane.FWD_COMPUTE: per_table_s,
                                                       Lane.BWD_COMPUTE: per_table_s}))
        else:
            items.append(_t(Component.TABLE_OVERHEAD, {Lane.FWD_COMPUTE: per_table_s}))

        # 2D: the shard's weights and optimizer state averaged among its replicas
        reps = self.options.replicas
        if train and reps > 1:
            sync = (weights + state) * g.replica.s_per_byte / self.options.replica_sync_steps
            items.append(_t(Component.REPLICA_SYNC, {Lane.DP_SYNC: sync}))

        # communication: the holder's side
        if dp:
            if train and self.world > 1:
                grad = rows * cols * grad_el
                # its bytes in the bucketed all-reduce, and its share of the buckets' calls
                # beyond the group's first (ceil(b / bucket) <= 1 + b / bucket)
                items.append(_t(Component.ALL_REDUCE, {Lane.DP_SYNC: grad * g.ar.s_per_byte}))
                items.append(_t(Component.COLLECTIVE_LATENCY, {
                    Lane.DP_SYNC: grad / self.options.ddp_bucket_bytes * g.ar.latency_s}))
            return tuple(items)
        # its ids and lengths, from every rank, for the whole global batch
        items.append(_t(Component.INPUT_DIST, {
            Lane.INPUT_RECV: memory.input_bytes(ids, samples) * g.a2a.s_per_byte}))
        buf = memory.pooled_bytes(self.batch_global * t.features, cols, self.out_bytes)
        span = self.span_of(option)
        if span is not None:
            # reduce-scatter of the partial sums among the span, then each holder's chunk of
            # samples to their owners (all-to-all); the reverse backward
            rs, ag = self._span_lines(gi, span)
            chunk = buf / len(span) * g.a2a.s_per_byte
            items.append(_t(Component.OUTPUT_DIST, {Lane.OUTPUT_SEND: buf * rs.s_per_byte + chunk,
                                                    Lane.OUTPUT_RECV: buf * rs.s_per_byte}))
            if train:
                items.append(_t(Component.GRAD_DIST, {Lane.GRAD_RECV: buf * ag.s_per_byte + chunk,
                                                      Lane.GRAD_SEND: buf * ag.s_per_byte}))
        elif st is ShardingType.ROW_WISE:
            # partial sums of every sample, in the group's one reduce-scatter; all-gather back
            items.append(_t(Component.OUTPUT_DIST, _both(Lane.OUTPUT_SEND, Lane.OUTPUT_RECV,
                                                         buf * g.rs.s_per_byte)))
            if train:
                items.append(_t(Component.GRAD_DIST, _both(Lane.GRAD_SEND, Lane.GRAD_RECV,
                                                           buf * g.ag.s_per_byte)))
        elif st in _HOST_ROWS:
            # reduce-scatter within the host, then this rank's 1/L to the rail peers (the
            # ranks of its local index on the other hosts); the reverse backward
            # (the host's reduce-scatter runs over all its L ranks, as the executor runs it)
            ring = buf * g.rs_host.s_per_byte
            rail = buf / g.links.local * g.rail.s_per_byte
            items.append(_t(Component.OUTPUT_DIST, {Lane.OUTPUT_SEND: ring + rail,
                                                    Lane.OUTPUT_RECV: ring}))
            if train:
                items.append(_t(Component.GRAD_DIST, {Lane.GRAD_RECV: ring + rail,
                                                      Lane.GRAD_SEND: ring}))
        else:  # TW, CW, TWCW: pooled outputs of every sample to their owners
            s = out_buf * g.a2a.s_per_byte
            items.append(_t(Component.OUTPUT_DIST, {Lane.OUTPUT_SEND: s}))
            if train:
                items.append(_t(Component.GRAD_DIST, {Lane.GRAD_RECV: s}))
        return tuple(items)

    def _everywhere(self, t: _Table, st: ShardingType, n: int, gi: int,
                    span: tuple[int, ...] | None = None) -> tuple[Raw, ...]:
        g = self._groups[gi]
        train = self.training
        ids = self.batch_local * t.pf
        samples = self.batch_local * t.features
        items = [_mem(Component.LOCAL_INPUT,
                      hbm=memory.input_bytes(ids, samples) * self.options.pipeline_depth)]
        if st is ShardingType.DATA_PARALLEL:
            return tuple(items)
        dim = t.spec.embedding_dim
        pooled = memory.pooled_bytes(samples, dim, self.out_bytes)
        items.append(_mem(Component.POOLED_OUTPUTS, hbm=pooled * (2 if train else 1)))
        # ids go to every column shard; lengths go to every shard
        if st is ShardingType.GRID_SHARD:  # once per column block (a host's row blocks)
            id_copies = max(1, n // g.links.local)
        else:
            id_copies = n if st in _COL_SPLIT else 1
        sent = ids * memory.ID_BYTES * id_copies + samples * memory.LENGTH_BYTES * n
        items.append(_t(Component.INPUT_DIST, {Lane.INPUT_SEND: sent * g.a2a.s_per_byte}))
        if st is ShardingType.ROW_WISE and span is None:  # outputs come back by the reduce-scatter
            return tuple(items)
        if st in _HOST_ROWS:
            # from the rank of this local index on the holding host, over the NIC (the ranks
            # of the holding host itself get theirs from the reduce-scatter: the others pay)
            s = pooled * g.inter_s_per_byte
        else:
            s = pooled * g.a2a.s_per_byte
        items.append(_t(Component.OUTPUT_DIST, {Lane.OUTPUT_RECV: s}))
        if train:
            items.append(_t(Component.GRAD_DIST, {Lane.GRAD_SEND: s}))
        return tuple(items)

    def _group_terms(self, key: GroupKey, gi: int, member: bool = False) -> tuple[Raw, ...]:
        """The fixed cost of a sharding group: its collectives' latencies and its kernel
        launches (one batched lookup kernel per sharding type, forward and backward). With
        ``member``: what a rank of ``key.ranks`` pays on top (the collectives among them)."""
        g = self._groups[gi]
        co = g.profile.coefficients
        train = self.training
        if member:
            if key.ranks is None or self.world <= 1:
                return ()
            rs, ag = self._span_lines(gi, key.ranks)
            lanes = _both(Lane.OUTPUT_SEND, Lane.OUTPUT_RECV, rs.latency_s)
            if train:
                lanes.update(_both(Lane.GRAD_SEND, Lane.GRAD_RECV, ag.latency_s))
            return (_t(Component.COLLECTIVE_LATENCY, lanes),)
        k_s = co.kernel_overhead_us * 1e-6
        items = [_t(Component.KERNEL_LAUNCH, {Lane.FWD_COMPUTE: k_s,
                                              Lane.BWD_COMPUTE: k_s if train else 0.0})]
        if self.world <= 1:
            return tuple(items)
        st = key.sharding_type
        if st is ShardingType.DATA_PARALLEL:
            if train:
                items.append(_t(Component.COLLECTIVE_LATENCY, {Lane.DP_SYNC: g.ar.latency_s}))
            return tuple(items)
        lat_in = INPUT_DIST_CALLS * g.a2a.latency_s
        if st is ShardingType.ROW_WISE and key.ranks is not None:
            out = back = g.a2a.latency_s  # the chunks to their owners; the span's own: members
        elif st is ShardingType.ROW_WISE:
            out, back = g.rs.latency_s, g.ag.latency_s
        elif st in _HOST_ROWS:
            cross = g.rail.latency_s if self.topology.num_hosts > 1 else 0.0
            out, back = g.rs_host.latency_s + cross, g.ag_host.latency_s + cross
        else:
            out = back = g.a2a.latency_s
        lanes = _both(Lane.INPUT_SEND, Lane.INPUT_RECV, lat_in)
        lanes.update(_both(Lane.OUTPUT_SEND, Lane.OUTPUT_RECV, out))
        if train:
            lanes.update(_both(Lane.GRAD_SEND, Lane.GRAD_RECV, back))
        items.append(_t(Component.COLLECTIVE_LATENCY, lanes))
        return tuple(items)

    def _overhead(self, gi: int) -> tuple[Raw, ...]:
        items: list[Raw] = []
        if self.training and self.options.replicas > 1:  # the sync's one call
            items.append(_t(Component.REPLICA_SYNC, {
                Lane.DP_SYNC: self._groups[gi].replica.latency_s / self.options.replica_sync_steps}))
        f = self.options.hbm_reserved_fraction
        if f is not None:
            cap = self.topology.host_groups[gi].device.hbm_capacity_bytes
            items.append(_mem(Component.HBM_RESERVE,
                              hbm=(f - self.topology.hbm_reserved_fraction) * cap))
        return tuple(items)


ProfileArg = DeviceProfile | str | Path


def resolve_profiles(topology: Topology,
                     profile: ProfileArg | Iterable[ProfileArg] | None) -> list[DeviceProfile]:
    """One profile per host group: the given ones where their ``device_model`` matches the
    group's device, else the bundled one for the group's device.

    Raises:
        SpecError: a given profile matches no host group (names the file and the models).
    """
    if profile is None:
        given: list[DeviceProfile] = []
    elif isinstance(profile, (DeviceProfile, str, Path)):
        given = [profile if isinstance(profile, DeviceProfile) else load_profile(profile)]
    else:
        given = [p if isinstance(p, DeviceProfile) else load_profile(p) for p in profile]
    models = [g.device.model for g in topology.host_groups]
    for p in given:
        if p.device_model not in models:
            raise SpecError(f"profile {p.name!r} is for device model {p.device_model!r}, but "
                            f"topology {topology.name!r} has {', '.join(sorted(set(models)))}; "
                            "use a profile for one of those (or set its device_model)",
                            source=p.source or None, key_path="device_model")
    by_model = {p.device_model: p for p in given}
    return [by_model.get(m) or profile_for_device(m) for m in models]


def default_cost_model(workload: Workload, topology: Topology,
                       profile: ProfileArg | Iterable[ProfileArg] | None = None,
                       options: CostModelOptions | None = None) -> EmbeddingCostModel:
    """The cost model the planner uses unless given another.

    Args:
        workload: the tables and batch.
        topology: the cluster.
        profile: a profile (object or YAML path) or several; each applies to the host groups of
            its ``device_model``. Groups without one get their bundled profile.
        options: modelling choices (pipelining, composition, HBM reserve, ...).

    Returns:
        An :class:`EmbeddingCostModel`.

    Raises:
        SpecError: a profile file is bad, or matches no device of the topology.
    """
    return EmbeddingCostModel(workload, topology, profiles=resolve_profiles(topology, profile),
                              options=options)
