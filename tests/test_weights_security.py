"""A weights file is read only inside itself.

HDF5 can point elsewhere: an external link to another file, a soft link whose
path leads through one, a dataset whose data lives in other files (external
storage), a virtual dataset mapped onto other files. A loader that follows them
reads files of the host into the model's weights. Each hostile file here is
built by hand with h5py from a good file of ours; the "secret" is a file with
values that fit the attacked array's shape, so only the refusal stands between
it and the model.
"""

import hashlib
import os

import h5py
import numpy as np
import pytest

import keras_transfer as kt
from helpers import randomize, tiny_model
from keras_transfer import _files

SECRET = np.array([7.0, 7.0, 7.0], dtype="float32")  # the shape of Head/bias


@pytest.fixture
def files(tmp_path):
    path = kt.save_weights_by_name(randomize(tiny_model()), tmp_path / "w.h5")
    secret = tmp_path / "secret.h5"
    with h5py.File(secret, "w") as f:
        f["data"] = SECRET
        f.create_group("Head")["Head/kernel"] = np.full((6, 3), 7.0, "float32")
        f["Head"]["Head/bias"] = SECRET
    (tmp_path / "secret.bin").write_bytes(SECRET.tobytes())
    return path, tmp_path


def assert_refused(path, match):
    model = tiny_model()
    before = [v.numpy().copy() for v in model.weights]
    with pytest.raises(kt.WeightFileError, match=match) as err:
        kt.load_weights_by_name(model, path)
    for v, b in zip(model.weights, before):  # nothing assigned
        np.testing.assert_array_equal(v.numpy(), b)
    return str(err.value)


def replace_bias(path, make):
    with h5py.File(path, "r+") as f:
        del f["Head/Head/bias"]
        make(f, f["Head/Head"])


def test_an_external_link_is_refused(files):
    path, folder = files
    replace_bias(path, lambda f, g: g.__setitem__(
        "bias", h5py.ExternalLink(str(folder / "secret.h5"), "/data")))
    message = assert_refused(path, "'Head/Head/bias' is an external link")
    assert "secret.h5:/data" in message


def test_an_external_link_to_a_whole_layer_is_refused(files):
    path, folder = files
    with h5py.File(path, "r+") as f:
        del f["Head"]
        f["Head"] = h5py.ExternalLink(str(folder / "secret.h5"), "/Head")
    assert_refused(path, "'Head' is an external link")


def test_a_soft_link_leading_out_of_the_file_is_refused(files):
    path, folder = files
    def make(f, group):
        f["elsewhere"] = h5py.ExternalLink(str(folder / "secret.h5"), "/data")
        group["bias"] = h5py.SoftLink("/elsewhere")
    replace_bias(path, make)
    assert_refused(path, "'elsewhere' is an external link")


def test_a_soft_link_inside_the_file_is_followed(files):
    path, _ = files
    spare = np.array([1.0, 2.0, 3.0], dtype="float32")
    def make(f, group):
        f["spare"] = spare
        group["bias"] = h5py.SoftLink("/spare")
    replace_bias(path, make)
    model = tiny_model()
    kt.load_weights_by_name(model, path)
    np.testing.assert_array_equal(model.get_layer("Head").bias.numpy(), spare)


def test_a_dataset_with_external_storage_is_refused(files):
    path, folder = files
    replace_bias(path, lambda f, g: g.create_dataset(
        "bias", shape=(3,), dtype="float32", external=[(str(folder / "secret.bin"), 0, 12)]))
    message = assert_refused(path, "keeps its data in other files")
    assert "secret.bin" in message and "'Head/bias'" in message


def test_a_virtual_dataset_is_refused(files):
    path, folder = files
    layout = h5py.VirtualLayout(shape=(3,), dtype="float32")
    layout[:] = h5py.VirtualSource(str(folder / "secret.h5"), "data", shape=(3,))
    replace_bias(path, lambda f, g: g.create_virtual_dataset("bias", layout))
    assert_refused(path, "'Head/bias'.* virtual dataset")


def test_sha256_checks_the_file_not_what_it_points_to(files):
    # The digest of the hostile file matches (it is the file that was
    # published), yet the link is refused: sha256= vouches for the file only.
    path, folder = files
    replace_bias(path, lambda f, g: g.__setitem__(
        "bias", h5py.ExternalLink(str(folder / "secret.h5"), "/data")))
    model = tiny_model()
    with pytest.raises(kt.WeightFileError, match="external link"):
        kt.load_weights_by_name(model, path, sha256=_files.sha256_of(path))


