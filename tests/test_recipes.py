"""fine_tune: its phases (a bit-identical base, then per-group one-cycles in
fixed ratios), the finder in front, resuming, and bad input."""

import json
import math
import re

import keras
import numpy as np
import pytest

import keras_transfer as kt
from helpers import DenseBnBlock, Interrupt, InterruptAtBatch, randomize, tiny_model
from keras_transfer import recipes
from keras_transfer.pipeline import reference
from test_learning_rates import BatchRates, by_hand
from test_schedules import Snapshots

LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def moved(a, b, layer_names):
    return sorted({p.split("/")[1] for p in a if p.split("/")[1] in layer_names
                   and not np.array_equal(a[p], b[p])})


def run(data, **kwargs):
    x, y = data  # 64 examples, batch 16: 4 steps per epoch
    model = randomize(tiny_model())
    start = {v.path: v.numpy().copy() for v in model.weights}
    rates, snaps = BatchRates(), Snapshots()
    args = dict(freeze=3, epochs=3, freeze_epochs=1, base_lr=1e-2, lr_mult=100.0,
                batch_size=16, loss=LOSS, metrics=(), verbose=0, shuffle=False)
    args.update(kwargs)
    history = kt.fine_tune(model, (x, y), callbacks=[rates, snaps], **args)
    return model, start, history, rates.rates, snaps.at_end


@pytest.mark.parametrize("train_batchnorm", [False, True])
def test_phase_one_trains_the_head_and_phase_two_everything(data, train_batchnorm):
    model, start, history, _, snaps = run(data, train_batchnorm=train_batchnorm)
    base = {"Dense_a", "Bn", "Dense_b"}
    assert history.history["phase"] == [1, 2, 2]
    # Phase 1: the base's kernels bit-identical; BatchNormalization moves only
    # when it trains (fastai's train_bn).
    assert moved(start, snaps[0], base | {"Head"}) == (
        ["Bn", "Head"] if train_batchnorm else ["Head"])
    # Phase 2: all of the base trains, BatchNormalization as chosen.
    assert moved(snaps[0], snaps[2], base) == (
        ["Bn", "Dense_a", "Dense_b"] if train_batchnorm else ["Dense_a", "Dense_b"])


def test_each_phase_runs_its_one_cycle_and_groups_keep_their_ratios(data):
    _, _, history, rates, _ = run(data, pct_start=0.25, div=4.0, final_div=1e3,
                                  head_pct_start=0.5, head_div=10.0, head_lr_mult=2.0,
                                  train_batchnorm=False)
    assert len(rates) == 12
    # The default groups of the tiny base: [Dense_a, Bn] and [Dense_b].
    factors = {"head": 1.0, "group_1": 100 ** -0.5, "group_0": 100 ** -1.0}
    for step in range(4):  # phase 1: the head alone, one-cycle over 4 steps, at 2 x base_lr
        assert rates[step]["head"] == pytest.approx(
            by_hand(step, 2e-2, 4, 0.5, 10.0, 1e3), rel=1e-5)
    for step in range(8):  # phase 2: every group, one-cycle over 8 steps from 0
        top = by_hand(step, 1e-2, 8, 0.25, 4.0, 1e3)
        assert rates[4 + step] == pytest.approx(
            {name: f * top for name, f in factors.items()}, rel=1e-5), step
    # `lr` is the head's rate once each epoch's steps are done.
    np.testing.assert_allclose(history.history["lr"], [
        by_hand(4, 2e-2, 4, 0.5, 10.0, 1e3), by_hand(4, 1e-2, 8, 0.25, 4.0, 1e3),
        by_hand(8, 1e-2, 8, 0.25, 4.0, 1e3)], rtol=1e-5)


def test_fine_tunes_default_groups_are_the_layer_groups(data, monkeypatch):
    # fine_tune(groups=None) takes kt.layer_groups(model, freeze) (tests/test_groups.py)
    seen = {}
    real = recipes.optimizers.discriminative_optimizer

    def spy(model, groups, *args, **kwargs):
        seen["groups"] = groups
        return real(model, groups, *args, **kwargs)

    monkeypatch.setattr(recipes.optimizers, "discriminative_optimizer", spy)
    model = tiny_model()
    kt.fine_tune(model, data, freeze=3, epochs=1, base_lr=1e-3, loss=LOSS, metrics=(),
                 verbose=0)
    assert seen["groups"] == kt.layer_groups(model, 3) == [["Dense_a", "Bn"], ["Dense_b"]]


