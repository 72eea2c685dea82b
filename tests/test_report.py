"""Frames and report figures: shapes and sums of the frames, PNG sizes, the HTML's contents,
and the walkthrough notebook, executed."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest

from shardplan.enumerators import EnumerationOptions, enumerate_table
from shardplan.estimators import default_cost_model
from shardplan.frames import headroom, rank_frame, shard_frame, sharding_mix, table_frame
from shardplan.generate import synthetic_workload
from shardplan.loaders import load_problem
from shardplan.planner import plan as make_plan
from shardplan.plans import build_plan
from shardplan.report import (
    FIGSIZE_IN,
    REPORT_FIGURES,
    CompareRow,
    SweepRow,
    compare_figure,
    figure_size_px,
    placement_figure,
    png_bytes,
    rank_memory_figure,
    rank_time_figure,
    sweep_figure,
    write_report,
)
from shardplan.types import Assignment, PlacementKind, ShardingType

from conftest import make_topology

ROOT = Path(__file__).resolve().parents[1]


def png_size(data: bytes) -> tuple[int, int]:
    """Width and height from a PNG's IHDR chunk."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def png_is_not_blank(data: bytes) -> bool:
    import io

    import matplotlib.image as mpimg

    img = mpimg.imread(io.BytesIO(data), format="png")
    return float(np.asarray(img)[..., :3].std()) > 0.01


@pytest.fixture(scope="module")
def dcn_plan():
    topo, work = load_problem("dgx-h100-2x8")
    return make_plan(work, topo, solver="greedy")


def round_robin_plan(num_tables: int, hosts: int, seed: int = 1):
    """A large plan fast: each table table-wise (big ones row-wise) round-robin over ranks.
    Not a good plan; only its size matters here."""
    work = synthetic_workload(num_tables, seed=seed, max_rows=10**7)
    topo = make_topology(hosts=hosts)
    opts, ranks = [], []
    for i, t in enumerate(work.tables):
        options = enumerate_table(t, work, topo, EnumerationOptions(
            sharding_types=(ShardingType.TABLE_WISE, ShardingType.ROW_WISE),
            placements=(PlacementKind.HBM,)))
        want = ShardingType.ROW_WISE if t.num_embeddings > 5_000_000 else ShardingType.TABLE_WISE
        o = next(o for o in options if o.sharding_type is want)
        opts.append(o)
        ranks.append(tuple(c[0] if c else i % topo.world_size for c in o.candidate_ranks))
    return build_plan(workload=work, topology=topo, cost_model=default_cost_model(work, topo),
                      assignment=Assignment(options=tuple(opts), ranks=tuple(ranks)),
                      solver="round-robin", lower_bound_ms=1.0)


# --- frames ----------------------------------------------------------------------------------


def test_frames_match_the_plan(dcn_plan):
    p = dcn_plan
    tf, rf, sf = p.to_dataframe(), p.rank_frame(), p.shard_frame()
    assert list(tf["table"]) == [t.name for t in p.tables]
    assert len(rf) == p.topology.world_size and list(rf["rank"]) == list(range(len(rf)))
    assert len(sf) == sum(len(t.shards) for t in p.tables)
    # a rank's own step time is at most the makespan (each stage waits for its slowest rank,
    # and the slowest ranks of two stages can differ)
    assert rf["total_ms"].max() <= p.summary.makespan_ms * (1 + 1e-9)
    assert rf["num_shards"].sum() == len(sf)
    assert rf.loc[rf["is_slowest"], "total_ms"].min() == pytest.approx(rf["total_ms"].max())
    # every non-replicated table's shards add up to its weights
    for t in tf.itertuples():
        shards = sf[sf["table"] == t.table]
        k = len(shards) if t.sharding_type == "data_parallel" else 1
        assert shards["weight_bytes"].sum() == pytest.approx(t.weight_bytes * k)
        assert set(shards["rank"]) == set(t.ranks)
    assert (rf["hbm_free_bytes"] == rf["hbm_capacity_bytes"] - rf["hbm_bytes"]).all()
    stage_sum = rf[["fwd_compute_ms", "fwd_comm_ms", "bwd_compute_ms", "bwd_comm_ms",
                    "dp_sync_ms"]].sum(axis=1)
    assert (stage_sum > 0).all()


