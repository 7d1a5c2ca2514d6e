"""Fine-tune an image classifier on a folder of class sub-folders, in one call.

What fastai's `ImageDataLoaders.from_folder` + `vision_learner` +
`fine_tune` do, in Keras 3: `image_folder` reads the folder
(`keras.utils.image_dataset_from_directory`, after checking every image
decodes), `image_classifier` puts a backbone with its own preprocessing and
optional augmentation under a new head, and `finetune_folder` runs
`fine_tune` and writes `model.keras`, `results.json`, the curves and a
confusion matrix. `scripts/finetune_images.py` is its command line.

Backbones:

- a keras.applications name (`"MobileNetV2"`, `"ResNet50"`, ...), with its
  family's `preprocess_input`; weights from a local file (the official
  ImageNet files are Keras 2 `.h5` files, loaded by name), or `"imagenet"`
  (downloaded by Keras), or none;
- a KerasHub preset directory (`save_to_preset`, or a downloaded preset),
  with the preset's image converter when it has one;
- a torchvision / timm ResNet checkpoint (`"torchvision_resnet18"` or
  `"torchvision_resnet50"` with a `.pth` or `.safetensors` file), loaded into
  KerasHub's `ResNetBackbone` through `renames.torchvision_resnet`, with
  torchvision's ImageNet normalization.
"""

import contextlib
import difflib
import io
import json
import os
import pathlib
import time

import keras
import numpy as np

from keras_transfer import _checks
from keras_transfer import _files
from keras_transfer import _keras_hub
from keras_transfer import errors
from keras_transfer import recipes
from keras_transfer import renames
from keras_transfer import weights

IMAGE_SUFFIXES = (".bmp", ".gif", ".jpeg", ".jpg", ".png")  # what Keras' reader takes
TORCHVISION = {"torchvision_resnet18": ("basic_block", [2, 2, 2, 2]),
               "torchvision_resnet50": ("bottleneck_block", [3, 4, 6, 3])}
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


@keras.saving.register_keras_serializable(package="keras_transfer")
class ApplicationPreprocessing(keras.layers.Layer):
    """`keras.applications.<family>.preprocess_input` as a layer, saved by name.

    A `Lambda` would do the same, but a `.keras` file holding one loads only
    with `safe_mode=False`; this layer loads in safe mode.

    Args:
        family: the keras.applications module, e.g. `"mobilenet_v2"`.
    """

    def __init__(self, family, **kwargs):
        super().__init__(**kwargs)
        self.family = family
        self._preprocess = getattr(keras.applications, family).preprocess_input

    def call(self, inputs):
        return self._preprocess(keras.ops.cast(inputs, self.compute_dtype))

    def get_config(self):
        return {**super().get_config(), "family": self.family}


