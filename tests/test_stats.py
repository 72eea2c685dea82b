"""shardplan.stats on small files with known ground truth: uniform ids show no skew, Zipf ids
give their exponent back, missing values and list lengths give their pooling factors, LRU hit
curves equal a plain LRU simulation, id order is found, sketches agree with exact counts."""

from __future__ import annotations

import dataclasses
import gzip
import sys
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest

from shardplan.errors import SpecError
from shardplan.stats import (
    CountMode,
    DataFormat,
    LruOrder,
    MissingDependencyError,
    SampleMode,
    StatsOptions,
    access_of,
    collect_stats,
    workload_of,
)
from shardplan.stats.counting import LengthHistogram
from shardplan.stats.lru import LruSampler, hit_curve, shuffled, stack_distances
from shardplan.stats.order import spearman
from shardplan.stats.types import Phase
from shardplan.stats.zipf import fit_zipf, harmonic
from shardplan.types import IdOrder

# Tolerances, stated: a Zipf exponent measured on 100k lookups over 1,000 rows comes back
# within 0.05; sketched distinct counts within 3% (HLL lg_k 14: 0.8% standard error).
ZIPF_TOL = 0.05
DISTINCT_REL_TOL = 0.03

NUM_CAT = 26


def zipf_ids(rng: np.random.Generator, s: float, rows: int, n: int) -> np.ndarray:
    """``n`` ids in 0..rows-1, id of popularity rank r drawn with probability ~ r^-s."""
    p = np.arange(1, rows + 1, dtype=np.float64) ** -s
    return rng.choice(rows, size=n, p=p / p.sum())


def scramble(ids: np.ndarray) -> np.ndarray:
    """A fixed bijection of 32-bit ids that hides id order (like Criteo's hashing)."""
    return (ids.astype(np.uint64) * np.uint64(2654435761)) % np.uint64(2**32)


def criteo_lines(cats: dict[int, list[int | None]], n: int, label: int = 0) -> list[str]:
    """``n`` Criteo lines: column ``cat_j`` from ``cats[j]`` (None: missing), other
    categorical columns a constant id, integer features a small number."""
    cols = [[f"{v:08x}" if v is not None else "" for v in cats[j]] if j in cats
            else ["0000abcd"] * n for j in range(NUM_CAT)]
    ints = "\t".join(["7"] * 13)
    return [f"{label}\t{ints}\t" + "\t".join(c[i] for c in cols) for i in range(n)]


def write_lines(path: Path, lines: list[str], gz: bool = False) -> Path:
    text = "\n".join(lines) + "\n"
    if gz:
        with gzip.open(path, "wt") as f:
            f.write(text)
    else:
        path.write_text(text)
    return path


def table(result, name):
    return next(t for t in result.tables if t.name == name)


@pytest.fixture(scope="module")
def criteo_file(tmp_path_factory) -> Path:
    """cat_0 uniform over 500 ids; cat_1 Zipf(1.0) over 1,000 hashed ids; cat_2 Zipf(0.7) over
    1,000 frequency-ordered ids (id 0 the most frequent); cat_3 missing on every other line;
    cat_4 uniform over 5,000 ids (for hashing)."""
    rng = np.random.default_rng(7)
    n = 100_000
    cats = {
        0: rng.integers(0, 500, n).tolist(),
        1: scramble(zipf_ids(rng, 1.0, 1000, n)).tolist(),
        2: zipf_ids(rng, 0.7, 1000, n).tolist(),
        3: [int(v) if i % 2 == 0 else None for i, v in enumerate(rng.integers(0, 100, n))],
        4: rng.integers(0, 5000, n).tolist(),
    }
    return write_lines(tmp_path_factory.mktemp("criteo") / "day_0", criteo_lines(cats, n))


@pytest.fixture(scope="module")
def criteo_result(criteo_file):
    return collect_stats([criteo_file], DataFormat.CRITEO)


def test_uniform_ids_show_no_skew(criteo_result):
    t = table(criteo_result, "t_cat_0")
    assert t.ids.rows == 500
    assert t.ids.zipf is not None and t.ids.zipf.exponent < 0.05
    assert access_of(t.ids) is None  # written as uniform
    # an LRU cache of 10% of uniform rows hits about 10% of lookups
    assert dict(t.ids.hit_curve)[0.1] == pytest.approx(0.1, abs=0.02)


