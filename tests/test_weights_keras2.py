"""Files Keras 2 / tf_keras and Keras 3 wrote (not this package), loaded by name."""

import os
import re
import types
import zipfile

import h5py
import keras
import numpy as np
import pytest
import tf_keras
from hypothesis import HealthCheck, given, settings, strategies as st

import keras_transfer as kt
from helpers import conv_model, infer, predict, randomize, text, tiny_base, tiny_model
from keras_transfer import _files
from keras_transfer import _h5
from keras_transfer import _layers
from tf_keras_helpers import randomize_tf_keras, tf_keras_model


# --- Keras 2 / tf_keras files ---------------------------------------------


@pytest.mark.parametrize("nested", [False, True])
def test_tf_keras_file_loads_with_identical_predictions(tmp_path, data, nested):
    x, _ = data
    legacy = randomize_tf_keras(tf_keras_model(nested=nested))
    legacy.save_weights(str(tmp_path / "legacy.h5"))  # a real Keras-2 file
    target = tiny_model()
    report = kt.load_weights_by_name(target, tmp_path / "legacy.h5")
    assert set(report.loaded) == {"Dense_a", "Bn", "Dense_b", "Head"}
    np.testing.assert_allclose(predict(target, x), legacy.predict(x, verbose=0), rtol=1e-5, atol=1e-5)


def test_tf_keras_reads_our_file_by_name(tmp_path, data):
    x, _ = data
    source = randomize(tiny_model())
    kt.save_weights_by_name(source, tmp_path / "w.h5")
    legacy = tf_keras_model()
    legacy.load_weights(str(tmp_path / "w.h5"), by_name=True)
    np.testing.assert_allclose(legacy.predict(x, verbose=0), predict(source, x), rtol=1e-5, atol=1e-5)




# --- files from other software --------------------------------------------------


def keras_2_0_file(path, layers, seed=0):
    """A whole-model file as Keras 2.0.5 wrote it: weights under
    `model_weights`, each weight named by its TF name scope, which Keras 2.0
    uniquified (`conv2d_1_1/kernel:0` in the group of layer `conv2d_1`), an
    optimizer group beside them. `layers`: [(name, [(weight, shape)])]."""
    rng = np.random.default_rng(seed)
    arrays = {}
    with h5py.File(path, "w") as f:
        f.attrs["keras_version"] = b"2.0.5"
        f.attrs["backend"] = b"tensorflow"
        f.attrs["model_config"] = b'{"class_name": "Model", "config": {}}'
        weights = f.create_group("model_weights")
        weights.attrs["layer_names"] = np.array([name.encode() for name, _ in layers])
        weights.attrs["keras_version"] = b"2.0.5"
        weights.attrs["backend"] = b"tensorflow"
        for name, variables in layers:
            group = weights.create_group(name)
            names = [f"{name}_1/{w}:0" for w, _ in variables]
            group.attrs["weight_names"] = np.array([n.encode() for n in names], dtype="S")
            for stored, (w, shape) in zip(names, variables):
                value = rng.normal(size=shape).astype("float32")
                if w == "moving_variance":
                    value = np.abs(value) + 0.5
                group.create_dataset(stored, data=value)
                arrays[f"{name}/{w}"] = value
        optimizer = f.create_group("optimizer_weights")
        optimizer.attrs["weight_names"] = np.array([b"training/Adam/Variable:0"])
        optimizer.create_dataset("training/Adam/Variable:0", data=np.zeros(3, "float32"))
    return arrays


