"""Lower bounds: valid (never above an optimal plan's makespan) and tight where they should be."""

from __future__ import annotations

import pytest
from conftest import make_topology, make_workload
from shardplan.estimators import default_cost_model

from shardplan.bounds import lower_bound, pair_bound, unit_bound, work_bound
from shardplan.enumerators import enumerate_options
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
    assert b.method in ("unit", "pair", "mix")
    assert b.pair_ms >= b.unit_ms * (1 - 1e-9)  # the pair bound sharpens the unit bound


def test_lp_skipped_when_too_large(dozen, topo16):
    ctx = _ctx(dozen, topo16)
    b = lower_bound(ctx, CostTables.build(ctx), lp_max_vars=1)
    assert b.lp_ms is None and b.method in ("work", "unit", "pair", "coupled", "mix")
    # few variables but too many coefficients: skipped too
    b = lower_bound(ctx, CostTables.build(ctx), lp_max_nonzeros=1)
    assert b.lp_ms is None


def test_model_nonzeros_estimates_the_built_model(dozen, topo16):
    """The coefficient estimate that gates the LP bound and auto's ILP is close to the model's
    real count (within 2x either way)."""
    from shardplan.solvers.common import TableGroups
    from shardplan.solvers.ilp import build_model, model_nonzeros

    ctx = _ctx(dozen, topo16)
    ct = CostTables.build(ctx)
    allowed = [list(range(len(ocs))) for ocs in ct.options]
    model = build_model(ct, TableGroups.of(ctx, ct), allowed, relax=True)
    real = sum(len(c) for c in model.prob.constraints())
    est = model_nonzeros(ct, allowed)
    assert real / 2 <= est <= real * 2, (est, real)



def _random_choices(ct, rng, n):
    """``n`` random points of the option space: a random option per table, a random allowed
    rank per shard (memory ignored: the bounds below do not use it)."""

    out = []
    for _ in range(n):
        choice = []
        for ocs in ct.options:
            oi = int(rng.integers(len(ocs)))
            oc = ocs[oi]
            choice.append((oi, tuple(int(rng.choice(oc.candidates[si]))
                                     for si in range(oc.num_shards))))
        out.append(choice)
    return out


@pytest.mark.parametrize("hosts,dph,n,pooling", [(2, 8, 12, None), (4, 2, 5, 300.0),
                                                 (16, 8, 16, 400.0), (1, 4, 7, 40.0)])
def test_random_plans_never_below_the_bound(hosts, dph, n, pooling):
    """Random plans drawn from the option space, and every solver's plan, cost at least every
    bound that ignores memory (work, unit, pair, coupled)."""
    import dataclasses

    import numpy as np

    from shardplan.bounds import coupled_bound, mix_bound
    from shardplan.solvers import SOLVERS
    from shardplan.solvers.common import evaluate

    topo = make_topology(hosts=hosts, devices_per_host=dph)
    work = make_workload(n)
    if pooling is not None:  # few heavy tables: the case the coupled bound is for
        work = dataclasses.replace(work, tables=tuple(
            dataclasses.replace(t, pooling_factor=pooling, num_embeddings=1_000_000)
            for t in work.tables))
    ctx = _ctx(work, topo)
    ct = CostTables.build(ctx)
    bounds = {"work": work_bound(ct), "unit": unit_bound(ct), "pair": pair_bound(ct),
              "coupled": coupled_bound(ct), "mix": mix_bound(ct)}
    assert bounds["mix"] is not None
    rng = np.random.default_rng(hosts * 100 + n)
    for choice in _random_choices(ct, rng, 300):
        ms = evaluate(ct, choice).makespan
        for name, b in bounds.items():
            assert ms >= b * (1 - 1e-9), (name, b, ms)
    for name in SOLVERS:
        if name == "ilp" and hosts * dph * n > 400:
            continue
        ctx2 = _ctx(work, topo, limit=5.0)
        ct2 = CostTables.of(ctx2)
        res = SOLVERS[name]().solve(ctx2)
        ms = evaluate(ct2, ct2.choice_of(res.assignment)).makespan
        for bname, b in bounds.items():
            assert ms >= b * (1 - 1e-9), (name, bname, b, ms)


def test_coupled_bound_holds_few_heavy_tables_to_account():
    """16 heavy tables on 16 hosts x 8: the coupled bound is well above the separate work
    and largest-unit bounds (each assumes the best of both), and below the hand-built plan
    that puts each table table-row-wise on a host of its own."""
    import dataclasses

    from shardplan.bounds import coupled_bound
    from shardplan.planner import plan
    from shardplan.types import ShardingType, TableConstraints

    topo = make_topology(hosts=16, devices_per_host=8)
    tabs = tuple(TableSpec(name=f"u{i}", num_embeddings=1_000_000, embedding_dim=64,
                           pooling_factor=400.0) for i in range(16))
    work = Workload(tables=tabs, batch_size=512)
    ct = CostTables.build(_ctx(work, topo))
    cb = coupled_bound(ct)
    assert cb > 1.2 * max(work_bound(ct), unit_bound(ct), pair_bound(ct))
    own = dataclasses.replace(work, tables=tuple(dataclasses.replace(t, constraints=TableConstraints(
        sharding_types=(ShardingType.TABLE_ROW_WISE,), pinned_ranks=tuple(range(8 * i, 8 * i + 8))))
        for i, t in enumerate(tabs)))
    forced = plan(own, topo, solver="greedy")
    assert forced.summary.makespan_ms >= cb * (1 - 1e-9)


@pytest.mark.parametrize("overlap", [0.0, 0.5])
def test_partial_pipeline_overlap_is_optimised_and_bounded(overlap):
    """With a profile whose pipeline hides only part of the input dist, the ILP optimises the
    composed step (no worse than greedy), every plan reports the step the model composes, and
    the lower bound stays below every plan."""
    import dataclasses

    from shardplan import load_problem, plan
    from shardplan.estimators import default_cost_model
    from shardplan.estimators.profiles import profile_for_device
    from shardplan.plans import assignment_of, makespan_of, rank_costs

    topo, work = load_problem("cpu-2x2")
    prof = profile_for_device("CPU")
    prof = dataclasses.replace(prof, coefficients=dataclasses.replace(
        prof.coefficients, pipeline_overlap=overlap))
    cm = default_cost_model(work, topo, profile=prof)
    assert cm.step.overlap == overlap
    made = {}
    for solver in ("greedy", "ilp"):
        p = plan(work, topo, cost_model=cm, solver=solver)
        a = assignment_of(p)
        assert p.summary.makespan_ms == pytest.approx(makespan_of(rank_costs(a, topo, cm), cm))
        assert p.summary.lower_bound_ms <= p.summary.makespan_ms * (1 + 1e-6)
        made[solver] = p.summary.makespan_ms
    assert made["ilp"] <= made["greedy"] * (1 + 1e-6)
