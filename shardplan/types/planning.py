"""Planning values: sharding options and the shards they make, shard costs, sharding groups,
the step model (how lane times compose), a solver's ``Assignment`` and the
``PlanningContext`` a solver gets."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Iterator, Mapping, Sequence

import numpy as np

from shardplan.types.checks import _check
from shardplan.types.enums import STAGE_LANE_INDEX, Composition, ShardingType
from shardplan.types.resources import Memory, Perf
from shardplan.types.topology import Topology
from shardplan.types.workload import Placement, Workload

if TYPE_CHECKING:  # pragma: no cover
    from shardplan.types.bases import CostModel


@dataclass(frozen=True, kw_only=True, slots=True)
class ShardSpec:
    """A rectangle of a table: rows [row_offset, row_offset+num_rows) x cols likewise."""

    row_offset: int
    num_rows: int
    col_offset: int
    num_cols: int


@dataclass(frozen=True, kw_only=True, slots=True)
class ShardingOption:
    """One way to shard one table: a sharding type, a placement and the shards it makes.

    ``candidate_ranks[i]`` restricts where shard ``i`` may go (``None``: any rank). Row-wise
    and data-parallel shards are fixed to one rank each; table-row-wise shards to the ranks
    of one host.
    """

    table: str
    sharding_type: ShardingType
    placement: Placement
    shards: tuple[ShardSpec, ...]
    candidate_ranks: tuple[tuple[int, ...] | None, ...]

    def __post_init__(self) -> None:
        _check(len(self.shards) == len(self.candidate_ranks), "candidate_ranks",
               len(self.candidate_ranks), "needs one entry per shard")

    @property
    def label(self) -> str:
        return f"{self.sharding_type.short}x{len(self.shards)}/{self.placement}"


@dataclass(frozen=True, kw_only=True, slots=True)
class ShardCost:
    """What one shard costs the rank that holds it (or, for an option's everywhere-cost, each
    rank; for a sharding group's fixed cost, each participant)."""

    memory: Memory
    perf: Perf

    def __add__(self, other: ShardCost) -> ShardCost:
        return ShardCost(memory=self.memory + other.memory, perf=self.perf + other.perf)


ZERO_COST = ShardCost(memory=Memory(), perf=Perf())


@dataclass(frozen=True, kw_only=True, slots=True)
class GroupKey:
    """A sharding group: the tables one set of fused collectives serves (TorchRec issues one
    input dist and one output dist per sharding type and module, and DDP buckets the
    data-parallel gradients). Its fixed cost (the calls' latencies, kernel launches) is paid
    once if any table of the plan uses it.

    Attributes:
        sharding_type: the sharding type of its tables.
        ranks: the ranks some of its collectives run over only (row-wise over a subset: the
            reduce-scatter among them); ``None``: all collectives run over all ranks.
    """

    sharding_type: ShardingType
    ranks: tuple[int, ...] | None = None

    @property
    def label(self) -> str:
        return self.sharding_type.short if self.ranks is None else \
            f"{self.sharding_type.short}@{len(self.ranks)}"


def row_span(ranks: Sequence[int], table_rows: int, world: int) -> tuple[int, ...] | None:
    """The ranks a row-wise table's collectives run over: ``None`` when its blocks sit on
    ranks ``0, 1, ...`` of every rank it can use (row-wise over all ranks; a table with fewer
    rows than ranks uses the first ``rows``), else its ranks in order (row-wise over a subset:
    a reduce-scatter among them, then an all-to-all to the sample owners). The cost model and
    the executor both decide by this."""
    if tuple(ranks) == tuple(range(min(table_rows, world))):
        return None
    return tuple(sorted(set(ranks)))


@dataclass(frozen=True, kw_only=True, slots=True)
class StepModel:
    """How per-rank lane times (``Lane``) compose into the step time.

    Attributes:
        composition: ``synchronized`` (sum over stages of the slowest rank) or ``per_rank``
            (the slowest rank's sum); see :class:`Composition`.
        pipelined: TorchRec's ``TrainPipelineSparseDist``: the next batch's input dist runs
            while this batch computes, so the step is the longer of the input dist and the
            rest (with ``overlap`` < 1, plus the part of the shorter one left unhidden);
            ``False``: stages run one after the other.
        overlap: the fraction of the shorter of (input dist, the rest of the step) that the
            pipeline hides: step = max(a, b) + (1 - overlap) x min(a, b). 1 is TorchRec's
            assumption (full overlap); a calibrated profile measures it
            (``Coefficients.pipeline_overlap``). Equivalently step = max(a + (1 - overlap) b,
            b + (1 - overlap) a), a max of linear terms, which the ILP and the bounds use.
    """

    composition: Composition = Composition.SYNCHRONIZED
    pipelined: bool = True
    overlap: float = 1.0

    def __post_init__(self) -> None:
        _check(isinstance(self.overlap, (int, float)) and 0.0 <= self.overlap <= 1.0, "overlap",
               self.overlap, "must be in [0, 1] (1: the pipeline hides the shorter of the input "
               "dist and the rest entirely)")

    @property
    def unhidden(self) -> float:
        """1 - overlap: the weight of the shorter of the two pipelined parts."""
        return 1.0 - self.overlap

    def compose(self, stage_t):
        """[..., S] stage times -> [...] step times (see the class docstring)."""
        if self.pipelined:
            a, b = stage_t[..., 0], stage_t[..., 1:].sum(-1)
            if self.overlap == 1.0:
                return np.maximum(a, b)
            return np.maximum(a, b) + self.unhidden * np.minimum(a, b)
        return stage_t.sum(-1)

    def stage_times(self, load):
        """[..., L] lane times -> [..., S] stage times (each the longest of its lanes)."""
        load = np.asarray(load, dtype=float)
        out = np.empty(load.shape[:-1] + (len(STAGE_LANE_INDEX),))
        for s, ix in enumerate(STAGE_LANE_INDEX):  # element-wise maxima: no fancy indexing
            v = load[..., ix[0]]
            for j in ix[1:]:
                v = np.maximum(v, load[..., j])
            out[..., s] = v
        return out

    def rank_time(self, perf: Perf) -> float:
        """One rank's step time if it ran alone: its stages composed (pipelined: the longer of
        its input dist and the rest)."""
        return self.rank_time_lanes(perf.as_tuple())

    def rank_time_lanes(self, lanes) -> float:
        """:meth:`rank_time` of per-lane values in ``LANES`` order."""
        return float(self.compose(self.stage_times(lanes)))

    def makespan(self, load) -> float:
        """The step time of a [ranks, L] lane-time matrix."""
        load = np.asarray(load, dtype=float)
        if self.composition is Composition.SYNCHRONIZED:
            return float(self.compose(self.stage_times(load.max(0))))
        return float(self.compose(self.stage_times(load)).max())

    def makespan_if_added(self, load, colmax, current: float, ranks, add):
        """Step times if ``add[i]`` ([n, L]) were added on rank ``ranks[i]`` (one at a time),
        given the matrix ``load``, its column maxima ``colmax`` and its step time."""
        rows = load[ranks] + add
        if self.composition is Composition.SYNCHRONIZED:
            return self.compose(self.stage_times(np.maximum(colmax[None, :], rows)))
        return np.maximum(current, self.compose(self.stage_times(rows)))

    def as_dict(self) -> dict[str, object]:
        return {"composition": self.composition.value, "pipelined": self.pipelined,
                "overlap": self.overlap}

@dataclass(frozen=True, kw_only=True, slots=True)
class Assignment:
    """A solver's answer: for each table (workload order) its option and its shards' ranks."""

    options: tuple[ShardingOption, ...]
    ranks: tuple[tuple[int, ...], ...]

    def __post_init__(self) -> None:
        _check(len(self.options) == len(self.ranks), "ranks", len(self.ranks),
               "needs one rank tuple per option")
        for o, rs in zip(self.options, self.ranks):
            _check(len(rs) == len(o.shards), "ranks", (o.table, rs), "needs one rank per shard")

    def placed(self) -> Iterator[tuple[ShardingOption, int, int]]:
        """(option, shard index, rank) for every placed shard."""
        for o, rs in zip(self.options, self.ranks):
            for i, r in enumerate(rs):
                yield o, i, r


@dataclass(frozen=True, kw_only=True, slots=True)
class ProgressReport:
    """A solver's news while it runs: the best makespan found so far and the best lower bound
    known, after a phase (``greedy``, ``local_search``, ``ilp``, ...)."""

    phase: str
    best_ms: float | None = None
    bound_ms: float | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class PlanningContext:
    """What a solver gets: the problem, the cost model, the options and the budget.

    ``progress``, when given, receives a ``ProgressReport`` after each phase of a solver
    (see ``report``); it must be cheap and must not raise. ``cache`` holds what the stages
    derive from the context once and share (the solvers' cost tables).
    """

    workload: Workload
    topology: Topology
    cost_model: CostModel
    options: Mapping[str, Sequence[ShardingOption]]
    time_limit_s: float = 60.0
    threads: int = 1
    seed: int = 0
    progress: Callable[[ProgressReport], None] | None = None
    cache: dict = field(default_factory=dict, compare=False, repr=False)

    def report(self, phase: str, best_ms: float | None = None,
               bound_ms: float | None = None) -> None:
        """Tell ``progress`` (if any) the best makespan and bound so far."""
        if self.progress is not None:
            self.progress(ProgressReport(phase=phase, best_ms=best_ms, bound_ms=bound_ms))
