"""Inference plans, executed: FBGEMM's row-wise quantised layout and its bytes against the cost
model, forward-only lookups on both backends, layout and mode checks, validation against the
unsharded quantised model, profile, TorchRec export.

Multi-process runs are marked slow (one launch of 4 processes each).
"""

from __future__ import annotations

import dataclasses
import json
import warnings

import pytest
import torch
from typer.testing import CliRunner

from shardplan import load_topology, plan
from shardplan.cli.app import app
from shardplan.enumerators import EnumerationOptions
from shardplan.errors import PlanError
from shardplan.estimators import default_cost_model
from shardplan.estimators import memory
from shardplan.executor import check_mode_options, prepare
from shardplan.executor.kernels import Backend, fbgemm_available
from shardplan.executor.layout import build_layout
from shardplan.executor.quant import dequantize, quantize
from shardplan.executor.quant_kernels import make_quant_lookup
from shardplan.plans import assignment_of, build_plan, save_plan
from shardplan.types import (
    DType,
    Mode,
    Optimizer,
    ShardingType,
    TableConstraints,
    TableSpec,
    Topology,
    Workload,
)

S = ShardingType
runner = CliRunner()
HAS_FBGEMM = fbgemm_available(torch.device("cpu"))
needs_fbgemm = pytest.mark.skipif(not HAS_FBGEMM, reason="fbgemm-gpu(-cpu) is not installed")
QUANT_DTYPES = (DType.FP32, DType.FP16, DType.INT8, DType.INT4)


def cpu_2x2() -> Topology:
    g = load_topology("cpu-4").host_groups[0]
    return Topology(name="cpu-2x2",
                    host_groups=(dataclasses.replace(g, hosts=2, devices_per_host=2),))


def forced(types, dtype: DType, dims=(16, 8)) -> Workload:
    tables = tuple(
        TableSpec(name=f"t{i}_{st.short}", num_embeddings=60 + 13 * i,
                  embedding_dim=dims[i % len(dims)], pooling_factor=2.0 + i, dtype=dtype,
                  constraints=TableConstraints(sharding_types=(st,)))
        for i, st in enumerate(types))
    return Workload(name="forced-inference", tables=tables, batch_size=4, mode=Mode.INFERENCE)


def as_inference(p, dtype: DType):
    """The same placement, re-costed as an inference plan with every table in ``dtype``."""
    w = dataclasses.replace(p.workload, mode=Mode.INFERENCE,
                            tables=tuple(dataclasses.replace(t, dtype=dtype)
                                         for t in p.workload.tables))
    return build_plan(workload=w, topology=p.topology,
                      cost_model=default_cost_model(w, p.topology), assignment=assignment_of(p),
                      solver="hand")


# ------------------------------------------------------------------------------------------
# the quantised layout
# ------------------------------------------------------------------------------------------


@needs_fbgemm
@pytest.mark.parametrize("dtype", QUANT_DTYPES)
@pytest.mark.parametrize("dim", [8, 16, 64, 12])
def test_torch_quantisation_gives_fbgemm_bytes(dtype, dim):
    w = torch.rand(300, dim, generator=torch.Generator().manual_seed(dim)) * 0.2 - 0.1
    w[7] = 0.03  # a constant row: zero range
    a, b = quantize(w, dtype, use_fbgemm=True), quantize(w, dtype, use_fbgemm=False)
    assert torch.equal(a.data, b.data)
    assert (a.scale_bias is None) == (b.scale_bias is None)
    if a.scale_bias is not None:
        assert torch.equal(a.scale_bias, b.scale_bias)
    step = {DType.FP32: 0.0, DType.FP16: 1e-4, DType.INT8: 0.2 / 255, DType.INT4: 0.2 / 15}[dtype]
    assert float((dequantize(a) - w).abs().max()) <= step / 2 + 1e-4


