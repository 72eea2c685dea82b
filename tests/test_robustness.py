"""Robustness classes of issue 13 beyond the loader fuzz test, one test per class:

* names that would break a table, a CSV or the terminal (control characters, escape
  sequences, spaces at the ends, a million characters) are refused where they are read;
* a plan's status and replicas are checked like the rest of its summary;
* ``plan()`` and the loaders name an argument of the wrong type or range instead of failing
  deep inside (or planning with a negative time limit);
* standard output holds only shardplan's output (no solver banner from native code);
* widths FBGEMM cannot run are decided before anything runs (torch kernels, said);
* the libyaml-based reader gives what PyYAML's own gives (values and lines).
"""

from __future__ import annotations

import copy
import json
import math
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from shardplan.cli.app import EXIT_BAD_INPUT, app
from shardplan.errors import PlanError, ShardplanWarning, SpecError
from shardplan.loaders import load_problem, load_topology, load_workload
from shardplan.parsing import MAX_NAME_CHARS, compose_yaml
from shardplan.planner import plan as make_plan
from shardplan.plans import fbgemm_unsupported, kernel_backend, load_plan, plan_to_dict
from shardplan.types import TableSpec, Workload

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()

WORK = {"name": "w", "batch_size": 64, "tables": [
    {"name": "a", "num_embeddings": 1000, "embedding_dim": 16, "pooling_factor": 2.0},
    {"name": "b", "num_embeddings": 500, "embedding_dim": 8, "features": ["f1", "f2"]}]}

BAD_NAMES = [
    ("\x1b[31mred", "U+001B"),          # a terminal escape sequence
    ("two\nlines", "U+000A"),           # breaks tables and CSV rows
    ("tab\there", "U+0009"),
    ("nul\x00", "U+0000"),
    ("sep\u2028x", "U+2028"),           # a Unicode line separator
    (" padded", "spaces at its ends"),
    ("padded ", "spaces at its ends"),
    ("x" * (MAX_NAME_CHARS + 1), "MAX_NAME_CHARS"),
    ("y" * 1_000_000, "MAX_NAME_CHARS"),
]


