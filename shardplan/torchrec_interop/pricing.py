"""Pricing: any of our plans under TorchRec's own estimators.

:func:`cost_under_torchrec` rebuilds each table of a plan as one TorchRec ``ShardingOption`` whose
shards are exactly the plan's (the shapes, offsets and ranks :func:`export_torchrec` writes), and
prices them with TorchRec's ``EmbeddingPerfEstimator`` and ``EmbeddingStorageEstimator``, as its
``EmbeddingShardingPlanner`` does for its own candidates. Per rank it sums the shards' ``Perf``
and ``Storage`` the way ``torchrec/distributed/planner/stats.py`` (``_compute_mem_usage_and_perf``)
does, and it computes TorchRec's critical-path estimate with that module's
``_calculate_critical_path``. So a plan of ours and TorchRec's own plan can be compared on
TorchRec's yardstick.

TorchRec's perf estimates do not depend on which rank a shard is on (only on the shard's
shape, the sharding type, the kernel, the batch and the topology's world/local sizes and
bandwidths), so re-pricing TorchRec's own plan this way gives back its planner's numbers
(tests/test_torchrec_pricing.py checks that).

``comm_dtype``: TorchRec's estimator prices the pooled embeddings' all-to-all and
reduce-scatter at the table's storage dtype (``planner/utils.py``,
``extract_comm_data_type_size``: ``tensor.element_size()``, 2 bytes for fp16, and for int8,
which TorchRec's training ``EmbeddingBagCollection`` holds as fp16)
unless quantized comms are configured, while its training runtime sends what FBGEMM's TBE
outputs, FP32 by default (``batched_embedding_kernel.py``: ``fused_params.get("output_dtype",
SparseType.FP32)``). ``"table"`` (the default) prices as TorchRec's planner does; ``"fp32"``
prices those collectives at 4 bytes, what the runtime sends without qcomms, through TorchRec's
own qcomm path (a sharder whose codec registry says FP32; TorchRec counts the kernel's output
write at the same size, so the compute estimate of an fp16 table grows a little too).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from shardplan.errors import PlanError
from shardplan.torchrec_interop.common import KERNEL_DENSE, _torchrec
from shardplan.torchrec_interop.export import export_torchrec, infer_compute_device
from shardplan.types import Plan, ShardingType

GiB = 2**30


@dataclass(frozen=True, kw_only=True, slots=True)
class TorchRecRankCost:
    """One rank's sums under TorchRec's estimators (times in ms, as TorchRec's ``Perf``;
    memory in bytes, as its ``Storage``; sparse storage only: no dense or KJT reservation)."""

    rank: int
    fwd_compute_ms: float
    fwd_comms_ms: float
    bwd_compute_ms: float
    bwd_comms_ms: float
    prefetch_compute_ms: float
    input_dist_comms_ms: float
    hbm_bytes: int
    ddr_bytes: int

    def __post_init__(self) -> None:
        if self.rank < 0:
            raise ValueError(f"rank must be >= 0, not {self.rank}")

    @property
    def total_ms(self) -> float:
        """TorchRec's ``Perf.total``: fwd/bwd compute and comms plus prefetch compute (its
        ``input_dist_comms`` is reported but, as in TorchRec, not part of the total)."""
        return (self.fwd_compute_ms + self.bwd_compute_ms + self.fwd_comms_ms
                + self.bwd_comms_ms + self.prefetch_compute_ms)


@dataclass(frozen=True, kw_only=True, slots=True)
class TorchRecCost:
    """A plan priced by TorchRec's estimators.

    Attributes:
        ranks: per-rank sums, rank order.
        max_perf_ms: the slowest rank's ``Perf.total`` (TorchRec's "Max Perf": the number its
            proposers minimise).
        critical_path_comms_ms / critical_path_compute_ms: TorchRec's critical-path estimate
            (``stats._calculate_critical_path``): per (module, sharding type, fwd/bwd) the
            slowest rank's comms, summed; per fwd/bwd the slowest rank's compute, summed.
        batch_size: the per-rank batch TorchRec was given.
        compute_device: ``cpu`` or ``cuda``.
    """

    ranks: tuple[TorchRecRankCost, ...]
    max_perf_ms: float
    critical_path_comms_ms: float
    critical_path_compute_ms: float
    batch_size: int
    compute_device: str

    def __post_init__(self) -> None:
        if [r.rank for r in self.ranks] != list(range(len(self.ranks))):
            raise ValueError("ranks must be given in rank order 0..n-1")

    @property
    def critical_path_ms(self) -> float:
        """TorchRec's "Critical Path (comms + compute)"."""
        return self.critical_path_comms_ms + self.critical_path_compute_ms

    @property
    def max_hbm_bytes(self) -> int:
        return max((r.hbm_bytes for r in self.ranks), default=0)

    @property
    def max_ddr_bytes(self) -> int:
        return max((r.ddr_bytes for r in self.ranks), default=0)

    @property
    def max_hbm_gib(self) -> float:
        return self.max_hbm_bytes / GiB

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (ms and bytes), ranks in order."""
        return {
            "compute_device": self.compute_device,
            "batch_size": self.batch_size,
            "max_perf_ms": self.max_perf_ms,
            "critical_path_ms": self.critical_path_ms,
            "critical_path_comms_ms": self.critical_path_comms_ms,
            "critical_path_compute_ms": self.critical_path_compute_ms,
            "max_hbm_bytes": self.max_hbm_bytes,
            "max_ddr_bytes": self.max_ddr_bytes,
            "ranks": [{"rank": r.rank, "fwd_compute_ms": r.fwd_compute_ms,
                       "fwd_comms_ms": r.fwd_comms_ms, "bwd_compute_ms": r.bwd_compute_ms,
                       "bwd_comms_ms": r.bwd_comms_ms,
                       "prefetch_compute_ms": r.prefetch_compute_ms,
                       "input_dist_comms_ms": r.input_dist_comms_ms, "total_ms": r.total_ms,
                       "hbm_bytes": r.hbm_bytes, "ddr_bytes": r.ddr_bytes}
                      for r in self.ranks],
        }


#: How :func:`cost_under_torchrec` prices the pooled embeddings' collectives (module doc).
COMM_DTYPES = ("table", "fp32")


def torchrec_sharding_options(plan: Plan, *, compute_device: str | None = None,
                              comm_dtype: str = "table") -> list[Any]:
    """TorchRec ``ShardingOption``s of ``plan`` (one per table, plan order), each shard with
    the plan's exact size, offset and rank, priced by TorchRec's ``EmbeddingPerfEstimator`` and
    ``EmbeddingStorageEstimator`` (``shard.perf`` and ``shard.storage`` set).

    The options come from TorchRec's own ``EmbeddingEnumerator`` (so batch, pooling factors,
    optimizer, kernel, cache parameters and pooled-ness are what its planner would use, from
    :func:`torchrec_constraints` and :func:`torchrec_module`), restricted to the table's
    sharding type and kernel; their shards are then replaced by the plan's and re-estimated.

    ``comm_dtype``: ``table`` (TorchRec's planner) or ``fp32`` (the runtime's bytes; see the
    module doc).

    Raises:
        PlanError: the plan uses something TorchRec cannot run (see :func:`export_torchrec`).
        TorchRecMissingError: TorchRec is not installed.
        ValueError: an unknown ``comm_dtype``.
    """
    if comm_dtype not in COMM_DTYPES:
        raise ValueError(f"comm_dtype must be one of {COMM_DTYPES}, not {comm_dtype!r}")
    _torchrec()
    from torchrec.distributed.planner.enumerators import EmbeddingEnumerator
    from torchrec.distributed.planner.shard_estimators import (
        EmbeddingPerfEstimator,
        EmbeddingStorageEstimator,
    )
    from torchrec.distributed.planner.types import Shard
    from torchrec.distributed.types import CacheParams

    from shardplan.torchrec_interop.planner_bridge import (
        _quiet_torchrec,
        topology_to_torchrec,
        torchrec_constraints,
        torchrec_module,
    )

    workload, topo = plan.workload, plan.topology
    device = compute_device or infer_compute_device(topo)
    exported = export_torchrec(plan, compute_device=device)["plan"][""]
    world = topo.world_size
    batch = max(1, round(workload.batch_per_rank(world)))  # as plan_with_torchrec gives it
    with _quiet_torchrec():
        tr_topo = topology_to_torchrec(topo, compute_device=device)
        constraints = torchrec_constraints(workload, topo)
        for name, e in exported.items():
            c = constraints[name]
            c.sharding_types = [e["sharding_type"]]
            c.compute_kernels = [e["compute_kernel"]]
            if "cache_load_factor" in e:
                c.cache_params = CacheParams(load_factor=float(e["cache_load_factor"]))
        estimators = [EmbeddingPerfEstimator(topology=tr_topo, constraints=constraints),
                      EmbeddingStorageEstimator(topology=tr_topo, constraints=constraints)]
        enumerator = EmbeddingEnumerator(topology=tr_topo, batch_size=batch,
                                         constraints=constraints, estimator=estimators)
        options = enumerator.enumerate(torchrec_module(workload),
                                       [_pricing_sharder(fp32_comms=comm_dtype == "fp32")])
        by_name = {}
        for so in options:
            if so.name in by_name:
                raise PlanError(f"TorchRec enumerated more than one option for table "
                                f"{so.name!r}; cannot price the plan",
                                key_path=f"tables[{so.name}]")
            by_name[so.name] = so
        ordered = []
        for name, e in exported.items():
            so = by_name.get(name)
            if so is None:
                raise PlanError(f"TorchRec enumerated no {e['sharding_type']}/"
                                f"{e['compute_kernel']} option for table {name!r}",
                                key_path=f"tables[{name}]")
            so.shards = _shards_of(e, so, world, Shard)
            ordered.append(so)
        enumerator.populate_estimates(ordered)
    return ordered


def _fp32_comm_registry() -> dict[str, Any]:
    """A qcomm codec registry that says "FP32" for the pooled embeddings' collectives: the
    planner reads only a codec's ``quantized_dtype`` (``planner/utils.py``,
    ``qcomm_dtype_sizes``) and then prices them at 4 bytes; nothing is ever encoded with it."""
    from types import SimpleNamespace

    import torch
    from torchrec.distributed.types import CommOp, QuantizedCommCodecs

    fp32 = SimpleNamespace(quantized_dtype=torch.float32)
    return {op.name: QuantizedCommCodecs(forward=fp32, backward=fp32)
            for op in (CommOp.POOLED_EMBEDDINGS_ALL_TO_ALL, CommOp.POOLED_EMBEDDINGS_REDUCE_SCATTER,
                       CommOp.SEQUENCE_EMBEDDINGS_ALL_TO_ALL)}


def _pricing_sharder(fp32_comms: bool = False) -> Any:
    """TorchRec's ``EmbeddingBagCollectionSharder`` that offers every sharding type and kernel
    on every device. Its CPU lists leave out row-wise and table-row-wise (and its GPU lists
    follow the installed FBGEMM), but the estimators price any type; which one a table gets
    is fixed by the constraints, so this only lets a plan of ours be priced as it is. With
    ``fp32_comms``, the pooled embeddings' collectives are priced at FP32."""
    from torchrec.distributed.embedding_types import EmbeddingComputeKernel
    from torchrec.distributed.embeddingbag import EmbeddingBagCollectionSharder
    from torchrec.distributed.types import ShardingType as TRShardingType

    class _PricingSharder(EmbeddingBagCollectionSharder):
        def sharding_types(self, compute_device_type: str) -> list[str]:
            return [t.value for t in TRShardingType]

        def compute_kernels(self, sharding_type: str, compute_device_type: str) -> list[str]:
            return [k.value for k in EmbeddingComputeKernel]

    return _PricingSharder(qcomm_codecs_registry=_fp32_comm_registry() if fp32_comms else None)


