"""Fidelity of the cost model on inference plans (``python bench/fidelity.py --mode inference``).

Plans: the planner's own inference plan plus random ones (seeded, as ``bench/fidelity.py``),
of small-cpu in inference mode with its tables' dtypes cycling int8, int4, fp16, fp32, on
cpu-2x2 (4 gloo ranks as 2 hosts x 2). Each runs forward-only on the executor (``profile``,
virtual clock, pipelined input dist), ``--rounds`` interleaved rounds, median kept.

Estimates: the same assignments under the shipped calibrated profile (``after``:
estimators/profiles/cpu-gloo.yaml with its ``coefficients.inference`` section) and the
placeholder (``before``: estimators/profiles/cpu.yaml, no inference section: training
coefficients, no dequantisation term).

Metrics: Kendall tau-b between estimated and measured step time; median over (plan, rank) of
|estimated - measured| / measured busy time (compute plus the communication stages the rank
takes part in, each at its slowest participant). Writes
``bench/results/fidelity-inference.json`` and ``fidelity-inference.md``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from fidelity import RESULTS, ROOT, _busy_estimates, _load, kendall_tau_b

DTYPE_CYCLE = ("int8", "int4", "fp16", "fp32")


def inference_workload(work):
    """``work`` in inference mode, its tables' dtypes cycling :data:`DTYPE_CYCLE`."""
    from shardplan.types import DType, Mode

    tables = tuple(dataclasses.replace(t, dtype=DType(DTYPE_CYCLE[i % len(DTYPE_CYCLE)]))
                   for i, t in enumerate(work.tables))
    return dataclasses.replace(work, name=f"{work.name}-inference", mode=Mode.INFERENCE,
                               tables=tables)


def main_inference(a, argv) -> int:
    from shardplan import load_problem
    from shardplan.estimators import CostModelOptions, default_cost_model
    from shardplan.executor.calibrate import (
        _REQUIRE,
        hardware_string,
        measure_plans,
        random_assignments,
    )
    from shardplan.planner import plan as make_plan
    from shardplan.plans import assignment_of, makespan_of, rank_costs

    load_start = _load()
    topo, work = load_problem(a.topology, a.tables)
    work = inference_workload(work)
    planned = make_plan(work, topo, cost_model=default_cost_model(work, topo, profile=a.after))
    n_rand = a.plans - 1
    assigns = [assignment_of(planned)] + random_assignments(
        work, topo, n_rand, a.seed, require=_REQUIRE, share=(a.plans / 3) / max(n_rand, 1))
    t0 = time.perf_counter()
    meas, reports = measure_plans(assigns, work, topo, steps=a.steps, warmup=a.warmup,
                                  seed=a.seed, rounds=a.rounds, modes=(True,))
    run_s = time.perf_counter() - t0
    reps = reports[0]
    meas_step = [statistics.median(run[i].step_ms for run in reps) for i in range(len(assigns))]
    busy_meas = [m.compute_ms.sum(1) + m.comm_ms.sum() for m in meas]
    backend = reps[0][0].backend
    res, rows = {}, []
    for pname, prof in (("before", a.before), ("after", a.after)):
        cm = default_cost_model(work, topo, profile=prof, options=CostModelOptions(pipelined=True))
        est_step, errs = [], []
        for i, asg in enumerate(assigns):
            costs = rank_costs(asg, topo, cm)
            lanes = np.array([c.perf.as_tuple() for c in costs])
            est_step.append(makespan_of(costs, cm))
            est_busy = _busy_estimates(lanes, cm.step)
            for rk in range(topo.world_size):
                errs.append(abs(est_busy[rk] - busy_meas[i][rk]) / busy_meas[i][rk])
            if pname == "after":
                rows.append({"plan": i, "mix": "+".join(sorted({o.sharding_type.short
                                                                for o in asg.options})),
                             "measured_step_ms": round(meas_step[i], 4),
                             "estimated_step_ms": round(est_step[i], 4)})
        res[pname] = {"kendall_tau": kendall_tau_b(est_step, meas_step),
                      "median_abs_rel_error": statistics.median(errs),
                      "step_median_abs_rel_error": statistics.median(
                          abs(e - m) / m for e, m in zip(est_step, meas_step))}
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    meta = {"date": dt.date.today().isoformat(), "topology": topo.name, "workload": work.name,
            "dtypes": list(DTYPE_CYCLE), "ranks": topo.world_size, "plans": len(assigns),
            "kernels": backend, "hardware": hardware_string(backend), "steps": a.steps,
            "warmup": a.warmup, "rounds": a.rounds, "clock": "virtual", "pipelined": True,
            "run_s": round(run_s, 1), "profile": Path(a.after).name,
            "command": "python bench/fidelity.py " + " ".join(argv if argv is not None
                                                               else sys.argv[1:]),
            "load_before": load_start, "load_after": _load()}
    (out / "fidelity-inference.json").write_text(
        json.dumps({"inference": res, "plans": rows, "meta": meta}, indent=2, sort_keys=True)
        + "\n", encoding="utf-8")
    md = [f"# Cost-model fidelity on inference plans, {topo.name} ({work.name}), {meta['date']}",
          "", f"{len(assigns)} plans (1 planned + {len(assigns) - 1} random), tables' dtypes "
          f"cycling {', '.join(DTYPE_CYCLE)}, {topo.world_size} gloo ranks as 2 hosts x 2, "
          f"kernels {backend} (IntNBitTableBatchedEmbeddingBagsCodegen), forward only, "
          f"pipelined input dist, virtual clock, medians of {a.steps} steps after {a.warmup} "
          f"warm-up, median of {a.rounds} interleaved rounds; executor run {run_s:.0f} s.", "",
          "| profile | Kendall tau (step time) | median error per rank (busy) | "
          "median error (step time) |", "|---|---|---|---|"]
    for p, v in res.items():
        md.append(f"| {p} | {v['kendall_tau']:.3f} | {v['median_abs_rel_error']:.1%} | "
                  f"{v['step_median_abs_rel_error']:.1%} |")
    md += ["", "`before`: estimators/profiles/cpu.yaml (placeholder, no inference section); "
           "`after`: estimators/profiles/cpu-gloo.yaml with its `coefficients.inference` "
           "(`shardplan calibrate --mode inference`).", f"Command: `{meta['command']}`",
           f"Machine load before: {load_start}; after: {meta['load_after']}.", ""]
    (out / "fidelity-inference.md").write_text("\n".join(md), encoding="utf-8")
    print("\n".join(md))
    print(f"wrote {out / 'fidelity-inference.json'} and {out / 'fidelity-inference.md'}")
    return 0


__all__ = ["main_inference", "inference_workload", "ROOT", "RESULTS"]
