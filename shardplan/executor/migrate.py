"""Executor check of a migration: train on the old plan, move the shards as the diff says
(weights and optimizer state), continue on the new plan, and compare with the unsharded
reference that never moved. Nothing may be lost.

On every rank (gloo processes, one world for both plans):

1. build the old plan's sharded tables and train ``steps_before`` steps;
2. build the new plan's sharded tables and fill every one of its shards from the old ones:
   the part already on the rank is copied locally, the rest arrives point to point
   (``dist.send``/``dist.recv``, one message per transfer of the diff, weights and row-wise
   optimizer state together), in the diff's order on every rank (so no two ranks wait on
   each other in a cycle); every cell of every new shard must be filled exactly once;
3. compare the new shards with the reference's weights and optimizer state (trained the same
   ``steps_before`` steps), train ``steps_after`` more steps comparing pooled outputs, and
   compare weights and state again at the end.

The transfers are :class:`shardplan.replanning.Migration`'s (``diff_plans(old, new)``), passed
in as plain tuples. The row-wise Adagrad state lives per column block (FBGEMM and TorchRec keep
one per column shard), so under that optimizer a table's column blocks must be the same in
both plans (moving rows between ranks is fine; re-splitting columns would change what the
state means).
"""

from __future__ import annotations

import os
import pickle
import tempfile
import warnings
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from shardplan.errors import ExecutionError, PlanError, ShardplanError
from shardplan.executor.launch import PG_TIMEOUT_S, default_start_method
from shardplan.executor.layout import build_layout
from shardplan.plans import plan_from_json, plan_to_json
from shardplan.types import Optimizer, Plan

__all__ = ["MigrationCheck", "check_migration"]

#: Tolerance of every comparison (fp32 sums in another order), as ``validate`` uses.
RTOL = 1e-4
ATOL = 1e-5

# (table, row_offset, num_rows, col_offset, num_cols, source rank, destination rank)
TransferTuple = tuple[str, int, int, int, int, int, int]


@dataclass(frozen=True, kw_only=True, slots=True)
class _Job:
    old_json: str
    new_json: str
    transfers: tuple[TransferTuple, ...]
    steps_before: int
    steps_after: int
    seed: int
    backend: str


@dataclass(frozen=True, kw_only=True, slots=True)
class MigrationCheck:
    """What the check found.

    Attributes:
        ranks: per rank: pieces copied locally and received, bytes sent and received, cells
            filled, mismatches (what, step, table, max abs error), worst errors.
        transfers: messages sent in all.
    """

    ranks: tuple[dict[str, Any], ...]
    transfers: int
    mismatches: tuple[dict[str, Any], ...] = field(default=())

    @property
    def passed(self) -> bool:
        return not self.mismatches


def check_migration(old: Plan, new: Plan, *, steps_before: int = 2, steps_after: int = 2,
                    seed: int = 0, backend: str = "auto", drop_transfers: int = 0
                    ) -> MigrationCheck:
    """Run the check (see the module docstring) on ``old.topology.world_size`` local gloo
    processes.

    Args:
        old: the plan trained first.
        new: the plan moved to (same topology and tables).
        steps_before: steps on the old plan before the move.
        steps_after: steps on the new plan after it.
        seed: weights and batches.
        backend: lookup kernels: ``fbgemm``, ``torch`` or ``auto``.
        drop_transfers: leave out the last this many transfers (to see the check catch lost
            state; 0 for a real check).

    Returns:
        The per-rank findings; ``passed`` when every cell arrived once and everything matched.

    Raises:
        PlanError: the plans differ in topology or tables, or re-split a table's columns
            under row-wise Adagrad.
        ExecutionError: a rank failed.
    """
    from shardplan.replanning.diff import diff_plans

    if old.topology != new.topology:
        raise PlanError("the executor check runs both plans in one world: the plans' "
                        "topologies differ", key_path="topology")
    if old.workload != new.workload:
        raise PlanError("the executor check needs the same tables in both plans",
                        key_path="workload")
    world = old.topology.world_size
    lay0, lay1 = build_layout(old, world), build_layout(new, world)
    if lay0.optimizer is Optimizer.ROWWISE_ADAGRAD:
        bad = [n for n, a, b in zip(lay0.table_names, lay0.col_blocks, lay1.col_blocks) if a != b]
        if bad:
            raise PlanError("row-wise Adagrad keeps its state per column block; these tables "
                            f"are split into other columns in the new plan: {', '.join(bad)}",
                            key_path="tables")
    mig = diff_plans(old, new, lost_hosts=())
    if mig.restored_bytes:
        raise PlanError("the executor check has no checkpoint to restore from",
                        key_path="topology")
    transfers = tuple((t.table, t.row_offset, t.num_rows, t.col_offset, t.num_cols,
                       int(t.source), t.dest) for t in mig.transfers)
    transfers = transfers[:len(transfers) - max(0, drop_transfers)]
    job = _Job(old_json=plan_to_json(old), new_json=plan_to_json(new), transfers=transfers,
               steps_before=steps_before, steps_after=steps_after, seed=seed, backend=backend)
    results = _run_local(job, world)
    mism = tuple(m for r in results for m in r["mismatches"])
    return MigrationCheck(ranks=tuple(results), transfers=len(transfers), mismatches=mism)