@pytest.mark.parametrize("dtype", QUANT_DTYPES)
@pytest.mark.parametrize("rows,cols", [(100, 16), (37, 6), (250, 64)])
def test_row_bytes_of_the_cost_model_are_the_tensors_bytes(dtype, rows, cols):
    """memory.row_bytes (values + fp16 scale + fp16 bias for int8/int4) equals, exactly, the
    bytes FBGEMM's inference TBE holds per table (its split weights and scale/bias)."""
    w = torch.rand(rows, cols) * 0.2 - 0.1
    q = quantize(w, dtype)
    assert q.nbytes == memory.weight_bytes(rows, cols, dtype)
    assert q.rows == rows and q.cols == cols
    if not HAS_FBGEMM:
        return
    from fbgemm_gpu.split_table_batched_embeddings_ops_common import (
        DEFAULT_SCALE_BIAS_SIZE_IN_BYTES,
    )
    from fbgemm_gpu.split_table_batched_embeddings_ops_inference import (
        unpadded_row_size_in_bytes,
    )

    assert memory.QUANT_SCALE_BIAS_BYTES == DEFAULT_SCALE_BIAS_SIZE_IN_BYTES
    lk = make_quant_lookup(Backend.FBGEMM, [q, quantize(w[:5], dtype)], torch.device("cpu"))
    (wt, sb), _ = lk.stored()
    held = wt.numel() + (sb.numel() if sb is not None else 0)
    assert held == memory.weight_bytes(rows, cols, dtype)
    from fbgemm_gpu.split_embedding_configs import SparseType

    assert unpadded_row_size_in_bytes(cols, getattr(SparseType, dtype.name)) == \
        memory.row_bytes(cols, dtype)
    # what the kernel allocated: each table padded to a 128-byte cache line, no more
    pad = lk.param_bytes - lk.weight_bytes
    assert 0 <= pad < 2 * 128


@pytest.mark.parametrize("dtype", QUANT_DTYPES)
def test_shards_hold_the_whole_tables_values(dtype):
    w = torch.rand(40, 16) * 0.2 - 0.1
    q = quantize(w, dtype)
    full = dequantize(q)
    part = dequantize(q.shard(10, 20, 4, 8))
    assert torch.equal(part, full[10:30, 4:12])


