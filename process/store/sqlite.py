"""Putting a SQLite file in WAL mode when other connections may be opening it too.

sagalog's own SQLite connections (the projections' engine, a participant's store of
processed commands) switch their file to WAL mode, as eventsourcing does for the
saga log. The switch needs the file to itself for a moment, and while another
connection holds a write lock SQLite answers ``database is locked`` at once,
without waiting for the connection's busy timeout. Several threads or processes
opening a new file together (replicas starting, a test's concurrent creators) then
fail at random. Here the switch waits the way a lock wait would, up to a timeout.
"""

from __future__ import annotations

import sqlite3
import time

__all__ = ["use_wal"]

#: First and longest pause between two tries of the switch, in seconds.
_FIRST_PAUSE = 0.005
_LONGEST_PAUSE = 0.1


def use_wal(connection: sqlite3.Connection, timeout: float) -> None:
    """Put ``connection``'s file in WAL mode, trying again while it is locked.

    A file already in WAL mode is left as it is (reading the mode takes no
    exclusive lock). Otherwise ``PRAGMA journal_mode=WAL`` is tried until it
    succeeds or ``timeout`` seconds have passed; then the last
    ``sqlite3.OperationalError`` is raised. Any other error is raised at once.
    """
    deadline = time.monotonic() + timeout
    pause = _FIRST_PAUSE
    while True:
        try:
            row = connection.execute("PRAGMA journal_mode").fetchone()
            if row is not None and str(row[0]).lower() == "wal":
                return
            connection.execute("PRAGMA journal_mode=WAL").fetchone()
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() + pause > deadline:
                raise
        time.sleep(pause)
        pause = min(pause * 2, _LONGEST_PAUSE)
