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


def check_model(model, argument):
    """Raises unless `model` is a built Keras 3 model; `argument` names it."""
    if not isinstance(model, keras.Model):
        raise errors.ArgumentTypeError(
            f"{argument} must be a Keras 3 `keras.Model`, received "
            f"{type(model).__module__}.{type(model).__name__}. For a tf_keras "
            "model, save it with model.save_weights('x.h5') and load that file "
            "by name.")
    if not model.weights:
        raise errors.UnbuiltModelError(
            f"Model '{model.name}' has no weights yet: build it first "
            "(give it an `Input` or call it on data).")


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


def find_layer(model, layer, *, argument=None, top_level=False):
    """The layer of `model` that `layer` names (a name or the layer itself).

    Args:
        model: a `keras.Model`.
        layer: a layer name, or a layer object (returned if it is in `model`).
        argument: the caller's argument, for the message (`"cut='Flatten'"`).
        top_level: look among `model.layers` only, not inside nested models.

    Raises:
        LayerSelectionError: no such layer, or `layer` is neither a name nor
            a layer.
    """
    candidates = list(model.layers) if top_level else [l for l, _ in walk(model)]
    where = " among its top-level layers" if top_level else ""
    given = f" ({argument})" if argument else ""
    if isinstance(layer, keras.layers.Layer):
        if any(c is layer for c in candidates):
            return layer
        raise errors.LayerSelectionError(
            f"Layer '{layer.name}'{given} is not a layer of model '{model.name}'{where}; "
            f"layer names: {[c.name for c in candidates]}.")
    if not isinstance(layer, str):
        raise errors.LayerSelectionError(
            f"Expected a layer or a layer name{given}, received {layer!r}.")
    for candidate in candidates:
        if candidate.name == layer:
            return candidate
    raise errors.LayerSelectionError(
        f"No layer named '{layer}'{given} in model '{model.name}'{where}; layer names: "
        f"{[c.name for c in candidates]}.")


def traced(layer):
    """True when `layer` was called in a functional graph (a functional or
    Sequential model), so what feeds it can be told; not so for a layer of a
    subclassed model."""
    try:
        layer.input  # noqa: B018 (raises for a layer never called on a KerasTensor)
    except (AttributeError, ValueError):
        return False
    return True


def traced_model(model):
    """True for a functional or Sequential model (its `inputs` are tensors)."""
    try:
        return bool(model.inputs)
    except (AttributeError, ValueError):
        return False


def producer(tensor):
    """The layer whose output `tensor` (a KerasTensor of a functional graph) is,
    or None (a model input, or a tensor of no graph)."""
    # Going around Keras: a KerasTensor records the operation that made it
    # only in its private `_keras_history`; tests/test_heads.py (a classifier
    # found behind pooling) and tests/test_weights_torch.py (a Dense after a
    # Flatten) fail if that changes.
    history = getattr(tensor, "_keras_history", None)
    operation = history.operation if history is not None else None
    return None if isinstance(operation, keras.layers.InputLayer) else operation


def leaves(layers):
    """The non-container layers of `layers`, nested models walked into, in order."""
    out = []
    for layer in layers:
        if is_container(layer):
            out.extend(l for l, _ in walk(layer) if not is_container(l))
        else:
            out.append(layer)
    return out


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
    # every layer at any depth, the layers inside plain layers too (a frozen
    # BatchNormalization in a block), each before its sublayers
    flags = [(layer, layer.trainable) for layer in with_sublayers(model)]
    variables = [(v, v.trainable) for v in model.weights]

    def restore():
        for layer, flag in flags:  # containers first: their setter sets their layers
            set_trainable(layer, flag)
        for variable, flag in variables:
            variable.trainable = flag

    return restore


# The variables `enable_lora` adapts, by the public property that returns
# them merged with their adapters (Dense, EinsumDense, Conv: `kernel`;
# Embedding: `embeddings`).
LORA_BASES = ("kernel", "embeddings")


def supports_lora(layer):
    """True for a layer Keras can give LoRA adapters (`enable_lora`): Dense,
    EinsumDense, Embedding and the convolutions, and their subclasses; not a
    model (KerasHub's Backbone has an `enable_lora` of its own)."""
    return callable(getattr(layer, "enable_lora", None)) and not is_container(layer)


def lora_adapters(layer):
    """The adapter variables `enable_lora` gave `layer` (each class names its
    own: `lora_kernel_a`, `lora_embeddings_a`, ...), `[a, b]`, or []."""
    if not getattr(layer, "lora_enabled", False):
        return []
    own = [v for v in layer.weights if v.name.startswith("lora_")]
    return sorted(own, key=lambda v: v.name)  # ..._a, then ..._b


def lora_frozen_weights(layer):
    """The weights `enable_lora` froze on `layer` (its kernel or embeddings), or []."""
    if not getattr(layer, "lora_enabled", False):
        return []
    adapters = {id(v) for v in lora_adapters(layer)}
    return [v for v in layer.weights if id(v) not in adapters and v.name in LORA_BASES]


