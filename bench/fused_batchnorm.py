"""Training step of the reference CNN: Keras' BatchNormalization vs. the fused kernel.

The reference CNN (everything trainable, BatchNormalization in training mode,
as the scratch arm and fine_tune's phase 2 train it) runs one warm-up epoch and
one timed epoch with each layer class, the arms interleaved and their order
alternated, with TensorFlow's op determinism on as in the pipeline script.
Reports, per arm, the median time of the timed epoch's training steps (robust
to the bursts of a shared machine) and that epoch's wall time, and the median
over repeats of the per-repeat ratio of step times.

usage: python bench/fused_batchnorm.py [--examples 20480] [--repeats 7]
       (TensorFlow backend: elsewhere FusedBatchNormalization is Keras' layer)
"""

import argparse
import json
import sys

from _common import StepTimer, fashion_arrays, median

import keras  # noqa: E402

from keras_transfer.pipeline import reference  # noqa: E402


def with_keras_batchnorm(model):
    """The same model with Keras' BatchNormalization in place of the fused one."""
    def clone(layer):
        cls = (keras.layers.BatchNormalization
               if isinstance(layer, reference.FusedBatchNormalization) else type(layer))
        return cls.from_config(layer.get_config())

    return keras.models.clone_model(model, clone_function=clone)


def timed_epoch(arm, x, y, batch_size):
    keras.backend.clear_session()
    keras.utils.set_random_seed(0)
    model = reference.target_cnn()
    if arm == "keras":
        model = with_keras_batchnorm(model)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    timer = StepTimer()
    model.fit(x, y, batch_size=batch_size, epochs=2, verbose=0, shuffle=False,
              callbacks=[timer])
    per_epoch = len(timer.steps) // 2
    return {"step_s": median(timer.steps[per_epoch:]), "epoch_s": timer.epochs[-1]}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--examples", type=int, default=20480)
    parser.add_argument("--batch_size", type=int, default=256)
    args = parser.parse_args()
    if keras.backend.backend() != "tensorflow":
        parser.error("run it on the TensorFlow backend (KERAS_BACKEND=tensorflow)")
    import tensorflow as tf

    tf.config.experimental.enable_op_determinism()
    x, y = fashion_arrays(args.examples)
    runs = []
    for repeat in range(args.repeats):
        order = ("keras", "fused") if repeat % 2 == 0 else ("fused", "keras")
        run = {arm: timed_epoch(arm, x, y, args.batch_size) for arm in order}
        run["keras_over_fused"] = run["keras"]["step_s"] / run["fused"]["step_s"]
        runs.append(run)
        print(json.dumps(run), file=sys.stderr, flush=True)
    print(json.dumps({
        "backend": "tensorflow", "examples": args.examples, "batch_size": args.batch_size,
        **{f"{arm}_{key}": median([r[arm][key] for r in runs])
           for arm in ("keras", "fused") for key in ("step_s", "epoch_s")},
        "keras_over_fused": median([r["keras_over_fused"] for r in runs]), "runs": runs},
        indent=1))


if __name__ == "__main__":
    main()
