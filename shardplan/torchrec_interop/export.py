"""Export: a shardplan ``Plan`` -> TorchRec's ``ShardingPlan`` (as a dict, or as TorchRec's
objects when TorchRec is installed)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Mapping

from shardplan.errors import PlanError, SpecError
from shardplan.torchrec_interop.common import (
    EXPORT_FORMAT,
    EXPORT_FORMAT_VERSION,
    KERNEL_DENSE,
    KERNEL_FUSED,
    KERNEL_OF_PLACEMENT,
    _torchrec,
)
from shardplan.types import Mode, Placement, PlacementKind, Plan, ShardingType, TablePlan, Topology

if TYPE_CHECKING:  # pragma: no cover
    from torchrec.distributed.types import ShardingPlan


def infer_compute_device(topology: Topology) -> str:
    """``cpu`` if every device of the topology is a CPU process, else ``cuda``."""
    models = {g.device.model.strip().lower() for g in topology.host_groups}
    return "cpu" if all(m.startswith("cpu") for m in models) else "cuda"


def local_world_size(topology: Topology) -> int:
    """Devices per host, which TorchRec requires to be the same on every host.

    Raises:
        PlanError: the host groups have different devices per host.
    """
    sizes = sorted({g.devices_per_host for g in topology.host_groups})
    if len(sizes) != 1:
        raise PlanError(f"TorchRec needs the same devices per host on every host, but topology "
                        f"{topology.name!r} has {sizes}; plan for TorchRec on a topology whose "
                        "host groups all have the same devices_per_host",
                        key_path="topology.host_groups")
    return sizes[0]


#: Inference plans: TorchRec's quantised sharders (``QuantEmbeddingBagCollectionSharder``, from
#: ``BaseQuantEmbeddingSharder`` in torchrec/distributed/embedding_types.py) take these sharding
#: types; table-column-wise shards are column shards, exported as column-wise.
INFERENCE_SHARDING_TYPES = {
    ShardingType.TABLE_WISE: ShardingType.TABLE_WISE,
    ShardingType.ROW_WISE: ShardingType.ROW_WISE,
    ShardingType.COLUMN_WISE: ShardingType.COLUMN_WISE,
    ShardingType.TABLE_COLUMN_WISE: ShardingType.COLUMN_WISE,
}
#: ... and these compute kernels (``EmbeddingComputeKernel``): ``quant`` on CPU and GPU,
#: ``quant_uvm`` and ``quant_uvm_caching`` on GPU only.
KERNEL_QUANT = "quant"
QUANT_KERNEL_OF_PLACEMENT = {
    PlacementKind.HBM: KERNEL_QUANT,
    PlacementKind.UVM_CACHING: "quant_uvm_caching",
    PlacementKind.UVM: "quant_uvm",
}


def _placement_string(device: str, rank: int, local_size: int) -> str:
    # Same string as torchrec.distributed.sharding_plan.placement.
    return f"rank:{rank}/cuda:{rank % local_size}" if device == "cuda" else f"rank:{rank}/cpu"


def rw_block_layout(rows: int, num_shards: int) -> list[tuple[int, int]]:
    """TorchRec's row-wise layout: ``num_shards`` (offset, rows) blocks of ``ceil(rows/n)``
    rows, the last ones smaller or empty (10 rows on 4 shards: 3, 3, 3, 1)."""
    block = math.ceil(rows / num_shards)
    out, off = [], 0
    for _ in range(num_shards):
        size = max(0, min(block, rows - off))
        out.append((off, size))
        off += size
    return out


def export_torchrec(plan: Plan, *, module_path: str = "", compute_device: str | None = None
                    ) -> dict[str, Any]:
    """The JSON-serialisable form of the TorchRec ``ShardingPlan`` of ``plan``.

    Works without TorchRec installed. :func:`sharding_plan_from_dict` turns it into TorchRec
    objects; ``shardplan export PLAN --format torchrec`` writes it.

    Args:
        plan: our plan.
        module_path: the FQN of the ``EmbeddingBagCollection`` in the model given to
            ``DistributedModelParallel`` (``""`` when the EBC itself is given).
        compute_device: ``cpu`` or ``cuda``; by default inferred from the topology.

    Returns:
        ``{"format", "format_version", "compute_device", "world_size", "local_world_size",
        "plan": {module_path: {table: {"sharding_type", "compute_kernel", "ranks",
        "shards": [{"rank", "shard_offsets", "shard_sizes", "placement"}] | None,
        "cache_load_factor"?}}}}``, tables in plan order.

    An inference plan (``workload.mode`` inference) exports for TorchRec's quantised path
    (``QuantEmbeddingBagCollection`` sharded by ``QuantEmbeddingBagCollectionSharder``):
    sharding types table-wise, row-wise and column-wise (table-column-wise as column-wise),
    kernel ``quant`` (GPU: ``quant_uvm``/``quant_uvm_caching`` for UVM placements).

    Raises:
        PlanError: the plan uses something TorchRec cannot run (a DDR placement on a GPU,
            row-wise shards off TorchRec's rank order, unequal hosts; for inference: a sharding
            type TorchRec's quantised sharders do not take).
    """
    topo = plan.topology
    device = compute_device or infer_compute_device(topo)
    if device not in ("cpu", "cuda"):
        raise SpecError(f"compute_device must be 'cpu' or 'cuda', not {device!r}",
                        key_path="compute_device")
    local = local_world_size(topo)
    tables = {t.name: _export_table(t, plan, device, local) for t in plan.tables}
    return {
        "format": EXPORT_FORMAT,
        "format_version": EXPORT_FORMAT_VERSION,
        "compute_device": device,
        "world_size": topo.world_size,
        "local_world_size": local,
        "plan": {module_path: tables},
    }


def _kernel(sharding_type: ShardingType, placement: Placement, device: str, where: str,
            inference: bool = False) -> str:
    if inference:
        if device == "cpu":
            return KERNEL_QUANT
        try:
            return QUANT_KERNEL_OF_PLACEMENT[placement.kind]
        except KeyError:
            raise PlanError(f"placement {placement} has no TorchRec quantised kernel on GPUs; "
                            "re-plan with placements hbm, uvm_caching or uvm",
                            key_path=where) from None
    if sharding_type is ShardingType.DATA_PARALLEL:
        return KERNEL_DENSE
    if device == "cpu":
        return KERNEL_FUSED
    try:
        return KERNEL_OF_PLACEMENT[placement.kind]
    except KeyError:
        raise PlanError(f"placement {placement} has no TorchRec compute kernel on GPUs; re-plan "
                        "with placements hbm, uvm_caching or uvm", key_path=where) from None


def _export_table(t: TablePlan, plan: Plan, device: str, local: int) -> dict[str, Any]:
    where = f"tables[{t.name}]"
    world = plan.topology.world_size
    st = t.sharding_type
    placements = {s.placement for s in t.shards}
    if len(placements) != 1:
        raise PlanError(f"table {t.name!r} has shards with different placements "
                        f"({sorted(map(str, placements))}); TorchRec takes one kernel per table",
                        key_path=where)
    pl = next(iter(placements))
    inference = plan.workload.mode is Mode.INFERENCE
    if inference and st not in INFERENCE_SHARDING_TYPES:
        raise PlanError(f"inference table {t.name!r} is {st.value}; TorchRec's quantised sharders "
                        "(QuantEmbeddingBagCollectionSharder) take table_wise, row_wise and "
                        "column_wise (table_column_wise exports as column_wise): re-solve with "
                        "those sharding types (table constraints: sharding_types)",
                        key_path=f"{where}.sharding_type")
    kernel = _kernel(st, pl, device, where, inference)
    exported = INFERENCE_SHARDING_TYPES[st] if inference else st
    entry: dict[str, Any] = {"sharding_type": exported.value, "compute_kernel": kernel}
    if st is ShardingType.DATA_PARALLEL:
        entry["ranks"] = sorted(s.rank for s in t.shards)
        entry["shards"] = None
        return entry
    by_rows = sorted(t.shards, key=lambda s: (s.row_offset, s.col_offset))
    if st in (ShardingType.ROW_WISE, ShardingType.TABLE_ROW_WISE):
        ranks = [s.rank for s in by_rows]
        if st is ShardingType.ROW_WISE:
            expected = list(range(world))
            n = world
        else:
            host = ranks[0] // local
            expected = list(range(host * local, (host + 1) * local))
            n = local
        if ranks != expected[:len(ranks)]:
            kind = "row-wise" if st is ShardingType.ROW_WISE else "table-row-wise"
            raise PlanError(f"{kind} table {t.name!r} has its row blocks on ranks {ranks}, but "
                            f"TorchRec puts block i on rank {expected[0]} + i; re-plan it",
                            key_path=where)
        boxes = [(off, 0, size, t.embedding_dim, r)
                 for (off, size), r in zip(rw_block_layout(t.num_embeddings, n), expected)]
    else:  # TW, CW, TWCW: our shards as they are, in column order
        boxes = [(s.row_offset, s.col_offset, s.num_rows, s.num_cols, s.rank)
                 for s in sorted(t.shards, key=lambda s: (s.col_offset, s.row_offset))]
    entry["ranks"] = [b[4] for b in boxes]
    entry["shards"] = [{"rank": r, "shard_offsets": [ro, co], "shard_sizes": [nr, nc],
                        "placement": _placement_string(device, r, local)}
                       for ro, co, nr, nc, r in boxes]
    if kernel in ("fused_uvm_caching", "quant_uvm_caching") and pl.cache_ratio is not None:
        entry["cache_load_factor"] = pl.cache_ratio
    return entry


def sharding_plan_from_dict(d: Mapping[str, Any], source: str = "<torchrec plan>") -> ShardingPlan:
    """TorchRec's ``ShardingPlan`` from the dict of :func:`export_torchrec` (or its JSON).

    Raises:
        PlanError: the dict is not such an export.
        TorchRecMissingError: TorchRec is not installed.
    """
    _torchrec()
    from torch.distributed._shard.sharding_spec import EnumerableShardingSpec, ShardMetadata
    from torchrec.distributed.types import (
        CacheParams,
        EmbeddingModuleShardingPlan,
        ParameterSharding,
    )
    from torchrec.distributed.types import ShardingPlan as TRShardingPlan

    if not isinstance(d, Mapping) or d.get("format") != EXPORT_FORMAT:
        raise PlanError(f"not a TorchRec plan export (expected format {EXPORT_FORMAT!r}); write "
                        "one with `shardplan export PLAN --format torchrec`", source=source)
    out = {}
    try:
        for path, tables in d["plan"].items():
            module_plan = EmbeddingModuleShardingPlan()
            for name, e in tables.items():
                spec = None
                if e["shards"] is not None:
                    spec = EnumerableShardingSpec([
                        ShardMetadata(shard_offsets=list(s["shard_offsets"]),
                                      shard_sizes=list(s["shard_sizes"]),
                                      placement=s["placement"])
                        for s in e["shards"]])
                cache = None
                if "cache_load_factor" in e:
                    cache = CacheParams(load_factor=float(e["cache_load_factor"]))
                module_plan[name] = ParameterSharding(
                    sharding_type=e["sharding_type"], compute_kernel=e["compute_kernel"],
                    ranks=list(e["ranks"]), sharding_spec=spec, cache_params=cache)
            out[path] = module_plan
    except (KeyError, TypeError, ValueError) as exc:
        raise PlanError(f"malformed TorchRec plan export: {type(exc).__name__}: {exc}",
                        source=source) from None
    return TRShardingPlan(out)


def to_torchrec_plan(plan: Plan, *, module_path: str = "", compute_device: str | None = None
                     ) -> ShardingPlan:
    """Our plan as TorchRec's ``ShardingPlan``, ready for ``DistributedModelParallel``.

    Args:
        plan: our plan.
        module_path: the FQN of the ``EmbeddingBagCollection`` in the model given to
            ``DistributedModelParallel`` (``""`` when the EBC itself is given).
        compute_device: ``cpu`` or ``cuda``; by default inferred from the topology.

    Returns:
        ``ShardingPlan({module_path: EmbeddingModuleShardingPlan})``.

    Raises:
        PlanError: the plan uses something TorchRec cannot run.
        TorchRecMissingError: TorchRec is not installed.
    """
    return sharding_plan_from_dict(export_torchrec(plan, module_path=module_path,
                                                   compute_device=compute_device))
