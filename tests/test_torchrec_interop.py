"""TorchRec interop: export structure, import round trips, constraints, topology, the trainer
API, TorchRec's planner as a baseline, and that everything else works without TorchRec."""

from __future__ import annotations

import dataclasses
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import make_topology
from shardplan.errors import PlanError, SpecError
from shardplan.estimators import default_cost_model
from shardplan.loaders import load_problem, load_topology
from shardplan.plans import build_plan, check_plan
from shardplan.torchrec_interop import (
    EXPORT_FORMAT,
    export_torchrec,
    infer_compute_device,
    rw_block_layout,
)
from shardplan.types import (
    HBM,
    Assignment,
    Placement,
    PlacementKind,
    ShardingOption,
    ShardingType,
    ShardSpec,
    TableSpec,
    Workload,
)

ROOT = Path(__file__).resolve().parents[1]
NO_TORCHREC = "TorchRec is not installed (optional extra): scripts/setup.sh installs it"


def _torchrec():
    return pytest.importorskip("torchrec", reason=NO_TORCHREC)


def _plan_of(work: Workload, topo, options, ranks, solver="manual"):
    opts = tuple(ShardingOption(table=o[0], sharding_type=o[1], placement=o[2], shards=tuple(o[3]),
                                candidate_ranks=(None,) * len(o[3])) for o in options)
    return build_plan(workload=work, topology=topo, cost_model=default_cost_model(work, topo),
                      assignment=Assignment(options=opts, ranks=tuple(ranks)), solver=solver)


def _full(rows, dim):
    return ShardSpec(row_offset=0, num_rows=rows, col_offset=0, num_cols=dim)


@pytest.fixture(scope="module")
def dcnv2_plan():
    import shardplan

    topo, work = load_problem("dgx-h100-2x8")
    return shardplan.plan(work, topo, solver="greedy")


# ---------------------------------------------------------------------------------------------
# Export (no TorchRec needed for the dict form)
# ---------------------------------------------------------------------------------------------


def test_rw_block_layout_is_torchrecs_ceil_layout():
    assert [n for _, n in rw_block_layout(10, 4)] == [3, 3, 3, 1]
    assert [n for _, n in rw_block_layout(5, 4)] == [2, 2, 1, 0]
    for rows in (1, 7, 64, 1001):
        for k in (1, 2, 3, 8):
            blocks = rw_block_layout(rows, k)
            assert len(blocks) == k
            assert sum(n for _, n in blocks) == rows
            assert all(o == sum(n for _, n in blocks[:i]) for i, (o, _) in enumerate(blocks))


def test_export_structure_tiles_every_table(dcnv2_plan):
    plan = dcnv2_plan
    d = export_torchrec(plan)
    assert d["format"] == EXPORT_FORMAT and d["compute_device"] == "cuda"
    assert d["world_size"] == 16 and d["local_world_size"] == 8
    tables = d["plan"][""]
    assert list(tables) == [t.name for t in plan.tables]
    for t in plan.tables:
        e = tables[t.name]
        assert e["sharding_type"] == t.sharding_type.value
        if t.sharding_type is ShardingType.DATA_PARALLEL:
            assert e["compute_kernel"] == "dense" and e["shards"] is None
            assert e["ranks"] == list(range(16))
            continue
        kind = t.shards[0].placement.kind
        assert e["compute_kernel"] == {PlacementKind.HBM: "fused", PlacementKind.UVM: "fused_uvm",
                                       PlacementKind.UVM_CACHING: "fused_uvm_caching"}[kind]
        assert e["ranks"] == [s["rank"] for s in e["shards"]]
        area = sum(s["shard_sizes"][0] * s["shard_sizes"][1] for s in e["shards"])
        assert area == t.num_embeddings * t.embedding_dim, t.name
        for s in e["shards"]:
            (r0, c0), (nr, nc) = s["shard_offsets"], s["shard_sizes"]
            assert 0 <= r0 and r0 + nr <= t.num_embeddings and 0 <= c0 and c0 + nc <= t.embedding_dim
            assert s["placement"] == f"rank:{s['rank']}/cuda:{s['rank'] % 8}"
        if t.sharding_type in (ShardingType.TABLE_WISE, ShardingType.COLUMN_WISE,
                               ShardingType.TABLE_COLUMN_WISE):
            ours = sorted((s.rank, s.row_offset, s.col_offset, s.num_rows, s.num_cols) for s in t.shards)
            theirs = sorted((s["rank"], *s["shard_offsets"], *s["shard_sizes"]) for s in e["shards"])
            assert ours == theirs, t.name
        if t.sharding_type is ShardingType.ROW_WISE:
            assert e["ranks"] == list(range(16))
            assert [s["shard_sizes"][0] for s in e["shards"]] == [
                n for _, n in rw_block_layout(t.num_embeddings, 16)]
    # JSON-serialisable and deterministic
    assert json.dumps(d, sort_keys=True) == json.dumps(export_torchrec(plan), sort_keys=True)


