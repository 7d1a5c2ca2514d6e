"""The README's examples marked `<!-- tested -->` run as written.

The README keeps one, the Quickstart; the examples that were beside it live in
docs/ now, run by tests/test_docs.py."""

import contextlib
import io
import pathlib
import re

import numpy as np

README = pathlib.Path(__file__).resolve().parent.parent / "README.md"
BLOCKS = re.findall(r"<!-- tested -->\n```python\n(.*?)```", README.read_text(), re.S)


def test_readme_has_tested_examples():
    assert len(BLOCKS) == 1


def check_quickstart(namespace, printed):
    assert namespace["history"].history["phase"] == [1, 1, 2, 2]
    # "Dense1, Bn1, Dense2 loaded; NewHead missing; Head unused"
    report = namespace["report"]
    assert report.loaded == {"Dense1": "Dense1", "Bn1": "Bn1", "Dense2": "Dense2"}
    assert report.missing == ("NewHead",) and report.unused == ("Head",)
    # "[1, 1, 2, 2]", printed
    assert "[1, 1, 2, 2]" in printed.splitlines()
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


def test_readme_quickstart_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    namespace, out = {}, io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(BLOCKS[0], "README.md example 0", "exec"), namespace)
    check_quickstart(namespace, out.getvalue())
