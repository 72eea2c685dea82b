"""Plans as pandas DataFrames, so users can slice them themselves.

Three frames, one row per table, per rank and per shard. Column names carry their units
(``_bytes``, ``_ms``). Row order is fixed (workload order, rank order), so the same plan gives
the same frame. ``Plan.to_dataframe()``, ``Plan.rank_frame()`` and ``Plan.shard_frame()`` call
these.

Example:
    >>> from shardplan import load_problem, plan
    >>> topo, work = load_problem("cpu-4")
    >>> p = plan(work, topo)
    >>> p.rank_frame()["total_ms"].max() <= p.summary.makespan_ms * (1 + 1e-9)
    True
"""

from __future__ import annotations

import math
from collections import Counter
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from shardplan.estimators.memory import weight_bytes
from shardplan.types import Stage, Tier

if TYPE_CHECKING:  # pragma: no cover
    from shardplan.types import Plan




def _bytes(rows: int, cols: int, dtype: Any) -> int:
    """Weight bytes as a whole number (int8/int4 rows carry a fractional scale/bias share)."""
    return int(math.ceil(weight_bytes(rows, cols, dtype)))


def table_frame(plan: Plan) -> pd.DataFrame:
    """One row per table, in workload order.

    Columns: ``table``, ``num_embeddings``, ``embedding_dim``, ``pooling_factor``, ``dtype``,
    ``sharding_type`` (e.g. ``row_wise``), ``sharding`` (short label, ``RW``), ``placement``,
    ``num_shards``, ``num_ranks``, ``ranks`` (tuple of rank numbers), ``weight_bytes``
    (the table's weights, all replicas of a data-parallel table counted once).

    Args:
        plan: the plan.

    Returns:
        The frame.
    """
    specs = {t.name: t for t in plan.workload.tables}
    rows = []
    for t in plan.tables:
        spec = specs[t.name]
        ranks = t.ranks
        rows.append({
            "table": t.name,
            "num_embeddings": t.num_embeddings,
            "embedding_dim": t.embedding_dim,
            "pooling_factor": spec.pooling_factor,
            "dtype": spec.dtype.value,
            "sharding_type": t.sharding_type.value,
            "sharding": t.sharding_type.short,
            "placement": str(t.shards[0].placement) if t.shards else "",
            "num_shards": len(t.shards),
            "num_ranks": len(ranks),
            "ranks": ranks,
            "weight_bytes": _bytes(t.num_embeddings, t.embedding_dim, spec.dtype),
        })
    return pd.DataFrame(rows, columns=_TABLE_COLUMNS)


_TABLE_COLUMNS = ["table", "num_embeddings", "embedding_dim", "pooling_factor", "dtype",
                  "sharding_type", "sharding", "placement", "num_shards", "num_ranks", "ranks",
                  "slowest_rank", "weight_bytes"]


