#!/usr/bin/env bash
# Prepare a fresh Debian/Ubuntu machine for edgewise: system packages, a virtual environment in
# .venv, and the package with the extras named in $EDGEWISE_EXTRAS (default: dev).
# Idempotent: a second run only checks. Used by scripts/demo.sh, scripts/test.sh and .ci/run.
set -euo pipefail
cd "$(dirname "$0")/.."

EXTRAS="${EDGEWISE_EXTRAS:-dev}"
APT_PACKAGES=(espeak-ng sox libsndfile1 libportaudio2 mosquitto openssh-client openssh-server python3-venv)

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
  echo "setup: installing system packages: ${missing[*]}" >&2
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# sshd (for the loopback SSH deploy tests) refuses to start without its privilege-separation folder
if [ ! -d /run/sshd ]; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO mkdir -p /run/sshd 2>/dev/null || echo "setup: could not create /run/sshd; the SSH deploy tests will skip" >&2
fi

PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv" >&2
  "$PYTHON" -m venv .venv
fi
# scripts/constraints.txt pins every dependency to the versions the suite was last run with: the
# install is reproducible and pip does not spend minutes backtracking through litert and torch
# releases. Regenerate it from a working venv with scripts/update-constraints.sh.
stamp=".venv/.edgewise-installed-$EXTRAS-$(cat pyproject.toml scripts/constraints.txt | sha256sum | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  echo "setup: installing edgewise[$EXTRAS] into .venv (torch is pinned to the CPU build 2.13.0)" >&2
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e ".[$EXTRAS]" -c scripts/constraints.txt
  touch "$stamp"
fi
