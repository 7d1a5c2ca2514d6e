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
    same, _ = caching.split_at(model, model.get_layer("Flatten"))  # the same lookup
    assert [l.name for l in same.layers] == [l.name for l in base.layers]
    kt.freeze(base)
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(10)
    features, labels = caching.cache_features(base, ds)
    np.testing.assert_allclose(features, base.predict(x, verbose=0), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(labels, y)
    # sample weights come back beside them, in the shape the data came in
    weight = np.arange(len(x), dtype="float32")
    weighted = tf.data.Dataset.from_tensor_slices((x, y, weight)).batch(10)
    np.testing.assert_array_equal(caching.cache_features(base, weighted)[2], weight)
    np.testing.assert_array_equal(caching.cache_features(base, (x, y, weight))[2], weight)


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
    # caching freezes everything before the cut: a weighted layer there that
    # freeze= leaves out (it would train in a plain phase 1) is refused
    model = cnn()
    with pytest.raises(kt.ArgumentError, match=r"\['Conv1'\] there is not in freeze="):
        kt.fit_two_phase(model, (x, y), freeze=["Bn1"], head_epochs=1, epochs=1,
                         cache_features=True, verbose=0)
    assert model.get_layer("Conv1").trainable and getattr(model, "optimizer", None) is None


# --- what may not be cached, at any depth ------------------------------------------

class ScaledDropout(keras.layers.Dropout):
    """A Dropout subclass whose class name the old by-name check did not know."""


class TrainingNoise(keras.layers.Layer):
    """Adds noise only when training, from Keras' global seed: no SeedGenerator of its own."""

    def call(self, inputs, training=None):
        if training:
            return inputs + keras.random.normal(keras.ops.shape(inputs), stddev=0.1)
        return inputs


class TakesTraining(keras.layers.Layer):
    """Takes `training` and ignores it: caching is exact."""

    def call(self, inputs, training=None):
        return inputs * 2.0


class HoldsDropout(keras.layers.Layer):
    """A plain layer (not a model) with a Dropout inside it."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.inner = keras.layers.Dropout(0.5, name="HiddenDropout")

    def call(self, inputs, training=None):
        return self.inner(inputs, training=training)


class SeededNoise(keras.layers.Layer):
    """Noise from its own SeedGenerator, held as an attribute or inside a list."""

    def __init__(self, in_list=False, **kwargs):
        super().__init__(**kwargs)
        generator = keras.random.SeedGenerator(1)
        if in_list:
            self.generators = [generator]
        else:
            self.generator = generator
        self.in_list = in_list

    def call(self, inputs, training=None):
        if not training:
            return inputs
        seed = self.generators[0] if self.in_list else self.generator
        return inputs + keras.random.normal(keras.ops.shape(inputs), seed=seed)


class BareVariable(keras.layers.Layer):
    """A weight made in `__init__`, outside any name scope: its path has no '/'."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.scale = keras.Variable(np.ones(4, "float32"), name="scale")

    def call(self, inputs):
        return inputs * self.scale


def with_base(*base_layers, inputs=(8, 8, 1)):
    """A model whose first layer is a nested base model holding `base_layers`."""
    base = keras.Sequential([keras.Input(inputs), *base_layers], name="base")
    return keras.Sequential([keras.Input(inputs), base, keras.layers.Flatten(name="Flatten"),
                             keras.layers.Dense(3, activation="softmax", name="Head")])


@pytest.mark.parametrize("model, culprit", [
    (lambda: with_base(keras.layers.Conv2D(4, 3, name="Conv1"),
                       keras.Sequential([keras.layers.Dropout(0.5, name="InnerDropout")],
                                        name="block")),
     r"'InnerDropout' \(Dropout, in base > block\)"),
    (lambda: with_base(keras.layers.RandomFlip(name="Flip"), keras.layers.Conv2D(4, 3, name="Conv1")),
     r"'Flip' \(RandomFlip, in base\)"),
    (lambda: with_base(HoldsDropout(name="Holder")), r"'HiddenDropout' \(Dropout, in base > Holder\)"),
    (lambda: with_base(ScaledDropout(0.5, name="Scaled")), r"'Scaled' \(ScaledDropout, in base\)"),
])
def test_random_layers_are_refused_at_any_depth(images, model, culprit):
    x, y = images
    with pytest.raises(kt.LayerSelectionError, match=culprit + ".*random in training") as err:
        kt.fit_head_cached(model(), (x, y), cut=1, epochs=1, verbose=0)
    assert isinstance(err.value, ValueError)  # `except ValueError` keeps working
    assert "move the cut below it" in str(err.value)
    assert "cache_features='without_augmentation'" in str(err.value)


@pytest.mark.parametrize("in_list", [False, True])
def test_a_layer_holding_a_seed_generator_is_refused_by_kind(in_list):
    base = keras.Sequential([keras.Input((4,)), keras.layers.Dense(4, name="Dense"),
                             keras.Sequential([SeededNoise(in_list, name="Seeded")], name="block")],
                            name="base")
    kt.freeze(base)
    with pytest.raises(kt.LayerSelectionError, match=r"'Seeded' \(SeededNoise, in block\)"):
        caching.check_cacheable(base)  # no sample: by kind alone


def test_a_subclassed_dropout_is_refused_at_the_top_level(images):
    x, y = images
    model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(name="Flatten"),
                              ScaledDropout(0.5, name="Scaled"), keras.layers.Dense(3, name="Head")])
    with pytest.raises(kt.LayerSelectionError, match=r"'Scaled' \(ScaledDropout\)"):
        kt.fit_head_cached(model, (x, y), cut=2, epochs=1, verbose=0)


