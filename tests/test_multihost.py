"""Two torchrun agents on this machine (2 nodes x 2 processes, c10d rendezvous on 127.0.0.1)
validate a plan with TWRW, RW, DP and TW tables on a 2-host CPU topology: a real multi-host
run of the executor on loopback (docs/executor.md has the command)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest

from shardplan.plans import save_plan
from test_executor import mixed_plan


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
@pytest.mark.parametrize("pipeline", ["--pipeline", "--no-pipeline"])
def test_two_torchrun_agents_validate_a_two_host_plan(tmp_path, pipeline):
    p = mixed_plan("cpu-2x2")
    kinds = {t.sharding_type.short for t in p.tables}
    assert {"TWRW", "RW", "DP", "TW"} <= kinds
    plan_path = tmp_path / "plan.json"
    save_plan(p, plan_path)
    out = tmp_path / "result.json"
    port = _free_port()
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "2",
           "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}", "--rdzv-id", "sp",
           "-m", "shardplan.executor.launch", "validate", str(plan_path), "--steps", "2",
           pipeline, "--out", str(out)]
    agents = [subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True) for _ in range(2)]
    logs = []
    for a in agents:
        try:
            logs.append(a.communicate(timeout=300)[0])
        except subprocess.TimeoutExpired:
            for b in agents:
                b.kill()
            pytest.fail("torchrun agents did not finish in 300 s")
    assert all(a.returncode == 0 for a in agents), "\n".join(x[-3000:] for x in logs)
    res = json.loads(out.read_text())
    assert len(res) == 4
    assert all(not r["mismatches"] for r in res), res[0]["mismatches"][:3]
    assert all(r["pipelined"] is (pipeline == "--pipeline") for r in res)
    assert "table_row_wise" in res[0]["groups"] and res[0]["num_dp_tables"] == 1
