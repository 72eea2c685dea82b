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
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import torch
import torch.distributed as dist
import torch.nn.functional as F

from shardplan.executor.batches import TableBatch, init_table
from shardplan.executor.clock import Clock, Pending, WallClock
from shardplan.executor.kernels import Backend, OptimizerConfig, apply_update, make_lookup
from shardplan.executor.layout import HOST_ROW_TYPES, Layout, OutputKind, Slot
from shardplan.types import GroupKey, Optimizer, ShardingType, Stage

__all__ = ["Comm", "ShardedEmbeddings", "StepOutput", "DEFAULT_BUCKET_BYTES"]

DEFAULT_BUCKET_BYTES = 25 * 2**20  # torch DDP bucket_cap_mb default


@dataclass(kw_only=True)
class Comm:
    """Process groups and collective choices of one run.

    Attributes:
        rank: this process's rank.
        world_size: ranks.
        device: where tensors live (cpu for gloo, cuda for nccl).
        native_reduce_scatter: use ``reduce_scatter_tensor`` (NCCL) rather than the
            all-to-all + sum equivalent (any gloo).
        intra_host: per host, its process group (None when there is one host).
        cross_host: per local rank, the group of ranks with that local rank across hosts.
        data: the process group of the pipelined input dist (its own "stream"), or None.
        spans: per row-wise subset of ranks, its process group.
        world: the sharding group's process group (None: the default group, all ranks).
        replicas / replica: 2D plans: sharding groups, and this rank's (``rank`` and
            ``world_size`` are then within its group).
        replica_group: the ranks holding this rank's shards in every group (2D sync).
    """

    rank: int
    world_size: int
    device: torch.device
    native_reduce_scatter: bool = False
    intra_host: list[dist.ProcessGroup | None] = field(default_factory=list)
    cross_host: list[dist.ProcessGroup | None] = field(default_factory=list)
    data: dist.ProcessGroup | None = None
    spans: dict[tuple[int, ...], dist.ProcessGroup | None] = field(default_factory=dict)
    world: dist.ProcessGroup | None = None
    replicas: int = 1
    replica: int = 0
    replica_group: dist.ProcessGroup | None = None


def make_comm(layout: Layout, rank: int, device: torch.device, backend: str,
              pipelined: bool = False, replicas: int = 1) -> Comm:
    """Build the subgroups TWRW, row-wise subsets, the pipeline and 2D replicas need (every
    process calls this, in the same order). With ``replicas`` R, global rank ``r`` is local
    rank ``r // R`` of sharding group ``r % R`` (TorchRec's ``DMPCollection`` layout: a shard's
    replicas on consecutive ranks of one host)."""
    R = replicas
    mine = rank % R
    comm = Comm(rank=rank // R, world_size=layout.world_size, device=device,
                native_reduce_scatter=backend == "nccl", replicas=R, replica=mine)

    def new(local: Sequence[int], g: int) -> dist.ProcessGroup | None:
        return dist.new_group([q * R + g for q in local])

    for g in range(R):  # every group's subgroups, on every process
        world = new(range(layout.world_size), g) if R > 1 else None
        intra, cross = [], []
        if layout.has_host_rows and layout.num_hosts > 1:
            intra = [new(hr, g) for hr in layout.host_ranks]
            per_host = len(layout.host_ranks[0])
            cross = [new([hr[l] for hr in layout.host_ranks], g) for l in range(per_host)]
        spans = {span: new(span, g) for span in layout.span_tables}
        data = new(range(layout.world_size), g) if pipelined else None
        if g == mine:
            comm.world, comm.intra_host, comm.cross_host = world, intra, cross
            comm.spans, comm.data = spans, data
    if R > 1:
        for q in range(layout.world_size):
            pg = dist.new_group([q * R + g for g in range(R)])
            if q == comm.rank:
                comm.replica_group = pg
    return comm


# --------------------------------------------------------------------------------------------
# collectives
# --------------------------------------------------------------------------------------------


def _a2a(send: torch.Tensor, send_splits: list[int], recv_splits: list[int],
         group: dist.ProcessGroup | None = None) -> torch.Tensor:
    """Uneven all-to-all of flat tensors."""
    out = torch.empty(sum(recv_splits), dtype=send.dtype, device=send.device)
    dist.all_to_all_single(out, send.contiguous(), recv_splits, send_splits, group=group)
    return out


