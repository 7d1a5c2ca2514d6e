import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_transfer as kt
from keras_transfer import caching


def cnn(dropout_in_base=False):
    layers = [keras.layers.Conv2D(4, 3, name="Conv1"), keras.layers.BatchNormalization(name="Bn1"),
              keras.layers.ReLU(name="Relu1"), keras.layers.Flatten(name="Flatten")]
    if dropout_in_base:
        layers.insert(3, keras.layers.Dropout(0.5, name="BaseDropout"))
    return keras.Sequential([keras.Input((8, 8, 1)), *layers,
                             keras.layers.Dense(16, activation="relu", name="Dense1"),
                             keras.layers.Dropout(0.3, name="Dropout"),
                             keras.layers.Dense(3, activation="softmax", name="Dense2")])


@pytest.fixture
def images():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(96, 8, 8, 1)).astype("float32")
    return x, (x.mean(axis=(1, 2, 3)) > 0).astype("int32") + (x[:, 0, 0, 0] > 0)


def test_cached_phase_one_gives_the_plain_head(images):
    x, y = images
    keras.utils.set_random_seed(0)
    plain = cnn()
    keras.utils.set_random_seed(0)  # same weights and the same dropout seeds
    cached = cnn()
    start = [w.copy() for w in plain.get_weights()]

    keras.utils.set_random_seed(2)
    kt.freeze(plain, upto=4)
    plain.compile(optimizer=keras.optimizers.Adam(1e-2), loss="sparse_categorical_crossentropy")
    plain.fit(x, y, epochs=3, batch_size=32, shuffle=False, verbose=0)

    keras.utils.set_random_seed(2)
    history = kt.fit_head_cached(cached, (x, y), cut=4, epochs=3, learning_rate=1e-2,
                                 batch_size=32, shuffle=False, verbose=0)
    assert len(history.history["loss"]) == 3
    for a, b, s in zip(plain.get_weights(), cached.get_weights(), start):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    assert not np.allclose(cached.get_layer("Dense1").kernel.numpy(), start[6])  # the head trained
    np.testing.assert_array_equal(cached.get_layer("Conv1").kernel.numpy(), start[0])


def test_refuses_when_caching_would_be_wrong(images):
    x, y = images
    with pytest.raises(ValueError, match="'BaseDropout'.*random"):
        kt.fit_head_cached(cnn(dropout_in_base=True), (x, y), cut=5, epochs=1, verbose=0)
    base, _ = caching.split_at(cnn(), 4)
    with pytest.raises(ValueError, match="trainable weights"):
        caching.check_cacheable(base)
    with pytest.raises(kt.LayerSelectionError, match="cut=9"):
        caching.split_at(cnn(), 9)


def test_tf_data_is_cached_in_its_order(images):
    x, y = images
    model = cnn()
    base, _ = caching.split_at(model, "Flatten")
    kt.freeze(base)
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(10)
    features, labels = caching.cache_features(base, ds)
    np.testing.assert_allclose(features, base.predict(x, verbose=0), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(labels, y)


def test_fit_two_phase_with_cached_features_matches_the_plain_recipe(images):
    x, y = images
    results = []
    for cache in (False, True):
        keras.utils.set_random_seed(0)
        model = cnn()
        history = kt.fit_two_phase(model, (x, y), freeze=4, head_epochs=2, epochs=3,
                                   head_lr=1e-2, finetune_lr=1e-3, cache_features=cache,
                                   batch_size=32, shuffle=False, verbose=0)
        results.append((history.history, model.get_weights()))
    (plain_h, plain_w), (cached_h, cached_w) = results
    assert cached_h["phase"] == plain_h["phase"] == [1, 1, 2]
    np.testing.assert_allclose(cached_h["loss"], plain_h["loss"], rtol=1e-4)
    for a, b in zip(plain_w, cached_w):
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-5)
    with pytest.raises(ValueError, match="freeze=N"):
        kt.fit_two_phase(cnn(), (x, y), freeze=["Conv1"], head_epochs=1, epochs=1,
                         cache_features=True, verbose=0)
