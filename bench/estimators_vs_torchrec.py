"""Our cost model beside TorchRec's estimators, per table, sharding type and placement; and
the speed of costing every option of a large workload.

    .venv/bin/python bench/estimators_vs_torchrec.py                 # comparison (CPU, seconds)
    .venv/bin/python bench/estimators_vs_torchrec.py --speed-tables 10000

Comparison: the tables of a bundled workload on a bundled topology (default: the MLPerf
DLRM-DCNv2 tables on 2 x DGX H100). For each table, TorchRec's ``EmbeddingEnumerator`` runs
with ``EmbeddingPerfEstimator`` and ``EmbeddingStorageEstimator`` (on CPU, a meta-device
``EmbeddingBagCollection``, ``Topology(compute_device="cuda")`` given the same bandwidths and
capacities as our topology). Each TorchRec sharding option is rebuilt as our
``ShardingOption`` with the very same shard shapes and costed by ``default_cost_model``.

Per option we report, summed over its shards: HBM and DDR bytes, and the ms of each stage.
Ours adds the option's everywhere-cost on every rank (receive side of the collectives, each
rank's input and output buffers), which TorchRec does not model; TorchRec's storage is shown
with the optimizer attached through ``apply_optimizer_in_backward`` and without it (its default
when the optimizer is fused through the sharder, where it counts no optimizer state).
Reasons for the differences: docs/cost-model.md, "Differences from TorchRec".

Writes ``bench/results/estimators_vs_torchrec.{csv,md}`` and ``bench/results/estimators_speed.md``.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import time
from pathlib import Path

import pandas as pd

from shardplan.enumerators import enumerate_options
from shardplan.estimators import default_cost_model
from shardplan.generate import synthetic_workload
from shardplan.loaders import load_problem, load_topology
from shardplan.types import (
    Optimizer,
    Placement,
    PlacementKind,
    ShardingOption,
    ShardingType,
    ShardSpec,
    Topology,
    Workload,
)

RESULTS = Path(__file__).resolve().parent / "results"
GiB = 2**30
CACHE_RATIO = 0.2  # TorchRec's UVM_CACHING_RATIO default; our uvm_caching@0.2

_ST = {"table_wise": ShardingType.TABLE_WISE, "row_wise": ShardingType.ROW_WISE,
       "column_wise": ShardingType.COLUMN_WISE, "table_row_wise": ShardingType.TABLE_ROW_WISE,
       "data_parallel": ShardingType.DATA_PARALLEL}


def _torch_optimizer(opt: Optimizer):
    import torch
    from torchrec.optim import RowWiseAdagrad

    return {Optimizer.SGD: torch.optim.SGD, Optimizer.ADAGRAD: torch.optim.Adagrad,
            Optimizer.ADAM: torch.optim.Adam, Optimizer.ROWWISE_ADAGRAD: RowWiseAdagrad}.get(opt)


def torchrec_options(workload: Workload, topo: Topology, attach_optimizer: bool) -> list:
    """TorchRec's sharding options, with its perf and storage estimates, for every table."""
    import torch
    from torchrec.distributed.embedding_types import EmbeddingComputeKernel
    from torchrec.distributed.embeddingbag import EmbeddingBagCollectionSharder
    from torchrec.distributed.planner.enumerators import EmbeddingEnumerator
    from torchrec.distributed.planner.shard_estimators import (
        EmbeddingPerfEstimator,
        EmbeddingStorageEstimator,
    )
    from torchrec.distributed.planner.types import ParameterConstraints
    from torchrec.distributed.planner.types import Topology as TrecTopology
    from torchrec.distributed.types import CacheParams
    from torchrec.modules.embedding_configs import DataType, EmbeddingBagConfig
    from torchrec.modules.embedding_modules import EmbeddingBagCollection

    g = topo.host_groups[0]
    nic_per_gpu = g.network.bandwidth_bytes_per_s / g.devices_per_host
    trec_topo = TrecTopology(
        world_size=topo.world_size, local_world_size=g.devices_per_host, compute_device="cuda",
        hbm_cap=int(topo.capacity(0).hbm), ddr_cap=int(topo.capacity(0).ddr),
        hbm_mem_bw=g.device.hbm_bandwidth_bytes_per_s / 1e3,  # TorchRec: bytes per ms
        ddr_mem_bw=g.host.ddr_bandwidth_bytes_per_s / 1e3,
        hbm_to_ddr_mem_bw=g.host.pcie_bandwidth_bytes_per_s / 1e3,
        intra_host_bw=g.intra_host_link.bandwidth_bytes_per_s / 1e3,
        inter_host_bw=nic_per_gpu / 1e3)
    dt = {"fp32": DataType.FP32, "fp16": DataType.FP16, "bf16": DataType.BF16,
          "int8": DataType.INT8, "int4": DataType.INT4}
    configs, constraints = [], {}
    kernels = [EmbeddingComputeKernel.FUSED.value, EmbeddingComputeKernel.FUSED_UVM_CACHING.value,
               EmbeddingComputeKernel.DENSE.value]
    for t in workload.tables:
        configs.append(EmbeddingBagConfig(name=t.name, embedding_dim=t.embedding_dim,
                                          num_embeddings=t.num_embeddings,
                                          feature_names=list(t.features), data_type=dt[t.dtype.value]))
        constraints[t.name] = ParameterConstraints(
            sharding_types=list(_ST), compute_kernels=kernels,
            pooling_factors=[t.pooling_factor / t.num_features] * t.num_features,
            cache_params=CacheParams(load_factor=CACHE_RATIO), min_partition=t.embedding_dim // 2)
    ebc = EmbeddingBagCollection(tables=configs, device=torch.device("meta"))
    if attach_optimizer:
        from torch.distributed.optim import _apply_optimizer_in_backward

        by_opt: dict = {}
        for t in workload.tables:
            by_opt.setdefault(workload.optimizer_of(t), []).append(t.name)
        for opt, names in by_opt.items():
            cls = _torch_optimizer(opt)
            if cls is None:
                continue
            params = [ebc.embedding_bags[n].weight for n in names]
            _apply_optimizer_in_backward(cls, params, {"lr": 0.01})
    est = [EmbeddingPerfEstimator(trec_topo, constraints=constraints),
           EmbeddingStorageEstimator(trec_topo, constraints=constraints)]
    batch = int(workload.batch_per_rank(topo.world_size))
    enum = EmbeddingEnumerator(trec_topo, batch_size=batch, constraints=constraints, estimator=est)
    return enum.enumerate(ebc, [EmbeddingBagCollectionSharder()])


def our_option(so, table: str) -> ShardingOption:
    kind = so.compute_kernel
    placement = (Placement(kind=PlacementKind.UVM_CACHING, cache_ratio=CACHE_RATIO)
                 if kind == "fused_uvm_caching" else Placement())
    shards = tuple(ShardSpec(row_offset=s.offset[0], num_rows=s.size[0], col_offset=s.offset[1],
                             num_cols=s.size[1]) for s in so.shards)
    return ShardingOption(table=table, sharding_type=_ST[so.sharding_type], placement=placement,
                          shards=shards, candidate_ranks=tuple(None for _ in shards))


def compare(topology: str, workload_name: str | None) -> pd.DataFrame:
    topo, work = load_problem(topology, workload_name)
    cm = default_cost_model(work, topo)
    with_opt = torchrec_options(work, topo, attach_optimizer=True)
    no_opt = {(o.name, o.sharding_type, o.compute_kernel, len(o.shards)):
              sum(s.storage.hbm + s.storage.ddr for s in o.shards)
              for o in torchrec_options(work, topo, attach_optimizer=False)}
    world = topo.world_size
    rows = []
    for so in with_opt:
        o = our_option(so, so.name)
        shard = [cm.shard_cost(o, i, 0) for i in range(len(o.shards))]
        every = cm.everywhere_cost(o, 0)
        hbm = sum(c.memory.hbm for c in shard) + world * every.memory.hbm
        ddr = sum(c.memory.ddr for c in shard) + world * every.memory.ddr
        # per-shard time: the slowest shard's own cost plus what each rank pays everywhere
        slow = max(shard, key=lambda c: c.perf.total)
        p = slow.perf + every.perf
        tp = max((s.perf for s in so.shards), key=lambda q: q.total)
        t_hbm = sum(s.storage.hbm for s in so.shards)
        t_ddr = sum(s.storage.ddr for s in so.shards)
        rows.append(dict(
            table=so.name, sharding=_ST[so.sharding_type].short, kernel=so.compute_kernel,
            shards=len(so.shards),
            ours_hbm_gib=hbm / GiB, trec_hbm_gib=t_hbm / GiB, ours_ddr_gib=ddr / GiB,
            trec_ddr_gib=t_ddr / GiB,
            trec_no_opt_gib=no_opt.get((so.name, so.sharding_type, so.compute_kernel,
                                        len(so.shards)), float("nan")) / GiB,
            ours_fwd_compute_ms=p.fwd_compute, trec_fwd_compute_ms=tp.fwd_compute,
            ours_fwd_comm_ms=p.fwd_comm, trec_fwd_comm_ms=tp.fwd_comms + tp.input_dist_comms,
            ours_bwd_compute_ms=p.bwd_compute, trec_bwd_compute_ms=tp.bwd_compute + tp.prefetch_compute,
            ours_bwd_comm_ms=p.bwd_comm + p.dp_sync, trec_bwd_comm_ms=tp.bwd_comms,
            ours_total_ms=cm.total(p), trec_total_ms=tp.total))
    df = pd.DataFrame(rows).sort_values(["table", "sharding", "kernel", "shards"], kind="stable")
    df["mem_ratio"] = (df.ours_hbm_gib + df.ours_ddr_gib) / (df.trec_hbm_gib + df.trec_ddr_gib)
    df["time_ratio"] = df.ours_total_ms / df.trec_total_ms
    return df.reset_index(drop=True)


def markdown(df: pd.DataFrame) -> str:
    """A DataFrame as a markdown table (pandas' to_markdown needs tabulate, not installed)."""
    def cell(v: object) -> str:
        return f"{v:.4g}" if isinstance(v, float) else str(v)
    lines = ["| " + " | ".join(map(str, df.columns)) + " |", "|" + "---|" * len(df.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines)


def speed(n_tables: int, topology: str, repeats: int) -> dict[str, float]:
    """Seconds to cost every option of ``n_tables`` synthetic tables on every host group."""
    topo = load_topology(topology)
    work = synthetic_workload(n_tables, seed=0)
    t0 = time.perf_counter()
    options = enumerate_options(work, topo)
    enum_s = time.perf_counter() - t0
    n_opt = sum(len(v) for v in options.values())
    n_shards = sum(len(o.shards) for v in options.values() for o in v)
    groups = range(len(topo.host_groups))
    cold, warm = [], []
    for _ in range(repeats):
        cm = default_cost_model(work, topo)
        for out in (cold, warm):
            t0 = time.perf_counter()
            for opts in options.values():
                for o in opts:
                    for g in groups:
                        cm.shard_costs(o, g)
                        cm.everywhere_cost(o, g)
            out.append(time.perf_counter() - t0)
    return {"tables": n_tables, "ranks": topo.world_size, "options": n_opt, "shards": n_shards,
            "enumerate_s": enum_s, "cost_cold_median_s": statistics.median(cold),
            "cost_warm_median_s": statistics.median(warm), "repeats": repeats}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--topology", default="dgx-h100-2x8")
    ap.add_argument("--workload", default=None, help="default: the topology's workload")
    ap.add_argument("--speed-tables", type=int, default=2000)
    ap.add_argument("--speed-topology", default="h100-128x8")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--skip-compare", action="store_true")
    ap.add_argument("--skip-speed", action="store_true")
    args = ap.parse_args(argv)
    logging.getLogger("torchrec").setLevel(logging.ERROR)
    RESULTS.mkdir(parents=True, exist_ok=True)
    pd.set_option("display.width", 250)
    pd.set_option("display.max_columns", 30)
    if not args.skip_compare:
        df = compare(args.topology, args.workload)
        df.to_csv(RESULTS / "estimators_vs_torchrec.csv", index=False, float_format="%.6g")
        cols = ["table", "sharding", "kernel", "shards", "ours_hbm_gib", "trec_hbm_gib",
                "trec_no_opt_gib", "ours_ddr_gib", "trec_ddr_gib", "ours_total_ms",
                "trec_total_ms", "mem_ratio", "time_ratio"]
        summary = (df.groupby(["sharding", "kernel"])[["mem_ratio", "time_ratio"]]
                   .median().rename(columns=lambda c: f"median_{c}").reset_index())
        md = [f"# Our estimates beside TorchRec's ({args.topology}, "
              f"{args.workload or 'its workload'})", "",
              "Generated by `bench/estimators_vs_torchrec.py`. Memory: all shards plus our "
              "everywhere-cost on every rank; time: the slowest shard plus everywhere-cost "
              "(ours) vs TorchRec's slowest shard. Ratios: ours / TorchRec.", "",
              "## Median ratio per sharding type and kernel", "",
              markdown(summary), "",
              "## Per table and option", "", markdown(df[cols])]
        (RESULTS / "estimators_vs_torchrec.md").write_text("\n".join(md) + "\n")
        print(summary.to_string(index=False))
        print(f"\n{len(df)} options; full table: {RESULTS / 'estimators_vs_torchrec.md'}")
    if not args.skip_speed:
        s = speed(args.speed_tables, args.speed_topology, args.repeats)
        lines = ["# Cost-model speed", "",
                 f"`bench/estimators_vs_torchrec.py --speed-tables {args.speed_tables} "
                 f"--speed-topology {args.speed_topology} --repeats {args.repeats}` "
                 "(shard_costs + everywhere_cost of every enumerated option, every host group; "
                 "cold = fresh model, warm = same model again).", "",
                 "| " + " | ".join(s) + " |", "|" + "---|" * len(s),
                 "| " + " | ".join(f"{v:.3g}" if isinstance(v, float) else str(v)
                                   for v in s.values()) + " |"]
        (RESULTS / "estimators_speed.md").write_text("\n".join(lines) + "\n")
        print("\n".join(lines[4:]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
