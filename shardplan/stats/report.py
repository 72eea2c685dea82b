"""What ``shardplan stats`` shows: the summary rows (terminal and HTML), a log-log
rank-frequency plot and the LRU hit curves of the largest tables, one self-contained HTML
page with the PNGs embedded, and ``stats.json`` with every number.

Figures use ``matplotlib.figure.Figure`` on the Agg canvas (no pyplot, no display).
"""

from __future__ import annotations

import base64
import dataclasses
import html
import json
import math
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from shardplan.report import make_out_dir, png_bytes
from shardplan.stats.types import CountMode, StatsResult, TableStats
from shardplan.stats.workload import NO_SKEW_EXPONENT, source_text, write_atomic
from shardplan.stats.zipf import harmonic, zipf_share

#: Tables drawn in the figures: the largest by rows.
PLOT_TABLES = 8
FIGSIZE_IN = (10.0, 5.5)
DPI = 100
#: Cache ratios shown in the summary table's hit columns.
SUMMARY_RATIOS = (0.01, 0.1)

SUMMARY_COLUMNS = ("table", "rows", "pooling", "p50/90/99/max", "zipf s (KS)",
                   "hot rows:lookups", *(f"LRU@{r * 100:g}%" for r in SUMMARY_RATIOS),
                   "id order (rho)")


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{x * 100:.3g}%"


def summary_rows(result: StatsResult) -> list[tuple[str, ...]]:
    """One row of strings per table, under ``SUMMARY_COLUMNS`` (``~`` marks rows counted by
    a sketch)."""
    rows = []
    for t in result.tables:
        i = t.ids
        dist = " + ".join(f"{p.p50}/{p.p90}/{p.p99}/{p.max}"
                          for p in (f.pooling for f in t.features))
        curve = dict(i.hit_curve)
        order = "-" if i.id_order is None else \
            f"{i.id_order.order.value[:4]} {i.id_order.spearman:+.2f}"
        hot = "-" if i.hot_row_fraction is None else \
            f"{_pct(i.hot_row_fraction)}:{_pct(i.hot_access_fraction)}"
        zipf = "-" if i.zipf is None else f"{i.zipf.exponent:.3f} ({i.zipf.ks_distance:.3f})"
        approx = "~" if i.count_mode is CountMode.SKETCH else ""
        rows.append((t.name, f"{approx}{i.rows:,}", f"{t.pooling_factor:.4g}", dist, zipf, hot,
                     *(_pct(curve.get(r)) for r in SUMMARY_RATIOS), order))
    return rows


def _largest(result: StatsResult, top: int) -> list[TableStats]:
    return sorted(result.tables, key=lambda t: (-t.ids.rows, t.name))[:top]