def reset_lora(layer):
    """Sets the `b` adapter of `layer` and of its sublayers with LoRA to zero,
    so that each adapted kernel is exactly its loaded value (the update `a @ b`
    is zero) while `a` keeps its values, so training goes on (Keras' own load
    zeroes both, and then no gradient reaches them)."""
    for sub in with_sublayers(layer):
        adapters = lora_adapters(sub)
        if adapters:
            adapters[1].assign(keras.ops.zeros(adapters[1].shape, adapters[1].dtype))


def checkpoint_arrays(layer):
    """`[(variable, value)]`: `layer`'s weights as a checkpoint holds them,
    in saved order, with LoRA adapters (its own or its sublayers') merged into
    the kernel (embeddings) they adapt and left out, as Keras' own
    `save_own_variables` writes a layer with LoRA; a model without LoRA then
    loads the checkpoint. `value()` gives the numpy array."""
    owners, adapters = {}, set()
    for sub in with_sublayers(layer):
        owners.update((id(v), sub) for v in lora_frozen_weights(sub))
        adapters.update(id(v) for v in lora_adapters(sub))
    out = []
    for variable in saved_order(layer):
        if id(variable) in adapters:
            continue
        owner = owners.get(id(variable))
        out.append((variable, lambda v=variable, o=owner: keras.ops.convert_to_numpy(
            v if o is None else getattr(o, v.name))))
    return out


def with_sublayers(layer):
    """`layer` and every layer inside it at any depth, each before its own
    sublayers: the layers of nested models and the sublayers of plain layers
    (a block holding a BatchNormalization), all of which `layer.trainable = v`
    sets too."""
    # Keras has no public walk into a plain layer's sublayers; `_flatten_layers`
    # is Keras' own walk over them (for `weights`); tests/test_freezing.py
    # (a BatchNormalization in a plain layer) and `saved_order`'s tests fail if
    # it changes.
    return layer._flatten_layers(include_self=True, recursive=True)  # noqa: SLF001


def ancestors(model, layers):
    """Every layer below `model` that holds one of `layers`, at any depth and
    on every path (a shared layer has several): nested models, and plain
    layers holding sublayers (a block holding a BatchNormalization)."""
    holders = {}
    for holder in with_sublayers(model):
        # `_flatten_layers` as in `with_sublayers`, one level at a time
        for layer in holder._flatten_layers(include_self=False, recursive=False):  # noqa: SLF001
            holders.setdefault(id(layer), []).append(holder)
    found, stack = {}, list(layers)
    while stack:
        for holder in holders.get(id(stack.pop()), []):
            if holder is not model and id(holder) not in found:
                found[id(holder)] = holder
                stack.append(holder)
    return list(found.values())


def saved_order(layer):
    """A layer's weights in the order Keras writes them for a trainable model.

    Keras and tf_keras write a layer's arrays trainable first, then the
    others, where "trainable" is each variable's flag at save time. For a
    checkpoint saved while training (the usual case) that is: the variables
    created trainable, then those created non-trainable (BatchNormalization's
    moving statistics), each in `layer.weights` order. This returns that order
    whatever the current `trainable` flags are, so a frozen layer or a LoRA
    kernel does not reorder it.
    """
    # Keras has no public record of how a variable was created once
    # `layer.trainable = False` has reset its flag; each layer's private
    # `_trainable_variables` list is that record, and the private
    # `_flatten_layers` the only walk over the layer itself and every sublayer
    # at any depth (both pinned by tests in tests/test_weights.py:
    # test_saved_order_ignores_trainable_flags_and_lora and
    # test_saved_order_sees_the_layer_itself_and_sublayers_at_any_depth).
    created_trainable = {
        id(v)
        for sublayer in with_sublayers(layer)
        for v in sublayer._trainable_variables
    }
    weights = layer.weights
    return ([v for v in weights if id(v) in created_trainable]
            + [v for v in weights if id(v) not in created_trainable])


def own_variables(layer):
    """The weights `layer` holds itself, not through a sublayer (a block's
    scale, a position embedding's table)."""
    held = {id(v) for sub in layer._flatten_layers(include_self=False)  # noqa: SLF001
            for v in sub.weights}  # `_flatten_layers`: see `with_sublayers`
    return [v for v in layer.weights if id(v) not in held]


def own_weights(container):
    """The weights a model holds itself, not through one of its layers.

    A subclassed model may create variables of its own (a class token, a
    position embedding) with `add_weight`; `units` does not see them.
    """
    held = {id(v) for layer in container.layers for v in layer.weights}
    return [v for v in saved_order(container) if id(v) not in held]


def containers(model):
    """`model` and every nested model below it, pre-order."""
    return [model] + [layer for layer, _ in walk(model) if is_container(layer)]
