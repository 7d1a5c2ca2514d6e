"""KerasHub presets and checkpoint directories as by-name sources.

Presets are written by KerasHub's own `save_to_preset`; timm directories by
PyTorch (safetensors' writer) beside a timm `config.json`. Each loads into a
model that did not write it, and outputs are compared with the writer's.
"""

import json
import sys

import keras
import keras_hub
import numpy as np
import pytest
import safetensors.torch

import keras_transfer as kt
from helpers import infer
from torch_models import ResNet18
from torch_models import outputs
from torch_models import randomize as randomize_torch


def resnet(image_shape=(32, 32, 3)):
    return keras_hub.models.ResNetBackbone(
        input_conv_filters=[64], input_conv_kernel_sizes=[7], stackwise_num_filters=[64, 32],
        stackwise_num_blocks=[1, 1], stackwise_num_strides=[1, 2], block_type="basic_block",
        use_pre_activation=False, image_shape=image_shape)


def resnet18(image_shape=(64, 64, 3)):
    return keras_hub.models.ResNetBackbone(
        input_conv_filters=[64], input_conv_kernel_sizes=[7],
        stackwise_num_filters=[64, 128, 256, 512], stackwise_num_blocks=[2, 2, 2, 2],
        stackwise_num_strides=[1, 2, 2, 2], block_type="basic_block",
        use_pre_activation=False, image_shape=image_shape)


def bert():
    return keras_hub.models.BertBackbone(vocabulary_size=50, num_layers=2, num_heads=2,
                                         hidden_dim=16, intermediate_dim=32,
                                         max_sequence_length=16)


def randomized(model, seed=0):
    """Every weight drawn anew (BatchNormalization variances positive)."""
    rng = np.random.default_rng(seed)
    for v in model.weights:
        value = rng.normal(size=v.shape) * 0.2
        if "variance" in v.path:
            value = np.abs(value) + 0.5
        v.assign(value.astype(v.dtype))
    return model


def images(size=32, seed=1):
    return np.random.default_rng(seed).normal(size=(2, size, size, 3)).astype("float32")


def tokens(seed=1):
    ids = np.random.default_rng(seed).integers(0, 50, (2, 16))
    return {"token_ids": ids, "segment_ids": np.zeros_like(ids), "padding_mask": np.ones_like(ids)}


def numpy(x):
    return keras.ops.convert_to_numpy(x)


@pytest.fixture
def resnet_preset(tmp_path):
    source = randomized(resnet())
    source.save_to_preset(tmp_path / "resnet")
    return source, tmp_path / "resnet"


def test_a_preset_loads_into_a_backbone_nested_under_a_new_head(resnet_preset):
    source, preset = resnet_preset
    backbone = resnet()
    inputs = keras.Input((32, 32, 3))
    pooled = keras.layers.GlobalAveragePooling2D()(backbone(inputs))
    target = keras.Model(inputs, keras.layers.Dense(3, name="new_head")(pooled))
    report = kt.load_weights_by_name(target, preset)
    assert report.missing == ("new_head",) and report.unused == ()
    assert len(report.loaded) == len([l for l in source.layers if l.weights])
    x = images()
    np.testing.assert_array_equal(numpy(backbone(x)), numpy(source(x)))


@pytest.mark.once  # routing and refusals; the presets and converters load on JAX
def test_a_preset_loads_into_a_flat_target(resnet_preset):
    source, preset = resnet_preset
    backbone = resnet()  # its layers become the target's own, top-level
    head = keras.layers.Dense(3, name="new_head")(
        keras.layers.GlobalAveragePooling2D()(backbone.output))
    target = keras.Model(backbone.input, head)
    assert "conv1_conv" in [layer.name for layer in target.layers]
    report = kt.load_weights_by_name(target, preset)
    assert report.missing == ("new_head",)
    features = keras.Model(target.input, target.get_layer(source.layers[-1].name).output)
    x = images()
    np.testing.assert_array_equal(numpy(features(x)), numpy(source(x)))


