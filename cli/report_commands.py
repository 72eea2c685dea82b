"""Commands that look at plans: report, compare, explain, sweep, export."""

from __future__ import annotations

import csv
import dataclasses
import importlib
import io
import json
import math
import re
import sys
from pathlib import Path
from typing import Annotated, Any, Callable, Optional, Sequence

import numpy as np
import typer
from rich import box
from rich.table import Table

from shardplan.cli.app import app, console, handle_errors
from shardplan.cli.commands import check_solver_name, plan_with_progress, reflow_doc
from shardplan.enumerators import enumerate_options, enumerate_table
from shardplan.errors import InfeasiblePlanError, SolverError, SpecError
from shardplan.loaders import DEFAULT_TOPOLOGY, load_problem
from shardplan.plans import load_plan, option_of, plan_to_json, rank_costs, save_plan
from shardplan.solvers import DEFAULT_SOLVER, SOLVERS
from shardplan.types import (
    Assignment,
    CostModel,
    Plan,
    ShardingOption,
    ShardingType,
    TableConstraints,
    TablePlan,
)

GiB = 2**30


def _write(path: Path, data: str | bytes) -> None:
    try:
        if isinstance(data, bytes):
            path.write_bytes(data)
        else:
            path.write_text(data, encoding="utf-8")
    except OSError as exc:
        raise SpecError(f"cannot write: {exc.strerror}", source=str(path)) from None


def _names(text: str, what: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise SpecError(f"{what} needs at least one name, comma-separated", key_path=what)
    if len(set(names)) != len(names):
        raise SpecError(f"{what} names a planner twice: {text!r}", key_path=what)
    return names


# ---------------------------------------------------------------------------------------------
# report
# ---------------------------------------------------------------------------------------------


@app.command("report")
@handle_errors
@reflow_doc
def report_cmd(
    plan_file: Annotated[Path, typer.Argument(metavar="PLAN", help="A plan JSON written by "
                                              "`shardplan solve`.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for report.html and the "
                                      "PNGs (created if missing).")] = Path("report"),
    top: Annotated[int, typer.Option(help="Tables drawn one row each in the placement map; "
                                     "the rest are grouped.")] = 40,
) -> None:
    """Write one self-contained HTML report (plots embedded, opens offline) plus the PNGs.

    Plots: per-rank stacked time with makespan and lower bound; per-rank memory by tier
    against capacity; a placement map of the largest tables; the sharding-type mix. Then the
    per-rank table.

    Examples:

      shardplan report plan.json

      shardplan report plan.json --out reports/dcnv2 --top 20
    """
    from shardplan.report import write_report

    if top < 1:
        raise SpecError(f"--top must be >= 1, got {top}", key_path="--top")
    p = load_plan(plan_file)
    files = write_report(p, out, top=top)
    console.print(f"wrote {files.html}")
    for name, path in files.images.items():
        console.print(f"  {name}: {path}")


# ---------------------------------------------------------------------------------------------
# export
# ---------------------------------------------------------------------------------------------

EXPORT_FORMATS = ("json", "csv", "torchrec")


def torchrec_function(name: str) -> Callable[..., Any]:
    """``shardplan.torchrec_interop.<name>``, or SpecError when TorchRec support is missing."""
    try:
        torchrec_interop = importlib.import_module("shardplan.torchrec_interop")
    except ImportError as exc:
        raise SpecError(f"TorchRec support is not installed ({exc}); install shardplan"
                        "[torchrec] (see scripts/setup.sh)") from None
    fn = getattr(torchrec_interop, name, None)
    if fn is None:
        raise SpecError(f"TorchRec support is not available in this shardplan "
                        f"(shardplan.torchrec_interop has no {name})")
    return fn


@app.command("export")
@handle_errors
@reflow_doc
def export_cmd(
    plan_file: Annotated[Path, typer.Argument(metavar="PLAN", help="A plan JSON.")],
    fmt: Annotated[str, typer.Option("--format", "-f", help="json (the plan), csv (one row "
                                     "per shard) or torchrec (a TorchRec ShardingPlan as "
                                     "JSON).")] = "json",
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Output file; standard "
                                                "output if left out.")] = None,
) -> None:
    """Export a plan as JSON, as CSV (one row per shard) or as a TorchRec sharding plan.

    Examples:

      shardplan export plan.json --format csv --out shards.csv

      shardplan export plan.json --format torchrec > torchrec_plan.json
    """
    if fmt not in EXPORT_FORMATS:
        raise SpecError(f"unknown format {fmt!r}; choose one of {', '.join(EXPORT_FORMATS)}",
                        key_path="--format")
    p = load_plan(plan_file)
    if fmt == "json":
        text = plan_to_json(p)
    elif fmt == "csv":
        text = p.shard_frame().to_csv(index=False, lineterminator="\n")
    else:
        export = torchrec_function("export_torchrec")
        text = json.dumps(export(p), indent=2, sort_keys=True) + "\n"
    if out is None:
        sys.stdout.write(text)
        sys.stdout.flush()
    else:
        _write(out, text)
        console.print(f"wrote {out} ({fmt})")


