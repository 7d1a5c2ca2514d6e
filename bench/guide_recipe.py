"""`fine_tune` against the keras.io guide's by-hand recipe, on the guide's model.

The model of the keras.io "Transfer learning & fine-tuning" guide: RandomFlip ->
Rescaling -> a nested MobileNetV2 (alpha 0.35, 96x96, random weights) called
with training=False -> GlobalAveragePooling -> Dropout -> Dense(10), on 1,500
MNIST digits upscaled to 96x96 RGB; the same model, data, batch size (32) and
epochs (1 frozen + 2 unfrozen) in every arm. Each arm runs in a fresh process,
the arms interleaved (their order alternating), `--repeats` times; medians.

- `guide`: the guide by hand: `base.trainable = False`, compile (Adam 1e-3),
  fit 1 epoch; `base.trainable = True`, compile (Adam 1e-5), fit 2 more. Keras
  3.15 ignores the call's `training=False` inside `fit` (keras-team/keras#20285),
  so BatchNormalization runs in training mode in the last 2 epochs here;
- `guide_frozen_bn`: the same by hand, with the base's BatchNormalization layers
  set back to `trainable = False` after unfreezing (inference mode, what the
  guide means and what `fine_tune(train_batchnorm=False)` does): the same work
  as `fine_tune`;
- `fine_tune`: `kt.fine_tune(model, data, freeze=[base], epochs=3,
  freeze_epochs=1, base_lr=1e-3, train_batchnorm=False)`: one-cycle,
  discriminative rates, one `fit`; the finder excluded (`base_lr` given);
- `finder`: the finder `fine_tune` would run (its default sweep, in phase 1's
  state), timed alone;
- `cached`: `kt.fit_two_phase(..., cache_features="without_augmentation")`:
  phase 1 on cached features, then phase 2 as `guide_frozen_bn`'s (fit_two_phase
  keeps BatchNormalization frozen by default).

Each arm is timed from the built model to the end of training. Target:
`fine_tune` within 1.05x the wall time of the guide's recipe doing the same work
(`guide_frozen_bn`), the finder reported apart.

Usage:
  KERAS_BACKEND=tensorflow python bench/guide_recipe.py --repeats 3 --out bench/results/guide_tensorflow.json
  KERAS_BACKEND=jax python bench/guide_recipe.py --repeats 3 --out bench/results/guide_jax.json
  # the target's two arms only, more repeats:
  KERAS_BACKEND=jax python bench/guide_recipe.py --arms guide_frozen_bn fine_tune --repeats 5 --out bench/results/guide_jax_target.json
"""

import argparse
import json
import os
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import _common  # noqa: E402 (bench/, beside this script)

EXAMPLES, SIZE, BATCH = 1500, 96, 32
ARMS = ("guide", "guide_frozen_bn", "fine_tune", "finder", "cached")


def data():
    import keras
    import numpy as np

    from keras_transfer.pipeline import datasets

    (x, y), _ = datasets.load(datasets.MNIST)
    x, y = x[:EXAMPLES], y[:EXAMPLES].astype("int32")
    out = np.empty((len(x), SIZE, SIZE, 3), "float32")
    for start in range(0, len(x), 500):
        part = keras.ops.image.resize(x[start:start + 500, ..., None].astype("float32"),
                                      (SIZE, SIZE))
        out[start:start + 500] = np.repeat(keras.ops.convert_to_numpy(part), 3, axis=-1)
    return out, y


def guide_model():
    import keras

    keras.utils.set_random_seed(0)  # random weights (Keras' initializers), for ImageNet's
    base = keras.applications.MobileNetV2(weights=None, include_top=False, alpha=0.35,
                                          input_shape=(SIZE, SIZE, 3))
    inputs = keras.Input((SIZE, SIZE, 3))
    x = keras.layers.RandomFlip("horizontal")(inputs)
    x = keras.layers.Rescaling(1 / 127.5, offset=-1)(x)
    x = base(x, training=False)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dropout(0.2)(x)
    return keras.Model(inputs, keras.layers.Dense(10)(x)), base


def arm(name):
    import keras

    import keras_transfer as kt

    x, y = data()
    model, base = guide_model()
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    start = time.perf_counter()
    if name in ("guide", "guide_frozen_bn"):
        history = _common.guide_by_hand(model, base, x, y, batch_size=BATCH, loss=loss,
                                        frozen_bn=name == "guide_frozen_bn",
                                        metrics=["accuracy"])
    elif name == "fine_tune":
        history = kt.fine_tune(model, (x, y), freeze=[base], epochs=3, freeze_epochs=1,
                               base_lr=1e-3, train_batchnorm=False, batch_size=BATCH,
                               loss=loss, verbose=0)
    elif name == "finder":
        kt.freeze(model, [base])
        model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=loss)
        curve = kt.find_learning_rate(model, (x, y), batch_size=BATCH)
        history = None
        steps = len(curve.learning_rates)
    else:
        history = kt.fit_two_phase(model, (x, y), freeze=[base], head_epochs=1, epochs=3,
                                   head_lr=1e-3, finetune_lr=1e-5,
                                   cache_features="without_augmentation", loss=loss,
                                   batch_size=BATCH, verbose=0)
    seconds = time.perf_counter() - start
    result = {"arm": name, "seconds": seconds, "backend": keras.backend.backend()}
    if history is not None:
        result["loss"] = [float(v) for v in history.history["loss"]]
    else:
        result["finder_steps"] = steps
    print(json.dumps(result))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--arm", choices=ARMS)
    parser.add_argument("--arms", nargs="+", choices=ARMS, default=list(ARMS),
                        help="the arms to run (default: all); ratios need both their arms")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    if args.arm:
        return arm(args.arm)
    runs, by = _common.interleaved(__file__, list(dict.fromkeys(args.arms)), args.repeats)
    seconds = {name: statistics.median(r["seconds"] for r in rs) for name, rs in by.items()}
    summary = {"backend": runs[0]["backend"], "seconds": seconds}
    for ours, to in (("fine_tune", "guide"), ("fine_tune", "guide_frozen_bn"),
                     ("cached", "guide"), ("cached", "guide_frozen_bn")):
        if ours in by and to in by:  # per repeat, then the median
            per_repeat = [a["seconds"] / b["seconds"] for a, b in zip(by[ours], by[to])]
            summary[f"{ours}_over_{to}"] = statistics.median(per_repeat)
            summary[f"{ours}_over_{to}_per_repeat"] = per_repeat
    if "finder" in by and "fine_tune" in by:
        summary["finder_share_of_fine_tune_with_finder"] = seconds["finder"] / (
            seconds["finder"] + seconds["fine_tune"])
    if "finder" in by:
        summary["finder_steps"] = by["finder"][0]["finder_steps"]
    summary["command"] = (f"KERAS_BACKEND={runs[0]['backend']} python bench/guide_recipe.py "
                          + " ".join(sys.argv[1:]))
    summary["runs"] = runs
    _common.write_summary(summary, args.out)


if __name__ == "__main__":
    main()
