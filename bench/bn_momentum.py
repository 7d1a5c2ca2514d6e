"""Why the from-scratch baseline collapsed: BatchNormalization momentum vs. budget.

Trains the reference target CNN from scratch on 1,000 MNIST training images
(drawn as the pipeline draws them) with the pipeline's plan (Adam 1e-3 for 5
epochs, then 1e-4 to epoch 10, via TwoPhaseSchedule with nothing frozen), for
each BN momentum and batch size, two seeds; prints train accuracy (inference
mode, on the 1,000 images) and test accuracy.

usage: python bench/bn_momentum.py [--momenta 0.99 0.9] [--batches 256 32] [--seeds 0 1]
"""

import argparse

import _common  # noqa: F401 (quiet TensorFlow)
import keras
import numpy as np

import keras_transfer as kt
from keras_transfer.pipeline import datasets, reference


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--momenta", type=float, nargs="+", default=[0.99, 0.9])
    parser.add_argument("--batches", type=int, nargs="+", default=[256, 32])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    args = parser.parse_args()
    (x, y), (x_test, y_test) = datasets.load(datasets.MNIST)
    test = datasets.as_dataset(x_test, y_test, 1000)
    for batch in args.batches:
        for momentum in args.momenta:
            reference.BN_MOMENTUM = momentum
            for seed in args.seeds:
                keras.utils.set_random_seed(seed)
                chosen = np.random.default_rng(seed).permutation(55000)[:1000]
                model = reference.target_cnn()
                model.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy",
                              metrics=["accuracy"])
                model.fit(datasets.as_dataset(x[chosen], y[chosen], batch, shuffle=True, seed=seed),
                          epochs=10, verbose=0, shuffle=False, callbacks=[kt.TwoPhaseSchedule(
                              freeze=[], switch_epoch=5, head_lr=1e-3, finetune_lr=1e-4, verbose=0)])
                train_acc = model.evaluate(datasets.as_dataset(x[chosen], y[chosen], 1000),
                                           verbose=0)[1]
                test_acc = model.evaluate(test, verbose=0)[1]
                print(f"momentum={momentum} batch={batch} seed={seed} "
                      f"train_acc={train_acc:.3f} test_acc={test_acc:.3f}", flush=True)


if __name__ == "__main__":
    main()
