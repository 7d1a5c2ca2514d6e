"""By-name load vs. Keras' own load_weights on ResNet50 (25M parameters).

Each measurement runs in a fresh subprocess: build ResNet50(weights=None),
then time one load and record the peak resident memory it added
(ru_maxrss after the load minus the resident size before it). Keras loads a
native `.weights.h5` with `model.load_weights`; keras_transfer loads a by-name
file with `load_weights_by_name`. Reports medians and the ratios.

usage: python bench/load_by_name.py [--repeats 5]
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile

from _common import median

CHILD = r"""
import os, resource, sys, time, json
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
import keras, psutil
import keras_transfer as kt
model = keras.applications.ResNet50(weights=None)
model(keras.ops.zeros((1, 224, 224, 3)))
before = psutil.Process().memory_info().rss
start = time.perf_counter()
if sys.argv[1] == "keras":
    model.load_weights(sys.argv[2])
else:
    kt.load_weights_by_name(model, sys.argv[2])
seconds = time.perf_counter() - start
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({"seconds": seconds, "added_peak_bytes": max(peak - before, 0)}))
"""


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras

    import keras_transfer as kt

    folder = tempfile.mkdtemp()
    model = keras.applications.ResNet50(weights=None)
    native, ours = os.path.join(folder, "r.weights.h5"), os.path.join(folder, "r.h5")
    model.save_weights(native)
    kt.save_weights_by_name(model, ours)
    weight_bytes = sum(v.numpy().nbytes for v in model.weights)
    results = {"keras": [], "keras_transfer": []}
    for _ in range(args.repeats):
        for name, path in (("keras", native), ("keras_transfer", ours)):
            out = subprocess.run([sys.executable, "-c", CHILD, name, path], check=True,
                                 capture_output=True, text=True).stdout
            results[name].append(json.loads(out.strip().splitlines()[-1]))
    summary = {name: {"median_s": median([r["seconds"] for r in runs]),
                      "median_added_peak_MiB": median([r["added_peak_bytes"] for r in runs]) / 2**20}
               for name, runs in results.items()}
    summary["weights_MiB"] = weight_bytes / 2**20
    summary["time_ratio"] = summary["keras_transfer"]["median_s"] / summary["keras"]["median_s"]
    summary["extra_peak_MiB_vs_keras"] = (summary["keras_transfer"]["median_added_peak_MiB"]
                                          - summary["keras"]["median_added_peak_MiB"])
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
