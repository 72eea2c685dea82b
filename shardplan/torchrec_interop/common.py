"""What every part of the TorchRec interop shares: the export format, TorchRec's kernel names and
how placements map to them, and the lazy import of TorchRec (:func:`torchrec_available`)."""

from __future__ import annotations

from typing import Any

from shardplan.errors import TorchRecMissingError
from shardplan.types import DType, PlacementKind, ShardingType

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
