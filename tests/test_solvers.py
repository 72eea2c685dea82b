"""Every solver over the same cases; invariants on every plan (tiling, DP replicas, memory,
makespan >= lower bound, determinism), infeasibility, co-location / separation / pins."""

from __future__ import annotations

import pytest
from conftest import make_topology, make_workload

from shardplan.errors import InfeasiblePlanError, SpecError
from shardplan.loaders import load_topology
from shardplan.planner import plan
from shardplan.plans import check_plan, plan_to_json
from shardplan.solvers import BASELINE_SOLVERS, DEFAULT_SOLVER, SOLVERS, get_solver
from shardplan.types import (
    ShardingType,
    TableConstraints,
    TableSpec,
    Workload,
)

TOL = 1e-6

def _plan(work, topo, solver, **kw):
    kw.setdefault("time_limit_s", 20.0)
    return plan(work, topo, solver=solver, **kw)


def _check(p) -> None:
    check_plan(p)
    assert p.summary.lower_bound_ms is not None
    assert p.summary.makespan_ms >= p.summary.lower_bound_ms * (1 - TOL), (
        p.summary.makespan_ms, p.summary.lower_bound_ms)


def test_default_is_auto_and_registry_complete():
    assert DEFAULT_SOLVER == "auto"
    for name in ("auto", "greedy", "ilp", "local_search", *BASELINE_SOLVERS):
        assert get_solver(name).name == name
    assert set(BASELINE_SOLVERS) == {"random", "size_greedy", "dim_greedy", "lookup_greedy",
                                     "size_lookup_greedy"}
    with pytest.raises(SpecError, match="unknown solver"):
        get_solver("nope")


@pytest.mark.parametrize("solver", sorted(SOLVERS))
def test_every_solver_valid_plan_dozen(solver, dozen, topo16):
    p = _plan(dozen, topo16, solver, time_limit_s=10.0)
    _check(p)
    assert p.summary.solver == solver


@pytest.mark.parametrize("solver", ("auto", "greedy", "local_search", "ilp"))
def test_solvers_on_cpu4(solver, cpu4):
    p = _plan(make_workload(8, batch_size=64), cpu4, solver, time_limit_s=10.0)
    _check(p)


@pytest.mark.parametrize("solver", ("auto", "greedy", "lookup_greedy"))
def test_same_input_same_plan(solver, dozen, topo16):
    a = _plan(dozen, topo16, solver)
    b = _plan(dozen, topo16, solver)
    strip = lambda s: "\n".join(l for l in s.splitlines() if "solve_time_s" not in l)  # noqa: E731
    assert strip(plan_to_json(a)) == strip(plan_to_json(b))


def test_auto_not_worse_than_greedy_or_baselines(dozen, topo16):
    auto = _plan(dozen, topo16, "auto").summary.makespan_ms
    for name in ("greedy", "local_search", *BASELINE_SOLVERS):
        other = _plan(dozen, topo16, name).summary.makespan_ms
        assert auto <= other * (1 + 1e-9), (name, auto, other)


def test_local_search_not_worse_than_greedy(dozen, topo16):
    g = _plan(dozen, topo16, "greedy").summary.makespan_ms
    ls = _plan(dozen, topo16, "local_search").summary.makespan_ms
    assert ls <= g * (1 + 1e-9)


def test_dcnv2_hot_table_split_and_near_bound(dcnv2):
    topo, work = dcnv2
    p = _plan(work, topo, "auto", time_limit_s=20.0)
    _check(p)
    hot = p.table("t_cat_20")
    assert len(hot.ranks) > 1, "the 100-hot table must be split"
    assert p.summary.makespan_ms <= 1.10 * p.summary.lower_bound_ms


def test_baselines_are_table_wise(dozen, topo16):
    for name in BASELINE_SOLVERS:
        p = _plan(dozen, topo16, name)
        assert set(p.summary.sharding_mix) == {ShardingType.TABLE_WISE.value}


def test_lookup_greedy_follows_its_rule(topo16):
    """Largest dim x pooling first onto the least accumulated weight: with 16 equal tables
    on 16 ranks, each rank gets exactly one."""
    tables = tuple(TableSpec(name=f"e{i}", num_embeddings=1000, embedding_dim=16,
                             pooling_factor=2.0) for i in range(16))
    p = _plan(Workload(tables=tables, batch_size=64), topo16, "lookup_greedy")
    assert sorted(t.shards[0].rank for t in p.tables) == list(range(16))


def test_infeasible_error_names_tables_and_fixes():
    topo = make_topology(hosts=1, devices_per_host=2, hbm_gib=1.0)
    big = TableSpec(name="huge", num_embeddings=50_000_000, embedding_dim=128,
                    constraints=TableConstraints(placements=(_hbm(),)))
    work = Workload(tables=(big,), batch_size=64)
    with pytest.raises(InfeasiblePlanError) as ei:
        _plan(work, topo, "auto")
    e = ei.value
    assert "huge" in e.tables
    assert any(s.tier == "hbm" and s.missing_bytes > 0 for s in e.shortfalls)
    text = " ".join(e.suggestions)
    assert "devices" in text and "dtype" in text


