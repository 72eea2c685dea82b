"""ILP: the exact placement problem as a mixed-integer program (PuLP), solved by HiGHS (default,
via highspy) or CBC (fallback); see ``docs/solvers.md`` for the model written out.

Sets: tables t; options o of t; shard classes c of (t, o) (shards of one option with the same
candidate ranks and the same costs, ``m_c`` of them); ranks r.

Variables:
    ``choose[t,o]``    binary: table t uses option o;
    ``place[t,o,c,r]`` integer in [0, m_c]: how many shards of class c sit on rank r (classes
                       whose shards each have one fixed rank need none: they follow ``choose``);
    ``group[k]``       binary: sharding group k (one set of fused collectives) is used; its
                       fixed cost (latencies, kernel launches) is paid once;
    ``stage[s]``       continuous: stage s's time, the slowest rank's longest lane of the stage
                       (``synchronized`` composition; ``stage[s,r]`` per rank for ``per_rank``);
    ``sep[t,r]``       binary, only for tables in a separation group: t uses rank r;
    ``makespan``       continuous: the step time, ms.

Constraints (labels as in the model): ``one_option_<t>``, ``place_all_<t>_<o>_<c>``,
``group_use_<k>_<j>`` (an option of group k chosen => group k used), ``lane_<lane>_r<r>``
(rank r's time on a lane, fixed costs included, is within its stage's time), ``step_*`` (the
step time composed from stage times: their sum, or pipelined the longer of the input dist and
the rest plus the unhidden part of the shorter, ``StepModel.overlap``), ``hbm_r<r>``, ``ddr_r<r>``, ``largest_shard_<t>`` (a valid cut: the rank holding a
table's heaviest shard pays at least that shard with the option's everywhere-cost),
``coloc_<t>_<t2>_r<r>`` (co-located tables use each rank equally; a shard fixed to a rank
counts through its ``choose``), ``sep_use_*``, ``separate_<k>_r<r>``.

Objective: minimise ``makespan``.
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass

import numpy as np
import pulp

from shardplan.errors import SolverError
from shardplan.solvers.common import (
    NUM_LANES,
    CostTables,
    LoadState,
    TableGroups,
    diagnose_infeasible,
    evaluate,
    silence_highs_banner,
)
from shardplan.solvers.greedy import (
    Choice,
    best_greedy,
    shard_budget,
    shortlist,
    work_target,
)
from shardplan.types import (
    LANES,
    STAGE_LANE_INDEX,
    Composition,
    MipStatus,
    PlanningContext,
    Solver,
    SolveResult,
    SolveStatus,
    Stage,
)

#: Tables (heaviest first) that get a largest-shard cut.
MAX_CUTS = 200


@dataclass(slots=True)
class ShardClass:
    shards: list[int]  # shard indices of the option, in order
    ranks: np.ndarray  # candidate ranks
    fixed: bool  # a single shard with a single candidate rank


def shard_classes(ct: CostTables, ti: int, oi: int) -> list[ShardClass]:
    """The shards of option ``oi`` of table ``ti``, grouped by candidates and costs."""
    oc = ct.options[ti][oi]
    if oc.fixed is not None:
        return [ShardClass(shards=[si], ranks=oc.fixed[si:si + 1], fixed=True)
                for si in range(oc.num_shards)]
    out: dict[tuple, ShardClass] = {}
    for si in range(oc.num_shards):
        cand = oc.candidates[si]
        key = (tuple(cand.tolist()), tuple(oc.time_g[si]), tuple(oc.hbm_g[si]), tuple(oc.ddr_g[si]))
        if key not in out:
            out[key] = ShardClass(shards=[], ranks=cand, fixed=False)
        out[key].shards.append(si)
    return list(out.values())


@dataclass(slots=True)
class Model:
    """A built PuLP model and the maps from variables back to the plan."""

    prob: pulp.LpProblem
    makespan: pulp.LpVariable
    choose: dict[tuple[int, int], pulp.LpVariable]
    place: dict[tuple[int, int, int, int], pulp.LpVariable]
    classes: dict[tuple[int, int], list[ShardClass]]
    allowed: list[list[int]]  # option indices per table kept in the model
    num_vars: int
    groups: dict[int, pulp.LpVariable] | None = None


def model_rows(ct: CostTables, allowed: list[list[int]], max_cuts: int = MAX_CUTS) -> int:
    """About how many constraints the model would have, without building it: a lane and two
    memory rows per rank, one per table, one per shard class, group uses and cuts."""
    rows = ct.world * (NUM_LANES + 2) + len(allowed) + min(len(allowed), max_cuts)
    for ti, ois in enumerate(allowed):
        for oi in ois:
            oc = ct.options[ti][oi]
            rows += (0 if oc.fixed is not None else min(oc.num_shards, 2)) + (oc.key >= 0)
    return rows


def model_size(ct: CostTables, allowed: list[list[int]]) -> int:
    """Variables the model would have (choose + place), without building it."""
    n = 0
    for ti, ois in enumerate(allowed):
        for oi in ois:
            oc = ct.options[ti][oi]
            n += 1
            if oc.fixed is None:
                n += sum(len(c) for c in oc.candidates) if oc.num_shards <= 2 else \
                    len(oc.candidates[0]) * min(oc.num_shards, 2)
    return n


def model_nonzeros(ct: CostTables, allowed: list[list[int]]) -> int:
    """About how many constraint coefficients the model would have, without building it: an
    option's everywhere-cost puts its choice variable in a lane row of every rank, and each
    shard (fixed) or placement variable (movable) in its rank's lane and memory rows. This is
    what building and solving grows with: a few hundred options of fixed 64-shard grid
    options, or of everywhere-costs on 1,024 ranks, are few variables but millions of
    coefficients. The sharding groups' fixed costs add their nonzero lanes and memory on every
    rank."""
    n = 0
    keys: set[int] = set()
    ranks_per_group = np.bincount(ct.group_of, minlength=ct.base_lanes_g.shape[0])
    for ti, ois in enumerate(allowed):
        for oi in ois:
            oc = ct.options[ti][oi]
            every = (np.count_nonzero(oc.every_lanes_g, axis=1) + (oc.every_hbm_g != 0)
                     + (oc.every_ddr_g != 0))
            n += int(every @ ranks_per_group)
            if oc.key >= 0:
                keys.add(oc.key)
                n += 2  # choose <= group use
            if not oc.num_shards:
                continue
            # a shard's nonzero lanes and memory (the first shard's, on the first group)
            per = int(np.count_nonzero(oc.lanes_g[0, 0])) + 2
            if oc.fixed is not None:
                n += oc.num_shards * per
            else:
                n += (per + 1) * (sum(len(c) for c in oc.candidates) if oc.num_shards <= 2 else
                                  len(oc.candidates[0]) * min(oc.num_shards, 2))
    for k in sorted(keys):  # each group's fixed cost on every rank
        lanes, hbm, ddr = ct.key_cost(k)
        n += int(np.count_nonzero(lanes) + np.count_nonzero(hbm) + np.count_nonzero(ddr))
    return n


def build_model(ct: CostTables, groups: TableGroups, allowed: list[list[int]], *,
                relax: bool = False, name: str = "shardplan", max_cuts: int = MAX_CUTS) -> Model:
    """The placement MIP (or its LP relaxation with ``relax=True``) over the ``allowed``
    options of each table; the ``max_cuts`` heaviest tables get a largest-shard cut."""
    cat_b = pulp.LpContinuous if relax else pulp.LpBinary
    cat_i = pulp.LpContinuous if relax else pulp.LpInteger
    world = ct.world
    g_of = ct.group_of
    nl = NUM_LANES
    prob = pulp.LpProblem(name, pulp.LpMinimize)
    z = prob.add_variable("makespan", 0)
    prob += z
    choose: dict[tuple[int, int], pulp.LpVariable] = {}
    place: dict[tuple[int, int, int, int], pulp.LpVariable] = {}
    classes: dict[tuple[int, int], list[ShardClass]] = {}
    # per-rank, per-lane coefficients; dicts, since one variable may carry several terms
    lane_terms: list[list[dict]] = [[{} for _ in range(nl)] for _ in range(world)]
    hbm_terms: list[dict] = [{} for _ in range(world)]
    ddr_terms: list[dict] = [{} for _ in range(world)]

    def add(terms: dict, v: pulp.LpVariable, a: float) -> None:
        if a:
            terms[v] = terms.get(v, 0.0) + a

    def add_lanes(r: int, v: pulp.LpVariable, lanes: np.ndarray) -> None:
        row = lane_terms[r]
        for l in np.flatnonzero(lanes).tolist():
            add(row[l], v, float(lanes[l]))

    peak_terms: dict[int, list] = {}
    uses: dict[int, dict[int, list]] = {ti: {} for ti in groups.mates}
    key_options: dict[int, list[pulp.LpVariable]] = {}
    for ti, ois in enumerate(allowed):
        for oi in ois:
            oc = ct.options[ti][oi]
            y = prob.add_variable(f"choose_t{ti}_o{oi}", 0, 1, cat_b)
            choose[ti, oi] = y
            if oc.key >= 0:
                key_options.setdefault(oc.key, []).append(y)
            # everywhere-costs: every rank pays them if this option is chosen
            ev_h, ev_d = oc.every_hbm, oc.every_ddr
            for r in range(world):
                add_lanes(r, y, oc.every_lanes_g[g_of[r]])
                add(hbm_terms[r], y, float(ev_h[r]))
                add(ddr_terms[r], y, float(ev_d[r]))
            cls = shard_classes(ct, ti, oi)
            classes[ti, oi] = cls
            for ci, c in enumerate(cls):
                si = c.shards[0]
                if c.fixed:
                    r = int(c.ranks[0])
                    g = g_of[r]
                    add_lanes(r, y, oc.lanes_g[si, g])
                    add(hbm_terms[r], y, float(oc.hbm_g[si, g]))
                    add(ddr_terms[r], y, float(oc.ddr_g[si, g]))
                    if ti in uses:
                        uses[ti].setdefault(r, []).append((y, 1.0))
                    continue
                m = len(c.shards)
                xs = []
                for r in c.ranks.tolist():
                    g = g_of[r]
                    x = prob.add_variable(f"place_t{ti}_o{oi}_c{ci}_r{r}", 0, m, cat_b if m == 1 else cat_i)
                    place[ti, oi, ci, r] = x
                    xs.append(x)
                    add_lanes(r, x, oc.lanes_g[si, g])
                    add(hbm_terms[r], x, float(oc.hbm_g[si, g]))
                    add(ddr_terms[r], x, float(oc.ddr_g[si, g]))
                    if ti in uses:
                        uses[ti].setdefault(r, []).append((x, 1.0 / m))
                prob += (pulp.lpSum(xs) == m * y, f"place_all_t{ti}_o{oi}_c{ci}")
            peak_terms.setdefault(ti, []).append((y, oc.peak_ms))
        prob += (pulp.lpSum(choose[ti, oi] for oi in ois) == 1, f"one_option_t{ti}")
    # sharding groups: a group's fixed cost is paid once any of its options is chosen
    use: dict[int, pulp.LpVariable] = {}
    for k, ys in sorted(key_options.items()):
        u = prob.add_variable(f"group_{k}_{ct.keys[k].label}", 0, 1, cat_b)
        use[k] = u
        for j, y in enumerate(ys):
            prob += (y <= u, f"group_use_{k}_{j}")
        lanes, hbm, ddr = ct.key_cost(k)
        for r in range(world):
            add_lanes(r, u, lanes[r])
            add(hbm_terms[r], u, float(hbm[r]))
            add(ddr_terms[r], u, float(ddr[r]))
    base = ct.base_lanes
    step = ct.step
    nstages = len(STAGE_LANE_INDEX)
    if step.composition is Composition.SYNCHRONIZED:
        stage_vars = [prob.add_variable(f"stage_{s.value}", 0) for s in Stage]
    for r in range(world):
        if step.composition is Composition.PER_RANK:
            stage_vars = [prob.add_variable(f"stage_{s.value}_r{r}", 0) for s in Stage]
        for si, ix in enumerate(STAGE_LANE_INDEX):
            for l in ix:
                expr = pulp.LpAffineExpression(list(lane_terms[r][l].items()))
                if not lane_terms[r][l] and base[r, l] == 0:
                    continue
                prob += (expr + float(base[r, l]) <= stage_vars[si],
                         f"lane_{LANES[l].value}_r{r}")
        if step.composition is Composition.PER_RANK:
            _compose(prob, step, z, stage_vars, f"_r{r}")
        prob += (pulp.LpAffineExpression(list(hbm_terms[r].items())) <= float(ct.cap_hbm[r] - ct.base_hbm[r]),
                 f"hbm_r{r}")
        prob += (pulp.LpAffineExpression(list(ddr_terms[r].items())) <= float(ct.cap_ddr[r] - ct.base_ddr[r]),
                 f"ddr_r{r}")
    if step.composition is Composition.SYNCHRONIZED:
        _compose(prob, step, z, stage_vars, "")
    del nstages
    # largest_shard cut: the rank holding a table's heaviest shard pays at least its peak
    # (valid: some rank holds that shard, with the option's everywhere-cost)
    order = sorted(range(len(allowed)), key=lambda i: (-ct.table_weight[i], i))[:max_cuts]
    for ti in order:
        prob += (pulp.LpAffineExpression(peak_terms[ti]) <= z, f"largest_shard_t{ti}")
    # co-location: equal rank use
    for ti, grp in groups.coloc_of.items():
        if ti != grp[0]:
            continue
        for tj in grp[1:]:
            for r in range(world):
                a = [_use_term(model_vars=(choose, place, classes), ti=ti, r=r)]
                b = [_use_term(model_vars=(choose, place, classes), ti=tj, r=r)]
                prob += (pulp.lpSum(a) == pulp.lpSum(b), f"coloc_t{ti}_t{tj}_r{r}")
    # separation: a table's use of a rank, at most one table of a group per rank
    sep: dict[tuple[int, int], pulp.LpVariable] = {}
    for ti, per_rank in uses.items():
        for r, terms in per_rank.items():
            u = prob.add_variable(f"sep_t{ti}_r{r}", 0, 1, cat_b)
            sep[ti, r] = u
            for k, (v, _) in enumerate(terms):
                prob += (v <= u * (1 if v.name.startswith("choose") else v.upBound),
                         f"sep_use_t{ti}_r{r}_{k}")
    for k, grp_names in enumerate(_separate_groups(ct, groups)):
        for r in range(world):
            us = [sep[ti, r] for ti in grp_names if (ti, r) in sep]
            if len(us) > 1:
                prob += (pulp.lpSum(us) <= 1, f"separate_{k}_r{r}")
    return Model(prob=prob, makespan=z, choose=choose, place=place, classes=classes,
                 allowed=allowed, num_vars=len(choose) + len(place) + len(sep) + len(use) + 2,
                 groups=use)


def _compose(prob: pulp.LpProblem, step, z: pulp.LpVariable, stage_vars: list, tag: str) -> None:
    """``z`` >= the step time composed from stage times (``StepModel``)."""
    if step.pipelined:  # z >= max(a + u b, b + u a), u = 1 - overlap (StepModel)
        u = step.unhidden
        rest = pulp.lpSum(stage_vars[1:])
        prob += (stage_vars[0] + u * rest <= z, f"step_input{tag}")
        prob += (rest + u * stage_vars[0] <= z, f"step_rest{tag}")
    else:
        prob += (pulp.lpSum(stage_vars) <= z, f"step_sum{tag}")


def _use_term(*, model_vars, ti: int, r: int):
    """How many of table ``ti``'s shards sit on rank ``r`` (a linear expression)."""
    choose, place, classes = model_vars
    terms = []
    for (t, oi), y in choose.items():
        if t != ti:
            continue
        for ci, c in enumerate(classes[t, oi]):
            if c.fixed:
                if int(c.ranks[0]) == r:
                    terms.append((y, 1.0))
            elif (t, oi, ci, r) in place:
                terms.append((place[t, oi, ci, r], 1.0))
    return pulp.LpAffineExpression(terms)


