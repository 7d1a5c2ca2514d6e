"""TF Hub modules and SavedModels as fine-tunable Keras 3 layers, and back.

`hub.KerasLayer` is a tf_keras layer: Keras 3 models reject it. Keras 3's own
`keras.layers.TFSMLayer` keeps the SavedModel's variable names (`k:0`), which
optimizers with slots cannot turn into scope names ("'k:0_momentum' is not a
valid scope name"), and it does not pass `training` to the module. `HubLayer`
is a real `keras.Layer` that does both right, and `export_hub_module` writes a
Keras 3 model in TF Hub's reusable SavedModel format.

Security: loading a SavedModel runs the TensorFlow graphs it contains. Load
only modules from sources you trust. A `.keras` file holding a `HubLayer`
stores the handle, not the module, and loading it loads the module again: like
`TFSMLayer`, this is refused in Keras' safe mode unless you opt in.

A SavedModel is TensorFlow graphs: `HubLayer` and `export_hub_module` need
the TensorFlow backend, and this module imports TensorFlow only when they are
used, so `import keras_transfer` stays cheap on JAX and PyTorch.
"""

import os
import re

import keras

from keras_transfer.errors import ArgumentError
from keras_transfer.errors import ArgumentTypeError
from keras_transfer.errors import BackendError
from keras_transfer.errors import HubModuleError


def _tensorflow(feature):
    """Imports TensorFlow for `feature`, which needs the TensorFlow backend."""
    backend = keras.backend.backend()
    if backend != "tensorflow":
        raise BackendError(
            f"{feature} runs a TensorFlow SavedModel inside the model, so it needs "
            f"Keras' TensorFlow backend; this process runs the {backend!r} backend. "
            "Set KERAS_BACKEND=tensorflow before importing keras, or transfer the "
            "module's weights by name (save_weights_by_name / load_weights_by_name) "
            "into a Keras model instead.")
    import tensorflow as tf

    return tf


def resolve_handle(handle):
    """Returns a local folder for `handle`: a path, or a TF Hub handle.

    A local folder is used as it is. Anything else is resolved through
    `tensorflow_hub.resolve` (its cache, `TFHUB_CACHE_DIR`), which downloads
    when online.

    Raises:
        HubModuleError: the folder does not exist, is not a SavedModel, or the
            handle could not be resolved.
    """
    tf = _tensorflow("A TF Hub handle")
    handle = _handle_path(handle)
    if os.path.isdir(handle):
        path = handle
    elif "://" in handle:
        try:
            import tensorflow_hub

            path = tensorflow_hub.resolve(handle)
        except Exception as e:
            raise HubModuleError(
                f"Could not resolve TF Hub handle {handle!r} ({type(e).__name__}: {e}). "
                "Offline, pass a local SavedModel folder, or set TFHUB_CACHE_DIR to "
                "a cache that holds the module.") from e
    else:
        raise HubModuleError(
            f"No SavedModel folder at {os.path.abspath(handle)!r}: expected a "
            "folder holding saved_model.pb, or a TF Hub handle (a URL).")
    if not tf.saved_model.contains_saved_model(path):
        raise HubModuleError(
            f"{path!r} is a folder but not a SavedModel (no saved_model.pb or "
            "saved_model.pbtxt in it).")
    return path


def _handle_path(handle):
    """`handle` as a str, or an `ArgumentTypeError` saying what a handle is."""
    try:
        return os.fspath(handle)
    except TypeError as e:
        raise ArgumentTypeError(
            f"Expected a handle: a SavedModel folder (str or path) or a TF Hub URL; "
            f"received {handle!r} of type {type(handle).__name__}.") from e


def _keras_name(variable):
    """A valid Keras / scope name for a SavedModel variable: `k:0` -> `k`."""
    name = re.sub(r":\d+$", "", variable.name)
    return re.sub(r"[^A-Za-z0-9_.\-]", "_", name)


def _has_training_argument(function):
    specs = getattr(function, "function_spec", None) or getattr(function, "_function_spec", None)
    if specs is not None:
        try:
            return "training" in specs.fullargspec.args + specs.fullargspec.kwonlyargs
        except AttributeError:
            pass
    concrete = getattr(function, "concrete_functions", None) or []
    for c in concrete:
        _, kwargs = c.structured_input_signature
        if "training" in kwargs:
            return True
    return False


