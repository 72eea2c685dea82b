"""Calibration: measurements on this machine, fitted to the cost model's coefficients through
the model's own terms (:mod:`shardplan.estimators.fitting`), written as a profile
(``estimators/profiles/*.yaml``, format in ``docs/cost-model.md``).

Two kinds of measurement, both turned into :class:`~shardplan.estimators.fitting.PlanMeasurement`
and fitted together:

* lookup-kernel microbenchmarks (:func:`bench_lookups`): each point is a one-rank plan of
  ``tables`` identical table-wise tables, its forward and backward (+ fused row-wise Adagrad)
  times the compute lanes;
* whole plans on the executor (:func:`measure_plans`: random plans, ``profile`` with the
  virtual clock, serial and pipelined): their compute stages per rank and their communication
  stages identify the collectives' efficiencies and latencies on the executor's real paths
  (the fused reduce-scatter, the DDP buckets, the per-group all-to-alls).

Efficiencies are clipped to (0, 1] (the profile's range) and overheads to >= 0; the profile's
notes record the fit's median relative error and what sat at a bound.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import os
import platform
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import yaml

from shardplan.errors import SpecError
from shardplan.estimators.fitting import (
    PlanMeasurement,
    coefficients_of,
    fit_overlap,
    fit_plans,
)
from shardplan.types import (
    HBM as _HBM,
    Assignment,
    DType,
    Mode,
    Optimizer,
    ShardingOption,
    ShardingType,
    ShardSpec,
    Stage,
    TableSpec,
    Topology,
    Workload,
)

__all__ = ["CalibrationGrid", "TINY_GRID", "CPU_GRID", "LookupPoint", "bench_lookups",
           "lookup_measurements", "measure_plans", "random_assignments", "write_profile",
           "calibrate"]


@dataclass(frozen=True, kw_only=True, slots=True)
class CalibrationGrid:
    """The benchmark grid.

    Attributes:
        rows / dims / pooling_factors / batches / dtypes / tables: lookup kernel points (full
            product); ``tables`` identical tables go in one batched kernel.
        reps: timed repetitions per point (median kept), after ``warmup`` untimed ones.
        world_size: the executor's ranks the kernels share the machine's cores with (each
            benchmark runs with that rank's share of the torch threads).
    """

    rows: tuple[int, ...] = (1_000, 100_000)
    dims: tuple[int, ...] = (16, 64)
    pooling_factors: tuple[float, ...] = (1.0, 8.0)
    batches: tuple[int, ...] = (256, 2048)
    dtypes: tuple[DType, ...] = (DType.FP32, DType.FP16)
    tables: tuple[int, ...] = (1, 4)
    reps: int = 15
    warmup: int = 3
    world_size: int = 4


CPU_GRID = CalibrationGrid()
TINY_GRID = CalibrationGrid(rows=(200,), dims=(8,), pooling_factors=(2.0,), batches=(32, 128),
                            dtypes=(DType.FP32,), tables=(1, 2), reps=3, warmup=1, world_size=2)


@dataclass(frozen=True, kw_only=True, slots=True)
class LookupPoint:
    rows: int
    dim: int
    pooling_factor: float
    batch: int
    dtype: DType
    tables: int
    fwd_ms: float
    bwd_ms: float


# --------------------------------------------------------------------------------------------
# lookup kernels
# --------------------------------------------------------------------------------------------


def _lookup(backend: Any, rows: int, dim: int, tables: int, dtype: DType, device: Any) -> Any:
    """A batched kernel of ``tables`` tables with weights stored as ``dtype`` (row-wise
    Adagrad fused into backward)."""
    import torch

    from shardplan.executor.kernels import Backend, OptimizerConfig, make_lookup

    cfg = OptimizerConfig(optimizer=Optimizer.ROWWISE_ADAGRAD)
    if backend is Backend.FBGEMM and dtype is not DType.FP32:
        from fbgemm_gpu.split_embedding_configs import EmbOptimType, SparseType
        from fbgemm_gpu.split_table_batched_embeddings_ops_common import EmbeddingLocation
        from fbgemm_gpu.split_table_batched_embeddings_ops_training import (
            ComputeDevice,
            SplitTableBatchedEmbeddingBagsCodegen,
        )

        gpu = device.type == "cuda"
        tbe = SplitTableBatchedEmbeddingBagsCodegen(
            [(rows, dim, EmbeddingLocation.DEVICE if gpu else EmbeddingLocation.HOST,
              ComputeDevice.CUDA if gpu else ComputeDevice.CPU)] * tables,
            optimizer=EmbOptimType.EXACT_ROWWISE_ADAGRAD, learning_rate=cfg.learning_rate,
            weights_precision={DType.FP16: SparseType.FP16, DType.BF16: SparseType.BF16}[dtype],
            device=device)

        class _Tbe:
            def forward(self, i: Any, o: Any) -> Any:
                self.out = tbe(i, o)
                return self.out

            def backward(self, g: Any) -> None:
                self.out.backward(g)

        return _Tbe()
    lk = make_lookup(backend, [(rows, dim)] * tables, cfg, device)
    if dtype is not DType.FP32 and backend is not Backend.FBGEMM:
        tdt = {DType.FP16: torch.float16, DType.BF16: torch.bfloat16}[dtype]
        lk._w = [w.detach().to(tdt).requires_grad_(True) for w in lk._w]  # noqa: SLF001
    return lk


def bench_lookups(grid: CalibrationGrid, *, backend: str = "auto", device: str = "cpu",
                  seed: int = 0) -> tuple[list[LookupPoint], str]:
    """Time forward and backward(+fused row-wise Adagrad) of batched lookups over ``grid``.

    Returns:
        The points, and the backend used (``fbgemm`` or ``torch``).
    """
    import torch

    from shardplan.executor.kernels import choose_backend

    dev = torch.device(device)
    be = choose_backend(backend, dev)
    gen = torch.Generator().manual_seed(seed)
    out: list[LookupPoint] = []
    threads = torch.get_num_threads()
    if dev.type == "cpu":  # the threads each executor rank gets (ranks share the cores)
        from shardplan.executor.launch import _torch_threads

        torch.set_num_threads(_torch_threads(grid.world_size))
    try:
        _bench_lookup_grid(grid, be, dev, gen, out)
    finally:
        torch.set_num_threads(threads)
    return out, be.value


def _bench_lookup_grid(grid: CalibrationGrid, be: Any, dev: Any, gen: Any,
                       out: list[LookupPoint]) -> None:
    import torch

    def sync() -> None:
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)

    for rows in grid.rows:
        for dim in grid.dims:
            for dtype in grid.dtypes:
                for tables in grid.tables:
                    lk = _lookup(be, rows, dim, tables, dtype, dev)
                    for pf in grid.pooling_factors:
                        for batch in grid.batches:
                            lengths = torch.poisson(torch.full((tables * batch,), pf),
                                                    generator=gen).long()
                            ids = torch.randint(0, rows, (int(lengths.sum()),), generator=gen)
                            offsets = torch.zeros(lengths.numel() + 1, dtype=torch.long)
                            offsets[1:] = torch.cumsum(lengths, 0)
                            ids, offsets = ids.to(dev), offsets.to(dev)
                            grad = torch.randn(batch, tables * dim, generator=gen).to(dev)
                            f, b = [], []
                            for i in range(grid.warmup + grid.reps):
                                sync()
                                t0 = time.perf_counter()
                                o = lk.forward(ids, offsets)
                                sync()
                                t1 = time.perf_counter()
                                lk.backward(grad.to(o.dtype))
                                sync()
                                t2 = time.perf_counter()
                                if i >= grid.warmup:
                                    f.append((t1 - t0) * 1e3)
                                    b.append((t2 - t1) * 1e3)
                            out.append(LookupPoint(rows=rows, dim=dim, pooling_factor=pf,
                                                   batch=batch, dtype=dtype, tables=tables,
                                                   fwd_ms=statistics.median(f),
                                                   bwd_ms=statistics.median(b)))


# --------------------------------------------------------------------------------------------
# measurements as the fit reads them
# --------------------------------------------------------------------------------------------


def _one_rank(topology: Topology) -> Topology:
    g = topology.host_groups[0]
    return Topology(name=f"{topology.name}-1", host_groups=(dataclasses.replace(
        g, hosts=1, devices_per_host=1),), hbm_reserved_fraction=topology.hbm_reserved_fraction)


def lookup_measurements(points: Sequence[LookupPoint], topology: Topology
                        ) -> list[PlanMeasurement]:
    """Kernel microbenchmarks as one-rank plans: ``tables`` identical table-wise tables (one
    batched kernel, one sharding group), forward and backward times on the compute lanes."""
    topo1 = _one_rank(topology)
    out = []
    for p in points:
        tables = tuple(TableSpec(name=f"t{i}", num_embeddings=p.rows, embedding_dim=p.dim,
                                 pooling_factor=p.pooling_factor, dtype=p.dtype)
                       for i in range(p.tables))
        w = Workload(name="cal", tables=tables, batch_size=p.batch, mode=Mode.TRAINING,
                     default_optimizer=Optimizer.ROWWISE_ADAGRAD)
        a = Assignment(options=tuple(ShardingOption(
            table=t.name, sharding_type=ShardingType.TABLE_WISE, placement=_HBM,
            shards=(ShardSpec(row_offset=0, num_rows=t.num_embeddings, col_offset=0,
                              num_cols=t.embedding_dim),), candidate_ranks=(None,))
            for t in tables), ranks=tuple((0,) for _ in tables))
        out.append(PlanMeasurement(workload=w, topology=topo1, assignment=a,
                                   compute_ms=np.array([[p.fwd_ms, p.bwd_ms]]),
                                   comm_ms=np.zeros(4)))
    return out


def measure_plans(assignments: Sequence[Assignment], workload: Workload, topology: Topology, *,
                  steps: int = 10, warmup: int = 3, seed: int = 0, backend: str = "auto",
                  rounds: int = 3, modes: Sequence[bool] = (False, True)
                  ) -> tuple[list[PlanMeasurement], list[Any]]:
    """Profile ``assignments`` on the executor (virtual clock) in ``rounds`` interleaved rounds
    (every plan, then every plan again, ...) in each mode of ``modes`` (pipelined or not), and
    keep per plan, rank and stage the median over rounds; so a burst of background load hits
    every plan alike. Returns one measurement per plan and mode, and the reports."""
    from shardplan.estimators import default_cost_model
    from shardplan.executor.api import profile_plans
    from shardplan.plans import build_plan

    cm = default_cost_model(workload, topology)
    built = [build_plan(workload=workload, topology=topology, cost_model=cm, assignment=a,
                        solver="random") for a in assignments]
    out, reports = [], []
    for piped in modes:
        runs = [profile_plans(built, steps=steps, warmup=warmup, seed=seed, backend=backend,
                              pipelined=piped) for _ in range(max(1, rounds))]
        reports.append(runs)
        for i, a in enumerate(assignments):
            per = [run[i] for run in runs]
            out.append(measurement_of(a, workload, topology, per))
    return out, reports


def measurement_of(assignment: Assignment, workload: Workload, topology: Topology,
                   reports: Sequence[Any]) -> PlanMeasurement:
    """A plan's measurement from its profile reports (median over them per rank and stage):
    compute busy per rank; each communication stage the median over ranks of their busy time."""
    world = topology.world_size

    def busy(rank: int, stage: Stage) -> float:
        return statistics.median(next(r.measured_ms for r in rep.rows
                                      if r.rank == rank and r.stage == stage.value)
                                 for rep in reports)

    compute = np.array([[busy(r, Stage.FWD_COMPUTE), busy(r, Stage.BWD_COMPUTE)]
                        for r in range(world)])
    comm = np.array([statistics.median(busy(r, st) for r in range(world))
                     for st in Stage if st.is_comm])
    return PlanMeasurement(workload=workload, topology=topology, assignment=assignment,
                           compute_ms=compute, comm_ms=comm,
                           step_ms=statistics.median(rep.step_ms for rep in reports),
                           pipelined=bool(reports[0].pipelined))


def random_assignments(workload: Workload, topology: Topology, n: int, seed: int,
                       require: Sequence[ShardingType] = (), share: float = 0.0) -> list[Any]:
    """``n`` distinct random assignments: a random HBM sharding option per table (every type
    the enumerator offers, small tables included) and a random allowed rank per shard. The
    first ``ceil(share x n)`` use every type of ``require`` (a table each, chosen at random)."""
    import math
    import random

    from shardplan.enumerators import EnumerationOptions, enumerate_options
    from shardplan.types import PlacementKind

    opts = enumerate_options(workload, topology, EnumerationOptions(wide_min_share=0.0))
    rng = random.Random(seed)
    forced = math.ceil(share * n) if require else 0
    out, seen, tries = [], set(), 0
    while len(out) < n and tries < 100 * n:
        tries += 1
        want: dict[int, ShardingType] = {}
        if len(out) < forced:
            idx = rng.sample(range(len(workload.tables)), len(require))
            want = dict(zip(idx, require))
        chosen, ranks = [], []
        for ti, t in enumerate(workload.tables):
            cands = [o for o in opts[t.name] if o.placement.kind is PlacementKind.HBM
                     and (ti not in want or o.sharding_type is want[ti])]
            if not cands:
                cands = [o for o in opts[t.name] if o.placement.kind is PlacementKind.HBM]
            o = rng.choice(cands)
            chosen.append(o)
            ranks.append(tuple(rng.choice(c if c is not None else tuple(range(topology.world_size)))
                               for c in o.candidate_ranks))
        key = tuple((o.sharding_type, len(o.shards), rs) for o, rs in zip(chosen, ranks))
        if key not in seen:
            seen.add(key)
            out.append(Assignment(options=tuple(chosen), ranks=tuple(ranks)))
    return out


# --------------------------------------------------------------------------------------------
# the profile
# --------------------------------------------------------------------------------------------


def write_profile(path: str | Path, *, name: str, device_model: str, coefficients: dict[str, Any],
                  notes: Sequence[str], hardware: str, command: str, backend: str,
                  grid: CalibrationGrid, topology: Topology) -> Path:
    """Write the profile YAML (schema of ``estimators/profiles``) with a header comment."""
    doc = {
        "format_version": 1, "name": name, "device_model": device_model,
        "provenance": {"kind": "measured", "date": _dt.date.today().isoformat(),
                       "hardware": hardware, "command": command, "notes": "; ".join(notes)},
        "coefficients": coefficients,
    }
    header = (
        f"# Measured by `shardplan calibrate` ({backend} kernels). Efficiencies are achieved /\n"
        f"# nominal bandwidth of topology {topology.name!r} (hbm_bandwidth for lookups, the\n"
        "# intra-host link for collectives); overheads and latencies in microseconds.\n"
        f"# Kernel grid: rows {list(grid.rows)}, dims {list(grid.dims)}, pooling "
        f"{list(grid.pooling_factors)}, batches {list(grid.batches)},\n#   dtypes "
        f"{[d.value for d in grid.dtypes]}, tables {list(grid.tables)}.\n")
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(header + yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    return p


def hardware_string(backend: str) -> str:
    """A one-line description of this machine and software."""
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    parts = [f"{os.cpu_count()}-core {cpu}", f"torch {torch.__version__}"]
    if torch.cuda.is_available():
        parts.insert(0, torch.cuda.get_device_name(0))
    if backend == "fbgemm":
        try:
            from importlib.metadata import version

            for pkg in ("fbgemm-gpu-cpu", "fbgemm-gpu"):
                try:
                    parts.append(f"{pkg} {version(pkg)}")
                    break
                except Exception:  # noqa: BLE001 - package name differs per build
                    continue
        except ImportError:
            pass
    else:
        parts.append("torch embedding_bag (no FBGEMM)")
    return ", ".join(parts)


def calibrate(out: str | Path, topology: Topology, *, grid: CalibrationGrid = CPU_GRID,
              name: str | None = None, backend: str = "auto", device: str = "cpu",
              command: str = "shardplan calibrate", plans: int = 0,
              workload: Workload | None = None, plan_seed: int = 1000, plan_steps: int = 10,
              plan_rounds: int = 3) -> dict[str, Any]:
    """Benchmark, fit and write a profile for ``topology``'s device model.

    Args:
        out: the profile YAML to write.
        topology: its nominal bandwidths are what the efficiencies refer to.
        grid: the kernel microbenchmark grid.
        name: profile name (default: the file stem).
        backend: lookup kernels (``auto``: FBGEMM where installed).
        device: ``cpu`` (or ``cuda`` for the lookup benchmarks).
        command: recorded in the profile's provenance.
        plans: if > 0, also run this many random plans of ``workload`` on the executor (serial
            and pipelined) and fit every coefficient to kernels and plans together; with 0,
            only the compute coefficients are fitted (collectives keep their defaults).
            Evaluate such a profile on other plans (other seed).
        workload: for ``plans``; required then.
        plan_seed: seed of the random plans.
        plan_steps: timed steps per plan.
        plan_rounds: interleaved rounds over the plans (median kept; see :func:`measure_plans`).

    Returns:
        The fit report, with ``path`` and ``coefficients``.

    Raises:
        SpecError: ``plans`` without a workload.
    """
    if plans and workload is None:
        raise SpecError("calibrating on plans needs a workload (--tables, or a topology that "
                        "names one)", key_path="--plans")
    lookups, be = bench_lookups(grid, backend=backend, device=device)
    measured = lookup_measurements(lookups, topology)
    notes = [f"kernels: {be}", f"nominal bandwidths from topology {topology.name}",
             f"{len(lookups)} kernel points"]
    if plans:
        assigns = random_assignments(workload, topology, plans, plan_seed,
                                     require=_REQUIRE, share=1 / 3)
        plan_meas, _ = measure_plans(assigns, workload, topology, steps=plan_steps,
                                     seed=plan_seed, backend=backend, rounds=plan_rounds)
        measured += plan_meas
        notes.append(f"{plans} random plans of {workload.name} (seed {plan_seed}), serial and "
                     f"pipelined, median of {plan_rounds} interleaved rounds of {plan_steps} "
                     "steps, virtual clock")
    # the plans run on local gloo processes (launch.run_local), whatever ``device`` the lookups
    # use; gloo has no reduce-scatter: it runs as an all-to-all plus a local sum
    # (collectives._reduce_scatter), so both kinds get one efficiency and latency
    tie = GLOO_TIE if plans else None
    rep = fit_plans(measured, tie=tie)
    if tie:
        notes.append("gloo: reduce_scatter (and all-gather) fitted as all_to_all (gloo has no "
                     "reduce-scatter; it runs as an all-to-all plus a local sum)")
    link = topology.host_groups[0].intra_host_link.type.value
    co = coefficients_of(rep.theta, link).as_dict()
    overlap = fit_overlap(measured, rep.theta)
    if overlap is not None:
        co["pipeline_overlap"] = overlap[0]
    coeffs = {k: (float(f"{v:.4g}") if isinstance(v, float) else v) for k, v in co.items()}
    coeffs["collective_bandwidth_efficiency"] = {
        link: float(f"{co['collective_bandwidth_efficiency'][link]:.4g}")}
    for k in ("collective_kind_efficiency", "collective_latency_us"):
        coeffs[k] = {kk: float(f"{vv:.4g}") for kk, vv in co[k].items()}
    notes.append(f"fit: median rel. error {rep.median_rel_error:.1%} over {rep.points} values "
                 f"({rep.iterations} refits of the comm stages' slowest cells)")
    if overlap is not None:
        notes.append(f"pipeline_overlap fitted to the pipelined plans' step times: median "
                     f"rel. error {overlap[1]:.1%}")
    if rep.at_bounds:
        notes.append("at their bounds: " + ", ".join(rep.at_bounds))
    if rep.unidentified:
        notes.append("not identified by these measurements (defaults kept): "
                     + ", ".join(rep.unidentified))
    model = topology.host_groups[0].device.model
    path = write_profile(out, name=name or Path(out).stem, device_model=model,
                         coefficients=coeffs, notes=notes, hardware=hardware_string(be),
                         command=command, backend=be, grid=grid, topology=topology)
    return {"path": str(path), "coefficients": coeffs, "backend": be, "notes": notes,
            "median_rel_error": rep.median_rel_error, "points": rep.points,
            "plans": plans, "lookup_points": len(lookups)}


#: Collective kinds fitted as another on gloo (see :func:`fit_plans`'s ``tie``).
GLOO_TIE = {"reduce_scatter": "all_to_all"}
#: Sharding types a third of the calibration and fidelity plans must all use.
_REQUIRE = (ShardingType.ROW_WISE, ShardingType.DATA_PARALLEL, ShardingType.TABLE_ROW_WISE)
