"""Greedy: largest estimated cost first; each shard to the least-loaded rank with room in every
tier; per table, the option (from a short list ranked by estimated cost) that gives the
smallest makespan so far (plus the everywhere-time of the tables still to come), counting
any makespan below a target (a quick lower bound) as equal, ties broken by the least total
work. (Without the target, greedy splits every table
to shave the current maximum and pays for it in total work.)

Runs in O(tables x shortlist x shards x ranks) numpy work, so it scales to 10,000 tables on
1,024 ranks; it is the start point of local search and the ILP's warm start.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from shardplan.solvers.common import (
    CostTables,
    LoadState,
    OptionCosts,
    TableGroups,
    diagnose_infeasible,
)
from shardplan.types import Assignment, PlanningContext, SolveResult, Solver

Choice = list[tuple[int, tuple[int, ...]]]

#: Options evaluated exactly per table (the rest only if none of these fits in memory).
DEFAULT_SHORTLIST = 6


def work_target(ct: CostTables) -> float:
    """A quick lower bound used to rank options: mean work per rank, or the largest shard."""
    mean = (float(ct.base_time.sum()) + sum(ct.table_weight)) / ct.world
    biggest = max((min((oc.max_shard_ms for oc in ocs), default=0.0) for ocs in ct.options),
                  default=0.0)
    return max(mean, biggest + float(ct.base_time.min()))


def shortlist(ocs: list[OptionCosts], target: float, world: int) -> list[int]:
    """Option indices ranked by estimated cost: total work, plus a penalty of ``world`` times
    how far the largest shard sticks out above ``target``."""
    score = [(oc.work_ms + world * max(0.0, oc.max_shard_ms - target), i)
             for i, oc in enumerate(ocs)]
    score.sort()
    return [i for _, i in score]


def place_option(st: LoadState, oc: OptionCosts, banned: np.ndarray | None,
                 caps: tuple[np.ndarray, np.ndarray] | None = None
                 ) -> tuple[tuple[int, ...], np.ndarray, np.ndarray, np.ndarray] | None:
    """Place ``oc``'s shards, each on the least-loaded candidate rank with room, on top of
    ``st`` (not modified). Returns (ranks, load, hbm, ddr) after, or None if it does not fit.
    ``banned`` is a boolean mask of ranks the table may not use (separation); ``caps`` the
    (HBM, DDR) capacities to fill up to, if not the ranks' own."""
    ct = st.ct
    cap_h, cap_d = caps if caps is not None else (ct.cap_hbm, ct.cap_ddr)
    l2 = st.load + oc.every_time
    h2 = st.hbm + oc.every_hbm
    d2 = st.ddr + oc.every_ddr
    if oc.fixed is not None:
        r = oc.fixed
        if banned is not None and banned[r].any():
            return None
        g = ct.group_of[r]
        idx = np.arange(len(r))
        np.add.at(l2, r, oc.time_g[idx, g])
        np.add.at(h2, r, oc.hbm_g[idx, g])
        np.add.at(d2, r, oc.ddr_g[idx, g])
        if not ((h2 <= cap_h).all() and (d2 <= cap_d).all()):
            return None
        return tuple(int(x) for x in r), l2, h2, d2
    if not ((h2 <= cap_h).all() and (d2 <= cap_d).all()):
        return None
    ranks: list[int] = []
    for si in range(oc.num_shards):
        cand = oc.candidates[si]
        t, mh, md = oc.time[si], oc.hbm[si], oc.ddr[si]
        room = (h2[cand] + mh[cand] <= cap_h[cand]) & (d2[cand] + md[cand] <= cap_d[cand])
        if banned is not None:
            room &= ~banned[cand]
        if not room.any():
            return None
        after = np.where(room, l2[cand] + t[cand], np.inf)
        r = int(cand[int(np.argmin(after))])
        ranks.append(r)
        l2[r] += t[r]
        h2[r] += mh[r]
        d2[r] += md[r]
    return tuple(ranks), l2, h2, d2


@dataclass(slots=True)
class GreedyOutcome:
    choice: Choice | None
    state: LoadState
    failed: list[str]


