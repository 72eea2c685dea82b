"""Lower bounds on the makespan any plan can reach under a cost model.

Bounds, each valid for every plan that uses the enumerated options:

* ``work``: total work / ranks. Every rank pays its fixed overhead; every table adds at least
  its least-work option (each shard on its cheapest host group, plus the everywhere-costs all
  ranks pay); the slowest rank is at least the mean.
* ``unit``: the largest indivisible unit. Some rank holds each table's largest shard and also
  pays the least fixed overhead and every table's least everywhere-cost.
* ``pair``: the largest unit, sharpened: per option o, ``e_o`` is what it certainly costs every
  rank (everywhere-costs, plus shards fixed on every rank, as data-parallel replicas are) and
  ``h_o`` what it costs the rank it loads most. Some rank pays ``h_o`` of its table's option,
  at least ``e`` of every other table's option, and the fixed overhead. Taken for every table
  alone and for every pair of the ``PAIR_TABLES`` tables with the largest single bound
  (the pair's options chosen together, so two hot tables cannot both hide in ``min``).
* ``lp``: the LP relaxation of the placement MIP (``shardplan.solvers.ilp``) over all options,
  with the largest-shard cuts; it also sees memory, which can force slower placements. Solved
  only when the model is small enough (``lp_max_vars``).

The bound reported is the largest of those computed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from shardplan.solvers.common import CostTables, TableGroups
from shardplan.types import PlanningContext

#: Largest LP relaxation (variables) the planner solves for a bound by default.
DEFAULT_LP_MAX_VARS = 8_000
#: Tables whose pairs the pair bound tries (the heaviest by their single-table bound).
PAIR_TABLES = 30


@dataclass(frozen=True, kw_only=True, slots=True)
class LowerBound:
    """A lower bound on the makespan, ms, and the parts it is the largest of.

    Attributes:
        value_ms: the bound.
        work_ms: total work / ranks.
        unit_ms: the largest indivisible unit.
        lp_ms: the LP relaxation, if solved.
        method: which of the three gave ``value_ms``.
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


def work_bound(ct: CostTables) -> float:
    """Total work / ranks (see module docstring)."""
    return (float(ct.base_time.sum()) + sum(ct.table_weight)) / ct.world


def unit_bound(ct: CostTables) -> float:
    """The largest indivisible unit (see module docstring)."""
    every = sum(min((float(oc.every_time.min()) for oc in ocs), default=0.0) for ocs in ct.options)
    biggest = max((min((oc.max_shard_ms for oc in ocs), default=0.0) for ocs in ct.options),
                  default=0.0)
    return float(ct.base_time.min()) + every + biggest


def _certain_and_peak(ct: CostTables, ti: int) -> tuple[np.ndarray, np.ndarray]:
    """Per option of table ``ti``: (e, h) = least and (a lower bound on the) largest time it
    adds to one rank."""
    e, h = [], []
    for oc in ct.options[ti]:
        if oc.fixed is not None:
            per_rank = oc.every_time.copy()
            g = ct.group_of[oc.fixed]
            np.add.at(per_rank, oc.fixed, oc.time_g[np.arange(len(oc.fixed)), g])
            e.append(float(per_rank.min()))
            h.append(float(per_rank.max()))
        else:
            ev = float(oc.every_time.min())
            e.append(ev)
            h.append(ev + oc.max_shard_ms)
    return np.array(e), np.array(h)


def pair_bound(ct: CostTables, pair_tables: int = PAIR_TABLES) -> float:
    """The single-table and pairwise largest-unit bound (see module docstring)."""
    eh = [_certain_and_peak(ct, ti) for ti in range(len(ct.options)) if len(ct.options[ti])]
    if not eh:
        return float(ct.base_time.min())
    big_e = np.array([e.min() for e, _ in eh])
    total_e = float(big_e.sum())
    base = float(ct.base_time.min())
    single = np.array([base + total_e - float(big_e[i]) + float(h.min())
                       for i, (_, h) in enumerate(eh)])
    best = float(single.max())
    top = [int(i) for i in np.argsort(-single, kind="stable")[:pair_tables]]
    for a_i, a in enumerate(top):
        e1, h1 = eh[a]
        for b in top[a_i + 1:]:
            e2, h2 = eh[b]
            both = np.maximum(h1[:, None] + e2[None, :], e1[:, None] + h2[None, :])
            best = max(best, base + total_e - float(big_e[a] + big_e[b]) + float(both.min()))
    return best


def lp_bound(ct: CostTables, groups: TableGroups, *, time_limit_s: float = 30.0,
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
                lp_max_vars: int = DEFAULT_LP_MAX_VARS, lp_time_limit_s: float = 30.0
                ) -> LowerBound:
    """The best of the work, unit and (when affordable) LP bounds for ``ctx``.

    Args:
        ctx: the planning problem.
        ct: its cost tables, if already built.
        lp_max_vars: solve the LP relaxation only when the model has at most this many
            variables (0: never).
        lp_time_limit_s: time limit for the LP.

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