def _separate_groups(ct: CostTables, groups: TableGroups) -> list[list[int]]:
    seen, out = set(), []
    for ti, ms in sorted(groups.mates.items()):
        grp = tuple(sorted({ti, *ms}))
        if grp not in seen:
            seen.add(grp)
            out.append(list(grp))
    return out


def set_start(model: Model, ct: CostTables, choice: Choice) -> None:
    """Give every variable its value in ``choice`` (the warm start)."""
    for v in model.prob.variables():
        v.setInitialValue(0)
        if v.name.startswith("sep_t"):  # sep_t<ti>_r<r>
            ti, r = (int(p[1:]) for p in v.name[4:].split("_"))
            v.setInitialValue(1 if r in choice[ti][1] else 0)
    for ti, (oi, rs) in enumerate(choice):
        if (ti, oi) not in model.choose:
            continue
        model.choose[ti, oi].setInitialValue(1)
        for ci, c in enumerate(model.classes[ti, oi]):
            if c.fixed:
                continue
            counts: dict[int, int] = {}
            for si in c.shards:
                counts[rs[si]] = counts.get(rs[si], 0) + 1
            for r, n in counts.items():
                model.place[ti, oi, ci, r].setInitialValue(n)
    st = evaluate(ct, choice)
    model.makespan.setInitialValue(st.makespan)
    for k, u in (model.groups or {}).items():
        u.setInitialValue(1 if st.key_count[k] > 0 else 0)
    stages = ct.step.stage_times(st.load)
    for v in model.prob.variables():
        if v.name.startswith("stage_"):
            parts = v.name[len("stage_"):]
            for si, sname in enumerate(s.value for s in Stage):
                if parts == sname:
                    v.setInitialValue(float(stages[:, si].max()))
                elif parts.startswith(sname + "_r"):
                    v.setInitialValue(float(stages[int(parts[len(sname) + 2:]), si]))


