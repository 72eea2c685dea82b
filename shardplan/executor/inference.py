"""Inference steps: the sharded tables of one rank in their stored dtypes, and one forward step
across all ranks, as TorchRec's sharded ``QuantEmbeddingBagCollection`` runs it.

A step runs the forward stages of a training step (:mod:`.sharded`) and nothing after them:

    input_dist   per sharding group, all-to-all of the lengths then the ids (pipelined: the
                 next batch's, during this one, as a serving pipeline overlaps requests)
    fwd_compute  each group's forward-only batched lookup over its quantised slots
                 (:mod:`.quant_kernels`: FBGEMM's ``IntNBitTableBatchedEmbeddingBagsCodegen``
                 or dequantise-then-``embedding_bag``), fp32 outputs; DP tables: one local
                 kernel over the rank's full replicas, its own samples only
    fwd_comm     output dist per group, exactly the training forward's (TW/CW/TWCW all-to-all,
                 RW reduce-scatter, TWRW/GRID reduce-scatter in the host then along rails)

No gradients travel, nothing is updated, data-parallel replicas are never synchronised.
Every table is quantised whole once (:func:`.quant.quantize`) and each shard holds a slice of
it, so the sharded model holds exactly the unsharded quantised model's values.
"""

from __future__ import annotations

import torch

from shardplan.executor.batches import TableBatch, init_table
from shardplan.executor.clock import Clock, Pending, WallClock
from shardplan.executor.collectives import Comm
from shardplan.executor.group_dists import GroupDists
from shardplan.executor.kernels import Backend
from shardplan.executor.layout import HOST_ROW_TYPES, Layout, Slot
from shardplan.executor.quant import QuantTable, quantize
from shardplan.executor.quant_kernels import QuantLookup, make_quant_lookup
from shardplan.executor.sharded import StepOutput
from shardplan.types import GroupKey, ShardingType, Stage

__all__ = ["InferenceEmbeddings", "quantized_tables"]


def quantized_tables(layout: Layout, seed: int, table_rows: list[int],
                     only: set[int] | None = None) -> dict[int, QuantTable]:
    """Every table (or those in ``only``) initialised from ``seed`` and quantised whole to its
    dtype: the unsharded quantised model."""
    out = {}
    for ti, dim in enumerate(layout.dims):
        if only is None or ti in only:
            out[ti] = quantize(init_table(seed, ti, table_rows[ti], dim), layout.dtypes[ti])
    return out


