"""Commands that look at plans: report, export, explain."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich import box
from rich.markup import escape
from rich.table import Table

from shardplan.cli.base import (
    ProfileOpt,
    app,
    busy,
    check_positive,
    describe_profiles,
    handle_errors,
    print_table,
    reflow_doc,
    say,
    write_file,
)
from shardplan.compare import torchrec_function
from shardplan.errors import SpecError
from shardplan.estimators.cost_model import default_cost_model
from shardplan.estimators.recorded import cost_model_of
from shardplan.explain import Verdict, explain_table, format_ranks
from shardplan.plans import load_plan, plan_to_json
from shardplan.report import write_report
from shardplan.units import GiB

# ---------------------------------------------------------------------------------------------
# report
# ---------------------------------------------------------------------------------------------


@app.command("report")
@handle_errors
@reflow_doc
def report_cmd(
    plan_file: Annotated[Path, typer.Argument(metavar="PLAN", help="A plan JSON written by "
                                              "`shardplan solve`.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for report.html and the "
                                      "PNGs (created if missing).")] = Path("report"),
    top: Annotated[int, typer.Option(help="Tables drawn one row each in the placement map; "
                                     "the rest are grouped.")] = 40,
) -> None:
    """Write one self-contained HTML report (plots embedded, opens offline) plus the PNGs.

    Plots: per-rank stacked time with makespan and lower bound; per-rank memory by tier
    against capacity; a placement map of the largest tables (UVM and UVM-caching shards
    hatched); the sharding-type mix. Then the per-rank table. Shows each step while it works.

    Examples:

      shardplan report plan.json

      shardplan report plan.json --out reports/dcnv2 --top 20
    """
    check_positive(top, "--top")
    with busy("report") as status:
        status(f"reading {plan_file}")
        p = load_plan(plan_file)
        files = write_report(p, out, top=top, progress=status)
    say(f"wrote {escape(str(files.html))}")
    for name, path in files.images.items():
        say(f"  {name}: {escape(str(path))}")


# ---------------------------------------------------------------------------------------------
# export
# ---------------------------------------------------------------------------------------------

EXPORT_FORMATS = ("json", "csv", "torchrec")


@app.command("export")
@handle_errors
@reflow_doc
def export_cmd(
    plan_file: Annotated[Path, typer.Argument(metavar="PLAN", help="A plan JSON.")],
    fmt: Annotated[str, typer.Option("--format", "-f", help="json (the plan), csv (one row "
                                     "per shard) or torchrec (a TorchRec ShardingPlan as "
                                     "JSON).")] = "json",
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Output file; standard "
                                                "output if left out.")] = None,
) -> None:
    """Export a plan as JSON, as CSV (one row per shard) or as a TorchRec sharding plan.

    Examples:

      shardplan export plan.json --format csv --out shards.csv

      shardplan export plan.json --format torchrec > torchrec_plan.json
    """
    if fmt not in EXPORT_FORMATS:
        raise SpecError(f"unknown format {fmt!r}; choose one of {', '.join(EXPORT_FORMATS)}",
                        key_path="--format")
    p = load_plan(plan_file)
    if fmt == "json":
        text = plan_to_json(p)
    elif fmt == "csv":
        text = p.shard_frame().to_csv(index=False, lineterminator="\n")
    else:
        text = json.dumps(torchrec_function("export_torchrec")(p), indent=2, sort_keys=True) + "\n"
    if out is None:
        sys.stdout.write(text)
        sys.stdout.flush()
    else:
        write_file(out, text)
        say(f"wrote {escape(str(out))} ({fmt})")


# ---------------------------------------------------------------------------------------------
# explain
# ---------------------------------------------------------------------------------------------

_STYLE = {Verdict.CHOSEN: "bold green", Verdict.CONSTRAINT: "dim", Verdict.NOT_OFFERED: "dim",
          Verdict.MEMORY: "red", Verdict.LOWER_COST: "yellow"}


def _num(x: float | None, k: float = 1.0) -> str:
    return "-" if x is None or math.isnan(x) else f"{x / k:.3f}"


@app.command("explain")
@handle_errors
@reflow_doc
def explain_cmd(
    plan_file: Annotated[Path, typer.Argument(metavar="PLAN", help="A plan JSON.")],
    table: Annotated[str, typer.Argument(help="A table name of the plan.")],
    limit: Annotated[int, typer.Option(help="Show at most this many options.")] = 30,
    profile: ProfileOpt = None,
) -> None:
    """Why a table got its sharding and ranks: every option, its estimated cost and memory,
    and what ruled each other one out (a constraint, memory, or a higher makespan).

    Costs come from the cost model that made the plan (or, with --profile, from that
    calibration profile); an option's makespan is the plan's if that option replaced the
    chosen one, its shards placed on the least-loaded ranks with room and the rest of the
    plan unchanged. Each option's reason is listed under the table by its number.

    Examples:

      shardplan explain plan.json t_cat_0

      shardplan explain plan.json t00042 --limit 10 --profile my-profile.yaml
    """
    check_positive(limit, "--limit")
    p = load_plan(plan_file)
    cm = (cost_model_of(p, default_if_unknown=True) if profile is None
          else default_cost_model(p.workload, p.topology, profile))
    verdicts, makespan = explain_table(p, table, cm)
    tp, spec = p.table(table), p.workload.table(table)
    say(f"[bold]{escape(table)}[/]: {spec.num_embeddings:,} rows x {spec.embedding_dim} "
        f"{spec.dtype.value}, pooling factor {spec.pooling_factor:g}, optimizer "
        f"{p.workload.optimizer_of(spec).value}")
    say(f"placed {tp.sharding_type.value} ({len(tp.shards)} shard(s), "
        f"{tp.shards[0].placement}) on ranks {format_ranks(tp.ranks)}")
    loads = {r.rank: r.total_ms for r in p.ranks}
    slowest = max(tp.ranks, key=lambda r: (loads[r], -r))
    say(f"its slowest rank is {slowest} at {loads[slowest]:.3f} ms; the plan's makespan is "
        f"{p.summary.makespan_ms:.3f} ms ({makespan:.3f} ms under the model below)")
    say(f"cost model: {escape(cm.name)} ({escape(describe_profiles(cm))})"
        + (" - the plan's own" if profile is None else f", from {escape(str(profile))}"))
    t = Table(header_style="bold", title=escape(f"options of {table}"), box=box.SIMPLE_HEAD, show_edge=False,
              collapse_padding=True, pad_edge=False)
    for col in ("#", "option", "work ms", "HBM GiB", "DDR GiB", "makespan", "verdict"):
        t.add_column(col, justify="left" if col in ("option", "verdict") else "right",
                     no_wrap=True)
    shown = verdicts[:limit]
    for i, v in enumerate(shown, start=1):
        label = v.option.label + ("*" if v.alternatives > 1 else "")
        t.add_row(str(i), label, _num(v.work_ms), _num(v.hbm_bytes, GiB), _num(v.ddr_bytes, GiB),
                  _num(v.makespan_ms), v.verdict.value, style=_STYLE.get(v.verdict))
    print_table(t)
    for i, v in enumerate(shown, start=1):
        say(f"{i:>3}. {v.verdict.value}: {escape(v.reason)}")
    say("work: time the option adds, summed over ranks; memory: summed over ranks; makespan: "
        "the plan's if this option replaced the chosen one (shards on the least-loaded ranks "
        "with room, the rest unchanged). * best of several options that differ only in their "
        "host.")
    if len(verdicts) > limit:
        say(f"({len(verdicts) - limit} more options; --limit {len(verdicts)} shows all)")
