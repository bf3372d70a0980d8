"""Transports deliver commands to participants; the relay hands them over.

A transport is deliberately small — ``send`` one command, ``close`` — so a broker
adapter (RabbitMQ, …) only has to implement these two. ``send`` returns once the
command is safely handed over (for a broker: once it confirmed) and raises
:class:`TransportError` otherwise; the relay then keeps its position and retries.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from typing import Protocol

from sagalog.domain import Command, SagalogError


class TransportError(SagalogError, ConnectionError):
    """A command could not be handed over; the relay will retry it."""


class Transport(Protocol):
    """Delivers commands, at least once, to whoever handles them."""

    def send(self, command: Command) -> None:
        """Hand ``command`` over; raise :class:`TransportError` if that failed."""
        ...

    def close(self) -> None:
        """Release connections."""
        ...


CommandHandler = Callable[[Command], None]


class InProcessTransport:
    """Commands queued in memory and handed to handlers registered by command name.

    ``send`` only queues (so the relay never runs participant code inside its own
    bookkeeping); ``deliver`` hands queued commands to their handlers. A command
    with no handler raises :class:`TransportError` at ``send`` time, so a misrouted
    command is retried rather than lost.
    """

    def __init__(self) -> None:
        self._handlers: dict[str, CommandHandler] = {}
        self._fallback: CommandHandler | None = None
        self._queue: deque[Command] = deque()
        self._lock = threading.Lock()
        self.sent = 0

    def subscribe(self, command_name: str, handler: CommandHandler) -> None:
        """Deliver commands named ``command_name`` to ``handler``."""
        self._handlers[command_name] = handler

    def subscribe_all(self, handler: CommandHandler) -> None:
        """Deliver every command without a specific handler to ``handler``."""
        self._fallback = handler

    def send(self, command: Command) -> None:
        """Queue ``command`` for delivery."""
        if command.name not in self._handlers and self._fallback is None:
            raise TransportError(f"no participant handles command {command.name!r}")
        with self._lock:
            self._queue.append(command)
            self.sent += 1

    def pending(self) -> int:
        """How many commands wait for delivery."""
        return len(self._queue)

    def deliver(self, limit: int | None = None) -> int:
        """Hand up to ``limit`` queued commands to their handlers; return how many."""
        delivered = 0
        while limit is None or delivered < limit:
            with self._lock:
                if not self._queue:
                    break
                command = self._queue.popleft()
            handler = self._handlers.get(command.name, self._fallback)
            assert handler is not None
            handler(command)
            delivered += 1
        return delivered

    def close(self) -> None:
        """Drop anything still queued."""
        with self._lock:
            self._queue.clear()
