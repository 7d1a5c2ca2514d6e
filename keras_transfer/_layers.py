"""Private helpers to walk a model's layers, nested models included.

A *unit* is what by-name transfer and freezing address: a layer that is not a
`keras.Model`. Nested models (a base model used as a layer of the target) are
walked into, so their layers are addressed by their own names.
"""

import keras

from keras_transfer import errors


def is_container(layer):
    """True for layers whose sublayers we address by name (nested models)."""
    return isinstance(layer, keras.Model)


def walk(model):
    """Yields `(layer, parent)` for every layer below `model`, pre-order.

    Containers come before their sublayers, which is the order in which
    `trainable` flags must be restored (a container's setter overwrites its
    sublayers' flags).
    """
    for layer in model.layers:
        yield layer, model
        if is_container(layer):
            yield from walk(layer)


def units(model):
    """The non-container layers below `model` that hold weights, in order.

    Raises:
        DuplicateLayerNameError: if two such layers share a name.
    """
    found = {}
    for layer, _ in walk(model):
        if is_container(layer) or not layer.weights:
            continue
        if layer.name in found:
            raise errors.DuplicateLayerNameError(
                f"Two layers of model '{model.name}' are named "
                f"'{layer.name}', so weights cannot be matched by name. "
                "Give each layer a unique `name=`."
            )
        found[layer.name] = layer
    return list(found.values())


def legacy_order(layer):
    """A layer's weights in Keras' legacy HDF5 order: trainable first."""
    return layer.trainable_weights + layer.non_trainable_weights


def relative_name(layer, variable):
    """The variable's name relative to `layer`: `kernel`, `query/kernel`."""
    prefix = f"{layer.path}/" if layer.path else None
    if prefix and variable.path.startswith(prefix):
        return variable.path[len(prefix):]
    return variable.name


def set_trainable(layer, value):
    """Sets `layer.trainable` and always propagates it to its sublayers.

    Under the TensorFlow backend, `layer.trainable = v` is skipped entirely
    when `layer.trainable` already equals `v` (the `__setattr__` short-cut of
    TF's trackable objects), so sublayers with another flag keep it. Flipping
    the flag first makes the Keras setter run.
    """
    layer.trainable = not value
    layer.trainable = value


def snapshot_trainable(model):
    """Returns a function that restores every layer's and variable's `trainable`.

    Layer flags come first, then variable flags: `layer.trainable = v` resets
    every variable of the layer, so a variable frozen on its own (a LoRA
    layer's kernel) would otherwise come back trainable.
    """
    flags = [(layer, layer.trainable) for layer, _ in walk(model)]
    top = model.trainable
    variables = [(v, v.trainable) for v in model.weights]

    def restore():
        set_trainable(model, top)
        for layer, flag in flags:  # pre-order: containers first
            set_trainable(layer, flag)
        for variable, flag in variables:
            variable.trainable = flag

    return restore


def lora_frozen_weights(layer):
    """The weights `enable_lora` froze on `layer` (its kernel), or []."""
    if not getattr(layer, "lora_enabled", False):
        return []
    adapters = {id(layer.lora_kernel_a), id(layer.lora_kernel_b)}
    return [v for v in layer.weights if id(v) not in adapters
            and v.name in ("kernel", "embeddings")]
