"""What each sharding type costs, priced the way TorchRec's runtime runs a step
(``docs/cost-model.md``): the raw cost items (``Raw``: a component, its memory and its lane
times) and :class:`ShardPricing`, the per-shard, per-option, per-group and per-rank terms that
:class:`~shardplan.estimators.cost_model.EmbeddingCostModel` sums."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

from shardplan.estimators import compute, memory
from shardplan.estimators.comm import GroupLinks, LinearCost
from shardplan.estimators.cost_options import INPUT_DIST_CALLS, Component
from shardplan.estimators.profiles import DeviceProfile
from shardplan.types import (
    LANES,
    GroupKey,
    Lane,
    Memory,
    Optimizer,
    Perf,
    PlacementKind,
    ShardCost,
    ShardingOption,
    ShardingType,
    TableSpec,
)


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



class ShardPricing:
    """What each sharding type costs: the itemised terms (memory, then lane times) of a shard,
    of an option's everywhere-cost, of a sharding group's fixed cost and of a rank's overhead.

    A mixin of :class:`~shardplan.estimators.cost_model.EmbeddingCostModel`: it reads the
    model's workload, options, host groups (``_groups``) and caches, set up there.
    """

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
            if dtype.is_quantized:  # inference: every value looked up is q * scale + bias
                items.append(_t(Component.DEQUANTIZE, {
                    Lane.FWD_COMPUTE: ids * cols * co.dequant_s_per_value}))

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
