"""Breakdown: a plan's estimates per rank, shard, component and stage, as a DataFrame."""

from __future__ import annotations

import pytest

from shardplan.errors import SpecError
from shardplan.estimators import (
    CostModelOptions,
    EmbeddingCostModel,
    assignment_of,
    breakdown,
    cost_model_of,
    default_cost_model,
    per_rank,
)
from shardplan.estimators.breakdown import COLUMNS
from shardplan.plans import rank_costs
from shardplan.planner import plan
from shardplan.types import LANES


@pytest.fixture
def planned(topo16, dozen):
    return plan(dozen, topo16, solver="greedy")


def test_rows_sum_to_the_plan_per_rank(planned):
    df = breakdown(planned)
    assert list(df.columns) == COLUMNS
    sums = per_rank(df)
    for r in planned.ranks:
        row = sums.loc[r.rank]
        assert row["total_ms"] == pytest.approx(r.total_ms, abs=1e-5)
        assert row["hbm_bytes"] == pytest.approx(r.memory_bytes.hbm, abs=1.0)
        assert row["ddr_bytes"] == pytest.approx(r.memory_bytes.ddr, abs=1.0)
        for stage, v in r.estimated_ms.as_dict().items():
            assert row[f"{stage}_ms"] == pytest.approx(v, abs=1e-5)
        for lane, v in r.estimated_ms.lanes_dict().items():
            assert row[f"{lane}_ms"] == pytest.approx(v, abs=1e-5)
    # the step time composes the ranks' lanes: every stage at its slowest rank
    step = cost_model_of(planned).step
    assert step.makespan(sums[[f"{ln.value}_ms" for ln in LANES]].to_numpy()) == pytest.approx(
        planned.summary.makespan_ms, abs=1e-5)
    assert sums["total_ms"].iloc[0] <= planned.summary.makespan_ms + 1e-5


def test_assignment_matches_rank_costs(planned, topo16, dozen):
    a = assignment_of(planned)
    cm = default_cost_model(dozen, topo16)
    df = breakdown(a, workload=dozen, topology=topo16, cost_model=cm)
    expected = rank_costs(a, topo16, cm)
    got = df.groupby("rank")[["hbm_bytes", "fwd_compute_ms", "grad_send_ms", "grad_recv_ms"]].sum()
    for r, c in enumerate(expected):
        assert got.loc[r, "hbm_bytes"] == pytest.approx(c.memory.hbm, rel=1e-9)
        assert got.loc[r, "fwd_compute_ms"] == pytest.approx(c.perf.fwd_compute, rel=1e-9)
        assert got.loc[r, "grad_send_ms"] == pytest.approx(c.perf.grad_send, rel=1e-9)
        assert got.loc[r, "grad_recv_ms"] == pytest.approx(c.perf.grad_recv, rel=1e-9)
    # every sharding group the plan uses appears once per rank
    groups = df[(df["kind"] == "group") & (df["rank"] == 0)]
    assert set(groups["sharding_type"]) == {o.sharding_type.value for o in a.options}


def test_every_shard_and_table_is_explained(planned):
    df = breakdown(planned, ranks=[0, 15])
    assert set(df["rank"]) == {0, 15}
    shards = df[df["kind"] == "shard"]
    placed = {(t.name, i) for t in planned.tables for i, s in enumerate(t.shards)
              if s.rank in (0, 15)}
    assert set(zip(shards["table"], shards["shard"])) == placed
    every = df[(df["kind"] == "everywhere") & (df["rank"] == 0)]
    assert set(every["table"]) == {t.name for t in planned.tables}
    assert (df["hbm_bytes"] >= 0).all()


def test_recorded_model_is_rebuilt(topo16, dozen):
    cm = EmbeddingCostModel(dozen, topo16, options=CostModelOptions(pipeline_depth=1,
                                                                    pipelined=False))
    p = plan(dozen, topo16, cost_model=cm, solver="greedy")
    again = cost_model_of(p)
    assert again.options == cm.options
    assert again.describe() == cm.describe()
    sums = per_rank(breakdown(p), again.step)
    lanes = sums[[f"{ln.value}_ms" for ln in LANES]].to_numpy()
    assert again.step.makespan(lanes) == pytest.approx(p.summary.makespan_ms, abs=1e-5)


def test_deterministic(planned):
    a, b = breakdown(planned), breakdown(planned)
    assert a.equals(b)


def test_bad_calls(planned, topo16):
    with pytest.raises(SpecError, match="workload"):
        breakdown(assignment_of(planned))
    with pytest.raises(SpecError, match="ranks"):
        breakdown(planned, ranks=[99])
