"""Plan reports: one self-contained HTML file (summary, embedded PNGs, per-rank table).

The figures themselves are :mod:`shardplan.figures` (re-exported here, with the comparison
and sweep rows of :mod:`shardplan.compare` and :mod:`shardplan.sweep`, so
``from shardplan.report import placement_figure`` keeps working).

Example:
    >>> from shardplan import load_problem, plan
    >>> from shardplan.report import write_report
    >>> topo, work = load_problem("cpu-4")
    >>> files = write_report(plan(work, topo), "/tmp/report")   # doctest: +SKIP
    >>> files.html.name                                          # doctest: +SKIP
    'report.html'
"""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping

import pandas as pd
from matplotlib.figure import Figure

from shardplan.compare import CompareRow
from shardplan.errors import SpecError
from shardplan.figures import (
    BAR_MAX_RANKS,
    DPI,
    FIGSIZE_IN,
    TOP_TABLES,
    compare_figure,
    figure_size_px,
    placement_figure,
    png_bytes,
    rank_memory_figure,
    rank_time_figure,
    save_figure,
    sharding_mix_figure,
    sweep_figure,
)
from shardplan.frames import (
    FULL_FRACTION,
    gap_percent,
    headroom,
    nearly_full,
    rank_frame,
    sharding_mix,
    slowest_rank,
)
from shardplan.sweep import SweepRow, scale_topology
from shardplan.types import Plan, Stage, Tier
from shardplan.units import GiB, format_bytes

# ---------------------------------------------------------------------------------------------
# HTML
# ---------------------------------------------------------------------------------------------

REPORT_FIGURES = ("rank_time", "rank_memory", "placement", "sharding_mix")
_CAPTIONS = {
    "rank_time": "Estimated step time per rank, by stage, with the makespan and lower bound.",
    "rank_memory": "Memory used per rank in each tier, against capacity.",
    "placement": "Which ranks hold the largest tables; the other tables grouped per rank.",
    "sharding_mix": "Tables and weight bytes per sharding type.",
}


@dataclass(frozen=True, kw_only=True, slots=True)
class ReportFiles:
    """What :func:`write_report` wrote."""

    html: Path
    images: Mapping[str, Path]


def plan_figure_makers(plan: Plan, top: int = TOP_TABLES, frame: pd.DataFrame | None = None,
                       ) -> dict[str, Callable[[], Figure]]:
    """The report's figures, by name (see ``REPORT_FIGURES``), each drawn when called."""
    df = rank_frame(plan) if frame is None else frame
    return {"rank_time": lambda: rank_time_figure(plan, df),
            "rank_memory": lambda: rank_memory_figure(plan, df),
            "placement": lambda: placement_figure(plan, top),
            "sharding_mix": lambda: sharding_mix_figure(plan)}


def plan_figures(plan: Plan, top: int = TOP_TABLES,
                 frame: pd.DataFrame | None = None) -> dict[str, Figure]:
    """The report's figures, by name (see ``REPORT_FIGURES``)."""
    return {name: draw() for name, draw in plan_figure_makers(plan, top, frame).items()}


def rank_table_html(plan: Plan, frame: pd.DataFrame | None = None) -> str:
    """The per-rank table as HTML: all ranks, escaped, with ``id="rank-table"``."""
    df = rank_frame(plan) if frame is None else frame
    cols = ["rank", "host", "device"]
    out = df[cols].copy()
    for tier in Tier:
        t = tier.value
        out[f"{t.upper()} GiB used / cap"] = [
            f"{u / GiB:.2f} / {c / GiB:.1f}"
            for u, c in zip(df[f"{t}_bytes"], df[f"{t}_capacity_bytes"])]
    for st in Stage:
        out[f"{st.value} ms"] = df[f"{st.value}_ms"].map(lambda v: f"{v:.3f}")
    out["total ms"] = df["total_ms"].map(lambda v: f"{v:.3f}")
    out["shards"] = df["num_shards"]
    out["tables"] = df["num_tables"]
    body = out.to_html(index=False, escape=True, border=0, classes="ranks", table_id="rank-table")
    return body


def _summary_rows(plan: Plan) -> list[tuple[str, str]]:
    s = plan.summary
    rows = [("workload", f"{plan.workload.name} ({s.num_tables} tables)"),
            ("topology", f"{plan.topology.name} ({s.num_ranks} ranks, "
                         f"{plan.topology.num_hosts} hosts)"),
            ("solver", f"{s.solver} ({s.status}, {s.solve_time_s:.2f} s)"),
            ("cost model", str(plan.provenance.cost_model.get("name", "?"))),
            ("makespan", f"{s.makespan_ms:.3f} ms")]
    rank, stage, ms = slowest_rank(plan)
    rows.append(("slowest rank", f"rank {rank} (host {plan.topology.rank(rank).host}); its "
                                 f"largest stage is {stage.value} at {ms:.3f} ms"))
    if s.lower_bound_ms:
        rows.append(("lower bound", f"{s.lower_bound_ms:.3f} ms (gap "
                                    f"{gap_percent(s.makespan_ms, s.lower_bound_ms):.1f}%)"))
    else:
        rows.append(("lower bound", "not computed by this solver"))
    for tier, h in headroom(plan).items():
        rows.append((f"{tier.value.upper()} headroom",
                     f"least free {h['min_free_bytes'] / GiB:.2f} GiB (rank "
                     f"{int(h['min_free_rank'])}); fullest {h['max_used_fraction'] * 100:.1f}%, "
                     f"mean {h['mean_used_fraction'] * 100:.1f}%"))
    full = nearly_full(plan)
    if full:
        shown = ", ".join(f"rank {r} {t.value.upper()} {f * 100:.1f}%" for r, t, f in full[:8])
        more = f" and {len(full) - 8} more" if len(full) > 8 else ""
        rows.append(("warning", f"nearly full (>= {FULL_FRACTION * 100:.0f}%): {shown}{more}; "
                                "allocator slack and fragmentation may not fit at run time"))
    mix = sharding_mix(plan)
    rows.append(("sharding mix", ", ".join(f"{a}: {b}" for a, b in zip(mix["sharding"],
                                                                       mix["tables"]))))
    rows.append(("shardplan", plan.provenance.shardplan_version))
    return rows


