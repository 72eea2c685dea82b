"""Plan figures: matplotlib ``Figure``s of a plan, a comparison and a sweep.

Figures are built on ``matplotlib.figure.Figure`` with the Agg canvas (no pyplot, no global
state, no display needed). Every figure has a fixed size (``FIGSIZE_IN`` at ``DPI``), so a PNG
is always the same number of pixels. Plans of any size stay readable: per-rank plots switch
from bars to filled steps above ``BAR_MAX_RANKS`` ranks, and the placement map shows only the
``top`` largest tables, the rest grouped per rank by sharding type; nothing draws one label
per table or per rank of a large plan. :mod:`shardplan.report` puts them into one HTML page.
"""

from __future__ import annotations

import contextlib
import io
import math
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
import pandas as pd
from matplotlib import font_manager, ft2font
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator

from shardplan.errors import ShardplanWarning, SpecError
from shardplan.frames import gap_percent, rank_frame, sharding_mix
from shardplan.types import PlacementKind, Plan, ShardingType, Stage, Tier
from shardplan.units import GiB, format_bytes

if TYPE_CHECKING:  # pragma: no cover
    from shardplan.compare import CompareRow
    from shardplan.sweep import SweepRow

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
MIN_LABEL_PT = 6.5  # smallest placement-map label (points; 6.5 pt at 100 DPI is 9 px)
PLACEMENT_HATCH = {PlacementKind.UVM_CACHING: "//", PlacementKind.UVM: "xx",
                   PlacementKind.DDR: ".."}

SHARDING_COLORS: dict[ShardingType, str] = {
    ShardingType.TABLE_WISE: "#4C72B0",
    ShardingType.ROW_WISE: "#DD8452",
    ShardingType.COLUMN_WISE: "#55A868",
    ShardingType.TABLE_ROW_WISE: "#C44E52",
    ShardingType.TABLE_COLUMN_WISE: "#8172B3",
    ShardingType.DATA_PARALLEL: "#8C8C8C",
    ShardingType.GRID_SHARD: "#937860",
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
    p.write_bytes(png_bytes(fig))
    return p


def png_bytes(fig: Figure) -> bytes:
    """``fig`` as PNG bytes. Missing glyphs were warned about once when the figure was made
    (:func:`warn_missing_glyphs`); matplotlib's own warning per glyph is dropped."""
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"Glyph \d+ .* missing from font")
        fig.savefig(buf, format="png", dpi=DPI, metadata={"Software": None})
    return buf.getvalue()


#: Longest name a figure prints whole; a longer one keeps its start and end around an ellipsis
#: (names may have up to 1,000 characters; a label that long would squeeze the plot to nothing).
MAX_LABEL_CHARS = 40


def short_name(name: str, limit: int = MAX_LABEL_CHARS) -> str:
    """``name``, or its start and end around ``…`` when longer than ``limit`` characters."""
    if len(name) <= limit:
        return name
    tail = (limit - 1) // 3
    return name[:limit - 1 - tail] + "…" + name[len(name) - tail:]


def _title(plan: Plan) -> str:
    s = plan.summary
    return f"{short_name(plan.workload.name)} on {short_name(plan.topology.name)} " \
           f"({s.num_tables} tables, {s.num_ranks} ranks, {s.solver})"


def _per_rank(ax, x: np.ndarray, values: np.ndarray, bottom: np.ndarray, color: str,
              label: str, hatch: str | None = None) -> None:
    """Bars for few ranks, a filled step for many (thousands of bars are slow and unreadable)."""
    style: dict[str, Any] = ({"facecolor": "none", "edgecolor": "black", "hatch": hatch,
                              "linewidth": 0.0} if hatch else {"color": color, "linewidth": 0})
    if len(x) <= BAR_MAX_RANKS:
        ax.bar(x, values, bottom=bottom, label=label, width=0.8, **style)
    else:
        xs = np.repeat(np.append(x - 0.5, x[-1] + 0.5), 2)[1:-1]
        ax.fill_between(xs, np.repeat(bottom, 2), np.repeat(bottom + values, 2), label=label,
                        **style)


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
    ddr_used = bool((df[f"{Tier.DDR.value}_bytes"] > 0).any())
    # an unused DDR panel is a thin strip that says so, not half the figure
    axes = fig.subplots(2, 1, sharex=True, height_ratios=[1, 1] if ddr_used else [5, 1])
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
        # outside the axes, so it never covers a bar of a full rank
        ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8)
        ax.grid(axis="y", alpha=0.3)
        _rank_axis(ax, plan)
    axes[0].set_xlabel("")
    fig.suptitle("Memory per rank — " + _title(plan), fontsize=11)
    return fig


