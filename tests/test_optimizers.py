import keras
import numpy as np
import pytest

import keras_transfer as kt
from helpers import randomize, tiny_model

LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)



def deltas(model, before):
    now = {v.path: v.numpy() for v in model.weights}
    return {p: now[p] - before[p] for p in before}


def test_each_group_moves_at_its_own_rate_with_sgd(data):
    x, y = data
    plain = randomize(tiny_model())
    plain.compile(optimizer=keras.optimizers.SGD(0.1), loss=LOSS)
    before = {v.path: v.numpy().copy() for v in plain.trainable_weights}
    plain.train_on_batch(x, y)
    step = deltas(plain, before)

    model = randomize(tiny_model())
    opt = kt.discriminative_optimizer(model, groups=[["Dense_a"], ["Bn", "Dense_b"]],
                                      learning_rate=0.1, multipliers=[0.25, 0.5], optimizer="sgd")
    model.compile(optimizer=opt, loss=LOSS)
    model.train_on_batch(x, y)
    ours = deltas(model, before)
    for path, factor in [("tiny/Dense_a/kernel", 0.25), ("tiny/Dense_b/kernel", 0.5),
                         ("tiny/Bn/gamma", 0.5), ("tiny/Head/kernel", 1.0)]:
        # exact up to float32 rounding of (w - update) - w, about 1e-7 for |w| ~ 1
        np.testing.assert_allclose(ours[path], factor * step[path], rtol=1e-4, atol=2.5e-7)
        assert np.abs(step[path]).max() > 1e-4  # the updates are far above rounding
    assert opt.group_learning_rates() == pytest.approx({"head": 0.1, "group_0": 0.025, "group_1": 0.05})


def test_decay_gives_ulmfit_rates():
    model = tiny_model()
    opt = kt.discriminative_optimizer(model, groups=[["Dense_a"], ["Dense_b"]],
                                      learning_rate=1e-2, decay=1 / 2.6)
    assert opt.group_learning_rates() == pytest.approx(
        {"head": 1e-2, "group_1": 1e-2 / 2.6, "group_0": 1e-2 / 2.6 ** 2})
    with pytest.raises(ValueError, match="exactly one"):
        kt.discriminative_optimizer(model, groups=[["Dense_a"]], learning_rate=1e-2)


@pytest.mark.parametrize("jit_compile", [False, True])
def test_two_phase_switch_keeps_the_ratios_and_a_frozen_group_does_not_step(data, jit_compile):
    x, y = data
    model = randomize(tiny_model())
    opt = kt.discriminative_optimizer(model, groups=[["Dense_a", "Bn", "Dense_b"]],
                                      learning_rate=1e-2, multipliers=[0.1])
    model.compile(optimizer=opt, loss=LOSS, jit_compile=jit_compile)
    rates, kernels = [], []

    class Watch(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            rates.append(self.model.optimizer.group_learning_rates())
            kernels.append(self.model.get_layer("Dense_a").kernel.numpy().copy())

    start = model.get_layer("Dense_a").kernel.numpy().copy()
    history = model.fit(x, y, epochs=3, batch_size=16, verbose=0, callbacks=[
        kt.TwoPhaseSchedule(freeze=3, switch_epoch=1, head_lr=1e-2, finetune_lr=1e-3, verbose=0),
        Watch()])
    assert rates[0] == pytest.approx({"head": 1e-2, "group_0": 1e-3})
    assert rates[2] == pytest.approx({"head": 1e-3, "group_0": 1e-4})
    np.testing.assert_allclose(history.history["lr"], [1e-2, 1e-3, 1e-3], rtol=1e-6)
    np.testing.assert_array_equal(kernels[0], start)
    assert not np.array_equal(kernels[2], start)
    group = next(o for o in model.optimizer.optimizers if o.name == "group_0")
    assert int(group.iterations) == 2 * 4  # steps only in phase 2: its own bias correction


def test_saves_and_loads_with_the_model(tmp_path, data):
    x, y = data
    model = randomize(tiny_model())
    model.compile(optimizer=kt.discriminative_optimizer(
        model, groups=[["Dense_a"]], learning_rate=1e-2, multipliers=[0.1]), loss=LOSS)
    model.fit(x, y, epochs=1, verbose=0)
    model.save(tmp_path / "m.keras")
    again = keras.saving.load_model(tmp_path / "m.keras")
    assert isinstance(again.optimizer, kt.DiscriminativeOptimizer)
    assert again.optimizer.group_learning_rates() == pytest.approx({"head": 1e-2, "group_0": 1e-3})
    np.testing.assert_allclose(again.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-6)
    old, new = model.optimizer.variables, again.optimizer.variables
    assert len(old) == len(new) > 10  # (slot names follow the model's variable paths)
    for a, b in zip(old, new):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.path)


