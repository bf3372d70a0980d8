"""The floor: bare SQL writing exactly the rows sagalog writes, batched the same way.

What sagalog writes for one saga is captured once, before the clock starts, by
running one saga of the scenario through a real ``SagaManager`` on
``memory://`` and recording every ``insert_events`` call: the stored events
(topic, version, state bytes), the saga's new wake-up time (upserted into the
timer table, or deleted when the saga ended). Each call is one transaction of
the manager, i.e. one transition. The floor then writes, for ``n`` sagas, the
same rows with the saga id substituted (same sizes), one transaction per
transition, in the order the sagalog driver produces them: every saga's
first transition, then the relay's tracking upsert (one per 500 commands),
every saga's second transition, and so on.

The tables are created by sagalog's own recorders (``SagaManager`` and
``CommandRelay`` constructed and closed before the clock starts), so the
columns and indexes are identical. Reads are not part of the floor: sagalog
also loads each saga before deciding, and the relay reads the log.

Variants on PostgreSQL (psycopg 3, one connection, each transaction committed
before the next starts):

* ``floor``: the least a client can do — ``BEGIN``, the timer upsert (or
  delete), one multi-row ``INSERT`` of the events and ``COMMIT`` sent in one
  pipeline: a single round trip per transaction;
* ``floor_es``: the statements and round trips eventsourcing's recorder sends
  for the same rows — the timer statement sagalog's recorder adds, ``SET LOCAL
  lock_timeout``, ``LOCK TABLE … IN EXCLUSIVE MODE`` (to keep notification ids in
  commit order), ``NOTIFY``, ``executemany`` of the events with ``RETURNING
  notification_id`` (a nested pipeline: one more sync) and an explicit sync
  before ``COMMIT`` — without the Python around them.

On SQLite (the standard ``sqlite3`` module, WAL mode as eventsourcing sets it):
``BEGIN``, the timer upsert, the events insert, ``COMMIT``.

``batch`` (default 1) puts that many sagas' transitions of one wave into one
transaction: what a manager that records a batch of replies at once could reach.
"""

from __future__ import annotations

import gc
import math
import sqlite3
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from uuid import UUID, uuid4

import psycopg
from bench_common import admin_connection
from bench_sagalog import close_relay, drive, open_stack
from eventsourcing.persistence import StoredEvent

from sagalog.process.store.timers import SAGA_TIMERS_KWARG

#: The relay records its position once per batch of this many commands.
RELAY_BATCH = 500


@dataclass(frozen=True)
class Transition:
    """One transaction of the manager: stored events and the saga's new wake-up time."""

    events: tuple[tuple[int, str, bytes], ...]
    wakeup: datetime | None


def capture(scenario: str) -> tuple[UUID, list[Transition], int]:
    """Run one saga on ``memory://``; return its id, its transitions and commands sent."""
    manager, relay, transport, participants = open_stack("memory://", scenario)
    captured: list[Transition] = []
    recorder = manager.recorder
    original = recorder.insert_events

    def recording(stored_events: Sequence[StoredEvent], **kwargs: Any) -> Sequence[int] | None:
        timers: dict[UUID, datetime | None] = kwargs.get(SAGA_TIMERS_KWARG) or {}
        wakeups = list(timers.values())
        captured.append(
            Transition(
                events=tuple((e.originator_version, e.topic, e.state) for e in stored_events),
                wakeup=wakeups[0] if wakeups else None,
            )
        )
        return original(stored_events, **kwargs)

    setattr(recorder, "insert_events", recording)  # noqa: B010 - wrap one instance only
    try:
        (saga_id,) = drive(manager, relay, transport, participants, 1)
        commands = transport.sent
    finally:
        close_relay(relay)
        manager.close()
    return saga_id, captured, commands


def _substitute(state: bytes, old: UUID, new: UUID) -> bytes:
    return state.replace(old.hex.encode(), new.hex.encode()).replace(
        str(old).encode(), str(new).encode()
    )


def plan(scenario: str, n: int) -> tuple[list[list[tuple[UUID, Transition]]], int]:
    """The waves of transactions for ``n`` sagas, and the commands per saga."""
    template_id, transitions, commands = capture(scenario)
    sagas = [uuid4() for _ in range(n)]
    waves: list[list[tuple[UUID, Transition]]] = []
    for transition in transitions:
        wave = []
        for saga_id in sagas:
            events = tuple(
                (version, topic, _substitute(state, template_id, saga_id))
                for version, topic, state in transition.events
            )
            wave.append((saga_id, Transition(events, transition.wakeup)))
        waves.append(wave)
    return waves, commands


def tables(url: str) -> dict[str, str]:
    """Create sagalog's tables at ``url`` (untimed) and return their names."""
    manager, relay, _transport, _participants = open_stack(url, "a")
    try:
        names = {
            "events": str(getattr(manager.recorder, "events_table_name", "")),
            "timers": str(getattr(manager.recorder, "timers_table_name", "")),
            "tracking": str(getattr(relay.tracking, "tracking_table_name", "tracking")),
        }
    finally:
        close_relay(relay)
        manager.close()
    return names


