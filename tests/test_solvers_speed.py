"""The fast paths behind the solvers' speed give the values of the plain ones: stage times and
step composition, the greedy's choice of rank, the vectorised swaps' load state, the shared
option-mix bound, and the row-wise shard tuples shared between tables."""

from __future__ import annotations

import time

import numpy as np
import pytest
from conftest import make_topology, make_workload
from shardplan.estimators import default_cost_model

from shardplan.bounds import lower_bound
from shardplan.enumerators import _row_block_shards, enumerate_options, split
from shardplan.solvers.bounds import mix_bound
from shardplan.solvers.common import (
    CostTables,
    TableGroups,
    compose,
    evaluate,
    makespan_of,
    scalar_time,
    stage_max,
)
from shardplan.solvers.greedy import best_greedy, best_index
from shardplan.solvers.local_search import improve
from shardplan.types import STAGE_LANE_INDEX, Composition, PlanningContext, StepModel


def _ctx(work, topo) -> PlanningContext:
    return PlanningContext(workload=work, topology=topo, cost_model=default_cost_model(work, topo),
                           options=enumerate_options(work, topo), time_limit_s=10.0)


def _plain_scalar(lanes: np.ndarray) -> np.ndarray:
    out = None
    for ix in STAGE_LANE_INDEX:
        v = lanes[..., ix[0]]
        for j in ix[1:]:
            v = np.maximum(v, lanes[..., j])
        out = v if out is None else out + v
    return out


@pytest.mark.parametrize("shape", [(9,), (3, 9), (64, 9), (65, 9), (4096, 9), (5, 70, 9)])
def test_stage_times_and_composition_match_the_step_model(shape):
    rng = np.random.default_rng(len(shape) * 1000 + shape[0])
    x = rng.random(shape) * 10.0 ** rng.integers(-4, 3, size=shape)
    assert np.array_equal(scalar_time(x), _plain_scalar(x))
    steps = [StepModel(), StepModel(pipelined=False), StepModel(composition=Composition.PER_RANK)]
    if "overlap" in StepModel.__dataclass_fields__:  # a partly hidden pipeline
        steps.append(StepModel(overlap=0.25))
    for step in steps:
        assert np.array_equal(stage_max(x), step.stage_times(x))
        assert np.array_equal(compose(step, stage_max(x)), step.compose(step.stage_times(x)))
        if len(shape) == 2:
            assert makespan_of(step, x) == step.makespan(x)


def test_best_index_is_lexsorts_first():
    rng = np.random.default_rng(7)
    for trial in range(300):
        n = int(rng.integers(1, 40))
        # few distinct values, so that step times and busy times tie often
        t = rng.integers(0, 3, size=n) * 0.5 + rng.choice([0.0, 1e-14, 1e-9], size=n)
        rows = rng.integers(0, 3, size=(n, 9)).astype(float)
        ok = rng.permutation(100)[:n]
        want = int(np.lexsort((ok, scalar_time(rows), np.round(t, 12)))[0])
        assert best_index(t, rows, ok) == want, trial


def test_local_search_state_matches_its_plan():
    """Swaps are costed in bulk and applied by row updates: the state local search returns is
    the plan's own load (to float noise), on a plan where it moved and swapped shards."""
    ctx = _ctx(make_workload(24), make_topology(hosts=2, devices_per_host=4))
    ct = CostTables.of(ctx)
    groups = TableGroups.of(ctx, ct)
    start = best_greedy(ct, groups)
    choice, st, stats = improve(ct, groups, start.choice, deadline=time.perf_counter() + 1e6)
    assert stats.moves + stats.swaps + stats.reoptions + stats.group_moves > 0
    assert st.makespan <= start.state.makespan
    ref = evaluate(ct, choice)
    np.testing.assert_allclose(st.load, ref.load, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(st.hbm, ref.hbm, rtol=1e-9)
    assert (ref.hbm <= ct.cap_hbm).all() and (ref.ddr <= ct.cap_ddr).all()


def test_mix_bound_solved_once_and_shared_with_the_planner_bound():
    ctx = _ctx(make_workload(12), make_topology())
    ct = CostTables.of(ctx)
    first = mix_bound(ct)
    assert first is not None
    assert any(k.startswith("mix_bound") for k in ct.memo)
    assert mix_bound(ct) == first
    lb = lower_bound(ctx, ct, lp_max_vars=0)
    assert lb.mix_ms == first
    assert lb.value_ms >= first


def test_row_wise_shards_shared_and_equal_to_the_split():
    shards = _row_block_shards(1_000_003, 64, 16)
    assert shards is _row_block_shards(1_000_003, 64, 16)
    assert [(s.row_offset, s.num_rows) for s in shards] == split(1_000_003, 16)
    assert all(s.num_cols == 64 and s.col_offset == 0 for s in shards)
    assert len(_row_block_shards(5, 8, 16)) == 5  # fewer rows than ranks: empty blocks dropped
