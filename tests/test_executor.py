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
            # grid: column blocks across hosts, each row-wise within its host
            assert s.kind is {S.ROW_WISE: OutputKind.ROWS, S.TABLE_ROW_WISE: OutputKind.HOST_ROWS,
                              S.GRID_SHARD: OutputKind.HOST_ROWS}.get(
                p.table(s.table).sharding_type, OutputKind.COLUMNS)


@pytest.mark.parametrize("spill", [0, 3])
@pytest.mark.parametrize("name", sorted(CASES))
def test_input_routing_sends_each_id_to_its_block(name, spill):
    """The vectorised input dist (one searchsorted per group) sends exactly what a slot-by-slot
    filter sends: per destination rank and slot, the ids in its rows (made local), in sample
    order, and their per-sample counts. With ``spill``, ids up to 3 outside their table (below
    0 or past its last row) are in the batch: a row-block group drops them; none lands in the
    next column slice's blocks."""
    import torch

    from shardplan.executor.group_dists import GroupDists, _route

    p = make_case(name, Optimizer.SGD)
    lay = build_layout(p)
    B, W = lay.batch_per_rank, lay.world_size
    gen = torch.Generator().manual_seed(1)
    local = []
    for t in p.workload.tables:
        lengths = torch.randint(0, 5, (B,), generator=gen)
        local.append((lengths, torch.randint(-spill, t.num_embeddings + spill,
                                             (int(lengths.sum()),), generator=gen)))
    dists = GroupDists()
    dists.layout = lay
    for key in lay.groups:
        route = _route(lay, key)
        if route.whole_tables is not None:
            if spill:  # whole tables go as the batch has them (bounds are the kernel's)
                continue
            got = dists._whole_tables(route.whole_tables, local)
        else:
            got = dists._bucketized(route, local)
        want_len, want_ids, want_splits = [], [], []
        for d in range(W):
            n = 0
            for s in lay.group_slots(key, d):
                lengths, ids = local[s.table_index]
                seg = torch.repeat_interleave(torch.arange(B), lengths)
                keep = (ids >= s.row_offset) & (ids < s.row_offset + s.num_rows)
                want_len.append(torch.bincount(seg[keep], minlength=B))
                want_ids.append(ids[keep] - s.row_offset)
                n += int(keep.sum())
            want_splits.append(n)
        assert torch.equal(got[0], torch.cat(want_len))
        assert torch.equal(got[1], torch.cat(want_ids))
        assert list(got[2]) == want_splits


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
    keys = [(x["rank"], x["stage"]) for x in rows]
    want = [(str(rk), s) for rk in range(2) for s in [st.value for st in Stage] + ["total"]]
    assert keys == want + [("step", "step")]
    p = load_plan(cpu2_plan)
    for x in rows:
        est = float(x["estimated_ms"])
        if x["stage"] == "step":
            assert est == pytest.approx(p.summary.makespan_ms) and float(x["measured_ms"]) > 0
        elif x["stage"] == "total":
            assert est == pytest.approx(p.ranks[int(x["rank"])].estimated_ms.total, abs=1e-5)
            assert float(x["measured_ms"]) > 0 and float(x["waited_ms"]) >= 0
        else:
            assert est == pytest.approx(p.ranks[int(x["rank"])].estimated_ms.get(Stage(x["stage"])))
    fwd = [float(x["measured_ms"]) for x in rows if x["stage"] in ("fwd_compute", "fwd_comm",
                                                                   "input_dist")]
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


MIXED_TYPES = (ShardingType.TABLE_ROW_WISE, ShardingType.ROW_WISE, ShardingType.DATA_PARALLEL,
               ShardingType.TABLE_WISE, ShardingType.COLUMN_WISE,
               ShardingType.TABLE_COLUMN_WISE, ShardingType.GRID_SHARD,
               ShardingType.TABLE_ROW_WISE)


