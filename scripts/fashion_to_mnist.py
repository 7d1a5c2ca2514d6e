"""The reference pipeline: Fashion-MNIST source -> MNIST target, transfer vs. scratch.

The target is MNIST from the prepared file by default (offline); `--dataset`
takes any TensorFlow Datasets image-classification set instead (`kmnist`,
`emnist/letters`, `cifar10`, ...), converted to 28x28 grayscale.

1. Source: the reference CNN trained on Fashion-MNIST and saved by layer name
   (skipped when the weights file exists, unless --retrain_source).
2. Target: the same feature layers with a new head, loaded by name from the
   source file, trained with the recipe (--recipe):
   - fine_tune (default): `keras_transfer.fine_tune`: the learning-rate
     finder, one-cycle with the feature layers frozen (BatchNormalization
     trains), then one-cycle over everything at discriminative rates;
   - seed: the seed's plan: constant --head_lr with the feature layers frozen,
     then --finetune_lr with everything but BatchNormalization.
3. Scratch: the same target architecture from random weights, same data,
   epochs and batch size; with fine_tune, the same finder and one-cycle over
   every epoch, nothing frozen; with seed, the same rates.
4. Regimes: the training set (all images by default) and, in the same run,
   low-data regimes (--low_data_examples; by default 1,000 and 100 images
   when training on all images), in one table and one figure.
5. Outputs in --out_dir: <dataset>.h5 (the transfer target of the first
   regime, by name; mnist.h5), comparison.png, results.json; a summary table
   on stdout.

Usage:
  python scripts/fashion_to_mnist.py [--recipe seed] [--train_examples 1000] [--out_dir runs/x]
  python scripts/fashion_to_mnist.py --dataset kmnist [--tfds_data_dir DIR]
"""

import json
import os
import pathlib
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app
from absl import flags
from absl import logging

REPO = pathlib.Path(__file__).resolve().parent.parent

FLAGS = flags.FLAGS
flags.DEFINE_string("data_dir", None, "Folder to look for the data sets in first "
                    "(IDX files or <name>.npz); also KERAS_TRANSFER_DATA.")
flags.DEFINE_string("dataset", "mnist", "The target data set: mnist (offline, the "
                    "prepared file) or any TensorFlow Datasets image-classification name "
                    "(kmnist, emnist/letters, cifar10, ...), read from --tfds_data_dir, "
                    "downloaded there when online, and converted to 28x28 grayscale.")
flags.DEFINE_string("tfds_data_dir", None, "TensorFlow Datasets' data folder for "
                    "--dataset (default: TFDS' own, ~/tensorflow_datasets).")
flags.DEFINE_string("out_dir", str(REPO / "runs" / "fashion_to_mnist"),
                    "Where <dataset>.h5 (mnist.h5), comparison.png and results.json go.")
flags.DEFINE_string("source_weights", str(REPO / "weights" / "fashion_mnist.h5"),
                    "The source weights file (by name). Trained and written when "
                    "missing or with --retrain_source; MANIFEST.json beside it "
                    "holds its sha256.")
flags.DEFINE_integer("source_epochs", 10, "Epochs of source training.", lower_bound=1)
flags.DEFINE_integer("source_examples", 0, "Use only the first N Fashion-MNIST "
                     "training images for the source (0: all 60000).", lower_bound=0)
flags.DEFINE_enum("recipe", "fine_tune", ["fine_tune", "seed"],
                  "How both arms train: fine_tune (keras_transfer.fine_tune: finder, "
                  "one-cycle, discriminative rates) or seed (the seed's constant rates).")
flags.DEFINE_integer("head_epochs", None, "Phase-1 epochs (head only, base frozen); "
                     "default 1 with fine_tune, 5 with seed.", lower_bound=0)
flags.DEFINE_integer("epochs", None, "Total target epochs (phase 2 runs the rest); "
                     "default 10.", lower_bound=1)
flags.DEFINE_integer("batch_size", None, "Batch size of the target arms; default 256 "
                     "with seed, and with fine_tune chosen from the training-set size "
                     "(keras_transfer.recipes.batch_size_for). The source uses 256 "
                     "unless set.", lower_bound=1)
flags.DEFINE_integer("train_examples", 0, "Use only N MNIST training images, drawn "
                     "with --seed (0: all 55000 not held out for validation).",
                     lower_bound=0)
flags.DEFINE_multi_integer("low_data_examples", None, "Also run a low-data regime on N "
                           "images drawn with --seed, in the same table and figure; "
                           "repeat the flag for several. Default: 1000 and 100 with all "
                           "images (--train_examples=0) if they are more than 1000, none "
                           "otherwise; 0: skip.",
                           lower_bound=0)
