"""cost_under_torchrec: our plans priced by TorchRec's own estimators.

The anchor: TorchRec's planner plans a case, its plan is read back as ours (plan_with_torchrec),
re-exported and re-priced; the per-rank Perf (fwd/bwd compute and comms, total) and storage
must equal what its planner computed for its chosen shards (``planner._best_plan``), and so
must the max-over-ranks and the critical path.
"""

from __future__ import annotations

import dataclasses
import math

import pytest

pytest.importorskip("torchrec", reason="TorchRec is not installed (optional extra)")

import shardplan  # noqa: E402
from shardplan.errors import PlanError  # noqa: E402
from shardplan.generate import synthetic_workload  # noqa: E402
from shardplan.loaders import load_problem, load_topology  # noqa: E402
from shardplan.types import ShardingType  # noqa: E402
from shardplan.torchrec_interop import (  # noqa: E402
    cost_of_torchrec_options,
    cost_under_torchrec,
    plan_with_torchrec,
)

REL = 1e-6


def _close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=REL, abs_tol=1e-12)


def _torchrec_run(monkeypatch, work, topo):
    """plan_with_torchrec, and the planner's own priced best plan (captured, not recomputed)."""
    from torchrec.distributed.planner import EmbeddingShardingPlanner

    seen = {}
    original = EmbeddingShardingPlanner.plan

    def capture(self, module, sharders):
        out = original(self, module, sharders)
        seen["best_plan"] = self._best_plan
        return out

    monkeypatch.setattr(EmbeddingShardingPlanner, "plan", capture)
    plan, _ = plan_with_torchrec(work, topo)
    return plan, seen["best_plan"]


def _cases():
    topo8 = load_topology("dgx-a100-1x8")
    topo16 = load_topology("dgx-h100-2x8")
    return {
        "syn12-a100x8": (synthetic_workload(12, seed=3, max_rows=10**7), topo8),
        "syn20-h100-2x8": (synthetic_workload(20, seed=5, max_rows=10**7), topo16),
        "small-cpu4": load_problem("cpu-4")[::-1],
        "dcnv2-h100-2x8": load_problem("dgx-h100-2x8")[::-1],  # TorchRec: DP, CW, GRID
    }


@pytest.mark.parametrize("case", ["syn12-a100x8", "syn20-h100-2x8", "small-cpu4",
                                  "dcnv2-h100-2x8"])
def test_repricing_torchrecs_plan_gives_its_planners_numbers(monkeypatch, case):
    work, topo = _cases()[case]
    plan, best = _torchrec_run(monkeypatch, work, topo)
    world = topo.world_size
    theirs = cost_of_torchrec_options(best, world_size=world, batch_size=1,
                                      compute_device="any")
    ours = cost_under_torchrec(plan)
    assert len(ours.ranks) == world
    for a, b in zip(ours.ranks, theirs.ranks):
        for field in ("fwd_compute_ms", "fwd_comms_ms", "bwd_compute_ms", "bwd_comms_ms",
                      "prefetch_compute_ms", "input_dist_comms_ms"):
            assert _close(getattr(a, field), getattr(b, field)), (case, a.rank, field, a, b)
        assert _close(a.total_ms, b.total_ms)
        assert a.hbm_bytes == b.hbm_bytes and a.ddr_bytes == b.ddr_bytes, (case, a, b)
    assert _close(ours.max_perf_ms, theirs.max_perf_ms)
    assert _close(ours.critical_path_ms, theirs.critical_path_ms)
    assert ours.max_perf_ms > 0 and ours.critical_path_ms > 0
    # the max over ranks is one of the ranks, and the critical path is at least any rank's
    # compute (it sums the slowest rank's fwd and bwd compute)
    assert ours.max_perf_ms == max(r.total_ms for r in ours.ranks)
    assert ours.critical_path_compute_ms >= max(r.fwd_compute_ms + r.bwd_compute_ms
                                                for r in ours.ranks) * (1 - REL)


def test_prices_our_plan_and_sees_shard_shapes():
    """Our plan is priced on its own shards: moving a TW table to another rank moves its cost,
    and storage sums to the tables' weights on the ranks that hold them."""
    work = synthetic_workload(8, seed=1, max_rows=10**6)
    topo = load_topology("dgx-a100-1x8")
    plan = shardplan.plan(work, topo)
    cost = cost_under_torchrec(plan)
    assert len(cost.ranks) == topo.world_size
    held = {s.rank for t in plan.tables for s in t.shards}
    for r in cost.ranks:
        if r.rank in held:
            assert r.hbm_bytes > 0 and r.total_ms > 0
        else:
            assert r.hbm_bytes == 0 and r.total_ms == 0
    d = cost.to_dict()
    assert d["max_perf_ms"] == cost.max_perf_ms and len(d["ranks"]) == topo.world_size


