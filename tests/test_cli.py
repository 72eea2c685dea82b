"""Every command through typer's CliRunner: success, bad input (exit 1) and infeasible (exit 2),
always one readable line and never a traceback."""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from shardplan.cli.app import EXIT_BAD_INPUT, EXIT_INFEASIBLE, EXIT_OK, app
from shardplan.errors import SpecError
from shardplan.explain import explain_table
from shardplan.sweep import parse_devices, scale_topology
from shardplan.loaders import load_topology
from shardplan.plans import load_plan

runner = CliRunner()

COMMANDS = ("solve", "topologies", "gen-workload", "report", "export", "compare", "sweep",
            "explain")

# Three ~12 GiB tables: no fit on 4 CPU ranks (4 GiB "HBM" + 4 GiB DDR each), a fit on 8.
# ``small`` may only be table-wise, so `explain` has constraint verdicts to show.
BIG3 = """name: big3
batch_size: 64
tables:
  - {name: big_0, num_embeddings: 50000000, embedding_dim: 64, pooling_factor: 1.0}
  - {name: big_1, num_embeddings: 50000000, embedding_dim: 64, pooling_factor: 1.0}
  - {name: big_2, num_embeddings: 50000000, embedding_dim: 64, pooling_factor: 1.0}
  - name: small
    num_embeddings: 1000
    embedding_dim: 16
    pooling_factor: 2.0
    constraints: {sharding_types: [table_wise]}
"""
# One 64 TB table: fits nowhere at any size tried.
HUGE = """name: huge
batch_size: 64
tables:
  - {name: enormous, num_embeddings: 100000000000, embedding_dim: 128, pooling_factor: 1.0}
"""


def run(*args: str) -> object:
    return runner.invoke(app, list(args))


def assert_one_line_error(result, code: int, *needles: str) -> None:
    """The documented exit code, one line of message, no traceback."""
    assert result.exit_code == code, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    text = result.output.strip()
    assert "Traceback" not in text, text
    assert len(text.splitlines()) == 1, text
    assert text.startswith("infeasible:" if code == EXIT_INFEASIBLE else "error:"), text
    for n in needles:
        assert n in text, (n, text)


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("cli")
    (d / "big3.yaml").write_text(BIG3)
    (d / "huge.yaml").write_text(HUGE)
    (d / "broken.json").write_text("{not json")
    plan = d / "plan.json"
    r = run("solve", "cpu-4", "--solver", "greedy", "--out", str(plan))
    assert r.exit_code == EXIT_OK, r.output
    big = d / "big8.json"
    r = run("solve", "cpu-4", "-t", str(d / "big3.yaml"), "--solver", "greedy", "--out", str(big))
    assert r.exit_code == EXIT_INFEASIBLE, r.output  # 4 ranks are too few
    from shardplan.loaders import load_workload
    from shardplan.planner import plan as make_plan
    from shardplan.plans import save_plan

    p8 = make_plan(load_workload(d / "big3.yaml"), scale_topology(load_topology("cpu-4"), 8),
                   solver="greedy")
    save_plan(p8, big)
    return {"dir": d, "plan": plan, "big3": d / "big3.yaml", "huge": d / "huge.yaml",
            "broken": d / "broken.json", "big8": big}


# --- help ------------------------------------------------------------------------------------


def test_help_lists_every_command_and_exit_codes():
    r = run("--help")
    assert r.exit_code == 0, r.output
    for c in COMMANDS:
        assert c in r.output, c
    assert "Exit codes" in r.output and "infeasible" in r.output


@pytest.mark.parametrize("cmd", COMMANDS)
def test_each_command_help_has_examples(cmd):
    r = run(cmd, "--help")
    assert r.exit_code == 0, r.output
    assert "Examples" in r.output and f"shardplan {cmd}" in r.output, r.output


# --- solve -----------------------------------------------------------------------------------


def test_solve_prints_summary_and_writes_plan_and_report(tmp_path):
    out, rep = tmp_path / "p.json", tmp_path / "rep"
    r = run("solve", "cpu-4", "--solver", "greedy", "-o", str(out), "--report", str(rep))
    assert r.exit_code == EXIT_OK, r.output
    p = load_plan(out)
    assert f"makespan {p.summary.makespan_ms:.3f} ms" in r.output
    assert "HBM headroom" in r.output and "DDR headroom" in r.output
    assert "sharding mix" in r.output
    for rk in p.ranks:  # 4 ranks: every one is in the per-rank table
        assert f"{rk.total_ms:.3f}" in r.output
    if p.summary.lower_bound_ms:
        assert "lower bound" in r.output and "of optimal" in r.output
    assert (rep / "report.html").stat().st_size > 10_000


