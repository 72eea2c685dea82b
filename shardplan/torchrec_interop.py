"""TorchRec interop: export our plans to TorchRec, read TorchRec models, run its planner.

TorchRec is optional. This module imports it lazily, inside the functions that need it, so
``import shardplan`` and the planner work without it; a function that needs it raises
:class:`TorchRecMissingError` (a ``ShardplanError``) naming the fix.

What maps to what:

=========================  ==========================================================
shardplan                  TorchRec
=========================  ==========================================================
``Plan``                   ``ShardingPlan`` {module FQN: {table: ``ParameterSharding``}}
``ShardingType``           ``ShardingType`` (same values: ``table_wise``, ``row_wise``...)
placement ``hbm``          compute kernel ``fused`` (``dense`` for data-parallel)
placement ``uvm_caching``  ``fused_uvm_caching`` + ``CacheParams(load_factor=ratio)``
placement ``uvm``          ``fused_uvm``
``Shard`` offsets/sizes    ``EnumerableShardingSpec`` of ``ShardMetadata``
``TableSpec``              ``EmbeddingBagConfig`` (+ pooling factors from constraints)
``TableConstraints``       ``ParameterConstraints`` (sharding types, kernels, min_partition)
``Topology``               planner ``Topology`` (world/local size, per-rank HBM/DDR caps)
=========================  ==========================================================

Two TorchRec conventions the export follows (see ``docs/torchrec.md``):

* Row-wise and table-row-wise tables: TorchRec's kernels bucketize ids with a block of
  ``ceil(rows / n)`` rows per shard (``torchrec.distributed.sharding_plan.
  _calculate_rw_shard_sizes_and_offsets``), so the exported shards use that layout (e.g. 10
  rows on 4 ranks: 3, 3, 3, 1) on the ranks our plan chose, in order. Our plan's even split
  (3, 3, 2, 2) differs by less than one row per rank per shard.
* On a CPU topology every placement maps to the ``fused`` kernel: CPU processes have no
  device memory separate from host memory, and FBGEMM's CPU kernels have no UVM variant.
"""

from __future__ import annotations

import logging
import math
import time
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Iterator, Mapping, Sequence

from shardplan.errors import (
    InfeasiblePlanError,
    PlanError,
    SpecError,
    TorchRecMissingError,
)
from shardplan.types import (
    Assignment,
    DType,
    Optimizer,
    Placement,
    PlacementKind,
    Plan,
    ShardingOption,
    ShardingType,
    ShardSpec,
    TableConstraints,
    TablePlan,
    TableSpec,
    Topology,
    Workload,
)

if TYPE_CHECKING:  # pragma: no cover
    import torch.nn as nn
    from torchrec.distributed.planner.types import ParameterConstraints
    from torchrec.distributed.planner.types import Topology as TorchRecTopology
    from torchrec.distributed.types import ShardingPlan

EXPORT_FORMAT = "torchrec-sharding-plan"
EXPORT_FORMAT_VERSION = 1

INSTALL_HINT = ("install it with scripts/setup.sh, or `pip install -e '.[executor,torchrec]'` then "
                "`pip install --no-deps torchrec==1.8.0` (pins: pyproject.toml)")

# TorchRec kernel names (torchrec.distributed.embedding_types.EmbeddingComputeKernel values).
KERNEL_DENSE = "dense"
KERNEL_FUSED = "fused"
KERNEL_OF_PLACEMENT = {
    PlacementKind.HBM: "fused",
    PlacementKind.UVM_CACHING: "fused_uvm_caching",
    PlacementKind.UVM: "fused_uvm",
}
PLACEMENT_OF_KERNEL = {
    "dense": PlacementKind.HBM,
    "fused": PlacementKind.HBM,
    "fused_uvm_caching": PlacementKind.UVM_CACHING,
    "fused_uvm": PlacementKind.UVM,
}
# TorchRec's cache load factor when a plan names fused_uvm_caching without CacheParams: the
# FBGEMM default cache_load_factor of SplitTableBatchedEmbeddingBagsCodegen is 0.2.
DEFAULT_CACHE_LOAD_FACTOR = 0.2

