"""What each rank does for ``validate`` and ``profile`` (called inside an initialised process
group; see :mod:`shardplan.executor.launch` for starting the processes)."""

from __future__ import annotations

import resource
import statistics
import warnings
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import torch
import torch.distributed as dist

from shardplan.executor.batches import make_batch
from shardplan.executor.clock import ClockKind, make_clock
from shardplan.executor.kernels import Backend, OptimizerConfig, choose_backend
from shardplan.executor.layout import Layout, OutputKind, build_layout
from shardplan.executor.inference import InferenceEmbeddings, quantized_tables
from shardplan.executor.quant import dequantize
from shardplan.executor.reference import Reference
from shardplan.executor.sharded import DEFAULT_BUCKET_BYTES, ShardedEmbeddings, make_comm
from shardplan.plans import plan_from_json
from shardplan.types import DType, Plan, Stage

__all__ = ["JobKind", "Job", "RTOL", "ATOL", "INFERENCE_TOLERANCE", "inference_tolerance",
           "run_job"]

# Tolerance of the comparison with the reference (fp32; sums in a different order).
RTOL = 1e-4
ATOL = 1e-5
#: Inference: (rtol, atol) per weight dtype of the comparison of pooled outputs with the
#: unsharded *quantised* model. Both hold the same stored values (``quant``), so what differs
#: is the order of the fp32 sums, and for int8/int4 FBGEMM's kernel evaluating
#: ``q * scale + bias`` with fused multiply-adds: measured below 2e-7 on pooled sums of about
#: 1 (tests/test_inference.py); the bounds leave 50x margin. (The quantisation error itself,
#: against the fp32 table, is up to half a step per value: scale / 2, about 4e-4 for int8 and
#: 7e-3 for int4 on tables in +-0.1; validation does not compare against that.)
INFERENCE_TOLERANCE: dict[DType, tuple[float, float]] = {
    DType.FP32: (1e-4, 1e-5),
    DType.FP16: (1e-4, 1e-5),
    DType.INT8: (1e-4, 1e-5),
    DType.INT4: (1e-4, 1e-5),
}


def inference_tolerance(dtype: DType) -> tuple[float, float]:
    """(rtol, atol) of an inference table of ``dtype`` (see ``INFERENCE_TOLERANCE``)."""
    return INFERENCE_TOLERANCE[dtype]


class JobKind(StrEnum):
    VALIDATE = "validate"
    PROFILE = "profile"


@dataclass(frozen=True, kw_only=True, slots=True)
class Job:
    """One run of one plan on every rank.

    Attributes:
        kind: validate against the reference, or profile stage times.
        plan_json: the plan, as written by ``plan_to_json`` (picklable for any start method).
        steps: steps compared (validate) or timed (profile).
        warmup: untimed steps before a profile.
        seed: seeds weights, batches and gradients.
        backend: kernel backend: ``fbgemm``, ``torch`` or ``auto``.
        pipelined: run the next batch's input dist during each step (TorchRec's
            ``TrainPipelineSparseDist``); ``False``: every stage in turn.
        clock: ``virtual`` (one emulated device per rank: compute one rank at a time, each
            collective starting when its last participant arrives; for machines with fewer
            cores than ranks) or ``wall`` (real time; ``measure_waits`` adds a barrier before
            each collective to see the waits).
        measure_waits: with the wall clock, time waits with a barrier before each collective.
        bucket_bytes: DDP bucket size of the data-parallel gradients.
        corrupt: (table, rank): add 0.01 to that rank's copy of the table after loading (to
            test that validation catches and names a mismatch).
    """

    kind: JobKind
    plan_json: str
    steps: int = 2
    warmup: int = 2
    seed: int = 0
    backend: str = "auto"
    pipelined: bool = True
    clock: ClockKind = ClockKind.VIRTUAL
    measure_waits: bool = False
    bucket_bytes: int = DEFAULT_BUCKET_BYTES
    corrupt: tuple[str, int] | None = None


