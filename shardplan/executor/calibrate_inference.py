"""Calibration of the inference coefficients (``shardplan calibrate --mode inference``).

FBGEMM's inference kernel (``IntNBitTableBatchedEmbeddingBagsCodegen``) is another kernel than
the training TBE, and int8/int4 rows are dequantised per value, so inference plans have their
own compute coefficients (``coefficients.inference`` of a profile,
:data:`shardplan.estimators.profiles.INFERENCE_KEYS`): the lookup bandwidth efficiency, the
kernel and per-table overheads, and the dequantisation time per value.

They are fitted to forward-only microbenchmarks of the executor's inference lookups
(:mod:`.quant_kernels`) over a grid of rows, dims, pooling factors, batches, table counts and
the four dtypes, each point a one-rank inference plan whose forward-compute lane the cost model
predicts: the model is linear in ``theta`` = (1 / lookup efficiency, kernel overhead, per-table
overhead, dequantisation ns per value), so its columns are its response to a unit change of
each (exact), and a bounded least squares on relative error fits them (efficiency <= 1, the
rest >= 0). Collectives are the same in both modes: their coefficients stay the base profile's
(the training calibration, whole plans), which the written profile keeps, adding the
``inference`` section.
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import yaml

from shardplan.estimators.fitting import _bounded_lstsq
from shardplan.estimators.profiles import DeviceProfile, profile_to_dict
from shardplan.executor.calibrate import (
    CalibrationGrid,
    LookupPoint,
    _one_rank,
    hardware_string,
)
from shardplan.types import (
    HBM as _HBM,
    Assignment,
    DType,
    Lane,
    LANES,
    Mode,
    ShardingOption,
    ShardingType,
    ShardSpec,
    TableSpec,
    Topology,
    Workload,
)

__all__ = ["INFERENCE_GRID", "TINY_INFERENCE_GRID", "INFERENCE_THETA", "bench_inference_lookups",
           "fit_inference", "calibrate_inference"]

INFERENCE_GRID = CalibrationGrid(dtypes=(DType.FP32, DType.FP16, DType.INT8, DType.INT4),
                                 reps=9, warmup=2)
TINY_INFERENCE_GRID = CalibrationGrid(rows=(1_000,), dims=(16, 32), pooling_factors=(2.0,),
                                      batches=(256,), dtypes=(DType.FP32, DType.INT8, DType.INT4),
                                      tables=(1, 2), reps=3, warmup=1)
INFERENCE_THETA = ("inv_lookup", "kernel_overhead_us", "per_table_overhead_us",
                   "dequant_ns_per_value")
_LOWER = (1.0, 0.0, 0.0, 0.0)
_FWD = LANES.index(Lane.FWD_COMPUTE)


def bench_inference_lookups(grid: CalibrationGrid, *, backend: str = "auto",
                            device: str = "cpu", seed: int = 0) -> tuple[list[LookupPoint], str]:
    """Time the forward of batched inference lookups over ``grid`` (``bwd_ms`` is 0).

    Returns:
        The points, and the backend used.
    """
    import torch

    from shardplan.executor.kernels import choose_backend
    from shardplan.executor.launch import _torch_threads
    from shardplan.executor.quant import quantize
    from shardplan.executor.quant_kernels import make_quant_lookup

    dev = torch.device(device)
    be = choose_backend(backend, dev)
    gen = torch.Generator().manual_seed(seed)
    out: list[LookupPoint] = []
    threads = torch.get_num_threads()
    if dev.type == "cpu":  # the threads each executor rank gets (ranks share the cores)
        torch.set_num_threads(_torch_threads(grid.world_size))
    try:
        for rows in grid.rows:
            for dim in grid.dims:
                for dtype in grid.dtypes:
                    for tables in grid.tables:
                        w = torch.rand(rows, dim, generator=gen) * 0.2 - 0.1
                        lk = make_quant_lookup(be, [quantize(w, dtype)] * tables, dev)
                        for pf in grid.pooling_factors:
                            for batch in grid.batches:
                                out.append(_time_point(lk, rows, dim, dtype, tables, pf, batch,
                                                       grid, gen, dev))
    finally:
        torch.set_num_threads(threads)
    return out, be.value


def _time_point(lk: Any, rows: int, dim: int, dtype: DType, tables: int, pf: float, batch: int,
                grid: CalibrationGrid, gen: Any, dev: Any) -> LookupPoint:
    import torch

    lengths = torch.poisson(torch.full((tables * batch,), pf), generator=gen).long()
    ids = torch.randint(0, rows, (int(lengths.sum()),), generator=gen).to(dev)
    offsets = torch.zeros(lengths.numel() + 1, dtype=torch.long)
    offsets[1:] = torch.cumsum(lengths, 0)
    offsets = offsets.to(dev)
    f = []
    with torch.no_grad():
        for i in range(grid.warmup + grid.reps):
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
            t0 = time.perf_counter()
            lk.forward(ids, offsets)
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
            if i >= grid.warmup:
                f.append((time.perf_counter() - t0) * 1e3)
    return LookupPoint(rows=rows, dim=dim, pooling_factor=pf, batch=batch, dtype=dtype,
                       tables=tables, fwd_ms=statistics.median(f), bwd_ms=0.0)


def _point_plan(p: LookupPoint) -> tuple[Workload, Assignment]:
    tables = tuple(TableSpec(name=f"t{i}", num_embeddings=p.rows, embedding_dim=p.dim,
                             pooling_factor=p.pooling_factor, dtype=p.dtype)
                   for i in range(p.tables))
    w = Workload(name="cal-inference", tables=tables, batch_size=p.batch, mode=Mode.INFERENCE)
    a = Assignment(options=tuple(ShardingOption(
        table=t.name, sharding_type=ShardingType.TABLE_WISE, placement=_HBM,
        shards=(ShardSpec(row_offset=0, num_rows=t.num_embeddings, col_offset=0,
                          num_cols=t.embedding_dim),), candidate_ranks=(None,))
        for t in tables), ranks=tuple((0,) for _ in tables))
    return w, a


def _with_theta(base: DeviceProfile, theta: Sequence[float]) -> DeviceProfile:
    inf = {"lookup_bandwidth_efficiency": min(1.0, 1.0 / theta[0]),
           "kernel_overhead_us": max(0.0, theta[1]), "per_table_overhead_us": max(0.0, theta[2]),
           "dequant_ns_per_value": max(0.0, theta[3])}
    return dataclasses.replace(base, coefficients=dataclasses.replace(base.coefficients,
                                                                      inference=inf))


def predict_fwd_ms(points: Sequence[LookupPoint], topology: Topology, profile: DeviceProfile
                   ) -> np.ndarray:
    """The model's forward-compute ms of each point (a one-rank inference plan)."""
    from shardplan.estimators.cost_model import EmbeddingCostModel
    from shardplan.plans import rank_costs

    topo1 = _one_rank(topology)
    out = []
    for p in points:
        w, a = _point_plan(p)
        cm = EmbeddingCostModel(w, topo1, profiles=[profile])
        out.append(rank_costs(a, topo1, cm)[0].perf.as_tuple()[_FWD])
    return np.array(out)