def test_finder_runs_when_base_lr_is_none_and_leaves_no_trace(data):
    keras.utils.set_random_seed(3)
    found, _, history, _, _ = run(data, base_lr=None, finder={"num_steps": 20},
                                  head_lr_mult=2.0)
    curve = history.learning_rate_curve
    assert isinstance(curve, kt.LearningRateCurve) and len(curve.learning_rates) == 20
    assert history.base_lr == curve.suggestion / 2  # the finder found phase 1's rate
    keras.utils.set_random_seed(3)
    given, _, again, _, _ = run(data, base_lr=curve.suggestion / 2, head_lr_mult=2.0)
    assert again.learning_rate_curve is None
    for a, b in zip(found.weights, given.weights):  # the finder changed nothing
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.path)


@pytest.mark.parametrize("frozen_before", ["kt.freeze", "container"])
def test_batchnorm_frozen_before_the_call_trains_with_train_batchnorm(data, frozen_before):
    # The README's finder example freezes the base before fine_tune; the usual
    # Keras pattern sets `base.trainable = False` on a nested base.
    x, y = data
    inner = randomize(tiny_model())
    if frozen_before == "kt.freeze":
        model = inner
        kt.freeze(model, upto=3)
    else:
        model = keras.Sequential([keras.Input(x.shape[1:]), keras.Sequential(
            inner.layers[:3], name="base"), inner.layers[3]])
        model.layers[0].trainable = False
    start = {v.path: v.numpy().copy() for v in model.weights}
    snaps = Snapshots()
    kt.fine_tune(model, (x, y), freeze=model.layers[:3] if frozen_before == "kt.freeze"
                 else ["base"], epochs=2, base_lr=1e-2, batch_size=16, loss=LOSS,
                 metrics=(), verbose=0, shuffle=False, callbacks=[snaps])
    names = {"Dense_a", "Bn", "Dense_b", "Head"}
    assert moved(start, snaps.at_end[0], names) == ["Bn", "Head"]
    assert moved(snaps.at_end[0], snaps.at_end[1], names) == ["Bn", "Dense_a", "Dense_b",
                                                              "Head"]


def test_batchnorm_inside_a_block_trains_in_both_phases_with_train_batchnorm(data):
    # A BatchNormalization inside a block written as a keras.layers.Layer was
    # frozen with its block in phase 1 (and in the finder's sweep, which trains
    # what phase 1 trains), where the
    # docstring says it trains in both phases: fine_tune looked for it among
    # the base's layers and nested models' layers, not inside plain layers.
    x, y = data
    model = keras.Sequential([keras.Input((4,)), DenseBnBlock(name="block"),
                              keras.layers.Dense(3, name="head")])
    start = {v.path: v.numpy().copy() for v in model.weights}
    snaps = Snapshots()
    history = kt.fine_tune(model, (x, y), freeze=["block"], epochs=2, base_lr=1e-2,
                           batch_size=16, loss=LOSS, metrics=(), verbose=0, shuffle=False,
                           callbacks=[snaps])
    assert history.history["phase"] == [1, 2]
    moved_paths = lambda a, b: sorted(  # noqa: E731
        p.split("/", 1)[1] for p in a if not np.array_equal(a[p], b[p]))
    bn = ["block/bn/beta", "block/bn/gamma", "block/bn/moving_mean", "block/bn/moving_variance"]
    assert moved_paths(start, snaps.at_end[0]) == bn + ["head/bias", "head/kernel"]
    assert moved_paths(snaps.at_end[0], snaps.at_end[1]) == [
        *bn, "block/dense/bias", "block/dense/kernel", "head/bias", "head/kernel"]


def test_the_finder_sweeps_with_batchnorm_inside_a_block_trainable(data, monkeypatch):
    # The finder trains what phase 1 trains, so its sweep has the block's
    # BatchNormalization trainable too (it was frozen with its block).
    x, y = data
    model = keras.Sequential([keras.Input((4,)), DenseBnBlock(name="block"),
                              keras.layers.Dense(3, name="head")])
    swept = []
    finder = kt.lr_finder.find_learning_rate

    def recording(model, *args, **kwargs):
        swept.append([v.path.split("/", 1)[1] for v in model.trainable_weights])
        return finder(model, *args, **kwargs)

    monkeypatch.setattr(kt.lr_finder, "find_learning_rate", recording)
    kt.fine_tune(model, (x, y), freeze=["block"], epochs=2, finder={"num_steps": 20},
                 batch_size=16, loss=LOSS, metrics=(), verbose=0, shuffle=False)
    assert swept == [["block/bn/gamma", "block/bn/beta", "head/kernel", "head/bias"]]


