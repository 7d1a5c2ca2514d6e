import keras
import numpy as np
import pytest

import keras_transfer as kt
from keras_transfer import _layers
from helpers import DenseBnBlock, randomize, tiny_base, tiny_model


def trainable_names(model):
    return sorted({v.path.split("/")[-2] for v in model.trainable_weights})


def nested():
    base = keras.Sequential([keras.Input((4,)), *tiny_base()], name="base")
    return keras.Sequential([keras.Input((4,)), base, keras.layers.Dense(3, name="Head")])


def test_freeze_by_index_name_and_pattern():
    model = tiny_model()
    kt.freeze(model, upto=2)
    assert trainable_names(model) == ["Dense_b", "Head"]
    kt.unfreeze(model, train_batchnorm=True)
    kt.freeze(model, layers=["Dense_b", model.get_layer("Head")])
    assert trainable_names(model) == ["Bn", "Dense_a"]
    kt.unfreeze(model, train_batchnorm=True)
    kt.freeze(model, pattern="Dense_.")
    assert trainable_names(model) == ["Bn", "Head"]


def test_spec_shorthand_picks_the_selector():
    model = tiny_model()
    assert [l.name for l in kt.select_layers(model, 2)] == ["Dense_a", "Bn"]
    assert kt.select_layers(model, np.int64(2)) == kt.select_layers(model, 2)  # numpy counts
    assert [l.name for l in kt.select_layers(model, "Dense_.*")] == ["Dense_a", "Dense_b"]
    assert [l.name for l in kt.select_layers(model, ["Head"])] == ["Head"]


def test_unfreeze_keeps_batchnorm_in_inference_mode_unless_asked():
    model = tiny_model()
    kt.freeze(model)
    assert model.trainable_weights == []
    kt.unfreeze(model)
    assert not model.get_layer("Bn").trainable
    assert trainable_names(model) == ["Dense_a", "Dense_b", "Head"]
    kt.unfreeze(model, train_batchnorm=True)
    assert trainable_names(model) == ["Bn", "Dense_a", "Dense_b", "Head"]


def test_names_and_patterns_reach_into_nested_models():
    model = nested()
    kt.freeze(model, layers=["Dense_a"])
    assert trainable_names(model) == ["Bn", "Dense_b", "Head"]
    kt.freeze(model, upto=1)  # the whole base
    assert trainable_names(model) == ["Head"]
    # unfreezing one inner layer turns its container on, not its siblings
    kt.unfreeze(model, layers=["Dense_b"])
    assert trainable_names(model) == ["Dense_b", "Head"]
    kt.unfreeze(model, upto=1)
    assert trainable_names(model) == ["Dense_a", "Dense_b", "Head"]
    # patterns match names at any depth: both Dense layers of the nested base
    kt.unfreeze(model, train_batchnorm=True)
    assert [l.name for l in kt.freeze(model, pattern="Dense_.")] == ["Dense_a", "Dense_b"]
    assert trainable_names(model) == ["Bn", "Head"]
    kt.freeze(model, upto=1)
    assert [l.name for l in kt.unfreeze(model, pattern=r"Dense_b|Bn", train_batchnorm=True)] == [
        "Bn", "Dense_b"]
    assert trainable_names(model) == ["Bn", "Dense_b", "Head"]


def test_bad_selectors_raise_clear_errors():
    model = tiny_model()
    with pytest.raises(kt.LayerSelectionError, match="out of range"):
        kt.freeze(model, upto=9)
    with pytest.raises(kt.LayerSelectionError, match="No layer named 'Dense_z'"):
        kt.freeze(model, layers=["Dense_z"])
    with pytest.raises(kt.LayerSelectionError, match="matches no layer"):
        kt.freeze(model, pattern="Conv.*")
    with pytest.raises(kt.LayerSelectionError, match="one of"):
        kt.freeze(model, upto=1, pattern="Head")


def test_trainable_summary_counts_parameters():
    model = nested()
    kt.freeze(model, layers=["Dense_a"])
    lines = []
    text = kt.trainable_summary(model, print_fn=lines.append)
    assert lines == [text]
    rows = {line.split()[0]: line.split() for line in text.splitlines()[1:]}
    # Dense_a: 4*8+8 = 40 frozen; Bn: 16 trainable, 16 frozen (moving stats);
    # Dense_b: 8*6+6 = 54; Head: 6*3+3 = 21
    assert rows["Dense_a"][2:] == ["0", "40"]
    assert rows["Bn"][2:] == ["16", "16"]
    assert rows["base"][2:] == ["70", "56"]
    assert rows["total"][1:] == ["91", "56"]


