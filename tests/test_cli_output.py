"""Output that reads in a pipe and at 80 columns; `| head` keeps the plan; warnings and
overrides; --profile; no blank lines or cut cells when standard output is not a terminal."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from shardplan.cli.app import EXIT_OK, app
from shardplan.plans import load_plan
from shardplan.types import BatchScope, DType, Mode

ROOT = Path(__file__).resolve().parents[1]
SHARDPLAN = [sys.executable, "-m", "shardplan.cli.app"]
runner = CliRunner()


def run80(*args: str):
    r = runner.invoke(app, list(args), env={"COLUMNS": "80"})
    return r


def assert_fits_80(text: str) -> None:
    for line in text.splitlines():
        if line.startswith(("error:", "infeasible:", "warning:")) or not line.strip():
            continue
        if "─" in line or "  " in line.strip():  # table rows and rules: must not be cut
            assert len(line) <= 80, (len(line), line)
            assert "…" not in line, line


@pytest.fixture(scope="module")
def plans(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("out")
    out = {}
    for topo in ("cpu-4", "hetero-a100-h100"):
        p = d / f"{topo}.json"
        r = run80("solve", topo, "--solver", "greedy", "-o", str(p))
        assert r.exit_code == 0, r.output
        assert_fits_80(r.stdout)
        out[topo] = p
    return out


def test_solve_explain_compare_sweep_fit_80_columns(plans, tmp_path):
    for args in (["explain", str(plans["hetero-a100-h100"]), "t_cat_0", "--limit", "40"],
                 ["explain", str(plans["cpu-4"]), "small_0"],
                 ["compare", "cpu-4", "--solvers", "greedy,size-greedy,random"],
                 ["sweep", "cpu-4", "--devices", "4,8", "--solver", "greedy"],
                 ["topologies"], ["topologies", "hetero-a100-h100"]):
        r = run80(*args)
        assert r.exit_code == 0, r.output
        assert_fits_80(r.stdout)
    r = run80("explain", str(plans["hetero-a100-h100"]), "t_cat_0")
    reasons = [ln for ln in r.stdout.splitlines() if ln.strip()[:3].rstrip(".").isdigit()
               and ". " in ln]
    assert reasons and all(": " in ln for ln in reasons)  # every option's reason, whole


def test_no_blank_lines_when_not_a_terminal(plans):
    r = run80("solve", "cpu-4", "--solver", "greedy", "-o", str(plans["cpu-4"]))
    assert r.exit_code == 0
    assert not r.stdout.startswith("\n") and "\n\n" not in r.stdout, repr(r.stdout[:300])


def test_solve_into_head_keeps_the_plan(tmp_path):
    out = tmp_path / "p.json"
    cmd = " ".join(SHARDPLAN) + f" solve cpu-4 --solver greedy --out {out} | head -n 1"
    r = subprocess.run(["bash", "-c", "set -o pipefail; " + cmd], capture_output=True, text=True,
                       cwd=ROOT, timeout=600)
    assert r.returncode == 0, r.stderr
    assert len(r.stdout.splitlines()) == 1 and "Traceback" not in r.stderr, r.stderr
    assert load_plan(out).summary.num_ranks == 4


def test_summary_names_slowest_rank_and_full_ranks(tmp_path):
    r = run80("solve", "dgx-a100-1x8", "--solver", "greedy", "-o", str(tmp_path / "p.json"))
    assert r.exit_code == 0, r.output
    p = load_plan(tmp_path / "p.json")
    slowest = max(p.ranks, key=lambda x: (x.total_ms, -x.rank))
    assert f"slowest rank {slowest.rank} " in r.stdout and "largest stage is" in r.stdout


def test_nearly_full_ranks_are_warned(tmp_path):
    """Ten 300M-row tables fill 8 A100s to about 99% (greedy)."""
    work = {"name": "tight", "batch_size": 512, "tables": [
        {"name": f"t{i}", "num_embeddings": 300_000_000, "embedding_dim": 128}
        for i in range(10)]}
    w = tmp_path / "w.yaml"
    w.write_text(yaml.safe_dump(work))
    r = run80("solve", "dgx-a100-1x8", "-t", str(w), "--solver", "greedy", "-o",
              str(tmp_path / "p.json"))
    assert r.exit_code == EXIT_OK, r.output
    p = load_plan(tmp_path / "p.json")
    full = [rk.rank for rk in p.ranks if rk.memory_bytes.hbm >= 0.95 * rk.capacity_bytes.hbm]
    assert full, "the case no longer fills the ranks: make it tighter"
    line = next(ln for ln in r.stdout.splitlines() if "nearly full" in ln)
    assert line.startswith("warning:") and f"rank {full[0]} HBM" in line


def test_unknown_device_model_warns_naming_the_profile(tmp_path):
    topo = yaml.safe_load((ROOT / "topologies" / "cpu-2.yaml").read_text())
    topo["host_groups"][0]["device"]["model"] = "TPU-v99"
    topo["workload"] = "small-cpu"  # a bundled workload name
    t = tmp_path / "t.yaml"
    t.write_text(yaml.safe_dump(topo))
    r = run80("solve", str(t), "--solver", "greedy", "-o", str(tmp_path / "p.json"))
    assert r.exit_code == 0, r.output
    warns = [ln for ln in r.stderr.splitlines() if ln.startswith("warning:")]
    assert len(warns) == 1 and "TPU-v99" in warns[0] and "'defaults'" in warns[0], r.stderr


def test_workload_overrides_reach_the_plan(tmp_path):
    csv = tmp_path / "w.csv"
    csv.write_text("name,num_embeddings,embedding_dim,pooling_factor\na,1000,16,2\nb,500,8,1\n")
    out = tmp_path / "p.json"
    r = run80("solve", "cpu-2", "-t", str(csv), "--solver", "greedy", "-o", str(out),
              "--batch-size", "2048", "--batch-scope", "global", "--mode", "inference",
              "--dtype", "fp16")
    assert r.exit_code == 0, r.output
    w = load_plan(out).workload
    assert (w.batch_size, w.batch_scope, w.mode) == (2048, BatchScope.GLOBAL, Mode.INFERENCE)
    assert {t.dtype for t in w.tables} == {DType.FP16}
    r = run80("solve", "cpu-2", "-t", str(csv), "--batch-size", "0", "-o", str(out))
    assert r.exit_code == 1 and "--batch-size" in r.stderr


def test_profile_option_is_used_and_said(tmp_path):
    prof = ROOT / "estimators" / "profiles"
    cpu = next(p for p in prof.glob("*.yaml") if yaml.safe_load(p.read_text())["device_model"]
               == "CPU" and yaml.safe_load(p.read_text())["provenance"]["kind"] == "measured")
    doc = yaml.safe_load(cpu.read_text())
    doc["name"] = "slow-cpu"
    doc["coefficients"]["lookup_bandwidth_efficiency"] = 0.001
    slow = tmp_path / "slow-cpu.yaml"
    slow.write_text(yaml.safe_dump(doc))
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    assert run80("solve", "cpu-2", "--solver", "greedy", "-o", str(a)).exit_code == 0
    r = run80("solve", "cpu-2", "--solver", "greedy", "-o", str(b), "--profile", str(slow))
    assert r.exit_code == 0, r.output
    assert "slow-cpu" in r.stdout
    pa, pb = load_plan(a), load_plan(b)
    assert pb.provenance.cost_model["profiles"]["cpu"]["name"] == "slow-cpu"
    assert pb.summary.makespan_ms > pa.summary.makespan_ms
    r = run80("explain", str(a), "small_0", "--profile", str(slow))
    assert r.exit_code == 0 and "slow-cpu" in r.stdout, r.output
    for cmd in (["compare", "cpu-2", "--solvers", "greedy"],
                ["sweep", "cpu-2", "--devices", "2", "--solver", "greedy"]):
        r = run80(*cmd, "--profile", str(slow))
        assert r.exit_code == 0, r.output
    r = run80("solve", "dgx-h100-2x8", "--profile", str(slow), "-o", str(b))
    assert r.exit_code == 1 and "device model" in r.stderr


@pytest.mark.slow
def test_profile_command_says_which_profile_and_where_measured(plans, tmp_path):
    p2 = tmp_path / "p2.json"
    assert run80("solve", "cpu-2", "--solver", "greedy", "-o", str(p2)).exit_code == 0
    r = run80("profile", str(p2), "--steps", "1", "--warmup", "0", "-o", str(tmp_path / "x.csv"))
    assert r.exit_code == 0, r.output
    assert "estimates from cost model" in r.stdout
    rec = json.loads(p2.read_text())["provenance"]["cost_model"]["profiles"]["cpu"]
    if "--topology cpu-4" in rec["provenance"]["command"]:
        assert "was measured on topology cpu-4" in r.stdout, r.stdout


def test_help_texts_have_no_rst_or_hard_breaks():
    for cmd in ("validate", "profile", "calibrate", "solve", "explain"):
        r = runner.invoke(app, [cmd, "--help"], env={"COLUMNS": "200"})
        assert r.exit_code == 0, r.output
        assert "``" not in r.output, cmd
        assert "Examples" in r.output or "Example" in r.output


def test_python_api_argument_order_is_checked():
    import shardplan

    topo, work = shardplan.load_problem("cpu-2")
    with pytest.raises(shardplan.SpecError, match=r"plan\(work, topo\)"):
        shardplan.plan(*shardplan.load_problem("cpu-2"))
    with pytest.raises(shardplan.SpecError, match="Workload"):
        shardplan.plan("cpu-2", topo)
    assert shardplan.plan(workload=work, topology=topo, solver="greedy").summary.num_ranks == 2


def test_console_script_entry_point_exits_with_codes(tmp_path):
    env = dict(os.environ, COLUMNS="80")
    r = subprocess.run([*SHARDPLAN, "solve", "no-such-topology"], capture_output=True,
                       text=True, cwd=ROOT, env=env, timeout=300)
    assert r.returncode == 1 and r.stderr.startswith("error:") and "Traceback" not in r.stderr


def test_progress_line_at_80_columns_cuts_the_status_not_the_clock():
    """The spinner line keeps its spinner, elapsed time and label at 80 columns; the status
    (phase first) is what the ellipsis cuts."""
    import io

    from rich.console import Console

    from shardplan.cli.base import _progress

    progress = _progress()
    progress.add_task("solving with auto", total=None,
                      status="baselines done at 4 s, best 1.574 ms, bound 0.802 ms, gap 96.2%, "
                             "and more than fits")
    out = Console(width=80, file=io.StringIO(), color_system=None)
    out.print(progress.make_tasks_table(progress.tasks))
    line = out.file.getvalue().splitlines()[0]
    assert len(line) <= 80 and "0:00:00" in line and "solving with auto" in line, line
    assert "baselines done at 4 s" in line and line.rstrip().endswith("…"), line
