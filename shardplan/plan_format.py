"""The JSON form of a plan (``docs/plan-format.md``): written deterministically, read strictly.

Writing sorts keys and uses a fixed indentation, so ``plan_to_json(plan_from_json(s)) == s``.
Reading checks every field's type and range and names the file and key path of the first bad
one: a number that is NaN, infinite or negative, a rank list that does not match the
topology, a summary that does not match the tables (counts, sharding mix, a lower bound above
the makespan, a status that is not a status). What needs the cost model (the recorded
estimates themselves) is checked on load by :func:`shardplan.plans.check_estimates`.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections import Counter
from typing import Any

from shardplan.errors import LimitError, PlanError, SpecError
from shardplan.parsing import DEFAULT_LIMITS, Ctx, LoadLimits, Reader, as_enum, build, check_depth
from shardplan.specs import topology_from_dict, topology_to_dict, workload_from_dict, workload_to_dict
from shardplan.types import (
    Memory,
    Perf,
    Placement,
    PlacementKind,
    Plan,
    Provenance,
    RankPlan,
    Shard,
    ShardingType,
    Summary,
    TablePlan,
    Tier,
)

FORMAT_VERSION = 2  # 2: per-lane estimates (send/receive per stage), embedding-v2 cost model
#: A plan's ``summary.status``: lower-case words (``optimal``, ``feasible``, ``time_limit``).
STATUS_PATTERN = re.compile(r"[a-z][a-z_]{0,31}")
#: The statuses a plan can have: the solvers end ``optimal`` (proved within the solver's gap)
#: or ``feasible``; an infeasible problem has no plan.
PLAN_STATUSES = ("optimal", "feasible")
#: The gap an ``optimal`` plan may show when its solver records none (``solver_options.gap``).
DEFAULT_OPTIMAL_GAP = 0.01
#: How far a recorded lower bound may lie above the makespan (solver tolerances), relative.
BOUND_SLACK = 1e-4

_SHARD_KEYS = frozenset(("rank", "row_offset", "num_rows", "col_offset", "num_cols", "placement"))
_PERF_KEYS = tuple(f.name for f in dataclasses.fields(Perf))
_TIER_KEYS = tuple(t.value for t in Tier)


def plan_to_dict(plan: Plan) -> dict[str, Any]:
    """The JSON form of ``plan`` as plain dicts and lists (see ``docs/plan-format.md``)."""
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
    """The plan file's text: sorted keys, two-space indent, a final newline."""
    return json.dumps(plan_to_dict(plan), indent=2, sort_keys=True, allow_nan=False) + "\n"


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number a plan may hold")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object, refusing a key given twice (``json`` would keep the last silently)."""
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise ValueError(f"the key {k[:40]!r} appears twice in one object; keep one")
        out[k] = v
    return out


def plan_from_json(text: str, source: str = "<plan>", *,
                   limits: LoadLimits = DEFAULT_LIMITS) -> Plan:
    """Read a plan written by :func:`plan_to_json`.

    Raises:
        PlanError: not JSON (NaN and Infinity are refused, and a key given twice in one
            object), or a field that is missing, of
            the wrong type or out of range (named by key path); nested beyond ``limits``.
    """
    try:
        d = json.loads(text.removeprefix("\ufeff"), parse_constant=_no_constant,
                       object_pairs_hook=_no_duplicates)
    except json.JSONDecodeError as exc:
        raise PlanError(f"not valid JSON: {exc.msg}", source=source, line=exc.lineno) from None
    except RecursionError:
        raise LimitError(f"nested deeper than the JSON reader can follow (plans nest under "
                         f"{DEFAULT_LIMITS.max_depth} levels)", source=source) from None
    except ValueError as exc:  # NaN / Infinity, a doubled key, an integer of thousands of digits
        raise PlanError(f"not a valid plan: {exc}", source=source) from None
    return plan_from_dict(d, source, limits=limits)


def plan_from_dict(d: Any, source: str = "<plan>", *,
                   limits: LoadLimits = DEFAULT_LIMITS) -> Plan:
    """A plan from its JSON form (parsed), every field checked.

    Raises:
        PlanError: naming ``source`` and the key path of the first bad field.
    """
    ctx = Ctx(source, {}, PlanError)
    r = Reader(d, "", ctx, "a plan")
    version = r.int("format_version")
    if version != FORMAT_VERSION:
        raise ctx.fail("format_version", f"this shardplan reads plan format {FORMAT_VERSION}, "
                       f"not {version}; re-run `shardplan solve` to write a new plan")
    workload = _as_plan_error(lambda: workload_from_dict(r.raw("workload"), source,
                                                         path="workload", limits=limits))
    topology, _ = _as_plan_error(lambda: topology_from_dict(r.raw("topology"), source,
                                                            limits=limits))
    summary = _summary(r.mapping("summary", "the plan summary"), ctx)
    tables = _tables(r.list("tables", "tables"), ctx)
    ranks = _ranks(r.list("ranks", "ranks"), ctx, topology)
    prov = _provenance(r.mapping("provenance", "the plan provenance"), ctx, limits)
    replicas = r.int("replicas", 1)
    if replicas < 1:
        raise ctx.fail("replicas", f"must be >= 1 (1: no 2D replication), got {replicas}")
    r.done()
    _check_summary(summary, tables, ranks, prov, ctx)
    return Plan(tables=tables, ranks=ranks, summary=summary, provenance=prov,
                workload=workload, topology=topology, replicas=replicas)


