"""Head-to-head: shardplan's planner vs TorchRec's EmbeddingShardingPlanner, three yardsticks.

One command::

    .venv/bin/python bench/vs_torchrec.py --quick --dmp 10 --measure 10   # ~6 cases, 3 seeds
    .venv/bin/python bench/vs_torchrec.py                                 # every case, 8 seeds
    .venv/bin/python bench/vs_torchrec.py --case dcnv2 --case giants44    # prints only

For each case (workload x topology) it plans with both planners and judges both plans by:

1. our cost model (``makespan_ms``);
2. TorchRec's own estimators on the plans' exact shards (``trmodel_ms``: the max over ranks of
   TorchRec's ``Perf.total``, ``trcrit_ms``: its critical-path estimate;
   ``shardplan.torchrec_interop.cost_under_torchrec``); and ``trmodel32_ms``, the same with
   the pooled embeddings' collectives at the FP32 that TorchRec's runtime sends (its
   estimator prices them at the table's storage dtype: ``comm_dtype="fp32"``);
3. on CPU cases, measured step times: our executor (``--measure STEPS``) and TorchRec's
   ``DistributedModelParallel`` on gloo (``--dmp STEPS``: ``ours_dmp_ms``, ``torchrec_dmp_ms``,
   the plans interleaved, medians after warm-up). DMP has no gloo path for row-wise: where our
   plan is RW, ``ours_norw_dmp_ms`` is our planner with RW/grid ruled out.

TorchRec's plan depends on PYTHONHASHSEED, so its planner runs once per seed, each in a
subprocess with the variable set, cached under ``bench/results/vs_torchrec/seeds/`` keyed by
case, inputs hash, seed and timeout (the assignment only, re-costed on later runs;
``--rerun-torchrec`` ignores the cache). The TorchRec plan compared is the seed's plan that
TorchRec's own model rates best; the spread over seeds and the number of distinct mixes are
reported. ``ours_worse_under`` lists every yardstick under which our plan is worse.

Writes ``bench/results/vs_torchrec.{csv,md}`` (all cases) or ``vs_torchrec-quick.{csv,md}``.
Planning times are wall-clock (and process CPU) on whatever machine runs this.
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
from shardplan.plans import assignment_of, build_plan, check_plan, inputs_sha256
from shardplan.types import (
    Assignment,
    DType,
    Placement,
    PlacementKind,
    Plan,
    ShardingOption,
    ShardingType,
    ShardSpec,
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


def _skewed_giants_small() -> tuple[Workload, Topology]:
    """A small variant of bench/hard_cases.py ``skewed_giants`` (TorchRec's planner is slow on a
    2-core box): four 40M x 128 giants (pooling 80-150, Zipf 1.05 over frequency-ordered ids)
    among 40 synthetic tables, per-rank batch 512, on 1 x 8 H100."""
    from shardplan.types import AccessSkew, IdOrder, TableSpec

    pool = [80.0, 100.0, 120.0, 150.0]
    giants = tuple(TableSpec(name=f"giant{i}", num_embeddings=40_000_000, embedding_dim=128,
                             pooling_factor=pool[i],
                             access=AccessSkew(zipf_exponent=1.05, id_order=IdOrder.FREQUENCY))
                   for i in range(4))
    rest = synthetic_workload(40, seed=0, max_rows=10**7).tables
    return Workload(name="skewed-giants-44", tables=giants + rest, batch_size=512), _h100(1)


def _synthetic_cpu(n: int, ranks: int) -> Callable[[], tuple[Workload, Topology]]:
    """``n`` small synthetic tables (<= 100k rows: they fit a CPU process) on cpu-``ranks``."""
    def make() -> tuple[Workload, Topology]:
        w = synthetic_workload(n, seed=2, batch_size=256, max_rows=100_000,
                               name=f"synthetic-{n}-cpu")
        # one optimizer for all tables: our executor and the DMP run take one
        # and fp32 (TorchRec's CPU training kernel does not take int8 tables)
        tabs = tuple(dataclasses.replace(t, optimizer=None, dtype=DType.FP32) for t in w.tables)
        return dataclasses.replace(w, tables=tabs), load_topology(f"cpu-{ranks}")
    return make


CASES.update({
    "syn24cpu4": ("synthetic 24 small tables on cpu-4", _synthetic_cpu(24, 4)),
    "syn200x16": ("production-like: synthetic 200 tables, 16 ranks", _synthetic(200, 2)),
    "syn300x8": ("production-like: synthetic 300 tables, 8 ranks", _synthetic(300, 1)),
    "giants44": ("skewed giants: 4 x 40M-row Zipf tables + 40, 8 ranks", _skewed_giants_small),
})
TORCHREC_TIMEOUT_S.update({"syn200x16": 240, "syn300x8": 240})
QUICK_CASES = ("small-cpu", "small-cpu4", "syn24cpu4", "dcnv2", "giants44", "syn200x16")
# giants44 finishes in seconds; syn200x16's planner needs about 190 CPU s (2026-12-03): a 60 s
# cut made its planning time, and so our speed-up, look 3x smaller than it is
QUICK_TIMEOUT_S = {"syn200x16": 240, "giants44": 60}
SEEDS = (0, 1, 2, 3, 4, 5, 6, 7)
QUICK_SEEDS = (0, 1, 2)
MEASURE_ROUNDS = 3  # interleaved rounds of our executor's measurement (ABBA order)
SEED_CACHE = CACHE / "seeds"


def _assignment_json(plan: Plan) -> list[dict[str, object]]:
    a = assignment_of(plan)
    return [{"table": o.table, "type": o.sharding_type.value, "placement": o.placement.kind.value,
             "cache_ratio": o.placement.cache_ratio,
             "shards": [[s.row_offset, s.num_rows, s.col_offset, s.num_cols] for s in o.shards],
             "ranks": list(rs)} for o, rs in zip(a.options, a.ranks)]


def _assignment_from_json(rows: list[dict[str, object]]) -> Assignment:
    opts, ranks = [], []
    for r in rows:
        shards = tuple(ShardSpec(row_offset=a, num_rows=b, col_offset=c, num_cols=d)
                       for a, b, c, d in r["shards"])
        opts.append(ShardingOption(table=r["table"], sharding_type=ShardingType(r["type"]),
                                   placement=Placement(kind=PlacementKind(r["placement"]),
                                                       cache_ratio=r["cache_ratio"]),
                                   shards=shards, candidate_ranks=(None,) * len(shards)))
        ranks.append(tuple(r["ranks"]))
    return Assignment(options=tuple(opts), ranks=tuple(ranks))


def _torchrec_worker(case: str, timeout_s: int | None) -> int:
    """Child process: TorchRec's planner on ``case`` under this process's PYTHONHASHSEED;
    prints one JSON line (the assignment only, not the plan)."""
    from shardplan.torchrec_interop import plan_with_torchrec

    work, topo = CASES[case][1]()
    try:
        plan, seconds = plan_with_torchrec(work, topo, timeout_s=timeout_s)
    except InfeasiblePlanError as exc:
        print(json.dumps({"infeasible": exc.message}))
        return 0
    print(json.dumps({"seconds": round(seconds, 3),
                      "planner_cpu_s": plan.provenance.solver_options.get("planner_cpu_s"),
                      "assignment": _assignment_json(plan)}))
    return 0


def torchrec_seed_plan(case: str, seed: int, work: Workload, topo: Topology, rerun: bool,
                       timeout_s: int | None) -> tuple[Plan | None, dict[str, object], str]:
    """TorchRec's plan for ``case`` with PYTHONHASHSEED=``seed`` (run in a subprocess, cached
    by inputs hash, seed and timeout), re-costed under our current model; its cache entry."""
    import subprocess

    SEED_CACHE.mkdir(parents=True, exist_ok=True)
    path = SEED_CACHE / f"{case}.seed{seed}.json"
    sha = inputs_sha256(work, topo)
    meta = json.loads(path.read_text()) if path.exists() and not rerun else None
    note = "cached"
    if meta is None or meta.get("inputs_sha256") != sha or meta.get("timeout_s") != timeout_s:
        env = dict(os.environ, PYTHONHASHSEED=str(seed))
        cmd = [sys.executable, __file__, "--_torchrec-worker", case]
        if timeout_s is not None:
            cmd += ["--_timeout", str(timeout_s)]
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
        lines = [ln for ln in done.stdout.splitlines() if ln.startswith("{")]
        if done.returncode != 0 or not lines:
            raise RuntimeError(f"TorchRec worker for {case} seed {seed} failed:\n"
                               f"{done.stderr[-3000:]}")
        meta = json.loads(lines[-1])
        meta.update({"inputs_sha256": sha, "seed": seed, "timeout_s": timeout_s,
                     "measured_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
        path.write_text(json.dumps(meta, indent=1) + "\n")
        note = "run"
    if "infeasible" in meta:
        return None, meta, "infeasible"
    plan = build_plan(workload=work, topology=topo, cost_model=default_cost_model(work, topo),
                      assignment=_assignment_from_json(meta["assignment"]), solver="torchrec",
                      solve_time_s=meta["seconds"])
    limit = meta.get("timeout_s")
    if limit and meta["seconds"] >= limit:
        note += f", hit its {limit} s timeout"
    return plan, meta, note


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


def measure(ours: Plan | None, theirs: Plan | None, steps: int,
            rounds: int = MEASURE_ROUNDS) -> tuple[float | None, float | None]:
    """Measured step time (ms, the slowest rank's median) of both plans on our CPU executor,
    in one launch of the processes: ``rounds`` interleaved rounds in ABBA order (ours, theirs;
    theirs, ours; ...), so that a drift in the machine's load falls on both; per plan the
    median over rounds. None where a plan is missing."""
    from shardplan.executor.api import profile_plans

    plans = [p for p in (ours, theirs) if p is not None]
    if not plans:
        return None, None
    order = [i for r in range(rounds)
             for i in (range(len(plans)) if r % 2 == 0 else reversed(range(len(plans))))]
    try:
        reports = profile_plans([plans[i] for i in order], steps=steps,
                                warmup=max(2, steps // 5))
    except shardplan.PlanError as exc:  # a workload our executor cannot run
        print(f"  our executor cannot run it: {exc}", file=sys.stderr, flush=True)
        return None, None
    per_plan: dict[int, list[float]] = {i: [] for i in range(len(plans))}
    for i, rep in zip(order, reports):
        per_plan[i].append(rep.measured_makespan_ms)
    medians = iter(round(statistics.median(per_plan[i]), 4) for i in range(len(plans)))
    return tuple(next(medians) if p is not None else None
                 for p in (ours, theirs))  # type: ignore[return-value]


def _dmp_variant(work: Workload, topo: Topology) -> Plan | None:
    """Our plan with row-wise and grid ruled out (TorchRec's DMP has no gloo path for them),
    so that DMP can run a plan of ours where our first choice is row-wise."""
    from shardplan.torchrec_interop.dmp import DMP_GLOO_SHARDING_TYPES

    allowed = tuple(t for t in ShardingType if t in DMP_GLOO_SHARDING_TYPES)
    tabs = tuple(dataclasses.replace(t, constraints=dataclasses.replace(
        t.constraints, sharding_types=tuple(x for x in (t.constraints.sharding_types or allowed)
                                            if x in allowed) or allowed)) for t in work.tables)
    try:
        return shardplan.plan(dataclasses.replace(work, tables=tabs), topo)
    except InfeasiblePlanError:
        return None


def _tr(plan: Plan | None, comm_dtype: str = "table") -> object:
    from shardplan.torchrec_interop import cost_under_torchrec

    return None if plan is None else cost_under_torchrec(plan, comm_dtype=comm_dtype)


def _pct(ours: float | None, theirs: float | None) -> float | None:
    """How much lower ours is than theirs, percent (negative: ours is worse)."""
    if ours is None or theirs is None or theirs <= 0:
        return None
    return round(100 * (1 - ours / theirs), 1)


def _mix(plan: Plan | None) -> str:
    from shardplan.compare import mix_label

    return "" if plan is None else mix_label(plan)


def run_case(case: str, rerun: bool, seeds: tuple[int, ...], measure_steps: int = 0,
             dmp_steps: int = 0, timeouts: dict[str, int] | None = None) -> dict[str, object]:
    from shardplan.torchrec_interop import infer_compute_device
    from shardplan.torchrec_interop.dmp import dmp_unsupported_reason, time_under_dmp

    label, make = CASES[case]
    work, topo = make()
    ours, our_s, our_cpu_s = our_plan(work, topo)
    timeout = (timeouts or TORCHREC_TIMEOUT_S).get(case)
    draws = []  # (seed, plan, meta, note, TorchRec-model cost)
    for seed in seeds:
        print(f"  torchrec seed {seed} ...", file=sys.stderr, flush=True)
        plan, meta, note = torchrec_seed_plan(case, seed, work, topo, rerun, timeout)
        draws.append((seed, plan, meta, note, _tr(plan)))
    ok = [d for d in draws if d[1] is not None]
    # TorchRec's plan here: the seed whose plan TorchRec's own model rates best
    best = min(ok, key=lambda d: (d[4].max_perf_ms, d[0])) if ok else None
    theirs = best[1] if best else None
    their_s = statistics.median(float(d[2]["seconds"]) for d in draws) if draws else 0.0
    cpu = [d[2].get("planner_cpu_s") for d in draws if d[2].get("planner_cpu_s") is not None]
    their_cpu_s = statistics.median(cpu) if cpu else None
    ours_tr, theirs_tr = _tr(ours), (best[4] if best else None)
    # the same estimators with the pooled embeddings' collectives at the FP32 the runtime sends
    ours_tr32, theirs_tr32 = _tr(ours, "fp32"), _tr(theirs, "fp32")
    spread = [d[4].max_perf_ms for d in ok]
    row: dict[str, object] = {
        "case": case, "description": label, "tables": len(work.tables), "ranks": topo.world_size,
        "ours_plan_s": round(our_s, 3), "torchrec_plan_s": round(their_s, 2),
        "ours_cpu_s": round(our_cpu_s, 3), "torchrec_cpu_s": their_cpu_s,
        "plan_speedup_x": round(their_s / our_s, 1) if our_s > 0 else None,
        "ours_makespan_ms": None if ours is None else ours.summary.makespan_ms,
        "torchrec_makespan_ms": None if theirs is None else theirs.summary.makespan_ms,
        "makespan_gain_pct": _pct(ours and ours.summary.makespan_ms,
                                  theirs and theirs.summary.makespan_ms),
        "ours_trmodel_ms": None if ours_tr is None else round(ours_tr.max_perf_ms, 6),
        "torchrec_trmodel_ms": None if theirs_tr is None else round(theirs_tr.max_perf_ms, 6),
        "trmodel_gain_pct": _pct(ours_tr and ours_tr.max_perf_ms,
                                 theirs_tr and theirs_tr.max_perf_ms),
        "ours_trmodel32_ms": None if ours_tr32 is None else round(ours_tr32.max_perf_ms, 6),
        "torchrec_trmodel32_ms": (None if theirs_tr32 is None
                                  else round(theirs_tr32.max_perf_ms, 6)),
        "trmodel32_gain_pct": _pct(ours_tr32 and ours_tr32.max_perf_ms,
                                   theirs_tr32 and theirs_tr32.max_perf_ms),
        "ours_trcrit_ms": None if ours_tr is None else round(ours_tr.critical_path_ms, 6),
        "torchrec_trcrit_ms": None if theirs_tr is None else round(theirs_tr.critical_path_ms, 6),
        "ours_peak_hbm_gib": _peak_hbm_gib(ours), "torchrec_peak_hbm_gib": _peak_hbm_gib(theirs),
        "ours_fits": _fits(ours), "torchrec_fits": _fits(theirs),
        "seeds": len(seeds), "best_seed": best[0] if best else None,
        "torchrec_trmodel_spread": (f"{min(spread):.4g}..{max(spread):.4g}" if spread else ""),
        "torchrec_mixes": len({_mix(d[1]) for d in ok}),
        "ours_solver": None if ours is None else ours.summary.solver,
        "ours_mix": _mix(ours), "torchrec_mix": _mix(theirs),
        "seed_mixes": "; ".join(f"{d[0]}: {_mix(d[1]) or 'infeasible'} "
                                f"({d[4].max_perf_ms:.4g} ms)" if d[4] else f"{d[0]}: infeasible"
                                for d in draws),
        "torchrec_run": ", ".join(sorted({d[3] for d in draws})),
    }
    row["ours_measured_ms"] = row["torchrec_measured_ms"] = None
    row["ours_dmp_ms"] = row["torchrec_dmp_ms"] = row["ours_norw_dmp_ms"] = None
    row["dmp_note"] = ""
    cpu_case = infer_compute_device(topo) == "cpu"
    if measure_steps and cpu_case:
        row["ours_measured_ms"], row["torchrec_measured_ms"] = measure(ours, theirs, measure_steps)
    if dmp_steps and cpu_case and ours is not None and theirs is not None:
        variant = _dmp_variant(work, topo) if dmp_unsupported_reason(ours) else None
        plans = [ours, theirs] + ([variant] if variant is not None else [])
        try:
            times = time_under_dmp(plans, steps=dmp_steps)
        except shardplan.ShardplanError as exc:  # report it in the table, keep the other cases
            times = [None] * len(plans)
            row["dmp_note"] = f"DMP run failed: {str(exc).splitlines()[-1][:200]}"
            print(f"  {exc}", file=sys.stderr, flush=True)
        times = [None if t is None else round(t, 3) for t in times]
        row["ours_dmp_ms"], row["torchrec_dmp_ms"] = times[0], times[1]
        if variant is not None:
            row["ours_norw_dmp_ms"] = times[2]
            row["dmp_note"] = row["dmp_note"] or (f"ours: {dmp_unsupported_reason(ours)}; ours_norw: our planner "
                               f"with RW/grid ruled out ({_mix(variant)})")
    worse = []
    for name, a, b in (("our model", row["ours_makespan_ms"], row["torchrec_makespan_ms"]),
                       ("TorchRec's model", row["ours_trmodel_ms"], row["torchrec_trmodel_ms"]),
                       ("our executor", row["ours_measured_ms"], row["torchrec_measured_ms"]),
                       ("DMP", row["ours_dmp_ms"] if row["ours_dmp_ms"] is not None
                        else row["ours_norw_dmp_ms"], row["torchrec_dmp_ms"])):
        if a is not None and b is not None and a > b:
            worse.append(f"{name} (+{100 * (a / b - 1):.0f}%)")
    row["ours_worse_under"] = ", ".join(worse) or "-"
    return row


COLUMNS = ["case", "tables", "ranks", "ours_plan_s", "torchrec_plan_s", "plan_speedup_x",
           "ours_cpu_s", "torchrec_cpu_s",
           "ours_makespan_ms", "torchrec_makespan_ms", "makespan_gain_pct",
           "ours_trmodel_ms", "torchrec_trmodel_ms", "trmodel_gain_pct",
           "ours_trmodel32_ms", "torchrec_trmodel32_ms", "trmodel32_gain_pct",
           "ours_trcrit_ms", "torchrec_trcrit_ms",
           "ours_measured_ms", "torchrec_measured_ms",
           "ours_dmp_ms", "torchrec_dmp_ms", "ours_norw_dmp_ms",
           "seeds", "best_seed", "torchrec_trmodel_spread", "torchrec_mixes",
           "ours_peak_hbm_gib", "torchrec_peak_hbm_gib", "ours_fits", "torchrec_fits",
           "ours_worse_under", "torchrec_run"]
EXTRA = ["description", "ours_solver", "ours_mix", "torchrec_mix", "seed_mixes", "dmp_note"]


def write_results(rows: list[dict[str, object]], stem: str, command: str, seeds: tuple[int, ...],
                  measure_steps: int, dmp_steps: int) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    all_cols = COLUMNS + EXTRA
    with open(RESULTS / f"{stem}.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=all_cols, lineterminator="\n")
        w.writeheader()
        for r in rows:
            w.writerow({k: r.get(k) for k in all_cols})
    lines = [
        "# shardplan vs TorchRec's EmbeddingShardingPlanner, three yardsticks",
        "",
        f"Command: `{command}`. Machine: {platform.machine()}, {os.cpu_count()} CPUs (shared "
        f"with other jobs), Python {platform.python_version()}, "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.",
        "",
        f"- TorchRec's planner ran once per PYTHONHASHSEED in {list(seeds)} (its plan depends on "
        "it), each in a subprocess, cached in bench/results/vs_torchrec/seeds/ (assignment "
        "only). The TorchRec plan compared is the seed's plan that TorchRec's own model rates "
        "best (`best_seed`); `torchrec_trmodel_spread` is min..max of that rating over the "
        "seeds, `torchrec_mixes` the number of distinct sharding mixes. torchrec_plan_s / "
        "_cpu_s: median over seeds (wall / process CPU seconds; the wall time includes waiting "
        "for a core).",
        "- makespan_ms: our cost model. trmodel_ms: TorchRec's estimators on the plan's exact "
        "shards (`cost_under_torchrec`: max over ranks of Perf.total); trcrit_ms: TorchRec's "
        "critical-path estimate. trmodel32_ms: the same estimators with the pooled "
        "embeddings' all-to-all and reduce-scatter at FP32, what TorchRec's training runtime "
        "sends (its estimator uses the table's storage dtype: 2 bytes for fp16 and int8 tables; "
        "`cost_under_torchrec(comm_dtype=\"fp32\")`, docs/torchrec.md; TorchRec's plan there "
        "is the same seed's, the one its own rating picks). "
        "gain_pct = 1 - ours/torchrec (negative: ours is worse).",
        f"- measured_ms: our CPU/gloo executor (per plan the median over {MEASURE_ROUNDS} "
        f"interleaved rounds, ABBA order, of the median of {measure_steps} steps)" if measure_steps
        else "- measured_ms: not run (--measure 0).",
        (f"- dmp_ms: TorchRec's DistributedModelParallel on gloo, the plans interleaved step by "
         f"step, median of {dmp_steps} steps after warm-up, slowest rank (barrier-timed). DMP has "
         "no gloo path for row-wise: where our plan is RW, ours_dmp_ms is empty and "
         "ours_norw_dmp_ms is our planner with RW/grid ruled out.") if dmp_steps
        else "- dmp_ms: not run (--dmp 0).",
        "- ours_worse_under: every yardstick under which our plan is worse than TorchRec's.",
        "",
        "| " + " | ".join(COLUMNS) + " |",
        "|" + "---|" * len(COLUMNS),
    ]
    for r in rows:
        lines.append("| " + " | ".join("" if r.get(c) is None else str(r.get(c))
                                       for c in COLUMNS) + " |")
    lines.append("")
    for r in rows:
        lines.append(f"- **{r['case']}**: {r['description']}. ours: {r['ours_mix']}; torchrec "
                     f"(seed {r['best_seed']}): {r['torchrec_mix']}. Per seed: {r['seed_mixes']}"
                     + (f". DMP: {r['dmp_note']}" if r.get("dmp_note") else ""))
    (RESULTS / f"{stem}.md").write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--case", action="append", choices=sorted(CASES),
                    help="run only these cases (repeatable); default: all")
    ap.add_argument("--quick", action="store_true",
                    help=f"cases {', '.join(QUICK_CASES)}, seeds {list(QUICK_SEEDS)}, TorchRec "
                    "timeouts cut; writes vs_torchrec-quick.*")
    ap.add_argument("--seeds", type=int, default=None, metavar="N",
                    help="run TorchRec's planner with PYTHONHASHSEED 0..N-1 (default: 8, "
                    "quick: 3)")
    ap.add_argument("--rerun-torchrec", action="store_true",
                    help="re-run TorchRec's planner even where a cached result exists")
    ap.add_argument("--no-write", action="store_true", help="print only; write no results")
    ap.add_argument("--measure", type=int, default=0, metavar="STEPS",
                    help="also measure both plans' step time on our executor (CPU/gloo cases "
                    "only), median of STEPS steps; 0: do not")
    ap.add_argument("--dmp", type=int, default=0, metavar="STEPS",
                    help="also time both plans under TorchRec's DMP on gloo (CPU cases), "
                    "interleaved, median of STEPS steps after warm-up; 0: do not")
    ap.add_argument("--_torchrec-worker", dest="worker", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--_timeout", dest="worker_timeout", type=int, default=None,
                    help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        return _torchrec_worker(args.worker, args.worker_timeout)
    cases = args.case or (list(QUICK_CASES) if args.quick else list(CASES))
    base = QUICK_SEEDS if args.quick else SEEDS
    seeds = tuple(range(args.seeds)) if args.seeds else base
    timeouts = dict(TORCHREC_TIMEOUT_S, **QUICK_TIMEOUT_S) if args.quick else TORCHREC_TIMEOUT_S
    rows = []
    for case in cases:
        print(f"[{time.strftime('%H:%M:%S')}] {case} ...", file=sys.stderr, flush=True)
        rows.append(run_case(case, args.rerun_torchrec, seeds, args.measure, args.dmp, timeouts))
        r = rows[-1]
        print("  " + ", ".join(f"{k}={r[k]}" for k in COLUMNS[1:]), file=sys.stderr, flush=True)
    print("| " + " | ".join(COLUMNS) + " |")
    for r in rows:
        print("| " + " | ".join("" if r.get(c) is None else str(r.get(c)) for c in COLUMNS) + " |")
    if not args.no_write and (args.case is None or args.quick):
        command = ".venv/bin/python bench/vs_torchrec.py " + " ".join(argv or sys.argv[1:])
        write_results(rows, "vs_torchrec-quick" if args.quick else "vs_torchrec",
                      command.strip(), seeds, args.measure, args.dmp)
    return 0


if __name__ == "__main__":
    sys.exit(main())
