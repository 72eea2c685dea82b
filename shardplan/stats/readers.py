"""What every reader shares: the reader base, opening (gzip by its magic bytes), reading text
in blocks of whole lines, vectorised field splitting and number parsing, and errors that name
the file, the line and the field.

Text is parsed with numpy over blocks of ``BLOCK_BYTES`` (no Python loop per line or field),
so a reader runs at disk or gunzip speed; the first bad line of a block is located exactly.
"""

from __future__ import annotations

import gzip
import zlib
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Callable, Iterator

import numpy as np

from shardplan.errors import SpecError
from shardplan.stats.types import DataFormat, RecordBatch, StatsOptions

BLOCK_BYTES = 16 << 20  # text read per block: ~65k Criteo lines
MAX_LINE_BYTES = 1 << 20  # a longer line means the file is not line-oriented text
GZIP_MAGIC = b"\x1f\x8b"
PARQUET_MAGIC = b"PAR1"
ARROW_FILE_MAGIC = b"ARROW1"
ARROW_STREAM_MAGIC = b"\xff\xff\xff\xff"
ZIP_MAGIC = b"PK\x03\x04"  # torch.save's format
MAX_DECIMAL_DIGITS = 18  # ids parsed as decimal stay below 10**18 < 2**63
NEWLINE, CR = 10, 13


@dataclass(frozen=True, kw_only=True, slots=True)
class TableLayout:
    """One table a reader produces: its name, the features it serves, and the feature whose
    ids are its rows."""

    name: str
    features: tuple[str, ...]
    id_feature: str


class Reader(ABC):
    """Reads one format. Subclasses set ``format`` and implement the three methods.

    Args:
        paths: the input files, read in order as one stream of records.
        options: the stats options (readers use ``features`` and ``history``).
    """

    format: DataFormat
    #: Columns seen but not read (not ids), for the report.
    left_out: tuple[str, ...] = ()
    #: Whether the files hold records in the order training reads them (``LruOrder.AUTO``
    #: measures LRU hit curves in a shuffled order where they do not).
    training_order: bool = True

    def __init__(self, paths: tuple[Path, ...], options: StatsOptions) -> None:
        self.paths, self.options = paths, options

    @abstractmethod
    def layout(self) -> tuple[TableLayout, ...]:
        """The tables, in output order."""

    @abstractmethod
    def batches(self) -> Iterator[RecordBatch]:
        """The records, in input order, in batches; ``bytes_done`` counts ``progress_unit``."""

    @abstractmethod
    def count_records(self, progress: Callable[[int], None] | None = None) -> int:
        """How many records the input holds (a uniform sample needs it first); ``progress``
        is called with the ``progress_unit``s done so far, where counting takes a pass."""

    progress_unit = "bytes"

    def progress_total(self) -> int:
        """The total of ``bytes_done`` at the end: file sizes, or records."""
        if self.progress_unit == "records":
            return self.count_records()
        return sum(_size(p) for p in self.paths)


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def check_file(path: Path) -> None:
    """Raise SpecError when ``path`` is missing, a folder or empty."""
    if not path.exists():
        raise SpecError("no such file", source=str(path))
    if path.is_dir():
        raise SpecError("expected a data file, got a folder", source=str(path))
    if _size(path) == 0:
        raise SpecError("the file is empty; pass a file with data", source=str(path))


def magic(path: Path, n: int = 8) -> bytes:
    """The first ``n`` bytes of ``path``."""
    try:
        with path.open("rb") as f:
            return f.read(n)
    except OSError as exc:
        raise SpecError(f"cannot read: {exc.strerror}", source=str(path)) from None


