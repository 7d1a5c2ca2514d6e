"""The learning-rate range test for any compiled Keras model (fastai's `lr_find`).

Leslie Smith's range test, as fastai's `Learner.lr_find` and Lightning's
`Tuner.lr_find` run it and as Keras users have asked for since 2017
(keras-team/keras#8891): train for a bounded number of steps while the rate
grows exponentially, record the smoothed loss, stop when it diverges, and
suggest a rate from the curve. Then put everything back.

How the state is put back. The sweep trains with a fresh optimizer of the
model's own kind and config (a `DiscriminativeOptimizer` keeps its groups and
ratios) swapped in for the run; the model's optimizer object, and so its
slots, step count and learning rate, is never touched. Every model variable
(weights, BatchNormalization statistics, dropout seed states) and every
metric variable is saved before and assigned back after, bit for bit, and the
model's train function is put back, so a `fit` afterwards runs exactly as if
the finder had never run (tested on TensorFlow and JAX). One thing cannot be
put back: a `tf.data` pipeline that reshuffles each pass moves on to its next
order when the finder iterates it.
"""

import dataclasses
import math

import keras
import numpy as np

from keras_transfer import _checks
from keras_transfer import _data
from keras_transfer import _files
from keras_transfer import _optimizer_state
from keras_transfer import errors
from keras_transfer import optimizers

SUGGESTIONS = ("valley", "steepest", "minimum")
# The default sweep: about SWEEP_EPOCHS epochs, within [MIN_STEPS, MAX_STEPS] steps
# (see `find_learning_rate`)
SWEEP_EPOCHS, MIN_STEPS, MAX_STEPS = 4, 30, 100
_OWNER = "find_learning_rate"


@dataclasses.dataclass(frozen=True)
class LearningRateCurve:
    """What a range test measured: the rate and loss of each step, and a suggestion.

    Attributes:
        learning_rates: the rate each step trained at (read from the optimizer).
        losses: the smoothed loss after each step (a debiased exponential
            moving average of `raw_losses`, as fastai's recorder keeps it).
        raw_losses: each step's training loss.
        suggestion: the suggested rate (see `find_learning_rate`).
        valley: fastai's "valley" rate: halfway down the longest stretch over
            which the smoothed loss keeps falling.
        steepest: the rate where the smoothed loss falls fastest per factor
            of rate (fastai's "steep", Lightning's suggestion).
        minimum: a tenth of the rate at the smoothed loss's lowest point
            (fastai's "minimum", the classic "an order of magnitude below
            the minimum").
        method: which of the three `suggestion` is.
        stopped_early: True when the loss diverged before the last step.
    """

    learning_rates: tuple
    losses: tuple
    raw_losses: tuple
    suggestion: float
    valley: float
    steepest: float
    minimum: float
    method: str
    stopped_early: bool

    def plot(self, path, title="Learning-rate range test"):
        """Writes the smoothed loss against the rate (log scale) as a PNG.

        Args:
            path: the PNG to write (atomically).
            title: the figure's title.

        Returns:
            The path written.
        """
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        # As fastai's plot: without the last 5 points, where a diverging loss
        # would set the scale and flatten the rest.
        shown = max(len(self.losses) - 5, 2)
        fig, ax = plt.subplots(figsize=(6, 4))
        ax.plot(self.learning_rates[:shown], self.losses[:shown], label="smoothed loss")
        for name, rate, marker in (("valley", self.valley, "o"),
                                   ("steepest", self.steepest, "s"),
                                   ("minimum", self.minimum, "^")):
            ax.plot([rate], [np.interp(math.log(rate), np.log(self.learning_rates), self.losses)],
                    marker, label=f"{name}: {rate:.2g}"
                    + (" (suggested)" if name == self.method else ""))
        ax.set_xscale("log")
        ax.set_xlabel("learning rate")
        ax.set_ylabel("training loss (smoothed)")
        ax.grid(alpha=0.3)
        ax.legend()
        ax.set_title(title)
        fig.tight_layout()
        with _files.atomic_write(path) as tmp:
            fig.savefig(tmp, format="png", dpi=100)
        plt.close(fig)
        return path


