"""Executor commands: validate, profile, calibrate (they run plans on local gloo processes).

The executor imports torch; each command imports it when it runs, so the other commands (and
``--help``) start without it.
"""

from __future__ import annotations

import dataclasses
import re
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Iterator, Optional

import typer
from rich import box
from rich.markup import escape
from rich.table import Table

from shardplan.cli.base import (
    MAX_STEPS,
    ProfileOpt,
    app,
    busy,
    check_at_most,
    check_local_ranks,
    check_positive,
    describe_profiles,
    handle_errors,
    print_table,
    reflow_doc,
    say,
)
from shardplan.errors import PlanError, SpecError
from shardplan.estimators.cost_model import default_cost_model
from shardplan.estimators.recorded import cost_model_of
from shardplan.loaders import load_problem, load_topology
from shardplan.plans import assignment_of, build_plan, kernel_backend, load_plan
from shardplan.types import Mode, Plan, Stage

ModeOpt = Annotated[Optional[Mode], typer.Option(
    "--mode", help="The mode the plan must be in (training or inference); an error names both "
                   "if it is not.", case_sensitive=False)]
_TRAINING_STAGES = (Stage.BWD_COMM.value, Stage.BWD_COMPUTE.value, Stage.DP_SYNC.value)
from shardplan.units import MiB


#: Most random plans ``calibrate --plans`` runs (each is a run of the executor).
MAX_CALIBRATION_PLANS = 1_000


def _table(title: str) -> Table:
    return Table(title=escape(title), header_style="bold", box=box.SIMPLE_HEAD, show_edge=False,
                 collapse_padding=True, pad_edge=False)


@app.command()
@handle_errors
@reflow_doc
def validate(
    plan: Annotated[Path, typer.Argument(help="Plan JSON written by `shardplan solve`.")],
    world_size: Annotated[Optional[int], typer.Option(
        help="Processes to run; must equal the plan's ranks unless --resolve.")] = None,
    steps: Annotated[int, typer.Option(help="Training steps compared.")] = 2,
    resolve: Annotated[bool, typer.Option(
        help="If --world-size differs from the plan, re-solve the plan's workload for that many "
             "ranks on one host (said clearly; the original placement is NOT what runs).")] = False,
    backend: Annotated[str, typer.Option(help="Lookup kernels: auto, fbgemm or torch.")] = "auto",
    seed: Annotated[int, typer.Option(help="Seeds tables, batches and gradients.")] = 0,
    pipeline: Annotated[bool, typer.Option(
        help="Run each next batch's input dist during the current step, as TorchRec's "
             "TrainPipelineSparseDist does (default), or every stage in turn.")] = True,
    mode: ModeOpt = None,
) -> None:
    """Run PLAN on local gloo processes and compare with the unsharded model: for a training
    plan, pooled outputs, gradients and updated weights; for an inference plan, pooled outputs
    against the unsharded quantised model (tolerance per dtype). Exit 1 on a mismatch, naming
    table, shard and rank.

    Examples:

      shardplan solve cpu-4 --out plan.json && shardplan validate plan.json

      shardplan solve cpu-4 --mode inference --dtype int8 --out q.json && shardplan validate q.json

      shardplan validate big-plan.json --world-size 4 --resolve
    """
    from shardplan.executor import resolve_for_world, validate_plan  # torch

    check_at_most(check_positive(steps, "--steps"), "--steps", MAX_STEPS,
                  "the comparison needs a few steps")
    p = load_plan(plan)
    if world_size is not None and world_size != p.topology.world_size:
        check_local_ranks(check_positive(world_size, "--world-size"))
        if not resolve:
            raise SpecError(f"the plan is for {p.topology.world_size} ranks, not {world_size}; "
                            "the executor never remaps shards silently: pass --resolve to "
                            "re-solve the workload for that many ranks, or run it under torchrun "
                            "with the plan's world size", key_path="--world-size")
        say(f"[bold yellow]note:[/] re-solving {escape(p.workload.name)} for {world_size} ranks "
            f"on one host; validating that plan, not the one in {escape(str(plan))}")
        p = resolve_for_world(p, world_size)
    check_local_ranks(p.topology.world_size)
    backend = kernel_backend(p, backend)
    with busy(f"validating on {p.topology.world_size} gloo processes, {steps} steps"), \
            _naming(plan):
        rep = validate_plan(p, steps=steps, seed=seed, backend=backend, pipelined=pipeline,
                            mode=mode)
    if rep.mode is Mode.INFERENCE:
        _say_inference_validation(plan, p, rep, steps)
        return
    t = _table(f"validate {plan.name}: {p.topology.world_size} ranks, {steps} steps, kernels "
               f"{rep.backend}")
    for col in ("rank", "shards", "DP", "err out", "err grad", "err w", "err st", "MiB",
                "MiB est", "bad"):
        t.add_column(col, justify="right", no_wrap=True)
    for r in rep.ranks:
        e = r["max_abs_error"]
        t.add_row(str(r["rank"]), str(r["num_slots"]), str(r["num_dp_tables"]),
                  *(f"{e[k]:.1e}" for k in ("output", "gradient", "weight", "state")),
                  f"{r['measured_bytes'] / MiB:.2f}", f"{r['estimated_bytes'] / MiB:.2f}",
                  str(len(r["mismatches"])), style="red" if r["mismatches"] else None)
    print_table(t)
    say("err: the largest |sharded - reference| of pooled outputs, gradients, updated weights "
        f"and optimizer state; tolerance {rep.atol:g} + {rep.rtol:g} x |reference|. MiB: "
        "measured memory (local weights + optimizer state + the step's peak buffers) and the "
        "estimate; bad: mismatches.")
    if not rep.estimates_checked:
        say("note: the plan was made by a cost model shardplan cannot rebuild; its estimates "
            "were not re-derived (structural and capacity checks ran)")
    rep.raise_on_mismatch()
    say("[bold green]ok:[/] the sharded run equals the unsharded reference")


