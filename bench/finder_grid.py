"""The learning-rate finder on real architectures, against a fixed-rate grid.

For each task and seed: a pretrained base (trained here on a source task),
a new head, and a small target set. For each phase, the rates `fine_tune`
would use are compared with the best of a grid of peak rates (half-decades,
1e-5 ... 1e-1) run for that same phase with `fine_tune` itself:

- phase 1 (the head, base frozen, `freeze_epochs` epochs): the finder's
  suggestion from a sweep of what phase 1 trains;
- phase 2 (everything, discriminative rates, the rest of the epochs), from
  the head that the grid's best phase-1 rate trained: the peak that
  `fine_tune` derives, by each rule below.

Rules for phase 2's peak:
- `phase1`: phase 1's suggestion (`fine_tune` before #27);
- `before:<method>`: a sweep of what phase 2 trains, before any training
  (the head still random): what `fine_tune` can run before its one `fit`,
  read with the finder's `minimum` or `valley` rule;
- `after:<method>`: the same sweep once phase 1 has trained the head.

A rule is a defect when its rate is more than 3x from the grid's best, or
ends more than a point (validation accuracy) below it.

Tasks:
- bert: a KerasHub BertBackbone (2 layers, hidden 32), pretrained to compare
  counts of two token groups; target: which of three groups is most frequent
  (1,000 sequences; 2,000 for validation);
- mobilenet: keras.applications MobileNetV2 (alpha 0.35, 48x48 RGB; its
  BatchNormalization momentum 0.9 instead of 0.999, so that a short
  pretraining leaves usable moving statistics), pretrained on 5,000
  Fashion-MNIST images (3 epochs); target: 1,000 MNIST digits (2,000 for
  validation).

Every build of a task's model is seeded, so that the runs of a grid differ
only in their rate.

With `--phase1_repeats K`, only phase 1 is measured, K times per task and
seed (each repeat another head initialization and data order, the same
pretrained base), on a grid that goes on to 1: how far apart neighbouring
grid rates are from one run to the next, so that "a point below the best"
can be told from noise, and where the best lies when it is the grid's edge.

With `--phase2_repeats K` (mobilenet, seeds 0 and 1), phase 2 is measured K
times per seed: each repeat sweeps phase 1 (for today's rule), trains phase 1
at a fixed rate (`PHASE1_START`: the best of finder_grid.json's phase-1 grids,
not measured again), then runs phase 2 at the grid's rates from 1e-3 to 1e-1
and at the rates of today's rule and of the sweep taken once phase 1 has
trained the head (`after:`), so that a rule's distance from the best can be
told from the spread between repeats.

With `--sweep_noise K` (mobilenet, seeds 0 and 1), one state where phase 1
ended (repeat 0's) is swept K times over what phase 2 trains, each sweep over
another order of the same training set: how far the sweep's reading moves when
only its batches change, and what the mean of the K curves reads.

With `--probe K` (mobilenet, seeds 0 and 1), K repeats as `--phase2_repeats`
makes them, each reading phase 2's peak from short trial runs instead of a
sweep: from where phase 1 ended, `fine_tune` runs phase 2 for `--probe_epochs`
epochs at each grid rate from 1e-3 to 1e-1, and the probe reads each trial by
its accuracy and loss on a probe set (the first half of the validation set)
and by its loss on the training set. The full phase 2 (3 epochs) at each grid
rate is graded on the other half, so a probe's choice is graded on data it did
not see. `--probe_pct_start 0.9` gives a one-epoch trial the warm-up of a
three-epoch phase 2 (0.3 of 3 epochs), then a short anneal.

Usage:
  python bench/finder_grid.py --tasks bert mobilenet --seeds 0 1 --out bench/results/finder_grid.json
  python bench/finder_grid.py --tasks mobilenet --seeds 0 1 --phase1_repeats 3 --out bench/results/finder_phase1_repeats.json
  python bench/finder_grid.py --tasks mobilenet --seeds 0 1 --phase2_repeats 3 --out bench/results/finder_phase2_repeats.json
  python bench/finder_grid.py --tasks mobilenet --seeds 0 1 --sweep_noise 5 --out bench/results/finder_sweep_noise.json
  python bench/finder_grid.py --tasks mobilenet --seeds 0 1 --probe 3 --out bench/results/finder_probe.json
  python bench/finder_grid.py --tasks mobilenet --seeds 0 1 --probe 3 --probe_pct_start 0.9 --out bench/results/finder_probe_warmup.json
"""

