import json
import os
import subprocess
import sys
import warnings

import keras
import numpy as np
import pytest

import keras_transfer as kt
from helpers import DenseBnBlock, Interrupt, randomize, tiny_model


class Snapshots(keras.callbacks.Callback):
    """Records every weight (BN moving statistics included) at each epoch end."""

    def __init__(self):
        super().__init__()
        self.at_end = []
        self.inner_steps = []  # the (inner) optimizer's step count at each epoch end

    def on_epoch_end(self, epoch, logs=None):
        self.at_end.append({v.path: v.numpy().copy() for v in self.model.weights})
        inner = getattr(self.model.optimizer, "inner_optimizer", self.model.optimizer)
        self.inner_steps.append(int(inner.iterations.numpy()))


def base_paths(model):
    return [v.path for layer in model.layers[:3] for v in layer.weights]


def head_paths(model):
    return [v.path for v in model.layers[3].weights]


def moved(a, b, paths):
    return [p for p in paths if not np.array_equal(a[p], b[p])]


@pytest.mark.parametrize("jit_compile", [False, True])
@pytest.mark.parametrize("freeze_before_compile", [False, True])
def test_phase_one_keeps_base_bit_identical_and_phase_two_trains_it(
        data, jit_compile, freeze_before_compile):
    x, y = data
    model = randomize(tiny_model())
    if freeze_before_compile:  # the optimizer is then built without the base
        kt.freeze(model, upto=3)
    model.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  jit_compile=jit_compile)
    start = {v.path: v.numpy().copy() for v in model.weights}
    snaps = Snapshots()
    schedule = kt.TwoPhaseSchedule(freeze=3, switch_epoch=2, head_lr=1e-2, finetune_lr=1e-3, verbose=0)
    history = model.fit(x, y, batch_size=16, epochs=4, verbose=0, callbacks=[schedule, snaps])
    base, head = base_paths(model), head_paths(model)
    assert moved(start, snaps.at_end[1], base) == []  # weights and BN statistics
    assert moved(start, snaps.at_end[1], head) == head
    trainable_base = [p for p in base if "Bn" not in p]  # BN stays frozen
    assert moved(snaps.at_end[1], snaps.at_end[3], trainable_base) == trainable_base
    assert moved(snaps.at_end[1], snaps.at_end[3], [p for p in base if "Bn" in p]) == []
    assert history.history["phase"] == [1, 1, 2, 2]
    np.testing.assert_allclose(history.history["lr"], [1e-2, 1e-2, 1e-3, 1e-3], rtol=1e-6)
    assert schedule.history == [(0, 1), (2, 2)]


def test_train_batchnorm_trains_batchnorm_in_phase_two(data):
    x, y = data
    model = randomize(tiny_model())
    model.compile(optimizer="sgd", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    snaps = Snapshots()
    model.fit(x, y, epochs=2, verbose=0, callbacks=[
        kt.TwoPhaseSchedule(freeze=3, switch_epoch=1, train_batchnorm=True, verbose=0), snaps])
    bn = [v.path for v in model.get_layer("Bn").weights]
    assert moved(snaps.at_end[0], snaps.at_end[1], bn) == bn


def test_initial_epoch_after_the_switch_starts_in_phase_two(data):
    x, y = data
    model = randomize(tiny_model())
    model.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    schedule = kt.TwoPhaseSchedule(freeze=3, switch_epoch=2, verbose=0)
    snaps = Snapshots()
    history = model.fit(x, y, epochs=4, initial_epoch=3, verbose=0,
                        validation_data=(x, y), callbacks=[schedule, snaps])
    assert history.history["phase"] == [2]
    assert "val_loss" in history.history
    assert schedule.history == [(3, 2)]
    assert model.get_layer("Dense_a").trainable and not model.get_layer("Bn").trainable
    start = {v.path: v.numpy() for v in randomize(tiny_model()).weights}
    base = base_paths(model)
    # the one epoch run trained the base (phase 2) but not BatchNormalization
    assert moved(start, snaps.at_end[0], base) == [p for p in base if "Bn" not in p]


class BatchLosses(keras.callbacks.Callback):
    """Records the loss Keras logs after every training batch."""

    def __init__(self):
        super().__init__()
        self.losses = []

    def on_train_batch_end(self, batch, logs=None):
        self.losses.append(float(logs["loss"]))


# The plan of each policy, by hand: (first epoch, layers trainable, SGD rate).
BY_HAND = {
    "two_phase": [(0, [], 0.1), (2, ["Dense_a", "Dense_b"], 0.05)],
    "gradual": [(0, [], 0.1), (1, ["Dense_b"], 0.05), (2, ["Dense_a", "Dense_b"], 0.02)],
}


@pytest.mark.parametrize("policy", sorted(BY_HAND))
def test_matches_plain_keras_recompiling_by_hand(data, policy):
    # Plain Keras' own way to change what trains is to set the flags and
    # compile again between fit calls. With plain SGD the optimizer holds no
    # state but its step count, so the callback inside one fit must log the
    # same per-batch losses and end with the same weights. A train function
    # left with the old trainable set (or a stale loss) would not.
    x, y = data
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    plan = BY_HAND[policy]
    by_hand, recorded = randomize(tiny_model()), BatchLosses()
    for i, (first, trainable, lr) in enumerate(plan):
        for layer in by_hand.layers[:3]:  # Keras' own flags, not the package's freeze
            layer.trainable = layer.name in trainable
        by_hand.compile(optimizer=keras.optimizers.SGD(lr), loss=loss)
        stop = plan[i + 1][0] if i + 1 < len(plan) else 4
        by_hand.fit(x, y, batch_size=16, epochs=stop, initial_epoch=first, shuffle=False,
                    verbose=0, callbacks=[recorded])

    ours, ours_recorded = randomize(tiny_model()), BatchLosses()
    ours.compile(optimizer=keras.optimizers.SGD(0.1), loss=loss)
    if policy == "two_phase":
        callback = kt.TwoPhaseSchedule(freeze=3, switch_epoch=2, head_lr=0.1, finetune_lr=0.05,
                                       verbose=0)
    else:
        callback = kt.GradualUnfreezing(blocks=[["Dense_a"], ["Bn", "Dense_b"]], start_epoch=1,
                                        learning_rates=[0.1, 0.05, 0.02], verbose=0)
    ours.fit(x, y, batch_size=16, epochs=4, shuffle=False, verbose=0,
             callbacks=[callback, ours_recorded])
    assert len(ours_recorded.losses) == len(recorded.losses) == 16
    np.testing.assert_allclose(ours_recorded.losses, recorded.losses, rtol=1e-5)
    for a, b in zip(ours.weights, by_hand.weights):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-6, err_msg=a.path)
    start = randomize(tiny_model()).get_layer("Dense_a").kernel.numpy()
    assert not np.array_equal(ours.get_layer("Dense_a").kernel.numpy(), start)


