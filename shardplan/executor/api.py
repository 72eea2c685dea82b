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

from shardplan.errors import PlanError, ValidationMismatch
from shardplan.executor.clock import ClockKind
from shardplan.executor.layout import build_layout, check_estimates_match
from shardplan.plans import plan_to_json
from shardplan.types import Plan, Stage, Topology

__all__ = ["ValidationMismatch", "ValidationReport", "ProfileRow", "ProfileReport",
           "prepare", "validate_plan", "profile_plan", "profile_plans", "resolve_for_world"]


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
                  backend: str = "auto", pipelined: bool = True,
                  corrupt: tuple[str, int] | None = None) -> ValidationReport:
    """Run ``plan`` on local gloo processes and compare with the unsharded reference.

    Args:
        plan: the plan; its topology's world size is the number of processes.
        world_size: if given, must equal the plan's (see :func:`resolve_for_world`).
        steps: training steps; outputs and gradients are compared every step, weights and
            optimizer state after the last.
        seed: seeds tables, batches and upstream gradients.
        backend: kernel backend (``auto`` picks FBGEMM where installed).
        pipelined: run each next batch's input dist during the current step, on its own
            process group (TorchRec's ``TrainPipelineSparseDist``); ``False``: serially.
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
              backend=backend, pipelined=pipelined, clock=ClockKind.WALL, corrupt=corrupt)
    res = run_local([job], plan.topology.world_size * plan.replicas)[0]
    return ValidationReport(ranks=tuple(res), rtol=RTOL, atol=ATOL, steps=steps,
                            estimates_checked=checked)


# --------------------------------------------------------------------------------------------
# profile
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True, slots=True)
class ProfileRow:
    """One rank and stage: the median measured busy and wait times beside the estimate."""

    rank: int
    stage: str  # a Stage value, or "total" (the rank's busy time)
    estimated_ms: float
    measured_ms: float  # busy: time the rank spent in the stage's work
    waited_ms: float = 0.0  # blocked in the stage's collectives for other ranks

    @property
    def rel_error(self) -> float | None:
        """(estimate - measured) / measured; None when nothing was measured."""
        if self.measured_ms <= 0:
            return None
        return (self.estimated_ms - self.measured_ms) / self.measured_ms


@dataclass(frozen=True, kw_only=True, slots=True)
class ProfileReport:
    """A profile: per rank and stage, and the step time.

    Attributes:
        rows: per rank and stage (plus a ``total`` row per rank: its busy time).
        step_ms: the measured step time (median over steps; the slowest rank's, which every
            rank shares since collectives synchronise them).
        estimated_step_ms: the plan's makespan.
        pipelined / clock: how it ran (see ``runner.Job``).
    """

    rows: tuple[ProfileRow, ...]
    backend: str
    steps: int
    warmup: int
    pipelined: bool
    clock: str
    step_ms: float
    estimated_step_ms: float

    def totals(self) -> list[ProfileRow]:
        return [r for r in self.rows if r.stage == "total"]

    @property
    def measured_makespan_ms(self) -> float:
        return self.step_ms

    @property
    def estimated_makespan_ms(self) -> float:
        return self.estimated_step_ms

    def median_abs_rel_error(self) -> float:
        """Median over ranks of |estimate - measured| / measured for each rank's busy time."""
        errs = [abs(r.rel_error) for r in self.totals() if r.rel_error is not None]
        return statistics.median(errs) if errs else float("nan")

    def to_csv(self) -> str:
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(["rank", "stage", "estimated_ms", "measured_ms", "waited_ms", "rel_error"])
        for r in self.rows:
            e = r.rel_error
            w.writerow([r.rank, r.stage, f"{r.estimated_ms:.6f}", f"{r.measured_ms:.6f}",
                        f"{r.waited_ms:.6f}", "" if e is None else f"{e:.4f}"])
        w.writerow(["step", "step", f"{self.estimated_step_ms:.6f}", f"{self.step_ms:.6f}", "",
                    f"{(self.estimated_step_ms - self.step_ms) / self.step_ms:.4f}"
                    if self.step_ms > 0 else ""])
        return buf.getvalue()

    def write_csv(self, path: str | Path) -> Path:
        p = Path(path)
        p.write_text(self.to_csv(), encoding="utf-8")
        return p


def _report(res: Sequence[dict[str, Any]]) -> ProfileReport:
    rows = []
    for r in res:
        est = r["estimated_ms"]
        for s in Stage:
            rows.append(ProfileRow(rank=r["rank"], stage=s.value, estimated_ms=est[s.value],
                                   measured_ms=r["measured_ms"][s.value],
                                   waited_ms=r["waited_ms"][s.value]))
        rows.append(ProfileRow(rank=r["rank"], stage="total",
                               estimated_ms=sum(est[s.value] for s in Stage),
                               measured_ms=r["measured_total_ms"],
                               waited_ms=sum(r["waited_ms"].values())))
    first = res[0]
    return ProfileReport(rows=tuple(rows), backend=first["backend"], steps=first["steps"],
                         warmup=first["warmup"], pipelined=first["pipelined"],
                         clock=first["clock"], step_ms=max(r["step_ms"] for r in res),
                         estimated_step_ms=first["estimated_step_ms"])


def profile_plans(plans: Sequence[Plan], *, steps: int = 10, warmup: int = 3, seed: int = 0,
                  backend: str = "auto", pipelined: bool = True,
                  clock: ClockKind | str = ClockKind.VIRTUAL, measure_waits: bool = False
                  ) -> list[ProfileReport]:
    """Profile several plans of one world size in one launch of the processes.

    Each report compares the measured stage medians with the estimates the plan records.

    Args:
        plans: the plans (one world size).
        steps / warmup: timed steps (medians are reported) after untimed ones.
        seed: tables, batches and gradients.
        backend: kernel backend.
        pipelined: TorchRec's pipelined training loop (default) or serial stages.
        clock: ``virtual`` (default: one emulated device per rank, for machines with fewer
            cores than ranks) or ``wall`` (real time); see :mod:`shardplan.executor.clock`.
        measure_waits: with the wall clock, a barrier before each collective times the waits.

    Raises:
        PlanError: a plan is malformed or tampered with, or plans differ in world size.
    """
    from shardplan.executor.launch import run_local
    from shardplan.executor.runner import Job, JobKind

    if not plans:
        return []
    worlds = {p.topology.world_size * p.replicas for p in plans}
    if len(worlds) != 1:
        raise PlanError(f"plans of different world sizes {sorted(worlds)} cannot share a launch")
    for p in plans:
        build_layout(p)
    jobs = [Job(kind=JobKind.PROFILE, plan_json=plan_to_json(p), steps=steps, warmup=warmup,
                seed=seed, backend=backend, pipelined=pipelined, clock=ClockKind(clock),
                measure_waits=measure_waits) for p in plans]
    res = run_local(jobs, worlds.pop())
    return [_report(r) for r in res]


def profile_plan(plan: Plan, *, steps: int = 10, warmup: int = 3, seed: int = 0,
                 backend: str = "auto", pipelined: bool = True,
                 clock: ClockKind | str = ClockKind.VIRTUAL,
                 measure_waits: bool = False) -> ProfileReport:
    """Median per-rank, per-stage busy and wait times of ``plan`` beside its estimates (one
    row per rank and stage, plus a ``total`` row per rank), and its step time.

    Raises:
        PlanError: the plan is malformed or tampered with (nothing was started).
    """
    prepare(plan)
    return profile_plans([plan], steps=steps, warmup=warmup, seed=seed, backend=backend,
                         pipelined=pipelined, clock=clock, measure_waits=measure_waits)[0]
