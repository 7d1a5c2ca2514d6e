"""One arm of `fine_tune` on MNIST with chosen options; prints one JSON line.

The runs behind `fine_tune`'s defaults (BENCHMARKS.md, "Choosing the recipe's
defaults") were made with earlier versions of this script, one line per run;
their raw output is in bench/results/recipe_grid/grid*.jsonl (each line holds
the options it ran with; `tag` and `augment` are gone, and grid1-5 predate
`head_lr_mult`). A transfer arm loads the shipped source weights and freezes the 12
feature layers in phase 1 (or only the first --transfer_layers, the rest starting
from their initial weights; with --transfer_dense 1 also the hidden Dense1, so only
the classifier starts fresh); a scratch arm starts from random weights with
nothing frozen and one rate for every layer (`lr_mult=1`, no phase 1), as
bench/transfer_gains.py runs them. Up to grid8, a scratch line records the
command's --freeze_epochs and --lr_mult, not the 0 and 1 it ran with; later
lines record what ran.

usage: python bench/recipe_grid.py --size 10000 --arm transfer [--seed 0] [--epochs 10]
           [--batch 256] [--base_lr R] [--lr_mult 10] [--train_bn 1] [--head_lr_mult 1]
           [--freeze_epochs 1] [--method minimum] [--transfer_layers 12]
           [--transfer_dense 0] [--shrink 1 --perturb 0] >> grid.jsonl
       (--size 0: all 55,000 images not held out for validation)
"""

import argparse
import json
import os
import pathlib
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

REPO = pathlib.Path(__file__).resolve().parent.parent


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--size", type=int, default=10000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--arm", choices=["transfer", "scratch"], default="transfer")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--freeze_epochs", type=int, default=1)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--base_lr", type=float, default=None, help="default: the finder's")
    p.add_argument("--lr_mult", type=float, default=10)
    p.add_argument("--train_bn", type=int, default=1)
    p.add_argument("--pct_start", type=float, default=0.3)
    p.add_argument("--div", type=float, default=5)
    p.add_argument("--head_pct_start", type=float, default=0.99)
    p.add_argument("--head_lr_mult", type=float, default=1.0)
    p.add_argument("--method", default="minimum", help="the finder's rule")
    p.add_argument("--transfer_layers", type=int, default=12,
                   help="transfer: load and freeze only the first N of the 12 feature "
                        "layers; the others keep their initial weights and train from "
                        "the start")
    p.add_argument("--transfer_dense", type=int, default=0,
                   help="transfer: 1 also loads the source's hidden Dense1 into Dense1_1 and "
                        "freezes it in phase 1, so only the classifier Dense2_2 starts fresh")
    p.add_argument("--shrink", type=float, default=1.0,
                   help="transfer: keras_transfer.shrink_perturb on the loaded "
                        "convolutions: w = shrink * w + perturb * (this seed's initial w)")
    p.add_argument("--perturb", type=float, default=0.0)
    a = p.parse_args()

    import keras
    import tensorflow as tf

    import keras_transfer as kt
    from keras_transfer.pipeline import datasets
    from keras_transfer.pipeline import reference

    keras.utils.set_random_seed(a.seed)
    tf.config.experimental.enable_op_determinism()
    (mx, my), (tx, ty) = datasets.load(datasets.MNIST)
    (xtr, ytr), (xv, yv) = datasets.holdout_split(mx, my, train_examples=a.size, seed=a.seed)
    train = datasets.as_dataset(xtr, ytr, a.batch, shuffle=True, seed=a.seed)
    val, test = datasets.as_dataset(xv, yv, 1000), datasets.as_dataset(tx, ty, 1000)
    model = reference.target_cnn()
    mix = a.arm == "transfer" and (a.shrink, a.perturb) != (1.0, 0.0)
    if mix:  # keep this seed's fresh initialization, the mix's w_fresh, before the load
        initial = keras.models.clone_model(model)
        initial.set_weights(model.get_weights())
    if a.arm == "transfer":
        kept = list(reference.FEATURE_LAYERS[:a.transfer_layers])
        fresh = {n: f"{n} (not loaded)" for n in reference.FEATURE_LAYERS if n not in kept}
        if a.transfer_dense:
            kept.append("Dense1_1")
            fresh["Dense1_1"] = "Dense1"
        report = kt.load_weights_by_name(model, REPO / "weights" / "fashion_mnist.h5",
                                         rename=fresh)
        assert not set(report.loaded) & (set(fresh) - set(kept)), report
        assert not a.transfer_dense or "Dense1_1" in report.loaded, report
        if mix:
            kt.shrink_perturb(model, layers=[n for n in report.loaded if n.startswith("Conv")],
                              shrink=a.shrink, perturb=a.perturb, fresh=initial)
        freeze, freeze_epochs, lr_mult = kept, a.freeze_epochs, a.lr_mult
    else:
        freeze, freeze_epochs, lr_mult = [], 0, 1.0
    start = time.perf_counter()
    history = kt.fine_tune(
        model, train, validation=val, freeze=freeze, epochs=a.epochs,
        freeze_epochs=freeze_epochs, base_lr=a.base_lr, lr_mult=lr_mult,
        train_batchnorm=bool(a.train_bn), pct_start=a.pct_start, div=a.div,
        head_pct_start=a.head_pct_start, head_lr_mult=a.head_lr_mult,
        finder={"method": a.method}, verbose=0)
    seconds = time.perf_counter() - start
    accuracy = float(model.evaluate(test, verbose=0, return_dict=True)["accuracy"])
    # what ran: a scratch arm overrides --freeze_epochs and --lr_mult
    used = dict(vars(a), freeze_epochs=freeze_epochs, lr_mult=lr_mult)
    print(json.dumps(dict(used, test=accuracy, base_lr_used=history.base_lr,
                          seconds=round(seconds, 1),
                          val=[round(v, 4) for v in history.history["val_accuracy"]],
                          val_loss=[round(v, 5) for v in history.history["val_loss"]])),
          flush=True)


if __name__ == "__main__":
    main()
