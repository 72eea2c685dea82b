"""Plan once, share everywhere: a plan cache keyed by the inputs, and a helper that plans on
one trainer rank and broadcasts the plan over ``torch.distributed``.

Planning a large model takes seconds (DLRM-DCNv2 on 16 GPUs about 6-9 s); a trainer that calls
:func:`shardplan.plan` on every rank pays that on every rank, and may get different plans if
the ranks' time limits cut a search at different points. :func:`plan_once` plans on one rank
(through the cache, if given) and sends the plan's JSON to the others, which check it on
arrival; :class:`PlanCache` keeps plans on disk keyed by everything that decides them (the
workload, the topology, the cost model with its profiles, the solver and its settings, the
shardplan version), so a restarted job reuses its plan instead of solving again.

torch is imported only by :func:`plan_once`; the planner and the cache never need it.

Example (in a trainer, after ``torch.distributed.init_process_group``)::

    from shardplan.distributed import plan_once
    plan = plan_once(workload, topology, cache_dir="/shared/shardplan-cache")
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any

from shardplan import __version__
from shardplan.errors import PlanError, ShardplanError, ShardplanWarning, SpecError
from shardplan.estimators.cost_model import default_cost_model
from shardplan.planner import plan as make_plan
from shardplan.plans import inputs_sha256, load_plan, plan_from_json, plan_to_json
from shardplan.solvers import DEFAULT_SOLVER
from shardplan.types import CostModel, Plan, Topology, Workload

#: planner arguments that do not change the plan (they only watch it being made)
_NOT_IN_KEY = ("progress",)


def plan_key(workload: Workload, topology: Topology, **plan_kwargs: Any) -> str:
    """The cache key of a planning call: a sha256 over the inputs hash, the cost model's
    description (name, options, profiles with coefficients), the solver and every other
    argument of :func:`shardplan.plan`, and the shardplan version.

    Raises:
        SpecError: an argument that cannot be part of a key (not JSON-describable).
    """
    kwargs = dict(plan_kwargs)
    cm: CostModel = kwargs.pop("cost_model", None) or default_cost_model(workload, topology)
    solver = kwargs.pop("solver", DEFAULT_SOLVER)
    if not isinstance(solver, str):
        solver = {"class": type(solver).__qualname__, "options": solver.options()}
    settings = {}
    for k, v in sorted(kwargs.items()):
        if k in _NOT_IN_KEY:
            continue
        settings[k] = dataclasses.asdict(v) if dataclasses.is_dataclass(v) else v
    blob = {"inputs": inputs_sha256(workload, topology), "cost_model": cm.describe(),
            "solver": solver, "settings": settings, "shardplan": __version__}
    try:
        text = json.dumps(blob, sort_keys=True, default=str)
    except (TypeError, ValueError) as exc:
        raise SpecError(f"cannot key this planning call: {exc}", key_path="plan_kwargs") from None
    return hashlib.sha256(text.encode()).hexdigest()


class PlanCache:
    """Plans on disk, one JSON file per key (:func:`plan_key`), written atomically.

    A cached plan is read with :func:`~shardplan.plans.load_plan`, so it is checked as any
    plan file is; a damaged or stale entry gives a ``ShardplanWarning`` and counts as a miss.

    Args:
        directory: where the plans live (created if missing); share it between jobs.
    """

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory).expanduser()
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise SpecError(f"cannot create the plan cache: {exc.strerror}",
                            source=str(self.directory)) from None

    def path(self, key: str) -> Path:
        return self.directory / f"plan-{key}.json"

    def get(self, key: str) -> Plan | None:
        """The plan stored under ``key``, or None (absent, or damaged: then a warning)."""
        p = self.path(key)
        if not p.exists():
            return None
        try:
            return load_plan(p)
        except PlanError as exc:
            warnings.warn(f"ignoring the cached plan {p}: {exc.message}", ShardplanWarning,
                          stacklevel=2)
            return None

    def put(self, key: str, plan: Plan) -> Path:
        """Store ``plan`` under ``key`` (write to a temporary file, then rename)."""
        target = self.path(key)
        fd, tmp = tempfile.mkstemp(prefix=".plan-", suffix=".json", dir=self.directory)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(plan_to_json(plan))
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return target


def plan_cached(workload: Workload, topology: Topology, *, cache_dir: str | Path,
                **plan_kwargs: Any) -> Plan:
    """:func:`shardplan.plan`, through a :class:`PlanCache` in ``cache_dir``: the stored plan
    when the same call was planned before, else a new plan, stored.

    Args:
        workload: the tables.
        topology: the cluster.
        cache_dir: the cache folder.
        plan_kwargs: any argument of :func:`shardplan.plan` (all but ``progress`` are keyed).

    Returns:
        The plan (byte-identical JSON to the first call's on a hit).
    """
    kwargs = dict(plan_kwargs)
    kwargs.setdefault("cost_model", default_cost_model(workload, topology))
    cache = PlanCache(cache_dir)
    key = plan_key(workload, topology, **kwargs)
    hit = cache.get(key)
    if hit is not None:
        return hit
    p = make_plan(workload, topology, **kwargs)
    cache.put(key, p)
    return p


def plan_once(workload: Workload, topology: Topology, *, src: int = 0, group: Any = None,
              cache_dir: str | Path | None = None, **plan_kwargs: Any) -> Plan:
    """Plan on rank ``src`` of a ``torch.distributed`` group and give every rank that plan.

    Every rank calls it with the same arguments. Rank ``src`` plans (through the cache in
    ``cache_dir``, if given) and broadcasts the plan's JSON; the others read and check it. If
    planning fails on ``src`` (bad input, no plan fits), every rank raises the same error, so
    no rank is left waiting.

    Args:
        workload: the tables.
        topology: the cluster.
        src: the (global) rank that plans.
        group: the process group (default: the world).
        cache_dir: a :class:`PlanCache` folder on ``src``, or None to plan without one.
        plan_kwargs: any argument of :func:`shardplan.plan`.

    Returns:
        The plan, identical on every rank.

    Raises:
        SpecError: no initialised process group.
        ShardplanError: what planning raised on ``src``, raised on every rank.
    """
    import torch.distributed as dist  # the planner never needs torch; only this does

    if not (dist.is_available() and dist.is_initialized()):
        raise SpecError("plan_once needs an initialised torch.distributed process group "
                        "(torch.distributed.init_process_group); without one call "
                        "shardplan.plan or plan_cached")
    payload: list[Any] = [None]
    if dist.get_rank() == src:
        try:
            p = (plan_cached(workload, topology, cache_dir=cache_dir, **plan_kwargs)
                 if cache_dir is not None else make_plan(workload, topology, **plan_kwargs))
            payload = [("plan", plan_to_json(p))]
        except ShardplanError as exc:
            payload = [("error", exc)]
    dist.broadcast_object_list(payload, src=src, group=group)
    kind, value = payload[0]
    if kind == "error":
        raise value
    return p if dist.get_rank() == src else plan_from_json(value, f"<plan from rank {src}>")


__all__ = ["PlanCache", "plan_cached", "plan_key", "plan_once"]
