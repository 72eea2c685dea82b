"""Plan reports: matplotlib figures and one self-contained HTML file.

Figures are built on ``matplotlib.figure.Figure`` with the Agg canvas (no pyplot, no global
state, no display needed). Every figure has a fixed size (``FIGSIZE_IN`` at ``DPI``), so a PNG
is always the same number of pixels. Plans of any size stay readable: per-rank plots switch
from bars to filled steps above ``BAR_MAX_RANKS`` ranks, and the placement map shows only the
``top`` largest tables, the rest grouped per rank by sharding type; nothing draws one label
per table or per rank of a large plan.

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
import dataclasses
import html
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator

from shardplan.errors import SpecError
from shardplan.frames import headroom, rank_frame, sharding_mix
from shardplan.types import Plan, ShardingType, Stage, Tier, Topology

GiB = 2**30
DPI = 100
#: figure name -> size in inches; PNGs are (width x DPI) x (height x DPI) pixels.
FIGSIZE_IN: dict[str, tuple[float, float]] = {
    "rank_time": (12.0, 5.0),
    "rank_memory": (12.0, 6.0),
    "placement": (12.0, 9.0),
    "sharding_mix": (12.0, 4.0),
    "compare": (10.0, 5.0),
    "sweep": (10.0, 5.0),
}
BAR_MAX_RANKS = 128  # above this, per-rank plots draw filled steps instead of separate bars
HOST_LINES_MAX_HOSTS = 32  # draw host boundaries on per-rank plots up to this many hosts
TOP_TABLES = 40  # tables drawn one row each in the placement map; the rest are grouped
MIN_CELL_FRACTION = 1 / 400  # narrowest placement-map cell, as a share of the rank axis

SHARDING_COLORS: dict[ShardingType, str] = {
    ShardingType.TABLE_WISE: "#4C72B0",
    ShardingType.ROW_WISE: "#DD8452",
    ShardingType.COLUMN_WISE: "#55A868",
    ShardingType.TABLE_ROW_WISE: "#C44E52",
    ShardingType.TABLE_COLUMN_WISE: "#8172B3",
    ShardingType.DATA_PARALLEL: "#8C8C8C",
}
STAGE_STYLE: dict[Stage, tuple[str, str]] = {  # label, colour; compute blue, comm orange
    Stage.INPUT_DIST: ("input dist", "#C44E52"),
    Stage.FWD_COMPUTE: ("forward compute", "#3B6BA5"),
    Stage.BWD_COMPUTE: ("backward compute", "#8EB1DA"),
    Stage.FWD_COMM: ("forward comm", "#D9732B"),
    Stage.BWD_COMM: ("backward comm", "#F2B98C"),
    Stage.DP_SYNC: ("data-parallel sync", "#8C6D4F"),
}
TIER_COLORS = {Tier.HBM: "#3B6BA5", Tier.DDR: "#55A868"}


def figure_size_px(name: str) -> tuple[int, int]:
    """Width and height in pixels of the PNG of figure ``name``."""
    w, h = FIGSIZE_IN[name]
    return round(w * DPI), round(h * DPI)


def _figure(name: str) -> Figure:
    fig = Figure(figsize=FIGSIZE_IN[name], dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig: Figure, path: str | Path) -> Path:
    """Write ``fig`` as a PNG of its fixed size (no tight bbox, so the size is exact)."""
    p = Path(path)
    fig.savefig(p, format="png", dpi=DPI, metadata={"Software": None})
    return p


def png_bytes(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, metadata={"Software": None})
    return buf.getvalue()


def _title(plan: Plan) -> str:
    s = plan.summary
    return f"{plan.workload.name} on {plan.topology.name} ({s.num_tables} tables, " \
           f"{s.num_ranks} ranks, {s.solver})"


def format_bytes(n: float) -> str:
    """``n`` bytes in the largest binary unit that keeps it >= 1 (``1.50 GiB``, ``12.0 MiB``)."""
    for unit, k in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(n) >= k:
            return f"{n / k:.3g} {unit}"
    return f"{n:.0f} B"


def gap_percent(makespan_ms: float, lower_bound_ms: float | None) -> float | None:
    """How far above the lower bound a makespan is, in percent (None without a bound)."""
    if not lower_bound_ms or lower_bound_ms <= 0:
        return None
    return (makespan_ms / lower_bound_ms - 1.0) * 100.0


def _per_rank(ax, x: np.ndarray, values: np.ndarray, bottom: np.ndarray, color: str,
              label: str) -> None:
    """Bars for few ranks, a filled step for many (thousands of bars are slow and unreadable)."""
    if len(x) <= BAR_MAX_RANKS:
        ax.bar(x, values, bottom=bottom, color=color, label=label, width=0.8, linewidth=0)
    else:
        xs = np.repeat(np.append(x - 0.5, x[-1] + 0.5), 2)[1:-1]
        ax.fill_between(xs, np.repeat(bottom, 2), np.repeat(bottom + values, 2), color=color,
                        label=label, linewidth=0)


def _step_line(ax, x: np.ndarray, values: np.ndarray, **kw) -> None:
    """A per-rank value (a capacity, a step time) as a horizontal step per rank."""
    xs = np.repeat(np.append(x - 0.5, x[-1] + 0.5), 2)[1:-1]
    ax.plot(xs, np.repeat(values, 2), **kw)


def _rank_axis(ax, plan: Plan) -> None:
    n = len(plan.ranks)
    ax.set_xlim(-0.5, n - 0.5)
    ax.xaxis.set_major_locator(MaxNLocator(nbins=16, integer=True))
    ax.set_xlabel("rank")
    hosts = plan.topology.num_hosts
    if 1 < hosts <= HOST_LINES_MAX_HOSTS:
        starts = sorted({min(plan.topology.ranks_of_host(h)) for h in range(hosts)})[1:]
        for s in starts:
            ax.axvline(s - 0.5, color="#BBBBBB", linewidth=0.6, zorder=0)


def rank_time_figure(plan: Plan, frame: pd.DataFrame | None = None) -> Figure:
    """Per-rank stacked estimated time per stage, with the makespan and lower-bound lines.

    Args:
        plan: the plan.
        frame: ``rank_frame(plan)``, if already computed.
    """
    df = rank_frame(plan) if frame is None else frame
    fig = _figure("rank_time")
    ax = fig.add_subplot()
    x = df["rank"].to_numpy(dtype=float)
    bottom = np.zeros(len(df))
    for st, (label, color) in STAGE_STYLE.items():
        v = df[f"{st.value}_ms"].to_numpy(dtype=float)
        if np.any(v > 0):
            _per_rank(ax, x, v, bottom, color, label)
            bottom = bottom + v
    s = plan.summary
    total = df["total_ms"].to_numpy(dtype=float)
    if np.any(np.abs(total - bottom) > 1e-6 * max(1.0, float(total.max()))):
        # the cost model overlaps stages: its step time differs from the stacked sum
        _step_line(ax, x, total, color="black", linewidth=1.0,
                  label="step time (with overlap)")
    ax.axhline(s.makespan_ms, color="#B22222", linewidth=1.6,
               label=f"makespan {s.makespan_ms:.3f} ms")
    if s.lower_bound_ms:
        gap = gap_percent(s.makespan_ms, s.lower_bound_ms)
        ax.axhline(s.lower_bound_ms, color="black", linestyle="--", linewidth=1.2,
                   label=f"lower bound {s.lower_bound_ms:.3f} ms (gap {gap:.1f}%)")
    _rank_axis(ax, plan)
    ax.set_ylabel("estimated time per step (ms)")
    ax.set_ylim(0, max(s.makespan_ms, float(bottom.max()), s.lower_bound_ms or 0.0) * 1.18)
    ax.set_title("Estimated step time per rank — " + _title(plan), fontsize=11)
    ax.legend(loc="upper right", ncols=4, fontsize=8, frameon=True)
    ax.grid(axis="y", alpha=0.3)
    return fig


def rank_memory_figure(plan: Plan, frame: pd.DataFrame | None = None) -> Figure:
    """Per-rank memory used in each tier (HBM, DDR), against each rank's capacity.

    Args:
        plan: the plan.
        frame: ``rank_frame(plan)``, if already computed.
    """
    df = rank_frame(plan) if frame is None else frame
    fig = _figure("rank_memory")
    axes = fig.subplots(2, 1, sharex=True)
    x = df["rank"].to_numpy(dtype=float)
    for ax, tier in zip(axes, Tier):
        used = df[f"{tier.value}_bytes"].to_numpy(dtype=float) / GiB
        cap = df[f"{tier.value}_capacity_bytes"].to_numpy(dtype=float) / GiB
        _per_rank(ax, x, used, np.zeros(len(x)), TIER_COLORS[tier], "used")
        _step_line(ax, x, cap, color="#B22222", linewidth=1.4, label="capacity")
        frac = np.divide(used, cap, out=np.zeros_like(used), where=cap > 0)
        i = int(np.argmax(frac)) if len(frac) else 0
        note = (f"fullest rank {int(x[i])}: {used[i]:.1f} of {cap[i]:.1f} GiB "
                f"({frac[i] * 100:.0f}%)" if used.max() > 0 else "unused")
        ax.set_title(f"{tier.value.upper()} per rank — {note}", fontsize=10, loc="left")
        ax.set_ylabel(f"{tier.value.upper()} GiB")
        ax.set_ylim(0, max(float(cap.max()), float(used.max()), 1e-9) * 1.1)
        ax.legend(loc="upper right", fontsize=8)
        ax.grid(axis="y", alpha=0.3)
        _rank_axis(ax, plan)
    axes[0].set_xlabel("")
    fig.suptitle("Memory per rank — " + _title(plan), fontsize=11)
    return fig


def placement_figure(plan: Plan, top: int = TOP_TABLES) -> Figure:
    """Which ranks hold each of the ``top`` largest tables (coloured by sharding type), and
    below, per rank, the weight bytes of all other tables, stacked by sharding type.

    Args:
        plan: the plan.
        top: how many of the largest tables (by weight bytes) get a row of their own.
    """
    if top < 1:
        raise SpecError(f"top must be >= 1, got {top}", key_path="top")
    bits = {t.name: t.dtype.bits for t in plan.workload.tables}
    size = {t.name: t.num_embeddings * t.embedding_dim * bits[t.name] / 8 for t in plan.tables}
    order = sorted(plan.tables, key=lambda t: (-size[t.name], t.name))
    shown, rest = order[:top], order[top:]
    n = len(plan.ranks)
    fig = _figure("placement")
    if rest:
        ax, ax2 = fig.subplots(2, 1, sharex=True, height_ratios=[3, 1])
    else:
        ax, ax2 = fig.subplots(1, 1), None
    # one bar segment per run of consecutive ranks; at least MIN_CELL_FRACTION of the axis wide,
    # so a one-rank shard stays visible when there are more ranks than pixels
    min_w = max(1.0, n * MIN_CELL_FRACTION)
    for row, t in enumerate(shown):
        runs, ranks = [], list(t.ranks)
        start = prev = ranks[0]
        for r in ranks[1:] + [None]:
            if r is not None and r == prev + 1:
                prev = r
                continue
            width = prev - start + 1
            pad = max(0.0, min_w - width) / 2
            runs.append((start - 0.5 - pad, width + 2 * pad))
            if r is not None:
                start = prev = r
        ax.broken_barh(runs, (row - 0.45, 0.9), facecolors=SHARDING_COLORS[t.sharding_type],
                       linewidth=0)
    ax.set_ylim(len(shown) - 0.5, -0.5)
    labels = [f"{t.name} {t.sharding_type.short} ({format_bytes(size[t.name])})" for t in shown]
    fs = 8 if len(shown) <= 25 else max(4, int(8 * 25 / len(shown)))
    ax.set_yticks(range(len(shown)), labels, fontsize=fs)
    ax.grid(axis="y", color="#E6E6E6", linewidth=0.6)  # guides from each label to its shards
    ax.set_axisbelow(True)
    _rank_axis(ax, plan)
    ax.set_title(f"Placement of the {len(shown)} largest tables"
                 + (f" (of {len(plan.tables)})" if rest else ""), fontsize=10, loc="left")
    present = sorted({t.sharding_type for t in plan.tables}, key=list(ShardingType).index)
    handles = [Patch(color=SHARDING_COLORS[st], label=f"{st.short} ({st.value})") for st in present]
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8,
              title="sharding", title_fontsize=8)
    if ax2 is not None:
        ax.set_xlabel("")
        per = {st: np.zeros(n) for st in present}
        for t in rest:
            b = bits[t.name] / 8
            acc = per[t.sharding_type]
            for s in t.shards:
                acc[s.rank] += s.num_rows * s.num_cols * b
        x = np.arange(n, dtype=float)
        bottom = np.zeros(n)
        for st in present:
            v = per[st] / GiB
            if v.any():
                _per_rank(ax2, x, v, bottom, SHARDING_COLORS[st], st.short)
                bottom = bottom + v
        ax2.set_ylabel("GiB")
        ax2.set_ylim(0, max(float(bottom.max()), 1e-9) * 1.15)
        ax2.set_title(f"The other {len(rest)} tables: weight GiB per rank, by sharding type",
                      fontsize=10, loc="left")
        ax2.grid(axis="y", alpha=0.3)
        _rank_axis(ax2, plan)
    fig.suptitle("Placement map — " + _title(plan), fontsize=11)
    return fig


def sharding_mix_figure(plan: Plan) -> Figure:
    """Tables and weight GiB per sharding type."""
    mix = sharding_mix(plan)
    fig = _figure("sharding_mix")
    a1, a2 = fig.subplots(1, 2)
    colors = [SHARDING_COLORS[ShardingType(v)] for v in mix["sharding_type"]]
    labels = [f"{s} ({v})" for s, v in zip(mix["sharding"], mix["sharding_type"])]
    y = np.arange(len(mix))
    for ax, col, unit, scale in ((a1, "tables", "tables", 1.0), (a2, "weight_bytes", "GiB", GiB)):
        vals = mix[col].to_numpy(dtype=float) / scale
        ax.barh(y, vals, color=colors)
        ax.set_yticks(y, labels, fontsize=9)
        ax.invert_yaxis()
        ax.set_xlabel(unit)
        ax.set_xlim(0, max(float(vals.max()), 1e-9) * 1.25)
        total = vals.sum() or 1.0
        for yi, v in zip(y, vals):
            txt = f"{v:.0f}" if unit == "tables" else format_bytes(v * GiB)
            ax.text(v, yi, f" {txt} ({v / total * 100:.0f}%)", va="center", fontsize=8)
        ax.grid(axis="x", alpha=0.3)
    a1.set_title("tables per sharding type", fontsize=10, loc="left")
    a2.set_title("weight GiB per sharding type", fontsize=10, loc="left")
    fig.suptitle("Sharding-type mix — " + _title(plan), fontsize=11)
    return fig


@dataclass(frozen=True, kw_only=True, slots=True)
class CompareRow:
    """One planner's result in a comparison; ``makespan_ms`` is None when it found no plan."""

    name: str
    makespan_ms: float | None
    lower_bound_ms: float | None
    solve_time_s: float
    status: str
    note: str = ""


