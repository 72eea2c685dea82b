"""The placement ILP with keep variables: the planner's model
(``shardplan.solvers.ilp.build_model``) plus the migration.

Added variables:
    ``keep[t,o,i,r]``  binary: shard i of option o of table t sits on rank r, which holds
                       ``local[t,o,i,r]`` bytes of its old state (those stay);
    ``move_time``      continuous: the migration time, s.

Added constraints:
    ``keep_choose_*``  a kept shard's option is chosen: ``keep <= choose[t,o]``;
    ``keep_place_*``   kept shards of a shard class on rank r are at most the class's shards
                       there: ``sum_i keep[t,o,i,r] <= place[t,o,c,r]``;
    ``keep_once_*``    a shard is kept on at most one rank;
    ``link_*``         every link direction's bytes over its bandwidth is within
                       ``move_time``; ``budget``: the bytes moved within the budget.

Bytes moved are ``sum over chosen options of their old state's bytes - sum of kept bytes``,
exact; link loads are exact for options whose shards have fixed ranks (row-wise, table-row-wise,
data-parallel, grid) and, for the others, conservative: every byte not kept is counted on the
destination's link and host network link and on the source's (as if it crossed hosts). The
plan is then re-costed exactly (:mod:`shardplan.replanning.migration`).

Objective: ``makespan + move_weight x 1000 x move_time`` (or ``makespan`` under the budget).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pulp

from shardplan.replanning.moves import MoveTables, Objective
from shardplan.replanning.search import Choice, evaluate_moves
from shardplan.solvers.common import TableGroups
from shardplan.solvers.ilp import build_model, ilp_options, set_start, solve_model

#: Options per table in the model (the ILP's shortlist), plus the kept and the warm one.
MAX_OPTIONS = 8
#: HiGHS branch-and-bound nodes (a work limit; the time limit is a safety net).
MAX_NODES = 50


@dataclass(slots=True)
class KeepILPResult:
    choice: Choice | None
    details: dict = field(default_factory=dict)


def solve_keep_ilp(mt: MoveTables, groups: TableGroups, obj: Objective, keep: list,
                   warm: Choice | None, *, time_limit_s: float = 30.0,
                   max_nodes: int = MAX_NODES) -> KeepILPResult:
    """Solve the keep-variable ILP (see the module docstring), warm-started from ``warm``."""
    ct, lk = mt.ct, mt.links
    allowed = ilp_options(ct, MAX_OPTIONS, warm)
    for ti, k in enumerate(keep):
        if k is not None and k[0] not in allowed[ti]:
            allowed[ti] = sorted(allowed[ti] + [k[0]])
    model = build_model(ct, groups, allowed, name="replan")
    prob = model.prob
    ne = lk.num_edges
    w, nh = lk.world, lk.hosts
    host = lk.host_of
    edge_terms: list[list] = [[] for _ in range(ne)]
    moved_terms: list = []
    keeps: dict[tuple[int, int, int, int], pulp.LpVariable] = {}
    for ti, ois in enumerate(allowed):
        for oi in ois:
            y = model.choose[ti, oi]
            oc = ct.options[ti][oi]
            if oc.fixed is not None:
                m, load = mt.option_contrib(ti, oi, oc.fixed.tolist())
                if m:
                    moved_terms.append((y, m))
                for e in np.flatnonzero(load).tolist():
                    edge_terms[e].append((y, float(load[e])))
                continue
            for ci, c in enumerate(model.classes[ti, oi]):
                per_rank: dict[int, list] = {}
                totals = []
                for si in c.shards:
                    pieces = mt.pieces(ti, oi, si)
                    total = sum(b for _, b in pieces)
                    totals.append(total)
                    if not total:
                        continue
                    moved_terms.append((y, total))
                    local: dict[int, float] = {}
                    sent: dict[int, float] = {}  # what a single holder sends unless kept
                    for blk, b in pieces:
                        for r in blk.holders:
                            local[r] = local.get(r, 0.0) + b
                        if len(blk.holders) == 1:
                            h = blk.holders[0]
                            sent[h] = sent.get(h, 0.0) + b
                            edge_terms[h].append((y, b))
                            edge_terms[2 * w + host[h]].append((y, b))
                    ks = []
                    for r, b in sorted(local.items()):
                        if (ti, oi, ci, r) not in model.place:
                            continue
                        k = prob.add_variable(f"keep_t{ti}_o{oi}_s{si}_r{r}", 0, 1, pulp.LpBinary)
                        keeps[ti, oi, si, r] = k
                        ks.append(k)
                        prob += (k <= y, f"keep_choose_t{ti}_o{oi}_s{si}_r{r}")
                        per_rank.setdefault(r, []).append(k)
                        moved_terms.append((k, -b))
                        edge_terms[w + r].append((k, -b))
                        edge_terms[2 * w + nh + host[r]].append((k, -b))
                        if r in sent:
                            edge_terms[r].append((k, -sent[r]))
                            edge_terms[2 * w + host[r]].append((k, -sent[r]))
                    if len(ks) > 1:
                        prob += (pulp.lpSum(ks) <= 1, f"keep_once_t{ti}_o{oi}_s{si}")
                # destination side: each shard of the class placed on r brings its bytes
                mean = float(np.mean(totals)) if totals else 0.0
                if mean:
                    for r in c.ranks.tolist():
                        x = model.place[ti, oi, ci, r]
                        edge_terms[w + r].append((x, mean))
                        edge_terms[2 * w + nh + host[r]].append((x, mean))
                # class shards are interchangeable: at most as many kept on r as placed there
                for r, ks in per_rank.items():
                    prob += (pulp.lpSum(ks) <= model.place[ti, oi, ci, r],
                             f"keep_place_t{ti}_o{oi}_c{ci}_r{r}")
    t_move = prob.add_variable("move_time", 0)
    bw = lk.bandwidth_bytes_per_s
    loads = []
    for e in range(ne):
        if edge_terms[e]:
            expr = pulp.LpAffineExpression(_merge(edge_terms[e]))
            loads.append((e, expr))
            prob += (expr * (1.0 / bw[e]) <= t_move, f"link_{e}")
    moved = pulp.LpAffineExpression(_merge(moved_terms))
    if obj.budget_bytes is not None:
        prob += (moved <= obj.budget_bytes, "budget")
        prob.setObjective(model.makespan)
    else:
        prob.setObjective(model.makespan + obj.move_weight * 1e3 * t_move)
    if warm is not None:
        set_start(model, ct, warm)
        for (ti, oi, si, r), k in keeps.items():
            k.setInitialValue(1 if warm[ti][0] == oi and warm[ti][1][si] == r else 0)
        t_move.setInitialValue(max([float(expr.value() or 0.0) / bw[e] for e, expr in loads],
                                   default=0.0))
    out = solve_model(model, ct, backend="highs", time_limit_s=time_limit_s, threads=1,
                      gap=0.005, warm=None, max_nodes=max_nodes)
    details = {"mip_status": out.status, "variables": model.num_vars + len(keeps) + 1,
               "keep_variables": len(keeps), "mip_nodes": out.nodes,
               "mip_wall_s": round(out.wall_s, 3)}
    if out.choice is None:
        return KeepILPResult(choice=None, details=details)
    choice = _decode(model, ct, keeps)
    details["model_objective_ms"] = round(float(pulp.value(prob.objective) or 0.0), 6)
    details["moved_bytes"] = round(evaluate_moves(mt, choice).moved)
    return KeepILPResult(choice=choice, details=details)


def _merge(terms: list) -> list:
    acc: dict = {}
    for v, a in terms:
        acc[v] = acc.get(v, 0.0) + a
    return [(v, a) for v, a in acc.items() if a]


def _decode(model, ct, keeps) -> Choice:
    """Options and ranks from the solved model; kept shards go to the rank they are kept on."""
    choice: Choice = []
    for ti, ois in enumerate(model.allowed):
        oi = max(ois, key=lambda o: ((model.choose[ti, o].value() or 0.0), -o))
        oc = ct.options[ti][oi]
        ranks = [-1] * oc.num_shards
        for ci, c in enumerate(model.classes[ti, oi]):
            if c.fixed:
                ranks[c.shards[0]] = int(c.ranks[0])
                continue
            slots: dict[int, int] = {}
            for r in c.ranks.tolist():
                n = int(round(model.place[ti, oi, ci, r].value() or 0.0))
                if n:
                    slots[r] = n
            rest = []
            for si in c.shards:
                kept = [r for r in sorted(slots) if (ti, oi, si, r) in keeps
                        and (keeps[ti, oi, si, r].value() or 0.0) > 0.5 and slots[r] > 0]
                if kept:
                    ranks[si] = kept[0]
                    slots[kept[0]] -= 1
                else:
                    rest.append(si)
            free = [r for r in sorted(slots) for _ in range(slots[r])]
            for si, r in zip(rest, free):
                ranks[si] = r
        choice.append((oi, tuple(ranks)))
    return choice


__all__ = ["KeepILPResult", "solve_keep_ilp"]
