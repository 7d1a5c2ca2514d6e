"""One-call fine-tuning recipes, on top of the callbacks.

`fit_two_phase` is the classic recipe: compile, fit the head with the base
frozen, unfreeze, compile again with a fresh optimizer, fit on from where
phase 1 ended. Its freezing policy is `TwoPhaseSchedule`'s.

`fine_tune` is the recommended recipe (fastai's `Learner.fine_tune`): the
learning-rate finder, one-cycle in each phase, discriminative rates across
the base's layer groups, all inside one `fit`.
"""

import inspect
import math
import os

import keras

from keras_transfer import _checks
from keras_transfer import _data
from keras_transfer import _files
from keras_transfer import _layers
from keras_transfer import caching
from keras_transfer import errors
from keras_transfer import freezing
from keras_transfer import groups as layer_groups
from keras_transfer import lr_finder
from keras_transfer import optimizers
from keras_transfer import learning_rates
from keras_transfer import schedules
from keras_transfer.learning_rates import OneCycle


def fit_two_phase(model, train, *, validation=None, freeze, head_epochs, epochs,
                  head_lr=1e-3, finetune_lr=1e-4, optimizer="adam",
                  loss="sparse_categorical_crossentropy", metrics=("accuracy",),
                  train_batchnorm=False, cache_features=False, lora_rank=None,
                  callbacks=None, verbose=1, **fit_kwargs):
    """The two-phase recipe in one call: compile, fit, unfreeze, recompile, fit.

    Phase 1 freezes `freeze` and trains for `head_epochs` at `head_lr`; phase 2
    unfreezes it (BatchNormalization kept frozen unless `train_batchnorm`),
    compiles again with a fresh optimizer at `finetune_lr` and trains from
    epoch `head_epochs` to `epochs`.

    Args:
        model: the target `keras.Model`.
        train: training data as `fit` takes it: a tuple `(x, y)` or
            `(x, y, sample_weight)` of arrays, or data yielding such batches
            (a `tf.data.Dataset`, a `keras.utils.PyDataset`).
        validation: optional validation data for `fit`.
        freeze: what phase 1 freezes (see `TwoPhaseSchedule`).
        head_epochs: number of phase-1 epochs.
        epochs: the total number of epochs (phase 2 runs the rest).
        head_lr, finetune_lr: the phases' learning rates (floats or schedules).
        optimizer: an optimizer name or instance; each phase gets a fresh
            instance with the same config.
        loss, metrics: as for `model.compile`.
        train_batchnorm: train BatchNormalization layers in phase 2.
        cache_features: run phase 1 on cached base outputs (`fit_head_cached`):
            the same head, much faster. The cut is after `freeze`'s last
            top-level layer (`freeze=N`, or `freeze=[base]` for a nested base
            model); deterministic layers before it (Rescaling, Normalization)
            are cached with it. Random layers before it (augmentation) are
            refused, naming them; `"without_augmentation"` caches features
            without them and warns that phase 1 trains without augmentation.
        lora_rank: phase 2 trains LoRA adapters of this rank instead of whole
            layers (as `TwoPhaseSchedule(lora_rank=...)`).
        callbacks: callbacks for both phases.
        verbose: passed to `fit`.
        **fit_kwargs: other `fit` arguments (`batch_size`, ...).

    Returns:
        A `keras.callbacks.History` covering both phases, its `history` with a
        `phase` column (1 or 2 per epoch) and an `lr` column (the rate at
        each epoch's end).

    Raises:
        ArgumentError: `head_epochs` outside `[0, epochs]`, or a layer with
            weights before the cut that `freeze` leaves out (caching would
            freeze it).
        LayerSelectionError: `freeze` does not fit the model.

    Example:

    ```python
    history = keras_transfer.fit_two_phase(
        target, (x, y), freeze=12, head_epochs=2, epochs=4,
        head_lr=1e-3, finetune_lr=1e-4, verbose=0)
    history.history["phase"]   # [1, 1, 2, 2]
    ```
    """
    owner = "fit_two_phase"
    epochs = _checks.whole_number(epochs, "epochs", owner=owner, minimum=1)
    head_epochs = _checks.whole_number(head_epochs, "head_epochs", owner=owner, minimum=0)
    if head_epochs > epochs:
        raise errors.ArgumentError(
            f"fit_two_phase: expected head_epochs <= epochs, received "
            f"head_epochs={head_epochs}, epochs={epochs}.")
    _data.check(train, owner)
    x, y, sample_weight = _data.fit_arguments(train, owner)
    if cache_features not in (False, True, "without_augmentation"):
        raise errors.ArgumentError(
            "fit_two_phase: cache_features must be False, True or 'without_augmentation', "
            f"received {cache_features!r}.")
    if cache_features and head_epochs:
        _check_cut_is_frozen(model, freeze)
    merged = keras.callbacks.History()
    merged.set_model(model)
    merged.on_train_begin()  # sets up `epoch` and `history`
    # The same freezing policy as the callback, applied between two compiles.
    policy = schedules.TwoPhaseSchedule(freeze, head_epochs, unfreeze=None, train_batchnorm=train_batchnorm,
                              lora_rank=lora_rank, verbose=0)
    policy.prepare(model)
    # first, so that the callbacks after it see the rate in `logs` too
    callbacks = [_LogRate(), *(callbacks or [])]
    phases = [(1, 0, head_epochs, head_lr), (2, head_epochs, epochs, finetune_lr)]
    for phase, start, stop, lr in phases:
        if start == stop:
            continue
        if phase == 1 and cache_features:
            history = caching.fit_head_cached(
                model, train, cut=freeze, epochs=stop, validation=validation,
                optimizer=optimizer, learning_rate=lr, loss=loss, metrics=metrics,
                batch_size=fit_kwargs.get("batch_size") or 32,
                shuffle=fit_kwargs.get("shuffle", True), callbacks=callbacks, verbose=verbose,
                without_augmentation=cache_features == "without_augmentation")
        else:
            policy.apply(model, phase)
            model.compile(optimizer=optimizers.fresh_optimizer(optimizer, lr), loss=loss,
                          metrics=list(metrics) if metrics else None)
            history = model.fit(x, y, sample_weight=sample_weight,
                                validation_data=validation, epochs=stop,
                                initial_epoch=start, callbacks=callbacks,
                                verbose=verbose, **fit_kwargs)
        for key, values in history.history.items():
            merged.history.setdefault(key, []).extend(values)
        merged.history.setdefault("phase", []).extend([phase] * len(history.epoch))
        merged.epoch.extend(history.epoch)
    return merged


