"""load_weights_by_name on damaged and truncated files: typed errors,
nothing assigned."""

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