class BaseWithOwnWeight(keras.Model):
    """A subclassed base model with a weight of its own (a learned offset)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.dense = keras.layers.Dense(8, name="dense")
        self.bn = keras.layers.BatchNormalization(name="bn")

    def build(self, input_shape):
        self.offset = self.add_weight(shape=(8,), initializer="zeros", name="offset")
        self.dense.build(input_shape)
        self.bn.build((None, 8))

    def call(self, x, training=None):
        return self.bn(self.dense(x), training=training) + self.offset


@pytest.mark.parametrize("train_batchnorm", [False, True])
def test_a_nested_base_models_own_weight_is_frozen_in_phase_one(data, train_batchnorm):
    # fine_tune froze the base's layers one by one, never the base model
    # itself, so a weight the model holds itself trained in phase 1 (found
    # in review).
    x, y = data
    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Dense(3, name="head")(
        BaseWithOwnWeight(name="base")(inputs)))
    start = {v.path: v.numpy().copy() for v in model.weights}
    snaps = Snapshots()
    kt.fine_tune(model, (x, y), freeze=["base"], epochs=2, base_lr=1e-2, batch_size=16,
                 loss=LOSS, metrics=(), verbose=0, shuffle=False, callbacks=[snaps],
                 train_batchnorm=train_batchnorm)
    moved_paths = lambda a, b: sorted(  # noqa: E731
        p for p in a if not np.array_equal(a[p], b[p]))
    bn = ["base/bn/beta", "base/bn/gamma", "base/bn/moving_mean", "base/bn/moving_variance"]
    assert moved_paths(start, snaps.at_end[0]) == (
        bn if train_batchnorm else []) + ["head/bias", "head/kernel"]
    assert moved_paths(snaps.at_end[0], snaps.at_end[1]) == (
        bn if train_batchnorm else []) + ["base/dense/bias", "base/dense/kernel", "base/offset",
                                          "head/bias", "head/kernel"]


def test_from_scratch_is_one_cycle_without_freezing(data):
    _, start, history, rates, snaps = run(data, freeze=[], freeze_epochs=0, lr_mult=1.0)
    assert history.history["phase"] == [2, 2, 2]
    assert moved(start, snaps[0], {"Dense_a", "Bn", "Dense_b", "Head"}) == [
        "Bn", "Dense_a", "Dense_b", "Head"]
    np.testing.assert_allclose(rates, [by_hand(i, 1e-2, 12, 0.3, 5.0, 1e5) for i in range(12)],
                               rtol=1e-5)
    # Without phase 1 the finder's suggestion is the one rate of the run:
    # head_lr_mult (phase 1's peak over phase 2's) has no phase 1 to divide for.
    for head_lr_mult in (1.0, 2.0):
        _, _, found, rates, _ = run(data, freeze=[], freeze_epochs=0, lr_mult=1.0,
                                    base_lr=None, finder={"num_steps": 20},
                                    head_lr_mult=head_lr_mult)
        assert found.base_lr == found.learning_rate_curve.suggestion
        assert max(rates) == pytest.approx(found.learning_rate_curve.suggestion, rel=0.02)


def model_and_args(callbacks, **kwargs):
    """A seeded model and `fine_tune`'s arguments for the resume tests: 4 epochs, 1 frozen."""
    keras.utils.set_random_seed(5)
    return randomize(tiny_model()), dict(
        freeze=3, epochs=4, freeze_epochs=1, base_lr=1e-2, batch_size=16, loss=LOSS,
        metrics=(), verbose=0, shuffle=False, callbacks=callbacks, **kwargs)


