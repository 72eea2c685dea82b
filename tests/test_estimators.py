"""The cost model: hand-computed cases for each formula, and properties it must keep."""

from __future__ import annotations

import dataclasses
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import make_workload
from shardplan.enumerators import enumerate_options, enumerate_table
from shardplan.errors import SpecError
from shardplan.estimators import (
    Coefficients,
    Component,
    CostModelOptions,
    DeviceProfile,
    EmbeddingCostModel,
    ProfileProvenance,
    ProvenanceKind,
    default_cost_model,
    hit_rate,
)
from shardplan.estimators import memory as mem
from shardplan.estimators.compute import _harmonic
from shardplan.estimators.comm import Algorithm, CollectiveModel, Protocol
from shardplan.estimators.profiles import Collective
from shardplan.loaders import load_topology
from shardplan.types import (
    AccessSkew,
    DeviceModel,
    DType,
    GroupKey,
    HostGroup,
    IdOrder,
    HostSpec,
    Link,
    LinkType,
    Mode,
    NetworkType,
    Optimizer,
    Placement,
    PlacementKind,
    ShardingOption,
    ShardingType,
    ShardSpec,
    Stage,
    TableSpec,
    Topology,
    Workload,
)

GiB = 2**30
REL = 1e-9

# Round numbers so every expected value below can be checked by hand.
ROUND = Coefficients(lookup_bandwidth_efficiency=0.5, backward_bandwidth_efficiency=0.25,
                     kernel_overhead_us=10.0, per_table_overhead_us=1.0,
                     ddr_bandwidth_efficiency=0.5, pcie_bandwidth_efficiency=0.5,
                     collective_bandwidth_efficiency={"nvlink4": 0.5, "infiniband": 0.5},
                     collective_latency_us={"all_to_all": 10.0, "reduce_scatter": 10.0,
                                            "all_reduce": 10.0})
ROUND_PROFILE = DeviceProfile(name="round", device_model="TEST",
                              provenance=ProfileProvenance(kind=ProvenanceKind.DATASHEET),
                              coefficients=ROUND)


def round_topology(hosts: int = 1, devices: int = 2) -> Topology:
    """HBM 1 TB/s, PCIe 10 GB/s, DDR 100 GB/s per host, NVLink 100 GB/s, NIC 100 GB/s per host."""
    return Topology(name="round", host_groups=(HostGroup(
        name="g", hosts=hosts, devices_per_host=devices,
        device=DeviceModel(model="TEST", hbm_capacity_bytes=16 * GiB,
                           hbm_bandwidth_bytes_per_s=1e12),
        host=HostSpec(ddr_capacity_bytes=64 * GiB, ddr_bandwidth_bytes_per_s=100e9,
                      pcie_bandwidth_bytes_per_s=10e9),
        intra_host_link=Link(type=LinkType.NVLINK4, bandwidth_bytes_per_s=100e9, latency_s=1e-6),
        network=Link(type=NetworkType.INFINIBAND, bandwidth_bytes_per_s=100e9, latency_s=2e-6)),))


def one_table(**kw) -> Workload:
    t = dict(name="t", num_embeddings=1000, embedding_dim=64, pooling_factor=10.0,
             dtype=DType.FP32, optimizer=Optimizer.ADAM)
    t.update(kw.pop("table", {}))
    return Workload(name="w", tables=(TableSpec(**t),), batch_size=kw.pop("batch", 100), **kw)


def option(st: ShardingType, shards: list[tuple[int, int, int, int]],
           placement: Placement = Placement(), table: str = "t") -> ShardingOption:
    return ShardingOption(table=table, sharding_type=st, placement=placement,
                          shards=tuple(ShardSpec(row_offset=a, num_rows=b, col_offset=c, num_cols=d)
                                       for a, b, c, d in shards),
                          candidate_ranks=tuple(None for _ in shards))


def items(cm: EmbeddingCostModel, o: ShardingOption, i: int = 0, group: int = 0) -> dict:
    return {c: v for c, v in cm.shard_items(o, i, group)}


def model(w: Workload, topo: Topology, **opts) -> EmbeddingCostModel:
    return EmbeddingCostModel(w, topo, profiles=[ROUND_PROFILE] * len(topo.host_groups),
                              options=CostModelOptions(**opts))


TW = option(ShardingType.TABLE_WISE, [(0, 1000, 0, 64)])