def _shards_of(entry: dict[str, Any], so: Any, world: int, shard_cls: Any) -> list[Any]:
    if entry["sharding_type"] == ShardingType.DATA_PARALLEL.value:
        rows, cols = (int(x) for x in so.tensor.shape)
        ranks = entry["ranks"]
        if entry["compute_kernel"] != KERNEL_DENSE or sorted(ranks) != list(range(world)):
            raise PlanError(f"data-parallel table {so.name!r} is on ranks {ranks}; TorchRec "
                            f"replicates on every rank (0..{world - 1})",
                            key_path=f"tables[{so.name}]")
        return [shard_cls(size=[rows, cols], offset=[0, 0], rank=r) for r in ranks]
    return [shard_cls(size=list(s["shard_sizes"]), offset=list(s["shard_offsets"]), rank=s["rank"])
            for s in entry["shards"]]


def cost_of_torchrec_options(options: list[Any], *, world_size: int, batch_size: int,
                             compute_device: str) -> TorchRecCost:
    """Per-rank sums and the critical path of priced TorchRec ``ShardingOption``s (with
    ``shard.rank``, ``shard.perf`` and ``shard.storage`` set): TorchRec's planner output
    (``planner._best_plan``) or :func:`torchrec_sharding_options`.

    Raises:
        PlanError: a shard has no rank or no estimate, or a rank outside the world.
    """
    _torchrec()
    from torchrec.distributed.planner.stats import _calculate_critical_path

    sums = [[0.0] * 6 + [0, 0] for _ in range(world_size)]
    for so in options:
        for shard in so.shards:
            if shard.rank is None or shard.perf is None or shard.storage is None:
                raise PlanError(f"table {so.name!r} has a shard without rank or estimate",
                                key_path=f"tables[{so.name}]")
            if not 0 <= shard.rank < world_size:
                raise PlanError(f"table {so.name!r} has a shard on rank {shard.rank}, outside "
                                f"0..{world_size - 1}", key_path=f"tables[{so.name}]")
            p, s, acc = shard.perf, shard.storage, sums[shard.rank]
            for i, v in enumerate((p.fwd_compute, p.fwd_comms, p.bwd_compute, p.bwd_comms,
                                   p.prefetch_compute, p.input_dist_comms)):
                acc[i] += v
            acc[6] += int(s.hbm)
            acc[7] += int(s.ddr)
    ranks = tuple(TorchRecRankCost(rank=r, fwd_compute_ms=a[0], fwd_comms_ms=a[1],
                                   bwd_compute_ms=a[2], bwd_comms_ms=a[3],
                                   prefetch_compute_ms=a[4], input_dist_comms_ms=a[5],
                                   hbm_bytes=int(a[6]), ddr_bytes=int(a[7]))
                  for r, a in enumerate(sums))
    critical = _calculate_critical_path(options)
    return TorchRecCost(ranks=ranks, max_perf_ms=max((r.total_ms for r in ranks), default=0.0),
                        critical_path_comms_ms=float(critical.comms_estimate),
                        critical_path_compute_ms=float(critical.comp_estimate),
                        batch_size=batch_size, compute_device=compute_device)


