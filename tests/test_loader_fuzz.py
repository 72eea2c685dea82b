"""Malformed inputs, generated: topology YAML, workload YAML and CSV, and plan JSON, mutated
the ways a user (or a broken tool) mangles them. Every one must load or fail with one
``SpecError`` (through the CLI: exit 1, one ``error:`` line, no traceback) within a time
limit; a hang, a MemoryError or any other exception fails the test.

Plus one test per class the issue lists (alias bomb, deep nesting, huge host counts, markup in
names, a BOM, a doubled CSV column, NaN and tampered plans), so each stays fixed by name.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import signal
import textwrap
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from shardplan.cli.app import EXIT_BAD_INPUT, app
from shardplan.csv_workload import workload_from_csv
from shardplan.errors import LimitError, PlanError, SpecError
from shardplan.loaders import load_problem, load_workload
from shardplan.planner import plan as make_plan
from shardplan.plans import load_plan, plan_to_dict, save_plan

runner = CliRunner()
TIME_LIMIT_S = 30  # a load that takes longer is a hang (the bugs took 60 s to minutes)
FUZZ = settings(max_examples=60, derandomize=True, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow])
CLI_FUZZ = settings(FUZZ, max_examples=15)

TOPO = yaml.safe_load(textwrap.dedent("""\
    name: tiny
    hbm_reserved_fraction: 0.1
    host_groups:
      - name: g
        hosts: 1
        devices_per_host: 2
        device: {model: CPU, hbm_capacity_gib: 4, hbm_bandwidth_gbytes_per_s: 30}
        host: {ddr_capacity_gib: 8, ddr_bandwidth_gbytes_per_s: 20, pcie_bandwidth_gbytes_per_s: 10}
        intra_host_link: {type: loopback, bandwidth_gbytes_per_s: 2, latency_us: 20}
        network: {type: loopback, nics_per_host: 1, nic_bandwidth_gbits_per_s: 16, latency_us: 20}
    """))
WORK = yaml.safe_load(textwrap.dedent("""\
    name: w
    batch_size: 64
    batch_scope: per_rank
    mode: training
    tables:
      - {name: a, num_embeddings: 1000, embedding_dim: 16, pooling_factor: 2.0}
      - name: b
        num_embeddings: 500
        embedding_dim: 8
        dtype: fp16
        optimizer: sgd
        features: [f1, f2]
        access: {zipf_exponent: 1.1}
        constraints: {sharding_types: [table_wise, row_wise], placements: [hbm], pinned_ranks: [1]}
    colocate: [[a, b]]
    """))
CSV_COLUMNS = ["name", "num_embeddings", "embedding_dim", "pooling_factor", "dtype", "optimizer",
               "features", "zipf_exponent"]


@contextlib.contextmanager
def time_limit(seconds: int) -> Iterator[None]:
    """Fail (TimeoutError) instead of hanging: what the bugs did was run for minutes."""
    def boom(*_: Any) -> None:
        raise TimeoutError(f"took more than {seconds} s: a hang")

    old = signal.signal(signal.SIGALRM, boom)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


# --- mutations -------------------------------------------------------------------------------

JUNK = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-10**30, max_value=10**30),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=12),
    st.sampled_from(["[/x]", "[bold]x", "fp7", "-1", "1e400", "nan", "0x10", "", " ", "表格",
                     "10^12", "1_000", "\x1b[31mx", "a\nb", " pad ", "x" * 5000]),
    st.lists(st.integers(-3, 3), max_size=3), st.dictionaries(st.text(max_size=3), st.integers(),
                                                              max_size=2))


def _paths(v: Any, path: tuple = ()) -> list[tuple]:
    out = [path]
    if isinstance(v, dict):
        for k, x in v.items():
            out += _paths(x, path + (k,))
    elif isinstance(v, list):
        for i, x in enumerate(v):
            out += _paths(x, path + (i,))
    return out


@st.composite
def mutated(draw: Any, base: dict) -> tuple[dict, str]:
    """``base`` with one to three mutations; also says whether the result must be invalid
    (``"bad"``: an unknown key, a required key removed) or may be valid (``"any"``)."""
    doc = copy.deepcopy(base)
    verdict = "any"
    for _ in range(draw(st.integers(1, 3))):
        paths = [p for p in _paths(doc) if p]
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent = doc
        for k in path[:-1]:
            parent = parent[k]
        op = draw(st.sampled_from(["replace", "delete", "unknown", "wrap", "deepen"]))
        key = path[-1]
        if op == "replace":
            parent[key] = draw(JUNK)
        elif op == "delete" and isinstance(parent, dict):
            del parent[key]
        elif op == "unknown" and isinstance(parent, dict):
            parent["zz_" + str(key)] = 1
            verdict = "bad"
        elif op == "wrap":
            parent[key] = [parent[key]]
        elif op == "deepen":
            parent[key] = {"x": {"y": [parent[key]]}}
    return doc, verdict


def _must_load_or_spec_error(fn: Any, *args: Any) -> Any:
    with time_limit(TIME_LIMIT_S):
        try:
            return fn(*args)
        except SpecError as exc:
            assert str(exc), "an error with no message"
            return exc


def _write(tmp: Path, name: str, text: str) -> Path:
    p = tmp / name
    p.write_text(text, encoding="utf-8")
    return p


# --- generated inputs: the loaders ----------------------------------------------------------


@FUZZ
@given(case=mutated(TOPO))
def test_topology_yaml_fuzz(tmp_path, case):
    doc, verdict = case
    p = _write(tmp_path, "t.yaml", yaml.safe_dump(doc, allow_unicode=True))
    out = _must_load_or_spec_error(load_problem, p, None, False)
    if verdict == "bad":
        assert isinstance(out, SpecError), "an unknown key was accepted"


@FUZZ
@given(case=mutated(WORK))
def test_workload_yaml_fuzz(tmp_path, case):
    doc, verdict = case
    p = _write(tmp_path, "w.yaml", yaml.safe_dump(doc, allow_unicode=True))
    out = _must_load_or_spec_error(load_workload, p)
    if verdict == "bad":
        assert isinstance(out, SpecError), "an unknown key was accepted"


@FUZZ
@given(text=st.text(max_size=400), cut=st.integers(0, 400))
def test_yaml_text_garbage(tmp_path, text, cut):
    good = yaml.safe_dump(WORK)
    p = _write(tmp_path, "w.yaml", good[:cut] + text + good[cut:])
    _must_load_or_spec_error(load_workload, p)


CELL = st.one_of(st.sampled_from(["1000", "16", "2.5", "fp16", "sgd", "a;b", "1.1", "", "-3",
                                  "nan", "inf", "1e999", "9" * 5000, '"q"', "x,y", "表"]),
                 st.text(max_size=8))


@FUZZ
@given(columns=st.lists(st.sampled_from(CSV_COLUMNS + ["bogus", ""]), min_size=1, max_size=9),
       rows=st.lists(st.lists(CELL, min_size=0, max_size=10), max_size=4),
       bom=st.booleans(), crlf=st.booleans())
def test_csv_fuzz(columns, rows, bom, crlf):
    buf = io.StringIO()
    nl = "\r\n" if crlf else "\n"
    buf.write(("\ufeff" if bom else "") + ",".join(columns) + nl)
    for r in rows:
        buf.write(",".join(r) + nl)
    out = _must_load_or_spec_error(workload_from_csv, buf.getvalue(), "w.csv")
    if len(set(columns)) != len(columns):
        assert isinstance(out, SpecError) and "twice" in str(out) or "no name" in str(out)


# --- generated inputs: plans -----------------------------------------------------------------


@pytest.fixture(scope="module")
def plan_doc(tmp_path_factory) -> dict:
    topo, work = load_problem("cpu-2")
    p = make_plan(work, topo, solver="greedy")
    return plan_to_dict(p)


def _plan_case(plan_doc: dict, data: Any) -> tuple[dict, str]:
    small = copy.deepcopy(plan_doc)
    # mutate the parts a hand edit touches: summary, tables, ranks, topology
    part = data.draw(st.sampled_from(["summary", "tables", "ranks", "topology", "provenance"]))
    doc, verdict = data.draw(mutated({part: small[part]}))
    if part in doc:
        small[part] = doc[part]
    else:
        del small[part]
        verdict = "bad"
    return small, verdict


@FUZZ
@given(data=st.data())
def test_plan_json_fuzz(tmp_path, plan_doc, data):
    doc, verdict = _plan_case(plan_doc, data)
    text = json.dumps(doc, allow_nan=True)
    p = _write(tmp_path, "p.json", text)
    out = _must_load_or_spec_error(load_plan, p)
    if verdict == "bad":
        assert isinstance(out, PlanError), "a tampered plan was accepted"
    if not isinstance(out, SpecError):  # what loads must be what was solved
        got = plan_to_dict(out)
        for part in ("tables", "ranks", "workload", "topology"):
            assert got[part] == plan_doc[part], f"a changed {part} loaded without complaint"
        assert got["summary"]["makespan_ms"] == plan_doc["summary"]["makespan_ms"]


# --- through the command line: exit 1, one line, no traceback --------------------------------


def assert_clean(result: Any, ok_codes: tuple[int, ...] = (0, 1, 2)) -> None:
    assert result.exit_code in ok_codes, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), \
        repr(result.exception)
    assert "Traceback" not in result.output
    if result.exit_code:
        err = result.stderr.strip().splitlines()
        errors = [ln for ln in err if ln.startswith(("error:", "infeasible:"))]
        assert len(errors) == 1, result.stderr


@CLI_FUZZ
@given(case=mutated(TOPO))
def test_cli_topology_fuzz(tmp_path, case):
    doc, verdict = case
    p = _write(tmp_path, "t.yaml", yaml.safe_dump(doc, allow_unicode=True))
    with time_limit(TIME_LIMIT_S):
        r = runner.invoke(app, ["topologies", str(p)])
    assert_clean(r, (EXIT_BAD_INPUT,) if verdict == "bad" else (0, 1))


@CLI_FUZZ
@given(case=mutated(WORK))
def test_cli_workload_fuzz(tmp_path, case):
    doc, verdict = case
    p = _write(tmp_path, "w.yaml", yaml.safe_dump(doc, allow_unicode=True))
    with time_limit(TIME_LIMIT_S):
        r = runner.invoke(app, ["solve", "cpu-2", "-t", str(p), "--solver", "greedy",
                                "--time-limit", "5", "-o", str(tmp_path / "p.json")])
    assert_clean(r, (EXIT_BAD_INPUT,) if verdict == "bad" else (0, 1, 2))


@CLI_FUZZ
@given(columns=st.lists(st.sampled_from(CSV_COLUMNS + ["bogus", ""]), min_size=1, max_size=9),
       rows=st.lists(st.lists(CELL, min_size=0, max_size=10), max_size=4), bom=st.booleans())
def test_cli_csv_fuzz(tmp_path, columns, rows, bom):
    text = ("\ufeff" if bom else "") + ",".join(columns) + "\n" + "".join(
        ",".join(r) + "\n" for r in rows)
    p = tmp_path / "w.csv"
    p.write_text(text, encoding="utf-8")
    with time_limit(TIME_LIMIT_S):
        r = runner.invoke(app, ["solve", "cpu-2", "-t", str(p), "--solver", "greedy",
                                "--time-limit", "5", "-o", str(tmp_path / "p.json")])
    assert_clean(r, (0, 1, 2))
    if len(set(columns)) != len(columns) or "bogus" in columns:
        assert r.exit_code == EXIT_BAD_INPUT, r.output


@CLI_FUZZ
@given(data=st.data())
def test_cli_plan_fuzz(tmp_path, plan_doc, data):
    doc, verdict = _plan_case(plan_doc, data)
    p = _write(tmp_path, "p.json", json.dumps(doc, allow_nan=True))
    with time_limit(TIME_LIMIT_S):
        r = runner.invoke(app, ["export", str(p), "--format", "csv"])
    assert_clean(r, (EXIT_BAD_INPUT,) if verdict == "bad" else (0, 1))


# --- one test per class of the issue ---------------------------------------------------------


def _bomb(levels: int = 9) -> str:
    text = 'l0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]\n'
    for i in range(1, levels):
        text += f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 9) + "]\n"
    return text + f"name: bomb\nbatch_size: 1\ntables: *l{levels - 1}\n"


@pytest.mark.parametrize("text, needle", [
    (_bomb(), "max_yaml_nodes"),
    ("name: " + "[" * 50_000 + "]" * 50_000 + "\n", "max_depth"),
    ("a: " + "{b: " * 5_000 + "1" + "}" * 5_000 + "\n", "max_depth"),
    ("x: &a 1\n" + "".join(f"k{i}: *a\n" for i in range(10_001)), "max_yaml_aliases"),
])
def test_resource_bombs_stop_with_a_named_limit(tmp_path, text, needle):
    p = _write(tmp_path, "w.yaml", text)
    with time_limit(TIME_LIMIT_S), pytest.raises(LimitError, match=needle):
        load_workload(p)


@pytest.mark.parametrize("hosts, devices, needle", [
    (10**12, 8, "max_hosts"), (100_000, 8, "max_hosts"), (2_048, 16, "max_devices"),
    (1, 10**9, "max_devices")])
def test_huge_topologies_stop_at_once(tmp_path, hosts, devices, needle):
    doc = copy.deepcopy(TOPO)
    doc["host_groups"][0].update(hosts=hosts, devices_per_host=devices)
    p = _write(tmp_path, "t.yaml", yaml.safe_dump(doc))
    with time_limit(5), pytest.raises(LimitError, match=needle) as ei:
        load_problem(p, need_workload=False)
    assert ei.value.line is not None and str(p) in str(ei.value)


def test_deep_json_plan_is_a_limit_not_a_recursion_error(tmp_path):
    p = _write(tmp_path, "p.json", "[" * 100_000 + "]" * 100_000)
    with time_limit(TIME_LIMIT_S), pytest.raises(SpecError):
        load_plan(p)


def test_csv_bom_and_doubled_column(tmp_path):
    w = workload_from_csv("\ufeffname,num_embeddings,embedding_dim,pooling_factor\na,10,4,1\n")
    assert w.tables[0].name == "a"
    p = _write(tmp_path, "w.csv", "\ufeffname,num_embeddings,embedding_dim,pooling_factor\na,10,4,1\n")
    assert load_workload(p).tables[0].num_embeddings == 10
    with pytest.raises(SpecError, match="'embedding_dim' appears twice"):
        workload_from_csv("name,num_embeddings,embedding_dim,pooling_factor,embedding_dim\n"
                          "a,10,4,1,8\n", "w.csv")


def test_messages_name_file_line_and_every_allowed_key(tmp_path):
    doc = copy.deepcopy(WORK)
    doc["tables"][0]["acess"] = 1
    p = _write(tmp_path, "w.yaml", yaml.safe_dump(doc, sort_keys=False))
    with pytest.raises(SpecError) as ei:
        load_workload(p)
    msg = str(ei.value)
    assert "did you mean 'access'" in msg and ei.value.line is not None
    for key in ("access", "constraints", "features", "optimizer"):
        assert key in msg, (key, msg)
    doc = copy.deepcopy(WORK)
    doc["colocate"] = [["a", "zzz"]]
    p = _write(tmp_path, "w.yaml", yaml.safe_dump(doc, sort_keys=False))
    with pytest.raises(SpecError, match="'zzz' names no table") as ei:
        load_workload(p)
    assert ei.value.line == yaml.safe_dump(doc, sort_keys=False).splitlines().index(
        "  - zzz") + 1  # the line of the name itself, not line 1
    topo = _write(tmp_path, "t.yaml", yaml.safe_dump(TOPO))
    doc = copy.deepcopy(WORK)
    doc["tables"][1]["constraints"]["pinned_ranks"] = [7]
    doc.pop("colocate")
    p = _write(tmp_path, "w.yaml", yaml.safe_dump(doc, sort_keys=False))
    with pytest.raises(SpecError, match="pinned to rank") as ei:
        load_problem(topo, p)
    assert str(p) in str(ei.value) and ei.value.line is not None


@pytest.mark.parametrize("name", ["[/x]", "[bold red]boom[/]", "a[/]b"])
def test_markup_in_user_strings_prints_as_itself(tmp_path, name):
    doc = copy.deepcopy(WORK)
    doc["tables"][0]["name"] = name
    doc["tables"][0]["embedding_dim"] = -1
    doc.pop("colocate")
    p = _write(tmp_path, f"w{name.replace('/', '_')}.yaml", yaml.safe_dump(doc))
    r = runner.invoke(app, ["solve", "cpu-2", "-t", str(p), "-o", str(tmp_path / "p.json")])
    assert_clean(r, (EXIT_BAD_INPUT,))
    doc["tables"][0]["embedding_dim"] = 16
    p.write_text(yaml.safe_dump(doc))
    r = runner.invoke(app, ["solve", "cpu-2", "-t", str(p), "--solver", "greedy", "-o",
                            str(tmp_path / "p.json")])
    assert_clean(r, (0,))
    r = runner.invoke(app, ["explain", str(tmp_path / "p.json"), name])
    assert_clean(r, (0,))
    assert name in r.stdout


def _tamper(plan_doc: dict, edit: Any) -> dict:
    d = copy.deepcopy(plan_doc)
    edit(d)
    return d


@pytest.mark.parametrize("edit, needle", [
    (lambda d: d["summary"].update(makespan_ms=float("nan")), "NaN"),
    (lambda d: d.update(ranks=d["ranks"][:1]), "lists 1 ranks"),
    (lambda d: d["topology"]["host_groups"][0]["device"].update(hbm_capacity_bytes=1000),
     "does not fit its topology"),
    (lambda d: d["summary"].update(makespan_ms=0.001), "lower bound"),
    (lambda d: d["summary"].update(makespan_ms=-5), ">= 0"),
    (lambda d: d["summary"].update(lower_bound_ms=d["summary"]["makespan_ms"] * 2),
     "negative gap"),
    (lambda d: d["summary"].update(status="optimal!!"), "not a solve status"),
    (lambda d: d["summary"].update(makespan_ms=d["summary"]["makespan_ms"] * 1.5,
                                   lower_bound_ms=None), "summary says makespan"),
    (lambda d: d["ranks"][0]["estimated_ms"].update(total=0.5), "records total"),
    (lambda d: d["ranks"][0]["capacity_bytes"].update(hbm=10**15), "capacity"),
    (lambda d: d["workload"].update(batch_size=d["workload"]["batch_size"] * 2), "edited"),
])
def test_tampered_plans_are_refused_on_load(tmp_path, plan_doc, edit, needle):
    p = _write(tmp_path, "p.json", json.dumps(_tamper(plan_doc, edit), allow_nan=True))
    with pytest.raises(PlanError, match=needle) as ei:
        load_plan(p)
    assert str(p) in str(ei.value)
    for cmd in (["report", str(p), "-o", str(tmp_path / "r")],
                ["explain", str(p), plan_doc["tables"][0]["name"]],
                ["export", str(p)]):
        assert_clean(runner.invoke(app, cmd), (EXIT_BAD_INPUT,))


def test_untampered_plan_round_trips(tmp_path, plan_doc):
    p = _write(tmp_path, "p.json", json.dumps(plan_doc))
    q = load_plan(p)
    save_plan(q, tmp_path / "q.json")
    assert json.loads((tmp_path / "q.json").read_text()) == plan_doc