def sniff(path: Path) -> DataFormat | None:
    """The format ``path`` looks like, for a hint when ``--format`` seems wrong."""
    head = magic(path, 64)
    if head.startswith(PARQUET_MAGIC) or head.startswith(ARROW_FILE_MAGIC) \
            or head.startswith(ARROW_STREAM_MAGIC):
        return DataFormat.PARQUET
    if head.startswith(ZIP_MAGIC):
        return DataFormat.KJT
    if head.startswith(GZIP_MAGIC):
        try:
            with gzip.open(path, "rb") as f:
                head = f.read(64)
        except (OSError, EOFError, zlib.error):
            return None
    if head.startswith(b"userId,movieId"):
        return DataFormat.MOVIELENS
    if head.count(b"\t") >= 3:
        return DataFormat.CRITEO
    return None


def format_hint(path: Path, expected: DataFormat) -> str:
    """`` (it looks like --format X)`` when the file sniffs as another format, else ``""``."""
    seen = sniff(path)
    return f" (it looks like --format {seen.value})" if seen and seen is not expected else ""


class _Counted:
    """A binary file that remembers how many bytes were read from it (compressed bytes under
    gzip), for progress."""

    def __init__(self, raw: BinaryIO) -> None:
        self.raw, self.done = raw, 0

    def read(self, n: int = -1) -> bytes:
        data = self.raw.read(n)
        self.done += len(data)
        return data

    def readable(self) -> bool:
        return True

    def close(self) -> None:
        self.raw.close()


@dataclass(frozen=True, kw_only=True, slots=True)
class LineBlock:
    """Whole lines of one file: ``buf`` ends with a newline; line 1 of ``buf`` is line
    ``first_line`` of the file; ``bytes_done`` is how far into the file the read is;
    ``unterminated``: ``buf`` is the file's last line, which had no newline (a line cut off
    shows up here)."""

    buf: np.ndarray
    first_line: int
    bytes_done: int
    unterminated: bool

    def cut_note(self, line_index: int) -> str:
        """`` (the file ends mid-line)`` for the unterminated last line, else ``""``."""
        return " (the file ends mid-line, with no newline: it may be cut off)" \
            if self.unterminated and line_index == 0 else ""


def line_blocks(path: Path, *, block_bytes: int = BLOCK_BYTES) -> Iterator[LineBlock]:
    """The lines of a text file (gzip-compressed or not), in blocks of whole lines.

    A final line without a newline gets one. Raises SpecError for an unreadable or truncated
    gzip stream, naming the line it stopped after.
    """
    check_file(path)
    try:
        raw = path.open("rb")
    except OSError as exc:
        raise SpecError(f"cannot read: {exc.strerror}", source=str(path)) from None
    counted = _Counted(raw)
    stream: BinaryIO = counted  # type: ignore[assignment]
    if magic(path, 2) == GZIP_MAGIC:
        stream = gzip.GzipFile(fileobj=counted, mode="rb")  # type: ignore[arg-type]
    line = 1
    rest = b""
    try:
        while True:
            try:
                chunk = stream.read(block_bytes)
            except EOFError:
                raise SpecError(f"truncated gzip stream after line {line - 1}; the file was "
                                "cut off (download or compress it again)",
                                source=str(path)) from None
            except (OSError, zlib.error) as exc:
                raise SpecError(f"cannot decompress after line {line - 1}: {exc}",
                                source=str(path)) from None
            data = rest + chunk
            if not chunk:
                if data:
                    if not data.endswith(b"\n"):
                        data += b"\n"
                    yield LineBlock(buf=np.frombuffer(data, np.uint8), first_line=line,
                                    bytes_done=counted.done, unterminated=True)
                return
            cut = data.rfind(b"\n") + 1
            if cut == 0:
                if len(data) > MAX_LINE_BYTES:
                    raise SpecError(f"line {line} is longer than {MAX_LINE_BYTES >> 20} MiB; "
                                    "this is not a line-oriented text file", source=str(path))
                rest = data
                continue
            block, rest = data[:cut], data[cut:]
            yield LineBlock(buf=np.frombuffer(block, np.uint8), first_line=line,
                            bytes_done=counted.done, unterminated=False)
            line += block.count(b"\n")
    finally:
        stream.close()
        raw.close()


