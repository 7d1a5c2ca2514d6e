"""Private: the one way keras_transfer takes training data.

Every function that trains (`fine_tune`, `fit_two_phase`, the finder, cached
phase 1) takes data in the two shapes `fit` takes it:

- arrays: a tuple `(x, y)` or `(x, y, sample_weight)`, where `x` may be a
  dict or list of arrays for a model with several inputs;
- batches: anything else that yields such tuples when iterated: a
  `tf.data.Dataset`, a `keras.utils.PyDataset`, a list of batches, a
  generator.

`keras.utils.unpack_x_y_sample_weight` splits one batch, and the arrays
tuple; it is never applied to data as a whole that is a list of batches,
which it would read as `(x, y)`.
"""

import math

import keras
import numpy as np

from keras_transfer import _checks
from keras_transfer import errors


def is_arrays(data):
    """True for array data: a tuple, as `fit` reads a tuple."""
    return isinstance(data, tuple)


def check(data, owner, argument="train"):
    """Refuses data of neither shape, naming `owner`'s `argument`.

    Raises:
        ArgumentError: a tuple of another length than 2 or 3.
        ArgumentTypeError: something that is neither a tuple nor iterable
            (a bare array, a number).
    """
    if is_arrays(data):
        unpack_arrays(data, owner, argument)
        return
    if hasattr(data, "shape") or not hasattr(data, "__iter__") or isinstance(data, (str, dict)):
        raise errors.ArgumentTypeError(
            f"{owner}: {argument} must be `(x, y)` or `(x, y, sample_weight)` arrays, or "
            "data that yields such batches (a tf.data.Dataset, a keras.utils.PyDataset, "
            f"a list of batches); received {type(data).__name__}.")


def unpack_arrays(data, owner, argument="train"):
    """Array data as `(x, y, sample_weight)` (`sample_weight` may be None).

    Raises:
        ArgumentError: a tuple of another length than 2 or 3.
    """
    if not 2 <= len(data) <= 3:
        raise errors.ArgumentError(
            f"{owner}: array data for {argument} must be (x, y) or (x, y, sample_weight); "
            f"received a tuple of {len(data)}.")
    return keras.utils.unpack_x_y_sample_weight(data)


def unpack_batch(batch, owner):
    """One batch of batched data as `(x, y, sample_weight)`.

    Raises:
        ArgumentError: a batch that is not a tuple (or list) of 2 or 3.
    """
    if not isinstance(batch, (tuple, list)) or not 2 <= len(batch) <= 3:
        raise errors.ArgumentError(
            f"{owner}: each batch must be a tuple (x, y) or (x, y, sample_weight); "
            f"received {type(batch).__name__}"
            + (f" of {len(batch)}" if isinstance(batch, (tuple, list)) else "") + ".")
    return keras.utils.unpack_x_y_sample_weight(tuple(batch))


def fit_arguments(data, owner, argument="train"):
    """`data` as `fit`'s `x`, `y` and `sample_weight`: arrays unpacked,
    batched data as `x` alone."""
    if is_arrays(data):
        return unpack_arrays(data, owner, argument)
    return data, None, None


def example_count(x):
    """The number of examples in array inputs `x` (one array, a list or a dict)."""
    return len(keras.tree.flatten(x)[0])


def first_inputs(data, count, owner):
    """The first `count` inputs: of array data, or of the first batch.

    Raises:
        ArgumentError: batched data that yields no batch.
    """
    if is_arrays(data):
        x, _, _ = unpack_arrays(data, owner)
        return keras.tree.map_structure(lambda a: a[:count], x)
    for batch in data:  # a new iterator: the caller's own pass starts again
        x, _, _ = unpack_batch(batch, owner)
        return keras.tree.map_structure(lambda a: np.asarray(a)[:count], x)
    raise errors.ArgumentError(f"{owner}: the training data is empty: it yields no batch.")


def steps_per_epoch(data, batch_size, given, owner):
    """Optimizer steps in one epoch of `data`: `given` if set, else counted.

    Raises:
        ArgumentError: `given` is not an int >= 1, or batched data whose
            length cannot be told.
    """
    if given is not None:
        return _checks.whole_number(given, "steps_per_epoch", owner=owner, minimum=1)
    if is_arrays(data):
        x, _, _ = unpack_arrays(data, owner)
        return math.ceil(example_count(x) / batch_size)
    cardinality = getattr(data, "cardinality", None)  # tf.data
    if cardinality is not None:
        count = int(cardinality())
        if count > 0:
            return count
    elif hasattr(data, "__len__") and len(data) > 0:
        return len(data)
    raise errors.ArgumentError(
        f"{owner} cannot tell how many steps an epoch of the training data has, and "
        "the one-cycle schedules need it: pass steps_per_epoch=, or data of known "
        "length (arrays, a finite tf.data.Dataset, a keras.utils.PyDataset).")
