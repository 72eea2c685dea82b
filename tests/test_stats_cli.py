"""`shardplan stats` through typer's CliRunner: the written workload loads and solves, the
report is self-contained, and every bad input is exit 1 with one line naming the file, the
line and the field, and writes nothing."""

from __future__ import annotations

import gzip
import re
import sys

import numpy as np
import pytest
from typer.testing import CliRunner

from shardplan.cli.app import EXIT_BAD_INPUT, EXIT_OK, app
from shardplan.loaders import load_workload
from test_stats import criteo_lines, movielens_file, scramble, write_lines, zipf_ids

runner = CliRunner()


def run(*args: str):
    return runner.invoke(app, [str(a) for a in args])


def assert_bad_input(result, *needles: str) -> None:
    assert result.exit_code == EXIT_BAD_INPUT, result.output
    text = result.output.strip()
    assert "Traceback" not in text, text
    assert len(text.splitlines()) == 1, text
    for n in needles:
        assert n in text, text


@pytest.fixture(scope="module")
def day(tmp_path_factory):
    rng = np.random.default_rng(3)
    n = 20_000
    cats = {0: scramble(zipf_ids(rng, 1.1, 3000, n)).tolist(),
            1: [int(v) if i % 2 else None for i, v in enumerate(rng.integers(0, 40, n))],
            2: zipf_ids(rng, 0.9, 2000, n).tolist()}
    return write_lines(tmp_path_factory.mktemp("day") / "day_0.gz", criteo_lines(cats, n), gz=True)


def test_stats_writes_a_workload_that_solves(day, tmp_path):
    out, rep = tmp_path / "w.yaml", tmp_path / "rep"
    r = run("stats", day, "--format", "criteo", "--hash-size", "2500", "--embedding-dim", "16",
            "--batch-size", "256", "--out", out, "--report", rep)
    assert r.exit_code == EXIT_OK, r.output
    assert "t_cat_0" in r.output and "wrote" in r.output
    w = load_workload(out)
    assert len(w.tables) == 26 and w.batch_size == 256
    t0 = w.table("t_cat_0")
    assert t0.num_embeddings <= 2500 and t0.embedding_dim == 16
    assert t0.access.zipf_exponent == pytest.approx(1.1, abs=0.1) and t0.access.hit_curve
    assert w.table("t_cat_1").pooling_factor == pytest.approx(0.5)
    assert w.table("t_cat_2").access.id_order.value == "frequency"
    assert "ids hashed modulo 2500" in w.source and "day_0.gz" in w.source
    # the report: one self-contained page, PNGs inline, every number in stats.json
    page = (rep / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 2
    assert not re.search(r'src="(?!data:)', page)
    assert "t_cat_25" in page and (rep / "stats.json").stat().st_size > 1000
    plan = tmp_path / "plan.json"
    s = run("solve", "cpu-4", "--tables", out, "--solver", "greedy", "--out", plan)
    assert s.exit_code == EXIT_OK, s.output
    assert plan.exists()


def test_movielens_and_parquet_through_the_cli(tmp_path):
    ml = movielens_file(tmp_path / "ratings.csv", [4, 9, 2])
    out = tmp_path / "ml.yaml"
    r = run("stats", ml, "-f", "movielens", "--history", "3", "-o", out)
    assert r.exit_code == EXIT_OK, r.output
    w = load_workload(out)
    assert [t.name for t in w.tables] == ["user_id", "movie_id"]
    again = tmp_path / "ml2.yaml"  # same input, same bytes (the shuffled LRU order is seeded)
    assert run("stats", ml, "-f", "movielens", "--history", "3", "-o", again).exit_code == 0
    assert again.read_bytes() == out.read_bytes()
    assert w.table("movie_id").features == ("movie_id", "user_history")
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    path = tmp_path / "p.parquet"
    pq.write_table(pa.table({"a": [1, 2, 3, 1], "b": [[1, 2], [], [3], [4, 5, 6]]}), path)
    r = run("stats", path, "-f", "parquet", "--features", "b", "-o", tmp_path / "p.yaml")
    assert r.exit_code == EXIT_OK, r.output
    assert load_workload(tmp_path / "p.yaml").table("t_b").pooling_factor == 1.5
    # every written workload solves
    for w in (out, tmp_path / "p.yaml"):
        s = run("solve", "cpu-4", "--tables", w, "--solver", "greedy",
                "--out", w.with_suffix(".json"))
        assert s.exit_code == EXIT_OK, s.output


def test_kjt_through_the_cli_solves(tmp_path):
    torch = pytest.importorskip("torch")
    kjt_mod = pytest.importorskip("torchrec.sparse.jagged_tensor")
    rng = np.random.default_rng(2)
    batches = []
    for _ in range(3):
        lengths = rng.integers(0, 4, 16)
        batches.append(kjt_mod.KeyedJaggedTensor.from_lengths_sync(
            keys=["item"], values=torch.tensor(rng.integers(0, 50, int(lengths.sum()))),
            lengths=torch.tensor(lengths)))
    path, out = tmp_path / "b.pt", tmp_path / "k.yaml"
    torch.save(batches, path)
    r = run("stats", path, "-f", "kjt", "-o", out)
    assert r.exit_code == EXIT_OK, r.output
    assert load_workload(out).table("t_item").pooling_factor == pytest.approx(
        float(np.mean(np.concatenate([b.lengths().numpy() for b in batches]))), rel=1e-3)
    s = run("solve", "cpu-4", "--tables", out, "--solver", "greedy", "--out", tmp_path / "k.json")
    assert s.exit_code == EXIT_OK, s.output


GOOD = criteo_lines({}, 1)[0]


@pytest.mark.parametrize("name,text,needles", [
    ("cut.tsv", GOOD + "\n" + GOOD[:50], ["cut.tsv:2", "cat_2", "field 17 of 40",
                                          "the file ends mid-line"]),
    ("cutnum.tsv", GOOD + "\n" + GOOD.rsplit("\t", 1)[0] + "\t", ["cutnum.tsv:2", "cat_25",
                                                                   "the file ends mid-line"]),
    ("cols.tsv", GOOD + "\n" + GOOD + "\t00000001\n", ["cols.tsv:2", "field 41",
                                                         "the line has 41 fields, not 40"]),
    ("few.tsv", GOOD + "\n" + GOOD.rsplit("\t", 2)[0] + "\n", ["few.tsv:2", "cat_24: missing",
                                                                "38 of 40 fields"]),
    ("hex.tsv", GOOD + "\n" + GOOD.replace("0000abcd", "0000abcg", 3) + "\n",
     ["hex.tsv:2", "cat_0", "'0000abcg' is not a hex id"]),
    ("empty.tsv", "", ["empty.tsv", "the file is empty"]),
])
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, name, text, needles):
    path = tmp_path / name
    path.write_text(text)
    out, rep = tmp_path / "w.yaml", tmp_path / "rep"
    r = run("stats", path, "--format", "criteo", "--out", out, "--report", rep)
    assert_bad_input(r, *needles)
    assert not out.exists() and not rep.exists()
    assert list(tmp_path.iterdir()) == [path]  # no temporary file left either