def test_names_that_climb_out_of_a_group_are_refused(files):
    path, _ = files
    with h5py.File(path, "r+") as f:  # an absolute name would read another layer's array
        f["Head"].attrs["weight_names"] = np.array([b"/Dense_a/Dense_a/kernel", b"Head/bias"])
    assert_refused(path, "not a plain name")


class SwapAfterHashing:
    """A sha256 digest that, once computed, replaces the file at `path` with
    `other`: an attacker who swaps a checked file for another between the
    check and the read."""

    real = staticmethod(hashlib.sha256)

    def __init__(self, path, other):
        self.path, self.other, self.swapped = path, other, False

    def __call__(self, *args):
        digest = self.real(*args)
        swap = self

        class Swapping:
            def update(self, data):
                digest.update(data)

            def hexdigest(self):
                if not swap.swapped:
                    os.replace(swap.other, swap.path)
                    swap.swapped = True
                return digest.hexdigest()

        return Swapping()


@pytest.mark.parametrize("suffix", [".h5", ".keras"])
def test_sha256_vouches_for_the_bytes_that_are_loaded(tmp_path, monkeypatch, suffix):
    source, other = randomize(tiny_model(), seed=1), randomize(tiny_model(), seed=2)
    path, swap_in = tmp_path / f"w{suffix}", tmp_path / f"other{suffix}"
    if suffix == ".h5":
        kt.save_weights_by_name(source, path)
        kt.save_weights_by_name(other, swap_in)
    else:
        source.save(path)
        other.save(swap_in)
    digest = _files.sha256_of(path)
    swap = SwapAfterHashing(path, swap_in)
    monkeypatch.setattr(hashlib, "sha256", swap)
    model = tiny_model()
    kt.load_weights_by_name(model, path, sha256=digest)
    assert swap.swapped  # the file at `path` is now the other one
    monkeypatch.undo()
    assert _files.sha256_of(path) != digest
    for ours, theirs in zip(model.weights, source.weights):  # the checked bytes were loaded
        np.testing.assert_array_equal(ours.numpy(), theirs.numpy(), err_msg=ours.path)


# -- PyTorch checkpoints ------------------------------------------------------
# A `.pth` is a zip holding a pickle: only torch.load(weights_only=True), an
# allow-list unpickler, ever reads one. A safetensors file holds no code, but
# its header could lie about where each tensor's bytes are.

class _RunsACommand:
    """Pickles as a call of os.system: what a hostile checkpoint holds."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def torch_fixture(tmp_path):
    """A tiny state_dict for the 'Head' layer of tiny_model, saved by PyTorch."""
    import torch

    state = {"Head.weight": torch.full((3, 6), 7.0), "Head.bias": torch.full((3,), 7.0)}
    torch.save(state, tmp_path / "good.pth")
    import safetensors.torch

    safetensors.torch.save_file(state, tmp_path / "good.safetensors")
    return tmp_path / "good.pth", tmp_path / "good.safetensors"


@pytest.mark.once  # refused before any model runs
@pytest.mark.parametrize("container", ["torch.save", "pickle"])
def test_a_pickled_callable_in_a_pth_is_refused_and_never_runs(tmp_path, container):
    import pickle

    import torch

    marker = tmp_path / "ran"
    path = tmp_path / "hostile.pth"
    payload = {"Head.weight": _RunsACommand(marker)}
    if container == "torch.save":  # PyTorch's zip format
        torch.save(payload, path)
    else:  # the legacy format: a bare pickle
        path.write_bytes(pickle.dumps(payload))
    model = tiny_model()
    before = [v.numpy().copy() for v in model.weights]
    with pytest.raises(kt.UnsafeSourceError, match="refused it") as err:
        kt.load_weights_by_name(model, path)
    assert str(path) in str(err.value) and "Nothing in it was run" in str(err.value)
    assert not marker.exists()
    for v, b in zip(model.weights, before):
        np.testing.assert_array_equal(v.numpy(), b)


def _rewrite_header(path, edit):
    """Rewrites a safetensors file's JSON header with `edit(header)`, keeping its data."""
    import json
    import struct

    raw = path.read_bytes()
    (length,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + length])
    edit(header)
    text = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(text)) + text + raw[8 + length:])