def _reduce_scatter(x: torch.Tensor, parts: int, comm: Comm,
                    group: dist.ProcessGroup | None = None) -> torch.Tensor:
    """Sum ``x`` ([parts * n, w]) over the group's ranks; member i keeps block i."""
    n = x.shape[0] // parts
    if comm.native_reduce_scatter:
        out = torch.empty(n, x.shape[1], dtype=x.dtype, device=x.device)
        dist.reduce_scatter_tensor(out, x.contiguous(), group=group)
        return out
    recv = _a2a(x.reshape(-1), [n * x.shape[1]] * parts, [n * x.shape[1]] * parts, group)
    return recv.view(parts, n, x.shape[1]).sum(0)


def _all_gather(x: torch.Tensor, parts: int, group: dist.ProcessGroup | None = None) -> torch.Tensor:
    out = [torch.empty_like(x) for _ in range(parts)]
    dist.all_gather(out, x.contiguous(), group=group)
    return torch.cat(out, 0)


def dp_buckets(sizes: list[int], bucket_bytes: int, element_bytes: int = 4) -> list[list[int]]:
    """DDP-style buckets: parameters in reverse order (DDP fills buckets as gradients become
    ready, last layer first), a bucket closed when it would pass ``bucket_bytes``; a
    parameter larger than a bucket gets its own. Returns parameter indices per bucket."""
    out: list[list[int]] = []
    cur: list[int] = []
    cur_bytes = 0
    for i in reversed(range(len(sizes))):
        b = sizes[i] * element_bytes
        if cur and cur_bytes + b > bucket_bytes:
            out.append(cur)
            cur, cur_bytes = [], 0
        cur.append(i)
        cur_bytes += b
    if cur:
        out.append(cur)
    return out


# --------------------------------------------------------------------------------------------
# the sharded module
# --------------------------------------------------------------------------------------------


@dataclass(kw_only=True)
class StepOutput:
    """What one step produced on this rank (for validation)."""

    pooled: list[torch.Tensor]  # per table, this rank's samples [B, dim]
    slot_grads: list[torch.Tensor]  # per slot (``ShardedEmbeddings.slots``), [B_global, cols]


@dataclass
class _Inputs:
    """One group's received input on this rank: its kernel's indices and offsets."""

    indices: torch.Tensor
    offsets: torch.Tensor


