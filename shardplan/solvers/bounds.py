"""The cheap lower bounds (no LP): work, largest unit, pair and coupled; see
``shardplan.bounds`` for what each means. They need only the cost tables, so every solver can
use them (greedy's targets, auto's decision to run the ILP) without the LP behind
``shardplan.bounds.lower_bound``.
"""

from __future__ import annotations

import numpy as np

from shardplan.solvers.common import (
    CostTables,
    least_work_lanes,
    silence_highs_banner,
    stage_max,
)
from shardplan.types import Composition

#: Tables whose pairs the pair bound tries (the heaviest by their single-table bound).
PAIR_TABLES = 20


def _least_group_lanes(ct: CostTables) -> np.ndarray:
    """Per lane, the least a rank pays for the sharding group(s) of any plan (0 if some option
    joins no group)."""
    if not ct.keys or any(oc.key < 0 for ocs in ct.options for oc in ocs):
        return np.zeros(ct.base_lanes_g.shape[1])
    return ct.key_min_lanes().min(0)


def work_bound(ct: CostTables) -> float:
    """The mean rank (see module docstring)."""
    n = len(ct.tables)
    total = ct.base_lanes.sum(0) + (sum(least_work_lanes(ct, ti) for ti in range(n)) if n else 0)
    keys = [ct.key_cost(k)[0].sum(0) for k in range(len(ct.keys))]
    if keys and not any(oc.key < 0 for ocs in ct.options for oc in ocs):
        total = total + np.minimum.reduce(keys)
    return ct.step.makespan((total / ct.world)[None, :])


def _everywhere_least(ct: CostTables) -> tuple[np.ndarray, list[np.ndarray]]:
    """(sum over tables, per table) of the least per-lane cost a table puts on every rank."""
    per = [np.minimum.reduce([oc.certain_lanes for oc in ocs]) if ocs
           else np.zeros(ct.base_lanes_g.shape[1]) for ocs in ct.options]
    return (np.sum(per, axis=0) if per else np.zeros(ct.base_lanes_g.shape[1])), per


def _key_lanes(ct: CostTables, k: int) -> np.ndarray:
    return ct.key_min_lanes()[k] if k >= 0 else np.zeros(ct.base_lanes_g.shape[1])


def _single(ct: CostTables) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    base = ct.base_lanes.min(0)
    total, per = _everywhere_least(ct)
    single = []
    for ti, ocs in enumerate(ct.options):
        if not ocs:
            single.append(ct.step.rank_time_lanes(base))
            continue
        rest = base + total - per[ti]
        rows = np.array([rest + oc.peak_lanes + _key_lanes(ct, oc.key) for oc in ocs])
        single.append(float(ct.step.compose(stage_max(rows)).min()))
    return np.array(single), total, per


def unit_bound(ct: CostTables) -> float:
    """The largest indivisible unit (see module docstring)."""
    single, _, _ = _single(ct)
    base = ct.step.rank_time_lanes(ct.base_lanes.min(0))
    return float(single.max()) if len(single) else base


def pair_bound(ct: CostTables, pair_tables: int = PAIR_TABLES) -> float:
    """The single-table and pairwise largest-unit bound (see module docstring)."""
    single, total, per = _single(ct)
    if not len(single):
        return ct.step.rank_time_lanes(ct.base_lanes.min(0))
    best = float(single.max())
    base = ct.base_lanes.min(0)
    top = [int(i) for i in np.argsort(-single, kind="stable")[:pair_tables] if ct.options[int(i)]]
    arrays = {}
    for t in top:
        ocs = ct.options[t]
        arrays[t] = (np.array([oc.peak_lanes for oc in ocs]), np.array([oc.certain_lanes for oc in ocs]),
                     np.array([_key_lanes(ct, oc.key) for oc in ocs]), np.array([oc.key for oc in ocs]))
    step = ct.step
    for a_i, a in enumerate(top):
        pa, ca, ka, ia = arrays[a]
        for b in top[a_i + 1:]:
            pb_, cb, kb, ib = arrays[b]
            rest = base + total - per[a] - per[b]
            keys = ka[:, None, :] + np.where((ia[:, None] == ib[None, :])[..., None], 0.0,
                                             kb[None, :, :])
            v1 = step.compose(stage_max(rest + keys + pa[:, None, :] + cb[None, :, :]))
            v2 = step.compose(stage_max(rest + keys + ca[:, None, :] + pb_[None, :, :]))
            best = max(best, float(np.maximum(v1, v2).min()))
    return best