def test_backup_and_restore_resumes_in_the_right_phase(data, tmp_path):
    x, y = data
    whole, args = model_and_args([])
    kt.fine_tune(whole, (x, y), **args)
    backup = keras.callbacks.BackupAndRestore(str(tmp_path / "backup"))
    broken, args = model_and_args([backup, Interrupt(1)])  # stopped once epoch 2 is backed up
    with pytest.raises(KeyboardInterrupt):
        kt.fine_tune(broken, (x, y), **args)
    resumed, args = model_and_args([keras.callbacks.BackupAndRestore(str(tmp_path / "backup"))])
    history = kt.fine_tune(resumed, (x, y), **args)
    assert history.epoch == [2, 3] and history.history["phase"] == [2, 2]
    for a, b in zip(whole.weights, resumed.weights):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-6, atol=1e-7, err_msg=a.path)


def test_sweep_phase2_peaks_phase_two_where_a_sweep_of_what_it_trains_says(data):
    # The second sweep is the finder run by hand, where phase 1 ended, on what
    # phase 2 trains (every layer but BatchNormalization, the default groups in
    # their ratios).
    keras.utils.set_random_seed(3)
    swept, _, history, rates, _ = run(data, sweep_phase2=True, finder={"num_steps": 20},
                                      train_batchnorm=False)
    curve = history.phase2_learning_rate_curve
    assert isinstance(curve, kt.LearningRateCurve) and len(curve.learning_rates) == 20
    assert history.base_lr == 1e-2 and history.finetune_lr == curve.suggestion
    for step in range(8):  # phase 2's one-cycle (fine_tune's defaults) peaks at the suggestion
        assert rates[4 + step]["head"] == pytest.approx(
            by_hand(step, curve.suggestion, 8, 0.3, 5.0, 1e5), rel=1e-5), step

    keras.utils.set_random_seed(3)
    by_hand_model, _, phase_one, _, _ = run(data, epochs=1, train_batchnorm=False)
    assert phase_one.history["phase"] == [1]
    for layer in by_hand_model.layers:  # BatchNormalization stays frozen (train_batchnorm=False)
        layer.trainable = layer.name != "Bn"
    by_hand_model.compile(loss=LOSS, optimizer=kt.discriminative_optimizer(
        by_hand_model, [["Dense_a", "Bn"], ["Dense_b"]], 1e-3, multipliers=[1e-2, 1e-1]))
    expected = kt.find_learning_rate(by_hand_model, data, num_steps=20, batch_size=16)
    np.testing.assert_allclose(curve.losses, expected.losses, rtol=1e-5)
    assert curve.suggestion == pytest.approx(expected.suggestion, rel=1e-6)

    # The sweep leaves no trace: the same run with phase 2's peak given (base_lr
    # is phase 2's peak, head_lr_mult sets phase 1's) ends on the same weights.
    keras.utils.set_random_seed(3)
    given, _, again, _, _ = run(data, base_lr=curve.suggestion,
                                head_lr_mult=1e-2 / curve.suggestion, train_batchnorm=False)
    assert again.phase2_learning_rate_curve is None and again.finetune_lr == curve.suggestion
    for a, b in zip(swept.weights, given.weights):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-6, atol=1e-7, err_msg=a.path)


def test_sweep_phase2_says_what_it_found_before_phase_two_begins(data, capsys):
    _, _, history, _, _ = run(data, sweep_phase2=True, finder={"num_steps": 20}, verbose=1)
    out = capsys.readouterr().out
    found = out.index(f"find_learning_rate: 20 steps, suggestion "
                      f"{history.finetune_lr:.3g} (minimum)")
    begins = out.index("TwoPhaseSchedule: epoch 2 begins phase 2")  # the public class's name
    assert out.index("TwoPhaseSchedule: epoch 1 begins phase 1") < found < begins
    assert "_Swept" not in out


def test_sweep_phase2_runs_no_second_sweep_without_a_phase_one(data):
    _, _, history, rates, _ = run(data, freeze_epochs=0, sweep_phase2=True)
    assert history.phase2_learning_rate_curve is None and history.finetune_lr == 1e-2
    for step in range(12):  # one one-cycle over every epoch, at base_lr
        assert rates[step]["head"] == pytest.approx(
            by_hand(step, 1e-2, 12, 0.3, 5.0, 1e5), rel=1e-5), step


SWEPT = dict(sweep_phase2=True, finder={"num_steps": 20})


def stopped_swept_fit(data, backup, stop, save_freq="epoch"):
    """A `fine_tune(sweep_phase2=True)` backed up to `backup` and stopped by `stop`."""
    model, args = model_and_args(
        [keras.callbacks.BackupAndRestore(str(backup), save_freq=save_freq), stop], **SWEPT)
    with pytest.raises(KeyboardInterrupt):
        kt.fine_tune(model, data, **args)


