"""Pools the paired ratios of several `callback_overhead.py` runs, with a bootstrap interval.

On a machine whose TensorFlow timings vary by 10% from run to run, one run of
`callback_overhead.py` cannot resolve a 2% overhead. Each repeat of it times
the two arms back to back; their ratio (schedule / by_hand) is one paired
sample. This script pools the samples of the given raw outputs (the same
command, run several times) and reports their median and mean with 95%
percentile-bootstrap intervals (10,000 resamples, seed 0).

usage: python bench/overhead_pooled.py bench/results/overhead_tensorflow*.json
"""

import json
import random
import statistics
import sys


def interval(samples, statistic, resamples=10000, seed=0):
    rng = random.Random(seed)
    values = sorted(statistic(rng.choices(samples, k=len(samples))) for _ in range(resamples))
    return values[int(0.025 * resamples)], values[int(0.975 * resamples) - 1]


def main(paths):
    ratios = []
    for path in paths:
        runs = json.load(open(path))["runs"]
        ratios += [ours / plain for plain, ours in zip(runs["by_hand"], runs["schedule"])]
    out = {"files": paths, "pairs": len(ratios)}
    for name, statistic in (("median", statistics.median), ("mean", statistics.mean)):
        low, high = interval(ratios, statistic)
        out[f"overhead_{name}"] = statistic(ratios) - 1
        out[f"overhead_{name}_95"] = [low - 1, high - 1]
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main(sys.argv[1:])