def test_a_bert_preset_loads_its_transformer_layers_by_name(tmp_path):
    source = randomized(bert())
    source.save_to_preset(tmp_path / "bert")
    target_backbone = bert()
    inputs = {k: keras.Input((16,), dtype="int32", name=k)
              for k in ("token_ids", "segment_ids", "padding_mask")}
    pooled = target_backbone(inputs)["pooled_output"]
    target = keras.Model(inputs, keras.layers.Dense(2, name="new_head")(pooled))
    report = kt.load_weights_by_name(target, tmp_path / "bert")
    assert {"transformer_layer_0", "transformer_layer_1", "token_embedding"} <= set(report.loaded)
    assert report.missing == ("new_head",)
    np.testing.assert_array_equal(numpy(target_backbone(tokens())["sequence_output"]),
                                  numpy(source(tokens())["sequence_output"]))


def test_a_task_preset_brings_its_head_with_include_task(tmp_path):
    task = keras_hub.models.ResNetImageClassifier(backbone=resnet(), num_classes=3,
                                                  preprocessor=None)
    randomized(task)
    task.save_to_preset(tmp_path / "task")
    target = keras_hub.models.ResNetImageClassifier(backbone=resnet(), num_classes=3,
                                                    preprocessor=None)
    without = kt.load_weights_by_name(target, tmp_path / "task")
    assert without.missing == ("predictions",)
    report = kt.load_weights_by_name(target, tmp_path / "task", include_task=True)
    assert "predictions" in report.loaded and report.missing == ()
    x = images()
    np.testing.assert_allclose(numpy(target(x)), numpy(task(x)), rtol=1e-6, atol=1e-6)


@pytest.mark.once  # routing and refusals; the presets and converters load on JAX
def test_keras_hub_models_in_memory_go_through_transfer_weights():
    backbone = randomized(bert())
    task = keras_hub.models.BertTextClassifier(backbone=backbone, num_classes=2,
                                               preprocessor=None)
    target = keras_hub.models.BertTextClassifier(backbone=bert(), num_classes=2,
                                                 preprocessor=None)
    report = kt.transfer_weights(task, target)
    assert report.missing == () and report.unused == ()
    np.testing.assert_allclose(numpy(target(tokens())), numpy(task(tokens())), rtol=1e-6,
                               atol=1e-6)
    fresh = bert()
    assert kt.transfer_weights(backbone, fresh).missing == ()


def timm_directory(folder, architecture="resnet18"):
    """A timm checkpoint directory written by PyTorch: model.safetensors and a
    timm config.json, for a ResNet-18 with random weights."""
    net = randomize_torch(ResNet18(num_classes=7))
    folder.mkdir()
    safetensors.torch.save_file(net.state_dict(), folder / "model.safetensors")
    (folder / "config.json").write_text(json.dumps({
        "architecture": architecture, "num_classes": 7, "num_features": 512,
        "pretrained_cfg": {"input_size": [3, 64, 64], "mean": [0.5] * 3, "std": [0.5] * 3,
                           "interpolation": "bilinear"}}))
    return net


def test_a_timm_directory_keras_hub_converts_is_rebuilt_by_keras_hub(tmp_path):
    net = timm_directory(tmp_path / "timm")
    backbone = resnet18()
    report = kt.load_weights_by_name(backbone, tmp_path / "timm")
    assert report.how["conv1_conv"] == "by name"  # KerasHub's names: its converter ran
    x = images(64)
    expected = outputs(net, x, "features")
    assert np.abs(infer(backbone, x) - expected).max() / np.abs(expected).max() < 1e-4
    task = keras_hub.models.ResNetImageClassifier(backbone=backbone, num_classes=7,
                                                  preprocessor=None)
    report = kt.load_weights_by_name(task, tmp_path / "timm", include_task=True)
    assert "predictions" in report.loaded
    expected = outputs(net, x)
    assert np.abs(infer(task, x) - expected).max() / np.abs(expected).max() < 1e-4


