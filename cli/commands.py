"""Planning commands: solve, topologies, gen-workload."""

from __future__ import annotations

import warnings
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
    ModeOpt,
    ProfileOpt,
    app,
    apply_overrides,
    busy,
    check_time_limit,
    cost_model_for,
    handle_errors,
    plan_with_progress,
    print_table,
    reflow_doc,
    say,
)
from shardplan.compare import resolve_solver_name
from shardplan.errors import ShardplanWarning, SpecError
from shardplan.frames import headroom, nearly_full, rank_frame, sharding_mix, slowest_rank
from shardplan.loaders import DEFAULT_TOPOLOGY, bundled_topologies, bundled_workloads, load_problem
from shardplan.generate import synthetic_workload, write_workload
from shardplan.plans import FBGEMM_WIDTH_MULTIPLE, fbgemm_unsupported, save_plan
from shardplan.report import write_report
from shardplan.solvers import DEFAULT_SOLVER, SOLVERS
from shardplan.types import Plan
from shardplan.units import GiB


def print_summary(plan: Plan, max_rows: int = 32) -> None:
    """The plan at a glance: a per-rank table (memory used / capacity per tier, shards, time;
    the slowest ``max_rows`` ranks of a large plan), the makespan, the lower bound and gap,
    the slowest rank and its largest stage, memory headroom per tier, ranks nearly full and
    the sharding-type mix."""
    s = plan.summary
    df = rank_frame(plan)
    t = Table(title=escape(f"{plan.workload.name} on {plan.topology.name}: {s.num_tables} "
                           f"tables, {s.num_ranks} ranks, solver {s.solver}"),
              header_style="bold", box=box.SIMPLE_HEAD, show_edge=False, collapse_padding=True, pad_edge=False)
    groups = [plan.topology.group_of(r).name for r in df["rank"]]
    show_group = len(plan.topology.host_groups) > 1  # named by group: model names are long
    cols = ["rank", "host"] + (["group"] if show_group else []) + [
        "HBM GiB", "DDR GiB", "shards", "compute", "comm", "total ms"]
    for col in cols:
        t.add_column(col, justify="right", no_wrap=True)
    shown = df
    if len(df) > max_rows:  # show the slowest ranks; the plan file has them all
        shown = df.sort_values(["total_ms", "rank"], ascending=[False, True]).head(max_rows)
        shown = shown.sort_values("rank")
    for row in shown.itertuples(index=False):
        compute = row.fwd_compute_ms + row.bwd_compute_ms
        comm = row.input_dist_ms + row.fwd_comm_ms + row.bwd_comm_ms + row.dp_sync_ms
        t.add_row(str(row.rank), str(row.host), *([escape(groups[row.rank])] if show_group else []),
                  f"{row.hbm_bytes / GiB:.2f}/{row.hbm_capacity_bytes / GiB:.1f}",
                  f"{row.ddr_bytes / GiB:.2f}/{row.ddr_capacity_bytes / GiB:.1f}",
                  str(row.num_shards), f"{compute:.3f}", f"{comm:.3f}", f"{row.total_ms:.3f}",
                  style="bold" if row.is_slowest else None)
    print_table(t)
    if len(df) > max_rows:
        say(f"(showing the {max_rows} slowest of {len(df)} ranks; all are in the plan "
            "file and `shardplan report`)")
    line = f"makespan [bold]{s.makespan_ms:.3f} ms[/]"
    if s.lower_bound_ms:
        gap = (s.makespan_ms / s.lower_bound_ms - 1) * 100
        line += (f"; lower bound {s.lower_bound_ms:.3f} ms: within [bold]{gap:.1f}%[/] of "
                 "optimal")
    else:
        line += "; no lower bound from this solver"
    say(f"{line}; {escape(s.status)}, solved in {s.solve_time_s:.2f} s")
    rank, stage, ms = slowest_rank(plan)
    say(f"slowest rank {rank} (host {plan.topology.rank(rank).host}): its largest stage is "
        f"{stage.value} at {ms:.3f} ms")
    for tier, h in headroom(plan).items():
        say(f"{tier.value.upper()} headroom: least free {h['min_free_bytes'] / GiB:.2f} "
            f"GiB (rank {int(h['min_free_rank'])}), fullest rank "
            f"{h['max_used_fraction'] * 100:.1f}% used, mean {h['mean_used_fraction'] * 100:.1f}%")
    full = nearly_full(plan)
    if full:
        shown_full = ", ".join(f"rank {r} {tier.value.upper()} {f * 100:.1f}%"
                               for r, tier, f in full[:5])
        more = f" and {len(full) - 5} more" if len(full) > 5 else ""
        say(f"[bold yellow]warning:[/] nearly full (>= 95%): {shown_full}{more}; allocator "
            "slack and fragmentation may not fit at run time")
    mix = sharding_mix(plan)
    say("sharding mix: " + ", ".join(
        f"{short} {n} ({frac * 100:.0f}% of tables, {bf * 100:.0f}% of bytes)"
        for short, n, frac, bf in zip(mix["sharding"], mix["tables"], mix["table_fraction"],
                                      mix["byte_fraction"])))