def rank_frame(plan: Plan) -> pd.DataFrame:
    """One row per rank, in rank order.

    Columns: ``rank``, ``host``, ``device``; per tier ``hbm_bytes``, ``hbm_capacity_bytes``,
    ``hbm_free_bytes``, ``hbm_used_fraction`` (and the same for ``ddr``); one ``<stage>_ms``
    column per stage (``fwd_compute_ms`` ...), ``total_ms`` (the cost model's step time),
    ``num_shards``, ``num_tables``, ``is_slowest`` (the rank with the largest own step time;
    under the synchronized composition the makespan can exceed every rank's own time, since
    each stage waits for its slowest rank and those can differ).

    Args:
        plan: the plan.

    Returns:
        The frame.
    """
    n = len(plan.ranks)
    shard_ranks = [np.fromiter((s.rank for s in t.shards), dtype=np.int64, count=len(t.shards))
                   for t in plan.tables]
    all_ranks = np.concatenate(shard_ranks) if shard_ranks else np.zeros(0, dtype=np.int64)
    shards = np.bincount(all_ranks, minlength=n)
    # a table counts once per rank, however many of its shards the rank holds
    tables_on = np.bincount(np.concatenate([np.unique(r) for r in shard_ranks])
                            if shard_ranks else all_ranks, minlength=n)
    data: dict[str, list[object]] = {"rank": [], "host": [], "device": []}
    for tier in Tier:
        for suffix in ("bytes", "capacity_bytes", "free_bytes", "used_fraction"):
            data[f"{tier.value}_{suffix}"] = []
    for st in Stage:
        data[f"{st.value}_ms"] = []
    data["total_ms"] = []
    for r in plan.ranks:
        data["rank"].append(r.rank)
        data["host"].append(r.host)
        data["device"].append(r.device)
        for tier in Tier:
            used, cap = r.memory_bytes.get(tier), r.capacity_bytes.get(tier)
            data[f"{tier.value}_bytes"].append(used)
            data[f"{tier.value}_capacity_bytes"].append(cap)
            data[f"{tier.value}_free_bytes"].append(cap - used)
            data[f"{tier.value}_used_fraction"].append(used / cap if cap > 0 else
                                                       (0.0 if used == 0 else float("inf")))
        for st in Stage:
            data[f"{st.value}_ms"].append(r.estimated_ms.get(st))
        data["total_ms"].append(r.total_ms)
    df = pd.DataFrame(data)
    df["num_shards"] = [int(shards[r.rank]) for r in plan.ranks]
    df["num_tables"] = [int(tables_on[r.rank]) for r in plan.ranks]
    df["is_slowest"] = df["total_ms"] >= df["total_ms"].max() if n else []
    return df


def shard_frame(plan: Plan) -> pd.DataFrame:
    """One row per shard (a data-parallel table has one per rank), in workload then shard order.

    Columns: ``table``, ``shard``, ``rank``, ``host``, ``sharding_type``, ``sharding``,
    ``placement``, ``cache_ratio`` (NaN unless UVM caching), ``row_offset``, ``num_rows``,
    ``col_offset``, ``num_cols``, ``weight_bytes``.

    Args:
        plan: the plan.

    Returns:
        The frame.
    """
    dtypes = {t.name: t.dtype for t in plan.workload.tables}
    host_of = [ri.host for ri in plan.topology.ranks]
    cols: dict[str, list[object]] = {c: [] for c in _SHARD_COLUMNS}
    for t in plan.tables:
        b = dtypes[t.name]
        st, short = t.sharding_type.value, t.sharding_type.short
        for i, s in enumerate(t.shards):
            cols["table"].append(t.name)
            cols["shard"].append(i)
            cols["rank"].append(s.rank)
            cols["host"].append(host_of[s.rank] if 0 <= s.rank < len(host_of) else -1)
            cols["sharding_type"].append(st)
            cols["sharding"].append(short)
            cols["placement"].append(s.placement.kind.value)
            cols["cache_ratio"].append(np.nan if s.placement.cache_ratio is None
                                       else s.placement.cache_ratio)
            cols["row_offset"].append(s.row_offset)
            cols["num_rows"].append(s.num_rows)
            cols["col_offset"].append(s.col_offset)
            cols["num_cols"].append(s.num_cols)
            cols["weight_bytes"].append(_bytes(s.num_rows, s.num_cols, b))
    return pd.DataFrame(cols, columns=_SHARD_COLUMNS)


_SHARD_COLUMNS = ["table", "shard", "rank", "host", "sharding_type", "sharding", "placement",
                  "cache_ratio", "row_offset", "num_rows", "col_offset", "num_cols", "weight_bytes"]


#: A rank whose memory use in a tier is at least this share of its capacity is nearly full:
#: fragmentation and allocator slack can make it fail at run time (a rule of thumb).
FULL_FRACTION = 0.95


