"""Deterministic random inputs: initial tables, batches with the workload's pooling factors,
and the upstream gradients of the pooled outputs.

Every rank draws the same global batch from the same seed and keeps its own slice of
samples (samples ``[r * B, (r + 1) * B)`` belong to rank ``r``), so the unsharded reference
sees exactly the data the sharded model saw.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from shardplan.types import Workload

__all__ = ["TableBatch", "init_table", "make_batch"]

INIT_RANGE = 0.1  # weights start uniform in [-0.1, 0.1]


def _gen(*key: int) -> torch.Generator:
    g = torch.Generator()
    s = 0
    for k in key:
        s = (s * 1_000_003 + int(k)) % (2**63 - 1)
    g.manual_seed(s)
    return g


def init_table(seed: int, table_index: int, rows: int, dim: int) -> torch.Tensor:
    """The initial weights of table ``table_index``: [rows, dim] fp32, uniform in ±INIT_RANGE."""
    w = torch.rand(rows, dim, generator=_gen(seed, 1, table_index))
    return (w * 2.0 - 1.0) * INIT_RANGE


@dataclass(frozen=True, kw_only=True, slots=True)
class TableBatch:
    """One table's input for the global batch, and the gradient of its pooled output.

    Attributes:
        lengths: ids per sample, [B_global] int64.
        ids: the ids, sample-major, [sum(lengths)] int64.
        offsets: [B_global + 1] start of each sample's ids in ``ids``.
        grad: d(loss)/d(pooled output), [B_global, dim] fp32.
    """

    lengths: torch.Tensor
    ids: torch.Tensor
    offsets: torch.Tensor
    grad: torch.Tensor

    def sample_slice(self, start: int, stop: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(lengths, ids) of samples [start, stop)."""
        lo, hi = int(self.offsets[start]), int(self.offsets[stop])
        return self.lengths[start:stop], self.ids[lo:hi]


def make_batch(workload: Workload, seed: int, step: int, batch_global: int) -> list[TableBatch]:
    """Step ``step``'s global batch for every table of ``workload`` (workload order).

    Lengths are Poisson with the table's pooling factor as mean; ids are uniform over rows.
    """
    out = []
    for ti, t in enumerate(workload.tables):
        g = _gen(seed, 2, step, ti)
        lengths = torch.poisson(torch.full((batch_global,), float(t.pooling_factor)),
                                generator=g).to(torch.int64)
        ids = torch.randint(0, t.num_embeddings, (int(lengths.sum()),), generator=g)
        offsets = torch.zeros(batch_global + 1, dtype=torch.int64)
        offsets[1:] = torch.cumsum(lengths, 0)
        grad = torch.randn(batch_global, t.embedding_dim, generator=g)
        out.append(TableBatch(lengths=lengths, ids=ids, offsets=offsets, grad=grad))
    return out
