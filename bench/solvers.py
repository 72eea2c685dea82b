"""Solver benchmark: planning time, makespan and makespan / lower bound for every solver and
baseline, over synthetic workloads (10 to 10,000 tables x 8 to 1,024 H100 ranks) and the
bundled real workloads.

    .venv/bin/python bench/solvers.py            # full grid (the 10,000 x 1,024 cell: auto only)
    .venv/bin/python bench/solvers.py --quick    # a subset, a few minutes
    .venv/bin/python bench/solvers.py --hard     # the hard suite (bench/hard_cases.py)
    .venv/bin/python bench/solvers.py --scale    # 10,000 tables x 1,024 and x 4,096 ranks
    .venv/bin/python bench/solvers.py --monotone # DCNv2, fixed global batch, 16/128/1,024 GPUs

Prints a table and writes ``bench/results/solvers[-quick].{csv,md}``.

Synthetic instances: ``shardplan.generate.synthetic_workload(n, seed=0)`` with every table's
rows clipped to R, on ``h100-128x8``'s host spec with 1, 8 or 128 hosts (16 ranks:
``dgx-h100-2x8``). R (the row cap) is the largest of 1e9, 1e8, 1e7, 1e6, 1e5 for which the workload's estimated footprint (weights + optimizer state)
is at most half the cluster's usable HBM and its largest table at most half of one host's,
so every instance is feasible.

Times are wall-clock seconds of the full ``shardplan.plan`` call (enumeration, costing,
solving, lower bound, plan build) in a warm process, and the process's CPU seconds (the
planner is single-threaded, so on a loaded machine CPU seconds are what a quiet machine's
wall clock would show); where ``--repeats`` > 1, the median.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import statistics
import sys
import time
from pathlib import Path

from shardplan.enumerators import _footprint_bytes
from shardplan.errors import InfeasiblePlanError, ShardplanError
from shardplan.generate import synthetic_workload
from shardplan.loaders import load_problem, load_topology
from shardplan.planner import plan
from shardplan.solvers import BASELINE_SOLVERS, get_solver
from shardplan.types import PlanningContext, SolveResult, Solver, Topology, Workload

RESULTS = Path(__file__).resolve().parent / "results"
ROW_CAPS = (10**9, 10**8, 10**7, 10**6, 10**5)
REAL = ("dgx-h100-2x8", "dgx-a100-1x8", "h100-16x8", "l4-4x8", "hetero-a100-h100", "cpu-4")


class Recording(Solver):
    """Wraps a solver to keep its last SolveResult (for ILP gap and auto's choices)."""

    def __init__(self, inner: Solver) -> None:
        self.inner = inner
        self.name = inner.name
        self.last: SolveResult | None = None

    def solve(self, ctx: PlanningContext) -> SolveResult:
        self.last = self.inner.solve(ctx)
        return self.last

    def options(self) -> dict[str, object]:
        return self.inner.options()


def h100(hosts: int) -> Topology:
    base = load_topology("h100-128x8")
    g = dataclasses.replace(base.host_groups[0], hosts=hosts)
    return dataclasses.replace(base, name=f"h100-{hosts}x8", host_groups=(g,), workload_path=None)


def capped_workload(n: int, topo: Topology, seed: int = 0) -> tuple[Workload, int]:
    cap_cluster = sum(topo.capacity(r).hbm for r in range(topo.world_size))
    cap_host = topo.capacity(0).hbm * topo.host_groups[0].devices_per_host
    full = synthetic_workload(n, seed=seed)
    for rows in ROW_CAPS:  # clip rows (synthetic_workload's max_rows must be >= 1e7)
        w = dataclasses.replace(full, name=f"{full.name}-rows{rows:.0e}", tables=tuple(
            dataclasses.replace(t, num_embeddings=min(t.num_embeddings, rows))
            for t in full.tables))
        foot = [_footprint_bytes(t, w) for t in w.tables]
        if sum(foot) <= 0.5 * cap_cluster and max(foot) <= 0.5 * cap_host:
            return w, rows
    return w, rows


def run_one(work: Workload, topo: Topology, solver: str, time_limit_s: float, repeats: int
            ) -> dict[str, object]:
    times, cpus, p, rec = [], [], None, None
    try:
        for _ in range(repeats):
            rec = Recording(get_solver(solver))
            t0, c0 = time.perf_counter(), time.process_time()
            p = plan(work, topo, solver=rec, time_limit_s=time_limit_s)
            times.append(time.perf_counter() - t0)
            cpus.append(time.process_time() - c0)
    except InfeasiblePlanError as e:
        return {"status": "infeasible", "note": e.message}
    except ShardplanError as e:
        return {"status": "error", "note": str(e)[:120]}
    s = p.summary
    d = rec.last.details if rec and rec.last else {}
    gap = d.get("gap")
    if solver == "auto" and isinstance(d.get("ilp"), dict):
        gap = d["ilp"].get("gap")
    return {"status": s.status, "time_s": statistics.median(times),
            "cpu_s": statistics.median(cpus), "makespan_ms": s.makespan_ms,
            "lower_bound_ms": s.lower_bound_ms, "ratio": s.makespan_ms / s.lower_bound_ms,
            "ilp_gap": gap, "note": str(d.get("picked", d.get("mip_status", "")))}


def grid(quick: bool) -> list[tuple[int, int]]:
    if quick:
        return [(10, 8), (100, 8), (500, 8), (100, 64), (1000, 64), (200, 16)]
    return [(n, r) for n in (10, 100, 1000, 10_000) for r in (8, 64, 1024)] + [(500, 8), (200, 16)]


def solvers_for(n: int, ranks: int) -> list[str]:
    if n * ranks > 2_000_000:  # the 10,000 x 1,024 cell: auto only (it runs the baselines too)
        return ["auto"]
    out = ["auto", "greedy", "local_search", *BASELINE_SOLVERS]
    if n * ranks <= 200 * 16:
        out.append("ilp")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a subset of the grid")
    ap.add_argument("--time-limit", type=float, default=None,
                    help="per-solver budget, s (default 60; 20 with --quick)")
    ap.add_argument("--repeats", type=int, default=3, help="timing repeats of auto (median) "
                    "on instances up to 1,000 x 64")
    ap.add_argument("--no-real", action="store_true", help="skip the bundled workloads")
    ap.add_argument("--hard", action="store_true",
                    help="the hard suite: auto against the best solver or forced plan and the "
                         "bound (results go to solvers-hard.*)")
    ap.add_argument("--case", action="append", default=None,
                    help="with --hard: only these cases (repeatable)")
    ap.add_argument("--scale", action="store_true",
                    help="auto on 10,000 tables x 1,024 and x 4,096 ranks (solvers-scale.*)")
    ap.add_argument("--monotone", action="store_true",
                    help="DCNv2 at a fixed global batch on 16, 128 and 1,024 GPUs, 1D and 2D "
                         "(solvers-monotone.*)")
    ap.add_argument("--only", default=None, help="only these synthetic cells, e.g. "
                    "'10000x1024,500x8' (results go to solvers-only.*)")
    args = ap.parse_args(argv)
    if args.time_limit is None:
        args.time_limit = 20.0 if args.quick else 60.0
    if args.hard:
        from solvers_hard import run_hard

        return run_hard(args.case, args.time_limit)
    if args.monotone:
        from solvers_monotone import run_monotone

        return run_monotone(args.time_limit)
    if args.scale:
        args.only = args.only or "10000x1024,10000x4096"
    rows: list[dict[str, object]] = []

    def record(instance: str, n: int, ranks: int, cap: object, solver: str, r: dict) -> None:
        row = {"instance": instance, "tables": n, "ranks": ranks, "max_rows": cap,
               "solver": solver, **r}
        rows.append(row)
        print(_line(row), flush=True)

    print(_header())
    cells = grid(args.quick)
    if args.only:
        cells = [tuple(int(x) for x in c.split("x")) for c in args.only.split(",")]
    for n, ranks in cells:
        topo = h100(ranks // 8) if ranks != 16 else load_topology("dgx-h100-2x8")
        work, cap = capped_workload(n, topo)
        for s in (["auto"] if args.scale else solvers_for(n, ranks)):
            reps = args.repeats if (s == "auto" and n * ranks <= 64_000) else 1
            record(f"synthetic-{n}x{ranks}", n, ranks, f"{cap:.0e}", s,
                   run_one(work, topo, s, args.time_limit, reps))
    if not args.no_real and not args.scale and not args.only:
        for name in (REAL[:2] + REAL[-1:] if args.quick else REAL):
            topo, work = load_problem(name)
            n, ranks = len(work.tables), topo.world_size
            for s in ["auto", "greedy", "local_search", *BASELINE_SOLVERS, "ilp"]:
                record(f"{name}:{work.name}", n, ranks, "-", s,
                       run_one(work, topo, s, args.time_limit,
                               args.repeats if s == "auto" else 1))
    _summary(rows)
    RESULTS.mkdir(parents=True, exist_ok=True)
    stem = ("solvers-scale" if args.scale else "solvers-only" if args.only
            else ("solvers-quick" if args.quick else "solvers"))
    keys = ["instance", "tables", "ranks", "max_rows", "solver", "status", "time_s", "cpu_s",
            "makespan_ms", "lower_bound_ms", "ratio", "ilp_gap", "note"]
    with open(RESULTS / f"{stem}.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({k: _fmt(r.get(k)) for k in keys})
    with open(RESULTS / f"{stem}.md", "w") as f:
        f.write("| " + " | ".join(keys) + " |\n|" + "---|" * len(keys) + "\n")
        for r in rows:
            f.write("| " + " | ".join(_fmt(r.get(k)) for k in keys) + " |\n")
        f.write("\n" + "\n".join(_summary_lines(rows)) + "\n")
    print(f"wrote {RESULTS / stem}.csv and .md")
    return 0


def _fmt(v: object) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.4g}" if abs(v) < 1e4 else f"{v:.0f}"
    return str(v)


def _header() -> str:
    return (f"{'instance':42s} {'solver':20s} {'time_s':>8s} {'cpu_s':>8s} {'makespan':>10s} "
            f"{'bound':>10s} {'ratio':>7s} {'gap':>7s} note")


def _line(r: dict) -> str:
    if r.get("status") in ("infeasible", "error"):
        return f"{r['instance']:42s} {r['solver']:20s} {r['status']}: {r.get('note', '')}"
    gap = "" if r.get("ilp_gap") is None else f"{r['ilp_gap']:.2%}"
    return (f"{r['instance']:42s} {r['solver']:20s} {r['time_s']:8.2f} {r['cpu_s']:8.2f} "
            f"{r['makespan_ms']:10.4f} "
            f"{r['lower_bound_ms']:10.4f} {r['ratio']:7.4f} {gap:>7s} {r.get('note', '')}")


def _summary_lines(rows: list[dict]) -> list[str]:
    out = []
    ok = [r for r in rows if "ratio" in r]
    auto = {r["instance"]: r for r in ok if r["solver"] == "auto"}
    syn = [r["ratio"] for i, r in auto.items() if i.startswith("synthetic")]
    if syn:
        out.append(f"auto makespan / lower bound, synthetic suite: median {statistics.median(syn):.4f}, "
                   f"max {max(syn):.4f} over {len(syn)} instances")
    worse = [(r["instance"], r["solver"], r["makespan_ms"], auto[r["instance"]]["makespan_ms"])
             for r in ok if r["solver"] in BASELINE_SOLVERS and r["instance"] in auto
             and auto[r["instance"]]["makespan_ms"] > r["makespan_ms"] * (1 + 1e-9)]
    out.append(f"instances where auto is worse than a baseline: {len(worse)} {worse[:5]}")
    for key in ("synthetic-10000x1024", "synthetic-500x8"):
        if key in auto:
            out.append(f"auto on {key}: {auto[key]['time_s']:.2f} s (ratio {auto[key]['ratio']:.4f})")
    for r in ok:
        if r["solver"] == "ilp" and r["instance"].startswith("synthetic-200x16"):
            out.append(f"ilp on {r['instance']}: gap {r['ilp_gap']}, {r['time_s']:.1f} s")
    for r in ok:
        if r["solver"] == "auto" and r["instance"].startswith("dgx-h100-2x8"):
            out.append(f"DCNv2 (dgx-h100-2x8) auto: slowest rank {r['ratio']:.4f} x lower bound")
    return out


def _summary(rows: list[dict]) -> None:
    print("\n".join(_summary_lines(rows)))


if __name__ == "__main__":
    sys.exit(main())