def heaviest_shard(ct: CostTables, oc, groups: list[int]) -> tuple[float, np.ndarray]:
    """(its step time alone, its lanes) of ``oc``'s heaviest shard, each shard at a lower
    bound of its lanes: a fixed shard on its own rank's group, a movable one at the least per
    lane over the groups; (0, zeros) for an option with no shards."""
    if not oc.num_shards:
        return 0.0, np.zeros(ct.base_lanes_g.shape[1])
    if oc.fixed is not None:
        sh = oc.lanes_g[np.arange(oc.num_shards), ct.group_of[oc.fixed]]
    else:
        sh = oc.lanes_g[:, groups].min(1)
    t = ct.step.compose(stage_max(sh))
    k = int(np.argmax(t))
    return float(t[k]), sh[k]


def coupled_bound(ct: CostTables) -> float:
    """The coupled heaviest-shard / mean-rank bound (see module docstring), vectorised over
    every option as a threshold candidate: O(options x lanes) after one sort."""
    n = len(ct.tables)
    L = ct.base_lanes_g.shape[1]
    if not n or any(not ocs for ocs in ct.options):
        return work_bound(ct)
    groups = sorted(set(ct.group_of.tolist()))
    hs, peaks, certs, works, tabs = [], [], [], [], []
    for ti, ocs in enumerate(ct.options):
        for oc in ocs:
            ev = oc.every_lanes_g[groups].min(0)
            h, heavy = heaviest_shard(ct, oc, groups)
            hs.append(h)
            peaks.append(heavy + ev + _key_lanes(ct, oc.key))
            certs.append(np.asarray(oc.certain_lanes, dtype=float))
            works.append(np.asarray(oc.work_lanes, dtype=float))
            tabs.append(ti)
    h = np.array(hs)
    order = np.lexsort((np.array(tabs), h))
    h, tabs_a = h[order], np.array(tabs)[order]
    peaks_a = np.array(peaks)[order]
    certs_a, works_a = np.array(certs)[order], np.array(works)[order]
    m = len(h)
    # per table, the running least certain / work lanes over its options in threshold order;
    # each option's arrival changes the totals by (new running min - old running min)
    d_cert = np.zeros((m, L))
    d_work = np.zeros((m, L))
    first = np.zeros(m)
    run_cert: dict[int, np.ndarray] = {}
    run_work: dict[int, np.ndarray] = {}
    own_cert = np.zeros((m, L))  # the table's running min after this option arrives
    for i in range(m):
        t = int(tabs_a[i])
        c_old, w_old = run_cert.get(t), run_work.get(t)
        if c_old is None:
            c_new, w_new = certs_a[i], works_a[i]
            d_cert[i], d_work[i], first[i] = c_new, w_new, 1.0
        else:
            c_new, w_new = np.minimum(c_old, certs_a[i]), np.minimum(w_old, works_a[i])
            d_cert[i], d_work[i] = c_new - c_old, w_new - w_old
        run_cert[t], run_work[t] = c_new, w_new
        own_cert[i] = c_new
    # totals once every option of threshold <= h has arrived (ties: the last of equal h)
    last = np.searchsorted(h, h, side="right") - 1
    s_cert = np.cumsum(d_cert, 0)[last]
    s_work = np.cumsum(d_work, 0)[last]
    covered = np.cumsum(first)[last] >= n
    if not covered.any():
        return work_bound(ct)
    base_min = ct.base_lanes_g[groups].min(0)
    # the heaviest-shard rank: the option's shard and everywhere-cost, the other tables'
    # least everywhere-costs (the table's own running min taken out), the overhead; the
    # table's own running min can only be below its option's certain lanes, so subtracting
    # it keeps the rest a lower bound
    rank = base_min + peaks_a + s_cert - own_cert
    g = ct.step.compose(stage_max(np.maximum(rank, 0.0)))
    total = ct.base_lanes.sum(0) + s_work
    keys = [ct.key_cost(k)[0].sum(0) for k in range(len(ct.keys))]
    if keys and not any(oc.key < 0 for ocs in ct.options for oc in ocs):
        total = total + np.minimum.reduce(keys)
    w = ct.step.compose(stage_max(total / ct.world))
    vals = np.maximum(g, w)[covered]
    return float(vals.min())


def cheap_parts(ct: CostTables) -> dict[str, float]:
    """The work, largest-unit, pair and coupled bounds by name (computed once, kept in
    ``ct.memo``)."""
    v = ct.memo.get("cheap_parts")
    if v is None:
        v = ct.memo["cheap_parts"] = {"work": work_bound(ct), "unit": unit_bound(ct),
                                      "pair": pair_bound(ct), "coupled": coupled_bound(ct)}
    return dict(v)


def cheap_bound(ct: CostTables) -> float:
    """The best of the work, largest-unit, pair and coupled bounds."""
    return max(cheap_parts(ct).values())


#: Largest number of options (LP columns) :func:`mix_bound` solves for.
MIX_MAX_OPTIONS = 20_000


