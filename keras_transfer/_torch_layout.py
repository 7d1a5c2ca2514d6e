"""Private: PyTorch parameter layouts converted to Keras', by target layer class.

One rule per Keras layer class, chosen from the target layer (the source
names only parameters: `weight`, `bias`, `running_mean`, ...). Each rule says
which parameter fills which variable and how its axes move, as data:

| Keras layer | PyTorch module | conversion |
|---|---|---|
| Conv1D/2D/3D | Conv{1,2,3}d | `(O, I/groups, *k)` -> `(*k, I/groups, O)` |
| DepthwiseConv1D/2D | Conv with groups=C | `(C*m, 1, *k)` -> `(*k, C, m)` |
| Conv1D/2D/3DTranspose | ConvTranspose | `(I, O/groups, *k)` -> `(*k, O/groups, I)`, not flipped |
| Dense | Linear | `(out, in)` transposed; after a Flatten of a feature map, the input rows go from PyTorch's (C, H, W) order to Keras' (H, W, C) |
| EinsumDense | Linear | transposed, then reshaped to the kernel's shape when the sizes agree |
| BatchNormalization | BatchNorm | `weight, bias, running_mean, running_var`; `num_batches_tracked` dropped |
| LayerNormalization, GroupNormalization | LayerNorm, GroupNorm | `weight, bias` |
| Embedding | Embedding | as is |

This is the generic path: one PyTorch module per Keras layer (CNNs, MLPs,
embeddings). A layer holding several modules (KerasHub's transformer blocks)
has no rule here; KerasHub's converters load those from their checkpoint
directories.

It also says, per loaded layer, what PyTorch does differently that the
weights alone cannot carry: a normalization epsilon other than PyTorch's
default, and a strided convolution padded asymmetrically (`padding="same"`,
or an uneven `ZeroPadding` in front), where PyTorch pads symmetrically.
"""

import math

import keras
import numpy as np

from keras_transfer import _layers
from keras_transfer import errors

DROPPED = ("num_batches_tracked",)  # BatchNorm's step counter: no Keras variable
TORCH_EPSILON = 1e-5  # PyTorch's default for BatchNorm, LayerNorm and GroupNorm

_CONV = (keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D)
_DEPTHWISE = (keras.layers.DepthwiseConv1D, keras.layers.DepthwiseConv2D)
_TRANSPOSE = (keras.layers.Conv1DTranspose, keras.layers.Conv2DTranspose,
              keras.layers.Conv3DTranspose)
_SEPARABLE = (keras.layers.SeparableConv1D, keras.layers.SeparableConv2D)
_NORMS = (keras.layers.BatchNormalization, keras.layers.LayerNormalization,
          keras.layers.GroupNormalization)
_SHAPE_KEEPING = (keras.layers.Dropout, keras.layers.Activation, keras.layers.ReLU,
                  keras.layers.LeakyReLU, keras.layers.ELU, keras.layers.Softmax,
                  keras.layers.GaussianNoise, keras.layers.GaussianDropout,
                  keras.layers.AlphaDropout, keras.layers.Identity)


class LayoutProblem(Exception):
    """A layer that cannot take the PyTorch module's parameters."""

    def __init__(self, error_class, message):
        super().__init__(message)
        self.error_class = error_class