@contextmanager
def _naming(path: Path) -> Iterator[None]:
    """Plan errors raised while checking PLAN before it runs name the plan file."""
    try:
        yield
    except PlanError as exc:
        if exc.source or type(exc) is not PlanError:
            raise
        raise PlanError(exc.message, source=str(path), key_path=exc.key_path) from None


def _say_inference_validation(path: Path, p: Plan, rep, steps: int) -> None:
    t = _table(f"validate {path.name} (inference): {p.topology.world_size} ranks, {steps} "
               f"steps, kernels {rep.backend}")
    for col in ("rank", "shards", "DP", "err out", "MiB weights", "MiB", "MiB est", "bad"):
        t.add_column(col, justify="right", no_wrap=True)
    for r in rep.ranks:
        t.add_row(str(r["rank"]), str(r["num_slots"]), str(r["num_dp_tables"]),
                  f"{r['max_abs_error']['output']:.1e}", f"{r['weight_bytes'] / MiB:.3f}",
                  f"{r['measured_bytes'] / MiB:.2f}", f"{r['estimated_bytes'] / MiB:.2f}",
                  str(len(r["mismatches"])), style="red" if r["mismatches"] else None)
    print_table(t)
    tol = "; ".join(f"{d} {a:g} + {rt:g} x |reference|" for d, (rt, a) in rep.tolerances.items())
    say("err out: the largest |sharded - reference| of pooled outputs, the reference being the "
        f"unsharded quantised model; tolerance {tol}. MiB weights: the local tables' values "
        "and row-wise scales/biases; MiB: what the kernels allocated plus the step's peak "
        "buffers, beside the estimate; bad: mismatches.")
    if not rep.estimates_checked:
        say("note: the plan was made by a cost model shardplan cannot rebuild; its estimates "
            "were not re-derived (structural and capacity checks ran)")
    rep.raise_on_mismatch()
    say("[bold green]ok:[/] the sharded run equals the unsharded quantised reference")


