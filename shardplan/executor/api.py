"""The executor's front door: validate a plan against the unsharded reference, profile its
stages against the estimate. Both check the plan (and reject a tampered one) before any
process starts.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from shardplan.errors import PlanError, ShardplanError
from shardplan.executor.layout import build_layout, check_estimates_match
from shardplan.plans import plan_to_json
from shardplan.types import Plan, Stage, Topology

__all__ = ["ValidationMismatch", "ValidationReport", "ProfileRow", "ProfileReport",
           "prepare", "validate_plan", "profile_plan", "profile_plans", "resolve_for_world"]


class ValidationMismatch(ShardplanError):
    """The sharded run differs from the unsharded reference (names table, shard and rank)."""


def prepare(plan: Plan, world_size: int | None = None) -> bool:
    """Reject a bad or tampered plan before anything runs.

    Returns:
        Whether the per-rank memory estimates could be re-derived and matched (False: the plan
        was made by a cost model configured differently from today's default, so that check
        was skipped; the structural checks always run).

    Raises:
        PlanError: naming the table/shard/rank at fault and the fix.
    """
    build_layout(plan, world_size)
    return check_estimates_match(plan)


def resolve_for_world(plan: Plan, world_size: int, solver: str = "greedy") -> Plan:
    """Re-solve ``plan``'s workload for a one-host topology of ``world_size`` ranks (the
    plan's first host group with its device count changed). Used when a plan for a large
    cluster is validated on a few CPU processes; the caller must say so."""
    from shardplan.planner import plan as make_plan

    g = plan.topology.host_groups[0]
    topo = Topology(name=f"{plan.topology.name}-as-{world_size}",
                    host_groups=(dataclasses.replace(g, name=g.name, hosts=1,
                                                     devices_per_host=world_size),),
                    hbm_reserved_fraction=plan.topology.hbm_reserved_fraction,
                    description=f"{plan.topology.name} shrunk to {world_size} ranks for a local run")
    return make_plan(plan.workload, topo, solver=solver)


# --------------------------------------------------------------------------------------------
# validate
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True, slots=True)
class ValidationReport:
    """What ``validate`` found.

    Attributes:
        ranks: per rank: backend, mismatches, worst errors, measured and estimated bytes.
        rtol / atol: the tolerance of every comparison.
        steps: training steps compared.
        estimates_checked: whether the plan's recorded memory was re-derived and matched.
    """

    ranks: tuple[dict[str, Any], ...]
    rtol: float
    atol: float
    steps: int
    estimates_checked: bool

    @property
    def mismatches(self) -> list[dict[str, Any]]:
        return [m for r in self.ranks for m in r["mismatches"]]

    @property
    def passed(self) -> bool:
        return not self.mismatches

    @property
    def backend(self) -> str:
        return self.ranks[0]["backend"]

    def max_abs_error(self) -> dict[str, float]:
        keys = self.ranks[0]["max_abs_error"].keys()
        return {k: max(r["max_abs_error"][k] for r in self.ranks) for k in keys}

    def raise_on_mismatch(self) -> None:
        """Raises ValidationMismatch naming the first mismatch's table, shard and rank."""
        ms = self.mismatches
        if not ms:
            return
        m = ms[0]
        step = "after the last step" if m["step"] is None else f"at step {m['step']}"
        raise ValidationMismatch(
            f"{m['what']} of table {m['table']!r}, shard {m['shard']}, differs from the unsharded "
            f"reference on rank {m['rank']} {step} (max abs error {m['max_abs_error']:.3g}; "
            f"tolerance atol {self.atol:g} + rtol {self.rtol:g}); {len(ms)} mismatch(es) in all")


def validate_plan(plan: Plan, *, world_size: int | None = None, steps: int = 2, seed: int = 0,
                  backend: str = "auto", corrupt: tuple[str, int] | None = None) -> ValidationReport:
    """Run ``plan`` on local gloo processes and compare with the unsharded reference.

    Args:
        plan: the plan; its topology's world size is the number of processes.
        world_size: if given, must equal the plan's (see :func:`resolve_for_world`).
        steps: training steps; outputs and gradients are compared every step, weights and
            optimizer state after the last.
        seed: seeds tables, batches and upstream gradients.
        backend: kernel backend (``auto`` picks FBGEMM where installed).
        corrupt: (table, rank): perturb that rank's copy of the table after loading; for
            testing that mismatches are caught and named.

    Returns:
        The report (``passed``, per-rank details).

    Raises:
        PlanError: the plan is malformed or tampered with (nothing was started).
        ExecutionError: a rank crashed.
    """
    from shardplan.executor.launch import run_local
    from shardplan.executor.runner import ATOL, RTOL, Job, JobKind

    checked = prepare(plan, world_size)
    job = Job(kind=JobKind.VALIDATE, plan_json=plan_to_json(plan), steps=steps, seed=seed,
              backend=backend, corrupt=corrupt)
    res = run_local([job], plan.topology.world_size)[0]
    return ValidationReport(ranks=tuple(res), rtol=RTOL, atol=ATOL, steps=steps,
                            estimates_checked=checked)


