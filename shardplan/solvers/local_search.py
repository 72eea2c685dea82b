"""Local search: moves, swaps and option changes that lower the step time, for instances too
large for the ILP.

From a start assignment (greedy by default), repeat on the critical ranks (those at the
maximum of a lane that sets a stage's time in the step, see ``StepModel``; the most loaded
first, then more taken round-robin over those lanes):

1. **move** one of its shards to the rank where the step time ends lowest;
2. **swap** one of its shards with a shard of a less-loaded rank;
3. **re-option** a table with a shard on it: take it out and put it back with another option
   (greedy placement), among them the same option on another host (a table moved between
   hosts as a whole);
4. at a local optimum of those, a **group move**: every table of one sharding type or size
   class re-optioned together to another sharding type (``shardplan.solvers.group_moves``).

A step is taken when it lowers (step time, critical cells) lexicographically: the step time by
at least ``MIN_GAIN`` relative, or the same step time with fewer (rank, lane) cells at their
lane's maximum; so the search ends. It also stops after ``max_evals`` candidate evaluations (a
work limit: the same plan on a fast or a slow machine) and, as a safety net that is reported
when it trips, at the deadline. Co-located tables stay where the start put them; separation
groups and memory limits hold after every step.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from shardplan.solvers.common import (
    REL_EPS,
    CostTables,
    LoadState,
    TableGroups,
    compose,
    diagnose_infeasible,
    scalar_time,
    stage_max,
)
from shardplan.solvers.greedy import (
    DEFAULT_SHORTLIST,
    Choice,
    best_greedy,
    commit,
    place_option,
    shard_budget,
    shortlist,
    work_target,
)
from shardplan.solvers.group_moves import apply_group_move, candidate_moves
from shardplan.types import (
    STAGE_LANE_INDEX,
    Composition,
    PlanningContext,
    Solver,
    SolveResult,
    SolveStatus,
)

#: Least relative drop of the step time a step must bring (or the same step time with fewer
#: critical cells). Far below any model's accuracy; it stops endless 1e-9 steps.
MIN_GAIN = 1e-6
#: Less-loaded ranks a swap looks at.
SWAP_RANKS = 8
#: Largest shards of a critical rank a move or swap tries.
SWAP_SHARDS = 16
#: Tables of a critical rank a re-option step tries (half the heaviest, half the lightest).
REOPTION_TABLES = 24
#: Critical ranks tried per round: the busiest ...
CRITICAL_RANKS = 4
#: ... and then this many more, taken round-robin over the active lanes' maxima (on
#: instances up to ``GROUP_MOVES_MAX_CELLS`` tables x ranks: past that, every round that finds
#: no step pays for them, and 10,000 tables on 1,024 ranks spent 5x longer for 0.02%) ...
LANE_RANKS = 4
#: ... of lanes at their maximum on at most this share of the ranks.
LANE_RANKS_MAX_SHARE = 0.125
#: Group moves are tried by default on instances up to this many tables x ranks.
GROUP_MOVES_MAX_CELLS = 2_000_000
#: Candidate evaluations (a rank for a move, a pair for a swap, an option for a re-option)
#: local search may spend: its work limit.
DEFAULT_MAX_EVALS = 2_000_000


@dataclass(slots=True)
class SearchStats:
    moves: int = 0
    swaps: int = 0
    reoptions: int = 0
    group_moves: int = 0
    rounds: int = 0
    evaluations: int = 0
    stopped_by: str = "local optimum"


def _active_lanes(ct: CostTables, colmax: np.ndarray) -> list[int]:
    """Lanes whose maximum sets a stage time that counts in the step time."""
    cm = colmax.tolist()  # plain floats: this runs once per candidate step
    stage_max = [max(cm[l] for l in ix) for ix in STAGE_LANE_INDEX]
    stages = range(len(STAGE_LANE_INDEX))
    if ct.step.pipelined and ct.step.overlap == 1.0:  # else every stage counts (compose)
        rest = sum(stage_max[1:])
        stages = [0] if stage_max[0] >= rest else range(1, len(STAGE_LANE_INDEX))
    out = []
    for si in stages:
        m = stage_max[si]
        if m > 0:
            out += [l for l in STAGE_LANE_INDEX[si] if cm[l] >= m * (1 - REL_EPS)]
    return out


def _score(ct: CostTables, load: np.ndarray) -> tuple[float, int]:
    """(step time, critical cells): what a step must lower."""
    step = ct.step
    if step.composition is Composition.PER_RANK:
        rt = compose(step, stage_max(load))
        t = float(rt.max())
        return t, int((rt >= t * (1 - REL_EPS)).sum())
    colmax = load.max(0)
    t = float(compose(step, stage_max(colmax)))
    lanes = _active_lanes(ct, colmax)
    if not lanes:
        return t, 0
    return t, int((load[:, lanes] >= colmax[lanes] * (1 - REL_EPS)).sum())


def _critical_ranks(ct: CostTables, load: np.ndarray, lane_ranks: int = LANE_RANKS) -> list[int]:
    step = ct.step
    if step.composition is Composition.PER_RANK:
        rt = compose(step, stage_max(load))
        return [int(r) for r in np.argsort(-rt, kind="stable")[:CRITICAL_RANKS]]
    colmax = load.max(0)
    busy = scalar_time(load)
    per_lane = [sorted(np.flatnonzero(load[:, l] >= colmax[l] * (1 - REL_EPS)).tolist(),
                       key=lambda r: (-busy[r], r)) for l in _active_lanes(ct, colmax)]
    # the busiest ranks at some active lane's maximum first ...
    out = sorted({r for ranks in per_lane for r in ranks}, key=lambda r: (-busy[r], r))
    out = out[:CRITICAL_RANKS]
    # ... then the busiest of each lane's, round-robin: a stage whose maximum sits on a few
    # lightly loaded ranks (the output of tables spread over whole hosts) gets tried too,
    # not only the busiest ranks (heavy shards that may have nowhere better to go); not a
    # lane at its maximum on a large share of the cluster (a cost every rank pays), which no
    # single step can lower
    few = [ranks for ranks in per_lane if len(ranks) <= LANE_RANKS_MAX_SHARE * len(load)]
    for i in range(max((len(p) for p in few), default=0)):
        for ranks in few:
            if len(out) >= CRITICAL_RANKS + lane_ranks:
                return out
            if i < len(ranks) and ranks[i] not in out:
                out.append(ranks[i])
    return out


def _better(new: tuple[float, int], old: tuple[float, int]) -> bool:
    return (new[0] < old[0] * (1 - MIN_GAIN)
            or (new[0] <= old[0] * (1 + REL_EPS) and new[1] < old[1]))


def moved_makespans(ct: CostTables, load: np.ndarray, r_from: int, a: np.ndarray,
                    r_to: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Step times if lanes ``a`` left rank ``r_from`` and ``b[i]`` arrived on ``r_to[i]``
    (each alternative on its own; ``r_to`` excludes ``r_from``)."""
    step = ct.step
    row_from = load[r_from] - a
    rows_to = load[r_to] + b
    if step.composition is Composition.PER_RANK:
        rt = compose(step, stage_max(load))
        order = np.argsort(-rt, kind="stable")[:3]
        others = np.full(len(r_to), 0.0)
        for i, r2 in enumerate(r_to.tolist()):
            others[i] = next((rt[q] for q in order if q != r_from and q != r2), 0.0)
        return np.maximum.reduce([others, np.full(len(r_to), step.rank_time_lanes(row_from)),
                                  compose(step, stage_max(rows_to))])
    masked = load.copy()
    masked[r_from] = -np.inf
    top = np.partition(masked, -1, axis=0)[-1] if len(load) > 1 else np.full(load.shape[1], -np.inf)
    base = np.maximum(top, row_from)
    # a destination that was a lane's maximum is covered: its new row is at least its old one
    return compose(step, stage_max(np.maximum(base[None, :], rows_to)))


