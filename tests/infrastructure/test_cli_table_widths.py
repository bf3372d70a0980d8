"""Every table is readable from 80 to 200 columns: ids, statuses and types are never cut.

Below the width where one fact per column fits, related facts share a cell; the
free-text columns (last error, detail) wrap or give way first. ``--help`` wraps
option text to the terminal instead of cutting it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from test_cli_helpers import invoke, invoke_json, shared_store

from sagalog.domain import SagaDefinition, Step
from sagalog.infrastructure.cli.output import console
from sagalog.process import SagaManager

#: One pytest-xdist worker runs this module: its tests share its store (a module fixture).
pytestmark = pytest.mark.xdist_group("test_cli_table_widths")

WIDTHS = (80, 100, 120, 130, 135, 150, 170, 200)

#: A longer type name than the demo's, and an error long enough to take any width.
LONG = SagaDefinition(
    "InternationalMoneyTransfer",
    [
        Step(
            name="debit",
            action="Accounts.Debit",
            compensation="Accounts.Refund",
            timeout=timedelta(seconds=30),
        ),
        Step(name="credit", action="Accounts.Credit"),
    ],
)
ERROR = "debit refused: the payer's account is frozen by compliance pending a manual review " * 2


@pytest.fixture(scope="module")
def store(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with shared_store(backend, tmp_path_factory.mktemp("cli-widths")) as url:
        manager = SagaManager([LONG], url)
        try:
            failed = manager.start("InternationalMoneyTransfer", {"amount": 5})
            manager.handle_step_failed(failed, "debit", ERROR)
            manager.start("InternationalMoneyTransfer", {"amount": 7})
        finally:
            manager.close()
        yield url


def _lines_fit(text: str, width: int) -> None:
    assert text.strip()
    assert max(len(line) for line in text.splitlines()) <= width


@pytest.mark.parametrize("width", WIDTHS)
def test_list_show_replay_and_versions_never_cut_ids_types_or_statuses(
    store: str, width: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    rows = invoke_json("list", "--database-url", store)
    monkeypatch.setattr(console, "_width", width)
    listed = invoke("list", "--database-url", store).stdout
    _lines_fit(listed, width)
    for row in rows:
        assert row["saga_id"] in listed
        assert row["status"] in listed
    assert listed.count("InternationalMoneyTransfer") == len(rows)
    assert "…" not in listed
    saga_id = rows[0]["saga_id"]
    for command in (("show", saga_id), ("replay", saga_id), ("versions",)):
        shown = invoke(*command, "--database-url", store).stdout
        _lines_fit(shown, width)
        assert "InternationalMoneyTransfer" in shown
        assert "…" not in shown
    stuck = invoke("stuck", "--database-url", store, "--at", "2099-01-01T00:00Z").stdout
    _lines_fit(stuck, width)
    assert rows[1]["saga_id"] in stuck or rows[0]["saga_id"] in stuck
    assert "InternationalMoneyTransfer" in stuck
    assert "…" not in stuck


@pytest.mark.slow
def test_list_at_130_columns_through_the_environment(store: str, tmp_path: Path) -> None:
    env = {**os.environ, "COLUMNS": "130"}
    done = subprocess.run(
        [sys.executable, "-m", "sagalog.infrastructure.cli", "list", "--database-url", store],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    _lines_fit(done.stdout, 130)
    assert done.stdout.count("InternationalMoneyTransfer") == 2
    assert "FAILED" in done.stdout
    assert "…" not in done.stdout


@pytest.mark.slow
def test_help_wraps_option_text_at_80_columns() -> None:
    env = {**os.environ, "COLUMNS": "80"}
    done = subprocess.run(
        [sys.executable, "-m", "sagalog.infrastructure.cli", "list", "--help"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    _lines_fit(done.stdout, 80)
    assert "…" not in done.stdout
    assert "postgresql://user@host:port/db" in done.stdout
    assert "SAGALOG_DATABASE_URL" in done.stdout
