"""Sources other than weight files (`.keras` archives, models in memory), and
ports of Keras 3's and tf_keras' own weight-loading tests: files written by
tf_keras or by Keras 3 itself, read by name."""

import io
import struct
import zipfile

import h5py
import keras
import numpy as np
import pytest
import tf_keras

import keras_transfer as kt
from helpers import infer, randomize, tiny_base, tiny_model
from keras_transfer import _files
from tf_keras_helpers import randomize_tf_keras


def test_a_keras_archive_is_a_by_name_source(tmp_path, data):
    x, _ = data
    source = randomize(tiny_model())
    source.save(tmp_path / "source.keras")  # written by Keras itself
    target = tiny_model(head_units=5, head_name="NewHead")
    report = kt.load_weights_by_name(target, tmp_path / "source.keras",
                                     sha256=_files.sha256_of(tmp_path / "source.keras"))
    assert report.loaded == {"Dense_a": "Dense_a", "Bn": "Bn", "Dense_b": "Dense_b"}
    assert report.missing == ("NewHead",) and report.unused == ("Head",)
    features = keras.Model(target.inputs, target.get_layer("Dense_b").output)
    source_features = keras.Model(source.inputs, source.get_layer("Dense_b").output)
    np.testing.assert_array_equal(features.predict(x, verbose=0), source_features.predict(x, verbose=0))
    with pytest.raises(kt.ChecksumError):
        kt.load_weights_by_name(target, tmp_path / "source.keras", sha256="0" * 64)


def with_lambda():
    return keras.Sequential([keras.Input((4,)), *tiny_base(),
                             keras.layers.Lambda(lambda t: t * 2, name="Twice")])


def test_a_keras_archive_holding_code_is_refused_unless_safe_mode_is_off(tmp_path):
    source = randomize(with_lambda())
    source.save(tmp_path / "lambda.keras")
    target = tiny_model()
    before = [v.numpy().copy() for v in target.weights]
    with pytest.raises(kt.UnsafeSourceError, match="safe_mode=False") as err:
        kt.load_weights_by_name(target, tmp_path / "lambda.keras")
    assert isinstance(err.value, kt.TransferError) and "lambda.keras" in str(err.value)
    for v, b in zip(target.weights, before):
        np.testing.assert_array_equal(v.numpy(), b)
    report = kt.load_weights_by_name(target, tmp_path / "lambda.keras", safe_mode=False)
    assert set(report.loaded) == {"Dense_a", "Bn", "Dense_b"}
    np.testing.assert_array_equal(target.get_layer("Bn").moving_variance.numpy(),
                                  source.get_layer("Bn").moving_variance.numpy())


class Scale(keras.layers.Layer):
    """A custom layer Keras cannot deserialize without being told of it."""

    def build(self, shape):
        self.scale = self.add_weight(shape=(shape[-1],), name="scale")

    def call(self, x):
        return x * self.scale


def test_custom_objects_reach_keras(tmp_path):
    source = randomize(keras.Sequential([keras.Input((4,)), Scale(name="Scale")]))
    source.save(tmp_path / "custom.keras")
    target = keras.Sequential([keras.Input((4,)), Scale(name="Scale")])
    with pytest.raises(kt.WeightFileError, match="custom_objects"):
        kt.load_weights_by_name(target, tmp_path / "custom.keras")
    kt.load_weights_by_name(target, tmp_path / "custom.keras", custom_objects={"Scale": Scale})
    np.testing.assert_array_equal(target.get_layer("Scale").scale.numpy(),
                                  source.get_layer("Scale").scale.numpy())


def tiny_mobilenet(head):
    """An ImageNet-style base (a nested keras.applications model) + a head."""
    base = keras.applications.MobileNetV2(weights=None, include_top=False, alpha=0.35,
                                          input_shape=(32, 32, 3), pooling="avg")
    inputs = keras.Input((32, 32, 3))
    return keras.Model(inputs, keras.layers.Dense(head, name="Head")(base(inputs))), base


