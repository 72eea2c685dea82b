"""Shared fixtures: a small 2-host x 8-GPU topology, a dozen tables, a CPU topology."""

from __future__ import annotations

import pytest

from shardplan.loaders import load_problem, load_topology
from shardplan.types import (
    AccessSkew,
    DeviceModel,
    DType,
    HostGroup,
    HostSpec,
    Link,
    LinkType,
    NetworkType,
    Optimizer,
    TableSpec,
    Topology,
    Workload,
)

GiB = 2**30


def make_topology(hosts: int = 2, devices_per_host: int = 8, hbm_gib: float = 80.0,
                  name: str = "test") -> Topology:
    """An H100-like cluster of ``hosts`` x ``devices_per_host`` devices."""
    return Topology(
        name=name,
        hbm_reserved_fraction=0.1,
        host_groups=(HostGroup(
            name="h100", hosts=hosts, devices_per_host=devices_per_host,
            device=DeviceModel(model="H100-SXM-80GB", hbm_capacity_bytes=int(hbm_gib * GiB),
                               hbm_bandwidth_bytes_per_s=3.35e12),
            host=HostSpec(ddr_capacity_bytes=2048 * GiB, ddr_bandwidth_bytes_per_s=614.4e9,
                          pcie_bandwidth_bytes_per_s=64e9),
            intra_host_link=Link(type=LinkType.NVLINK4, bandwidth_bytes_per_s=450e9, latency_s=2e-6),
            network=Link(type=NetworkType.INFINIBAND, bandwidth_bytes_per_s=400e9, latency_s=5e-6),
        ),),
    )


def make_workload(n: int = 12, batch_size: int = 512) -> Workload:
    """``n`` tables of varied size, dim and pooling factor (deterministic)."""
    tables = []
    for i in range(n):
        tables.append(TableSpec(
            name=f"t{i}", num_embeddings=10 ** (3 + i % 5) + 7 * i, embedding_dim=(16, 32, 64, 128)[i % 4],
            pooling_factor=float(1 + (i * 7) % 20), dtype=(DType.FP32, DType.FP16)[i % 2],
            optimizer=(None, Optimizer.SGD, Optimizer.ADAM)[i % 3],
            access=AccessSkew(zipf_exponent=1.1) if i % 3 == 0 else None))
    return Workload(name="dozen", tables=tuple(tables), batch_size=batch_size)


@pytest.fixture
def topo16() -> Topology:
    return make_topology()


@pytest.fixture
def dozen() -> Workload:
    return make_workload()


@pytest.fixture
def cpu4() -> Topology:
    return load_topology("cpu-4")


@pytest.fixture
def dcnv2():
    return load_problem("dgx-h100-2x8")
