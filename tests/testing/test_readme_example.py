"""The README's "Testing your sagas" example runs as a user would run it: its code,
after the README's definition, as a test module of its own under pytest."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[2] / "README.md"


def python_block_after(heading: str, text: str) -> str:
    """The first fenced ``python`` block after the line ``heading``."""
    after = text[text.index(f"\n{heading}\n") :]
    start = after.index("```python\n") + len("```python\n")
    return after[start : after.index("```", start)]


@pytest.mark.slow
def test_the_readme_testing_example_passes_as_written(tmp_path: Path) -> None:
    text = README.read_text(encoding="utf-8")
    definition = python_block_after("## A saga definition", text)
    example = python_block_after("## Testing your sagas", text)
    assert "SagaLawsMachine" in example
    assert len(example.strip().splitlines()) <= 16  # "a user's test in a dozen lines"
    module = tmp_path / "test_order_fulfillment.py"
    module.write_text(definition + "\n" + example, encoding="utf-8")
    ran = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(module)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "SAGALOG_HYPOTHESIS_PROFILE": "dev"},
    )
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert "2 passed" in ran.stdout


def test_the_readme_links_the_kit_reference() -> None:
    assert "[docs/testing.md](docs/testing.md)" in README.read_text(encoding="utf-8")
