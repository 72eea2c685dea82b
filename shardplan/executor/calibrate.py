"""Calibration: microbenchmarks of the lookup kernels and of the collectives the executor
runs, fitted to the cost model's coefficients and written as a profile
(``estimators/profiles/*.yaml``, format in ``docs/cost-model.md``).

How the fit matches the cost model: for each benchmark point the cost model itself, given a
*unit* profile (all efficiencies 1, all overheads 0), says how long the work would take at
the topology's nominal bandwidths (``ideal``). The measured times are then fitted, by least
squares on relative error, to the model's own form:

    lookups      t = kernel_overhead + tables x per_table_overhead + ideal_fwd / lookup_eff
                 t = kernel_overhead + tables x per_table_overhead + ideal_bwd / backward_eff
                 (forward and backward rows share the two overheads, as in the model)
    collectives  t = latency[c] + hops[c] + ideal_c(bytes) / (link_eff x kind_eff[c])
                 (one latency and one slope per collective kind; the best kind's efficiency
                 becomes the topology's intra-host link efficiency, the others factors <= 1
                 on it, ``collective_kind_efficiency``; ``hops`` is the topology's per-hop
                 latency the model adds itself)

Efficiencies are clipped to (0, 1] (the profile's range) and overheads to >= 0; the profile's
notes record every clip and the fit's median relative error.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import os
import platform
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import yaml

from shardplan.errors import SpecError
from shardplan.types import DType, Mode, Optimizer, TableSpec, Topology, Workload

__all__ = ["CalibrationGrid", "TINY_GRID", "CPU_GRID", "LookupPoint", "CollectivePoint",
           "bench_lookups", "bench_collectives", "fit_profile", "write_profile", "calibrate"]


@dataclass(frozen=True, kw_only=True, slots=True)
class CalibrationGrid:
    """The benchmark grid.

    Attributes:
        rows / dims / pooling_factors / batches / dtypes / tables: lookup kernel points (full
            product); ``tables`` identical tables go in one batched kernel.
        message_bytes: per-rank buffer sizes of the collectives.
        reps: timed repetitions per point (median kept), after ``warmup`` untimed ones.
        world_size: processes for the collective benchmarks.
    """

    rows: tuple[int, ...] = (1_000, 100_000)
    dims: tuple[int, ...] = (16, 64)
    pooling_factors: tuple[float, ...] = (1.0, 8.0)
    batches: tuple[int, ...] = (256, 2048)
    dtypes: tuple[DType, ...] = (DType.FP32, DType.FP16)
    tables: tuple[int, ...] = (1, 4)
    message_bytes: tuple[int, ...] = (4_096, 65_536, 1_048_576)
    reps: int = 15
    warmup: int = 3
    world_size: int = 4


CPU_GRID = CalibrationGrid()
TINY_GRID = CalibrationGrid(rows=(200,), dims=(8,), pooling_factors=(2.0,), batches=(32, 128),
                            dtypes=(DType.FP32,), tables=(1, 2), message_bytes=(1_024, 16_384),
                            reps=3, warmup=1, world_size=2)


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


@dataclass(frozen=True, kw_only=True, slots=True)
class CollectivePoint:
    collective: str  # all_to_all | reduce_scatter | all_reduce
    bytes_per_rank: int
    world_size: int
    ms: float


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
# collectives (N local gloo processes, the executor's own collective helpers)
# --------------------------------------------------------------------------------------------


def _coll_worker(rank: int, world: int, store_dir: str, sizes: Sequence[int], reps: int,
                 warmup: int) -> None:
    import pickle

    import torch
    import torch.distributed as dist

    from shardplan.executor.sharded import Comm, _a2a, _all_gather, _reduce_scatter

    torch.set_num_threads(1)
    dist.init_process_group("gloo", store=dist.FileStore(os.path.join(store_dir, "store"), world),
                            rank=rank, world_size=world)
    comm = Comm(rank=rank, world_size=world, device=torch.device("cpu"))
    res = []
    for nbytes in sizes:
        n = max(world, nbytes // 4 // world * world)
        x = torch.randn(n)
        ops = {
            "all_to_all": lambda: _a2a(x, [n // world] * world, [n // world] * world),
            "reduce_scatter": lambda: _reduce_scatter(x.view(world, -1), world, comm),
            "all_gather": lambda: _all_gather(x[: n // world], world),
            "all_reduce": lambda: dist.all_reduce(x.clone()),
        }
        for name, op in ops.items():
            ts = []
            for i in range(warmup + reps):
                dist.barrier()
                t0 = time.perf_counter()
                op()
                dt = (time.perf_counter() - t0) * 1e3
                if i >= warmup:
                    ts.append(dt)
            # the slowest rank decides when a collective is done
            t = torch.tensor([statistics.median(ts)])
            dist.all_reduce(t, op=dist.ReduceOp.MAX)
            res.append((name, n * 4, float(t)))
    if rank == 0:
        with open(os.path.join(store_dir, "coll.pkl"), "wb") as fh:
            pickle.dump(res, fh)
    dist.destroy_process_group()


def bench_collectives(grid: CalibrationGrid) -> list[CollectivePoint]:
    """Time all-to-all, reduce-scatter (as the executor runs it), all-gather and all-reduce on
    ``grid.world_size`` local gloo processes over ``grid.message_bytes``."""
    import pickle

    import torch.multiprocessing as mp

    from shardplan.executor.launch import default_start_method

    method = default_start_method()
    with tempfile.TemporaryDirectory(prefix="shardplan-cal-") as tmp:
        mp.start_processes(_coll_worker, args=(grid.world_size, tmp, list(grid.message_bytes),
                                               grid.reps, grid.warmup),
                           nprocs=grid.world_size, start_method=method, join=True)
        with open(os.path.join(tmp, "coll.pkl"), "rb") as fh:
            res = pickle.load(fh)
    return [CollectivePoint(collective=c, bytes_per_rank=b, world_size=grid.world_size, ms=t)
            for c, b, t in res]


# --------------------------------------------------------------------------------------------
# the fit
# --------------------------------------------------------------------------------------------


def _unit_profile(device_model: str) -> Any:
    from shardplan.estimators.profiles import (
        LINK_TYPES,
        Coefficients,
        DeviceProfile,
        ProfileProvenance,
        ProvenanceKind,
    )

    co = Coefficients(lookup_bandwidth_efficiency=1.0, backward_bandwidth_efficiency=1.0,
                      kernel_overhead_us=0.0, per_table_overhead_us=0.0,
                      ddr_bandwidth_efficiency=1.0, pcie_bandwidth_efficiency=1.0,
                      collective_bandwidth_efficiency={k: 1.0 for k in LINK_TYPES},
                      collective_latency_us={"all_to_all": 0.0, "reduce_scatter": 0.0,
                                             "all_reduce": 0.0})
    return DeviceProfile(name="unit", device_model=device_model,
                         provenance=ProfileProvenance(kind=ProvenanceKind.DATASHEET), coefficients=co)


def _one_rank(topology: Topology) -> Topology:
    g = topology.host_groups[0]
    return dataclasses.replace(topology, name=f"{topology.name}-1", host_groups=(
        dataclasses.replace(g, hosts=1, devices_per_host=1),))


def _ideal_lookup_ms(p: LookupPoint, topology: Topology) -> tuple[float, float]:
    """(forward, backward) ms of one batched kernel at nominal bandwidth, per the cost model."""
    from shardplan.enumerators import enumerate_table
    from shardplan.estimators import default_cost_model
    from shardplan.types import ShardingType

    topo1 = _one_rank(topology)
    tables = tuple(TableSpec(name=f"t{i}", num_embeddings=p.rows, embedding_dim=p.dim,
                             pooling_factor=p.pooling_factor, dtype=p.dtype)
                   for i in range(p.tables))
    w = Workload(name="cal", tables=tables, batch_size=p.batch, mode=Mode.TRAINING,
                 default_optimizer=Optimizer.ROWWISE_ADAGRAD)
    cm = default_cost_model(w, topo1, profile=_unit_profile(topo1.host_groups[0].device.model))
    f = b = 0.0
    for t in tables:
        opt = next(o for o in enumerate_table(t, w, topo1)
                   if o.sharding_type is ShardingType.TABLE_WISE and o.placement.kind.value == "hbm")
        c = cm.shard_cost(opt, 0, 0).perf
        f += c.fwd_compute
        b += c.bwd_compute
    return f, b


def _coll_ideal(topology: Topology) -> tuple[dict[str, float], dict[str, float]]:
    """Per collective: ideal ms per byte of per-rank buffer, and the hop latency (ms) the cost
    model adds from the topology, both at unit efficiency."""
    from shardplan.estimators.comm import group_links
    from shardplan.estimators.cost_model import CostModelOptions, LinkDuplex
    from shardplan.estimators.profiles import Collective

    unit = _unit_profile(topology.host_groups[0].device.model).coefficients
    ln = group_links(topology, [unit] * len(topology.host_groups))[0]
    dw = 0.5 if CostModelOptions().duplex is LinkDuplex.FULL else 1.0
    per_byte = {"all_to_all": dw * ln.all_to_all_s_per_byte() * 1e3,
                "reduce_scatter": ln.ring_s_per_byte() * 1e3,
                "all_gather": ln.ring_s_per_byte() * 1e3,
                "all_reduce": 2.0 * ln.ring_s_per_byte() * 1e3}
    hops = {"all_to_all": ln.latency_s(Collective.ALL_TO_ALL, unit) * 1e3,
            "reduce_scatter": ln.latency_s(Collective.REDUCE_SCATTER, unit) * 1e3,
            "all_gather": ln.latency_s(Collective.REDUCE_SCATTER, unit) * 1e3,
            "all_reduce": ln.latency_s(Collective.ALL_REDUCE, unit) * 1e3}
    return per_byte, hops


def _lstsq_rel(a: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Least squares on relative error (rows scaled by 1/y)."""
    w = 1.0 / np.maximum(y, 1e-9)
    x, *_ = np.linalg.lstsq(a * w[:, None], y * w, rcond=None)
    return x


