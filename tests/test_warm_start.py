"""shrink_perturb: w = shrink * w + perturb * w_fresh on the selected layers' trainable weights.

The rule is Ash & Adams' ("On Warm-Starting Neural Network Training", 2020):
their reference code mixes every parameter with that of a freshly initialized
copy of the network and leaves buffers (BatchNormalization statistics) alone.
"""

import keras
import numpy as np
import pytest

import keras_transfer as kt
from helpers import randomize, tiny_base, tiny_model
from tf_keras_helpers import randomize_tf_keras, tf_keras_model


def values(model):
    return {v.path: keras.ops.convert_to_numpy(v).copy() for v in model.weights}


def test_each_trainable_weight_becomes_shrink_w_plus_perturb_w_fresh():
    model, fresh = randomize(tiny_model(), seed=1), randomize(tiny_model(), seed=2)
    before, start = values(model), values(fresh)  # both models are named "tiny": same paths
    changed = kt.shrink_perturb(model, layers=["Dense_a", "Bn"], shrink=0.4, perturb=0.1,
                                fresh=fresh)
    assert [layer.name for layer in changed] == ["Dense_a", "Bn"]
    after = values(model)
    for path in after:
        layer, weight = path.split("/")[-2:]
        if layer in ("Dense_a", "Bn") and weight not in ("moving_mean", "moving_variance"):
            np.testing.assert_allclose(after[path], 0.4 * before[path] + 0.1 * start[path],
                                       rtol=1e-6, err_msg=path)
        else:  # unselected layers and the moving statistics are left as they were
            np.testing.assert_array_equal(after[path], before[path], err_msg=path)


def test_default_fresh_is_a_new_draw_from_each_layers_initializer():
    keras.utils.set_random_seed(3)
    model = keras.Sequential([keras.Input((200,)),
                              keras.layers.Dense(100, bias_initializer="ones", name="Wide"),
                              keras.layers.Dense(1, name="Out")])
    loaded = np.full((200, 100), 5.0, "float32")  # far outside Glorot's range
    model.get_layer("Wide").kernel.assign(loaded)
    model.get_layer("Wide").bias.assign(np.full(100, 7.0, "float32"))
    original_out = keras.ops.convert_to_numpy(model.get_layer("Out").kernel).copy()
    kt.shrink_perturb(model, layers=["Wide"], shrink=0.0, perturb=1.0)
    kernel = keras.ops.convert_to_numpy(model.get_layer("Wide").kernel)
    limit = np.sqrt(6 / (200 + 100))  # glorot_uniform, Dense's default kernel_initializer
    assert np.abs(kernel).max() <= limit
    assert abs(kernel.std() - limit / np.sqrt(3)) < 0.05 * limit  # uniform, not a constant
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(model.get_layer("Wide").bias),
                                  np.ones(100))  # the bias initializer's value, not 7
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(model.get_layer("Out").kernel),
                                  original_out)


def test_default_fresh_follows_keras_global_seed_and_leaves_moving_statistics():
    def mixed(seed):
        keras.utils.set_random_seed(seed)
        model = randomize(tiny_model())
        before = values(model)
        kt.shrink_perturb(model, "Dense_.|Bn", shrink=0.5, perturb=0.5)
        return before, values(model)

    before, first = mixed(5)
    _, again = mixed(5)
    _, other = mixed(6)
    kernel, moving = "tiny/Dense_a/kernel", "tiny/Bn/moving_variance"
    np.testing.assert_array_equal(first[kernel], again[kernel])  # same seed, same draw
    assert not np.array_equal(first[kernel], other[kernel])      # another seed, another draw
    assert not np.array_equal(first[kernel], 0.5 * before[kernel])  # a draw was added
    np.testing.assert_array_equal(first[moving], before[moving])


