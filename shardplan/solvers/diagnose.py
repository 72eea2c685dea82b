"""Why no plan fits, and what would make one fit: computed from the cost model, specific.

:func:`diagnose_infeasible` is what every solver raises when it cannot place the tables. It
says, from the same costs the solvers use:

* how much memory each tier needs (each table at its least-memory option) against what the
  cluster has, and how many devices of this kind would hold that;
* which tables fit on no rank even of an empty cluster, and for each whether any number of
  devices could help: only row-wise shards shrink as hosts are added, so a table whose
  constraints rule row-wise out and whose smallest shard exceeds one device fits no cluster of
  this device;
* which of a table's own constraints, lifted, would let it fit (re-enumerated and re-costed),
  and only those: UVM caching is suggested only where a table's constraints forbid it;
* a smaller dtype, where the tables are fp32.

Tables are named in full up to :data:`MAX_NAMED`, else as "N tables such as a, b, c".
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np

from shardplan.enumerators import enumerate_table
from shardplan.errors import InfeasiblePlanError, Shortfall, SpecError
from shardplan.parsing import LoadLimits
from shardplan.solvers.common import CostTables
from shardplan.types import (
    PlacementKind,
    PlanningContext,
    ShardingOption,
    ShardingType,
    TableConstraints,
    TableSpec,
    Tier,
)
from shardplan.units import format_bytes

#: Tables named one by one in a suggestion; more are "N tables such as ...".
MAX_NAMED = 5
#: Tables whose constraints are re-enumerated to find the one that blocks them.
MAX_RELAXED = 20
_UVM = (PlacementKind.UVM, PlacementKind.UVM_CACHING)


def name_tables(names: list[str]) -> str:
    """``a, b and c`` for up to :data:`MAX_NAMED` names, else ``12 tables such as a, b, c``."""
    if len(names) <= MAX_NAMED:
        return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
    return f"{len(names)} tables such as {', '.join(names[:3])}"


def diagnose_infeasible(ctx: PlanningContext, failed: list[str],
                        ct: CostTables | None = None) -> InfeasiblePlanError:
    """Explain why the tables could not be placed and what would make them fit.

    Args:
        ctx: the planning context.
        failed: tables the solver could not place (after it placed the others).
        ct: the context's cost tables, if built.

    Returns:
        The error to raise, with shortfalls per tier, the tables that fit on no rank of the
        cluster, and computed suggestions.
    """
    ct = ct or CostTables.of(ctx)
    world = ct.world
    total_cap = {Tier.HBM: float(ct.cap_hbm.sum()), Tier.DDR: float(ct.cap_ddr.sum())}
    need = {Tier.HBM: float(ct.base_hbm.sum()), Tier.DDR: float(ct.base_ddr.sum())}
    no_options, nowhere = [], []
    for ti, t in enumerate(ctx.workload.tables):
        ocs = ct.options[ti]
        if not ocs:
            no_options.append(t.name)
            continue
        best = min(ocs, key=lambda oc: (oc.hbm_bytes / max(total_cap[Tier.HBM], 1.0)
                                        + oc.ddr_bytes / max(total_cap[Tier.DDR], 1.0)))
        need[Tier.HBM] += best.hbm_bytes
        need[Tier.DDR] += best.ddr_bytes
        if not any(_fits_empty(ct, oc) for oc in ocs):
            nowhere.append(t.name)
    shortfalls = tuple(Shortfall(tier=tier, needed_bytes=int(need[tier]),
                                 available_bytes=int(total_cap[tier]))
                       for tier in Tier if need[tier] > total_cap[tier])
    suggestions: list[str] = []
    hopeless = [n for n in nowhere if _no_size_fits(ctx.workload.table(n))]
    per_dev = float(ct.cap_hbm.max())
    fp16_fits_device = True
    if hopeless:
        spec = ctx.workload.table(hopeless[0])
        smallest, cells = min((_largest_shard(ct, oc) for oc in ct.options[ct.index[spec.name]]),
                              default=(None, 0))
        detail = (f" (its smallest shard needs {format_bytes(smallest)} of HBM, one device has "
                  f"{format_bytes(per_dev)})" if smallest is not None else "")
        suggestions.append(f"no number of devices of this kind fits {name_tables(hopeless)}"
                           f"{detail}: only row-wise shards shrink with more hosts and their "
                           "constraints rule row_wise out")
        # fp16 halves that shard's weights (optimizer state stays fp32)
        fp16_fits_device = (smallest is not None and spec.dtype.bits == 32
                            and smallest - cells * 2 <= per_dev)
        if fp16_fits_device and not shortfalls:
            suggestions.append(f"a smaller dtype: fp16 weights for {spec.name} (its smallest "
                               f"shard would need about {format_bytes(smallest - cells * 2)})")
    elif shortfalls:
        devs = 0
        for s in shortfalls:
            per_dev = total_cap[s.tier] / world
            if per_dev > 0:
                devs = max(devs, math.ceil(need[s.tier] / per_dev))
        cap = LoadLimits().max_devices
        if devs > cap:
            suggestions.append(f"more than {cap:,} devices of this kind (the most a topology "
                               "may have), for the " + " and ".join(
                                   s.tier.value.upper() for s in shortfalls)
                               + " the tables need: make the tables smaller")
        elif devs > world:
            suggestions.append(f"at least {devs:,} devices of this kind (have {world}), for the "
                               + " and ".join(s.tier.value.upper() for s in shortfalls)
                               + " the tables need")
    suggestions += _relaxations(ctx, ct, [n for n in nowhere if n not in hopeless][:MAX_RELAXED])
    suggestions += _relaxations(ctx, ct, hopeless[:MAX_RELAXED])
    fp32 = [t for t in ctx.workload.tables if t.dtype.bits == 32]
    if shortfalls and fp32:
        saved = sum(t.num_embeddings * t.embedding_dim * 2 for t in fp32)
        short = max(s.missing_bytes for s in shortfalls)
        verdict = ("enough for the shortfall" if saved >= short and fp16_fits_device
                   else "not enough alone")
        suggestions.append(f"a smaller dtype: fp16 weights for the {len(fp32)} fp32 table(s) "
                           f"(saves up to {format_bytes(saved)}, {verdict})")
    if no_options:
        suggestions.append(f"constraints that allow at least one option for "
                           f"{name_tables(no_options)} (they allow none)")
    if not suggestions:
        suggestions.append(_fallback(ctx, failed))
    tables = tuple(dict.fromkeys(nowhere + no_options))
    placed = len(ctx.workload.tables) - len(failed)
    if tables:
        what = f"{len(tables)} table(s) fit on no rank of this cluster"
    elif failed:
        names = list(failed)
        which = (f" ({name_tables(names)})" if len(names) <= MAX_NAMED
                 else f", such as {', '.join(names[:3])},")
        what = (f"the solver placed {placed} of {len(ctx.workload.tables)} tables; the other "
                f"{len(names)}{which} did not fit beside them")
    else:
        what = "the tables do not fit together in memory"
    return InfeasiblePlanError(f"no plan fits: {what}", tables=tables, shortfalls=shortfalls,
                               suggestions=tuple(suggestions))


def _fits_empty(ct: CostTables, oc: Any) -> bool:
    """Whether every shard of ``oc`` fits on some candidate rank of an empty cluster."""
    for si in range(oc.num_shards):
        c = oc.candidates[si]
        room = ((oc.every_hbm[c] + ct.base_hbm[c] + oc.hbm[si][c] <= ct.cap_hbm[c])
                & (oc.every_ddr[c] + ct.base_ddr[c] + oc.ddr[si][c] <= ct.cap_ddr[c]))
        if not room.any():
            return False
    return True


def _largest_shard(ct: CostTables, oc: Any) -> tuple[float, int]:
    """HBM the largest shard of ``oc`` needs on its best candidate rank (with the option's
    per-rank buffers and the rank's overhead), and that shard's cells (rows x columns)."""
    worst, cells = 0.0, 0
    for si in range(oc.num_shards):
        c = oc.candidates[si]
        need = float(np.min(oc.every_hbm[c] + ct.base_hbm[c] + oc.hbm[si][c]))
        if need > worst:
            s = oc.option.shards[si]
            worst, cells = need, s.num_rows * s.num_cols
    return worst, cells


def _no_size_fits(spec: TableSpec) -> bool:
    """True if adding hosts cannot help a table that fits on no rank: its constraints rule
    row-wise out (table-, column-, table-row- and table-column-wise shards and data-parallel
    replicas keep their size as hosts are added) or pin it to ranks that exist already."""
    c = spec.constraints
    return not c.allows(ShardingType.ROW_WISE) or c.pinned_ranks is not None


def _relaxations(ctx: PlanningContext, ct: CostTables, names: list[str]) -> list[str]:
    """For each table, the one constraint that, lifted, lets it fit on an empty rank."""
    out: list[str] = []
    by_what: dict[str, list[str]] = {}
    for name in names:
        spec = ctx.workload.table(name)
        c = spec.constraints
        present = [f for f in _RELAXABLE if getattr(c, f) is not None]
        for field in present:
            relaxed = dataclasses.replace(spec, constraints=dataclasses.replace(c, **{field: None}))
            if _fits_when(ctx, ct, relaxed):
                by_what.setdefault(_RELAXABLE[field](c), []).append(name)
                break
        else:
            if len(present) > 1 and _fits_when(
                    ctx, ct, dataclasses.replace(spec, constraints=TableConstraints())):
                by_what.setdefault("lifting " + " and ".join(present) + " together",
                                   []).append(name)
    for what, tables in by_what.items():
        out.append(f"{what} for {name_tables(tables)} (computed: that lets them fit)")
    return out


def _allow_types(c: TableConstraints) -> str:
    allowed = ", ".join(s.value for s in c.sharding_types or ())
    return f"sharding types beyond {allowed} (row_wise shrinks with more devices)"


def _allow_placements(c: TableConstraints) -> str:
    allowed = ", ".join(p.value for p in c.placements or ())
    missing = [p.value for p in _UVM if p not in (c.placements or ())]
    return f"placements beyond {allowed} ({' or '.join(missing) or 'ddr'} keeps rows in host memory)"


#: Constraint field -> what lifting it allows, in the order they are tried.
_RELAXABLE = {
    "sharding_types": _allow_types,
    "placements": _allow_placements,
    "pinned_ranks": lambda _c: "no pinned ranks",
    "min_column_shard_width": lambda _c: "column shards narrower than min_column_shard_width",
}


def _fits_when(ctx: PlanningContext, ct: CostTables, spec: TableSpec) -> bool:
    """Whether some option of ``spec`` (enumerated without pruning) fits on an empty rank."""
    try:
        options = enumerate_table(spec, ctx.workload, ctx.topology)
    except SpecError:
        return False
    return any(_option_fits_empty(ctx, ct, o) for o in options)


def _option_fits_empty(ctx: PlanningContext, ct: CostTables, o: ShardingOption) -> bool:
    cm = ctx.cost_model
    groups = sorted(set(ct.group_of.tolist()))
    every = {g: cm.everywhere_cost(o, g).memory for g in groups}
    shards = {g: [c.memory for c in cm.shard_costs(o, g)] for g in groups}
    for si, cand in enumerate(o.candidate_ranks):
        ranks = range(ct.world) if cand is None else cand
        if not any(_room(ct, r, every[int(ct.group_of[r])], shards[int(ct.group_of[r])][si])
                   for r in ranks):
            return False
    return True


def _room(ct: CostTables, r: int, every: Any, shard: Any) -> bool:
    return (ct.base_hbm[r] + every.hbm + shard.hbm <= ct.cap_hbm[r]
            and ct.base_ddr[r] + every.ddr + shard.ddr <= ct.cap_ddr[r])


def _fallback(ctx: PlanningContext, failed: list[str]) -> str:
    """When the memory is there in total and every table fits alone: what is left."""
    w = ctx.workload
    pinned = [t.name for t in w.tables if t.constraints.pinned_ranks is not None]
    parts = []
    if w.colocate:
        parts.append(f"{len(w.colocate)} co-location group(s)")
    if w.separate:
        parts.append(f"{len(w.separate)} separation group(s)")
    if pinned:
        parts.append(f"pins of {name_tables(pinned)}")
    if parts:
        return ("fewer " + ", ".join(parts) + ": the cluster has the memory in total, but not "
                "where these constraints allow")
    return (f"more devices, or less memory per table: every table fits alone, but the largest "
            f"shards leave no rank with room for {name_tables(list(failed)) if failed else 'the rest'}")


__all__ = ["MAX_NAMED", "MAX_RELAXED", "diagnose_infeasible", "name_tables"]
