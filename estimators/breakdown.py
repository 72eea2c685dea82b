"""Explanations: every estimate of a plan, per rank, shard, component and stage, as a DataFrame.

One row per (rank, cost item): a rank's fixed overhead, the everywhere-cost of every table, and
each shard it holds, itemised by :class:`~shardplan.estimators.cost_model.Component`. Summing
a rank's rows gives exactly the rank's estimate in the plan, so a report can show why a rank is
slow (``df.groupby("rank")[...].sum()``, or ``df[df["rank"] == r]`` sorted by ``total_ms``).
"""

from __future__ import annotations

from typing import Iterable

import pandas as pd

from shardplan.assignments import assignment_of
from shardplan.errors import SpecError
from shardplan.estimators.cost_model import EmbeddingCostModel, default_cost_model
from shardplan.estimators.recorded import cost_model_of
from shardplan.types import (
    LANES,
    Assignment,
    CostModel,
    GroupKey,
    Perf,
    Plan,
    Stage,
    StepModel,
    Topology,
    Workload,
)

COLUMNS = ["rank", "host", "group", "table", "sharding_type", "placement", "shard", "kind",
           "component", "hbm_bytes", "ddr_bytes", *[f"{ln.value}_ms" for ln in LANES]]


def breakdown(plan_or_assignment: Plan | Assignment, *, workload: Workload | None = None,
              topology: Topology | None = None, cost_model: EmbeddingCostModel | None = None,
              ranks: Iterable[int] | None = None) -> pd.DataFrame:
    """Every cost item of a plan (or a solver's assignment), one row per rank and item.

    Args:
        plan_or_assignment: a Plan, or an Assignment (then ``workload`` and ``topology`` are
            required).
        workload: the workload (taken from the plan if omitted).
        topology: the topology (taken from the plan if omitted).
        cost_model: the model to explain with; default: the one the plan records
            (:func:`~shardplan.estimators.recorded.cost_model_of`; the default model, with a
            warning, if the plan names a model shardplan cannot rebuild). Must itemise (an
            ``EmbeddingCostModel``).
        ranks: only these ranks (default: all).

    Returns:
        A DataFrame with columns :data:`COLUMNS`: one ``<lane>_ms`` column per
        :class:`~shardplan.types.Lane` (lanes add up per rank; a rank's stage time is the
        longest of the stage's lanes, see :func:`per_rank`). ``kind`` is ``overhead`` (the
        rank's fixed cost), ``group`` (the fixed cost of a sharding group the plan uses; its
        ``sharding_type`` names the group), ``everywhere`` (what every rank pays for a table's
        sharding) or ``shard``. Rows are sorted by rank, then kind, table, shard, component.

    Raises:
        SpecError: an Assignment without workload/topology, or a model that cannot itemise.
    """
    if isinstance(plan_or_assignment, Plan):
        plan = plan_or_assignment
        workload = workload or plan.workload
        topology = topology or plan.topology
        assignment = assignment_of(plan)
        if cost_model is None:
            cost_model = cost_model_of(plan, default_if_unknown=True)
    else:
        assignment = plan_or_assignment
        if workload is None or topology is None:
            raise SpecError("breakdown of an Assignment needs workload= and topology=")
        if cost_model is None:
            cost_model = default_cost_model(workload, topology)
    if not isinstance(cost_model, EmbeddingCostModel):
        raise SpecError(f"breakdown needs an EmbeddingCostModel (it itemises costs); got "
                        f"{type(cost_model).__name__}")
    wanted = set(range(topology.world_size)) if ranks is None else set(ranks)
    bad = sorted(r for r in wanted if not 0 <= r < topology.world_size)
    if bad:
        raise SpecError(f"ranks {bad} are not in topology {topology.name!r} "
                        f"(ranks 0..{topology.world_size - 1})")
    rows: list[tuple] = []
    keys = used_groups(assignment, cost_model)

    def emit(r: int, table: str, st: str, pl: str, shard: int, kind: str, items) -> None:
        ri = topology.rank(r)
        for comp, c in items:
            rows.append((r, ri.host, ri.group, table, st, pl, shard, kind, comp.value,
                         c.memory.hbm, c.memory.ddr, *c.perf.as_tuple()))

    for r in sorted(wanted):
        g = topology.rank(r).group
        emit(r, "", "", "", -1, "overhead", cost_model.overhead_items(g)[0])
        for key in keys:
            emit(r, "", key.sharding_type.value, "", -1, "group", cost_model.group_items(key, g)[0])
            if key.ranks is not None and r in key.ranks:
                emit(r, "", key.sharding_type.value, "", -1, "group",
                     cost_model.group_items(key, g, member=True)[0])
        for o in assignment.options:
            emit(r, o.table, o.sharding_type.value, str(o.placement), -1, "everywhere",
                 cost_model.everywhere_items(o, g)[0])
    for o, i, r in assignment.placed():
        if r in wanted:
            emit(r, o.table, o.sharding_type.value, str(o.placement), i, "shard",
                 cost_model.shard_items(o, i, topology.rank(r).group))
    df = pd.DataFrame(rows, columns=COLUMNS)
    kind_order = {"overhead": 0, "group": 1, "everywhere": 2, "shard": 3}
    df = df.assign(_k=df["kind"].map(kind_order)).sort_values(
        ["rank", "_k", "table", "shard", "component"], kind="stable").drop(columns="_k")
    return df.reset_index(drop=True)


def per_rank(df: pd.DataFrame, step: StepModel | None = None) -> pd.DataFrame:
    """A breakdown summed per rank: memory per tier, ms per lane, ms per stage (its longest
    lane) and ``total_ms`` (the rank's step time alone, ``StepModel.rank_time``), slowest rank
    first."""
    step = step or StepModel()
    lanes = [f"{ln.value}_ms" for ln in LANES]
    out = df.groupby("rank")[["hbm_bytes", "ddr_bytes", *lanes]].sum()
    vals = out[lanes].to_numpy()
    stages = step.stage_times(vals)
    for i, st in enumerate(Stage):
        out[f"{st.value}_ms"] = stages[:, i]
    out["total_ms"] = [step.rank_time(Perf.from_lanes(v)) for v in vals]
    return out.sort_values(["total_ms"], ascending=False, kind="stable")


def used_groups(assignment: Assignment, cost_model: CostModel) -> list[GroupKey]:
    """The sharding groups an assignment uses, in a fixed order."""
    keys = {k for k in (cost_model.group_key(o) for o in assignment.options) if k is not None}
    return sorted(keys, key=lambda k: (k.sharding_type.value, k.ranks or ()))
