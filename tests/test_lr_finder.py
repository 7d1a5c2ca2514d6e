"""The learning-rate finder: the sweep, the early stop, the suggestion on a
problem whose stable rates are known, and a restore after which training runs
exactly as if the finder had never run."""

import keras
import numpy as np
import pytest
import tensorflow as tf  # tf.data input, under every backend

import keras_transfer as kt
from keras_transfer import lr_finder
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
    curve = kt.find_learning_rate(linear_model(), (x, y), batch_size=64, num_steps=100)
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


def test_the_curve_is_the_debiased_moving_average_of_the_raw_losses():
    # Computed here from the raw losses, not read back from the curve: an
    # average without fastai's debiasing, or another factor, fails.
    x, y, _ = least_squares(0)
    curve = kt.find_learning_rate(linear_model(), (x, y), batch_size=64, smoothing=0.9)
    expected, average = [], 0.0
    for step, loss in enumerate(curve.raw_losses):
        average = 0.9 * average + 0.1 * loss
        expected.append(average / (1 - 0.9 ** (step + 1)))
    np.testing.assert_allclose(curve.losses, expected, rtol=1e-12)
    assert not np.allclose(curve.losses, curve.raw_losses)


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
    (lambda m, d: kt.find_learning_rate(m, d, start_lr=1.0, end_lr=0.1),
     "find_learning_rate: expected start_lr < end_lr"),
    (lambda m, d: kt.find_learning_rate(m, d, start_lr=0.0), "start_lr must be > 0"),
    (lambda m, d: kt.find_learning_rate(m, d, smoothing=1.0), r"smoothing must be in \[0, 1\)"),
    (lambda m, d: kt.find_learning_rate(m, d, diverge=1.0), "diverge must be > 1"),
    (lambda m, d: kt.find_learning_rate(m, d[0]), "data must be `\\(x, y\\)`"),
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
        swept, real = [], model.train_on_batch

        def spy(*args, **kwargs):  # the optimizer each sweep step trains with
            swept.append(model.optimizer)
            return real(*args, **kwargs)

        model.train_on_batch = spy
        curve = kt.find_learning_rate(model, data, num_steps=12, batch_size=16)
        del model.train_on_batch
        assert len(curve.learning_rates) == 12 and curve.suggestion > 0
        assert len(swept) == 12 and len({id(o) for o in swept}) == 1
        assert isinstance(swept[0], keras.optimizers.LossScaleOptimizer)
        assert swept[0] is not original
        assert swept[0].inner_optimizer is not original.inner_optimizer
        assert model.optimizer is original
        for a, b in zip(before, model.weights):
            np.testing.assert_array_equal(a, b.numpy())
    finally:
        keras.mixed_precision.set_global_policy("float32")


# Ports of PyTorch Lightning's LR-finder tests
# (tests/tests_pytorch/tuner/test_lr_finder.py).


def square_model(optimizer):
    """y = w x with w = 1 and x = 1, MSE against 0: the loss is w**2, its gradient 2 w."""
    model = keras.Sequential([keras.Input((1,)),
                              keras.layers.Dense(1, use_bias=False, kernel_initializer="ones")])
    model.compile(optimizer=optimizer, loss="mse")
    return model


def square_batch():
    return np.ones((4, 1), "float32"), np.zeros((4, 1), "float32")


def test_a_fresh_model_comes_back_unbuilt_and_nothing_is_written(data, tmp_path, monkeypatch):
    # Port of Lightning's test_model_reset_correctly: the weights of a model
    # that never trained are put back, and no temporary file is left behind.
    monkeypatch.chdir(tmp_path)
    x, y = data
    model = bn_dropout_model()
    optimizer = model.optimizer
    before = state_of(model)
    curve = kt.find_learning_rate(model, (x, y), batch_size=16, num_steps=10, end_lr=1e6)
    assert len(curve.learning_rates) >= 3  # it trained
    after = state_of(model)
    assert [p for p, _ in after] == [p for p, _ in before]
    for (path, a), (_, b) in zip(before, after):
        np.testing.assert_array_equal(a, b, err_msg=path)
    assert model.optimizer is optimizer and not optimizer.built
    assert model.train_function is None
    assert list(tmp_path.iterdir()) == []