def resumed_swept_fit(data, backup, save_freq="epoch"):
    """The same `fine_tune` again, resumed from `backup`: (model, History)."""
    model, args = model_and_args(
        [keras.callbacks.BackupAndRestore(str(backup), save_freq=save_freq)], **SWEPT)
    return model, kt.fine_tune(model, data, **args)


def test_sweep_phase2_resumes_with_the_rate_its_sweep_recorded(data, tmp_path):
    x, y = data
    whole, args = model_and_args([], **SWEPT)
    straight = kt.fine_tune(whole, (x, y), **args)
    backup = tmp_path / "backup"
    stopped_swept_fit((x, y), backup, Interrupt(1))
    record = json.loads((backup / "keras_transfer_phase2_sweep.json").read_text())
    assert record == {"phase2_peak": straight.finetune_lr, "switch_epoch": 1}

    # Resumed at epoch 3, inside phase 2: the state the sweep saw is gone; the
    # record gives its rate, and the run ends as the uninterrupted one did.
    resumed, history = resumed_swept_fit((x, y), backup)
    assert history.epoch == [2, 3] and history.history["phase"] == [2, 2]
    assert history.phase2_learning_rate_curve is None
    assert history.finetune_lr == straight.finetune_lr
    np.testing.assert_allclose(history.history["lr"], straight.history["lr"][2:], rtol=1e-6)
    for a, b in zip(whole.weights, resumed.weights):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-6, atol=1e-7, err_msg=a.path)
    assert not backup.exists()  # BackupAndRestore removes its folder, the record with it

    # A fit that begins inside phase 2 with no record is refused before it trains.
    fresh, args = model_and_args([], **SWEPT)
    before = [v.numpy().copy() for v in fresh.weights]
    with pytest.raises(kt.errors.ArgumentError,
                       match=r"sweep_phase2=True\): this fit begins inside phase 2 \(epoch 3\)"
                             r".*no BackupAndRestore among the callbacks"):
        kt.fine_tune(fresh, (x, y), initial_epoch=2, **args)
    for value, variable in zip(before, fresh.weights):
        np.testing.assert_array_equal(value, variable.numpy(), err_msg=variable.path)


def test_sweep_phase2_resumed_at_the_switch_sweeps_again_and_ends_as_one_run(data, tmp_path):
    # Backed up at the end of phase 1 and stopped: the resumed fit begins phase
    # 2 itself, from the same weights, so its sweep finds the same rate.
    x, y = data
    whole, args = model_and_args([], **SWEPT)
    straight = kt.fine_tune(whole, (x, y), **args)
    stopped_swept_fit((x, y), tmp_path / "backup", Interrupt(0))
    resumed, history = resumed_swept_fit((x, y), tmp_path / "backup")
    assert history.epoch == [1, 2, 3]
    assert history.phase2_learning_rate_curve.losses == straight.phase2_learning_rate_curve.losses
    assert history.finetune_lr == straight.finetune_lr
    for a, b in zip(whole.weights, resumed.weights):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-6, atol=1e-7, err_msg=a.path)


@pytest.mark.parametrize("where", ["local", "remote"])
def test_sweep_phase2_stopped_inside_its_first_epoch_keeps_its_sweeps_rate(
        data, tmp_path, monkeypatch, where):
    # Backed up every 2 batches and stopped after batch 3 of epoch 2, the first
    # of phase 2: Keras restores epoch 2 from its first batch on the weights of
    # batch 2, which are no longer where phase 1 ended. The resumed fit must not
    # sweep those; the rate is the one the stopped fit's sweep recorded. It
    # begins at the switch, so it asks whether there is a record, then reads it.
    # "remote": Keras' BackupAndRestore takes any folder tf.io.gfile writes
    # (gs://, ...). A file:// URL goes through gfile as gs:// does; TensorFlow's
    # ram:// file system cannot stand in, as its rewrites append (Keras' own
    # training metadata then fails to parse on resume). With os calls the
    # record went to a folder named "file:" under the working directory
    # instead, where a resume on another machine would not find it.
    import tensorflow as tf

    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    x, y = data
    whole, args = model_and_args([], **SWEPT)
    straight = kt.fine_tune(whole, (x, y), **args)
    backup = str(tmp_path / "backup") if where == "local" else f"file://{tmp_path}/backup"
    stopped_swept_fit((x, y), backup, InterruptAtBatch(1, 2), save_freq=2)

    def saved(name):  # gfile reads a local path as os does
        with tf.io.gfile.GFile(f"{backup}/{name}") as f:
            return json.loads(f.read())

    assert saved("training_metadata.json") == {"epoch": 1, "batch": 1}  # inside phase 2's epoch 1
    assert saved("keras_transfer_phase2_sweep.json") == {"phase2_peak": straight.finetune_lr,
                                                         "switch_epoch": 1}
    _, history = resumed_swept_fit((x, y), backup, save_freq=2)
    assert history.epoch == [1, 2, 3] and history.history["phase"] == [2, 2, 2]
    assert history.phase2_learning_rate_curve is None  # no second sweep
    assert history.finetune_lr == straight.finetune_lr
    np.testing.assert_allclose(history.history["lr"], straight.history["lr"][1:], rtol=1e-6)
    assert list(work.iterdir()) == []  # nothing written under the working directory


