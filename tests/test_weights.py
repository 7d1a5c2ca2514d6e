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
from helpers import randomize, tiny_base, tiny_model
from keras_transfer import _files
from keras_transfer import _h5
from keras_transfer import _layers
from tf_keras_helpers import randomize_tf_keras, tf_keras_model


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


# --- Keras 2 / tf_keras files ---------------------------------------------


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


# --- corrupted files -----------------------------------------------------------


@pytest.fixture(scope="module")
def good_file(tmp_path_factory):
    """A file of ours, the bytes of each array (object header and data), and
    what loading it gives."""
    path = tmp_path_factory.mktemp("fuzz") / "good.h5"
    kt.save_weights_by_name(randomize(tiny_model()), path)
    extents = {}
    with h5py.File(path, "r") as f:
        for layer in ("Dense_a", "Bn", "Dense_b", "Head"):
            for name in f[layer].attrs["weight_names"]:
                dataset = f[layer][name.decode()]
                header = h5py.h5o.get_info(dataset.id)
                start = dataset.id.get_offset()
                extents[name.decode()] = [
                    range(header.addr, header.addr + header.hdr.space.total),
                    range(start, start + dataset.id.get_storage_size())]
    model = tiny_model()
    report = kt.load_weights_by_name(model, path)
    return GoodFile(blob=path.read_bytes(), extents=extents, report=report,
                    values={v.path: v.numpy().copy() for v in model.weights},
                    sha256=_files.sha256_of(path))


class GoodFile(types.SimpleNamespace):
    def __repr__(self):  # hypothesis prints the arguments of a failing example
        return "GoodFile(...)"


def file_name(variable):
    """'Dense_a/kernel' for tiny_model's variable 'tiny/Dense_a/kernel'."""
    return "/".join(variable.path.split("/")[-2:])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_corrupted_files_are_refused_or_fully_accounted_for(tmp_path_factory, good_file, data):
    # HDF5 keeps no checksum of array data (and we add none), so bytes changed
    # inside one array's header or data can load as other numbers: nothing in
    # the file tells. That, and only that, may go unreported; `sha256=` is the
    # check that catches it (second half). Anything else must be accounted
    # for: a refusal with a typed error that changes no weight, or a load in
    # which every layer is reported loaded / skipped / missing, every loaded
    # array equals the good file's unless the damage hit that very array, and
    # no layer outside `loaded` changed.
    good = good_file.blob
    blob = bytearray(good)
    how = data.draw(st.sampled_from(["flip", "truncate", "zero"]))
    if how == "truncate":
        blob = blob[:data.draw(st.integers(0, len(blob) - 1))]
    else:
        for _ in range(data.draw(st.integers(1, 40))):
            at = data.draw(st.integers(0, len(blob) - 1))
            blob[at] = 0 if how == "zero" else blob[at] ^ data.draw(st.integers(1, 255))
    hit = {i for i in range(len(good)) if i >= len(blob) or blob[i] != good[i]}
    path = tmp_path_factory.mktemp("bad") / "bad.h5"
    path.write_bytes(bytes(blob))
    model = tiny_model()
    before = {v.path: v.numpy().copy() for v in model.weights}
    try:
        report = kt.load_weights_by_name(model, path)
    except kt.TransferError:
        for v in model.weights:
            np.testing.assert_array_equal(v.numpy(), before[v.path], err_msg=v.path)
    else:
        units = set(good_file.report.loaded)  # every layer, from the good file
        assert set(report.loaded) | set(report.skipped) | set(report.missing) == units
        for v in model.weights:
            layer = v.path.split("/")[-2]
            if layer not in report.loaded:
                np.testing.assert_array_equal(v.numpy(), before[v.path], err_msg=v.path)
            elif not any(hit.intersection(r) for r in good_file.extents[file_name(v)]):
                np.testing.assert_array_equal(v.numpy(), good_file.values[v.path],
                                              err_msg=v.path)
    if hit:
        with pytest.raises(kt.ChecksumError):
            kt.load_weights_by_name(model, path, sha256=good_file.sha256)


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


# --- how arrays are matched inside a layer -----------------------------------


def test_saved_order_ignores_trainable_flags_and_lora():
    # _layers.saved_order reads Keras' private `_trainable_variables`; this
    # fails if Keras renames it or stops recording creation-time trainability.
    def bn_dense():
        return keras.Sequential([keras.Input((4,)), keras.layers.BatchNormalization(name="Bn"),
                                 keras.layers.Dense(4, name="D")], name="block")
    want = [v.path for v in _layers.saved_order(bn_dense())]
    assert want == ["block/Bn/gamma", "block/Bn/beta", "block/D/kernel", "block/D/bias",
                    "block/Bn/moving_mean", "block/Bn/moving_variance"]
    frozen = bn_dense()
    frozen.get_layer("Bn").trainable = False
    frozen.get_layer("D").enable_lora(2)  # the kernel's own flag goes False
    order = [v.path for v in _layers.saved_order(frozen)]
    assert [p for p in order if "lora" not in p] == want
    assert [v.path for v in frozen.trainable_weights + frozen.non_trainable_weights] != order


