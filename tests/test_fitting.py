"""Fitting coefficients through the cost model's own terms (no torch needed)."""

from __future__ import annotations

import numpy as np
import pytest

from shardplan import load_problem
from shardplan.estimators.fitting import (
    THETA_KEYS,
    PlanMeasurement,
    coefficients_of,
    fit_overlap,
    fit_plans,
    predict,
)
from shardplan.executor.calibrate import _REQUIRE, random_assignments
from shardplan.types import LANES, STAGE_LANE_INDEX, Lane, Stage, StepModel

TRUTH = {"inv_lookup": 4.0, "inv_backward": 2.0, "kernel_overhead_us": 150.0,
         "per_table_overhead_us": 20.0, "inv_all_to_all": 8.0, "inv_reduce_scatter": 16.0,
         "inv_all_reduce": 40.0, "lat_all_to_all": 900.0, "lat_reduce_scatter": 300.0,
         "lat_all_reduce": 1200.0}


def _synthetic(theta, topology="cpu-2x2", n=14, seed=5, scale=None):
    """Measurements the model itself makes at ``theta`` (what a perfect model would measure)."""
    topo, work = load_problem(topology)
    assigns = random_assignments(work, topo, n, seed, require=_REQUIRE, share=1 / 3)
    stub = [PlanMeasurement(workload=work, topology=topo, assignment=a,
                            compute_ms=np.zeros((topo.world_size, 2)), comm_ms=np.zeros(4))
            for a in assigns]
    out = []
    fwd, bwd = LANES.index(Lane.FWD_COMPUTE), LANES.index(Lane.BWD_COMPUTE)
    for k, (m, lanes) in enumerate(zip(stub, predict(stub, theta))):
        comm = np.array([lanes[:, list(STAGE_LANE_INDEX[list(Stage).index(st)])].max()
                         for st in Stage if st.is_comm])
        compute = lanes[:, [fwd, bwd]]
        if scale is not None:
            compute = compute * scale[k]
        out.append(PlanMeasurement(workload=work, topology=topo, assignment=m.assignment,
                                   compute_ms=compute, comm_ms=comm))
    return out


def test_random_assignments_force_the_required_types():
    topo, work = load_problem("cpu-2x2")
    assigns = random_assignments(work, topo, 9, 3, require=_REQUIRE, share=1 / 3)
    assert len(assigns) == 9
    for a in assigns[:3]:
        kinds = {o.sharding_type for o in a.options}
        assert set(_REQUIRE) <= kinds


def test_fit_recovers_known_coefficients():
    meas = _synthetic(TRUTH)
    rep = fit_plans(meas)
    assert rep.median_rel_error < 1e-6
    for k in ("inv_lookup", "inv_backward", "kernel_overhead_us", "per_table_overhead_us",
              "inv_all_to_all", "lat_all_to_all", "lat_reduce_scatter", "lat_all_reduce"):
        assert rep.theta[k] == pytest.approx(TRUTH[k], rel=2e-2), k
    co = coefficients_of(rep.theta, "loopback")
    assert co.lookup_bandwidth_efficiency == pytest.approx(0.25, rel=1e-2)
    assert co.collective_bandwidth_efficiency["loopback"] == pytest.approx(1 / 8, rel=1e-2)
    assert co.collective_kind_efficiency["all_to_all"] == pytest.approx(1.0)


def test_fit_says_when_the_data_is_not_the_model():
    meas = _synthetic(TRUTH, scale=np.linspace(0.2, 3.0, 14))
    rep = fit_plans(meas)
    assert rep.median_rel_error > 0.05


def test_theta_keys_cover_the_profile():
    assert set(THETA_KEYS) == set(TRUTH)
    co = coefficients_of({k: 1.0 if k.startswith("inv_") else 0.0 for k in THETA_KEYS}, "loopback")
    assert co.lookup_bandwidth_efficiency == 1.0 and co.kernel_overhead_us == 0.0


def _with_steps(meas, theta, overlap):
    """The measurements with the step times a pipeline hiding ``overlap`` would show."""
    import dataclasses

    step = StepModel(overlap=overlap)
    return [dataclasses.replace(m, pipelined=True, step_ms=step.makespan(lanes))
            for m, lanes in zip(meas, predict(meas, theta))]


@pytest.mark.parametrize("overlap", [0.0, 0.37, 1.0])
def test_fit_overlap_recovers_the_pipelines_overlap(overlap):
    meas = _with_steps(_synthetic(TRUTH), TRUTH, overlap)
    got, err = fit_overlap(meas, TRUTH)
    assert got == pytest.approx(overlap, abs=0.011)
    assert err < 0.01


def test_fit_overlap_needs_pipelined_step_times():
    assert fit_overlap(_synthetic(TRUTH), TRUTH) is None


def test_step_model_overlap_composes_between_max_and_sum():
    stages = np.array([[3.0, 1.0, 1.0, 0.5, 0.5]])  # input dist 3, the rest 3
    assert StepModel(overlap=1.0).compose(stages)[0] == pytest.approx(3.0)
    assert StepModel(overlap=0.0).compose(stages)[0] == pytest.approx(6.0)
    assert StepModel(overlap=0.25).compose(stages)[0] == pytest.approx(3.0 + 0.75 * 3.0)
    assert StepModel(overlap=0.0, pipelined=False).compose(stages)[0] == pytest.approx(6.0)
    with pytest.raises(ValueError, match="overlap"):
        StepModel(overlap=1.5)


def test_fit_ties_reduce_scatter_to_all_to_all_as_on_gloo():
    truth = dict(TRUTH, inv_reduce_scatter=TRUTH["inv_all_to_all"],
                 lat_reduce_scatter=TRUTH["lat_all_to_all"])
    rep = fit_plans(_synthetic(truth), tie={"reduce_scatter": "all_to_all"})
    assert rep.median_rel_error < 1e-6
    for p in ("inv", "lat"):
        assert rep.theta[f"{p}_reduce_scatter"] == rep.theta[f"{p}_all_to_all"]
        assert rep.theta[f"{p}_all_to_all"] == pytest.approx(truth[f"{p}_all_to_all"], rel=2e-2)
    assert not {"inv_reduce_scatter", "lat_reduce_scatter"} & set(rep.unidentified)
    with pytest.raises(ValueError, match="tie"):
        fit_plans(_synthetic(truth), tie={"reduce_scatter": "nonsense"})
