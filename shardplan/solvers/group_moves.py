"""Group moves for local search: re-option a whole group of tables at once.

Moving one shard or re-optioning one table at a time cannot leave a plan where every table
made the same locally good choice (all table-wise, say), when the better plan needs many of
them to change together: each single change first makes the step slower. A group move takes
every table of a group out — the tables of one sharding type, or of one size class (table
weights within a factor of ``SIZE_CLASS_RATIO``), or the lightest quarter, half or three
quarters of those — and puts them back, heaviest first, each with its best option of one
sharding type (greedy placement against the current step time as
target: below it, the least total work wins). The move is taken if the step time drops.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from shardplan.solvers.common import (
    CostTables,
    LoadState,
    TableGroups,
    makespan_of,
    scalar_time,
)
from shardplan.solvers.greedy import commit, place_option, shortlist, tie_round
from shardplan.types import ShardingType

#: Tables whose weights are within this factor share a size class.
SIZE_CLASS_RATIO = 4.0
#: Options of the new type tried per table (ranked by estimated cost).
GROUP_SHORTLIST = 4


@dataclass(frozen=True, slots=True)
class GroupMove:
    """A group of tables (indices) and the sharding type they all move to."""

    label: str
    tables: tuple[int, ...]
    to: ShardingType


def candidate_moves(ct: CostTables, groups: TableGroups, choice: list) -> list[GroupMove]:
    """Every (group, new type) worth trying, in a fixed order: groups by current sharding type,
    then by size class (heaviest first); new types in ``ShardingType`` order."""
    free = [ti for ti in range(len(ct.tables))
            if ti not in groups.coloc_of and len(ct.options[ti]) > 1]
    by_type: dict[ShardingType, list[int]] = {}
    for ti in free:
        by_type.setdefault(ct.options[ti][choice[ti][0]].option.sharding_type, []).append(ti)
    by_size: dict[int, list[int]] = {}
    top = max((ct.table_weight[ti] for ti in free), default=0.0)
    for ti in free:
        w = ct.table_weight[ti]
        b = int(np.floor(np.log(top / w) / np.log(SIZE_CLASS_RATIO))) if w > 0 and top > 0 else -1
        by_size.setdefault(b, []).append(ti)
    out: list[GroupMove] = []
    sets = [(f"type {t.short}", tabs, t) for t, tabs in sorted(by_type.items())] + \
           [(f"size class {b}", tabs, None) for b, tabs in sorted(by_size.items())]
    for label, tabs, current in sets:
        for to in ShardingType:
            if to is current:
                continue
            movers = [ti for ti in tabs if any(
                oc.option.sharding_type is to for oc in ct.options[ti])
                and ct.options[ti][choice[ti][0]].option.sharding_type is not to]
            # all of them, and the lightest quarter, half and three quarters: often only
            # the small tables of a group gain from the new type (data-parallel, say)
            movers.sort(key=lambda i: (ct.table_weight[i], i))
            sizes = sorted({len(movers), *(len(movers) * q // 4 for q in (1, 2, 3))} - {0},
                           reverse=True)
            for m in sizes:
                out.append(GroupMove(label=f"{label} (lightest {m})" if m < len(movers)
                                     else label, tables=tuple(movers[:m]), to=to))
    return out


def apply_group_move(ct: CostTables, groups: TableGroups, choice: list, st: LoadState,
                     move: GroupMove, *, budget: float, target: float,
                     stop_above: float | None = None
                     ) -> tuple[list | None, LoadState | None, int] | None:
    """``move`` on a copy of (``choice``, ``st``): (new choice, new state, placements tried),
    or None if some table fits nowhere. Each table of the group, heaviest first, takes the
    option of type ``move.to`` (among its ``GROUP_SHORTLIST`` best by estimated cost) whose
    placement gives the least ``(max(step time, target), total work)``.

    ``stop_above``: give up, as ``(None, None, placements tried)``, once the step time of the
    tables put back so far exceeds it: putting the others back only adds load (every lane
    cost is non-negative and the step time is non-decreasing in each lane), so the move
    would end above it too."""
    new = list(choice)
    pending = set(move.tables)  # taken out, not yet put back
    s2 = st.copy()
    for ti in move.tables:
        oi, rs = new[ti]
        s2.apply(ct.options[ti][oi], rs, -1.0)
    tried = 0
    step = ct.step
    for ti in sorted(move.tables, key=lambda i: (-ct.table_weight[i], i)):
        ocs = ct.options[ti]
        mask = None
        mates = groups.mates.get(ti)
        if mates:
            mask = np.zeros(ct.world, dtype=bool)
            for j in mates:
                if j not in pending:
                    mask[list(new[j][1])] = True
        ranked = [oi for oi in shortlist(ocs, budget, ct.world)
                  if ocs[oi].option.sharding_type is move.to][:GROUP_SHORTLIST]
        best = None
        for oi in ranked:
            tried += 1
            res = place_option(s2, ocs[oi], mask)
            if res is None:
                continue
            ms = res.ms if res.ms is not None else makespan_of(step, res.load)
            key = (tie_round(max(ms, target)),
                   tie_round(float(scalar_time(res.load).sum())), oi)
            if best is None or key < best[0]:
                best = (key, oi, res, ms)
        if best is None:
            return None
        _, oi, res, ms = best
        if stop_above is not None and ms > stop_above:
            return None, None, tried
        commit(s2, ocs[oi], res)
        new[ti] = (oi, res.ranks)
        pending.discard(ti)
    return new, s2, tried
