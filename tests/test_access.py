"""Access skew: id order, measured hit curves, row-block shares; parsed, written, costed."""

from __future__ import annotations

import pytest

from shardplan.errors import SpecError
from shardplan.estimators.compute import block_share, hit_rate, popularity_cdf
from shardplan.loaders import workload_from_csv, workload_from_dict, workload_to_dict
from shardplan.types import AccessSkew, IdOrder

ROWS = 40_000_000


def _workload(access: dict) -> dict:
    return {"name": "w", "batch_size": 64, "tables": [
        {"name": "t", "num_embeddings": 1000, "embedding_dim": 16, "access": access}]}


def test_hashed_blocks_share_by_rows_whatever_the_skew():
    a = AccessSkew(zipf_exponent=1.05)
    assert a.id_order is IdOrder.HASHED
    assert block_share(a, 0, ROWS // 8, ROWS) == pytest.approx(1 / 8)
    assert block_share(None, 100, 300, 1000) == pytest.approx(0.3)


def test_frequency_ordered_zipf_loads_the_first_block():
    a = AccessSkew(zipf_exponent=1.05, id_order=IdOrder.FREQUENCY)
    shares = [block_share(a, i * ROWS // 8, ROWS // 8, ROWS) for i in range(8)]
    # the measurement: block 0 of a 40M-row table over one 8-GPU host gets ~92%
    assert shares[0] == pytest.approx(0.92, abs=0.01)
    assert sum(shares) == pytest.approx(1.0, abs=1e-9)
    assert all(a > b for a, b in zip(shares, shares[1:]))


def test_hot_rows_frequency_order():
    a = AccessSkew(hot_row_fraction=0.1, hot_access_fraction=0.9, id_order=IdOrder.FREQUENCY)
    assert block_share(a, 0, 100, 1000) == pytest.approx(0.9)
    assert block_share(a, 100, 900, 1000) == pytest.approx(0.1)
    assert block_share(a, 0, 50, 1000) == pytest.approx(0.45)


def test_measured_hit_curve_is_interpolated_and_beats_the_model():
    curve = ((0.01, 0.3), (0.1, 0.7))
    a = AccessSkew(zipf_exponent=1.05, hit_curve=curve)
    assert hit_rate(a, 0.01, ROWS) == pytest.approx(0.3)
    assert hit_rate(a, 0.055, ROWS) == pytest.approx(0.5)
    assert hit_rate(a, 0.005, ROWS) == pytest.approx(0.15)
    assert hit_rate(a, 0.55, ROWS) == pytest.approx(0.85)
    # the model still decides row-block loads
    assert popularity_cdf(a, 0.01, ROWS) != pytest.approx(0.3)
    only = AccessSkew(hit_curve=curve, id_order=IdOrder.FREQUENCY)
    assert block_share(only, 0, ROWS // 100, ROWS) == pytest.approx(0.3)


@pytest.mark.parametrize("bad", [
    dict(hit_curve=((0.2, 0.5), (0.1, 0.6))),  # ratios not increasing
    dict(hit_curve=((0.1, 0.6), (0.2, 0.5))),  # rates decreasing
    dict(hit_curve=((1.0, 1.0),)),  # ratio out of (0, 1)
    dict(hit_curve=()),
    dict(),  # nothing given
    dict(zipf_exponent=1.0, hot_row_fraction=0.1, hot_access_fraction=0.5),
])
def test_bad_access_is_refused(bad):
    with pytest.raises(ValueError):
        AccessSkew(**bad)


def test_yaml_round_trip_and_errors():
    w = workload_from_dict(_workload({"zipf_exponent": 1.1, "id_order": "frequency",
                                      "hit_curve": [[0.05, 0.4], [0.2, 0.8]]}), "w.yaml")
    a = w.tables[0].access
    assert a.id_order is IdOrder.FREQUENCY and a.hit_curve == ((0.05, 0.4), (0.2, 0.8))
    again = workload_from_dict(workload_to_dict(w), "again")
    assert again.tables[0].access == a
    with pytest.raises(SpecError, match="id_order"):
        workload_from_dict(_workload({"zipf_exponent": 1.1, "id_order": "sorted"}), "w.yaml")
    with pytest.raises(SpecError, match=r"hit_curve\[0\]"):
        workload_from_dict(_workload({"hit_curve": [[0.1, 0.2, 0.3]]}), "w.yaml")
    with pytest.raises(SpecError, match="hit_curve"):
        workload_from_dict(_workload({"hit_curve": [[0.3, 0.2], [0.1, 0.4]]}), "w.yaml")


def test_csv_id_order_column():
    w = workload_from_csv("name,num_embeddings,embedding_dim,pooling_factor,zipf_exponent,id_order\n"
                          "a,100,8,2,1.05,frequency\nb,100,8,2,,\n", "t.csv")
    assert w.tables[0].access.id_order is IdOrder.FREQUENCY
    assert w.tables[1].access is None
