"""Learning-rate schedules for fine-tuning: per phase, scaled per group.

Plain `keras.optimizers.schedules.LearningRateSchedule` subclasses, registered
for `.keras` saving. They hold no state of their own: what they compute
depends only on their config and the step the optimizer passes them, so a
resumed run computes the same rates.
"""

import keras

Schedule = keras.optimizers.schedules.LearningRateSchedule


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
    optimizer.learning_rate = keras_transfer.PhaseLearningRate(decay, start_step=500)
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