@pytest.mark.parametrize("name,exponent", [("t_cat_1", 1.0), ("t_cat_2", 0.7)])
def test_zipf_ids_give_their_exponent(criteo_result, name, exponent):
    t = table(criteo_result, name)
    assert t.ids.rows == 1000
    assert t.ids.zipf.exponent == pytest.approx(exponent, abs=ZIPF_TOL)
    assert t.ids.zipf.ks_distance < 0.05
    a = access_of(t.ids)
    assert a.zipf_exponent == pytest.approx(exponent, abs=ZIPF_TOL)
    assert a.hit_curve == tuple((r, round(h, 4)) for r, h in t.ids.hit_curve)
    # hottest 1% of rows: the measured share is near the law's H(10, s) / H(1000, s)
    law = harmonic(10, exponent) / harmonic(1000, exponent)
    assert t.ids.hot_row_fraction == pytest.approx(0.01)
    assert t.ids.hot_access_fraction == pytest.approx(law, rel=0.1)


def test_id_order_found(criteo_result):
    assert table(criteo_result, "t_cat_1").ids.id_order.order is IdOrder.HASHED
    found = table(criteo_result, "t_cat_2").ids.id_order
    assert found.order is IdOrder.FREQUENCY and found.spearman < -0.5
    assert access_of(table(criteo_result, "t_cat_2").ids).id_order is IdOrder.FREQUENCY


def test_half_missing_gives_pooling_half(criteo_result):
    t = table(criteo_result, "t_cat_3")
    assert t.pooling_factor == pytest.approx(0.5)
    assert (t.features[0].pooling.p50, t.features[0].pooling.max) == (0, 1)
    assert table(criteo_result, "t_cat_0").pooling_factor == 1.0


def test_hash_size_caps_rows(criteo_file):
    r = collect_stats([criteo_file], DataFormat.CRITEO, StatsOptions(hash_size=1000))
    assert table(r, "t_cat_4").ids.rows == 1000  # 5,000 ids modulo 1,000
    assert table(r, "t_cat_0").ids.rows == 500  # fewer ids than the hash size stay as many
    assert all(t.ids.rows <= 1000 for t in r.tables)


@pytest.mark.parametrize("exact_limit", [1 << 20, 300])
def test_hash_size_rows_are_mlperfs_min_cardinality(tmp_path, exact_limit):
    """MLPerf sizes a hashed table min(cardinality, hash size): 1,000 scattered ids modulo
    1,000 collide into fewer hashed ids but still make a 1,000-row table; exact and sketched
    (HLL past ``exact_limit``) counts agree."""
    rng = np.random.default_rng(4)
    n = 30_000
    ids = {0: np.r_[np.arange(1000), rng.integers(0, 1000, n - 1000)],
           1: np.r_[np.arange(600), rng.integers(0, 600, n - 600)],
           2: np.r_[np.arange(2500), rng.integers(0, 2500, n - 2500)]}
    path = write_lines(tmp_path / "d", criteo_lines(
        {j: scramble(rng.permutation(v)).tolist() for j, v in ids.items()}, n))
    r = collect_stats([path], DataFormat.CRITEO, StatsOptions(hash_size=1000,
                                                              exact_limit=exact_limit))
    t0 = table(r, "t_cat_0").ids
    assert t0.distinct < 900 and t0.rows == 1000  # collisions, yet min(1000, 1000) rows
    assert table(r, "t_cat_1").ids.rows == pytest.approx(600, rel=DISTINCT_REL_TOL)
    assert table(r, "t_cat_2").ids.rows == 1000  # capped
    assert workload_of(r).tables[0].num_embeddings == 1000


def test_gzip_reads_the_same(criteo_file, tmp_path):
    gz = tmp_path / "day_0.gz"
    gz.write_bytes(gzip.compress(criteo_file.read_bytes()))
    a = collect_stats([criteo_file], DataFormat.CRITEO, StatsOptions(sample=20_000))
    b = collect_stats([gz], DataFormat.CRITEO, StatsOptions(sample=20_000))
    assert a.tables == b.tables


