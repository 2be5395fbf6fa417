#!/usr/bin/env bash
# The published device benchmark: the tiny HRF+KD student of the cloud-speech report, exported to
# ONNX and TFLite (fp32, int8 dynamic and static), benchmarked with `edgewise bench` next to PyTorch
# eager (merged, HRF training form, plain) and the machine's GEMM ceiling, in one run.
#
#   benchmarks/device_bench.sh [RUN] [OUT]                       # this machine
#   BENCH_ARGS="--device rpi5 --host pi@10.0.0.7" benchmarks/device_bench.sh   # a device over SSH
set -euo pipefail
cd "$(dirname "$0")/.."
RUN="${1:-benchmarks/work/ser/conv_transformer-hrf-kd-s0}"
OUT="${2:-benchmarks/results/bench}"
WORK="benchmarks/work/bench-bundle"
rm -rf "$WORK"
.venv/bin/edgewise -q export "$RUN" --out "$WORK" --format onnx --format tflite \
  --precision fp32 --precision int8 --quant dynamic --quant static
BUNDLE="$(find "$WORK" -mindepth 1 -maxdepth 1 -type d | head -n1)"
# shellcheck disable=SC2086
.venv/bin/edgewise bench "$BUNDLE" --run "$RUN" --out "$OUT" ${BENCH_ARGS:-}
