"""TorchRec batches: a ``torch.save``d list of ``KeyedJaggedTensor`` (one per batch), or a single
one. Needs torch and torchrec (the [executor] and [torchrec] extras), imported only here.

Each key is a feature (table ``t_<key>``); a sample's ids for a key are its jagged slice, so
the pooling factor is the mean slice length. ``features`` (``--features``) picks keys. The
file is read with ``torch.load(weights_only=False)``, which unpickles: read only files you
trust.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from shardplan.errors import SpecError
from shardplan.stats.readers import (
    ZIP_MAGIC,
    Reader,
    TableLayout,
    check_file,
    format_hint,
    magic,
)
from shardplan.stats.types import DataFormat, FeatureBatch, MissingDependencyError, RecordBatch

PICKLE_PROTO = b"\x80"  # a legacy torch.save file starts with pickle's PROTO opcode


def require_torchrec() -> tuple[Any, Any]:
    """``(torch, KeyedJaggedTensor)``. Raises MissingDependencyError naming the extras."""
    try:
        import torch
        from torchrec.sparse.jagged_tensor import KeyedJaggedTensor
    except ImportError:
        raise MissingDependencyError(
            "--format kjt needs torch and torchrec (the executor and torchrec extras of "
            "shardplan); install them with: bash scripts/setup.sh") from None
    return torch, KeyedJaggedTensor


class KjtReader(Reader):
    """``torch.save``d KeyedJaggedTensor batches."""

    format = DataFormat.KJT
    progress_unit = "records"

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.torch, self.kjt_type = require_torchrec()
        self._loaded: dict[Path, list[Any]] = {}
        self._keys: tuple[str, ...] | None = None

    def _load(self, path: Path) -> list[Any]:
        if path in self._loaded:
            return self._loaded[path]
        check_file(path)
        head = magic(path, 2)
        if not head.startswith(ZIP_MAGIC[:2]) and head[:1] != PICKLE_PROTO:
            raise SpecError("not a torch.save file (neither its zip format nor a pickle)"
                            + format_hint(path, self.format), source=str(path))
        try:
            # mmap needs torch.save's zip format; a legacy (pickle) file is read whole
            obj = self.torch.load(path, map_location="cpu", weights_only=False,
                                  mmap=head.startswith(ZIP_MAGIC[:2]))
        except Exception as exc:  # torch.load raises many types on a foreign file
            raise SpecError(f"cannot torch.load it: {type(exc).__name__}: {exc}"
                            + format_hint(path, self.format), source=str(path)) from None
        items = [obj] if isinstance(obj, self.kjt_type) else obj
        if not isinstance(items, (list, tuple)) or not items:
            raise SpecError(f"expected a non-empty list of KeyedJaggedTensor, got "
                            f"{type(obj).__name__}", source=str(path))
        for i, kjt in enumerate(items):
            if not isinstance(kjt, self.kjt_type):
                raise SpecError(f"item {i} is a {type(kjt).__name__}, not a KeyedJaggedTensor",
                                source=str(path), key_path=f"[{i}]")
            if kjt.variable_stride_per_key():
                raise SpecError("variable-stride KeyedJaggedTensors are not supported; save "
                                "batches with one stride", source=str(path), key_path=f"[{i}]")
        self._loaded = {path: list(items)}  # keep one file in memory at a time
        return self._loaded[path]

    def _all_keys(self) -> tuple[str, ...]:
        if self._keys is None:
            first = self.paths[0]
            seen = list(dict.fromkeys(k for kjt in self._load(first) for k in kjt.keys()))
            wanted = self.options.features
            if wanted is not None:
                missing = [k for k in wanted if k not in seen]
                if missing:
                    raise SpecError(f"no key {missing[0]!r}; keys: {', '.join(seen)}",
                                    source=str(first), key_path="--features")
                seen = list(wanted)
            self._keys = tuple(seen)
        return self._keys

    def layout(self) -> tuple[TableLayout, ...]:
        return tuple(TableLayout(name=f"t_{k}", features=(k,), id_feature=k)
                     for k in self._all_keys())

    def count_records(self, progress: Callable[[int], None] | None = None) -> int:
        return sum(kjt.stride() for p in self.paths for kjt in self._load(p))

    def batches(self) -> Iterator[RecordBatch]:
        keys = self._all_keys()
        done = 0
        for path in self.paths:
            for i, kjt in enumerate(self._load(path)):
                n = kjt.stride()
                parts = kjt.to_dict()
                feats = {}
                for key in keys:
                    if key not in parts:  # a batch without the key: missing everywhere
                        feats[key] = FeatureBatch(values=np.zeros(0, np.uint64),
                                                  lengths=np.zeros(n, np.int64))
                        continue
                    values = parts[key].values().numpy()
                    lengths = parts[key].lengths().numpy().astype(np.int64)
                    if values.dtype.kind not in "iu":
                        raise SpecError(f"values are {values.dtype}, not integer ids",
                                        source=str(path), key_path=f"[{i}].{key}")
                    if len(values) and values.min() < 0:
                        raise SpecError(f"id {int(values.min())} is negative; embedding ids "
                                        "are >= 0", source=str(path), key_path=f"[{i}].{key}")
                    feats[key] = FeatureBatch(values=values.astype(np.uint64), lengths=lengths)
                done += n
                yield RecordBatch(num_records=n, features=feats, bytes_done=done)
