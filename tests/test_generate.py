"""Synthetic workloads: seeded, within the documented spreads, and readable back."""

from __future__ import annotations

from pathlib import Path

import pytest

from shardplan.errors import SpecError
from shardplan.generate import synthetic_workload, write_workload
from shardplan.loaders import load_workload


def test_same_seed_same_workload() -> None:
    assert synthetic_workload(200, seed=3) == synthetic_workload(200, seed=3)
    assert synthetic_workload(200, seed=3) != synthetic_workload(200, seed=4)


def test_spreads() -> None:
    w = synthetic_workload(5000, seed=0)
    rows = [t.num_embeddings for t in w.tables]
    dims = {t.embedding_dim for t in w.tables}
    assert min(rows) >= 100 and max(rows) <= 10**9 and max(rows) > 10**8
    assert dims <= {8, 16, 32, 64, 128, 256, 512} and len(dims) == 7
    assert len({t.dtype for t in w.tables}) >= 3 and len({t.optimizer for t in w.tables}) >= 3
    pfs = sorted(t.pooling_factor for t in w.tables)
    assert pfs[len(pfs) // 2] < 10 < pfs[-1]  # heavy tail


@pytest.mark.parametrize("max_rows", [100, 10**4, 10**6])
def test_max_rows_caps(max_rows: int) -> None:
    w = synthetic_workload(300, seed=1, max_rows=max_rows)
    assert max(t.num_embeddings for t in w.tables) <= max_rows


@pytest.mark.parametrize("suffix", [".yaml", ".csv"])
def test_written_file_loads_back(tmp_path: Path, suffix: str) -> None:
    w = synthetic_workload(50, seed=2)
    p = tmp_path / f"w{suffix}"
    write_workload(w, p)
    back = load_workload(p)
    assert back.batch_size == w.batch_size and back.mode is w.mode
    assert [(t.name, t.num_embeddings, t.embedding_dim, t.pooling_factor, t.dtype,
             t.optimizer, t.access) for t in back.tables] == [
        (t.name, t.num_embeddings, t.embedding_dim, t.pooling_factor, t.dtype, t.optimizer,
         t.access) for t in w.tables]


def test_csv_refuses_what_it_cannot_carry(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="batch size"):
        write_workload(synthetic_workload(5, batch_size=4096), tmp_path / "w.csv")


def test_bad_sizes() -> None:
    with pytest.raises(SpecError):
        synthetic_workload(0)
    with pytest.raises(SpecError):
        write_workload(synthetic_workload(2), "w.txt")
