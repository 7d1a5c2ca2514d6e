"""Transfer vs. scratch MNIST test accuracy by training-set size, 3 seeds, per recipe.

Runs the reference pipeline (scripts/fashion_to_mnist.py, the shipped source
weights, 5,000 images held out for validation) for each size and seed with one
recipe, and merges the results with those of the other recipe already in
bench/results/transfer_gains.json:

- seed: the seed's plan (batch 256, 5 + 5 epochs, Adam 1e-3 then 1e-4), both
  arms; its rows are the baseline and are kept, not rerun;
- fine_tune: `keras_transfer.fine_tune` for the transfer arm, and for the
  scratch arm the same finder and one-cycle over every epoch without
  freezing; same epochs and batch size for both arms (the script's defaults).

Writes bench/results/<name>.json (every run, and mean / min / max per recipe,
size and arm; --name, default transfer_gains) and <name>.png; prints the table
as Markdown, then transfer minus scratch paired by seed (mean, standard error,
seeds ahead / level / behind). Another --name keeps a side study (more seeds
at one size, say) out of the main table.
The raw results of each run stay in runs/gains*/<size>_<seed>/results.json; a
finished run there is reused when it is the run this command would make (same
recipe, extra flags and, for fine_tune, the same defaults); --rerun forces.

usage: python bench/transfer_gains.py [--recipe fine_tune] [--sizes 100 300 1000 10000 0]
                                      [--seeds 0 1 2] [--name transfer_gains] [--rerun]
                                      [-- extra flags for the script]
       (size 0 means all 55,000 images not held out for validation)
"""

import argparse
import json
import pathlib
import statistics
import subprocess
import sys

REPO = pathlib.Path(__file__).resolve().parent.parent
OUT = REPO / "bench" / "results"
RUNS = {"seed": REPO / "runs" / "gains", "fine_tune": REPO / "runs" / "gains_fine_tune"}
ARMS = ("transfer", "scratch")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--recipe", choices=sorted(RUNS), default="fine_tune")
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 300, 1000, 10000, 0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--name", default="transfer_gains",
                        help="results go to bench/results/<name>.json and .png")
    parser.add_argument("--rerun", action="store_true",
                        help="run again even where a finished run is on disk")
    parser.add_argument("extra", nargs="*", help="more flags for the pipeline script")
    args = parser.parse_args()
    rows = []
    for size in args.sizes:
        for seed in args.seeds:
            out = RUNS[args.recipe] / f"{size}_{seed}"
            if args.rerun or not reusable(out, args):
                out.mkdir(parents=True, exist_ok=True)
                (out / "extra_flags.json").write_text(json.dumps(args.extra))
                subprocess.run([sys.executable, str(REPO / "scripts" / "fashion_to_mnist.py"),
                                f"--recipe={args.recipe}", f"--train_examples={size}",
                                "--low_data_examples=0", f"--seed={seed}", f"--out_dir={out}",
                                *args.extra], check=True, stdout=subprocess.DEVNULL)
            results = json.loads((out / "results.json").read_text())
            regime = results["regimes"][0] if "regimes" in results else results
            for arm in ARMS:
                data = results["arms"][arm]
                rows.append({"recipe": args.recipe, "size": results["target_train_examples"],
                             "seed": seed, "arm": arm, "phase1": data["test_accuracy_phase1"],
                             "end": data["test_accuracy"], "base_lr": data.get("base_lr"),
                             "batch_size": regime.get("batch_size"),
                             "epochs": len(data["history"]["loss"]),
                             "seconds": round(sum(data["seconds"].values()), 1)})
            print(f"{args.recipe}: size {size} seed {seed} done", flush=True)
    done = {(row["recipe"], row["size"], row["seed"]) for row in rows}
    rows = [row for row in load_rows(args.name)  # the runs of other recipes, sizes and seeds
            if (row["recipe"], row["size"], row["seed"]) not in done] + rows
    summary = summarize(rows)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / f"{args.name}.json").write_text(
        json.dumps({"runs": rows, "by_recipe": summary}, indent=1))
    plot(summary, OUT / f"{args.name}.png")
    print(markdown(summary))
    print()
    print(paired_markdown(rows))


