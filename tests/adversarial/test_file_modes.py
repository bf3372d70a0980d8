"""Issue 15, case 8: files sagalog creates are owner-only unless configured.

SQLite stores and their ``-wal`` / ``-shm`` files, and participant stores, used to be
created 0644 with card numbers in them. They are created 0600 now (SQLite gives the
``-wal`` and ``-shm`` files the store file's mode), or with ``SAGALOG_FILE_MODE``.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from uuid import uuid4

import pytest

from sagalog.infrastructure.demo.sagas import DEMO_DEFINITIONS
from sagalog.infrastructure.services.participant import SQLiteProcessedCommands
from sagalog.process import SagaManager
from sagalog.process.store.url import DatabaseUrlError, file_mode


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _store_files(path: Path) -> list[Path]:
    return [path, Path(f"{path}-wal"), Path(f"{path}-shm")]


def test_a_sqlite_store_and_its_wal_and_shm_are_owner_only(tmp_path: Path) -> None:
    path = tmp_path / "sagas.db"
    manager = SagaManager(DEMO_DEFINITIONS, f"sqlite:///{path}")
    try:
        manager.start("OrderFulfillment", {"card": "4111 1111 1111 1111"})
        files = _store_files(path)
        assert all(f.exists() for f in files)
        assert [_mode(f) for f in files] == [0o600] * 3
    finally:
        manager.close()


def test_a_participant_store_is_owner_only(tmp_path: Path) -> None:
    path = tmp_path / "inventory.db"
    store = SQLiteProcessedCommands(path)
    try:
        store.put(uuid4(), '{"outcome": "completed"}')
        assert [_mode(f) for f in _store_files(path) if f.exists()] == [0o600] * 3
    finally:
        store.close()


def test_the_mode_is_configurable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SAGALOG_FILE_MODE", "640")
    umask = os.umask(0)
    os.umask(umask)
    path = tmp_path / "shared.db"
    manager = SagaManager(DEMO_DEFINITIONS, f"sqlite:///{path}")
    try:
        manager.start("OrderFulfillment", {})
        assert _mode(path) == 0o640 & ~umask
        assert _mode(Path(f"{path}-wal")) == 0o640 & ~umask
    finally:
        manager.close()


def test_an_existing_file_keeps_its_mode(tmp_path: Path) -> None:
    path = tmp_path / "mine.db"
    path.touch()
    path.chmod(0o644)
    SagaManager(DEMO_DEFINITIONS, f"sqlite:///{path}").close()
    assert _mode(path) == 0o644


@pytest.mark.parametrize("value", ["rw", "1000", "-1"])
def test_a_mode_that_is_not_one_is_refused(value: str) -> None:
    with pytest.raises(DatabaseUrlError, match="SAGALOG_FILE_MODE"):
        file_mode({"SAGALOG_FILE_MODE": value})