def _tracking_writes(n: int, commands_in_wave: int) -> int:
    return math.ceil(n * commands_in_wave / RELAY_BATCH) if commands_in_wave else 0


def floor_postgres(params: dict[str, Any]) -> dict[str, Any]:
    """Write the rows of ``n`` sagas of a scenario with bare psycopg."""
    url: str = params["url"]
    scenario: str = params["scenario"]
    n: int = params["n"]
    es_protocol: bool = params.get("es_protocol", False)
    batch: int = params.get("batch", 1)
    names = tables(url)
    waves, _commands = plan(scenario, n)
    events_table = f'public."{names["events"]}"'
    timers_table = f'public."{names["timers"]}"'
    tracking_table = f'public."{names["tracking"]}"'
    columns = f"INSERT INTO {events_table} (originator_id, originator_version, topic, state) "
    # eventsourcing's statements (PostgresApplicationRecorder, PostgresSagaRecorder).
    es_insert_events = columns + "VALUES (%s, %s, %s, %s) RETURNING notification_id"
    es_upsert_timers = (
        f"INSERT INTO {timers_table} (saga_id, due_at) "
        "SELECT * FROM unnest(%s::uuid[], %s::timestamptz[]) "
        "ON CONFLICT (saga_id) DO UPDATE SET due_at = EXCLUDED.due_at"
    )
    es_delete_timers = f"DELETE FROM {timers_table} WHERE saga_id = ANY(%s::uuid[])"
    es_lock = [
        "SET LOCAL lock_timeout = '0s'",
        f"LOCK TABLE {events_table} IN EXCLUSIVE MODE",
        f'NOTIFY "{names["events"]}"',
    ]
    upsert_tracking = (
        f"INSERT INTO {tracking_table} VALUES (%s, %s) ON CONFLICT (application_name) "
        "DO UPDATE SET notification_id = EXCLUDED.notification_id"
    )
    multi_row: dict[int, str] = {}

    def insert_rows(count: int) -> str:
        if count not in multi_row:
            multi_row[count] = columns + "VALUES " + ", ".join(["(%s, %s, %s, %s)"] * count)
        return multi_row[count]

    position = 0
    # Autocommit, as eventsourcing's connections are: transactions are explicit.
    conn = psycopg.connect(url, autocommit=True)
    try:
        gc.collect()
        started = time.perf_counter()
        cpu_started = time.process_time()
        for wave_index, wave in enumerate(waves):
            for first in range(0, len(wave), batch):
                chunk = wave[first : first + batch]
                deletes = [saga_id for saga_id, t in chunk if t.wakeup is None]
                upserts = [(saga_id, t.wakeup) for saga_id, t in chunk if t.wakeup is not None]
                rows = [
                    (saga_id, v, topic, state)
                    for saga_id, t in chunk
                    for v, topic, state in t.events
                ]
                if es_protocol:
                    # The statements and syncs of eventsourcing's insert_events.
                    with conn.pipeline() as pipeline, conn.transaction():
                        with conn.cursor() as cur:
                            if upserts:
                                ids, dues = zip(*upserts, strict=True)
                                cur.execute(es_upsert_timers, (list(ids), list(dues)), prepare=True)
                            if deletes:
                                cur.execute(es_delete_timers, (deletes,), prepare=True)
                        with conn.cursor() as cur:
                            for statement in es_lock:
                                cur.execute(statement, prepare=True)
                            cur.executemany(es_insert_events, rows, returning=True)
                            pipeline.sync()
                else:
                    # The least: BEGIN … COMMIT sent in one pipeline, one round trip.
                    # (psycopg's conn.transaction() inside a pipeline syncs three times.)
                    with conn.pipeline(), conn.cursor() as cur:
                        cur.execute("BEGIN")
                        if upserts:
                            ids, dues = zip(*upserts, strict=True)
                            cur.execute(es_upsert_timers, (list(ids), list(dues)), prepare=True)
                        if deletes:
                            cur.execute(es_delete_timers, (deletes,), prepare=True)
                        flat = [value for row in rows for value in row]
                        cur.execute(insert_rows(len(rows)), flat, prepare=True)
                        cur.execute("COMMIT")
                position += len(rows)
            commands = _commands_in_wave(waves, wave_index)
            for _ in range(_tracking_writes(n, commands)):
                # One statement in autocommit mode: its own transaction.
                conn.execute(upsert_tracking, ("SagaManager", position), prepare=True)
        seconds = time.perf_counter() - started
        cpu_seconds = time.process_time() - cpu_started
        row = conn.execute(
            f"SELECT count(*), coalesce(sum(length(state)), 0) FROM {events_table}"
        ).fetchone()
    finally:
        conn.close()
    assert row is not None
    return {
        "n": n,
        "seconds": seconds,
        "sagas_per_s": n / seconds if n and seconds else None,
        "cpu_seconds": cpu_seconds,
        "ended_as_expected": n,
        "events": int(row[0]),
        "state_bytes": int(row[1]),
        "transactions_per_saga": len(waves) / batch,
        "batch": batch,
        "tables": names,
    }


