"""How arrays are matched inside a layer: by name, by Keras' saved order,
every shape checked."""

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
from helpers import conv_model, predict, randomize, text, tiny_base, tiny_model
from keras_transfer import _files
from keras_transfer import _h5
from keras_transfer import _layers
from tf_keras_helpers import randomize_tf_keras, tf_keras_model


# --- how arrays are matched inside a layer -----------------------------------


def test_saved_order_ignores_trainable_flags_and_lora():
    # _layers.saved_order reads Keras' private `_trainable_variables`; this
    # fails if Keras renames it or stops recording creation-time trainability.
    def bn_dense():
        return keras.Sequential([keras.Input((4,)), keras.layers.BatchNormalization(name="Bn"),
                                 keras.layers.Dense(4, name="D")], name="block")
    want = [v.path for v in _layers.saved_order(bn_dense())]
    assert want == ["block/Bn/gamma", "block/Bn/beta", "block/D/kernel", "block/D/bias",
                    "block/Bn/moving_mean", "block/Bn/moving_variance"]
    frozen = bn_dense()
    frozen.get_layer("Bn").trainable = False
    frozen.get_layer("D").enable_lora(2)  # the kernel's own flag goes False
    order = [v.path for v in _layers.saved_order(frozen)]
    assert [p for p in order if "lora" not in p] == want
    assert [v.path for v in frozen.trainable_weights + frozen.non_trainable_weights] != order


class Scaled(keras.layers.Layer):
    """Weights of its own (one created trainable, one not) beside a sublayer
    that holds a sublayer: `saved_order` must see every level."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.inner = keras.Sequential([keras.layers.BatchNormalization(name="Bn")], name="inner")

    def build(self, shape):
        self.count = self.add_weight(shape=(4,), name="count", trainable=False)
        self.scale = self.add_weight(shape=(4,), name="scale")
        self.inner.build(shape)

    def call(self, x):
        return self.inner(x) * self.scale + self.count


def test_saved_order_sees_the_layer_itself_and_sublayers_at_any_depth():
    # _layers.saved_order walks Keras' private `_flatten_layers(include_self=True,
    # recursive=True)`; this fails if Keras drops the layer itself or stops at
    # the first level of sublayers (the frozen flags would then decide).
    layer = Scaled(name="scaled")
    layer.build((None, 4))
    layer.trainable = False
    assert [_layers.relative_name(layer, v) for v in _layers.saved_order(layer)] == [
        "scale", "inner/Bn/gamma", "inner/Bn/beta",
        "count", "inner/Bn/moving_mean", "inner/Bn/moving_variance"]


class Block(keras.layers.Layer):
    """A layer with sublayers whose names another writer did not use."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.proj = keras.layers.Dense(4, name="proj")
        self.norm = keras.layers.BatchNormalization(name="norm")

    def build(self, shape):
        self.proj.build(shape)
        self.norm.build(shape[:-1] + (4,))

    def call(self, x):
        return self.norm(self.proj(x))


class TfBlock(tf_keras.layers.Layer):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.dense = tf_keras.layers.Dense(4)
        self.batch_norm = tf_keras.layers.BatchNormalization()

    def call(self, x):
        return self.batch_norm(self.dense(x))


def test_arrays_go_by_saved_order_when_names_differ_whatever_is_frozen(tmp_path, data):
    x, _ = data
    source = tf_keras.Sequential([tf_keras.Input((4,)), TfBlock(name="block")])
    randomize_tf_keras(source).save_weights(str(tmp_path / "w.h5"))
    target = keras.Sequential([keras.Input((4,)), Block(name="block")])
    target.get_layer("block").proj.trainable = False  # reorders trainable_weights
    report = kt.load_weights_by_name(target, tmp_path / "w.h5")
    assert report.how == {"block": "by order"}
    np.testing.assert_allclose(predict(target, x), source.predict(x, verbose=0), rtol=1e-5, atol=1e-5)


class TwoNorms(keras.layers.Layer):
    """Two BatchNormalization sublayers: every array has one shape."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.first = keras.layers.BatchNormalization(name="first")
        self.second = keras.layers.BatchNormalization(name="second")

    def build(self, shape):
        self.first.build(shape)
        self.second.build(shape)

    def call(self, x):
        return self.second(self.first(x))


class TfTwoNorms(tf_keras.layers.Layer):
    """The same layer in tf_keras, whose sublayers take automatic names
    (`batch_normalization`, `batch_normalization_1`)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.bn1 = tf_keras.layers.BatchNormalization()
        self.bn2 = tf_keras.layers.BatchNormalization()

    def call(self, x):
        return self.bn2(self.bn1(x))


