"""Enumeration: every option tiles its table; constraints narrow the options."""

from __future__ import annotations

import pytest

from conftest import make_topology, make_workload
from shardplan.enumerators import EnumerationOptions, column_splits, enumerate_options, split
from shardplan.errors import SpecError
from shardplan.types import (
    PlacementKind,
    ShardingType,
    TableConstraints,
    TableSpec,
    Workload,
)


def _cells(o) -> int:
    return sum(s.num_rows * s.num_cols for s in o.shards)


def test_split_and_column_splits():
    assert split(10, 3) == [(0, 4), (4, 3), (7, 3)]
    assert split(2, 4) == [(0, 1), (1, 1)]
    assert column_splits(64, 4, 4) == [(0, 16), (16, 16), (32, 16), (48, 16)]
    assert column_splits(12, 4, 4) is None  # 3 units of 4 cannot make 4 shards
    assert column_splits(10, 2, 4) is None  # not a multiple of the alignment


def test_every_option_tiles_its_table(dozen, topo16):
    opts = enumerate_options(dozen, topo16, EnumerationOptions(wide_min_share=0,
                                                               uvm_min_hbm_share=0))
    kinds = set()
    for t in dozen.tables:
        for o in opts[t.name]:
            kinds.add(o.sharding_type)
            if o.sharding_type is ShardingType.DATA_PARALLEL:
                assert len(o.shards) == topo16.world_size
                assert all(s.num_rows == t.num_embeddings for s in o.shards)
            else:
                assert _cells(o) == t.num_embeddings * t.embedding_dim
            if o.sharding_type in (ShardingType.COLUMN_WISE, ShardingType.TABLE_COLUMN_WISE):
                assert all(s.num_cols % 4 == 0 for s in o.shards)
                k = len(o.shards)
                assert k & (k - 1) == 0 and 2 <= k <= 8
            if o.sharding_type is ShardingType.TABLE_ROW_WISE:
                hosts = {topo16.rank(c[0]).host for c in o.candidate_ranks}
                assert len(hosts) == 1
    assert kinds == set(ShardingType)


def test_placements_offered(dozen, topo16):
    opts = enumerate_options(dozen, topo16, EnumerationOptions(uvm_min_hbm_share=0))
    kinds = {o.placement.kind for o in opts["t0"]}
    assert kinds == {PlacementKind.HBM, PlacementKind.UVM_CACHING, PlacementKind.UVM}
    ratios = {o.placement.cache_ratio for o in opts["t0"]
              if o.placement.kind is PlacementKind.UVM_CACHING}
    assert ratios == {0.05, 0.2}


def test_constraints_narrow_options(topo16):
    t = TableSpec(name="c", num_embeddings=10_000, embedding_dim=64, constraints=TableConstraints(
        sharding_types=(ShardingType.COLUMN_WISE,), placements=(PlacementKind.HBM,),
        min_column_shard_width=16))
    opts = enumerate_options(Workload(tables=(t,), batch_size=8), topo16)["c"]
    assert opts
    assert all(o.sharding_type is ShardingType.COLUMN_WISE for o in opts)
    assert all(o.placement.kind is PlacementKind.HBM for o in opts)
    assert all(min(s.num_cols for s in o.shards) >= 16 for o in opts)
    assert max(len(o.shards) for o in opts) == 4  # 64 / 16


def test_pins_and_colocation(topo16):
    w = make_workload(4)
    tables = list(w.tables)
    tables[0] = TableSpec(name="t0", num_embeddings=100, embedding_dim=8,
                          constraints=TableConstraints(pinned_ranks=(3, 4)))
    w = Workload(tables=tuple(tables), batch_size=8, colocate=(("t1", "t2"),))
    opts = enumerate_options(w, topo16)
    for o in opts["t0"]:  # TW/CW on the pins, RW over them: every shard on a pinned rank
        assert all(c is not None and set(c) <= {3, 4} for c in o.candidate_ranks)
    for name in ("t1", "t2"):
        assert {o.sharding_type for o in opts[name]} == {ShardingType.TABLE_WISE}


