"""Every docstring `Example:` block runs as written, and its claims hold.

Each block runs in a fresh namespace holding the names the package docstring
lists (`model`, `target`, `base`, `x, y`, `x_val, y_val`, `train`, `epochs`,
`source.h5` in the working folder). A line `<expression>  # <Python literal>`
is a claim: the expression, evaluated again after the block, must equal the
literal (what follows it on the comment line is prose). Where the real call
would download (a TFDS set, a weights file), the local equivalent is put in
its place below, and `SWAPS` says so.
"""

import ast
import io
import contextlib
import pathlib
import re

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_transfer as kt
from keras_transfer.pipeline import reference

PACKAGE = pathlib.Path(kt.__file__).parent


def examples():
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        module = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
                doc = ast.get_docstring(node) or ""
                if "Example:" in doc:
                    for block in re.findall(r"```python\n(.*?)```", doc, re.S):
                        found.append((f"{module}.{node.name}", block))
    return found


EXAMPLES = examples()

# Run by another test, which first checks that it runs the same call: the
# folder job's example is docs/examples.md's, and compiling MobileNetV2 for
# it twice took 90 s of the suite each time.
RUN_ELSEWHERE = {
    "keras_transfer.vision.finetune_folder":
        "tests/test_docs_examples.py::test_fine_tune_on_a_folder_of_images",
}

# A real call that downloads, and the local equivalent the test runs instead.
SWAPS = {
    # TFDS would download kmnist / cifar10: a tiny set TFDS' own builder
    # prepares here (tests/pipeline/test_datasets.py) stands in.
    "keras_transfer.pipeline.datasets.load_target": [
        ('load_target("kmnist")', 'load_target("tiny_colours", tfds_data_dir=TFDS, '
                                  'allow_download=False)')],
    "keras_transfer.pipeline.datasets.load_tfds": [
        ('load_tfds("cifar10")', 'load_tfds("tiny_colours", data_dir=TFDS, '
                                 'allow_download=False)')],
}


def claims(block):
    """`{line number: (expression, expected value)}` for each line that ends in
    a literal comment."""
    out = {}
    for number, line in enumerate(block.splitlines()):
        code, hash_, comment = line.partition("  #")
        if not hash_ or not code.strip() or line.startswith((" ", "\t")):
            continue
        try:
            ast.parse(code.strip(), mode="eval")  # an expression, not a statement
            expected = ast.literal_eval(comment.split(":")[0].strip())
        except (ValueError, SyntaxError):
            continue
        out[number] = (code.strip(), expected)
    return out


def recorded(block, found):
    """`block` with each claim's expression recorded where it stands, so that
    it is evaluated once, in order (`save_weights_by_name(...)  # 'small.h5'`)."""
    lines = block.splitlines()
    for number, (expression, _) in found.items():
        lines[number] = f"__claimed__.append(({expression}))"
    return "\n".join(lines) + "\n"


def namespace(tmp_path):
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, (64, 28, 28, 1)).astype("float32")
    y = rng.integers(0, 10, 64)
    source = reference.source_cnn()
    kt.save_weights_by_name(source, tmp_path / "source.h5")
    return {
        "math": __import__("math"), "keras": keras, "np": np, "keras_transfer": kt,
        "model": reference.target_cnn(), "target": reference.target_cnn(),
        "base": keras.Sequential([keras.Input((28, 28, 1)), *reference.feature_layers()],
                                 name="features"),
        "x": x, "y": y, "x_val": x[:32], "y_val": y[:32], "epochs": 2,
        "train": tf.data.Dataset.from_tensor_slices((x, y)).batch(16),
    }


def prepare(name, tmp_path, ns):
    """What a block's real world holds beforehand (a folder of images, an
    exported module), made here."""
    if name.endswith("datasets.load_target") or name.endswith("datasets.load_tfds"):
        import sys

        sys.path.insert(0, str(pathlib.Path(__file__).parent / "pipeline"))
        from test_datasets import build_tiny_colours

        build_tiny_colours(tmp_path / "tfds")
        ns["TFDS"] = str(tmp_path / "tfds")
    if name.endswith("hub.HubLayer"):
        kt.export_hub_module(ns["base"], tmp_path / "exported" / "features")
    if name.endswith("vision.finetune_folder"):
        import tf_keras

        from test_vision import write_folder

        write_folder(tmp_path / "flowers", classes=("daisy", "tulip"), per_class=5, size=96)
        tf_keras.applications.MobileNetV2(weights=None, include_top=False,
                                          input_shape=(96, 96, 3)).save_weights(
            str(tmp_path / "mobilenet_v2.h5"))


def marks(name):
    if ".hub." in name:
        return [pytest.mark.tensorflow_only]
    return [pytest.mark.once]  # the code is backend-independent; its tests run on both


@pytest.mark.parametrize("name, block", [pytest.param(n, b, id=n, marks=marks(n))
                                         for n, b in EXAMPLES if n not in RUN_ELSEWHERE])
def test_the_example_runs_and_its_claims_hold(name, block, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    ns = namespace(tmp_path)
    prepare(name, tmp_path, ns)
    for old, new in SWAPS.get(name, []):
        assert old in block, (name, old)
        block = block.replace(old, new)
    found = claims(block)
    ns["__claimed__"] = []
    with contextlib.redirect_stdout(io.StringIO()):
        exec(compile(recorded(block, found), name, "exec"), ns)
    assert len(ns["__claimed__"]) == len(found)
    for value, (expression, expected) in zip(ns["__claimed__"], found.values()):
        assert value == expected, (name, expression, value)


def test_every_public_function_with_an_example_is_collected():
    names = {n for n, _ in EXAMPLES}
    assert {"keras_transfer.weights.load_weights_by_name", "keras_transfer.recipes.fine_tune",
            "keras_transfer.groups.layer_groups"} <= names
    assert len(EXAMPLES) >= 30
    claimed = [n for n, b in EXAMPLES if claims(b)]
    assert len(claimed) >= 20, claimed