def mix_bound(ct: CostTables, *, max_options: int = MIX_MAX_OPTIONS) -> float | None:
    """The work and heaviest-shard bounds with each table's option chosen as one mix.

    The separate bounds take each lane's least over a table's options, so one table counts as
    data-parallel on the communication lanes and table-wise on the compute lanes. This LP
    picks one convex mix of options per table for all lanes at once (``x[t, o] >= 0``,
    ``sum_o x[t, o] = 1``) and minimises the step time ``T`` subject to:

    * the mean rank: ``T >= compose(stage times of (base + sum x * work_lanes) / world)``;
    * for every table ``t``, the rank that holds its heaviest shard: it pays that shard and
      the option's everywhere-cost, the overhead, and every other table's everywhere-cost:
      ``T >= compose(stages of base + sum_o x[t, o] (peak(o) - certain(o)) + C)`` with ``C =
      sum x * certain + sum_k g[k] * (least per-rank cost of group k)`` (lanes);
    * sharding groups: ``g[k] >= sum of x[t, o] over table t's options in group k``, for every
      table (group k's fixed cost is paid once if any table uses it), and at least one group
      when every option has one;
    * with synchronized stages (each stage costs its slowest rank): per stage, ``Z_s`` at least
      the mean rank's and every table's heaviest-shard rank's stage time at once, and
      ``T >= compose(Z)``: different tables may set different stages.

    Every integer plan satisfies both (each table's heaviest shard is on some rank), so the
    optimum is a lower bound. Stage times are per-stage auxiliaries ``z >= lane``; the
    composition (pipelined: ``T >= a + u b`` and ``T >= b + u a``, a the input dist, b the
    sum of the other stages, u = 1 - overlap) is linear.
    Returns None when the LP has more than ``max_options`` columns or HiGHS does not
    reach optimality.
    """
    key = f"mix_bound:{max_options}"  # auto and the planner's bound share one solve
    if key not in ct.memo:
        ct.memo[key] = _mix_bound(ct, max_options)
    return ct.memo[key]


