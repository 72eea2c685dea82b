"""Import: TorchRec's embedding configs, modules and ``ParameterConstraints`` -> a shardplan
``Workload`` (and back to ``EmbeddingBagConfig`` s)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping, Sequence

from shardplan.errors import SpecError
from shardplan.torchrec_interop.common import _DTYPE_TO_TORCHREC, PLACEMENT_OF_KERNEL, _torchrec
from shardplan.types import DType, Optimizer, ShardingType, TableConstraints, TableSpec, Workload

if TYPE_CHECKING:  # pragma: no cover
    import torch.nn as nn
    from torchrec.distributed.planner.types import ParameterConstraints


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