def test_headroom_and_mix(dcn_plan):
    p = dcn_plan
    rf = rank_frame(p)
    h = headroom(p)
    for tier, hh in h.items():
        free = rf[f"{tier.value}_capacity_bytes"] - rf[f"{tier.value}_bytes"]
        assert hh["min_free_bytes"] == pytest.approx(free.min())
        assert free[int(hh["min_free_rank"])] == pytest.approx(free.min())
        assert 0 <= hh["mean_used_fraction"] <= hh["max_used_fraction"] <= 1
    mix = sharding_mix(p)
    assert mix["tables"].sum() == len(p.tables)
    assert dict(zip(mix["sharding_type"], mix["tables"])) == dict(p.summary.sharding_mix)
    assert mix["byte_fraction"].sum() == pytest.approx(1.0)


def test_frames_are_deterministic(dcn_plan):
    assert table_frame(dcn_plan).equals(table_frame(dcn_plan))
    assert shard_frame(dcn_plan).equals(shard_frame(dcn_plan))


# --- figures and HTML ------------------------------------------------------------------------


def test_report_html_has_plots_and_rank_table(dcn_plan, tmp_path):
    files = write_report(dcn_plan, tmp_path / "r")
    html = files.html.read_text()
    assert set(files.images) == set(REPORT_FIGURES)
    assert html.count('src="data:image/png;base64,') == len(REPORT_FIGURES)
    for name in REPORT_FIGURES:
        assert f'id="fig-{name}"' in html
        data = files.images[name].read_bytes()
        assert png_size(data) == figure_size_px(name)
        assert len(data) > 10_000 and png_is_not_blank(data)
    # per-rank table: one body row per rank, plus the slowest rank's time
    table = html[html.index('id="rank-table"'):]
    table = table[:table.index("</table>")]
    assert table.count("<tr") == dcn_plan.topology.world_size + 1  # header + one per rank
    assert f"{dcn_plan.summary.makespan_ms:.3f}" in html
    assert "http://" not in html and "https://" not in html  # opens offline
    again = write_report(dcn_plan, tmp_path / "r2").html.read_text()
    assert again == html  # same plan, same bytes


def test_large_plan_is_aggregated(tmp_path):
    p = round_robin_plan(600, hosts=24)  # 600 tables on 192 ranks: steps, not bars
    fig = placement_figure(p, top=12)
    top_axis = fig.axes[0]
    assert len(top_axis.get_yticklabels()) == 12  # the rest are grouped, not labelled
    assert "other 588 tables" in fig.axes[1].get_title(loc="left")
    files = write_report(p, tmp_path / "big", top=12)
    for name in REPORT_FIGURES:
        assert png_size(files.images[name].read_bytes()) == figure_size_px(name)
    html = files.html.read_text()
    table = html[html.index('id="rank-table"'):]
    assert table[:table.index("</table>")].count("<tr") == 192 + 1


def test_rank_time_lines(dcn_plan):
    fig = rank_time_figure(dcn_plan)
    labels = [line.get_label() for line in fig.axes[0].get_lines()]
    assert any(lbl.startswith("makespan") for lbl in labels)
    if dcn_plan.summary.lower_bound_ms:
        assert any(lbl.startswith("lower bound") for lbl in labels)