def _mix_bound(ct: CostTables, max_options: int) -> float | None:
    import highspy

    from shardplan.types import STAGE_LANE_INDEX

    n = len(ct.tables)
    if not n or any(not ocs for ocs in ct.options):
        return None
    nopt = sum(len(ocs) for ocs in ct.options)
    if nopt > max_options:
        return None
    L = ct.base_lanes_g.shape[1]
    S = len(STAGE_LANE_INDEX)
    groups = sorted(set(ct.group_of.tolist()))
    work = np.zeros((nopt, L))
    cert = np.zeros((nopt, L))
    extra = np.zeros((nopt, L))  # peak - certain
    tab = np.zeros(nopt, dtype=np.int64)
    i = 0
    for ti, ocs in enumerate(ct.options):
        for oc in ocs:
            work[i] = oc.work_lanes
            cert[i] = oc.certain_lanes
            ev = oc.every_lanes_g[groups].min(0)
            _, heavy = heaviest_shard(ct, oc, groups)
            extra[i] = np.maximum(heavy + ev - oc.certain_lanes, 0.0)
            tab[i] = ti
            i += 1
    base_total = ct.base_lanes.sum(0)
    base_min = ct.base_lanes_g[groups].min(0)
    # sharding groups: g_k >= x[t, o] for o in group k; each rank pays at least the least
    # per-rank cost of every group used, the mean rank the group's total over ranks / world
    K = len(ct.keys)
    key_of = np.array([oc.key for ocs in ct.options for oc in ocs], dtype=np.int64)
    key_min = np.zeros((K, L))
    key_mean = np.zeros((K, L))
    for k in range(K):
        lanes_k = ct.key_cost(k)[0]
        key_min[k], key_mean[k] = lanes_k.min(0), lanes_k.sum(0) / ct.world
    # columns: x (nopt) | C (L) | zm (S) | y (n x S) | g (K) | T | Z (S, synchronized only)
    c_C, c_zm, c_y = nopt, nopt + L, nopt + L + S
    c_g = c_y + n * S
    c_T = c_g + K
    sync = ct.step.composition is Composition.SYNCHRONIZED
    c_Z = c_T + 1
    ncol = c_Z + (S if sync else 0)
    rows_i: list[np.ndarray] = []
    rows_j: list[np.ndarray] = []
    rows_v: list[np.ndarray] = []
    lo: list[float] = []
    hi: list[float] = []
    r = 0

    def add(cols: np.ndarray, vals: np.ndarray, low: float, high: float) -> None:
        nonlocal r
        rows_i.append(np.full(len(cols), r, dtype=np.int64))
        rows_j.append(np.asarray(cols, dtype=np.int64))
        rows_v.append(np.asarray(vals, dtype=float))
        lo.append(low)
        hi.append(high)
        r += 1

    inf = highspy.kHighsInf
    xs = np.arange(nopt)
    starts = np.searchsorted(tab, np.arange(n))
    ends = np.searchsorted(tab, np.arange(n), side="right")
    for ti in range(n):  # one mix per table
        cols = xs[starts[ti]:ends[ti]]
        add(cols, np.ones(len(cols)), 1.0, 1.0)
    for ti in range(n):  # g_k >= sum of x[t, o] over table t's options in group k
        lo_t, hi_t = starts[ti], ends[ti]
        for k in sorted(set(key_of[lo_t:hi_t].tolist()) - {-1}):
            cols = xs[lo_t:hi_t][key_of[lo_t:hi_t] == k]
            add(np.append(cols, c_g + k), np.append(np.ones(len(cols)), -1.0), -inf, 0.0)
    if K and (key_of >= 0).all():  # every plan uses at least one group
        add(c_g + np.arange(K), np.ones(K), 1.0, inf)
    gs = c_g + np.arange(K)
    for l in range(L):  # C_l = sum x * certain_l + sum g * key_min_l
        add(np.concatenate([xs, gs, [c_C + l]]),
            np.concatenate([cert[:, l], key_min[:, l], [-1.0]]), 0.0, 0.0)
    stage_of = {l: s for s, ix in enumerate(STAGE_LANE_INDEX) for l in ix}
    for l in range(L):  # world * zm_s >= base_total_l + sum x * work_l + sum g * key total
        s = stage_of[l]
        add(np.concatenate([xs, gs, [c_zm + s]]),
            np.concatenate([work[:, l], key_mean[:, l] * ct.world, [-float(ct.world)]]), -inf,
            -float(base_total[l]))

    def compose_rows(zcols: np.ndarray) -> None:
        if ct.step.pipelined:  # T >= max(a + u b, b + u a), u = 1 - overlap (StepModel)
            u = ct.step.unhidden
            add(np.append(zcols, c_T), np.concatenate([[1.0], np.full(S - 1, u), [-1.0]]),
                -inf, 0.0)
            add(np.append(zcols, c_T), np.concatenate([[u], np.ones(S - 1), [-1.0]]), -inf, 0.0)
        else:
            add(np.append(zcols, c_T), np.append(np.ones(S), -1.0), -inf, 0.0)

    compose_rows(c_zm + np.arange(S))
    for ti in range(n):  # the rank holding table ti's heaviest shard
        cols = xs[starts[ti]:ends[ti]]
        zc = c_y + ti * S + np.arange(S)
        for l in range(L):
            # base_min_l + sum_o x (peak - certain)_l + C_l <= y_{t, s(l)}
            add(np.concatenate([cols, [c_C + l, zc[stage_of[l]]]]),
                np.concatenate([extra[cols, l], [1.0, -1.0]]), -inf, -float(base_min[l]))
        compose_rows(zc)
    if sync:
        # synchronized stages: each stage costs its slowest rank, so its time Z_s is at least
        # every table's heaviest-shard rank's (y_{t, s}) and the mean rank's (zm_s) at once,
        # though different tables (and ranks) may set different stages
        for si in range(S):
            for ti in range(n):
                add(np.array([c_Z + si, c_y + ti * S + si]), np.array([1.0, -1.0]), 0.0, inf)
            add(np.array([c_Z + si, c_zm + si]), np.array([1.0, -1.0]), 0.0, inf)
        compose_rows(c_Z + np.arange(S))
    I = np.concatenate(rows_i)
    J = np.concatenate(rows_j)
    V = np.concatenate(rows_v)
    order = np.lexsort((I, J))  # column-wise
    I, J, V = I[order], J[order], V[order]
    lp = highspy.HighsLp()
    lp.num_col_ = ncol
    lp.num_row_ = r
    cost = np.zeros(ncol)
    cost[c_T] = 1.0
    lp.col_cost_ = cost
    lower = np.zeros(ncol)
    upper = np.full(ncol, inf)
    upper[:nopt] = 1.0
    upper[c_g:c_g + K] = 1.0
    lp.col_lower_ = lower
    lp.col_upper_ = upper
    lp.row_lower_ = np.array(lo)
    lp.row_upper_ = np.array(hi)
    lp.a_matrix_.format_ = highspy.MatrixFormat.kColwise
    lp.a_matrix_.start_ = np.searchsorted(J, np.arange(ncol + 1)).astype(np.int32)
    lp.a_matrix_.index_ = I.astype(np.int32)
    lp.a_matrix_.value_ = V
    silence_highs_banner()
    h = highspy.Highs()
    h.setOptionValue("output_flag", False)
    h.setOptionValue("threads", 1)
    h.passModel(lp)
    h.run()
    if h.getModelStatus() != highspy.HighsModelStatus.kOptimal:
        return None
    # HiGHS's feasibility tolerance: shave it off so the bound stays below every plan
    return float(h.getInfo().objective_function_value) * (1 - 1e-7)