# ---------------------------------------------------------------------------------------------
# Hand-computed cases
# ---------------------------------------------------------------------------------------------


def test_table_wise_hand_computed_memory():
    cm = model(one_table(), round_topology())
    it = items(cm, TW)
    assert it[Component.WEIGHTS].memory.hbm == 1000 * 64 * 4
    assert it[Component.OPTIMIZER_STATE].memory.hbm == 2 * 1000 * 64 * 4  # adam: 2 fp32 / elem
    # ids on the holder: global batch 200 x pooling 10 = 2000; 24 bytes each for the sort
    assert it[Component.BACKWARD_WORKSPACE].memory.hbm == 2000 * 24
    # 3 batches in flight of (2000 int64 ids + 200 int32 lengths)
    assert it[Component.INPUT_BUFFERS].memory.hbm == 3 * (2000 * 8 + 200 * 4)
    # pooled outputs for 200 samples x 64 fp32, and their gradients
    assert it[Component.OUTPUT_BUFFERS].memory.hbm == 2 * 200 * 64 * 4
    total = cm.shard_cost(TW, 0, 0).memory
    assert total.hbm == pytest.approx(256_000 + 512_000 + 48_000 + 50_400 + 102_400, rel=REL)
    assert total.ddr == 0


def test_table_wise_hand_computed_time():
    cm = model(one_table(), round_topology())
    it = items(cm, TW)
    # forward: 2000 rows x 256 B + 2000 ids x 8 B + 200 x 64 x 4 B output, at 1e12 x 0.5
    assert it[Component.LOOKUP].perf.fwd_compute == pytest.approx(579_200 / 5e11 * 1e3, rel=REL)
    # backward: RMW of rows (256 B) and adam state (512 B) once per distinct row: 2000 uniform
    # ids over 1000 rows touch 1000 x (1 - e^-2) = 864.66 rows: 864.66 x 2 x 768, plus the
    # output gradient 51,200 B and the sort workspace written and read 2 x 2000 x 24 B
    distinct = 1000 * (1 - math.exp(-2.0))
    assert it[Component.UPDATE].perf.bwd_compute == pytest.approx(
        (distinct * 2 * 768 + 51_200 + 96_000) / 2.5e11 * 1e3, rel=REL)
    assert it[Component.TABLE_OVERHEAD].perf.fwd_compute == pytest.approx(1e-3, rel=REL)
    # all-to-all on one host of 2: half the bytes cross NVLink at 100e9 x 0.5 = 1e-11 s/byte,
    # charged in full on the direction they take (no halving for full duplex)
    s = 0.5 / 5e10
    io = it[Component.INPUT_DIST].perf
    assert io.input_recv == pytest.approx(16_800 * s * 1e3, rel=REL) and io.input_send == 0
    out = it[Component.OUTPUT_DIST].perf
    assert out.output_send == pytest.approx(51_200 * s * 1e3, rel=REL) and out.output_recv == 0
    grad = it[Component.GRAD_DIST].perf
    assert grad.grad_recv == pytest.approx(51_200 * s * 1e3, rel=REL) and grad.grad_send == 0


def test_everywhere_hand_computed():
    cm = model(one_table(), round_topology())
    ev = dict(cm.everywhere_items(TW, 0)[0])
    s = 0.5 / 5e10
    assert ev[Component.LOCAL_INPUT].memory.hbm == 3 * (1000 * 8 + 100 * 4)
    assert ev[Component.POOLED_OUTPUTS].memory.hbm == 2 * 100 * 64 * 4
    assert ev[Component.INPUT_DIST].perf.input_send == pytest.approx(8_400 * s * 1e3, rel=REL)
    assert ev[Component.OUTPUT_DIST].perf.output_recv == pytest.approx(25_600 * s * 1e3, rel=REL)
    assert ev[Component.GRAD_DIST].perf.grad_send == pytest.approx(25_600 * s * 1e3, rel=REL)


def test_a_hot_receiver_pays_its_whole_ingress():
    """The issue's case: a TW holder at pooling 400 receives every rank's ids; its receive
    lane carries all of them, not half."""
    w = one_table(table=dict(pooling_factor=400.0))
    cm = model(w, round_topology())
    io = items(cm, TW)[Component.INPUT_DIST].perf
    ids = 200 * 400 * 8 + 200 * 4
    assert io.input_recv == pytest.approx(ids * 0.5 / 5e10 * 1e3, rel=REL)
    assert io.stage(Stage.INPUT_DIST) == io.input_recv


