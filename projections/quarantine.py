"""Quarantine: events a follower could not apply, set aside so that it carries on.

A follower of the saga log (the projector, the command relay, the metrics observer)
that meets an event it cannot apply — one the view's database refuses (a NUL
character in a ``text`` column of PostgreSQL, written before such text was refused
at the door), one that no longer decodes (a cipher key gone, a topic removed), one
that cannot be turned into a command — must not stop: that would stop every saga
on the database, on every restart. Instead it records the event here, durably, with
why, moves its position past it and carries on with the rest.

Only the affected saga waits: the projector also sets aside every *later* event of
a saga that has one quarantined (its rows would be wrong without the earlier one),
so that saga's views stop where they were while every other saga's go on. An
operator retries a saga's quarantined events once the cause is fixed
(``sagalog quarantine retry``): they are applied in log order, all or none, and
leave the quarantine.

The table, ``sagalog_quarantine``, lives next to the views on the saga database;
one row per (follower, application, notification id), so recording the same event
twice (a crash between the record and the position) is harmless.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from sqlalchemy import Connection, Engine, delete, func, select, update
from sqlalchemy.dialects import postgresql, sqlite

from sagalog.domain.errors import first_line
from sagalog.process.store.url import DatabaseUrl
from sagalog.projections.engine import WRITE_OPTION, create_view_engine, is_private_memory
from sagalog.projections.schema import quarantine

__all__ = [
    "HELD_BEHIND",
    "QuarantineLog",
    "QuarantinedEvent",
    "describe_failure",
]

#: The error recorded for an event set aside because an earlier one of its saga is.
HELD_BEHIND = "held: an earlier event of this saga is quarantined"

#: Longest error text kept per quarantined event.
_MAX_ERROR = 2000


@dataclass(frozen=True)
class QuarantinedEvent:
    """One event a follower set aside, and why."""

    follower: str
    application_name: str
    notification_id: int
    saga_id: UUID | None
    topic: str
    error: str
    quarantined_at: datetime
    retries: int

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "follower": self.follower,
            "application": self.application_name,
            "notification_id": self.notification_id,
            "saga_id": None if self.saga_id is None else str(self.saga_id),
            "topic": self.topic,
            "error": self.error,
            "quarantined_at": self.quarantined_at.isoformat(),
            "retries": self.retries,
        }


def describe_failure(exc: BaseException) -> str:
    """One storable line naming ``exc``: its type, then its message's first line.

    The message may itself quote the unstorable value (a NUL, a lone surrogate):
    those are written visibly (``\\x00``), so the record can always be stored.
    """
    line = first_line(exc, named=True)
    safe = line.encode("utf-8", "backslashreplace").decode("utf-8").replace("\x00", "\\x00")
    return safe if len(safe) <= _MAX_ERROR else safe[: _MAX_ERROR - 1] + "…"


def _insert(conn: Connection) -> Any:
    return postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert


def record(
    conn: Connection,
    *,
    follower: str,
    application_name: str,
    notification_id: int,
    saga_id: UUID | None,
    topic: str,
    error: str,
) -> None:
    """Insert one quarantine row in ``conn``'s transaction (a repeat changes nothing)."""
    conn.execute(
        _insert(conn)(quarantine)
        .values(
            follower=follower,
            application_name=application_name,
            notification_id=notification_id,
            saga_id=saga_id,
            topic=topic[:500],
            error=error,
            quarantined_at=datetime.now(UTC),
            retries=0,
        )
        .on_conflict_do_nothing()
    )


def held_sagas(conn: Connection, follower: str, application_name: str) -> set[UUID]:
    """The sagas that have an event quarantined by ``follower``."""
    rows = conn.execute(
        select(quarantine.c.saga_id)
        .where(
            quarantine.c.follower == follower,
            quarantine.c.application_name == application_name,
            quarantine.c.saga_id.is_not(None),
        )
        .distinct()
    )
    return {saga_id for (saga_id,) in rows}


