"""The poisoned store of issue 15 on any backend (no tests here).

``tests/adversarial/fixtures/nul_event.sqlite`` was written by sagalog before text a
store cannot hold was refused (``fixtures/make_nul_event.py``): saga ``…0b`` failed
with the error ``"declined\\x00"``; sagas ``…0a`` and ``…0c`` are healthy. On SQLite
the file itself is used (a copy); on PostgreSQL its stored events are copied row for
row — the same topics and state bytes — into the test's store, as if that store had
been written by the old code.
"""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path
from uuid import UUID

from eventsourcing.persistence import StoredEvent

from sagalog.infrastructure.demo.sagas import DEMO_DEFINITIONS
from sagalog.process import SagaManager

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "nul_event.sqlite"
POISONED = UUID("00000000-0000-4000-8000-00000000000b")
HEALTHY = (
    UUID("00000000-0000-4000-8000-00000000000a"),
    UUID("00000000-0000-4000-8000-00000000000c"),
)


def poisoned_store(backend: str, database_url: str, tmp_path: Path) -> str:
    """A URL of a store holding the fixture's events (SQLite file or PostgreSQL schema)."""
    if backend != "postgres":
        target = tmp_path / "poisoned.sqlite"
        shutil.copyfile(FIXTURE, target)
        return f"sqlite:///{target}"
    with sqlite3.connect(f"file:{FIXTURE}?mode=ro&immutable=1", uri=True) as source:
        rows = source.execute(
            "SELECT originator_id, originator_version, topic, state FROM stored_events "
            "ORDER BY rowid"
        ).fetchall()
    manager = SagaManager(DEMO_DEFINITIONS, database_url)
    try:
        for originator_id, version, topic, state in rows:
            manager.recorder.insert_events(
                [StoredEvent(UUID(originator_id), int(version), str(topic), bytes(state))]
            )
    finally:
        manager.close()
    return database_url
