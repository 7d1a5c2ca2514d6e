"""Freeze and unfreeze layers by index, name or pattern, nested models included.

BatchNormalization layers stay frozen when unfrozen, unless asked otherwise: a
frozen BatchNormalization runs in inference mode in Keras 3, which is what the
Keras fine-tuning guide recommends (the moving statistics of the source are
kept, and a small target batch does not wreck them).

Changing `trainable` does not by itself change what an already compiled model
trains; inside `model.fit` use `TwoPhaseSchedule`, otherwise `compile()` again.
"""

import math
import numbers
import re

import keras

from keras_transfer import _layers
from keras_transfer import errors


def select_layers(model, spec=None, *, upto=None, layers=None, pattern=None):
    """Returns the layers of `model` that a selector names.

    Args:
        model: a `keras.Model`.
        spec: a shorthand for one of the keyword selectors: an int (`upto`),
            a str or compiled regex (`pattern`), or a list of layers or names
            (`layers`).
        upto: the first `upto` top-level layers (`model.layers[:upto]`).
        layers: layer objects or names; names are looked up at any depth,
            inside nested models too.
        pattern: a regular expression; every layer (at any depth) whose name
            it fully matches.

    Returns:
        A list of layers, without duplicates, in model order. With no selector
        at all, every top-level layer.

    Raises:
        LayerSelectionError: an index out of range, a name not in the model, a
            pattern that matches nothing, or more than one selector.
    """
    if spec is not None:
        if isinstance(spec, bool):
            raise errors.LayerSelectionError(
                f"Expected an int, a name pattern or a list of layers; received {spec!r}.")
        if isinstance(spec, numbers.Integral):
            upto = int(spec)
        elif isinstance(spec, (str, re.Pattern)):
            pattern = spec
        else:
            layers = spec
    given = [s for s in (upto, layers, pattern) if s is not None]
    if len(given) > 1:
        raise errors.LayerSelectionError(
            "Pass one of upto=, layers= or pattern=, not several."
        )
    if not given:
        return list(model.layers)
    every = [layer for layer, _ in _layers.walk(model)]
    if upto is not None:
        if not 0 <= upto <= len(model.layers):
            raise errors.LayerSelectionError(
                f"upto={upto} is out of range: model '{model.name}' has "
                f"{len(model.layers)} top-level layers."
            )
        return list(model.layers[:upto])
    if pattern is not None:
        regex = re.compile(pattern)
        chosen = [layer for layer in every if regex.fullmatch(layer.name)]
        if not chosen:
            raise errors.LayerSelectionError(
                f"pattern={regex.pattern!r} matches no layer of model "
                f"'{model.name}'; layer names: {[l.name for l in every]}."
            )
        return chosen
    chosen = []
    for item in layers:
        # a layer object is taken as given, as before: it may be outside `model`
        layer = item if isinstance(item, keras.layers.Layer) else _layers.find_layer(model, item)
        if layer not in chosen:
            chosen.append(layer)
    return chosen


def freeze(model, spec=None, *, upto=None, layers=None, pattern=None,
           train_batchnorm=False):
    """Freezes the selected layers (all of `model` when nothing is selected).

    Args:
        model: a `keras.Model`.
        spec, upto, layers, pattern: which layers; see `select_layers`.
        train_batchnorm: keep the BatchNormalization layers inside the
            selection trainable, at any depth (fastai's `train_bn`, for
            BatchNormalization only): they train, in training mode, while
            everything else there is frozen. A layer holding one (a nested
            model, a block written as a `keras.layers.Layer`) keeps its
            other sublayers and its own weights frozen.

    Returns:
        The list of layers frozen.

    Raises:
        LayerSelectionError: the selector does not fit the model.

    Example:

    ```python
    len(keras_transfer.freeze(model, upto=12))   # 12: the first 12 layers
    [l.name for l in keras_transfer.freeze(model, pattern="Conv.*")]  # ['Conv1', 'Conv2', 'Conv3']
    keras_transfer.freeze(model, upto=12, train_batchnorm=True)
    model.get_layer("Bn1").trainable, model.get_layer("Conv1").trainable   # (True, False)
    ```
    """
    chosen = select_layers(model, spec, upto=upto, layers=layers, pattern=pattern)
    for layer in chosen:
        _layers.set_trainable(layer, False)
    if train_batchnorm:
        batchnorm = {id(sub): sub for layer in chosen for sub in _layers.with_sublayers(layer)
                     if isinstance(sub, keras.layers.BatchNormalization)}
        unfreeze(model, layers=list(batchnorm.values()), train_batchnorm=True)
    return chosen


