"""Memory estimators: bytes a shard (or a rank) holds, per tier.

Plain functions of numbers, so each formula can be checked by hand (``docs/cost-model.md``
writes them out). The cost model composes them per sharding type and placement.
"""

from __future__ import annotations

import math

from shardplan.types import DType, Optimizer

FP32_BYTES = 4  # optimizer state, pooled outputs (default) and their gradients are fp32
ID_BYTES = 8  # TBE converts ids to int64 (TorchRec shard_estimators: "in TBE they get converted to int64 anyway")
LENGTH_BYTES = 4  # KJT lengths/offsets sent by input distribution are int32 (TorchRec KJT default)
QUANT_SCALE_BIAS_BYTES = 4  # int8/int4 rows carry an fp16 scale and an fp16 bias (FBGEMM DEFAULT_SCALE_BIAS_SIZE_IN_BYTES = 4)
CACHE_AUX_BYTES_PER_ROW = 4  # UVM caching: cache_index_table_map, int32 per row (FBGEMM construct_cache_state)
CACHE_AUX_BYTES_PER_SLOT = 16  # UVM caching: lxu_cache_state + lru_state, int64 each per cache slot (FBGEMM)
BACKWARD_WORKSPACE_BYTES_PER_ID = 24  # FBGEMM backward sorts ids: int64 sorted linear ids + int32 infos + int64 run ids + int32 run lengths (transpose_embedding_input)

# Optimizer state per element / per row, in fp32 values (FBGEMM split TBE optimizers keep
# their state in fp32 whatever the weight dtype).
_STATE_VALUES_PER_ELEMENT = {Optimizer.NONE: 0, Optimizer.SGD: 0, Optimizer.ADAGRAD: 1,
                             Optimizer.ROWWISE_ADAGRAD: 0, Optimizer.ADAM: 2}
_STATE_VALUES_PER_ROW = {Optimizer.NONE: 0, Optimizer.SGD: 0, Optimizer.ADAGRAD: 0,
                         Optimizer.ROWWISE_ADAGRAD: 1, Optimizer.ADAM: 0}


def row_bytes(cols: int, dtype: DType) -> float:
    """Bytes of one stored row of ``cols`` values: the values, plus the per-row scale and bias
    of row-wise quantised dtypes (int8/int4)."""
    b = cols * dtype.bits / 8
    return b + QUANT_SCALE_BIAS_BYTES if dtype.is_quantized else b


def weight_bytes(rows: int, cols: int, dtype: DType) -> float:
    """Bytes of a ``rows`` x ``cols`` block of weights stored as ``dtype``."""
    return rows * row_bytes(cols, dtype)


def optimizer_state_bytes_per_row(optimizer: Optimizer, cols: int) -> float:
    """fp32 optimizer state per row: sgd 0, adagrad ``cols``, rowwise_adagrad 1, adam 2x``cols``."""
    return FP32_BYTES * (_STATE_VALUES_PER_ELEMENT[optimizer] * cols
                         + _STATE_VALUES_PER_ROW[optimizer])


def optimizer_state_bytes(optimizer: Optimizer, rows: int, cols: int) -> float:
    """fp32 optimizer state of a ``rows`` x ``cols`` block."""
    return rows * optimizer_state_bytes_per_row(optimizer, cols)


def gradient_element_bytes(dtype: DType) -> float:
    """Bytes of one gradient value: the weight dtype, fp32 for quantised tables (no int grads)."""
    return FP32_BYTES if dtype.is_quantized else dtype.bits / 8


def cache_bytes(rows: int, cols: int, dtype: DType, cache_ratio: float) -> float:
    """HBM held by a UVM cache of ``cache_ratio`` x ``rows`` rows: the cached rows (weights
    only; optimizer state stays in host memory) plus FBGEMM's cache bookkeeping (an int32 per
    row, two int64 per slot)."""
    slots = math.ceil(cache_ratio * rows)
    return slots * (row_bytes(cols, dtype) + CACHE_AUX_BYTES_PER_SLOT) + rows * CACHE_AUX_BYTES_PER_ROW


def input_bytes(ids: float, samples: float) -> float:
    """Bytes of a batch of input: ``ids`` int64 ids plus one int32 length per (sample, feature)."""
    return ids * ID_BYTES + samples * LENGTH_BYTES


def pooled_bytes(samples: float, cols: int, out_bytes: float) -> float:
    """Bytes of ``samples`` pooled vectors (one per sample and feature) of ``cols`` values."""
    return samples * cols * out_bytes


def backward_workspace_bytes(ids: float) -> float:
    """Scratch of the fused backward (sorting and segmenting the ids it updates)."""
    return ids * BACKWARD_WORKSPACE_BYTES_PER_ID
