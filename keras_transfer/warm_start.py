"""Shrink-and-perturb: pull loaded weights part of the way back to a fresh start.

Ash & Adams ("On Warm-Starting Neural Network Training", NeurIPS 2020) found
that a network warm-started from weights trained on other data can end worse
than one trained from scratch once the new data is plentiful. They report that
shrinking the loaded weights and adding a fraction of a fresh initialization,
`w = shrink * w + perturb * w_fresh`, keeps the fast start and closes most of
that gap. Their code draws `w_fresh` from a freshly initialized copy of the
network; `shrink_perturb` does the same with `keras.models.clone_model`.

On this project's benchmark (Fashion-MNIST source, MNIST target; BENCHMARKS.md,
"Transfer gains") it brought transfer level with scratch on validation with
55,000 target images but not on the test images, and cost about a point with
100, so it is not part of `fine_tune`'s default recipe.
"""

import keras

from keras_transfer import _checks
from keras_transfer import _layers
from keras_transfer import errors
from keras_transfer import freezing


def shrink_perturb(model, spec=None, *, shrink, perturb, fresh=None, upto=None,
                   layers=None, pattern=None):
    """Sets each selected layer's trainable weights to `shrink * w + perturb * w_fresh`.

    Call it after loading the source weights and before freezing. Only
    trainable weights change: BatchNormalization's moving statistics are left
    as they are, as Ash & Adams leave PyTorch's buffers. Layers are paired with
    `fresh`'s by name, as by-name loading pairs them, so layer names must be
    unique; weights within a layer are paired in order, and their shapes must
    agree. Nothing changes if any argument is refused.

    Args:
        model: a built `keras.Model`.
        spec, upto, layers, pattern: which layers; see `select_layers`.
            Usually the loaded layers that hold kernels (convolutions, dense
            layers).
        shrink: the factor on the current weights, in [0, 1].
        perturb: the factor on the fresh initialization, >= 0.
        fresh: a built model of the same architecture whose weights are a
            fresh initialization (not `model` itself). Default: a
            `keras.models.clone_model(model)`, which initializes every layer
            again from its own initializers; that draws from Keras' global
            seed (`keras.utils.set_random_seed`) and moves it on, even when a
            later check refuses the call. Pass one for a model that Keras
            cannot clone.

    Returns:
        The list of layers changed, in model order, each once. Selected
        layers without weights (activations, pooling) are passed over.

    Raises:
        LayerSelectionError: the selector does not fit the model, selects
            no layer holding weights, or selects a frozen one.
        DuplicateLayerNameError: two layers holding weights share a name, in
            `model` or in `fresh`.
        UnbuiltModelError: `model` or `fresh` is not built.
        ArgumentError: `shrink` is outside [0, 1], `perturb` is negative,
            either is NaN or infinite; `fresh` is `model`, lacks a selected
            layer, or cannot be made by cloning; a selected weight is not
            floating-point.
        ArgumentTypeError: `shrink` or `perturb` is not a number, or `fresh`
            is not a Keras 3 model.
        ShapeMismatchError: a layer of `fresh` holds other weights (another
            count or shape) than the model's.

    Example:

    ```python
    from keras_transfer.pipeline import reference

    model = reference.target_cnn()
    keras_transfer.load_weights_by_name(model, "source.h5")
    mixed = keras_transfer.shrink_perturb(model, pattern="Conv.*", shrink=0.4, perturb=0.2)
    [layer.name for layer in mixed]   # ['Conv1', 'Conv2', 'Conv3']
    history = keras_transfer.fine_tune(model, train, freeze=12, epochs=2, verbose=0)
    ```
    """
    shrink = _checks.real_number(shrink, "shrink", owner="shrink_perturb", at_least=0,
                                 at_most=1, why="the share of the loaded weights kept")
    perturb = _checks.real_number(perturb, "perturb", owner="shrink_perturb", at_least=0,
                                  why="the share of a fresh initialization added")
    _layers.check_model(model, "model")
    units = _layers.units(model)  # every layer holding weights; refuses duplicate names
    selected = set(_layers.leaves(
        freezing.select_layers(model, spec, upto=upto, layers=layers, pattern=pattern)))
    chosen = [layer for layer in units if layer in selected]
    if not chosen:
        raise errors.LayerSelectionError(
            f"shrink_perturb: the selected layers of model '{model.name}' hold no "
            f"weights: {sorted(layer.name for layer in selected)}. Select layers "
            "that do (convolutions, dense layers).")
    for layer in chosen:
        if not layer.trainable_weights:
            raise errors.LayerSelectionError(
                f"shrink_perturb: layer '{layer.name}' of model '{model.name}' is "
                "frozen, so it has no trainable weights to change; call "
                "shrink_perturb before freezing.")
    if fresh is model:
        raise errors.ArgumentError(
            "shrink_perturb: fresh is the model itself; pass a newly built model "
            "of the same architecture, or leave fresh=None for a clone.")
    fresh = _fresh_copy(model) if fresh is None else fresh
    _layers.check_model(fresh, "fresh")
    twins = {layer.name: layer for layer in _layers.units(fresh)}
    missing = [layer.name for layer in chosen if layer.name not in twins]
    if missing:
        raise errors.ArgumentError(
            f"shrink_perturb: fresh model '{fresh.name}' has no layer holding "
            f"weights named {missing}; pass a model built like '{model.name}'.")
    # Every new value is computed before the first assignment, so a refusal
    # (a shape, a dtype) leaves the model as it was.
    updates = []
    for layer in chosen:
        for variable, start in _paired_weights(layer, twins[layer.name], fresh):
            current = keras.ops.convert_to_numpy(variable)
            if current.dtype.kind != "f":
                raise errors.ArgumentError(
                    f"shrink_perturb: weight '{variable.path}' is {current.dtype}; only "
                    f"floating-point weights can be mixed. Leave layer '{layer.name}' "
                    "out of the selection.")
            start = keras.ops.convert_to_numpy(start).astype(current.dtype)
            updates.append((variable, shrink * current + perturb * start))  # in w's dtype
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


def _paired_weights(layer, twin, fresh):
    """(trainable weight of `layer`, the weight of `twin` in its place), in order.

    Paired by position in `weights`, which a layer creates in the same order
    whenever it is built the same way; the shapes are checked.
    """
    ours, theirs = layer.weights, twin.weights
    if [tuple(v.shape) for v in ours] != [tuple(v.shape) for v in theirs]:
        raise errors.ShapeMismatchError(
            f"shrink_perturb: layer '{layer.name}' holds weights of shapes "
            f"{[tuple(v.shape) for v in ours]}; in fresh model '{fresh.name}' it holds "
            f"{[tuple(v.shape) for v in theirs]}. Pass a fresh model built like this one.")
    trainable = {id(v) for v in layer.trainable_weights}
    return [(v, start) for v, start in zip(ours, theirs) if id(v) in trainable]