def test_a_learning_rate_schedule_per_phase_restarts_at_the_switch(data):
    x, y = data
    model = randomize(tiny_model())
    model.compile(optimizer="sgd", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    decay = keras.optimizers.schedules.ExponentialDecay(1e-2, decay_steps=1, decay_rate=0.5)
    rates = []

    class Rates(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            rates.append(float(self.model.optimizer.learning_rate))

    model.fit(x, y, batch_size=32, epochs=4, verbose=0, callbacks=[
        kt.TwoPhaseSchedule(freeze=3, switch_epoch=2, head_lr=0.1, finetune_lr=decay, verbose=0),
        Rates()])
    # 2 batches per epoch: phase 1 constant, phase 2 halves each step from 1e-2
    np.testing.assert_allclose(rates, [0.1] * 4 + [1e-2, 5e-3, 2.5e-3, 1.25e-3], rtol=1e-6)


def test_optimizer_state_of_the_head_survives_a_rebuild(data):
    x, y = data
    model = randomize(tiny_model())
    kt.freeze(model, upto=3)
    model.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, epochs=1, verbose=0)  # builds the optimizer over the head only
    old = {v.path: v.numpy() for v in model.optimizer.variables}
    schedule = kt.TwoPhaseSchedule(freeze=3, switch_epoch=1, head_lr=0.01, verbose=0)
    schedule.set_model(model)
    schedule.on_train_begin()
    new = {v.path: v.numpy() for v in model.optimizer.variables}
    assert len(new) > len(old)  # slots for the base now exist
    head_slot = [p for p in old if "Head_kernel" in p][0]
    assert np.abs(old[head_slot]).sum() > 0
    np.testing.assert_array_equal(new[head_slot], old[head_slot])
    assert int(new[[p for p in new if p.endswith("iteration")][0]]) == len(x) // 32


def test_fit_two_phase_merges_history_with_phase_column(data):
    x, y = data
    model = randomize(tiny_model())
    snaps = Snapshots()
    start = {v.path: v.numpy().copy() for v in model.weights}
    history = kt.fit_two_phase(
        model, (x, y), validation=(x, y), freeze=3, head_epochs=2, epochs=3,
        head_lr=1e-2, finetune_lr=1e-3,
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        callbacks=[snaps], verbose=0)
    assert history.epoch == [0, 1, 2]
    assert history.history["phase"] == [1, 1, 2]
    assert len(history.history["val_accuracy"]) == 3
    np.testing.assert_allclose(history.history["lr"], [1e-2, 1e-2, 1e-3], rtol=1e-6)
    base = base_paths(model)
    assert moved(start, snaps.at_end[1], base) == []
    assert "tiny/Dense_a/kernel" in moved(snaps.at_end[1], snaps.at_end[2], base)


def test_fit_two_phase_logs_each_epochs_rate_of_a_schedule(data):
    # 64 examples, batch 16: 4 steps per epoch; the decay restarts in phase 2
    # (a fresh optimizer), so the epochs' rates differ within each phase.
    decay = keras.optimizers.schedules.ExponentialDecay(1e-2, decay_steps=4, decay_rate=0.5)
    history = kt.fit_two_phase(
        randomize(tiny_model()), data, freeze=3, head_epochs=2, epochs=4, batch_size=16,
        head_lr=decay, finetune_lr=keras.optimizers.schedules.ExponentialDecay(
            1e-3, decay_steps=4, decay_rate=0.5),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), verbose=0)
    np.testing.assert_allclose(history.history["lr"], [5e-3, 2.5e-3, 5e-4, 2.5e-4], rtol=1e-6)


def test_bad_arguments_are_refused(data):
    for bad in (-1, True, 1.5):
        with pytest.raises(kt.ArgumentError, match="switch_epoch"):
            kt.TwoPhaseSchedule(freeze=3, switch_epoch=bad)
    for bad in ("1", -2):
        with pytest.raises(kt.ArgumentError, match="start_epoch"):
            kt.GradualUnfreezing(blocks=[["Dense_a"]], start_epoch=bad)
    with pytest.raises(kt.ArgumentError, match="head_epochs"):
        kt.fit_two_phase(tiny_model(), data, freeze=3, head_epochs=5, epochs=3)
    schedule = kt.TwoPhaseSchedule(freeze=3, switch_epoch=1)
    schedule.set_model(tiny_model())  # not compiled: outside fit, as in a custom loop
    with pytest.raises(kt.ArgumentError, match="needs a compiled model"):
        schedule.on_train_begin()


