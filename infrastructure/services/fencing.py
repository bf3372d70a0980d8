"""Fencing: a participant refuses commands that come too late, so "too late" is a fact.

A saga that times a step out does not know whether the action ran; it compensates
the step as *uncertain*. The participant's side of that bargain is fencing: it makes
sure an action it has not started by then never starts. A :class:`Fence` sits
between a participant's transport and its handlers (the RabbitMQ ``Participant``
uses one; in-process participants call :meth:`Fence.answer` themselves) and, for
each command, with every fence on by default (:class:`Fencing`):

1. a command id already answered gets its remembered reply again (deduplication);
2. **tombstone**: an action for a (saga, step) whose compensation already arrived
   is refused — out-of-order delivery of Debit after RefundDebit must not debit;
3. **idempotency**: a step's action (or compensation) runs at most once
   *successfully* per idempotency key: a later attempt is answered with the
   first success, as its own reply, without running; a failed attempt had no
   effect, so a later one runs again;
4. **deadline**: an action whose deadline passed, by the participant's clock plus
   a skew margin, is refused — unless it started here before a crash, when its
   effect is unknown and it runs again; compensations are never fenced by deadline;
5. otherwise the handler runs (an action marked started, a compensation's tombstone
   written, first) and its reply is recorded, with the fence it sets, in one write.

Refused commands are answered ``failed`` with the reason and never executed; they
are counted by :class:`FenceReason`. The store (:class:`FenceStore`) keeps replies,
first successes and tombstones; see ``docs/services.md`` for what a crash can and
cannot give, and for keying the participant's own database on the idempotency key.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, Protocol, runtime_checkable
from uuid import UUID

from sagalog.domain import Command, CommandKind, SagalogError, idempotency_key_for
from sagalog.process import Reply

logger = logging.getLogger("sagalog.fencing")

#: How far ahead of an action's deadline a participant already refuses it, by default:
#: room for clock skew between manager and participant and for the handler's run time.
DEFAULT_SKEW_MARGIN = timedelta(seconds=1)

#: The schema version of a SQLite participant store (``PRAGMA user_version``):
#: 0 is the store before fencing (replies only), 1 adds first successes and tombstones.
SQLITE_STORE_VERSION = 1

Clock = Callable[[], datetime]


class FenceReason(StrEnum):
    """Why a fence refused a command (the label of the refusal counters)."""

    DEADLINE_PASSED = "deadline_passed"
    COMPENSATED = "compensated"


class Handling(StrEnum):
    """How a fenced participant answered one command."""

    EXECUTED = "executed"
    """The handler ran and its reply was recorded."""
    DUPLICATE = "duplicate"
    """The command id was answered before: the remembered reply, again."""
    REPEATED = "repeated"
    """An earlier attempt of the same step succeeded: that success, without running."""
    REFUSED = "refused"
    """A fence refused it: answered failed, nothing executed."""


class StoreSchemaError(SagalogError, RuntimeError):
    """A participant store file has a schema this version of sagalog does not know."""


@dataclass(frozen=True, slots=True)
class Fencing:
    """Which fences a participant applies: all on by default.

    ``Fencing(deadline=False)``, ``Fencing(tombstones=False)`` or
    ``Fencing(idempotency=False)`` turn one off; ``Fencing.off()`` turns all off
    (commands are then only deduplicated by command id, as before fencing).
    ``skew_margin`` is how long before its deadline an action is already refused.
    """

    deadline: bool = True
    skew_margin: timedelta = DEFAULT_SKEW_MARGIN
    tombstones: bool = True
    idempotency: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.skew_margin, timedelta):
            raise TypeError(f"skew_margin must be a timedelta, got {self.skew_margin!r}")
        if self.skew_margin < timedelta(0):
            raise ValueError(f"skew_margin must not be negative, got {self.skew_margin}")

    @classmethod
    def off(cls) -> Fencing:
        """No fence at all: every command not answered before runs its handler."""
        return cls(deadline=False, tombstones=False, idempotency=False)


@dataclass(frozen=True, slots=True)
class Answer:
    """A fenced participant's reply to one command and how it was reached."""

    reply: Reply
    handling: Handling
    reason: FenceReason | None = None


