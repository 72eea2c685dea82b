"""The ``shardplan`` command line: the typer app with every command registered.

Exit codes: 0 success, 1 bad input (or a solver failure), 2 infeasible problem (see
:mod:`shardplan.cli.base`, which holds the app, the error boundary and the shared options).
Each command module registers its commands on ``app`` when imported; this module imports
them all, so ``shardplan.cli.app:app`` is the complete command line.
"""

from __future__ import annotations

import sys

from shardplan.cli import (
    commands,
    compare_commands,
    executor_commands,
    report_commands,
    stats_commands,
)
from shardplan.cli import replan_commands  # noqa: F401,E402  (registers replan, diff)
from shardplan.cli.base import EXIT_BAD_INPUT, EXIT_INFEASIBLE, EXIT_OK, app, console, err_console

COMMAND_MODULES = (commands, report_commands, compare_commands, executor_commands,
                   stats_commands)


def main() -> None:
    """Console-script entry point."""
    sys.exit(app())


if __name__ == "__main__":  # python -m shardplan.cli.app
    main()

__all__ = ["COMMAND_MODULES", "EXIT_BAD_INPUT", "EXIT_INFEASIBLE", "EXIT_OK", "app", "console",
           "err_console", "main"]