def _write(tmp: Path, name: str, doc: dict) -> Path:
    p = tmp / name
    p.write_text(yaml.safe_dump(doc, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return p


def _one_error_line(result) -> str:
    assert result.exit_code == EXIT_BAD_INPUT, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    lines = [ln for ln in result.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in result.output, result.stderr
    return lines[0]


@pytest.mark.parametrize("where", ["table", "feature", "workload"])
@pytest.mark.parametrize("name, needle", BAD_NAMES)
def test_unprintable_or_huge_names_are_refused_in_workloads(tmp_path, where, name, needle):
    doc = copy.deepcopy(WORK)
    if where == "table":
        doc["tables"][0]["name"] = name
        path = "tables[0].name"
    elif where == "feature":
        doc["tables"][1]["features"][1] = name
        path = "tables[1].features[1]"
    else:
        doc["name"] = name
        path = "name"
    p = _write(tmp_path, "w.yaml", doc)
    with pytest.raises(SpecError, match=needle.replace("+", r"\+")) as ei:
        load_workload(p)
    assert ei.value.key_path == path and ei.value.line is not None
    assert len(str(ei.value)) < 400  # a million-character name is not echoed back
    line = _one_error_line(runner.invoke(app, ["solve", "cpu-2", "-t", str(p), "-o",
                                                str(tmp_path / "p.json")]))
    assert "\x1b" not in line and str(p) in line


@pytest.mark.parametrize("field", ["name", "group", "model"])
@pytest.mark.parametrize("name, needle", BAD_NAMES[:3] + BAD_NAMES[5:8])
def test_unprintable_or_huge_names_are_refused_in_topologies(tmp_path, field, name, needle):
    doc = yaml.safe_load((ROOT / "topologies" / "cpu-2.yaml").read_text())
    doc.pop("workload")
    if field == "name":
        doc["name"] = name
    elif field == "group":
        doc["host_groups"][0]["name"] = name
    else:
        doc["host_groups"][0]["device"]["model"] = name
    p = _write(tmp_path, "t.yaml", doc)
    with pytest.raises(SpecError, match=needle.replace("+", r"\+")):
        load_topology(p)
    _one_error_line(runner.invoke(app, ["topologies", str(p)]))


def test_csv_names_are_checked_like_yaml_names(tmp_path):
    p = tmp_path / "w.csv"
    p.write_text("name,num_embeddings,embedding_dim,pooling_factor,features\n"
                 "ok,10,4,1,f\x1bx\n", encoding="utf-8")
    with pytest.raises(SpecError, match=r"U\+001B"):
        load_workload(p)
    p.write_text("name,num_embeddings,embedding_dim,pooling_factor\n"
                 + "z" * (MAX_NAME_CHARS + 1) + ",10,4,1\n", encoding="utf-8")
    with pytest.raises(SpecError, match="MAX_NAME_CHARS"):
        load_workload(p)


def test_printable_names_of_any_script_still_load(tmp_path):
    doc = copy.deepcopy(WORK)
    doc["tables"][0]["name"] = "表格 [/x] <b>&amp;"
    doc["tables"][1]["features"] = ["特征", "f:2"]
    work = load_workload(_write(tmp_path, "w.yaml", doc))
    assert work.tables[0].name == "表格 [/x] <b>&amp;"


# --- plans: status and replicas are part of the summary that must agree ----------------------


@pytest.fixture(scope="module")
def plan_doc() -> dict:
    topo, work = load_problem("cpu-2")
    return plan_to_dict(make_plan(work, topo, solver="greedy"))


@pytest.mark.parametrize("edit, needle", [
    (lambda d: d["summary"].update(status="infeasible"), "not a solve status"),
    (lambda d: d["summary"].update(status="time_limit"), "not a solve status"),
    (lambda d: d["summary"].update(status="Optimal"), "not a solve status"),
    (lambda d: d["summary"].update(status="optimal", lower_bound_ms=None), "no lower bound"),
    (lambda d: d["summary"].update(status="optimal",
                                   lower_bound_ms=d["summary"]["makespan_ms"] / 2), "gap of 50"),
    (lambda d: d.update(replicas=2), "replicas=2"),
    (lambda d: d.update(replicas=3), "replicas=3"),
])
def test_plan_status_and_replicas_must_agree(tmp_path, plan_doc, edit, needle):
    d = copy.deepcopy(plan_doc)
    edit(d)
    p = tmp_path / "p.json"
    p.write_text(json.dumps(d))
    with pytest.raises(PlanError, match=needle):
        load_plan(p)
    _one_error_line(runner.invoke(app, ["export", str(p)]))


def test_an_optimal_plan_within_its_gap_loads(tmp_path, plan_doc):
    d = copy.deepcopy(plan_doc)
    d["summary"]["status"] = "optimal"  # a bound that proves it within 1%
    d["summary"]["lower_bound_ms"] = round(0.995 * d["summary"]["makespan_ms"], 6)
    p = tmp_path / "p.json"
    p.write_text(json.dumps(d))
    assert load_plan(p).summary.status == "optimal"


# --- arguments of the Python API --------------------------------------------------------------


@pytest.mark.parametrize("kwargs, needle", [
    ({"time_limit_s": -1}, "time_limit_s"), ({"time_limit_s": 0}, "time_limit_s"),
    ({"time_limit_s": math.nan}, "time_limit_s"), ({"time_limit_s": math.inf}, "time_limit_s"),
    ({"time_limit_s": "10"}, "time_limit_s"), ({"time_limit_s": True}, "time_limit_s"),
    ({"threads": 0}, "threads"), ({"threads": 1.5}, "threads"), ({"seed": -1}, "seed"),
    ({"seed": "1"}, "seed"), ({"bound_lp_max_vars": -5}, "bound_lp_max_vars"),
    ({"bound_lp_max_nonzeros": 1.5}, "bound_lp_max_nonzeros"),
])
def test_plan_checks_its_arguments(kwargs, needle):
    topo, work = load_problem("cpu-2")
    with pytest.raises(SpecError, match=needle) as ei:
        make_plan(work, topo, solver="greedy", **kwargs)
    assert ei.value.key_path == needle


def test_planner_plan_checks_argument_order_and_types():
    topo, work = load_problem("cpu-2")
    with pytest.raises(SpecError, match=r"plan\(work, topo\)"):
        make_plan(topo, work)
    with pytest.raises(SpecError, match="needs topology= a Topology"):
        make_plan(work, "cpu-2")


@pytest.mark.parametrize("call, needle", [
    (lambda t, w: load_problem(t), "not a Topology object"),
    (lambda t, w: load_problem("cpu-2", w), "not a Workload object"),
    (lambda t, w: load_problem("cpu-2", 5), "got int"),
    (lambda t, w: load_workload(None), "got NoneType"),
    (lambda t, w: load_topology(""), "a str or Path"),
])
def test_loaders_name_a_wrong_argument(call, needle):
    topo, work = load_problem("cpu-2")
    with pytest.raises(SpecError, match=needle):
        call(topo, work)


# --- standard output holds only shardplan's output --------------------------------------------


def test_native_output_goes_to_stderr_python_output_to_stdout():
    """What native code writes to descriptor 1, raw or through C's buffered stdio, ends on
    standard error; Python's own prints stay on standard output, in order."""
    code = ("import ctypes, os\n"
            "from shardplan.cli.app import native_stdout_to_stderr\n"
            "with native_stdout_to_stderr():\n"
            "    print('python 1')\n"
            "    os.write(1, b'raw native\\n')\n"
            "    ctypes.CDLL(None).printf(b'buffered native\\n')\n"
            "    print('python 2')\n"
            "print('python 3')\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout == "python 1\npython 2\npython 3\n", r.stdout
    assert "raw native" in r.stderr and "buffered native" in r.stderr, r.stderr


def test_native_solver_output_stays_off_stdout(tmp_path):
    """HiGHS prints a banner from C++ to descriptor 1 the first time it starts; piped into a
    file or another program, standard output must still be only the table (or CSV)."""
    out = tmp_path / "p.json"
    r = subprocess.run([sys.executable, "-m", "shardplan.cli.app", "solve", "cpu-2", "--solver",
                        "ilp", "--out", str(out)], capture_output=True, text=True, cwd=tmp_path,
                       timeout=600, env={"COLUMNS": "80", "PATH": "/usr/bin:/bin"})
    assert r.returncode == 0, r.stderr
    assert "HiGHS" not in r.stdout and "THIRD_PARTY" not in r.stdout, r.stdout[:400]
    assert r.stdout.lstrip().startswith("small-cpu on cpu-2"), r.stdout[:200]
    r = subprocess.run([sys.executable, "-m", "shardplan.cli.app", "export", str(out),
                        "--format", "csv"], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0 and r.stdout.startswith("table,shard,rank"), r.stdout[:200]


# --- widths FBGEMM cannot run ------------------------------------------------------------------


def _odd_plan():
    topo = load_topology("cpu-2")
    work = Workload(name="odd", batch_size=8, tables=(
        TableSpec(name="a", num_embeddings=100, embedding_dim=33, pooling_factor=1.0),
        TableSpec(name="b", num_embeddings=100, embedding_dim=16, pooling_factor=1.0)))
    return make_plan(work, topo, solver="greedy")


def test_kernel_backend_is_decided_before_running():
    p = _odd_plan()
    assert set(fbgemm_unsupported(p)) == {"a"}
    with pytest.warns(ShardplanWarning, match=r"a \(33 columns\).*torch kernels"):
        assert kernel_backend(p, "auto") == "torch"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert kernel_backend(p, "torch") == "torch"
    with pytest.raises(SpecError, match="multiples of 4"):
        kernel_backend(p, "fbgemm")
    topo, work = load_problem("cpu-2")
    even = make_plan(work, topo, solver="greedy")
    assert fbgemm_unsupported(even) == {} and kernel_backend(even, "auto") == "auto"


def test_solve_says_which_kernels_will_run(tmp_path):
    doc = copy.deepcopy(WORK)
    doc["tables"][0]["embedding_dim"] = 33
    p = _write(tmp_path, "w.yaml", doc)
    r = runner.invoke(app, ["solve", "cpu-2", "-t", str(p), "--solver", "greedy", "-o",
                            str(tmp_path / "p.json")])
    assert r.exit_code == 0, r.output
    assert "warning:" in r.stderr and "a (33 columns)" in r.stderr and "torch" in r.stderr
    r = runner.invoke(app, ["validate", str(tmp_path / "p.json"), "--backend", "fbgemm"])
    assert "multiples of 4" in _one_error_line(r)


@pytest.mark.slow
def test_validate_runs_widths_fbgemm_cannot_with_torch(tmp_path):
    doc = copy.deepcopy(WORK)
    doc["tables"][0]["embedding_dim"] = 33
    doc["tables"][1]["embedding_dim"] = 6
    p = _write(tmp_path, "w.yaml", doc)
    assert runner.invoke(app, ["solve", "cpu-2", "-t", str(p), "--solver", "greedy", "-o",
                               str(tmp_path / "p.json")]).exit_code == 0
    r = runner.invoke(app, ["validate", str(tmp_path / "p.json")])
    assert r.exit_code == 0, r.output
    assert "kernels torch" in r.stdout and "ok:" in r.stdout
    assert "torch kernels" in r.stderr


# --- the YAML reader ---------------------------------------------------------------------------


def _pyyaml_lines(node: yaml.Node, path: str = "", out: dict | None = None) -> dict:
    """{key path: 1-based line of its value} from PyYAML's own (pure Python) composer."""
    out = {} if out is None else out
    out.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            _pyyaml_lines(v, f"{path}.{k.value}" if path else k.value, out)
    elif isinstance(node, yaml.SequenceNode):
        for i, v in enumerate(node.value):
            _pyyaml_lines(v, f"{path}[{i}]", out)
    return out


@pytest.mark.parametrize("path", sorted((ROOT / "topologies").rglob("*.yaml"))
                         + sorted((ROOT / "examples").glob("*.yaml")), ids=lambda p: p.name)
def test_yaml_reader_matches_pyyaml(path):
    """Same values and the same line for every key path as PyYAML's pure-Python reader."""
    text = path.read_text(encoding="utf-8")
    value, lines = compose_yaml(text, str(path))
    assert value == yaml.safe_load(text)
    assert lines == _pyyaml_lines(yaml.compose(text, Loader=yaml.SafeLoader))


# --- command-line values that would run for days or spawn a process per rank ------------------


@pytest.mark.parametrize("args, needle", [
    (["sweep", "cpu-2", "--devices", "2-100000000", "--solver", "greedy"], "max_devices"),
    (["sweep", "cpu-2", "--devices", "16384", "--solver", "greedy"], "max_hosts"),
    (["gen-workload", "--tables", "5", "--seed", "-1", "-o", "{tmp}/g.yaml"], "seed"),
    (["validate", "{plan}", "--steps", "1000000000000"], "more than 10,000"),
    (["profile", "{plan}", "--steps", "100000000"], "more than 10,000"),
    (["profile", "{plan}", "--warmup", "100000000"], "more than 10,000"),
    (["compare", "cpu-2", "--solvers", "greedy", "--measure", "1000000000"], "more than 10,000"),
    (["calibrate", "--out", "{tmp}/c.yaml", "--plans", "1000000000"], "more than 1,000"),
    (["calibrate", "--out", "{tmp}/c.yaml", "--topology", "h100-128x8"], "256 processes"),
    (["validate", "{plan}", "--world-size", "1000000", "--resolve"], "256 processes"),
])
def test_runaway_command_line_values_stop_at_once(tmp_path, plan_doc, args, needle):
    p = tmp_path / "p.json"
    p.write_text(json.dumps(plan_doc))
    args = [a.format(tmp=tmp_path, plan=p) for a in args]
    assert needle in _one_error_line(runner.invoke(app, args))


def test_scale_topology_and_generator_check_their_arguments():
    from shardplan.errors import LimitError
    from shardplan.generate import synthetic_workload
    from shardplan.sweep import parse_devices, scale_topology

    topo = load_topology("cpu-2")
    with pytest.raises(LimitError, match="max_devices"):
        scale_topology(topo, 10**8)
    with pytest.raises(SpecError, match="integer >= 1"):
        scale_topology(topo, 0)
    with pytest.raises(LimitError, match="max_devices"):
        parse_devices("8-1000000")
    assert parse_devices("8-16384")[-1] == 16384
    for kwargs in ({"seed": -1}, {"batch_size": 0}, {"seed": 1.5}):
        with pytest.raises(SpecError):
            synthetic_workload(3, **kwargs)
    with pytest.raises(SpecError):
        synthetic_workload(True)


# --- explain: a lower makespan is not "not better" --------------------------------------------


def test_explain_names_lower_cost_options_and_ties_apart():
    from shardplan.explain import TIE_RTOL, Verdict, explain_table

    topo, work = load_problem("cpu-4")
    p = make_plan(work, topo, solver="size_greedy")  # a baseline: it misses better options
    seen = set()
    for t in p.tables:
        vs, makespan = explain_table(p, t.name)
        for v in vs:
            seen.add(v.verdict)
            if v.verdict is Verdict.LOWER_COST:
                assert v.makespan_ms < makespan * (1 - TIE_RTOL) and "missed" in v.reason
                assert "-" in v.reason.split("makespan")[1][:4]
            elif v.verdict is Verdict.NOT_BETTER:
                assert v.makespan_ms == pytest.approx(makespan, rel=2 * TIE_RTOL)
            elif v.verdict is Verdict.HIGHER_COST:
                assert v.makespan_ms > makespan * (1 + TIE_RTOL) and "+0.00%" not in v.reason
    assert Verdict.LOWER_COST in seen


def test_a_key_given_twice_in_a_plan_is_refused(tmp_path, plan_doc):
    text = json.dumps(plan_doc, indent=1)
    doubled = text.replace('"makespan_ms":', '"makespan_ms": 0.001, "makespan_ms":', 1)
    p = tmp_path / "p.json"
    p.write_text(doubled)
    with pytest.raises(PlanError, match="'makespan_ms' appears twice"):
        load_plan(p)


def test_rows_beyond_int64_ids_are_refused_at_load(tmp_path):
    doc = copy.deepcopy(WORK)
    for rows in (2**63, 10**30):
        doc["tables"][0]["num_embeddings"] = rows
        with pytest.raises(SpecError, match="int64") as ei:
            load_workload(_write(tmp_path, "w.yaml", doc))
        assert ei.value.key_path == "tables[0].num_embeddings"
    doc["tables"][0]["num_embeddings"] = 2**63 - 1  # loads; no cluster holds it (exit 2)
    assert load_workload(_write(tmp_path, "w.yaml", doc)).tables[0].num_embeddings == 2**63 - 1


def test_figures_shorten_long_names_and_keep_their_layout():
    from shardplan.figures import MAX_LABEL_CHARS, placement_figure, png_bytes, short_name

    assert short_name("abc") == "abc"
    s = short_name("n" * 20 + "x" * 960 + "end")
    assert len(s) == MAX_LABEL_CHARS and s.startswith("n" * 20) and s.endswith("end")
    topo = load_topology("cpu-2")
    work = Workload(name="w" * 1000, batch_size=8, tables=(
        TableSpec(name="a" * 1000, num_embeddings=1000, embedding_dim=16),
        TableSpec(name="b" * 999 + "!", num_embeddings=100, embedding_dim=16)))
    p = make_plan(work, topo, solver="greedy")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # matplotlib: "constrained_layout not applied ..."
        fig = placement_figure(p)
        png_bytes(fig)
    labels = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    assert labels and all(len(lb) < MAX_LABEL_CHARS + 20 for lb in labels), labels


@pytest.mark.parametrize("where", ["workload description", "workload source",
                                   "topology description", "plan solver"])
def test_escape_sequences_in_free_text_are_refused(tmp_path, plan_doc, where):
    if where == "plan solver":
        d = copy.deepcopy(plan_doc)
        d["summary"]["solver"] = d["provenance"]["solver"] = "greedy\x1b[2J"
        p = tmp_path / "p.json"
        p.write_text(json.dumps(d))
        with pytest.raises(PlanError, match=r"U\+001B"):
            load_plan(p)
        return
    if where.startswith("workload"):
        doc = copy.deepcopy(WORK)
        doc[where.split()[1]] = "line one\nline two\x1b[2J"
        p = _write(tmp_path, "w.yaml", doc)
        with pytest.raises(SpecError, match=r"U\+001B"):
            load_workload(p)
        doc[where.split()[1]] = "line one\nline two\twith a tab"  # newlines and tabs are fine
        load_workload(_write(tmp_path, "w.yaml", doc))
        return
    doc = yaml.safe_load((ROOT / "topologies" / "cpu-2.yaml").read_text())
    doc["description"] = "\x1b]0;title\x07"
    with pytest.raises(SpecError, match=r"U\+001B"):
        load_topology(_write(tmp_path, "t.yaml", doc))


def test_plan_takes_numpy_scalars_and_records_plain_numbers():
    import numpy as np

    from shardplan.plans import plan_to_json

    topo, work = load_problem("cpu-2")
    p = make_plan(work, topo, solver="greedy", seed=np.int64(3), threads=np.int32(1),
                  time_limit_s=np.float32(5))
    assert json.loads(plan_to_json(p))["provenance"]["solver_options"]["seed"] == 3