@pytest.mark.once  # routing and refusals; the presets and converters load on JAX
def test_a_timm_directory_without_a_converter_goes_the_pytorch_path(tmp_path):
    from torch_models import torchvision_resnet_names

    net = timm_directory(tmp_path / "timm", architecture="my_resnet")
    backbone = resnet18()
    report = kt.load_weights_by_name(backbone, tmp_path / "timm",
                                     rename=torchvision_resnet_names)
    assert report.path.endswith("model.safetensors")
    assert report.how["conv1_conv"] == "renamed, PyTorch layout"
    x = images(64)
    expected = outputs(net, x, "features")
    assert np.abs(numpy(backbone(x)) - expected).max() / np.abs(expected).max() < 1e-4


@pytest.mark.parametrize("hostile, says", [
    ({"module": "keras.layers", "class_name": "Lambda",
      "config": {"function": "print"}, "registered_name": None}, "is a Lambda"),
    ({"module": "os", "class_name": "system", "config": {}, "registered_name": "system"},
     "class 'system' from module 'os'"),
])
@pytest.mark.once  # routing and refusals; the presets and converters load on JAX
def test_a_preset_config_naming_code_is_refused_before_anything_is_built(
        resnet_preset, hostile, says, monkeypatch):
    _, preset = resnet_preset
    config = json.loads((preset / "config.json").read_text())
    config["config"]["dtype"] = hostile
    (preset / "config.json").write_text(json.dumps(config))

    def never(*args, **kwargs):
        raise AssertionError("keras_hub built a model from a refused config")

    monkeypatch.setattr(keras_hub.models.Backbone, "from_preset", never)
    target = resnet()
    before = [numpy(v).copy() for v in target.weights]
    with pytest.raises(kt.UnsafeSourceError, match=says) as err:
        kt.load_weights_by_name(target, preset)
    assert "config.json" in str(err.value) and "dtype" in str(err.value)
    for value, v in zip(before, target.weights):
        np.testing.assert_array_equal(numpy(v), value)


@pytest.mark.once  # routing and refusals; the presets and converters load on JAX
def test_a_handle_goes_through_keras_hubs_own_download(resnet_preset, monkeypatch):
    # Offline here: keras_hub's download is pointed at the local preset, to
    # show that a handle is passed to keras_hub (which fetches and caches it).
    from keras_hub.src.utils import preset_utils

    source, preset = resnet_preset
    fetched = []

    def get_file(handle, path):
        fetched.append((handle, path))
        return str(preset / path)

    monkeypatch.setattr(preset_utils, "get_file", get_file)
    monkeypatch.setattr(preset_utils, "check_file_exists",
                        lambda handle, path: (preset / path).exists())
    target = resnet()
    report = kt.load_weights_by_name(target, "hf://someone/resnet")
    assert report.path == "hf://someone/resnet" and report.missing == ()
    assert ("hf://someone/resnet", "model.weights.h5") in fetched
    x = images()
    np.testing.assert_array_equal(numpy(target(x)), numpy(source(x)))


@pytest.mark.once  # routing and refusals; the presets and converters load on JAX
def test_without_keras_hub_a_preset_is_refused_naming_the_extra(resnet_preset, monkeypatch):
    _, preset = resnet_preset
    monkeypatch.setitem(sys.modules, "keras_hub", None)  # as if not installed
    with pytest.raises(kt.MissingDependencyError, match=r"keras_transfer\[keras-hub\]"):
        kt.load_weights_by_name(resnet(), preset)


