"""OneCycle: its shape against fastai's numbers and a hand-written formula, its
serialization inside an optimizer, and its composition with the phase schedule
and with per-group rates."""

import json
import math

import keras
import numpy as np
import pytest

import keras_transfer as kt
from keras_transfer.learning_rates import ScaledLearningRate
from helpers import randomize, tiny_model

LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def by_hand(step, top, total, pct_start, div, final_div):
    """The one-cycle rate written out: two half cosines, as fastai's `combined_cos`."""
    pos = min(step / total, 1.0)
    if pos < pct_start:
        start, end, frac = top / div, top, pos / pct_start
    else:
        # (with pct_start=1 the cycle ends at its peak: it never anneals)
        frac = (pos - pct_start) / (1 - pct_start) if pct_start < 1 else 0.0
        start, end = top, top / final_div
    return start + (1 + math.cos(math.pi * (1 - frac))) * (end - start) / 2


def rate(schedule, step):
    return float(keras.ops.convert_to_numpy(schedule(step)))


class BatchRates(keras.callbacks.Callback):
    """Records the rate the optimizer applies at each training batch (per group if any)."""

    def __init__(self):
        super().__init__()
        self.rates = []

    def on_train_batch_begin(self, batch, logs=None):
        opt = self.model.optimizer
        if isinstance(opt, kt.DiscriminativeOptimizer):
            self.rates.append(opt.group_learning_rates())
        else:
            self.rates.append(float(keras.ops.convert_to_numpy(opt.learning_rate)))


def test_values_at_known_positions_match_fastai():
    # fastai nbs/14_callback.schedule: combined_cos(0.25, 0.5, 1., 0.) at
    # positions 0, 0.1, 0.25, 0.5, 1 is [0.5, 0.67275, 1., 0.75, 0.].
    cycle = kt.OneCycle(1.0, total_steps=100, pct_start=0.25, div=2.0, final_div=1e12)
    values = [rate(cycle, s) for s in (0, 10, 25, 50, 100)]
    np.testing.assert_allclose(values, [0.5, 0.67275, 1.0, 0.75, 0.0], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("pct_start", [0.0, 0.3, 0.99, 1.0])
def test_every_step_matches_the_formula_and_stays_at_the_end_after_the_cycle(pct_start):
    cycle = kt.OneCycle(3e-3, total_steps=37, pct_start=pct_start, div=5.0, final_div=1e4)
    for step in range(0, 45):
        assert rate(cycle, step) == pytest.approx(
            by_hand(step, 3e-3, 37, pct_start, 5.0, 1e4), rel=1e-5), step
    assert rate(cycle, 0) == pytest.approx(3e-3 if pct_start == 0 else 3e-3 / 5, rel=1e-6)
    assert rate(cycle, 1000) == pytest.approx(3e-3 / 1e4 if pct_start < 1 else 3e-3, rel=1e-5)


def test_fit_one_cycle_rates_per_batch():
    # fastai's "Scheduler test" of fit_one_cycle: 2 epochs of 10 batches at
    # lr_max=1e-2 give combined_cos(0.25, 1e-2/25, 1e-2, 1e-7)(i/20).
    x = np.random.default_rng(0).normal(size=(160, 4)).astype("float32")
    y = (x[:, 0] > 0).astype("int32")
    model = tiny_model(2)
    model.compile(optimizer=keras.optimizers.Adam(
        kt.OneCycle(1e-2, total_steps=20, pct_start=0.25, div=25.0, final_div=1e5)), loss=LOSS)
    recorded = BatchRates()
    model.fit(x, y, batch_size=16, epochs=2, verbose=0, callbacks=[recorded])
    np.testing.assert_allclose(recorded.rates, [by_hand(i, 1e-2, 20, 0.25, 25.0, 1e5)
                                                for i in range(20)], rtol=1e-5)


@pytest.mark.parametrize("name, value, message", [
    ("max_learning_rate", 0.0, "max_learning_rate must be > 0"),
    ("total_steps", 0, "total_steps must be an int >= 1"),
    ("pct_start", 1.5, r"pct_start must be in \[0, 1\]"),
    ("div", 0.5, "div must be >= 1"),
    ("final_div", 0.1, "final_div must be >= 1"),
    ("total_steps", 2.5, "total_steps must be an int >= 1"),
    ("div", float("inf"), "div must be finite")])
def test_bad_arguments_are_named(name, value, message):
    args = dict(max_learning_rate=1e-3, total_steps=10, pct_start=0.3, div=5.0, final_div=1e4)
    args[name] = value
    with pytest.raises(kt.ArgumentError, match=message):
        kt.OneCycle(**args)


@pytest.mark.parametrize("name, value", [
    ("max_learning_rate", "1e-3"), ("total_steps", None), ("pct_start", True), ("div", "x")])
def test_arguments_that_are_not_numbers_are_type_errors(name, value):
    args = dict(max_learning_rate=1e-3, total_steps=10, pct_start=0.3, div=5.0, final_div=1e4)
    args[name] = value
    with pytest.raises(kt.ArgumentTypeError, match=f"OneCycle: {name} must be a number"):
        kt.OneCycle(**args)


def test_keras_file_round_trip_inside_an_optimizer(tmp_path, data):
    x, y = data
    cycle = kt.OneCycle(2e-2, total_steps=12, pct_start=0.4, div=8.0, final_div=300.0)
    model = randomize(tiny_model())
    model.compile(optimizer=keras.optimizers.Adam(cycle), loss=LOSS)
    model.fit(x, y, batch_size=16, epochs=1, verbose=0)  # 4 steps into the cycle
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    restored = loaded.optimizer._learning_rate  # noqa: SLF001
    assert isinstance(restored, kt.OneCycle)
    assert restored.get_config() == cycle.get_config()
    assert int(loaded.optimizer.iterations) == 4
    # Both go on from step 4 of the same cycle: the same rates, the same weights.
    model.fit(x, y, batch_size=16, epochs=2, verbose=0, shuffle=False)
    loaded.fit(x, y, batch_size=16, epochs=2, verbose=0, shuffle=False)
    for a, b in zip(model.weights, loaded.weights):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-6, atol=1e-7, err_msg=a.path)
    assert float(loaded.optimizer.learning_rate) == pytest.approx(
        by_hand(12, 2e-2, 12, 0.4, 8.0, 300.0), rel=1e-5)


