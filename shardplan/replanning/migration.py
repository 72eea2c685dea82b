"""What moving from one plan to another costs: bytes per shard, per rank and per link, and an
estimate of the time.

**Bytes.** A shard's state is its weights and its optimizer state: ``rows x (row_bytes(cols,
dtype) + optimizer state per row)``, the memory estimators' own formulas
(``shardplan.estimators.memory``). Each new shard is filled from the old shards that overlap
it (same table, intersecting rows and columns):

* the part already on the shard's rank (the same device, see :mod:`shardplan.replanning.ranks`)
  stays: it costs nothing; a shard kept whole (same table, rows, columns and rank) is free;
* the rest is sent from the rank that holds it (a replicated, data-parallel table: from a
  replica on the destination's host if there is one, else from replica ``dest mod count``);
* data of a lost host is restored from the last checkpoint (``source`` ``None``): it arrives
  over the destination host's network link (checkpoint storage is assumed not to be the
  bottleneck);
* rows a table gained, and tables that are new, start fresh where they are placed: nothing
  moves (their bytes are reported as ``fresh_bytes``); rows a table lost, and removed tables,
  are dropped. Row ids are assumed kept: row ``i`` of the old table is row ``i`` of the new.

**Time.** Transfers run in parallel, sharing the links of the topology's graph
(:func:`shardplan.topology.build_graph`): a transfer from rank ``a`` to rank ``b`` uses ``a``'s
link into its host fabric outward and ``b``'s inward; between hosts also ``a``'s host's
network link outward and ``b``'s host's inward. Links are full duplex (each direction its own
bandwidth, as in the graph). The estimate is the busiest link direction's bytes over its
bandwidth: ``time = max over links and directions of bytes / bandwidth``. It is a lower bound
of a real migration (perfect overlap, no latency, no protocol overhead, no contention with
training traffic), the same way the cost model's communication estimates are.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Mapping

import numpy as np

from shardplan.estimators.memory import optimizer_state_bytes_per_row, row_bytes
from shardplan.replanning.ranks import RankMap
from shardplan.topology import build_graph
from shardplan.types import Plan, TableSpec, Topology, Workload

#: ``source`` of data restored from a checkpoint (its holder was lost).
CHECKPOINT = -1


def block_bytes(table: TableSpec, workload: Workload, rows: int, cols: int) -> float:
    """Weights plus optimizer state of a ``rows`` x ``cols`` block of ``table``."""
    opt = workload.optimizer_of(table)
    return float(rows) * (row_bytes(cols, table.dtype) + optimizer_state_bytes_per_row(opt, cols))


@dataclass(frozen=True, slots=True)
class Block:
    """A rectangle of a table's old state and the new ranks that hold a copy (empty: lost)."""

    row_offset: int
    num_rows: int
    col_offset: int
    num_cols: int
    holders: tuple[int, ...]


@dataclass(slots=True)
class OldData:
    """Where each table's old state lies, in new rank numbers.

    Attributes:
        blocks: per table present in both the old plan and the new workload, its old shards
            (rows clipped to the rows both have); identical replicas are one block.
        rows: per such table, the rows both have (``min(old, new)``).
    """

    blocks: dict[str, list[Block]]
    rows: dict[str, int]

    @classmethod
    def of(cls, old_plan: Plan, workload: Workload, rank_map: RankMap) -> OldData:
        names = {t.name for t in workload.tables}
        blocks: dict[str, list[Block]] = {}
        rows: dict[str, int] = {}
        for t in old_plan.tables:
            if t.name not in names:
                continue
            keep_rows = min(t.num_embeddings, workload.table(t.name).num_embeddings)
            rows[t.name] = keep_rows
            by_rect: dict[tuple[int, int, int, int], list[int]] = {}
            for s in t.shards:
                if s.row_offset >= keep_rows:
                    continue
                rect = (s.row_offset, min(s.num_rows, keep_rows - s.row_offset),
                        s.col_offset, s.num_cols)
                held = by_rect.setdefault(rect, [])
                r = rank_map.new(s.rank)
                if r is not None:
                    held.append(r)
            blocks[t.name] = [Block(*rect, holders=tuple(sorted(h)))
                              for rect, h in sorted(by_rect.items())]
        return cls(blocks=blocks, rows=rows)


def source_of(block: Block, dest: int, host_of: np.ndarray) -> int:
    """The rank that sends ``block`` to ``dest``: ``dest`` itself if it holds a copy, else a
    holder on ``dest``'s host (the lowest), else holder ``dest mod count``; ``CHECKPOINT`` if
    the block was lost."""
    h = block.holders
    if not h:
        return CHECKPOINT
    if len(h) == 1:
        return h[0]
    if dest in h:
        return dest
    same = [r for r in h if host_of[r] == host_of[dest]]
    return same[0] if same else h[dest % len(h)]