def _split_efficiency(slopes: dict[str, float], link: str, notes: list[str]
                      ) -> tuple[float, dict[str, float]]:
    """Per-kind slopes (1 / efficiency) -> (link efficiency, kind factors): the link gets the
    best kind's efficiency (clipped to 1), each kind the factor that gives its own."""
    eff = {}
    for n, v in slopes.items():
        if v <= 1.0:
            notes.append(f"{n} over {link} fitted efficiency "
                         f"{1 / v if v > 0 else float('inf'):.3g} > 1, clipped to 1")
            v = 1.0
        eff[n] = 1.0 / v
    link_eff = float(f"{max(eff.values()):.4g}")
    return link_eff, {n: float(f"{min(e / link_eff, 1.0):.4g}") for n, e in sorted(eff.items())}


def fit_profile(lookups: Sequence[LookupPoint], collectives: Sequence[CollectivePoint],
                topology: Topology) -> tuple[dict[str, Any], dict[str, Any]]:
    """Fit the cost model's coefficients to the measurements.

    Returns:
        (coefficients in the profile's schema, fit report: median relative errors and clips).

    Raises:
        SpecError: too few points to fit.
    """
    if len(lookups) < 2 or len({p.tables for p in lookups}) < 2:
        raise SpecError("the lookup grid needs at least two points with different table counts "
                        "to separate the per-kernel and per-table overheads", key_path="grid.tables")
    notes: list[str] = []
    ideal = [_ideal_lookup_ms(p, topology) for p in lookups]
    rows, y = [], []
    for p, (fi, bi) in zip(lookups, ideal):
        rows.append([1.0, p.tables, fi, 0.0])
        y.append(p.fwd_ms)
        rows.append([1.0, p.tables, 0.0, bi])
        y.append(p.bwd_ms)
    a, yv = np.array(rows), np.array(y)
    k, pt, cf, cb = (float(v) for v in _lstsq_rel(a, yv))
    coeffs: dict[str, Any] = {}

    def eff(slope: float, name: str) -> float:
        if slope <= 1.0:
            notes.append(f"{name} fitted {1 / slope if slope > 0 else float('inf'):.3g} > 1, "
                         "clipped to 1 (kernel faster than the nominal bandwidth: cache-resident)")
            return 1.0
        return float(f"{1.0 / slope:.4g}")

    coeffs["lookup_bandwidth_efficiency"] = eff(cf, "lookup_bandwidth_efficiency")
    coeffs["backward_bandwidth_efficiency"] = eff(cb, "backward_bandwidth_efficiency")
    if k < 0:
        notes.append(f"kernel_overhead_us fitted {k * 1e3:.3g} < 0, clipped to 0")
    if pt < 0:
        notes.append(f"per_table_overhead_us fitted {pt * 1e3:.3g} < 0, clipped to 0")
    coeffs["kernel_overhead_us"] = round(max(k, 0.0) * 1e3, 3)
    coeffs["per_table_overhead_us"] = round(max(pt, 0.0) * 1e3, 3)
    pred = (coeffs["kernel_overhead_us"] + coeffs["per_table_overhead_us"] * a[:, 1]) * 1e-3 \
        + a[:, 2] / coeffs["lookup_bandwidth_efficiency"] \
        + a[:, 3] / coeffs["backward_bandwidth_efficiency"]
    report: dict[str, Any] = {
        "lookup_points": len(lookups),
        "lookup_median_rel_error": float(np.median(np.abs(pred - yv) / yv)),
    }
    if collectives:
        link = topology.host_groups[0].intra_host_link.type.value
        if topology.num_hosts > 1:
            notes.append("collectives measured on one host: only the intra-host link type is fitted")
        per_byte, hops = _coll_ideal(topology)
        def key(c: CollectivePoint) -> str:  # the model charges all-gather reduce-scatter's latency
            return "reduce_scatter" if c.collective == "all_gather" else c.collective

        names = sorted({key(c) for c in collectives})
        cols = {n: i for i, n in enumerate(names)}
        # one latency and one slope (1 / efficiency) per collective kind: gloo's all-reduce runs
        # far below its all-to-all, which one efficiency per link type cannot fit
        ca, cy = [], []
        for c in collectives:
            row = [0.0] * (2 * len(names))
            row[cols[key(c)]] = 1.0
            row[len(names) + cols[key(c)]] = c.bytes_per_rank * per_byte[c.collective]
            ca.append(row)
            cy.append(c.ms - hops[c.collective])
        cx = [float(v) for v in _lstsq_rel(np.array(ca), np.maximum(np.array(cy), 1e-6))]
        slopes = {n: cx[len(names) + i] for n, i in cols.items()}
        link_eff, kind = _split_efficiency(slopes, link, notes)
        coeffs["collective_bandwidth_efficiency"] = {link: link_eff}
        coeffs["collective_kind_efficiency"] = kind
        lat = {}
        for n in ("all_to_all", "reduce_scatter", "all_reduce"):
            if n in cols:
                v = cx[cols[n]] * 1e3
                if v < 0:
                    notes.append(f"{n} latency fitted {v:.3g} us < 0, clipped to 0")
                lat[n] = round(max(v, 0.0), 2)
        coeffs["collective_latency_us"] = lat
        cpred = np.array([lat.get(key(c), 0.0) * 1e-3 + hops[c.collective]
                          + c.bytes_per_rank * per_byte[c.collective]
                          / (link_eff * kind.get(key(c), 1.0)) for c in collectives])
        cm = np.array([c.ms for c in collectives])
        report["collective_points"] = len(collectives)
        report["collective_median_rel_error"] = float(np.median(np.abs(cpred - cm) / cm))
    report["notes"] = notes
    return coeffs, report


