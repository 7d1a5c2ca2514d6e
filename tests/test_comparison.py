import pytest

import keras_transfer as kt
from keras_transfer import comparison


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
