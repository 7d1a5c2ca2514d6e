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

import json
import os
import time

import keras
import numpy as np

from keras_transfer import _files
from keras_transfer import _layers
from keras_transfer import errors
from keras_transfer import freezing
from keras_transfer import recipes
from keras_transfer import schedules


write_json = _files.write_json  # results files are written atomically

# the `fine_tune` arguments the pipeline script takes as flags (each passed on
# only when given); bench/transfer_gains.py reads them back from a run's flags
FINE_TUNE_FLAGS = ("base_lr", "lr_mult", "train_batchnorm", "sweep_phase2")


class PhaseProbe(keras.callbacks.Callback):
    """Measures a two-phase run, epoch by epoch, across a resume too.

    Place it after the `TwoPhaseSchedule` and before any
    `keras.callbacks.BackupAndRestore` in the callback list. It snapshots the
    layers frozen in phase 1 when training begins (before a backup is
    restored), records each epoch's logs and wall time, and at the end of
    phase 1 records the frozen layers' largest absolute change (0.0 means
    bit-identical) and the test accuracy (if `test` is given).

    With `record=PATH` it writes all of that to PATH after every epoch, before
    the backup of that epoch is written, with the model's random-seed states
    (dropout masks), which Keras' `BackupAndRestore` does not keep; a run
    resumed from the backup reads it back, so the arm reports the whole run and
    its resumed epochs draw the random numbers an uninterrupted run drew.

    Args:
        freeze: the phase-1 freeze selector (as `TwoPhaseSchedule` takes it).
        switch_epoch: the first epoch of phase 2.
        test: optional test data (a `tf.data.Dataset`) to evaluate at the end
            of phase 1.
        record: optional JSON path to keep the measures in across a resume.

    Attributes:
        history: per-epoch logs of the whole run, `{name: [value, ...]}`.
        frozen_max_change: largest absolute change of any frozen weight over
            phase 1 (None until phase 1 ends; 0.0 if nothing was frozen).
        test_accuracy_phase1: test accuracy at the end of phase 1.
        seconds: wall time of each phase's epochs (training and validation),
            `{"phase1": s, "phase2": s}`.

    Raises:
        ArgumentError: (at train begin) `record` was written for a model with
            another number of random-seed states.

    Example:

    ```python
    from keras_transfer.pipeline.comparison import PhaseProbe

    schedule = keras_transfer.TwoPhaseSchedule(12, switch_epoch=1, verbose=0)
    probe = PhaseProbe(12, switch_epoch=1, record="backup/arm/record.json")
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    model.fit(train, epochs=2, verbose=0, callbacks=[
        schedule, probe, keras.callbacks.BackupAndRestore("backup/arm")])
    ```
    """

    def __init__(self, freeze, switch_epoch, test=None, record=None):
        super().__init__()
        self.freeze = freeze
        self.switch_epoch = switch_epoch
        self.test = test
        self.record = record
        self.frozen_max_change = None
        self.frozen_layers = []  # the weighted layers frozen in phase 1, watched
        self.test_accuracy_phase1 = None
        self._epochs = {}  # epoch -> {"logs", "seconds", "seed_states"}
        self._frozen = None
        self._first_epoch = True

    @property
    def history(self):
        keys = sorted({k for entry in self._epochs.values() for k in entry["logs"]})
        return {k: [self._epochs[e]["logs"][k] for e in sorted(self._epochs)] for k in keys}

    @property
    def seconds(self):
        totals = {}
        for epoch, entry in self._epochs.items():
            phase = "phase1" if epoch < self.switch_epoch else "phase2"
            totals[phase] = totals.get(phase, 0.0) + entry["seconds"]
        return totals

    def on_train_begin(self, logs=None):
        # the selection's weighted layers, down to those of a nested base; the
        # first phase-1 epoch tells which of them the schedule froze
        leaves = [l for l in _layers.leaves(freezing.select_layers(self.model, self.freeze))
                  if l.weights]
        self._snapshot = [(l, [(v, v.numpy().copy()) for v in l.weights]) for l in leaves]
        self._first_epoch = True
        if self.record is not None and os.path.isfile(self.record):
            with open(self.record) as f:
                kept = json.load(f)
            self._epochs = {int(e): entry for e, entry in kept["epochs"].items()}
            self.frozen_max_change = kept["frozen_max_change_phase1"]
            self.frozen_layers = kept.get("frozen_layers_phase1", [])
            self.test_accuracy_phase1 = kept["test_accuracy_phase1"]

    def on_epoch_begin(self, epoch, logs=None):
        if self._first_epoch and epoch - 1 in self._epochs:  # resumed after epoch - 1
            _restore_seed_states(self.model, self._epochs[epoch - 1]["seed_states"],
                                 self.record)
        if self._first_epoch and epoch < self.switch_epoch:
            # what phase 1 froze: a BatchNormalization layer that trains in
            # phase 1 (fine_tune's train_batchnorm=True) is not watched
            watched = [(l, pairs) for l, pairs in self._snapshot if not l.trainable]
            self.frozen_layers = [l.name for l, _ in watched]
            self._frozen = [pair for _, pairs in watched for pair in pairs]
        self._first_epoch = False
        self._epochs = {e: entry for e, entry in self._epochs.items() if e < epoch}
        self._epoch_start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        seconds = time.perf_counter() - self._epoch_start
        if epoch == self.switch_epoch - 1:
            self.frozen_max_change = max(
                [float(np.max(np.abs(v.numpy() - before))) for v, before in self._frozen],
                default=0.0)
            if self.test is not None:
                self.test_accuracy_phase1 = _accuracy(self.model, self.test)
        self._epochs[epoch] = {"logs": {k: float(v) for k, v in (logs or {}).items()},
                               "seconds": seconds, "seed_states": _seed_states(self.model)}
        if self.record is not None:
            write_json({"epochs": self._epochs, "frozen_max_change_phase1": self.frozen_max_change,
                        "frozen_layers_phase1": self.frozen_layers,
                        "test_accuracy_phase1": self.test_accuracy_phase1}, self.record)


