"""Units for people: byte counts as ``1.50 GiB`` / ``12.0 MiB`` / ``512 B``.

Internally everything is bytes, bytes/s, seconds and milliseconds (units in field names);
this is only for messages, tables and figures.
"""

from __future__ import annotations

GiB = 2**30
MiB = 2**20


def format_bytes(n: float) -> str:
    """``n`` bytes in the largest binary unit that keeps it >= 1 (``1.50 GiB``, ``12.0 MiB``)."""
    for unit, k in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(n) >= k:
            return f"{n / k:.3g} {unit}"
    return f"{n:.0f} B"


__all__ = ["GiB", "MiB", "format_bytes"]
