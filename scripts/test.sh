#!/usr/bin/env bash
# The one command that runs every check: ruff (lint and format), then pytest on each Keras backend.
#
#   bash scripts/test.sh                       # everything (what CI runs): see "The full run" below
#   bash scripts/test.sh tests/unit -x         # extra arguments go to pytest, once per backend
#   BACKENDS=jax bash scripts/test.sh -m learning   # the learning tier on JAX only (all of it)
#   LINT=0 bash scripts/test.sh                # skip ruff
#
# The full run (no pytest arguments) is pytest stages in two lanes that run side by side, each process
# on one thread: the networks in the tests are small enough that a second thread gains them nothing
# (bsuite catch, preset small: 4.7-5.2 updates/s on one thread, 4.8 on two), so the two cores do two
# things at once. The longest test (DreamerV3 learns catch, marker own_lane) is split from the rest:
#   lane 1: catch on TensorFlow, then catch on each other backend (JAX)
#   lane 2: everything else on TensorFlow, then the backend-dependent tests on JAX
# Each output line starts with its lane's number; pytest lists each stage's 15 slowest tests.
# With pytest arguments the stages run one after another, one per backend, as given.
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

results_dir=$(mktemp -d)
trap 'rm -rf "$results_dir"' EXIT
stage() {  # stage NAME COMMAND...: run, time and record one check
  local name=$1 start=$SECONDS rc
  shift
  echo
  echo "[test] ===== $name ($(date -u +%H:%M:%S) UTC): $*"
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

pytest_stage() {  # pytest_stage NAME BACKEND PYTEST-ARGS...
  local name=$1 backend=$2
  shift 2
  stage "$name" env KERAS_BACKEND="$backend" "$PY" -m pytest "$@"
}

lane() {  # lane N STAGE...: run pytest stages one after another, each output line prefixed [N]
  # STAGE is "NAME|BACKEND|MARKS": pytest -m MARKS.
  local n=$1 spec name backend marks
  shift
  for spec in "$@"; do
    IFS='|' read -r name backend marks <<< "$spec"
    pytest_stage "$name" "$backend" -m "$marks" --durations=15 2>&1 | sed -u "s/^/[$n] /"
  done
}

if [[ ${LINT:-1} != 0 ]]; then
  stage "ruff check" "$PY" -m ruff check .
  stage "ruff format" "$PY" -m ruff format --check --output-format concise .  # fix: ruff format .
fi

if (($# == 0)); then
  # One thread per process (inherited by the training subprocesses the tests start).
  export TF_NUM_INTRAOP_THREADS=1 TF_NUM_INTEROP_THREADS=1 OMP_NUM_THREADS=1
  export XLA_FLAGS="${XLA_FLAGS:-} --xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
  lane1=() lane2=()
  for backend in $BACKENDS; do
    if [[ $backend == "$primary" ]]; then
      lane1=("pytest $backend own_lane|$backend|own_lane" "${lane1[@]}")
      lane2=("pytest $backend|$backend|not own_lane" "${lane2[@]}")
    else
      lane1+=("pytest $backend own_lane|$backend|own_lane")
      lane2+=("pytest $backend|$backend|not own_lane and not backend_independent")
    fi
  done
  lane 1 "${lane1[@]}" &
  first_lane=$!
  lane 2 "${lane2[@]}"
  wait "$first_lane"
else
  for backend in $BACKENDS; do
    # Tests marked backend_independent (environments, CLI plumbing, the suite) run once, on TensorFlow
    # when it is among BACKENDS, else on the first backend. A -m of your own comes later and wins.
    select=()
    if [[ $backend != "$primary" ]]; then
      select=(-m "not backend_independent")
    fi
    pytest_stage "pytest $backend" "$backend" "${select[@]}" "$@"
  done
fi

echo
echo "[test] ===== summary"
sed 's/^/[test] /' "$results_dir/summary"
! grep -q FAIL "$results_dir/summary"
