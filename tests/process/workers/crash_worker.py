"""A saga worker that the crash-safety test kills with SIGKILL and starts again.

Usage::

    python crash_worker.py DATABASE_URL LEDGER_PATH --sagas N --run R [--crash-after-sends K]

One process holds everything a deployment would run: a ``SagaManager`` on
``DATABASE_URL`` with the real clock, the ``CommandRelay`` following its log, a
*durable* broker queue and the participants, both kept in the SQLite file
``LEDGER_PATH`` (separate from the saga store, as a broker and the services'
own databases would be). It starts the sagas ``saga_id_for(0..N-1)`` (at most
``MAX_IN_FLIGHT`` unfinished at a time, so real-clock timeouts only fire where a
participant stays silent or the worker was down) and loops relay → broker →
participants → ``manager.handle`` → ``manager.tick`` until every saga has ended
(new sagas arrive at ``START_RATE`` per second, as traffic would),
then drains the relay once more and exits 0.

Everything is idempotent on restart: saga ids are deterministic (starting an
existing saga records nothing), the relay resumes from its tracked position
(re-sending at least once), the broker redelivers what was not acknowledged, and
the participants drop duplicate commands by ``command_id`` and answer them with
the reply they gave the first time (whose ``message_id`` the manager has seen).

The participants' behaviour is a pure function of the command id, so a command
re-delivered after a crash gets the same answer: some actions fail, some stay
silent (a lost reply that only ``tick()`` recovers, by timeout then retry or
compensation), first compensation attempts sometimes fail and are retried.
Retry budgets are generous, so no saga should ever be dead-lettered.

``--crash-after-sends K`` makes the worker SIGKILL itself right after the broker
confirmed the K-th command of this run, inside ``relay.pump`` and before the
relay records its position: the at-least-once window, hit on purpose, so the
next run re-sends that batch and the participants must drop the duplicates.

What the participants saw is recorded durably in the ledger (``seen``: one row
per distinct command, ``duplicates``: one row per duplicate delivery dropped,
``replies``: the manager's verdict on each reply), so it survives the kills; a
run that finishes prints a one-line JSON summary prefixed ``summary``.
"""

from __future__ import annotations

import argparse
import faulthandler
import hashlib
import json
import os
import signal
import sqlite3
import sys
import time
from collections.abc import Sequence
from datetime import timedelta
from typing import Literal
from uuid import UUID, uuid5

from eventsourcing.utils import get_topic

from sagalog.domain import Command, CommandKind, RetryPolicy, Saga, SagaDefinition, Step
from sagalog.infrastructure.messaging.relay import CommandRelay
from sagalog.process import Reply, SagaManager

#: Namespace of the deterministic saga ids of this worker.
SAGA_NAMESPACE = UUID("6f3a4c1e-9b1d-4d55-8f0e-3c2b7a9d1e42")

#: At most this many sagas are unfinished at once.
MAX_IN_FLIGHT = 20
#: New sagas arrive at most this many per second (counted from each run's start), so
#: that the work spans the test's kills instead of finishing between two of them.
START_RATE = 15.0

_COMPENSATION_RETRY = RetryPolicy(
    max_attempts=12,
    initial_delay=timedelta(seconds=0.1),
    backoff_factor=1.5,
    max_delay=timedelta(seconds=1),
)
_ACTION_RETRY = RetryPolicy(max_attempts=2, initial_delay=timedelta(seconds=0.1))
_TIMEOUT = timedelta(seconds=1)
_COMPENSATION_TIMEOUT = timedelta(seconds=3)