def test_rates_recorded_are_the_rates_applied_and_stay_in_the_range():
    # Port of Lightning's test_lr_candidates_between_min_and_max (and of its
    # exponential mode): every rate lies in [start_lr, end_lr), the first is
    # start_lr, each the previous times (end_lr / start_lr) ** (1 / num_steps),
    # and it is the rate the step trained at: on the loss w**2, plain SGD
    # makes w' = w (1 - 2 lr).
    start, end = 1e-3, 0.45
    model = square_model(keras.optimizers.SGD(0.1))
    curve = kt.find_learning_rate(model, square_batch(), start_lr=start, end_lr=end,
                                  num_steps=10, batch_size=4)
    rates = np.asarray(curve.learning_rates)
    assert len(rates) == 10 and not curve.stopped_early
    assert rates[0] == pytest.approx(start, rel=1e-6)
    assert all(start * (1 - 1e-6) <= r < end for r in rates)
    np.testing.assert_allclose(rates[1:] / rates[:-1], (end / start) ** 0.1, rtol=1e-5)
    w = np.sqrt(curve.raw_losses)  # w stays positive: 1 - 2 lr > 0.1 at every step
    np.testing.assert_allclose(w[1:], w[:-1] * (1 - 2 * rates[:-1]), rtol=1e-5)


def test_the_sweep_takes_exactly_num_steps_batches():
    # Port of Lightning's test_lr_finder_ends_before_num_training: no step
    # past num_steps. A one-shot iterator of exactly num_steps batches is
    # enough (an eleventh draw would be refused as running out), and all of
    # them are used.
    batches = iter([square_batch()] * 10)
    curve = kt.find_learning_rate(square_model("sgd"), batches, start_lr=1e-4, end_lr=1e-2,
                                  num_steps=10)
    assert len(curve.learning_rates) == len(curve.raw_losses) == 10
    assert next(batches, None) is None


def test_the_sweep_runs_the_model_optimizer_kind_and_config_from_fresh_slots():
    # Port of Lightning's test_call_to_trainer_method (the finder with
    # another optimizer than SGD). The sweep trains with SGD with the model's
    # momentum, from a zero momentum slot although the model's own slot is not
    # zero: w2 = w1 + m', m' = 0.9 m - lr 2 w1.
    model = square_model(keras.optimizers.SGD(0.1, momentum=0.9))
    model.fit(*square_batch(), batch_size=4, epochs=1, verbose=0)  # slot now -0.2
    model.layers[0].kernel.assign(np.ones((1, 1), "float32"))
    slot = [v for v in model.optimizer.variables if "momentum" in v.path]
    assert len(slot) == 1 and float(slot[0].numpy().ravel()[0]) == pytest.approx(-0.2)
    curve = kt.find_learning_rate(model, square_batch(), start_lr=1e-3, end_lr=1e-1,
                                  num_steps=10, batch_size=4)
    w, momentum, expected = 1.0, 0.0, []
    for rate in curve.learning_rates:
        expected.append(w * w)
        momentum = 0.9 * momentum - rate * 2 * w
        w += momentum
    np.testing.assert_allclose(curve.raw_losses, expected, rtol=1e-5)
    assert float(slot[0].numpy().ravel()[0]) == pytest.approx(-0.2)  # the model's untouched


def test_repeated_calls_give_the_same_curve(data):
    # Port of Lightning's test_multiple_lr_find_calls_gives_same_results: the
    # restore leaves nothing (weights, slots, dropout seeds) that changes the
    # next run.
    x, y = data
    model = bn_dropout_model()
    model.fit(x, y, batch_size=16, epochs=1, verbose=0)
    curves = [kt.find_learning_rate(model, (x, y), batch_size=16, num_steps=30, end_lr=1e3)
              for _ in range(3)]
    assert len(curves[0].learning_rates) > 10
    for curve in curves[1:]:
        for field in ("learning_rates", "losses", "raw_losses"):
            np.testing.assert_array_equal(getattr(curve, field), getattr(curves[0], field))
        assert (curve.suggestion, curve.valley, curve.steepest, curve.minimum,
                curve.stopped_early) == (curves[0].suggestion, curves[0].valley,
                                         curves[0].steepest, curves[0].minimum,
                                         curves[0].stopped_early)