def _as_plan_error(make: Any) -> Any:
    try:
        return make()
    except PlanError:
        raise
    except SpecError as exc:  # the embedded workload or topology: still a bad plan file
        raise PlanError(exc.message, source=exc.source, key_path=exc.key_path,
                        line=exc.line) from None


def _summary(s: Reader, ctx: Ctx) -> Summary:
    makespan = s.num("makespan_ms")
    lb = s.raw("lower_bound_ms")
    if lb is not None:
        lb = s.num("lower_bound_ms")
    solver = s.name("solver")
    num_tables = s.int("num_tables", minimum=0)
    num_ranks = s.int("num_ranks", minimum=0)
    solve_time = s.num("solve_time_s")
    mix_r = s.mapping("sharding_mix", "the sharding mix")
    mix = {}
    for k in sorted(mix_r.d):
        as_enum(k, ShardingType, mix_r.p(k), ctx)
        mix[k] = mix_r.int(k, minimum=1)
    mix_r.done()
    status = s.str("status")
    if status not in PLAN_STATUSES:
        raise ctx.fail(s.p("status"), f"{status[:40]!r} is not a solve status a plan can have "
                                      f"({' or '.join(PLAN_STATUSES)}); the plan was edited: "
                                      "re-solve it")
    s.done()
    return Summary(makespan_ms=makespan, lower_bound_ms=lb, solver=solver, num_tables=num_tables,
                   num_ranks=num_ranks, solve_time_s=solve_time, sharding_mix=mix, status=status)


def _tables(items: list[Any], ctx: Ctx) -> tuple[TablePlan, ...]:
    placements: dict[tuple[Any, Any], Placement] = {}
    out = []
    for i, t in enumerate(items):
        tr = Reader(t, f"tables[{i}]", ctx, "a planned table")
        name = tr.name("name")
        rows = tr.int("num_embeddings", minimum=1)
        dim = tr.int("embedding_dim", minimum=1)
        st = tr.enum("sharding_type", ShardingType)
        raw_shards = tr.list("shards", "shards")
        tr.done()
        if not raw_shards:
            raise ctx.fail(tr.p("shards"), f"table {name!r} has no shards")
        shards = []
        for j, sh in enumerate(raw_shards):
            # the common case fast (a plan may hold a million shards); anything unusual gets
            # the full, named check
            if not (type(sh) is dict and _SHARD_KEYS <= sh.keys() and len(sh) <= 7
                    and all(type(sh[k]) is int and sh[k] >= 0 for k in _SHARD_KEYS - {"placement"})
                    and sh["num_rows"] > 0 and sh["num_cols"] > 0):
                _shard_error(sh, f"{tr.p('shards')}[{j}]", ctx)
            key = (sh["placement"], sh.get("cache_ratio"))
            pl = placements.get(key) if isinstance(key[0], str) and _hashable(key[1]) else None
            if pl is None:
                pl = _placement(sh, f"{tr.p('shards')}[{j}]", ctx)
                if _hashable(key[1]):
                    placements[key] = pl
            shards.append(Shard(rank=sh["rank"], row_offset=sh["row_offset"],
                                num_rows=sh["num_rows"], col_offset=sh["col_offset"],
                                num_cols=sh["num_cols"], placement=pl))
        out.append(TablePlan(name=name, num_embeddings=rows, embedding_dim=dim, sharding_type=st,
                             shards=tuple(shards)))
    return tuple(out)


def _hashable(v: Any) -> bool:
    return v is None or isinstance(v, (int, float, str))


def _shard_error(sh: Any, path: str, ctx: Ctx) -> None:
    """Raise the precise error for a shard that failed the fast check."""
    r = Reader(sh, path, ctx, "a shard")
    for k in ("rank", "row_offset", "col_offset"):
        r.int(k, minimum=0)
    for k in ("num_rows", "num_cols"):
        r.int(k, minimum=1)
    r.raw("placement")
    r.raw("cache_ratio", None)
    r.done()
    for k in ("rank", "row_offset", "num_rows", "col_offset", "num_cols"):
        if type(sh[k]) is not int:  # 3.0, "3": an integer in another type
            raise ctx.fail(r.p(k), f"expected an integer, got {sh[k]!r}")


def _placement(sh: dict[str, Any], path: str, ctx: Ctx) -> Placement:
    r = Reader(sh, path, ctx, "a shard")
    kind = r.enum("placement", PlacementKind)
    ratio = r.num("cache_ratio", None)
    return build(ctx, r.p("cache_ratio") if ratio is not None else r.p("placement"),
                 lambda: Placement(kind=kind, cache_ratio=ratio))


