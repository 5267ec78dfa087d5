"""The layers of docs/architecture.md as import rules: a method reaches the network only through
``methods.link.Link``, and bytes only through the compressors' public modules and names."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "mpicomp"
METHODS = sorted((PACKAGE / "methods").glob("*.py"))


def _imports(path: Path) -> list[tuple[str, str]]:
    """``(absolute module, imported name)`` for every import in ``path`` (name ``""`` for ``import m``)."""
    package = ["mpicomp", *path.parent.relative_to(PACKAGE).parts]
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join([*base, *([node.module] if node.module else [])])
            found += [(module, alias.name) for alias in node.names]
        elif isinstance(node, ast.Import):
            found += [(alias.name, "") for alias in node.names]
    return found


def _private(module: str, name: str) -> bool:
    return any(part.startswith("_") and not part.startswith("__") for part in [*module.split("."), name])


@pytest.mark.parametrize("path", METHODS, ids=lambda path: path.name)
def test_methods_reach_neither_the_transport_nor_the_wire_nor_private_codec_code(path):
    wrong = [
        f"{module}:{name}"
        for module, name in _imports(path)
        if module.startswith(("mpicomp.comm", "mpicomp.wire"))
        or (module.startswith("mpicomp.compressors") and _private(module, name))
    ]
    assert not wrong, f"methods/{path.name} imports {wrong}: go through Link, or the compressors' public API"