def rule_for(layer):
    """`(kind, {torch parameter: Keras variable name})` for `layer`, or a
    `LayoutProblem` naming the layer class that has no rule."""
    if isinstance(layer, _SEPARABLE):
        raise LayoutProblem(errors.WeightMatchError, (
            f"layer '{layer.name}' is a {type(layer).__name__}, which PyTorch writes as "
            "two modules (a depthwise and a pointwise convolution): build it as "
            "DepthwiseConv2D + Conv2D(kernel_size=1) to load them"))
    if isinstance(layer, _DEPTHWISE):
        return "depthwise", {"weight": "kernel", "bias": "bias"}
    if isinstance(layer, _TRANSPOSE):
        return "transpose", {"weight": "kernel", "bias": "bias"}
    if isinstance(layer, _CONV):
        return "conv", {"weight": "kernel", "bias": "bias"}
    if isinstance(layer, keras.layers.Dense):
        return "dense", {"weight": "kernel", "bias": "bias"}
    if isinstance(layer, keras.layers.EinsumDense):
        return "einsum", {"weight": "kernel", "bias": "bias"}
    if isinstance(layer, keras.layers.BatchNormalization):
        return "norm", {"weight": "gamma", "bias": "beta", "running_mean": "moving_mean",
                        "running_var": "moving_variance"}
    if isinstance(layer, (keras.layers.LayerNormalization, keras.layers.GroupNormalization)):
        return "norm", {"weight": "gamma", "bias": "beta"}
    if isinstance(layer, keras.layers.Embedding):
        return "embedding", {"weight": "embeddings"}
    held = [sub.name for sub in layer._flatten_layers(include_self=False)  # noqa: SLF001
            if sub.weights]
    if held:
        raise LayoutProblem(errors.WeightMatchError, (
            f"layer '{layer.name}' ({type(layer).__name__}) holds several layers with "
            f"weights ({held[:6]}), which PyTorch writes as several modules. The generic "
            "PyTorch path loads one module per Keras layer (CNNs, MLPs, embeddings); for a "
            "transformer, load the checkpoint directory (config.json beside "
            "model.safetensors) through KerasHub's converter, or build the block from "
            "one-module layers"))
    raise LayoutProblem(errors.WeightMatchError, (
        f"layer '{layer.name}' is a {type(layer).__name__}, for which there is no PyTorch "
        "layout rule (there are rules for Conv, DepthwiseConv, ConvTranspose, Dense, "
        "EinsumDense, BatchNormalization, LayerNormalization, GroupNormalization and "
        "Embedding); pass skip_mismatch=True to leave it, or load it yourself"))


def convert(layer, params, model_inputs=()):
    """How each PyTorch parameter of `params` fills a variable of `layer`.

    Args:
        layer: the target Keras layer.
        params: `{parameter name: shape}` of the source module.
        model_inputs: the target model's own input tensors (an input reached
            from `layer` that is not one of them is a nested model's, whose
            feed cannot be seen).

    Returns:
        `(moves, dropped, description, cautions)`: `moves` maps a Keras
        variable name to `(parameter name, transform, converted shape)`;
        `dropped` lists the parameters with no Keras variable
        (`num_batches_tracked`); `description` says what was done, for the
        report; `cautions` what could not be told (see `warnings_for` too).

    Raises:
        LayoutProblem: no rule for the layer, a parameter the rule does not
            know, or a layout that does not fit the layer.
    """
    kind, names = rule_for(layer)
    if getattr(layer, "data_format", "channels_last") == "channels_first":
        raise LayoutProblem(errors.WeightMatchError, (
            f"layer '{layer.name}' is channels_first; PyTorch checkpoints load into "
            "channels_last Keras models (Keras' default): build the model with "
            "data_format='channels_last'"))
    dropped = [p for p in params if p in DROPPED]
    unknown = sorted(set(params) - set(names) - set(dropped))
    if unknown:
        raise LayoutProblem(errors.ShapeMismatchError, (
            f"layer '{layer.name}' ({type(layer).__name__}) takes {sorted(names)} from "
            f"a PyTorch module; the source also has {unknown}"))
    order, cautions = (None, [])
    if kind in ("dense", "norm"):
        order, cautions = flattened_map(layer, model_inputs)
    moves, steps = {}, []
    for param, variable in names.items():
        if param not in params:
            continue
        shape = tuple(params[param])
        transform, converted, step = _transform(kind, layer, param, shape, order)
        moves[variable] = (param, transform, converted)
        if step:
            steps.append(step)
    if kind in ("norm", "embedding"):  # the same layout under other names
        steps.append(", ".join(f"{param} -> {variable}"
                               for variable, (param, _, _) in moves.items()))
    description = "; ".join(dict.fromkeys(steps))
    return moves, dropped, description, cautions


def _transform(kind, layer, param, shape, order):
    """`(transform, converted shape, description)` of one parameter."""
    if kind == "norm":
        if order is None or len(shape) != 1:
            return _identity, shape, None
        return _permuted_vector(layer, shape, order)
    if param != "weight" or kind == "embedding":
        if kind == "einsum" and param == "bias":
            target = tuple(layer.bias.shape) if layer.bias is not None else shape
            if math.prod(target) == math.prod(shape) and target != shape:
                return (lambda a, t=target: a.reshape(t)), target, f"bias reshaped to {target}"
        return _identity, shape, None
    rank = len(shape)
    if kind == "conv":
        axes = tuple(range(2, rank)) + (1, 0)
        return (lambda a: a.transpose(axes)), _moved(shape, axes), \
            f"weight (O, I, *k) {shape} -> kernel (*k, I, O)"
    if kind == "transpose":
        axes = tuple(range(2, rank)) + (1, 0)
        return (lambda a: a.transpose(axes)), _moved(shape, axes), \
            f"weight (I, O, *k) {shape} -> kernel (*k, O, I)"
    if kind == "depthwise":
        return _depthwise(layer, shape)
    if kind == "dense":
        return _dense(layer, shape, order)
    return _einsum(layer, shape)


