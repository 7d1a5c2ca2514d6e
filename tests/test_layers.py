"""keras_transfer.layers: FusedBatchNormalization against Keras' own layer,
and its registration for `.keras` files."""

import json
import subprocess
import sys
import zipfile

import pytest

import keras_transfer as kt


def _bn_pair(x):
    """Keras' BatchNormalization and ours, built alike with the same weights."""
    import keras
    import numpy as np

    keras_bn = keras.layers.BatchNormalization(momentum=0.9)
    fused_bn = kt.FusedBatchNormalization(momentum=0.9)
    rng = np.random.default_rng(1)
    for layer in (keras_bn, fused_bn):
        layer.build(x.shape)
    for values in zip(keras_bn.weights, fused_bn.weights):
        value = rng.uniform(0.5, 2.0, values[0].shape).astype("float32")
        for v in values:
            v.assign(value)
    return keras_bn, fused_bn


def _fused_ops(layer, spec, training=True, **call_kwargs):
    """Whether a traced call of `layer` (training mode by default) runs the fused kernel."""
    import tensorflow as tf

    graph = tf.function(lambda t: layer(t, training=training, **call_kwargs)) \
        .get_concrete_function(spec).graph
    return "FusedBatchNormV3" in {op.type for op in graph.get_operations()}


def _fit_steps(bn, x, y, steps=3):
    """A few SGD steps of a small model around `bn`; its weights afterwards."""
    import keras

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input(x.shape[1:]), keras.layers.Conv2D(4, 3), bn,
                              keras.layers.Flatten(), keras.layers.Dense(3)])
    model.compile(optimizer=keras.optimizers.SGD(0.1),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, batch_size=len(x) // steps, epochs=1, shuffle=False, verbose=0)
    return [keras.ops.convert_to_numpy(w) for w in model.weights]


def test_fused_batchnorm_trains_as_keras_batchnorm_does():
    # The same steps with Keras' layer and ours: outputs in training mode,
    # every weight after 3 SGD steps (kernels, gamma, beta) and the moving
    # statistics (Keras' biased variance, not the kernel's corrected one).
    import keras
    import numpy as np

    rng = np.random.default_rng(0)
    x = rng.normal(2.0, 3.0, (24, 7, 7, 2)).astype("float32")
    y = rng.integers(0, 3, 24)
    keras_bn, fused_bn = _bn_pair(np.zeros((24, 5, 5, 4), "float32"))
    h = rng.normal(2.0, 3.0, (24, 5, 5, 4)).astype("float32")
    expected = keras.ops.convert_to_numpy(keras_bn(h, training=True))
    np.testing.assert_allclose(keras.ops.convert_to_numpy(fused_bn(h, training=True)),
                               expected, rtol=1e-5, atol=1e-5)
    for a, b in zip(keras_bn.non_trainable_weights, fused_bn.non_trainable_weights):
        np.testing.assert_allclose(keras.ops.convert_to_numpy(b), keras.ops.convert_to_numpy(a),
                                   rtol=1e-6, atol=1e-7)
    ours = _fit_steps(kt.FusedBatchNormalization(momentum=0.9), x, y)
    theirs = _fit_steps(keras.layers.BatchNormalization(momentum=0.9), x, y)
    for a, b in zip(theirs, ours):
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-5)


def test_fused_batchnorm_runs_the_fused_kernel_on_tensorflow_only():
    import keras
    import numpy as np

    keras_bn, fused_bn = _bn_pair(np.zeros((4, 3, 3, 2), "float32"))
    x = np.random.default_rng(0).normal(size=(4, 3, 3, 2)).astype("float32")
    # inference is Keras' own call, to the bit, on every backend
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(fused_bn(x, training=False)),
                                  keras.ops.convert_to_numpy(keras_bn(x, training=False)))
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        assert _fused_ops(fused_bn, tf.TensorSpec((4, 3, 3, 2)))
        assert not _fused_ops(fused_bn, tf.TensorSpec((4, 3, 3, 2)), training=False)
    else:  # Keras' call: the same numbers as Keras' layer, to the bit
        np.testing.assert_array_equal(
            keras.ops.convert_to_numpy(fused_bn(x, training=True)),
            keras.ops.convert_to_numpy(keras_bn(x, training=True)))


