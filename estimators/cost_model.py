"""The embedding cost model: memory, compute and communication of every shard, per host group.

Linear by construction (``shardplan.types.CostModel``): a rank's cost is its fixed overhead,
plus each chosen option's everywhere-cost (what every rank pays for a table sharded that way:
its own ids going out, its pooled outputs coming back), plus the costs of the shards it holds.
Each cost is itemised by :class:`Component` so :func:`shardplan.estimators.breakdown` can show
why a rank is slow. Formulas: ``docs/cost-model.md``; pieces: :mod:`.memory`, :mod:`.compute`,
:mod:`.comm`; coefficients: :mod:`.profiles`.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, Iterable, Sequence

from shardplan.errors import SpecError
from shardplan.estimators import compute, memory
from shardplan.estimators.comm import GroupLinks, group_links
from shardplan.estimators.profiles import (
    Collective,
    DeviceProfile,
    load_profile,
    profile_for_device,
)
from shardplan.types import (
    CostModel,
    DType,
    Memory,
    Mode,
    Optimizer,
    Perf,
    PlacementKind,
    ShardCost,
    ShardingOption,
    ShardingType,
    TableSpec,
    Topology,
    Workload,
)

DEFAULT_PIPELINE_DEPTH = 3  # TorchRec TrainPipelineSparseDist keeps 3 batches on device: one in fwd/bwd, one in input dist, one being copied in


class LinkDuplex(StrEnum):
    """How the two directions of an all-to-all share a rank's link.

    ``full``: links are full duplex and a rank's sends and receives overlap; each direction is
    charged half its time (exact when a rank sends as much as it receives, a lower bound
    otherwise). ``half``: sends and receives are charged in full (an upper bound).
    """

    FULL = "full"
    HALF = "half"


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
        comm_overlap_fraction: share of communication hidden behind compute, in [0, 1]:
            ``total = compute + (1 - f) x comm``. 0 (default): no overlap, stages add up.
        duplex: how all-to-all directions share a link (:class:`LinkDuplex`).
        output_dtype: dtype of pooled embeddings on the wire and in buffers (fp32 default as in
            TorchRec; fp16/bf16 model quantised communication).
    """

    pipeline_depth: int = DEFAULT_PIPELINE_DEPTH
    hbm_reserved_fraction: float | None = None
    comm_overlap_fraction: float = 0.0
    duplex: LinkDuplex = LinkDuplex.FULL
    output_dtype: DType = DType.FP32

    def __post_init__(self) -> None:
        if not (isinstance(self.pipeline_depth, int) and self.pipeline_depth >= 1):
            raise SpecError(f"pipeline_depth={self.pipeline_depth!r}: must be an integer >= 1 "
                            "(batches in flight; 3 for TorchRec's TrainPipelineSparseDist)")
        f = self.hbm_reserved_fraction
        if f is not None and not 0.0 <= f < 1.0:
            raise SpecError(f"hbm_reserved_fraction={f!r}: must be in [0, 1) or None (use the "
                            "topology's)")
        if not 0.0 <= self.comm_overlap_fraction <= 1.0:
            raise SpecError(f"comm_overlap_fraction={self.comm_overlap_fraction!r}: must be in "
                            "[0, 1]")
        if self.output_dtype.is_quantized:
            raise SpecError(f"output_dtype={self.output_dtype.value!r}: pooled outputs are "
                            "fp32, fp16 or bf16")

    def as_dict(self) -> dict[str, Any]:
        return {"pipeline_depth": self.pipeline_depth,
                "hbm_reserved_fraction": self.hbm_reserved_fraction,
                "comm_overlap_fraction": self.comm_overlap_fraction,
                "duplex": self.duplex.value, "output_dtype": self.output_dtype.value}


@dataclass(frozen=True, slots=True)
class _Table:
    spec: TableSpec
    optimizer: Optimizer
    pf: float
    features: int


