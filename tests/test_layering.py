"""The package layers import downward only: infrastructure → projections → process → domain."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
ORDER = ["domain", "process", "projections", "infrastructure"]

#: Third-party packages that would mean I/O inside the pure domain.
DOMAIN_FORBIDDEN = {"sqlalchemy", "psycopg", "sqlite3", "socket", "requests", "urllib", "time"}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


@pytest.mark.parametrize("layer", ORDER)
def test_layer_imports_only_itself_and_the_layers_below(layer: str) -> None:
    allowed = set(ORDER[: ORDER.index(layer) + 1])
    offences = []
    for path in sorted((ROOT / layer).rglob("*.py")):
        for name in _imports(path):
            parts = name.split(".")
            if parts[0] == "sagalog" and len(parts) > 1 and parts[1] not in allowed:
                offences.append(f"{path.relative_to(ROOT)} imports {name}")
    assert offences == []


def test_domain_does_no_io() -> None:
    offences = []
    for path in sorted((ROOT / "domain").rglob("*.py")):
        for name in _imports(path):
            if name.split(".")[0] in DOMAIN_FORBIDDEN:
                offences.append(f"{path.relative_to(ROOT)} imports {name}")
    assert offences == []