@pytest.mark.slow
@pytest.mark.parametrize("rates, order", [
    # the JAX pass runs the harder case only (time budget): per-phase schedules,
    # BackupAndRestore listed before the schedule
    pytest.param("floats", "after", marks=pytest.mark.tensorflow_only),
    ("schedules", "before")])
def test_killed_runs_resume_in_the_right_phase_with_identical_weights(tmp_path, rates, order):
    # With a LearningRateSchedule per phase, the optimizer's variable layout
    # and each phase's step origin must survive the restart too, also when
    # BackupAndRestore stands before the schedule and loads first.
    job = os.path.join(os.path.dirname(__file__), "resume_job.py")

    def run(work, kill_at):
        work.mkdir(exist_ok=True)
        return subprocess.run([sys.executable, job, str(work), str(kill_at), rates, order],
                              capture_output=True, text=True, timeout=300)

    assert run(tmp_path / "straight", -1).returncode == 0
    killed = tmp_path / "killed"
    assert run(killed, 0).returncode == -9  # killed in phase 1
    assert run(killed, 2).returncode == -9  # resumed, killed again in phase 2
    done = run(killed, -1)
    assert done.returncode == 0, done.stderr[-2000:]
    straight_log = (tmp_path / "straight" / "log.txt").read_text().splitlines()
    assert (killed / "log.txt").read_text().splitlines() == straight_log  # phase, lr, count
    assert [line.split()[1] for line in straight_log] == ["1", "1", "2", "2", "2"]
    if rates == "schedules":  # each phase's cosine counts from its own first step
        cosine = lambda peak, step: peak * 0.5 * (1 + np.cos(np.pi * step / 20))  # noqa: E731
        steps = 96 // 16  # per epoch; the rate is logged after an epoch's last step
        expected = [cosine(1e-2, steps), cosine(1e-2, 2 * steps), cosine(1e-3, steps),
                    cosine(1e-3, 2 * steps), cosine(1e-3, 3 * steps)]
        np.testing.assert_allclose([float(line.split()[2]) for line in straight_log],
                                   expected, rtol=1e-5)
    assert "Skipping variable loading" not in (killed / "warnings.txt").read_text()
    a = np.load(tmp_path / "straight" / "final.npz")
    b = np.load(killed / "final.npz")
    assert len(a.files) == len(b.files)
    for key in a.files:  # bit-identical: same data order, deterministic ops
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


