"""The retention audit: who retired or restored which sagas, why, and into which archive.

One row per run in ``sagalog_retention_audit``, next to the views on the saga
database (a private in-memory database for ``memory://``). The row is written
``started`` before anything is removed and completed after, so even a run that
crashed leaves its trace; it is never deleted by retention itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    Boolean,
    Column,
    Engine,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    insert,
    select,
    update,
)

__all__ = ["AUDIT_TABLE_NAME", "AuditRecord", "RetentionAudit"]

AUDIT_TABLE_NAME = "sagalog_retention_audit"

_metadata = MetaData()
audit_table = Table(
    AUDIT_TABLE_NAME,
    _metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("started_at", String(40), nullable=False),
    Column("finished_at", String(40), nullable=True),
    Column("action", String(16), nullable=False),
    Column("state", String(16), nullable=False),
    Column("application", String(200), nullable=False),
    Column("actor", Text, nullable=False),
    Column("reason", Text, nullable=False),
    Column("ended_before", String(40), nullable=True),
    Column("statuses", String(200), nullable=True),
    Column("sagas", Integer, nullable=False, default=0),
    Column("events", Integer, nullable=False, default=0),
    Column("kept", Integer, nullable=False, default=0),
    Column("archive", Text, nullable=False),
    Column("archive_sha256", String(64), nullable=True),
    Column("dry_run", Boolean, nullable=False, default=False),
)


@dataclass(frozen=True)
class AuditRecord:
    """One audited retention or restore run."""

    id: int
    started_at: str
    finished_at: str | None
    action: str
    state: str
    application: str
    actor: str
    reason: str
    ended_before: str | None
    statuses: str | None
    sagas: int
    events: int
    kept: int
    archive: str
    archive_sha256: str | None
    dry_run: bool

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return dict(self.__dict__)


def _now() -> str:
    return datetime.now(UTC).isoformat()


class RetentionAudit:
    """The audit table on ``engine`` (the views' engine), created if missing."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        with engine.begin() as conn:
            _metadata.create_all(conn, checkfirst=True)

    def start(self, **values: Any) -> int:
        """Record a run as ``started``; return its id."""
        with self.engine.begin() as conn:
            result = conn.execute(
                insert(audit_table).values(started_at=_now(), state="started", **values)
            )
            key = result.inserted_primary_key
        assert key is not None
        return int(key[0])

    def finish(self, run_id: int, state: str, **values: Any) -> None:
        """Record how run ``run_id`` ended (``done`` or ``failed``) and what it did."""
        with self.engine.begin() as conn:
            conn.execute(
                update(audit_table)
                .where(audit_table.c.id == run_id)
                .values(finished_at=_now(), state=state, **values)
            )

    def records(self, limit: int = 100) -> list[AuditRecord]:
        """The newest runs first."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(audit_table).order_by(audit_table.c.id.desc()).limit(limit)
            ).all()
        return [AuditRecord(**row._asdict()) for row in rows]
