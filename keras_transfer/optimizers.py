"""Optimizers for fine-tuning: per-group learning rates, and setting a phase's rate.

`DiscriminativeOptimizer` is Keras' own `keras.optimizers.MultiOptimizer`
(sub-optimizers chosen per variable by an `OptimizerMap`) with what
fine-tuning needs and `MultiOptimizer` lacks: a `learning_rate` that sets
every group's rate at once while keeping their ratios (so the fine-tuning
callbacks and Keras' LR callbacks work with it), and updates over a subset of
the variables it was built with (so a frozen group simply does not step).

Each group has its own sub-optimizer and so its own step count: a group that
starts training at the phase switch gets Adam's bias correction from its first
step, unlike a single optimizer whose global step count has run on.

`set_learning_rate`, `hold_schedules`, `current_learning_rate` and
`fresh_optimizer` work on any Keras optimizer, a `DiscriminativeOptimizer`
included.
"""

import re

import keras

from keras_transfer import errors
from keras_transfer import freezing
from keras_transfer.learning_rates import PhaseLearningRate
from keras_transfer.learning_rates import ScaledLearningRate
from keras_transfer.learning_rates import Schedule


@keras.saving.register_keras_serializable(package="keras_transfer")
class DiscriminativeOptimizer(keras.optimizers.MultiOptimizer):
    """A `MultiOptimizer` whose groups' learning rates move together.

    Args:
        optimizer_map: a `keras.optimizers.OptimizerMap` from variable paths
            (or path patterns) to sub-optimizers.
        multipliers: sub-optimizer name -> factor of the base learning rate.
        base_learning_rate: the base learning rate (float or schedule).
        loss_scale_factor, name: as for `MultiOptimizer`.

    Build one with `discriminative_optimizer`.
    """

    def __init__(self, optimizer_map, multipliers, base_learning_rate,
                 loss_scale_factor=None, name=None):
        super().__init__(optimizer_map, loss_scale_factor=loss_scale_factor, name=name)
        self.multipliers = {k: float(v) for k, v in multipliers.items()}
        self._base_learning_rate = base_learning_rate

    @property
    def learning_rate(self):
        """The base learning rate now: a group's rate divided by its factor."""
        opt = next((o for o in self.optimizers if o.name == "head"), self.optimizers[0])
        return current_learning_rate(opt) / self.multipliers.get(opt.name, 1.0)

    @learning_rate.setter
    def learning_rate(self, value):
        self.set_learning_rate(value)

    def set_learning_rate(self, value, *, steps_into_phase=0):
        """Sets every group's rate to its factor times `value` (float or schedule).

        Args:
            value: the base learning rate.
            steps_into_phase: for a schedule, how many steps of the phase
                have run already (see `keras_transfer.optimizers.set_learning_rate`).
        """
        self._base_learning_rate = value
        for opt in self.optimizers:
            factor = self.multipliers.get(opt.name, 1.0)
            scaled = (ScaledLearningRate(value, factor) if isinstance(value, Schedule)
                      else float(value) * factor)
            set_learning_rate(opt, scaled, steps_into_phase=steps_into_phase)

    def group_learning_rates(self):
        """Sub-optimizer name -> its current learning rate (float)."""
        return {opt.name: current_learning_rate(opt) for opt in self.optimizers}

    def apply(self, grads, trainable_variables=None):
        if trainable_variables is None or not self.built:
            return super().apply(grads, trainable_variables)
        # Unlike MultiOptimizer, accept any subset of the built variables: a
        # frozen group has no gradients and its sub-optimizer does not step.
        # Going around Keras: MultiOptimizer keeps its variable -> group map in
        # private attributes (pinned in tests/test_keras_gaps.py).
        trainable_variables = list(trainable_variables)
        self._check_variables_are_known(trainable_variables)
        per_opt = [[] for _ in self.optimizers]
        for grad, var in zip(grads, trainable_variables):
            per_opt[self._var_to_optimizer_idx[self._var_key(var)]].append((grad, var))
        for opt, pairs in zip(self.optimizers, per_opt):
            if pairs:
                sub_grads, sub_vars = zip(*pairs)
                opt.apply(list(sub_grads), list(sub_vars))
        self._iterations.assign_add(1)

    def get_config(self):
        # MultiOptimizer serializes its map key by key, so an optimizer shared
        # by many variables comes back as many optimizers. Store each group's
        # optimizer once, with the variable paths it trains.
        mapping = self._optimizer_map
        paths = {opt.name: [] for opt in self.optimizers}
        for path in mapping:
            paths[mapping[path].name].append(path)
        lr = self._base_learning_rate
        if isinstance(lr, Schedule):
            lr = keras.saving.serialize_keras_object(lr)
        return {
            "groups": {opt.name: {"optimizer": keras.saving.serialize_keras_object(opt),
                                  "paths": paths[opt.name]} for opt in self.optimizers},
            "default": mapping.default_optimizer.name,
            "multipliers": self.multipliers,
            "base_learning_rate": lr,
            "loss_scale_factor": self.loss_scale_factor,
            "name": self.name,
        }

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        groups = config.pop("groups")
        optimizers = {name: keras.saving.deserialize_keras_object(
            group["optimizer"], custom_objects=custom_objects) for name, group in groups.items()}
        mapping = keras.optimizers.OptimizerMap(
            default_optimizer=optimizers[config.pop("default")])
        for name, group in groups.items():
            for path in group["paths"]:
                mapping[path] = optimizers[name]
        if isinstance(config["base_learning_rate"], dict):
            config["base_learning_rate"] = keras.saving.deserialize_keras_object(
                config["base_learning_rate"], custom_objects=custom_objects)
        return cls(mapping, **config)


