"""Deterministic random inputs: initial tables, batches with the workload's pooling factors,
and the upstream gradients of the pooled outputs.

Every rank draws the same global batch from the same seed and keeps its own slice of
samples (samples ``[r * B, (r + 1) * B)`` belong to rank ``r``), so the unsharded reference
sees exactly the data the sharded model saw.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

import math

from shardplan.types import AccessSkew, IdOrder, TableSpec, Workload

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


def popularity_ranks(access: AccessSkew | None, rows: int, n: int, g: torch.Generator) -> torch.Tensor:
    """``n`` draws of popularity ranks in [0, rows) (0 the most frequent) from the table's
    access skew: uniform without one; Zipf ``s`` by inverting the continuous power law on
    [1, rows + 1) (the discrete law to within rounding); hot rows: the hot fraction with
    probability ``hot_access_fraction``, uniform within hot and within cold rows."""
    if access is None or not access.has_model:
        return torch.randint(0, rows, (n,), generator=g)
    u = torch.rand(n, generator=g, dtype=torch.float64)
    if access.zipf_exponent is not None:
        s, top = access.zipf_exponent, float(rows + 1)
        if abs(s - 1.0) < 1e-9:
            x = torch.exp(u * math.log(top))
        else:
            x = (1.0 + u * (top ** (1.0 - s) - 1.0)) ** (1.0 / (1.0 - s))
        return (x.floor().to(torch.int64) - 1).clamp_(0, rows - 1)
    hot = max(1, min(rows - 1, int(round(access.hot_row_fraction * rows))))
    v = torch.rand(n, generator=g, dtype=torch.float64)
    in_hot = u < access.hot_access_fraction
    r_hot = (v * hot).to(torch.int64)
    r_cold = hot + (v * (rows - hot)).to(torch.int64)
    return torch.where(in_hot, r_hot, r_cold).clamp_(0, rows - 1)


def ids_of(table: TableSpec, n: int, g: torch.Generator) -> torch.Tensor:
    """``n`` ids of ``table``: popularity ranks, laid out by its ``id_order``: as they are for
    ``frequency`` (row 0 the hottest), through a fixed bijective hash of the rows for
    ``hashed`` (so hot rows spread evenly over row blocks)."""
    ranks = popularity_ranks(table.access, table.num_embeddings, n, g)
    if table.access is None or table.access.id_order is IdOrder.FREQUENCY:
        return ranks
    rows = table.num_embeddings
    mult = _coprime_multiplier(rows)
    return (ranks * mult + rows // 3) % rows


def _coprime_multiplier(rows: int) -> int:
    """A multiplier coprime to ``rows`` near rows x golden ratio: ``k -> k*m + c mod rows`` is a
    bijection that scatters neighbouring ranks across the table."""
    m = max(1, int(rows * 0.6180339887)) | 1
    while math.gcd(m, rows) != 1:
        m += 2
    return m % rows if rows > 1 else 0


def make_batch(workload: Workload, seed: int, step: int, batch_global: int) -> list[TableBatch]:
    """Step ``step``'s global batch for every table of ``workload`` (workload order).

    Lengths are Poisson with the table's pooling factor as mean; ids follow the table's access
    skew and id order (:func:`ids_of`; uniform over rows without a skew).
    """
    out = []
    for ti, t in enumerate(workload.tables):
        g = _gen(seed, 2, step, ti)
        lengths = torch.poisson(torch.full((batch_global,), float(t.pooling_factor)),
                                generator=g).to(torch.int64)
        ids = ids_of(t, int(lengths.sum()), g)
        offsets = torch.zeros(batch_global + 1, dtype=torch.int64)
        offsets[1:] = torch.cumsum(lengths, 0)
        grad = torch.randn(batch_global, t.embedding_dim, generator=g)
        out.append(TableBatch(lengths=lengths, ids=ids, offsets=offsets, grad=grad))
    return out
