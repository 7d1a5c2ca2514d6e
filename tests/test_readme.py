"""The README's examples marked `<!-- tested -->` run as written."""

import contextlib
import io
import pathlib
import re

import pytest

README = pathlib.Path(__file__).resolve().parent.parent / "README.md"
BLOCKS = re.findall(r"<!-- tested -->\n```python\n(.*?)```", README.read_text(), re.S)


def test_readme_has_tested_examples():
    assert len(BLOCKS) == 2


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_example_runs(tmp_path, monkeypatch, index):
    monkeypatch.chdir(tmp_path)
    namespace = {}
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(BLOCKS[index], f"README.md example {index}", "exec"), namespace)
    if "history" in namespace:
        assert namespace["history"].history["phase"] == [1, 1, 2, 2]
        assert "Bn1" in out.getvalue() and "missing" in out.getvalue()
        assert (tmp_path / "source.h5").is_file()
    else:
        assert namespace["report"].loaded == {"Dense1": "Dense1"}
        assert namespace["report"].missing == ("NewHead",)
