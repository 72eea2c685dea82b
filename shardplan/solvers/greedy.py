"""Greedy: largest estimated cost first; each shard to the candidate rank where the step time
grows least (ties: the least busy rank) with room in every tier; per table, the option (from
a short list ranked by estimated cost) that gives the smallest step time so far (plus the
everywhere-time of the tables still to come), counting any step time below a target (a quick
lower bound) as equal, ties broken by the least total work. (Without the target, greedy splits
every table to shave the current maximum and pays for it in total work.) A sharding group's
fixed cost (its collectives' latencies) is charged to the first table that uses it: the
marginal cost of that choice.

Runs in O(tables x shortlist x shards x ranks x lanes) numpy work, so it scales to 10,000
tables on 1,024 ranks; it is the start point of local search and the ILP's warm start.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from shardplan.solvers.bounds import cheap_bound
from shardplan.solvers.common import (
    NUM_LANES,
    REL_EPS,
    CostTables,
    LoadState,
    OptionCosts,
    TableGroups,
    compose,
    diagnose_infeasible,
    every,
    least_work_lanes,
    makespan_of,
    scalar_time,
    stage_max,
)
from shardplan.types import (
    Assignment,
    Composition,
    PlanningContext,
    Solver,
    SolveResult,
    SolveStatus,
)

Choice = list[tuple[int, tuple[int, ...]]]

#: Options evaluated exactly per table (the rest only if none of these fits in memory).
DEFAULT_SHORTLIST = 6


def work_target(ct: CostTables) -> float:
    """A quick lower bound used to rank options: the step time of the mean work per rank
    (every lane at its least total over each table's options), or the heaviest shard's rank."""
    n = len(ct.tables)
    total = ct.base_lanes.sum(0) + (sum(least_work_lanes(ct, ti) for ti in range(n)) if n else 0.0)
    mean = ct.step.makespan((total / ct.world)[None, :])
    peak = max((min((oc.peak_ms for oc in ocs), default=0.0) for ocs in ct.options), default=0.0)
    return max(mean, peak)


def shard_budget(ct: CostTables, target: float) -> float:
    """What ``target`` (a step time) leaves for shards: the target less what every rank pays
    whatever the plan (its fixed overhead and every table's least everywhere-cost), in the
    same scalar time as :attr:`OptionCosts.max_shard_ms`."""
    fixed = ct.base_lanes_g.min(0) + sum((np.minimum.reduce([oc.certain_lanes for oc in ocs])
                                          for ocs in ct.options if ocs), np.zeros(NUM_LANES))
    return max(0.0, target - float(scalar_time(fixed)))


def shortlist(ocs: list[OptionCosts], budget: float, world: int) -> list[int]:
    """Option indices ranked by estimated cost: total work, plus a penalty of ``world`` times
    how far the largest shard sticks out above ``budget`` (a shard's own time: compare it with
    :func:`shard_budget` of a step-time target, not with the target itself, which includes the
    fixed per-rank costs every option pays alike)."""
    score = [(oc.work_ms + world * max(0.0, oc.max_shard_ms - budget), i)
             for i, oc in enumerate(ocs)]
    score.sort()
    return [i for _, i in score]


@dataclass(slots=True)
class Placed:
    """An option placed on top of a load state (which is left unchanged)."""

    ranks: tuple[int, ...]
    load: np.ndarray
    hbm: np.ndarray
    ddr: np.ndarray
    new_key: bool  # the option's sharding group was not in use before
    #: the step time of ``load`` plus the ``extra`` lanes placement was given (None: not
    #: computed, for options whose shards have fixed ranks)
    ms: float | None = None


def place_option(st: LoadState, oc: OptionCosts, banned: np.ndarray | None,
                 caps: tuple[np.ndarray, np.ndarray] | None = None,
                 extra: np.ndarray | None = None,
                 stop_above: float | None = None) -> Placed | None:
    """Place ``oc``'s shards on top of ``st`` (not modified), each on the candidate rank with
    room where the step time (of the load plus ``extra`` lanes, e.g. the everywhere-costs still
    to come) grows least, ties to the least busy rank. ``banned`` is a boolean mask of ranks
    the table may not use (separation); ``caps`` the (HBM, DDR) capacities to fill up to, if
    not the ranks' own. Returns None if it does not fit, or (with ``stop_above``) as soon as
    the step time exceeds ``stop_above``: each further shard only adds load, and the step
    time is non-decreasing in every lane, so the placement would end above it too."""
    ct = st.ct
    cap_h, cap_d = caps if caps is not None else (ct.cap_hbm, ct.cap_ddr)
    l2 = st.load + every(oc.every_lanes_g, oc.group_of)
    h2 = st.hbm + every(oc.every_hbm_g, oc.group_of)
    d2 = st.ddr + every(oc.every_ddr_g, oc.group_of)
    new_key = oc.key >= 0 and st.key_count[oc.key] == 0
    if new_key:
        kl, kh, kd = ct.key_cost(oc.key)
        l2 += kl
        h2 += kh
        d2 += kd
    if oc.fixed is not None:
        r = oc.fixed
        if banned is not None and banned[r].any():
            return None
        g = ct.group_of[r]
        idx = np.arange(len(r))
        np.add.at(l2, r, oc.lanes_g[idx, g])
        np.add.at(h2, r, oc.hbm_g[idx, g])
        np.add.at(d2, r, oc.ddr_g[idx, g])
        if not ((h2 <= cap_h).all() and (d2 <= cap_d).all()):
            return None
        return Placed(tuple(int(x) for x in r), l2, h2, d2, new_key)
    if not ((h2 <= cap_h).all() and (d2 <= cap_d).all()):
        return None
    view = l2 if extra is None else l2 + extra
    colmax = view.max(0)
    step = ct.step
    sync = step.composition is Composition.SYNCHRONIZED
    current = float(compose(step, stage_max(colmax))) if sync else makespan_of(step, view)
    if stop_above is None:
        stop_above = math.inf
    elif current > stop_above:
        return None
    g_of = ct.group_of
    one_group = ct.num_groups == 1
    ranks: list[int] = []
    for si in range(oc.num_shards):
        cand = oc.candidates[si]
        if one_group and cand is ct.all_ranks and banned is None:  # no indexing by cand
            mh, md = oc.hbm_g[si, 0], oc.ddr_g[si, 0]
            room = (h2 + mh <= cap_h) & (d2 + md <= cap_d)
            if room.all():
                rows = view + oc.lanes_g[si, 0]
                if sync:
                    t_new = compose(step, stage_max(np.maximum(colmax[None, :], rows)))
                else:
                    t_new = np.maximum(current, compose(step, stage_max(rows)))
                r = best_index(t_new, rows, cand)
                ranks.append(r)
                a = oc.lanes_g[si, 0]
                l2[r] += a
                if extra is not None:
                    view[r] += a
                colmax = np.maximum(colmax, view[r])
                current = float(t_new[r])
                if current > stop_above:
                    return None
                h2[r] += mh
                d2[r] += md
                continue
        if one_group:  # one cost row for every rank: scalars and one row broadcast
            mh, md = oc.hbm_g[si, 0], oc.ddr_g[si, 0]
            room = (h2[cand] + mh <= cap_h[cand]) & (d2[cand] + md <= cap_d[cand])
        else:
            gs = g_of[cand]
            mh, md = oc.hbm_g[si, gs], oc.ddr_g[si, gs]
            room = (h2[cand] + mh <= cap_h[cand]) & (d2[cand] + md <= cap_d[cand])
        if banned is not None:
            room &= ~banned[cand]
        if room.all():
            ok = cand
        elif room.any():
            ok = cand[room]
            if not one_group:
                mh, md = mh[room], md[room]
        else:
            return None
        add = oc.lanes_g[si, 0] if one_group else oc.lanes_g[si, g_of[ok]]
        rows = view[ok] + add
        if sync:  # StepModel.makespan_if_added, sharing ``rows``
            t_new = compose(step, stage_max(np.maximum(colmax[None, :], rows)))
        else:
            t_new = np.maximum(current, compose(step, stage_max(rows)))
        j = best_index(t_new, rows, ok)
        r = int(ok[j])
        ranks.append(r)
        a = add if one_group else add[j]
        l2[r] += a
        if extra is not None:
            view[r] += a
        colmax = np.maximum(colmax, view[r])
        current = float(t_new[j])
        if current > stop_above:
            return None
        h2[r] += mh if one_group else mh[j]
        d2[r] += md if one_group else md[j]
    return Placed(tuple(ranks), l2, h2, d2, new_key, current)


def best_index(t_new: np.ndarray, rows: np.ndarray, ok: np.ndarray) -> int:
    """The index of the least step time in ``t_new`` (to 12 decimals), ties to the least busy
    row of ``rows`` (:func:`scalar_time`), then the lowest rank in ``ok``: the first of
    ``np.lexsort((ok, busy, round(t_new, 12)))``, with the busy times of the ties only."""
    j = int(np.argmin(t_new))
    if np.count_nonzero(t_new <= t_new[j] + 1e-11) == 1:  # no value rounds to the same
        return j
    tr = np.round(t_new, 12)
    tie = np.flatnonzero(tr == tr.min())
    if len(tie) > 1:
        busy = scalar_time(rows[tie])
        tie = tie[busy == busy.min()]
        if len(tie) > 1:
            return int(tie[np.argmin(ok[tie])])
    return int(tie[0])


def commit(st: LoadState, oc: OptionCosts, placed: Placed) -> None:
    """Make ``placed`` (from :func:`place_option` on ``st``) the state."""
    st.load, st.hbm, st.ddr = placed.load, placed.hbm, placed.ddr
    if oc.key >= 0:
        st.key_count[oc.key] += 1


@dataclass(slots=True)
class GreedyOutcome:
    choice: Choice | None
    state: LoadState
    failed: list[str]


def greedy_choice(ct: CostTables, groups: TableGroups, *, k: int = DEFAULT_SHORTLIST,
                  order: list[int] | None = None, target: float | None = None) -> GreedyOutcome:
    """The greedy assignment (see module docstring); ``failed`` lists tables that fit nowhere.

    Args:
        ct: the cost tables.
        groups: co-location and separation groups.
        k: options per table evaluated exactly.
        order: the order tables are placed in (default: largest weight first).
        target: step time below which only total work counts (default: :func:`work_target`).
    """
    st = LoadState(ct)
    target = work_target(ct) if target is None else target
    budget = shard_budget(ct, target)
    n = len(ct.tables)
    if order is None:
        order = sorted(range(n), key=lambda i: (-ct.table_weight[i], i))
    choice: list[tuple[int, tuple[int, ...]] | None] = [None] * n
    used: dict[int, set[int]] = {}  # table -> ranks it uses (only tracked for separation)
    failed: list[str] = []
    # keep room on every rank for the everywhere-memory of the tables still to place
    least_h = [_least(ct, ti, "every_hbm_g") for ti in range(n)]
    least_d = [_least(ct, ti, "every_ddr_g") for ti in range(n)]
    least_l = [_least(ct, ti, "every_lanes_g") for ti in range(n)]
    reserve_h = np.sum(least_h, axis=0) if n else np.zeros(ct.num_groups)
    reserve_d = np.sum(least_d, axis=0) if n else np.zeros(ct.num_groups)
    # and count the everywhere-time still to come when comparing step times with the target
    reserve_l = np.sum(least_l, axis=0) if n else np.zeros((ct.num_groups, len(ct.base_lanes_g[0])))
    g_of = ct.group_of
    step = ct.step
    for unit in groups.units(order):
        for ti in unit:
            reserve_h = reserve_h - least_h[ti]
            reserve_d = reserve_d - least_d[ti]
            reserve_l = reserve_l - least_l[ti]
        caps = (ct.cap_hbm - reserve_h[g_of], ct.cap_ddr - reserve_d[g_of])
        extra = reserve_l[g_of]
        if len(unit) > 1:
            ok = _place_colocated(ct, st, unit, choice, groups, used, caps)
            if not ok:
                failed.extend(ct.tables[i] for i in unit)
            continue
        ti = unit[0]
        banned = _banned(ct, groups, used, ti)
        ocs = ct.options[ti]
        ranked = shortlist(ocs, budget, ct.world)
        best = None
        for tier in (ranked[:k], ranked[k:]):
            for oi in tier:
                res = place_option(st, ocs[oi], banned, caps, extra)
                if res is None:
                    continue
                # below the target step time only total work counts; step times equal to
                # float noise count as equal (else summation order picks the host)
                ms = res.ms if res.ms is not None else makespan_of(step, res.load + extra)
                key = (tie_round(max(ms, target)),
                       tie_round(float(scalar_time(res.load).sum())), oi)
                if best is None or key < best[0]:
                    best = (key, oi, res)
            if best is not None:
                break
        if best is None:
            failed.append(ct.tables[ti])
            continue
        _, oi, res = best
        commit(st, ocs[oi], res)
        choice[ti] = (oi, res.ranks)
        if ti in groups.mates:
            used[ti] = set(res.ranks)
    if failed:
        return GreedyOutcome(choice=None, state=st, failed=failed)
    return GreedyOutcome(choice=[c for c in choice if c is not None], state=st, failed=[])


def tie_round(x: float) -> float:
    """``x`` to about ``REL_EPS`` relative precision, so float noise does not order ties."""
    if x == 0.0 or not np.isfinite(x):
        return x
    digits = int(-np.floor(np.log10(abs(x) * REL_EPS)))
    return round(x, digits)


def _least(ct: CostTables, ti: int, attr: str) -> np.ndarray:
    """The element-wise least per-group everywhere array over the table's options."""
    ocs = ct.options[ti]
    if not ocs:
        shape = (ct.num_groups, len(ct.base_lanes_g[0])) if attr == "every_lanes_g" \
            else (ct.num_groups,)
        return np.zeros(shape)
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
    everyone = np.arange(ct.world)
    for sel in plans:
        cand = np.ones(ct.world, dtype=bool)
        trial = st.copy()
        add_l = np.zeros_like(st.load)
        add_h = np.zeros(ct.world)
        add_d = np.zeros(ct.world)
        for ti, oi in zip(unit, sel):
            oc = ct.options[ti][oi]
            m = np.zeros(ct.world, dtype=bool)
            m[oc.candidates[0]] = True
            cand &= m
            trial.apply(oc, ())  # everywhere-costs and the group's fixed cost
            add_l += oc.shard_lanes(0, everyone)
            add_h += oc.hbm[0][everyone]
            add_d += oc.ddr[0][everyone]
            b = _banned(ct, groups, used, ti)
            if b is not None:
                cand &= ~b
        cap_h, cap_d = caps
        room = cand & (trial.hbm + add_h <= cap_h) & (trial.ddr + add_d <= cap_d)
        if not room.any() or not ((trial.hbm <= cap_h).all() and (trial.ddr <= cap_d).all()):
            continue
        ok = np.flatnonzero(room)
        t_new = ct.step.makespan_if_added(trial.load, trial.load.max(0), trial.makespan, ok,
                                          add_l[ok])
        busy = scalar_time(trial.load[ok] + add_l[ok])
        r = int(ok[int(np.lexsort((ok, busy, np.round(t_new, 12)))[0])])
        trial.load[r] += add_l[r]
        trial.hbm[r] += add_h[r]
        trial.ddr[r] += add_d[r]
        st.load, st.hbm, st.ddr, st.key_count = trial.load, trial.hbm, trial.ddr, trial.key_count
        for ti, oi in zip(unit, sel):
            choice[ti] = (oi, (r,))
            if ti in groups.mates:
                used[ti] = {r}
        return True
    return False


#: Extra greedy runs against step-time targets between the cheap lower bound and the first
#: run's step time (geometric steps): a target near the step time a plan can reach lets
#: greedy keep tables whole where the first run, chasing the current maximum, split them.
DEFAULT_TARGETS = 4
#: Past this many tables x ranks no extra runs: with many tables per rank the placement, not
#: the target, decides, and each run costs seconds.
TARGETS_MAX_CELLS = 2_000_000


def default_targets(ct: CostTables) -> int:
    """:data:`DEFAULT_TARGETS`, or none past :data:`TARGETS_MAX_CELLS` tables x ranks."""
    return DEFAULT_TARGETS if len(ct.tables) * ct.world <= TARGETS_MAX_CELLS else 0


def target_ladder(low: float, high: float, rungs: int) -> list[float]:
    """``rungs`` step-time targets from ``low`` up towards ``high`` (geometric, ``low``
    first, ``high`` excluded)."""
    if rungs <= 0 or not (0 < low < high):
        return [low] if rungs > 0 and low > 0 else []
    return [low * (high / low) ** (j / rungs) for j in range(rungs)]


def best_greedy(ct: CostTables, groups: TableGroups, *, k: int = DEFAULT_SHORTLIST,
                targets: int | None = None) -> GreedyOutcome:
    """Greedy against its default target, then against ``targets`` more (see
    :func:`target_ladder`, from the cheap lower bound to the first run's step time; None:
    :func:`default_targets`); the plan with the lowest step time (ties: the earlier run)."""
    targets = default_targets(ct) if targets is None else targets
    best = greedy_choice(ct, groups, k=k)
    if best.choice is None or targets <= 0:
        return best
    low = cheap_bound(ct)
    for t in target_ladder(low, best.state.makespan, targets):
        out = greedy_choice(ct, groups, k=k, target=t)
        if out.choice is not None and out.state.makespan < best.state.makespan * (1 - REL_EPS):
            best = out
    return best


class GreedySolver(Solver):
    """Largest table first, each shard where the step time grows least, with room.

    Args:
        shortlist: options per table evaluated exactly (more: slower, sometimes better).
        targets: extra runs against step-time targets (see :func:`best_greedy`; 0: one run;
            None: :func:`default_targets`).
    """

    name = "greedy"

    def __init__(self, shortlist: int = DEFAULT_SHORTLIST, targets: int | None = None) -> None:
        self.shortlist = shortlist
        self.targets = targets

    def solve(self, ctx: PlanningContext) -> SolveResult:
        ct = CostTables.of(ctx)
        groups = TableGroups.of(ctx, ct)
        out = best_greedy(ct, groups, k=self.shortlist, targets=self.targets)
        if out.choice is None:
            raise diagnose_infeasible(ctx, out.failed, ct)
        return SolveResult(assignment=ct.assignment(ctx, out.choice), status=SolveStatus.FEASIBLE,
                           details={"makespan_ms": out.state.makespan})

    def options(self) -> dict[str, object]:
        return {"shortlist": self.shortlist, "targets": self.targets}


__all__ = ["Assignment", "GreedySolver", "Placed", "best_greedy", "commit", "greedy_choice",
           "place_option", "shard_budget", "target_ladder", "tie_round", "work_target"]
