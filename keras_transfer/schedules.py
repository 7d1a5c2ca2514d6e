"""Fine-tuning callbacks: what trains changes inside one `model.fit`.

`FinetuningSchedule` is the mechanism (Lightning's `BaseFinetuning`): at train
begin it makes the optimizer hold state for every variable that will train in
any state of the run, and when an epoch's state differs from the current one
it sets the trainable flags, the learning rate and asks Keras for a new train
function. `TwoPhaseSchedule` (head first, then everything) and
`GradualUnfreezing` (ULMFiT) are policies on top of it.

In Keras 3, setting `layer.trainable = True` in a callback trains nothing new:
the train function was traced with the old trainable set, and a forced new
train function then fails because the optimizer "can only be called for the
variables it was originally built with" (and on JAX because
`stateless_apply` wants exactly those variables). How this module gets around
both, on TensorFlow, JAX and PyTorch, and why that design, is told in
`keras_transfer/_optimizer_state.py`: one optimizer layout for the whole run,
updating any subset. Checkpoints (`BackupAndRestore`) therefore load in any
phase, and the state of an epoch depends only on its number, so resumed runs,
`initial_epoch` and repeated `fit` calls land in the right state.

Adam-like optimizers keep one global step count: the base's moment estimates
start at zero at the switch while the bias correction is that of the step
count reached, so the base's first phase-2 steps are up to a few times larger
than `finetune_lr` suggests (it settles within a few hundred steps). A
`DiscriminativeOptimizer` (a step count per group) or `fit_two_phase` (a
fresh optimizer for phase 2) avoid it.
"""

import math
import warnings

import keras
import numpy as np

