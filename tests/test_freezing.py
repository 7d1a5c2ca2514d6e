import keras
import numpy as np
import pytest

import keras_transfer as kt
from helpers import tiny_base, tiny_model


def trainable_names(model):
    return sorted({v.path.split("/")[-2] for v in model.trainable_weights})


def nested():
    base = keras.Sequential([keras.Input((4,)), *tiny_base()], name="base")
    return keras.Sequential([keras.Input((4,)), base, keras.layers.Dense(3, name="Head")])


def test_freeze_by_index_name_and_pattern():
    model = tiny_model()
    kt.freeze(model, upto=2)
    assert trainable_names(model) == ["Dense_b", "Head"]
    kt.unfreeze(model, train_batchnorm=True)
    kt.freeze(model, layers=["Dense_b", model.get_layer("Head")])
    assert trainable_names(model) == ["Bn", "Dense_a"]
    kt.unfreeze(model, train_batchnorm=True)
    kt.freeze(model, pattern="Dense_.")
    assert trainable_names(model) == ["Bn", "Head"]


def test_spec_shorthand_picks_the_selector():
    model = tiny_model()
    assert [l.name for l in kt.select_layers(model, 2)] == ["Dense_a", "Bn"]
    assert kt.select_layers(model, np.int64(2)) == kt.select_layers(model, 2)  # numpy counts
    assert [l.name for l in kt.select_layers(model, "Dense_.*")] == ["Dense_a", "Dense_b"]
    assert [l.name for l in kt.select_layers(model, ["Head"])] == ["Head"]


def test_unfreeze_keeps_batchnorm_in_inference_mode_unless_asked():
    model = tiny_model()
    kt.freeze(model)
    assert model.trainable_weights == []
    kt.unfreeze(model)
    assert not model.get_layer("Bn").trainable
    assert trainable_names(model) == ["Dense_a", "Dense_b", "Head"]
    kt.unfreeze(model, train_batchnorm=True)
    assert trainable_names(model) == ["Bn", "Dense_a", "Dense_b", "Head"]


def test_names_and_patterns_reach_into_nested_models():
    model = nested()
    kt.freeze(model, layers=["Dense_a"])
    assert trainable_names(model) == ["Bn", "Dense_b", "Head"]
    kt.freeze(model, upto=1)  # the whole base
    assert trainable_names(model) == ["Head"]
    # unfreezing one inner layer turns its container on, not its siblings
    kt.unfreeze(model, layers=["Dense_b"])
    assert trainable_names(model) == ["Dense_b", "Head"]
    kt.unfreeze(model, upto=1)
    assert trainable_names(model) == ["Dense_a", "Dense_b", "Head"]
    # patterns match names at any depth: both Dense layers of the nested base
    kt.unfreeze(model, train_batchnorm=True)
    assert [l.name for l in kt.freeze(model, pattern="Dense_.")] == ["Dense_a", "Dense_b"]
    assert trainable_names(model) == ["Bn", "Head"]
    kt.freeze(model, upto=1)
    assert [l.name for l in kt.unfreeze(model, pattern=r"Dense_b|Bn", train_batchnorm=True)] == [
        "Bn", "Dense_b"]
    assert trainable_names(model) == ["Bn", "Dense_b", "Head"]


def test_bad_selectors_raise_clear_errors():
    model = tiny_model()
    with pytest.raises(kt.LayerSelectionError, match="out of range"):
        kt.freeze(model, upto=9)
    with pytest.raises(kt.LayerSelectionError, match="No layer named 'Dense_z'"):
        kt.freeze(model, layers=["Dense_z"])
    with pytest.raises(kt.LayerSelectionError, match="matches no layer"):
        kt.freeze(model, pattern="Conv.*")
    with pytest.raises(kt.LayerSelectionError, match="one of"):
        kt.freeze(model, upto=1, pattern="Head")


def test_trainable_summary_counts_parameters():
    model = nested()
    kt.freeze(model, layers=["Dense_a"])
    lines = []
    text = kt.trainable_summary(model, print_fn=lines.append)
    assert lines == [text]
    rows = {line.split()[0]: line.split() for line in text.splitlines()[1:]}
    # Dense_a: 4*8+8 = 40 frozen; Bn: 16 trainable, 16 frozen (moving stats);
    # Dense_b: 8*6+6 = 54; Head: 6*3+3 = 21
    assert rows["Dense_a"][2:] == ["0", "40"]
    assert rows["Bn"][2:] == ["16", "16"]
    assert rows["base"][2:] == ["70", "56"]
    assert rows["total"][1:] == ["91", "56"]
