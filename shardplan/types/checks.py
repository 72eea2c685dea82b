"""The validation helpers the value types share: a failed check raises ``SpecError``
(a ``ShardplanError``) naming the field."""

from __future__ import annotations

from shardplan.errors import SpecError


def _check(cond: bool, field_name: str, value: object, why: str) -> None:
    """Raise ``SpecError`` (a ``ShardplanError``, also a ``ValueError``) naming the field."""
    if not cond:
        raise SpecError(f"{field_name}={value!r}: {why}", key_path=None)


def _is_int(x: object) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)
