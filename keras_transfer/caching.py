"""Cached features for phase 1 (the seed's "CNN codes").

While the base is frozen and nothing random happens before the cut, the base
maps each image to the same features every epoch. Running it once and training
the head on the cached features gives the same head as the plain frozen `fit`
(same seed and data order, up to float rounding) for a fraction of the time;
phase 2 then trains the rejoined model as usual, since the head's layers are
the model's own layers.
"""

import inspect
import numbers
import warnings

import keras
import numpy as np

from keras_transfer import _data
from keras_transfer import _layers
from keras_transfer import errors
from keras_transfer import freezing
from keras_transfer import optimizers

# Layers that are random in training by their kind. Keras' own random layers
# (augmentation, dropout, noise) also hold a `keras.random.SeedGenerator`, which
# is checked too; a user layer that draws from Keras' global seed holds none,
# which is why `check_cacheable` also compares outputs.
_RANDOM_TYPES = (keras.layers.Dropout, keras.layers.GaussianNoise,
                 keras.layers.GaussianDropout, keras.layers.AlphaDropout)
_SAMPLE_SIZE = 16  # examples in the behavioural check
_OWNER = "fit_head_cached"


def split_at(model, cut):
    """Splits a model into a base (everything up to the cut) and a head (the rest).

    The base is the model's own graph from its inputs to the cut, whatever it
    holds (preprocessing, augmentation, a nested base model); the head, the
    top-level layers after the cut, must form one chain.

    Args:
        model: a functional or Sequential model (built on a `keras.Input`).
        cut: the base's last top-level layer: the number of top-level layers
            in the base (what `freeze=N` freezes), the layer or its name, or a
            selection as `freeze=` takes it (`[base_model]`, a pattern): its
            last top-level layer, a nested model holding a selected layer
            included.

    Returns:
        `(base, head)`: two `keras.Model`s made of `model`'s own layers, so
        training the head trains `model`.

    Raises:
        LayerSelectionError: a cut outside the model, a model not built on a
            `keras.Input`, or a head whose layers are not one chain.
    """
    layers = model.layers
    index = cut_index(model, cut)
    if not 0 < index < len(layers):
        raise errors.LayerSelectionError(
            f"cut={cut!r} must leave at least one layer on each side of model "
            f"'{model.name}' ({len(layers)} top-level layers; the cut is after layer "
            f"{index}).")
    head_layers = layers[index:]
    if not all(_layers.traced(layer) for layer in head_layers):
        raise errors.LayerSelectionError(
            f"Model '{model.name}' cannot be cut: it was not built on a keras.Input (a "
            "subclassed model, or a Sequential model never given an input shape), so "
            "its base cannot be separated. Train phase 1 without caching.")
    previous = layers[index - 1]
    for layer in head_layers:
        if isinstance(layer.input, (list, tuple, dict)) or \
                _layers.producer(layer.input) is not previous:
            raise errors.LayerSelectionError(
                f"Model '{model.name}' cannot be cut at '{layers[index - 1].name}': its "
                f"layers after the cut do not form one chain (layer '{layer.name}' does "
                f"not take the output of '{previous.name}' alone). Cache features for a "
                "model whose head is a chain, or train phase 1 without caching.")
        previous = layer
    features = head_layers[0].input
    try:
        base = keras.Model(model.inputs, features, name=f"{model.name}_base")
        x = head_input = keras.Input(tuple(features.shape[1:]), dtype=features.dtype)
        for layer in head_layers:
            x = layer(x)
        head = keras.Model(head_input, x, name=f"{model.name}_head")
    except (ValueError, TypeError) as e:
        raise errors.LayerSelectionError(
            f"Model '{model.name}' cannot be cut after '{layers[index - 1].name}' "
            f"({type(e).__name__}: {e}). Train phase 1 without caching.") from e
    return base, head


