"""docs/examples.md runs as written, and what its comments and text claim holds.

Where the real call downloads, the local equivalent is swapped in, as said
beside each swap: KerasHub presets of the same architecture (random
weights, written by KerasHub's own `save_to_preset`), `weights=None` for
keras.applications' ImageNet weights, and a small folder of images.
"""

import re

import keras
import keras_hub
import numpy as np

import pytest

import keras_transfer as kt
from test_docs import DOCS
from test_docstrings import EXAMPLES, claims
from test_vision import write_folder


def blocks():
    return re.findall(r"<!-- tested -->\n```python\n(.*?)```",
                      (DOCS / "examples.md").read_text(), re.S)


def run(block, namespace, swaps=()):
    """Runs one block (its downloads swapped for local files); returns its output."""
    import contextlib
    import io

    for old, new in swaps:
        assert old in block, old
        block = block.replace(old, new)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(block, "docs/examples.md", "exec"), namespace)
    return out.getvalue().strip().splitlines()


def test_the_page_has_its_four_examples():
    assert len(blocks()) == 4


# The TensorFlow pass runs the page (a minute of JAX compilation each);
# tests/test_keras_hub_models.py, test_schedules_lora.py and test_caching.py
# run what it shows on both backends, on smaller models (the folder job's code is
# Keras layers and fine_tune, whose callbacks run on JAX in test_recipes).
@pytest.mark.once
def test_a_keras_hub_image_classifier(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    # in place of the Kaggle preset: KerasHub's ResNet-18 architecture, saved here
    keras_hub.models.ResNetBackbone(
        input_conv_filters=[64], input_conv_kernel_sizes=[7],
        stackwise_num_filters=[64, 128, 256, 512], stackwise_num_blocks=[2, 2, 2, 2],
        stackwise_num_strides=[1, 2, 2, 2], block_type="basic_block",
        use_pre_activation=False).save_to_preset(tmp_path / "resnet18")
    ns = {}
    printed = run(blocks()[0], ns, [('"resnet_18_imagenet"', repr(str(tmp_path / "resnet18")))])
    assert printed == ["['conv1_conv', 'conv1_bn']", "[1, 2, 2]"]
    # a new 3-class head; phase 1 left the backbone's kernels alone: checked by
    # the schedule tests; here, that the head is new and the backbone trained after
    assert ns["classifier"].output_shape == (None, 3)


@pytest.mark.once
def test_a_bert_classifier_with_lora(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    # in place of the Kaggle preset: a tiny BERT of KerasHub's, saved here
    keras_hub.models.BertBackbone(vocabulary_size=2048, num_layers=2, num_heads=2,
                                  hidden_dim=32, intermediate_dim=64,
                                  max_sequence_length=64).save_to_preset(tmp_path / "bert")
    ns = {}
    printed = run(blocks()[1], ns, [('"bert_tiny_en_uncased"', repr(str(tmp_path / "bert")))] * 1)
    assert printed == ["['position_embedding', 'embeddings_layer_norm']", "()"]
    # "biases, LayerNorm and the position embedding stay frozen" in phase 2;
    # "a model without LoRA loads it": the same outputs
    trainable = {v.path for v in ns["classifier"].trainable_weights}
    assert all("lora_" in p or p.startswith("logits") for p in trainable), trainable
    x = ns["x"]
    np.testing.assert_allclose(keras.ops.convert_to_numpy(ns["plain"](x)),
                               keras.ops.convert_to_numpy(ns["classifier"](x)),
                               rtol=1e-4, atol=1e-5)


@pytest.mark.once
def test_the_keras_io_guides_model(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    ns = {}
    # weights="imagenet" would download: the same architecture, random weights
    printed = run(blocks()[2], ns, [('weights="imagenet"', "weights=None")])
    assert printed == ["True", "True"]


@pytest.mark.once
def test_fine_tune_on_a_folder_of_images(tmp_path, monkeypatch):
    import tf_keras

    monkeypatch.chdir(tmp_path)
    # flowers/ and the ImageNet weights file, made here: PNGs with a pattern per
    # class, and a MobileNetV2 with random weights saved by tf_keras (Keras 2 .h5)
    write_folder(tmp_path / "flowers", classes=("daisy", "tulip"), per_class=5, size=96)
    tf_keras.applications.MobileNetV2(weights=None, include_top=False,
                                      input_shape=(96, 96, 3)).save_weights(
        str(tmp_path / "mobilenet_v2.h5"))
    ns = {}
    printed = run(blocks()[3], ns)
    assert printed == ["['daisy', 'tulip'] [1, 2, 2]"]
    assert len(ns["results"]["transfer_report"]["loaded"]) == 104
    # validation ran on the 2 held-out images (validation_split=0.2 of 10), and
    # the confusion matrix counts the final model's predictions on them
    matrix = np.array(ns["results"]["confusion_matrix"])
    assert matrix.sum() == 2
    assert np.trace(matrix) / matrix.sum() == pytest.approx(
        ns["results"]["validation_accuracy"])
    saved = keras.saving.load_model(tmp_path / "runs" / "flowers" / "model.keras")
    assert isinstance(saved.get_layer("preprocess"), kt.vision.ApplicationPreprocessing)
    # finetune_folder's docstring example is this call (tests/test_docstrings.py
    # leaves it to this test), and its claims hold on this run
    docstring = dict(EXAMPLES)["keras_transfer.vision.finetune_folder"]
    assert call_of(docstring, "finetune_folder") == call_of(blocks()[3], "finetune_folder")
    for expression, expected in claims(docstring).values():
        assert eval(expression, ns) == expected, expression


def call_of(block, name):
    """The arguments of the call to `name` in `block`, whatever the module is
    imported as."""
    import ast

    for node in ast.walk(ast.parse(block)):
        if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == name:
            return (ast.dump(ast.List(node.args)),
                    sorted((k.arg, ast.dump(k.value)) for k in node.keywords))
    raise AssertionError(f"no call to {name} in {block!r}")
