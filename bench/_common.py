"""Shared set-up for the benchmarks: quiet TensorFlow, timing, data."""

import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402


class StepTimer(keras.callbacks.Callback):
    """Records the wall time of every training batch and epoch."""

    def __init__(self):
        super().__init__()
        self.steps, self.epochs = [], []

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = time.perf_counter()

    def on_train_batch_begin(self, batch, logs=None):
        self._step = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        self.steps.append(time.perf_counter() - self._step)

    def on_epoch_end(self, epoch, logs=None):
        self.epochs.append(time.perf_counter() - self._epoch)


def median(values):
    return statistics.median(values)


def fashion_arrays(n):
    """The first `n` Fashion-MNIST training images as float32 (n, 28, 28, 1), and labels."""
    from keras_transfer.pipeline import datasets

    (x, y), _ = datasets.load(datasets.FASHION_MNIST)
    return x[:n, ..., None].astype("float32") / 255.0, y[:n].astype("int32")
