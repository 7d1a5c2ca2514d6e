"""The README's examples marked `<!-- tested -->` run as written."""

import contextlib
import io
import pathlib
import re

import numpy as np
import pytest

README = pathlib.Path(__file__).resolve().parent.parent / "README.md"
BLOCKS = re.findall(r"<!-- tested -->\n```python\n(.*?)```", README.read_text(), re.S)


def test_readme_has_tested_examples():
    assert len(BLOCKS) == 13


def check_quickstart(namespace, printed):
    assert namespace["history"].history["phase"] == [1, 1, 2, 2]
    # "Dense1, Bn1, Dense2 loaded; NewHead missing; Head unused"
    report = namespace["report"]
    assert report.loaded == {"Dense1": "Dense1", "Bn1": "Bn1", "Dense2": "Dense2"}
    assert report.missing == ("NewHead",) and report.unused == ("Head",)
    # "Bn1 stays frozen in phase 2": untrained since it was loaded, while the
    # layers around it were fine-tuned
    target, source = namespace["target"], namespace["source"]
    bn = target.get_layer("Bn1")
    assert not bn.trainable
    assert not {id(v) for v in bn.weights} & {id(v) for v in target.trainable_weights}
    for ours, theirs in zip(bn.weights, source.get_layer("Bn1").weights):
        np.testing.assert_array_equal(ours.numpy(), theirs.numpy(), err_msg=ours.path)
    for name in ("Dense1", "Dense2"):
        assert not np.array_equal(target.get_layer(name).kernel.numpy(),
                                  source.get_layer(name).kernel.numpy()), name
    # and the summary the example prints says so: Bn1 has 0 trainable parameters
    rows = [line.split() for line in printed.splitlines()
            if line.split()[:2] == ["Bn1", "BatchNormalization"]]
    assert rows == [["Bn1", "BatchNormalization", "0", "64"]], printed


def check_shrink_perturb(namespace, printed):
    assert printed.strip() == "['Dense1', 'Dense2']"
    # Dense1's kernel: 0.4 * the loaded one + 0.2 * a Glorot-uniform draw (8 in, 16 out);
    # its bias: 0.4 * the loaded one + 0.2 * zeros (Dense's bias initializer)
    kernel, bias = namespace["model"].get_layer("Dense1").get_weights()
    loaded_kernel, loaded_bias = namespace["loaded"]
    draw = (kernel - 0.4 * loaded_kernel) / 0.2
    limit = np.sqrt(6 / (8 + 16))
    assert np.abs(draw).max() <= limit + 1e-5
    assert abs(draw.std() - limit / np.sqrt(3)) < 0.25 * limit / np.sqrt(3)  # 128 draws
    np.testing.assert_allclose(bias, 0.4 * loaded_bias, rtol=1e-6)


def test_readme_examples_run_in_order(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    namespace, outputs = {}, []
    for index, block in enumerate(BLOCKS):
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            exec(compile(block, f"README.md example {index}", "exec"), namespace)
        outputs.append(out.getvalue())
        if index == 0:  # the quickstart: the claims in its comments
            check_quickstart(namespace, outputs[0])
        if index == 1:  # by-name weights
            assert namespace["report"].loaded == {"Dense1": "Dense1"}
            assert namespace["report"].missing == ("NewHead",)
        if index == 11:  # shrink-and-perturb
            check_shrink_perturb(namespace, outputs[11])
    rates = namespace["opt"].group_learning_rates()
    assert rates == pytest.approx({"head": 1e-3, "group_1": 1e-3 / 2.6, "group_0": 1e-3 / 2.6 ** 2})
    assert namespace["counts"] == [34, 146]