def _run_local(job: _Job, world: int) -> list[dict[str, Any]]:
    import torch.multiprocessing as mp

    threads = max(1, (os.cpu_count() or 1) // world)
    with tempfile.TemporaryDirectory(prefix="shardplan-migrate-") as tmp:
        try:
            mp.start_processes(_worker, args=(world, tmp, job, threads), nprocs=world,
                               start_method=default_start_method(), join=True)
        except mp.ProcessRaisedException as exc:
            msg = str(exc).strip().splitlines()
            raise ExecutionError("a rank failed: " + (msg[-1] if msg else "unknown")) from None
        except mp.ProcessExitedException as exc:
            raise ExecutionError(f"a rank exited early: {exc}") from None
        with open(os.path.join(tmp, "results.pkl"), "rb") as fh:
            out = pickle.load(fh)
    errs = [r["error"] for r in out if "error" in r]
    if errs:
        raise ExecutionError(errs[0])
    return out


def _worker(rank: int, world: int, store_dir: str, job: _Job, threads: int) -> None:
    import torch
    import torch.distributed as dist

    torch.set_num_threads(threads)
    store = dist.FileStore(os.path.join(store_dir, "store"), world)
    dist.init_process_group("gloo", store=store, rank=rank, world_size=world,
                            timeout=timedelta(seconds=PG_TIMEOUT_S))
    try:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                res = _run(job, rank, world)
        except ShardplanError as exc:
            res = {"rank": rank, "error": str(exc)}
        gathered: list[Any] | None = [None] * world if rank == 0 else None
        dist.gather_object(res, gathered, dst=0)
        if rank == 0:
            with open(os.path.join(store_dir, "results.pkl"), "wb") as fh:
                pickle.dump(gathered, fh)
    finally:
        dist.destroy_process_group()


def _run(job: _Job, rank: int, world: int) -> dict[str, Any]:
    import torch
    import torch.distributed as dist

    from shardplan.executor.batches import make_batch
    from shardplan.executor.kernels import OptimizerConfig, choose_backend
    from shardplan.executor.reference import Reference
    from shardplan.executor.sharded import ShardedEmbeddings, make_comm

    dev = torch.device("cpu")
    old, new = plan_from_json(job.old_json), plan_from_json(job.new_json)
    lay0, lay1 = build_layout(old, world), build_layout(new, world)
    backend = choose_backend(job.backend, dev)
    cfg = OptimizerConfig(optimizer=lay0.optimizer)
    rows = [t.num_embeddings for t in old.workload.tables]

    def model(plan, lay):
        comm = make_comm(lay, rank, dev, "gloo", pipelined=False, replicas=1)
        return ShardedEmbeddings(lay, comm, backend, cfg, job.seed, rows, pipelined=False)

    ref = Reference(old.workload, lay0, cfg, job.seed)
    n = job.steps_before + job.steps_after
    batches = [make_batch(old.workload, job.seed, s, lay0.batch_global) for s in range(n)]
    m0 = model(old, lay0)
    for s in range(job.steps_before):
        m0.step(batches[s])
        ref.step(batches[s])
    m0.finish()
    m1 = model(new, lay1)
    stats = _move(job, rank, lay0, lay1, m0, m1, dist, torch)
    mismatches: list[dict[str, Any]] = []
    worst = {"moved_weight": 0.0, "moved_state": 0.0, "output": 0.0, "weight": 0.0,
             "state": 0.0}
    if stats["unfilled"] or stats["twice"]:
        mismatches.append({"what": "coverage", "step": None, "table": ", ".join(
            stats["gaps"][:5]), "rank": rank, "max_abs_error": float("inf")})
    _compare_state(m1, lay1, ref, rank, "moved_", mismatches, worst, torch)
    B = lay1.batch_per_rank
    for s in range(job.steps_before, n):
        got = m1.step(batches[s])
        want = ref.step(batches[s])
        for ti, name in enumerate(lay1.table_names):
            ok, err = _close(got.pooled[ti], want[ti][rank * B:(rank + 1) * B], torch)
            worst["output"] = max(worst["output"], err)
            if not ok:
                mismatches.append({"what": "output", "step": s, "table": name, "rank": rank,
                                   "max_abs_error": err})
    m1.finish()
    _compare_state(m1, lay1, ref, rank, "", mismatches, worst, torch)
    return {"rank": rank, "backend": backend.value, **{k: v for k, v in stats.items()
                                                         if k != "gaps"},
            "mismatches": mismatches, "max_abs_error": worst}


def _close(a, b, torch) -> tuple[bool, float]:
    a, b = a.detach().float().cpu(), b.detach().float().cpu()
    if a.shape != b.shape:
        return False, float("inf")
    if a.numel() == 0:
        return True, 0.0
    err = (a - b).abs()
    return bool((err <= ATOL + RTOL * b.abs()).all()), float(err.max())


def _compare_state(m, lay, ref, rank: int, prefix: str, mismatches: list, worst: dict,
                   torch) -> None:
    items = [(s.table, s.table_index, s.row_offset, s.num_rows, s.col_offset, s.num_cols, w, st)
             for s, w, st in zip(m.slots, m.weights(), m.states())]
    items += [(d.table, d.table_index, 0, d.num_rows, 0, d.dim, w, st)
              for d, w, st in zip(lay.dp_tables, m.dp_weights, m.dp_states)]
    for table, ti, r0, nr, c0, nc, w, st in items:
        exp = ref.weights[ti][r0:r0 + nr, c0:c0 + nc]
        ok, err = _close(w, exp, torch)
        worst[prefix + "weight"] = max(worst[prefix + "weight"], err)
        if not ok:
            mismatches.append({"what": prefix + "weight", "step": None, "table": table,
                               "rank": rank, "max_abs_error": err})
        if st is not None:
            ok, err = _close(st, ref.state_of(ti, r0, nr, c0), torch)
            worst[prefix + "state"] = max(worst[prefix + "state"], err)
            if not ok:
                mismatches.append({"what": prefix + "state", "step": None, "table": table,
                                   "rank": rank, "max_abs_error": err})


def _pieces(m, lay):
    """This rank's shards of a model: (table, row0, rows, col0, cols, weight, state)."""
    out = [(s.table, s.row_offset, s.num_rows, s.col_offset, s.num_cols, w, st)
           for s, w, st in zip(m.slots, m.weights(), m.states())]
    out += [(d.table, 0, d.num_rows, 0, d.dim, w.detach(), st)
            for d, w, st in zip(lay.dp_tables, m.dp_weights, m.dp_states)]
    return out


def _find(pieces, table: str, r0: int, nr: int, c0: int, nc: int):
    for p in pieces:
        t, pr, pn, pc, pw = p[:5]
        if t == table and pr <= r0 and r0 + nr <= pr + pn and pc <= c0 and c0 + nc <= pc + pw:
            return p
    return None


def _move(job: _Job, rank: int, lay0, lay1, m0, m1, dist, torch) -> dict[str, Any]:
    """Fill the new model's shards on this rank: local copies, then the transfers in order."""
    held = _pieces(m0, lay0)
    targets = _pieces(m1, lay1)
    filled = [torch.zeros(p[2], p[4], dtype=torch.int32) for p in targets]
    has_state = lay0.optimizer is Optimizer.ROWWISE_ADAGRAD
    stats = {"local_pieces": 0, "received_pieces": 0, "sent_bytes": 0, "received_bytes": 0}

    def put(k: int, r0: int, nr: int, c0: int, nc: int, w, st) -> None:
        t = targets[k]
        lr, lc = r0 - t[1], c0 - t[3]
        with torch.no_grad():
            t[5][lr:lr + nr, lc:lc + nc].copy_(w)
            if has_state and t[6] is not None:
                t[6][lr:lr + nr].copy_(st)
        filled[k][lr:lr + nr, lc:lc + nc] += 1

    def take(p, r0: int, nr: int, c0: int, nc: int):
        lr, lc = r0 - p[1], c0 - p[3]
        st = p[6][lr:lr + nr] if has_state and p[6] is not None else None
        return p[5][lr:lr + nr, lc:lc + nc], st

    incoming = {(x[0], x[1], x[3], x[6]) for x in job.transfers if x[6] == rank}
    # local: every overlap of a target with an old shard this rank holds, unless it arrives
    for k, t in enumerate(targets):
        for p in held:
            if p[0] != t[0]:
                continue
            r0, r1 = max(t[1], p[1]), min(t[1] + t[2], p[1] + p[2])
            c0, c1 = max(t[3], p[3]), min(t[3] + t[4], p[3] + p[4])
            if r1 <= r0 or c1 <= c0 or (t[0], r0, c0, rank) in incoming:
                continue
            w, st = take(p, r0, r1 - r0, c0, c1 - c0)
            put(k, r0, r1 - r0, c0, c1 - c0, w, st)
            stats["local_pieces"] += 1
    for i, (table, r0, nr, c0, nc, src, dst) in enumerate(job.transfers):
        if rank not in (src, dst):
            continue
        n_state = nr if has_state else 0
        if rank == src:
            p = _find(held, table, r0, nr, c0, nc)
            if p is None:
                raise ExecutionError(f"rank {rank} holds no old shard of {table!r} with rows "
                                     f"{r0}+{nr}, cols {c0}+{nc} (transfer {i})")
            w, st = take(p, r0, nr, c0, nc)
            parts = [w.reshape(-1)] + ([st.reshape(-1)] if n_state else [])
            buf = torch.cat(parts).contiguous()
            dist.send(buf, dst, tag=i)
            stats["sent_bytes"] += buf.numel() * 4
        else:
            buf = torch.empty(nr * nc + n_state)
            dist.recv(buf, src, tag=i)
            k = next((j for j, t in enumerate(targets) if t[0] == table and t[1] <= r0
                      and r0 + nr <= t[1] + t[2] and t[3] <= c0 and c0 + nc <= t[3] + t[4]),
                     None)
            if k is None:
                raise ExecutionError(f"rank {rank} has no new shard for {table!r} rows "
                                     f"{r0}+{nr} (transfer {i})")
            w = buf[:nr * nc].view(nr, nc)
            st = buf[nr * nc:] if n_state else None
            put(k, r0, nr, c0, nc, w, st)
            stats["received_pieces"] += 1
            stats["received_bytes"] += buf.numel() * 4
    gaps = [f"{t[0]} ({int((f == 0).sum())} cells empty)" for t, f in zip(targets, filled)
            if (f == 0).any()]
    stats["unfilled"] = sum(int((f == 0).sum()) for f in filled)
    stats["twice"] = sum(int((f > 1).sum()) for f in filled)
    stats["cells"] = sum(f.numel() for f in filled)
    stats["gaps"] = gaps
    return stats