@app.command()
@handle_errors
@reflow_doc
def profile(
    plan: Annotated[Path, typer.Argument(help="Plan JSON written by `shardplan solve`.")],
    steps: Annotated[int, typer.Option(help="Timed steps (medians are reported).")] = 10,
    warmup: Annotated[int, typer.Option(help="Untimed steps first.")] = 3,
    out: Annotated[Optional[Path], typer.Option(
        "--out", "-o", help="CSV file (default: PLAN with .profile.csv).")] = None,
    backend: Annotated[str, typer.Option(help="Lookup kernels: auto, fbgemm or torch.")] = "auto",
    pipeline: Annotated[bool, typer.Option(
        help="TorchRec's pipelined loop (next batch's input dist during the step) or serial.")
    ] = True,
    clock: Annotated[str, typer.Option(
        help="virtual: one emulated device per rank (compute one rank at a time, collectives "
             "start when their last participant arrives; for machines with fewer cores than "
             "ranks); wall: real time.")] = "virtual",
    cost_profile: ProfileOpt = None,
    mode: ModeOpt = None,
) -> None:
    """Median per-rank forward/backward compute and communication times of PLAN beside its
    estimate, with the error per rank and stage; written as CSV.

    The estimates are the plan's own (its cost model and profile), or, with --profile, the
    plan re-costed under that calibration profile; either way it says which profile was used
    and where its numbers were measured.

    Examples:

      shardplan profile plan.json --steps 20 --out plan.profile.csv

      shardplan profile plan.json --profile my-profile.yaml
    """
    from shardplan.executor import profile_plan  # torch

    check_at_most(check_positive(steps, "--steps"), "--steps", MAX_STEPS,
                  "medians settle within a few dozen steps")
    if warmup < 0:
        raise SpecError(f"--warmup must be >= 0, got {warmup}", key_path="--warmup")
    check_at_most(warmup, "--warmup", MAX_STEPS, "a few warm-up steps are enough")
    if clock not in ("virtual", "wall"):
        raise SpecError(f"unknown clock {clock!r}; choose virtual or wall", key_path="--clock")
    p = load_plan(plan)
    if cost_profile is not None:
        cm = default_cost_model(p.workload, p.topology, cost_profile)
        p = build_plan(workload=p.workload, topology=p.topology, cost_model=cm,
                       assignment=assignment_of(p), solver=p.summary.solver,
                       solver_options=p.provenance.solver_options,
                       lower_bound_ms=None, solve_time_s=p.summary.solve_time_s,
                       status=p.summary.status)
    check_local_ranks(p.topology.world_size)
    _say_profiles(p)
    backend = kernel_backend(p, backend)
    with busy(f"profiling on {p.topology.world_size} gloo processes, {warmup}+{steps} steps"):
        with _naming(plan):
            rep = profile_plan(p, steps=steps, warmup=warmup, backend=backend,
                               pipelined=pipeline, clock=clock, mode=mode)
    t = _table(f"profile {plan.name}{' (inference)' if p.workload.mode is Mode.INFERENCE else ''}"
               f": medians of {steps} steps, kernels {rep.backend}")
    for col in ("rank", "stage", "estimated", "busy", "waited", "error"):
        t.add_column(col, justify="right", no_wrap=True)
    infer = p.workload.mode is Mode.INFERENCE
    for r in rep.rows:
        if infer and r.stage in _TRAINING_STAGES:
            continue  # inference steps have no backward and no gradient sync
        e = r.rel_error
        t.add_row(str(r.rank), r.stage, f"{r.estimated_ms:.3f}", f"{r.measured_ms:.3f}",
                  f"{r.waited_ms:.3f}", "-" if e is None else f"{e:+.0%}",
                  style="bold" if r.stage == "total" else None)
    print_table(t)
    path = rep.write_csv(out or plan.with_suffix(".profile.csv"))
    loop = "pipelined" if rep.pipelined else "serial"
    say("ms; error = (estimate - measured) / measured")
    say(f"step ({loop}, {rep.clock} clock): estimated {rep.estimated_makespan_ms:.3f} ms, "
        f"measured {rep.measured_makespan_ms:.3f} ms; median |error| of the ranks' busy time "
        f"{rep.median_abs_rel_error():.0%}; wrote {escape(str(path))}")


