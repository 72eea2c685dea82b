"""The executor: sharded runs equal the unsharded reference; bad plans rejected before
anything runs; profile and calibrate outputs.

Multi-process runs are marked slow (a few seconds each with the fork start method; all
validation cases share one launch of 4 processes).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from shardplan import load_problem, load_topology, plan
from shardplan.cli.app import app
from shardplan.enumerators import EnumerationOptions
from shardplan.errors import PlanError
from shardplan.executor import prepare
from shardplan.executor.layout import OutputKind, build_layout
from shardplan.plans import assignment_of, load_plan, plan_from_dict, plan_to_dict, plan_to_json, save_plan
from shardplan.types import (
    Optimizer,
    ShardingType,
    Stage,
    TableConstraints,
    TableSpec,
    Topology,
    Workload,
)

ROOT = Path(__file__).resolve().parents[1]
S = ShardingType
runner = CliRunner()


def cpu_2x2() -> Topology:
    """cpu-4 regrouped as 2 hosts x 2 ranks, so TWRW and TWCW have hosts to stay within."""
    g = load_topology("cpu-4").host_groups[0]
    return Topology(name="cpu-2x2", host_groups=(dataclasses.replace(g, hosts=2, devices_per_host=2),))


def forced(types: list[ShardingType], opt: Optimizer = Optimizer.ROWWISE_ADAGRAD,
           batch: int = 4) -> Workload:
    """One small table per entry, each allowed only that sharding type."""
    tables = tuple(
        TableSpec(name=f"t{i}_{st.short}", num_embeddings=50 + 13 * i,
                  embedding_dim=8 if i % 2 else 16, pooling_factor=2.0 + i,
                  constraints=TableConstraints(sharding_types=(st,)))
        for i, st in enumerate(types))
    return Workload(name="forced", tables=tables, batch_size=batch, default_optimizer=opt)


CASES = {
    "TW": ([S.TABLE_WISE] * 3, "cpu4"),
    "RW": ([S.ROW_WISE] * 2, "cpu4"),
    "CW": ([S.COLUMN_WISE] * 2, "cpu4"),
    "DP": ([S.DATA_PARALLEL] * 2, "cpu4"),
    "TWRW": ([S.TABLE_ROW_WISE] * 3, "2x2"),
    "TWCW": ([S.TABLE_COLUMN_WISE] * 2, "2x2"),
    "mixed": (list(S) + [S.ROW_WISE, S.TABLE_WISE], "2x2"),
}


# offer every sharding type to every table, however small (the default skips wide options for
# small tables, which would leave a table forced to RW/TWRW/TWCW/DP with no option)
ALL_OPTIONS = EnumerationOptions(wide_min_share=0.0)


def make_case(name: str, opt: Optimizer):
    types, topo = CASES[name]
    return plan(forced(types, opt), load_topology("cpu-4") if topo == "cpu4" else cpu_2x2(),
                enumeration=ALL_OPTIONS)


# ------------------------------------------------------------------------------------------
# layout and plan checks (no processes)
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(CASES))
def test_layout_places_every_shard_once(name):
    p = make_case(name, Optimizer.SGD)
    lay = build_layout(p)
    types = {t.sharding_type for t in p.tables}
    assert types == set(CASES[name][0])
    placed = sorted((s.table, s.shard_index) for slots in lay.slots for s in slots)
    want = sorted((t.name, i) for t in p.tables if t.sharding_type is not S.DATA_PARALLEL
                  for i in range(len(t.shards)))
    assert placed == want
    assert {d.table for d in lay.dp_tables} == {t.name for t in p.tables
                                               if t.sharding_type is S.DATA_PARALLEL}
    for slots in lay.slots:
        for s in slots:
            assert s.kind is {S.ROW_WISE: OutputKind.ROWS, S.TABLE_ROW_WISE: OutputKind.HOST_ROWS}.get(
                p.table(s.table).sharding_type, OutputKind.COLUMNS)


def _tampered(p, table: str, edit) -> object:
    d = plan_to_dict(p)
    t = next(t for t in d["tables"] if t["name"] == table)
    edit(t)
    return plan_from_dict(json.loads(json.dumps(d)))


def test_dropped_shard_is_rejected():
    p = make_case("RW", Optimizer.SGD)
    bad = _tampered(p, "t0_RW", lambda t: t["shards"].pop())
    with pytest.raises(PlanError, match="t0_RW.*missing or overlaps"):
        prepare(bad)


def test_overlapping_rows_are_rejected():
    p = make_case("RW", Optimizer.SGD)

    def overlap(t):  # shard 1 grows one row up into shard 0
        t["shards"][1]["row_offset"] -= 1
        t["shards"][1]["num_rows"] += 1

    bad = _tampered(p, "t0_RW", overlap)
    with pytest.raises(PlanError, match="t0_RW"):
        prepare(bad)


def test_same_area_overlap_is_rejected():
    p = make_case("RW", Optimizer.SGD)

    def shift(t):  # shard 1 slides up one row: same area, overlaps shard 0, leaves a gap
        t["shards"][1]["row_offset"] -= 1

    with pytest.raises(PlanError, match="overlap"):
        prepare(_tampered(p, "t0_RW", shift))


def test_moved_shard_is_rejected():
    p = make_case("TW", Optimizer.SGD)
    t0 = p.table("t0_TW")
    src = t0.shards[0].rank
    dst = (src + 1) % p.topology.world_size

    def move(t):
        t["shards"][0]["rank"] = dst

    bad = _tampered(p, "t0_TW", move)
    build_layout(bad)  # still a valid tiling: only the estimates give the move away
    with pytest.raises(PlanError, match=r"rank \d+ records .* edited after solving"):
        prepare(bad)


def test_shard_on_missing_rank_is_rejected():
    p = make_case("TW", Optimizer.SGD)
    bad = _tampered(p, "t1_TW", lambda t: t["shards"][0].update(rank=9))
    with pytest.raises(PlanError, match="rank 9"):
        prepare(bad)


def test_world_size_must_match_unless_resolved():
    p = make_case("TW", Optimizer.SGD)
    with pytest.raises(PlanError, match="re-solve"):
        prepare(p, world_size=2)


def test_unsupported_optimizer_is_rejected():
    p = plan(forced([S.TABLE_WISE], Optimizer.ADAM), load_topology("cpu-4"), enumeration=ALL_OPTIONS)
    with pytest.raises(PlanError, match="optimizer"):
        prepare(p)


# ------------------------------------------------------------------------------------------
# validation against the reference: every case in one launch of 4 processes
# ------------------------------------------------------------------------------------------

OPTS = (Optimizer.ROWWISE_ADAGRAD, Optimizer.SGD)


@pytest.fixture(scope="module")
def validated():
    from shardplan.executor.launch import run_local
    from shardplan.executor.runner import Job, JobKind

    keys, jobs = [], []
    for name in sorted(CASES):
        for opt in OPTS:
            keys.append((name, opt, "auto", None))
            jobs.append(Job(kind=JobKind.VALIDATE, plan_json=plan_to_json(make_case(name, opt)),
                            steps=2))
    mixed = plan_to_json(make_case("mixed", Optimizer.ROWWISE_ADAGRAD))
    keys.append(("mixed", Optimizer.ROWWISE_ADAGRAD, "torch", None))
    jobs.append(Job(kind=JobKind.VALIDATE, plan_json=mixed, steps=2, backend="torch"))
    for table in ("t1_RW", "t5_DP"):
        keys.append(("mixed", Optimizer.ROWWISE_ADAGRAD, "auto", table))
        jobs.append(Job(kind=JobKind.VALIDATE, plan_json=mixed, steps=1, corrupt=(table, 2)))
    return dict(zip(keys, run_local(jobs, 4)))


@pytest.mark.slow
@pytest.mark.parametrize("opt", OPTS, ids=lambda o: o.value)
@pytest.mark.parametrize("name", sorted(CASES))
def test_sharded_equals_reference(validated, name, opt):
    res = validated[(name, opt, "auto", None)]
    assert len(res) == 4
    for r in res:
        assert r["mismatches"] == [], r["mismatches"][:3]
        assert r["steps"] == 2
        for what in ("output", "gradient", "weight"):
            assert r["max_abs_error"][what] < 1e-4
    # every shard ran somewhere, and the weights really moved (the comparison is not vacuous)
    assert sum(r["num_slots"] for r in res) + sum(r["num_dp_tables"] for r in res) > 0
    kinds = set().union(*(r["kinds"] for r in res))
    if name in ("RW",):
        assert kinds == {"rows"}
    if name == "TWRW":
        assert kinds == {"host_rows"}
    if name == "mixed":
        assert kinds == {"columns", "rows", "host_rows"}
        assert all(r["num_dp_tables"] == 1 for r in res)


@pytest.mark.slow
def test_torch_backend_equals_reference(validated):
    res = validated[("mixed", Optimizer.ROWWISE_ADAGRAD, "torch", None)]
    assert {r["backend"] for r in res} == {"torch"}
    assert all(r["mismatches"] == [] for r in res)


@pytest.mark.slow
def test_fbgemm_is_chosen_when_installed(validated):
    pytest.importorskip("fbgemm_gpu")
    res = validated[("TW", Optimizer.SGD, "auto", None)]
    assert {r["backend"] for r in res} == {"fbgemm"}


@pytest.mark.slow
@pytest.mark.parametrize("table", ["t1_RW", "t5_DP"])
def test_corruption_is_caught_and_named(validated, table):
    from shardplan.executor.api import ValidationReport

    res = validated[("mixed", Optimizer.ROWWISE_ADAGRAD, "auto", table)]
    rep = ValidationReport(ranks=tuple(res), rtol=1e-4, atol=1e-5, steps=1, estimates_checked=True)
    assert not rep.passed
    weight = [m for m in rep.mismatches if m["what"] == "weight"]
    assert weight and all(m["table"] == table and m["rank"] == 2 for m in weight)
    with pytest.raises(Exception, match=rf"table '{table}', shard .* rank \d"):
        rep.raise_on_mismatch()


@pytest.mark.slow
def test_memory_is_reported_against_estimate(validated):
    for r in validated[("mixed", Optimizer.ROWWISE_ADAGRAD, "auto", None)]:
        assert r["param_bytes"] > 0 and r["estimated_bytes"] > 0
        assert r["measured_bytes"] >= r["param_bytes"]


# ------------------------------------------------------------------------------------------
# commands
# ------------------------------------------------------------------------------------------


@pytest.fixture
def cpu2_plan(tmp_path):
    topo, work = load_problem("cpu-2")
    path = tmp_path / "p.json"
    save_plan(plan(work, topo), path)
    return path


@pytest.mark.slow
def test_cli_validate_ok(cpu2_plan):
    r = runner.invoke(app, ["validate", str(cpu2_plan), "--steps", "1"])
    assert r.exit_code == 0, r.output
    assert "equals the unsharded reference" in r.output


def test_cli_validate_rejects_tampered_plan_before_running(cpu2_plan, tmp_path):
    d = json.loads(cpu2_plan.read_text())
    d["tables"][0]["shards"] = d["tables"][0]["shards"][:-1] if len(d["tables"][0]["shards"]) > 1 \
        else [dict(d["tables"][0]["shards"][0], num_rows=d["tables"][0]["shards"][0]["num_rows"] - 1)]
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(d))
    r = runner.invoke(app, ["validate", str(bad)])
    assert r.exit_code == 1, r.output
    assert d["tables"][0]["name"] in r.output
    assert "Traceback" not in r.output


def test_cli_validate_world_size_needs_resolve(cpu2_plan):
    r = runner.invoke(app, ["validate", str(cpu2_plan), "--world-size", "4"])
    assert r.exit_code == 1
    assert "--resolve" in r.output


@pytest.mark.slow
def test_profile_one_row_per_rank_and_stage(cpu2_plan, tmp_path):
    out = tmp_path / "prof.csv"
    r = runner.invoke(app, ["profile", str(cpu2_plan), "--steps", "3", "--warmup", "1",
                            "--out", str(out)])
    assert r.exit_code == 0, r.output
    rows = list(csv.DictReader(io.StringIO(out.read_text())))
    keys = [(int(x["rank"]), x["stage"]) for x in rows]
    want = [(rk, s) for rk in range(2) for s in [st.value for st in Stage] + ["total"]]
    assert keys == want
    p = load_plan(cpu2_plan)
    for x in rows:
        est = float(x["estimated_ms"])
        if x["stage"] == "total":
            assert est == pytest.approx(p.ranks[int(x["rank"])].total_ms)
            assert float(x["measured_ms"]) > 0
        else:
            assert est == pytest.approx(p.ranks[int(x["rank"])].estimated_ms.get(Stage(x["stage"])))
    fwd = [float(x["measured_ms"]) for x in rows if x["stage"] in ("fwd_compute", "fwd_comm")]
    assert all(v > 0 for v in fwd)


@pytest.mark.slow
def test_calibrate_tiny_grid_writes_a_profile_the_estimators_load(tmp_path):
    from shardplan.estimators import default_cost_model, load_profile
    from shardplan.plans import rank_costs

    out = tmp_path / "cpu-tiny.yaml"
    r = runner.invoke(app, ["calibrate", "--out", str(out), "--grid", "tiny", "--topology", "cpu-2"])
    assert r.exit_code == 0, r.output
    prof = load_profile(out)
    assert prof.device_model == "CPU"
    assert prof.provenance.kind.value == "measured" and prof.provenance.date
    co = prof.coefficients
    assert 0 < co.lookup_bandwidth_efficiency <= 1 and co.kernel_overhead_us >= 0
    assert set(co.collective_latency_us) >= {"all_to_all", "reduce_scatter", "all_reduce"}
    topo, work = load_problem("cpu-2")
    p = plan(work, topo)
    base = default_cost_model(work, topo, profile=ROOT / "estimators/profiles/cpu.yaml")
    cal = default_cost_model(work, topo, profile=out)
    assert cal.describe() != base.describe()
    assign = assignment_of(p)
    before = [c.perf.total for c in rank_costs(assign, topo, base)]
    after = [c.perf.total for c in rank_costs(assign, topo, cal)]
    assert before != pytest.approx(after, rel=1e-3)


def test_shipped_cpu_profile_loads():
    from shardplan.estimators import load_profile

    prof = load_profile(ROOT / "estimators/profiles/cpu-gloo.yaml")
    assert prof.device_model == "CPU" and prof.provenance.kind.value == "measured"
    assert prof.provenance.date and prof.provenance.hardware


@pytest.mark.slow
def test_gpu_calibrate_script_cpu_path(tmp_path):
    r = subprocess.run([sys.executable, str(ROOT / "bench/gpu_calibrate.py"), "--tiny",
                        "--device", "cpu", "--out", str(tmp_path)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    from shardplan.estimators import load_profile

    files = sorted(tmp_path.glob("*.yaml"))
    assert len(files) == 1
    prof = load_profile(files[0])
    assert prof.provenance.kind.value == "measured"


def test_plan_fit_recovers_known_coefficients():
    """Measurements generated by the cost model at known coefficients are fitted back."""
    import numpy as np

    from shardplan.executor.calibrate import _stage_matrix, fit_plan_profiles, random_assignments

    topo, work = load_problem("cpu-4")
    assigns = random_assignments(work, topo, 12, seed=5)
    assert len({tuple(a.ranks) for a in assigns}) == 12
    truth = {"kernel_overhead_us": 150.0, "per_table_overhead_us": 20.0, "inv_lookup": 4.0,
             "inv_backward": 2.0, "inv_all_to_all": 8.0, "inv_reduce_scatter": 16.0,
             "inv_all_reduce": 40.0, "lat_all_to_all": 900.0,
             "lat_reduce_scatter": 300.0, "lat_all_reduce": 1200.0}
    meas = _stage_matrix(assigns, work, topo, truth)
    kinds = [sorted({o.sharding_type.short for o in a.options}) for a in assigns]
    assert any("RW" in k for k in kinds) and any("DP" in k for k in kinds)
    for objective in ("stages", "totals", "both"):
        co, rep = fit_plan_profiles(assigns, meas, work, topo, objective=objective)
        assert rep["plan_median_rel_error"] < 1e-3
        # bandwidth terms vary between plans, so they are identified
        assert co["lookup_bandwidth_efficiency"] == pytest.approx(0.25, rel=1e-2)
        assert co["backward_bandwidth_efficiency"] == pytest.approx(0.5, rel=1e-2)
        # the link takes the best kind's efficiency, each kind its factor on it
        assert co["collective_bandwidth_efficiency"]["loopback"] == pytest.approx(0.125, rel=1e-2)
        kind = co["collective_kind_efficiency"]
        assert kind["all_to_all"] == pytest.approx(1.0, rel=1e-2)
        assert kind["reduce_scatter"] == pytest.approx(0.5, rel=1e-2)
        assert kind["all_reduce"] == pytest.approx(0.2, rel=1e-2)
        lat = co["collective_latency_us"]
        # reduce-scatter/all-gather and all-reduce are paid per RW / DP table, so their
        # latencies are identified by how many such tables a plan has
        assert lat["reduce_scatter"] == pytest.approx(300.0, rel=2e-2)
        assert lat["all_reduce"] == pytest.approx(1200.0, rel=2e-2)
        if objective != "totals":
            # the 4 all-to-alls of every step are the only fixed cost of the comm stages
            assert co["kernel_overhead_us"] == pytest.approx(150.0, rel=2e-2)
            assert lat["all_to_all"] == pytest.approx(900.0, rel=2e-2)
        else:  # step times alone only identify the sum of every rank's fixed costs
            assert 2 * co["kernel_overhead_us"] + 4 * lat["all_to_all"] == pytest.approx(
                2 * 150 + 4 * 900, rel=2e-2)
    # noise-free data far from the model's form is not fitted well: the error says so
    co, rep = fit_plan_profiles(assigns, meas * np.linspace(0.2, 3.0, meas.size).reshape(meas.shape),
                                work, topo)
    assert rep["plan_median_rel_error"] > 0.05