def image_folder(directory, *, image_size=(224, 224), validation_split=0.2, batch_size=32,
                 seed=0, check_images=True, verbose=1):
    """A folder of class sub-folders as training and validation datasets.

    Args:
        directory: a folder holding one sub-folder of images per class.
        image_size: `(height, width)` the images are resized to.
        validation_split: the share of images held out for validation (0 for
            none).
        batch_size: the datasets' batch size.
        seed: the seed of the split and of the training set's shuffling.
        check_images: decode every image first, so that an unreadable one is
            named before training starts.
        verbose: 0 keeps Keras' reader from printing the split's counts.

    Returns:
        `(train, validation, class_names)`: `tf.data.Dataset`s of `(images,
        labels)` batches (`validation` is None without a split).

    Raises:
        DataNotFoundError: the folder does not exist.
        DataFormatError: it holds no images, fewer than two classes, or an
            image that cannot be decoded (named).
        ArgumentError: a bad split or batch size.
    """
    import tensorflow as tf  # noqa: PLC0415 (tf.data reads the folder on every backend)

    folder = pathlib.Path(directory)
    _checks.real_number(validation_split, "validation_split", owner="image_folder",
                        at_least=0, below=1)
    _checks.whole_number(batch_size, "batch_size", owner="image_folder", minimum=1)
    if not folder.is_dir():
        raise errors.DataNotFoundError(f"image_folder: {folder} is not a folder.")
    classes = sorted(p.name for p in folder.iterdir() if p.is_dir())
    images = {c: sorted(p for p in (folder / c).rglob("*")
                        if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES) for c in classes}
    found = sum(len(v) for v in images.values())
    if found == 0:
        raise errors.DataFormatError(
            f"image_folder: {folder} holds no images ({', '.join(IMAGE_SUFFIXES)}) in class "
            "sub-folders; expected <folder>/<class name>/<image>.")
    nonempty = [c for c in classes if images[c]]
    if len(nonempty) < 2:
        raise errors.DataFormatError(
            f"image_folder: {folder} has images of {len(nonempty)} class ({nonempty}); a "
            "classifier needs at least two class sub-folders with images.")
    if check_images:
        for path in (p for c in nonempty for p in images[c]):
            try:
                tf.io.decode_image(tf.io.read_file(str(path)), expand_animations=False)
            except (tf.errors.InvalidArgumentError, tf.errors.OpError) as e:
                raise errors.DataFormatError(
                    f"image_folder: {path} cannot be decoded as an image "
                    f"({type(e).__name__}). Remove or replace it.") from e
    options = dict(labels="inferred", label_mode="int", class_names=nonempty,
                   image_size=tuple(image_size), batch_size=batch_size, seed=seed,
                   shuffle=True, verbose=False)
    quiet = contextlib.nullcontext() if verbose else contextlib.redirect_stdout(io.StringIO())
    with quiet:  # Keras prints "Using N files for training." whatever its verbose says
        if validation_split:
            train, validation = keras.utils.image_dataset_from_directory(
                str(folder), validation_split=validation_split, subset="both", **options)
        else:
            train = keras.utils.image_dataset_from_directory(str(folder), **options)
            validation = None
    return train, validation, nonempty


def image_classifier(backbone, num_classes, *, image_size=(224, 224), weights_path=None,
                     flip=False, rotation=0.0, zoom=0.0, dropout=0.2, safe_mode=True):
    """A backbone with its preprocessing and optional augmentation, under a new head.

    The keras.io fine-tuning guide's model: `augmentation -> preprocessing ->
    backbone -> GlobalAveragePooling -> Dropout -> Dense(num_classes)`, the
    backbone nested (its name is what `fine_tune(freeze=...)` takes).

    Args:
        backbone: a keras.applications name, a KerasHub preset directory, or
            `"torchvision_resnet18"` / `"torchvision_resnet50"` (see the module).
        num_classes: the new head's classes.
        image_size: `(height, width)` of the images.
        weights_path: the backbone's weights: a local file (a Keras or tf_keras
            `.h5` by layer name, or a PyTorch checkpoint for the torchvision
            backbones), `"imagenet"` (downloaded by keras.applications), or None.
        flip, rotation, zoom: augmentation in front of the backbone
            (horizontal flips; rotations and zooms as fractions).
        dropout: before the head.
        safe_mode: for a KerasHub preset (see `load_weights_by_name`).

    Returns:
        `(model, base, report)`: the classifier, its backbone, and the
        `TransferReport` of the weights' load (None when nothing was loaded).

    Raises:
        ArgumentError: an unknown backbone name (the closest ones named), or
            weights the backbone cannot take.
    """
    num_classes = _checks.whole_number(num_classes, "num_classes", owner="image_classifier",
                                       minimum=2)
    shape = tuple(image_size) + (3,)
    base, preprocessing, report = _backbone(backbone, shape, weights_path, safe_mode)
    inputs = keras.Input(shape, name="image")
    x = inputs
    if flip:
        x = keras.layers.RandomFlip("horizontal", name="flip")(x)
    if rotation:
        x = keras.layers.RandomRotation(rotation, name="rotation")(x)
    if zoom:
        x = keras.layers.RandomZoom(zoom, name="zoom")(x)
    for layer in preprocessing:
        x = layer(x)
    features = base(x)
    if isinstance(features, dict):  # a KerasHub backbone's named outputs
        features = features.get("sequence_output", next(iter(features.values())))
    x = keras.layers.GlobalAveragePooling2D(name="pool")(features)
    x = keras.layers.Dropout(dropout, name="dropout")(x)
    outputs = keras.layers.Dense(num_classes, name="classifier")(x)
    return keras.Model(inputs, outputs, name="image_classifier"), base, report