def test_the_divergence_threshold_sets_where_the_sweep_stops():
    # Port of Lightning's test_accumulation_and_early_stopping: with the
    # threshold out of reach, the sweep runs every step; with a given
    # threshold it stops at the first smoothed loss above threshold times the
    # lowest so far, and a higher threshold runs on along the same curve.
    x, y, bound = least_squares(0)
    model = linear_model()
    calm = kt.find_learning_rate(model, (x, y), batch_size=64, start_lr=1e-4,
                                 end_lr=bound / 4, num_steps=30)
    assert len(calm.learning_rates) == 30 and not calm.stopped_early
    low = kt.find_learning_rate(model, (x, y), batch_size=64, diverge=4.0)
    high = kt.find_learning_rate(model, (x, y), batch_size=64, diverge=1e3)
    assert low.stopped_early and high.stopped_early
    assert len(high.losses) > len(low.losses)
    np.testing.assert_array_equal(high.losses[:len(low.losses)], low.losses)
    losses = high.losses
    assert not (losses[-1] <= 1e3 * min(losses))  # > 1000x the lowest, or not finite
    assert all(value <= 1e3 * min(losses[:i + 1]) for i, value in enumerate(losses[:-1]))


def test_a_loss_that_goes_negative_is_swept_to_a_stable_rate():
    # The stop rule of fastai and Lightning, loss > diverge * lowest, stopped a
    # negative loss (cosine similarity, or a shifted loss) at its first step,
    # and the finder then blamed a loss that was "not finite". A ratio means
    # nothing for such a loss: the sweep goes on until the loss is not finite
    # (or num_steps), along the same path as the unshifted loss.
    x, y, bound = least_squares(0)
    reference = linear_model()
    plain = kt.find_learning_rate(reference, (x, y), batch_size=64, num_steps=100)
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(1)])
    model.set_weights(reference.get_weights())  # the same start
    model.compile(optimizer=keras.optimizers.SGD(0.1),
                  loss=lambda t, p: keras.ops.mean((t - p) ** 2) - 1e3)
    shifted = kt.find_learning_rate(model, (x, y), batch_size=64, num_steps=100)
    assert min(shifted.losses) < 0 and shifted.stopped_early
    assert not np.isfinite(shifted.losses[-1]) and np.isfinite(shifted.losses[:-1]).all()
    steps = len(plain.losses)
    assert len(shifted.losses) > steps
    np.testing.assert_allclose(np.asarray(shifted.losses[:steps]) + 1e3, plain.losses,
                               rtol=1e-3, atol=1e-2)
    assert bound / 20 < shifted.suggestion < bound / 2  # as for the plain loss
    # A loss Keras ships that is negative by design, and bounded: every step.
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(4)])
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="cosine_similarity")
    curve = kt.find_learning_rate(model, (x, np.repeat(y, 4, axis=1)), batch_size=64,
                                  num_steps=100)
    assert min(curve.losses) < 0 and len(curve.losses) == 100 and not curve.stopped_early


def batches_with_nan_at(step, n=10):
    """Least-squares batches of 64; the one drawn at `step` holds NaN inputs."""
    x, y, _ = least_squares(0, n=64 * n)
    batches = [(x[i:i + 64], y[i:i + 64]) for i in range(0, 64 * n, 64)]
    batches[step] = (np.full_like(batches[step][0], np.nan), batches[step][1])
    return batches


def test_a_loss_that_turns_nan_is_recorded_but_not_suggested_from():
    # Port of Lightning's test_suggestion_with_non_finite_values: the sweep
    # stops at a NaN loss, which stays on the curve, and the three rules read
    # only the finite losses before it. (The curve is short, so no end is cut.)
    model = linear_model()
    before = state_of(model)
    curve = kt.find_learning_rate(model, batches_with_nan_at(6), start_lr=1e-4, end_lr=1e-2,
                                  num_steps=10)
    assert len(curve.learning_rates) == 7 and curve.stopped_early
    assert np.isnan(curve.losses[-1]) and np.isfinite(curve.losses[:-1]).all()
    rates, losses = np.asarray(curve.learning_rates[:6]), np.asarray(curve.losses[:6])
    assert curve.minimum == pytest.approx(rates[np.argmin(losses)] / 10, rel=1e-9)
    slopes = np.diff(losses) / np.diff(np.log(rates))
    assert curve.steepest == pytest.approx(rates[np.argmin(slopes)], rel=1e-9)
    assert rates[0] <= curve.valley <= rates[-1]
    for (path, a), (_, b) in zip(before, state_of(model)):  # NaN weights put back
        np.testing.assert_array_equal(a, b, err_msg=path)


