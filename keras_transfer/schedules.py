"""The two-phase fine-tuning schedule: a callback for `model.fit`, and one call.

Phase 1 trains the new head with the base frozen at a higher learning rate;
phase 2 unfreezes the base and trains everything at a lower one.

In Keras 3, setting `layer.trainable = True` in a callback during `fit` trains
nothing new: the train function was traced with the old trainable set, and a
forced new train function then fails because the optimizer "can only be called
for the variables it was originally built with". `TwoPhaseSchedule` handles
both: at train begin it makes sure the optimizer holds slots for every variable
that will train in either phase (building, or rebuilding it with its state
kept, when needed), and at the switch it unfreezes and asks Keras for a new
train function. The optimizer's variable set therefore never changes during the
run, which also keeps its checkpoints (e.g. `BackupAndRestore`) loadable.

Adam-like optimizers keep one global step count: the base's moment estimates
start at zero at the switch while the bias correction is that of the step
count reached, so the base's first phase-2 steps are up to a few times larger
than `finetune_lr` suggests (it settles within a few hundred steps). Use
`fit_two_phase`, which starts phase 2 with a fresh optimizer, if that matters.
"""

import keras

from keras_transfer import _layers
from keras_transfer import freezing


@keras.saving.register_keras_serializable(package="keras_transfer")
class PhaseLearningRate(keras.optimizers.schedules.LearningRateSchedule):
    """A phase's learning rate: a constant, or a schedule restarted at a step.

    `TwoPhaseSchedule` installs it so that a phase's schedule counts steps from
    the start of its phase, not from the start of training.

    Args:
        learning_rate: a float or a `LearningRateSchedule`.
        start_step: the optimizer step at which the phase began.
    """

    def __init__(self, learning_rate, start_step=0):
        self.learning_rate = learning_rate
        self.start_step = int(start_step)

    def __call__(self, step):
        if isinstance(self.learning_rate, keras.optimizers.schedules.LearningRateSchedule):
            step = keras.ops.maximum(step - self.start_step, 0)
            return self.learning_rate(step)
        return keras.ops.convert_to_tensor(self.learning_rate, "float32")

    def get_config(self):
        lr = self.learning_rate
        if isinstance(lr, keras.optimizers.schedules.LearningRateSchedule):
            lr = keras.saving.serialize_keras_object(lr)
        return {"learning_rate": lr, "start_step": self.start_step}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        if isinstance(config["learning_rate"], dict):
            config["learning_rate"] = keras.saving.deserialize_keras_object(
                config["learning_rate"])
        return cls(**config)