def _commands_in_wave(waves: list[list[tuple[UUID, Transition]]], index: int) -> int:
    """Commands (dispatch events) one saga's transition ``index`` records."""
    if not waves[index]:
        return 0
    _saga, transition = waves[index][0]
    return sum(1 for _v, topic, _s in transition.events if topic.endswith("Dispatched"))


def floor_sqlite(params: dict[str, Any]) -> dict[str, Any]:
    """Write the rows of ``n`` sagas of a scenario with bare ``sqlite3``."""
    url: str = params["url"]
    scenario: str = params["scenario"]
    n: int = params["n"]
    batch: int = params.get("batch", 1)
    path = url.removeprefix("sqlite:///")
    names = tables(url)
    waves, _commands = plan(scenario, n)
    insert_events = f"INSERT INTO {names['events']} VALUES (?, ?, ?, ?)"
    upsert_timer = (
        f"INSERT INTO {names['timers']} (saga_id, due_at) VALUES (?, ?) "
        "ON CONFLICT (saga_id) DO UPDATE SET due_at = excluded.due_at"
    )
    delete_timer = f"DELETE FROM {names['timers']} WHERE saga_id = ?"
    upsert_tracking = (
        "INSERT INTO tracking VALUES (?, ?) ON CONFLICT (application_name) "
        "DO UPDATE SET notification_id = excluded.notification_id"
    )
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    position = 0
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0].lower() == "wal"
        gc.collect()
        started = time.perf_counter()
        cpu_started = time.process_time()
        for wave_index, wave in enumerate(waves):
            for first in range(0, len(wave), batch):
                chunk = wave[first : first + batch]
                conn.execute("BEGIN")
                deletes = [(saga_id.hex,) for saga_id, t in chunk if t.wakeup is None]
                upserts = [
                    (saga_id.hex, (t.wakeup - epoch) // _MICROSECOND)
                    for saga_id, t in chunk
                    if t.wakeup is not None
                ]
                if deletes:
                    conn.executemany(delete_timer, deletes)
                if upserts:
                    conn.executemany(upsert_timer, upserts)
                conn.executemany(
                    insert_events,
                    [
                        (saga_id.hex, v, topic, state)
                        for saga_id, t in chunk
                        for v, topic, state in t.events
                    ],
                )
                conn.execute("COMMIT")
                position += sum(len(t.events) for _saga, t in chunk)
            for _ in range(_tracking_writes(n, _commands_in_wave(waves, wave_index))):
                conn.execute("BEGIN")
                conn.execute(upsert_tracking, ("SagaManager", position))
                conn.execute("COMMIT")
        seconds = time.perf_counter() - started
        cpu_seconds = time.process_time() - cpu_started
        count, size = conn.execute(
            f"SELECT count(*), coalesce(sum(length(state)), 0) FROM {names['events']}"
        ).fetchone()
    finally:
        conn.close()
    return {
        "n": n,
        "seconds": seconds,
        "sagas_per_s": n / seconds if n and seconds else None,
        "cpu_seconds": cpu_seconds,
        "ended_as_expected": n,
        "events": int(count),
        "state_bytes": int(size),
        "transactions_per_saga": len(waves) / batch,
        "batch": batch,
        "tables": names,
    }


_MICROSECOND = datetime(1970, 1, 1, 0, 0, 0, 1, tzinfo=UTC) - datetime(1970, 1, 1, tzinfo=UTC)


def events_shape(url: str, events_table: str) -> dict[str, int]:
    """Rows and state bytes in a PostgreSQL events table (to check floor parity)."""
    with admin_connection(url) as conn:
        row = conn.execute(
            f'SELECT count(*), coalesce(sum(length(state)), 0) FROM public."{events_table}"'
        ).fetchone()
    assert row is not None
    return {"events": int(row[0]), "state_bytes": int(row[1])}


def write_transactions(url: str, events_table: str) -> int:
    """Distinct inserting transactions (``xmin``) among the stored events rows.

    Events rows are never updated or deleted, so every transaction that wrote
    events left its id on them: this counts the manager's write transactions
    exactly (the relay's tracking upserts are not counted here).
    """
    with admin_connection(url) as conn:
        row = conn.execute(
            f'SELECT count(DISTINCT xmin::text) FROM public."{events_table}"'
        ).fetchone()
    assert row is not None
    return int(row[0])


WORKERS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "floor.postgresql": floor_postgres,
    "floor.sqlite": floor_sqlite,
}
