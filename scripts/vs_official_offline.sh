#!/usr/bin/env bash
# benchmarks/vs_official.py on a machine without network access whose Python already has JAX (a GPU
# machine's JAX, say), ours on JAX against the official code on that same JAX. The pure-Python
# packages that machine lacks travel as wheels; the official code runs on a JAX later than its pinned
# 0.4.33 through benchmarks/official_throughput.py (its positional jax.jit options passed by name).
#
# Beforehand, on a machine with network access, in the repository root:
#   git clone https://github.com/danijar/dreamerv3 .official && git -C .official checkout e3f0224
#   pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_28_x86_64 -d .whl keras==3.15.1 namex==0.1.0 optree==0.20.0 \
#     ninjax==3.6.3 elements==3.22.4 portal==3.8.3 granular==0.24.2 ruamel.yaml==0.19.1
# (--python-version: the target machine's Python). That machine must already have numpy, ml-dtypes,
# pyyaml, pillow, tqdm, psutil, rich, h5py, absl-py, packaging, cloudpickle, msgpack, chex, optax,
# einops and jaxtyping beside JAX.
#
# Then, on the target machine, in the repository root (arguments go to vs_official.py):
#   bash scripts/vs_official_offline.sh --workloads dummy:size12m --reps 2 --whole-machine
#
# Settings (environment variables):
#   PY=python3      the Python with JAX            WHEELS=.whl       the wheel folder
#   OFFICIAL=.official  the official checkout      OUT=vs_official-offline  where the table and JSON go
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY=${PY:-python3}
WHEELS=${WHEELS:-.whl}
OFFICIAL=${OFFICIAL:-.official}
OUT=${OUT:-vs_official-offline}
SITE=$(mktemp -d)
trap 'rm -rf "$SITE"' EXIT

if ! compgen -G "$WHEELS/*.whl" >/dev/null; then
  echo "error: no wheels in $WHEELS (see the top of $0 for the pip download command)" >&2
  exit 2
fi
if [[ ! -f $OFFICIAL/dreamerv3/agent.py ]]; then
  echo "error: $OFFICIAL is not a checkout of danijar/dreamerv3 (see the top of $0)" >&2
  exit 2
fi

"$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$SITE" "$WHEELS"/*.whl
# Ours and vs_official.py import dreamer_tf from this checkout and the wheels from $SITE.
export PYTHONPATH="$SITE:$PWD"
# vs_official.py runs the official side with "$VENV/bin/python" and PYTHONPATH set to the official
# checkout alone: this stand-in for a virtual environment adds the wheels after it.
mkdir -p "$SITE/venv/bin"
printf '#!/bin/sh\nPYTHONPATH="$PYTHONPATH:%s" exec %s "$@"\n' "$SITE" "$(command -v "$PY")" >"$SITE/venv/bin/python"
chmod +x "$SITE/venv/bin/python"

mkdir -p "$OUT"
set -o pipefail
PYTHONUNBUFFERED=1 "$PY" benchmarks/vs_official.py --official "$OFFICIAL" --venv "$SITE/venv" \
  --sides jax official --json "$OUT/vs_official.json" "$@" 2>&1 | tee "$OUT/log"
