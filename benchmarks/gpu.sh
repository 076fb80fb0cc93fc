#!/usr/bin/env bash
# geotune on one GPU, in under 8 minutes, from a fresh machine with a copy of this working tree:
#   1. full fine-tuning of tf_efficientnet_lite0 (offline ImageNet weights) at 224 px from the AID
#      JPEG files, 20/80 split, 2 epochs, batch 32: training images/s and time per epoch;
#   2. frozen feature extraction (linear-probe): backbone images/s over all 10,000 chips;
#   3. if time is left: the same full fine-tuning at batch 128 (throughput at a larger batch).
# Every step has its own timeout and the whole script a deadline; a failed step is recorded and the
# rest still run. Writes nvidia-smi output, the exact commands, logs, the runs' small files and
# summary.json / summary.md to $OUT when set (the device tool collects it), else
# benchmarks/results/gpu-DATE/. From the repository root:  bash benchmarks/gpu.sh
# Environment: GEOTUNE_PYTHON (a Python that has geotune's dependencies; default .venv/bin/python,
# installed by scripts/install.sh when missing), DATA, TRAIN_FRACTION (0.2), EPOCHS (2).
# On the lent device (no network, its own Python with torch): see benchmarks/gpu_device.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
START=$SECONDS
BUDGET_S=${BUDGET_S:-450} # leaves margin under the 8 minutes for start-up and copying back
OUT=${OUT:-benchmarks/results/gpu-$(date +%Y%m%d-%H%M%S)}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
exec > >(tee -a "$OUT/log.txt") 2>&1
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 PYTHONWARNINGS=ignore
# The decode cache (1.5 GB at 224 px) and the run folders stay out of $OUT: only small files go back.
WORK=$(mktemp -d /tmp/geotune-gpu.XXXXXX)
export GEOTUNE_CACHE=$WORK/cache
RUNS=$WORK/runs
if [ -n "${DATA:-}" ]; then :
elif [ -d ../shared/datasets/aid150 ]; then DATA=../shared/datasets/aid150
else DATA=shared/datasets/aid150
fi
FAILED=()
PY=${GEOTUNE_PYTHON:-.venv/bin/python}
TRAIN_FRACTION=${TRAIN_FRACTION:-0.2}
EPOCHS=${EPOCHS:-2}

left() { echo $((BUDGET_S - (SECONDS - START))); }

# step NAME MAX_SECONDS COMMAND...: runs COMMAND under `timeout`, capped by what is left of the
# budget; records the command, exit code and wall time in commands.txt.
step() {
  local name=$1 max=$2
  shift 2
  local limit rc=0 t0=$SECONDS
  limit=$(left)
  ((limit > max)) && limit=$max
  if ((limit < 20)); then
    echo "== $name: skipped, $(left)s of the budget left" | tee -a "$OUT/commands.txt"
    FAILED+=("$name(skipped)")
    return 0
  fi
  echo "== $name (timeout ${limit}s): $*"
  printf '%s\t%s\n' "$name" "$*" >>"$OUT/commands.txt"
  timeout --kill-after=10 "$limit" "$@" >"$OUT/$name.log" 2>&1 || rc=$?
  printf '%s\trc=%s\twall_s=%s\n' "$name" "$rc" "$((SECONDS - t0))" >>"$OUT/commands.txt"
  tail -n 5 "$OUT/$name.log"
  if ((rc != 0)); then
    echo "== $name failed (rc=$rc; 124 = timed out)"
    FAILED+=("$name")
  fi
  return 0
}

echo "== $(date -Is) on $(hostname), data $DATA, results in $OUT"
{ timeout 30 nvidia-smi || echo "nvidia-smi failed (rc=$?)"; } >"$OUT/nvidia-smi.txt" 2>&1
timeout 30 nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,power.limit \
  --format=csv >>"$OUT/nvidia-smi.txt" 2>&1 || true
{
  nproc
  free -g
} >"$OUT/machine.txt" 2>&1 || true

if [ -z "${GEOTUNE_PYTHON:-}" ] && [ ! -x .venv/bin/geotune ]; then
  step install 330 bash scripts/install.sh