@pytest.mark.slow
@pytest.mark.tensorflow_only
def test_two_phases_under_mirrored_strategy_match_one_device(tmp_path):
    job = os.path.join(os.path.dirname(__file__), "distributed_job.py")
    results = {}
    for way in ("callback", "fit_two_phase", "discriminative"):
        # one process per way: TensorFlow's collective ops do not take several
        # MirroredStrategy runs of different shapes in one process
        done = subprocess.run([sys.executable, job, str(tmp_path / f"{way}.json"), way],
                              capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
        results.update(json.loads((tmp_path / f"{way}.json").read_text()))
    for way in ("callback", "fit_two_phase", "discriminative"):
        one, two = results[way]["one_device"], results[way]["mirrored"]
        assert (one["replicas"], two["replicas"]) == (1, 2)
        assert two["loaded"] == ["Bn", "Dense_a", "Dense_b"]
        assert two["phase"] == [1, 1, 2, 2] and two["base_moved"]
        # 2 replicas sum their gradients in another order: float32 rounding only
        assert results[way]["max_weight_difference"] < 1e-6, results[way]
    assert results["callback"]["mirrored"]["phase1_frozen"] is True
    assert results["discriminative"]["mirrored"]["phase1_frozen"] is True
    assert results["fit_two_phase"]["mirrored"]["phase1_frozen"] is True


def test_gradual_unfreezing_opens_one_block_per_epoch_from_the_top(data):
    x, y = data
    model = randomize(tiny_model())
    model.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    snaps = Snapshots()
    callback = kt.GradualUnfreezing(blocks=[["Dense_a"], ["Bn", "Dense_b"]], start_epoch=1,
                                    learning_rates=[1e-2, 5e-3, 1e-3], verbose=0)
    history = model.fit(x, y, epochs=4, verbose=0, callbacks=[callback, snaps])
    assert history.history["unfrozen_blocks"] == [0, 1, 2, 2]
    np.testing.assert_allclose(history.history["lr"], [1e-2, 5e-3, 1e-3, 1e-3], rtol=1e-6)
    start = {v.path: v.numpy() for v in randomize(tiny_model()).weights}
    a, b = ["tiny/Dense_a/kernel"], ["tiny/Dense_b/kernel"]
    assert moved(start, snaps.at_end[0], a + b) == []          # head only
    assert moved(snaps.at_end[0], snaps.at_end[1], a + b) == b  # top block
    assert moved(snaps.at_end[1], snaps.at_end[2], a + b) == a + b
    assert moved(snaps.at_end[0], snaps.at_end[3], [p for p in start if "Bn" in p]) == []


def test_lora_phase_two_trains_only_adapters_and_head(data):
    x, y = data
    model = randomize(tiny_model())
    model.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    before = model.predict(x, verbose=0)
    snaps = Snapshots()
    counts, at_start = [], []

    class Count(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):  # after the schedule enabled LoRA
            at_start.append(keras.ops.convert_to_numpy(self.model(x, training=False)))

        def on_epoch_end(self, epoch, logs=None):
            counts.append(sum(int(np.prod(v.shape)) for v in self.model.trainable_weights))

    model.fit(x, y, epochs=3, verbose=0, callbacks=[
        kt.TwoPhaseSchedule(freeze=3, switch_epoch=1, lora_rank=2, verbose=0), snaps, Count()])
    layer = model.get_layer("Dense_a")
    assert layer.lora_enabled
    names = [v.path for v in model.weights]
    adapters = [p for p in names if "lora_kernel" in p]
    frozen = [p for p in names if ("Dense_" in p or "Bn" in p) and "lora" not in p]
    assert len(adapters) == 4
    assert moved(snaps.at_end[0], snaps.at_end[2], frozen) == []   # kernels, biases, BN
    assert moved(snaps.at_end[0], snaps.at_end[2], adapters) == adapters
    # trainable parameters: phase 1 the head (6*3+3); phase 2 + adapters 2*(4+8) + 2*(8+6)
    assert counts == [21, 21 + 24 + 28, 21 + 24 + 28]
    # LoRA starts as a zero update: enabling it does not change the model
    np.testing.assert_allclose(at_start[0], before, rtol=1e-6, atol=1e-6)


def test_lora_reaches_a_dense_layer_inside_a_plain_layer(data):
    # A Dense inside a block written as a keras.layers.Layer gets adapters too;
    # it was passed over, so phase 2 trained its whole kernel (found in review).
    x, y = data
    model = keras.Sequential([keras.Input((4,)), DenseBnBlock(name="block"),
                              keras.layers.Dense(3, name="head")])
    model.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    snaps = Snapshots()
    model.fit(x, y, epochs=2, verbose=0, callbacks=[
        kt.TwoPhaseSchedule(freeze=["block"], switch_epoch=1, lora_rank=2, verbose=0), snaps])
    dense = model.get_layer("block").dense
    assert dense.lora_enabled
    adapters = [v.path for v in (dense.lora_kernel_a, dense.lora_kernel_b)]
    whole = [v.path for v in dense.weights if "lora" not in v.path]  # kernel, bias
    assert len(whole) == 2
    assert moved(snaps.at_end[0], snaps.at_end[1], adapters + whole) == adapters


def test_head_train_batchnorm_trains_batchnorm_inside_the_frozen_base_in_phase_one(data):
    # fastai's train_bn for phase 1, at any depth (here inside a block written
    # as a keras.layers.Layer); phase 2 follows `train_batchnorm` on its own.
    x, y = data
    model = keras.Sequential([keras.Input((4,)), DenseBnBlock(name="block"),
                              keras.layers.Dense(3, name="head")])
    model.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    start = {v.path: v.numpy().copy() for v in model.weights}
    snaps = Snapshots()
    model.fit(x, y, epochs=2, verbose=0, callbacks=[
        kt.TwoPhaseSchedule(freeze=["block"], switch_epoch=1, head_train_batchnorm=True,
                            verbose=0), snaps])
    moved_paths = lambda a, b: sorted(  # noqa: E731
        p.split("/", 1)[1] for p in a if not np.array_equal(a[p], b[p]))
    assert moved_paths(start, snaps.at_end[0]) == [
        "block/bn/beta", "block/bn/gamma", "block/bn/moving_mean", "block/bn/moving_variance",
        "head/bias", "head/kernel"]
    assert moved_paths(snaps.at_end[0], snaps.at_end[1]) == [
        "block/dense/bias", "block/dense/kernel", "head/bias", "head/kernel"]


def test_a_lora_head_the_user_enabled_keeps_its_kernel_frozen(data):
    # The schedule flips layer flags to find every state's variables; Keras'
    # `trainable` setter resets variable flags, which undid LoRA on the head.
    x, y = data
    model = randomize(tiny_model())
    model.get_layer("Head").enable_lora(2)
    model.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    snaps = Snapshots()
    start = {v.path: v.numpy().copy() for v in model.weights}
    model.fit(x, y, epochs=2, verbose=0, callbacks=[
        kt.TwoPhaseSchedule(freeze=3, switch_epoch=1, verbose=0), snaps])
    head = {v.name: v.path for v in model.get_layer("Head").weights}
    assert moved(start, snaps.at_end[1], [head["kernel"]]) == []
    adapters = [head["lora_kernel_a"], head["lora_kernel_b"]]
    assert moved(start, snaps.at_end[1], adapters) == adapters


@pytest.mark.slow
@pytest.mark.jax_only
def test_two_phases_under_data_parallel_match_one_device(tmp_path):
    # keras.distribution.DataParallel on 2 virtual CPU devices, one process
    # per run of the job (the device count is fixed when JAX starts).
    job = os.path.join(os.path.dirname(__file__), "data_parallel_job.py")
    env = {**os.environ, "KERAS_BACKEND": "jax",
           "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    done = subprocess.run([sys.executable, job, str(tmp_path / "dp.json"),
                           "callback", "discriminative", "gradual"],
                          capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads((tmp_path / "dp.json").read_text())
    for mode in ("callback", "discriminative", "gradual"):
        one, two = results[mode]["one_device"], results[mode]["data_parallel"]
        assert two["devices"] == 2 and "NamedSharding" in two["kernel_sharding"]
        assert "SingleDeviceSharding" in one["kernel_sharding"]
        assert one["state"] == two["state"] == ([0, 0, 1, 2] if mode == "gradual" else [1, 1, 2, 2])
        assert two["phase1_frozen"] and two["base_moved"]
        np.testing.assert_allclose(two["loss"], one["loss"], rtol=1e-5)
        np.testing.assert_allclose(two["val_loss"], one["val_loss"], rtol=1e-5)
        # the 2 devices sum their gradients in another order: float32 rounding
        assert results[mode]["max_weight_difference"] < 1e-6, results[mode]


@pytest.mark.slow
@pytest.mark.jax_only
def test_two_phases_in_two_jax_processes_match_one_process(tmp_path):
    # jax.distributed on 127.0.0.1 (gloo collectives on CPU): two worker
    # processes, one device each, DataParallel over both.
    import socket

    job = os.path.join(os.path.dirname(__file__), "multiprocess_job.py")
    env = {**os.environ, "KERAS_BACKEND": "jax"}
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = str(s.getsockname()[1])
    workers = [subprocess.Popen([sys.executable, job, str(tmp_path / f"p{i}.json"), str(i), port],
                                env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for i in (0, 1)]
    single = subprocess.run([sys.executable, job, str(tmp_path / "single.json"), "single"],
                            env=env, capture_output=True, text=True, timeout=300)
    assert single.returncode == 0, single.stderr[-2000:]
    for worker in workers:
        _, err = worker.communicate(timeout=300)
        assert worker.returncode == 0, err[-3000:]
    one = json.loads((tmp_path / "single.json").read_text())
    for i in (0, 1):
        two = json.loads((tmp_path / f"p{i}.json").read_text())
        assert (two["processes"], two["devices"], one["processes"]) == (2, 2, 1)
        assert two["phase"] == [1, 1, 2, 2] and two["phase1_frozen"] and two["base_moved"]
        np.testing.assert_allclose(two["loss"], one["loss"], rtol=1e-5)
        for a, b in zip(two["weights"], one["weights"]):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_a_run_resumed_inside_a_lora_phase_goes_on_training_its_adapters(tmp_path, data):
    # Keras saves LoRA layers merged and restores both adapters as zeros,
    # whose gradients are zero: the schedule starts them again, and says so.
    x, y = data
    model = randomize(tiny_model())
    model.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))

    class Interrupt(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 2:
                raise RuntimeError("interrupted")

    def callbacks(*more):
        return [kt.TwoPhaseSchedule(freeze=3, switch_epoch=1, lora_rank=2, verbose=0),
                keras.callbacks.BackupAndRestore(str(tmp_path / "backup")), *more]

    with pytest.raises(RuntimeError, match="interrupted"):
        model.fit(x, y, epochs=5, verbose=0, callbacks=callbacks(Interrupt()))
    before = keras.ops.convert_to_numpy(model(x))
    adapters = {}

    class AtResume(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            layer = self.model.get_layer("Dense_a")
            adapters[epoch] = (layer.lora_kernel_a.numpy().copy(), layer.lora_kernel_b.numpy().copy())
            if epoch == 3:  # the restored model computes what the interrupted one did
                np.testing.assert_allclose(keras.ops.convert_to_numpy(self.model(x)), before, rtol=1e-5, atol=1e-5)

    with pytest.warns(UserWarning, match=r"LoRA adapters of \[.*'Dense_a'.*\] were restored merged"):
        model.fit(x, y, epochs=5, verbose=0, callbacks=callbacks(AtResume()))
    a3, b3 = adapters[3]
    assert np.any(a3) and not np.any(b3)  # started again: A random, B zero
    a4, b4 = adapters[4]
    assert np.any(b4) and not np.array_equal(a4, a3)  # and they train


def test_mixed_precision_two_phases_with_a_schedule_then_a_rate(data):
    # A LossScaleOptimizer holds the learning rate in its inner optimizer.
    x, y = data
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model = randomize(tiny_model())
        model.compile(optimizer=keras.optimizers.Adam(1e-2),
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
        snaps = Snapshots()
        start = {v.path: v.numpy().copy() for v in model.weights}
        cosine = keras.optimizers.schedules.CosineDecay(1e-2, decay_steps=10)
        history = model.fit(x, y, batch_size=16, epochs=3, verbose=0, callbacks=[
            kt.TwoPhaseSchedule(freeze=3, switch_epoch=1, head_lr=cosine, finetune_lr=1e-4,
                                verbose=0), snaps])
    finally:
        keras.mixed_precision.set_global_policy("float32")
    # dynamic loss scaling skips the steps whose float16 gradients overflow, and
    # the schedule follows the inner optimizer's count of the steps taken
    np.testing.assert_allclose(history.history["lr"],
                               [float(cosine(snaps.inner_steps[0])), 1e-4, 1e-4], rtol=1e-5)
    assert 0 < snaps.inner_steps[0] <= 4
    base = [p for p in base_paths(model) if "Bn" not in p]
    assert moved(start, snaps.at_end[0], base) == []
    assert moved(snaps.at_end[0], snaps.at_end[2], base) == base


# -- Ports of Lightning's fine-tuning callback tests (and fastai's freeze tests) --

LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


class GroupRates(keras.callbacks.Callback):
    """Records a DiscriminativeOptimizer's group learning rates at each epoch's first batch."""

    def __init__(self):
        super().__init__()
        self.rates = []

    def on_train_batch_begin(self, batch, logs=None):
        if batch == 0:
            self.rates.append(self.model.optimizer.group_learning_rates())


# Port of Lightning's test_finetuning_callback
# (tests/tests_pytorch/callbacks/test_finetuning_callback.py): BackboneFinetuning
# leaves the backbone frozen until `unfreeze_backbone_at_epoch`, then trains it
# at a ratio of the head's learning rate. Ours: TwoPhaseSchedule with a
# discriminative optimizer whose base group runs at 0.1 x the head. Plain Keras
# by hand (freeze, compile SGD, fit; unfreeze, compile a MultiOptimizer with the
# base at a tenth of the rate, fit on) must log the same per-batch losses and
# end with the same weights: the ratio is what the base's updates use.
def test_backbone_frozen_until_the_switch_then_trains_at_its_ratio_of_the_head_rate(data):
    x, y = data
    base = ["Dense_a", "Bn", "Dense_b"]
    by_hand, by_hand_losses = randomize(tiny_model()), BatchLosses()
    for layer in by_hand.layers[:3]:
        layer.trainable = False
    by_hand.compile(optimizer=keras.optimizers.SGD(0.1), loss=LOSS)
    by_hand.fit(x, y, batch_size=16, epochs=2, shuffle=False, verbose=0, callbacks=[by_hand_losses])
    by_hand.get_layer("Dense_a").trainable = by_hand.get_layer("Dense_b").trainable = True
    slow = keras.optimizers.SGD(0.005)
    by_hand.compile(loss=LOSS, optimizer=keras.optimizers.MultiOptimizer(
        keras.optimizers.OptimizerMap(keras.optimizers.SGD(0.05),
                                      {"tiny/Dense_a/.*": slow, "tiny/Dense_b/.*": slow})))
    by_hand.fit(x, y, batch_size=16, epochs=4, initial_epoch=2, shuffle=False, verbose=0,
                callbacks=[by_hand_losses])

    ours, losses, rates = randomize(tiny_model()), BatchLosses(), GroupRates()
    ours.compile(loss=LOSS, optimizer=kt.discriminative_optimizer(
        ours, groups=[base], learning_rate=0.1, multipliers=[0.1], optimizer="sgd"))
    start = {v.path: v.numpy().copy() for v in ours.weights}
    snaps = Snapshots()
    ours.fit(x, y, batch_size=16, epochs=4, shuffle=False, verbose=0, callbacks=[
        kt.TwoPhaseSchedule(freeze=3, switch_epoch=2, head_lr=0.1, finetune_lr=0.05, verbose=0),
        losses, rates, snaps])
    paths = base_paths(ours)
    assert moved(start, snaps.at_end[1], paths) == []  # frozen up to the switch
    assert moved(snaps.at_end[1], snaps.at_end[2], paths) == [p for p in paths if "Bn" not in p]
    assert len(rates.rates) == 4
    for got, head in zip(rates.rates, [0.1, 0.1, 0.05, 0.05]):
        assert got.keys() == {"head", "group_0"}
        np.testing.assert_allclose([got["head"], got["group_0"]], [head, head * 0.1], rtol=1e-6)
    assert len(losses.losses) == len(by_hand_losses.losses) == 16
    np.testing.assert_allclose(losses.losses, by_hand_losses.losses, rtol=1e-5)
    for a, b in zip(ours.weights, by_hand.weights):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-6, err_msg=a.path)


def momentum_slots(optimizer):
    """The variables an SGD optimizer holds a momentum slot for, by name."""
    return sorted(v.path.split("/")[-1].removesuffix("_momentum")
                  for v in optimizer.variables if v.path.endswith("_momentum"))


# Port of Lightning's test_unfreeze_and_add_param_group_function and of the
# already-in-the-optimizer half of test_finetuning_callback_warning
# (tests/tests_pytorch/callbacks/test_finetuning_callback.py): unfreezing adds
# the backbone's parameters to the optimizer once, without BatchNorm's unless
# train_bn; parameters the optimizer already holds are not added again. Ours:
# an optimizer built over the head alone ends up with one slot per variable
# that trains in some phase, no more on a second `fit`; one built over every
# variable is kept as it is (same object, no slot added, the frozen BN's slots
# never stepped).
@pytest.mark.parametrize("train_batchnorm", [False, True])
def test_the_optimizer_holds_each_variable_that_will_train_exactly_once(data, train_batchnorm):
    x, y = data
    model = randomize(tiny_model())
    kt.freeze(model, upto=3)
    model.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9), loss=LOSS)
    model.fit(x, y, epochs=1, verbose=0)  # builds the optimizer over the head only
    assert momentum_slots(model.optimizer) == ["tiny_Head_bias", "tiny_Head_kernel"]
    schedule = kt.TwoPhaseSchedule(freeze=3, switch_epoch=1, head_lr=0.01, finetune_lr=0.01,
                                   train_batchnorm=train_batchnorm, verbose=0)
    model.fit(x, y, epochs=2, verbose=0, callbacks=[schedule])
    expected = ["tiny_Dense_a_bias", "tiny_Dense_a_kernel", "tiny_Dense_b_bias",
                "tiny_Dense_b_kernel", "tiny_Head_bias", "tiny_Head_kernel"]
    if train_batchnorm:
        expected += ["tiny_Bn_beta", "tiny_Bn_gamma"]
    assert momentum_slots(model.optimizer) == sorted(expected)
    optimizer, layout = model.optimizer, [v.path for v in model.optimizer.variables]
    model.fit(x, y, epochs=3, initial_epoch=2, verbose=0, callbacks=[schedule])  # nothing added
    assert model.optimizer is optimizer and [v.path for v in optimizer.variables] == layout

    # the user's optimizer already holds every variable, BatchNormalization's included
    model = randomize(tiny_model())
    model.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9), loss=LOSS)
    model.fit(x, y, epochs=1, verbose=0)
    optimizer = model.optimizer
    before = {v.path: v.numpy().copy() for v in optimizer.variables}
    model.fit(x, y, epochs=2, verbose=0, callbacks=[
        kt.TwoPhaseSchedule(freeze=3, switch_epoch=1, train_batchnorm=train_batchnorm, verbose=0)])
    assert model.optimizer is optimizer
    assert [v.path for v in optimizer.variables] == list(before)
    bn_slots = [p for p in before if "_Bn_" in p]
    assert len(bn_slots) == 2
    stepped = [v.path for v in optimizer.variables
               if v.path in bn_slots and not np.array_equal(before[v.path], v.numpy())]
    assert stepped == (bn_slots if train_batchnorm else [])


