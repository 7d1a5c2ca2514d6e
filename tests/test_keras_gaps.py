"""The Keras 3 gaps this package exists for, each beside our answer.

If a Keras or TensorFlow upgrade closes a gap, the native half of its test
fails: then our workaround may be simplified.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_transfer as kt
from keras_transfer import _optimizer_state
from helpers import randomize, tiny_base, tiny_model

LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def test_native_h5_save_raises_and_by_name_save_loads(tmp_path):
    model = randomize(tiny_model())
    with pytest.raises(ValueError, match="weights.h5"):
        model.save_weights(tmp_path / "x.h5")
    kt.save_weights_by_name(model, tmp_path / "x.h5")
    target = tiny_model(head_name="NewHead")
    assert set(kt.load_weights_by_name(target, tmp_path / "x.h5").loaded) == {"Dense_a", "Bn", "Dense_b"}


def test_unfreezing_in_a_callback_fails_natively_and_our_schedule_trains(data):
    x, y = data

    class NaiveUnfreeze(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            if epoch == 1:
                for layer in self.model.layers[:3]:
                    layer.trainable = True

    model = randomize(tiny_model())
    kt.freeze(model, upto=3)
    model.compile(optimizer="adam", loss=LOSS)
    before = model.get_layer("Dense_a").kernel.numpy().copy()
    if keras.backend.backend() == "jax":
        # JAX writes the epoch's trained values back by position into the
        # model's *current* trainable list: head values into base variables.
        with pytest.raises(ValueError, match="shape of the target variable"):
            model.fit(x, y, epochs=3, verbose=0, callbacks=[NaiveUnfreeze()])
    elif keras.backend.backend() == "torch":
        # PyTorch reads the trainable list at every step: the optimizer refuses it.
        with pytest.raises(ValueError, match="Unknown variable"):
            model.fit(x, y, epochs=3, verbose=0, callbacks=[NaiveUnfreeze()])
    else:
        # TensorFlow keeps the train function traced with the old set.
        model.fit(x, y, epochs=3, verbose=0, callbacks=[NaiveUnfreeze()])
        np.testing.assert_array_equal(model.get_layer("Dense_a").kernel.numpy(), before)
        with pytest.raises(ValueError, match="Unknown variable"):
            model.make_train_function(force=True)
            model.train_on_batch(x, y)

    model = randomize(tiny_model())
    model.compile(optimizer="adam", loss=LOSS)
    model.fit(x, y, epochs=3, verbose=0, callbacks=[kt.TwoPhaseSchedule(freeze=3, switch_epoch=1, verbose=0)])
    assert not np.array_equal(model.get_layer("Dense_a").kernel.numpy(), before)


@pytest.mark.jax_only  # TensorFlow has no stateless_apply; its trainer calls apply
def test_stateless_apply_refuses_a_subset_natively_and_accept_subsets_takes_it():
    # Pins the work-around in keras_transfer/_optimizer_state.py: if Keras'
    # stateless_apply starts to take a subset, the native half fails.
    model = randomize(tiny_model())
    optimizer = keras.optimizers.SGD(0.5)
    optimizer.build(model.trainable_variables)
    kt.freeze(model, upto=3)  # only the head trains now
    head = list(model.trainable_variables)
    grads = [keras.ops.ones(v.shape) for v in head]
    state = [v.value for v in optimizer.variables]
    with pytest.raises(ValueError, match="corresponding 1:1"):
        optimizer.stateless_apply(state, grads, [v.value for v in head])
    _optimizer_state.accept_subsets(optimizer, model)
    new_values, new_state = optimizer.stateless_apply(state, grads, [v.value for v in head])
    for variable, value in zip(head, new_values):
        np.testing.assert_allclose(keras.ops.convert_to_numpy(value),
                                   variable.numpy() - 0.5, rtol=1e-6)
    assert int(keras.ops.convert_to_numpy(new_state[0])) == 1  # the step count


def test_layer_trainable_resets_variable_flags_and_unfreeze_keeps_lora_frozen():
    # Pins `_layers.lora_frozen_weights` and the variable flags kept by
    # `snapshot_trainable`: Keras' setter turns every variable of a layer on.
    layer = tiny_model().get_layer("Dense_a")
    layer.enable_lora(2)
    assert not layer._kernel.trainable
    layer.trainable = False
    layer.trainable = True
    assert layer._kernel.trainable  # LoRA silently undone by Keras
    model = tiny_model()
    model.get_layer("Dense_a").enable_lora(2)
    kt.freeze(model, upto=3)
    kt.unfreeze(model, upto=3)
    names = sorted(v.path.split("/")[-1] for v in model.get_layer("Dense_a").trainable_weights)
    assert names == ["bias", "lora_kernel_a", "lora_kernel_b"]


def hub_module(path):
    import tf_keras

    model = tf_keras.Sequential([tf_keras.Input((4,)), tf_keras.layers.Dense(3, name="k")])
    tf.saved_model.save(model, str(path))


@pytest.mark.tensorflow_only
def test_hub_keras_layer_and_tfsm_layer_fail_where_hub_layer_trains(tmp_path, data):
    import tensorflow_hub as hub

    x, y = data
    hub_module(tmp_path / "m")
    with pytest.raises((TypeError, ValueError), match="keras.Layer|KerasTensor"):
        keras.Sequential([keras.Input((4,)), hub.KerasLayer(str(tmp_path / "m"))])
    tfsm = keras.Sequential([keras.Input((4,)), keras.layers.TFSMLayer(
        str(tmp_path / "m"), call_endpoint="__call__", trainable=True)])
    tfsm.compile(optimizer="adam", loss=LOSS)
    with pytest.raises(ValueError, match="not a valid scope name"):
        tfsm.fit(x, y, epochs=1, verbose=0)

    ours = keras.Sequential([keras.Input((4,)), kt.HubLayer(tmp_path / "m", trainable=True)])
    ours.compile(optimizer="adam", loss=LOSS)
    before = [v.numpy().copy() for v in ours.trainable_weights]
    ours.fit(x, y, epochs=1, verbose=0)
    assert all(not np.array_equal(b, v.numpy()) for b, v in zip(before, ours.trainable_weights))


def test_nested_bases_are_addressable_by_name():
    base = keras.Sequential([keras.Input((4,)), *tiny_base()], name="base")
    model = keras.Sequential([keras.Input((4,)), base, keras.layers.Dense(3, name="Head")])
    assert [l.name for l in model.layers] == ["base", "Head"]  # Keras sees one layer
    kt.freeze(model, layers=["Dense_b"])
    assert not model.get_layer("base").get_layer("Dense_b").trainable


def test_the_private_optimizer_state_we_read_is_still_there():
    # Pins the private attributes keras_transfer reads, each named where it is
    # used: _optimizer_state.cover (`_var_key`, `_trainable_variables_indices`),
    # optimizers.set_learning_rate/hold_schedules (`_learning_rate`), and
    # DiscriminativeOptimizer.apply (MultiOptimizer's `_check_variables_are_known`,
    # `_var_to_optimizer_idx`, `_iterations`, `_optimizer_map`).
    model = tiny_model()
    adam = keras.optimizers.Adam(1e-3)
    adam.build(model.trainable_variables)
    assert set(adam._trainable_variables_indices) == {adam._var_key(v) for v in model.trainable_variables}
    assert isinstance(adam._learning_rate, keras.Variable)
    multi = kt.discriminative_optimizer(model, groups=[["Dense_a"]], learning_rate=1e-2,
                                        multipliers=[0.1])
    multi.build(model.trainable_variables)
    head = model.get_layer("Head").kernel
    assert multi.optimizers[multi._var_to_optimizer_idx[multi._var_key(head)]].name == "head"
    multi._check_variables_are_known([head])
    assert isinstance(multi._iterations, keras.Variable)
    assert multi._optimizer_map.default_optimizer.name == "head"


def test_training_false_on_a_nested_base_is_ignored_inside_fit_and_unfreeze_keeps_bn(data):
    # keras-team/keras#20285: the keras.io guide calls its base with
    # `base(x, training=False)` so that, once unfrozen, its BatchNormalization
    # stays in inference mode. Keras 3 ignores that argument inside `fit`: the
    # moving statistics move after `base.trainable = True`. Our unfreeze keeps
    # BatchNormalization frozen, which is what the guide means.
    x, y = data

    def guide():
        inner = keras.Input((4,))
        base = keras.Model(inner, keras.layers.BatchNormalization(name="bn")(
            keras.layers.Dense(8, name="dense")(inner)), name="base")
        inputs = keras.Input((4,))
        outputs = keras.layers.Dense(3, name="head")(base(inputs, training=False))
        return keras.Model(inputs, outputs), base

    def moving_mean(base):
        return keras.ops.convert_to_numpy(base.get_layer("bn").moving_mean).copy()

    native, base = guide()
    base.trainable = True  # the guide's fine-tuning step, by hand
    native.compile(optimizer="adam", loss=LOSS)
    before = moving_mean(base)
    native.fit(x, y, epochs=1, batch_size=16, verbose=0)
    assert not np.array_equal(moving_mean(base), before)  # Keras trained the statistics

    ours, base = guide()
    kt.unfreeze(ours)  # BatchNormalization stays frozen
    ours.compile(optimizer="adam", loss=LOSS)
    before = moving_mean(base)
    kernel = keras.ops.convert_to_numpy(base.get_layer("dense").kernel).copy()
    ours.fit(x, y, epochs=1, batch_size=16, verbose=0)
    np.testing.assert_array_equal(moving_mean(base), before)
    assert not np.array_equal(  # while the rest of the base trained
        keras.ops.convert_to_numpy(base.get_layer("dense").kernel), kernel)
