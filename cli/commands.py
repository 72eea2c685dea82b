"""Planning commands: solve, topologies, gen-workload."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from shardplan.cli.app import app, console, handle_errors
from shardplan.errors import SpecError
from shardplan.loaders import (
    DEFAULT_TOPOLOGY,
    bundled_topologies,
    bundled_workloads,
    load_problem,
)
from shardplan.plans import save_plan
from shardplan.types import Plan

GiB = 2**30


def print_summary(plan: Plan, max_rows: int = 32) -> None:
    """A per-rank table (memory used / capacity per tier, tables, time) and the makespan."""
    s = plan.summary
    t = Table(title=f"{plan.workload.name} on {plan.topology.name}: {s.num_tables} tables, "
                    f"{s.num_ranks} ranks, solver {s.solver}")
    for col in ("rank", "device", "HBM GiB used/cap", "DDR GiB used/cap", "shards", "est. ms"):
        t.add_column(col, justify="right")
    shards_on = [0] * s.num_ranks
    for tb in plan.tables:
        for sh in tb.shards:
            shards_on[sh.rank] += 1
    ranks = plan.ranks
    if len(ranks) > max_rows:  # show the slowest ranks; the plan file has them all
        ranks = sorted(ranks, key=lambda r: (-r.total_ms, r.rank))[:max_rows]
        ranks = sorted(ranks, key=lambda r: r.rank)
    for r in ranks:
        t.add_row(str(r.rank), r.device,
                  f"{r.memory_bytes.hbm / GiB:.2f}/{r.capacity_bytes.hbm / GiB:.1f}",
                  f"{r.memory_bytes.ddr / GiB:.2f}/{r.capacity_bytes.ddr / GiB:.1f}",
                  str(shards_on[r.rank]), f"{r.total_ms:.3f}",
                  style="bold" if r.total_ms == s.makespan_ms else None)
    console.print(t)
    if len(plan.ranks) > max_rows:
        console.print(f"(showing the {max_rows} slowest of {len(plan.ranks)} ranks)")
    mix = ", ".join(f"{k}: {v}" for k, v in s.sharding_mix.items())
    line = f"makespan [bold]{s.makespan_ms:.3f} ms[/]"
    if s.lower_bound_ms:
        gap = (s.makespan_ms / s.lower_bound_ms - 1) * 100
        line += f", lower bound {s.lower_bound_ms:.3f} ms (within {gap:.1f}% of optimal)"
    console.print(f"{line}; sharding mix: {mix}; solved in {s.solve_time_s:.2f} s")


@app.command()
@handle_errors
def solve(
    topology: Annotated[str, typer.Argument(help="Topology YAML file, or a bundled name "
                                                 "(see `shardplan topologies`).")] = DEFAULT_TOPOLOGY,
    tables: Annotated[Optional[Path], typer.Option(
        "--tables", "-t", help="Workload YAML or CSV; overrides the topology's workload.")] = None,
    solver: Annotated[str, typer.Option(help="Solver name.")] = "greedy",
    time_limit: Annotated[float, typer.Option(help="Solver time budget, seconds.")] = 60.0,
    out: Annotated[Path, typer.Option("--out", "-o", help="Where to write the plan JSON.")] = Path("plan.json"),
) -> None:
    """Plan the sharding of a workload on a topology and write plan.json.

    Examples:

      shardplan solve dgx-h100-2x8

      shardplan solve my-cluster.yaml --tables tables.csv --solver greedy --out plan.json
    """
    from shardplan.planner import plan as make_plan

    if time_limit <= 0:
        raise SpecError(f"--time-limit must be > 0, got {time_limit}")
    topo, work = load_problem(topology, tables)
    assert work is not None  # load_problem raises when no workload is found
    p = make_plan(work, topo, solver=solver, time_limit_s=time_limit)
    print_summary(p)
    save_plan(p, out)
    console.print(f"wrote {out}")


@app.command("topologies")
@handle_errors
def topologies_cmd(
    name: Annotated[Optional[str], typer.Argument(help="Show one topology in detail.")] = None,
) -> None:
    """List the bundled topologies and workloads, or show one topology.

    Examples:

      shardplan topologies

      shardplan topologies dgx-h100-2x8
    """
    if name is None:
        t = Table(title="bundled topologies")
        for col in ("name", "hosts", "devices", "device models", "default workload"):
            t.add_column(col)
        for n in bundled_topologies():
            topo, _ = load_problem(n, need_workload=False)
            models = ", ".join(sorted({g.device.model for g in topo.host_groups}))
            t.add_row(n, str(topo.num_hosts), str(topo.world_size), models,
                      Path(topo.workload_path).stem if topo.workload_path else "-")
        console.print(t)
        console.print("bundled workloads: " + ", ".join(bundled_workloads()))
        return
    topo, work = load_problem(name, need_workload=False)
    console.print(f"[bold]{topo.name}[/]: {topo.description}")
    for g in topo.host_groups:
        console.print(
            f"  group {g.name}: {g.hosts} host(s) x {g.devices_per_host} {g.device.model} "
            f"({g.device.hbm_capacity_bytes / GiB:.0f} GiB HBM at "
            f"{g.device.hbm_bandwidth_bytes_per_s / 1e9:.0f} GB/s); "
            f"{g.intra_host_link.type.value} {g.intra_host_link.bandwidth_bytes_per_s / 1e9:.0f} GB/s; "
            f"{g.network.type.value} {g.network.bandwidth_bytes_per_s * 8 / 1e9:.0f} Gb/s per host")
    if work is not None:
        console.print(f"  workload: {work.name} ({len(work.tables)} tables)")


@app.command("gen-workload")
@handle_errors
def gen_workload(
    num_tables: Annotated[int, typer.Option("--tables", "-n", min=1, max=100_000,
                                            help="Number of tables.")] = 100,
    seed: Annotated[int, typer.Option(help="Random seed; the same seed gives the same file.")] = 0,
    batch_size: Annotated[int, typer.Option(min=1, help="Batch size per rank.")] = 512,
    out: Annotated[Path, typer.Option("--out", "-o", help="Output .yaml or .csv.")] = Path("workload.yaml"),
) -> None:
    """Write a seeded synthetic workload with production-like spreads.

    Examples:

      shardplan gen-workload --tables 500 --seed 1 --out w500.yaml

      shardplan gen-workload -n 10000 --out w10k.csv
    """
    from shardplan.generate import synthetic_workload, write_workload

    w = synthetic_workload(num_tables, seed=seed, batch_size=batch_size)
    write_workload(w, out)
    console.print(f"wrote {out}: {num_tables} tables")
