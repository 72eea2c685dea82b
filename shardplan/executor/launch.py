"""Starting the ranks: N local processes (gloo on CPU), or one process per rank under
``torchrun`` (gloo, or NCCL where CUDA is present).

Local::

    results = run_local([job, ...], world_size=4)      # one result list per job, one dict per rank

Several hosts (each host runs this; rank 0 writes the JSON)::

    torchrun --nnodes 2 --nproc-per-node 8 --rdzv-endpoint HOST:29500 \\
        -m shardplan.executor.launch validate plan.json --steps 2 --out result.json
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import sys
import tempfile
from datetime import timedelta
from pathlib import Path
from typing import Any, Sequence

from shardplan.errors import ExecutionError, ShardplanError

__all__ = ["ExecutionError", "run_local", "main"]

PG_TIMEOUT_S = 300  # a hung collective fails after this instead of hanging forever


def _torch_threads(world_size: int) -> int:
    return max(1, (os.cpu_count() or 1) // world_size)


def _worker(rank: int, world_size: int, store_dir: str, jobs: Sequence[Any], threads: int) -> None:
    import torch
    import torch.distributed as dist

    from shardplan.executor.runner import run_job

    torch.set_num_threads(threads)
    store = dist.FileStore(os.path.join(store_dir, "store"), world_size)
    dist.init_process_group("gloo", store=store, rank=rank, world_size=world_size,
                            timeout=timedelta(seconds=PG_TIMEOUT_S))
    try:
        results = []
        for job in jobs:
            try:
                results.append(run_job(job, rank, torch.device("cpu"), "gloo"))
            except ShardplanError as exc:
                results.append({"rank": rank, "error": str(exc)})
            dist.barrier()
        gathered: list[Any] | None = [None] * world_size if rank == 0 else None
        dist.gather_object(results, gathered, dst=0)
        if rank == 0:
            with open(os.path.join(store_dir, "results.pkl"), "wb") as fh:
                pickle.dump(gathered, fh)
    finally:
        dist.destroy_process_group()


# What the fork server imports once, so that each rank forks with torch already loaded.
FORKSERVER_PRELOAD = ["torch", "torch.distributed", "fbgemm_gpu", "shardplan.executor.launch",
                      "shardplan.executor.runner"]


def default_start_method() -> str:
    """``forkserver`` on Linux, ``spawn`` elsewhere.

    A plain ``fork`` of a process that has already run torch (OpenMP threads, gloo threads)
    can hang the child; this happened when a test process forked ranks after earlier tests.
    The fork server is a fresh process that imports torch once (``FORKSERVER_PRELOAD``) and
    forks every rank from that clean state: as fast as ``fork`` after the first start, and safe.
    """
    import multiprocessing

    if not sys.platform.startswith("linux"):
        return "spawn"
    multiprocessing.get_context("forkserver").set_forkserver_preload(FORKSERVER_PRELOAD)
    return "forkserver"


def run_local(jobs: Sequence[Any], world_size: int, *, start_method: str | None = None,
              threads: int | None = None) -> list[list[dict[str, Any]]]:
    """Run ``jobs`` (``runner.Job``) one after another on ``world_size`` local gloo processes.

    Args:
        jobs: what to run; every rank runs every job.
        world_size: processes to start.
        start_method: ``forkserver`` (default on Linux, see ``default_start_method``), ``fork``
            or ``spawn``.
        threads: torch threads per process (default: cores / world size, at least 1).

    Returns:
        Per job, one result dict per rank (rank order).

    Raises:
        ExecutionError: a process died; the message carries its error.
        ShardplanError: a job's plan was rejected (raised from the first rank's message).
    """
    import torch.multiprocessing as mp

    method = start_method or default_start_method()
    with tempfile.TemporaryDirectory(prefix="shardplan-exec-") as tmp:
        try:
            mp.start_processes(_worker, args=(world_size, tmp, list(jobs),
                                              threads or _torch_threads(world_size)),
                               nprocs=world_size, start_method=method, join=True)
        except mp.ProcessRaisedException as exc:
            msg = str(exc).strip().splitlines()
            raise ExecutionError("a rank failed: " + (msg[-1] if msg else "unknown error")) from None
        except mp.ProcessExitedException as exc:
            raise ExecutionError(f"a rank exited early: {exc}") from None
        with open(os.path.join(tmp, "results.pkl"), "rb") as fh:
            per_rank = pickle.load(fh)
    out = [[per_rank[r][j] for r in range(world_size)] for j in range(len(jobs))]
    for res in out:
        errs = [r["error"] for r in res if "error" in r]
        if errs:
            from shardplan.errors import PlanError

            raise PlanError(errs[0])
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """torchrun entry point: ``python -m shardplan.executor.launch {validate,profile} PLAN``."""
    import torch
    import torch.distributed as dist

    from shardplan.executor.runner import Job, JobKind, run_job
    from shardplan.plans import load_plan, plan_to_json

    ap = argparse.ArgumentParser(prog="python -m shardplan.executor.launch")
    ap.add_argument("kind", choices=[k.value for k in JobKind])
    ap.add_argument("plan")
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--backend", default="auto")
    ap.add_argument("--pipeline", action=argparse.BooleanOptionalAction, default=True,
                    help="next batch's input dist during each step (default) or serial stages")
    ap.add_argument("--clock", choices=["wall", "virtual"], default="wall",
                    help="profile timing: real time (default under torchrun) or emulated devices")
    ap.add_argument("--out", default="executor-result.json")
    a = ap.parse_args(argv)
    cuda = torch.cuda.is_available()
    if cuda:
        dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(dev)
    else:
        dev = torch.device("cpu")
    pg = "nccl" if cuda else "gloo"
    dist.init_process_group(pg, timeout=timedelta(seconds=PG_TIMEOUT_S))
    rank = dist.get_rank()
    job = Job(kind=JobKind(a.kind), plan_json=plan_to_json(load_plan(a.plan)), steps=a.steps,
              warmup=a.warmup, backend=a.backend, pipelined=a.pipeline, clock=a.clock)
    res = run_job(job, rank, dev, pg)
    gathered: list[Any] | None = [None] * dist.get_world_size() if rank == 0 else None
    dist.gather_object(res, gathered, dst=0)
    if rank == 0:
        Path(a.out).write_text(json.dumps(gathered, indent=2, sort_keys=True) + "\n")
        bad = sum(len(r.get("mismatches", [])) for r in gathered)
        print(f"wrote {a.out}; {bad} mismatches" if a.kind == "validate" else f"wrote {a.out}")
    dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
