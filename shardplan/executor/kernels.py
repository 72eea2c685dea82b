"""Local lookups: one batched kernel over a rank's shards, forward and backward with the
optimizer update.

Two backends, chosen by :func:`choose_backend`:
    ``fbgemm``: FBGEMM's table-batched embedding bags (``SplitTableBatchedEmbeddingBagsCodegen``;
        ``fbgemm-gpu-cpu`` on CPU, ``fbgemm-gpu`` on GPU). SGD and row-wise Adagrad are fused
        into the backward, as in TorchRec.
    ``torch``: ``torch.nn.functional.embedding_bag`` per shard with sparse gradients and the
        same update rules applied after the backward. Used where FBGEMM is absent.

Update rules (both backends, and the reference), per table and step, with ``g`` the
gradient summed over every occurrence of a row in the batch:
    SGD:                 w[r] -= lr * g[r]
    row-wise Adagrad:    s[r] += mean_j g[r, j]^2;  w[r] -= lr * g[r] / (sqrt(s[r]) + eps)
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Sequence

import torch
import torch.nn.functional as F

from shardplan.errors import SpecError
from shardplan.types import Optimizer

__all__ = ["Backend", "OptimizerConfig", "LocalLookup", "choose_backend", "fbgemm_available",
           "make_lookup", "apply_update"]

# Defaults of the optimizer the executor runs; recorded in every report.
LEARNING_RATE = 0.05  # chosen so a few steps change weights visibly; any value works
ADAGRAD_EPS = 1e-8  # FBGEMM's default eps


class Backend(StrEnum):
    FBGEMM = "fbgemm"
    TORCH = "torch"


@dataclass(frozen=True, kw_only=True, slots=True)
class OptimizerConfig:
    optimizer: Optimizer
    learning_rate: float = LEARNING_RATE
    eps: float = ADAGRAD_EPS


def fbgemm_available(device: torch.device) -> bool:
    """Whether FBGEMM's table-batched kernels import and support ``device``."""
    try:
        import fbgemm_gpu  # noqa: F401
        from fbgemm_gpu.split_table_batched_embeddings_ops_training import (  # noqa: F401
            SplitTableBatchedEmbeddingBagsCodegen,
        )
    except Exception:  # noqa: BLE001 - any import failure means "not usable here"
        return False
    if device.type == "cuda":
        return hasattr(torch.ops.fbgemm, "split_embedding_codegen_lookup_rowwise_adagrad_function")
    return True


def choose_backend(requested: str | None, device: torch.device) -> Backend:
    """``requested`` (``fbgemm``/``torch``/``auto``/None) resolved against what is installed.

    Raises:
        SpecError: ``fbgemm`` was asked for but is not installed for this device.
    """
    if requested in (None, "auto"):
        return Backend.FBGEMM if fbgemm_available(device) else Backend.TORCH
    try:
        b = Backend(requested)
    except ValueError:
        raise SpecError(f"unknown kernel backend {requested!r}; choose fbgemm, torch or auto",
                        key_path="backend") from None
    if b is Backend.FBGEMM and not fbgemm_available(device):
        raise SpecError(f"FBGEMM's table-batched kernels are not installed for {device.type}; "
                        "install fbgemm-gpu(-cpu) or pass --backend torch", key_path="backend")
    return b


def apply_update(weight: torch.Tensor, state: torch.Tensor | None, rows: torch.Tensor,
                 grad_rows: torch.Tensor, cfg: OptimizerConfig) -> None:
    """Update ``weight[rows]`` in place from the summed gradient ``grad_rows`` (rows unique)."""
    if cfg.optimizer is Optimizer.SGD:
        weight.index_add_(0, rows, grad_rows, alpha=-cfg.learning_rate)
        return
    if state is None:
        raise ValueError("row-wise Adagrad needs a state tensor")
    state.index_add_(0, rows, grad_rows.pow(2).mean(dim=1))
    step = grad_rows / (state.index_select(0, rows).sqrt() + cfg.eps).unsqueeze(1)
    weight.index_add_(0, rows, step, alpha=-cfg.learning_rate)