def compare_figure(rows: Sequence[CompareRow], title: str = "") -> Figure:
    """Makespans side by side, with each planner's lower bound and the best bound overall."""
    fig = _figure("compare")
    ax = fig.add_subplot()
    x = np.arange(len(rows))
    spans = [r.makespan_ms for r in rows]
    top = max([m for m in spans if m is not None] or [1.0])
    best_span = min([m for m in spans if m is not None], default=None)
    colors = ["#DDDDDD" if m is None else "#55A868" if m == best_span else "#3B6BA5"
              for m in spans]
    ax.bar(x, [m or 0.0 for m in spans], color=colors, width=0.6)
    bounds = [r.lower_bound_ms for r in rows if r.lower_bound_ms]
    best = max(bounds) if bounds else None
    for xi, r in zip(x, rows):
        if r.makespan_ms is None:
            ax.text(xi, top * 0.02, f"{r.status}", ha="center", va="bottom", rotation=90,
                    fontsize=9, color="#B22222")
            continue
        ax.text(xi, r.makespan_ms, f"{r.makespan_ms:.3f} ms\n{r.solve_time_s:.2f} s",
                ha="center", va="bottom", fontsize=8)
        if r.lower_bound_ms:
            ax.plot([xi - 0.3, xi + 0.3], [r.lower_bound_ms] * 2, color="black", linewidth=1.2,
                    linestyle=":")
    if best:
        ax.axhline(best, color="black", linestyle="--", linewidth=1.2,
                   label=f"best lower bound {best:.3f} ms")
        ax.legend(loc="upper left", fontsize=8)
    ax.set_xticks(x, [r.name for r in rows], rotation=20 if len(rows) > 5 else 0, ha="right"
                  if len(rows) > 5 else "center", fontsize=9)
    ax.set_ylabel("makespan (ms)")
    ax.set_ylim(0, top * 1.22)
    ax.grid(axis="y", alpha=0.3)
    ax.set_title(("Makespan by planner (label: makespan, planning time; best in green)" +
                  (f" — {title}" if title else "")), fontsize=10)
    return fig


