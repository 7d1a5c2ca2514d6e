"""keras_transfer.vision and scripts/finetune_images.py: a folder of images,
a backbone from a local file, fine_tune, and the files it writes."""

import json
import pathlib
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_transfer as kt

REPO = pathlib.Path(__file__).resolve().parent.parent
SCRIPT = REPO / "scripts" / "finetune_images.py"


def write_folder(root, classes=("bars", "dots", "plain"), per_class=10, size=32, seed=0):
    """Small PNGs with a pattern per class, written with TensorFlow's encoder."""
    rng = np.random.default_rng(seed)
    for c, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            image = rng.integers(0, 60, (size, size, 3)).astype("uint8")
            if c == 0:
                image[:, ::4] = 255
            elif c == 1:
                image[::5, ::5] = 255
            png = tf.io.encode_png(image).numpy()
            (root / name / f"{i}.png").write_bytes(png)
    return root


@pytest.fixture(scope="module")
def backbone_file(tmp_path_factory):
    """A MobileNetV2 with random weights, saved by tf_keras as the official
    ImageNet files are (a Keras 2 `.h5`, by layer name)."""
    import tf_keras

    folder = tmp_path_factory.mktemp("backbone")
    tf_keras.utils.set_random_seed(0)
    model = tf_keras.applications.MobileNetV2(weights=None, include_top=False,
                                              input_shape=(32, 32, 3))
    path = folder / "mobilenet_v2.h5"
    model.save_weights(str(path))
    return path


@pytest.mark.once  # a subprocess; vision's code is Keras layers and fine_tune, whose
# callbacks run on JAX in test_recipes
def test_the_folder_job_runs_as_the_readme_shows(tmp_path, backbone_file):
    images = write_folder(tmp_path / "images")
    out = tmp_path / "run"
    done = subprocess.run(
        [sys.executable, str(SCRIPT), f"--images={images}", "--backbone=MobileNetV2",
         f"--weights={backbone_file}", "--image_size=32", "--epochs=2", "--batch_size=8",
         "--base_lr=1e-3", f"--out_dir={out}"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    assert results["classes"] == ["bars", "dots", "plain"]
    assert results["history"]["phase"] == [1, 2]
    assert len(results["transfer_report"]["loaded"]) == 104  # every weighted layer
    assert results["transfer_report"]["missing"] == []
    matrix = np.asarray(results["confusion_matrix"])
    assert matrix.shape == (3, 3) and matrix.sum() == 6  # 20% of 30 images held out
    assert {p.name for p in out.iterdir()} >= {"model.keras", "results.json", "curves.png",
                                                "confusion.png"}
    loaded = keras.saving.load_model(out / "model.keras")  # in safe mode: no Lambda
    assert loaded.output_shape == (None, 3)
    assert "validation accuracy" in done.stdout.strip().splitlines()[-1]


@pytest.mark.once  # backend-independent
def test_a_backbone_loads_its_weights_by_name_with_its_preprocessing(backbone_file):
    model, base, report = kt.vision.image_classifier(
        "MobileNetV2", 3, image_size=(32, 32), weights_path=backbone_file, flip=True)
    assert len(report.loaded) == 104 and report.missing == ()
    names = [layer.name for layer in model.layers]
    assert names[1:4] == ["flip", "preprocess", base.name]
    x = np.full((1, 32, 32, 3), 255.0, "float32")
    scaled = model.get_layer("preprocess")(x)  # mobilenet_v2: to [-1, 1]
    np.testing.assert_allclose(keras.ops.convert_to_numpy(scaled), 1.0, rtol=1e-6)


@pytest.mark.parametrize("case, error, says", [
    ("empty", kt.DataFormatError, "holds no images"),
    ("one_class", kt.DataFormatError, "needs at least two class sub-folders"),
    ("unreadable", kt.DataFormatError, r"broken\.png cannot be decoded"),
    ("missing", kt.DataNotFoundError, "is not a folder"),
])
@pytest.mark.once  # backend-independent
def test_bad_folders_are_named(tmp_path, case, error, says):
    root = tmp_path / "images"
    if case == "empty":
        (root / "a").mkdir(parents=True)
        (root / "b").mkdir()
    elif case == "one_class":
        write_folder(root, classes=("only",), per_class=3)
    elif case == "unreadable":
        write_folder(root, classes=("a", "b"), per_class=3)
        (root / "b" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    with pytest.raises(error, match=says):
        kt.vision.image_folder(root, image_size=(32, 32))


@pytest.mark.once  # backend-independent
def test_an_unknown_backbone_name_says_which_names_are_close():
    with pytest.raises(kt.ArgumentError, match=r"'MobileNetV4'.*did you mean \['MobileNetV2'"):
        kt.vision.image_classifier("MobileNetV4", 3, image_size=(32, 32))