@dataclass(frozen=True, slots=True)
class _Group:
    links: GroupLinks
    profile: DeviceProfile
    bw: compute.Bandwidths
    a2a: float  # s per byte of all-to-all (duplex weight and kind efficiency applied)
    rs_scale: float  # 1 / kind efficiency of reduce-scatter / all-gather
    ar_scale: float  # 1 / kind efficiency of all-reduce
    lat_a2a: float  # s, one all-to-all call over all ranks
    lat_rs: float  # s, one reduce-scatter (or all-gather) call over all ranks
    lat_ar: float  # s, one all-reduce call over all ranks


Items = tuple[tuple[Component, ShardCost], ...]

_ROW_SPLIT = (ShardingType.ROW_WISE, ShardingType.TABLE_ROW_WISE)
_COL_SPLIT = (ShardingType.COLUMN_WISE, ShardingType.TABLE_COLUMN_WISE)


# A raw item: (component, hbm, ddr, fwd_compute, fwd_comm, bwd_compute, bwd_comm, dp_sync),
# bytes and seconds as plain floats; objects are built once per distinct shard shape.
Raw = tuple[Component, float, float, float, float, float, float, float]


def _mem(c: Component, *, hbm: float = 0.0, ddr: float = 0.0) -> Raw:
    return (c, hbm, ddr, 0.0, 0.0, 0.0, 0.0, 0.0)


def _ms(c: Component, fwd_compute: float = 0.0, fwd_comm: float = 0.0, bwd_compute: float = 0.0,
        bwd_comm: float = 0.0, dp_sync: float = 0.0) -> Raw:
    """Stage times given in seconds, stored in ms."""
    return (c, 0.0, 0.0, fwd_compute * 1e3, fwd_comm * 1e3, bwd_compute * 1e3, bwd_comm * 1e3,
            dp_sync * 1e3)


def _cost(h: float, d: float, fc: float, fm: float, bc: float, bm: float, dps: float) -> ShardCost:
    return ShardCost(memory=Memory(hbm=h, ddr=d),
                     perf=Perf(fwd_compute=fc, fwd_comm=fm, bwd_compute=bc, bwd_comm=bm, dp_sync=dps))


def _items(raw: Sequence[Raw]) -> Items:
    return tuple((r[0], _cost(*r[1:])) for r in raw)