def stacked_layers():
    # Lightning's FreezeModel of that test, shorter: Linear layers, biases alternating
    return keras.Sequential(
        [keras.Input((4,))]
        + [keras.layers.Dense(4, use_bias=i % 2 == 1, name=f"L{i}") for i in range(3)]
        + [keras.layers.Dense(3, name="Head")], name="stack")


class Trainables(keras.callbacks.Callback):
    """Records the trainable variables' paths and the optimizer's variables at each epoch end."""

    def __init__(self):
        super().__init__()
        self.paths, self.optimizer_variables = [], []

    def on_epoch_end(self, epoch, logs=None):
        self.paths.append([v.path for v in self.model.trainable_variables])
        self.optimizer_variables.append([id(v) for v in self.model.optimizer.variables])


# Port of Lightning's test_base_finetuning_internal_optimizer_metadata (its
# older name: test_base_finetuning_internal_state),
# tests/tests_pytorch/callbacks/test_finetuning_callback.py: a callback that
# unfreezes one layer per epoch adds exactly that layer's parameters each time
# (weight, or weight and bias), and its record survives a restart from a
# checkpoint; resumed past the last layer, Lightning's fails with IndexError.
# Ours: GradualUnfreezing adds exactly one block's variables per epoch, from
# the top, over one optimizer layout for the whole run; past the last block
# it stays with everything unfrozen; a run interrupted and resumed with
# BackupAndRestore (fresh model, optimizer and callback, as a new process
# would have) enters the right state and ends where an uninterrupted run does.
def test_gradual_unfreezing_adds_one_block_per_epoch_and_resumes_in_its_state(tmp_path, data):
    x, y = data
    blocks = [[f"L{i}"] for i in range(3)]

    def run(*more, backup=None):
        model = randomize(stacked_layers())
        kt.freeze(model, upto=3)  # before compile, as usual: the optimizer is built over the head
        model.compile(optimizer=keras.optimizers.Adam(1e-2), loss=LOSS)
        callback = kt.GradualUnfreezing(blocks=blocks, start_epoch=1, verbose=0)
        restore = [keras.callbacks.BackupAndRestore(str(backup))] if backup else []
        history = model.fit(x, y, batch_size=32, epochs=5, shuffle=False, verbose=0,
                            callbacks=[*restore, callback, *more])
        return model, callback, history

    record = Trainables()
    straight, callback, history = run(record)
    assert history.history["unfrozen_blocks"] == [0, 1, 2, 3, 3]
    assert callback.history == [(e, e) for e in range(4)]
    added = [sorted(set(now) - set(before)) for before, now in zip(record.paths, record.paths[1:])]
    assert record.paths[0] == ["stack/Head/kernel", "stack/Head/bias"]
    assert added == [["stack/L2/kernel"], ["stack/L1/bias", "stack/L1/kernel"],
                     ["stack/L0/kernel"], []]
    assert all(ids == record.optimizer_variables[0] for ids in record.optimizer_variables)
    assert len(record.optimizer_variables[0]) == 2 + 2 * 6  # step count, rate; m and v per weight

    with pytest.raises(KeyboardInterrupt):
        run(Interrupt(at=3), backup=tmp_path / "backup")  # resumed inside the last state
    resumed, callback, history = run(backup=tmp_path / "backup")
    assert callback.history == [(4, 3)]
    assert history.history["unfrozen_blocks"] == [3]
    for a, b in zip(resumed.weights + resumed.optimizer.variables,
                    straight.weights + straight.optimizer.variables):
        np.testing.assert_allclose(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b),
                                   rtol=1e-5, atol=1e-6, err_msg=a.path)


