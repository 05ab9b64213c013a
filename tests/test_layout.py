"""The shared core in distill/ never imports the packages built on it; only the command layer does."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.conftest import ROOT

DISTILL = ROOT / "distill"
COMMAND_LAYER = (DISTILL / "cli.py", DISTILL / "commands")
UPPER_PACKAGES = {"teachers", "students", "export"}


def upper_imports(source: str) -> list[tuple[int, str]]:
    """(line, module) of every import of ``UPPER_PACKAGES`` in ``source``, function-local ones included."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            modules = [node.module]
        else:
            continue
        found += [(node.lineno, m) for m in modules if m.split(".")[0] in UPPER_PACKAGES]
    return sorted(found)


def in_command_layer(path: Path) -> bool:
    return any(path == part or part in path.parents for part in COMMAND_LAYER)


def test_the_shared_core_imports_no_upper_package():
    core = [p for p in sorted(DISTILL.rglob("*.py")) if not in_command_layer(p)]
    assert DISTILL / "networks.py" in core and DISTILL / "latency.py" in core
    violations = [f"{p.relative_to(ROOT)}:{line} imports {module}" for p in core for line, module in upper_imports(p.read_text())]
    assert not violations, "\n".join(violations)


def test_the_scanner_finds_imports_of_every_form():
    source = "import os\nimport export.runtime as rt\nfrom . import runs\n\ndef f():\n    from teachers.train import load_teacher\n\nclass C:\n    def g(self):\n        import numpy, students\n"
    assert upper_imports(source) == [(2, "export.runtime"), (6, "teachers.train"), (10, "students")]
    command_layer = [p for p in sorted(DISTILL.rglob("*.py")) if in_command_layer(p)]
    found = {module.split(".")[0] for p in command_layer for _, module in upper_imports(p.read_text())}
    assert found == UPPER_PACKAGES  # the command layer does import them, function-local imports included
