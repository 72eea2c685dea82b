"""`shardplan stats` benchmark: rows per second and peak memory on a 10M-line Criteo-format
file that the benchmark generates itself (in a temporary folder, deleted afterwards).

    nice -n 19 .venv/bin/python bench/stats.py                 # 10,000,000 lines
    nice -n 19 .venv/bin/python bench/stats.py --lines 1000000 # a quick run

Prints a table and writes ``bench/results/stats.{md,csv,json}``.

The file: Criteo Kaggle's layout (label, 13 integers, 26 8-digit hex ids), each categorical
feature Zipf-distributed over Criteo Kaggle's published cardinality (the bundled
``criteo-kaggle-dlrm`` workload, from facebookresearch/dlrm) with exponent ``EXPONENT``, ids
scrambled so that id order does not follow popularity, and ``MISSING_FRACTION`` of the values
of ``MISSING_FEATURES`` empty. Each run is a fresh ``shardplan stats`` process; its wall time
and its peak resident memory (``os.wait4``'s ru_maxrss) are measured, so the generator's
memory does not count. Runs: the defaults (big features switch to DataSketches past
``--exact-limit`` 1,048,576 distinct ids) and exact counting throughout, side by side.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"
# Criteo Kaggle cardinalities of C1..C26 after DLRM preprocessing (facebookresearch/dlrm
# data_utils.py; topologies/workloads/criteo-kaggle-dlrm.yaml has the sources).
CARDINALITIES = (1460, 583, 10131227, 2202608, 305, 24, 12517, 633, 3, 93145, 5683, 8351593,
                 3194, 27, 14992, 5461306, 10, 5652, 2173, 4, 7046547, 18, 15, 286181, 105,
                 142572)
EXPONENT = 1.05  # the bundled workloads' assumed skew of click-log ids
MISSING_FEATURES = (2, 3, 11, 15, 18, 20)  # cat_j with empty values
MISSING_FRACTION = 0.1
CHUNK_LINES = 250_000
SEED = 0


def zipf_cdf(rows: int, s: float) -> np.ndarray:
    """Cumulative probabilities of discrete Zipf(s) over ranks 1..rows (the cost model's law)."""
    cdf = np.cumsum(np.arange(1, rows + 1, dtype=np.float64) ** -s)
    return cdf / cdf[-1]


CDFS = [zipf_cdf(rows, EXPONENT) for rows in CARDINALITIES]  # 34M ranks, ~270 MB, built once


def criteo_chunk(rng: np.random.Generator, n: int) -> bytes:
    """``n`` Criteo lines as bytes, built as a fixed-width byte matrix whose padding is
    dropped (every field has a slot; empty slots become empty fields)."""
    int_w, hex_w = 4, 8
    width = 1 + 13 * (1 + int_w) + 26 * (1 + hex_w) + 1  # label, tab+field each, newline
    m = np.zeros((n, width), np.uint8)
    m[:, 0] = 48 + (rng.random(n) < 0.25)
    col = 1
    digits = 10 ** np.arange(int_w - 1, -1, -1)
    for _ in range(13):
        m[:, col] = 9
        v = rng.integers(0, 10_000, n)
        d = (v[:, None] // digits) % 10
        lead = np.cumsum(d, axis=1) == 0  # leading zeros
        lead[:, -1] = False
        cells = np.where(lead, 0, d + 48).astype(np.uint8)
        cells[rng.random(n) < 0.05] = 0  # some integers missing too
        m[:, col + 1: col + 1 + int_w] = cells
        col += 1 + int_w
    hexchars = np.frombuffer(b"0123456789abcdef", np.uint8)
    shifts = np.arange(28, -1, -4, dtype=np.uint64)
    for j, rows in enumerate(CARDINALITIES):
        m[:, col] = 9
        ranks = np.minimum(np.searchsorted(CDFS[j], rng.random(n)), rows - 1).astype(np.uint64)
        ids = (ranks * np.uint64(2654435761) + np.uint64(j)) % np.uint64(2**32)  # scrambled
        cells = hexchars[(ids[:, None] >> shifts) & np.uint64(15)]
        if j in MISSING_FEATURES:
            cells[rng.random(n) < MISSING_FRACTION] = 0
        m[:, col + 1: col + 1 + hex_w] = cells
        col += 1 + hex_w
    m[:, col] = 10
    return m[m != 0].tobytes()


def generate(path: Path, lines: int) -> float:
    """Write ``lines`` Criteo lines to ``path``; returns seconds taken."""
    rng = np.random.default_rng(SEED)
    t = time.perf_counter()
    with path.open("wb") as f:
        for start in range(0, lines, CHUNK_LINES):
            f.write(criteo_chunk(rng, min(CHUNK_LINES, lines - start)))
    return time.perf_counter() - t


def run_stats(data: Path, out: Path, extra: list[str]) -> dict:
    """One ``shardplan stats`` process: wall seconds, peak RSS, and its stats.json."""
    rep = out.parent / (out.stem + "-report")
    cmd = [sys.executable, "-c", "from shardplan.cli.app import main; main()", "stats", str(data),
           "--format", "criteo", "--out", str(out), "--report", str(rep), *extra]
    t = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         env={**os.environ, "COLUMNS": "200"})
    output = p.stdout.read().decode()
    _, status, usage = os.wait4(p.pid, 0)
    wall = time.perf_counter() - t
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"shardplan stats failed:\n{output}")
    stats = json.loads((rep / "stats.json").read_text())
    return {"wall_s": wall, "peak_rss_mib": usage.ru_maxrss / 1024, "stats": stats}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lines", type=int, default=10_000_000, help="lines to generate")
    ap.add_argument("--out", type=Path, default=RESULTS, help="results folder")
    args = ap.parse_args(argv)
    runs = [("defaults, first 1,000,000 lines", ["--sample", "1000000"]),
            ("defaults (sketches past 1,048,576 distinct)", []),
            ("exact counting throughout", ["--exact-limit", "100000000"])]
    rows = []
    with tempfile.TemporaryDirectory(prefix="shardplan-bench-stats-") as tmp:
        data = Path(tmp) / "criteo.tsv"
        gen_s = generate(data, args.lines)
        size = data.stat().st_size
        print(f"generated {args.lines:,} lines ({size / 2**20:,.0f} MiB) in {gen_s:.1f} s")
        for label, extra in runs:
            r = run_stats(data, Path(tmp) / "w.yaml", extra)
            tables = r["stats"]["tables"]
            lines = r["stats"]["records"]
            big = sorted(tables, key=lambda t: -t["ids"]["rows"])[:5]
            rows.append({
                "run": label, "lines": lines, "wall_s": round(r["wall_s"], 1),
                "rows_per_s": round(lines / r["wall_s"]),
                "mib_per_s": round(size * lines / args.lines / 2**20 / r["wall_s"], 1),
                "peak_rss_mib": round(r["peak_rss_mib"]),
                "sketched_features": sum(t["ids"]["count_mode"] == "sketch" for t in tables),
                "zipf_s_5_largest": " ".join(f"{t['ids']['zipf']['exponent']:.3f}" for t in big),
                "rows_5_largest": " ".join(str(t["ids"]["rows"]) for t in big),
            })
            print(rows[-1])
    args.out.mkdir(parents=True, exist_ok=True)
    keys = list(rows[0])
    with (args.out / "stats.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows(rows)
    machine = f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"
    (args.out / "stats.json").write_text(json.dumps(
        {"machine": machine, "lines": args.lines, "exponent": EXPONENT, "runs": rows},
        indent=1) + "\n")
    md = [f"# shardplan stats on {args.lines:,} generated Criteo lines", "",
          f"Generated by `bench/stats.py` ({machine}; the machine was shared, run under "
          f"`nice -n 19`). File: {size / 2**20:,.0f} MiB. Each categorical feature is discrete "
          "Zipf(1.05) over its Criteo Kaggle cardinality (ids scrambled), so the measured "
          "exponents of the five largest tables can be checked against 1.05; their rows are "
          "the distinct ids the lines hold (HLL estimates where sketched). Wall time and peak "
          "RSS are of the `shardplan stats` process alone (report included).", "",
          "| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    md += ["| " + " | ".join(str(r[k]) for k in keys) + " |" for r in rows]
    (args.out / "stats.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
