"""The plan: what the planner writes (``Plan`` with its ``TablePlan``/``Shard``, ``RankPlan``,
``Summary``, ``Provenance``), and what a solver returns (``SolveResult``). Serialised by
:mod:`shardplan.plans`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Mapping

from shardplan.types.enums import ShardingType, SolveStatus
from shardplan.types.planning import Assignment
from shardplan.types.resources import Memory, Perf
from shardplan.types.topology import Topology
from shardplan.types.workload import HBM, Placement, Workload

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd


@dataclass(frozen=True, kw_only=True, slots=True)
class Shard:
    rank: int
    row_offset: int
    num_rows: int
    col_offset: int
    num_cols: int
    placement: Placement = HBM


@dataclass(frozen=True, kw_only=True, slots=True)
class TablePlan:
    name: str
    num_embeddings: int
    embedding_dim: int
    sharding_type: ShardingType
    shards: tuple[Shard, ...]

    @property
    def ranks(self) -> tuple[int, ...]:
        return tuple(sorted({s.rank for s in self.shards}))


@dataclass(frozen=True, kw_only=True, slots=True)
class RankPlan:
    rank: int
    host: int
    device: str
    memory_bytes: Memory
    capacity_bytes: Memory
    estimated_ms: Perf
    total_ms: float


@dataclass(frozen=True, kw_only=True, slots=True)
class Summary:
    makespan_ms: float
    lower_bound_ms: float | None
    solver: str
    num_tables: int
    num_ranks: int
    solve_time_s: float
    sharding_mix: Mapping[str, int]
    status: str = "feasible"


@dataclass(frozen=True, kw_only=True, slots=True)
class Provenance:
    solver: str
    solver_options: Mapping[str, object]
    shardplan_version: str
    inputs_sha256: str
    cost_model: Mapping[str, object]


@dataclass(frozen=True, kw_only=True, slots=True)
class Plan:
    """A sharding plan, self-contained: it embeds the workload and topology it was made for.

    Attributes:
        replicas: 2D sparse parallelism (TorchRec's ``DMPCollection``): the plan shards the
            tables over ``topology`` (one sharding group) and runs on
            ``replicas x topology.world_size`` ranks, each shard replicated on ``replicas``
            ranks of one host, the replicas' weights and optimizer state averaged every
            ``cost model options.replica_sync_steps`` steps. 1: an ordinary plan.
    """

    tables: tuple[TablePlan, ...]
    ranks: tuple[RankPlan, ...]
    summary: Summary
    provenance: Provenance
    workload: Workload
    topology: Topology
    replicas: int = 1

    def table(self, name: str) -> TablePlan:
        for t in self.tables:
            if t.name == name:
                return t
        raise KeyError(name)

    def to_dataframe(self) -> pd.DataFrame:
        """One row per table (see :func:`shardplan.frames.table_frame`)."""
        from shardplan.frames import table_frame

        return table_frame(self)

    def rank_frame(self) -> pd.DataFrame:
        """One row per rank (see :func:`shardplan.frames.rank_frame`)."""
        from shardplan.frames import rank_frame

        return rank_frame(self)

    def shard_frame(self) -> pd.DataFrame:
        """One row per shard (see :func:`shardplan.frames.shard_frame`)."""
        from shardplan.frames import shard_frame

        return shard_frame(self)


@dataclass(frozen=True, kw_only=True, slots=True)
class SolveResult:
    """What a solver returns.

    Attributes:
        assignment: the option and ranks chosen per table.
        status: a :class:`SolveStatus`.
        lower_bound_ms: the best bound the solver proved, if any.
        details: solver-specific facts (objective, gap, iterations), JSON-serialisable.
    """

    assignment: Assignment
    status: SolveStatus = SolveStatus.FEASIBLE
    lower_bound_ms: float | None = None
    details: Mapping[str, object] = field(default_factory=dict)
