"""The front door of re-planning: an old plan and a changed cluster (or workload) -> a new plan
that moves as few bytes as the step time allows.

See ``docs/replan.md``. The solvers: ``greedy`` (keep what can stay, place the rest),
``local_search`` (then moves and option changes on the critical ranks), ``ilp`` (the
placement ILP with keep variables, warm-started), ``auto`` (greedy and local search from the
old plan, also steered by the move weights ``ALT_WEIGHTS``, local search from a plan made from
scratch, that plan repaired toward the old state (``search.repair_moves``) and polished, and
the ILP on small instances: the best objective wins).
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from typing import Sequence

from shardplan.enumerators import EnumerationOptions, enumerate_options
from shardplan.errors import InfeasiblePlanError, SolverError, SpecError
from shardplan.plans import build_plan
from shardplan.replanning.migration import Links, Migration, OldData, block_bytes, \
    estimate_migration
from shardplan.replanning.moves import DEFAULT_MOVE_WEIGHT, MoveTables, Objective
from shardplan.replanning.ranks import RankMap, map_ranks
from shardplan.replanning.search import DEFAULT_MAX_EVALS, evaluate_moves, improve_moves, \
    objective_of, repair_moves, warm_start
from shardplan.solvers.common import CostTables, TableGroups, check_groups, diagnose_infeasible
from shardplan.solvers.greedy import greedy_choice
from shardplan.types import (
    CostModel,
    Plan,
    PlanningContext,
    ShardingOption,
    ShardingType,
    ShardSpec,
    TablePlan,
    Topology,
    Workload,
)
from shardplan.units import format_bytes

#: Solvers ``replan`` accepts.
REPLAN_SOLVERS = ("auto", "greedy", "local_search", "ilp")
#: ``auto`` also runs local search from the old plan under these move weights and keeps what
#: it finds if it is better under the asked objective (within the budget): another path out
#: of the same start, which local search alone may miss.
ALT_WEIGHTS = (1e-2, 1e-3)
#: The ILP's safety-net time limit, seconds (its real limit is a node count).
ILP_MAX_S = 20.0
_FIXED = (ShardingType.ROW_WISE, ShardingType.TABLE_ROW_WISE, ShardingType.DATA_PARALLEL,
          ShardingType.GRID_SHARD)


@dataclass(frozen=True, kw_only=True, slots=True)
class ReplanResult:
    """A re-plan and what moving to it costs.

    Attributes:
        plan: the new plan.
        migration: bytes and time of moving from the old plan to it.
        rank_map: old ranks to new ranks.
        details: what each solver tried (objective, makespan, bytes), which won.
    """

    plan: Plan
    migration: Migration
    rank_map: RankMap
    details: dict


def check_tables(old_plan: Plan, workload: Workload) -> None:
    """Refuse a workload whose tables cannot take the old plan's state.

    Raises:
        SpecError: a table of both whose columns, dtype or optimizer changed (its state
            cannot be carried over: rename it to start it fresh), or no table in common.
    """
    old = {t.name: t for t in old_plan.workload.tables}
    bad = []
    for t in workload.tables:
        o = old.get(t.name)
        if o is None:
            continue
        why = [f"{k} {a} -> {b}" for k, a, b in (
            ("embedding_dim", o.embedding_dim, t.embedding_dim),
            ("dtype", o.dtype.value, t.dtype.value),
            ("optimizer", old_plan.workload.optimizer_of(o).value,
             workload.optimizer_of(t).value)) if a != b]
        if why:
            bad.append(f"{t.name} ({', '.join(why)})")
    if bad:
        raise SpecError("the old plan's tables do not match the workload: " + "; ".join(bad)
                        + ". Their state cannot be carried over; rename a table to start it "
                        "fresh", key_path="tables")
    if not set(old) & {t.name for t in workload.tables}:
        raise SpecError(f"the workload {workload.name!r} has no table of the old plan (which has "
                        f"{', '.join(sorted(old)[:5])}{' ...' if len(old) > 5 else ''}): is it "
                        "the right file?", key_path="tables")


def keep_option(old: TablePlan, workload: Workload, topology: Topology, rank_map: RankMap
                ) -> tuple[ShardingOption, tuple[int, ...]] | None:
    """The old placement of a table as an option of the new problem, with its ranks, or None
    when it cannot stay (rows changed, a shard's rank lost, its constraints forbid it, a
    data-parallel table that no longer covers every rank, host-local shards split)."""
    spec = workload.table(old.name)
    if spec.num_embeddings != old.num_embeddings:
        return None
    ranks = tuple(rank_map.new(s.rank) for s in old.shards)
    if any(r is None for r in ranks):
        return None
    st, pl = old.sharding_type, old.shards[0].placement
    cons = spec.constraints
    if not cons.allows(st) or not cons.allows_placement(pl.kind):
        return None
    if any(old.name in g for g in workload.colocate) and st is not ShardingType.TABLE_WISE:
        return None
    pins = tuple(sorted(set(cons.pinned_ranks))) if cons.pinned_ranks else None
    if pins is not None and not set(ranks) <= set(pins):
        return None
    hosts = [topology.rank(r).host for r in ranks]
    cands: list[tuple[int, ...] | None]
    if st is ShardingType.DATA_PARALLEL:
        if sorted(ranks) != list(range(topology.world_size)):
            return None
        cands = [(r,) for r in ranks]
    elif st in (ShardingType.TABLE_ROW_WISE, ShardingType.TABLE_COLUMN_WISE):
        if len(set(hosts)) != 1:
            return None
        cands = [(r,) for r in ranks] if st is ShardingType.TABLE_ROW_WISE else \
            [topology.ranks_of_host(hosts[0])] * len(ranks)
        if pins is not None and st is ShardingType.TABLE_COLUMN_WISE and \
                not set(cands[0]) <= set(pins):
            return None
    elif st is ShardingType.GRID_SHARD:
        blocks: dict[int, set[int]] = {}
        for s, h in zip(old.shards, hosts):
            blocks.setdefault(s.col_offset, set()).add(h)
        if any(len(v) != 1 for v in blocks.values()):
            return None
        cands = [(r,) for r in ranks]
    elif st in _FIXED:
        cands = [(r,) for r in ranks]
    else:
        cands = [pins] * len(ranks)
    shards = tuple(ShardSpec(row_offset=s.row_offset, num_rows=s.num_rows,
                             col_offset=s.col_offset, num_cols=s.num_cols) for s in old.shards)
    o = ShardingOption(table=old.name, sharding_type=st, placement=pl, shards=shards,
                       candidate_ranks=tuple(cands))
    return o, tuple(int(r) for r in ranks)


def _unchanged(old_plan: Plan, topology: Topology, workload: Workload, rm: RankMap) -> bool:
    return rm.identity and topology == old_plan.topology and workload == old_plan.workload


def replan_full(
    old_plan: Plan,
    topology: Topology,
    workload: Workload | None = None,
    *,
    move_weight: float | None = None,
    move_budget_bytes: float | None = None,
    solver: str = "auto",
    lost_hosts: Sequence[int] = (),
    cost_model: CostModel | None = None,
    enumeration: EnumerationOptions | None = None,
    max_evals: int = DEFAULT_MAX_EVALS,
    ilp_max_cells: int = 512,
    time_limit_s: float = 60.0,
) -> ReplanResult:
    """:func:`replan`, returning the migration and what each solver found as well."""
    t0 = time.perf_counter()
    if not isinstance(old_plan, Plan):
        raise SpecError(f"replan() needs old_plan= a Plan (load_plan), got "
                        f"{type(old_plan).__name__}", key_path="old_plan")
    if not isinstance(topology, Topology):
        raise SpecError(f"replan() needs topology= a Topology (load_topology), got "
                        f"{type(topology).__name__}", key_path="topology")
    if old_plan.replicas != 1:
        raise SpecError(f"the old plan is a 2D plan ({old_plan.replicas} replicas); replan "
                        "handles plans of one sharding group", key_path="replicas")
    if solver not in REPLAN_SOLVERS:
        raise SpecError(f"unknown replan solver {solver!r}; choose one of "
                        f"{', '.join(REPLAN_SOLVERS)}", key_path="solver")
    if move_weight is not None and move_budget_bytes is not None:
        raise SpecError("give --move-weight or --move-budget, not both", key_path="move_weight")
    obj = Objective(move_weight=move_weight if move_budget_bytes is None and move_weight is not None
                    else (DEFAULT_MOVE_WEIGHT if move_budget_bytes is None else None),
                    budget_bytes=move_budget_bytes)
    work = old_plan.workload if workload is None else workload
    if not isinstance(work, Workload):
        raise SpecError(f"replan() needs workload= a Workload, got {type(work).__name__}",
                        key_path="workload")
    check_tables(old_plan, work)
    rm = map_ranks(old_plan.topology, topology, lost_hosts)
    if cost_model is None:
        from shardplan.estimators import default_cost_model

        cost_model = default_cost_model(work, topology)
    options = enumerate_options(work, topology, enumeration)
    old_tables = {t.name: t for t in old_plan.tables}
    keep_raw: dict[str, tuple[ShardingOption, tuple[int, ...]]] = {}
    for t in work.tables:
        if t.name in old_tables:
            k = keep_option(old_tables[t.name], work, topology, rm)
            if k is not None:
                keep_raw[t.name] = k
                if k[0] not in options[t.name]:
                    options[t.name] = list(options[t.name]) + [k[0]]
    ctx = PlanningContext(workload=work, topology=topology, cost_model=cost_model,
                          options=options, time_limit_s=time_limit_s)
    ct = CostTables.of(ctx)
    groups = TableGroups.of(ctx, ct)
    keep = []
    for ti, name in enumerate(ct.tables):
        k = keep_raw.get(name)
        if k is None:
            keep.append(None)
            continue
        oi = next(i for i, oc in enumerate(ct.options[ti]) if oc.option == k[0])
        keep.append((oi, k[1]))
    data = OldData.of(old_plan, work, rm)
    links = Links(topology)
    mt = MoveTables(ct, work, data, links)
    _check_budget(obj, data, work)
    details: dict = {"objective": obj.as_dict(), "tried": {}}
    if _unchanged(old_plan, topology, work, rm) and all(k is not None for k in keep):
        choice = [(oi, rs) for oi, rs in keep]
        best = (evaluate_moves(mt, choice), "kept", choice)
    else:
        best = _solve(mt, groups, obj, keep, solver, details, max_evals, ilp_max_cells, ctx,
                      old_plan.topology.num_hosts)
    s, picked, choice = best
    problem = check_groups(ct, groups, choice)
    if problem:
        raise SolverError(f"replan broke a co-location/separation constraint: {problem}")
    details["picked"] = picked
    details["kept_tables"] = sum(1 for ti, c in enumerate(choice)
                                 if keep[ti] is not None and tuple(c) == tuple(keep[ti]))
    opts = {"replan": {**obj.as_dict(), "solver": solver, "picked": picked,
                       "lost_hosts": list(rm.lost_hosts), "max_evals": max_evals,
                       "old_inputs_sha256": old_plan.provenance.inputs_sha256}}
    plan = build_plan(workload=work, topology=topology, cost_model=cost_model,
                      assignment=ct.assignment(ctx, choice), solver=f"replan/{picked}",
                      solver_options=opts, solve_time_s=time.perf_counter() - t0)
    mig = estimate_migration(old_plan, plan, rm)
    return ReplanResult(plan=plan, migration=mig, rank_map=rm, details=details)


def replan(old_plan: Plan, topology: Topology, workload: Workload | None = None, *,
           move_weight: float | None = None, move_budget_bytes: float | None = None,
           solver: str = "auto", lost_hosts: Sequence[int] = (),
           cost_model: CostModel | None = None, **kwargs) -> Plan:
    """Re-plan ``old_plan`` for a changed topology or workload, moving few bytes.

    The objective is ``makespan_ms + move_weight x migration_ms`` (default weight
    ``DEFAULT_MOVE_WEIGHT`` = 0.01: the migration amortised over 100 steps), or, with
    ``move_budget_bytes``, the makespan with at most that many bytes moved. A shard that keeps
    its table, rows, columns and device costs nothing; see ``docs/replan.md`` for how ranks of
    a changed topology map (:func:`shardplan.replanning.map_ranks`) and how bytes and time are
    counted (:mod:`shardplan.replanning.migration`). With the topology and workload unchanged the
    old plan comes back and nothing moves.

    Args:
        old_plan: the plan the job runs now (:func:`shardplan.load_plan`).
        topology: the new cluster.
        workload: the new tables (default: the old plan's): tables may be added or removed,
            their rows changed; columns, dtype and optimizer of a kept table may not.
        move_weight: ms of step time one ms of migration is worth.
        move_budget_bytes: the most bytes (weights and optimizer state) that may move.
        solver: ``auto``, ``greedy``, ``local_search`` or ``ilp``.
        lost_hosts: old host ids that are gone (default: a shrunk group loses its last hosts).
        cost_model: default: the default cost model of the new problem.
        **kwargs: ``enumeration``, ``max_evals``, ``ilp_max_cells``, ``time_limit_s``.

    Returns:
        The new plan; its provenance records the objective and the lost hosts.

    Raises:
        SpecError: bad arguments, or a workload whose tables do not match the old plan.
        InfeasiblePlanError: the new cluster cannot hold the tables (says what would), or
            the budget is below what must move.

    Example:
        >>> import shardplan
        >>> topo, work = shardplan.load_problem("dgx-h100-2x8")
        >>> old = shardplan.plan(work, topo, solver="greedy")
        >>> new = replan(old, topo)
        >>> [t.shards for t in new.tables] == [t.shards for t in old.tables]
        True
    """
    return replan_full(old_plan, topology, workload, move_weight=move_weight,
                       move_budget_bytes=move_budget_bytes, solver=solver,
                       lost_hosts=lost_hosts, cost_model=cost_model, **kwargs).plan


def _check_budget(obj: Objective, data: OldData, work: Workload) -> None:
    """The state of lost hosts must be restored whatever the plan: refuse a smaller budget."""
    if obj.budget_bytes is None:
        return
    lost = sum(block_bytes(work.table(name), work, b.num_rows, b.num_cols)
               for name, bs in data.blocks.items() for b in bs if not b.holders)
    if lost > obj.budget_bytes:
        raise InfeasiblePlanError(
            f"the move budget {format_bytes(obj.budget_bytes)} is below the "
            f"{format_bytes(lost)} of lost hosts' shards that must be restored",
            suggestions=(f"a budget of at least {lost / 2**30:.2f} GiB",))


def _solve(mt: MoveTables, groups: TableGroups, obj: Objective, keep, solver: str,
           details: dict, max_evals: int, ilp_max_cells: int, ctx: PlanningContext,
           old_hosts: int):
    ct = mt.ct
    tried = details["tried"]
    found = []

    def note(name: str, s) -> None:
        tried[name] = {"objective_ms": round(objective_of(mt, obj, s), 6),
                       "makespan_ms": round(float(s.st.makespan), 6),
                       "moved_bytes": round(float(s.moved))}

    w = warm_start(mt, groups, obj, keep)
    if w.choice is not None:
        note("greedy", w.state)
        found.append((w.state, "greedy", w.choice))
        if solver in ("auto", "local_search", "ilp"):
            c, s, stats = improve_moves(mt, groups, obj, w.choice, max_evals=max_evals)
            note("local_search", s)
            tried["local_search"]["moves"] = stats.moves
            tried["local_search"]["reoptions"] = stats.reoptions
            found.append((s, "local_search", c))
        if solver == "auto":  # the same search steered by other weights: another path
            for alt in ALT_WEIGHTS:
                if obj.move_weight == alt:
                    continue
                c, s, _ = improve_moves(mt, groups, Objective(move_weight=alt), w.choice,
                                        max_evals=max_evals)
                if obj.within(s.moved):
                    note(f"local_search(weight {alt:g})", s)
                    found.append((s, f"local_search(weight {alt:g})", c))
    else:
        tried["greedy"] = {"failed": w.failed[:10]}
    if solver == "auto" or (w.choice is None and solver != "ilp"):
        g = greedy_choice(ct, groups)
        if g.choice is not None:
            c, s, _ = improve_moves(mt, groups, obj, g.choice, max_evals=max_evals)
            if obj.within(s.moved):
                note("local_search(from scratch)", s)
                found.append((s, "local_search(from scratch)", c))
            else:
                tried["local_search(from scratch)"] = {"over_budget_bytes": round(s.moved)}
            # the same, with shards brought back to their old state (to the budget), polished
            c, s = repair_moves(mt, groups, obj, c, keep)
            c, s, _ = improve_moves(mt, groups, obj, c, max_evals=max_evals)
            if obj.within(s.moved):
                note("repaired(from scratch)", s)
                found.append((s, "repaired(from scratch)", c))
        elif not found:
            raise _infeasible(ctx, g.failed, ct, old_hosts)
    if solver == "ilp" or (solver == "auto" and len(ct.tables) * ct.world <= ilp_max_cells):
        from shardplan.replanning.ilp import solve_keep_ilp

        warm = min(found, key=lambda f: (objective_of(mt, obj, f[0]), f[1]))[2] if found else None
        res = solve_keep_ilp(mt, groups, obj, keep, warm,
                             time_limit_s=min(ctx.time_limit_s, ILP_MAX_S))
        details["ilp"] = res.details
        if res.choice is not None:
            s = evaluate_moves(mt, res.choice)
            if obj.within(s.moved):
                note("ilp", s)
                found.append((s, "ilp", res.choice))
    if not found:
        raise _infeasible(ctx, w.failed, ct, old_hosts)
    return min(found, key=lambda f: (round(objective_of(mt, obj, f[0]), 9), f[0].moved,
                                     f[1]))


def _infeasible(ctx: PlanningContext, failed: list[str], ct: CostTables,
                old_hosts: int = 0) -> InfeasiblePlanError:
    """Why the new topology cannot hold the tables (the planner's diagnosis), and how many
    hosts of it would (for one host group: the fewest for which the planner's greedy places
    every table, found by bisection)."""
    err = diagnose_infeasible(ctx, failed, ct)
    topo = ctx.topology
    suggestions = list(err.suggestions)
    need = _hosts_needed(ctx, max(old_hosts, topo.num_hosts))
    if need is not None:
        g = topo.host_groups[0]
        suggestions.insert(0, f"{need} hosts of {g.devices_per_host} x {g.device.model} "
                              f"({need * g.devices_per_host} ranks) hold them")
    return InfeasiblePlanError(f"the new topology {topo.name!r} ({topo.num_hosts} host(s), "
                               f"{topo.world_size} ranks) cannot hold the tables: {err.message}",
                               tables=err.tables, shortfalls=err.shortfalls,
                               suggestions=tuple(suggestions))


def _fits(ctx: PlanningContext, hosts: int) -> bool:
    g = ctx.topology.host_groups[0]
    topo = dataclasses.replace(ctx.topology, host_groups=(dataclasses.replace(g, hosts=hosts),))
    from shardplan.estimators import default_cost_model

    c2 = PlanningContext(workload=ctx.workload, topology=topo,
                         cost_model=default_cost_model(ctx.workload, topo),
                         options=enumerate_options(ctx.workload, topo))
    ct2 = CostTables.of(c2)
    return greedy_choice(ct2, TableGroups.of(c2, ct2)).choice is not None


def _hosts_needed(ctx: PlanningContext, old_hosts: int) -> int | None:
    """The fewest hosts (one host group only) for which greedy places every table, up to
    four times the larger of the old and new host counts; None if none or several groups."""
    if len(ctx.topology.host_groups) != 1:
        return None
    lo, hi = ctx.topology.num_hosts, max(old_hosts, ctx.topology.num_hosts + 1)
    while not _fits(ctx, hi):
        lo, hi = hi, hi * 2
        if hi > 4 * max(old_hosts, ctx.topology.num_hosts):
            return None
    while hi - lo > 1:  # lo does not fit, hi does
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if _fits(ctx, mid) else (mid, hi)
    return hi


__all__ = ["REPLAN_SOLVERS", "ReplanResult", "check_tables", "keep_option", "replan",
           "replan_full"]

