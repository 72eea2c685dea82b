"""The front door: workload + topology -> Plan."""

from __future__ import annotations

import math
import numbers
import time
from typing import Any, Callable

from shardplan.bounds import (
    DEFAULT_LP_MAX_NONZEROS,
    DEFAULT_LP_MAX_VARS,
    DEFAULT_LP_TIME_LIMIT_S,
    lower_bound,
)
from shardplan.enumerators import EnumerationOptions, enumerate_options
from shardplan.errors import SolverError, SpecError
from shardplan.plans import build_plan
from shardplan.solvers import DEFAULT_SOLVER, get_solver
from shardplan.solvers.common import CostTables, TableGroups, check_groups
from shardplan.types import (
    CostModel,
    Plan,
    PlanningContext,
    ProgressReport,
    Solver,
    Topology,
    Workload,
)


def plan(
    workload: Workload,
    topology: Topology,
    *,
    cost_model: CostModel | None = None,
    solver: str | Solver = DEFAULT_SOLVER,
    time_limit_s: float = 60.0,
    threads: int = 1,
    seed: int = 0,
    enumeration: EnumerationOptions | None = None,
    bound_lp_max_vars: int = DEFAULT_LP_MAX_VARS,
    bound_lp_max_nonzeros: int = DEFAULT_LP_MAX_NONZEROS,
    bound_lp_time_limit_s: float = DEFAULT_LP_TIME_LIMIT_S,
    progress: Callable[[ProgressReport], None] | None = None,
) -> Plan:
    """Plan the sharding of ``workload`` on ``topology``.

    Args:
        workload: the tables and batch.
        topology: the cluster.
        cost_model: defaults to ``shardplan.estimators.default_cost_model``.
        solver: a registered solver name (see ``shardplan.solvers.SOLVERS``) or an instance.
        time_limit_s: the solver's time budget.
        threads: threads a solver backend may use.
        seed: for solvers with randomness; the same seed gives the same plan.
        enumeration: knobs of the option enumeration.
        bound_lp_max_vars: the LP relaxation behind ``summary.lower_bound_ms`` is solved only
            for models up to this many variables (0: never; the work and largest-unit bounds
            are always computed) ...
        bound_lp_max_nonzeros: ... and about this many coefficients
            (``solvers.ilp.model_nonzeros``: fixed shards and everywhere-costs on many ranks
            add coefficients, not variables).
        bound_lp_time_limit_s: a safety-net time limit for that LP, seconds (the LP is
            solved to optimality; if this trips, the bound is the cheap bounds' best).
        progress: called with a ``ProgressReport`` (best makespan and bound so far) as the
            planner and the solver go; the CLI draws it live.

    Returns:
        The plan, with per-rank memory and time estimates.

    Raises:
        InfeasiblePlanError: no plan fits; the error says what would make it fit.
        SpecError: a bad solver name or option (a time limit that is not a finite number of
            seconds > 0, threads < 1, a seed that is not an integer, ...), arguments of the
            wrong type, or a pinned rank the topology lacks.
        SolverError: a solver failed, or broke a co-location/separation constraint.

    Example:
        >>> from shardplan import load_problem, plan
        >>> topo, work = load_problem("dgx-h100-2x8")
        >>> p = plan(work, topo)  # solver="auto"
        >>> len(p.tables) == len(work.tables)
        True
        >>> p.summary.makespan_ms >= p.summary.lower_bound_ms
        True
    """
    time_limit_s, threads, seed, bound_lp_max_vars, bound_lp_max_nonzeros = _check_arguments(
        workload, topology, time_limit_s, threads, seed, bound_lp_max_vars,
        bound_lp_max_nonzeros)
    if cost_model is None:
        from shardplan.estimators import default_cost_model

        cost_model = default_cost_model(workload, topology)
    s = get_solver(solver)
    start = time.perf_counter()
    options = enumerate_options(workload, topology, enumeration)
    ctx = PlanningContext(workload=workload, topology=topology, cost_model=cost_model,
                          options=options, time_limit_s=time_limit_s, threads=threads, seed=seed,
                          progress=progress)
    if progress is not None:  # the cheap bounds first, so a live display has a bound to show
        ctx.report("bound", bound_ms=lower_bound(ctx, CostTables.of(ctx), lp_max_vars=0,
                                                 mix_max_options=0).value_ms)
    result = s.solve(ctx)
    elapsed = time.perf_counter() - start
    ct = CostTables.of(ctx)
    problem = check_groups(ct, TableGroups.of(ctx, ct), ct.choice_of(result.assignment))
    if problem:
        raise SolverError(f"solver {s.name!r} broke a co-location/separation constraint: {problem}")
    bound = lower_bound(ctx, ct, lp_max_vars=bound_lp_max_vars,
                        lp_max_nonzeros=bound_lp_max_nonzeros,
                        lp_time_limit_s=bound_lp_time_limit_s)
    lb = bound.value_ms
    if result.lower_bound_ms is not None:
        lb = max(lb, result.lower_bound_ms)
    ctx.report("done", bound_ms=lb)
    opts: dict[str, Any] = {"time_limit_s": time_limit_s, "threads": threads, "seed": seed}
    opts.update(s.options())
    return build_plan(workload=workload, topology=topology, cost_model=cost_model,
                      assignment=result.assignment, solver=s.name, solver_options=opts,
                      lower_bound_ms=lb, solve_time_s=elapsed, status=result.status)


def _check_arguments(workload: Any, topology: Any, time_limit_s: Any, threads: Any, seed: Any,
                     bound_lp_max_vars: Any, bound_lp_max_nonzeros: Any
                     ) -> tuple[float, int, int, int, int]:
    """The numeric arguments of :func:`plan` as plain ``float``/``int`` (numpy scalars
    accepted; the plan records them as JSON); SpecError for one of the wrong type or out of
    range."""
    if isinstance(workload, Topology) and isinstance(topology, Workload):
        raise SpecError("plan() takes (workload, topology) but got (topology, workload); "
                        "load_problem returns (topology, workload), so write "
                        "`topo, work = load_problem(...)` then `plan(work, topo)`",
                        key_path="plan")
    for name, value, cls in (("workload", workload, Workload), ("topology", topology, Topology)):
        if not isinstance(value, cls):
            raise SpecError(f"plan() needs {name}= a {cls.__name__} (from load_problem or "
                            f"load_{name}), got {type(value).__name__}", key_path=name)
    if (isinstance(time_limit_s, bool) or not isinstance(time_limit_s, numbers.Real)
            or not math.isfinite(time_limit_s) or time_limit_s <= 0):
        raise SpecError(f"time_limit_s must be a finite number of seconds > 0, got "
                        f"{time_limit_s!r}", key_path="time_limit_s")
    for name, value, low in (("threads", threads, 1), ("seed", seed, 0),
                             ("bound_lp_max_vars", bound_lp_max_vars, 0),
                             ("bound_lp_max_nonzeros", bound_lp_max_nonzeros, 0)):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
            raise SpecError(f"{name} must be an integer >= {low}, got {value!r}", key_path=name)
    return (float(time_limit_s), int(threads), int(seed), int(bound_lp_max_vars),
            int(bound_lp_max_nonzeros))