class LocalLookup:
    """Pooled (sum) lookups over ``len(shapes)`` local tables that share one batch size.

    ``forward(indices, offsets)`` takes FBGEMM's layout: ``offsets`` has ``T * B + 1`` entries,
    table-major; it returns [B, sum of dims]. ``backward(grad)`` back-propagates and applies
    the optimizer (fused in FBGEMM).
    """

    backend: Backend

    def __init__(self, shapes: Sequence[tuple[int, int]], cfg: OptimizerConfig,
                 device: torch.device) -> None:
        self.shapes = tuple(shapes)
        self.cfg = cfg
        self.device = device
        self._out: torch.Tensor | None = None

    def forward(self, indices: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def backward(self, grad: torch.Tensor) -> None:
        raise NotImplementedError

    def weights(self) -> list[torch.Tensor]:
        raise NotImplementedError

    def states(self) -> list[torch.Tensor | None]:
        raise NotImplementedError

    def load(self, weights: Sequence[torch.Tensor]) -> None:
        with torch.no_grad():
            for w, src in zip(self.weights(), weights):
                w.copy_(src)

    @property
    def param_bytes(self) -> int:
        n = sum(w.numel() * w.element_size() for w in self.weights())
        return n + sum(s.numel() * s.element_size() for s in self.states() if s is not None)


class TorchLookup(LocalLookup):
    backend = Backend.TORCH

    def __init__(self, shapes: Sequence[tuple[int, int]], cfg: OptimizerConfig,
                 device: torch.device) -> None:
        super().__init__(shapes, cfg, device)
        self._w = [torch.zeros(r, d, device=device, requires_grad=True) for r, d in self.shapes]
        self._s = [torch.zeros(r, device=device) if cfg.optimizer is Optimizer.ROWWISE_ADAGRAD
                   else None for r, _ in self.shapes]

    def forward(self, indices: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
        T = len(self.shapes)
        B = (offsets.numel() - 1) // T if T else 0
        outs = []
        for t, w in enumerate(self._w):
            lo, hi = offsets[t * B], offsets[(t + 1) * B]
            off = offsets[t * B:(t + 1) * B] - lo
            outs.append(F.embedding_bag(indices[lo:hi], w, off, mode="sum", sparse=True))
        self._out = torch.cat(outs, dim=1) if outs else torch.zeros(B, 0, device=self.device)
        return self._out.detach()

    def backward(self, grad: torch.Tensor) -> None:
        if not self._w or self._out is None:
            return
        self._out.backward(grad)
        self._out = None
        with torch.no_grad():
            for w, s in zip(self._w, self._s):
                g = w.grad
                w.grad = None
                if g is None:
                    continue
                g = g.coalesce()
                apply_update(w, s, g.indices()[0], g.values(), self.cfg)

    def weights(self) -> list[torch.Tensor]:
        return [w.detach() for w in self._w]

    def states(self) -> list[torch.Tensor | None]:
        return list(self._s)


class FbgemmLookup(LocalLookup):
    backend = Backend.FBGEMM

    def __init__(self, shapes: Sequence[tuple[int, int]], cfg: OptimizerConfig,
                 device: torch.device) -> None:
        super().__init__(shapes, cfg, device)
        from fbgemm_gpu.split_embedding_configs import EmbOptimType
        from fbgemm_gpu.split_table_batched_embeddings_ops_common import EmbeddingLocation
        from fbgemm_gpu.split_table_batched_embeddings_ops_training import (
            ComputeDevice,
            SplitTableBatchedEmbeddingBagsCodegen,
        )

        on_gpu = device.type == "cuda"
        loc = EmbeddingLocation.DEVICE if on_gpu else EmbeddingLocation.HOST
        cd = ComputeDevice.CUDA if on_gpu else ComputeDevice.CPU
        opt = {Optimizer.SGD: EmbOptimType.EXACT_SGD,
               Optimizer.ROWWISE_ADAGRAD: EmbOptimType.EXACT_ROWWISE_ADAGRAD}[cfg.optimizer]
        self._tbe = (SplitTableBatchedEmbeddingBagsCodegen(
            [(r, d, loc, cd) for r, d in self.shapes], optimizer=opt,
            learning_rate=cfg.learning_rate, eps=cfg.eps, device=device)
            if self.shapes else None)

    def forward(self, indices: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
        if self._tbe is None:
            return torch.zeros(offsets.numel() - 1, 0, device=self.device)
        self._out = self._tbe(indices, offsets)
        return self._out.detach()

    def backward(self, grad: torch.Tensor) -> None:
        if self._out is None:
            return
        self._out.backward(grad)  # the optimizer update is fused into this backward
        self._out = None

    def weights(self) -> list[torch.Tensor]:
        return [w.detach() for w in self._tbe.split_embedding_weights()] if self._tbe else []

    def states(self) -> list[torch.Tensor | None]:
        if self._tbe is None:
            return []
        if self.cfg.optimizer is Optimizer.SGD:
            return [None] * len(self.shapes)
        return [s[0].detach() for s in self._tbe.split_optimizer_states()]


def make_lookup(backend: Backend, shapes: Sequence[tuple[int, int]], cfg: OptimizerConfig,
                device: torch.device) -> LocalLookup:
    """A batched lookup over tables of ``shapes`` (rows, dim) with the given backend."""
    cls = FbgemmLookup if backend is Backend.FBGEMM else TorchLookup
    return cls(shapes, cfg, device)