def slowest_rank(plan: Plan) -> tuple[int, Stage, float]:
    """The rank that sets the makespan (lowest on ties), its largest stage and that stage's
    estimated milliseconds."""
    r = max(plan.ranks, key=lambda rp: (rp.total_ms, -rp.rank))
    stage = max(Stage, key=lambda st: r.estimated_ms.get(st))
    return r.rank, stage, r.estimated_ms.get(stage)


def nearly_full(plan: Plan, fraction: float = FULL_FRACTION) -> list[tuple[int, Tier, float]]:
    """``(rank, tier, used fraction)`` of every rank and tier at least ``fraction`` full,
    fullest first (ties by rank)."""
    out = []
    for r in plan.ranks:
        for tier in Tier:
            cap = r.capacity_bytes.get(tier)
            if cap > 0 and r.memory_bytes.get(tier) / cap >= fraction:
                out.append((r.rank, tier, r.memory_bytes.get(tier) / cap))
    return sorted(out, key=lambda x: (-x[2], x[0]))


def gap_percent(makespan_ms: float, lower_bound_ms: float | None) -> float | None:
    """How far above the lower bound a makespan is, in percent (None without a bound)."""
    if not lower_bound_ms or lower_bound_ms <= 0:
        return None
    return (makespan_ms / lower_bound_ms - 1.0) * 100.0


def headroom(plan: Plan) -> dict[Tier, dict[str, float]]:
    """Per memory tier: the tightest rank and how full the cluster is.

    Returns:
        For each tier: ``min_free_bytes`` and ``min_free_rank`` (the rank with least room),
        ``max_used_fraction``, ``mean_used_fraction``, ``used_bytes`` and ``capacity_bytes``
        (cluster totals). Tiers with no capacity anywhere are left out.
    """
    out: dict[Tier, dict[str, float]] = {}
    for tier in Tier:
        used = np.array([r.memory_bytes.get(tier) for r in plan.ranks], dtype=float)
        cap = np.array([r.capacity_bytes.get(tier) for r in plan.ranks], dtype=float)
        if cap.sum() <= 0:
            continue
        free = cap - used
        i = int(np.argmin(free))  # ties: the lowest rank
        frac = np.divide(used, cap, out=np.zeros_like(used), where=cap > 0)
        out[tier] = {"min_free_bytes": float(free[i]), "min_free_rank": float(plan.ranks[i].rank),
                     "max_used_fraction": float(frac.max()),
                     "mean_used_fraction": float(frac.mean()),
                     "used_bytes": float(used.sum()), "capacity_bytes": float(cap.sum())}
    return out


def sharding_mix(plan: Plan) -> pd.DataFrame:
    """Tables and weight bytes per sharding type, most tables first (ties by name).

    Columns: ``sharding_type``, ``sharding`` (short label), ``tables``, ``weight_bytes``,
    ``table_fraction``, ``byte_fraction``.
    """
    specs = {t.name: t for t in plan.workload.tables}
    count: Counter[str] = Counter()
    nbytes: Counter[str] = Counter()
    short: dict[str, str] = {}
    for t in plan.tables:
        k = t.sharding_type.value
        count[k] += 1
        nbytes[k] += _bytes(t.num_embeddings, t.embedding_dim, specs[t.name].dtype)
        short[k] = t.sharding_type.short
    keys = sorted(count, key=lambda k: (-count[k], k))
    total_t, total_b = sum(count.values()) or 1, sum(nbytes.values()) or 1.0
    return pd.DataFrame({
        "sharding_type": keys,
        "sharding": [short[k] for k in keys],
        "tables": [count[k] for k in keys],
        "weight_bytes": [nbytes[k] for k in keys],
        "table_fraction": [count[k] / total_t for k in keys],
        "byte_fraction": [nbytes[k] / total_b for k in keys],
    })


__all__ = ["FULL_FRACTION", "gap_percent", "headroom", "nearly_full", "rank_frame",
           "shard_frame", "sharding_mix", "slowest_rank", "table_frame", "weight_bytes"]