flags.DEFINE_integer("val_examples", 5000, "MNIST training images held out for "
                     "validation (the last N of the 60000).", lower_bound=1)
flags.DEFINE_float("base_lr", None, "fine_tune: the head's peak learning rate; default: "
                   "the learning-rate finder's suggestion.", lower_bound=0)
flags.DEFINE_float("lr_mult", None, "fine_tune: head rate over the lowest layer "
                   "group's in phase 2; default fine_tune's.", lower_bound=1)
flags.DEFINE_boolean("train_batchnorm", None, "fine_tune: train BatchNormalization in "
                     "both phases; default fine_tune's.")
flags.DEFINE_boolean("sweep_phase2", None, "fine_tune: phase 2's peak from a second sweep, "
                     "of what phase 2 trains, when phase 2 begins; default fine_tune's.")
flags.DEFINE_float("head_lr", 1e-3, "seed: phase-1 learning rate (Adam).", lower_bound=0)
flags.DEFINE_float("finetune_lr", 1e-4, "seed: phase-2 learning rate (Adam).", lower_bound=0)
flags.DEFINE_integer("seed", 0, "Seed for weights, sampling and shuffling.")
flags.DEFINE_boolean("retrain_source", False, "Train the source even if its "
                     "weights file exists, and overwrite it.")
flags.DEFINE_boolean("skip_scratch", False, "Do not train the from-scratch baseline.")
flags.DEFINE_string("backup_dir", None, "If set, training state is backed up here "
                    "every epoch (keras.callbacks.BackupAndRestore) and finished arms "
                    "are kept: rerunning the same command resumes where it stopped.")

RECIPE_DEFAULTS = {"fine_tune": {"head_epochs": 1, "epochs": 10},
                   "seed": {"head_epochs": 5, "epochs": 10, "batch_size": 256}}


def resolved(values, name):
    """`values[name]` (flag values by name), or the recipe's default when it is None."""
    value = values[name]
    return RECIPE_DEFAULTS[values["recipe"]].get(name) if value is None else value


flags.register_multi_flags_validator(
    ["head_epochs", "epochs", "recipe"],
    lambda f: resolved(f, "head_epochs") <= resolved(f, "epochs"),
    message="--head_epochs must not exceed --epochs.")
flags.register_multi_flags_validator(
    ["train_examples", "val_examples"],
    lambda f: f["train_examples"] + f["val_examples"] <= 60000 and f["val_examples"] < 60000,
    message="--train_examples plus --val_examples must not exceed MNIST's 60000 "
            "training images.")
flags.register_validator("base_lr", lambda v: v is None or v > 0,
                         message="--base_lr must be > 0 (leave it out to run the finder).")


def _distinct_regimes(f):
    """Whether the regimes' sizes as given differ (run() checks them once resolved)."""
    sizes = [f["train_examples"]] + [n for n in f["low_data_examples"] or [] if n]
    return len(set(sizes)) == len(sizes)


flags.register_multi_flags_validator(
    ["train_examples", "low_data_examples"], _distinct_regimes,
    message="each --low_data_examples must differ from --train_examples and from the "
            "others (each is a regime of its own).")


