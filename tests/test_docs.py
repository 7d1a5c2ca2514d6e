"""The python blocks marked `<!-- tested -->` in docs/*.md run as written, in
order, one namespace per page, and what their comments and text claim is
asserted here. Where a real call would download (a hub handle, a torchvision
checkpoint), the test puts a local file in its place, and says so beside it.

A page whose examples need the README Quickstart's names (`build`, `x`,
`loss`, `source.h5`) repeats its set-up in a tested block of its own, so each
page runs alone. (docs/examples.md has its own test, test_docs_examples.py.)"""

import contextlib
import io
import pathlib
import re

import keras
import numpy as np
import pytest

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


@pytest.mark.once  # the pages' code is what the unit tests run on both backends
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


def quickstart_setup(namespace, printed):
    # the README's Quickstart set-up, repeated: a 3-class source saved by name
    assert pathlib.Path("source.h5").is_file()
    assert [layer.name for layer in namespace["source"].layers] == \
        ["Dense1", "Bn1", "Dense2", "Head"]
    assert namespace["x"].shape == (512, 8) and printed == ""


@pytest.mark.once  # the pages' code is what the unit tests run on both backends
def test_loading_page(tmp_path, monkeypatch):
    import tf_keras

    monkeypatch.chdir(tmp_path)

    def by_name(namespace, printed):
        # "loaded / skipped / missing / unused, as a table"; "{'Dense1': 'Dense1'};
        # report.missing == ('NewHead',)"
        report = namespace["report"]
        assert report.loaded == {"Dense1": "Dense1"} and report.missing == ("NewHead",)
        assert report.unused == ("Head",)
        lines = printed.strip().splitlines()
        assert lines[0] == ("Transfer report for small.h5: 1 loaded, 0 skipped, 1 missing, "
                            "1 unused in source")
        assert lines[1].split() == ["layer", "from", "status", "detail"]
        assert lines[2].split()[:3] == ["Dense1", "Dense1", "loaded"]
        assert lines[3].split()[:2] == ["NewHead", "missing"]
        assert lines[4].split() == ["unused", "in", "source:", "Head"]
        # "Files load with Keras 3's own model.load_weights("small.h5",
        # by_name=True) and with tf_keras"
        expected = namespace["source"].get_layer("Dense1").get_weights()
        ours = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, name="Dense1"),
                                 keras.layers.Dense(5, name="NewHead")])
        ours.load_weights("small.h5", by_name=True)
        theirs = tf_keras.Sequential([tf_keras.Input((4,)), tf_keras.layers.Dense(8, name="Dense1"),
                                      tf_keras.layers.Dense(5, name="NewHead")])
        theirs.load_weights("small.h5", by_name=True)
        for model in (ours, theirs):
            for got, want in zip(model.get_layer("Dense1").get_weights(), expected):
                np.testing.assert_array_equal(got, want)

    def keras_applications(namespace, printed):
        # "104 loaded (17 depthwise convolutions "by name (depthwise_kernel as
        # kernel)"); Classes missing"; the outputs agree (asserted in the block)
        report = namespace["report"]
        assert len(report.loaded) == 104 and report.missing == ("Classes",)
        assert report.skipped == {} and report.unused == ()
        depthwise = [t for t, how in report.how.items()
                     if how == "by name (depthwise_kernel as kernel)"]
        assert len(depthwise) == 17
        assert all(isinstance(namespace["base"].get_layer(t), keras.layers.DepthwiseConv2D)
                   for t in depthwise)
        assert printed.startswith("Transfer report for mobilenet_v2.h5: 104 loaded, 0 skipped, "
                                  "1 missing")

    def input_adaptation(namespace, printed):
        # "the first convolution's kernel summed ... over channels"; the rest as is
        rgb, gray = namespace["rgb"], namespace["gray"]
        kernel = rgb.get_layer("Conv1").kernel.numpy()
        np.testing.assert_allclose(gray.get_layer("Conv1").kernel.numpy(),
                                   kernel.sum(axis=2, keepdims=True), rtol=1e-6)
        for name in ("Conv1", "Out"):
            np.testing.assert_array_equal(gray.get_layer(name).bias.numpy(),
                                          rgb.get_layer(name).bias.numpy())
        np.testing.assert_array_equal(gray.get_layer("Out").kernel.numpy(),
                                      rgb.get_layer("Out").kernel.numpy())

    def head_surgery(namespace, printed):
        # "before any training it predicts them exactly like the source restricted
        # to them"
        x, source = namespace["x"], namespace["source"]
        np.testing.assert_allclose(namespace["two_of_three"].predict(x, verbose=0),
                                   source.predict(x, verbose=0)[:, [2, 0]], rtol=1e-5, atol=1e-6)
        assert namespace["new_classes"].layers[-1].name == "Head5"

    def multi_task(namespace, printed):
        # "several named heads ..., each with its own loss and weight; per-head
        # metrics in the logs"; the schedule's two phases
        history = namespace["history"].history
        assert set(namespace["multi"].output_names) == {"digit", "attributes"}
        assert {"digit_loss", "attributes_loss", "digit_accuracy"} <= set(history)
        np.testing.assert_allclose(
            history["loss"],
            np.add(history["digit_loss"], np.multiply(0.5, history["attributes_loss"])),
            rtol=1e-4)
        assert history["phase"] == [1, 2]

    run_page("loading.md", {0: by_name, 1: keras_applications, 2: input_adaptation,
                            3: quickstart_setup, 4: head_surgery, 5: multi_task})


