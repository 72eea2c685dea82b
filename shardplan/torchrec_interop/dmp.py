"""Step time under TorchRec's own runtime: plans run by ``DistributedModelParallel`` on gloo.

:func:`time_under_dmp` starts one process per rank of a CPU topology, builds one DMP model per
plan (our plans exported with :func:`export_torchrec`, so TorchRec runs exactly our shards),
and times training steps (forward, ``sum`` loss, backward with TorchRec's fused optimizer, an
SGD step on replicated tables) with the plans interleaved step by step, so that noise on a
shared machine falls on every plan alike. A step is timed between two barriers, so its time is
the slowest rank's. The result per plan is the median after warm-up.

TorchRec 1.8 has no gloo path for row-wise sharding (its RW input dist needs a device
all-to-all of bucketized ids that gloo lacks; see tests/test_torchrec_dmp.py), nor one for
grid sharding: :func:`dmp_unsupported_reason` says why a plan cannot run, and such plans get
``None``.
"""

from __future__ import annotations

import os
import socket
import statistics
import time
import traceback
from typing import Any, Sequence

from shardplan.errors import SpecError
from shardplan.torchrec_interop.common import _torchrec
from shardplan.torchrec_interop.export import export_torchrec, infer_compute_device
from shardplan.types import DType, Optimizer, Plan, ShardingType, Workload

#: What DistributedModelParallel runs on gloo in TorchRec 1.8 (tests/test_torchrec_dmp.py runs
#: TW, CW, DP and TWRW; row-wise and grid need its device all-to-all path).
DMP_GLOO_SHARDING_TYPES = frozenset({ShardingType.DATA_PARALLEL, ShardingType.TABLE_WISE,
                                     ShardingType.COLUMN_WISE, ShardingType.TABLE_COLUMN_WISE,
                                     ShardingType.TABLE_ROW_WISE})
#: Weight types DMP trains on CPU here (an INT8 128-wide table failed with "Shard tensor size
#: does not match": [n, 136] built vs [n, 128] planned).
DMP_CPU_DTYPES = frozenset({DType.FP32, DType.FP16})
DEFAULT_TIMEOUT_S = 900.0  # the whole run; a hung gloo collective must not hang the caller


def dmp_unsupported_reason(plan: Plan) -> str | None:
    """Why TorchRec's DMP cannot run ``plan`` on gloo here, or None when it can."""
    if infer_compute_device(plan.topology) != "cpu":
        return f"{plan.topology.name} is not a CPU topology (DMP timing runs on gloo here)"
    bad = sorted({t.sharding_type.short for t in plan.tables
                  if t.sharding_type not in DMP_GLOO_SHARDING_TYPES})
    if bad:
        return (f"TorchRec 1.8's DMP has no gloo path for {'/'.join(bad)} "
                f"({sum(t.sharding_type.short in bad for t in plan.tables)} tables)")
    dtypes = {t.name: t.dtype for t in plan.workload.tables}
    quantized = sorted(n for n, d in dtypes.items() if d not in DMP_CPU_DTYPES)
    if quantized:
        kinds = "/".join(sorted({dtypes[n].value for n in quantized}))
        return (f"{len(quantized)} tables are {kinds}"
                "; TorchRec's CPU training kernel stores int8 rows with 8 extra bytes and DMP "
                "then fails its own shard-size check")
    return None


def _fused_optimizer(opt: Optimizer) -> Any:
    from fbgemm_gpu.split_embedding_configs import EmbOptimType

    return {Optimizer.SGD: EmbOptimType.EXACT_SGD, Optimizer.ADAGRAD: EmbOptimType.EXACT_ADAGRAD,
            Optimizer.ROWWISE_ADAGRAD: EmbOptimType.EXACT_ROWWISE_ADAGRAD,
            Optimizer.ADAM: EmbOptimType.ADAM}.get(opt, EmbOptimType.EXACT_ROWWISE_ADAGRAD)


def _batch(workload: Workload, world: int, rank: int, seed: int) -> Any:
    """This rank's KeyedJaggedTensor: batch_per_rank samples, round(pooling factor) ids per
    feature (at least 1), ids uniform over the table, deterministic per (seed, rank)."""
    import torch
    from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

    g = torch.Generator().manual_seed(seed * 1009 + rank)
    b = max(1, round(workload.batch_per_rank(world)))
    keys, lengths, values = [], [], []
    for t in workload.tables:
        per = max(1, round(t.pooling_factor / t.num_features))
        for f in t.features:
            keys.append(f)
            lengths.append(torch.full((b,), per, dtype=torch.int64))
            values.append(torch.randint(0, t.num_embeddings, (b * per,), generator=g))
    return KeyedJaggedTensor.from_lengths_sync(keys=keys, values=torch.cat(values),
                                               lengths=torch.cat(lengths))


