"""Criteo click logs: the Kaggle Display Advertising Challenge ``train.txt`` and the Terabyte
``day_0`` ... ``day_23`` files (plain or gzip).

Published format: one impression per line, 40 tab-separated fields: the label (0 or 1), 13
integer features and 26 categorical features, each an 8-digit hex hash; an empty field is a
missing value. Tables are named as in TorchRec's DLRM and MLPerf DLRM-DCNv2: feature
``cat_i`` -> table ``t_cat_i`` (the integer features ``int_0`` ... ``int_12`` are dense and
only validated).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from shardplan.errors import SpecError
from shardplan.stats.readers import (
    LineBlock,
    TextReader,
    TableLayout,
    byte_class,
    cell_text,
    first_bad,
    first_bad_byte,
    parse_hex8,
    split_fields,
)
from shardplan.stats.types import DataFormat, FeatureBatch, RecordBatch

NUM_INT = 13
NUM_CAT = 26
NUM_FIELDS = 1 + NUM_INT + NUM_CAT
HEX_DIGITS = 8  # Criteo's categorical values are 32-bit hashes written as 8 hex digits
INT_NAMES = tuple(f"int_{i}" for i in range(NUM_INT))
CAT_NAMES = tuple(f"cat_{i}" for i in range(NUM_CAT))
FIELD_NAMES = ("label", *INT_NAMES, *CAT_NAMES)
LAYOUT = ("a Criteo line has 40 tab-separated fields: label, int_0..int_12, cat_0..cat_25 "
          "(empty: missing)")
_LABEL_OK = byte_class(b"01")
_INT_OK = byte_class(b"0123456789-\t")  # the integer fields and the tabs between them


class CriteoReader(TextReader):
    """Criteo Kaggle / Terabyte TSV, optionally gzip."""

    format = DataFormat.CRITEO
    field_names = FIELD_NAMES

    def layout(self) -> tuple[TableLayout, ...]:
        return tuple(TableLayout(name=f"t_{c}", features=(c,), id_feature=c) for c in CAT_NAMES)

    def parse_block(self, block: LineBlock, path: Path, bytes_done: int) -> RecordBatch:
        buf = block.buf
        f = split_fields(block, 9, FIELD_NAMES, path, self.format, LAYOUT)
        lengths = f.lengths

        def fail(line_idx: int, field: int, why: str) -> SpecError:
            text = cell_text(buf, int(f.starts[line_idx, field]), int(f.ends[line_idx, field]))
            return SpecError(f"{text!r} {why}{block.cut_note(line_idx)}", source=str(path),
                             line=block.first_line + line_idx, key_path=FIELD_NAMES[field])

        bad_label = (lengths[:, 0] != 1) | ~_LABEL_OK[buf[f.starts[:, 0]]]
        if bad_label.any():
            raise fail(int(np.flatnonzero(bad_label)[0]), 0, "is not a label (0 or 1)")
        ints = slice(1, 1 + NUM_INT)
        bad_int = first_bad_byte(buf, f.starts[:, ints], f.ends[:, ints], _INT_OK)
        if bad_int is not None:
            raise fail(bad_int[0], 1 + bad_int[1], "is not an integer")
        cats = slice(1 + NUM_INT, NUM_FIELDS)
        cat_len = lengths[:, cats]
        bad_len = (cat_len != 0) & (cat_len != HEX_DIGITS)
        if bad_len.any():
            i, j = first_bad(bad_len)
            raise fail(i, 1 + NUM_INT + j, f"is not a hex id of {HEX_DIGITS} digits (empty "
                       "means missing)")
        present = cat_len == HEX_DIGITS
        # parse in buffer order (cache-friendly), then lay each feature's ids out contiguously
        parsed, bad_hex = parse_hex8(buf, f.starts[:, cats][present])
        if bad_hex.any():
            mask = np.zeros_like(present)
            mask[present] = bad_hex
            i, j = first_bad(mask)
            raise fail(i, 1 + NUM_INT + j, "is not a hex id")
        grid = np.zeros(present.shape, np.uint64)
        grid[present] = parsed
        values = grid.T[present.T]  # feature after feature, each in line order
        cuts = np.cumsum(present.sum(axis=0))[:-1]
        feats = {name: FeatureBatch(values=v, lengths=present[:, j].astype(np.int64))
                 for j, (name, v) in enumerate(zip(CAT_NAMES, np.split(values, cuts)))}
        return RecordBatch(num_records=len(present), features=feats, bytes_done=bytes_done)