def test_compare_and_sweep_figures():
    rows = [CompareRow(name="greedy", makespan_ms=3.0, lower_bound_ms=2.5, solve_time_s=0.2,
                       status="feasible"),
            CompareRow(name="random", makespan_ms=None, lower_bound_ms=None, solve_time_s=0.0,
                       status="infeasible")]
    data = png_bytes(compare_figure(rows, "test"))
    assert png_size(data) == figure_size_px("compare") and png_is_not_blank(data)
    sweep = [SweepRow(devices=8, hosts=1, makespan_ms=None, lower_bound_ms=None, solve_time_s=0),
             SweepRow(devices=16, hosts=2, makespan_ms=4.0, lower_bound_ms=3.5, solve_time_s=1),
             SweepRow(devices=32, hosts=4, makespan_ms=3.0, lower_bound_ms=2.9, solve_time_s=1)]
    data = png_bytes(sweep_figure(sweep, target_ms=3.5))
    assert png_size(data) == figure_size_px("sweep") and png_is_not_blank(data)


def test_every_figure_has_a_size():
    assert set(REPORT_FIGURES) | {"compare", "sweep"} == set(FIGSIZE_IN)


# --- notebook --------------------------------------------------------------------------------


def test_walkthrough_notebook_runs(tmp_path):
    import nbclient
    import nbformat

    nb = nbformat.read(ROOT / "notebooks" / "walkthrough.ipynb", as_version=4)
    client = nbclient.NotebookClient(nb, timeout=300, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) >= 3

    def text_of(cell) -> str:
        parts = []
        for o in cell.get("outputs", []):
            parts.append(o.get("text", ""))
            parts.append(o.get("data", {}).get("text/plain", ""))
        return "\n".join(parts)

    code = [c for c in nb.cells if c.cell_type == "code"]
    # what the notebook says must be true of what it computed
    topo, work = load_problem("dgx-h100-2x8")
    intro = text_of(code[0])
    assert f"batch {work.batch_size} global" in intro and "per rank" not in intro.split(
        "batch")[1].split(",")[0]
    compare = text_of(next(c for c in code if "compare_planners" in c.source))
    from shardplan.solvers import BASELINE_SOLVERS

    for name in ["greedy", *[n for n in BASELINE_SOLVERS if n != "random"]]:
        assert name in compare, (name, compare)  # every solver compared, none filtered away
    sweep = text_of(next(c for c in code if "shardplan.sweep(" in c.source))
    assert "fewest devices that fit: " in sweep
    for n in (8, 16, 32, 64):
        assert str(n) in sweep


# --- readable at 128-4,096 ranks, UVM visible, CJK, infeasible sizes ---------------------


@pytest.fixture(scope="module")
def uvm_plan():
    """Six 300M-row tables push five off HBM on 8 A100s (greedy): UVM and UVM caching."""
    from shardplan.types import TableSpec, Workload

    topo = load_problem("dgx-a100-1x8")[0]
    tables = [TableSpec(name=f"big{i}", num_embeddings=300_000_000, embedding_dim=256)
              for i in range(6)]
    tables += [TableSpec(name=f"s{i}", num_embeddings=1000 * (i + 1), embedding_dim=64)
               for i in range(60)]
    return make_plan(Workload(name="uvm", tables=tuple(tables), batch_size=512), topo,
                     solver="greedy")


def test_placement_map_shows_every_table_off_hbm(uvm_plan):
    from shardplan.figures import MIN_LABEL_PT, PLACEMENT_HATCH

    off = [t for t in uvm_plan.tables if t.shards[0].placement.kind is not PlacementKind.HBM]
    assert off, "the case no longer puts tables off HBM"
    fig = placement_figure(uvm_plan, top=10)
    ax = fig.axes[0]
    labels = [t.get_text() for t in ax.get_yticklabels()]
    for t in off:  # off-HBM tables get rows first, whatever their size, and say where they are
        assert any(lb.startswith(f"{t.name} ") and str(t.shards[0].placement) in lb
                   for lb in labels), t.name
    hatched = [c for c in ax.collections if c.get_hatch()]
    assert len(hatched) == len(off)
    assert {c.get_hatch() for c in hatched} <= set(PLACEMENT_HATCH.values())
    assert min(t.get_fontsize() for t in ax.get_yticklabels()) >= MIN_LABEL_PT
    fig = placement_figure(uvm_plan, top=66)  # more rows than fit: labels stay readable
    ticks = fig.axes[0].get_yticklabels()
    assert min(t.get_fontsize() for t in ticks) >= MIN_LABEL_PT
    assert sum(1 for t in ticks if t.get_text()) < 66