# -- Ports of Lightning's fine-tuning callback tests ---------------------------


# Port of Lightning's test_freeze_unfreeze_function
# (tests/tests_pytorch/callbacks/test_finetuning_callback.py). Lightning's
# `freeze(train_bn=False)` stops BatchNorm tracking statistics, `make_trainable`
# starts it again, and freezing a list freezes the listed modules only. Here a
# frozen BatchNormalization must run in inference mode even when called with
# training=True, exactly as one frozen by hand in plain Keras does.
def test_frozen_batchnorm_runs_in_inference_mode_like_plain_keras(data):
    x, _ = data
    ours, by_hand = randomize(tiny_model()), randomize(tiny_model())
    start = ours.get_layer("Bn").moving_mean.numpy().copy()

    def outputs(model, training):
        return keras.ops.convert_to_numpy(model(x, training=training))

    kt.freeze(ours)
    by_hand.trainable = False
    np.testing.assert_allclose(outputs(ours, True), outputs(by_hand, True), rtol=1e-6)
    np.testing.assert_allclose(outputs(ours, True), outputs(ours, False), rtol=1e-6)
    np.testing.assert_array_equal(ours.get_layer("Bn").moving_mean.numpy(), start)

    # unfrozen without train_batchnorm: the Dense layers train, BN stays in inference mode
    kt.unfreeze(ours)
    assert trainable_names(ours) == ["Dense_a", "Dense_b", "Head"]
    np.testing.assert_allclose(outputs(ours, True), outputs(ours, False), rtol=1e-6)
    np.testing.assert_array_equal(ours.get_layer("Bn").moving_mean.numpy(), start)

    # with train_batchnorm: batch statistics and moving-average updates, as plain Keras
    kt.unfreeze(ours, train_batchnorm=True)
    by_hand.trainable = True
    trained = outputs(ours, True)  # one training call each: it moves the averages
    np.testing.assert_allclose(trained, outputs(by_hand, True), rtol=1e-5, atol=1e-6)
    assert not np.allclose(trained, outputs(ours, False), atol=1e-3)
    moved_mean = ours.get_layer("Bn").moving_mean.numpy()
    assert not np.array_equal(moved_mean, start)
    np.testing.assert_allclose(moved_mean, by_hand.get_layer("Bn").moving_mean.numpy(), rtol=1e-6)

    # a list of a layer object and a name freezes those two only; BN is back in inference mode
    kt.freeze(ours, layers=[ours.get_layer("Bn"), "Head"])
    assert trainable_names(ours) == ["Dense_a", "Dense_b"]
    np.testing.assert_allclose(outputs(ours, True), outputs(ours, False), rtol=1e-6)


class ParamBlock(keras.Model):
    """Lightning's ConvBlockParam: sublayers and a weight of its own (a parent with parameters)."""

    def __init__(self, units, prefix, **kwargs):
        super().__init__(**kwargs)
        self.dense = keras.layers.Dense(units, name=f"{prefix}dense")
        self.bn = keras.layers.BatchNormalization(name=f"{prefix}bn")

    def build(self, input_shape):
        self.parent_param = self.add_weight(shape=(1,), initializer="zeros", name="parent_param")

    def call(self, x, training=None):
        return self.bn(self.dense(x) + self.parent_param, training=training)


def conv_block(units, prefix, name):
    """Lightning's ConvBlock: a container of layer, activation, BatchNorm."""
    return keras.Sequential([keras.layers.Dense(units, name=f"{prefix}dense"),
                             keras.layers.ReLU(name=f"{prefix}relu"),
                             keras.layers.BatchNormalization(name=f"{prefix}bn")], name=name)


def encoder_decoder():
    encoder = keras.Sequential([keras.Input((4,)), ParamBlock(8, "b0_", name="block0"),
                                conv_block(6, "b1_", "block1")], name="encoder")
    return keras.Sequential([keras.Input((4,)), encoder, conv_block(3, "dec_", "decoder")],
                            name="net")


