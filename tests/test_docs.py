"""The python blocks marked `<!-- tested -->` in docs/*.md run as written, in
order, one namespace per page, and what their comments and text claim is
asserted here. Where a real call would download (a hub handle, a torchvision
checkpoint), the test puts a local file in its place, and says so beside it."""

import contextlib
import io
import pathlib
import re

import keras
import numpy as np

DOCS = pathlib.Path(__file__).resolve().parent.parent / "docs"


def blocks(page):
    return re.findall(r"<!-- tested -->\n```python\n(.*?)```", (DOCS / page).read_text(), re.S)


def run_page(page, checks):
    """Runs a page's tested blocks in order in one namespace; after block `i`,
    `checks[i](namespace, printed)` asserts what its text claims. Every block
    has a check."""
    found = blocks(page)
    assert sorted(checks) == list(range(len(found))), (page, len(found))
    namespace = {}
    for index, block in enumerate(found):
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            exec(compile(block, f"docs/{page} example {index}", "exec"), namespace)
        checks[index](namespace, out.getvalue())


def test_checkpoints_page(tmp_path, monkeypatch):
    import keras_hub
    import torch
    from keras_hub.src.utils import preset_utils

    from torch_models import ResNet18
    from torch_models import outputs
    from torch_models import randomize

    monkeypatch.chdir(tmp_path)
    # In place of torchvision's download: a ResNet-18 with torchvision's
    # module names and random weights, written by torch.save.
    net = randomize(ResNet18())
    torch.save(net.state_dict(), tmp_path / "resnet18.pth")
    # In place of the Kaggle download: a ResNet-18 preset KerasHub writes
    # (save_to_preset), served by keras_hub's own loader from this folder.
    preset = tmp_path / "preset"
    written = keras_hub.models.ResNetBackbone(
        input_conv_filters=[64], input_conv_kernel_sizes=[7],
        stackwise_num_filters=[64, 128, 256, 512], stackwise_num_blocks=[2, 2, 2, 2],
        stackwise_num_strides=[1, 2, 2, 2], block_type="basic_block",
        use_pre_activation=False, image_shape=(224, 224, 3))
    rng = np.random.default_rng(0)
    for v in written.weights:
        v.assign((np.abs(rng.normal(size=v.shape)) + 0.5 if "variance" in v.path
                  else rng.normal(size=v.shape) * 0.05).astype("float32"))
    written.save_to_preset(preset)
    monkeypatch.setattr(preset_utils, "get_file", lambda handle, path: str(preset / path))
    monkeypatch.setattr(preset_utils, "check_file_exists",
                        lambda handle, path: (preset / path).exists())

    x = rng.normal(size=(1, 224, 224, 3)).astype("float32")

    def own_cnn(namespace, printed):
        # "conv, bn, fc loaded; fc's rows permuted ..."; the dropped counter; "True"
        report = namespace["report"]
        assert set(report.loaded) == {"conv", "bn", "fc"}
        assert "permuted from PyTorch's (C, H, W) order to Keras' (H, W, C)" in \
            report.converted["fc"]
        assert report.dropped == ("bn.num_batches_tracked",) and report.warnings == ()
        assert printed.strip().splitlines()[-1] == "True"

    def torchvision(namespace, printed):
        # "40 ('fc.weight', 'fc.bias')"; "outputs equal PyTorch's to about 1e-6";
        # "nothing is warned about"
        assert printed.strip() == "40 ('fc.weight', 'fc.bias')"
        expected = outputs(net, x, "features")
        got = keras.ops.convert_to_numpy(namespace["backbone"](x))
        assert np.abs(got - expected).max() / np.abs(expected).max() < 1e-5
        assert namespace["report"].warnings == ()

    def preset_into_own_model(namespace, printed):
        # "('new_head',)": the backbone's layers loaded from the preset
        assert printed.strip() == "('new_head',)"
        np.testing.assert_array_equal(
            keras.ops.convert_to_numpy(namespace["backbone"](x)),
            keras.ops.convert_to_numpy(written(x)))

    run_page("checkpoints.md", {0: own_cnn, 1: torchvision, 2: preset_into_own_model})
