"""Head surgery: a new classifier on a trained base, and several heads on one base.

`replace_head` cuts a model at a layer (by default the input of its final
`Dense` layer) and puts a new `Dense` classifier there. With `class_subset`,
the new head starts from the source head's rows for the kept classes instead of
random values, so before any training it predicts the kept classes exactly as
the source does, restricted to them.

`attach_heads` puts several named heads on one shared base (a 10-class softmax
and a 5-label sigmoid, say); compile the result with one loss per head.
"""

import keras
import numpy as np

from keras_transfer import _checks
from keras_transfer import _layers
from keras_transfer import errors


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


def _final_dense(model):
    for layer in reversed(model.layers):
        if isinstance(layer, keras.layers.Dense):
            return layer
    raise errors.LayerSelectionError(
        f"Model '{model.name}' has no Dense layer to replace; pass cut= to name "
        "the layer whose output the new head takes.")


def _cut_tensor(model, cut):
    if cut is None:
        return _final_dense(model).input
    return _layers.find_layer(model, cut, argument=f"cut={cut!r}", top_level=True).output


def replace_head(model, num_classes, *, cut=None, activation="same", name=None,
                 class_subset=None):
    """Returns a model that shares `model`'s base and has a new classifier.

    Args:
        model: a built functional or Sequential `keras.Model`.
        num_classes: units of the new head.
        cut: the layer (or its name) whose output feeds the new head; default:
            the input of the model's final Dense layer.
        activation: the new head's activation; `"same"` keeps the final Dense
            layer's activation (softmax stays softmax).
        name: the new head's name; default `"<old name>_new"`.
        class_subset: indices of source classes to keep, in the order of the
            new classes (`[3, 5, 6]`): the head starts from those rows of the
            source head (kernel columns and bias entries). Needs the default
            cut and `num_classes == len(class_subset)`.

    Returns:
        A new `keras.Model` whose base layers are `model`'s own layers (shared,
        not copied) and whose head is new.

    Raises:
        LayerSelectionError: no Dense layer to replace, or an unknown `cut`.
        ArgumentError: `num_classes` is not a positive int, or `class_subset`
            does not fit the source head.

    Example:

    ```python
    target = keras_transfer.replace_head(source, 3, class_subset=[0, 4, 6])
    ```
    """
    num_classes = _checks.whole_number(num_classes, "num_classes", owner="replace_head",
                                       minimum=1, why="the new head's units")
    old = _final_dense(model)
    if activation == "same":
        activation = old.activation
    head = keras.layers.Dense(num_classes, activation=activation,
                              name=name or f"{old.name}_new")
    outputs = head(_cut_tensor(model, cut))
    new = keras.Model(_inputs(model), outputs, name=f"{model.name}_new_head")
    if class_subset is not None:
        subset = np.asarray(class_subset, dtype=int)
        kernel = keras.ops.convert_to_numpy(old.kernel)
        if cut is not None:
            raise errors.ArgumentError(
                f"class_subset needs the default cut (the input of the final Dense layer "
                f"'{old.name}'), but cut={cut!r} was given; drop one of the two.")
        if len(subset) != num_classes:
            raise errors.ArgumentError(
                f"class_subset has {len(subset)} classes but num_classes={num_classes}; "
                "give one source class per new class.")
        if subset.min() < 0 or subset.max() >= kernel.shape[1]:
            raise errors.ArgumentError(
                f"class_subset {subset.tolist()} is out of range for the source head "
                f"'{old.name}' with {kernel.shape[1]} classes.")
        head.kernel.assign(kernel[:, subset])
        if old.use_bias and head.use_bias:
            head.bias.assign(keras.ops.convert_to_numpy(old.bias)[subset])
    return new


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