@pytest.mark.parametrize("frozen", [None, "bn2", "bn1"])
def test_sublayers_frozen_at_save_time_never_mix_their_arrays(tmp_path, data, frozen):
    # tf_keras writes a layer's arrays trainable first as flagged at save time.
    # With bn1 frozen that is [bn_1/gamma, bn_1/beta, bn/gamma, bn/beta,
    # bn/moving_mean, ..., bn_1/moving_mean, ...]: by position, 'first' would
    # take gamma and beta from one source sublayer and its statistics from the
    # other. With nothing frozen, or bn2 frozen, the file's order is a Keras
    # order and loads.
    x, _ = data
    source = tf_keras.Sequential([tf_keras.Input((4,)), TfTwoNorms(name="block"),
                                  tf_keras.layers.Dense(2, name="Head")])
    randomize_tf_keras(source)
    if frozen:
        getattr(source.get_layer("block"), frozen).trainable = False
    source.save_weights(str(tmp_path / "w.h5"))
    target = keras.Sequential([keras.Input((4,)), TwoNorms(name="block"),
                               keras.layers.Dense(2, name="Head")])
    if frozen != "bn1":
        report = kt.load_weights_by_name(target, tmp_path / "w.h5")
        assert report.how == {"block": "by order", "Head": "by name"}
        np.testing.assert_allclose(keras.ops.convert_to_numpy(target(x)), keras.ops.convert_to_numpy(source(x)), rtol=1e-5, atol=1e-5)
        return
    before = [v.numpy().copy() for v in target.weights]
    with pytest.raises(kt.WeightMatchError) as err:
        kt.load_weights_by_name(target, tmp_path / "w.h5")
    message = str(err.value)
    assert "'block'" in message and "w.h5" in message
    assert "'first' would take arrays of both 'batch_normalization_1' and " \
           "'batch_normalization'" in message
    assert "trainable" in message  # what to do: save it with the layer trainable
    for v, b in zip(target.weights, before):
        np.testing.assert_array_equal(v.numpy(), b)
    report = kt.load_weights_by_name(target, tmp_path / "w.h5", skip_mismatch=True)
    assert list(report.skipped) == ["block"] and list(report.loaded) == ["Head"]
    for v, b in zip(target.get_layer("block").weights, before):
        np.testing.assert_array_equal(v.numpy(), b)


def anonymous_file(path, names, shapes, layer="block", seed=0):
    """A by-name file with one layer whose arrays have the given names."""
    rng = np.random.default_rng(seed)
    arrays = [rng.normal(size=s).astype("float32") for s in shapes]
    with h5py.File(path, "w") as f:
        f.attrs["layer_names"] = np.array([layer.encode()])
        group = f.create_group(layer)
        group.attrs["weight_names"] = np.array([f"{layer}/{n}".encode() for n in names])
        for name, array in zip(names, arrays):
            group.create_dataset(f"{layer}/{name}", data=array)
    return arrays


def test_names_that_contradict_positions_are_refused(tmp_path):
    # The file names 'norm' arrays as 'proj' would take them: going by
    # position would put the file's beta into the model's gamma.
    model = keras.Sequential([keras.Input((4,)), Block(name="block")])
    shapes = [(4, 4), (4,), (4,), (4,), (4,), (4,)]
    anonymous_file(tmp_path / "w.h5", ["a/kernel", "a/bias", "b/beta", "b/gamma",
                                       "b/moving_mean", "b/moving_variance"], shapes)
    before = [v.numpy().copy() for v in model.weights]
    with pytest.raises(kt.WeightMatchError, match="'block/b/beta' would go into 'norm/gamma'"):
        kt.load_weights_by_name(model, tmp_path / "w.h5")
    for v, b in zip(model.weights, before):
        np.testing.assert_array_equal(v.numpy(), b)


class Counted(keras.layers.Layer):
    """Own trainable and non-trainable weights plus a sublayer, all of one
    shape: its saved order and its creation order differ."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.norm = keras.layers.BatchNormalization(name="norm")

    def build(self, shape):
        self.scale = self.add_weight(shape=(4,), name="scale")
        self.count = self.add_weight(shape=(4,), name="count", trainable=False)
        self.norm.build(shape)

    def call(self, x):
        return self.norm(x) * self.scale + self.count


def test_two_orders_that_both_fit_are_ambiguous(tmp_path):
    model = keras.Sequential([keras.Input((4,)), Counted(name="block")])
    anonymous_file(tmp_path / "w.h5", [f"w{i}" for i in range(6)], [(4,)] * 6)
    with pytest.raises(kt.WeightMatchError, match="unambiguously"):
        kt.load_weights_by_name(model, tmp_path / "w.h5")
    with pytest.raises(kt.NoLayersMatchedError, match="unambiguously"):
        kt.load_weights_by_name(model, tmp_path / "w.h5", skip_mismatch=True)


def test_a_bias_the_target_lacks_is_named_not_dropped(tmp_path):
    source = randomize_tf_keras(tf_keras_model())
    source.save_weights(str(tmp_path / "w.h5"))
    target = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, use_bias=False, name="Dense_a"),
                               keras.layers.BatchNormalization(name="Bn")])
    before = [v.numpy().copy() for v in target.weights]
    with pytest.raises(kt.ShapeMismatchError) as err:
        kt.load_weights_by_name(target, tmp_path / "w.h5")
    assert "'Dense_a'" in str(err.value) and "['Dense_a/bias']" in str(err.value)
    assert "use_bias" in str(err.value)
    for v, b in zip(target.weights, before):
        np.testing.assert_array_equal(v.numpy(), b)
    report = kt.load_weights_by_name(target, tmp_path / "w.h5", skip_mismatch=True)
    assert list(report.skipped) == ["Dense_a"] and "Dense_a" in report.unused


def test_normalization_state_follows_the_loaded_weights(tmp_path):
    # Keras' Normalization derives its broadcast mean and variance from its
    # weights in finalize_state(); a loader that skips it computes with the old
    # statistics (seen on EfficientNet: 1e-4 off tf_keras).
    def build(lib):
        return lib.Sequential([lib.Input((3,)), lib.layers.Normalization(name="norm")])
    source = build(tf_keras)
    source.get_layer("norm").adapt(np.random.default_rng(0).normal(5, 3, size=(64, 3)))
    source.save_weights(str(tmp_path / "w.h5"))
    target = build(keras)
    kt.load_weights_by_name(target, tmp_path / "w.h5")
    x = np.random.default_rng(1).normal(5, 3, size=(8, 3)).astype("float32")
    np.testing.assert_allclose(keras.ops.convert_to_numpy(target(x)), keras.ops.convert_to_numpy(source(x)), rtol=1e-5, atol=1e-5)


