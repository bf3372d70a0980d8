"""What a laws machine drives: a ``SagaManager``, or the ``Saga`` aggregate alone.

:class:`~sagalog.testing.machine.SagaLawsMachine` writes its rules once, against
the small :class:`Subject` interface: start the saga, hand it a reply, fire the
timers due, let an operator act, read its history and rebuild it at a version.
:class:`ManagerSubject` (the kit's) goes through a real ``SagaManager`` and its
store; :class:`AggregateSubject` (sagalog's own tests) calls the aggregate's
methods and stores its events through an in-memory ``eventsourcing`` application,
so that they also survive their JSON encoding.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from datetime import datetime
from typing import Any, Protocol, cast
from uuid import UUID

from eventsourcing.application import Application

from sagalog.domain import ReplyOutcome, Saga, SagaDefinition
from sagalog.process import SagaManager
from sagalog.testing.replies import send_reply
from sagalog.testing.strategies import DeliveredReply, OperatorVerb

__all__ = ["AggregateSubject", "ManagerSubject", "Subject"]


class Subject(Protocol):
    """One saga and the calls that move it; ``now`` is the machine's clock."""

    saga_id: UUID

    def start(
        self,
        definition: SagaDefinition,
        data: dict[str, Any],
        message_id: str | None,
        now: datetime,
    ) -> UUID:
        """Start the saga; starting it again returns its id and records nothing."""
        ...

    def deliver(self, reply: DeliveredReply, now: datetime) -> ReplyOutcome:
        """Hand over ``reply``: a reply that cannot be about a command sent raises the
        typed error of ``sagalog.domain.errors``."""
        ...

    def tick(self, now: datetime) -> int:
        """Fire the timers due at ``now``: how many fired (through a manager: sagas moved)."""
        ...

    def act(self, verb: OperatorVerb, actor: str, reason: str, now: datetime) -> None:
        """An operator retries, resolves or aborts (``InvalidTransitionError`` if refused)."""
        ...

    @property
    def saga(self) -> Saga:
        """The saga as it is now."""
        ...

    def history(self) -> list[Saga.Event]:
        """The saga's stored events, oldest first."""
        ...

    def rebuilt(self, version: int) -> Saga:
        """The saga rebuilt from its stored events at ``version``."""
        ...

    def mark(self) -> object:
        """A value that differs whenever anything was recorded since (or the saga changed)."""
        ...

    def indexed_wakeup(self) -> datetime | None:
        """The saga's next wake-up as its timer index has it."""
        ...

    def close(self) -> None:
        """Release what the subject holds."""
        ...


class ManagerSubject:
    """The saga through a ``SagaManager``'s public API, its store and its timer index."""

    #: Later than any timer: the timer index is asked for everything up to here.
    FAR_FUTURE = datetime.fromisoformat("9999-01-01T00:00:00+00:00")

    def __init__(
        self, manager: SagaManager, saga_id: UUID, close: Callable[[SagaManager], None]
    ) -> None:
        self.manager = manager
        self.saga_id = saga_id
        self._close = close

    def start(
        self,
        definition: SagaDefinition,
        data: dict[str, Any],
        message_id: str | None,
        now: datetime,
    ) -> UUID:
        return self.manager.start(
            definition.name, data, saga_id=self.saga_id, version=definition.version
        )

    def deliver(self, reply: DeliveredReply, now: datetime) -> ReplyOutcome:
        return send_reply(
            self.manager,
            self.saga_id,
            reply.step,
            reply.kind,
            reply.succeeded,
            result=reply.result,
            error=reply.error,
            attempt=reply.attempt,
            message_id=reply.message_id,
        )

    def tick(self, now: datetime) -> int:
        return self.manager.tick(now)

    def act(self, verb: OperatorVerb, actor: str, reason: str, now: datetime) -> None:
        getattr(self.manager, verb.value)(self.saga_id, actor=actor, reason=reason)

    @property
    def saga(self) -> Saga:
        return self.manager.get(self.saga_id)

    def history(self) -> list[Saga.Event]:
        return self.manager.history(self.saga_id)

    def rebuilt(self, version: int) -> Saga:
        return self.manager.get(self.saga_id, version=version)

    def mark(self) -> object:
        return self.manager.recorder.max_notification_id()

    def indexed_wakeup(self) -> datetime | None:
        due = self.manager.timers.select_due_timers(self.FAR_FUTURE, 1_000_000)
        return dict(due).get(self.saga_id)

    def close(self) -> None:
        self._close(self.manager)


class AggregateSubject:
    """The ``Saga`` aggregate alone, its events stored in memory after every call.

    Every event it records must be correlated to the saga, caused by the message
    that caused the call (``None`` for timers and operators), stamped with the
    moment of the call, and numbered on from the last.
    """

    def __init__(self, saga_id: UUID) -> None:
        self.saga_id = saga_id
        self.app: Application[UUID] = Application(
            env={"PERSISTENCE_MODULE": "eventsourcing.popo", "IS_SNAPSHOTTING_ENABLED": "no"}
        )
        self._saga: Saga | None = None
        self.events: list[Saga.Event] = []

    def start(
        self,
        definition: SagaDefinition,
        data: dict[str, Any],
        message_id: str | None,
        now: datetime,
    ) -> UUID:
        if self._saga is None:
            self._saga = Saga.start(
                definition, data, saga_id=self.saga_id, now=now, message_id=message_id
            )
            self._record(message_id, now)
        return self.saga_id

    def deliver(self, reply: DeliveredReply, now: datetime) -> ReplyOutcome:
        outcome = self.saga.answer(
            reply.step,
            reply.kind,
            reply.succeeded,
            now=now,
            result=reply.result,
            error=reply.error,
            attempt=reply.attempt,
            message_id=reply.message_id,
        )
        self._record(reply.message_id, now)
        return outcome

    def tick(self, now: datetime) -> int:
        fired = self.saga.fire_due(now)
        self._record(None, now)
        return fired

    def act(self, verb: OperatorVerb, actor: str, reason: str, now: datetime) -> None:
        getattr(self.saga, verb.value)(actor=actor, reason=reason, now=now)
        self._record(None, now)

    @property
    def saga(self) -> Saga:
        assert self._saga is not None, "the saga has not been started"
        return self._saga

    def history(self) -> list[Saga.Event]:
        return list(self.events)

    def rebuilt(self, version: int) -> Saga:
        saga: Saga = self.app.repository.get(self.saga_id, version=version)
        return saga

    def mark(self) -> object:
        saga = self.saga
        return (len(self.events), len(saga.pending_events), copy.deepcopy(saga))

    def indexed_wakeup(self) -> datetime | None:
        return self.saga.next_wakeup  # no index: the aggregate is asked

    def close(self) -> None:
        pass

    def _record(self, cause: str | None, now: datetime) -> None:
        """Store what the last call recorded; check its events' ids and times."""
        saga = self.saga
        new = cast(list[Saga.Event], list(saga.pending_events))
        for event in new:
            assert isinstance(event, Saga.Event)
            assert event.correlation_id == saga.id, f"{event} is not correlated to the saga"
            assert event.causation_id == cause, (
                f"{type(event).__name__} has causation_id {event.causation_id!r}, not {cause!r}"
            )
            assert event.timestamp == now
        self.app.save(saga)
        assert not saga.pending_events
        self.events.extend(new)
        assert [e.originator_version for e in self.events] == list(range(1, len(self.events) + 1))
        assert saga.version == len(self.events)