import argparse
import json
import math
import os
import pathlib
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_transfer as kt  # noqa: E402
from keras_transfer import recipes  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parent.parent
RATES = [10 ** (e / 2) for e in range(-10, -1)]  # 1e-5 ... 1e-1, half-decades
LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


# -- tasks ---------------------------------------------------------------------

def bert_backbone():
    import keras_hub

    return keras_hub.models.BertBackbone(vocabulary_size=64, num_layers=2, num_heads=2,
                                         hidden_dim=32, intermediate_dim=64,
                                         max_sequence_length=32)


def bert_tokens(n, seed, labels):
    rng = np.random.default_rng(seed)
    ids = rng.integers(4, 64, (n, 32))
    groups = np.stack([((ids >= a) & (ids < b)).sum(1) for a, b in ((4, 24), (24, 44), (44, 64))], 1)
    if labels == "source":
        y = (groups[:, 0] > groups[:, 1]).astype("int32")
    else:
        y = groups.argmax(1).astype("int32")
    x = {"token_ids": ids, "segment_ids": np.zeros_like(ids), "padding_mask": np.ones_like(ids)}
    return x, y


def bert_task(seed):
    import keras_hub

    keras.utils.set_random_seed(seed)
    backbone = bert_backbone()
    source = keras_hub.models.BertTextClassifier(backbone=backbone, num_classes=2,
                                                 preprocessor=None)
    source.compile(optimizer=keras.optimizers.Adam(1e-3), loss=LOSS, metrics=["accuracy"])
    x, y = bert_tokens(3000, seed, "source")
    source.fit(x, y, epochs=4, batch_size=32, verbose=0)
    weights = backbone.get_weights()

    def build(variant=0):  # variant: another head initialization and data order
        keras.utils.set_random_seed(seed + 1 + 1000 * variant)
        fresh = bert_backbone()
        fresh.set_weights(weights)
        model = keras_hub.models.BertTextClassifier(backbone=fresh, num_classes=3,
                                                    preprocessor=None)
        return model, [fresh]

    return build, bert_tokens(1000, seed + 100, "target"), bert_tokens(2000, seed + 200, "target")


def rgb48(x):
    return np.repeat(keras.ops.convert_to_numpy(keras.ops.image.resize(
        x[..., None].astype("float32"), (48, 48))), 3, axis=-1) / 127.5 - 1.0


def mobilenet(seed=None):
    if seed is not None:
        keras.utils.set_random_seed(seed)
    base = keras.applications.MobileNetV2(weights=None, include_top=False, alpha=0.35,
                                          input_shape=(48, 48, 3))
    for layer in base.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = 0.9
    return base


def mobilenet_task(seed):
    from keras_transfer.pipeline import datasets

    base = mobilenet(seed)
    (fx, fy), _ = datasets.load(datasets.FASHION_MNIST)
    rng = np.random.default_rng(seed)
    pick = rng.choice(len(fx), 5000, replace=False)
    source = keras.Sequential([keras.Input((48, 48, 3)), base,
                               keras.layers.GlobalAveragePooling2D(),
                               keras.layers.Dense(10)])
    source.compile(optimizer=keras.optimizers.Adam(1e-3), loss=LOSS, metrics=["accuracy"])
    source.fit(rgb48(fx[pick]), fy[pick], epochs=3, batch_size=64, verbose=0)
    weights = base.get_weights()
    (mx, my), _ = datasets.load(datasets.MNIST)
    pick = rng.choice(len(mx), 3000, replace=False)
    x, y = rgb48(mx[pick]), my[pick].astype("int32")

    def build(variant=0):  # variant: another head initialization and data order
        fresh = mobilenet(seed + 1 + 1000 * variant)
        fresh.set_weights(weights)
        inputs = keras.Input((48, 48, 3))
        pooled = keras.layers.GlobalAveragePooling2D()(fresh(inputs))
        return keras.Model(inputs, keras.layers.Dense(10, name="head")(pooled)), [fresh]

    return build, (x[:1000], y[:1000]), (x[1000:], y[1000:])


