"""Re-planning commands: replan (a new plan that moves few bytes), diff (what moving between
two plans sends where)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich import box
from rich.markup import escape
from rich.table import Table

from shardplan.cli.base import (
    app,
    busy,
    check_positive,
    check_time_limit,
    console,
    handle_errors,
    reflow_doc,
    say,
    write_file,
)
from shardplan.errors import SpecError
from shardplan.loaders import load_topology, load_workload, resolve_workload_path
from shardplan.plans import load_plan, save_plan
from shardplan.replanning import REPLAN_SOLVERS, Migration, diff_plans, replan_full
from shardplan.types import Plan
from shardplan.units import GiB, format_bytes

FigureOpt = Annotated[Optional[Path], typer.Option(
    "--figure", help="Also draw the migration (GiB received and sent per rank) as a PNG.")]
LostHostOpt = Annotated[Optional[list[int]], typer.Option(
    "--lost-host", help="An old host id that is gone (repeat for several); default: a host "
    "group that shrank loses its last hosts.")]


def print_migration(old: Plan, new: Plan, mig: Migration, top: int = 10) -> None:
    """Both makespans, shards kept and moved, bytes, the time estimate and its bottleneck,
    the busiest links and ranks, and the largest transfers."""
    say(f"makespan: old {old.summary.makespan_ms:.3f} ms ({old.topology.world_size} ranks), "
        f"new [bold]{new.summary.makespan_ms:.3f} ms[/] ({new.topology.world_size} ranks)")
    say(f"shards: {mig.kept_shards} kept, {mig.moved_shards} moved, {mig.fresh_shards} fresh "
        "(new tables)")
    say(f"bytes: [bold]{format_bytes(mig.total_bytes)}[/] over the network "
        f"({format_bytes(mig.moved_bytes)} moved between ranks, "
        f"{format_bytes(mig.restored_bytes)} restored from a checkpoint); "
        f"{format_bytes(mig.kept_bytes)} stay; {format_bytes(mig.fresh_bytes)} start fresh")
    rm = mig.rank_map.as_dict()
    if rm["lost_hosts"] or rm["added_hosts"]:
        say(f"hosts: lost {rm['lost_hosts'] or 'none'}, added {rm['added_hosts'] or 'none'}; "
            f"{rm['renumbered']} surviving ranks renumbered")
    if not mig.transfers:
        say("migration: nothing moves")
        return
    say(f"migration: [bold]{mig.time_s:.3f} s[/] estimated (busiest link: "
        f"{escape(mig.bottleneck)}; transfers in parallel, no latency: a lower bound)")
    links = sorted(mig.link_time_s.items(), key=lambda kv: (-kv[1], kv[0]))[:top]
    t = Table(title="busiest links", box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    for col in ("link", "GiB", "seconds"):
        t.add_column(col, justify="right" if col != "link" else "left", no_wrap=True)
    for name, sec in links:
        t.add_row(escape(name), f"{mig.link_bytes[name] / GiB:.2f}", f"{sec:.3f}")
    console.print(t)
    big = sorted(mig.transfers, key=lambda x: (-x.bytes, x.table, x.row_offset, x.col_offset))
    t = Table(title=f"largest transfers ({len(mig.transfers)} in all)", box=box.SIMPLE_HEAD,
              show_edge=False, pad_edge=False)
    for col in ("table", "rows", "cols", "from", "to", "GiB"):
        t.add_column(col, justify="left" if col == "table" else "right", no_wrap=True)
    for x in big[:top]:
        t.add_row(escape(x.table), f"{x.row_offset}+{x.num_rows}", f"{x.col_offset}+{x.num_cols}",
                  "checkpoint" if x.source is None else f"rank {x.source}", f"rank {x.dest}",
                  f"{x.bytes / GiB:.3f}")
    console.print(t)


def _write_migration(path: Path, mig: Migration) -> None:
    d = mig.as_dict()
    d["bytes_in"] = list(mig.bytes_in)
    d["bytes_out"] = list(mig.bytes_out)
    write_file(path, json.dumps(d, indent=1, sort_keys=True) + "\n")


def _write_figure(path: Path, mig: Migration, new: Plan) -> None:
    from shardplan.figures import png_bytes
    from shardplan.replanning.figures import migration_figure

    write_file(path, png_bytes(migration_figure(mig, new)))


@app.command("replan")
@handle_errors
@reflow_doc
def replan_cmd(
    old_plan: Annotated[Path, typer.Argument(metavar="OLD_PLAN", help="The plan the job runs "
                                             "now (JSON from `shardplan solve`).")],
    topology: Annotated[str, typer.Argument(metavar="NEW_TOPOLOGY", help="The changed "
                                            "cluster: a topology YAML or a bundled name.")],
    tables: Annotated[Optional[Path], typer.Option(
        "--tables", "-t", help="The new workload (YAML or CSV, or a bundled name); default: "
        "the old plan's tables.")] = None,
    move_budget_gib: Annotated[Optional[float], typer.Option(
        "--move-budget-gib", help="Minimise the step time moving at most this many GiB "
        "(weights and optimizer state).")] = None,
    move_weight: Annotated[Optional[float], typer.Option(
        "--move-weight", help="Minimise step time + W x migration time (default 0.01: the "
        "migration amortised over 100 steps).")] = None,
    lost_host: LostHostOpt = None,
    solver: Annotated[str, typer.Option(help="auto, greedy, local_search or ilp.")] = "auto",
    time_limit: Annotated[float, typer.Option(help="Time budget of the ILP, seconds (the "
                                              "other solvers stop on work done).")] = 60.0,
    out: Annotated[Path, typer.Option("--out", "-o", help="Where to write the new plan.")
                   ] = Path("replan.json"),
    migration: Annotated[Optional[Path], typer.Option(
        "--migration", help="Also write the migration (bytes per link, flows) as JSON.")] = None,
    figure: FigureOpt = None,
) -> None:
    """Re-plan for a changed cluster or workload, moving as few bytes as the step time allows.

    A shard that keeps its table, rows, columns and device moves nothing; surviving devices
    keep their data (hosts matched by group and order; name lost hosts with --lost-host). The
    shards of a lost host are restored from a checkpoint; new tables start fresh. Prints both
    makespans, the shards kept and moved, bytes over the network and the estimated migration
    time. Exit 2 when the new cluster cannot hold the tables (the message says what would),
    1 when the tables do not match the old plan.

    Examples:

      shardplan replan plan.json h100-15x8.yaml --lost-host 5 --out new.json

      shardplan replan plan.json h100-18x8.yaml --move-budget-gib 500 --out new.json

      shardplan replan plan.json h100-16x8 --tables w330.yaml --move-weight 0.01
    """
    if move_budget_gib is not None and move_weight is not None:
        raise SpecError("give --move-budget-gib or --move-weight, not both",
                        key_path="--move-budget-gib")
    if move_budget_gib is not None and not (math.isfinite(move_budget_gib)
                                            and move_budget_gib >= 0):
        raise SpecError(f"--move-budget-gib must be >= 0, got {move_budget_gib}",
                        key_path="--move-budget-gib")
    if move_weight is not None and not (math.isfinite(move_weight) and move_weight >= 0):
        raise SpecError(f"--move-weight must be >= 0, got {move_weight}",
                        key_path="--move-weight")
    if solver not in REPLAN_SOLVERS:
        raise SpecError(f"--solver {solver!r}: choose one of {', '.join(REPLAN_SOLVERS)}",
                        key_path="--solver")
    check_time_limit(time_limit)
    with busy("replan") as status:
        status(f"reading {old_plan}")
        old = load_plan(old_plan)
        topo = load_topology(topology)
        work = load_workload(resolve_workload_path(tables)) if tables is not None else None
        status("solving")
        res = replan_full(old, topo, work, move_weight=move_weight,
                          move_budget_bytes=None if move_budget_gib is None
                          else move_budget_gib * GiB,
                          solver=solver, lost_hosts=tuple(lost_host or ()),
                          time_limit_s=time_limit)
    save_plan(res.plan, out)
    if migration is not None:
        _write_migration(migration, res.migration)
    if figure is not None:
        _write_figure(figure, res.migration, res.plan)
    print_migration(old, res.plan, res.migration)
    tried = res.details.get("tried", {})
    say("tried: " + "; ".join(
        f"{escape(k)} {v['makespan_ms']:.3f} ms / {v['moved_bytes'] / GiB:.2f} GiB"
        for k, v in tried.items() if "makespan_ms" in v) + f"; picked {res.details['picked']}")
    for path in (out, migration, figure):
        if path is not None:
            say(f"wrote {escape(str(path))}")


@app.command("diff")
@handle_errors
@reflow_doc
def diff_cmd(
    a: Annotated[Path, typer.Argument(metavar="A", help="The old plan (JSON).")],
    b: Annotated[Path, typer.Argument(metavar="B", help="The new plan (JSON).")],
    lost_host: LostHostOpt = None,
    top: Annotated[int, typer.Option(help="Links and transfers listed.")] = 10,
    json_out: Annotated[Optional[Path], typer.Option(
        "--json", help="Also write the migration (bytes per link, flows) as JSON.")] = None,
    figure: FigureOpt = None,
) -> None:
    """What moving from plan A to plan B sends where: shards kept and moved, from which rank
    to which, bytes per link, the estimated migration time, and the makespan of each plan.

    Ranks of B's topology are matched to A's as `replan` does (a plan made by `replan`
    records its lost hosts; --lost-host overrides).

    Examples:

      shardplan diff plan.json new.json

      shardplan diff plan.json scratch.json --lost-host 5 --json migration.json
    """
    check_positive(top, "--top")
    pa, pb = load_plan(a), load_plan(b)
    mig = diff_plans(pa, pb, lost_hosts=None if lost_host is None else tuple(lost_host))
    if json_out is not None:
        _write_migration(json_out, mig)
    if figure is not None:
        _write_figure(figure, mig, pb)
    print_migration(pa, pb, mig, top=top)
    for path in (json_out, figure):
        if path is not None:
            say(f"wrote {escape(str(path))}")