from keras_transfer import _checks
from keras_transfer import _layers
from keras_transfer import _optimizer_state
from keras_transfer import errors
from keras_transfer import freezing
from keras_transfer import groups as layer_groups
from keras_transfer import optimizers
from keras_transfer.learning_rates import Schedule


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
        """Called before training, before the optimizer is checked; may repeat."""

    def entered(self, model, state, resumed):
        """Called after `apply` when `state` begins (`resumed`: mid-state)."""

    # -- mechanism ----------------------------------------------------------
    @property
    def _who(self):
        """The name messages give: a private subclass speaks as its public class."""
        return next(c.__name__ for c in type(self).__mro__ if not c.__name__.startswith("_"))

    def set_model(self, model):
        super().set_model(model)
        # `fit` gives every callback the model before any `on_train_begin`:
        # the optimizer's layout is fixed here, so a BackupAndRestore listed
        # before this callback loads its checkpoint into the final layout.
        if getattr(model, "optimizer", None) is not None:
            self._prepare_optimizer()

    def on_train_begin(self, logs=None):
        self.state = None
        if getattr(self.model, "optimizer", None) is None:
            raise errors.ArgumentError(
                f"{self._who} needs a compiled model: call "
                "model.compile(optimizer=...) before fit.")
        self._prepare_optimizer()  # done already when `fit` set the model

    def _prepare_optimizer(self):
        model = self.model
        self.prepare(model)
        if any(isinstance(self.learning_rate_of(s), Schedule) for s in self.states()):
            # Fix the optimizer's variable layout before any checkpoint loads:
            # see `hold_schedules`.
            optimizers.hold_schedules(model.optimizer)
        model.optimizer = _optimizer_state.cover(model, model.optimizer, self._every_variable())

    def on_epoch_begin(self, epoch, logs=None):
        state = self.state_of(epoch)
        if state != self.state:
            self._enter(state, epoch)

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs[self.log_name] = self.state
            logs["lr"] = optimizers.current_learning_rate(self.model.optimizer)

    def _enter(self, state, epoch):
        model = self.model
        self.apply(model, state)
        steps_into = self._steps_into(state, epoch)
        self.entered(model, state, resumed=steps_into > 0)
        lr = self.learning_rate_of(state)
        if lr is not None:
            optimizers.set_learning_rate(model.optimizer, lr, steps_into_phase=steps_into)
        # The train function was traced with the old trainable set; Keras
        # builds a new one on request. The optimizer already holds state for
        # every variable of every state (see `on_train_begin`).
        model.make_train_function(force=True)
        if keras.backend.backend() == "jax":
            # JAX splits the model's state into trainable and non-trainable
            # lists, and under `keras.distribution` fixes their shardings when
            # a function is made: evaluation and prediction need new ones too.
            model.make_test_function(force=True)
            model.make_predict_function(force=True)
        self.state = state
        self.history.append((epoch, state))
        if self.verbose:
            count = sum(math.prod(v.shape) for v in model.trainable_weights)
            print(f"{self._who}: epoch {epoch + 1} begins {self.log_name} "
                  f"{state}: {count:,} trainable parameters, lr "
                  f"{optimizers.current_learning_rate(model.optimizer):.3g}")

    def _steps_into(self, state, epoch):
        """Optimizer steps the run has made in `state` before `epoch`.

        Non-zero when a run enters a state after its first epoch: a resumed
        run, `initial_epoch`, or a second `fit` call. Every epoch of a run
        has `params["steps"]` steps; when Keras does not know that number, the
        state's learning-rate schedule starts again from its first step.
        """
        first = next(e for e in range(epoch + 1) if self.state_of(e) == state)
        if first == epoch:
            return 0
        steps = (self.params or {}).get("steps")
        if not steps:
            warnings.warn(
                f"{self._who}: epoch {epoch + 1} is inside {self.log_name} "
                f"{state}, which began at epoch {first + 1}, but the number of "
                "steps per epoch is unknown: its learning-rate schedule restarts "
                "here. Give the data a known length (or steps_per_epoch).", stacklevel=2)
            return 0
        return (epoch - first) * steps

    def _every_variable(self):
        """Every variable that trains in some state, flags left as they were."""
        model = self.model
        restore = _layers.snapshot_trainable(model)
        needed = {id(v): v for v in model.trainable_variables}
        try:
            for state in self.states():
                self.apply(model, state)
                needed.update((id(v), v) for v in model.trainable_variables)
        finally:
            restore()
        return list(needed.values())


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
        head_train_batchnorm: also train the BatchNormalization layers
            inside `freeze` in phase 1, at any depth (fastai's `train_bn`;
            see `keras_transfer.freeze`). `fine_tune(train_batchnorm=True)`,
            its default, sets both.
        lora_rank: if set, phase 2 trains low-rank adapters instead of whole
            layers: at train begin `enable_lora(lora_rank)` is called on every
            layer of `unfreeze`, at any depth, that has Keras' `enable_lora`
            (Dense, EinsumDense, Embedding, the convolutions; the adapters
            start as a zero update), and in phase 2 only those adapters train
            (with the head). Everything else in `unfreeze` stays frozen, as
            PEFT's LoRA default has it: the adapted layers' biases (Keras'
            own `enable_lora` leaves them trainable; frozen here so that the
            adapters are the whole change to the base, and merge into it
            exactly), the normalization layers (BatchNormalization trains if
            `train_batchnorm`), and the layers Keras gives no adapters
            (KerasHub's `PositionEmbedding`, depthwise and transposed
            convolutions), which `lora_summary` lists. Adapters belong to
            their layer's group of a `DiscriminativeOptimizer`.
        verbose: 1 prints a line when a phase begins, and with LoRA what
            gets adapters and what stays frozen.

    Attributes:
        phase: the current phase (None before training).
        history: a list of `(epoch, phase)` for each phase entered.
        lora_summary: with `lora_rank`, `{"adapted": [...], "frozen": [...]}`:
            the names of the layers given adapters, and of the layers with
            weights of their own left frozen in phase 2.

    Example:

    ```python
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    history = model.fit(x, y, epochs=4, verbose=0, callbacks=[keras_transfer.TwoPhaseSchedule(
        freeze=12, switch_epoch=2, head_lr=1e-3, finetune_lr=1e-4, verbose=0)])
    history.history["phase"]   # [1, 1, 2, 2]
    ```
    """

    log_name = "phase"

    def __init__(self, freeze, switch_epoch, head_lr=1e-3, finetune_lr=1e-4, *,
                 unfreeze=None, train_batchnorm=False, head_train_batchnorm=False,
                 lora_rank=None, verbose=1):
        super().__init__(verbose=verbose)
        switch_epoch = _checks.whole_number(switch_epoch, "switch_epoch",
                                            owner="TwoPhaseSchedule", minimum=0)
        self.freeze = freeze
        self.unfreeze = freeze if unfreeze is None else unfreeze
        self.switch_epoch = switch_epoch
        self.head_lr = head_lr
        self.finetune_lr = finetune_lr
        self.train_batchnorm = train_batchnorm
        self.head_train_batchnorm = head_train_batchnorm
        self.lora_rank = lora_rank
        self._lora_layers = []
        self.lora_summary = None

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
        # at any depth: inside nested models and inside plain layers (a block)
        every = {id(l): l for layer in selected for l in _layers.with_sublayers(layer)}
        self._lora_layers = [l for l in every.values() if _layers.supports_lora(l)]
        for layer in self._lora_layers:
            if not getattr(layer, "lora_enabled", False):
                layer.enable_lora(self.lora_rank)
        adapted = {id(l) for l in self._lora_layers}
        first = self.lora_summary is None
        self.lora_summary = {
            "adapted": [l.name for l in self._lora_layers],
            "frozen": [l.name for l in every.values()
                       if id(l) not in adapted and _layers.own_variables(l)]}
        if self.verbose and first:
            frozen = self.lora_summary["frozen"]
            print(f"TwoPhaseSchedule: LoRA rank {self.lora_rank} on "
                  f"{len(self._lora_layers)} layers; frozen in phase 2 (no adapters, or "
                  f"normalization): {len(frozen)} layers {frozen[:8]}"
                  + (" ..." if len(frozen) > 8 else ""))

    def apply(self, model, phase):
        if phase == 1:
            freezing.freeze(model, self.freeze, train_batchnorm=self.head_train_batchnorm)
            return
        if self.lora_rank is None:
            freezing.unfreeze(model, self.unfreeze, train_batchnorm=self.train_batchnorm)
            return
        # LoRA: the selection stays frozen but for its adapters (see the
        # class docstring); BatchNormalization trains only if asked.
        freezing.freeze(model, self.unfreeze, train_batchnorm=self.train_batchnorm)
        for layer in self._lora_layers:
            freezing.unfreeze(model, layers=[layer])  # its flag, and its holders'
            adapters = {id(v) for v in _layers.lora_adapters(layer)}
            for variable in layer.weights:
                variable.trainable = id(variable) in adapters

    def entered(self, model, phase, resumed):
        if phase != 2 or not resumed:
            return
        # Keras saves a LoRA layer with the adapters merged into its kernel and
        # loads it back with both adapters at zero (`Dense.load_own_variables`),
        # where their gradients are zero too: a run resumed inside phase 2
        # would train nothing. Start the adapters again on the merged kernel,
        # as `enable_lora` does (A random, B zero: the model is unchanged).
        restarted = []
        for layer in self._lora_layers:
            a, b = _layers.lora_adapters(layer)
            if not np.any(keras.ops.convert_to_numpy(a)) and not np.any(keras.ops.convert_to_numpy(b)):
                a.assign(keras.initializers.HeUniform()(a.shape, a.dtype))
                restarted.append(layer.name)
        if restarted:
            warnings.warn(
                f"TwoPhaseSchedule: the LoRA adapters of {restarted} were restored merged "
                "into their kernels (Keras saves LoRA layers merged); they start again "
                "on the merged kernels, so this resumed run goes on training but does "
                "not repeat an uninterrupted one exactly.", stacklevel=2)


class GradualUnfreezing(FinetuningSchedule):
    """Unfreezes one block of layers per epoch, from the top (ULMFiT).

    Before `start_epoch` every block is frozen (the head trains alone); at
    `start_epoch` the last block is unfrozen, one epoch later the one before
    it, and so on until all are trainable. Each epoch's `logs` gain
    `unfrozen_blocks` and `lr`.

    Args:
        blocks: the base's layer blocks, bottom to top: each a list of layers
            or layer names, a name pattern, or one layer (a nested model, say).
            None: `keras_transfer.layer_groups(model, base)` at train begin
            (one block per transformer layer above the embeddings, or per
            CNN stage).
        start_epoch: the epoch at which the top block is unfrozen.
        learning_rates: optional learning rate per number of unfrozen blocks
            (a list of `len(blocks) + 1` floats or schedules); None keeps the
            optimizer's.
        train_batchnorm: also train BatchNormalization layers of unfrozen
            blocks (default False, as in `unfreeze`).
        base: with `blocks=None`, the base whose layer groups are the blocks
            (what `select_layers` takes; a nested model as `[backbone]`).
        verbose: 1 prints a line when a block is unfrozen.

    Example:

    ```python
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    history = model.fit(x, y, epochs=5, verbose=0, callbacks=[keras_transfer.GradualUnfreezing(
        blocks=[["Conv1", "Bn1"], ["Conv2", "Bn2"], ["Conv3", "Bn3"]], start_epoch=2,
        verbose=0)])
    history.history["unfrozen_blocks"]   # [0, 0, 1, 2, 3]
    ```
    """

    log_name = "unfrozen_blocks"

    def __init__(self, blocks=None, start_epoch=1, *, learning_rates=None,
                 train_batchnorm=False, base=None, verbose=1):
        super().__init__(verbose=verbose)
        if (blocks is None) == (base is None):
            raise errors.ArgumentError(
                "GradualUnfreezing: pass blocks= (the base's blocks, bottom to top) or "
                "base= (whose layer groups are the blocks), one of the two.")
        self.base = base
        self.blocks = None if blocks is None else self._checked(
            [[b] if isinstance(b, keras.layers.Layer) else b for b in blocks], learning_rates)
        start_epoch = _checks.whole_number(start_epoch, "start_epoch",
                                           owner="GradualUnfreezing", minimum=0)
        self.start_epoch = start_epoch
        self.learning_rates = learning_rates
        self.train_batchnorm = train_batchnorm

    @staticmethod
    def _checked(blocks, learning_rates):
        if not blocks:
            raise errors.ArgumentError("blocks must name at least one block of layers.")
        if learning_rates is not None and len(learning_rates) != len(blocks) + 1:
            raise errors.ArgumentError(
                f"learning_rates needs {len(blocks) + 1} entries (0 to "
                f"{len(blocks)} unfrozen blocks), received {len(learning_rates)}.")
        return blocks

    def prepare(self, model):
        if self.blocks is None:
            self.blocks = self._checked(layer_groups.layer_groups(model, self.base),
                                        self.learning_rates)

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
