"""How upstream domain events find their reactions, and what those do to sagas.

Inside an eventsourcing ``System`` the manager follows upstream applications;
eventsourcing hands it each upstream event with its tracking record.
:class:`RoutesReactions` looks up the declared reactions of the event's class
(and of its base classes), keeps those whose ``when`` holds, lets each start or
move its saga, and records all the saga events with the tracking record in one
transaction, so each upstream event is processed exactly once. The reactions
themselves are declared in :mod:`sagalog.process.reactions`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeAlias
from uuid import UUID

from eventsourcing.application import ProcessingEvent
from eventsourcing.domain import DomainEventProtocol
from eventsourcing.persistence import RecordConflictError, Tracking
from eventsourcing.system import ProcessApplication

from sagalog.domain import Saga, SagaNotFoundError
from sagalog.process.batch import ConcurrencyConflictError
from sagalog.process.cache import SagaCache
from sagalog.process.clock import Clock
from sagalog.process.reactions import Reaction, StartSaga, event_message_id
from sagalog.process.registry import DefinitionRegistry
from sagalog.process.store.timers import SAGA_TIMERS_KWARG

__all__ = ["ReactionIndex", "RoutesReactions", "index_reactions"]

logger = logging.getLogger("sagalog.manager")

#: The declared reactions by the upstream event class they name.
ReactionIndex: TypeAlias = dict[type[Any], list[Reaction]]


def index_reactions(reactions: Iterable[Reaction]) -> ReactionIndex:
    """``reactions`` grouped by the upstream event class each names, in declared order."""
    index: ReactionIndex = {}
    for reaction in reactions:
        index.setdefault(reaction.event, []).append(reaction)
    return index


class RoutesReactions(ProcessApplication[UUID]):
    """Mixin of ``SagaManager``: eventsourcing's follower hooks, answered by reactions.

    The attributes and methods declared without a body here are ``SagaManager``'s.
    """

    clock: Clock
    registry: DefinitionRegistry
    saga_cache: SagaCache
    max_conflict_retries: int
    _reactions: ReactionIndex

    if TYPE_CHECKING:

        def get(self, saga_id: UUID, version: int | None = None) -> Saga: ...

        def _exists(self, saga_id: UUID) -> bool: ...

    def process_event(self, domain_event: DomainEventProtocol[Any], tracking: Tracking) -> None:
        """Process one upstream event exactly once; re-decide on a version conflict."""
        for attempt in range(self.max_conflict_retries):
            processing: ProcessingEvent[UUID] = ProcessingEvent(tracking=tracking)
            self.policy(domain_event, processing)
            try:
                recordings = self._record(processing)
            except RecordConflictError:
                done = self.recorder.max_tracking_id(tracking.application_name) or 0
                if done >= tracking.notification_id:
                    return  # another manager processed this upstream event already
                time.sleep(0.001 * attempt)
                continue
            self._take_snapshots(processing)
            self.notify(processing.events)
            self._notify(recordings)
            return
        raise ConcurrencyConflictError(
            f"upstream event {event_message_id(domain_event)} kept conflicting"
        )

    def policy(
        self, domain_event: DomainEventProtocol[Any], processing_event: ProcessingEvent[UUID]
    ) -> None:
        """Apply every declared reaction to ``domain_event`` (none: the event is ignored)."""
        reactions = [r for r in self._reactions_for(type(domain_event)) if r.applies(domain_event)]
        if not reactions:
            return
        timers: dict[UUID, datetime | None] = processing_event.saved_kwargs.setdefault(
            SAGA_TIMERS_KWARG, {}
        )
        cause = event_message_id(domain_event)
        now = self.clock()
        for reaction in reactions:
            saga = self._react(reaction, domain_event, cause, now)
            if saga is not None and saga.pending_events:
                processing_event.collect_events(saga)
                timers[saga.id] = saga.next_wakeup

    def _reactions_for(self, event_type: type[Any]) -> list[Reaction]:
        """The reactions declared for ``event_type`` or any class it derives from."""
        found: list[Reaction] = []
        for cls in event_type.__mro__:
            found.extend(self._reactions.get(cls, ()))
        return found

    def _react(self, reaction: Reaction, event: Any, cause: str, now: datetime) -> Saga | None:
        """The saga ``reaction`` started or moved for ``event`` (``None``: nothing to record)."""
        saga_id = reaction.saga_id(event)
        self.saga_cache.discard(saga_id)  # recorded here, outside the cache
        if isinstance(reaction, StartSaga):
            if self._exists(saga_id):
                return None
            definition = self.registry.get(reaction.saga_type)
            return Saga.start(
                definition, reaction.data(event), saga_id=saga_id, now=now, message_id=cause
            )
        try:
            saga = self.get(saga_id)
        except SagaNotFoundError:
            logger.warning("%s refers to unknown saga %s; ignored", cause, saga_id)
            return None
        reaction.decide(saga, event, now=now, cause=cause)
        return saga