def select_rows(
    conn: Connection,
    *,
    follower: str | None = None,
    saga_id: UUID | None = None,
    limit: int | None = None,
) -> list[QuarantinedEvent]:
    """Quarantined events, oldest notification first, optionally of one follower or saga."""
    query = select(quarantine)
    if follower is not None:
        query = query.where(quarantine.c.follower == follower)
    if saga_id is not None:
        query = query.where(quarantine.c.saga_id == saga_id)
    query = query.order_by(quarantine.c.follower, quarantine.c.notification_id)
    if limit is not None:
        query = query.limit(limit)
    return [QuarantinedEvent(**dict(row)) for row in conn.execute(query).mappings()]


def remove(conn: Connection, follower: str, application_name: str, ids: list[int]) -> None:
    """Delete the rows of ``ids`` (events applied at last)."""
    if ids:
        conn.execute(
            delete(quarantine).where(
                quarantine.c.follower == follower,
                quarantine.c.application_name == application_name,
                quarantine.c.notification_id.in_(ids),
            )
        )


def note_retry_failed(
    conn: Connection, follower: str, application_name: str, ids: list[int], error: str
) -> None:
    """Count a failed retry of ``ids`` and keep its error."""
    if ids:
        conn.execute(
            update(quarantine)
            .where(
                quarantine.c.follower == follower,
                quarantine.c.application_name == application_name,
                quarantine.c.notification_id.in_(ids),
            )
            .values(retries=quarantine.c.retries + 1, error=error)
        )


def count_by_follower(conn: Connection) -> dict[str, int]:
    """How many events each follower holds in quarantine."""
    rows = conn.execute(select(quarantine.c.follower, func.count()).group_by(quarantine.c.follower))
    return {str(follower): int(count) for follower, count in rows}


class QuarantineLog:
    """The quarantine table on a saga database, for followers that keep no views.

    The relay and the metrics observer use one; the projector uses its views'
    own connection (:class:`~sagalog.projections.view.SagaViews`), so that a
    quarantine row and the position are written in one transaction.
    """

    def __init__(
        self,
        database_url: DatabaseUrl | None = None,
        *,
        engine: Engine | None = None,
        lock: contextlib.AbstractContextManager[Any] | None = None,
    ) -> None:
        self._owns_engine = engine is None
        if engine is None:
            engine = create_view_engine(database_url)
        self.engine = engine
        self._write_engine = engine.execution_options(**{WRITE_OPTION: True})
        shared = database_url is not None and is_private_memory(database_url)
        self._lock: contextlib.AbstractContextManager[Any] = (
            lock if lock is not None else threading.RLock() if shared else contextlib.nullcontext()
        )
        with self._writing() as conn:
            quarantine.create(conn, checkfirst=True)

    @contextlib.contextmanager
    def _writing(self) -> Iterator[Connection]:
        with self._lock, self._write_engine.begin() as conn:
            yield conn

    def record(
        self,
        *,
        follower: str,
        application_name: str,
        notification_id: int,
        saga_id: UUID | None,
        topic: str,
        error: str,
    ) -> None:
        """Record one event set aside by ``follower``."""
        with self._writing() as conn:
            record(
                conn,
                follower=follower,
                application_name=application_name,
                notification_id=notification_id,
                saga_id=saga_id,
                topic=topic,
                error=error,
            )

    def events(
        self, *, follower: str | None = None, saga_id: UUID | None = None
    ) -> list[QuarantinedEvent]:
        """What is held, oldest first."""
        with self._lock, self.engine.connect() as conn:
            return select_rows(conn, follower=follower, saga_id=saga_id)

    def remove(self, follower: str, application_name: str, ids: list[int]) -> None:
        """Forget ``ids`` (applied at last)."""
        with self._writing() as conn:
            remove(conn, follower, application_name, ids)

    def note_retry_failed(
        self, follower: str, application_name: str, ids: list[int], error: str
    ) -> None:
        """Count a failed retry of ``ids``."""
        with self._writing() as conn:
            note_retry_failed(conn, follower, application_name, ids, error)

    def counts(self) -> dict[str, int]:
        """Events held per follower."""
        with self._lock, self.engine.connect() as conn:
            return count_by_follower(conn)

    def close(self) -> None:
        """Release the engine's connections (unless the engine was given)."""
        if self._owns_engine:
            self.engine.dispose()
