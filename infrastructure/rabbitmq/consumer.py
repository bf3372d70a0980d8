"""Consuming a queue: the loop shared by the reply consumer, participants and event subscribers.

:class:`ConsumerLoop` takes what the broker delivered a batch at a time (in delivery
order, up to its prefetch window), hands it to a subclass that acks each message (or
dead-letters, then acks it), and reconnects with exponential backoff when the
connection is lost; unacked messages go back to the head of their queue.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pika.adapters.blocking_connection import BlockingChannel, BlockingConnection
from pika.spec import Basic, BasicProperties

from sagalog.domain.errors import first_line
from sagalog.infrastructure.messaging.signing import SignatureError, service_of
from sagalog.infrastructure.messaging.transport import TransportError
from sagalog.infrastructure.rabbitmq.dead_letters import publish_dead_letter
from sagalog.infrastructure.rabbitmq.topology import (
    BROKER_ERRORS,
    Topology,
    close_quietly,
    connect,
    rabbitmq_url,
)
from sagalog.process.store.loops import Backoff

logger = logging.getLogger("sagalog.rabbitmq")


@dataclass
class ReceivedMessage:
    """One message received from a queue, with what is needed to ack it."""

    channel: BlockingChannel
    method: Basic.Deliver
    properties: BasicProperties
    body: bytes

    @property
    def redelivered(self) -> bool:
        """Whether the broker delivered this message before (to a consumer that did not ack)."""
        return bool(self.method.redelivered)

    @property
    def headers(self) -> dict[str, Any]:
        """The application headers (empty if none)."""
        return dict(self.properties.headers or {})

    def ack(self, *, multiple: bool = False) -> None:
        """Acknowledge: the broker forgets the message (with ``multiple``, every
        unacked message of this channel delivered up to and including this one)."""
        self.channel.basic_ack(self.method.delivery_tag or 0, multiple=multiple)


class ConsumerLoop:
    """Consume one queue, a batch of messages at a time, reconnecting with backoff.

    Subclasses set up the topology in :meth:`declare` (returning the queue) and
    handle what arrives in :meth:`on_batch` — by default each message in turn by
    :meth:`on_message` — which must ack (or dead-letter and ack) every message
    before returning. A batch is what the broker has delivered, in delivery
    order: up to ``prefetch`` messages (the broker sends no more while that many
    are unacked), waiting at most ``batch_wait`` seconds after the first for the
    rest. The default, ``prefetch`` 1, is one message at a time.

    An exception that escapes ``on_batch`` leaves its messages unacked: a broker
    error reconnects (and the messages are redelivered), anything else stops the
    loop and closes the connection, so the broker redelivers the messages to the
    next consumer.
    """

    #: The most messages delivered and not yet acked, i.e. the largest batch.
    prefetch: int = 1
    #: How long to wait for more messages after the first of a batch (seconds).
    batch_wait: float = 0.0
    #: The most bytes of message bodies in one batch (a batch holds at least one).
    max_batch_bytes: int | None = None
    #: ``"command"``: with a topology that has signing keys, each message must be a
    #: command signed by the service of its routing key (its command name); others are
    #: dead-lettered to the commands' dead-letter queue before ``on_batch`` sees them.
    signed_kind: str | None = None

    def __init__(
        self,
        url: str | None,
        topology: Topology,
        *,
        connection_name: str,
        initial_backoff: float = 0.1,
        max_backoff: float = 5.0,
        poll_interval: float = 0.2,
    ) -> None:
        self.url = rabbitmq_url(url)
        self.topology = topology
        self.connection_name = connection_name
        self.initial_backoff = initial_backoff
        self.max_backoff = max_backoff
        self.poll_interval = poll_interval
        self.reconnects = 0
        #: Commands dead-lettered because their signature failed (see ``signed_kind``).
        self.signatures_refused = 0
        self.ready = threading.Event()
        #: The queues consumed now (empty while disconnected).
        self.consuming: tuple[str, ...] = ()
        self._stop = threading.Event()
        self._connection: BlockingConnection | None = None

    def declare(self, channel: BlockingChannel) -> str:
        """Declare what this consumer needs; return the queue to consume."""
        raise NotImplementedError

    def queues(self, declared: str) -> Sequence[str]:
        """The queues to consume now (checked every ``poll_interval``): ``declared`` alone.

        A subclass that consumes several (the reply partitions this worker holds) says
        which; a queue that leaves the list is cancelled, and the messages already
        delivered from it are still handled and acked here.
        """
        return [declared]

    def on_message(self, delivery: ReceivedMessage) -> None:
        """Handle one message; ack it (or dead-letter and ack it) when done."""
        raise NotImplementedError

    def on_batch(self, deliveries: Sequence[ReceivedMessage]) -> None:
        """Handle the messages of one batch, in delivery order, and ack them all.

        By default each goes to :meth:`on_message`; a stop request leaves the
        rest of the batch unacked, for the broker to deliver again.
        """
        for delivery in deliveries:
            self.on_message(delivery)
            if self._stop.is_set():
                return

    def stop(self) -> None:
        """Ask :meth:`run` to return after the message in hand."""
        self._stop.set()

    @property
    def stopping(self) -> bool:
        """Whether :meth:`stop` was called (or the ``stop`` event given to run is set)."""
        return self._stop.is_set()

    def wait(self, seconds: float) -> bool:
        """Sleep up to ``seconds`` unless stopped; True if stopped meanwhile.

        While consuming, the connection is serviced meanwhile (heartbeats, and
        deliveries kept for the next batch), so a long pause does not lose it.
        """
        connection = self._connection
        if connection is None or not connection.is_open:
            return self._stop.wait(seconds)
        deadline = time.monotonic() + seconds
        while not self._stop.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            connection.process_data_events(time_limit=min(remaining, self.poll_interval))
        return True

    def run(self, stop: threading.Event | None = None) -> None:
        """Consume until ``stop`` is set (or :meth:`stop` called), reconnecting as needed."""
        if stop is not None:
            self._stop = stop
        # Not ``run_until_stopped``: a failed connect and a lost connection are told
        # apart (logged differently, only the latter counted), by where they happen.
        backoff = Backoff(self.initial_backoff, self.max_backoff)
        while not self._stop.is_set():
            try:
                connection = connect(self.url, name=self.connection_name)
            except TransportError as exc:
                delay = backoff.next()
                logger.warning("%s: %s; retrying in %.2fs", self.connection_name, exc, delay)
                self._stop.wait(delay)
                continue
            try:
                self._consume(connection)
                backoff.reset()
            except BROKER_ERRORS as exc:
                self.ready.clear()
                self.reconnects += 1
                delay = backoff.next()
                logger.warning(
                    "%s: connection lost (%s); reconnecting in %.2fs",
                    self.connection_name,
                    first_line(exc, named=True),
                    delay,
                )
                self._stop.wait(delay)
            finally:
                self.ready.clear()
                close_quietly(connection)

    def _consume(self, connection: BlockingConnection) -> None:
        channel = connection.channel()
        channel.confirm_delivery()
        queue = self.declare(channel)
        channel.basic_qos(prefetch_count=self.prefetch)
        received: deque[ReceivedMessage] = deque()

        def receive(
            ch: BlockingChannel, method: Basic.Deliver, properties: BasicProperties, body: bytes
        ) -> None:
            received.append(ReceivedMessage(ch, method, properties, body))

        tags: dict[str, str] = {}

        def subscribe() -> None:
            """Consume the queues wanted now; cancel the others (their held messages stay ours)."""
            wanted = list(self.queues(queue))
            for name in [name for name in tags if name not in wanted]:
                channel.basic_cancel(tags.pop(name))
            for name in wanted:
                if name not in tags:
                    tags[name] = channel.basic_consume(name, receive)
            self.consuming = tuple(tags)

        subscribe()
        self._connection = connection
        self.ready.set()
        next_check = time.monotonic() + self.poll_interval
        try:
            while not self._stop.is_set():
                if time.monotonic() >= next_check:
                    subscribe()
                    next_check = time.monotonic() + self.poll_interval
                if not received:
                    connection.process_data_events(time_limit=self.poll_interval)
                    continue
                # What the broker has delivered, topped up for at most batch_wait.
                deadline = time.monotonic() + self.batch_wait
                while len(received) < self.prefetch:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    connection.process_data_events(time_limit=remaining)
                batch = self._signed_only(self._take_batch(received))
                if batch:
                    self.on_batch(batch)
            # Deliveries still held go back to the queue with the connection.
            for tag in tags.values():
                channel.basic_cancel(tag)
        finally:
            self._connection = None
            self.consuming = ()

    def _signed_only(self, batch: list[ReceivedMessage]) -> list[ReceivedMessage]:
        """``batch`` without the commands whose signature fails (dead-lettered, acked)."""
        signing = self.topology.signing
        if signing is None or self.signed_kind != "command":
            return batch
        kept: list[ReceivedMessage] = []
        for delivery in batch:
            try:
                signing.verify(
                    "command",
                    delivery.headers,
                    delivery.properties.message_id,
                    delivery.body,
                    service=service_of(delivery.method.routing_key or ""),
                )
            except SignatureError as exc:
                self.dead_letter(
                    delivery, self.topology.commands_dead_letter_queue, str(exc), error=exc
                )
                self.signatures_refused += 1
                logger.error("command %s dead-lettered: %s", delivery.properties.message_id, exc)
                continue
            kept.append(delivery)
        return kept

    def _take_batch(self, received: deque[ReceivedMessage]) -> list[ReceivedMessage]:
        """The next batch: up to ``prefetch`` messages and ``max_batch_bytes`` of bodies."""
        batch = [received.popleft()]
        size = len(batch[0].body)
        limit = self.max_batch_bytes
        while received and len(batch) < self.prefetch:
            if limit is not None and size + len(received[0].body) > limit:
                break
            size += len(received[0].body)
            batch.append(received.popleft())
        return batch

    def dead_letter(
        self,
        delivery: ReceivedMessage,
        queue: str,
        reason: str,
        *,
        error: BaseException | None = None,
        attempts: int = 1,
        ack: bool = True,
        max_body: int | None = None,
    ) -> None:
        """Publish ``delivery`` to dead-letter ``queue`` with ``reason`` (confirmed), then ack.

        With ``ack=False`` the caller acks (e.g. a whole batch at once, afterwards);
        ``max_body`` cuts a longer body (see :func:`publish_dead_letter`).
        """
        publish_dead_letter(
            delivery.channel,
            queue,
            delivery.properties,
            delivery.body,
            origin=delivery.method.routing_key or "",
            reason=reason,
            error=error,
            attempts=attempts,
            max_body=max_body,
        )
        if ack:
            delivery.ack()
