#!/usr/bin/env bash
# Set up, then plan the bundled default: MLPerf DLRM-DCNv2 (Criteo 1TB) on 2 x DGX H100.
# Prints the per-rank summary and writes plan.json. Usage: bash scripts/demo.sh [solve args]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/shardplan solve dgx-h100-2x8 --out plan.json "$@"
