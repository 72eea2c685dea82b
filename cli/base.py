"""What every command shares: the typer app, the error boundary, output and progress.

Exit codes: 0 success, 1 bad input (or a solver failure), 2 infeasible problem. Every
shardplan error is caught here and printed as one line (user strings escaped, so a table name
such as ``[/x]`` prints as itself); warnings the library gives (``ShardplanWarning``) print as
one ``warning:`` line each on standard error; a closed pipe (``shardplan solve ... | head``)
ends the command quietly. Output fits 80 columns, the width rich uses when standard output is
not a terminal.

Command modules import ``app`` from here and register themselves; :mod:`shardplan.cli.app`
imports them all. Nothing here imports a command module, so every module imports on its own.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import math
import os
import sys
import time
import warnings
from pathlib import Path
from typing import Annotated, Any, Callable, Iterator, Optional, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import Progress, SpinnerColumn, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Column, Table
from typer.core import TyperGroup

from shardplan.errors import InfeasiblePlanError, ShardplanError, ShardplanWarning, SpecError
from shardplan.estimators.cost_model import EmbeddingCostModel, default_cost_model
from shardplan.loaders import with_overrides
from shardplan.planner import plan as make_plan
from shardplan.types import BatchScope, DType, Mode, Plan, ProgressReport, Topology, Workload

EXIT_OK, EXIT_BAD_INPUT, EXIT_INFEASIBLE = 0, 1, 2

HELP = """Sharding planner and cost model for recommender-model embedding tables.

Plan with `solve`; look at plans with `report`, `explain` and `export`; weigh solvers with `compare` and cluster sizes with `sweep`; run plans with `validate` and `profile`, and fit the cost model with `calibrate`; re-plan a changed cluster or workload with `replan`, and see what moves between two plans with `diff`; measure a workload from data with `stats`. Each command's --help has examples; docs/cli.md has them all.

Exit codes: 0 success; 1 bad input (missing file, bad YAML/CSV, unknown key or value) or a solver failure; 2 infeasible (no plan fits; the message says what would make it fit). A command line the parser rejects (unknown option, missing argument, a value of the wrong type) is bad input too: exit 1, with a usage message.
"""

# click's UsageError (typer vendors click in recent releases and exports only BadParameter).
_UsageError = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "UsageError")


class _Group(TyperGroup):
    """Click exits 2 on a usage error; for shardplan 2 means infeasible, so a command line the
    parser rejects exits 1 (bad input) instead."""

    def make_context(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().make_context(*args, **kwargs)
        except _UsageError as exc:
            exc.exit_code = EXIT_BAD_INPUT
            raise

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except _UsageError as exc:
            exc.exit_code = EXIT_BAD_INPUT
            raise


app = typer.Typer(cls=_Group, help=HELP, no_args_is_help=True, add_completion=False,
                  pretty_exceptions_enable=False, rich_markup_mode="rich")


class _Console(Console):
    """A rich console that ends the command quietly when its reader leaves (``| head``):
    exit 0, since what had to be written (the plan, the files) is written before printing."""

    def on_broken_pipe(self) -> None:
        self.quiet = True
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        raise SystemExit(EXIT_OK)


console = _Console(highlight=False)
err_console = _Console(stderr=True, highlight=False)

F = TypeVar("F", bound=Callable[..., Any])


def say(text: str) -> None:
    """Print a line of output: ``text`` is rich markup whose user strings the caller escaped."""
    console.print(text, soft_wrap=True)


def print_table(table: Table) -> None:
    """Print a rich table with its title as a line of its own above it: a title longer than
    the table is neither wrapped over several centred lines nor cut (80 columns, pipes)."""
    title = table.title
    if title:
        table.title = None
        say(str(title))
    console.print(table)


def handle_errors(fn: F) -> F:
    """Turn shardplan errors into one readable line and the documented exit code; print the
    library's warnings as ``warning:`` lines as they happen (each once); end quietly on a
    closed pipe."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with warnings.catch_warnings():  # restores the filters and showwarning afterwards
            warnings.simplefilter("always", ShardplanWarning)
            warnings.showwarning = _warning_printer(warnings.showwarning)
            try:
                return fn(*args, **kwargs)
            except InfeasiblePlanError as exc:
                _error("infeasible", exc.render())
                raise typer.Exit(code=EXIT_INFEASIBLE) from None
            except ShardplanError as exc:
                _error("error", str(exc))
                raise typer.Exit(code=EXIT_BAD_INPUT) from None
            except BrokenPipeError:
                # the reader (``| head``) left: what had to be written is written; stop quietly
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, sys.stdout.fileno())
                raise typer.Exit(code=EXIT_OK) from None
            except OSError as exc:  # an output path that cannot be written, a full disk, ...
                where = f"{exc.filename}: " if exc.filename else ""
                _error("error", f"{where}{exc.strerror or exc}; check the path and its "
                                "permissions")
                raise typer.Exit(code=EXIT_BAD_INPUT) from None

    return wrapper  # type: ignore[return-value]


