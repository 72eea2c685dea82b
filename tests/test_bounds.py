"""Lower bounds: valid (never above an optimal plan's makespan) and tight where they should be."""

from __future__ import annotations

import pytest

from conftest import make_topology, make_workload
from shardplan.bounds import lower_bound, pair_bound, unit_bound, work_bound
from shardplan.enumerators import enumerate_options
from shardplan.estimators import default_cost_model
from shardplan.solvers.common import CostTables
from shardplan.solvers.ilp import ILPSolver
from shardplan.types import PlanningContext, TableSpec, Workload


def _ctx(work, topo, limit=20.0):
    return PlanningContext(workload=work, topology=topo, cost_model=default_cost_model(work, topo),
                           options=enumerate_options(work, topo), time_limit_s=limit)


def test_bound_parts_and_max(dozen, topo16):
    ctx = _ctx(dozen, topo16)
    ct = CostTables.build(ctx)
    b = lower_bound(ctx, ct)
    assert b.work_ms == pytest.approx(work_bound(ct))
    assert b.unit_ms == pytest.approx(unit_bound(ct))
    assert b.pair_ms == pytest.approx(pair_bound(ct))
    assert b.pair_ms >= b.unit_ms * (1 - 1e-9)
    assert b.lp_ms is not None
    assert b.value_ms >= max(b.work_ms, b.unit_ms) * (1 - 1e-9)
    assert b.lp_ms >= b.work_ms * (1 - 1e-6)  # the LP sees at least the total work


def test_bound_below_proven_optimum():
    """On a small instance the ILP over all options proves its optimum; no bound exceeds it."""
    topo = make_topology(hosts=1, devices_per_host=2)
    work = make_workload(5)
    ctx = _ctx(work, topo)
    res = ILPSolver(max_options=None, gap=0.0).solve(ctx)
    # the ILP's plan is at least the optimum whether or not HiGHS proved it optimal in time
    best = res.details["makespan_ms"]
    b = lower_bound(ctx, CostTables.build(ctx))
    assert b.value_ms <= best * (1 + 1e-6)
    if res.lower_bound_ms is not None:
        assert res.lower_bound_ms <= best * (1 + 1e-6)
    if res.details["mip_status"] == "optimal":
        assert res.lower_bound_ms == pytest.approx(best, rel=1e-6)


def test_unit_bound_binds_for_one_hot_table(topo16):
    """One table that cannot be split (pinned, table-wise) dominates: the bound is its time."""
    from shardplan.types import ShardingType, TableConstraints
    hot = TableSpec(name="hot", num_embeddings=1000, embedding_dim=128, pooling_factor=500.0,
                    constraints=TableConstraints(sharding_types=(ShardingType.TABLE_WISE,)))
    small = tuple(TableSpec(name=f"s{i}", num_embeddings=100, embedding_dim=8) for i in range(3))
    ctx = _ctx(Workload(tables=(hot, *small), batch_size=512), topo16)
    b = lower_bound(ctx, CostTables.build(ctx), lp_max_vars=0)
    assert b.lp_ms is None
    assert b.unit_ms > b.work_ms
    assert b.method in ("unit", "pair")
    assert b.pair_ms >= b.unit_ms * (1 - 1e-9)  # the pair bound sharpens the unit bound


def test_lp_skipped_when_too_large(dozen, topo16):
    ctx = _ctx(dozen, topo16)
    b = lower_bound(ctx, CostTables.build(ctx), lp_max_vars=1)
    assert b.lp_ms is None and b.method in ("work", "unit", "pair")

