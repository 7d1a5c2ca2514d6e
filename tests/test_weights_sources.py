"""Sources other than weight files: `.keras` archives and models in memory."""

import io
import struct
import zipfile

import h5py
import keras
import numpy as np
import pytest
import tf_keras

import keras_transfer as kt
from helpers import randomize, tiny_base, tiny_model
from keras_transfer import _files


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
    want = keras.ops.convert_to_numpy(source(x))
    assert np.isfinite(want).all() and want.std() > 0
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(base(x)), want)


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
