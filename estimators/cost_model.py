"""A first cost model: weights and optimizer state for memory; bytes moved over HBM bandwidth
for compute; all-to-all bytes over the slowest link for communication.

Linear by construction (see ``shardplan.types.CostModel``). The cost-model issue refines each
term; this version is the interface and a sane baseline.
"""

from __future__ import annotations

from shardplan.types import (
    CostModel,
    Memory,
    Mode,
    Optimizer,
    Perf,
    PlacementKind,
    ShardCost,
    ShardingOption,
    ShardingType,
    Topology,
    Workload,
)

FP32_BYTES = 4  # optimizer state and pooled outputs are fp32
HBM_EFFICIENCY = 0.5  # fraction of datasheet HBM bandwidth a gather kernel reaches (assumed)
LAUNCH_OVERHEAD_MS = 0.01  # one batched kernel per stage (assumed, ~10 us)


class EmbeddingCostModel(CostModel):
    """Memory and time of each shard on a rank of a given host group."""

    name = "embedding-v0"

    def __init__(self, workload: Workload, topology: Topology) -> None:
        self.workload = workload
        self.topology = topology
        self.world = topology.world_size
        self.batch_local = workload.batch_per_rank(self.world)
        self.batch_global = workload.global_batch(self.world)
        self._tables = {t.name: t for t in workload.tables}

    def _a2a_bandwidth(self, group: int) -> float:
        g = self.topology.host_groups[group]
        if self.topology.num_hosts == 1:
            return g.intra_host_link.bandwidth_bytes_per_s
        return min(g.intra_host_link.bandwidth_bytes_per_s,
                   g.network.bandwidth_bytes_per_s / g.devices_per_host)

    def shard_cost(self, option: ShardingOption, shard_index: int, group: int) -> ShardCost:
        return _shard_cost(self, option, shard_index, group)

    def everywhere_cost(self, option: ShardingOption, group: int) -> ShardCost:
        t = self._tables[option.table]
        if option.sharding_type is ShardingType.DATA_PARALLEL:
            return ShardCost(memory=Memory(), perf=Perf())
        out_bytes = self.batch_local * t.embedding_dim * FP32_BYTES
        bw = self._a2a_bandwidth(group)
        ms = out_bytes / bw * 1e3
        training = self.workload.mode is Mode.TRAINING
        return ShardCost(memory=Memory(hbm=out_bytes * (2 if training else 1)),
                         perf=Perf(fwd_comm=ms, bwd_comm=ms if training else 0.0))

    def rank_overhead(self, group: int) -> ShardCost:
        return ShardCost(memory=Memory(), perf=Perf(fwd_compute=LAUNCH_OVERHEAD_MS,
                                                    bwd_compute=LAUNCH_OVERHEAD_MS))

    def describe(self) -> dict[str, object]:
        return {"name": self.name, "hbm_efficiency": HBM_EFFICIENCY,
                "launch_overhead_ms": LAUNCH_OVERHEAD_MS}


def _optimizer_bytes(opt: Optimizer, rows: int, cols: int) -> float:
    return {Optimizer.NONE: 0, Optimizer.SGD: 0, Optimizer.ROWWISE_ADAGRAD: rows * FP32_BYTES,
            Optimizer.ADAGRAD: rows * cols * FP32_BYTES,
            Optimizer.ADAM: 2 * rows * cols * FP32_BYTES}[opt]


def _shard_cost(m: EmbeddingCostModel, o: ShardingOption, i: int, group: int) -> ShardCost:
    t = m._tables[o.table]
    s = o.shards[i]
    g = m.topology.host_groups[group]
    elem = t.dtype.bits / 8
    weights = s.num_rows * s.num_cols * elem
    state = _optimizer_bytes(m.workload.optimizer_of(t), s.num_rows, s.num_cols)
    total = weights + state
    if o.placement.kind is PlacementKind.HBM:
        mem = Memory(hbm=total)
    elif o.placement.kind is PlacementKind.UVM_CACHING:
        mem = Memory(hbm=total * o.placement.cache_ratio, ddr=total)
    else:
        mem = Memory(ddr=total)
    if o.sharding_type is ShardingType.DATA_PARALLEL:
        ids = m.batch_local * t.pooling_factor
    else:
        ids = m.batch_global * t.pooling_factor * s.num_rows / t.num_embeddings
    read = ids * s.num_cols * elem
    bw = g.device.hbm_bandwidth_bytes_per_s * HBM_EFFICIENCY
    if o.placement.kind is PlacementKind.UVM:
        bw = min(bw, g.host.pcie_bandwidth_bytes_per_s)
    fwd = read / bw * 1e3
    training = m.workload.mode is Mode.TRAINING
    perf = Perf(fwd_compute=fwd, bwd_compute=2 * fwd if training else 0.0)
    if o.sharding_type is ShardingType.DATA_PARALLEL and training:
        perf = perf + Perf(dp_sync=2 * weights / m._a2a_bandwidth(group) * 1e3)
        mem = mem + Memory(hbm=weights)
    elif o.sharding_type is not ShardingType.DATA_PARALLEL:
        out = m.batch_global * s.num_cols * FP32_BYTES * (s.num_rows / t.num_embeddings
                                                          if o.sharding_type in (ShardingType.ROW_WISE, ShardingType.TABLE_ROW_WISE) else 1.0)
        ms = out / m._a2a_bandwidth(group) * 1e3
        perf = perf + Perf(fwd_comm=ms, bwd_comm=ms if training else 0.0)
    return ShardCost(memory=mem, perf=perf)


def default_cost_model(workload: Workload, topology: Topology) -> CostModel:
    """The cost model the planner uses unless given another."""
    return EmbeddingCostModel(workload, topology)
