"""Cross-validation on TorchRec's engine: our exported plans run under TorchRec's
``DistributedModelParallel`` on 2 CPU processes (gloo) and give the unsharded forward.

One run a plan that holds a table of each sharding type TorchRec runs on gloo (TW, CW
with uneven column shards, DP, TWRW); a second runs the plan our planner chose for the
bundled small-cpu workload. Each worker copies the reference weights into its shards, runs
its half of a global batch, and compares its pooled outputs with the unsharded
``EmbeddingBagCollection`` on the same ids.
"""

from __future__ import annotations

import os
import socket
import traceback

import pytest

torch = pytest.importorskip("torch", reason="TorchRec cross-validation needs torch")
pytest.importorskip("torchrec", reason="TorchRec is not installed (optional extra): "
                    "scripts/setup.sh installs it")

import torch.multiprocessing as mp  # noqa: E402

from shardplan.enumerators import split  # noqa: E402
from shardplan.estimators import default_cost_model  # noqa: E402
from shardplan.loaders import load_problem, load_topology  # noqa: E402
from shardplan.plans import build_plan, check_plan  # noqa: E402
from shardplan.torchrec_interop import export_torchrec, workload_to_configs  # noqa: E402
from shardplan.types import (  # noqa: E402
    HBM,
    Assignment,
    ShardingOption,
    ShardingType,
    ShardSpec,
    TableSpec,
    Workload,
)

WORLD = 2
BATCH_PER_RANK = 8
ATOL = 1e-5  # fp32 sums of <= 10 rows: differences are summation-order rounding


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _inputs(workload: Workload, seed: int):
    """A global batch of ids per feature (lengths 0..3), deterministic."""
    g = torch.Generator().manual_seed(seed)
    feats, lengths, values = [], [], []
    for t in workload.tables:
        for f in t.features:
            feats.append((f, t.num_embeddings))
    for _, rows in feats:
        ls = torch.randint(0, 4, (WORLD * BATCH_PER_RANK,), generator=g)
        lengths.append(ls)
        values.append(torch.randint(0, rows, (int(ls.sum()),), generator=g))
    return [f for f, _ in feats], lengths, values


def _kjt(keys, lengths, values, lo: int, hi: int):
    from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

    ls, vs = [], []
    for length, value in zip(lengths, values):
        start = int(length[:lo].sum())
        end = int(length[:hi].sum())
        ls.append(length[lo:hi])
        vs.append(value[start:end])
    return KeyedJaggedTensor.from_lengths_sync(keys=keys, values=torch.cat(vs),
                                               lengths=torch.cat(ls))