@runtime_checkable
class ProcessedCommandStore(Protocol):
    """Remembers the reply given to each command id (a participant's dedup memory)."""

    def get(self, command_id: UUID) -> str | None:
        """The reply JSON given to ``command_id``, or None if it was never handled."""
        ...

    def put(self, command_id: UUID, reply_json: str) -> None:
        """Remember ``reply_json`` as the answer to ``command_id`` (first write wins)."""
        ...


@runtime_checkable
class FenceStore(ProcessedCommandStore, Protocol):
    """What a fence remembers: replies by command id, first successes, tombstones."""

    def record(
        self,
        command_id: UUID,
        reply_json: str,
        *,
        success_key: UUID | None = None,
        tombstone: tuple[UUID, str] | None = None,
    ) -> None:
        """In one write: the reply to ``command_id`` and, if given, the success under
        ``success_key`` and the (saga, step) tombstone (first write wins for each)."""
        ...

    def success(self, idempotency_key: UUID) -> str | None:
        """The reply JSON of the first successful attempt under ``idempotency_key``."""
        ...

    def is_tombstoned(self, saga_id: UUID, step: str) -> bool:
        """Whether a compensation for ``(saga_id, step)`` arrived here."""
        ...

    def add_tombstone(self, saga_id: UUID, step: str) -> None:
        """Remember that a compensation for ``(saga_id, step)`` arrived."""
        ...

    def mark_started(self, command_id: UUID) -> None:
        """Remember that ``command_id``'s handler is about to run (until its reply)."""
        ...

    def was_started(self, command_id: UUID) -> bool:
        """Whether ``command_id``'s handler started without its reply being recorded."""
        ...


def action_key(command: Command) -> UUID:
    """The idempotency key of ``command``'s step's *action*, whatever its kind.

    A compensation handler looks its action's effect up by this key (a refund finds
    the debit it undoes); an action handler's own key is ``command.idempotency_key``.
    """
    return idempotency_key_for(command.saga_id, command.step, CommandKind.ACTION)


def actions_in_force(successes: Iterable[str]) -> set[tuple[UUID, str]]:
    """The (saga, step) pairs whose action succeeded and whose compensation did not,
    from the reply JSON of a store's first successes (what a participant left done)."""
    done: set[tuple[UUID, str]] = set()
    undone: set[tuple[UUID, str]] = set()
    for reply_json in successes:
        reply = Reply.model_validate_json(reply_json)
        pair = (reply.saga_id, reply.step)
        (done if reply.kind is CommandKind.ACTION else undone).add(pair)
    return done - undone


def command_log_fields(command: Command) -> dict[str, Any]:
    """The saga fields put on a log record about ``command``."""
    return {
        "correlation_id": str(command.saga_id),
        "step": command.step,
        "attempt": command.attempt,
        "message_id": str(command.command_id),
        "causation_id": command.causation_id,
    }


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


def _now() -> datetime:
    return datetime.now(UTC)


