"""Tiny models shared by the tests."""

import keras
import numpy as np


def tiny_base(prefix=""):
    """Layers of a tiny feature extractor: Dense, BatchNormalization, Dense."""
    return [
        keras.layers.Dense(8, activation="relu", name=f"{prefix}Dense_a"),
        keras.layers.BatchNormalization(name=f"{prefix}Bn"),
        keras.layers.Dense(6, activation="relu", name=f"{prefix}Dense_b"),
    ]


def tiny_model(head_units=3, head_name="Head", inputs=4):
    return keras.Sequential(
        [keras.Input((inputs,)), *tiny_base(),
         keras.layers.Dense(head_units, name=head_name)],
        name="tiny")


def randomize(model, seed=1):
    """Gives every weight (BN moving statistics included) distinct values."""
    rng = np.random.default_rng(seed)
    for v in model.weights:
        value = rng.normal(size=v.shape).astype("float32")
        if "variance" in v.name:
            value = np.abs(value) + 0.5
        v.assign(value)
    return model


class Interrupt(keras.callbacks.Callback):
    """Stops `fit` with KeyboardInterrupt right after epoch `at` ends (a
    `BackupAndRestore` listed before it has backed that epoch up), as a
    killed process would stop."""

    def __init__(self, at):
        super().__init__()
        self.at = at

    def on_epoch_end(self, epoch, logs=None):
        if epoch == self.at:
            raise KeyboardInterrupt


class InterruptAtBatch(keras.callbacks.Callback):
    """Stops `fit` with KeyboardInterrupt right after batch `batch` of epoch
    `epoch` (a `BackupAndRestore(save_freq=<int>)` listed before it may have
    backed up a batch of that epoch)."""

    def __init__(self, epoch, batch):
        super().__init__()
        self.epoch, self.batch, self._current = epoch, batch, None

    def on_epoch_begin(self, epoch, logs=None):
        self._current = epoch

    def on_train_batch_end(self, batch, logs=None):
        if (self._current, batch) == (self.epoch, self.batch):
            raise KeyboardInterrupt


class DenseBnBlock(keras.layers.Layer):
    """A plain layer (not a model) holding a Dense and a BatchNormalization, as
    a ResNet-style block written as a layer does."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.dense = keras.layers.Dense(8, name="dense")
        self.bn = keras.layers.BatchNormalization(name="bn")

    def call(self, x, training=None):
        return self.bn(self.dense(x), training=training)


def text(value):
    return value.decode() if isinstance(value, bytes) else value


def predict(model, x):
    return model.predict(x, verbose=0)


def infer(model, x):
    """A Keras model's inference outputs on one small batch `x` (an array), as NumPy.

    Eager on TensorFlow (a one-off call traces no graph); through `predict` on
    JAX, where an eager call dispatches and compiles op by op (measured on
    2026-12-07, one run in a new process, the eager call first, compilation
    included: ConvNeXtTiny at 32 px, two images, 8.1 s eager, then 2.6 s by
    `predict`).
    """
    if keras.backend.backend() == "jax":
        return model.predict(x, batch_size=len(x), verbose=0)
    return keras.ops.convert_to_numpy(model(x, training=False))


def conv_model(channels, head=3):
    return keras.Sequential([keras.Input((8, 8, channels)),
                             keras.layers.Conv2D(4, 3, name="Conv1"),
                             keras.layers.GlobalAveragePooling2D(name="Pool"),
                             keras.layers.Dense(head, name="Head")])
