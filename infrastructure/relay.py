"""The command relay: the saga log is the outbox.

The relay follows the manager's notification log from a tracked position and
hands every ``StepDispatched`` / ``CompensationDispatched`` to a transport. A
command is therefore never sent unless its event is committed. The position is
recorded (in the same database, in eventsourcing's tracking table of the relay)
only after the transport accepted the commands, once per batch: after a crash
the relay resumes from its position and may send the last batch again — delivery
is at least once, and each command keeps its deterministic ``command_id`` so
participants drop the duplicate. A transport error leaves the position at the
last command that was accepted and the relay retries with exponential backoff.

Run one relay per saga database: two relays on one database would both send.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from eventsourcing.persistence import InfrastructureFactory, PersistenceError, Tracking
from eventsourcing.utils import Environment, get_topic

from sagalog.domain import Saga
from sagalog.infrastructure.transport import Transport, TransportError
from sagalog.process import SagaManager

logger = logging.getLogger("sagalog.relay")

#: Topics of the events that carry a command.
COMMAND_TOPICS: tuple[str, ...] = tuple(get_topic(cls) for cls in Saga.COMMAND_EVENTS)


class CommandRelay:
    """Delivers the commands recorded by ``manager`` to ``transport``, at least once."""

    name = "CommandRelay"

    def __init__(
        self,
        manager: SagaManager,
        transport: Transport,
        *,
        batch_size: int = 500,
        initial_backoff: float = 0.05,
        max_backoff: float = 5.0,
    ) -> None:
        self.manager = manager
        self.transport = transport
        self.batch_size = batch_size
        self.initial_backoff = initial_backoff
        self.max_backoff = max_backoff
        env = manager.database_url.eventsourcing_env(self.name)
        factory: InfrastructureFactory[Any] = InfrastructureFactory.construct(
            Environment(self.name, env)
        )
        self._factory = factory
        self.tracking = factory.tracking_recorder()
        self.delivered = 0

    def close(self) -> None:
        """Close the relay's own connections (its tracking store); the manager stays open.

        The relay reads the manager's log through the manager's recorder but keeps
        its position through a store of its own, with its own connection pool,
        which would otherwise stay open until garbage collection.
        """
        self._factory.close()

    @property
    def position(self) -> int:
        """Notification id of the last command handed over (0 before the first)."""
        return self.tracking.max_tracking_id(self.manager.name) or 0

    def lag(self, limit: int = 10_000) -> int:
        """How many recorded commands wait to be sent (counted up to ``limit``).

        Only command events count: a saga's later events (``SagaCompleted``, …)
        carry nothing to send, so an idle system has a lag of zero.
        """
        waiting = self.manager.recorder.select_notifications(
            start=self.position + 1, limit=limit, topics=COMMAND_TOPICS
        )
        return len(waiting)

    def pump(self) -> int:
        """Send one batch of commands recorded since the position; return how many.

        Raises :class:`TransportError` after recording the position of the
        commands that were accepted before the failure.
        """
        notifications = self.manager.recorder.select_notifications(
            start=self.position + 1, limit=self.batch_size, topics=COMMAND_TOPICS
        )
        sent_up_to: int | None = None
        count = 0
        try:
            for notification in notifications:
                event = self.manager.mapper.to_domain_event(notification)
                if isinstance(event, Saga.StepDispatched | Saga.CompensationDispatched):
                    self.transport.send(event.command())
                    count += 1
                sent_up_to = notification.id
        finally:
            if sent_up_to is not None:
                self.tracking.insert_tracking(Tracking(self.manager.name, sent_up_to))
                self.delivered += count
        return count

    def drain(self) -> int:
        """Pump until nothing is left; return how many commands were sent."""
        total = 0
        while True:
            sent = self.pump()
            total += sent
            if sent < self.batch_size:
                return total

    def run(self, stop: threading.Event, *, poll_interval: float = 0.1) -> None:
        """Pump until ``stop`` is set, backing off exponentially on transport errors."""
        backoff = self.initial_backoff
        while not stop.is_set():
            try:
                sent = self.pump()
            except (TransportError, PersistenceError) as exc:
                logger.warning("relay: %s; retrying in %.2fs", exc, backoff)
                stop.wait(backoff)
                backoff = min(self.max_backoff, backoff * 2)
                continue
            backoff = self.initial_backoff
            if sent == 0:
                stop.wait(poll_interval)
