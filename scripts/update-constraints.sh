#!/usr/bin/env bash
# Rewrite scripts/constraints.txt from the current .venv (after a deliberate upgrade that passed
# scripts/test.sh). torch keeps its public version so the CPU wheel index decides the build.
set -euo pipefail
cd "$(dirname "$0")/.."
{
  echo "# pip constraints: the dependency versions scripts/test.sh last passed with (see setup.sh)"
  # pip list, not pip freeze: a wheel installed from a local file is written name==version, not its path
  .venv/bin/python -m pip list --format=freeze --exclude-editable | grep -Ev '^(pip|setuptools|wheel)==' | sed -E 's/^(torch==[0-9.]+)\+cpu$/\1/'
} > scripts/constraints.txt
echo "wrote scripts/constraints.txt ($(grep -vc '^#' scripts/constraints.txt) packages)"