# ---------------------------------------------------------------------------------------------
# compare
# ---------------------------------------------------------------------------------------------

COMPARE_WITH = ("torchrec",)


@app.command("compare")
@handle_errors
@reflow_doc
def compare_cmd(
    topology: Annotated[str, typer.Argument(
        help="Topology YAML file or bundled name.")] = DEFAULT_TOPOLOGY,
    tables: Annotated[Optional[Path], typer.Option("--tables", "-t",
                                                   help="Workload YAML or CSV.")] = None,
    solvers: Annotated[Optional[str], typer.Option(
        "--solvers", "-s", help="Comma-separated solver names (default: every registered "
        "solver): " + ", ".join(sorted(SOLVERS)) + ".")] = None,
    with_: Annotated[Optional[str], typer.Option(
        "--with", help="Also plan with another planner: torchrec (needs TorchRec).")] = None,
    time_limit: Annotated[float, typer.Option(help="Time budget per solver, seconds.")] = 30.0,
    out: Annotated[Optional[Path], typer.Option(
        "--out", "-o", help="Folder for compare.png, compare.csv and one plan JSON per "
        "planner.")] = None,
    measure: Annotated[int, typer.Option(
        "--measure", min=0, help="Also run every plan on the local executor (gloo; CPU "
        "topologies such as cpu-2, cpu-4) and show its measured step time: the median of "
        "this many steps (0: do not measure).")] = 0,
) -> None:
    """Plan one workload with several solvers and show the plans side by side.

    A solver that finds no plan is listed as infeasible; the exit code is 2 only when none
    does.

    Examples:

      shardplan compare dgx-h100-2x8 --solvers greedy,size-greedy,size-lookup-greedy

      shardplan compare h100-16x8 -t w500.yaml -s greedy,ilp --time-limit 60 --out cmp/

      shardplan compare cpu-4 --with torchrec --measure 20
    """
    from shardplan.frames import headroom
    from shardplan.report import CompareRow, compare_figure, gap_percent, make_out_dir, png_bytes

    if not math.isfinite(time_limit) or time_limit <= 0:
        raise SpecError(f"--time-limit must be > 0 seconds, got {time_limit}")
    names = _names(solvers, "--solvers") if solvers is not None else sorted(SOLVERS)
    names = [check_solver_name(n, "--solvers") for n in names]
    if len(set(names)) != len(names):
        raise SpecError(f"--solvers names a solver twice: {solvers!r}", key_path="--solvers")
    others = _names(with_, "--with") if with_ else []
    for o in others:
        if o not in COMPARE_WITH:
            raise SpecError(f"unknown planner {o!r} for --with; choose {', '.join(COMPARE_WITH)}",
                            key_path="--with")
    plan_torchrec = torchrec_function("plan_with_torchrec") if "torchrec" in others else None
    topo, work = load_problem(topology, tables)
    if work is None:
        raise SpecError("no workload; pass --tables FILE")
    if measure and any(g.device.model != "CPU" for g in topo.host_groups):
        raise SpecError(f"--measure runs the plans on this machine's executor, so it needs a CPU "
                        f"topology (cpu-2, cpu-4); {topo.name} has "
                        f"{', '.join(sorted({g.device.model for g in topo.host_groups}))} devices",
                        key_path="--measure")
    out_dir = make_out_dir(out) if out is not None else None

    results: list[tuple[CompareRow, Plan | None]] = []
    for n in names:
        try:
            p = plan_with_progress(work, topo, solver=n, time_limit_s=time_limit,
                                   label=f"solving with {n}")
        except InfeasiblePlanError as exc:
            results.append((CompareRow(name=n, makespan_ms=None, lower_bound_ms=None,
                                       solve_time_s=0.0, status="infeasible",
                                       note=exc.message), None))
            continue
        except SolverError as exc:
            results.append((CompareRow(name=n, makespan_ms=None, lower_bound_ms=None,
                                       solve_time_s=0.0, status="failed", note=str(exc)), None))
            continue
        results.append((CompareRow(name=n, makespan_ms=p.summary.makespan_ms,
                                   lower_bound_ms=p.summary.lower_bound_ms,
                                   solve_time_s=p.summary.solve_time_s, status=p.summary.status),
                        p))
    if plan_torchrec is not None:
        try:
            with console.status("planning with TorchRec's planner"):
                p, secs = plan_torchrec(work, topo)
            results.append((CompareRow(name="torchrec", makespan_ms=p.summary.makespan_ms,
                                       lower_bound_ms=None, solve_time_s=float(secs),
                                       status="feasible", note="TorchRec's planner, rated "
                                       "by our cost model"), p))
        except InfeasiblePlanError as exc:
            results.append((CompareRow(name="torchrec", makespan_ms=None, lower_bound_ms=None,
                                       solve_time_s=0.0, status="infeasible",
                                       note=exc.message), None))

    measured: dict[int, float] = {}
    if measure:
        from shardplan.executor.api import profile_plans

        done = [(i, p) for i, (_, p) in enumerate(results) if p is not None]
        with console.status(f"measuring {len(done)} plan(s) on {topo.world_size} gloo ranks"):
            reports = profile_plans([p for _, p in done], steps=measure,
                                    warmup=max(2, measure // 5))
        measured = {i: rep.measured_makespan_ms for (i, _), rep in zip(done, reports)}
    ok = [r.makespan_ms for r, _ in results if r.makespan_ms is not None]
    best = min(ok) if ok else None
    bounds = [r.lower_bound_ms for r, _ in results if r.lower_bound_ms]
    best_bound = max(bounds) if bounds else None
    t = Table(title=f"{work.name} on {topo.name}: {len(work.tables)} tables, "
                    f"{topo.world_size} ranks", header_style="bold", box=box.SIMPLE_HEAD)
    t.caption = ("makespan and bound (lower bound) in ms; gap against the best bound any "
                 "planner proved; HBM %: the fullest rank; best makespan in bold")
    cols = ["planner", "status", "makespan", "bound", "gap %", "time s", "HBM %", "mix"]
    if measure:
        cols.insert(3, "measured")
        t.caption += f"; measured: step time on the executor, median of {measure} steps"
    for col in cols:
        t.add_column(col, justify="left" if col in ("planner", "status", "mix") else "right",
                     no_wrap=col != "mix", min_width=8 if col == "mix" else None)
    csv_rows = []
    for i, (r, p) in enumerate(results):
        if p is None:
            t.add_row(r.name, f"[red]{r.status}[/]", *(["-"] * (len(cols) - 3)), r.note[:60])
            csv_rows.append({"planner": r.name, "status": r.status, "makespan_ms": "",
                             "measured_ms": "", "lower_bound_ms": "", "gap_percent": "",
                             "solve_time_s": "", "hbm_max_used_fraction": "", "note": r.note})
            continue
        gap = gap_percent(r.makespan_ms, best_bound)
        hbm = headroom(p)
        hbm_full = next((h["max_used_fraction"] for tier, h in hbm.items()
                         if tier.value == "hbm"), 0.0)
        mix = " ".join(f"{ShardingType(k).short}:{v}"
                       for k, v in sorted(p.summary.sharding_mix.items()))
        cells = [r.name, r.status, f"{r.makespan_ms:.3f}"]
        if measure:
            cells.append(f"{measured[i]:.3f}")
        t.add_row(*cells, f"{r.lower_bound_ms:.3f}" if r.lower_bound_ms else "-",
                  f"{gap:.1f}" if gap is not None else "-", f"{r.solve_time_s:.2f}",
                  f"{hbm_full * 100:.1f}", mix,
                  style="bold" if r.makespan_ms == best else None)
        csv_rows.append({"planner": r.name, "status": r.status, "makespan_ms": r.makespan_ms,
                         "measured_ms": measured.get(i, ""),
                         "lower_bound_ms": r.lower_bound_ms or "",
                         "gap_percent": "" if gap is None else round(gap, 3),
                         "solve_time_s": r.solve_time_s, "hbm_max_used_fraction":
                         round(hbm_full, 6), "note": r.note})
    console.print(t)
    if out_dir is not None:
        rows = [r for r, _ in results]
        _write(out_dir / "compare.png", png_bytes(compare_figure(rows, f"{work.name} on "
                                                                       f"{topo.name}")))
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=list(csv_rows[0]), lineterminator="\n")
        w.writeheader()
        w.writerows(csv_rows)
        _write(out_dir / "compare.csv", buf.getvalue())
        for r, p in results:
            if p is not None:
                save_plan(p, out_dir / f"plan-{r.name}.json")
        console.print(f"wrote {out_dir}/compare.png, compare.csv and one plan per planner")
    if best is None:
        raise InfeasiblePlanError("no planner found a plan that fits: "
                                  + "; ".join(f"{r.name}: {r.note}" for r, _ in results))


# ---------------------------------------------------------------------------------------------
# sweep
# ---------------------------------------------------------------------------------------------


def parse_devices(text: str) -> list[int]:
    """``8,16,32`` (a list), ``8-64`` (doubling from 8 to 64) or ``8-64:8`` (step 8).

    Raises:
        SpecError: anything else, or a size below 1.
    """
    out: list[int] = []
    for part in (p.strip() for p in text.split(",")):
        m = re.fullmatch(r"(\d+)(?:-(\d+)(?::(\d+))?)?", part)
        if not m:
            raise SpecError(f"cannot read {part!r}; write 8,16,32 or 8-64 (doubling) or "
                            "8-64:8 (step 8)", key_path="--devices")
        lo = int(m.group(1))
        hi = int(m.group(2)) if m.group(2) else lo
        if lo < 1 or hi < lo:
            raise SpecError(f"{part!r}: sizes must be >= 1 and ranges go up", key_path="--devices")
        if m.group(3):
            step = int(m.group(3))
            if step < 1:
                raise SpecError(f"{part!r}: the step must be >= 1", key_path="--devices")
            out += list(range(lo, hi + 1, step))
        else:
            k = lo
            while k <= hi:
                out.append(k)
                k *= 2
    if len(out) > 64:
        raise SpecError(f"{len(out)} sizes is too many for one sweep (at most 64)",
                        key_path="--devices")
    return sorted(set(out))


@app.command("sweep")
@handle_errors
@reflow_doc
def sweep_cmd(
    topology: Annotated[str, typer.Argument(help="Topology YAML file or bundled name; its "
                                            "hosts are scaled.")] = DEFAULT_TOPOLOGY,
    devices: Annotated[str, typer.Option("--devices", "-d", help="Cluster sizes: 8,16,32 or "
                                         "8-64 (doubling) or 8-64:8 (step 8).")] = "8-64",
    tables: Annotated[Optional[Path], typer.Option("--tables", "-t",
                                                   help="Workload YAML or CSV.")] = None,
    solver: Annotated[str, typer.Option(help="Solver name.")] = DEFAULT_SOLVER,
    time_limit: Annotated[float, typer.Option(help="Time budget per size, seconds.")] = 30.0,
    target_ms: Annotated[Optional[float], typer.Option(
        "--target-ms",
        help="Also report the fewest devices whose makespan is at most this.")] = None,
    out: Annotated[Optional[Path], typer.Option(
        "--out", "-o", help="Folder for sweep.png and sweep.csv.")] = None,
) -> None:
    """Capacity planning: plan the workload on clusters of several sizes.

    Each size is the topology with its number of hosts scaled (devices per host, devices and
    links kept; several host groups scale in proportion). For each size: feasible or not, the
    makespan; then the fewest devices that fit and, with --target-ms, the fewest that meet
    the target. A per-rank batch size stays per rank. Exit code 2 when no size fits.

    Examples:

      shardplan sweep h100-16x8 --tables w500.yaml --devices 8,16,32,64

      shardplan sweep dgx-h100-2x8 --devices 8-128 --target-ms 3 --out sweep/
    """
    from shardplan.report import SweepRow, make_out_dir, png_bytes, scale_topology, sweep_figure

    if not math.isfinite(time_limit) or time_limit <= 0:
        raise SpecError(f"--time-limit must be > 0 seconds, got {time_limit}")
    if target_ms is not None and not (math.isfinite(target_ms) and target_ms > 0):
        raise SpecError(f"--target-ms must be > 0, got {target_ms}", key_path="--target-ms")
    solver = check_solver_name(solver)
    sizes = parse_devices(devices)
    topo, work = load_problem(topology, tables)
    if work is None:
        raise SpecError("no workload; pass --tables FILE")
    scaled = [(n, scale_topology(topo, n)) for n in sizes]  # all sizes checked before solving
    out_dir = make_out_dir(out) if out is not None else None

    rows: list[SweepRow] = []
    for n, t in scaled:
        try:
            p = plan_with_progress(work, t, solver=solver, time_limit_s=time_limit,
                                   label=f"{n} devices")
            rows.append(SweepRow(devices=n, hosts=t.num_hosts, makespan_ms=p.summary.makespan_ms,
                                 lower_bound_ms=p.summary.lower_bound_ms,
                                 solve_time_s=p.summary.solve_time_s))
        except InfeasiblePlanError as exc:
            rows.append(SweepRow(devices=n, hosts=t.num_hosts, makespan_ms=None,
                                 lower_bound_ms=None, solve_time_s=0.0, note=exc.message))
    tbl = Table(title=f"{work.name} ({len(work.tables)} tables) on {topo.name} scaled by hosts "
                      f"({solver})", header_style="bold", box=box.SIMPLE_HEAD)
    for col in ("devices", "hosts", "feasible", "makespan ms", "lower bound ms", "time s"):
        tbl.add_column(col, justify="right")
    for r in rows:
        ok = r.makespan_ms is not None
        meets = ok and target_ms is not None and r.makespan_ms <= target_ms
        tbl.add_row(str(r.devices), str(r.hosts), "yes" if ok else "[red]no[/]",
                    f"{r.makespan_ms:.3f}" if ok else "-",
                    f"{r.lower_bound_ms:.3f}" if r.lower_bound_ms else "-",
                    f"{r.solve_time_s:.2f}" if ok else "-", style="bold" if meets else None)
    console.print(tbl)
    fits = [r for r in rows if r.makespan_ms is not None]
    if fits:
        console.print(f"fewest devices that fit: [bold]{fits[0].devices}[/] "
                      f"(makespan {fits[0].makespan_ms:.3f} ms)")
    if target_ms is not None:
        meet = [r for r in fits if r.makespan_ms <= target_ms]
        if meet:
            console.print(f"fewest devices with makespan <= {target_ms:g} ms: "
                          f"[bold]{meet[0].devices}[/] ({meet[0].makespan_ms:.3f} ms)")
        else:
            console.print(f"no size tried meets {target_ms:g} ms; the best is "
                          + (f"{min(r.makespan_ms for r in fits):.3f} ms" if fits else "none")
                          + "; try more devices")
    if out_dir is not None:
        _write(out_dir / "sweep.png", png_bytes(sweep_figure(rows, target_ms,
                                                             f"{work.name} on {topo.name}")))
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(["devices", "hosts", "feasible", "makespan_ms", "lower_bound_ms",
                    "solve_time_s", "note"])
        for r in rows:
            w.writerow([r.devices, r.hosts, r.makespan_ms is not None,
                        "" if r.makespan_ms is None else r.makespan_ms,
                        r.lower_bound_ms or "", r.solve_time_s, r.note])
        _write(out_dir / "sweep.csv", buf.getvalue())
        console.print(f"wrote {out_dir}/sweep.png and sweep.csv")
    if not fits:
        raise InfeasiblePlanError(f"no cluster size tried ({', '.join(map(str, sizes))} devices) "
                                  f"fits the workload", suggestions=("try more devices",))


# ---------------------------------------------------------------------------------------------
# explain
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, kw_only=True, slots=True)
class OptionVerdict:
    """One sharding option of a table, weighed against the plan.

    Attributes:
        option: the option.
        work_ms: the time it adds, summed over all ranks (its shards plus its everywhere-cost).
        hbm_bytes, ddr_bytes: the memory it adds, summed over all ranks.
        makespan_ms: the plan's makespan if this option replaced the chosen one, its shards
            placed greedily (least-loaded rank with room), the rest of the plan unchanged;
            None when it does not fit or a constraint rules it out.
        verdict: ``chosen``, ``constraint``, ``memory``, ``higher cost`` or ``not better``
            (fits, no higher makespan, but the solver chose otherwise).
        reason: a sentence.
        alternatives: how many options of the same kind (e.g. one per host) this row stands for.
    """

    option: ShardingOption
    work_ms: float
    hbm_bytes: float
    ddr_bytes: float
    makespan_ms: float | None
    verdict: str
    reason: str
    alternatives: int = 1