class Scaled(keras.layers.Layer):
    """Weights of its own (one created trainable, one not) beside a sublayer
    that holds a sublayer: `saved_order` must see every level."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.inner = keras.Sequential([keras.layers.BatchNormalization(name="Bn")], name="inner")

    def build(self, shape):
        self.count = self.add_weight(shape=(4,), name="count", trainable=False)
        self.scale = self.add_weight(shape=(4,), name="scale")
        self.inner.build(shape)

    def call(self, x):
        return self.inner(x) * self.scale + self.count


def test_saved_order_sees_the_layer_itself_and_sublayers_at_any_depth():
    # _layers.saved_order walks Keras' private `_flatten_layers(include_self=True,
    # recursive=True)`; this fails if Keras drops the layer itself or stops at
    # the first level of sublayers (the frozen flags would then decide).
    layer = Scaled(name="scaled")
    layer.build((None, 4))
    layer.trainable = False
    assert [_layers.relative_name(layer, v) for v in _layers.saved_order(layer)] == [
        "scale", "inner/Bn/gamma", "inner/Bn/beta",
        "count", "inner/Bn/moving_mean", "inner/Bn/moving_variance"]


class Block(keras.layers.Layer):
    """A layer with sublayers whose names another writer did not use."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.proj = keras.layers.Dense(4, name="proj")
        self.norm = keras.layers.BatchNormalization(name="norm")

    def build(self, shape):
        self.proj.build(shape)
        self.norm.build(shape[:-1] + (4,))

    def call(self, x):
        return self.norm(self.proj(x))


class TfBlock(tf_keras.layers.Layer):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.dense = tf_keras.layers.Dense(4)
        self.batch_norm = tf_keras.layers.BatchNormalization()

    def call(self, x):
        return self.batch_norm(self.dense(x))


def test_arrays_go_by_saved_order_when_names_differ_whatever_is_frozen(tmp_path, data):
    x, _ = data
    source = tf_keras.Sequential([tf_keras.Input((4,)), TfBlock(name="block")])
    randomize_tf_keras(source).save_weights(str(tmp_path / "w.h5"))
    target = keras.Sequential([keras.Input((4,)), Block(name="block")])
    target.get_layer("block").proj.trainable = False  # reorders trainable_weights
    report = kt.load_weights_by_name(target, tmp_path / "w.h5")
    assert report.how == {"block": "by order"}
    np.testing.assert_allclose(predict(target, x), source.predict(x, verbose=0), rtol=1e-5, atol=1e-5)


class TwoNorms(keras.layers.Layer):
    """Two BatchNormalization sublayers: every array has one shape."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.first = keras.layers.BatchNormalization(name="first")
        self.second = keras.layers.BatchNormalization(name="second")

    def build(self, shape):
        self.first.build(shape)
        self.second.build(shape)

    def call(self, x):
        return self.second(self.first(x))


class TfTwoNorms(tf_keras.layers.Layer):
    """The same layer in tf_keras, whose sublayers take automatic names
    (`batch_normalization`, `batch_normalization_1`)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.bn1 = tf_keras.layers.BatchNormalization()
        self.bn2 = tf_keras.layers.BatchNormalization()

    def call(self, x):
        return self.bn2(self.bn1(x))


