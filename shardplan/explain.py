"""Why a table got its sharding: every option it had, weighed against the rest of the plan.

:func:`explain_table` re-enumerates a table's options as the planner saw them (its pruning
and host rotation included), then without the pruning and with the table's constraints
lifted, to show what each rules out; costs every option under the plan's own cost model
(:func:`~shardplan.estimators.recorded.cost_model_of`) and, for each that fits, the plan's
makespan if that option replaced the chosen one, its shards placed on the least-loaded ranks
with room and the rest of the plan unchanged. ``shardplan explain`` prints the result.

Example:
    >>> from shardplan import load_problem, plan
    >>> from shardplan.explain import Verdict, explain_table
    >>> topo, work = load_problem("cpu-4")
    >>> verdicts, makespan = explain_table(plan(work, topo, solver="greedy"), "t0")
    >>> verdicts[0].verdict is Verdict.CHOSEN
    True
"""

from __future__ import annotations

import dataclasses
import math
from enum import StrEnum
from typing import Any, Sequence

import numpy as np

from shardplan.assignments import option_of
from shardplan.enumerators import enumerate_options, enumerate_table
from shardplan.errors import SpecError
from shardplan.estimators.recorded import cost_model_of
from shardplan.plans import rank_costs
from shardplan.types import (
    Assignment,
    CostModel,
    Plan,
    ShardingOption,
    TableConstraints,
    TablePlan,
)
from shardplan.units import GiB


#: Makespans within this relative difference are a tie (plans record times to 1e-6 ms, and
#: the weighing adds the option's shards back in another order).
TIE_RTOL = 1e-6


class Verdict(StrEnum):
    """What an option of a table came to, best first (the order :func:`explain_table` sorts
    by): the plan's choice; fits and would lower the makespan (with the rest of the plan
    fixed: the solver missed it); fits and would leave it as it is (a tie); fits but would
    raise it; does not fit in memory; pruned by the enumeration at this instance size; ruled
    out by the table's constraints."""

    CHOSEN = "chosen"
    LOWER_COST = "lower cost"
    NOT_BETTER = "not better"
    HIGHER_COST = "higher cost"
    MEMORY = "memory"
    NOT_OFFERED = "not offered"
    CONSTRAINT = "constraint"


_VERDICT_ORDER = {v: i for i, v in enumerate(Verdict)}


@dataclasses.dataclass(frozen=True, kw_only=True, slots=True)
class OptionVerdict:
    """One sharding option of a table, weighed against the plan.

    Attributes:
        option: the option.
        work_ms: the time it adds, summed over all ranks (its shards plus its everywhere-cost).
        hbm_bytes, ddr_bytes: the memory it adds, summed over all ranks.
        makespan_ms: the plan's makespan if this option replaced the chosen one, its shards
            placed greedily (least-loaded rank with room), the rest of the plan unchanged;
            None when it does not fit or a constraint rules it out.
        verdict: a :class:`Verdict` (``lower cost``: fits and would lower the makespan; ``not
            better``: fits and would leave it unchanged, within :data:`TIE_RTOL`).
        reason: a sentence.
        alternatives: how many options of the same kind (e.g. one per host) this row stands for.
    """

    option: ShardingOption
    work_ms: float
    hbm_bytes: float
    ddr_bytes: float
    makespan_ms: float | None
    verdict: Verdict
    reason: str
    alternatives: int = 1


def _shape_key(o: ShardingOption) -> tuple[Any, ...]:
    return (o.sharding_type, str(o.placement),
            tuple((s.row_offset, s.num_rows, s.col_offset, s.num_cols) for s in o.shards))


def _matches(o: ShardingOption, t: TablePlan) -> bool:
    if _shape_key(o) != _shape_key(option_of(t)):
        return False
    return all(c is None or s.rank in c for c, s in zip(o.candidate_ranks, t.shards))