def test_pin_outside_topology_is_spec_error(topo16):
    t = TableSpec(name="p", num_embeddings=100, embedding_dim=8,
                  constraints=TableConstraints(pinned_ranks=(16,)))
    with pytest.raises(SpecError, match="ranks 0..15"):
        enumerate_options(Workload(tables=(t,), batch_size=8), topo16)


def test_large_cluster_prunes_small_tables():
    topo = make_topology(hosts=16, devices_per_host=8)
    w = make_workload(40)
    opts = enumerate_options(w, topo)
    total_shards = sum(len(o.shards) for v in opts.values() for o in v)
    full = enumerate_options(w, topo, EnumerationOptions(wide_min_share=0, uvm_min_hbm_share=0))
    assert total_shards < sum(len(o.shards) for v in full.values() for o in v)
    for v in opts.values():  # every table keeps table-wise
        assert any(o.sharding_type is ShardingType.TABLE_WISE for o in v)
    hosts = [{topo.rank(o.candidate_ranks[0][0]).host for o in v
              if o.sharding_type is ShardingType.TABLE_ROW_WISE} for v in full.values()]
    assert all(len(h) <= 4 for h in hosts)


def test_enumeration_options_validated():
    with pytest.raises(ValueError, match="cache_ratios"):
        EnumerationOptions(cache_ratios=(1.5,))
    with pytest.raises(ValueError, match="column_alignment"):
        EnumerationOptions(column_alignment=0)


def test_pruning_never_overrides_a_tables_own_sharding_types() -> None:
    """A small table restricted to wide types keeps options under the default pruning."""
    from shardplan.enumerators import enumerate_options
    from shardplan.types import ShardingType, TableConstraints, TableSpec, Workload

    from conftest import make_topology

    big = [TableSpec(name=f"big{i}", num_embeddings=10**7, embedding_dim=128, pooling_factor=20.0)
           for i in range(8)]
    small = TableSpec(name="small", num_embeddings=100, embedding_dim=8, constraints=TableConstraints(
        sharding_types=(ShardingType.ROW_WISE, ShardingType.DATA_PARALLEL)))
    w = Workload(tables=tuple(big) + (small,), batch_size=512)
    opts = enumerate_options(w, make_topology())["small"]
    assert opts and {o.sharding_type for o in opts} <= {ShardingType.ROW_WISE,
                                                       ShardingType.DATA_PARALLEL}


def test_pins_work_with_every_sharding_type(topo16):
    """Issue 11: a table pinned to host 1's ranks with sharding_types [table_row_wise] is
    TWRW on host 1; TWCW likewise; RW runs over the pinned ranks; DP needs every rank."""
    host1 = tuple(range(8, 16))
    for st in (ShardingType.TABLE_ROW_WISE, ShardingType.TABLE_COLUMN_WISE, ShardingType.ROW_WISE):
        t = TableSpec(name="g", num_embeddings=100_000, embedding_dim=64,
                      constraints=TableConstraints(sharding_types=(st,), pinned_ranks=host1))
        opts = enumerate_options(Workload(tables=(t,), batch_size=8), topo16)["g"]
        assert opts and all(o.sharding_type is st for o in opts)
        for o in opts:
            assert {r for c in o.candidate_ranks for r in c} <= set(host1)
            assert len(o.shards) > 1
    dp = TableSpec(name="d", num_embeddings=100, embedding_dim=8, constraints=TableConstraints(
        sharding_types=(ShardingType.DATA_PARALLEL, ShardingType.TABLE_WISE), pinned_ranks=host1))
    opts = enumerate_options(Workload(tables=(dp,), batch_size=8), topo16)["d"]
    assert {o.sharding_type for o in opts} == {ShardingType.TABLE_WISE}
    every = TableSpec(name="e", num_embeddings=100, embedding_dim=8, constraints=TableConstraints(
        sharding_types=(ShardingType.DATA_PARALLEL,), pinned_ranks=tuple(range(16))))
    opts = enumerate_options(Workload(tables=(every,), batch_size=8), topo16)["e"]
    assert [o.sharding_type for o in opts] == [ShardingType.DATA_PARALLEL]