DEFINITION = SagaDefinition(
    "CrashOrder",
    [
        Step(
            name="reserve",
            action="Inventory.Reserve",
            compensation="Inventory.Release",
            timeout=_TIMEOUT,
            retry=_ACTION_RETRY,
            compensation_retry=_COMPENSATION_RETRY,
            compensation_timeout=_COMPENSATION_TIMEOUT,
        ),
        Step(
            name="charge",
            action="Payment.Charge",
            compensation="Payment.Refund",
            timeout=_TIMEOUT,
            retry=_ACTION_RETRY,
            compensation_retry=_COMPENSATION_RETRY,
            compensation_timeout=_COMPENSATION_TIMEOUT,
        ),
        Step(
            name="ship",
            action="Shipping.Create",
            compensation="Shipping.Cancel",
            timeout=_TIMEOUT,
            compensation_retry=_COMPENSATION_RETRY,
            compensation_timeout=_COMPENSATION_TIMEOUT,
        ),
        Step(
            name="notify",
            action="Mail.Send",
            retriable=True,
            timeout=_TIMEOUT,
            retry=RetryPolicy(
                max_attempts=12,
                initial_delay=timedelta(seconds=0.05),
                backoff_factor=1.5,
                max_delay=timedelta(seconds=0.5),
            ),
        ),
    ],
)

#: Seconds between two progress lines on stderr.
PROGRESS_EVERY = 5.0

#: Chances, per command, of each participant behaviour (decided by the command id).
ACTION_FAILURE = 0.12
ACTION_SILENCE = 0.05
FIRST_COMPENSATION_FAILURE = 0.4

ENDING_TOPICS = tuple(
    get_topic(cls) for cls in (Saga.SagaCompleted, Saga.SagaFailed, Saga.SagaDeadLettered)
)
STARTED_TOPICS = (get_topic(Saga.SagaStarted),)

LEDGER_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS queue (seq INTEGER PRIMARY KEY AUTOINCREMENT, "
    "command_id TEXT NOT NULL, saga_id TEXT NOT NULL, step TEXT NOT NULL, kind TEXT NOT NULL, "
    "attempt INTEGER NOT NULL, name TEXT NOT NULL, run INTEGER NOT NULL, "
    "acked INTEGER NOT NULL DEFAULT 0)",
    "CREATE INDEX IF NOT EXISTS queue_unacked ON queue (acked, seq)",
    "CREATE TABLE IF NOT EXISTS seen (command_id TEXT PRIMARY KEY, reply TEXT, run INTEGER)",
    "CREATE TABLE IF NOT EXISTS duplicates (id INTEGER PRIMARY KEY AUTOINCREMENT, "
    "command_id TEXT NOT NULL, run INTEGER NOT NULL)",
    "CREATE TABLE IF NOT EXISTS replies (id INTEGER PRIMARY KEY AUTOINCREMENT, "
    "command_id TEXT NOT NULL, outcome TEXT NOT NULL, run INTEGER NOT NULL)",
)


def saga_id_for(index: int) -> UUID:
    """The deterministic id of saga number ``index``."""
    return uuid5(SAGA_NAMESPACE, str(index))


def open_ledger(path: str) -> sqlite3.Connection:
    """The broker + participants database (autocommit; survives SIGKILL, not power loss)."""
    conn = sqlite3.connect(path, isolation_level=None, timeout=30)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=OFF")
    for statement in LEDGER_SCHEMA:
        conn.execute(statement)
    return conn


