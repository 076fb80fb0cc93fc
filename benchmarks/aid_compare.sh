#!/usr/bin/env bash
# The strategy table on AID, measured: linear-probe, feature-extraction and lp-ft at 5, 20 and all
# labels per class (all = the 20% labelled pool, ~67 per class), 3 seeds = 27 cells, offline
# EfficientNet-Lite0, CPU-sized: 160 px, 4 epochs (at least 60 optimizer steps per cell, so the
# 5-label cells are not compared under-trained), and a shared test set of 50 chips per class per
# seed (1,500 chips). From the repository root:
#   bash benchmarks/aid_compare.sh [extra geotune compare options]
# Writes benchmarks/results/aid-compare-<date>/ (results.csv/json, summary.csv, report.html/md)
# and its wall time (wall.txt).
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-../shared/datasets/aid150}
OUT=benchmarks/results
name="aid-compare-$(date +%Y%m%d-%H%M%S)"
start=$EPOCHREALTIME
.venv/bin/geotune compare --data "$DATA" \
  --strategies linear-probe,feature-extraction,lp-ft --labels-per-class 5,20,all --seeds 3 \
  --pool-fraction 0.2 --val-fraction 0.2 --test-per-class 50 --min-steps 60 \
  --config benchmarks/aid_compare.yaml --output "$OUT" --name "$name" "$@"
echo "wall_s=$(awk "BEGIN{print $EPOCHREALTIME - $start}")" | tee "$OUT/$name/wall.txt"