def find_learning_rate(model, data, *, start_lr=1e-7, end_lr=10.0, num_steps=None,
                       batch_size=32, smoothing=0.98, diverge=4.0, method="minimum",
                       plot_to=None, verbose=0):
    """Runs the learning-rate range test on a compiled model, then restores it.

    Step `i` (from 0) trains one batch at `start_lr * (end_lr / start_lr) **
    (i / num_steps)`, with a fresh optimizer of the model's kind and config
    over what is trainable now (freeze the base first to find the head's
    rate). The test stops after `num_steps` steps, or as soon as the smoothed
    loss exceeds `diverge` times its lowest value or is not finite. (Once
    the lowest smoothed value is 0 or below, as a cosine similarity's or a
    shifted loss's can be, a ratio means nothing: only a loss that is not
    finite, or `num_steps`, stops it.) Then the
    model's variables, metrics, optimizer and train function are put back as
    they were (see the module docstring).

    The suggestion is, by default, fastai's "minimum" rule: a tenth of the
    rate at which the smoothed loss was lowest. fastai's newer default, the
    "valley" (halfway down the longest stretch over which the loss keeps
    falling), and the steepest descent (fastai's "steep", Lightning's) are
    returned too, and `method` picks any of them as `suggestion`. Measured
    on the reference CNN (Adam, Fashion-MNIST -> MNIST, seed 0; see
    BENCHMARKS.md, "Choosing the recipe's defaults"): at 10,000 images the valley
    suggested 1.9e-4 to 5.8e-4 where one-cycle peaks of 4e-3 to 3e-2 trained
    best, and `fine_tune` then ended at 0.983 (transfer) and 0.974 (scratch)
    instead of 0.990 at 10,000 images; the steepest descent fell on a blip of
    the first, noisy steps in 1 of 8 curves (9e-7). The minimum rule landed in
    the best range on all 8. On least squares, where rates above
    2 / (largest Hessian eigenvalue) diverge, it suggests a stable rate
    between a twentieth and a half of that bound (tested on 3 problems). As in fastai, the first 10% of the steps and the
    last 5 are left out of all three.

    Args:
        model: a compiled `keras.Model`.
        data: training data: a tuple `(x, y)` or `(x, y, sample_weight)` of
            arrays (taken in order, in batches of `batch_size`), or an
            iterable of such batches (a `tf.data.Dataset`, a list, a
            generator). Data shorter than `num_steps` batches is gone through
            again, except a one-shot iterator, which must be long enough.
        start_lr, end_lr: the first rate and the rate the sweep would reach
            at step `num_steps`.
        num_steps: the most steps to run (>= 10). Default: about
            `SWEEP_EPOCHS` (4) epochs of the data, at least `MIN_STEPS` (30)
            and at most `MAX_STEPS` (100, fastai's, reached from 25 steps an
            epoch); 100 for data of unknown length. (A fixed 100 swept 12
            epochs of the keras.io guide's 256 images; now 32 steps.)
        batch_size: the batch size for array data.
        smoothing: the moving average's factor, in [0, 1).
        diverge: stop when the smoothed loss exceeds this times its lowest
            value (> 1), if that is positive.
        method: `"minimum"`, `"valley"` or `"steepest"`: which rule's rate
            `suggestion` holds.
        plot_to: if given, the curve is also written to this PNG.
        verbose: 1 shows a Keras progress bar (step, rate, smoothed loss)
            and prints the suggestion.

    Returns:
        A `LearningRateCurve`.

    Raises:
        ArgumentError: a model that is not compiled or has nothing to
            train, a bad range, step count, smoothing, threshold or method,
            empty data, or a one-shot iterator shorter than `num_steps`.
        ArgumentTypeError: `model` is not a `keras.Model`, or a rate,
            `smoothing` or `diverge` is not a number.

    Example:

    ```python
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    curve = keras_transfer.find_learning_rate(model, (x, y), plot_to="lr_find.png")
    model.compile(optimizer=keras.optimizers.Adam(curve.suggestion),
                  loss="sparse_categorical_crossentropy")
    curve.method   # 'minimum'
    ```
    """
    if num_steps is None:
        num_steps = default_steps(data, batch_size)
    num_steps = _check_arguments(model, start_lr, end_lr, num_steps, smoothing, diverge,
                                 method)
    batches = _batches(data, batch_size, num_steps)
    bar = keras.utils.Progbar(num_steps, stateful_metrics=["lr", "loss"]) if verbose else None
    sweep = keras.optimizers.schedules.ExponentialDecay(
        start_lr, decay_steps=num_steps, decay_rate=end_lr / start_lr)
    saved = _save_state(model)
    rates, raw, smoothed = [], [], []
    average, best = 0.0, math.inf
    try:
        sweeper = optimizers.fresh_optimizer(model.optimizer, sweep)
        model.optimizer = _optimizer_state.cover(model, sweeper, model.trainable_variables)
        model.make_train_function(force=True)  # traced with the swapped optimizer
        for step, batch in zip(range(num_steps), batches):
            rates.append(optimizers.current_learning_rate(model.optimizer))
            logs = model.train_on_batch(*batch, return_dict=True)  # resets metrics first
            loss = float(logs["loss"])
            average = smoothing * average + (1 - smoothing) * loss
            value = average / (1 - smoothing ** (step + 1))  # debiased, as fastai's
            raw.append(loss)
            smoothed.append(value)
            best = min(best, value)
            if bar is not None:
                bar.update(step + 1, [("lr", rates[-1]), ("loss", value)])
            if not math.isfinite(value) or _diverged(value, best, diverge):
                break
    finally:
        _restore_state(model, saved)
    curve = _curve(rates, smoothed, raw, method, stopped_early=len(rates) < num_steps)
    if plot_to is not None:
        curve.plot(plot_to)
    if verbose:
        print(f"find_learning_rate: {len(rates)} steps, suggestion {curve.suggestion:.3g} "
              f"({method}); valley {curve.valley:.3g}, steepest {curve.steepest:.3g}, "
              f"minimum {curve.minimum:.3g}")
    return curve


