"""The README's examples marked `<!-- tested -->` run as written."""

import contextlib
import io
import pathlib
import re

import pytest

README = pathlib.Path(__file__).resolve().parent.parent / "README.md"
BLOCKS = re.findall(r"<!-- tested -->\n```python\n(.*?)```", README.read_text(), re.S)


def test_readme_has_tested_examples():
    assert len(BLOCKS) == 10


def test_readme_examples_run_in_order(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    namespace, outputs = {}, []
    for index, block in enumerate(BLOCKS):
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            exec(compile(block, f"README.md example {index}", "exec"), namespace)
        outputs.append(out.getvalue())
        if index == 0:  # the quickstart
            assert namespace["history"].history["phase"] == [1, 1, 2, 2]
            assert "Bn1" in outputs[0] and "missing" in outputs[0]
        if index == 1:  # by-name weights
            assert namespace["report"].loaded == {"Dense1": "Dense1"}
            assert namespace["report"].missing == ("NewHead",)
    rates = namespace["opt"].group_learning_rates()
    assert rates == pytest.approx({"head": 1e-3, "group_1": 1e-3 / 2.6, "group_0": 1e-3 / 2.6 ** 2})
    assert namespace["counts"] == [34, 146]
