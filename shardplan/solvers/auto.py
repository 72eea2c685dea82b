"""Auto (the default): picks the algorithms by instance size and the time budget, and returns
the best plan any of them found, so it is never worse than greedy or any baseline.

1. greedy against several step-time targets (``shardplan.solvers.greedy.best_greedy``), then
   local search from it (single moves, swaps, re-options, group moves) within its work limit;
2. the baselines (random and the four paper heuristics; each cheap), kept only if feasible,
   with local search from the best of them;
3. on instances up to ``portfolio_max_cells`` tables x ranks, when the best plan is more than
   ``min_gain`` above the lower bound, greedy and local search without each sharding type
   the best plan uses, and with only one of them when the fixed costs of all its groups but
   one are at least 15% of its step (``portfolio.fixed_share``), polished over every option
   (``shardplan.solvers.portfolio``: sharding groups' fixed costs make plans with fewer
   types better, and single-table steps cannot drop a type);
4. the ILP, warm-started from the best plan so far, when its model has at most
   ``ilp_max_vars`` variables, about ``ilp_max_rows`` constraints and ``ilp_max_nonzeros``
   coefficients (the model's size, not tables x ranks, decides what HiGHS can do) and the
   best plan is more than
   ``min_gain`` above the lower bound too (the cheap bounds and the option-mix LP, computed
   once and shared with the planner's bound); it stops at ``gap``, after ``ilp_max_nodes``
   nodes or ``ilp_max_checks`` of HiGHS's limit checks (the work limits), or after
   ``ilp_share`` of the budget (at most ``ilp_max_s``, at least ``ilp_min_s``: a safety net,
   reported in the details as ``mip_status: time_limit``).
"""

from __future__ import annotations

import time

from shardplan.errors import InfeasiblePlanError
from shardplan.solvers.baselines import BASELINES, list_schedule
from shardplan.solvers.bounds import cheap_bound, mix_bound
from shardplan.solvers.common import (
    CostTables,
    TableGroups,
    diagnose_infeasible,
    evaluate,
)
from shardplan.solvers.greedy import DEFAULT_SHORTLIST, best_greedy
from shardplan.solvers.ilp import (
    ILPSolver,
    ilp_options,
    model_nonzeros,
    model_rows,
    model_size,
)
from shardplan.solvers.local_search import DEFAULT_MAX_EVALS, improve
from shardplan.solvers.portfolio import restricted_searches
from shardplan.types import PlanningContext, Solver, SolveResult, SolveStatus


