"""The migration view: bytes each rank receives and sends when moving to a new plan.

One fixed-size figure (``FIGSIZE_IN`` at ``shardplan.figures.DPI``): per rank of the new
plan, bytes received above the axis (from other ranks, and restored from a checkpoint,
hatched) and bytes sent below it; host boundaries as thin lines; the title gives the totals
and the estimated migration time with its busiest link. Bars up to
``shardplan.figures.BAR_MAX_RANKS`` ranks, filled steps above, as the plan figures do.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, MaxNLocator

from shardplan.figures import BAR_MAX_RANKS, DPI, HOST_LINES_MAX_HOSTS, save_figure
from shardplan.replanning.migration import Migration
from shardplan.types import Plan
from shardplan.units import GiB, format_bytes

FIGSIZE_IN = (12.0, 5.0)
IN_COLOR, RESTORED_COLOR, OUT_COLOR = "#3B6BA5", "#C44E52", "#D9732B"


def _bars(ax, x: np.ndarray, values: np.ndarray, bottom: np.ndarray, **style) -> None:
    if len(x) <= BAR_MAX_RANKS:
        ax.bar(x, values, bottom=bottom, width=0.8, linewidth=0, **style)
    else:
        xs = np.repeat(np.append(x - 0.5, x[-1] + 0.5), 2)[1:-1]
        ax.fill_between(xs, np.repeat(bottom, 2), np.repeat(bottom + values, 2), linewidth=0,
                        **style)


def migration_figure(migration: Migration, new_plan: Plan) -> Figure:
    """Bytes in (moved, restored) and out per rank of ``new_plan`` (see the module docstring).

    Args:
        migration: from :func:`shardplan.replanning.estimate_migration` or ``diff_plans``.
        new_plan: the plan moved to (its ranks are the x axis).

    Returns:
        The figure (Agg canvas; write it with ``shardplan.figures.save_figure``).
    """
    n = new_plan.topology.world_size
    x = np.arange(n, dtype=float)
    restored = np.zeros(n)
    for t in migration.transfers:
        if t.source is None:
            restored[t.dest] += t.bytes
    b_in = np.asarray(migration.bytes_in, dtype=float) / GiB
    moved_in = b_in - restored / GiB
    b_out = np.asarray(migration.bytes_out, dtype=float) / GiB
    fig = Figure(figsize=FIGSIZE_IN, dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    zero = np.zeros(n)
    _bars(ax, x, moved_in, zero, color=IN_COLOR, label="received from other ranks")
    _bars(ax, x, restored / GiB, moved_in, facecolor="none", edgecolor=RESTORED_COLOR,
          hatch="//", label="restored from checkpoint")
    _bars(ax, x, -b_out, zero, color=OUT_COLOR, label="sent")
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_xlim(-0.5, n - 0.5)
    ax.xaxis.set_major_locator(MaxNLocator(nbins=16, integer=True))
    ax.set_xlabel("rank (new plan)")
    ax.set_ylabel("GiB (received up, sent down)")
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{abs(v):g}"))
    hosts = new_plan.topology.num_hosts
    if 1 < hosts <= HOST_LINES_MAX_HOSTS:
        for h in range(1, hosts):
            ax.axvline(min(new_plan.topology.ranks_of_host(h)) - 0.5, color="#BBBBBB",
                       linewidth=0.6, zorder=0)
    top = max(float(b_in.max(initial=0.0)), float(b_out.max(initial=0.0)), 1e-9)
    ax.set_ylim(-top * 1.25, top * 1.25)
    title = (f"Migration to {new_plan.topology.name}: {format_bytes(migration.total_bytes)} "
             f"over the network ({format_bytes(migration.restored_bytes)} restored), "
             f"{migration.kept_shards} shards kept, {migration.moved_shards} moved")
    if migration.transfers:
        title += f"; est. {migration.time_s:.3f} s (busiest: {migration.bottleneck})"
    ax.set_title(title, fontsize=10)
    ax.legend(loc="upper right", fontsize=8, ncols=3)
    ax.grid(axis="y", alpha=0.3)
    return fig


def save_migration_figure(migration: Migration, new_plan: Plan, path: str | Path) -> Path:
    """Write :func:`migration_figure` as a PNG."""
    return save_figure(migration_figure(migration, new_plan), path)


__all__ = ["FIGSIZE_IN", "migration_figure", "save_migration_figure"]