def _seed_variables(model):
    # A SeedGenerator's state is in `model.variables` but not in `model.weights`,
    # and `model.save_weights` (so BackupAndRestore) does not save it: a resumed
    # fit would draw epoch 0's dropout masks again. tests/pipeline/test_comparison.py
    # fails if Keras starts keeping it.
    weights = {id(w) for w in model.weights}
    return [v for v in model.variables if id(v) not in weights]


def _seed_states(model):
    return [keras.ops.convert_to_numpy(v).tolist() for v in _seed_variables(model)]


def _restore_seed_states(model, states, record):
    variables = _seed_variables(model)
    if len(variables) != len(states):
        raise errors.ArgumentError(
            f"{record} holds {len(states)} random-seed states but model '{model.name}' has "
            f"{len(variables)}: it was written for another model. Delete it (and the "
            "backup beside it) to train this arm from the start.")
    for variable, state in zip(variables, states):
        variable.assign(np.asarray(state, dtype=variable.dtype))


def _accuracy(model, data):
    return float(model.evaluate(data, verbose=0, return_dict=True)["accuracy"])


def run_arm(model, train, *, validation, test, train_eval, freeze, head_epochs, epochs,
            head_lr, finetune_lr, callbacks=(), backup_dir=None, verbose=1):
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
        callbacks: more callbacks, run after the schedule (e.g. the
            `datasets.EpochOrder` of `train`).
        backup_dir: if set, the training state is backed up there every epoch
            (`keras.callbacks.BackupAndRestore`, with the `PhaseProbe` record):
            calling `run_arm` again the same way after an interruption resumes
            the arm and returns what an uninterrupted run returns (seconds
            aside), given a data order that depends only on the epoch.
        verbose: Keras progress output.

    Returns:
        A JSON-ready dict: `history` (per-epoch metrics with `phase`, `lr`),
        `test_accuracy_phase1`, `test_accuracy`, `train_accuracy`, `seconds`
        per phase, `frozen_max_change_phase1` and `frozen_layers_phase1` (the
        weighted layers phase 1 froze, whose change was measured).
    """
    model.compile(optimizer=keras.optimizers.Adam(head_lr),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    schedule = schedules.TwoPhaseSchedule(
        freeze=freeze, switch_epoch=head_epochs, head_lr=head_lr,
        finetune_lr=finetune_lr, verbose=verbose)
    backup, probe = _backup(backup_dir, freeze, head_epochs, test)
    model.fit(train, validation_data=validation, epochs=epochs,
              callbacks=[schedule, probe, *callbacks, *backup],
              shuffle=False,  # tf.data shuffles
              verbose=verbose)
    return _measured(model, probe, test, train_eval)


def run_fine_tune_arm(model, train, *, validation, test, train_eval, scratch, epochs,
                      freeze_epochs, freeze, callbacks=(), backup_dir=None, verbose=1,
                      **options):
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
        callbacks, backup_dir, verbose: as for `run_arm`. A resumed arm
            runs the finder again (it is restored bit for bit, so the
            suggestion is the same).
        **options: more `fine_tune` arguments (`base_lr`, `lr_mult`, ...).

    Returns:
        `run_arm`'s dict, plus `base_lr` (the rate used), `finetune_lr`
        (phase 2's peak) and, when the finder ran, `learning_rate_curve`
        (rates, smoothed losses, suggestion), and
        `phase2_learning_rate_curve` when the second sweep ran
        (`sweep_phase2`).
    """
    backup, probe = _backup(backup_dir, [] if scratch else freeze, freeze_epochs, test)
    if scratch:
        freeze, freeze_epochs, options["lr_mult"] = [], 0, 1.0
    history = recipes.fine_tune(model, train, validation=validation, freeze=freeze,
                                epochs=epochs, freeze_epochs=freeze_epochs,
                                callbacks=[probe, *callbacks, *backup], verbose=verbose,
                                shuffle=False,  # tf.data shuffles
                                **options)
    arm = _measured(model, probe, test, train_eval)
    arm["base_lr"] = history.base_lr
    arm["finetune_lr"] = history.finetune_lr
    for key, curve in (("learning_rate_curve", history.learning_rate_curve),
                       ("phase2_learning_rate_curve", history.phase2_learning_rate_curve)):
        if curve is not None:
            arm[key] = {"learning_rates": list(curve.learning_rates),
                        "losses": list(curve.losses),
                        "suggestion": curve.suggestion, "method": curve.method}
    return arm


