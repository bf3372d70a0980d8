"""The PostgreSQL saga recorder: eventsourcing's process recorder plus the timer index.

Kept apart from :mod:`sagalog.infrastructure.persistence.recorders` because it needs psycopg,
an optional extra (``sagalog[postgres]``); import it from there (the name is
resolved lazily) or by the topic
``sagalog.infrastructure.persistence.recorders:PostgresSagaRecorder``. The table layout and
the transaction rules are described in that module.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, TypeVar, cast
from uuid import UUID

import psycopg
from eventsourcing.persistence import (
    IntegrityError,
    InterfaceError,
    Notification,
    OperationalError,
    PersistenceError,
    ProgrammingError,
    StoredEvent,
    Tracking,
)
from eventsourcing.postgres import (
    PostgresDatastore,
    PostgresProcessRecorder,
    PostgresTrackingRecorder,
)
from eventsourcing.utils import retry
from psycopg import Connection, Cursor
from psycopg.pq import TransactionStatus
from psycopg.rows import DictRow, tuple_row
from psycopg.sql import SQL, Composed, Identifier

from sagalog.domain.errors import first_line
from sagalog.infrastructure.persistence.recorders import (
    StreamRow,
    as_utc,
    check_limit,
    data_keys_kwarg,
    data_keys_table_name,
    saga_timers_kwarg,
    timers_table_name,
)

__all__ = ["PostgresSagaRecorder", "PostgresSagaTrackingRecorder"]

_F = TypeVar("_F", bound=Callable[..., Any])

#: eventsourcing retries its PostgreSQL reads on transient connection errors;
#: the timer reads do the same (``retry`` is untyped, hence the cast).
_retry_transient = cast(
    "Callable[[_F], _F]", retry((InterfaceError, OperationalError), max_attempts=10, wait=0.2)
)


#: SQLSTATEs of PostgreSQL's own catalog collisions between concurrent, idempotent
#: DDL: "tuple concurrently updated" (XX000, from two ``CREATE OR REPLACE
#: FUNCTION``), unique violations on ``pg_type`` / ``pg_class`` (23505, from two
#: ``CREATE TYPE`` / ``CREATE TABLE IF NOT EXISTS``), duplicate table or object.
#: eventsourcing's own refusal of a second tracking-table migration marker is an
#: ``IntegrityError`` with no SQLSTATE; it is retried too.
_CONCURRENT_DDL_SQLSTATES = frozenset({"XX000", "23505", "42P07", "42710"})
#: What the DDL is run again for: the collisions above, and a deadlock (40P01) — the DDL
#: of a manager constructed while workers write on the store takes locks on the tables in
#: turn that a write holds in another order; PostgreSQL breaks the cycle by rolling the
#: DDL back, and run again it passes.
_RETRIED_DDL_SQLSTATES = _CONCURRENT_DDL_SQLSTATES | {"40P01"}
_CREATE_TABLE_ATTEMPTS = 5


def create_schema(datastore: PostgresDatastore) -> None:
    """Create the store's schema (``?schema=``) unless it exists; say so clearly if not allowed.

    eventsourcing assumes the schema exists and fails on its first ``CREATE TYPE``
    with ``schema "…" does not exist``; a new user's first run should just work.
    """
    schema = datastore.schema
    if not schema or schema == "public":
        return
    try:
        with datastore.transaction(commit=True) as curs:
            curs.execute(
                SQL("CREATE SCHEMA IF NOT EXISTS {}").format(Identifier(schema)), prepare=False
            )
    except PersistenceError as exc:
        if getattr(exc.__cause__, "sqlstate", None) in _CONCURRENT_DDL_SQLSTATES:
            return  # another process created it at the same moment
        cause = exc.__cause__ if exc.__cause__ is not None else exc
        first = first_line(cause)
        msg = (
            f"schema {schema!r} does not exist and could not be created ({first}); "
            f"create it (CREATE SCHEMA {schema}) or name an existing one in ?schema="
        )
        raise OperationalError(msg) from exc


def create_again_if_concurrent(
    create: Callable[[], None], datastore: PostgresDatastore | None = None
) -> None:
    """Run ``create`` (idempotent DDL), again while it collides with another process's.

    With ``datastore``, under the database's DDL lock (the one the lease takes for its
    own DDL), held on a connection of its own: managers and workers constructed at once
    then run their DDL one after another rather than colliding in the catalogs, which
    a few retries do not outlast when many start together.
    """
    with _ddl_lock(datastore):
        _create_again(create)


@contextmanager
def _ddl_lock(datastore: PostgresDatastore | None) -> Iterator[None]:
    """Hold ``pg_advisory_lock(hashtext('sagalog_ddl'))`` on a connection of its own."""
    conn = None
    if datastore is not None:
        kwargs = datastore.pool.kwargs
        given: dict[str, Any] = kwargs if isinstance(kwargs, dict) else {}
        params = {
            k: v
            for k, v in given.items()
            if k in ("dbname", "host", "port", "user", "password") and v is not None
        }
        try:
            conn = psycopg.connect(**params, autocommit=True, connect_timeout=10)
            conn.execute("SELECT pg_advisory_lock(hashtext('sagalog_ddl'))")
        except psycopg.Error:  # no lock then: the retries below still apply
            if conn is not None:
                conn.close()
            conn = None
    try:
        yield
    finally:
        if conn is not None:
            conn.close()  # ends the session, and its lock with it


def _create_again(create: Callable[[], None]) -> None:
    for attempt in range(1, _CREATE_TABLE_ATTEMPTS + 1):
        try:
            create()
        except PersistenceError as exc:
            sqlstate = getattr(exc.__cause__, "sqlstate", None)
            concurrent = isinstance(exc, IntegrityError) or sqlstate in _RETRIED_DDL_SQLSTATES
            if attempt == _CREATE_TABLE_ATTEMPTS or not concurrent:
                raise
            time.sleep(0.02 * attempt)
        else:
            return


class PostgresSagaRecorder(PostgresProcessRecorder):
    """eventsourcing's PostgreSQL process recorder plus the timer table.

    eventsourcing runs ``_insert_events`` in the insert transaction (pipelined)
    after the tracking record and before it locks the events table and inserts
    the events; a conflict there aborts the transaction, timers included.

    A write without a tracking record (every reply, start and tick of the
    saga manager) takes one round trip instead of eventsourcing's four: see
    :meth:`insert_events`.

    ``POSTGRES_ENABLE_DB_FUNCTIONS`` is refused: in that mode eventsourcing
    inserts events through a database function and never calls
    ``_insert_events``, so timers (and tracking records) would silently not be
    written.
    """

    def __init__(
        self,
        datastore: PostgresDatastore,
        *,
        events_table_name: str = "stored_events",
        tracking_table_name: str | None = None,
    ) -> None:
        if datastore.enable_db_functions:
            msg = (
                f"{type(self).__name__} cannot keep its timer index with "
                "POSTGRES_ENABLE_DB_FUNCTIONS on; turn it off"
            )
            raise ProgrammingError(msg)
        if tracking_table_name is None:
            # The factory passes one to process recorders but not to application
            # recorders; follow its naming rather than a shared default table.
            prefix, sep, rest = events_table_name.rpartition("_events")
            tracking_table_name = (
                f"{prefix}_tracking" if sep and not rest else "notification_tracking"
            )
        self.timers_table_name = timers_table_name(events_table_name)
        self.check_identifier_length(self.timers_table_name)
        self.data_keys_table_name = data_keys_table_name(events_table_name)
        self.check_identifier_length(self.data_keys_table_name)
        super().__init__(
            datastore,
            events_table_name=events_table_name,
            tracking_table_name=tracking_table_name,
        )
        schema = Identifier(self.datastore.schema)
        table = Identifier(self.timers_table_name)
        self.sql_create_statements.append(
            SQL(
                "CREATE TABLE IF NOT EXISTS {schema}.{table} ("
                "saga_id uuid PRIMARY KEY, "
                "due_at timestamptz NOT NULL)"
            ).format(schema=schema, table=table)
        )
        self.sql_create_statements.append(
            SQL("CREATE INDEX IF NOT EXISTS {index} ON {schema}.{table} (due_at, saga_id)").format(
                index=Identifier(f"{self.timers_table_name}_due_at_idx"),
                schema=schema,
                table=table,
            )
        )
        self.upsert_timers_statement = SQL(
            "INSERT INTO {schema}.{table} (saga_id, due_at) "
            "SELECT * FROM unnest(%b::uuid[], %b::timestamptz[]) "
            "ON CONFLICT (saga_id) DO UPDATE SET due_at = EXCLUDED.due_at"
        ).format(schema=schema, table=table)
        self.delete_timers_statement = SQL(
            "DELETE FROM {schema}.{table} WHERE saga_id = ANY(%b::uuid[])"
        ).format(schema=schema, table=table)
        self.select_due_timers_statement = SQL(
            "SELECT saga_id, due_at FROM {schema}.{table} WHERE due_at <= %s "
            "ORDER BY due_at, saga_id LIMIT %s"
        ).format(schema=schema, table=table)
        self.count_timers_statement = SQL("SELECT COUNT(*) AS n FROM {schema}.{table}").format(
            schema=schema, table=table
        )
        keys = Identifier(self.data_keys_table_name)
        self.sql_create_statements.append(
            SQL(
                "CREATE TABLE IF NOT EXISTS {schema}.{table} ("
                "saga_id uuid PRIMARY KEY, "
                "wrapped bytea NOT NULL)"
            ).format(schema=schema, table=keys)
        )
        self.insert_data_keys_statement = SQL(
            "INSERT INTO {schema}.{table} (saga_id, wrapped) "
            "SELECT * FROM unnest(%b::uuid[], %b::bytea[]) "
            "ON CONFLICT (saga_id) DO NOTHING"
        ).format(schema=schema, table=keys)
        self.select_data_keys_statement = SQL(
            "SELECT saga_id, wrapped FROM {schema}.{table} WHERE saga_id = ANY(%b::uuid[])"
        ).format(schema=schema, table=keys)
        self.has_data_key_statement = SQL(
            "SELECT length(wrapped) AS had FROM {schema}.{table} WHERE saga_id = %s FOR UPDATE"
        ).format(schema=schema, table=keys)
        # Restore: a tombstone replaces a key, a key never replaces a tombstone.
        self.restore_data_keys_statement = SQL(
            "INSERT INTO {schema}.{table} (saga_id, wrapped) "
            "SELECT * FROM unnest(%b::uuid[], %b::bytea[]) "
            "ON CONFLICT (saga_id) DO UPDATE SET wrapped = ''::bytea "
            "WHERE length(excluded.wrapped) = 0"
        ).format(schema=schema, table=keys)
        self.forget_data_key_statement = SQL(
            "INSERT INTO {schema}.{table} (saga_id, wrapped) VALUES (%s, ''::bytea) "
            "ON CONFLICT (saga_id) DO UPDATE SET wrapped = ''::bytea"
        ).format(schema=schema, table=keys)
        # The events as four parallel arrays sent in binary (``%b``): psycopg dumps
        # those without escaping, whereas an array of eventsourcing's composite type
        # (or any array sent as text) is escaped element by element with a regex.
        # The timer and bulk-read statements above and below send binary arrays too.
        self.insert_event_arrays_statement = SQL(
            "INSERT INTO {schema}.{table} (originator_id, originator_version, topic, state) "
            "SELECT * FROM unnest(%b::uuid[], %b::bigint[], %b::text[], %b::bytea[]) "
            "RETURNING notification_id"
        ).format(schema=schema, table=Identifier(self.events_table_name))
        self.notify_statement = SQL("NOTIFY {channel}").format(
            channel=Identifier(self.channel_name)
        )
        self.select_event_rows_of_statement = SQL(
            "SELECT originator_id, originator_version, topic, state FROM {schema}.{table} "
            "WHERE originator_id = ANY(%b::uuid[]) ORDER BY originator_id, originator_version"
        ).format(schema=schema, table=Identifier(self.events_table_name))
        self._notifications_table = (schema, Identifier(self.events_table_name))
        self._select_notifications_statements: dict[tuple[bool, bool, bool, bool], Composed] = {}

    def create_table(self) -> None:
        """Create the tables, again if another process created them at the same moment.

        eventsourcing runs its DDL each time an application is constructed:
        ``CREATE TYPE``, ``CREATE ... IF NOT EXISTS`` and ``CREATE OR REPLACE
        FUNCTION``. Those are idempotent one at a time but not atomic, so managers
        started at the same instant on one database (two replicas, a restarted
        fleet) collide in PostgreSQL's catalogs and one of them would fail to
        start. Likewise both may find no tracking table, create it, and record its
        migration marker, the second marker being refused ("Failed to record
        tracking for __migration__"). Every statement being idempotent, and the
        marker found on a second try, the loser just runs them again.
        """
        create_schema(self.datastore)
        create_again_if_concurrent(super().create_table, self.datastore)

    @_retry_transient
    def insert_events(
        self, stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> Sequence[int] | None:
        """Insert events, timers and tracking in one transaction; one round trip if it can.

        eventsourcing's ``insert_events`` nests ``conn.transaction()`` in a
        pipeline (psycopg syncs each level), inserts through ``executemany`` (one
        more sync) and syncs before ``COMMIT``: four round trips per write. Here
        ``BEGIN``, the timer statements, ``SET LOCAL lock_timeout``, ``LOCK TABLE
        … IN EXCLUSIVE MODE`` (notification ids in commit order, as eventsourcing
        keeps them), ``NOTIFY``, one ``INSERT … RETURNING notification_id`` of all
        the events and ``COMMIT`` go in one pipeline with **one** sync. The
        statements are the same, so is the transaction: a conflicting event
        (optimistic concurrency) fails the ``INSERT``, PostgreSQL skips the rest
        up to the sync, nothing commits, and the error is raised as
        eventsourcing's ``IntegrityError`` (a ``RecordConflictError``) after an
        explicit ``ROLLBACK``.

        A write with a tracking record goes eventsourcing's way: its tracking
        upsert must be read back (a duplicate returns no row) before the events
        are inserted.
        """
        tracking: Tracking | None = kwargs.get("tracking")
        if tracking is not None or not stored_events:
            inserted: Sequence[int] | None = super().insert_events(stored_events, **kwargs)
            return inserted
        timers = saga_timers_kwarg(kwargs)
        with self.datastore.get_connection() as conn:
            try:
                with (
                    conn.pipeline() as pipeline,
                    conn.cursor() as curs,
                    conn.cursor(row_factory=tuple_row) as ids,
                ):
                    curs.execute("BEGIN")
                    self._write_timers(curs, timers)
                    self._write_data_keys(curs, data_keys_kwarg(kwargs))
                    for statement in self.lock_table_statements:
                        curs.execute(statement, prepare=True)
                    curs.execute(self.notify_statement)
                    ids.execute(
                        self.insert_event_arrays_statement,
                        (
                            [e.originator_id for e in stored_events],
                            [e.originator_version for e in stored_events],
                            [e.topic for e in stored_events],
                            [e.state for e in stored_events],
                        ),
                        prepare=True,
                        binary=True,
                    )
                    curs.execute("COMMIT")
                    pipeline.sync()
                    return [row[0] for row in ids.fetchall()]
            except BaseException:
                _roll_back(conn)
                raise

    def _insert_events(
        self,
        curs: Cursor[DictRow],
        stored_events: Sequence[StoredEvent],
        **kwargs: Any,
    ) -> None:
        super()._insert_events(curs, stored_events, **kwargs)
        self._write_timers(curs, saga_timers_kwarg(kwargs))
        self._write_data_keys(curs, data_keys_kwarg(kwargs))

    def _write_data_keys(self, curs: Cursor[DictRow], keys: dict[UUID, bytes]) -> None:
        """Queue the insert of new sagas' data keys on ``curs``."""
        if keys:
            curs.execute(
                self.insert_data_keys_statement, (list(keys), list(keys.values())), prepare=True
            )

    @_retry_transient
    def select_data_keys(self, saga_ids: Sequence[UUID]) -> dict[UUID, bytes]:
        """The wrapped data keys of ``saga_ids`` that have one (``b""``: forgotten)."""
        if not saga_ids:
            return {}
        with (
            self.datastore.get_connection() as conn,
            conn.cursor(binary=True, row_factory=tuple_row) as curs,
        ):
            curs.execute(self.select_data_keys_statement, (list(dict.fromkeys(saga_ids)),))
            rows = curs.fetchall()
        return {saga_id: bytes(wrapped) for saga_id, wrapped in rows}

    @_retry_transient
    def insert_data_keys(self, keys: Mapping[UUID, bytes]) -> None:
        """Add the data keys of sagas that have none, in a transaction of their own."""
        checked = data_keys_kwarg({"data_keys": keys})
        if not checked:
            return
        with self.datastore.transaction(commit=True) as curs:
            self._write_data_keys(curs, checked)

    def forget_data_key(self, saga_id: UUID) -> bool:
        """Replace the saga's data key by a tombstone; whether there was a key.

        PostgreSQL keeps the old row version until ``VACUUM`` reclaims it
        (docs/security.md): the key is wrapped by the store key all the same.
        """
        with self.datastore.transaction(commit=True) as curs:
            curs.execute(self.has_data_key_statement, (saga_id,))
            row = curs.fetchone()
            curs.execute(self.forget_data_key_statement, (saga_id,))
        return bool(row and row["had"])

    def _write_timers(self, curs: Cursor[DictRow], timers: dict[UUID, datetime | None]) -> None:
        """Queue the timer upsert and delete for ``timers`` on ``curs``."""
        upsert_ids = [saga_id for saga_id, due_at in timers.items() if due_at is not None]
        upsert_dues = [due_at for due_at in timers.values() if due_at is not None]
        delete_ids = [saga_id for saga_id, due_at in timers.items() if due_at is None]
        if upsert_ids:
            curs.execute(self.upsert_timers_statement, (upsert_ids, upsert_dues), prepare=True)
        if delete_ids:
            curs.execute(self.delete_timers_statement, (delete_ids,), prepare=True)

    @_retry_transient
    def select_notifications(
        self,
        start: int | None,
        limit: int,
        stop: int | None = None,
        topics: Sequence[str] = (),
        *,
        inclusive_of_start: bool = True,
    ) -> Sequence[Notification]:
        """eventsourcing's ``select_notifications``: the same rows, read as plain tuples.

        eventsourcing composes the statement on every call and reads each row as a
        dict; the relay and the projections call this for every batch they follow,
        so here each shape of statement (which of ``start``, ``stop``, ``topics``
        are given) is composed once, and rows come back as binary tuples.
        """
        key = (start is not None, inclusive_of_start, stop is not None, bool(topics))
        statement = self._select_notifications_statements.get(key)
        if statement is None:
            statement = self._select_notifications_statements[key] = (
                self._select_notifications_statement(*key)
            )
        params: list[Any] = []
        if start is not None:
            params.append(start)
        if stop is not None:
            params.append(stop)
        if topics:
            if not isinstance(topics, tuple | list) or not all(isinstance(t, str) for t in topics):
                raise TypeError(f"topics must be a list or tuple of strings, not {topics!r}")
            params.append(list(topics))
        params.append(limit)
        with (
            self.datastore.get_connection() as conn,
            conn.cursor(binary=True, row_factory=tuple_row) as curs,
        ):
            curs.execute(statement, params, prepare=True)
            rows = curs.fetchall()
        return [
            Notification(originator_id, version, topic, state, notification_id)
            for notification_id, originator_id, version, topic, state in rows
        ]

    def _select_notifications_statement(
        self, has_start: bool, inclusive_of_start: bool, has_stop: bool, has_topics: bool
    ) -> Composed:
        """The statement eventsourcing composes for this shape of call, columns named."""
        conditions: list[str] = []
        if has_start:
            conditions.append("notification_id>=%s" if inclusive_of_start else "notification_id>%s")
        if has_stop:
            conditions.append("notification_id <= %s")
        if has_topics:
            conditions.append("topic = ANY(%s)")
        where = (" WHERE " + " AND ".join(conditions)) if conditions else ""
        schema, table = self._notifications_table
        return SQL(
            "SELECT notification_id, originator_id, originator_version, topic, state "
            "FROM {schema}.{table}" + where + " ORDER BY notification_id LIMIT %s"
        ).format(schema=schema, table=table)

    @_retry_transient
    def select_due_timers(self, now: datetime, limit: int) -> Sequence[tuple[UUID, datetime]]:
        """Sagas due at or before ``now``, earliest first (ties by id), at most ``limit``."""
        now = as_utc(now, "now")
        check_limit(limit)
        with self.datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(self.select_due_timers_statement, (now, limit), prepare=True)
            rows = curs.fetchall()
        return [(row["saga_id"], row["due_at"].astimezone(UTC)) for row in rows]

    @_retry_transient
    def select_event_rows_of(
        self, saga_ids: Sequence[UUID]
    ) -> dict[UUID, list[tuple[int, str, bytes]]]:
        """``(originator_version, topic, state)`` of each saga's events, in one query."""
        found: dict[UUID, list[tuple[int, str, bytes]]] = {}
        if not saga_ids:
            return found
        # Plain tuples: a dict per row would cost more than the rest of reading it.
        with (
            self.datastore.get_connection() as conn,
            conn.cursor(binary=True, row_factory=tuple_row) as curs,
        ):
            curs.execute(self.select_event_rows_of_statement, (list(dict.fromkeys(saga_ids)),))
            rows = curs.fetchall()
        # Rows come stream by stream. ``UUID.__eq__`` is Python code, so the ids
        # are told apart by their ``int`` (compared in C) instead.
        last_int = -1
        events: list[tuple[int, str, bytes]] = []
        for saga_id, version, topic, state in rows:
            if saga_id.int != last_int:
                last_int = saga_id.int
                events = found.setdefault(saga_id, [])
            events.append((version, topic, state))
        return found

    @_retry_transient
    def count_timers(self) -> int:
        """How many sagas have a pending wake-up time."""
        with self.datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(self.count_timers_statement, prepare=True)
            row = curs.fetchone()
        assert row is not None
        return int(row["n"])

    # -- retention (sagalog.infrastructure.retention) --------------------------------

    @_retry_transient
    def select_stream_rows(self, saga_ids: Sequence[UUID]) -> list[StreamRow]:
        """Every event of ``saga_ids`` with its notification id, saga by saga, oldest first."""
        if not saga_ids:
            return []
        schema, table = self._notifications_table
        statement = SQL(
            "SELECT notification_id, originator_id, originator_version, topic, state "
            "FROM {schema}.{table} WHERE originator_id = ANY(%b::uuid[]) "
            "ORDER BY originator_id, originator_version"
        ).format(schema=schema, table=table)
        with (
            self.datastore.get_connection() as conn,
            conn.cursor(binary=True, row_factory=tuple_row) as curs,
        ):
            curs.execute(statement, (list(dict.fromkeys(saga_ids)),))
            rows = curs.fetchall()
        return [(int(n), saga_id, int(v), str(t), bytes(st)) for n, saga_id, v, t, st in rows]

    def delete_streams(self, last_versions: Mapping[UUID, int]) -> list[UUID]:
        """Remove the events, timers and data keys of the sagas still at ``last_versions``.

        Returns the removed sagas. One transaction, holding the events table's
        ``EXCLUSIVE`` lock that every insert takes, so no saga gains an event
        between the check of its last version and the delete. A saga with a
        newer event is kept. Notification ids come from a sequence and are never
        handed out again.
        """
        if not last_versions:
            return []
        schema, table = self._notifications_table
        timers = Identifier(self.timers_table_name)
        ids = list(last_versions)
        with self.datastore.get_connection() as conn:
            try:
                with conn.cursor(row_factory=tuple_row) as curs:
                    curs.execute("BEGIN")
                    for statement in self.lock_table_statements:
                        curs.execute(statement)
                    curs.execute(
                        SQL(
                            "SELECT originator_id, MAX(originator_version) FROM {schema}.{table} "
                            "WHERE originator_id = ANY(%s::uuid[]) GROUP BY originator_id"
                        ).format(schema=schema, table=table),
                        (ids,),
                    )
                    current = {row[0]: int(row[1]) for row in curs.fetchall()}
                    removed = [
                        saga_id
                        for saga_id, last_version in last_versions.items()
                        if current.get(saga_id) == last_version
                    ]
                    curs.execute(
                        SQL(
                            "DELETE FROM {schema}.{table} WHERE originator_id = ANY(%s::uuid[])"
                        ).format(schema=schema, table=table),
                        (removed,),
                    )
                    curs.execute(
                        SQL("DELETE FROM {schema}.{timers} WHERE saga_id = ANY(%s::uuid[])").format(
                            schema=schema, timers=timers
                        ),
                        (removed,),
                    )
                    curs.execute(
                        SQL("DELETE FROM {schema}.{keys} WHERE saga_id = ANY(%s::uuid[])").format(
                            schema=schema, keys=Identifier(self.data_keys_table_name)
                        ),
                        (removed,),
                    )
                    curs.execute("COMMIT")
            except BaseException:
                _roll_back(conn)
                raise
        return removed

    def restore_rows(
        self, rows: Sequence[StreamRow], data_keys: Mapping[UUID, bytes] | None = None
    ) -> None:
        """Put archived events (and their sagas' data keys) back at their own ids, all or none.

        A tombstone (``b""``) replaces a key; a key never replaces a tombstone.
        """
        if not rows and not data_keys:
            return
        schema, table = self._notifications_table
        statement = SQL(
            "INSERT INTO {schema}.{table} "
            "(notification_id, originator_id, originator_version, topic, state) "
            "SELECT * FROM unnest(%b::bigint[], %b::uuid[], %b::bigint[], %b::text[], %b::bytea[])"
        ).format(schema=schema, table=table)
        with self.datastore.get_connection() as conn:
            try:
                with conn.cursor() as curs:
                    curs.execute("BEGIN")
                    for lock in self.lock_table_statements:
                        curs.execute(lock)
                    curs.execute(
                        statement,
                        (
                            [row[0] for row in rows],
                            [row[1] for row in rows],
                            [row[2] for row in rows],
                            [row[3] for row in rows],
                            [row[4] for row in rows],
                        ),
                        binary=True,
                    )
                    if data_keys:
                        curs.execute(
                            self.restore_data_keys_statement,
                            ([*data_keys], [bytes(k) for k in data_keys.values()]),
                        )
                    curs.execute("COMMIT")
            except psycopg.errors.UniqueViolation as exc:
                _roll_back(conn)
                raise IntegrityError(first_line(exc)) from exc
            except BaseException:
                _roll_back(conn)
                raise


class PostgresSagaTrackingRecorder(PostgresTrackingRecorder):
    """eventsourcing's tracking recorder, recording a position in one round trip.

    A position recorded on its own (the command relay's, once per batch it sent)
    is one upsert. eventsourcing wraps it in ``BEGIN`` … ``COMMIT`` sent one at
    a time: three round trips. The connections are in autocommit mode, so the
    upsert alone is the same transaction, committed by the server as it returns.
    A position that is not ahead of the recorded one is refused with the same
    ``IntegrityError``. Legacy multi-row tracking tables go eventsourcing's way.
    """

    def create_table(self) -> None:
        """Create the tracking table, again if another process created it at the same moment.

        Workers started at once on a fresh store each create the relay's tracking table
        (see :meth:`PostgresSagaRecorder.create_table`).
        """
        create_schema(self.datastore)
        create_again_if_concurrent(super().create_table, self.datastore)

    @_retry_transient
    def insert_tracking(self, tracking: Tracking) -> None:
        """Record ``tracking`` (an upsert that only moves the position forward)."""
        if not self.datastore.single_row_tracking:
            super().insert_tracking(tracking)
            return
        with self.datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(
                self.insert_tracking_statement,
                {
                    "application_name": tracking.application_name,
                    "notification_id": tracking.notification_id,
                },
                prepare=True,
            )
            if curs.fetchone() is None:
                msg = (
                    "Failed to record tracking for "
                    f"{tracking.application_name} {tracking.notification_id}"
                )
                raise IntegrityError(msg)


def _roll_back(conn: Connection[DictRow]) -> None:
    """End a failed explicit transaction, so the pool gets the connection back idle."""
    if conn.closed or conn.info.transaction_status == TransactionStatus.IDLE:
        return
    try:
        conn.execute("ROLLBACK")
    except Exception:
        # The original error is the one to raise; the pool discards a broken connection.
        return
