"""Shared fixtures, and the backend markers.

The suite runs once per Keras backend (`scripts/test.sh`). A test marked
`tensorflow_only` (TF Hub SavedModels, tf.distribute) or `jax_only`
(keras.distribution on JAX devices) is deselected, not skipped, under the
other backends: it cannot run there, and it runs in its own backend's pass.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # quiet TensorFlow in tests

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

BACKEND_ONLY = {"tensorflow_only": "tensorflow", "jax_only": "jax"}


def pytest_collection_modifyitems(config, items):
    backend = keras.backend.backend()
    keep, drop = [], []
    for item in items:
        needs = {b for marker, b in BACKEND_ONLY.items() if item.get_closest_marker(marker)}
        (drop if needs and backend not in needs else keep).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


def pytest_report_header(config):
    return f"keras backend: {keras.backend.backend()}"


@pytest.fixture(autouse=True)
def _seeded():
    keras.backend.clear_session()
    keras.utils.set_random_seed(0)
    yield


@pytest.fixture
def data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 4)).astype("float32")
    y = (x[:, 0] > 0).astype("int32") + (x[:, 1] > 0).astype("int32")
    return x, y