TASKS = {"bert": bert_task, "mobilenet": mobilenet_task}


# -- runs ----------------------------------------------------------------------

def accuracy(model, data):
    x, y = data
    logits = model.predict(x, batch_size=256, verbose=0)
    return float((np.argmax(logits, -1) == y).mean())


def run_phase(model, freeze, train, val, rate, phase, epochs, **options):
    """`fine_tune` for one phase at a fixed peak rate (`options` go to it);
    validation accuracy."""
    kt.fine_tune(model, train, freeze=freeze, epochs=epochs,
                 freeze_epochs=epochs if phase == 1 else 0, base_lr=rate, loss=LOSS,
                 metrics=(), verbose=0, batch_size=recipes.batch_size_for(len(train[1])),
                 **options)
    value = accuracy(model, val)
    return value if math.isfinite(value) else 0.0


def sweep(model, freeze, train, phase, num_steps):
    """The finder in the state `fine_tune` gives `phase` (its groups, its
    optimizer): its `LearningRateCurve`."""
    groups = kt.layer_groups(model, freeze)
    multipliers = [10.0 ** (-(len(groups) - i) / len(groups)) for i in range(len(groups))]
    optimizer = kt.discriminative_optimizer(model, groups, 1e-3, multipliers=multipliers)
    selected = kt.select_layers(model, freeze)
    policy = kt.TwoPhaseSchedule(selected, 1, train_batchnorm=True, head_train_batchnorm=True,
                                 verbose=0)
    restore = kt._layers.snapshot_trainable(model)  # noqa: SLF001 (a bench)
    policy.apply(model, phase)
    model.compile(optimizer=optimizer, loss=LOSS)
    curve = kt.find_learning_rate(model, train, num_steps=num_steps,
                                  batch_size=recipes.batch_size_for(len(train[1])))
    restore()
    return curve


def _curve(curve):
    return {"learning_rates": list(curve.learning_rates), "losses": list(curve.losses),
            "raw_losses": list(curve.raw_losses), "minimum": curve.minimum,
            "valley": curve.valley, "steepest": curve.steepest}


def grid(build, train, val, phase, epochs, start=None, rates=RATES):
    """`phase` run at each of `rates`, the base frozen as `build` returns it;
    validation accuracy by the rate's label ("3e-02")."""
    results = {}
    for rate in rates:
        model, base = build()
        if start is not None:
            model.set_weights(start)
        label = f"{rate:.0e}"
        results[label] = run_phase(model, base, train, val, rate, phase, epochs)
        print(f"  phase {phase} grid {label}: {results[label]:.4f}", flush=True)
    return results


def task_seed(name, seed, num_steps):
    t0 = time.perf_counter()
    build, train, val = TASKS[name](seed)
    record = {"task": name, "seed": seed, "pretrain_seconds": time.perf_counter() - t0}
    # phase 1
    model, base = build()
    head_curve = sweep(model, base, train, 1, num_steps)
    record["phase1_suggestion"] = head_curve.suggestion
    record["curves"] = {"phase1": _curve(head_curve)}
    record["phase1_grid"] = grid(build, train, val, 1, 1)
    best1 = max(RATES, key=lambda r: record["phase1_grid"][f"{r:.0e}"])
    record["phase1_best_rate"] = best1
    model, base = build()
    record["phase1_at_suggestion"] = run_phase(model, base, train, val,
                                               record["phase1_suggestion"], 1, 1)
    # the head the grid's best phase-1 rate trains: phase 2 starts there
    model, base = build()
    run_phase(model, base, train, val, best1, 1, 1)
    start = model.get_weights()
    fresh, fresh_base = build()
    before = sweep(fresh, fresh_base, train, 2, num_steps)
    model, base = build()
    model.set_weights(start)
    after = sweep(model, base, train, 2, num_steps)
    record["curves"].update(before=_curve(before), after=_curve(after))
    rules = {"phase1": record["phase1_suggestion"],
             "before:minimum": before.minimum, "before:valley": before.valley,
             "after:minimum": after.minimum, "after:valley": after.valley}
    record["phase2_rules"] = rules
    record["phase2_grid"] = grid(build, train, val, 2, 3, start)
    record["phase2_best_rate"] = max(RATES, key=lambda r: record["phase2_grid"][f"{r:.0e}"])
    record["phase2_at_rule"] = {}
    for rule, rate in rules.items():
        model, base = build()
        model.set_weights(start)
        record["phase2_at_rule"][rule] = run_phase(model, base, train, val, rate, 2, 3)
    record["seconds"] = time.perf_counter() - t0
    return record