def greedy_choice(ct: CostTables, groups: TableGroups, *, k: int = DEFAULT_SHORTLIST,
                  order: list[int] | None = None) -> GreedyOutcome:
    """The greedy assignment (see module docstring); ``failed`` lists tables that fit nowhere."""
    st = LoadState(ct)
    target = work_target(ct)
    n = len(ct.tables)
    if order is None:
        order = sorted(range(n), key=lambda i: (-ct.table_weight[i], i))
    choice: list[tuple[int, tuple[int, ...]] | None] = [None] * n
    used: dict[int, set[int]] = {}  # table -> ranks it uses (only tracked for separation)
    failed: list[str] = []
    # keep room on every rank for the everywhere-memory of the tables still to place
    least_h = [_least(ct, ti, "every_hbm") for ti in range(n)]
    least_d = [_least(ct, ti, "every_ddr") for ti in range(n)]
    least_t = [_least(ct, ti, "every_time") for ti in range(n)]
    reserve_h = np.sum(least_h, axis=0) if n else np.zeros(ct.world)
    reserve_d = np.sum(least_d, axis=0) if n else np.zeros(ct.world)
    # and count the everywhere-time still to come when comparing makespans with the target
    reserve_t = np.sum(least_t, axis=0) if n else np.zeros(ct.world)
    for unit in groups.units(order):
        for ti in unit:
            reserve_h = reserve_h - least_h[ti]
            reserve_d = reserve_d - least_d[ti]
            reserve_t = reserve_t - least_t[ti]
        caps = (ct.cap_hbm - reserve_h, ct.cap_ddr - reserve_d)
        if len(unit) > 1:
            ok = _place_colocated(ct, st, unit, choice, groups, used, caps)
            if not ok:
                failed.extend(ct.tables[i] for i in unit)
            continue
        ti = unit[0]
        banned = _banned(ct, groups, used, ti)
        ocs = ct.options[ti]
        ranked = shortlist(ocs, target, ct.world)
        best = None
        for tier in (ranked[:k], ranked[k:]):
            for oi in tier:
                res = place_option(st, ocs[oi], banned, caps)
                if res is None:
                    continue
                ranks, l2, h2, d2 = res
                # below the target makespan only total work counts
                key = (max(float((l2 + reserve_t).max()), target), float(l2.sum()), oi)
                if best is None or key < best[0]:
                    best = (key, oi, ranks, l2, h2, d2)
            if best is not None:
                break
        if best is None:
            failed.append(ct.tables[ti])
            continue
        _, oi, ranks, st.load, st.hbm, st.ddr = best
        choice[ti] = (oi, ranks)
        if ti in groups.mates:
            used[ti] = set(ranks)
    if failed:
        return GreedyOutcome(choice=None, state=st, failed=failed)
    return GreedyOutcome(choice=[c for c in choice if c is not None], state=st, failed=[])


def _least(ct: CostTables, ti: int, attr: str) -> np.ndarray:
    ocs = ct.options[ti]
    if not ocs:
        return np.zeros(ct.world)
    return np.minimum.reduce([getattr(oc, attr) for oc in ocs])


def _banned(ct: CostTables, groups: TableGroups, used: dict[int, set[int]], ti: int
            ) -> np.ndarray | None:
    mates = groups.mates.get(ti)
    if not mates:
        return None
    mask = np.zeros(ct.world, dtype=bool)
    for j in mates:
        for r in used.get(j, ()):
            mask[r] = True
    return mask


def _place_colocated(ct: CostTables, st: LoadState, unit: tuple[int, ...], choice: list,
                     groups: TableGroups, used: dict[int, set[int]],
                     caps: tuple[np.ndarray, np.ndarray]) -> bool:
    """Put every table of a co-location group on one rank: first each at its least-work
    single-shard option, else each at its least-HBM one; the rank that ends least loaded."""
    plans = []
    for pick in (lambda oc: (oc.work_ms, oc.hbm_bytes), lambda oc: (oc.hbm_bytes, oc.work_ms)):
        sel = []
        for ti in unit:
            single = [(pick(oc), oi) for oi, oc in enumerate(ct.options[ti]) if oc.num_shards == 1]
            if not single:
                return False
            sel.append(min(single)[1])
        plans.append(sel)
    for sel in plans:
        cand = np.ones(ct.world, dtype=bool)
        l2, h2, d2 = st.load.copy(), st.hbm.copy(), st.ddr.copy()
        add_t = np.zeros(ct.world)
        add_h = np.zeros(ct.world)
        add_d = np.zeros(ct.world)
        for ti, oi in zip(unit, sel):
            oc = ct.options[ti][oi]
            m = np.zeros(ct.world, dtype=bool)
            m[oc.candidates[0]] = True
            cand &= m
            l2 += oc.every_time
            h2 += oc.every_hbm
            d2 += oc.every_ddr
            add_t += oc.time[0][np.arange(ct.world)]
            add_h += oc.hbm[0][np.arange(ct.world)]
            add_d += oc.ddr[0][np.arange(ct.world)]
            b = _banned(ct, groups, used, ti)
            if b is not None:
                cand &= ~b
        cap_h, cap_d = caps
        room = cand & (h2 + add_h <= cap_h) & (d2 + add_d <= cap_d)
        if not room.any() or not ((h2 <= cap_h).all() and (d2 <= cap_d).all()):
            continue
        r = int(np.argmin(np.where(room, l2 + add_t, np.inf)))
        l2[r] += add_t[r]
        h2[r] += add_h[r]
        d2[r] += add_d[r]
        st.load, st.hbm, st.ddr = l2, h2, d2
        for ti, oi in zip(unit, sel):
            choice[ti] = (oi, (r,))
            if ti in groups.mates:
                used[ti] = {r}
        return True
    return False


class GreedySolver(Solver):
    """Largest table first, each shard to the least-loaded rank with room.

    Args:
        shortlist: options per table evaluated exactly (more: slower, sometimes better).
    """

    name = "greedy"

    def __init__(self, shortlist: int = DEFAULT_SHORTLIST) -> None:
        self.shortlist = shortlist

    def solve(self, ctx: PlanningContext) -> SolveResult:
        ct = CostTables.of(ctx)
        groups = TableGroups.of(ctx, ct)
        out = greedy_choice(ct, groups, k=self.shortlist)
        if out.choice is None:
            raise diagnose_infeasible(ctx, out.failed, ct)
        return SolveResult(assignment=ct.assignment(ctx, out.choice), status="feasible",
                           details={"makespan_ms": out.state.makespan})

    def options(self) -> dict[str, object]:
        return {"shortlist": self.shortlist}


__all__ = ["Assignment", "GreedySolver", "greedy_choice", "place_option", "work_target"]
