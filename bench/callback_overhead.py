"""Callback overhead: the whole two-phase `fit` with TwoPhaseSchedule vs. plain Keras by hand.

Both arms train the reference target CNN on the same Fashion-MNIST images for
the same epochs: phase 1 with the 12 feature layers frozen, phase 2 with them
unfrozen (BatchNormalization kept frozen), Adam 1e-3 then 1e-4.

- by_hand: Keras' own way: freeze, compile, fit to the switch; unfreeze,
  compile again (a fresh optimizer), fit on from the switch.
- schedule: one compile, one fit with `TwoPhaseSchedule`; the callback builds
  the optimizer's state for both phases at train begin and, at the switch,
  unfreezes and asks Keras for a new train function.

The time of each arm is the wall time of everything it does, from the first
compile to the end of the last fit, switch and retracing included. Arms are
interleaved (the order alternates each repeat); the script reports the
median of the per-repeat ratios (schedule / by_hand, the two runs of one
repeat back to back), and the ratio of the medians beside it. Run it once per backend:

usage: KERAS_BACKEND=tensorflow python bench/callback_overhead.py [--repeats 5]
       KERAS_BACKEND=jax        python bench/callback_overhead.py [--repeats 5]
"""

import argparse
import json
import time

from _common import fashion_arrays, median

import keras  # noqa: E402

import keras_transfer as kt  # noqa: E402
from keras_transfer.pipeline import reference  # noqa: E402

LOSS = "sparse_categorical_crossentropy"


def by_hand(x, y, args):
    model = reference.target_cnn()
    kt.freeze(model, upto=12)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=LOSS)
    model.fit(x, y, batch_size=args.batch_size, epochs=args.switch, shuffle=False, verbose=0)
    kt.unfreeze(model, upto=12)
    model.compile(optimizer=keras.optimizers.Adam(1e-4), loss=LOSS)
    model.fit(x, y, batch_size=args.batch_size, epochs=args.epochs, initial_epoch=args.switch,
              shuffle=False, verbose=0)


def schedule(x, y, args):
    model = reference.target_cnn()
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=LOSS)
    model.fit(x, y, batch_size=args.batch_size, epochs=args.epochs, shuffle=False, verbose=0,
              callbacks=[kt.TwoPhaseSchedule(freeze=12, switch_epoch=args.switch, head_lr=1e-3,
                                             finetune_lr=1e-4, verbose=0)])


def timed(arm, x, y, args):
    keras.backend.clear_session()
    keras.utils.set_random_seed(0)
    start = time.perf_counter()
    arm(x, y, args)
    return time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--switch", type=int, default=2)
    parser.add_argument("--examples", type=int, default=15360)
    parser.add_argument("--batch_size", type=int, default=256)
    parser.add_argument("--inter_op_threads", type=int, default=0,
                        help="TensorFlow's inter-op thread pool size (0: TensorFlow's "
                             "default); 1 runs one op at a time, for steadier timings")
    args = parser.parse_args()
    if args.inter_op_threads and keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        tf.config.threading.set_inter_op_parallelism_threads(args.inter_op_threads)
    x, y = fashion_arrays(args.examples)
    timed(schedule, x[:512], y[:512], argparse.Namespace(**{**vars(args), "epochs": 2,
                                                            "switch": 1}))  # warm-up
    times = {"by_hand": [], "schedule": []}
    for repeat in range(args.repeats):
        order = ("by_hand", "schedule") if repeat % 2 == 0 else ("schedule", "by_hand")
        for name in order:
            times[name].append(timed(by_hand if name == "by_hand" else schedule, x, y, args))
    plain, ours = median(times["by_hand"]), median(times["schedule"])
    # Each repeat runs the two arms back to back, so their ratio cancels the
    # machine's slow drifts; its median is the figure BENCHMARKS.md reports.
    paired = [b / a for a, b in zip(times["by_hand"], times["schedule"])]
    print(json.dumps({"backend": keras.backend.backend(), "examples": args.examples,
                      "epochs": args.epochs, "switch_epoch": args.switch,
                      "inter_op_threads": args.inter_op_threads,
                      "by_hand_median_s": plain, "schedule_median_s": ours,
                      "overhead_of_medians": ours / plain - 1,
                      "overhead": median(paired) - 1, "paired_ratios": paired,
                      "runs": times}, indent=1))


if __name__ == "__main__":
    main()