fi
step versions 60 "$PY" -c "import torch, timm, lightning_fabric as lf, geotune; \
print('torch', torch.__version__, 'cuda', torch.version.cuda, 'available', torch.cuda.is_available(), \
torch.cuda.get_device_name() if torch.cuda.is_available() else ''); print('timm', timm.__version__, \
'fabric', lf.__version__, 'threads', torch.get_num_threads())"

common=(--data "$DATA" --train-fraction "$TRAIN_FRACTION" --val-fraction 0.2 --seed 0
  --backbone tf_efficientnet_lite0 --weights offline --tta none --output "$RUNS")
# The first run decodes the JPEG files into the cache (its wall time includes that); later runs reuse it.
geotune=("$PY" -m geotune.cli)
step full-b32 180 "${geotune[@]}" train "${common[@]}" --strategy full --epochs "$EPOCHS" --name full-b32
step linear-probe 120 "${geotune[@]}" train "${common[@]}" --strategy linear-probe \
  --name linear-probe
step full-b128 120 "${geotune[@]}" train "${common[@]}" --strategy full --epochs "$EPOCHS" \
  --batch-size 128 --name full-b128

# Small files of each run (no checkpoints, no cache) and one summary of the figures.
for run in "$RUNS"/*/; do
  [ -d "$run" ] || continue
  dest="$OUT/runs/$(basename "$run")"
  mkdir -p "$dest"
  cp "$run"/*.json "$run"/*.csv "$run"/*.yaml "$dest"/ 2>/dev/null || true
  rm -f "$dest/test_predictions.csv"
done
timeout 60 "$PY" - "$OUT" <<'EOF' || FAILED+=("summary")
import json, sys
from pathlib import Path

import yaml

out = Path(sys.argv[1])
rows, md = {}, ["| run | figure | value |", "|---|---|---|"]
for run in sorted((out / "runs").glob("*")):
    f = run / "summary.json"
    if not f.is_file():
        continue
    s = json.loads(f.read_text())
    r = {"strategy": s["strategy"], "device": s.get("device"), "precision": s.get("precision"),
         "n_train": s["n_train"], "n_val": s["n_val"], "n_test": s["n_test"],
         "test_overall_accuracy": s["test_overall_accuracy"],
         "peak_memory_mb": s.get("peak_memory_mb")}
    if s["strategy"] == "linear-probe":
        n = s["n_train"] + s["n_val"] + s["n_test"]
        r.update(feature_time_s=s["feature_time_s"], feature_images=n,
                 feature_images_per_s=n / s["feature_time_s"], fit_time_s=s["fit_time_s"])
    else:
        h = s["history"]
        config = yaml.safe_load((run / "config.yaml").read_text())
        r.update(batch_size=config["optimisation"]["batch_size"], train_images_per_s=s["train_images_per_s"], time_per_epoch_s=s["time_per_epoch_s"],
                 train_time_s=s["train_time_s"], test_images_per_s=s["test_images_per_s"],
                 per_epoch=[{k: e[k] for k in ("epoch", "epoch_time_s", "train_images_per_s",
                                              "val_accuracy") if k in e} for e in h])
        # Epoch 1 includes cuDNN autotuning and warm-up: the last epoch is the steady state.
        r["last_epoch_train_images_per_s"] = h[-1]["train_images_per_s"] if h else None
    rows[run.name] = r
    for k, v in r.items():
        if k != "per_epoch":
            md.append(f"| {run.name} | {k} | {v:.4g} |" if isinstance(v, float) else f"| {run.name} | {k} | {v} |")
# Wall time of each step (start-up, decoding or cache loading, training, testing, report).
for line in (out / "commands.txt").read_text().splitlines():
    parts = line.split("\t")
    if len(parts) == 3 and parts[1].startswith("rc="):
        step = rows.setdefault(parts[0], {})
        step.update(rc=int(parts[1][3:]), wall_s=int(parts[2][7:]))
        md.append(f"| {parts[0]} | wall_s (rc {step['rc']}) | {step['wall_s']} |")
(out / "summary.json").write_text(json.dumps(rows, indent=2) + "\n")
(out / "summary.md").write_text("\n".join(md) + "\n")
print("\n".join(md))
EOF
rm -rf "$WORK"
echo "== done in $((SECONDS - START))s; failed: ${FAILED[*]:-none}; results in $OUT"
((${#FAILED[@]} == 0))