@pytest.mark.parametrize("step", [0, 1])
def test_too_few_finite_losses_to_suggest_from_is_an_error_and_the_model_is_restored(step):
    # Port of Lightning's test_suggestion_not_enough_finite_points and
    # test_lr_attribute_when_suggestion_invalid: with fewer than two finite
    # losses there is no suggestion; the finder says so, and the model is as
    # before (two finite losses are enough: the test above).
    model = linear_model()
    model.fit(*least_squares(1, n=64)[:2], batch_size=64, epochs=1, verbose=0)
    before = state_of(model)
    with pytest.raises(kt.ArgumentError, match=f"not finite from step {step + 1} on"):
        kt.find_learning_rate(model, batches_with_nan_at(step), num_steps=10)
    for (path, a), (_, b) in zip(before, state_of(model)):
        np.testing.assert_array_equal(a, b, err_msg=path)


def test_an_error_during_the_sweep_still_puts_everything_back(data):
    # Port of Lightning's test_lr_finder_checkpoint_cleanup_on_error: a
    # failure after some steps have trained propagates, and the model, its
    # optimizer and its train function are as before.
    x, y = data
    model = bn_dropout_model()
    model.fit(x, y, batch_size=16, epochs=1, verbose=0)
    optimizer, train_function = model.optimizer, model.train_function
    before = state_of(model)

    def failing():
        for start in (0, 16, 32):
            yield x[start:start + 16], y[start:start + 16] * 0 + 2
        raise RuntimeError("Intentional failure")

    with pytest.raises(RuntimeError, match="Intentional failure"):
        kt.find_learning_rate(model, failing(), end_lr=1e6, start_lr=1.0)
    for (path, a), (_, b) in zip(before, state_of(model)):
        np.testing.assert_array_equal(a, b, err_msg=path)
    assert model.optimizer is optimizer and model.train_function is train_function


@pytest.mark.parametrize("bad", [dict(method="slide"), dict(diverge=1.0), dict(smoothing=1.0),
                                 dict(start_lr=1e-2, end_lr=1e-3), dict(num_steps=9)])
def test_a_bad_setting_fails_before_any_batch_is_drawn(data, bad):
    # Port of Lightning's test_lr_finder_fails_fast_on_bad_config: the
    # arguments are checked before the sweep draws data or builds anything.
    x, y = data
    drawn = []

    def batches():
        while True:
            drawn.append(1)
            yield x[:16], y[:16]

    model = bn_dropout_model()
    with pytest.raises(kt.ArgumentError):
        kt.find_learning_rate(model, batches(), **bad)
    assert drawn == []
    assert not model.optimizer.built and model.train_function is None


@pytest.mark.parametrize("data, batch_size, steps", [
    ("arrays_256", 32, 32),     # the guide's 256 images: 4 epochs, not 12
    ("arrays_96", 16, 30),      # 6 steps an epoch: at least 30
    ("arrays_4096", 64, 100),   # at most fastai's 100
    ("dataset_20", None, 80),   # a dataset of 20 batches: 4 epochs
    ("generator", None, 100),   # unknown length: fastai's 100
])
def test_the_default_sweep_is_four_epochs_within_30_and_100_steps(data, batch_size, steps):
    import tensorflow as tf

    kind, _, size = data.partition("_")
    if kind == "arrays":
        source = (np.zeros((int(size), 4), "float32"), np.zeros(int(size), "int32"))
    elif kind == "dataset":
        source = tf.data.Dataset.from_tensor_slices(
            (np.zeros((int(size) * 8, 4), "float32"), np.zeros(int(size) * 8, "int32"))).batch(8)
    else:
        source = iter([])
    assert lr_finder.default_steps(source, batch_size or 32) == steps


def test_verbose_shows_a_progress_bar_of_rate_and_loss(data, capsys):
    model = bn_dropout_model()
    kt.find_learning_rate(model, data, batch_size=16, num_steps=12, verbose=1)
    out = capsys.readouterr().out
    assert "12/12" in out and "lr:" in out and "loss:" in out
    assert out.strip().splitlines()[-1].startswith("find_learning_rate: 12 steps, suggestion")
