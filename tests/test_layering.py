"""The package reads top-down: no import cycles, no imports hidden in functions."""

import ast
import pathlib

import keras_transfer as kt

PACKAGE = pathlib.Path(kt.__file__).parent


def own_imports(tree):
    """(module imported, at module level?) for each import of keras_transfer."""
    found = []
    top = {id(node) for node in tree.body}
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("keras_transfer"):
            parts = node.module.split(".")
            names = [parts[1]] if len(parts) > 1 else [a.name for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name.split(".")[1] for a in node.names
                     if a.name.startswith("keras_transfer.")]
        found += [(name, id(node) in top) for name in names]
    return found


def test_no_import_cycles_and_no_imports_inside_functions():
    graph, hidden = {}, []
    for path in sorted(PACKAGE.glob("*.py")):
        imports = own_imports(ast.parse(path.read_text()))
        hidden += [f"{path.stem} imports {name} inside a function" for name, top in imports if not top]
        graph[path.stem] = {name for name, _ in imports if name != path.stem}
    assert hidden == []

    def reaches(start, goal, seen):
        for module in graph.get(start, ()):
            if module == goal or (module not in seen and reaches(module, goal, seen | {module})):
                return True
        return False

    assert [m for m in graph if m != "__init__" and reaches(m, m, set())] == []
    # the bottom of the stack imports nothing of ours but errors
    for module in ("errors", "_files", "_layers", "_optimizer_state", "learning_rates"):
        assert graph[module] <= {"errors"}, (module, graph[module])


def test_public_api_is_sorted_and_complete():
    assert kt.__all__ == sorted(kt.__all__)
    assert [name for name in kt.__all__ if not hasattr(kt, name)] == []