# Port of Lightning's test_complex_nested_model (and its older form
# test_deep_nested_model), tests/tests_pytorch/callbacks/test_finetuning_callback.py:
# freezing an encoder made of nested containers freezes every leaf and the
# weight a container holds itself; made trainable again, the encoder has 9
# trainable weights with BatchNorm's (parent_param, 2 x kernel, bias, gamma,
# beta), 5 without. Inside `fit`, phase 1 leaves every encoder weight, the
# parent's own one and BN statistics two containers deep included, untouched.
def test_freezing_a_nested_encoder_freezes_every_leaf_and_the_containers_own_weights(data):
    model = encoder_decoder()
    encoder = model.get_layer("encoder")
    parent_param = encoder.get_layer("block0").parent_param
    kt.freeze(model, layers=["encoder"])
    assert encoder.trainable_weights == [] and not parent_param.trainable
    assert len(model.get_layer("decoder").trainable_weights) == 4  # kernel, bias, gamma, beta
    kt.unfreeze(model, train_batchnorm=True)
    assert len(encoder.trainable_weights) == 9
    kt.freeze(model)
    kt.unfreeze(model)
    assert sorted(v.path.split("/")[-1] for v in encoder.trainable_weights) == [
        "bias", "bias", "kernel", "kernel", "parent_param"]

    x, y = data
    model = encoder_decoder()
    model.compile(optimizer=keras.optimizers.SGD(0.1),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    encoder = model.get_layer("encoder")
    start = {v.path: v.numpy().copy() for v in encoder.weights}
    ends = []
    model.fit(x, y, epochs=2, verbose=0, callbacks=[
        kt.TwoPhaseSchedule(freeze=["encoder"], switch_epoch=1, verbose=0),
        keras.callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs: ends.append(
            {v.path: v.numpy().copy() for v in encoder.weights}))])
    moved = lambda a, b: sorted(p for p in a if not np.array_equal(a[p], b[p]))  # noqa: E731
    assert moved(start, ends[0]) == []
    assert moved(ends[0], ends[1]) == [
        "encoder/block0/b0_dense/bias", "encoder/block0/b0_dense/kernel",
        "encoder/block0/parent_param", "encoder/block1/b1_dense/bias",
        "encoder/block1/b1_dense/kernel"]


