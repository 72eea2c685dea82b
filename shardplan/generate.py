"""Seeded synthetic workloads with production-like spreads.

Rows are log-uniform-ish with a heavy tail (1e2 to 1e9), dims are powers of two from 8 to
512 weighted toward 64-128, pooling factors are log-normal (most 1-10, a few 100+), and
dtypes and optimizers are mixed. The spreads follow the DLRM/DreamShard synthetic-table
practice of sampling rows, dims and pooling factors independently per table.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
import yaml

from shardplan.errors import SpecError
from shardplan.loaders import CSV_BATCH_SIZE, workload_to_dict
from shardplan.types import AccessSkew, BatchScope, DType, Mode, Optimizer, TableSpec, Workload

DIMS = np.array([8, 16, 32, 64, 128, 256, 512])
DIM_WEIGHTS = np.array([0.05, 0.15, 0.2, 0.25, 0.2, 0.1, 0.05])
DTYPES = [DType.FP32, DType.FP16, DType.INT8]
DTYPE_WEIGHTS = [0.6, 0.3, 0.1]
OPTIMIZERS = [Optimizer.ROWWISE_ADAGRAD, Optimizer.ADAGRAD, Optimizer.SGD, Optimizer.ADAM]
OPT_WEIGHTS = [0.7, 0.1, 0.1, 0.1]


def synthetic_workload(num_tables: int, *, seed: int = 0, batch_size: int = 512,
                       max_rows: int = 10**9, name: str | None = None) -> Workload:
    """``num_tables`` random tables; the same seed gives the same workload.

    Raises:
        SpecError: ``num_tables`` outside 1..100,000, a negative seed, a batch size below 1,
            ``max_rows`` below 100.
    """
    if isinstance(num_tables, bool) or not isinstance(num_tables, int) \
            or not 1 <= num_tables <= 100_000:
        raise SpecError(f"num_tables must be an integer in 1..100000, got {num_tables!r}",
                        key_path="tables")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise SpecError(f"the seed must be an integer >= 0, got {seed!r}", key_path="seed")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise SpecError(f"the batch size must be an integer >= 1, got {batch_size!r}",
                        key_path="batch_size")
    rng = np.random.default_rng(seed)
    # rows: log10 uniform on [2, 7] for most, a heavy tail up to max_rows
    if max_rows < 100:
        raise SpecError(f"max_rows must be >= 100, got {max_rows}", key_path="max_rows")
    top = float(np.log10(max_rows))
    body = min(7.0, top)
    log_rows = rng.uniform(2.0, body, num_tables)
    tail = rng.random(num_tables) < 0.05
    log_rows[tail] = rng.uniform(body, top, tail.sum())
    rows = np.maximum(2, (10 ** log_rows).astype(np.int64))
    dims = rng.choice(DIMS, size=num_tables, p=DIM_WEIGHTS)
    pf = np.clip(np.round(rng.lognormal(mean=1.0, sigma=1.2, size=num_tables), 1), 1.0, 500.0)
    dtypes = rng.choice(len(DTYPES), size=num_tables, p=DTYPE_WEIGHTS)
    opts = rng.choice(len(OPTIMIZERS), size=num_tables, p=OPT_WEIGHTS)
    zipf = rng.uniform(0.8, 1.4, num_tables)
    skewed = rng.random(num_tables) < 0.5
    tables = tuple(
        TableSpec(name=f"t{i:05d}", num_embeddings=int(rows[i]), embedding_dim=int(dims[i]),
                  pooling_factor=float(pf[i]), dtype=DTYPES[dtypes[i]],
                  optimizer=OPTIMIZERS[opts[i]],
                  access=AccessSkew(zipf_exponent=round(float(zipf[i]), 3)) if skewed[i] else None)
        for i in range(num_tables))
    return Workload(name=name or f"synthetic-{num_tables}-s{seed}", tables=tables,
                    batch_size=batch_size, source=f"shardplan gen-workload --tables {num_tables} "
                    f"--seed {seed}")


def write_workload(w: Workload, path: str | Path) -> None:
    """Write a workload as YAML (``.yaml``/``.yml``) or CSV (``.csv``, the minimal schema plus
    dtype, optimizer, features and zipf_exponent). Raises SpecError when CSV cannot carry it
    (a batch other than the CSV default, inference, hot-row skew)."""
    p = Path(path)
    if p.suffix.lower() == ".csv":
        if (w.batch_size, w.batch_scope, w.mode) != (CSV_BATCH_SIZE, BatchScope.PER_RANK,
                                                     Mode.TRAINING):
            raise SpecError(f"a CSV workload carries no batch size or mode (it loads as "
                            f"{CSV_BATCH_SIZE} per rank, training); write .yaml instead",
                            source=str(p))
        if any(t.access is not None and t.access.zipf_exponent is None for t in w.tables):
            raise SpecError("a CSV workload carries only Zipf access skew, not hot-row "
                            "fractions; write .yaml instead", source=str(p))
        buf = io.StringIO()
        wr = csv.writer(buf, lineterminator="\n")
        wr.writerow(["name", "num_embeddings", "embedding_dim", "pooling_factor", "dtype",
                     "optimizer", "features", "zipf_exponent"])
        for t in w.tables:
            wr.writerow([t.name, t.num_embeddings, t.embedding_dim, t.pooling_factor,
                         t.dtype.value, (t.optimizer or w.default_optimizer).value,
                         ";".join(t.features), t.access.zipf_exponent if t.access else ""])
        p.write_text(buf.getvalue(), encoding="utf-8")
    elif p.suffix.lower() in (".yaml", ".yml"):
        p.write_text(yaml.safe_dump(workload_to_dict(w), sort_keys=False), encoding="utf-8")
    else:
        raise SpecError("the output must end in .yaml, .yml or .csv", source=str(p))