def placement_figure(plan: Plan, top: int = TOP_TABLES) -> Figure:
    """Which ranks hold each of the ``top`` largest tables (coloured by sharding type; shards
    in UVM, UVM caching or DDR hatched), and below, per rank, the weight bytes of all other
    tables, stacked by sharding type, with their UVM/DDR part hatched on top.

    Tables off HBM get a row before tables in HBM of any size (they are what a reader looks
    for), then the largest; labels stay at least ``MIN_LABEL_PT`` points (with more rows
    than fit, every k-th row is labelled).

    Args:
        plan: the plan.
        top: how many tables (by weight bytes) get a row of their own.
    """
    if top < 1:
        raise SpecError(f"top must be >= 1, got {top}", key_path="top")
    bits = {t.name: t.dtype.bits for t in plan.workload.tables}
    size = {t.name: t.num_embeddings * t.embedding_dim * bits[t.name] / 8 for t in plan.tables}
    order = sorted(plan.tables, key=lambda t: (_placement_of(t) is PlacementKind.HBM,
                                               -size[t.name], t.name))
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
        kind = _placement_of(t)
        ax.broken_barh(runs, (row - 0.45, 0.9), facecolors=SHARDING_COLORS[t.sharding_type],
                       edgecolor="black" if kind in PLACEMENT_HATCH else "none",
                       hatch=PLACEMENT_HATCH.get(kind), linewidth=0.4 if kind in
                       PLACEMENT_HATCH else 0)
    ax.set_ylim(len(shown) - 0.5, -0.5)
    labels = [f"{short_name(t.name)} {t.sharding_type.short}"
              + (f" {t.shards[0].placement}" if _placement_of(t) is not PlacementKind.HBM else "")
              + f" ({format_bytes(size[t.name])})" for t in shown]
    fs, every = _label_size(ax, fig, len(shown))
    ax.set_yticks(range(len(shown)), [lb if i % every == 0 else "" for i, lb in
                                      enumerate(labels)], fontsize=fs)
    for lbl in ax.get_yticklabels():
        lbl.set_fontfamily(font_families())
    warn_missing_glyphs(labels)
    ax.grid(axis="y", color="#E6E6E6", linewidth=0.6)  # guides from each label to its shards
    ax.set_axisbelow(True)
    _rank_axis(ax, plan)
    off_hbm = [t for t in plan.tables if _placement_of(t) is not PlacementKind.HBM]
    ax.set_title(f"Placement of the {len(shown)} largest tables"
                 + (f" (of {len(plan.tables)})" if rest else "")
                 + (f"; {len(off_hbm)} table(s) off HBM first, hatched" if off_hbm else ""),
                 fontsize=10, loc="left")
    present = sorted({t.sharding_type for t in plan.tables}, key=list(ShardingType).index)
    handles = [Patch(color=SHARDING_COLORS[st], label=f"{st.short} ({st.value})") for st in present]
    kinds = sorted({_placement_of(t) for t in off_hbm}, key=list(PlacementKind).index)
    handles += [Patch(facecolor="white", edgecolor="black", hatch=PLACEMENT_HATCH[k],
                      label=k.value) for k in kinds if k in PLACEMENT_HATCH]
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8,
              title="sharding / placement", title_fontsize=8)
    if ax2 is not None:
        ax.set_xlabel("")
        per = {st: np.zeros(n) for st in present}
        off = np.zeros(n)
        for t in rest:
            b = bits[t.name] / 8
            acc = per[t.sharding_type]
            for s in t.shards:
                acc[s.rank] += s.num_rows * s.num_cols * b
                if s.placement.kind is not PlacementKind.HBM:
                    off[s.rank] += s.num_rows * s.num_cols * b
        x = np.arange(n, dtype=float)
        bottom = np.zeros(n)
        for st in present:
            v = per[st] / GiB
            if v.any():
                _per_rank(ax2, x, v, bottom, SHARDING_COLORS[st], st.short)
                bottom = bottom + v
        if off.any():  # the UVM/DDR share of those bytes, hatched over the top of each bar
            _per_rank(ax2, x, off / GiB, bottom - off / GiB, "none", "off HBM", hatch="////")
        ax2.set_ylabel("GiB")
        ax2.set_ylim(0, max(float(bottom.max()), 1e-9) * 1.15)
        ax2.set_title(f"The other {len(rest)} tables: weight GiB per rank, by sharding type"
                      + ("; hatched: off HBM" if off.any() else ""), fontsize=10, loc="left")
        ax2.grid(axis="y", alpha=0.3)
        _rank_axis(ax2, plan)
    fig.suptitle("Placement map — " + _title(plan), fontsize=11)
    return fig


