"""The process groups of one run (:class:`Comm`, :func:`make_comm`) and the collectives the
sharded step issues (all-to-all, reduce-scatter, all-gather, DDP-style buckets)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import torch
import torch.distributed as dist

from shardplan.executor.layout import Layout

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
