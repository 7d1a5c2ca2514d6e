"""Files written by tf_keras (Keras 2), for the by-name loader's tests."""

import numpy as np
import tf_keras


def randomize_tf_keras(model, seed=3):
    """Moves every weight of a tf_keras model away from its initial value,
    scaled to it (BN variances stay positive, counts stay whole), so a weight
    left unloaded in a target changes the output and deep nets stay finite."""
    rng = np.random.default_rng(seed)
    values = []
    for weight, value in zip(model.weights, model.get_weights()):
        if value.dtype.kind in "iu":  # Normalization's sample count
            values.append(value + rng.integers(1, 100, size=value.shape).astype(value.dtype))
            continue
        scale = value.std() if value.size > 1 and value.std() > 0 else 0.1
        value = value + rng.normal(size=value.shape).astype(value.dtype) * scale
        if "variance" in weight.name:
            value = np.abs(value) + 0.5
        values.append(value)
    model.set_weights(values)
    return model


def tf_keras_model(nested=False):
    """tests/helpers.tiny_model's architecture, built by tf_keras."""
    layers = [
        tf_keras.layers.Dense(8, activation="relu", name="Dense_a"),
        tf_keras.layers.BatchNormalization(name="Bn"),
        tf_keras.layers.Dense(6, activation="relu", name="Dense_b"),
    ]
    if nested:
        base = tf_keras.Sequential([tf_keras.Input((4,)), *layers], name="base")
        return tf_keras.Sequential([tf_keras.Input((4,)), base, tf_keras.layers.Dense(3, name="Head")])
    return tf_keras.Sequential([tf_keras.Input((4,)), *layers, tf_keras.layers.Dense(3, name="Head")])