def test_memory_figure_legend_outside_and_empty_ddr_thin(dcn_plan, uvm_plan):
    fig = rank_memory_figure(dcn_plan)  # DCNv2 on HBM only: DDR unused
    hbm_ax, ddr_ax = fig.axes[:2]
    assert ddr_ax.get_position().height < hbm_ax.get_position().height / 3
    fig.canvas.draw()
    for ax in (hbm_ax, ddr_ax):
        box = ax.get_legend().get_window_extent()
        assert box.x0 >= ax.get_window_extent().x1 - 1  # beside the bars, never over them
    fig = rank_memory_figure(uvm_plan)  # DDR used: two panels of equal height
    a, b = fig.axes[:2]
    assert abs(a.get_position().height - b.get_position().height) < 0.02


def test_sweep_figure_draws_nothing_at_zero_for_sizes_that_do_not_fit():
    rows = [SweepRow(devices=8, hosts=1, makespan_ms=None, lower_bound_ms=None, solve_time_s=0,
                     note="no plan fits"),
            SweepRow(devices=16, hosts=2, makespan_ms=4.0, lower_bound_ms=3.5, solve_time_s=1)]
    fig = sweep_figure(rows)
    ax = fig.axes[0]
    for c in ax.collections:
        offsets = np.asarray(c.get_offsets())
        assert not (offsets.size and (offsets[:, 1] == 0).any()), "a point at 0 ms"
    for line in ax.get_lines():
        assert 0.0 not in list(line.get_ydata()) or line.get_label() != "makespan"
    assert any(t.get_text() == "does not fit" for t in ax.texts)


def test_report_summary_names_slowest_rank_and_warns_when_full(uvm_plan, tmp_path):
    from shardplan.frames import nearly_full, slowest_rank
    from shardplan.report import report_html

    html = report_html(uvm_plan, {})
    rank, stage, _ = slowest_rank(uvm_plan)
    assert f"rank {rank} " in html and stage.value in html
    assert ("nearly full" in html) == bool(nearly_full(uvm_plan))


def test_cjk_table_names_render_or_say_why(recwarn):
    import dataclasses

    from shardplan.errors import ShardplanWarning
    from shardplan.figures import font_families

    topo, work = load_problem("cpu-4")
    tables = list(work.tables)
    tables[0] = dataclasses.replace(tables[0], name="用户表")
    work = dataclasses.replace(work, tables=tuple(tables))
    p = make_plan(work, topo, solver="greedy")
    data = png_bytes(placement_figure(p))
    assert png_is_not_blank(data)
    labels = [t.get_text() for t in placement_figure(p).axes[0].get_yticklabels()]
    assert any("用户表" in lb for lb in labels)
    ours = [w for w in recwarn.list if issubclass(w.category, ShardplanWarning)]
    if len(font_families()) > 1:  # a CJK font is installed: it draws them, no warning needed
        assert not [w for w in recwarn.list if "missing from font" in str(w.message)]
    else:
        assert len(ours) <= 1 and all("fonts-noto-cjk" in str(w.message) for w in ours)
    assert not [w for w in recwarn.list if "Glyph" in str(w.message)]


def test_every_sharding_type_and_stage_has_a_style():
    """A new sharding type or stage must get a colour, or its plans fail to draw."""
    from shardplan.figures import SHARDING_COLORS, STAGE_STYLE
    from shardplan.types import Stage

    assert set(SHARDING_COLORS) == set(ShardingType)
    assert set(STAGE_STYLE) == set(Stage)