def cut_index(model, cut):
    """How many top-level layers of `model` a cut puts in the base (see `split_at`).

    Raises:
        LayerSelectionError: the cut names no layer of `model`.
    """
    layers = model.layers
    if isinstance(cut, bool):
        raise errors.LayerSelectionError(f"cut={cut!r} is not a layer count or a layer.")
    if isinstance(cut, numbers.Integral):
        return int(cut)
    if isinstance(cut, (str, keras.layers.Layer)):
        last = _layers.find_layer(model, cut, argument=f"cut={cut!r}", top_level=True)
        return next(i for i, layer in enumerate(layers) if layer is last) + 1
    selected = {id(layer) for layer in freezing.select_layers(model, cut)}
    holding = [i for i, layer in enumerate(layers)
               if any(id(sub) in selected for sub in _layers.with_sublayers(layer))]
    if not holding:
        raise errors.LayerSelectionError(f"cut={cut!r} selects no layer of model '{model.name}'.")
    return holding[-1] + 1


def _sublayers(layer, trail=()):
    """Yields `(sublayer, trail)` for every layer below `layer`, at any depth.

    `trail` is the names of the layers between `layer` and the sublayer.
    """
    # Going around Keras: it has no public list of a layer's sublayers (a
    # plain layer holding a Dropout has no `.layers`); `_flatten_layers` is
    # what Keras itself walks for `weights` and `trainable`.
    # tests/test_caching.py (a Dropout inside a plain layer) fails if it changes.
    for sub in layer._flatten_layers(include_self=False, recursive=False):  # noqa: SLF001
        yield sub, trail
        yield from _sublayers(sub, trail + (sub.name,))


def _where(trail):
    return f", in {' > '.join(trail)}" if trail else ""


def _is_random_kind(layer):
    return isinstance(layer, _RANDOM_TYPES) or any(
        cls.__name__.startswith("Random") and cls.__module__.startswith("keras.")
        for cls in type(layer).__mro__)


def _owners(base, variables):
    """Each variable's innermost owning layer, as `{id(variable): (layer, trail)}`."""
    wanted = {id(v) for v in variables}
    owners = {}
    for layer, trail in _sublayers(base):  # pre-order: an inner owner comes last
        for v in layer.variables:
            if id(v) in wanted:
                owners[id(v)] = (layer, trail)
    return owners


def check_cacheable(base, sample=None, *, without_augmentation=False):
    """Refuses a base whose outputs could differ between epochs.

    The plain frozen `fit` calls the base with `training=True`; caching calls
    it once with `training=False`. Cached features are right only when both
    give the same output every time. Checked, at any depth (nested models,
    layers inside layers):

    - by kind: `Dropout` and its subclasses, `GaussianNoise`,
      `GaussianDropout`, `AlphaDropout`, Keras' `Random*` augmentation
      layers, and any layer holding a `keras.random.SeedGenerator`;
    - trainable weights (cached features would go stale as they train);
    - by behaviour, when `sample` is given: the base called on it with
      `training=True` twice and with `training=False` must agree. This
      catches user layers that draw from Keras' global seed or compute
      something else while training.

    With `without_augmentation=True`, random layers are accepted (the cache
    is computed in inference mode, where augmentation and dropout do
    nothing) and returned, so the caller can say that phase 1 then trains
    without them; the behavioural check is then not made.

    Args:
        base: the base model (the layers before the cut).
        sample: optional input batch for the behavioural check.
        without_augmentation: accept random layers (see above).

    Returns:
        The names of the random layers found (with `without_augmentation`).

    Raises:
        LayerSelectionError: the base is not cacheable; the message names the
            layer (or, for behaviour, the layers taking `training`) and says
            where to cut instead.

    Example:

    ```python
    base, head = keras_transfer.caching.split_at(model, 12)
    keras_transfer.freeze(base)
    keras_transfer.caching.check_cacheable(base, x[:16])
    ```
    """
    everything = list(_sublayers(base))
    random = {}
    for layer, trail in everything:
        seeded = [v for v in vars(layer).values() if isinstance(v, keras.random.SeedGenerator)]
        if _is_random_kind(layer) or seeded:
            random.setdefault(id(layer), (layer, trail))
    seeds = [v for v in base.variables if id(v) not in {id(w) for w in base.weights}]
    for layer, trail in _owners(base, seeds).values():
        random.setdefault(id(layer), (layer, trail))
    if random and not without_augmentation:
        named = [f"'{layer.name}' ({type(layer).__name__}{_where(trail)})"
                 for layer, trail in random.values()]
        raise errors.LayerSelectionError(
            f"Layer{'s' if len(named) > 1 else ''} {', '.join(named)} before the cut "
            f"{'are' if len(named) > 1 else 'is'} random in training (augmentation, "
            "dropout, noise): cached features are computed once and cannot see it. Pass "
            "cache_features='without_augmentation' (fit_head_cached(..., "
            "without_augmentation=True)) to cache features without it, phase 1 then "
            "training without augmentation; or move the cut below it; or train phase 1 "
            "without caching.")
    if base.trainable_weights:
        names = sorted({layer.name for layer, _ in _owners(base, base.trainable_weights).values()})
        raise errors.LayerSelectionError(
            f"The base has trainable weights (in {names}): cached features would go "
            "stale as they train. Freeze the base first (keras_transfer.freeze).")
    if sample is not None and not random:
        _check_behaviour(base, sample, everything)
    return [layer.name for layer, _ in random.values()]


