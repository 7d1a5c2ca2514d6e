"""Cached features for phase 1 (the seed's "CNN codes").

While the base is frozen and nothing random happens before the cut, the base
maps each image to the same features every epoch. Running it once and training
the head on the cached features gives the same head as the plain frozen `fit`
(same seed and data order, up to float rounding) for a fraction of the time;
phase 2 then trains the rejoined model as usual, since the head's layers are
the model's own layers.
"""

import keras
import numpy as np

from keras_transfer import freezing
from keras_transfer import optimizers
from keras_transfer.errors import LayerSelectionError

_RANDOM_LAYERS = ("Dropout", "SpatialDropout1D", "SpatialDropout2D", "SpatialDropout3D",
                  "GaussianNoise", "GaussianDropout", "AlphaDropout")


def split_at(model, cut):
    """Splits a model into a base (the first `cut` layers) and a head (the rest).

    Args:
        model: a Sequential model, or a functional model whose layers form a
            chain.
        cut: the number of top-level layers in the base (what `freeze=N`
            freezes), or the name of the base's last layer.

    Returns:
        `(base, head)`: two `keras.Model`s made of `model`'s own layers, so
        training the head trains `model`.

    Raises:
        LayerSelectionError: a cut outside the model.
    """
    layers = model.layers
    if isinstance(cut, str):
        names = [layer.name for layer in layers]
        if cut not in names:
            raise LayerSelectionError(f"No layer named '{cut}' in model '{model.name}'.")
        cut = names.index(cut) + 1
    if not 0 < cut < len(layers):
        raise LayerSelectionError(
            f"cut={cut} must leave at least one layer on each side of model "
            f"'{model.name}' ({len(layers)} layers).")
    base = keras.Sequential([keras.Input(model.input_shape[1:]), *layers[:cut]],
                            name=f"{model.name}_base")
    head = keras.Sequential([keras.Input(base.output_shape[1:]), *layers[cut:]],
                            name=f"{model.name}_head")
    return base, head


def check_cacheable(base):
    """Refuses a base whose outputs could differ between epochs.

    Raises:
        ValueError: the base has trainable weights, or a random layer
            (dropout, noise, augmentation) that would make cached features
            wrong.
    """
    for layer in base.layers:
        kind = type(layer).__name__
        if kind in _RANDOM_LAYERS or kind.startswith("Random"):
            raise ValueError(
                f"Layer '{layer.name}' ({kind}) before the cut is random in training: "
                "cached features would freeze one draw of it. Move the cut below it, "
                "or train phase 1 without caching.")
    if base.trainable_weights:
        names = sorted({v.path.split("/")[-2] for v in base.trainable_weights})
        raise ValueError(
            f"The base has trainable weights ({names}): cached features would go "
            "stale as they train. Freeze the base first (keras_transfer.freeze).")


def cache_features(base, data, batch_size=256):
    """Runs the base once over `data`.

    Args:
        base: the frozen base model.
        data: `(x, y)` arrays, or a finite `tf.data.Dataset` of `(x, y)`
            batches (iterated once; its order is the order cached).
        batch_size: batch size for arrays.

    Returns:
        `(features, labels)` as numpy arrays.
    """
    if isinstance(data, tuple):
        x, y = data
        return base.predict(x, batch_size=batch_size, verbose=0), np.asarray(y)
    features, labels = [], []
    for x, y in data:
        features.append(keras.ops.convert_to_numpy(base(x, training=False)))
        labels.append(keras.ops.convert_to_numpy(y))
    return np.concatenate(features), np.concatenate(labels)


def fit_head_cached(model, train, *, cut, epochs, validation=None, optimizer="adam",
                    learning_rate=1e-3, loss="sparse_categorical_crossentropy",
                    metrics=("accuracy",), batch_size=256, shuffle=True, callbacks=None,
                    verbose=1, initial_epoch=0):
    """Phase 1 on cached features: freezes the base, caches it, fits the head.

    Args:
        model: the target model (Sequential or a chain).
        train: `(x, y)` arrays or a finite `tf.data.Dataset` of batches.
        cut: the base's number of top-level layers (or its last layer's name).
        epochs: the epoch to train up to (as `fit`'s `epochs`).
        validation: optional validation data, cached the same way.
        optimizer, learning_rate: the head's optimizer (a fresh instance).
        loss, metrics: as for `compile`.
        batch_size, shuffle: for the head's `fit` on the cached arrays.
        callbacks, verbose, initial_epoch: as for `fit`.

    Returns:
        The head's `History`. The model's head layers hold the trained weights.

    Raises:
        ValueError: the base is not cacheable (see `check_cacheable`).

    Example:

    ```python
    keras_transfer.fit_head_cached(model, (x, y), cut=12, epochs=5)
    ```
    """
    base, head = split_at(model, cut)
    freezing.freeze(model, upto=len(base.layers))
    check_cacheable(base)
    features, labels = cache_features(base, train, batch_size)
    val = cache_features(base, validation, batch_size) if validation is not None else None
    head.compile(optimizer=optimizers.fresh_optimizer(optimizer, learning_rate), loss=loss,
                 metrics=list(metrics) if metrics else None)
    return head.fit(features, labels, validation_data=val, epochs=epochs,
                    initial_epoch=initial_epoch, batch_size=batch_size, shuffle=shuffle,
                    callbacks=callbacks, verbose=verbose)
