import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

import keras_transfer as kt
from helpers import randomize, tiny_model


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
        kt.freeze(by_hand, upto=3)
        if trainable:
            kt.unfreeze(by_hand, layers=trainable)
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