def discriminative_optimizer(model, groups, learning_rate, *, multipliers=None, decay=None,
                             optimizer="adam"):
    """One learning rate per layer group, as fastai's `slice` and ULMFiT's decay.

    Args:
        model: the `keras.Model` the optimizer will train.
        groups: layer groups, bottom to top; each what `select_layers` takes
            (an int, a list of layers or names, a name pattern, a nested
            model given as `[layer]`). Variables in no group (the head,
            typically) train at `learning_rate`. A group holds every variable
            of its layers, also those created later (LoRA adapters).
        learning_rate: the head's (base) learning rate, float or schedule.
        multipliers: factor of `learning_rate` for each group (the seed's new
            head at 10x the base: `groups=[base], multipliers=[0.1]`).
        decay: instead of `multipliers`, each group trains at `decay` times the
            group above it, the top group at `decay` times the head (ULMFiT:
            `decay=1/2.6`; timm's layer-wise decay).
        optimizer: an optimizer name or instance; each group gets a fresh
            instance of its class and config.

    Returns:
        A `DiscriminativeOptimizer` to pass to `model.compile`.

    Raises:
        ArgumentError: neither or both of `multipliers` / `decay`, or a length
            that does not match `groups`.
        LayerSelectionError: a group does not fit the model.

    Example:

    ```python
    opt = keras_transfer.discriminative_optimizer(
        model, groups=[["Conv1", "Bn1"], ["Conv2", "Bn2"], ["Conv3", "Bn3"]],
        learning_rate=1e-3, decay=1 / 2.6)
    model.compile(optimizer=opt, loss="sparse_categorical_crossentropy")
    round(opt.group_learning_rates()["group_0"], 8)   # 5.69e-05: 1e-3 / 2.6 ** 3
    ```
    """
    if (multipliers is None) == (decay is None):
        raise errors.ArgumentError("Pass exactly one of multipliers= or decay=.")
    if decay is not None:
        multipliers = [decay ** (len(groups) - i) for i in range(len(groups))]
    if len(multipliers) != len(groups):
        raise errors.ArgumentError(
            f"{len(multipliers)} multipliers for {len(groups)} groups; give one per group.")
    head = fresh_optimizer(optimizer, learning_rate, name="head")
    mapping = keras.optimizers.OptimizerMap(default_optimizer=head)
    factors = {"head": 1.0}
    for i, (group, factor) in enumerate(zip(groups, multipliers)):
        opt = fresh_optimizer(optimizer, learning_rate, name=f"group_{i}")
        factors[opt.name] = float(factor)
        for layer in freezing.select_layers(model, group):
            # A pattern over the layer's name, not its variables' paths: the
            # path's prefix changes when a model is saved and loaded
            # ("tiny/Dense_a/kernel" comes back as "Dense_a/kernel"), and
            # variables created later (LoRA adapters) belong to the layer too.
            mapping[f"(?:.*/)?{re.escape(layer.name)}/.*"] = opt
    multi = DiscriminativeOptimizer(mapping, factors, learning_rate, name="discriminative")
    multi.learning_rate = learning_rate  # scale every group
    return multi


