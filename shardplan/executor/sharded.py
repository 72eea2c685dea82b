"""Sharded embedding tables of one rank, and one training step across all ranks.

A step, on every rank (stages as in :class:`shardplan.types.Stage`):

    fwd_comm     input all-to-all: lengths (fixed sizes), then ids (sizes from the lengths)
    fwd_compute  one batched lookup over the rank's slots [B_global, cols]; DP tables locally
    fwd_comm     output distribution:
                   TW/CW/TWCW  one all-to-all of the slots' [B_global, cols] sliced by sample
                               owner (issued every step, empty if the plan has no such table)
                   RW          per table, reduce-scatter of partial sums [B_global, dim] (on
                               gloo: an all-to-all followed by a local sum, which any gloo
                               build runs)
                   TWRW        reduce-scatter inside the host, then all-to-all across hosts
                               among the ranks with the same local rank
    bwd_comm     the transposes: all-to-all; all-gather per RW table; all-to-all across hosts
                 then all-gather inside the host
    bwd_compute  backward of the batched lookup with the optimizer update (fused in FBGEMM)
    dp_sync      all-reduce of each data-parallel table's gradient (their update counts as
                 bwd_compute)

Collectives whose count depends on the plan (RW reduce-scatter/all-gather, DP all-reduce) are
issued once per table, so their latencies add up per table, as the linear cost model charges
them (``docs/cost-model.md``); the all-to-alls are issued every step.

The loss is ``sum_t <pooled_t, G_t>`` with ``G_t`` drawn per step (see ``batches``), so the
gradient reaching each pooled output is exactly ``G_t``.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Iterator, TypeVar

import torch
import torch.distributed as dist
import torch.nn.functional as F

from shardplan.executor.batches import TableBatch, init_table
from shardplan.executor.kernels import Backend, OptimizerConfig, apply_update, make_lookup
from shardplan.executor.layout import Layout, OutputKind, Slot
from shardplan.types import Optimizer, Stage

__all__ = ["Comm", "ShardedEmbeddings", "StepOutput"]

T = TypeVar("T")


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
    """

    rank: int
    world_size: int
    device: torch.device
    native_reduce_scatter: bool = False
    intra_host: list[dist.ProcessGroup | None] = field(default_factory=list)
    cross_host: list[dist.ProcessGroup | None] = field(default_factory=list)

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)


def make_comm(layout: Layout, rank: int, device: torch.device, backend: str) -> Comm:
    """Build the subgroups TWRW needs (every rank calls this, in the same order)."""
    comm = Comm(rank=rank, world_size=layout.world_size, device=device,
                native_reduce_scatter=backend == "nccl")
    if layout.has_host_rows and layout.num_hosts > 1:
        comm.intra_host = [dist.new_group(list(hr)) for hr in layout.host_ranks]
        per_host = len(layout.host_ranks[0])
        comm.cross_host = [dist.new_group([hr[l] for hr in layout.host_ranks])
                           for l in range(per_host)]
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


# --------------------------------------------------------------------------------------------
# the sharded module
# --------------------------------------------------------------------------------------------


@dataclass(kw_only=True)
class StepOutput:
    """What one step produced on this rank (for validation)."""

    pooled: list[torch.Tensor]  # per table, this rank's samples [B, dim]
    slot_grads: list[torch.Tensor]  # per slot, the output gradient it received [B_global, cols]


