"""shardplan: a sharding planner and cost model for recommender-model embedding tables.

The front door is :func:`plan` (:func:`shardplan.planner.plan`, with its arguments checked)::

    >>> import shardplan
    >>> topo, work = shardplan.load_problem("dgx-h100-2x8")   # note: (topology, workload)
    >>> p = shardplan.plan(work, topo)                        # plan(workload, topology)
    >>> p.summary.makespan_ms > 0
    True

Also here: loading and saving (:func:`load_problem`, :func:`load_plan`, :func:`save_plan`),
comparing planners (:func:`compare_planners`), sweeping cluster sizes (:func:`sweep`),
explaining a table's sharding (:func:`explain_table`), re-planning a changed cluster or
workload with little migration (:func:`replan`), and planning once for a whole trainer job
(:func:`plan_cached`, :func:`plan_once`).
"""

from __future__ import annotations

__version__ = "0.1.0"

import functools  # noqa: E402
from typing import Any  # noqa: E402

from shardplan import planner as _planner  # noqa: E402
from shardplan.errors import (  # noqa: E402
    InfeasiblePlanError,
    LimitError,
    PlanError,
    ShardplanError,
    ShardplanWarning,
    SolverError,
    SpecError,
    TopologyError,
)
from shardplan.loaders import load_problem, load_topology, load_workload  # noqa: E402
from shardplan.parsing import LoadLimits  # noqa: E402
from shardplan.plans import check_estimates, load_plan, save_plan  # noqa: E402
from shardplan.types import Plan, Topology, Workload  # noqa: E402


@functools.wraps(_planner.plan)
def plan(workload: Workload, topology: Topology, *args: Any, **kwargs: Any) -> Plan:
    if isinstance(workload, Topology) and isinstance(topology, Workload):
        raise SpecError("plan() takes (workload, topology) but got (topology, workload); "
                        "load_problem returns (topology, workload), so write "
                        "`topo, work = load_problem(...)` then `plan(work, topo)`, or pass "
                        "plan(workload=..., topology=...)", key_path="plan")
    for name, value, cls in (("workload", workload, Workload), ("topology", topology, Topology)):
        if not isinstance(value, cls):
            raise SpecError(f"plan() needs {name}= a {cls.__name__} (from load_problem, "
                            f"load_{name} or the {cls.__name__} constructor), got "
                            f"{type(value).__name__}", key_path=name)
    return _planner.plan(workload, topology, *args, **kwargs)


from shardplan.compare import compare_planners, comparison_frame  # noqa: E402
from shardplan.distributed import plan_cached, plan_once  # noqa: E402
from shardplan.explain import explain_table  # noqa: E402
from shardplan.replanning import replan  # noqa: E402
from shardplan.sweep import fewest_devices, scale_topology, sweep  # noqa: E402

__all__ = [
    "__version__",
    "InfeasiblePlanError",
    "LimitError",
    "LoadLimits",
    "PlanError",
    "ShardplanError",
    "ShardplanWarning",
    "SolverError",
    "SpecError",
    "TopologyError",
    "check_estimates",
    "compare_planners",
    "comparison_frame",
    "explain_table",
    "replan",
    "fewest_devices",
    "load_plan",
    "load_problem",
    "load_topology",
    "load_workload",
    "plan",
    "plan_cached",
    "plan_once",
    "save_plan",
    "scale_topology",
    "sweep",
]