def test_fit_two_phase_takes_a_discriminative_optimizer_and_lora(data):
    x, y = data
    model = randomize(tiny_model())
    opt = kt.discriminative_optimizer(model, groups=[["Dense_a", "Bn", "Dense_b"]],
                                      learning_rate=1e-2, multipliers=[0.1])
    history = kt.fit_two_phase(model, (x, y), freeze=3, head_epochs=1, epochs=2, optimizer=opt,
                               head_lr=1e-2, finetune_lr=1e-3, loss=LOSS, metrics=(), verbose=0,
                               lora_rank=2)
    assert history.history["phase"] == [1, 2]
    np.testing.assert_allclose(history.history["lr"], [1e-2, 1e-3], rtol=1e-6)
    assert model.optimizer.group_learning_rates() == pytest.approx({"head": 1e-3, "group_0": 1e-4})
    trainable = sorted(v.path.split("/")[-1] for v in model.trainable_weights)
    assert trainable == ["bias", "kernel", "lora_kernel_a", "lora_kernel_a",
                         "lora_kernel_b", "lora_kernel_b"]  # the head, and adapters only


def test_a_schedule_is_scaled_per_group_and_survives_save_and_load(tmp_path, data):
    x, y = data
    model = randomize(tiny_model())
    decay = keras.optimizers.schedules.ExponentialDecay(1e-2, decay_steps=1, decay_rate=0.5)
    opt = kt.discriminative_optimizer(model, groups=[["Dense_a"]], learning_rate=decay,
                                      multipliers=[0.1])
    model.compile(optimizer=opt, loss=LOSS)
    model.fit(x, y, epochs=1, batch_size=32, verbose=0)  # 2 steps: rate 1e-2 * 0.5**2
    assert opt.group_learning_rates() == pytest.approx({"head": 2.5e-3, "group_0": 2.5e-4})
    model.save(tmp_path / "m.keras")
    again = keras.saving.load_model(tmp_path / "m.keras")
    assert again.optimizer.group_learning_rates() == pytest.approx({"head": 2.5e-3, "group_0": 2.5e-4})


def test_lora_adapters_made_by_the_schedule_train_in_their_layers_group(data):
    # Groups are fixed when the optimizer is made, before `lora_rank=` creates
    # the adapters at train begin: they must still join their layer's group.
    x, y = data
    model = randomize(tiny_model())
    opt = kt.discriminative_optimizer(model, groups=[["Dense_a", "Bn", "Dense_b"]],
                                      learning_rate=1e-2, multipliers=[0.1])
    model.compile(optimizer=opt, loss=LOSS)
    model.fit(x, y, epochs=2, batch_size=16, verbose=0, callbacks=[
        kt.TwoPhaseSchedule(freeze=3, switch_epoch=1, lora_rank=2, verbose=0)])
    groups = {o.name: o for o in model.optimizer.optimizers}

    def lora_slots(optimizer):
        return sorted(v.name for v in optimizer.variables if "lora" in v.name)

    assert lora_slots(groups["head"]) == []
    assert lora_slots(groups["group_0"]) == sorted(
        f"tiny_{layer}_lora_kernel_{ab}_{slot}" for layer in ("Dense_a", "Dense_b")
        for ab in "ab" for slot in ("momentum", "velocity"))
    assert int(groups["group_0"].iterations) == 4  # phase 2 only: 64 images / 16
    assert int(groups["head"].iterations) == 8
