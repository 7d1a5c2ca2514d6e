import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_hub
import tf_keras

import keras_transfer as kt
from keras_transfer import caching
from keras_transfer import hub

pytestmark = pytest.mark.tensorflow_only  # SavedModels are TensorFlow graphs


@pytest.fixture
def x():
    return np.random.default_rng(0).normal(size=(16, 4)).astype("float32")


def tf_keras_module(path):
    """A tf_keras model published the TF Hub way, with BatchNormalization."""
    model = tf_keras.Sequential([
        tf_keras.Input((4,)),
        tf_keras.layers.Dense(8, name="dense"),
        tf_keras.layers.BatchNormalization(name="bn"),
        tf_keras.layers.Dense(5, name="out",
                              kernel_regularizer=tf_keras.regularizers.L2(0.1))])
    rng = np.random.default_rng(1)
    model.set_weights([np.abs(rng.normal(size=w.shape)).astype("float32") + 0.5
                       for w in model.weights])
    tf.saved_model.save(model, str(path))
    return model


def test_hub_layer_matches_hub_keras_layer_in_tf_keras(tmp_path, x):
    tf_keras_module(tmp_path / "m")
    legacy = tf_keras.Sequential([tf_keras.Input((4,)), tensorflow_hub.KerasLayer(str(tmp_path / "m"))])
    ours = keras.Sequential([keras.Input((4,)), kt.HubLayer(tmp_path / "m")])
    np.testing.assert_allclose(ours.predict(x, verbose=0), legacy.predict(x, verbose=0),
                               rtol=1e-6, atol=1e-6)
    inputs = keras.Input((4,))  # functional models take it too
    functional = keras.Model(inputs, keras.layers.Dense(2)(kt.HubLayer(tmp_path / "m")(inputs)))
    assert functional.predict(x, verbose=0).shape == (16, 2)


def test_training_flag_reaches_batchnorm_only_when_trainable(tmp_path, x):
    tf_keras_module(tmp_path / "m")
    layer = kt.HubLayer(tmp_path / "m", trainable=True)
    infer = layer(x, training=False).numpy()
    train = layer(x, training=True).numpy()  # also updates the moving statistics
    assert not np.allclose(train, infer)  # batch statistics vs moving statistics
    frozen = kt.HubLayer(tmp_path / "m", trainable=False)
    np.testing.assert_array_equal(frozen(x, training=True).numpy(), infer)


def test_module_variables_are_keras_weights_with_valid_names(tmp_path):
    tf_keras_module(tmp_path / "m")
    layer = kt.HubLayer(tmp_path / "m", trainable=True)
    assert len(layer.trainable_weights) == 6  # 2 Dense x 2 + BN gamma, beta
    assert len(layer.non_trainable_weights) == 2  # BN moving statistics
    assert all(":" not in v.name for v in layer.weights)
    assert kt.HubLayer(tmp_path / "m").trainable_weights == []


@pytest.mark.parametrize("optimizer", [
    lambda: keras.optimizers.Adam(1e-2),
    lambda: keras.optimizers.SGD(1e-2, momentum=0.9),
    lambda: keras.optimizers.AdamW(1e-2)])
