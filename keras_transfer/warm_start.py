"""Shrink-and-perturb: pull loaded weights part of the way back to a fresh start.

Ash & Adams ("On Warm-Starting Neural Network Training", NeurIPS 2020) found
that a network warm-started from weights trained on other data can end worse
than one trained from scratch once the new data is plentiful, and that
shrinking the loaded weights and adding a fraction of a fresh initialization,
`w = shrink * w + perturb * w_fresh`, keeps the fast start and closes most of
that gap. Their code draws `w_fresh` from a freshly initialized copy of the
network; `shrink_perturb` does the same with `keras.models.clone_model`.

What it costs and buys on this project's benchmark (Fashion-MNIST source,
MNIST target) is in BENCHMARKS.md, "Shrink-and-perturb": it is not part of
`fine_tune`'s default recipe.
"""

import keras

from keras_transfer import _layers
from keras_transfer import errors
from keras_transfer import freezing


def shrink_perturb(model, spec=None, *, shrink, perturb, fresh=None, upto=None,
                   layers=None, pattern=None):
    """Sets each selected layer's trainable weights to `shrink * w + perturb * w_fresh`.

    Call it after loading the source weights and before freezing. Only
    trainable weights change: BatchNormalization's moving statistics are left
    as they are, as Ash & Adams leave PyTorch's buffers. Nothing changes if
    any argument is refused.

    Args:
        model: a built `keras.Model`.
        spec, upto, layers, pattern: which layers; see `select_layers`.
            Usually the loaded layers that hold kernels (convolutions, dense
            layers).
        shrink: the factor on the current weights, in [0, 1].
        perturb: the factor on the fresh initialization, >= 0.
        fresh: a model with the same architecture whose weights are a fresh
            initialization; its layers are found by name. Default: a
            `keras.models.clone_model(model)`, which initializes every layer
            again from its own initializers (under Keras' global seed, see
            `keras.utils.set_random_seed`). Pass one for a subclassed model
            that Keras cannot clone.

    Returns:
        The list of layers changed, in model order (selected layers without
        weights, such as activations and pooling, are passed over).

    Raises:
        LayerSelectionError: the selector does not fit the model, selects
            no layer holding weights, or selects a frozen one.
        ArgumentError: `shrink` is outside [0, 1], `perturb` is negative, or
            `fresh` lacks a selected layer, is not built, or cannot be made
            by cloning.
        ArgumentTypeError: `shrink` or `perturb` is not a number.
        ShapeMismatchError: a weight of `fresh` has another shape than the
            model's.

    Example:

    ```python
    model = build_target()
    keras_transfer.load_weights_by_name(model, "source.h5")
    keras_transfer.shrink_perturb(model, pattern="Conv.*", shrink=0.4, perturb=0.1)
    keras_transfer.fine_tune(model, train, freeze=12, epochs=10)
    ```
    """
    shrink = errors.real_number(shrink, "shrink", "shrink_perturb")
    perturb = errors.real_number(perturb, "perturb", "shrink_perturb")
    if not 0 <= shrink <= 1:
        raise errors.ArgumentError(
            f"shrink_perturb: shrink must be in [0, 1] (the share of the loaded "
            f"weights kept), received {shrink!r}.")
    if perturb < 0:
        raise errors.ArgumentError(
            f"shrink_perturb: perturb must be >= 0 (the share of a fresh "
            f"initialization added), received {perturb!r}.")
    selected = _layers.leaves(
        freezing.select_layers(model, spec, upto=upto, layers=layers, pattern=pattern))
    chosen = [layer for layer in selected if layer.weights]  # not ReLU, pooling, ...
    if not chosen:
        raise errors.LayerSelectionError(
            f"shrink_perturb: the selected layers of model '{model.name}' hold no "
            f"weights: {[layer.name for layer in selected]}.")
    for layer in chosen:
        if not layer.trainable_weights:
            raise errors.LayerSelectionError(
                f"shrink_perturb: layer '{layer.name}' of model '{model.name}' is "
                "frozen, so it has no trainable weights to change; call "
                "shrink_perturb before freezing.")
    fresh = _fresh_copy(model) if fresh is None else fresh
    counterparts = _counterparts(chosen, fresh)
    # Every new value is computed before the first assignment, so a refusal
    # (a missing layer, a shape) leaves the model as it was.
    updates = []
    for layer, twin in zip(chosen, counterparts):
        if not twin.weights:
            raise errors.ArgumentError(
                f"shrink_perturb: layer '{layer.name}' of fresh model '{fresh.name}' "
                "holds no weights; build the fresh model (call it on a batch) first.")
        initial = {_layers.relative_name(twin, v): v for v in twin.weights}
        for variable in layer.trainable_weights:
            name = _layers.relative_name(layer, variable)
            if name not in initial or tuple(initial[name].shape) != tuple(variable.shape):
                found = tuple(initial[name].shape) if name in initial else "no such weight"
                raise errors.ShapeMismatchError(
                    f"shrink_perturb: weight '{name}' of layer '{layer.name}' has shape "
                    f"{tuple(variable.shape)}; fresh model '{fresh.name}' has {found}. "
                    "Pass a fresh model built like this one.")
            current = keras.ops.convert_to_numpy(variable)
            start = keras.ops.convert_to_numpy(initial[name])
            updates.append((variable, (shrink * current + perturb * start).astype(current.dtype)))
    for variable, value in updates:
        variable.assign(value)
    return chosen


def _fresh_copy(model):
    """`model` cloned: the same layers, each initialized again."""
    try:
        return keras.models.clone_model(model)
    except Exception as e:  # Keras raises several types for models it cannot clone
        raise errors.ArgumentError(
            f"shrink_perturb: keras.models.clone_model cannot copy model "
            f"'{model.name}' ({type(e).__name__}: {e}); pass fresh=, a newly "
            "built model of the same architecture.") from e


def _counterparts(chosen, fresh):
    """The layer of `fresh` with each chosen layer's name."""
    if not isinstance(fresh, keras.Model):
        raise errors.ArgumentTypeError(
            f"shrink_perturb: fresh must be a keras.Model, received {type(fresh).__name__}.")
    by_name = {layer.name: layer for layer, _ in _layers.walk(fresh)}
    missing = [layer.name for layer in chosen if layer.name not in by_name]
    if missing:
        raise errors.ArgumentError(
            f"shrink_perturb: fresh model '{fresh.name}' has no layer named "
            f"{missing}; its layers: {list(by_name)}.")
    return [by_name[layer.name] for layer in chosen]
