"""Auto (the default): picks the algorithms by instance size and the time budget, and returns
the best plan any of them found, so it is never worse than greedy or any baseline.

1. greedy (always), then local search from it, within the budget;
2. the baselines (random and the four paper heuristics; each cheap) when the problem has no
   co-location/separation groups, kept only if feasible, with local search from the best of
   them if it beats step 1;
3. the ILP, warm-started from the best plan so far, when the instance has at most
   ``ilp_max_cells`` tables x ranks, the model at most ``ilp_max_vars`` variables, enough of
   the budget is left, and the best plan is more than ``2 x gap`` above the cheap lower bound
   (work, largest unit, pair); it stops at ``gap``, after ``ilp_max_nodes`` nodes, or after
   ``ilp_share`` of the budget (at most ``ilp_max_s``).
"""

from __future__ import annotations

import time

from shardplan.errors import InfeasiblePlanError
from shardplan.solvers.baselines import BASELINES, list_schedule
from shardplan.solvers.common import CostTables, TableGroups, diagnose_infeasible, evaluate
from shardplan.solvers.greedy import DEFAULT_SHORTLIST, greedy_choice
from shardplan.solvers.ilp import ILPSolver, ilp_options, model_size
from shardplan.solvers.local_search import improve
from shardplan.types import PlanningContext, SolveResult, Solver


class AutoSolver(Solver):
    """Greedy + local search, the baselines, and the ILP when the instance is small.

    Args:
        ilp_max_vars: largest ILP (variables) auto tries.
        ilp_max_cells: largest tables x ranks auto tries the ILP on. Up to 512 (DCNv2 on 16
            ranks: 416) the root node finishes in seconds and beat local search by 2.8% on
            DCNv2; on the 26-table x 32-rank heterogeneous cluster it ran past 20 s and found
            nothing better than local search. Use ``--solver ilp`` for larger instances.
        ilp_share: share of the time budget the ILP may use.
        ilp_max_s: and at most this many seconds: a safety net. The ILP's real limit is
            ``ilp_max_nodes``, a work limit, so the plan is the same on a fast or a slow machine
            (a time limit would cut HiGHS's root heuristics at a machine-dependent point);
            only when this safety net trips may the plan vary.
        ilp_max_nodes: branch-and-bound nodes the ILP may explore (DCNv2 on 2 x 8 H100: the
            root node alone takes about 5 s here and finds the best plan auto knows).
        ilp_min_s: the ILP is skipped when less than this is left.
        gap: the ILP's stopping gap.
    """

    name = "auto"

    def __init__(self, ilp_max_vars: int = 40_000, ilp_max_cells: int = 512,
                 ilp_share: float = 0.5, ilp_max_s: float = 20.0, ilp_min_s: float = 2.0,
                 gap: float = 0.01, ilp_max_nodes: int = 10) -> None:
        self.ilp_max_nodes = ilp_max_nodes
        self.ilp_max_s = ilp_max_s
        self.ilp_max_vars = ilp_max_vars
        self.ilp_max_cells = ilp_max_cells
        self.ilp_share = ilp_share
        self.ilp_min_s = ilp_min_s
        self.gap = gap

    def solve(self, ctx: PlanningContext) -> SolveResult:
        start = time.perf_counter()
        deadline = start + ctx.time_limit_s
        ct = CostTables.of(ctx)
        groups = TableGroups.of(ctx, ct)
        g = greedy_choice(ct, groups, k=DEFAULT_SHORTLIST)
        if g.choice is None:
            raise diagnose_infeasible(ctx, g.failed, ct)
        tried: dict[str, float | str] = {"greedy": g.state.makespan}
        ctx.report("greedy", best_ms=g.state.makespan)
        ls_deadline = start + (ctx.time_limit_s * (1 - self.ilp_share))
        choice, st, stats = improve(ct, groups, g.choice, deadline=ls_deadline)
        best = (st.makespan, "local_search", choice)
        tried["local_search"] = st.makespan
        ctx.report("local_search", best_ms=best[0])
        if groups.empty:
            base_best = None
            for name in sorted(BASELINES):
                try:
                    res = list_schedule(ctx, BASELINES[name].weight, name, ct)
                except InfeasiblePlanError:
                    tried[name] = "infeasible"
                    continue
                c = ct.choice_of(res.assignment)
                ms = evaluate(ct, c).makespan
                tried[name] = ms
                if base_best is None or ms < base_best[0]:
                    base_best = (ms, name, c)
            if base_best is not None and base_best[0] < best[0]:
                best = base_best
            if base_best is not None and time.perf_counter() < ls_deadline:
                c2, st2, _ = improve(ct, groups, base_best[2], deadline=ls_deadline)
                tried[f"local_search({base_best[1]})"] = st2.makespan
                if st2.makespan < best[0]:
                    best = (st2.makespan, f"local_search({base_best[1]})", c2)
        ctx.report("baselines", best_ms=best[0])
        details: dict[str, object] = {"tried": tried, "moves": stats.moves, "swaps": stats.swaps,
                                      "reoptions": stats.reoptions}
        lb = None
        status = "feasible"
        ilp = ILPSolver(gap=self.gap, max_nodes=self.ilp_max_nodes)
        size = model_size(ct, ilp_options(ct, ilp.max_options, best[2]))
        left = deadline - time.perf_counter()
        details["ilp_vars_estimate"] = size
        cells = len(ct.tables) * ct.world
        from shardplan.bounds import lower_bound  # (bounds imports the solvers package)

        quick_bound = lower_bound(ctx, ct, lp_max_vars=0).value_ms
        details["quick_bound_ms"] = quick_bound
        close = best[0] <= quick_bound * (1 + 2 * self.gap)  # nothing much left to prove
        if (size <= self.ilp_max_vars and cells <= self.ilp_max_cells
                and left >= self.ilp_min_s and not close):
            res = ilp.solve_tables(ctx, ct, groups, best[2], start=time.perf_counter(),
                                   time_limit_s=min(left, ctx.time_limit_s * self.ilp_share,
                                                    self.ilp_max_s))
            c = ct.choice_of(res.assignment)
            ms = evaluate(ct, c).makespan
            tried["ilp"] = ms
            details["ilp"] = dict(res.details)
            if ms < best[0]:
                best = (ms, "ilp", c)
            lb = res.lower_bound_ms
            status = res.status if best[1] == "ilp" else status
            ctx.report("ilp", best_ms=best[0], bound_ms=lb)
        details["picked"] = best[1]
        details["makespan_ms"] = best[0]
        return SolveResult(assignment=ct.assignment(ctx, best[2]), status=status,
                           lower_bound_ms=lb, details=details)

    def options(self) -> dict[str, object]:
        return {"ilp_max_vars": self.ilp_max_vars, "ilp_max_cells": self.ilp_max_cells,
                "ilp_share": self.ilp_share, "ilp_max_s": self.ilp_max_s,
                "ilp_min_s": self.ilp_min_s, "gap": self.gap, "ilp_max_nodes": self.ilp_max_nodes}