@dataclass(frozen=True, kw_only=True, slots=True)
class SweepRow:
    """One cluster size in a sweep; ``makespan_ms`` is None when nothing fits."""

    devices: int
    hosts: int
    makespan_ms: float | None
    lower_bound_ms: float | None
    solve_time_s: float
    note: str = ""


def sweep_figure(rows: Sequence[SweepRow], target_ms: float | None = None,
                 title: str = "") -> Figure:
    """Makespan against the number of devices; sizes where nothing fits marked with a red x."""
    fig = _figure("sweep")
    ax = fig.add_subplot()
    ok = sorted((r for r in rows if r.makespan_ms is not None), key=lambda r: r.devices)
    bad = [r for r in rows if r.makespan_ms is None]
    if ok:
        ax.plot([r.devices for r in ok], [r.makespan_ms for r in ok], marker="o",
                color="#3B6BA5", label="makespan")
        for r in ok:
            ax.annotate(f"{r.makespan_ms:.2f}", (r.devices, r.makespan_ms), fontsize=8,
                        textcoords="offset points", xytext=(0, 9), ha="center")
        lbs = [r for r in ok if r.lower_bound_ms]
        if lbs:
            ax.plot([r.devices for r in lbs], [r.lower_bound_ms for r in lbs], linestyle="--",
                    color="black", linewidth=1, label="lower bound")
        first = ok[0] if not target_ms else next(
            (r for r in ok if r.makespan_ms <= target_ms), None)
        if first is not None:
            what = "fewest that fit" if not target_ms else "fewest meeting the target"
            ax.scatter([first.devices], [first.makespan_ms], s=220, marker="*", color="#55A868",
                       edgecolors="black", zorder=4, label=f"{what}: {first.devices} devices")
    ymax = max([r.makespan_ms for r in ok] + ([target_ms] if target_ms else []) + [1e-9])
    if bad:
        ax.scatter([r.devices for r in bad], [0.0] * len(bad), marker="x", color="#B22222",
                   s=60, zorder=3, label="infeasible (does not fit)", clip_on=False)
    if target_ms:
        ax.axhline(target_ms, color="#55A868", linestyle="-.", label=f"target {target_ms:g} ms")
    devs = sorted({r.devices for r in rows})
    ax.set_xscale("log", base=2)
    ax.set_xticks(devs, [str(d) for d in devs])
    ax.minorticks_off()
    ax.set_xlabel("devices (hosts scaled, devices per host kept)")
    ax.set_ylabel("makespan (ms)")
    ax.set_ylim(0, ymax * 1.2)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title("Makespan against cluster size" + (f" — {title}" if title else ""), fontsize=10)
    return fig


