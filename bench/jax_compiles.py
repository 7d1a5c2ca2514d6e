"""Counts JAX compilations: `fine_tune` against the guide's recipe by hand.

A small model (Dense -> BatchNormalization -> Dense base, Dense head), 1 frozen
epoch and 2 unfrozen, BatchNormalization kept in inference mode: the same work
in both arms, as `guide_frozen_bn` and `fine_tune` in `guide_recipe.py`. Prints,
per arm, how many `jit(...)` compilations JAX logged (`jax_log_compiles`), by
name: both recipes should compile `train_step` twice (once per phase).

Usage:
  python bench/jax_compiles.py
"""

import collections
import io
import logging
import os
import re
import subprocess
import sys

ARMS = ("by_hand", "fine_tune")


def arm(name):
    os.environ["KERAS_BACKEND"] = "jax"
    import jax

    jax.config.update("jax_log_compiles", True)
    log = io.StringIO()
    logging.getLogger("jax").addHandler(logging.StreamHandler(log))
    logging.getLogger("jax").setLevel(logging.WARNING)
    import keras
    import numpy as np

    import keras_transfer as kt

    keras.utils.set_random_seed(0)
    base = keras.Sequential([keras.layers.Dense(16, activation="relu"),
                             keras.layers.BatchNormalization(), keras.layers.Dense(16)],
                            name="base")
    inputs = keras.Input((8,))
    model = keras.Model(inputs, keras.layers.Dense(3)(base(inputs, training=False)))
    x = np.random.rand(64, 8).astype("float32")
    y = np.random.randint(0, 3, 64)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    log.truncate(0)
    if name == "by_hand":
        base.trainable = False
        model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=loss)
        model.fit(x, y, batch_size=16, epochs=1, verbose=0)
        base.trainable = True
        for layer in base.layers:
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.trainable = False
        model.compile(optimizer=keras.optimizers.Adam(1e-5), loss=loss)
        model.fit(x, y, batch_size=16, epochs=3, initial_epoch=1, verbose=0)
    else:
        kt.fine_tune(model, (x, y), freeze=[base], epochs=3, freeze_epochs=1, base_lr=1e-3,
                     train_batchnorm=False, batch_size=16, loss=loss, verbose=0)
    names = re.findall(r"Compiling (jit\([^)]*\))", log.getvalue())
    print(name, len(names), dict(sorted(collections.Counter(names).items())))


def main():
    if len(sys.argv) > 1:
        return arm(sys.argv[1])
    for name in ARMS:  # each in a fresh process: JAX caches compilations
        subprocess.run([sys.executable, __file__, name], check=True,
                       env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})


if __name__ == "__main__":
    main()
