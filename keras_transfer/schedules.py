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

import contextlib

import keras

from keras_transfer import _layers
from keras_transfer import freezing


_Schedule = keras.optimizers.schedules.LearningRateSchedule


class WrappedLearningRate(_Schedule):
    """Base for schedules built around a learning rate: a float or a schedule.

    Subclasses set `self.learning_rate` and return `self.config(**fields)` from
    `get_config`; the wrapped schedule is serialized and restored here.
    """

    def config(self, **fields):
        lr = self.learning_rate
        if isinstance(lr, _Schedule):
            lr = keras.saving.serialize_keras_object(lr)
        return {"learning_rate": lr, **fields}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        if isinstance(config["learning_rate"], dict):
            config["learning_rate"] = keras.saving.deserialize_keras_object(
                config["learning_rate"])
        return cls(**config)


@keras.saving.register_keras_serializable(package="keras_transfer")
class PhaseLearningRate(WrappedLearningRate):
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
        if isinstance(self.learning_rate, _Schedule):
            step = keras.ops.maximum(step - self.start_step, 0)
            return self.learning_rate(step)
        return keras.ops.convert_to_tensor(self.learning_rate, "float32")

    def get_config(self):
        return self.config(start_step=self.start_step)


class FinetuningSchedule(keras.callbacks.Callback):
    """The mechanism behind the fine-tuning callbacks: trainable states inside `fit`.

    A subclass is a policy: it names the *state* of each epoch (`state_of`),
    every state a run may enter (`states`), how to set the model's trainable
    flags for a state (`apply`) and, optionally, its learning rate
    (`learning_rate_of`). This class does the rest: at train begin it makes the
    optimizer hold state for every variable of every state (so the optimizer's
    variables never change during the run, and checkpoints stay loadable), and
    when an epoch's state differs from the current one it applies it, sets the
    learning rate and asks Keras for a new train function. The state depends
    only on the epoch number, so `initial_epoch`, repeated `fit` calls and
    resumed runs land in the right state.

    Attributes:
        state: the current state (None before training).
        history: a list of `(epoch, state)` for each state entered.
    """

    log_name = "state"

    def __init__(self, verbose=1):
        super().__init__()
        self.verbose = verbose
        self.state = None
        self.history = []

    # -- policy -------------------------------------------------------------
    def state_of(self, epoch):
        """The state epoch `epoch` trains in."""
        raise NotImplementedError

    def states(self):
        """Every state a run may enter."""
        raise NotImplementedError

    def apply(self, model, state):
        """Sets the trainable flags of `model` for `state`."""
        raise NotImplementedError

    def learning_rate_of(self, state):
        """The learning rate of `state` (float or schedule), or None to keep it."""
        return None

    def prepare(self, model):
        """Called once at train begin, before the optimizer is checked."""

    # -- mechanism ----------------------------------------------------------
    def on_train_begin(self, logs=None):
        self.state = None
        if self.model.optimizer is None:
            raise ValueError(
                f"{type(self).__name__} needs a compiled model: call "
                "model.compile(optimizer=...) before fit.")
        self.prepare(self.model)
        self._cover_all_states()

    def on_epoch_begin(self, epoch, logs=None):
        state = self.state_of(epoch)
        if state != self.state:
            self._enter(state, epoch)

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs[self.log_name] = self.state
            logs["lr"] = current_learning_rate(self.model.optimizer)

    def _enter(self, state, epoch):
        model = self.model
        self.apply(model, state)
        lr = self.learning_rate_of(state)
        if lr is not None:
            set_learning_rate(model.optimizer, lr)
        # The train function was traced with the old trainable set; Keras
        # builds a new one on request. The optimizer already holds state for
        # every variable of every state (see `_cover_all_states`).
        model.make_train_function(force=True)
        self.state = state
        self.history.append((epoch, state))
        if self.verbose:
            count = sum(int(v.numpy().size) for v in model.trainable_weights)
            print(f"{type(self).__name__}: epoch {epoch + 1} begins {self.log_name} "
                  f"{state}: {count:,} trainable parameters, lr "
                  f"{current_learning_rate(model.optimizer):.3g}")

    def _cover_all_states(self):
        """Ensures the optimizer is built over every variable of every state."""
        model = self.model
        restore = _layers.snapshot_trainable(model)
        needed = {id(v): v for v in model.trainable_variables}
        try:
            for state in self.states():
                self.apply(model, state)
                needed.update((id(v), v) for v in model.trainable_variables)
        finally:
            restore()
        model.optimizer = ensure_optimizer_covers(model, model.optimizer, list(needed.values()))


