import os

import h5py
import keras
import numpy as np
import pytest

import keras_transfer as kt
from helpers import randomize, tiny_base, tiny_model


def text(value):
    return value.decode() if isinstance(value, bytes) else value


def predict(model, x):
    return model.predict(x, verbose=0)


def test_keras_own_by_name_loader_reads_our_file(tmp_path, data):
    x, _ = data
    source = randomize(tiny_model())
    path = kt.save_weights_by_name(source, tmp_path / "w.h5")
    target = tiny_model()
    target.load_weights(path, by_name=True)  # Keras 3's own legacy loader
    np.testing.assert_array_equal(predict(target, x), predict(source, x))


def test_round_trip_restores_every_weight_including_bn_statistics(tmp_path, data):
    x, _ = data
    source = randomize(tiny_model())
    kt.save_weights_by_name(source, tmp_path / "w.h5")
    target = tiny_model()
    report = kt.load_weights_by_name(target, tmp_path / "w.h5")
    assert list(report.loaded) == ["Dense_a", "Bn", "Dense_b", "Head"]
    for a, b in zip(source.weights, target.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.path)
    np.testing.assert_array_equal(predict(target, x), predict(source, x))


def test_file_layout_is_the_legacy_by_name_layout(tmp_path):
    kt.save_weights_by_name(randomize(tiny_model()), tmp_path / "w.h5")
    with h5py.File(tmp_path / "w.h5", "r") as f:
        assert [n.decode() for n in f.attrs["layer_names"]] == [
            "Dense_a", "Bn", "Dense_b", "Head"]
        assert text(f.attrs["backend"]) == "tensorflow"
        assert text(f.attrs["keras_version"]) == keras.__version__
        names = [n.decode() for n in f["Bn"].attrs["weight_names"]]
        assert names == ["Bn/gamma", "Bn/beta", "Bn/moving_mean", "Bn/moving_variance"]


def test_new_head_is_missing_and_old_head_unused(tmp_path):
    kt.save_weights_by_name(randomize(tiny_model()), tmp_path / "w.h5")
    target = tiny_model(head_units=5, head_name="NewHead")
    fresh = target.get_layer("NewHead").kernel.numpy().copy()
    report = kt.load_weights_by_name(target, tmp_path / "w.h5")
    assert report.missing == ("NewHead",)
    assert report.unused == ("Head",)
    np.testing.assert_array_equal(target.get_layer("NewHead").kernel.numpy(), fresh)
    text = str(report)
    assert "NewHead" in text and "missing" in text and "unused in source: Head" in text


@pytest.mark.parametrize("rename", [{"Head_1": "Head"}, lambda n: n.replace("_1", "")])
def test_rename_takes_a_layer_from_another_name(tmp_path, rename):
    source = randomize(tiny_model())
    kt.save_weights_by_name(source, tmp_path / "w.h5")
    target = tiny_model(head_name="Head_1")
    report = kt.load_weights_by_name(target, tmp_path / "w.h5", rename=rename)
    assert report.loaded["Head_1"] == "Head"
    np.testing.assert_array_equal(
        target.get_layer("Head_1").kernel.numpy(), source.get_layer("Head").kernel.numpy())


def test_shape_mismatch_names_layer_and_both_shapes_and_assigns_nothing(tmp_path):
    kt.save_weights_by_name(randomize(tiny_model(head_units=3)), tmp_path / "w.h5")
    target = tiny_model(head_units=7)
    before = [v.numpy().copy() for v in target.weights]
    with pytest.raises(kt.ShapeMismatchError) as err:
        kt.load_weights_by_name(target, tmp_path / "w.h5")
    message = str(err.value)
    assert "'Head'" in message and "(6, 7)" in message and "(6, 3)" in message
    for v, b in zip(target.weights, before):  # nothing loaded on error
        np.testing.assert_array_equal(v.numpy(), b)


def test_skip_mismatch_skips_and_reports(tmp_path):
    source = randomize(tiny_model(head_units=3))
    kt.save_weights_by_name(source, tmp_path / "w.h5")
    target = tiny_model(head_units=7)
    report = kt.load_weights_by_name(target, tmp_path / "w.h5", skip_mismatch=True)
    assert "Head" in report.skipped and "(6, 3)" in report.skipped["Head"]
    assert "Head" not in report.loaded
    np.testing.assert_array_equal(
        target.get_layer("Dense_a").kernel.numpy(), source.get_layer("Dense_a").kernel.numpy())