def write_profile(path: str | Path, *, name: str, device_model: str, coefficients: dict[str, Any],
                  report: dict[str, Any], hardware: str, command: str, backend: str,
                  grid: CalibrationGrid, topology: Topology) -> Path:
    """Write the profile YAML (schema of ``estimators/profiles``) with a header comment."""
    fit = (f"fit: lookup median rel. error {report['lookup_median_rel_error']:.1%} over "
           f"{report['lookup_points']} points")
    if "collective_points" in report:
        fit += (f"; collectives {report['collective_median_rel_error']:.1%} over "
                f"{report['collective_points']} points")
    notes = "; ".join([fit, f"kernels: {backend}", f"nominal bandwidths from topology "
                       f"{topology.name}"] + list(report["notes"]))
    doc = {
        "format_version": 1, "name": name, "device_model": device_model,
        "provenance": {"kind": "measured", "date": _dt.date.today().isoformat(),
                       "hardware": hardware, "command": command, "notes": notes},
        "coefficients": coefficients,
    }
    header = (
        f"# Measured by `shardplan calibrate` ({backend} kernels). Efficiencies are achieved /\n"
        f"# nominal bandwidth of topology {topology.name!r} (hbm_bandwidth for lookups, the\n"
        "# intra-host link for collectives); overheads and latencies in microseconds.\n"
        f"# Grid: rows {list(grid.rows)}, dims {list(grid.dims)}, pooling {list(grid.pooling_factors)}, "
        f"batches {list(grid.batches)},\n#   dtypes {[d.value for d in grid.dtypes]}, tables "
        f"{list(grid.tables)}; collectives on {grid.world_size} processes over "
        f"{list(grid.message_bytes)} bytes.\n")
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
              collectives: bool = True, command: str = "shardplan calibrate",
              plans: int = 0, workload: Workload | None = None, plan_seed: int = 1000,
              plan_steps: int = 10, objective: str = "both", plan_rounds: int = 3) -> dict[str, Any]:
    """Benchmark, fit and write a profile for ``topology``'s device model.

    Args:
        out: the profile YAML to write.
        topology: its nominal bandwidths are what the efficiencies refer to.
        grid: the microbenchmark grid.
        name: profile name (default: the file stem).
        backend: lookup kernels (``auto``: FBGEMM where installed).
        device: ``cpu`` (or ``cuda`` for the lookup benchmarks).
        collectives: also benchmark the collectives.
        plans: if > 0, then also run this many random plans of ``workload`` on the executor
            and refit every coefficient to their per-rank stage times (the microbenchmark
            fit is kept in the notes). Evaluate such a profile on other plans (other seed).
        workload: for ``plans``; required then.
        plan_seed: seed of the random plans.
        plan_steps: timed steps per plan.
        plan_rounds: interleaved rounds over the plans (median kept; see
            :func:`calibrate_on_plans`).
        objective: what the plan fit matches (see :func:`fit_plan_profiles`).

    Returns:
        The fit report, with ``path`` and ``coefficients``.

    Raises:
        SpecError: ``plans`` without a workload, or a grid too small to fit.
    """
    if plans and workload is None:
        raise SpecError("calibrating on plans needs a workload (--tables, or a topology that "
                        "names one)", key_path="--plans")
    lookups, be = bench_lookups(grid, backend=backend, device=device)
    colls = bench_collectives(grid) if collectives else []
    coeffs, report = fit_profile(lookups, colls, topology)
    if plans:
        micro = coeffs
        coeffs, prep = calibrate_on_plans(workload, topology, plans=plans, seed=plan_seed,
                                          steps=plan_steps, backend=backend, objective=objective,
                                          rounds=plan_rounds)
        report.update(prep)
        report["notes"] = list(report["notes"]) + [
            f"coefficients refitted ({prep['objective']}) to the step times of {plans} random "
            f"plans of {workload.name} (seed {plan_seed}, median of {plan_rounds} interleaved rounds of "
            f"{plan_steps} steps); median per-rank error of that fit "
            f"{prep['plan_median_rel_error']:.1%}; microbenchmark-only fit was {micro}"]
        report["notes"].append(
            "reduce-scatter and all-reduce latencies are paid per RW / DP table, so the number "
            "of such tables identifies them; the kernel overhead and the all-to-all latency are "
            "the same on every rank whatever the plan, identified only through the stage they "
            "fall in (compute vs communication)")
        if prep["at_bounds"]:
            report["notes"].append("at their bounds: " + ", ".join(prep["at_bounds"]))
    model = topology.host_groups[0].device.model
    path = write_profile(out, name=name or Path(out).stem, device_model=model,
                         coefficients=coeffs, report=report, hardware=hardware_string(be),
                         command=command, backend=be, grid=grid, topology=topology)
    report.update({"path": str(path), "coefficients": coeffs, "backend": be,
                   "lookups": [dataclasses.asdict(p) for p in lookups],
                   "collectives": [dataclasses.asdict(c) for c in colls]})
    return report


