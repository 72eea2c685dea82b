"""Solvers: each a small class with ``solve(ctx) -> SolveResult``, chosen by name or passed in.

``SOLVERS`` maps the names the CLI accepts to solver factories; ``DEFAULT_SOLVER`` is what
``shardplan solve`` uses.
"""

from __future__ import annotations

from typing import Callable

from shardplan.errors import SpecError
from shardplan.solvers.greedy import GreedySolver
from shardplan.types import Solver

SOLVERS: dict[str, Callable[[], Solver]] = {
    "greedy": GreedySolver,
}
DEFAULT_SOLVER = "greedy"


def get_solver(name_or_solver: str | Solver) -> Solver:
    """A solver instance from a registered name (or the instance itself)."""
    if isinstance(name_or_solver, Solver):
        return name_or_solver
    try:
        return SOLVERS[name_or_solver]()
    except KeyError:
        raise SpecError(f"unknown solver {name_or_solver!r}; choose one of "
                        f"{', '.join(sorted(SOLVERS))}", key_path="solver") from None


__all__ = ["DEFAULT_SOLVER", "SOLVERS", "get_solver"]
