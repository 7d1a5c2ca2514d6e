"""Head surgery: a new classifier on a trained base, and several heads on one base.

`replace_head` finds the model's classifier, walking back from its output
through the layers that only pool, flatten, reshape or activate (a
`Dense` classifier, or a `Conv` one followed by global pooling and a softmax,
as mini-Xception's), and puts a new classifier of the same kind in its place,
the layers after it applied again. With `class_subset`, the new classifier
starts from the source classifier's rows for the kept classes (a Dense
kernel's columns, a Conv kernel's filters) instead of random values, so
before any training it predicts the kept classes exactly as the source does,
restricted to them.

`attach_heads` puts several named heads on one shared base (a 10-class softmax
and a 5-label sigmoid, say); compile the result with one loss per head.
"""

import keras
import numpy as np

from keras_transfer import _checks
from keras_transfer import _layers
from keras_transfer import errors

# Layers between a classifier and the output that carry its classes through.
_AFTER_CLASSIFIER = (
    keras.layers.GlobalAveragePooling1D, keras.layers.GlobalAveragePooling2D,
    keras.layers.GlobalAveragePooling3D, keras.layers.GlobalMaxPooling1D,
    keras.layers.GlobalMaxPooling2D, keras.layers.GlobalMaxPooling3D,
    keras.layers.Flatten, keras.layers.Reshape, keras.layers.Activation,
    keras.layers.Softmax, keras.layers.ReLU, keras.layers.Dropout, keras.layers.Identity)
_CLASSIFIERS = (keras.layers.Dense, keras.layers.Conv1D, keras.layers.Conv2D,
                keras.layers.Conv3D)
_ACTIVATIONS = (keras.layers.Activation, keras.layers.Softmax, keras.layers.ReLU)


def _inputs(model):
    return model.inputs[0] if len(model.inputs) == 1 else model.inputs


def _output(model):
    # `model.output` raises for a Sequential model that was never called;
    # `model.outputs` is set from its Input.
    if len(model.outputs) != 1:
        raise errors.ArgumentError(
            f"Model '{model.name}' has {len(model.outputs)} outputs; the heads need one "
            "feature output to share. Pass a base model with a single output.")
    return model.outputs[0]


def _classifier(model):
    """`(classifier, after)`: the Dense or Conv layer that makes the classes,
    and the layers between it and the output, in order."""
    after = []
    layer = _layers.producer(_output(model))
    while isinstance(layer, _AFTER_CLASSIFIER):
        after.insert(0, layer)
        layer = _layers.producer(layer.input)
    if isinstance(layer, _CLASSIFIERS):
        return layer, after
    found = "nothing" if layer is None else f"'{layer.name}' ({type(layer).__name__})"
    raise errors.LayerSelectionError(
        f"Model '{model.name}' has no Dense or Conv classifier at its output: walking back "
        "from the output through pooling, flatten, reshape, dropout and activation layers "
        f"found {found}. Pass cut= to name the layer whose output the new head takes.")


def _old_classifier(model, needed):
    """The classifier whose activation `cut=` heads keep: the one at the output,
    else the model's last Dense (as before the walk existed); None when
    there is none and its activation is not `needed`."""
    try:
        return _classifier(model)[0]
    except errors.LayerSelectionError:
        dense = [l for l in model.layers if isinstance(l, keras.layers.Dense)]
        if dense:
            return dense[-1]
        if needed:
            raise
        return None


def _again(layer, tensor, old, num_classes):
    """`layer` applied to the new classifier's output; a `Reshape` that names
    the old class count is made anew for the new one (MobileNet's head)."""
    if isinstance(layer, keras.layers.Reshape):
        shape = tuple(layer.target_shape)
        old_count = old.units if isinstance(old, keras.layers.Dense) else old.filters
        if shape and shape[-1] == old_count:
            return keras.layers.Reshape(shape[:-1] + (num_classes,),
                                        name=f"{layer.name}_new")(tensor)
    return layer(tensor)


def _cut_tensor(model, cut):
    return _layers.find_layer(model, cut, argument=f"cut={cut!r}", top_level=True).output


def _new_classifier(old, units, activation, name):
    """A fresh layer of `old`'s kind and settings, with `units` outputs."""
    config = old.get_config()
    config.update(name=name, activation=activation, trainable=True)
    if isinstance(old, keras.layers.Dense):
        config["units"] = units
    else:
        config["filters"] = units
    for key in ("kernel_initializer", "bias_initializer"):  # fresh draws, not old seeds
        config.pop(key, None)
    config.pop("lora_rank", None)
    return type(old).from_config(config)