def _worker(rank: int, world: int, port: int, workload: Workload, exports: list[dict],
            steps: int, warmup: int, seed: int, optimizer: Optimizer, q: Any) -> None:
    try:
        import torch
        import torch.distributed as dist
        from torchrec.distributed.embeddingbag import EmbeddingBagCollectionSharder
        from torchrec.distributed.model_parallel import DistributedModelParallel
        from torchrec.modules.embedding_modules import EmbeddingBagCollection

        from shardplan.torchrec_interop.export import sharding_plan_from_dict
        from shardplan.torchrec_interop.importing import workload_to_configs

        os.environ["MASTER_ADDR"] = "127.0.0.1"
        os.environ["MASTER_PORT"] = str(port)
        torch.set_num_threads(1)
        dist.init_process_group("gloo", rank=rank, world_size=world)
        torch.manual_seed(seed)
        fused = {"optimizer": _fused_optimizer(optimizer), "learning_rate": 0.01}
        models, dense_opts = [], []
        for e in exports:
            m = DistributedModelParallel(
                EmbeddingBagCollection(tables=workload_to_configs(workload),
                                       device=torch.device("meta")),
                device=torch.device("cpu"), plan=sharding_plan_from_dict(e),
                sharders=[EmbeddingBagCollectionSharder(fused_params=fused)])
            dense = [p for p in m.parameters()
                     if p.requires_grad and not hasattr(p, "local_shards")]
            models.append(m)
            dense_opts.append(torch.optim.SGD(dense, lr=0.01) if dense else None)
        kjt = _batch(workload, world, rank, seed)
        times: list[list[float]] = [[] for _ in models]
        for step in range(warmup + steps):
            for j, (m, opt) in enumerate(zip(models, dense_opts)):
                dist.barrier()
                start = time.perf_counter()
                out = m(kjt).wait()
                out.values().sum().backward()
                if opt is not None:
                    opt.step()
                    opt.zero_grad(set_to_none=True)
                dist.barrier()
                if step >= warmup:
                    times[j].append((time.perf_counter() - start) * 1000.0)
        q.put((rank, "ok", [statistics.median(t) for t in times]))
        dist.destroy_process_group()
    except Exception:  # the traceback goes to the caller instead of a hang
        q.put((rank, "error", traceback.format_exc()))


def _shape(plan: Plan) -> tuple[Any, ...]:
    """What the DMP run depends on: tables, features, batch (not constraints or names)."""
    w = plan.workload
    return (tuple((t.name, t.num_embeddings, t.embedding_dim, t.features, t.pooling_factor)
                  for t in w.tables), w.batch_per_rank(plan.topology.world_size))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def time_under_dmp(plans: Sequence[Plan], *, steps: int, warmup: int | None = None,
                   seed: int = 0, optimizer: Optimizer | None = None,
                   timeout_s: float = DEFAULT_TIMEOUT_S) -> list[float | None]:
    """Median step time (ms, the slowest rank's) of each plan under TorchRec's DMP on gloo.

    Args:
        plans: plans of the same tables and batch on one CPU topology (the first plan's
            workload gives the ids and the optimizer).
        steps: timed steps per plan, after warm-up.
        warmup: untimed steps first (default ``max(2, steps // 5)``).
        seed: the ids' seed.
        optimizer: TorchRec's fused optimizer for every table (default: the first plan's
            workload's default optimizer).
        timeout_s: give up (raise) after this long.

    Returns:
        One median per plan, in order; None for a plan DMP cannot run on gloo
        (:func:`dmp_unsupported_reason`).

    Raises:
        SpecError: no plans, plans of different problems, ``steps`` < 1, or a failed or
            timed-out run (with the rank's traceback).
        TorchRecMissingError: TorchRec is not installed.
    """
    _torchrec()
    import torch.multiprocessing as mp

    if steps < 1:
        raise SpecError(f"steps must be >= 1, not {steps}", key_path="steps")
    if not plans:
        return []
    first = plans[0]
    if any(_shape(p) != _shape(first) or p.topology != first.topology for p in plans):
        raise SpecError("time_under_dmp needs plans of the same tables and batch on one "
                        "topology", key_path="plans")
    runnable = [i for i, p in enumerate(plans) if dmp_unsupported_reason(p) is None]
    out: list[float | None] = [None] * len(plans)
    if not runnable:
        return out
    world = first.topology.world_size
    exports = [export_torchrec(plans[i], compute_device="cpu") for i in runnable]
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(["torch", "torchrec"])
    q = ctx.Queue()
    port = _free_port()
    warm = max(2, steps // 5) if warmup is None else warmup
    opt = first.workload.default_optimizer if optimizer is None else optimizer
    procs = [ctx.Process(target=_worker, args=(r, world, port, first.workload, exports, steps,
                                               warm, seed, opt, q))
             for r in range(world)]
    for p in procs:
        p.start()
    results: dict[int, tuple[str, Any]] = {}
    deadline = time.monotonic() + timeout_s
    try:
        for _ in range(world):
            rank, status, payload = q.get(timeout=max(1.0, deadline - time.monotonic()))
            results[rank] = (status, payload)
            if status != "ok":
                break
    except Exception as exc:  # queue.Empty: a rank hung or died
        raise SpecError(f"the DMP timing run did not finish in {timeout_s:.0f} s "
                        f"({type(exc).__name__})", key_path="dmp") from None
    finally:
        for p in procs:
            p.join(timeout=30)
            if p.is_alive():
                p.terminate()
    errors = {r: v for r, (s, v) in results.items() if s != "ok"}
    if errors:
        rank, tb = sorted(errors.items())[0]
        raise SpecError(f"the DMP timing run failed on rank {rank}:\n{tb}", key_path="dmp")
    medians = results[0][1]  # barriers make every rank's step the slowest rank's
    for i, m in zip(runnable, medians):
        out[i] = float(m)
    return out