class ShardedEmbeddings:
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

    # -- input dist ---------------------------------------------------------------------------

    def _input_dist(self, local: list[tuple[torch.Tensor, torch.Tensor]],
                    group: dist.ProcessGroup | None) -> dict[GroupKey, _Inputs]:
        """Every group's lengths then ids to the ranks holding its shards."""
        group = group if group is not None else self.comm.world
        return {key: self._group_input(key, local, group) for key in self.layout.groups}

    def _group_input(self, st: GroupKey, local, group) -> _Inputs:
        lay, B, W = self.layout, self.layout.batch_per_rank, self.layout.world_size
        dev = self.comm.device
        send_len, send_ids, len_splits, id_splits = [], [], [], []
        for d in range(W):
            nid = 0
            dest = lay.group_slots(st, d)
            for s in dest:
                lengths, ids = local[s.table_index]
                if s.kind is not OutputKind.COLUMNS:
                    keep = (ids >= s.row_offset) & (ids < s.row_offset + s.num_rows)
                    seg = torch.repeat_interleave(torch.arange(B), lengths)
                    lengths = torch.zeros(B, dtype=torch.int64).index_add_(
                        0, seg[keep], torch.ones_like(seg[keep]))
                    ids = ids[keep] - s.row_offset
                send_len.append(lengths)
                send_ids.append(ids)
                nid += ids.numel()
            len_splits.append(len(dest) * B)
            id_splits.append(nid)
        mine = self.group_slots.get(st, ())
        n_mine = len(mine)
        empty = torch.zeros(0, dtype=torch.int64, device=dev)
        cat_len = torch.cat(send_len).to(dev) if send_len else empty
        cat_ids = torch.cat(send_ids).to(dev) if send_ids else empty
        rlen = _a2a(cat_len, len_splits, [n_mine * B] * W, group)
        per_src = rlen.view(W, n_mine, B)
        counts = per_src.sum(-1)  # [W, n_mine]
        rids = _a2a(cat_ids, id_splits, counts.sum(1).tolist(), group)
        # table-major for the kernel: slot k's lengths over the global batch, ids likewise
        lengths_k = per_src.permute(1, 0, 2).reshape(-1)
        pieces = torch.split(rids, counts.reshape(-1).tolist())
        indices = torch.cat([pieces[s * n_mine + k] for k in range(n_mine) for s in range(W)]) \
            if n_mine else rids
        offsets = torch.zeros(lengths_k.numel() + 1, dtype=torch.int64, device=dev)
        offsets[1:] = torch.cumsum(lengths_k, 0)
        return _Inputs(indices=indices, offsets=offsets)

    # -- output distribution per kind -----------------------------------------------------------

    def _col_start(self, st: GroupKey) -> list[int]:
        out = [0]
        for s in self.group_slots.get(st, ()):
            out.append(out[-1] + s.num_cols)
        return out

    def _fwd_columns(self, st: GroupKey, out: torch.Tensor | None,
                     pooled: list[torch.Tensor]) -> None:
        lay, B, W = self.layout, self.layout.batch_per_rank, self.layout.world_size
        block = out if out is not None else torch.zeros(lay.batch_global, 0,
                                                        device=self.comm.device)
        wc = block.shape[1]
        recv_w = [lay.columns_width(s, st) for s in range(W)]
        recv = _a2a(block.reshape(-1), [B * wc] * W, [B * w for w in recv_w], self.comm.world)
        self._track(block, recv)
        off = 0
        for s in range(W):
            piece = recv[off:off + B * recv_w[s]].view(B, recv_w[s])
            off += B * recv_w[s]
            c = 0
            for sl in lay.group_slots(st, s):
                pooled[sl.table_index][:, sl.col_offset:sl.col_offset + sl.num_cols] = \
                    piece[:, c:c + sl.num_cols]
                c += sl.num_cols

    def _fwd_rows(self, out: torch.Tensor | None, pooled: list[torch.Tensor]) -> None:
        """One reduce-scatter of every RW table's partial sums, side by side."""
        lay = self.layout
        width = lay.rows_width()
        part = torch.zeros(lay.batch_global, width, device=self.comm.device)
        rw = GroupKey(sharding_type=ShardingType.ROW_WISE)
        cs = self._col_start(rw)
        for k, s in enumerate(self.group_slots.get(rw, ())):
            o = lay.rows_offset(s.table_index)
            part[:, o:o + s.num_cols] += out[:, cs[k]:cs[k + 1]]
        mine = _reduce_scatter(part, lay.world_size, self.comm, self.comm.world)
        self._track(part, mine)
        for t in lay.rows_tables:
            o = lay.rows_offset(t)
            pooled[t] = mine[:, o:o + lay.dims[t]]

    def _host_perm(self) -> torch.Tensor:
        """Global sample order -> chunks by local rank (chunk l: samples of the ranks with local
        rank l, host by host), the order the intra-host reduce-scatter hands out."""
        lay, B = self.layout, self.layout.batch_per_rank
        order = [hr[l] for l in range(len(lay.host_ranks[0])) for hr in lay.host_ranks]
        return torch.cat([torch.arange(q * B, (q + 1) * B) for q in order])

    def _my_host(self) -> tuple[int, int]:
        for h, hr in enumerate(self.layout.host_ranks):
            if self.rank in hr:
                return h, hr.index(self.rank)
        raise RuntimeError("rank on no host")

    def _fwd_host_rows(self, key: GroupKey, out: torch.Tensor | None,
                       pooled: list[torch.Tensor]) -> None:
        """TWRW / GRID: one reduce-scatter inside each host over the host's blocks, then one
        all-to-all along the rails (the ranks of equal local rank across hosts)."""
        lay, B = self.layout, self.layout.batch_per_rank
        clock, st = self.clock, key.sharding_type
        h, l = self._my_host()
        H, L = lay.num_hosts, len(lay.host_ranks[0])
        wh = lay.host_rows_width(st, h)
        group = self.comm.intra_host[h] if H > 1 else self.comm.world
        cs = self._col_start(key)

        def host_rs() -> torch.Tensor:
            if not wh:
                return torch.zeros(H * B, 0, device=self.comm.device)
            part = torch.zeros(lay.batch_global, wh, device=self.comm.device)
            for k, s in enumerate(self.group_slots.get(key, ())):
                o = lay.host_rows_offset(st, h, s.table_index, s.col_offset)
                part[:, o:o + s.num_cols] += out[:, cs[k]:cs[k + 1]]
            part = part.index_select(0, self._host_perm().to(part.device))
            mine = _reduce_scatter(part, L, self.comm, group)  # [H * B, wh], host-major
            self._track(part, mine)
            return mine

        # the host's ranks share its blocks: all of them take part, or none
        mine = clock.collective(Stage.FWD_COMM, host_rs, group) if wh else host_rs()
        if H > 1:
            widths = [lay.host_rows_width(st, g) for g in range(H)]
            cross = self.comm.cross_host[l]
            recv = clock.collective(Stage.FWD_COMM, lambda: _a2a(
                mine.reshape(-1), [B * wh] * H, [B * w for w in widths], cross), cross)
            blocks, off = [], 0
            for g in range(H):
                blocks.append(recv[off:off + B * widths[g]].view(B, widths[g]))
                off += B * widths[g]
        else:
            blocks = [mine]
        for g, blk in enumerate(blocks):
            for t, c0, nc in lay.host_rows(st, g):
                o = lay.host_rows_offset(st, g, t, c0)
                pooled[t][:, c0:c0 + nc] = blk[:, o:o + nc]

    # -- backward distribution per kind ---------------------------------------------------------

    def _bwd_columns(self, st: GroupKey, grads: list[torch.Tensor]) -> list[torch.Tensor]:
        lay, B, W = self.layout, self.layout.batch_per_rank, self.layout.world_size
        dev = self.comm.device
        send = []
        for d in range(W):
            sl = lay.group_slots(st, d)
            send.append(torch.cat([grads[s.table_index][:, s.col_offset:s.col_offset + s.num_cols]
                                   for s in sl], 1) if sl else torch.zeros(B, 0, device=dev))
        wc = lay.columns_width(self.rank, st)
        recv = _a2a(torch.cat([x.reshape(-1) for x in send]),
                    [x.numel() for x in send], [B * wc] * W, self.comm.world).view(W * B, wc)
        out, c = [], 0
        for s in self.group_slots.get(st, ()):
            out.append(recv[:, c:c + s.num_cols])
            c += s.num_cols
        return out

    def _bwd_rows(self, grads: list[torch.Tensor]) -> list[torch.Tensor]:
        """One all-gather of every RW table's output gradients, side by side."""
        lay = self.layout
        mine = torch.cat([grads[t] for t in lay.rows_tables], 1)
        full = _all_gather(mine, lay.world_size, self.comm.world)
        return [full[:, lay.rows_offset(s.table_index):lay.rows_offset(s.table_index) + s.num_cols]
                for s in self.group_slots.get(GroupKey(sharding_type=ShardingType.ROW_WISE), ())]

    def _bwd_host_rows(self, key: GroupKey, grads: list[torch.Tensor]) -> list[torch.Tensor]:
        lay, B = self.layout, self.layout.batch_per_rank
        clock, st = self.clock, key.sharding_type
        h, l = self._my_host()
        H, L = lay.num_hosts, len(lay.host_ranks[0])
        wh = lay.host_rows_width(st, h)
        dev = self.comm.device

        def cat(g: int) -> torch.Tensor:
            blocks = lay.host_rows(st, g)
            return (torch.cat([grads[t][:, c0:c0 + nc] for t, c0, nc in blocks], 1) if blocks
                    else torch.zeros(B, 0, device=dev))

        if H > 1:
            send = [cat(g) for g in range(H)]
            cross = self.comm.cross_host[l]
            mine = clock.collective(Stage.BWD_COMM, lambda: _a2a(
                torch.cat([x.reshape(-1) for x in send]), [x.numel() for x in send],
                [B * wh] * H, cross).view(H * B, wh), cross)
        else:
            mine = cat(h)
        if not wh:
            return []
        group = self.comm.intra_host[h] if H > 1 else self.comm.world
        full_perm = clock.collective(Stage.BWD_COMM, lambda: _all_gather(mine, L, group), group)
        full = torch.empty_like(full_perm)
        full[self._host_perm().to(dev)] = full_perm
        out = []
        for s in self.group_slots.get(key, ()):
            o = lay.host_rows_offset(st, h, s.table_index, s.col_offset)
            out.append(full[:, o:o + s.num_cols])
        return out

    # -- row-wise over a subset of ranks ----------------------------------------------------------

    def _span_owners(self, span: tuple[int, ...]) -> list[list[int]]:
        """Per member ``j`` of ``span``, the sample owners it reduces for: ranks ``r`` with
        ``r mod n == j``."""
        n = len(span)
        return [[r for r in range(self.layout.world_size) if r % n == j] for j in range(n)]

    def _span_ctx(self, span: tuple[int, ...]) -> tuple[int, int, list[list[int]], bool, int]:
        """(members, width, owners per member, this rank a member, its index or -1)."""
        member = self.rank in span
        return (len(span), self.layout.span_width(span), self._span_owners(span), member,
                span.index(self.rank) if member else -1)

    def _span_rows_index(self, owners: list[int]) -> torch.Tensor:
        B = self.layout.batch_per_rank
        return torch.cat([torch.arange(r * B, (r + 1) * B) for r in owners])

    def _fwd_span_rows(self, key: GroupKey, out: torch.Tensor | None,
                       pooled: list[torch.Tensor]) -> None:
        """Reduce-scatter of the span's partial sums among its members, then each member's
        chunk of samples to their owners (an all-to-all over all ranks)."""
        lay, B, W = self.layout, self.layout.batch_per_rank, self.layout.world_size
        span, clock, dev = key.ranks, self.clock, self.comm.device
        n, w, owners, member, j = self._span_ctx(span)
        group = self.comm.spans[span]

        def reduce_scatter() -> torch.Tensor:
            part = torch.zeros(lay.batch_global, w, device=dev)
            cs = self._col_start(key)
            for k, s in enumerate(self.group_slots.get(key, ())):
                o = lay.span_offset(span, s.table_index)
                part[:, o:o + s.num_cols] += out[:, cs[k]:cs[k + 1]]
            send = torch.cat([part.index_select(0, self._span_rows_index(owners[m]).to(dev))
                              for m in range(n)])
            rows = len(owners[j]) * B
            recv = _a2a(send.reshape(-1), [len(owners[m]) * B * w for m in range(n)],
                        [rows * w] * n, group)
            self._track(part, send, recv)
            return recv.view(n, rows, w).sum(0)

        chunk = clock.collective(Stage.FWD_COMM, reduce_scatter, group) if member else None
        holder = span[self.rank % n]

        def to_owners() -> torch.Tensor:
            send = chunk.reshape(-1) if member else torch.zeros(0, device=dev)
            send_splits = [B * w if member and d % n == j else 0 for d in range(W)]
            recv_splits = [B * w if src == holder else 0 for src in range(W)]
            return _a2a(send, send_splits, recv_splits, self.comm.world)

        mine = clock.collective(Stage.FWD_COMM, to_owners).view(B, w)
        for t in lay.span_tables[span]:
            o = lay.span_offset(span, t)
            pooled[t] = mine[:, o:o + lay.dims[t]]

    def _bwd_span_rows(self, key: GroupKey, grads: list[torch.Tensor]) -> list[torch.Tensor]:
        """The reverse: each owner's gradients to its member, then an all-gather of the
        members' chunks among the span."""
        lay, B, W = self.layout, self.layout.batch_per_rank, self.layout.world_size
        span, clock, dev = key.ranks, self.clock, self.comm.device
        n, w, owners, member, j = self._span_ctx(span)
        holder = span[self.rank % n]
        mine = torch.cat([grads[t] for t in lay.span_tables[span]], 1)

        def to_members() -> torch.Tensor:
            send_splits = [B * w if d == holder else 0 for d in range(W)]
            recv_splits = [B * w if member and src % n == j else 0 for src in range(W)]
            return _a2a(mine.reshape(-1), send_splits, recv_splits, self.comm.world)

        chunk = clock.collective(Stage.BWD_COMM, to_members)
        if not member:
            return []
        group = self.comm.spans[span]

        def all_gather() -> torch.Tensor:
            rows = len(owners[j]) * B
            recv = _a2a(chunk.repeat(n), [rows * w] * n,
                        [len(owners[m]) * B * w for m in range(n)], group)
            full = torch.empty(lay.batch_global, w, device=dev)
            off = 0
            for m in range(n):
                k = len(owners[m]) * B
                full[self._span_rows_index(owners[m]).to(dev)] = recv[off:off + k * w].view(k, w)
                off += k * w
            return full

        full = clock.collective(Stage.BWD_COMM, all_gather, group)
        self._track(full)
        return [full[:, lay.span_offset(span, s.table_index):
                     lay.span_offset(span, s.table_index) + s.num_cols]
                for s in self.group_slots.get(key, ())]
