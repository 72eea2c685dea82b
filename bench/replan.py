"""Re-plan benchmark: bytes moved and makespan of ``shardplan.replanning`` against a plan made from
scratch, when a 16-host H100 cluster loses a host, gains two, or the model gains 10% more
tables; and the unchanged cluster (nothing may move).

    .venv/bin/python bench/replan.py                 # 300 tables (the default)
    .venv/bin/python bench/replan.py --tables 200 --seed 3

Prints a table and writes ``bench/results/replan.{md,csv,json}``.

Workload: ``shardplan.generate.synthetic_workload(N, seed)`` (production-like spreads), batch
1,024 per rank. Topology: ``h100-16x8`` and the same hosts 15 (host ``--lost-host`` gone,
so later hosts renumber) or 18 of them. The old plan: ``shardplan.plan(..., solver="auto")``
on 16 hosts. From scratch: ``shardplan.plan(..., solver="auto")`` on the new problem; its bytes
are what moving the old plan to it would send (:func:`shardplan.replanning.diff_plans`). Replan:
``replan(..., solver="auto")`` with the default move weight 0.01 (migration amortised over
100 steps), with 0.001 (over 1,000 steps), and with a budget of half the from-scratch bytes. Targets: replan at most half the
bytes of from-scratch at a makespan within 10% of it; zero bytes when nothing changed.
Migration time: the busiest link direction (docs/replan.md), lower bound.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import sys
import time
from pathlib import Path

from shardplan.generate import synthetic_workload
from shardplan.loaders import load_topology
from shardplan.planner import plan
from shardplan.replanning import diff_plans, replan_full
from shardplan.types import Topology, Workload

RESULTS = Path(__file__).resolve().parent / "results"
GiB = 2**30


def with_hosts(topo: Topology, hosts: int) -> Topology:
    g = topo.host_groups[0]
    return dataclasses.replace(topo, name=f"{topo.name}-{hosts}h",
                               host_groups=(dataclasses.replace(g, hosts=hosts),))


def more_tables(work: Workload, extra: int, seed: int) -> Workload:
    new = synthetic_workload(extra, seed=seed + 1000, batch_size=work.batch_size)
    tables = tuple(dataclasses.replace(t, name=f"new{t.name}", features=(f"new{t.name}",))
                   for t in new.tables)
    return dataclasses.replace(work, name=f"{work.name}+{extra}", tables=work.tables + tables)


def run(n: int, seed: int, lost_host: int, time_limit_s: float) -> list[dict]:
    base = load_topology("h100-16x8")
    work = synthetic_workload(n, seed=seed, batch_size=1024)
    t0 = time.perf_counter()
    old = plan(work, base, solver="auto", time_limit_s=time_limit_s)
    print(f"old plan: {n} tables on {base.world_size} ranks, makespan "
          f"{old.summary.makespan_ms:.3f} ms ({time.perf_counter() - t0:.1f} s)", flush=True)
    cases = [
        ("unchanged", base, work, ()),
        (f"lose host {lost_host}", with_hosts(base, 15), work, (lost_host,)),
        ("gain 2 hosts", with_hosts(base, 18), work, ()),
        ("+10% tables", base, more_tables(work, max(1, n // 10), seed), ()),
    ]
    rows = []
    for name, topo, w, lost in cases:
        t0 = time.perf_counter()
        scratch = plan(w, topo, solver="auto", time_limit_s=time_limit_s)
        t_scratch = time.perf_counter() - t0
        ms = diff_plans(old, scratch, lost_hosts=lost)
        for label, kw in (("weight 0.01 (default)", {}), ("weight 0.001", {"move_weight": 1e-3}),
                          ("budget 50%", {"move_budget_bytes": 0.5 * ms.total_bytes})):
            if name == "unchanged" and label != "weight 0.01 (default)":
                continue
            if kw.get("move_budget_bytes") is not None and kw["move_budget_bytes"] < 1:
                continue
            t0 = time.perf_counter()
            try:
                r = replan_full(old, topo, w, lost_hosts=lost, time_limit_s=time_limit_s, **kw)
            except Exception as exc:  # noqa: BLE001  (a bench reports, it does not stop)
                rows.append({"case": name, "objective": label, "error": str(exc)[:200]})
                print(f"{name} / {label}: {exc}", flush=True)
                continue
            t_re = time.perf_counter() - t0
            m = r.migration
            byte_ratio = m.total_bytes / ms.total_bytes if ms.total_bytes else 0.0
            mk_ratio = r.plan.summary.makespan_ms / scratch.summary.makespan_ms
            met = (m.total_bytes == 0) if name == "unchanged" else (
                byte_ratio <= 0.5 and mk_ratio <= 1.10)
            rows.append({
                "case": name, "objective": label, "tables": len(w.tables),
                "ranks": topo.world_size,
                "scratch_makespan_ms": round(scratch.summary.makespan_ms, 4),
                "scratch_moved_gib": round(ms.total_bytes / GiB, 2),
                "scratch_migration_s": round(ms.time_s, 3),
                "replan_makespan_ms": round(r.plan.summary.makespan_ms, 4),
                "replan_moved_gib": round(m.total_bytes / GiB, 2),
                "replan_restored_gib": round(m.restored_bytes / GiB, 2),
                "replan_migration_s": round(m.time_s, 3),
                "bytes_ratio": round(byte_ratio, 3), "makespan_ratio": round(mk_ratio, 4),
                "kept_shards": m.kept_shards, "moved_shards": m.moved_shards,
                "picked": r.details.get("picked"), "target_met": met,
                "scratch_s": round(t_scratch, 1), "replan_s": round(t_re, 1),
            })
            print(f"{name} / {label}: bytes {byte_ratio:.3f} x scratch, makespan "
                  f"{mk_ratio:.3f} x scratch, picked {r.details.get('picked')}, "
                  f"{t_re:.1f} s", flush=True)
    return rows


COLS = ["case", "objective", "scratch_makespan_ms", "replan_makespan_ms", "makespan_ratio",
        "scratch_moved_gib", "replan_moved_gib", "bytes_ratio", "scratch_migration_s",
        "replan_migration_s", "picked", "target_met", "replan_s"]


def write(rows: list[dict], meta: dict) -> str:
    RESULTS.mkdir(parents=True, exist_ok=True)
    keys = sorted({k for r in rows for k in r}, key=lambda k: (k not in COLS, COLS.index(k)
                                                                 if k in COLS else 0, k))
    with open(RESULTS / "replan.csv", "w", newline="", encoding="utf-8") as f:
        wr = csv.DictWriter(f, fieldnames=keys)
        wr.writeheader()
        wr.writerows(rows)
    (RESULTS / "replan.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1),
                                         encoding="utf-8")
    lines = ["| " + " | ".join(COLS) + " |", "|" + "---|" * len(COLS)]
    for r in rows:
        lines.append("| " + " | ".join(str(r.get(c, r.get("error", ""))) for c in COLS) + " |")
    table = "\n".join(lines)
    md = (f"# Re-plan benchmark\n\n`{meta['command']}`\n\n{meta['workload']}; old plan "
          f"makespan {meta['old_makespan_ms']} ms. Targets: bytes_ratio <= 0.5 at "
          "makespan_ratio <= 1.10; zero bytes unchanged. Moved GiB include state restored "
          "from a checkpoint (a lost host's).\n\n" + table + "\n")
    (RESULTS / "replan.md").write_text(md, encoding="utf-8")
    return table


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tables", type=int, default=300)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--lost-host", type=int, default=5)
    ap.add_argument("--time-limit", type=float, default=60.0)
    a = ap.parse_args(argv)
    rows = run(a.tables, a.seed, a.lost_host, a.time_limit)
    old = plan(synthetic_workload(a.tables, seed=a.seed, batch_size=1024),
               load_topology("h100-16x8"), solver="auto", time_limit_s=a.time_limit)
    meta = {"command": "python bench/replan.py " + " ".join(argv or sys.argv[1:]),
            "workload": f"synthetic_workload({a.tables}, seed={a.seed}), batch 1024 on h100-16x8",
            "old_makespan_ms": old.summary.makespan_ms}
    print(write(rows, meta))
    return 0


if __name__ == "__main__":
    sys.exit(main())
