"""Enumeration: the candidate sharding options of each table, as its constraints allow.

Per table: table-wise; row-wise over all ranks, or over the ranks of ``k`` hosts (``k`` a power
of two below the host count, spans aligned: hosts ``[i k, (i+1) k)``); table-row-wise over the
ranks of one host; column-wise into k shards (k a power of two, shard width a multiple of
``column_alignment``); table-column-wise (column shards kept within one host); grid (``k``
column blocks on ``k`` hosts, each row-wise over its host's ranks: TorchRec's ``GRID_SHARD``;
on up to ``max_hosts_per_option`` aligned windows ``[j k, (j+1) k)`` of the usable hosts, all
of them or the pinned ones, and their last ``k``); data-parallel.
Each with the placements allowed: HBM, UVM caching at ``cache_ratios``, and host memory (UVM).

Pins (``constraints.pinned_ranks`` ``P``) work with every sharding type: table-wise and
column-wise shards go to ranks of ``P``; row-wise runs over ``P`` (one block per pinned rank;
over all ranks when ``P`` is all of them); table-row-wise and table-column-wise run on a host
whose ranks are all in ``P`` (so ``sharding_types: [table_row_wise]`` with a host's ranks as
pins puts the table on that host); data-parallel needs a replica on every rank, so only pins
that cover every rank allow it (a replica is what each rank's own samples look up: a subset
of ranks cannot serve the others locally).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from shardplan.errors import SpecError
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
        max_hosts_per_option: table-row-wise and table-column-wise options are offered on at
            most this many hosts per table (hosts of one group cost the same; tables start at
            different hosts, round-robin, so together they cover the cluster); row-wise over k
            hosts on at most this many spans per k; grid over k hosts on at most this many
            aligned windows of k hosts per k.
        row_span_hosts: row-wise over a subset of hosts is offered for these numbers of hosts
            (powers of two below the cluster's host count); () offers only all ranks.
        wide_min_share: a table is offered the options that touch many ranks (row-wise,
            table-row-wise, table-column-wise, data-parallel) only if its lookup bytes per
            sample (pooling x dim x dtype) or its size is at least this share of the mean per
            rank, or it is larger than a quarter of a device's HBM; on clusters of more than
            ``narrow_max_ranks`` ranks the others do not get column-wise options either. 0
            offers them to every table. Small tables gain little from them but add thousands
            of shards on large clusters.
        world_min_share: row-wise and data-parallel options (a shard on every rank) are
            offered only to tables whose lookup bytes are at least this multiple of the mean
            per rank, or larger than a quarter of one host's HBM (on clusters of up to
            ``narrow_max_ranks`` ranks ``wide_min_share`` applies instead).
        prune_min_cells: ``wide_min_share`` and ``world_min_share`` prune only instances of
            more than this many tables x ranks; smaller ones offer every table every option
            (a few hundred tables on 128 ranks balance only when small tables may be split
            column-wise or replicated).
        narrow_max_ranks: when pruning, clusters of up to this many ranks still offer
            column-wise options to every table and judge row-wise and data-parallel by
            ``wide_min_share``; larger ones use ``world_min_share``.
        big_table_hbm_share: a table at least this share of a device's HBM always gets the
            wide options and UVM placements (and of a host's HBM, row-wise over all ranks).
        uvm_min_hbm_share: UVM and UVM-caching placements (slower than HBM, smaller in HBM)
            are offered only when the whole workload's estimated footprint (weights plus
            optimizer state, all in HBM) exceeds this share of the cluster's usable HBM, or to
            tables larger than a quarter of a device's HBM. 0 always offers them.
    """

    column_alignment: int = 4
    max_column_shards: int = 8
    cache_ratios: tuple[float, ...] = (0.05, 0.2)
    sharding_types: tuple[ShardingType, ...] = tuple(ShardingType)
    placements: tuple[PlacementKind, ...] = (PlacementKind.HBM, PlacementKind.UVM_CACHING,
                                             PlacementKind.UVM)
    data_parallel_max_rows: int = 1_000_000
    max_hosts_per_option: int = 4
    row_span_hosts: tuple[int, ...] = (2, 4, 8, 16, 32, 64)
    wide_min_share: float = 0.25
    world_min_share: float = 2.0
    uvm_min_hbm_share: float = 0.5
    prune_min_cells: int = 200_000
    narrow_max_ranks: int = 64
    big_table_hbm_share: float = 0.25

    def __post_init__(self) -> None:
        if self.column_alignment < 1:
            raise SpecError(f"column_alignment={self.column_alignment!r}: must be >= 1")
        if self.max_column_shards < 1:
            raise SpecError(f"max_column_shards={self.max_column_shards!r}: must be >= 1")
        if any(not 0.0 < c < 1.0 for c in self.cache_ratios):
            raise SpecError(f"cache_ratios={self.cache_ratios!r}: each must be in (0, 1)")
        if self.max_hosts_per_option < 1:
            raise SpecError(f"max_hosts_per_option={self.max_hosts_per_option!r}: must be >= 1")
        if self.wide_min_share < 0:
            raise SpecError(f"wide_min_share={self.wide_min_share!r}: must be >= 0")
        if self.narrow_max_ranks < 1:
            raise SpecError(f"narrow_max_ranks={self.narrow_max_ranks!r}: must be >= 1")
        if not 0 < self.big_table_hbm_share <= 1:
            raise SpecError(f"big_table_hbm_share={self.big_table_hbm_share!r}: must be in (0, 1]")
        if self.prune_min_cells < 0:
            raise SpecError(f"prune_min_cells={self.prune_min_cells!r}: must be >= 0")


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