class InferenceEmbeddings(GroupDists):
    """This rank's shards of every table of an inference plan, and the forward step.

    Args:
        layout: every rank's shards (an inference layout).
        comm: process groups.
        backend: kernel backend.
        seed: initial weights (quantised to each table's dtype).
        table_rows: rows per table.
        clock: how stages are timed (default: the wall clock).
        pipelined: run the next batch's input dist during this batch.
        corrupt: a table whose every local copy is perturbed after quantising (tests).
    """

    def __init__(self, layout: Layout, comm: Comm, backend: Backend, seed: int,
                 table_rows: list[int], *, clock: Clock | None = None, pipelined: bool = False,
                 corrupt: str | None = None) -> None:
        self.layout = layout
        self.comm = comm
        self.rank = comm.rank
        self.pipelined = pipelined
        self.clock = clock or WallClock(comm.rank, layout.world_size, comm.device)
        dev = comm.device
        self.group_slots: dict[GroupKey, tuple[Slot, ...]] = {
            key: layout.group_slots(key, self.rank) for key in layout.groups}
        self.slots: tuple[Slot, ...] = tuple(s for st in layout.groups
                                             for s in self.group_slots[st])
        needed = {s.table_index for s in self.slots} | {d.table_index for d in layout.dp_tables}
        full = quantized_tables(layout, seed, table_rows, needed)
        if corrupt is not None:
            full = {ti: (q.perturbed() if layout.table_names[ti] == corrupt else q)
                    for ti, q in full.items()}
        self.lookups: dict[GroupKey, QuantLookup] = {
            key: make_quant_lookup(backend, [full[s.table_index].shard(
                s.row_offset, s.num_rows, s.col_offset, s.num_cols) for s in sl], dev)
            for key, sl in self.group_slots.items() if sl}
        self.dp_lookup: QuantLookup | None = (
            make_quant_lookup(backend, [full[d.table_index] for d in layout.dp_tables], dev)
            if layout.dp_tables else None)
        self.buckets: list[list[int]] = []  # no data-parallel gradients to all-reduce
        self.peak_buffer_bytes = 0
        self._live = 0
        self._pending: Pending | None = None

    # -- accounting ---------------------------------------------------------------------------

    def _all_lookups(self) -> list[QuantLookup]:
        out = list(self.lookups.values())
        return out + ([self.dp_lookup] if self.dp_lookup is not None else [])

    @property
    def weight_bytes(self) -> int:
        """Values plus scales and biases of every local shard and replica."""
        return sum(lk.weight_bytes for lk in self._all_lookups())

    @property
    def param_bytes(self) -> int:
        """What the kernels allocated for them."""
        return sum(lk.param_bytes for lk in self._all_lookups())

    def _track(self, *tensors: torch.Tensor) -> None:
        self._live += sum(t.numel() * t.element_size() for t in tensors)
        self.peak_buffer_bytes = max(self.peak_buffer_bytes, self._live)

    # -- the step -----------------------------------------------------------------------------

    def step(self, batch: list[TableBatch], next_batch: list[TableBatch] | None = None
             ) -> StepOutput:
        """One forward over this rank's part of ``batch`` (pooled outputs of its samples)."""
        lay, r, B = self.layout, self.rank, self.layout.batch_per_rank
        dev = self.comm.device
        clock = self.clock
        self._live = 0
        local = [tb.sample_slice(r * B, (r + 1) * B) for tb in batch]
        if self._pending is not None:
            inputs = self._pending.wait()
            self._pending = None
        else:
            inputs = clock.collective(Stage.INPUT_DIST, lambda: self._input_dist(local, None))
        if self.pipelined and next_batch is not None:
            nxt = [tb.sample_slice(r * B, (r + 1) * B) for tb in next_batch]
            group = self.comm.data
            self._pending = clock.issue(Stage.INPUT_DIST,
                                        lambda: self._input_dist(nxt, group), group)

        def forward() -> tuple[dict[GroupKey, torch.Tensor], torch.Tensor | None]:
            with torch.no_grad():
                outs = {st: self.lookups[st].forward(inputs[st].indices, inputs[st].offsets)
                        for st in self.lookups}
                dp_out = None
                if self.dp_lookup is not None:
                    lengths = torch.cat([local[d.table_index][0] for d in lay.dp_tables])
                    ids = torch.cat([local[d.table_index][1] for d in lay.dp_tables])
                    off = torch.zeros(lengths.numel() + 1, dtype=torch.int64)
                    off[1:] = torch.cumsum(lengths, 0)
                    dp_out = self.dp_lookup.forward(ids.to(dev), off.to(dev))
            return outs, dp_out

        outs, dp_out = clock.compute(Stage.FWD_COMPUTE, forward)
        self._track(*outs.values(), *(() if dp_out is None else (dp_out,)))
        pooled = [torch.zeros(B, dim, device=dev) for dim in lay.dims]
        c = 0
        for d in lay.dp_tables:
            pooled[d.table_index] = dp_out[:, c:c + d.dim]
            c += d.dim
        with torch.no_grad():
            for key in lay.groups:
                out, st = outs.get(key), key.sharding_type
                if st is ShardingType.ROW_WISE and key.ranks is None:
                    clock.collective(Stage.FWD_COMM, lambda: self._fwd_rows(out, pooled))
                elif st is ShardingType.ROW_WISE:
                    self._fwd_span_rows(key, out, pooled)
                elif st in HOST_ROW_TYPES:
                    self._fwd_host_rows(key, out, pooled)
                else:
                    clock.collective(Stage.FWD_COMM,
                                     lambda: self._fwd_columns(key, out, pooled))
        return StepOutput(pooled=pooled, slot_grads=[])

    def finish(self) -> None:
        """Wait for an input dist still in flight (the last pipelined step's)."""
        if self._pending is not None:
            self._pending.wait()
            self._pending = None
