"""The README's "Using it" block runs as written, top to bottom, from a checkout."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def using_it_block() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text[text.index("## Using it"):]
    m = re.search(r"```bash\n(.*?)```", section, re.S)
    assert m, "no bash block under 'Using it'"
    return m.group(1)


def test_block_uses_only_shipped_or_created_files():
    block = using_it_block()
    for path in re.findall(r"examples/[\w./-]+", block):
        assert (ROOT / path).is_file(), f"{path} is not shipped"


@pytest.mark.slow
def test_readme_using_it_runs_verbatim(tmp_path):
    """Each line as written, in order, with ``set -e``: a line that fails (or a file used
    before a line creates it) fails the test, naming the line."""
    block = using_it_block()
    shutil.copytree(ROOT / "examples", tmp_path / "examples")
    venv = tmp_path / ".venv"
    if sys.prefix != sys.base_prefix:  # running inside the venv scripts/setup.sh made
        venv.symlink_to(sys.prefix, target_is_directory=True)
    else:  # no venv: an activate script that puts this Python's scripts on PATH
        (venv / "bin").mkdir(parents=True)
        (venv / "bin" / "activate").write_text(
            f'export PATH="{Path(sys.executable).parent}:$PATH"\n')
    script = "set -euo pipefail\nset -x\n" + block
    env = {k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"} | {"COLUMNS": "80"}
    r = subprocess.run(["bash", "-c", script], cwd=tmp_path, capture_output=True, text=True,
                       env=env, timeout=1800)
    assert r.returncode == 0, (r.stderr[-3000:], r.stdout[-2000:])
    assert "Traceback" not in r.stdout + r.stderr
    for made in ("plan.json", "my-plan.json", "report/report.html", "shards.csv", "w40.yaml",
                 "cmp/compare.csv", "sweep/sweep.png", "my-profile.yaml", "calibrated.json"):
        assert (tmp_path / made).exists(), made