def unfreeze(model, spec=None, *, upto=None, layers=None, pattern=None,
             train_batchnorm=False):
    """Makes the selected layers trainable (all of `model` by default).

    BatchNormalization layers inside the selection stay frozen, so they keep
    running in inference mode with the source's statistics, unless
    `train_batchnorm=True`. The kernel of a layer with LoRA enabled stays
    frozen (only its adapters train), as `enable_lora` left it. Frozen
    layers above a selected layer (nested models, and the blocks holding a
    selected sublayer) become trainable, without unfreezing their other
    layers or their own weights.

    Args:
        model: a `keras.Model`.
        spec, upto, layers, pattern: which layers; see `select_layers`.
        train_batchnorm: also make BatchNormalization layers trainable.

    Returns:
        The list of layers selected.

    Raises:
        LayerSelectionError: the selector does not fit the model.

    Example:

    ```python
    keras_transfer.freeze(model)
    keras_transfer.unfreeze(model)  # everything but BatchNormalization
    model.get_layer("Bn1").trainable, model.get_layer("Conv1").trainable   # (False, True)
    ```
    """
    chosen = select_layers(model, spec, upto=upto, layers=layers, pattern=pattern)
    for container in [model] + _layers.ancestors(model, chosen):
        if not container.trainable:
            # Going around Keras: the public setter would also unfreeze every
            # other layer of the container and its own weights. Only the
            # container's own flag is turned on; its layers and weights keep
            # theirs (Keras' `trainable_weights` filters by both).
            container._trainable = True  # noqa: SLF001
    for layer in chosen:
        _layers.set_trainable(layer, True)
        for sub in _layers.with_sublayers(layer):  # nested models' and blocks' layers
            if isinstance(sub, keras.layers.BatchNormalization) and not train_batchnorm:
                sub.trainable = False
            # `trainable = True` turns every variable of a layer on, also the
            # kernel that `enable_lora` froze: keep LoRA's kernel frozen.
            for variable in _layers.lora_frozen_weights(sub):
                variable.trainable = False
    return chosen


def trainable_summary(model, print_fn=print):
    """Prints each layer's trainable and frozen parameter counts.

    Top-level layers are listed, and the layers of nested models below them,
    indented.

    Args:
        model: a `keras.Model`.
        print_fn: where each line goes (default `print`).

    Returns:
        The summary as a string.

    Example:

    ```python
    text = keras_transfer.trainable_summary(model, print_fn=lambda line: None)
    text.splitlines()[1].split()   # ['Conv1', 'Conv2D', '320', '0']
    ```
    """
    rows = []

    def visit(container, depth):
        for layer in container.layers:
            trainable = _count(layer.trainable_weights)
            frozen = _count(layer.non_trainable_weights)
            rows.append(("  " * depth + layer.name, type(layer).__name__,
                         trainable, frozen))
            if _layers.is_container(layer):
                visit(layer, depth + 1)

    visit(model, 0)
    total_t = _count(model.trainable_weights)
    total_f = _count(model.non_trainable_weights)
    width = max([len(r[0]) for r in rows] + [5])
    kind = max([len(r[1]) for r in rows] + [4])
    lines = [f"{'layer'.ljust(width)}  {'type'.ljust(kind)}  {'trainable':>10}  {'frozen':>10}"]
    for name, typ, t, f in rows:
        lines.append(f"{name.ljust(width)}  {typ.ljust(kind)}  {t:>10,}  {f:>10,}")
    lines.append(f"{'total'.ljust(width)}  {''.ljust(kind)}  {total_t:>10,}  {total_f:>10,}")
    text = "\n".join(lines)
    print_fn(text)
    return text


def _count(variables):
    return int(sum(math.prod(v.shape) for v in variables))
