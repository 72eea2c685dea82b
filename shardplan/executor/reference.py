"""The unsharded reference: every table whole, the whole global batch, the same update rules.

Row-wise Adagrad on a column-sharded table keeps one state per row *per column shard*
(FBGEMM and TorchRec do the same: each column shard is its own table to the kernel), so the
reference applies the update per column block of the plan; every other sharding type has a
single block and the reference is the plain unsharded model.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from shardplan.executor.batches import TableBatch, init_table
from shardplan.executor.kernels import OptimizerConfig, apply_update
from shardplan.executor.layout import Layout
from shardplan.types import Optimizer, Workload

__all__ = ["Reference"]


class Reference:
    """The unsharded model of ``workload`` with the column blocks of ``layout``."""

    def __init__(self, workload: Workload, layout: Layout, cfg: OptimizerConfig, seed: int) -> None:
        self.cfg = cfg
        self.layout = layout
        self.weights = [init_table(seed, i, t.num_embeddings, t.embedding_dim)
                        for i, t in enumerate(workload.tables)]
        self.states = [torch.zeros(t.num_embeddings, len(layout.col_blocks[i]))
                       if cfg.optimizer is Optimizer.ROWWISE_ADAGRAD else None
                       for i, t in enumerate(workload.tables)]

    def step(self, batch: list[TableBatch]) -> list[torch.Tensor]:
        """Forward the global batch, then update every table. Returns pooled outputs
        [B_global, dim] per table, from the weights before the update."""
        outs = []
        for ti, (w, tb) in enumerate(zip(self.weights, batch)):
            wp = w.clone().requires_grad_(True)
            out = F.embedding_bag(tb.ids, wp, tb.offsets[:-1], mode="sum", sparse=True)
            out.backward(tb.grad)
            g = wp.grad.coalesce()
            rows, vals = g.indices()[0], g.values()
            for bi, (c0, nc) in enumerate(self.layout.col_blocks[ti]):
                block = w[:, c0:c0 + nc].clone()
                st = self.states[ti]
                col_state = None if st is None else st[:, bi].clone()
                apply_update(block, col_state, rows, vals[:, c0:c0 + nc].contiguous(), self.cfg)
                w[:, c0:c0 + nc] = block
                if st is not None:
                    st[:, bi] = col_state
            outs.append(out.detach())
        return outs

    def step_replicas(self, batches: list[list[TableBatch]]) -> list[list[torch.Tensor]]:
        """2D: every replica group steps on its own batch from the same weights, then weights
        and optimizer states are averaged (``DMPCollection.sync()`` every step). Returns each
        group's pooled outputs."""
        w0 = [w.clone() for w in self.weights]
        s0 = [None if s is None else s.clone() for s in self.states]
        outs, ws, ss = [], [], []
        for b in batches:
            self.weights = [w.clone() for w in w0]
            self.states = [None if s is None else s.clone() for s in s0]
            outs.append(self.step(b))
            ws.append(self.weights)
            ss.append(self.states)
        n = len(batches)
        self.weights = [sum(w[i] for w in ws) / n for i in range(len(w0))]
        self.states = [None if s0[i] is None else sum(s[i] for s in ss) / n
                       for i in range(len(s0))]
        return outs

    def state_of(self, table_index: int, row_offset: int, num_rows: int,
                 col_offset: int) -> torch.Tensor | None:
        """The row-wise state of one shard (rows, and the column block starting at col_offset)."""
        st = self.states[table_index]
        if st is None:
            return None
        blocks = [c0 for c0, _ in self.layout.col_blocks[table_index]]
        bi = blocks.index(col_offset) if col_offset in blocks else 0
        return st[row_offset:row_offset + num_rows, bi]
