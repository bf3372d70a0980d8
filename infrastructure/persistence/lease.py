"""The store's lease: which one of the workers on a store runs its relay, timers and projector.

One row per store in a table ``sagalog_lease`` (name, holder, epoch, expires_at), on the
store's own database. A worker takes the lease when the row is missing or expired, which
raises the epoch by one; its holder renews it every fraction of the lease time; the others
wait (standbys) and try again. A lease row rather than a PostgreSQL advisory lock because it
works the same on SQLite and PostgreSQL (advisory locks do not exist on SQLite), it survives
a pooled connection being recycled, and it gives an **epoch** that the relay's position
writes are fenced with: :meth:`LeaseTerm.record_position` records a position in one
transaction with a check that the lease row still holds the term's epoch, so a holder that
was paused past its lease (SIGSTOP, a long GC, a lost network) and resumed after another
worker took over cannot move the position. It cannot send either: before each command the
relay calls :meth:`LeaseTerm.check`, which fails once the holder's own (monotonic) clock
says the lease time since its last successful renewal has passed — which is always before
the database's ``expires_at``, the time the others may take over. Expiry is the database's
clock (one clock for every worker). See docs/worker.md.
"""

from __future__ import annotations

import os
import socket
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from eventsourcing.persistence import OperationalError, Tracking, TrackingRecorder

from sagalog.domain.errors import SagalogError
from sagalog.process.store.url import DatabaseUrl

__all__ = [
    "DEFAULT_LEASE_SECONDS",
    "LEASE_TABLE",
    "LeaseLost",
    "LeaseTerm",
    "StoreLease",
    "holder_id",
]

#: The default lease time: a standby takes over at most this long (plus one poll,
#: an eighth of it) after the holder stopped renewing.
DEFAULT_LEASE_SECONDS = 4.0
LEASE_TABLE = "sagalog_lease"
#: The lease of a store's relay, timers and projector (one row per such role).
STORE_LEASE_NAME = "store"
#: Seconds a connection waits for the database before the attempt counts as failed.
_CONNECT_TIMEOUT = 3


class LeaseLost(SagalogError, RuntimeError):
    """This worker no longer holds the store's lease: it must stop sending and recording."""


def holder_id() -> str:
    """A name for this worker that no other worker has: host, pid and a random part."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


@dataclass
class LeaseTerm:
    """One holder's hold on the lease, from taking it to losing or releasing it."""

    lease: StoreLease
    holder: str
    epoch: int
    #: ``time.monotonic()`` after which this holder must consider the lease lost.
    valid_until: float
    ended: threading.Event = field(default_factory=threading.Event)
    #: The notification id up to which the previous holders had begun to send (their
    #: last :meth:`mark_sending`): a command at or below it that this term sends may have
    #: been sent before, by a holder that died before it recorded its position.
    inherited_sending_to: int = 0

    @property
    def lapsed(self) -> bool:
        """The lease time since the last successful renewal has passed by this holder's clock.

        A lapsed term is over even if no other worker took the lease: it is never renewed
        back to life, because a holder paused that long cannot know what it missed.
        """
        return time.monotonic() >= self.valid_until

    def check(self) -> None:
        """Raise :class:`LeaseLost` unless this term still holds the lease by its own clock."""
        if self.ended.is_set() or self.lapsed:
            raise LeaseLost(f"the store's lease (epoch {self.epoch}) is no longer held")

    def record_position(self, recorder: TrackingRecorder, tracking: Tracking) -> None:
        """Record ``tracking`` only if the lease row still has this term's epoch (one transaction).

        Raises :class:`LeaseLost` (nothing recorded) if another worker took the lease over.
        """
        self.lease.record_fenced(recorder, tracking, self.epoch)

    def mark_sending(self, up_to: int) -> None:
        """Note in the lease row, at this term's epoch, that commands up to ``up_to`` go out.

        Called before each batch: it checks the epoch on the database (a worker that lost
        the lease learns it here, before it sends) and leaves the next holder the mark
        it counts re-sent commands by. Raises :class:`LeaseLost`.
        """
        self.check()
        self.lease.mark_sending(self, up_to)


