"""Local search: moves and swaps that lower the slowest rank, for instances too large for the ILP.

From a start assignment (greedy by default), repeat on the slowest rank r*:

1. **move** one of its shards to the rank where it ends least loaded, if both ranks end
   below r*'s load;
2. **swap** one of its shards with a smaller shard of a less-loaded rank, likewise;
3. **re-option** a table with a shard on r*: take it out and put it back with another option
   (greedy placement), if the makespan drops or fewer ranks share it.

Each accepted step lowers (makespan, number of ranks at the makespan) lexicographically, so the
search ends; it also stops at the time limit. Co-located tables stay where the start put them;
separation groups and memory limits hold after every step.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from shardplan.solvers.common import REL_EPS, CostTables, LoadState, TableGroups, diagnose_infeasible
from shardplan.solvers.greedy import DEFAULT_SHORTLIST, Choice, greedy_choice, place_option, shortlist, work_target
from shardplan.types import PlanningContext, SolveResult, Solver

#: Least relative drop of the makespan a step must bring (or, for a re-option, the same
#: makespan on fewer ranks). Far below any model's accuracy; it stops endless 1e-9 steps.
MIN_GAIN = 1e-6
#: Less-loaded ranks a swap looks at.
SWAP_RANKS = 8
#: Largest shards of the slowest rank a swap tries.
SWAP_SHARDS = 16


@dataclass(slots=True)
class SearchStats:
    moves: int = 0
    swaps: int = 0
    reoptions: int = 0
    rounds: int = 0
    stopped_by: str = "local optimum"


def _top(load: np.ndarray) -> tuple[float, int]:
    m = float(load.max())
    return m, int((load >= m * (1 - REL_EPS)).sum())


def improve(ct: CostTables, groups: TableGroups, choice: Choice, *, deadline: float,
            k: int = DEFAULT_SHORTLIST) -> tuple[Choice, LoadState, SearchStats]:
    """Local search from ``choice`` until a local optimum or ``deadline`` (perf_counter)."""
    choice = list(choice)
    st = LoadState(ct)
    for ti, (oi, rs) in enumerate(choice):
        st.apply(ct.options[ti][oi], rs)
    stats = SearchStats()
    world = ct.world
    g_of = ct.group_of
    on: list[set[tuple[int, int]]] = [set() for _ in range(world)]
    for ti, (oi, rs) in enumerate(choice):
        for si, r in enumerate(rs):
            on[r].add((ti, si))
    target = work_target(ct)

    def movable(ti: int) -> bool:
        oc = ct.options[ti][choice[ti][0]]
        return oc.fixed is None and ti not in groups.coloc_of

    def banned_for(ti: int) -> set[int]:
        out: set[int] = set()
        for j in groups.mates.get(ti, ()):
            out.update(choice[j][1])
        return out

    def set_rank(ti: int, si: int, r_old: int, r_new: int) -> None:
        oi, rs = choice[ti]
        rs = list(rs)
        rs[si] = r_new
        choice[ti] = (oi, tuple(rs))
        on[r_old].discard((ti, si))
        on[r_new].add((ti, si))

    def shard_vals(ti: int, si: int, r: int | np.ndarray):
        oc = ct.options[ti][choice[ti][0]]
        g = g_of[r]
        return oc.time_g[si, g], oc.hbm_g[si, g], oc.ddr_g[si, g]


    while True:
        if time.perf_counter() > deadline:
            stats.stopped_by = "time limit"
            break
        stats.rounds += 1
        rstar = int(np.argmax(st.load))
        lstar = float(st.load[rstar])
        top_before = _top(st.load)
        improved = False
        shards = sorted(on[rstar], key=lambda x: (-float(shard_vals(x[0], x[1], rstar)[0]), x))
        # 1. move
        for ti, si in shards:
            if not movable(ti):
                continue
            oc = ct.options[ti][choice[ti][0]]
            cand = oc.candidates[si]
            cand = cand[cand != rstar]
            if not len(cand):
                continue
            t, h, d = shard_vals(ti, si, cand)
            room = (st.hbm[cand] + h <= ct.cap_hbm[cand]) & (st.ddr[cand] + d <= ct.cap_ddr[cand])
            ban = banned_for(ti)
            if ban:
                room &= ~np.isin(cand, sorted(ban))
            if not room.any():
                continue
            after = np.where(room, st.load[cand] + t, np.inf)
            j = int(np.argmin(after))
            t0, h0, d0 = shard_vals(ti, si, rstar)
            if after[j] < lstar * (1 - MIN_GAIN) and t0 > 0:
                r2 = int(cand[j])
                st.load[rstar] -= t0
                st.hbm[rstar] -= h0
                st.ddr[rstar] -= d0
                st.load[r2] += t[j]
                st.hbm[r2] += h[j]
                st.ddr[r2] += d[j]
                set_rank(ti, si, rstar, r2)
                stats.moves += 1
                improved = True
                break
        if improved:
            continue
        # 2. swap one of the largest shards of r* with a smaller one on a least-loaded rank
        low = [int(r) for r in np.argsort(st.load, kind="stable")[:SWAP_RANKS + 1] if r != rstar]
        low = low[:SWAP_RANKS]
        big = [x for x in shards if movable(x[0])][:SWAP_SHARDS]
        for r2 in low:
            if improved or not big:
                break
            others = sorted(x for x in on[r2] if movable(x[0]))
            if not others:
                continue
            l2 = float(st.load[r2])
            ok_b = np.array([rstar in ct.options[tj][choice[tj][0]].candidates[sj]
                             and rstar not in banned_for(tj) for tj, sj in others])
            vb2 = np.array([shard_vals(tj, sj, r2) for tj, sj in others])  # on r2
            vb = np.array([shard_vals(tj, sj, rstar) for tj, sj in others])  # on r*
            tb_tables = np.array([tj for tj, _ in others])
            for ti, si in big:
                oc = ct.options[ti][choice[ti][0]]
                if r2 not in oc.candidates[si] or r2 in banned_for(ti):
                    continue
                ta, ha, da = shard_vals(ti, si, rstar)
                ta2, ha2, da2 = shard_vals(ti, si, r2)
                new_star = lstar - ta + vb[:, 0]
                new_2 = l2 - vb2[:, 0] + ta2
                worst = np.maximum(new_star, new_2)
                good = (ok_b & (tb_tables != ti) & (worst < lstar * (1 - MIN_GAIN))
                        & (st.hbm[rstar] - ha + vb[:, 1] <= ct.cap_hbm[rstar])
                        & (st.ddr[rstar] - da + vb[:, 2] <= ct.cap_ddr[rstar])
                        & (st.hbm[r2] - vb2[:, 1] + ha2 <= ct.cap_hbm[r2])
                        & (st.ddr[r2] - vb2[:, 2] + da2 <= ct.cap_ddr[r2]))
                if not good.any():
                    continue
                j = int(np.argmin(np.where(good, worst, np.inf)))
                tj, sj = others[j]
                (tb, hb, db), (tb2, hb2, db2) = vb[j], vb2[j]
                st.load[rstar] += tb - ta
                st.hbm[rstar] += hb - ha
                st.ddr[rstar] += db - da
                st.load[r2] += ta2 - tb2
                st.hbm[r2] += ha2 - hb2
                st.ddr[r2] += da2 - db2
                set_rank(ti, si, rstar, r2)
                set_rank(tj, sj, r2, rstar)
                stats.swaps += 1
                improved = True
                break
        if improved:
            continue
        # 3. re-option a table with a shard on r*
        tabs = sorted({ti for ti, _ in on[rstar] if ti not in groups.coloc_of},
                      key=lambda ti: (-ct.table_weight[ti], ti))
        for ti in tabs:
            oi0, rs0 = choice[ti]
            oc0 = ct.options[ti][oi0]
            st.apply(oc0, rs0, -1.0)
            ban = banned_for(ti)
            mask = None
            if ban:
                mask = np.zeros(world, dtype=bool)
                mask[list(ban)] = True
            best = None
            for oi in shortlist(ct.options[ti], target, world)[: 2 * k]:
                res = place_option(st, ct.options[ti][oi], mask)
                if res is None:
                    continue
                top = _top(res[1])
                gain = (top[0] < top_before[0] * (1 - MIN_GAIN)
                        or (top[0] <= top_before[0] * (1 + REL_EPS) and top[1] < top_before[1]))
                if gain and (best is None or (top, oi) < best[0]):
                    best = ((top, oi), oi, res)
            if best is None:
                st.apply(oc0, rs0, 1.0)
                continue
            _, oi, (rs, l2, h2, d2) = best
            st.load, st.hbm, st.ddr = l2, h2, d2
            for si, r in enumerate(rs0):
                on[r].discard((ti, si))
            for si, r in enumerate(rs):
                on[r].add((ti, si))
            choice[ti] = (oi, rs)
            stats.reoptions += 1
            improved = True
            break
        if not improved:
            break
    return choice, st, stats


class LocalSearchSolver(Solver):
    """Greedy, then moves, swaps and option changes on the slowest rank.

    Args:
        shortlist: options per table the greedy start and re-option steps evaluate.
    """

    name = "local_search"

    def __init__(self, shortlist: int = DEFAULT_SHORTLIST) -> None:
        self.shortlist = shortlist

    def solve(self, ctx: PlanningContext) -> SolveResult:
        start = time.perf_counter()
        ct = CostTables.of(ctx)
        groups = TableGroups.of(ctx, ct)
        out = greedy_choice(ct, groups, k=self.shortlist)
        if out.choice is None:
            raise diagnose_infeasible(ctx, out.failed, ct)
        choice, st, stats = improve(ct, groups, out.choice, deadline=start + ctx.time_limit_s,
                                    k=self.shortlist)
        return SolveResult(assignment=ct.assignment(ctx, choice), status="feasible",
                           details={"makespan_ms": st.makespan, "greedy_makespan_ms":
                                    out.state.makespan, "moves": stats.moves, "swaps": stats.swaps,
                                    "reoptions": stats.reoptions, "rounds": stats.rounds,
                                    "stopped_by": stats.stopped_by})

    def options(self) -> dict[str, object]:
        return {"shortlist": self.shortlist}