def _shape_key(o: ShardingOption) -> tuple[Any, ...]:
    return (o.sharding_type, str(o.placement),
            tuple((s.row_offset, s.num_rows, s.col_offset, s.num_cols) for s in o.shards))


def _matches(o: ShardingOption, t: TablePlan) -> bool:
    if _shape_key(o) != _shape_key(option_of(t)):
        return False
    return all(c is None or s.rank in c for c, s in zip(o.candidate_ranks, t.shards))


def _constraint_reason(o: ShardingOption, c: TableConstraints) -> str:
    if c.sharding_types is not None and o.sharding_type not in c.sharding_types:
        return "sharding_types allows only " + ", ".join(s.value for s in c.sharding_types)
    if c.placements is not None and o.placement.kind not in c.placements:
        return "placements allows only " + ", ".join(p.value for p in c.placements)
    if c.pinned_ranks is not None:
        return f"pinned to ranks {_ranges(c.pinned_ranks)}; this type spreads over other ranks"
    if c.min_column_shard_width is not None:
        return f"min_column_shard_width {c.min_column_shard_width} rules out narrower shards"
    return "ruled out by the table's constraints"


def _ranges(ranks: Sequence[int]) -> str:
    """``0-3,8,10-11`` from a list of ranks."""
    rs = sorted(set(ranks))
    out, i = [], 0
    while i < len(rs):
        j = i
        while j + 1 < len(rs) and rs[j + 1] == rs[j] + 1:
            j += 1
        out.append(str(rs[i]) if i == j else f"{rs[i]}-{rs[j]}")
        i = j + 1
    return ",".join(out)


