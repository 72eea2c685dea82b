"""The migration side of a re-plan, compiled for the solvers: what placing a shard of an
option on a rank sends over which link, and the objective that weighs it against the step
time.

Built beside the planner's cost tables (``shardplan.solvers.common.CostTables``), which give
the step time and memory; this module adds, per (table, option, shard), the old blocks it
overlaps (:func:`shardplan.replanning.migration.overlaps`) and, for any set of candidate ranks,
the bytes that would move and the load they put on each link direction.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from shardplan.errors import SpecError
from shardplan.replanning.migration import CHECKPOINT, Block, Links, OldData, block_bytes, overlaps, \
    source_of
from shardplan.solvers.common import CostTables
from shardplan.types import Workload

#: The default ``move_weight``: one ms of estimated migration costs as much as 0.01 ms of
#: step time, i.e. the migration amortised over 100 training steps. The estimate counts link
#: time only (a lower bound: a real reshard also pauses training to rebuild the embedding
#: modules and their optimizers), so the default weighs it above the link time alone;
#: bench/replan.py shows the trade-off at 0.001 as well.
DEFAULT_MOVE_WEIGHT = 1e-2


@dataclass(frozen=True, kw_only=True, slots=True)
class Objective:
    """What a re-plan minimises.

    Attributes:
        move_weight: minimise ``makespan_ms + move_weight x migration_ms`` (the migration
            amortised over ``1 / move_weight`` steps); ``None`` with a budget.
        budget_bytes: minimise the makespan with at most this many bytes moved (moved plus
            restored); ``None`` with a weight.
    """

    move_weight: float | None = DEFAULT_MOVE_WEIGHT
    budget_bytes: float | None = None

    def __post_init__(self) -> None:
        if (self.move_weight is None) == (self.budget_bytes is None):
            raise SpecError("give a move weight or a move budget, not both (nor neither)",
                            key_path="move_weight")
        if self.move_weight is not None and not (np.isfinite(self.move_weight)
                                                 and self.move_weight >= 0):
            raise SpecError(f"move_weight={self.move_weight!r}: must be a number >= 0",
                            key_path="move_weight")
        if self.budget_bytes is not None and not (np.isfinite(self.budget_bytes)
                                                  and self.budget_bytes >= 0):
            raise SpecError(f"move_budget_bytes={self.budget_bytes!r}: must be >= 0",
                            key_path="move_budget_bytes")

    def value(self, makespan_ms, migration_s):
        """The objective (ms): the step time, plus the weighted migration time."""
        if self.move_weight is None:
            return makespan_ms
        return makespan_ms + self.move_weight * 1e3 * migration_s

    def within(self, moved_bytes):
        """Whether ``moved_bytes`` keeps to the budget (always, with a weight)."""
        if self.budget_bytes is None:
            return np.ones(np.shape(moved_bytes), dtype=bool) if np.ndim(moved_bytes) else True
        return np.asarray(moved_bytes) <= self.budget_bytes * (1 + 1e-12) + 1.0

    def as_dict(self) -> dict[str, object]:
        return {"move_weight": self.move_weight, "move_budget_bytes": self.budget_bytes}


class MoveTables:
    """Per (table, option, shard): the old blocks it overlaps, their bytes; and for candidate
    ranks, the bytes that would move and the link-direction loads (see :class:`Links`)."""

    def __init__(self, ct: CostTables, workload: Workload, data: OldData, links: Links) -> None:
        self.ct, self.workload, self.data, self.links = ct, workload, data, links
        self._pieces: dict[tuple[int, int, int], list[tuple[Block, float]]] = {}

    def pieces(self, ti: int, oi: int, si: int) -> list[tuple[Block, float]]:
        """The old blocks shard ``si`` of option ``oi`` of table ``ti`` overlaps, with bytes."""
        key = (ti, oi, si)
        p = self._pieces.get(key)
        if p is None:
            o = self.ct.options[ti][oi].option
            s = o.shards[si]
            spec = self.workload.table(o.table)
            p = [(b, block_bytes(spec, self.workload, nr, nc))
                 for b, nr, nc in overlaps(self.data, o.table, s.row_offset, s.num_rows,
                                           s.col_offset, s.num_cols)]
            self._pieces[key] = p
        return p

    def contrib(self, ti: int, oi: int, si: int, ranks: np.ndarray
                ) -> tuple[np.ndarray, np.ndarray]:
        """For each rank of ``ranks``: the bytes that move if the shard goes there ([n]) and
        the load it adds on each link direction ([n, links])."""
        ranks = np.asarray(ranks, dtype=np.int64).reshape(-1)
        lk = self.links
        n, w, nh = len(ranks), lk.world, lk.hosts
        moved = np.zeros(n)
        d = np.zeros((n, lk.num_edges))
        host = lk.host_of
        for b, nbytes in self.pieces(ti, oi, si):
            if not b.holders:
                src = np.full(n, CHECKPOINT)
            elif len(b.holders) == 1:
                src = np.full(n, b.holders[0])
            else:
                src = np.array([source_of(b, int(r), host) for r in ranks], dtype=np.int64)
            idx = np.flatnonzero(src != ranks)
            if not len(idx):
                continue
            rr, ss = ranks[idx], src[idx]
            moved[idx] += nbytes
            d[idx, w + rr] += nbytes
            ck = ss == CHECKPOINT
            d[idx[ck], 2 * w + nh + host[rr[ck]]] += nbytes
            i2, s2, r2 = idx[~ck], ss[~ck], rr[~ck]
            d[i2, s2] += nbytes
            cross = host[s2] != host[r2]
            d[i2[cross], 2 * w + host[s2[cross]]] += nbytes
            d[i2[cross], 2 * w + nh + host[r2[cross]]] += nbytes
        return moved, d

    def option_contrib(self, ti: int, oi: int, ranks) -> tuple[float, np.ndarray]:
        """Total bytes moved and link loads of option ``oi`` of table ``ti`` on ``ranks``."""
        total = 0.0
        load = np.zeros(self.links.num_edges)
        for si, r in enumerate(ranks):
            m, d = self.contrib(ti, oi, si, np.array([r]))
            total += float(m[0])
            load += d[0]
        return total, load

    def has_old(self, ti: int) -> bool:
        """Whether table ``ti`` has any old state."""
        return bool(self.data.blocks.get(self.ct.tables[ti]))

    def time_s(self, load: np.ndarray) -> np.ndarray | float:
        """Migration time of link loads ([links] or [n, links])."""
        t = load / self.links.bandwidth_bytes_per_s
        return t.max(-1) if t.shape[-1] else np.zeros(t.shape[:-1])


__all__ = ["DEFAULT_MOVE_WEIGHT", "MoveTables", "Objective"]