class TwoPhaseSchedule(keras.callbacks.Callback):
    """Trains the head with the base frozen, then fine-tunes everything.

    Drop it into any `model.fit`. The phase of an epoch depends only on the
    epoch number (phase 1 before `switch_epoch`, phase 2 from it), so `fit`
    with `initial_epoch`, several `fit` calls, and a resumed run all land in
    the right phase. Each epoch's `logs` gain `phase` (1 or 2) and `lr`.

    Args:
        freeze: what to freeze in phase 1: an int (the first N top-level
            layers), a list of layers or layer names, or a name pattern (see
            `keras_transfer.select_layers`).
        switch_epoch: the first epoch (0-based) of phase 2.
        head_lr: phase-1 learning rate: a float or a
            `keras.optimizers.schedules.LearningRateSchedule` (its steps count
            from the start of the phase).
        finetune_lr: phase-2 learning rate, likewise.
        unfreeze: what to unfreeze at the switch; defaults to `freeze`.
        train_batchnorm: also train BatchNormalization layers in phase 2
            (default False: they stay in inference mode, as the Keras
            fine-tuning guide advises).
        verbose: 1 prints a line when a phase begins.

    Attributes:
        phase: the current phase (None before training).
        history: a list of `(epoch, phase)` for each phase entered.

    Example:

    ```python
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    model.fit(x, y, epochs=10, callbacks=[keras_transfer.TwoPhaseSchedule(
        freeze=12, switch_epoch=5, head_lr=1e-3, finetune_lr=1e-4)])
    ```
    """

    def __init__(self, freeze, switch_epoch, head_lr=1e-3, finetune_lr=1e-4, *,
                 unfreeze=None, train_batchnorm=False, verbose=1):
        super().__init__()
        if not isinstance(switch_epoch, int) or switch_epoch < 0:
            raise ValueError(
                f"switch_epoch must be an int >= 0, received {switch_epoch!r}.")
        self.freeze = freeze
        self.unfreeze = freeze if unfreeze is None else unfreeze
        self.switch_epoch = switch_epoch
        self.head_lr = head_lr
        self.finetune_lr = finetune_lr
        self.train_batchnorm = train_batchnorm
        self.verbose = verbose
        self.phase = None
        self.history = []

    def phase_of(self, epoch):
        """Returns the phase (1 or 2) that `epoch` belongs to."""
        return 1 if epoch < self.switch_epoch else 2

    def on_train_begin(self, logs=None):
        self.phase = None
        if self.model.optimizer is None:
            raise ValueError(
                "TwoPhaseSchedule needs a compiled model: call "
                "model.compile(optimizer=...) before fit.")
        self._cover_all_phases()

    def on_epoch_begin(self, epoch, logs=None):
        phase = self.phase_of(epoch)
        if phase != self.phase:
            self._enter(phase, epoch)

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["phase"] = self.phase
            logs["lr"] = current_learning_rate(self.model.optimizer)

    def _enter(self, phase, epoch):
        model = self.model
        if phase == 1:
            freezing.freeze(model, self.freeze)
            lr = self.head_lr
        else:
            freezing.unfreeze(model, self.unfreeze,
                              train_batchnorm=self.train_batchnorm)
            lr = self.finetune_lr
        set_learning_rate(model.optimizer, lr)
        # The train function was traced with the old trainable set; Keras
        # builds a new one on request. The optimizer already holds state for
        # every variable of both phases (see `_cover_all_phases`).
        model.make_train_function(force=True)
        self.phase = phase
        self.history.append((epoch, phase))
        if self.verbose:
            count = sum(int(v.numpy().size) for v in model.trainable_weights)
            print(f"TwoPhaseSchedule: epoch {epoch + 1} begins phase {phase}: "
                  f"{count:,} trainable parameters, lr "
                  f"{current_learning_rate(model.optimizer):.3g}")

    def _cover_all_phases(self):
        """Ensures the optimizer is built over every variable of both phases."""
        model = self.model
        restore = _layers.snapshot_trainable(model)
        try:
            now = list(model.trainable_variables)
            freezing.unfreeze(model, self.unfreeze,
                              train_batchnorm=self.train_batchnorm)
            later = list(model.trainable_variables)
        finally:
            restore()
        needed = list({id(v): v for v in now + later}.values())
        model.optimizer = ensure_optimizer_covers(model, model.optimizer, needed)


def ensure_optimizer_covers(model, optimizer, variables):
    """Returns an optimizer built over `variables`, keeping `optimizer`'s state.

    An unbuilt optimizer is built in place. A built one that lacks some of the
    variables is replaced by a fresh instance of the same class and config,
    built over `variables`, with every state variable it shares with the old
    one (iteration count, learning rate, slots of known variables) copied.
    """
    strategy = getattr(model, "distribute_strategy", None)
    scope = strategy.scope() if strategy is not None else _null_scope()
    with scope:
        if not optimizer.built:
            optimizer.build(variables)
            return optimizer
        known = optimizer._trainable_variables_indices  # noqa: SLF001
        if all(optimizer._var_key(v) in known for v in variables):  # noqa: SLF001
            return optimizer
        fresh = optimizer.__class__.from_config(optimizer.get_config())
        fresh.build(variables)
        old = {v.path: v for v in optimizer.variables}
        for v in fresh.variables:
            source = old.get(v.path)
            if source is not None and tuple(source.shape) == tuple(v.shape):
                v.assign(source)
        return fresh


