"""``shardplan stats``: measure a workload from training data and write it."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich import box
from rich.measure import Measurement
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from shardplan.cli.base import app, console, handle_errors, reflow_doc, say
from shardplan.errors import SpecError
from shardplan.stats.types import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_CACHE_RATIOS,
    DEFAULT_EMBEDDING_DIM,
    DEFAULT_EXACT_LIMIT,
    DEFAULT_LRU_ACCESSES,
    DataFormat,
    LruOrder,
    ProgressUpdate,
    SampleMode,
    StatsOptions,
    StatsResult,
)

MAX_TABLE_ROWS = 60  # terminal rows; the report and stats.json have every table
PIPED_MAX_WIDTH = 200  # columns of the summary table when the output is not a terminal


def _options(**kw) -> StatsOptions:
    try:
        return StatsOptions(**kw)
    except ValueError as exc:
        raise SpecError(f"bad option: {exc}") from None


def _print_summary(result: StatsResult) -> None:
    from shardplan.stats.report import SUMMARY_COLUMNS, summary_rows
    from shardplan.stats.workload import source_text

    t = Table(title=f"{len(result.tables)} tables from {result.records:,} records",
              header_style="bold", box=box.SIMPLE_HEAD, collapse_padding=True, pad_edge=False)
    for c in SUMMARY_COLUMNS:
        t.add_column(c, justify="left" if c == "table" else "right", no_wrap=c == "table",
                     overflow="fold")
    rows = summary_rows(result)
    for row in rows[:MAX_TABLE_ROWS]:
        t.add_row(*row)
    # the title as a line of its own (print_table's rule), then the table: a terminal folds
    # cells to its width; piped output (a log, a file) keeps rows whole
    if t.title:
        say(str(t.title))
        t.title = None
    if console.is_terminal:
        console.print(t)
    else:
        width = console.width
        console.width = max(width, Measurement.get(
            console, console.options.update_width(PIPED_MAX_WIDTH), t).maximum)
        try:
            console.print(t)
        finally:
            console.width = width
    if len(rows) > MAX_TABLE_ROWS:
        console.print(f"(first {MAX_TABLE_ROWS} of {len(rows)} tables; --report has them all)")
    for name, why in result.skipped:
        console.print(f"left out {name}: {why}")
    console.print(f"source: {source_text(result)}", soft_wrap=True)


@app.command("stats")
@handle_errors
@reflow_doc
def stats_cmd(
    data: Annotated[list[Path], typer.Argument(help="Data files, read in order as one stream "
                                                    "(.gz is detected).")],
    fmt: Annotated[DataFormat, typer.Option("--format", "-f", case_sensitive=False,
                                            help="Input format.")],
    sample: Annotated[Optional[int], typer.Option(min=1, help="Read at most N records.")] = None,
    sample_mode: Annotated[SampleMode, typer.Option(
        case_sensitive=False, help="prefix: the first N records; uniform: N drawn uniformly "
                                   "(counts the records first).")] = SampleMode.PREFIX,
    seed: Annotated[int, typer.Option(help="Seed of the uniform sample and of the shuffled "
                                           "LRU order.")] = 0,
    hash_size: Annotated[Optional[int], typer.Option(
        min=1, help="Hash ids modulo N first, as MLPerf's preprocessing does: a table has "
                    "min(distinct ids, N) rows.")
    ] = None,
    batch_size: Annotated[int, typer.Option(min=1, help="Batch size per rank written to the "
                                                        "workload.")] = DEFAULT_BATCH_SIZE,
    embedding_dim: Annotated[int, typer.Option(min=1, help="Embedding dim of every table.")
                             ] = DEFAULT_EMBEDDING_DIM,
    history: Annotated[int, typer.Option(min=0, help="movielens: add a user-history feature "
                                                     "of the last N rated movies.")] = 0,
    features: Annotated[Optional[str], typer.Option(
        help="parquet/kjt: comma-separated columns or keys to read (default: all id columns).")
    ] = None,
    exact_limit: Annotated[int, typer.Option(
        min=1, help="Distinct ids per feature counted exactly; past it, DataSketches.")
    ] = DEFAULT_EXACT_LIMIT,
    lru_accesses: Annotated[int, typer.Option(
        min=2, help="Lookups per feature kept for the LRU simulation.")] = DEFAULT_LRU_ACCESSES,
    lru_order: Annotated[LruOrder, typer.Option(
        case_sensitive=False, help="Lookup order of the LRU hit curves: the files' (stream), "
                                   "a seeded random one (shuffled), or auto: shuffled for "
                                   "movielens (sorted by user), stream otherwise.")
    ] = LruOrder.AUTO,
    out: Annotated[Path, typer.Option("--out", "-o", help="Workload YAML to write.")
                   ] = Path("workload.yaml"),
    report: Annotated[Optional[Path], typer.Option(
        "--report", "-r", help="Also write an HTML report (rank-frequency and hit-curve "
                               "plots) and stats.json into this folder.")] = None,
) -> None:
    """Measure rows, pooling factors, access skew, LRU hit curves and id order from training
    data, and write a workload that `shardplan solve` reads.

    Formats: criteo (Kaggle/Terabyte TSV), movielens (ratings.csv), parquet (Parquet or
    Arrow; integer and list-of-integer columns), kjt (torch.save'd KeyedJaggedTensor
    batches). docs/stats.md says how each statistic is computed. Nothing is written when the
    input is bad.

    Examples:

      shardplan stats day_0.gz --format criteo --sample 10000000 --hash-size 40000000

      shardplan stats ratings.csv -f movielens --history 50 --report stats/

      shardplan stats part-0.parquet part-1.parquet -f parquet --features user,item,tags
    """
    from shardplan.stats.collect import collect_stats
    from shardplan.stats.workload import workload_of, workload_yaml, write_atomic

    if out.suffix.lower() not in (".yaml", ".yml"):
        raise SpecError("the workload is written as YAML; end --out in .yaml or .yml",
                        source=str(out))
    if not out.parent.is_dir():  # checked before reading, so a bad path writes nothing
        raise SpecError("its folder does not exist; create it or pass another --out",
                        source=str(out))
    if out.is_dir():
        raise SpecError("is a folder; pass a file name for --out", source=str(out))
    if report is not None and report.exists() and not report.is_dir():
        raise SpecError("exists and is not a folder; pass another --report", source=str(report))
    opts = _options(sample=sample, sample_mode=sample_mode, seed=seed, hash_size=hash_size,
                    exact_limit=exact_limit, lru_accesses=lru_accesses,
                    cache_ratios=DEFAULT_CACHE_RATIOS, lru_order=lru_order, history=history,
                    features=tuple(f.strip() for f in features.split(",") if f.strip())
                    if features else None, embedding_dim=embedding_dim, batch_size=batch_size)
    with Progress(TextColumn("[bold]{task.fields[phase]}"), BarColumn(), _Done(),
                  TimeElapsedColumn(), TextColumn("{task.fields[records]} records"),
                  console=console, transient=True) as progress:
        task = progress.add_task("read", total=None, records="0", unit="bytes", phase="reading")

        def show(u: ProgressUpdate) -> None:
            progress.update(task, completed=u.done, total=u.total or None, unit=u.unit,
                            records=f"{u.records:,}", phase=u.phase.value)

        result = collect_stats(data, fmt, opts, progress=show)
    text = workload_yaml(workload_of(result))
    _print_summary(result)
    if report is not None:
        from shardplan.stats.report import write_report

        page = write_report(result, report)
        console.print(f"wrote {page} (and stats.json, rank_frequency.png, hit_curves.png)")
    write_atomic(out, text)
    console.print(f"wrote {out}: {len(result.tables)} tables; plan it with "
                  f"`shardplan solve TOPOLOGY --tables {out}`")


class _Done(DownloadColumn):
    """Bytes done/total for text input; records (or features, when measuring) done/total
    otherwise."""

    def render(self, task):  # type: ignore[override]
        if task.fields.get("unit") != "bytes":
            return MofNCompleteColumn().render(task)
        return super().render(task)
