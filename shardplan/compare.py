"""Several planners on one problem, side by side.

:func:`compare_planners` plans one workload with each named solver (and, optionally, other
planners such as TorchRec's), under one cost model, and returns one :class:`CompareRow` per
planner: its plan, or why it found none. :func:`comparison_frame` turns the rows into a table
(gap against the best bound any planner proved, fullest HBM, sharding mix);
``shardplan compare`` prints it and :func:`~shardplan.report.compare_figure` draws it. With
``measure_steps`` every plan also runs on the local executor and its measured step time is
recorded beside the estimate.

Example:
    >>> from shardplan import load_problem
    >>> from shardplan.compare import compare_planners, comparison_frame
    >>> topo, work = load_problem("cpu-4")
    >>> rows = compare_planners(work, topo, ["greedy", "size_greedy"])
    >>> list(comparison_frame(rows)["planner"])
    ['greedy', 'size_greedy']
"""

from __future__ import annotations

import dataclasses
import importlib
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import pandas as pd

from shardplan.errors import InfeasiblePlanError, SolverError, SpecError
from shardplan.estimators.cost_model import ProfileArg, default_cost_model
from shardplan.frames import gap_percent, headroom
from shardplan.planner import plan as make_plan
from shardplan.solvers import SOLVERS
from shardplan.plans import kernel_backend
from shardplan.types import Plan, ShardingType, Tier, Topology, Workload

#: Another planner: ``(workload, topology) -> (plan, planning seconds)``.
ExternalPlanner = Callable[[Workload, Topology], tuple[Plan, float]]
PlanFn = Callable[..., Plan]

#: The frame's columns (``measured_ms`` empty unless measured).
COLUMNS = ("planner", "status", "makespan_ms", "measured_ms", "lower_bound_ms", "gap_percent",
           "solve_time_s", "hbm_max_used_fraction", "sharding_mix", "note")


@dataclass(frozen=True, kw_only=True, slots=True)
class CompareRow:
    """One planner's result in a comparison.

    Attributes:
        name: the planner (a registered solver name, or e.g. ``torchrec``).
        makespan_ms: its plan's makespan; None when it found no plan.
        lower_bound_ms: the bound it proved, if any.
        solve_time_s: planning time.
        status: the plan's status, or ``infeasible`` / ``failed``.
        note: why it found no plan, or what it is (``TorchRec's planner, rated by our model``).
        measured_ms: the plan's measured step time on the executor, if measured.
        plan: the plan (None when it found none).
    """

    name: str
    makespan_ms: float | None
    lower_bound_ms: float | None
    solve_time_s: float
    status: str
    note: str = ""
    measured_ms: float | None = None
    plan: Plan | None = dataclasses.field(default=None, compare=False, repr=False)
    torchrec_model_ms: float | None = None
    torchrec_model_hbm_gib: float | None = None
    dmp_ms: float | None = None
    dmp_note: str = ""


def resolve_solver_name(name: str, key_path: str = "solver") -> str:
    """The registered solver called ``name`` (``-`` and ``_`` are interchangeable).

    Raises:
        SpecError: no such solver (listing them).
    """
    for cand in (name, name.replace("-", "_"), name.replace("_", "-")):
        if cand in SOLVERS:
            return cand
    raise SpecError(f"unknown solver {name!r}; choose one of {', '.join(sorted(SOLVERS))}",
                    key_path=key_path)


def torchrec_function(name: str) -> Callable[..., Any]:
    """``shardplan.torchrec_interop.<name>``, imported when asked for.

    Raises:
        SpecError: TorchRec support is not installed (or has no such function).
    """
    try:
        interop = importlib.import_module("shardplan.torchrec_interop")
    except ImportError as exc:
        raise SpecError(f"TorchRec support is not installed ({exc}); install shardplan"
                        "[torchrec] (see scripts/setup.sh)") from None
    fn = getattr(interop, name, None)
    if fn is None:
        raise SpecError(f"TorchRec support is not available in this shardplan "
                        f"(shardplan.torchrec_interop has no {name})")
    return fn


def torchrec_planner() -> ExternalPlanner:
    """TorchRec's own planner (``shardplan.torchrec_interop.plan_with_torchrec``), its plans
    rated by shardplan's cost model.

    Raises:
        SpecError: TorchRec support is not installed.
    """
    return torchrec_function("plan_with_torchrec")


