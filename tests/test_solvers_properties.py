"""Hypothesis-generated workloads and topologies: every solver's plan tiles every table,
fits in memory, is no better than the lower bound, and is the same on a second run."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shardplan.errors import InfeasiblePlanError
from shardplan.planner import plan
from shardplan.plans import check_plan
from shardplan.solvers import SOLVERS as REGISTRY
from shardplan.types import (
    DeviceModel,
    DType,
    HostGroup,
    HostSpec,
    Link,
    LinkType,
    NetworkType,
    Optimizer,
    PlacementKind,
    TableConstraints,
    TableSpec,
    Topology,
    Workload,
)

GiB = 2**30
#: every registered solver, the ILP included: they all promise the same invariants
SOLVERS = tuple(sorted(REGISTRY))


def _group(name: str, hosts: int, dph: int, hbm: float, model: str) -> HostGroup:
    return HostGroup(
        name=name, hosts=hosts, devices_per_host=dph,
        device=DeviceModel(model=model, hbm_capacity_bytes=int(hbm * GiB),
                           hbm_bandwidth_bytes_per_s=2e12),
        host=HostSpec(ddr_capacity_bytes=64 * GiB, ddr_bandwidth_bytes_per_s=2e11,
                      pcie_bandwidth_bytes_per_s=3.2e10),
        intra_host_link=Link(type=LinkType.NVLINK3, bandwidth_bytes_per_s=3e11, latency_s=2e-6),
        network=Link(type=NetworkType.INFINIBAND, bandwidth_bytes_per_s=1e11, latency_s=5e-6))


@st.composite
def problems(draw):
    """Workloads and topologies with one or two host groups, tight HBM (UVM placements),
    pinned tables, placement constraints, co-location and separation groups."""
    dph = draw(st.integers(1, 4))
    groups = [_group("g", draw(st.integers(1, 2)), dph,
                     draw(st.sampled_from([0.25, 1.0, 16.0, 80.0])), "X")]
    if draw(st.booleans()):  # a second host group: another device, the same devices per host
        groups.append(_group("h", 1, dph, draw(st.sampled_from([0.5, 8.0])), "Y"))
    topo = Topology(name="h", hbm_reserved_fraction=0.1, host_groups=tuple(groups))
    world = topo.world_size
    n = draw(st.integers(1, 7))
    tables = []
    for i in range(n):
        cons = {}
        if draw(st.integers(0, 4)) == 0:
            cons["pinned_ranks"] = tuple(sorted(draw(st.sets(st.integers(0, world - 1),
                                                             min_size=1, max_size=world))))
        if draw(st.integers(0, 4)) == 0:
            cons["placements"] = (draw(st.sampled_from(
                [PlacementKind.UVM_CACHING, PlacementKind.UVM])), PlacementKind.HBM)
        tables.append(TableSpec(
            name=f"t{i}", num_embeddings=draw(st.integers(2, 3_000_000)),
            embedding_dim=4 * draw(st.integers(1, 64)),
            pooling_factor=float(draw(st.integers(1, 60))),
            dtype=draw(st.sampled_from([DType.FP32, DType.FP16])),
            optimizer=draw(st.sampled_from([Optimizer.SGD, Optimizer.ROWWISE_ADAGRAD,
                                            Optimizer.ADAM])),
            constraints=TableConstraints(**cons)))
    colocate, separate = (), ()
    if n >= 3 and draw(st.booleans()):
        colocate = (("t0", "t1"),)
    if n >= 4 and draw(st.booleans()):
        separate = (("t2", "t3"),)
    return Workload(name="hyp", tables=tuple(tables), batch_size=draw(st.sampled_from([16, 256])),
                    colocate=colocate, separate=separate), topo


@settings(max_examples=16, deadline=None, suppress_health_check=list(HealthCheck))
@given(problems(), st.sampled_from(SOLVERS))
def test_plan_invariants(problem, solver):
    # a budget no instance this small uses up: the solvers stop on work limits, and their
    # clocks are only safety nets, so a busy machine must not change the plan
    work, topo = problem
    try:
        p = plan(work, topo, solver=solver, time_limit_s=30.0)
    except InfeasiblePlanError as e:
        assert e.suggestions, "an infeasible problem must say what would fix it"
        return
    check_plan(p)  # tiling, DP replicas, ranks exist, memory within capacity per tier
    assert p.summary.makespan_ms >= p.summary.lower_bound_ms * (1 - 1e-6)
    again = plan(work, topo, solver=solver, time_limit_s=30.0)
    assert [(t.name, t.shards) for t in again.tables] == [(t.name, t.shards) for t in p.tables]


@settings(max_examples=8, deadline=None, suppress_health_check=list(HealthCheck))
@given(problems())
def test_auto_not_worse_than_greedy_or_baselines(problem):
    work, topo = problem
    try:
        auto = plan(work, topo, solver="auto", time_limit_s=30.0).summary.makespan_ms
    except InfeasiblePlanError:
        return
    for other in ("greedy", "local_search", "lookup_greedy", "size_greedy", "dim_greedy",
                  "size_lookup_greedy", "random"):
        try:
            ms = plan(work, topo, solver=other, time_limit_s=30.0).summary.makespan_ms
        except InfeasiblePlanError:
            continue
        assert auto <= ms * (1 + 1e-9), (other, auto, ms)
