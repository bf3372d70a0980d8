"""Writing a participant service in a few lines: consume commands, answer replies.

A participant binds its own durable queue to the command names it handles, runs
the matching handler for each command, and publishes a :class:`Reply` (confirmed)
to the command's ``reply_to`` queue before it acks the command::

    from sagalog.infrastructure.participant import CommandFailed, Participant

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
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol
from uuid import UUID

from pika.adapters.blocking_connection import BlockingChannel
from pydantic import ValidationError

from sagalog.domain import Command, CommandKind, SagalogError
from sagalog.infrastructure.bounds import COMMAND_BOUNDS, check_message_bounds
from sagalog.infrastructure.rabbitmq import (
    HEADER_CAUSATION_ID,
    ConsumerLoop,
    Delivery,
    Topology,
    publish_reply,
)
from sagalog.infrastructure.signing import service_of
from sagalog.process import Reply
from sagalog.process.database import DEFAULT_SQLITE_LOCK_TIMEOUT, create_private_file
from sagalog.process.sqlite_wal import use_wal

logger = logging.getLogger("sagalog.participant")

Handler = Callable[[Command], Any]

#: Longest error text put in a failed reply (the reply model allows 4000 characters).
_MAX_ERROR = 3900


class CommandFailed(SagalogError):
    """Raised by a handler to answer ``failed`` with this message (a business refusal)."""


class InvalidCommandError(SagalogError, ValueError):
    """A command message that cannot be read (not JSON, a missing or wrong field)."""


class ProcessedCommandStore(Protocol):
    """Remembers the reply given to each command id (a participant's dedup memory)."""

    def get(self, command_id: UUID) -> str | None:
        """The reply JSON given to ``command_id``, or None if it was never handled."""
        ...

    def put(self, command_id: UUID, reply_json: str) -> None:
        """Remember ``reply_json`` as the answer to ``command_id`` (first write wins)."""
        ...


class InMemoryProcessedCommands:
    """A dict: duplicates are dropped while the process lives (the default)."""

    def __init__(self) -> None:
        self._replies: dict[UUID, str] = {}
        self._lock = threading.Lock()

    def get(self, command_id: UUID) -> str | None:
        with self._lock:
            return self._replies.get(command_id)

    def put(self, command_id: UUID, reply_json: str) -> None:
        with self._lock:
            self._replies.setdefault(command_id, reply_json)

    def __len__(self) -> int:
        return len(self._replies)


class SQLiteProcessedCommands:
    """A SQLite file: duplicates are dropped across restarts of the participant."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        create_private_file(self.path)  # owner-only, like every file sagalog creates
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        use_wal(self._db, DEFAULT_SQLITE_LOCK_TIMEOUT)
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS processed_commands "
            "(command_id TEXT PRIMARY KEY, reply TEXT NOT NULL, "
            "recorded_at TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP)"
        )

    def get(self, command_id: UUID) -> str | None:
        with self._lock:
            row = self._db.execute(
                "SELECT reply FROM processed_commands WHERE command_id = ?", (str(command_id),)
            ).fetchone()
        return None if row is None else str(row[0])

    def put(self, command_id: UUID, reply_json: str) -> None:
        with self._lock:
            self._db.execute(
                "INSERT OR IGNORE INTO processed_commands (command_id, reply) VALUES (?, ?)",
                (str(command_id), reply_json),
            )

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

    A JSON body is checked against :data:`~sagalog.infrastructure.bounds.COMMAND_BOUNDS`
    before it is parsed (no nesting bomb reaches ``json.loads``).
    """
    try:
        if isinstance(body, bytes | str):
            check_message_bounds(body, COMMAND_BOUNDS, "command")
        data = json.loads(body) if isinstance(body, bytes | str) else dict(body)
        deadline = data.get("deadline")
        causation = data.get("causation_id")
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
    command names of its handlers; one command in flight at a time; the reply is
    remembered, published (confirmed), then the command acked. Commands that
    cannot be read, and replies the handler's result cannot be put in, go to the
    commands' dead-letter queue with the reason. With signing keys on the topology,
    only commands signed for their service are handled (others are dead-lettered)
    and replies are signed (see :mod:`sagalog.infrastructure.signing`).
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
        self.max_attempts = max_attempts
        self.retry_backoff = retry_backoff
        self.handled = 0
        self.duplicates = 0
        self.dead_lettered = 0

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

    def on_message(self, delivery: Delivery) -> None:
        try:
            command = command_from_message(delivery.body)
        except InvalidCommandError as exc:
            self._reject(delivery, str(exc), exc)
            return
        known = self.store.get(command.command_id)
        if known is not None:
            self.duplicates += 1
            logger.info(
                "command %s (%s) already handled; answering again",
                command.command_id,
                command.name,
                extra=_command_log_fields(command),
            )
            reply = Reply.model_validate_json(known)
        else:
            answer = self._answer(command)
            if answer is None:
                self._reject(delivery, f"no handler for command {command.name!r}", None)
                return
            reply = answer
            self.store.put(command.command_id, reply.model_dump_json())
            self.handled += 1
        publish_reply(
            delivery.channel,
            reply,
            queue=delivery.properties.reply_to or self.topology.replies_queue,
            causation_id=str(command.command_id),
            signing=self.topology.signing,
            service=service_of(command.name),
        )
        delivery.ack()

    def _answer(self, command: Command) -> Reply | None:
        handler = self.handlers.get(command.name)
        if handler is None:
            return None
        attempt = 0
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
                        extra=_command_log_fields(command),
                    )
                    return reply_to(command, error=f"{type(exc).__name__}: {exc}")
                self.wait(self.retry_backoff * 2 ** (attempt - 1))
                continue
            try:
                return reply_to(command, result=result)
            except ValidationError as exc:
                return reply_to(command, error=f"handler result is not JSON: {exc.errors()[0]}")

    def _reject(self, delivery: Delivery, reason: str, error: BaseException | None) -> None:
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


def _command_log_fields(command: Command) -> dict[str, Any]:
    return {
        "correlation_id": str(command.saga_id),
        "step": command.step,
        "attempt": command.attempt,
        "message_id": str(command.command_id),
        "causation_id": command.causation_id,
    }


def serve(
    service: str,
    handlers: Mapping[str, Handler],
    *,
    url: str | None = None,
    topology: Topology | None = None,
    store: ProcessedCommandStore | None = None,
    stop: threading.Event | None = None,
) -> Participant:
    """Run a participant for ``handlers`` until ``stop`` is set; return it (with its counts)."""
    participant = Participant(service, handlers, url=url, topology=topology, store=store)
    participant.run(stop)
    return participant


def command_names(participants: Iterable[Participant]) -> set[str]:
    """Every command name handled by ``participants`` (to check a definition is covered)."""
    return {name for participant in participants for name in participant.handlers}
