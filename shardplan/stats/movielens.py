"""MovieLens ratings: ``ratings.csv`` of ML-20M, ML-25M, ML-32M and ml-latest (plain or gzip).

Published format: a header ``userId,movieId,rating,timestamp``, then one rating a line,
sorted by userId. Tables, as in the bundled two-tower workload: ``user_id`` (the user tower's
id) and ``movie_id`` (the item tower's id). With ``history = H > 0`` the movie table also
serves ``user_history``: each rating looks up the user's previous ratings, at most H, so its
pooling factor is the mean of min(H, ratings the user made before this one) over ratings.
That count is a rating's position within its user's run of lines, which is why the history
needs the published order (the file grouped by userId); the history's ids are movies of the
same table, so the movie table's skew is measured on ``movieId``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from shardplan.errors import SpecError
from shardplan.stats.readers import (
    LineBlock,
    TextReader,
    TableLayout,
    first_bad_byte,
    byte_class,
    cell_text,
    format_hint,
    parse_decimal,
    split_fields,
)
from shardplan.stats.types import DataFormat, FeatureBatch, RecordBatch

HEADER = b"userId,movieId,rating,timestamp"
FIELD_NAMES = ("userId", "movieId", "rating", "timestamp")
LAYOUT = "a MovieLens rating line is userId,movieId,rating,timestamp"
USER, MOVIE, HISTORY = "user_id", "movie_id", "user_history"
_RATING_OK = byte_class(b"0123456789.")


class MovieLensReader(TextReader):
    """MovieLens ``ratings.csv``."""

    format = DataFormat.MOVIELENS
    header_lines = 1
    field_names = FIELD_NAMES
    training_order = False  # sorted by user; training shuffles the ratings

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._user = -1  # user of the current run, and ratings seen in it
        self._run = 0

    def layout(self) -> tuple[TableLayout, ...]:
        movie = (MOVIE, HISTORY) if self.options.history else (MOVIE,)
        return (TableLayout(name=USER, features=(USER,), id_feature=USER),
                TableLayout(name=MOVIE, features=movie, id_feature=MOVIE))

    def parse_block(self, block: LineBlock, path: Path, bytes_done: int) -> RecordBatch:
        buf = block.buf
        if block.first_line == 1:
            end = int(np.flatnonzero(buf == 10)[0])
            head = bytes(buf[:end]).rstrip(b"\r")
            if head != HEADER:
                raise SpecError(f"expected the header {HEADER.decode()} (MovieLens "
                                f"ratings.csv), got {head[:60].decode(errors='replace')!r}"
                                + format_hint(path, self.format), source=str(path), line=1)
        f = split_fields(block, ord(","), FIELD_NAMES, path, self.format, LAYOUT)
        skip = 1 if block.first_line == 1 else 0
        starts, ends = f.starts[skip:], f.ends[skip:]
        first_line = block.first_line + skip

        def fail(i: int, j: int, why: str) -> SpecError:
            text = cell_text(buf, int(starts[i, j]), int(ends[i, j]))
            return SpecError(f"{text!r} {why}{block.cut_note(i + skip)}", source=str(path),
                             line=first_line + i, key_path=FIELD_NAMES[j])

        cols = {}
        for j in (0, 1, 3):
            cols[j], bad = parse_decimal(buf, starts[:, j], ends[:, j])
            if bad.any():
                raise fail(int(np.flatnonzero(bad)[0]), j, "is not a non-negative integer")
        empty = np.flatnonzero(ends[:, 2] == starts[:, 2])
        bad = first_bad_byte(buf, starts[:, 2:3], ends[:, 2:3], _RATING_OK)
        lines = ([int(empty[0])] if len(empty) else []) + ([bad[0]] if bad else [])
        if lines:
            raise fail(min(lines), 2, "is not a rating (a number)")
        n = len(starts)
        ones = np.ones(n, np.int64)
        history = {HISTORY: self._history(cols[0], path, first_line)} \
            if self.options.history and n else {}
        return RecordBatch(num_records=n, bytes_done=bytes_done, lengths_only=history, features={
            USER: FeatureBatch(values=cols[0], lengths=ones),
            MOVIE: FeatureBatch(values=cols[1], lengths=ones)})

    def _history(self, users: np.ndarray, path, first_line: int) -> np.ndarray:
        """min(history, position of each rating in its user's run of lines)."""
        u = users.astype(np.int64)
        before = np.r_[self._user, u[:-1]]
        down = np.flatnonzero(u < before)
        if len(down):
            raise SpecError("ratings are not grouped by userId here (the published files are "
                            "sorted by userId); --history needs that order: sort the file by "
                            "userId or leave --history out", source=str(path),
                            line=first_line + int(down[0]), key_path="userId")
        idx = np.arange(len(u))
        run_start = np.maximum.accumulate(np.where(u != before, idx, -1))
        pos = np.where(run_start < 0, idx + self._run, idx - run_start)
        self._user = int(u[-1])
        self._run = int(pos[-1]) + 1
        return np.minimum(pos, self.options.history)
