"""The embedding cost model's modelling choices (:class:`CostModelOptions`, recorded in the
plan), the components its costs are itemised by (:class:`Component`), and the TorchRec
runtime defaults they start from."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Mapping

from shardplan.errors import SpecError
from shardplan.types import Composition, DType, StepModel

DEFAULT_PIPELINE_DEPTH = 3  # TorchRec TrainPipelineSparseDist keeps 3 batches on device: one in fwd/bwd, one in input dist, one being copied in
DEFAULT_DDP_BUCKET_BYTES = 25 * 2**20  # torch DistributedDataParallel bucket_cap_mb default: 25 MiB
#: Collectives of one input dist: TorchRec's KJTAllToAll sends the lengths, then the ids
#: (``torchrec/distributed/dist_data.py``: splits and lengths all-to-alls, then values).
INPUT_DIST_CALLS = 2


class Component(StrEnum):
    """What a cost item pays for (rows of the breakdown)."""

    WEIGHTS = "weights"
    OPTIMIZER_STATE = "optimizer_state"
    CACHE = "uvm_cache"
    GRADIENT = "dense_gradient"
    BACKWARD_WORKSPACE = "backward_workspace"
    INPUT_BUFFERS = "input_buffers"
    OUTPUT_BUFFERS = "output_buffers"
    LOCAL_INPUT = "local_input"
    POOLED_OUTPUTS = "pooled_outputs"
    LOOKUP = "lookup"
    UPDATE = "update"
    TABLE_OVERHEAD = "table_overhead"
    DEQUANTIZE = "dequantize"  # inference: int8/int4 values to fp32
    INPUT_DIST = "input_dist"
    OUTPUT_DIST = "output_dist"
    GRAD_DIST = "grad_dist"
    ALL_REDUCE = "all_reduce"
    KERNEL_LAUNCH = "kernel_launch"
    COLLECTIVE_LATENCY = "collective_latency"
    REPLICA_SYNC = "replica_sync"
    HBM_RESERVE = "hbm_reserve"


@dataclass(frozen=True, kw_only=True, slots=True)
class CostModelOptions:
    """Modelling choices, recorded in the plan.

    Attributes:
        pipeline_depth: batches of input a pipelined trainer holds on device at once (ids,
            lengths); 3 for TorchRec's ``TrainPipelineSparseDist`` (default), 1 unpipelined.
        hbm_reserved_fraction: HBM kept for the dense model, activations and the allocator.
            ``None`` uses the topology's ``hbm_reserved_fraction`` (already taken off
            ``Topology.capacity``); a number replaces it, charged (or credited) as a per-rank
            memory overhead of (this - topology's) x HBM capacity.
        pipelined: the next batch's input dist overlaps this batch's compute (TorchRec's
            ``TrainPipelineSparseDist``, default); ``False``: every stage runs in turn.
        composition: how ranks' stages make the step time (:class:`Composition`); the default,
            ``synchronized``, was chosen by measurement (``docs/cost-model.md``).
        output_dtype: dtype of pooled embeddings on the wire and in buffers (fp32 default as in
            TorchRec; fp16/bf16 model quantised communication).
        ddp_bucket_bytes: data-parallel gradients are all-reduced in buckets of this size
            (torch DDP's ``bucket_cap_mb``, 25 MiB): one call per bucket.
        replicas: 2D sparse parallelism (TorchRec's ``DMPCollection``): the topology is one
            sharding group and every shard has this many replicas on ranks of one host; 1: none.
        replica_sync_steps: the replicas' weights and optimizer state are averaged (one
            all-reduce among a shard's replicas, over the intra-host fabric) every this many
            steps (``DMPCollection.sync()``); its cost is spread over them.
    """

    pipeline_depth: int = DEFAULT_PIPELINE_DEPTH
    hbm_reserved_fraction: float | None = None
    pipelined: bool = True
    composition: Composition = Composition.SYNCHRONIZED
    output_dtype: DType = DType.FP32
    ddp_bucket_bytes: int = DEFAULT_DDP_BUCKET_BYTES
    replicas: int = 1
    replica_sync_steps: int = 1

    def __post_init__(self) -> None:
        if not (isinstance(self.pipeline_depth, int) and self.pipeline_depth >= 1):
            raise SpecError(f"pipeline_depth={self.pipeline_depth!r}: must be an integer >= 1 "
                            "(batches in flight; 3 for TorchRec's TrainPipelineSparseDist)")
        f = self.hbm_reserved_fraction
        if f is not None and not 0.0 <= f < 1.0:
            raise SpecError(f"hbm_reserved_fraction={f!r}: must be in [0, 1) or None (use the "
                            "topology's)")
        if self.output_dtype.is_quantized:
            raise SpecError(f"output_dtype={self.output_dtype.value!r}: pooled outputs are "
                            "fp32, fp16 or bf16")
        for name in ("replicas", "replica_sync_steps"):
            v = getattr(self, name)
            if not (isinstance(v, int) and not isinstance(v, bool) and v >= 1):
                raise SpecError(f"{name}={v!r}: must be an integer >= 1")
        if not (isinstance(self.ddp_bucket_bytes, int) and self.ddp_bucket_bytes > 0):
            raise SpecError(f"ddp_bucket_bytes={self.ddp_bucket_bytes!r}: must be a positive "
                            "integer (torch DDP's default is 25 MiB = 26214400)")

    @property
    def step(self) -> StepModel:
        return StepModel(composition=self.composition, pipelined=self.pipelined)

    def as_dict(self) -> dict[str, Any]:
        return {"pipeline_depth": self.pipeline_depth,
                "hbm_reserved_fraction": self.hbm_reserved_fraction,
                "pipelined": self.pipelined, "composition": self.composition.value,
                "output_dtype": self.output_dtype.value, "ddp_bucket_bytes": self.ddp_bucket_bytes,
                "replicas": self.replicas, "replica_sync_steps": self.replica_sync_steps}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> CostModelOptions:
        """The inverse of :meth:`as_dict`. Raises SpecError (a missing key or bad value)."""
        try:
            return cls(pipeline_depth=int(d["pipeline_depth"]),
                       hbm_reserved_fraction=d["hbm_reserved_fraction"],
                       pipelined=bool(d["pipelined"]), composition=Composition(d["composition"]),
                       output_dtype=DType(d["output_dtype"]),
                       ddp_bucket_bytes=int(d["ddp_bucket_bytes"]),
                       replicas=int(d.get("replicas", 1)),
                       replica_sync_steps=int(d.get("replica_sync_steps", 1)))
        except (KeyError, TypeError, ValueError) as exc:
            raise SpecError(f"cost-model options are incomplete or malformed ({exc!r})",
                            key_path="provenance.cost_model.options") from None
