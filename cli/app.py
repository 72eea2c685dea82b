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

from shardplan.errors import InfeasiblePlanError, ShardplanError

EXIT_OK, EXIT_BAD_INPUT, EXIT_INFEASIBLE = 0, 1, 2

HELP = """Sharding planner and cost model for recommender-model embedding tables.

Exit codes: 0 success; 1 bad input (missing file, bad YAML/CSV, unknown key or value) or a
solver failure; 2 infeasible (no plan fits; the message says what would make it fit).
"""

app = typer.Typer(help=HELP, no_args_is_help=True, add_completion=False,
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

    return wrapper  # type: ignore[return-value]


def main() -> None:
    """Console-script entry point."""
    sys.exit(app())


# Command modules: each adds its commands to ``app``.
from shardplan.cli import commands  # noqa: E402,F401
