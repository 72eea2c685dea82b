"""The hard solver cases: where plans matter most and a planner is easiest to fool.

Each case is a (workload, topology) pair plus *forced* plans: the same problem with every
table's options narrowed by constraints (one sharding type for all tables; each giant table
table-row-wise on a host of its own; ...), solved by greedy and local search. A forced plan is
an independent yardstick: a plan the solvers could have found, built by hand.

Used by ``bench/solvers.py --hard`` and by the tests (a small case).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

from shardplan.generate import synthetic_workload
from shardplan.loaders import load_problem, load_topology
from shardplan.types import (
    AccessSkew,
    BatchScope,
    IdOrder,
    ShardingType,
    TableSpec,
    Topology,
    Workload,
)

S = ShardingType


@dataclass(frozen=True, kw_only=True, slots=True)
class HardCase:
    """One case: the problem and the forced variants of it (name -> workload)."""

    name: str
    topology: Topology
    workload: Workload
    forced: dict[str, Workload]
    note: str = ""


def h100(hosts: int) -> Topology:
    """``h100-128x8``'s host spec with ``hosts`` hosts."""
    base = load_topology("h100-128x8")
    g = dataclasses.replace(base.host_groups[0], hosts=hosts)
    return dataclasses.replace(base, name=f"h100-{hosts}x8", host_groups=(g,), workload_path=None)


def force_all(work: Workload, types: tuple[ShardingType, ...], name: str) -> Workload:
    """Every table restricted to ``types`` (tables with constraints of their own keep them)."""
    tabs = tuple(t if t.constraints.sharding_types is not None else dataclasses.replace(
        t, constraints=dataclasses.replace(t.constraints, sharding_types=types))
        for t in work.tables)
    return dataclasses.replace(work, name=f"{work.name}/{name}", tables=tabs)


def force_own_hosts(work: Workload, topo: Topology, tables: list[str],
                    types: tuple[ShardingType, ...] = (S.TABLE_ROW_WISE,),
                    hosts_each: int = 1) -> Workload:
    """Each named table on hosts of its own (hosts ``[i k, (i + 1) k)`` for the i-th table, k
    = ``hosts_each``), as ``types``."""
    per = topo.host_groups[0].devices_per_host
    idx = {n: i for i, n in enumerate(tables)}
    hosts_each = max(1, min(hosts_each, topo.num_hosts))
    blocks = topo.num_hosts // hosts_each

    def pin(t: TableSpec) -> TableSpec:
        if t.name not in idx:
            return t
        h = (idx[t.name] % blocks) * hosts_each
        return dataclasses.replace(t, constraints=dataclasses.replace(
            t.constraints, sharding_types=types,
            pinned_ranks=tuple(range(h * per, (h + hosts_each) * per))))

    return dataclasses.replace(work, name=f"{work.name}/own-hosts",
                               tables=tuple(pin(t) for t in work.tables))


def _type_forcings(work: Workload) -> dict[str, Workload]:
    return {
        "all-TW": force_all(work, (S.TABLE_WISE,), "all-TW"),
        "all-TWRW": force_all(work, (S.TABLE_ROW_WISE,), "all-TWRW"),
        "all-RW": force_all(work, (S.ROW_WISE,), "all-RW"),
        "all-CW": force_all(work, (S.COLUMN_WISE,), "all-CW"),
        "all-GRID": force_all(work, (S.GRID_SHARD,), "all-GRID"),
        "no-TW": force_all(work, tuple(s for s in S if s is not S.TABLE_WISE), "no-TW"),
    }


def uniform(pooling: float, hosts: int = 16, tables: int = 16) -> HardCase:
    """Few heavy tables on many GPUs: ``tables`` x (1M rows x 64), per-rank batch 512."""
    topo = h100(hosts)
    tabs = tuple(TableSpec(name=f"u{i:02d}", num_embeddings=1_000_000, embedding_dim=64,
                           pooling_factor=pooling) for i in range(tables))
    work = Workload(name=f"uniform-{tables}x1M-p{pooling:g}", tables=tabs, batch_size=512)
    forced = _type_forcings(work)
    forced["own-hosts-TWRW"] = force_own_hosts(work, topo, [t.name for t in tabs])
    return HardCase(name=f"uniform-p{pooling:g}-{topo.world_size}", topology=topo, workload=work,
                    forced=forced)