def test_transfer_weights_between_models_in_memory(data):
    source = keras.applications.MobileNetV2(weights=None, include_top=False, alpha=0.35,
                                            input_shape=(32, 32, 3), pooling="avg")
    randomize(source)
    target, base = tiny_mobilenet(4)
    base.get_layer("block_3_project").trainable = False  # flags do not matter
    report = kt.transfer_weights(source, target, require="block_.*")
    assert report.path == f"model '{source.name}'"
    assert report.missing == ("Head",) and report.skipped == {} and report.unused == ()
    assert len(report.loaded) == len([layer for layer in source.layers if layer.weights])
    x = np.random.default_rng(0).uniform(-1, 1, size=(2, 32, 32, 3)).astype("float32")
    want = infer(source, x)
    assert np.isfinite(want).all() and want.std() > 0
    np.testing.assert_array_equal(infer(base, x), want)


def test_transfer_weights_checks_like_a_file_load():
    source = randomize(tiny_model(head_units=3))
    target = tiny_model(head_units=7)
    before = [v.numpy().copy() for v in target.weights]
    with pytest.raises(kt.ShapeMismatchError, match="'Head'"):
        kt.transfer_weights(source, target)
    for v, b in zip(target.weights, before):
        np.testing.assert_array_equal(v.numpy(), b)
    report = kt.transfer_weights(source, target, skip_mismatch=True,
                                 rename={"Dense_a": "Dense_a"})
    assert list(report.skipped) == ["Head"] and len(report.loaded) == 3
    with pytest.raises(kt.UnbuiltModelError):
        kt.transfer_weights(keras.Sequential([keras.layers.Dense(2)]), target)
    with pytest.raises(kt.ArgumentTypeError, match="save_weights"):
        kt.transfer_weights(tf_keras.Sequential([tf_keras.Input((4,)), tf_keras.layers.Dense(2)]),
                            target)


def rezip(source, path, compression=zipfile.ZIP_STORED, align=None):
    """`source`'s members rewritten by Python's zipfile. With `align`, the
    named member's data starts where HDF5 looks for a signature (512 bytes
    times a power of two), as it can by chance in an archive Keras wrote."""
    with zipfile.ZipFile(source) as z:
        members = [(info.filename, z.read(info)) for info in z.infolist()]
    with zipfile.ZipFile(path, "w", compression) as z:
        for name, data in members:
            info = zipfile.ZipInfo(name, (1980, 1, 1, 0, 0, 0))
            info.compress_type = compression
            if name == align:  # pad the local header with an extra field
                start = z.fp.tell() + 30 + len(name) + 4
                at = 512
                while at < start:
                    at *= 2
                info.extra = struct.pack("<HH", 0xCAFE, at - start) + bytes(at - start)
            z.writestr(info, data)
    return path


def test_a_keras_archive_that_is_also_hdf5_by_signature_loads_as_an_archive(tmp_path):
    source = randomize(tiny_model())
    source.save(tmp_path / "source.keras")
    path = rezip(tmp_path / "source.keras", tmp_path / "aligned.keras", align="model.weights.h5")
    assert zipfile.is_zipfile(path) and h5py.is_hdf5(path)
    target = tiny_model()
    report = kt.load_weights_by_name(target, path)
    assert set(report.loaded) == {"Dense_a", "Bn", "Dense_b", "Head"}
    for ours, theirs in zip(target.weights, source.weights):
        np.testing.assert_array_equal(ours.numpy(), theirs.numpy(), err_msg=ours.path)


def flip(blob, at):
    blob = bytearray(blob)
    blob[at] ^= 0x55
    return bytes(blob)


def member_data(blob, name):
    """Where member `name`'s data starts in the archive `blob`, and its size."""
    with zipfile.ZipFile(io.BytesIO(blob)) as z:
        info = z.getinfo(name)
    extra = struct.unpack("<HH", blob[info.header_offset + 26:info.header_offset + 30])
    return info.header_offset + 30 + sum(extra), info.compress_size


