"""What every solver shares: the cost of every option as arrays, and infeasibility diagnosis."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from shardplan.errors import InfeasiblePlanError, Shortfall
from shardplan.types import PlanningContext, ShardingOption, Tier


@dataclass(slots=True)
class OptionCosts:
    """One option's costs. Shard arrays are (shards, host groups); everywhere arrays are per rank."""

    option: ShardingOption
    candidates: list[np.ndarray]  # rank indices allowed per shard
    time_g: np.ndarray
    hbm_g: np.ndarray
    ddr_g: np.ndarray
    every_time: np.ndarray
    every_hbm: np.ndarray
    every_ddr: np.ndarray
    group_of: np.ndarray

    @property
    def num_shards(self) -> int:
        return len(self.candidates)

    # per-rank views of shard si, indexed by rank
    @property
    def time(self) -> _PerRank:
        return _PerRank(self.time_g, self.group_of)

    @property
    def hbm(self) -> _PerRank:
        return _PerRank(self.hbm_g, self.group_of)

    @property
    def ddr(self) -> _PerRank:
        return _PerRank(self.ddr_g, self.group_of)

    @property
    def total_time(self) -> float:
        """Work this option adds to the cluster (shards on their group 0 ranks plus everywhere)."""
        return float(self.time_g[:, 0].sum() + self.every_time.sum())


class _PerRank:
    """``view[si][ranks]`` -> the shard's cost on those ranks (by their host group)."""

    __slots__ = ("g", "group_of")

    def __init__(self, g: np.ndarray, group_of: np.ndarray) -> None:
        self.g, self.group_of = g, group_of

    def __getitem__(self, si: int) -> _Row:
        return _Row(self.g[si], self.group_of)


class _Row:
    __slots__ = ("row", "group_of")

    def __init__(self, row: np.ndarray, group_of: np.ndarray) -> None:
        self.row, self.group_of = row, group_of

    def __getitem__(self, ranks: np.ndarray | int) -> np.ndarray | float:
        return self.row[self.group_of[ranks]]


@dataclass(slots=True)
class CostTables:
    """Every option of every table, costed once per host group."""

    tables: list[str]
    options: list[list[OptionCosts]]
    table_weight: list[float]
    world: int
    group_of: np.ndarray
    base_time: np.ndarray
    base_hbm: np.ndarray
    base_ddr: np.ndarray
    cap_hbm: np.ndarray
    cap_ddr: np.ndarray

    @classmethod
    def build(cls, ctx: PlanningContext) -> CostTables:
        topo, cm = ctx.topology, ctx.cost_model
        world = topo.world_size
        group_of = np.array([ri.group for ri in topo.ranks], dtype=np.int64)
        groups = sorted(set(group_of.tolist()))
        all_ranks = np.arange(world)
        caps = [topo.capacity(r) for r in range(world)]
        cap_hbm = np.array([c.hbm for c in caps])
        cap_ddr = np.array([c.ddr for c in caps])
        base = [cm.rank_overhead(g) for g in groups]
        base_time = np.array([cm.total(base[g].perf) for g in group_of])
        base_hbm = np.array([base[g].memory.hbm for g in group_of])
        base_ddr = np.array([base[g].memory.ddr for g in group_of])
        tables, options, weights = [], [], []
        for t in ctx.workload.tables:
            ocs = []
            for o in ctx.options[t.name]:
                n = len(o.shards)
                tg = np.zeros((n, len(groups)))
                hg = np.zeros((n, len(groups)))
                dg = np.zeros((n, len(groups)))
                ev_t, ev_h, ev_d = np.zeros(len(groups)), np.zeros(len(groups)), np.zeros(len(groups))
                for g in groups:
                    for si, c in enumerate(cm.shard_costs(o, g)):
                        tg[si, g], hg[si, g], dg[si, g] = cm.total(c.perf), c.memory.hbm, c.memory.ddr
                    e = cm.everywhere_cost(o, g)
                    ev_t[g], ev_h[g], ev_d[g] = cm.total(e.perf), e.memory.hbm, e.memory.ddr
                cands = [all_ranks if c is None else np.array(c, dtype=np.int64)
                         for c in o.candidate_ranks]
                ocs.append(OptionCosts(option=o, candidates=cands, time_g=tg, hbm_g=hg, ddr_g=dg,
                                       every_time=ev_t[group_of], every_hbm=ev_h[group_of],
                                       every_ddr=ev_d[group_of], group_of=group_of))
            tables.append(t.name)
            options.append(ocs)
            weights.append(min((oc.total_time for oc in ocs), default=0.0))
        return cls(tables=tables, options=options, table_weight=weights, world=world,
                   group_of=group_of, base_time=base_time, base_hbm=base_hbm, base_ddr=base_ddr,
                   cap_hbm=cap_hbm, cap_ddr=cap_ddr)


def diagnose_infeasible(ctx: PlanningContext, failed: list[str]) -> InfeasiblePlanError:
    """Explain why ``failed`` tables could not be placed: the cluster-wide shortfall per tier
    (each table at its least-memory option) and changes that would close it."""
    topo, cm = ctx.topology, ctx.cost_model
    world = topo.world_size
    cap = [topo.capacity(r) for r in range(world)]
    total_cap = {Tier.HBM: sum(c.hbm for c in cap), Tier.DDR: sum(c.ddr for c in cap)}
    need = {Tier.HBM: 0.0, Tier.DDR: 0.0}
    need_hbm_only = 0.0
    no_options = []
    for t in ctx.workload.tables:
        best = None
        for o in ctx.options[t.name]:
            m_h = sum(c.memory.hbm for c in cm.shard_costs(o, 0)) + world * cm.everywhere_cost(o, 0).memory.hbm
            m_d = sum(c.memory.ddr for c in cm.shard_costs(o, 0)) + world * cm.everywhere_cost(o, 0).memory.ddr
            if best is None or (m_h, m_d) < best:
                best = (m_h, m_d)
        if best is None:
            no_options.append(t.name)
            continue
        need[Tier.HBM] += best[0]
        need[Tier.DDR] += best[1]
        hbm_only = [o for o in ctx.options[t.name] if o.placement.kind.value == "hbm"]
        if hbm_only:
            need_hbm_only += min(sum(c.memory.hbm for c in cm.shard_costs(o, 0)) for o in hbm_only)
    shortfalls = tuple(
        Shortfall(tier=tier.value, needed_bytes=int(need[tier]), available_bytes=int(total_cap[tier]))
        for tier in (Tier.HBM, Tier.DDR) if need[tier] > total_cap[tier])
    suggestions = []
    per_dev_hbm = total_cap[Tier.HBM] / world
    if need[Tier.HBM] > total_cap[Tier.HBM] and per_dev_hbm > 0:
        suggestions.append(f"at least {math.ceil(need[Tier.HBM] / per_dev_hbm)} devices of this kind "
                           f"(have {world})")
    if need_hbm_only > total_cap[Tier.HBM]:
        suggestions.append("allow UVM caching or host-memory placements for the largest tables")
    suggestions.append("a smaller dtype (fp16 halves the weights; int8 quarters them)")
    if no_options:
        suggestions.append(f"relax the constraints of {', '.join(no_options[:5])}: they allow no option")
    return InfeasiblePlanError(
        f"no plan fits: {len(failed)} table(s) could not be placed in memory",
        tables=tuple(failed), shortfalls=shortfalls, suggestions=tuple(suggestions))
