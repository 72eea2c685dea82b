"""The hard solver suite (``bench/solvers.py --hard``): for every case of ``hard_cases.CASES``,
``auto`` against the best plan any solver or any constraint-forced plan reached, and against
the lower bound.

Per case it runs ``auto``, ``greedy``, ``local_search`` and (when its model is small enough)
``ilp`` on the problem, and ``local_search`` on every forced variant (the same tables and
cluster with options narrowed by constraints: see ``hard_cases``). A forced plan is a plan of
the original problem (its options are a subset), so it is costed under the same model.
``best`` is the lowest step time of them all; ``bound`` the planner's lower bound (work, unit,
pair, coupled, mix; the LP when small). Targets: auto <= 1.03 x best and <= 1.15 x bound.

Prints a table and writes ``bench/results/solvers-hard.{csv,md,json}``.
"""

from __future__ import annotations

import csv
import json
import platform
import statistics
import time
from pathlib import Path

from hard_cases import CASES

from shardplan.errors import InfeasiblePlanError
from shardplan.planner import plan

RESULTS = Path(__file__).resolve().parent / "results"
SOLVERS = ("auto", "greedy", "local_search", "ilp")
#: ilp only where tables x ranks is at most this (its model grows with both)
ILP_MAX_CELLS = 4_096
TARGET_BEST, TARGET_BOUND = 1.03, 1.15


def _plan(work, topo, solver: str, limit: float) -> tuple[float | None, float | None, float, str]:
    t0 = time.process_time()
    try:
        p = plan(work, topo, solver=solver, time_limit_s=limit)
    except InfeasiblePlanError:
        return None, None, time.process_time() - t0, "infeasible"
    return (p.summary.makespan_ms, p.summary.lower_bound_ms, time.process_time() - t0,
            ",".join(f"{k}:{v}" for k, v in sorted(p.summary.sharding_mix.items())))


def run_hard(only: list[str] | None, time_limit_s: float) -> int:
    names = only or list(CASES)
    rows, summary = [], []
    print(f"{'case':34s} {'plan':26s} {'cpu_s':>7s} {'makespan':>9s} mix")
    for name in names:
        case = CASES[name]()
        n, world = len(case.workload.tables), case.topology.world_size
        results: dict[str, tuple] = {}
        for s in SOLVERS:
            if s == "ilp" and n * world > ILP_MAX_CELLS:
                continue
            results[s] = _plan(case.workload, case.topology, s, time_limit_s)
        for fname, fw in case.forced.items():
            results[f"forced:{fname}"] = _plan(fw, case.topology, "local_search", time_limit_s)
        for k, (ms, lb, t, mix) in results.items():
            rows.append({"case": name, "tables": n, "ranks": world, "plan": k,
                         "cpu_s": round(t, 2), "makespan_ms": ms, "lower_bound_ms": lb,
                         "mix": mix})
            print(f"{name:34s} {k:26s} {t:7.1f} {ms if ms is not None else float('nan'):9.4f} "
                  f"{mix}", flush=True)
        auto_ms, bound, auto_t, _ = results["auto"]
        feasible = {k: v[0] for k, v in results.items() if v[0] is not None}
        best_k = min(feasible, key=lambda k: (feasible[k], k))
        summary.append({"case": name, "tables": n, "ranks": world, "auto_ms": auto_ms,
                        "auto_cpu_s": round(auto_t, 2), "best_ms": feasible[best_k],
                        "best_plan": best_k, "bound_ms": bound,
                        "auto_vs_best": auto_ms / feasible[best_k],
                        "auto_vs_bound": auto_ms / bound if bound else None})
    lines = ["| case | tables x ranks | auto ms | auto CPU s | best ms (plan) | bound ms | "
             "auto / best | auto / bound |", "|---|---|---|---|---|---|---|---|"]
    for r in summary:
        ok_b = "" if r["auto_vs_best"] <= TARGET_BEST else " **miss**"
        ok_l = "" if (r["auto_vs_bound"] or 9) <= TARGET_BOUND else " **miss**"
        lines.append(f"| {r['case']} | {r['tables']} x {r['ranks']} | {r['auto_ms']:.4f} | "
                     f"{r['auto_cpu_s']:.1f} | {r['best_ms']:.4f} ({r['best_plan']}) | "
                     f"{r['bound_ms']:.4f} | {r['auto_vs_best']:.3f}{ok_b} | "
                     f"{r['auto_vs_bound']:.3f}{ok_l} |")
    vb = [r["auto_vs_best"] for r in summary]
    vl = [r["auto_vs_bound"] for r in summary if r["auto_vs_bound"]]
    lines += ["", f"auto / best: median {statistics.median(vb):.3f}, max {max(vb):.3f}; "
              f"auto / bound: median {statistics.median(vl):.3f}, max {max(vl):.3f} "
              f"(targets {TARGET_BEST} and {TARGET_BOUND}; {len(summary)} cases)",
              f"Machine: {platform.machine()}, {platform.python_version()}; time limit "
              f"{time_limit_s:g} s per plan; times are the planner's CPU seconds (the machine "
              f"was shared). Command: `python bench/solvers.py --hard`."]
    print("\n".join(lines))
    RESULTS.mkdir(parents=True, exist_ok=True)
    stem = "solvers-hard" if only is None else "solvers-hard-some"
    (RESULTS / f"{stem}.md").write_text(
        "# Hard solver suite\n\n" + "\n".join(lines) + "\n\n## Every plan\n\n| case | plan | "
        "cpu_s | makespan_ms | mix |\n|---|---|---|---|---|\n" + "\n".join(
            f"| {r['case']} | {r['plan']} | {r['cpu_s']} | {r['makespan_ms']} | {r['mix']} |"
            for r in rows) + "\n", encoding="utf-8")
    with open(RESULTS / f"{stem}.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]), lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
    (RESULTS / f"{stem}.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {RESULTS / stem}.md, .csv and .json")
    return 0
