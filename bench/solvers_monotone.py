"""More GPUs at a fixed global batch (``bench/solvers.py --monotone``): MLPerf DLRM-DCNv2 at a
global batch of 65,536 on 2, 16 and 128 hosts of 8 H100 (16, 128 and 1,024 GPUs), planned by
``auto`` (1D) and by ``plan_best_2d`` (2D sparse parallelism, every replica count) with the
replicas synced every 1 and every 100 steps.

The target (issue #11): adding GPUs never makes the best plan slower by more than 2%. Per GPU
count the best is the fastest of the 1D plan and the 2D plans of each sync period; the table
says, for each sync period, whether the best plan is monotone (each size's best within 2% of
the smaller size's, or faster).

Prints a table and writes ``bench/results/solvers-monotone.{md,json}``.
"""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path

from hard_cases import dcnv2_global

from shardplan.planner import plan
from shardplan.sparse2d import plan_best_2d

RESULTS = Path(__file__).resolve().parent / "results"
HOSTS = (2, 16, 128)
SYNC_STEPS = (1, 100)
TOLERANCE = 1.02


def run_monotone(time_limit_s: float) -> int:
    rows: list[dict[str, object]] = []
    print(f"{'GPUs':>5s} {'plan':24s} {'cpu_s':>7s} {'step ms':>9s} replicas")
    for hosts in HOSTS:
        case = dcnv2_global(hosts)
        work, topo = case.workload, case.topology
        t0 = time.process_time()
        p = plan(work, topo, time_limit_s=time_limit_s)
        rows.append({"gpus": topo.world_size, "plan": "1d (auto)", "replicas": 1,
                     "cpu_s": round(time.process_time() - t0, 2),
                     "makespan_ms": p.summary.makespan_ms, "tried": []})
        for n in SYNC_STEPS:
            t0 = time.process_time()
            best, tried = plan_best_2d(work, topo, sync_steps=n, time_limit_s=time_limit_s)
            rows.append({"gpus": topo.world_size, "plan": f"2d (sync every {n})",
                         "replicas": best.replicas, "cpu_s": round(time.process_time() - t0, 2),
                         "makespan_ms": best.summary.makespan_ms,
                         "tried": [[c.replicas, c.makespan_ms] for c in tried]})
        for r in rows[-1 - len(SYNC_STEPS):]:
            print(f"{r['gpus']:5d} {r['plan']:24s} {r['cpu_s']:7.1f} {r['makespan_ms']:9.4f} "
                  f"{r['replicas']}", flush=True)
    gpus = sorted({r["gpus"] for r in rows})
    lines = ["| GPUs | 1D (auto) ms | " + " | ".join(f"best with 2D, sync every {n} ms"
                                                     for n in SYNC_STEPS) + " |",
             "|---|---|" + "---|" * len(SYNC_STEPS)]
    best_of: dict[int, dict[int, float]] = {n: {} for n in SYNC_STEPS}
    for g in gpus:
        one = next(r for r in rows if r["gpus"] == g and r["plan"] == "1d (auto)")
        cells = [f"{one['makespan_ms']:.4f}"]
        for n in SYNC_STEPS:
            two = next(r for r in rows if r["gpus"] == g and r["plan"] == f"2d (sync every {n})")
            b = min(float(one["makespan_ms"]), float(two["makespan_ms"]))
            best_of[n][g] = b
            cells.append(f"{b:.4f} (R={two['replicas'] if b < one['makespan_ms'] else 1})")
        lines.append(f"| {g} | " + " | ".join(cells) + " |")
    verdicts = []
    for n in SYNC_STEPS:
        seq = [best_of[n][g] for g in gpus]
        ok = all(b <= a * TOLERANCE for a, b in zip(seq, seq[1:]))
        verdicts.append(f"sync every {n}: {'monotone' if ok else 'NOT monotone'} "
                        f"({' -> '.join(f'{x:.3f}' for x in seq)} ms)")
    lines += ["", "Best plan as GPUs grow (within 2%): " + "; ".join(verdicts) + ".",
              f"Machine: {platform.machine()}, Python {platform.python_version()}, "
              f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; time limit "
              f"{time_limit_s:g} s per plan. Command: `python bench/solvers.py --monotone`."]
    print("\n".join(lines))
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "solvers-monotone.md").write_text(
        "# DCNv2 at a fixed global batch of 65,536: more GPUs\n\n" + "\n".join(lines) + "\n",
        encoding="utf-8")
    (RESULTS / "solvers-monotone.json").write_text(json.dumps(rows, indent=1) + "\n",
                                                   encoding="utf-8")
    print(f"wrote {RESULTS / 'solvers-monotone'}.md and .json")
    return 0
