#!/usr/bin/env bash
# The README's test command: set up (idempotent), lint, check the formatting, run the whole suite.
# Under CI=true (.ci/run sets it) a test skipped for a missing tool fails the run (tests/conftest.py).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
echo "test: ruff check ." >&2
.venv/bin/ruff check .
echo "test: ruff format --check ." >&2
.venv/bin/ruff format --check .
# --durations: the slowest tests in every log (the suite must stay under 15 minutes on 2 cores)
exec .venv/bin/python -m pytest -q --durations=30 "$@"