def test_sweep_phase2_resumed_inside_phase_one_sweeps_what_it_trained(data, tmp_path):
    # Stopped at batch 1 of epoch 2, after the sweep and before any backup of
    # that epoch: Keras resumes epoch 1 (its last backup was inside it), so the
    # resumed fit trains phase 1 again, and sweeps what it trained; the stopped
    # fit's record, in the same folder, is another state's.
    backup = tmp_path / "backup"
    stopped_swept_fit(data, backup, InterruptAtBatch(1, 0), save_freq=2)
    assert json.loads((backup / "training_metadata.json").read_text())["epoch"] == 0
    assert (backup / "keras_transfer_phase2_sweep.json").exists()
    _, history = resumed_swept_fit(data, backup, save_freq=2)
    assert history.epoch == [0, 1, 2, 3] and history.history["phase"] == [1, 2, 2, 2]
    assert history.phase2_learning_rate_curve is not None  # its own sweep
    assert history.finetune_lr == history.phase2_learning_rate_curve.suggestion


def test_sweep_phase2_refuses_a_missing_or_foreign_record(data, tmp_path):
    x, y = data
    backup = tmp_path / "backup"
    stopped_swept_fit((x, y), backup, Interrupt(1))
    record = backup / "keras_transfer_phase2_sweep.json"
    saved = record.read_text()
    # another run's record: its phase 2 began at another epoch
    record.write_text(json.dumps({"phase2_peak": 1e-3, "switch_epoch": 2}))
    with pytest.raises(kt.errors.ArgumentError,
                       match=r"records a phase 2 that began at epoch index 2, expected 1 "
                             r"\(freeze_epochs\)"):
        resumed_swept_fit((x, y), backup)
    # no record beside the backup
    record.unlink()
    with pytest.raises(kt.errors.ArgumentError, match=f"no record at {re.escape(str(record))}"):
        resumed_swept_fit((x, y), backup)
    record.write_text(saved)  # the right one: the run goes on
    assert resumed_swept_fit((x, y), backup)[1].history["phase"] == [2, 2]