def _shifted(entry, skip, size):
    """Offsets of `size` bytes starting `skip` bytes into a tensor's own range."""
    begin = entry["data_offsets"][0] + skip
    return [begin, begin + size]


def _inside(entry, size):
    """Offsets of `size` bytes inside another tensor's range."""
    begin = entry["data_offsets"][0]
    return [begin, begin + size]


@pytest.mark.parametrize("lie, says", [
    (lambda h: h["Head.bias"].update(data_offsets=[0, 10 ** 6]), "outside the file's"),
    (lambda h: h["Head.bias"].update(data_offsets=_inside(h["Head.weight"], 12)), "overlap"),
    (lambda h: h["Head.bias"].update(dtype="F64"), "which takes 24: the header lies"),
    (lambda h: h["Head.bias"].update(shape=[4]), "which takes 16: the header lies"),
    (lambda h: h["Head.bias"].update(dtype="X9"), "dtype 'X9' is not one of"),
    (lambda h: h["Head.bias"].update(dtype=["F32"]), r"dtype \['F32'\] is not one of"),
    (lambda h: h["Head.bias"].update(shape=[-3]), "is not a list of sizes"),
    (lambda h: h["Head.bias"].update(shape=[2], data_offsets=_shifted(h["Head.bias"], 4, 8)),
     "4 bytes before tensor 'Head.bias' belong to no tensor"),
    (lambda h: h["Head.bias"].update(shape=[2], data_offsets=_shifted(h["Head.bias"], 0, 8)),
     "4 bytes (before tensor 'Head.weight'|after the last tensor) belong to no tensor"),
])
@pytest.mark.once  # refused before any model runs
def test_a_safetensors_header_that_lies_is_refused_before_anything_is_read(tmp_path, lie, says):
    _, path = torch_fixture(tmp_path)
    _rewrite_header(path, lie)
    message = assert_refused(path, says)
    assert str(path) in message


@pytest.mark.once  # refused before any model runs
def test_a_header_nested_too_deep_for_json_is_a_typed_refusal(tmp_path):
    import struct

    text = b'{"a":' * 200_000 + b"1" + b"}" * 200_000
    path = tmp_path / "deep.safetensors"
    path.write_bytes(struct.pack("<Q", len(text)) + text)
    assert_refused(path, "not valid JSON")


@pytest.mark.once  # refused before any model runs
def test_a_truncated_safetensors_file_is_refused(tmp_path):
    _, path = torch_fixture(tmp_path)
    raw = path.read_bytes()
    path.write_bytes(raw[:-8])
    assert_refused(path, "outside the file's")
    path.write_bytes(raw[:5])
    assert_refused(path, "not an HDF5 file, nor safetensors")


@pytest.mark.once  # refused before any model runs
def test_sha256_checks_a_safetensors_file_too(tmp_path):
    pth, path = torch_fixture(tmp_path)
    model = tiny_model()
    digest = _files.sha256_of(path)
    report = kt.load_weights_by_name(model, path, sha256=digest)
    assert report.loaded == {"Head": "Head"}
    with pytest.raises(kt.ChecksumError, match=f"expected {_files.sha256_of(pth)}"):
        kt.load_weights_by_name(tiny_model(), path, sha256=_files.sha256_of(pth))
    with pytest.raises(kt.ArgumentError, match="sha256= checks one file"):
        kt.load_weights_by_name(tiny_model(), tmp_path, sha256=digest)


@pytest.mark.once  # refused before any model runs
def test_a_shard_index_naming_a_file_outside_its_folder_is_refused(tmp_path):
    import json

    _, path = torch_fixture(tmp_path)
    (tmp_path / "inner").mkdir()
    index = tmp_path / "inner" / "model.safetensors.index.json"
    index.write_text(json.dumps({"weight_map": {"Head.weight": "../good.safetensors",
                                                "Head.bias": "../good.safetensors"}}))
    assert_refused(index, "not a plain file name beside the index")


@pytest.mark.once  # refused before any model runs
def test_without_torch_a_pth_is_refused_with_what_to_do(tmp_path, monkeypatch):
    import sys

    pth, _ = torch_fixture(tmp_path)
    monkeypatch.setitem(sys.modules, "torch", None)  # as if torch were not installed
    model = tiny_model()
    with pytest.raises(kt.MissingDependencyError, match=r"keras_transfer\[torch\].*safetensors"):
        kt.load_weights_by_name(model, pth)