def decode(model: Model, ct: CostTables) -> Choice:
    """The option and ranks per table from a solved model (rounded)."""
    choice: Choice = []
    for ti, ois in enumerate(model.allowed):
        oi = max(ois, key=lambda o: ((model.choose[ti, o].value() or 0.0), -o))
        ranks: list[int] = [-1] * ct.options[ti][oi].num_shards
        for ci, c in enumerate(model.classes[ti, oi]):
            if c.fixed:
                ranks[c.shards[0]] = int(c.ranks[0])
                continue
            slots: list[int] = []
            for r in c.ranks.tolist():
                n = int(round(model.place[ti, oi, ci, r].value() or 0.0))
                slots += [r] * n
            if len(slots) != len(c.shards):
                raise SolverError(f"ILP solution places {len(slots)} of {len(c.shards)} shards of "
                                  f"table {ct.tables[ti]!r}")
            for si, r in zip(c.shards, sorted(slots)):
                ranks[si] = r
        choice.append((oi, tuple(ranks)))
    return choice


class _WarmHiGHS(pulp.HiGHS):
    """PuLP's HiGHS interface, plus a MIP start from the variables' initial values, and a work
    limit: ``max_checks`` of HiGHS's MIP interrupt checks.

    HiGHS checks its limits (and calls the MIP interrupt callback) at fixed points of its work:
    root separation rounds, heuristics, nodes. Its iteration counts are not reported there, and
    most of a large model's work is root cuts and heuristics, which ``mip_max_nodes`` does not
    bound; so the count of checks is the work limit: a run with the same options stops at the
    same check, and so at the same incumbent, on a fast or a slow machine (the time limit stays
    as a safety net).
    """

    def __init__(self, *args, max_checks: int | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.max_checks = max_checks
        self.checks: int | None = None  # counted only with max_checks, on a MIP

    def _count_check(self, event) -> None:
        self.checks += 1
        if self.max_checks is not None and self.checks >= self.max_checks:
            event.data_in.user_interrupt = True

    def callSolver(self, lp):  # noqa: N802 (PuLP's name)
        import highspy

        self.checks = None
        if self.max_checks is not None and self.mip:
            self.checks = 0
            lp.solverModel.cbMipInterrupt.subscribe(self._count_check)
        vs = lp.variables()
        if any(v.varValue is not None for v in vs):
            sol = highspy.HighsSolution()
            vals = [0.0] * len(vs)
            for v in vs:
                vals[v.index] = float(v.varValue or 0.0)
            sol.col_value = vals
            sol.value_valid = True
            lp.solverModel.setSolution(sol)
        lp.solverModel.run()

    def findSolutionValues(self, lp):  # noqa: N802 (PuLP's name)
        """PuLP's, plus HiGHS's node-limit status (``kSolutionLimit``), which PuLP does not
        map: the values are already read by then; report "stopped, with a solution". And an
        interrupt (``max_checks``) before any solution: PuLP maps ``kInterrupt`` to
        "integer feasible" whatever the objective; report "no solution" when it is infinite."""
        import highspy

        model = lp.solverModel
        if (model.getModelStatus() == highspy.HighsModelStatus.kInterrupt
                and not math.isfinite(model.getInfo().objective_function_value)):
            super().findSolutionValues(lp)  # reads the (meaningless) values; PuLP's bookkeeping
            return pulp.LpStatusNotSolved, pulp.LpSolutionNoSolutionFound
        try:
            return super().findSolutionValues(lp)
        except KeyError:
            if lp.solverModel.getModelStatus() != highspy.HighsModelStatus.kSolutionLimit:
                raise
            found = math.isfinite(lp.solverModel.getInfo().objective_function_value)
            return (pulp.LpStatusNotSolved,
                    pulp.LpSolutionIntegerFeasible if found else pulp.LpSolutionNoSolutionFound)


@dataclass(frozen=True, kw_only=True, slots=True)
class MipOutcome:
    status: MipStatus
    objective: float | None
    best_bound: float | None
    gap: float | None
    backend: str
    choice: Choice | None
    num_vars: int
    num_constraints: int
    wall_s: float
    nodes: int | None = None
    checks: int | None = None  # HiGHS's limit checks (with ``max_checks``)


def solve_model(model: Model, ct: CostTables, *, backend: str, time_limit_s: float,
                threads: int, gap: float, warm: Choice | None, relax: bool = False,
                max_nodes: int | None = None, max_checks: int | None = None) -> MipOutcome:
    """Run ``backend`` (``highs`` or ``cbc``) on the model. ``max_nodes`` caps HiGHS's
    branch-and-bound nodes and ``max_checks`` its limit checks (root rounds and heuristics
    included; see :class:`_WarmHiGHS`): work limits, so the result does not depend on the
    machine's speed the way a time limit does (the time limit stays as a safety net)."""
    start = time.perf_counter()
    if warm is not None and not relax:
        set_start(model, ct, warm)
    if backend == "highs":
        silence_highs_banner()
        extra = {} if max_nodes is None or relax else {"mip_max_nodes": int(max_nodes)}
        solver = _WarmHiGHS(msg=False, timeLimit=max(time_limit_s, 0.1), threads=threads,
                            gapRel=gap, mip=not relax, max_checks=max_checks, **extra)
    elif backend == "cbc":
        with warnings.catch_warnings():  # PuLP 3.x: bundled CBC "deprecated in 4.0"; still ships
            warnings.simplefilter("ignore", DeprecationWarning)
            solver = pulp.PULP_CBC_CMD(msg=False, timeLimit=max(time_limit_s, 1.0),
                                       threads=threads, gapRel=gap, warmStart=warm is not None,
                                       mip=not relax)
    else:
        raise SolverError(f"unknown ILP backend {backend!r}; use 'highs' or 'cbc'")
    if not solver.available():
        raise SolverError(f"ILP backend {backend!r} is not available")
    model.prob.solve(solver)
    wall = time.perf_counter() - start
    status = pulp.LpStatus[model.prob.status]
    sol_status = model.prob.sol_status
    has_solution = sol_status in (pulp.LpSolutionOptimal, pulp.LpSolutionIntegerFeasible)
    objective = float(model.makespan.value()) if has_solution and model.makespan.value() is not None else None
    best_bound = None
    nodes = None
    if backend == "highs":
        h = model.prob.solverModel
        info = h.getInfo()
        ms = h.getModelStatus()
        import highspy

        if relax:
            best_bound = objective
        else:
            bb = float(info.mip_dual_bound)
            best_bound = bb if math.isfinite(bb) else None
        nodes = int(info.mip_node_count)
        status = {highspy.HighsModelStatus.kOptimal: MipStatus.OPTIMAL,
                  highspy.HighsModelStatus.kTimeLimit: MipStatus.TIME_LIMIT,
                  highspy.HighsModelStatus.kSolutionLimit: MipStatus.NODE_LIMIT,
                  highspy.HighsModelStatus.kInterrupt: MipStatus.WORK_LIMIT,
                  highspy.HighsModelStatus.kInfeasible: MipStatus.INFEASIBLE}.get(
                      ms, MipStatus.OTHER)
    elif sol_status == pulp.LpSolutionOptimal:
        status = MipStatus.OPTIMAL
        best_bound = objective
    elif status == "Infeasible":  # PuLP's own status word (CBC)
        status = MipStatus.INFEASIBLE
    else:
        status = MipStatus.TIME_LIMIT if has_solution else MipStatus.NO_SOLUTION
    g = None
    if objective is not None and best_bound is not None and objective > 0:
        g = max(0.0, (objective - best_bound) / objective)
    choice = decode(model, ct) if has_solution and not relax else None
    return MipOutcome(status=status, objective=objective, best_bound=best_bound, gap=g,
                      backend=backend, choice=choice, num_vars=model.num_vars,
                      num_constraints=model.prob.numConstraints(), wall_s=wall, nodes=nodes,
                      checks=getattr(solver, "checks", None))


def ilp_options(ct: CostTables, max_options: int | None, warm: Choice | None) -> list[list[int]]:
    """Options per table kept in the model: all, or the ``max_options`` best by estimated
    cost plus the warm start's."""
    budget = shard_budget(ct, work_target(ct))
    out = []
    for ti, ocs in enumerate(ct.options):
        if max_options is None or len(ocs) <= max_options:
            keep = list(range(len(ocs)))
        else:
            keep = shortlist(ocs, budget, ct.world)[:max_options]
            if warm is not None and warm[ti][0] not in keep:
                keep.append(warm[ti][0])
        out.append(sorted(keep))
    return out


class ILPSolver(Solver):
    """The placement MIP, warm-started from greedy.

    Args:
        backend: ``highs`` (default; via highspy) or ``cbc`` (PuLP's bundled CBC).
        gap: relative gap at which the solver stops (0.01 = 1%).
        max_options: options per table kept in the model (``None``: all). With fewer, the
            proven bound is for the reduced model only; ``details['restricted']`` says so.
        fallback: try CBC when HiGHS is not installed.
        max_nodes: stop HiGHS after this many branch-and-bound nodes (a work limit: the same
            input then gives the same plan on any machine, unless the time limit trips first).
        max_checks: stop HiGHS after this many of its limit checks (a work limit that also
            bounds the root node's cuts and heuristics; see :class:`_WarmHiGHS`).
    """

    name = "ilp"

    def __init__(self, backend: str = "highs", gap: float = 0.005, max_options: int | None = 10,
                 fallback: bool = True, max_nodes: int | None = None,
                 max_checks: int | None = None) -> None:
        self.max_nodes = max_nodes
        self.max_checks = max_checks
        self.backend = backend
        self.gap = gap
        self.max_options = max_options
        self.fallback = fallback

    def solve(self, ctx: PlanningContext) -> SolveResult:
        start = time.perf_counter()
        ct = CostTables.of(ctx)
        groups = TableGroups.of(ctx, ct)
        g = best_greedy(ct, groups)
        warm = g.choice
        return self.solve_tables(ctx, ct, groups, warm, start=start)

    def solve_tables(self, ctx: PlanningContext, ct: CostTables, groups: TableGroups,
                     warm: Choice | None, *, start: float, time_limit_s: float | None = None
                     ) -> SolveResult:
        """Solve with prebuilt cost tables and a warm start (used by ``auto``)."""
        limit = ctx.time_limit_s if time_limit_s is None else time_limit_s
        allowed = ilp_options(ct, self.max_options, warm)
        restricted = any(len(a) < len(o) for a, o in zip(allowed, ct.options))
        model = build_model(ct, groups, allowed)
        backend = self.backend
        if backend == "highs" and not pulp.HiGHS().available() and self.fallback:
            backend = "cbc"
        left = max(limit - (time.perf_counter() - start), 1.0)
        out = solve_model(model, ct, backend=backend, time_limit_s=left, threads=ctx.threads,
                          gap=self.gap, warm=warm, max_nodes=self.max_nodes,
                          max_checks=self.max_checks)
        if out.status is MipStatus.INFEASIBLE and restricted:
            # the shortlist of options may be what is infeasible, not the problem: try them all
            allowed = [list(range(len(o))) for o in ct.options]
            model = build_model(ct, groups, allowed)
            restricted = False
            left = max(limit - (time.perf_counter() - start), 1.0)
            out = solve_model(model, ct, backend=backend, time_limit_s=left, threads=ctx.threads,
                              gap=self.gap, warm=warm, max_nodes=self.max_nodes,
                              max_checks=self.max_checks)
        if out.status is MipStatus.INFEASIBLE:
            raise diagnose_infeasible(ctx, [], ct)
        choice = out.choice
        warm_ms = evaluate(ct, warm).makespan if warm is not None else None
        if choice is None:
            if warm is None:
                if out.status is MipStatus.WORK_LIMIT:
                    raise SolverError(f"the ILP ({out.backend}) stopped at its work limit "
                                      f"({out.checks} limit checks) before finding a plan, and "
                                      "greedy found none either; raise max_checks")
                raise SolverError(f"the ILP ({out.backend}) found no plan in {left:.1f} s and "
                                  "greedy found none either; give it more time")
            choice = warm
        st: LoadState = evaluate(ct, choice)
        if warm is not None and warm_ms is not None and warm_ms < st.makespan:
            choice, st = warm, evaluate(ct, warm)
        details = {"backend": out.backend, "mip_status": out.status,
                   "objective_ms": out.objective, "best_bound_ms": out.best_bound,
                   "gap": out.gap, "makespan_ms": st.makespan, "warm_start_ms": warm_ms,
                   "variables": out.num_vars, "constraints": out.num_constraints,
                   "restricted": restricted, "mip_wall_s": round(out.wall_s, 3),
                   "mip_nodes": out.nodes, "mip_checks": out.checks}
        status = (SolveStatus.OPTIMAL if out.status is MipStatus.OPTIMAL and not restricted
                  else SolveStatus.FEASIBLE)
        lb = out.best_bound if (out.best_bound is not None and not restricted) else None
        return SolveResult(assignment=ct.assignment(ctx, choice), status=status,
                           lower_bound_ms=lb, details=details)

    def options(self) -> dict[str, object]:
        return {"backend": self.backend, "gap": self.gap, "max_options": self.max_options,
                "max_nodes": self.max_nodes, "max_checks": self.max_checks}