@pytest.mark.parametrize("frozen", [None, "bn2", "bn1"])
def test_sublayers_frozen_at_save_time_never_mix_their_arrays(tmp_path, data, frozen):
    # tf_keras writes a layer's arrays trainable first as flagged at save time.
    # With bn1 frozen that is [bn_1/gamma, bn_1/beta, bn/gamma, bn/beta,
    # bn/moving_mean, ..., bn_1/moving_mean, ...]: by position, 'first' would
    # take gamma and beta from one source sublayer and its statistics from the
    # other. With nothing frozen, or bn2 frozen, the file's order is a Keras
    # order and loads.
    x, _ = data
    source = tf_keras.Sequential([tf_keras.Input((4,)), TfTwoNorms(name="block"),
                                  tf_keras.layers.Dense(2, name="Head")])
    randomize_tf_keras(source)
    if frozen:
        getattr(source.get_layer("block"), frozen).trainable = False
    source.save_weights(str(tmp_path / "w.h5"))
    target = keras.Sequential([keras.Input((4,)), TwoNorms(name="block"),
                               keras.layers.Dense(2, name="Head")])
    if frozen != "bn1":
        report = kt.load_weights_by_name(target, tmp_path / "w.h5")
        assert report.how == {"block": "by order", "Head": "by name"}
        np.testing.assert_allclose(keras.ops.convert_to_numpy(target(x)), keras.ops.convert_to_numpy(source(x)), rtol=1e-5, atol=1e-5)
        return
    before = [v.numpy().copy() for v in target.weights]
    with pytest.raises(kt.WeightMatchError) as err:
        kt.load_weights_by_name(target, tmp_path / "w.h5")
    message = str(err.value)
    assert "'block'" in message and "w.h5" in message
    assert "'first' would take arrays of both 'batch_normalization_1' and " \
           "'batch_normalization'" in message
    assert "trainable" in message  # what to do: save it with the layer trainable
    for v, b in zip(target.weights, before):
        np.testing.assert_array_equal(v.numpy(), b)
    report = kt.load_weights_by_name(target, tmp_path / "w.h5", skip_mismatch=True)
    assert list(report.skipped) == ["block"] and list(report.loaded) == ["Head"]
    for v, b in zip(target.get_layer("block").weights, before):
        np.testing.assert_array_equal(v.numpy(), b)


def anonymous_file(path, names, shapes, layer="block", seed=0):
    """A by-name file with one layer whose arrays have the given names."""
    rng = np.random.default_rng(seed)
    arrays = [rng.normal(size=s).astype("float32") for s in shapes]
    with h5py.File(path, "w") as f:
        f.attrs["layer_names"] = np.array([layer.encode()])
        group = f.create_group(layer)
        group.attrs["weight_names"] = np.array([f"{layer}/{n}".encode() for n in names])
        for name, array in zip(names, arrays):
            group.create_dataset(f"{layer}/{name}", data=array)
    return arrays


def test_names_that_contradict_positions_are_refused(tmp_path):
    # The file names 'norm' arrays as 'proj' would take them: going by
    # position would put the file's beta into the model's gamma.
    model = keras.Sequential([keras.Input((4,)), Block(name="block")])
    shapes = [(4, 4), (4,), (4,), (4,), (4,), (4,)]
    anonymous_file(tmp_path / "w.h5", ["a/kernel", "a/bias", "b/beta", "b/gamma",
                                       "b/moving_mean", "b/moving_variance"], shapes)
    before = [v.numpy().copy() for v in model.weights]
    with pytest.raises(kt.WeightMatchError, match="'block/b/beta' would go into 'norm/gamma'"):
        kt.load_weights_by_name(model, tmp_path / "w.h5")
    for v, b in zip(model.weights, before):
        np.testing.assert_array_equal(v.numpy(), b)


