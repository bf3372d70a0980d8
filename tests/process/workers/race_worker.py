"""One of two saga managers, in its own process, racing the other over the same sagas.

Usage::

    python race_worker.py DATABASE_URL EPOCH_PATH TAG --sagas N

The sagas ``saga_id_for(0..N-1)`` of ``DEFINITION`` are started beforehand (by
the test). Each worker repeatedly loads every unfinished saga and answers its
pending command as the plan of that saga says (:func:`planned_reply`); both
workers follow the same plan, so they race to record the same transitions.
Half the sagas get replies with the *same* ``message_id`` from both workers,
the other half with one ``message_id`` per worker for the same step and
attempt. Every reply names its attempt, so an answer to a superseded attempt is
stale.

Time is a shared logical clock: ``T0 + epoch * EPOCH``, the epoch kept in the
SQLite file ``EPOCH_PATH``. A worker moves it on only when a full round of
its own found nothing to answer while nobody recorded anything (the store's
head did not move), i.e. every unfinished saga waits for a silent participant
or a retry; it then advances the epoch (compare-and-set, so two workers that
see the same quiet moment move it once) and both race to ``tick()``. Timeouts
(3 epochs) are longer than one epoch, so a command dispatched by a tick is
always answered before a later tick could time it out: the recorded history of
every saga is a function of its plan alone, whichever process recorded what.

The manager counts the optimistic-concurrency conflicts its transitions hit
(``RecordConflictError`` from recording a saga, after which ``_transition``
reloads and decides again). The worker waits for ``go`` on stdin after printing
``ready``, so the two start together, and prints ``summary {json}`` at the end.

The race is not left to the operating system's scheduler (:class:`Lockstep`, in the
same SQLite file): neither worker starts a round before the other has ended the one
before, and each worker's first recording waits until the other is about to record
too. Otherwise, under load (or with a SQLite writer starved by the other's busy
retries), one worker could record every transition before the other ran a round,
and the test would have raced nothing.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal
from uuid import UUID, uuid5

from eventsourcing.persistence import RecordConflictError

from sagalog.domain import Command, CommandKind, RetryPolicy, Saga, SagaDefinition, SagaStatus, Step
from sagalog.process import Reply, SagaManager

SAGA_NAMESPACE = UUID("0d7f8a52-3c1e-4a8b-9e7d-2f6c5b4a3918")
T0 = datetime(2026, 6, 1, 9, 0, tzinfo=UTC)
EPOCH = timedelta(hours=1)
_TIMEOUT = timedelta(hours=3)
_DELAY = timedelta(minutes=30)
_COMPENSATION_RETRY = RetryPolicy(max_attempts=3, initial_delay=_DELAY, max_delay=_DELAY)

DEFINITION = SagaDefinition(
    "Race",
    [
        Step(
            name="a",
            action="A.Do",
            compensation="A.Undo",
            timeout=_TIMEOUT,
            compensation_retry=_COMPENSATION_RETRY,
        ),
        Step(
            name="b",
            action="B.Do",
            compensation="B.Undo",
            timeout=_TIMEOUT,
            retry=RetryPolicy(max_attempts=2, initial_delay=_DELAY, max_delay=_DELAY),
            compensation_retry=_COMPENSATION_RETRY,
        ),
        Step(
            name="c",
            action="C.Do",
            compensation="C.Undo",
            timeout=_TIMEOUT,
            compensation_retry=_COMPENSATION_RETRY,
        ),
        Step(
            name="d",
            action="D.Send",
            retriable=True,
            timeout=_TIMEOUT,
            retry=RetryPolicy(max_attempts=3, initial_delay=_DELAY, max_delay=_DELAY),
        ),
    ],
)

Answer = Literal["completed", "failed", "silent"]

#: What each kind of saga (index % 5) does: (step, kind, attempt) -> answer;
#: anything not listed completes.
PLANS: dict[int, dict[tuple[str, CommandKind, int], Answer]] = {
    # d fails once and is retried.
    0: {("d", CommandKind.ACTION, 1): "failed"},
    # b fails once and is retried.
    1: {("b", CommandKind.ACTION, 1): "failed"},
    # b's first attempt is never answered: timeout, then retry.
    2: {("b", CommandKind.ACTION, 1): "silent"},
    # c fails: b then a are compensated, b's compensation failing once.
    3: {("c", CommandKind.ACTION, 1): "failed", ("b", CommandKind.COMPENSATION, 1): "failed"},
    # b fails twice: a is compensated, its compensation first timing out.
    4: {
        ("b", CommandKind.ACTION, 1): "failed",
        ("b", CommandKind.ACTION, 2): "failed",
        ("a", CommandKind.COMPENSATION, 1): "silent",
    },
}

#: How each kind of saga ends.
EXPECTED_END: dict[int, SagaStatus] = {
    0: SagaStatus.COMPLETED,
    1: SagaStatus.COMPLETED,
    2: SagaStatus.COMPLETED,
    3: SagaStatus.FAILED,
    4: SagaStatus.FAILED,
}


def saga_id_for(index: int) -> UUID:
    """The deterministic id of saga number ``index``."""
    return uuid5(SAGA_NAMESPACE, str(index))


def planned_reply(index: int, command: Command, tag: str) -> Reply | None:
    """The answer saga ``index``'s plan gives ``command``, or None (silence)."""
    answer = PLANS[index % len(PLANS)].get(
        (command.step, command.kind, command.attempt), "completed"
    )
    if answer == "silent":
        return None
    shared = index % 2 == 0
    return Reply(
        message_id=f"{command.command_id}:{'reply' if shared else tag}",
        saga_id=command.saga_id,
        command_id=command.command_id,
        step=command.step,
        kind=command.kind,
        outcome=answer,
        attempt=command.attempt,
        error="refused" if answer == "failed" else None,
    )