class TwoPhaseSchedule(FinetuningSchedule):
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
        lora_rank: if set, phase 2 trains low-rank adapters instead of whole
            layers: at train begin `enable_lora(lora_rank)` is called on the
            Dense, EinsumDense, Embedding and Conv layers of `unfreeze` (the
            adapters start as a zero update), and in phase 2 only their
            adapters train; their kernels and biases stay frozen.
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

    log_name = "phase"
    _LORA_TYPES = ("Dense", "EinsumDense", "Embedding", "Conv1D", "Conv2D", "Conv3D")

    def __init__(self, freeze, switch_epoch, head_lr=1e-3, finetune_lr=1e-4, *,
                 unfreeze=None, train_batchnorm=False, lora_rank=None, verbose=1):
        super().__init__(verbose=verbose)
        if not isinstance(switch_epoch, int) or switch_epoch < 0:
            raise ValueError(
                f"switch_epoch must be an int >= 0, received {switch_epoch!r}.")
        self.freeze = freeze
        self.unfreeze = freeze if unfreeze is None else unfreeze
        self.switch_epoch = switch_epoch
        self.head_lr = head_lr
        self.finetune_lr = finetune_lr
        self.train_batchnorm = train_batchnorm
        self.lora_rank = lora_rank
        self._lora_layers = []

    @property
    def phase(self):
        return self.state

    def phase_of(self, epoch):
        """Returns the phase (1 or 2) that `epoch` belongs to."""
        return 1 if epoch < self.switch_epoch else 2

    state_of = phase_of

    def states(self):
        return (1, 2)

    def learning_rate_of(self, phase):
        return self.head_lr if phase == 1 else self.finetune_lr

    def prepare(self, model):
        if self.lora_rank is None:
            return
        selected = freezing.select_layers(model, self.unfreeze)
        inner = [l for layer in selected if _layers.is_container(layer)
                 for l, _ in _layers.walk(layer)]
        self._lora_layers = [l for l in selected + inner
                             if type(l).__name__ in self._LORA_TYPES]
        for layer in self._lora_layers:
            if not getattr(layer, "lora_enabled", False):
                layer.enable_lora(self.lora_rank)

    def apply(self, model, phase):
        if phase == 1:
            freezing.freeze(model, self.freeze)
            return
        freezing.unfreeze(model, self.unfreeze, train_batchnorm=self.train_batchnorm)
        for layer in self._lora_layers:
            # `trainable = True` turns the LoRA layer's kernel trainable again,
            # silently undoing LoRA: keep only the adapters trainable.
            adapters = {id(layer.lora_kernel_a), id(layer.lora_kernel_b)}
            for variable in layer.trainable_weights:
                if id(variable) not in adapters:
                    variable.trainable = False


class GradualUnfreezing(FinetuningSchedule):
    """Unfreezes one block of layers per epoch, from the top (ULMFiT).

    Before `start_epoch` every block is frozen (the head trains alone); at
    `start_epoch` the last block is unfrozen, one epoch later the one before
    it, and so on until all are trainable. Each epoch's `logs` gain
    `unfrozen_blocks` and `lr`.

    Args:
        blocks: the base's layer blocks, bottom to top: each a list of layers
            or layer names, a name pattern, or one layer (a nested model, say).
        start_epoch: the epoch at which the top block is unfrozen.
        learning_rates: optional learning rate per number of unfrozen blocks
            (a list of `len(blocks) + 1` floats or schedules); None keeps the
            optimizer's.
        train_batchnorm: also train BatchNormalization layers of unfrozen
            blocks (default False, as in `unfreeze`).
        verbose: 1 prints a line when a block is unfrozen.

    Example:

    ```python
    model.fit(x, y, epochs=6, callbacks=[keras_transfer.GradualUnfreezing(
        blocks=[["Conv1", "Bn1"], ["Conv2", "Bn2"], ["Conv3", "Bn3"]], start_epoch=2)])
    ```
    """

    log_name = "unfrozen_blocks"

    def __init__(self, blocks, start_epoch=1, *, learning_rates=None,
                 train_batchnorm=False, verbose=1):
        super().__init__(verbose=verbose)
        self.blocks = [[b] if isinstance(b, keras.layers.Layer) else b for b in blocks]
        if not self.blocks:
            raise ValueError("blocks must name at least one block of layers.")
        if learning_rates is not None and len(learning_rates) != len(self.blocks) + 1:
            raise ValueError(
                f"learning_rates needs {len(self.blocks) + 1} entries (0 to "
                f"{len(self.blocks)} unfrozen blocks), received {len(learning_rates)}.")
        self.start_epoch = start_epoch
        self.learning_rates = learning_rates
        self.train_batchnorm = train_batchnorm

    def state_of(self, epoch):
        return min(max(epoch - self.start_epoch + 1, 0), len(self.blocks))

    def states(self):
        return range(len(self.blocks) + 1)

    def learning_rate_of(self, unfrozen):
        return None if self.learning_rates is None else self.learning_rates[unfrozen]

    def apply(self, model, unfrozen):
        for block in self.blocks:
            freezing.freeze(model, block)
        for block in self.blocks[len(self.blocks) - unfrozen:]:
            freezing.unfreeze(model, block, train_batchnorm=self.train_batchnorm)


