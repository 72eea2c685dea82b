"""Executor commands: validate, profile, calibrate."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from shardplan.cli.app import app, console, handle_errors
from shardplan.errors import SpecError

MiB = 2**20


@app.command()
@handle_errors
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
) -> None:
    """Run PLAN on local gloo processes and compare pooled outputs, gradients and updated
    weights with the unsharded model. Exit 1 on a mismatch, naming table, shard and rank.

    Examples:

      shardplan solve cpu-4 --out plan.json && shardplan validate plan.json

      shardplan validate big-plan.json --world-size 4 --resolve
    """
    from shardplan.executor import resolve_for_world, validate_plan
    from shardplan.plans import load_plan

    _positive(steps, "--steps")
    p = load_plan(plan)
    if world_size is not None and world_size != p.topology.world_size:
        _positive(world_size, "--world-size")
        if not resolve:
            raise SpecError(f"the plan is for {p.topology.world_size} ranks, not {world_size}; "
                            "the executor never remaps shards silently: pass --resolve to "
                            "re-solve the workload for that many ranks, or run it under torchrun "
                            "with the plan's world size", key_path="--world-size")
        console.print(f"[bold yellow]note:[/] re-solving {p.workload.name} for {world_size} ranks "
                      f"on one host; validating that plan, not the one in {plan}")
        p = resolve_for_world(p, world_size)
    rep = validate_plan(p, steps=steps, seed=seed, backend=backend)
    t = Table(title=f"validate {plan.name}: {p.topology.world_size} ranks, {steps} steps, "
                    f"kernels {rep.backend}")
    for col in ("rank", "shards", "DP tables", "max |err| out/grad/weight/state",
                "MiB measured", "MiB estimated", "mismatches"):
        t.add_column(col, justify="right")
    for r in rep.ranks:
        e = r["max_abs_error"]
        t.add_row(str(r["rank"]), str(r["num_slots"]), str(r["num_dp_tables"]),
                  "/".join(f"{e[k]:.1e}" for k in ("output", "gradient", "weight", "state")),
                  f"{r['measured_bytes'] / MiB:.2f}", f"{r['estimated_bytes'] / MiB:.2f}",
                  str(len(r["mismatches"])), style="red" if r["mismatches"] else None)
    console.print(t)
    console.print(f"tolerance: |sharded - reference| <= {rep.atol:g} + {rep.rtol:g} x |reference|. "
                  "Measured memory = local weights + optimizer state + the step's peak buffers.")
    if not rep.estimates_checked:
        console.print("note: the plan was made by a differently configured cost model; its "
                      "memory figures were not re-derived (structural checks ran)")
    rep.raise_on_mismatch()
    console.print("[bold green]ok:[/] the sharded run equals the unsharded reference")


@app.command()
@handle_errors
def profile(
    plan: Annotated[Path, typer.Argument(help="Plan JSON written by `shardplan solve`.")],
    steps: Annotated[int, typer.Option(help="Timed steps (medians are reported).")] = 10,
    warmup: Annotated[int, typer.Option(help="Untimed steps first.")] = 3,
    out: Annotated[Optional[Path], typer.Option(
        "--out", "-o", help="CSV file (default: PLAN with .profile.csv).")] = None,
    backend: Annotated[str, typer.Option(help="Lookup kernels: auto, fbgemm or torch.")] = "auto",
    exclusive_compute: Annotated[bool, typer.Option(
        help="Time compute stages one rank at a time (for ranks sharing CPU cores).")] = True,
) -> None:
    """Median per-rank forward/backward compute and communication times of PLAN beside its
    estimate, with the error per rank and stage; written as CSV.

    Example:

      shardplan profile plan.json --steps 20 --out plan.profile.csv
    """
    from shardplan.executor import profile_plan
    from shardplan.plans import load_plan

    _positive(steps, "--steps")
    if warmup < 0:
        raise SpecError(f"--warmup must be >= 0, got {warmup}", key_path="--warmup")
    p = load_plan(plan)
    rep = profile_plan(p, steps=steps, warmup=warmup, backend=backend,
                       exclusive_compute=exclusive_compute)
    t = Table(title=f"profile {plan.name}: medians of {steps} steps, kernels {rep.backend} "
                    "(ms; error = (estimate - measured) / measured)")
    for col in ("rank", "stage", "estimated", "measured", "error"):
        t.add_column(col, justify="right")
    for r in rep.rows:
        e = r.rel_error
        t.add_row(str(r.rank), r.stage, f"{r.estimated_ms:.3f}", f"{r.measured_ms:.3f}",
                  "-" if e is None else f"{e:+.0%}", style="bold" if r.stage == "total" else None)
    console.print(t)
    path = rep.write_csv(out or plan.with_suffix(".profile.csv"))
    console.print(f"makespan: estimated {rep.estimated_makespan_ms:.3f} ms, measured "
                  f"{rep.measured_makespan_ms:.3f} ms; median |error| per rank "
                  f"{rep.median_abs_rel_error():.0%}; wrote {path}")


@app.command()
@handle_errors
def calibrate(
    out: Annotated[Path, typer.Option("--out", "-o", help="Profile YAML to write.")],
    topology: Annotated[str, typer.Option(
        help="Topology whose nominal bandwidths the efficiencies refer to (file or bundled name).")
    ] = "cpu-4",
    grid: Annotated[str, typer.Option(help="Benchmark grid: cpu (about a minute) or tiny.")] = "cpu",
    collectives: Annotated[bool, typer.Option(help="Also benchmark the collectives.")] = True,
    backend: Annotated[str, typer.Option(help="Lookup kernels: auto, fbgemm or torch.")] = "auto",
    name: Annotated[Optional[str], typer.Option(help="Profile name (default: file stem).")] = None,
    plans: Annotated[int, typer.Option(
        help="Also run this many random plans on the executor and refit the coefficients to "
             "their stage times (0: microbenchmarks only).")] = 0,
    tables: Annotated[Optional[Path], typer.Option(
        "--tables", "-t", help="Workload for --plans (default: the topology's).")] = None,
    plan_seed: Annotated[int, typer.Option(help="Seed of the --plans plans.")] = 1000,
    objective: Annotated[str, typer.Option(
        help="What the --plans fit matches: both (stages and step times), stages or totals.")
    ] = "both",
) -> None:
    """Microbenchmark lookup kernels and collectives, fit the cost model's coefficients, and
    write a profile the estimators load (``default_cost_model(..., profile=PATH)``).

    Examples:

      shardplan calibrate --out my-cpu.yaml --topology cpu-4

      shardplan calibrate --out estimators/profiles/cpu-gloo.yaml --topology cpu-4 --plans 16
    """
    from shardplan.executor.calibrate import CPU_GRID, TINY_GRID
    from shardplan.executor.calibrate import calibrate as run_calibration
    from shardplan.loaders import load_topology

    grids = {"cpu": CPU_GRID, "tiny": TINY_GRID}
    if grid not in grids:
        raise SpecError(f"unknown grid {grid!r}; choose one of {', '.join(grids)}", key_path="--grid")
    if objective not in ("both", "stages", "totals"):
        raise SpecError(f"unknown objective {objective!r}; choose both, stages or totals",
                        key_path="--objective")
    if plans < 0:
        raise SpecError(f"--plans must be >= 0, got {plans}", key_path="--plans")
    work = None
    if plans:
        from shardplan.loaders import load_problem

        topo, work = load_problem(topology, tables)
    else:
        topo = load_topology(topology)
    g = grids[grid]
    if topo.world_size < g.world_size and collectives:
        import dataclasses

        g = dataclasses.replace(g, world_size=max(topo.world_size, 2))
    cmd = f"shardplan calibrate --out {out} --topology {topology} --grid {grid}"
    if plans:
        cmd += (f" --plans {plans} --plan-seed {plan_seed} --objective {objective}"
                + (f" --tables {tables}" if tables else ""))
    rep = run_calibration(out, topo, grid=g, name=name, backend=backend, collectives=collectives,
                          command=cmd, plans=plans, workload=work, plan_seed=plan_seed,
                          objective=objective)
    t = Table(title=f"calibration ({rep['backend']} kernels) for {topo.host_groups[0].device.model}")
    t.add_column("coefficient")
    t.add_column("value", justify="right")
    for k, v in rep["coefficients"].items():
        t.add_row(k, str(v))
    console.print(t)
    line = f"lookup fit: median error {rep['lookup_median_rel_error']:.1%} over {rep['lookup_points']} points"
    if "collective_points" in rep:
        line += (f"; collectives: {rep['collective_median_rel_error']:.1%} over "
                 f"{rep['collective_points']} points")
    console.print(line)
    if "plan_points" in rep:
        console.print(f"plan fit: median per-rank error {rep['plan_median_rel_error']:.1%} over "
                      f"{rep['plan_points']} plans")
    for n in rep["notes"]:
        console.print(f"note: {n}")
    console.print(f"wrote {rep['path']}")


def _positive(v: int, flag: str) -> None:
    if v < 1:
        raise SpecError(f"{flag} must be >= 1, got {v}", key_path=flag)