@pytest.mark.parametrize("dtype", QUANT_DTYPES)
def test_backends_agree(dtype):
    g = torch.Generator().manual_seed(1)
    tabs = [quantize(torch.rand(50, 8, generator=g) * 0.2 - 0.1, dtype),
            quantize(torch.rand(30, 16, generator=g) * 0.2 - 0.1, dtype)]
    B = 6
    lengths = torch.randint(0, 4, (2 * B,), generator=g)
    ids = torch.cat([torch.randint(0, 50 if k < B else 30, (int(n),), generator=g)
                     for k, n in enumerate(lengths)])
    offsets = torch.zeros(2 * B + 1, dtype=torch.int64)
    offsets[1:] = torch.cumsum(lengths, 0)
    cpu = torch.device("cpu")
    got = make_quant_lookup(Backend.TORCH, tabs, cpu).forward(ids, offsets)
    want = torch.cat([torch.nn.functional.embedding_bag(
        ids[offsets[t * B]:offsets[(t + 1) * B]], dequantize(tab),
        offsets[t * B:(t + 1) * B] - offsets[t * B], mode="sum") for t, tab in enumerate(tabs)], 1)
    assert got.shape == (B, 24)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    if HAS_FBGEMM:
        fb = make_quant_lookup(Backend.FBGEMM, tabs, cpu).forward(ids, offsets)
        torch.testing.assert_close(fb, want, rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------------------------------
# layout and mode checks (no processes)
# ------------------------------------------------------------------------------------------


def test_inference_layout_keeps_mode_and_dtypes():
    p = plan(forced([S.TABLE_WISE, S.ROW_WISE, S.COLUMN_WISE, S.DATA_PARALLEL], DType.INT8),
             load_topology("cpu-4"), enumeration=EnumerationOptions(wide_min_share=0.0))
    lay = build_layout(p)
    assert lay.inference and lay.optimizer is Optimizer.NONE
    assert lay.dtypes == (DType.INT8,) * 4
    assert prepare(p) is True  # estimates re-derived and matched


def test_int4_odd_dimension_is_rejected_naming_the_table():
    p = plan(forced([S.TABLE_WISE], DType.INT4, dims=(7,)), load_topology("cpu-4"))
    with pytest.raises(PlanError, match=r"int4 table 't0_TW' has an odd embedding_dim 7") as e:
        build_layout(p)
    assert e.value.key_path == "tables[t0_TW].embedding_dim"


def test_bf16_inference_is_rejected():
    p = plan(forced([S.TABLE_WISE], DType.BF16), load_topology("cpu-4"))
    with pytest.raises(PlanError, match="dtype bf16"):
        build_layout(p)


def test_training_only_options_on_an_inference_plan_name_the_mode():
    p = plan(forced([S.TABLE_WISE], DType.INT8), load_topology("cpu-4"))
    with pytest.raises(PlanError, match="training-only option; this plan is in inference mode"):
        check_mode_options(p, bucket_bytes=1 << 20)
    w = dataclasses.replace(p.workload, tables=(dataclasses.replace(
        p.workload.tables[0], optimizer=Optimizer.ADAM),))
    with pytest.raises(PlanError, match="names optimizer adam, a training-only option"):
        check_mode_options(dataclasses.replace(p, workload=w))
    with pytest.raises(PlanError, match="the plan is in inference mode, not training"):
        prepare(p, mode=Mode.TRAINING)


def test_quantised_tables_in_a_training_plan_name_the_mode():
    w = dataclasses.replace(forced([S.TABLE_WISE], DType.INT4), mode=Mode.TRAINING)
    p = plan(w, load_topology("cpu-4"))
    with pytest.raises(PlanError, match="inference mode only.*this plan is in training mode"):
        prepare(p)


def test_cli_validate_with_the_wrong_mode_exits_1_before_running(tmp_path):
    path = tmp_path / "q.json"
    save_plan(plan(forced([S.TABLE_WISE], DType.INT8), load_topology("cpu-4")), path)
    res = runner.invoke(app, ["validate", str(path), "--mode", "training"])
    assert res.exit_code == 1, res.output
    assert "inference mode, not training" in res.output
    assert "q.json" in res.output  # names the file


# ------------------------------------------------------------------------------------------
# TorchRec export
# ------------------------------------------------------------------------------------------


def tw_rw_cw_plan(dtype: DType = DType.INT8):
    return plan(forced([S.TABLE_WISE, S.ROW_WISE, S.COLUMN_WISE, S.TABLE_COLUMN_WISE], dtype,
                       dims=(16,)),
                cpu_2x2(), enumeration=EnumerationOptions(wide_min_share=0.0))


def test_inference_export_uses_the_quant_kernel_and_sharders_types():
    from shardplan.torchrec_interop.export import export_torchrec

    d = export_torchrec(tw_rw_cw_plan())["plan"][""]
    assert {e["compute_kernel"] for e in d.values()} == {"quant"}
    assert [e["sharding_type"] for e in d.values()] == [
        "table_wise", "row_wise", "column_wise", "column_wise"]


def test_inference_export_refuses_types_the_quant_sharders_lack():
    from shardplan.torchrec_interop.export import export_torchrec

    p = plan(forced([S.DATA_PARALLEL], DType.INT8), load_topology("cpu-4"))
    with pytest.raises(PlanError, match="quantised sharders"):
        export_torchrec(p)


@pytest.mark.slow
def test_torchrec_shards_the_exported_inference_plan_and_matches_on_cpu():
    pytest.importorskip("torchrec")
    from torchrec.distributed.fused_params import FUSED_PARAM_QUANT_STATE_DICT_SPLIT_SCALE_BIAS
    from torchrec.distributed.global_settings import set_propogate_device
    from torchrec.distributed.quant_embeddingbag import QuantEmbeddingBagCollectionSharder
    from torchrec.inference.modules import shard_quant_model
    from torchrec.modules.embedding_configs import DataType, EmbeddingBagConfig
    from torchrec.quant.embedding_modules import EmbeddingBagCollection as QuantEBC
    from torchrec.quant.embedding_modules import MODULE_ATTR_QUANT_STATE_DICT_SPLIT_SCALE_BIAS
    from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

    from shardplan.torchrec_interop.export import to_torchrec_plan

    p = tw_rw_cw_plan()
    tables = p.workload.tables
    cfgs = [EmbeddingBagConfig(name=t.name, feature_names=[t.name],
                               num_embeddings=t.num_embeddings, embedding_dim=t.embedding_dim,
                               data_type=DataType.INT8) for t in tables]
    torch.manual_seed(0)
    from torchrec.modules.embedding_modules import EmbeddingBagCollection

    ebc = EmbeddingBagCollection(tables=cfgs, device=torch.device("cpu"))
    q = torch.quantization
    ebc.qconfig = q.QConfig(activation=q.PlaceholderObserver.with_args(dtype=torch.float),
                            weight=q.PlaceholderObserver.with_args(dtype=torch.qint8))
    # split scale/bias state dicts: what RW/CW quantised shards load from
    setattr(ebc, MODULE_ATTR_QUANT_STATE_DICT_SPLIT_SCALE_BIAS, True)
    qebc = QuantEBC.from_float(ebc)  # int8 rows, FBGEMM's layout
    # TorchRec's inference sharding on CPU needs the device propagated (else it picks cuda),
    # and RW/CW quantised shards need split scale/bias state dicts
    set_propogate_device(True)
    sharder = QuantEmbeddingBagCollectionSharder(
        fused_params={FUSED_PARAM_QUANT_STATE_DICT_SPLIT_SCALE_BIAS: True})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sharded, _ = shard_quant_model(qebc, world_size=p.topology.world_size,
                                       compute_device="cpu", sharding_device="cpu",
                                       sharders=[sharder], sharding_plan=to_torchrec_plan(p))
        sharded.load_state_dict(qebc.state_dict())  # every key matched, or it raises
        kjt = KeyedJaggedTensor.from_lengths_sync(
            keys=[t.name for t in tables], values=torch.arange(1, 17),
            lengths=torch.tensor([2, 2, 1, 3, 2, 2, 3, 1]))
        want = qebc(kjt).values()
        got = sharded(kjt).values()
    assert type(sharded).__name__ == "ShardedQuantEmbeddingBagCollection"
    assert float(want.abs().max()) > 0
    torch.testing.assert_close(got, want)


# ------------------------------------------------------------------------------------------
# runs (slow)
# ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mixed():
    from test_executor import mixed_plan

    return mixed_plan()


@pytest.mark.slow
@pytest.mark.parametrize("dtype", QUANT_DTYPES)
def test_every_sharding_group_equals_the_quantised_reference(mixed, dtype):
    from shardplan.executor import validate_plan

    p = as_inference(mixed, dtype)
    assert {t.sharding_type for t in p.tables} == set(S)
    rep = validate_plan(p, steps=2)
    assert rep.passed, rep.mismatches[:3]
    assert rep.mode is Mode.INFERENCE and rep.tolerances == {dtype.value: (1e-4, 1e-5)}
    assert rep.backend == ("fbgemm" if HAS_FBGEMM else "torch")
    assert rep.max_abs_error()["output"] < 1e-6
    for r in rep.ranks:
        rank = r["rank"]
        want = sum(memory.weight_bytes(s.num_rows, s.num_cols, dtype)
                   for t in p.tables for s in t.shards if s.rank == rank)
        assert r["weight_bytes"] == want
        assert r["measured_bytes"] <= r["estimated_bytes"]


@pytest.mark.slow
def test_torch_backend_and_corruption_is_caught(mixed):
    from shardplan.executor import validate_plan

    p = as_inference(mixed, DType.INT4)
    rep = validate_plan(p, steps=1, backend="torch")
    assert rep.passed and rep.backend == "torch"
    holder = p.table("small_3").shards[0].rank
    bad = validate_plan(p, steps=1, corrupt=("small_3", holder))
    assert not bad.passed
    assert {m["table"] for m in bad.mismatches} == {"small_3"}
    with pytest.raises(Exception, match="unsharded quantised reference"):
        bad.raise_on_mismatch()


@pytest.mark.slow
@pytest.mark.parametrize("dtype", ["int8", "int4"])
def test_cli_solve_validate_profile_export(tmp_path, dtype):
    """The issue's bar: an int8 and an int4 inference plan solve on a CPU topology from a
    table file, validate equal to the reference, profile and export."""
    tables = tmp_path / "tables.yaml"
    # inference favours data-parallel replicas (no communication); TorchRec's quantised
    # sharders take TW/RW/CW only, so the tables say so
    allowed = "{sharding_types: [table_wise, row_wise, column_wise]}"
    tables.write_text(
        "name: served\nbatch_size: 64\nmode: inference\ntables:\n" + "".join(
            f"  - {{name: {n}, num_embeddings: {r}, embedding_dim: {d}, pooling_factor: {pf}, "
            f"constraints: {allowed}}}\n"
            for n, r, d, pf in (("big_a", 400000, 64, 4), ("big_b", 300000, 32, 8),
                                ("small_c", 5000, 16, 2), ("small_d", 20000, 32, 1))),
        encoding="utf-8")
    out = tmp_path / f"q-{dtype}.json"
    res = runner.invoke(app, ["solve", "cpu-4", "--tables", str(tables), "--mode", "inference",
                              "--dtype", dtype, "--batch-size", "64", "--out", str(out)])
    assert res.exit_code == 0, res.output
    doc = json.loads(out.read_text())
    assert doc["workload"]["mode"] == "inference"
    res = runner.invoke(app, ["validate", str(out), "--mode", "inference"])
    assert res.exit_code == 0, res.output
    assert "equals the unsharded quantised reference" in res.output
    csv_path = tmp_path / "p.csv"
    res = runner.invoke(app, ["profile", str(out), "--steps", "2", "--warmup", "1",
                              "--out", str(csv_path)])
    assert res.exit_code == 0, res.output
    rows = csv_path.read_text().splitlines()
    assert rows[0].startswith("rank,stage,estimated_ms,measured_ms")
    fwd = [r.split(",") for r in rows[1:] if ",fwd_compute," in r]
    assert len(fwd) == 4 and all(float(r[3]) > 0 and float(r[2]) > 0 for r in fwd)
    bwd = [r.split(",") for r in rows[1:] if ",bwd_compute," in r]
    assert all(float(r[2]) == 0 and float(r[3]) == 0 for r in bwd)
    exp = tmp_path / "trec.json"
    res = runner.invoke(app, ["export", str(out), "--format", "torchrec", "--out", str(exp)])
    assert res.exit_code == 0, res.output
    kernels = {e["compute_kernel"] for e in json.loads(exp.read_text())["plan"][""].values()}
    assert kernels == {"quant"}


# ------------------------------------------------------------------------------------------
# cost model: inference coefficients
# ------------------------------------------------------------------------------------------


def _cpu_profile_pair():
    from shardplan.estimators.profiles import profile_for_device

    prof = profile_for_device("CPU")
    assert prof.coefficients.inference, "the shipped CPU profile carries an inference section"
    bare = dataclasses.replace(prof, coefficients=dataclasses.replace(prof.coefficients,
                                                                      inference={}))
    return prof, bare


def test_inference_section_leaves_training_pricing_alone():
    prof, bare = _cpu_profile_pair()
    topo = load_topology("cpu-4")
    w = dataclasses.replace(forced([S.TABLE_WISE, S.ROW_WISE], DType.FP16), mode=Mode.TRAINING)
    a = assignment_of(plan(w, topo))
    from shardplan.plans import rank_costs

    with_, without = (rank_costs(a, topo, default_cost_model(w, topo, profile=p))
                      for p in (prof, bare))
    assert [c.perf.as_tuple() for c in with_] == [c.perf.as_tuple() for c in without]
    assert [c.memory for c in with_] == [c.memory for c in without]


def test_inference_is_priced_with_its_coefficients_and_dequantisation():
    from shardplan.estimators.cost_options import Component

    prof, bare = _cpu_profile_pair()
    topo = load_topology("cpu-4")
    w = forced([S.TABLE_WISE], DType.INT8)
    p = plan(w, topo)
    o = p.table(w.tables[0].name)
    opt = assignment_of(p).options[0]
    items = dict(default_cost_model(w, topo, profile=prof).shard_items(opt, 0, 0))
    items_bare = dict(default_cost_model(w, topo, profile=bare).shard_items(opt, 0, 0))
    ids = w.global_batch(topo.world_size) * w.tables[0].pooling_factor
    want_ms = ids * o.embedding_dim * prof.coefficients.dequant_s_per_value * 1e3
    assert items[Component.DEQUANTIZE].perf.fwd_compute == pytest.approx(want_ms)
    assert want_ms > 0 and items_bare[Component.DEQUANTIZE].perf.fwd_compute == 0
    assert items[Component.LOOKUP].perf.fwd_compute != items_bare[Component.LOOKUP].perf.fwd_compute


def test_inference_fit_recovers_known_coefficients():
    """Points the model itself predicts under known inference coefficients come back."""
    from shardplan.executor.calibrate import LookupPoint
    from shardplan.executor.calibrate_inference import _with_theta, fit_inference, predict_fwd_ms

    _, bare = _cpu_profile_pair()
    topo = load_topology("cpu-4")
    pts = [LookupPoint(rows=r, dim=d, pooling_factor=pf, batch=b, dtype=dt, tables=t,
                       fwd_ms=0.0, bwd_ms=0.0)
           for r in (1000, 50000) for d in (16, 64) for pf in (1.0, 8.0) for b in (256, 2048)
           for dt in QUANT_DTYPES for t in (1, 3)]
    truth = _with_theta(bare, [2.5, 40.0, 3.0, 0.2])
    y = predict_fwd_ms(pts, topo, truth)
    pts = [dataclasses.replace(p, fwd_ms=float(v)) for p, v in zip(pts, y)]
    section, err = fit_inference(pts, topo, bare)
    assert err < 1e-6
    assert section == pytest.approx({"lookup_bandwidth_efficiency": 0.4,
                                     "kernel_overhead_us": 40.0, "per_table_overhead_us": 3.0,
                                     "dequant_ns_per_value": 0.2}, rel=1e-3)