@keras.saving.register_keras_serializable(package="keras_transfer")
class HubLayer(keras.layers.Layer):
    """A TF Hub module or SavedModel as a Keras 3 layer, fine-tunable.

    Loads, from a local folder or a TF Hub handle:

    - TF2 SavedModels in TF Hub's reusable format: a callable object with
      `variables`, `trainable_variables`, optional `regularization_losses` and
      a `training` argument (what `hub.KerasLayer` loads);
    - Keras 3 exports (`model.export(path)`): the `serve` endpoint;
    - plain signatures: `signature="serving_default"`, with `output_key` to
      pick one output of a dict.

    The module's variables become this layer's weights (trainable ones only
    when `trainable=True`, and only for callable modules), so any Keras
    optimizer trains them; `training` is passed to modules that take it (only
    while the layer is trainable, like BatchNormalization); the module's
    regularization losses are added while training.

    Args:
        handle: a local SavedModel folder or a TF Hub handle.
        trainable: fine-tune the module's variables.
        signature: call this signature instead of the module's `__call__`.
        output_key: with a signature (or any dict output), the output to use.
        arguments: extra keyword arguments passed on every call.
        **kwargs: `keras.layers.Layer` arguments (`name`, `dtype`).

    Raises:
        HubModuleError: the handle does not lead to a SavedModel, or the module
            has neither a callable nor the requested signature.
        ArgumentTypeError: `handle` is not a path or URL, or `arguments` is
            not a dict.
        BackendError: Keras runs another backend than TensorFlow.

    Example:

    ```python
    model = keras.Sequential([
        keras.Input((28, 28, 1)),
        keras_transfer.HubLayer("exported/features", trainable=True, name="base"),
        keras.layers.Dense(10, activation="softmax")])
    ```
    """

    def __init__(self, handle, trainable=False, signature=None, output_key=None,
                 arguments=None, **kwargs):
        tf = _tensorflow("HubLayer")
        handle = _handle_path(handle)
        if arguments is not None and not isinstance(arguments, dict):
            raise ArgumentTypeError(
                f"arguments= must be a dict of keyword arguments for the module; "
                f"received {type(arguments).__name__}: {arguments!r}.")
        super().__init__(trainable=trainable, **kwargs)
        self.handle = handle
        self.signature = signature
        self.output_key = output_key
        self.arguments = dict(arguments or {})
        path = resolve_handle(self.handle)
        try:
            self._module = tf.saved_model.load(path)
        except Exception as e:
            raise HubModuleError(f"Could not load the SavedModel at {path!r}: {e}") from e
        self._fn, self._passes_training = self._resolve_callable()
        trainable_ids = set()
        module_vars = list(getattr(self._module, "variables", []) or [])
        module_trainable = list(getattr(self._module, "trainable_variables", []) or [])
        if not module_vars and self.signature is not None:
            function = self._module.signatures[self.signature]
            module_trainable = list(function.trainable_variables)
            module_vars = list(function.variables)
        if self.signature is not None:
            module_trainable = []  # signatures do not support training well
        for v in module_trainable:
            trainable_ids.add(id(v))
            self._wrap(v, trainable=True)
        for v in module_vars:
            if id(v) not in trainable_ids:
                self._wrap(v, trainable=False)
        self._regularizers = list(getattr(self._module, "regularization_losses", []) or [])
        self.built = True

    def _wrap(self, tf_variable, trainable):
        # Going around `add_weight`: the variable exists already (the module's
        # graphs read it), so a Keras variable is made around it, not a copy.
        # Under the layer's name, as `add_weight` would: paths `<layer>/<var>`.
        with keras.name_scope(self.name):
            variable = keras.Variable(initializer=tf_variable, trainable=trainable,
                                      dtype=tf_variable.dtype, shape=tf_variable.shape,
                                      name=_keras_name(tf_variable))
        self._track_variable(variable)

    def _resolve_callable(self):
        module = self._module
        if self.signature is not None:
            if self.signature not in module.signatures:
                raise HubModuleError(
                    f"{self.handle!r} has no signature {self.signature!r}; it has "
                    f"{sorted(module.signatures)}.")
            return module.signatures[self.signature], False
        if callable(module):
            return module, _has_training_argument(module.__call__)
        if hasattr(module, "serve"):  # a Keras 3 `model.export`
            return module.serve, False
        raise HubModuleError(
            f"{self.handle!r} is a SavedModel but neither callable nor a Keras "
            f"export; pass signature= (it has {sorted(module.signatures)}).")

    def call(self, inputs, training=None):
        kwargs = dict(self.arguments)
        if self._passes_training:
            kwargs["training"] = bool(training) and self.trainable
        if self.signature is not None and isinstance(inputs, dict):
            result = self._fn(**inputs, **kwargs)
        else:
            result = self._fn(inputs, **kwargs)
        if self.output_key is not None or (self.signature is not None and isinstance(result, dict)):
            if not isinstance(result, dict):
                raise HubModuleError(
                    f"output_key={self.output_key!r} given, but {self.handle!r} "
                    f"returns {type(result).__name__}, not a dict.")
            key = self.output_key
            if key is None:
                if len(result) != 1:
                    raise HubModuleError(
                        f"{self.handle!r} returns several outputs {sorted(result)}; "
                        "pass output_key= to pick one.")
                key = next(iter(result))
            if key not in result:
                raise HubModuleError(
                    f"output_key={key!r} is not an output of {self.handle!r}; "
                    f"outputs: {sorted(result)}.")
            result = result[key]
        if training and self.trainable and self._regularizers:
            self.add_loss(sum(loss() for loss in self._regularizers))
        return result

    def get_config(self):
        return {**super().get_config(), "handle": self.handle, "signature": self.signature,
                "output_key": self.output_key, "arguments": self.arguments}

    @classmethod
    def from_config(cls, config, custom_objects=None, safe_mode=None):
        from keras.src.saving import serialization_lib

        safe = safe_mode if safe_mode is not None else serialization_lib.in_safe_mode()
        if safe is not False:
            raise HubModuleError(
                f"Deserializing a HubLayer loads the SavedModel at "
                f"{config.get('handle')!r}, which runs its TensorFlow graphs. Keras' "
                "safe mode forbids that: if you trust the module, pass "
                "safe_mode=False to keras.saving.load_model.")
        return cls(**config)


