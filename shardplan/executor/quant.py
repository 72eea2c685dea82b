"""Row-wise quantised tables in FBGEMM's inference layout, for inference plans.

A table of ``rows`` x ``cols`` stored as ``dtype`` is two byte tensors, exactly as FBGEMM's
``IntNBitTableBatchedEmbeddingBagsCodegen.split_embedding_weights()`` returns them:

    data         uint8 [rows, cols * bits / 8]: the values (int8: one byte each; int4: two per
                 byte, element ``2j`` in the low nibble of byte ``j``, ``2j + 1`` in the high;
                 fp16/fp32: the values' own bytes)
    scale_bias   uint8 [rows, 4] for int8/int4: an fp16 scale then an fp16 bias per row
                 (FBGEMM's ``DEFAULT_SCALE_BIAS_SIZE_IN_BYTES`` = 4); None for fp16/fp32

and a value dequantises to ``q * scale + bias`` (fp32 arithmetic on the fp16 scale and bias).
So a row holds ``cols * bits / 8 + 4`` bytes for int8/int4, which is what the cost model's
:func:`shardplan.estimators.memory.row_bytes` counts (tested exactly in
``tests/test_inference.py``). FBGEMM's CPU kernel aligns rows to 1 byte; its GPU kernel pads each
row to 16 bytes, and it pads each table's block to a 128-byte cache line (at most 127 bytes a
table, not in the estimate).

Quantisation is FBGEMM's own: with FBGEMM installed, its operators
(``FloatToFused8BitRowwiseQuantized``, ``FloatToFusedNBitRowwiseQuantizedSBHalf``, as
``fbgemm_gpu.tbe.utils.quantize.quantize_embs`` calls them); without it, the same formulas in
torch (:func:`_torch_int8`, :func:`_torch_int4`), which give FBGEMM's bytes bit for bit (tested),
and which int4 tables of a dimension that is not a multiple of 4 use anyway (FBGEMM's int4
operator refuses an odd number of packed bytes; its kernels run them).

A table is quantised once, whole (the unsharded quantised model); a shard is a slice of it:
its rows, and its columns' bytes with each row's scale and bias repeated in every column
shard (as TorchRec's sharded ``QuantEmbeddingBagCollection`` slices a quantised weight), so
the sharded model holds exactly the reference's values.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from shardplan.types import DType

__all__ = ["QuantTable", "quantize", "dequantize", "SCALE_BIAS_BYTES"]

SCALE_BIAS_BYTES = 4  # fp16 scale + fp16 bias per row (FBGEMM DEFAULT_SCALE_BIAS_SIZE_IN_BYTES)
_INT8_EPS = 1e-8  # FBGEMM's FloatToFused8BitRowwiseQuantized: inverse_scale = 255 / (range + 1e-8)


@dataclass(frozen=True, kw_only=True, slots=True)
class QuantTable:
    """A table (or a shard of one) in FBGEMM's inference layout (see the module docstring)."""

    dtype: DType
    data: torch.Tensor  # uint8 [rows, cols * bits / 8]
    scale_bias: torch.Tensor | None  # uint8 [rows, 4] (int8/int4) or None

    @property
    def rows(self) -> int:
        return int(self.data.shape[0])

    @property
    def cols(self) -> int:
        return int(self.data.shape[1]) * 8 // self.dtype.bits

    @property
    def nbytes(self) -> int:
        """Bytes held: values plus scale and bias."""
        n = self.data.numel()
        return n + (self.scale_bias.numel() if self.scale_bias is not None else 0)

    def shard(self, row_offset: int, num_rows: int, col_offset: int, num_cols: int
              ) -> QuantTable:
        """Rows ``[row_offset, +num_rows)`` and columns ``[col_offset, +num_cols)`` (int4:
        even column bounds; ``layout.build_layout`` checks them)."""
        bits = self.dtype.bits
        c0, c1 = col_offset * bits // 8, (col_offset + num_cols) * bits // 8
        rows = slice(row_offset, row_offset + num_rows)
        sb = self.scale_bias[rows].clone() if self.scale_bias is not None else None
        return QuantTable(dtype=self.dtype, data=self.data[rows, c0:c1].clone(), scale_bias=sb)

    def perturbed(self, delta: float = 0.01) -> QuantTable:
        """The table with every dequantised value moved by about ``delta`` (int8/int4: the
        bias; floats: the values). To test that validation catches a wrong shard."""
        if self.scale_bias is not None:
            sb = self.scale_bias.clone()
            b = sb[:, 2:4].view(torch.float16)
            b += delta
            return QuantTable(dtype=self.dtype, data=self.data.clone(), scale_bias=sb)
        vals = dequantize(self) + delta
        return quantize(vals, self.dtype, use_fbgemm=False)


def _fbgemm_ops() -> bool:
    try:
        import fbgemm_gpu  # noqa: F401
    except Exception:  # noqa: BLE001 - any import failure means "not usable here"
        return False
    return hasattr(torch.ops.fbgemm, "FloatToFused8BitRowwiseQuantized")


