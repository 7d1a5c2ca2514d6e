"""Learning-rate schedules for fine-tuning: one-cycle, per phase, scaled per group.

Plain `keras.optimizers.schedules.LearningRateSchedule` subclasses, registered
for `.keras` saving. They hold no state of their own: what they compute
depends only on their config and the step the optimizer passes them, so a
resumed run computes the same rates.
"""

import math

import keras

from keras_transfer import _checks

Schedule = keras.optimizers.schedules.LearningRateSchedule


@keras.saving.register_keras_serializable(package="keras_transfer")
class OneCycle(Schedule):
    """The one-cycle policy: warm up to a maximum, then anneal far below it.

    Leslie Smith's one-cycle policy as fastai's `fit_one_cycle` schedules it:
    over the first `pct_start` of `total_steps` the rate rises from
    `max_learning_rate / div` to `max_learning_rate` along a half cosine,
    then falls along a half cosine to `max_learning_rate / final_div` at
    `total_steps`, and stays there. Step `s` sits at position
    `s / total_steps` of the cycle (fastai's convention: the last step of a
    run is one step short of the final value).

    Inside the fine-tuning callbacks it is a phase's schedule
    (`TwoPhaseSchedule(head_lr=OneCycle(...), finetune_lr=OneCycle(...))`
    restarts it at the phase's first step); in a `DiscriminativeOptimizer`
    each group runs it scaled by its factor, on its own step count.

    Args:
        max_learning_rate: the peak rate.
        total_steps: the cycle's length in optimizer steps (epochs times
            steps per epoch).
        pct_start: the share of the cycle spent warming up, in [0, 1].
        div: the rate starts at `max_learning_rate / div` (>= 1).
        final_div: the rate ends at `max_learning_rate / final_div` (>= 1).

    Raises:
        ArgumentError: a non-positive rate or length, `pct_start` outside
            [0, 1], a divisor below 1, or a value that is not finite.
        ArgumentTypeError: an argument that is not a number.

    Example:

    ```python
    steps = epochs * math.ceil(len(x) / 32)
    schedule = keras_transfer.OneCycle(3e-3, total_steps=steps)
    optimizer = keras.optimizers.Adam(schedule)
    round(float(schedule(int(0.25 * steps))), 6)   # 0.003: the peak, a quarter in
    ```
    """

    def __init__(self, max_learning_rate, total_steps, pct_start=0.25, div=25.0,
                 final_div=1e5):
        self.max_learning_rate = _checks.real_number(
            max_learning_rate, "max_learning_rate", owner="OneCycle", above=0)
        self.total_steps = one_cycle_steps(total_steps, "total_steps", "OneCycle")
        self.pct_start, self.div, self.final_div = one_cycle_shape(
            pct_start, div, final_div, owner="OneCycle")

    def __call__(self, step):
        ops = keras.ops
        pos = ops.clip(ops.cast(step, "float32") / self.total_steps, 0.0, 1.0)
        top = self.max_learning_rate
        # Each half is a cosine from `start` to `end` over its own share of
        # the cycle; a share of 0 is never selected (guarded division).
        warm = _cosine(top / self.div, top, pos / max(self.pct_start, 1e-12))
        cool = _cosine(top, top / self.final_div,
                       (pos - self.pct_start) / max(1.0 - self.pct_start, 1e-12))
        return ops.where(pos < self.pct_start, warm, cool)

    def get_config(self):
        return {"max_learning_rate": self.max_learning_rate, "total_steps": self.total_steps,
                "pct_start": self.pct_start, "div": self.div, "final_div": self.final_div}


def one_cycle_shape(pct_start, div, final_div, *, owner, prefix=""):
    """`OneCycle`'s shape arguments checked, as floats, under the names
    `<prefix>pct_start`, `<prefix>div`, `<prefix>final_div` of `owner`.

    Raises:
        ArgumentTypeError, ArgumentError: as `OneCycle` raises them.
    """
    return (_checks.real_number(pct_start, f"{prefix}pct_start", owner=owner,
                                at_least=0, at_most=1),
            _checks.real_number(div, f"{prefix}div", owner=owner, at_least=1),
            _checks.real_number(final_div, f"{prefix}final_div", owner=owner, at_least=1))


def one_cycle_steps(total_steps, name, owner):
    """A cycle's length: an int >= 1 (an integral float is taken, as before)."""
    number = _checks.real_number(total_steps, name, owner=owner)  # a number, finite
    if isinstance(total_steps, float) and number.is_integer():
        total_steps = int(number)
    return _checks.whole_number(total_steps, name, owner=owner, minimum=1)


def _cosine(start, end, fraction):
    """A half cosine from `start` (fraction 0) to `end` (fraction 1).

    `start + (end - start) * (1 - cos(pi f)) / 2`, written as a weighted sum of
    `cos(pi f / 2)**2` and `sin(pi f / 2)**2`: in float32 the difference form
    loses the last digits near the end of the cycle, where the rate is small.
    """
    half = math.pi / 2 * keras.ops.clip(fraction, 0.0, 1.0)
    return start * keras.ops.cos(half) ** 2 + end * keras.ops.sin(half) ** 2


class WrappedLearningRate(Schedule):
    """Base for schedules built around a learning rate: a float or a schedule.

    Subclasses set `self.learning_rate` and return `self.config(**fields)` from
    `get_config`; the wrapped schedule is serialized and restored here.
    """

    def rate_at(self, step):
        """The wrapped learning rate at `step`, as a float32 tensor."""
        lr = self.learning_rate
        value = lr(step) if isinstance(lr, Schedule) else lr
        return keras.ops.convert_to_tensor(value, "float32")

    def config(self, **fields):
        lr = self.learning_rate
        if isinstance(lr, Schedule):
            lr = keras.saving.serialize_keras_object(lr)
        return {"learning_rate": lr, **fields}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        if isinstance(config["learning_rate"], dict):
            config["learning_rate"] = keras.saving.deserialize_keras_object(
                config["learning_rate"])
        return cls(**config)


@keras.saving.register_keras_serializable(package="keras_transfer")
class PhaseLearningRate(WrappedLearningRate):
    """A phase's learning rate: a constant, or a schedule restarted at a step.

    The fine-tuning callbacks install it so that a phase's schedule counts
    steps from the start of its phase, not from the start of training.

    Args:
        learning_rate: a float or a `LearningRateSchedule`.
        start_step: the optimizer step at which the phase began.

    Example:

    ```python
    decay = keras.optimizers.schedules.CosineDecay(1e-3, decay_steps=1000)
    schedule = keras_transfer.PhaseLearningRate(decay, start_step=500)
    optimizer = keras.optimizers.Adam(schedule)
    round(float(schedule(500)), 6)   # 0.001: the decay starts at step 500
    ```
    """

    def __init__(self, learning_rate, start_step=0):
        self.learning_rate = learning_rate
        self.start_step = int(start_step)

    def __call__(self, step):
        if isinstance(self.learning_rate, Schedule):
            step = keras.ops.maximum(step - self.start_step, 0)
        return self.rate_at(step)

    def get_config(self):
        return self.config(start_step=self.start_step)


@keras.saving.register_keras_serializable(package="keras_transfer")
class ScaledLearningRate(WrappedLearningRate):
    """A learning rate (float or schedule) times a constant factor.

    Args:
        learning_rate: a float or a `LearningRateSchedule`.
        factor: the constant factor.
    """

    def __init__(self, learning_rate, factor):
        self.learning_rate = learning_rate
        self.factor = float(factor)

    def __call__(self, step):
        return self.rate_at(step) * self.factor

    def get_config(self):
        return self.config(factor=self.factor)
