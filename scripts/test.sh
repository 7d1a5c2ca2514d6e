#!/usr/bin/env bash
# Runs the test suite once per Keras backend CI covers: TensorFlow, then JAX.
# Tests marked tensorflow_only / jax_only run in their backend's pass only.
# Each pass runs on every core (pytest-xdist, -n auto): a test writes only
# under its own tmp_path, so tests can run side by side in worker processes.
# Extra arguments go to pytest (e.g. `bash scripts/test.sh tests/test_schedules.py -x`,
# or `-n 0` for one process); KERAS_TRANSFER_BACKENDS="jax" runs one backend.
set -uo pipefail
cd "$(dirname "$0")/.."
status=0
for backend in ${KERAS_TRANSFER_BACKENDS:-tensorflow jax}; do
  echo "== tests under KERAS_BACKEND=$backend"
  KERAS_BACKEND="$backend" python3 -m pytest -n auto "$@" || status=1
done
exit "$status"