@pytest.mark.once  # routing and refusals; the presets and converters load on JAX
def test_a_directory_that_is_no_source_is_named(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(kt.WeightFileError, match="holding neither a KerasHub preset"):
        kt.load_weights_by_name(resnet(), tmp_path)


@pytest.mark.once  # routing and refusals; the presets and converters load on JAX
def test_every_config_of_a_preset_is_checked_not_only_config_json(tmp_path, monkeypatch):
    # keras_hub deserializes preprocessor.json (and tokenizer / converter
    # configs) too: a class from `os` there is refused before anything is built
    task = keras_hub.models.ResNetImageClassifier(backbone=resnet(), num_classes=3,
                                                  preprocessor=None)
    task.save_to_preset(tmp_path / "task")
    (tmp_path / "task" / "preprocessor.json").write_text(json.dumps(
        {"module": "os", "class_name": "system", "config": {}, "registered_name": "system"}))

    def never(*args, **kwargs):
        raise AssertionError("keras_hub built a model from a refused preset")

    monkeypatch.setattr(keras_hub.models.ResNetImageClassifier, "from_preset", never)
    for include_task in (True, False):
        with pytest.raises(kt.UnsafeSourceError, match=r"preprocessor\.json: '\(top\)' names "
                                                        "class 'system' from module 'os'"):
            kt.load_weights_by_name(resnet(), tmp_path / "task", include_task=include_task)


def hf_bert_directory(folder, model_type="bert", seed=0):
    """A Hugging Face BERT checkpoint directory, written by safetensors' own
    writer with transformers' key names (`bert.encoder.layer.0.attention...`)
    and random values: what keras_hub's transformers converter reads."""
    import safetensors.numpy

    rng = np.random.default_rng(seed)
    hidden, inner, layers, vocab, positions = 16, 32, 2, 50, 16
    shapes = {"embeddings.word_embeddings.weight": (vocab, hidden),
              "embeddings.position_embeddings.weight": (positions, hidden),
              "embeddings.token_type_embeddings.weight": (2, hidden),
              "embeddings.LayerNorm.weight": (hidden,), "embeddings.LayerNorm.bias": (hidden,),
              "pooler.dense.weight": (hidden, hidden), "pooler.dense.bias": (hidden,)}
    for i in range(layers):
        prefix = f"encoder.layer.{i}."
        for name in ("attention.self.query", "attention.self.key", "attention.self.value",
                     "attention.output.dense"):
            shapes[prefix + name + ".weight"] = (hidden, hidden)
            shapes[prefix + name + ".bias"] = (hidden,)
        shapes[prefix + "intermediate.dense.weight"] = (inner, hidden)
        shapes[prefix + "intermediate.dense.bias"] = (inner,)
        shapes[prefix + "output.dense.weight"] = (hidden, inner)
        shapes[prefix + "output.dense.bias"] = (hidden,)
        for norm in ("attention.output.LayerNorm", "output.LayerNorm"):
            shapes[prefix + norm + ".weight"] = (hidden,)
            shapes[prefix + norm + ".bias"] = (hidden,)
    state = {"bert." + k: (rng.normal(size=s) * 0.2 + (1.0 if k.endswith("LayerNorm.weight")
                                                       else 0.0)).astype("float32")
             for k, s in shapes.items()}
    folder.mkdir()
    safetensors.numpy.save_file(state, folder / "model.safetensors")
    (folder / "config.json").write_text(json.dumps({
        "model_type": model_type, "vocab_size": vocab, "num_hidden_layers": layers,
        "num_attention_heads": 2, "hidden_size": hidden, "intermediate_size": inner,
        "max_position_embeddings": positions}))


def test_a_transformers_directory_keras_hub_converts_is_rebuilt_by_keras_hub(tmp_path):
    hf_bert_directory(tmp_path / "hf")
    target = bert()
    report = kt.load_weights_by_name(target, tmp_path / "hf")
    assert report.missing == () and report.unused == ()
    assert report.how["transformer_layer_0"] == "by name"  # KerasHub's names: converted
    converted = keras_hub.models.BertBackbone.from_preset(str(tmp_path / "hf"))
    np.testing.assert_array_equal(numpy(target(tokens())["sequence_output"]),
                                  numpy(converted(tokens())["sequence_output"]))


@pytest.mark.once  # routing and refusals; the presets and converters load on JAX
def test_a_transformers_directory_without_a_converter_goes_the_pytorch_path(tmp_path):
    hf_bert_directory(tmp_path / "hf", model_type="not_a_known_model")
    # one module per Keras layer: the embeddings load; a transformer block would not
    inputs = keras.Input((16,), dtype="int32")
    embedded = keras.layers.Embedding(50, 16, name="bert_embeddings_word_embeddings")(inputs)
    model = keras.Model(inputs, embedded)
    report = kt.load_weights_by_name(model, tmp_path / "hf")
    assert report.path.endswith("model.safetensors")
    assert report.loaded == {"bert_embeddings_word_embeddings": "bert.embeddings.word_embeddings"}
