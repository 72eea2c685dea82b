"""Planning commands: solve, topologies, gen-workload."""

from __future__ import annotations

import inspect
import math
from pathlib import Path
from typing import Annotated, Any, Callable, Optional, TypeVar

import typer
from rich import box
from rich.progress import Progress, SpinnerColumn, TaskID, TextColumn, TimeElapsedColumn
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
from shardplan.solvers import DEFAULT_SOLVER, SOLVERS
from shardplan.types import Plan, ProgressReport, Topology, Workload

GiB = 2**30
F = TypeVar("F", bound=Callable[..., Any])


def reflow_doc(fn: F) -> F:
    """Join the wrapped lines of each paragraph of ``fn``'s docstring, so that ``--help``
    (rich markup keeps line breaks) wraps prose to the terminal; indented lines (examples)
    stay as they are."""
    doc = inspect.cleandoc(fn.__doc__ or "")
    paras = []
    for para in doc.split("\n\n"):
        lines = para.splitlines()
        paras.append(para if any(ln.startswith(" ") for ln in lines) else " ".join(lines))
    fn.__doc__ = "\n\n".join(paras)
    return fn



def print_summary(plan: Plan, max_rows: int = 32) -> None:
    """The plan at a glance: a per-rank table (memory used / capacity per tier, shards, time;
    the slowest ``max_rows`` ranks of a large plan), the makespan, the lower bound and gap,
    memory headroom per tier and the sharding-type mix."""
    from shardplan.frames import headroom, rank_frame, sharding_mix

    s = plan.summary
    df = rank_frame(plan)
    t = Table(title=f"{plan.workload.name} on {plan.topology.name}: {s.num_tables} tables, "
                    f"{s.num_ranks} ranks, solver {s.solver}", header_style="bold",
              box=box.SIMPLE_HEAD, collapse_padding=True, pad_edge=False)
    show_device = df["device"].nunique() > 1
    cols = ["rank", "host"] + (["device"] if show_device else []) + [
        "HBM GiB", "DDR GiB", "shards", "compute ms", "comm ms", "total ms"]
    for col in cols:
        t.add_column(col, justify="right", no_wrap=col != "device",
                     overflow="ellipsis" if col == "device" else "fold")
    shown = df
    if len(df) > max_rows:  # show the slowest ranks; the plan file has them all
        shown = df.sort_values(["total_ms", "rank"], ascending=[False, True]).head(max_rows)
        shown = shown.sort_values("rank")
    for row in shown.itertuples(index=False):
        compute = row.fwd_compute_ms + row.bwd_compute_ms
        comm = row.fwd_comm_ms + row.bwd_comm_ms + row.dp_sync_ms
        t.add_row(str(row.rank), str(row.host), *([row.device] if show_device else []),
                  f"{row.hbm_bytes / GiB:.2f}/{row.hbm_capacity_bytes / GiB:.1f}",
                  f"{row.ddr_bytes / GiB:.2f}/{row.ddr_capacity_bytes / GiB:.1f}",
                  str(row.num_shards), f"{compute:.3f}", f"{comm:.3f}", f"{row.total_ms:.3f}",
                  style="bold" if row.is_slowest else None)
    console.print(t)
    if len(df) > max_rows:
        console.print(f"(showing the {max_rows} slowest of {len(df)} ranks; all are in the plan "
                      "file and `shardplan report`)")
    line = f"makespan [bold]{s.makespan_ms:.3f} ms[/]"
    if s.lower_bound_ms:
        gap = (s.makespan_ms / s.lower_bound_ms - 1) * 100
        line += (f"; lower bound {s.lower_bound_ms:.3f} ms: within [bold]{gap:.1f}%[/] of "
                 "optimal")
    else:
        line += "; no lower bound from this solver"
    console.print(f"{line}; {s.status}, solved in {s.solve_time_s:.2f} s")
    for tier, h in headroom(plan).items():
        console.print(f"{tier.value.upper()} headroom: least free {h['min_free_bytes'] / GiB:.2f} "
                      f"GiB (rank {int(h['min_free_rank'])}), fullest rank "
                      f"{h['max_used_fraction'] * 100:.1f}% used, mean "
                      f"{h['mean_used_fraction'] * 100:.1f}%")
    mix = sharding_mix(plan)
    console.print("sharding mix: " + ", ".join(
        f"{short} {n} ({frac * 100:.0f}% of tables, {bf * 100:.0f}% of bytes)"
        for short, n, frac, bf in zip(mix["sharding"], mix["tables"], mix["table_fraction"],
                                      mix["byte_fraction"])))