# Port of Lightning's test_callbacks_restore and test_callbacks_restore_backbone
# (tests/tests_pytorch/callbacks/test_finetuning_callback.py): a run resumed
# from a checkpoint written after the unfreeze gets the callback's param groups
# back (the head's at 0.1, the backbone's at 0.01) before the optimizer's state
# loads, also in a new Trainer with a new model. Ours: TwoPhaseSchedule with a
# discriminative Adam, BackupAndRestore listed before it, interrupted in
# phase 2 and resumed by a fresh model, optimizer and callback: the checkpoint
# loads whole (no "Skipping variable loading"), each group runs at its phase-2
# rate, and the run ends where an uninterrupted one does.
def test_a_run_resumed_in_phase_two_restores_the_group_rates_and_optimizer_state(tmp_path, data):
    x, y = data

    def run(*more, backup=None):
        model = randomize(tiny_model())
        kt.freeze(model, upto=3)  # before compile, as usual: the optimizer is built over the head
        model.compile(loss=LOSS, optimizer=kt.discriminative_optimizer(
            model, groups=[3], learning_rate=1e-2, multipliers=[0.1]))
        schedule = kt.TwoPhaseSchedule(freeze=3, switch_epoch=1, head_lr=1e-2, finetune_lr=1e-3,
                                       verbose=0)
        restore = [keras.callbacks.BackupAndRestore(str(backup))] if backup else []
        rates = GroupRates()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            model.fit(x, y, batch_size=16, epochs=4, shuffle=False, verbose=0,
                      callbacks=[*restore, schedule, rates, *more])
        return model, schedule, rates.rates, [str(w.message) for w in caught]

    straight, _, straight_rates, _ = run()
    with pytest.raises(KeyboardInterrupt):
        run(Interrupt(at=2), backup=tmp_path / "backup")
    resumed, schedule, rates, caught = run(backup=tmp_path / "backup")
    assert not [w for w in caught if "Skipping variable loading" in w]
    assert schedule.history == [(3, 2)]
    assert len(rates) == 1
    np.testing.assert_allclose([rates[0]["head"], rates[0]["group_0"]], [1e-3, 1e-4], rtol=1e-6)
    assert rates[0] == straight_rates[3]
    for a, b in zip(resumed.weights + resumed.optimizer.variables,
                    straight.weights + straight.optimizer.variables):
        np.testing.assert_allclose(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b),
                                   rtol=1e-5, atol=1e-6, err_msg=a.path)


