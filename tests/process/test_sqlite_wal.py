"""Switching a SQLite file to WAL mode waits for other connections' write locks.

SQLite refuses the switch at once (``database is locked``, without the busy
timeout) while another connection holds a write lock; several creators opening a
new file together then failed at random. ``use_wal`` waits instead, up to its
timeout, and then raises SQLite's own error.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from sagalog.process.store.sqlite import use_wal


@pytest.fixture
def writer(tmp_path: Path) -> Iterator[sqlite3.Connection]:
    """A connection holding the write lock of a new file in rollback-journal mode."""
    connection = sqlite3.connect(tmp_path / "w.db", isolation_level=None, check_same_thread=False)
    connection.execute("CREATE TABLE t (x)")
    connection.execute("BEGIN IMMEDIATE")
    connection.execute("INSERT INTO t VALUES (1)")
    yield connection
    connection.close()


def _mode(path: Path) -> str:
    with sqlite3.connect(path) as connection:
        return str(connection.execute("PRAGMA journal_mode").fetchone()[0]).lower()


def test_plain_sqlite_refuses_the_switch_at_once(
    tmp_path: Path, writer: sqlite3.Connection
) -> None:
    # The behaviour use_wal works around: the busy timeout is not honoured here.
    other = sqlite3.connect(tmp_path / "w.db", timeout=5, isolation_level=None)
    with pytest.raises(sqlite3.OperationalError, match="locked"):
        other.execute("PRAGMA journal_mode=WAL")
    other.close()


def test_the_switch_waits_until_the_writer_commits(
    tmp_path: Path, writer: sqlite3.Connection
) -> None:
    committer = threading.Timer(0.3, lambda: writer.execute("COMMIT"))
    committer.start()
    other = sqlite3.connect(tmp_path / "w.db", isolation_level=None)
    try:
        use_wal(other, timeout=10)
    finally:
        committer.join()
        other.close()
    assert _mode(tmp_path / "w.db") == "wal"


def test_a_lock_held_past_the_timeout_raises_sqlites_error(
    tmp_path: Path, writer: sqlite3.Connection
) -> None:
    other = sqlite3.connect(tmp_path / "w.db", isolation_level=None)
    with pytest.raises(sqlite3.OperationalError, match="locked"):
        use_wal(other, timeout=0.2)
    other.close()
    writer.execute("ROLLBACK")
    assert _mode(tmp_path / "w.db") == "delete"


def test_a_file_already_in_wal_mode_is_left_as_it_is(tmp_path: Path) -> None:
    path = tmp_path / "already.db"
    with sqlite3.connect(path) as first:
        first.execute("PRAGMA journal_mode=WAL")
    connection = sqlite3.connect(path, isolation_level=None)
    use_wal(connection, timeout=1)
    connection.close()
    assert _mode(path) == "wal"
