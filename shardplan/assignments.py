"""From a plan back to the solver's answer: the option each table was placed as and its ranks.

The inverse of :func:`shardplan.plans.build_plan`, to re-cost a plan under a cost model (the
one that made it, to check it, or another, to compare). Depends only on
:mod:`shardplan.types`, so the estimators can use it without importing the plans module.
"""

from __future__ import annotations

from shardplan.types import Assignment, Plan, ShardingOption, ShardingType, ShardSpec, TablePlan


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
    """The assignment a plan records, in workload order: the inverse of
    :func:`shardplan.plans.build_plan`, to re-cost a plan under another cost model."""
    by_name = {t.name: t for t in plan.tables}
    tables = [by_name[spec.name] for spec in plan.workload.tables]
    return Assignment(options=tuple(option_of(t) for t in tables),
                      ranks=tuple(tuple(s.rank for s in t.shards) for t in tables))


__all__ = ["assignment_of", "option_of"]