def overlaps(data: OldData, table: str, row_offset: int, num_rows: int, col_offset: int,
             num_cols: int) -> list[tuple[Block, int, int]]:
    """The old blocks of ``table`` that intersect the rectangle, with the intersection's rows
    and columns."""
    out = []
    r1, c1 = row_offset + num_rows, col_offset + num_cols
    for b in data.blocks.get(table, ()):
        nr = min(r1, b.row_offset + b.num_rows) - max(row_offset, b.row_offset)
        nc = min(c1, b.col_offset + b.num_cols) - max(col_offset, b.col_offset)
        if nr > 0 and nc > 0:
            out.append((b, nr, nc))
    return out


class Links:
    """The directed links of a topology, from its graph: per rank its link into the host
    fabric (out: ``rank``, in: ``world + rank``), per host its network link (out:
    ``2 world + host``, in: ``2 world + hosts + host``), each with its bandwidth per
    direction."""

    def __init__(self, topology: Topology) -> None:
        g = build_graph(topology)
        w, nh = topology.world_size, topology.num_hosts
        self.world, self.hosts = w, nh
        self.host_of = np.array([ri.host for ri in topology.ranks], dtype=np.int64)
        bw = np.empty(2 * w + 2 * nh)
        kinds: list[str] = []
        for r in range(w):
            e = g.edges[("rank", r), ("host", int(self.host_of[r]))]
            bw[r] = bw[w + r] = e["bandwidth_bytes_per_s"]
            kinds.append(e["kind"])
        for h in range(nh):
            bw[2 * w + h] = bw[2 * w + nh + h] = g.edges[("host", h), ("network", 0)][
                "bandwidth_bytes_per_s"]
        self.bandwidth_bytes_per_s = bw
        self._kinds = kinds

    @property
    def num_edges(self) -> int:
        return len(self.bandwidth_bytes_per_s)

    def route(self, src: int, dst: int) -> list[int]:
        """The link directions a transfer from ``src`` (or ``CHECKPOINT``) to ``dst`` uses."""
        w, nh = self.world, self.hosts
        hd = int(self.host_of[dst])
        if src == CHECKPOINT:
            return [2 * w + nh + hd, w + dst]
        hs = int(self.host_of[src])
        if hs == hd:
            return [src, w + dst]
        return [src, 2 * w + hs, 2 * w + nh + hd, w + dst]

    def name(self, e: int) -> str:
        """``rank 3 out (nvlink4)``, ``host 2 in (network)``."""
        w, nh = self.world, self.hosts
        if e < 2 * w:
            r = e % w
            return f"rank {r} {'out' if e < w else 'in'} ({self._kinds[r]})"
        h = (e - 2 * w) % nh
        return f"host {h} {'out' if e < 2 * w + nh else 'in'} (network)"

    def time_s(self, load_bytes: np.ndarray) -> float:
        """The estimate: the busiest link direction's bytes over its bandwidth."""
        if not len(load_bytes):
            return 0.0
        return float((load_bytes / self.bandwidth_bytes_per_s).max())


@dataclass(frozen=True, kw_only=True, slots=True)
class Transfer:
    """Part of a new shard's state sent from ``source`` (``None``: from the checkpoint)."""

    table: str
    row_offset: int
    num_rows: int
    col_offset: int
    num_cols: int
    source: int | None
    dest: int
    bytes: float


