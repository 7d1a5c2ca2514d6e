"""save_weights_by_name / load_weights_by_name: the core round trips, bad
arguments, and what the report says."""

import os
import re
import types
import zipfile

import h5py
import keras
import numpy as np
import pytest
import tf_keras
from hypothesis import HealthCheck, given, settings, strategies as st

import keras_transfer as kt
from helpers import conv_model, predict, randomize, text, tiny_base, tiny_model
from keras_transfer import _files
from keras_transfer import _h5
from keras_transfer import _layers
from tf_keras_helpers import randomize_tf_keras, tf_keras_model


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
        assert text(f.attrs["backend"]) == keras.backend.backend()
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
    path = kt.save_weights_by_name(randomize(tiny_model()), tmp_path / "w.h5")
    target = tiny_model(head_name="NewHead")
    report = kt.load_weights_by_name(target, path, require=["Dense_a", "Bn"])
    assert set(report.loaded) == {"Dense_a", "Bn", "Dense_b"}
    report = kt.load_weights_by_name(target, path, require=re.compile("Dense_.|Bn"))
    assert set(report.loaded) == {"Dense_a", "Bn", "Dense_b"}

    fresh = tiny_model(head_name="NewHead")
    before = [v.numpy().copy() for v in fresh.weights]
    with pytest.raises(kt.MissingWeightsError, match="NewHead") as err:
        kt.load_weights_by_name(fresh, path, require=["Dense_a", "NewHead"])
    assert "'Dense_a'" not in str(err.value)
    with pytest.raises(kt.MissingWeightsError) as err:  # the pattern reaches NewHead
        kt.load_weights_by_name(fresh, path, require="Bn|New.*")
    assert "NewHead" in str(err.value) and "'Bn'" not in str(err.value)
    with pytest.raises(kt.MissingWeightsError, match="matches no layer"):
        kt.load_weights_by_name(fresh, path, require="Dense")  # a full match, not a search
    for v, b in zip(fresh.weights, before):  # a failed requirement assigns nothing
        np.testing.assert_array_equal(v.numpy(), b)


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

    # 'head' finds 'Head' taken by the layer of that very name: it is missing,
    # and the message points to 'Head' but never calls 'Head' absent.
    target = keras.Sequential([keras.Input((6,)), keras.layers.Dense(7, name="Head"),
                               keras.layers.Dense(3, name="head")])
    with pytest.raises(kt.NoLayersMatchedError) as err:
        kt.load_weights_by_name(target, tmp_path / "w.h5", skip_mismatch=True)
    message = str(err.value)
    assert "'head' is not in the source; close: ['Head']" in message
    assert "'Head' is not in the source" not in message and "(6, 7)" in message


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


def bn_stack(lib, frozen):
    """Input(4) -> nested base [Bn1, Bn2] -> Head: every base array has shape
    (4,), so a loader that goes by position assigns wrong arrays silently."""
    base = lib.Sequential([lib.Input((4,)), lib.layers.BatchNormalization(name="Bn1"),
                           lib.layers.BatchNormalization(name="Bn2")], name="base")
    base.get_layer(frozen).trainable = False
    return lib.Sequential([lib.Input((4,)), base, lib.layers.Dense(3, name="Head")])


def test_partly_frozen_nested_model_loads_by_variable_name(tmp_path, data):
    # tf_keras writes a nested model's group trainable first as flagged at save
    # time (Bn1 frozen): Bn2/gamma, Bn2/beta, Bn1/gamma, ... The target has Bn2
    # frozen instead, so its own trainable-first order differs again.
    x, _ = data
    source = randomize_tf_keras(bn_stack(tf_keras, frozen="Bn1"))
    source.save_weights(str(tmp_path / "w.h5"))
    want = source.predict(x, verbose=0)

    positional = bn_stack(keras, frozen="Bn2")  # Keras' own by-name loader
    positional.load_weights(tmp_path / "w.h5", by_name=True)
    assert not np.allclose(predict(positional, x), want, rtol=1e-3, atol=1e-3)

    target = bn_stack(keras, frozen="Bn2")
    report = kt.load_weights_by_name(target, tmp_path / "w.h5")
    assert report.how == {"Bn1": "in 'base', by name", "Bn2": "in 'base', by name",
                          "Head": "by name"}
    np.testing.assert_allclose(predict(target, x), want, rtol=1e-5, atol=1e-5)
    assert not target.get_layer("base").get_layer("Bn2").trainable  # flags untouched


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
    model.save(tmp_path / "m.keras")
    os.replace(tmp_path / "m.keras", tmp_path / "m.zip")
    with pytest.raises(kt.WeightFileError, match="zip archive not named `.keras`"):
        kt.load_weights_by_name(model, tmp_path / "m.zip")


def test_an_hdf5_file_whose_data_looks_like_a_zip_loads(tmp_path):
    # A zip file is recognized by its end record, `PK\x05\x06` and 18 bytes,
    # anywhere in its last 64 KiB; an array's data can hold those bytes. The
    # HDF5 signature at the start of the file is what decides.
    source = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, name="d")])
    kernel = source.get_layer("d").kernel
    raw = bytearray(np.asarray(kernel.numpy(), "float32").tobytes())
    raw[0:22] = b"PK\x05\x06" + bytes(18)
    kernel.assign(np.frombuffer(bytes(raw), "float32").reshape(kernel.shape))
    path = kt.save_weights_by_name(source, tmp_path / "w.h5")
    assert zipfile.is_zipfile(path) and h5py.is_hdf5(path)
    target = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, name="d")])
    report = kt.load_weights_by_name(target, path)
    assert report.loaded == {"d": "d"}
    assert target.get_layer("d").kernel.numpy().tobytes() == bytes(raw)