def test_keras_2_0_file_with_scoped_weight_names(tmp_path):
    # The mini-Xception emotion classifier of issue 12 in small: zero layers
    # loaded before, because of the `_1` scope suffixes.
    layers = [
        ("input_1", []),
        ("conv2d_1", [("kernel", (3, 3, 1, 8))]),
        ("batch_normalization_1", [("gamma", (8,)), ("beta", (8,)),
                                   ("moving_mean", (8,)), ("moving_variance", (8,))]),
        ("activation_1", []),
        ("separable_conv2d_1", [("depthwise_kernel", (3, 3, 8, 1)),
                                ("pointwise_kernel", (1, 1, 8, 16))]),
        ("conv2d_2", [("kernel", (3, 3, 16, 7)), ("bias", (7,))]),
        ("global_average_pooling2d_1", []),
        ("predictions", []),
    ]
    arrays = keras_2_0_file(tmp_path / "emotion.hdf5", layers)
    model = keras.Sequential([
        keras.Input((12, 12, 1)),
        keras.layers.Conv2D(8, 3, use_bias=False, name="conv2d_1"),
        keras.layers.BatchNormalization(name="batch_normalization_1"),
        keras.layers.Activation("relu", name="activation_1"),
        keras.layers.SeparableConv2D(16, 3, use_bias=False, padding="same", name="separable_conv2d_1"),
        keras.layers.Conv2D(7, 3, padding="same", name="conv2d_2"),
        keras.layers.GlobalAveragePooling2D(name="global_average_pooling2d_1"),
        keras.layers.Activation("softmax", name="predictions")])
    report = kt.load_weights_by_name(model, tmp_path / "emotion.hdf5")
    assert report.how == {n: "by name" for n in
                          ["conv2d_1", "batch_normalization_1", "separable_conv2d_1", "conv2d_2"]}
    for layer in model.layers:
        for v in layer.weights:
            np.testing.assert_array_equal(v.numpy(), arrays[f"{layer.name}/{v.name}"], err_msg=v.path)


def test_tf_keras_wrappers_load(tmp_path):
    def build(lib):
        layers = lib.layers
        inputs = lib.Input((5, 4))
        x = layers.TimeDistributed(layers.Dense(3), name="td")(inputs)
        x = layers.TimeDistributed(layers.BatchNormalization(), name="td_bn")(x)
        x = layers.Bidirectional(layers.LSTM(2, return_sequences=True), name="bi_lstm")(x)
        x = layers.Bidirectional(layers.GRU(2), name="bi_gru")(x)
        return lib.Model(inputs, x)
    source = randomize_tf_keras(build(tf_keras))
    source.save_weights(str(tmp_path / "w.h5"))
    target = build(keras)
    report = kt.load_weights_by_name(target, tmp_path / "w.h5")
    assert sorted(report.loaded) == ["bi_gru", "bi_lstm", "td", "td_bn"]
    x = np.random.default_rng(0).normal(size=(2, 5, 4)).astype("float32")
    np.testing.assert_allclose(infer(target, x), source(x).numpy(), rtol=1e-5, atol=1e-5)


def test_tf_keras_layer_renamed_after_build_loads(tmp_path, data):
    # tf_keras keeps the weight names of the old name: group 'Renamed' holds
    # 'Dense_a/kernel:0'.
    x, _ = data
    source = randomize_tf_keras(tf_keras_model())
    source.get_layer("Dense_a")._name = "Renamed"  # how tf_keras users renamed a built layer
    source.save_weights(str(tmp_path / "w.h5"))
    with h5py.File(tmp_path / "w.h5", "r") as f:
        assert [text(n) for n in f["Renamed"].attrs["weight_names"]] == [
            "Dense_a/kernel:0", "Dense_a/bias:0"]
    target = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, activation="relu", name="Renamed"),
                               *tiny_base()[1:], keras.layers.Dense(3, name="Head")])
    report = kt.load_weights_by_name(target, tmp_path / "w.h5")
    assert report.loaded["Renamed"] == "Renamed" and report.how["Renamed"] == "by name"
    np.testing.assert_allclose(predict(target, x), source.predict(x, verbose=0), rtol=1e-5, atol=1e-5)