def _worker(rank: int, port: int, workload: Workload, tr_plan_dict: dict, result_q) -> None:
    try:
        import torch.distributed as dist
        from torch.distributed._shard.sharded_tensor import ShardedTensor
        from torchrec.distributed.embeddingbag import EmbeddingBagCollectionSharder
        from torchrec.distributed.model_parallel import DistributedModelParallel
        from torchrec.modules.embedding_modules import EmbeddingBagCollection

        from shardplan.torchrec_interop import sharding_plan_from_dict

        os.environ["MASTER_ADDR"] = "127.0.0.1"
        os.environ["MASTER_PORT"] = str(port)
        dist.init_process_group("gloo", rank=rank, world_size=WORLD)
        torch.manual_seed(0)
        ref = EmbeddingBagCollection(tables=workload_to_configs(workload), device=torch.device("cpu"))
        with torch.no_grad():
            for p in ref.parameters():
                p.uniform_(-1.0, 1.0)
        keys, lengths, values = _inputs(workload, seed=1)
        lo, hi = rank * BATCH_PER_RANK, (rank + 1) * BATCH_PER_RANK
        expected = ref(_kjt(keys, lengths, values, lo, hi)).to_dict()

        model = DistributedModelParallel(
            EmbeddingBagCollection(tables=workload_to_configs(workload), device=torch.device("meta")),
            device=torch.device("cpu"), plan=sharding_plan_from_dict(tr_plan_dict),
            sharders=[EmbeddingBagCollectionSharder()])
        glob = ref.state_dict()
        layout = {}
        for name, tensor in model.state_dict().items():
            table = name.split(".")[-2]
            if isinstance(tensor, ShardedTensor):
                layout[table] = sorted(
                    (m.placement.rank(), list(m.shard_offsets), list(m.shard_sizes))
                    for m in tensor.metadata().shards_metadata)
            else:
                layout[table] = "replicated"
        with torch.no_grad():
            for name, tensor in model.state_dict().items():
                src = glob[name.removeprefix("module.").removeprefix("_dmp_wrapped_module.")]
                if isinstance(tensor, ShardedTensor):
                    for shard in tensor.local_shards():
                        (r0, c0), (nr, nc) = shard.metadata.shard_offsets, shard.metadata.shard_sizes
                        shard.tensor.copy_(src[r0:r0 + nr, c0:c0 + nc])
                else:
                    tensor.copy_(src)
        got = model(_kjt(keys, lengths, values, lo, hi)).wait().to_dict()
        worst = {k: float((got[k] - expected[k]).abs().max()) for k in expected}
        shapes_ok = all(got[k].shape == expected[k].shape for k in expected)
        result_q.put((rank, "ok", (worst, layout), shapes_ok))
        dist.barrier()
        dist.destroy_process_group()
    except Exception:  # report the child's traceback to the test instead of hanging
        result_q.put((rank, "error", traceback.format_exc(), False))


def _run_dmp(workload: Workload, tr_plan_dict: dict) -> dict[int, tuple]:
    # forkserver: ranks fork from a fresh server that imported torch/torchrec once, so a run
    # takes seconds (not the ~10 s per process of spawn) and cannot inherit this process's
    # OpenMP/gloo threads (a plain fork after earlier tests hung here).
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(["torch", "torchrec"])
    q = ctx.Queue()
    port = _free_port()
    procs = [ctx.Process(target=_worker, args=(r, port, workload, tr_plan_dict, q))
             for r in range(WORLD)]
    for p in procs:
        p.start()
    results = {}
    try:
        for _ in range(WORLD):
            rank, status, payload, shapes_ok = q.get(timeout=240)
            results[rank] = (status, payload, shapes_ok)
    finally:
        for p in procs:
            p.join(timeout=30)
            if p.is_alive():
                p.terminate()
    return results


def _assert_matches(results: dict[int, tuple]) -> None:
    assert sorted(results) == list(range(WORLD))
    for rank, (status, payload, shapes_ok) in sorted(results.items()):
        assert status == "ok", f"rank {rank} failed:\n{payload}"
        assert shapes_ok, f"rank {rank}: pooled output shapes differ from the reference"
        worst, _ = payload
        bad = {k: v for k, v in worst.items() if not v <= ATOL}
        assert not bad, f"rank {rank}: max |sharded - reference| above {ATOL}: {bad}"


def _assert_layout_is_exported(results: dict[int, tuple], exported: dict) -> None:
    """What DMP built is what we exported: same shards, same ranks (DP: replicated)."""
    _, (_, layout), _ = results[0]
    for table, e in exported["plan"][""].items():
        if e["shards"] is None:
            assert layout[table] == "replicated", table
        else:
            want = sorted((s["rank"], s["shard_offsets"], s["shard_sizes"]) for s in e["shards"])
            assert layout[table] == want, f"{table}: DMP built {layout[table]}, exported {want}"


