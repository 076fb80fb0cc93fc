#!/usr/bin/env bash
# One geotune strategy on AID, 20/80 protocol (validation = 20% of the labelled 20%), seed 0,
# offline EfficientNet-Lite0. Writes a run folder under
# benchmarks/results/ and its wall time (wall.txt). From the repository root:
#   bash benchmarks/aid_2080.sh STRATEGY [extra geotune train options]
# The figures in benchmarks/results/2026-11-28-aid-2080-lite0.md come from:
#   bash benchmarks/aid_2080.sh feature-extraction --epochs 10 --tta rot4
#   bash benchmarks/aid_2080.sh full --epochs 6 --tta rot2
#   bash benchmarks/aid_2080.sh linear-probe --tta rot2   # twice: the second run reuses the cache
#   bash benchmarks/aid_2080.sh lp-ft --epochs 8 --head-epochs 1 --tta rot2 --backbone-lr-scale 0.5
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-../shared/datasets/aid150}
OUT=benchmarks/results
strategy=${1:?usage: $0 STRATEGY [options]}
shift
name="aid-2080-lite0-${strategy}-$(date +%Y%m%d-%H%M%S)"
start=$EPOCHREALTIME
.venv/bin/geotune train --data "$DATA" --train-fraction 0.2 --val-fraction 0.2 --seed 0 \
  --backbone tf_efficientnet_lite0 --weights offline --strategy "$strategy" \
  --output "$OUT" --name "$name" "$@"
echo "wall_s=$(awk "BEGIN{print $EPOCHREALTIME - $start}")" | tee "$OUT/$name/wall.txt"