def _identity(array):
    return array


def _moved(shape, axes):
    return tuple(shape[a] for a in axes)


def _axes_names(spatial):
    return {1: "L", 2: "H, W", 3: "D, H, W"}.get(len(spatial), "*spatial")


def _depthwise(layer, shape):
    multiplier = layer.depth_multiplier
    if len(shape) < 3 or shape[1] != 1 or shape[0] % multiplier:
        raise LayoutProblem(errors.ShapeMismatchError, (
            f"layer '{layer.name}' (depth_multiplier {multiplier}) takes a depthwise "
            f"PyTorch weight (C*m, 1, *k); the source's has shape {shape}"))
    channels, kernel = shape[0] // multiplier, shape[2:]
    axes = tuple(range(2, 2 + len(kernel))) + (0, 1)

    def transform(array):
        return array.reshape((channels, multiplier) + kernel).transpose(axes)

    return transform, kernel + (channels, multiplier), \
        f"depthwise weight (C*m, 1, *k) {shape} -> kernel (*k, C, m)"


def _map_order(layer, width, order):
    """`(channels, spatial, axes)` of a flattened map of `width` values."""
    channels = width // math.prod(order) if math.prod(order) else 0
    if channels * math.prod(order) != width:
        raise LayoutProblem(errors.ShapeMismatchError, (
            f"layer '{layer.name}' follows a Flatten of a {order} map, but the PyTorch "
            f"parameter has {width} inputs"))
    return channels


def _dense(layer, shape, order):
    if len(shape) != 2:
        raise LayoutProblem(errors.ShapeMismatchError, (
            f"layer '{layer.name}' (Dense) takes a PyTorch Linear weight (out, in); the "
            f"source's has shape {shape}"))
    out, width = shape
    if order is None:
        return (lambda a: a.T), (width, out), f"weight (out, in) {shape} transposed"
    channels = _map_order(layer, width, order)
    chw = (out, channels) + order
    hwc = (0,) + tuple(range(2, 2 + len(order))) + (1,)

    def transform(array):
        return array.reshape(chw).transpose(hwc).reshape(out, width).T

    axes = _axes_names(order)
    return transform, (width, out), (
        f"weight (out, in) {shape} transposed, its input rows permuted from PyTorch's "
        f"(C, {axes}) order to Keras' ({axes}, C) (a Flatten of a "
        f"{order + (channels,)} map)")


def _permuted_vector(layer, shape, order):
    """A normalization's per-feature vector over a flattened map: reordered."""
    (width,) = shape
    channels = _map_order(layer, width, order)
    axes = tuple(range(1, 1 + len(order))) + (0,)

    def transform(array):
        return array.reshape((channels,) + order).transpose(axes).reshape(width)

    names = _axes_names(order)
    return transform, shape, (f"vectors permuted from PyTorch's (C, {names}) order to "
                              f"Keras' ({names}, C) (a Flatten of a {order + (channels,)} map)")


def _einsum(layer, shape):
    """A Linear weight into an EinsumDense kernel, axes read from its equation:
    kernel axes the input shares are PyTorch's `in`, those the output has its
    `out`, each flattened in the kernel's order."""
    target = tuple(layer.kernel.shape)
    if len(shape) != 2:
        raise LayoutProblem(errors.ShapeMismatchError, (
            f"layer '{layer.name}' (EinsumDense) takes a PyTorch Linear weight (out, in); "
            f"the source's has shape {shape}"))
    inputs, rest = layer.equation.replace("...", "").split(",")
    kernel, output = rest.split("->")
    in_axes = [i for i, c in enumerate(kernel) if c in inputs and c not in output]
    out_axes = [i for i, c in enumerate(kernel) if c in output and c not in inputs]
    out, width = shape
    if (len(in_axes) + len(out_axes) != len(kernel)
            or math.prod(target[i] for i in in_axes) != width
            or math.prod(target[i] for i in out_axes) != out):
        raise LayoutProblem(errors.ShapeMismatchError, (
            f"layer '{layer.name}' (EinsumDense '{layer.equation}', kernel {target}) does "
            f"not take a PyTorch Linear weight (out, in) {shape}: its kernel's axes are "
            "not the input's contracted axes followed by output axes of those sizes"))
    grouped = tuple(target[i] for i in in_axes) + tuple(target[i] for i in out_axes)
    back = tuple(np.argsort(in_axes + out_axes))

    def transform(array):
        return array.T.reshape(grouped).transpose(back)

    return transform, target, f"weight (out, in) {shape} transposed and reshaped to {target}"


