import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # quiet TensorFlow in tests

import keras
import numpy as np
import pytest


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
