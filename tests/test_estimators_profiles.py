"""Device profiles: the bundled ones, the file format shared with `calibrate`, and errors."""

from __future__ import annotations

import json

import pytest

from conftest import make_workload
from shardplan.errors import SpecError
from shardplan.estimators import (
    DEFAULT_COEFFICIENTS,
    Coefficients,
    ProvenanceKind,
    bundled_profiles,
    default_cost_model,
    load_profile,
    profile_for_device,
    profile_to_dict,
    save_profile,
    with_coefficients,
)
from shardplan.loaders import bundled_topologies, load_topology

CPU_PROFILE = """\
format_version: 1
name: cpu-gloo
device_model: CPU
provenance:
  kind: measured
  date: "2026-11-26"
  hardware: "2-core x86_64 VM"
  command: "shardplan calibrate --out ..."
coefficients:
  lookup_bandwidth_efficiency: 0.5
  backward_bandwidth_efficiency: 0.4
  kernel_overhead_us: 10.0
  per_table_overhead_us: 1.0
  ddr_bandwidth_efficiency: 0.5
  pcie_bandwidth_efficiency: 0.7
  collective_bandwidth_efficiency:
    nvlink4: 0.75
    infiniband: 0.8
    loopback: 1.0
  collective_latency_us:
    all_to_all: 20.0
    reduce_scatter: 20.0
    all_reduce: 30.0
"""

DEVICES = {"A100-SXM-40GB", "A100-SXM-80GB", "H100-SXM-80GB", "H200-SXM-141GB", "L4-24GB", "CPU"}


def test_bundled_profiles_cover_every_device():
    profs = bundled_profiles()
    assert {p.device_model for p in profs.values()} >= DEVICES
    for name, p in profs.items():
        assert p.name == name and p.source.endswith(f"{name}.yaml")
        assert p.provenance.kind in (ProvenanceKind.DATASHEET, ProvenanceKind.MEASURED)
        c = p.coefficients
        assert 0 < c.lookup_bandwidth_efficiency <= 1 and 0 < c.backward_bandwidth_efficiency <= 1


def test_every_bundled_topology_gets_its_own_profile():
    for name in bundled_topologies():
        topo = load_topology(name)
        for g in topo.host_groups:
            assert profile_for_device(g.device.model).name != "defaults", (name, g.device.model)


def test_schema_example_loads(tmp_path):
    f = tmp_path / "cpu-gloo.yaml"
    f.write_text(CPU_PROFILE)
    p = load_profile(f)
    assert p.name == "cpu-gloo" and p.device_model == "CPU"
    assert p.provenance.kind is ProvenanceKind.MEASURED
    assert p.coefficients.collective_latency_us["all_reduce"] == 30.0
    assert p.coefficients.pcie_bandwidth_efficiency == 0.7
    # keys not given keep their defaults
    assert p.coefficients.link_efficiency("roce") == DEFAULT_COEFFICIENTS.link_efficiency("roce")


def test_subset_of_coefficients_is_allowed(tmp_path):
    f = tmp_path / "p.yaml"
    f.write_text("format_version: 1\nname: p\ndevice_model: CPU\nprovenance: {kind: measured}\n"
                 "coefficients:\n  kernel_overhead_us: 42.0\n")
    p = load_profile(f)
    assert p.coefficients.kernel_overhead_us == 42.0
    assert p.coefficients.lookup_bandwidth_efficiency == DEFAULT_COEFFICIENTS.lookup_bandwidth_efficiency


@pytest.mark.parametrize("bad,where", [
    ("lookup_bandwidth_eficiency: 0.5", "lookup_bandwidth_eficiency"),
    ("collective_latency_us: {all_to_al: 1.0}", "all_to_al"),
    ("collective_bandwidth_efficiency: {nvlink9: 0.5}", "nvlink9"),
    ("collective_kind_efficiency: {all_gather: 0.5}", "all_gather"),
    ("collective_kind_efficiency: {all_reduce: 1.5}", "all_reduce"),
])
def test_unknown_keys_name_the_file_and_key(tmp_path, bad, where):
    f = tmp_path / "typo.yaml"
    f.write_text("format_version: 1\nname: p\ndevice_model: CPU\nprovenance: {kind: measured}\n"
                 f"coefficients:\n  {bad}\n")
    with pytest.raises(SpecError) as ei:
        load_profile(f)
    assert str(f) in str(ei.value) and where in str(ei.value)


@pytest.mark.parametrize("text,msg", [
    ("format_version: 2\nname: p\ndevice_model: CPU\nprovenance: {kind: measured}\n", "format_version"),
    ("format_version: 1\nname: p\ndevice_model: CPU\nprovenance: {kind: guessed}\n", "guessed"),
    ("format_version: 1\nname: p\ndevice_model: CPU\nprovenance: {kind: measured}\n"
     "coefficients: {lookup_bandwidth_efficiency: 1.5}\n", "lookup_bandwidth_efficiency"),
    ("format_version: 1\ndevice_model: CPU\nprovenance: {kind: measured}\n", "name"),
])
def test_bad_values_are_spec_errors(tmp_path, text, msg):
    f = tmp_path / "bad.yaml"
    f.write_text(text)
    with pytest.raises(SpecError, match=msg):
        load_profile(f)