def count_lines(path: Path, progress: Callable[[int], None] | None = None) -> int:
    """Lines in a text file (gzip or not); a final line without a newline counts.
    ``progress`` is called with the bytes of the file read so far."""
    lines = 0
    for b in line_blocks(path):
        lines += int(np.count_nonzero(b.buf == NEWLINE))
        if progress is not None:
            progress(b.bytes_done)
    return lines


class TextReader(Reader):
    """A line-oriented format: blocks of whole lines, each parsed by ``parse_block``;
    ``header_lines`` lines at the top of each file are not records; ``field_names`` name a
    line's fields.

    A last line without a newline is refused even when it parses: the published files end
    with one, and a file cut off at a field boundary (or inside a number) parses as valid.
    """

    header_lines = 0
    field_names: tuple[str, ...] = ()

    @abstractmethod
    def parse_block(self, block: LineBlock, path: Path, bytes_done: int) -> RecordBatch:
        """The records of one block (``bytes_done``: bytes read over all files so far)."""

    def count_records(self, progress: Callable[[int], None] | None = None) -> int:
        total, offset = 0, 0
        for p in self.paths:
            def step(done: int, offset: int = offset) -> None:
                if progress is not None:
                    progress(offset + done)
            total += count_lines(p, step) - self.header_lines
            offset += _size(p)
        return total

    def batches(self) -> Iterator[RecordBatch]:
        offset = 0
        for path in self.paths:
            done = 0
            for block in line_blocks(path):
                done = block.bytes_done
                batch = self.parse_block(block, path, offset + done)
                if block.unterminated and batch.num_records:
                    raise SpecError(
                        "the file ends mid-line (no newline after the last line): it may be "
                        "cut off; copy or download it again, or end it with a newline if the "
                        "line is whole", source=str(path), line=block.first_line,
                        key_path=self.field_names[-1] if self.field_names else None)
                if batch.num_records:
                    yield batch
            offset += done


@dataclass(frozen=True, kw_only=True, slots=True)
class Fields:
    """Field boundaries of a block: ``starts`` and ``ends`` (exclusive) are (lines, fields)."""

    starts: np.ndarray
    ends: np.ndarray

    @property
    def lengths(self) -> np.ndarray:
        return self.ends - self.starts


def cell_text(buf: np.ndarray, start: int, end: int, limit: int = 40) -> str:
    """A cell's text for an error message (shortened past ``limit`` characters)."""
    raw = bytes(buf[start:min(end, start + limit)]).decode("utf-8", errors="replace")
    return raw + ("..." if end - start > limit else "")


def split_fields(block: LineBlock, sep: int, field_names: tuple[str, ...], path: Path,
                 fmt: DataFormat, layout: str) -> Fields:
    """Split every line of ``block`` into ``len(field_names)`` fields at byte ``sep``.

    A ``\\r`` before the newline is dropped. Raises SpecError at the first line with another
    number of fields, naming the file, the line and the field: the first one missing (too
    few), the first one extra (too many), or the one the file ends in (a cut-off last line).
    ``layout`` says what a line holds, for the message.
    """
    n_fields = len(field_names)
    buf = block.buf
    nl = np.flatnonzero(buf == NEWLINE)
    line_start = np.r_[0, nl[:-1] + 1]
    line_end = nl - ((buf[np.maximum(nl - 1, 0)] == CR) & (nl > line_start))
    seps = np.flatnonzero(buf == sep)
    per_line = np.diff(np.searchsorted(seps, nl), prepend=0)
    bad = np.flatnonzero(per_line != n_fields - 1)
    if len(bad):
        i = int(bad[0])
        got = int(per_line[i]) + 1
        hint = format_hint(path, fmt) if block.first_line + i == 1 else ""
        if line_end[i] == line_start[i]:
            why, field = f"an empty line; {layout}", None
        elif block.unterminated and got < n_fields:
            why = (f"the file ends mid-line, in field {got} of {n_fields} (no newline at the "
                   "end): it was cut off; copy or download it again")
            field = field_names[got - 1]
        elif got < n_fields:
            why = f"missing: the line has {got} of {n_fields} fields; {layout}"
            field = field_names[got]
        else:
            why = f"extra field: the line has {got} fields, not {n_fields}; {layout}"
            field = f"field {n_fields + 1}"
        raise SpecError(why + hint, source=str(path), line=block.first_line + i, key_path=field)
    seps = seps.reshape(len(nl), n_fields - 1)
    return Fields(starts=np.hstack([line_start[:, None], seps + 1]),
                  ends=np.hstack([seps, line_end[:, None]]))