def _fraction(command_id: UUID, salt: str) -> float:
    digest = hashlib.sha256(command_id.bytes + salt.encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def planned_reply(command: Command) -> Reply | None:
    """What the participant answers to ``command``: a pure function of its id."""
    roll = _fraction(command.command_id, "outcome")
    if command.kind is CommandKind.COMPENSATION:
        if command.attempt == 1 and roll < FIRST_COMPENSATION_FAILURE:
            return _reply(command, "failed", error="ledger busy, try again")
        return _reply(command, "completed")
    if roll < ACTION_SILENCE:
        return None
    if roll < ACTION_SILENCE + ACTION_FAILURE:
        return _reply(command, "failed", error="declined")
    return _reply(command, "completed", result={"ref": str(command.command_id)[:8]})


def _reply(
    command: Command,
    outcome: Literal["completed", "failed"],
    *,
    error: str | None = None,
    result: dict[str, str] | None = None,
) -> Reply:
    return Reply(
        message_id=f"{command.command_id}:reply",
        saga_id=command.saga_id,
        command_id=command.command_id,
        step=command.step,
        kind=command.kind,
        outcome=outcome,
        attempt=command.attempt,
        result=result,
        error=error,
    )


class BrokerTransport:
    """A durable queue: ``send`` returns once the command is committed in the ledger."""

    def __init__(self, ledger: sqlite3.Connection, run: int, crash_after_sends: int) -> None:
        self.ledger = ledger
        self.run = run
        self.crash_after_sends = crash_after_sends
        self.sent = 0

    def send(self, command: Command) -> None:
        self.ledger.execute(
            "INSERT INTO queue (command_id, saga_id, step, kind, attempt, name, run) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                str(command.command_id),
                str(command.saga_id),
                command.step,
                command.kind.value,
                command.attempt,
                command.name,
                self.run,
            ),
        )
        self.sent += 1
        if self.crash_after_sends and self.sent >= self.crash_after_sends:
            # Confirmed by the broker, position not yet recorded by the relay.
            os.kill(os.getpid(), signal.SIGKILL)

    def close(self) -> None:
        pass


class Participants:
    """All the services: consume the broker queue, drop duplicates, answer by command id."""

    def __init__(self, ledger: sqlite3.Connection, manager: SagaManager, run: int) -> None:
        self.ledger = ledger
        self.manager = manager
        self.run = run
        self.duplicates = 0
        self.handled = 0

    def consume(self, limit: int = 200) -> int:
        """Handle up to ``limit`` unacknowledged deliveries, in order; return how many."""
        rows = self.ledger.execute(
            "SELECT seq, command_id, saga_id, step, kind, attempt, name FROM queue "
            "WHERE acked = 0 ORDER BY seq LIMIT ?",
            (limit,),
        ).fetchall()
        for seq, command_id, saga_id, step, kind, attempt, name in rows:
            command = Command(
                command_id=UUID(command_id),
                saga_id=UUID(saga_id),
                saga_type=DEFINITION.name,
                step=step,
                kind=CommandKind(kind),
                name=name,
                attempt=attempt,
                payload={},
                deadline=None,
            )
            self._handle(command)
            self.ledger.execute("UPDATE queue SET acked = 1 WHERE seq = ?", (seq,))
        return len(rows)

    def _handle(self, command: Command) -> None:
        key = str(command.command_id)
        known = self.ledger.execute(
            "SELECT reply FROM seen WHERE command_id = ?", (key,)
        ).fetchone()
        if known is not None:
            # A duplicate delivery: do nothing again, answer as the first time.
            self.duplicates += 1
            self.ledger.execute(
                "INSERT INTO duplicates (command_id, run) VALUES (?, ?)", (key, self.run)
            )
            reply = None if known[0] is None else Reply.model_validate_json(known[0])
        else:
            reply = planned_reply(command)
            self.ledger.execute(
                "INSERT INTO seen (command_id, reply, run) VALUES (?, ?, ?)",
                (key, None if reply is None else reply.model_dump_json(), self.run),
            )
        self.handled += 1
        if reply is not None:
            outcome = self.manager.handle(reply)
            self.ledger.execute(
                "INSERT INTO replies (command_id, outcome, run) VALUES (?, ?, ?)",
                (key, outcome.outcome.value, self.run),
            )


class LogFollower:
    """Which sagas exist and which ended, read from the manager's notification log."""

    def __init__(self, manager: SagaManager) -> None:
        self.manager = manager
        self.started: set[UUID] = set()
        self.ended: set[UUID] = set()
        self._positions = {STARTED_TOPICS: 0, ENDING_TOPICS: 0}

    def poll(self) -> None:
        for topics, into in ((STARTED_TOPICS, self.started), (ENDING_TOPICS, self.ended)):
            while True:
                found = self.manager.recorder.select_notifications(
                    start=self._positions[topics] + 1, limit=1000, topics=topics
                )
                if not found:
                    break
                into.update(UUID(str(n.originator_id)) for n in found)
                self._positions[topics] = found[-1].id