def test_group_fixed_cost_is_paid_once_per_sharding_group():
    cm = model(one_table(), round_topology())
    tw = dict(cm.group_items(GroupKey(sharding_type=ShardingType.TABLE_WISE), 0)[0])
    assert tw[Component.KERNEL_LAUNCH].perf.fwd_compute == pytest.approx(0.01, rel=REL)
    lat = tw[Component.COLLECTIVE_LATENCY].perf
    a2a = cm.collective_lines(0)["all_to_all"].latency_s * 1e3
    # two input-dist calls (lengths, ids), one output all-to-all, one gradient all-to-all
    assert (lat.input_send, lat.input_recv) == pytest.approx((2 * a2a, 2 * a2a))
    assert (lat.output_send, lat.grad_recv) == pytest.approx((a2a, a2a))
    # nothing per table: the everywhere and shard costs carry no latency
    assert Component.COLLECTIVE_LATENCY not in dict(cm.everywhere_items(TW, 0)[0])
    assert Component.COLLECTIVE_LATENCY not in items(cm, TW)
    rw = dict(cm.group_items(GroupKey(sharding_type=ShardingType.ROW_WISE), 0)[0])
    lines = cm.collective_lines(0)
    assert rw[Component.COLLECTIVE_LATENCY].perf.output_send == pytest.approx(
        lines["reduce_scatter"].latency_s * 1e3)
    dp = dict(cm.group_items(GroupKey(sharding_type=ShardingType.DATA_PARALLEL), 0)[0])
    assert dp[Component.COLLECTIVE_LATENCY].perf.dp_sync == pytest.approx(
        lines["all_reduce"].latency_s * 1e3)
    inf = model(one_table(mode=Mode.INFERENCE), round_topology())
    dpi = dict(inf.group_items(GroupKey(sharding_type=ShardingType.DATA_PARALLEL), 0)[0])
    assert Component.COLLECTIVE_LATENCY not in dpi


def _one_type_makespan(topo: Topology, n: int, st: ShardingType) -> float:
    from shardplan.plans import makespan_of, rank_costs
    from shardplan.types import Assignment

    w = Workload(name="tiny", batch_size=512, tables=tuple(
        TableSpec(name=f"t{i}", num_embeddings=1000, embedding_dim=16) for i in range(n)))
    cm = default_cost_model(w, topo)
    opts = {t.name: next(o for o in enumerate_table(t, w, topo) if o.sharding_type is st
                          and o.placement.kind is PlacementKind.HBM) for t in w.tables}
    a = Assignment(options=tuple(opts[t.name] for t in w.tables),
                   ranks=tuple(tuple(c[0] for c in opts[t.name].candidate_ranks)
                               for t in w.tables))
    return makespan_of(rank_costs(a, topo, cm), cm)


@pytest.mark.parametrize("st", [ShardingType.ROW_WISE, ShardingType.DATA_PARALLEL])
def test_32_vs_4_tiny_tables_on_128_gpus_latency_once(st):
    """Issue 10: collective latency is paid per sharding group, not per table. From 4 to 32
    tiny tables on 128 GPUs the step grows only by the tables' own bytes and kernel work: with
    every latency and fixed overhead zeroed the growth is the same."""
    topo = load_topology("h100-16x8")
    full = _one_type_makespan(topo, 32, st) - _one_type_makespan(topo, 4, st)
    zero = dict(collective_latency_us={"all_to_all": 0.0, "reduce_scatter": 0.0,
                                       "all_reduce": 0.0}, kernel_overhead_us=0.0)
    from shardplan.estimators import with_coefficients

    def bare(n: int) -> float:
        from shardplan.plans import makespan_of, rank_costs
        from shardplan.types import Assignment

        w = Workload(name="tiny", batch_size=512, tables=tuple(
            TableSpec(name=f"t{i}", num_embeddings=1000, embedding_dim=16) for i in range(n)))
        prof = with_coefficients(default_cost_model(w, topo).profiles[0], **zero)
        cm = default_cost_model(w, topo, profile=prof)
        opts = {t.name: next(o for o in enumerate_table(t, w, topo) if o.sharding_type is st
                              and o.placement.kind is PlacementKind.HBM) for t in w.tables}
        a = Assignment(options=tuple(opts[t.name] for t in w.tables),
                       ranks=tuple(tuple(c[0] for c in opts[t.name].candidate_ranks)
                                   for t in w.tables))
        costs = rank_costs(a, topo, cm)
        # NCCL's algorithm latencies remain in the lines: take them out per call
        return makespan_of(costs, cm)

    growth_bare = bare(32) - bare(4)
    # the latencies a per-table model would add: 28 more tables x at least one call each
    per_call = default_cost_model(make_workload(2), topo).collective_lines(0)["all_to_all"].latency_s
    assert full < growth_bare + 28 * per_call * 1e3 * 0.25
    assert _one_type_makespan(topo, 32, st) < 4 * _one_type_makespan(topo, 4, st)


