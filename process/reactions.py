"""Declarative reactions to upstream applications' domain events.

Inside an eventsourcing ``System`` the manager follows upstream applications.
A reaction says what one upstream event class means for a saga::

    reactions = [
        StartSaga(Orders.OrderPlaced, "OrderFulfillment",
                  data=lambda e: {"order_id": str(e.originator_id), "items": e.items}),
        CompleteStep(Inventory.ItemsReserved, "OrderFulfillment", "reserve_inventory",
                     key=lambda e: e.order_id),
        FailStep(Inventory.ReservationRejected, "OrderFulfillment", "reserve_inventory",
                 key=lambda e: e.order_id, error=lambda e: e.reason),
    ]

A saga started by a reaction gets the id ``saga_id_for(saga_type, key(event))``,
so later events that carry the same business key find it. Each upstream event is
processed exactly once: its saga events are recorded in the same transaction as
eventsourcing's tracking record of the upstream position, with the upstream event
as their cause (``causation_id``).

Every reaction takes ``when=``, a predicate of the event: one event class that
carries its outcome as data serves several reactions (``CompleteStep(Debited, …,
when=lambda e: e.ok)`` and ``FailStep(Debited, …, when=lambda e: not e.ok)``).
``AbortSaga`` stops a running saga from an upstream event (a revoked approval, a
cancelled order) and compensates what it has done; on a saga that has ended, is
compensating or is past its pivot it records nothing (and logs why).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from typing import Any
from uuid import UUID, uuid5

from sagalog.domain import CommandKind, InvalidTransitionError, Saga, SagaStatus

logger = logging.getLogger("sagalog.reactions")

#: Namespace of the saga ids derived from business keys.
SAGA_ID_NAMESPACE = UUID("6f1c7a52-3d1e-4c1b-9a57-0b5e2f4d8c11")


def saga_id_for(saga_type: str, key: object) -> UUID:
    """The deterministic saga id of ``saga_type`` for business key ``key`` (e.g. an order id)."""
    return uuid5(SAGA_ID_NAMESPACE, f"{saga_type}\x1f{key}")


def _originator(event: Any) -> object:
    return event.originator_id


def _no_result(_event: Any) -> Any:
    return None


def _event_name(event: Any) -> str:
    return type(event).__qualname__


def _class_name(event: Any) -> str:
    return type(event).__name__


def event_message_id(event: Any) -> str:
    """A stable id of an upstream event, used as the causation id of what it caused."""
    topic = f"{type(event).__module__}:{type(event).__qualname__}"
    return f"{topic}@{event.originator_id}/{event.originator_version}"


class _Keyed:
    """What every reaction shares: its saga is found by a business key, when ``when`` holds."""

    saga_type: str
    key: Callable[[Any], object]
    when: Callable[[Any], bool] | None

    def saga_id(self, event: Any) -> UUID:
        """The id of the saga ``event`` starts or is about (from its business key)."""
        return saga_id_for(self.saga_type, self.key(event))

    def applies(self, event: Any) -> bool:
        """Whether this reaction reacts to ``event`` (its ``when``, if any, holds)."""
        return self.when is None or bool(self.when(event))


@dataclass(frozen=True)
class StartSaga(_Keyed):
    """Upstream event ``event`` starts a saga of ``saga_type`` with ``data(event)``."""

    event: type[Any]
    saga_type: str
    data: Callable[[Any], dict[str, Any]]
    key: Callable[[Any], object] = field(default=_originator)
    when: Callable[[Any], bool] | None = None


@dataclass(frozen=True)
class ReplyReaction(_Keyed):
    """Upstream event ``event`` is the outcome of a step's action or compensation."""

    event: type[Any]
    saga_type: str
    step: str
    kind: CommandKind
    succeeded: bool
    key: Callable[[Any], object] = field(default=_originator)
    result: Callable[[Any], Any] = field(default=_no_result)
    error: Callable[[Any], str] = field(default=_class_name)
    when: Callable[[Any], bool] | None = None

    def decide(self, saga: Saga, event: Any, *, now: datetime, cause: str) -> None:
        """Decide on ``saga`` the outcome ``event`` reports (a repeat changes nothing)."""
        saga.answer(
            self.step,
            self.kind,
            self.succeeded,
            now=now,
            result=self.result(event) if self.succeeded else None,
            error="" if self.succeeded else self.error(event),
            message_id=cause,
        )


@dataclass(frozen=True)
class AbortSaga(_Keyed):
    """Upstream event ``event`` stops the running saga of ``saga_type`` and compensates it.

    Recorded as ``SagaAborted`` by ``actor(event)`` (default: the event's class name)
    because ``reason(event)``, with the upstream event as its cause. A saga that is
    not running (ended, compensating) or is past its pivot is left as it is.
    """

    event: type[Any]
    saga_type: str
    key: Callable[[Any], object] = field(default=_originator)
    reason: Callable[[Any], str] = field(default=_event_name)
    actor: Callable[[Any], str] = field(default=_event_name)
    when: Callable[[Any], bool] | None = None

    def decide(self, saga: Saga, event: Any, *, now: datetime, cause: str) -> None:
        """Abort ``saga`` if it is running and before its pivot; otherwise log and leave it."""
        if saga.status not in (SagaStatus.STARTED, SagaStatus.PENDING):
            logger.info("%s: saga %s is %s; not aborted", cause, saga.id, saga.status.value)
            return
        try:
            saga.abort(
                actor=self.actor(event), reason=self.reason(event), now=now, message_id=cause
            )
        except InvalidTransitionError as exc:
            logger.info("%s: saga %s not aborted: %s", cause, saga.id, exc)


# The four outcomes a ``ReplyReaction`` declares, named as a reader says them:
# ``CompleteStep(event, saga_type, step, *, key=..., result=..., when=...)``,
# ``FailStep(..., error=...)``, ``CompleteCompensation`` and ``FailCompensation``.

#: Upstream ``event`` (if ``when(event)``) means step ``step``'s action succeeded.
CompleteStep = partial(ReplyReaction, kind=CommandKind.ACTION, succeeded=True)
#: Upstream ``event`` (if ``when(event)``) means step ``step``'s action failed.
FailStep = partial(ReplyReaction, kind=CommandKind.ACTION, succeeded=False)
#: Upstream ``event`` (if ``when(event)``) means step ``step``'s compensation succeeded.
CompleteCompensation = partial(ReplyReaction, kind=CommandKind.COMPENSATION, succeeded=True)
#: Upstream ``event`` (if ``when(event)``) means step ``step``'s compensation failed.
FailCompensation = partial(ReplyReaction, kind=CommandKind.COMPENSATION, succeeded=False)

Reaction = StartSaga | ReplyReaction | AbortSaga