def test_fine_tunes_with_any_optimizer_and_adds_regularization(tmp_path, x, optimizer):
    tf_keras_module(tmp_path / "m")
    layer = kt.HubLayer(tmp_path / "m", trainable=True, name="base")
    model = keras.Sequential([keras.Input((4,)), layer, keras.layers.Dense(3, name="head")])
    model.compile(optimizer=optimizer(), loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    y = (x[:, 0] > 0).astype("int32")
    model(x, training=True)
    assert len(model.losses) == 1 and float(model.losses[0]) > 0  # the L2 term
    before = [v.numpy().copy() for v in layer.trainable_weights]
    history = model.fit(x, y, epochs=5, verbose=0)
    assert history.history["loss"][-1] < history.history["loss"][0]
    moved = [v.name for b, v in zip(before, layer.trainable_weights) if not np.array_equal(b, v.numpy())]
    # every module weight moves; the bias in front of BatchNormalization may
    # not, as its gradient is zero up to rounding (BN subtracts the batch mean)
    assert {"dense_kernel", "bn_gamma", "bn_beta", "out_kernel", "out_bias"} <= set(moved)


def test_two_phase_schedule_freezes_then_fine_tunes_the_module(tmp_path, x):
    tf_keras_module(tmp_path / "m")
    layer = kt.HubLayer(tmp_path / "m", trainable=True, name="base")
    model = keras.Sequential([keras.Input((4,)), layer, keras.layers.Dense(3, name="head")])
    model.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    y = (x[:, 0] > 0).astype("int32")
    seen = {}

    class Watch(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            seen[epoch] = [v.numpy().copy() for v in layer.weights]

    start = [v.numpy().copy() for v in layer.weights]
    model.fit(x, y, epochs=4, verbose=0, callbacks=[
        kt.TwoPhaseSchedule(freeze=["base"], switch_epoch=2, train_batchnorm=True, verbose=0), Watch()])
    assert all(np.array_equal(a, b) for a, b in zip(start, seen[1]))
    # phase 2 fine-tunes the module: each of its kernels moves (moving BN
    # statistics alone would not show that the optimizer trains it)
    kernels = [i for i, v in enumerate(layer.weights) if v.name.endswith("kernel")]
    assert [layer.weights[i].name for i in kernels] == ["dense_kernel", "out_kernel"]
    for i in kernels:
        assert not np.array_equal(seen[1][i], seen[3][i]), layer.weights[i].path


def hub_model(path, name="hub"):
    return keras.Sequential([keras.Input((4,)), kt.HubLayer(path, trainable=True, name=name),
                             keras.layers.Dense(3, name="head")])


def test_hub_variables_fall_into_the_discriminative_group_that_selects_the_layer(tmp_path, x):
    tf_keras_module(tmp_path / "m")
    y = (x[:, 0] > 0).astype("int32")
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    model = hub_model(tmp_path / "m")
    assert {v.path.split("/")[0] for v in model.get_layer("hub").weights} == {"hub"}
    # The hub's group at rate 0: if its variables fell into the head's group
    # (rate 1e-2), they would move.
    opt = kt.discriminative_optimizer(model, groups=[["hub"]], learning_rate=1e-2, multipliers=[0.0])
    model.compile(optimizer=opt, loss=loss)
    hub_start = [v.numpy().copy() for v in model.get_layer("hub").trainable_weights]
    head_start = model.get_layer("head").kernel.numpy().copy()
    model.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0)
    head_opt, group_opt = (next(o for o in opt.optimizers if o.name == n) for n in ("head", "group_0"))
    assert int(group_opt.iterations) == int(head_opt.iterations) == 2  # 16 examples, batch 8
    for before, v in zip(hub_start, model.get_layer("hub").trainable_weights):
        np.testing.assert_array_equal(v.numpy(), before, err_msg=v.path)
    assert not np.array_equal(model.get_layer("head").kernel.numpy(), head_start)
    # the head's sub-optimizer holds no state for the hub's variables
    hub_names = {v.path.replace("/", "_") for v in model.get_layer("hub").trainable_weights}
    assert not [s.name for s in head_opt.variables if any(n in s.name for n in hub_names)]
    assert len([s for s in group_opt.variables if any(n in s.name for n in hub_names)]) == 2 * 6

    # and at a non-zero rate the group trains the module
    model = hub_model(tmp_path / "m")
    opt = kt.discriminative_optimizer(model, groups=[["hub"]], learning_rate=1e-2, multipliers=[0.5])
    model.compile(optimizer=opt, loss=loss)
    kernel = model.get_layer("hub").trainable_weights[0]
    before = kernel.numpy().copy()
    model.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0)
    assert not np.array_equal(kernel.numpy(), before)


def test_a_base_holding_a_hub_layer_is_cached_like_the_plain_frozen_fit(tmp_path, x):
    tf_keras_module(tmp_path / "m")
    y = (x[:, 0] > 0).astype("int32")
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    base, _ = caching.split_at(hub_model(tmp_path / "m"), 1)
    with pytest.raises(kt.LayerSelectionError, match=r"trainable weights \(in \['hub'\]\)"):
        caching.check_cacheable(base)
    heads = []
    for cached in (False, True):
        keras.utils.set_random_seed(0)
        model = hub_model(tmp_path / "m")
        if cached:
            kt.fit_head_cached(model, (x, y), cut=1, epochs=3, learning_rate=1e-2, loss=loss,
                               metrics=(), batch_size=8, shuffle=False, verbose=0)
        else:
            kt.freeze(model, upto=1)
            model.compile(optimizer=keras.optimizers.Adam(1e-2), loss=loss)
            model.fit(x, y, batch_size=8, epochs=3, shuffle=False, verbose=0)
        heads.append(model.get_layer("head").kernel.numpy())
    np.testing.assert_allclose(heads[1], heads[0], rtol=1e-4, atol=1e-6)


def test_keras_export_and_signature_with_output_key(tmp_path, x):
    source = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, name="d")])
    source.export(str(tmp_path / "exported"), verbose=False)
    layer = kt.HubLayer(tmp_path / "exported")
    np.testing.assert_allclose(layer(x).numpy(), source.predict(x, verbose=0), rtol=1e-6)

    class Signed(tf.Module):
        def __init__(self):
            super().__init__()
            self.w = tf.Variable(np.eye(4, 2, dtype="float32"))

        @tf.function(input_signature=[tf.TensorSpec((None, 4), tf.float32)])
        def serve(self, inputs):
            return {"logits": inputs @ self.w, "sum": tf.reduce_sum(inputs, axis=1)}

    module = Signed()
    tf.saved_model.save(module, str(tmp_path / "signed"), signatures={"serving_default": module.serve})
    layer = kt.HubLayer(tmp_path / "signed", signature="serving_default", output_key="logits")
    np.testing.assert_allclose(layer(x).numpy(), x[:, :2], rtol=1e-6)
    with pytest.raises(hub.HubModuleError, match="'nope' is not an output"):
        kt.HubLayer(tmp_path / "signed", signature="serving_default", output_key="nope")(x)


