#!/usr/bin/env bash
# RGB pretraining comparison (GitHub issue 10): ImageNet Lite0 vs the remote-sensing geoembed
# ResNet-18 vs ImageNet MobileNetV2, all offline, on AID and RSSCN7, under one protocol:
# linear probe and feature-extraction (frozen backbone, new head, augmentation), 20 labels per
# class, 30 test chips per class, 3 seeds (same splits for every pretraining), paired statistics.
# On AID the same with the linear probe only (CPU budget). Then geoembed and Lite0 again at 224 px
# on RSSCN7 (linear probe): does a finer apparent ground resolution (closer to geoembed's
# 0.1-0.15 m/pixel training tiles) help the RS weights?
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
COMMON=(--labels-per-class 20 --seeds 3 --pool-fraction 0.5 --test-per-class 30 --output "$OUT")
run() {  # run NAME DATA YAML ARGS...: one compare sweep, its resource use in NAME.log
  local name=$1 data=$2 yaml=$3; shift 3
  /usr/bin/time -v .venv/bin/geotune compare --data "$WORK/$data" "${COMMON[@]}" \
    --config "$WORK/$yaml" --name "$name" "$@" 2> "$OUT/$name.log" \
    || { tail -5 "$OUT/$name.log"; exit 1; }
}
# RSSCN7: linear probe, then feature-extraction with batches of 16 and at least 40 optimizer
# steps per cell (112 training chips: 6 epochs), for all three pretrainings.
run rsscn7_first100-128 rsscn7_first100 train.yaml --backbones "$BACKBONES" \
  --strategies linear-probe
sed 's/batch_size: 32/batch_size: 16/' "$WORK/train.yaml" > "$WORK/train_fe.yaml"
run rsscn7_first100-128-fe rsscn7_first100 train_fe.yaml --backbones "$BACKBONES" \
  --strategies feature-extraction --min-steps 40
# AID: linear probe only (feature-extraction on 30 classes with geoembed did not fit the
# CPU budget: its frozen forward pass alone runs at ~2-8 chips/s on 2 shared cores).
run aid150_first60-128 aid150_first60 train.yaml --backbones "$BACKBONES" \
  --strategies linear-probe
# RSSCN7 at 224 px (linear probe): geoembed saw 0.1-0.15 m/pixel tiles; upsampling the chips
# shows it objects closer to that size.
sed 's/image_size: 128/image_size: 224/' "$WORK/train.yaml" > "$WORK/train224.yaml"
run rsscn7_first100-224 rsscn7_first100 train224.yaml \
  --backbones tf_efficientnet_lite0,geoembed_resnet18 --strategies linear-probe
