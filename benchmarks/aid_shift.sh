#!/usr/bin/env bash
# Domain-shift benchmark built from AID alone: a model trained on AID 20/80 is tested on the same
# test chips seen through a simulated sensor (coarser ground resolution, other band gains and
# offsets, more noise), before and after unsupervised adaptation (AdaBN, TENT, CORAL, DANN).
# From the repository root, with a finished run of benchmarks/aid_2080.sh:
#   bash benchmarks/aid_shift.sh RUN [STRENGTH]     (PER_CLASS=30 test chips per class)
#   METHODS=adabn,tent,coral,rescale,shot: the methods (default adabn,tent,coral,dann)
# Writes benchmarks/results/aid-shift-<date>/: the clean and shifted copies, distances, adapted
# runs, and summary.md.
set -euo pipefail
cd "$(dirname "$0")/.."
RUN=${1:?usage: $0 RUN_DIR [STRENGTH]}
STRENGTH=${2:-0.5}
PER_CLASS=${PER_CLASS:-30}
DATA=${DATA:-../shared/datasets/aid150}
G=.venv/bin/geotune
METHODS=${METHODS:-adabn,tent,coral,dann}
OUT=${OUT:-benchmarks/results/aid-shift-$(date +%Y%m%d-%H%M%S)}
mkdir -p "$OUT"
start=$EPOCHREALTIME
# The same test chips twice: re-encoded as they are (strength 0), and through the simulated sensor.
$G simulate "$DATA" "$OUT/test-clean" --shift sensor --strength 0 \
  --split "$RUN/split.csv" --part test --per-class "$PER_CLASS"
$G simulate "$DATA" "$OUT/test-sensor" --shift sensor --strength "$STRENGTH" \
  --split "$RUN/split.csv" --part test --per-class "$PER_CLASS"
$G evaluate "$RUN" --data "$OUT/test-clean" | tee "$OUT/eval-clean.txt"
$G evaluate "$RUN" --data "$OUT/test-sensor" | tee "$OUT/eval-sensor.txt"
$G shift "$OUT/test-clean" "$OUT/test-sensor" --run "$RUN" --per-class 0 \
  --output "$OUT" --name distances | tee "$OUT/distances.txt"
# Adaptation sees the shifted chips without labels (transductive); labels only score it.
$G adapt "$RUN" --target "$OUT/test-sensor" --method "$METHODS" \
  --output "$OUT/adapted" | tee "$OUT/adapt.txt"
# The drop and each method's share of it, against the same chips without the shift.
.venv/bin/python - "$RUN" "$OUT" <<'PY' | tee "$OUT/summary.md"
import json, sys
from pathlib import Path
run, out = Path(sys.argv[1]), Path(sys.argv[2])
evals = sorted((run / "evaluations").glob("test-clean-*"))
clean = json.loads((evals[-1] / "eval_metrics.json").read_text())["overall_accuracy"]
rows = [json.loads(p.read_text()) for p in sorted((out / "adapted").glob("*/adaptation.json"))]
before = rows[0]["target_oa_before"]
drop = clean - before
print(f"clean {100 * clean:.2f}% -> sensor-shifted {100 * before:.2f}% (drop {100 * drop:.2f} points)")
print("| method | target OA | change | share of the drop recovered | seconds |")
print("|---|---|---|---|---|")
for r in rows:
    share = r["gain"] / drop if drop > 0 else float("nan")
    print(f"| {r['method']} | {100 * r['target_oa_after']:.2f}% | {100 * r['gain']:+.2f} pt | "
          f"{100 * share:.0f}% | {r['adaptation_seconds']:.0f} |")
PY
echo "wall_s=$(awk "BEGIN{print $EPOCHREALTIME - $start}")" | tee "$OUT/wall.txt"
