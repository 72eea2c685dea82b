"""Greedy: largest table first; for each, the option whose shards, each put on the least-loaded
rank with room in every tier, give the smallest makespan so far."""

from __future__ import annotations

import numpy as np

from shardplan.errors import InfeasiblePlanError
from shardplan.solvers.common import CostTables, diagnose_infeasible
from shardplan.types import Assignment, PlanningContext, SolveResult, Solver


class GreedySolver(Solver):
    name = "greedy"

    def solve(self, ctx: PlanningContext) -> SolveResult:
        ct = CostTables.build(ctx)
        world = ct.world
        load = ct.base_time.copy()  # ms per rank
        hbm = ct.base_hbm.copy()
        ddr = ct.base_ddr.copy()
        chosen: dict[str, tuple[int, tuple[int, ...]]] = {}
        order = sorted(range(len(ct.tables)), key=lambda i: (-ct.table_weight[i], i))
        failed: list[str] = []
        for ti in order:
            best = None
            for oi, oc in enumerate(ct.options[ti]):
                # everywhere-costs raise every rank of a group
                l2 = load + oc.every_time
                h2 = hbm + oc.every_hbm
                d2 = ddr + oc.every_ddr
                ranks: list[int] = []
                ok = True
                for si in range(oc.num_shards):
                    cand = oc.candidates[si]
                    t, mh, md = oc.time[si], oc.hbm[si], oc.ddr[si]
                    room = (h2[cand] + mh[cand] <= ct.cap_hbm[cand]) & (
                        d2[cand] + md[cand] <= ct.cap_ddr[cand])
                    if not room.any():
                        ok = False
                        break
                    after = np.where(room, l2[cand] + t[cand], np.inf)
                    j = int(np.argmin(after))
                    r = int(cand[j])
                    ranks.append(r)
                    l2[r] += t[r]
                    h2[r] += mh[r]
                    d2[r] += md[r]
                if not ok or not ((h2 <= ct.cap_hbm).all() and (d2 <= ct.cap_ddr).all()):
                    continue
                key = (float(l2.max()), float(l2.sum()), oi)
                if best is None or key < best[0]:
                    best = (key, oi, tuple(ranks), l2, h2, d2)
            if best is None:
                failed.append(ct.tables[ti])
                continue
            _, oi, ranks, load, hbm, ddr = best
            chosen[ct.tables[ti]] = (oi, ranks)
        if failed:
            raise diagnose_infeasible(ctx, failed)
        names = [t.name for t in ctx.workload.tables]
        opts = tuple(ctx.options[n][chosen[n][0]] for n in names)
        ranks = tuple(chosen[n][1] for n in names)
        del world
        return SolveResult(assignment=Assignment(options=opts, ranks=ranks), status="feasible",
                           details={"makespan_ms": float(load.max())})


__all__ = ["GreedySolver", "InfeasiblePlanError"]
