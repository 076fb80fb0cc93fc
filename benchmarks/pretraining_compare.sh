#!/usr/bin/env bash
# RGB pretraining comparison (GitHub issue 10): ImageNet Lite0 vs the remote-sensing geoembed
# ResNet-18 vs ImageNet MobileNetV2, all offline, on AID and RSSCN7, under one protocol:
# linear probe and feature-extraction (frozen backbone, new head, augmentation), 20 labels per
# class, 30 test chips per class, 3 seeds (same splits for every pretraining), paired statistics.
# Then geoembed and Lite0 again at 224 px on RSSCN7 (linear probe): does a finer apparent ground
# resolution (closer to geoembed's 0.1-0.15 m/pixel training tiles) help the RS weights?
#
# The probe encodes every chip of a dataset once (cached for all seeds), and geoembed's stride-1
# stem makes it ~25x slower than Lite0 on a CPU, so the datasets are fixed subsets: the first
# 60 chips (sorted by name) of each AID class and the first 100 of each RSSCN7 class, copied to
# $WORK. pool 50% of each class (>= 20 labels + val), the rest test, capped at 30 per class.
set -euo pipefail
cd "$(dirname "$0")/.."
SHARED=${SHARED:-../shared/datasets}
WORK=${WORK:-/tmp/geotune-pretraining-bench}
OUT=${OUT:-benchmarks/results/pretraining}
mkdir -p "$WORK" "$OUT"

subset() {  # subset SRC DEST N: the first N files of each class folder
  local src=$1 dest=$2 n=$3
  [ -d "$dest" ] && return
  for d in "$src"/*/; do
    c=$(basename "$d"); mkdir -p "$dest.tmp/$c"
    files=("$d"*.jpg)  # globs expand sorted by name
    cp "${files[@]:0:$n}" "$dest.tmp/$c/"
  done
  mv "$dest.tmp" "$dest"
}
subset "$SHARED/aid150" "$WORK/aid150_first60" 60
subset "$SHARED/rsscn7_dev200" "$WORK/rsscn7_first100" 100

cat > "$WORK/train.yaml" <<'YAML'
image_size: 128
epochs: 2
batch_size: 32
YAML

BACKBONES=tf_efficientnet_lite0,geoembed_resnet18,mobilenetv2_100
COMMON=(--strategies linear-probe,feature-extraction --labels-per-class 20 --seeds 3
        --pool-fraction 0.5 --test-per-class 30 --output "$OUT")
for ds in rsscn7_first100 aid150_first60; do
  /usr/bin/time -v .venv/bin/geotune compare --data "$WORK/$ds" --backbones "$BACKBONES" \
    "${COMMON[@]}" --config "$WORK/train.yaml" --name "$ds-128" 2> "$OUT/$ds-128.log" \
    || { tail -5 "$OUT/$ds-128.log"; exit 1; }
done

sed 's/image_size: 128/image_size: 224/' "$WORK/train.yaml" > "$WORK/train224.yaml"
/usr/bin/time -v .venv/bin/geotune compare --data "$WORK/rsscn7_first100" \
  --backbones tf_efficientnet_lite0,geoembed_resnet18 --strategies linear-probe \
  --labels-per-class 20 --seeds 3 --pool-fraction 0.5 --test-per-class 30 --output "$OUT" \
  --config "$WORK/train224.yaml" --name rsscn7_first100-224 2> "$OUT/rsscn7_first100-224.log"