# --------------------------------------------------------------------------------------------
# refinement on whole plans: fit the same coefficients to executor profiles of random plans
# --------------------------------------------------------------------------------------------

# The cost model is linear in these (efficiencies enter as 1 / efficiency), so its estimate of
# every rank and stage is  fixed + sum_i theta_i x A_i ; A is found by evaluating the model at
# unit steps of each parameter.
_PLAN_PARAMS = ("kernel_overhead_us", "per_table_overhead_us", "inv_lookup", "inv_backward",
                "inv_all_to_all", "inv_reduce_scatter", "inv_all_reduce",
                "lat_all_to_all", "lat_reduce_scatter", "lat_all_reduce")
_KINDS = ("all_to_all", "reduce_scatter", "all_reduce")


def random_assignments(workload: Workload, topology: Topology, n: int, seed: int) -> list[Any]:
    """``n`` distinct random assignments: a random HBM sharding option per table (every type
    the enumerator offers, small tables included) and a random allowed rank per shard."""
    import random

    from shardplan.enumerators import EnumerationOptions, enumerate_options
    from shardplan.types import Assignment, PlacementKind

    opts = enumerate_options(workload, topology, EnumerationOptions(wide_min_share=0.0))
    rng = random.Random(seed)
    out, seen, tries = [], set(), 0
    while len(out) < n and tries < 100 * n:
        tries += 1
        chosen, ranks = [], []
        for t in workload.tables:
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