def reusable(out, args):
    """Whether the finished run in `out` is the one this command would make.

    A run of another flag set is not; a fine_tune run whose recorded options
    differ from fine_tune's defaults now is not either. A run that recorded no
    options (made before they were recorded) is reused with a warning.
    """
    path = out / "results.json"
    if not path.is_file():
        return False
    results = json.loads(path.read_text())
    extra = json.loads((out / "extra_flags.json").read_text()) \
        if (out / "extra_flags.json").is_file() else []
    if results["flags"].get("recipe", "seed") != args.recipe or extra != args.extra:
        return False
    if args.recipe == "fine_tune":
        recorded = results.get("fine_tune_options")
        if recorded is None:
            print(f"warning: reusing {path}: it does not record fine_tune's options; "
                  "--rerun to run it again", file=sys.stderr)
            return True
        from keras_transfer import recipes  # imports Keras: only when needed
        from keras_transfer.pipeline import comparison

        flags = results["flags"]
        expected = {**recipes.default_options(), **{
            name: flags[name] for name in comparison.FINE_TUNE_FLAGS
            if flags.get(name) is not None}}
        if flags.get("head_epochs") is not None:
            expected["freeze_epochs"] = flags["head_epochs"]
        return recorded == expected
    return True


def load_rows(name):
    """The runs already recorded; rows without a recipe are the seed's (the baseline)."""
    path = OUT / f"{name}.json"
    if not path.is_file():
        return []
    return [{"recipe": "seed", **row} for row in json.loads(path.read_text())["runs"]]


def summarize(rows):
    summary = {}
    for row in rows:
        entry = (summary.setdefault(row["recipe"], {}).setdefault(str(row["size"]), {})
                 .setdefault(row["arm"], {"phase1": [], "end": []}))
        entry["phase1"].append(row["phase1"])
        entry["end"].append(row["end"])
    return summary


def spread(values):
    return f"{statistics.mean(values):.4f} [{min(values):.4f}, {max(values):.4f}]"


def markdown(summary):
    recipes = [r for r in ("seed", "fine_tune") if r in summary]
    head = ["training images"] + [f"{recipe}: {arm}" for recipe in recipes for arm in ARMS]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    sizes = sorted({int(s) for r in recipes for s in summary[r]})
    for size in sizes:
        cells = [f"{size:,}"]
        for recipe in recipes:
            for arm in ARMS:
                values = summary[recipe].get(str(size), {}).get(arm)
                cells.append(spread(values["end"]) if values else "-")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def paired_markdown(rows):
    """Transfer minus scratch per seed, in points: mean, standard error, seeds ahead."""
    ends = {(r["recipe"], r["size"], r["seed"], r["arm"]): r["end"] for r in rows}
    lines = ["| recipe | training images | seeds | transfer - scratch, points: mean "
             "(standard error) | transfer ahead / level / behind |", "|---|---|---|---|---|"]
    for recipe, size in sorted({(r, s) for r, s, _, _ in ends}):
        seeds = sorted({seed for r, s, seed, _ in ends if (r, s) == (recipe, size)})
        diffs = [100 * (ends[(recipe, size, seed, "transfer")]
                        - ends[(recipe, size, seed, "scratch")])
                 for seed in seeds if {(recipe, size, seed, arm) for arm in ARMS} <= set(ends)]
        if not diffs:
            continue
        error = statistics.stdev(diffs) / len(diffs) ** 0.5 if len(diffs) > 1 else float("nan")
        counts = [sum(d > 0 for d in diffs), sum(d == 0 for d in diffs),
                  sum(d < 0 for d in diffs)]
        lines.append(f"| {recipe} | {size:,} | {len(diffs)} | {statistics.mean(diffs):+.2f} "
                     f"({error:.2f}) | {' / '.join(map(str, counts))} |")
    return "\n".join(lines)


def plot(summary, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    styles = {("fine_tune", "transfer"): ("-o", "C0"), ("fine_tune", "scratch"): ("-s", "C1"),
              ("seed", "transfer"): (":o", "C0"), ("seed", "scratch"): (":s", "C1")}
    for (recipe, arm), (style, color) in styles.items():
        if recipe not in summary:
            continue
        sizes = sorted(summary[recipe], key=int)
        values = [summary[recipe][s][arm]["end"] for s in sizes]
        means = [statistics.mean(v) for v in values]
        ax.errorbar([int(s) for s in sizes], means,
                    yerr=[[m - min(v) for m, v in zip(means, values)],
                          [max(v) - m for m, v in zip(means, values)]],
                    fmt=style, color=color, capsize=3, alpha=1.0 if recipe == "fine_tune" else 0.5,
                    label=f"{arm}, {'fine_tune' if recipe == 'fine_tune' else 'seed recipe'}")
    ax.set_xscale("log")
    ax.set_xlabel("MNIST training images")
    ax.set_ylabel("test accuracy, end of training")
    ax.grid(alpha=0.3)
    ax.legend()
    seeds = max(len(arms[arm]["end"]) for runs in summary.values()
                for arms in runs.values() for arm in arms)
    ax.set_title(f"Fashion-MNIST -> MNIST: transfer vs. scratch (up to {seeds} seeds, "
                 "min..max)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


if __name__ == "__main__":
    main()
