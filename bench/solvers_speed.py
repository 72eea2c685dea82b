"""Planning speed before/after: ``auto`` (``shardplan.plan``) on the quick cases of
``bench/vs_torchrec.py`` and the hard cases of ``bench/hard_cases.py``, under this checkout and
under a git revision (default ``main``), side by side in one run.

    .venv/bin/python bench/solvers_speed.py                      # every case, vs main
    .venv/bin/python bench/solvers_speed.py --case syn200x16 --case dcnv2 --base main

The revision's ``shardplan`` package is extracted with ``git archive`` into a temporary
folder and put first on ``PYTHONPATH`` (the cost model, ``shardplan.estimators``, is this
checkout's for both, so only the planner differs). Each plan runs in its own subprocess, the
two sides alternating case by case, so both see the same machine load; times are the
subprocess's CPU seconds for the ``shardplan.plan`` call (the planner is single-threaded; on
a shared machine CPU seconds are what a quiet machine's wall clock would show). TorchRec's
planner CPU seconds, where a case has them, come from the seed cache of
``bench/vs_torchrec.py`` (median over its seeds).

Prints a table and writes ``bench/results/solvers-speed.{md,json}``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
SEEDS = RESULTS / "vs_torchrec" / "seeds"
QUICK = ("small-cpu", "small-cpu4", "syn24cpu4", "dcnv2", "giants44", "syn200x16")
HARD = ("uniform-p100-128", "dcnv2-global-16", "dcnv2-global-128", "memory-tight",
        "heterogeneous", "skewed-giants-128")


def _worker(case: str) -> int:
    """Plan ``case`` with auto; print one JSON line (CPU s, step time, bound, pick)."""
    sys.path.insert(0, str(ROOT / "bench"))
    from shardplan.planner import plan
    from shardplan.solvers import get_solver

    if case in QUICK:
        import vs_torchrec

        work, topo = vs_torchrec.CASES[case][1]()
    else:
        from hard_cases import CASES

        c = CASES[case]()
        work, topo = c.workload, c.topology
    solver = get_solver("auto")
    inner = solver.solve
    seen: dict[str, object] = {}

    def solve(ctx):  # keep auto's details (which stage's plan it returned)
        res = inner(ctx)
        seen.update(res.details)
        return res

    solver.solve = solve
    c0 = time.process_time()
    p = plan(work, topo, solver=solver, time_limit_s=60.0)
    cpu = time.process_time() - c0
    ilp = seen.get("ilp") if isinstance(seen.get("ilp"), dict) else {}
    print(json.dumps({"cpu_s": cpu, "makespan_ms": p.summary.makespan_ms,
                      "bound_ms": p.summary.lower_bound_ms, "picked": seen.get("picked"),
                      "ilp": ilp.get("mip_status")}))
    return 0


def _run(case: str, pythonpath: str | None) -> dict[str, object]:
    env = dict(os.environ)
    if pythonpath:
        env["PYTHONPATH"] = pythonpath + os.pathsep + env.get("PYTHONPATH", "")
    done = subprocess.run([sys.executable, __file__, "--_worker", case], env=env, cwd="/",
                          capture_output=True, text=True, check=False)
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("{")]
    if done.returncode != 0 or not lines:
        return {"error": done.stderr.strip().splitlines()[-1:] or ["failed"]}
    return json.loads(lines[-1])


def _extract(rev: str, into: Path) -> None:
    """``shardplan/`` of git revision ``rev`` into ``into``."""
    tar = into / "src.tar"
    with open(tar, "wb") as f:
        subprocess.run(["git", "-C", str(ROOT), "archive", rev, "shardplan"], stdout=f,
                       check=True)
    with tarfile.open(tar) as t:
        t.extractall(into, filter="data")


def _torchrec_cpu(case: str) -> float | None:
    vals = [json.loads(p.read_text()).get("planner_cpu_s") for p in SEEDS.glob(f"{case}.seed*.json")]
    vals = [v for v in vals if v is not None]
    return statistics.median(vals) if vals else None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--case", action="append", default=None,
                    help=f"only these cases (repeatable; default: {', '.join(QUICK + HARD)})")
    ap.add_argument("--base", default="main", help="the git revision to compare with")
    ap.add_argument("--no-write", action="store_true", help="print only; write no results")
    ap.add_argument("--_worker", dest="worker", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        return _worker(args.worker)
    cases = args.case or list(QUICK + HARD)
    unknown = [c for c in cases if c not in QUICK + HARD]
    if unknown:
        ap.error(f"unknown case(s) {unknown}; choose from {', '.join(QUICK + HARD)}")
    rows = []
    head = (f"{'case':20s} {'base cpu':>9s} {'new cpu':>8s} {'torchrec':>8s} {'base ms':>9s} "
            f"{'new ms':>9s} {'bound':>9s} {'base/lb':>7s} {'new/lb':>7s}  new pick")
    print(head)
    with tempfile.TemporaryDirectory() as tmp:
        _extract(args.base, Path(tmp))
        for case in cases:
            base = _run(case, tmp)
            new = _run(case, str(ROOT))
            row = {"case": case, "base": base, "new": new, "torchrec_cpu_s": _torchrec_cpu(case)}
            rows.append(row)
            print(_line(row), flush=True)
    if args.no_write:
        return 0
    RESULTS.mkdir(parents=True, exist_ok=True)
    cmd = "python bench/solvers_speed.py" + "".join(f" --case {c}" for c in (args.case or [])) + \
        (f" --base {args.base}" if args.base != "main" else "")
    machine = (f"{platform.machine()}, {os.cpu_count()} CPUs (shared), Python "
               f"{platform.python_version()}, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    lines = [
        "# Planning speed: auto before/after", "",
        f"Command: `{cmd}`. Base: git `{args.base}`; new: this checkout. Machine: {machine}.",
        ("CPU seconds of the `shardplan.plan` call (costing, solving, bound, plan), each in its "
         "own subprocess, the sides alternating; torchrec: TorchRec's planner CPU seconds from "
         "the vs_torchrec seed cache (median over seeds). ms: step time under our cost model; "
         "lb: the planner's lower bound."), "",
        ("| case | base CPU s | new CPU s | TorchRec CPU s | base ms | new ms | bound ms | "
         "base / bound | new / bound | new: plan from | new: ILP |"),
        "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        b, n = r["base"], r["new"]
        lines.append("| " + " | ".join([
            r["case"], _f(b.get("cpu_s"), 2), _f(n.get("cpu_s"), 2), _f(r["torchrec_cpu_s"], 2),
            _f(b.get("makespan_ms"), 6), _f(n.get("makespan_ms"), 6), _f(n.get("bound_ms"), 6),
            _f(_ratio(b), 4), _f(_ratio(n), 4), str(n.get("picked", n.get("error"))),
            str(n.get("ilp") or "-")]) + " |")
    (RESULTS / "solvers-speed.md").write_text("\n".join(lines) + "\n")
    (RESULTS / "solvers-speed.json").write_text(json.dumps(rows, indent=1) + "\n")
    print(f"wrote {RESULTS / 'solvers-speed.md'} and .json")
    return 0


def _ratio(r: dict) -> float | None:
    if r.get("makespan_ms") is None or not r.get("bound_ms"):
        return None
    return r["makespan_ms"] / r["bound_ms"]


def _f(v: object, digits: int) -> str:
    return "" if v is None else f"{v:.{digits}f}"


def _line(r: dict) -> str:
    b, n = r["base"], r["new"]
    return (f"{r['case']:20s} {_f(b.get('cpu_s'), 2):>9s} {_f(n.get('cpu_s'), 2):>8s} "
            f"{_f(r['torchrec_cpu_s'], 2):>8s} {_f(b.get('makespan_ms'), 5):>9s} "
            f"{_f(n.get('makespan_ms'), 5):>9s} {_f(n.get('bound_ms'), 5):>9s} "
            f"{_f(_ratio(b), 4):>7s} {_f(_ratio(n), 4):>7s}  {n.get('picked', n.get('error'))}")


if __name__ == "__main__":
    sys.exit(main())
