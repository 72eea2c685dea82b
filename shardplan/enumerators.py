"""Enumeration: the candidate sharding options of each table, as its constraints allow.

Per table: table-wise; row-wise over all ranks; table-row-wise over the ranks of one host;
column-wise into k shards (k a power of two, shard width a multiple of ``column_alignment``);
table-column-wise (column shards kept within one host); data-parallel. Each with the
placements allowed: HBM, UVM caching at ``cache_ratios``, and host memory (UVM).
"""

from __future__ import annotations

from dataclasses import dataclass

from shardplan.types import (
    Placement,
    PlacementKind,
    ShardingOption,
    ShardingType,
    ShardSpec,
    TableSpec,
    Topology,
    Workload,
)


@dataclass(frozen=True, kw_only=True, slots=True)
class EnumerationOptions:
    """Knobs of the enumeration.

    Attributes:
        column_alignment: column shard widths are multiples of this (FBGEMM wants 4).
        max_column_shards: largest k for column-wise sharding.
        cache_ratios: UVM-caching ratios offered (HBM cache rows / rows).
        sharding_types: the types offered at all (a table's constraints narrow further).
        placements: the placement kinds offered at all.
        data_parallel_max_rows: largest table offered as data-parallel (a replica per rank).
    """

    column_alignment: int = 4
    max_column_shards: int = 8
    cache_ratios: tuple[float, ...] = (0.05, 0.2)
    sharding_types: tuple[ShardingType, ...] = tuple(ShardingType)
    placements: tuple[PlacementKind, ...] = (PlacementKind.HBM, PlacementKind.UVM_CACHING,
                                             PlacementKind.UVM)
    data_parallel_max_rows: int = 1_000_000


def split(n: int, k: int) -> list[tuple[int, int]]:
    """``n`` items into ``k`` contiguous (offset, size) blocks, sizes differing by at most one,
    larger blocks first; empty blocks dropped."""
    base, extra = divmod(n, k)
    out, off = [], 0
    for i in range(k):
        size = base + (1 if i < extra else 0)
        if size:
            out.append((off, size))
        off += size
    return out


def column_splits(dim: int, k: int, alignment: int) -> list[tuple[int, int]] | None:
    """``dim`` columns into ``k`` shards whose widths are multiples of ``alignment`` (the last
    one takes the remainder); ``None`` if that is impossible."""
    if dim % alignment or dim // alignment < k:
        return None
    units = split(dim // alignment, k)
    return [(o * alignment, s * alignment) for o, s in units]


def _placements(table: TableSpec, opts: EnumerationOptions, workload: Workload) -> list[Placement]:
    out = []
    for kind in opts.placements:
        if not table.constraints.allows_placement(kind):
            continue
        if kind is PlacementKind.UVM_CACHING:
            out += [Placement(kind=kind, cache_ratio=c) for c in opts.cache_ratios]
        else:
            out.append(Placement(kind=kind))
    return out


def enumerate_table(table: TableSpec, workload: Workload, topology: Topology,
                    opts: EnumerationOptions | None = None) -> list[ShardingOption]:
    """Every sharding option of one table, in a fixed order."""
    opts = opts or EnumerationOptions()
    world = topology.world_size
    rows, dim = table.num_embeddings, table.embedding_dim
    cons = table.constraints
    pinned = tuple(sorted(set(cons.pinned_ranks))) if cons.pinned_ranks else None
    if pinned and pinned[-1] >= world:
        pinned = tuple(r for r in pinned if r < world) or None
    allowed = tuple(t for t in opts.sharding_types if cons.allows(t))
    alignment = max(opts.column_alignment, 1)
    min_width = cons.min_column_shard_width or alignment
    out: list[ShardingOption] = []

    def add(st: ShardingType, pl: Placement, shards: list[ShardSpec],
            cands: list[tuple[int, ...] | None]) -> None:
        out.append(ShardingOption(table=table.name, sharding_type=st, placement=pl,
                                  shards=tuple(shards), candidate_ranks=tuple(cands)))

    def k_values() -> list[int]:
        ks, k = [], 2
        while k <= min(opts.max_column_shards, world if world > 1 else 1):
            if dim % k == 0 or column_splits(dim, k, alignment):
                ks.append(k)
            k *= 2
        return ks

    for pl in _placements(table, opts, workload):
        host_only = pl.kind is PlacementKind.HBM
        for st in allowed:
            if st is ShardingType.TABLE_WISE:
                add(st, pl, [ShardSpec(row_offset=0, num_rows=rows, col_offset=0, num_cols=dim)],
                    [pinned])
            elif st is ShardingType.COLUMN_WISE:
                for k in k_values():
                    cols = column_splits(dim, k, alignment)
                    if cols is None or min(w for _, w in cols) < min_width:
                        continue
                    add(st, pl, [ShardSpec(row_offset=0, num_rows=rows, col_offset=o, num_cols=w)
                                 for o, w in cols], [pinned] * len(cols))
            elif st is ShardingType.ROW_WISE and world > 1 and not pinned:
                blocks = split(rows, world)
                add(st, pl, [ShardSpec(row_offset=o, num_rows=n, col_offset=0, num_cols=dim)
                             for o, n in blocks], [(r,) for r in range(len(blocks))])
            elif st is ShardingType.TABLE_ROW_WISE and topology.num_hosts > 1 and not pinned:
                for h in range(topology.num_hosts):
                    hr = topology.ranks_of_host(h)
                    if len(hr) < 2:
                        continue
                    blocks = split(rows, len(hr))
                    add(st, pl, [ShardSpec(row_offset=o, num_rows=n, col_offset=0, num_cols=dim)
                                 for o, n in blocks], [(hr[i],) for i in range(len(blocks))])
            elif st is ShardingType.TABLE_COLUMN_WISE and topology.num_hosts > 1 and not pinned:
                for h in range(topology.num_hosts):
                    hr = topology.ranks_of_host(h)
                    for k in k_values():
                        cols = column_splits(dim, k, alignment)
                        if k > len(hr) or cols is None or min(w for _, w in cols) < min_width:
                            continue
                        add(st, pl, [ShardSpec(row_offset=0, num_rows=rows, col_offset=o,
                                               num_cols=w) for o, w in cols], [hr] * len(cols))
            elif (st is ShardingType.DATA_PARALLEL and host_only and not pinned
                  and rows <= opts.data_parallel_max_rows):
                add(st, pl, [ShardSpec(row_offset=0, num_rows=rows, col_offset=0, num_cols=dim)]
                    * world, [(r,) for r in range(world)])
    return out


def enumerate_options(workload: Workload, topology: Topology,
                      opts: EnumerationOptions | None = None) -> dict[str, list[ShardingOption]]:
    """Options for every table of the workload, keyed by table name, in workload order."""
    return {t.name: enumerate_table(t, workload, topology, opts) for t in workload.tables}
