"""The notebooks in notebooks/: committed clean, public API only, run on this Python.

``pytest`` executes them (nbmake, enabled in pyproject.toml for the ``notebooks``
test path); these tests check what executing them cannot: that they are stored
without outputs, that they use only names a package exports in ``__all__``, and
that the kernel nbmake starts is this environment's interpreter.
"""

from __future__ import annotations

import ast
import importlib
import json
import sys
from pathlib import Path
from typing import Any

import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("*.ipynb"))


def _cells(path: Path) -> list[dict[str, Any]]:
    cells: list[dict[str, Any]] = json.loads(path.read_text(encoding="utf-8"))["cells"]
    return cells


def _source(cell: dict[str, Any]) -> str:
    source = cell["source"]
    return source if isinstance(source, str) else "".join(source)


def test_the_two_worked_notebooks_are_there() -> None:
    assert [p.name for p in NOTEBOOKS] == [
        "replay_a_failed_saga.ipynb",
        "stuck_saga_triage.ipynb",
    ]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebooks_are_committed_without_outputs_or_execution_counts(path: Path) -> None:
    for index, cell in enumerate(_cells(path)):
        if cell["cell_type"] != "code":
            continue
        assert cell.get("outputs") == [], f"{path.name} cell {index} has outputs"
        assert cell.get("execution_count") is None, f"{path.name} cell {index} was executed"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebooks_import_only_names_sagalog_exports(path: Path) -> None:
    imported: list[str] = []
    for cell in _cells(path):
        if cell["cell_type"] != "code":
            continue
        for node in ast.walk(ast.parse(_source(cell))):
            if isinstance(node, ast.Import):
                assert not any(a.name.startswith("sagalog") for a in node.names), ast.unparse(node)
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("sagalog"):
                module = importlib.import_module(node.module or "")
                exported = set(getattr(module, "__all__", ()))
                for alias in node.names:
                    assert alias.name in exported, f"{node.module}.{alias.name} is not public"
                    imported.append(alias.name)
    assert imported, f"{path.name} uses no sagalog name"


def test_the_notebook_kernel_is_this_python() -> None:
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import KernelManager

    names = {json.loads(p.read_text())["metadata"]["kernelspec"]["name"] for p in NOTEBOOKS}
    assert names == {"python3"}
    spec = KernelSpecManager().get_kernel_spec("python3")  # NoSuchKernel if missing
    assert "ipykernel_launcher" in spec.argv
    command = KernelManager(kernel_name="python3").format_kernel_cmd()
    assert command[0] == sys.executable  # not a python found elsewhere on PATH
