#!/usr/bin/env bash
# The one command that runs every check: ruff (lint and format), then pytest on each Keras backend.
#
#   bash scripts/test.sh                       # everything (what CI runs): see "The full run" below
#   bash scripts/test.sh tests/unit -x         # extra arguments go to pytest, once per backend
#   BACKENDS=jax bash scripts/test.sh -m learning   # the learning tier on JAX only (all of it)
#   LINT=0 bash scripts/test.sh                # skip ruff
#   WORKERS=4 bash scripts/test.sh             # pytest-xdist workers of the full run (default: 2)
#
# The full run (no pytest arguments) is one pytest session per backend, each spread over WORKERS
# pytest-xdist processes of one thread each: the networks in the tests are small enough that a second
# thread gains them nothing, so two processes keep two cores busy. tests/conftest.py orders the long
# tests first and `--maxschedchunk 1` hands out one test at a time, so no worker sits behind a queue.
# Markers choose what runs where (pyproject.toml):
#   TensorFlow: everything but `ci_jax`
#   JAX:        everything but `backend_independent` (run once, on TensorFlow) and `ci_tensorflow`
# so each backend runs one long DreamerV3 learning test (docs/testing.md says which and why); with one
# backend in BACKENDS, it runs both.
# With pytest arguments the sessions run one per backend, as given, without those two markers.
#
# Every stage runs even when an earlier one fails; the exit status is non-zero if any failed.
# Uses $VENV/bin/python (default .venv, made by scripts/setup.sh).
set -uo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
VENV=${VENV:-.venv}
PY=$VENV/bin/python
BACKENDS=${BACKENDS:-tensorflow jax}
WORKERS=${WORKERS:-2}
primary=${BACKENDS%% *}
[[ " $BACKENDS " == *" tensorflow "* ]] && primary=tensorflow
export MUJOCO_GL=${MUJOCO_GL:-osmesa}
export TF_CPP_MIN_LOG_LEVEL=${TF_CPP_MIN_LOG_LEVEL:-2}

if [[ ! -x $PY ]]; then
  echo "[test] $PY not found: run 'bash scripts/setup.sh' first" >&2
  exit 1
fi

results_dir=$(mktemp -d)
trap 'rm -rf "$results_dir"' EXIT
stage() {  # stage NAME COMMAND...: run, time and record one check
  local name=$1 start=$SECONDS rc
  shift
  echo
  echo "[test] ===== $name: $*"
  "$@"
  rc=$?
  echo "[test] $name: exit $rc after $((SECONDS - start)) s"
  if ((rc == 5)) && [[ $name == pytest* ]]; then
    echo "[test] $name collected no tests (pytest exit 5): counted as a failure"
  fi
  printf '%-28s %-8s %5d s\n' "$name" "$( ((rc == 0)) && echo ok || echo "FAIL($rc)")" $((SECONDS - start)) \
    >> "$results_dir/summary"
  return 0
}

if [[ ${LINT:-1} != 0 ]]; then
  stage "ruff check" "$PY" -m ruff check .
  stage "ruff format" "$PY" -m ruff format --check --output-format concise .  # fix: ruff format .
fi

for backend in $BACKENDS; do
  if (($# == 0)); then
    # One thread per process (inherited by the training subprocesses the tests start).
    export TF_NUM_INTRAOP_THREADS=1 TF_NUM_INTEROP_THREADS=1 OMP_NUM_THREADS=1
    export XLA_FLAGS="${XLA_FLAGS:-} --xla_cpu_multi_thread_eigen=false"
    marks=()
    [[ $backend != "$primary" ]] && marks+=("not backend_independent")
    for other in $BACKENDS; do
      [[ $other != "$backend" ]] && marks+=("not ci_$other")  # that backend runs it
    done
    select=()
    ((${#marks[@]})) && select=(-m "$(IFS='|'; echo "${marks[*]}" | sed 's/|/ and /g')")
    stage "pytest $backend" env KERAS_BACKEND="$backend" "$PY" -m pytest -n "$WORKERS" --dist load \
      --maxschedchunk 1 "${select[@]}" --durations=15
  else
    # Tests marked backend_independent (environments, CLI plumbing, the suite) run once, on TensorFlow
    # when it is among BACKENDS, else on the first backend. A -m of your own comes later and wins.
    select=()
    if [[ $backend != "$primary" ]]; then
      select=(-m "not backend_independent")
    fi
    stage "pytest $backend" env KERAS_BACKEND="$backend" "$PY" -m pytest "${select[@]}" "$@"
  fi
done

echo
echo "[test] ===== summary"
sed 's/^/[test] /' "$results_dir/summary"
! grep -q FAIL "$results_dir/summary"