def _per_rank_swap(ct: CostTables, load: np.ndarray, r1: int, r2: int, rows1: np.ndarray,
                   rows2: np.ndarray) -> np.ndarray:
    """Per-rank step times if rows ``r1`` and ``r2`` of ``load`` became ``rows1[i]`` and
    ``rows2[i]`` (each alternative on its own)."""
    step = ct.step
    rt = compose(step, stage_max(load))
    rt[[r1, r2]] = -np.inf
    rest = float(rt.max()) if len(rt) > 2 else -np.inf
    return np.maximum(rest, np.maximum(compose(step, stage_max(rows1)),
                                       compose(step, stage_max(rows2))))


def improve(ct: CostTables, groups: TableGroups, choice: Choice, *, deadline: float,
            k: int = DEFAULT_SHORTLIST, max_evals: int = DEFAULT_MAX_EVALS,
            group_moves: bool | None = None) -> tuple[Choice, LoadState, SearchStats]:
    """Local search from ``choice`` until a local optimum, ``max_evals`` evaluations, or the
    ``deadline`` (perf_counter; a safety net). ``group_moves``: at a local optimum of the
    single-table steps, try re-optioning groups of tables together
    (:mod:`shardplan.solvers.group_moves`); None: on instances up to
    ``GROUP_MOVES_MAX_CELLS`` tables x ranks (past that each group move re-places thousands of
    tables on thousands of ranks, and single moves are what balance many small tables)."""
    small = len(ct.tables) * ct.world <= GROUP_MOVES_MAX_CELLS
    if group_moves is None:
        group_moves = small
    # the lanes' extra critical ranks too (each round that finds nothing tries them all)
    lane_ranks = LANE_RANKS if small else 0
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
    budget = shard_budget(ct, work_target(ct))

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

    def lanes_of(ti: int, si: int, r: int | np.ndarray) -> np.ndarray:
        return ct.options[ti][choice[ti][0]].lanes_g[si, g_of[r]]

    def mem_of(ti: int, si: int, r: int | np.ndarray):
        oc = ct.options[ti][choice[ti][0]]
        return oc.hbm_g[si, g_of[r]], oc.ddr_g[si, g_of[r]]

    def shift(ti: int, si: int, r_old: int, r_new: int) -> None:
        st.load[r_old] -= lanes_of(ti, si, r_old)
        h, d = mem_of(ti, si, r_old)
        st.hbm[r_old] -= h
        st.ddr[r_old] -= d
        st.load[r_new] += lanes_of(ti, si, r_new)
        h, d = mem_of(ti, si, r_new)
        st.hbm[r_new] += h
        st.ddr[r_new] += d

    def try_move(rstar: int, score: tuple[float, int]) -> bool:
        shards = sorted((x for x in on[rstar] if movable(x[0])),
                        key=lambda x: (-float(scalar_time(lanes_of(x[0], x[1], rstar))), x))
        for ti, si in shards[:SWAP_SHARDS]:
            oc = ct.options[ti][choice[ti][0]]
            cand = oc.candidates[si]
            cand = cand[cand != rstar]
            if not len(cand):
                continue
            h, d = mem_of(ti, si, cand)
            room = (st.hbm[cand] + h <= ct.cap_hbm[cand]) & (st.ddr[cand] + d <= ct.cap_ddr[cand])
            ban = banned_for(ti)
            if ban:
                room &= ~np.isin(cand, sorted(ban))
            if not room.any():
                continue
            ok = cand[room]
            stats.evaluations += len(ok)
            t_new = moved_makespans(ct, st.load, rstar, lanes_of(ti, si, rstar), ok,
                                    lanes_of(ti, si, ok))
            busy = scalar_time(st.load[ok] + lanes_of(ti, si, ok))
            for j in np.lexsort((ok, busy, np.round(t_new, 12)))[:3].tolist():
                r2 = int(ok[j])
                shift(ti, si, rstar, r2)
                new = _score(ct, st.load)
                if _better(new, score):
                    set_rank(ti, si, rstar, r2)
                    stats.moves += 1
                    return True
                shift(ti, si, r2, rstar)
        return False

    def try_swap(rstar: int, score: tuple[float, int]) -> bool:
        # every pair (a shard of rstar, a shard of r2) is costed at once per shard of rstar:
        # only rows rstar and r2 change, so the step time is the other rows' lane maxima with
        # the two new rows; the first pair (in the order below) that lowers the score wins
        busy = scalar_time(st.load)
        low = [int(r) for r in np.argsort(busy, kind="stable")[:SWAP_RANKS + 1] if r != rstar]
        big = sorted((x for x in on[rstar] if movable(x[0])),
                     key=lambda x: (-float(scalar_time(lanes_of(x[0], x[1], rstar))), x))
        g_star = g_of[rstar]
        for r2 in low[:SWAP_RANKS]:
            others = [x for x in sorted(on[r2]) if movable(x[0])]
            if not others:
                continue
            ok_j = np.array([rstar in ct.options[tj][choice[tj][0]].candidates[sj]
                             and rstar not in banned_for(tj) for tj, sj in others])
            if not ok_j.any():
                continue
            tab_j = np.array([tj for tj, _ in others])
            g2 = g_of[r2]
            ocs_j = [ct.options[tj][choice[tj][0]] for tj, _ in others]
            b_star = np.array([oc.lanes_g[sj, g_star] for oc, (_, sj) in zip(ocs_j, others)])
            b_2 = np.array([oc.lanes_g[sj, g2] for oc, (_, sj) in zip(ocs_j, others)])
            mem_star = np.array([(oc.hbm_g[sj, g_star], oc.ddr_g[sj, g_star])
                                 for oc, (_, sj) in zip(ocs_j, others)])
            mem_2 = np.array([(oc.hbm_g[sj, g2], oc.ddr_g[sj, g2])
                              for oc, (_, sj) in zip(ocs_j, others)])
            masked = st.load.copy()
            masked[[rstar, r2]] = -np.inf
            top = masked.max(0)
            for ti, si in big[:SWAP_SHARDS]:
                oc = ct.options[ti][choice[ti][0]]
                if r2 not in oc.candidates[si] or r2 in banned_for(ti):
                    continue
                valid = ok_j & (tab_j != ti)
                if not valid.any():
                    continue
                row_star = (st.load[rstar] - oc.lanes_g[si, g_star])[None, :] + b_star
                row_2 = (st.load[r2] + oc.lanes_g[si, g2])[None, :] - b_2
                if ct.step.composition is Composition.PER_RANK:
                    t_new = _per_rank_swap(ct, st.load, rstar, r2, row_star, row_2)
                else:
                    t_new = compose(ct.step, stage_max(
                        np.maximum(np.maximum(top[None, :], row_star), row_2)))
                h_star = (st.hbm[rstar] - oc.hbm_g[si, g_star]) + mem_star[:, 0]
                d_star = (st.ddr[rstar] - oc.ddr_g[si, g_star]) + mem_star[:, 1]
                h_2 = (st.hbm[r2] + oc.hbm_g[si, g2]) - mem_2[:, 0]
                d_2 = (st.ddr[r2] + oc.ddr_g[si, g2]) - mem_2[:, 1]
                fits = ((h_star <= ct.cap_hbm[rstar]) & (d_star <= ct.cap_ddr[rstar])
                        & (h_2 <= ct.cap_hbm[r2]) & (d_2 <= ct.cap_ddr[r2]))
                hopeful = valid & fits & (t_new <= score[0] * (1 + REL_EPS))
                for j in np.flatnonzero(hopeful).tolist():
                    tj, sj = others[j]
                    if t_new[j] >= score[0] * (1 - MIN_GAIN):  # equal: count critical cells
                        trial = st.load.copy()
                        trial[rstar], trial[r2] = row_star[j], row_2[j]
                        if not _better(_score(ct, trial), score):
                            continue
                    stats.evaluations += int(valid[:j + 1].sum())
                    shift(ti, si, rstar, r2)
                    shift(tj, sj, r2, rstar)
                    set_rank(ti, si, rstar, r2)
                    set_rank(tj, sj, r2, rstar)
                    stats.swaps += 1
                    return True
                stats.evaluations += int(valid.sum())
        return False

    def try_reoption(rstar: int, score: tuple[float, int]) -> bool:
        nonlocal st
        # heaviest first; past REOPTION_TABLES, the heaviest and the lightest half of that
        # each (the light ones are the fine steps that balance ranks)
        tabs = sorted({ti for ti, _ in on[rstar] if ti not in groups.coloc_of},
                      key=lambda ti: (-ct.table_weight[ti], ti))
        if len(tabs) > REOPTION_TABLES:
            half = REOPTION_TABLES // 2
            tabs = tabs[:half] + tabs[len(tabs) - (REOPTION_TABLES - half):]
        stop = score[0] * (1 + 2 * REL_EPS)  # past it, a placement is not _better
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
            for oi in _reoption_candidates(ct, ti, oi0, budget, k):
                stats.evaluations += 1
                res = place_option(st, ct.options[ti][oi], mask, stop_above=stop)
                if res is None:
                    continue
                new = _score(ct, res.load)
                if _better(new, score) and (best is None or (new, oi) < best[0]):
                    best = ((new, oi), oi, res)
            if best is None:
                st.apply(oc0, rs0, 1.0)
                continue
            _, oi, res = best
            commit(st, ct.options[ti][oi], res)
            for si, r in enumerate(rs0):
                on[r].discard((ti, si))
            for si, r in enumerate(res.ranks):
                on[r].add((ti, si))
            choice[ti] = (oi, res.ranks)
            stats.reoptions += 1
            return True
        return False

    def try_group(score: tuple[float, int]) -> bool:
        nonlocal st, choice
        for mv in candidate_moves(ct, groups, choice):
            if stats.evaluations >= max_evals:
                return False
            # a move that ends above the step time (beyond the tie tolerance) is not taken
            out = apply_group_move(ct, groups, choice, st, mv, budget=budget, target=score[0],
                                   stop_above=score[0] * (1 + 2 * REL_EPS))
            if out is None:
                stats.evaluations += len(mv.tables)
                continue
            new_choice, new_st, tried = out
            stats.evaluations += tried
            if new_st is not None and _better(_score(ct, new_st.load), score):
                for r in range(world):
                    on[r].clear()
                for ti, (_, rs) in enumerate(new_choice):
                    for si, r in enumerate(rs):
                        on[r].add((ti, si))
                choice[:] = new_choice
                st = new_st
                stats.group_moves += 1
                return True
        return False

    while True:
        if stats.evaluations >= max_evals:
            stats.stopped_by = "work limit"
            break
        if time.perf_counter() > deadline:
            stats.stopped_by = "time limit (safety net)"
            break
        stats.rounds += 1
        score = _score(ct, st.load)
        improved = False
        for rstar in _critical_ranks(ct, st.load, lane_ranks):
            if try_move(rstar, score) or try_swap(rstar, score) or try_reoption(rstar, score):
                improved = True
                break
        if not improved and group_moves:
            improved = try_group(score)
        if not improved:
            break
    return choice, st, stats