def test_require_by_names_and_by_pattern(tmp_path):
    kt.save_weights_by_name(randomize(tiny_model()), tmp_path / "w.h5")
    target = tiny_model(head_name="NewHead")
    report = kt.load_weights_by_name(target, tmp_path / "w.h5", require=["Dense_a", "Bn"])
    assert "Dense_a" in report.loaded
    kt.load_weights_by_name(target, tmp_path / "w.h5", require="Dense_.*|Bn")
    with pytest.raises(kt.MissingWeightsError, match="NewHead"):
        kt.load_weights_by_name(target, tmp_path / "w.h5", require=["Dense_a", "NewHead"])
    with pytest.raises(kt.MissingWeightsError, match="NewHead"):
        kt.load_weights_by_name(target, tmp_path / "w.h5", require=".*")


def test_zero_matches_is_an_error_with_close_names(tmp_path):
    kt.save_weights_by_name(randomize(tiny_model()), tmp_path / "w.h5")
    target = keras.Sequential(
        [keras.Input((4,)), keras.layers.Dense(8, name="Dense_a2"),
         keras.layers.Dense(3, name="Heads")])
    with pytest.raises(kt.NoLayersMatchedError) as err:
        kt.load_weights_by_name(target, tmp_path / "w.h5")
    assert "'Dense_a2' is not in the source; close: ['Dense_a'" in str(err.value)
    assert "'Heads' is not in the source; close: ['Head']" in str(err.value)
    assert "rename=" in str(err.value)


def test_zero_loaded_never_calls_a_layer_in_the_file_absent(tmp_path):
    # The Keras 2.0 file of issue 12 gave "'conv2d_1' is not in the file;
    # close: ['conv2d_1', ...]". A layer whose name is in the file is loaded,
    # refused or skipped with its reason, never "not in the file".
    kt.save_weights_by_name(randomize(tiny_model()), tmp_path / "w.h5")
    target = keras.Sequential([keras.Input((3,)), keras.layers.Dense(5, name="Dense_a"),
                               keras.layers.Dense(2, name="head")])
    with pytest.raises(kt.NoLayersMatchedError) as err:
        kt.load_weights_by_name(target, tmp_path / "w.h5", skip_mismatch=True)
    message = str(err.value)
    assert "Every match was skipped" in message and "(3, 5)" in message and "(4, 8)" in message
    assert "not in the source" not in message


def nested_model(frozen_dense=False):
    base = keras.Sequential([keras.Input((4,)), *tiny_base()], name="base")
    if frozen_dense:
        base.get_layer("Dense_a").trainable = False
    return keras.Sequential([keras.Input((4,)), base, keras.layers.Dense(3, name="Head")])


def test_flat_source_into_nested_target_and_back(tmp_path, data):
    x, _ = data
    flat = randomize(tiny_model())
    kt.save_weights_by_name(flat, tmp_path / "flat.h5")
    nested = nested_model()
    report = kt.load_weights_by_name(nested, tmp_path / "flat.h5")
    assert set(report.loaded) == {"Dense_a", "Bn", "Dense_b", "Head"}
    np.testing.assert_array_equal(predict(nested, x), predict(flat, x))

    kt.save_weights_by_name(randomize(nested, seed=2), tmp_path / "nested.h5")
    flat2 = tiny_model()
    kt.load_weights_by_name(flat2, tmp_path / "nested.h5")
    np.testing.assert_array_equal(predict(flat2, x), predict(nested, x))
    nested2 = nested_model()  # Keras' own loader fills the nested base too
    nested2.load_weights(tmp_path / "nested.h5", by_name=True)
    np.testing.assert_array_equal(predict(nested2, x), predict(nested, x))


def test_partly_frozen_nested_model_loads_by_variable_name(tmp_path, data):
    # Keras' legacy loader orders a container's weights trainable-first, so a
    # partly frozen base lines up differently from the file; we match by name.
    x, _ = data
    source = randomize(nested_model())
    kt.save_weights_by_name(source, tmp_path / "w.h5")
    target = nested_model(frozen_dense=True)
    kt.load_weights_by_name(target, tmp_path / "w.h5")
    np.testing.assert_array_equal(predict(target, x), predict(source, x))


