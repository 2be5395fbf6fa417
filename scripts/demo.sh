#!/usr/bin/env bash
# The README's demo command: set up (idempotent), then run the end-to-end pipeline that exists
# today: synthesize a corpus, train the teacher, train the tiny HRF student with distillation,
# merge, evaluate. Everything lands in $DEMO_DIR (default demo-out/).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh

DEMO_DIR="${DEMO_DIR:-demo-out}"
N="${DEMO_N:-1200}"
SEED="${DEMO_SEED:-0}"
ew() { .venv/bin/edgewise "$@"; }

start=$(date +%s)
echo "== 1/4 synthesize a $N-utterance emotional-speech corpus with espeak-ng"
ew data speech --out "$DEMO_DIR/corpus" --n "$N" --seed "$SEED" --force
ew data inspect "$DEMO_DIR/corpus"

rm -rf "$DEMO_DIR/runs"
# The demo's teacher is the small preset without HRF (minutes on 2 cores); the benchmark report
# uses the larger base Conformer.
echo "== 2/4 train the teacher (small ConvTransformer, plain)"
ew train ser --config small --set model.hrf=null --data "$DEMO_DIR/corpus" --out "$DEMO_DIR/runs/teacher" --seed "$SEED"

echo "== 3/4 train the tiny student with HRF and knowledge distillation, then merge HRF away"
ew train ser --config tiny --teacher "$DEMO_DIR/runs/teacher" --data "$DEMO_DIR/corpus" \
  --out "$DEMO_DIR/runs/student" --seed "$SEED"

echo "== 4/4 evaluate the merged student on the held-out speakers"
ew eval ser "$DEMO_DIR/runs/student" --data "$DEMO_DIR/corpus" --split test --out "$DEMO_DIR/student-test.json" >/dev/null
.venv/bin/python - "$DEMO_DIR" <<'PY'
import json, sys
from pathlib import Path
d = Path(sys.argv[1])
rows = [("teacher (small, plain)", d / "runs/teacher"), ("student (tiny, HRF+KD, merged)", d / "runs/student")]
print(f"{'model':34} {'params':>9} {'UA':>6} {'WA':>6} {'F1':>6}")
for name, run in rows:
    m = json.loads((run / "metrics.json").read_text())
    print(f"{name:34} {m['parameters']:>9,} {m['ua']:>6.3f} {m['wa']:>6.3f} {m['macro_f1']:>6.3f}")
s = json.loads((d / "runs/student/metrics.json").read_text())
print(f"HRF merge: max |logit diff| merged vs training form on the test split = {s['merge_max_abs_diff']:.2e}")
PY
echo "demo finished in $(( $(date +%s) - start )) s (after setup); outputs in $DEMO_DIR/"