def test_fp32_comms_price_the_pooled_outputs_at_the_runtimes_bytes():
    """TorchRec's estimator prices a table's pooled-embedding all-to-all at its storage dtype;
    ``comm_dtype="fp32"`` prices it at the 4 bytes TorchRec's training runtime sends (FBGEMM's
    TBE outputs FP32 by default): an fp16 table's output comms double (an int8 one's too:
    TorchRec's training EmbeddingBagCollection holds it as an fp16 tensor), an fp32 table's
    stay; storage does not move (compute may: TorchRec counts the kernel's output write at
    the same dtype)."""
    from shardplan.torchrec_interop.pricing import torchrec_sharding_options
    from shardplan.types import DType

    work = synthetic_workload(6, seed=1, max_rows=10**5)
    dtypes = (DType.FP32, DType.FP16, DType.INT8)
    work = dataclasses.replace(work, tables=tuple(
        dataclasses.replace(t, dtype=dtypes[i % 3]) for i, t in enumerate(work.tables)))
    topo = load_topology("dgx-a100-1x8")
    plan = shardplan.plan(work, topo, solver="greedy")
    by = {cd: {so.name: so for so in torchrec_sharding_options(plan, comm_dtype=cd)}
          for cd in ("table", "fp32")}
    factor = {DType.FP32: 1.0, DType.FP16: 2.0, DType.INT8: 2.0}
    for t in work.tables:
        a, b = by["table"][t.name], by["fp32"][t.name]
        for sa, sb in zip(a.shards, b.shards):
            if sa.perf.fwd_comms > 0:
                assert sb.perf.fwd_comms == pytest.approx(sa.perf.fwd_comms * factor[t.dtype])
                assert sb.perf.bwd_comms == pytest.approx(sa.perf.bwd_comms * factor[t.dtype])
            if t.dtype is DType.FP32:
                assert sb.perf.fwd_compute == pytest.approx(sa.perf.fwd_compute)
            assert sb.perf.fwd_compute >= sa.perf.fwd_compute * (1 - 1e-9)
            assert sb.storage.hbm == sa.storage.hbm
    with pytest.raises(ValueError, match="comm_dtype"):
        cost_under_torchrec(plan, comm_dtype="fp8")


def test_rejects_partial_replication():
    work = synthetic_workload(4, seed=1, max_rows=10**5)
    topo = load_topology("dgx-a100-1x8")
    plan = shardplan.plan(work, topo)
    t0 = plan.tables[0]
    dp = dataclasses.replace(t0, sharding_type=ShardingType.DATA_PARALLEL,
                             shards=tuple(dataclasses.replace(t0.shards[0], rank=r)
                                          for r in (0, 1)))
    bad = dataclasses.replace(plan, tables=(dp,) + plan.tables[1:])
    with pytest.raises(PlanError, match="replicates on every rank"):
        cost_under_torchrec(bad)


def test_compare_rows_get_torchrecs_yardstick():
    """shardplan.compare.torchrec_yardsticks fills torchrec_model_ms / _hbm_gib per plan (the
    same numbers as cost_under_torchrec) and comparison_frame shows them as columns."""
    from shardplan.compare import (
        COLUMNS,
        TORCHREC_COLUMNS,
        compare_planners,
        comparison_frame,
        torchrec_yardsticks,
    )

    topo, work = load_problem("cpu-2")
    rows = compare_planners(work, topo, ["greedy", "size_greedy"])
    assert list(comparison_frame(rows).columns) == list(COLUMNS)  # unchanged without TorchRec
    priced = torchrec_yardsticks(rows)
    frame = comparison_frame(priced)
    assert list(frame.columns) == list(COLUMNS) + list(TORCHREC_COLUMNS)
    for r, (_, row) in zip(priced, frame.iterrows()):
        want = cost_under_torchrec(r.plan)
        assert _close(r.torchrec_model_ms, want.max_perf_ms)
        assert _close(r.torchrec_model_hbm_gib, want.max_ddr_bytes / 2**30)  # CPU: DDR
        assert _close(row["torchrec_model_ms"], want.max_perf_ms)
        assert math.isnan(row["dmp_ms"])


def test_dmp_runs_what_gloo_can_and_says_why_not_otherwise():
    """time_under_dmp: a TW plan gets a positive median step time; a row-wise plan gets None
    and dmp_unsupported_reason names row-wise; a GPU topology is named as not CPU."""
    from shardplan.torchrec_interop.dmp import dmp_unsupported_reason, time_under_dmp

    topo, work = load_problem("cpu-2")
    tw = shardplan.plan(force(work, ShardingType.TABLE_WISE), topo)
    rw = shardplan.plan(force(work, ShardingType.ROW_WISE), topo)
    assert dmp_unsupported_reason(tw) is None
    assert "RW" in dmp_unsupported_reason(rw)
    gpu = shardplan.plan(synthetic_workload(4, seed=1, max_rows=10**5),
                         load_topology("dgx-a100-1x8"))
    assert "not a CPU topology" in dmp_unsupported_reason(gpu)
    times = time_under_dmp([tw, rw], steps=3, warmup=1)
    assert times[1] is None and times[0] is not None and times[0] > 0


def force(work, st):
    tabs = tuple(dataclasses.replace(t, constraints=dataclasses.replace(
        t.constraints, sharding_types=(st,))) for t in work.tables)
    return dataclasses.replace(work, tables=tabs)