class ShardedEmbeddings:
    """This rank's shards of every table of a plan, and the step that runs them."""

    def __init__(self, layout: Layout, comm: Comm, backend: Backend, cfg: OptimizerConfig,
                 seed: int, table_rows: list[int]) -> None:
        self.layout = layout
        self.comm = comm
        self.cfg = cfg
        self.rank = comm.rank
        self.slots: tuple[Slot, ...] = layout.slots[comm.rank]
        dev = comm.device
        self.lookup = make_lookup(backend, [(s.num_rows, s.num_cols) for s in self.slots], cfg, dev)
        full: dict[int, torch.Tensor] = {}

        def table(ti: int) -> torch.Tensor:
            if ti not in full:
                full[ti] = init_table(seed, ti, table_rows[ti], layout.dims[ti])
            return full[ti]

        self.lookup.load([table(s.table_index)[s.row_offset:s.row_offset + s.num_rows,
                                               s.col_offset:s.col_offset + s.num_cols].to(dev)
                          for s in self.slots])
        # leaves that accumulate their dense gradient (no copy of the replica per step)
        self.dp_weights = [table(d.table_index).clone().to(dev).requires_grad_(True)
                           for d in layout.dp_tables]
        self.dp_states = [torch.zeros(d.num_rows, device=dev)
                          if cfg.optimizer is Optimizer.ROWWISE_ADAGRAD else None
                          for d in layout.dp_tables]
        self.timings: dict[Stage, float] = {s: 0.0 for s in Stage}
        self.peak_buffer_bytes = 0
        self._live = 0
        self.barrier_stages = False
        self.exclusive_compute = False

    # -- accounting ---------------------------------------------------------------------------

    @property
    def param_bytes(self) -> int:
        n = self.lookup.param_bytes
        n += sum(w.numel() * 4 for w in self.dp_weights)
        n += sum(s.numel() * 4 for s in self.dp_states if s is not None)
        return n

    def _track(self, *tensors: torch.Tensor) -> None:
        self._live += sum(t.numel() * t.element_size() for t in tensors)
        self.peak_buffer_bytes = max(self.peak_buffer_bytes, self._live)

    @contextmanager
    def _stage(self, stage: Stage) -> Iterator[None]:
        """Time a communication stage. With ``barrier_stages`` all ranks enter together, so
        waiting for a slower rank is not counted."""
        if self.barrier_stages:
            self.comm.sync()
            dist.barrier()
        t0 = time.perf_counter()
        yield
        self.comm.sync()
        self.timings[stage] += (time.perf_counter() - t0) * 1e3

    def _compute(self, stage: Stage, fn: Callable[[], T]) -> T:
        """Run and time a compute stage. With ``exclusive_compute`` ranks take turns, so ranks
        that share CPU cores do not slow each other down."""
        if not self.exclusive_compute:
            with self._stage(stage):
                return fn()
        result = None
        for turn in range(self.comm.world_size):
            dist.barrier()
            if turn == self.rank:
                t0 = time.perf_counter()
                result = fn()
                self.comm.sync()
                self.timings[stage] += (time.perf_counter() - t0) * 1e3
        dist.barrier()
        return result  # type: ignore[return-value]

    # -- the step -----------------------------------------------------------------------------

    def step(self, batch: list[TableBatch]) -> StepOutput:
        """One forward and backward with the update, on this rank's part of ``batch``."""
        lay, r, B, W = self.layout, self.rank, self.layout.batch_per_rank, self.layout.world_size
        dev = self.comm.device
        self._live = 0
        local = [tb.sample_slice(r * B, (r + 1) * B) for tb in batch]

        # ---- input distribution (all-to-all of lengths, then ids)
        send_len, send_ids, len_splits, id_splits = [], [], [], []
        for d in range(W):
            nid = 0
            for s in lay.slots[d]:
                lengths, ids = local[s.table_index]
                if s.kind is not OutputKind.COLUMNS:
                    keep = (ids >= s.row_offset) & (ids < s.row_offset + s.num_rows)
                    seg = torch.repeat_interleave(torch.arange(B), lengths)
                    lengths = torch.zeros(B, dtype=torch.int64).index_add_(0, seg[keep],
                                                                           torch.ones_like(seg[keep]))
                    ids = ids[keep] - s.row_offset
                send_len.append(lengths)
                send_ids.append(ids)
                nid += ids.numel()
            len_splits.append(len(lay.slots[d]) * B)
            id_splits.append(nid)
        n_mine = len(self.slots)
        with self._stage(Stage.FWD_COMM):
            cat_len = torch.cat(send_len).to(dev) if send_len else torch.zeros(0, dtype=torch.int64, device=dev)
            cat_ids = torch.cat(send_ids).to(dev) if send_ids else torch.zeros(0, dtype=torch.int64, device=dev)
            rlen = _a2a(cat_len, len_splits, [n_mine * B] * W)
            per_src = rlen.view(W, n_mine, B)
            counts = per_src.sum(-1)  # [W, n_mine]
            rids = _a2a(cat_ids, id_splits, counts.sum(1).tolist())
        self._track(rlen, rids)
        # table-major for the kernel: slot k's lengths over the global batch, ids likewise
        lengths_k = per_src.permute(1, 0, 2).reshape(-1)
        pieces = torch.split(rids, counts.reshape(-1).tolist())
        indices = torch.cat([pieces[s * n_mine + k] for k in range(n_mine) for s in range(W)]) \
            if n_mine else rids
        offsets = torch.zeros(lengths_k.numel() + 1, dtype=torch.int64, device=dev)
        offsets[1:] = torch.cumsum(lengths_k, 0)

        # ---- local lookups
        def forward() -> tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor]]:
            o = self.lookup.forward(indices, offsets) if n_mine else torch.zeros(
                lay.batch_global, 0, device=dev)
            outs, ws = [], []
            for d, w in zip(lay.dp_tables, self.dp_weights):
                lengths, ids = local[d.table_index]
                w.grad = None
                wp = w
                off = torch.zeros(B, dtype=torch.int64)
                off[1:] = torch.cumsum(lengths, 0)[:-1]
                outs.append(F.embedding_bag(ids.to(dev), wp, off.to(dev), mode="sum"))
                ws.append(wp)
            return o, outs, ws

        out, dp_out, dp_w = self._compute(Stage.FWD_COMPUTE, forward)
        self._track(out, *dp_out)
        col_start = [0]
        for s in self.slots:
            col_start.append(col_start[-1] + s.num_cols)

        # ---- output distribution
        pooled = [torch.zeros(B, dim, device=dev) for dim in lay.dims]
        for d, o in zip(lay.dp_tables, dp_out):
            pooled[d.table_index] = o.detach()
        with self._stage(Stage.FWD_COMM):
            self._fwd_columns(out, col_start, pooled)
            self._fwd_rows(out, col_start, pooled)
            self._fwd_host_rows(out, col_start, pooled)

        # ---- backward communication: each slot's output gradient, global batch
        grads = [tb.grad[r * B:(r + 1) * B].to(dev) for tb in batch]
        slot_grads: list[torch.Tensor] = [torch.empty(0)] * n_mine
        with self._stage(Stage.BWD_COMM):
            self._bwd_columns(grads, slot_grads)
            self._bwd_rows(grads, slot_grads)
            self._bwd_host_rows(grads, slot_grads)
        self._track(*slot_grads)

        # ---- backward compute with the (fused) update
        def backward() -> None:
            if n_mine:
                self.lookup.backward(torch.cat(slot_grads, 1))
            for d, o in zip(lay.dp_tables, dp_out):
                o.backward(grads[d.table_index])

        self._compute(Stage.BWD_COMPUTE, backward)

        # ---- data-parallel all-reduce, then the update (timed as backward compute, where the
        # cost model puts the dense optimizer step)
        if lay.dp_tables:
            with self._stage(Stage.DP_SYNC):
                dense = [w.grad for w in dp_w]
                for g in dense:  # one all-reduce per table
                    dist.all_reduce(g)
            self._track(*dense)

            def dp_update() -> None:
                with torch.no_grad():
                    for w, s, g in zip(self.dp_weights, self.dp_states, dense):
                        rows = torch.nonzero(g.abs().sum(1) > 0).flatten()
                        apply_update(w, s, rows, g.index_select(0, rows), self.cfg)

            self._compute(Stage.BWD_COMPUTE, dp_update)
        return StepOutput(pooled=pooled, slot_grads=slot_grads)

    # -- output distribution per kind -----------------------------------------------------------

    def _cols_of(self, rank: int) -> list[Slot]:
        return [s for s in self.layout.slots[rank] if s.kind is OutputKind.COLUMNS]

    def _fwd_columns(self, out: torch.Tensor, col_start: list[int], pooled: list[torch.Tensor]) -> None:
        lay, B, W = self.layout, self.layout.batch_per_rank, self.layout.world_size
        mine = [k for k, s in enumerate(self.slots) if s.kind is OutputKind.COLUMNS]
        block = (torch.cat([out[:, col_start[k]:col_start[k + 1]] for k in mine], 1) if mine
                 else out.new_zeros(lay.batch_global, 0))
        wc = block.shape[1]
        recv_w = [lay.columns_width(s) for s in range(W)]
        recv = _a2a(block.reshape(-1), [B * wc] * W, [B * w for w in recv_w])
        self._track(block, recv)
        off = 0
        for s in range(W):
            piece = recv[off:off + B * recv_w[s]].view(B, recv_w[s])
            off += B * recv_w[s]
            c = 0
            for sl in self._cols_of(s):
                pooled[sl.table_index][:, sl.col_offset:sl.col_offset + sl.num_cols] = \
                    piece[:, c:c + sl.num_cols]
                c += sl.num_cols

    def _fwd_rows(self, out: torch.Tensor, col_start: list[int], pooled: list[torch.Tensor]) -> None:
        lay = self.layout
        for t in lay.rows_tables:  # one reduce-scatter per table
            part = out.new_zeros(lay.batch_global, lay.dims[t])
            for k, s in enumerate(self.slots):
                if s.kind is OutputKind.ROWS and s.table_index == t:
                    part[:, s.col_offset:s.col_offset + s.num_cols] += \
                        out[:, col_start[k]:col_start[k + 1]]
            pooled[t] = _reduce_scatter(part, lay.world_size, self.comm)
            self._track(part, pooled[t])

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

    def _fwd_host_rows(self, out: torch.Tensor, col_start: list[int], pooled: list[torch.Tensor]) -> None:
        lay, B = self.layout, self.layout.batch_per_rank
        if not lay.has_host_rows:
            return
        h, l = self._my_host()
        H, L = lay.num_hosts, len(lay.host_ranks[0])
        wh = lay.host_rows_width(h)
        if wh:
            part = out.new_zeros(lay.batch_global, wh)
            for k, s in enumerate(self.slots):
                if s.kind is OutputKind.HOST_ROWS:
                    o = lay.host_rows_offset(h, s.table_index)
                    part[:, o:o + s.num_cols] += out[:, col_start[k]:col_start[k + 1]]
            part = part.index_select(0, self._host_perm().to(part.device))
            group = self.comm.intra_host[h] if H > 1 else None
            mine = _reduce_scatter(part, L, self.comm, group)  # [H * B, wh], host-major
            self._track(part, mine)
        else:
            mine = out.new_zeros(H * B, 0)
        if H > 1:
            widths = [lay.host_rows_width(g) for g in range(H)]
            recv = _a2a(mine.reshape(-1), [B * wh] * H, [B * w for w in widths],
                        self.comm.cross_host[l])
            blocks, off = [], 0
            for g in range(H):
                blocks.append(recv[off:off + B * widths[g]].view(B, widths[g]))
                off += B * widths[g]
        else:
            blocks = [mine]
        for g, blk in enumerate(blocks):
            for t in lay.host_rows_tables[g]:
                o = lay.host_rows_offset(g, t)
                pooled[t] = blk[:, o:o + lay.dims[t]]

    # -- backward distribution per kind ---------------------------------------------------------

    def _bwd_columns(self, grads: list[torch.Tensor], slot_grads: list[torch.Tensor]) -> None:
        lay, B, W = self.layout, self.layout.batch_per_rank, self.layout.world_size
        dev = self.comm.device
        send = [torch.cat([grads[s.table_index][:, s.col_offset:s.col_offset + s.num_cols]
                           for s in self._cols_of(d)], 1) if self._cols_of(d)
                else torch.zeros(B, 0, device=dev) for d in range(W)]
        wc = lay.columns_width(self.rank)
        recv = _a2a(torch.cat([x.reshape(-1) for x in send]),
                    [x.numel() for x in send], [B * wc] * W).view(W * B, wc)
        c = 0
        for k, s in enumerate(self.slots):
            if s.kind is OutputKind.COLUMNS:
                slot_grads[k] = recv[:, c:c + s.num_cols]
                c += s.num_cols

    def _bwd_rows(self, grads: list[torch.Tensor], slot_grads: list[torch.Tensor]) -> None:
        lay = self.layout
        for t in lay.rows_tables:  # one all-gather per table
            full = _all_gather(grads[t], lay.world_size)
            for k, s in enumerate(self.slots):
                if s.kind is OutputKind.ROWS and s.table_index == t:
                    slot_grads[k] = full[:, s.col_offset:s.col_offset + s.num_cols]

    def _bwd_host_rows(self, grads: list[torch.Tensor], slot_grads: list[torch.Tensor]) -> None:
        lay, B = self.layout, self.layout.batch_per_rank
        if not lay.has_host_rows:
            return
        h, l = self._my_host()
        H, L = lay.num_hosts, len(lay.host_ranks[0])
        wh = lay.host_rows_width(h)
        dev = self.comm.device
        if H > 1:
            send = [torch.cat([grads[t] for t in lay.host_rows_tables[g]], 1)
                    if lay.host_rows_tables[g] else torch.zeros(B, 0, device=dev)
                    for g in range(H)]
            mine = _a2a(torch.cat([x.reshape(-1) for x in send]), [x.numel() for x in send],
                        [B * wh] * H, self.comm.cross_host[l]).view(H * B, wh)
        else:
            mine = torch.cat([grads[t] for t in lay.host_rows_tables[h]], 1) if wh else \
                torch.zeros(B, 0, device=dev)
        if not wh:
            return
        group = self.comm.intra_host[h] if H > 1 else None
        full_perm = _all_gather(mine, L, group)
        full = torch.empty_like(full_perm)
        full[self._host_perm().to(dev)] = full_perm
        for k, s in enumerate(self.slots):
            if s.kind is OutputKind.HOST_ROWS:
                o = lay.host_rows_offset(h, s.table_index)
                slot_grads[k] = full[:, o:o + s.num_cols]
