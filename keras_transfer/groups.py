"""Layer groups that follow a model's architecture, bottom to top.

Discriminative learning rates (`fine_tune`, `discriminative_optimizer`) and
gradual unfreezing (`GradualUnfreezing`, ULMFiT) work on groups of layers:
the lower a group, the more general its features, the smaller its rate, the
later it thaws. `layer_groups` finds them from the structure:

- a transformer stack (layers holding weighted sublayers, as KerasHub's
  `TransformerEncoder` blocks): the embeddings and what precedes the first
  block are the bottom group, then one group per block (what follows the
  last block, a pooler, joins it);
- a CNN: one group per stage, a stage being the layers that keep one spatial
  resolution (a stride or pooling starts the next), as keras.applications'
  and KerasHub's CNNs are staged; where the sizes are not known (an input of
  `None` x `None`), KerasHub's and keras.applications' stage names
  (`stack0_...`, `conv2_block1_...`) say it;
- anything else: a group starting at each layer with a kernel (normalization
  joins the layer before it), merged in order into at most `max_groups`.
"""

import re

import numpy as np

from keras_transfer import _layers
from keras_transfer import freezing

MAX_GROUPS = 3  # groups for a plain stack (fastai's CNN splitter: 2-3)
_STAGE_NAME = re.compile(r"^(stack\d+|conv\d+(?=_block)|stage\d+|layer\d+|block\d+)")
_KERNELS = ("kernel", "embeddings", "depthwise_kernel")


def layer_groups(model, freeze, *, max_groups=MAX_GROUPS):
    """The layer groups of the part of `model` that `freeze` selects, bottom to top.

    Args:
        model: a `keras.Model`.
        freeze: the base, as `keras_transfer.select_layers` takes it (an int,
            layers or names, a pattern; a nested base model as `[base]`).
        max_groups: the most groups for a plain stack of layers (stages and
            transformer blocks are never merged).

    Returns:
        A list of groups, each a list of layer names, bottom first: what
        `fine_tune(groups=...)`, `discriminative_optimizer(groups=...)` and
        `GradualUnfreezing(blocks=...)` take. Layers without weights are left
        out.

    Raises:
        LayerSelectionError: `freeze` does not fit the model.

    Example:

    ```python
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Conv2D(8, 3, padding="same", name="a")(inputs)
    x = keras.layers.Conv2D(8, 3, strides=2, padding="same", name="b")(x)
    x = keras.layers.Conv2D(8, 3, padding="same", name="c")(x)
    outputs = keras.layers.Dense(2, name="head")(keras.layers.Flatten()(x))
    model = keras.Model(inputs, outputs)
    keras_transfer.layer_groups(model, ["a", "b", "c"])   # [['a'], ['b', 'c']]
    ```
    """
    layers = _weighted(_layers.leaves(freezing.select_layers(model, freeze)))
    groups = (_transformer_blocks(layers) or _stages_by_resolution(layers)
              or _stages_by_name(layers) or _plain(layers, max_groups))
    return [[layer.name for layer in group] for group in groups]


def _weighted(layers):
    seen, out = set(), []
    for layer in layers:
        if layer.weights and id(layer) not in seen:
            seen.add(id(layer))
            out.append(layer)
    return out


def _is_block(layer):
    """A layer holding weighted sublayers of its own (a transformer block)."""
    subs = layer._flatten_layers(include_self=False)  # noqa: SLF001 (see _layers.with_sublayers)
    return sum(1 for sub in subs if sub.weights) >= 2


def _transformer_blocks(layers):
    starts = [i for i, layer in enumerate(layers) if _is_block(layer)]
    if len(starts) < 2:
        return None
    groups = [layers[:starts[0]]] if starts[0] else []
    bounds = starts + [len(layers)]
    groups += [layers[a:b] for a, b in zip(bounds, bounds[1:])]
    return groups


def _resolution(layer):
    """A weighted layer's output spatial size, "flat" for a vector, or None."""
    if not _layers.traced(layer):
        return None
    shape = tuple(layer.output.shape)
    if len(shape) <= 2:
        return "flat"
    spatial = shape[1:-1]
    return None if any(n is None for n in spatial) else spatial


def _stages_by_resolution(layers):
    keys = [_resolution(layer) for layer in layers]
    if any(key is None for key in keys) or len({k for k in keys if k != "flat"}) < 2:
        return None
    return _runs(layers, keys)


def _stages_by_name(layers):
    keys = []
    for layer in layers:
        match = _STAGE_NAME.match(layer.name)
        keys.append(match[1] if match else None)
    named = {k for k in keys if k is not None}
    if len(named) < 2:
        return None
    # a layer without a stage name joins the stage before it; before the
    # first stage, the stem is a group of its own
    filled, current = [], "stem"
    for key in keys:
        current = key if key is not None else current
        filled.append(current)
    return _runs(layers, filled)


def _runs(layers, keys):
    groups, last = [], object()
    for layer, key in zip(layers, keys):
        if key != last:
            groups.append([])
            last = key
        groups[-1].append(layer)
    return groups


def _plain(layers, max_groups):
    blocks = []
    for layer in layers:
        has_kernel = any(v.name in _KERNELS for v in layer.weights)
        if has_kernel or not blocks:
            blocks.append([])
        blocks[-1].append(layer)
    if not blocks:
        return []
    chunks = np.array_split(np.arange(len(blocks)), min(len(blocks), max_groups))
    return [[layer for i in chunk for layer in blocks[i]] for chunk in chunks]