TablesOpt = Annotated[Optional[Path], typer.Option(
    "--tables", "-t", help="Workload YAML or CSV (or a bundled workload name); overrides the "
    "topology's workload.")]


def load_cli_problem(topology: str, tables: Path | None, batch_size: int | None,
                     batch_scope: object, mode: object, dtype: object):
    """The problem a planning command names, with the workload overrides applied."""
    topo, work = load_problem(topology, tables)
    if work is None:  # load_problem raises when no workload is found
        raise SpecError("no workload; pass --tables FILE")
    return topo, apply_overrides(work, batch_size, batch_scope, mode, dtype)


@app.command()
@handle_errors
@reflow_doc
def solve(
    topology: Annotated[str, typer.Argument(help="Topology YAML file, or a bundled name "
                                                 "(see `shardplan topologies`).")] = DEFAULT_TOPOLOGY,
    tables: TablesOpt = None,
    solver: Annotated[str, typer.Option(help="Solver name: " + ", ".join(sorted(SOLVERS))
                                        + ".")] = DEFAULT_SOLVER,
    time_limit: Annotated[float, typer.Option(help="Solver time budget, seconds.")] = 60.0,
    out: Annotated[Path, typer.Option("--out", "-o", help="Where to write the plan JSON.")] = Path("plan.json"),
    report: Annotated[Optional[Path], typer.Option(
        "--report", "-r", help="Also write an HTML report with plots into this folder.")] = None,
    profile: ProfileOpt = None,
    batch_size: BatchSizeOpt = None,
    batch_scope: BatchScopeOpt = None,
    mode: ModeOpt = None,
    dtype: DTypeOpt = None,
    replicas: Annotated[str, typer.Option(
        help="2D sparse parallelism (TorchRec's DMPCollection): shard over a group of "
             "world / R ranks and replicate it R times, each shard's replicas on one host. "
             "1: an ordinary plan; 'auto': try every R that divides the devices per host and "
             "keep the fastest (each R gets the whole --time-limit).")] = "1",
    sync_steps: Annotated[int, typer.Option(
        help="With --replicas other than 1: the replicas' weights and optimizer state are "
             "averaged every this many steps (priced per step as 1 / N of one sync).")] = 1,
) -> None:
    """Plan the sharding of a workload on a topology and write plan.json.

    Writes the plan first, then prints a per-rank table, the makespan, the lower bound and
    gap, the slowest rank, memory headroom per tier and the sharding-type mix; shows a
    spinner (and the best makespan so far, where the solver reports it) while it solves.
    With --replicas the plan is for one sharding group (its ranks are the table's rows).

    Examples:

      shardplan solve dgx-h100-2x8

      shardplan solve examples/my-cluster.yaml --tables examples/tables.csv --solver greedy

      shardplan solve h100-16x8 -t w500.yaml --time-limit 30 --report report/

      shardplan solve cpu-4 -t tables.csv --batch-size 2048 --batch-scope global --mode inference

      shardplan solve h100-128x8 --replicas auto --sync-steps 100
    """
    check_time_limit(time_limit)
    solver = resolve_solver_name(solver, "--solver")
    reps = _replicas_arg(replicas, sync_steps)
    topo, work = load_cli_problem(topology, tables, batch_size, batch_scope, mode, dtype)
    tried = None
    if reps == 1:
        cm = cost_model_for(work, topo, profile)
        p = plan_with_progress(work, topo, solver=solver, time_limit_s=time_limit, cost_model=cm)
    else:
        p, tried = _plan_2d(work, topo, reps, sync_steps, profile, solver, time_limit)
    try:  # first the plan: a reader that stops early (`| head`) must not cost the plan
        save_plan(p, out)
    except OSError as exc:
        raise SpecError(f"cannot write the plan: {exc.strerror}", source=str(out)) from None
    bad = fbgemm_unsupported(p)
    if bad:  # decided here, said once: what the executor will run these tables with
        shown = ", ".join(f"{n} ({w} columns)" for n, w in list(bad.items())[:4])
        warnings.warn(f"FBGEMM's kernels need widths that are multiples of "
                      f"{FBGEMM_WIDTH_MULTIPLE}; {len(bad)} table(s) are not ({shown}"
                      f"{', ...' if len(bad) > 4 else ''}): `shardplan validate` and `profile` "
                      "will run this plan with the torch kernels", ShardplanWarning, stacklevel=1)
    files = write_report(p, report) if report is not None else None
    print_summary(p)
    if p.replicas > 1 or tried:
        head = (f"2D: {p.replicas} replicas of a sharding group of {p.topology.world_size} "
                f"ranks ({p.replicas * p.topology.world_size} in all), weights synced every "
                f"{sync_steps} step(s)" if p.replicas > 1
                else "2D: one replica (an ordinary plan) is the fastest")
        say(head + ("; tried " + ", ".join(
            f"R={c.replicas}: " + (f"{c.makespan_ms:.3f} ms" if c.makespan_ms is not None
                                   else escape(c.why) if len(c.why) < 120 else "does not fit")
            for c in tried) if tried else ""))
    say(f"wrote {escape(str(out))}")
    if files is not None:
        say(f"wrote {escape(str(files.html))} and {len(files.images)} PNGs")