class _Weigher:
    """Rank loads of a plan without one table, and what each option of it would do."""

    def __init__(self, plan: Plan, table: TablePlan, cm: CostModel) -> None:
        topo = plan.topology
        self.cm = cm
        self.groups = np.array([ri.group for ri in topo.ranks])
        self.cap_hbm = np.array([topo.capacity(r).hbm for r in range(topo.world_size)])
        self.cap_ddr = np.array([topo.capacity(r).ddr for r in range(topo.world_size)])
        opts = tuple(option_of(t) for t in plan.tables)
        ranks = tuple(tuple(s.rank for s in t.shards) for t in plan.tables)
        costs = rank_costs(Assignment(options=opts, ranks=ranks), topo, cm)
        self.load = np.array([cm.total(c.perf) for c in costs])
        self.hbm = np.array([c.memory.hbm for c in costs])
        self.ddr = np.array([c.memory.ddr for c in costs])
        self.makespan = float(self.load.max())
        chosen = option_of(table)
        ev, sh = self._costs(chosen)
        self.load = self.load - ev[0]
        self.hbm = self.hbm - ev[1]
        self.ddr = self.ddr - ev[2]
        for i, s in enumerate(table.shards):
            t, h, d = sh[i]
            g = self.groups[s.rank]
            self.load[s.rank] -= t[g]
            self.hbm[s.rank] -= h[g]
            self.ddr[s.rank] -= d[g]

    def _costs(self, o: ShardingOption):
        """Everywhere-cost per rank (time, hbm, ddr arrays) and per shard per group."""
        ng = int(self.groups.max()) + 1
        ev = [self.cm.everywhere_cost(o, g) for g in range(ng)]
        ev_t = np.array([self.cm.total(e.perf) for e in ev])[self.groups]
        ev_h = np.array([e.memory.hbm for e in ev])[self.groups]
        ev_d = np.array([e.memory.ddr for e in ev])[self.groups]
        per_g = [self.cm.shard_costs(o, g) for g in range(ng)]
        shards = [(np.array([self.cm.total(per_g[g][i].perf) for g in range(ng)]),
                   np.array([per_g[g][i].memory.hbm for g in range(ng)]),
                   np.array([per_g[g][i].memory.ddr for g in range(ng)]))
                  for i in range(len(o.shards))]
        return (ev_t, ev_h, ev_d), shards

    def weigh(self, o: ShardingOption) -> tuple[float, float, float, float | None, str]:
        """(work ms, hbm bytes, ddr bytes, makespan or None, why it does not fit)."""
        (ev_t, ev_h, ev_d), shards = self._costs(o)
        work = float(ev_t.sum())
        load, hbm, ddr = self.load + ev_t, self.hbm + ev_h, self.ddr + ev_d
        work_hbm, work_ddr = float(ev_h.sum()), float(ev_d.sum())
        why = ""
        if (hbm > self.cap_hbm).any() or (ddr > self.cap_ddr).any():
            r = int(np.argmax(np.maximum(hbm - self.cap_hbm, ddr - self.cap_ddr)))
            why = (f"its per-rank buffers alone overflow rank {r} "
                   f"(HBM {hbm[r] / GiB:.2f} of {self.cap_hbm[r] / GiB:.2f} GiB)")
        n = len(self.groups)
        for i, (t, h, d) in enumerate(shards):
            cand = np.array(o.candidate_ranks[i] if o.candidate_ranks[i] is not None else range(n))
            g = self.groups[cand]
            work += float(t[g].min())
            work_hbm += float(h[g].min())
            work_ddr += float(d[g].min())
            if why:
                continue
            room = ((hbm[cand] + h[g] <= self.cap_hbm[cand])
                    & (ddr[cand] + d[g] <= self.cap_ddr[cand]))
            if not room.any():
                j = int(np.argmax(self.cap_hbm[cand] - hbm[cand]))
                r = int(cand[j])
                need_h, need_d = float(h[g][j]), float(d[g][j])
                if hbm[r] + need_h > self.cap_hbm[r]:
                    tier = ("HBM", need_h, self.cap_hbm[r] - hbm[r])
                else:
                    tier = ("DDR", need_d, self.cap_ddr[r] - ddr[r])
                why = (f"shard {i} needs {tier[1] / GiB:.2f} GiB {tier[0]}; the most free on "
                       f"its {len(cand)} candidate rank(s) is {max(tier[2], 0) / GiB:.2f} GiB "
                       f"(rank {r})")
                continue
            after = np.where(room, load[cand] + t[g], np.inf)
            j = int(np.argmin(after))
            r = int(cand[j])
            load[r] += t[g][j]
            hbm[r] += h[g][j]
            ddr[r] += d[g][j]
        return work, work_hbm, work_ddr, (None if why else float(load.max())), why