def _error(label: str, message: str) -> None:
    err_console.print(f"[bold red]{label}:[/] {escape(message)}", soft_wrap=True)


def _warning_printer(others: Callable[..., None]) -> Callable[..., None]:
    """A ``warnings.showwarning`` that prints each ShardplanWarning once as a ``warning:``
    line on standard error and hands every other warning to ``others``."""
    seen: set[str] = set()

    def show(message: Any, category: type[Warning], *args: Any, **kwargs: Any) -> None:
        if not issubclass(category, ShardplanWarning):
            others(message, category, *args, **kwargs)
            return
        text = str(message)
        if text not in seen:
            seen.add(text)
            with contextlib.suppress(OSError):
                err_console.print(f"[bold yellow]warning:[/] {escape(text)}", soft_wrap=True)

    return show


def reflow_doc(fn: F) -> F:
    """Join the wrapped lines of each paragraph of ``fn``'s docstring, so that ``--help``
    (rich markup keeps line breaks) wraps prose to the terminal; indented lines (examples)
    stay as they are."""
    doc = inspect.cleandoc(fn.__doc__ or "")
    paras = []
    for para in doc.split("\n\n"):
        lines = para.splitlines()
        paras.append(para if any(ln.startswith(" ") for ln in lines) else " ".join(lines))
    fn.__doc__ = "\n\n".join(paras)
    return fn


# ---------------------------------------------------------------------------------------------
# Checks of option values
# ---------------------------------------------------------------------------------------------


def check_time_limit(seconds: float, flag: str = "--time-limit") -> float:
    """``seconds`` if finite and > 0, else SpecError naming ``flag``."""
    if not math.isfinite(seconds) or seconds <= 0:
        raise SpecError(f"{flag} must be > 0 seconds, got {seconds}", key_path=flag)
    return seconds


def check_positive(value: int, flag: str) -> int:
    """``value`` if >= 1, else SpecError naming ``flag``."""
    if value < 1:
        raise SpecError(f"{flag} must be >= 1, got {value}", key_path=flag)
    return value


#: Most steps (--steps, --warmup, --measure) one local executor run takes: a profile's medians
#: settle within a few dozen; a typo such as 10**9 would otherwise run for days.
MAX_STEPS = 10_000
#: Most ranks the local executor runs (one process each, on this machine); larger plans run
#: under torchrun across machines, or re-solved for fewer ranks with --world-size N --resolve.
MAX_LOCAL_RANKS = 256


def check_at_most(value: int, flag: str, limit: int, why: str) -> int:
    """``value`` if at most ``limit``, else SpecError naming ``flag`` and ``why``."""
    if value > limit:
        raise SpecError(f"{value:,} is more than {limit:,}; {why}", key_path=flag)
    return value


def check_local_ranks(ranks: int, flag: str = "--world-size",
                      fix: str = "run the plan under torchrun across machines, or re-solve it "
                                 "for fewer ranks with --world-size N --resolve") -> int:
    """``ranks`` if the local executor can run that many processes, else SpecError saying
    ``fix``."""
    if ranks > MAX_LOCAL_RANKS:
        raise SpecError(f"{ranks:,} ranks is more than the {MAX_LOCAL_RANKS} processes the local "
                        f"executor runs on one machine; {fix}", key_path=flag)
    return ranks


def names_list(text: str, flag: str) -> list[str]:
    """Comma-separated names, at least one, each once."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise SpecError(f"{flag} needs at least one name, comma-separated", key_path=flag)
    if len(set(names)) != len(names):
        raise SpecError(f"{flag} names a planner twice: {text!r}", key_path=flag)
    return names


def write_file(path: Path, data: str | bytes) -> None:
    """Write ``data`` to ``path``; SpecError naming it when that fails."""
    try:
        if isinstance(data, bytes):
            path.write_bytes(data)
        else:
            path.write_text(data, encoding="utf-8")
    except OSError as exc:
        raise SpecError(f"cannot write: {exc.strerror}", source=str(path)) from None


# ---------------------------------------------------------------------------------------------
# Options shared by the planning commands
# ---------------------------------------------------------------------------------------------

ProfileOpt = Annotated[Optional[Path], typer.Option(
    "--profile", "-p", help="A calibration profile YAML (from `shardplan calibrate`) for the "
    "cost model; default: the bundled profile of each device model.")]
BatchSizeOpt = Annotated[Optional[int], typer.Option(
    "--batch-size", help="Override the workload's batch size (a CSV carries none: 512).")]
BatchScopeOpt = Annotated[Optional[BatchScope], typer.Option(
    "--batch-scope", help="Override whether the batch size is per rank or global.",
    case_sensitive=False)]
ModeOpt = Annotated[Optional[Mode], typer.Option(
    "--mode", help="Override training or inference.", case_sensitive=False)]
DTypeOpt = Annotated[Optional[DType], typer.Option(
    "--dtype", help="Override every table's weight dtype.", case_sensitive=False)]


def apply_overrides(work: Workload, batch_size: int | None, batch_scope: BatchScope | None,
                    mode: Mode | None, dtype: DType | None) -> Workload:
    """The workload with the command line's ``--batch-size/--batch-scope/--mode/--dtype``."""
    if batch_size is not None:
        check_positive(batch_size, "--batch-size")
    return with_overrides(work, batch_size=batch_size, batch_scope=batch_scope, mode=mode,
                          dtype=dtype)


