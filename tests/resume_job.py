"""A two-phase training job that can be killed, for the resume test.

usage: python resume_job.py WORK_DIR KILL_AT_EPOCH RATES ORDER
  KILL_AT_EPOCH: -1 never; RATES: "floats" or "schedules" (CosineDecay per phase);
  ORDER: "after" or "before": where BackupAndRestore stands beside TwoPhaseSchedule.
Writes WORK_DIR/final.npz (every weight and optimizer variable), WORK_DIR/log.txt
(epoch phase lr trainable-count, one line per epoch run in this process) and
WORK_DIR/warnings.txt (every warning raised, one per line).
"""

import os
import signal
import sys
import warnings

import keras
import numpy as np

import keras_transfer as kt

sys.path.insert(0, os.path.dirname(__file__))
from helpers import randomize, tiny_model  # noqa: E402

work, kill_at, rates, order = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
keras.utils.set_random_seed(0)
if keras.backend.backend() == "tensorflow":
    import tensorflow as tf

    tf.config.experimental.enable_op_determinism()
rng = np.random.default_rng(0)
x = rng.normal(size=(96, 4)).astype("float32")
y = (x[:, 0] > 0).astype("int32") + (x[:, 1] > 0).astype("int32")
model = randomize(tiny_model())
model.compile(optimizer=keras.optimizers.Adam(1e-2),
              loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
if rates == "schedules":
    head_lr = keras.optimizers.schedules.CosineDecay(1e-2, decay_steps=20)
    finetune_lr = keras.optimizers.schedules.CosineDecay(1e-3, decay_steps=20)
else:
    head_lr, finetune_lr = 1e-2, 1e-3


class Log(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        count = sum(int(np.prod(v.shape)) for v in self.model.trainable_weights)
        with open(os.path.join(work, "log.txt"), "a") as f:
            f.write(f"{epoch} {logs['phase']} {logs['lr']:.6g} {count}\n")
        if epoch == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)  # after the backup of this epoch


with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    schedule = kt.TwoPhaseSchedule(freeze=3, switch_epoch=2, head_lr=head_lr,
                                   finetune_lr=finetune_lr, verbose=0)
    backup = keras.callbacks.BackupAndRestore(os.path.join(work, "backup"))
    pair = [schedule, backup] if order == "after" else [backup, schedule]
    model.fit(x, y, batch_size=16, epochs=5, shuffle=False, verbose=0, callbacks=[*pair, Log()])
with open(os.path.join(work, "warnings.txt"), "w") as f:
    f.writelines(f"{w.message}\n" for w in caught)
np.savez(os.path.join(work, "final.npz"),
         *[keras.ops.convert_to_numpy(v) for v in model.weights + model.optimizer.variables])