class Counted(keras.layers.Layer):
    """Own trainable and non-trainable weights plus a sublayer, all of one
    shape: its saved order and its creation order differ."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.norm = keras.layers.BatchNormalization(name="norm")

    def build(self, shape):
        self.scale = self.add_weight(shape=(4,), name="scale")
        self.count = self.add_weight(shape=(4,), name="count", trainable=False)
        self.norm.build(shape)

    def call(self, x):
        return self.norm(x) * self.scale + self.count


def test_two_orders_that_both_fit_are_ambiguous(tmp_path):
    model = keras.Sequential([keras.Input((4,)), Counted(name="block")])
    anonymous_file(tmp_path / "w.h5", [f"w{i}" for i in range(6)], [(4,)] * 6)
    with pytest.raises(kt.WeightMatchError, match="unambiguously"):
        kt.load_weights_by_name(model, tmp_path / "w.h5")
    with pytest.raises(kt.NoLayersMatchedError, match="unambiguously"):
        kt.load_weights_by_name(model, tmp_path / "w.h5", skip_mismatch=True)


def test_a_bias_the_target_lacks_is_named_not_dropped(tmp_path):
    source = randomize_tf_keras(tf_keras_model())
    source.save_weights(str(tmp_path / "w.h5"))
    target = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, use_bias=False, name="Dense_a"),
                               keras.layers.BatchNormalization(name="Bn")])
    before = [v.numpy().copy() for v in target.weights]
    with pytest.raises(kt.ShapeMismatchError) as err:
        kt.load_weights_by_name(target, tmp_path / "w.h5")
    assert "'Dense_a'" in str(err.value) and "['Dense_a/bias']" in str(err.value)
    assert "use_bias" in str(err.value)
    for v, b in zip(target.weights, before):
        np.testing.assert_array_equal(v.numpy(), b)
    report = kt.load_weights_by_name(target, tmp_path / "w.h5", skip_mismatch=True)
    assert list(report.skipped) == ["Dense_a"] and "Dense_a" in report.unused


def test_normalization_state_follows_the_loaded_weights(tmp_path):
    # Keras' Normalization derives its broadcast mean and variance from its
    # weights in finalize_state(); a loader that skips it computes with the old
    # statistics (seen on EfficientNet: 1e-4 off tf_keras).
    def build(lib):
        return lib.Sequential([lib.Input((3,)), lib.layers.Normalization(name="norm")])
    source = build(tf_keras)
    source.get_layer("norm").adapt(np.random.default_rng(0).normal(5, 3, size=(64, 3)))
    source.save_weights(str(tmp_path / "w.h5"))
    target = build(keras)
    kt.load_weights_by_name(target, tmp_path / "w.h5")
    x = np.random.default_rng(1).normal(5, 3, size=(8, 3)).astype("float32")
    np.testing.assert_allclose(keras.ops.convert_to_numpy(target(x)), keras.ops.convert_to_numpy(source(x)), rtol=1e-5, atol=1e-5)


# --- files from other software --------------------------------------------------


def keras_2_0_file(path, layers, seed=0):
    """A whole-model file as Keras 2.0.5 wrote it: weights under
    `model_weights`, each weight named by its TF name scope, which Keras 2.0
    uniquified (`conv2d_1_1/kernel:0` in the group of layer `conv2d_1`), an
    optimizer group beside them. `layers`: [(name, [(weight, shape)])]."""
    rng = np.random.default_rng(seed)
    arrays = {}
    with h5py.File(path, "w") as f:
        f.attrs["keras_version"] = b"2.0.5"
        f.attrs["backend"] = b"tensorflow"
        f.attrs["model_config"] = b'{"class_name": "Model", "config": {}}'
        weights = f.create_group("model_weights")
        weights.attrs["layer_names"] = np.array([name.encode() for name, _ in layers])
        weights.attrs["keras_version"] = b"2.0.5"
        weights.attrs["backend"] = b"tensorflow"
        for name, variables in layers:
            group = weights.create_group(name)
            names = [f"{name}_1/{w}:0" for w, _ in variables]
            group.attrs["weight_names"] = np.array([n.encode() for n in names], dtype="S")
            for stored, (w, shape) in zip(names, variables):
                value = rng.normal(size=shape).astype("float32")
                if w == "moving_variance":
                    value = np.abs(value) + 0.5
                group.create_dataset(stored, data=value)
                arrays[f"{name}/{w}"] = value
        optimizer = f.create_group("optimizer_weights")
        optimizer.attrs["weight_names"] = np.array([b"training/Adam/Variable:0"])
        optimizer.create_dataset("training/Adam/Variable:0", data=np.zeros(3, "float32"))
    return arrays


def test_keras_2_0_file_with_scoped_weight_names(tmp_path):
    # The mini-Xception emotion classifier of issue 12 in small: zero layers
    # loaded before, because of the `_1` scope suffixes.
    layers = [
        ("input_1", []),
        ("conv2d_1", [("kernel", (3, 3, 1, 8))]),
        ("batch_normalization_1", [("gamma", (8,)), ("beta", (8,)),
                                   ("moving_mean", (8,)), ("moving_variance", (8,))]),
        ("activation_1", []),
        ("separable_conv2d_1", [("depthwise_kernel", (3, 3, 8, 1)),
                                ("pointwise_kernel", (1, 1, 8, 16))]),
        ("conv2d_2", [("kernel", (3, 3, 16, 7)), ("bias", (7,))]),
        ("global_average_pooling2d_1", []),
        ("predictions", []),
    ]
    arrays = keras_2_0_file(tmp_path / "emotion.hdf5", layers)
    model = keras.Sequential([
        keras.Input((12, 12, 1)),
        keras.layers.Conv2D(8, 3, use_bias=False, name="conv2d_1"),
        keras.layers.BatchNormalization(name="batch_normalization_1"),
        keras.layers.Activation("relu", name="activation_1"),
        keras.layers.SeparableConv2D(16, 3, use_bias=False, padding="same", name="separable_conv2d_1"),
        keras.layers.Conv2D(7, 3, padding="same", name="conv2d_2"),
        keras.layers.GlobalAveragePooling2D(name="global_average_pooling2d_1"),
        keras.layers.Activation("softmax", name="predictions")])
    report = kt.load_weights_by_name(model, tmp_path / "emotion.hdf5")
    assert report.how == {n: "by name" for n in
                          ["conv2d_1", "batch_normalization_1", "separable_conv2d_1", "conv2d_2"]}
    for layer in model.layers:
        for v in layer.weights:
            np.testing.assert_array_equal(v.numpy(), arrays[f"{layer.name}/{v.name}"], err_msg=v.path)


def test_tf_keras_wrappers_load(tmp_path):
    def build(lib):
        layers = lib.layers
        inputs = lib.Input((5, 4))
        x = layers.TimeDistributed(layers.Dense(3), name="td")(inputs)
        x = layers.TimeDistributed(layers.BatchNormalization(), name="td_bn")(x)
        x = layers.Bidirectional(layers.LSTM(2, return_sequences=True), name="bi_lstm")(x)
        x = layers.Bidirectional(layers.GRU(2), name="bi_gru")(x)
        return lib.Model(inputs, x)
    source = randomize_tf_keras(build(tf_keras))
    source.save_weights(str(tmp_path / "w.h5"))
    target = build(keras)
    report = kt.load_weights_by_name(target, tmp_path / "w.h5")
    assert sorted(report.loaded) == ["bi_gru", "bi_lstm", "td", "td_bn"]
    x = np.random.default_rng(0).normal(size=(2, 5, 4)).astype("float32")
    np.testing.assert_allclose(keras.ops.convert_to_numpy(target(x)), keras.ops.convert_to_numpy(source(x)), rtol=1e-5, atol=1e-5)


def test_tf_keras_layer_renamed_after_build_loads(tmp_path, data):
    # tf_keras keeps the weight names of the old name: group 'Renamed' holds
    # 'Dense_a/kernel:0'.
    x, _ = data
    source = randomize_tf_keras(tf_keras_model())
    source.get_layer("Dense_a")._name = "Renamed"  # how tf_keras users renamed a built layer
    source.save_weights(str(tmp_path / "w.h5"))
    with h5py.File(tmp_path / "w.h5", "r") as f:
        assert [text(n) for n in f["Renamed"].attrs["weight_names"]] == [
            "Dense_a/kernel:0", "Dense_a/bias:0"]
    target = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, activation="relu", name="Renamed"),
                               *tiny_base()[1:], keras.layers.Dense(3, name="Head")])
    report = kt.load_weights_by_name(target, tmp_path / "w.h5")
    assert report.loaded["Renamed"] == "Renamed" and report.how["Renamed"] == "by name"
    np.testing.assert_allclose(predict(target, x), source.predict(x, verbose=0), rtol=1e-5, atol=1e-5)


def test_a_renamed_layer_does_not_load_into_a_layer_of_its_old_name(tmp_path):
    # Group 'Dense_a' holding 'dense/kernel:0' is one layer renamed after it
    # was built, not a nested model holding a layer 'dense': a new head that
    # Keras happens to name 'dense' must not take its arrays.
    source = randomize_tf_keras(tf_keras.Sequential([tf_keras.Input((4,)), tf_keras.layers.Dense(2)]))
    source.layers[0]._name = "Dense_a"  # tf_keras' automatic name was 'dense'
    source.save_weights(str(tmp_path / "w.h5"))
    with h5py.File(tmp_path / "w.h5", "r") as f:
        assert [text(n) for n in f["Dense_a"].attrs["weight_names"]] == [
            "dense/kernel:0", "dense/bias:0"]
    target = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, name="dense")])
    before = [v.numpy().copy() for v in target.weights]
    with pytest.raises(kt.NoLayersMatchedError, match="'dense' is not in the source; close: "
                                                      r"\['Dense_a'\]"):
        kt.load_weights_by_name(target, tmp_path / "w.h5")
    for v, b in zip(target.weights, before):
        np.testing.assert_array_equal(v.numpy(), b)
    report = kt.load_weights_by_name(target, tmp_path / "w.h5", rename={"dense": "Dense_a"})
    assert report.how == {"dense": "renamed, by name"}
    np.testing.assert_array_equal(target.get_layer("dense").kernel.numpy(), source.layers[0].kernel.numpy())


def one_layer_nested(lib, base="base"):
    """Input(4) -> nested model `base` holding one Dense `Dense_a` -> Head."""
    inner = lib.Sequential([lib.Input((4,)), lib.layers.Dense(8, name="Dense_a")], name=base)
    return lib.Sequential([lib.Input((4,)), inner, lib.layers.Dense(3, name="Head")])


@pytest.mark.parametrize("writer", ["tf_keras save_weights", "tf_keras save", "keras save"])
def test_nested_model_with_one_weighted_layer_loads_into_a_nested_target(tmp_path, data, writer):
    # tf_keras writes a nested model's group with its layers' array names:
    # group 'base' holds 'Dense_a/kernel:0' (Keras 3's legacy .h5 writer
    # 'base/Dense_a/kernel'). With a single weighted layer that reads the same
    # as a layer 'base' renamed after it was built; a target that nests a
    # model 'base' says which. (Keras' own, topological loader fills it; ours
    # reported 'Dense_a' missing and 'base' unused.)
    x, _ = data
    lib, save = writer.split()
    if lib == "tf_keras":
        source = randomize_tf_keras(one_layer_nested(tf_keras))
    else:
        source = randomize(one_layer_nested(keras))
    getattr(source, save)(str(tmp_path / "w.h5"))
    target = one_layer_nested(keras)
    report = kt.load_weights_by_name(target, tmp_path / "w.h5")
    assert report.loaded == {"Dense_a": "base/Dense_a", "Head": "Head"}
    assert report.how["Dense_a"] == "in 'base', by name" and not report.unused
    np.testing.assert_allclose(predict(target, x), predict(source, x), rtol=1e-5, atol=1e-5)
    # The nested model may be renamed too, as a layer is.
    other = one_layer_nested(keras, base="backbone")
    report = kt.load_weights_by_name(other, tmp_path / "w.h5", rename={"backbone": "base"})
    assert report.loaded == {"Dense_a": "base/Dense_a", "Head": "Head"}
    np.testing.assert_allclose(predict(other, x), predict(source, x), rtol=1e-5, atol=1e-5)
    # Two nested models renamed to one group: each offers its own layers.
    inputs = keras.Input((4,))
    towers = [keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, name=n)], name=t)
              for t, n in (("left", "Dense_a"), ("right", "Other"))]
    two = keras.Model(inputs, keras.layers.Add()([t(inputs) for t in towers]))
    report = kt.load_weights_by_name(two, tmp_path / "w.h5",
                                     rename={"left": "base", "right": "base"})
    assert report.loaded == {"Dense_a": "base/Dense_a"} and report.missing == ("Other",)
    # A flat target cannot tell the two readings apart: 'Dense_a' stays
    # missing (as a layer renamed after it was built stays apart from a
    # layer of its old name, below) until rename= names the group.
    flat = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, name="Dense_a"),
                             keras.layers.Dense(3, name="Head")])
    assert kt.load_weights_by_name(flat, tmp_path / "w.h5").missing == ("Dense_a",)
    kt.load_weights_by_name(flat, tmp_path / "w.h5", rename={"Dense_a": "base"})
    np.testing.assert_allclose(predict(flat, x), predict(source, x), rtol=1e-5, atol=1e-5)


def test_a_group_named_for_a_nested_target_model_loads_only_into_its_layers(tmp_path):
    # Group 'base' holding 'dense/kernel:0' (a layer renamed after it was
    # built) beside a target that nests a model 'base' and has a new layer
    # 'dense' outside it: 'dense' is not in 'base', so it must not take the
    # arrays. (A review found the first version of the nested-model reading
    # loading them.)
    source = randomize_tf_keras(tf_keras.Sequential(
        [tf_keras.Input((4,)), tf_keras.layers.Dense(8), tf_keras.layers.Dense(3, name="Head")]))
    source.layers[0]._name = "base"
    source.save_weights(str(tmp_path / "w.h5"))
    inputs = keras.Input((4,))
    base = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, name="Dense_a")], name="base")
    new = keras.layers.Dense(8, name="dense")
    target = keras.Model(inputs, keras.layers.Dense(3, name="Head")(
        keras.layers.Add()([base(inputs), new(inputs)])))
    before = new.kernel.numpy().copy()
    report = kt.load_weights_by_name(target, tmp_path / "w.h5")
    assert report.loaded == {"Head": "Head"}
    assert sorted(report.missing) == ["Dense_a", "dense"] and report.unused == ("base",)
    np.testing.assert_array_equal(new.kernel.numpy(), before)


def two_deep(lib, block="block"):
    """Input(4) -> model `inner` nesting a Sequential `block` (Dense_a, Dense_b) -> Head."""
    layers = [lib.layers.Dense(8, name="Dense_a"), lib.layers.Dense(6, name="Dense_b")]
    inputs = lib.Input((4,))
    inner = lib.Model(inputs, lib.Sequential([lib.Input((4,)), *layers], name=block)(inputs),
                      name="inner")
    inputs = lib.Input((4,))
    return lib.Model(inputs, lib.layers.Dense(3, name="Head")(inner(inputs)))


@pytest.mark.parametrize("writer", ["tf_keras save_weights", "tf_keras save", "keras save"])
def test_a_model_nested_two_deep_loads_by_name(tmp_path, data, writer):
    # Keras 3's legacy .h5 writer names a variable by the models it was built
    # in: group 'inner' holds 'block/Dense_a/kernel' (tf_keras: 'Dense_a/kernel:0').
    # Found by porting Keras' nested-model cases: the layers were reported
    # missing and kept their initial values.
    x, _ = data
    lib, save = writer.split()
    source = (randomize_tf_keras(two_deep(tf_keras)) if lib == "tf_keras"
              else randomize(two_deep(keras)))
    getattr(source, save)(str(tmp_path / "w.h5"))
    target = two_deep(keras)
    report = kt.load_weights_by_name(target, tmp_path / "w.h5")
    assert report.loaded == {"Dense_a": "inner/Dense_a", "Dense_b": "inner/Dense_b",
                             "Head": "Head"}
    assert not report.missing and not report.unused
    np.testing.assert_allclose(predict(target, x), predict(source, x), rtol=1e-5, atol=1e-5)
    # The middle model renamed: rename= names it, as it names a layer.
    other = two_deep(keras, block="tower")
    kt.load_weights_by_name(other, tmp_path / "w.h5", rename={"tower": "block"})
    np.testing.assert_allclose(predict(other, x), predict(source, x), rtol=1e-5, atol=1e-5)


def test_a_layer_name_inside_another_layers_name_is_not_a_match(tmp_path):
    # A layer's name is looked for after the target's nested models' names,
    # not after any part of an array's name: tf_keras' 'block/Conv' (names
    # with '/', as its DenseNet and MobileNetV3 have) is not the layer 'Conv'.
    layer = tf_keras.layers.Dense(4, name="block/Conv")
    source = randomize_tf_keras(tf_keras.Sequential(
        [tf_keras.Input((4,)), tf_keras.Sequential([tf_keras.Input((4,)), layer], name="base"),
         tf_keras.layers.Dense(2, name="Head")]))
    source.save(str(tmp_path / "w.h5"))
    with h5py.File(tmp_path / "w.h5", "r") as f:
        assert [text(n) for n in f["model_weights/base"].attrs["weight_names"]] == [
            "block/Conv/kernel:0", "block/Conv/bias:0"]
    conv = keras.layers.Dense(4, name="Conv")
    target = keras.Sequential([keras.Input((4,)),
                               keras.Sequential([keras.Input((4,)), conv], name="base"),
                               keras.layers.Dense(2, name="Head")])
    before = conv.kernel.numpy().copy()
    report = kt.load_weights_by_name(target, tmp_path / "w.h5")
    assert report.loaded == {"Head": "Head"}
    assert report.missing == ("Conv",) and report.unused == ("base",)
    np.testing.assert_array_equal(conv.kernel.numpy(), before)
    # Nor when the target nests a model 'block' elsewhere: a name counts after
    # a model's name only for the layers inside that model.
    conv = keras.layers.Dense(4, name="Conv")
    inputs = keras.Input((4,))
    block = keras.Sequential([keras.Input((4,)), keras.layers.Dense(4, name="Other")], name="block")
    base = keras.Sequential([keras.Input((4,)), conv], name="base")
    target = keras.Model(inputs, keras.layers.Dense(2, name="Head")(
        keras.layers.Add()([base(inputs), block(inputs)])))
    before = conv.kernel.numpy().copy()
    report = kt.load_weights_by_name(target, tmp_path / "w.h5")
    assert report.loaded == {"Head": "Head"} and set(report.missing) == {"Conv", "Other"}
    np.testing.assert_array_equal(conv.kernel.numpy(), before)


def tokens_model(lib, name):
    """A subclassed model (tf_keras or Keras 3) that holds a weight itself, a
    class token, beside its layer."""

    class Tokens(lib.Model):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.proj = lib.layers.Dense(3, name="Proj")

        def build(self, shape):
            self.token = self.add_weight(name="cls_token", shape=(1, 3))
            if lib is tf_keras:  # tf_keras marks the model built here
                super().build(shape)

        def call(self, x):
            return self.proj(x) + self.token

    return Tokens(name=name)


def with_head(lib, tokens):
    inputs = lib.Input((4,))
    return lib.Model(inputs, lib.layers.Dense(2, name="Head")(tokens(inputs)))


def test_weights_a_subclassed_model_holds_itself_load(tmp_path, data):
    x, _ = data
    alone = tokens_model(tf_keras, "tokens")
    alone(x)
    randomize_tf_keras(alone).save_weights(str(tmp_path / "alone.h5"))
    target = tokens_model(keras, "mine")
    target(x)
    report = kt.load_weights_by_name(target, tmp_path / "alone.h5")
    assert report.loaded == {"Proj": "Proj", "mine": "top_level_model_weights"}
    for ours, theirs in [(target.token, alone.token), (target.proj.kernel, alone.proj.kernel),
                         (target.proj.bias, alone.proj.bias)]:  # the arrays, bit for bit
        np.testing.assert_array_equal(ours.numpy(), theirs.numpy())
    # the outputs of two frameworks (tf_keras, and Keras on this backend): float32 rounding
    np.testing.assert_allclose(keras.ops.convert_to_numpy(target(x)), keras.ops.convert_to_numpy(alone(x)), rtol=1e-5, atol=1e-5)

    nested = randomize_tf_keras(with_head(tf_keras, tokens_model(tf_keras, "tokens")), seed=4)
    nested.save_weights(str(tmp_path / "nested.h5"))
    target = with_head(keras, tokens_model(keras, "tokens"))
    report = kt.load_weights_by_name(target, tmp_path / "nested.h5")
    assert report.loaded == {"Proj": "tokens/Proj", "Head": "Head", "tokens": "tokens"}
    np.testing.assert_allclose(predict(target, x), nested.predict(x, verbose=0), rtol=1e-5, atol=1e-5)


def test_our_files_keep_the_weights_a_model_holds_itself(tmp_path, data):
    x, _ = data
    source = tokens_model(keras, "tokens")
    source(x)
    kt.save_weights_by_name(randomize(source), tmp_path / "alone.h5")
    for load in (lambda m: kt.load_weights_by_name(m, tmp_path / "alone.h5"),
                 lambda m: m.load_weights(tmp_path / "alone.h5", by_name=True)):  # Keras' own
        target = tokens_model(keras, "other")
        target(x)
        load(target)
        np.testing.assert_array_equal(target.token.numpy(), source.token.numpy())

    nested = randomize(with_head(keras, tokens_model(keras, "tokens")), seed=5)
    kt.save_weights_by_name(nested, tmp_path / "nested.h5")
    target = with_head(keras, tokens_model(keras, "tokens"))
    report = kt.load_weights_by_name(target, tmp_path / "nested.h5")
    assert report.loaded == {"Proj": "Proj", "Head": "Head", "tokens": "tokens"}
    np.testing.assert_array_equal(predict(target, x), predict(nested, x))


def long_named(lib, name):
    """tf_keras' test_saving_model_with_long_weights_names
    (tf_keras/src/saving/save_test.py): a nested model with a 32 KiB layer
    name, so the nested model's weight-name list passes 64 KiB."""
    inputs = lib.Input((2,))
    f = inputs
    for i in range(4):
        f = lib.layers.Dense(2, name=f"nested_model_dense_{i}")(f)
    f = lib.layers.Dense(2, name=name)(f)
    nested = lib.Model(inputs, f, name="nested_model")
    inputs = lib.Input((2,))
    return lib.Model(inputs, lib.layers.Dense(2, name="outer_model_output")(nested(inputs)))


