"""Fitting the cost model's coefficients to measurements, through the model's own terms.

The model's times are linear in a vector of coefficients ``theta`` (:data:`THETA_KEYS`):
inverse efficiencies (``inv_lookup`` = 1 / lookup bandwidth efficiency, ...), the kernel and
per-table overheads, and per collective kind an inverse efficiency and a per-call latency.
Nothing here re-derives a formula: every predicted time comes from
:class:`~shardplan.estimators.cost_model.EmbeddingCostModel` built with the profile
:func:`profile_at` ``theta`` gives, and the columns of the linear system are the model's
response to a unit change of each coefficient (exact, since the model is linear in them).

What is fitted to what, per measured plan (the executor's ``profile``, virtual clock):

* compute stages, per rank: the rank's forward / backward compute lane (its own work);
* communication stages: the stage's time, the same for every participant (a collective ends
  when its slowest participant is done, so each rank's busy time in it is the collective's
  duration): the model's slowest (rank, lane) of the stage. That maximum is linear once the
  slowest cell is known; the fit finds it, refits, and repeats until it no longer changes.

Least squares on relative error, with bounds (efficiencies <= 1, i.e. inverse >= 1; overheads
and latencies >= 0) by an active-set method. Plain numpy: no torch, testable anywhere.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Mapping, Sequence

import numpy as np

from shardplan.errors import SpecError
from shardplan.estimators.profiles import (
    Coefficients,
    Collective,
    DeviceProfile,
    ProfileProvenance,
    ProvenanceKind,
)
from shardplan.types import LANES, STAGE_LANE_INDEX, Assignment, Lane, Stage, Topology, Workload

__all__ = ["THETA_KEYS", "KINDS", "PlanMeasurement", "FitReport", "profile_at",
           "coefficients_of", "predict", "fit_plans", "fit_overlap"]

#: The collective kinds fitted (each an inverse efficiency ``inv_<kind>`` and a per-call
#: latency ``lat_<kind>``; all-gather uses reduce-scatter's): the profile's ``Collective`` enum.
KINDS: tuple[Collective, ...] = tuple(Collective)
THETA_KEYS: tuple[str, ...] = (
    "inv_lookup", "inv_backward", "kernel_overhead_us", "per_table_overhead_us",
    *(f"inv_{k.value}" for k in KINDS), *(f"lat_{k.value}" for k in KINDS))
_LOWER = {k: (1.0 if k.startswith("inv_") else 0.0) for k in THETA_KEYS}
_COMPUTE = (Stage.FWD_COMPUTE, Stage.BWD_COMPUTE)
_COMM = tuple(s for s in Stage if s.is_comm)


@dataclass(frozen=True, kw_only=True, slots=True)
class PlanMeasurement:
    """One measured plan.

    Attributes:
        workload / topology: what the plan was made for.
        assignment: the plan's options and ranks.
        compute_ms: [ranks, 2] the ranks' measured forward and backward compute (busy) ms.
        comm_ms: [4] the measured time of each communication stage (input dist, fwd comm,
            bwd comm, dp sync; ``Stage`` order), the median over ranks of their busy time.
        step_ms: the measured step time (the slowest rank's), or None (kernel points).
        pipelined: whether it ran pipelined (TorchRec's ``TrainPipelineSparseDist``).
    """

    workload: Workload
    topology: Topology
    assignment: Assignment
    compute_ms: np.ndarray
    comm_ms: np.ndarray
    step_ms: float | None = None
    pipelined: bool = False


@dataclass(frozen=True, kw_only=True, slots=True)
class FitReport:
    theta: dict[str, float]
    median_rel_error: float  # over every fitted value
    points: int
    at_bounds: tuple[str, ...]
    unidentified: tuple[str, ...]
    iterations: int


def coefficients_of(theta: dict[str, float], link: str, base: Coefficients | None = None
                    ) -> Coefficients:
    """The profile coefficients ``theta`` stands for: the best collective kind's efficiency
    becomes the link's, the others a factor on it (``collective_kind_efficiency``)."""
    best = min(theta[f"inv_{k.value}"] for k in KINDS)
    base = base or Coefficients()
    eff = dict(base.collective_bandwidth_efficiency)
    eff[link] = min(1.0, 1.0 / best)
    return Coefficients(
        lookup_bandwidth_efficiency=min(1.0, 1.0 / theta["inv_lookup"]),
        backward_bandwidth_efficiency=min(1.0, 1.0 / theta["inv_backward"]),
        kernel_overhead_us=max(0.0, theta["kernel_overhead_us"]),
        per_table_overhead_us=max(0.0, theta["per_table_overhead_us"]),
        ddr_bandwidth_efficiency=base.ddr_bandwidth_efficiency,
        pcie_bandwidth_efficiency=base.pcie_bandwidth_efficiency,
        all_to_all_peer_concurrency=base.all_to_all_peer_concurrency,
        collective_bandwidth_efficiency=eff,
        collective_kind_efficiency={k.value: min(1.0, best / theta[f"inv_{k.value}"])
                                    for k in KINDS},
        collective_latency_us={k.value: max(0.0, theta[f"lat_{k.value}"]) for k in KINDS})


def profile_at(theta: dict[str, float], link: str, device_model: str) -> DeviceProfile:
    """A profile of the coefficients ``theta`` (for the fit's evaluations)."""
    return DeviceProfile(name="fit", device_model=device_model,
                         provenance=ProfileProvenance(kind=ProvenanceKind.MEASURED),
                         coefficients=coefficients_of(theta, link))


def predict(measured: Sequence[PlanMeasurement], theta: dict[str, float],
            options: Any = None) -> list[np.ndarray]:
    """Per plan, the model's [ranks, lanes] ms under ``theta``."""
    from shardplan.estimators.cost_model import EmbeddingCostModel

    from shardplan.plans import rank_costs

    out = []
    models: dict[tuple[int, int], Any] = {}
    for m in measured:
        key = (id(m.workload), id(m.topology))
        cm = models.get(key)
        if cm is None:
            topo = m.topology
            link = topo.host_groups[0].intra_host_link.type.value
            prof = profile_at(theta, link, topo.host_groups[0].device.model)
            cm = models[key] = EmbeddingCostModel(m.workload, topo,
                                                  profiles=[prof] * len(topo.host_groups),
                                                  options=options)
        out.append(np.array([c.perf.as_tuple() for c in rank_costs(m.assignment, m.topology, cm)]))
    return out


def _values(lanes: np.ndarray, active: list[tuple[int, int]] | None) -> tuple[np.ndarray, list]:
    """The fitted values of one plan from its lanes: compute lanes per rank, then each comm
    stage at ``active`` (rank, lane) cells (or the current maxima, returned)."""
    fwd, bwd = LANES.index(Lane.FWD_COMPUTE), LANES.index(Lane.BWD_COMPUTE)
    vals = [lanes[:, fwd], lanes[:, bwd]]
    cells = []
    for k, st in enumerate(_COMM):
        ix = list(STAGE_LANE_INDEX[list(Stage).index(st)])
        if active is None:
            sub = lanes[:, ix]
            r, j = np.unravel_index(int(np.argmax(sub)), sub.shape)
            cells.append((int(r), ix[int(j)]))
        else:
            cells.append(active[k])
        r, l = cells[-1]
        vals.append(np.array([lanes[r, l]]))
    return np.concatenate(vals), cells


def fit_plans(measured: Sequence[PlanMeasurement], *,
              start: dict[str, float] | None = None, options: Any = None,
              max_iterations: int = 8, tie: Mapping[str, str] | None = None) -> FitReport:
    """Fit ``theta`` to measured plans (see the module docstring).

    Args:
        measured: the plans (each with its workload and topology) and their measurements;
            kernel microbenchmarks are one-rank plans.
        start: the first ``theta`` (default: efficiencies 1, overheads 0).
        options: the cost model's options (``CostModelOptions``) the plans are estimated with.
        max_iterations: refits after the slowest cells of the comm stages change.
        tie: collective kinds (``Collective`` values) priced as another kind: ``{"reduce_scatter":
            "all_to_all"}`` fits one efficiency and one latency for both, as on gloo, which
            has no reduce-scatter (torch's ``ProcessGroupGloo`` and the executor run it as an
            all-to-all plus a local sum).

    Returns:
        The fitted ``theta`` and how well it fits.

    Raises:
        SpecError: no measurements.
    """
    if not measured:
        raise SpecError("no measured plans to fit")
    y = np.concatenate([np.concatenate([m.compute_ms[:, 0], m.compute_ms[:, 1], m.comm_ms])
                        for m in measured])
    theta = dict(start or {k: _LOWER[k] for k in THETA_KEYS})
    tied = {f"{p}_{a}": f"{p}_{b}" for a, b in (tie or {}).items() for p in ("inv", "lat")}
    for k in tied:
        if k not in theta or tied[k] not in theta or tied[k] in tied:
            raise SpecError(f"cannot tie {k} to {tied[k]}: both must be fitted collective kinds "
                            "and the target must not be tied itself", key_path="tie")
        theta[k] = theta[tied[k]]
    active: list[list[tuple[int, int]]] | None = None
    iterations = 0
    pinned: dict[int, float] = {}
    free: list[int] = []
    for iterations in range(1, max_iterations + 1):
        base = predict(measured, theta, options)
        if active is None:
            active = [_values(b, None)[1] for b in base]
        f0 = np.concatenate([_values(b, a)[0] for b, a in zip(base, active)])
        cols = []
        for k in THETA_KEYS:
            step = dict(theta)
            step[k] += 1.0
            pk = predict(measured, step, options)
            cols.append(np.concatenate([_values(b, a)[0] for b, a in zip(pk, active)]) - f0)
        a = np.stack(cols, 1)
        for k, to in tied.items():  # one column for both kinds; the tied one follows
            a[:, THETA_KEYS.index(to)] += a[:, THETA_KEYS.index(k)]
            a[:, THETA_KEYS.index(k)] = 0.0
        fixed = f0 - a @ np.array([theta[k] for k in THETA_KEYS])
        sol, pinned, free = _bounded_lstsq(a, y - fixed, 1.0 / np.maximum(np.abs(y), 1e-6),
                                           [_LOWER[k] for k in THETA_KEYS],
                                           [theta[k] for k in THETA_KEYS])
        theta = {k: float(sol[i]) for i, k in enumerate(THETA_KEYS)}
        theta.update({k: theta[to] for k, to in tied.items()})
        new_active = [_values(b, None)[1] for b in predict(measured, theta, options)]
        if new_active == active:
            break
        active = new_active
    final = np.concatenate([_values(b, None)[0] for b in predict(measured, theta, options)])
    ok = np.abs(y) > 0
    err = np.abs(final[ok] - y[ok]) / np.abs(y[ok])
    return FitReport(theta=theta, median_rel_error=float(np.median(err)) if ok.any() else 0.0,
                     points=int(ok.sum()),
                     at_bounds=tuple(THETA_KEYS[i] for i in sorted(pinned)
                                     if THETA_KEYS[i] not in tied),
                     unidentified=tuple(k for i, k in enumerate(THETA_KEYS)
                                        if i not in free and k not in tied),
                     iterations=iterations)


def _bounded_lstsq(a: np.ndarray, rhs: np.ndarray, w: np.ndarray, lower: list[float],
                   default: list[float]) -> tuple[np.ndarray, dict[int, float], list[int]]:
    """min ||w (a x - rhs)|| with x >= lower, by an active set: pin the variables that come out
    below their bound, refit the rest. Columns that never move the fit keep ``default``."""
    n = a.shape[1]
    free = [i for i in range(n) if np.abs(a[:, i]).sum() > 1e-12]
    x = np.array(default, dtype=float)
    pinned: dict[int, float] = {}
    for _ in range(n + 1):
        idx = [i for i in free if i not in pinned]
        r = rhs - sum((a[:, i] * v for i, v in pinned.items()), np.zeros_like(rhs))
        if idx:
            sol, *_ = np.linalg.lstsq(a[:, idx] * w[:, None], r * w, rcond=None)
            x[idx] = sol
        for i, v in pinned.items():
            x[i] = v
        bad = [i for i in idx if x[i] < lower[i]]
        if not bad:
            break
        for i in bad:
            pinned[i] = lower[i]
    return x, pinned, free


def fit_overlap(measured: Sequence[PlanMeasurement], theta: dict[str, float],
                options: Any = None, grid: int = 100) -> tuple[float, float] | None:
    """The pipeline's overlap (``Coefficients.pipeline_overlap``) that best predicts the
    measured step times of the pipelined plans, given the fitted ``theta``.

    The step model composes the lanes :func:`predict` gives (``StepModel``, the options'
    composition) with ``overlap`` on a grid of ``grid`` + 1 values in [0, 1]; the value with the
    least median relative error is kept, ties to the larger (closer to full overlap).

    Returns:
        (overlap, its median relative step-time error), or None when no pipelined plan has a
        measured step time.
    """
    from shardplan.estimators.cost_options import CostModelOptions

    runs = [m for m in measured if m.pipelined and m.step_ms]
    if not runs:
        return None
    base = (options or CostModelOptions()).step
    lanes = predict(runs, theta, options)
    y = np.array([m.step_ms for m in runs])
    best: tuple[float, float] | None = None
    for i in range(grid, -1, -1):
        step = replace(base, overlap=i / grid)
        est = np.array([step.makespan(load) for load in lanes])
        err = float(np.median(np.abs(est - y) / y))
        if best is None or err < best[1] - 1e-12:
            best = (i / grid, err)
    return best

