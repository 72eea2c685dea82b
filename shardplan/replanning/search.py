"""Warm-started greedy and local search for a re-plan: step time plus migration.

**Warm start** (:func:`warm_start`). Every table whose old option is still valid on the new
topology (same rows; its shards' ranks survive; its constraints allow it) is kept where it
was, for free. The rest (new tables, tables with rows changed, shards of a lost host, tables
the kept ones leave no room for) are placed heaviest first as the planner's greedy places
them, each shard on the candidate rank where ``objective`` (step time plus weighted migration
time, or step time within the byte budget) ends lowest, ties to the fewest bytes moved; per
table the option that gives the lowest objective, a step time under a quick lower bound
counting as equal (as greedy does), then the fewest bytes.

**Local search** (:func:`improve_moves`). From any start, on the critical ranks (those at a
stage's maximum, passing over stages whose maximum many ranks share: see
:func:`_critical_ranks`), busiest first: move one of its shards to the rank where the objective ends
lowest, or re-place a table with a shard on it with another option (including the option it
had), while that lowers the objective by at least ``MIN_GAIN`` relative, or keeps it and lowers
the (rank, stage) cells at their stage's maximum (a plateau step, as the planner's local search
takes), or keeps both and moves fewer bytes. It stops at a local optimum or after
``max_evals`` candidate evaluations (a work limit: the same plan on any machine).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from shardplan.replanning.moves import MoveTables, Objective
from shardplan.solvers.common import CostTables, LoadState, OptionCosts, TableGroups, scalar_time
from shardplan.solvers.greedy import work_target
from shardplan.solvers.local_search import moved_makespans

Choice = list[tuple[int, tuple[int, ...]]]

#: Least relative drop of the objective a local-search step must bring.
MIN_GAIN = 1e-6
#: Critical ranks tried per round, and largest shards per rank a move tries.
CRITICAL_RANKS = 4
MOVE_SHARDS = 16
#: Tables a re-option step tries per critical rank: those that take it longest.
REOPTION_TABLES = 8
#: A stage whose maximum more than this share of ranks reach is flat (see _critical_ranks).
FLAT_SHARE = 0.25
#: Options per table the greedy and the re-option steps evaluate (plus the old one).
SHORTLIST = 6
#: Candidate evaluations local search may spend.
DEFAULT_MAX_EVALS = 400_000


@dataclass(slots=True)
class State:
    """A full or partial assignment: loads and memory (``LoadState``), link loads, bytes."""

    st: LoadState
    links: np.ndarray
    moved: float = 0.0
    choice: list = field(default_factory=list)

    def copy(self) -> State:
        return State(st=self.st.copy(), links=self.links.copy(), moved=self.moved,
                     choice=list(self.choice))


@dataclass(slots=True)
class Placed:
    ranks: tuple[int, ...]
    load: np.ndarray
    hbm: np.ndarray
    ddr: np.ndarray
    links: np.ndarray
    moved: float


def _apply(s: State, mt: MoveTables, ti: int, oi: int, ranks, sign: float) -> None:
    s.st.apply(mt.ct.options[ti][oi], ranks, sign)
    m, load = mt.option_contrib(ti, oi, ranks)
    s.links = s.links + sign * load
    s.moved += sign * m


def evaluate_moves(mt: MoveTables, choice: Choice) -> State:
    """The state of a full choice."""
    s = State(st=LoadState(mt.ct), links=np.zeros(mt.links.num_edges), choice=list(choice))
    for ti, (oi, rs) in enumerate(choice):
        _apply(s, mt, ti, oi, rs, 1.0)
    return s


def objective_of(mt: MoveTables, obj: Objective, s: State) -> float:
    return float(obj.value(s.st.makespan, mt.time_s(s.links)))


def place_moves(s: State, mt: MoveTables, obj: Objective, ti: int, oi: int,
                banned: np.ndarray | None, caps: tuple[np.ndarray, np.ndarray] | None = None,
                extra: np.ndarray | None = None) -> Placed | None:
    """Place option ``oi`` of table ``ti`` on top of ``s`` (unchanged): each shard on the
    candidate rank with room where the objective ends lowest, then the fewest bytes moved,
    then the least busy rank. None if it does not fit (or breaks the budget)."""
    ct = mt.ct
    oc: OptionCosts = ct.options[ti][oi]
    cap_h, cap_d = caps if caps is not None else (ct.cap_hbm, ct.cap_ddr)
    st = s.st
    l2, h2, d2 = st.load + oc.every_lanes, st.hbm + oc.every_hbm, st.ddr + oc.every_ddr
    if oc.key >= 0 and st.key_count[oc.key] == 0:
        kl, kh, kd = ct.key_cost(oc.key)
        l2, h2, d2 = l2 + kl, h2 + kh, d2 + kd
    links = s.links.copy()
    moved = s.moved
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
        m, load = mt.option_contrib(ti, oi, r.tolist())
        if not obj.within(moved + m):
            return None
        return Placed(tuple(int(x) for x in r), l2, h2, d2, links + load, moved + m)
    if not ((h2 <= cap_h).all() and (d2 <= cap_d).all()):
        return None
    view = l2 if extra is None else l2 + extra
    colmax = view.max(0)
    step = ct.step
    current = step.makespan(view)
    ranks: list[int] = []
    for si in range(oc.num_shards):
        cand = oc.candidates[si]
        mh, md = oc.hbm[si][cand], oc.ddr[si][cand]
        room = (h2[cand] + mh <= cap_h[cand]) & (d2[cand] + md <= cap_d[cand])
        if banned is not None:
            room &= ~banned[cand]
        if not room.any():
            return None
        ok = cand[room]
        mv, dl = mt.contrib(ti, oi, si, ok)
        fine = obj.within(moved + mv)
        if not np.any(fine):
            return None
        add = oc.lanes_g[si, ct.group_of[ok]]
        t_new = step.makespan_if_added(view, colmax, current, ok, add)
        mig = mt.time_s(links[None, :] + dl)
        score = np.where(fine, obj.value(t_new, mig), np.inf)
        busy = scalar_time(view[ok] + add)
        j = int(np.lexsort((ok, busy, mv, np.round(score, 12)))[0])
        r = int(ok[j])
        ranks.append(r)
        a = add[j]
        l2[r] += a
        if extra is not None:
            view[r] += a
        colmax = np.maximum(colmax, view[r])
        current = float(t_new[j])
        h2[r] += mh[room][j]
        d2[r] += md[room][j]
        links += dl[j]
        moved += float(mv[j])
    return Placed(tuple(ranks), l2, h2, d2, links, moved)


def _commit(s: State, mt: MoveTables, ti: int, oi: int, p: Placed) -> None:
    oc = mt.ct.options[ti][oi]
    s.st.load, s.st.hbm, s.st.ddr = p.load, p.hbm, p.ddr
    if oc.key >= 0:
        s.st.key_count[oc.key] += 1
    s.links, s.moved = p.links, p.moved
    s.choice[ti] = (oi, p.ranks)


def _banned(mt: MoveTables, groups: TableGroups, choice: list, ti: int) -> np.ndarray | None:
    mates = groups.mates.get(ti)
    if not mates:
        return None
    mask = np.zeros(mt.ct.world, dtype=bool)
    for j in mates:
        if choice[j] is not None:
            mask[list(choice[j][1])] = True
    return mask


def _ranked(ocs, target: float, world: int) -> list[int]:
    """Option indices by estimated cost (as the planner's greedy short-lists them): total work,
    plus ``world`` times how far the largest shard sticks out above ``target``."""
    score = sorted((oc.work_ms + world * max(0.0, oc.max_shard_ms - target), i)
                   for i, oc in enumerate(ocs))
    return [i for _, i in score]


def _candidates(mt: MoveTables, ti: int, target: float, keep_oi: int | None) -> list[int]:
    ocs = mt.ct.options[ti]
    ranked = _ranked(ocs, target, mt.ct.world)
    out = ranked[:SHORTLIST]
    if keep_oi is not None and keep_oi not in out:
        out.append(keep_oi)
    return out + [oi for oi in ranked[SHORTLIST:] if oi not in out]


@dataclass(slots=True)
class WarmOutcome:
    choice: Choice | None
    state: State
    failed: list[str]
    kept_tables: int


def warm_start(mt: MoveTables, groups: TableGroups, obj: Objective,
               keep: list[tuple[int, tuple[int, ...]] | None]) -> WarmOutcome:
    """Keep what can stay, place the rest (see the module docstring).

    Args:
        mt: the move tables (with the planner's cost tables).
        groups: co-location and separation groups.
        obj: the objective.
        keep: per table, (option index, ranks) of its old placement if still valid.
    """
    ct = mt.ct
    n = len(ct.tables)
    s = State(st=LoadState(ct), links=np.zeros(mt.links.num_edges), choice=[None] * n)
    kept = [ti for ti in range(n) if keep[ti] is not None]
    # a co-location group stays only if all of it stays
    for ti, grp in groups.coloc_of.items():
        if any(keep[j] is None for j in grp):
            kept = [k for k in kept if k not in grp]
    for ti in kept:
        oi, rs = keep[ti]
        _apply(s, mt, ti, oi, rs, 1.0)
        s.choice[ti] = (oi, rs)
    # un-keep the largest tables of any rank over capacity until all fit
    while True:
        over = np.flatnonzero((s.st.hbm > ct.cap_hbm) | (s.st.ddr > ct.cap_ddr))
        if not len(over):
            break
        r = int(over[0])
        # the largest table on the rank; if none is (the fixed costs alone overflow it), the
        # largest kept table anywhere: the re-placement then finds what fits, or says why not
        on = [ti for ti in kept if r in s.choice[ti][1]] or list(kept)
        if not on:
            break
        ti = max(on, key=lambda t: (ct.options[t][s.choice[t][0]].hbm_bytes, -t))
        grp = groups.coloc_of.get(ti, (ti,))
        for tj in grp:
            if s.choice[tj] is not None:
                oi, rs = s.choice[tj]
                _apply(s, mt, tj, oi, rs, -1.0)
                s.choice[tj] = None
                kept.remove(tj)
    target = work_target(ct)
    todo = sorted((ti for ti in range(n) if s.choice[ti] is None),
                  key=lambda i: (-ct.table_weight[i], i))
    least_h = {ti: np.minimum.reduce([oc.every_hbm_g for oc in ct.options[ti]])
               for ti in todo if ct.options[ti]}
    least_d = {ti: np.minimum.reduce([oc.every_ddr_g for oc in ct.options[ti]])
               for ti in todo if ct.options[ti]}
    reserve_h = sum(least_h.values(), np.zeros(ct.num_groups))
    reserve_d = sum(least_d.values(), np.zeros(ct.num_groups))
    failed: list[str] = []
    g_of = ct.group_of
    for unit in groups.units(todo):
        for ti in unit:
            reserve_h = reserve_h - least_h.get(ti, 0.0)
            reserve_d = reserve_d - least_d.get(ti, 0.0)
        caps = (ct.cap_hbm - reserve_h[g_of], ct.cap_ddr - reserve_d[g_of])
        if len(unit) > 1:
            if not _place_unit(s, mt, obj, groups, unit, caps):
                failed.extend(ct.tables[i] for i in unit)
            continue
        ti = unit[0]
        banned = _banned(mt, groups, s.choice, ti)
        keep_oi = keep[ti][0] if keep[ti] is not None else None
        best = None
        cands = _candidates(mt, ti, target, keep_oi)
        for tier in (cands[:SHORTLIST + 1], cands[SHORTLIST + 1:]):
            for oi in tier:
                p = place_moves(s, mt, obj, ti, oi, banned, caps)
                if p is None:
                    continue
                ms = ct.step.makespan(p.load)
                key = (round(float(obj.value(max(ms, target), mt.time_s(p.links))), 12),
                       p.moved, float(scalar_time(p.load).sum()), oi)
                if best is None or key < best[0]:
                    best = (key, oi, p)
            if best is not None:
                break
        if best is None:
            failed.append(ct.tables[ti])
            continue
        _commit(s, mt, ti, best[1], best[2])
    if failed:
        return WarmOutcome(choice=None, state=s, failed=failed, kept_tables=len(kept))
    return WarmOutcome(choice=list(s.choice), state=s, failed=[], kept_tables=len(kept))


def _place_unit(s: State, mt: MoveTables, obj: Objective, groups: TableGroups,
                unit: tuple[int, ...], caps) -> bool:
    """A co-location group on one rank: each table at its least-work single-shard option; the
    rank where the objective ends lowest."""
    ct = mt.ct
    sel = []
    for ti in unit:
        single = [(oc.work_ms, oi) for oi, oc in enumerate(ct.options[ti]) if oc.num_shards == 1]
        if not single:
            return False
        sel.append(min(single)[1])
    best = None
    for r in range(ct.world):
        trial = s.copy()
        ok = True
        for ti, oi in zip(unit, sel):
            oc = ct.options[ti][oi]
            b = _banned(mt, groups, trial.choice, ti)
            if r not in oc.candidates[0] or (b is not None and b[r]):
                ok = False
                break
            _apply(trial, mt, ti, oi, (r,), 1.0)
            trial.choice[ti] = (oi, (r,))
        if not ok or not ((trial.st.hbm <= caps[0]).all() and (trial.st.ddr <= caps[1]).all()):
            continue
        if not obj.within(trial.moved):
            continue
        key = (round(objective_of(mt, obj, trial), 12), trial.moved, r)
        if best is None or key < best[0]:
            best = (key, trial)
    if best is None:
        return False
    t = best[1]
    s.st, s.links, s.moved, s.choice = t.st, t.links, t.moved, t.choice
    return True


def _critical_ranks(ct: CostTables, load: np.ndarray) -> list[int]:
    """Ranks at the maximum of a stage that counts, busiest first. A stage whose maximum more
    than ``FLAT_SHARE`` of the ranks share (a cost every rank pays alike, such as the output
    all-to-all of the rank's own samples) is passed over while another stage has a few
    ranks at its maximum: moving shards off those ranks is what can lower the step time."""
    stages = ct.step.stage_times(load)
    top = stages.max(0)
    at = (stages >= top * (1 - 1e-9)) & (top > 0)
    sharp = at[:, at.sum(0) <= FLAT_SHARE * len(load)]
    crit = np.flatnonzero((sharp if sharp.shape[1] and sharp.any() else at).any(1))
    busy = scalar_time(load)
    return sorted(crit.tolist(), key=lambda r: (-busy[r], r))[:CRITICAL_RANKS]


@dataclass(slots=True)
class SearchStats:
    moves: int = 0
    reoptions: int = 0
    rounds: int = 0
    evaluations: int = 0
    stopped_by: str = "local optimum"


def _shift(s: State, mt: MoveTables, ti: int, si: int, r_old: int, r_new: int) -> None:
    """Move shard ``si`` of table ``ti`` from ``r_old`` to ``r_new`` in place (load, memory,
    links, bytes, choice)."""
    ct = mt.ct
    oi, rs = s.choice[ti]
    oc = ct.options[ti][oi]
    for r, sign in ((r_old, -1.0), (r_new, 1.0)):
        g = ct.group_of[r]
        s.st.load[r] += sign * oc.lanes_g[si, g]
        s.st.hbm[r] += sign * oc.hbm_g[si, g]
        s.st.ddr[r] += sign * oc.ddr_g[si, g]
        m, d = mt.contrib(ti, oi, si, np.array([r]))
        s.links = s.links + sign * d[0]
        s.moved += sign * float(m[0])
    new_rs = list(rs)
    new_rs[si] = r_new
    s.choice[ti] = (oi, tuple(new_rs))


def critical_cells(ct: CostTables, load: np.ndarray) -> int:
    """(rank, stage) cells at their stage's maximum: fewer means nearer to a lower step time
    (the planner's local search uses the same tie-breaker to leave plateaus)."""
    stages = ct.step.stage_times(load)
    top = stages.max(0)
    return int(((stages >= top * (1 - 1e-9)) & (top > 0)).sum())


def improve_moves(mt: MoveTables, groups: TableGroups, obj: Objective, choice: Choice, *,
                  max_evals: int = DEFAULT_MAX_EVALS) -> tuple[Choice, State, SearchStats]:
    """Local search from ``choice`` (see the module docstring). A step must lower the
    objective by ``MIN_GAIN`` relative, or keep it and lower the critical cells (a plateau
    step), or keep both and move fewer bytes."""
    ct = mt.ct
    s = evaluate_moves(mt, choice)
    stats = SearchStats()
    target = work_target(ct)
    g_of = ct.group_of

    def score(x: State) -> tuple[float, int, float]:
        return objective_of(mt, obj, x), critical_cells(ct, x.st.load), x.moved

    def better(new: tuple[float, int, float], old: tuple[float, int, float]) -> bool:
        if new[0] < old[0] * (1 - MIN_GAIN):
            return True
        if new[0] > old[0] * (1 + 1e-12):
            return False
        return new[1] < old[1] or (new[1] == old[1] and new[2] < old[2] - 1.0)

    def shift(ti: int, si: int, r_old: int, r_new: int) -> None:
        _shift(s, mt, ti, si, r_old, r_new)

    def try_move(rstar: int, cur) -> bool:
        shards = []
        for ti, (oi, rs) in enumerate(s.choice):
            oc = ct.options[ti][oi]
            if oc.fixed is not None or ti in groups.coloc_of:
                continue
            shards += [(ti, si) for si, r in enumerate(rs) if r == rstar]
        shards.sort(key=lambda x: (-float(ct.options[x[0]][s.choice[x[0]][0]].time_g[
            x[1], g_of[rstar]]), x))
        for ti, si in shards[:MOVE_SHARDS]:
            oi, rs = s.choice[ti]
            oc = ct.options[ti][oi]
            cand = oc.candidates[si]
            cand = cand[cand != rstar]
            if not len(cand):
                continue
            h, d = oc.hbm_g[si, g_of[cand]], oc.ddr_g[si, g_of[cand]]
            room = (s.st.hbm[cand] + h <= ct.cap_hbm[cand]) & (s.st.ddr[cand] + d <= ct.cap_ddr[cand])
            ban = _banned(mt, groups, s.choice, ti)
            if ban is not None:
                room &= ~ban[cand]
            if not room.any():
                continue
            ok = cand[room]
            stats.evaluations += len(ok)
            a = oc.lanes_g[si, g_of[rstar]]
            t_new = moved_makespans(ct, s.st.load, rstar, a, ok, oc.lanes_g[si, g_of[ok]])
            m0, d0 = mt.contrib(ti, oi, si, np.array([rstar]))
            mv, dl = mt.contrib(ti, oi, si, ok)
            links = (s.links - d0[0])[None, :] + dl
            moved = s.moved - m0[0] + mv
            val = np.where(obj.within(moved), obj.value(t_new, mt.time_s(links)), np.inf)
            busy = scalar_time(s.st.load[ok] + oc.lanes_g[si, g_of[ok]])
            for j in np.lexsort((ok, busy, moved, np.round(val, 12)))[:3].tolist():
                if not np.isfinite(val[j]) or val[j] > cur[0] * (1 + 1e-12):
                    break
                r2 = int(ok[j])
                shift(ti, si, rstar, r2)
                if better(score(s), cur):
                    stats.moves += 1
                    return True
                shift(ti, si, r2, rstar)
        return False

    def try_reoption(rstar: int, cur) -> bool:
        here: dict[int, float] = {}  # table -> time of its shards on rstar
        for ti, (oi, rs) in enumerate(s.choice):
            if ti in groups.coloc_of:
                continue
            t = ct.options[ti][oi].time_g[:, g_of[rstar]]
            on = [si for si, r in enumerate(rs) if r == rstar]
            if on:
                here[ti] = float(t[on].sum())
        tabs = sorted(here, key=lambda t: (-here[t], t))
        for ti in tabs[:REOPTION_TABLES]:
            oi0, rs0 = s.choice[ti]
            trial = s.copy()
            _apply(trial, mt, ti, oi0, rs0, -1.0)
            trial.choice[ti] = None
            ban = _banned(mt, groups, trial.choice, ti)
            best = None
            for oi in _candidates(mt, ti, target, oi0)[:2 * SHORTLIST + 1]:
                stats.evaluations += ct.options[ti][oi].num_shards
                p = place_moves(trial, mt, obj, ti, oi, ban)
                if p is None:
                    continue
                new = (float(obj.value(ct.step.makespan(p.load), mt.time_s(p.links))),
                       critical_cells(ct, p.load), p.moved)
                if better(new, cur) and (best is None or (new, oi) < best[0]):
                    best = ((new, oi), oi, p)
            if best is None:
                continue
            _commit(trial, mt, ti, best[1], best[2])
            s.st, s.links, s.moved, s.choice = trial.st, trial.links, trial.moved, trial.choice
            stats.reoptions += 1
            return True
        return False

    while True:
        if stats.evaluations >= max_evals:
            stats.stopped_by = "work limit"
            break
        stats.rounds += 1
        cur = score(s)
        if not any(try_move(r, cur) or try_reoption(r, cur)
                   for r in _critical_ranks(ct, s.st.load)):
            break
    # the shifts add and take away floats: re-derive the state exactly
    final = evaluate_moves(mt, s.choice)
    return list(final.choice), final, stats


def repair_moves(mt: MoveTables, groups: TableGroups, obj: Objective, choice: Choice,
                 keep: list) -> tuple[Choice, State]:
    """Bring shards of ``choice`` (a plan made from scratch, say) back to where their old
    state lies: each movable shard to the rank that holds most of its old state, and each
    fixed-rank table back to its kept option. In order of step-time cost per byte saved
    (each costed on the start, a step taken only if it still fits): while over the budget
    every such step is taken; then only those that do not raise the objective."""
    ct = mt.ct
    s = evaluate_moves(mt, choice)
    g_of = ct.group_of
    base_ms = s.st.makespan
    steps = []  # (cost per byte, -saved, key, action)
    for ti, (oi, rs) in enumerate(s.choice):
        oc = ct.options[ti][oi]
        if ti in groups.coloc_of or groups.mates.get(ti):
            continue
        if oc.fixed is not None:
            k = keep[ti]
            if k is None or (oi, tuple(rs)) == tuple(k):
                continue
            trial = s.copy()
            _apply(trial, mt, ti, oi, rs, -1.0)
            _apply(trial, mt, ti, k[0], k[1], 1.0)
            saved = s.moved - trial.moved
            if saved > 0:
                steps.append(((trial.st.makespan - base_ms) / saved, -saved, (ti, -1),
                              ("table", ti, k)))
            continue
        for si, r in enumerate(rs):
            local: dict[int, float] = {}
            for b, nbytes in mt.pieces(ti, oi, si):
                if len(b.holders) == 1:
                    local[b.holders[0]] = local.get(b.holders[0], 0.0) + nbytes
            if not local:
                continue
            home = max(local, key=lambda q: (local[q], -q))
            if home == r or home not in oc.candidates[si]:
                continue
            m_now, _ = mt.contrib(ti, oi, si, np.array([r]))
            m_home, _ = mt.contrib(ti, oi, si, np.array([home]))
            saved = float(m_now[0] - m_home[0])
            if saved <= 0:
                continue
            t = moved_makespans(ct, s.st.load, r, oc.lanes_g[si, g_of[r]], np.array([home]),
                                oc.lanes_g[si, g_of[[home]]])
            steps.append(((float(t[0]) - base_ms) / saved, -saved, (ti, si),
                          ("shard", ti, si, home)))
    steps.sort(key=lambda x: (x[0], x[1], x[2]))
    cur = objective_of(mt, obj, s)
    for _, _, _, act in steps:
        over = not obj.within(s.moved)
        if act[0] == "shard":
            _, ti, si, home = act
            r = s.choice[ti][1][si]
            _shift(s, mt, ti, si, r, home)
            fits = s.st.hbm[home] <= ct.cap_hbm[home] and s.st.ddr[home] <= ct.cap_ddr[home]
            new = objective_of(mt, obj, s)
            if fits and (over or new <= cur):
                cur = new
            else:
                _shift(s, mt, ti, si, home, r)
            continue
        _, ti, k = act
        trial = s.copy()
        oi, rs = trial.choice[ti]
        _apply(trial, mt, ti, oi, rs, -1.0)
        _apply(trial, mt, ti, k[0], k[1], 1.0)
        trial.choice[ti] = (k[0], tuple(k[1]))
        if not ((trial.st.hbm <= ct.cap_hbm).all() and (trial.st.ddr <= ct.cap_ddr).all()):
            continue
        new = objective_of(mt, obj, trial)
        if over or new <= cur:
            s, cur = trial, new
    s = evaluate_moves(mt, s.choice)  # re-derived exactly (the shifts add and subtract floats)
    return list(s.choice), s


__all__ = ["Choice", "SearchStats", "State", "WarmOutcome", "evaluate_moves", "improve_moves",
           "objective_of", "place_moves", "repair_moves", "warm_start", "critical_cells"]