def damages(keras_written, deflated):
    """(what, damaged bytes) for the ways a `.keras` archive arrives broken."""
    config, config_size = member_data(keras_written, "config.json")
    weights, weights_size = member_data(keras_written, "model.weights.h5")
    directory = keras_written.rindex(b"PK\x01\x02")
    deflated_weights, _ = member_data(deflated, "model.weights.h5")
    invalid_block = bytearray(deflated)
    invalid_block[deflated_weights] = 0x07  # a final block of type 3, which deflate lacks
    return [
        ("config.json", flip(keras_written, config + config_size // 2)),
        ("model.weights.h5", flip(keras_written, weights + weights_size // 2)),
        ("central directory", flip(keras_written, directory)),
        ("deflate stream", bytes(invalid_block)),
    ]


def test_a_damaged_keras_archive_is_a_weight_file_error(tmp_path):
    source = randomize(tiny_model())
    source.save(tmp_path / "source.keras")
    deflated = rezip(tmp_path / "source.keras", tmp_path / "deflated.keras", zipfile.ZIP_DEFLATED)
    target = tiny_model()
    kt.load_weights_by_name(target, deflated)  # both archives load undamaged
    before = [v.numpy().copy() for v in target.weights]
    for what, blob in damages((tmp_path / "source.keras").read_bytes(), deflated.read_bytes()):
        path = tmp_path / "damaged.keras"
        path.write_bytes(blob)
        with pytest.raises(kt.WeightFileError) as err:
            kt.load_weights_by_name(target, path)
        message = str(err.value)
        assert str(path) in message and "damaged" in message and "again" in message, what
        for v, b in zip(target.weights, before):
            np.testing.assert_array_equal(v.numpy(), b, err_msg=what)


# --- ports of Keras 3's and tf_keras' own weight-loading tests -----------------
# Each file is written by tf_keras (save_weights / save to ".h5") or by Keras 3
# itself (save to ".keras" or ".h5"), never by keras_transfer. Where upstream's
# positional or per-array behaviour differs from a by-name loader's, the port
# pins ours and says so.


def layer_named(model, name):
    """The layer `name` of a tf_keras or Keras 3 model, nested models walked into."""
    for layer in model.layers:
        if layer.name == name:
            return layer
        if hasattr(layer, "layers"):
            found = layer_named(layer, name)
            if found is not None:
                return found
    return None


def leaf(variable):
    """'kernel' for Keras 3's 'kernel' and tf_keras' 'conv2d/kernel:0'."""
    return variable.name.split("/")[-1].split(":")[0]


def assert_loaded_from(target, source, names):
    """Each named layer of `target` holds its namesake's arrays in `source`,
    bit for bit, variable by variable."""
    for name in names:
        ours, theirs = layer_named(target, name).weights, layer_named(source, name).weights
        assert [leaf(v) for v in ours] == [leaf(v) for v in theirs], name
        for a, b in zip(ours, theirs):
            np.testing.assert_array_equal(np.asarray(a.numpy()), np.asarray(b.numpy()),
                                          err_msg=f"{name}/{leaf(a)}")


def text(value):
    return value.decode() if isinstance(value, bytes) else value


def arrays_of(model):
    return [np.array(v.numpy()) for v in model.weights]


def assert_unchanged(model, before):
    for v, b in zip(model.weights, before):
        np.testing.assert_array_equal(v.numpy(), b, err_msg=v.path)


def outputs(model, x):
    return np.asarray(keras.ops.convert_to_numpy(model(x)))


def two_dense(lib, d1_units=5, use_bias=True):
    return lib.Sequential([lib.Input((3,)), lib.layers.Dense(d1_units, use_bias=use_bias, name="d1"),
                           lib.layers.Dense(2, name="d2")])


def test_port_weight_count_mismatch_is_refused_or_skipped_by_layer(tmp_path):
    # Port of tf_keras' TestWeightSavingAndLoading.test_sequential_weight_loading_group_name_with_incorrect_length
    # (tf_keras/src/saving/legacy/save_weights_test.py), the source compiled and
    # trained so its whole-model file also holds optimizer weights.
    source = two_dense(tf_keras)
    source.compile(loss="mse", optimizer="rmsprop", metrics=["categorical_accuracy"])
    source.fit(np.ones((4, 3)), np.ones((4, 2)), verbose=0)
    randomize_tf_keras(source).save(str(tmp_path / "w.h5"))
    with h5py.File(tmp_path / "w.h5", "r") as f:
        assert "optimizer_weights" in f and "model_weights" in f
    target = two_dense(keras, use_bias=False)
    before = arrays_of(target)
    with pytest.raises(kt.ShapeMismatchError) as err:  # upstream: ValueError "Weight count mismatch"
        kt.load_weights_by_name(target, tmp_path / "w.h5")
    assert "'d1'" in str(err.value) and "['d1/bias']" in str(err.value)
    assert_unchanged(target, before)
    report = kt.load_weights_by_name(target, tmp_path / "w.h5", skip_mismatch=True)
    assert report.loaded == {"d2": "d2"} and list(report.skipped) == ["d1"]
    assert report.unused == ("d1",)
    assert_loaded_from(target, source, ["d2"])
    np.testing.assert_array_equal(target.get_layer("d1").kernel.numpy(), before[0])


def test_port_shape_mismatch_skips_whole_layers_never_single_arrays(tmp_path):
    # Port of tf_keras' TestWeightSavingAndLoading.test_sequential_weight_loading_group_name_with_incorrect_shape
    # (tf_keras/src/saving/legacy/save_weights_test.py). d1 grows from 5 to 10
    # units, so d1's arrays and d2's kernel no longer fit; d2's bias (2,) does.
    # tf_keras' skip_mismatch skips array by array and loads that bias (3.5);
    # ours loads a layer whole or not at all, so nothing fits, and loading
    # nothing is an error that gives each layer's reason.
    source = two_dense(tf_keras)
    source.layers[1].bias.assign([3.5, 3.5])
    source.save_weights(str(tmp_path / "w.h5"))
    target = two_dense(keras, d1_units=10)
    before = arrays_of(target)
    with pytest.raises(kt.ShapeMismatchError) as err:
        kt.load_weights_by_name(target, tmp_path / "w.h5")
    assert "'d1'" in str(err.value) and "(3, 5)" in str(err.value) and "(3, 10)" in str(err.value)
    assert_unchanged(target, before)
    with pytest.raises(kt.NoLayersMatchedError) as err:
        kt.load_weights_by_name(target, tmp_path / "w.h5", skip_mismatch=True)
    message = str(err.value)
    assert "Every match was skipped" in message
    assert "'d1': " in message and "(3, 5)" in message and "(3, 10)" in message
    assert "'d2': " in message and "(5, 2)" in message and "(10, 2)" in message
    assert_unchanged(target, before)
    np.testing.assert_array_equal(target.get_layer("d2").bias.numpy(), [0.0, 0.0])


def nested_conv_bn(lib):
    """tf_keras' test_nested_model_weight_loading model: a functional model
    nesting a functional model that nests two Sequential [Conv2D, BN]."""
    def seq_model():
        return lib.Sequential([lib.Input((None, None, 3)), lib.layers.Conv2D(3, 1),
                               lib.layers.BatchNormalization()])
    x = inner_inputs = lib.Input((None, None, 3))
    x = seq_model()(x)
    x = seq_model()(x)
    inner_model = lib.Model(inner_inputs, x)
    inputs = lib.Input((None, None, 3))
    return lib.Model(inputs, inner_model(inputs))


CONV_BN = ["conv2d", "batch_normalization", "conv2d_1", "batch_normalization_1"]


@pytest.mark.parametrize("save", ["save_weights", "save"])
def test_port_nested_model_weight_loading(tmp_path, save):
    # Port of tf_keras' TestWeightSavingAndLoading.test_nested_model_weight_loading
    # (tf_keras/src/saving/legacy/save_weights_test.py), h5 formats. tf_keras
    # lists the group of the nested model trainable first (both gammas before
    # any moving mean); the moving statistics must still reach their own BN.
    source = randomize_tf_keras(nested_conv_bn(tf_keras))
    getattr(source, save)(str(tmp_path / "w.h5"))
    target = nested_conv_bn(keras)
    report = kt.load_weights_by_name(target, tmp_path / "w.h5")
    group = source.layers[1].name  # tf_keras' automatic name of the inner model
    assert report.loaded == {n: f"{group}/{n}" for n in CONV_BN}
    assert set(report.how.values()) == {f"in '{group}', by name"}
    assert report.missing == () and report.unused == () and report.skipped == {}
    assert_loaded_from(target, source, CONV_BN)
    x = np.random.default_rng(0).random((5, 2, 2, 3)).astype("float32")
    np.testing.assert_allclose(outputs(target, x), outputs(source, x), rtol=1e-5, atol=1e-5)


def fresh_dense_stack(*units):
    """Keras 3 Sequential Input(3) -> Dense(u) for u in units, named as in a
    new process (`dense`, `dense_1`, ...), as Keras' test_partial_load builds
    them."""
    keras.backend.clear_session()
    return keras.Sequential([keras.Input(shape=(3,), batch_size=2),
                             *[keras.layers.Dense(u) for u in units]])


@pytest.mark.parametrize("file", ["mymodel.keras", "mymodel.h5"])
def test_port_partial_load(tmp_path, file):
    # Port of Keras 3's SavingTest.test_partial_load (keras/src/saving/saving_lib_test.py),
    # written by Keras 3's own `save` to a `.keras` archive and to its legacy
    # `.h5` writer (weight names without ':0').
    source = randomize(fresh_dense_stack(4, 5))
    source.save(tmp_path / file)
    # A differently shaped layer: refused, then skipped and reported.
    target = fresh_dense_stack(4, 6)
    before = arrays_of(target)
    with pytest.raises(kt.ShapeMismatchError) as err:
        kt.load_weights_by_name(target, tmp_path / file)
    assert "'dense_1'" in str(err.value) and "(4, 5)" in str(err.value) and "(4, 6)" in str(err.value)
    assert_unchanged(target, before)
    report = kt.load_weights_by_name(target, tmp_path / file, skip_mismatch=True)
    assert report.loaded == {"dense": "dense"} and list(report.skipped) == ["dense_1"]
    assert "(4, 6)" in report.skipped["dense_1"] and report.unused == ("dense_1",)
    assert_loaded_from(target, source, ["dense"])
    assert_unchanged(target.layers[1], before[2:])
    # A new layer at the end: upstream's positional loader raises unless
    # skip_mismatch; by name it is simply missing.
    target = fresh_dense_stack(4, 5, 5)
    before = arrays_of(target)
    report = kt.load_weights_by_name(target, tmp_path / file)
    assert report.loaded == {"dense": "dense", "dense_1": "dense_1"}
    assert report.missing == ("dense_2",) and report.unused == ()
    assert_loaded_from(target, source, ["dense", "dense_1"])
    assert_unchanged(target.layers[2], before[4:])


def first_second(lib, between=(), after=()):
    """Input(2) -> Dense 'first' -> `between` -> Dense 'second' -> `after`."""
    return lib.Sequential([lib.Input((2,)), lib.layers.Dense(3, name="first"), *between,
                           lib.layers.Dense(1, name="second"), *after])


@pytest.mark.parametrize("added", ["layer after", "layer between", "no-weight layer"])
def test_port_weight_loading_into_a_model_with_added_layers(tmp_path, added):
    # Port of tf_keras' TestWeightSavingAndLoadingTFFormat.test_weight_loading_graph_model_added_layer
    # and .test_weight_loading_graph_model_added_no_weight_layer
    # (tf_keras/src/saving/legacy/save_weights_test.py), from TF checkpoints to
    # a tf_keras `.h5` file; "layer between" changes the topology around the
    # loaded layers. (Upstream's second half, the target's weights saved back
    # into the source, would test our writer: left out.)
    source = randomize_tf_keras(first_second(tf_keras))
    source.save_weights(str(tmp_path / "w.h5"))
    new = {"layer after": ([], [keras.layers.Dense(3, name="secondjr")]),
           "layer between": ([keras.layers.Dense(3, name="inserted")], []),
           "no-weight layer": ([], [keras.layers.Dropout(0.1)])}[added]
    target = first_second(keras, *new)
    new_layers = [layer for layer in target.layers if layer.weights and layer.name not in ("first", "second")]
    before = [arrays_of(layer) for layer in new_layers]
    report = kt.load_weights_by_name(target, tmp_path / "w.h5")
    assert report.loaded == {"first": "first", "second": "second"} and report.unused == ()
    assert report.missing == tuple(layer.name for layer in new_layers)
    assert_loaded_from(target, source, ["first", "second"])
    for layer, b in zip(new_layers, before):
        assert_unchanged(layer, b)
    if added != "layer between":
        x = np.random.default_rng(0).random((3, 2)).astype("float32")
        second = keras.Model(target.inputs[0], target.get_layer("second").output)
        np.testing.assert_allclose(outputs(second, x), outputs(source, x), rtol=1e-5, atol=1e-5)


def test_port_layer_name_that_is_a_prefix_of_another(tmp_path):
    # Port of tf_keras' TestWholeModelSaving.test_saving_group_naming_h5py
    # (tf_keras/src/saving/save_test.py): layer 'conv1/conv' beside layer
    # 'conv1', so the file's group 'conv1' also holds the group 'conv'. Keras 3
    # refuses '/' in names: the target's 'conv1_conv' takes 'conv1/conv' by the
    # Keras 2 -> 3 rename, and a weighted 'conv1' takes nothing of it.
    inputs = tf_keras.layers.Input((None, None, 3), name="test_input")
    x = tf_keras.layers.Conv2D(3, 1, name="conv1/conv")(inputs)
    x = tf_keras.layers.Activation("relu", name="conv1")(x)
    source = randomize_tf_keras(tf_keras.Model(inputs=inputs, outputs=x))
    source.save_weights(str(tmp_path / "w.h5"))

    def target(conv1):
        inputs = keras.Input((None, None, 3))
        return keras.Model(inputs, conv1(keras.layers.Conv2D(3, 1, name="conv1_conv")(inputs)))

    as_upstream = target(keras.layers.Activation("relu", name="conv1"))
    report = kt.load_weights_by_name(as_upstream, tmp_path / "w.h5")
    assert report.loaded == {"conv1_conv": "conv1/conv"}
    assert report.how == {"conv1_conv": "normalized, by name"}
    for ours, theirs in zip(as_upstream.get_layer("conv1_conv").weights,
                            source.get_layer("conv1/conv").weights):
        np.testing.assert_array_equal(ours.numpy(), theirs.numpy())
    x = np.random.default_rng(0).random((2, 3, 3, 3)).astype("float32")
    np.testing.assert_allclose(outputs(as_upstream, x), outputs(source, x), rtol=1e-5, atol=1e-5)

    # A weighted 'conv1' of the very shapes of 'conv1/conv' still takes nothing.
    weighted = target(keras.layers.Conv2D(3, 1, name="conv1"))
    before = arrays_of(weighted.get_layer("conv1"))
    report = kt.load_weights_by_name(weighted, tmp_path / "w.h5")
    assert report.loaded == {"conv1_conv": "conv1/conv"} and report.missing == ("conv1",)
    assert_unchanged(weighted.get_layer("conv1"), before)


def residual_model(lib):
    """Keras 3's legacy_h5_format_test get_functional_model: automatic names."""
    inputs = lib.Input((3,), batch_size=2)
    x = lib.layers.Dense(4, activation="relu")(inputs)
    residual = x
    x = lib.layers.BatchNormalization(moving_mean_initializer="uniform",
                                      gamma_initializer="uniform")(x)
    x = lib.layers.Dense(4, activation="relu")(x)
    x = lib.layers.add([x, residual])
    outputs = lib.layers.Dense(5, activation="softmax")(x)
    return lib.Model(inputs, outputs)


@pytest.mark.parametrize("writer", ["tf_keras save_weights", "tf_keras save", "keras save"])
def test_port_functional_model_weights(tmp_path, writer):
    # Port of Keras 3's LegacyH5WeightsTest.test_functional_model_weights and
    # LegacyH5BackwardsCompatTest.test_functional_model
    # (keras/src/legacy/saving/legacy_h5_format_test.py), plus Keras 3's own
    # legacy writer: tf_keras names arrays 'dense/kernel:0', Keras 3
    # 'functional/dense/kernel'. Both frameworks name the layers alike.
    lib, save = writer.split()
    if lib == "tf_keras":
        source = randomize_tf_keras(residual_model(tf_keras))
    else:
        source = randomize(residual_model(keras))
        keras.backend.clear_session()  # the target's names, as in a new process
    getattr(source, save)(str(tmp_path / "w.h5"))
    with h5py.File(tmp_path / "w.h5", "r") as f:
        root = f["model_weights"] if "model_weights" in f else f
        stored = [text(n) for n in root["dense"].attrs["weight_names"]]
    assert all(n.endswith(":0") == (lib == "tf_keras") for n in stored), stored
    target = residual_model(keras)
    names = ["dense", "batch_normalization", "dense_1", "dense_2"]
    report = kt.load_weights_by_name(target, tmp_path / "w.h5")
    assert report.loaded == {n: n for n in names} and report.how == {n: "by name" for n in names}
    assert_loaded_from(target, source, names)
    x = np.random.default_rng(0).random((2, 3)).astype("float32")
    np.testing.assert_allclose(outputs(target, x), outputs(source, x), rtol=1e-5, atol=1e-5)


def subclassed_with_bias(lib):
    """Keras 3's legacy_h5_format_test get_subclassed_model: a weight the
    model holds itself beside two layers of automatic names."""

    class MyModel(lib.Model):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.dense_1 = lib.layers.Dense(3, activation="relu")
            self.dense_2 = lib.layers.Dense(1, activation="sigmoid")
            self.bias = self.add_weight(name="bias", shape=[1], trainable=True,
                                        initializer=lib.initializers.Zeros())

        def call(self, x):
            return self.dense_2(self.dense_1(x)) + self.bias

    model = MyModel()
    model(np.random.default_rng(0).random((2, 3)).astype("float32"))
    return model


def test_port_subclassed_model_weights(tmp_path):
    # Port of Keras 3's LegacyH5WeightsTest.test_subclassed_model_weights
    # (keras/src/legacy/saving/legacy_h5_format_test.py). tf_keras stores the
    # layers' arrays as 'my_model/dense/kernel:0' and the model's own weight,
    # unprefixed, as 'bias:0' in 'top_level_model_weights'.
    source = randomize_tf_keras(subclassed_with_bias(tf_keras))
    source.save_weights(str(tmp_path / "w.h5"))
    with h5py.File(tmp_path / "w.h5", "r") as f:
        assert [text(n) for n in f["top_level_model_weights"].attrs["weight_names"]] == ["bias:0"]
    target = subclassed_with_bias(keras)
    report = kt.load_weights_by_name(target, tmp_path / "w.h5")
    assert report.loaded == {"dense": "dense", "dense_1": "dense_1",
                             "my_model": "top_level_model_weights"}
    assert_loaded_from(target, source, ["dense", "dense_1"])
    np.testing.assert_array_equal(target.bias.numpy(), source.bias.numpy())
    x = np.random.default_rng(1).random((2, 3)).astype("float32")
    np.testing.assert_allclose(outputs(target, x), outputs(source, x), rtol=1e-5, atol=1e-5)


def repeat_then_time_distributed(lib):
    model = lib.Sequential([lib.Input((3,)), lib.layers.Dense(2), lib.layers.RepeatVector(3),
                            lib.layers.TimeDistributed(lib.layers.Dense(3))])
    model.compile(optimizer="rmsprop", loss="mean_squared_error")
    return model


def test_port_compiled_model_with_various_layers(tmp_path):
    # Port of Keras 3's LegacyH5BackwardsCompatTest.test_compiled_model_with_various_layers
    # (keras/src/legacy/saving/legacy_h5_format_test.py): a trained tf_keras
    # model's whole-model file, optimizer weights included, with a layer
    # without weights and a TimeDistributed ('time_distributed/kernel:0'
    # for Keras 3's 'time_distributed/dense_1/kernel').
    source = repeat_then_time_distributed(tf_keras)
    source.fit(np.ones((2, 3)), np.ones((2, 3, 3)), verbose=0)
    randomize_tf_keras(source).save(str(tmp_path / "w.h5"))
    target = repeat_then_time_distributed(keras)
    report = kt.load_weights_by_name(target, tmp_path / "w.h5")
    assert report.loaded == {"dense": "dense", "time_distributed": "time_distributed"}
    assert report.how == {"dense": "by name", "time_distributed": "by name"}
    assert report.unused == () and report.missing == ()
    assert_loaded_from(target, source, ["dense", "time_distributed"])
    x = np.random.default_rng(0).random((1, 3)).astype("float32")
    np.testing.assert_allclose(outputs(target, x), outputs(source, x), rtol=1e-5, atol=1e-5)


def with_sublayers(lib):
    """Keras 3's legacy_h5_format_test test_nested_layers model: a layer
    holding a list of layers, one with weights."""

    class MyLayer(lib.layers.Layer):
        def __init__(self, sublayers, **kwargs):
            super().__init__(**kwargs)
            self.sublayers = sublayers

        def call(self, x):
            for layer in self.sublayers:
                x = layer(x)
            return x

    class RegisteredSubLayer(lib.layers.Layer):
        def call(self, x):
            return x

    return lib.Sequential([MyLayer([lib.layers.Dense(2, name="MyDense"),
                                    RegisteredSubLayer(name="MySubLayer")])])


def test_port_nested_layers(tmp_path):
    # Port of Keras 3's LegacyH5BackwardsCompatTest.test_nested_layers
    # (keras/src/legacy/saving/legacy_h5_format_test.py): tf_keras stores the
    # sublayer's arrays as 'my_layer/MyDense/kernel:0' in group 'my_layer'.
    x = np.random.default_rng(0).random((4, 2)).astype("float32")
    source = with_sublayers(tf_keras)
    source(x)
    randomize_tf_keras(source).save_weights(str(tmp_path / "w.h5"))
    target = with_sublayers(keras)
    target(x)
    report = kt.load_weights_by_name(target, tmp_path / "w.h5")
    assert report.loaded == {"my_layer": "my_layer"} and report.how == {"my_layer": "by name"}
    assert_loaded_from(target, source, ["my_layer"])
    np.testing.assert_allclose(outputs(target, x), outputs(source, x), rtol=1e-5, atol=1e-5)


def stacked_lstm_cells(lib):
    """tf_keras' test_saving_h5_for_rnn_layers model, smaller: an RNN over two
    LSTMCells of one size, so both recurrent kernels (and biases) have one
    shape and only their names tell them apart."""
    inputs = lib.Input([10, 9], name="train_input")
    cells = [lib.layers.LSTMCell(4, recurrent_dropout=0, name=f"rnn_cell{i}") for i in range(2)]
    rnn_output = lib.layers.RNN(cells, return_sequences=True, name="rnn_layer")(inputs)
    pred_feat = lib.layers.Dense(9, name="prediction_features")(rnn_output)
    pred = lib.layers.Softmax()(pred_feat)
    return lib.Model(inputs=inputs, outputs=[pred, pred_feat])


def test_port_rnn_of_stacked_cells(tmp_path):
    # Port of tf_keras' TestSaveModel.test_saving_h5_for_rnn_layers
    # (tf_keras/src/saving/save_test.py): tf_keras names the cells' arrays
    # 'rnn_layer/stacked_rnn_cells/rnn_cell1/kernel:0'.
    source = randomize_tf_keras(stacked_lstm_cells(tf_keras))
    source.save(str(tmp_path / "w.h5"))
    with h5py.File(tmp_path / "w.h5", "r") as f:
        stored = [text(n) for n in f["model_weights/rnn_layer"].attrs["weight_names"]]
    assert "rnn_layer/stacked_rnn_cells/rnn_cell1/recurrent_kernel:0" in stored
    target = stacked_lstm_cells(keras)
    report = kt.load_weights_by_name(target, tmp_path / "w.h5")
    assert report.loaded == {"rnn_layer": "rnn_layer", "prediction_features": "prediction_features"}
    assert report.how["rnn_layer"] == "by name"
    assert_loaded_from(target, source, ["rnn_layer", "prediction_features"])
    x = np.random.default_rng(0).random((2, 10, 9)).astype("float32")
    np.testing.assert_allclose(keras.ops.convert_to_numpy(target(x)[1]), source(x)[1].numpy(),
                               rtol=1e-5, atol=1e-5)


def shared_base(lib, kind):
    """tf_keras' TestWholeModelSavingWithNesting model: one nested model
    applied to two inputs (shared weights), a Sequential or a subclassed model
    whose layers are named 'hidden' and 'logits'."""
    if kind == "sequential":
        base = lib.Sequential([lib.Input((4,)), lib.layers.Dense(8, activation="relu"),
                               lib.layers.Dense(2)])
    else:
        class Subclassed(lib.Model):
            def __init__(self):
                super().__init__()
                self._hidden_layer = lib.layers.Dense(8, activation="relu", name="hidden")
                self._logits_layer = lib.layers.Dense(2, name="logits")

            def call(self, inputs):
                return self._logits_layer(self._hidden_layer(inputs))

        base = Subclassed()
    inputs = (lib.Input(shape=(4,), name="examples"), lib.Input(shape=(4,), name="neighbors"))
    return lib.Model(inputs=inputs, outputs=lib.layers.add([base(inputs[0]), base(inputs[1])]))


@pytest.mark.parametrize("kind, layers", [("sequential", ["dense", "dense_1"]),
                                          ("subclassed", ["hidden", "logits"])])
def test_port_model_nesting_a_shared_model(tmp_path, kind, layers):
    # Port of tf_keras' TestWholeModelSavingWithNesting.test_functional,
    # cases 'sequential_input_shape' and 'subclassed' (tf_keras/src/saving/save_test.py).
    source = randomize_tf_keras(shared_base(tf_keras, kind))
    source.save(str(tmp_path / "model.h5"))
    target = shared_base(keras, kind)
    report = kt.load_weights_by_name(target, tmp_path / "model.h5")
    group = source.layers[2].name  # the nested model, after the two inputs
    assert report.loaded == {n: f"{group}/{n}" for n in layers} and report.unused == ()
    assert_loaded_from(target, source, layers)
    rng = np.random.default_rng(0)
    x = [rng.normal(size=(16, 4)).astype("float32") for _ in range(2)]
    np.testing.assert_allclose(outputs(target, x), outputs(source, x), rtol=1e-5, atol=1e-5)