def explain_table(plan: Plan, table: str, cost_model: CostModel | None = None
                  ) -> tuple[list[OptionVerdict], float]:
    """Every sharding option of ``table``, weighed against ``plan``.

    Options are re-enumerated as the planner saw them (:func:`enumerate_options`), then
    without its pruning and with the table's constraints lifted, to show what the pruning
    ("not offered") and the constraints rule out; all are costed with
    ``cost_model`` (default: ``shardplan.estimators.default_cost_model`` for the plan's
    workload and topology). Options of one kind that differ only in their host (table-row-
    and table-column-wise) are folded into one row, the best of them (or the chosen one).

    Args:
        plan: the plan.
        table: a table name of the plan.
        cost_model: the cost model to weigh options with.

    Returns:
        The verdicts (chosen first, then by makespan) and the plan's makespan under the model.

    Raises:
        SpecError: no such table in the plan.
    """
    try:
        tp = plan.table(table)
        spec = plan.workload.table(table)
    except KeyError:
        names = [t.name for t in plan.tables]
        close = [n for n in names if table.lower() in n.lower()][:5]
        hint = f"; did you mean {', '.join(close)}?" if close else f"; it has {len(names)} tables"
        raise SpecError(f"the plan has no table {table!r}{hint}", key_path="TABLE") from None
    if cost_model is None:
        from shardplan.estimators import default_cost_model

        cost_model = default_cost_model(plan.workload, plan.topology)
    w = _Weigher(plan, tp, cost_model)
    # what the planner was offered (its pruning and host rotation included), what the table's
    # constraints allow without pruning, and everything with the constraints lifted
    offered = enumerate_options(plan.workload, plan.topology)[table]
    host_start = [t.name for t in plan.workload.tables].index(table) % plan.topology.num_hosts
    allowed = enumerate_table(spec, plan.workload, plan.topology, host_start=host_start)
    free = enumerate_table(dataclasses.replace(spec, constraints=TableConstraints()),
                           plan.workload, plan.topology, host_start=host_start)
    offered_keys = {(_shape_key(o), o.candidate_ranks) for o in offered}
    allowed_keys = {(_shape_key(o), o.candidate_ranks) for o in allowed}
    verdicts: list[OptionVerdict] = []
    found_chosen = False
    for o in free:
        key = (_shape_key(o), o.candidate_ranks)
        if key not in allowed_keys or key not in offered_keys:
            constrained = key not in allowed_keys
            verdicts.append(OptionVerdict(
                option=o, work_ms=math.nan, hbm_bytes=math.nan, ddr_bytes=math.nan,
                makespan_ms=None, verdict="constraint" if constrained else "not offered",
                reason=_constraint_reason(o, spec.constraints) if constrained else
                "pruned by the enumeration at this instance size (see EnumerationOptions)"))
            continue
        work, hb, db, span, why = w.weigh(o)
        chosen = not found_chosen and _matches(o, tp)
        if chosen:
            found_chosen = True
            v, reason = "chosen", f"the plan's choice, on ranks {_ranges(tp.ranks)}"
        elif span is None:
            v, reason = "memory", why
        elif span > w.makespan + 1e-9:
            v, reason = "higher cost", (f"makespan +{span - w.makespan:.4g} ms "
                                        f"({(span / w.makespan - 1) * 100:+.2f}%)")
        elif span >= w.makespan - 1e-9:
            v, reason = "not better", "same makespan; lost the solver's tie-break"
        else:
            v, reason = "not better", (f"makespan {(span / w.makespan - 1) * 100:+.2f}% with the "
                                       "rest of the plan fixed: the solver missed it")
        verdicts.append(OptionVerdict(option=o, work_ms=work, hbm_bytes=hb, ddr_bytes=db,
                                      makespan_ms=span, verdict=v, reason=reason))
    if not found_chosen:  # the plan's layout is not one this enumeration makes
        o = option_of(tp)
        work, hb, db, _, _ = w.weigh(o)
        verdicts.append(OptionVerdict(option=o, work_ms=work, hbm_bytes=hb, ddr_bytes=db,
                                      makespan_ms=w.makespan, verdict="chosen",
                                      reason=f"on ranks {_ranges(tp.ranks)} (a layout the "
                                             "enumeration does not offer)"))
    return _fold(verdicts), w.makespan


