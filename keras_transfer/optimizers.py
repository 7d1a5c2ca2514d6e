"""Discriminative learning rates: one learning rate per layer group, kept in ratio.

Built on Keras' own `keras.optimizers.MultiOptimizer` (sub-optimizers chosen per
variable by an `OptimizerMap`). `DiscriminativeOptimizer` adds what fine-tuning
needs and `MultiOptimizer` lacks: a `learning_rate` that sets every group's rate
at once while keeping their ratios (so `TwoPhaseSchedule`, `GradualUnfreezing`
and Keras' LR callbacks work with it), and updates over a subset of the
variables it was built with (so a frozen group simply does not step).

Each group has its own sub-optimizer and so its own step count: a group that
starts training at the phase switch gets Adam's bias correction from its first
step, unlike a single optimizer whose global step count has run on.
"""

import re

import keras

from keras_transfer import _layers
from keras_transfer import freezing
from keras_transfer.schedules import WrappedLearningRate

_Schedule = keras.optimizers.schedules.LearningRateSchedule


@keras.saving.register_keras_serializable(package="keras_transfer")
class ScaledLearningRate(WrappedLearningRate):
    """A learning rate (float or schedule) times a constant factor."""

    def __init__(self, learning_rate, factor):
        self.learning_rate = learning_rate
        self.factor = float(factor)

    def __call__(self, step):
        lr = self.learning_rate
        value = lr(step) if isinstance(lr, _Schedule) else lr
        return keras.ops.convert_to_tensor(value, "float32") * self.factor

    def get_config(self):
        return self.config(factor=self.factor)


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
        from keras_transfer import schedules

        opt = next((o for o in self.optimizers if o.name == "head"), self.optimizers[0])
        return schedules.current_learning_rate(opt) / self.multipliers.get(opt.name, 1.0)

    @learning_rate.setter
    def learning_rate(self, value):
        from keras_transfer import schedules

        self._base_learning_rate = value
        for opt in self.optimizers:
            factor = self.multipliers.get(opt.name, 1.0)
            scaled = (ScaledLearningRate(value, factor) if isinstance(value, _Schedule)
                      else float(value) * factor)
            schedules.set_learning_rate(opt, scaled)

    def group_learning_rates(self):
        """Sub-optimizer name -> its current learning rate (float)."""
        from keras_transfer import schedules

        return {opt.name: schedules.current_learning_rate(opt) for opt in self.optimizers}

    def apply(self, grads, trainable_variables=None):
        if trainable_variables is None or not self.built:
            return super().apply(grads, trainable_variables)
        # Unlike MultiOptimizer, accept any subset of the built variables: a
        # frozen group has no gradients and its sub-optimizer does not step.
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
        if isinstance(lr, _Schedule):
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
            typically) train at `learning_rate`.
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
        ValueError: neither or both of `multipliers` / `decay`, or a length
            that does not match `groups`.
        LayerSelectionError: a group does not fit the model.

    Example:

    ```python
    opt = keras_transfer.discriminative_optimizer(
        model, groups=[["Conv1", "Bn1"], ["Conv2", "Bn2"], ["Conv3", "Bn3"]],
        learning_rate=1e-3, decay=1 / 2.6)
    model.compile(optimizer=opt, loss="sparse_categorical_crossentropy")
    ```
    """
    from keras_transfer import schedules

    if (multipliers is None) == (decay is None):
        raise ValueError("Pass exactly one of multipliers= or decay=.")
    if decay is not None:
        multipliers = [decay ** (len(groups) - i) for i in range(len(groups))]
    if len(multipliers) != len(groups):
        raise ValueError(
            f"{len(multipliers)} multipliers for {len(groups)} groups; give one per group.")
    head = schedules.fresh_optimizer(optimizer, learning_rate, name="head")
    mapping = keras.optimizers.OptimizerMap(default_optimizer=head)
    factors = {"head": 1.0}
    for i, (group, factor) in enumerate(zip(groups, multipliers)):
        opt = schedules.fresh_optimizer(optimizer, learning_rate, name=f"group_{i}")
        factors[opt.name] = float(factor)
        for layer in freezing.select_layers(model, group):
            for variable in layer.weights:
                # A pattern, not the path: the path's prefix changes when a
                # model is saved and loaded ("tiny/Dense_a/kernel" comes back
                # as "Dense_a/kernel"); the layer name and variable do not.
                key = f"{re.escape(layer.name)}/{re.escape(_layers.relative_name(layer, variable))}"
                mapping[f"(?:.*/)?{key}"] = opt
    multi = DiscriminativeOptimizer(mapping, factors, learning_rate, name="discriminative")
    multi.learning_rate = learning_rate  # scale every group
    return multi
