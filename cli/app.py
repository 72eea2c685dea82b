"""The ``shardplan`` command line: the typer app with every command registered.

Exit codes: 0 success, 1 bad input (or a solver failure), 2 infeasible problem (see
:mod:`shardplan.cli.base`, which holds the app, the error boundary and the shared options).
Each command module registers its commands on ``app`` when imported; this module imports
them all, so ``shardplan.cli.app:app`` is the complete command line.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
from typing import Iterator

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


@contextlib.contextmanager
def native_stdout_to_stderr() -> Iterator[None]:
    """Send what native code writes to file descriptor 1 (the HiGHS solver's banner, other C
    libraries' chatter) to standard error, so that standard output holds only shardplan's own
    output (a table, CSV, JSON) and reads clean in a pipe. Python's ``sys.stdout`` keeps
    writing to the real standard output, through a duplicate of its descriptor."""
    try:
        sys.stdout.flush()
        real = os.dup(1)
    except (OSError, ValueError, AttributeError):  # no usable descriptor 1: nothing to guard
        yield
        return
    old = sys.stdout
    os.dup2(2, 1)
    sys.stdout = io.TextIOWrapper(os.fdopen(real, "wb", buffering=0, closefd=False),
                                  encoding=getattr(old, "encoding", None) or "utf-8",
                                  errors=getattr(old, "errors", None) or "strict",
                                  write_through=True)
    try:
        yield
    finally:
        with contextlib.suppress(OSError, ValueError):
            sys.stdout.flush()
        _flush_c_stdio()  # C's buffered stdout holds the banner until flushed: to stderr
        sys.stdout = old
        with contextlib.suppress(OSError):
            os.dup2(real, 1)
        with contextlib.suppress(OSError):
            os.close(real)


def _flush_c_stdio() -> None:
    """``fflush(NULL)`` in the C library, where there is one (best effort)."""
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL(None).fflush(None)


def main() -> None:
    """Console-script entry point: the app, with native output kept off standard output."""
    with native_stdout_to_stderr():
        try:
            code = app()
        except SystemExit as exc:
            code = exc.code
    sys.exit(code)


if __name__ == "__main__":  # python -m shardplan.cli.app
    main()

__all__ = ["COMMAND_MODULES", "EXIT_BAD_INPUT", "EXIT_INFEASIBLE", "EXIT_OK", "app", "console",
           "err_console", "main", "native_stdout_to_stderr"]
