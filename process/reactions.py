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
eventsourcing's tracking record of the upstream position.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID, uuid5

from sagalog.domain import CommandKind

#: Namespace of the saga ids derived from business keys.
SAGA_ID_NAMESPACE = UUID("6f1c7a52-3d1e-4c1b-9a57-0b5e2f4d8c11")


def saga_id_for(saga_type: str, key: object) -> UUID:
    """The deterministic saga id of ``saga_type`` for business key ``key`` (e.g. an order id)."""
    return uuid5(SAGA_ID_NAMESPACE, f"{saga_type}\x1f{key}")


def _originator(event: Any) -> object:
    return event.originator_id


def _no_result(_event: Any) -> Any:
    return None


def event_message_id(event: Any) -> str:
    """A stable id of an upstream event, used as the causation id of what it caused."""
    topic = f"{type(event).__module__}:{type(event).__qualname__}"
    return f"{topic}@{event.originator_id}/{event.originator_version}"


@dataclass(frozen=True)
class StartSaga:
    """Upstream event ``event`` starts a saga of ``saga_type`` with ``data(event)``."""

    event: type[Any]
    saga_type: str
    data: Callable[[Any], dict[str, Any]]
    key: Callable[[Any], object] = field(default=_originator)

    def saga_id(self, event: Any) -> UUID:
        """The id of the saga this event starts."""
        return saga_id_for(self.saga_type, self.key(event))


@dataclass(frozen=True)
class ReplyReaction:
    """Upstream event ``event`` is the outcome of a step's action or compensation."""

    event: type[Any]
    saga_type: str
    step: str
    kind: CommandKind
    succeeded: bool
    key: Callable[[Any], object] = field(default=_originator)
    result: Callable[[Any], Any] = field(default=_no_result)
    error: Callable[[Any], str] = field(default=lambda e: type(e).__name__)

    def saga_id(self, event: Any) -> UUID:
        """The id of the saga this event is about."""
        return saga_id_for(self.saga_type, self.key(event))


def CompleteStep(  # noqa: N802 - reads as a declaration
    event: type[Any],
    saga_type: str,
    step: str,
    *,
    key: Callable[[Any], object] = _originator,
    result: Callable[[Any], Any] = _no_result,
) -> ReplyReaction:
    """Upstream ``event`` means step ``step``'s action succeeded, with ``result(event)``."""
    return ReplyReaction(event, saga_type, step, CommandKind.ACTION, True, key=key, result=result)


def FailStep(  # noqa: N802
    event: type[Any],
    saga_type: str,
    step: str,
    *,
    key: Callable[[Any], object] = _originator,
    error: Callable[[Any], str] = lambda e: type(e).__name__,
) -> ReplyReaction:
    """Upstream ``event`` means step ``step``'s action failed, because ``error(event)``."""
    return ReplyReaction(event, saga_type, step, CommandKind.ACTION, False, key=key, error=error)


def CompleteCompensation(  # noqa: N802
    event: type[Any], saga_type: str, step: str, *, key: Callable[[Any], object] = _originator
) -> ReplyReaction:
    """Upstream ``event`` means step ``step``'s compensation succeeded."""
    return ReplyReaction(event, saga_type, step, CommandKind.COMPENSATION, True, key=key)


def FailCompensation(  # noqa: N802
    event: type[Any],
    saga_type: str,
    step: str,
    *,
    key: Callable[[Any], object] = _originator,
    error: Callable[[Any], str] = lambda e: type(e).__name__,
) -> ReplyReaction:
    """Upstream ``event`` means step ``step``'s compensation failed."""
    return ReplyReaction(
        event, saga_type, step, CommandKind.COMPENSATION, False, key=key, error=error
    )


Reaction = StartSaga | ReplyReaction