# --- bad arguments and what the report says (issue 14) -------------------------


def test_a_bug_outside_the_file_surfaces_as_itself(tmp_path):
    # Only h5py's errors while reading become WeightFileError: an exception
    # from code (here the user's rename callable) keeps its type.
    path = kt.save_weights_by_name(randomize(tiny_model()), tmp_path / "w.h5")
    sources = {"Dense_a": "Dense_a"}
    with pytest.raises(KeyError, match="Bn"):
        kt.load_weights_by_name(tiny_model(), path, rename=lambda name: sources[name])


def test_bad_arguments_raise_typed_errors_that_are_also_builtin(tmp_path):
    unbuilt = keras.Sequential([keras.layers.Dense(2)])
    with pytest.raises(kt.UnbuiltModelError, match="build it first") as err:
        kt.save_weights_by_name(unbuilt, tmp_path / "w.h5")
    assert isinstance(err.value, ValueError)
    path = kt.save_weights_by_name(randomize(tiny_model()), tmp_path / "w.h5")
    with pytest.raises(kt.ArgumentTypeError, match="rename must be a dict, a callable, or a list of") as err:
        kt.load_weights_by_name(tiny_model(), path, rename=3)
    assert isinstance(err.value, TypeError)
    with pytest.raises(kt.ArgumentTypeError, match="Keras 3") as err:
        kt.load_weights_by_name(tf_keras_model(), path)
    assert isinstance(err.value, TypeError)


@pytest.mark.parametrize("argument,value,error,says", [
    ("require", 5, kt.ArgumentTypeError, "a list of layer names or a regular expression"),
    ("require", [b"Bn"], kt.ArgumentTypeError, "a list of layer names or a regular expression"),
    ("adapt_input_channels", 5, kt.ArgumentTypeError, "True, a layer name or a list of"),
    ("sha256", 123, kt.ArgumentTypeError, "64 hexadecimal digits"),
    ("sha256", "abc", kt.ArgumentError, "64 hexadecimal digits"),
])
def test_arguments_that_do_not_fit_are_named(tmp_path, argument, value, error, says):
    path = kt.save_weights_by_name(randomize(tiny_model()), tmp_path / "w.h5")
    model = tiny_model()
    before = [v.numpy().copy() for v in model.weights]
    with pytest.raises(error) as err:
        kt.load_weights_by_name(model, path, **{argument: value})
    builtin = TypeError if error is kt.ArgumentTypeError else ValueError
    assert isinstance(err.value, builtin)
    assert f"{argument}=" in str(err.value) and says in str(err.value)
    assert repr(value) in str(err.value) or type(value).__name__ in str(err.value)
    for v, b in zip(model.weights, before):
        np.testing.assert_array_equal(v.numpy(), b)


def test_a_file_changed_while_it_is_read_is_refused_by_name(tmp_path, monkeypatch):
    # An array read with another shape than the file listed means the file
    # changed under the loader (it is read in two passes: names and shapes,
    # then data). Simulated here: a writer cannot be timed between the passes.
    path = kt.save_weights_by_name(randomize(tiny_model()), tmp_path / "w.h5")
    real = _h5._read

    def changed(dataset, path, name):
        value = real(dataset, path, name)
        return value[:2] if name == "Head/bias" else value

    monkeypatch.setattr(_h5, "_read", changed)
    model = tiny_model()
    before = [v.numpy().copy() for v in model.weights]
    with pytest.raises(kt.WeightFileError) as err:
        kt.load_weights_by_name(model, path)
    message = str(err.value)
    assert str(path) in message and "'Head/bias'" in message and "layer 'Head'" in message
    assert "(3,)" in message and "(2,)" in message and "again" in message
    for v, b in zip(model.weights, before):
        np.testing.assert_array_equal(v.numpy(), b)


def test_adapt_input_channels_names_must_exist_and_same_channels_are_not_adapted(tmp_path):
    path = kt.save_weights_by_name(randomize(conv_model(3)), tmp_path / "rgb.h5")
    with pytest.raises(kt.LayerSelectionError, match="Conv9"):
        kt.load_weights_by_name(conv_model(1), path, adapt_input_channels="Conv9")
    report = kt.load_weights_by_name(conv_model(3), path, adapt_input_channels=True)
    assert report.adapted == {} and "input channels" not in str(report)


def test_a_narrowing_cast_is_reported(tmp_path):
    source = randomize_tf_keras(tf_keras.Sequential(
        [tf_keras.Input((4,)), tf_keras.layers.Dense(3, name="Dense_a", dtype="float64")]))
    source.save_weights(str(tmp_path / "w.h5"))
    target = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, name="Dense_a", dtype="float16")])
    report = kt.load_weights_by_name(target, tmp_path / "w.h5")
    assert report.cast == {"Dense_a": "float64 -> float16"}
    assert "cast float64 -> float16" in str(report)
    np.testing.assert_array_equal(target.get_layer("Dense_a").kernel.numpy(),
                                  source.get_layer("Dense_a").kernel.numpy().astype("float16"))
    wider = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, name="Dense_a", dtype="float64")])
    assert kt.load_weights_by_name(wider, tmp_path / "w.h5").cast == {}