@pytest.mark.parametrize("solver", ("size_greedy", "random"))
def test_baseline_without_room_raises(solver):
    topo = make_topology(hosts=1, devices_per_host=2, hbm_gib=1.0)
    big = TableSpec(name="big", num_embeddings=20_000_000, embedding_dim=64)
    with pytest.raises(InfeasiblePlanError, match="no device has memory room"):
        _plan(Workload(tables=(big,), batch_size=64), topo, solver)


def _hbm():
    from shardplan.types import PlacementKind
    return PlacementKind.HBM


@pytest.mark.parametrize("solver", sorted(SOLVERS))
def test_colocate_separate_pins(solver, topo16):
    base = make_workload(10)
    tables = list(base.tables)
    tables[0] = TableSpec(name="t0", num_embeddings=1000, embedding_dim=32, pooling_factor=3.0,
                          constraints=TableConstraints(pinned_ranks=(5,)))
    work = Workload(name="groups", tables=tuple(tables), batch_size=512,
                    colocate=(("t1", "t2"),), separate=(("t3", "t4", "t5"),))
    p = _plan(work, topo16, solver, time_limit_s=10.0)
    _check(p)
    assert p.table("t0").ranks == (5,)
    assert p.table("t1").ranks == p.table("t2").ranks and len(p.table("t1").ranks) == 1
    used = [set(p.table(n).ranks) for n in ("t3", "t4", "t5")]
    for i in range(3):
        for j in range(i + 1, 3):
            assert not used[i] & used[j], (used[i], used[j])


def test_pinned_rank_out_of_range_is_spec_error(topo16):
    t = TableSpec(name="p", num_embeddings=100, embedding_dim=8,
                  constraints=TableConstraints(pinned_ranks=(99,)))
    with pytest.raises(SpecError, match="pinned_ranks"):
        _plan(Workload(tables=(t,), batch_size=8), topo16, "greedy")


def test_colocate_and_separate_conflict_is_infeasible(topo16):
    w = make_workload(4)
    w = Workload(tables=w.tables, batch_size=64, colocate=(("t0", "t1"),),
                 separate=(("t0", "t1"),))
    with pytest.raises(InfeasiblePlanError, match="colocate"):
        _plan(w, topo16, "greedy")


def test_ilp_details_and_bound(dozen):
    from shardplan.estimators import default_cost_model

    from shardplan.enumerators import enumerate_options
    from shardplan.solvers.ilp import ILPSolver
    from shardplan.types import PlanningContext

    topo = make_topology(hosts=1, devices_per_host=4)
    ctx = PlanningContext(workload=dozen, topology=topo, cost_model=default_cost_model(dozen, topo),
                          options=enumerate_options(dozen, topo), time_limit_s=8.0)
    res = ILPSolver(max_options=6, gap=0.0).solve(ctx)
    d = res.details
    for key in ("backend", "mip_status", "objective_ms", "best_bound_ms", "gap", "variables",
                "constraints"):
        assert key in d
    assert d["backend"] == "highs"
    assert d["best_bound_ms"] <= d["objective_ms"] * (1 + TOL)
    assert abs(d["objective_ms"] - d["makespan_ms"]) <= 1e-6 * d["makespan_ms"]
    if d["mip_status"] == "optimal":
        assert res.lower_bound_ms is not None
        assert res.lower_bound_ms <= d["makespan_ms"] * (1 + TOL)


def test_ilp_work_limit_gives_the_same_plan_on_a_slow_machine(dcnv2, monkeypatch):
    """With ``max_checks``, HiGHS stops at the same limit check, and so at the same incumbent,
    however long each piece of its work takes: the "slow machine" sleeps in every check."""
    import time as _time

    from shardplan.estimators import default_cost_model

    from shardplan.enumerators import enumerate_options
    from shardplan.solvers import ilp
    from shardplan.types import MipStatus, PlanningContext

    topo, work = dcnv2
    ctx = PlanningContext(workload=work, topology=topo, cost_model=default_cost_model(work, topo),
                          options=enumerate_options(work, topo), time_limit_s=120.0)

    def run():
        res = ilp.ILPSolver(max_checks=6, max_nodes=10, gap=0.0).solve(ctx)
        return res.assignment, res.details

    fast, d_fast = run()
    count = ilp._WarmHiGHS._count_check
    monkeypatch.setattr(ilp._WarmHiGHS, "_count_check",
                        lambda self, event: (_time.sleep(0.3), count(self, event)))
    slow, d_slow = run()
    assert d_fast["mip_status"] == d_slow["mip_status"] == MipStatus.WORK_LIMIT
    assert d_fast["mip_checks"] == d_slow["mip_checks"] == 6
    assert d_slow["mip_wall_s"] > d_fast["mip_wall_s"] + 1.0
    assert slow == fast
    assert d_slow["objective_ms"] == d_fast["objective_ms"]


def test_ilp_cbc_backend(cpu4):
    from shardplan.solvers.ilp import ILPSolver
    p = plan(make_workload(6, batch_size=64), cpu4, solver=ILPSolver(backend="cbc"),
             time_limit_s=10.0)
    _check(p)