def _constraint_reason(o: ShardingOption, c: TableConstraints) -> str:
    if c.sharding_types is not None and o.sharding_type not in c.sharding_types:
        return "sharding_types allows only " + ", ".join(s.value for s in c.sharding_types)
    if c.placements is not None and o.placement.kind not in c.placements:
        return "placements allows only " + ", ".join(p.value for p in c.placements)
    if c.pinned_ranks is not None:
        return f"pinned to ranks {format_ranks(c.pinned_ranks)}; this type spreads over other ranks"
    if c.min_column_shard_width is not None:
        return f"min_column_shard_width {c.min_column_shard_width} rules out narrower shards"
    return "ruled out by the table's constraints"


def format_ranks(ranks: Sequence[int]) -> str:
    """``0-3,8,10-11`` from a list of ranks."""
    rs = sorted(set(ranks))
    out, i = [], 0
    while i < len(rs):
        j = i
        while j + 1 < len(rs) and rs[j + 1] == rs[j] + 1:
            j += 1
        out.append(str(rs[i]) if i == j else f"{rs[i]}-{rs[j]}")
        i = j + 1
    return ",".join(out)


class _Weigher:
    """Rank loads (per lane) of a plan without one table, and what each option of it would do,
    with the plan's makespan composed as the cost model composes it (``cost_model.step``)."""

    def __init__(self, plan: Plan, table: TablePlan, cm: CostModel) -> None:
        topo = plan.topology
        self.cm, self.step = cm, cm.step
        self.groups = np.array([ri.group for ri in topo.ranks])
        self.cap_hbm = np.array([topo.capacity(r).hbm for r in range(topo.world_size)])
        self.cap_ddr = np.array([topo.capacity(r).ddr for r in range(topo.world_size)])
        opts = tuple(option_of(t) for t in plan.tables)
        ranks = tuple(tuple(s.rank for s in t.shards) for t in plan.tables)
        costs = rank_costs(Assignment(options=opts, ranks=ranks), topo, cm)
        self.load = np.array([c.perf.as_tuple() for c in costs])  # [ranks, lanes]
        self.hbm = np.array([c.memory.hbm for c in costs])
        self.ddr = np.array([c.memory.ddr for c in costs])
        self.makespan = float(self.step.makespan(self.load))
        ev, sh = self._costs(option_of(table))
        self.load = self.load - ev[0]
        self.hbm = self.hbm - ev[1]
        self.ddr = self.ddr - ev[2]
        for i, s in enumerate(table.shards):
            t, h, d = sh[i]
            g = self.groups[s.rank]
            self.load[s.rank] -= t[g]
            self.hbm[s.rank] -= h[g]
            self.ddr[s.rank] -= d[g]

    def _costs(self, o: ShardingOption):
        """Everywhere-cost per rank (lanes, hbm, ddr arrays) and per shard per group."""
        ng = int(self.groups.max()) + 1
        ev = [self.cm.everywhere_cost(o, g) for g in range(ng)]
        ev_t = np.array([e.perf.as_tuple() for e in ev])[self.groups]
        ev_h = np.array([e.memory.hbm for e in ev])[self.groups]
        ev_d = np.array([e.memory.ddr for e in ev])[self.groups]
        per_g = [self.cm.shard_costs(o, g) for g in range(ng)]
        shards = [(np.array([per_g[g][i].perf.as_tuple() for g in range(ng)]),
                   np.array([per_g[g][i].memory.hbm for g in range(ng)]),
                   np.array([per_g[g][i].memory.ddr for g in range(ng)]))
                  for i in range(len(o.shards))]
        return (ev_t, ev_h, ev_d), shards

    def _time(self, lanes: np.ndarray) -> np.ndarray:
        """Each row's step time alone (``step.rank_time`` of lane rows)."""
        return np.atleast_1d(self.step.compose(self.step.stage_times(lanes)))

    def weigh(self, o: ShardingOption) -> tuple[float, float, float, float | None, str]:
        """(work ms, hbm bytes, ddr bytes, makespan or None, why it does not fit)."""
        (ev_t, ev_h, ev_d), shards = self._costs(o)
        work = float(self._time(ev_t).sum())
        load, hbm, ddr = self.load + ev_t, self.hbm + ev_h, self.ddr + ev_d
        work_hbm, work_ddr = float(ev_h.sum()), float(ev_d.sum())
        why = ""
        if (hbm > self.cap_hbm).any() or (ddr > self.cap_ddr).any():
            r = int(np.argmax(np.maximum(hbm - self.cap_hbm, ddr - self.cap_ddr)))
            why = (f"its per-rank buffers alone overflow rank {r} "
                   f"(HBM {hbm[r] / GiB:.2f} of {self.cap_hbm[r] / GiB:.2f} GiB)")
        n = len(self.groups)
        for i, (t, h, d) in enumerate(shards):
            cand = np.array(o.candidate_ranks[i] if o.candidate_ranks[i] is not None else range(n))
            g = self.groups[cand]
            work += float(self._time(t[g]).min())
            work_hbm += float(h[g].min())
            work_ddr += float(d[g].min())
            if why:
                continue
            room = ((hbm[cand] + h[g] <= self.cap_hbm[cand])
                    & (ddr[cand] + d[g] <= self.cap_ddr[cand]))
            if not room.any():
                j = int(np.argmax(self.cap_hbm[cand] - hbm[cand]))
                r = int(cand[j])
                need_h, need_d = float(h[g][j]), float(d[g][j])
                if hbm[r] + need_h > self.cap_hbm[r]:
                    tier = ("HBM", need_h, self.cap_hbm[r] - hbm[r])
                else:
                    tier = ("DDR", need_d, self.cap_ddr[r] - ddr[r])
                why = (f"shard {i} needs {tier[1] / GiB:.2f} GiB {tier[0]}; the most free on "
                       f"its {len(cand)} candidate rank(s) is {max(tier[2], 0) / GiB:.2f} GiB "
                       f"(rank {r})")
                continue
            after = np.where(room, self._time(load[cand] + t[g]), np.inf)
            j = int(np.argmin(after))
            r = int(cand[j])
            load[r] += t[g][j]
            hbm[r] += h[g][j]
            ddr[r] += d[g][j]
        span = None if why else float(self.step.makespan(load))
        return work, work_hbm, work_ddr, span, why


