"""TorchRec interop: export our plans to TorchRec, read TorchRec models, run its planner.

TorchRec is optional. This package imports it lazily, inside the functions that need it, so
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

The parts (import them from here):

- :mod:`~shardplan.torchrec_interop.common`: the export format, kernel names, the lazy import.
- :mod:`~shardplan.torchrec_interop.export`: ``Plan`` -> TorchRec ``ShardingPlan``.
- :mod:`~shardplan.torchrec_interop.importing`: TorchRec configs / modules / constraints ->
  ``Workload``.
- :mod:`~shardplan.torchrec_interop.planner_bridge`: :func:`plan_for_torchrec` (the trainer's
  API) and the head-to-head with TorchRec's own planner.
"""

from __future__ import annotations

from shardplan.errors import TorchRecMissingError
from shardplan.torchrec_interop.common import torchrec_available
from shardplan.torchrec_interop.export import (
    export_torchrec,
    infer_compute_device,
    sharding_plan_from_dict,
    to_torchrec_plan,
)
from shardplan.torchrec_interop.importing import (
    constraints_from_torchrec,
    find_embedding_bag_collections,
    workload_from_torchrec,
    workload_to_configs,
)
from shardplan.torchrec_interop.pricing import (
    TorchRecCost,
    TorchRecRankCost,
    cost_of_torchrec_options,
    cost_under_torchrec,
    torchrec_sharding_options,
)
from shardplan.torchrec_interop.planner_bridge import (
    assignment_from_torchrec,
    plan_for_torchrec,
    plan_with_torchrec,
    topology_to_torchrec,
)

# Also importable from here, as before the split into modules (outside ``__all__``).
from shardplan.torchrec_interop.common import (  # noqa: F401
    DEFAULT_CACHE_LOAD_FACTOR,
    EXPORT_FORMAT,
    EXPORT_FORMAT_VERSION,
    INSTALL_HINT,
    KERNEL_DENSE,
    KERNEL_FUSED,
    KERNEL_OF_PLACEMENT,
    PLACEMENT_OF_KERNEL,
    SUPPORTED_SHARDING_TYPES,
)
from shardplan.torchrec_interop.export import local_world_size, rw_block_layout  # noqa: F401
from shardplan.torchrec_interop.planner_bridge import (  # noqa: F401
    torchrec_constraints,
    torchrec_module,
)

__all__ = [
    "TorchRecCost",
    "TorchRecMissingError",
    "TorchRecRankCost",
    "assignment_from_torchrec",
    "constraints_from_torchrec",
    "cost_of_torchrec_options",
    "cost_under_torchrec",
    "export_torchrec",
    "find_embedding_bag_collections",
    "infer_compute_device",
    "plan_for_torchrec",
    "plan_with_torchrec",
    "sharding_plan_from_dict",
    "to_torchrec_plan",
    "topology_to_torchrec",
    "torchrec_available",
    "torchrec_sharding_options",
    "workload_from_torchrec",
    "workload_to_configs",
]
