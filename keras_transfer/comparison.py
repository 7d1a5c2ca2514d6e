"""Transfer vs. from-scratch as a first-class output: run an arm, plot, summarize.

An *arm* is one target model trained with one recipe, with the base frozen in
phase 1 (transfer) or from random weights with nothing frozen (scratch). Both
arms get the same data, epochs and batch size. Two recipes:

- `run_fine_tune_arm`, the recommended one: `fine_tune` (finder, one-cycle,
  discriminative rates); scratch runs the same finder and one-cycle over
  every epoch, without freezing.
- `run_arm`, the seed's plan: `TwoPhaseSchedule` with constant rates per
  phase; scratch runs the same rates with nothing frozen.

A *regime* is a training-set size; `plot_regimes` and `regimes_table` put
several regimes in one figure and one table.
"""

import time

import keras
import numpy as np

from keras_transfer import _files
from keras_transfer import freezing
from keras_transfer import recipes
from keras_transfer import schedules


write_json = _files.write_json  # results files are written atomically


class PhaseProbe(keras.callbacks.Callback):
    """Measures what happens in phase 1 of a two-phase run.

    Place it after the `TwoPhaseSchedule` in the callback list. When epoch 0
    begins it snapshots the layers of `freeze` that phase 1 froze (a
    BatchNormalization layer that trains in phase 1 is not watched), and at
    the end of phase 1 records their largest absolute change (0.0 means
    bit-identical), the test accuracy (if `test` is given) and the wall time
    of each phase.

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
            layers = [layer for layer in freezing.select_layers(self.model, self.freeze)
                      if not layer.trainable]
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
    return _measured(model, history, probe, test, train_eval)


def run_fine_tune_arm(model, train, *, validation, test, train_eval, scratch, epochs,
                      freeze_epochs, freeze, callbacks=(), verbose=1, **options):
    """Trains one arm with `fine_tune`, then measures it as `run_arm` does.

    Args:
        model: the target model, weights already loaded (or fresh, for scratch).
        train: the shuffled training `tf.data.Dataset`.
        validation, test, train_eval: as for `run_arm`.
        scratch: True for the from-scratch arm: nothing is frozen, no phase
            1 (`freeze_epochs=0`), one rate for every layer (`lr_mult=1`);
            its test accuracy is still taken after `freeze_epochs` epochs.
        epochs: total epochs; freeze_epochs: the transfer arm's phase 1.
        freeze: the transfer arm's phase-1 freeze selector.
        callbacks, verbose: as for `run_arm`.
        **options: more `fine_tune` arguments (`base_lr`, `lr_mult`, ...).

    Returns:
        `run_arm`'s dict, plus `base_lr` (the rate used) and, when the
        finder ran, `learning_rate_curve` (rates, smoothed losses,
        suggestion).
    """
    probe = PhaseProbe([] if scratch else freeze, freeze_epochs, test)
    if scratch:
        freeze, freeze_epochs, options["lr_mult"] = [], 0, 1.0
    history = recipes.fine_tune(model, train, validation=validation, freeze=freeze,
                                epochs=epochs, freeze_epochs=freeze_epochs,
                                callbacks=[probe, *callbacks], verbose=verbose,
                                shuffle=False,  # tf.data shuffles
                                **options)
    arm = _measured(model, history, probe, test, train_eval)
    arm["base_lr"] = history.base_lr
    curve = history.learning_rate_curve
    if curve is not None:
        arm["learning_rate_curve"] = {"learning_rates": list(curve.learning_rates),
                                      "losses": list(curve.losses),
                                      "suggestion": curve.suggestion, "method": curve.method}
    return arm


def _measured(model, history, probe, test, train_eval):
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
        title: the figure's title.

    Returns:
        The path written.
    """
    return plot_regimes({None: (arms, switch_epoch)}, path, title=title)


def plot_regimes(regimes, path, title="Transfer vs. scratch"):
    """Writes one PNG with a row per regime: validation accuracy and loss per epoch.

    Args:
        regimes: label -> `(arms, switch_epoch)`, in the order to draw them;
            `arms` maps arm names to results of `run_arm` or
            `run_fine_tune_arm`. A label of None draws no row title.
        path: the PNG to write (atomically).
        title: the figure's title.

    Returns:
        The path written.

    Example:

    ```python
    comparison.plot_regimes({"55,000 images": (arms, 1), "1,000 images": (low, 1)},
                            "comparison.png", title="Fashion-MNIST -> MNIST")
    ```
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, rows = plt.subplots(len(regimes), 2, figsize=(10, 0.5 + 3.8 * len(regimes)),
                             squeeze=False)
    for axes, (label, (arms, switch_epoch)) in zip(rows, regimes.items()):
        for name, arm in arms.items():
            history = arm["history"]
            epochs = np.arange(1, len(history["val_accuracy"]) + 1)
            axes[0].plot(epochs, history["val_accuracy"], marker="o", label=name)
            axes[1].plot(epochs, history["val_loss"], marker="o", label=name)
        for ax, quantity in zip(axes, ("validation accuracy", "validation loss")):
            ax.axvline(switch_epoch + 0.5, color="gray", linestyle="--", linewidth=1)
            ax.set_xlabel("epoch")
            ax.set_ylabel(quantity)
            ax.grid(alpha=0.3)
            ax.legend()
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            if label is not None:
                ax.set_title(label, fontsize=10)
        axes[1].set_yscale("log")
    fig.suptitle(f"{title} (dashed: phase 2 begins)")
    fig.tight_layout()
    with _files.atomic_write(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    return path


def summary_table(arms):
    """A short text table: test accuracy after phase 1 and at the end, per arm."""
    return regimes_table({None: arms})


def regimes_table(regimes):
    """One text table for several regimes: a row per regime and arm.

    Args:
        regimes: regime label -> arms (arm name -> result of `run_arm` or
            `run_fine_tune_arm`); a label of None leaves the regime column out.

    Returns:
        The table as a string.
    """
    labelled = any(label is not None for label in regimes)
    width = max([len(str(label)) for label in regimes] + [6])
    head = f"{'regime':<{width}} " if labelled else ""
    lines = [f"{head}{'arm':<10} {'test acc, phase 1':>18} {'test acc, end':>14} "
             f"{'train acc, end':>15} {'seconds':>8}"]
    for label, arms in regimes.items():
        for name, arm in arms.items():
            p1 = arm["test_accuracy_phase1"]
            first = f"{label:<{width}} " if labelled else ""
            lines.append(
                f"{first}{name:<10} {'-' if p1 is None else f'{p1:.4f}':>18} "
                f"{arm['test_accuracy']:>14.4f} {arm['train_accuracy']:>15.4f} "
                f"{sum(arm['seconds'].values()):>8.1f}")
    return "\n".join(lines)