# Port of fastai's freeze / freeze_to / unfreeze test with train_bn=False
# (nbs/13a_learner.ipynb, "Transfer learning"): with plain SGD, frozen groups
# (BatchNorm's included) do not move, and each group unfrozen by freeze_to
# takes exactly the SGD step. Ours: GradualUnfreezing with BatchNormalization
# as a block of its own and train_batchnorm=True, against plain Keras setting
# the flags by hand and compiling again: same per-batch losses, same weights
# and moving statistics at every epoch end (BN in training mode from the epoch
# its block opens, in inference mode, statistics untouched, before).
def test_blocks_with_batchnorm_train_as_plain_keras_unfreezing_by_hand(data):
    x, y = data
    plan = [(0, []), (1, ["Bn"]), (2, ["Bn", "Dense_a"])]  # layers of the base trainable
    by_hand, by_hand_losses, by_hand_snaps = randomize(tiny_model()), BatchLosses(), Snapshots()
    for i, (first, trainable) in enumerate(plan):
        for name in ("Dense_a", "Bn"):
            by_hand.get_layer(name).trainable = name in trainable
        by_hand.compile(optimizer=keras.optimizers.SGD(0.1), loss=LOSS)
        by_hand.fit(x, y, batch_size=16, epochs=plan[i + 1][0] if i + 1 < len(plan) else 4,
                    initial_epoch=first, shuffle=False, verbose=0,
                    callbacks=[by_hand_losses, by_hand_snaps])

    ours, losses, snaps = randomize(tiny_model()), BatchLosses(), Snapshots()
    ours.compile(optimizer=keras.optimizers.SGD(0.1), loss=LOSS)
    start = {v.path: v.numpy().copy() for v in ours.weights}
    ours.fit(x, y, batch_size=16, epochs=4, shuffle=False, verbose=0, callbacks=[
        kt.GradualUnfreezing(blocks=[["Dense_a"], ["Bn"]], start_epoch=1, train_batchnorm=True,
                             verbose=0), losses, snaps])
    bn = [v.path for v in ours.get_layer("Bn").weights]
    dense_a = [v.path for v in ours.get_layer("Dense_a").weights]
    assert moved(start, snaps.at_end[0], bn + dense_a) == []
    assert moved(snaps.at_end[0], snaps.at_end[1], bn + dense_a) == bn  # moving stats too
    assert moved(snaps.at_end[1], snaps.at_end[2], dense_a) == dense_a
    np.testing.assert_allclose(losses.losses, by_hand_losses.losses, rtol=1e-5)
    for ours_end, by_hand_end in zip(snaps.at_end, by_hand_snaps.at_end):
        for path, value in ours_end.items():
            np.testing.assert_allclose(value, by_hand_end[path], rtol=1e-5, atol=1e-6, err_msg=path)


