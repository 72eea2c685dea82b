"""Parquet and Arrow IPC files (``.parquet``, ``.arrow``, ``.feather``, Arrow streams), read
with pyarrow in batches of ``BATCH_ROWS`` rows.

Every integer column is a single-valued feature (a null is a missing value, pooling 0 there);
every list column of integers is a multi-hot feature whose pooling factor is the mean list
length (a null list counts 0). Other columns (floats, strings, ...) are left out and listed.
Feature ``col`` -> table ``t_col``. ``features`` (``--features``) picks columns by name.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from shardplan.errors import SpecError
from shardplan.stats.readers import (
    ARROW_FILE_MAGIC,
    ARROW_STREAM_MAGIC,
    PARQUET_MAGIC,
    Reader,
    TableLayout,
    check_file,
    format_hint,
    magic,
)
from shardplan.stats.types import DataFormat, FeatureBatch, MissingDependencyError, RecordBatch

BATCH_ROWS = 1 << 16


def require_pyarrow() -> Any:
    """The ``pyarrow`` module. Raises MissingDependencyError naming the extra."""
    try:
        import pyarrow
        import pyarrow.compute  # noqa: F401
        import pyarrow.ipc  # noqa: F401
        import pyarrow.parquet  # noqa: F401
    except ImportError:
        raise MissingDependencyError(
            "--format parquet needs pyarrow (in the stats extra of shardplan); install it "
            "with: pip install pyarrow") from None
    return pyarrow


def _kind(pa: Any, t: Any) -> str | None:
    """``scalar`` or ``list`` for an integer or list-of-integer type, else None."""
    if pa.types.is_integer(t):
        return "scalar"
    if (pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t)) \
            and pa.types.is_integer(t.value_type):
        return "list"
    return None


class ParquetReader(Reader):
    """Parquet / Arrow IPC columns of integer ids."""

    format = DataFormat.PARQUET
    progress_unit = "records"

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.pa = require_pyarrow()
        self._columns: dict[str, str] | None = None

    def _schema(self, path: Path) -> Any:
        check_file(path)
        head = magic(path, 8)
        pa = self.pa
        try:
            if head.startswith(PARQUET_MAGIC):
                return pa.parquet.ParquetFile(path).schema_arrow
            if head.startswith(ARROW_FILE_MAGIC):
                return pa.ipc.open_file(path).schema
            if head.startswith(ARROW_STREAM_MAGIC):
                return pa.ipc.open_stream(path).schema
        except (pa.ArrowException, OSError) as exc:
            raise SpecError(f"cannot read it as Parquet/Arrow: {exc}", source=str(path)) from None
        raise SpecError("not a Parquet or Arrow file (no PAR1 / ARROW1 magic bytes)"
                        + format_hint(path, self.format), source=str(path))

    def columns(self) -> dict[str, str]:
        """Column name -> ``scalar`` or ``list``, checked against every file."""
        if self._columns is not None:
            return self._columns
        first = self.paths[0]
        schema = self._schema(first)
        kinds = {f.name: _kind(self.pa, f.type) for f in schema}
        if self.options.features is not None:
            for name in self.options.features:
                if name not in kinds:
                    raise SpecError(f"no column {name!r}; columns: {', '.join(kinds)}",
                                    source=str(first), key_path="--features")
                if kinds[name] is None:
                    raise SpecError(f"column {name!r} is {schema.field(name).type}, not integer "
                                    "ids or lists of them", source=str(first),
                                    key_path="--features")
            chosen = {n: kinds[n] for n in self.options.features}
        else:
            chosen = {n: k for n, k in kinds.items() if k is not None}
            self.left_out = tuple(n for n, k in kinds.items() if k is None)
        if not chosen:
            raise SpecError("no integer or list-of-integer column to read ids from; columns: "
                            + ", ".join(f"{f.name} ({f.type})" for f in schema), source=str(first))
        for path in self.paths[1:]:
            other = {f.name: _kind(self.pa, f.type) for f in self._schema(path)}
            for name, kind in chosen.items():
                if other.get(name) != kind:
                    raise SpecError(f"column {name!r} is missing or of another type than in "
                                    f"{first}", source=str(path))
        self._columns = chosen
        return chosen

    def layout(self) -> tuple[TableLayout, ...]:
        return tuple(TableLayout(name=f"t_{c}", features=(c,), id_feature=c)
                     for c in self.columns())

    def _record_batches(self, path: Path) -> Iterator[Any]:
        pa, cols = self.pa, list(self.columns())
        head = magic(path, 8)
        try:
            if head.startswith(PARQUET_MAGIC):
                yield from pa.parquet.ParquetFile(path).iter_batches(batch_size=BATCH_ROWS,
                                                                     columns=cols)
                return
            reader = pa.ipc.open_file(path) if head.startswith(ARROW_FILE_MAGIC) \
                else pa.ipc.open_stream(path)
            batches = (reader.get_batch(i) for i in range(reader.num_record_batches)) \
                if head.startswith(ARROW_FILE_MAGIC) else iter(reader)
            for rb in batches:
                rb = rb.select(cols)
                for start in range(0, rb.num_rows, BATCH_ROWS):
                    yield rb.slice(start, BATCH_ROWS)
        except (pa.ArrowException, OSError) as exc:
            raise SpecError(f"cannot read it as Parquet/Arrow: {exc}", source=str(path)) from None

    def count_records(self, progress: Callable[[int], None] | None = None) -> int:
        total = 0
        for path in self.paths:
            self._schema(path)
            if magic(path, 8).startswith(PARQUET_MAGIC):
                total += self.pa.parquet.ParquetFile(path).metadata.num_rows
            else:
                total += sum(rb.num_rows for rb in self._record_batches(path))
        return total

    def batches(self) -> Iterator[RecordBatch]:
        kinds = self.columns()
        done = 0
        for path in self.paths:
            row = 0
            for rb in self._record_batches(path):
                feats = {name: self._feature(rb.column(name), kind, path, row, name)
                         for name, kind in kinds.items()}
                row += rb.num_rows
                done += rb.num_rows
                yield RecordBatch(num_records=rb.num_rows, features=feats, bytes_done=done)

    def _feature(self, arr: Any, kind: str, path: Path, row0: int, name: str) -> FeatureBatch:
        pc = self.pa.compute
        if kind == "scalar":
            lengths = arr.is_valid().to_numpy(zero_copy_only=False).astype(np.int64)
            values = arr.drop_null().to_numpy()
        else:
            lengths = pc.list_value_length(arr).fill_null(0).to_numpy().astype(np.int64)
            flat = arr.flatten()
            if flat.null_count:
                k = int(np.flatnonzero(~flat.is_valid().to_numpy(zero_copy_only=False))[0])
                raise SpecError("a null id inside a list; drop it or give an id",
                                source=str(path), key_path=f"row {_row(lengths, k, row0)}.{name}")
            values = flat.to_numpy()
        if values.dtype.kind == "i" and len(values) and values.min() < 0:
            k = int(np.flatnonzero(values < 0)[0])
            raise SpecError(f"id {int(values[k])} is negative; embedding ids are >= 0",
                            source=str(path), key_path=f"row {_row(lengths, k, row0)}.{name}")
        return FeatureBatch(values=values.astype(np.uint64), lengths=lengths)


def _row(lengths: np.ndarray, k: int, row0: int) -> int:
    """1-based row of the file that holds value ``k`` of a batch starting at row ``row0``."""
    return row0 + int(np.searchsorted(np.cumsum(lengths), k, side="right")) + 1