def summary_rows(printed, *names):
    """`trainable_summary`'s rows for the named layers, split into cells."""
    return {line.split()[0]: line.split()[1:] for line in printed.splitlines()
            if line.split() and line.split()[0] in names}


def assert_batchnorm_untouched(layer):
    """A freshly built BatchNormalization that neither trained nor updated its
    moving statistics: gamma 1, beta 0, mean 0, variance 1."""
    gamma, beta, mean, variance = layer.get_weights()
    np.testing.assert_array_equal(gamma, np.ones_like(gamma))
    np.testing.assert_array_equal(variance, np.ones_like(variance))
    np.testing.assert_array_equal(beta, np.zeros_like(beta))
    np.testing.assert_array_equal(mean, np.zeros_like(mean))


@pytest.mark.once  # the pages' code is what the unit tests run on both backends
def test_freezing_page(tmp_path, monkeypatch):
    import keras_transfer as kt
    from keras_transfer.pipeline import reference

    monkeypatch.chdir(tmp_path)
    features = list(reference.FEATURE_LAYERS)
    batchnorms = ["Bn1", "Bn2", "Bn3"]
    before_fit = {}

    def reference_setup(namespace, printed):
        # "12 feature layers, then the head: 10 classes, softmax"
        model = namespace["model"]
        assert [layer.name for layer in model.layers] == \
            features + ["Dense1_1", "Dropout", "Dense2_2"]
        assert model.output_shape == (None, 10)
        assert namespace["x"].shape == (32, 28, 28, 1) and namespace["x_val"].shape[0] == 16

    def freezing(namespace, printed):
        # Each line's comment, replayed one call at a time on a fresh model.
        def frozen(model):
            return {layer.name for layer in model.layers if not layer.trainable}

        model = reference.target_cnn()
        kt.freeze(model, upto=12)                 # "the first 12 top-level layers"
        assert frozen(model) == set(features)
        kt.unfreeze(model)                        # "BatchNormalization stays frozen"
        assert frozen(model) == set(batchnorms)
        kt.unfreeze(model, train_batchnorm=True)  # "... unless train_batchnorm=True"
        assert frozen(model) == set()
        model = reference.target_cnn()
        kt.freeze(model, pattern="Conv.*")        # "by name pattern"
        assert frozen(model) == {"Conv1", "Conv2", "Conv3"}
        # The block's model after its last freeze: "fastai's train_bn":
        # BatchNormalization inside the frozen 12 still trains
        model = namespace["model"]
        assert {layer.name for layer in model.layers if layer.trainable} == \
            set(batchnorms) | {"Dense1_1", "Dropout", "Dense2_2"}
        # "trainable / frozen parameters per layer", printed
        rows = summary_rows(printed, "Conv1", "Bn1", "Dense1_1")
        assert rows == {"Conv1": ["Conv2D", "0", "320"],
                        "Bn1": ["FusedBatchNormalization", "64", "64"],
                        "Dense1_1": ["Dense", "401,536", "0"]}, printed
        before_fit["Conv1"] = model.get_layer("Conv1").kernel.numpy()

    def two_phases(namespace, printed):
        # "Each epoch's logs (and History) gain phase and lr"
        history = namespace["model"].history.history
        assert history["phase"] == [1] * 5 + [2] * 5
        np.testing.assert_allclose(history["lr"], [1e-3] * 5 + [1e-4] * 5, rtol=1e-6)
        assert "val_accuracy" in history
        # "BatchNormalization layers inside freeze stay frozen, in inference mode,
        # in both phases by default": this fresh model's statistics never moved
        for name in batchnorms:
            assert not namespace["model"].get_layer(name).trainable
            assert_batchnorm_untouched(namespace["model"].get_layer(name))
        # while the convolutions trained in phase 2
        assert not np.array_equal(namespace["model"].get_layer("Conv1").kernel.numpy(),
                                  before_fit["Conv1"])

    def one_call(namespace, printed):
        # "[1, 1, 1, 1, 1, 2, 2, 2, 2, 2]"
        assert namespace["history"].history["phase"] == [1, 1, 1, 1, 1, 2, 2, 2, 2, 2]
        for name in batchnorms:
            assert_batchnorm_untouched(namespace["model"].get_layer(name))

    def discriminative(namespace, printed):
        # "head 1e-3, group_1 1e-3/2.6, group_0 1e-3/2.6**2", printed
        rates = namespace["opt"].group_learning_rates()
        assert rates == pytest.approx({"head": 1e-3, "group_1": 1e-3 / 2.6,
                                       "group_0": 1e-3 / 2.6 ** 2})
        assert printed.strip() == str(rates)

    def gradual(namespace, printed):
        # "one block per epoch, from the top" (asserted in the block)
        assert namespace["history"].history["unfrozen_blocks"] == [0, 1, 2, 2]
        # "BatchNormalization policy as in unfreeze": Bn1's block thawed, Bn1 did not
        model = namespace["model"]
        assert model.get_layer("Dense1").trainable and not model.get_layer("Bn1").trainable

    def cached(namespace, printed):
        assert namespace["history"].history["phase"] == [1, 1, 2]

    def lora(namespace, printed):
        # "phase 1: the head (34); phase 2: + adapters 2*(8+16) + 2*(16+16) = 146"
        assert namespace["counts"] == [34, 146] and printed.strip() == "[34, 146]"
        assert 34 + 2 * (8 + 16) + 2 * (16 + 16) == 146

    run_page("freezing.md", {0: reference_setup, 1: freezing, 2: two_phases, 3: one_call,
                             4: quickstart_setup, 5: discriminative, 6: gradual, 7: cached,
                             8: lora})


