"""Callback overhead: median step time of `fit` with TwoPhaseSchedule vs. without.

Both arms train the reference CNN in the same phase (the 12 feature layers
frozen, head trainable) on the same Fashion-MNIST images. The plain arm freezes
by hand and compiles; the other lets TwoPhaseSchedule freeze (its switch lies
beyond the run). Repeats alternate the arms; the first epoch (tracing) of each
repeat is dropped. Reports the ratio of the medians.

usage: python bench/callback_overhead.py [--repeats 5] [--epochs 3] [--examples 15360]
"""

import argparse
import json

from _common import StepTimer, fashion_subset, median

import keras  # noqa: E402

import keras_transfer as kt  # noqa: E402
from keras_transfer import reference  # noqa: E402


def arm(data, epochs, with_callback):
    keras.utils.set_random_seed(0)
    model = reference.target_cnn()
    timer = StepTimer()
    callbacks = [timer]
    if with_callback:
        callbacks.insert(0, kt.TwoPhaseSchedule(freeze=12, switch_epoch=10_000, verbose=0))
    else:
        kt.freeze(model, upto=12)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy")
    model.fit(data, epochs=epochs, verbose=0, callbacks=callbacks, shuffle=False)
    per_epoch = len(timer.steps) // epochs
    return timer.steps[per_epoch:]  # drop the first epoch (tracing)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--examples", type=int, default=15360)
    args = parser.parse_args()
    data = fashion_subset(args.examples)
    plain, ours = [], []
    for _ in range(args.repeats):
        plain += arm(data, args.epochs, with_callback=False)
        ours += arm(data, args.epochs, with_callback=True)
    result = {"plain_median_step_s": median(plain), "schedule_median_step_s": median(ours),
              "ratio": median(ours) / median(plain), "steps_each": len(plain)}
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