def _mixed_plan():
    """A plan on cpu-2 with one table of each gloo-capable sharding type, built directly
    (our enumerator offers TWRW only on multi-host topologies, TorchRec runs it on one host)."""
    topo = load_topology("cpu-2")
    tables = (
        TableSpec(name="t_tw", num_embeddings=101, embedding_dim=8, pooling_factor=2.0),
        TableSpec(name="t_cw", num_embeddings=57, embedding_dim=20, pooling_factor=2.0),
        TableSpec(name="t_dp", num_embeddings=33, embedding_dim=4, pooling_factor=2.0),
        TableSpec(name="t_twrw", num_embeddings=203, embedding_dim=12, pooling_factor=2.0),
        TableSpec(name="t_cw4", num_embeddings=40, embedding_dim=16, pooling_factor=2.0),
    )
    work = Workload(name="mixed", tables=tables, batch_size=BATCH_PER_RANK)

    def opt(t, st, shards):
        return ShardingOption(table=t.name, sharding_type=st, placement=HBM, shards=tuple(shards),
                              candidate_ranks=(None,) * len(shards))

    tw, cw, dp, twrw, cw4 = tables
    options = (
        opt(tw, ShardingType.TABLE_WISE, [ShardSpec(row_offset=0, num_rows=101, col_offset=0, num_cols=8)]),
        opt(cw, ShardingType.COLUMN_WISE, [ShardSpec(row_offset=0, num_rows=57, col_offset=0, num_cols=12),
                                           ShardSpec(row_offset=0, num_rows=57, col_offset=12, num_cols=8)]),
        opt(dp, ShardingType.DATA_PARALLEL, [ShardSpec(row_offset=0, num_rows=33, col_offset=0, num_cols=4)] * 2),
        opt(twrw, ShardingType.TABLE_ROW_WISE,
            [ShardSpec(row_offset=o, num_rows=n, col_offset=0, num_cols=12) for o, n in split(203, 2)]),
        # 4 column shards, two per rank, the second rank's out of column order
        opt(cw4, ShardingType.COLUMN_WISE,
            [ShardSpec(row_offset=0, num_rows=40, col_offset=4 * k, num_cols=4) for k in range(4)]),
    )
    ranks = ((1,), (1, 0), (0, 1), (0, 1), (0, 1, 0, 1))
    plan = build_plan(workload=work, topology=topo, cost_model=default_cost_model(work, topo),
                      assignment=Assignment(options=options, ranks=ranks), solver="manual")
    check_plan(plan)
    return plan


def test_exported_tw_cw_dp_twrw_plan_matches_unsharded_forward():
    plan = _mixed_plan()
    exported = export_torchrec(plan)
    types = {e["sharding_type"] for e in exported["plan"][""].values()}
    assert types == {"table_wise", "column_wise", "data_parallel", "table_row_wise"}
    results = _run_dmp(plan.workload, exported)
    _assert_matches(results)
    _assert_layout_is_exported(results, exported)


def test_our_planned_small_cpu_plan_matches_unsharded_forward():
    import shardplan

    topo, work = load_problem("cpu-2")
    # The workload as TorchRec would run it on gloo: RW has no gloo path (see the RW test).
    allowed = (ShardingType.TABLE_WISE, ShardingType.COLUMN_WISE, ShardingType.DATA_PARALLEL)
    from dataclasses import replace

    from shardplan.types import TableConstraints

    work = replace(work, batch_size=BATCH_PER_RANK, tables=tuple(
        replace(t, constraints=TableConstraints(sharding_types=allowed)) for t in work.tables))
    plan = shardplan.plan(work, topo)
    check_plan(plan)
    exported = export_torchrec(plan)
    results = _run_dmp(plan.workload, exported)
    _assert_matches(results)
    _assert_layout_is_exported(results, exported)


@pytest.mark.skip(reason="TorchRec 1.8 has no gloo path for row-wise sharding: DMP with an RW "
                  "table aborts the process (SIGABRT) on CPU/gloo, so RW runs only on GPUs/NCCL")
def test_exported_row_wise_plan_matches_unsharded_forward():  # pragma: no cover
    raise AssertionError("skipped: see the reason")