def _progress(
    run: int, began: float, follower: LogFollower, relay: CommandRelay, ledger: sqlite3.Connection
) -> None:
    """One line on stderr: how far this run got (for the test's failure messages)."""
    unacked = ledger.execute("SELECT COUNT(*) FROM queue WHERE acked = 0").fetchone()[0]
    print(
        f"run {run} +{time.monotonic() - began:.1f}s: {len(follower.started)} started, "
        f"{len(follower.ended)} ended, relay at {relay.position} (lag {relay.lag()}), "
        f"{unacked} unacknowledged deliveries, {relay.manager.timers.count_timers()} timers",
        file=sys.stderr,
        flush=True,
    )


def run_worker(
    database_url: str, ledger_path: str, sagas: int, run: int, crash_after_sends: int
) -> dict[str, int]:
    """Drive ``sagas`` sagas to their end; return what this run did."""
    manager = SagaManager([DEFINITION], database_url)
    ledger = open_ledger(ledger_path)
    transport = BrokerTransport(ledger, run, crash_after_sends)
    relay = CommandRelay(manager, transport, batch_size=50)
    participants = Participants(ledger, manager, run)
    follower = LogFollower(manager)
    ids = [saga_id_for(i) for i in range(sagas)]
    follower.poll()
    next_index = 0
    while next_index < sagas and ids[next_index] in follower.started:
        next_index += 1
    # Starting again what the previous run started is a no-op (idempotent start).
    restarted = 0
    for index in range(max(0, next_index - 3), next_index):
        manager.start(DEFINITION.name, {"order": index}, saga_id=ids[index])
        restarted += 1
    print("ready", flush=True)
    ticks = 0
    began = time.monotonic()
    started_now = 0
    next_report = began + PROGRESS_EVERY
    try:
        while True:
            if time.monotonic() >= next_report:
                next_report += PROGRESS_EVERY
                _progress(run, began, follower, relay, ledger)
            follower.poll()
            allowed = int((time.monotonic() - began) * START_RATE) + 1
            while (
                next_index < sagas
                and started_now < allowed
                and len(follower.started - follower.ended) < MAX_IN_FLIGHT
            ):
                manager.start(DEFINITION.name, {"order": next_index}, saga_id=ids[next_index])
                follower.started.add(ids[next_index])
                next_index += 1
                started_now += 1
            sent = relay.drain()
            delivered = participants.consume()
            moved = manager.tick()
            ticks += moved
            follower.poll()
            if next_index >= sagas and follower.ended >= set(ids):
                break
            if not (sent or delivered or moved):
                time.sleep(0.02)
        # Hand over whatever the last transitions dispatched, so that every
        # recorded command reaches the participants.
        relay.drain()
        while participants.consume():
            pass
    finally:
        manager.close()
        ledger.close()
    return {
        "run": run,
        "restarted_idempotently": restarted,
        "commands_sent": transport.sent,
        "deliveries_handled": participants.handled,
        "duplicates_dropped": participants.duplicates,
        "sagas_moved_by_tick": ticks,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("database_url")
    parser.add_argument("ledger_path")
    parser.add_argument("--sagas", type=int, required=True)
    parser.add_argument("--run", type=int, required=True)
    parser.add_argument("--crash-after-sends", type=int, default=0)
    args = parser.parse_args(argv)
    # ``kill -USR1`` prints every thread's stack on stderr: where a stuck run waits.
    faulthandler.register(signal.SIGUSR1)
    summary = run_worker(
        args.database_url, args.ledger_path, args.sagas, args.run, args.crash_after_sends
    )
    print("summary " + json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