def first_bad(bad: np.ndarray) -> tuple[int, int]:
    """(line index, field index) of the first true cell of a (lines, fields) mask."""
    flat = int(np.flatnonzero(bad.ravel())[0])
    return divmod(flat, bad.shape[1])


_HEX = np.full(256, 255, np.uint8)
for _i, _c in enumerate(b"0123456789abcdef"):
    _HEX[_c] = _i
for _i, _c in enumerate(b"ABCDEF"):
    _HEX[_c] = 10 + _i


def parse_hex8(buf: np.ndarray, starts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Hex numbers of exactly 8 digits starting at ``starts``.

    Returns:
        (values as uint64, a mask of the cells that are not hex).
    """
    cells = np.lib.stride_tricks.sliding_window_view(buf, 8)[starts]  # (cells, 8) bytes
    nib = _HEX[cells]
    bad = (nib == 255).any(axis=1) if (nib == 255).any() else np.zeros(len(nib), bool)
    packed = np.ascontiguousarray((nib[:, 0::2] << 4) | nib[:, 1::2])  # 4 bytes, big-endian
    return packed.view(">u4").ravel().astype(np.uint64), bad


def parse_decimal(buf: np.ndarray, starts: np.ndarray, ends: np.ndarray
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Non-negative decimal integers in ``buf[starts:ends]`` (1 to ``MAX_DECIMAL_DIGITS``
    digits).

    Returns:
        (values as uint64, a mask of the cells that are not such integers).
    """
    w = MAX_DECIMAL_DIGITS
    lengths = ends - starts
    col = np.arange(w)
    inside = col >= (w - lengths)[:, None]
    idx = np.clip(ends[:, None] - w + col, 0, len(buf) - 1)
    digits = np.where(inside, buf[idx].astype(np.int64) - 48, 0)
    bad = (lengths <= 0) | (lengths > w) | ((inside & ((digits < 0) | (digits > 9))).any(axis=1))
    powers = 10 ** np.arange(w - 1, -1, -1, dtype=np.int64)
    values = (np.where(bad[:, None], 0, digits) @ powers).astype(np.uint64)
    return values, bad


def byte_class(chars: bytes) -> np.ndarray:
    """A 256-entry mask of the bytes in ``chars``."""
    m = np.zeros(256, bool)
    m[np.frombuffer(chars, np.uint8)] = True
    return m


def first_bad_byte(buf: np.ndarray, starts: np.ndarray, ends: np.ndarray,
                   allowed: np.ndarray) -> tuple[int, int] | None:
    """(line index, field index) of the first cell holding a byte outside ``allowed``, or
    None. ``starts``/``ends`` are (lines, fields) of consecutive fields; each line's span
    from its first start to its last end is checked at once, so ``allowed`` must hold the
    separator when there are several fields."""
    s, e = starts[:, 0], ends[:, -1]
    mark = np.zeros(len(buf) + 1, np.int8)
    mark[s] = 1
    mark[e] -= 1
    inside = np.cumsum(mark[:-1], dtype=np.int8).astype(bool)
    wrong = np.flatnonzero(inside & ~allowed[buf])
    if len(wrong) == 0:
        return None
    line = int(np.searchsorted(s, wrong[0], side="right")) - 1
    return line, int(np.searchsorted(starts[line], wrong[0], side="right")) - 1
