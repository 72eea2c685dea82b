"""Loaders: topology and workload YAML, workload CSV, validation errors with file/key/line."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from shardplan.errors import SpecError, TopologyError
from shardplan.loaders import (
    bundled_topologies,
    bundled_workloads,
    load_problem,
    load_topology,
    load_workload,
    resolve_workload_path,
    topology_from_dict,
    topology_to_dict,
    workload_from_dict,
    workload_to_dict,
)
from shardplan.topology import path_link
from shardplan.types import BatchScope, DType, Optimizer, PlacementKind, ShardingType

TOPO = textwrap.dedent("""\
    name: tiny
    host_groups:
      - name: g
        hosts: 2
        devices_per_host: 4
        device: {model: A100-SXM-80GB, hbm_capacity_gib: 80, hbm_bandwidth_gbytes_per_s: 2039}
        host: {ddr_capacity_gib: 1024, ddr_bandwidth_gbytes_per_s: 400, pcie_bandwidth_gbytes_per_s: 32}
        intra_host_link: {type: nvlink3, bandwidth_gbytes_per_s: 300, latency_us: 2}
        network: {type: infiniband, nics_per_host: 4, nic_bandwidth_gbits_per_s: 200, latency_us: 5}
    """)

WORK = textwrap.dedent("""\
    name: w
    batch_size: 256
    tables:
      - name: a
        num_embeddings: 1000
        embedding_dim: 64
        pooling_factor: 2.5
      - name: b
        num_embeddings: 50
        embedding_dim: 16
        dtype: fp16
        optimizer: adam
        features: [f1, f2]
        access: {zipf_exponent: 1.2}
        constraints: {sharding_types: [table_wise, row_wise], placements: [hbm], pinned_ranks: [1]}
    """)


def write(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def test_every_bundled_topology_and_workload_loads() -> None:
    names = bundled_topologies()
    assert {"dgx-a100-1x8", "dgx-h100-2x8", "h100-16x8", "h100-128x8", "hetero-a100-h100",
            "l4-4x8", "cpu-4"} <= set(names)
    for n in names:
        topo, work = load_problem(n)
        assert topo.name == n
        assert work is not None and len(work.tables) > 0
    assert {"criteo-kaggle-dlrm", "dlrm-dcnv2-criteo1tb", "movielens-25m-two-tower"} <= set(bundled_workloads())


def test_bundled_sizes_match_their_names() -> None:
    assert load_topology("h100-128x8").world_size == 1024
    assert load_topology("h100-16x8").world_size == 128
    assert load_topology("dgx-h100-2x8").num_hosts == 2
    hetero = load_topology("hetero-a100-h100")
    assert len({g.device.model for g in hetero.host_groups}) == 2


def test_dcnv2_workload_matches_mlperf() -> None:
    w = load_workload(resolve_workload_path("dlrm-dcnv2-criteo1tb"))
    assert len(w.tables) == 26 and {t.embedding_dim for t in w.tables} == {128}
    assert [t.num_embeddings for t in w.tables][:3] == [40000000, 39060, 17295]
    assert w.tables[20].pooling_factor == 100
    lookups = [t.pooling_factor * t.embedding_dim for t in w.tables]
    assert lookups[20] / sum(lookups) == pytest.approx(0.47, abs=0.01)


def test_topology_yaml_units_and_ranks(tmp_path: Path) -> None:
    topo = load_topology(write(tmp_path, "t.yaml", TOPO))
    assert topo.world_size == 8 and topo.num_hosts == 2
    g = topo.host_groups[0]
    assert g.device.hbm_capacity_bytes == 80 * 2**30
    assert g.network.bandwidth_bytes_per_s == pytest.approx(4 * 200e9 / 8)
    assert g.intra_host_link.latency_s == pytest.approx(2e-6)
    assert topo.ranks_of_host(1) == (4, 5, 6, 7)


def test_graph_paths(tmp_path: Path) -> None:
    topo = load_topology(write(tmp_path, "t.yaml", TOPO))
    intra, inter = path_link(topo, 0, 1), path_link(topo, 0, 5)
    assert intra.bandwidth_bytes_per_s == pytest.approx(300e9)
    assert inter.bandwidth_bytes_per_s == pytest.approx(100e9)  # 4 x 200 Gb/s, the slowest hop
    assert inter.latency_s > intra.latency_s
    g = topo.graph()
    assert g.number_of_nodes() == 8 + 2 + 1


def test_workload_yaml(tmp_path: Path) -> None:
    w = load_workload(write(tmp_path, "w.yaml", WORK))
    a, b = w.tables
    assert a.features == ("a",) and a.dtype is DType.FP32 and a.optimizer is None
    assert w.optimizer_of(a) is Optimizer.ROWWISE_ADAGRAD and w.optimizer_of(b) is Optimizer.ADAM
    assert b.features == ("f1", "f2") and b.access.zipf_exponent == 1.2
    assert b.constraints.sharding_types == (ShardingType.TABLE_WISE, ShardingType.ROW_WISE)
    assert b.constraints.placements == (PlacementKind.HBM,)
    assert w.batch_scope is BatchScope.PER_RANK


def test_dict_round_trips(tmp_path: Path) -> None:
    w = load_workload(write(tmp_path, "w.yaml", WORK))
    assert workload_from_dict(workload_to_dict(w)) == w
    topo = load_topology("hetero-a100-h100")
    assert topology_from_dict(topology_to_dict(topo))[0] == topo


def test_minimal_csv_loads_as_is(tmp_path: Path) -> None:
    p = write(tmp_path, "t.csv", "name,num_embeddings,embedding_dim,pooling_factor\n"
                                 "x,100,8,1\ny,2000,16,3.5\n")
    w = load_workload(p)
    assert [t.name for t in w.tables] == ["x", "y"] and w.tables[1].pooling_factor == 3.5


def test_csv_optional_columns(tmp_path: Path) -> None:
    p = write(tmp_path, "t.csv", "name,num_embeddings,embedding_dim,pooling_factor,dtype,optimizer,features\n"
                                 "x,100,8,1,fp16,sgd,f1;f2\n")
    t = load_workload(p).tables[0]
    assert t.dtype is DType.FP16 and t.optimizer is Optimizer.SGD and t.features == ("f1", "f2")


def test_embedded_workload_and_tables_override(tmp_path: Path) -> None:
    embedded = TOPO + "workload:\n" + textwrap.indent(WORK, "  ")
    p = write(tmp_path, "t.yaml", embedded)
    _, w = load_problem(p)
    assert w.name == "w"
    csv = write(tmp_path, "o.csv", "name,num_embeddings,embedding_dim,pooling_factor\nz,10,4,1\n")
    _, w2 = load_problem(p, csv)
    assert [t.name for t in w2.tables] == ["z"]


# ------------------------------------------------------------------ errors name file, key, line


@pytest.mark.parametrize(
    ("text", "needle", "line"),
    [
        (WORK.replace("num_embeddings: 1000", "num_embeddings: -5"), "tables[0].num_embeddings", 5),
        (WORK.replace("num_embeddings: 1000", "num_embeddings: 0"), "tables[0].num_embeddings", 5),
        (WORK.replace("embedding_dim: 64", "embedding_dim: 0"), "tables[0].embedding_dim", 6),
        (WORK.replace("dtype: fp16", "dtype: fp12"), "unknown value 'fp12'", 11),
        (WORK.replace("pooling_factor: 2.5", "pooling_factr: 2.5"), "unknown key 'pooling_factr'", 7),
        (WORK.replace("name: b", "name: a"), "duplicate table name 'a'", 8),
        ("name: w\nbatch_size: 4\ntables: []\n", "no tables", 3),
        (WORK.replace("batch_size: 256", "batch_size: many"), "expected an integer", 2),
        (WORK.replace("  - name: a\n", "  - name: a\n    bad: [1\n"), "YAML syntax error", None),
    ],
)
def test_workload_errors(tmp_path: Path, text: str, needle: str, line: int | None) -> None:
    p = write(tmp_path, "w.yaml", text)
    with pytest.raises(SpecError) as ei:
        load_workload(p)
    msg = str(ei.value)
    assert str(p) in msg and needle in msg
    if line is not None:
        assert ei.value.line == line
    else:
        assert ei.value.line is not None


def test_csv_non_numeric_cell(tmp_path: Path) -> None:
    p = write(tmp_path, "t.csv", "name,num_embeddings,embedding_dim,pooling_factor\nx,lots,8,1\n")
    with pytest.raises(SpecError) as ei:
        load_workload(p)
    assert "row 1.num_embeddings" in str(ei.value) and ei.value.line == 2 and "lots" in str(ei.value)


def test_csv_missing_column(tmp_path: Path) -> None:
    p = write(tmp_path, "t.csv", "name,num_embeddings,embedding_dim\nx,1,8\n")
    with pytest.raises(SpecError, match="pooling_factor"):
        load_workload(p)


def test_missing_file() -> None:
    with pytest.raises(SpecError, match="not found"):
        load_workload("/nonexistent/w.yaml")
    with pytest.raises(TopologyError, match="bundled"):
        load_topology("no-such-topology")


@pytest.mark.parametrize(
    ("old", "new", "needle"),
    [
        ("hosts: 2", "hosts: 0", "hosts"),
        ("hbm_capacity_gib: 80", "hbm_capacity_gib: -1", "hbm_capacity_gib"),
        ("type: nvlink3", "type: nvlink9", "intra_host_link.type"),
        ("latency_us: 5", "latency_us: 5, speed: 3", "unknown key 'speed'"),
        ("hbm_capacity_gib: 80", "hbm_capacity_gib: 80, hbm_capacity_gb: 80", "give hbm_capacity once"),
        ("devices_per_host: 4", "devices_per_host: four", "expected an integer"),
    ],
)
def test_topology_errors(tmp_path: Path, old: str, new: str, needle: str) -> None:
    p = write(tmp_path, "t.yaml", TOPO.replace(old, new))
    with pytest.raises(TopologyError) as ei:
        load_topology(p)
    assert str(p) in str(ei.value) and needle in str(ei.value)
    assert ei.value.line is not None


def test_docs_examples_load_as_written(tmp_path: Path) -> None:
    """docs/topology-format.md's annotated topology (its `workload:` a bundled name, from any
    folder) and workload load as written; so do examples/."""
    import re

    root = Path(__file__).resolve().parents[1]
    blocks = re.findall(r"```yaml\n(.*?)```", (root / "docs" / "topology-format.md").read_text(),
                        re.S)
    topo = write(tmp_path, "t.yaml", blocks[0])
    t, w = load_problem(topo)
    assert t.name == "dgx-h100-2x8" and w.name == "dlrm-dcnv2-criteo1tb"
    _, w2 = load_problem("dgx-h100-2x8", write(tmp_path, "w.yaml", blocks[1]))
    assert w2.colocate and w2.separate
    t3, w3 = load_problem(root / "examples" / "my-cluster.yaml")
    assert w3.name == "tables" and t3.world_size == 8


def test_workload_path_relative_or_bundled(tmp_path: Path) -> None:
    write(tmp_path, "w.yaml", WORK)
    t, w = load_problem(write(tmp_path, "a.yaml", TOPO + "workload: w.yaml\n"))
    assert w.name == "w"
    _, w = load_problem(write(tmp_path, "b.yaml", TOPO + "workload: small-cpu\n"))
    assert w.name == "small-cpu"
    with pytest.raises(SpecError, match="no workload file") as ei:
        load_problem(write(tmp_path, "c.yaml", TOPO + "workload: nope.yaml\n"))
    assert ei.value.line is not None