_CSS = """body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:24px;
color:#222;max-width:1300px}h1{font-size:20px}h2{font-size:16px;margin-top:28px}
table{border-collapse:collapse;font-size:12px}td,th{padding:3px 8px;border-bottom:1px solid #ddd;
text-align:right}th{background:#f3f3f3;position:sticky;top:0}table.summary td{text-align:left}
figure{margin:12px 0}img{max-width:100%;height:auto;border:1px solid #eee}
figcaption{font-size:12px;color:#555}.scroll{max-height:600px;overflow:auto;display:inline-block}"""


def report_html(plan: Plan, images: Mapping[str, bytes],
                frame: pd.DataFrame | None = None) -> str:
    """One self-contained HTML page: summary, embedded PNGs (base64) and the per-rank table.

    Args:
        plan: the plan.
        images: figure name -> PNG bytes, in display order.
    """
    esc = html.escape
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             f"<title>shardplan report: {esc(plan.workload.name)} on "
             f"{esc(plan.topology.name)}</title>", f"<style>{_CSS}</style></head><body>",
             f"<h1>shardplan report: {esc(plan.workload.name)} on {esc(plan.topology.name)}</h1>",
             '<table class="summary">']
    for k, v in _summary_rows(plan):
        parts.append(f"<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>")
    parts.append("</table>")
    for name, png in images.items():
        b64 = base64.b64encode(png).decode("ascii")
        cap = esc(_CAPTIONS.get(name, name))
        parts.append(f'<figure id="fig-{esc(name)}"><img alt="{cap}" '
                     f'src="data:image/png;base64,{b64}"><figcaption>{cap}</figcaption></figure>')
    parts.append(f'<h2 id="ranks-heading">Per-rank estimates ({len(plan.ranks)} ranks)</h2>')
    parts.append(f'<div class="scroll">{rank_table_html(plan, frame)}</div>')
    parts.append("</body></html>\n")
    return "\n".join(parts)


def make_out_dir(path: str | Path) -> Path:
    """Create an output folder (and its parents). Raises SpecError naming it when it exists as
    a file or cannot be created."""
    d = Path(path)
    try:
        d.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise SpecError("exists and is not a folder; pass another --out", source=str(d)) from None
    except OSError as exc:
        raise SpecError(f"cannot create the folder: {exc.strerror}", source=str(d)) from None
    return d


def write_report(plan: Plan, out_dir: str | Path, *, top: int = TOP_TABLES,
                 progress: Callable[[str], None] | None = None) -> ReportFiles:
    """Write ``report.html`` (self-contained, opens offline) and one PNG per figure.

    Args:
        plan: the plan.
        out_dir: created if missing.
        top: tables shown one row each in the placement map.
        progress: told each step as it starts (``drawing placement``, ...), for a display.

    Returns:
        The paths written.

    Raises:
        SpecError: ``out_dir`` exists and is not a directory, or cannot be written.
    """
    tell = progress or (lambda _step: None)
    d = make_out_dir(out_dir)
    pngs: dict[str, bytes] = {}
    paths: dict[str, Path] = {}
    tell("per-rank table")
    frame = rank_frame(plan)
    for name, draw in plan_figure_makers(plan, top, frame).items():
        tell(f"drawing {name}")
        pngs[name] = png_bytes(draw())
        paths[name] = d / f"{name}.png"
    tell("writing report.html")
    try:
        for name, data in pngs.items():
            paths[name].write_bytes(data)
        out = d / "report.html"
        out.write_text(report_html(plan, pngs, frame), encoding="utf-8")
    except OSError as exc:
        raise SpecError(f"cannot write the report: {exc.strerror}", source=str(d)) from None
    return ReportFiles(html=out, images=paths)


__all__ = ["BAR_MAX_RANKS", "CompareRow", "DPI", "FIGSIZE_IN", "REPORT_FIGURES", "ReportFiles",
           "SweepRow", "compare_figure", "figure_size_px", "format_bytes", "gap_percent",
           "placement_figure", "plan_figures", "png_bytes", "rank_memory_figure",
           "rank_table_html", "rank_time_figure", "report_html", "save_figure", "scale_topology",
           "sharding_mix_figure", "sweep_figure", "write_report"]
