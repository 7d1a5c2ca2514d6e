"""The package on each Keras backend: what importing it does, and TF-only features."""

import os
import subprocess
import sys

import keras
import pytest

import keras_transfer as kt

IMPORT_EVERY_MODULE = """
import importlib, os, pkgutil, sys
import keras_transfer
for module in pkgutil.iter_modules(keras_transfer.__path__):
    importlib.import_module(f"keras_transfer.{module.name}")
print(sorted(m for m in ("tensorflow", "tensorflow_hub", "tf_keras") if m in sys.modules))
print(os.environ.get("TF_CPP_MIN_LOG_LEVEL"))
"""
IMPORT_KERAS = 'import os, keras; print(os.environ.get("TF_CPP_MIN_LOG_LEVEL"))'


def run_python(code):
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    done = subprocess.run([sys.executable, "-c", code], env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.strip().split("\n")


@pytest.mark.jax_only
def test_importing_every_module_on_jax_imports_no_tensorflow():
    assert run_python(IMPORT_EVERY_MODULE)[-2] == "[]"


def test_importing_leaves_tensorflow_logging_as_keras_leaves_it():
    # Keras (through TensorFlow or JAX) sets TF_CPP_MIN_LOG_LEVEL=1 when unset;
    # the package, imported first, must not set it to anything else.
    assert run_python(IMPORT_EVERY_MODULE)[-1] == run_python(IMPORT_KERAS)[-1]


@pytest.mark.jax_only
def test_tensorflow_only_features_name_the_backend_and_the_fix(tmp_path):
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    for call in (lambda: kt.HubLayer(tmp_path), lambda: kt.export_hub_module(model, tmp_path)):
        with pytest.raises(kt.BackendError) as err:
            call()
        assert isinstance(err.value, (kt.TransferError, RuntimeError))
        message = str(err.value)
        assert "'jax' backend" in message and "KERAS_BACKEND=tensorflow" in message
    assert not any(tmp_path.iterdir())  # nothing was written
