"""The abstract bases the stages implement: ``CostModel`` (estimates memory and time,
linear by construction) and ``Solver`` (a placement algorithm)."""

from __future__ import annotations

from abc import ABC, abstractmethod

from shardplan.types.plan import SolveResult
from shardplan.types.planning import (ZERO_COST, GroupKey, PlanningContext, ShardCost,
                                      ShardingOption, StepModel)
from shardplan.types.resources import Perf


class CostModel(ABC):
    """Estimates memory and time. Linear by construction, so solvers can optimise it exactly:

        rank r's lanes = rank_overhead(group(r))
                       + sum over sharding groups used: group_cost(key, group(r))
                       + sum over options chosen: everywhere_cost(option, group(r))
                       + sum over shards placed on r: shard_cost(option, i, group(r))

    and the step time is ``step.makespan`` of the ranks' lanes (a max/sum of linear terms,
    which an integer program expresses exactly). Costs depend on a rank only through its host
    group (``RankInfo.group``) and, for group costs, whether it takes part in the group's
    collectives, so solvers evaluate each shard once per group.
    """

    name: str = "cost-model"
    step: StepModel = StepModel()

    @abstractmethod
    def shard_cost(self, option: ShardingOption, shard_index: int, group: int) -> ShardCost:
        """Cost of shard ``shard_index`` of ``option`` on a rank of host group ``group``."""

    def shard_costs(self, option: ShardingOption, group: int) -> list[ShardCost]:
        """Costs of all shards of ``option`` on a rank of ``group`` (override to vectorise)."""
        return [self.shard_cost(option, i, group) for i in range(len(option.shards))]

    @abstractmethod
    def everywhere_cost(self, option: ShardingOption, group: int) -> ShardCost:
        """Cost every rank of ``group`` pays because the table is sharded this way (e.g. the
        buffers and all-to-all receives of its pooled outputs for the rank's own samples)."""

    @abstractmethod
    def rank_overhead(self, group: int) -> ShardCost:
        """Fixed cost of a rank of ``group`` whatever the plan."""

    def group_key(self, option: ShardingOption) -> GroupKey | None:
        """The sharding group ``option`` joins (None: it joins none, no fixed cost)."""
        return None

    def group_cost(self, key: GroupKey, group: int) -> ShardCost:
        """Fixed cost every rank of host group ``group`` pays once if any table uses sharding
        group ``key`` (e.g. the latencies of its world-wide all-to-alls)."""
        return ZERO_COST

    def group_member_cost(self, key: GroupKey, group: int) -> ShardCost:
        """What a rank of ``key.ranks`` (of host group ``group``) pays on top of
        ``group_cost``, for the collectives that run among those ranks only."""
        return ZERO_COST

    def total(self, perf: Perf) -> float:
        """A rank's own step time from its lanes (``step.rank_time``); the plan's step time
        composes all ranks (``step.makespan``)."""
        return self.step.rank_time(perf)

    def describe(self) -> dict[str, object]:
        """What the plan records about the model (name, profile, options)."""
        return {"name": self.name}

class Solver(ABC):
    """A placement algorithm. Subclasses are small; ``solve`` is all they must define."""

    name: str = "solver"

    @abstractmethod
    def solve(self, ctx: PlanningContext) -> SolveResult:
        """Choose an option per table and a rank per shard. Raises InfeasiblePlanError."""

    def options(self) -> dict[str, object]:
        """The solver's settings, recorded in the plan's provenance."""
        return {}