def _check_cut_is_frozen(model, freeze):
    """Refuses a cached phase 1 that would freeze weights plain phase 1 trains:
    a layer with weights before the cut but outside `freeze`."""
    index = caching.cut_index(model, freeze)
    frozen = {id(layer) for layer in freezing.select_layers(model, freeze)}
    outside = [layer.name for layer in model.layers[:index] if layer.weights
               and not any(id(sub) in frozen for sub in _layers.with_sublayers(layer))]
    if outside:
        raise errors.ArgumentError(
            f"fit_two_phase: cache_features caches everything before the cut, but "
            f"{outside} there {'are' if len(outside) > 1 else 'is'} not in freeze= and "
            "would train in a plain phase 1. Add it to freeze=, or train phase 1 without "
            "caching.")


class _LogRate(keras.callbacks.Callback):
    """Logs the training optimizer's rate at each epoch's end as `lr` (a schedule's too).

    `TwoPhaseSchedule` logs it the same way when it runs as a callback;
    `fit_two_phase` applies its policy between compiles instead.
    """

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["lr"] = optimizers.current_learning_rate(self.model.optimizer)


def batch_size_for(examples, *, steps=30, smallest=16, largest=256):
    """A batch size for a training set: about `steps` optimizer steps per epoch.

    The largest power of two at most `examples / steps`, kept within
    `[smallest, largest]`. Few images need small batches: at batch 256, 100
    images give one optimizer step per epoch, and a BatchNormalization
    layer's moving statistics (and a network from scratch) get nowhere.

    Args:
        examples: the number of training examples.
        steps: the steps per epoch to aim for.
        smallest, largest: the range of batch sizes.

    Returns:
        An int batch size.

    Example:

    ```python
    keras_transfer.recipes.batch_size_for(1000)   # 32
    ```
    """
    owner = "batch_size_for"
    examples = _checks.real_number(examples, "examples", owner=owner, at_least=1)
    steps = _checks.real_number(steps, "steps", owner=owner, above=0)
    low = _checks.real_number(smallest, "smallest", owner=owner, at_least=1)
    high = _checks.real_number(largest, "largest", owner=owner, at_least=1)
    if low > high:
        raise errors.ArgumentError(
            f"batch_size_for: expected smallest <= largest, received "
            f"smallest={smallest!r}, largest={largest!r}.")
    fitting = 2 ** int(math.floor(math.log2(max(examples / steps, 1))))
    return int(min(max(fitting, low), high))