class EpochClock:
    """The shared logical clock: ``T0 + epoch * EPOCH``, the epoch in a SQLite file.

    Not a ``ManualClock``: worker processes share it, so its time lives in a file that
    any of them may move forward (at most once per epoch), not in one process's memory.
    """

    def __init__(self, path: str) -> None:
        self.conn = sqlite3.connect(path, isolation_level=None, timeout=30)
        self.conn.execute("CREATE TABLE IF NOT EXISTS epoch (id INTEGER PRIMARY KEY, n INTEGER)")
        self.conn.execute("INSERT OR IGNORE INTO epoch (id, n) VALUES (1, 0)")
        self.epoch = 0

    def refresh(self) -> int:
        """Read the current epoch (the clock then reads that time)."""
        row = self.conn.execute("SELECT n FROM epoch WHERE id = 1").fetchone()
        self.epoch = int(row[0])
        return self.epoch

    def advance_from(self, seen: int) -> bool:
        """Move from epoch ``seen`` to the next, unless someone already did."""
        cursor = self.conn.execute("UPDATE epoch SET n = n + 1 WHERE id = 1 AND n = ?", (seen,))
        return cursor.rowcount == 1

    def __call__(self) -> datetime:
        return T0 + self.epoch * EPOCH

    def close(self) -> None:
        self.conn.close()


#: The round a worker that has finished reports, so that the other never waits for it.
_FINISHED = 1 << 62


class Lockstep:
    """The two workers' meeting points, kept in the clock's SQLite file.

    ``end_round(n)`` returns once every other worker has ended round ``n`` (or finished),
    so the rounds of both overlap whatever the scheduler does; ``meet()`` returns once
    every other worker is about to make its first recording (or finished), so the two
    record the same transition of the same saga version and one of them conflicts.
    Each worker registers before printing ``ready``, so after ``go`` both rows exist.
    """

    def __init__(self, path: str, tag: str) -> None:
        self.tag = tag
        self.conn = sqlite3.connect(path, isolation_level=None, timeout=30)
        self.conn.execute(
            "CREATE TABLE IF NOT EXISTS lockstep "
            "(tag TEXT PRIMARY KEY, round INTEGER, recording INTEGER)"
        )
        self.conn.execute("INSERT OR REPLACE INTO lockstep VALUES (?, 0, 0)", (tag,))
        self.give_up = float("inf")
        #: The last round this worker ended (0: it is in its first).
        self.ended = 0

    def _wait_for_others(
        self, column: Literal["round", "recording"], at_least: int, past: int
    ) -> None:
        """Wait while another worker has ``column`` below ``at_least`` and ``round`` below
        ``past``."""
        query = f"SELECT COUNT(*) FROM lockstep WHERE tag != ? AND {column} < ? AND round < ?"
        while self.conn.execute(query, (self.tag, at_least, past)).fetchone()[0]:
            if time.monotonic() > self.give_up:
                raise TimeoutError(f"worker {self.tag}: the other worker stopped taking turns")
            time.sleep(0.002)

    def end_round(self, n: int) -> None:
        """Say round ``n`` is over; wait until the others are past it too."""
        self.ended = n
        self.conn.execute("UPDATE lockstep SET round = ? WHERE tag = ?", (n, self.tag))
        self._wait_for_others("round", n, _FINISHED)

    def meet(self) -> None:
        """Say this worker is about to record; wait until the others are too.

        A worker that ended this round without recording anything (its replies were all
        silent) has stopped at :meth:`end_round` waiting for this one: it is not waited
        for, or the two would wait for each other.
        """
        self.conn.execute("UPDATE lockstep SET recording = 1 WHERE tag = ?", (self.tag,))
        self._wait_for_others("recording", 1, self.ended + 1)

    def finish(self) -> None:
        """Say this worker is done: nobody waits for it any more."""
        self.conn.execute("UPDATE lockstep SET round = ? WHERE tag = ?", (_FINISHED, self.tag))

    def close(self) -> None:
        self.conn.close()


