"""Co-location and separation constraints (``Workload.colocate`` / ``Workload.separate``) as
table indices, and the check every plan passes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from shardplan.errors import InfeasiblePlanError
from shardplan.types import PlanningContext

if TYPE_CHECKING:  # pragma: no cover
    from shardplan.solvers.common import CostTables



@dataclass(frozen=True, slots=True)
class TableGroups:
    """Co-location and separation constraints, as table indices.

    Attributes:
        coloc_of: table index -> the indices of its co-location group (merged transitively),
            absent for free tables. Co-located tables are table-wise and share one rank.
        mates: table index -> the tables it must share no rank with.
    """

    coloc_of: dict[int, tuple[int, ...]]
    mates: dict[int, frozenset[int]]

    @classmethod
    def of(cls, ctx: PlanningContext, ct: CostTables) -> TableGroups:
        idx = ct.index
        parent = list(range(len(ct.tables)))

        def find(a: int) -> int:
            while parent[a] != a:
                parent[a] = parent[parent[a]]
                a = parent[a]
            return a

        for g in ctx.workload.colocate:
            ids = [idx[n] for n in g]
            for a in ids[1:]:
                parent[find(a)] = find(ids[0])
        members: dict[int, list[int]] = {}
        for g in ctx.workload.colocate:
            for n in g:
                members.setdefault(find(idx[n]), []).append(idx[n])
        coloc = {}
        for ids in members.values():
            grp = tuple(sorted(set(ids)))
            for i in grp:
                coloc[i] = grp
        mates: dict[int, set[int]] = {}
        for g in ctx.workload.separate:
            ids = sorted({idx[n] for n in g})
            for i in ids:
                mates.setdefault(i, set()).update(j for j in ids if j != i)
        for i, grp in coloc.items():
            for j in grp:
                if j in mates.get(i, ()):
                    raise InfeasiblePlanError(
                        f"tables {ct.tables[i]!r} and {ct.tables[j]!r} must both share a rank "
                        "(colocate) and not share one (separate)",
                        tables=(ct.tables[i], ct.tables[j]),
                        suggestions=("remove one of them from its colocate or separate group",))
        return cls(coloc_of=coloc, mates={k: frozenset(v) for k, v in mates.items()})

    @property
    def empty(self) -> bool:
        return not self.coloc_of and not self.mates

    def units(self, order: list[int]) -> list[tuple[int, ...]]:
        """``order`` turned into placement units: a co-location group at its first member."""
        out, done = [], set()
        for ti in order:
            if ti in done:
                continue
            grp = self.coloc_of.get(ti, (ti,))
            done.update(grp)
            out.append(grp)
        return out


def check_groups(ct: CostTables, tg: TableGroups, choice: list[tuple[int, tuple[int, ...]]]
                 ) -> str | None:
    """A description of the first violated co-location/separation constraint, else None."""
    for i, grp in tg.coloc_of.items():
        rs = set(choice[i][1])
        for j in grp:
            if set(choice[j][1]) != rs or len(rs) != 1:
                return f"co-located tables {ct.tables[i]!r} and {ct.tables[j]!r} are on {sorted(rs)} " \
                       f"and {sorted(set(choice[j][1]))}"
    for i, ms in tg.mates.items():
        for j in ms:
            common = set(choice[i][1]) & set(choice[j][1])
            if common:
                return f"separated tables {ct.tables[i]!r} and {ct.tables[j]!r} share rank(s) {sorted(common)}"
    return None
