"""Phase 1 on cached features (`fit_head_cached`) vs. Keras' plain frozen fit.

Two networks:

- `reference`: the reference target CNN (12 feature layers loaded from the
  shipped Fashion-MNIST weights, frozen; head Dense 128 + Dropout + Dense 10) on
  28x28 MNIST images. Its head is large (401,536 of 458,890 trainable
  parameters), so a head epoch is a sizeable share of a frozen-base epoch.
- `mobilenet`: a deep base with a small head, the usual transfer setting:
  `keras.applications.MobileNetV2(weights=None, include_top=False)` on 96x96x3
  inputs, GlobalAveragePooling2D, then a Dense 10 head. The inputs are MNIST
  digits resized to 96x96 (bilinear) and repeated over 3 channels, stored as
  uint8 and scaled to [-1, 1] by a Rescaling layer at the top of the base.
  `weights=None` keeps the benchmark offline; the base is random, so the head's
  accuracy is near chance: this network is here for the timing.

Three arms, interleaved in a rotating order within each repeat (fresh models,
same seed, same data order, validation data in every arm):

- `plain`: `model.fit` with the base frozen (the base runs every epoch);
- `cached`: `keras_transfer.fit_head_cached` with `validation=`: its one-off
  pass (the cacheability check and caching the training and validation data,
  up to the head's train begin) is timed apart from its epochs;
- `head_only`: the physical limit: a bare `head.fit` on features computed
  beforehand (untimed), the same epochs and validation. No cached phase 1 can
  beat it, so `limit_speedup` = plain epoch / head-only epoch bounds
  `epoch_speedup` = plain epoch / cached epoch.

An arm's epoch time is the median of its epochs after the first (which traces
the train function), its phase-1 time the whole call; the figures are medians
over the repeats. Validation accuracies at the end of phase 1 are reported for
the plain and cached arms (the same head up to float rounding).

usage: python bench/cached_phase1.py [--networks reference mobilenet] [--repeats 5]
           [--epochs 3] [--examples 20000] [--mobilenet_examples 2000]
"""

import argparse
import json
import pathlib
import sys
import time

from _common import StepTimer, median

import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_transfer as kt  # noqa: E402
from keras_transfer import caching, datasets, reference  # noqa: E402

WEIGHTS = pathlib.Path(__file__).resolve().parent.parent / "weights" / "fashion_mnist.h5"
BATCH = 256


class Timer(StepTimer):
    """A StepTimer that also records when training began."""

    def on_train_begin(self, logs=None):
        self.train_begin = time.perf_counter()


def reference_model():
    keras.utils.set_random_seed(0)
    model = reference.target_cnn()
    kt.load_weights_by_name(model, WEIGHTS, sha256=kt.weights.manifest_entry(WEIGHTS)["sha256"])
    return model


def mobilenet_model():
    keras.utils.set_random_seed(0)
    base = keras.applications.MobileNetV2(input_shape=(96, 96, 3), include_top=False,
                                          weights=None)
    return keras.Sequential([keras.Input((96, 96, 3), dtype="uint8"),
                             keras.layers.Rescaling(1 / 127.5, offset=-1, name="Scale"),
                             base, keras.layers.GlobalAveragePooling2D(name="Pool"),
                             keras.layers.Dense(10, activation="softmax", name="Head")],
                            name="mobilenet_small_head")


def digits_96(x, chunk=500):
    """MNIST digits as 96x96x3 uint8: bilinear resize, repeated over 3 channels."""
    out = np.empty((len(x), 96, 96, 3), np.uint8)
    for start in range(0, len(x), chunk):
        part = keras.ops.image.resize(x[start:start + chunk, ..., None].astype("float32"),
                                      (96, 96), interpolation="bilinear")
        out[start:start + chunk] = np.clip(np.round(keras.ops.convert_to_numpy(part)), 0, 255)
    return out


def network(name, args):
    """`(build, cut, (x, y), (x_val, y_val))` for a network name."""
    (x, y), _ = datasets.load(datasets.MNIST)
    if name == "reference":
        (x, y), (x_val, y_val) = datasets.holdout_split(x, y, train_examples=args.examples,
                                                        val_examples=args.val_examples)
        scale = lambda images: images[..., None].astype("float32") / 255.0  # noqa: E731
        return reference_model, len(reference.FEATURE_LAYERS), (scale(x), y), (scale(x_val), y_val)
    (x, y), (x_val, y_val) = datasets.holdout_split(
        x, y, train_examples=args.mobilenet_examples, val_examples=args.mobilenet_val_examples)
    return mobilenet_model, 3, (digits_96(x), y), (digits_96(x_val), y_val)


