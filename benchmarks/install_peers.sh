#!/usr/bin/env bash
# Optional: the peers of benchmarks/peers.py (torchgeo) in their own virtual environment,
# benchmarks/.venv-peers, so that they can never change the main .venv. Idempotent. From the
# repository root:  bash benchmarks/install_peers.sh
# torch/torchvision are installed first, exactly as scripts/install.sh gets them (the pins of
# pyproject.toml, resolved by pip's configured indexes), and every later install runs under a
# constraints file that pins them, so no peer can pull in another torch.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3
VENV=benchmarks/.venv-peers
# torchgeo 0.9 and later need Python >= 3.12; geotune and the local torch wheels are 3.11.
TORCHGEO=${TORCHGEO_VERSION:-0.8.1}
if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
fi
constraints=$(mktemp)
trap 'rm -f "$constraints"' EXIT
printf 'torch==2.14.1\ntorchvision==0.29.1\n' >"$constraints"
pip=("$VENV/bin/python" -m pip install -q -c "$constraints")
"$VENV/bin/python" -m pip install -q --upgrade pip
"${pip[@]}" "torch==2.14.1" "torchvision==0.29.1"
"${pip[@]}" -e ".[offline]"
# torchgeo 0.8.1 imports requests (datasets/openstreetmap.py) without declaring it.
"${pip[@]}" "torchgeo==$TORCHGEO" requests
# Proof that the pins held: a resolver that swapped torch would show here.
"$VENV/bin/python" -c "import torch, torchvision, torchgeo; print('torch', torch.__version__, '| torchvision', torchvision.__version__, '| torchgeo', torchgeo.__version__)"