WIDE_RATES = RATES + [10 ** -0.5, 1.0]  # phase 1 trains a head only: past 1e-1 too


def phase1_repeats(name, seed, num_steps, repeats):
    """Phase 1 only, `repeats` times: the finder's rules and the grid, each
    repeat from another head initialization and data order."""
    t0 = time.perf_counter()
    build, train, val = TASKS[name](seed)
    record = {"task": name, "seed": seed, "repeats": []}
    for variant in range(repeats):
        model, base = build(variant)
        curve = sweep(model, base, train, 1, num_steps)
        rules = {m: getattr(curve, m) for m in ("minimum", "valley", "steepest")}
        grid_ = grid(lambda: build(variant), train, val, 1, 1, rates=WIDE_RATES)
        print(f"  repeat {variant}: rules {rules}", flush=True)
        record["repeats"].append({"rules": rules, "suggestion": curve.suggestion,
                                  "grid": grid_, "curve": _curve(curve)})
    record["seconds"] = time.perf_counter() - t0
    return record


# phase 2's start in --phase2_repeats: the best phase-1 rate of finder_grid.json's
# grid, which the mean grid of finder_phase1_repeats.json confirms on both seeds
PHASE1_START = {("mobilenet", 0): 1e-1, ("mobilenet", 1): 10 ** -1.5}
PHASE2_RATES = RATES[4:]  # 1e-3 ... 1e-1, where each phase-2 best measured lies (rules run at their own rate)


def phase2_repeats(name, seed, num_steps, repeats):
    """Phase 2, `repeats` times: each repeat another head initialization and
    data order, phase 1 trained at `PHASE1_START`'s fixed rate, then phase 2
    at each grid rate and at the rates of today's rule (phase 1's suggestion)
    and of a sweep of what phase 2 trains, taken there."""
    t0 = time.perf_counter()
    build, train, val = TASKS[name](seed)
    record = {"task": name, "seed": seed, "phase1_rate": PHASE1_START[name, seed],
              "phase2_repeats": []}
    for variant in range(repeats):
        model, base = build(variant)
        rules = {"phase1": sweep(model, base, train, 1, num_steps).suggestion}
        model, base = build(variant)
        phase1_accuracy = run_phase(model, base, train, val, record["phase1_rate"], 1, 1)
        start = model.get_weights()
        model, base = build(variant)  # as task_seed does: variant 0 repeats its run
        model.set_weights(start)
        after = sweep(model, base, train, 2, num_steps)
        rules.update({"after:minimum": after.minimum, "after:valley": after.valley})
        grid_ = grid(lambda: build(variant), train, val, 2, 3, start, rates=PHASE2_RATES)
        at_rule = {}
        for rule, rate in rules.items():
            model, base = build(variant)
            model.set_weights(start)
            at_rule[rule] = run_phase(model, base, train, val, rate, 2, 3)
        print(f"  repeat {variant}: rules {rules}, at them {at_rule}", flush=True)
        record["phase2_repeats"].append({"phase1_accuracy": phase1_accuracy,
                                         "rules": rules, "grid": grid_, "at_rule": at_rule,
                                         "curve_after": _curve(after)})
    record["seconds"] = time.perf_counter() - t0
    return record