def test_a_frozen_fused_batchnorm_runs_in_inference_mode_as_keras_does():
    # The transfer arm's frozen BatchNormalization under fit (training=True):
    # the moving statistics are used and kept, as in Keras' layer.
    import keras
    import numpy as np

    keras_bn, fused_bn = _bn_pair(np.zeros((4, 3, 3, 2), "float32"))
    keras_bn.trainable = fused_bn.trainable = False
    before = [keras.ops.convert_to_numpy(v) for v in fused_bn.non_trainable_weights]
    x = np.random.default_rng(0).normal(size=(4, 3, 3, 2)).astype("float32")
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(fused_bn(x, training=True)),
                                  keras.ops.convert_to_numpy(keras_bn(x, training=True)))
    for v, value in zip(fused_bn.non_trainable_weights, before):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(v), value)
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        assert not _fused_ops(fused_bn, tf.TensorSpec((4, 3, 3, 2)))


@pytest.mark.parametrize("case", ["axis_1", "mixed_float16", "mask", "renorm", "no_center",
                                  "rank_5"])
def test_fused_batchnorm_falls_back_to_keras_where_the_kernel_does_not_apply(case):
    # Each case outside the fused kernel's scope is Keras' own call: the same
    # training-mode output and moving statistics as Keras' layer.
    import keras
    import numpy as np

    shape = (4, 3, 3, 1, 2) if case == "rank_5" else (4, 3, 3, 2)
    kwargs = {"axis_1": {"axis": 1}, "mixed_float16": {"dtype": "mixed_float16"},
              "renorm": {"renorm": True}, "no_center": {"center": False}}.get(case, {})
    x = np.random.default_rng(0).normal(size=shape).astype("float32")
    mask = np.ones(shape[:-1], bool) if case == "mask" else None
    call = {"mask": mask} if mask is not None else {}
    keras_bn = keras.layers.BatchNormalization(momentum=0.9, **kwargs)
    fused_bn = kt.FusedBatchNormalization(momentum=0.9, **kwargs)
    outputs = [keras.ops.convert_to_numpy(bn(x, training=True, **call))
               for bn in (keras_bn, fused_bn)]
    np.testing.assert_array_equal(outputs[1], outputs[0])
    for a, b in zip(keras_bn.non_trainable_weights, fused_bn.non_trainable_weights):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(b), keras.ops.convert_to_numpy(a))
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        assert not _fused_ops(fused_bn, tf.TensorSpec(shape), **call)


def test_keras_batchnorm_still_has_no_fused_option():
    # FusedBatchNormalization exists because Keras 3 dropped tf.keras' `fused`
    # argument. When this fails, Keras has a fused path again: use it and
    # retire the subclass.
    import keras

    with pytest.raises(ValueError, match="fused"):
        keras.layers.BatchNormalization(fused=True)


def _bn_model():
    import keras

    return keras.Sequential([keras.Input((5, 5, 2)), keras.layers.Conv2D(3, 3, name="conv"),
                             kt.FusedBatchNormalization(momentum=0.9, name="bn")], name="m")


def _load_in_fresh_process(path):
    """Loads `path` in a new process that imports keras and keras_transfer only;
    returns (class name of layer 'bn', pipeline modules imported)."""
    code = ("import sys, keras, keras_transfer; "
            f"m = keras.saving.load_model({str(path)!r}); "
            "print(type(m.get_layer('bn')).__name__); "
            "print(sorted(k for k in sys.modules if k.startswith('keras_transfer.pipeline')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip().splitlines()
    return out[-2], out[-1]


@pytest.mark.once  # the class registry is backend-independent; on JAX, a saved
# model with it loads in-process in tests/pipeline/test_reference.py
# (test_the_reference_cnn_saves_and_loads_with_its_batchnorm_class)
def test_a_saved_model_with_it_loads_after_a_plain_import_without_the_pipeline(tmp_path):
    _bn_model().save(tmp_path / "m.keras")
    assert _load_in_fresh_process(tmp_path / "m.keras") == ("FusedBatchNormalization", "[]")


@pytest.mark.once  # the registered name is what Keras looks up, on every backend
def test_a_file_written_when_it_lived_in_the_reference_module_still_loads(tmp_path):
    # Before the move, Keras recorded the class's module as
    # `keras_transfer.reference`; the registered name is what Keras looks up.
    _bn_model().save(tmp_path / "new.keras")
    old = tmp_path / "old.keras"
    with zipfile.ZipFile(tmp_path / "new.keras") as src, zipfile.ZipFile(old, "w") as dst:
        for item in src.infolist():
            data = src.read(item.filename)
            if item.filename == "config.json":
                config = json.loads(data)
                (bn,) = [l for l in config["config"]["layers"] if l["config"]["name"] == "bn"]
                assert bn["module"] == "keras_transfer.layers"
                assert bn["registered_name"] == "keras_transfer>FusedBatchNormalization"
                bn["module"] = "keras_transfer.reference"
                data = json.dumps(config).encode()
            dst.writestr(item, data)
    assert _load_in_fresh_process(old) == ("FusedBatchNormalization", "[]")
