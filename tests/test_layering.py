"""The package reads top-down: no import cycles, no imports hidden in functions,
and the core apart from the reference pipeline (`keras_transfer.pipeline`)."""

import ast
import pathlib
import subprocess
import sys

import pytest

import keras_transfer as kt

PACKAGE = pathlib.Path(kt.__file__).parent


def module_name(path):
    """`weights`, `pipeline.datasets`, `pipeline` (its __init__), `__init__`."""
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    if parts[-1] == "__init__" and len(parts) > 1:
        parts = parts[:-1]
    return ".".join(parts)


def own_imports(tree):
    """(module imported, at module level?) for each import of keras_transfer."""
    found = []
    top = {id(node) for node in tree.body}
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("keras_transfer"):
            parts = node.module.split(".")[1:]
            if parts == ["pipeline"] or not parts:
                prefix = ".".join(parts + [""])
                names = [prefix + a.name for a in node.names]
            else:
                names = [".".join(parts)]
        elif isinstance(node, ast.Import):
            names = [a.name.split(".", 1)[1] for a in node.names
                     if a.name.startswith("keras_transfer.")]
        found += [(name, id(node) in top) for name in names]
    return found


def import_graph():
    graph, hidden = {}, []
    for path in sorted(PACKAGE.rglob("*.py")):
        name = module_name(path)
        imports = own_imports(ast.parse(path.read_text()))
        hidden += [f"{name} imports {i} inside a function" for i, top in imports if not top]
        graph[name] = {i for i, _ in imports if i != name}
    return graph, hidden


def test_no_import_cycles_and_no_imports_inside_functions():
    graph, hidden = import_graph()
    assert hidden == []

    def reaches(start, goal, seen):
        for module in graph.get(start, ()):
            if module == goal or (module not in seen and reaches(module, goal, seen | {module})):
                return True
        return False

    assert [m for m in graph if m != "__init__" and reaches(m, m, set())] == []
    # the bottom of the stack imports nothing of ours but errors and the checks
    assert graph["errors"] == set() and graph["_checks"] == {"errors"}
    for module in ("_files", "_layers", "_data", "_optimizer_state", "learning_rates"):
        assert graph[module] <= {"errors", "_checks"}, (module, graph[module])


def test_no_core_module_imports_the_pipeline():
    graph, _ = import_graph()
    assert {"pipeline.datasets", "pipeline.reference", "pipeline.comparison",
            "pipeline._cli"} <= set(graph)  # the walk sees the pipeline's modules
    core = {m for m in graph if not m.startswith("pipeline")}
    assert {m: sorted(i for i in graph[m] if i.startswith("pipeline"))
            for m in core if any(i.startswith("pipeline") for i in graph[m])} == {}


@pytest.mark.once  # the import graph is the same on every backend
def test_importing_the_package_imports_nothing_of_the_pipeline():
    code = ("import sys, keras_transfer; "
            "print(sorted(m for m in sys.modules if m.startswith('keras_transfer.pipeline')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip().splitlines()[-1] == "[]"


def test_public_api_is_sorted_and_complete():
    assert kt.__all__ == sorted(kt.__all__)
    assert [name for name in kt.__all__ if not hasattr(kt, name)] == []