class AutoSolver(Solver):
    """Greedy + local search, the baselines, and the ILP when the instance is small.

    Args:
        ilp_max_vars: largest ILP (variables) auto tries.
        ilp_max_rows: largest ILP (constraints, estimated by ``model_rows``) auto tries.
            DCNv2 on 2 x 8 H100 (about 6,000 variables) reaches its best plan at the root
            node in seconds; 16 heavy tables on 128 ranks (about 20,000 variables) too.
        ilp_max_nonzeros: ... and about this many coefficients (``model_nonzeros``): fixed
            shards and everywhere-costs on many ranks add coefficients, not variables. The
            ILPs auto runs on the hard suite have at most about 250,000.
        ilp_share: share of the time budget the ILP may use.
        ilp_max_s: and at most this many seconds: a safety net. The ILP's real limits are
            ``ilp_max_nodes`` and ``ilp_max_checks``, work limits, so the plan is the same on a
            fast or a slow machine (a time limit would cut HiGHS's root heuristics at a
            machine-dependent point); only when this safety net trips may the plan vary.
        ilp_max_nodes: branch-and-bound nodes the ILP may explore.
        ilp_max_checks: HiGHS limit checks the ILP may pass (``solvers.ilp._WarmHiGHS``): the
            work limit of the root node's cuts and heuristics, where DCNv2-sized models spend
            their time.
        ilp_min_s: the ILP's safety-net time limit is at least this.
        gap: the ILP's stopping gap.
        max_evals: local search's work limit (candidate evaluations) per run.
        portfolio_max_cells: on instances up to this many tables x ranks, also search
            without each sharding type the best plan uses, or with only one of them
            (``solvers/portfolio.py``).
        min_gain: run the portfolio and the ILP only when the best plan is more than this
            (relative) above the lower bound (the cheap bounds and the option-mix LP,
            ``solvers/bounds.py``): what they find where they pay is a different mix of
            sharding types, 5-10% faster; near the bound they cost seconds and find
            nothing.
    """

    name = "auto"

    def __init__(self, ilp_max_vars: int = 40_000, ilp_max_rows: int = 40_000,
                 ilp_max_nonzeros: int = 1_000_000, ilp_share: float = 0.5,
                 ilp_max_s: float = 30.0, ilp_min_s: float = 2.0,
                 gap: float = 0.01, ilp_max_nodes: int = 10, ilp_max_checks: int = 30,
                 max_evals: int = DEFAULT_MAX_EVALS,
                 portfolio_max_cells: int = 200_000, min_gain: float = 0.05) -> None:
        self.min_gain = min_gain
        self.portfolio_max_cells = portfolio_max_cells
        self.ilp_max_nodes = ilp_max_nodes
        self.ilp_max_checks = ilp_max_checks
        self.ilp_max_s = ilp_max_s
        self.ilp_max_vars = ilp_max_vars
        self.ilp_max_rows = ilp_max_rows
        self.ilp_max_nonzeros = ilp_max_nonzeros
        self.max_evals = max_evals
        self.ilp_share = ilp_share
        self.ilp_min_s = ilp_min_s
        self.gap = gap

    def solve(self, ctx: PlanningContext) -> SolveResult:
        start = time.perf_counter()
        ct = CostTables.of(ctx)
        groups = TableGroups.of(ctx, ct)
        g = best_greedy(ct, groups, k=DEFAULT_SHORTLIST)
        if g.choice is None:
            raise diagnose_infeasible(ctx, g.failed, ct)
        tried: dict[str, float | str] = {"greedy": g.state.makespan}
        ctx.report("greedy", best_ms=g.state.makespan)
        ls_deadline = start + (ctx.time_limit_s * (1 - self.ilp_share))
        choice, st, stats = improve(ct, groups, g.choice, deadline=ls_deadline,
                                    max_evals=self.max_evals)
        best = (st.makespan, "local_search", choice)
        tried["local_search"] = st.makespan
        ctx.report("local_search", best_ms=best[0])
        base_best = None
        for name in sorted(BASELINES):
            try:
                res = list_schedule(ctx, BASELINES[name].weight, name, ct)
            except InfeasiblePlanError:
                tried[name] = "infeasible"
                continue
            c = ct.choice_of(res.assignment)
            ms = float(res.details["makespan_ms"])  # list_schedule's evaluate of c
            tried[name] = ms
            if base_best is None or ms < base_best[0]:
                base_best = (ms, name, c)
        if base_best is not None and base_best[0] < best[0]:
            best = base_best
        if base_best is not None:
            c2, st2, _ = improve(ct, groups, base_best[2], deadline=ls_deadline,
                                 max_evals=self.max_evals)
            tried[f"local_search({base_best[1]})"] = st2.makespan
            if st2.makespan < best[0]:
                best = (st2.makespan, f"local_search({base_best[1]})", c2)
        ctx.report("baselines", best_ms=best[0])
        # the LP bound over option mixes (kept on ct, so the planner's bound reuses it): a
        # stage that cannot gain more than its share over the bound is skipped
        bound = max(cheap_bound(ct), mix_bound(ct) or 0.0)
        details_bound = bound
        if (len(ct.tables) * ct.world <= self.portfolio_max_cells
                and best[0] > bound * (1 + self.min_gain)):
            for label, c3, ms in restricted_searches(ct, groups, best[2], k=DEFAULT_SHORTLIST,
                                                     max_evals=self.max_evals,
                                                     deadline=ls_deadline):
                tried[label] = ms
                if ms < best[0] * (1 - 1e-9):
                    best = (ms, label, c3)
            ctx.report("portfolio", best_ms=best[0])
        details: dict[str, object] = {"tried": tried, "moves": stats.moves, "swaps": stats.swaps,
                                      "reoptions": stats.reoptions, "group_moves": stats.group_moves,
                                      "stopped_by": stats.stopped_by}
        lb = None
        status = SolveStatus.FEASIBLE
        ilp = ILPSolver(gap=self.gap, max_nodes=self.ilp_max_nodes,
                        max_checks=self.ilp_max_checks)
        kept = ilp_options(ct, ilp.max_options, best[2])
        size, rows = model_size(ct, kept), model_rows(ct, kept)
        # counted only for a model small enough otherwise (it reads every kept option)
        small = size <= self.ilp_max_vars and rows <= self.ilp_max_rows
        nonzeros = model_nonzeros(ct, kept) if small else None
        details["ilp_vars_estimate"] = size
        details["ilp_rows_estimate"] = rows
        details["ilp_nonzeros_estimate"] = nonzeros
        details["bound_ms"] = details_bound
        # the ILP stops at its node limit (or its clock) near the root: it pays where the
        # plan is far from the bound, not where little is left to gain
        close = best[0] <= details_bound * (1 + self.min_gain)
        if small and nonzeros <= self.ilp_max_nonzeros and not close:
            # the node limit is the ILP's real limit; its clock is a safety net that does
            # not depend on how long the phases before it took (so a busy machine does not
            # skip the ILP), at least ilp_min_s
            res = ilp.solve_tables(ctx, ct, groups, best[2], start=time.perf_counter(),
                                   time_limit_s=max(self.ilp_min_s, min(
                                       ctx.time_limit_s * self.ilp_share, self.ilp_max_s)))
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
        return {"ilp_max_vars": self.ilp_max_vars, "ilp_max_rows": self.ilp_max_rows,
                "ilp_max_nonzeros": self.ilp_max_nonzeros,
                "max_evals": self.max_evals, "portfolio_max_cells": self.portfolio_max_cells,
                "ilp_share": self.ilp_share, "ilp_max_s": self.ilp_max_s,
                "ilp_min_s": self.ilp_min_s, "gap": self.gap, "ilp_max_nodes": self.ilp_max_nodes,
                "ilp_max_checks": self.ilp_max_checks,
                "min_gain": self.min_gain}