def replace_head(model, num_classes, *, cut=None, activation="same", name=None,
                 class_subset=None):
    """Returns a model that shares `model`'s base and has a new classifier.

    Args:
        model: a built functional or Sequential `keras.Model`.
        num_classes: units (or filters) of the new classifier.
        cut: the layer (or its name) whose output feeds a new `Dense` head;
            default: the model's own classifier is replaced by one of its kind
            (a Dense, or a Conv with its settings) on the same input, and the
            layers after it (global pooling, flatten, activation) are applied
            again.
        activation: the new classifier's activation; `"same"` keeps the old
            one's (softmax stays softmax), and the activation layers after it.
            Anything else replaces both (`activation=None` gives logits).
        name: the new classifier's name; default `"<old name>_new"`.
        class_subset: indices of source classes to keep, in the order of the
            new classes (`[3, 5, 6]`): the new classifier starts from those
            rows of the old one (Dense kernel columns, Conv kernel filters,
            and their bias entries). Needs the default cut and
            `num_classes == len(class_subset)`.

    Returns:
        A new `keras.Model` whose base layers are `model`'s own layers (shared,
        not copied) and whose classifier is new.

    Raises:
        LayerSelectionError: no Dense or Conv classifier at the output (with
            the default cut), or an unknown `cut`.
        ArgumentError: `num_classes` is not a positive int, or `class_subset`
            does not fit the source classifier.

    Example:

    ```python
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(4, 3, activation="relu", name="features")(inputs)
    x = keras.layers.Conv2D(7, 1, name="classes")(x)
    outputs = keras.layers.Activation("softmax")(keras.layers.GlobalAveragePooling2D()(x))
    source = keras.Model(inputs, outputs)
    target = keras_transfer.replace_head(source, 3, class_subset=[0, 4, 6])
    target.output_shape   # (None, 3): the source's softmax over classes 0, 4, 6
    ```
    """
    num_classes = _checks.whole_number(num_classes, "num_classes", owner="replace_head",
                                       minimum=1, why="the new head's units")
    if class_subset is not None and cut is not None:
        raise errors.ArgumentError(
            f"class_subset needs the default cut (the input of the model's classifier), "
            f"but cut={cut!r} was given; drop one of the two.")
    if cut is not None:
        old = _old_classifier(model, needed=activation == "same")
        head = keras.layers.Dense(
            num_classes, activation=old.activation if activation == "same" else activation,
            name=name or f"{old.name if old is not None else 'head'}_new")
        return keras.Model(_inputs(model), head(_cut_tensor(model, cut)),
                           name=f"{model.name}_new_head")
    old, after = _classifier(model)
    if activation != "same":  # the caller's activation, not the layers' after it
        after = [layer for layer in after if not isinstance(layer, _ACTIVATIONS)]
    head = _new_classifier(old, num_classes, old.activation if activation == "same"
                           else activation, name or f"{old.name}_new")
    outputs = head(old.input)
    for layer in after:
        outputs = _again(layer, outputs, old, num_classes)
    new = keras.Model(_inputs(model), outputs, name=f"{model.name}_new_head")
    if class_subset is not None:
        _start_from_subset(old, head, class_subset, num_classes)
    return new


def _start_from_subset(old, head, class_subset, num_classes):
    subset = np.asarray(class_subset, dtype=int)
    kernel = keras.ops.convert_to_numpy(old.kernel)
    classes = kernel.shape[-1]
    if len(subset) != num_classes:
        raise errors.ArgumentError(
            f"class_subset has {len(subset)} classes but num_classes={num_classes}; "
            "give one source class per new class.")
    if subset.min() < 0 or subset.max() >= classes:
        raise errors.ArgumentError(
            f"class_subset {subset.tolist()} is out of range for the source classifier "
            f"'{old.name}' with {classes} classes.")
    head.kernel.assign(kernel[..., subset])
    if old.use_bias and head.use_bias:
        head.bias.assign(keras.ops.convert_to_numpy(old.bias)[subset])


def attach_heads(base, heads):
    """Puts several named heads on one shared base.

    Args:
        base: a built `keras.Model` (its output is what the heads take).
        heads: head name -> `(units, activation)`, or a `keras.layers.Layer`
            (given its name), in output order.

    Returns:
        A `keras.Model` with a dict of outputs keyed by head name; compile it
        with `loss={name: ...}` and `loss_weights={name: ...}`; per-head
        metrics appear in the logs as `<name>_<metric>`.

    Raises:
        ArgumentTypeError: a head is neither `(units, activation)` nor a layer.
        ArgumentError: the base has more than one output.

    Example:

    ```python
    model = keras_transfer.attach_heads(base, {"digit": (10, "softmax"),
                                              "attributes": (5, "sigmoid")})
    sorted(model.output)   # ['attributes', 'digit']
    ```
    """
    features = _output(base)
    outputs = {}
    for head_name, spec in heads.items():
        if isinstance(spec, keras.layers.Layer):
            layer = spec
        elif isinstance(spec, (tuple, list)) and len(spec) == 2:
            units, activation = spec
            layer = keras.layers.Dense(units, activation=activation, name=head_name)
        else:
            raise errors.ArgumentTypeError(
                f"Head '{head_name}': expected `(units, activation)` or a keras Layer, "
                f"received {spec!r}.")
        outputs[head_name] = layer(features)
    return keras.Model(_inputs(base), outputs, name=f"{base.name}_heads")
