"""Solvers: each a small class with ``solve(ctx) -> SolveResult``, chosen by name or passed in.

``SOLVERS`` maps the names the CLI accepts to solver factories; ``DEFAULT_SOLVER`` is what
the planner uses. ``BASELINE_SOLVERS`` are the comparison points of the benchmark.
"""

from __future__ import annotations

from typing import Callable

from shardplan.errors import SpecError
from shardplan.solvers.auto import AutoSolver
from shardplan.solvers.baselines import BASELINES
from shardplan.solvers.greedy import GreedySolver
from shardplan.solvers.ilp import ILPSolver
from shardplan.solvers.local_search import LocalSearchSolver
from shardplan.types import Solver

SOLVERS: dict[str, Callable[[], Solver]] = {
    "auto": AutoSolver,
    "greedy": GreedySolver,
    "ilp": ILPSolver,
    "local_search": LocalSearchSolver,
    **BASELINES,
}
BASELINE_SOLVERS: tuple[str, ...] = tuple(sorted(BASELINES))
DEFAULT_SOLVER = "auto"


def get_solver(name_or_solver: str | Solver) -> Solver:
    """A solver instance from a registered name (or the instance itself).

    Raises:
        SpecError: an unknown name.
    """
    if isinstance(name_or_solver, Solver):
        return name_or_solver
    try:
        return SOLVERS[name_or_solver]()
    except KeyError:
        raise SpecError(f"unknown solver {name_or_solver!r}; choose one of "
                        f"{', '.join(sorted(SOLVERS))}", key_path="solver") from None


__all__ = ["BASELINE_SOLVERS", "DEFAULT_SOLVER", "SOLVERS", "AutoSolver", "GreedySolver",
           "ILPSolver", "LocalSearchSolver", "get_solver"]