def skewed_giants(hosts: int, *, small: int = 180, seed: int = 0) -> HardCase:
    """Four 600M x 128 tables (pooling 80-150, Zipf 1.05, frequency-ordered ids) and
    ``small`` smaller synthetic tables, per-rank batch 512."""
    topo = h100(hosts)
    pool = [80.0, 100.0, 120.0, 150.0]
    giants = tuple(TableSpec(name=f"giant{i}", num_embeddings=600_000_000, embedding_dim=128,
                             pooling_factor=pool[i],
                             access=AccessSkew(zipf_exponent=1.05, id_order=IdOrder.FREQUENCY))
                   for i in range(4))
    rest = synthetic_workload(small, seed=seed, max_rows=10**7).tables
    work = Workload(name=f"skewed-giants-{small}", tables=giants + rest, batch_size=512)
    forced = _type_forcings(work)
    forced["giants-own-hosts-TWRW"] = force_own_hosts(work, topo, [t.name for t in giants])
    forced["giants-own-hosts-GRID"] = force_own_hosts(
        work, topo, [t.name for t in giants], (S.TABLE_ROW_WISE, S.ROW_WISE, S.GRID_SHARD))
    # one sharding group (each group's all-to-all pays its latency on every rank), and each
    # giant's hot first row blocks on hosts of its own: grid over up to 8 hosts per giant (4
    # on 16 hosts)
    forced["all-GRID-giants-own-hosts"] = force_own_hosts(
        force_all(work, (S.GRID_SHARD,), "all-GRID"), topo, [t.name for t in giants],
        (S.GRID_SHARD,), hosts_each=min(8, topo.num_hosts // len(giants)))
    return HardCase(name=f"skewed-giants-{topo.world_size}", topology=topo, workload=work,
                    forced=forced)


def dcnv2_global(hosts: int, global_batch: int = 65_536) -> HardCase:
    """MLPerf DLRM-DCNv2 at a fixed global batch on ``hosts`` x 8 H100."""
    _, work = load_problem("dgx-h100-2x8")
    work = dataclasses.replace(work, batch_size=global_batch, batch_scope=BatchScope.GLOBAL)
    topo = h100(hosts)
    big = [t.name for t in sorted(work.tables, key=lambda t: -t.num_embeddings)[:4]]
    forced = _type_forcings(work)
    forced["big4-own-hosts-TWRW"] = force_own_hosts(work, topo, big)
    return HardCase(name=f"dcnv2-global-{topo.world_size}", topology=topo, workload=work,
                    forced=forced)


def bundled(name: str) -> HardCase:
    """A bundled topology with its workload (memory-tight, heterogeneous)."""
    topo, work = load_problem(name)
    return HardCase(name=f"{name}:{work.name}", topology=topo, workload=work,
                    forced=_type_forcings(work))


def memory_tight() -> HardCase:
    """DCNv2 on one 8 x A100-40GB host: most tables must leave HBM or be split."""
    topo, work = load_problem("dgx-a100-1x8")
    _, dcn = load_problem("dgx-h100-2x8")
    return HardCase(name=f"memory-tight:{dcn.name}@{topo.name}", topology=topo, workload=dcn,
                    forced=_type_forcings(dcn))


CASES: dict[str, Callable[[], HardCase]] = {
    **{f"uniform-p{p}-128": (lambda p=p: uniform(float(p))) for p in (10, 40, 100, 400)},
    "skewed-giants-128": lambda: skewed_giants(16),
    "skewed-giants-1024": lambda: skewed_giants(128),
    **{f"dcnv2-global-{8 * h}": (lambda h=h: dcnv2_global(h)) for h in (2, 16, 128)},
    "memory-tight": memory_tight,
    "heterogeneous": lambda: bundled("hetero-a100-h100"),
}
