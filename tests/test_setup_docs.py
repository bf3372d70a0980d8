"""The setup docs a new user reads first say what is true here.

sagalog is not on a package index, so the docs say how to install it from a checkout
or a wheel; they say what CI runs beyond a bare ``pytest``; and the worker's synopsis
lists every transport and ``--metrics-port``.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
TESTING = (ROOT / "docs" / "testing.md").read_text()
CLI = (ROOT / "docs" / "cli.md").read_text()


def test_no_doc_installs_from_an_index_without_saying_how_to_get_the_package() -> None:
    for text in (README, TESTING):
        assert not re.search(r'pip install "sagalog\[', text)
        assert 'pip install -e ".[testing]"' in text or 'pip install -e ".[dev]"' in text
        assert "pip wheel --no-deps -w dist ." in text
        assert "not on a package index" in text or "not published on a package index" in text


def test_the_readme_says_what_ci_runs_and_how_long_the_suite_takes() -> None:
    for fact in (
        ".ci/run",
        "CI=true",
        "SAGALOG_HYPOTHESIS_PROFILE=ci",
        "ruff check .",
        "scripts/typecheck",
        "about eight minutes on two cores",
        'pytest -m "not slow"',
        "SAGALOG_TEST_BACKEND=sqlite",
        "starts a local RabbitMQ",
    ):
        assert fact in README, fact


def test_the_worker_synopsis_lists_every_transport_and_the_metrics_port() -> None:
    synopsis = CLI[CLI.index("```") : CLI.index("```", CLI.index("```") + 3)]
    worker = synopsis[synopsis.index("sagalog worker") :]
    assert "--transport none|in-process|rabbitmq" in worker
    assert "--metrics-port PORT" in worker
    assert "--rabbitmq-url" in worker
    for command in ("start", "explain", "replay"):
        assert f"sagalog {command} " in synopsis


def test_the_examples_the_readme_names_exist() -> None:
    for example in re.findall(r"python (examples/\w+\.py)", README):
        assert (ROOT / example).is_file(), example
