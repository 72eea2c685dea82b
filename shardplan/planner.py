"""The front door: workload + topology -> Plan."""

from __future__ import annotations

import time
from typing import Any

from shardplan.enumerators import EnumerationOptions, enumerate_options
from shardplan.plans import build_plan
from shardplan.solvers import DEFAULT_SOLVER, get_solver
from shardplan.types import CostModel, Plan, PlanningContext, Solver, Topology, Workload


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

    Returns:
        The plan, with per-rank memory and time estimates.

    Raises:
        InfeasiblePlanError: no plan fits; the error says what would make it fit.
        SpecError: a bad solver name or option.

    Example:
        >>> from shardplan import load_problem, plan
        >>> topo, work = load_problem("dgx-h100-2x8")
        >>> p = plan(work, topo, solver="greedy")
        >>> len(p.tables) == len(work.tables)
        True
    """
    if cost_model is None:
        from shardplan.estimators import default_cost_model

        cost_model = default_cost_model(workload, topology)
    s = get_solver(solver)
    start = time.perf_counter()
    options = enumerate_options(workload, topology, enumeration)
    ctx = PlanningContext(workload=workload, topology=topology, cost_model=cost_model,
                          options=options, time_limit_s=time_limit_s, threads=threads, seed=seed)
    result = s.solve(ctx)
    elapsed = time.perf_counter() - start
    opts: dict[str, Any] = {"time_limit_s": time_limit_s, "threads": threads, "seed": seed}
    opts.update(s.options())
    return build_plan(workload=workload, topology=topology, cost_model=cost_model,
                      assignment=result.assignment, solver=s.name, solver_options=opts,
                      lower_bound_ms=result.lower_bound_ms, solve_time_s=elapsed,
                      status=result.status)
