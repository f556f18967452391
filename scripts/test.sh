#!/usr/bin/env bash
# The one command that runs every check: ruff (lint and format), then pytest on each Keras backend.
#
#   bash scripts/test.sh                       # everything, TensorFlow then JAX
#   bash scripts/test.sh tests/unit -x         # extra arguments go to pytest
#   BACKENDS=jax bash scripts/test.sh          # choose the backends
#   LINT=0 bash scripts/test.sh                # skip ruff
#
# Every stage runs even when an earlier one fails; the exit status is non-zero if any failed.
# Uses $VENV/bin/python (default .venv, made by scripts/setup.sh).
set -uo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
VENV=${VENV:-.venv}
PY=$VENV/bin/python
BACKENDS=${BACKENDS:-tensorflow jax}
primary=${BACKENDS%% *}
[[ " $BACKENDS " == *" tensorflow "* ]] && primary=tensorflow
export MUJOCO_GL=${MUJOCO_GL:-osmesa}
export TF_CPP_MIN_LOG_LEVEL=${TF_CPP_MIN_LOG_LEVEL:-2}

if [[ ! -x $PY ]]; then
  echo "[test] $PY not found: run 'bash scripts/setup.sh' first" >&2
  exit 1
fi

results=()
failed=0
stage() {  # stage NAME COMMAND...: run, time and record one check
  local name=$1 start=$SECONDS rc
  shift
  echo
  echo "[test] ===== $name: $*"
  "$@"
  rc=$?
  if ((rc == 5)) && [[ $name == pytest* ]]; then
    echo "[test] $name collected no tests (pytest exit 5): counted as a failure"
  fi
  ((rc == 0)) || failed=1
  results+=("$(printf '%-20s %-6s %5d s' "$name" "$( ((rc == 0)) && echo ok || echo "FAIL($rc)")" $((SECONDS - start)))")
}

if [[ ${LINT:-1} != 0 ]]; then
  stage "ruff check" "$PY" -m ruff check .
  stage "ruff format" "$PY" -m ruff format --check --output-format concise .  # fix: ruff format .
fi
for backend in $BACKENDS; do
  # Tests marked backend_independent (environments, CLI plumbing, the suite) run once, on TensorFlow
  # when it is among BACKENDS, else on the first backend. A -m of your own comes later and wins.
  select=()
  if [[ $backend != "$primary" ]]; then
    select=(-m "not backend_independent")
  fi
  stage "pytest $backend" env KERAS_BACKEND="$backend" "$PY" -m pytest "${select[@]}" "$@"
done

echo
echo "[test] ===== summary"
printf '[test] %s\n' "${results[@]}"
exit $failed
