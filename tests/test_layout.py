"""The house rules: the command layer, ``distill/app/``, is the top floor. Nothing below it imports it,
the shared core in ``distill/`` imports none of the packages built on it (teachers, students, export),
function-local imports count like any other, and no modules import each other in a circle."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.conftest import ROOT

DISTILL = ROOT / "distill"
APP = DISTILL / "app"
UPPER_PACKAGES = {"teachers", "students", "export"}
PACKAGES = ("distill", "teachers", "students", "export")


def imports(source: str, module: str = "") -> list[tuple[int, str]]:
    """(line, module) of every import in ``source``, function-local ones included; ``from a import b``
    counts as ``a.b`` (the module or the name), relative imports are resolved against ``module``."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = module.split(".")[: -node.level]
                base = ".".join(parent + ([base] if base else []))
            found += [(node.lineno, f"{base}.{alias.name}") for alias in node.names]
    return sorted(found)


def module_name(path: Path) -> str:
    name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
    return name.removesuffix(".__init__")


def sources(*folders: Path) -> list[Path]:
    return [p for folder in folders for p in sorted(folder.rglob("*.py"))]


def violations(paths: list[Path], forbidden) -> list[str]:
    return [
        f"{p.relative_to(ROOT)}:{line} imports {name}"
        for p in paths
        for line, name in imports(p.read_text(), module_name(p))
        if forbidden(name)
    ]


def test_nothing_below_the_command_layer_imports_it():
    below = [p for p in sources(DISTILL, *(ROOT / pkg for pkg in UPPER_PACKAGES)) if APP not in p.parents]
    assert DISTILL / "nn" / "networks.py" in below and ROOT / "export" / "student.py" in below
    assert not violations(below, lambda name: name == "distill.app" or name.startswith("distill.app."))


def test_the_shared_core_imports_no_upper_package():
    core = [p for p in sources(DISTILL) if APP not in p.parents]
    assert not violations(core, lambda name: name.split(".")[0] in UPPER_PACKAGES)


def import_graph() -> dict[str, set[str]]:
    """Module -> the project modules it imports (a name imported from a module counts as that module)."""
    paths = sources(*(ROOT / pkg for pkg in PACKAGES))
    known = {module_name(p) for p in paths}

    def resolve(name: str) -> str | None:
        while name and name not in known:
            name = name.rpartition(".")[0]
        return name or None

    graph = {}
    for p in paths:
        me = module_name(p)
        targets = {resolve(name) for _, name in imports(p.read_text(), me)}
        # A package's own __init__ and its ancestors are not edges: importing a.b runs a/__init__.
        graph[me] = {t for t in targets if t and t != me and not me.startswith(t + ".")}
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan's algorithm)."""
    index, low, on_stack, stack, groups = {}, {}, set(), [], []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return groups


def test_no_modules_import_each_other_in_a_circle():
    assert circles(import_graph()) == []


def test_the_rules_see_every_form_of_import():
    source = (
        "import os\nimport export.runtime as rt\nfrom . import runs\n\ndef f():\n    from teachers.train import load_teacher\n"
        "\nclass C:\n    def g(self):\n        import numpy, students\n"
    )
    assert imports(source, "distill.store.checkpoints") == [
        (1, "os"),
        (2, "export.runtime"),
        (3, "distill.store.runs"),
        (6, "teachers.train.load_teacher"),
        (10, "numpy"),
        (10, "students"),
    ]
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert circles({"a": {"b"}, "b": set()}) == []
    # The command layer does import the upper packages, function-local imports included.
    found = {name.split(".")[0] for p in sources(APP) for _, name in imports(p.read_text(), module_name(p))}
    assert UPPER_PACKAGES <= found
