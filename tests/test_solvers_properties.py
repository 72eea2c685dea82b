"""Hypothesis-generated workloads and topologies: every solver's plan tiles every table,
fits in memory, is no better than the lower bound, and is the same on a second run."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shardplan.errors import InfeasiblePlanError
from shardplan.planner import plan
from shardplan.plans import check_plan
from shardplan.types import (
    DeviceModel,
    DType,
    HostGroup,
    HostSpec,
    Link,
    LinkType,
    NetworkType,
    Optimizer,
    Topology,
    TableSpec,
    Workload,
)

GiB = 2**30
SOLVERS = ("auto", "greedy", "local_search", "size_lookup_greedy", "random")


@st.composite
def problems(draw):
    hosts = draw(st.integers(1, 2))
    dph = draw(st.integers(1, 4))
    hbm = draw(st.sampled_from([0.25, 1.0, 16.0, 80.0]))
    topo = Topology(name="h", hbm_reserved_fraction=0.1, host_groups=(HostGroup(
        name="g", hosts=hosts, devices_per_host=dph,
        device=DeviceModel(model="X", hbm_capacity_bytes=int(hbm * GiB),
                           hbm_bandwidth_bytes_per_s=2e12),
        host=HostSpec(ddr_capacity_bytes=64 * GiB, ddr_bandwidth_bytes_per_s=2e11,
                      pcie_bandwidth_bytes_per_s=3.2e10),
        intra_host_link=Link(type=LinkType.NVLINK3, bandwidth_bytes_per_s=3e11, latency_s=2e-6),
        network=Link(type=NetworkType.INFINIBAND, bandwidth_bytes_per_s=1e11, latency_s=5e-6)),))
    n = draw(st.integers(1, 7))
    tables = tuple(TableSpec(
        name=f"t{i}", num_embeddings=draw(st.integers(2, 3_000_000)),
        embedding_dim=4 * draw(st.integers(1, 64)),
        pooling_factor=float(draw(st.integers(1, 60))),
        dtype=draw(st.sampled_from([DType.FP32, DType.FP16])),
        optimizer=draw(st.sampled_from([Optimizer.SGD, Optimizer.ROWWISE_ADAGRAD, Optimizer.ADAM])))
        for i in range(n))
    return Workload(name="hyp", tables=tables, batch_size=draw(st.sampled_from([16, 256]))), topo


@settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck))
@given(problems(), st.sampled_from(SOLVERS))
def test_plan_invariants(problem, solver):
    work, topo = problem
    try:
        p = plan(work, topo, solver=solver, time_limit_s=2.0)
    except InfeasiblePlanError as e:
        assert e.suggestions, "an infeasible problem must say what would fix it"
        return
    check_plan(p)  # tiling, DP replicas, ranks exist, memory within capacity per tier
    assert p.summary.makespan_ms >= p.summary.lower_bound_ms * (1 - 1e-6)
    again = plan(work, topo, solver=solver, time_limit_s=2.0)
    assert [(t.name, t.shards) for t in again.tables] == [(t.name, t.shards) for t in p.tables]


@settings(max_examples=8, deadline=None, suppress_health_check=list(HealthCheck))
@given(problems())
def test_auto_not_worse_than_greedy_or_baselines(problem):
    work, topo = problem
    try:
        auto = plan(work, topo, solver="auto", time_limit_s=2.0).summary.makespan_ms
    except InfeasiblePlanError:
        return
    for other in ("greedy", "local_search", "lookup_greedy", "size_greedy", "dim_greedy",
                  "size_lookup_greedy", "random"):
        try:
            ms = plan(work, topo, solver=other, time_limit_s=2.0).summary.makespan_ms
        except InfeasiblePlanError:
            continue
        assert auto <= ms * (1 + 1e-9), (other, auto, ms)
