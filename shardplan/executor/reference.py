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
        #: 2D, between syncs: each replica group's (weights, states); None right after a sync
        self._replicas: list[tuple[list, list]] | None = None

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

    def step_replicas(self, batches: list[list[TableBatch]], sync: bool = True
                      ) -> list[list[torch.Tensor]]:
        """2D: every replica group steps on its own batch from its own weights (all equal
        after a sync); with ``sync`` (``DMPCollection.sync()``, every ``sync_steps`` steps)
        the groups' weights and optimizer states are then averaged. Between syncs the groups
        train apart (local SGD): :meth:`select_replica` picks the one to compare with.
        Returns each group's pooled outputs."""
        n = len(batches)
        if self._replicas is None or len(self._replicas) != n:
            self._replicas = [([w.clone() for w in self.weights],
                               [None if s is None else s.clone() for s in self.states])
                              for _ in range(n)]
        outs = []
        for q, b in enumerate(batches):
            self.weights, self.states = self._replicas[q]
            outs.append(self.step(b))
            self._replicas[q] = (self.weights, self.states)
        if sync:
            k = len(self.weights)
            self.weights = [sum(r[0][i] for r in self._replicas) / n for i in range(k)]
            self.states = [None if self._replicas[0][1][i] is None
                           else sum(r[1][i] for r in self._replicas) / n for i in range(k)]
            self._replicas = None
        return outs

    def select_replica(self, group: int) -> None:
        """Make replica group ``group``'s weights and states the reference's (a no-op right
        after a sync, when all groups hold the average)."""
        if self._replicas is not None:
            self.weights, self.states = self._replicas[group]

    def state_of(self, table_index: int, row_offset: int, num_rows: int,
                 col_offset: int) -> torch.Tensor | None:
        """The row-wise state of one shard (rows, and the column block starting at col_offset)."""
        st = self.states[table_index]
        if st is None:
            return None
        blocks = [c0 for c0, _ in self.layout.col_blocks[table_index]]
        bi = blocks.index(col_offset) if col_offset in blocks else 0
        return st[row_offset:row_offset + num_rows, bi]