@pytest.mark.parametrize("args, needles", [
    (["solve", "no-such-topology"], ["no-such-topology", "bundled"]),
    (["solve", "cpu-4", "--solver", "nope"], ["unknown solver", "greedy"]),
    (["solve", "cpu-4", "--time-limit", "0"], ["--time-limit"]),
    (["solve", "cpu-4", "--tables", "missing.yaml"], ["missing.yaml", "not found"]),
])
def test_solve_bad_input_exits_1(args, needles):
    assert_one_line_error(run(*args), EXIT_BAD_INPUT, *needles)


def test_solve_infeasible_exits_2(files, tmp_path):
    r = run("solve", "cpu-4", "-t", str(files["huge"]), "--solver", "greedy",
            "-o", str(tmp_path / "x.json"))
    assert_one_line_error(r, EXIT_INFEASIBLE, "enormous")
    assert not (tmp_path / "x.json").exists()


# --- report ----------------------------------------------------------------------------------


def test_report_writes_html_and_pngs(files, tmp_path):
    r = run("report", str(files["plan"]), "--out", str(tmp_path / "r"))
    assert r.exit_code == EXIT_OK, r.output
    html = (tmp_path / "r" / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 4
    for name in ("rank_time", "rank_memory", "placement", "sharding_mix"):
        assert (tmp_path / "r" / f"{name}.png").stat().st_size > 5_000


@pytest.mark.parametrize("which, needles", [
    ("missing", ["not found"]), ("broken", ["not valid JSON"])])
def test_report_bad_plan_exits_1(files, tmp_path, which, needles):
    path = tmp_path / "nope.json" if which == "missing" else files["broken"]
    assert_one_line_error(run("report", str(path), "-o", str(tmp_path / "r")), EXIT_BAD_INPUT,
                          *needles)


def test_report_bad_options_exit_1(files, tmp_path):
    assert_one_line_error(run("report", str(files["plan"]), "--top", "0"), EXIT_BAD_INPUT, "--top")
    f = tmp_path / "afile"
    f.write_text("x")
    assert_one_line_error(run("report", str(files["plan"]), "-o", str(f)), EXIT_BAD_INPUT,
                          "not a folder")


# --- export ----------------------------------------------------------------------------------


def test_export_json_round_trips(files, tmp_path):
    out = tmp_path / "e.json"
    r = run("export", str(files["plan"]), "--format", "json", "-o", str(out))
    assert r.exit_code == EXIT_OK, r.output
    assert out.read_text() == files["plan"].read_text()


def test_export_csv_has_one_row_per_shard(files):
    r = run("export", str(files["plan"]), "--format", "csv")
    assert r.exit_code == EXIT_OK, r.output
    rows = list(csv.DictReader(io.StringIO(r.stdout)))
    p = load_plan(files["plan"])
    assert len(rows) == sum(len(t.shards) for t in p.tables)
    assert {row["table"] for row in rows} == {t.name for t in p.tables}
    assert all(0 <= int(row["rank"]) < p.topology.world_size for row in rows)


def test_export_torchrec_or_clear_error(files):
    from shardplan import torchrec_interop

    r = run("export", str(files["plan"]), "--format", "torchrec")
    available = getattr(torchrec_interop, "torchrec_available", lambda: False)()
    if available and hasattr(torchrec_interop, "export_torchrec"):
        assert r.exit_code == EXIT_OK, r.output
        d = json.loads(r.stdout)
        assert isinstance(d, dict) and d
    else:
        assert_one_line_error(r, EXIT_BAD_INPUT, "TorchRec")


def test_export_torchrec_without_support_exits_1(files, monkeypatch):
    monkeypatch.setitem(sys.modules, "shardplan.torchrec_interop", None)  # import fails
    assert_one_line_error(run("export", str(files["plan"]), "--format", "torchrec"),
                          EXIT_BAD_INPUT, "TorchRec support is not installed")


def test_export_bad_format_exits_1(files):
    assert_one_line_error(run("export", str(files["plan"]), "--format", "xml"), EXIT_BAD_INPUT,
                          "unknown format", "csv")


# --- compare ---------------------------------------------------------------------------------


def test_compare_writes_table_plot_and_plans(tmp_path):
    from shardplan.solvers import SOLVERS

    names = [n for n in ("greedy", "size_greedy") if n in SOLVERS]
    out = tmp_path / "cmp"
    given = [n.replace("_", "-") for n in names]  # the hyphenated spelling works too
    r = run("compare", "cpu-4", "--solvers", ",".join(given), "--time-limit", "20",
            "--out", str(out))
    assert r.exit_code == EXIT_OK, r.output
    for n in names:
        assert n in r.output
        assert load_plan(out / f"plan-{n}.json").summary.solver  # a readable plan
    rows = list(csv.DictReader(io.StringIO((out / "compare.csv").read_text())))
    assert [row["planner"] for row in rows] == names
    spans = [float(row["makespan_ms"]) for row in rows]
    assert min(spans) > 0
    assert (out / "compare.png").stat().st_size > 5_000


@pytest.mark.parametrize("args, needles", [
    (["--solvers", "greedy,nope"], ["unknown solver", "nope"]),
    (["--solvers", ","], ["at least one"]),
    (["--solvers", "greedy,greedy"], ["twice"]),
    (["--with", "gurobi"], ["unknown planner", "torchrec"]),
])
def test_compare_bad_input_exits_1(args, needles):
    assert_one_line_error(run("compare", "cpu-4", *args), EXIT_BAD_INPUT, *needles)


def test_compare_with_torchrec_without_support_exits_1(monkeypatch):
    monkeypatch.setitem(sys.modules, "shardplan.torchrec_interop", None)
    assert_one_line_error(run("compare", "cpu-4", "--solvers", "greedy", "--with", "torchrec"),
                          EXIT_BAD_INPUT, "TorchRec support is not installed")


def test_compare_all_infeasible_exits_2(files):
    r = run("compare", "cpu-4", "-t", str(files["huge"]), "--solvers", "greedy")
    assert r.exit_code == EXIT_INFEASIBLE, r.output
    assert "Traceback" not in r.output
    assert r.stderr.strip().startswith("infeasible:") and len(r.stderr.strip().splitlines()) == 1


# --- sweep -----------------------------------------------------------------------------------


def test_sweep_finds_fewest_devices_and_target(files, tmp_path):
    out = tmp_path / "sw"
    r = run("sweep", "cpu-4", "-t", str(files["big3"]), "--devices", "4,8,16",
            "--solver", "greedy", "--target-ms", "1000", "--out", str(out))
    assert r.exit_code == EXIT_OK, r.output
    assert "fewest devices that fit: 8" in r.output
    assert "fewest devices with makespan <= 1000 ms: 8" in r.output
    rows = list(csv.DictReader(io.StringIO((out / "sweep.csv").read_text())))
    assert [(int(x["devices"]), int(x["hosts"]), x["feasible"]) for x in rows] == [
        (4, 1, "False"), (8, 2, "True"), (16, 4, "True")]
    assert (out / "sweep.png").stat().st_size > 5_000


def test_sweep_unmet_target_is_said(files):
    r = run("sweep", "cpu-4", "-t", str(files["big3"]), "--devices", "8", "--solver", "greedy",
            "--target-ms", "0.0001")
    assert r.exit_code == EXIT_OK, r.output
    assert "no size tried meets" in r.output


@pytest.mark.parametrize("devices, needles", [
    ("6", ["multiples of 4"]), ("abc", ["cannot read"]), ("8-4", ["ranges go up"]),
    ("0", [">= 1"])])
def test_sweep_bad_devices_exit_1(devices, needles):
    assert_one_line_error(run("sweep", "cpu-4", "--devices", devices), EXIT_BAD_INPUT, *needles)


def test_sweep_nothing_fits_exits_2(files):
    r = run("sweep", "cpu-4", "-t", str(files["huge"]), "--devices", "4,8", "--solver", "greedy")
    assert r.exit_code == EXIT_INFEASIBLE, r.output
    assert r.stderr.strip().startswith("infeasible:") and len(r.stderr.strip().splitlines()) == 1


def test_parse_devices_forms():
    assert parse_devices("8,16,32") == [8, 16, 32]
    assert parse_devices("8-64") == [8, 16, 32, 64]
    assert parse_devices("8-32:8") == [8, 16, 24, 32]
    assert parse_devices("16,8,16") == [8, 16]
    with pytest.raises(SpecError):
        parse_devices("1-1000:1")  # too many sizes


def test_scale_topology_keeps_devices_per_host():
    topo = load_topology("dgx-h100-2x8")
    t = scale_topology(topo, 64)
    assert t.world_size == 64 and t.num_hosts == 8
    assert t.host_groups[0].devices_per_host == topo.host_groups[0].devices_per_host
    assert t.host_groups[0].device == topo.host_groups[0].device
    het = load_topology("hetero-a100-h100")
    t2 = scale_topology(het, het.world_size * 2)
    assert [g.hosts for g in t2.host_groups] == [g.hosts * 2 for g in het.host_groups]
    with pytest.raises(SpecError):
        scale_topology(het, het.world_size + 8)


# --- explain ---------------------------------------------------------------------------------


def test_explain_prints_options_and_verdicts(files):
    r = run("explain", str(files["big8"]), "big_0", "--limit", "100")
    assert r.exit_code == EXIT_OK, r.output
    assert "big_0" in r.output and "chosen" in r.output
    assert "memory" in r.output  # table-wise: 12 GiB fits no 8 GiB rank


def test_explain_verdicts_are_consistent(files):
    p = load_plan(files["big8"])
    vs, makespan = explain_table(p, "big_0")
    assert [v.verdict for v in vs].count("chosen") == 1
    assert vs[0].verdict == "chosen"
    assert vs[0].option.sharding_type == p.table("big_0").sharding_type
    assert makespan == pytest.approx(vs[0].makespan_ms, rel=1e-9)
    for v in vs:
        if v.verdict == "higher cost":
            assert v.makespan_ms > makespan
        elif v.verdict == "not better":
            assert v.makespan_ms == pytest.approx(makespan, rel=1e-6)
        elif v.verdict == "lower cost":
            assert v.makespan_ms < makespan and "missed" in v.reason
        elif v.verdict in ("memory", "constraint"):
            assert v.makespan_ms is None and v.reason
    tw = [v for v in vs if v.option.sharding_type.value == "table_wise"]
    assert tw and all(v.verdict == "memory" for v in tw)


def test_explain_shows_constraints(files):
    p = load_plan(files["big8"])
    vs, _ = explain_table(p, "small")
    ruled = [v for v in vs if v.verdict == "constraint"]
    assert ruled and all(v.option.sharding_type.value != "table_wise" for v in ruled)
    assert all("sharding_types allows only table_wise" in v.reason for v in ruled)
    assert all(v.option.sharding_type.value == "table_wise"
               for v in vs if v.verdict != "constraint")


@pytest.mark.parametrize("args, needles", [
    (["TABLE_NOT_THERE"], ["no table", "TABLE_NOT_THERE"]),
    (["big_0", "--limit", "0"], ["--limit"]),
])
def test_explain_bad_input_exits_1(files, args, needles):
    assert_one_line_error(run("explain", str(files["big8"]), *args), EXIT_BAD_INPUT, *needles)


# --- topologies, gen-workload ----------------------------------------------------------------


def test_topologies_list_and_show():
    r = run("topologies")
    assert r.exit_code == EXIT_OK and "dgx-h100-2x8" in r.output and "cpu-4" in r.output
    r = run("topologies", "dgx-h100-2x8")
    assert r.exit_code == EXIT_OK and "H100" in r.output
    assert_one_line_error(run("topologies", "nope"), EXIT_BAD_INPUT, "nope")


def test_gen_workload(tmp_path):
    out = tmp_path / "w.csv"
    r = run("gen-workload", "-n", "25", "--seed", "3", "-o", str(out))
    assert r.exit_code == EXIT_OK, r.output
    assert len(out.read_text().splitlines()) == 26
    assert_one_line_error(run("gen-workload", "-n", "5", "-o", str(tmp_path / "w.txt")),
                          EXIT_BAD_INPUT, ".yaml")


# --- progress --------------------------------------------------------------------------------


def test_planner_reports_progress_to_the_live_display():
    """The real planner reports a bound first, then the best makespan after each phase; the
    display keeps the best and the bound it has seen."""
    from rich.console import Console
    from rich.progress import Progress

    from shardplan.cli.base import ProgressSink
    from shardplan.loaders import load_problem
    from shardplan.planner import plan

    topo, work = load_problem("cpu-4")
    reports = []
    p = plan(work, topo, solver="auto", time_limit_s=5, progress=reports.append)
    phases = [r.phase for r in reports]
    assert phases[0] == "bound" and phases[-1] == "done" and "greedy" in phases
    best = [r.best_ms for r in reports if r.best_ms is not None]
    assert best and min(best) == pytest.approx(p.summary.makespan_ms, rel=1e-6)
    assert reports[-1].bound_ms == pytest.approx(p.summary.lower_bound_ms, rel=1e-6)
    with Progress(console=Console(file=io.StringIO())) as progress:
        task = progress.add_task("solving", total=None, status="")
        sink = ProgressSink(progress, task)
        for r in reports:
            sink(r)
        status = progress.tasks[0].fields["status"]
    assert status.startswith("done, best ") and "bound" in status and "gap" in status
    sink(dataclasses.replace(reports[1], phase="greedy"))  # a phase, then when it finished
    assert progress.tasks[0].fields["status"].startswith("greedy done at ")
