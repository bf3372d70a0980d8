"""Choreographed sagas: services react to each other's events, and a tracker watches.

In an *orchestrated* saga the ``SagaManager`` sends each command and waits for its
reply. In a *choreographed* one nobody is in charge: each service reacts to the
events of the others and publishes its own::

    OrderCreated ─inventory─► InventoryReserved ─payment─► PaymentProcessed
                 ─shipping─► ShipmentCreated                       (the saga completed)
    PaymentFailed ─inventory─► InventoryReleased                   (compensated)
    ShipmentFailed ─payment─► PaymentRefunded ─inventory─► InventoryReleased

This module gives the wiring for that — :class:`EventMessage` (correlation id = the
saga's id, causation id = the event reacted to), :class:`ChoreographedService`
(handlers ``event → events``, idempotent by event id), :class:`InProcessEventBus` —
the RabbitMQ bus is in :mod:`sagalog.infrastructure.rabbitmq.events` — and a
:class:`ChoreographyTracker`.

The tracker makes a choreography *visible like an orchestrated saga*. A
:class:`Choreography` says which event starts it and, for each step, which event
means the step completed, failed or was compensated. The tracker turns each event
it observes into the matching ``SagaManager`` call — ``start``, ``handle_step_completed``,
``handle_step_failed``, ``handle_compensation_completed`` — with the event id as the
message id, so the choreography is recorded as a saga in its own right: the same
states and events, the same projections, stuck query, metrics, logs and ``sagalog
show``. The ``StepDispatched`` / ``CompensationDispatched`` it records mean "the
choreography now waits for this step's event"; they carry ``await:<event>``
pseudo-commands that no relay should send (give the tracker's manager no relay).
The tracker only *observes*: its definitions have no timeouts and a compensation
failure dead-letters at once (a choreography has nobody to retry it; a person must).
An event the tracked saga cannot place (out of the order the choreography
declares) is reported, not applied.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from sagalog.domain import (
    InvalidPayloadError,
    InvalidTransitionError,
    Outcome,
    ReplyOutcome,
    RetryPolicy,
    SagaDefinition,
    SagalogError,
    SagaNotFoundError,
    Step,
    UnexpectedReplyError,
    UnknownStepError,
)
from sagalog.infrastructure.services.fencing import (
    InMemoryProcessedCommands,
    ProcessedCommandStore,
)
from sagalog.process import SagaManager

logger = logging.getLogger("sagalog.choreography")

#: Prefix of the pseudo-commands a tracked saga "dispatches": it awaits that event.
AWAIT_PREFIX = "await:"


class InvalidEventError(SagalogError, ValueError):
    """An event message that cannot be read."""


@dataclass(frozen=True)
class EventMessage:
    """A domain event one service publishes for others: ``OrderCreated``, ``PaymentFailed``…

    ``correlation_id`` ties every event of one business transaction together (it is
    the tracked saga's id); ``causation_id`` is the id of the event reacted to.
    """

    name: str
    correlation_id: UUID
    data: Mapping[str, Any] = field(default_factory=dict)
    event_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    causation_id: str | None = None
    source: str | None = None
    occurred_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    def caused(
        self, name: str, data: Mapping[str, Any] | None = None, *, source: str | None = None
    ) -> EventMessage:
        """A new event caused by this one (same correlation; causation = this event).

        Its id is derived from this event's id and its name, so reacting to the same
        event twice yields the same event id — downstream drops the copy.
        """
        return EventMessage(
            name=name,
            correlation_id=self.correlation_id,
            data=dict(data or {}),
            event_id=str(uuid.uuid5(uuid.UUID(int=0), f"{self.event_id}\x1f{name}")),
            causation_id=self.event_id,
            source=source,
        )

    def to_json(self) -> str:
        """The event as JSON."""
        return json.dumps(
            {
                "name": self.name,
                "event_id": self.event_id,
                "correlation_id": str(self.correlation_id),
                "causation_id": self.causation_id,
                "source": self.source,
                "occurred_at": self.occurred_at.isoformat(),
                "data": dict(self.data),
            },
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, text: str | bytes) -> EventMessage:
        """Read an event made by :meth:`to_json`; :class:`InvalidEventError` if unreadable."""
        try:
            raw = json.loads(text)
            return cls(
                name=str(raw["name"]),
                correlation_id=UUID(str(raw["correlation_id"])),
                data=dict(raw.get("data") or {}),
                event_id=str(raw["event_id"]),
                causation_id=raw.get("causation_id"),
                source=raw.get("source"),
                occurred_at=datetime.fromisoformat(raw["occurred_at"]),
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise InvalidEventError(f"unreadable event: {type(exc).__name__}: {exc}") from None


Reaction = Callable[[EventMessage], Iterable[EventMessage] | EventMessage | None]


class ChoreographedService:
    """A service in a choreography: reactions from event names to the events they cause.

    ``react(event)`` runs the reaction once per event id — the events it caused
    are remembered in ``store`` and returned again for a redelivered event, so a
    bus can re-publish them (downstream drops the copies by their derived ids).
    """

    def __init__(self, name: str, *, store: ProcessedCommandStore | None = None) -> None:
        self.name = name
        self.reactions: dict[str, Reaction] = {}
        self.store: ProcessedCommandStore = (
            store if store is not None else InMemoryProcessedCommands()
        )
        self.reacted = 0
        self.duplicates = 0

    def on(self, event_name: str) -> Callable[[Reaction], Reaction]:
        """Decorator: react to events named ``event_name``."""

        def register(reaction: Reaction) -> Reaction:
            self.reactions[event_name] = reaction
            return reaction

        return register

    @property
    def event_names(self) -> list[str]:
        """The events this service reacts to."""
        return sorted(self.reactions)

    def react(self, event: EventMessage) -> list[EventMessage]:
        """The events ``event`` causes (remembered: a repeat gives the same answer)."""
        key = uuid.uuid5(uuid.UUID(int=0), f"{self.name}\x1f{event.event_id}")
        known = self.store.get(key)
        if known is not None:
            self.duplicates += 1
            return [EventMessage.from_json(text) for text in json.loads(known)]
        reaction = self.reactions.get(event.name)
        produced = reaction(event) if reaction is not None else None
        if produced is None:
            caused: list[EventMessage] = []
        elif isinstance(produced, EventMessage):
            caused = [produced]
        else:
            caused = list(produced)
        caused = [e if e.source else _with_source(e, self.name) for e in caused]
        self.store.put(key, json.dumps([e.to_json() for e in caused]))
        self.reacted += 1
        return caused


def _with_source(event: EventMessage, source: str) -> EventMessage:
    return EventMessage(
        name=event.name,
        correlation_id=event.correlation_id,
        data=event.data,
        event_id=event.event_id,
        causation_id=event.causation_id,
        source=source,
        occurred_at=event.occurred_at,
    )


# -- the tracker --------------------------------------------------------------------------


@dataclass(frozen=True)
class ChoreographyStep:
    """One step of a choreography and the events that tell how it went."""

    name: str
    completed_by: str
    failed_by: str | None = None
    compensated_by: str | None = None
    compensation_failed_by: str | None = None


@dataclass(frozen=True)
class Choreography:
    """Which event starts a choreography and which events move each of its steps."""

    name: str
    started_by: str
    steps: Sequence[ChoreographyStep]
    version: int = 1

    def definition(self) -> SagaDefinition:
        """The saga definition the tracker records this choreography under."""
        return SagaDefinition(
            self.name,
            [
                Step(
                    name=step.name,
                    action=f"{AWAIT_PREFIX}{step.completed_by}",
                    compensation=(
                        f"{AWAIT_PREFIX}{step.compensated_by}" if step.compensated_by else None
                    ),
                    compensation_retry=RetryPolicy(max_attempts=1),
                )
                for step in self.steps
            ],
            self.version,
        )

    def routes(self) -> dict[str, tuple[str, str | None]]:
        """Event name → (what it means, which step): ``start``, ``completed``, …"""
        table: dict[str, tuple[str, str | None]] = {self.started_by: ("start", None)}
        for step in self.steps:
            table[step.completed_by] = ("completed", step.name)
            if step.failed_by:
                table[step.failed_by] = ("failed", step.name)
            if step.compensated_by:
                table[step.compensated_by] = ("compensated", step.name)
            if step.compensation_failed_by:
                table[step.compensation_failed_by] = ("compensation_failed", step.name)
        return table


#: Errors that mean "this event cannot be placed in the tracked saga".
UNPLACEABLE = (
    UnexpectedReplyError,
    UnknownStepError,
    SagaNotFoundError,
    InvalidTransitionError,
    InvalidPayloadError,
)


@dataclass
class TrackedEvent:
    """What the tracker did with one event."""

    event: EventMessage
    choreography: str | None
    outcome: ReplyOutcome | None
    problem: str | None = None


class ChoreographyTracker:
    """Records each observed choreography as a saga in ``manager`` (see the module doc)."""

    def __init__(self, manager: SagaManager, choreographies: Iterable[Choreography]) -> None:
        self.manager = manager
        self.choreographies = list(choreographies)
        self._routes: dict[str, list[tuple[Choreography, str, str | None]]] = {}
        for choreography in self.choreographies:
            for name, (meaning, step) in choreography.routes().items():
                self._routes.setdefault(name, []).append((choreography, meaning, step))
        self.unplaced: list[TrackedEvent] = []

    @staticmethod
    def definitions(choreographies: Iterable[Choreography]) -> list[SagaDefinition]:
        """The definitions to give the tracker's ``SagaManager``."""
        return [c.definition() for c in choreographies]

    @property
    def event_names(self) -> list[str]:
        """Every event name the tracker needs to see."""
        return sorted(self._routes)

    def observe(self, event: EventMessage) -> list[TrackedEvent]:
        """Apply ``event`` to the saga(s) it belongs to; report what happened."""
        done: list[TrackedEvent] = []
        for choreography, meaning, step in self._routes.get(event.name, ()):
            saga_id = event.correlation_id
            try:
                outcome = self._apply(choreography, meaning, step, event, saga_id)
            except UNPLACEABLE as exc:
                tracked = TrackedEvent(
                    event, choreography.name, None, f"{type(exc).__name__}: {exc}"
                )
                self.unplaced.append(tracked)
                logger.warning(
                    "event %s (%s) does not fit choreography %s: %s",
                    event.event_id,
                    event.name,
                    choreography.name,
                    tracked.problem,
                    extra={
                        "correlation_id": str(saga_id),
                        "saga_type": choreography.name,
                        "step": step,
                        "causation_id": event.event_id,
                    },
                )
                done.append(tracked)
                continue
            if outcome is not None and outcome.outcome is Outcome.STALE:
                self.unplaced.append(
                    TrackedEvent(event, choreography.name, outcome, outcome.reason)
                )
            done.append(TrackedEvent(event, choreography.name, outcome))
        return done

    def _apply(
        self,
        choreography: Choreography,
        meaning: str,
        step: str | None,
        event: EventMessage,
        saga_id: UUID,
    ) -> ReplyOutcome | None:
        m = self.manager
        if meaning == "start":
            m.start(choreography.name, dict(event.data), saga_id=saga_id, message_id=event.event_id)
            return None
        assert step is not None
        if meaning == "completed":
            return m.handle_step_completed(
                saga_id, step, dict(event.data) or None, message_id=event.event_id
            )
        if meaning == "failed":
            reason = str(event.data.get("reason") or event.name)
            return m.handle_step_failed(saga_id, step, reason, message_id=event.event_id)
        if meaning == "compensated":
            return m.handle_compensation_completed(saga_id, step, message_id=event.event_id)
        reason = str(event.data.get("reason") or event.name)
        return m.handle_compensation_failed(saga_id, step, reason, message_id=event.event_id)


# -- buses ----------------------------------------------------------------------------------


Subscriber = Callable[[EventMessage], Iterable[EventMessage] | None]


class InProcessEventBus:
    """Events fanned out in memory to every subscriber of their name, in publish order.

    Like a broker with one queue per subscriber: ``publish`` only queues, and
    :meth:`deliver` hands events out; what a subscriber returns is published next.
    """

    def __init__(self) -> None:
        self._subscribers: list[tuple[str, frozenset[str] | None, Subscriber]] = []
        self._queue: deque[EventMessage] = deque()
        self.published: list[EventMessage] = []

    def subscribe(self, name: str, events: Iterable[str] | None, subscriber: Subscriber) -> None:
        """Deliver events named in ``events`` (None: all) to ``subscriber``."""
        self._subscribers.append((name, None if events is None else frozenset(events), subscriber))

    def attach(self, service: ChoreographedService) -> None:
        """Subscribe ``service`` to the events it reacts to."""
        self.subscribe(service.name, service.event_names, service.react)

    def attach_tracker(self, tracker: ChoreographyTracker) -> None:
        """Let ``tracker`` observe every event it knows."""

        def observe(event: EventMessage) -> None:
            tracker.observe(event)

        self.subscribe("tracker", tracker.event_names, observe)

    def publish(self, event: EventMessage) -> None:
        """Queue ``event`` for every subscriber."""
        self._queue.append(event)
        self.published.append(event)

    def deliver(self, limit: int = 100_000) -> int:
        """Deliver queued events (and those they cause) until none is left; return how many."""
        delivered = 0
        while self._queue and delivered < limit:
            event = self._queue.popleft()
            for _name, names, subscriber in self._subscribers:
                if names is None or event.name in names:
                    for caused in subscriber(event) or ():
                        self.publish(caused)
            delivered += 1
        return delivered


# -- the example: order fulfillment, choreographed ----------------------------------------

ORDER_CHOREOGRAPHY = Choreography(
    "OrderChoreography",
    started_by="OrderCreated",
    steps=[
        ChoreographyStep(
            "reserve_inventory",
            completed_by="InventoryReserved",
            failed_by="InventoryReservationFailed",
            compensated_by="InventoryReleased",
        ),
        ChoreographyStep(
            "process_payment",
            completed_by="PaymentProcessed",
            failed_by="PaymentFailed",
            compensated_by="PaymentRefunded",
        ),
        ChoreographyStep(
            "create_shipment",
            completed_by="ShipmentCreated",
            failed_by="ShipmentFailed",
        ),
    ],
)


def order_services(
    *,
    payment_fails: Callable[[EventMessage], bool] = lambda event: False,
    shipment_fails: Callable[[EventMessage], bool] = lambda event: False,
    stores: Mapping[str, ProcessedCommandStore] | None = None,
) -> list[ChoreographedService]:
    """The example's three services: inventory, payment, shipping.

    Compensation runs newest first by causation: a failed shipment makes payment
    refund, and the refund (or a failed payment) makes inventory release.
    """
    stores = stores or {}
    inventory = ChoreographedService("inventory", store=stores.get("inventory"))
    payment = ChoreographedService("payment", store=stores.get("payment"))
    shipping = ChoreographedService("shipping", store=stores.get("shipping"))

    @inventory.on("OrderCreated")
    def reserve(event: EventMessage) -> EventMessage:
        return event.caused("InventoryReserved", {"reservation": f"r-{event.correlation_id}"})

    @inventory.on("PaymentFailed")
    @inventory.on("PaymentRefunded")
    def release(event: EventMessage) -> EventMessage:
        return event.caused("InventoryReleased")

    @payment.on("InventoryReserved")
    def charge(event: EventMessage) -> EventMessage:
        if payment_fails(event):
            return event.caused("PaymentFailed", {"reason": "card declined"})
        return event.caused("PaymentProcessed", {"charged": True})

    @payment.on("ShipmentFailed")
    def refund(event: EventMessage) -> EventMessage:
        return event.caused("PaymentRefunded")

    @shipping.on("PaymentProcessed")
    def ship(event: EventMessage) -> EventMessage:
        if shipment_fails(event):
            return event.caused("ShipmentFailed", {"reason": "no courier"})
        return event.caused("ShipmentCreated", {"tracking": f"t-{event.correlation_id}"})

    return [inventory, payment, shipping]


def order_created(order: Mapping[str, Any], *, order_id: UUID | None = None) -> EventMessage:
    """The event that starts the example choreography (its id is the saga's id)."""
    return EventMessage("OrderCreated", order_id or uuid.uuid4(), dict(order), source="shop")