def _ranks(items: list[Any], ctx: Ctx, topology: Any) -> tuple[RankPlan, ...]:
    world = topology.world_size
    if len(items) != world:
        raise ctx.fail("ranks", f"lists {len(items)} ranks, but the plan's topology "
                                f"{topology.name!r} has {world}; the plan was edited or cut "
                                "short: re-solve it")
    out = []
    for i, rk in enumerate(items):
        rr = Reader(rk, f"ranks[{i}]", ctx, "a rank")
        rank = rr.int("rank", minimum=0)
        host = rr.int("host", minimum=0)
        device = rr.name("device")
        ri = topology.rank(i)
        want = topology.group_of(i).device.model
        if (rank, host, device) != (i, ri.host, want):
            raise ctx.fail(rr.p("rank"), f"entry {i} is rank {rank} on host {host} ({device}), "
                                         f"but rank {i} of the topology is on host {ri.host} "
                                         f"({want}); the plan was edited: re-solve it")
        mem = _tiers(rr.mapping("memory_bytes", "memory per tier"))
        cap = _tiers(rr.mapping("capacity_bytes", "capacity per tier"))
        er = rr.mapping("estimated_ms", "estimated ms per stage")
        perf = Perf(**{k: er.num(k) for k in _PERF_KEYS})
        total = er.num("total")
        er.done()
        rr.done()
        out.append(RankPlan(rank=rank, host=host, device=device, memory_bytes=mem,
                            capacity_bytes=cap, estimated_ms=perf, total_ms=total))
    return tuple(out)


def _tiers(r: Reader) -> Memory:
    vals = {k: r.num(k) for k in _TIER_KEYS}
    r.done()
    return Memory(**vals)


def _provenance(p: Reader, ctx: Ctx, limits: LoadLimits) -> Provenance:
    solver = p.name("solver")
    options = p.mapping("solver_options", "solver options").d
    check_depth(options, ctx, p.p("solver_options"), limits)
    version = p.name("shardplan_version")
    sha = p.str("inputs_sha256")
    cm = p.mapping("cost_model", "the cost-model record").d
    check_depth(cm, ctx, p.p("cost_model"), limits)
    p.done()
    return Provenance(solver=solver, solver_options=dict(options), shardplan_version=version,
                      inputs_sha256=sha, cost_model=dict(cm))


def _check_summary(s: Summary, tables: tuple[TablePlan, ...], ranks: tuple[RankPlan, ...],
                   prov: Provenance, ctx: Ctx) -> None:
    """What the summary must say of the tables and ranks it sums up (no cost model needed)."""
    mix = dict(sorted(Counter(t.sharding_type.value for t in tables).items()))
    for key, got, want in (("num_tables", s.num_tables, len(tables)),
                           ("num_ranks", s.num_ranks, len(ranks)),
                           ("sharding_mix", dict(s.sharding_mix), mix)):
        if got != want:
            raise ctx.fail(f"summary.{key}", f"says {got}, but the plan has {want}; the plan "
                                             "was edited: re-solve it")
    if s.lower_bound_ms is not None and s.lower_bound_ms > s.makespan_ms * (1 + BOUND_SLACK):
        raise ctx.fail("summary.lower_bound_ms", f"a lower bound of {s.lower_bound_ms:g} ms "
                       f"above the makespan {s.makespan_ms:g} ms is impossible (a negative gap); "
                       "the plan was edited: re-solve it")
    if s.status == "optimal":
        gap_option = prov.solver_options.get("gap", DEFAULT_OPTIMAL_GAP)
        ok = (isinstance(gap_option, (int, float)) and not isinstance(gap_option, bool)
              and 0 <= gap_option < 1)
        allowed = max(2 * gap_option if ok else 0.0, DEFAULT_OPTIMAL_GAP)
        if s.lower_bound_ms is None:
            raise ctx.fail("summary.status", "says optimal but records no lower bound that "
                                             "proves it; the plan was edited: re-solve it")
        if s.makespan_ms > 0 and (s.makespan_ms - s.lower_bound_ms) > allowed * s.makespan_ms:
            gap = 100 * (1 - s.lower_bound_ms / s.makespan_ms)
            raise ctx.fail("summary.status", f"says optimal, but its lower bound "
                           f"{s.lower_bound_ms:g} ms leaves a gap of {gap:.1f}% to its makespan "
                           f"{s.makespan_ms:g} ms (the solver stops within {100 * allowed:g}%); "
                           "the plan was edited: re-solve it")
    if prov.solver != s.solver:
        raise ctx.fail("summary.solver", f"says {s.solver!r}, but the provenance says "
                                         f"{prov.solver!r}; the plan was edited: re-solve it")


__all__ = ["FORMAT_VERSION", "PLAN_STATUSES", "STATUS_PATTERN", "plan_from_dict", "plan_from_json",
           "plan_to_dict", "plan_to_json"]