def _backup(backup_dir, freeze, switch_epoch, test):
    """The BackupAndRestore callback (if backup_dir) and the PhaseProbe recording beside it."""
    if backup_dir is None:
        return [], PhaseProbe(freeze, switch_epoch, test)
    return ([keras.callbacks.BackupAndRestore(os.fspath(backup_dir))],
            PhaseProbe(freeze, switch_epoch, test,
                       record=os.path.join(backup_dir, "record.json")))


def _measured(model, probe, test, train_eval):
    return {
        "history": probe.history,
        "test_accuracy_phase1": probe.test_accuracy_phase1,
        "test_accuracy": _accuracy(model, test),
        "train_accuracy": _accuracy(model, train_eval),
        "seconds": probe.seconds,
        "frozen_max_change_phase1": probe.frozen_max_change,
        "frozen_layers_phase1": probe.frozen_layers,
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

    Raises:
        ArgumentError: an arm has no per-epoch validation accuracy and loss
            (it was trained without validation data).
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

    Raises:
        ArgumentError: no regime, a regime without arms, or an arm without
            per-epoch validation accuracy and loss.

    Example:

    ```python
    from keras_transfer.pipeline import comparison

    arm = lambda acc: {"history": {"val_accuracy": acc, "val_loss": [1 - a for a in acc]}}
    arms = {"transfer": arm([0.90, 0.95, 0.96]), "scratch": arm([0.50, 0.90, 0.97])}
    comparison.plot_regimes({"1,000 images": (arms, 1)}, "comparison.png",
                            title="Fashion-MNIST -> MNIST")   # 'comparison.png'
    ```
    """
    if not regimes or not all(arms for arms, _ in regimes.values()):
        raise errors.ArgumentError(
            "plot_regimes needs at least one regime, each with at least one arm; "
            f"received {len(regimes)} regime(s).")
    for arms, _ in regimes.values():
        for name, arm in arms.items():
            missing = {"val_accuracy", "val_loss"} - set(arm.get("history", {}))
            if missing:
                raise errors.ArgumentError(
                    f"Arm '{name}' has no {sorted(missing)} in its history: the plot "
                    "draws validation curves; train the arm with validation data "
                    "(run_arm's `validation=`).")
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
            first = f"{str(label if label is not None else ''):<{width}} " if labelled else ""
            lines.append(
                f"{first}{name:<10} {'-' if p1 is None else f'{p1:.4f}':>18} "
                f"{arm['test_accuracy']:>14.4f} {arm['train_accuracy']:>15.4f} "
                f"{sum(arm['seconds'].values()):>8.1f}")
    return "\n".join(lines)