def _say_profiles(p: Plan) -> None:
    """Which profile the estimates use, where it was measured, and a hint when that was on
    another topology than the plan's (a common reason for large errors)."""
    cm = cost_model_of(p, default_if_unknown=True)
    say(f"estimates from cost model {escape(cm.name)}: {escape(describe_profiles(cm))}")
    for prof in cm.profiles:
        m = re.search(r"--topology\s+(\S+)", prof.provenance.command)
        if m and m.group(1) != p.topology.name:
            say(f"[bold yellow]note:[/] profile {escape(prof.name)} was measured on topology "
                f"{escape(m.group(1))}, this plan runs on {escape(p.topology.name)} "
                f"({p.topology.world_size} ranks): communication coefficients fitted at one "
                "world size may not carry over; `shardplan calibrate --topology "
                f"{escape(p.topology.name)}` fits them here")


@app.command()
@handle_errors
@reflow_doc
def calibrate(
    out: Annotated[Path, typer.Option("--out", "-o", help="Profile YAML to write.")],
    topology: Annotated[str, typer.Option(
        help="Topology whose nominal bandwidths the efficiencies refer to (file or bundled name).")
    ] = "cpu-4",
    grid: Annotated[str, typer.Option(help="Benchmark grid: cpu (about a minute) or tiny.")] = "cpu",
    backend: Annotated[str, typer.Option(help="Lookup kernels: auto, fbgemm or torch.")] = "auto",
    name: Annotated[Optional[str], typer.Option(help="Profile name (default: file stem).")] = None,
    plans: Annotated[int, typer.Option(
        help="Also run this many random plans on the executor (serial and pipelined) and fit "
             "every coefficient to kernels and plans together (0: kernel microbenchmarks "
             "only; the collectives keep their defaults).")] = 0,
    tables: Annotated[Optional[Path], typer.Option(
        "--tables", "-t", help="Workload for --plans (default: the topology's).")] = None,
    plan_seed: Annotated[int, typer.Option(help="Seed of the --plans plans.")] = 1000,
    mode: Annotated[Mode, typer.Option(
        "--mode", help="training: the training kernels (and with --plans the collectives); "
                       "inference: FBGEMM's forward-only inference kernels in fp32/fp16/int8/"
                       "int4, written as the `inference` section of the base profile.",
        case_sensitive=False)] = Mode.TRAINING,
    base_profile: Annotated[Optional[Path], typer.Option(
        "--base", help="--mode inference: the profile whose other coefficients are kept "
                       "(default: the bundled profile of the topology's device model).")] = None,
) -> None:
    """Microbenchmark the lookup kernels (and run random plans on the executor), fit the cost
    model's coefficients through its own terms, and write a profile that `solve`, `compare`,
    `sweep`, `explain` and `profile` take with --profile PATH (in Python:
    default_cost_model(workload, topology, profile=PATH)).

    Examples:

      shardplan calibrate --out my-cpu.yaml --topology cpu-4

      shardplan calibrate --out estimators/profiles/cpu-gloo.yaml --topology cpu-2x2 --plans 16

      shardplan calibrate --mode inference --out estimators/profiles/cpu-gloo.yaml --topology cpu-2x2
    """
    if mode is Mode.INFERENCE:
        _calibrate_inference(out, topology, grid, backend, plans, tables, base_profile)
        return
    if base_profile is not None:
        raise SpecError("--base is an inference-mode option (the profile the inference section "
                        "is added to); this calibration is in training mode: drop it or pass "
                        "--mode inference", key_path="--base")
    from shardplan.executor.calibrate import CPU_GRID, TINY_GRID  # torch
    from shardplan.executor.calibrate import calibrate as run_calibration

    grids = {"cpu": CPU_GRID, "tiny": TINY_GRID}
    if grid not in grids:
        raise SpecError(f"unknown grid {grid!r}; choose one of {', '.join(grids)}", key_path="--grid")
    if plans < 0:
        raise SpecError(f"--plans must be >= 0, got {plans}", key_path="--plans")
    check_at_most(plans, "--plans", MAX_CALIBRATION_PLANS, "a few dozen random plans fit the "
                  "coefficients")
    work = None
    if plans:
        topo, work = load_problem(topology, tables)
    else:
        topo = load_topology(topology)
    check_local_ranks(topo.world_size, "--topology", "calibrate on a topology of that many "
                      "ranks or fewer (cpu-2, cpu-4, cpu-2x2)")
    g = dataclasses.replace(grids[grid], world_size=max(topo.world_size, 1))
    cmd = f"shardplan calibrate --out {out} --topology {topology} --grid {grid}"
    if plans:
        cmd += f" --plans {plans} --plan-seed {plan_seed}" + (f" --tables {tables}" if tables else "")
    with busy(f"calibrating on {g.world_size} gloo processes (grid {grid})"):
        rep = run_calibration(out, topo, grid=g, name=name, backend=backend, command=cmd,
                              plans=plans, workload=work, plan_seed=plan_seed)
    t = _table(f"calibration ({rep['backend']} kernels) for {topo.host_groups[0].device.model}")
    t.add_column("coefficient")
    t.add_column("value", justify="right")
    for k, v in rep["coefficients"].items():
        t.add_row(escape(k), escape(str(v)))
    print_table(t)
    say(f"fit: median error {rep['median_rel_error']:.1%} over {rep['points']} values "
        f"({rep['lookup_points']} kernel points, {rep['plans']} plans)")
    for n in rep["notes"]:
        say(f"note: {escape(str(n))}")
    say(f"wrote {escape(str(rep['path']))}")


