#!/usr/bin/env bash
# Installs everything dreamer_tf and its tests need into a virtual environment (default .venv):
# requirements.txt, then requirements-nodeps.txt without dependencies (why: see that file), then
# dreamer_tf itself in editable mode.
#
#   bash scripts/setup.sh            # system packages (as root), .venv, pinned requirements, dreamer_tf
#
# Idempotent and fast when nothing changed: the pip steps are skipped while the stamp file in the
# venv matches the hash of requirements*.txt, pyproject.toml and DREAMER_PIN_OVERRIDES.
#
# Settings (environment variables):
#   VENV=path                    the virtual environment to create or reuse (default .venv)
#   PYTHON=python3.11            the interpreter that creates it (default: python3.11, else a 3.11 python3)
#   DREAMER_SKIP_APT=1           do not touch system packages
#   DREAMER_PIN_OVERRIDES="pkg==v ..."
#                                replace those packages' pins in requirements*.txt (tox.ini uses this
#                                to test other TensorFlow versions)
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$(pwd)
VENV=${VENV:-.venv}
OVERRIDES=${DREAMER_PIN_OVERRIDES:-}
# libosmesa6: headless MuJoCo (MUJOCO_GL=osmesa); libgl1/libegl1: MuJoCo GL and EGL on GPU machines;
# libglib2.0-0, libxcb1, libbsd0, zlib1g: linked by procgen's prebuilt libenv.so.
# chromium: the report test renders index.html headless and checks that every figure loads.
APT_PACKAGES=(libosmesa6 libgl1 libegl1 libglib2.0-0 libxcb1 libbsd0 zlib1g chromium)

say() { echo "[setup] $*"; }
start=$SECONDS

# --- Python 3.11 ---------------------------------------------------------------------------------
find_python() {
  local candidate
  for candidate in ${PYTHON:-} python3.11 python3; do
    if command -v "$candidate" >/dev/null 2>&1 &&
      "$candidate" -c 'import sys, venv, ensurepip; sys.exit(sys.version_info[:2] != (3, 11))' 2>/dev/null; then
      command -v "$candidate"
      return 0
    fi
  done
  return 1
}

# --- System packages -----------------------------------------------------------------------------
missing=()
if [[ ${DREAMER_SKIP_APT:-0} != 1 ]] && command -v dpkg-query >/dev/null 2>&1; then
  for pkg in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  if [[ ! -x $VENV/bin/python ]] && ! find_python >/dev/null; then
    missing+=(python3.11 python3.11-venv)  # Debian 12's python3 is 3.11
  fi
fi
if ((${#missing[@]})); then
  if [[ $(id -u) == 0 ]]; then
    sudo=()
  elif command -v sudo >/dev/null 2>&1; then
    sudo=(sudo)
  else
    sudo=(none)
  fi
  if [[ ${sudo[0]:-} == none ]]; then
    say "WARNING: missing system packages and no root: apt-get install -y ${missing[*]}"
  else
    say "apt-get install ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    "${sudo[@]}" apt-get update -qq
    "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
else
  say "system packages: ok"
fi

# --- Virtual environment -------------------------------------------------------------------------
if [[ -x $VENV/bin/python ]]; then
  say "venv: reusing $VENV ($("$VENV/bin/python" --version))"
else
  python=$(find_python) || {
    say "ERROR: need Python 3.11 with venv (Debian: apt-get install python3.11 python3.11-venv)"
    exit 1
  }
  say "venv: creating $VENV with $python"
  "$python" -m venv "$VENV"
fi
PY=$VENV/bin/python
"$PY" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' || {
  say "ERROR: $VENV runs $("$PY" --version); requirements.txt is pinned for Python 3.11. Remove $VENV and rerun."
  exit 1
}

# --- Python packages -----------------------------------------------------------------------------
requirements=$ROOT/requirements.txt
nodeps=$ROOT/requirements-nodeps.txt
if [[ -n $OVERRIDES ]]; then
  # Drop the overridden packages' lines from both files and add the override pins to the first.
  names=$(for pin in $OVERRIDES; do echo "${pin%%[=<>~!]*}"; done | sed 's/\[.*//' | paste -sd'|')
  workdir=$(mktemp -d "${TMPDIR:-/tmp}/dreamer-setup.XXXXXX")
  trap 'rm -rf "$workdir"' EXIT
  for file in requirements requirements-nodeps; do
    grep -viE "^($names)(\[[^]]*\])?[=<>~! ]" "$ROOT/$file.txt" >"$workdir/$file.txt" || true
  done
  for pin in $OVERRIDES; do
    # An override of a no-deps package (tf-keras) stays a no-deps install.
    if grep -qiE "^${pin%%[=<>~!]*}[=<>~! ]" "$ROOT/requirements-nodeps.txt"; then
      echo "$pin" >>"$workdir/requirements-nodeps.txt"
    else
      echo "$pin" >>"$workdir/requirements.txt"
    fi
  done
  requirements=$workdir/requirements.txt
  nodeps=$workdir/requirements-nodeps.txt
  say "pin overrides: $OVERRIDES"
fi
stamp=$VENV/.dreamer-setup-stamp
digest=$(cat "$requirements" "$nodeps" "$ROOT/pyproject.toml" | sha256sum | cut -d' ' -f1)
if [[ -f $stamp && $(cat "$stamp") == "$digest" ]] &&
  "$PY" -I -c 'import importlib.util as u, sys; sys.exit(u.find_spec("dreamer_tf") is None)'; then
  say "python packages: up to date (stamp $stamp)"
else
  rm -f "$stamp"
  say "pip install -r requirements.txt"
  "$PY" -m pip install --quiet --disable-pip-version-check -r "$requirements"
  say "pip install --no-deps -r requirements-nodeps.txt"
  "$PY" -m pip install --quiet --disable-pip-version-check --no-deps -r "$nodeps"
  say "pip install -e . (dreamer_tf)"
  "$PY" -m pip install --quiet --disable-pip-version-check --no-deps -e "$ROOT"
  say "checking imports"
  MUJOCO_GL=${MUJOCO_GL:-osmesa} TF_CPP_MIN_LOG_LEVEL=2 "$PY" -I - <<'EOF'
import ctypes
import importlib
import os

import numpy
import tensorflow

# TensorFlow before MuJoCo's OSMesa, and OSMesa with its own LLVM: see isolate_osmesa in dreamer_tf/envs/dmc.py.
ctypes.CDLL("libOSMesa.so.8", mode=os.RTLD_DEEPBIND | os.RTLD_LOCAL)

modules = ["dreamer_tf", "keras", "tensorflow", "jax", "tensorflow_probability.substrates.numpy", "gymnasium",
           "ale_py", "dm_control.suite", "bsuite", "crafter", "memory_maze", "procgen", "pytest", "xdist", "ruff"]
versions = {}
for name in modules:
    module = importlib.import_module(name)
    versions[name] = getattr(module, "__version__", "")
assert numpy.__version__.split(".")[0] == "2", f"numpy was downgraded to {numpy.__version__}"
print("[setup] imports ok:", ", ".join(f"{k} {v}".strip() for k, v in versions.items() if v))
EOF
  echo "$digest" >"$stamp"
fi
say "done in $((SECONDS - start)) s; activate with: source $VENV/bin/activate"
