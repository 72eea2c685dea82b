"""Every data type of shardplan, and the abstract bases its stages implement.

Reading this package's front door alone shows the architecture:

    Workload + Topology --(enumerators)--> ShardingOption per table
                        --(CostModel)-----> ShardCost per shard and rank class
                        --(solver)--------> Assignment (option per table, rank per shard)
                        --(plans.build)---> Plan (shards, per-rank memory/time, summary)

All specs are frozen, keyword-only dataclasses validated in ``__post_init__``; parsing
(YAML, CSV, CLI) lives in :mod:`shardplan.loaders` and turns strings into the enums below
before anything reaches these constructors. Units are in field names: ``_bytes``,
``_bytes_per_s``, ``_s``, ``_ms``.

Where each type lives (import them from here; the arrows run down this list only):

- :mod:`shardplan.types.enums`: the choice sets (``ShardingType``, ``PlacementKind``,
  ``DType``, ``Stage``/``Lane``, ...).
- :mod:`shardplan.types.resources`: ``Memory`` and ``Perf``, values with their own arithmetic.
- :mod:`shardplan.types.workload`: ``Workload``, ``TableSpec`` and what a table carries.
- :mod:`shardplan.types.topology`: ``Topology`` and its hosts, devices and links.
- :mod:`shardplan.types.planning`: ``ShardingOption``, ``ShardCost``, ``StepModel``,
  ``Assignment``, ``PlanningContext``.
- :mod:`shardplan.types.plan`: ``Plan`` (what the planner writes) and ``SolveResult``.
- :mod:`shardplan.types.bases`: the abstract bases ``CostModel`` and ``Solver``.
"""

from __future__ import annotations

from shardplan.types.bases import CostModel, Solver
from shardplan.types.enums import (
    LANES,
    STAGE_LANE_INDEX,
    BatchScope,
    Composition,
    DType,
    Lane,
    LinkType,
    MipStatus,
    Mode,
    NetworkType,
    Optimizer,
    PlacementKind,
    ShardingType,
    SolveStatus,
    Stage,
    Tier,
)
from shardplan.types.plan import (
    Plan,
    Provenance,
    RankPlan,
    Shard,
    SolveResult,
    Summary,
    TablePlan,
)
from shardplan.types.planning import (
    ZERO_COST,
    Assignment,
    GroupKey,
    PlanningContext,
    ProgressReport,
    ShardCost,
    ShardingOption,
    ShardSpec,
    StepModel,
    row_span,
)
from shardplan.types.resources import Memory, Perf
from shardplan.types.topology import DeviceModel, HostGroup, HostSpec, Link, RankInfo, Topology
from shardplan.types.workload import (
    HBM,
    AccessSkew,
    IdOrder,
    Placement,
    TableConstraints,
    TableSpec,
    Workload,
)

__all__ = [
    # the abstract bases
    "CostModel", "Solver",
    # choice sets
    "BatchScope", "Composition", "DType", "LANES", "Lane", "LinkType", "Mode", "NetworkType",
    "MipStatus", "Optimizer", "PlacementKind", "STAGE_LANE_INDEX", "ShardingType", "SolveStatus",
    "Stage", "Tier",
    # resources
    "Memory", "Perf",
    # workload
    "AccessSkew", "HBM", "IdOrder", "Placement", "TableConstraints", "TableSpec", "Workload",
    # topology
    "DeviceModel", "HostGroup", "HostSpec", "Link", "RankInfo", "Topology",
    # planning
    "Assignment", "GroupKey", "PlanningContext", "ProgressReport", "ShardCost", "ShardSpec",
    "ShardingOption", "StepModel", "ZERO_COST", "row_span",
    # the plan
    "Plan", "Provenance", "RankPlan", "Shard", "SolveResult", "Summary", "TablePlan",
]
