"""The search pieces behind auto: greedy targets, group moves, the restricted portfolio."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from conftest import make_topology, make_workload
from shardplan.estimators import default_cost_model

from shardplan.enumerators import enumerate_options
from shardplan.planner import plan
from shardplan.solvers.common import CostTables, TableGroups, evaluate
from shardplan.solvers.greedy import (
    best_greedy,
    greedy_choice,
    target_ladder,
    tie_round,
)
from shardplan.solvers.group_moves import apply_group_move, candidate_moves
from shardplan.solvers.portfolio import fixed_share, only_type, types_used, without_type
from shardplan.types import (
    LANES,
    PlanningContext,
    ShardingType,
    StepModel,
    TableConstraints,
    TableSpec,
    Workload,
)


def _ct(work, topo):
    ctx = PlanningContext(workload=work, topology=topo, cost_model=default_cost_model(work, topo),
                          options=enumerate_options(work, topo), time_limit_s=10.0)
    ct = CostTables.of(ctx)
    return ct, TableGroups.of(ctx, ct)


def _heavy(hosts: int = 4, dph: int = 4, pooling: float = 400.0):
    topo = make_topology(hosts=hosts, devices_per_host=dph)
    tabs = tuple(TableSpec(name=f"u{i}", num_embeddings=1_000_000, embedding_dim=64,
                           pooling_factor=pooling) for i in range(hosts))
    return Workload(tables=tabs, batch_size=512), topo


def test_target_ladder():
    assert target_ladder(1.0, 16.0, 4) == pytest.approx([1.0, 2.0, 4.0, 8.0])
    assert target_ladder(2.0, 2.0, 3) == [2.0]
    assert target_ladder(1.0, 2.0, 0) == []
    assert tie_round(1.0000000000001) == tie_round(1.0)
    assert tie_round(1.001) != tie_round(1.0)


def test_greedy_targets_keep_heavy_tables_whole_on_hosts_of_their_own():
    """Few heavy tables on many GPUs: greedy against its first target splits them; the target
    ladder finds the hand-built plan (each table row-wise inside a host of its own)."""
    work, topo = _heavy()
    ct, groups = _ct(work, topo)
    first = greedy_choice(ct, groups)
    best = best_greedy(ct, groups)
    own = dataclasses.replace(work, tables=tuple(dataclasses.replace(t, constraints=TableConstraints(
        sharding_types=(ShardingType.TABLE_ROW_WISE,), pinned_ranks=tuple(range(4 * i, 4 * i + 4))))
        for i, t in enumerate(work.tables)))
    forced = plan(own, topo, solver="greedy").summary.makespan_ms
    assert best.state.makespan <= first.state.makespan
    assert best.state.makespan <= forced * (1 + 1e-9)
    assert plan(work, topo, solver="auto").summary.makespan_ms <= forced * (1 + 1e-9)


def test_group_moves_move_a_whole_group_to_one_type(dozen, topo16):
    ct, groups = _ct(dozen, topo16)
    choice = greedy_choice(ct, groups).choice
    st = evaluate(ct, choice)
    moves = candidate_moves(ct, groups, choice)
    assert moves and all(mv.tables for mv in moves)
    for mv in moves[:6]:
        out = apply_group_move(ct, groups, choice, st, mv, budget=0.0, target=st.makespan)
        if out is None:
            continue
        new, st2, tried = out
        assert tried >= 1
        for ti in mv.tables:
            assert ct.options[ti][new[ti][0]].option.sharding_type is mv.to
        for ti in set(range(len(choice))) - set(mv.tables):
            assert new[ti] == choice[ti]
        again = evaluate(ct, new)
        assert np.allclose(again.load, st2.load) and np.allclose(again.hbm, st2.hbm)
        assert (st2.hbm <= ct.cap_hbm * (1 + 1e-12)).all()


def test_portfolio_restriction_maps_back(dozen, topo16):
    ct, groups = _ct(dozen, topo16)
    choice = greedy_choice(ct, groups).choice
    for t in types_used(ct, choice):
        r = without_type(ct, t)
        if r is None:
            continue
        for ti, ocs in enumerate(r.ct.options):
            full = ct.options[ti]
            if len(ocs) < len(full):
                assert all(oc.option.sharding_type is not t for oc in ocs)
            assert [full[i] for i in r.full_index[ti]] == ocs
        g = greedy_choice(r.ct, groups)
        if g.choice is not None:
            back = r.to_full(g.choice)
            assert evaluate(ct, back).makespan == pytest.approx(g.state.makespan)


def test_portfolio_only_one_type(dozen, topo16):
    ct, _ = _ct(dozen, topo16)
    for t in ShardingType:
        r = only_type(ct, t)
        if r is None:
            continue
        for ti, ocs in enumerate(r.ct.options):
            full = ct.options[ti]
            has = any(oc.option.sharding_type is t for oc in full)
            # a table with options of type t keeps only those; one without keeps all its own
            assert all(oc.option.sharding_type is t for oc in ocs) if has else len(ocs) == len(full)
            assert [full[i] for i in r.full_index[ti]] == ocs


def test_fixed_share_of_a_plan(dozen, topo16):
    """What one group instead of a plan's several could save in fixed costs, per step: 0 for a
    plan of one group, else the groups' busiest-rank costs but the largest, over the step."""
    from shardplan.solvers.common import scalar_time

    ct, _ = _ct(dozen, topo16)

    def first(ti: int, t: ShardingType) -> tuple[int, tuple[int, ...]]:
        oi = next(i for i, oc in enumerate(ct.options[ti]) if oc.option.sharding_type is t)
        return oi, tuple(int(c[0]) for c in ct.options[ti][oi].candidates)

    tw = [first(ti, ShardingType.TABLE_WISE) for ti in range(len(ct.tables))]
    assert fixed_share(ct, tw) == 0.0  # one group
    mixed = [first(0, ShardingType.COLUMN_WISE)] + tw[1:]
    keys = sorted({ct.options[ti][oi].key for ti, (oi, _) in enumerate(mixed)} - {-1})
    assert len(keys) == 2
    cost = sorted(float(scalar_time(ct.key_cost(k)[0]).max()) for k in keys)
    ms = evaluate(ct, mixed).makespan
    assert fixed_share(ct, mixed) == pytest.approx(cost[0] / ms)
    assert 0 < fixed_share(ct, mixed) < sum(cost) / ms  # never the kept group's own cost


