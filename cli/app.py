"""The ``shardplan`` command line.

Exit codes: 0 success, 1 bad input (or a solver failure), 2 infeasible problem. Every
shardplan error is caught here and printed as one line; no traceback reaches the user.

Command modules register themselves on ``app`` when imported (see the imports at the end).
"""

from __future__ import annotations

import functools
import sys
from typing import Any, Callable, TypeVar

import typer
from rich.console import Console
from typer.core import TyperGroup

from shardplan.errors import InfeasiblePlanError, ShardplanError

EXIT_OK, EXIT_BAD_INPUT, EXIT_INFEASIBLE = 0, 1, 2

HELP = """Sharding planner and cost model for recommender-model embedding tables.

Plan with `solve`; look at plans with `report`, `explain` and `export`; weigh solvers with `compare` and cluster sizes with `sweep`. Each command's --help has examples; docs/cli.md has them all.

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
console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)

F = TypeVar("F", bound=Callable[..., Any])


def handle_errors(fn: F) -> F:
    """Turn shardplan errors into one readable line and the documented exit code."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except InfeasiblePlanError as exc:
            err_console.print(f"[bold red]infeasible:[/] {exc.render()}", soft_wrap=True)
            raise typer.Exit(code=EXIT_INFEASIBLE) from None
        except ShardplanError as exc:
            err_console.print(f"[bold red]error:[/] {exc}", soft_wrap=True)
            raise typer.Exit(code=EXIT_BAD_INPUT) from None
        except OSError as exc:  # an output path that cannot be written, a full disk, ...
            where = f"{exc.filename}: " if exc.filename else ""
            err_console.print(f"[bold red]error:[/] {where}{exc.strerror or exc}; check the path "
                              "and its permissions", soft_wrap=True, markup=True)
            raise typer.Exit(code=EXIT_BAD_INPUT) from None

    return wrapper  # type: ignore[return-value]


def main() -> None:
    """Console-script entry point."""
    sys.exit(app())


# Command modules: each adds its commands to ``app``.
from shardplan.cli import commands  # noqa: E402,F401
from shardplan.cli import report_commands  # noqa: E402,F401
from shardplan.cli import executor_commands  # noqa: E402,F401
from shardplan.cli import stats_commands  # noqa: E402,F401
