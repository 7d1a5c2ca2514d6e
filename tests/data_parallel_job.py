"""Two-phase training on one device and under keras.distribution.DataParallel (JAX).

usage: XLA_FLAGS=--xla_force_host_platform_device_count=2 KERAS_BACKEND=jax \
       python data_parallel_job.py OUT.json MODE...   (callback, discriminative, gradual)
Writes, per mode and run, the per-epoch losses and states, whether the base
stayed bit-identical in phase 1, and the largest weight difference between
the one-device run and the DataParallel run.
"""

import json
import os
import sys

import jax
import keras
import numpy as np

import keras_transfer as kt

sys.path.insert(0, os.path.dirname(__file__))
from helpers import randomize, tiny_model  # noqa: E402

out, modes = sys.argv[1], sys.argv[2:]
rng = np.random.default_rng(0)
x = rng.normal(size=(128, 4)).astype("float32")
y = (x[:, 0] > 0).astype("int32") + (x[:, 1] > 0).astype("int32")
BASE = ["Dense_a", "Bn", "Dense_b"]


def callback_for(mode):
    if mode == "gradual":
        return kt.GradualUnfreezing(blocks=[["Dense_a"], ["Bn", "Dense_b"]], start_epoch=2,
                                    learning_rates=[1e-2, 5e-3, 1e-3], verbose=0)
    return kt.TwoPhaseSchedule(freeze=3, switch_epoch=2, head_lr=1e-2, finetune_lr=1e-3,
                               verbose=0)


def train(mode):
    keras.utils.set_random_seed(0)
    model = randomize(tiny_model())
    optimizer = keras.optimizers.Adam(1e-2)
    if mode == "discriminative":
        optimizer = kt.discriminative_optimizer(model, groups=[BASE], learning_rate=1e-2,
                                                multipliers=[0.1])
    model.compile(optimizer=optimizer,
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    start = [keras.ops.convert_to_numpy(v).copy() for v in model.layers[0].weights]
    seen = {}

    class Watch(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            seen[epoch] = [keras.ops.convert_to_numpy(v).copy() for v in self.model.layers[0].weights]

    history = model.fit(x, y, batch_size=32, epochs=4, shuffle=False, verbose=0,
                        validation_data=(x, y), callbacks=[callback_for(mode), Watch()]).history
    weights = [keras.ops.convert_to_numpy(v) for v in model.weights]
    sharding = str(model.layers[0].kernel.value.sharding)
    return weights, {
        "loss": history["loss"], "val_loss": history["val_loss"],
        "state": history.get("phase") or history.get("unfrozen_blocks"),
        "phase1_frozen": all(np.array_equal(a, b) for a, b in zip(start, seen[1])),
        "base_moved": not np.array_equal(start[0], seen[3][0]),
        "devices": len(jax.devices()), "kernel_sharding": sharding}


results = {}
for mode in modes:
    one, info_one = train(mode)
    distribution = keras.distribution.DataParallel(devices=jax.devices())
    with distribution.scope():
        two, info_two = train(mode)
    diff = max(float(np.max(np.abs(a - b))) for a, b in zip(one, two))
    results[mode] = {"one_device": info_one, "data_parallel": info_two,
                     "max_weight_difference": diff}
with open(out, "w") as f:
    json.dump(results, f, indent=1)
