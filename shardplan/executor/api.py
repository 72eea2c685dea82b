"""The executor's front door: validate a plan against the unsharded reference, profile its
stages against the estimate. Both check the plan (and reject a tampered one) before any
process starts.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from shardplan.errors import PlanError, ValidationMismatch
from shardplan.executor.clock import ClockKind
from shardplan.executor.layout import build_layout, check_estimates_match
from shardplan.plans import plan_to_json
from shardplan.types import DType, Mode, Plan, Stage, Topology

__all__ = ["ValidationMismatch", "ValidationReport", "ProfileRow", "ProfileReport",
           "prepare", "validate_plan", "profile_plan", "profile_plans", "resolve_for_world",
           "check_mode_options"]

#: Executor options that only training steps have (DDP buckets of data-parallel gradients).
TRAINING_ONLY_OPTIONS = ("bucket_bytes",)


def check_mode_options(plan: Plan, *, bucket_bytes: int | None = None,
                       mode: Mode | None = None) -> None:
    """Refuse options of the other mode, naming the plan's mode and the fix.

    Args:
        plan: the plan to run.
        bucket_bytes: a DDP bucket size (training only).
        mode: the mode the caller expects the plan to be in (``--mode``), if any.

    Raises:
        PlanError: ``mode`` differs from the plan's; an inference plan given a training-only
            option (``bucket_bytes``, a table's own optimizer); a training plan with int8/int4
            tables (the executor trains fp32 weights; quantised tables are served by
            inference plans).
    """
    work = plan.workload
    if mode is not None and mode is not work.mode:
        raise PlanError(f"the plan is in {work.mode.value} mode, not {mode.value}: re-solve it "
                        f"with --mode {mode.value}, or drop --mode", key_path="workload.mode")
    if work.mode is Mode.INFERENCE:
        if bucket_bytes is not None:
            raise PlanError("bucket_bytes (the DDP buckets of data-parallel gradients) is a "
                            "training-only option; this plan is in inference mode (no "
                            "gradients): drop it", key_path="bucket_bytes")
        for t in work.tables:
            if t.optimizer is not None:
                raise PlanError(f"table {t.name!r} names optimizer {t.optimizer.value}, a "
                                "training-only option; this plan is in inference mode: remove "
                                "the table's optimizer or solve with --mode training",
                                key_path=f"tables[{t.name}].optimizer")
        return
    for t in work.tables:
        if t.dtype in (DType.INT8, DType.INT4):
            raise PlanError(f"table {t.name!r} is {t.dtype.value}, which the executor runs in "
                            "inference mode only (it trains fp32 weights); this plan is in "
                            "training mode: solve with --mode inference, or use fp32/fp16",
                            key_path=f"tables[{t.name}].dtype")


def prepare(plan: Plan, world_size: int | None = None, *, mode: Mode | None = None,
            bucket_bytes: int | None = None) -> bool:
    """Reject a bad or tampered plan before anything runs.

    Returns:
        Whether the per-rank memory estimates could be re-derived and matched (False: the plan
        was made by a cost model configured differently from today's default, so that check
        was skipped; the structural checks always run).

    Raises:
        PlanError: naming the table/shard/rank at fault and the fix.
    """
    check_mode_options(plan, mode=mode, bucket_bytes=bucket_bytes)
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
        rtol / atol: the tolerance of every comparison (training plans).
        steps: steps compared.
        estimates_checked: whether the plan's recorded memory was re-derived and matched.
        mode: the plan's mode: training (outputs, gradients, weights and optimizer state
            compared) or inference (pooled outputs against the unsharded quantised model).
        tolerances: inference: (rtol, atol) per dtype of the plan's tables
            (``runner.INFERENCE_TOLERANCE``).
    """

    ranks: tuple[dict[str, Any], ...]
    rtol: float
    atol: float
    steps: int
    estimates_checked: bool
    mode: Mode = Mode.TRAINING
    tolerances: Mapping[str, tuple[float, float]] = field(default_factory=dict)

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
        rtol, atol = self.tolerances.get(m.get("dtype", ""), (self.rtol, self.atol))
        ref = "unsharded quantised" if self.mode is Mode.INFERENCE else "unsharded"
        raise ValidationMismatch(
            f"{m['what']} of table {m['table']!r}, shard {m['shard']}, differs from the {ref} "
            f"reference on rank {m['rank']} {step} (max abs error {m['max_abs_error']:.3g}; "
            f"tolerance atol {atol:g} + rtol {rtol:g}); {len(ms)} mismatch(es) in all")


def validate_plan(plan: Plan, *, world_size: int | None = None, steps: int = 2, seed: int = 0,
                  backend: str = "auto", pipelined: bool = True,
                  corrupt: tuple[str, int] | None = None, mode: Mode | None = None,
                  bucket_bytes: int | None = None) -> ValidationReport:
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
        mode: the mode the plan must be in (a clear error otherwise), or None for any.
        bucket_bytes: DDP bucket size of data-parallel gradients (training plans only).

    Returns:
        The report (``passed``, per-rank details).

    Raises:
        PlanError: the plan is malformed or tampered with (nothing was started).
        ExecutionError: a rank crashed.
    """
    from shardplan.executor.launch import run_local
    from shardplan.executor.runner import ATOL, RTOL, Job, JobKind, inference_tolerance

    checked = prepare(plan, world_size, mode=mode, bucket_bytes=bucket_bytes)
    job = Job(kind=JobKind.VALIDATE, plan_json=plan_to_json(plan), steps=steps, seed=seed,
              backend=backend, pipelined=pipelined, clock=ClockKind.WALL, corrupt=corrupt,
              **({} if bucket_bytes is None else {"bucket_bytes": bucket_bytes}))
    res = run_local([job], plan.topology.world_size * plan.replicas)[0]
    mode = plan.workload.mode
    tol = ({t.dtype.value: inference_tolerance(t.dtype) for t in plan.workload.tables}
           if mode is Mode.INFERENCE else {})
    return ValidationReport(ranks=tuple(res), rtol=RTOL, atol=ATOL, steps=steps,
                            estimates_checked=checked, mode=mode,
                            tolerances=dict(sorted(tol.items())))


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
                  clock: ClockKind | str = ClockKind.VIRTUAL, measure_waits: bool = False,
                  mode: Mode | None = None, bucket_bytes: int | None = None
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
        mode: the mode every plan must be in, or None for any.
        bucket_bytes: DDP bucket size of data-parallel gradients (training plans only).

    Raises:
        PlanError: a plan is malformed or tampered with, plans differ in world size, or an
            option belongs to the other mode (:func:`check_mode_options`).
    """
    from shardplan.executor.launch import run_local
    from shardplan.executor.runner import Job, JobKind

    if not plans:
        return []
    worlds = {p.topology.world_size * p.replicas for p in plans}
    if len(worlds) != 1:
        raise PlanError(f"plans of different world sizes {sorted(worlds)} cannot share a launch")
    for p in plans:
        check_mode_options(p, mode=mode, bucket_bytes=bucket_bytes)
        build_layout(p)
    extra = {} if bucket_bytes is None else {"bucket_bytes": bucket_bytes}
    jobs = [Job(kind=JobKind.PROFILE, plan_json=plan_to_json(p), steps=steps, warmup=warmup,
                seed=seed, backend=backend, pipelined=pipelined, clock=ClockKind(clock),
                measure_waits=measure_waits, **extra) for p in plans]
    res = run_local(jobs, worlds.pop())
    return [_report(r) for r in res]


def profile_plan(plan: Plan, *, steps: int = 10, warmup: int = 3, seed: int = 0,
                 backend: str = "auto", pipelined: bool = True,
                 clock: ClockKind | str = ClockKind.VIRTUAL,
                 measure_waits: bool = False, mode: Mode | None = None,
                 bucket_bytes: int | None = None) -> ProfileReport:
    """Median per-rank, per-stage busy and wait times of ``plan`` beside its estimates (one
    row per rank and stage, plus a ``total`` row per rank), and its step time.

    Raises:
        PlanError: the plan is malformed or tampered with (nothing was started).
    """
    prepare(plan, mode=mode, bucket_bytes=bucket_bytes)
    return profile_plans([plan], steps=steps, warmup=warmup, seed=seed, backend=backend,
                         pipelined=pipelined, clock=clock, measure_waits=measure_waits,
                         mode=mode, bucket_bytes=bucket_bytes)[0]