# --------------------------------------------------------------------------------------------
# profile
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True, slots=True)
class ProfileRow:
    """One rank and stage: the median measured time beside the plan's estimate."""

    rank: int
    stage: str  # a Stage value, or "total"
    estimated_ms: float
    measured_ms: float

    @property
    def rel_error(self) -> float | None:
        """(estimate - measured) / measured; None when nothing was measured."""
        if self.measured_ms <= 0:
            return None
        return (self.estimated_ms - self.measured_ms) / self.measured_ms


@dataclass(frozen=True, kw_only=True, slots=True)
class ProfileReport:
    rows: tuple[ProfileRow, ...]
    backend: str
    steps: int
    warmup: int
    exclusive_compute: bool

    def totals(self) -> list[ProfileRow]:
        return [r for r in self.rows if r.stage == "total"]

    @property
    def measured_makespan_ms(self) -> float:
        return max(r.measured_ms for r in self.totals())

    @property
    def estimated_makespan_ms(self) -> float:
        return max(r.estimated_ms for r in self.totals())

    def median_abs_rel_error(self) -> float:
        """Median over ranks of |estimate - measured| / measured for each rank's step time."""
        errs = [abs(r.rel_error) for r in self.totals() if r.rel_error is not None]
        return statistics.median(errs) if errs else float("nan")

    def to_csv(self) -> str:
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(["rank", "stage", "estimated_ms", "measured_ms", "rel_error"])
        for r in self.rows:
            e = r.rel_error
            w.writerow([r.rank, r.stage, f"{r.estimated_ms:.6f}", f"{r.measured_ms:.6f}",
                        "" if e is None else f"{e:.4f}"])
        return buf.getvalue()

    def write_csv(self, path: str | Path) -> Path:
        p = Path(path)
        p.write_text(self.to_csv(), encoding="utf-8")
        return p


def _report(res: Sequence[dict[str, Any]], estimates: Sequence[tuple[dict[str, float], float]] | None
            ) -> ProfileReport:
    rows = []
    for i, r in enumerate(res):
        est, est_total = (r["estimated_ms"], r["estimated_total_ms"]) if estimates is None \
            else estimates[i]
        for s in Stage:
            rows.append(ProfileRow(rank=r["rank"], stage=s.value, estimated_ms=est[s.value],
                                   measured_ms=r["measured_ms"][s.value]))
        rows.append(ProfileRow(rank=r["rank"], stage="total", estimated_ms=est_total,
                               measured_ms=r["measured_total_ms"]))
    first = res[0]
    return ProfileReport(rows=tuple(rows), backend=first["backend"], steps=first["steps"],
                         warmup=first["warmup"], exclusive_compute=first["exclusive_compute"])


def profile_plans(plans: Sequence[Plan], *, steps: int = 10, warmup: int = 3, seed: int = 0,
                  backend: str = "auto", exclusive_compute: bool = True) -> list[ProfileReport]:
    """Profile several plans of one world size in one launch of the processes.

    Each report compares the measured stage medians with the estimates the plan records.

    Raises:
        PlanError: a plan is malformed or tampered with, or plans differ in world size.
    """
    from shardplan.executor.launch import run_local
    from shardplan.executor.runner import Job, JobKind

    if not plans:
        return []
    worlds = {p.topology.world_size for p in plans}
    if len(worlds) != 1:
        raise PlanError(f"plans of different world sizes {sorted(worlds)} cannot share a launch")
    for p in plans:
        build_layout(p)
    jobs = [Job(kind=JobKind.PROFILE, plan_json=plan_to_json(p), steps=steps, warmup=warmup,
                seed=seed, backend=backend, exclusive_compute=exclusive_compute) for p in plans]
    res = run_local(jobs, worlds.pop())
    return [_report(r, None) for r in res]


def profile_plan(plan: Plan, *, steps: int = 10, warmup: int = 3, seed: int = 0,
                 backend: str = "auto", exclusive_compute: bool = True) -> ProfileReport:
    """Median per-rank, per-stage times of ``plan`` beside its estimates (one row per rank and
    stage, plus a ``total`` row per rank).

    Raises:
        PlanError: the plan is malformed or tampered with (nothing was started).
    """
    prepare(plan)
    return profile_plans([plan], steps=steps, warmup=warmup, seed=seed, backend=backend,
                         exclusive_compute=exclusive_compute)[0]
