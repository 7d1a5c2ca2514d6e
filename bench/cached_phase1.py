"""Phase 1 with cached features vs. Keras' plain frozen fit (Fashion-MNIST -> MNIST).

The reference target CNN, its 12 feature layers loaded from the shipped
Fashion-MNIST weights and frozen, trains its head on MNIST images. Plain:
`model.fit` with the base frozen. Cached: `fit_head_cached` (the base runs once,
its cost counted separately and amortized over the epochs). Reports median
epoch times, their ratio, and the head's validation accuracy for both.

usage: python bench/cached_phase1.py [--examples 20000] [--epochs 3]
"""

import argparse
import json
import pathlib
import time

from _common import StepTimer, median

import keras  # noqa: E402

import keras_transfer as kt  # noqa: E402
from keras_transfer import caching, datasets, reference  # noqa: E402

WEIGHTS = pathlib.Path(__file__).resolve().parent.parent / "weights" / "fashion_mnist.h5"


def target():
    keras.utils.set_random_seed(0)
    model = reference.target_cnn()
    kt.load_weights_by_name(model, WEIGHTS, sha256=kt.weights.manifest_entry(WEIGHTS)["sha256"])
    return model


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--examples", type=int, default=20000)
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()
    (x, y), _ = datasets.load(datasets.MNIST)
    (x_train, y_train), (x_val, y_val) = datasets.holdout_split(x, y, train_examples=args.examples)
    x_train = x_train[..., None].astype("float32") / 255.0
    x_val = x_val[..., None].astype("float32") / 255.0

    plain = target()
    kt.freeze(plain, upto=12)
    plain.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    timer = StepTimer()
    plain.fit(x_train, y_train, batch_size=256, epochs=args.epochs, shuffle=False, verbose=0,
              callbacks=[timer])
    plain_epoch = median(timer.epochs[1:])
    plain_acc = plain.evaluate(x_val, y_val, verbose=0, return_dict=True)["accuracy"]

    cached = target()
    base, head = caching.split_at(cached, 12)
    kt.freeze(base)
    start = time.perf_counter()
    features, labels = caching.cache_features(base, (x_train, y_train), 256)
    cache_seconds = time.perf_counter() - start
    head.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy",
                 metrics=["accuracy"])
    timer = StepTimer()
    head.fit(features, labels, batch_size=256, epochs=args.epochs, shuffle=False, verbose=0,
             callbacks=[timer])
    cached_epoch = median(timer.epochs[1:])
    cached.compile(loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    cached_acc = cached.evaluate(x_val, y_val, verbose=0, return_dict=True)["accuracy"]
    print(json.dumps({
        "examples": args.examples, "epochs": args.epochs,
        "plain_epoch_s": plain_epoch, "cached_epoch_s": cached_epoch,
        "cache_once_s": cache_seconds, "epoch_speedup": plain_epoch / cached_epoch,
        "phase1_speedup_incl_cache": (plain_epoch * args.epochs)
                                     / (cache_seconds + cached_epoch * args.epochs),
        "plain_val_accuracy": plain_acc, "cached_val_accuracy": cached_acc}, indent=1))


if __name__ == "__main__":
    main()