def _calibrate_inference(out: Path, topology: str, grid: str, backend: str, plans: int,
                         tables: Optional[Path], base_profile: Optional[Path]) -> None:
    from shardplan.estimators.profiles import load_profile, profile_for_device
    from shardplan.executor.calibrate_inference import (  # torch
        INFERENCE_GRID,
        TINY_INFERENCE_GRID,
        calibrate_inference,
    )

    if plans or tables is not None:
        raise SpecError("--plans/--tables are training-mode options (whole plans fit the "
                        "collectives, which inference shares with training); this calibration "
                        "is in inference mode: drop them", key_path="--plans")
    grids = {"cpu": INFERENCE_GRID, "tiny": TINY_INFERENCE_GRID}
    if grid not in grids:
        raise SpecError(f"unknown grid {grid!r}; choose one of {', '.join(grids)}", key_path="--grid")
    topo = load_topology(topology)
    model = topo.host_groups[0].device.model
    base = load_profile(base_profile) if base_profile is not None else profile_for_device(model)
    cmd = f"shardplan calibrate --mode inference --out {out} --topology {topology} --grid {grid}"
    with busy(f"calibrating the inference kernels (grid {grid})"):
        rep = calibrate_inference(out, topo, base, grid=grids[grid], backend=backend,
                                  command=cmd)
    t = _table(f"inference calibration ({rep['backend']} kernels) for {model}, base "
               f"{base.name}")
    t.add_column("coefficients.inference")
    t.add_column("value", justify="right")
    for k, v in rep["inference"].items():
        t.add_row(escape(k), escape(str(v)))
    print_table(t)
    say(f"fit: median error {rep['median_rel_error']:.1%} over {rep['points']} forward points")
    say(f"wrote {escape(str(rep['path']))}")