def ensure_optimizer_covers(model, optimizer, variables):
    """Returns an optimizer built over `variables`, keeping `optimizer`'s state.

    An unbuilt optimizer is built in place. A built one that lacks some of the
    variables is replaced by a fresh instance of the same class and config,
    built over `variables`, with every state variable it shares with the old
    one (iteration count, learning rate, slots of known variables) copied.
    """
    strategy = getattr(model, "distribute_strategy", None)
    scope = strategy.scope() if strategy is not None else contextlib.nullcontext()
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


def set_learning_rate(optimizer, learning_rate):
    """Sets an optimizer's learning rate to a float or a schedule.

    A float is assigned to the optimizer's learning-rate variable when it has
    one. A schedule, or a float for an optimizer that holds a schedule, is
    installed as a `PhaseLearningRate` that counts steps from now.
    """
    from keras_transfer.optimizers import DiscriminativeOptimizer

    if isinstance(optimizer, DiscriminativeOptimizer):
        optimizer.learning_rate = learning_rate  # sets every group, in ratio
        return
    current = optimizer._learning_rate  # noqa: SLF001
    if not isinstance(learning_rate, _Schedule) and not isinstance(current, _Schedule):
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
                  train_batchnorm=False, cache_features=False, lora_rank=None,
                  callbacks=None, verbose=1, **fit_kwargs):
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
        cache_features: run phase 1 on cached base outputs (`fit_head_cached`):
            the same head, much faster; needs `freeze=N` (the first N layers
            form the base) and a base with nothing random in it.
        lora_rank: phase 2 trains LoRA adapters of this rank instead of whole
            layers (as `TwoPhaseSchedule(lora_rank=...)`).
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
    # The same freezing policy as the callback, applied between two compiles.
    policy = TwoPhaseSchedule(freeze, head_epochs, unfreeze=None, train_batchnorm=train_batchnorm,
                              lora_rank=lora_rank, verbose=0)
    policy.prepare(model)
    phases = [(1, 0, head_epochs, head_lr), (2, head_epochs, epochs, finetune_lr)]
    for phase, start, stop, lr in phases:
        if start == stop:
            continue
        if phase == 1 and cache_features:
            from keras_transfer import caching

            if isinstance(freeze, bool) or not isinstance(freeze, int):
                raise ValueError("cache_features=True needs freeze=N (the base's first N layers).")
            history = caching.fit_head_cached(
                model, train, cut=freeze, epochs=stop, validation=validation,
                optimizer=optimizer, learning_rate=lr, loss=loss, metrics=metrics,
                batch_size=fit_kwargs.get("batch_size") or 32,
                shuffle=fit_kwargs.get("shuffle", True), callbacks=callbacks, verbose=verbose)
        else:
            policy.apply(model, phase)
            model.compile(optimizer=fresh_optimizer(optimizer, lr), loss=loss,
                          metrics=list(metrics) if metrics else None)
            history = model.fit(x, y, validation_data=validation, epochs=stop,
                                initial_epoch=start, callbacks=callbacks,
                                verbose=verbose, **fit_kwargs)
        for key, values in history.history.items():
            merged.history.setdefault(key, []).extend(values)
        merged.history.setdefault("phase", []).extend([phase] * len(history.epoch))
        merged.history.setdefault("lr", []).extend(
            [current_learning_rate(history.model.optimizer)] * len(history.epoch))
        merged.epoch.extend(history.epoch)
    return merged


def fresh_optimizer(optimizer, learning_rate, name=None):
    """A new optimizer of `optimizer`'s kind and config at `learning_rate`."""
    from keras_transfer.optimizers import DiscriminativeOptimizer

    base = keras.optimizers.get(optimizer)
    config = base.get_config()
    if isinstance(base, DiscriminativeOptimizer):
        fresh = DiscriminativeOptimizer.from_config(config)
        fresh.learning_rate = learning_rate  # every group, in ratio
        return fresh
    config["learning_rate"] = learning_rate
    if name is not None:
        config["name"] = name
    return base.__class__.from_config(config)
