"""Baselines to compare against: random placement and the four heuristics of the DreamShard,
AutoShard and NeuroShard papers.

All are table-wise (each table whole, in HBM where its constraints allow), as in the papers:

* ``size_greedy``: weight = table size (rows x dim);
* ``dim_greedy``: weight = dim;
* ``lookup_greedy``: weight = dim x pooling factor;
* ``size_lookup_greedy``: weight = dim x pooling factor x log10(rows);

largest weight first, each onto the device with the smallest accumulated weight among those
with memory room (memory from the cost model); ``InfeasiblePlanError`` when none has room.
``random``: each table onto a uniformly random device with room (seeded by ``ctx.seed``).

Refs: Zha et al., "DreamShard: Generalizable Embedding Table Placement for Recommender
Systems", NeurIPS 2022, Sec. 5 baselines; Zha et al., "AutoShard", KDD 2022; Zha et al.,
"Pre-train and Search: Efficient Embedding Table Sharding with Pre-trained Neural Cost
Models" (NeuroShard), MLSys 2023.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np

from shardplan.errors import InfeasiblePlanError
from shardplan.solvers.common import CostTables, LoadState, TableGroups, evaluate
from shardplan.types import (
    PlacementKind,
    PlanningContext,
    Solver,
    SolveResult,
    SolveStatus,
    TableSpec,
)

Weight = Callable[[TableSpec], float]


def _tw_option(ct: CostTables, ti: int) -> int:
    """The table-wise HBM option if allowed, else the single-shard option with the least
    work, else the option with the fewest shards."""
    ocs = ct.options[ti]
    if not ocs:
        raise InfeasiblePlanError(f"table {ct.tables[ti]!r}: its constraints allow no option",
                                  tables=(ct.tables[ti],),
                                  suggestions=("relax its sharding_types/placements constraints",))
    return min(range(len(ocs)), key=lambda i: (
        ocs[i].num_shards, ocs[i].option.placement.kind is not PlacementKind.HBM,
        ocs[i].work_ms, i))


def list_schedule(ctx: PlanningContext, weight: Weight | None, name: str,
                  ct: CostTables | None = None) -> SolveResult:
    """Largest ``weight`` first onto the device with the least accumulated weight with room;
    ``weight=None``: random order onto random devices with room.

    Raises:
        InfeasiblePlanError: a table finds no device with room.
    """
    ct = ct or CostTables.of(ctx)
    groups = TableGroups.of(ctx, ct)
    tables = ctx.workload.tables
    n = len(tables)
    rng = np.random.default_rng(ctx.seed)
    if weight is None:
        order = [int(i) for i in rng.permutation(n)]
        w = np.zeros(n)
    else:
        w = np.array([float(weight(t)) for t in tables])
        order = sorted(range(n), key=lambda i: (-w[i], i))
    acc = np.zeros(ct.world)
    st = LoadState(ct)
    used: dict[int, set[int]] = {}
    choice: list[tuple[int, tuple[int, ...]] | None] = [None] * n
    option_of = [_tw_option(ct, ti) for ti in range(n)]
    for ti in range(n):  # every rank holds the everywhere-memory of all tables from the start
        st.hbm += ct.options[ti][option_of[ti]].every_hbm
        st.ddr += ct.options[ti][option_of[ti]].every_ddr
    for unit in groups.units(order):
        opts = [option_of[ti] for ti in unit]
        ocs = [ct.options[ti][oi] for ti, oi in zip(unit, opts)]
        placed: list[list[int]] = [[] for _ in unit]
        nshards = max(oc.num_shards for oc in ocs)
        for si in range(nshards):
            members = [k for k, oc in enumerate(ocs) if si < oc.num_shards]
            room = np.ones(ct.world, dtype=bool)
            need_h = np.zeros(ct.world)
            need_d = np.zeros(ct.world)
            for k in members:
                oc, ti = ocs[k], unit[k]
                if oc.candidates[si] is not ct.all_ranks:
                    m = np.zeros(ct.world, dtype=bool)
                    m[oc.candidates[si]] = True
                    room &= m
                if ct.num_groups == 1:  # one value for every rank
                    need_h += oc.hbm_g[si, 0]
                    need_d += oc.ddr_g[si, 0]
                else:
                    need_h += oc.hbm_g[si, ct.group_of]
                    need_d += oc.ddr_g[si, ct.group_of]
                for j in groups.mates.get(ti, ()):
                    for r in used.get(j, ()):
                        room[r] = False
            room &= (st.hbm + need_h <= ct.cap_hbm) & (st.ddr + need_d <= ct.cap_ddr)
            if not room.any():
                names = tuple(ct.tables[unit[k]] for k in members)
                raise InfeasiblePlanError(
                    f"{name}: no device has memory room for {', '.join(names)}",
                    tables=names,
                    suggestions=("use a solver that shards tables (greedy, ilp, auto)",))
            if weight is None:
                r = int(rng.choice(np.flatnonzero(room)))
            else:
                r = int(np.argmin(np.where(room, acc, np.inf)))
            st.hbm[r] += need_h[r]
            st.ddr[r] += need_d[r]
            acc[r] += sum(w[unit[k]] for k in members) / max(ocs[k].num_shards for k in members)
            for k in members:
                placed[k].append(r)
        for k, ti in enumerate(unit):
            choice[ti] = (opts[k], tuple(placed[k]))
            if ti in groups.mates:
                used[ti] = set(placed[k])
    full = [c for c in choice if c is not None]
    return SolveResult(assignment=ct.assignment(ctx, full), status=SolveStatus.FEASIBLE,
                       details={"makespan_ms": evaluate(ct, full).makespan})


def size_weight(t: TableSpec) -> float:
    return float(t.num_embeddings) * t.embedding_dim


def dim_weight(t: TableSpec) -> float:
    return float(t.embedding_dim)


def lookup_weight(t: TableSpec) -> float:
    return t.embedding_dim * t.pooling_factor


def size_lookup_weight(t: TableSpec) -> float:
    return t.embedding_dim * t.pooling_factor * math.log10(max(t.num_embeddings, 2))


class _Baseline(Solver):
    weight: Weight | None = None

    def solve(self, ctx: PlanningContext) -> SolveResult:
        return list_schedule(ctx, type(self).weight, self.name)


class RandomSolver(_Baseline):
    """Each table whole onto a uniformly random device with room (seeded)."""

    name = "random"
    weight = None


class SizeGreedySolver(_Baseline):
    name = "size_greedy"
    weight = staticmethod(size_weight)


class DimGreedySolver(_Baseline):
    name = "dim_greedy"
    weight = staticmethod(dim_weight)


class LookupGreedySolver(_Baseline):
    name = "lookup_greedy"
    weight = staticmethod(lookup_weight)


class SizeLookupGreedySolver(_Baseline):
    name = "size_lookup_greedy"
    weight = staticmethod(size_lookup_weight)


BASELINES: dict[str, type[Solver]] = {
    "random": RandomSolver,
    "size_greedy": SizeGreedySolver,
    "dim_greedy": DimGreedySolver,
    "lookup_greedy": LookupGreedySolver,
    "size_lookup_greedy": SizeLookupGreedySolver,
}