def test_nccl_reduce_scatter_latency_at_1024_gpus():
    """NCCL's ring LL latency for a reduce-scatter over 128 hosts x 8: 3.6 + 896 x 0.47 x 1.8 +
    127 x 2.7 us = about 1.1 ms (tuning.cc); ours adds the profile's per-call overhead."""
    topo = load_topology("h100-128x8")
    w = Workload(name="w", batch_size=512, tables=(TableSpec(name="t", num_embeddings=10,
                                                             embedding_dim=4),))
    cm = default_cost_model(w, topo)
    ln = CollectiveModel(cm._groups[0].links, cm.profiles[0].coefficients)  # noqa: SLF001
    small = next(c for c in ln.candidates(Collective.REDUCE_SCATTER)
                 if c.protocol is Protocol.LL and c.algorithm is Algorithm.RING)
    overhead = cm.profiles[0].coefficients.latency_s(Collective.REDUCE_SCATTER)
    assert small.latency_s - overhead == pytest.approx((3.6 + 896 * 0.47 * 1.8 + 127 * 2.7) * 1e-6,
                                                       rel=1e-9)
    # big buffers switch to the bandwidth protocol: more latency, less time per byte
    big = ln.cost(Collective.REDUCE_SCATTER, 2**30)
    assert big.protocol is not Protocol.LL and big.s_per_byte < small.s_per_byte
    # and a small one may run as a tree all-reduce (log2 latency), never costlier than a ring
    assert ln.time_s(Collective.REDUCE_SCATTER, 1024) <= small.time_s(1024)


@pytest.mark.parametrize("topology", ["dgx-h100-2x8", "h100-16x8", "h100-128x8", "cpu-4"])
@pytest.mark.parametrize("nbytes", [1e3, 1e6, 1e9])
def test_reduce_scatter_never_above_all_reduce(topology, nbytes):
    topo = load_topology(topology)
    cm = default_cost_model(make_workload(2), topo)
    ln = CollectiveModel(cm._groups[0].links, cm.profiles[0].coefficients)  # noqa: SLF001
    assert ln.time_s(Collective.REDUCE_SCATTER, nbytes) <= ln.time_s(Collective.ALL_REDUCE, nbytes)


def test_all_to_all_latency_grows_with_peers():
    w = make_workload(2)
    lats = [default_cost_model(w, load_topology(name)).collective_lines(0)["all_to_all"].latency_s
            for name in ("dgx-a100-1x8", "dgx-h100-2x8", "h100-16x8", "h100-128x8")]
    assert lats == sorted(lats) and lats[-1] > 10 * lats[0]


