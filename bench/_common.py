"""Shared set-up for the benchmarks: quiet TensorFlow, data, the reference CNN."""

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


def fashion_subset(n, batch_size=256, seed=0):
    from keras_transfer import datasets

    (x, y), _ = datasets.load(datasets.FASHION_MNIST)
    return datasets.as_dataset(x[:n], y[:n], batch_size, shuffle=True, seed=seed)