class _null_scope:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def set_learning_rate(optimizer, learning_rate):
    """Sets an optimizer's learning rate to a float or a schedule.

    A float is assigned to the optimizer's learning-rate variable when it has
    one. A schedule, or a float for an optimizer that holds a schedule, is
    installed as a `PhaseLearningRate` that counts steps from now.
    """
    schedule_type = keras.optimizers.schedules.LearningRateSchedule
    current = optimizer._learning_rate  # noqa: SLF001
    if not isinstance(learning_rate, schedule_type) and not isinstance(current, schedule_type):
        optimizer.learning_rate = float(learning_rate)
        return
    start = int(keras.ops.convert_to_numpy(optimizer.iterations))
    optimizer.learning_rate = PhaseLearningRate(learning_rate, start)


def current_learning_rate(optimizer):
    """The optimizer's learning rate now, as a Python float."""
    return float(keras.ops.convert_to_numpy(optimizer.learning_rate))


def fit_two_phase(model, train, *, validation=None, freeze, head_epochs, epochs,
                  head_lr=1e-3, finetune_lr=1e-4, optimizer="adam",
                  loss="sparse_categorical_crossentropy", metrics=("accuracy",),
                  train_batchnorm=False, callbacks=None, verbose=1, **fit_kwargs):
    """The two-phase recipe in one call: compile, fit, unfreeze, recompile, fit.

    Phase 1 freezes `freeze` and trains for `head_epochs` at `head_lr`; phase 2
    unfreezes it (BatchNormalization kept frozen unless `train_batchnorm`),
    compiles again with a fresh optimizer at `finetune_lr` and trains from
    epoch `head_epochs` to `epochs`.

    Args:
        model: the target `keras.Model`.
        train: training data as `fit` takes it (a `tf.data.Dataset`, or a tuple
            `(x, y)`).
        validation: optional validation data for `fit`.
        freeze: what phase 1 freezes (see `TwoPhaseSchedule`).
        head_epochs: number of phase-1 epochs.
        epochs: the total number of epochs (phase 2 runs the rest).
        head_lr, finetune_lr: the phases' learning rates (floats or schedules).
        optimizer: an optimizer name or instance; each phase gets a fresh
            instance with the same config.
        loss, metrics: as for `model.compile`.
        train_batchnorm: train BatchNormalization layers in phase 2.
        callbacks: callbacks for both phases.
        verbose: passed to `fit`.
        **fit_kwargs: other `fit` arguments (`batch_size`, ...).

    Returns:
        A `keras.callbacks.History` covering both phases, its `history` with a
        `phase` column (1 or 2 per epoch) and an `lr` column.

    Example:

    ```python
    history = keras_transfer.fit_two_phase(
        target, (x, y), freeze=12, head_epochs=5, epochs=10,
        head_lr=1e-3, finetune_lr=1e-4)
    ```
    """
    if not 0 <= head_epochs <= epochs:
        raise ValueError(
            f"Expected 0 <= head_epochs <= epochs, received "
            f"head_epochs={head_epochs}, epochs={epochs}.")
    if isinstance(train, tuple):
        x, y = train
    else:
        x, y = train, None
    merged = keras.callbacks.History()
    merged.set_model(model)
    merged.on_train_begin()  # sets up `epoch` and `history`
    phases = [(1, 0, head_epochs, head_lr), (2, head_epochs, epochs, finetune_lr)]
    for phase, start, stop, lr in phases:
        if start == stop:
            continue
        if phase == 1:
            freezing.freeze(model, freeze)
        else:
            freezing.unfreeze(model, freeze, train_batchnorm=train_batchnorm)
        model.compile(optimizer=fresh_optimizer(optimizer, lr), loss=loss,
                      metrics=list(metrics) if metrics else None)
        history = model.fit(x, y, validation_data=validation, epochs=stop,
                            initial_epoch=start, callbacks=callbacks,
                            verbose=verbose, **fit_kwargs)
        for key, values in history.history.items():
            merged.history.setdefault(key, []).extend(values)
        merged.history.setdefault("phase", []).extend([phase] * len(history.epoch))
        merged.history.setdefault("lr", []).extend(
            [current_learning_rate(model.optimizer)] * len(history.epoch))
        merged.epoch.extend(history.epoch)
    return merged


def fresh_optimizer(optimizer, learning_rate):
    """A new optimizer of `optimizer`'s kind and config at `learning_rate`."""
    base = keras.optimizers.get(optimizer)
    config = base.get_config()
    config["learning_rate"] = learning_rate
    return base.__class__.from_config(config)
