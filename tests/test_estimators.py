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
    LinkDuplex,
    ProfileProvenance,
    ProvenanceKind,
    default_cost_model,
    hit_rate,
)
from shardplan.estimators import memory as mem
from shardplan.estimators.compute import _harmonic
from shardplan.estimators.profiles import Collective
from shardplan.loaders import load_topology
from shardplan.types import (
    AccessSkew,
    DeviceModel,
    DType,
    HostGroup,
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
    # all-to-all on one host of 2: half the bytes cross NVLink at 100e9 x 0.5; full duplex
    # charges each direction half: 0.5 x 0.5 / 5e10 = 5e-12 s per byte
    assert it[Component.INPUT_DIST].perf.fwd_comm == pytest.approx(16_800 * 5e-12 * 1e3, rel=REL)
    assert it[Component.OUTPUT_DIST].perf.fwd_comm == pytest.approx(51_200 * 5e-12 * 1e3, rel=REL)
    assert it[Component.GRAD_DIST].perf.bwd_comm == pytest.approx(51_200 * 5e-12 * 1e3, rel=REL)


def test_everywhere_hand_computed():
    cm = model(one_table(), round_topology())
    ev = dict(cm.everywhere_items(TW, 0)[0])
    assert ev[Component.LOCAL_INPUT].memory.hbm == 3 * (1000 * 8 + 100 * 4)
    assert ev[Component.POOLED_OUTPUTS].memory.hbm == 2 * 100 * 64 * 4
    assert ev[Component.INPUT_DIST].perf.fwd_comm == pytest.approx(8_400 * 5e-12 * 1e3, rel=REL)
    assert ev[Component.OUTPUT_DIST].perf.fwd_comm == pytest.approx(25_600 * 5e-12 * 1e3, rel=REL)
    assert ev[Component.GRAD_DIST].perf.bwd_comm == pytest.approx(25_600 * 5e-12 * 1e3, rel=REL)


def test_half_duplex_doubles_all_to_all():
    full = model(one_table(), round_topology())
    half = model(one_table(), round_topology(), duplex=LinkDuplex.HALF)
    a = items(full, TW)[Component.OUTPUT_DIST].perf.fwd_comm
    b = items(half, TW)[Component.OUTPUT_DIST].perf.fwd_comm
    assert b == pytest.approx(2 * a, rel=REL)


def test_rank_overhead_hand_computed():
    cm = model(one_table(), round_topology())
    ov = dict(cm.overhead_items(0)[0])
    assert ov[Component.KERNEL_LAUNCH].perf.fwd_compute == pytest.approx(0.01, rel=REL)
    assert ov[Component.KERNEL_LAUNCH].perf.bwd_compute == pytest.approx(0.01, rel=REL)
    lat = ov[Component.COLLECTIVE_LATENCY].perf
    # the all-to-alls every step issues: a2a = 10 us + one intra path (2 x 1 us); forward
    # lengths, ids and pooled outputs, backward their gradients
    assert lat.fwd_comm == pytest.approx(3 * 12e-3, rel=REL)
    assert lat.bwd_comm == pytest.approx(12e-3, rel=REL)
    # reduce-scatter, all-gather and all-reduce are per RW / DP table, not per rank
    assert lat.dp_sync == 0


def test_collective_latency_per_table_of_the_type():
    """RW and DP tables pay their own collectives' latencies (every rank takes part); TW
    tables none beyond the per-rank all-to-alls."""
    cm = model(one_table(), round_topology())
    rw = option(ShardingType.ROW_WISE, [(0, 500, 0, 64), (500, 500, 0, 64)])
    dp = option(ShardingType.DATA_PARALLEL, [(0, 1000, 0, 64), (0, 1000, 0, 64)])
    ev = {st: dict(cm.everywhere_items(o, 0)[0]) for st, o in (("tw", TW), ("rw", rw), ("dp", dp))}
    assert Component.COLLECTIVE_LATENCY not in ev["tw"]
    # reduce-scatter on 2 ranks: 10 us + 1 step x 2 us, forward; all-gather alike, backward
    lat_rw = ev["rw"][Component.COLLECTIVE_LATENCY].perf
    assert (lat_rw.fwd_comm, lat_rw.bwd_comm, lat_rw.dp_sync) == pytest.approx((12e-3, 12e-3, 0))
    # all-reduce: 10 us + 2 log2(2) steps x 2 us
    lat_dp = ev["dp"][Component.COLLECTIVE_LATENCY].perf
    assert (lat_dp.fwd_comm, lat_dp.bwd_comm, lat_dp.dp_sync) == pytest.approx((0, 0, 14e-3))
    # inference: no backward, no all-reduce
    inf = model(one_table(mode=Mode.INFERENCE), round_topology())
    assert Component.COLLECTIVE_LATENCY not in dict(inf.everywhere_items(dp, 0)[0])
    assert dict(inf.everywhere_items(rw, 0)[0])[Component.COLLECTIVE_LATENCY].perf.bwd_comm == 0


def test_plan_without_dp_or_rw_pays_no_their_latency(cpu4):
    """A plan with only table-wise tables has no dp_sync on any rank; making one table DP adds
    exactly one all-reduce latency (plus its bytes) to every rank."""
    from shardplan.plans import rank_costs
    from shardplan.types import Assignment

    work = make_workload(4, batch_size=64)
    cm = default_cost_model(work, cpu4)
    from shardplan.enumerators import EnumerationOptions

    opts = enumerate_options(work, cpu4, EnumerationOptions(wide_min_share=0.0))

    def pick(t, st):
        return next(o for o in opts[t.name] if o.sharding_type is st
                    and o.placement.kind.value == "hbm")

    tw = [pick(t, ShardingType.TABLE_WISE) for t in work.tables]
    a = Assignment(options=tuple(tw), ranks=tuple((i % 4,) for i in range(4)))
    assert all(c.perf.dp_sync == 0 for c in rank_costs(a, cpu4, cm))
    dp = pick(work.tables[0], ShardingType.DATA_PARALLEL)
    b = Assignment(options=(dp,) + tuple(tw[1:]), ranks=(tuple(range(4)),) + a.ranks[1:])
    co = cm.profiles[0].coefficients
    lat = cm._groups[0].lat_ar  # noqa: SLF001
    assert lat == pytest.approx(cm._groups[0].links.latency_s(Collective.ALL_REDUCE, co))  # noqa: SLF001
    for c in rank_costs(b, cpu4, cm):
        grad = work.tables[0].num_embeddings * work.tables[0].embedding_dim * 4
        assert c.perf.dp_sync * 1e-3 == pytest.approx(
            lat + 2 * grad * cm._groups[0].links.ring_s_per_byte() * cm._groups[0].ar_scale, rel=1e-9)  # noqa: SLF001


def test_row_wise_reduce_scatter_hand_computed():
    cm = model(one_table(), round_topology())
    rw = option(ShardingType.ROW_WISE, [(0, 500, 0, 64), (500, 500, 0, 64)])
    it = items(cm, rw)
    assert it[Component.WEIGHTS].memory.hbm == 500 * 64 * 4
    # ids: 200 x 10 x 500/1000 = 1000 on this shard
    assert it[Component.BACKWARD_WORKSPACE].memory.hbm == 1000 * 24
    # partial sums of all 200 samples, reduce-scattered over 2 ranks: (2-1)/2 of them at 5e10
    assert it[Component.OUTPUT_DIST].perf.fwd_comm == pytest.approx(
        51_200 * 0.5 / 5e10 * 1e3, rel=REL)
    ev = dict(cm.everywhere_items(rw, 0)[0])
    assert Component.OUTPUT_DIST not in ev  # comes back through the holders' reduce-scatter
    # ids go once, lengths to both shards: 1000 x 8 + 2 x 100 x 4
    assert ev[Component.INPUT_DIST].perf.fwd_comm == pytest.approx(8_800 * 5e-12 * 1e3, rel=REL)


def test_data_parallel_hand_computed():
    w = one_table(table=dict(optimizer=Optimizer.SGD))
    cm = model(w, round_topology())
    dp = option(ShardingType.DATA_PARALLEL, [(0, 1000, 0, 64)] * 2)
    it = items(cm, dp)
    assert it[Component.WEIGHTS].memory.hbm == 256_000
    assert it[Component.GRADIENT].memory.hbm == 256_000
    assert it[Component.OPTIMIZER_STATE].memory.hbm == 0  # sgd has none, and says so
    # ring all-reduce: 2 x (2-1)/2 x 256,000 B at 5e10 B/s
    assert it[Component.ALL_REDUCE].perf.dp_sync == pytest.approx(256_000 / 5e10 * 1e3, rel=REL)
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
    rw = option(ShardingType.ROW_WISE, [(i * 12_500, 12_500, 0, 64) for i in range(8)])
    def bytes_comm(cm):  # communication time of the bytes (latencies depend on ring steps)
        ev = sum(c.perf.comm for k, c in cm.everywhere_items(rw, 0)[0]
                 if k is not Component.COLLECTIVE_LATENCY)
        return cm.shard_cost(rw, 0, 0).perf.comm + ev

    a, b = bytes_comm(one_host), bytes_comm(two_hosts)
    assert b > a
    # within one topology: table-row-wise keeps the reduce-scatter inside a host, so its
    # per-shard output communication is below row-wise over all 8 ranks
    twrw = option(ShardingType.TABLE_ROW_WISE, [(i * 25_000, 25_000, 0, 64) for i in range(4)])
    rw_out = dict(two_hosts.shard_items(rw, 0, 0))[Component.OUTPUT_DIST].perf.fwd_comm
    twrw_out = dict(two_hosts.shard_items(twrw, 0, 0))[Component.OUTPUT_DIST].perf.fwd_comm
    assert twrw_out < rw_out


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
    hidden = model(w, topo, comm_overlap_fraction=1.0)
    assert hidden.total(c) == pytest.approx(c.compute)
    assert model(w, topo).total(c) == pytest.approx(c.compute + c.comm)
    for bad in (dict(pipeline_depth=0), dict(hbm_reserved_fraction=1.0),
                dict(comm_overlap_fraction=1.5), dict(output_dtype=DType.INT8)):
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
    assert rec["name"] == "embedding-v1"
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
