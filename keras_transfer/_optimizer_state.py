"""Private: one optimizer state for every trainable set of a run, on every backend.

The fine-tuning callbacks change what trains in the middle of `model.fit`. In
Keras 3 an optimizer holds state (slots, step count) for the variables it was
built with, and the backends differ in what they let it update:

- TensorFlow and PyTorch call `optimizer.apply(grads, variables)` with the
  current trainable variables: any subset of the built ones is accepted.
- JAX calls `optimizer.stateless_apply(...)`, which insists on exactly the
  variables the optimizer was built with ("must be a list of tensors
  corresponding 1:1 to the trainable variables list that the optimizer was
  built with").

Two designs were possible. (1) Rebuild the optimizer over the new trainable
set at every switch, carrying the shared state over. Its variable layout then
changes during the run, so a checkpoint written in phase 2 does not fit the
optimizer of a process restarting into phase 2 (Keras skips it with "Skipping
variable loading for optimizer"), and a `BackupAndRestore` resume loses Adam's
moments. (2) Keep every variable trainable and mask updates with learning
rate 0 per group. That computes gradients for frozen weights, lets their
moments move, and, worse, makes frozen BatchNormalization layers trainable,
which switches them to training mode.

We build the optimizer once, at train begin, over the union of the variables
of every state the run may enter (in the model's variable order), and let it
update any subset of them on every backend. The layout never changes during
the run, so checkpoints written in any phase load in any process; frozen
weights get no gradients and no slot updates; BatchNormalization keeps
Keras' frozen-means-inference semantics. On JAX this needs a
`stateless_apply` that takes a subset: `accept_subsets` gives the optimizer
one (see its comment).
"""

import contextlib

import keras

from keras_transfer import errors


def cover(model, optimizer, variables):
    """Returns an optimizer built over `variables` that updates any subset.

    An unbuilt optimizer is built in place. A built one that lacks some of the
    variables is replaced by a fresh instance of its class and config, built
    over all of them, with every state variable it shares with the old one
    (step count, learning rate, slots of known variables) copied by path.

    Args:
        model: the model being trained (its variable order is used, and its
            distribution scope).
        optimizer: the model's optimizer.
        variables: every variable that will train during the run.

    Returns:
        The optimizer to use: `optimizer` itself, or its rebuilt copy.
    """
    wanted = {id(v) for v in variables}
    ordered = [v for v in model.variables if id(v) in wanted]
    if len(ordered) != len(wanted):
        strangers = [v.path for v in variables if id(v) not in {id(o) for o in ordered}]
        raise errors.ArgumentError(
            f"Variables {strangers} would train but are not variables of model "
            f"'{model.name}': a callback's layers must belong to the model it trains.")
    with _scope(model):
        # Keras keeps which variables an optimizer was built with only in the
        # private `_trainable_variables_indices`, keyed by `_var_key`
        # (tests/test_keras_gaps.py pins both).
        if not optimizer.built:
            optimizer.build(ordered)
        elif not all(optimizer._var_key(v) in optimizer._trainable_variables_indices  # noqa: SLF001
                     for v in ordered):
            optimizer = _rebuilt(optimizer, ordered)
    if keras.backend.backend() == "jax":  # the only trainer that calls stateless_apply
        # A LossScaleOptimizer's own stateless_apply takes any list and hands
        # it to its inner optimizer, which does the update.
        inner = getattr(optimizer, "inner_optimizer", optimizer)
        accept_subsets(inner, model)
    return optimizer


def _scope(model):
    strategy = getattr(model, "distribute_strategy", None)  # TensorFlow only
    return strategy.scope() if strategy is not None else contextlib.nullcontext()


def _rebuilt(optimizer, variables):
    fresh = optimizer.__class__.from_config(optimizer.get_config())
    fresh.build(variables)
    old = {v.path: v for v in optimizer.variables}
    for v in fresh.variables:
        source = old.get(v.path)
        if source is not None and tuple(source.shape) == tuple(v.shape):
            v.assign(source)
    return fresh


def accept_subsets(optimizer, model):
    """Lets `optimizer.stateless_apply` (JAX) update a subset of its variables.

    Going around Keras: `BaseOptimizer.stateless_apply` refuses any list of
    trainable values but the exact one the optimizer was built with, although
    `apply`, which it calls, takes any subset. Keras has no hook for this, so
    the instance gets its own `stateless_apply`: given fewer values than it was
    built with, it maps them to `model.trainable_variables` (the list the JAX
    trainer took them from) and applies the update to those only.
    `tests/test_keras_gaps.py` pins the native refusal. Given the full list, it
    is Keras' own method.

    Args:
        optimizer: a built Keras optimizer.
        model: the model whose `trainable_variables` the trainer passes.
    """
    native = type(optimizer).stateless_apply.__get__(optimizer)

    def stateless_apply(optimizer_variables, grads, trainable_variables):
        if len(trainable_variables) == len(optimizer._trainable_variables):  # noqa: SLF001
            return native(optimizer_variables, grads, trainable_variables)
        current = list(model.trainable_variables)
        if len(current) != len(trainable_variables):
            raise errors.ArgumentError(
                f"Optimizer '{optimizer.name}' received {len(trainable_variables)} "
                f"trainable values, but model '{model.name}' has {len(current)} "
                "trainable variables: this optimizer updates only the model it was "
                "prepared for by a keras_transfer callback. Compile other models "
                "with an optimizer of their own.")
        mapping = (list(zip(current, trainable_variables))
                   + list(zip(optimizer.variables, optimizer_variables)))
        with keras.StatelessScope(state_mapping=mapping) as scope:
            optimizer.apply(grads, current)
        return ([scope.get_current_value(v) for v in current],
                [scope.get_current_value(v) for v in optimizer.variables])

    optimizer.stateless_apply = stateless_apply
