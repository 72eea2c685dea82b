"""Commands that plan one workload several ways: compare (planners), sweep (cluster sizes).

The work is :mod:`shardplan.compare` and :mod:`shardplan.sweep`; these parse the command line,
call them with a live display, print the result and write the files.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich import box
from rich.markup import escape
from rich.table import Table

from shardplan.cli.base import (
    BatchScopeOpt,
    BatchSizeOpt,
    DTypeOpt,
    MAX_STEPS,
    ModeOpt,
    ProfileOpt,
    app,
    busy,
    check_at_most,
    check_local_ranks,
    check_time_limit,
    handle_errors,
    names_list,
    plan_with_progress,
    print_table,
    reflow_doc,
    say,
    write_file,
)
from shardplan.cli.commands import TablesOpt, load_cli_problem
from shardplan.compare import (
    ExternalPlanner,
    compare_planners,
    comparison_frame,
    measure as measure_rows,
    none_found_error,
    resolve_solver_name,
    torchrec_planner,
    torchrec_yardsticks,
)
from shardplan.errors import SpecError
from shardplan.figures import compare_figure, png_bytes, sweep_figure
from shardplan.loaders import DEFAULT_TOPOLOGY
from shardplan.plans import save_plan
from shardplan.report import make_out_dir
from shardplan.solvers import DEFAULT_SOLVER, SOLVERS
from shardplan.sweep import (
    fewest_devices,
    none_fits_error,
    parse_devices,
    scale_topology,
    sweep,
    sweep_frame,
)
from shardplan.types import Plan, Topology, Workload

COMPARE_WITH = ("torchrec",)


def _with_spinner(planner: ExternalPlanner, label: str) -> ExternalPlanner:
    def run(work: Workload, topo: Topology) -> tuple[Plan, float]:
        with busy(label):
            return planner(work, topo)

    return run


def _cell(x: float, fmt: str) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, fmt)


@app.command("compare")
@handle_errors
@reflow_doc
def compare_cmd(
    topology: Annotated[str, typer.Argument(
        help="Topology YAML file or bundled name.")] = DEFAULT_TOPOLOGY,
    tables: TablesOpt = None,
    solvers: Annotated[Optional[str], typer.Option(
        "--solvers", "-s", help="Comma-separated solver names (default: every registered "
        "solver): " + ", ".join(sorted(SOLVERS)) + ".")] = None,
    with_: Annotated[Optional[str], typer.Option(
        "--with", help="Also plan with another planner: torchrec (needs TorchRec).")] = None,
    time_limit: Annotated[float, typer.Option(help="Time budget per solver, seconds.")] = 30.0,
    out: Annotated[Optional[Path], typer.Option(
        "--out", "-o", help="Folder for compare.png, compare.csv and one plan JSON per "
        "planner.")] = None,
    measure: Annotated[int, typer.Option(
        "--measure", min=0, help="Also run every plan on the local executor (gloo; CPU "
        "topologies such as cpu-2, cpu-4) and show its measured step time: the median of "
        "this many steps (0: do not measure).")] = 0,
    profile: ProfileOpt = None,
    batch_size: BatchSizeOpt = None,
    batch_scope: BatchScopeOpt = None,
    mode: ModeOpt = None,
    dtype: DTypeOpt = None,
) -> None:
    """Plan one workload with several solvers and show the plans side by side.

    Per planner: status, makespan, lower bound, gap against the best bound any planner
    proved, planning time, fullest HBM and the sharding mix. A solver that finds no plan is
    listed as infeasible, with why; the exit code is 2 only when none finds one.

    Examples:

      shardplan compare dgx-h100-2x8 --solvers greedy,size-greedy,size-lookup-greedy

      shardplan compare h100-16x8 -t w500.yaml -s greedy,ilp --time-limit 60 --out cmp/

      shardplan compare cpu-4 --with torchrec --measure 20
    """
    check_time_limit(time_limit)
    names = names_list(solvers, "--solvers") if solvers is not None else sorted(SOLVERS)
    names = [resolve_solver_name(n, "--solvers") for n in names]
    if len(set(names)) != len(names):
        raise SpecError(f"--solvers names a solver twice: {solvers!r}", key_path="--solvers")
    others = names_list(with_, "--with") if with_ else []
    for o in others:
        if o not in COMPARE_WITH:
            raise SpecError(f"unknown planner {o!r} for --with; choose {', '.join(COMPARE_WITH)}",
                            key_path="--with")
    external = {"torchrec": _with_spinner(torchrec_planner(), "planning with TorchRec's planner")
                } if "torchrec" in others else {}
    topo, work = load_cli_problem(topology, tables, batch_size, batch_scope, mode, dtype)
    check_at_most(measure, "--measure", MAX_STEPS, "medians settle within a few dozen steps")
    if measure:
        check_local_ranks(topo.world_size, "--measure", "measure on a smaller CPU topology")
    if measure and any(g.device.model != "CPU" for g in topo.host_groups):
        raise SpecError(f"--measure runs the plans on this machine's executor, so it needs a CPU "
                        f"topology (cpu-2, cpu-4); {topo.name} has "
                        f"{', '.join(sorted({g.device.model for g in topo.host_groups}))} devices",
                        key_path="--measure")
    out_dir = make_out_dir(out) if out is not None else None
    rows = compare_planners(work, topo, names, time_limit_s=time_limit, profile=profile,
                            external=external, plan_fn=plan_with_progress)
    if measure:
        with busy(f"measuring the plans on {topo.world_size} gloo ranks"):
            rows = measure_rows(rows, measure)
    if "torchrec" in others:  # every plan also under TorchRec's estimators (and DMP)
        with busy("pricing the plans with TorchRec's estimators"
                  + (" and timing them under its DMP" if measure else "")):
            rows = torchrec_yardsticks(rows, dmp_steps=measure)
    df = comparison_frame(rows)
    ok = [r.makespan_ms for r in rows if r.makespan_ms is not None]
    best = min(ok) if ok else None
    t = Table(title=escape(f"{work.name} on {topo.name}: {len(work.tables)} tables, "
                           f"{topo.world_size} ranks"), header_style="bold", box=box.SIMPLE_HEAD, show_edge=False,
              collapse_padding=True, pad_edge=False)
    cols = ["planner", "status", "ms", "bound", "gap%", "time s", "HBM%"]
    if measure:
        cols.insert(3, "measured")
    tr_cols = [c for c in ("TR ms", "TR GiB", "DMP ms") if "torchrec" in others
               and (c != "DMP ms" or measure)]
    cols += tr_cols
    for col in cols:
        t.add_column(col, justify="left" if col in ("planner", "status") else "right",
                     no_wrap=True)
    for r, row in zip(rows, df.itertuples(index=False)):
        cells = [escape(r.name), escape(r.status) if r.plan is not None
                 else f"[red]{escape(r.status)}[/]", _cell(row.makespan_ms, ".3f")]
        if measure:
            cells.append(_cell(row.measured_ms, ".3f"))
        cells += [_cell(row.lower_bound_ms, ".3f"), _cell(row.gap_percent, ".1f"),
                  _cell(row.solve_time_s, ".2f"), _cell(row.hbm_max_used_fraction * 100, ".1f")]
        if tr_cols:
            cells += [_cell(r.torchrec_model_ms, ".4f"), _cell(r.torchrec_model_hbm_gib, ".3f")]
            cells += [_cell(r.dmp_ms, ".3f")] if measure else []
        t.add_row(*cells, style="bold" if best is not None and r.makespan_ms == best else None)
    print_table(t)
    say("ms: makespan; bound: lower bound (ms); gap% against the best bound any planner "
        "proved; HBM%: the fullest rank; best in bold"
        + (f"; measured: step time on the executor, median of {measure} steps" if measure else "")
        + ("; TR ms / TR GiB: the plan under TorchRec's estimators (slowest rank's Perf.total, "
           "fullest rank's memory)" if tr_cols else "")
        + (f"; DMP ms: step time under TorchRec's DMP on gloo, median of {measure} steps"
           if tr_cols and measure else ""))
    for r, row in zip(rows, df.itertuples(index=False)):
        if r.plan is not None:
            say(escape(f"  {r.name}: mix {row.sharding_mix}" + (f" ({r.note})" if r.note else "")
                       + (f" [{r.dmp_note}]" if r.dmp_note else "")))
        else:
            say(escape(f"  {r.name}: {r.status}: {r.note}"))
    if out_dir is not None:
        write_file(out_dir / "compare.png", png_bytes(compare_figure(
            rows, f"{work.name} on {topo.name}")))
        write_file(out_dir / "compare.csv", df.to_csv(index=False, lineterminator="\n"))
        for r in rows:
            if r.plan is not None:
                save_plan(r.plan, out_dir / f"plan-{r.name}.json")
        say(f"wrote {escape(str(out_dir))}/compare.png, compare.csv and one plan per planner")
    if best is None:
        raise none_found_error(rows)


@app.command("sweep")
@handle_errors
@reflow_doc
def sweep_cmd(
    topology: Annotated[str, typer.Argument(help="Topology YAML file or bundled name; its "
                                            "hosts are scaled.")] = DEFAULT_TOPOLOGY,
    devices: Annotated[str, typer.Option("--devices", "-d", help="Cluster sizes: 8,16,32 or "
                                         "8-64 (doubling) or 8-64:8 (step 8).")] = "8-64",
    tables: TablesOpt = None,
    solver: Annotated[str, typer.Option(help="Solver name.")] = DEFAULT_SOLVER,
    time_limit: Annotated[float, typer.Option(help="Time budget per size, seconds.")] = 30.0,
    target_ms: Annotated[Optional[float], typer.Option(
        "--target-ms",
        help="Also report the fewest devices whose makespan is at most this.")] = None,
    out: Annotated[Optional[Path], typer.Option(
        "--out", "-o", help="Folder for sweep.png and sweep.csv.")] = None,
    profile: ProfileOpt = None,
    batch_size: BatchSizeOpt = None,
    batch_scope: BatchScopeOpt = None,
    mode: ModeOpt = None,
    dtype: DTypeOpt = None,
) -> None:
    """Capacity planning: plan the workload on clusters of several sizes.

    Each size is the topology with its number of hosts scaled (devices per host, devices and
    links kept; several host groups scale in proportion). For each size: feasible or not (and
    why not), the makespan; then the fewest devices that fit and, with --target-ms, the
    fewest that meet the target. A per-rank batch size stays per rank. Exit code 2 when no
    size fits.

    Examples:

      shardplan sweep h100-16x8 --tables w500.yaml --devices 8,16,32,64

      shardplan sweep dgx-h100-2x8 --devices 8-128 --target-ms 3 --out sweep/
    """
    check_time_limit(time_limit)
    if target_ms is not None and not (math.isfinite(target_ms) and target_ms > 0):
        raise SpecError(f"--target-ms must be > 0, got {target_ms}", key_path="--target-ms")
    solver = resolve_solver_name(solver, "--solver")
    sizes = parse_devices(devices)
    topo, work = load_cli_problem(topology, tables, batch_size, batch_scope, mode, dtype)
    for n in sizes:  # every size checked before anything is solved
        scale_topology(topo, n)
    out_dir = make_out_dir(out) if out is not None else None
    rows = sweep(work, topo, sizes, solver=solver, time_limit_s=time_limit, profile=profile,
                 plan_fn=plan_with_progress)
    tbl = Table(title=escape(f"{work.name} ({len(work.tables)} tables) on {topo.name} scaled "
                             f"by hosts ({solver})"), header_style="bold", box=box.SIMPLE_HEAD, show_edge=False,
                collapse_padding=True, pad_edge=False)
    for col in ("devices", "hosts", "fits", "makespan ms", "bound ms", "time s"):
        tbl.add_column(col, justify="right", no_wrap=True)
    for r in rows:
        meets = r.fits and target_ms is not None and r.makespan_ms <= target_ms
        tbl.add_row(str(r.devices), str(r.hosts), "yes" if r.fits else "[red]no[/]",
                    f"{r.makespan_ms:.3f}" if r.fits else "-",
                    f"{r.lower_bound_ms:.3f}" if r.lower_bound_ms else "-",
                    f"{r.solve_time_s:.2f}" if r.fits else "-", style="bold" if meets else None)
    print_table(tbl)
    for r in rows:
        if not r.fits:
            say(escape(f"  {r.devices} devices do not fit: {r.note}"))
    first = fewest_devices(rows)
    if first is not None:
        say(f"fewest devices that fit: [bold]{first.devices}[/] "
            f"(makespan {first.makespan_ms:.3f} ms)")
    if target_ms is not None:
        meet = fewest_devices(rows, target_ms)
        fits = [r for r in rows if r.fits]
        if meet is not None:
            say(f"fewest devices with makespan <= {target_ms:g} ms: "
                f"[bold]{meet.devices}[/] ({meet.makespan_ms:.3f} ms)")
        else:
            best = min(fits, key=lambda r: r.makespan_ms) if fits else None
            say(f"no size tried meets {target_ms:g} ms; the best is "
                + (f"{best.makespan_ms:.3f} ms at {best.devices} devices (lower bound "
                   f"{best.lower_bound_ms or 0:.3f} ms)" if best else "none")
                + ("; try sizes above " + str(max(sizes)) if best and best.devices == max(sizes)
                   else "; more devices did not help" if best else ""))
    if out_dir is not None:
        write_file(out_dir / "sweep.png", png_bytes(sweep_figure(
            rows, target_ms, f"{work.name} on {topo.name}")))
        write_file(out_dir / "sweep.csv", sweep_frame(rows).to_csv(index=False, lineterminator="\n"))
        say(f"wrote {escape(str(out_dir))}/sweep.png and sweep.csv")
    if first is None:
        raise none_fits_error(rows)