def _check_behaviour(base, sample, everything):
    # A layer may update state when called in training (spectral normalization,
    # a user's running statistics): the probe must leave the base as it was.
    saved = [(v, keras.ops.convert_to_numpy(v)) for v in base.variables]
    try:
        outputs = [keras.ops.convert_to_numpy(base(sample, training=training))
                   for training in (True, True, False)]
    finally:
        for variable, value in saved:
            variable.assign(value)
    if all(np.allclose(outputs[0], other, rtol=1e-5, atol=1e-6) for other in outputs[1:]):
        return
    # A frozen BatchNormalization runs in inference mode whatever `training`
    # says; containers only pass `training` on.
    candidates = [layer.name for layer, _ in everything
                  if "training" in inspect.signature(layer.call).parameters
                  and not isinstance(layer, (keras.Model, keras.layers.BatchNormalization))]
    raise errors.LayerSelectionError(
        f"The base '{base.name}' gives other outputs with training=True (as the plain "
        "frozen fit calls it) than with training=False (as caching calls it), or "
        "differs between two training=True calls: cached features would be wrong. "
        f"The candidates, layers whose call takes `training`: {candidates}. Move the "
        "cut below them, make them ignore `training` when frozen, or train phase 1 "
        "without caching.")


def cache_features(base, data, batch_size=256):
    """Runs the base once over `data`.

    Args:
        base: the frozen base model.
        data: `(x, y)` or `(x, y, sample_weight)` arrays, or finite data
            that yields such batches (a `tf.data.Dataset`; iterated once,
            its order is the order cached).
        batch_size: batch size for arrays.

    Returns:
        The cached data in the shape it came: `(features, labels)`, or
        `(features, labels, sample_weight)`, as numpy arrays.

    Raises:
        ArgumentTypeError, ArgumentError: `data` is neither arrays nor
            batches of them.
    """
    _data.check(data, _OWNER)
    if _data.is_arrays(data):
        x, y, weight = _data.unpack_arrays(data, _OWNER)
        return _cached(base.predict(x, batch_size=batch_size, verbose=0), np.asarray(y),
                       None if weight is None else np.asarray(weight))
    features, labels, weights = [], [], []
    for batch in data:
        x, y, weight = _data.unpack_batch(batch, _OWNER)
        features.append(keras.ops.convert_to_numpy(base(x, training=False)))
        labels.append(keras.ops.convert_to_numpy(y))
        weights.append(None if weight is None else keras.ops.convert_to_numpy(weight))
    if not features:
        raise errors.ArgumentError(f"{_OWNER}: the data is empty: there is nothing to cache.")
    if any(w is None for w in weights) and not all(w is None for w in weights):
        raise errors.ArgumentError(
            f"{_OWNER}: some batches have sample weights and some do not.")
    return _cached(np.concatenate(features), np.concatenate(labels),
                   None if weights[0] is None else np.concatenate(weights))