def test_export_maps_placements_to_kernels_and_cpu_to_fused():
    topo = make_topology(hosts=1, devices_per_host=2)
    tables = (TableSpec(name="a", num_embeddings=100, embedding_dim=8),
              TableSpec(name="b", num_embeddings=100, embedding_dim=8),
              TableSpec(name="c", num_embeddings=100, embedding_dim=8))
    work = Workload(tables=tables, batch_size=4)
    cached = Placement(kind=PlacementKind.UVM_CACHING, cache_ratio=0.05)
    plan = _plan_of(work, topo, [
        ("a", ShardingType.TABLE_WISE, HBM, [_full(100, 8)]),
        ("b", ShardingType.TABLE_WISE, cached, [_full(100, 8)]),
        ("c", ShardingType.TABLE_WISE, Placement(kind=PlacementKind.UVM), [_full(100, 8)]),
    ], [(0,), (1,), (0,)])
    gpu = export_torchrec(plan)["plan"][""]
    assert [gpu[n]["compute_kernel"] for n in "abc"] == ["fused", "fused_uvm_caching", "fused_uvm"]
    assert gpu["b"]["cache_load_factor"] == 0.05 and "cache_load_factor" not in gpu["a"]
    cpu = export_torchrec(plan, compute_device="cpu", module_path="sparse.ebc")
    assert list(cpu["plan"]) == ["sparse.ebc"]
    assert {e["compute_kernel"] for e in cpu["plan"]["sparse.ebc"].values()} == {"fused"}
    assert cpu["plan"]["sparse.ebc"]["a"]["shards"][0]["placement"] == "rank:0/cpu"
    with pytest.raises(SpecError, match="compute_device"):
        export_torchrec(plan, compute_device="tpu")


def test_export_rejects_what_torchrec_cannot_run():
    topo = make_topology(hosts=1, devices_per_host=2)
    work = Workload(tables=(TableSpec(name="a", num_embeddings=10, embedding_dim=8),), batch_size=4)
    # row blocks on ranks in the wrong order: TorchRec puts block i on rank i
    swapped = _plan_of(work, topo, [("a", ShardingType.ROW_WISE, HBM,
                                     [ShardSpec(row_offset=0, num_rows=5, col_offset=0, num_cols=8),
                                      ShardSpec(row_offset=5, num_rows=5, col_offset=0, num_cols=8)])],
                       [(1, 0)])
    with pytest.raises(PlanError, match="rank 0 \\+ i"):
        export_torchrec(swapped)
    ddr = _plan_of(work, topo, [("a", ShardingType.TABLE_WISE, Placement(kind=PlacementKind.DDR),
                                 [_full(10, 8)])], [(0,)])
    with pytest.raises(PlanError, match="no TorchRec compute kernel"):
        export_torchrec(ddr)
    assert export_torchrec(ddr, compute_device="cpu")["plan"][""]["a"]["compute_kernel"] == "fused"
    g = topo.host_groups[0]
    uneven = dataclasses.replace(topo, host_groups=(g, dataclasses.replace(g, name="b", devices_per_host=4)))
    plan = _plan_of(work, uneven, [("a", ShardingType.TABLE_WISE, HBM, [_full(10, 8)])], [(0,)])
    with pytest.raises(PlanError, match="same devices per host"):
        export_torchrec(plan)


def test_compute_device_inferred_from_topology(cpu4, topo16):
    assert infer_compute_device(cpu4) == "cpu"
    assert infer_compute_device(topo16) == "cuda"


# ---------------------------------------------------------------------------------------------
# TorchRec objects
# ---------------------------------------------------------------------------------------------