class CountingManager(SagaManager):
    """A ``SagaManager`` that counts the version conflicts its transitions hit.

    With a ``lockstep``, its first recording waits until the other worker's is due too.
    """

    name = "SagaManager"  # Same tables and settings as the plain manager.

    def __init__(self, *args: Any, lockstep: Lockstep | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.conflicts = 0
        self.lockstep = lockstep

    def _record_sagas(self, sagas: Sequence[Saga]) -> None:
        if self.lockstep is not None:
            lockstep, self.lockstep = self.lockstep, None
            lockstep.meet()
        try:
            super()._record_sagas(sagas)
        except RecordConflictError:
            self.conflicts += 1
            raise


@dataclass
class DriveStats:
    """What one worker did."""

    outcomes: Counter[str] = field(default_factory=Counter)
    rounds: int = 0
    quiet_rounds: int = 0
    epochs_advanced: int = 0
    moved_by_tick: int = 0


def drive(
    manager: SagaManager,
    sagas: int,
    tag: str,
    clock: EpochClock,
    *,
    within: float,
    lockstep: Lockstep | None = None,
) -> DriveStats:
    """Answer and tick until every saga ended; ``TimeoutError`` after ``within`` seconds.

    With a ``lockstep``, each round begins only once the other worker has ended the last.
    """
    stats = DriveStats()
    ids = [saga_id_for(i) for i in range(sagas)]
    give_up = time.monotonic() + within
    if lockstep is not None:
        lockstep.give_up = give_up
    while True:
        if lockstep is not None and stats.rounds:
            lockstep.end_round(stats.rounds)
        if time.monotonic() > give_up:
            raise TimeoutError(f"worker {tag}: sagas still open after {within:.0f}s")
        seen_epoch = clock.refresh()
        head = manager.recorder.max_notification_id() or 0
        stats.rounds += 1
        open_sagas = 0
        answered = 0
        for index, saga_id in enumerate(ids):
            saga = manager.get(saga_id)
            if saga.status.is_terminal or saga.status is SagaStatus.DEAD_LETTERED:
                continue
            open_sagas += 1
            if saga.pending_command is None:
                continue
            reply = planned_reply(index, saga.pending_command, tag)
            if reply is None:
                continue
            stats.outcomes[manager.handle(reply).outcome.value] += 1
            answered += 1
        if open_sagas == 0:
            return stats
        if answered == 0 and head == (manager.recorder.max_notification_id() or 0):
            # Quiet: every open saga waits for a silent participant or a retry.
            stats.quiet_rounds += 1
            stats.epochs_advanced += clock.advance_from(seen_epoch)
            clock.refresh()
            stats.moved_by_tick += manager.tick(clock())


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="one of two racing saga managers")
    parser.add_argument("database_url")
    parser.add_argument("epoch_path")
    parser.add_argument("tag")
    parser.add_argument("--sagas", type=int, required=True)
    parser.add_argument("--within", type=float, default=120.0)
    args = parser.parse_args(argv)
    clock = EpochClock(args.epoch_path)
    lockstep = Lockstep(args.epoch_path, args.tag)
    manager = CountingManager([DEFINITION], args.database_url, clock=clock, lockstep=lockstep)
    try:
        print("ready", flush=True)
        if sys.stdin.readline().strip() != "go":
            return 2
        started = time.monotonic()
        stats = drive(manager, args.sagas, args.tag, clock, within=args.within, lockstep=lockstep)
        summary = {
            "tag": args.tag,
            "conflicts": manager.conflicts,
            "outcomes": dict(stats.outcomes),
            "rounds": stats.rounds,
            "quiet_rounds": stats.quiet_rounds,
            "epochs_advanced": stats.epochs_advanced,
            "moved_by_tick": stats.moved_by_tick,
            "seconds": round(time.monotonic() - started, 3),
        }
        print("summary " + json.dumps(summary), flush=True)
    finally:
        lockstep.finish()  # however it ends, the other worker must not wait for this one
        manager.close()
        lockstep.close()
        clock.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