def export_hub_module(model, path, *, input_shape=None, input_dtype="float32"):
    """Exports a Keras 3 model (or layer) as a TF Hub reusable SavedModel.

    The SavedModel is callable as `obj(inputs, training=False)`, with
    `variables`, `trainable_variables` and `regularization_losses`, so that
    both `hub.KerasLayer` in tf_keras and `HubLayer` in Keras 3 load it.

    Args:
        model: a built Keras 3 model or layer.
        path: the folder to write.
        input_shape: the input shape with batch axis (`(None, 28, 28, 1)`);
            defaults to the model's input shape.
        input_dtype: the input dtype.

    Returns:
        The path written.

    Raises:
        BackendError: Keras runs another backend than TensorFlow.
        ArgumentError: the input shape cannot be told; pass `input_shape=`.

    Example:

    ```python
    keras_transfer.export_hub_module(base, "exported/features")
    layer = keras_transfer.HubLayer("exported/features", trainable=True)
    ```
    """
    tf = _tensorflow("export_hub_module")
    if input_shape is None:
        try:
            input_shape = tuple(model.inputs[0].shape)
        except (AttributeError, IndexError, TypeError) as e:
            raise ArgumentError(
                f"Cannot tell the input shape of {model.name!r}; pass input_shape=.") from e
    # TF Hub's reusable SavedModel API, built the way its docs export one.
    module = tf.train.Checkpoint()
    module.keras_model = model  # tracks every variable the graphs read
    module.variables = [v.value for v in model.weights]
    module.trainable_variables = [v.value for v in model.trainable_weights]
    module.regularization_losses = []

    @tf.function
    def call(inputs, training=False):
        return model(inputs, training=training)

    spec = tf.TensorSpec(input_shape, input_dtype)
    for training in (False, True):
        call.get_concrete_function(spec, training=training)
    module.__call__ = call
    tf.saved_model.save(module, os.fspath(path))
    return os.fspath(path)
