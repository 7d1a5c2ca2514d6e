"""Counts JAX compilations: `fine_tune` against the guide's recipe by hand.

A small model (Dense -> BatchNormalization -> Dense base, Dense head), 1 frozen
epoch and 2 unfrozen, BatchNormalization kept in inference mode: the same work
in both arms, as `guide_frozen_bn` and `fine_tune` in `guide_recipe.py`. Prints,
per arm, how many `jit(...)` compilations JAX logged (`jax_log_compiles`), by
name: both recipes should compile `train_step` twice (once per phase). Each arm
runs in a fresh process (JAX caches compilations).

Usage:
  python bench/jax_compiles.py
"""

import argparse
import collections
import io
import json
import logging
import os
import re

os.environ["KERAS_BACKEND"] = "jax"  # before _common imports Keras

import _common  # noqa: E402 (bench/, beside this script)

ARMS = ("by_hand", "fine_tune")


def arm(name):
    import jax
    import keras
    import numpy as np

    import keras_transfer as kt

    jax.config.update("jax_log_compiles", True)
    log = io.StringIO()
    logging.getLogger("jax").addHandler(logging.StreamHandler(log))
    logging.getLogger("jax").setLevel(logging.WARNING)
    keras.utils.set_random_seed(0)
    base = keras.Sequential([keras.layers.Dense(16, activation="relu"),
                             keras.layers.BatchNormalization(), keras.layers.Dense(16)],
                            name="base")
    inputs = keras.Input((8,))
    model = keras.Model(inputs, keras.layers.Dense(3)(base(inputs, training=False)))
    x = np.random.rand(64, 8).astype("float32")
    y = np.random.randint(0, 3, 64)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    built = len(log.getvalue())  # count what training compiles, not the model's build
    if name == "by_hand":
        _common.guide_by_hand(model, base, x, y, batch_size=16, loss=loss, frozen_bn=True)
    else:
        kt.fine_tune(model, (x, y), freeze=[base], epochs=3, freeze_epochs=1, base_lr=1e-3,
                     train_batchnorm=False, batch_size=16, loss=loss, verbose=0)
    names = re.findall(r"Compiling (jit\([^)]*\))", log.getvalue()[built:])
    print(json.dumps({"arm": name, "compiles": len(names),
                      "by_name": dict(sorted(collections.Counter(names).items()))}))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--arm", choices=ARMS)
    args = parser.parse_args()
    if args.arm:
        return arm(args.arm)
    _common.interleaved(__file__, ARMS, 1)  # prints each arm's counts


if __name__ == "__main__":
    main()
