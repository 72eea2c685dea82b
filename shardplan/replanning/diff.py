"""Two plans side by side: which shards moved, from where to where, and what it costs."""

from __future__ import annotations

from typing import Sequence

from shardplan.replanning.migration import Migration, estimate_migration
from shardplan.replanning.ranks import map_ranks
from shardplan.types import Plan


def recorded_lost_hosts(plan: Plan) -> tuple[int, ...] | None:
    """The lost hosts a re-plan recorded in its provenance (None: not a re-plan)."""
    rec = plan.provenance.solver_options.get("replan")
    if not isinstance(rec, dict) or not isinstance(rec.get("lost_hosts"), list):
        return None
    return tuple(int(h) for h in rec["lost_hosts"] if isinstance(h, int))


def diff_plans(a: Plan, b: Plan, lost_hosts: Sequence[int] | None = None) -> Migration:
    """What moving from plan ``a`` to plan ``b`` sends over which link.

    Args:
        a: the old plan.
        b: the new plan (its topology carries the transfers).
        lost_hosts: hosts of ``a``'s topology that are gone; default: what ``b`` recorded if
            it is a re-plan, else a shrunk host group's last hosts
            (:func:`shardplan.replanning.map_ranks`).

    Returns:
        The migration: transfers, bytes per rank and link, the time estimate.
    """
    if lost_hosts is None:
        lost_hosts = recorded_lost_hosts(b) or ()
    return estimate_migration(a, b, map_ranks(a.topology, b.topology, lost_hosts))


__all__ = ["diff_plans", "recorded_lost_hosts"]
