"""Plan once, share everywhere: the plan cache and the broadcast over torch.distributed."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from shardplan.distributed import PlanCache, plan_cached, plan_key, plan_once
from shardplan.errors import ShardplanWarning, SpecError
from shardplan.loaders import load_problem
from shardplan.plans import plan_to_json

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def problem():
    return load_problem("cpu-2")


def test_cache_hit_returns_the_stored_plan(problem, tmp_path):
    topo, work = problem
    a = plan_cached(work, topo, cache_dir=tmp_path, solver="greedy")
    files = list(tmp_path.glob("plan-*.json"))
    assert len(files) == 1
    b = plan_cached(work, topo, cache_dir=tmp_path, solver="greedy")
    assert plan_to_json(b) == plan_to_json(a)  # byte-identical: read back, not re-solved
    assert files[0].stat().st_mtime == list(tmp_path.glob("plan-*.json"))[0].stat().st_mtime
    plan_cached(work, topo, cache_dir=tmp_path, solver="size_greedy")
    assert len(list(tmp_path.glob("plan-*.json"))) == 2


def test_key_covers_what_decides_the_plan(problem):
    topo, work = problem
    base = plan_key(work, topo, solver="greedy", time_limit_s=5)
    assert base == plan_key(work, topo, solver="greedy", time_limit_s=5, progress=print)
    assert base != plan_key(work, topo, solver="greedy", time_limit_s=6)
    assert base != plan_key(work, topo, solver="auto", time_limit_s=5)
    other = load_problem("cpu-4")[0]
    assert base != plan_key(work, other, solver="greedy", time_limit_s=5)


def test_damaged_cache_entry_is_a_miss_with_a_warning(problem, tmp_path):
    topo, work = problem
    a = plan_cached(work, topo, cache_dir=tmp_path, solver="greedy")
    f = next(tmp_path.glob("plan-*.json"))
    d = json.loads(f.read_text())
    d["summary"]["makespan_ms"] = 0.0001
    f.write_text(json.dumps(d))
    with pytest.warns(ShardplanWarning, match="ignoring the cached plan"):
        b = plan_cached(work, topo, cache_dir=tmp_path, solver="greedy")
    assert b.summary.makespan_ms == a.summary.makespan_ms
    assert PlanCache(tmp_path).get(f.stem.removeprefix("plan-")) is not None  # rewritten whole


def test_plan_once_needs_a_process_group(problem):
    topo, work = problem
    with pytest.raises(SpecError, match="init_process_group"):
        plan_once(work, topo, solver="greedy")


WORKER = textwrap.dedent("""\
    import sys, torch.distributed as dist
    from shardplan.distributed import plan_once
    from shardplan.errors import InfeasiblePlanError
    from shardplan.loaders import load_problem
    from shardplan.plans import plan_to_json
    rank, store, out, cache = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    topo, work = load_problem("cpu-2")
    p = plan_once(work, topo, solver="greedy", cache_dir=cache if rank == 0 else None)
    open(f"{out}.{rank}", "w").write(plan_to_json(p))
    huge = load_problem("cpu-2", "{huge}")[1]
    try:
        plan_once(huge, topo, solver="greedy")
    except InfeasiblePlanError as exc:  # every rank gets rank 0's error, none waits forever
        open(f"{out}.{rank}.err", "w").write(str(exc))
    dist.destroy_process_group()
""")


@pytest.mark.slow
def test_plan_once_broadcasts_one_plan(tmp_path):
    huge = tmp_path / "huge.csv"
    huge.write_text("name,num_embeddings,embedding_dim,pooling_factor\nx,100000000000,128,1\n")
    script = tmp_path / "worker.py"
    script.write_text(WORKER.replace("{huge}", str(huge)))
    out, cache = tmp_path / "plan", tmp_path / "cache"
    procs = [subprocess.Popen([sys.executable, str(script), str(r), str(tmp_path / "store"),
                               str(out), str(cache)], cwd=ROOT, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for r in (0, 1)]
    for p in procs:
        text, _ = p.communicate(timeout=600)
        assert p.returncode == 0, text[-3000:]
    a, b = (Path(f"{out}.{r}").read_text() for r in (0, 1))
    assert a == b
    assert len(list(cache.glob("plan-*.json"))) == 1  # only rank 0 planned (and cached)
    errs = [Path(f"{out}.{r}.err").read_text() for r in (0, 1)]
    assert errs[0] == errs[1] and "no plan fits" in errs[0]
