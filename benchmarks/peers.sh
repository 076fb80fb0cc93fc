#!/usr/bin/env bash
# geotune beside a plain PyTorch recipe and torchgeo on the same data, split, backbone and epochs
# (see the docstring of benchmarks/peers.py). Uses benchmarks/.venv-peers (made by
# benchmarks/install_peers.sh, has torchgeo) when it exists, else .venv (torchgeo is skipped).
# From the repository root:
#   bash benchmarks/peers.sh --epochs 10
#   bash benchmarks/peers.sh --train-fraction 0.05 --epochs 1 --image-size 64 --max-test-per-class 3 --classes 4
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
if [ -x benchmarks/.venv-peers/bin/python ]; then
  PY=benchmarks/.venv-peers/bin/python
fi
export HF_HUB_OFFLINE=${HF_HUB_OFFLINE:-1} # offline weights only: never wait on a hub
exec "$PY" benchmarks/peers.py "$@"
