"""Local lookups of inference plans: one batched, forward-only kernel over a rank's shards, in
their stored dtypes (fp32, fp16, int8, int4; dtypes may differ within a kernel).

Two backends (``kernels.choose_backend`` picks):
    ``fbgemm``: FBGEMM's inference TBE, ``IntNBitTableBatchedEmbeddingBagsCodegen`` (sum
        pooling, fp32 outputs; ``fbgemm-gpu-cpu`` runs it on CPU), loaded with the shards'
        quantised bytes (:mod:`.quant`).
    ``torch``: per shard, gather the ids' rows of stored bytes, dequantise them
        (``q * scale + bias``), and sum them per sample with
        ``torch.nn.functional.embedding_bag``. Holds the same bytes as FBGEMM.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from shardplan.executor.kernels import Backend
from shardplan.executor.quant import QuantTable, dequantize_rows
from shardplan.types import DType

__all__ = ["QuantLookup", "make_quant_lookup"]


class QuantLookup:
    """Pooled (sum) forward lookups over ``len(tables)`` local tables sharing one batch size.

    ``forward(indices, offsets)`` takes FBGEMM's layout (``offsets``: ``T * B + 1`` entries,
    table-major) and returns fp32 [B, sum of columns].
    """

    backend: Backend

    def __init__(self, tables: Sequence[QuantTable], device: torch.device) -> None:
        self.tables = tuple(tables)
        self.device = device

    def forward(self, indices: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    @property
    def weight_bytes(self) -> int:
        """Bytes of the tables' values and scales/biases (what the cost model estimates)."""
        return sum(t.nbytes for t in self.tables)

    @property
    def param_bytes(self) -> int:
        """Bytes the kernel allocated for them (FBGEMM adds a cache-line pad per table)."""
        return self.weight_bytes


class TorchQuantLookup(QuantLookup):
    backend = Backend.TORCH

    def __init__(self, tables: Sequence[QuantTable], device: torch.device) -> None:
        super().__init__(tables, device)
        self._data = [t.data.to(device) for t in self.tables]
        self._sb = [None if t.scale_bias is None else t.scale_bias.to(device)
                    for t in self.tables]

    def forward(self, indices: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
        T = len(self.tables)
        B = (offsets.numel() - 1) // T if T else offsets.numel() - 1
        outs = []
        for t, tab in enumerate(self.tables):
            lo, hi = int(offsets[t * B]), int(offsets[(t + 1) * B])
            ids = indices[lo:hi]
            rows = dequantize_rows(self._data[t].index_select(0, ids),
                                   None if self._sb[t] is None else self._sb[t].index_select(0, ids),
                                   tab.dtype)
            off = offsets[t * B:(t + 1) * B] - lo
            outs.append(F.embedding_bag(torch.arange(ids.numel(), device=self.device), rows, off,
                                        mode="sum"))
        return torch.cat(outs, dim=1) if outs else torch.zeros(B, 0, device=self.device)


_SPARSE = {DType.FP32: "FP32", DType.FP16: "FP16", DType.INT8: "INT8", DType.INT4: "INT4"}


class FbgemmQuantLookup(QuantLookup):
    backend = Backend.FBGEMM

    def __init__(self, tables: Sequence[QuantTable], device: torch.device) -> None:
        super().__init__(tables, device)
        self._tbe = None
        if not self.tables:
            return
        from fbgemm_gpu.split_embedding_configs import SparseType
        from fbgemm_gpu.split_table_batched_embeddings_ops_common import (
            EmbeddingLocation,
            PoolingMode,
        )
        from fbgemm_gpu.split_table_batched_embeddings_ops_inference import (
            IntNBitTableBatchedEmbeddingBagsCodegen,
        )

        loc = EmbeddingLocation.DEVICE if device.type == "cuda" else EmbeddingLocation.HOST
        specs = [(f"t{i}", t.rows, t.cols, getattr(SparseType, _SPARSE[t.dtype]), loc)
                 for i, t in enumerate(self.tables)]
        tbe = IntNBitTableBatchedEmbeddingBagsCodegen(
            specs, device=device, output_dtype=SparseType.FP32, pooling_mode=PoolingMode.SUM)
        tbe.initialize_weights()
        tbe.assign_embedding_weights([(t.data.to(device),
                                       None if t.scale_bias is None else t.scale_bias.to(device))
                                      for t in self.tables])
        self._tbe = tbe

    def forward(self, indices: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
        if self._tbe is None:
            return torch.zeros(offsets.numel() - 1, 0, device=self.device)
        return self._tbe(indices, offsets).float()

    @property
    def param_bytes(self) -> int:
        if self._tbe is None:
            return 0
        return sum(int(getattr(self._tbe, f).numel())
                   for f in ("weights_dev", "weights_host", "weights_uvm"))

    def stored(self) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
        """The kernel's own (values, scale_bias) byte tensors per table."""
        return [] if self._tbe is None else self._tbe.split_embedding_weights()


def make_quant_lookup(backend: Backend, tables: Sequence[QuantTable],
                      device: torch.device) -> QuantLookup:
    """A forward-only batched lookup over ``tables`` with the given backend."""
    cls = FbgemmQuantLookup if backend is Backend.FBGEMM else TorchQuantLookup
    return cls(tables, device)
