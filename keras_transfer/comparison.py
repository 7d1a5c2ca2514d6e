"""Transfer vs. from-scratch as a first-class output: run an arm, plot, summarize.

An *arm* is one target model trained with the two-phase plan: `TwoPhaseSchedule`
with the base frozen in phase 1 (transfer), or with nothing frozen and the same
learning-rate plan (scratch). Both arms get the same data, epochs and rates.
"""

import time

import keras
import numpy as np

from keras_transfer import _files
from keras_transfer import errors
from keras_transfer import freezing
from keras_transfer import schedules


write_json = _files.write_json  # results files are written atomically


class PhaseProbe(keras.callbacks.Callback):
    """Measures what happens in phase 1 of a two-phase run.

    Place it after the `TwoPhaseSchedule` in the callback list. It snapshots
    the layers frozen in phase 1 when epoch 0 begins, and at the end of phase
    1 records their largest absolute change (0.0 means bit-identical), the
    test accuracy (if `test` is given) and the wall time of each phase.

    Args:
        freeze: the phase-1 freeze selector (as `TwoPhaseSchedule` takes it).
        switch_epoch: the first epoch of phase 2.
        test: optional test data (a `tf.data.Dataset`) to evaluate at the end
            of phase 1.

    Attributes:
        frozen_max_change: largest absolute change of any frozen weight over
            phase 1 (None until phase 1 ends; 0.0 if nothing was frozen).
        test_accuracy_phase1: test accuracy at the end of phase 1.
        seconds: wall time per phase, `{"phase1": s, "phase2": s}`.
    """

    def __init__(self, freeze, switch_epoch, test=None):
        super().__init__()
        self.freeze = freeze
        self.switch_epoch = switch_epoch
        self.test = test
        self.frozen_max_change = None
        self.test_accuracy_phase1 = None
        self.seconds = {}
        self._start = None
        self._frozen = None

    def on_train_begin(self, logs=None):
        self._start = time.perf_counter()

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == 0:
            layers = freezing.select_layers(self.model, self.freeze)
            self._frozen = [(v, v.numpy().copy()) for layer in layers for v in layer.weights]

    def on_epoch_end(self, epoch, logs=None):
        if epoch == self.switch_epoch - 1:
            now = time.perf_counter()
            self.seconds["phase1"] = now - self._start
            self._start = now
            if self._frozen is not None:
                self.frozen_max_change = max(
                    [float(np.max(np.abs(v.numpy() - before))) for v, before in self._frozen],
                    default=0.0)
            if self.test is not None:
                self.test_accuracy_phase1 = _accuracy(self.model, self.test)

    def on_train_end(self, logs=None):
        self.seconds["phase2" if "phase1" in self.seconds else "phase1"] = (
            time.perf_counter() - self._start)


def _accuracy(model, data):
    return float(model.evaluate(data, verbose=0, return_dict=True)["accuracy"])


def run_arm(model, train, *, validation, test, train_eval, freeze, head_epochs, epochs,
            head_lr, finetune_lr, callbacks=(), verbose=1):
    """Compiles and trains one arm with the two-phase plan, then measures it.

    Args:
        model: the target model, weights already loaded (or fresh, for scratch).
        train: the shuffled training `tf.data.Dataset`.
        validation: validation data, evaluated every epoch.
        test: test data, evaluated after phase 1 and at the end.
        train_eval: the training images without shuffling, for train accuracy.
        freeze: the phase-1 freeze selector (`[]` freezes nothing).
        head_epochs: phase-1 epochs; epochs: total epochs.
        head_lr, finetune_lr: the phases' learning rates (Adam).
        callbacks: more callbacks, run after the schedule (e.g.
            `keras.callbacks.BackupAndRestore`).
        verbose: Keras progress output.

    Returns:
        A JSON-ready dict: `history` (per-epoch metrics with `phase`, `lr`),
        `test_accuracy_phase1`, `test_accuracy`, `train_accuracy`, `seconds`
        per phase and `frozen_max_change_phase1`.
    """
    model.compile(optimizer=keras.optimizers.Adam(head_lr),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    schedule = schedules.TwoPhaseSchedule(
        freeze=freeze, switch_epoch=head_epochs, head_lr=head_lr,
        finetune_lr=finetune_lr, verbose=verbose)
    probe = PhaseProbe(freeze, head_epochs, test)
    history = model.fit(train, validation_data=validation, epochs=epochs,
                        callbacks=[schedule, probe, *callbacks],
                        shuffle=False,  # tf.data shuffles
                        verbose=verbose)
    return {
        "history": {k: [float(v) for v in vs] for k, vs in history.history.items()},
        "test_accuracy_phase1": probe.test_accuracy_phase1,
        "test_accuracy": _accuracy(model, test),
        "train_accuracy": _accuracy(model, train_eval),
        "seconds": probe.seconds,
        "frozen_max_change_phase1": probe.frozen_max_change,
    }


def plot_comparison(arms, switch_epoch, path, title="Transfer vs. scratch"):
    """Writes a PNG of validation accuracy and loss per epoch for each arm.

    Args:
        arms: arm name -> result of `run_arm` (or any dict with `history`).
        switch_epoch: where phase 2 begins (drawn as a dashed line).
        path: the PNG to write (atomically).

    Returns:
        The path written.

    Raises:
        ArgumentError: an arm has no per-epoch validation accuracy and loss
            (it was trained without validation data).
    """
    for name, arm in arms.items():
        missing = {"val_accuracy", "val_loss"} - set(arm.get("history", {}))
        if missing:
            raise errors.ArgumentError(
                f"Arm '{name}' has no {sorted(missing)} in its history: plot_comparison "
                "draws validation curves; train the arm with validation data "
                "(run_arm's `validation=`).")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for name, arm in arms.items():
        history = arm["history"]
        epochs = np.arange(1, len(history["val_accuracy"]) + 1)
        axes[0].plot(epochs, history["val_accuracy"], marker="o", label=name)
        axes[1].plot(epochs, history["val_loss"], marker="o", label=name)
    for ax, label in zip(axes, ("validation accuracy", "validation loss")):
        ax.axvline(switch_epoch + 0.5, color="gray", linestyle="--", linewidth=1)
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend()
    axes[1].set_yscale("log")
    fig.suptitle(f"{title} (dashed: phase 2 begins)")
    fig.tight_layout()
    with _files.atomic_write(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    return path


def summary_table(arms):
    """A short text table: test accuracy after phase 1 and at the end, per arm."""
    lines = [f"{'arm':<10} {'test acc, phase 1':>18} {'test acc, end':>14} "
             f"{'train acc, end':>15} {'seconds':>8}"]
    for name, arm in arms.items():
        p1 = arm["test_accuracy_phase1"]
        lines.append(
            f"{name:<10} {'-' if p1 is None else f'{p1:.4f}':>18} "
            f"{arm['test_accuracy']:>14.4f} {arm['train_accuracy']:>15.4f} "
            f"{sum(arm['seconds'].values()):>8.1f}")
    return "\n".join(lines)
