"""_checks: the shared argument checks every public function uses, and the
messages they give through the public functions."""

import numpy as np
import pytest

import keras_transfer as kt
from keras_transfer import _checks
from keras_transfer import errors

# Argument checks are Python that runs before any model is built or trained:
# their outcome does not depend on the backend, so they run in the TensorFlow
# pass only.
pytestmark = pytest.mark.once


@pytest.mark.parametrize("value", [3, np.int64(3), np.uint8(3)])
def test_whole_number_takes_python_and_numpy_integers_and_returns_an_int(value):
    result = _checks.whole_number(value, "epochs", owner="f", minimum=1)
    assert result == 3 and type(result) is int


@pytest.mark.parametrize("value", [True, False, 2.0, 2.5, "2", None, 0, -1])
def test_whole_number_refuses_bools_floats_and_values_below_the_bound(value):
    with pytest.raises(errors.ArgumentError, match=r"^f: epochs must be an int >= 1 "
                                                   r"\(the count\), received "):
        _checks.whole_number(value, "epochs", owner="f", minimum=1, why="the count")


def test_whole_number_accepts_the_bound_itself():
    assert _checks.whole_number(0, "freeze_epochs", owner="f", minimum=0) == 0


@pytest.mark.parametrize("bounds, inside, outside, says", [
    (dict(above=0), [1e-9, 3], [0, -1.0], "> 0"),
    (dict(at_least=1), [1, 1.5], [0.999], ">= 1"),
    (dict(at_least=0, at_most=1), [0, 0.5, 1], [-0.1, 1.1], r"in \[0, 1\]"),
    (dict(at_least=0, below=1), [0, 0.99], [1, 1.5], r"in \[0, 1\)"),
    (dict(above=0.5, at_most=2), [0.6, 2], [0.5, 2.1], r"in \(0.5, 2\]"),
])
def test_real_number_holds_each_kind_of_bound(bounds, inside, outside, says):
    for value in inside:
        assert _checks.real_number(value, "x", owner="f", **bounds) == float(value)
    for value in outside:
        with pytest.raises(errors.ArgumentError, match=rf"^f: x must be {says}, received "):
            _checks.real_number(value, "x", owner="f", **bounds)


@pytest.mark.parametrize("value, error, says", [
    (True, errors.ArgumentTypeError, "must be a number"),
    ("1", errors.ArgumentTypeError, "must be a number"),
    (None, errors.ArgumentTypeError, "must be a number"),
    (float("nan"), errors.ArgumentError, "must be finite"),
    (float("inf"), errors.ArgumentError, "must be finite"),
])
def test_real_number_refuses_what_is_not_a_finite_number(value, error, says):
    with pytest.raises(error, match=says):
        _checks.real_number(value, "x", owner="f", above=0)


def test_fit_two_phase_names_its_own_arguments_not_the_schedules(data):
    # The audit's case: head_epochs=1.5 was refused as `switch_epoch`, an
    # argument the caller never passed (TwoPhaseSchedule's).
    import keras
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, name="Head")])
    with pytest.raises(kt.ArgumentError, match=r"^fit_two_phase: head_epochs must be an int"):
        kt.fit_two_phase(model, data, freeze=[], head_epochs=1.5, epochs=3)
    with pytest.raises(kt.ArgumentError, match=r"^fit_two_phase: epochs must be an int"):
        kt.fit_two_phase(model, data, freeze=[], head_epochs=1, epochs=2.0)


def test_fine_tune_names_the_head_one_cycle_arguments_it_was_given(data):
    # fine_tune checks its own names before it builds OneCycle: no rewritten
    # OneCycle message, and no OneCycle name in it.
    import keras
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, name="Head")])
    for kwargs, says in ((dict(head_div=0.5), r"^fine_tune: head_div must be >= 1, received 0.5"),
                         (dict(head_pct_start=1.5), r"^fine_tune: head_pct_start must be in"),
                         (dict(final_div=0.5), r"^fine_tune: final_div must be >= 1")):
        with pytest.raises(kt.ArgumentError, match=says) as err:
            kt.fine_tune(model, data, freeze=[], epochs=2, base_lr=1e-3, verbose=0, **kwargs)
        assert "OneCycle" not in str(err.value)