def test_layers_without_weights_are_passed_over_and_nested_models_walked_into():
    base = keras.Sequential([keras.Input((4,)), *tiny_base(), keras.layers.ReLU(name="Act")],
                            name="base")
    model = randomize(keras.Sequential([keras.Input((4,)), base,
                                        keras.layers.Dense(3, name="Head")]))
    fresh = randomize(keras.models.clone_model(model), seed=9)
    before = values(model)
    changed = kt.shrink_perturb(model, upto=1, shrink=0.5, perturb=0.25, fresh=fresh)  # the base
    assert [layer.name for layer in changed] == ["Dense_a", "Bn", "Dense_b"]
    after = values(model)
    kernel = model.get_layer("base").get_layer("Dense_b").kernel
    np.testing.assert_allclose(
        after[kernel.path],
        0.5 * before[kernel.path] + 0.25 * keras.ops.convert_to_numpy(
            fresh.get_layer("base").get_layer("Dense_b").kernel), rtol=1e-6)
    np.testing.assert_array_equal(after[model.get_layer("Head").kernel.path],
                                  before[model.get_layer("Head").kernel.path])
    with pytest.raises(kt.LayerSelectionError, match=r"hold no weights: \['Act'\]"):
        kt.shrink_perturb(model, layers=["Act"], shrink=0.5, perturb=0.0)


def test_the_result_lists_each_changed_layer_once_in_model_order():
    model = keras.Sequential([keras.Input((4,)), keras.Sequential(
        [keras.Input((4,)), *tiny_base()], name="base"), keras.layers.Dense(3, name="Head")])
    before = values(model)
    changed = kt.shrink_perturb(model, pattern=".*", shrink=0.5, perturb=0.0)  # base and inside it
    assert [layer.name for layer in changed] == ["Dense_a", "Bn", "Dense_b", "Head"]
    kernel = model.get_layer("Head").kernel.path
    np.testing.assert_allclose(values(model)[kernel], 0.5 * before[kernel])  # halved once
    changed = kt.shrink_perturb(model, layers=["Head", "Dense_a"], shrink=0.5, perturb=0.0)
    assert [layer.name for layer in changed] == ["Dense_a", "Head"]


def test_duplicate_layer_names_are_refused_as_by_name_loading_refuses_them():
    def twice():
        inner = [keras.Sequential([keras.Input((4,)), keras.layers.Dense(4, name="D")], name=n)
                 for n in ("a", "b")]
        inputs = keras.Input((4,))
        return keras.Model(inputs, inner[1](inner[0](inputs)))

    with pytest.raises(kt.DuplicateLayerNameError, match="'D'"):
        kt.shrink_perturb(twice(), pattern="D", shrink=0.0, perturb=1.0)
    model = tiny_model()
    with pytest.raises(kt.DuplicateLayerNameError, match="'D'"):
        kt.shrink_perturb(model, pattern="Dense_a", shrink=0.0, perturb=1.0, fresh=twice())


def test_weights_that_are_not_floating_point_are_refused():
    class Counter(keras.layers.Layer):
        def build(self, input_shape):
            self.count = self.add_weight(shape=(3,), dtype="int32", initializer="ones")

        def call(self, x):
            return x

    model = keras.Sequential([keras.Input((4,)), Counter(name="Counter")])
    with pytest.raises(kt.ArgumentError, match=r"'.*Counter/.*' is int32.*Leave layer 'Counter'"):
        kt.shrink_perturb(model, layers=["Counter"], shrink=0.5, perturb=0.5)


def test_a_frozen_layer_is_refused_by_name_and_nothing_changes():
    model = randomize(tiny_model())
    kt.freeze(model, layers=["Dense_b"])
    before = values(model)
    with pytest.raises(kt.LayerSelectionError, match="'Dense_b'.*frozen.*before freezing"):
        kt.shrink_perturb(model, layers=["Dense_a", "Dense_b"], shrink=0.4, perturb=0.1)
    after = values(model)
    for path in before:
        np.testing.assert_array_equal(after[path], before[path], err_msg=path)


@pytest.mark.parametrize("kwargs, error, message", [
    ({"shrink": 1.5, "perturb": 0.1}, kt.ArgumentError, r"shrink must be in \[0, 1\].*1.5"),
    ({"shrink": -0.1, "perturb": 0.1}, kt.ArgumentError, r"shrink must be in \[0, 1\]"),
    ({"shrink": 0.4, "perturb": -1}, kt.ArgumentError, "perturb must be >= 0"),
    ({"shrink": float("nan"), "perturb": 0.1}, kt.ArgumentError, "shrink must be finite"),
    ({"shrink": True, "perturb": 0.1}, kt.ArgumentTypeError, "shrink must be a number"),
    ({"shrink": 0.4, "perturb": "0.1"}, kt.ArgumentTypeError, "perturb must be a number"),
])
def test_bad_factors_are_refused_naming_the_argument(kwargs, error, message):
    model = randomize(tiny_model())
    before = values(model)
    with pytest.raises(error, match=message):
        kt.shrink_perturb(model, layers=["Dense_a"], **kwargs)
    assert all(np.array_equal(values(model)[p], before[p]) for p in before)


