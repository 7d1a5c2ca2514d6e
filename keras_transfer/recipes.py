"""One-call fine-tuning recipes, on top of the callbacks.

`fit_two_phase` is the classic recipe: compile, fit the head with the base
frozen, unfreeze, compile again with a fresh optimizer, fit on from where
phase 1 ended. Its freezing policy is `TwoPhaseSchedule`'s.
"""

import keras

from keras_transfer import caching
from keras_transfer import errors
from keras_transfer import optimizers
from keras_transfer import schedules


def fit_two_phase(model, train, *, validation=None, freeze, head_epochs, epochs,
                  head_lr=1e-3, finetune_lr=1e-4, optimizer="adam",
                  loss="sparse_categorical_crossentropy", metrics=("accuracy",),
                  train_batchnorm=False, cache_features=False, lora_rank=None,
                  callbacks=None, verbose=1, **fit_kwargs):
    """The two-phase recipe in one call: compile, fit, unfreeze, recompile, fit.

    Phase 1 freezes `freeze` and trains for `head_epochs` at `head_lr`; phase 2
    unfreezes it (BatchNormalization kept frozen unless `train_batchnorm`),
    compiles again with a fresh optimizer at `finetune_lr` and trains from
    epoch `head_epochs` to `epochs`.

    Args:
        model: the target `keras.Model`.
        train: training data as `fit` takes it (a `tf.data.Dataset`, or a tuple
            `(x, y)`).
        validation: optional validation data for `fit`.
        freeze: what phase 1 freezes (see `TwoPhaseSchedule`).
        head_epochs: number of phase-1 epochs.
        epochs: the total number of epochs (phase 2 runs the rest).
        head_lr, finetune_lr: the phases' learning rates (floats or schedules).
        optimizer: an optimizer name or instance; each phase gets a fresh
            instance with the same config.
        loss, metrics: as for `model.compile`.
        train_batchnorm: train BatchNormalization layers in phase 2.
        cache_features: run phase 1 on cached base outputs (`fit_head_cached`):
            the same head, much faster; needs `freeze=N` (the first N layers
            form the base) and a base with nothing random in it.
        lora_rank: phase 2 trains LoRA adapters of this rank instead of whole
            layers (as `TwoPhaseSchedule(lora_rank=...)`).
        callbacks: callbacks for both phases.
        verbose: passed to `fit`.
        **fit_kwargs: other `fit` arguments (`batch_size`, ...).

    Returns:
        A `keras.callbacks.History` covering both phases, its `history` with a
        `phase` column (1 or 2 per epoch) and an `lr` column.

    Raises:
        ArgumentError: `head_epochs` outside `[0, epochs]`, or
            `cache_features=True` without `freeze=N`.
        LayerSelectionError: `freeze` does not fit the model.

    Example:

    ```python
    history = keras_transfer.fit_two_phase(
        target, (x, y), freeze=12, head_epochs=5, epochs=10,
        head_lr=1e-3, finetune_lr=1e-4)
    ```
    """
    if not 0 <= head_epochs <= epochs:
        raise errors.ArgumentError(
            f"Expected 0 <= head_epochs <= epochs, received "
            f"head_epochs={head_epochs}, epochs={epochs}.")
    if isinstance(train, tuple):
        x, y = train
    else:
        x, y = train, None
    merged = keras.callbacks.History()
    merged.set_model(model)
    merged.on_train_begin()  # sets up `epoch` and `history`
    # The same freezing policy as the callback, applied between two compiles.
    policy = schedules.TwoPhaseSchedule(freeze, head_epochs, unfreeze=None, train_batchnorm=train_batchnorm,
                              lora_rank=lora_rank, verbose=0)
    policy.prepare(model)
    phases = [(1, 0, head_epochs, head_lr), (2, head_epochs, epochs, finetune_lr)]
    for phase, start, stop, lr in phases:
        if start == stop:
            continue
        if phase == 1 and cache_features:
            if isinstance(freeze, bool) or not isinstance(freeze, int):
                raise errors.ArgumentError(
                    "cache_features=True needs freeze=N (the base's first N layers).")
            history = caching.fit_head_cached(
                model, train, cut=freeze, epochs=stop, validation=validation,
                optimizer=optimizer, learning_rate=lr, loss=loss, metrics=metrics,
                batch_size=fit_kwargs.get("batch_size") or 32,
                shuffle=fit_kwargs.get("shuffle", True), callbacks=callbacks, verbose=verbose)
        else:
            policy.apply(model, phase)
            model.compile(optimizer=optimizers.fresh_optimizer(optimizer, lr), loss=loss,
                          metrics=list(metrics) if metrics else None)
            history = model.fit(x, y, validation_data=validation, epochs=stop,
                                initial_epoch=start, callbacks=callbacks,
                                verbose=verbose, **fit_kwargs)
        for key, values in history.history.items():
            merged.history.setdefault(key, []).extend(values)
        merged.history.setdefault("phase", []).extend([phase] * len(history.epoch))
        merged.history.setdefault("lr", []).extend(
            [optimizers.current_learning_rate(history.model.optimizer)] * len(history.epoch))
        merged.epoch.extend(history.epoch)
    return merged