def test_samples_prefix_and_uniform(criteo_file):
    prefix = collect_stats([criteo_file], DataFormat.CRITEO, StatsOptions(sample=1234))
    assert prefix.records == 1234
    uni = [collect_stats([criteo_file], DataFormat.CRITEO, StatsOptions(
        sample=5000, sample_mode=SampleMode.UNIFORM, seed=s)) for s in (3, 3, 4)]
    assert [u.records for u in uni] == [5000] * 3
    assert uni[0].records_total == 100_000
    assert uni[0].tables == uni[1].tables  # same seed, same sample
    assert uni[0].tables != uni[2].tables
    # the uniform sample sees the whole file: half of cat_3 missing, within binomial noise
    assert table(uni[2], "t_cat_3").pooling_factor == pytest.approx(0.5, abs=0.03)


def test_progress_counts_reads_and_measures(criteo_file):
    seen = []
    r = collect_stats([criteo_file], DataFormat.CRITEO, StatsOptions(
        sample=5000, sample_mode=SampleMode.UNIFORM), progress=seen.append)
    phases = [u.phase for u in seen]
    assert phases == sorted(phases, key=[Phase.COUNTING, Phase.READING, Phase.MEASURING].index)
    size = criteo_file.stat().st_size
    for phase in Phase:
        ups = [u for u in seen if u.phase is phase]
        assert ups and all(a.done <= b.done for a, b in zip(ups, ups[1:]))
    assert [(u.done, u.total) for u in seen if u.phase is Phase.READING][-1] == (size, size)
    measuring = [u for u in seen if u.phase is Phase.MEASURING]
    assert len(measuring) == NUM_CAT and measuring[-1].total == NUM_CAT
    assert measuring[-1].records == r.records == 5000


def test_sketches_agree_with_exact_counts(tmp_path):
    rng = np.random.default_rng(11)
    n = 60_000
    ids = scramble(zipf_ids(rng, 1.0, 30_000, n))
    path = write_lines(tmp_path / "d", criteo_lines({5: ids.tolist()}, n))
    exact = table(collect_stats([path], DataFormat.CRITEO), "t_cat_5").ids
    sk = table(collect_stats([path], DataFormat.CRITEO, StatsOptions(exact_limit=2000)),
               "t_cat_5").ids
    assert (exact.count_mode, sk.count_mode) == (CountMode.EXACT, CountMode.SKETCH)
    assert sk.distinct == pytest.approx(exact.distinct, rel=DISTINCT_REL_TOL)
    assert sk.zipf.exponent == pytest.approx(exact.zipf.exponent, abs=ZIPF_TOL)
    assert sk.hit_curve == exact.hit_curve  # the LRU stream does not depend on counting


def lru_hits(stream: list[int], capacity: int, start: int) -> int:
    """Hits of a plain OrderedDict LRU of ``capacity`` rows, counted from lookup ``start``."""
    cache: OrderedDict[int, None] = OrderedDict()
    hits = 0
    for t, x in enumerate(stream):
        if x in cache:
            cache.move_to_end(x)
            hits += t >= start
        else:
            cache[x] = None
            if len(cache) > capacity:
                cache.popitem(last=False)
    return hits


def test_stack_distances_match_an_lru_stack():
    rng = np.random.default_rng(0)
    for _ in range(50):
        x = rng.integers(0, int(rng.integers(1, 40)), int(rng.integers(1, 200)))
        stack: list[int] = []
        want = []
        for v in x.tolist():
            if v in stack:
                want.append(len(stack) - 1 - stack.index(v))
                stack.remove(v)
            else:
                want.append(-1)
            stack.append(v)
        assert stack_distances(x).tolist() == want


def test_hit_curve_equals_lru_simulation():
    rng = np.random.default_rng(1)
    rows = 2000
    stream = zipf_ids(rng, 0.9, rows, 40_000).astype(np.uint64)
    ratios = (0.01, 0.05, 0.2)
    s = LruSampler(len(stream))
    s.add(stream)
    assert s.rate == 1.0
    curve = hit_curve(s.sample(), rows, ratios)
    start = len(stream) // 2
    for r, h in curve:
        assert h == pytest.approx(lru_hits(stream.tolist(), int(r * rows), start)
                                  / (len(stream) - start), abs=1e-12)