def test_keras_file_round_trip_keeps_fine_tuned_values(tmp_path, x):
    tf_keras_module(tmp_path / "m")
    model = keras.Sequential([keras.Input((4,)), kt.HubLayer(tmp_path / "m", trainable=True, name="base"),
                              keras.layers.Dense(3, name="head")])
    for v in model.get_layer("base").trainable_weights:
        v.assign(v.numpy() * 2)
    model.save(tmp_path / "model.keras")
    with pytest.raises(ValueError, match="safe_mode=False"):
        keras.saving.load_model(tmp_path / "model.keras")
    again = keras.saving.load_model(tmp_path / "model.keras", safe_mode=False)
    np.testing.assert_allclose(again.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-6)


def test_by_name_weights_of_a_model_holding_a_hub_layer(tmp_path, x):
    tf_keras_module(tmp_path / "m")

    def build():
        return keras.Sequential([keras.Input((4,)), kt.HubLayer(tmp_path / "m", trainable=True, name="base"),
                                 keras.layers.Dense(3, name="head")])

    source = build()
    for v in source.weights:
        v.assign(v.numpy() + 1)
    kt.save_weights_by_name(source, tmp_path / "w.h5")
    target = build()
    report = kt.load_weights_by_name(target, tmp_path / "w.h5")
    assert set(report.loaded) == {"base", "head"}
    np.testing.assert_allclose(target.predict(x, verbose=0), source.predict(x, verbose=0), rtol=1e-6)


def test_exported_base_loads_in_tf_keras_and_in_hub_layer(tmp_path, x):
    base = keras.Sequential([keras.Input((4,)), keras.layers.Dense(6, name="d"),
                             keras.layers.BatchNormalization(name="bn")], name="base")
    for v in base.weights:
        v.assign(np.abs(np.random.default_rng(2).normal(size=v.shape)).astype("float32") + 0.5)
    kt.export_hub_module(base, tmp_path / "exported")
    expected = base.predict(x, verbose=0)
    legacy = tf_keras.Sequential([tf_keras.Input((4,)), tensorflow_hub.KerasLayer(str(tmp_path / "exported"))])
    np.testing.assert_allclose(legacy.predict(x, verbose=0), expected, rtol=1e-5, atol=1e-5)
    layer = kt.HubLayer(tmp_path / "exported", trainable=True)
    np.testing.assert_allclose(layer(x).numpy(), expected, rtol=1e-5, atol=1e-5)
    assert not np.allclose(layer(x, training=True).numpy(), expected)  # BN in training mode
    assert len(layer.trainable_weights) == 4


def test_bad_handles_give_clear_errors(tmp_path):
    with pytest.raises(hub.HubModuleError, match="No SavedModel folder at .*missing"):
        kt.HubLayer(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(hub.HubModuleError, match="not a SavedModel"):
        kt.HubLayer(tmp_path / "empty")

    class NotCallable(tf.Module):
        def __init__(self):
            super().__init__()
            self.v = tf.Variable(1.0)

    tf.saved_model.save(NotCallable(), str(tmp_path / "plain"))
    with pytest.raises(hub.HubModuleError, match="neither callable nor a Keras export"):
        kt.HubLayer(tmp_path / "plain")
    with pytest.raises(hub.HubModuleError, match="no signature 'serving_default'"):
        kt.HubLayer(tmp_path / "plain", signature="serving_default")


def test_hub_handles_resolve_from_the_tfhub_cache_offline(tmp_path, monkeypatch, x):
    import hashlib

    monkeypatch.setenv("TFHUB_CACHE_DIR", str(tmp_path))
    url = "https://example.com/models/features/1"
    base = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, name="d")])
    # tensorflow_hub caches a handle in <cache>/<sha1 of the handle>
    kt.export_hub_module(base, tmp_path / hashlib.sha1(url.encode()).hexdigest())
    np.testing.assert_allclose(kt.HubLayer(url)(x).numpy(), base.predict(x, verbose=0), rtol=1e-6)
    with pytest.raises(hub.HubModuleError, match="Could not resolve TF Hub handle .*absent"):
        kt.HubLayer("https://example.com/models/absent/1")


def test_bad_argument_types_are_transfer_errors_and_type_errors(tmp_path):
    tf_keras_module(tmp_path / "m")
    for call, message in [(lambda: kt.HubLayer(42), "Expected a handle.*received 42 of type int"),
                          (lambda: kt.HubLayer(tmp_path / "m", arguments=["x"]),
                           "arguments= must be a dict")]:
        with pytest.raises(TypeError, match=message) as err:
            call()
        assert isinstance(err.value, kt.TransferError)