def assert_usage_error(result, *needles: str) -> None:
    """A command line the parser rejects: exit 1 with click's usage message."""
    assert result.exit_code == EXIT_BAD_INPUT, result.output
    assert "Traceback" not in result.output
    for n in needles:
        assert n in result.output, result.output


def test_wrong_format(tmp_path):
    ml = movielens_file(tmp_path / "ratings.csv", [2])
    assert_usage_error(run("stats", ml, "--format", "csv"), "--format", "'csv' is not one of")
    r = run("stats", ml, "--format", "criteo", "-o", tmp_path / "w.yaml")
    assert_bad_input(r, "ratings.csv:1", "looks like --format movielens")
    assert not (tmp_path / "w.yaml").exists()


def test_bad_paths_and_options(tmp_path, day):
    assert_bad_input(run("stats", tmp_path / "nope.tsv", "-f", "criteo"), "nope.tsv")
    assert_bad_input(run("stats", day, "-f", "criteo", "-o", tmp_path / "w.csv"), ".yaml")
    assert_bad_input(run("stats", day, "-f", "criteo", "-o", tmp_path / "no" / "w.yaml"),
                     "folder does not exist")
    assert_usage_error(run("stats", day, "-f", "criteo", "--sample", "0"), "--sample")


def test_missing_extra_is_exit_1(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "datasketches", None)
    path = write_lines(tmp_path / "d.tsv", criteo_lines({}, 2))
    assert_bad_input(run("stats", path, "-f", "criteo", "-o", tmp_path / "w.yaml"),
                     "stats extra", "pip install datasketches pyarrow")


def test_truncated_gzip_is_exit_1(tmp_path):
    data = gzip.compress(("\n".join(criteo_lines({}, 3000)) + "\n").encode())
    cut = tmp_path / "cut.gz"
    cut.write_bytes(data[:-40])
    assert_bad_input(run("stats", cut, "-f", "criteo", "-o", tmp_path / "w.yaml"),
                     "cut.gz", "truncated gzip stream")


def test_planner_and_stats_import_without_the_extra(tmp_path):
    """`shardplan --help`, `import shardplan.stats` and the README's first screen
    (scripts/demo.sh: `shardplan solve dgx-h100-2x8`, here with the greedy solver) need
    neither datasketches nor pyarrow nor torch; `stats` itself then says what to install."""
    import subprocess

    code = ("import sys\n"
            "class Block:\n"
            "    def find_spec(self, name, path=None, target=None):\n"
            "        if name.split('.')[0] in ('datasketches', 'pyarrow', 'torch', 'torchrec'):\n"
            "            raise ImportError(name)\n"
            "sys.meta_path.insert(0, Block())\n"
            "import shardplan.stats, shardplan.stats.report\n"
            "from typer.testing import CliRunner\n"
            "from shardplan.cli.app import app\n"
            "r = CliRunner().invoke(app, ['--help'])\n"
            "assert r.exit_code == 0 and 'stats' in r.output, r.output\n"
            f"plan = {str(tmp_path / 'plan.json')!r}\n"
            "r = CliRunner().invoke(app, ['solve', 'dgx-h100-2x8', '--solver', 'greedy',\n"
            "                             '--out', plan])\n"
            "assert r.exit_code == 0 and 'makespan' in r.output, r.output\n"
            f"r = CliRunner().invoke(app, ['stats', {str(tmp_path / 'plan.json')!r},\n"
            "                             '-f', 'criteo'])\n"
            "assert r.exit_code == 1 and 'pip install datasketches pyarrow' in r.output, r.output\n"
            "assert not any(m.split('.')[0] in ('datasketches', 'pyarrow', 'torch')\n"
            "               for m in sys.modules), sorted(sys.modules)\n"
            "print('ok')\n")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0 and p.stdout.strip() == "ok", p.stdout + p.stderr
    assert (tmp_path / "plan.json").exists()
