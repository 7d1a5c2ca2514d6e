"""The Keras 3 gaps this package exists for, each beside our answer.

If a Keras or TensorFlow upgrade closes a gap, the native half of its test
fails: then our workaround may be simplified.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_transfer as kt
from helpers import randomize, tiny_base, tiny_model

LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def test_native_h5_save_raises_and_by_name_save_loads(tmp_path):
    model = randomize(tiny_model())
    with pytest.raises(ValueError, match="weights.h5"):
        model.save_weights(tmp_path / "x.h5")
    kt.save_weights_by_name(model, tmp_path / "x.h5")
    target = tiny_model(head_name="NewHead")
    assert set(kt.load_weights_by_name(target, tmp_path / "x.h5").loaded) == {"Dense_a", "Bn", "Dense_b"}


def test_unfreezing_in_a_callback_trains_nothing_natively(data):
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
    model.fit(x, y, epochs=3, verbose=0, callbacks=[NaiveUnfreeze()])
    np.testing.assert_array_equal(model.get_layer("Dense_a").kernel.numpy(), before)
    with pytest.raises(ValueError, match="Unknown variable"):
        model.make_train_function(force=True)
        model.train_on_batch(x, y)

    model = randomize(tiny_model())
    model.compile(optimizer="adam", loss=LOSS)
    model.fit(x, y, epochs=3, verbose=0, callbacks=[kt.TwoPhaseSchedule(freeze=3, switch_epoch=1, verbose=0)])
    assert not np.array_equal(model.get_layer("Dense_a").kernel.numpy(), before)


def hub_module(path):
    tf_keras = pytest.importorskip("tf_keras")
    model = tf_keras.Sequential([tf_keras.Input((4,)), tf_keras.layers.Dense(3, name="k")])
    tf.saved_model.save(model, str(path))


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