_VERDICT_ORDER = {"chosen": 0, "not better": 1, "higher cost": 2, "memory": 3, "not offered": 4,
                  "constraint": 5}


def _fold(vs: list[OptionVerdict]) -> list[OptionVerdict]:
    """One row per (type, placement, shard shapes): the chosen one, else the best."""
    groups: dict[tuple[Any, ...], list[OptionVerdict]] = {}
    for v in vs:
        groups.setdefault(_shape_key(v.option), []).append(v)

    def rank(v: OptionVerdict) -> tuple[Any, ...]:
        return (_VERDICT_ORDER[v.verdict], v.makespan_ms if v.makespan_ms is not None else math.inf)

    out = []
    for g in groups.values():
        best = min(g, key=rank)
        out.append(dataclasses.replace(best, alternatives=len(g)))
    out.sort(key=lambda v: (*rank(v), v.option.label))
    return out


@app.command("explain")
@handle_errors
@reflow_doc
def explain_cmd(
    plan_file: Annotated[Path, typer.Argument(metavar="PLAN", help="A plan JSON.")],
    table: Annotated[str, typer.Argument(help="A table name of the plan.")],
    limit: Annotated[int, typer.Option(help="Show at most this many options.")] = 30,
) -> None:
    """Why a table got its sharding and ranks: every option, its estimated cost and memory,
    and what ruled each other one out (a constraint, memory, or a higher makespan).

    Costs come from the default cost model for the plan's workload and topology; an option's
    makespan is the plan's if that option replaced the chosen one, its shards placed on the
    least-loaded ranks with room and the rest of the plan unchanged.

    Examples:

      shardplan explain plan.json t_cat_0

      shardplan explain plan.json t00042 --limit 10
    """
    if limit < 1:
        raise SpecError(f"--limit must be >= 1, got {limit}", key_path="--limit")
    from shardplan.estimators import default_cost_model

    p = load_plan(plan_file)
    cm = default_cost_model(p.workload, p.topology)
    verdicts, makespan = explain_table(p, table, cm)
    tp, spec = p.table(table), p.workload.table(table)
    console.print(f"[bold]{table}[/]: {spec.num_embeddings:,} rows x {spec.embedding_dim} "
                  f"{spec.dtype.value}, pooling factor {spec.pooling_factor:g}, optimizer "
                  f"{p.workload.optimizer_of(spec).value}")
    console.print(f"placed {tp.sharding_type.value} ({len(tp.shards)} shard(s), "
                  f"{tp.shards[0].placement}) on ranks {_ranges(tp.ranks)}")
    loads = {r.rank: r.total_ms for r in p.ranks}
    slowest = max(tp.ranks, key=lambda r: (loads[r], -r))
    console.print(f"its slowest rank is {slowest} at {loads[slowest]:.3f} ms; the plan's "
                  f"makespan is {p.summary.makespan_ms:.3f} ms ({makespan:.3f} ms recomputed "
                  "under the current cost model)")
    t = Table(header_style="bold", title=f"options of {table} (costs under {cm.name})",
              box=box.SIMPLE_HEAD)
    for col in ("option", "work ms", "HBM GiB", "DDR GiB", "makespan", "verdict: why"):
        left = col in ("option", "verdict: why")
        t.add_column(col, justify="left" if left else "right", no_wrap=col != "verdict: why",
                     min_width=20 if left and col != "option" else None)
    style = {"chosen": "bold green", "constraint": "dim", "not offered": "dim", "memory": "red"}

    def num(x: float | None, k: float = 1.0) -> str:
        return "-" if x is None or math.isnan(x) else f"{x / k:.3f}"

    for v in verdicts[:limit]:
        label = v.option.label + ("*" if v.alternatives > 1 else "")
        t.add_row(label, num(v.work_ms), num(v.hbm_bytes, GiB), num(v.ddr_bytes, GiB),
                  num(v.makespan_ms), f"{v.verdict}: {v.reason}", style=style.get(v.verdict))
    console.print(t)
    console.print("work: time the option adds, summed over ranks; memory: summed over ranks; "
                  "makespan: the plan's if this option replaced the chosen one (shards on the "
                  "least-loaded ranks with room, the rest unchanged). * best of several "
                  "options that differ only in their host.")
    if len(verdicts) > limit:
        console.print(f"({len(verdicts) - limit} more options; --limit {len(verdicts)} shows all)")
    made_with = str(p.provenance.cost_model.get("name", ""))
    if made_with and made_with != cm.name:
        console.print(f"note: the plan was made with cost model {made_with}; options are "
                      f"weighed with {cm.name}")