@pytest.mark.parametrize("exponent", [0.8, 1.2])
def test_sampled_hit_curve_is_close(exponent):
    """SHARDS at rate 1/16 (and its size correction) stays within 0.05 of the full curve."""
    rng = np.random.default_rng(2)
    rows = 50_000
    stream = scramble(zipf_ids(rng, exponent, rows, 200_000))
    ratios = (0.01, 0.05, 0.2)
    curves = []
    for budget in (len(stream), 20_000):
        s = LruSampler(budget)
        for chunk in np.array_split(stream, 20):
            s.add(chunk)
        curves.append(hit_curve(s.sample(), rows, ratios))
    assert s.rate < 0.2 and len(s.sample().values) <= 20_000
    for (_, a), (_, b) in zip(*curves):
        assert b == pytest.approx(a, abs=0.05)


def test_few_ids_fall_back_to_a_window_of_lookups():
    """A table of few ids, each looked up more often than the budget: spatial sampling would
    drop them all (and SHARDS_adj would then claim every lookup hits); the latest lookups are
    kept instead and the curve is that window's exact LRU curve."""
    rng = np.random.default_rng(3)
    rows = 40
    stream = zipf_ids(rng, 1.0, rows, 100_000).astype(np.uint64)
    s = LruSampler(4000)
    for chunk in np.array_split(stream, 50):
        s.add(chunk)
    assert s.window and s.used_fraction == pytest.approx(0.04)
    assert s.sample().values.tolist() == stream[-4000:].tolist()  # the latest, in order
    ratios = (0.05, 0.25, 0.5)
    window = stream[-4000:].tolist()
    for r, h in hit_curve(s.sample(), rows, ratios):
        assert h == pytest.approx(lru_hits(window, int(r * rows), 2000) / 2000, abs=1e-12)
    robin = LruSampler(1000)  # 3 ids in turn: a 1- or 2-row LRU never hits
    robin.add(np.arange(30_000, dtype=np.uint64) % 3)
    assert [h for _, h in hit_curve(robin.sample(), 3, (0.4, 0.9))] == [0.0, 0.0]


def test_shuffled_order_gives_the_shuffled_streams_curve():
    """User ids sorted as in MovieLens's ratings.csv: in file order every repeat is a hit; in
    a shuffled order the curve is that of a shuffled stream (an OrderedDict LRU on one)."""
    rng = np.random.default_rng(8)
    per_user = rng.integers(1, 200, 2000)
    users = np.repeat(np.arange(len(per_user)), per_user).astype(np.uint64)
    ratios = (0.01, 0.1)
    s = LruSampler(len(users))
    s.add(users)
    in_file = hit_curve(s.sample(), len(per_user), ratios)
    mixed = hit_curve(shuffled(s.sample(), np.random.default_rng(0)), len(per_user), ratios)
    order = rng.permutation(len(users))
    start = len(users) // 2
    for (r, f), (_, m) in zip(in_file, mixed):
        hits = lru_hits(users[order].tolist(), int(r * len(per_user)), start)
        truth = hits / (len(users) - start)
        assert m == pytest.approx(truth, abs=0.01)
        assert f > 0.95 and f > m + 0.5
    assert sorted(shuffled(s.sample(), np.random.default_rng(0)).values.tolist()) == users.tolist()


def test_movielens_measures_lru_in_a_shuffled_order(tmp_path):
    path = movielens_file(tmp_path / "ratings.csv", [30] * 200, movies=100)
    auto = collect_stats([path], DataFormat.MOVIELENS)
    stream = collect_stats([path], DataFormat.MOVIELENS, StatsOptions(lru_order=LruOrder.STREAM))
    u_auto, u_stream = table(auto, "user_id").ids, table(stream, "user_id").ids
    assert (u_auto.lru_order, u_stream.lru_order) == (LruOrder.SHUFFLED, LruOrder.STREAM)
    # 200 users of 30 ratings each, shuffled: a 10% cache (20 users) hits about 10%
    assert dict(u_auto.hit_curve)[0.1] == pytest.approx(0.1, abs=0.03)
    assert dict(u_stream.hit_curve)[0.01] > 0.9  # sorted by user: repeats back to back
    assert "LRU hit curves in a shuffled order (seed 0)" in workload_of(auto).source
    crit = collect_stats([write_lines(tmp_path / "d", criteo_lines({}, 50))], DataFormat.CRITEO)
    assert crit.tables[0].ids.lru_order is LruOrder.STREAM