def test_a_renamed_layer_does_not_load_into_a_layer_of_its_old_name(tmp_path):
    # Group 'Dense_a' holding 'dense/kernel:0' is one layer renamed after it
    # was built, not a nested model holding a layer 'dense': a new head that
    # Keras happens to name 'dense' must not take its arrays.
    source = randomize_tf_keras(tf_keras.Sequential([tf_keras.Input((4,)), tf_keras.layers.Dense(2)]))
    source.layers[0]._name = "Dense_a"  # tf_keras' automatic name was 'dense'
    source.save_weights(str(tmp_path / "w.h5"))
    with h5py.File(tmp_path / "w.h5", "r") as f:
        assert [text(n) for n in f["Dense_a"].attrs["weight_names"]] == [
            "dense/kernel:0", "dense/bias:0"]
    target = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, name="dense")])
    before = [v.numpy().copy() for v in target.weights]
    with pytest.raises(kt.NoLayersMatchedError, match="'dense' is not in the source; close: "
                                                      r"\['Dense_a'\]"):
        kt.load_weights_by_name(target, tmp_path / "w.h5")
    for v, b in zip(target.weights, before):
        np.testing.assert_array_equal(v.numpy(), b)
    report = kt.load_weights_by_name(target, tmp_path / "w.h5", rename={"dense": "Dense_a"})
    assert report.how == {"dense": "renamed, by name"}
    np.testing.assert_array_equal(target.get_layer("dense").kernel.numpy(), source.layers[0].kernel.numpy())


def one_layer_nested(lib, base="base"):
    """Input(4) -> nested model `base` holding one Dense `Dense_a` -> Head."""
    inner = lib.Sequential([lib.Input((4,)), lib.layers.Dense(8, name="Dense_a")], name=base)
    return lib.Sequential([lib.Input((4,)), inner, lib.layers.Dense(3, name="Head")])


@pytest.mark.parametrize("writer", ["tf_keras save_weights", "tf_keras save", "keras save"])
def test_nested_model_with_one_weighted_layer_loads_into_a_nested_target(tmp_path, data, writer):
    # tf_keras writes a nested model's group with its layers' array names:
    # group 'base' holds 'Dense_a/kernel:0' (Keras 3's legacy .h5 writer
    # 'base/Dense_a/kernel'). With a single weighted layer that reads the same
    # as a layer 'base' renamed after it was built; a target that nests a
    # model 'base' says which. (Keras' own, topological loader fills it; ours
    # reported 'Dense_a' missing and 'base' unused.)
    x, _ = data
    lib, save = writer.split()
    if lib == "tf_keras":
        source = randomize_tf_keras(one_layer_nested(tf_keras))
    else:
        source = randomize(one_layer_nested(keras))
    getattr(source, save)(str(tmp_path / "w.h5"))
    target = one_layer_nested(keras)
    report = kt.load_weights_by_name(target, tmp_path / "w.h5")
    assert report.loaded == {"Dense_a": "base/Dense_a", "Head": "Head"}
    assert report.how["Dense_a"] == "in 'base', by name" and not report.unused
    np.testing.assert_allclose(predict(target, x), predict(source, x), rtol=1e-5, atol=1e-5)
    # The nested model may be renamed too, as a layer is.
    other = one_layer_nested(keras, base="backbone")
    report = kt.load_weights_by_name(other, tmp_path / "w.h5", rename={"backbone": "base"})
    assert report.loaded == {"Dense_a": "base/Dense_a", "Head": "Head"}
    np.testing.assert_allclose(predict(other, x), predict(source, x), rtol=1e-5, atol=1e-5)
    # Two nested models renamed to one group: each offers its own layers.
    inputs = keras.Input((4,))
    towers = [keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, name=n)], name=t)
              for t, n in (("left", "Dense_a"), ("right", "Other"))]
    two = keras.Model(inputs, keras.layers.Add()([t(inputs) for t in towers]))
    report = kt.load_weights_by_name(two, tmp_path / "w.h5",
                                     rename={"left": "base", "right": "base"})
    assert report.loaded == {"Dense_a": "base/Dense_a"} and report.missing == ("Other",)
    # A flat target cannot tell the two readings apart: 'Dense_a' stays
    # missing (as a layer renamed after it was built stays apart from a
    # layer of its old name, below) until rename= names the group.
    flat = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, name="Dense_a"),
                             keras.layers.Dense(3, name="Head")])
    assert kt.load_weights_by_name(flat, tmp_path / "w.h5").missing == ("Dense_a",)
    kt.load_weights_by_name(flat, tmp_path / "w.h5", rename={"Dense_a": "base"})
    np.testing.assert_allclose(predict(flat, x), predict(source, x), rtol=1e-5, atol=1e-5)


