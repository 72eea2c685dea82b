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
* ``coupled``: the largest unit and the mean rank at once. Every plan has a heaviest shard: at
  some threshold ``h`` (a shard's step time alone), one table's option has a shard of time
  ``h`` and no table's option has a heavier one. The rank that holds that shard pays it, that
  option's everywhere-cost and group cost, the fixed overhead, and every other table's
  everywhere-cost under an option whose heaviest shard is at most ``h``; and the mean rank
  carries every table's least work under such an option. So the step time is at least
  ``min over h of max(G(h), W(h))``: splitting tables finer (a small ``h``) is paid for in
  everywhere-costs and work, keeping them whole (a large ``h``) by the rank that holds the
  heaviest piece. This is what holds few heavy tables on many GPUs to account, where the
  separate bounds each assume the best of both.
* ``mix``: the work and heaviest-shard bounds with one convex mix of options per table for
  all lanes at once, and the sharding groups' fixed costs (an LP; see
  ``shardplan.solvers.bounds.mix_bound``): the separate bounds take each lane's least over a
  table's options, as if a table could be data-parallel on some lanes and table-wise on
  others.
* ``lp``: the LP relaxation of the placement MIP (``shardplan.solvers.ilp``) over all options,
  with the largest-shard cuts; it also sees memory, which can force slower placements. Solved
  only when the model is small enough (``lp_max_vars``), within ``lp_time_limit_s`` (a safety
  net; the LP itself is solved to optimality).

The bound reported is the largest of those computed.
"""

from __future__ import annotations

from dataclasses import dataclass

from shardplan.solvers.bounds import (
    MIX_MAX_OPTIONS,
    PAIR_TABLES,
    cheap_parts,
    coupled_bound,
    mix_bound,
    pair_bound,
    unit_bound,
    work_bound,
)
from shardplan.solvers.common import CostTables, TableGroups
from shardplan.solvers.ilp import build_model, model_nonzeros, model_size, solve_model
from shardplan.types import MipStatus, PlanningContext

__all__ = ["DEFAULT_LP_MAX_NONZEROS", "DEFAULT_LP_MAX_VARS", "DEFAULT_LP_TIME_LIMIT_S",
           "PAIR_TABLES", "LowerBound", "coupled_bound", "lower_bound", "lp_bound", "mix_bound",
           "pair_bound", "unit_bound", "work_bound"]

#: Largest LP relaxation (variables) the planner solves for a bound by default.
DEFAULT_LP_MAX_VARS = 8_000
#: Largest LP relaxation (estimated coefficients, ``model_nonzeros``) it solves by default: the
#: bundled problems that get the LP have at most about 50,000; a problem of few options with
#: many fixed shards or everywhere-costs on 1,024 ranks can have millions, and minutes of
#: model building.
DEFAULT_LP_MAX_NONZEROS = 500_000
#: Safety-net time limit of the LP relaxation, seconds.
DEFAULT_LP_TIME_LIMIT_S = 30.0


@dataclass(frozen=True, kw_only=True, slots=True)
class LowerBound:
    """A lower bound on the step time, ms, and the parts it is the largest of.

    Attributes:
        value_ms: the bound.
        work_ms: the mean rank.
        unit_ms: the largest indivisible unit.
        pair_ms: the pair bound.
        coupled_ms: the coupled heaviest-shard / mean-rank bound.
        mix_ms: the mixed-option LP (work and heaviest shards, one mix per table), if solved.
        lp_ms: the LP relaxation, if solved.
        method: which of them gave ``value_ms``.
    """

    value_ms: float
    work_ms: float
    unit_ms: float
    lp_ms: float | None
    method: str
    pair_ms: float = 0.0
    coupled_ms: float = 0.0
    mix_ms: float | None = None

    def as_dict(self) -> dict[str, object]:
        return {"value_ms": self.value_ms, "work_ms": self.work_ms, "unit_ms": self.unit_ms,
                "pair_ms": self.pair_ms, "coupled_ms": self.coupled_ms, "mix_ms": self.mix_ms,
                "lp_ms": self.lp_ms,
                "method": self.method}


def lp_bound(ct: CostTables, groups: TableGroups, *, time_limit_s: float = DEFAULT_LP_TIME_LIMIT_S,
             threads: int = 1) -> float | None:
    """The LP relaxation over all options, or None if it did not solve in time."""
    allowed = [list(range(len(ocs))) for ocs in ct.options]
    model = build_model(ct, groups, allowed, relax=True, name="shardplan_lp")
    out = solve_model(model, ct, backend="highs", time_limit_s=time_limit_s, threads=threads,
                      gap=0.0, warm=None, relax=True)
    if out.status is not MipStatus.OPTIMAL or out.objective is None:
        return None
    return out.objective


def lower_bound(ctx: PlanningContext, ct: CostTables | None = None, *,
                lp_max_vars: int = DEFAULT_LP_MAX_VARS,
                lp_max_nonzeros: int = DEFAULT_LP_MAX_NONZEROS,
                lp_time_limit_s: float = DEFAULT_LP_TIME_LIMIT_S,
                mix_max_options: int = MIX_MAX_OPTIONS) -> LowerBound:
    """The best of the work, unit, pair and (when affordable) LP bounds for ``ctx``.

    Args:
        ctx: the planning problem.
        ct: its cost tables, if already built.
        lp_max_vars: solve the LP relaxation only when the model has at most this many
            variables (0: never) ...
        lp_max_nonzeros: ... and about this many coefficients (``model_nonzeros``).
        lp_time_limit_s: safety-net time limit for the LP.
        mix_max_options: solve the mixed-option LP only up to this many options (0: never).

    Returns:
        The bound, with its parts.
    """
    ct = ct or CostTables.of(ctx)
    cheap = cheap_parts(ct)
    w, u, pb, cb = cheap["work"], cheap["unit"], cheap["pair"], cheap["coupled"]
    mx = mix_bound(ct, max_options=mix_max_options) if mix_max_options > 0 else None
    lp = None
    allowed = [list(range(len(ocs))) for ocs in ct.options]
    if (lp_max_vars > 0 and model_size(ct, allowed) <= lp_max_vars
            and model_nonzeros(ct, allowed) <= lp_max_nonzeros):
        lp = lp_bound(ct, TableGroups.of(ctx, ct), time_limit_s=lp_time_limit_s,
                      threads=ctx.threads)
    parts = {"work": w, "unit": u, "pair": pb, "coupled": cb,
             "mix": mx if mx is not None else float("-inf"),
             "lp": lp if lp is not None else float("-inf")}
    method = max(parts, key=lambda k: (parts[k], k))
    # the LP optimum is exact only to the LP solver's tolerance: shave 1e-9 relative
    value = max(w, u, pb, cb, mx or 0.0, (lp * (1 - 1e-9)) if lp is not None else 0.0)
    return LowerBound(value_ms=value, work_ms=w, unit_ms=u, pair_ms=pb, coupled_ms=cb, mix_ms=mx,
                      lp_ms=lp, method=method)
