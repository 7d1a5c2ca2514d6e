"""Two-phase training on one device and under MirroredStrategy on 2 logical CPUs.

usage: python distributed_job.py OUT.json MODE   (callback | fit_two_phase | discriminative)
Writes the largest weight difference between the runs, and what each run did.
"""

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(
    cpu, [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()])

import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_transfer as kt  # noqa: E402

sys.path.insert(0, os.path.dirname(__file__))
from helpers import randomize, tiny_model  # noqa: E402

rng = np.random.default_rng(0)
x = rng.normal(size=(128, 4)).astype("float32")
y = (x[:, 0] > 0).astype("int32") + (x[:, 1] > 0).astype("int32")
work = os.path.dirname(os.path.abspath(sys.argv[1]))
source = randomize(tiny_model(head_name="OldHead"))
kt.save_weights_by_name(source, os.path.join(work, "source.h5"))


def train(strategy, mode):
    use_callback = mode != "fit_two_phase"
    keras.utils.set_random_seed(0)
    with strategy.scope():
        model = tiny_model()
        report = kt.load_weights_by_name(model, os.path.join(work, "source.h5"))
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        base = [v for layer in model.layers[:3] for v in layer.weights]  # what freeze=3 freezes
        start = [v.numpy().copy() for v in base]
        seen = {}

        class Watch(keras.callbacks.Callback):
            def on_epoch_end(self, epoch, logs=None):
                seen[epoch] = [v.numpy().copy() for v in base]

        if use_callback:
            optimizer = keras.optimizers.Adam(1e-2)
            if mode == "discriminative":
                optimizer = kt.discriminative_optimizer(
                    model, groups=[["Dense_a", "Bn", "Dense_b"]], learning_rate=1e-2,
                    multipliers=[0.1])
            model.compile(optimizer=optimizer, loss=loss)
            history = model.fit(x, y, batch_size=32, epochs=4, shuffle=False, verbose=0,
                                callbacks=[kt.TwoPhaseSchedule(freeze=3, switch_epoch=2, verbose=0),
                                           Watch()]).history
        else:
            history = kt.fit_two_phase(model, (x, y), freeze=3, head_epochs=2, epochs=4,
                                       loss=loss, metrics=(), verbose=0, batch_size=32,
                                       shuffle=False, callbacks=[Watch()]).history
        # the base is bit-identical after phase 1 (epochs 0 and 1)
        phase1_frozen = all(np.array_equal(a, b) for a, b in zip(start, seen[1]))
    moved = not np.array_equal(start[0], base[0].numpy())  # Dense_a's kernel
    return model, {"replicas": strategy.num_replicas_in_sync, "loaded": sorted(report.loaded),
                   "phase": history["phase"], "phase1_frozen": phase1_frozen, "base_moved": moved}


results = {}
for mode in sys.argv[2:3]:  # one mode a process: see the test
    one, info_one = train(tf.distribute.get_strategy(), mode)
    two, info_two = train(tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]), mode)
    diff = max(float(np.max(np.abs(a.numpy() - b.numpy()))) for a, b in zip(one.weights, two.weights))
    results[mode] = {
        "one_device": info_one, "mirrored": info_two, "max_weight_difference": diff}
with open(sys.argv[1], "w") as f:
    json.dump(results, f, indent=1)