def compile_head_or_model(model, metrics=("accuracy",)):
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy",
                  metrics=list(metrics))


def plain_arm(build, cut, train, val, epochs):
    model = build()
    kt.freeze(model, upto=cut)
    compile_head_or_model(model)
    timer = Timer()
    start = time.perf_counter()
    history = model.fit(*train, validation_data=val, batch_size=BATCH, epochs=epochs,
                        shuffle=False, verbose=0, callbacks=[timer])
    return {"epoch_s": median(timer.epochs[1:]), "phase1_s": time.perf_counter() - start,
            "val_accuracy": history.history["val_accuracy"][-1]}


def cached_arm(build, cut, train, val, epochs):
    model = build()
    timer = Timer()
    start = time.perf_counter()
    history = kt.fit_head_cached(model, train, cut=cut, epochs=epochs, validation=val,
                                 batch_size=BATCH, shuffle=False, verbose=0, callbacks=[timer])
    return {"epoch_s": median(timer.epochs[1:]), "phase1_s": time.perf_counter() - start,
            "one_off_s": timer.train_begin - start,
            "val_accuracy": history.history["val_accuracy"][-1]}


def head_only_arm(build, cut, train, val, epochs):
    base, head = caching.split_at(build(), cut)
    kt.freeze(base)
    features = caching.cache_features(base, train, BATCH)  # untimed: the limit
    val_features = caching.cache_features(base, val, BATCH)
    compile_head_or_model(head)
    timer = Timer()
    head.fit(*features, validation_data=val_features, batch_size=BATCH, epochs=epochs,
             shuffle=False, verbose=0, callbacks=[timer])
    return {"epoch_s": median(timer.epochs[1:])}


ARMS = {"plain": plain_arm, "cached": cached_arm, "head_only": head_only_arm}


def measure(name, args):
    build, cut, train, val = network(name, args)
    runs = {arm: [] for arm in ARMS}
    for repeat in range(args.repeats):
        order = list(ARMS)[repeat % len(ARMS):] + list(ARMS)[:repeat % len(ARMS)]
        for arm in order:
            runs[arm].append(ARMS[arm](build, cut, train, val, args.epochs))
        print(f"{name}: repeat {repeat + 1}/{args.repeats} done ({' '.join(order)})",
              file=sys.stderr, flush=True)
    med = {arm: {key: median([run[key] for run in arm_runs]) for key in arm_runs[0]}
           for arm, arm_runs in runs.items()}
    epoch_speedup = med["plain"]["epoch_s"] / med["cached"]["epoch_s"]
    limit = med["plain"]["epoch_s"] / med["head_only"]["epoch_s"]
    return {
        "training_examples": len(train[0]), "validation_examples": len(val[0]),
        "median": med, "epoch_speedup": epoch_speedup, "limit_speedup": limit,
        "share_of_limit": epoch_speedup / limit,
        "phase1_speedup_incl_one_off": med["plain"]["phase1_s"] / med["cached"]["phase1_s"],
        "runs": runs,
    }


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--networks", nargs="+", choices=["reference", "mobilenet"],
                        default=["reference", "mobilenet"])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=3,
                        help="phase-1 epochs per arm (at least 2: the first is not timed)")
    parser.add_argument("--examples", type=int, default=20000, help="reference CNN")
    parser.add_argument("--val_examples", type=int, default=5000, help="reference CNN")
    parser.add_argument("--mobilenet_examples", type=int, default=2000)
    parser.add_argument("--mobilenet_val_examples", type=int, default=500)
    args = parser.parse_args()
    if args.epochs < 2:
        parser.error("--epochs must be at least 2: the first epoch traces and is not timed.")
    result = {"command": " ".join(["python bench/cached_phase1.py", *sys.argv[1:]]),
              "keras": keras.__version__, "backend": keras.backend.backend(),
              "batch_size": BATCH, "epochs": args.epochs, "repeats": args.repeats}
    for name in args.networks:
        result[name] = measure(name, args)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