class StoreLease:
    """The lease row of one store, reached through a connection of its own.

    ``lease_seconds`` is how long a holder's renewal keeps the others out. The lease's
    own connection is separate from the pools of the manager and the relay, so a busy
    pool never delays a heartbeat.
    """

    def __init__(
        self,
        url: DatabaseUrl,
        *,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
        name: str = STORE_LEASE_NAME,
        create: bool = True,
    ) -> None:
        if lease_seconds <= 0:
            raise ValueError("the lease time must be positive")
        if url.kind not in ("postgresql", "sqlite") or url.is_sqlite_memory:
            raise ValueError(f"a lease needs a shared store, not {url.masked}")
        self.url = url
        self.lease_seconds = lease_seconds
        self.name = name
        self.postgres = url.kind == "postgresql"
        schema = url.schema if self.postgres and url.schema else None
        self.table = f'"{schema}".{LEASE_TABLE}' if schema else LEASE_TABLE
        ph: Callable[[str], str] = (lambda p: f"%({p})s") if self.postgres else (lambda p: f":{p}")
        now = "extract(epoch from clock_timestamp())" if self.postgres else _SQLITE_NOW
        self.placeholder = ph
        self.now = now
        self.schema = schema
        self._create = (
            f"CREATE TABLE IF NOT EXISTS {self.table} (name TEXT PRIMARY KEY, "
            "holder TEXT NOT NULL, epoch BIGINT NOT NULL, expires_at DOUBLE PRECISION NOT NULL, "
            "sending_to BIGINT NOT NULL DEFAULT 0)"
        )
        self._acquire = (
            f"INSERT INTO {self.table} AS lease (name, holder, epoch, expires_at) "
            f"VALUES ({ph('name')}, {ph('holder')}, 1, {now} + {ph('seconds')}) "
            "ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, "
            "epoch = lease.epoch + 1, expires_at = excluded.expires_at "
            f"WHERE lease.expires_at < {now} RETURNING epoch, sending_to"
        )
        self._mark = (
            f"UPDATE {self.table} SET sending_to = {ph('up_to')} "
            f"WHERE name = {ph('name')} AND holder = {ph('holder')} AND epoch = {ph('epoch')} "
            f"AND sending_to < {ph('up_to')} RETURNING epoch"
        )
        self._still = (
            f"SELECT epoch FROM {self.table} WHERE name = {ph('name')} "
            f"AND holder = {ph('holder')} AND epoch = {ph('epoch')}"
        )
        self._renew = (
            f"UPDATE {self.table} SET expires_at = {now} + {ph('seconds')} "
            f"WHERE name = {ph('name')} AND holder = {ph('holder')} AND epoch = {ph('epoch')} "
            "RETURNING epoch"
        )
        self._release = (
            f"UPDATE {self.table} SET expires_at = 0 "
            f"WHERE name = {ph('name')} AND holder = {ph('holder')} AND epoch = {ph('epoch')}"
        )
        # Touching the row takes its write lock until the position is recorded, so a
        # takeover waits for the transaction (or this one sees the new epoch and fails).
        self._fence = (
            f"UPDATE {self.table} SET epoch = epoch "
            f"WHERE name = {ph('name')} AND epoch = {ph('epoch')} RETURNING epoch"
        )
        self._read = (
            f"SELECT holder, epoch, expires_at - {now} FROM {self.table} WHERE name = {ph('name')}"
        )
        self._conn: Any = None
        self._conn_lock = threading.Lock()
        if create:  # (``False``: only read, e.g. ``sagalog workers``; nothing is written)
            self.create_table()

    # -- the connection ------------------------------------------------------------

    def _connect(self) -> Any:
        url = self.url
        if self.postgres:
            import psycopg

            return psycopg.connect(
                url.conninfo(),
                autocommit=True,
                connect_timeout=_CONNECT_TIMEOUT,
                prepare_threshold=None,
            )
        assert url.path is not None
        return sqlite3.connect(
            url.path, timeout=_CONNECT_TIMEOUT, isolation_level=None, check_same_thread=False
        )

    def _execute(self, statement: str, params: dict[str, Any]) -> list[tuple[Any, ...]]:
        """Run one statement (its own transaction); a failed connection is dropped."""
        with self._conn_lock:
            if self._conn is None:
                self._conn = self._connect()
            try:
                cursor = self._conn.execute(statement, params)
                rows = list(cursor.fetchall()) if cursor.description is not None else []
            except Exception:
                self._drop()
                raise
            return rows

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except Exception:
                return  # the original error is the one to raise

    def close(self) -> None:
        """Close the lease's connection."""
        with self._conn_lock:
            self._drop()

    def create_table(self) -> None:
        """Create the lease table unless it exists (serialised on PostgreSQL).

        A table made before the ``sending_to`` column gets it added.
        """
        if self.postgres:
            self.run_ddl(
                self._create,
                f"ALTER TABLE {self.table} ADD COLUMN IF NOT EXISTS "
                "sending_to BIGINT NOT NULL DEFAULT 0",
            )
            return
        self._execute(self._create, {})
        columns = {row[1] for row in self._execute(f"PRAGMA table_info({LEASE_TABLE})", {})}
        if "sending_to" not in columns:
            try:
                self._execute(
                    f"ALTER TABLE {LEASE_TABLE} ADD COLUMN sending_to BIGINT NOT NULL DEFAULT 0",
                    {},
                )
            except sqlite3.OperationalError as exc:
                if "duplicate column" not in str(exc):  # another worker added it first
                    raise

    def run_ddl(self, *statements: str) -> None:
        """Run ``statements`` in one transaction; on PostgreSQL under the DDL lock, so that
        workers starting at once on a fresh store do not race to create the same type."""
        with self._conn_lock:
            if self._conn is None:
                self._conn = self._connect()
            if not self.postgres:
                for statement in statements:
                    self._conn.execute(statement)
                return
            with self._conn.transaction():
                self._conn.execute("SELECT pg_advisory_xact_lock(hashtext('sagalog_ddl'))")
                if self.schema:
                    self._conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{self.schema}"')
                for statement in statements:
                    self._conn.execute(statement)

    def execute(self, statement: str, params: dict[str, Any]) -> list[tuple[Any, ...]]:
        """Run one statement on the lease's connection (its own transaction); the rows."""
        return self._execute(statement, params)

    # -- the lease -----------------------------------------------------------------

    def acquire(self, holder: str) -> LeaseTerm | None:
        """Take the lease if it is free or expired: a new term, one epoch up; else ``None``.

        A standby first reads the row and writes only when the lease looks free: on SQLite
        the upsert takes the file's write lock even when it changes nothing, and a standby
        paused while holding it would stop the holder's renewals.
        """
        started = time.monotonic()
        held = self._execute(self._read, {"name": self.name})
        if held and held[0][2] > 0:
            return None
        rows = self._execute(
            self._acquire, {"name": self.name, "holder": holder, "seconds": self.lease_seconds}
        )
        if not rows:
            return None
        epoch, sending_to = rows[0]
        return LeaseTerm(
            self,
            holder,
            int(epoch),
            started + self.lease_seconds,
            ended=threading.Event(),
            inherited_sending_to=int(sending_to or 0),
        )

    def mark_sending(self, term: LeaseTerm, up_to: int) -> None:
        """Raise the row's ``sending_to`` to ``up_to`` at ``term``'s epoch, else :class:`LeaseLost`.

        A database error is raised as eventsourcing's ``OperationalError`` (the relay
        retries it with backoff, as any failure of the store).
        """
        params = {"name": self.name, "holder": term.holder, "epoch": term.epoch, "up_to": up_to}
        try:
            if self._execute(self._mark, params):
                return
            held = self._execute(self._still, params)  # already marked that far, or lost?
        except (sqlite3.Error, OSError) as exc:
            raise OperationalError(f"lease: {exc}") from exc
        except Exception as exc:
            if type(exc).__module__.startswith("psycopg"):
                raise OperationalError(f"lease: {exc}") from exc
            raise
        if not held:
            term.ended.set()
            raise LeaseLost(
                f"the store's lease moved past epoch {term.epoch}: commands up to {up_to} not sent"
            )

    def renew(self, term: LeaseTerm) -> bool:
        """Extend ``term`` by the lease time; ``False`` if another worker took the lease over."""
        started = time.monotonic()
        rows = self._execute(
            self._renew,
            {
                "name": self.name,
                "holder": term.holder,
                "epoch": term.epoch,
                "seconds": self.lease_seconds,
            },
        )
        if not rows:
            return False
        term.valid_until = started + self.lease_seconds
        return True

    def release(self, term: LeaseTerm) -> None:
        """Give the lease up now (a clean stop), so a standby need not wait for it to expire."""
        term.ended.set()
        self._execute(
            self._release, {"name": self.name, "holder": term.holder, "epoch": term.epoch}
        )

    def holder(self) -> tuple[str, int, float] | None:
        """(holder, epoch, seconds until it expires: negative if it has) or ``None``."""
        rows = self._execute(self._read, {"name": self.name})
        if not rows:
            return None
        holder, epoch, remaining = rows[0]
        return str(holder), int(epoch), float(remaining)

    def record_fenced(self, recorder: TrackingRecorder, tracking: Tracking, epoch: int) -> None:
        """Record ``tracking`` with ``recorder`` in a transaction that checks ``epoch``."""
        datastore: Any = getattr(recorder, "datastore")  # noqa: B009 - eventsourcing's recorders
        with datastore.transaction(commit=True) as curs:
            curs.execute(self._fence, {"name": self.name, "epoch": epoch})
            if curs.fetchone() is None:
                raise LeaseLost(
                    f"the store's lease moved past epoch {epoch}: "
                    f"position {tracking.notification_id} not recorded"
                )
            recorder._insert_tracking(curs, tracking)  # type: ignore[attr-defined]


#: SQLite's clock in seconds since the epoch (millisecond resolution).
_SQLITE_NOW = "((julianday('now') - 2440587.5) * 86400.0)"
