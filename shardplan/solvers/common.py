"""What every solver shares: the cost of every option as arrays, the per-rank load state,
table-group constraints (co-location, separation) and infeasibility diagnosis.

Costs come only through the linear ``CostModel`` interface (``shardplan.types``): a rank's
lane times are ``rank_overhead + group costs of the sharding groups used + sum(everywhere_cost)
+ sum(shard_cost)``, and the step time is the model's ``StepModel`` over the ranks' lanes.
Costs depend on a rank only through its host group, so every shard is costed once per host
group; per-rank arrays are built only for memory and for the load state.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from shardplan.errors import SolverError
from shardplan.types import (
    LANES,
    STAGE_LANE_INDEX,
    Assignment,
    Composition,
    GroupKey,
    PlanningContext,
    ShardingOption,
    ShardingType,
    StepModel,
)

#: Relative tolerance under which two makespans count as equal (float noise of summed costs).
REL_EPS = 1e-9
NUM_LANES = len(LANES)


def _stage_starts() -> np.ndarray | None:
    """The first lane of each stage, when every stage's lanes are contiguous and in order (so
    one ``np.maximum.reduceat`` gives all stage times); else None."""
    flat = [l for ix in STAGE_LANE_INDEX for l in ix]
    if flat != list(range(NUM_LANES)):
        return None
    return np.array([ix[0] for ix in STAGE_LANE_INDEX], dtype=np.intp)


_STAGE_STARTS = _stage_starts()


#: Past this many rows, per-stage column maxima beat one ``reduceat`` (which is fast on small
#: arrays and slow on tall ones).
_REDUCEAT_MAX_ROWS = 64


def stage_max(lanes: np.ndarray) -> np.ndarray:
    """[..., L] lane times -> [..., S] stage times (each stage its longest lane): the same
    values as ``StepModel.stage_times``, in fewer numpy calls (the solvers' hot loops)."""
    lanes = np.asarray(lanes, dtype=float)
    if _STAGE_STARTS is not None and (lanes.ndim == 1 or lanes.size <= _REDUCEAT_MAX_ROWS * NUM_LANES):
        return np.maximum.reduceat(lanes, _STAGE_STARTS, axis=-1)
    out = np.empty(lanes.shape[:-1] + (len(STAGE_LANE_INDEX),))
    for s, ix in enumerate(STAGE_LANE_INDEX):
        if len(ix) == 1:
            out[..., s] = lanes[..., ix[0]]
            continue
        np.maximum(lanes[..., ix[0]], lanes[..., ix[1]], out=out[..., s])
        for j in ix[2:]:
            np.maximum(out[..., s], lanes[..., j], out=out[..., s])
    return out


def _stage_sum(stages: np.ndarray, first: int) -> np.ndarray:
    """Sum of ``stages[..., first:]`` in index order (what ``sum(-1)`` gives on so few)."""
    if stages.ndim == 1 or stages.shape[0] <= _REDUCEAT_MAX_ROWS:
        return np.add.reduce(stages[..., first:], axis=-1)
    out = stages[..., first].copy()
    for s in range(first + 1, stages.shape[-1]):
        out += stages[..., s]
    return out


def compose(step: StepModel, stages: np.ndarray) -> np.ndarray:
    """``step.compose(stages)``: [..., S] stage times -> [...] step times (same values;
    pipelined: the longer of the input dist and the rest, plus the unhidden share of the
    shorter when the model's ``overlap`` is below 1)."""
    if step.pipelined:
        a, b = stages[..., 0], _stage_sum(stages, 1)
        if step.overlap == 1.0:
            return np.maximum(a, b)
        return np.maximum(a, b) + step.unhidden * np.minimum(a, b)
    return _stage_sum(stages, 0)


def scalar_time(lanes: np.ndarray) -> np.ndarray:
    """[..., L] lane times -> [...] the sum of stage times (each stage its longest lane): one
    number per shard or rank, for ranking and balancing (not the step time)."""
    return _stage_sum(stage_max(lanes), 0)


def makespan_of(step: StepModel, load: np.ndarray) -> float:
    """``step.makespan(load)`` for a [ranks, L] float array (the same value, fewer calls)."""
    if step.composition is Composition.SYNCHRONIZED:
        return float(compose(step, stage_max(load.max(0))))
    return float(compose(step, stage_max(load)).max())


@dataclass(slots=True)
class OptionCosts:
    """One option's costs. Shard arrays are (shards, host groups[, lanes]); everywhere arrays
    per host group; ``every_hbm`` / ``every_ddr`` are per-rank views.

    Attributes:
        fixed: for options whose every shard has exactly one candidate rank (row-wise,
            data-parallel, table-row-wise), that rank per shard; else ``None``.
        key: index of the option's sharding group in ``CostTables.keys`` (-1: none).
        time_g: per shard and group, the shard's scalar time (:func:`scalar_time`).
        work_ms: the least total scalar time the option adds to the cluster (each shard on its
            cheapest group, plus the everywhere-costs of every rank).
        max_shard_ms: the largest single shard's scalar time, on its cheapest group.
        work_lanes: per lane, the least total time the option adds to the cluster.
        peak_ms: ``step.rank_time`` of its heaviest shard plus its everywhere-cost, on the
            cheapest group: some rank pays at least that.
    """

    option: ShardingOption
    candidates: Sequence[np.ndarray]  # rank indices allowed per shard
    lanes_g: np.ndarray  # [shards, groups, L]
    time_g: np.ndarray  # [shards, groups]
    hbm_g: np.ndarray
    ddr_g: np.ndarray
    every_lanes_g: np.ndarray  # [groups, L]
    every_hbm_g: np.ndarray  # [groups]
    every_ddr_g: np.ndarray
    group_of: np.ndarray
    key: int = -1
    fixed: np.ndarray | None = None
    work_ms: float = 0.0
    max_shard_ms: float = 0.0
    work_lanes: np.ndarray | None = None  # [L] least total lane time over the cluster
    peak_ms: float = 0.0  # the step time of the rank holding its heaviest shard, alone
    peak_lanes: np.ndarray | None = None  # [L] that rank's lanes from this option
    certain_lanes: np.ndarray | None = None  # [L] what the option certainly costs every rank
    hbm_bytes: float = 0.0  # total over shards and ranks, on group 0
    ddr_bytes: float = 0.0

    @property
    def num_shards(self) -> int:
        return len(self.candidates)

    @property
    def every_hbm(self) -> np.ndarray:
        return _per_rank(self.every_hbm_g, self.group_of)

    @property
    def every_ddr(self) -> np.ndarray:
        return _per_rank(self.every_ddr_g, self.group_of)

    @property
    def every_lanes(self) -> np.ndarray:
        """[ranks, L] (a broadcast view with one host group)."""
        return _per_rank(self.every_lanes_g, self.group_of)

    @property
    def every_time(self) -> np.ndarray:
        return _per_rank(scalar_time(self.every_lanes_g), self.group_of)

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

    def shard_lanes(self, si: int, ranks: np.ndarray | int) -> np.ndarray:
        """Shard ``si``'s lane times on ``ranks`` ([n, L], or [L] for one rank)."""
        return self.lanes_g[si, self.group_of[ranks]]


def every(per_group: np.ndarray, group_of: np.ndarray) -> np.ndarray:
    """Per-group values to add to a per-rank array: the one group's row itself (it broadcasts
    in arithmetic, with no view to build), else one row per rank."""
    return per_group[0] if per_group.shape[0] == 1 else per_group[group_of]


def _per_rank(per_group: np.ndarray, group_of: np.ndarray) -> np.ndarray:
    """Per-group values as a per-rank array (a read-only broadcast view for one group)."""
    if per_group.shape[0] == 1:
        return np.broadcast_to(per_group[0], (len(group_of),) + per_group.shape[1:])
    return per_group[group_of]


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
    """Every option of every table, costed once per host group, and the sharding groups.

    Options that differ only in which host they use (table-row-wise and table-column-wise
    over each host) share their cost arrays when the hosts are of the same group, and the
    identical replicas of a data-parallel option are costed once.

    Attributes:
        keys: the sharding groups any option joins; ``key_lanes_g[k]`` ([groups, L]) is what
            each participant of group ``k`` pays once if any table uses it, ``key_ranks[k]``
            its participants (a boolean mask over ranks; None: all).
        step: the cost model's step-time composition.
    """

    tables: list[str]
    options: list[list[OptionCosts]]
    table_weight: list[float]
    world: int
    group_of: np.ndarray
    base_lanes_g: np.ndarray  # [groups, L]
    base_hbm: np.ndarray
    base_ddr: np.ndarray
    cap_hbm: np.ndarray
    cap_ddr: np.ndarray
    step: StepModel
    keys: list[GroupKey]
    key_lanes_g: np.ndarray  # [keys, groups, L]
    key_hbm_g: np.ndarray  # [keys, groups]
    key_ddr_g: np.ndarray
    key_ranks: list[np.ndarray | None]
    key_member_lanes_g: np.ndarray | None = None  # [keys, groups, L] the members' extra
    num_groups: int = 1
    index: dict[str, int] = field(default_factory=dict)
    #: the candidate array of every shard that may go to any rank (``np.arange(world)``):
    #: hot loops test ``cand is ct.all_ranks`` to skip indexing by it
    all_ranks: np.ndarray | None = None
    #: values derived from these tables alone (the cheap bounds, per-key least lanes),
    #: computed once; a copy with other options must start with an empty one
    memo: dict[str, object] = field(default_factory=dict)

    @property
    def base_lanes(self) -> np.ndarray:
        return _per_rank(self.base_lanes_g, self.group_of)

    @property
    def base_time(self) -> np.ndarray:
        return _per_rank(scalar_time(self.base_lanes_g), self.group_of)

    def key_min_lanes(self) -> np.ndarray:
        """[keys, L]: per sharding group, the least fixed cost any rank pays per lane."""
        out = self.memo.get("key_min_lanes")
        if out is None:
            out = np.array([self.key_cost(k)[0].min(0) for k in range(len(self.keys))]
                           ).reshape(len(self.keys), NUM_LANES)
            self.memo["key_min_lanes"] = out
        return out

    def key_cost(self, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Group ``k``'s fixed cost per rank: (lanes [ranks, L], hbm, ddr): what every rank
        pays, plus, on the ranks of ``key_ranks[k]``, the members' extra (built once per
        group and kept in ``memo``, read-only)."""
        memo = self.memo.setdefault("key_cost", {})
        out = memo.get(k)
        if out is None:
            lanes = np.array(_per_rank(self.key_lanes_g[k], self.group_of))
            hbm = np.array(_per_rank(self.key_hbm_g[k], self.group_of))
            ddr = np.array(_per_rank(self.key_ddr_g[k], self.group_of))
            mask = self.key_ranks[k]
            if mask is not None:
                lanes[mask] += self.key_member_lanes_g[k][self.group_of[mask]]
            for a in (lanes, hbm, ddr):
                a.flags.writeable = False
            out = memo[k] = (lanes, hbm, ddr)
        return out

    @classmethod
    def of(cls, ctx: PlanningContext) -> CostTables:
        """The cost tables of ``ctx``, built once and kept on the context (so the planner's
        lower bound and the solver share one build)."""
        ct = ctx.cache.get("cost_tables")
        if ct is None:
            ct = ctx.cache["cost_tables"] = cls.build(ctx)
        return ct

    @classmethod
    def build(cls, ctx: PlanningContext) -> CostTables:
        topo, cm = ctx.topology, ctx.cost_model
        world = topo.world_size
        group_of = np.array([ri.group for ri in topo.ranks], dtype=np.int64)
        groups = sorted(set(group_of.tolist()))
        ng = max(groups) + 1
        all_ranks = np.arange(world)
        caps = [topo.capacity(r) for r in range(world)]
        cap_hbm = np.array([c.hbm for c in caps])
        cap_ddr = np.array([c.ddr for c in caps])
        base = {g: cm.rank_overhead(g) for g in groups}
        base_lanes_g = np.zeros((ng, NUM_LANES))
        for g in groups:
            base_lanes_g[g] = base[g].perf.as_tuple()
        base_hbm = np.array([base[g].memory.hbm for g in group_of])
        base_ddr = np.array([base[g].memory.ddr for g in group_of])
        keys: list[GroupKey] = []
        key_index: dict[GroupKey, int] = {}
        tables, options, weights = [], [], []
        arr_cache: dict[tuple[int, ...], np.ndarray] = {}
        per_group = np.bincount(group_of, minlength=ng).astype(float)  # ranks per group
        # id(candidate tuple) -> (the tuple, kept alive; its ranks if one each; all distinct)
        fixed_of: dict[int, tuple] = {}
        for t in ctx.workload.tables:
            ocs: list[OptionCosts] = []
            cache: dict[tuple, tuple] = {}
            for o in ctx.options[t.name]:
                n = len(o.shards)
                fixed = None
                # options of one table and of many share candidate tuples (the enumerator
                # builds one per rank list): read each distinct one once
                got = fixed_of.get(id(o.candidate_ranks))
                if got is None:
                    one = all(c is not None and len(c) == 1 for c in o.candidate_ranks)
                    arr = (np.fromiter((c[0] for c in o.candidate_ranks), dtype=np.int64,
                                       count=n) if one else None)
                    every_rank = (arr is not None and n == world
                                  and len(set(arr.tolist())) == world)
                    got = fixed_of[id(o.candidate_ranks)] = (o.candidate_ranks, arr, every_rank)
                if got[1] is not None:
                    fixed = got[1]
                    cands: Sequence[np.ndarray] = _FixedCandidates(fixed)
                else:
                    cands = [all_ranks if c is None else _as_array(c, arr_cache)
                             for c in o.candidate_ranks]
                if ng == 1:
                    gpat: tuple | None = None
                else:
                    gpat = tuple(None if c is None else tuple(sorted({int(group_of[r]) for r in c}))
                                 for c in o.candidate_ranks)
                # host variants (a few shards each) share arrays; hashing thousands of
                # shards (row-wise on every rank) costs more than it saves
                key = (o.sharding_type, o.placement, o.shards, gpat) if n <= 64 else None
                arrays = cache.get(key) if key is not None else None
                if arrays is None:
                    arrays = _cost_arrays(cm, o, groups, ng, n)
                    if (arrays[0] < 0).any() or (arrays[3] < 0).any():
                        # the solvers' early exits and bounds rest on adding load never
                        # lowering the step time
                        raise SolverError(f"the cost model gave table {t.name!r} "
                                          f"({o.sharding_type.value}) a negative time; lane "
                                          "costs must be >= 0")
                    if key is not None:
                        cache[key] = arrays
                lg, hg, dg, ev_l, ev_h, ev_d = arrays
                tg = scalar_time(lg) if n else np.zeros((0, ng))
                gk = cm.group_key(o)
                ki = -1
                if gk is not None:
                    ki = key_index.get(gk, -1)
                    if ki < 0:
                        ki = key_index[gk] = len(keys)
                        keys.append(gk)
                # sums over ranks of per-group values: weighted by the ranks per group
                ev_total = float(per_group @ scalar_time(ev_l))
                ev_work = per_group @ ev_l
                if fixed is not None:
                    on = tg[np.arange(n), group_of[fixed]]
                    on_l = lg[np.arange(n), group_of[fixed]]
                    work = float(on.sum() + ev_total)
                    max_shard = float(on.max()) if n else 0.0
                    work_l = on_l.sum(0) + ev_work
                    peak_rows = on_l + ev_l[group_of[fixed]]
                else:
                    tmin = tg[:, groups].min(axis=1) if n else np.zeros(0)
                    work = float(tmin.sum() + ev_total)
                    max_shard = float(tmin.max()) if n else 0.0
                    work_l = (lg[:, groups].min(axis=1).sum(0) if n else 0.0) + ev_work
                    best = tg[:, groups].argmin(axis=1) if n else np.zeros(0, dtype=int)
                    gsel = np.array(groups)[best]
                    peak_rows = lg[np.arange(n), gsel] + ev_l[gsel]
                if n:
                    times = cm.step.compose(stage_max(peak_rows))
                    pk = int(np.argmax(times))
                    peak, peak_l = float(times[pk]), np.asarray(peak_rows[pk], dtype=float)
                else:
                    peak, peak_l = 0.0, ev_l.min(0)
                certain = ev_l.min(0).astype(float)
                if got[2]:
                    certain = certain + lg[np.arange(n), group_of[fixed]].min(0)  # a shard on every rank
                g0 = groups[0]
                ocs.append(OptionCosts(
                    option=o, candidates=cands, lanes_g=lg, time_g=tg, hbm_g=hg, ddr_g=dg,
                    every_lanes_g=ev_l, every_hbm_g=ev_h, every_ddr_g=ev_d,
                    group_of=group_of, key=ki, fixed=fixed, work_ms=work, max_shard_ms=max_shard,
                    work_lanes=np.asarray(work_l, dtype=float), peak_ms=peak,
                    peak_lanes=peak_l, certain_lanes=certain,
                    hbm_bytes=float(hg[:, g0].sum() + per_group @ ev_h),
                    ddr_bytes=float(dg[:, g0].sum() + per_group @ ev_d)))
            tables.append(t.name)
            options.append(ocs)
            weights.append(min((oc.work_ms for oc in ocs), default=0.0))
        nk = len(keys)
        key_lanes_g = np.zeros((nk, ng, NUM_LANES))
        key_hbm_g = np.zeros((nk, ng))
        key_ddr_g = np.zeros((nk, ng))
        key_member_g = np.zeros((nk, ng, NUM_LANES))
        key_ranks: list[np.ndarray | None] = []
        for ki, gk in enumerate(keys):
            for g in groups:
                c = cm.group_cost(gk, g)
                key_lanes_g[ki, g] = c.perf.as_tuple()
                key_hbm_g[ki, g], key_ddr_g[ki, g] = c.memory.hbm, c.memory.ddr
                if gk.ranks is not None:
                    key_member_g[ki, g] = cm.group_member_cost(gk, g).perf.as_tuple()
            if gk.ranks is None:
                key_ranks.append(None)
            else:
                m = np.zeros(world, dtype=bool)
                m[list(gk.ranks)] = True
                key_ranks.append(m)
        return cls(tables=tables, options=options, table_weight=weights, world=world,
                   group_of=group_of, base_lanes_g=base_lanes_g, base_hbm=base_hbm,
                   base_ddr=base_ddr, cap_hbm=cap_hbm, cap_ddr=cap_ddr, step=cm.step,
                   keys=keys, key_lanes_g=key_lanes_g, key_hbm_g=key_hbm_g,
                   key_ddr_g=key_ddr_g, key_ranks=key_ranks, key_member_lanes_g=key_member_g,
                   num_groups=ng, all_ranks=all_ranks,
                   index={n: i for i, n in enumerate(tables)})

    def assignment(self, ctx: PlanningContext, choice: list[tuple[int, tuple[int, ...]]]
                   ) -> Assignment:
        """An Assignment from ``choice[t] = (option index, ranks)``, tables in workload order."""
        opts = tuple(self.options[ti][oi].option for ti, (oi, _) in enumerate(choice))
        ranks = tuple(tuple(int(r) for r in rs) for _, rs in choice)
        return Assignment(options=opts, ranks=ranks)

    def choice_of(self, assignment: Assignment) -> list[tuple[int, tuple[int, ...]]]:
        """The inverse of :meth:`assignment` (option indices looked up by identity/equality)."""
        out = []
        for ti, (o, rs) in enumerate(zip(assignment.options, assignment.ranks)):
            oi = next((k for k, oc in enumerate(self.options[ti]) if oc.option is o), None)
            if oi is None:
                oi = next((k for k, oc in enumerate(self.options[ti]) if oc.option == o), None)
            if oi is None:
                raise SolverError(f"table {o.table!r}: the assignment uses an option that was "
                                  "not enumerated")
            out.append((oi, tuple(rs)))
        return out


class _FixedCandidates(Sequence):
    """Candidates of an option whose shard i may only go to ``fixed[i]`` (no per-shard arrays)."""

    __slots__ = ("fixed",)

    def __init__(self, fixed: np.ndarray) -> None:
        self.fixed = fixed

    def __len__(self) -> int:
        return len(self.fixed)

    def __getitem__(self, i):  # type: ignore[override]
        return self.fixed[i:i + 1]


def _as_array(c: tuple[int, ...], cache: dict) -> np.ndarray:
    a = cache.get(c)
    if a is None:
        a = cache[c] = np.array(c, dtype=np.int64)
    return a


def _cost_arrays(cm, o: ShardingOption, groups: list[int], ng: int, n: int) -> tuple:
    lg = np.zeros((n, ng, NUM_LANES))
    hg, dg = np.zeros((n, ng)), np.zeros((n, ng))
    ev_l, ev_h, ev_d = np.zeros((ng, NUM_LANES)), np.zeros(ng), np.zeros(ng)
    replicas = o.sharding_type is ShardingType.DATA_PARALLEL and n > 1 and len(set(o.shards)) == 1
    for g in groups:
        if replicas:  # identical replicas: cost one, copy to all
            c = cm.shard_cost(o, 0, g)
            lg[:, g] = c.perf.as_tuple()
            hg[:, g], dg[:, g] = c.memory.hbm, c.memory.ddr
        elif n:
            # shards of one shape share one cost object: read each distinct one once (a
            # row-wise option on 4,096 ranks has 4,096 shards and a handful of shapes)
            costs = cm.shard_costs(o, g)
            slot: dict[int, int] = {}
            distinct = []
            at = np.empty(n, dtype=np.intp)
            for si, c in enumerate(costs):
                j = slot.get(id(c))
                if j is None:
                    j = slot[id(c)] = len(distinct)
                    distinct.append(c)
                at[si] = j
            lg[:, g] = np.array([c.perf.as_tuple() for c in distinct])[at]
            hg[:, g] = np.array([c.memory.hbm for c in distinct])[at]
            dg[:, g] = np.array([c.memory.ddr for c in distinct])[at]
        e = cm.everywhere_cost(o, g)
        ev_l[g] = e.perf.as_tuple()
        ev_h[g], ev_d[g] = e.memory.hbm, e.memory.ddr
    return lg, hg, dg, ev_l, ev_h, ev_d


@functools.cache
def silence_highs_banner() -> None:
    """HiGHS prints a copyright banner to the process's stdout (C level) the first time a
    solver is made, even with output off; make that first one with stdout pointed at
    /dev/null so it never lands in the CLI's output or a piped plan summary."""
    try:
        import highspy
    except ImportError:
        return
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 1)
            highspy.Highs()
    finally:
        os.dup2(saved, 1)
        os.close(saved)