def mixed_plan(topology: str = "cpu-2x2"):
    """small-cpu on 2 hosts x 2 with every sharding type, TWRW on both hosts."""
    from shardplan.enumerators import EnumerationOptions, enumerate_options
    from shardplan.estimators import default_cost_model
    from shardplan.plans import build_plan
    from shardplan.types import Assignment, PlacementKind

    topo, work = load_problem(topology)
    opts = enumerate_options(work, topo, EnumerationOptions(wide_min_share=0.0))
    chosen, ranks = [], []
    twrw = 0
    for i, (t, st) in enumerate(zip(work.tables, MIXED_TYPES)):
        cands = [o for o in opts[t.name] if o.sharding_type is st
                 and o.placement.kind is PlacementKind.HBM]
        o = cands[0]
        if st is ShardingType.TABLE_ROW_WISE:  # one on each host
            o = next(c for c in cands if topo.rank(c.candidate_ranks[0][0]).host == twrw % 2)
            twrw += 1
        chosen.append(o)
        ranks.append(tuple(c[i % len(c)] if c else i % topo.world_size
                           for c in o.candidate_ranks))
    a = Assignment(options=tuple(chosen), ranks=tuple(ranks))
    return build_plan(workload=work, topology=topo, cost_model=default_cost_model(work, topo),
                      assignment=a, solver="hand")


@pytest.mark.slow
@pytest.mark.parametrize("pipelined", [True, False])
def test_every_sharding_group_on_two_hosts_equals_reference(pipelined):
    from shardplan.executor import validate_plan

    p = mixed_plan()
    hosts = {t.name: {p.topology.rank(s.rank).host for s in t.shards} for t in p.tables}
    assert {frozenset(h) for n, h in hosts.items()
            if p.table(n).sharding_type is ShardingType.TABLE_ROW_WISE} == {
        frozenset({0}), frozenset({1})}
    rep = validate_plan(p, steps=3, pipelined=pipelined)
    assert rep.passed, rep.mismatches[:3]
    r0 = rep.ranks[0]
    assert r0["pipelined"] is pipelined
    assert r0["groups"] == ["table_wise", "column_wise", "table_column_wise", "row_wise",
                            "table_row_wise", "grid_shard"]
    assert r0["dp_buckets"] == 1


@pytest.mark.slow
def test_profile_reports_waits_and_the_step(tmp_path):
    from shardplan.executor import profile_plan

    p = mixed_plan()
    serial = profile_plan(p, steps=3, warmup=1, pipelined=False)
    piped = profile_plan(p, steps=3, warmup=1, pipelined=True)
    for rep in (serial, piped):
        assert rep.clock == "virtual" and rep.step_ms > 0
        assert all(r.waited_ms >= 0 for r in rep.rows)
        # a virtual step is at least any rank's busy time in the stages it cannot overlap
        busy = max(r.measured_ms for r in rep.totals())
        assert rep.step_ms > 0.3 * busy
    assert serial.pipelined is False and piped.pipelined is True
    # how much the pipeline hides is a measurement (bench/fidelity.py), not a unit test: here
    # only that the input dist's wait is counted where the step blocks on it
    assert all(r.waited_ms >= 0 for r in piped.rows if r.stage == "input_dist")


def test_dp_buckets_follow_ddp():
    from shardplan.executor.sharded import dp_buckets

    # reverse order, closed when the next would pass the cap; a big one alone
    assert dp_buckets([10, 10, 10], 80) == [[2, 1], [0]]
    assert dp_buckets([1000, 1, 1], 40) == [[2, 1], [0]]
    assert dp_buckets([], 40) == []
    assert sum(len(b) for b in dp_buckets([5] * 17, 64)) == 17