def test_frequency_ordered_row_blocks_carry_uneven_load():
    rows = 40_000_000
    skew = dict(num_embeddings=rows, embedding_dim=16)
    hashed = one_table(table=dict(skew, access=AccessSkew(zipf_exponent=1.05)))
    freq = one_table(table=dict(skew, access=AccessSkew(zipf_exponent=1.05,
                                                        id_order=IdOrder.FREQUENCY)))
    topo = round_topology(devices=8)
    rw = option(ShardingType.ROW_WISE, [(i * rows // 8, rows // 8, 0, 16) for i in range(8)])
    h, f = model(hashed, topo), model(freq, topo)
    hc = [h.shard_cost(rw, i, 0).perf.fwd_compute for i in range(8)]
    fc = [f.shard_cost(rw, i, 0).perf.fwd_compute for i in range(8)]
    assert max(hc) == pytest.approx(min(hc), rel=1e-6)
    assert fc[0] > fc[1] and fc == sorted(fc, reverse=True)
    # the same ids in total, spread differently: block 0 gets about 92% of them
    ids = [dict(f.shard_items(rw, i, 0))[Component.BACKWARD_WORKSPACE].memory.hbm for i in range(8)]
    assert ids[0] / sum(ids) == pytest.approx(0.92, abs=0.01)


def test_row_wise_reduce_scatter_hand_computed():
    cm = model(one_table(), round_topology())
    rw = option(ShardingType.ROW_WISE, [(0, 500, 0, 64), (500, 500, 0, 64)])
    it = items(cm, rw)
    assert it[Component.WEIGHTS].memory.hbm == 500 * 64 * 4
    # ids: 200 x 10 x 500/1000 = 1000 on this shard
    assert it[Component.BACKWARD_WORKSPACE].memory.hbm == 1000 * 24
    # partial sums of all 200 samples in the group's reduce-scatter, at its line
    rs = cm.collective_lines(0)["reduce_scatter"]
    out = it[Component.OUTPUT_DIST].perf
    assert out.output_send == out.output_recv == pytest.approx(51_200 * rs.s_per_byte * 1e3,
                                                              rel=REL)
    ev = dict(cm.everywhere_items(rw, 0)[0])
    assert Component.OUTPUT_DIST not in ev  # comes back through the holders' reduce-scatter
    # ids go once, lengths to both shards: 1000 x 8 + 2 x 100 x 4
    assert ev[Component.INPUT_DIST].perf.input_send == pytest.approx(8_800 * 0.5 / 5e10 * 1e3,
                                                                   rel=REL)


def test_data_parallel_hand_computed():
    w = one_table(table=dict(optimizer=Optimizer.SGD))
    cm = model(w, round_topology())
    dp = option(ShardingType.DATA_PARALLEL, [(0, 1000, 0, 64)] * 2)
    it = items(cm, dp)
    assert it[Component.WEIGHTS].memory.hbm == 256_000
    assert it[Component.GRADIENT].memory.hbm == 256_000
    assert it[Component.OPTIMIZER_STATE].memory.hbm == 0  # sgd has none, and says so
    # the bucketed all-reduce at its line: 2 ranks of one host, a ring moves 2 x (2-1)/2 of
    # the bytes at 5e10 B/s (Simple protocol)
    ar = cm.collective_lines(0)["all_reduce"]
    ring = next(c for c in CollectiveModel(cm._groups[0].links, ROUND).candidates(  # noqa: SLF001
        Collective.ALL_REDUCE) if c.algorithm is Algorithm.RING and c.protocol is Protocol.SIMPLE)
    assert ring.s_per_byte == pytest.approx(2 * 0.5 / 5e10, rel=REL)
    assert it[Component.ALL_REDUCE].perf.dp_sync == pytest.approx(256_000 * ar.s_per_byte * 1e3,
                                                                  rel=REL)
    # its share of the buckets' calls beyond the group's first: 256,000 B / 25 MiB of a call
    assert it[Component.COLLECTIVE_LATENCY].perf.dp_sync == pytest.approx(
        256_000 / (25 * 2**20) * ar.latency_s * 1e3, rel=REL)
    assert Component.INPUT_DIST not in it and Component.OUTPUT_DIST not in it


def test_uvm_caching_memory_and_hit_rate():
    w = one_table(table=dict(access=AccessSkew(hot_row_fraction=0.1, hot_access_fraction=0.9)))
    cm = model(w, round_topology())
    o = option(ShardingType.TABLE_WISE, [(0, 1000, 0, 64)],
               Placement(kind=PlacementKind.UVM_CACHING, cache_ratio=0.1))
    it = items(cm, o)
    assert it[Component.WEIGHTS].memory.ddr == 256_000 and it[Component.WEIGHTS].memory.hbm == 0
    assert it[Component.OPTIMIZER_STATE].memory.ddr == 512_000
    # 100 cache slots x (256 B row + 16 B state) + 1000 rows x 4 B map
    assert it[Component.CACHE].memory.hbm == 100 * 272 + 4000
    # hit rate 0.9: 2000 x 256 B rows at 0.9/5e11 + 0.1/5e9 s per byte, the rest in HBM
    expected = (512_000 * (0.9 / 5e11 + 0.1 / 5e9) + 67_200 / 5e11) * 1e3
    assert it[Component.LOOKUP].perf.fwd_compute == pytest.approx(expected, rel=REL)


def test_quantized_rows_carry_scale_and_bias():
    assert mem.row_bytes(64, DType.INT8) == 64 + 4
    assert mem.row_bytes(64, DType.INT4) == 32 + 4
    assert mem.row_bytes(64, DType.FP16) == 128
    assert mem.weight_bytes(10, 64, DType.INT8) == 680


@pytest.mark.parametrize("opt,per_row", [(Optimizer.SGD, 0), (Optimizer.ROWWISE_ADAGRAD, 4),
                                         (Optimizer.ADAGRAD, 64 * 4), (Optimizer.ADAM, 2 * 64 * 4),
                                         (Optimizer.NONE, 0)])
def test_optimizer_state_per_row(opt, per_row):
    assert mem.optimizer_state_bytes_per_row(opt, 64) == per_row


def test_hit_rate_cases():
    assert hit_rate(None, 0.2, 1000) == pytest.approx(0.2)
    hot = AccessSkew(hot_row_fraction=0.1, hot_access_fraction=0.9)
    assert hit_rate(hot, 0.05, 1000) == pytest.approx(0.45)
    assert hit_rate(hot, 0.1, 1000) == pytest.approx(0.9)
    assert hit_rate(hot, 0.55, 1000) == pytest.approx(0.95)
    zipf = AccessSkew(zipf_exponent=1.1)
    assert hit_rate(zipf, 0.05, 100_000) > 0.05  # skew helps a small cache
    assert hit_rate(zipf, 0.05, 100_000) < hit_rate(zipf, 0.2, 100_000) < 1.0


@pytest.mark.parametrize("s", [0.6, 1.0, 1.1, 1.5])
@pytest.mark.parametrize("m", [1, 7, 100, 10_000])
def test_harmonic_matches_brute_force(s, m):
    exact = sum(i ** -s for i in range(1, m + 1))
    assert _harmonic(float(m), s) == pytest.approx(exact, rel=1e-4)


# ---------------------------------------------------------------------------------------------
# Properties
# ---------------------------------------------------------------------------------------------


def _tw_cost(rows: int, dim: int, pf: float, batch: int):
    w = one_table(table=dict(num_embeddings=rows, embedding_dim=dim, pooling_factor=pf),
                  batch=batch)
    o = option(ShardingType.TABLE_WISE, [(0, rows, 0, dim)])
    c = model(w, round_topology()).shard_cost(o, 0, 0)
    ev = model(w, round_topology()).everywhere_cost(o, 0)
    return c + ev


@settings(max_examples=40, deadline=None)
@given(rows=st.integers(1, 10**6), dim=st.sampled_from([4, 8, 16, 64, 128, 256]),
       pf=st.floats(0.5, 50), batch=st.integers(1, 4096),
       which=st.sampled_from(["rows", "dim", "pf", "batch"]))
def test_monotone_in_rows_dim_pooling_and_batch(rows, dim, pf, batch, which):
    a = _tw_cost(rows, dim, pf, batch)
    bigger = dict(rows=rows, dim=dim, pf=pf, batch=batch)
    bigger[which] = {"rows": rows * 2, "dim": dim * 2, "pf": pf * 2, "batch": batch * 2}[which]
    b = _tw_cost(**bigger)
    assert b.memory.hbm >= a.memory.hbm - 1e-9
    assert b.perf.total >= a.perf.total - 1e-12
    if which != "rows":  # more work per step: strictly slower
        assert b.perf.total > a.perf.total


def test_row_wise_memory_is_table_over_n(topo16, dozen):
    cm = default_cost_model(dozen, topo16)
    for t in dozen.tables:
        rw = next(o for o in enumerate_table(t, dozen, topo16)
                  if o.sharding_type is ShardingType.ROW_WISE and o.placement.kind is PlacementKind.HBM)
        weights = [dict(cm.shard_items(rw, i, 0))[Component.WEIGHTS].memory.hbm
                   for i in range(len(rw.shards))]
        table = mem.weight_bytes(t.num_embeddings, t.embedding_dim, t.dtype)
        assert sum(weights) == pytest.approx(table, rel=1e-9)
        per = table / topo16.world_size
        row = mem.row_bytes(t.embedding_dim, t.dtype)
        assert all(abs(x - per) <= row for x in weights)


def test_data_parallel_holds_whole_table_everywhere(topo16, dozen):
    cm = default_cost_model(dozen, topo16)
    t = dozen.tables[0]
    dp = next(o for o in enumerate_table(t, dozen, topo16)
              if o.sharding_type is ShardingType.DATA_PARALLEL)
    assert len(dp.shards) == topo16.world_size
    table = mem.weight_bytes(t.num_embeddings, t.embedding_dim, t.dtype)
    for c in cm.shard_costs(dp, 0):
        assert c.memory.hbm >= 2 * table  # replica + its gradient
        assert c.perf.dp_sync > 0


def test_communication_grows_when_shards_cross_hosts():
    w = one_table(table=dict(num_embeddings=100_000))
    one_host = model(w, round_topology(hosts=1, devices=8))
    two_hosts = model(w, round_topology(hosts=2, devices=4))
    a, b = one_host._groups[0].links, two_hosts._groups[0].links  # noqa: SLF001
    assert b.ring_s_per_byte() > a.ring_s_per_byte()
    assert b.all_to_all_s_per_byte() > a.all_to_all_s_per_byte()
    # within one topology: table-row-wise keeps the reduce-scatter inside a host, so its
    # output distribution (latency and bytes) costs less than row-wise over all 8 ranks
    from shardplan.plans import rank_costs
    from shardplan.types import Assignment

    rw = option(ShardingType.ROW_WISE, [(i * 12_500, 12_500, 0, 64) for i in range(8)])
    twrw = option(ShardingType.TABLE_ROW_WISE, [(i * 25_000, 25_000, 0, 64) for i in range(4)])
    topo = round_topology(hosts=2, devices=4)
    big = model(one_table(table=dict(num_embeddings=100_000), batch=10_000), topo)  # 5 MB out

    def fwd_comm(o, ranks):
        costs = rank_costs(Assignment(options=(o,), ranks=(ranks,)), topo, big)
        return max(c.perf.fwd_comm for c in costs)

    assert fwd_comm(twrw, (0, 1, 2, 3)) < fwd_comm(rw, tuple(range(8)))


@pytest.mark.parametrize("dtype", [DType.FP16, DType.INT8, DType.INT4])
def test_quantized_tables_use_less_memory(dtype):
    base = model(one_table(), round_topology()).shard_cost(TW, 0, 0)
    q = model(one_table(table=dict(dtype=dtype)), round_topology()).shard_cost(TW, 0, 0)
    assert q.memory.hbm < base.memory.hbm
    assert q.perf.fwd_compute < base.perf.fwd_compute


def test_inference_needs_less_than_training(topo16, dozen):
    inf = dataclasses.replace(dozen, mode=Mode.INFERENCE)
    tr_cm, inf_cm = default_cost_model(dozen, topo16), default_cost_model(inf, topo16)
    for t in dozen.tables:
        for o in enumerate_table(t, dozen, topo16):
            a = tr_cm.shard_cost(o, 0, 0) + tr_cm.everywhere_cost(o, 0)
            b = inf_cm.shard_cost(o, 0, 0) + inf_cm.everywhere_cost(o, 0)
            assert b.memory.hbm + b.memory.ddr < a.memory.hbm + a.memory.ddr
            assert b.perf.total < a.perf.total
            assert b.perf.bwd_compute == b.perf.bwd_comm == b.perf.dp_sync == 0
            comps = {c for c, _ in inf_cm.shard_items(o, 0, 0)}
            assert Component.OPTIMIZER_STATE not in comps and Component.UPDATE not in comps


def test_optimizer_state_never_silently_zero():
    # the table names no optimizer: the workload's default (rowwise_adagrad) is used
    w = one_table(table=dict(optimizer=None))
    assert w.default_optimizer is Optimizer.ROWWISE_ADAGRAD
    it = items(model(w, round_topology()), TW)
    assert it[Component.OPTIMIZER_STATE].memory.hbm == 1000 * 4
    adam = items(model(one_table(), round_topology()), TW)[Component.OPTIMIZER_STATE].memory.hbm
    assert adam > it[Component.OPTIMIZER_STATE].memory.hbm > 0


def test_pipeline_depth_and_reserve_and_overlap_options():
    w, topo = one_table(), round_topology()
    d1 = model(w, topo, pipeline_depth=1).shard_cost(TW, 0, 0).memory.hbm
    d3 = model(w, topo, pipeline_depth=3).shard_cost(TW, 0, 0).memory.hbm
    assert d3 - d1 == pytest.approx(2 * (2000 * 8 + 200 * 4))
    cm = model(w, topo, hbm_reserved_fraction=0.25)
    assert cm.rank_overhead(0).memory.hbm == pytest.approx(0.25 * 16 * GiB)
    assert Component.HBM_RESERVE not in dict(model(w, topo).overhead_items(0)[0])
    c = model(w, topo).shard_cost(TW, 0, 0).perf
    serial = model(w, topo, pipelined=False)
    assert serial.total(c) == pytest.approx(c.compute + c.comm)
    piped = model(w, topo)
    assert piped.total(c) == pytest.approx(max(c.input_dist, c.total - c.input_dist))
    assert CostModelOptions.from_dict(CostModelOptions(pipelined=False).as_dict()) == \
        CostModelOptions(pipelined=False)
    for bad in (dict(pipeline_depth=0), dict(hbm_reserved_fraction=1.0),
                dict(ddp_bucket_bytes=0), dict(output_dtype=DType.INT8)):
        with pytest.raises(SpecError):
            CostModelOptions(**bad)


def test_shard_costs_match_shard_cost_and_are_linear(topo16, dozen):
    cm = default_cost_model(dozen, topo16)
    for opts in enumerate_options(dozen, topo16).values():
        for o in opts:
            many = cm.shard_costs(o, 0)
            assert many == [cm.shard_cost(o, i, 0) for i in range(len(o.shards))]
            assert cm.shard_costs(o, 0) == many  # the cached path returns the same


def test_costs_depend_on_the_host_group():
    topo = load_topology("hetero-a100-h100")
    w = make_workload()
    cm = default_cost_model(w, topo)
    assert len(topo.host_groups) == 2
    o = enumerate_table(w.tables[4], w, topo)[0]
    a, b = cm.shard_cost(o, 0, 0), cm.shard_cost(o, 0, 1)
    assert a.perf.fwd_compute != b.perf.fwd_compute
    names = {p["device_model"] for p in cm.describe()["profiles"].values()}
    assert names == {g.device.model for g in topo.host_groups}


def test_unknown_table_is_a_spec_error(topo16, dozen):
    cm = default_cost_model(dozen, topo16)
    bad = option(ShardingType.TABLE_WISE, [(0, 10, 0, 4)], table="nope")
    with pytest.raises(SpecError, match="nope"):
        cm.shard_cost(bad, 0, 0)


def test_plan_records_the_cost_model(topo16, dozen):
    from shardplan.planner import plan

    p = plan(dozen, topo16, solver="greedy")
    rec = p.provenance.cost_model
    assert rec["name"] == "embedding-v2"
    assert rec["options"]["pipeline_depth"] == 3
    assert rec["profiles"]["h100"]["name"] == "h100-sxm"
    assert math.isfinite(p.summary.makespan_ms) and p.summary.makespan_ms > 0


@settings(max_examples=60, deadline=None)
@given(ids=st.floats(0.0, 1e7), rows=st.integers(1, 10**7))
def test_distinct_rows_is_bounded_by_ids_and_rows(ids, rows):
    from shardplan.estimators.compute import distinct_rows

    u = distinct_rows(ids, rows)
    assert 0.0 <= u <= min(ids, rows) * (1 + 1e-12)
    # few ids over many rows are nearly all distinct; many ids cover nearly every row
    if ids <= rows / 1000:
        assert u == pytest.approx(ids, rel=1e-3)
    if ids >= 20 * rows:
        assert u == pytest.approx(rows, rel=1e-6)


def test_two_d_replicas_pay_their_weight_sync():
    from shardplan.estimators import CostModelOptions

    topo = load_topology("dgx-h100-2x8")
    w = make_workload(4)
    sub = topo.sharding_group(2)
    assert sub.world_size == 8 and sub.host_groups[0].devices_per_host == 4
    assert sub.host_groups[0].network.bandwidth_bytes_per_s == pytest.approx(
        topo.host_groups[0].network.bandwidth_bytes_per_s / 2)
    o = enumerate_table(w.tables[0], w, sub)[0]
    plain = default_cost_model(w, sub).shard_cost(o, 0, 0)
    two = default_cost_model(w, sub, options=CostModelOptions(replicas=2)).shard_cost(o, 0, 0)
    every4 = default_cost_model(w, sub, options=CostModelOptions(
        replicas=2, replica_sync_steps=4)).shard_cost(o, 0, 0)
    assert plain.perf.dp_sync == 0 < every4.perf.dp_sync < two.perf.dp_sync
    assert two.perf.dp_sync == pytest.approx(4 * every4.perf.dp_sync)
    assert two.memory == plain.memory
    with pytest.raises(ValueError, match="replicas"):
        topo.sharding_group(3)
