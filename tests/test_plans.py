"""Plans: build from an assignment, JSON round trip (byte-identical), invariant checks."""

from __future__ import annotations

import dataclasses
import json

import pytest

from shardplan.errors import PlanError
from shardplan.planner import plan
from shardplan.plans import check_plan, plan_from_json, plan_to_dict, plan_to_json
from shardplan.types import Shard, ShardingType


@pytest.fixture
def small_plan(topo16, dozen):
    return plan(dozen, topo16, solver="greedy")


def test_json_round_trip_is_byte_identical(small_plan) -> None:
    text = plan_to_json(small_plan)
    again = plan_from_json(text)
    assert again == small_plan
    assert plan_to_json(again) == text


def test_json_has_the_documented_fields(small_plan) -> None:
    d = json.loads(plan_to_json(small_plan))
    assert d["format_version"] == 2
    assert set(d["summary"]) >= {"makespan_ms", "lower_bound_ms", "solver"}
    t = d["tables"][0]
    assert set(t) >= {"name", "num_embeddings", "embedding_dim", "sharding_type", "shards"}
    assert set(t["shards"][0]) >= {"rank", "row_offset", "num_rows", "col_offset", "num_cols", "placement"}
    r = d["ranks"][0]
    assert set(r) >= {"rank", "memory_bytes", "capacity_bytes", "estimated_ms"}
    assert "total" in r["estimated_ms"] and set(r["memory_bytes"]) == {"hbm", "ddr"}
    assert d["provenance"]["inputs_sha256"] and d["provenance"]["shardplan_version"]


def test_plan_is_deterministic(topo16, dozen) -> None:
    a = plan_to_dict(plan(dozen, topo16, solver="greedy"))
    b = plan_to_dict(plan(dozen, topo16, solver="greedy"))
    for d in (a, b):
        d["summary"].pop("solve_time_s")
    assert a == b


def test_makespan_composes_the_ranks(small_plan) -> None:
    """The step time is every stage at its slowest rank (the cost model's StepModel), at
    least the slowest rank's own time."""
    from shardplan.estimators import cost_model_of

    step = cost_model_of(small_plan).step
    lanes = [r.estimated_ms.as_tuple() for r in small_plan.ranks]
    assert small_plan.summary.makespan_ms == pytest.approx(step.makespan(lanes), abs=2e-6)
    assert small_plan.summary.makespan_ms >= max(r.total_ms for r in small_plan.ranks) - 1e-6
    check_plan(small_plan)


def _replace_table(p, name, **changes):
    tables = tuple(dataclasses.replace(t, **changes) if t.name == name else t for t in p.tables)
    return dataclasses.replace(p, tables=tables)


def test_check_plan_rejects_dropped_shard(small_plan) -> None:
    t = next(t for t in small_plan.tables if len(t.shards) > 1
             and t.sharding_type is not ShardingType.DATA_PARALLEL)
    bad = _replace_table(small_plan, t.name, shards=t.shards[1:])
    with pytest.raises(PlanError, match=t.name):
        check_plan(bad)


def test_check_plan_rejects_overlap(small_plan) -> None:
    t = small_plan.tables[0]
    s = t.shards[0]
    extra = Shard(rank=s.rank, row_offset=0, num_rows=1, col_offset=0, num_cols=1)
    grown = dataclasses.replace(s, num_rows=s.num_rows)  # keep the first as is
    bad = _replace_table(small_plan, t.name, shards=(grown, extra) + t.shards[1:])
    with pytest.raises(PlanError):
        check_plan(bad)


def test_check_plan_rejects_bad_rank(small_plan) -> None:
    t = small_plan.tables[0]
    moved = (dataclasses.replace(t.shards[0], rank=999),) + t.shards[1:]
    with pytest.raises(PlanError, match="rank 999"):
        check_plan(_replace_table(small_plan, t.name, shards=moved))


def test_malformed_json_is_a_plan_error() -> None:
    with pytest.raises(PlanError, match="not valid JSON"):
        plan_from_json("{", "p.json")
    with pytest.raises(PlanError, match="format_version"):
        plan_from_json(json.dumps({"format_version": 99}), "p.json")
