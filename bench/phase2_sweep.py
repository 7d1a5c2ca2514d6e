"""Phase 2's peak from its own sweep (`fine_tune(sweep_phase2=True)`) on the reference pipeline.

For each training-set size and seed, runs the reference pipeline's transfer
arm (scripts/fashion_to_mnist.py, the shipped source weights, 5,000 images
held out for validation, `--skip_scratch`: the scratch arm has no phase 1, so
no second sweep, and does not change) twice: with `fine_tune`'s rule today
(phase 2 peaks at phase 1's suggestion) and with `--sweep_phase2` (phase 2
peaks at the suggestion of a sweep of what phase 2 trains, run when phase 2
begins). The two arms alternate their order from one run to the next. MNIST
test accuracy at the end, paired by seed.

Writes bench/results/phase2_sweep.json (every run; the sweep arm's runs with
their second sweep's curve) and prints a Markdown table: per size, each arm's
mean [min, max], the mean paired difference with its standard error, and
each arm's phase-2 peak (median over the seeds); `--analyse` prints it again
from the file, with each second sweep's smoothed loss: how much it moves
below 1e-3, and where it is lowest; and, for every stored sweep taken when
phase 1 ended (this file's, finder_grid.json's and finder_phase2_repeats.json's),
where its loss passes 1.5 times its lowest, against a good phase-2 peak.

usage: python bench/phase2_sweep.py [--sizes 100 300 1000 10000] [--seeds 0 1 2]
                                    [--out bench/results/phase2_sweep.json]
       (size 0 means all 55,000 images not held out for validation)
"""

import argparse
import json
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parent.parent
ARMS = {"phase1": [], "sweep": ["--sweep_phase2"]}


def run(size, seed, arm):
    with tempfile.TemporaryDirectory() as out:
        t0 = time.perf_counter()
        subprocess.run([sys.executable, str(REPO / "scripts" / "fashion_to_mnist.py"),
                        f"--train_examples={size}", "--low_data_examples=0", f"--seed={seed}",
                        f"--out_dir={out}", "--skip_scratch", *ARMS[arm]],
                       check=True, stdout=subprocess.DEVNULL)
        results = json.loads((pathlib.Path(out) / "results.json").read_text())
    data = results["arms"]["transfer"]
    return {"size": results["target_train_examples"], "seed": seed, "arm": arm,
            "options": results["fine_tune_options"], "test_accuracy": data["test_accuracy"],
            "test_accuracy_phase1": data["test_accuracy_phase1"], "base_lr": data["base_lr"],
            "finetune_lr": data["finetune_lr"], "seconds": time.perf_counter() - t0,
            "phase2_curve": data.get("phase2_learning_rate_curve")}


def table(runs):
    lines = ["| training images | today: transfer | sweep_phase2: transfer | sweep minus today, "
             "points (standard error) | phase-2 peak, today / sweep (median) |",
             "|---|---|---|---|---|"]
    for size in sorted({r["size"] for r in runs}):
        by = {arm: {r["seed"]: r for r in runs if r["size"] == size and r["arm"] == arm}
              for arm in ARMS}
        seeds = sorted(set(by["phase1"]) & set(by["sweep"]))
        if not seeds:
            continue
        cells = []
        for arm in ARMS:
            values = [by[arm][s]["test_accuracy"] for s in seeds]
            cells.append(f"{statistics.mean(values):.4f} [{min(values):.4f}, {max(values):.4f}]")
        diffs = [100 * (by["sweep"][s]["test_accuracy"] - by["phase1"][s]["test_accuracy"])
                 for s in seeds]
        error = statistics.stdev(diffs) / len(diffs) ** 0.5 if len(diffs) > 1 else float("nan")
        peaks = [statistics.median(by[arm][s]["finetune_lr"] for s in seeds) for arm in ARMS]
        lines.append(f"| {size:,} | {cells[0]} | {cells[1]} | {statistics.mean(diffs):+.2f} "
                     f"({error:.2f}) | {peaks[0]:.2g} / {peaks[1]:.2g} |")
    return "\n".join(lines)


