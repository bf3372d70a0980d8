"""Writing a participant service in a few lines: consume commands, answer replies.

A participant binds its own durable queue to the command names it handles, runs
the matching handler for each command, and publishes a :class:`Reply` (confirmed)
to the command's ``reply_to`` queue before it acks the command::

    from sagalog.infrastructure.services.participant import CommandFailed, Participant

    inventory = Participant("inventory", store=SQLiteProcessedCommands("inventory.db"))

    @inventory.handles("InventoryService.ReserveItems")
    def reserve(command: Command) -> dict[str, Any]:
        if command.payload["data"]["items"] > 10:
            raise CommandFailed("not enough stock")
        return {"reservation": "r-42"}

    @inventory.handles("InventoryService.ReleaseItems")
    def release(command: Command) -> None:
        ...

    inventory.run()            # until stopped; reconnects with backoff

A handler returns the step's result (JSON), or raises :class:`CommandFailed` to
answer ``failed``. Any other exception is retried in place (with backoff) and,
after ``max_attempts``, answered ``failed`` with the error text, so the saga moves
on (compensation, retry policy) instead of waiting for its timeout.

Idempotency by command id: the reply to every command handled is remembered in a
:class:`ProcessedCommandStore` *before* it is published. A command delivered again
(the relay re-sent it after a crash, or this participant died before its ack) is
not handled again: its remembered reply is published once more, and the manager
drops that duplicate by its message id. The default store is in memory; give a
:class:`SQLiteProcessedCommands` (or your own store, e.g. a table in the service's
database written in the same transaction as the effect) to survive restarts.
A handler that crashes *between* its effect and the store write runs again on
redelivery, so effects should be idempotent too, or share the store's transaction.

Fencing (:mod:`sagalog.infrastructure.services.fencing`, on by default, ``fencing=`` to
change): an action past its deadline, or for a step already compensated here, is
answered failed without running; a step's action that already succeeded under its
idempotency key is answered with that success. ``refused`` counts refusals by reason.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any
from uuid import UUID

from pika.adapters.blocking_connection import BlockingChannel
from pydantic import ValidationError

from sagalog.domain import Command, CommandKind, SagalogError
from sagalog.infrastructure.messaging.bounds import COMMAND_BOUNDS, check_message_bounds
from sagalog.infrastructure.messaging.signing import service_of
from sagalog.infrastructure.observability.tracing import (
    TRACEPARENT_HEADER,
    current_traceparent,
    enable_from_env,
    handle_traced,
)
from sagalog.infrastructure.observability.tracing import active as tracing_active
from sagalog.infrastructure.rabbitmq.consumer import ConsumerLoop, ReceivedMessage
from sagalog.infrastructure.rabbitmq.replies import publish_reply
from sagalog.infrastructure.rabbitmq.topology import HEADER_CAUSATION_ID, Topology
from sagalog.infrastructure.services.fencing import (
    Answer,
    Clock,
    Fence,
    FenceReason,
    Fencing,
    Handling,
    actions_in_force,
    command_log_fields,
    migrate_sqlite_store,
    sqlite_add_tombstone,
    sqlite_is_tombstoned,
    sqlite_mark_started,
    sqlite_record,
    sqlite_success,
    sqlite_successes,
    sqlite_was_started,
)
from sagalog.infrastructure.services.fencing import (
    InMemoryProcessedCommands as InMemoryProcessedCommands,
)
from sagalog.infrastructure.services.fencing import (
    ProcessedCommandStore as ProcessedCommandStore,
)
from sagalog.process import Reply
from sagalog.process.store.loops import Backoff
from sagalog.process.store.sqlite import use_wal
from sagalog.process.store.url import DEFAULT_SQLITE_LOCK_TIMEOUT, create_private_file

logger = logging.getLogger("sagalog.participant")

Handler = Callable[[Command], Any]

#: Longest error text put in a failed reply (the reply model allows 4000 characters).
_MAX_ERROR = 3900


class CommandFailed(SagalogError):
    """Raised by a handler to answer ``failed`` with this message (a business refusal)."""


class InvalidCommandError(SagalogError, ValueError):
    """A command message that cannot be read (not JSON, a missing or wrong field)."""


class SQLiteProcessedCommands:
    """A SQLite file: duplicates are dropped and fences kept across restarts.

    A file written before fencing is migrated when opened (its completed replies
    become first successes, its compensations tombstones).
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        create_private_file(self.path)  # owner-only, like every file sagalog creates
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        use_wal(self._db, DEFAULT_SQLITE_LOCK_TIMEOUT)
        try:
            migrate_sqlite_store(self._db)
        except BaseException:
            self._db.close()
            raise

    def get(self, command_id: UUID) -> str | None:
        with self._lock:
            row = self._db.execute(
                "SELECT reply FROM processed_commands WHERE command_id = ?", (str(command_id),)
            ).fetchone()
        return None if row is None else str(row[0])

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
            sqlite_record(
                self._db, command_id, reply_json, success_key=success_key, tombstone=tombstone
            )

    def success(self, idempotency_key: UUID) -> str | None:
        with self._lock:
            return sqlite_success(self._db, idempotency_key)

    def is_tombstoned(self, saga_id: UUID, step: str) -> bool:
        with self._lock:
            return sqlite_is_tombstoned(self._db, saga_id, step)

    def add_tombstone(self, saga_id: UUID, step: str) -> None:
        with self._lock:
            sqlite_add_tombstone(self._db, saga_id, step)

    def mark_started(self, command_id: UUID) -> None:
        with self._lock:
            sqlite_mark_started(self._db, command_id)

    def was_started(self, command_id: UUID) -> bool:
        with self._lock:
            return sqlite_was_started(self._db, command_id)

    def actions_in_force(self) -> set[tuple[UUID, str]]:
        """(saga, step) pairs whose action succeeded here and whose compensation did not."""
        with self._lock:
            successes = sqlite_successes(self._db)
        return actions_in_force(successes)

    def __len__(self) -> int:
        with self._lock:
            row = self._db.execute("SELECT COUNT(*) FROM processed_commands").fetchone()
        return int(row[0])

    def close(self) -> None:
        """Close the database file."""
        with self._lock:
            self._db.close()