def check_shrink_perturb(namespace, printed):
    # "['Dense1', 'Dense2']", printed
    assert printed.strip() == "['Dense1', 'Dense2']"
    # Dense1's kernel: 0.4 * the loaded one + 0.2 * a Glorot-uniform draw (8 in, 16 out);
    # its bias: 0.4 * the loaded one + 0.2 * zeros (Dense's bias initializer)
    kernel, bias = namespace["model"].get_layer("Dense1").get_weights()
    loaded_kernel, loaded_bias = namespace["loaded"]
    draw = (kernel - 0.4 * loaded_kernel) / 0.2
    limit = np.sqrt(6 / (8 + 16))
    assert np.abs(draw).max() <= limit + 1e-5
    assert abs(draw.std() - limit / np.sqrt(3)) < 0.25 * limit / np.sqrt(3)  # 128 draws
    np.testing.assert_allclose(bias, 0.4 * loaded_bias, rtol=1e-6)


@pytest.mark.once  # the pages' code is what the unit tests run on both backends
def test_recipes_page(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)

    def finder_and_fine_tune(namespace, printed):
        # the finder's suggestion, printed: by default fastai's "minimum"
        curve = namespace["curve"]
        assert curve.method == "minimum"
        assert printed.strip() == f"suggested {curve.suggestion:.2g} (minimum)"
        assert pathlib.Path("lr_find.png").stat().st_size > 0
        # "History has phase and lr columns, and base_lr"; "base_lr=None: the
        # finder runs first", and its suggestion is the rate used
        history = namespace["history"]
        assert history.history["phase"] == [1, 2, 2, 2] and len(history.history["lr"]) == 4
        assert history.learning_rate_curve is not None
        assert history.base_lr == pytest.approx(history.learning_rate_curve.suggestion)

    def by_hand(namespace, printed):
        model = namespace["model"]
        assert model.history.history["phase"] == [1, 2, 2, 2]
        # "BatchNormalization stays frozen, unlike fine_tune's defaults": this
        # fresh model's statistics never moved
        assert not model.get_layer("Bn1").trainable
        assert_batchnorm_untouched(model.get_layer("Bn1"))

    def sweep_phase2(namespace, printed):
        # phase 2 peaks at its own sweep's suggestion, which is what is printed:
        # its one-cycle (3 epochs of 16 steps) read after each phase-2 epoch
        history = namespace["history"]
        curve = history.phase2_learning_rate_curve
        assert history.history["phase"] == [1, 2, 2, 2]
        cycle = namespace["kt"].OneCycle(curve.suggestion, total_steps=48, pct_start=0.3, div=5.0,
                            final_div=1e5)
        np.testing.assert_allclose(history.history["lr"][1:],
                                   [float(cycle(s)) for s in (16, 32, 48)], rtol=1e-5)
        assert printed.strip() == (f"phase 1 peaked at {history.base_lr:.2g}, "
                                   f"phase 2 at {curve.suggestion:.2g}")

    run_page("recipes.md", {0: quickstart_setup, 1: finder_and_fine_tune, 2: by_hand,
                            3: sweep_phase2, 4: check_shrink_perturb})