def quantize(weight: torch.Tensor, dtype: DType, *, use_fbgemm: bool | None = None
             ) -> QuantTable:
    """``weight`` (fp32 [rows, cols]) stored as ``dtype``, row-wise, in FBGEMM's layout.

    Args:
        weight: the fp32 table.
        dtype: fp32, fp16, int8 or int4 (int4: even ``cols``).
        use_fbgemm: FBGEMM's operators (default: where installed) or the torch formulas.

    Raises:
        ValueError: bf16, or int4 with an odd number of columns (``build_layout`` rejects
            both with a message naming the table first).
    """
    w = weight.detach().float().contiguous()
    if dtype is DType.FP32:
        return QuantTable(dtype=dtype, data=w.view(torch.uint8).clone(), scale_bias=None)
    if dtype is DType.FP16:
        return QuantTable(dtype=dtype, data=w.half().view(torch.uint8).clone(), scale_bias=None)
    if dtype is DType.INT4 and w.shape[1] % 2:
        raise ValueError(f"int4 needs an even number of columns, got {w.shape[1]}")
    if dtype not in (DType.INT8, DType.INT4):
        raise ValueError(f"no inference layout for dtype {dtype.value}")
    fb = _fbgemm_ops() if use_fbgemm is None else use_fbgemm
    if fb:
        import fbgemm_gpu  # noqa: F401 (registers torch.ops.fbgemm)
    if dtype is DType.INT8:
        if fb:  # fp32 scale and bias after the values; FBGEMM's TBE keeps them as fp16
            q = torch.ops.fbgemm.FloatToFused8BitRowwiseQuantized(w)
            sb = q[:, -8:].contiguous().view(torch.float32).to(torch.float16)
            return QuantTable(dtype=dtype, data=q[:, :-8].contiguous().clone(),
                              scale_bias=sb.contiguous().view(torch.uint8).clone())
        return _torch_int8(w)
    if fb and w.shape[1] % 4 == 0:  # FBGEMM's op wants an even number of packed bytes
        q = torch.ops.fbgemm.FloatToFusedNBitRowwiseQuantizedSBHalf(w, 4)
        return QuantTable(dtype=dtype, data=q[:, :-4].contiguous().clone(),
                          scale_bias=q[:, -4:].contiguous().clone())
    return _torch_int4(w)


def _torch_int8(w: torch.Tensor) -> QuantTable:
    """FBGEMM's 8-bit row-wise formula (fp32 scale = range / 255, bias = min), then scale
    and bias stored as fp16, as ``quantize_embs`` does."""
    lo = w.min(dim=1).values
    hi = w.max(dim=1).values
    rng = hi - lo
    inv = 255.0 / (rng + _INT8_EPS)
    q = torch.round((w - lo[:, None]) * inv[:, None]).clamp_(0, 255).to(torch.uint8)
    sb = torch.stack([rng / 255.0, lo], dim=1).to(torch.float16)
    return QuantTable(dtype=DType.INT8, data=q, scale_bias=sb.contiguous().view(torch.uint8))


def _torch_int4(w: torch.Tensor) -> QuantTable:
    """FBGEMM's n-bit row-wise formula with fp16 scale and bias (bias = min rounded to fp16,
    scale = (max - bias) / 15 rounded to fp16, 1 where that is 0)."""
    bias = w.min(dim=1).values.half()
    hi = w.max(dim=1).values
    scale = ((hi - bias.float()) / 15.0).half()
    scale = torch.where(scale == 0, torch.ones_like(scale), scale)
    inv = 1.0 / scale.float()
    bad = torch.isinf(inv)
    scale = torch.where(bad, torch.ones_like(scale), scale)
    inv = torch.where(bad, torch.ones_like(inv), inv)
    q = torch.round((w - bias.float()[:, None]) * inv[:, None]).clamp_(0, 15).to(torch.uint8)
    packed = (q[:, 0::2] | (q[:, 1::2] << 4)).contiguous()
    sb = torch.stack([scale, bias], dim=1).contiguous().view(torch.uint8)
    return QuantTable(dtype=DType.INT4, data=packed, scale_bias=sb)


def dequantize_rows(data: torch.Tensor, scale_bias: torch.Tensor | None, dtype: DType
                    ) -> torch.Tensor:
    """fp32 values of rows given as (``data``, ``scale_bias``) byte tensors."""
    if dtype is DType.FP32:
        return data.contiguous().view(torch.float32)
    if dtype is DType.FP16:
        return data.contiguous().view(torch.float16).float()
    sb = scale_bias.contiguous().view(torch.float16).float()
    if dtype is DType.INT8:
        q = data.float()
    else:
        q = torch.stack([data & 0xF, data >> 4], dim=2).reshape(data.shape[0], -1).float()
    return q * sb[:, 0:1] + sb[:, 1:2]


def dequantize(table: QuantTable) -> torch.Tensor:
    """The table's fp32 values [rows, cols]."""
    return dequantize_rows(table.data, table.scale_bias, table.dtype)