def test_fit_zipf_edges():
    assert fit_zipf(np.array([5, 3]), 8, 10) is None  # too few lookups
    assert fit_zipf(np.array([500]), 500, 1) is None  # one row
    f = fit_zipf(np.array([1000] * 10), 10_000, 10)
    assert f.exponent == pytest.approx(0.0, abs=1e-3) and f.ks_distance < 1e-9


def test_spearman_and_pooling_percentiles():
    assert spearman(np.arange(10), np.arange(10)[::-1]) == pytest.approx(-1.0)
    assert spearman(np.arange(10), np.ones(10)) == 0.0
    h = LengthHistogram()
    h.add(np.array([0] * 50 + [1] * 40 + [10] * 9 + [100]))
    p = h.stats()
    assert (p.mean, p.p50, p.p90, p.p99, p.max) == (pytest.approx(2.3), 0, 1, 10, 100)


def test_written_workload_loads_and_costs(criteo_result, tmp_path):
    from shardplan.loaders import load_workload
    from shardplan.stats import workload_yaml

    w = workload_of(criteo_result)
    path = tmp_path / "w.yaml"
    path.write_text(workload_yaml(w))
    back = load_workload(path)
    assert back == w
    assert "shardplan stats --format criteo" in back.source and "all 100000 records" in back.source
    assert {t.name for t in back.tables} == {f"t_cat_{j}" for j in range(NUM_CAT)}