class Fence:
    """Answers commands through the fences of :class:`Fencing`, counting what it did.

    In-process participants wrap their handler with it::

        fence = Fence(InMemoryProcessedCommands())
        transport.subscribe("Bank.Debit", lambda c: manager.handle(fence.answer(c, debit).reply))

    where ``debit(command)`` returns ``Reply.to(command, result=…)`` (or ``error=…``).
    ``clock`` is the participant's own clock (injectable for tests).
    """

    def __init__(
        self,
        store: FenceStore | ProcessedCommandStore,
        fencing: Fencing | None = None,
        *,
        clock: Clock | None = None,
    ) -> None:
        self.fencing = fencing if fencing is not None else Fencing()
        fenced = self.fencing.deadline or self.fencing.tombstones or self.fencing.idempotency
        if fenced and not isinstance(store, FenceStore):
            missing = [
                name
                for name in (
                    "record",
                    "success",
                    "is_tombstoned",
                    "add_tombstone",
                    "mark_started",
                    "was_started",
                )
                if not callable(getattr(store, name, None))
            ]
            raise TypeError(
                f"{type(store).__name__} cannot keep fences (no {', '.join(missing)}); "
                "use a FenceStore, or turn fencing off with Fencing.off()"
            )
        self.store = store
        self._fences: FenceStore | None = store if isinstance(store, FenceStore) else None
        self.clock: Clock = clock if clock is not None else _now
        self.counts: Counter[Handling] = Counter()
        self.refused: Counter[FenceReason] = Counter()
        self._lock = threading.Lock()

    def answer(self, command: Command, execute: Callable[[Command], Reply]) -> Answer:
        """The reply to ``command``: remembered, refused, repeated, or ``execute``'s.

        ``execute`` runs the command and returns its reply (``Reply.to(command, …)``);
        it is called only when no fence answers first. An exception from it
        propagates, and nothing is recorded but what was written before it ran
        (an action's started mark, a compensation's tombstone).
        """
        known = self.store.get(command.command_id)
        if known is not None:
            return self._counted(Answer(Reply.model_validate_json(known), Handling.DUPLICATE))
        fencing, fences = self.fencing, self._fences
        is_action = command.kind is CommandKind.ACTION
        if (
            is_action
            and fencing.tombstones
            and fences is not None
            and fences.is_tombstoned(command.saga_id, command.step)
        ):
            return self._refuse(
                command,
                FenceReason.COMPENSATED,
                f"step {command.step!r} of saga {command.saga_id} was already compensated "
                "here; action not executed",
            )
        if fencing.idempotency and fences is not None:
            earlier = fences.success(command.idempotency_key)
            if earlier is not None:
                first = Reply.model_validate_json(earlier)
                reply = Reply.to(command, result=first.result)
                self._record(command.command_id, reply.model_dump_json())
                logger.info(
                    "command %s (%s): attempt %s already succeeded; answering that success",
                    command.command_id,
                    command.name,
                    first.attempt,
                    extra=command_log_fields(command),
                )
                return self._counted(Answer(reply, Handling.REPEATED))
        if is_action and fencing.deadline and command.deadline is not None:
            now = _utc(self.clock())
            deadline = _utc(command.deadline)
            if now + fencing.skew_margin >= deadline and not self._started_before(command):
                return self._refuse(
                    command,
                    FenceReason.DEADLINE_PASSED,
                    f"deadline {deadline.isoformat()} passed (participant clock "
                    f"{now.isoformat()}, skew margin {fencing.skew_margin.total_seconds():g}s); "
                    "not executed",
                )
        tombstone = None
        if not is_action and fencing.tombstones and fences is not None:
            # Before the handler: a crash inside it must still fence the action out.
            tombstone = (command.saga_id, command.step)
            fences.add_tombstone(*tombstone)
        if is_action and fencing.deadline and fences is not None:
            # Before the handler: redelivered after a crash inside it, the action may
            # have had its effect, so it must run again (not be refused) to say so.
            fences.mark_started(command.command_id)
        reply = execute(command)
        if (reply.saga_id, reply.step, reply.kind) != (command.saga_id, command.step, command.kind):
            raise ValueError(
                f"execute answered {reply.message_id!r}, not command {command.command_id}"
            )
        completed = reply.outcome == "completed"
        self._record(
            command.command_id,
            reply.model_dump_json(),
            success_key=command.idempotency_key if fencing.idempotency and completed else None,
            tombstone=tombstone,
        )
        return self._counted(Answer(reply, Handling.EXECUTED))

    def _started_before(self, command: Command) -> bool:
        """Whether ``command`` began here before and crashed: its effect is unknown."""
        if self._fences is None or not self._fences.was_started(command.command_id):
            return False
        logger.warning(
            "command %s (%s) was started before a crash; running it again past its "
            "deadline, since its effect is unknown",
            command.command_id,
            command.name,
            extra=command_log_fields(command),
        )
        return True

    def _record(
        self,
        command_id: UUID,
        reply_json: str,
        *,
        success_key: UUID | None = None,
        tombstone: tuple[UUID, str] | None = None,
    ) -> None:
        if self._fences is None:
            self.store.put(command_id, reply_json)
        else:
            self._fences.record(
                command_id, reply_json, success_key=success_key, tombstone=tombstone
            )

    def _refuse(self, command: Command, reason: FenceReason, text: str) -> Answer:
        reply = Reply.to(command, error=text)
        self._record(command.command_id, reply.model_dump_json())
        logger.warning(
            "command %s (%s) refused: %s",
            command.command_id,
            command.name,
            text,
            extra=command_log_fields(command),
        )
        with self._lock:
            self.refused[reason] += 1
        return self._counted(Answer(reply, Handling.REFUSED, reason))

    def _counted(self, answer: Answer) -> Answer:
        with self._lock:
            self.counts[answer.handling] += 1
        return answer