class _ProgressSink:
    """Shows a planner's ``ProgressReport``s (phase, best makespan and bound so far) on a rich
    task; keeps the best and the bound across reports, since a phase may report only one."""

    def __init__(self, progress: Progress, task: TaskID) -> None:
        self.progress, self.task = progress, task
        self.best: float | None = None
        self.bound: float | None = None

    def __call__(self, report: ProgressReport) -> None:
        if report.best_ms is not None:
            self.best = report.best_ms if self.best is None else min(self.best, report.best_ms)
        if report.bound_ms is not None:
            self.bound = report.bound_ms if self.bound is None else max(self.bound, report.bound_ms)
        parts = [f"after {report.phase}"]
        if self.best is not None:
            parts.append(f"best {self.best:.3f} ms")
        if self.bound is not None:
            parts.append(f"bound {self.bound:.3f} ms")
        if self.best is not None and self.bound:
            parts.append(f"gap {(self.best / self.bound - 1) * 100:.1f}%")
        self.progress.update(self.task, status=", ".join(parts))


def plan_with_progress(work: Workload, topo: Topology, *, solver: str, time_limit_s: float,
                       label: str = "") -> Plan:
    """Run the planner under a live display: a spinner with elapsed time, and the best makespan
    and bound so far as the planner reports them. Nothing is drawn when the output is not a
    terminal."""
    from shardplan.planner import plan as make_plan

    with Progress(SpinnerColumn(), TextColumn("[bold]{task.description}"),
                  TimeElapsedColumn(), TextColumn("{task.fields[status]}"),
                  console=console, transient=True) as progress:
        task = progress.add_task(label or f"solving with {solver}", total=None, status="")
        return make_plan(work, topo, solver=solver, time_limit_s=time_limit_s,
                         progress=_ProgressSink(progress, task))


def check_solver_name(name: str, option: str = "--solver") -> str:
    """The registered solver called ``name`` (``-`` and ``_`` are interchangeable), else
    SpecError listing them."""
    for cand in (name, name.replace("-", "_"), name.replace("_", "-")):
        if cand in SOLVERS:
            return cand
    raise SpecError(f"unknown solver {name!r}; choose one of {', '.join(sorted(SOLVERS))}",
                    key_path=option)


@app.command()
@handle_errors
@reflow_doc
def solve(
    topology: Annotated[str, typer.Argument(help="Topology YAML file, or a bundled name "
                                                 "(see `shardplan topologies`).")] = DEFAULT_TOPOLOGY,
    tables: Annotated[Optional[Path], typer.Option(
        "--tables", "-t", help="Workload YAML or CSV; overrides the topology's workload.")] = None,
    solver: Annotated[str, typer.Option(help="Solver name: " + ", ".join(sorted(SOLVERS))
                                        + ".")] = DEFAULT_SOLVER,
    time_limit: Annotated[float, typer.Option(help="Solver time budget, seconds.")] = 60.0,
    out: Annotated[Path, typer.Option("--out", "-o", help="Where to write the plan JSON.")] = Path("plan.json"),
    report: Annotated[Optional[Path], typer.Option(
        "--report", "-r", help="Also write an HTML report with plots into this folder.")] = None,
) -> None:
    """Plan the sharding of a workload on a topology and write plan.json.

    Prints a per-rank table, the makespan, the lower bound and gap, memory headroom per tier
    and the sharding-type mix; shows a spinner (and the best makespan so far, where the solver
    reports it) while it solves.

    Examples:

      shardplan solve dgx-h100-2x8

      shardplan solve my-cluster.yaml --tables tables.csv --solver greedy --out plan.json

      shardplan solve h100-16x8 -t w500.yaml --time-limit 30 --report report/
    """
    if not math.isfinite(time_limit) or time_limit <= 0:
        raise SpecError(f"--time-limit must be > 0 seconds, got {time_limit}")
    solver = check_solver_name(solver)
    topo, work = load_problem(topology, tables)
    if work is None:  # load_problem raises when no workload is found
        raise SpecError("no workload; pass --tables FILE")
    p = plan_with_progress(work, topo, solver=solver, time_limit_s=time_limit)
    print_summary(p)
    try:
        save_plan(p, out)
    except OSError as exc:
        raise SpecError(f"cannot write the plan: {exc.strerror}", source=str(out)) from None
    console.print(f"wrote {out}")
    if report is not None:
        from shardplan.report import write_report

        files = write_report(p, report)
        console.print(f"wrote {files.html} and {len(files.images)} PNGs")


@app.command("topologies")
@handle_errors
@reflow_doc
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
@reflow_doc
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