def command_from_message(body: bytes | str | Mapping[str, Any]) -> Command:
    """The :class:`Command` in a message made by ``Command.to_message`` (JSON or dict).

    A JSON body is checked against :data:`~sagalog.infrastructure.messaging.bounds.COMMAND_BOUNDS`
    before it is parsed (no nesting bomb reaches ``json.loads``).
    """
    try:
        if isinstance(body, bytes | str):
            check_message_bounds(body, COMMAND_BOUNDS, "command")
        data = json.loads(body) if isinstance(body, bytes | str) else dict(body)
        deadline = data.get("deadline")
        causation = data.get("causation_id")
        traceparent = data.get("traceparent")
        return Command(
            command_id=UUID(str(data["command_id"])),
            saga_id=UUID(str(data["saga_id"])),
            saga_type=str(data["saga_type"]),
            step=str(data["step"]),
            kind=CommandKind(data["kind"]),
            name=str(data["name"]),
            attempt=int(data["attempt"]),
            payload=dict(data.get("payload") or {}),
            deadline=datetime.fromisoformat(deadline) if deadline else None,
            causation_id=None if causation is None else str(causation),
            traceparent=None if traceparent is None else str(traceparent),
        )
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError) as exc:
        raise InvalidCommandError(f"unreadable command: {type(exc).__name__}: {exc}") from None


def reply_to(command: Command, *, result: Any = None, error: str | None = None) -> Reply:
    """The reply to ``command``: completed with ``result``, or failed with ``error``.

    Its message id is derived from the command id, so answering the same command
    twice gives the same reply id, which the manager recognises as a duplicate.

    The error is an exception's text, which may hold characters no store can keep
    (a NUL, a lone surrogate) and which the manager refuses: they are written
    visibly instead (``\\x00``), so the saga still learns that the step failed.
    """
    if error is not None:
        error = storable_text(error or "failed")[:_MAX_ERROR]
    return Reply.to(command, result=result, error=error)


