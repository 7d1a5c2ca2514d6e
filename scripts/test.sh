#!/usr/bin/env bash
# Runs the test suite once per Keras backend CI covers: TensorFlow, then JAX.
# Tests marked tensorflow_only / jax_only run in their backend's pass only.
# Each pass runs on every core (pytest-xdist, -n auto): a test writes only
# under its own tmp_path, so tests can run side by side in worker processes.
# Extra arguments go to pytest (e.g. `bash scripts/test.sh tests/test_schedules.py -x`,
# or `-n 0` for one process); KERAS_TRANSFER_BACKENDS="jax" runs one backend.
set -uo pipefail
cd "$(dirname "$0")/.."
# JAX compiles every program (a train step, each shape's weight initializer)
# once per process, and its worker processes and the tests' subprocesses
# compile the same ones: they share one on-disk compilation cache, fresh for
# this run and removed after it, every compile cached (min time 0). Measured
# 2026-12-07, one run each: the JAX pass took 748 CPU-seconds with it, 957
# without (that run had 3 more tests, about 26 s, since moved to the TensorFlow
# pass). No size cap: a cap turns on the cache's file lock (860 CPU-seconds in
# one run); without it, a process that reads an entry in the microseconds
# another spends writing it gets JAX's warning and compiles instead.
cache="$(mktemp -d)"
trap 'rm -rf "$cache"' EXIT
export JAX_COMPILATION_CACHE_DIR="${JAX_COMPILATION_CACHE_DIR:-$cache}"
export JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="${JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS:-0}"
status=0
for backend in ${KERAS_TRANSFER_BACKENDS:-tensorflow jax}; do
  echo "== tests under KERAS_BACKEND=$backend"
  KERAS_BACKEND="$backend" python3 -m pytest -n auto "$@" || status=1
done
exit "$status"