def test_sweep_phase2_reports_no_phase_two_peak_when_phase_two_never_ran(data):
    class StopAfterPhaseOne(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            self.model.stop_training = True

    for callbacks, epochs in (([StopAfterPhaseOne()], 4), ([], 1)):
        model, args = model_and_args(callbacks, sweep_phase2=True)
        history = kt.fine_tune(model, data, **{**args, "epochs": epochs})
        assert history.history["phase"] == [1]
        assert history.finetune_lr is None and history.phase2_learning_rate_curve is None


def test_sweep_phase2_refuses_a_one_shot_iterator(data):
    x, y = data
    batches = iter([(x[i:i + 16], y[i:i + 16]) for i in range(0, 64, 16)])
    model = tiny_model()
    with pytest.raises(kt.errors.ArgumentError, match="needs data it can read again.*list_iterator"):
        kt.fine_tune(model, batches, freeze=3, epochs=2, base_lr=1e-2, steps_per_epoch=4,
                     loss=LOSS, metrics=(), verbose=0, sweep_phase2=True)
    with pytest.raises(kt.errors.ArgumentTypeError, match="train must be"):  # checked first
        kt.fine_tune(model, 5, freeze=3, epochs=2, base_lr=1e-2, loss=LOSS, verbose=0,
                     sweep_phase2=True)


@pytest.mark.parametrize("kwargs, message", [
    (dict(epochs=2, freeze_epochs=3), "fine_tune: expected freeze_epochs <= epochs"),
    (dict(epochs=0), "epochs must be an int >= 1"),
    (dict(lr_mult=0.5), "lr_mult must be >= 1"),
    (dict(base_lr=-1.0), "base_lr must be > 0"),
    (dict(head_lr_mult=0.0), "head_lr_mult must be > 0"),
    (dict(pct_start=2.0), r"pct_start must be in \[0, 1\]"),
    (dict(head_pct_start=-0.1), r"fine_tune: head_pct_start must be in \[0, 1\]"),
    (dict(head_div=0.5), "fine_tune: head_div must be >= 1"),
    (dict(finder={"batch_size": 8}), "batch_size and verbose come from fine_tune"),
    (dict(lr_mult="10"), "lr_mult must be a number"),
    (dict(train=(0, 1, 2, 3)),
     r"must be \(x, y\) or \(x, y, sample_weight\); received a tuple of 4"),
    (dict(train=np.zeros((4, 4))), "train must be `\\(x, y\\)`"),
    (dict(batch_size=0), "batch_size must be an int >= 1"),
    (dict(validation_split=0.2), "does not take validation_split"),
])
def test_bad_arguments_are_named_before_anything_changes(data, kwargs, message):
    # checked before the base is frozen, the model compiled or the finder run
    model = tiny_model()
    args = dict(freeze=3, epochs=2, verbose=0, train=data)
    args.update(kwargs)
    with pytest.raises(kt.TransferError, match=message):
        kt.fine_tune(model, args.pop("train"), **args)
    assert getattr(model, "optimizer", None) is None
    assert all(layer.trainable for layer in model.layers)


def test_batch_size_for_refuses_what_it_cannot_size():
    assert recipes.batch_size_for(1000) == 32 and recipes.batch_size_for(10) == 16
    for kwargs, message in ((dict(steps=0), "steps must be > 0"),
                            (dict(smallest=64, largest=32), "smallest <= largest")):
        with pytest.raises(kt.ArgumentError, match=message):
            recipes.batch_size_for(1000, **kwargs)
    with pytest.raises(kt.ArgumentTypeError, match="examples must be a number"):
        recipes.batch_size_for("1000")
    with pytest.raises(kt.ArgumentTypeError, match="smallest must be a number"):
        recipes.batch_size_for(1000, smallest="16")


def test_data_of_unknown_length_needs_steps_per_epoch(data):
    x, y = data

    def forever():
        while True:
            yield x[:16], y[:16]

    with pytest.raises(kt.ArgumentError, match="pass steps_per_epoch="):
        kt.fine_tune(tiny_model(), forever(), freeze=3, epochs=2, base_lr=1e-3, verbose=0)
    history = kt.fine_tune(tiny_model(), forever(), freeze=3, epochs=2, base_lr=1e-3,
                           steps_per_epoch=3, loss=LOSS, metrics=(), verbose=0)
    assert history.history["phase"] == [1, 2]
    assert not math.isnan(history.history["loss"][-1])


def test_array_sample_weights_train_as_a_dataset_of_weighted_batches_does(data):
    # One rule for training data (keras.utils.unpack_x_y_sample_weight on one
    # batch or on the arrays): `(x, y, sample_weight)` arrays are taken as
    # `fit` takes them, the same as batches of (x, y, sample_weight) were.
    import tensorflow as tf

    x, y = data
    weight = np.linspace(0.0, 2.0, len(x)).astype("float32")
    args = dict(freeze=3, epochs=2, base_lr=1e-2, loss=LOSS, metrics=(), verbose=0,
                shuffle=False)
    arrays, batches, unweighted = tiny_model(), tiny_model(), tiny_model()
    for model in (batches, unweighted):
        model.set_weights(arrays.get_weights())
    kt.fine_tune(arrays, (x, y, weight), batch_size=16, **args)
    kt.fine_tune(batches, tf.data.Dataset.from_tensor_slices((x, y, weight)).batch(16), **args)
    kt.fine_tune(unweighted, (x, y), batch_size=16, **args)
    for a, b, c in zip(arrays.weights, batches.weights, unweighted.weights):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-6, err_msg=a.path)
    assert not all(np.allclose(a.numpy(), c.numpy()) for a, c in
                   zip(arrays.trainable_weights, unweighted.trainable_weights))
