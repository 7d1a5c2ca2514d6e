"""The learning-rate finder: the sweep, the early stop, the suggestion on a
problem whose stable rates are known, and a restore after which training runs
exactly as if the finder had never run."""

import keras
import numpy as np
import pytest
import tensorflow as tf  # tf.data input, under every backend

import keras_transfer as kt
from helpers import randomize, tiny_model

LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def least_squares(seed, scale=3.0, n=4096, features=8):
    """A linear regression whose MSE has the Hessian 2 x'x / n (known exactly)."""
    rng = np.random.default_rng(seed)
    x = (scale * rng.normal(size=(n, features))).astype("float32")
    y = x @ rng.normal(size=(features, 1)).astype("float32")
    y += 0.5 * rng.normal(size=(n, 1)).astype("float32")
    top = float(np.linalg.eigvalsh(2.0 * x.T.astype("float64") @ x / n).max())
    return x, y, 2.0 / top  # SGD on this loss diverges above 2 / top


def linear_model(optimizer=None):
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(1)])
    model.compile(optimizer=optimizer or keras.optimizers.SGD(0.1), loss="mse")
    return model


def test_sweep_is_exponential_bounded_and_stops_on_divergence():
    # Port of fastai's LRFinder test (nbs/14_callback.schedule): at most
    # num_it steps, one loss per rate, rates SchedExp(1e-7, 10)(i/100), and
    # a stop only when the loss went past 4x its best.
    x, y, _ = least_squares(0)
    curve = kt.find_learning_rate(linear_model(), (x, y), batch_size=64)
    rates = np.asarray(curve.learning_rates)
    assert 10 < len(rates) <= 100 and len(curve.losses) == len(curve.raw_losses) == len(rates)
    np.testing.assert_allclose(rates, [1e-7 * (10 / 1e-7) ** (i / 100) for i in range(len(rates))],
                               rtol=1e-5)
    assert curve.stopped_early  # plain SGD on this problem diverges long before 10
    assert not (curve.losses[-1] <= 4 * min(curve.losses))  # > 4x best, or not finite
    assert all(value <= 4 * min(curve.losses[:i + 1]) for i, value in enumerate(curve.losses[:-1]))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_on_least_squares_it_stops_past_the_stable_bound_and_suggests_a_stable_rate(seed):
    # Gradient descent on a quadratic converges for rates below 2 / (largest
    # Hessian eigenvalue) and diverges above. The loss cannot blow up below
    # that bound. The default suggestion (a tenth of the rate at the lowest
    # loss) must be a stable rate within a factor of 20 of the bound; the
    # valley a stable one within a factor of 100 (the sweep spans eight
    # orders of magnitude).
    x, y, bound = least_squares(seed)
    curve = kt.find_learning_rate(linear_model(), (x, y), batch_size=64)
    assert curve.stopped_early and curve.learning_rates[-1] > bound
    assert curve.method == "minimum" and curve.suggestion == curve.minimum
    assert bound / 20 < curve.suggestion < bound / 2
    assert bound / 100 < curve.valley < bound
    # The suggested rate does train: 256 SGD steps reach the noise floor (0.25).
    model = linear_model(keras.optimizers.SGD(curve.suggestion))
    model.fit(x, y, batch_size=64, epochs=4, shuffle=False, verbose=0)
    assert model.evaluate(x, y, verbose=0) < 0.3


@pytest.mark.parametrize("method", ["minimum", "steepest", "valley"])
def test_each_rule_reads_the_smoothed_curve_without_its_ends(method):
    x, y, _ = least_squares(0)
    curve = kt.find_learning_rate(linear_model(), (x, y), batch_size=64, method=method)
    assert curve.suggestion == getattr(curve, method) and curve.method == method
    rates, losses = np.log(curve.learning_rates), np.asarray(curve.losses)
    kept = slice(len(rates) // 10, len(rates) - 5)  # fastai leaves these out
    slopes = np.diff(losses[kept]) / np.diff(rates[kept])
    assert curve.steepest == pytest.approx(np.exp(rates[kept][np.argmin(slopes)]), rel=1e-6)
    assert curve.minimum == pytest.approx(np.exp(rates[kept][np.argmin(losses[kept])]) / 10,
                                          rel=1e-6)
    assert np.exp(rates[kept][0]) <= curve.valley <= np.exp(rates[kept][-1])


def bn_dropout_model():
    model = keras.Sequential([
        keras.Input((4,)), keras.layers.Dense(16, activation="relu", name="Dense_a"),
        keras.layers.BatchNormalization(name="Bn"), keras.layers.Dropout(0.3, name="Drop"),
        keras.layers.Dense(3, name="Head")], name="bn_dropout")
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss=LOSS, metrics=["accuracy"])
    return model


def state_of(model):
    variables = list(model.variables) + list(model.optimizer.variables) + list(
        model.metrics_variables)
    return [(v.path, keras.ops.convert_to_numpy(v.value).copy()) for v in variables]


def test_model_and_optimizer_come_back_bit_for_bit(data):
    x, y = data
    model = bn_dropout_model()
    model.fit(x, y, batch_size=16, epochs=2, verbose=0)  # slots, step count, a train function
    optimizer, train_function = model.optimizer, model.train_function
    before = state_of(model)
    curve = kt.find_learning_rate(model, (x, y), batch_size=16, end_lr=1e6)
    assert curve.stopped_early  # it trained, and far enough to wreck the weights
    after = state_of(model)
    assert [p for p, _ in after] == [p for p, _ in before]
    for (path, a), (_, b) in zip(before, after):
        np.testing.assert_array_equal(a, b, err_msg=path)
    assert model.optimizer is optimizer and model.train_function is train_function
    assert int(optimizer.iterations) == 8 and float(optimizer.learning_rate) == pytest.approx(3e-3)