_VECTOR_KEEPING = _SHAPE_KEEPING + _NORMS
_SPATIAL = _CONV + _DEPTHWISE + _TRANSPOSE + _SEPARABLE + (
    keras.layers.MaxPooling1D, keras.layers.MaxPooling2D, keras.layers.MaxPooling3D,
    keras.layers.AveragePooling1D, keras.layers.AveragePooling2D,
    keras.layers.AveragePooling3D, keras.layers.ZeroPadding1D, keras.layers.ZeroPadding2D,
    keras.layers.ZeroPadding3D, keras.layers.UpSampling1D, keras.layers.UpSampling2D,
    keras.layers.UpSampling3D, keras.layers.Cropping1D, keras.layers.Cropping2D,
    keras.layers.Cropping3D, keras.layers.SpatialDropout1D, keras.layers.SpatialDropout2D,
    keras.layers.SpatialDropout3D)
_SEQUENTIAL = (keras.layers.Embedding, keras.layers.Dense, keras.layers.EinsumDense,
               keras.layers.MultiHeadAttention, keras.layers.RNN, keras.layers.Bidirectional)
_MERGE = (keras.layers.Add, keras.layers.Subtract, keras.layers.Multiply,
          keras.layers.Average, keras.layers.Maximum, keras.layers.Minimum,
          keras.layers.Concatenate)


def flattened_map(layer, model_inputs=()):
    """Whether `layer` (a Dense, or a normalization of a vector) reads a
    flattened feature map PyTorch flattens in another order.

    Walks back from the layer's input through layers that keep the shape
    (dropout, activations, normalization) to a `Flatten` (or a `Reshape` to
    a vector), then from the map it flattens to what made it: a convolution,
    pooling or padding (PyTorch's (C, H, W) map), or an image input, needs
    the permutation; an embedding, dense or attention layer's (steps,
    features) map is in the same order in both.

    Returns:
        `(spatial, cautions)`: the map's spatial shape `(H, W)` when its
        rows must be permuted, else None; and what could not be told.

    Raises:
        LayoutProblem: a Flatten of a map whose size is not known.
    """
    if not _layers.traced(layer):
        return None, []
    producer = _layers.producer(layer.input)
    while isinstance(producer, _VECTOR_KEEPING):
        producer = _layers.producer(producer.input)
    if producer is None:
        if isinstance(layer, keras.layers.Dense) and _from_nested_input(layer, model_inputs):
            return None, [
                f"layer '{layer.name}' (Dense) reads its model's input, and that model is "
                "nested: whether a flatten of a feature map feeds it (its PyTorch rows "
                "would then need the (C, H, W) -> (H, W, C) permutation) cannot be told; "
                "it was loaded transposed only"]
        return None, []
    if not _is_flatten(producer):
        return None, []
    if getattr(producer, "data_format", "channels_last") == "channels_first":
        return None, []
    shape = tuple(producer.input.shape[1:])
    if len(shape) < 2:
        return None, []
    if any(n is None for n in shape):
        raise LayoutProblem(errors.ShapeMismatchError, (
            f"layer '{layer.name}' follows a Flatten of a map of shape {shape}: its "
            "PyTorch rows must be permuted from (C, H, W) to (H, W, C) order, which "
            "needs the map's size; build the model with a fixed input size"))
    spatial = shape[:-1]
    if math.prod(spatial) == 1:
        return None, []
    source = _map_source(producer.input)
    if isinstance(source, _SPATIAL) or (source is None and len(shape) >= 3):
        return spatial, []
    if isinstance(source, _SEQUENTIAL) or source is None:
        return None, []
    return spatial, [
        f"layer '{layer.name}' follows a Flatten of a {shape} map made by "
        f"'{source.name}' ({type(source).__name__}), which is neither a convolution nor "
        "a sequence layer: loaded with its rows permuted from PyTorch's (C, H, W) order "
        "to Keras' (H, W, C), as for a convolution's map"]


