"""The package layers import downward only: infrastructure → projections → process → domain.

The testing kit (``testing/``, installed as ``sagalog.testing``) sits on top, beside
infrastructure: it may use the layers below infrastructure, and no other package
imports it, so the kit and its test-only dependencies (pytest, hypothesis) never
load in production code.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
ORDER = ["domain", "process", "projections", "infrastructure"]
#: The testing kit and what it may import (itself, and the layers below infrastructure).
TESTING = "testing"
TESTING_MAY_IMPORT = {TESTING, "domain", "process", "projections"}

#: Third-party packages that would mean I/O inside the pure domain.
DOMAIN_FORBIDDEN = {"sqlalchemy", "psycopg", "sqlite3", "socket", "requests", "urllib", "time"}


def _sagalog_offences(folder: str, allowed: set[str]) -> list[str]:
    """Imports of sagalog packages outside ``allowed`` in the modules of ``folder``."""
    offences = []
    for path in sorted((ROOT / folder).rglob("*.py")):
        for name in _imports(path):
            parts = name.split(".")
            if parts[0] == "sagalog" and len(parts) > 1 and parts[1] not in allowed:
                offences.append(f"{path.relative_to(ROOT)} imports {name}")
    return offences


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
    """Also: no layer imports the testing kit (it is not in any layer's allowed set)."""
    assert _sagalog_offences(layer, set(ORDER[: ORDER.index(layer) + 1])) == []


def test_the_testing_kit_sits_on_top_beside_infrastructure() -> None:
    assert (ROOT / TESTING / "__init__.py").exists()
    assert _sagalog_offences(TESTING, TESTING_MAY_IMPORT) == []


def test_domain_does_no_io() -> None:
    offences = []
    for path in sorted((ROOT / "domain").rglob("*.py")):
        for name in _imports(path):
            if name.split(".")[0] in DOMAIN_FORBIDDEN:
                offences.append(f"{path.relative_to(ROOT)} imports {name}")
    assert offences == []
