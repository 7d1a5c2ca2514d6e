"""Loading a ResNet-50-size PyTorch checkpoint: ours against KerasHub's own converter.

The checkpoint: a ResNet-50 with timm's (and torchvision's) module names and
random weights, written at bench time by PyTorch (safetensors' writer) with a
timm `config.json` beside it: the directory KerasHub's timm converter reads.

Arms, each in a fresh process, interleaved (their order alternates), repeated:

- `ours`: build KerasHub's ResNetBackbone (ResNet-50), then
  `kt.load_weights_by_name(backbone, "model.safetensors", rename=...)`: the
  generic PyTorch path (`_safetensors`, `_torch_layout`);
- `keras_hub`: `keras_hub.models.Backbone.from_preset(directory)`: KerasHub's
  hand-written timm ResNet converter, which builds and loads;
- `build`: only the build, to measure what the built model itself takes.

Each loading arm is timed from the file to a model ready to predict (build and
load; the first prediction's tracing is left out of both). Memory: the peak
RSS of the process (`ru_maxrss`) above the RSS once the model is built: for
`ours` measured in the process; for both arms also as the peak above
(the RSS after imports + what the `build` arm's model took), the measure
that treats them alike. The targets: ours within 1.2x KerasHub's time, and a
peak above the built model of at most one copy of the weights (the copy an
all-or-nothing read needs; the conversion adding none).

Usage:
  python bench/load_checkpoint.py --repeats 5 --out bench/results/load_checkpoint.json
"""

import argparse
import json
import os
import pathlib
import resource
import statistics
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import _common  # noqa: E402 (bench/, beside this script)

REPO = pathlib.Path(__file__).resolve().parent.parent
CONFIG = {"architecture": "resnet50", "num_classes": 1000, "num_features": 2048,
          "pretrained_cfg": {"input_size": [3, 224, 224], "mean": [0.485, 0.456, 0.406],
                             "std": [0.229, 0.224, 0.225], "interpolation": "bicubic"}}


def rss_mb():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def peak_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def write_checkpoint(folder):
    sys.path.insert(0, str(REPO / "tests"))
    import safetensors.torch
    from torch_models import ResNet50
    from torch_models import randomize

    net = randomize(ResNet50())
    safetensors.torch.save_file(net.state_dict(), folder / "model.safetensors")
    (folder / "config.json").write_text(json.dumps(CONFIG))
    return sum(t.numel() * t.element_size() for t in net.state_dict().values())


def backbone():
    import keras_hub

    return keras_hub.models.ResNetBackbone(
        input_conv_filters=[64], input_conv_kernel_sizes=[7],
        stackwise_num_filters=[64, 128, 256, 512], stackwise_num_blocks=[3, 4, 6, 3],
        stackwise_num_strides=[1, 2, 2, 2], block_type="bottleneck_block",
        use_pre_activation=False)


def arm(name, folder):
    """One arm in this process; prints a JSON line of its measures."""
    sys.path.insert(0, str(REPO / "tests"))
    import keras
    import keras_hub
    import numpy as np

    import keras_transfer as kt
    from torch_models import torchvision_resnet_names

    keras.ops.convert_to_numpy(keras.ops.ones((1,)))  # the backend is up
    after_imports = rss_mb()
    start = time.perf_counter()
    built_rss = None
    if name == "build":
        model = backbone()
    elif name == "ours":
        model = backbone()
        built_rss = rss_mb()
        report = kt.load_weights_by_name(model, folder / "model.safetensors",
                                         rename=torchvision_resnet_names)
        assert len(report.loaded) == 106, len(report.loaded)
    else:
        model = keras_hub.models.Backbone.from_preset(str(folder))
    seconds = time.perf_counter() - start
    peak = peak_mb()
    if name != "build":  # the same weights in both arms, and a working model
        first = keras.ops.convert_to_numpy(model.get_layer("conv1_conv").kernel)
        x = np.random.default_rng(0).normal(size=(1, 64, 64, 3)).astype("float32")
        assert np.isfinite(keras.ops.convert_to_numpy(model(x))).all()
    else:
        first = None
    print(json.dumps({"arm": name, "seconds": seconds, "after_imports_mb": after_imports,
                      "built_rss_mb": built_rss, "rss_mb": rss_mb(), "peak_mb": peak,
                      "conv1_sum": None if first is None else float(np.abs(first).sum())}))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default=None)
    parser.add_argument("--arm", choices=["ours", "keras_hub", "build"])
    parser.add_argument("--dir")
    args = parser.parse_args()
    if args.arm:
        return arm(args.arm, pathlib.Path(args.dir))
    with tempfile.TemporaryDirectory() as tmp:
        folder = pathlib.Path(tmp)
        weights_mb = write_checkpoint(folder) / 2 ** 20
        runs, by = _common.interleaved(__file__, ("ours", "keras_hub", "build"),
                                       args.repeats, "--dir", str(folder))
    built = statistics.median(r["rss_mb"] - r["after_imports_mb"] for r in by["build"])
    ratios = [o["seconds"] / k["seconds"] for o, k in zip(by["ours"], by["keras_hub"])]
    summary = {
        "weights_mb": weights_mb,
        "seconds": {n: statistics.median(r["seconds"] for r in by[n]) for n in by},
        "time_ratio_ours_over_keras_hub": statistics.median(ratios),
        "built_model_mb": built,
        "peak_above_built_mb": {n: statistics.median(
            r["peak_mb"] - r["after_imports_mb"] - built for r in by[n])
            for n in ("ours", "keras_hub")},
        "ours_peak_above_its_own_built_rss_mb": statistics.median(
            r["peak_mb"] - r["built_rss_mb"] for r in by["ours"]),
        "same_weights": len({r["conv1_sum"] for r in by["ours"] + by["keras_hub"]}) == 1,
        "command": "python bench/load_checkpoint.py " + " ".join(sys.argv[1:]),
        "runs": runs,
    }
    _common.write_summary(summary, args.out)


if __name__ == "__main__":
    main()
