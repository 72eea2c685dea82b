"""Each sharding group's input dist and output dist (forward and backward), run the way
TorchRec's runtime runs them; see :mod:`shardplan.executor.sharded` for the step."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import torch
import torch.distributed as dist

from shardplan.executor.collectives import _a2a, _all_gather, _reduce_scatter
from shardplan.executor.layout import Layout, OutputKind
from shardplan.types import GroupKey, ShardingType, Stage


@dataclass
class _Inputs:
    """One group's received input on this rank: its kernel's indices and offsets."""

    indices: torch.Tensor
    offsets: torch.Tensor


@dataclass(frozen=True)
class _Route:
    """How one group's ids leave a rank; the same on every rank, built once from the layout.

    Every slot of the group, on every rank, is a block of rows of one column slice of its
    table (a whole table for TW/CW/TWCW slots); a column slice's blocks are disjoint, so an id
    lands in exactly one block per column slice. The column slices are laid end to end in one
    space of "global rows", so one ``searchsorted`` over the sorted block starts routes every
    id of the group, as FBGEMM's fused ``block_bucketize_sparse_features`` does for TorchRec's
    row-wise input dist (a constant number of tensor ops per group, not per slot).
    """

    #: (table index, first global row, rows) per column slice
    bases: tuple[tuple[int, int, int], ...]
    starts: torch.Tensor  # [blocks] global first row of each block, ascending
    ends: torch.Tensor  # [blocks] global end row (exclusive)
    position: torch.Tensor  # [blocks] the block's slot in the send order
    slots: int  # slots in the send order: every rank's slots of the group, rank by rank
    bounds: torch.Tensor  # [W + 1] the first send position of each destination rank
    len_splits: tuple[int, ...]  # lengths sent to each rank (its slots x B)
    #: per destination rank, the table of each of its slots, when every slot holds all rows of
    #: its table (TW, CW, TWCW: a table's ids go whole, as a KJT permute); None otherwise
    whole_tables: tuple[tuple[int, ...], ...] | None


def _route(lay: Layout, key: GroupKey) -> _Route:
    """The routing of group ``key``'s ids (see :class:`_Route`)."""
    blocks: dict[tuple[int, int], list[tuple[int, int, int]]] = {}
    pos, bounds, len_splits, dest_tables = 0, [0], [], []
    for d in range(lay.world_size):
        dest = lay.group_slots(key, d)
        dest_tables.append(tuple(s.table_index for s in dest))
        for s in dest:
            blocks.setdefault((s.table_index, s.col_offset), []).append(
                (s.row_offset, s.num_rows, pos))
            pos += 1
        bounds.append(pos)
        len_splits.append(len(dest) * lay.batch_per_rank)
    bases, starts, ends, position, base = [], [], [], [], 0
    for (ti, _col), bl in sorted(blocks.items()):
        rows = max(lo + n for lo, n, _ in bl)
        bases.append((ti, base, rows))
        for lo, n, p in sorted(bl):
            starts.append(base + lo)
            ends.append(base + lo + n)
            position.append(p)
        base += rows
    return _Route(bases=tuple(bases), starts=torch.tensor(starts, dtype=torch.int64),
                  ends=torch.tensor(ends, dtype=torch.int64),
                  position=torch.tensor(position, dtype=torch.int64), slots=pos,
                  bounds=torch.tensor(bounds, dtype=torch.int64),
                  len_splits=tuple(len_splits),
                  whole_tables=(tuple(dest_tables) if all(
                      s.kind is OutputKind.COLUMNS for d in range(lay.world_size)
                      for s in lay.group_slots(key, d)) else None))


class GroupDists:
    """Each sharding group's input dist, and its output dist forward and backward, per sharding
    type (column groups, row-wise, host-row-wise, row-wise over a subset of ranks).

    A mixin of :class:`~shardplan.executor.sharded.ShardedEmbeddings`: it reads the layout,
    the process groups and the slots set up there.
    """

    # -- input dist ---------------------------------------------------------------------------

    def _input_dist(self, local: list[tuple[torch.Tensor, torch.Tensor]],
                    group: dist.ProcessGroup | None) -> dict[GroupKey, _Inputs]:
        """Every group's lengths then ids to the ranks holding its shards."""
        group = group if group is not None else self.comm.world
        return {key: self._group_input(key, local, group) for key in self.layout.groups}

    @cached_property
    def _routes(self) -> dict[GroupKey, _Route]:
        """Each group's id routing, built on first use (the layout is fixed)."""
        return {key: _route(self.layout, key) for key in self.layout.groups}

    @staticmethod
    def _whole_tables(dest_tables: tuple[tuple[int, ...], ...], local
                      ) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
        """Lengths, ids and id splits of a group whose slots hold whole tables."""
        send = [local[ti] for dest in dest_tables for ti in dest]
        empty = torch.zeros(0, dtype=torch.int64)
        cat_len = torch.cat([lengths for lengths, _ in send]) if send else empty
        cat_ids = torch.cat([ids for _, ids in send]) if send else empty
        return cat_len, cat_ids, [sum(local[ti][1].numel() for ti in dest)
                                  for dest in dest_tables]

    def _bucketized(self, route: _Route, local) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
        """Lengths, ids (local to their block) and id splits of a group with row blocks."""
        B = self.layout.batch_per_rank
        # every id of the group (once per column slice of its table) in global rows, with its
        # sample; its block; then a stable sort by the block's send position keeps the ids of
        # a slot in sample order
        samples: dict[int, torch.Tensor] = {}
        gids, segs = [], []
        for ti, base, rows in route.bases:
            lengths, ids = local[ti]
            if ti not in samples:
                samples[ti] = torch.repeat_interleave(torch.arange(B), lengths)
            seg = samples[ti]
            valid = (ids >= 0) & (ids < rows)
            if not bool(valid.all()):  # an id outside its table would land in the next slice
                ids, seg = ids[valid], seg[valid]
            gids.append(ids + base)
            segs.append(seg)
        gid, seg = torch.cat(gids), torch.cat(segs)
        block = torch.searchsorted(route.starts, gid, right=True) - 1
        inside = (block >= 0) & (gid < route.ends[block.clamp(min=0)])
        if not bool(inside.all()):  # ids outside every block (none in a well-formed batch)
            gid, seg, block = gid[inside], seg[inside], block[inside]
        pos = route.position[block]
        order = torch.argsort(pos, stable=True)
        cat_ids = (gid - route.starts[block])[order]
        cat_len = torch.bincount(pos * B + seg, minlength=route.slots * B)
        sent = torch.zeros(route.slots + 1, dtype=torch.int64)
        sent[1:] = torch.cumsum(torch.bincount(pos, minlength=route.slots), 0)
        id_splits = (sent[route.bounds[1:]] - sent[route.bounds[:-1]]).tolist()
        return cat_len, cat_ids, id_splits

    def _group_input(self, st: GroupKey, local, group) -> _Inputs:
        B, W = self.layout.batch_per_rank, self.layout.world_size
        dev = self.comm.device
        route = self._routes[st]
        if route.whole_tables is not None:
            cat_len, cat_ids, id_splits = self._whole_tables(route.whole_tables, local)
        else:
            cat_len, cat_ids, id_splits = self._bucketized(route, local)
        cat_len, cat_ids = cat_len.to(dev), cat_ids.to(dev)
        n_mine = len(self.group_slots.get(st, ()))
        rlen = _a2a(cat_len, list(route.len_splits), [n_mine * B] * W, group)
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
