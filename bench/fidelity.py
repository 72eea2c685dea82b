"""Fidelity of the cost model: estimated vs measured step time over many plans of one small
workload on 4 CPU ranks (gloo), before and after calibration.

    python bench/fidelity.py                         # 24 plans, small-cpu on cpu-4
    python bench/fidelity.py --plans 30 --steps 15 --after estimators/profiles/cpu-gloo.yaml

Plans: the planner's own plan plus random ones (each table gets a random HBM sharding option
of the enumerator, each shard a random allowed rank; seeded). Every plan runs on the
executor (``profile``: medians of ``--steps`` steps after warm-up, compute stages one rank at
a time so the 4 processes do not fight over the 2 cores). The same assignments are estimated
by the cost model with the placeholder CPU profile (``before``), with the shipped calibrated
one (``after``), and with coefficients fitted in this same run to 16 *other* random plans
(seed 1000; ``--calibrate-plans``), so calibration and evaluation see the same machine load.
``--rounds R`` (default 3) measures the evaluation plans in R interleaved rounds (every plan,
then every plan again, ...) and keeps, per plan, rank and stage, the median over the rounds:
slow drifts of the machine's background load then hit every plan alike instead of whichever
plans ran while it was busy. ``--repeat`` repeats that whole measurement and reports the
run-to-run agreement: the ceiling any estimate can reach on a machine this noisy.

Metrics (targets after calibration: tau >= 0.8, median error <= 20%):
    Kendall tau-b between estimated and measured makespan over the plans;
    median over all (plan, rank) of |estimated - measured| / measured step time.

Writes ``bench/results/fidelity.csv`` (one row per plan and rank) and
``bench/results/fidelity.md`` (the summary table).
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CAL_SEED = 1000  # calibration plans; the evaluation plans use --seed (0): never the same plans
RESULTS = ROOT / "bench" / "results"


def kendall_tau_b(x: list[float], y: list[float]) -> float:
    """Kendall's tau-b (ties in either variable handled), O(n^2)."""
    n = len(x)
    conc = disc = tx = ty = 0
    for i in range(n):
        for j in range(i + 1, n):
            dx, dy = x[i] - x[j], y[i] - y[j]
            if dx == 0 and dy == 0:
                continue
            if dx == 0:
                tx += 1
            elif dy == 0:
                ty += 1
            elif (dx > 0) == (dy > 0):
                conc += 1
            else:
                disc += 1
    denom = ((conc + disc + tx) * (conc + disc + ty)) ** 0.5
    return (conc - disc) / denom if denom else float("nan")


