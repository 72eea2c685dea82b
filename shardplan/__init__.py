"""shardplan: a sharding planner and cost model for recommender-model embedding tables.

The front door is :func:`shardplan.planner.plan`::

    >>> import shardplan
    >>> topo, work = shardplan.load_problem("dgx-h100-2x8")
    >>> p = shardplan.plan(work, topo)
    >>> p.summary.makespan_ms > 0
    True
"""

__version__ = "0.1.0"

from shardplan.errors import (  # noqa: E402
    InfeasiblePlanError,
    PlanError,
    ShardplanError,
    SolverError,
    SpecError,
    TopologyError,
)
from shardplan.loaders import load_problem, load_topology, load_workload  # noqa: E402
from shardplan.planner import plan  # noqa: E402
from shardplan.plans import load_plan, save_plan  # noqa: E402

__all__ = [
    "__version__",
    "InfeasiblePlanError",
    "PlanError",
    "ShardplanError",
    "SolverError",
    "SpecError",
    "TopologyError",
    "load_plan",
    "load_problem",
    "load_topology",
    "load_workload",
    "plan",
    "save_plan",
]