def test_a_user_layer_random_only_in_training_is_caught_by_its_behaviour(images):
    x, y = images
    model = with_base(keras.layers.Conv2D(4, 3, name="Conv1"), TrainingNoise(name="Noise"))
    with pytest.raises(kt.LayerSelectionError,
                       match=r"training=True.*training=False.*\['Noise'\]") as err:
        kt.fit_head_cached(model, (x, y), cut=1, epochs=1, verbose=0)
    assert "Conv1" not in str(err.value).split("candidates")[-1]  # Conv2D takes no `training`


def test_a_user_layer_that_takes_training_but_ignores_it_is_cached(images):
    x, y = images
    weights = []
    for cache in (False, True):
        keras.utils.set_random_seed(0)
        model = with_base(keras.layers.Conv2D(4, 3, name="Conv1"), TakesTraining(name="Double"))
        if cache:
            kt.fit_head_cached(model, (x, y), cut=1, epochs=2, learning_rate=1e-2,
                               batch_size=32, shuffle=False, verbose=0)
        else:
            kt.freeze(model, upto=1)
            model.compile(optimizer=keras.optimizers.Adam(1e-2),
                          loss="sparse_categorical_crossentropy")
            model.fit(x, y, epochs=2, batch_size=32, shuffle=False, verbose=0)
        weights.append([w.copy() for w in model.get_weights()])
    for plain, cached in zip(*weights):  # the same head as the plain frozen fit
        np.testing.assert_allclose(cached, plain, rtol=1e-4, atol=1e-6)
    keras.utils.set_random_seed(0)
    start = with_base(keras.layers.Conv2D(4, 3, name="Conv1"), TakesTraining(name="Double"))
    assert not np.allclose(weights[1][-2], start.get_weights()[-2])  # the head trained


class CountsTrainingCalls(keras.layers.Layer):
    """Adds how often it was called in training: its state moves in training."""

    def build(self, shape):
        self.count = self.add_weight(shape=(), initializer="zeros", trainable=False, name="count")

    def call(self, inputs, training=None):
        if training:
            self.count.assign_add(1.0)
        return inputs + self.count


def test_a_refused_base_is_left_as_it_was(images):
    x, y = images
    model = with_base(keras.layers.Conv2D(4, 3, name="Conv1"), CountsTrainingCalls(name="Counter"))
    counter = model.get_layer("base").get_layer("Counter").count
    with pytest.raises(kt.LayerSelectionError, match="'Counter'"):
        kt.fit_head_cached(model, (x, y), cut=1, epochs=1, verbose=0)
    assert float(counter.numpy()) == 0.0  # the behaviour probe changed no state


def test_trainable_weights_are_reported_by_layer_even_with_bare_paths():
    model = keras.Sequential([keras.Input((4,)), BareVariable(name="Scale"),
                              keras.layers.Dense(2, name="Head")])
    assert model.get_layer("Scale").scale.path == "scale"  # no '/' to split on
    base, _ = caching.split_at(model, 1)
    with pytest.raises(kt.LayerSelectionError, match=r"trainable weights \(in \['Scale'\]\)"):
        caching.check_cacheable(base)
    kt.freeze(base)
    caching.check_cacheable(base, np.ones((2, 4), "float32"))  # frozen: accepted


