#!/usr/bin/env bash
# The README's demo command: set up (idempotent), then run cloud to device on this machine:
# synthesize a corpus, train the teacher and the tiny HRF+KD student, export ONNX and TFLite
# (checked against PyTorch), install with edge-deploy, run the daemon with Mosquitto on held-out
# wav files, print what arrives over MQTT, deploy the committed voice to the same device and have
# it say a sentence (demo-out/spoken.wav), and write the benchmark report (scripts/demo.py).
# Everything lands in $DEMO_DIR (default demo-out/); everything started is stopped at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS=0
scripts/setup.sh
export DEMO_SETUP_S=$SECONDS # printed with the demo's step times
exec .venv/bin/python scripts/demo.py "$@"