def compare_planners(workload: Workload, topology: Topology, solvers: Sequence[str], *,
                     time_limit_s: float = 30.0,
                     profile: ProfileArg | Sequence[ProfileArg] | None = None,
                     external: Mapping[str, ExternalPlanner] | None = None,
                     measure_steps: int = 0, plan_fn: PlanFn | None = None) -> list[CompareRow]:
    """Plan one problem with each solver (and each external planner) and collect the results.

    Args:
        workload: the tables.
        topology: the cluster.
        solvers: registered solver names (``-``/``_`` interchangeable), each once.
        time_limit_s: the budget per solver.
        profile: calibration profile(s) for the cost model every plan is costed with.
        external: other planners by name (e.g. ``{"torchrec": torchrec_planner()}``).
        measure_steps: also run every plan on the local executor (gloo; CPU topologies) and
            record the median step time of this many steps (0: do not measure).
        plan_fn: called as ``plan_fn(workload, topology, cost_model=, solver=, time_limit_s=,
            label=)`` instead of :func:`shardplan.plan` (the CLI passes one with a display).

    Returns:
        One row per planner, solvers first in the order given. A planner that finds no plan
        has a row with status ``infeasible`` (or ``failed``) and the reason in ``note``.

    Raises:
        SpecError: an unknown or repeated solver, a bad profile, or ``measure_steps`` on a
            topology that is not CPU.
    """
    names = [resolve_solver_name(n, "solvers") for n in solvers]
    if len(set(names)) != len(names):
        raise SpecError(f"names a solver twice: {', '.join(solvers)}", key_path="solvers")
    if measure_steps and any(g.device.model != "CPU" for g in topology.host_groups):
        raise SpecError(f"measuring runs the plans on this machine's executor, so it needs a CPU "
                        f"topology (cpu-2, cpu-4); {topology.name} has "
                        f"{', '.join(sorted({g.device.model for g in topology.host_groups}))} "
                        "devices", key_path="measure")
    cm = default_cost_model(workload, topology, profile)
    rows: list[CompareRow] = []
    for n in names:
        kwargs: dict[str, Any] = {"cost_model": cm, "solver": n, "time_limit_s": time_limit_s}
        try:
            p = (make_plan(workload, topology, **kwargs) if plan_fn is None
                 else plan_fn(workload, topology, label=f"solving with {n}", **kwargs))
        except InfeasiblePlanError as exc:
            rows.append(_failed(n, "infeasible", exc.message))
            continue
        except SolverError as exc:
            rows.append(_failed(n, "failed", str(exc)))
            continue
        s = p.summary
        rows.append(CompareRow(name=n, makespan_ms=s.makespan_ms, lower_bound_ms=s.lower_bound_ms,
                               solve_time_s=s.solve_time_s, status=s.status, plan=p))
    for name, planner in (external or {}).items():
        try:
            p, secs = planner(workload, topology)
        except InfeasiblePlanError as exc:
            rows.append(_failed(name, "infeasible", exc.message))
            continue
        rows.append(CompareRow(name=name, makespan_ms=p.summary.makespan_ms, lower_bound_ms=None,
                               solve_time_s=float(secs), status="feasible", plan=p,
                               note=f"{name}'s planner, rated by our cost model"))
    if measure_steps:
        rows = measure(rows, measure_steps)
    return rows


def _failed(name: str, status: str, note: str) -> CompareRow:
    return CompareRow(name=name, makespan_ms=None, lower_bound_ms=None, solve_time_s=0.0,
                      status=status, note=note)