def _profile_at(theta: dict[str, float], link: str, device_model: str) -> Any:
    from shardplan.estimators.profiles import (
        Coefficients,
        DeviceProfile,
        ProfileProvenance,
        ProvenanceKind,
    )

    co = Coefficients(
        lookup_bandwidth_efficiency=1.0 / theta["inv_lookup"],
        backward_bandwidth_efficiency=1.0 / theta["inv_backward"],
        kernel_overhead_us=theta["kernel_overhead_us"],
        per_table_overhead_us=theta["per_table_overhead_us"],
        # link efficiency x kind efficiency = 1 / inv_<kind>: the best kind sets the link's
        collective_bandwidth_efficiency={link: 1.0 / min(theta[f"inv_{k}"] for k in _KINDS)},
        collective_kind_efficiency={k: min(theta[f"inv_{j}"] for j in _KINDS) / theta[f"inv_{k}"]
                                    for k in _KINDS},
        collective_latency_us={"all_to_all": theta["lat_all_to_all"],
                               "reduce_scatter": theta["lat_reduce_scatter"],
                               "all_reduce": theta["lat_all_reduce"]})
    return DeviceProfile(name="fit", device_model=device_model,
                         provenance=ProfileProvenance(kind=ProvenanceKind.MEASURED), coefficients=co)


