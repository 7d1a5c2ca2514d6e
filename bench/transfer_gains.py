"""Transfer vs. scratch MNIST test accuracy by training-set size, 3 seeds.

Runs the reference pipeline (scripts/fashion_to_mnist.py, defaults otherwise:
batch 256, 5 + 5 epochs, the shipped source weights) for each size and seed,
then writes bench/results/transfer_gains.json and transfer_gains.png: mean and
spread (min..max over seeds) of test accuracy after phase 1 and at the end.

usage: python bench/transfer_gains.py [--sizes 100 300 1000 10000 0] [--seeds 0 1 2]
       (size 0 means all 55,000 images not held out for validation)
"""

import argparse
import json
import pathlib
import subprocess
import sys

REPO = pathlib.Path(__file__).resolve().parent.parent
OUT = REPO / "bench" / "results"


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 300, 1000, 10000, 0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = parser.parse_args()
    rows = []
    for size in args.sizes:
        for seed in args.seeds:
            out = REPO / "runs" / "gains" / f"{size}_{seed}"
            if not (out / "results.json").is_file():
                subprocess.run([sys.executable, str(REPO / "scripts" / "fashion_to_mnist.py"),
                                f"--train_examples={size}", f"--seed={seed}", f"--out_dir={out}"],
                               check=True, stdout=subprocess.DEVNULL)
            results = json.loads((out / "results.json").read_text())
            for arm, data in results["arms"].items():
                rows.append({"size": results["target_train_examples"], "seed": seed, "arm": arm,
                             "phase1": data["test_accuracy_phase1"], "end": data["test_accuracy"]})
            print(f"size {size} seed {seed} done", flush=True)
    summary = {}
    for row in rows:
        entry = summary.setdefault(f"{row['size']}", {}).setdefault(row["arm"], {"phase1": [], "end": []})
        entry["phase1"].append(row["phase1"])
        entry["end"].append(row["end"])
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "transfer_gains.json").write_text(json.dumps({"runs": rows, "by_size": summary}, indent=1))
    plot(summary)
    for size, arms in summary.items():
        for arm, acc in arms.items():
            print(f"{size:>6} {arm:<9} phase 1 {mean(acc['phase1']):.4f} "
                  f"[{min(acc['phase1']):.4f}, {max(acc['phase1']):.4f}]  end {mean(acc['end']):.4f} "
                  f"[{min(acc['end']):.4f}, {max(acc['end']):.4f}]")


def mean(values):
    return sum(values) / len(values)


def plot(summary):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = sorted(summary, key=int)
    fig, ax = plt.subplots(figsize=(7, 4))
    for arm, style in (("transfer", "-o"), ("scratch", "--s")):
        for stage, alpha in (("phase1", 0.5), ("end", 1.0)):
            values = [summary[s][arm][stage] for s in sizes]
            ax.errorbar([int(s) for s in sizes], [mean(v) for v in values],
                        yerr=[[mean(v) - min(v) for v in values], [max(v) - mean(v) for v in values]],
                        fmt=style, alpha=alpha, capsize=3,
                        label=f"{arm}, {'end of phase 1' if stage == 'phase1' else 'end'}")
    ax.set_xscale("log")
    ax.set_xlabel("MNIST training images")
    ax.set_ylabel("test accuracy")
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title("Fashion-MNIST -> MNIST: transfer vs. scratch (3 seeds, min..max)")
    fig.tight_layout()
    fig.savefig(OUT / "transfer_gains.png", dpi=100)


if __name__ == "__main__":
    main()
