"""A two-phase training job that can be killed, for the resume test.

usage: python resume_job.py WORK_DIR KILL_AT_EPOCH  (-1: never)
Writes WORK_DIR/final.npz (every weight) and WORK_DIR/log.txt (epoch phase lr
trainable-count, one line per epoch run in this process).
"""

import os
import signal
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import keras_transfer as kt  # noqa: E402

sys.path.insert(0, os.path.dirname(__file__))
from helpers import randomize, tiny_model  # noqa: E402

work, kill_at = sys.argv[1], int(sys.argv[2])
keras.utils.set_random_seed(0)
tf.config.experimental.enable_op_determinism()
rng = np.random.default_rng(0)
x = rng.normal(size=(96, 4)).astype("float32")
y = (x[:, 0] > 0).astype("int32") + (x[:, 1] > 0).astype("int32")
model = randomize(tiny_model())
model.compile(optimizer=keras.optimizers.Adam(1e-2),
              loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))


class Log(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        count = sum(int(np.prod(v.shape)) for v in self.model.trainable_weights)
        with open(os.path.join(work, "log.txt"), "a") as f:
            f.write(f"{epoch} {logs['phase']} {logs['lr']:.6g} {count}\n")
        if epoch == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)  # after the backup of this epoch


model.fit(x, y, batch_size=16, epochs=5, shuffle=False, verbose=0, callbacks=[
    kt.TwoPhaseSchedule(freeze=3, switch_epoch=2, head_lr=1e-2, finetune_lr=1e-3, verbose=0),
    keras.callbacks.BackupAndRestore(os.path.join(work, "backup")),
    Log()])
np.savez(os.path.join(work, "final.npz"), *[v.numpy() for v in model.weights])
