"""Lower bounds on the step time any plan can reach under a cost model.

Bounds, each valid for every plan that uses the enumerated options (``StepModel`` composes a
rank's lanes; the step time is at least the composed time of any one rank, and at least the
composed time of the mean rank, since composition is convex and monotone):

* ``work``: the mean rank. Every rank pays its fixed overhead; every table adds, on each lane,
  at least its least total over its options; the plan uses at least one sharding group, whose
  fixed cost is at least the least over groups, per lane.
* ``unit``: the largest indivisible unit. For each table and each of its options: the rank
  holding the option's heaviest shard pays that shard, the option's everywhere-cost and its
  sharding group's fixed cost, plus the fixed overhead and every other table's least
  everywhere-cost; the table's bound is the least over its options, the bound the largest over
  tables.
* ``pair``: the largest unit, sharpened for pairs of the ``PAIR_TABLES`` tables with the
  largest single bound: the two tables' options chosen together, so two hot tables cannot both
  hide in ``min``. Some rank holds table a's heaviest shard and pays at least what b's option
  costs every rank (its everywhere-cost, plus shards fixed on every rank, as data-parallel
  replicas are), and the same with a and b swapped.
* ``lp``: the LP relaxation of the placement MIP (``shardplan.solvers.ilp``) over all options,
  with the largest-shard cuts; it also sees memory, which can force slower placements. Solved
  only when the model is small enough (``lp_max_vars``), within ``lp_time_limit_s`` (a safety
  net; the LP itself is solved to optimality).

The bound reported is the largest of those computed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from shardplan.solvers.common import CostTables, TableGroups, least_work_lanes
from shardplan.types import PlanningContext

#: Largest LP relaxation (variables) the planner solves for a bound by default.
DEFAULT_LP_MAX_VARS = 8_000
#: Safety-net time limit of the LP relaxation, seconds.
DEFAULT_LP_TIME_LIMIT_S = 30.0
#: Tables whose pairs the pair bound tries (the heaviest by their single-table bound).
PAIR_TABLES = 20


@dataclass(frozen=True, kw_only=True, slots=True)
class LowerBound:
    """A lower bound on the step time, ms, and the parts it is the largest of.

    Attributes:
        value_ms: the bound.
        work_ms: the mean rank.
        unit_ms: the largest indivisible unit.
        pair_ms: the pair bound.
        lp_ms: the LP relaxation, if solved.
        method: which of them gave ``value_ms``.
    """

    value_ms: float
    work_ms: float
    unit_ms: float
    lp_ms: float | None
    method: str
    pair_ms: float = 0.0

    def as_dict(self) -> dict[str, object]:
        return {"value_ms": self.value_ms, "work_ms": self.work_ms, "unit_ms": self.unit_ms,
                "pair_ms": self.pair_ms, "lp_ms": self.lp_ms, "method": self.method}


def _least_group_lanes(ct: CostTables) -> np.ndarray:
    """Per lane, the least a rank pays for the sharding group(s) of any plan (0 if some option
    joins no group)."""
    if not ct.keys or any(oc.key < 0 for ocs in ct.options for oc in ocs):
        return np.zeros(ct.base_lanes_g.shape[1])
    return np.minimum.reduce([ct.key_cost(k)[0].min(0) for k in range(len(ct.keys))])


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
    return ct.key_cost(k)[0].min(0) if k >= 0 else np.zeros(ct.base_lanes_g.shape[1])


def _single(ct: CostTables) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    base = ct.base_lanes.min(0)
    total, per = _everywhere_least(ct)
    single = []
    for ti, ocs in enumerate(ct.options):
        if not ocs:
            single.append(ct.step.rank_time_lanes(base))
            continue
        rest = base + total - per[ti]
        single.append(min(ct.step.rank_time_lanes(rest + oc.peak_lanes + _key_lanes(ct, oc.key))
                          for oc in ocs))
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
            v1 = step.compose(step.stage_times(rest + keys + pa[:, None, :] + cb[None, :, :]))
            v2 = step.compose(step.stage_times(rest + keys + ca[:, None, :] + pb_[None, :, :]))
            best = max(best, float(np.maximum(v1, v2).min()))
    return best


def lp_bound(ct: CostTables, groups: TableGroups, *, time_limit_s: float = DEFAULT_LP_TIME_LIMIT_S,
             threads: int = 1) -> float | None:
    """The LP relaxation over all options, or None if it did not solve in time."""
    from shardplan.solvers.ilp import build_model, solve_model

    allowed = [list(range(len(ocs))) for ocs in ct.options]
    model = build_model(ct, groups, allowed, relax=True, name="shardplan_lp")
    out = solve_model(model, ct, backend="highs", time_limit_s=time_limit_s, threads=threads,
                      gap=0.0, warm=None, relax=True)
    if out.status != "optimal" or out.objective is None:
        return None
    return out.objective


def lower_bound(ctx: PlanningContext, ct: CostTables | None = None, *,
                lp_max_vars: int = DEFAULT_LP_MAX_VARS,
                lp_time_limit_s: float = DEFAULT_LP_TIME_LIMIT_S) -> LowerBound:
    """The best of the work, unit, pair and (when affordable) LP bounds for ``ctx``.

    Args:
        ctx: the planning problem.
        ct: its cost tables, if already built.
        lp_max_vars: solve the LP relaxation only when the model has at most this many
            variables (0: never).
        lp_time_limit_s: safety-net time limit for the LP.

    Returns:
        The bound, with its parts.
    """
    from shardplan.solvers.ilp import model_size

    ct = ct or CostTables.of(ctx)
    w, u, pb = work_bound(ct), unit_bound(ct), pair_bound(ct)
    lp = None
    allowed = [list(range(len(ocs))) for ocs in ct.options]
    if lp_max_vars > 0 and model_size(ct, allowed) <= lp_max_vars:
        lp = lp_bound(ct, TableGroups.of(ctx, ct), time_limit_s=lp_time_limit_s,
                      threads=ctx.threads)
    parts = {"work": w, "unit": u, "pair": pb, "lp": lp if lp is not None else float("-inf")}
    method = max(parts, key=lambda k: (parts[k], k))
    # the LP optimum is exact only to the LP solver's tolerance: shave 1e-9 relative
    value = max(w, u, pb, (lp * (1 - 1e-9)) if lp is not None else 0.0)
    return LowerBound(value_ms=value, work_ms=w, unit_ms=u, pair_ms=pb, lp_ms=lp, method=method)
