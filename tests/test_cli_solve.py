"""`shardplan solve` end to end: summary, plan.json, exit codes 0 / 1 / 2, no tracebacks."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
from typer.testing import CliRunner

from shardplan.cli.app import app

runner = CliRunner()

TOPO = textwrap.dedent("""\
    name: tiny
    host_groups:
      - name: g
        hosts: 1
        devices_per_host: 2
        device: {model: L4-24GB, hbm_capacity_gib: 1, hbm_bandwidth_gbytes_per_s: 300}
        host: {ddr_capacity_gib: 1, ddr_bandwidth_gbytes_per_s: 100, pcie_bandwidth_gbytes_per_s: 16}
        intra_host_link: {type: pcie4, bandwidth_gbytes_per_s: 16}
        network: {type: ethernet, nics_per_host: 1, nic_bandwidth_gbits_per_s: 100}
    """)


def run(*args: str):
    return runner.invoke(app, list(args))


def test_solve_bundled_default(tmp_path: Path) -> None:
    out = tmp_path / "plan.json"
    r = run("solve", "dgx-h100-2x8", "--out", str(out))
    assert r.exit_code == 0, r.output
    assert "makespan" in r.output and "t_cat_" not in r.output
    d = json.loads(out.read_text())
    assert len(d["tables"]) == 26 and len(d["ranks"]) == 16


def test_solve_with_csv_tables(tmp_path: Path) -> None:
    (tmp_path / "t.yaml").write_text(TOPO)
    (tmp_path / "w.csv").write_text("name,num_embeddings,embedding_dim,pooling_factor\na,1000,16,2\n")
    r = run("solve", str(tmp_path / "t.yaml"), "--tables", str(tmp_path / "w.csv"),
            "--out", str(tmp_path / "p.json"))
    assert r.exit_code == 0, r.output
    assert (tmp_path / "p.json").exists()


@pytest.mark.parametrize(
    ("csv", "needle"),
    [
        ("name,num_embeddings,embedding_dim,pooling_factor\na,-3,16,2\n", "num_embeddings"),
        ("name,num_embeddings,embedding_dim,pooling_factor\na,10,0,2\n", "embedding_dim"),
        ("name,num_embeddings,embedding_dim,pooling_factor\na,10,16,x\n", "pooling_factor"),
        ("name,num_embeddings,embedding_dim,pooling_factor\na,10,16,1\na,5,8,1\n", "duplicate"),
        ("name,num_embeddings,embedding_dim,pooling_factor\n", "no tables"),
        ("name,num_embeddings,embedding_dim,pooling_factor,dtype\na,10,16,1,fp7\n", "fp7"),
    ],
)
def test_bad_tables_exit_1(tmp_path: Path, csv: str, needle: str) -> None:
    (tmp_path / "w.csv").write_text(csv)
    r = run("solve", "cpu-2", "--tables", str(tmp_path / "w.csv"), "--out", str(tmp_path / "p.json"))
    assert r.exit_code == 1, r.output
    assert needle in r.output and "w.csv" in r.output
    assert "Traceback" not in r.output


def test_missing_file_exit_1(tmp_path: Path) -> None:
    r = run("solve", str(tmp_path / "nope.yaml"))
    assert r.exit_code == 1 and "not found" in r.output and "Traceback" not in r.output


def test_yaml_syntax_error_names_line(tmp_path: Path) -> None:
    (tmp_path / "t.yaml").write_text(TOPO.replace("hosts: 1", "hosts: [1"))
    r = run("solve", str(tmp_path / "t.yaml"))
    assert r.exit_code == 1 and "YAML syntax error" in r.output and "t.yaml:" in r.output


def test_unknown_key_exit_1(tmp_path: Path) -> None:
    (tmp_path / "t.yaml").write_text(TOPO.replace("hosts: 1", "hosts: 1\n    colour: red"))
    r = run("solve", str(tmp_path / "t.yaml"))
    assert r.exit_code == 1 and "unknown key 'colour'" in r.output


def test_table_larger_than_cluster_exit_2(tmp_path: Path) -> None:
    (tmp_path / "t.yaml").write_text(TOPO)
    (tmp_path / "w.csv").write_text(
        "name,num_embeddings,embedding_dim,pooling_factor\nhuge,100000000,128,1\nsmall,10,8,1\n")
    r = run("solve", str(tmp_path / "t.yaml"), "--tables", str(tmp_path / "w.csv"),
            "--out", str(tmp_path / "p.json"))
    assert r.exit_code == 2, r.output
    assert "huge" in r.output and "short" in r.output and "Traceback" not in r.output
    assert not (tmp_path / "p.json").exists()


def test_help_lists_exit_codes() -> None:
    r = run("--help")
    assert r.exit_code == 0 and "Exit codes" in r.output and "solve" in r.output


@pytest.mark.parametrize("args", [["solve", "--time-limit", "abc"], ["solvee"], ["--bogus"]])
def test_command_line_errors_exit_1_not_2(args: list[str]) -> None:
    r = run(*args)
    assert r.exit_code == 1, r.output


def test_hand_edited_plan_is_rejected_on_load(tmp_path: Path) -> None:
    out = tmp_path / "p.json"
    assert run("solve", "cpu-2", "--solver", "greedy", "--out", str(out)).exit_code == 0
    d = json.loads(out.read_text())
    d["tables"][0]["shards"][0]["rank"] = 7  # the topology has ranks 0 and 1
    out.write_text(json.dumps(d))
    for cmd in (["report", str(out), "--out", str(tmp_path / "r")],
                ["explain", str(out), d["tables"][0]["name"]]):
        r = run(*cmd)
        assert r.exit_code == 1, r.output
        assert "rank 7" in r.output and "p.json" in r.output and "Traceback" not in r.output


def test_unwritable_output_is_bad_input(tmp_path: Path) -> None:
    r = run("gen-workload", "-n", "3", "--out", str(tmp_path / "missing" / "dir" / "w.yaml"))
    assert r.exit_code == 1 and "Traceback" not in r.output, r.output
    r = run("solve", "cpu-2", "--solver", "greedy", "--out", str(tmp_path / "missing" / "p.json"))
    assert r.exit_code == 1 and "Traceback" not in r.output, r.output


def test_compare_measure_runs_plans_on_the_executor(tmp_path: Path) -> None:
    r = run("compare", "cpu-2", "--solvers", "greedy,size-greedy", "--measure", "3",
            "--out", str(tmp_path))
    assert r.exit_code == 0, r.output
    rows = (tmp_path / "compare.csv").read_text().splitlines()
    assert rows[0].split(",")[3] == "measured_ms" and len(rows) == 3
    assert all(float(row.split(",")[3]) > 0 for row in rows[1:])


def test_compare_measure_needs_a_cpu_topology() -> None:
    r = run("compare", "dgx-h100-2x8", "--solvers", "greedy", "--measure", "3")
    assert r.exit_code == 1 and "CPU topology" in r.output


def test_solve_2d_picks_the_replica_count(tmp_path: Path) -> None:
    """--replicas auto tries every count that divides the devices per host and keeps the
    fastest; the plan file is for one sharding group, with its replica count."""
    out = tmp_path / "p.json"
    r = run("solve", "cpu-2x2", "--replicas", "auto", "--sync-steps", "100", "--out", str(out))
    assert r.exit_code == 0, r.output
    assert "2D:" in r.output and "R=1:" in r.output and "R=2:" in r.output
    d = json.loads(out.read_text())
    assert d["replicas"] in (1, 2) and len(d["ranks"]) * d["replicas"] == 4
    r = run("solve", "cpu-2x2", "--replicas", "2", "--out", str(out))
    assert r.exit_code == 0, r.output
    assert json.loads(out.read_text())["replicas"] == 2


@pytest.mark.parametrize(("args", "needle"), [
    (["--replicas", "x"], "--replicas"),
    (["--replicas", "0"], "--replicas"),
    (["--replicas", "3"], "choose one of [1, 2]"),
    (["--replicas", "2", "--sync-steps", "0"], "--sync-steps"),
    (["--replicas", "auto", "--mode", "inference"], "for training"),
])
def test_solve_2d_bad_options_exit_1(tmp_path: Path, args: list[str], needle: str) -> None:
    r = run("solve", "cpu-2x2", *args, "--out", str(tmp_path / "p.json"))
    assert r.exit_code == 1, r.output
    assert needle in r.output and "Traceback" not in r.output


def test_solve_2d_skips_a_count_the_global_batch_does_not_split_over(tmp_path: Path) -> None:
    out = tmp_path / "p.json"
    r = run("solve", "cpu-2x2", "--replicas", "auto", "--batch-size", "1001", "--batch-scope",
            "global", "--out", str(out))
    assert r.exit_code == 0, r.output
    assert "R=2: " in r.output and "does not split" in r.output
    assert json.loads(out.read_text())["replicas"] == 1