def test_bad_arguments_are_transfer_errors_and_leave_the_model_as_it_was(images):
    x, y = images
    model = cnn()
    with pytest.raises(TypeError, match="fit_head_cached: train must be `\\(x, y\\)`") as err:
        kt.fit_head_cached(model, x, cut=4, epochs=1, verbose=0)
    assert isinstance(err.value, kt.TransferError)
    assert model.get_layer("Conv1").trainable  # nothing frozen by a refused call
    refused = cnn(dropout_in_base=True)
    with pytest.raises(ValueError) as err:
        kt.fit_head_cached(refused, (x, y), cut=5, epochs=1, verbose=0)
    assert isinstance(err.value, kt.LayerSelectionError)
    assert all(layer.trainable for layer in refused.layers)
    inputs = keras.Input((4,))
    branched = keras.Model(inputs, keras.layers.Concatenate(name="Join")(
        [keras.layers.Dense(2, name="A")(inputs), keras.layers.Dense(2, name="B")(inputs)]))
    with pytest.raises(ValueError, match="cannot be cut at 'A'.*one chain") as err:
        caching.split_at(branched, 2)
    assert isinstance(err.value, kt.LayerSelectionError)


# --- the keras.io guide's model: a nested base behind preprocessing ----------------

def guide_model(flip=True, dropout=0.2, seed=0):
    """The keras.io "Transfer learning & fine-tuning" model: augmentation and
    rescaling in front of a nested base called with training=False, then
    pooling, dropout and a new classifier (a small random MobileNetV2 here)."""
    keras.utils.set_random_seed(seed)
    base = keras.applications.MobileNetV2(weights=None, include_top=False,
                                          input_shape=(32, 32, 3), alpha=0.35)
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.RandomFlip("horizontal", name="flip")(inputs) if flip else inputs
    x = keras.layers.Rescaling(1 / 127.5, offset=-1, name="rescale")(x)
    x = base(x, training=False)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    x = keras.layers.Dropout(dropout, name="dropout")(x)
    return keras.Model(inputs, keras.layers.Dense(3, name="classifier")(x)), base


@pytest.fixture
def photos():
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (48, 32, 32, 3)).astype("float32")
    return x, rng.integers(0, 3, 48)


@pytest.mark.once  # refused or split before training; the cached phase 1 trains on JAX
# in test_fit_two_phase_with_cached_features_matches_the_plain_recipe
@pytest.mark.parametrize("freeze", ["base", 4])
def test_augmentation_before_a_nested_base_is_refused_by_name(photos, freeze):
    model, base = guide_model()
    with pytest.raises(kt.LayerSelectionError, match=r"'flip' \(RandomFlip.*cannot see it.*"
                                                     "without_augmentation") as err:
        kt.fit_two_phase(model, photos, freeze=[base] if freeze == "base" else freeze,
                         head_epochs=1, epochs=1, cache_features=True, verbose=0)
    assert type(err.value).__module__ == "keras_transfer.errors"  # not from inside Keras
    assert all(layer.trainable for layer in model.layers)  # nothing left frozen


def test_without_augmentation_caches_what_the_model_sees_in_inference(photos):
    # The opt-in caches features in inference mode, where RandomFlip does
    # nothing: phase 1 is then the plain phase 1 of the model without it.
    results = []
    start = guide_model(dropout=0.0)[0].get_weights()
    for flip, cache in ((True, "without_augmentation"), (False, False)):
        model, base = guide_model(flip=flip, dropout=0.0)
        model.set_weights(start)  # the same weights; only the RandomFlip differs
        if cache:
            with pytest.warns(kt.TransferWarning, match=r"without \['flip'\].*without augmentation"):
                history = kt.fit_two_phase(model, photos, freeze=[base], head_epochs=2,
                                           epochs=2, head_lr=1e-2, cache_features=cache,
                                           batch_size=16, shuffle=False, verbose=0)
        else:
            history = kt.fit_two_phase(model, photos, freeze=[base], head_epochs=2, epochs=2,
                                       head_lr=1e-2, batch_size=16, shuffle=False, verbose=0)
        results.append((history.history["loss"],
                        keras.ops.convert_to_numpy(model.get_layer("classifier").kernel)))
    (cached_loss, cached_kernel), (plain_loss, plain_kernel) = results
    np.testing.assert_allclose(cached_loss, plain_loss, rtol=1e-4)
    np.testing.assert_allclose(cached_kernel, plain_kernel, rtol=1e-3, atol=1e-5)


@pytest.mark.once  # refused or split before training; the cached phase 1 trains on JAX
# in test_fit_two_phase_with_cached_features_matches_the_plain_recipe
def test_deterministic_preprocessing_is_cached_with_the_base(photos):
    model, base = guide_model(flip=False)
    cut_base, head = caching.split_at(model, [base])
    assert [l.name for l in cut_base.layers][1:] == ["rescale", base.name]
    assert [l.name for l in head.layers][1:] == ["pool", "dropout", "classifier"]
    kt.freeze(model, [base])
    caching.check_cacheable(cut_base, photos[0][:8])  # Rescaling is deterministic
