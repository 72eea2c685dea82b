"""Plans: built from a solver's assignment, checked, and saved to / loaded from files.

The JSON form is :mod:`shardplan.plan_format` (``docs/plan-format.md``; re-exported here).
Loading re-derives a plan's estimates under the cost model that made it
(:func:`check_estimates`) and refuses one edited after solving.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from collections import Counter
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from shardplan import __version__
from shardplan.assignments import assignment_of, option_of
from shardplan.errors import PlanError, ShardplanWarning, SpecError, UnknownCostModelError
from shardplan.estimators.recorded import cost_model_of
from shardplan.parsing import DEFAULT_LIMITS, LoadLimits, read_text
from shardplan.plan_format import (
    FORMAT_VERSION,
    plan_from_dict,
    plan_from_json,
    plan_to_dict,
    plan_to_json,
)
from shardplan.specs import topology_to_dict, workload_to_dict
from shardplan.types import (
    Assignment,
    CostModel,
    Memory,
    Perf,
    Plan,
    Provenance,
    RankPlan,
    Shard,
    ShardCost,
    ShardingType,
    Summary,
    TablePlan,
    Tier,
    Topology,
    Workload,
)
from shardplan.units import format_bytes


def inputs_sha256(workload: Workload, topology: Topology) -> str:
    """A hash of the planning inputs, recorded in the plan's provenance."""
    blob = json.dumps({"workload": workload_to_dict(workload),
                       "topology": topology_to_dict(topology)}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def rank_costs(assignment: Assignment, topology: Topology, cost_model: CostModel) -> list[ShardCost]:
    """Each rank's memory and lane times under ``cost_model``: its fixed overhead, the fixed
    cost of every sharding group the assignment uses, the everywhere-costs of every chosen
    option, and the costs of the shards placed on it."""
    groups = [ri.group for ri in topology.ranks]
    keys = sorted({k for k in (cost_model.group_key(o) for o in assignment.options) if k},
                  key=lambda k: (k.sharding_type.value, k.ranks or ()))
    per_group: dict[int, ShardCost] = {}
    for gi in sorted(set(groups)):
        c = cost_model.rank_overhead(gi)
        for k in keys:
            c = c + cost_model.group_cost(k, gi)
        for o in assignment.options:
            c = c + cost_model.everywhere_cost(o, gi)
        per_group[gi] = c
    costs = [per_group[g] for g in groups]
    for k in keys:
        for r in k.ranks or ():
            costs[r] = costs[r] + cost_model.group_member_cost(k, groups[r])
    for o, i, r in assignment.placed():
        costs[r] = costs[r] + cost_model.shard_cost(o, i, groups[r])
    return costs


def makespan_of(costs: Sequence[ShardCost], cost_model: CostModel) -> float:
    """The step time of ranks with these costs, under the model's ``StepModel``."""
    return cost_model.step.makespan(np.array([c.perf.as_tuple() for c in costs]))


def build_plan(
    *,
    workload: Workload,
    topology: Topology,
    cost_model: CostModel,
    assignment: Assignment,
    solver: str,
    solver_options: Mapping[str, Any] | None = None,
    lower_bound_ms: float | None = None,
    solve_time_s: float = 0.0,
    status: str = "feasible",
) -> Plan:
    """Turn a solver's assignment into a Plan with per-rank estimates."""
    costs = rank_costs(assignment, topology, cost_model)
    ranks = tuple(
        RankPlan(
            rank=ri.rank,
            host=ri.host,
            device=topology.group_of(ri.rank).device.model,
            memory_bytes=_round_mem(c.memory),
            capacity_bytes=_round_mem(topology.capacity(ri.rank)),
            estimated_ms=_round_perf(c.perf),
            total_ms=_r(cost_model.step.rank_time(c.perf)),
        )
        for ri, c in zip(topology.ranks, costs)
    )
    tables = tuple(
        TablePlan(
            name=o.table,
            num_embeddings=workload.table(o.table).num_embeddings,
            embedding_dim=workload.table(o.table).embedding_dim,
            sharding_type=o.sharding_type,
            shards=tuple(
                Shard(rank=r, row_offset=s.row_offset, num_rows=s.num_rows,
                      col_offset=s.col_offset, num_cols=s.num_cols, placement=o.placement)
                for s, r in zip(o.shards, rs)
            ),
        )
        for o, rs in zip(assignment.options, assignment.ranks)
    )
    mix = Counter(t.sharding_type.value for t in tables)
    makespan = _r(makespan_of(costs, cost_model))
    summary = Summary(
        makespan_ms=makespan,
        lower_bound_ms=None if lower_bound_ms is None else _r(lower_bound_ms),
        solver=solver,
        num_tables=len(tables),
        num_ranks=len(ranks),
        solve_time_s=round(solve_time_s, 3),
        sharding_mix=dict(sorted(mix.items())),
        status=status,
    )
    prov = Provenance(
        solver=solver,
        solver_options=dict(sorted((solver_options or {}).items())),
        shardplan_version=__version__,
        inputs_sha256=inputs_sha256(workload, topology),
        cost_model=cost_model.describe(),
    )
    return Plan(tables=tables, ranks=ranks, summary=summary, provenance=prov,
                workload=workload, topology=topology)


def _r(x: float) -> float:
    """Round estimates to 1e-6 ms / 1 byte: below any model's accuracy, stable in JSON."""
    return round(float(x), 6)


def _round_mem(m: Memory) -> Memory:
    return Memory(hbm=float(round(m.hbm)), ddr=float(round(m.ddr)))


def _round_perf(p: Perf) -> Perf:
    return Perf(**{k: _r(v) for k, v in p.lanes_dict().items()})


# ---------------------------------------------------------------------------------------------
# Checks
# ---------------------------------------------------------------------------------------------


def check_plan(plan: Plan, *, check_memory: bool = True) -> None:
    """Raise PlanError unless every table is tiled exactly once (DP: one full replica per
    rank), every rank exists, and (optionally) every rank's memory is within capacity."""
    world = plan.topology.world_size
    names = {t.name for t in plan.workload.tables}
    seen = set()
    for t in plan.tables:
        where = f"tables[{t.name}]"
        if t.name not in names:
            raise PlanError(f"table {t.name!r} is not in the plan's workload", key_path=where)
        if t.name in seen:
            raise PlanError(f"table {t.name!r} appears twice", key_path=where)
        seen.add(t.name)
        spec = plan.workload.table(t.name)
        if (t.num_embeddings, t.embedding_dim) != (spec.num_embeddings, spec.embedding_dim):
            raise PlanError(f"table {t.name!r} is {t.num_embeddings}x{t.embedding_dim} in the "
                            f"plan but {spec.num_embeddings}x{spec.embedding_dim} in its workload",
                            key_path=where)
        for i, s in enumerate(t.shards):
            if not 0 <= s.rank < world:
                raise PlanError(f"shard {i} of {t.name!r} is on rank {s.rank}, but the topology "
                                f"has ranks 0..{world - 1}", key_path=f"{where}.shards[{i}]")
            if (s.num_rows <= 0 or s.num_cols <= 0 or s.row_offset < 0 or s.col_offset < 0
                    or s.row_offset + s.num_rows > t.num_embeddings
                    or s.col_offset + s.num_cols > t.embedding_dim):
                raise PlanError(f"shard {i} of {t.name!r} (rows {s.row_offset}+{s.num_rows}, cols "
                                f"{s.col_offset}+{s.num_cols}) lies outside the "
                                f"{t.num_embeddings}x{t.embedding_dim} table",
                                key_path=f"{where}.shards[{i}]")
        if t.sharding_type is ShardingType.DATA_PARALLEL:
            ranks = sorted(s.rank for s in t.shards)
            full = all(s.num_rows == t.num_embeddings and s.num_cols == t.embedding_dim
                       for s in t.shards)
            if ranks != list(range(world)) or not full:
                raise PlanError(f"data-parallel table {t.name!r} must hold one full replica on "
                                f"each of the {world} ranks", key_path=where)
        else:
            _check_tiling(t, where)
            if t.sharding_type in _HOST_LOCAL:
                _check_one_host(plan.topology, t, where)
    missing = names - seen
    if missing:
        raise PlanError(f"table(s) {', '.join(sorted(missing))} have no shards in the plan",
                        key_path="tables")
    if check_memory:
        for r in plan.ranks:
            if not r.memory_bytes.fits_in(r.capacity_bytes):
                raise PlanError(f"rank {r.rank} needs {r.memory_bytes} but has {r.capacity_bytes}",
                                key_path=f"ranks[{r.rank}]")


_HOST_LOCAL = (ShardingType.TABLE_ROW_WISE, ShardingType.TABLE_COLUMN_WISE,
               ShardingType.GRID_SHARD)


def _check_one_host(topology: Topology, t: TablePlan, where: str) -> None:
    """TWRW and TWCW shards stay inside one host (GRID: each column block's row blocks): their
    reduce-scatter / column shards run over the host's fabric (NVLink), and the executor and
    TorchRec build them that way."""
    firsts: dict[tuple[int, int], tuple[int, int]] = {}
    for i, s in enumerate(t.shards):
        h = topology.rank(s.rank).host
        block = (s.col_offset, s.num_cols) if t.sharding_type is ShardingType.GRID_SHARD else (0, 0)
        j, first = firsts.setdefault(block, (i, h))
        if h != first:
            raise PlanError(
                f"{t.sharding_type.short} table {t.name!r}: shard {i} is on rank {s.rank} of host "
                f"{h}, but shard {j} is on host {first}; {t.sharding_type.short} shards must stay "
                f"inside one host (move shard {i} to a rank of host {first}, or use "
                f"{'column_wise' if t.sharding_type is ShardingType.TABLE_COLUMN_WISE else 'row_wise'})",
                key_path=f"{where}.shards[{i}]")


def _check_tiling(t: TablePlan, where: str) -> None:
    """Shards must tile rows x cols exactly once: areas add up and no two overlap."""
    area = sum(s.num_rows * s.num_cols for s in t.shards)
    if area != t.num_embeddings * t.embedding_dim:
        raise PlanError(f"the shards of {t.name!r} cover {area} cells of its "
                        f"{t.num_embeddings * t.embedding_dim}: a shard is missing or overlaps",
                        key_path=where)
    boxes = sorted(t.shards, key=lambda s: (s.row_offset, s.col_offset))
    for i, a in enumerate(boxes):
        for b in boxes[i + 1:]:
            if b.row_offset >= a.row_offset + a.num_rows:
                break
            if (a.col_offset < b.col_offset + b.num_cols and b.col_offset < a.col_offset + a.num_cols):
                raise PlanError(f"shards of {t.name!r} overlap: rows {a.row_offset}+{a.num_rows} "
                                f"cols {a.col_offset}+{a.num_cols} (rank {a.rank}) and rows "
                                f"{b.row_offset}+{b.num_rows} cols {b.col_offset}+{b.num_cols} "
                                f"(rank {b.rank})", key_path=where)


# ---------------------------------------------------------------------------------------------
# Files, and the estimates re-derived on load
# ---------------------------------------------------------------------------------------------

#: Recorded and re-derived estimates agree within this (relative; absolute: 1e-6 ms, 1 byte).
ESTIMATE_RTOL = 1e-6


def check_estimates(plan: Plan, cost_model: CostModel | None = None) -> bool:
    """Re-derive a plan's estimates from its shards and refuse a plan that disagrees.

    The plan is rebuilt with :func:`build_plan` from its recorded shards under the cost model
    that made it (``cost_model``, else :func:`~shardplan.estimators.recorded.cost_model_of`),
    then, in order: every rank's memory must fit what its topology gives; the recorded
    capacities, per-rank memory, stage times and step times, and the summary's makespan must
    equal the rebuilt ones; and ``provenance.inputs_sha256`` must match the plan's workload
    and topology. So a plan whose shards, estimates, summary or topology were edited after
    solving is refused, whatever the cost model composes.

    Args:
        plan: the plan (structure already checked by :func:`check_plan`).
        cost_model: the model to re-derive with; default: the one the plan records.

    Returns:
        True if the estimates were re-derived and match; False (with a ``ShardplanWarning``)
        when the plan's cost model cannot be rebuilt; then only capacities, recorded memory
        within them, and the inputs hash are checked.

    Raises:
        PlanError: naming the rank or summary field that disagrees.
    """
    topo = plan.topology
    if cost_model is None:
        try:
            cost_model = cost_model_of(plan)
        except UnknownCostModelError as exc:
            warnings.warn(f"{exc.message}; its estimates were not re-derived (capacities and "
                          "inputs checked)", ShardplanWarning, stacklevel=2)
            cost_model = None
    if cost_model is not None:
        rebuilt = build_plan(workload=plan.workload, topology=topo, cost_model=cost_model,
                             assignment=assignment_of(plan), solver=plan.summary.solver)
        ranks = rebuilt.ranks
    else:
        rebuilt, ranks = None, plan.ranks
    for rp in ranks:  # what the shards need against what the topology gives
        cap = topo.capacity(rp.rank)
        for tier in Tier:
            need, have = rp.memory_bytes.get(tier), cap.get(tier)
            if need > have * (1 + ESTIMATE_RTOL) + 1:
                raise PlanError(f"rank {rp.rank} needs {format_bytes(need)} of {tier.value.upper()} but "
                                f"its device has {format_bytes(have)} usable: the plan does not fit its "
                                "topology (edited after solving?); re-solve with `shardplan "
                                "solve`", key_path=f"ranks[{rp.rank}].memory_bytes.{tier.value}")
    for rp in plan.ranks:
        cap = topo.capacity(rp.rank)
        for tier in Tier:
            if not _close(rp.capacity_bytes.get(tier), round(cap.get(tier)), 1.0):
                raise PlanError(f"rank {rp.rank} records {rp.capacity_bytes.get(tier):.0f} B of "
                                f"{tier.value} capacity but its topology gives "
                                f"{round(cap.get(tier))} B: the plan was edited after solving; "
                                "re-solve with `shardplan solve`",
                                key_path=f"ranks[{rp.rank}].capacity_bytes.{tier.value}")
    if rebuilt is not None:
        model_replicas = getattr(getattr(cost_model, "options", None), "replicas", plan.replicas)
        if plan.replicas != model_replicas:
            raise PlanError(f"the plan says replicas={plan.replicas} but its cost model was run "
                            f"with replicas={model_replicas}: the plan was edited after solving; "
                            "re-solve with `shardplan solve`", key_path="replicas")
        _compare(plan, rebuilt)
    if plan.provenance.inputs_sha256 != inputs_sha256(plan.workload, topo):
        raise PlanError("the plan's workload or topology differs from what it was solved for "
                        "(provenance.inputs_sha256 does not match): the plan was edited after "
                        "solving; re-solve with `shardplan solve`",
                        key_path="provenance.inputs_sha256")
    return rebuilt is not None


def _compare(plan: Plan, rebuilt: Plan) -> None:
    """Raise PlanError at the first recorded figure that differs from the rebuilt one."""
    for rp, rb in zip(plan.ranks, rebuilt.ranks):
        for tier in Tier:
            want, got = rp.memory_bytes.get(tier), rb.memory_bytes.get(tier)
            if not _close(want, got, 1.0):
                raise PlanError(
                    f"rank {rp.rank} records {want:.0f} B of {tier.value} but the shards the plan "
                    f"puts on it need {got:.0f} B: the plan was edited after solving (a shard "
                    "moved or resized); re-solve with `shardplan solve`",
                    key_path=f"ranks[{rp.rank}].memory_bytes.{tier.value}")
        recorded = rp.estimated_ms.lanes_dict() | {"total": rp.total_ms}
        derived = rb.estimated_ms.lanes_dict() | {"total": rb.total_ms}
        for k, want in recorded.items():
            if not _close(want, derived[k], 1e-6):
                raise PlanError(
                    f"rank {rp.rank} records {k} {want:.6g} ms but its shards give "
                    f"{derived[k]:.6g} ms under the plan's cost model: the plan was edited after "
                    "solving, or made by another shardplan version; re-solve with `shardplan "
                    "solve`", key_path=f"ranks[{rp.rank}].estimated_ms.{k}")
    want, got = plan.summary.makespan_ms, rebuilt.summary.makespan_ms
    if not _close(want, got, 1e-6):
        raise PlanError(f"the summary says makespan {want:.6g} ms but the plan's shards give "
                        f"{got:.6g} ms: the plan was edited after solving; re-solve with "
                        "`shardplan solve`", key_path="summary.makespan_ms")


def _close(a: float, b: float, atol: float) -> bool:
    return abs(a - b) <= atol + ESTIMATE_RTOL * max(abs(a), abs(b))


#: FBGEMM's table-batched embedding kernels (``SplitTableBatchedEmbeddingBagsCodegen``) need
#: every table's width to be a multiple of 4 (their assertion: "embedding_dim must be a
#: multiple of 4"); the executor's torch kernels run any width.
FBGEMM_WIDTH_MULTIPLE = 4


def fbgemm_unsupported(plans: Plan | Sequence[Plan]) -> dict[str, int]:
    """The tables FBGEMM's kernels cannot run, each with a shard width (columns) that is not a
    multiple of :data:`FBGEMM_WIDTH_MULTIPLE`; empty when FBGEMM runs every shard."""
    out: dict[str, int] = {}
    for p in ([plans] if isinstance(plans, Plan) else plans):
        for t in p.tables:
            width = next((s.num_cols for s in t.shards
                          if s.num_cols % FBGEMM_WIDTH_MULTIPLE), None)
            if width is not None:
                out.setdefault(t.name, width)
    return out


def kernel_backend(plans: Plan | Sequence[Plan], requested: str | None = "auto") -> str:
    """The kernel backend to run ``plans`` with, decided before anything runs: ``requested``,
    except that ``auto`` becomes ``torch`` (with a ``ShardplanWarning`` naming the tables)
    when FBGEMM cannot run some shard's width.

    Raises:
        SpecError: ``fbgemm`` was asked for but FBGEMM cannot run some shard's width.
    """
    requested = requested or "auto"
    bad = fbgemm_unsupported(plans)
    if not bad or requested == "torch":
        return requested
    shown = ", ".join(f"{name} ({w} columns)" for name, w in list(bad.items())[:4])
    more = f" and {len(bad) - 4} more" if len(bad) > 4 else ""
    why = (f"FBGEMM's kernels need shard widths that are multiples of "
           f"{FBGEMM_WIDTH_MULTIPLE}, and {len(bad)} table(s) have others: {shown}{more}")
    if requested == "fbgemm":
        raise SpecError(f"{why}; pass --backend torch (or auto), or give those tables widths "
                        f"that are multiples of {FBGEMM_WIDTH_MULTIPLE}", key_path="backend")
    warnings.warn(f"{why}; running every lookup with the torch kernels", ShardplanWarning,
                  stacklevel=2)
    return "torch"


def save_plan(plan: Plan, path: str | Path) -> None:
    """Write ``plan`` as JSON (:func:`plan_to_json`) to ``path``."""
    Path(path).write_text(plan_to_json(plan), encoding="utf-8")


def load_plan(path: str | Path, *, check: bool = True,
              limits: LoadLimits = DEFAULT_LIMITS) -> Plan:
    """Read a plan file and check it: every field (:func:`plan_from_json`), the shards
    (:func:`check_plan`: tiling, ranks, DP replicas) and, with ``check``, the estimates and
    capacities re-derived under the plan's cost model (:func:`check_estimates`).

    Args:
        path: the plan JSON.
        check: re-derive the estimates (a few seconds for a million shards); the structural
            checks always run.
        limits: the loaders' resource limits.

    Returns:
        The plan.

    Raises:
        PlanError: naming the file and the key path at fault; a plan edited after solving.
    """
    p = Path(path)
    try:
        text = read_text(p, "plan", limits, PlanError)
    except PlanError as exc:
        if "not found" in exc.message:
            raise PlanError("plan file not found; write one with `shardplan solve ... --out "
                            "FILE`", source=str(p)) from None
        raise
    plan = plan_from_json(text, str(p), limits=limits)
    try:  # a plan that was edited by hand must not be drawn, explained or run
        check_plan(plan, check_memory=False)
        if check:
            check_estimates(plan)
    except PlanError as exc:
        raise PlanError(exc.message, source=str(p), key_path=exc.key_path) from None
    return plan


__all__ = ["ESTIMATE_RTOL", "FBGEMM_WIDTH_MULTIPLE", "FORMAT_VERSION", "assignment_of",
           "build_plan", "check_estimates", "check_plan", "fbgemm_unsupported", "inputs_sha256",
           "kernel_backend", "load_plan", "option_of", "plan_from_dict",
           "plan_from_json", "plan_to_dict", "plan_to_json", "rank_costs", "save_plan"]