def test_to_torchrec_plan_builds_parameter_shardings(dcnv2_plan):
    _torchrec()
    from torch.distributed._shard.sharding_spec import EnumerableShardingSpec
    from torchrec.distributed.types import ParameterSharding, ShardingPlan

    from shardplan.torchrec_interop import sharding_plan_from_dict, to_torchrec_plan

    sp = to_torchrec_plan(dcnv2_plan, module_path="model.ebc")
    assert isinstance(sp, ShardingPlan) and list(sp.plan) == ["model.ebc"]
    d = export_torchrec(dcnv2_plan)["plan"][""]
    for name, ps in sp.plan["model.ebc"].items():
        assert isinstance(ps, ParameterSharding)
        assert ps.sharding_type == d[name]["sharding_type"]
        assert ps.compute_kernel == d[name]["compute_kernel"]
        assert ps.ranks == d[name]["ranks"]
        if d[name]["shards"] is None:
            assert ps.sharding_spec is None
        else:
            assert isinstance(ps.sharding_spec, EnumerableShardingSpec)
            got = [(list(m.shard_offsets), list(m.shard_sizes), str(m.placement))
                   for m in ps.sharding_spec.shards]
            assert got == [(s["shard_offsets"], s["shard_sizes"], s["placement"])
                           for s in d[name]["shards"]]
    # the JSON of the export loads back to the same plan
    again = sharding_plan_from_dict(json.loads(json.dumps(export_torchrec(dcnv2_plan))))
    assert str(again) == str(to_torchrec_plan(dcnv2_plan))
    with pytest.raises(PlanError, match="not a TorchRec plan export"):
        sharding_plan_from_dict({"plan": {}})


# ---------------------------------------------------------------------------------------------
# Import
# ---------------------------------------------------------------------------------------------


def test_configs_round_trip_through_workload(dozen):
    _torchrec()
    from shardplan.torchrec_interop import workload_from_torchrec, workload_to_configs

    configs = workload_to_configs(dozen)
    back = workload_from_torchrec(configs, batch_size=dozen.batch_size)
    assert [(t.name, t.num_embeddings, t.embedding_dim, t.features, t.dtype) for t in back.tables] == \
        [(t.name, t.num_embeddings, t.embedding_dim, t.features, t.dtype) for t in dozen.tables]
    def key(cs):
        return [(c.name, c.num_embeddings, c.embedding_dim, c.feature_names, c.data_type) for c in cs]

    assert key(workload_to_configs(back)) == key(configs)
    assert back.batch_size == dozen.batch_size


def test_meta_ebc_and_constraints_import():
    _torchrec()
    import torch
    from torchrec import EmbeddingBagCollection, EmbeddingBagConfig
    from torchrec.distributed.planner.types import ParameterConstraints

    from shardplan.torchrec_interop import workload_from_torchrec

    ebc = EmbeddingBagCollection(device=torch.device("meta"), tables=[
        EmbeddingBagConfig(name="user", num_embeddings=1000, embedding_dim=32,
                           feature_names=["user_id", "user_hist"]),
        EmbeddingBagConfig(name="item", num_embeddings=500, embedding_dim=16, feature_names=["item_id"]),
    ])
    cons = {"user": ParameterConstraints(sharding_types=["row_wise", "table_wise"],
                                         compute_kernels=["fused", "fused_uvm_caching"],
                                         min_partition=8, pooling_factors=[1.5, 20.0])}
    w = workload_from_torchrec(ebc, batch_size=256, constraints=cons)
    user, item = w.tables
    assert user.features == ("user_id", "user_hist") and user.pooling_factor == pytest.approx(21.5)
    assert user.constraints.sharding_types == (ShardingType.ROW_WISE, ShardingType.TABLE_WISE)
    assert user.constraints.placements == (PlacementKind.HBM, PlacementKind.UVM_CACHING)
    assert user.constraints.min_column_shard_width == 8
    assert item.pooling_factor == 1.0 and item.constraints.sharding_types is None
    grid = workload_from_torchrec(ebc, batch_size=1, constraints={
        "item": ParameterConstraints(sharding_types=["grid_shard"])})
    assert grid.tables[1].constraints.sharding_types == (ShardingType.GRID_SHARD,)
    with pytest.raises(SpecError, match="key_value"):
        workload_from_torchrec(ebc, batch_size=1, constraints={
            "item": ParameterConstraints(compute_kernels=["key_value"])})
    with pytest.raises(SpecError, match="does not have"):
        workload_from_torchrec(ebc, batch_size=1, constraints={"nope": ParameterConstraints()})
    with pytest.raises(SpecError, match="no EmbeddingBagCollection"):
        workload_from_torchrec(torch.nn.Linear(2, 2), batch_size=1)