def test_critical_ranks_cover_every_active_lane():
    """The busiest ranks come first, then the ranks at the other active lanes' maxima: a stage
    whose maximum sits on lightly loaded ranks gets tried too."""
    from types import SimpleNamespace

    from shardplan.solvers.local_search import CRITICAL_RANKS, _critical_ranks

    lane = {ln.value: i for i, ln in enumerate(LANES)}
    load = np.zeros((64, len(LANES)))
    load[:6, lane["fwd_compute"]] = 10.0  # six busy ranks, each at the compute maximum
    load[:6, lane["bwd_compute"]] = 10.0
    load[40:44, lane["output_send"]] = 1.0  # four light ranks at the output maximum
    ct = SimpleNamespace(step=StepModel())
    ranks = _critical_ranks(ct, load)
    assert ranks[:CRITICAL_RANKS] == [0, 1, 2, 3]  # the busiest first, as before
    assert 40 in ranks  # and the output stage's maximum
    assert _critical_ranks(ct, load, lane_ranks=0) == [0, 1, 2, 3]
    # a lane at its maximum on most ranks (a cost every rank pays) adds no ranks
    load[6:, lane["grad_send"]] = 1.0
    load[40:44, lane["output_send"]] = 0.0
    assert _critical_ranks(ct, load) == [0, 1, 2, 3, 4, 5]


def test_auto_uses_few_sharding_groups_when_they_cost():
    """A workload whose tables all fit one type: auto's plan is never slower than the best
    plan that uses a single sharding type for every table (a forced yardstick)."""
    work = make_workload(8)
    topo = make_topology(hosts=2, devices_per_host=4)
    auto = plan(work, topo, solver="auto", time_limit_s=10.0).summary.makespan_ms
    for t in (ShardingType.TABLE_WISE, ShardingType.COLUMN_WISE, ShardingType.TABLE_ROW_WISE):
        forced = dataclasses.replace(work, tables=tuple(dataclasses.replace(
            x, constraints=TableConstraints(sharding_types=(t,))) for x in work.tables))
        ms = plan(forced, topo, solver="local_search", time_limit_s=10.0).summary.makespan_ms
        assert auto <= ms * (1 + 1e-9), (t, auto, ms)