def _stage_matrix(assignments: Sequence[Any], workload: Workload, topology: Topology,
                  theta: dict[str, float]) -> np.ndarray:
    """Estimates [plan, rank, stage] (ms) under the coefficients ``theta``."""
    from shardplan.estimators import default_cost_model
    from shardplan.plans import rank_costs
    from shardplan.types import Stage

    link = topology.host_groups[0].intra_host_link.type.value
    cm = default_cost_model(workload, topology,
                            profile=_profile_at(theta, link, topology.host_groups[0].device.model))
    return np.array([[[c.perf.get(s) for s in Stage] for c in rank_costs(a, topology, cm)]
                     for a in assignments])


def fit_plan_profiles(assignments: Sequence[Any], measured: np.ndarray, workload: Workload,
                      topology: Topology, *, objective: str = "both"
                      ) -> tuple[dict[str, Any], dict[str, Any]]:
    """Fit the coefficients to measured stage times of whole plans.

    Args:
        assignments: the plans' assignments.
        measured: [plan, rank, stage] median ms from the executor (``Stage`` order).
        workload / topology: what the plans were made for.
        objective: ``totals`` fits each rank's step time (what the planner minimises and
            ``bench/fidelity.py`` scores), ``stages`` each stage weighted by the rank's step
            time, ``both`` (default) the stages and the step times together: the stages tell
            compute overheads from collective latencies, which step times alone cannot.

    Returns:
        (coefficients in the profile schema, report with the fit's median per-rank error).
    """
    base = {k: 0.0 for k in _PLAN_PARAMS} | {k: 1.0 for k in _PLAN_PARAMS if k.startswith("inv_")}
    e0 = _stage_matrix(assignments, workload, topology, base)
    cols = []
    for k in _PLAN_PARAMS:
        step = dict(base)
        step[k] += 1.0
        cols.append((_stage_matrix(assignments, workload, topology, step) - e0).reshape(-1))
    a = np.stack(cols, 1)
    fixed = e0.reshape(-1) - sum(a[:, i] * base[k] for i, k in enumerate(_PLAN_PARAMS))
    y = measured.reshape(-1)
    # weight each stage by its rank's measured step time: errors count relative to the step
    totals = np.repeat(measured.sum(-1).reshape(-1), measured.shape[-1])
    if objective not in ("totals", "stages", "both"):
        raise SpecError(f"objective={objective!r}: choose totals, stages or both",
                        key_path="objective")
    ns = measured.shape[-1]
    ta = a.reshape(-1, ns, a.shape[1]).sum(1)
    tf = fixed.reshape(-1, ns).sum(1)
    ty = y.reshape(-1, ns).sum(1)
    if objective == "totals":
        a, fixed, y, totals = ta, tf, ty, ty
    elif objective == "both":  # stage rows plus one row per rank's step time
        a, fixed, y = np.vstack([a, ta]), np.concatenate([fixed, tf]), np.concatenate([y, ty])
        totals = np.concatenate([totals, ty])
    w = 1.0 / np.maximum(totals, 1e-6)
    lower = {k: (1.0 if k.startswith("inv_") else 0.0) for k in _PLAN_PARAMS}
    free = [i for i, k in enumerate(_PLAN_PARAMS) if np.abs(a[:, i]).sum() > 0]
    pinned: dict[int, float] = {}
    theta = np.array([base[k] for k in _PLAN_PARAMS])
    for _ in range(len(_PLAN_PARAMS) + 1):  # active-set: pin violated bounds, refit the rest
        idx = [i for i in free if i not in pinned]
        rhs = y - fixed - sum(a[:, i] * v for i, v in pinned.items())
        sol, *_ = np.linalg.lstsq(a[:, idx] * w[:, None], rhs * w, rcond=None)
        theta[idx] = sol
        for i, v in pinned.items():
            theta[i] = v
        bad = [i for i in idx if theta[i] < lower[_PLAN_PARAMS[i]]]
        if not bad:
            break
        for i in bad:
            pinned[i] = lower[_PLAN_PARAMS[i]]
    th = {k: float(theta[i]) if i in free else base[k] for i, k in enumerate(_PLAN_PARAMS)}
    est = _stage_matrix(assignments, workload, topology, th)
    err = np.abs(est.sum(-1) - measured.sum(-1)) / measured.sum(-1)
    link = topology.host_groups[0].intra_host_link.type.value
    link_eff = 1.0 / min(th[f"inv_{k}"] for k in _KINDS)
    coeffs = {
        "lookup_bandwidth_efficiency": float(f"{1 / th['inv_lookup']:.4g}"),
        "backward_bandwidth_efficiency": float(f"{1 / th['inv_backward']:.4g}"),
        "kernel_overhead_us": round(th["kernel_overhead_us"], 3),
        "per_table_overhead_us": round(th["per_table_overhead_us"], 3),
        "collective_bandwidth_efficiency": {link: float(f"{link_eff:.4g}")},
        "collective_kind_efficiency": {k: float(f"{min(1.0 / th[f'inv_{k}'] / link_eff, 1.0):.4g}")
                                       for k in _KINDS},
        "collective_latency_us": {"all_to_all": round(th["lat_all_to_all"], 2),
                                  "reduce_scatter": round(th["lat_reduce_scatter"], 2),
                                  "all_reduce": round(th["lat_all_reduce"], 2)},
    }
    unidentified = [k for i, k in enumerate(_PLAN_PARAMS) if i not in free]
    return coeffs, {"plan_points": int(measured.shape[0]), "objective": objective,
                    "plan_median_rel_error": float(np.median(err)),
                    "at_bounds": [_PLAN_PARAMS[i] for i in sorted(pinned)],
                    "unidentified": unidentified}