def test_row_wise_over_a_span_of_hosts():
    topo = make_topology(hosts=8, devices_per_host=4)
    t = TableSpec(name="big", num_embeddings=1_000_000, embedding_dim=64,
                  constraints=TableConstraints(sharding_types=(ShardingType.ROW_WISE,),
                                               placements=(PlacementKind.HBM,)))
    opts = enumerate_options(Workload(tables=(t,), batch_size=8), topo)["big"]
    sizes = sorted({len(o.shards) for o in opts})
    assert sizes == [8, 16, 32]  # 2 and 4 hosts of 4, and all 32 ranks
    for o in opts:
        ranks = [c[0] for c in o.candidate_ranks]
        hosts = {topo.rank(r).host for r in ranks}
        assert len(hosts) * 4 == len(ranks) and ranks == sorted(ranks)


def test_grid_shard_is_column_blocks_row_wise_in_hosts():
    topo = make_topology(hosts=4, devices_per_host=4)
    t = TableSpec(name="g", num_embeddings=100_000, embedding_dim=64,
                  constraints=TableConstraints(sharding_types=(ShardingType.GRID_SHARD,),
                                               placements=(PlacementKind.HBM,)))
    opts = enumerate_options(Workload(tables=(t,), batch_size=8), topo)["g"]
    # 2 column blocks x 4 ranks on two windows of 2 hosts, or 4 blocks on all 4 hosts
    assert sorted(len(o.shards) for o in opts) == [8, 8, 16]
    hosts_of = sorted(tuple(sorted({topo.rank(c[0]).host for c in o.candidate_ranks}))
                      for o in opts if len(o.shards) == 8)
    assert hosts_of == [(0, 1), (2, 3)]  # the windows do not overlap
    for o in opts:
        by_block: dict = {}
        for sh, c in zip(o.shards, o.candidate_ranks):
            by_block.setdefault(sh.col_offset, set()).add(topo.rank(c[0]).host)
            assert sh.num_cols == 64 // (len(o.shards) // 4)
        assert all(len(h) == 1 for h in by_block.values())  # a block's rows stay in a host
        assert len({next(iter(h)) for h in by_block.values()}) == len(by_block)  # one host each


@pytest.mark.parametrize("hosts,pinned_hosts", [(3, None), (5, None), (6, (1, 2, 3))])
def test_grid_windows_cover_every_usable_host(hosts, pinned_hosts):
    """Aligned windows of k hosts, and the last k when k does not divide the usable hosts: every
    usable host is in some grid option of some table, and no window leaves the pins."""
    topo = make_topology(hosts=hosts, devices_per_host=2)
    pins = None if pinned_hosts is None else tuple(
        r for h in pinned_hosts for r in topo.ranks_of_host(h))
    tabs = tuple(TableSpec(name=f"g{i}", num_embeddings=10_000, embedding_dim=64,
                           constraints=TableConstraints(
                               sharding_types=(ShardingType.GRID_SHARD,),
                               placements=(PlacementKind.HBM,), pinned_ranks=pins))
                 for i in range(hosts))
    opts = enumerate_options(Workload(tables=tabs, batch_size=8), topo)
    usable = set(range(hosts)) if pinned_hosts is None else set(pinned_hosts)
    seen: set[int] = set()
    for name, per in opts.items():
        keys = [tuple(sorted({topo.rank(c[0]).host for c in o.candidate_ranks})) for o in per]
        assert len(keys) == len(set(keys)), name  # no window twice
        for k in keys:
            assert set(k) <= usable
            seen.update(k)
    assert seen == usable