def test_duplicate_layer_names_are_refused(tmp_path):
    inner = keras.Sequential([keras.Input((4,)), keras.layers.Dense(4, name="Dense_x")], name="inner")
    model = keras.Sequential([keras.Input((4,)), inner, keras.layers.Dense(4, name="Dense_x")])
    with pytest.raises(kt.DuplicateLayerNameError, match="Dense_x"):
        kt.save_weights_by_name(model, tmp_path / "w.h5")


def test_failed_save_leaves_the_good_file_and_no_temp(tmp_path, monkeypatch):
    path = tmp_path / "w.h5"
    kt.save_weights_by_name(randomize(tiny_model(), seed=1), path)
    good = path.read_bytes()
    calls = {"n": 0}
    real = h5py.Group.create_dataset

    def failing(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError("No space left on device (simulated)")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(h5py.Group, "create_dataset", failing)
    with pytest.raises(OSError, match="simulated"):
        kt.save_weights_by_name(randomize(tiny_model(), seed=2), path)
    assert calls["n"] == 3
    assert path.read_bytes() == good
    assert os.listdir(tmp_path) == ["w.h5"]


def test_sha256_mismatch_names_both_digests(tmp_path):
    path = kt.save_weights_by_name(randomize(tiny_model()), tmp_path / "w.h5")
    from keras_transfer import _files
    actual = _files.sha256_of(path)
    kt.load_weights_by_name(tiny_model(), path, sha256=actual)
    with pytest.raises(kt.ChecksumError) as err:
        kt.load_weights_by_name(tiny_model(), path, sha256="0" * 64)
    assert actual in str(err.value) and "0" * 64 in str(err.value)


def test_other_formats_get_a_clear_error(tmp_path):
    model = randomize(tiny_model())
    with pytest.raises(kt.WeightFileError, match="No weights file"):
        kt.load_weights_by_name(model, tmp_path / "absent.h5")
    model.save_weights(tmp_path / "m.weights.h5")
    with pytest.raises(kt.WeightFileError, match="native Keras 3") as err:
        kt.load_weights_by_name(model, tmp_path / "m.weights.h5")
    assert "model.load_weights(path), then" in str(err.value)
    assert "transfer_weights" in str(err.value) and "save_weights_by_name" in str(err.value)
    (tmp_path / "empty.h5").write_bytes(b"")
    with pytest.raises(kt.WeightFileError, match="not an HDF5 file"):
        kt.load_weights_by_name(model, tmp_path / "empty.h5")
    (tmp_path / "junk.h5").write_bytes(os.urandom(1000))
    with pytest.raises(kt.WeightFileError, match="not an HDF5 file"):
        kt.load_weights_by_name(model, tmp_path / "junk.h5")


# --- Keras 2 / tf_keras files ---------------------------------------------

tf_keras = pytest.importorskip("tf_keras")  # installed with tensorflow-hub


def tf_keras_model(nested=False):
    layers = [
        tf_keras.layers.Dense(8, activation="relu", name="Dense_a"),
        tf_keras.layers.BatchNormalization(name="Bn"),
        tf_keras.layers.Dense(6, activation="relu", name="Dense_b"),
    ]
    if nested:
        base = tf_keras.Sequential([tf_keras.Input((4,)), *layers], name="base")
        return tf_keras.Sequential([tf_keras.Input((4,)), base, tf_keras.layers.Dense(3, name="Head")])
    return tf_keras.Sequential([tf_keras.Input((4,)), *layers, tf_keras.layers.Dense(3, name="Head")])


def randomize_tf_keras(model, seed=3):
    rng = np.random.default_rng(seed)
    model.set_weights([
        (np.abs(rng.normal(size=w.shape)) + 0.5 if "variance" in w.name else rng.normal(size=w.shape)).astype("float32")
        for w in model.weights])
    return model


@pytest.mark.parametrize("nested", [False, True])
def test_tf_keras_file_loads_with_identical_predictions(tmp_path, data, nested):
    x, _ = data
    legacy = randomize_tf_keras(tf_keras_model(nested=nested))
    legacy.save_weights(str(tmp_path / "legacy.h5"))  # a real Keras-2 file
    target = tiny_model()
    report = kt.load_weights_by_name(target, tmp_path / "legacy.h5")
    assert set(report.loaded) == {"Dense_a", "Bn", "Dense_b", "Head"}
    np.testing.assert_allclose(predict(target, x), legacy.predict(x, verbose=0), rtol=1e-5, atol=1e-5)


def test_tf_keras_reads_our_file_by_name(tmp_path, data):
    x, _ = data
    source = randomize(tiny_model())
    kt.save_weights_by_name(source, tmp_path / "w.h5")
    legacy = tf_keras_model()
    legacy.load_weights(str(tmp_path / "w.h5"), by_name=True)
    np.testing.assert_allclose(legacy.predict(x, verbose=0), predict(source, x), rtol=1e-5, atol=1e-5)


# --- corrupted files: only our typed errors may come out ----------------------

from hypothesis import HealthCheck, given, settings, strategies as st  # noqa: E402


@pytest.fixture(scope="module")
def good_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("fuzz") / "good.h5"
    kt.save_weights_by_name(randomize(tiny_model()), path)
    return path.read_bytes()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_corrupted_files_raise_only_typed_errors(tmp_path_factory, good_file, data):
    blob = bytearray(good_file)
    how = data.draw(st.sampled_from(["flip", "truncate", "zero"]))
    if how == "truncate":
        blob = blob[:data.draw(st.integers(0, len(blob) - 1))]
    else:
        for _ in range(data.draw(st.integers(1, 40))):
            at = data.draw(st.integers(0, len(blob) - 1))
            blob[at] = 0 if how == "zero" else blob[at] ^ data.draw(st.integers(1, 255))
    path = tmp_path_factory.mktemp("bad") / "bad.h5"
    path.write_bytes(bytes(blob))
    model = tiny_model()
    try:
        kt.load_weights_by_name(model, path)
    except kt.TransferError:
        pass  # any other exception fails the test


def test_wrong_dtype_and_count_are_named(tmp_path):
    path = tmp_path / "w.h5"
    kt.save_weights_by_name(randomize(tiny_model()), path)
    with h5py.File(path, "r+") as f:  # a layer with too few arrays
        f["Bn"].attrs["weight_names"] = np.array([b"Bn/gamma", b"Bn/beta"])
    report = kt.load_weights_by_name(tiny_model(), path, skip_mismatch=True)
    assert "the layer's ['moving_mean', 'moving_variance'] have no array" in report.skipped["Bn"]
    with pytest.raises(kt.ShapeMismatchError, match="'Bn'"):
        kt.load_weights_by_name(tiny_model(), path)
    with h5py.File(path, "r+") as f:  # an array of strings where numbers belong
        del f["Head/Head/bias"]
        f["Head/Head"].create_dataset("bias", data=np.array([b"a", b"b", b"c"]))
    model = tiny_model()
    before = [v.numpy().copy() for v in model.weights]
    with pytest.raises(kt.WeightFileError, match="'Head/bias' holds .*S1 data"):
        kt.load_weights_by_name(model, path, skip_mismatch=True)
    for v, b in zip(model.weights, before):  # nothing was assigned
        np.testing.assert_array_equal(v.numpy(), b)


def conv_model(channels, head=3):
    return keras.Sequential([keras.Input((8, 8, channels)),
                             keras.layers.Conv2D(4, 3, name="Conv1"),
                             keras.layers.GlobalAveragePooling2D(name="Pool"),
                             keras.layers.Dense(head, name="Head")])


def test_input_channels_are_adapted_like_timm(tmp_path):
    rgb = randomize(conv_model(3))
    kt.save_weights_by_name(rgb, tmp_path / "rgb.h5")
    gray = conv_model(1)
    with pytest.raises(kt.ShapeMismatchError, match=r"\(3, 3, 1, 4\)"):
        kt.load_weights_by_name(gray, tmp_path / "rgb.h5")
    report = kt.load_weights_by_name(gray, tmp_path / "rgb.h5", adapt_input_channels=True)
    assert report.adapted == {"Conv1": "input channels 3 -> 1"}
    assert "input channels 3 -> 1" in str(report)
    # a gray image seen as equal R, G, B gives the same output as the RGB model
    g = np.random.default_rng(0).normal(size=(2, 8, 8, 1)).astype("float32")
    np.testing.assert_allclose(gray.predict(g, verbose=0), rgb.predict(np.repeat(g, 3, -1), verbose=0),
                               rtol=1e-5, atol=1e-5)
    kt.save_weights_by_name(gray, tmp_path / "gray.h5")
    back = conv_model(3)
    kt.load_weights_by_name(back, tmp_path / "gray.h5", adapt_input_channels="Conv1")
    kernel = back.get_layer("Conv1").kernel.numpy()
    np.testing.assert_allclose(kernel, np.repeat(gray.get_layer("Conv1").kernel.numpy(), 3, -2) / 3, rtol=1e-6)
