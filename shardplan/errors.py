"""The one exception hierarchy of shardplan.

Bad input (``SpecError`` and its children) is separate from an infeasible problem
(``InfeasiblePlanError``) and from solver trouble (``SolverError``), as networkx separates
``NetworkXError`` from ``NetworkXUnfeasible``. The CLI maps them to exit codes 1, 2 and 1.
Running a plan adds ``ExecutionError`` and ``ValidationMismatch``; a missing optional
dependency is ``TorchRecMissingError``. Warnings shardplan gives on purpose are
``ShardplanWarning``s (the CLI prints each as one ``warning:`` line).

This module imports nothing else of shardplan, so every other module may import it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from shardplan.types import Tier


class ShardplanError(Exception):
    """Root of every error shardplan raises on purpose."""


class SpecError(ShardplanError, ValueError):
    """Bad input: a file, field or value that cannot be used.

    Args:
        message: what is wrong and how to fix it.
        source: the file (or other origin) the value came from, if any.
        key_path: dotted key path inside that source, e.g. ``tables[3].embedding_dim``.
        line: 1-based line in the source, where the parser gives one.
    """

    def __init__(
        self,
        message: str,
        *,
        source: str | None = None,
        key_path: str | None = None,
        line: int | None = None,
    ) -> None:
        self.message = message
        self.source = source
        self.key_path = key_path
        self.line = line
        super().__init__(self._render())

    def _render(self) -> str:
        where = ""
        if self.source:
            where = self.source + (f":{self.line}" if self.line else "")
        if self.key_path:
            where = f"{where}: {self.key_path}" if where else self.key_path
        return f"{where}: {self.message}" if where else self.message


class TopologyError(SpecError):
    """Bad topology input."""


class LimitError(SpecError):
    """Input over one of the loaders' resource limits (``shardplan.parsing.LoadLimits``):
    too deeply nested, too many YAML nodes or alias expansions, hosts, devices or tables."""


class PlanError(SpecError):
    """A plan that is malformed or inconsistent (tampered with, overlapping shards, ...)."""


class UnknownCostModelError(PlanError):
    """A plan made by a cost model this shardplan cannot rebuild (a custom ``CostModel``), so
    its estimates cannot be re-derived; pass the model explicitly."""


@dataclass(frozen=True, kw_only=True, slots=True)
class Shortfall:
    """Memory missing on one tier, in bytes, for the whole cluster or one table."""

    tier: Tier
    needed_bytes: int
    available_bytes: int

    @property
    def missing_bytes(self) -> int:
        return max(0, self.needed_bytes - self.available_bytes)


class InfeasiblePlanError(ShardplanError):
    """No plan satisfies the memory limits and constraints.

    Args:
        message: one-line summary.
        tables: names of the tables that fit nowhere.
        shortfalls: memory missing per tier.
        suggestions: computed changes that would make the problem feasible.
    """

    def __init__(
        self,
        message: str,
        *,
        tables: tuple[str, ...] = (),
        shortfalls: tuple[Shortfall, ...] = (),
        suggestions: tuple[str, ...] = (),
    ) -> None:
        self.message = message
        self.tables = tables
        self.shortfalls = shortfalls
        self.suggestions = suggestions
        super().__init__(self.render())

    def render(self) -> str:
        parts = [self.message]
        if self.tables:
            shown = ", ".join(self.tables[:10])
            more = f" (+{len(self.tables) - 10} more)" if len(self.tables) > 10 else ""
            parts.append(f"tables that fit nowhere: {shown}{more}")
        for s in self.shortfalls:
            parts.append(
                f"{s.tier}: need {_gib(s.needed_bytes)}, have "
                f"{_gib(s.available_bytes)} (short {_gib(s.missing_bytes)})"
            )
        if self.suggestions:
            parts.append("would make it feasible: " + "; ".join(self.suggestions))
        return ". ".join(parts)


class SolverError(ShardplanError):
    """A solver failed for a reason other than infeasibility (backend missing, crashed, ...)."""



class ExecutionError(ShardplanError):
    """A rank failed while running a plan (a bug or an environment problem, not bad input)."""


class ValidationMismatch(ShardplanError):
    """The sharded run differs from the unsharded reference (names table, shard and rank)."""


class TorchRecMissingError(ShardplanError, ImportError):
    """TorchRec (or FBGEMM) is not installed, and the called function needs it."""


class ShardplanWarning(UserWarning):
    """Something the user should know that does not stop the command: a device model without
    a calibration profile, a plan whose estimates could not be re-checked, a rank nearly full."""


def _gib(n: float) -> str:
    """Bytes as GiB for messages, in at most 4 significant digits (1e300 bytes stays short)."""
    return f"{n / 2**30:.4g} GiB" if abs(n) < 2**30 * 1e6 else f"{n / 2**30:.3e} GiB"