def run():
    import keras
    import tensorflow as tf

    import keras_transfer as kt
    from keras_transfer.pipeline import _cli
    from keras_transfer.pipeline import comparison
    from keras_transfer.pipeline import datasets
    from keras_transfer.pipeline import reference

    deterministic = _cli.make_deterministic(FLAGS.seed)
    verbose = 1 if sys.stdout.isatty() else 2
    out_dir = pathlib.Path(FLAGS.out_dir)
    seconds = {}
    results = {"flags": {name: FLAGS[name].value for name in (
        "data_dir", "out_dir", "source_weights", "source_epochs", "source_examples",
        "recipe", "head_epochs", "epochs", "batch_size", "train_examples",
        "low_data_examples", "val_examples", "head_lr", "finetune_lr", "base_lr", "lr_mult",
        "train_batchnorm", "seed", "retrain_source", "skip_scratch", "backup_dir",
        "dataset", "tfds_data_dir")}, "op_determinism": deterministic}

    # 1. Source -------------------------------------------------------------
    source_path = pathlib.Path(FLAGS.source_weights)
    if FLAGS.retrain_source or not source_path.exists():
        (fx, fy), (fx_test, fy_test) = datasets.load(datasets.FASHION_MNIST, FLAGS.data_dir)
        if FLAGS.source_examples:
            fx, fy = fx[:FLAGS.source_examples], fy[:FLAGS.source_examples]
        print(f"== Source: training on {len(fx)} Fashion-MNIST images, "
              f"{FLAGS.source_epochs} epochs")
        source = reference.source_cnn()
        source.compile(optimizer=keras.optimizers.Adam(1e-3),
                       loss="sparse_categorical_crossentropy", metrics=["accuracy"])
        start = time.perf_counter()
        source_batch = FLAGS.batch_size or 256
        source.fit(datasets.as_dataset(fx, fy, source_batch, shuffle=True, seed=FLAGS.seed),
                   epochs=FLAGS.source_epochs, shuffle=False, verbose=verbose)  # tf.data shuffles
        seconds["source_training"] = time.perf_counter() - start
        accuracy = float(source.evaluate(datasets.as_dataset(fx_test, fy_test, 1000),
                                         verbose=0, return_dict=True)["accuracy"])
        kt.save_weights_by_name(source, source_path)
        kt.weights.record_in_manifest(
            source_path, fashion_mnist_test_accuracy=round(accuracy, 4), seed=FLAGS.seed,
            command=" ".join(["python scripts/fashion_to_mnist.py", "--retrain_source"]
                             + [f"--{n}={FLAGS[n].value}" for n in
                                ("source_epochs", "source_examples")]
                             + [f"--batch_size={source_batch}", f"--seed={FLAGS.seed}"]),
            keras_version=keras.__version__, tensorflow_version=tf.__version__)
        print(f"Source test accuracy on Fashion-MNIST: {accuracy:.4f}; saved {source_path}")
        results["source_test_accuracy"] = accuracy
        keras.utils.set_random_seed(FLAGS.seed)  # the target arms start alike
    entry = kt.weights.manifest_entry(source_path)
    if entry is None:
        logging.warning("%s is not listed in a MANIFEST.json beside it; its sha256 "
                        "is not checked.", source_path)
    elif "fashion_mnist_test_accuracy" in entry:
        results.setdefault("source_test_accuracy", entry["fashion_mnist_test_accuracy"])

    # 2. Target data and plan -------------------------------------------------
    (mx, my), (mx_test, my_test), classes = datasets.load_target(
        FLAGS.dataset, FLAGS.data_dir, tfds_data_dir=FLAGS.tfds_data_dir)
    test = datasets.as_dataset(mx_test, my_test, 1000)
    values = FLAGS.flag_values_dict()
    head_epochs, epochs = resolved(values, "head_epochs"), resolved(values, "epochs")
    options = {name: FLAGS[name].value for name in comparison.FINE_TUNE_FLAGS
               if FLAGS[name].value is not None}  # else fine_tune's defaults
    low_data = FLAGS.low_data_examples
    if low_data is None:  # 1000 and 100, when all images are more than that
        low_data = [1000, 100] if FLAGS.train_examples == 0 \
            and len(mx) - FLAGS.val_examples > 1000 else []
    sizes = [FLAGS.train_examples] + [size for size in low_data if size]
    available = len(mx) - FLAGS.val_examples  # what --train_examples=0 trains on
    if len({size or available for size in sizes}) < len(sizes):
        raise kt.ArgumentError(
            f"--low_data_examples={low_data} repeats a regime: --train_examples=0 trains "
            f"on all {available:,} images not held out. Give low-data sizes below that.")

    def run_regime(size, backup):
        """Both arms on `size` training images (0: all); returns their results."""
        (x_train, y_train), (x_val, y_val) = datasets.holdout_split(
            mx, my, train_examples=size, val_examples=FLAGS.val_examples, seed=FLAGS.seed)
        batch_size = resolved(values, "batch_size") or kt.recipes.batch_size_for(len(x_train))
        data = dict(validation=datasets.as_dataset(x_val, y_val, 1000), test=test,
                    train_eval=datasets.as_dataset(x_train, y_train, 1000), verbose=verbose)

        def fit(model, freeze, scratch, backup_dir):
            # Each epoch's order depends only on the seed and the epoch, so both
            # arms, the finder and a resumed arm (--backup_dir) see the same batches.
            order = datasets.EpochOrder()
            train = datasets.as_dataset(x_train, y_train, batch_size, shuffle=True,
                                        seed=FLAGS.seed, epoch_order=order)
            if FLAGS.recipe == "seed":
                return comparison.run_arm(model, train, freeze=freeze, head_epochs=head_epochs,
                                          epochs=epochs, head_lr=FLAGS.head_lr,
                                          finetune_lr=FLAGS.finetune_lr, callbacks=[order],
                                          backup_dir=backup_dir, **data)
            return comparison.run_fine_tune_arm(
                model, train, scratch=scratch, freeze=freeze, freeze_epochs=head_epochs,
                epochs=epochs, callbacks=[order], backup_dir=backup_dir, **data, **options)

        def train_arm(name, model, freeze, scratch=False):
            """Runs one arm; with --backup_dir, resumes it or reuses it if finished."""
            if backup is None:
                return fit(model, freeze, scratch, None)
            finished, weights = backup / f"{name}.json", backup / f"{name}.h5"
            if finished.is_file() and weights.is_file():
                print(f"== {name}: finished in an earlier run, reusing {weights}")
                kt.load_weights_by_name(model, weights)
                return json.loads(finished.read_text())
            arm = fit(model, freeze, scratch, backup / name)
            kt.save_weights_by_name(model, weights)
            comparison.write_json(arm, finished)
            return arm

        # Transfer arm
        target = reference.target_cnn(classes)
        report = kt.load_weights_by_name(
            target, source_path, sha256=entry["sha256"] if entry else None,
            require=[n for n in reference.FEATURE_LAYERS if target.get_layer(n).weights])
        print(report)
        print(f"== Transfer ({FLAGS.recipe}): {len(x_train)} {FLAGS.dataset} images, batch {batch_size}; "
              f"phase 1 trains the head with the {len(reference.FEATURE_LAYERS)} feature "
              "layers frozen")
        arms = {"transfer": train_arm("transfer", target, len(reference.FEATURE_LAYERS))}
        # Scratch arm
        if not FLAGS.skip_scratch:
            keras.utils.set_random_seed(FLAGS.seed)
            print("== Scratch: the same target from random weights, same data and plan")
            arms["scratch"] = train_arm("scratch", reference.target_cnn(classes), [],
                                       scratch=True)
        return {"train_examples": int(len(x_train)), "batch_size": batch_size, "arms": arms,
                "transfer_report": report, "target": target}

    # 3. Regimes: the first one (all images by default), then the low-data ones -
    regimes = []
    for i, size in enumerate(sizes):
        if i:
            keras.utils.set_random_seed(FLAGS.seed)  # each regime starts alike
        backup = pathlib.Path(FLAGS.backup_dir) if FLAGS.backup_dir else None
        if backup is not None and i:
            backup = backup / f"low_data_{size}"
        regimes.append(run_regime(size, backup))
    first = regimes[0]
    target_name = FLAGS.dataset.replace("/", "_").replace(":", "_")
    kt.save_weights_by_name(first["target"], out_dir / f"{target_name}.h5")
    report = first["transfer_report"]

    # 4. Outputs --------------------------------------------------------------------
    results["recipe"] = FLAGS.recipe
    if FLAGS.recipe == "fine_tune":  # what the flags left to fine_tune
        results["fine_tune_options"] = {**kt.recipes.default_options(), **options,
                                        "freeze_epochs": head_epochs}
    results["transfer_report"] = {"loaded": report.loaded, "skipped": report.skipped,
                                  "missing": list(report.missing), "unused": list(report.unused)}
    results["target_train_examples"] = first["train_examples"]
    results["target_classes"] = int(classes)
    results["arms"] = first["arms"]
    results["regimes"] = [{k: r[k] for k in ("train_examples", "batch_size", "arms")}
                          for r in regimes]
    results["seconds"] = {**seconds, **{
        f"{name}_{phase}" + (f"_{r['train_examples']}" if i else ""): s
        for i, r in enumerate(regimes) for name, arm in r["arms"].items()
        for phase, s in arm["seconds"].items()}}
    labels = {f"{r['train_examples']:,} images": r for r in regimes}
    comparison.plot_regimes({label: (r["arms"], head_epochs) for label, r in labels.items()},
                            out_dir / "comparison.png",
                            title=f"Fashion-MNIST -> {_display_name(FLAGS.dataset)}, "
                                  f"recipe {FLAGS.recipe}")
    comparison.write_json(results, out_dir / "results.json")
    print("\n" + comparison.regimes_table({label: r["arms"] for label, r in labels.items()}))
    print(f"\nWrote {out_dir / f'{target_name}.h5'}, {out_dir / 'comparison.png'}, "
          f"{out_dir / 'results.json'}")


def _display_name(dataset):
    """MNIST and Fashion-MNIST as their authors write them; other tfds names as given."""
    return {"mnist": "MNIST", "fashion_mnist": "Fashion-MNIST"}.get(dataset, dataset)


def main(argv):
    # Imported here, after absl has parsed the flags: a bad flag is refused in
    # well under a second, without loading Keras and its backend.
    from keras_transfer.pipeline import _cli

    return _cli.main_for(run, "fashion_to_mnist")(argv)


if __name__ == "__main__":
    app.run(main)