def calibrate_on_plans(workload: Workload, topology: Topology, *, plans: int = 16, seed: int = 1000,
                       steps: int = 10, warmup: int = 3, backend: str = "auto",
                       objective: str = "both", rounds: int = 3
                       ) -> tuple[dict[str, Any], dict[str, Any]]:
    """Run ``plans`` random plans on the executor and fit the coefficients to their stages.

    The plans are measured in ``rounds`` interleaved rounds (every plan, then every plan
    again, ...) and each rank's stage time is the median over the rounds, so a burst of
    background load does not bias the few plans that ran during it. The seed should differ
    from any evaluation's (``bench/fidelity.py`` uses 0), so the fit is judged on plans it has
    not seen.
    """
    from shardplan.estimators import default_cost_model
    from shardplan.executor.api import profile_plans
    from shardplan.plans import build_plan
    from shardplan.types import Stage

    assigns = random_assignments(workload, topology, plans, seed)
    cm = default_cost_model(workload, topology)
    built = [build_plan(workload=workload, topology=topology, cost_model=cm, assignment=a,
                        solver="random") for a in assigns]
    runs = [profile_plans(built, steps=steps, warmup=warmup, seed=seed, backend=backend)
            for _ in range(max(1, rounds))]
    meas = np.median(np.array([[[[next(r.measured_ms for r in rep.rows
                                       if r.rank == rk and r.stage == s.value)
                                  for s in Stage] for rk in range(topology.world_size)]
                                for rep in reports] for reports in runs]), axis=0)
    return fit_plan_profiles(assigns, meas, workload, topology, objective=objective)