def test_a_group_named_for_a_nested_target_model_loads_only_into_its_layers(tmp_path):
    # Group 'base' holding 'dense/kernel:0' (a layer renamed after it was
    # built) beside a target that nests a model 'base' and has a new layer
    # 'dense' outside it: 'dense' is not in 'base', so it must not take the
    # arrays. (A review found the first version of the nested-model reading
    # loading them.)
    source = randomize_tf_keras(tf_keras.Sequential(
        [tf_keras.Input((4,)), tf_keras.layers.Dense(8), tf_keras.layers.Dense(3, name="Head")]))
    source.layers[0]._name = "base"
    source.save_weights(str(tmp_path / "w.h5"))
    inputs = keras.Input((4,))
    base = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, name="Dense_a")], name="base")
    new = keras.layers.Dense(8, name="dense")
    target = keras.Model(inputs, keras.layers.Dense(3, name="Head")(
        keras.layers.Add()([base(inputs), new(inputs)])))
    before = new.kernel.numpy().copy()
    report = kt.load_weights_by_name(target, tmp_path / "w.h5")
    assert report.loaded == {"Head": "Head"}
    assert sorted(report.missing) == ["Dense_a", "dense"] and report.unused == ("base",)
    np.testing.assert_array_equal(new.kernel.numpy(), before)


def two_deep(lib, block="block"):
    """Input(4) -> model `inner` nesting a Sequential `block` (Dense_a, Dense_b) -> Head."""
    layers = [lib.layers.Dense(8, name="Dense_a"), lib.layers.Dense(6, name="Dense_b")]
    inputs = lib.Input((4,))
    inner = lib.Model(inputs, lib.Sequential([lib.Input((4,)), *layers], name=block)(inputs),
                      name="inner")
    inputs = lib.Input((4,))
    return lib.Model(inputs, lib.layers.Dense(3, name="Head")(inner(inputs)))


@pytest.mark.parametrize("writer", ["tf_keras save_weights", "tf_keras save", "keras save"])
def test_a_model_nested_two_deep_loads_by_name(tmp_path, data, writer):
    # Keras 3's legacy .h5 writer names a variable by the models it was built
    # in: group 'inner' holds 'block/Dense_a/kernel' (tf_keras: 'Dense_a/kernel:0').
    # Found by porting Keras' nested-model cases: the layers were reported
    # missing and kept their initial values.
    x, _ = data
    lib, save = writer.split()
    source = (randomize_tf_keras(two_deep(tf_keras)) if lib == "tf_keras"
              else randomize(two_deep(keras)))
    getattr(source, save)(str(tmp_path / "w.h5"))
    target = two_deep(keras)
    report = kt.load_weights_by_name(target, tmp_path / "w.h5")
    assert report.loaded == {"Dense_a": "inner/Dense_a", "Dense_b": "inner/Dense_b",
                             "Head": "Head"}
    assert not report.missing and not report.unused
    np.testing.assert_allclose(predict(target, x), predict(source, x), rtol=1e-5, atol=1e-5)
    # The middle model renamed: rename= names it, as it names a layer.
    other = two_deep(keras, block="tower")
    kt.load_weights_by_name(other, tmp_path / "w.h5", rename={"tower": "block"})
    np.testing.assert_allclose(predict(other, x), predict(source, x), rtol=1e-5, atol=1e-5)