# The sharding types both planners know. TorchRec's GRID_SHARD has no shardplan counterpart.
SUPPORTED_SHARDING_TYPES = tuple(ShardingType)

_DTYPE_TO_TORCHREC = {DType.FP32: "FP32", DType.FP16: "FP16", DType.BF16: "BF16",
                      DType.INT8: "INT8", DType.INT4: "INT4"}


def _torchrec() -> Any:
    """Import torchrec or raise TorchRecMissingError with the install hint."""
    try:
        import torchrec  # noqa: F401
        import torchrec.distributed  # noqa: F401
    except ImportError as exc:
        raise TorchRecMissingError(f"this needs TorchRec, which cannot be imported ({exc}); "
                                   f"{INSTALL_HINT}") from None
    return torchrec


def torchrec_available() -> bool:
    """Whether TorchRec can be imported here."""
    try:
        _torchrec()
    except TorchRecMissingError:
        return False
    return True


# ---------------------------------------------------------------------------------------------
# Export: Plan -> TorchRec ShardingPlan
# ---------------------------------------------------------------------------------------------


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

    Raises:
        PlanError: the plan uses something TorchRec cannot run (a DDR placement on a GPU,
            row-wise shards off TorchRec's rank order, unequal hosts).
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


def _kernel(sharding_type: ShardingType, placement: Placement, device: str, where: str) -> str:
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
    kernel = _kernel(st, pl, device, where)
    entry: dict[str, Any] = {"sharding_type": st.value, "compute_kernel": kernel}
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
    if kernel == "fused_uvm_caching" and pl.cache_ratio is not None:
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


# ---------------------------------------------------------------------------------------------
# Import: TorchRec configs / modules / constraints -> Workload
# ---------------------------------------------------------------------------------------------


def find_embedding_bag_collections(module: nn.Module) -> list[tuple[str, Any]]:
    """``(fqn, ebc)`` for every ``EmbeddingBagCollection`` in ``module`` (``""`` for itself),
    in module order."""
    _torchrec()
    from torchrec.modules.embedding_modules import EmbeddingBagCollection

    return [(name, m) for name, m in module.named_modules()
            if isinstance(m, EmbeddingBagCollection)]


def _configs_of(module_or_configs: Any) -> list[tuple[str, Any]]:
    """``(module_path, EmbeddingBagConfig)`` pairs from a module or a list of configs."""
    _torchrec()
    import torch.nn as nn
    from torchrec.modules.embedding_configs import EmbeddingBagConfig

    if isinstance(module_or_configs, nn.Module):
        ebcs = find_embedding_bag_collections(module_or_configs)
        if not ebcs:
            raise SpecError(f"{type(module_or_configs).__name__} holds no EmbeddingBagCollection; "
                            "pass the model that contains the embedding tables",
                            key_path="module")
        return [(path, c) for path, ebc in ebcs for c in ebc.embedding_bag_configs()]
    configs = list(module_or_configs)
    for i, c in enumerate(configs):
        if not isinstance(c, EmbeddingBagConfig):
            raise SpecError(f"expected an EmbeddingBagConfig, got {type(c).__name__}; pass a list "
                            "of EmbeddingBagConfig or an nn.Module", key_path=f"tables[{i}]")
    return [("", c) for c in configs]


def constraints_from_torchrec(pc: ParameterConstraints, where: str = "constraints"
                              ) -> TableConstraints:
    """Our per-table constraints from TorchRec's ``ParameterConstraints``.

    ``sharding_types`` map one to one; ``compute_kernels`` map to placements (``fused`` and
    ``dense``: hbm, ``fused_uvm_caching``: uvm_caching, ``fused_uvm``: uvm); ``min_partition``
    is the minimum column-shard width. Pooling factors are read by
    :func:`workload_from_torchrec`; other fields (cache params, bounds checks) do not constrain
    placement and are ignored.

    Raises:
        SpecError: a sharding type or kernel shardplan does not plan (e.g.
            ``key_value``).
    """
    st = None
    if pc.sharding_types:
        try:
            st = tuple(dict.fromkeys(ShardingType(s) for s in pc.sharding_types))
        except ValueError:
            raise SpecError(f"sharding types {pc.sharding_types} include one shardplan does not "
                            f"plan; use {', '.join(s.value for s in ShardingType)}",
                            key_path=f"{where}.sharding_types") from None
    pl = None
    if pc.compute_kernels:
        bad = [k for k in pc.compute_kernels if k not in PLACEMENT_OF_KERNEL]
        if bad:
            raise SpecError(f"compute kernel(s) {bad} have no shardplan placement; use "
                            f"{', '.join(PLACEMENT_OF_KERNEL)}", key_path=f"{where}.compute_kernels")
        pl = tuple(dict.fromkeys(PLACEMENT_OF_KERNEL[k] for k in pc.compute_kernels))
    try:
        return TableConstraints(sharding_types=st, placements=pl,
                                min_column_shard_width=pc.min_partition)
    except ValueError as exc:
        raise SpecError(str(exc), key_path=where) from None


def _dtype_of(config: Any, where: str) -> DType:
    name = getattr(config.data_type, "name", str(config.data_type)).upper()
    for ours, theirs in _DTYPE_TO_TORCHREC.items():
        if theirs == name:
            return ours
    raise SpecError(f"data type {name} has no shardplan dtype; use one of "
                    f"{', '.join(_DTYPE_TO_TORCHREC.values())}", key_path=f"{where}.data_type")


def workload_from_torchrec(
    module_or_configs: nn.Module | Sequence[Any],
    *,
    batch_size: int,
    constraints: Mapping[str, ParameterConstraints] | None = None,
    optimizer: Optimizer = Optimizer.ROWWISE_ADAGRAD,
    name: str = "torchrec",
) -> Workload:
    """A workload from TorchRec table specs.

    Args:
        module_or_configs: a list of ``EmbeddingBagConfig``, an ``EmbeddingBagCollection`` or
            a model holding EBCs (any device, ``meta`` included: no weights are read).
        batch_size: samples per rank per step (TorchRec's planner convention).
        constraints: TorchRec ``ParameterConstraints`` by table name; their pooling factors
            (one per feature, summed) set each table's ``pooling_factor`` (default 1.0, as
            TorchRec's ``POOLING_FACTOR``).
        optimizer: the workload's default optimizer.
        name: a label.

    Returns:
        The workload, tables in module order.

    Raises:
        SpecError: an unknown table in ``constraints``, a bad dtype or constraint, or
            duplicate table names across EBCs.
        TorchRecMissingError: TorchRec is not installed.
    """
    pairs = _configs_of(module_or_configs)
    constraints = dict(constraints or {})
    names = [c.name for _, c in pairs]
    unknown = sorted(set(constraints) - set(names))
    if unknown:
        raise SpecError(f"constraints name table(s) {unknown} that the model does not have; "
                        f"its tables are {names}", key_path="constraints")
    tables = []
    for i, (_, c) in enumerate(pairs):
        where = f"tables[{i}]"
        pc = constraints.get(c.name)
        pf = 1.0
        cons = TableConstraints()
        if pc is not None:
            cons = constraints_from_torchrec(pc, f"constraints[{c.name}]")
            if pc.pooling_factors:
                pf = float(sum(pc.pooling_factors))
        try:
            tables.append(TableSpec(
                name=c.name, num_embeddings=int(c.num_embeddings), embedding_dim=int(c.embedding_dim),
                pooling_factor=pf, features=tuple(c.feature_names), dtype=_dtype_of(c, where),
                constraints=cons))
        except ValueError as exc:
            raise SpecError(str(exc), key_path=where) from None
    try:
        return Workload(name=name, tables=tuple(tables), batch_size=batch_size,
                        default_optimizer=optimizer, source="torchrec")
    except ValueError as exc:
        raise SpecError(f"{exc}; table names must be unique across the model's "
                        "EmbeddingBagCollections", key_path="tables") from None


def workload_to_configs(workload: Workload) -> list[Any]:
    """``EmbeddingBagConfig`` per table of ``workload`` (the inverse of the import)."""
    _torchrec()
    from torchrec.modules.embedding_configs import DataType, EmbeddingBagConfig

    return [EmbeddingBagConfig(name=t.name, num_embeddings=t.num_embeddings,
                               embedding_dim=t.embedding_dim, feature_names=list(t.features),
                               data_type=DataType[_DTYPE_TO_TORCHREC[t.dtype]])
            for t in workload.tables]


# ---------------------------------------------------------------------------------------------
# The trainer's API
# ---------------------------------------------------------------------------------------------


def plan_for_torchrec(
    module_or_configs: nn.Module | Sequence[Any],
    topology: Topology | str,
    *,
    batch_size: int,
    constraints: Mapping[str, ParameterConstraints] | None = None,
    optimizer: Optimizer = Optimizer.ROWWISE_ADAGRAD,
    compute_device: str | None = None,
    **plan_kwargs: Any,
) -> ShardingPlan:
    """Plan a TorchRec model with shardplan; the result goes straight into
    ``DistributedModelParallel(model, plan=...)``.

    Args:
        module_or_configs: the model (any device, ``meta`` included), an
            ``EmbeddingBagCollection``, or a list of ``EmbeddingBagConfig`` (then the plan's
            module path is ``""``: give DMP the EBC itself).
        topology: a Topology, a bundled topology name or a YAML path.
        batch_size: samples per rank per step.
        constraints: TorchRec ``ParameterConstraints`` by table name (pooling factors,
            sharding types, kernels, min_partition).
        optimizer: the embedding optimizer, for the memory of its state.
        compute_device: ``cpu`` or ``cuda``; by default inferred from the topology.
        **plan_kwargs: passed to :func:`shardplan.plan` (``solver``, ``time_limit_s``,
            ``cost_model``, ...).

    Returns:
        TorchRec's ``ShardingPlan``, one entry per EBC (keyed by its FQN).

    Raises:
        InfeasiblePlanError: no plan fits the topology.
        SpecError: bad tables, constraints or topology.
        TorchRecMissingError: TorchRec is not installed.

    Example:
        >>> from torchrec import EmbeddingBagCollection, EmbeddingBagConfig
        >>> from shardplan.torchrec_interop import plan_for_torchrec
        >>> ebc = EmbeddingBagCollection(device="meta", tables=[
        ...     EmbeddingBagConfig(name=f"t{i}", num_embeddings=10_000, embedding_dim=64,
        ...                        feature_names=[f"f{i}"]) for i in range(4)])
        >>> plan = plan_for_torchrec(ebc, "cpu-2", batch_size=64)
        >>> sorted(plan.plan[""])
        ['t0', 't1', 't2', 't3']
    """
    from shardplan.loaders import load_topology
    from shardplan.planner import plan as shardplan_plan

    topo = load_topology(topology) if isinstance(topology, str) else topology
    pairs = _configs_of(module_or_configs)
    workload = workload_from_torchrec(module_or_configs, batch_size=batch_size,
                                      constraints=constraints, optimizer=optimizer)
    ours = shardplan_plan(workload, topo, **plan_kwargs)
    full = export_torchrec(ours, compute_device=compute_device)
    by_table = full["plan"][""]
    per_module: dict[str, dict[str, Any]] = {}
    for path, c in pairs:
        per_module.setdefault(path, {})[c.name] = by_table[c.name]
    full["plan"] = per_module
    return sharding_plan_from_dict(full)


# ---------------------------------------------------------------------------------------------
# Head-to-head: our Topology -> TorchRec's, TorchRec's planner -> our Plan
# ---------------------------------------------------------------------------------------------

# TorchRec's planner takes bandwidths in bytes per millisecond
# (torchrec/distributed/planner/constants.py: "HBM_MEM_BW ... # bytes/ms").
_MS_PER_S = 1000.0


def topology_to_torchrec(topology: Topology, *, compute_device: str | None = None
                         ) -> TorchRecTopology:
    """TorchRec's planner ``Topology`` for ours.

    Per-rank HBM and DDR caps are our usable capacities (HBM less ``hbm_reserved_fraction``;
    the host's DDR split among its devices), given as ``CustomTopologyData`` so heterogeneous
    clusters keep their per-rank sizes. TorchRec has one bandwidth per kind for the whole
    cluster, so a heterogeneous topology gets the slowest group's (a modelling gap of
    TorchRec's, noted in docs/torchrec.md). Inter-host bandwidth is per device: the host's
    NIC total divided by its devices.

    Raises:
        PlanError: host groups with different devices per host.
        TorchRecMissingError: TorchRec is not installed.
    """
    _torchrec()
    from torchrec.distributed.planner.types import CustomTopologyData
    from torchrec.distributed.planner.types import Topology as TRTopology

    device = compute_device or infer_compute_device(topology)
    local = local_world_size(topology)
    world = topology.world_size
    caps = [topology.capacity(r) for r in range(world)]
    groups = topology.host_groups
    data = {"hbm_cap": [int(c.hbm) for c in caps], "ddr_cap": [int(c.ddr) for c in caps]}
    if device == "cpu":  # TorchRec plans CPU tables in DDR: our "HBM" share is the process's RAM
        data = {"hbm_cap": [0] * world, "ddr_cap": [int(c.hbm + c.ddr) for c in caps]}
    with _quiet_torchrec():
        return TRTopology(
            world_size=world,
            local_world_size=local,
            compute_device=device,
            hbm_mem_bw=min(g.device.hbm_bandwidth_bytes_per_s for g in groups) / _MS_PER_S,
            ddr_mem_bw=min(g.host.ddr_bandwidth_bytes_per_s for g in groups) / _MS_PER_S,
            hbm_to_ddr_mem_bw=min(g.host.pcie_bandwidth_bytes_per_s for g in groups) / _MS_PER_S,
            intra_host_bw=min(g.intra_host_link.bandwidth_bytes_per_s for g in groups) / _MS_PER_S,
            inter_host_bw=min(g.network.bandwidth_bytes_per_s / g.devices_per_host
                              for g in groups) / _MS_PER_S,
            custom_topology_data=CustomTopologyData(data=data, world_size=world),
        )


@contextmanager
def _quiet_torchrec() -> Iterator[None]:
    """Silence TorchRec's planner logging (stats tables, the TopologyFactory warning, and the
    root-logger "Sharding spec not found" it logs for every data-parallel table)."""
    loggers = [logging.getLogger(n) for n in ("torchrec", "torchrec.distributed.planner",
                                                "torchrec.distributed.planner.types")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    root_filter = _DropMessages(("Sharding spec not found",))
    logging.getLogger().addFilter(root_filter)
    try:
        yield
    finally:
        logging.getLogger().removeFilter(root_filter)
        for lg, lv in zip(loggers, levels):
            lg.setLevel(lv)


class _DropMessages(logging.Filter):
    def __init__(self, prefixes: tuple[str, ...]) -> None:
        super().__init__()
        self.prefixes = prefixes

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.prefixes)


def _torchrec_optimizer(opt: Optimizer) -> Any:
    import torch
    import torchrec.optim as trec_optim

    return {Optimizer.SGD: torch.optim.SGD, Optimizer.ADAGRAD: trec_optim.Adagrad,
            Optimizer.ROWWISE_ADAGRAD: trec_optim.RowWiseAdagrad,
            Optimizer.ADAM: trec_optim.Adam}.get(opt)


def torchrec_constraints(workload: Workload, topology: Topology) -> dict[str, Any]:
    """TorchRec ``ParameterConstraints`` per table saying what our planner is told: pooling
    factors, the sharding types and kernels our enumerator offers, user constraints."""
    _torchrec()
    from torchrec.distributed.planner.types import ParameterConstraints

    device = infer_compute_device(topology)
    out = {}
    for t in workload.tables:
        c = t.constraints
        types = [s.value for s in SUPPORTED_SHARDING_TYPES if c.allows(s)]
        if device == "cpu":
            kernels = [KERNEL_FUSED, KERNEL_DENSE]
        else:
            kernels = [KERNEL_OF_PLACEMENT[k] for k in KERNEL_OF_PLACEMENT
                       if c.allows_placement(k)] + [KERNEL_DENSE]
        per_feature = t.pooling_factor / t.num_features
        out[t.name] = ParameterConstraints(
            sharding_types=types, compute_kernels=kernels,
            min_partition=c.min_column_shard_width,
            pooling_factors=[per_feature] * t.num_features)
    return out


def torchrec_module(workload: Workload) -> Any:
    """A meta-device ``EmbeddingBagCollection`` of ``workload``, each weight tagged with its
    optimizer the way ``apply_optimizer_in_backward`` tags it (TorchRec's planner reads the tag
    to size optimizer state)."""
    _torchrec()
    import torch
    from torchrec.modules.embedding_modules import EmbeddingBagCollection

    ebc = EmbeddingBagCollection(tables=workload_to_configs(workload),
                                 device=torch.device("meta"))
    for t in workload.tables:
        cls = _torchrec_optimizer(workload.optimizer_of(t))
        if cls is not None:
            ebc.embedding_bags[t.name].weight._optimizer_classes = [cls]
    return ebc


def plan_with_torchrec(workload: Workload, topology: Topology, *, timeout_s: int | None = None
                       ) -> tuple[Plan, float]:
    """Run TorchRec's ``EmbeddingShardingPlanner`` on our problem and cost its answer with
    our cost model.

    TorchRec gets the same tables, per-rank batch, pooling factors, optimizer, sharding types
    and kernels our enumerator offers, and the same usable memory per rank (no further
    storage reservation).

    Args:
        workload: the tables and batch.
        topology: the cluster (host groups must have equal devices per host).
        timeout_s: TorchRec's ``timeout_seconds``: its proposers stop after this long and it
            returns the best plan found so far. ``None``: TorchRec's default, no limit.

    Returns:
        (TorchRec's plan as our ``Plan``, costed by ``default_cost_model`` with solver
        ``torchrec``; TorchRec's planning wall time in seconds). The plan's
        ``provenance.solver_options["planner_cpu_s"]`` holds the process CPU seconds of the
        same call, a fairer figure on a shared machine.

    Raises:
        InfeasiblePlanError: TorchRec's planner finds no plan.
        TorchRecMissingError: TorchRec is not installed.
    """
    _torchrec()
    from torchrec.distributed.embeddingbag import EmbeddingBagCollectionSharder
    from torchrec.distributed.planner import EmbeddingShardingPlanner
    from torchrec.distributed.planner.storage_reservations import (
        FixedPercentageStorageReservation,
    )
    from torchrec.distributed.planner.types import PlannerError

    from shardplan.estimators import default_cost_model
    from shardplan.plans import build_plan

    with _quiet_torchrec():
        tr_topo = topology_to_torchrec(topology)
        module = torchrec_module(workload)
        planner = EmbeddingShardingPlanner(
            topology=tr_topo,
            batch_size=max(1, round(workload.batch_per_rank(topology.world_size))),
            storage_reservation=FixedPercentageStorageReservation(percentage=0.0),
            constraints=torchrec_constraints(workload, topology),
            debug=False,
            timeout_seconds=timeout_s,
        )
        start, cpu_start = time.perf_counter(), time.process_time()
        try:
            tr_plan = planner.plan(module, [EmbeddingBagCollectionSharder()])
        except PlannerError as exc:
            raise InfeasiblePlanError(f"TorchRec's planner found no plan: {exc}") from None
        seconds = time.perf_counter() - start
        cpu_seconds = time.process_time() - cpu_start
    assignment = assignment_from_torchrec(tr_plan, workload, module_path="")
    cost_model = default_cost_model(workload, topology)
    plan = build_plan(workload=workload, topology=topology, cost_model=cost_model,
                      assignment=assignment, solver="torchrec",
                      solver_options={"planner": "EmbeddingShardingPlanner",
                                      "planner_cpu_s": round(cpu_seconds, 3),
                                      "timeout_s": timeout_s},
                      solve_time_s=seconds)
    return plan, seconds


def assignment_from_torchrec(sharding_plan: Any, workload: Workload, *, module_path: str = ""
                             ) -> Assignment:
    """Our Assignment (option and ranks per table, workload order) from a TorchRec plan.

    Empty shards (TorchRec's row-wise layout leaves the last ranks of small tables empty) are
    dropped.

    Raises:
        PlanError: a table is missing from the plan, or has a type or kernel we do not model.
    """
    if module_path not in sharding_plan.plan:
        raise PlanError(f"the TorchRec plan has no module {module_path!r}; it has "
                        f"{sorted(sharding_plan.plan)}", key_path="plan")
    module_plan = sharding_plan.plan[module_path]
    options, ranks = [], []
    for t in workload.tables:
        where = f"plan[{module_path!r}][{t.name}]"
        ps = module_plan.get(t.name)
        if ps is None:
            raise PlanError(f"table {t.name!r} is not in the TorchRec plan", key_path=where)
        try:
            st = ShardingType(ps.sharding_type)
        except ValueError:
            raise PlanError(f"sharding type {ps.sharding_type!r} is not one shardplan models",
                            key_path=where) from None
        kind = PLACEMENT_OF_KERNEL.get(ps.compute_kernel)
        if kind is None:
            raise PlanError(f"compute kernel {ps.compute_kernel!r} is not one shardplan models",
                            key_path=where)
        ratio = None
        if kind is PlacementKind.UVM_CACHING:
            lf = ps.cache_params.load_factor if ps.cache_params is not None else None
            ratio = lf if lf is not None else DEFAULT_CACHE_LOAD_FACTOR
        placement = Placement(kind=kind, cache_ratio=ratio)
        if st is ShardingType.DATA_PARALLEL:
            rs = tuple(sorted(ps.ranks))
            shards = tuple(ShardSpec(row_offset=0, num_rows=t.num_embeddings, col_offset=0,
                                     num_cols=t.embedding_dim) for _ in rs)
        else:
            kept = [(m, r) for m, r in zip(ps.sharding_spec.shards, ps.ranks)
                    if m.shard_sizes[0] > 0 and m.shard_sizes[1] > 0]
            shards = tuple(ShardSpec(row_offset=m.shard_offsets[0], num_rows=m.shard_sizes[0],
                                     col_offset=m.shard_offsets[1], num_cols=m.shard_sizes[1])
                           for m, _ in kept)
            rs = tuple(r for _, r in kept)
        options.append(ShardingOption(table=t.name, sharding_type=st, placement=placement,
                                      shards=shards, candidate_ranks=(None,) * len(shards)))
        ranks.append(rs)
    return Assignment(options=tuple(options), ranks=tuple(ranks))


__all__ = [
    "TorchRecMissingError",
    "assignment_from_torchrec",
    "constraints_from_torchrec",
    "export_torchrec",
    "find_embedding_bag_collections",
    "infer_compute_device",
    "plan_for_torchrec",
    "plan_with_torchrec",
    "sharding_plan_from_dict",
    "to_torchrec_plan",
    "topology_to_torchrec",
    "torchrec_available",
    "workload_from_torchrec",
    "workload_to_configs",
]