@dataclass(frozen=True, kw_only=True, slots=True)
class Migration:
    """Moving from an old plan to a new one (see the module docstring).

    Attributes:
        transfers: every transfer, in table then shard order.
        kept_shards: new shards whose whole state is already on their rank.
        moved_shards: new shards that receive some state from elsewhere.
        fresh_shards: new shards with no old state at all (new tables).
        kept_bytes: state that stays where it is.
        moved_bytes: state sent between ranks.
        restored_bytes: state of lost ranks, restored from a checkpoint.
        fresh_bytes: state initialised where it is placed (new tables, new rows).
        bytes_in: per new rank, bytes it receives.
        bytes_out: per new rank, bytes it sends.
        link_bytes: per link direction (``Links.name``) that carries anything, its bytes.
        time_s: the estimate: the busiest link direction's time.
        bottleneck: that link direction.
        rank_map: the old-to-new rank map used.
    """

    transfers: tuple[Transfer, ...]
    kept_shards: int
    moved_shards: int
    fresh_shards: int
    kept_bytes: float
    moved_bytes: float
    restored_bytes: float
    fresh_bytes: float
    bytes_in: tuple[float, ...]
    bytes_out: tuple[float, ...]
    link_bytes: Mapping[str, float]
    link_time_s: Mapping[str, float]
    time_s: float
    bottleneck: str
    rank_map: RankMap = field(repr=False)

    @property
    def total_bytes(self) -> float:
        """Bytes on the network: moved plus restored."""
        return self.moved_bytes + self.restored_bytes

    def as_dict(self) -> dict[str, object]:
        """A JSON-ready summary (transfers aggregated per source and destination)."""
        pairs: dict[tuple[str, int], float] = defaultdict(float)
        for t in self.transfers:
            pairs[("checkpoint" if t.source is None else str(t.source), t.dest)] += t.bytes
        return {
            "kept_shards": self.kept_shards, "moved_shards": self.moved_shards,
            "fresh_shards": self.fresh_shards, "kept_bytes": self.kept_bytes,
            "moved_bytes": self.moved_bytes, "restored_bytes": self.restored_bytes,
            "fresh_bytes": self.fresh_bytes, "time_s": self.time_s,
            "bottleneck": self.bottleneck, "rank_map": self.rank_map.as_dict(),
            "links": [{"link": k, "bytes": v, "time_s": self.link_time_s[k]}
                      for k, v in self.link_bytes.items()],
            "flows": [{"source": s, "dest": d, "bytes": b}
                      for (s, d), b in sorted(pairs.items(), key=lambda x: (x[0][1], x[0][0]))],
        }


def estimate_migration(old_plan: Plan, new_plan: Plan, rank_map: RankMap) -> Migration:
    """The bytes and time of moving from ``old_plan`` to ``new_plan``.

    Args:
        old_plan: the plan the job runs now.
        new_plan: the plan to move to (its topology is where the transfers run).
        rank_map: old ranks to ``new_plan``'s ranks (:func:`shardplan.replanning.map_ranks`).

    Returns:
        The migration (see :class:`Migration`).
    """
    topo, work = new_plan.topology, new_plan.workload
    data = OldData.of(old_plan, work, rank_map)
    links = Links(topo)
    load = np.zeros(links.num_edges)
    b_in = np.zeros(topo.world_size)
    b_out = np.zeros(topo.world_size)
    transfers: list[Transfer] = []
    kept_n = moved_n = fresh_n = 0
    kept_b = moved_b = restored_b = fresh_b = 0.0
    for t in new_plan.tables:
        spec = work.table(t.name)
        known = data.rows.get(t.name, 0)
        for s in t.shards:
            total = block_bytes(spec, work, s.num_rows, s.num_cols)
            got = 0.0
            here = 0.0
            sent = False
            for b, nr, nc in overlaps(data, t.name, s.row_offset, s.num_rows, s.col_offset,
                                      s.num_cols):
                nbytes = block_bytes(spec, work, nr, nc)
                got += nbytes
                src = source_of(b, s.rank, links.host_of)
                if src == s.rank:
                    here += nbytes
                    continue
                sent = True
                ro = max(s.row_offset, b.row_offset)
                co = max(s.col_offset, b.col_offset)
                transfers.append(Transfer(table=t.name, row_offset=ro, num_rows=nr,
                                          col_offset=co, num_cols=nc,
                                          source=None if src == CHECKPOINT else src,
                                          dest=s.rank, bytes=nbytes))
                for e in links.route(src, s.rank):
                    load[e] += nbytes
                b_in[s.rank] += nbytes
                if src == CHECKPOINT:
                    restored_b += nbytes
                else:
                    b_out[src] += nbytes
                    moved_b += nbytes
            kept_b += here
            fresh_b += max(0.0, total - got)
            if known == 0 or got == 0.0:
                fresh_n += 1
            elif sent:
                moved_n += 1
            else:
                kept_n += 1
    times = load / links.bandwidth_bytes_per_s
    busy = [e for e in range(links.num_edges) if load[e] > 0]
    e_max = int(np.argmax(times)) if busy else -1
    return Migration(
        transfers=tuple(transfers), kept_shards=kept_n, moved_shards=moved_n,
        fresh_shards=fresh_n, kept_bytes=kept_b, moved_bytes=moved_b,
        restored_bytes=restored_b, fresh_bytes=fresh_b,
        bytes_in=tuple(float(x) for x in b_in), bytes_out=tuple(float(x) for x in b_out),
        link_bytes={links.name(e): float(load[e]) for e in busy},
        link_time_s={links.name(e): float(times[e]) for e in busy},
        time_s=float(times.max()) if busy else 0.0,
        bottleneck=links.name(e_max) if busy else "", rank_map=rank_map)


__all__ = ["CHECKPOINT", "Block", "Links", "Migration", "OldData", "Transfer", "block_bytes",
           "estimate_migration", "overlaps", "source_of"]
