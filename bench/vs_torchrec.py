"""Head-to-head: shardplan's planner vs TorchRec's EmbeddingShardingPlanner.

One command::

    .venv/bin/python bench/vs_torchrec.py            # every case
    .venv/bin/python bench/vs_torchrec.py --case syn50x8 --case hetero

For each case (workload x topology) it runs both planners on the same problem and costs both
plans under OUR cost model (``default_cost_model``), then prints a table and writes
``bench/results/vs_torchrec.csv`` and ``bench/results/vs_torchrec.md``.

Columns: planning time of each planner (our ``shardplan.plan`` wall time, TorchRec's
``planner.plan`` wall time), makespan of each plan under our model, the speed-up of planning,
how much lower our makespan is, peak HBM per rank of each plan, and whether each plan fits
the usable memory under our model.

TorchRec's planner is slow on big cases (minutes at 500 tables), so its result is cached per
case under ``bench/results/vs_torchrec/`` (its plan as shardplan plan JSON, and its planning
time); later runs re-cost the cached plan under the current cost model instead of re-running
it, as long as the case's inputs hash is unchanged. ``--rerun-torchrec`` ignores the cache.
Planning times are wall-clock on whatever machine runs this (shared 2-core box when the
committed results were made: see the markdown header).
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import shardplan
from shardplan.errors import InfeasiblePlanError
from shardplan.estimators import default_cost_model
from shardplan.generate import synthetic_workload
from shardplan.loaders import load_problem, load_topology
from shardplan.plans import assignment_of, build_plan, check_plan, inputs_sha256, load_plan, save_plan
from shardplan.types import (
    Plan,
    Topology,
    Workload,
)

RESULTS = Path(__file__).resolve().parent / "results"
CACHE = RESULTS / "vs_torchrec"
GiB = 2**30
SYNTHETIC_MAX_ROWS = 10**7  # keeps 500 tables (~O(100) GiB) feasible on 8 x 80 GB for both
OUR_REPEATS = 3  # our planner is fast: report the median of 3 runs
# TorchRec's own search budget (its timeout_seconds) where an unbounded run would take hours
# on this machine; its planning time is then >= this and its plan the best found so far.
TORCHREC_TIMEOUT_S = {"syn500x64": 1200}


def _h100(hosts: int) -> Topology:
    """``hosts`` x DGX H100 (the dgx-h100-2x8 host, more or fewer hosts)."""
    base = load_topology("dgx-h100-2x8")
    g = dataclasses.replace(base.host_groups[0], hosts=hosts)
    return dataclasses.replace(base, host_groups=(g,), name=f"h100-{hosts}x8",
                               description=f"{hosts} x DGX H100 (from dgx-h100-2x8)")


def _memory_tight() -> tuple[Workload, Topology]:
    """Synthetic 50 tables on 1 x 8 H100 with HBM cut so that the weights plus optimizer state
    take ~85% of usable HBM: most tables can stay in HBM only if they are packed well."""
    w = synthetic_workload(50, seed=1, max_rows=SYNTHETIC_MAX_ROWS, name="synthetic-50-tight")
    topo = _h100(1)
    # bytes of weights + optimizer state (Adagrad: 1 copy, Adam: 2, row-wise Adagrad and SGD:
    # ~0), a planner-independent sizing
    need = 0.0
    for t in w.tables:
        opt = w.optimizer_of(t).value
        state = {"sgd": 0.0, "adagrad": 1.0, "rowwise_adagrad": 0.0, "adam": 2.0}.get(opt, 1.0)
        need += t.num_embeddings * t.embedding_dim * (t.dtype.bits / 8) * (1 + state)
    usable_per_rank = need / topo.world_size / 0.85
    g = topo.host_groups[0]
    dev = dataclasses.replace(g.device, hbm_capacity_bytes=int(usable_per_rank / (1 - topo.hbm_reserved_fraction)))
    g = dataclasses.replace(g, device=dev)
    return w, dataclasses.replace(topo, host_groups=(g,), name="h100-1x8-tight",
                                  description="1 x DGX H100 with HBM cut to fit ~1.18x the tables")


def _bundled(topology: str) -> Callable[[], tuple[Workload, Topology]]:
    def make() -> tuple[Workload, Topology]:
        topo, work = load_problem(topology)
        return work, topo
    return make


def _synthetic(n: int, hosts: int) -> Callable[[], tuple[Workload, Topology]]:
    def make() -> tuple[Workload, Topology]:
        return synthetic_workload(n, seed=0, max_rows=SYNTHETIC_MAX_ROWS), _h100(hosts)
    return make


CASES: dict[str, tuple[str, Callable[[], tuple[Workload, Topology]]]] = {
    "small-cpu": ("real: small-cpu on cpu-2", _bundled("cpu-2")),
    "small-cpu4": ("real: small-cpu on cpu-4", _bundled("cpu-4")),
    "criteo-kaggle": ("real: criteo-kaggle-dlrm on dgx-a100-1x8", _bundled("dgx-a100-1x8")),
    "dcnv2": ("real: dlrm-dcnv2-criteo1tb on dgx-h100-2x8", _bundled("dgx-h100-2x8")),
    "movielens": ("real: movielens-25m-two-tower on l4-4x8", _bundled("l4-4x8")),
    "syn50x8": ("synthetic 50 tables, 8 ranks", _synthetic(50, 1)),
    "syn50x64": ("synthetic 50 tables, 64 ranks", _synthetic(50, 8)),
    "syn500x8": ("synthetic 500 tables, 8 ranks", _synthetic(500, 1)),
    "syn500x64": ("synthetic 500 tables, 64 ranks", _synthetic(500, 8)),
    "tight": ("memory-tight: synthetic 50 tables, 8 ranks, HBM cut", _memory_tight),
    "hetero": ("heterogeneous: dlrm-dcnv2-criteo1tb on hetero-a100-h100", _bundled("hetero-a100-h100")),
}


def torchrec_plan(case: str, work: Workload, topo: Topology, rerun: bool
                  ) -> tuple[Plan | None, float, str, float | None]:
    """(TorchRec's plan re-costed under our current model, its planning wall seconds, a note,
    the process CPU seconds of the run if recorded)."""
    from shardplan.torchrec_interop import plan_with_torchrec

    CACHE.mkdir(parents=True, exist_ok=True)
    meta_path, plan_path = CACHE / f"{case}.json", CACHE / f"{case}.plan.json"
    sha = inputs_sha256(work, topo)
    if not rerun and meta_path.exists():
        meta = json.loads(meta_path.read_text())
        if meta.get("inputs_sha256") == sha:
            if meta.get("infeasible"):
                return None, meta["seconds"], "infeasible (cached)", meta.get("planner_cpu_s", meta.get("process_cpu_s"))
            cached = load_plan(plan_path)
            plan = build_plan(workload=work, topology=topo,
                              cost_model=default_cost_model(work, topo),
                              assignment=assignment_of(cached), solver="torchrec",
                              solve_time_s=meta["seconds"])
            limit = meta.get("torchrec_timeout_s")
            note = "cached" + (f", hit its {limit} s timeout" if limit and meta["seconds"] >= limit
                               else "")
            return plan, meta["seconds"], note, meta.get("planner_cpu_s", meta.get("process_cpu_s"))
    start = time.perf_counter()
    try:
        plan, seconds = plan_with_torchrec(work, topo, timeout_s=TORCHREC_TIMEOUT_S.get(case))
    except InfeasiblePlanError:
        seconds = time.perf_counter() - start
        meta_path.write_text(json.dumps({"inputs_sha256": sha, "seconds": seconds,
                                         "infeasible": True}, indent=2) + "\n")
        return None, seconds, "infeasible", None
    save_plan(plan, plan_path)
    cpu_s = plan.provenance.solver_options.get("planner_cpu_s")
    meta_path.write_text(json.dumps({"inputs_sha256": sha, "seconds": round(seconds, 3),
                                     "torchrec_timeout_s": TORCHREC_TIMEOUT_S.get(case),
                                     "planner_cpu_s": cpu_s,
                                     "measured_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                                     "host_cpus": os.cpu_count()}, indent=2) + "\n")
    return plan, seconds, "run", cpu_s


def our_plan(work: Workload, topo: Topology) -> tuple[Plan | None, float, float]:
    """(our plan, median wall seconds, median process CPU seconds) over OUR_REPEATS runs."""
    times, cpu, plan = [], [], None
    for _ in range(OUR_REPEATS):
        start, cpu_start = time.perf_counter(), time.process_time()
        try:
            plan = shardplan.plan(work, topo)
        except InfeasiblePlanError:
            return None, time.perf_counter() - start, time.process_time() - cpu_start
        times.append(time.perf_counter() - start)
        cpu.append(time.process_time() - cpu_start)
    return plan, statistics.median(times), statistics.median(cpu)


def _fits(plan: Plan | None) -> str:
    if plan is None:
        return "infeasible"
    try:
        check_plan(plan)
    except shardplan.PlanError:
        return "no"
    return "yes"


def _peak_hbm_gib(plan: Plan | None) -> float | None:
    return None if plan is None else round(max(r.memory_bytes.hbm for r in plan.ranks) / GiB, 2)


def measure(ours: Plan | None, theirs: Plan | None, steps: int) -> tuple[float | None, float | None]:
    """Measured step time (ms, the slowest rank's median) of both plans on our CPU executor,
    in one launch of the processes; None where a plan is missing."""
    from shardplan.executor.api import profile_plans

    plans = [p for p in (ours, theirs) if p is not None]
    if not plans:
        return None, None
    reports = iter(profile_plans(plans, steps=steps, warmup=max(2, steps // 5)))
    return tuple(round(next(reports).measured_makespan_ms, 4) if p is not None else None
                 for p in (ours, theirs))  # type: ignore[return-value]


def run_case(case: str, rerun: bool, measure_steps: int = 0) -> dict[str, object]:
    label, make = CASES[case]
    work, topo = make()
    ours, our_s, our_cpu_s = our_plan(work, topo)
    theirs, their_s, note, their_cpu_s = torchrec_plan(case, work, topo, rerun)
    row: dict[str, object] = {
        "case": case, "description": label, "tables": len(work.tables), "ranks": topo.world_size,
        "ours_plan_s": round(our_s, 3), "torchrec_plan_s": round(their_s, 2),
        "ours_cpu_s": round(our_cpu_s, 3), "torchrec_cpu_s": their_cpu_s,
        "plan_speedup_x": round(their_s / our_s, 1) if our_s > 0 else None,
        "cpu_speedup_x": (round(their_cpu_s / our_cpu_s, 1)
                          if their_cpu_s is not None and our_cpu_s > 0 else None),
        "ours_makespan_ms": None if ours is None else ours.summary.makespan_ms,
        "torchrec_makespan_ms": None if theirs is None else theirs.summary.makespan_ms,
        "makespan_gain_pct": None,
        "ours_peak_hbm_gib": _peak_hbm_gib(ours), "torchrec_peak_hbm_gib": _peak_hbm_gib(theirs),
        "ours_fits": _fits(ours), "torchrec_fits": _fits(theirs),
        "ours_solver": None if ours is None else ours.summary.solver,
        "ours_mix": "" if ours is None else " ".join(f"{k}:{v}" for k, v in ours.summary.sharding_mix.items()),
        "torchrec_mix": "" if theirs is None else " ".join(f"{k}:{v}" for k, v in theirs.summary.sharding_mix.items()),
        "torchrec_run": note,
    }
    row["ours_measured_ms"] = row["torchrec_measured_ms"] = None
    from shardplan.torchrec_interop import infer_compute_device

    if measure_steps and infer_compute_device(topo) == "cpu":
        row["ours_measured_ms"], row["torchrec_measured_ms"] = measure(ours, theirs, measure_steps)
    if ours is not None and theirs is not None and theirs.summary.makespan_ms > 0:
        row["makespan_gain_pct"] = round(100 * (1 - ours.summary.makespan_ms / theirs.summary.makespan_ms), 1)
    return row


COLUMNS = ["case", "tables", "ranks", "ours_plan_s", "torchrec_plan_s", "plan_speedup_x",
           "ours_cpu_s", "torchrec_cpu_s", "cpu_speedup_x",
           "ours_makespan_ms", "torchrec_makespan_ms", "makespan_gain_pct", "ours_peak_hbm_gib",
           "torchrec_peak_hbm_gib", "ours_fits", "torchrec_fits", "ours_measured_ms",
           "torchrec_measured_ms", "ours_solver", "torchrec_run"]


def write_results(rows: list[dict[str, object]]) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    all_cols = COLUMNS + ["description", "ours_mix", "torchrec_mix"]
    with open(RESULTS / "vs_torchrec.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=all_cols, lineterminator="\n")
        w.writeheader()
        for r in rows:
            w.writerow({k: r.get(k) for k in all_cols})
    lines = [
        "# shardplan vs TorchRec EmbeddingShardingPlanner",
        "",
        f"Command: `.venv/bin/python bench/vs_torchrec.py`. Machine: {platform.machine()}, "
        f"{os.cpu_count()} CPUs (shared), Python {platform.python_version()}. Planning time: our "
        f"median of {OUR_REPEATS} runs; TorchRec's single run (cached in bench/results/vs_torchrec/); "
        "_s columns are wall seconds, _cpu_s columns the planning process's CPU seconds (fairer "
        "on a shared, overloaded box: the wall times include waiting for a core). "
        "Makespan and memory: both plans under shardplan's default cost model. "
        "gain = 1 - ours/torchrec makespan. measured: step time on shardplan's CPU/gloo executor "
        "(slowest rank's median), CPU topologies only, with --measure.",
        "",
        "| " + " | ".join(COLUMNS) + " |",
        "|" + "---|" * len(COLUMNS),
    ]
    for r in rows:
        lines.append("| " + " | ".join("" if r.get(c) is None else str(r.get(c)) for c in COLUMNS) + " |")
    lines.append("")
    for r in rows:
        lines.append(f"- **{r['case']}**: {r['description']}. ours: {r['ours_mix']}; torchrec: {r['torchrec_mix']}")
    (RESULTS / "vs_torchrec.md").write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--case", action="append", choices=sorted(CASES),
                    help="run only these cases (repeatable); default: all")
    ap.add_argument("--rerun-torchrec", action="store_true",
                    help="re-run TorchRec's planner even where a cached result exists")
    ap.add_argument("--no-write", action="store_true", help="print only; write no results")
    ap.add_argument("--measure", type=int, default=0, metavar="STEPS",
                    help="also measure both plans' step time on our executor (CPU/gloo cases "
                    "only), median of STEPS steps; 0: do not")
    args = ap.parse_args(argv)
    cases = args.case or list(CASES)
    rows = []
    for case in cases:
        print(f"[{time.strftime('%H:%M:%S')}] {case} ...", file=sys.stderr, flush=True)
        rows.append(run_case(case, args.rerun_torchrec, args.measure))
        r = rows[-1]
        print("  " + ", ".join(f"{k}={r[k]}" for k in COLUMNS[1:]), file=sys.stderr, flush=True)
    print("| " + " | ".join(COLUMNS) + " |")
    for r in rows:
        print("| " + " | ".join("" if r.get(c) is None else str(r.get(c)) for c in COLUMNS) + " |")
    if not args.no_write and args.case is None:
        write_results(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
