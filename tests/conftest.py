"""Shared fixtures, and the backend markers.

The suite runs once per Keras backend (`scripts/test.sh`). A test marked
`tensorflow_only` (TF Hub SavedModels, tf.distribute) or `jax_only`
(keras.distribution on JAX devices) is deselected, not skipped, under the
other backends: it cannot run there, and it runs in its own backend's pass.
A test marked `once` runs in the TensorFlow pass only, to keep the run within
its time budget: its outcome does not depend on the backend (flag parsing,
file checks before any model runs), or a cheaper test covers the same code on
the other backends (each such test says which).
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # quiet TensorFlow in tests

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

BACKEND_ONLY = {"tensorflow_only": "tensorflow", "jax_only": "jax", "once": "tensorflow"}


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
    # Fresh sessions reset the automatic layer names ("conv2d_4") of Keras and,
    # when a test uses it, of tf_keras: files written by tf_keras name layers
    # as a fresh process would. (Keras' TensorFlow backend resets tf_keras'
    # counters with its own; the JAX backend does not.)
    # free_memory=False: Keras' clear_session would also run gc.collect(), which
    # takes 0.3 to 1.7 s per test in a worker that has TensorFlow, KerasHub and
    # torch loaded (measured: 16 of the suite's 58 CPU-minutes); a test needs
    # the reset state and names, not the collection (Python's own collector
    # still runs). Freezing the imported objects (gc.freeze) and keeping the
    # collection was slower (63% of the TensorFlow pass in 14.5 min, where this
    # reached it in 9.5): the collection still walks what the tests leave alive.
    keras.backend.clear_session(free_memory=False)
    if "tf_keras" in sys.modules:
        sys.modules["tf_keras"].backend.clear_session()
    keras.utils.set_random_seed(0)
    yield


@pytest.fixture
def data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 4)).astype("float32")
    y = (x[:, 0] > 0).astype("int32") + (x[:, 1] > 0).astype("int32")
    return x, y