def test_ilp_model_names_constraints(dozen):
    from shardplan.estimators import default_cost_model

    from shardplan.enumerators import enumerate_options
    from shardplan.solvers.common import CostTables, TableGroups
    from shardplan.solvers.ilp import build_model
    from shardplan.types import PlanningContext

    topo = make_topology(hosts=1, devices_per_host=4)
    ctx = PlanningContext(workload=dozen, topology=topo, cost_model=default_cost_model(dozen, topo),
                          options=enumerate_options(dozen, topo))
    ct = CostTables.build(ctx)
    m = build_model(ct, TableGroups.of(ctx, ct), [list(range(len(o))) for o in ct.options])
    names = set(m.prob.constraints)
    for prefix in ("one_option_t0", "lane_fwd_compute_r0", "lane_output_send_r1", "step_input",
                   "step_rest", "group_use_", "hbm_r3", "ddr_r0", "largest_shard_t"):
        assert any(n.startswith(prefix) for n in names), prefix
    assert m.makespan.name == "makespan"
    assert all(v.name.startswith(("choose_", "place_", "sep_", "makespan", "group_", "stage_"))
               for v in m.prob.variables())


def test_ilp_interrupted_before_any_solution_reports_none(dozen):
    """Stopped at its first limit check with no start plan, HiGHS has no solution: the ILP
    says so (no choice, no objective) instead of decoding all-zero values as a plan."""
    from shardplan.estimators import default_cost_model

    from shardplan.enumerators import enumerate_options
    from shardplan.solvers.common import CostTables, TableGroups
    from shardplan.solvers.ilp import build_model, solve_model
    from shardplan.types import MipStatus, PlanningContext

    topo = make_topology(hosts=1, devices_per_host=4)
    ctx = PlanningContext(workload=dozen, topology=topo, cost_model=default_cost_model(dozen, topo),
                          options=enumerate_options(dozen, topo))
    ct = CostTables.build(ctx)
    m = build_model(ct, TableGroups.of(ctx, ct), [list(range(len(o))) for o in ct.options])
    out = solve_model(m, ct, backend="highs", time_limit_s=60.0, threads=1, gap=0.0, warm=None,
                      max_checks=1)
    assert out.status is MipStatus.WORK_LIMIT and out.checks == 1
    assert out.choice is None and out.objective is None


def test_registry_solvers_all_run_on_one_case(cpu4):
    work = make_workload(5, batch_size=32)
    for name in sorted(SOLVERS):
        _check(_plan(work, cpu4, name, time_limit_s=5.0))


def test_heterogeneous_topology():
    topo = load_topology("hetero-a100-h100")
    p = _plan(make_workload(20), topo, "auto", time_limit_s=10.0)
    _check(p)


def test_cli_infeasible_exit_code_2(tmp_path):
    from shardplan.cli.app import app
    from typer.testing import CliRunner

    csv = tmp_path / "huge.csv"
    csv.write_text("name,num_embeddings,embedding_dim,pooling_factor\n"
                   "huge,10000000000,512,1.0\nsmall,100,8,1.0\n")
    res = CliRunner().invoke(app, ["solve", "cpu-2", "--tables", str(csv), "--out",
                                   str(tmp_path / "p.json")])
    assert res.exit_code == 2, res.output
    assert "huge" in res.output and "devices" in res.output


@pytest.mark.parametrize("solver", sorted(SOLVERS))
def test_force_table_row_wise_on_a_chosen_host(solver):
    """``sharding_types: [table_row_wise]`` with one host's ranks as pins puts the table on
    that host, row-wise over its ranks, under every solver."""
    from shardplan.types import ShardingType

    topo = make_topology(hosts=4, devices_per_host=4)
    base = make_workload(6)
    giant = TableSpec(name="giant", num_embeddings=2_000_000, embedding_dim=64,
                      pooling_factor=40.0, constraints=TableConstraints(
                          sharding_types=(ShardingType.TABLE_ROW_WISE,),
                          pinned_ranks=(12, 13, 14, 15)))
    p = _plan(Workload(tables=(giant, *base.tables), batch_size=256), topo, solver,
              time_limit_s=10.0)
    _check(p)
    t = p.table("giant")
    assert t.sharding_type is ShardingType.TABLE_ROW_WISE
    assert sorted(s.rank for s in t.shards) == [12, 13, 14, 15]


def test_negative_lane_costs_are_refused(monkeypatch, dozen, topo16):
    """The solvers' early exits and bounds assume adding load never lowers the step time: a
    cost model that prices something below zero is refused, naming the table."""
    from shardplan.errors import SolverError
    from shardplan.solvers import common

    orig = common._cost_arrays

    def negative(*args, **kwargs):
        lg, *rest = orig(*args, **kwargs)
        return (lg - 1.0, *rest)

    monkeypatch.setattr(common, "_cost_arrays", negative)
    with pytest.raises(SolverError, match="negative time"):
        _plan(dozen, topo16, "greedy")