def explain_table(plan: Plan, table: str, cost_model: CostModel | None = None
                  ) -> tuple[list[OptionVerdict], float]:
    """Every sharding option of ``table``, weighed against ``plan``.

    Options are re-enumerated as the planner saw them (:func:`enumerate_options`), then
    without its pruning and with the table's constraints lifted, to show what the pruning
    ("not offered") and the constraints rule out; all are costed with
    ``cost_model`` (default: the model that made the plan, rebuilt by
    :func:`~shardplan.estimators.recorded.cost_model_of`; the default model with a warning if
    the plan names one shardplan cannot rebuild). Options of one kind that differ only in their host (table-row-
    and table-column-wise) are folded into one row, the best of them (or the chosen one).

    Args:
        plan: the plan.
        table: a table name of the plan.
        cost_model: the cost model to weigh options with.

    Returns:
        The verdicts (chosen first, then by makespan) and the plan's makespan under the model.

    Raises:
        SpecError: no such table in the plan.
    """
    try:
        tp = plan.table(table)
        spec = plan.workload.table(table)
    except KeyError:
        names = [t.name for t in plan.tables]
        close = [n for n in names if table.lower() in n.lower()][:5]
        hint = f"; did you mean {', '.join(close)}?" if close else f"; it has {len(names)} tables"
        raise SpecError(f"the plan has no table {table!r}{hint}", key_path="TABLE") from None
    if cost_model is None:
        cost_model = cost_model_of(plan, default_if_unknown=True)
    w = _Weigher(plan, tp, cost_model)
    # what the planner was offered (its pruning and host rotation included), what the table's
    # constraints allow without pruning, and everything with the constraints lifted
    offered = enumerate_options(plan.workload, plan.topology)[table]
    host_start = [t.name for t in plan.workload.tables].index(table) % plan.topology.num_hosts
    allowed = enumerate_table(spec, plan.workload, plan.topology, host_start=host_start)
    free = enumerate_table(dataclasses.replace(spec, constraints=TableConstraints()),
                           plan.workload, plan.topology, host_start=host_start)
    offered_keys = {(_shape_key(o), o.candidate_ranks) for o in offered}
    allowed_keys = {(_shape_key(o), o.candidate_ranks) for o in allowed}
    verdicts: list[OptionVerdict] = []
    found_chosen = False
    for o in free:
        key = (_shape_key(o), o.candidate_ranks)
        if key not in allowed_keys or key not in offered_keys:
            constrained = key not in allowed_keys
            verdicts.append(OptionVerdict(
                option=o, work_ms=math.nan, hbm_bytes=math.nan, ddr_bytes=math.nan,
                makespan_ms=None, verdict=Verdict.CONSTRAINT if constrained else Verdict.NOT_OFFERED,
                reason=_constraint_reason(o, spec.constraints) if constrained else
                "pruned by the enumeration at this instance size (see EnumerationOptions)"))
            continue
        work, hb, db, span, why = w.weigh(o)
        tie = TIE_RTOL * w.makespan + 1e-9
        chosen = not found_chosen and _matches(o, tp)
        if chosen:
            found_chosen = True
            v, reason = Verdict.CHOSEN, f"the plan's choice, on ranks {format_ranks(tp.ranks)}"
        elif span is None:
            v, reason = Verdict.MEMORY, why
        elif span > w.makespan + tie:
            v, reason = Verdict.HIGHER_COST, (f"makespan +{span - w.makespan:.4g} ms "
                                              f"({(span / w.makespan - 1) * 100:+.3g}%)")
        elif span >= w.makespan - tie:
            v, reason = Verdict.NOT_BETTER, ("same makespan (within "
                                             f"{TIE_RTOL:.0e}); lost the solver's tie-break")
        else:
            v, reason = Verdict.LOWER_COST, (f"makespan {span - w.makespan:.4g} ms "
                                             f"({(span / w.makespan - 1) * 100:+.3g}%) with the "
                                             "rest of the plan fixed: the solver missed it")
        verdicts.append(OptionVerdict(option=o, work_ms=work, hbm_bytes=hb, ddr_bytes=db,
                                      makespan_ms=span, verdict=v, reason=reason))
    if not found_chosen:  # the plan's layout is not one this enumeration makes
        o = option_of(tp)
        work, hb, db, _, _ = w.weigh(o)
        verdicts.append(OptionVerdict(option=o, work_ms=work, hbm_bytes=hb, ddr_bytes=db,
                                      makespan_ms=w.makespan, verdict=Verdict.CHOSEN,
                                      reason=f"on ranks {format_ranks(tp.ranks)} (a layout the "
                                             "enumeration does not offer)"))
    return _fold(verdicts), w.makespan


def _fold(vs: list[OptionVerdict]) -> list[OptionVerdict]:
    """One row per (type, placement, shard shapes): the chosen one, else the best."""
    groups: dict[tuple[Any, ...], list[OptionVerdict]] = {}
    for v in vs:
        groups.setdefault(_shape_key(v.option), []).append(v)

    def rank(v: OptionVerdict) -> tuple[Any, ...]:
        return (_VERDICT_ORDER[v.verdict], v.makespan_ms if v.makespan_ms is not None else math.inf)

    out = []
    for g in groups.values():
        best = min(g, key=rank)
        out.append(dataclasses.replace(best, alternatives=len(g)))
    out.sort(key=lambda v: (*rank(v), v.option.label))
    return out


__all__ = ["TIE_RTOL", "OptionVerdict", "Verdict", "explain_table", "format_ranks"]