def sweep_noise(name, seed, num_steps, sweeps):
    """One state where phase 1 ended (repeat 0's, phase 1 at `PHASE1_START`'s
    rate), swept `sweeps` times over what phase 2 trains: the first in the data's
    order, the others each over another permutation of the same training set.
    Only the batches differ, so the spread of the readings is the sweep's own."""
    t0 = time.perf_counter()
    build, (x, y), val = TASKS[name](seed)
    model, base = build(0)
    phase1_accuracy = run_phase(model, base, (x, y), val, PHASE1_START[name, seed], 1, 1)
    start = model.get_weights()
    record = {"task": name, "seed": seed, "phase1_rate": PHASE1_START[name, seed],
              "phase1_accuracy": phase1_accuracy, "sweeps": []}
    for k in range(sweeps):
        order = np.arange(len(y)) if k == 0 else np.random.default_rng(k).permutation(len(y))
        model, base = build(0)
        model.set_weights(start)
        curve = sweep(model, base, (x[order], y[order]), 2, num_steps)
        print(f"  sweep {k}: minimum {curve.minimum:.2g}, valley {curve.valley:.2g}", flush=True)
        record["sweeps"].append({"order": k, "curve": _curve(curve)})
    record["seconds"] = time.perf_counter() - t0
    return record


def probe(name, seed, repeats, probe_epochs, pct_start=None):
    """Phase 2's peak read from short trial runs (see the module docstring)."""
    t0 = time.perf_counter()
    build, train, (vx, vy) = TASKS[name](seed)
    half = len(vy) // 2
    probe_set, graded = (vx[:half], vy[:half]), (vx[half:], vy[half:])
    record = {"task": name, "seed": seed, "phase1_rate": PHASE1_START[name, seed],
              "probe_epochs": probe_epochs, "probe_pct_start": pct_start, "repeats": []}
    options = {} if pct_start is None else {"pct_start": pct_start}
    for variant in range(repeats):
        model, base = build(variant)
        phase1_accuracy = run_phase(model, base, train, graded, record["phase1_rate"], 1, 1)
        start = model.get_weights()
        trials = {}
        for rate in PHASE2_RATES:
            model, base = build(variant)
            model.set_weights(start)
            trial_accuracy = run_phase(model, base, train, probe_set, rate, 2, probe_epochs,
                                       **options)
            trials[f"{rate:.0e}"] = {"probe_accuracy": trial_accuracy,
                                     "probe_loss": _loss(model, probe_set),
                                     "train_loss": _loss(model, train)}
        graded_grid = grid(lambda: build(variant), train, graded, 2, 3, start,
                           rates=PHASE2_RATES)
        print(f"  repeat {variant}: trials {trials}", flush=True)
        record["repeats"].append({"phase1_accuracy": phase1_accuracy, "trials": trials,
                                  "grid": graded_grid})
    record["seconds"] = time.perf_counter() - t0
    return record


def _loss(model, data):
    """Mean cross-entropy of `model` on `data` (inf when it diverged)."""
    x, y = data
    value = float(keras.ops.convert_to_numpy(
        LOSS(y, model.predict(x, batch_size=256, verbose=0))))
    return value if math.isfinite(value) else float("inf")


PROBE_READINGS = {"probe accuracy": ("probe_accuracy", max),
                  "probe loss": ("probe_loss", min), "training loss": ("train_loss", min)}


def analyse_probe(records):
    """Each probe reading's choice against the full phase 2's grid, per repeat
    and on average. Prints Markdown."""
    for rec in records:
        repeats = rec["repeats"]
        pct_start = rec.get("probe_pct_start")  # absent in files made before the flag
        print(f"\n{rec['task']} {rec['seed']}: phase-2 accuracy on the graded half over "
              f"{len(repeats)} repeats (phase 1 at {rec['phase1_rate']:.2g}; trials of "
              f"{rec['probe_epochs']} epoch(s), pct_start "
              f"{'as fine_tune' if pct_start is None else pct_start})\n")
        _, best, top = _mean_grid(repeats, PHASE2_RATES)
        print(f"\nbest by mean: {best:.2g} ({top:.3f})\n")
        print("| reading | choice per repeat | accuracy there | mean | points below the "
              "best mean | points below each repeat's own best |")
        print("|---|---|---|---|---|---|")
        for reading, (key, pick) in PROBE_READINGS.items():
            choices = [pick(r["trials"], key=lambda k: r["trials"][k][key])
                       for r in repeats]
            values = [r["grid"][c] for r, c in zip(repeats, choices)]
            own = [100 * (max(r["grid"].values()) - v) for r, v in zip(repeats, values)]
            below = 100 * (top - statistics.mean(values))
            print(f"| {reading} | {', '.join(choices)} | "
                  f"{', '.join(f'{v:.3f}' for v in values)} | {statistics.mean(values):.3f} | "
                  f"{below:.1f} | {', '.join(f'{b:.1f}' for b in own)} |")