def fine_tune(model, train, *, validation=None, freeze, epochs, freeze_epochs=1, base_lr=None,
              lr_mult=10.0, groups=None, train_batchnorm=True, pct_start=0.3, div=5.0,
              final_div=1e5, head_lr_mult=1.0, head_pct_start=0.99, head_div=25.0,
              optimizer="adam",
              loss="sparse_categorical_crossentropy", metrics=("accuracy",), batch_size=None,
              steps_per_epoch=None, finder=None, sweep_phase2=False, callbacks=None, verbose=1,
              **fit_kwargs):
    """The recommended recipe in one call: finder, frozen one-cycle, unfrozen one-cycle.

    fastai's `Learner.fine_tune` in Keras 3, inside one `model.fit`:

    1. If `base_lr` is None, the learning-rate finder runs on the model as
       phase 1 trains it (the base frozen) and its suggestion over
       `head_lr_mult` (default 1) is `base_lr`.
    2. Phase 1, epochs `[0, freeze_epochs)`: `freeze` is frozen and the head
       trains with one-cycle up to `head_lr_mult * base_lr`.
    3. Phase 2, epochs `[freeze_epochs, epochs)`: everything trains with
       one-cycle, at discriminative rates from `base_lr / lr_mult` (the
       lowest layer group) to `base_lr` (the head), spaced geometrically;
       with `sweep_phase2`, the head's peak is a second sweep's suggestion
       instead, and `base_lr` sets phase 1 only.

    One `fit` with `TwoPhaseSchedule` and a `DiscriminativeOptimizer`, not
    two compiles as `fit_two_phase`: the recipe then works with any Keras
    callback (`BackupAndRestore` resumes it in the right phase, at the right
    point of each one-cycle), `History` is Keras' own, and each layer group
    has its own sub-optimizer, so a group that phase 1 froze starts phase 2
    with fresh Adam moments, without a second compile. (A group whose
    BatchNormalization trained in phase 1 has counted those steps: Keras'
    Adam corrects its bias by the optimizer's step count, so its kernels
    start phase 2 with the bias correction of a later step.)

    `epochs` counts every epoch, as in `fit` and `fit_two_phase` (fastai's
    `fine_tune(epochs)` counts the unfrozen ones only). With `freeze=[]` and
    `freeze_epochs=0` it is the same one-cycle and finder plan without
    transfer, the fair from-scratch baseline.

    Args:
        model: the target `keras.Model`, weights loaded.
        train: training data as `fit` takes it: a tuple `(x, y)` or
            `(x, y, sample_weight)` of arrays, or data yielding such batches
            (a `tf.data.Dataset`, a `keras.utils.PyDataset`; of known length,
            or pass `steps_per_epoch`).
        validation: optional validation data for `fit`.
        freeze: what phase 1 freezes (see `keras_transfer.select_layers`):
            the base.
        epochs: the total number of epochs.
        freeze_epochs: phase-1 epochs.
        base_lr: the head's peak rate in phase 2 (and phase 1's over
            `head_lr_mult`; with `sweep_phase2`, phase 1's only); None runs
            the finder.
        lr_mult: the head's rate over the lowest group's in phase 2 (>= 1).
        groups: the base's layer groups, bottom to top (what
            `discriminative_optimizer` takes). Default:
            `keras_transfer.layer_groups(model, freeze)`: one group per
            transformer block above the embeddings, one per CNN stage, or
            for a plain stack at most 3 groups of layers with kernels.
        train_batchnorm: BatchNormalization layers of the base train in both
            phases, in training mode (fastai's `train_bn`), so their
            statistics adapt to the target; at any depth, inside nested
            models and blocks too, while the rest of `freeze` (a nested
            model's or a block's own weights included) is frozen in phase 1.
            False keeps them frozen in inference mode with the source's
            statistics. Only BatchNormalization layers (and subclasses) are
            meant: fastai's `train_bn` also covers its other norm layers.
        pct_start, div, final_div: phase 2's one-cycle (`OneCycle`).
        head_lr_mult: phase 1's peak over phase 2's: the head alone trains
            at `head_lr_mult * base_lr`. The finder's suggestion is phase 1's
            rate when phase 1 comes first, so `base_lr` is then the
            suggestion over `head_lr_mult`. Default 1: both phases peak at
            the suggestion. fastai halves its rate for phase 2 (2.0 here);
            on the reference pipeline at 10,000 images that ended 0.19
            points lower (0.9884 vs. 0.9903, mean of 3 seeds), behind scratch.
        head_pct_start, head_div: phase 1's one-cycle (it also ends at
            `1 / final_div` of its peak).
        optimizer: an optimizer name or instance, for every group.
        loss, metrics: as for `compile`.
        batch_size: for array data (default 32, as `fit`).
        steps_per_epoch: for data whose length Keras cannot tell.
        finder: keyword arguments for `find_learning_rate` (e.g.
            `{"num_steps": 50}`), for each sweep.
        sweep_phase2: False (default): phase 2 peaks at `base_lr`. True:
            phase 2's peak is the suggestion of a second sweep, of what
            phase 2 trains (everything, the groups in their ratios), run
            inside `fit` when phase 2 begins, on the model as phase 1 left
            it (then restored, as every sweep). Its steps are not training
            steps: callbacks do not see them, and they count in the first
            phase-2 epoch's time; `finder`'s `plot_to` plots the first sweep
            only. A run that `BackupAndRestore` resumes inside phase 2
            reads the rate back from a file the sweep writes in each such
            callback's `backup_dir` (`keras_transfer_phase2_sweep.json`,
            local or remote, wherever `BackupAndRestore` writes its backup);
            a `fit` that begins inside phase 2 without it raises. A `fit`
            that begins at phase 2's first epoch reads it too when it is
            there: the run was stopped inside that epoch after the sweep
            (with `save_freq=<int>`, a backup taken inside an epoch restores
            that epoch from its first batch).
            Without a phase 1 (`freeze_epochs=0`) or a phase 2
            (`freeze_epochs=epochs`) no second sweep runs.
            Off by default: on the reference pipeline it ended 0.7 to 5.5
            points below on average (BENCHMARKS.md, "Phase 2's own sweep
            inside `fine_tune`").
        callbacks: more callbacks, run after the schedule.
        verbose: passed to `fit`; 1 also prints the finder's suggestion.
        **fit_kwargs: other `fit` arguments (`shuffle`, ...).

    Returns:
        Keras' `History`, its `history` with `phase` (1 or 2) and `lr` (the
        head's rate at each epoch's end) columns beside the metrics. It also
        has `base_lr` (given or found) and `learning_rate_curve` (the
        finder's `LearningRateCurve`, or None when `base_lr` was given);
        `finetune_lr`, phase 2's peak (`base_lr`, or the second sweep's
        suggestion, read back from its record in a resumed run; None when
        this `fit` did not reach phase 2), and `phase2_learning_rate_curve`
        (that sweep's curve, or None when it did not run in this `fit`).

    Raises:
        ArgumentError: epochs, phase lengths, rates or multipliers out of
            range, or data whose steps per epoch are unknown; with
            `sweep_phase2`, a `fit` that begins inside phase 2 with no record
            of its sweep.
        LayerSelectionError: `freeze` or `groups` do not fit the model.

    Example:

    ```python
    history = keras_transfer.fine_tune(target, (x, y), freeze=12, epochs=6,
                                       validation=(x_val, y_val), verbose=0)
    history.history["phase"]   # [1, 2, 2, 2, 2, 2]
    ```
    """
    owner = "fine_tune"
    epochs = _checks.whole_number(epochs, "epochs", owner=owner, minimum=1)
    freeze_epochs = _checks.whole_number(freeze_epochs, "freeze_epochs", owner=owner,
                                         minimum=0)
    if freeze_epochs > epochs:
        raise errors.ArgumentError(
            f"fine_tune: expected freeze_epochs <= epochs, received freeze_epochs="
            f"{freeze_epochs!r}, epochs={epochs}.")
    if base_lr is not None:
        _checks.real_number(base_lr, "base_lr", owner=owner, above=0,
                            why="or None for the finder")
    _checks.real_number(lr_mult, "lr_mult", owner=owner, at_least=1)
    _checks.real_number(head_lr_mult, "head_lr_mult", owner=owner, above=0)
    # the one-cycles' shapes, checked before anything is frozen or compiled
    learning_rates.one_cycle_shape(pct_start, div, final_div, owner=owner)
    learning_rates.one_cycle_shape(head_pct_start, head_div, final_div, owner=owner,
                                   prefix="head_")
    if finder is not None and {"batch_size", "verbose"} & set(finder):
        raise errors.ArgumentError(
            "finder= takes find_learning_rate's other arguments; batch_size and verbose "
            "come from fine_tune's own, received "
            f"{sorted({'batch_size', 'verbose'} & set(finder))}.")
    if batch_size is not None:
        batch_size = _checks.whole_number(batch_size, "batch_size", owner=owner, minimum=1)
    if "validation_split" in fit_kwargs:
        raise errors.ArgumentError(
            "fine_tune does not take validation_split: the one-cycles are sized on the "
            "training data's steps per epoch. Split the data yourself and pass "
            "validation=.")
    _data.check(train, owner)
    if sweep_phase2 and not _data.is_arrays(train) and iter(train) is train:
        raise errors.ArgumentError(
            "fine_tune(sweep_phase2=True) needs data it can read again: the second sweep "
            "runs inside fit, whose own pass over a one-shot iterator it would take batches "
            f"from; received {type(train).__name__}. Pass a tf.data.Dataset, a "
            "keras.utils.PyDataset, a list of batches or arrays.")
    if _data.is_arrays(train):
        batch_size = batch_size or 32
        fit_kwargs["batch_size"] = batch_size
    steps = _data.steps_per_epoch(train, batch_size, steps_per_epoch, owner)
    if steps_per_epoch is not None:
        fit_kwargs["steps_per_epoch"] = steps

    selected = freezing.select_layers(model, freeze)
    groups = layer_groups.layer_groups(model, freeze) if groups is None else list(groups)
    multipliers = [lr_mult ** (-(len(groups) - i) / len(groups)) for i in range(len(groups))]
    opt = (optimizers.discriminative_optimizer(model, groups, 1e-3, multipliers=multipliers,
                                               optimizer=optimizer)
           if groups else optimizers.fresh_optimizer(optimizer, 1e-3))
    # The selection itself is frozen (a nested model's own weights with it);
    # BatchNormalization trains in both phases at any depth of it if asked,
    # also where it came frozen (`kt.freeze(...)` or `base.trainable = False`)
    policy_kwargs = dict(train_batchnorm=train_batchnorm, head_train_batchnorm=train_batchnorm,
                         verbose=verbose)
    if sweep_phase2 and 0 < freeze_epochs < epochs:
        policy = _SweptTwoPhase(selected, freeze_epochs, **policy_kwargs)
    else:
        policy = schedules.TwoPhaseSchedule(selected, freeze_epochs, **policy_kwargs)
    # The finder trains what the first epoch will train.
    policy.apply(model, policy.phase_of(0))
    model.compile(optimizer=opt, loss=loss, metrics=list(metrics) if metrics else None)
    curve = None
    if base_lr is None:
        curve = lr_finder.find_learning_rate(model, train, batch_size=batch_size or 32,
                                             verbose=verbose, **(finder or {}))
        base_lr = curve.suggestion / (head_lr_mult if freeze_epochs else 1.0)
    policy.head_lr = OneCycle(head_lr_mult * base_lr, max(freeze_epochs * steps, 1),
                              pct_start=head_pct_start,
                              div=head_div, final_div=final_div)
    def finetune_cycle(peak):
        return OneCycle(peak, max((epochs - freeze_epochs) * steps, 1),
                        pct_start=pct_start, div=div, final_div=final_div)

    policy.finetune_lr = finetune_cycle(base_lr)
    if isinstance(policy, _SweptTwoPhase):
        second = {k: v for k, v in (finder or {}).items() if k != "plot_to"}
        policy.sweep_with(train, cycle=finetune_cycle, records=_sweep_records(callbacks),
                          batch_size=batch_size or 32, verbose=verbose, **second)
    x, y, sample_weight = _data.fit_arguments(train, owner)
    history = model.fit(x, y, sample_weight=sample_weight, validation_data=validation,
                        epochs=epochs, callbacks=[policy, *(callbacks or [])],
                        verbose=verbose, **fit_kwargs)
    history.base_lr = float(base_lr)
    history.learning_rate_curve = curve
    reached = any(phase == 2 for _, phase in policy.history)
    peak = policy.peak if isinstance(policy, _SweptTwoPhase) else base_lr
    history.finetune_lr = float(peak) if reached else None
    history.phase2_learning_rate_curve = getattr(policy, "curve", None)
    return history