def default_steps(data, batch_size):
    """`num_steps` when none is given: `SWEEP_EPOCHS` epochs of `data` in
    optimizer steps, within `[MIN_STEPS, MAX_STEPS]`; `MAX_STEPS` when its
    length is unknown."""
    if _data.is_arrays(data):
        size = _data.example_count(_data.unpack_arrays(data, _OWNER, "data")[0])
        steps = max(size // max(int(batch_size), 1), 1)
    else:
        cardinality = getattr(data, "cardinality", None)
        steps = int(cardinality()) if cardinality is not None else (
            len(data) if hasattr(data, "__len__") else -1)
        if steps <= 0:
            return MAX_STEPS
    return int(min(max(SWEEP_EPOCHS * steps, MIN_STEPS), MAX_STEPS))


def _check_arguments(model, start_lr, end_lr, num_steps, smoothing, diverge, method):
    """Raises on bad arguments; returns `num_steps` as a Python int."""
    if not isinstance(model, keras.Model):
        raise errors.ArgumentTypeError(
            f"find_learning_rate takes a keras.Model, received {type(model).__name__}.")
    owner = _OWNER
    start_lr = _checks.real_number(start_lr, "start_lr", owner=owner, above=0)
    end_lr = _checks.real_number(end_lr, "end_lr", owner=owner, above=0)
    smoothing = _checks.real_number(smoothing, "smoothing", owner=owner, at_least=0, below=1)
    diverge = _checks.real_number(diverge, "diverge", owner=owner, above=1)
    if getattr(model, "optimizer", None) is None or not getattr(model, "compiled", False):
        raise errors.ArgumentError(
            f"find_learning_rate needs a compiled model; model '{model.name}' is not "
            "compiled. Call model.compile(optimizer=..., loss=...) first.")
    if not model.built:
        raise errors.ArgumentError(
            f"Model '{model.name}' is not built: its weights do not exist yet, so the "
            "finder could not put them back. Build it first (start it with "
            "keras.Input, or call model.build(input_shape)).")
    if not model.trainable_variables:
        raise errors.ArgumentError(
            f"Model '{model.name}' has no trainable variables: there is nothing whose "
            "rate could be found. Unfreeze the layers to train first.")
    num_steps = _checks.whole_number(num_steps, "num_steps", owner=owner, minimum=10,
                                     why="the curve needs points to suggest from")
    if not start_lr < end_lr:
        raise errors.ArgumentError(
            f"find_learning_rate: expected start_lr < end_lr, received "
            f"start_lr={start_lr!r}, end_lr={end_lr!r}.")
    if method not in SUGGESTIONS:
        raise errors.ArgumentError(
            f"method must be one of {SUGGESTIONS}, received {method!r}.")
    return num_steps


def _batches(data, batch_size, num_steps):
    """Yields `(x, y, sample_weight)` batches for `train_on_batch`, cycling if it can."""
    _data.check(data, _OWNER, "data")
    if _data.is_arrays(data):
        return _array_batches(_data.unpack_arrays(data, _OWNER, "data"), batch_size)
    return _iterable_batches(data, num_steps)


def _array_batches(arrays, batch_size):
    size = _data.example_count(arrays[0])
    if size == 0:
        raise errors.ArgumentError("data holds no examples: the finder needs at least one batch.")
    batch_size = _checks.whole_number(batch_size, "batch_size", owner=_OWNER, minimum=1)
    width = min(batch_size, size)
    # Full batches only (one shape, one trace); data smaller than a batch is one batch.
    starts = range(0, size - width + 1, width)

    def generate():
        while True:
            for start in starts:
                yield tuple(None if part is None else keras.tree.map_structure(
                    lambda a: a[start:start + width], part) for part in arrays)

    return generate()


def _iterable_batches(data, num_steps):
    one_shot = iter(data) is data

    def generate():
        produced = 0
        while True:
            before = produced
            for batch in data:
                produced += 1
                yield _as_batch(batch)
            if produced == before:
                raise errors.ArgumentError(
                    "data yielded no batch: the finder needs at least one.")
            if one_shot:
                raise errors.ArgumentError(
                    f"data ran out after {produced} batches, and an iterator cannot be "
                    f"gone through again; the finder needs {num_steps}. Pass a "
                    "re-iterable (a tf.data.Dataset, a list) or fewer num_steps.")

    return generate()


def _as_batch(batch):
    batch = _data.unpack_batch(batch, _OWNER)
    if keras.backend.backend() != "tensorflow":  # tf.data yields TensorFlow tensors
        batch = tuple(None if part is None else keras.tree.map_structure(
            lambda t: t.numpy() if hasattr(t, "numpy") and not isinstance(t, np.ndarray) else t,
            part) for part in batch)
    return batch


def _save_state(model):
    variables = list(model.variables) + list(model.metrics_variables)
    return {
        "values": [(v, keras.ops.convert_to_numpy(v.value).copy()) for v in variables],
        "optimizer": model.optimizer,
        "train_function": model.train_function,
        "built": [(part, part.built) for part in _compiled_parts(model)],
    }


def _restore_state(model, saved):
    model.optimizer = saved["optimizer"]
    model.train_function = saved["train_function"]
    for variable, value in saved["values"]:
        variable.assign(value)
    for part, built in saved["built"]:
        part.built = built


def _compiled_parts(model):
    """The compiled loss and metrics, which the first train step builds.

    Going around Keras: whether they are built changes what the next `fit`
    does. Unbuilt, `fit` first draws a batch to build them, and on JAX that
    draw shuffles numpy arrays with numpy's global generator, so every later
    epoch sees other batches. The finder's steps build them; restoring the
    flag lets `fit` draw as it would have (it then builds fresh ones).
    """
    parts = (getattr(model, "_compile_loss", None), getattr(model, "_compile_metrics", None))
    return [part for part in parts if part is not None and hasattr(part, "built")]


def _diverged(value, best, diverge):
    """`value` above `diverge` times `best`, for a positive `best` only.

    fastai's and Lightning's rule, `value > diverge * best`, assumes a loss
    bounded below by 0: it stops a negative loss (cosine similarity, a
    shifted loss) at its first step. A ratio has no meaning there, nor does
    any other threshold on a loss whose zero is arbitrary, so such a sweep
    runs on until the loss is not finite or `num_steps` is reached.
    """
    return best > 0 and value > diverge * best


def _curve(rates, smoothed, raw, method, stopped_early):
    if not rates:
        raise errors.ArgumentError("The finder ran no step.")
    lrs, losses = np.asarray(rates), np.asarray(smoothed)
    finite = np.isfinite(losses)
    usable = int(np.argmin(finite)) if not finite.all() else len(losses)
    # fastai leaves out the first tenth (the average settling) and the last 5 points.
    lo, hi = len(rates) // 10, usable - 5
    if hi - lo < 3:
        lo, hi = 0, usable
    lrs, losses = lrs[lo:hi], losses[lo:hi]
    if len(lrs) < 2:
        raise errors.ArgumentError(
            f"The loss was not finite from step {usable + 1} on: no curve to suggest "
            "from. Lower start_lr.")
    rules = {"valley": float(lrs[_valley_index(losses)]),
             "steepest": float(lrs[int(np.argmin(np.diff(losses) / np.diff(np.log(lrs))))]),
             "minimum": float(lrs[int(np.argmin(losses))]) / 10}
    return LearningRateCurve(
        learning_rates=tuple(rates), losses=tuple(smoothed), raw_losses=tuple(raw),
        suggestion=rules[method], method=method, stopped_early=stopped_early, **rules)


def _valley_index(losses):
    """fastai's `valley`: halfway down the longest run of falling losses.

    `run[i]` is the length of the longest strictly decreasing subsequence of
    the losses that ends at step `i`; the valley is the one with the longest
    run, and the suggestion the point halfway along it.
    """
    run = [1] * len(losses)
    end = 0
    for i in range(1, len(losses)):
        for j in range(i):
            if losses[i] < losses[j]:
                run[i] = max(run[i], run[j] + 1)
        if run[i] > run[end]:
            end = i
    start = end - run[end]
    third = (end - start) / 3
    return min(max(start + int(third) + int(third / 2), 0), len(losses) - 1)