@pytest.mark.parametrize("trained_before", [False, True])
def test_training_afterwards_is_as_if_the_finder_never_ran(data, trained_before):
    x, y = data
    runs = {}
    for name in ("finder_then_fit", "fit_only"):
        keras.utils.set_random_seed(1)
        model = bn_dropout_model()
        if trained_before:
            model.fit(x, y, batch_size=16, epochs=1, verbose=0)
        if name == "finder_then_fit":
            kt.find_learning_rate(model, (x, y), batch_size=16, num_steps=30)
        history = model.fit(x, y, batch_size=16, epochs=3, verbose=0)  # shuffled
        runs[name] = ([v.numpy() for v in model.weights], history.history["loss"])
    (weights_a, loss_a), (weights_b, loss_b) = runs["finder_then_fit"], runs["fit_only"]
    assert loss_a == loss_b
    for a, b in zip(weights_a, weights_b):
        np.testing.assert_array_equal(a, b)
    keras.utils.set_random_seed(1)
    start = bn_dropout_model()  # the weights both runs started from
    assert not np.array_equal(weights_a[0], start.weights[0].numpy())  # it did train


def test_with_a_frozen_base_and_layer_groups_everything_is_put_back(data):
    x, y = data
    model = randomize(tiny_model())
    kt.freeze(model, upto=3)
    opt = kt.discriminative_optimizer(model, groups=[["Dense_a", "Bn", "Dense_b"]],
                                      learning_rate=1e-3, multipliers=[0.1])
    model.compile(optimizer=opt, loss=LOSS)
    before = state_of(model)
    curve = kt.find_learning_rate(model, (x, y), batch_size=16, num_steps=20)
    assert len(curve.learning_rates) == 20
    for (path, a), (_, b) in zip(before, state_of(model)):
        np.testing.assert_array_equal(a, b, err_msg=path)
    assert model.optimizer is opt and opt.group_learning_rates() == pytest.approx(
        {"head": 1e-3, "group_0": 1e-4})


def test_batches_from_a_dataset_a_list_and_a_plot(tmp_path, data):
    x, y = data
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(16)  # 4 batches, gone through again
    curve = kt.find_learning_rate(bn_dropout_model(), dataset, num_steps=12,
                                  plot_to=tmp_path / "lr.png")
    assert len(curve.learning_rates) == 12
    assert (tmp_path / "lr.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    listed = [(x[i:i + 16], y[i:i + 16]) for i in range(0, 64, 16)]
    again = kt.find_learning_rate(bn_dropout_model(), listed, num_steps=np.int64(12))
    assert len(again.learning_rates) == 12


@pytest.mark.parametrize("call, message", [
    (lambda m, d: kt.find_learning_rate(tiny_model(), d), "needs a compiled model"),
    (lambda m, d: kt.find_learning_rate(m, d, num_steps=0), "num_steps must be an int >= 10"),
    (lambda m, d: kt.find_learning_rate(m, d, start_lr=1.0, end_lr=0.1), "0 < start_lr < end_lr"),
    (lambda m, d: kt.find_learning_rate(m, d, method="slide"), "method must be one of"),
    (lambda m, d: kt.find_learning_rate(m, (d[0][:0], d[1][:0])), "no examples"),
    (lambda m, d: kt.find_learning_rate(m, iter([(d[0][:16], d[1][:16])] * 3)),
     "ran out after 3 batches"),
    (lambda m, d: kt.find_learning_rate(m, []), "yielded no batch"),
    (lambda m, d: kt.find_learning_rate(m, d, smoothing="0.9"), "smoothing must be a number"),
    (lambda m, d: kt.find_learning_rate(m.layers, d), "takes a keras.Model, received list"),
    (lambda m, d: kt.find_learning_rate(m, [(d[0][:16],)] * 12), "received tuple of 1"),
])
def test_bad_input_is_a_transfer_error_that_says_what_to_do(data, call, message):
    model = bn_dropout_model()
    before = [v.numpy().copy() for v in model.weights]
    with pytest.raises(kt.TransferError, match=message):
        call(model, data)
    for a, b in zip(before, model.weights):  # also after steps were run
        np.testing.assert_array_equal(a, b.numpy())


def test_an_unbuilt_model_is_refused_before_anything_runs(data):
    model = keras.Sequential([keras.layers.Dense(3)])  # no Input: no weights yet
    model.compile(optimizer="sgd", loss=LOSS)
    with pytest.raises(kt.ArgumentError, match="is not built"):
        kt.find_learning_rate(model, data)
    assert not model.built


def test_a_frozen_model_has_nothing_to_find(data):
    model = bn_dropout_model()
    kt.freeze(model)
    with pytest.raises(kt.ArgumentError, match="no trainable variables"):
        kt.find_learning_rate(model, data)


def test_mixed_precision_the_finder_sweeps_the_inner_optimizer_and_puts_it_back(data):
    # Under mixed_float16, compile wraps the optimizer in a LossScaleOptimizer:
    # the finder's swapped-in optimizer must be one too, with a fresh inner one.
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        keras.utils.set_random_seed(0)
        model = bn_dropout_model()
        original = model.optimizer
        assert isinstance(original, keras.optimizers.LossScaleOptimizer)
        before = [v.numpy().copy() for v in model.weights]
        curve = kt.find_learning_rate(model, data, num_steps=12, batch_size=16)
        assert len(curve.learning_rates) == 12 and curve.suggestion > 0
        assert model.optimizer is original
        for a, b in zip(before, model.weights):
            np.testing.assert_array_equal(a, b.numpy())
    finally:
        keras.mixed_precision.set_global_policy("float32")