@functools.lru_cache(maxsize=4096)
def _row_block_shards(rows: int, dim: int, k: int) -> tuple[ShardSpec, ...]:
    """The row-wise shards of a ``rows`` x ``dim`` table over ``k`` ranks (shared between
    tables of one shape: a row-wise option on 4,096 ranks has 4,096 shards)."""
    return tuple(ShardSpec(row_offset=o, num_rows=n, col_offset=0, num_cols=dim)
                 for o, n in split(rows, k))


@functools.lru_cache(maxsize=1024)
def _singletons(ranks: tuple[int, ...]) -> tuple[tuple[int, ...], ...]:
    """``((r,) for r in ranks)``, built once per rank tuple."""
    return tuple((r,) for r in ranks)


def column_splits(dim: int, k: int, alignment: int) -> list[tuple[int, int]] | None:
    """``dim`` columns into ``k`` shards whose widths are multiples of ``alignment`` (the last
    one takes the remainder); ``None`` if that is impossible."""
    if dim % alignment or dim // alignment < k:
        return None
    units = split(dim // alignment, k)
    return [(o * alignment, s * alignment) for o, s in units]


def _placements(table: TableSpec, opts: EnumerationOptions, workload: Workload,
                uvm: bool = True) -> list[Placement]:
    out = []
    for kind in opts.placements:
        if not table.constraints.allows_placement(kind):
            continue
        if not uvm and kind is not PlacementKind.HBM and table.constraints.allows_placement(
                PlacementKind.HBM):
            continue
        if kind is PlacementKind.UVM_CACHING:
            out += [Placement(kind=kind, cache_ratio=c) for c in opts.cache_ratios]
        else:
            out.append(Placement(kind=kind))
    return out


def enumerate_table(table: TableSpec, workload: Workload, topology: Topology,
                    opts: EnumerationOptions | None = None, *, wide: bool = True,
                    world_wide: bool = True, uvm: bool = True, host_start: int = 0,
                    host_ranks: list[tuple[int, ...]] | None = None) -> list[ShardingOption]:
    """Every sharding option of one table, in a fixed order.

    Args:
        table: the table.
        workload: its workload (for co-location groups).
        topology: the cluster.
        opts: enumeration knobs.
        wide: offer the options that touch many ranks (see ``wide_min_share``).
        world_wide: offer row-wise and data-parallel (see ``world_min_share``).
        uvm: offer UVM placements (see ``uvm_min_hbm_share``).
        host_start: first host of the table's host-local options.
        host_ranks: the ranks of every host (computed from ``topology`` if not given; pass
            them when enumerating many tables).

    Returns:
        The options; empty if the constraints allow none.

    Raises:
        SpecError: a pinned rank the topology does not have.
    """
    opts = opts or EnumerationOptions()
    world = topology.world_size
    rows, dim = table.num_embeddings, table.embedding_dim
    cons = table.constraints
    pinned = tuple(sorted(set(cons.pinned_ranks))) if cons.pinned_ranks else None
    if pinned and pinned[-1] >= world:
        raise SpecError(f"pinned_ranks names rank {pinned[-1]}, but {topology.name!r} has ranks "
                        f"0..{world - 1}; pin it to existing ranks",
                        key_path=f"tables[{table.name}].constraints.pinned_ranks")
    colocated = any(table.name in g for g in workload.colocate)
    allowed = tuple(t for t in opts.sharding_types if cons.allows(t))
    if colocated:  # a co-location group shares one rank: whole tables only
        allowed = tuple(t for t in allowed if t is ShardingType.TABLE_WISE)
    if not wide:  # column-wise only while ranks are few enough for it to help balance
        keep = (ShardingType.TABLE_WISE,) if world > opts.narrow_max_ranks else (
            ShardingType.TABLE_WISE,
                                                              ShardingType.COLUMN_WISE)
        allowed = tuple(t for t in allowed if t in keep)
    if not world_wide:
        allowed = tuple(t for t in allowed if t not in (ShardingType.ROW_WISE,
                                                        ShardingType.DATA_PARALLEL,
                                                        ShardingType.GRID_SHARD))
    nh = topology.num_hosts
    pinned_set = set(pinned) if pinned else None
    everyone = pinned is None or len(pinned) == world
    if host_ranks is None:
        host_ranks = [topology.ranks_of_host(h) for h in range(nh)]
    if pinned_set is None:
        hosts = [(host_start + i) % nh for i in range(min(nh, opts.max_hosts_per_option))]
    else:  # the hosts whose ranks are all pinned
        inside = [h for h in range(nh) if set(host_ranks[h]) <= pinned_set]
        hosts = [inside[(host_start + i) % len(inside)]
                 for i in range(min(len(inside), opts.max_hosts_per_option))] if inside else []
    spans: list[tuple[int, ...]] = []  # row-wise over a subset of ranks
    if pinned_set is not None and not everyone:
        spans.append(pinned)
    elif wide and nh > 1:
        for k in opts.row_span_hosts:
            if not 1 < k < nh or nh % k:
                continue
            blocks = nh // k
            for i in range(min(blocks, opts.max_hosts_per_option)):
                b = (host_start // k + i) % blocks
                spans.append(tuple(r for h in range(b * k, (b + 1) * k) for r in host_ranks[h]))
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

    def row_blocks(st: ShardingType, pl: Placement, ranks: tuple[int, ...]) -> None:
        shards = _row_block_shards(rows, dim, len(ranks))
        add(st, pl, shards, _singletons(ranks)[:len(shards)])

    for pl in _placements(table, opts, workload, uvm):
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
            elif st is ShardingType.ROW_WISE and world > 1:
                if everyone:
                    row_blocks(st, pl, tuple(range(world)))
                for span in spans:
                    if len(span) > 1:
                        row_blocks(st, pl, span)
            elif st is ShardingType.TABLE_ROW_WISE and topology.num_hosts > 1:
                for h in hosts:
                    hr = host_ranks[h]
                    if len(hr) < 2:
                        continue
                    row_blocks(st, pl, hr)
            elif st is ShardingType.TABLE_COLUMN_WISE and topology.num_hosts > 1:
                for h in hosts:
                    hr = host_ranks[h]
                    for k in k_values():
                        cols = column_splits(dim, k, alignment)
                        if k > len(hr) or cols is None or min(w for _, w in cols) < min_width:
                            continue
                        add(st, pl, [ShardSpec(row_offset=0, num_rows=rows, col_offset=o,
                                               num_cols=w) for o, w in cols], [hr] * len(cols))
            elif st is ShardingType.GRID_SHARD and topology.num_hosts > 1:
                # k column blocks on k hosts, each row-wise over its host's ranks (TorchRec's
                # GRID_SHARD: column-wise across hosts, row-wise within a host)
                usable = ([h for h in range(nh) if set(host_ranks[h]) <= pinned_set]
                          if pinned_set is not None else list(range(nh)))
                for k in k_values():
                    cols = column_splits(dim, k, alignment)
                    if k > len(usable) or cols is None or min(w for _, w in cols) < min_width:
                        continue
                    # on up to max_hosts_per_option aligned windows of k hosts ([j k, (j+1) k)
                    # of the usable hosts, and the last k when k does not divide them, so that
                    # every host gets some), from the table's start host's: each row block's
                    # rank is fixed (block i on a host's i-th rank), so the windows are what
                    # lets a grid table leave ranks another table loads (a skewed table's hot
                    # first block); aligned, tables share windows and can trade them
                    starts = list(range(0, len(usable) - k + 1, k))
                    if len(usable) % k:
                        starts.append(len(usable) - k)
                    for win in range(min(len(starts), opts.max_hosts_per_option)):
                        b0 = starts[(host_start // k + win) % len(starts)]
                        chosen = [usable[b0 + b] for b in range(k)]
                        shards, cands = [], []
                        for (o, w), h in zip(cols, chosen):
                            hr = host_ranks[h]
                            for i, (ro, rn) in enumerate(split(rows, len(hr))):
                                shards.append(ShardSpec(row_offset=ro, num_rows=rn, col_offset=o,
                                                        num_cols=w))
                                cands.append((hr[i],))
                        add(st, pl, shards, cands)
            elif (st is ShardingType.DATA_PARALLEL and host_only and everyone
                  and rows <= opts.data_parallel_max_rows):
                add(st, pl, [ShardSpec(row_offset=0, num_rows=rows, col_offset=0, num_cols=dim)]
                    * world, _singletons(tuple(range(world))))
    return out


def enumerate_options(workload: Workload, topology: Topology,
                      opts: EnumerationOptions | None = None) -> dict[str, list[ShardingOption]]:
    """Options for every table of the workload, keyed by table name, in workload order.

    Raises:
        SpecError: a pinned rank the topology does not have.
    """
    opts = opts or EnumerationOptions()
    world = topology.world_size
    lookup = [t.pooling_factor * t.embedding_dim * t.dtype.bits / 8 for t in workload.tables]
    size = [t.num_embeddings * t.embedding_dim * t.dtype.bits / 8 for t in workload.tables]
    mean_lookup, mean_size = sum(lookup) / world, sum(size) / world
    hbm = min(topology.capacity(r).hbm for r in range(world))
    foot = [_footprint_bytes(t, workload) for t in workload.tables]
    cluster_hbm = sum(topology.capacity(r).hbm for r in range(world))
    tight = opts.uvm_min_hbm_share == 0 or sum(foot) > opts.uvm_min_hbm_share * cluster_hbm
    prune = len(workload.tables) * world > opts.prune_min_cells
    host_ranks = [topology.ranks_of_host(h) for h in range(topology.num_hosts)]
    out = {}
    for i, t in enumerate(workload.tables):
        wide = (not prune or opts.wide_min_share == 0
                or lookup[i] >= opts.wide_min_share * mean_lookup
                or size[i] >= opts.wide_min_share * mean_size
                or size[i] >= opts.big_table_hbm_share * hbm)
        big = size[i] >= opts.big_table_hbm_share * hbm * min(
            g.devices_per_host for g in topology.host_groups)
        world_wide = wide if (world <= opts.narrow_max_ranks or not prune) else (
            big or opts.wide_min_share == 0 or lookup[i] >= opts.world_min_share * mean_lookup)
        if t.constraints.sharding_types is not None:  # the user's choice beats the pruning
            wide = world_wide = True
        options = enumerate_table(t, workload, topology, opts, wide=wide, world_wide=world_wide,
                                  uvm=tight or foot[i] > opts.big_table_hbm_share * hbm,
                                  host_start=i % topology.num_hosts, host_ranks=host_ranks)
        if not options:  # pruning must never be what leaves a table without options
            options = enumerate_table(t, workload, topology, opts,
                                      host_start=i % topology.num_hosts, host_ranks=host_ranks)
        out[t.name] = options
    return out


def _footprint_bytes(t: TableSpec, workload: Workload) -> float:
    """Weights plus optimizer state, used only to decide whether to offer UVM placements (the
    cost model gives the real memory)."""
    from shardplan.estimators.memory import optimizer_state_bytes, weight_bytes

    return (weight_bytes(t.num_embeddings, t.embedding_dim, t.dtype)
            + optimizer_state_bytes(workload.optimizer_of(t), t.num_embeddings, t.embedding_dim))
