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
:mod:`.compute`, :mod:`.comm`; coefficients: :mod:`.profiles`. This module composes the model;
what each sharding type costs is priced in :mod:`.pricing`, the modelling choices are
:mod:`.cost_options`."""

from __future__ import annotations

from dataclasses import replace

from pathlib import Path
from typing import Iterable, Sequence

from shardplan.errors import SpecError
from shardplan.estimators import compute, memory
from shardplan.estimators.comm import CollectiveModel, LinearCost, Span, group_links
from shardplan.estimators.cost_options import CostModelOptions
from shardplan.estimators.pricing import (_ROW_SPLIT, Items, ShardPricing, _Group, _items, _sum,
                                          _Table)
from shardplan.estimators.profiles import (
    Collective,
    DeviceProfile,
    load_profile,
    profile_for_device,
)
from shardplan.types import (
    CostModel,
    GroupKey,
    IdOrder,
    Mode,
    ShardCost,
    ShardingOption,
    ShardingType,
    Topology,
    Workload,
    row_span,
)

# Also importable from here, as before the split into modules.
from shardplan.estimators.cost_options import (  # noqa: F401
    DEFAULT_DDP_BUCKET_BYTES,
    DEFAULT_PIPELINE_DEPTH,
    INPUT_DIST_CALLS,
    Component,
)


class EmbeddingCostModel(CostModel, ShardPricing):
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
        if profiles is None:
            profiles = [profile_for_device(g.device.model) for g in topology.host_groups]
        if len(profiles) != len(topology.host_groups):
            raise SpecError(f"got {len(profiles)} profiles for {len(topology.host_groups)} host "
                            "groups; give one per group (or none for the bundled ones)")
        self.profiles = tuple(profiles)
        # the pipeline's overlap is the machine's: the least any host group achieves
        self.step = replace(self.options.step, overlap=min(
            p.coefficients.pipeline_overlap for p in self.profiles))
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
            if not self.training:  # inference kernels' own coefficients, where the profile has them
                prof = replace(prof, coefficients=prof.coefficients.for_inference())
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