def rule_window(curve):
    """The `(loss, rate, step)` points the finder's rules read: it leaves out
    the first tenth of the steps and the last 5 (keras_transfer.lr_finder)."""
    n = len(curve["losses"])
    points = zip(curve["losses"], curve["learning_rates"], range(n))
    return list(points)[n // 10:n - 5]


def descents(runs):
    """Per sweep-arm run: the second sweep's smoothed loss over the rates the
    `minimum` rule reads (the finder leaves out the first tenth of the steps
    and the last 5), its spread below 1e-3, and where it was lowest."""
    lines = ["| training images, seed | test accuracy after phase 1 | steps | smoothed loss "
             "at rates <= 1e-3: lowest, highest | lowest of all, at rate | suggestion (a "
             "tenth) | test accuracy, today / sweep |", "|---|---|---|---|---|---|---|"]
    today = {(r["size"], r["seed"]): r for r in runs if r["arm"] == "phase1"}
    for r in runs:
        curve = r.get("phase2_curve")
        if r["arm"] != "sweep" or not curve:
            continue
        read = rule_window(curve)
        low = [loss for loss, rate, _ in read if rate <= 1e-3]
        best = min(read)
        other = today.get((r["size"], r["seed"]), {}).get("test_accuracy", float("nan"))
        lines.append(f"| {r['size']:,}, {r['seed']} | {r['test_accuracy_phase1']:.4f} | "
                     f"{len(curve['losses'])} | "
                     f"{min(low):.3f}, {max(low):.3f} | "
                     f"{best[0]:.3f} at {best[1]:.2g} | {curve['suggestion']:.2g} | "
                     f"{other:.4f} / {r['test_accuracy']:.4f} |")
    return "\n".join(lines)


def rise(curve, factor=1.5):
    """The first rate past the rule's lowest point at which the smoothed loss
    exceeds `factor` times that lowest value (the sweep's last rate if never)."""
    losses, rates = curve["losses"], curve["learning_rates"]
    lowest, _, step = min(rule_window(curve))
    return next((rate for loss, rate in zip(losses[step:], rates[step:])
                 if loss > factor * lowest), rates[-1])


def rises(runs):
    """`rise` of every stored sweep taken when phase 1 ended, by task, beside the
    best phase-2 rate its task's grid found (the reference CNN has no grid:
    today's rule's peak, which does better than the sweep's, stands in)."""
    lines = ["| task | run | the loss passes 1.5x its lowest at | a good phase-2 peak | "
             "ratio |", "|---|---|---|---|---|"]
    results = REPO / "bench" / "results"
    repeats = results / "finder_phase2_repeats.json"
    for record in json.loads(repeats.read_text())["records"] if repeats.is_file() else []:
        for i, rep in enumerate(record["phase2_repeats"]):
            best = max(rep["grid"], key=rep["grid"].get)
            at = rise(rep["curve_after"])
            lines.append(f"| {record['task']} | seed {record['seed']}, repeat {i} | {at:.2g} | "
                         f"{best} (grid best) | {at / float(best):.0f} |")
    grid = results / "finder_grid.json"
    for record in json.loads(grid.read_text())["records"] if grid.is_file() else []:
        at = rise(record["curves"]["after"])
        best = record["phase2_best_rate"]
        lines.append(f"| {record['task']} | seed {record['seed']} (finder_grid.json) | "
                     f"{at:.2g} | {best:.0e} (grid best) | {at / best:.0f} |")
    today = {(r["size"], r["seed"]): r["finetune_lr"] for r in runs if r["arm"] == "phase1"}
    for r in runs:
        if r["arm"] == "sweep" and r.get("phase2_curve") and (r["size"], r["seed"]) in today:
            at, good = rise(r["phase2_curve"]), today[r["size"], r["seed"]]
            lines.append(f"| reference CNN | {r['size']:,} images, seed {r['seed']} | {at:.2g} "
                         f"| {good:.2g} (today's rule) | {at / good:.0f} |")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 300, 1000, 10000])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", default=str(REPO / "bench" / "results" / "phase2_sweep.json"))
    parser.add_argument("--analyse", action="store_true", help="print the table of --out only")
    args = parser.parse_args()
    out = pathlib.Path(args.out)
    if args.analyse:
        runs = json.loads(out.read_text())["runs"]
        print(table(runs))
        print()
        print(descents(runs))
        print()
        print(rises(runs))
        return
    runs, turn = [], 0
    command = " ".join(["python", "bench/phase2_sweep.py", *sys.argv[1:]])
    for size in args.sizes:
        for seed in args.seeds:
            order = list(ARMS) if turn % 2 == 0 else list(ARMS)[::-1]
            turn += 1
            for arm in order:
                runs.append(run(size, seed, arm))
                print(json.dumps(runs[-1]), flush=True)
                out.write_text(json.dumps({"command": command, "runs": runs}, indent=1))
    print(table(runs))


if __name__ == "__main__":
    main()
