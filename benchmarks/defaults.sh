#!/usr/bin/env bash
# The default backbone learning rate (issue 13): --backbone-lr-scale 0.1 (old default) vs 0.5
# (new) for the default strategy (full fine-tuning, all other options default), next to the
# linear probe on the same split, on a dataset the defaults were not chosen on.
#   bash benchmarks/defaults.sh [DATA] [SEEDS]
# DATA defaults to ../shared/datasets/rsscn7_dev200; SEEDS to "0 1". Every run uses
# --train-fraction 0.2 (the AID 20/80 protocol); results: OUT/summary.tsv.
# CELLS (default "lp full-0.1 full-0.5"): "lp", or STRATEGY-SCALE for --strategy STRATEGY
# --backbone-lr-scale SCALE; "default" is `geotune train` with no option but the data and split.
# OPTS: more options for every run (partial needs one: OPTS="--unfreeze-last 2").
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${1:-../shared/datasets/rsscn7_dev200}
SEEDS=${2:-0 1}
OUT=${OUT:-benchmarks/results/defaults-$(basename "$DATA")-$(date +%Y%m%d-%H%M%S)}
mkdir -p "$OUT"
printf "cell\tseed\ttest_oa\tbest_val\twall_s\n" > "$OUT/summary.tsv"
for seed in $SEEDS; do
  for cell in ${CELLS:-lp full-0.1 full-0.5}; do
    case $cell in
      lp) opts=(--strategy linear-probe) ;;
      default) opts=() ;;
      *-*) opts=(--strategy "${cell%-*}" --backbone-lr-scale "${cell##*-}") ;;
    esac
    start=$EPOCHREALTIME
    .venv/bin/geotune train --data "$DATA" --train-fraction 0.2 --seed "$seed" \
      --output "$OUT/runs" --name "$cell-s$seed" "${opts[@]}" ${OPTS:-} > "$OUT/$cell-s$seed.log" 2>&1
    wall=$(awk "BEGIN{print $EPOCHREALTIME - $start}")
    .venv/bin/python - "$OUT/runs/$cell-s$seed" "$cell" "$seed" "$wall" >> "$OUT/summary.tsv" <<'PY'
import json, sys
run, cell, seed, wall = sys.argv[1:]
s = json.load(open(f"{run}/summary.json"))
print(f"{cell}\t{seed}\t{s['test_overall_accuracy']:.4f}\t{s.get('best_val_accuracy')}\t{float(wall):.0f}")
PY
    tail -1 "$OUT/summary.tsv"
  done
done