# Port of the warning half of Lightning's test_finetuning_callback_warning
# (tests/tests_pytorch/callbacks/test_finetuning_callback.py): where the
# callback cannot do exactly what was asked it says so and training goes on;
# a configuration that cannot work is refused. Ours: a run starting inside
# phase 2 continues the phase's schedule when the steps per epoch are known,
# and warns and restarts it when they are not (a generator); a `freeze`
# naming no layer of the model is refused before any weight moves.
@pytest.mark.filterwarnings("ignore:Your input ran out of data")
def test_misuse_warns_or_is_refused_before_training(data):
    x, y = data
    decay = keras.optimizers.schedules.ExponentialDecay(1e-2, decay_steps=1, decay_rate=0.5)

    def first_rate(inputs, **fit_args):
        model = randomize(tiny_model())
        model.compile(optimizer="sgd", loss=LOSS)
        rates = []

        class Rates(keras.callbacks.Callback):  # a LambdaCallback sees no model state on JAX
            def on_train_batch_begin(self, batch, logs=None):
                rates.append(float(self.model.optimizer.learning_rate))

        model.fit(inputs, epochs=4, initial_epoch=3, verbose=0, callbacks=[
            kt.TwoPhaseSchedule(freeze=3, switch_epoch=2, finetune_lr=decay, verbose=0), Rates()],
            **fit_args)
        return rates[0]

    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # known steps: no warning
        # but JAX's own, if a shared compilation cache entry (scripts/test.sh)
        # is read while another process writes it: JAX then compiles instead
        warnings.filterwarnings("ignore", "Error (reading|writing) persistent compilation cache")
        # 4 steps per epoch: epoch 4 is the phase's second, its schedule at step 4
        np.testing.assert_allclose(first_rate(x, y=y, batch_size=16), 1e-2 * 0.5 ** 4, rtol=1e-6)

    def batches():
        for i in range(0, 64, 16):
            yield x[i:i + 16], y[i:i + 16]

    with pytest.warns(UserWarning, match="number of steps per epoch is unknown"):
        np.testing.assert_allclose(first_rate(batches(), shuffle=False), 1e-2, rtol=1e-6)

    model = randomize(tiny_model())
    model.compile(optimizer="adam", loss=LOSS)
    start = [v.numpy().copy() for v in model.weights]
    with pytest.raises(kt.LayerSelectionError, match="No layer named 'Backbone'"):
        model.fit(x, y, epochs=2, verbose=0, callbacks=[
            kt.TwoPhaseSchedule(freeze=["Backbone"], switch_epoch=1, verbose=0)])
    for before, v in zip(start, model.weights):
        np.testing.assert_array_equal(v.numpy(), before, err_msg=v.path)