def _cached(features, labels, weights):
    return (features, labels) if weights is None else (features, labels, weights)


def fit_head_cached(model, train, *, cut, epochs, validation=None, optimizer="adam",
                    learning_rate=1e-3, loss="sparse_categorical_crossentropy",
                    metrics=("accuracy",), batch_size=256, shuffle=True, callbacks=None,
                    verbose=1, initial_epoch=0, without_augmentation=False):
    """Phase 1 on cached features: freezes the base, caches it, fits the head.

    Args:
        model: the target model: functional or Sequential, its head after
            the cut a chain of layers.
        train: `(x, y)` or `(x, y, sample_weight)` arrays, or finite data
            yielding such batches (a `tf.data.Dataset`).
        cut: where the base ends (see `split_at`): its number of top-level
            layers, its last layer or that layer's name, or a selection as
            `freeze=` takes it (`[base_model]`). Deterministic layers before
            it (Rescaling, Normalization, Resizing) are cached with it.
        epochs: the epoch to train up to (as `fit`'s `epochs`).
        validation: optional validation data, cached the same way.
        optimizer, learning_rate: the head's optimizer (a fresh instance).
        loss, metrics: as for `compile`.
        batch_size, shuffle: for the head's `fit` on the cached arrays.
        callbacks, verbose, initial_epoch: as for `fit`.
        without_augmentation: accept random layers before the cut
            (augmentation): the features are cached without them, and a
            `TransferWarning` says that phase 1 then trains without
            augmentation. By default they are refused.

    Returns:
        The head's `History`. The model's head layers hold the trained weights.

    Raises:
        LayerSelectionError: the cut does not fit the model, or the base is
            not cacheable (see `check_cacheable`): random layers before the
            cut are named, with what to do.
        ArgumentTypeError: `train` or `validation` is neither `(x, y)` nor a
            dataset of batches.

    Example:

    ```python
    history = keras_transfer.fit_head_cached(model, (x, y), cut=12, epochs=2, verbose=0)
    len(history.epoch)   # 2
    ```
    """
    base, head = split_at(model, cut)
    _data.check(train, _OWNER)
    if validation is not None:
        _data.check(validation, _OWNER, "validation")
    sample = _data.first_inputs(train, _SAMPLE_SIZE, _OWNER)
    restore = _layers.snapshot_trainable(model)
    freezing.freeze(model, upto=cut_index(model, cut))
    try:
        dropped = check_cacheable(base, sample, without_augmentation=without_augmentation)
    except errors.LayerSelectionError:
        restore()  # a refusal leaves the model as it was
        raise
    if dropped:
        warnings.warn(
            f"fit_head_cached: features are cached without {dropped} (random in "
            "training): phase 1 trains the head without augmentation.",
            errors.TransferWarning, stacklevel=2)
    features, labels, weights = _data.unpack_arrays(
        cache_features(base, train, batch_size), _OWNER)
    val = cache_features(base, validation, batch_size) if validation is not None else None
    head.compile(optimizer=optimizers.fresh_optimizer(optimizer, learning_rate), loss=loss,
                 metrics=list(metrics) if metrics else None)
    return head.fit(features, labels, sample_weight=weights, validation_data=val,
                    epochs=epochs,
                    initial_epoch=initial_epoch, batch_size=batch_size, shuffle=shuffle,
                    callbacks=callbacks, verbose=verbose)