def main(argv: list[str] | None = None) -> int:
    from shardplan import load_problem
    from shardplan.estimators import default_cost_model
    from shardplan.executor import profile_plans
    from shardplan.estimators.profiles import profile_from_dict
    from shardplan.executor.calibrate import fit_plan_profiles, hardware_string, random_assignments
    from shardplan.plans import assignment_of, build_plan, rank_costs
    from shardplan.planner import plan as make_plan
    from shardplan.types import Stage

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--topology", default="cpu-4")
    ap.add_argument("--tables", default=None, help="workload (default: the topology's, small-cpu)")
    ap.add_argument("--plans", type=int, default=24)
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--before", default=str(ROOT / "estimators/profiles/cpu.yaml"),
                    help="profile before calibration (the placeholder)")
    ap.add_argument("--after", default=str(ROOT / "estimators/profiles/cpu-gloo.yaml"),
                    help="calibrated profile (from `shardplan calibrate`)")
    ap.add_argument("--out", default=str(RESULTS))
    ap.add_argument("--calibrate-plans", type=int, default=16,
                    help="also run this many other random plans (seed 1000) in the same launch, "
                         "fit the coefficients to them (`calibrate --plans`) and score that fit on "
                         "the evaluation plans: calibration and evaluation under the same machine "
                         "load (0: skip)")
    ap.add_argument("--rounds", type=int, default=3,
                    help="interleaved rounds over the evaluation plans; per plan, rank and stage "
                         "the median over rounds is kept")
    ap.add_argument("--repeat", action="store_true",
                    help="profile every plan a second time and report the run-to-run noise "
                         "(tau and median error of measured vs re-measured: the ceiling any "
                         "estimate can reach on this machine)")
    a = ap.parse_args(argv)

    load_start = _load()
    topo, work = load_problem(a.topology, a.tables)
    before = default_cost_model(work, topo, profile=a.before)
    after = default_cost_model(work, topo, profile=a.after)
    planned = make_plan(work, topo, cost_model=before)
    assigns = [assignment_of(planned)] + random_assignments(work, topo, a.plans - 1, a.seed)
    plans = [build_plan(workload=work, topology=topo, cost_model=before, assignment=asg,
                        solver="random" if i else "greedy") for i, asg in enumerate(assigns)]
    cal_assigns = random_assignments(work, topo, a.calibrate_plans, CAL_SEED) if a.calibrate_plans else []
    cal_plans = [build_plan(workload=work, topology=topo, cost_model=before, assignment=asg,
                            solver="random") for asg in cal_assigns]
    t0 = time.perf_counter()
    # calibration and evaluation plans in the same interleaved rounds (same machine load)
    both = [profile_plans(cal_plans + plans, steps=a.steps, warmup=a.warmup, seed=a.seed)
            for _ in range(a.rounds)]
    run_s = time.perf_counter() - t0
    reports = both[0][len(cal_plans):]
    measured = _combine([b[len(cal_plans):] for b in both], topo.world_size)
    inrun = None
    if cal_plans:
        cal = _combine([b[:len(cal_plans)] for b in both], topo.world_size)
        meas = np.array([[[m[(rk, st.value)] for st in Stage] for rk in range(topo.world_size)]
                         for m in cal])
        coeffs, fit_rep = fit_plan_profiles(cal_assigns, meas, work, topo)
        prof = profile_from_dict({
            "format_version": 1, "name": "cpu-gloo-inrun", "device_model": topo.host_groups[0].device.model,
            "provenance": {"kind": "measured", "date": dt.date.today().isoformat(),
                           "hardware": hardware_string(reports[0].backend),
                           "command": f"python bench/fidelity.py --calibrate-plans {a.calibrate_plans}",
                           "notes": f"fitted to {len(cal_plans)} plans of seed {CAL_SEED} in the fidelity run"},
            "coefficients": coeffs})
        inrun = default_cost_model(work, topo, profile=prof)
    noise = None
    if a.repeat:
        again = _combine([profile_plans(plans, steps=a.steps, warmup=a.warmup, seed=a.seed)
                          for _ in range(a.rounds)], topo.world_size)
        m1 = [[m[(rk, "total")] for rk in range(topo.world_size)] for m in measured]
        m2 = [[m[(rk, "total")] for rk in range(topo.world_size)] for m in again]
        noise = (kendall_tau_b([max(x) for x in m2], [max(x) for x in m1]),
                 statistics.median(abs(b - c) / c for x, y in zip(m1, m2) for c, b in zip(x, y)))

    rows = []
    for i, (asg, meas) in enumerate(zip(assigns, measured)):
        est_b = [before.total(c.perf) for c in rank_costs(asg, topo, before)]
        est_a = [after.total(c.perf) for c in rank_costs(asg, topo, after)]
        stage_a = [c.perf for c in rank_costs(asg, topo, after)]
        est_i = [inrun.total(c.perf) for c in rank_costs(asg, topo, inrun)] if inrun else [float("nan")] * topo.world_size
        mix = "+".join(sorted({o.sharding_type.short for o in asg.options}))
        for rk in range(topo.world_size):
            row = {"plan": i, "mix": mix, "rank": rk, "measured_ms": meas[(rk, "total")],
                   "estimated_before_ms": est_b[rk], "estimated_after_ms": est_a[rk],
                   "estimated_inrun_ms": est_i[rk]}
            for st in Stage:
                row[f"measured_{st.value}_ms"] = meas[(rk, st.value)]
                row[f"after_{st.value}_ms"] = stage_a[rk].get(st)
            rows.append(row)

    def summary(key: str) -> tuple[float, float]:
        mk_meas, mk_est = [], []
        for i in range(len(plans)):
            pr = [r for r in rows if r["plan"] == i]
            mk_meas.append(max(r["measured_ms"] for r in pr))
            mk_est.append(max(r[key] for r in pr))
        err = statistics.median(abs(r[key] - r["measured_ms"]) / r["measured_ms"] for r in rows)
        return kendall_tau_b(mk_est, mk_meas), err

    tb, eb = summary("estimated_before_ms")
    ta, ea = summary("estimated_after_ms")
    ti, ei = summary("estimated_inrun_ms") if inrun else (float("nan"), float("nan"))
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "fidelity.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]), lineterminator="\n")
        w.writeheader()
        for r in rows:
            w.writerow({k: (f"{v:.4f}" if isinstance(v, float) else v) for k, v in r.items()})
    meas_mk = [max(r["measured_ms"] for r in rows if r["plan"] == i) for i in range(len(plans))]
    md = [
        f"# Cost-model fidelity on {topo.name} ({work.name}), {dt.date.today().isoformat()}",
        "",
        f"{len(plans)} plans (1 planned + {len(plans) - 1} random), {topo.world_size} gloo ranks, "
        f"kernels {reports[0].backend}, medians of {a.steps} steps after {a.warmup} warm-up, "
        f"median of {a.rounds} interleaved rounds; "
        f"measured makespans {min(meas_mk):.2f}-{max(meas_mk):.2f} ms (median "
        f"{statistics.median(meas_mk):.2f}); executor run {run_s:.0f} s.",
        "",
        "| profile | Kendall tau (makespan) | median abs rel. error (per rank) |",
        "|---|---|---|",
        f"| before: {Path(a.before).name} | {tb:.3f} | {eb:.1%} |",
        f"| after: {Path(a.after).name} | {ta:.3f} | {ea:.1%} |",
    ] + ([f"| after: calibrated in this run on {len(cal_plans)} other plans (seed {CAL_SEED}) "
          f"| {ti:.3f} | {ei:.1%} |"] if inrun else []) + ([f"| noise: second run vs first | {noise[0]:.3f} | {noise[1]:.1%} |"] if noise else []) + [
        "",
        "Targets after calibration: tau >= 0.8, median error <= 20%.",
        f"Command: `python bench/fidelity.py --plans {a.plans} --steps {a.steps} --rounds {a.rounds}"
        + (" --repeat`" if a.repeat else "`"),
        f"Machine load average before the run: {load_start}; at the end: {_load()} (the run's own "
        f"{topo.world_size} processes count in it).",
        "",
    ]
    (out / "fidelity.md").write_text("\n".join(md), encoding="utf-8")
    print("\n".join(md))
    print(f"wrote {out / 'fidelity.csv'} and {out / 'fidelity.md'}")
    return 0


def _combine(rounds: list, world: int) -> list[dict[tuple[int, str], float]]:
    """Per plan, {(rank, stage): median over rounds of the stage median}; ``total`` is the sum
    of the stages, as the executor and the cost model add them."""
    from shardplan.types import Stage

    out = []
    for reps in zip(*rounds):
        by = [{(r.rank, r.stage): r.measured_ms for r in rep.rows} for rep in reps]
        m = {(rk, st.value): statistics.median(b[(rk, st.value)] for b in by)
             for rk in range(world) for st in Stage}
        for rk in range(world):
            m[(rk, "total")] = sum(m[(rk, st.value)] for st in Stage)
        out.append(m)
    return out


def _load() -> str:
    try:
        return ", ".join(Path("/proc/loadavg").read_text().split()[:3]) + " (1/5/15 min)"
    except OSError:
        return "unknown"


if __name__ == "__main__":
    sys.exit(main())