def _figure() -> Figure:
    fig = Figure(figsize=FIGSIZE_IN, dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def rank_frequency_figure(result: StatsResult, top: int = PLOT_TABLES) -> Figure:
    """Share of lookups against popularity rank, log-log, measured (solid) and the fitted Zipf
    law (dashed), for the ``top`` largest tables."""
    fig = _figure()
    ax = fig.add_subplot()
    for k, t in enumerate(_largest(result, top)):
        counts = np.asarray(t.ids.top_counts, dtype=np.float64)
        if len(counts) == 0 or t.ids.accesses == 0:
            continue
        color = f"C{k % 10}"
        ranks = np.arange(1, len(counts) + 1)
        ax.loglog(ranks, counts / t.ids.accesses, color=color, lw=1.4,
                  label=f"{t.name} ({t.ids.rows:,} rows)")
        z = t.ids.zipf
        if z is not None and z.exponent >= NO_SKEW_EXPONENT:
            ax.loglog(ranks, ranks ** -z.exponent / harmonic(z.support, z.exponent), color=color,
                      lw=1.0, ls="--", label=f"  Zipf s={z.exponent:.2f}")
    ax.set_xlabel("popularity rank")
    ax.set_ylabel("share of lookups")
    ax.set_title("rank-frequency (measured solid, fitted Zipf dashed)")
    ax.grid(True, which="both", alpha=0.3)
    if ax.lines:
        ax.legend(fontsize=8, ncol=2)
    return fig


def hit_curve_figure(result: StatsResult, top: int = PLOT_TABLES) -> Figure:
    """LRU hit rate against cache ratio (measured, solid) and the hottest-rows share of the
    fitted Zipf law (an ideal static cache, dashed), for the ``top`` largest tables."""
    fig = _figure()
    ax = fig.add_subplot()
    for k, t in enumerate(_largest(result, top)):
        color = f"C{k % 10}"
        xs = [r for r, _ in t.ids.hit_curve]
        ax.semilogx(xs, [h for _, h in t.ids.hit_curve], color=color, marker="o", ms=3, lw=1.4,
                    label=f"{t.name} LRU")
        z = t.ids.zipf
        if z is not None and z.exponent >= NO_SKEW_EXPONENT:
            ax.semilogx(xs, [zipf_share(max(1, math.floor(r * z.support)), z.support, z.exponent)
                             for r in xs], color=color, lw=1.0, ls="--")
    ax.set_xlabel("cache ratio (cached rows / rows)")
    ax.set_ylabel("hit rate")
    ax.set_ylim(0, 1)
    ax.set_title("LRU hit curves (measured solid; Zipf hottest-rows share dashed)")
    ax.grid(True, which="both", alpha=0.3)
    if ax.lines:
        ax.legend(fontsize=8, ncol=2)
    return fig


_CSS = """body{font-family:system-ui,sans-serif;margin:24px;color:#222;max-width:1300px}
h1{font-size:20px}table{border-collapse:collapse;font-size:12px}
td,th{padding:3px 8px;border-bottom:1px solid #ddd;text-align:right}th{background:#f3f3f3}
td:first-child{text-align:left}img{max-width:100%;border:1px solid #eee}
figcaption{font-size:12px;color:#555}p{font-size:13px}"""


def report_html(result: StatsResult, images: dict[str, bytes]) -> str:
    """The self-contained page: source, summary table, embedded figures, skipped features."""
    esc = html.escape
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             "<title>shardplan stats</title>", f"<style>{_CSS}</style></head><body>",
             "<h1>shardplan stats</h1>", f"<p>{esc(source_text(result))}</p>", "<table><tr>"]
    parts += [f"<th>{esc(c)}</th>" for c in SUMMARY_COLUMNS]
    parts.append("</tr>")
    for row in summary_rows(result):
        parts.append("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>")
    parts.append("</table>")
    captions = {"rank_frequency": "Rank-frequency, log-log, largest tables",
                "hit_curves": "LRU hit rate vs cache ratio, largest tables"}
    for name, png in images.items():
        b64 = base64.b64encode(png).decode("ascii")
        cap = esc(captions.get(name, name))
        parts.append(f'<figure><img alt="{cap}" src="data:image/png;base64,{b64}">'
                     f"<figcaption>{cap}</figcaption></figure>")
    if result.skipped:
        parts.append("<p>Left out: " + esc("; ".join(f"{n}: {why}" for n, why in result.skipped))
                     + "</p>")
    parts.append("<p>How each number is measured: docs/stats.md.</p></body></html>\n")
    return "\n".join(parts)


def result_json(result: StatsResult) -> str:
    """Every measured number, as JSON."""
    return json.dumps(dataclasses.asdict(result), indent=1) + "\n"


def write_report(result: StatsResult, out_dir: str | Path) -> Path:
    """Write ``report.html`` (self-contained), the two PNGs and ``stats.json`` into
    ``out_dir`` (created if missing). Returns the HTML path.

    Raises:
        SpecError: ``out_dir`` is a file or cannot be written.
    """
    images = {"rank_frequency": png_bytes(rank_frequency_figure(result)),
              "hit_curves": png_bytes(hit_curve_figure(result))}
    page = report_html(result, images)
    doc = result_json(result)
    d = make_out_dir(out_dir)
    for name, png in images.items():
        write_atomic(d / f"{name}.png", png)
    write_atomic(d / "stats.json", doc)
    return write_atomic(d / "report.html", page)