def _placement_of(t: Any) -> PlacementKind:
    return t.shards[0].placement.kind


def _label_size(ax: Any, fig: Figure, rows: int) -> tuple[float, int]:
    """(font size in points, label every k-th row) so that labels do not overlap and are at
    least MIN_LABEL_PT points."""
    height_pt = ax.get_position().height * fig.get_figheight() * 72
    row_pt = height_pt / max(rows, 1)
    fs = min(8.0, 0.8 * row_pt)
    if fs >= MIN_LABEL_PT:
        return fs, 1
    return MIN_LABEL_PT, math.ceil(MIN_LABEL_PT / max(0.8 * row_pt, 1e-9))


_FONT_FAMILIES: list[str] = []


def font_families() -> list[str]:
    """DejaVu Sans, then every installed font that covers CJK ideographs (matplotlib falls
    back glyph by glyph), so table names in Chinese, Japanese or Korean render where such a
    font exists."""
    if not _FONT_FAMILIES:
        names = []
        for f in font_manager.fontManager.ttflist:
            if any(k in f.name for k in _CJK_HINTS) and f.name not in names:
                names.append(f.name)
        _FONT_FAMILIES.extend(["DejaVu Sans", *sorted(names)])
    return list(_FONT_FAMILIES)


_CJK_HINTS = ("CJK", "Han Sans", "Han Serif", "WenQuanYi", "Droid Sans Fallback", "AR PL",
              "IPAex", "IPA", "Noto Sans SC", "Noto Sans JP", "Noto Sans KR", "Noto Sans TC",
              "Source Han", "Unifont", "Hei", "Ming", "Gothic")
_WARNED: set[str] = set()


def warn_missing_glyphs(texts: Sequence[str]) -> None:
    """One ShardplanWarning when some text has characters no font in :func:`font_families`
    covers (they would draw as boxes), naming an example and the fix."""
    chars = {c for t in texts for c in t if ord(c) > 0x2FF}
    if not chars:
        return
    covered: set[int] = set()
    for name in font_families():
        with contextlib.suppress(ValueError, RuntimeError, OSError):
            path = font_manager.findfont(font_manager.FontProperties(family=name),
                                         fallback_to_default=False)
            covered |= set(ft2font.FT2Font(path).get_charmap())
    missing = sorted(c for c in chars if ord(c) not in covered)
    if missing and missing[0] not in _WARNED:
        _WARNED.update(missing)
        warnings.warn(f"table names use characters no installed font can draw (such as "
                      f"{missing[0]!r}); they show as boxes in the figures (the HTML tables "
                      "show them). Install a CJK font (Debian: fonts-noto-cjk) to draw them",
                      ShardplanWarning, stacklevel=3)


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
    ax.set_xticks(x, [short_name(r.name) for r in rows], rotation=20 if len(rows) > 5 else 0, ha="right"
                  if len(rows) > 5 else "center", fontsize=9)
    ax.set_ylabel("makespan (ms)")
    ax.set_ylim(0, top * 1.22)
    ax.grid(axis="y", alpha=0.3)
    ax.set_title(("Makespan by planner (label: makespan, planning time; best in green)" +
                  (f" — {short_name(title, 2 * MAX_LABEL_CHARS)}" if title else "")), fontsize=10)
    return fig


def sweep_figure(rows: Sequence[SweepRow], target_ms: float | None = None,
                 title: str = "") -> Figure:
    """Makespan against the number of devices; sizes where nothing fits shaded red (they have
    no makespan, so nothing is drawn at 0 ms)."""
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
    for i, r in enumerate(bad):  # no makespan: a band over the whole height, not a 0 ms point
        ax.axvspan(r.devices / 2**0.15, r.devices * 2**0.15, color="#B22222", alpha=0.12,
                   linewidth=0, label="does not fit" if i == 0 else None)
        ax.text(r.devices, ymax * 1.1, "does not fit", ha="center", va="center", fontsize=8,
                color="#B22222", rotation=90)
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
    ax.set_title("Makespan against cluster size"
                 + (f" — {short_name(title, 2 * MAX_LABEL_CHARS)}" if title else ""), fontsize=10)
    return fig