class _SweptTwoPhase(schedules.TwoPhaseSchedule):
    """`TwoPhaseSchedule` whose phase-2 one-cycle peaks where a sweep says.

    When phase 2 begins (its trainable flags set, before its rate is), the
    finder sweeps what phase 2 trains, on the model as phase 1 left it, and
    phase 2's one-cycle is built on its suggestion. The rate is written to
    `records` (one per BackupAndRestore) at once, so that a run resumed inside
    phase 2 uses it again: the state the sweep saw is gone by then. It reads
    the last one: Keras restores every BackupAndRestore in turn, and the last
    sets the epoch the run resumes at.

    Attributes:
        curve: the sweep's `LearningRateCurve` (None until it runs, and in a
            run that began inside phase 2).
        peak: phase 2's peak rate (None before phase 2).
    """

    RECORD = "keras_transfer_phase2_sweep.json"

    def sweep_with(self, train, *, cycle, records, **finder):
        self._train, self._cycle, self._records, self._finder = train, cycle, records, finder
        self.curve = self.peak = None
        self._epoch = None

    def on_train_begin(self, logs=None):
        self._first_epoch = None
        super().on_train_begin(logs)

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch  # for `entered`'s error message
        if self._first_epoch is None:
            self._first_epoch = epoch
        super().on_epoch_begin(epoch, logs)

    def entered(self, model, phase, resumed):
        super().entered(model, phase, resumed)
        if phase != 2:
            return
        # Not `resumed`: that counts steps into the phase, 0 when they are unknown.
        # A fit that begins at the switch epoch with a record resumes a fit stopped
        # inside it, after the sweep (a `save_freq=<int>` backup restores the epoch
        # it was taken in, from its first batch): its rate is the run's. A fit that
        # trained phase 1 itself sweeps what it trained, whatever a folder holds.
        if self._epoch > self.switch_epoch or (self._first_epoch == self.switch_epoch
                                               and self._recorded()):
            self.peak = self._read()
        else:
            self.curve = lr_finder.find_learning_rate(model, self._train, **self._finder)
            self.peak = float(self.curve.suggestion)
            for record in self._records:
                _files.write_record({"phase2_peak": self.peak, "switch_epoch": self.switch_epoch},
                                    record)
        self.finetune_lr = self._cycle(self.peak)

    def _recorded(self):
        return bool(self._records) and _files.record_exists(self._records[-1])

    def _read(self):
        what_to_do = ("Resume with the BackupAndRestore of the interrupted run, or pass "
                      "sweep_phase2=False and, as base_lr, the rate its sweep suggested "
                      "(printed with verbose=1).")
        record = self._records[-1] if self._records else None
        if record is None or not _files.record_exists(record):
            where = ("no BackupAndRestore among the callbacks" if record is None
                     else f"no record at {record}")
            raise errors.ArgumentError(
                f"fine_tune(sweep_phase2=True): this fit begins inside phase 2 (epoch "
                f"{self._epoch + 1}), whose peak rate came from a sweep run when phase 2 "
                f"began, in an earlier fit; {where}. {what_to_do}")
        saved = _files.read_record(record)
        if saved.get("switch_epoch") != self.switch_epoch:
            raise errors.ArgumentError(
                f"fine_tune(sweep_phase2=True): {record} records a phase 2 that began at "
                f"epoch index {saved.get('switch_epoch')!r}, expected {self.switch_epoch} "
                f"(freeze_epochs). {what_to_do}")
        return float(saved["phase2_peak"])


def _sweep_records(callbacks):
    """Where `_SweptTwoPhase` keeps its rate: a file in each BackupAndRestore's folder."""
    return [os.path.join(callback.backup_dir, _SweptTwoPhase.RECORD)
            for callback in callbacks or []
            if isinstance(callback, keras.callbacks.BackupAndRestore)]


def default_options():
    """`fine_tune`'s default numbers and switches, by argument name (for records)."""
    return {name: p.default for name, p in inspect.signature(fine_tune).parameters.items()
            if isinstance(p.default, (bool, int, float)) and name != "verbose"}