def test_a_cycle_per_phase_restarts_at_the_switch(data):
    x, y = data  # 64 examples, batch 16: 4 steps per epoch
    head = kt.OneCycle(1e-2, total_steps=8, pct_start=0.25, div=10.0, final_div=100.0)
    finetune = kt.OneCycle(1e-3, total_steps=8, pct_start=0.5, div=4.0, final_div=1e3)
    model = randomize(tiny_model())
    model.compile(optimizer="adam", loss=LOSS)
    recorded = BatchRates()
    model.fit(x, y, batch_size=16, epochs=4, verbose=0, callbacks=[
        kt.TwoPhaseSchedule(freeze=3, switch_epoch=2, head_lr=head, finetune_lr=finetune,
                            verbose=0), recorded])
    expected = ([by_hand(i, 1e-2, 8, 0.25, 10.0, 100.0) for i in range(8)]
                + [by_hand(i, 1e-3, 8, 0.5, 4.0, 1e3) for i in range(8)])
    np.testing.assert_allclose(recorded.rates, expected, rtol=1e-5)


def test_groups_run_the_cycle_scaled_on_their_own_steps(data):
    x, y = data
    cycle = kt.OneCycle(1e-2, total_steps=8, pct_start=0.3, div=5.0, final_div=1e3)
    model = randomize(tiny_model())
    opt = kt.discriminative_optimizer(model, groups=[["Dense_a", "Bn"], ["Dense_b"]],
                                      learning_rate=cycle, multipliers=[0.01, 0.1])
    model.compile(optimizer=opt, loss=LOSS)
    recorded = BatchRates()
    model.fit(x, y, batch_size=16, epochs=2, verbose=0, callbacks=[recorded])
    for step, rates in enumerate(recorded.rates):
        top = by_hand(step, 1e-2, 8, 0.3, 5.0, 1e3)
        assert rates == pytest.approx({"head": top, "group_1": 0.1 * top,
                                       "group_0": 0.01 * top}, rel=1e-5), step


# Ports of Keras 3's LearningRateSchedule tests
# (keras/src/optimizers/schedules/learning_rate_schedule_test.py), and of
# fastai's fit_one_cycle integration test.

CYCLE = dict(max_learning_rate=2e-2, total_steps=30, pct_start=0.4, div=8.0, final_div=300.0)


