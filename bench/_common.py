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


def interleaved(script, arms, repeats, *extra):
    """Runs `python <script> --arm <name> <extra...>` for each arm in a fresh
    process, the arms' order alternating each repeat; each run's last stdout
    line is a JSON dict. Returns `(runs, {arm: [its runs]})`."""
    import json
    import subprocess
    import sys

    runs = []
    for repeat in range(repeats):
        order = list(arms) if repeat % 2 == 0 else list(arms)[::-1]
        for name in order:
            done = subprocess.run([sys.executable, str(script), "--arm", name, *extra],
                                  capture_output=True, text=True, check=True)
            runs.append({"repeat": repeat, **json.loads(done.stdout.strip().splitlines()[-1])})
            print(runs[-1], flush=True)
    return runs, {name: [r for r in runs if r["arm"] == name] for name in arms}


def guide_by_hand(model, base, x, y, *, batch_size, loss, frozen_bn, metrics=()):
    """The keras.io guide's two phases by hand, in plain Keras: `base` frozen,
    compile (Adam 1e-3), fit 1 epoch; `base` unfrozen, compile (Adam 1e-5), fit
    2 more. With `frozen_bn`, the base's BatchNormalization layers are set back
    to `trainable = False` after unfreezing (inference mode). Returns the second
    `fit`'s History."""
    base.trainable = False
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=loss, metrics=list(metrics))
    model.fit(x, y, batch_size=batch_size, epochs=1, verbose=0)
    base.trainable = True
    if frozen_bn:
        for layer in base.layers:
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.trainable = False
    model.compile(optimizer=keras.optimizers.Adam(1e-5), loss=loss, metrics=list(metrics))
    return model.fit(x, y, batch_size=batch_size, epochs=3, initial_epoch=1, verbose=0)


def write_summary(summary, out):
    """Prints `summary` without its runs, and writes all of it to `out` (if given)."""
    import json
    import pathlib

    print(json.dumps({k: v for k, v in summary.items() if k != "runs"}, indent=2))
    if out:
        pathlib.Path(out).write_text(json.dumps(summary, indent=2) + "\n")