def test_missing_file_is_a_spec_error(tmp_path):
    with pytest.raises(SpecError, match="not found"):
        load_profile(tmp_path / "nope.yaml")


def test_round_trip(tmp_path):
    for p in bundled_profiles().values():
        out = save_profile(p, tmp_path / f"{p.name}.yaml")
        q = load_profile(out)
        assert profile_to_dict(q) == profile_to_dict(p)


def test_measured_profile_is_preferred_and_recorded(tmp_path, cpu4):
    f = tmp_path / "cpu-gloo.yaml"
    f.write_text(CPU_PROFILE)
    prof = load_profile(f)
    datasheet = {k: v for k, v in bundled_profiles().items()
                 if v.provenance.kind is ProvenanceKind.DATASHEET}
    assert profile_for_device("CPU", datasheet).name == "cpu"
    assert profile_for_device("CPU", dict(datasheet, **{prof.name: prof})).name == "cpu-gloo"
    w = make_workload(4)
    cm = default_cost_model(w, cpu4, profile=f)
    rec = cm.describe()
    json.dumps(rec)  # serialisable into the plan
    assert rec["profiles"]["cpu"]["name"] == "cpu-gloo"
    assert rec["profiles"]["cpu"]["provenance"]["kind"] == "measured"


def test_coefficients_change_the_estimates(cpu4):
    w = make_workload(4)
    base = default_cost_model(w, cpu4)
    slow = default_cost_model(w, cpu4, profile=with_coefficients(
        profile_for_device("CPU"), lookup_bandwidth_efficiency=0.05))
    from shardplan.enumerators import enumerate_table

    o = enumerate_table(w.tables[2], w, cpu4)[0]
    assert slow.shard_cost(o, 0, 0).perf.fwd_compute > base.shard_cost(o, 0, 0).perf.fwd_compute


def test_profile_for_another_device_is_refused(topo16):
    with pytest.raises(SpecError, match="device model 'CPU'"):
        default_cost_model(make_workload(4), topo16, profile=profile_for_device("CPU"))


def test_unknown_device_falls_back_to_recorded_defaults():
    p = profile_for_device("TPU-v9")
    assert p.name == "defaults" and p.coefficients == Coefficients()


def test_collective_kind_efficiency_is_optional_and_scales_its_collective(tmp_path, cpu4):
    """A profile without the key keeps the old meaning (factor 1); a factor on all_reduce
    slows the DP all-reduce by exactly 1 / factor and leaves the all-to-all alone."""
    from shardplan.enumerators import EnumerationOptions, enumerate_options
    from shardplan.estimators import Component
    from shardplan.types import ShardingType

    head = "format_version: 1\nname: p\ndevice_model: CPU\nprovenance: {kind: measured}\n"
    (tmp_path / "old.yaml").write_text(head + "coefficients: {kernel_overhead_us: 1.0}\n")
    (tmp_path / "new.yaml").write_text(
        head + "coefficients:\n  kernel_overhead_us: 1.0\n"
        "  collective_kind_efficiency: {all_reduce: 0.25}\n")
    old, new = load_profile(tmp_path / "old.yaml"), load_profile(tmp_path / "new.yaml")
    assert dict(old.coefficients.collective_kind_efficiency) == {
        "all_reduce": 1.0, "all_to_all": 1.0, "reduce_scatter": 1.0}
    assert new.coefficients.collective_kind_efficiency["all_reduce"] == 0.25
    # round trip through the file format
    save_profile(new, tmp_path / "again.yaml")
    assert load_profile(tmp_path / "again.yaml").coefficients == new.coefficients
    work = make_workload(3, batch_size=32)
    cm_old, cm_new = (default_cost_model(work, cpu4, profile=p) for p in (old, new))
    opts = enumerate_options(work, cpu4, EnumerationOptions(wide_min_share=0.0))
    t = work.tables[0]
    dp = next(o for o in opts[t.name] if o.sharding_type is ShardingType.DATA_PARALLEL)
    tw = next(o for o in opts[t.name] if o.sharding_type is ShardingType.TABLE_WISE)
    ar = [dict(cm.shard_items(dp, 0, 0))[Component.ALL_REDUCE].perf.dp_sync
          for cm in (cm_old, cm_new)]
    assert ar[0] > 0 and ar[1] == pytest.approx(4 * ar[0], rel=1e-12)
    assert cm_old.shard_cost(tw, 0, 0).perf == cm_new.shard_cost(tw, 0, 0).perf