def fit_inference(points: Sequence[LookupPoint], topology: Topology, base: DeviceProfile
                  ) -> tuple[dict[str, float], float]:
    """Fit :data:`INFERENCE_THETA` to ``points``.

    Returns:
        The profile's ``inference`` section, and the fit's median relative error.
    """
    y = np.array([p.fwd_ms for p in points])
    start = [1.0, 0.0, 0.0, 0.0]
    f0 = predict_fwd_ms(points, topology, _with_theta(base, start))
    cols = []
    for i in range(len(start)):
        step = list(start)
        step[i] += 1.0
        cols.append(predict_fwd_ms(points, topology, _with_theta(base, step)) - f0)
    a = np.stack(cols, 1)
    fixed = f0 - a @ np.array(start)
    sol, _, _ = _bounded_lstsq(a, y - fixed, 1.0 / np.maximum(np.abs(y), 1e-6), list(_LOWER),
                               start)
    fitted = _with_theta(base, list(sol)).coefficients.inference
    pred = predict_fwd_ms(points, topology, _with_theta(base, list(sol)))
    err = np.abs(pred - y) / np.maximum(np.abs(y), 1e-9)
    return {k: float(f"{v:.4g}") for k, v in fitted.items()}, float(np.median(err))


def calibrate_inference(out: str | Path, topology: Topology, base: DeviceProfile, *,
                        grid: CalibrationGrid = INFERENCE_GRID, backend: str = "auto",
                        device: str = "cpu", command: str = "shardplan calibrate --mode inference"
                        ) -> dict[str, Any]:
    """Benchmark the inference lookups, fit the ``inference`` coefficients, and write ``base``
    with that section (replacing any it had) to ``out``.

    Args:
        out: the profile YAML to write (may be ``base``'s own file).
        topology: its nominal bandwidths are what the efficiency refers to.
        base: the profile whose other coefficients (collectives, training kernels) are kept.
        grid: the benchmark grid.
        backend: lookup kernels (``auto``: FBGEMM where installed).
        device: ``cpu`` (or ``cuda``).
        command: recorded in the profile's notes.

    Returns:
        ``path``, ``inference`` (the section), ``median_rel_error``, ``points``, ``backend``.
    """
    g = dataclasses.replace(grid, world_size=max(topology.world_size, 1))
    points, be = bench_inference_lookups(g, backend=backend, device=device)
    section, err = fit_inference(points, topology, base)
    prof = dataclasses.replace(base, coefficients=dataclasses.replace(base.coefficients,
                                                                      inference=section))
    doc = profile_to_dict(prof)
    note = (f"inference section: `{command}` on {hardware_string(be)}, {be} inference kernels "
            f"(IntNBitTableBatchedEmbeddingBagsCodegen), {len(points)} forward points (rows "
            f"{list(g.rows)}, dims {list(g.dims)}, pooling {list(g.pooling_factors)}, batches "
            f"{list(g.batches)}, dtypes {[d.value for d in g.dtypes]}, tables {list(g.tables)}), "
            f"fit median rel. error {err:.1%}")
    old = [n for n in str(doc["provenance"].get("notes", "")).split("; ")
           if n and not n.startswith("inference section:")]
    doc["provenance"]["notes"] = "; ".join(old + [note])
    p = Path(out)
    p.parent.mkdir(parents=True, exist_ok=True)
    header = ""
    if p.exists():  # keep the file's header comment (what the training numbers are)
        lines = p.read_text(encoding="utf-8").splitlines()
        header = "".join(line + "\n" for line in lines if line.startswith("#"))
    header += ("# coefficients.inference: `shardplan calibrate --mode inference` (forward-only "
               "inference kernels; docs/cost-model.md)\n") if "coefficients.inference" not in \
        header else ""
    p.write_text(header + yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    return {"path": str(p), "inference": section, "median_rel_error": err,
            "points": len(points), "backend": be}