def _close(a: torch.Tensor, b: torch.Tensor, rtol: float = RTOL, atol: float = ATOL
           ) -> tuple[bool, float]:
    a, b = a.detach().float().cpu(), b.detach().float().cpu()
    if a.shape != b.shape:
        return False, float("inf")
    if a.numel() == 0:
        return True, 0.0
    err = (a - b).abs()
    return bool((err <= atol + rtol * b.abs()).all()), float(err.max())


def _producers(layout: Layout, table_index: int, col: int) -> list[tuple[int, int]]:
    """(shard index, rank) of the shards that produce column ``col`` of a table's output."""
    out = []
    for rank_slots in layout.slots:
        for s in rank_slots:
            if s.table_index == table_index and s.col_offset <= col < s.col_offset + s.num_cols:
                out.append((s.shard_index, s.rank))
    return sorted(out)


def _corrupt(model: ShardedEmbeddings, table: str) -> None:
    with torch.no_grad():
        for s, w in zip(model.slots, model.weights()):
            if s.table == table:
                w.add_(0.01)
        for d, w in zip(model.layout.dp_tables, model.dp_weights):
            if d.table == table:
                w.add_(0.01)


def _sharded_model(plan: Plan, layout: Layout, job: Job, rank: int, dev: torch.device,
                   pg_backend: str) -> tuple[OptimizerConfig, Backend, Any]:
    """This rank's sharded tables, on the chosen lookup backend, with their communicator
    (an :class:`InferenceEmbeddings` for inference plans)."""
    backend = choose_backend(job.backend, dev)
    cfg = OptimizerConfig(optimizer=layout.optimizer)
    comm = make_comm(layout, rank, dev, pg_backend, pipelined=job.pipelined,
                     replicas=plan.replicas)
    rows = [t.num_embeddings for t in plan.workload.tables]
    procs = layout.world_size * plan.replicas
    clock = make_clock(job.clock, rank, procs, dev, measure_waits=job.measure_waits)
    if layout.inference:
        corrupt = job.corrupt[0] if job.corrupt is not None and job.corrupt[1] == rank else None
        return cfg, backend, InferenceEmbeddings(layout, comm, backend, job.seed, rows,
                                                 clock=clock, pipelined=job.pipelined,
                                                 corrupt=corrupt)
    sync = _sync_steps(plan)
    return cfg, backend, ShardedEmbeddings(layout, comm, backend, cfg, job.seed, rows,
                                           clock=clock, pipelined=job.pipelined,
                                           bucket_bytes=job.bucket_bytes, sync_steps=sync)


def _sync_steps(plan: Plan) -> int:
    """A 2D plan's replica sync period, from its recorded cost-model options (default 1)."""
    opts = dict(plan.provenance.cost_model.get("options", {}))
    return int(opts.get("replica_sync_steps", 1))


def group_batch(plan: Plan, layout: Layout, seed: int, step: int, replica: int) -> list:
    """The global batch of one sharding group at ``step`` (2D: each group trains its own
    samples; group 0's are those of an ordinary plan)."""
    return make_batch(plan.workload, seed + 7919 * replica, step, layout.batch_global)