def test_name_lists_past_64_kib_are_chunked_both_ways(tmp_path):
    name = "nested_model_output" + "x" * 2**15
    x = np.random.default_rng(0).normal(size=(3, 2)).astype("float32")

    written_by_tf_keras = randomize_tf_keras(long_named(tf_keras, name))
    written_by_tf_keras.save_weights(str(tmp_path / "tf_keras.h5"))
    with h5py.File(tmp_path / "tf_keras.h5", "r") as f:
        assert "weight_names0" in f["nested_model"].attrs  # tf_keras chunked it
    target = long_named(keras, name)
    report = kt.load_weights_by_name(target, tmp_path / "tf_keras.h5")
    assert name in report.loaded
    np.testing.assert_allclose(keras.ops.convert_to_numpy(target(x)), np.asarray(written_by_tf_keras(x)), rtol=1e-5, atol=1e-6)

    source = randomize(long_named(keras, name), seed=2)
    kt.save_weights_by_name(source, tmp_path / "ours.h5")  # raised OSError before
    with h5py.File(tmp_path / "ours.h5", "r") as f:
        assert "weight_names0" in f["nested_model"].attrs
    for load in (lambda m: kt.load_weights_by_name(m, tmp_path / "ours.h5"),
                 lambda m: m.load_weights(tmp_path / "ours.h5", by_name=True)):  # Keras' own
        target = long_named(keras, name)
        load(target)
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(target(x)), keras.ops.convert_to_numpy(source(x)))
    legacy = long_named(tf_keras, name)
    legacy.load_weights(str(tmp_path / "ours.h5"), by_name=True)
    np.testing.assert_allclose(np.asarray(legacy(x)), keras.ops.convert_to_numpy(source(x)), rtol=1e-5, atol=1e-6)


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