def test_batchnorm_inside_a_plain_layer_stays_frozen_unless_asked(data):
    # Keras' `trainable = True` on a layer turns on its sublayers too, so a
    # BatchNormalization inside a block written as a layer was unfrozen with
    # the block (found by porting Lightning's nested-model test); `unfreeze`
    # and phase 2 keep it in inference mode with its statistics, as they do
    # one inside a nested model.
    x, y = data
    model = keras.Sequential([keras.Input((4,)), DenseBnBlock(name="block"),
                              keras.layers.Dense(3, name="head")])
    block = model.get_layer("block")
    kt.freeze(model)
    kt.unfreeze(model)
    assert block.dense.trainable and not block.bn.trainable
    assert [v.path for v in model.trainable_weights] == [
        "sequential/block/dense/kernel", "sequential/block/dense/bias",
        "sequential/head/kernel", "sequential/head/bias"]
    kt.unfreeze(model, train_batchnorm=True)
    assert block.bn.trainable

    model = keras.Sequential([keras.Input((4,)), DenseBnBlock(name="block"),
                              keras.layers.Dense(3, name="head")])
    block = model.get_layer("block")
    model.compile(optimizer="adam",
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    statistics = [block.bn.moving_mean.numpy().copy(), block.bn.moving_variance.numpy().copy()]
    dense = block.dense.kernel.numpy().copy()
    model.fit(x, y, epochs=2, verbose=0, callbacks=[
        kt.TwoPhaseSchedule(freeze=["block"], switch_epoch=1, verbose=0)])
    np.testing.assert_array_equal(block.bn.moving_mean.numpy(), statistics[0])
    np.testing.assert_array_equal(block.bn.moving_variance.numpy(), statistics[1])
    assert not np.array_equal(block.dense.kernel.numpy(), dense)  # phase 2 trained the block

    # A block outside what the schedule freezes keeps the flags `unfreeze` left:
    # the schedule's look at every phase puts them back at any depth (it turned
    # that BatchNormalization on again, and it trained).
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(4, name="base"),
                              DenseBnBlock(name="block"), keras.layers.Dense(3, name="head")])
    block = model.get_layer("block")
    kt.freeze(model)
    kt.unfreeze(model)
    model.compile(optimizer="adam",
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    statistics = block.bn.moving_mean.numpy().copy()
    model.fit(x, y, epochs=2, verbose=0, callbacks=[
        kt.TwoPhaseSchedule(freeze=["base"], switch_epoch=1, verbose=0)])
    assert not block.bn.trainable
    np.testing.assert_array_equal(block.bn.moving_mean.numpy(), statistics)


class ScaledDenseBnBlock(DenseBnBlock):
    """A block with a weight of its own beside its Dense and BatchNormalization."""

    def build(self, input_shape):
        self.scale = self.add_weight(shape=(), initializer="ones", name="scale")

    def call(self, x, training=None):
        return self.scale * super().call(x, training=training)


def block_model():
    return keras.Sequential([keras.Input((4,)), ScaledDenseBnBlock(name="block"),
                             keras.layers.Dense(3, name="head")])


@pytest.mark.parametrize("nested_in_a_model", [False, True])
def test_freeze_with_train_batchnorm_trains_only_batchnorm_as_keras_by_hand(
        data, nested_in_a_model):
    # fastai's `freeze(train_bn=True)`: the BatchNormalization inside a frozen
    # block (a plain layer, or a nested model frozen with `trainable = False`)
    # trains in training mode; the block's Dense and its own weight stay
    # frozen. Plain Keras does the same by freezing every other piece by hand.
    x, y = data
    ours, by_hand = block_model(), block_model()
    by_hand.set_weights(ours.get_weights())
    if nested_in_a_model:
        ours = keras.Sequential([keras.Input((4,)), keras.Sequential(
            [keras.Input((4,)), ours.layers[0]], name="base"), ours.layers[1]])
        ours.get_layer("base").trainable = False
        selection = ["base"]
    else:
        selection = ["block"]
    kt.freeze(ours, selection, train_batchnorm=True)
    block = by_hand.get_layer("block")
    block.dense.trainable = False
    block.scale.trainable = False
    suffixes = lambda m: [v.path.split("/", 1)[1].replace("base/", "")  # noqa: E731
                          for v in m.trainable_weights]
    assert suffixes(ours) == suffixes(by_hand) == [
        "block/bn/gamma", "block/bn/beta", "head/kernel", "head/bias"]
    # the block reports what trains inside it, as Keras' does (its own flag
    # stays on; the summary and `block.trainable_weights` read it)
    block_rows = lambda m: [line.split() for line in kt.trainable_summary(  # noqa: E731
        m, print_fn=lambda text: None).splitlines() if line.split()[0] == "block"]
    assert block_rows(ours) == block_rows(by_hand) == [["block", "ScaledDenseBnBlock", "16", "57"]]
    before = {v.path: v.numpy().copy() for v in ours.weights}
    for model in (ours, by_hand):
        model.compile(optimizer=keras.optimizers.SGD(0.1),
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        model.fit(x, y, batch_size=16, epochs=1, shuffle=False, verbose=0)
    for a, b in zip(ours.weights, by_hand.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.path)
    moved = sorted(v.path.rsplit("/", 2)[-2] + "/" + v.name for v in ours.weights
                   if not np.array_equal(v.numpy(), before[v.path]))
    assert moved == ["bn/beta", "bn/gamma", "bn/moving_mean", "bn/moving_variance",
                     "head/bias", "head/kernel"]  # training mode: the statistics moved


class SharedBnBlock(keras.layers.Layer):
    """A block that applies a BatchNormalization it shares with another block."""

    def __init__(self, bn, **kwargs):
        super().__init__(**kwargs)
        self.dense = keras.layers.Dense(8, name="dense")
        self.bn = bn

    def call(self, x, training=None):
        return self.bn(self.dense(x), training=training)


class OuterBlock(keras.layers.Layer):
    """A block holding a block that holds the BatchNormalization (two deep)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.inner = DenseBnBlock(name="inner")

    def call(self, x, training=None):
        return self.inner(x, training=training)


def shared_or_deep(kind):
    if kind == "shared":
        bn = keras.layers.BatchNormalization(name="bn")
        blocks = [SharedBnBlock(bn, name="ba"), SharedBnBlock(bn, name="bb")]
    else:
        blocks = [OuterBlock(name="ba")]
    model = keras.Sequential([keras.Input((8,)), *blocks, keras.layers.Dense(3, name="head")])
    return model, [b.name for b in blocks]


@pytest.mark.parametrize("kind", ["shared", "deep"])
def test_freeze_with_train_batchnorm_reaches_shared_and_deeply_held_batchnorm(kind):
    # Every block on a path to the BatchNormalization reports it as trainable,
    # as the same freeze done by hand in Keras does: a block that shares it
    # with another block, and both blocks above one two deep.
    ours, names = shared_or_deep(kind)
    kt.freeze(ours, names, train_batchnorm=True)
    by_hand, _ = shared_or_deep(kind)
    for layer in _layers.with_sublayers(by_hand):
        if isinstance(layer, keras.layers.Dense) and layer.name != "head":
            layer.trainable = False
    rows = lambda m: [line.split() for line in kt.trainable_summary(  # noqa: E731
        m, print_fn=lambda text: None).splitlines()[1:]]
    assert rows(ours) == rows(by_hand)
    assert [r[2] for r in rows(ours)[:len(names)]] == ["16"] * len(names)  # bn's gamma, beta
    paths = lambda m: [v.path.split("/", 1)[1] for v in m.trainable_weights]  # noqa: E731
    assert paths(ours) == paths(by_hand)