def test_a_layer_name_inside_another_layers_name_is_not_a_match(tmp_path):
    # A layer's name is looked for after the target's nested models' names,
    # not after any part of an array's name: tf_keras' 'block/Conv' (names
    # with '/', as its DenseNet and MobileNetV3 have) is not the layer 'Conv'.
    layer = tf_keras.layers.Dense(4, name="block/Conv")
    source = randomize_tf_keras(tf_keras.Sequential(
        [tf_keras.Input((4,)), tf_keras.Sequential([tf_keras.Input((4,)), layer], name="base"),
         tf_keras.layers.Dense(2, name="Head")]))
    source.save(str(tmp_path / "w.h5"))
    with h5py.File(tmp_path / "w.h5", "r") as f:
        assert [text(n) for n in f["model_weights/base"].attrs["weight_names"]] == [
            "block/Conv/kernel:0", "block/Conv/bias:0"]
    conv = keras.layers.Dense(4, name="Conv")
    target = keras.Sequential([keras.Input((4,)),
                               keras.Sequential([keras.Input((4,)), conv], name="base"),
                               keras.layers.Dense(2, name="Head")])
    before = conv.kernel.numpy().copy()
    report = kt.load_weights_by_name(target, tmp_path / "w.h5")
    assert report.loaded == {"Head": "Head"}
    assert report.missing == ("Conv",) and report.unused == ("base",)
    np.testing.assert_array_equal(conv.kernel.numpy(), before)
    # Nor when the target nests a model 'block' elsewhere: a name counts after
    # a model's name only for the layers inside that model.
    conv = keras.layers.Dense(4, name="Conv")
    inputs = keras.Input((4,))
    block = keras.Sequential([keras.Input((4,)), keras.layers.Dense(4, name="Other")], name="block")
    base = keras.Sequential([keras.Input((4,)), conv], name="base")
    target = keras.Model(inputs, keras.layers.Dense(2, name="Head")(
        keras.layers.Add()([base(inputs), block(inputs)])))
    before = conv.kernel.numpy().copy()
    report = kt.load_weights_by_name(target, tmp_path / "w.h5")
    assert report.loaded == {"Head": "Head"} and set(report.missing) == {"Conv", "Other"}
    np.testing.assert_array_equal(conv.kernel.numpy(), before)


def tokens_model(lib, name):
    """A subclassed model (tf_keras or Keras 3) that holds a weight itself, a
    class token, beside its layer."""

    class Tokens(lib.Model):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.proj = lib.layers.Dense(3, name="Proj")

        def build(self, shape):
            self.token = self.add_weight(name="cls_token", shape=(1, 3))
            if lib is tf_keras:  # tf_keras marks the model built here
                super().build(shape)

        def call(self, x):
            return self.proj(x) + self.token

    return Tokens(name=name)


def with_head(lib, tokens):
    inputs = lib.Input((4,))
    return lib.Model(inputs, lib.layers.Dense(2, name="Head")(tokens(inputs)))


def test_weights_a_subclassed_model_holds_itself_load(tmp_path, data):
    x, _ = data
    alone = tokens_model(tf_keras, "tokens")
    alone(x)
    randomize_tf_keras(alone).save_weights(str(tmp_path / "alone.h5"))
    target = tokens_model(keras, "mine")
    target(x)
    report = kt.load_weights_by_name(target, tmp_path / "alone.h5")
    assert report.loaded == {"Proj": "Proj", "mine": "top_level_model_weights"}
    for ours, theirs in [(target.token, alone.token), (target.proj.kernel, alone.proj.kernel),
                         (target.proj.bias, alone.proj.bias)]:  # the arrays, bit for bit
        np.testing.assert_array_equal(ours.numpy(), theirs.numpy())
    # the outputs of two frameworks (tf_keras, and Keras on this backend): float32 rounding
    np.testing.assert_allclose(keras.ops.convert_to_numpy(target(x)), keras.ops.convert_to_numpy(alone(x)), rtol=1e-5, atol=1e-5)

    nested = randomize_tf_keras(with_head(tf_keras, tokens_model(tf_keras, "tokens")), seed=4)
    nested.save_weights(str(tmp_path / "nested.h5"))
    target = with_head(keras, tokens_model(keras, "tokens"))
    report = kt.load_weights_by_name(target, tmp_path / "nested.h5")
    assert report.loaded == {"Proj": "tokens/Proj", "Head": "Head", "tokens": "tokens"}
    np.testing.assert_allclose(predict(target, x), nested.predict(x, verbose=0), rtol=1e-5, atol=1e-5)