# ---------------------------------------------------------------------------------------------
# Load state
# ---------------------------------------------------------------------------------------------


class LoadState:
    """Per-rank lane times and memory of a partial or full assignment, with add / remove; the
    sharding groups in use are counted, and each one's fixed cost is added when its first
    table arrives and taken off when its last one leaves."""

    __slots__ = ("ct", "load", "hbm", "ddr", "key_count")

    def __init__(self, ct: CostTables) -> None:
        self.ct = ct
        self.load = np.array(ct.base_lanes, dtype=float)
        self.hbm = ct.base_hbm.copy()
        self.ddr = ct.base_ddr.copy()
        self.key_count = np.zeros(len(ct.keys), dtype=np.int64)

    def copy(self) -> LoadState:
        s = LoadState.__new__(LoadState)
        s.ct, s.load, s.hbm, s.ddr = self.ct, self.load.copy(), self.hbm.copy(), self.ddr.copy()
        s.key_count = self.key_count.copy()
        return s

    def _key(self, k: int, sign: float) -> None:
        lanes, hbm, ddr = self.ct.key_cost(k)
        self.load += sign * lanes
        self.hbm += sign * hbm
        self.ddr += sign * ddr

    def apply(self, oc: OptionCosts, ranks: tuple[int, ...] | np.ndarray, sign: float = 1.0) -> None:
        """Add (``sign=1``) or remove (``sign=-1``) an option placed on ``ranks``."""
        if oc.key >= 0:
            before = self.key_count[oc.key]
            self.key_count[oc.key] += 1 if sign > 0 else -1
            if sign > 0 and before == 0:
                self._key(oc.key, 1.0)
            elif sign < 0 and before == 1:
                self._key(oc.key, -1.0)
        self.load += sign * every(oc.every_lanes_g, oc.group_of)
        self.hbm += sign * every(oc.every_hbm_g, oc.group_of)
        self.ddr += sign * every(oc.every_ddr_g, oc.group_of)
        r = np.asarray(ranks, dtype=np.int64)
        if len(r) == 1:  # one shard (most tables): plain indexing, no np.add.at
            q = int(r[0])
            g = self.ct.group_of[q]
            self.load[q] += sign * oc.lanes_g[0, g]
            self.hbm[q] += sign * oc.hbm_g[0, g]
            self.ddr[q] += sign * oc.ddr_g[0, g]
        elif len(r):
            g = self.ct.group_of[r]
            idx = np.arange(len(r))
            np.add.at(self.load, r, sign * oc.lanes_g[idx, g])
            np.add.at(self.hbm, r, sign * oc.hbm_g[idx, g])
            np.add.at(self.ddr, r, sign * oc.ddr_g[idx, g])

    @property
    def makespan(self) -> float:
        return makespan_of(self.ct.step, self.load)

    @property
    def rank_time(self) -> np.ndarray:
        """Each rank's scalar time (sum of its stage times), for balancing."""
        return scalar_time(self.load)


def least_work_lanes(ct: CostTables, ti: int) -> np.ndarray:
    """Per lane, the least total time table ``ti`` adds to the cluster over its options."""
    ocs = ct.options[ti]
    if not ocs:
        return np.zeros(NUM_LANES)
    return np.minimum.reduce([oc.work_lanes for oc in ocs])


def evaluate(ct: CostTables, choice: list[tuple[int, tuple[int, ...]]]) -> LoadState:
    """The load state of a full choice."""
    st = LoadState(ct)
    for ti, (oi, rs) in enumerate(choice):
        st.apply(ct.options[ti][oi], rs)
    return st


# ---------------------------------------------------------------------------------------------
# Table groups (co-location, separation): shardplan.solvers.groups, re-exported here
# ---------------------------------------------------------------------------------------------

# ---------------------------------------------------------------------------------------------
# Infeasibility: shardplan.solvers.diagnose (needs CostTables above, so imported last)
# ---------------------------------------------------------------------------------------------
from shardplan.solvers.diagnose import diagnose_infeasible  # noqa: E402,F401  (re-exported)
from shardplan.solvers.groups import TableGroups, check_groups  # noqa: E402,F401
