"""Re-planning: rank maps, migration bytes, the solvers' invariants, bad input, the CLI."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

import shardplan
from shardplan.cli.app import app
from shardplan.errors import InfeasiblePlanError, SpecError
from shardplan.plans import check_plan, save_plan
from shardplan.plan_format import plan_to_json
from shardplan.replanning import diff_plans, map_ranks, replan, replan_full
from shardplan.replanning.migration import block_bytes
from shardplan.specs import topology_to_dict
from shardplan.types import TableSpec, Workload
from tests.conftest import make_topology, make_workload

runner = CliRunner()
FAST = {"ilp_max_cells": 0}  # auto without the ILP (it has its own test)


@pytest.fixture(scope="module")
def old():
    work = make_workload(12)
    return shardplan.plan(work, make_topology(hosts=2), solver="greedy")


def check_invariants(plan) -> None:
    """Every row of every table placed exactly once (DP: a replica per rank), every rank
    within capacity, every table of the workload present."""
    check_plan(plan, check_memory=True)
    assert [t.name for t in plan.tables] == [t.name for t in plan.workload.tables]
    for r in plan.ranks:
        assert r.memory_bytes.fits_in(r.capacity_bytes)


# ---------------------------------------------------------------------------------------------
# rank maps
# ---------------------------------------------------------------------------------------------


def test_map_ranks_shrink_loses_last_host() -> None:
    rm = map_ranks(make_topology(hosts=3), make_topology(hosts=2))
    assert rm.lost_hosts == (2,) and rm.added_hosts == ()
    assert rm.old_to_new[:16] == tuple(range(16)) and rm.old_to_new[16:] == (None,) * 8


def test_map_ranks_named_lost_host_renumbers_later_hosts() -> None:
    rm = map_ranks(make_topology(hosts=3), make_topology(hosts=2), lost_hosts=[0])
    assert rm.old_to_new[:8] == (None,) * 8
    assert rm.old_to_new[8:] == tuple(range(16))
    assert rm.new_to_old == tuple(range(8, 24))


def test_map_ranks_added_hosts_and_bad_lost_host() -> None:
    rm = map_ranks(make_topology(hosts=2), make_topology(hosts=4))
    assert rm.added_hosts == (2, 3) and rm.old_to_new == tuple(range(16))
    with pytest.raises(SpecError, match="lost host 7"):
        map_ranks(make_topology(hosts=2), make_topology(hosts=1), lost_hosts=[7])


# ---------------------------------------------------------------------------------------------
# unchanged input
# ---------------------------------------------------------------------------------------------


def test_unchanged_gives_old_plan_and_moves_nothing(old) -> None:
    r = replan_full(old, old.topology)
    assert [t.shards for t in r.plan.tables] == [t.shards for t in old.tables]
    assert r.plan.summary.makespan_ms == pytest.approx(old.summary.makespan_ms, rel=1e-9)
    assert r.migration.total_bytes == 0 and r.migration.transfers == ()
    assert r.migration.moved_shards == 0 and r.migration.kept_shards == sum(
        len(t.shards) for t in old.tables)
    assert diff_plans(old, r.plan).total_bytes == 0


def test_replan_is_deterministic(old) -> None:
    topo = make_topology(hosts=3)
    a = replan(old, topo, **FAST)
    b = replan(old, topo, **FAST)
    strip = lambda p: json.loads(plan_to_json(p)) | {"summary": None}  # noqa: E731  (solve time)
    assert strip(a) == strip(b)


# ---------------------------------------------------------------------------------------------
# changed topology
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("solver", ["greedy", "local_search", "auto"])
def test_lost_host_shards_all_move(old, solver: str) -> None:
    new_topo = make_topology(hosts=1)
    r = replan_full(old, new_topo, solver=solver, lost_hosts=[0], **FAST)
    check_invariants(r.plan)
    work = old.workload
    lost = 0.0
    for t in old.tables:
        spec = work.table(t.name)
        rects = {(s.row_offset, s.num_rows, s.col_offset, s.num_cols) for s in t.shards
                 if old.topology.rank(s.rank).host == 0}
        if t.sharding_type.value == "data_parallel":
            continue  # replicas survive on host 1
        lost += sum(block_bytes(spec, work, nr, nc) for _, nr, _, nc in rects)
    # every byte of host 0 comes back from the checkpoint; nothing claims to be kept there
    assert r.migration.restored_bytes == pytest.approx(lost, rel=1e-9)
    assert all(x.dest < 8 for x in r.migration.transfers)


def test_added_hosts_keeps_most_and_respects_invariants(old) -> None:
    r = replan_full(old, make_topology(hosts=3), **FAST)
    check_invariants(r.plan)
    assert r.migration.restored_bytes == 0
    assert r.migration.kept_shards > 0
    scratch = shardplan.plan(old.workload, make_topology(hosts=3), solver="greedy")
    assert r.migration.total_bytes <= diff_plans(old, scratch).total_bytes


@pytest.mark.parametrize("frac", [0.0, 0.25])
def test_budget_respected(old, frac: float) -> None:
    topo = make_topology(hosts=3)
    scratch = diff_plans(old, shardplan.plan(old.workload, topo, solver="greedy")).total_bytes
    budget = frac * scratch
    r = replan_full(old, topo, move_budget_bytes=budget, **FAST)
    check_invariants(r.plan)
    assert r.migration.total_bytes <= budget + 1


def test_budget_below_lost_state_is_infeasible(old) -> None:
    with pytest.raises(InfeasiblePlanError, match="must be restored"):
        replan(old, make_topology(hosts=1), lost_hosts=[0], move_budget_bytes=1.0)


def test_both_weight_and_budget_refused(old) -> None:
    with pytest.raises(SpecError, match="not both"):
        replan(old, old.topology, move_weight=1.0, move_budget_bytes=1.0)


def test_ilp_solver(old) -> None:
    r = replan_full(old, make_topology(hosts=1), solver="ilp", lost_hosts=[1], time_limit_s=20)
    check_invariants(r.plan)
    assert "ilp" in r.details["tried"] or r.details["ilp"]["mip_status"]
    assert r.migration.restored_bytes > 0


def test_too_small_topology_is_infeasible(old) -> None:
    tiny = make_topology(hosts=1, devices_per_host=1, hbm_gib=0.5)
    tiny = dataclasses.replace(tiny, host_groups=(dataclasses.replace(
        tiny.host_groups[0], host=dataclasses.replace(tiny.host_groups[0].host,
                                                      ddr_capacity_bytes=2**28)),))
    with pytest.raises(InfeasiblePlanError, match="cannot hold the tables"):
        replan(old, tiny, **FAST)


# ---------------------------------------------------------------------------------------------
# changed workload
# ---------------------------------------------------------------------------------------------


def test_added_removed_and_resized_tables(old) -> None:
    w = old.workload
    grown = dataclasses.replace(w.tables[3], num_embeddings=w.tables[3].num_embeddings * 2)
    added = TableSpec(name="brand_new", num_embeddings=50_000, embedding_dim=64,
                      pooling_factor=3.0)
    tables = (w.tables[0], w.tables[1], w.tables[2], grown) + w.tables[5:] + (added,)
    nw = dataclasses.replace(w, tables=tables)
    r = replan_full(old, old.topology, nw, **FAST)
    check_invariants(r.plan)
    assert {t.name for t in r.plan.tables} == {t.name for t in tables}
    spec = nw.table("brand_new")
    assert r.migration.fresh_bytes >= block_bytes(spec, nw, 50_000, 64)
    # the grown table's new rows start fresh; its old rows count as its old shards' state
    assert r.migration.fresh_shards >= 1
    # unchanged tables that fit where they were stay there
    kept = {t.name for t in r.plan.tables
            if t.name in {x.name for x in old.tables} and t.shards == old.table(t.name).shards}
    assert len(kept) >= 6


def test_mismatched_tables_named(old) -> None:
    w = old.workload
    bad = dataclasses.replace(w.tables[2], embedding_dim=w.tables[2].embedding_dim * 2)
    nw = dataclasses.replace(w, tables=(w.tables[0], w.tables[1], bad) + w.tables[3:])
    with pytest.raises(SpecError, match="t2 .embedding_dim"):
        replan(old, old.topology, nw)
    other = Workload(tables=(TableSpec(name="x", num_embeddings=10, embedding_dim=8),),
                     batch_size=8)
    with pytest.raises(SpecError, match="no table of the old plan"):
        replan(old, old.topology, other)


# ---------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------


def _write_topo(path: Path, hosts: int, hbm_gib: float = 80.0) -> Path:
    import yaml

    d = topology_to_dict(make_topology(hosts=hosts, hbm_gib=hbm_gib))
    path.write_text(yaml.safe_dump(d), encoding="utf-8")
    return path


def test_cli_replan_and_diff(tmp_path: Path, old) -> None:
    save_plan(old, tmp_path / "old.json")
    topo = _write_topo(tmp_path / "t1.yaml", 1)
    out = tmp_path / "new.json"
    r = runner.invoke(app, ["replan", str(tmp_path / "old.json"), str(topo), "--lost-host", "0",
                            "--out", str(out), "--migration", str(tmp_path / "m.json")])
    assert r.exit_code == 0, r.output
    assert "restored from a checkpoint" in r.output and "migration:" in r.output
    mig = json.loads((tmp_path / "m.json").read_text())
    assert mig["restored_bytes"] > 0 and mig["rank_map"]["lost_hosts"] == [0]
    d = runner.invoke(app, ["diff", str(tmp_path / "old.json"), str(out), "--figure",
                            str(tmp_path / "m.png")])
    assert d.exit_code == 0, d.output
    assert "makespan: old" in d.output and "largest transfers" in d.output
    from PIL import Image

    from shardplan.figures import DPI
    from shardplan.replanning.figures import FIGSIZE_IN

    with Image.open(tmp_path / "m.png") as im:
        assert im.size == (round(FIGSIZE_IN[0] * DPI), round(FIGSIZE_IN[1] * DPI))
    same = runner.invoke(app, ["diff", str(tmp_path / "old.json"), str(tmp_path / "old.json")])
    assert same.exit_code == 0 and "nothing moves" in same.output


def test_cli_exit_codes(tmp_path: Path, old) -> None:
    save_plan(old, tmp_path / "old.json")
    tiny = _write_topo(tmp_path / "tiny.yaml", 1, hbm_gib=0.01)
    r = runner.invoke(app, ["replan", str(tmp_path / "old.json"), str(tiny),
                            "--out", str(tmp_path / "n.json")])
    assert r.exit_code == 2, r.output
    assert "cannot hold the tables" in r.output
    w = old.workload
    bad = dataclasses.replace(w, tables=(dataclasses.replace(w.tables[0], embedding_dim=8),)
                              + w.tables[1:])
    import yaml

    from shardplan.specs import workload_to_dict

    (tmp_path / "w.yaml").write_text(yaml.safe_dump(workload_to_dict(bad)), encoding="utf-8")
    r = runner.invoke(app, ["replan", str(tmp_path / "old.json"), str(_write_topo(
        tmp_path / "t2.yaml", 2)), "--tables", str(tmp_path / "w.yaml"), "--out",
        str(tmp_path / "n.json")])
    assert r.exit_code == 1, r.output
    assert "t0" in r.output and "Traceback" not in r.output
    r = runner.invoke(app, ["replan", str(tmp_path / "old.json"), "h100-16x8",
                            "--move-weight", "1", "--move-budget-gib", "1"])
    assert r.exit_code == 1 and "not both" in r.output


# ---------------------------------------------------------------------------------------------
# TorchRec: the argument of DistributedModelParallel.reshard
# ---------------------------------------------------------------------------------------------


def _moved(plan, table: str, ranks: tuple[int, ...]):
    from shardplan.assignments import assignment_of
    from shardplan.estimators import default_cost_model
    from shardplan.plans import build_plan
    from shardplan.types import Assignment

    a = assignment_of(plan)
    ranks_all = tuple(ranks if o.table == table else rs for o, rs in zip(a.options, a.ranks))
    return build_plan(workload=plan.workload, topology=plan.topology,
                      cost_model=default_cost_model(plan.workload, plan.topology),
                      assignment=Assignment(options=a.options, ranks=ranks_all), solver="test")


def test_reshard_delta_holds_only_changed_tw_cw_tables() -> None:
    pytest.importorskip("torchrec")
    from shardplan.errors import PlanError
    from shardplan.replanning.torchrec import reshard_delta

    import dataclasses

    from shardplan.types import ShardingType, TableConstraints

    topo, work = shardplan.load_problem("cpu-2")
    # one table kept table-wise by its constraints, whatever the solver would prefer
    first = dataclasses.replace(work.tables[0], constraints=TableConstraints(
        sharding_types=(ShardingType.TABLE_WISE,)))
    work = dataclasses.replace(work, tables=(first, *work.tables[1:]))
    old = shardplan.plan(work, topo, solver="greedy")
    tw = next(t for t in old.tables if t.sharding_type.value == "table_wise")
    new = _moved(old, tw.name, (1 - tw.shards[0].rank,))
    d = reshard_delta(old, new)
    volume, delta = d[""]
    assert list(delta.keys()) == [tw.name]
    assert delta[tw.name].ranks == [1 - tw.shards[0].rank]
    assert volume * 2**20 == pytest.approx(diff_plans(old, new).total_bytes)
    rw = next((t for t in old.tables if t.sharding_type.value == "row_wise"), None)
    if rw is not None:
        swapped = _moved(old, rw.name, tuple(reversed([s.rank for s in rw.shards])))
        with pytest.raises(PlanError, match=rw.name):
            reshard_delta(old, swapped)


# ---------------------------------------------------------------------------------------------
# Executor: train, move the shards as the diff says, continue; compare with the reference
# ---------------------------------------------------------------------------------------------


def _rotated(plan):
    """``plan`` with every table-wise and column-wise shard one rank further on."""
    from shardplan.assignments import assignment_of
    from shardplan.estimators import default_cost_model
    from shardplan.plans import build_plan
    from shardplan.types import Assignment

    a = assignment_of(plan)
    w = plan.topology.world_size
    ranks = tuple(tuple((r + 1) % w for r in rs)
                  if o.sharding_type.value in ("table_wise", "column_wise") else rs
                  for o, rs in zip(a.options, a.ranks))
    return build_plan(workload=plan.workload, topology=plan.topology,
                      cost_model=default_cost_model(plan.workload, plan.topology),
                      assignment=Assignment(options=a.options, ranks=ranks), solver="test")


@pytest.fixture(scope="module")
def cpu_plans():
    pytest.importorskip("torch")
    topo, work = shardplan.load_problem("cpu-2x2")
    old = shardplan.plan(work, topo, solver="greedy")
    return old, _rotated(old)


def test_executor_migration_keeps_weights_and_state(cpu_plans) -> None:
    from shardplan.executor.migrate import check_migration

    old, new = cpu_plans
    mig = diff_plans(old, new)
    assert mig.transfers and mig.restored_bytes == 0
    res = check_migration(old, new, steps_before=2, steps_after=2)
    assert res.passed, res.mismatches[:5]
    assert res.transfers == len(mig.transfers)
    assert all(r["unfilled"] == 0 and r["twice"] == 0 for r in res.ranks)
    # what moved is what the migration estimate counts (fp32 weights + row-wise state)
    assert sum(r["sent_bytes"] for r in res.ranks) == pytest.approx(mig.moved_bytes)
    assert sum(r["received_bytes"] for r in res.ranks) == pytest.approx(mig.moved_bytes)


def test_executor_migration_catches_lost_state(cpu_plans) -> None:
    from shardplan.executor.migrate import check_migration

    old, new = cpu_plans
    res = check_migration(old, new, steps_before=1, steps_after=1, drop_transfers=1)
    assert not res.passed
    assert any(m["what"] == "coverage" for m in res.mismatches)