def _is_flatten(layer):
    return isinstance(layer, keras.layers.Flatten) or (
        isinstance(layer, keras.layers.Reshape) and len(layer.target_shape) == 1)


def _map_source(tensor):
    """What made a feature map, past layers that keep its layout (None: an input)."""
    producer = _layers.producer(tensor)
    while isinstance(producer, _VECTOR_KEEPING + _MERGE):
        inputs = producer.input
        producer = _layers.producer(inputs[0] if isinstance(inputs, (list, tuple)) else inputs)
    return producer


def _from_nested_input(layer, model_inputs):
    """True when walking back from `layer` ends at an input that is not one of
    the target model's own (a nested model's: the walk cannot see its feed)."""
    tensor = layer.input
    producer = _layers.producer(tensor)
    while isinstance(producer, _VECTOR_KEEPING):
        tensor = producer.input
        producer = _layers.producer(tensor)
    return producer is None and not any(tensor is t for t in model_inputs)


def _producer(layer):
    """The layer whose output is `layer`'s input, or None."""
    return _layers.producer(layer.input) if _layers.traced(layer) else None


def warnings_for(layer):
    """What the PyTorch weights cannot carry, for a loaded `layer`: a list of
    messages (empty when it behaves as the PyTorch module would)."""
    found = []
    if isinstance(layer, keras.layers.Dense) and not _layers.traced(layer):
        found.append(
            f"layer '{layer.name}' (Dense) was loaded with its PyTorch weight transposed, "
            "but what feeds it cannot be told (a layer of a subclassed model): if it "
            "follows a flatten of a feature map, its input rows need PyTorch's (C, H, W) "
            "order permuted to (H, W, C); build the model functionally to have it done")
    # within 1% of PyTorch's: keras.applications' 1.001e-5 gives the same outputs
    if isinstance(layer, _NORMS) and not math.isclose(layer.epsilon, TORCH_EPSILON,
                                                      rel_tol=1e-2):
        found.append(
            f"layer '{layer.name}' ({type(layer).__name__}) has epsilon {layer.epsilon:g}; "
            f"PyTorch's default for its kind is {TORCH_EPSILON:g}, and a state_dict holds no "
            "epsilon: if the source used the default, build the layer with "
            f"epsilon={TORCH_EPSILON:g} or its outputs will differ")
    if isinstance(layer, _CONV + _DEPTHWISE):
        uneven = _asymmetric_padding(layer)
        if uneven:
            found.append(
                f"layer '{layer.name}' ({type(layer).__name__}, kernel "
                f"{tuple(layer.kernel_size)}, strides {tuple(layer.strides)}) is padded "
                f"asymmetrically ({uneven}); PyTorch pads a strided convolution "
                "symmetrically, so the same weights give shifted outputs: use "
                "padding='valid' after ZeroPadding with equal sides, as KerasHub's ResNet "
                "does")
    return found


def _asymmetric_padding(layer):
    kernel = tuple(layer.kernel_size)
    strides = tuple(layer.strides)
    rate = tuple(getattr(layer, "dilation_rate", (1,) * len(kernel)))
    if all(k == 1 for k in kernel) or all(s == 1 for s in strides):
        return None
    if layer.padding == "same":
        sizes = tuple(layer.input.shape[1:-1]) if _layers.traced(layer) else (None,) * len(kernel)
        for n, k, s, d in zip(sizes, kernel, strides, rate):
            if k == 1 or s == 1:
                continue
            if n is None:
                return "padding='same', which pads one more at the end for some input sizes"
            span = (k - 1) * d + 1
            total = max((math.ceil(n / s) - 1) * s + span - n, 0)
            if total % 2:
                return f"padding='same' pads {total // 2} before and {total - total // 2} after"
        return None
    producer = _producer(layer)
    if isinstance(producer, (keras.layers.ZeroPadding1D, keras.layers.ZeroPadding2D,
                             keras.layers.ZeroPadding3D)):
        sides = np.reshape(np.asarray(producer.padding, dtype=object), (-1, 2))
        if any(int(a) != int(b) for a, b in sides):
            return f"{type(producer).__name__}({producer.padding}) in front of it"
    return None