def _backbone(name, shape, weights_path, safe_mode):
    """`(base model, preprocessing layers, report)` for a backbone name."""
    if os.path.isdir(str(name)) or _keras_hub.is_handle(str(name)):
        keras_hub = _keras_hub.import_keras_hub(name)
        if weights_path is not None:
            raise errors.ArgumentError(
                "image_classifier: a KerasHub preset brings its own weights; drop weights_path.")
        if safe_mode and os.path.isdir(str(name)):
            for config in pathlib.Path(name).glob("*.json"):
                _keras_hub.check_safe(json.loads(config.read_text()), str(config))
        base = keras_hub.models.Backbone.from_preset(str(name))
        converter = []
        try:
            converter = [keras_hub.layers.ImageConverter.from_preset(str(name))]
        except (ValueError, FileNotFoundError, KeyError):
            pass  # a preset without an image converter: images go in as they are
        return base, converter, None
    if name in TORCHVISION:
        block, blocks = TORCHVISION[name]
        keras_hub = _keras_hub.import_keras_hub(name)
        base = keras_hub.models.ResNetBackbone(
            input_conv_filters=[64], input_conv_kernel_sizes=[7],
            stackwise_num_filters=[64, 128, 256, 512], stackwise_num_blocks=blocks,
            stackwise_num_strides=[1, 2, 2, 2], block_type=block, use_pre_activation=False,
            image_shape=shape, name=name)
        report = None
        if weights_path is not None:
            report = weights.load_weights_by_name(base, weights_path,
                                                  rename=renames.torchvision_resnet)
        normalize = keras.layers.Normalization(
            mean=[255 * m for m in IMAGENET_MEAN],
            variance=[(255 * s) ** 2 for s in IMAGENET_STD], name="imagenet_normalization")
        return base, [normalize], report
    constructor = getattr(keras.applications, str(name), None)
    if not callable(constructor) or not str(name)[:1].isupper():
        names = [n for n in dir(keras.applications) if n[:1].isupper()]
        close = difflib.get_close_matches(str(name), names + list(TORCHVISION), n=3)
        raise errors.ArgumentError(
            f"image_classifier: backbone {name!r} is not a keras.applications name, a "
            f"KerasHub preset folder, nor one of {sorted(TORCHVISION)}"
            + (f"; did you mean {close}?" if close else "."))
    remote = weights_path == "imagenet"
    base = constructor(include_top=False, weights="imagenet" if remote else None,
                       input_shape=shape)
    report = None
    if weights_path is not None and not remote:
        report = weights.load_weights_by_name(base, weights_path)
    family = constructor.__module__.rsplit(".", 1)[-1]
    return base, [ApplicationPreprocessing(family, name="preprocess")], report


