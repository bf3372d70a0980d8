"""eventsourcing process recorders that also keep the durable saga timer index.

The saga manager hands every save a ``saga_timers={saga_id: wakeup_at or None}``
keyword (see :mod:`sagalog.process.store.timers`). eventsourcing passes keyword
arguments of ``Application.save`` / ``ProcessingEvent.collect_events`` through
``EventStore.put`` to ``recorder.insert_events(stored_events, tracking=...,
**kwargs)``, and every recorder hands them on to its ``_insert_events`` hook,
which runs *inside* the transaction that inserts the events (and the tracking
record). :class:`POPOSagaRecorder`, :class:`SQLiteSagaRecorder` and
:class:`PostgresSagaRecorder` (in :mod:`sagalog.infrastructure.persistence.postgres`,
because psycopg is an optional extra; importing it from here works and is
lazy) override that hook to upsert or delete the
sagas' wake-up times there, so the timer index commits or rolls back with the
events and can never disagree with the log: when an event insert conflicts
(optimistic concurrency) or a tracking record is a duplicate, the timer change
is undone too. Without ``saga_timers`` they behave exactly like their parents.

The index is one row per saga with a pending wake-up, in a table named after
the events table (``<prefix>_events`` → ``<prefix>_timers``), indexed by due time
so ``SagaManager.tick`` finds the due sagas without loading every saga:

PostgreSQL (``sagamanager_events`` → ``sagamanager_timers``, in ``POSTGRES_SCHEMA``)::

    CREATE TABLE IF NOT EXISTS "<schema>"."<timers>" (
        saga_id uuid PRIMARY KEY,
        due_at timestamptz NOT NULL)
    CREATE INDEX IF NOT EXISTS "<timers>_due_at_idx" ON "<schema>"."<timers>" (due_at, saga_id)

SQLite (eventsourcing's ``stored_events`` → ``stored_timers``)::

    CREATE TABLE IF NOT EXISTS <timers> (
        saga_id TEXT PRIMARY KEY,      -- uuid.hex, as eventsourcing stores originator ids
        due_at INTEGER NOT NULL)       -- microseconds since the Unix epoch, UTC
        WITHOUT ROWID
    CREATE INDEX IF NOT EXISTS <timers>_due_at_idx ON <timers> (due_at, saga_id)

SQLite has no timestamp type and compares text, so due times are stored as
integers, which sort and compare exactly. ``saga_id`` is the second index
column so that ties come back in a stable order, still from the index.

The tables are created with ``CREATE ... IF NOT EXISTS`` in the same
transaction as eventsourcing's own tables, so opening an application twice on
one database is harmless.

The recorders are chosen by topic from the environment built by
:meth:`sagalog.process.store.url.DatabaseUrl.eventsourcing_env`. eventsourcing's
SQLite and PostgreSQL factories honour ``PROCESS_RECORDER_TOPIC`` and
``APPLICATION_RECORDER_TOPIC``; its POPO factory does not, so for ``memory://``
``PERSISTENCE_MODULE`` names :class:`POPOSagaFactory` (a factory class is an
accepted value of that setting) which does.

All times are timezone-aware: naive datetimes are refused rather than guessed
at, and times come back in UTC.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any
from uuid import UUID

from eventsourcing import popo
from eventsourcing.persistence import (
    ApplicationRecorder,
    IntegrityError,
    Notification,
    ProcessRecorder,
    ProgrammingError,
    StoredEvent,
)
from eventsourcing.sqlite import SQLiteCursor, SQLiteDatastore, SQLiteProcessRecorder
from eventsourcing.utils import resolve_topic

from sagalog.process.store.shredding import DATA_KEYS_KWARG
from sagalog.process.store.timers import SAGA_TIMERS_KWARG

if TYPE_CHECKING:
    from sagalog.infrastructure.persistence.postgres import (
        PostgresSagaRecorder,
        PostgresSagaTrackingRecorder,
    )

#: One archived event: notification id, saga id, version, topic, stored state.
StreamRow = tuple[int, UUID, int, str, bytes]

#: The place of a removed event in the in-memory log (its notification id stays taken).
_REMOVED = StoredEvent(UUID(int=0), -1, "", b"")

__all__ = [
    "POPOSagaFactory",
    "POPOSagaRecorder",
    "PostgresSagaRecorder",
    "PostgresSagaTrackingRecorder",
    "SQLiteSagaRecorder",
    "StreamRow",
    "data_keys_kwarg",
    "data_keys_table_name",
    "timers_table_name",
]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_CREATE_TABLE_ATTEMPTS = 3
_MICROSECOND = timedelta(microseconds=1)


def __getattr__(name: str) -> Any:
    """Import :class:`PostgresSagaRecorder` (and its tracking recorder) only when asked for.

    It lives in :mod:`sagalog.infrastructure.persistence.postgres` because psycopg is
    an optional extra (``sagalog[postgres]``): memory and SQLite users must be able
    to import this module without it. eventsourcing resolves the topic
    ``sagalog.infrastructure.persistence.recorders:PostgresSagaRecorder`` with ``getattr``,
    which reaches this hook.
    """
    if name in ("PostgresSagaRecorder", "PostgresSagaTrackingRecorder"):
        try:
            from sagalog.infrastructure.persistence import postgres as postgres_recorder
        except ImportError as e:
            msg = (
                f"PostgreSQL support needs psycopg ({e}); "
                "install it with: pip install 'sagalog[postgres]'"
            )
            raise ImportError(msg) from e
        return getattr(postgres_recorder, name)
    msg = f"module {__name__!r} has no attribute {name!r}"
    raise AttributeError(msg)


def timers_table_name(events_table_name: str) -> str:
    """The timer table that goes with an events table.

    ``sagamanager_events`` → ``sagamanager_timers``, ``stored_events`` →
    ``stored_timers``; any other name gets ``_timers`` appended.
    """
    prefix, sep, _ = events_table_name.rpartition("_events")
    if sep and not _:
        return f"{prefix}_timers"
    return f"{events_table_name}_timers"


def data_keys_table_name(events_table_name: str) -> str:
    """The data key table (crypto-shredding) that goes with an events table.

    ``sagamanager_events`` → ``sagamanager_data_keys``, ``stored_events`` →
    ``stored_data_keys``; any other name gets ``_data_keys`` appended.
    """
    prefix, sep, rest = events_table_name.rpartition("_events")
    if sep and not rest:
        return f"{prefix}_data_keys"
    return f"{events_table_name}_data_keys"


def data_keys_kwarg(kwargs: Mapping[str, Any]) -> dict[UUID, bytes]:
    """The ``data_keys`` keyword (empty when absent): ``{saga_id: wrapped key}``."""
    value = kwargs.get(DATA_KEYS_KWARG)
    if not value:
        return {}
    if not isinstance(value, Mapping) or not all(
        isinstance(saga_id, UUID) and isinstance(key, bytes) and key
        for saga_id, key in value.items()
    ):
        msg = f"{DATA_KEYS_KWARG} must map saga ids to wrapped keys (non-empty bytes)"
        raise TypeError(msg)
    return dict(value)


def as_utc(moment: object, what: str) -> datetime:
    """``moment`` as an aware UTC datetime; naive or non-datetime values are errors."""
    if not isinstance(moment, datetime):
        msg = f"{what} must be a datetime, got {type(moment).__name__}"
        raise TypeError(msg)
    if moment.tzinfo is None or moment.utcoffset() is None:
        msg = f"{what} must be timezone-aware, got naive {moment.isoformat()}"
        raise ValueError(msg)
    return moment.astimezone(UTC)


def saga_timers_kwarg(kwargs: Mapping[str, Any]) -> dict[UUID, datetime | None]:
    """The validated ``saga_timers`` keyword (empty when absent), times in UTC.

    Validation happens before anything is written, so a bad value leaves the
    database untouched.
    """
    value = kwargs.get(SAGA_TIMERS_KWARG)
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        msg = (
            f"{SAGA_TIMERS_KWARG} must map saga ids to datetimes or None, "
            f"got {type(value).__name__}"
        )
        raise TypeError(msg)
    timers: dict[UUID, datetime | None] = {}
    for saga_id, due_at in value.items():
        if not isinstance(saga_id, UUID):
            msg = f"{SAGA_TIMERS_KWARG} keys must be UUIDs, got {saga_id!r}"
            raise TypeError(msg)
        if due_at is None or (type(due_at) is datetime and due_at.tzinfo is UTC):
            timers[saga_id] = due_at  # already what as_utc gives (the saga's own clock)
        else:
            timers[saga_id] = as_utc(due_at, f"wake-up time of saga {saga_id}")
    return timers


def check_limit(limit: int) -> None:
    """A negative ``limit`` is a caller's bug; zero simply selects nothing."""
    if limit < 0:
        msg = f"limit must not be negative, got {limit}"
        raise ValueError(msg)


