"""Two-phase training in two JAX processes (jax.distributed on 127.0.0.1), or in one.

usage: KERAS_BACKEND=jax python multiprocess_job.py OUT.json single
       KERAS_BACKEND=jax python multiprocess_job.py OUT.json PROCESS_ID PORT   (0 and 1)
In the two-process run each process owns one CPU device and feeds its half of
every global batch of 32 (keras.distribution.DataParallel over both devices);
the single run trains on the whole batches. Each writes its per-epoch losses,
phases, whether the base stayed bit-identical in phase 1, and every weight.
"""

import json
import os
import sys

import jax
import keras
import numpy as np

out, who = sys.argv[1], sys.argv[2]
if who != "single":
    keras.distribution.initialize(job_addresses=f"127.0.0.1:{sys.argv[3]}",
                                  num_processes=2, process_id=int(who))

import keras_transfer as kt  # noqa: E402

sys.path.insert(0, os.path.dirname(__file__))
from helpers import randomize, tiny_model  # noqa: E402

rng = np.random.default_rng(0)
x = rng.normal(size=(128, 4)).astype("float32")
y = (x[:, 0] > 0).astype("int32") + (x[:, 1] > 0).astype("int32")
batch = 32
if who != "single":  # this process's half of each global batch
    distribution = keras.distribution.DataParallel(devices=jax.devices())
    distribution.auto_shard_dataset = False  # each process feeds its own half, below
    keras.distribution.set_distribution(distribution)
    half = batch // 2
    x = x.reshape(-1, 2, half, 4)[:, int(who)].reshape(-1, 4)
    y = y.reshape(-1, 2, half)[:, int(who)].reshape(-1)
    batch = half


def local(variable):
    """A replicated variable's value, read from this process's device."""
    return np.asarray(variable.value.addressable_shards[0].data)


keras.utils.set_random_seed(0)
model = randomize(tiny_model())
model.compile(optimizer=keras.optimizers.Adam(1e-2),
              loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
start = [local(v).copy() for v in model.layers[0].weights]
seen = {}


class Watch(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        seen[epoch] = [local(v).copy() for v in self.model.layers[0].weights]


history = model.fit(x, y, batch_size=batch, epochs=4, shuffle=False, verbose=0, callbacks=[
    kt.TwoPhaseSchedule(freeze=3, switch_epoch=2, head_lr=1e-2, finetune_lr=1e-3, verbose=0),
    Watch()]).history
with open(out, "w") as f:
    json.dump({"processes": jax.process_count(), "devices": len(jax.devices()),
               "loss": history["loss"], "phase": history["phase"],
               "phase1_frozen": all(np.array_equal(a, b) for a, b in zip(start, seen[1])),
               "base_moved": not np.array_equal(start[0], seen[3][0]),
               "weights": [local(v).tolist() for v in model.weights]}, f)
