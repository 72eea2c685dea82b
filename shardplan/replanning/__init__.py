"""Re-planning with minimal migration: when hosts are lost or added, or the tables change,
a new plan that moves as few bytes as the step time allows (``docs/replan.md``).

* :func:`replan` / :func:`replan_full`: the front door (``api``);
* :func:`map_ranks` / :class:`RankMap`: how the ranks of a changed topology map (``ranks``);
* :func:`estimate_migration` / :class:`Migration`: bytes per shard, rank and link, and the
  time (``migration``), also what ``shardplan diff`` prints;
* ``moves``, ``search``, ``ilp``: the objective and the solvers.
"""

from __future__ import annotations

from shardplan.replanning.api import REPLAN_SOLVERS, ReplanResult, check_tables, replan, replan_full
from shardplan.replanning.diff import diff_plans
from shardplan.replanning.migration import Links, Migration, Transfer, estimate_migration
from shardplan.replanning.moves import DEFAULT_MOVE_WEIGHT, Objective
from shardplan.replanning.ranks import RankMap, map_ranks

__all__ = ["DEFAULT_MOVE_WEIGHT", "REPLAN_SOLVERS", "Links", "Migration", "Objective",
           "RankMap", "ReplanResult", "Transfer", "check_tables", "diff_plans",
           "estimate_migration", "map_ranks", "replan", "replan_full"]
