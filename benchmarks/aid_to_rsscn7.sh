#!/usr/bin/env bash
# Real cross-dataset shift: a run trained on AID, adapted to RSSCN7 (rsscn7_dev200) without its
# labels, then scored with them, plus few-shot adaptation with k labelled RSSCN7 chips per class
# scored on the other RSSCN7 chips.
#   bash benchmarks/aid_to_rsscn7.sh RUN [extra geotune adapt options]
# RUN: a finished AID run, e.g. the README's main job
#   (geotune train --data ../shared/datasets/aid150 --strategy partial --unfreeze-last 2 \
#    --epochs 2 --image-size 160).
# Environment:
#   METHODS  adaptation methods (default: every source-free one, alone and after label-set)
#   FEWSHOT  target labels per class for the few-shot table (default 1,5,10; "" skips it)
#   HOLDOUT  1: adapt on one half of every RSSCN7 class (unlabelled), score on the other half;
#            default 0: transductive (adapt on all chips, score on the same chips)
set -euo pipefail
cd "$(dirname "$0")/.."
RUN=${1:?usage: $0 RUN [options]}
shift
TARGET=${TARGET:-../shared/datasets/rsscn7_dev200}
OUT=${OUT:-benchmarks/results/aid-to-rsscn7-$(date +%Y%m%d-%H%M%S)}
METHODS=${METHODS:-adabn,tent,coral,rescale,shot,label-set,label-set+adabn,label-set+tent,label-set+shot}
FEWSHOT=${FEWSHOT-1,5,10}
mkdir -p "$OUT"
target_opts=(--target "$TARGET")
if [ "${HOLDOUT:-0}" = 1 ]; then
  # Even-numbered chips of each class (sorted by name) to adapt on, odd-numbered to score on.
  for part in rsscn7-adapt rsscn7-score; do
    for cls in "$TARGET"/*/; do
      c=$(basename "$cls"); mkdir -p "$OUT/$part/$c"
      ls "$cls" | sort | awk -v p="$part" '(NR % 2 == 1) == (p == "rsscn7-adapt")' |
        while read -r f; do ln -sf "$(realpath "$cls$f")" "$OUT/$part/$c/$f"; done
    done
  done
  target_opts=(--target "$OUT/rsscn7-adapt" --eval-data "$OUT/rsscn7-score")
fi
fewshot_opts=()
[ -n "$FEWSHOT" ] && fewshot_opts=(--target-labels-per-class "$FEWSHOT" --few-shot-seeds 3)
start=$EPOCHREALTIME
.venv/bin/geotune adapt "$RUN" "${target_opts[@]}" --class-map benchmarks/rsscn7_to_aid.yaml \
  --method "$METHODS" "${fewshot_opts[@]}" --output "$OUT" "$@"
echo "wall_s=$(awk "BEGIN{print $EPOCHREALTIME - $start}")" | tee "$OUT/wall.txt"
