"""Workloads from CSV: the minimal table list other tools write.

The header names the columns (``name,num_embeddings,embedding_dim,pooling_factor``, optional
``dtype``, ``optimizer``, ``features``, ``zipf_exponent``), in any order, each once; a
leading byte-order mark (as Excel writes one) is ignored. Each row becomes a table through the
same checks as a YAML table (:func:`shardplan.specs.table_from_dict`); errors name the file,
the row (``row N``, its line) and the column. A CSV carries no batch size, scope, mode or
optimizer: they are arguments (the CLI's ``--batch-size``, ``--batch-scope``, ``--mode``).
"""

from __future__ import annotations

import csv
import difflib
import io
from pathlib import Path
from typing import Any

from shardplan.errors import SpecError
from shardplan.specs import check_table_count, check_unique_names, table_from_dict
from shardplan.parsing import DEFAULT_LIMITS, Ctx, LoadLimits, as_int, as_num, build
from shardplan.types import BatchScope, DType, Mode, Optimizer, TableSpec, Workload

CSV_REQUIRED = ("name", "num_embeddings", "embedding_dim", "pooling_factor")
CSV_OPTIONAL = ("dtype", "optimizer", "features", "zipf_exponent", "id_order")
CSV_BATCH_SIZE = 512  # a CSV carries no batch: this one, per rank, training (CLI: --batch-size)


def workload_from_csv(text: str, source: str = "<csv>", *, batch_size: int = CSV_BATCH_SIZE,
                      batch_scope: BatchScope = BatchScope.PER_RANK, mode: Mode = Mode.TRAINING,
                      default_optimizer: Optimizer = Optimizer.ROWWISE_ADAGRAD,
                      limits: LoadLimits = DEFAULT_LIMITS) -> Workload:
    """A workload from CSV with header ``name,num_embeddings,embedding_dim,pooling_factor``
    (optional columns: dtype, optimizer, features separated by ``;`` or ``|``, zipf_exponent,
    id_order: ``hashed`` or ``frequency``, with zipf_exponent).

    A leading byte-order mark is ignored; each column may appear once.

    Raises:
        SpecError: naming the source, the row (``row N``, its line) and the column.
    """
    ctx = Ctx(source, {})
    text = text.removeprefix("\ufeff")
    reader = csv.reader(io.StringIO(text))
    try:
        header = [h.strip() for h in next(reader)]
    except StopIteration:
        raise ctx.fail("", "the CSV is empty; it needs the header "
                       + ",".join(CSV_REQUIRED)) from None
    except csv.Error as exc:
        raise SpecError(f"cannot read the CSV header: {exc}", source=source, line=1) from None
    for i, c in enumerate(header):
        if not c:
            raise ctx.fail("header", f"column {i + 1} has no name; name it or remove it")
        if header.index(c) != i:
            raise ctx.fail("header", f"column {c!r} appears twice (columns {header.index(c) + 1} "
                                     f"and {i + 1}); keep one")
    missing = [c for c in CSV_REQUIRED if c not in header]
    if missing:
        sep = next((d for d in (";", "\t", "|") if len(header) == 1 and d in header[0]), None)
        hint = (f"; the header is one column holding {sep!r}: shardplan reads comma-separated "
                "values, so save the file with commas" if sep else "")
        raise ctx.fail("header", f"missing column(s) {', '.join(missing)}; the header must "
                       f"include {','.join(CSV_REQUIRED)}{hint}")
    allowed = CSV_REQUIRED + CSV_OPTIONAL
    unknown = [c for c in header if c not in allowed]
    if unknown:
        close = difflib.get_close_matches(unknown[0].lower().replace(" ", "_"), allowed, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ctx.fail("header", f"unknown column {unknown[0]!r}{hint} (allowed: "
                       f"{', '.join(allowed)})")
    tables = []
    lineno = 1
    try:
        for row in reader:
            lineno = reader.line_num
            if not row or all(not c.strip() for c in row):
                continue
            if len(tables) >= limits.max_tables:
                check_table_count(len(tables) + 1, "", Ctx(source, {"": lineno}), limits)
            tables.append(_csv_row(row, header, source, lineno, len(tables) + 1))
    except csv.Error as exc:
        raise SpecError(f"cannot read this CSV row: {exc}", source=source,
                        line=reader.line_num) from None
    if not tables:
        raise ctx.fail("", "the CSV has a header but no tables; add at least one row")
    check_unique_names(tables, "rows", ctx)
    return build(ctx, "", lambda: Workload(
        name=Path(source).stem, tables=tuple(tables), batch_size=batch_size,
        batch_scope=batch_scope, mode=mode, default_optimizer=default_optimizer, source=source))


def _csv_row(row: list[str], header: list[str], source: str, lineno: int, n: int) -> TableSpec:
    """Table ``n`` (1-based, blank rows not counted) from one CSV row at line ``lineno``."""
    where = f"row {n}"
    if len(row) != len(header):
        raise SpecError(f"expected {len(header)} cells, got {len(row)}", source=source,
                        key_path=where, line=lineno)
    cells = dict(zip(header, (c.strip() for c in row)))
    lctx = Ctx(source, {f"{where}.{c}": lineno for c in header} | {where: lineno})
    rec: dict[str, Any] = {}
    for col in header:
        val = cells[col]
        if col == "features":
            if val:
                rec["features"] = [f for f in val.replace("|", ";").split(";") if f]
        elif col in ("dtype", "optimizer"):
            if val:
                rec[col] = val
        elif col in ("num_embeddings", "embedding_dim"):
            rec[col] = as_int(val, f"{where}.{col}", lctx)
        elif col == "pooling_factor":
            rec[col] = as_num(val, f"{where}.{col}", lctx)
        elif col == "zipf_exponent":
            if val:
                rec.setdefault("access", {})["zipf_exponent"] = as_num(val, f"{where}.{col}",
                                                                       lctx)
        elif col == "id_order":
            if val:
                rec.setdefault("access", {})["id_order"] = val
        else:
            rec[col] = val
    return table_from_dict(rec, where, lctx, DType.FP32)