def _reoption_candidates(ct: CostTables, ti: int, current: int, budget: float, k: int
                         ) -> list[int]:
    """The options a re-option step tries for table ``ti``: the ``2 k`` best by estimated
    cost, then the current option's variants on other hosts (the same sharding type,
    placement and shard count: a table moved between hosts as a whole)."""
    ocs = ct.options[ti]
    out = shortlist(ocs, budget, ct.world)[: 2 * k]
    cur = ocs[current].option
    seen = set(out)
    for oi, oc in enumerate(ocs):
        o = oc.option
        if (oi not in seen and oi != current and o.sharding_type is cur.sharding_type
                and o.placement == cur.placement and len(o.shards) == len(cur.shards)):
            out.append(oi)
    return out


class LocalSearchSolver(Solver):
    """Greedy (``best_greedy``, the start auto uses too), then moves, swaps, option changes
    and group moves on the critical ranks.

    Args:
        shortlist: options per table the greedy start and re-option steps evaluate.
        max_evals: candidate evaluations local search may spend (its work limit).
    """

    name = "local_search"

    def __init__(self, shortlist: int = DEFAULT_SHORTLIST,
                 max_evals: int = DEFAULT_MAX_EVALS) -> None:
        self.shortlist = shortlist
        self.max_evals = max_evals

    def solve(self, ctx: PlanningContext) -> SolveResult:
        start = time.perf_counter()
        ct = CostTables.of(ctx)
        groups = TableGroups.of(ctx, ct)
        out = best_greedy(ct, groups, k=self.shortlist)
        if out.choice is None:
            raise diagnose_infeasible(ctx, out.failed, ct)
        choice, st, stats = improve(ct, groups, out.choice, deadline=start + ctx.time_limit_s,
                                    k=self.shortlist, max_evals=self.max_evals)
        return SolveResult(assignment=ct.assignment(ctx, choice), status=SolveStatus.FEASIBLE,
                           details={"makespan_ms": st.makespan, "greedy_makespan_ms":
                                    out.state.makespan, "moves": stats.moves, "swaps": stats.swaps,
                                    "reoptions": stats.reoptions, "group_moves": stats.group_moves,
                                    "rounds": stats.rounds,
                                    "evaluations": stats.evaluations,
                                    "stopped_by": stats.stopped_by})

    def options(self) -> dict[str, object]:
        return {"shortlist": self.shortlist, "max_evals": self.max_evals}
