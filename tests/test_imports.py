"""Every module of the package imports on its own, in a fresh interpreter (so an import cycle
that another import order hides still fails here), and the planner needs no torch."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {"shardplan": ROOT / "shardplan", "shardplan.estimators": ROOT / "estimators",
            "shardplan.cli": ROOT / "cli"}


def _modules() -> list[str]:
    out = []
    for pkg, folder in PACKAGES.items():
        for f in sorted(folder.rglob("*.py")):
            rel = f.relative_to(folder).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            out.append(".".join([pkg, *parts]))
    return sorted(set(out))


MODULES = _modules()


def test_the_list_covers_the_package():
    assert {"shardplan.cli.commands", "shardplan.parsing", "shardplan.explain",
            "shardplan.compare", "shardplan.sweep", "shardplan.solvers.diagnose",
            "shardplan.estimators.recorded", "shardplan.distributed"} <= set(MODULES)


# Run in a fresh interpreter that loads the third-party libraries once, then forks one child
# per shardplan module: each child starts with no shardplan module loaded, so a cycle among
# them fails there exactly as in a fresh process, without paying numpy/pandas/matplotlib each
# time.
_DRIVER = """
import importlib, os, sys
import numpy, pandas, matplotlib, networkx, pulp, yaml, rich.console, typer  # noqa: F401
assert not [m for m in sys.modules if m.split('.')[0] == 'shardplan']
failed = []
for name in sys.argv[1:]:
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        try:
            importlib.import_module(name)
            msg = b''
        except BaseException as exc:
            msg = f'{type(exc).__name__}: {exc}'.encode()
        os.write(w, msg)
        os._exit(1 if msg else 0)
    os.close(w)
    out = os.read(r, 4096).decode()
    os.close(r)
    _, status = os.waitpid(pid, 0)
    if status != 0:
        failed.append(f'{name}: {out or status}')
print('\\n'.join(failed))
sys.exit(1 if failed else 0)
"""


def test_every_module_imports_alone():
    """One fresh process per module: ``import shardplan.cli.commands`` used to fail with a
    circular ImportError that importing ``shardplan.cli.app`` first hid."""
    r = subprocess.run([sys.executable, "-c", _DRIVER, *MODULES], capture_output=True,
                       text=True, cwd=ROOT, timeout=900)
    assert r.returncode == 0, (r.stdout + r.stderr)[-4000:]


@pytest.mark.parametrize("module", ["shardplan", "shardplan.cli.app", "shardplan.report",
                                    "shardplan.distributed", "shardplan.compare"])
def test_planning_needs_no_torch(module):
    code = (f"import sys, {module}\n"
            "assert 'torch' not in sys.modules, 'torch was imported'\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                       timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
