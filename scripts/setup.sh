#!/usr/bin/env bash
# Create .venv and install shardplan with every extra (executor on CPU, TorchRec, stats, dev tools).
# Idempotent: a second run only checks. Usage: bash scripts/setup.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
VPY=.venv/bin/python
stamp=.venv/.shardplan-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ scripts/setup.sh -nt "$stamp" ]; then
  "$VPY" -m pip install -q --upgrade pip
  # torch 2.13.0 CPU build and fbgemm-gpu-cpu 1.8.0 (1.7 and 1.9 fail to load beside it).
  "$VPY" -m pip install -q -e ".[executor,torchrec,stats,dev]"
  # torchrec's metadata asks for the CUDA fbgemm-gpu: install it without deps; its own
  # needs come with the [torchrec] extra above.
  "$VPY" -m pip install -q --no-deps "torchrec==1.8.0"
  touch "$stamp"
fi