def cost_under_torchrec(plan: Plan, *, compute_device: str | None = None,
                        comm_dtype: str = "table") -> TorchRecCost:
    """Price ``plan`` with TorchRec's estimators, on its exact shards.

    Args:
        plan: any of our plans that TorchRec can run (``export_torchrec`` accepts it).
        compute_device: ``cpu`` or ``cuda``; by default inferred from the topology.
        comm_dtype: ``table``: as TorchRec's planner prices (the pooled embeddings'
            collectives at the table's storage dtype); ``fp32``: at the 4 bytes its training
            runtime sends by default (module doc).

    Returns:
        Per-rank ``Perf`` (fwd/bwd compute and comms, prefetch, total) and sparse storage
        (HBM/DDR bytes), the max over ranks of ``Perf.total`` and TorchRec's critical-path
        estimate.

    Raises:
        PlanError: the plan uses something TorchRec cannot run (a DDR placement on a GPU,
            row-wise blocks off TorchRec's rank order, unequal hosts, partial replication).
        TorchRecMissingError: TorchRec is not installed.

    Example:
        >>> import shardplan
        >>> from shardplan.loaders import load_problem
        >>> topo, work = load_problem("cpu-2")
        >>> cost = cost_under_torchrec(shardplan.plan(work, topo))
        >>> len(cost.ranks) == topo.world_size and cost.max_perf_ms > 0
        True
    """
    device = compute_device or infer_compute_device(plan.topology)
    options = torchrec_sharding_options(plan, compute_device=device, comm_dtype=comm_dtype)
    world = plan.topology.world_size
    return cost_of_torchrec_options(options, world_size=world,
                                    batch_size=max(1, round(plan.workload.batch_per_rank(world))),
                                    compute_device=device)
