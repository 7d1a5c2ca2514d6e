import keras
import numpy as np
import pytest

import keras_transfer as kt
from helpers import Interrupt
from keras_transfer.pipeline import comparison


def test_plotting_an_arm_without_validation_is_a_transfer_error(tmp_path):
    arms = {"transfer": {"history": {"val_accuracy": [0.5, 0.6], "val_loss": [1.0, 0.9]}},
            "scratch": {"history": {"accuracy": [0.5, 0.6], "loss": [1.0, 0.9]}}}
    with pytest.raises(ValueError, match=r"Arm 'scratch' has no \['val_accuracy', 'val_loss'\]") as err:
        comparison.plot_comparison(arms, 1, tmp_path / "plot.png")
    assert isinstance(err.value, kt.ArgumentError)
    assert not (tmp_path / "plot.png").exists()
    del arms["scratch"]
    comparison.plot_comparison(arms, 1, tmp_path / "plot.png")
    assert (tmp_path / "plot.png").read_bytes()[:4] == b"\x89PNG"


def dropout_model():
    keras.utils.set_random_seed(0)
    return keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, name="Base"),
                             keras.layers.Dropout(0.5, name="Dropout"),
                             keras.layers.Dense(3, name="Head")])


def fit(model, backup, record, interrupt_at=None):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 4)).astype("float32")
    y = (x[:, 0] > 0).astype("int32") + (x[:, 1] > 0)
    model.compile(optimizer=keras.optimizers.Adam(1e-2),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    probe = comparison.PhaseProbe(["Base"], 2, record=record)
    callbacks = [kt.TwoPhaseSchedule(freeze=["Base"], switch_epoch=2, verbose=0), probe,
                 keras.callbacks.BackupAndRestore(str(backup))]
    if interrupt_at is not None:
        callbacks.append(Interrupt(interrupt_at))
    model.fit(x, y, batch_size=16, epochs=4, shuffle=False, verbose=0, callbacks=callbacks)
    return probe


@pytest.mark.parametrize("interrupt_at", [0, 2])  # in phase 1; in phase 2
def test_a_resumed_arm_reports_and_draws_like_an_uninterrupted_one(tmp_path, interrupt_at):
    whole = dropout_model()
    probe = fit(whole, tmp_path / "whole", tmp_path / "whole.json")
    assert probe.history["phase"] == [1, 1, 2, 2] and probe.frozen_max_change == 0.0
    assert probe.frozen_layers == ["Base"]

    for record in (tmp_path / "record.json", None):
        backup = tmp_path / f"backup_{record is None}"
        with pytest.raises(KeyboardInterrupt):
            fit(dropout_model(), backup, record, interrupt_at=interrupt_at)
        resumed_model = dropout_model()
        resumed = fit(resumed_model, backup, record)
        same = all(np.array_equal(a, b) for a, b in
                   zip(whole.get_weights(), resumed_model.get_weights()))
        if record is None:
            # Keras' BackupAndRestore alone does not keep the dropout's seed
            # state: the resumed epochs draw other masks. If this fails, Keras
            # keeps it now and PhaseProbe's seed states can go.
            assert not same
            continue
        assert same
        assert resumed.history == probe.history
        assert resumed.frozen_max_change == 0.0
        assert set(resumed.seconds) == {"phase1", "phase2"}


def test_the_probe_watches_the_layers_of_a_nested_base_that_phase_1_froze():
    # fine_tune freezes a nested base's layers, not the container, and leaves
    # BatchNormalization trainable: the probe watches the frozen kernels, and
    # a change in one of them shows.
    keras.utils.set_random_seed(0)
    base = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, name="Inner"),
                             keras.layers.BatchNormalization(name="Norm")], name="base")
    model = keras.Sequential([keras.Input((4,)), base, keras.layers.Dense(3, name="Head")])
    kt.freeze(model, layers=["Inner"])
    probe = comparison.PhaseProbe(["base"], 1)
    probe.set_model(model)
    probe.on_train_begin()
    probe.on_epoch_begin(0)
    assert probe.frozen_layers == ["Inner"]
    kernel = model.get_layer("base").get_layer("Inner").kernel
    kernel.assign(kernel.numpy() + 0.25)
    probe.on_epoch_end(0)
    assert probe.frozen_max_change == pytest.approx(0.25)


@pytest.mark.parametrize("sweep_phase2", [False, True])
def test_a_fine_tune_arm_records_each_phases_peak_and_sweep(tmp_path, sweep_phase2):
    import tensorflow as tf

    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 4)).astype("float32")
    y = ((x[:, 0] > 0).astype("int32") + (x[:, 1] > 0)).astype("int32")
    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(16)
    arm = comparison.run_fine_tune_arm(
        dropout_model(), data, validation=data, test=data, train_eval=data, scratch=False,
        epochs=3, freeze_epochs=1, freeze=["Base"], verbose=0, base_lr=1e-2,
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        finder={"num_steps": 12}, sweep_phase2=sweep_phase2, backup_dir=tmp_path / "backup")
    assert arm["base_lr"] == 1e-2 and "learning_rate_curve" not in arm  # base_lr given
    if sweep_phase2:
        curve = arm["phase2_learning_rate_curve"]
        assert len(curve["learning_rates"]) == 12 and curve["method"] == "minimum"
        assert arm["finetune_lr"] == curve["suggestion"]
    else:
        assert arm["finetune_lr"] == 1e-2 and "phase2_learning_rate_curve" not in arm
    # the recorded peak is the one phase 2 ran: its one-cycle over 8 steps (4 an
    # epoch), read after each phase-2 epoch
    cycle = kt.OneCycle(arm["finetune_lr"], total_steps=8, pct_start=0.3, div=5.0, final_div=1e5)
    np.testing.assert_allclose(arm["history"]["lr"][1:],
                               [float(cycle(4)), float(cycle(8))], rtol=1e-5)
