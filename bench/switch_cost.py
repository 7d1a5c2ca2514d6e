"""Switch cost: wall time of the phase switch vs. one training epoch.

The reference CNN trains on Fashion-MNIST images with TwoPhaseSchedule
(switch after epoch 2 of 4). The switch cost is the time spent in the
schedule's `on_epoch_begin` at the switch (unfreeze, learning rate, new train
function) plus the extra time of the first phase-2 step over the median
phase-2 step (tracing the new train function). It is compared with the median phase-2
epoch. Nothing is recompiled: `model.compile` is never called again.

usage: python bench/switch_cost.py [--repeats 3] [--examples 15360]
"""

import argparse
import json
import time

from _common import StepTimer, fashion_subset, median

import keras  # noqa: E402

import keras_transfer as kt  # noqa: E402
from keras_transfer import reference  # noqa: E402


class TimedSchedule(kt.TwoPhaseSchedule):
    def on_epoch_begin(self, epoch, logs=None):
        start = time.perf_counter()
        super().on_epoch_begin(epoch, logs)
        if epoch == self.switch_epoch:
            self.switch_seconds = time.perf_counter() - start


def once(data):
    keras.utils.set_random_seed(0)
    model = reference.target_cnn()
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy")
    schedule, timer = TimedSchedule(freeze=12, switch_epoch=2, verbose=0), StepTimer()
    model.fit(data, epochs=5, verbose=0, callbacks=[schedule, timer], shuffle=False)
    per_epoch = len(timer.steps) // len(timer.epochs)
    phase2 = timer.steps[2 * per_epoch:]
    retrace = max(phase2[0] - median(phase2), 0.0)
    steady = median(timer.epochs[3:])
    return schedule.switch_seconds + retrace, steady, schedule.switch_seconds


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--examples", type=int, default=15360)
    args = parser.parse_args()
    data = fashion_subset(args.examples)
    runs = [once(data) for _ in range(args.repeats)]
    switch, epoch, hook = (median([r[i] for r in runs]) for i in range(3))
    print(json.dumps({"switch_s": switch, "in_callback_s": hook, "phase2_epoch_s": epoch,
                      "switch_over_epoch": switch / epoch, "examples": args.examples}, indent=1))


if __name__ == "__main__":
    main()
