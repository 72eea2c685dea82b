"""Sharded embedding tables of one rank, and one training step across all ranks, run the way
TorchRec's runtime runs them.

Tables are grouped by sharding type (a *sharding group*: TW, CW, TWCW, RW, TWRW; DP apart).
Each group has, on every rank, one batched lookup kernel over its local shards, one input
dist and one output dist, as TorchRec's ``ShardedEmbeddingBagCollection`` keeps one sharding
per type (``_sharding_type_to_sharding``). A step, on every rank (stages as in
:class:`shardplan.types.Stage`):

    input_dist   per group, all-to-all of the lengths, then of the ids (sizes from the
                 lengths); row-wise groups send each id to the rank holding its row block.
                 Pipelined (TorchRec's ``TrainPipelineSparseDist``, the default): the next
                 batch's input dist runs while this batch computes, on its own process group.
    fwd_compute  each group's batched lookup over its slots [B_global, cols]; DP tables locally
    fwd_comm     output dist, per group, in a fixed order:
                   TW, CW, TWCW  one all-to-all each of [B_global, cols] sliced by sample owner
                   RW            one reduce-scatter of the partial sums of all RW tables,
                                 concatenated along the embedding dimension (on gloo: an
                                 all-to-all then a local sum, which any gloo build runs)
                   TWRW          one reduce-scatter inside each host over its TWRW tables, then
                                 one all-to-all across hosts among the ranks of equal local rank
    bwd_comm     the transposes: all-to-all per column group; one all-gather for all RW
                 tables; all-to-all across hosts then all-gather inside the host for TWRW
    bwd_compute  each group's backward with the optimizer update (fused in FBGEMM)
    dp_sync      all-reduce of the data-parallel gradients in DDP-style buckets (``bucket_bytes``,
                 25 MiB by default; one call per bucket), then their update (timed as
                 bwd_compute, where the cost model puts the dense optimizer step)

The loss is ``sum_t <pooled_t, G_t>`` with ``G_t`` drawn per step (see ``batches``), so the
gradient reaching each pooled output is exactly ``G_t``.

This module holds the step driver (:class:`ShardedEmbeddings`); each group's input and output
dists are :mod:`.group_dists`, the process groups and collectives :mod:`.collectives`."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F

from shardplan.executor.batches import TableBatch, init_table
from shardplan.executor.clock import Clock, Pending, WallClock
from shardplan.executor.collectives import DEFAULT_BUCKET_BYTES, Comm, dp_buckets
from shardplan.executor.collectives import make_comm  # noqa: F401 (importable from here, as before)
from shardplan.executor.group_dists import GroupDists
from shardplan.executor.kernels import Backend, OptimizerConfig, apply_update, make_lookup
from shardplan.executor.layout import HOST_ROW_TYPES, Layout, Slot
from shardplan.types import GroupKey, Optimizer, ShardingType, Stage

__all__ = ["Comm", "ShardedEmbeddings", "StepOutput", "DEFAULT_BUCKET_BYTES"]


@dataclass(kw_only=True)
class StepOutput:
    """What one step produced on this rank (for validation)."""

    pooled: list[torch.Tensor]  # per table, this rank's samples [B, dim]
    slot_grads: list[torch.Tensor]  # per slot (``ShardedEmbeddings.slots``), [B_global, cols]


class ShardedEmbeddings(GroupDists):
    """This rank's shards of every table of a plan, and the step that runs them.

    Args:
        layout: every rank's shards.
        comm: process groups.
        backend: kernel backend.
        cfg: the optimizer.
        seed: initial weights.
        table_rows: rows per table.
        clock: how stages are timed (default: the wall clock).
        pipelined: run the next batch's input dist during this batch (``step(..., next_batch)``).
        bucket_bytes: DDP bucket size of the data-parallel gradients.
        sync_steps: 2D plans: average the replicas' weights every this many steps.
    """

    def __init__(self, layout: Layout, comm: Comm, backend: Backend, cfg: OptimizerConfig,
                 seed: int, table_rows: list[int], *, clock: Clock | None = None,
                 pipelined: bool = False, bucket_bytes: int = DEFAULT_BUCKET_BYTES,
                 sync_steps: int = 1) -> None:
        self.layout = layout
        self.comm = comm
        self.cfg = cfg
        self.rank = comm.rank
        self.pipelined = pipelined
        self.bucket_bytes = bucket_bytes
        self.clock = clock or WallClock(comm.rank, layout.world_size, comm.device)
        dev = comm.device
        # kernel order: groups in GROUP_ORDER, slots by table then shard inside each group
        self.group_slots: dict[GroupKey, tuple[Slot, ...]] = {
            key: layout.group_slots(key, self.rank) for key in layout.groups}
        self.slots: tuple[Slot, ...] = tuple(s for st in layout.groups
                                             for s in self.group_slots[st])
        self.lookups = {st: make_lookup(backend, [(s.num_rows, s.num_cols) for s in sl], cfg, dev)
                        for st, sl in self.group_slots.items() if sl}
        full: dict[int, torch.Tensor] = {}

        def table(ti: int) -> torch.Tensor:
            if ti not in full:
                full[ti] = init_table(seed, ti, table_rows[ti], layout.dims[ti])
            return full[ti]

        for st, lk in self.lookups.items():
            lk.load([table(s.table_index)[s.row_offset:s.row_offset + s.num_rows,
                                          s.col_offset:s.col_offset + s.num_cols].to(dev)
                     for s in self.group_slots[st]])
        # leaves that accumulate their dense gradient (no copy of the replica per step)
        self.dp_weights = [table(d.table_index).clone().to(dev).requires_grad_(True)
                           for d in layout.dp_tables]
        self.dp_states = [torch.zeros(d.num_rows, device=dev)
                          if cfg.optimizer is Optimizer.ROWWISE_ADAGRAD else None
                          for d in layout.dp_tables]
        self.buckets = dp_buckets([d.num_rows * d.dim for d in layout.dp_tables], bucket_bytes)
        self.peak_buffer_bytes = 0
        self._live = 0
        self._pending: Pending | None = None
        self.sync_steps = sync_steps
        self._steps = 0

    def sync_replicas(self) -> None:
        """2D: average this rank's weights and optimizer state with its replicas' (one
        all-reduce over the replica group, as ``DMPCollection.sync()``)."""
        tensors = [t for t in (*self.weights(), *self.states(), *self.dp_weights,
                               *self.dp_states) if t is not None]
        if not tensors:
            return
        with torch.no_grad():
            flat = torch.cat([t.reshape(-1) for t in tensors])
            dist.all_reduce(flat, group=self.comm.replica_group)
            flat /= self.comm.replicas
            off = 0
            for t in tensors:
                n = t.numel()
                t.copy_(flat[off:off + n].view_as(t))
                off += n

    # -- accounting ---------------------------------------------------------------------------

    @property
    def param_bytes(self) -> int:
        n = sum(lk.param_bytes for lk in self.lookups.values())
        n += sum(w.numel() * 4 for w in self.dp_weights)
        n += sum(s.numel() * 4 for s in self.dp_states if s is not None)
        return n

    def weights(self) -> list[torch.Tensor]:
        """Per slot (``self.slots`` order), its weights."""
        return [w for st in self.layout.groups if st in self.lookups
                for w in self.lookups[st].weights()]

    def states(self) -> list[torch.Tensor | None]:
        return [s for st in self.layout.groups if st in self.lookups
                for s in self.lookups[st].states()]

    def _track(self, *tensors: torch.Tensor) -> None:
        self._live += sum(t.numel() * t.element_size() for t in tensors)
        self.peak_buffer_bytes = max(self.peak_buffer_bytes, self._live)

    # -- the step -----------------------------------------------------------------------------

    def step(self, batch: list[TableBatch], next_batch: list[TableBatch] | None = None
             ) -> StepOutput:
        """One forward and backward with the update, on this rank's part of ``batch``. When
        pipelined, ``next_batch``'s input dist runs during this step."""
        lay, r, B = self.layout, self.rank, self.layout.batch_per_rank
        dev = self.comm.device
        clock = self.clock
        self._live = 0
        local = [tb.sample_slice(r * B, (r + 1) * B) for tb in batch]

        # ---- input dist: this batch's (issued during the previous step when pipelined)
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

        # ---- local lookups
        def forward() -> tuple[dict[GroupKey, torch.Tensor], list[torch.Tensor]]:
            outs = {st: self.lookups[st].forward(inputs[st].indices, inputs[st].offsets)
                    for st in self.lookups}
            dp_out = []
            for d, w in zip(lay.dp_tables, self.dp_weights):
                lengths, ids = local[d.table_index]
                w.grad = None
                off = torch.zeros(B, dtype=torch.int64)
                off[1:] = torch.cumsum(lengths, 0)[:-1]
                dp_out.append(F.embedding_bag(ids.to(dev), w, off.to(dev), mode="sum"))
            return outs, dp_out

        outs, dp_out = clock.compute(Stage.FWD_COMPUTE, forward)
        self._track(*outs.values(), *dp_out)

        # ---- output dist, one per group
        pooled = [torch.zeros(B, dim, device=dev) for dim in lay.dims]
        for d, o in zip(lay.dp_tables, dp_out):
            pooled[d.table_index] = o.detach()
        for key in lay.groups:
            out, st = outs.get(key), key.sharding_type
            if st is ShardingType.ROW_WISE and key.ranks is None:
                clock.collective(Stage.FWD_COMM, lambda: self._fwd_rows(out, pooled))
            elif st is ShardingType.ROW_WISE:
                self._fwd_span_rows(key, out, pooled)
            elif st in HOST_ROW_TYPES:
                self._fwd_host_rows(key, out, pooled)
            else:
                clock.collective(Stage.FWD_COMM, lambda: self._fwd_columns(key, out, pooled))

        # ---- backward communication: each slot's output gradient, global batch
        grads = [tb.grad[r * B:(r + 1) * B].to(dev) for tb in batch]
        slot_grads: dict[GroupKey, list[torch.Tensor]] = {}
        for key in lay.groups:
            st = key.sharding_type
            if st is ShardingType.ROW_WISE and key.ranks is None:
                slot_grads[key] = clock.collective(Stage.BWD_COMM, lambda: self._bwd_rows(grads))
            elif st is ShardingType.ROW_WISE:
                slot_grads[key] = self._bwd_span_rows(key, grads)
            elif st in HOST_ROW_TYPES:
                slot_grads[key] = self._bwd_host_rows(key, grads)
            else:
                slot_grads[key] = clock.collective(Stage.BWD_COMM,
                                                   lambda: self._bwd_columns(key, grads))
        for g in slot_grads.values():
            self._track(*g)

        # ---- backward compute with the (fused) update
        def backward() -> None:
            for key, lk in self.lookups.items():
                lk.backward(torch.cat(slot_grads[key], 1))
            for d, o in zip(lay.dp_tables, dp_out):
                o.backward(grads[d.table_index])

        clock.compute(Stage.BWD_COMPUTE, backward)

        # ---- data-parallel all-reduce in buckets, then the update
        if lay.dp_tables:
            dense = [w.grad for w in self.dp_weights]
            for bucket in self.buckets:
                clock.collective(Stage.DP_SYNC, lambda: self._all_reduce_bucket(
                    dense, bucket, self.comm.world))
            self._track(*dense)

            def dp_update() -> None:
                with torch.no_grad():
                    for w, s, g in zip(self.dp_weights, self.dp_states, dense):
                        rows = torch.nonzero(g.abs().sum(1) > 0).flatten()
                        apply_update(w, s, rows, g.index_select(0, rows), self.cfg)

            clock.compute(Stage.BWD_COMPUTE, dp_update)
        if self.comm.replicas > 1 and self.sync_steps and (self._steps + 1) % self.sync_steps == 0:
            clock.collective(Stage.DP_SYNC, self.sync_replicas, self.comm.replica_group)
        self._steps += 1
        return StepOutput(pooled=pooled,
                          slot_grads=[g for key in lay.groups for g in slot_grads.get(key, [])])

    def finish(self) -> None:
        """Wait for an input dist still in flight (the last pipelined step's)."""
        if self._pending is not None:
            self._pending.wait()
            self._pending = None

    @staticmethod
    def _all_reduce_bucket(dense: list[torch.Tensor], bucket: list[int],
                           group: dist.ProcessGroup | None = None) -> None:
        flat = torch.cat([dense[i].reshape(-1) for i in bucket])
        dist.all_reduce(flat, group=group)
        off = 0
        for i in bucket:
            n = dense[i].numel()
            dense[i].copy_(flat[off:off + n].view_as(dense[i]))
            off += n