def cost_model_for(work: Workload, topo: Topology, profile: Path | None) -> EmbeddingCostModel:
    """The cost model for the problem: with ``--profile`` if given (said on the console)."""
    cm = default_cost_model(work, topo, profile)
    if profile is not None:
        say(f"cost model: profile {escape(str(profile))} ({describe_profiles(cm)})")
    return cm


def describe_profiles(cm: EmbeddingCostModel) -> str:
    """Which profile each host group uses and where its numbers come from, in a line."""
    parts = []
    for hg, p in zip(cm.topology.host_groups, cm.profiles):
        prov = p.provenance
        where = ", ".join(x for x in (prov.kind.value, prov.hardware, prov.date) if x)
        parts.append(f"{hg.name}: {p.name} ({where})")
    return "; ".join(parts)


# ---------------------------------------------------------------------------------------------
# Progress
# ---------------------------------------------------------------------------------------------


class ProgressSink:
    """Shows a planner's ``ProgressReport``s (best makespan and bound so far, and which phase
    finished when) on a rich task; keeps the best and the bound across reports, since a phase
    may report only one. The phase reads ``greedy done at 2 s``, so that a long next phase
    (the ILP) does not look like the last one still running: the elapsed-time column beside
    it keeps counting."""

    def __init__(self, progress: Progress, task: TaskID) -> None:
        self.progress, self.task = progress, task
        self.best: float | None = None
        self.bound: float | None = None
        self.start = time.perf_counter()

    def __call__(self, report: ProgressReport) -> None:
        if report.best_ms is not None:
            self.best = report.best_ms if self.best is None else min(self.best, report.best_ms)
        if report.bound_ms is not None:
            self.bound = report.bound_ms if self.bound is None else max(self.bound, report.bound_ms)
        at = time.perf_counter() - self.start
        # the phase first: at 80 columns the end of the status is what gets cut
        parts = ["done" if report.phase == "done" else f"{report.phase} done at {at:.0f} s"]
        if self.best is not None:
            parts.append(f"best {self.best:.3f} ms")
        if self.bound is not None:
            parts.append(f"bound {self.bound:.3f} ms")
        if self.best is not None and self.bound:
            parts.append(f"gap {(self.best / self.bound - 1) * 100:.1f}%")
        self.progress.update(self.task, status=escape(", ".join(parts)))


def _progress(transient: bool = True) -> Progress:
    """A spinner, the elapsed time, a label and a status; at 80 columns the status is cut
    first (with an ellipsis), never the spinner, the time or the label."""
    return Progress(SpinnerColumn(table_column=Column(no_wrap=True, min_width=1)),
                    TimeElapsedColumn(table_column=Column(no_wrap=True, min_width=7)),
                    TextColumn("[bold]{task.description}", table_column=Column(no_wrap=True)),
                    TextColumn("{task.fields[status]}", table_column=Column(
                        ratio=1, no_wrap=True, overflow="ellipsis", min_width=0)),
                    console=console, transient=transient, redirect_stdout=False,
                    redirect_stderr=False, expand=True, disable=not console.is_terminal)


def plan_with_progress(work: Workload, topo: Topology, *, label: str = "", **kwargs: Any) -> Plan:
    """:func:`shardplan.plan` under a live display: a spinner with elapsed time, and the best
    makespan and bound so far as the planner reports them. Nothing is drawn when the output is
    not a terminal."""
    with _progress() as progress:
        task = progress.add_task(escape(label or f"solving with {kwargs.get('solver', '')}"),
                                 total=None, status="")
        return make_plan(work, topo, progress=ProgressSink(progress, task), **kwargs)


@contextlib.contextmanager
def busy(label: str) -> Iterator[Callable[[str], None]]:
    """A spinner with elapsed time while a long step runs (report, validate, profile,
    calibrate); yields a function that sets its status line. Silent when not a terminal."""
    with _progress() as progress:
        task = progress.add_task(escape(label), total=None, status="")
        yield lambda status: progress.update(task, status=escape(status))
