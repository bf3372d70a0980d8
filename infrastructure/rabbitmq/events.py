"""Choreography events over RabbitMQ: a topic exchange ``<prefix>.events``, a queue per subscriber.

:class:`RabbitMQEventBus` publishes with confirms (an event nobody subscribes to is
refused, not lost); :class:`RabbitMQEventSubscriber` runs a service's reactions, or the
tracker, on its own durable queue and publishes the events caused before it acks. The
services, the tracker and the in-process bus are in
:mod:`sagalog.infrastructure.services.choreography`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import pika
import pika.exceptions
from pika.adapters.blocking_connection import BlockingChannel, BlockingConnection
from pika.spec import BasicProperties

from sagalog.infrastructure.messaging.transport import TransportError
from sagalog.infrastructure.rabbitmq.consumer import ConsumerLoop, ReceivedMessage
from sagalog.infrastructure.rabbitmq.topology import (
    BROKER_ERRORS,
    HEADER_CAUSATION_ID,
    HEADER_CORRELATION_ID,
    Topology,
    close_quietly,
    connect,
    rabbitmq_url,
)
from sagalog.infrastructure.services.choreography import (
    ChoreographedService,
    ChoreographyTracker,
    EventMessage,
    InvalidEventError,
    Subscriber,
)


def event_properties(event: EventMessage) -> BasicProperties:
    """AMQP properties of an event message: persistent, ids in properties and headers."""
    headers: dict[str, Any] = {HEADER_CORRELATION_ID: str(event.correlation_id)}
    if event.causation_id is not None:
        headers[HEADER_CAUSATION_ID] = event.causation_id
    return BasicProperties(
        content_type="application/json",
        delivery_mode=pika.DeliveryMode.Persistent,
        message_id=event.event_id,
        correlation_id=str(event.correlation_id),
        type=event.name,
        app_id=event.source,
        headers=headers,
    )


def events_exchange(topology: Topology) -> str:
    """The topic exchange choreography events travel on."""
    return f"{topology.prefix}.events"


def events_queue(topology: Topology, subscriber: str) -> str:
    """The durable queue of one subscriber of choreography events."""
    return f"{topology.prefix}.events.{subscriber}"


def publish_event(channel: BlockingChannel, topology: Topology, event: EventMessage) -> None:
    """Publish ``event`` (mandatory; confirmed when the channel is in confirm mode)."""
    channel.basic_publish(
        events_exchange(topology),
        event.name,
        event.to_json().encode(),
        event_properties(event),
        mandatory=True,
    )


class RabbitMQEventBus:
    """Publishes choreography events to RabbitMQ with confirms (one thread, one connection).

    An event no subscriber's queue is bound to is refused (``TransportError``)
    rather than lost; :meth:`publish` returns once the broker confirmed.
    """

    def __init__(self, url: str | None = None, *, topology: Topology | None = None) -> None:
        self.url = rabbitmq_url(url)
        self.topology = topology or Topology()
        self._connection: BlockingConnection | None = None
        self._channel: BlockingChannel | None = None

    def publish(self, event: EventMessage) -> None:
        """Publish ``event``; raise :class:`TransportError` unless the broker confirmed it."""
        for attempt in (1, 2):
            if self._channel is None or not self._channel.is_open:
                self.close()
                self._connection = connect(self.url, name="sagalog-events")
                self._channel = self._connection.channel()
                self._channel.confirm_delivery()
                self._channel.exchange_declare(
                    events_exchange(self.topology), "topic", durable=True
                )
            try:
                publish_event(self._channel, self.topology, event)
                return
            except pika.exceptions.UnroutableError:
                raise TransportError(f"nobody subscribes to event {event.name!r}") from None
            except BROKER_ERRORS as exc:
                self.close()
                if attempt == 2:
                    raise TransportError(f"cannot publish event {event.name}: {exc}") from None

    def close(self) -> None:
        """Close the connection."""
        if self._connection is not None:
            close_quietly(self._connection)
        self._connection = self._channel = None


class RabbitMQEventSubscriber(ConsumerLoop):
    """Consumes a subscriber's event queue; publishes what each event causes, then acks.

    Used for services (:meth:`for_service`) and for the tracker
    (:meth:`for_tracker`). An unreadable event goes to ``<prefix>.events.dead-letter``.
    """

    def __init__(
        self,
        name: str,
        event_names: Iterable[str],
        subscriber: Subscriber,
        url: str | None = None,
        *,
        topology: Topology | None = None,
        **loop_options: float,
    ) -> None:
        super().__init__(
            url, topology or Topology(), connection_name=f"sagalog-events-{name}", **loop_options
        )
        self.name = name
        self.event_names = list(event_names)
        self.subscriber = subscriber
        self.handled = 0
        self.dead_lettered = 0

    @classmethod
    def for_service(
        cls, service: ChoreographedService, url: str | None = None, **options: Any
    ) -> RabbitMQEventSubscriber:
        """Run ``service``'s reactions on its own queue."""
        return cls(service.name, service.event_names, service.react, url, **options)

    @classmethod
    def for_tracker(
        cls, tracker: ChoreographyTracker, url: str | None = None, **options: Any
    ) -> RabbitMQEventSubscriber:
        """Let ``tracker`` observe every event it knows, on a queue of its own."""

        def observe(event: EventMessage) -> None:
            tracker.observe(event)

        return cls("tracker", tracker.event_names, observe, url, **options)

    @property
    def dead_letter_queue(self) -> str:
        """Where unreadable events go."""
        return f"{self.topology.prefix}.events.dead-letter"

    def declare(self, channel: BlockingChannel) -> str:
        exchange = events_exchange(self.topology)
        channel.exchange_declare(exchange, "topic", durable=True)
        channel.queue_declare(self.dead_letter_queue, durable=True)
        queue = events_queue(self.topology, self.name)
        channel.queue_declare(queue, durable=True)
        for event_name in self.event_names:
            channel.queue_bind(queue, exchange, routing_key=event_name)
        return queue

    def on_message(self, delivery: ReceivedMessage) -> None:
        try:
            event = EventMessage.from_json(delivery.body)
        except InvalidEventError as exc:
            self.dead_letter(delivery, self.dead_letter_queue, str(exc), error=exc)
            self.dead_lettered += 1
            return
        for caused in self.subscriber(event) or ():
            publish_event(delivery.channel, self.topology, caused)
        delivery.ack()
        self.handled += 1


def delete_event_queues(
    channel: BlockingChannel, topology: Topology, subscribers: Iterable[str]
) -> None:
    """Delete the event queues of ``subscribers`` and the events exchange (teardown)."""
    for name in subscribers:
        channel.queue_delete(events_queue(topology, name))
    channel.queue_delete(f"{topology.prefix}.events.dead-letter")
    channel.exchange_delete(events_exchange(topology))