def storable_text(text: str) -> str:
    """``text`` with a NUL and lone surrogates written as backslash escapes."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8").replace("\x00", "\\x00")


class Participant(ConsumerLoop):
    """A service that handles saga commands from RabbitMQ and answers each with a reply.

    One durable queue per service (``<prefix>.service.<service>``) bound to the
    command names of its handlers; one command in flight at a time; each command
    goes through a :class:`~sagalog.infrastructure.services.fencing.Fence` (``fencing``,
    all on by default; ``clock`` is the participant's own, for the deadline), the
    reply is remembered, published (confirmed), then the command acked. Commands
    that cannot be read go to the commands' dead-letter queue with the reason. With
    signing keys on the topology, only commands signed for their service are handled
    (others are dead-lettered) and replies are signed (see
    :mod:`sagalog.infrastructure.messaging.signing`).
    """

    signed_kind = "command"

    def __init__(
        self,
        service: str,
        handlers: Mapping[str, Handler] | None = None,
        *,
        url: str | None = None,
        topology: Topology | None = None,
        store: ProcessedCommandStore | None = None,
        max_attempts: int = 3,
        retry_backoff: float = 0.05,
        fencing: Fencing | None = None,
        clock: Clock | None = None,
        **loop_options: float,
    ) -> None:
        super().__init__(
            url,
            topology or Topology(),
            connection_name=f"sagalog-participant-{service}",
            **loop_options,
        )
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        self.service = service
        self.handlers: dict[str, Handler] = dict(handlers or {})
        self.store: ProcessedCommandStore = (
            store if store is not None else InMemoryProcessedCommands()
        )
        self.fence = Fence(self.store, fencing, clock=clock)
        self.max_attempts = max_attempts
        self.retry_backoff = retry_backoff
        self.dead_lettered = 0

    @property
    def handled(self) -> int:
        """Commands whose handler ran."""
        return self.fence.counts[Handling.EXECUTED]

    @property
    def duplicates(self) -> int:
        """Commands answered again by command id (redelivered or re-sent)."""
        return self.fence.counts[Handling.DUPLICATE]

    @property
    def repeated(self) -> int:
        """Later attempts answered with an earlier attempt's success, without running."""
        return self.fence.counts[Handling.REPEATED]

    @property
    def refused(self) -> Counter[FenceReason]:
        """Commands refused by fencing, by reason (answered failed, nothing executed)."""
        return self.fence.refused

    def handles(self, command_name: str) -> Callable[[Handler], Handler]:
        """Decorator: register the function as the handler of ``command_name``."""

        def register(handler: Handler) -> Handler:
            self.handlers[command_name] = handler
            return handler

        return register

    @property
    def queue(self) -> str:
        """This participant's queue."""
        return self.topology.service_queue(self.service)

    def declare(self, channel: BlockingChannel) -> str:
        if not self.handlers:
            raise ValueError(f"participant {self.service!r} handles no command")
        return self.topology.declare_service(channel, self.service, self.handlers)

    def on_message(self, delivery: ReceivedMessage) -> None:
        try:
            command = command_from_message(delivery.body)
        except InvalidCommandError as exc:
            self._reject(delivery, str(exc), exc)
            return
        if command.name not in self.handlers and self.store.get(command.command_id) is None:
            self._reject(delivery, f"no handler for command {command.name!r}", None)
            return
        traceparent = delivery.headers.get(TRACEPARENT_HEADER)
        handle_traced(
            command,
            None if traceparent is None else str(traceparent),
            lambda c: self._answer_and_publish(c, delivery),
        )
        delivery.ack()

    def _answer_and_publish(self, command: Command, delivery: ReceivedMessage) -> Answer:
        """Answer ``command`` through the fence and publish the reply (in the handling span)."""
        answer = self.fence.answer(command, self._answer)
        if answer.handling is Handling.DUPLICATE:
            logger.info(
                "command %s (%s) already handled; answering again",
                command.command_id,
                command.name,
                extra=command_log_fields(command),
            )
        publish_reply(
            delivery.channel,
            answer.reply,
            queue=delivery.properties.reply_to or self.topology.replies_queue,
            causation_id=str(command.command_id),
            signing=self.topology.signing,
            service=service_of(command.name),
            traceparent=current_traceparent(),
        )
        return answer

    def answer(self, command: Command, *, traceparent: str | None = None) -> Answer:
        """Answer ``command`` through the fence with its handler, without the broker
        (what ``on_message`` publishes; in-process use and tests call it directly).

        With tracing on, in a span continuing ``traceparent`` (the message's header)
        or the command's own ``traceparent`` (the in-process transport's).
        """
        return handle_traced(command, traceparent, lambda c: self.fence.answer(c, self._answer))

    def run(self, stop: threading.Event | None = None) -> None:
        """Consume until ``stop`` is set; tracing is switched on first if the environment
        asks for it (``SAGALOG_TRACING``, ``SAGALOG_TRACING_FILE``)."""
        if tracing_active() is None:
            enable_from_env()
        super().run(stop)

    def _answer(self, command: Command) -> Reply:
        handler = self.handlers[command.name]
        attempt = 0
        backoff = Backoff(self.retry_backoff)
        while True:
            attempt += 1
            try:
                result = handler(command)
            except CommandFailed as exc:
                return reply_to(command, error=str(exc) or "failed")
            except Exception as exc:
                if attempt >= self.max_attempts:
                    logger.warning(
                        "command %s (%s) raised %s %d times; answering failed",
                        command.command_id,
                        command.name,
                        type(exc).__name__,
                        attempt,
                        extra=command_log_fields(command),
                    )
                    return reply_to(command, error=f"{type(exc).__name__}: {exc}")
                self.wait(backoff.next())
                continue
            try:
                return reply_to(command, result=result)
            except ValidationError as exc:
                return reply_to(command, error=f"handler result is not JSON: {exc.errors()[0]}")

    def _reject(self, delivery: ReceivedMessage, reason: str, error: BaseException | None) -> None:
        self.dead_letter(delivery, self.topology.commands_dead_letter_queue, reason, error=error)
        self.dead_lettered += 1
        logger.error(
            "command %s dead-lettered: %s",
            delivery.properties.message_id,
            reason,
            extra={
                "correlation_id": delivery.properties.correlation_id,
                "message_id": delivery.properties.message_id,
                "causation_id": delivery.headers.get(HEADER_CAUSATION_ID),
            },
        )


def serve(
    service: str,
    handlers: Mapping[str, Handler],
    *,
    url: str | None = None,
    topology: Topology | None = None,
    store: ProcessedCommandStore | None = None,
    stop: threading.Event | None = None,
    fencing: Fencing | None = None,
) -> Participant:
    """Run a participant for ``handlers`` until ``stop`` is set; return it (with its counts)."""
    participant = Participant(
        service, handlers, url=url, topology=topology, store=store, fencing=fencing
    )
    participant.run(stop)
    return participant


def command_names(participants: Iterable[Participant]) -> set[str]:
    """Every command name handled by ``participants`` (to check a definition is covered)."""
    return {name for participant in participants for name in participant.handlers}