def set_learning_rate(optimizer, learning_rate, *, steps_into_phase=0):
    """Sets an optimizer's learning rate to a float or a schedule.

    A float is assigned to the optimizer's learning-rate variable when it has
    one. A schedule, or a float for an optimizer that holds a schedule, is
    installed as a `PhaseLearningRate` whose steps count from the start of
    the phase. A `DiscriminativeOptimizer` sets every group, in ratio.

    Args:
        optimizer: a Keras optimizer.
        learning_rate: a float or a `LearningRateSchedule`.
        steps_into_phase: how many optimizer steps of the phase have run
            already (0 when the phase begins now; more when a run resumes or
            starts with `initial_epoch` inside the phase).
    """
    optimizer = _inner(optimizer)
    if isinstance(optimizer, DiscriminativeOptimizer):
        optimizer.set_learning_rate(learning_rate, steps_into_phase=steps_into_phase)
        return
    current = optimizer._learning_rate  # noqa: SLF001 (float variable or schedule)
    if not isinstance(learning_rate, Schedule) and not isinstance(current, Schedule):
        optimizer.learning_rate = float(learning_rate)
        return
    start = int(keras.ops.convert_to_numpy(optimizer.iterations)) - steps_into_phase
    optimizer.learning_rate = PhaseLearningRate(learning_rate, start)


def hold_schedules(optimizer):
    """Puts an optimizer's learning rate in schedule form, keeping its value.

    A Keras optimizer made with a float learning rate holds it in a variable,
    which it drops when a schedule is installed: its variable count changes,
    and a checkpoint written before no longer loads into it. Installing the
    schedule form before training keeps the count fixed for the whole run.

    Args:
        optimizer: a Keras optimizer (every group of a
            `DiscriminativeOptimizer`).
    """
    optimizer = _inner(optimizer)
    inner = optimizer.optimizers if isinstance(optimizer, DiscriminativeOptimizer) else [optimizer]
    for opt in inner:
        if not isinstance(opt._learning_rate, Schedule):  # noqa: SLF001
            opt.learning_rate = PhaseLearningRate(current_learning_rate(opt))


def _inner(optimizer):
    """The optimizer that holds the learning rate: a LossScaleOptimizer's inner one."""
    if isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
        return optimizer.inner_optimizer
    return optimizer


def current_learning_rate(optimizer):
    """The optimizer's learning rate now, as a Python float."""
    return float(keras.ops.convert_to_numpy(optimizer.learning_rate))


def fresh_optimizer(optimizer, learning_rate, name=None):
    """A new optimizer of `optimizer`'s kind and config at `learning_rate`.

    Args:
        optimizer: an optimizer name (`"adam"`) or instance.
        learning_rate: a float or a schedule.
        name: the new optimizer's name (default: the same).

    Returns:
        An unbuilt optimizer; a `DiscriminativeOptimizer` keeps its groups.
    """
    base = keras.optimizers.get(optimizer)
    if isinstance(base, keras.optimizers.LossScaleOptimizer):
        # mixed precision: a fresh inner optimizer, wrapped again alike
        config = base.get_config()
        config["inner_optimizer"] = fresh_optimizer(base.inner_optimizer, learning_rate)
        if name is not None:
            config["name"] = name
        return keras.optimizers.LossScaleOptimizer(**config)
    config = base.get_config()
    if isinstance(base, DiscriminativeOptimizer):
        fresh = DiscriminativeOptimizer.from_config(config)
        fresh.learning_rate = learning_rate  # every group, in ratio
        return fresh
    config["learning_rate"] = learning_rate
    if name is not None:
        config["name"] = name
    return base.__class__.from_config(config)