def finetune_folder(directory, backbone, out_dir, *, weights_path=None, image_size=(224, 224),
                    epochs=5, freeze_epochs=1, batch_size=32, validation_split=0.2,
                    flip=True, rotation=0.0, zoom=0.0, base_lr=None, seed=0, verbose=1):
    """Fine-tunes a backbone on a folder of class sub-folders, and writes the results.

    Args:
        directory: the images, one sub-folder per class (see `image_folder`).
        backbone, weights_path: see `image_classifier`.
        out_dir: where `model.keras`, `results.json`, `curves.png` and
            `confusion.png` go.
        image_size, batch_size, validation_split: see `image_folder`.
        epochs, freeze_epochs, base_lr: `fine_tune`'s (None: the finder).
        flip, rotation, zoom: augmentation (see `image_classifier`).
        seed: seeds weights, split and shuffling.
        verbose: progress bars and the report when 1.

    Returns:
        The results written to `results.json`, as a dict.

    Raises:
        The errors of `image_folder`, `image_classifier` and `fine_tune`.

    Example:

    ```python
    # flowers/: one sub-folder of images per class; mobilenet_v2.h5: Keras'
    # ImageNet weights for MobileNetV2 without its top, downloaded beforehand
    results = keras_transfer.vision.finetune_folder(
        "flowers/", "MobileNetV2", "runs/flowers", weights_path="mobilenet_v2.h5",
        image_size=(96, 96), epochs=3, verbose=0)
    results["history"]["phase"]   # [1, 2, 2]
    ```
    """
    keras.utils.set_random_seed(seed)
    out = pathlib.Path(out_dir)
    train, validation, classes = image_folder(
        directory, image_size=image_size, validation_split=validation_split,
        batch_size=batch_size, seed=seed, verbose=verbose)
    model, base, report = image_classifier(backbone, len(classes), image_size=image_size,
                                           weights_path=weights_path, flip=flip,
                                           rotation=rotation, zoom=zoom)
    if verbose and report is not None:
        print(report)
    start = time.perf_counter()
    history = recipes.fine_tune(model, train, validation=validation, freeze=[base],
                                epochs=epochs, freeze_epochs=freeze_epochs, base_lr=base_lr,
                                loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                                metrics=("accuracy",), verbose=verbose,
                                shuffle=False)  # the dataset shuffles
    seconds = time.perf_counter() - start
    out.mkdir(parents=True, exist_ok=True)
    with _files.atomic_write(out / "model.keras") as tmp:
        model.save(tmp + ".keras")  # Keras wants the suffix; then into place
        os.replace(tmp + ".keras", tmp)
    matrix = _confusion(model, validation or train, len(classes))
    results = {
        "classes": classes, "backbone": str(backbone),
        "weights": None if weights_path is None else str(weights_path),
        "epochs": epochs, "freeze_epochs": freeze_epochs, "base_lr": history.base_lr,
        "history": {k: [v if isinstance(v, int) else float(v) for v in values]
                    for k, values in history.history.items()},
        "validation_accuracy": (float(history.history["val_accuracy"][-1])
                                if validation is not None else None),
        "confusion_matrix": matrix.tolist(), "seconds": seconds,
        "transfer_report": None if report is None else {
            "loaded": report.loaded, "missing": list(report.missing),
            "unused": list(report.unused), "warnings": list(report.warnings)},
    }
    _files.write_json(results, out / "results.json")
    _plot_curves(history.history, freeze_epochs, out / "curves.png")
    _plot_confusion(matrix, classes, out / "confusion.png")
    return results


def _confusion(model, data, num_classes):
    matrix = np.zeros((num_classes, num_classes), int)
    for images, labels in data:
        predicted = np.argmax(model.predict(images, verbose=0), -1)
        for truth, guess in zip(keras.ops.convert_to_numpy(labels), predicted):
            matrix[int(truth), int(guess)] += 1
    return matrix


def _figure():
    import matplotlib  # noqa: PLC0415 (figures only)

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    return plt


def _plot_curves(history, freeze_epochs, path):
    plt = _figure()
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    epochs = np.arange(1, len(history["loss"]) + 1)
    for ax, metric in zip(axes, ("loss", "accuracy")):
        for key, style in ((metric, "-"), (f"val_{metric}", "--")):
            if key in history:
                ax.plot(epochs, history[key], style, marker="o", label=key)
        if freeze_epochs:
            ax.axvline(freeze_epochs + 0.5, color="grey", lw=0.8, label="unfrozen")
        ax.set_xlabel("epoch")
        ax.set_title(metric)
        ax.legend()
    fig.tight_layout()
    with _files.atomic_write(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


def _plot_confusion(matrix, classes, path):
    plt = _figure()
    size = max(3.5, 0.5 * len(classes) + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
    ax.set_yticks(range(len(classes)), classes)
    for (i, j), count in np.ndenumerate(matrix):
        ax.text(j, i, str(count), ha="center", va="center")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title("confusion (validation)")
    fig.tight_layout()
    with _files.atomic_write(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
