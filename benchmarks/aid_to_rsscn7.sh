#!/usr/bin/env bash
# Real cross-dataset shift: a run trained on AID, adapted to RSSCN7 (rsscn7_dev200) without its
# labels, then scored with them (transductive: the same chips), plus few-shot adaptation with
# k = 1, 5, 10 labelled RSSCN7 chips per class scored on the other RSSCN7 chips.
#   bash benchmarks/aid_to_rsscn7.sh RUN [extra geotune adapt options]
# RUN: a finished AID run, e.g. the README's main job
#   (geotune train --data ../shared/datasets/aid150 --strategy partial --unfreeze-last 2 \
#    --epochs 2 --image-size 160).
set -euo pipefail
cd "$(dirname "$0")/.."
RUN=${1:?usage: $0 RUN [options]}
shift
TARGET=${TARGET:-../shared/datasets/rsscn7_dev200}
OUT=${OUT:-benchmarks/results/aid-to-rsscn7-$(date +%Y%m%d-%H%M%S)}
mkdir -p "$OUT"
start=$EPOCHREALTIME
.venv/bin/geotune adapt "$RUN" --target "$TARGET" --class-map benchmarks/rsscn7_to_aid.yaml \
  --method adabn,tent,coral,rescale,shot --target-labels-per-class 1,5,10 --few-shot-seeds 3 \
  --output "$OUT" "$@"
echo "wall_s=$(awk "BEGIN{print $EPOCHREALTIME - $start}")" | tee "$OUT/wall.txt"
