"""The id-order finding: does id value order follow popularity?

It decides the workload's ``id_order`` (:class:`shardplan.types.IdOrder`), which the cost
model uses to split a table's lookups over contiguous row blocks (row-wise shards): hashed
ids spread hot rows evenly, frequency-ordered ids (id 0 the most popular, as in
frequency-sorted vocabularies) put them in the first block.

The finding is Spearman's rank correlation between id value and lookup count over the most
frequent ids (ties get their average rank). Hashed ids give about 0 (sd ~ 1/sqrt(ids));
frequency-sorted ids about -1. ``frequency`` is written when |rho| reaches
``FREQUENCY_ORDER_MIN_RHO``; a positive rho (the most popular ids at the top of the range)
loads the last block instead of the first, which the cost model's most-loaded block matches.
"""

from __future__ import annotations

import numpy as np

from shardplan.stats.types import IdOrderFinding
from shardplan.types import IdOrder

#: Frequent ids the correlation is computed over.
ORDER_TOP_IDS = 1000
#: Fewest frequent ids for a finding at all.
ORDER_MIN_IDS = 20
#: |rho| from which ids count as frequency-ordered (hashed ids of 1,000 give |rho| < 0.1).
FREQUENCY_ORDER_MIN_RHO = 0.5


def _average_ranks(x: np.ndarray) -> np.ndarray:
    order = np.argsort(x, kind="stable")
    s = x[order]
    start = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])
    end = np.r_[start[1:], len(s)]
    avg = (start + end - 1) / 2.0
    ranks = np.empty(len(x), np.float64)
    ranks[order] = np.repeat(avg, end - start)
    return ranks


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman's rank correlation of two equal-length arrays (0 when either is constant)."""
    rx, ry = _average_ranks(np.asarray(x)), _average_ranks(np.asarray(y))
    rx -= rx.mean()
    ry -= ry.mean()
    den = float(np.sqrt((rx @ rx) * (ry @ ry)))
    return float(rx @ ry) / den if den > 0 else 0.0


def id_order_finding(top_ids: np.ndarray, top_counts: np.ndarray,
                     top: int = ORDER_TOP_IDS) -> IdOrderFinding | None:
    """The finding over the ``top`` most frequent ids.

    Args:
        top_ids: ids, most frequent first.
        top_counts: their lookup counts.
        top: how many of them to use.

    Returns:
        The finding, or None with fewer than ``ORDER_MIN_IDS`` ids.
    """
    ids, counts = top_ids[:top], top_counts[:top]
    if len(ids) < ORDER_MIN_IDS:
        return None
    rho = round(spearman(ids.astype(np.float64), counts.astype(np.float64)), 4)
    order = IdOrder.FREQUENCY if abs(rho) >= FREQUENCY_ORDER_MIN_RHO else IdOrder.HASHED
    return IdOrderFinding(spearman=rho, ids=len(ids), order=order)
