"""Measured statistics -> a workload the loaders accept, written atomically.

Per table: ``num_embeddings`` = its rows (distinct ids seen, after hashing), ``pooling_factor``
= mean ids per sample summed over its features, and ``access`` from the measurements:

* no skew (no Zipf fit, or an exponent under ``NO_SKEW_EXPONENT``): no ``access`` (uniform);
* otherwise the Zipf exponent when it fits (KS distance at most ``ZIPF_MAX_KS``), else the
  measured hot-row pair; always with the measured LRU ``hit_curve`` (which then decides cache
  hit rates) and the ``id_order`` finding (which decides row-block loads).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import yaml

from shardplan.errors import SpecError
from shardplan.loaders import workload_from_dict, workload_to_dict
from shardplan.stats.types import IdStats, LruOrder, SampleMode, StatsResult
from shardplan.types import AccessSkew, IdOrder, TableSpec, Workload

#: Exponents below this are reported as no skew (a hit rate within ~1% of uniform's).
NO_SKEW_EXPONENT = 0.05
#: Largest KS distance at which the Zipf law stands for the table; past it the hot-row pair.
ZIPF_MAX_KS = 0.05


def access_of(ids: IdStats) -> AccessSkew | None:
    """The workload's access skew for a table with these id statistics (None: uniform)."""
    z = ids.zipf
    if z is None or z.exponent < NO_SKEW_EXPONENT:
        return None
    order = ids.id_order.order if ids.id_order is not None else IdOrder.HASHED
    curve = tuple((r, round(h, 4)) for r, h in ids.hit_curve)
    if z.ks_distance > ZIPF_MAX_KS and ids.hot_row_fraction is not None \
            and ids.hot_access_fraction:
        return AccessSkew(hot_row_fraction=round(ids.hot_row_fraction, 6),
                          hot_access_fraction=min(round(ids.hot_access_fraction, 4), 1.0),
                          id_order=order, hit_curve=curve)
    return AccessSkew(zipf_exponent=round(z.exponent, 3), id_order=order, hit_curve=curve)


def source_text(result: StatsResult) -> str:
    """The workload's ``source:``: the command, the files and the sample."""
    o = result.options
    files = " ".join(result.paths)
    if o.sample is None:
        sample = f"all {result.records} records"
    elif o.sample_mode is SampleMode.PREFIX:
        sample = f"the first {result.records} records"
    else:
        sample = f"{result.records} of {result.records_total} records drawn uniformly (seed {o.seed})"
    parts = [f"shardplan stats --format {result.format.value} {files}", sample]
    if o.hash_size is not None:
        parts.append(f"ids hashed modulo {o.hash_size}")
    if result.tables and result.tables[0].ids.lru_order is LruOrder.SHUFFLED:
        parts.append(f"LRU hit curves in a shuffled order (seed {o.seed})")
    return "; ".join(parts)


def workload_of(result: StatsResult, name: str | None = None) -> Workload:
    """The workload measured by ``result``.

    Raises:
        SpecError: no table had any id.
    """
    o = result.options
    tables = []
    for t in result.tables:
        pf = float(f"{t.pooling_factor:.4g}")
        tables.append(TableSpec(name=t.name, num_embeddings=t.ids.rows, embedding_dim=o.embedding_dim,
                                pooling_factor=pf, features=tuple(f.name for f in t.features),
                                access=access_of(t.ids)))
    if not tables:
        raise SpecError("no feature had any id in the records read; nothing to write",
                        source=result.paths[0])
    stem = Path(result.paths[0]).name.split(".")[0]
    return Workload(name=name or f"{stem}-stats", tables=tuple(tables), batch_size=o.batch_size,
                    source=source_text(result))


def workload_yaml(w: Workload) -> str:
    """The YAML text of ``w``, checked to load back (``workload_from_dict``)."""
    d = workload_to_dict(w)
    workload_from_dict(d, source="<shardplan stats>")
    header = ("# Written by `shardplan stats`: measured rows, pooling factors, access skew, LRU\n"
              "# hit curves and id order (docs/stats.md). Solve it with\n"
              "#   shardplan solve TOPOLOGY --tables THIS_FILE\n")
    return header + yaml.safe_dump(d, sort_keys=False, default_flow_style=None, width=100)


def write_atomic(path: str | Path, data: str | bytes) -> Path:
    """Write ``data`` to ``path`` through a temporary file in the same folder and a rename,
    so a reader never sees half a file and a failure leaves nothing behind.

    Raises:
        SpecError: the folder cannot be written.
    """
    p = Path(path)
    raw = data.encode("utf-8") if isinstance(data, str) else data
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", dir=p.parent if str(p.parent) else ".")
    except OSError as exc:
        raise SpecError(f"cannot write here: {exc.strerror}", source=str(p)) from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(raw)
        os.chmod(tmp, 0o644)  # mkstemp makes it 0600; a written workload is for everyone
        os.replace(tmp, p)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise SpecError(f"cannot write: {exc.strerror}", source=str(p)) from None
    return p
