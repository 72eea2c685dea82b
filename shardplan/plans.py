"""Plans: built from a solver's assignment, checked, and written to / read from JSON.

The JSON form is documented in ``docs/plan-format.md``. Writing is deterministic (sorted
keys, fixed indentation, floats as Python writes them), so ``to_json(from_json(s)) == s``.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from shardplan import __version__
from shardplan.errors import PlanError, SpecError
from shardplan.parsing import Ctx, Reader, as_enum
from shardplan.specs import (
    topology_from_dict,
    topology_to_dict,
    workload_from_dict,
    workload_to_dict,
)
from shardplan.types import (
    Assignment,
    CostModel,
    Memory,
    Perf,
    Placement,
    PlacementKind,
    Plan,
    Provenance,
    RankPlan,
    Shard,
    ShardCost,
    ShardingOption,
    ShardingType,
    ShardSpec,
    Summary,
    TablePlan,
    Topology,
    Workload,
)

FORMAT_VERSION = 2  # 2: per-lane estimates (send/receive per stage), embedding-v2 cost model


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


_FIXED_RANKS = (ShardingType.ROW_WISE, ShardingType.TABLE_ROW_WISE, ShardingType.DATA_PARALLEL,
                ShardingType.GRID_SHARD)


def option_of(t: TablePlan) -> ShardingOption:
    """The option a plan's table was placed as: its shards, with candidate ranks left open,
    except for the types whose shards the enumerator fixes to one rank each (row-wise,
    table-row-wise, data-parallel), which keep their rank (a row-wise table's ranks say
    which ranks its reduce-scatter runs over)."""
    shards = tuple(ShardSpec(row_offset=s.row_offset, num_rows=s.num_rows, col_offset=s.col_offset,
                             num_cols=s.num_cols) for s in t.shards)
    fixed = t.sharding_type in _FIXED_RANKS
    return ShardingOption(table=t.name, sharding_type=t.sharding_type,
                          placement=t.shards[0].placement, shards=shards,
                          candidate_ranks=tuple((s.rank,) if fixed else None for s in t.shards))


def assignment_of(plan: Plan) -> Assignment:
    """The assignment a plan records, in workload order: the inverse of :func:`build_plan`, to
    re-cost a plan under another cost model."""
    by_name = {t.name: t for t in plan.tables}
    tables = [by_name[spec.name] for spec in plan.workload.tables]
    return Assignment(options=tuple(option_of(t) for t in tables),
                      ranks=tuple(tuple(s.rank for s in t.shards) for t in tables))


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
# JSON
# ---------------------------------------------------------------------------------------------


def plan_to_dict(plan: Plan) -> dict[str, Any]:
    def shard(s: Shard) -> dict[str, Any]:
        d: dict[str, Any] = {"rank": s.rank, "row_offset": s.row_offset, "num_rows": s.num_rows,
                             "col_offset": s.col_offset, "num_cols": s.num_cols,
                             "placement": s.placement.kind.value}
        if s.placement.cache_ratio is not None:
            d["cache_ratio"] = s.placement.cache_ratio
        return d

    sm = plan.summary
    return {
        "format_version": FORMAT_VERSION,
        "summary": {
            "makespan_ms": sm.makespan_ms, "lower_bound_ms": sm.lower_bound_ms,
            "solver": sm.solver, "num_tables": sm.num_tables, "num_ranks": sm.num_ranks,
            "solve_time_s": sm.solve_time_s, "sharding_mix": dict(sm.sharding_mix),
            "status": sm.status,
        },
        "tables": [
            {"name": t.name, "num_embeddings": t.num_embeddings, "embedding_dim": t.embedding_dim,
             "sharding_type": t.sharding_type.value, "shards": [shard(s) for s in t.shards]}
            for t in plan.tables
        ],
        "ranks": [
            {"rank": r.rank, "host": r.host, "device": r.device,
             "memory_bytes": r.memory_bytes.as_dict(), "capacity_bytes": r.capacity_bytes.as_dict(),
             "estimated_ms": r.estimated_ms.lanes_dict() | {"total": r.total_ms}}
            for r in plan.ranks
        ],
        "provenance": {
            "solver": plan.provenance.solver,
            "solver_options": dict(plan.provenance.solver_options),
            "shardplan_version": plan.provenance.shardplan_version,
            "inputs_sha256": plan.provenance.inputs_sha256,
            "cost_model": dict(plan.provenance.cost_model),
        },
        "workload": workload_to_dict(plan.workload),
        "topology": topology_to_dict(plan.topology),
        "replicas": plan.replicas,
    }


def plan_to_json(plan: Plan) -> str:
    return json.dumps(plan_to_dict(plan), indent=2, sort_keys=True, allow_nan=False) + "\n"


def plan_from_json(text: str, source: str = "<plan>") -> Plan:
    """Read a plan written by :func:`plan_to_json`. Raises PlanError / SpecError."""
    try:
        d = json.loads(text)
    except json.JSONDecodeError as exc:
        raise PlanError(f"not valid JSON: {exc.msg}", source=source, line=exc.lineno) from None
    return plan_from_dict(d, source)


def plan_from_dict(d: Any, source: str = "<plan>") -> Plan:
    ctx = Ctx(source, {}, PlanError)
    r = Reader(d, "", ctx, "a plan")
    version = r.int("format_version")
    if version != FORMAT_VERSION:
        raise ctx.fail("format_version", f"this shardplan reads plan format {FORMAT_VERSION}, "
                       f"not {version}; re-run `shardplan solve` to write a new plan")
    workload = workload_from_dict(r.raw("workload"), source, path="workload")
    topology, _ = topology_from_dict(r.raw("topology"), source)
    try:
        s = r.raw("summary")
        summary = Summary(
            makespan_ms=float(s["makespan_ms"]),
            lower_bound_ms=None if s["lower_bound_ms"] is None else float(s["lower_bound_ms"]),
            solver=str(s["solver"]), num_tables=int(s["num_tables"]), num_ranks=int(s["num_ranks"]),
            solve_time_s=float(s["solve_time_s"]), sharding_mix=dict(s["sharding_mix"]),
            status=str(s["status"]))
        tables = []
        placements: dict[tuple[Any, Any], Placement] = {}
        for i, t in enumerate(r.raw("tables")):
            st = as_enum(t["sharding_type"], ShardingType, f"tables[{i}].sharding_type", ctx)
            shards = []
            for sh in t["shards"]:
                key = (sh["placement"], sh.get("cache_ratio"))
                if key not in placements:  # a plan has few distinct placements: build each once
                    kind = as_enum(key[0], PlacementKind, f"tables[{i}].shards", ctx)
                    placements[key] = Placement(kind=kind, cache_ratio=key[1])
                shards.append(Shard(rank=int(sh["rank"]), row_offset=int(sh["row_offset"]),
                                    num_rows=int(sh["num_rows"]), col_offset=int(sh["col_offset"]),
                                    num_cols=int(sh["num_cols"]), placement=placements[key]))
            tables.append(TablePlan(name=str(t["name"]), num_embeddings=int(t["num_embeddings"]),
                                    embedding_dim=int(t["embedding_dim"]), sharding_type=st,
                                    shards=tuple(shards)))
        ranks = []
        for rk in r.raw("ranks"):
            est = dict(rk["estimated_ms"])
            total = float(est.pop("total"))
            ranks.append(RankPlan(
                rank=int(rk["rank"]), host=int(rk["host"]), device=str(rk["device"]),
                memory_bytes=Memory(**{k: float(v) for k, v in rk["memory_bytes"].items()}),
                capacity_bytes=Memory(**{k: float(v) for k, v in rk["capacity_bytes"].items()}),
                estimated_ms=Perf(**{k: float(v) for k, v in est.items()}), total_ms=total))
        p = r.raw("provenance")
        prov = Provenance(solver=str(p["solver"]), solver_options=dict(p["solver_options"]),
                          shardplan_version=str(p["shardplan_version"]),
                          inputs_sha256=str(p["inputs_sha256"]), cost_model=dict(p["cost_model"]))
    except SpecError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise PlanError(f"malformed plan: {type(exc).__name__}: {exc}; re-run `shardplan solve` "
                        "to write a new plan", source=source) from None
    replicas = r.int("replicas", 1)
    if replicas < 1:
        raise ctx.fail("replicas", f"must be >= 1 (1: no 2D replication), got {replicas}")
    r.done()
    return Plan(tables=tuple(tables), ranks=tuple(ranks), summary=summary, provenance=prov,
                workload=workload, topology=topology, replicas=replicas)


def save_plan(plan: Plan, path: str | Path) -> None:
    Path(path).write_text(plan_to_json(plan), encoding="utf-8")


def load_plan(path: str | Path) -> Plan:
    """Read a plan file and check its shards (tiling, ranks, DP replicas; not capacity).
    Raises PlanError naming the file."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise PlanError("plan file not found; write one with `shardplan solve ... --out FILE`",
                        source=str(p)) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise PlanError(f"cannot read plan file: {exc}", source=str(p)) from None
    plan = plan_from_json(text, str(p))
    try:  # a plan that was edited by hand must not be drawn, explained or run
        check_plan(plan, check_memory=False)
    except PlanError as exc:
        raise PlanError(exc.message, source=str(p), key_path=exc.key_path) from None
    return plan
