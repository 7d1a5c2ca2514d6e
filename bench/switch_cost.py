"""Switch cost: wall time of the phase switch vs. one training epoch, per backend.

The reference CNN trains on Fashion-MNIST images with TwoPhaseSchedule
(phase 2 from epoch 1 of 3). The switch cost is the time spent in the
schedule's `on_epoch_begin` at the switch (unfreeze, learning rate, new train
function) plus the extra time of the first phase-2 step over the median
phase-2 step (tracing and compiling the new train function). It is compared
with the last (steady) phase-2 epoch. Nothing is recompiled by
`model.compile`: it is never called again. Repeats give medians.

usage: KERAS_BACKEND=tensorflow python bench/switch_cost.py [--examples 55040] [--repeats 3]
       KERAS_BACKEND=jax        python bench/switch_cost.py [--examples 55040] [--repeats 3]
"""

import argparse
import json
import time

from _common import StepTimer, fashion_arrays, median

import keras  # noqa: E402

import keras_transfer as kt  # noqa: E402
from keras_transfer.pipeline import reference  # noqa: E402


class TimedSchedule(kt.TwoPhaseSchedule):
    def on_epoch_begin(self, epoch, logs=None):
        start = time.perf_counter()
        super().on_epoch_begin(epoch, logs)
        if epoch == self.switch_epoch:
            self.switch_seconds = time.perf_counter() - start


def once(x, y, batch_size):
    keras.backend.clear_session()
    keras.utils.set_random_seed(0)
    model = reference.target_cnn()
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy")
    schedule, timer = TimedSchedule(freeze=12, switch_epoch=1, verbose=0), StepTimer()
    model.fit(x, y, batch_size=batch_size, epochs=3, verbose=0, callbacks=[schedule, timer],
              shuffle=False)
    per_epoch = len(timer.steps) // len(timer.epochs)
    phase2 = timer.steps[per_epoch:]
    retrace = max(phase2[0] - median(phase2), 0.0)
    return {"switch_s": schedule.switch_seconds + retrace, "in_callback_s": schedule.switch_seconds,
            "retrace_s": retrace, "epoch_s": timer.epochs[-1]}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--examples", type=int, default=55040)
    parser.add_argument("--batch_size", type=int, default=256)
    args = parser.parse_args()
    x, y = fashion_arrays(args.examples)
    runs = [once(x, y, args.batch_size) for _ in range(args.repeats)]
    summary = {key: median([r[key] for r in runs]) for key in runs[0]}
    print(json.dumps({"backend": keras.backend.backend(), "examples": args.examples,
                      **summary, "switch_over_epoch": summary["switch_s"] / summary["epoch_s"],
                      "runs": runs}, indent=1))


if __name__ == "__main__":
    main()