def test_a_fresh_model_of_another_architecture_is_refused_and_nothing_changes():
    model = randomize(tiny_model())
    before = values(model)
    wider = tiny_model(head_units=5)
    with pytest.raises(kt.ShapeMismatchError, match=r"layer 'Head' holds weights of shapes "
                                                    r"\[\(6, 3\), \(3,\)\].*\[\(6, 5\), \(5,\)\]"):
        # Dense_a comes first and would be changed if values were assigned as they are found
        kt.shrink_perturb(model, layers=["Dense_a", "Head"], shrink=0.4, perturb=0.1, fresh=wider)
    other = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, name="Other")])
    with pytest.raises(kt.ArgumentError, match=r"no layer holding weights named \['Dense_a'\]"):
        kt.shrink_perturb(model, layers=["Dense_a"], shrink=0.4, perturb=0.1, fresh=other)
    with pytest.raises(kt.ArgumentTypeError, match="fresh must be a Keras 3 `keras.Model`"):
        kt.shrink_perturb(model, layers=["Dense_a"], shrink=0.4, perturb=0.1,
                          fresh=model.get_weights())
    with pytest.raises(kt.ArgumentError, match="fresh is the model itself"):
        kt.shrink_perturb(model, layers=["Dense_a"], shrink=0.4, perturb=0.1, fresh=model)
    after = values(model)
    for path in before:
        np.testing.assert_array_equal(after[path], before[path], err_msg=path)


def test_an_unbuilt_model_or_fresh_model_is_refused():
    unbuilt = keras.Sequential([keras.layers.Dense(8, name="Dense_a")], name="unbuilt")
    with pytest.raises(kt.UnbuiltModelError, match="'unbuilt' has no weights yet"):
        kt.shrink_perturb(randomize(tiny_model()), layers=["Dense_a"], shrink=0.4, perturb=0.1,
                          fresh=unbuilt)
    with pytest.raises(kt.UnbuiltModelError, match="'unbuilt' has no weights yet"):
        kt.shrink_perturb(unbuilt, layers=["Dense_a"], shrink=0.4, perturb=0.1)


def test_a_model_keras_cannot_clone_asks_for_fresh(monkeypatch):
    def cannot_clone(model):
        raise ValueError("subclassed model without get_config")

    monkeypatch.setattr(keras.models, "clone_model", cannot_clone)
    model = tiny_model()
    with pytest.raises(kt.ArgumentError, match="clone_model cannot copy model 'tiny'.*pass fresh="):
        kt.shrink_perturb(model, layers=["Dense_a"], shrink=0.4, perturb=0.1)


def test_the_mix_starts_from_weights_loaded_from_a_tf_keras_file(tmp_path):
    # The intended order: build, load the source by name, shrink-and-perturb, fine-tune.
    source = randomize_tf_keras(tf_keras_model())
    source.save_weights(tmp_path / "source.h5")  # tf_keras' own by-name layout
    model, fresh = tiny_model(head_units=5, head_name="New_head"), randomize(tiny_model(), seed=4)
    kt.load_weights_by_name(model, tmp_path / "source.h5")
    kt.shrink_perturb(model, "Dense_.", shrink=0.4, perturb=0.1, fresh=fresh)
    loaded = dict(zip([w.name for w in source.weights], source.get_weights()))
    for name in ("Dense_a", "Dense_b"):
        np.testing.assert_allclose(
            keras.ops.convert_to_numpy(model.get_layer(name).kernel),
            0.4 * loaded[f"{name}/kernel:0"]
            + 0.1 * keras.ops.convert_to_numpy(fresh.get_layer(name).kernel), rtol=1e-6)