def test_our_files_keep_the_weights_a_model_holds_itself(tmp_path, data):
    x, _ = data
    source = tokens_model(keras, "tokens")
    source(x)
    kt.save_weights_by_name(randomize(source), tmp_path / "alone.h5")
    for load in (lambda m: kt.load_weights_by_name(m, tmp_path / "alone.h5"),
                 lambda m: m.load_weights(tmp_path / "alone.h5", by_name=True)):  # Keras' own
        target = tokens_model(keras, "other")
        target(x)
        load(target)
        np.testing.assert_array_equal(target.token.numpy(), source.token.numpy())

    nested = randomize(with_head(keras, tokens_model(keras, "tokens")), seed=5)
    kt.save_weights_by_name(nested, tmp_path / "nested.h5")
    target = with_head(keras, tokens_model(keras, "tokens"))
    report = kt.load_weights_by_name(target, tmp_path / "nested.h5")
    assert report.loaded == {"Proj": "Proj", "Head": "Head", "tokens": "tokens"}
    np.testing.assert_array_equal(predict(target, x), predict(nested, x))


def long_named(lib, name):
    """tf_keras' test_saving_model_with_long_weights_names
    (tf_keras/src/saving/save_test.py): a nested model with a 32 KiB layer
    name, so the nested model's weight-name list passes 64 KiB."""
    inputs = lib.Input((2,))
    f = inputs
    for i in range(4):
        f = lib.layers.Dense(2, name=f"nested_model_dense_{i}")(f)
    f = lib.layers.Dense(2, name=name)(f)
    nested = lib.Model(inputs, f, name="nested_model")
    inputs = lib.Input((2,))
    return lib.Model(inputs, lib.layers.Dense(2, name="outer_model_output")(nested(inputs)))


def test_name_lists_past_64_kib_are_chunked_both_ways(tmp_path):
    name = "nested_model_output" + "x" * 2**15
    x = np.random.default_rng(0).normal(size=(3, 2)).astype("float32")

    written_by_tf_keras = randomize_tf_keras(long_named(tf_keras, name))
    written_by_tf_keras.save_weights(str(tmp_path / "tf_keras.h5"))
    with h5py.File(tmp_path / "tf_keras.h5", "r") as f:
        assert "weight_names0" in f["nested_model"].attrs  # tf_keras chunked it
    target = long_named(keras, name)
    report = kt.load_weights_by_name(target, tmp_path / "tf_keras.h5")
    assert name in report.loaded
    np.testing.assert_allclose(keras.ops.convert_to_numpy(target(x)), np.asarray(written_by_tf_keras(x)), rtol=1e-5, atol=1e-6)

    source = randomize(long_named(keras, name), seed=2)
    kt.save_weights_by_name(source, tmp_path / "ours.h5")  # raised OSError before
    with h5py.File(tmp_path / "ours.h5", "r") as f:
        assert "weight_names0" in f["nested_model"].attrs
    for load in (lambda m: kt.load_weights_by_name(m, tmp_path / "ours.h5"),
                 lambda m: m.load_weights(tmp_path / "ours.h5", by_name=True)):  # Keras' own
        target = long_named(keras, name)
        load(target)
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(target(x)), keras.ops.convert_to_numpy(source(x)))
    legacy = long_named(tf_keras, name)
    legacy.load_weights(str(tmp_path / "ours.h5"), by_name=True)
    np.testing.assert_allclose(np.asarray(legacy(x)), keras.ops.convert_to_numpy(source(x)), rtol=1e-5, atol=1e-6)