def _validate_inference(plan: Plan, layout: Layout, job: Job, rank: int, dev: torch.device,
                        pg_backend: str) -> dict[str, Any]:
    """Pooled outputs of every step against the unsharded quantised model, per dtype's
    tolerance; the local tables' bytes against the estimate."""
    _, backend, model = _sharded_model(plan, layout, job, rank, dev, pg_backend)
    rows = [t.num_embeddings for t in plan.workload.tables]
    ref = {ti: dequantize(q) for ti, q in quantized_tables(layout, job.seed, rows).items()}
    B = layout.batch_per_rank
    mismatches: list[dict[str, Any]] = []
    worst = {"output": 0.0}
    batches = [group_batch(plan, layout, job.seed, step, 0) for step in range(job.steps)]
    for step in range(job.steps):
        batch = batches[step]
        got = model.step(batch, batches[step + 1] if step + 1 < job.steps else None)
        for ti, name in enumerate(layout.table_names):
            tb = batch[ti]
            want = torch.nn.functional.embedding_bag(tb.ids, ref[ti], tb.offsets[:-1], mode="sum")
            exp = want[rank * B:(rank + 1) * B]
            rtol, atol = inference_tolerance(layout.dtypes[ti])
            ok, err = _close(got.pooled[ti], exp, rtol, atol)
            worst["output"] = max(worst["output"], err)
            if not ok:
                diff = (got.pooled[ti].cpu() - exp).abs()
                col = int(diff.max(0).values.argmax()) if diff.numel() else 0
                prod = _producers(layout, ti, col)
                shard = (", ".join(f"{i} (rank {q})" for i, q in prod) if prod
                         else "data-parallel replica")
                mismatches.append({"what": "output", "step": step, "table": name,
                                   "shard": shard, "rank": rank, "max_abs_error": err,
                                   "dtype": layout.dtypes[ti].value})
    model.finish()
    est = plan.ranks[rank].memory_bytes
    return {
        "rank": rank, "backend": backend.value, "steps": job.steps, "mode": "inference",
        "pipelined": job.pipelined, "groups": [_group_name(g) for g in layout.groups],
        "dp_buckets": 0, "mismatches": mismatches, "max_abs_error": worst,
        "num_slots": len(model.slots), "num_dp_tables": len(layout.dp_tables),
        "kinds": sorted({s.kind.value for s in model.slots}),
        "weight_bytes": model.weight_bytes, "param_bytes": model.param_bytes,
        "peak_buffer_bytes": model.peak_buffer_bytes,
        "measured_bytes": model.param_bytes + model.peak_buffer_bytes,
        "estimated_bytes": est.hbm + est.ddr,
        "max_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
    }


def _validate(plan: Plan, layout: Layout, job: Job, rank: int, dev: torch.device,
              pg_backend: str) -> dict[str, Any]:
    if layout.inference:
        return _validate_inference(plan, layout, job, rank, dev, pg_backend)
    cfg, backend, model = _sharded_model(plan, layout, job, rank, dev, pg_backend)
    ref = Reference(plan.workload, layout, cfg, job.seed)
    if job.corrupt is not None and job.corrupt[1] == rank:
        _corrupt(model, job.corrupt[0])
    B = layout.batch_per_rank
    R, g, local = plan.replicas, model.comm.replica, model.comm.rank
    sync = _sync_steps(plan)
    mismatches: list[dict[str, Any]] = []
    worst = {"output": 0.0, "gradient": 0.0, "weight": 0.0, "state": 0.0}

    def record(what: str, step: int | None, table: str, shard: str, ok: bool, err: float,
               **extra: Any) -> None:
        worst[what] = max(worst[what], err)
        if not ok:
            mismatches.append({"what": what, "step": step, "table": table, "shard": shard,
                               "rank": rank, "max_abs_error": err, **extra})

    batches = [[group_batch(plan, layout, job.seed, step, q) for q in range(R)]
               for step in range(job.steps)]
    for step in range(job.steps):
        batch = batches[step][g]
        got = model.step(batch, batches[step + 1][g] if step + 1 < job.steps else None)
        want = (ref.step_replicas(batches[step], sync=(step + 1) % sync == 0) if R > 1
                else [ref.step(batch)])
        want = want[g]
        for ti, name in enumerate(layout.table_names):
            exp = want[ti][local * B:(local + 1) * B]
            ok, err = _close(got.pooled[ti], exp)
            if not ok:
                diff = (got.pooled[ti].cpu() - exp).abs()
                col = int(diff.max(0).values.argmax()) if diff.numel() else 0
                prod = _producers(layout, ti, col)
                shard = (", ".join(f"{i} (rank {q})" for i, q in prod) if prod
                         else "data-parallel replica")
            else:
                shard = "-"
            record("output", step, name, shard, ok, err)
        for k, s in enumerate(model.slots):
            exp = batch[s.table_index].grad[:, s.col_offset:s.col_offset + s.num_cols]
            ok, err = _close(got.slot_grads[k], exp)
            record("gradient", step, s.table, str(s.shard_index), ok, err)
    model.finish()
    ref.select_replica(g)  # 2D, last step not a sync: this group's own weights
    for s, w, st in zip(model.slots, model.weights(), model.states()):
        exp = ref.weights[s.table_index][s.row_offset:s.row_offset + s.num_rows,
                                         s.col_offset:s.col_offset + s.num_cols]
        ok, err = _close(w, exp)
        record("weight", None, s.table, str(s.shard_index), ok, err)
        if st is not None:
            ok, err = _close(st, ref.state_of(s.table_index, s.row_offset, s.num_rows,
                                              s.col_offset))
            record("state", None, s.table, str(s.shard_index), ok, err)
    for d, w, st in zip(layout.dp_tables, model.dp_weights, model.dp_states):
        ok, err = _close(w, ref.weights[d.table_index])
        record("weight", None, d.table, f"replica {rank}", ok, err)
        if st is not None:
            ok, err = _close(st, ref.state_of(d.table_index, 0, d.num_rows, 0))
            record("state", None, d.table, f"replica {rank}", ok, err)
    est = plan.ranks[local].memory_bytes
    return {
        "rank": rank, "backend": backend.value, "steps": job.steps,
        "pipelined": job.pipelined, "groups": [_group_name(g) for g in layout.groups],
        "dp_buckets": len(model.buckets),
        "mismatches": mismatches, "max_abs_error": worst,
        "num_slots": len(model.slots), "num_dp_tables": len(layout.dp_tables),
        "kinds": sorted({s.kind.value for s in model.slots}),
        "param_bytes": model.param_bytes, "peak_buffer_bytes": model.peak_buffer_bytes,
        "measured_bytes": model.param_bytes + model.peak_buffer_bytes,
        "estimated_bytes": est.hbm + est.ddr,
        "max_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
    }