@pytest.mark.tensorflow_only  # HubLayer and export_hub_module need TensorFlow
def test_hub_page(tmp_path, monkeypatch):
    import tensorflow_hub as hub

    monkeypatch.chdir(tmp_path)

    def setup(namespace, printed):
        # the reference CNN's 12 feature layers: 7 x 7 x 64 features per image
        assert namespace["base_model"].output_shape == (None, 7 * 7 * 64)

    def reuse(namespace, printed):
        path = pathlib.Path("exported/features")
        assert (path / "saved_model.pb").is_file()
        # "the format both hub.KerasLayer (tf_keras) and HubLayer load": the
        # exported module computes the base model's features
        x, base_model = namespace["x"][:4], namespace["base_model"]
        np.testing.assert_allclose(hub.KerasLayer(str(path))(x).numpy(),
                                   base_model.predict(x, verbose=0), rtol=1e-5, atol=1e-5)
        # head first with the module frozen, then the module fine-tuned too
        model = namespace["model"]
        assert model.history.history["phase"] == [1, 1, 2, 2]
        layer = model.get_layer("hub_features")
        assert layer.trainable and layer.trainable_weights
        assert not np.allclose(layer(x).numpy(), base_model.predict(x, verbose=0), atol=1e-5)

    run_page("hub.md", {0: setup, 1: reuse})
