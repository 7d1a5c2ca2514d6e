"""Reuse a TF Hub module in Keras 3: export the Fashion-MNIST features, fine-tune on MNIST.

1. The shipped Fashion-MNIST feature extractor (the 12 feature layers of the
   reference CNN, loaded by name from weights/fashion_mnist.h5, sha256 checked)
   is exported as a TF Hub reusable SavedModel with `export_hub_module`.
2. A Keras 3 model reuses it through `HubLayer(trainable=True)` with a new
   head, and `TwoPhaseSchedule` trains the head with the module frozen, then
   fine-tunes the module too. (Inside the module, BatchNormalization follows
   the module's `training` flag, as with `hub.KerasLayer`: it trains in
   phase 2.)
3. Prints the transfer report, a summary table and writes results.json.

Usage:
  python scripts/hub_finetune.py [--train_examples 2000] [--out_dir runs/hub]
"""

import os
import pathlib
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app
from absl import flags

REPO = pathlib.Path(__file__).resolve().parent.parent

FLAGS = flags.FLAGS
flags.DEFINE_string("data_dir", None, "Folder to look for MNIST in first.")
flags.DEFINE_string("out_dir", str(REPO / "runs" / "hub_finetune"),
                    "Where the exported module and results.json go.")
flags.DEFINE_string("source_weights", str(REPO / "weights" / "fashion_mnist.h5"),
                    "Source weights (by name), checked against MANIFEST.json.")
flags.DEFINE_integer("head_epochs", 2, "Phase-1 epochs (module frozen).", lower_bound=0)
flags.DEFINE_integer("epochs", 4, "Total epochs.", lower_bound=1)
flags.DEFINE_integer("batch_size", 256, "Batch size.", lower_bound=1)
flags.DEFINE_integer("train_examples", 10000, "MNIST training images (0: all 55000).",
                     lower_bound=0, upper_bound=55000)
flags.DEFINE_float("head_lr", 1e-3, "Phase-1 learning rate (Adam).", lower_bound=0)
flags.DEFINE_float("finetune_lr", 1e-4, "Phase-2 learning rate (Adam).", lower_bound=0)
flags.DEFINE_integer("seed", 0, "Seed.")
flags.register_validator("head_epochs", lambda v: v <= FLAGS.epochs,
                         message="--head_epochs must not exceed --epochs.")


def run():
    import keras

    import keras_transfer as kt
    from keras_transfer.pipeline import _cli
    from keras_transfer.pipeline import comparison
    from keras_transfer.pipeline import datasets
    from keras_transfer.pipeline import reference

    deterministic = _cli.make_deterministic(FLAGS.seed)
    verbose = 1 if sys.stdout.isatty() else 2
    out_dir = pathlib.Path(FLAGS.out_dir)

    # 1. Export the shipped feature extractor as a TF Hub module.
    base = keras.Sequential([keras.Input((28, 28, 1)), *reference.feature_layers()],
                            name="fashion_features")
    entry = kt.weights.manifest_entry(FLAGS.source_weights)
    report = kt.load_weights_by_name(base, FLAGS.source_weights,
                                     sha256=entry["sha256"] if entry else None)
    print(report)
    module_path = kt.export_hub_module(base, out_dir / "fashion_features")
    print(f"Exported the feature extractor as a TF Hub module: {module_path}")

    # 2. Reuse it in a Keras 3 model with a new head.
    model = keras.Sequential([
        keras.Input((28, 28, 1)),
        kt.HubLayer(module_path, trainable=True, name="hub_features"),
        keras.layers.Dense(128, activation="relu", name="Dense1_1"),
        keras.layers.Dropout(0.5, name="Dropout"),
        keras.layers.Dense(10, activation="softmax", name="Dense2_2"),
    ])
    (mx, my), (mx_test, my_test) = datasets.load(datasets.MNIST, FLAGS.data_dir)
    (x, y), (x_val, y_val) = datasets.holdout_split(
        mx, my, train_examples=FLAGS.train_examples, seed=FLAGS.seed)
    arm = comparison.run_arm(
        model, datasets.as_dataset(x, y, FLAGS.batch_size, shuffle=True, seed=FLAGS.seed),
        validation=datasets.as_dataset(x_val, y_val, 1000),
        test=datasets.as_dataset(mx_test, my_test, 1000),
        train_eval=datasets.as_dataset(x, y, 1000), freeze=["hub_features"],
        head_epochs=FLAGS.head_epochs, epochs=FLAGS.epochs, head_lr=FLAGS.head_lr,
        finetune_lr=FLAGS.finetune_lr, verbose=verbose)

    # 3. Outputs.
    comparison.write_json({"flags": {k: FLAGS[k].value for k in (
        "data_dir", "out_dir", "source_weights", "head_epochs", "epochs", "batch_size",
        "train_examples", "head_lr", "finetune_lr", "seed")},
        "target_train_examples": int(len(x)), "op_determinism": deterministic,
        "arms": {"hub": arm}},
        out_dir / "results.json")
    print("\n" + comparison.summary_table({"hub": arm}))
    print(f"\nWrote {out_dir / 'results.json'}")


def main(argv):
    # Imported here, after absl has parsed the flags: a bad flag is refused in
    # well under a second, without loading Keras and its backend.
    from keras_transfer.pipeline import _cli

    return _cli.main_for(run, "hub_finetune")(argv)


if __name__ == "__main__":
    app.run(main)