def measure(rows: Sequence[CompareRow], steps: int) -> list[CompareRow]:
    """``rows`` with ``measured_ms`` filled in: each plan run on the local executor (gloo
    processes), the median step time of ``steps`` steps after ``max(2, steps // 5)`` warm-up
    steps. Needs the executor extra (torch)."""
    # the executor imports torch (shardplan.executor.clock); planning and comparing must not
    from shardplan.executor.api import profile_plans

    done = [i for i, r in enumerate(rows) if r.plan is not None]
    plans = [rows[i].plan for i in done]
    reports = profile_plans(plans, steps=steps, warmup=max(2, steps // 5),
                            backend=kernel_backend(plans))
    out = list(rows)
    for i, rep in zip(done, reports):
        out[i] = dataclasses.replace(rows[i], measured_ms=rep.measured_makespan_ms)
    return out


#: The columns :func:`comparison_frame` adds when :func:`torchrec_yardsticks` filled them in.
TORCHREC_COLUMNS = ("torchrec_model_ms", "torchrec_model_hbm_gib", "dmp_ms")


def torchrec_yardsticks(rows: Sequence[CompareRow], dmp_steps: int = 0) -> list[CompareRow]:
    """``rows`` with each plan also judged by TorchRec: priced by its estimators
    (``torchrec_model_ms``, ``torchrec_model_hbm_gib``; :func:`shardplan.torchrec_interop.
    cost_under_torchrec`) and, with ``dmp_steps`` on a CPU topology, run under its
    DistributedModelParallel on gloo (``dmp_ms``, plans interleaved, medians after warm-up;
    ``dmp_note`` says why a plan could not run there).

    Raises:
        SpecError: TorchRec support is not installed.
    """
    cost = torchrec_function("cost_under_torchrec")
    out = list(rows)
    for i, r in enumerate(rows):
        if r.plan is None:
            continue
        try:
            c = cost(r.plan)
        except SpecError as exc:  # PlanError: a plan TorchRec cannot express
            out[i] = dataclasses.replace(r, dmp_note=f"not priced by TorchRec: {exc}")
            continue
        hbm = c.max_hbm_bytes if c.compute_device != "cpu" else c.max_ddr_bytes
        out[i] = dataclasses.replace(r, torchrec_model_ms=c.max_perf_ms,
                                     torchrec_model_hbm_gib=hbm / 2**30)
    if dmp_steps:
        from shardplan.torchrec_interop.dmp import dmp_unsupported_reason, time_under_dmp

        done = [i for i, r in enumerate(out) if r.plan is not None]
        times = time_under_dmp([out[i].plan for i in done], steps=dmp_steps)
        for i, ms in zip(done, times):
            why = dmp_unsupported_reason(out[i].plan) if ms is None else ""
            note = out[i].dmp_note or (f"DMP: {why}" if why else "")
            out[i] = dataclasses.replace(out[i], dmp_ms=ms, dmp_note=note)
    return out


def best_bound(rows: Sequence[CompareRow]) -> float | None:
    """The best (highest) lower bound any planner proved."""
    bounds = [r.lower_bound_ms for r in rows if r.lower_bound_ms]
    return max(bounds) if bounds else None


def mix_label(plan: Plan) -> str:
    """A plan's sharding mix in short form: ``CW:23 TW:2 TWRW:1``."""
    return " ".join(f"{ShardingType(k).short}:{v}" for k, v in sorted(plan.summary.sharding_mix.items()))


def comparison_frame(rows: Sequence[CompareRow]) -> pd.DataFrame:
    """The comparison as a table with :data:`COLUMNS`: ``gap_percent`` against the best bound
    any planner proved, ``hbm_max_used_fraction`` of the fullest rank; NaN where a planner
    found no plan (or nothing was measured)."""
    nan = float("nan")
    bound = best_bound(rows)
    data: dict[str, list[Any]] = {c: [] for c in COLUMNS}
    for r in rows:
        gap = gap_percent(r.makespan_ms, bound) if r.plan is not None else None
        hbm = headroom(r.plan).get(Tier.HBM, {}) if r.plan is not None else {}
        for col, v in (("planner", r.name), ("status", r.status),
                       ("makespan_ms", nan if r.makespan_ms is None else r.makespan_ms),
                       ("measured_ms", nan if r.measured_ms is None else r.measured_ms),
                       ("lower_bound_ms", r.lower_bound_ms or nan),
                       ("gap_percent", nan if gap is None else round(gap, 3)),
                       ("solve_time_s", r.solve_time_s if r.plan is not None else nan),
                       ("hbm_max_used_fraction",
                        round(hbm["max_used_fraction"], 6) if hbm else nan),
                       ("sharding_mix", mix_label(r.plan) if r.plan is not None else ""),
                       ("note", r.note)):
            data[col].append(v)
    frame = pd.DataFrame(data, columns=list(COLUMNS))
    if any(r.torchrec_model_ms is not None or r.dmp_note for r in rows):
        for col in TORCHREC_COLUMNS:
            frame[col] = [nan if getattr(r, col) is None else getattr(r, col) for r in rows]
    return frame


def none_found_error(rows: Sequence[CompareRow]) -> InfeasiblePlanError:
    """The error when no planner found a plan (each planner's reason)."""
    return InfeasiblePlanError("no planner found a plan that fits: "
                               + "; ".join(f"{r.name}: {r.note}" for r in rows))


__all__ = ["COLUMNS", "TORCHREC_COLUMNS", "CompareRow", "ExternalPlanner", "best_bound",
           "compare_planners",
           "comparison_frame", "gap_percent", "measure", "mix_label", "none_found_error",
           "resolve_solver_name", "torchrec_function", "torchrec_planner", "torchrec_yardsticks"]
