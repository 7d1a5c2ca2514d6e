"""errors: the shared argument checks every public function uses."""

import numpy as np
import pytest

from keras_transfer import errors


@pytest.mark.parametrize("value", [3, np.int64(3), np.uint8(3)])
def test_whole_number_takes_python_and_numpy_integers_and_returns_an_int(value):
    result = errors.whole_number(value, "epochs", 1)
    assert result == 3 and type(result) is int


@pytest.mark.parametrize("value", [True, False, 2.0, 2.5, "2", None, 0, -1])
def test_whole_number_refuses_bools_floats_and_values_below_the_bound(value):
    with pytest.raises(errors.ArgumentError, match=r"epochs must be an int >= 1 "
                                                   r"\(the count\), received "):
        errors.whole_number(value, "epochs", 1, "the count")


def test_whole_number_accepts_the_bound_itself():
    assert errors.whole_number(0, "freeze_epochs", 0) == 0