def _sum(raw: Sequence[Raw]) -> ShardCost:
    cols = list(zip(*raw))
    return _cost(sum(cols[1]), sum(cols[2]), sum(cols[3]), sum(cols[4]), sum(cols[5]),
                 sum(cols[6]), sum(cols[7]))


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

    name = "embedding-v1"

    def __init__(self, workload: Workload, topology: Topology, *,
                 profiles: Sequence[DeviceProfile] | None = None,
                 options: CostModelOptions | None = None) -> None:
        self.workload = workload
        self.topology = topology
        self.options = options or CostModelOptions()
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
                                       t.num_features) for t in workload.tables}
        links = group_links(topology, [p.coefficients for p in self.profiles])
        dw = 0.5 if self.options.duplex is LinkDuplex.FULL else 1.0
        self._groups = []
        for hg, prof, ln in zip(topology.host_groups, self.profiles, links):
            co = prof.coefficients
            bw = compute.Bandwidths(
                hbm_fwd=hg.device.hbm_bandwidth_bytes_per_s * co.lookup_bandwidth_efficiency,
                hbm_bwd=hg.device.hbm_bandwidth_bytes_per_s * co.backward_bandwidth_efficiency,
                pcie=hg.host.pcie_bandwidth_bytes_per_s * co.pcie_bandwidth_efficiency,
                # the host's DRAM bandwidth is shared by its devices
                ddr=hg.host.ddr_bandwidth_bytes_per_s / hg.devices_per_host * co.ddr_bandwidth_efficiency)
            many = self.world > 1
            self._groups.append(_Group(
                ln, prof, bw,
                dw * ln.all_to_all_s_per_byte() / co.kind_efficiency(Collective.ALL_TO_ALL),
                1.0 / co.kind_efficiency(Collective.REDUCE_SCATTER),
                1.0 / co.kind_efficiency(Collective.ALL_REDUCE),
                ln.latency_s(Collective.ALL_TO_ALL, co) if many else 0.0,
                ln.latency_s(Collective.REDUCE_SCATTER, co) if many else 0.0,
                ln.latency_s(Collective.ALL_REDUCE, co) if many else 0.0))
        self._cost_memo: dict[tuple, dict[tuple[int, int], ShardCost]] = {}
        self._hits: dict[tuple[str, float], float] = {}
        self._every_memo: dict[tuple, ShardCost] = {}
        self._overhead_memo: dict[int, ShardCost] = {}
        self._recent: OrderedDict[tuple[int, int], tuple[ShardingOption, list[ShardCost]]] = OrderedDict()

    # -- the CostModel interface --------------------------------------------------------------

    def shard_cost(self, option: ShardingOption, shard_index: int, group: int) -> ShardCost:
        s = option.shards[shard_index]
        costs = self._costs_of(option, group)
        c = costs.get((s.num_rows, s.num_cols))
        return c if c is not None else self._shard(option, group, s.num_rows, s.num_cols, costs)

    def shard_costs(self, option: ShardingOption, group: int) -> list[ShardCost]:
        key = (id(option), group)
        hit = self._recent.get(key)
        if hit is not None and hit[0] is option:
            return list(hit[1])
        out = self._costs_by_shape(option, group)
        self._recent[key] = (option, out)
        if len(self._recent) > 256:
            self._recent.popitem(last=False)
        return list(out)

    def _costs_by_shape(self, option: ShardingOption, group: int) -> list[ShardCost]:
        """Per-shard costs, each distinct shape costed once; fast paths (C-level loops) for the
        usual cases: every shard alike (DP), one column width (RW/TWRW), one row count (CW)."""
        costs = self._costs_of(option, group)
        shards = option.shards
        n = len(shards)
        rows = [s.num_rows for s in shards]
        cols = [s.num_cols for s in shards]
        r0, c0 = rows[0], cols[0]
        same_c = cols.count(c0) == n
        get, new = costs.get, self._shard
        if same_c and rows.count(r0) == n:
            return [get((r0, c0)) or new(option, group, r0, c0, costs)] * n
        if same_c:
            by_row = {r: get((r, c0)) or new(option, group, r, c0, costs) for r in sorted(set(rows))}
            return list(map(by_row.__getitem__, rows))
        if rows.count(r0) == n:
            by_col = {c: get((r0, c)) or new(option, group, r0, c, costs) for c in sorted(set(cols))}
            return list(map(by_col.__getitem__, cols))
        keys = list(zip(rows, cols))
        for rc in sorted(set(keys) - costs.keys()):
            new(option, group, rc[0], rc[1], costs)
        return list(map(costs.__getitem__, keys))

    def everywhere_cost(self, option: ShardingOption, group: int) -> ShardCost:
        key = (option.table, option.sharding_type, len(option.shards), group)
        c = self._every_memo.get(key)
        if c is None:
            self._check_group(group)
            c = self._every_memo[key] = _sum(self._everywhere(
                self._table(option.table), option.sharding_type, len(option.shards), group))
        return c

    def rank_overhead(self, group: int) -> ShardCost:
        c = self._overhead_memo.get(group)
        return c if c is not None else self.overhead_items(group)[1]

    def total(self, perf: Perf) -> float:
        """``compute + (1 - comm_overlap_fraction) x comm`` (linear in the stages)."""
        return perf.compute + (1.0 - self.options.comm_overlap_fraction) * perf.comm

    def describe(self) -> dict[str, object]:
        return {"name": self.name, "options": self.options.as_dict(),
                "profiles": {hg.name: p.describe()
                             for hg, p in zip(self.topology.host_groups, self.profiles)}}

    # -- itemised costs (for the breakdown) ---------------------------------------------------

    def shard_items(self, option: ShardingOption, shard_index: int, group: int) -> Items:
        """The cost of one shard, itemised by component (sums to ``shard_cost``)."""
        self._check_group(group)
        s = option.shards[shard_index]
        return _items(self._shard_terms(self._table(option.table), option, len(option.shards),
                                        group, s.num_rows, s.num_cols))

    def everywhere_items(self, option: ShardingOption, group: int) -> tuple[Items, ShardCost]:
        """The everywhere-cost of ``option`` on a rank of ``group``, itemised, and its sum."""
        self._check_group(group)
        raw = self._everywhere(self._table(option.table), option.sharding_type,
                               len(option.shards), group)
        return _items(raw), self.everywhere_cost(option, group)

    def overhead_items(self, group: int) -> tuple[Items, ShardCost]:
        """The fixed cost of a rank of ``group``, itemised, and its sum."""
        self._check_group(group)
        raw = self._overhead(group)
        c = self._overhead_memo.get(group)
        if c is None:
            c = self._overhead_memo[group] = _sum(raw)
        return _items(raw), c

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

    def _costs_of(self, option: ShardingOption, group: int) -> dict[tuple[int, int], ShardCost]:
        key = (option.table, option.sharding_type, option.placement, len(option.shards), group)
        m = self._cost_memo.get(key)
        if m is None:
            self._check_group(group)
            m = self._cost_memo[key] = {}
        return m

    def _shard(self, option: ShardingOption, group: int, rows: int, cols: int,
               costs: dict[tuple[int, int], ShardCost]) -> ShardCost:
        c = costs[(rows, cols)] = _sum(self._shard_terms(
            self._table(option.table), option, len(option.shards), group, rows, cols))
        return c

    def _hit_rate(self, t: _Table, cache_ratio: float) -> float:
        key = (t.spec.name, cache_ratio)
        h = self._hits.get(key)
        if h is None:
            h = self._hits[key] = compute.hit_rate(t.spec.access, cache_ratio, t.spec.num_embeddings)
        return h

    def _ids_on_shard(self, t: _Table, st: ShardingType, rows: int) -> float:
        if st is ShardingType.DATA_PARALLEL:
            return self.batch_local * t.pf
        if st in _ROW_SPLIT:
            return self.batch_global * t.pf * rows / t.spec.num_embeddings
        return self.batch_global * t.pf

    def _shard_terms(self, t: _Table, option: ShardingOption, n: int, gi: int,
                     rows: int, cols: int) -> tuple[Raw, ...]:
        st, kind = option.sharding_type, option.placement.kind
        g = self._groups[gi]
        co = g.profile.coefficients
        dtype = t.spec.dtype
        train = self.training
        dp = st is ShardingType.DATA_PARALLEL
        ids = self._ids_on_shard(t, st, rows)
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
        items.append(_ms(Component.LOOKUP, fwd_compute=fwd_s))
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
            items.append(_ms(Component.UPDATE, bwd_compute=bwd_s))
            items.append(_ms(Component.TABLE_OVERHEAD, fwd_compute=per_table_s,
                             bwd_compute=per_table_s))
        else:
            items.append(_ms(Component.TABLE_OVERHEAD, fwd_compute=per_table_s))

        # communication (the shard holder's side)
        ln = g.links
        if dp:
            if train and self.world > 1:
                grad = rows * cols * grad_el
                items.append(_ms(Component.ALL_REDUCE,
                                 dp_sync=2.0 * grad * ln.ring_s_per_byte() * g.ar_scale))
            return tuple(items)
        items.append(_ms(Component.INPUT_DIST, fwd_comm=memory.input_bytes(ids, samples) * g.a2a))
        partial = memory.pooled_bytes(self.batch_global * t.features, cols, self.out_bytes)
        if st is ShardingType.ROW_WISE:
            # partial sums for every sample, reduce-scattered over all ranks; all-gather back
            s = partial * ln.ring_s_per_byte() * g.rs_scale
            items.append(_ms(Component.OUTPUT_DIST, fwd_comm=s))
            if train:
                items.append(_ms(Component.GRAD_DIST, bwd_comm=s))
        elif st is ShardingType.TABLE_ROW_WISE:
            # reduce-scatter within the host, then all-to-all of this rank's 1/n across hosts
            s = (partial * ln.ring_s_per_byte(n, intra_host=True) * g.rs_scale
                 + partial / n * g.a2a)
            items.append(_ms(Component.OUTPUT_DIST, fwd_comm=s))
            if train:
                items.append(_ms(Component.GRAD_DIST, bwd_comm=s))
        else:  # TW, CW, TWCW: pooled outputs of all samples sent to their ranks
            s = out_buf * g.a2a
            items.append(_ms(Component.OUTPUT_DIST, fwd_comm=s))
            if train:
                items.append(_ms(Component.GRAD_DIST, bwd_comm=s))
        return tuple(items)

    def _everywhere(self, t: _Table, st: ShardingType, n: int, gi: int) -> tuple[Raw, ...]:
        g = self._groups[gi]
        train = self.training
        ids = self.batch_local * t.pf
        samples = self.batch_local * t.features
        items = [_mem(Component.LOCAL_INPUT,
                      hbm=memory.input_bytes(ids, samples) * self.options.pipeline_depth)]
        # Collectives issued per table (as the executor does): every rank takes part in each,
        # so every rank pays its latency once per table of the type.
        if st is ShardingType.DATA_PARALLEL:
            if train and g.lat_ar:
                items.append(_ms(Component.COLLECTIVE_LATENCY, dp_sync=g.lat_ar))
            return tuple(items)
        if st is ShardingType.ROW_WISE and g.lat_rs:
            # reduce-scatter of its partial sums forward, all-gather of its gradient backward
            items.append(_ms(Component.COLLECTIVE_LATENCY, fwd_comm=g.lat_rs,
                             bwd_comm=g.lat_rs if train else 0.0))
        elif st is ShardingType.TABLE_ROW_WISE and self.world > 1:
            # reduce-scatter inside the host (n ranks), then an all-to-all across hosts; the
            # reverse backward
            co = g.profile.coefficients
            lat = g.links.latency_s(Collective.REDUCE_SCATTER, co, n=n, intra_host=True)
            if self.topology.num_hosts > 1:
                lat += g.lat_a2a
            items.append(_ms(Component.COLLECTIVE_LATENCY, fwd_comm=lat,
                             bwd_comm=lat if train else 0.0))
        dim = t.spec.embedding_dim
        pooled = memory.pooled_bytes(samples, dim, self.out_bytes)
        items.append(_mem(Component.POOLED_OUTPUTS, hbm=pooled * (2 if train else 1)))
        # ids go to every column shard; lengths go to every shard
        id_copies = n if st in _COL_SPLIT else 1
        sent = ids * memory.ID_BYTES * id_copies + samples * memory.LENGTH_BYTES * n
        items.append(_ms(Component.INPUT_DIST, fwd_comm=sent * g.a2a))
        if st is not ShardingType.ROW_WISE:  # RW's outputs come back by the holders' reduce-scatter
            items.append(_ms(Component.OUTPUT_DIST, fwd_comm=pooled * g.a2a))
            if train:
                items.append(_ms(Component.GRAD_DIST, bwd_comm=pooled * g.a2a))
        return tuple(items)

    def _overhead(self, gi: int) -> tuple[Raw, ...]:
        g = self._groups[gi]
        co = g.profile.coefficients
        train = self.training
        k_s = co.kernel_overhead_us * 1e-6
        items = [_ms(Component.KERNEL_LAUNCH, fwd_compute=k_s, bwd_compute=k_s if train else 0.0)]
        if self.world > 1:
            # the all-to-alls every step issues whatever the plan (the executor issues them
            # even when empty): forward, lengths and ids of the input distribution and the
            # pooled outputs of TW/CW/TWCW; backward, their gradients. Reduce-scatter,
            # all-gather and all-reduce are issued per RW/TWRW/DP table: everywhere costs.
            a2a = g.lat_a2a
            items.append(_ms(Component.COLLECTIVE_LATENCY, fwd_comm=3 * a2a,
                             bwd_comm=a2a if train else 0.0))
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
        options: modelling choices (pipeline depth, HBM reserve, overlap, ...).

    Returns:
        An :class:`EmbeddingCostModel`.

    Raises:
        SpecError: a profile file is bad, or matches no device of the topology.
    """
    return EmbeddingCostModel(workload, topology, profiles=resolve_profiles(topology, profile),
                              options=options)
