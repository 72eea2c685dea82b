"""Fidelity of the cost model: estimated vs measured step time over many plans on 4 CPU ranks
laid out as 2 hosts x 2 (gloo), serial and pipelined, before and after calibration.

    python bench/fidelity.py                          # 24 plans, small-cpu on cpu-2x2
    python bench/fidelity.py --plans 30 --steps 10 --rounds 3 --repeat
    python bench/fidelity.py --mode inference --plans 16   # inference plans (fidelity_inference.py)

Plans: the planner's own plan plus random ones (each table a random HBM sharding option of the
enumerator, each shard a random allowed rank; seeded); the first third use row-wise, data-
parallel and table-row-wise tables together. Every plan runs on the executor (``profile``,
virtual clock: one emulated device per rank, since the 4 processes share 2 cores; see
``shardplan.executor.clock``), serial and pipelined, in ``--rounds`` interleaved rounds (every
plan, then every plan again; per plan, rank and stage the median over rounds), so slow drifts
of the machine's load hit every plan alike.

Estimates: the same assignments under the cost model with the placeholder CPU profile
(``before``), the shipped calibrated one (``after``: estimators/profiles/cpu-gloo.yaml) and one
fitted in this run to 16 *other* random plans (seed 1000) measured in the same rounds
(``inrun``: calibration and evaluation under the same machine load). Each is evaluated with
both step compositions (``synchronized``: every stage at its slowest rank, TorchRec's
critical-path form; ``per_rank``: the slowest rank's own sum): the measurement decides.

Metrics (targets after calibration, pipelined: tau >= 0.8, median error <= 20%):
    Kendall tau-b between estimated and measured step time over the plans;
    median over all (plan, rank) of |estimated - measured| / measured busy time of the rank
    (its compute stages plus the communication stages it takes part in: a collective lasts
    until its slowest participant is done, for every participant).
``--repeat`` measures every plan again: the run-to-run agreement is the noise ceiling.

Writes ``bench/results/fidelity.json`` (``{"serial": {...}, "pipelined": {...}}``),
``fidelity.csv`` (one row per plan, mode and rank) and ``fidelity.md``.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import datetime as dt
import json
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


def _busy_estimates(lanes: np.ndarray, step) -> np.ndarray:
    """Per rank: own compute stages plus every communication stage at its slowest (rank,
    lane): what each rank is busy for under the model (see the module docstring)."""
    from shardplan.types import Stage

    stages = step.stage_times(lanes)  # [ranks, S]
    out = np.zeros(len(lanes))
    for i, st in enumerate(Stage):
        out += stages[:, i].max() if st.is_comm else stages[:, i]
    return out


def main(argv: list[str] | None = None) -> int:
    from shardplan import load_problem
    from shardplan.estimators import CostModelOptions, default_cost_model
    from shardplan.estimators.fitting import fit_overlap, fit_plans, profile_at
    from shardplan.executor.calibrate import (
        GLOO_TIE,
        _REQUIRE,
        hardware_string,
        measure_plans,
        random_assignments,
    )
    from shardplan.planner import plan as make_plan
    from shardplan.plans import assignment_of, makespan_of, rank_costs
    from shardplan.types import Composition

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--topology", default="cpu-2x2")
    ap.add_argument("--tables", default=None, help="workload (default: the topology's, small-cpu)")
    ap.add_argument("--plans", type=int, default=24)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--before", default=str(ROOT / "estimators/profiles/cpu.yaml"),
                    help="profile before calibration (the placeholder)")
    ap.add_argument("--after", default=str(ROOT / "estimators/profiles/cpu-gloo.yaml"),
                    help="calibrated profile (from `shardplan calibrate --plans`)")
    ap.add_argument("--out", default=str(RESULTS))
    ap.add_argument("--calibrate-plans", type=int, default=16,
                    help="also run this many other random plans (seed 1000) in the same rounds "
                         "and fit the coefficients to them (0: skip)")
    ap.add_argument("--rounds", type=int, default=3,
                    help="interleaved rounds over the plans; the median over rounds is kept")
    ap.add_argument("--repeat", action="store_true",
                    help="measure every evaluation plan a second time: the noise ceiling")
    ap.add_argument("--mode", choices=("training", "inference"), default="training",
                    help="inference: forward-only plans in int8/int4/fp16/fp32 (see "
                         "bench/fidelity_inference.py; writes fidelity-inference.*)")
    a = ap.parse_args(argv)
    if a.mode == "inference":
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from fidelity_inference import main_inference

        return main_inference(a, argv)

    load_start = _load()
    topo, work = load_problem(a.topology, a.tables)
    planned = make_plan(work, topo, cost_model=default_cost_model(work, topo, profile=a.before))
    n_rand = a.plans - 1
    assigns = [assignment_of(planned)] + random_assignments(
        work, topo, n_rand, a.seed, require=_REQUIRE, share=(a.plans / 3) / max(n_rand, 1))
    cal_assigns = (random_assignments(work, topo, a.calibrate_plans, CAL_SEED, require=_REQUIRE,
                                      share=1 / 3) if a.calibrate_plans else [])
    t0 = time.perf_counter()
    both = cal_assigns + assigns
    meas, reports = measure_plans(both, work, topo, steps=a.steps, warmup=a.warmup, seed=a.seed,
                                  rounds=a.rounds, modes=(False, True))
    run_s = time.perf_counter() - t0
    nb = len(both)
    modes = {"serial": (meas[:nb], reports[0]), "pipelined": (meas[nb:], reports[1])}
    step_ms = {m: [statistics.median(run[i].step_ms for run in reps) for i in range(nb)]
               for m, (_, reps) in modes.items()}
    backend = reports[0][0][0].backend
    inrun_theta, inrun_overlap = None, None
    if cal_assigns:
        cal = meas[:len(cal_assigns)] + meas[nb:nb + len(cal_assigns)]
        fit = fit_plans(cal, tie=GLOO_TIE)
        inrun_theta = fit.theta
        inrun_overlap = fit_overlap(cal, fit.theta)
    again = None
    if a.repeat:
        re_meas, re_reports = measure_plans(assigns, work, topo, steps=a.steps, warmup=a.warmup,
                                            seed=a.seed, rounds=a.rounds, modes=(False, True))
        ne = len(assigns)
        again = {"serial": (re_meas[:ne], re_reports[0]), "pipelined": (re_meas[ne:], re_reports[1])}

    link = topo.host_groups[0].intra_host_link.type.value
    profiles = {"before": a.before, "after": a.after}
    if inrun_theta is not None:
        inrun = profile_at(inrun_theta, link, topo.host_groups[0].device.model)
        if inrun_overlap is not None:
            inrun = dataclasses.replace(inrun, coefficients=dataclasses.replace(
                inrun.coefficients, pipeline_overlap=inrun_overlap[0]))
        profiles["inrun"] = inrun
    ev = slice(len(cal_assigns), nb)
    rows, results = [], {}
    for mode, (ms, reps) in modes.items():
        pipelined = mode == "pipelined"
        meas_step = step_ms[mode][ev]
        busy_meas = [m.compute_ms.sum(1) + m.comm_ms.sum() for m in ms[ev]]
        res: dict[str, dict] = {}
        for pname, prof in profiles.items():
            for comp in Composition:
                cm = default_cost_model(work, topo, profile=prof, options=CostModelOptions(
                    pipelined=pipelined, composition=comp))
                est_step, errs = [], []
                for i, asg in enumerate(assigns):
                    costs = rank_costs(asg, topo, cm)
                    lanes = np.array([c.perf.as_tuple() for c in costs])
                    est_step.append(makespan_of(costs, cm))
                    est_busy = _busy_estimates(lanes, cm.step)
                    for rk in range(topo.world_size):
                        errs.append(abs(est_busy[rk] - busy_meas[i][rk]) / busy_meas[i][rk])
                        if pname == "after" and comp is Composition.SYNCHRONIZED:
                            rows.append({"plan": i, "mode": mode, "rank": rk,
                                         "mix": "+".join(sorted({o.sharding_type.short
                                                                 for o in asg.options})),
                                         "measured_step_ms": meas_step[i],
                                         "estimated_step_ms": est_step[i],
                                         "measured_busy_ms": busy_meas[i][rk],
                                         "estimated_busy_ms": est_busy[rk]})
                res[f"{pname}/{comp.value}"] = {
                    "kendall_tau": kendall_tau_b(est_step, meas_step),
                    "median_abs_rel_error": statistics.median(errs),
                    "step_median_abs_rel_error": statistics.median(
                        abs(e - m) / m for e, m in zip(est_step, meas_step))}
        entry = dict(res["after/synchronized"])
        entry.update({"plans": len(assigns), "profile": Path(a.after).name,
                      "composition": "synchronized", "all": res})
        if again is not None:
            ms2, reps2 = again[mode]
            step2 = [statistics.median(run[i].step_ms for run in reps2) for i in range(len(assigns))]
            b2 = [m.compute_ms.sum(1) + m.comm_ms.sum() for m in ms2]
            entry["noise"] = {
                "kendall_tau": kendall_tau_b(step2, meas_step),
                "median_abs_rel_error": statistics.median(
                    abs(x - y) / y for p1, p2 in zip(busy_meas, b2) for x, y in zip(p2, p1))}
        results[mode] = entry

    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    meta = {"date": dt.date.today().isoformat(), "topology": topo.name, "workload": work.name,
            "ranks": topo.world_size, "kernels": backend, "hardware": hardware_string(backend),
            "steps": a.steps, "warmup": a.warmup, "rounds": a.rounds, "clock": "virtual",
            "calibration_plans": len(cal_assigns), "run_s": round(run_s, 1),
            "command": "python bench/fidelity.py " + " ".join(argv if argv is not None
                                                               else sys.argv[1:]),
            "load_before": load_start, "load_after": _load()}
    (out / "fidelity.json").write_text(json.dumps({**results, "meta": meta}, indent=2,
                                                  sort_keys=True) + "\n", encoding="utf-8")
    with open(out / "fidelity.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]), lineterminator="\n")
        w.writeheader()
        for r in rows:
            w.writerow({k: (f"{v:.4f}" if isinstance(v, float) else v) for k, v in r.items()})
    md = [f"# Cost-model fidelity on {topo.name} ({work.name}), {meta['date']}", "",
          f"{len(assigns)} plans (1 planned + {len(assigns) - 1} random, the first third with RW, "
          f"DP and TWRW tables), {topo.world_size} gloo ranks as 2 hosts x 2, kernels {backend}, "
          f"virtual clock, medians of {a.steps} steps after {a.warmup} warm-up, median of "
          f"{a.rounds} interleaved rounds; executor run {run_s:.0f} s.", "",
          "| mode | profile | composition | Kendall tau (step time) | median error per rank "
          "(busy) | median error (step time) |", "|---|---|---|---|---|---|"]
    for mode in ("serial", "pipelined"):
        for key, v in results[mode]["all"].items():
            p, comp = key.split("/")
            md.append(f"| {mode} | {p} | {comp} | {v['kendall_tau']:.3f} | "
                      f"{v['median_abs_rel_error']:.1%} | {v['step_median_abs_rel_error']:.1%} |")
        if "noise" in results[mode]:
            nz = results[mode]["noise"]
            md.append(f"| {mode} | noise: second run vs first | | {nz['kendall_tau']:.3f} | "
                      f"{nz['median_abs_rel_error']:.1%} | |")
    md += ["", "Targets after calibration (pipelined, synchronized): tau >= 0.8, median error "
           "<= 20%. `before`: estimators/profiles/cpu.yaml (placeholder); `after`: the shipped "
           "calibrated profile; `inrun`: fitted in this run to the calibration plans.",
           f"Command: `{meta['command']}`", f"Machine load before: {load_start}; after: "
           f"{meta['load_after']} (the run's own processes count in it).", ""]
    (out / "fidelity.md").write_text("\n".join(md), encoding="utf-8")
    print("\n".join(md))
    print(f"wrote {out / 'fidelity.json'}, {out / 'fidelity.csv'} and {out / 'fidelity.md'}")
    return 0


def _load() -> str:
    try:
        return ", ".join(Path("/proc/loadavg").read_text().split()[:3]) + " (1/5/15 min)"
    except OSError:
        return "unknown"


if __name__ == "__main__":
    sys.exit(main())