@pytest.mark.parametrize("make", [
    lambda: kt.OneCycle(**CYCLE),
    lambda: kt.PhaseLearningRate(kt.OneCycle(**CYCLE), start_step=7),
    lambda: ScaledLearningRate(kt.OneCycle(**CYCLE), factor=0.1),
], ids=["one_cycle", "phase", "scaled"])
def test_config_and_serialization_round_trips(make):
    # Port of Keras' test_config (run_class_serialization_test): get_config ->
    # from_config, and serialize -> JSON -> deserialize without custom_objects,
    # give the same class, config and attributes, and the same rates.
    schedule = make()
    config = schedule.get_config()
    for revived in (
            type(schedule).from_config(json.loads(json.dumps(config))),
            keras.optimizers.schedules.deserialize(
                json.loads(json.dumps(keras.optimizers.schedules.serialize(schedule))))):
        assert type(revived) is type(schedule)
        assert json.dumps(revived.get_config(), sort_keys=True) == json.dumps(config,
                                                                               sort_keys=True)
        assert set(dir(revived)) == set(dir(schedule))
        for step in (0, 5, 12, 29, 40):
            assert rate(revived, step) == rate(schedule, step), step
    # The config holds the values given, not defaults: every rate depends on them.
    cycle = schedule if isinstance(schedule, kt.OneCycle) else schedule.learning_rate
    assert cycle.get_config() == CYCLE


def test_the_step_can_be_an_int_a_float_an_array_a_tensor_or_a_variable():
    # Port of Keras' test_continuous, test_variables and test_staircase
    # (a variable step assigned in turn): every kind of step gives the same
    # float32 rate, and a fractional step lies on the curve between its
    # neighbours (the schedule is continuous, as the formula).
    cycle = kt.OneCycle(**CYCLE)
    step = keras.optimizers.SGD(cycle).iterations  # the variable an optimizer passes
    for s in (0, 3, 12, 13, 29, 30, 50):
        expected = by_hand(s, 2e-2, 30, 0.4, 8.0, 300.0)
        step.assign(s)
        values = [cycle(s), cycle(float(s)), cycle(np.int64(s)), cycle(np.float32(s)),
                  cycle(keras.ops.convert_to_tensor(s, "int32")), cycle(step)]
        for value in values:
            assert keras.backend.standardize_dtype(value.dtype) == "float32"
            assert float(keras.ops.convert_to_numpy(value)) == pytest.approx(expected,
                                                                              rel=1e-5), s
    for s in (3.5, 12.25, 20.5):
        assert rate(cycle, s) == pytest.approx(
            by_hand(s, 2e-2, 30, 0.4, 8.0, 300.0), rel=1e-5), s
        assert rate(cycle, s) not in (rate(cycle, math.floor(s)), rate(cycle, math.ceil(s)))


def test_numpy_and_float64_arguments_give_a_json_config_and_float32_rates():
    # Port of Keras' test_float64 (CosineDecay with an np.float64 rate):
    # numpy scalars are taken, the config holds plain Python numbers (JSON),
    # and the rates are float32 and the same as with Python numbers.
    cycle = kt.OneCycle(np.float64(2e-2), total_steps=np.int64(30), pct_start=np.float32(0.4),
                        div=np.int32(8), final_div=np.float64(300.0))
    config = cycle.get_config()
    assert {name: type(value) for name, value in config.items()} == {
        "max_learning_rate": float, "total_steps": int, "pct_start": float, "div": float,
        "final_div": float}
    json.dumps(config)
    plain = kt.OneCycle(**CYCLE)
    for s in (0, 12, 29):
        value = cycle(s)
        assert keras.backend.standardize_dtype(value.dtype) == "float32"
        assert rate(cycle, s) == pytest.approx(rate(plain, s), rel=1e-6)


def test_training_on_a_one_cycle_makes_the_model_better():
    # Port of fastai's fit_one_cycle integration test ("training a few epochs
    # should make the model better"), on least squares where the noise floor
    # is known (0.25): 2 epochs on a one-cycle below the stable bound reach it.
    rng = np.random.default_rng(0)
    x = rng.normal(size=(512, 8)).astype("float32")
    y = x @ rng.normal(size=(8, 1)).astype("float32") + 0.5 * rng.normal(
        size=(512, 1)).astype("float32")
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.SGD(kt.OneCycle(0.3, total_steps=16)), loss="mse")
    initial = model.evaluate(x, y, verbose=0)
    model.fit(x, y, batch_size=64, epochs=2, verbose=0)
    final = model.evaluate(x, y, verbose=0)
    assert initial > 2.0 and final < 0.3