def test_topology_to_torchrec_keeps_per_rank_memory_and_bandwidths():
    _torchrec()
    from shardplan.torchrec_interop import topology_to_torchrec

    topo = load_topology("hetero-a100-h100")
    tr = topology_to_torchrec(topo)
    assert tr.world_size == topo.world_size == 32 and tr.local_world_size == 8
    assert tr.compute_device == "cuda"
    for r, dev in enumerate(tr.devices):
        cap = topo.capacity(r)
        assert dev.storage.hbm == int(cap.hbm) and dev.storage.ddr == int(cap.ddr)
    # bytes per ms, the slower (A100) group's
    assert tr.hbm_mem_bw == pytest.approx(2039e9 / 1000)
    assert tr.intra_host_bw == pytest.approx(300e9 / 1000)
    assert tr.inter_host_bw == pytest.approx(8 * 200e9 / 8 / 8 / 1000)
    cpu = topology_to_torchrec(load_topology("cpu-2"))
    assert cpu.compute_device == "cpu" and all(d.storage.hbm == 0 for d in cpu.devices)


# ---------------------------------------------------------------------------------------------
# Trainer API and TorchRec's planner
# ---------------------------------------------------------------------------------------------


def test_plan_for_torchrec_keys_each_ebc_by_fqn():
    _torchrec()
    import torch
    from torchrec import EmbeddingBagCollection, EmbeddingBagConfig
    from torchrec.distributed.types import ShardingPlan

    from shardplan.torchrec_interop import plan_for_torchrec

    class Model(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.user_ebc = EmbeddingBagCollection(device=torch.device("meta"), tables=[
                EmbeddingBagConfig(name="u", num_embeddings=5000, embedding_dim=16, feature_names=["u"])])
            self.sparse = torch.nn.Module()
            self.sparse.ebc = EmbeddingBagCollection(device=torch.device("meta"), tables=[
                EmbeddingBagConfig(name=f"i{k}", num_embeddings=2000, embedding_dim=8,
                                   feature_names=[f"i{k}"]) for k in range(3)])

    plan = plan_for_torchrec(Model(), "cpu-2", batch_size=32, solver="greedy")
    assert isinstance(plan, ShardingPlan)
    assert sorted(plan.plan) == ["sparse.ebc", "user_ebc"]
    assert sorted(plan.plan["sparse.ebc"]) == ["i0", "i1", "i2"] and list(plan.plan["user_ebc"]) == ["u"]
    for module_plan in plan.plan.values():
        for ps in module_plan.values():
            assert ps.compute_kernel in ("fused", "dense") and set(ps.ranks) <= {0, 1}


def test_plan_with_torchrec_gives_a_valid_plan_costed_by_our_model():
    _torchrec()
    from shardplan.torchrec_interop import plan_with_torchrec

    topo, work = load_problem("cpu-2")
    plan, seconds = plan_with_torchrec(work, topo)
    assert seconds > 0
    assert plan.summary.solver == "torchrec" and plan.summary.num_tables == len(work.tables)
    check_plan(plan)  # every row placed once, on real ranks, within memory
    assert plan.summary.makespan_ms >= max(r.total_ms for r in plan.ranks) > 0


def _readme_example() -> str:
    text = (ROOT / "docs" / "torchrec.md").read_text()
    m = re.search(r"<!-- trainer-example -->\s*```python\n(.*?)```", text, re.S)
    assert m, "docs/torchrec.md lost its trainer example block"
    return m.group(1)


def test_trainer_example_in_docs_runs():
    _torchrec()
    out = subprocess.run([sys.executable, "-c", _readme_example()], capture_output=True, text=True,
                         timeout=300, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-3000:]
    assert any(st.value in out.stdout for st in ShardingType), out.stdout[-2000:]


def test_plan_for_torchrec_docstring_example():
    _torchrec()
    import doctest

    import shardplan.torchrec_interop as mod

    finder = doctest.DocTestFinder()
    runner = doctest.DocTestRunner()
    for t in finder.find(mod.plan_for_torchrec, "plan_for_torchrec", globs={}):
        runner.run(t)
    assert runner.failures == 0 and runner.tries > 0


# ---------------------------------------------------------------------------------------------
# Without TorchRec
# ---------------------------------------------------------------------------------------------


def test_everything_else_works_without_torchrec():
    code = """
import sys
sys.modules['torchrec'] = None  # makes `import torchrec` raise ImportError
import shardplan
from shardplan import torchrec_interop as ti
topo, work = shardplan.load_problem('cpu-2')
plan = shardplan.plan(work, topo, solver='greedy')
assert ti.export_torchrec(plan)['plan']['']
assert not ti.torchrec_available()
try:
    ti.plan_with_torchrec(work, topo)
except ti.TorchRecMissingError as e:
    assert isinstance(e, shardplan.ShardplanError) and 'torchrec==1.8.0' in str(e)
    print('ok')
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip().splitlines()[-1] == "ok", out.stderr[-3000:]