def scale_topology(topology: Topology, devices: int) -> Topology:
    """``topology`` with its host counts scaled to ``devices`` devices; devices per host, the
    devices and links stay as they are. Several host groups scale in proportion.

    Raises:
        SpecError: ``devices`` is not reachable with whole hosts.
    """
    world = topology.world_size
    groups = topology.host_groups
    if len(groups) == 1:
        g = groups[0]
        if devices % g.devices_per_host:
            raise SpecError(f"{devices} devices is not a whole number of {g.devices_per_host}-"
                            f"device hosts of {topology.name}; use multiples of "
                            f"{g.devices_per_host}", key_path="devices")
        new = (dataclasses.replace(g, hosts=devices // g.devices_per_host),)
    else:
        k = devices / world
        hosts = [g.hosts * k for g in groups]
        if any(abs(h - round(h)) > 1e-9 or round(h) < 1 for h in hosts):
            shape = ", ".join(f"{g.hosts}x{g.devices_per_host}" for g in groups)
            raise SpecError(f"{devices} devices cannot keep the proportions of {topology.name}'s "
                            f"host groups ({shape}); "
                            f"use multiples of {world} scaled by whole factors",
                            key_path="devices")
        new = tuple(dataclasses.replace(g, hosts=round(h)) for g, h in zip(groups, hosts))
    return dataclasses.replace(topology, name=f"{topology.name}@{devices}", host_groups=new)


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


def plan_figures(plan: Plan, top: int = TOP_TABLES,
                 frame: pd.DataFrame | None = None) -> dict[str, Figure]:
    """The report's figures, by name (see ``REPORT_FIGURES``)."""
    df = rank_frame(plan) if frame is None else frame
    return {"rank_time": rank_time_figure(plan, df), "rank_memory": rank_memory_figure(plan, df),
            "placement": placement_figure(plan, top), "sharding_mix": sharding_mix_figure(plan)}


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


def write_report(plan: Plan, out_dir: str | Path, *, top: int = TOP_TABLES) -> ReportFiles:
    """Write ``report.html`` (self-contained, opens offline) and one PNG per figure.

    Args:
        plan: the plan.
        out_dir: created if missing.
        top: tables shown one row each in the placement map.

    Returns:
        The paths written.

    Raises:
        SpecError: ``out_dir`` exists and is not a directory, or cannot be written.
    """
    d = make_out_dir(out_dir)
    pngs: dict[str, bytes] = {}
    paths: dict[str, Path] = {}
    frame = rank_frame(plan)
    for name, fig in plan_figures(plan, top, frame).items():
        pngs[name] = png_bytes(fig)
        paths[name] = d / f"{name}.png"
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
