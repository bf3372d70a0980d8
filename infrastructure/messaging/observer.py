"""Follow a manager's saga events from its notification log, for metrics and logs.

Observability is derived from the log rather than sprinkled through the domain:
every transition is an event, committed before anyone can see it, so an observer
that reads the log sees each transition exactly once per observer, whichever
process (manager, worker, operator CLI) recorded it. Run one observer per saga
database — like the relay — or each would count and log every transition.

The position is kept in memory: an observer starts at the head of the log (only
new transitions) or from the beginning, and Prometheus counters and log lines are
process-local anyway.

An event that does not decode (a poison event) never stops the follower: it is
counted in :attr:`SagaEventFollower.quarantined`, logged, recorded in the
quarantine table when a :class:`~sagalog.projections.quarantine.QuarantineLog` is
given, and passed over.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Literal
from uuid import UUID

from eventsourcing.persistence import PersistenceError

from sagalog.domain import Saga, SagaNotFoundError
from sagalog.process import SagaManager
from sagalog.process.store.loops import run_until_stopped
from sagalog.projections.cursor import LogCursor
from sagalog.projections.quarantine import QuarantineLog, describe_failure

logger = logging.getLogger("sagalog.follower")

#: Events after which a saga's cached type is no longer needed.
_FINAL = (Saga.SagaCompleted, Saga.SagaFailed)


@dataclass(frozen=True)
class ObservedEvent:
    """A saga event read from the log, with its saga's type and its log position."""

    event: Saga.Event
    saga_type: str
    notification_id: int

    @property
    def saga_id(self) -> UUID:
        """The saga's id (the correlation id)."""
        return self.event.originator_id


EventHandler = Callable[[ObservedEvent], None]


class SagaEventFollower(LogCursor):
    """Reads the manager's log from a position and hands each saga event to handlers.

    ``start``: ``"head"`` (only what is recorded from now on), ``"beginning"``
    (replay everything), or a notification id to resume after. Handlers run in the
    thread that calls :meth:`pump` / :meth:`run`; one that raises is logged and does
    not stop the others (observability must never stop the saga machinery).
    """

    def __init__(
        self,
        manager: SagaManager,
        handlers: Iterable[EventHandler] = (),
        *,
        start: Literal["head", "beginning"] | int = "head",
        batch_size: int = 500,
        type_cache_size: int = 100_000,
        quarantine: QuarantineLog | None = None,
        name: str = "metrics",
    ) -> None:
        super().__init__(manager, batch_size=batch_size)
        self.manager = manager
        self.name = name
        self.quarantine = quarantine
        #: Events that did not decode, passed over since this follower was created.
        self.quarantined = 0
        self.handlers: list[EventHandler] = list(handlers)
        if start == "head":
            self.position = manager.recorder.max_notification_id() or 0
        elif start == "beginning":
            self.position = 0
        else:
            self.position = int(start)
        self._types: OrderedDict[UUID, str] = OrderedDict()
        self._type_cache_size = type_cache_size
        self._lock = threading.Lock()

    def subscribe(self, handler: EventHandler) -> None:
        """Add ``handler`` (called for every event from now on)."""
        self.handlers.append(handler)

    def tracked_position(self) -> int:
        return self.position

    def pump(self) -> int:
        """Handle one batch of new events; return how many saga events it held."""
        with self._lock:
            notifications = self.read_after(self.position)
            count = 0
            for notification in notifications:
                try:
                    event = self.manager.mapper.to_domain_event(notification)
                except Exception as exc:
                    self._set_aside(notification.id, notification.originator_id, exc)
                    self.position = notification.id
                    continue
                if isinstance(event, Saga.Event):
                    observed = ObservedEvent(event, self._saga_type(event), notification.id)
                    for handler in self.handlers:
                        try:
                            handler(observed)
                        except Exception:
                            logger.exception("event handler %r failed", handler)
                    count += 1
                self.position = notification.id
            return count

    def _set_aside(self, notification_id: int, saga_id: object, exc: BaseException) -> None:
        self.quarantined += 1
        error = describe_failure(exc)
        logger.error("follower: event %d quarantined: %s", notification_id, error)
        if self.quarantine is not None:
            try:
                self.quarantine.record(
                    follower=self.name,
                    application_name=self.manager.name,
                    notification_id=notification_id,
                    saga_id=saga_id if isinstance(saga_id, UUID) else None,
                    topic="(undecodable)",
                    error=error,
                )
            except PersistenceError as failure:  # pragma: no cover - the log was readable
                logger.warning("follower: cannot record the quarantine: %s", failure)

    def run(self, stop: threading.Event, *, poll_interval: float = 0.2) -> None:
        """Pump until ``stop`` is set; a database error is logged and retried."""

        def retrying(exc: BaseException, _delay: float) -> None:
            logger.warning("follower: %s; retrying", exc)

        run_until_stopped(
            self.drain,
            stop,
            interval=poll_interval,
            retry_on=(PersistenceError,),
            on_error=retrying,
        )

    def _saga_type(self, event: Saga.Event) -> str:
        saga_id = event.originator_id
        known: str | None = getattr(event, "saga_type", None)
        if known is None:
            known = self._types.get(saga_id)
        if known is None:
            try:
                known = self.manager.get(saga_id).saga_type
            except SagaNotFoundError:  # pragma: no cover - an event implies its saga
                known = "unknown"
        if isinstance(event, _FINAL):
            self._types.pop(saga_id, None)
        else:
            self._types[saga_id] = known
            self._types.move_to_end(saga_id)
            while len(self._types) > self._type_cache_size:
                self._types.popitem(last=False)
        return known