def test_measured_hit_curve_decides_the_cost_models_cache_hits(criteo_result):
    """The written hit curve is what the cost model takes for UVM caching, not the Zipf law,
    and the frequency-ordered table's row blocks follow its skew."""
    from shardplan.estimators import default_cost_model, hit_rate
    from shardplan.estimators.compute import block_share, popularity_cdf
    from shardplan.loaders import load_topology
    from shardplan.types import Placement, PlacementKind, ShardingOption, ShardingType, ShardSpec

    w = workload_of(criteo_result)
    t = w.table("t_cat_1")
    measured = dict(table(criteo_result, "t_cat_1").ids.hit_curve)
    for r, h in measured.items():
        assert hit_rate(t.access, r, t.num_embeddings) == pytest.approx(h, abs=1e-4)
    zipf = popularity_cdf(t.access, 0.05, t.num_embeddings)
    assert zipf > measured[0.05] + 0.05  # the ideal static cache beats an LRU
    # the cost model: a UVM-cached shard costs more with the measured (lower) hit rate
    topo = load_topology("dgx-h100-2x8")  # HBM far faster than PCIe
    opt = ShardingOption(table="t_cat_1", sharding_type=ShardingType.TABLE_WISE,
                         placement=Placement(kind=PlacementKind.UVM_CACHING, cache_ratio=0.05),
                         shards=(ShardSpec(row_offset=0, num_rows=t.num_embeddings, col_offset=0,
                                           num_cols=t.embedding_dim),), candidate_ranks=(None,))
    no_curve = dataclasses.replace(w, tables=tuple(
        x if x.name != "t_cat_1" else dataclasses.replace(
            x, access=dataclasses.replace(x.access, hit_curve=None)) for x in w.tables))
    with_curve = default_cost_model(w, topo).shard_cost(opt, 0, 0)
    with_law = default_cost_model(no_curve, topo).shard_cost(opt, 0, 0)
    assert with_curve.perf.fwd_compute > with_law.perf.fwd_compute
    # id order: the frequency-ordered table's first row block takes its hottest rows
    f = w.table("t_cat_2")
    assert block_share(f.access, 0, f.num_embeddings // 10, f.num_embeddings) > 0.3
    assert block_share(t.access, 0, t.num_embeddings // 10, t.num_embeddings) == \
        pytest.approx(0.1, abs=0.001)


# ------------------------------------------------------------------------------ other formats


def test_parquet_scalar_and_list_columns(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    rng = np.random.default_rng(5)
    n = 20_000
    lengths = rng.integers(0, 9, n)
    lists = [rng.integers(0, 300, k).tolist() for k in lengths]
    lists[3] = None  # a null list counts as length 0
    user = [int(u) if i % 4 else None for i, u in enumerate(rng.integers(0, 1000, n))]
    tbl = pa.table({"user": pa.array(user, pa.int64()), "tags": pa.array(lists, pa.list_(pa.int32())),
                    "score": pa.array(rng.random(n))})
    path = tmp_path / "part.parquet"
    pq.write_table(tbl, path, row_group_size=7000)
    r = collect_stats([path], DataFormat.PARQUET)
    tags = table(r, "t_tags")
    want = (lengths.sum() - lengths[3]) / n
    assert tags.pooling_factor == pytest.approx(want)
    p = tags.features[0].pooling
    assert (p.p50, p.p90, p.p99, p.max) == tuple(
        int(np.percentile(np.r_[np.delete(lengths, 3), 0], q, method="inverted_cdf"))
        for q in (50, 90, 99, 100))
    assert table(r, "t_user").pooling_factor == pytest.approx(0.75)
    assert table(r, "t_tags").ids.rows == len({x for li in lists if li for x in li})
    assert ("score", "not integer ids (left out)") in r.skipped
    # Arrow IPC reads the same, and --features picks columns
    arrow = tmp_path / "part.arrow"
    with pa.ipc.new_file(arrow, tbl.schema) as wr:
        wr.write_table(tbl)
    r2 = collect_stats([arrow], DataFormat.PARQUET, StatsOptions(features=("tags",)))
    assert [t.name for t in r2.tables] == ["t_tags"] and r2.tables[0] == tags


def test_parquet_bad_columns(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    path = tmp_path / "neg.parquet"
    pq.write_table(pa.table({"item": pa.array([3, 4, -1, 5])}), path)
    with pytest.raises(SpecError, match=r"neg\.parquet: row 3\.item: id -1 is negative"):
        collect_stats([path], DataFormat.PARQUET)
    with pytest.raises(SpecError, match=r"--features: no column 'nope'"):
        collect_stats([path], DataFormat.PARQUET, StatsOptions(features=("nope",)))


def movielens_file(path: Path, per_user: list[int], movies: int = 50, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    lines = ["userId,movieId,rating,timestamp"]
    for u, k in enumerate(per_user, start=1):
        for m in rng.choice(movies, size=k, replace=False):
            lines.append(f"{u},{m + 1},{rng.integers(1, 11) / 2},{1_000_000 + int(m)}")
    return write_lines(path, lines)


def test_movielens_tables_and_history(tmp_path):
    per_user = [3, 10, 1, 25, 7]
    path = movielens_file(tmp_path / "ratings.csv", per_user)
    h = 5
    r = collect_stats([path], DataFormat.MOVIELENS, StatsOptions(history=h))
    assert [t.name for t in r.tables] == ["user_id", "movie_id"]
    assert r.records == sum(per_user)
    assert table(r, "user_id").ids.rows == len(per_user)
    movie = table(r, "movie_id")
    assert [f.name for f in movie.features] == ["movie_id", "user_history"]
    hist = sum(min(h, k) for n in per_user for k in range(n)) / sum(per_user)
    assert movie.features[1].pooling.mean == pytest.approx(hist)
    assert movie.pooling_factor == pytest.approx(1 + hist)
    assert movie.features[1].pooling.max == h


def test_movielens_history_needs_user_order(tmp_path):
    path = tmp_path / "ratings.csv"
    path.write_text("userId,movieId,rating,timestamp\n1,5,4.0,1\n2,6,3.5,2\n1,7,5.0,3\n")
    with pytest.raises(SpecError, match=r"ratings\.csv:4: userId: ratings are not grouped"):
        collect_stats([path], DataFormat.MOVIELENS, StatsOptions(history=10))
    assert collect_stats([path], DataFormat.MOVIELENS).records == 3  # no history: fine


def test_kjt_batches(tmp_path):
    torch = pytest.importorskip("torch")
    kjt_mod = pytest.importorskip("torchrec.sparse.jagged_tensor")
    rng = np.random.default_rng(9)
    batches, all_lengths = [], []
    for _ in range(4):
        lengths = rng.integers(0, 6, 32)
        all_lengths.append(lengths)
        values = rng.integers(0, 100, int(lengths.sum()))
        batches.append(kjt_mod.KeyedJaggedTensor.from_lengths_sync(
            keys=["f1", "f2"], values=torch.tensor(np.r_[values, np.arange(32)]),
            lengths=torch.tensor(np.r_[lengths, np.ones(32, np.int64)])))
    path = tmp_path / "batches.pt"
    torch.save(batches, path)
    r = collect_stats([path], DataFormat.KJT)
    assert r.records == 128
    assert table(r, "t_f1").pooling_factor == pytest.approx(np.concatenate(all_lengths).mean())
    assert table(r, "t_f2").pooling_factor == 1.0 and table(r, "t_f2").ids.rows == 32


# ------------------------------------------------------------------------------ bad input


@pytest.mark.parametrize("lines,match", [
    (["0\t" + "\t".join(["1"] * 13) + "\t" + "\t".join(["0000abcd"] * 25)],
     r":1: cat_25: missing: the line has 39 of 40 fields"),
    (criteo_lines({}, 2) + ["1\t2\t3"], r":3: int_1: the file ends mid-line, in field 3 of 40"),
    # cut off at a field boundary or inside a number: every field parses, the newline is gone
    (criteo_lines({}, 2) + [criteo_lines({}, 1)[0].rsplit("\t", 1)[0] + "\t"],
     r":3: cat_25: the file ends mid-line \(no newline after the last line\)"),
    (criteo_lines({}, 2) + ["0\t7\t1"], r":3: int_1: the file ends mid-line"),
    (criteo_lines({}, 2) + [criteo_lines({}, 1)[0] + "\t0000abcd"],
     r":3: field 41: extra field: the line has 41 fields, not 40"),
    (criteo_lines({}, 2) + ["", criteo_lines({}, 1)[0]], r":3: an empty line"),
    (criteo_lines({}, 2) + [criteo_lines({}, 1)[0][:-3]],
     r":3: cat_25: '0000a' is not a hex id of 8 digits .*the file ends mid-line"),
    (criteo_lines({4: [1, None, 2]}, 3)[:1] + [criteo_lines({}, 1)[0].replace("0000abcd", "00zzabcd", 1)],
     r":2: cat_0: '00zzabcd' is not a hex id"),
    (criteo_lines({}, 1) + [criteo_lines({}, 1)[0].replace("0000abcd", "abcd", 1)],
     r":2: cat_0: 'abcd' is not a hex id of 8 digits"),
    (["2\t" + criteo_lines({}, 1)[0][2:]], r":1: label: '2' is not a label"),
    ([criteo_lines({}, 1)[0].replace("\t7\t", "\tx7\t", 1)], r":1: int_0: 'x7' is not an integer"),
])
def test_bad_criteo_lines_name_line_and_field(tmp_path, lines, match):
    path = tmp_path / "bad.tsv"
    path.write_text("\n".join(lines) + ("\n" if "ends mid-line" not in match else ""))
    with pytest.raises(SpecError, match=match):
        collect_stats([path], DataFormat.CRITEO)


def test_empty_and_truncated_gzip(tmp_path):
    empty = tmp_path / "empty.tsv"
    empty.write_text("")
    with pytest.raises(SpecError, match=r"empty\.tsv: the file is empty"):
        collect_stats([empty], DataFormat.CRITEO)
    data = gzip.compress(("\n".join(criteo_lines({}, 2000)) + "\n").encode())
    cut = tmp_path / "cut.gz"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(SpecError, match=r"cut\.gz: truncated gzip stream"):
        collect_stats([cut], DataFormat.CRITEO)


def test_wrong_format_hints(tmp_path):
    path = movielens_file(tmp_path / "ratings.csv", [2, 2])
    with pytest.raises(SpecError, match=r"ratings\.csv:1: int_0: missing: the line has 1 of 40 "
                                         r"fields.*looks like --format movielens"):
        collect_stats([path], DataFormat.CRITEO)
    day = write_lines(tmp_path / "day_0", criteo_lines({}, 3))
    with pytest.raises(SpecError, match=r"day_0:1: expected the header userId,movieId.*looks "
                                        r"like --format criteo"):
        collect_stats([day], DataFormat.MOVIELENS)
    for fmt in (DataFormat.PARQUET, DataFormat.KJT):
        if fmt is DataFormat.KJT:
            pytest.importorskip("torchrec")
        with pytest.raises(SpecError, match=r"day_0: not a .*looks like --format criteo"):
            collect_stats([day], fmt)


def test_missing_extra_is_one_clear_error(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "datasketches", None)
    path = write_lines(tmp_path / "d", criteo_lines({}, 3))
    with pytest.raises(MissingDependencyError, match=r"stats extra .*pip install datasketches"):
        collect_stats([path], DataFormat.CRITEO)
