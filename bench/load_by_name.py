"""By-name load vs. Keras' own load_weights, on the same tf_keras `.h5` file.

For ResNet50 (25.6M parameters) and EfficientNetB0 (5.3M), tf_keras writes
the file with `save_weights("x.h5")` (the layout of the official ImageNet
weights). Two arms read it into Keras 3's same architecture (weights=None):

- keras: `model.load_weights(path)`, Keras 3's positional reader of legacy
  `.h5` files (how keras.applications loads its ImageNet weights);
- keras_transfer: `load_weights_by_name(model, path)`.

Each measurement runs in a fresh process (the arms interleaved, their order
alternating between repeats), which builds the model and then:
1. times the first load (what a user sees once per process);
2. records the peak resident memory that load added (VmHWM reset before it
   through /proc/self/clear_refs, minus the resident size before it);
3. times three more loads with the garbage collector off, as `timeit` does,
   and keeps their median (warm: h5py and TensorFlow initialized). With the
   collector on, whichever load happens to trigger a full collection of the
   TensorFlow heap pays ~0.15 s for it (seen with gc.get_stats());
4. records the peak of Python-traced allocations (numpy arrays included)
   during one more load under tracemalloc.
Reports medians per arm, the time ratio and the extra peak in copies of the
weights. Target: time ratio <= 1.2, extra peak <= 1 copy.

usage: python bench/load_by_name.py [--repeats 5] [--models ResNet50,EfficientNetB0]
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile

from _common import median

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

CHILD = r"""
import gc, json, os, statistics, sys, time, tracemalloc
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
import keras
import keras_transfer as kt

arm, family, path = sys.argv[1:4]
model = getattr(keras.applications, family)(weights=None)


def load():
    if arm == "keras":
        model.load_weights(path)
    else:
        kt.load_weights_by_name(model, path)


def status(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024


try:  # reset the peak resident size (Linux >= 4.0)
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    hwm = True
except OSError:
    hwm = False
before = status("VmRSS")
start = time.perf_counter()
load()
first = time.perf_counter() - start
added_peak = status("VmHWM") - before if hwm else None
warm = []
gc.disable()
for _ in range(3):
    start = time.perf_counter()
    load()
    warm.append(time.perf_counter() - start)
gc.enable()
warm_s = statistics.median(warm)
tracemalloc.start()
load()
traced_peak = tracemalloc.get_traced_memory()[1]
tracemalloc.stop()
print(json.dumps({"first_s": first, "warm_s": warm_s,
                  "added_peak_rss_bytes": added_peak, "traced_peak_bytes": traced_peak}))
"""


def write_file(family, folder):
    """The tf_keras file and the size of the weights it holds, in bytes."""
    import tf_keras

    model = getattr(tf_keras.applications, family)(weights=None)
    path = os.path.join(folder, f"{family}.h5")
    model.save_weights(path)
    return path, sum(w.size * w.dtype.itemsize for w in model.get_weights())


def run_child(arm, family, path):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2",
               PYTHONPATH=os.pathsep.join([REPO, os.environ.get("PYTHONPATH", "")]))
    out = subprocess.run([sys.executable, "-c", CHILD, arm, family, path], check=True,
                         capture_output=True, text=True, env=env, cwd=REPO).stdout
    return json.loads(out.strip().splitlines()[-1])


def summarize(runs, weight_bytes):
    def med(arm, key):
        values = [r[key] for r in runs[arm] if r[key] is not None]
        return median(values) if values else None

    out = {"weights_MiB": round(weight_bytes / 2**20, 1)}
    for arm in runs:
        out[arm] = {
            "median_first_s": round(med(arm, "first_s"), 3),
            "median_warm_s": round(med(arm, "warm_s"), 3),
            "median_added_peak_rss_MiB": (round(med(arm, "added_peak_rss_bytes") / 2**20, 1)
                                          if med(arm, "added_peak_rss_bytes") is not None else None),
            "median_traced_peak_MiB": round(med(arm, "traced_peak_bytes") / 2**20, 1),
        }
    ours, keras_ = out["keras_transfer"], out["keras"]
    out["time_ratio_first"] = round(ours["median_first_s"] / keras_["median_first_s"], 2)
    out["time_ratio_warm"] = round(ours["median_warm_s"] / keras_["median_warm_s"], 2)
    if ours["median_added_peak_rss_MiB"] is not None:
        extra = ours["median_added_peak_rss_MiB"] - keras_["median_added_peak_rss_MiB"]
        out["extra_peak_rss_copies_of_weights"] = round(extra / out["weights_MiB"], 2)
    extra = ours["median_traced_peak_MiB"] - keras_["median_traced_peak_MiB"]
    out["extra_traced_peak_copies_of_weights"] = round(extra / out["weights_MiB"], 2)
    return out


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--models", default="ResNet50,EfficientNetB0")
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    folder = tempfile.mkdtemp()
    summary = {}
    for family in args.models.split(","):
        path, weight_bytes = write_file(family, folder)
        runs = {"keras": [], "keras_transfer": []}
        for repeat in range(args.repeats):
            arms = ["keras", "keras_transfer"]
            for arm in arms if repeat % 2 == 0 else arms[::-1]:
                runs[arm].append(run_child(arm, family, path))
        summary[family] = summarize(runs, weight_bytes)
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