class InMemoryProcessedCommands:
    """Replies, first successes and tombstones in dicts, while the process lives."""

    def __init__(self) -> None:
        self._replies: dict[UUID, str] = {}
        self._successes: dict[UUID, str] = {}
        self._tombstones: set[tuple[UUID, str]] = set()
        self._started: set[UUID] = set()
        self._lock = threading.Lock()

    def get(self, command_id: UUID) -> str | None:
        with self._lock:
            return self._replies.get(command_id)

    def put(self, command_id: UUID, reply_json: str) -> None:
        """Remember ``reply_json`` as the answer to ``command_id`` (first write wins)."""
        self.record(command_id, reply_json)

    def record(
        self,
        command_id: UUID,
        reply_json: str,
        *,
        success_key: UUID | None = None,
        tombstone: tuple[UUID, str] | None = None,
    ) -> None:
        with self._lock:
            self._replies.setdefault(command_id, reply_json)
            self._started.discard(command_id)
            if success_key is not None:
                self._successes.setdefault(success_key, reply_json)
            if tombstone is not None:
                self._tombstones.add(tombstone)

    def success(self, idempotency_key: UUID) -> str | None:
        with self._lock:
            return self._successes.get(idempotency_key)

    def is_tombstoned(self, saga_id: UUID, step: str) -> bool:
        with self._lock:
            return (saga_id, step) in self._tombstones

    def add_tombstone(self, saga_id: UUID, step: str) -> None:
        with self._lock:
            self._tombstones.add((saga_id, step))

    def mark_started(self, command_id: UUID) -> None:
        with self._lock:
            self._started.add(command_id)

    def was_started(self, command_id: UUID) -> bool:
        with self._lock:
            return command_id in self._started

    def actions_in_force(self) -> set[tuple[UUID, str]]:
        """(saga, step) pairs whose action succeeded here and whose compensation did not."""
        with self._lock:
            successes = list(self._successes.values())
        return actions_in_force(successes)

    def __len__(self) -> int:
        return len(self._replies)


# -- the SQLite store's schema and writes (used by SQLiteProcessedCommands) ----------------

_CREATE_TABLES = (
    "CREATE TABLE IF NOT EXISTS processed_commands "
    "(command_id TEXT PRIMARY KEY, reply TEXT NOT NULL, "
    "recorded_at TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP)",
    "CREATE TABLE IF NOT EXISTS fence_successes "
    "(idempotency_key TEXT PRIMARY KEY, command_id TEXT NOT NULL, reply TEXT NOT NULL, "
    "recorded_at TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP)",
    "CREATE TABLE IF NOT EXISTS fence_tombstones "
    "(saga_id TEXT NOT NULL, step TEXT NOT NULL, "
    "recorded_at TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP, PRIMARY KEY (saga_id, step))",
    # actions whose handler started and whose reply is not recorded yet
    "CREATE TABLE IF NOT EXISTS fence_started "
    "(command_id TEXT PRIMARY KEY, recorded_at TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP)",
)


def migrate_sqlite_store(db: sqlite3.Connection) -> None:
    """Bring a participant store file to :data:`SQLITE_STORE_VERSION`, in one transaction.

    A store written before fencing holds only replies; its completed replies become
    first successes and its compensations' replies tombstones, so the fences hold
    for everything the participant did before the upgrade. ``db`` is in autocommit
    mode (``isolation_level=None``).
    """
    if _user_version(db) == SQLITE_STORE_VERSION:
        return
    db.execute("BEGIN IMMEDIATE")
    try:
        version = _user_version(db)
        if version > SQLITE_STORE_VERSION:
            raise StoreSchemaError(
                f"participant store schema version {version} is newer than this sagalog's "
                f"({SQLITE_STORE_VERSION}); upgrade sagalog"
            )
        if version < 1:
            for statement in _CREATE_TABLES:
                db.execute(statement)
            _backfill_fences(db)
            db.execute(f"PRAGMA user_version = {SQLITE_STORE_VERSION}")
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise


def _user_version(db: sqlite3.Connection) -> int:
    return int(db.execute("PRAGMA user_version").fetchone()[0])


def _backfill_fences(db: sqlite3.Connection) -> None:
    rows = db.execute("SELECT command_id, reply FROM processed_commands ORDER BY rowid").fetchall()
    for command_id, reply_json in rows:
        try:
            reply = json.loads(reply_json)
            saga_id = UUID(str(reply["saga_id"]))
            step = str(reply["step"])
            kind = CommandKind(reply.get("kind", CommandKind.ACTION.value))
            outcome = reply["outcome"]
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            logger.warning(
                "store row %s has an unreadable reply, no fence from it: %s", command_id, exc
            )
            continue
        if outcome == "completed":
            db.execute(
                "INSERT OR IGNORE INTO fence_successes (idempotency_key, command_id, reply) "
                "VALUES (?, ?, ?)",
                (str(idempotency_key_for(saga_id, step, kind)), command_id, reply_json),
            )
        if kind is CommandKind.COMPENSATION:
            db.execute(
                "INSERT OR IGNORE INTO fence_tombstones (saga_id, step) VALUES (?, ?)",
                (str(saga_id), step),
            )


def sqlite_record(
    db: sqlite3.Connection,
    command_id: UUID,
    reply_json: str,
    *,
    success_key: UUID | None = None,
    tombstone: tuple[UUID, str] | None = None,
) -> None:
    """Write a reply and the fences it sets in one transaction (``db`` in autocommit mode)."""
    db.execute("BEGIN IMMEDIATE")
    try:
        db.execute(
            "INSERT OR IGNORE INTO processed_commands (command_id, reply) VALUES (?, ?)",
            (str(command_id), reply_json),
        )
        db.execute("DELETE FROM fence_started WHERE command_id = ?", (str(command_id),))
        if success_key is not None:
            db.execute(
                "INSERT OR IGNORE INTO fence_successes (idempotency_key, command_id, reply) "
                "VALUES (?, ?, ?)",
                (str(success_key), str(command_id), reply_json),
            )
        if tombstone is not None:
            db.execute(
                "INSERT OR IGNORE INTO fence_tombstones (saga_id, step) VALUES (?, ?)",
                (str(tombstone[0]), tombstone[1]),
            )
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise


def sqlite_success(db: sqlite3.Connection, idempotency_key: UUID) -> str | None:
    """The first success recorded under ``idempotency_key``."""
    row = db.execute(
        "SELECT reply FROM fence_successes WHERE idempotency_key = ?", (str(idempotency_key),)
    ).fetchone()
    return None if row is None else str(row[0])


def sqlite_is_tombstoned(db: sqlite3.Connection, saga_id: UUID, step: str) -> bool:
    """Whether a tombstone for ``(saga_id, step)`` is recorded."""
    row = db.execute(
        "SELECT 1 FROM fence_tombstones WHERE saga_id = ? AND step = ?", (str(saga_id), step)
    ).fetchone()
    return row is not None


def sqlite_add_tombstone(db: sqlite3.Connection, saga_id: UUID, step: str) -> None:
    """Record a tombstone for ``(saga_id, step)`` (committed at once)."""
    db.execute(
        "INSERT OR IGNORE INTO fence_tombstones (saga_id, step) VALUES (?, ?)",
        (str(saga_id), step),
    )


def sqlite_mark_started(db: sqlite3.Connection, command_id: UUID) -> None:
    """Record that ``command_id``'s handler is about to run (committed at once)."""
    db.execute("INSERT OR IGNORE INTO fence_started (command_id) VALUES (?)", (str(command_id),))


def sqlite_was_started(db: sqlite3.Connection, command_id: UUID) -> bool:
    """Whether ``command_id`` started without its reply being recorded."""
    row = db.execute(
        "SELECT 1 FROM fence_started WHERE command_id = ?", (str(command_id),)
    ).fetchone()
    return row is not None


def sqlite_successes(db: sqlite3.Connection) -> list[str]:
    """The reply JSON of every first success recorded."""
    return [str(row[0]) for row in db.execute("SELECT reply FROM fence_successes")]
