"""Capacity planning: plan one workload on clusters of several sizes.

Each size is the topology with its number of hosts scaled (:func:`scale_topology`): devices
per host, the devices and the links stay as they are; several host groups scale in proportion.
A per-rank batch size stays per rank. :func:`sweep` plans every size and says, for each that
does not fit, why (the planner's computed diagnosis); :func:`fewest_devices` picks the answer.
``shardplan sweep`` prints the result and :func:`~shardplan.report.sweep_figure` draws it.

Example:
    >>> from shardplan import load_problem
    >>> from shardplan.sweep import fewest_devices, sweep
    >>> topo, work = load_problem("cpu-4")
    >>> rows = sweep(work, topo, [4, 8], solver="greedy")
    >>> fewest_devices(rows).devices
    4
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Sequence

import pandas as pd

from shardplan.errors import InfeasiblePlanError, LimitError, SpecError
from shardplan.estimators.cost_model import ProfileArg, default_cost_model
from shardplan.parsing import DEFAULT_LIMITS
from shardplan.planner import plan as make_plan
from shardplan.solvers import DEFAULT_SOLVER
from shardplan.types import Plan, Topology, Workload

#: Most cluster sizes one sweep plans (each is a full planning run).
MAX_SIZES = 64

PlanFn = Callable[..., Plan]


@dataclass(frozen=True, kw_only=True, slots=True)
class SweepRow:
    """One cluster size in a sweep.

    Attributes:
        devices, hosts: the size.
        makespan_ms: the plan's makespan; None when nothing fits.
        lower_bound_ms: the plan's lower bound, if any.
        solve_time_s: planning time.
        note: for a size that does not fit, why and what would make it fit (computed).
        plan: the plan (None when nothing fits).
    """

    devices: int
    hosts: int
    makespan_ms: float | None
    lower_bound_ms: float | None
    solve_time_s: float
    note: str = ""
    plan: Plan | None = dataclasses.field(default=None, compare=False, repr=False)

    @property
    def fits(self) -> bool:
        return self.makespan_ms is not None


def parse_devices(text: str) -> list[int]:
    """Cluster sizes from ``8,16,32`` (a list), ``8-64`` (doubling from 8 to 64) or
    ``8-64:8`` (step 8), sorted, each once.

    Raises:
        SpecError: anything else, a size below 1, or more than :data:`MAX_SIZES` sizes.
        LimitError: a size above ``LoadLimits.max_devices``.
    """
    out: list[int] = []
    for part in (p.strip() for p in text.split(",")):
        m = re.fullmatch(r"(\d{1,9})(?:-(\d{1,9})(?::(\d{1,9}))?)?", part)
        if not m:
            raise SpecError(f"cannot read {part!r}; write 8,16,32 or 8-64 (doubling) or "
                            "8-64:8 (step 8)", key_path="--devices")
        lo = int(m.group(1))
        hi = int(m.group(2)) if m.group(2) else lo
        if lo < 1 or hi < lo:
            raise SpecError(f"{part!r}: sizes must be >= 1 and ranges go up", key_path="--devices")
        if m.group(3):
            step = int(m.group(3))
            if step < 1:
                raise SpecError(f"{part!r}: the step must be >= 1", key_path="--devices")
            if (hi - lo) // step + 1 > MAX_SIZES:
                raise _too_many((hi - lo) // step + 1)
            out += list(range(lo, hi + 1, step))
        else:
            k = lo
            while k <= hi:
                out.append(k)
                k *= 2
        if len(out) > MAX_SIZES:
            raise _too_many(len(out))
    sizes = sorted(set(out))
    if len(sizes) > MAX_SIZES:
        raise _too_many(len(sizes))
    if sizes[-1] > DEFAULT_LIMITS.max_devices:
        raise _too_large(sizes[-1])
    return sizes


def _too_large(devices: int) -> LimitError:
    return LimitError(f"{devices:,} devices is more than max_devices="
                      f"{DEFAULT_LIMITS.max_devices:,} (shardplan.parsing.LoadLimits), the "
                      "largest cluster shardplan plans for", key_path="--devices")


def _too_many(n: int) -> SpecError:
    return SpecError(f"{n} sizes is too many for one sweep (at most {MAX_SIZES})",
                     key_path="--devices")


def scale_topology(topology: Topology, devices: int) -> Topology:
    """``topology`` with its host counts scaled to ``devices`` devices; devices per host, the
    devices and links stay as they are. Several host groups scale in proportion.

    Raises:
        SpecError: ``devices`` is not reachable with whole hosts.
        LimitError: more devices than ``LoadLimits.max_devices``.
    """
    world = topology.world_size
    groups = topology.host_groups
    if isinstance(devices, bool) or not isinstance(devices, int) or devices < 1:
        raise SpecError(f"devices must be an integer >= 1, got {devices!r}", key_path="devices")
    if devices > DEFAULT_LIMITS.max_devices:
        raise _too_large(devices)
    if len(groups) == 1:
        g = groups[0]
        if devices % g.devices_per_host:
            raise SpecError(f"{devices} devices is not a whole number of {g.devices_per_host}-"
                            f"device hosts of {topology.name}; use multiples of "
                            f"{g.devices_per_host}", key_path="devices")
        new = (dataclasses.replace(g, hosts=devices // g.devices_per_host),)
    else:
        k = devices / world
        hosts = [g.hosts * k for g in groups]
        if any(abs(h - round(h)) > 1e-9 or round(h) < 1 for h in hosts):
            shape = ", ".join(f"{g.hosts}x{g.devices_per_host}" for g in groups)
            raise SpecError(f"{devices} devices cannot keep the proportions of {topology.name}'s "
                            f"host groups ({shape}); "
                            f"use multiples of {world} scaled by whole factors",
                            key_path="devices")
        new = tuple(dataclasses.replace(g, hosts=round(h)) for g, h in zip(groups, hosts))
    hosts = sum(g.hosts for g in new)
    if hosts > DEFAULT_LIMITS.max_hosts:
        raise LimitError(f"{devices:,} devices need {hosts:,} hosts, more than max_hosts="
                         f"{DEFAULT_LIMITS.max_hosts:,} (shardplan.parsing.LoadLimits)",
                         key_path="devices")
    return dataclasses.replace(topology, name=f"{topology.name}@{devices}", host_groups=new)


def sweep(workload: Workload, topology: Topology, devices: Iterable[int], *,
          solver: str = DEFAULT_SOLVER, time_limit_s: float = 30.0,
          profile: ProfileArg | Sequence[ProfileArg] | None = None,
          plan_fn: PlanFn | None = None) -> list[SweepRow]:
    """Plan ``workload`` on ``topology`` scaled to each size in ``devices``.

    Args:
        workload: the tables.
        topology: the cluster to scale (by hosts).
        devices: the sizes; every one is checked (:func:`scale_topology`) before any is planned.
        solver: the solver for every size.
        time_limit_s: the budget per size.
        profile: calibration profile(s) for the cost model (default: the bundled ones).
        plan_fn: called as ``plan_fn(workload, topology, cost_model=, solver=, time_limit_s=,
            label=)`` instead of :func:`shardplan.plan` (the CLI passes one with a live display).

    Returns:
        One row per size, in the order given; a size that does not fit has ``makespan_ms``
        None and a ``note`` saying why and what would make it fit.

    Raises:
        SpecError: a size not reachable with whole hosts, a bad profile.
    """
    scaled = [(n, scale_topology(topology, n)) for n in devices]
    rows = []
    for n, t in scaled:
        cm = default_cost_model(workload, t, profile)
        kwargs: dict[str, Any] = {"cost_model": cm, "solver": solver, "time_limit_s": time_limit_s}
        try:
            if plan_fn is None:
                p = make_plan(workload, t, **kwargs)
            else:
                p = plan_fn(workload, t, label=f"{n} devices", **kwargs)
        except InfeasiblePlanError as exc:
            rows.append(SweepRow(devices=n, hosts=t.num_hosts, makespan_ms=None,
                                 lower_bound_ms=None, solve_time_s=0.0, note=exc.render()))
            continue
        s = p.summary
        rows.append(SweepRow(devices=n, hosts=t.num_hosts, makespan_ms=s.makespan_ms,
                             lower_bound_ms=s.lower_bound_ms, solve_time_s=s.solve_time_s, plan=p))
    return rows


def fewest_devices(rows: Sequence[SweepRow], target_ms: float | None = None) -> SweepRow | None:
    """The smallest size that fits (and, with ``target_ms``, whose makespan is at most it)."""
    ok = [r for r in rows if r.fits and (target_ms is None or r.makespan_ms <= target_ms)]
    return min(ok, key=lambda r: r.devices) if ok else None


def sweep_frame(rows: Sequence[SweepRow]) -> pd.DataFrame:
    """The sweep as a table: ``devices``, ``hosts``, ``feasible``, ``makespan_ms``,
    ``lower_bound_ms``, ``solve_time_s``, ``note`` (NaN where a size does not fit)."""
    return pd.DataFrame({
        "devices": [r.devices for r in rows], "hosts": [r.hosts for r in rows],
        "feasible": [r.fits for r in rows],
        "makespan_ms": [r.makespan_ms if r.fits else float("nan") for r in rows],
        "lower_bound_ms": [r.lower_bound_ms if r.lower_bound_ms else float("nan") for r in rows],
        "solve_time_s": [r.solve_time_s for r in rows], "note": [r.note for r in rows]})


def none_fits_error(rows: Sequence[SweepRow]) -> InfeasiblePlanError:
    """The error for a sweep where no size fits: the sizes tried, and the diagnosis at the
    largest (its computed suggestions)."""
    largest = max(rows, key=lambda r: r.devices)
    sizes = ", ".join(str(r.devices) for r in rows)
    return InfeasiblePlanError(f"no cluster size tried ({sizes} devices) fits the workload; at "
                               f"{largest.devices} devices: {largest.note}")


__all__ = ["MAX_SIZES", "SweepRow", "fewest_devices", "none_fits_error", "parse_devices",
           "scale_topology", "sweep", "sweep_frame"]