def analyse_sweep_noise(records):
    for record in records:
        curves = [s["curve"] for s in record["sweeps"]]
        minima = [c["minimum"] for c in curves]
        lowest = [10 * m for m in minima]
        print(f"{record['task']} seed {record['seed']} (phase 1 at {record['phase1_rate']:.0e}, "
              f"validation {record['phase1_accuracy']:.3f}): {len(curves)} sweeps")
        print("  minimum rule per sweep: " + ", ".join(f"{m:.2g}" for m in minima)
              + f"; max / min {max(minima) / min(minima):.1f}, "
              f"median {statistics.median(minima):.2g}")
        print("  lowest point per sweep: " + ", ".join(f"{r:.2g}" for r in lowest))
        # The mean of the smoothed curves over the steps every sweep ran (their
        # rates are the same step for step), read with the finder's own rule.
        n = min(len(c["losses"]) for c in curves)
        mean = np.mean([c["losses"][:n] for c in curves], axis=0)
        rates = curves[0]["learning_rates"][:n]
        pooled = kt.lr_finder._curve(rates, list(mean), list(mean), "minimum", False)  # noqa: SLF001
        print(f"  mean curve of all {len(curves)}: minimum rule {pooled.minimum:.2g}")


def analyse_repeats(records):
    """The phase-1 repeats: per rate, the mean and spread of the grid; each
    repeat's rules against the mean grid. Prints Markdown."""
    for rec in records:
        print(f"\n{rec['task']} {rec['seed']}: phase-1 validation accuracy over "
              f"{len(rec['repeats'])} repeats (mean, min to max)\n")
        mean, best, top = _mean_grid(rec["repeats"], WIDE_RATES)
        grid = {repr(rate): value for rate, value in zip(WIDE_RATES, mean)}
        print(f"\nbest by mean: {best:.2g} ({top:.3f})\n")
        print("| repeat | rule | rate | ratio to best | points below the best mean (est.) |")
        print("|---|---|---|---|---|")
        for i, r in enumerate(rec["repeats"]):
            rules = {"suggestion": r["suggestion"], **r["rules"],
                     "lowest loss (suggestion x10)": 10 * r["suggestion"]}
            for rule, rate in rules.items():
                below = 100 * (top - interpolated(grid, rate))
                ratio = rate / best
                flag = " **defect**" if is_defect(ratio, below) else ""
                print(f"| {i} | {rule} | {rate:.2g} | {ratio:.2g} | {below:.1f}{flag} |")


def analyse_phase2_repeats(records):
    """The phase-2 repeats: the grid's mean and spread per rate; each rule's
    measured accuracy, per repeat and on average, against the best of the
    mean grid. Prints Markdown."""
    for rec in records:
        repeats = rec["phase2_repeats"]
        print(f"\n{rec['task']} {rec['seed']}: phase-2 validation accuracy over "
              f"{len(repeats)} repeats (phase 1 at {rec['phase1_rate']:.2g}; mean, min to "
              f"max)\n")
        _, best, top = _mean_grid(repeats, PHASE2_RATES)
        print(f"\nbest by mean: {best:.2g} ({top:.3f})\n")
        print("| rule | rates | accuracy per repeat | mean | ratio to best | points below "
              "the best mean | points below each repeat's own best |")
        print("|---|---|---|---|---|---|---|")
        for rule in repeats[0]["rules"]:
            rates = [r["rules"][rule] for r in repeats]
            values = [r["at_rule"][rule] for r in repeats]
            ratio = statistics.median(rates) / best
            below = 100 * (top - statistics.mean(values))
            flag = " **defect**" if is_defect(ratio, below) else ""
            own = [100 * (max(r["grid"].values()) - r["at_rule"][rule]) for r in repeats]
            print(f"| {rule} | {', '.join(f'{x:.2g}' for x in rates)} | "
                  f"{', '.join(f'{v:.3f}' for v in values)} | {statistics.mean(values):.3f} | "
                  f"{ratio:.2g} | {below:.1f}{flag} | {', '.join(f'{b:.1f}' for b in own)} |")