def _to_micros(moment: datetime) -> int:
    return (moment - _EPOCH) // _MICROSECOND


def _from_micros(micros: int) -> datetime:
    return _EPOCH + micros * _MICROSECOND


class POPOSagaRecorder(popo.POPOProcessRecorder):
    """In-memory process recorder with a timer index, for unit tests and ``memory://``.

    The timers live in a dict guarded by the recorder's own database lock, and
    are changed only after eventsourcing's uniqueness checks on the events and
    the tracking record have passed, so a rejected insert changes nothing.
    """

    def __init__(self) -> None:
        super().__init__()
        self._saga_timers: dict[UUID, datetime] = {}
        self._data_keys: dict[UUID, bytes] = {}
        #: How many places of the log hold a removed event (retention).
        self._removed = 0

    def _insert_events(
        self, stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> Sequence[int] | None:
        timers = saga_timers_kwarg(kwargs)
        keys = data_keys_kwarg(kwargs)
        with self._database_lock:
            notification_ids = super()._insert_events(stored_events, **kwargs)
            for saga_id, wrapped in keys.items():
                self._data_keys.setdefault(saga_id, wrapped)
            for saga_id, due_at in timers.items():
                if due_at is None:
                    self._saga_timers.pop(saga_id, None)
                else:
                    self._saga_timers[saga_id] = due_at
            return notification_ids

    def select_due_timers(self, now: datetime, limit: int) -> Sequence[tuple[UUID, datetime]]:
        """Sagas due at or before ``now``, earliest first (ties by id), at most ``limit``."""
        now = as_utc(now, "now")
        check_limit(limit)
        with self._database_lock:
            due = [(due_at, saga_id) for saga_id, due_at in self._saga_timers.items()]
        due = sorted(item for item in due if item[0] <= now)[:limit]
        return [(saga_id, due_at) for due_at, saga_id in due]

    def count_timers(self) -> int:
        """How many sagas have a pending wake-up time."""
        with self._database_lock:
            return len(self._saga_timers)

    def select_data_keys(self, saga_ids: Sequence[UUID]) -> dict[UUID, bytes]:
        """The wrapped data keys of ``saga_ids`` that have one (``b""``: forgotten)."""
        with self._database_lock:
            return {i: self._data_keys[i] for i in saga_ids if i in self._data_keys}

    def insert_data_keys(self, keys: Mapping[UUID, bytes]) -> None:
        """Add the data keys of sagas that have none."""
        checked = data_keys_kwarg({DATA_KEYS_KWARG: keys})
        with self._database_lock:
            for saga_id, wrapped in checked.items():
                self._data_keys.setdefault(saga_id, wrapped)

    def forget_data_key(self, saga_id: UUID) -> bool:
        """Replace the saga's data key by a tombstone; whether there was a key."""
        with self._database_lock:
            had = bool(self._data_keys.get(saga_id))
            self._data_keys[saga_id] = b""
            return had

    def select_event_rows_of(
        self, saga_ids: Sequence[UUID]
    ) -> dict[UUID, list[tuple[int, str, bytes]]]:
        """``(originator_version, topic, state)`` of each saga's events, oldest first."""
        found: dict[UUID, list[tuple[int, str, bytes]]] = {}
        for saga_id in dict.fromkeys(saga_ids):
            rows = [(e.originator_version, e.topic, e.state) for e in self.select_events(saga_id)]
            if rows:
                found[saga_id] = rows
        return found

    # -- retention (sagalog.infrastructure.retention) --------------------------------

    def select_stream_rows(self, saga_ids: Sequence[UUID]) -> list[StreamRow]:
        """Every event of ``saga_ids`` with its notification id, saga by saga, oldest first."""
        rows: list[StreamRow] = []
        with self._database_lock:
            for saga_id in dict.fromkeys(saga_ids):
                index = self._stored_events_index.get(str(saga_id), {})
                for version in sorted(index):
                    position = index[version]
                    s = self._stored_events[position]
                    rows.append((position + 1, saga_id, version, s.topic, s.state))
        return rows

    def delete_streams(self, last_versions: Mapping[UUID, int]) -> list[UUID]:
        """Remove the events, timers and data keys of the sagas still at ``last_versions``.

        Returns the removed sagas. A saga with a newer event than its given last
        version is kept. The removed events leave gaps in the notification log (a placeholder keeps
        each position, so notification ids are never reused).
        """
        removed: list[UUID] = []
        with self._database_lock:
            for saga_id, last_version in last_versions.items():
                index = self._stored_events_index.get(str(saga_id))
                if not index or max(index) != last_version:
                    continue
                for position in index.values():
                    self._stored_events[position] = _REMOVED
                self._removed += len(index)
                del self._stored_events_index[str(saga_id)]
                self._saga_timers.pop(saga_id, None)
                self._data_keys.pop(saga_id, None)
                removed.append(saga_id)
        return removed

    def restore_rows(
        self, rows: Sequence[StreamRow], data_keys: Mapping[UUID, bytes] | None = None
    ) -> None:
        """Put archived events (and their sagas' data keys) back at their own ids, all or none.

        A tombstone (``b""``) replaces a key; a key never replaces a tombstone.
        """
        with self._database_lock:
            for notification_id, saga_id, version, _topic, _state in rows:
                taken = (
                    notification_id < 1
                    or notification_id > len(self._stored_events)
                    or self._stored_events[notification_id - 1] is not _REMOVED
                )
                if taken or version in self._stored_events_index.get(str(saga_id), {}):
                    msg = f"cannot restore event {notification_id} of saga {saga_id}: taken"
                    raise IntegrityError(msg)
            for notification_id, saga_id, version, topic, state in rows:
                self._stored_events[notification_id - 1] = StoredEvent(
                    saga_id, version, topic, state
                )
                self._stored_events_index[str(saga_id)][version] = notification_id - 1
            self._removed -= len(rows)
            for saga_id, wrapped in (data_keys or {}).items():
                if not wrapped:
                    self._data_keys[saga_id] = b""
                else:
                    self._data_keys.setdefault(saga_id, wrapped)

    def select_notifications(
        self,
        start: int | None,
        limit: int,
        stop: int | None = None,
        topics: Sequence[str] = (),
        *,
        inclusive_of_start: bool = True,
    ) -> Sequence[Notification]:
        """eventsourcing's notifications, passing over the places of removed events."""
        with self._database_lock:
            if not self._removed:
                return super().select_notifications(
                    start, limit, stop, topics, inclusive_of_start=inclusive_of_start
                )
            first = 1 if start is None else max(start + (0 if inclusive_of_start else 1), 1)
            last = len(self._stored_events) if stop is None else min(stop, len(self._stored_events))
            found: list[Notification] = []
            for notification_id in range(first, last + 1):
                s = self._stored_events[notification_id - 1]
                if s is _REMOVED or (topics and s.topic not in topics):
                    continue
                found.append(
                    Notification(
                        id=notification_id,
                        originator_id=s.originator_id,
                        originator_version=s.originator_version,
                        topic=s.topic,
                        state=s.state,
                    )
                )
                if len(found) == limit:
                    break
            return found


class POPOSagaFactory(popo.POPOFactory):
    """eventsourcing's POPO factory, but honouring the recorder topics.

    ``eventsourcing.popo.POPOFactory`` always builds its stock recorders and
    ignores ``APPLICATION_RECORDER_TOPIC`` / ``PROCESS_RECORDER_TOPIC``. Naming
    this class as ``PERSISTENCE_MODULE`` (``sagalog.infrastructure.persistence.recorders:
    POPOSagaFactory``) is eventsourcing's own way to plug in a factory. Without a
    topic it builds :class:`POPOSagaRecorder`; this module holds no other
    factory class, so naming just the module works too.
    """

    def application_recorder(self) -> ApplicationRecorder:
        return self._recorder(self.APPLICATION_RECORDER_TOPIC, popo.POPOApplicationRecorder)

    def process_recorder(self) -> ProcessRecorder:
        recorder = self._recorder(self.PROCESS_RECORDER_TOPIC, popo.POPOProcessRecorder)
        assert isinstance(recorder, ProcessRecorder)
        return recorder

    def _recorder(
        self, topic_key: str, base: type[popo.POPOApplicationRecorder]
    ) -> popo.POPOApplicationRecorder:
        topic = self.env.get(topic_key)
        recorder_class: object = resolve_topic(topic) if topic else POPOSagaRecorder
        if not (isinstance(recorder_class, type) and issubclass(recorder_class, base)):
            msg = f"{topic_key}={topic!r} does not name a subclass of {base.__qualname__}"
            raise ProgrammingError(msg)
        return recorder_class()


class SQLiteSagaRecorder(SQLiteProcessRecorder):
    """eventsourcing's SQLite process recorder plus the timer table.

    The timers are written first in the insert transaction, then eventsourcing
    inserts the events and the tracking record; a conflict in either rolls the
    whole transaction back, timers included.
    """

    def __init__(
        self,
        datastore: SQLiteDatastore,
        *,
        events_table_name: str = "stored_events",
    ) -> None:
        # Set before super().__init__, which builds the CREATE statements.
        self.timers_table_name = timers_table_name(events_table_name)
        self.data_keys_table_name = data_keys_table_name(events_table_name)
        super().__init__(datastore, events_table_name=events_table_name)
        keys = self.data_keys_table_name
        self.insert_data_key_statement = (
            f"INSERT INTO {keys} (saga_id, wrapped) VALUES (?, ?) ON CONFLICT (saga_id) DO NOTHING"
        )
        self.select_data_keys_statement = (
            f"SELECT saga_id, wrapped FROM {keys} WHERE saga_id IN (SELECT value FROM json_each(?))"
        )
        self.forget_data_key_statement = (
            f"INSERT INTO {keys} (saga_id, wrapped) VALUES (?, x'') "
            "ON CONFLICT (saga_id) DO UPDATE SET wrapped = x''"
        )
        self.has_data_key_statement = f"SELECT length(wrapped) FROM {keys} WHERE saga_id = ?"
        # Restore: a tombstone replaces a key, a key never replaces a tombstone.
        self.restore_data_key_statement = (
            f"INSERT INTO {keys} (saga_id, wrapped) VALUES (?, ?) "
            "ON CONFLICT (saga_id) DO UPDATE SET wrapped = x'' WHERE length(excluded.wrapped) = 0"
        )
        table = self.timers_table_name
        self.upsert_timer_statement = (
            f"INSERT INTO {table} (saga_id, due_at) VALUES (?, ?) "
            "ON CONFLICT (saga_id) DO UPDATE SET due_at = excluded.due_at"
        )
        self.delete_timer_statement = f"DELETE FROM {table} WHERE saga_id = ?"
        self.select_due_timers_statement = (
            f"SELECT saga_id, due_at FROM {table} WHERE due_at <= ? "
            "ORDER BY due_at, saga_id LIMIT ?"
        )
        self.count_timers_statement = f"SELECT COUNT(*) FROM {table}"
        self.select_event_rows_of_statement = (
            f"SELECT originator_id, originator_version, topic, state FROM {self.events_table_name} "
            "WHERE originator_id IN (SELECT value FROM json_each(?)) "
            "ORDER BY originator_id, originator_version"
        )

    def create_table(self) -> None:
        """Create the tables, again if another process created them at the same moment.

        eventsourcing looks for its tracking table first and, finding none, creates
        it and records its migration marker; two processes opening a new database
        at once both find none, and the second one's marker is refused ("Failed to
        record tracking for __migration__"), so that manager would not start. On a
        second try it finds the table and the marker, and has nothing to insert.
        Likewise eventsourcing's first connection to a new file switches it to WAL
        mode, which SQLite may refuse at once ("database is locked") while another
        connection does the same; the next connection finds WAL mode already on.
        """
        for attempt in range(1, _CREATE_TABLE_ATTEMPTS + 1):
            try:
                super().create_table()
            except (IntegrityError, sqlite3.OperationalError):
                if attempt == _CREATE_TABLE_ATTEMPTS:
                    raise
                time.sleep(0.02 * attempt)
            else:
                return

    def construct_create_table_statements(self) -> list[str]:
        statements = super().construct_create_table_statements()
        table = self.timers_table_name
        statements.append(
            f"CREATE TABLE IF NOT EXISTS {table} ("
            "saga_id TEXT PRIMARY KEY, "
            "due_at INTEGER NOT NULL) "
            "WITHOUT ROWID"
        )
        statements.append(
            f"CREATE INDEX IF NOT EXISTS {table}_due_at_idx ON {table} (due_at, saga_id)"
        )
        statements.append(
            f"CREATE TABLE IF NOT EXISTS {self.data_keys_table_name} ("
            "saga_id TEXT PRIMARY KEY, "
            "wrapped BLOB NOT NULL) "
            "WITHOUT ROWID"
        )
        return statements

    def _insert_events(
        self,
        c: SQLiteCursor,
        stored_events: Sequence[StoredEvent],
        **kwargs: Any,
    ) -> Sequence[int] | None:
        timers = saga_timers_kwarg(kwargs)
        upserts = [
            (saga_id.hex, _to_micros(due_at))
            for saga_id, due_at in timers.items()
            if due_at is not None
        ]
        deletes = [(saga_id.hex,) for saga_id, due_at in timers.items() if due_at is None]
        if upserts:
            c.executemany(self.upsert_timer_statement, upserts)
        if deletes:
            c.executemany(self.delete_timer_statement, deletes)
        keys = data_keys_kwarg(kwargs)
        if keys:
            c.executemany(
                self.insert_data_key_statement,
                [(saga_id.hex, wrapped) for saga_id, wrapped in keys.items()],
            )
        return super()._insert_events(c, stored_events, **kwargs)

    def select_due_timers(self, now: datetime, limit: int) -> Sequence[tuple[UUID, datetime]]:
        """Sagas due at or before ``now``, earliest first (ties by id), at most ``limit``."""
        micros = _to_micros(as_utc(now, "now"))
        check_limit(limit)
        with self.datastore.transaction(commit=False) as c:
            c.execute(self.select_due_timers_statement, (micros, limit))
            rows = c.fetchall()
        return [(UUID(row["saga_id"]), _from_micros(row["due_at"])) for row in rows]

    def count_timers(self) -> int:
        """How many sagas have a pending wake-up time."""
        with self.datastore.transaction(commit=False) as c:
            c.execute(self.count_timers_statement)
            return int(c.fetchone()[0])

    def select_event_rows_of(
        self, saga_ids: Sequence[UUID]
    ) -> dict[UUID, list[tuple[int, str, bytes]]]:
        """``(originator_version, topic, state)`` of each saga's events, in one query.

        The ids travel as one JSON array parameter (``json_each``), so any number
        of them fits SQLite's limit on bound variables.
        """
        found: dict[UUID, list[tuple[int, str, bytes]]] = {}
        if not saga_ids:
            return found
        ids = json.dumps([saga_id.hex for saga_id in dict.fromkeys(saga_ids)])
        with self.datastore.transaction(commit=False) as c:
            c.execute(self.select_event_rows_of_statement, (ids,))
            rows = c.fetchall()
        # The rows come saga by saga: parse each saga's id once, not once per event.
        last_text: str | None = None
        events: list[tuple[int, str, bytes]] = []
        for originator_id, version, topic, state in rows:
            if originator_id != last_text:
                last_text = originator_id
                events = found.setdefault(UUID(originator_id), [])
            events.append((version, topic, state))
        return found

    def select_data_keys(self, saga_ids: Sequence[UUID]) -> dict[UUID, bytes]:
        """The wrapped data keys of ``saga_ids`` that have one (``b""``: forgotten)."""
        if not saga_ids:
            return {}
        ids = json.dumps([saga_id.hex for saga_id in dict.fromkeys(saga_ids)])
        with self.datastore.transaction(commit=False) as c:
            c.execute(self.select_data_keys_statement, (ids,))
            rows = c.fetchall()
        return {UUID(saga_id): bytes(wrapped) for saga_id, wrapped in rows}

    def insert_data_keys(self, keys: Mapping[UUID, bytes]) -> None:
        """Add the data keys of sagas that have none, in a transaction of their own."""
        checked = data_keys_kwarg({DATA_KEYS_KWARG: keys})
        with self.datastore.transaction(commit=True) as c:
            c.executemany(
                self.insert_data_key_statement,
                [(saga_id.hex, wrapped) for saga_id, wrapped in checked.items()],
            )

    def forget_data_key(self, saga_id: UUID) -> bool:
        """Replace the saga's data key by a tombstone, its bytes overwritten in the file.

        ``secure_delete`` makes SQLite zero the old row's bytes, and a checkpoint
        then empties the write-ahead log that held the page (best effort: a
        reader holding the log open keeps it until it is checkpointed again).
        """
        with self.datastore.transaction(commit=True) as c:
            c.execute("PRAGMA secure_delete = ON")
            c.execute(self.has_data_key_statement, (saga_id.hex,))
            row = c.fetchone()
            c.execute(self.forget_data_key_statement, (saga_id.hex,))
        with self.datastore.transaction(commit=False) as c:
            c.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return bool(row and row[0])

    # -- retention (sagalog.infrastructure.retention) --------------------------------

    def select_stream_rows(self, saga_ids: Sequence[UUID]) -> list[StreamRow]:
        """Every event of ``saga_ids`` with its notification id (rowid), saga by saga."""
        if not saga_ids:
            return []
        ids = json.dumps([saga_id.hex for saga_id in dict.fromkeys(saga_ids)])
        with self.datastore.transaction(commit=False) as c:
            c.execute(
                f"SELECT rowid, originator_id, originator_version, topic, state "
                f"FROM {self.events_table_name} "
                "WHERE originator_id IN (SELECT value FROM json_each(?)) "
                "ORDER BY originator_id, originator_version",
                (ids,),
            )
            rows = c.fetchall()
        return [(int(r[0]), UUID(r[1]), int(r[2]), str(r[3]), bytes(r[4])) for r in rows]

    def delete_streams(self, last_versions: Mapping[UUID, int]) -> list[UUID]:
        """Remove the events and timers of the sagas still at ``last_versions``; return them.

        One ``BEGIN IMMEDIATE`` transaction, which also removes their data keys.
        A saga with a newer event than its given last version is kept, and so
        is the saga holding the newest event of the log: SQLite gives a new row
        ``MAX(rowid) + 1``, so removing the newest row would hand its
        notification id out again, behind the positions of the relay and the
        projections. ``secure_delete`` zeroes the removed rows' bytes in the
        file and a checkpoint empties the write-ahead log (best effort), so the
        archive is the only copy left.
        """
        if not last_versions:
            return []
        table = self.events_table_name
        ids = json.dumps([saga_id.hex for saga_id in last_versions])
        with self.datastore.get_connection(commit=True) as conn:
            c = conn.cursor()
            c.execute("PRAGMA secure_delete = ON")
            c.execute("BEGIN IMMEDIATE")
            try:
                c.execute(
                    f"SELECT originator_id FROM {table} "
                    f"WHERE rowid = (SELECT MAX(rowid) FROM {table})"
                )
                newest = {row[0] for row in c.fetchall()}
                c.execute(
                    f"SELECT originator_id, MAX(originator_version) FROM {table} "
                    "WHERE originator_id IN (SELECT value FROM json_each(?)) "
                    "GROUP BY originator_id",
                    (ids,),
                )
                current = {row[0]: int(row[1]) for row in c.fetchall()}
                removed = [
                    saga_id
                    for saga_id, last_version in last_versions.items()
                    if current.get(saga_id.hex) == last_version and saga_id.hex not in newest
                ]
                gone = json.dumps([saga_id.hex for saga_id in removed])
                c.execute(
                    f"DELETE FROM {table} WHERE originator_id IN (SELECT value FROM json_each(?))",
                    (gone,),
                )
                c.execute(
                    f"DELETE FROM {self.timers_table_name} "
                    "WHERE saga_id IN (SELECT value FROM json_each(?))",
                    (gone,),
                )
                c.execute(
                    f"DELETE FROM {self.data_keys_table_name} "
                    "WHERE saga_id IN (SELECT value FROM json_each(?))",
                    (gone,),
                )
            except BaseException:
                conn.rollback()
                raise
            conn.commit()
        if removed:
            with self.datastore.transaction(commit=False) as c:
                c.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return removed

    def restore_rows(
        self, rows: Sequence[StreamRow], data_keys: Mapping[UUID, bytes] | None = None
    ) -> None:
        """Put archived events (rowids) and their sagas' data keys back, all or none.

        A tombstone (``b""``) replaces a key; a key never replaces a tombstone.
        """
        if not rows and not data_keys:
            return
        try:
            with self.datastore.transaction(commit=True) as c:
                c.executemany(
                    f"INSERT INTO {self.events_table_name} "
                    "(rowid, originator_id, originator_version, topic, state) "
                    "VALUES (?, ?, ?, ?, ?)",
                    [(n, saga_id.hex, v, topic, state) for n, saga_id, v, topic, state in rows],
                )
                c.executemany(
                    self.restore_data_key_statement,
                    [
                        (saga_id.hex, bytes(wrapped))
                        for saga_id, wrapped in (data_keys or {}).items()
                    ],
                )
        except sqlite3.IntegrityError as exc:
            raise IntegrityError(exc) from exc