def _profile(plan: Plan, layout: Layout, job: Job, rank: int, dev: torch.device,
             pg_backend: str) -> dict[str, Any]:
    cfg, backend, model = _sharded_model(plan, layout, job, rank, dev, pg_backend)
    busy: dict[Stage, list[float]] = {s: [] for s in Stage}
    wait: dict[Stage, list[float]] = {s: [] for s in Stage}
    steps_ms: list[float] = []
    n = job.warmup + job.steps
    batches = [group_batch(plan, layout, job.seed, i, model.comm.replica)
               for i in range(min(n, 4))]
    clock = model.clock
    for i in range(n):
        clock.reset()
        clock.step_begin()
        model.step(batches[i % len(batches)], batches[(i + 1) % len(batches)] if i + 1 < n else None)
        if i >= job.warmup:
            steps_ms.append(clock.step_ms())
            for s in Stage:
                busy[s].append(clock.busy[s])
                wait[s].append(clock.waited[s])
    model.finish()
    med_busy = {s.value: statistics.median(v) for s, v in busy.items()}
    med_wait = {s.value: statistics.median(v) for s, v in wait.items()}
    local = model.comm.rank
    est = plan.ranks[local].estimated_ms
    return {
        "rank": rank, "backend": backend.value, "steps": job.steps, "warmup": job.warmup,
        "mode": layout.mode.value, "pipelined": job.pipelined, "clock": ClockKind(job.clock).value,
        "measured_ms": med_busy, "measured_total_ms": sum(med_busy.values()),
        "waited_ms": med_wait, "step_ms": statistics.median(steps_ms),
        "estimated_ms": est.as_dict(), "estimated_total_ms": plan.ranks[local].total_ms,
        "estimated_step_ms": plan.summary.makespan_ms,
        "num_slots": len(model.slots), "groups": [_group_name(g) for g in layout.groups],
        "kinds": sorted({s.kind.value for s in model.slots if s.kind is not OutputKind.COLUMNS}),
    }


def run_job(job: Job, rank: int, dev: torch.device, pg_backend: str) -> dict[str, Any]:
    """Run ``job`` on this rank. Every rank calls it with the same job, in the same order."""
    plan = plan_from_json(job.plan_json)
    layout = build_layout(plan, dist.get_world_size())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if job.kind is JobKind.VALIDATE:
            return _validate(plan, layout, job, rank, dev, pg_backend)
        return _profile(plan, layout, job, rank, dev, pg_backend)


def _group_name(key: Any) -> str:
    """A sharding group as reports name it: its type, and for a row-wise subset its ranks."""
    name = key.sharding_type.value
    return name if key.ranks is None else f"{name}@{','.join(map(str, key.ranks))}"