def _replicas_arg(replicas: str, sync_steps: int) -> int | None:
    """``--replicas`` as a count, or None for 'auto'."""
    if isinstance(sync_steps, bool) or sync_steps < 1:
        raise SpecError(f"--sync-steps must be a whole number >= 1, got {sync_steps}",
                        key_path="--sync-steps")
    text = replicas.strip().lower()
    if text == "auto":
        return None
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise SpecError(f"--replicas must be 'auto' or a whole number >= 1, got {replicas!r}",
                        key_path="--replicas")
    return n


def _plan_2d(work, topo, replicas: int | None, sync_steps: int, profile: Path | None,
             solver: str, time_limit: float):
    """A 2D plan with ``replicas`` (None: the fastest count) and the counts tried."""
    from shardplan.sparse2d import TwoDChoice, plan_2d, plan_best_2d, replica_options

    if profile is not None:
        say(f"cost model: profile {escape(str(profile))}")
    kw = dict(sync_steps=sync_steps, profile=profile, solver=solver, time_limit_s=time_limit)
    if replicas is None:
        with busy(f"planning 2D: replicas {', '.join(map(str, replica_options(topo)))}"):
            return plan_best_2d(work, topo, **kw)
    with busy(f"planning 2D: {replicas} replicas"):
        p = plan_2d(work, topo, replicas, **kw)
    return p, [TwoDChoice(replicas=replicas, makespan_ms=p.summary.makespan_ms)]


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
        t = Table(title="bundled topologies", box=box.SIMPLE_HEAD, show_edge=False,
                  collapse_padding=True, pad_edge=False)
        for col in ("name", "hosts", "devices", "device models", "default workload"):
            t.add_column(col, no_wrap=col != "device models")  # model lists wrap at ", "
        for n in bundled_topologies():
            topo, _ = load_problem(n, need_workload=False)
            models = ", ".join(sorted({g.device.model for g in topo.host_groups}))
            t.add_row(n, str(topo.num_hosts), str(topo.world_size), models,
                      Path(topo.workload_path).stem if topo.workload_path else "-")
        print_table(t)
        say("bundled workloads: " + ", ".join(bundled_workloads()))
        return
    topo, work = load_problem(name, need_workload=False)
    say(f"[bold]{escape(topo.name)}[/]: {escape(topo.description)}")
    for g in topo.host_groups:
        say(escape(
            f"  group {g.name}: {g.hosts} host(s) x {g.devices_per_host} {g.device.model} "
            f"({g.device.hbm_capacity_bytes / GiB:.0f} GiB HBM at "
            f"{g.device.hbm_bandwidth_bytes_per_s / 1e9:.0f} GB/s); "
            f"{g.intra_host_link.type.value} {g.intra_host_link.bandwidth_bytes_per_s / 1e9:.0f} GB/s; "
            f"{g.network.type.value} {g.network.bandwidth_bytes_per_s * 8 / 1e9:.0f} Gb/s per host"))
    if work is not None:
        say(escape(f"  workload: {work.name} ({len(work.tables)} tables)"))


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
    w = synthetic_workload(num_tables, seed=seed, batch_size=batch_size)
    write_workload(w, out)
    say(f"wrote {escape(str(out))}: {num_tables} tables")
