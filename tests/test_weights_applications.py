"""keras.applications checkpoints written by tf_keras load by name into Keras 3.

tf_keras `save_weights("x.h5")` of a keras.applications model is the layout of
the official ImageNet weight files. For each family present in both tf_keras
and Keras 3, a tf_keras model (weights=None, every weight randomized) is saved
by tf_keras itself, loaded by name into Keras 3's same architecture, and must
hold exactly what Keras' own positional loader puts there and give tf_keras's
outputs. Nothing is downloaded.
"""

import re

import keras
import numpy as np
import pytest
import tf_keras

import keras_transfer as kt
from helpers import infer
from tf_keras_helpers import randomize_tf_keras

# (family, input size (the family's minimum, or 32), include_top, how tf_keras
# writes the file, {layer: what report.how must say})
CASES = [
    ("VGG16", 32, False, "save_weights", {}),
    ("ResNet50", 32, True, "save", {}),
    ("ResNet50V2", 32, False, "save_weights", {}),
    ("MobileNet", 32, True, "save_weights",
     {"conv_dw_1": "by name (depthwise_kernel as kernel)"}),
    ("MobileNetV2", 32, False, "save_weights",
     {"expanded_conv_depthwise": "by name (depthwise_kernel as kernel)"}),
    ("MobileNetV3Small", 32, True, "save_weights",
     {"conv": "normalized, by name", "conv_bn": "normalized, by name",
      "expanded_conv_depthwise": "normalized, by name (depthwise_kernel as kernel)"}),
    ("MobileNetV3Large", 32, False, "save", {"conv_1_bn": "normalized, by name"}),
    ("Xception", 71, False, "save_weights", {}),
    ("InceptionV3", 75, True, "save_weights", {}),
    ("InceptionResNetV2", 75, False, "save_weights", {}),
    ("DenseNet121", 32, True, "save_weights",
     {"conv1_conv": "normalized, by name", "conv1_bn": "normalized, by name"}),
    ("EfficientNetB0", 32, True, "save_weights",
     {"block1a_dwconv": "by name (depthwise_kernel as kernel)"}),
    ("EfficientNetV2B0", 32, False, "save",
     {"block4a_dwconv2": "by name (depthwise_kernel as kernel)"}),
    ("ConvNeXtTiny", 32, False, "save_weights",
     {"convnext_tiny_stage_0_block_0_layer_scale": "by order",
      "convnext_tiny_stem_conv": "in 'convnext_tiny_stem', by name"}),
    ("NASNetMobile", 32, False, "save_weights", {}),
]


HOW = re.compile(r"(normalized, |in '\w+', )?by (name|order)( \(depthwise_kernel as kernel\))?")


def weight_holders(model):
    """The non-model layers holding weights, nested models walked into."""
    names = []
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            names += weight_holders(layer)
        elif layer.weights:
            names.append(layer.name)
    return names


# The matching is backend-independent; every family runs in the TensorFlow
# pass. The JAX pass (where these big models take half a minute each to build
# and run) loads one family into JAX variables and compares its outputs:
# ConvNeXtTiny, whose arrays match by name, by order (its layer scales) and
# inside a nested model (its stem). Renamed variables (depthwise_kernel) and
# normalized names (MobileNetV3Small, DenseNet121) are string work before any
# variable is touched: the TensorFlow pass checks them.
ON_JAX_TOO = {"ConvNeXtTiny"}
PARAMS = [pytest.param(*case, id=case[0], marks=() if case[0] in ON_JAX_TOO
                       else pytest.mark.tensorflow_only) for case in CASES]


@pytest.mark.filterwarnings("ignore:You are saving your model as an HDF5 file")
@pytest.mark.parametrize("family,size,include_top,writer,how", PARAMS)
def test_tf_keras_application_file_loads_by_name(tmp_path, family, size, include_top,
                                                  writer, how):
    kwargs = dict(weights=None, include_top=include_top, input_shape=(size, size, 3))
    if include_top:
        kwargs.update(classes=10, classifier_activation=None)
    source = randomize_tf_keras(getattr(tf_keras.applications, family)(**kwargs), seed=7)
    path = str(tmp_path / f"{family}.h5")
    getattr(source, writer)(path)  # tf_keras writes the file
    target = getattr(keras.applications, family)(**kwargs)

    report = kt.load_weights_by_name(target, path)

    assert sorted(report.loaded) == sorted(weight_holders(target))
    assert report.skipped == {} and report.missing == () and report.unused == ()
    for layer, said in how.items():
        assert report.how[layer] == said, layer
    for layer, said in report.how.items():  # nothing else, e.g. no "renamed"
        assert HOW.fullmatch(said), (layer, said)
    reference = getattr(keras.applications, family)(**kwargs)
    reference.load_weights(path)  # Keras' own positional reader of legacy files
    for ours, theirs in zip(target.weights, reference.weights):
        np.testing.assert_array_equal(ours.numpy(), theirs.numpy(), err_msg=ours.path)
    x = np.random.default_rng(0).uniform(0, 255, size=(2, size, size, 3)).astype("float32")
    want = source(x, training=False).numpy()  # eager: no tracing of big graphs
    got = infer(target, x)
    assert np.isfinite(want).all() and np.abs(want).max() > 0
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())


# on JAX, ConvNeXtTiny above loads layers found inside a nested model (its stem)
@pytest.mark.once
def test_fine_tuned_checkpoint_with_a_nested_base_loads(tmp_path):
    # A tf_keras fine-tuning checkpoint: the application is a nested model, so
    # its arrays sit in one group, 'MobilenetV3small' ('Conv/BatchNorm/gamma:0'
    # beside 'Conv/kernel:0'); each goes to the layer with the longest
    # matching name ('conv_bn', not 'conv').
    def build(lib):
        base = lib.applications.MobileNetV3Small(weights=None, include_top=False,
                                                 input_shape=(32, 32, 3), pooling="avg")
        return lib.Sequential([lib.Input((32, 32, 3)), base, lib.layers.Dense(4, name="head")]), base
    source, _ = build(tf_keras)
    randomize_tf_keras(source, seed=2).save_weights(str(tmp_path / "fine_tuned.h5"))
    target, base = build(keras)
    report = kt.load_weights_by_name(target, tmp_path / "fine_tuned.h5")
    assert sorted(report.loaded) == sorted(weight_holders(target))
    assert report.loaded["conv_bn"] == "MobilenetV3small/Conv/BatchNorm"
    assert report.how["conv_bn"] == "in 'MobilenetV3small', by name"
    x = np.random.default_rng(0).uniform(0, 255, size=(2, 32, 32, 3)).astype("float32")
    want = source(x, training=False).numpy()
    np.testing.assert_allclose(keras.ops.convert_to_numpy(target(x, training=False)), want, rtol=1e-4,
                               atol=1e-4 * np.abs(want).max())
