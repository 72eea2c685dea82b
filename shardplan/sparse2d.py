"""2D sparse parallelism (TorchRec 1.8's ``DMPCollection``): shard the tables over a sharding
group of ``world / R`` ranks and replicate that plan ``R`` times, each shard's replicas on ranks
of one host, their weights and optimizer state averaged every ``N`` steps.

It trades memory (each rank holds ``R / world`` of the model instead of ``1 / world``) for
collectives that span fewer ranks: the sharding group's all-to-alls and reduce-scatters have
``world / R`` participants, and the replicas' sync runs over the intra-host fabric. On many
GPUs a small sharding group can be faster than sharding over all of them, which is what makes
the best plan monotone in the number of GPUs.

A 2D plan is an ordinary :class:`~shardplan.types.Plan` for the sharding group's topology
(:meth:`Topology.sharding_group`), with ``replicas = R``; the cost model prices the sync
(``CostModelOptions.replicas`` / ``replica_sync_steps``); the executor runs it on
``R x world / R`` processes; the TorchRec export writes what ``DMPCollection`` takes.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Sequence

from shardplan.errors import InfeasiblePlanError, SpecError
from shardplan.types import BatchScope, Mode, Plan, Topology, Workload

__all__ = ["replica_options", "group_workload", "plan_2d", "plan_best_2d", "TwoDChoice"]


def replica_options(topology: Topology) -> list[int]:
    """The replica counts a 2D plan can use: divisors of every group's devices per host (the
    replicas of a shard stay on one host), 1 included."""
    per_host = [g.devices_per_host for g in topology.host_groups]
    return [r for r in range(1, min(per_host) + 1) if all(d % r == 0 for d in per_host)]


def group_workload(workload: Workload, replicas: int) -> Workload:
    """The workload one sharding group trains: the same per-rank batch (a global batch is
    split over the replicas).

    Raises:
        SpecError: a global batch that does not split over the replicas.
    """
    if replicas == 1 or workload.batch_scope is BatchScope.PER_RANK:
        return workload
    if workload.batch_size % replicas:
        raise SpecError(f"the global batch {workload.batch_size} does not split over "
                        f"{replicas} replicas", key_path="workload.batch_size")
    return dataclasses.replace(workload, batch_size=workload.batch_size // replicas)


def _check_training(workload: Workload, counts: Sequence[int]) -> None:
    """2D is a training layout: refuse more than one replica for an inference workload."""
    many = [r for r in counts if r > 1]
    if many and workload.mode is Mode.INFERENCE:
        raise SpecError(f"replicas={many[0]}: 2D sparse parallelism is for training (the "
                        "replicas average their weights); plan inference with replicas 1",
                        key_path="replicas")


def plan_2d(workload: Workload, topology: Topology, replicas: int, *,
            sync_steps: int = 1, profile: Any = None, options: Any = None,
            **plan_kwargs: Any) -> Plan:
    """Plan ``workload`` on one sharding group of ``topology`` with ``replicas`` replicas.

    Args:
        workload: the tables and batch (for the whole cluster).
        topology: the whole cluster.
        replicas: R; must divide every group's devices per host.
        sync_steps: the replicas' weights are averaged every this many steps.
        profile: cost-model profile(s), as for ``default_cost_model``.
        options: ``CostModelOptions`` (``replicas`` and ``replica_sync_steps`` are set here).
        plan_kwargs: passed to :func:`shardplan.planner.plan` (solver, time limit, ...).

    Returns:
        A plan for the sharding group's topology with ``replicas`` set.

    Raises:
        SpecError: bad replicas or batch; InfeasiblePlanError: it does not fit.
    """
    from shardplan.estimators import CostModelOptions, default_cost_model
    from shardplan.planner import plan

    _check_training(workload, [replicas])
    if replicas not in replica_options(topology):
        raise SpecError(f"replicas={replicas}: choose one of {replica_options(topology)} (a "
                        f"divisor of the devices per host of {topology.name!r})",
                        key_path="replicas")
    sub = topology.sharding_group(replicas)
    work = group_workload(workload, replicas)
    opts = dataclasses.replace(options or CostModelOptions(), replicas=replicas,
                               replica_sync_steps=sync_steps)
    cm = default_cost_model(work, sub, profile=profile, options=opts)
    p = plan(work, sub, cost_model=cm, **plan_kwargs)
    return dataclasses.replace(p, replicas=replicas)


@dataclass(frozen=True, kw_only=True, slots=True)
class TwoDChoice:
    """One replica count tried: its plan's step time, or why it has none."""

    replicas: int
    makespan_ms: float | None
    why: str = ""


def plan_best_2d(workload: Workload, topology: Topology, *,
                 replicas: Sequence[int] | None = None, sync_steps: int = 1,
                 profile: Any = None, options: Any = None, **plan_kwargs: Any
                 ) -> tuple[Plan, list[TwoDChoice]]:
    """The fastest of the plans for each replica count (default: all of
    :func:`replica_options`); ties go to fewer replicas (less memory). A count that does not
    fit, or whose global batch does not split over it, is skipped (listed with why).

    Raises:
        InfeasiblePlanError: no replica count fits (the error of ``replicas=1``).
        SpecError: a count above 1 for an inference workload (before anything is planned).
    """
    counts = list(replicas or replica_options(topology))
    _check_training(workload, counts)
    tried: list[TwoDChoice] = []
    best: Plan | None = None
    first_error: InfeasiblePlanError | None = None
    for r in counts:
        try:
            p = plan_2d(workload, topology, r, sync_steps=sync_steps, profile=profile,
                        options=options, **plan_kwargs)
        except InfeasiblePlanError as exc:
            first_error = first_error or exc
            tried.append(TwoDChoice(replicas=r, makespan_ms=None, why=exc.message))
            continue
        except SpecError as exc:
            if exc.key_path != "workload.batch_size" or r == 1:
                raise
            # a global batch that does not split over r replicas: not an option, not an error
            tried.append(TwoDChoice(replicas=r, makespan_ms=None, why=exc.message))
            continue
        tried.append(TwoDChoice(replicas=r, makespan_ms=p.summary.makespan_ms))
        if best is None or p.summary.makespan_ms < best.summary.makespan_ms * (1 - 1e-9):
            best = p
    if best is None:
        if first_error is None:
            raise SpecError("no replica counts to try", key_path="replicas")
        raise first_error
    return best, tried