def _mean_grid(repeats, rates):
    """Prints the grid's mean and range over `repeats` as a Markdown table;
    returns the mean per rate, the best rate by mean (the rate run, not its
    rounded label) and its mean."""
    keys = list(repeats[0]["grid"])  # labels ("3e-02") of `rates`, in order
    assert keys == [f"{rate:.0e}" for rate in rates], keys
    runs = np.array([[r["grid"][k] for k in keys] for r in repeats])
    mean = runs.mean(0)
    print("| rate | " + " | ".join(keys) + " |")
    print("|---|" + "---|" * len(keys))
    print("| mean | " + " | ".join(f"{m:.3f}" for m in mean) + " |")
    print("| range | " + " | ".join(f"{lo:.2f}-{hi:.2f}" for lo, hi in
                                   zip(runs.min(0), runs.max(0))) + " |")
    return mean, rates[int(np.argmax(mean))], float(mean.max())


def verdicts(record):
    out = {}
    best1 = record["phase1_best_rate"]
    acc1 = record["phase1_grid"][f"{best1:.0e}"]
    s1 = record["phase1_suggestion"]
    out["phase1"] = {"ratio": s1 / best1, "points_below": 100 * (acc1 - record["phase1_at_suggestion"])}
    best2 = record["phase2_best_rate"]
    acc2 = record["phase2_grid"][f"{best2:.0e}"]
    for rule, rate in record["phase2_rules"].items():
        out[f"phase2:{rule}"] = {"ratio": rate / best2,
                                 "points_below": 100 * (acc2 - record["phase2_at_rule"][rule])}
    for v in out.values():
        v["defect"] = is_defect(v["ratio"], v["points_below"])
    return out


def is_defect(ratio, points_below):
    """The issue's criterion: more than 3x from the grid's best rate, or more
    than a point of validation accuracy below it."""
    return not (1 / 3 <= ratio <= 3) or points_below > 1.0


def interpolated(grid, rate):
    """Validation accuracy at `rate`, log-linear between grid points (the
    edge value outside): an estimate for rules that were not run."""
    rates = np.log([float(k) for k in grid])
    values = np.asarray(list(grid.values()))
    order = np.argsort(rates)
    return float(np.interp(math.log(rate), rates[order], values[order]))


