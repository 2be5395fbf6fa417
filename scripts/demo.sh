#!/usr/bin/env bash
# The README's demo command: set up (idempotent), then run cloud to device on this machine:
# synthesize a corpus, train the teacher and the tiny HRF+KD student, export ONNX and TFLite
# (checked against PyTorch), install with edge-deploy, run the daemon with Mosquitto on held-out
# wav files, print what arrives over MQTT, and write the benchmark report (scripts/demo.py).
# Everything lands in $DEMO_DIR (default demo-out/); everything started is stopped at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec .venv/bin/python scripts/demo.py "$@"
