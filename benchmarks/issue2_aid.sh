#!/usr/bin/env bash
# AID 20/80 (validation taken from the 20% labelled part), offline EfficientNet-Lite0, CPU.
# Usage: bash benchmarks/issue2_aid.sh [feature-extraction|full]   (from the repository root)
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-../shared/datasets/aid150}
OUT=benchmarks/results
strategy=${1:-feature-extraction}
case "$strategy" in
  feature-extraction) epochs=10 ;;
  full) epochs=6 ;;
  *) echo "usage: $0 feature-extraction|full" >&2; exit 2 ;;
esac
name="aid-2080-lite0-${strategy}-$(date +%Y%m%d-%H%M%S)"
start=$(date +%s)
.venv/bin/geotune train --data "$DATA" --train-fraction 0.2 --val-fraction 0.2 --seed 0 \
  --backbone tf_efficientnet_lite0 --weights offline --strategy "$strategy" --epochs "$epochs" --tta rot4 \
  --output "$OUT" --name "$name"
echo "wall_s=$(( $(date +%s) - start ))" | tee "$OUT/$name/wall.txt"