def analyse(records):
    """Every rule (minimum, valley, steepest, of each sweep) against the grids,
    from the stored curves; accuracies interpolated. Prints a Markdown table."""
    print("| task, seed | phase | rule | rate | grid best | ratio | points below (est.) |")
    print("|---|---|---|---|---|---|---|")
    for rec in records:
        best1, best2 = rec["phase1_best_rate"], rec["phase2_best_rate"]
        top1 = rec["phase1_grid"][f"{best1:.0e}"]
        top2 = rec["phase2_grid"][f"{best2:.0e}"]
        rows = [(1, f"phase-1 sweep: {m}", rec["curves"]["phase1"][m], best1, top1,
                 rec["phase1_grid"]) for m in ("minimum", "valley", "steepest")]
        rows += [(2, f"{sweep} sweep: {m}", rec["curves"][sweep][m], best2, top2,
                  rec["phase2_grid"]) for sweep in ("phase1", "before", "after")
                 for m in ("minimum", "valley", "steepest")]
        for phase, rule, rate, best, top, grid in rows:
            below = 100 * (top - interpolated(grid, rate))
            flag = " **defect**" if is_defect(rate / best, below) else ""
            print(f"| {rec['task']} {rec['seed']} | {phase} | {rule} | {rate:.2g} | {best:.2g} | "
                  f"{rate / best:.2g} | {below:.1f}{flag} |")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", nargs="+", default=["bert", "mobilenet"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--num_steps", type=int, default=100)
    parser.add_argument("--out", default=None)
    repeats = parser.add_mutually_exclusive_group()
    repeats.add_argument("--phase1_repeats", type=int, default=0, help="measure phase 1 "
                         "only, this many times per task and seed")
    repeats.add_argument("--phase2_repeats", type=int, default=0, help="measure phase 2, "
                         "this many times per seed (mobilenet, seeds 0 and 1)")
    repeats.add_argument("--sweep_noise", type=int, default=0, help="sweep phase 2 this "
                         "many times from one state, over other orders of the same data")
    repeats.add_argument("--probe", type=int, default=0, help="read phase 2's peak from "
                         "short trial runs, this many repeats per seed")
    parser.add_argument("--probe_epochs", type=int, default=1, help="with --probe: "
                        "each trial's length in epochs")
    parser.add_argument("--probe_pct_start", type=float, default=None, help="with --probe: "
                        "the trials' one-cycle warm-up fraction (fine_tune's own by "
                        "default); 0.9 of one epoch warms up over as many steps as a "
                        "3-epoch phase 2 does")
    parser.add_argument("--analyse", default=None, help="a results file: print every "
                        "rule against its grids")
    args = parser.parse_args()
    unknown = [(name, seed) for name in args.tasks for seed in args.seeds
               if (name, seed) not in PHASE1_START]
    given = [flag for flag, default in (("--probe_epochs", 1), ("--probe_pct_start", None))
             if getattr(args, flag[2:]) != default]
    if given and not args.probe:
        parser.error(f"{' and '.join(given)} only appl{'y' if len(given) > 1 else 'ies'} "
                     "with --probe K, which was not given")
    if (args.phase2_repeats or args.sweep_noise or args.probe) and unknown:
        parser.error(f"--phase2_repeats, --sweep_noise and --probe have a phase-1 rate for "
                     f"{sorted(PHASE1_START)} only, not for {unknown}: pass --tasks mobilenet "
                     "--seeds 0 1")
    if args.analyse:
        records = json.loads(pathlib.Path(args.analyse).read_text())["records"]
        of = (analyse_phase2_repeats if "phase2_repeats" in records[0] else
              analyse_probe if "probe_epochs" in records[0] else
              analyse_sweep_noise if "sweeps" in records[0] else
              analyse_repeats if "repeats" in records[0] else analyse)
        return of(records)
    records = []
    for name in args.tasks:
        for seed in args.seeds:
            print(f"{name}, seed {seed}", flush=True)
            if args.phase2_repeats:
                records.append(phase2_repeats(name, seed, args.num_steps, args.phase2_repeats))
                _write(args.out, records)
                continue
            if args.probe:
                records.append(probe(name, seed, args.probe, args.probe_epochs,
                                     args.probe_pct_start))
                _write(args.out, records)
                continue
            if args.sweep_noise:
                records.append(sweep_noise(name, seed, args.num_steps, args.sweep_noise))
                _write(args.out, records)
                continue
            if args.phase1_repeats:
                records.append(phase1_repeats(name, seed, args.num_steps, args.phase1_repeats))
                _write(args.out, records)
                continue
            record = task_seed(name, seed, args.num_steps)
            record["verdicts"] = verdicts(record)
            records.append(record)
            print(json.dumps({k: record[k] for k in ("phase1_suggestion", "phase1_best_rate",
                                                    "phase2_rules", "phase2_best_rate",
                                                    "verdicts")}, indent=1), flush=True)
            _write(args.out, records)


def _write(out, records):
    if out:
        pathlib.Path(out).write_text(json.dumps(
            {"command": "python bench/finder_grid.py " + " ".join(sys.argv[1:]),
             "records": records}, indent=1) + "\n")


if __name__ == "__main__":
    main()