def test_frequency_ordered_batches_load_the_first_block():
    import torch

    from shardplan.executor.batches import ids_of
    from shardplan.estimators.compute import block_share
    from shardplan.types import AccessSkew, IdOrder, TableSpec

    g = torch.Generator().manual_seed(0)
    freq = TableSpec(name="t", num_embeddings=80_000, embedding_dim=8,
                     access=AccessSkew(zipf_exponent=1.05, id_order=IdOrder.FREQUENCY))
    ids = ids_of(freq, 100_000, g)
    share = float((ids < 10_000).float().mean())
    assert share == pytest.approx(block_share(freq.access, 0, 10_000, 80_000), abs=0.03)
    hashed = TableSpec(name="t", num_embeddings=80_000, embedding_dim=8,
                       access=AccessSkew(zipf_exponent=1.05))
    ids = ids_of(hashed, 100_000, g)
    assert float((ids < 10_000).float().mean()) == pytest.approx(1 / 8, abs=0.05)
    assert int(ids.min()) >= 0 and int(ids.max()) < 80_000


@pytest.mark.slow
def test_row_wise_over_a_subset_of_ranks_equals_reference():
    """RW over the pinned ranks (one on each host) and RW over all ranks in one plan: the
    subset's reduce-scatter among its members, then each chunk to its owners."""
    from shardplan.executor import validate_plan
    from shardplan.planner import plan as make_plan
    from shardplan.types import TableConstraints

    topo, work = load_problem("cpu-2x2")
    tables = list(work.tables)
    pins = {0: (1, 3), 3: (0, 1, 2)}
    for i, pr in pins.items():
        tables[i] = dataclasses.replace(tables[i], constraints=TableConstraints(
            sharding_types=(ShardingType.ROW_WISE,), pinned_ranks=pr))
    tables[5] = dataclasses.replace(tables[5], constraints=TableConstraints(
        sharding_types=(ShardingType.ROW_WISE,)))
    w = dataclasses.replace(work, tables=tuple(tables))
    p = make_plan(w, topo, solver="greedy")
    for i, pr in pins.items():
        assert sorted(s.rank for s in p.tables[i].shards) == list(pr)
    assert sorted(s.rank for s in p.tables[5].shards) == [0, 1, 2, 3]
    for pipelined in (True, False):
        rep = validate_plan(p, steps=2, pipelined=pipelined)
        assert rep.passed, rep.mismatches[:3]
    assert {"row_wise", "row_wise@1,3", "row_wise@0,1,2"} <= set(rep.ranks[0]["groups"])


@pytest.mark.slow
def test_two_d_plan_runs_as_two_groups_of_two_and_equals_reference(tmp_path):
    """2D sparse parallelism (DMPCollection): small-cpu sharded over 2 ranks, replicated
    twice; 4 processes as 2 sharding groups of 2, each on its own samples, replicas averaged
    every step, against the unsharded model doing the same."""
    from shardplan.executor import validate_plan
    from shardplan.plans import load_plan
    from shardplan.sparse2d import plan_2d

    topo, work = load_problem("cpu-2x2")
    p = plan_2d(work, topo, 2, solver="greedy")
    assert p.replicas == 2 and p.topology.world_size == 2
    path = tmp_path / "p2d.json"
    save_plan(p, path)
    again = load_plan(path)
    assert again.replicas == 2 and again == p
    for pipelined in (True, False):
        rep = validate_plan(again, steps=3, pipelined=pipelined)
        assert len(rep.ranks) == 4 and rep.passed, rep.mismatches[:3]


@pytest.mark.slow
def test_two_d_plan_synced_every_other_step_trains_apart_between_syncs():
    """With ``sync_steps=2`` the groups train apart (local SGD) and are averaged after step 1:
    steps 0-1 and then step 2 (not followed by a sync) match a reference doing the same (a
    reference averaged every step differs from step 1 on)."""
    from shardplan.executor import validate_plan
    from shardplan.sparse2d import plan_2d

    topo, work = load_problem("cpu-2x2")
    p = plan_2d(work, topo, 2, sync_steps=2, solver="greedy")
    for pipelined in (True, False):
        rep = validate_plan(p, steps=3, pipelined=pipelined)
        assert len(rep.ranks) == 4 and rep.passed, rep.mismatches[:3]
