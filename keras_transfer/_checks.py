"""Private: argument checks, one place for each rule.

Every public function checks its numbers here, so a bad value gets the same
message everywhere: the function at fault, the argument as the caller spelled
it, what was expected and what was received, e.g. "fine_tune: head_div must
be >= 1, received 0.5." A function that passes a value on to another (fine_tune
to OneCycle) checks it first under its own name, so the caller never reads
the name of an argument it did not pass.
"""

import math
import numbers

from keras_transfer import errors


def whole_number(value, name, *, owner, minimum, why=""):
    """`value` as an int >= `minimum`, or an `ArgumentError` naming `name`.

    A bool is refused although Python counts it as an int; numpy integers
    are taken.

    Args:
        value: what the caller passed.
        name: the argument's name as the caller spelled it.
        owner: the public function (or class) the caller called.
        minimum: the smallest allowed value.
        why: said in brackets after the bound: what the count is for.

    Returns:
        `value` as a Python int.

    Raises:
        ArgumentError: `value` is not an integer (a bool, a float, None) or is
            below `minimum`.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        because = f" ({why})" if why else ""
        raise errors.ArgumentError(
            f"{owner}: {name} must be an int >= {minimum}{because}, received {value!r}.")
    return int(value)


def real_number(value, name, *, owner, above=None, at_least=None, below=None,
                at_most=None, why=""):
    """`value` as a finite float within the bounds given, or a typed error.

    Args:
        value: what the caller passed.
        name: the argument's name as the caller spelled it.
        owner: the public function (or class) the caller called.
        above, at_least: an exclusive or inclusive lower bound (one or none).
        below, at_most: an exclusive or inclusive upper bound (one or none).
        why: said in brackets after the bound: what the number is.

    Returns:
        `value` as a Python float.

    Raises:
        ArgumentTypeError: `value` is not a real number (a bool, a string, None).
        ArgumentError: `value` is NaN or infinite, or outside the bounds.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise errors.ArgumentTypeError(
            f"{owner}: {name} must be a number, received {value!r} "
            f"({type(value).__name__}).")
    number = float(value)
    if not math.isfinite(number):
        raise errors.ArgumentError(f"{owner}: {name} must be finite, received {value!r}.")
    low = (above, "(") if above is not None else (at_least, "[")
    high = (below, ")") if below is not None else (at_most, "]")
    fits = ((low[0] is None or (number > low[0] if low[1] == "(" else number >= low[0]))
            and (high[0] is None or (number < high[0] if high[1] == ")" else number <= high[0])))
    if not fits:
        raise errors.ArgumentError(
            f"{owner}: {name} must be {_bounds(low, high)}"
            + (f" ({why})" if why else "") + f", received {value!r}.")
    return number


def _bounds(low, high):
    (lo, lo_kind), (hi, hi_kind) = low, high
    if lo is not None and hi is not None:
        return f"in {lo_kind}{_plain(lo)}, {_plain(hi)}{hi_kind}"
    if lo is not None:
        return f"{'>' if lo_kind == '(' else '>='} {_plain(lo)}"
    return f"{'<' if hi_kind == ')' else '<='} {_plain(hi)}"


def _plain(bound):
    return str(int(bound)) if float(bound).is_integer() else str(bound)
