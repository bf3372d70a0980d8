"""RabbitMQ: commands out with publisher confirms, replies in with ack-after-commit.

Built on ``pika`` (the RabbitMQ team's reference Python client: pure Python, no
C extension, maintained, with a blocking adapter that fits a relay thread and a
consumer thread without an event loop).

Topology (every name starts with the :class:`Topology` prefix, ``sagalog`` by
default; everything is durable and every message persistent)::

    relay ──► exchange <prefix>.commands (topic, routing key = command name)
                 │ bound by each participant with the command names it handles
                 ▼
              queue <prefix>.service.<service>  ──► Participant (infrastructure.participant)
                                                        │ reply, to the command's reply_to
              queue <prefix>.replies  ◄─────────────────┘   (default exchange)
                 │
                 ▼
              ReplyConsumer ──► SagaManager.handle_many(batch), then ack
                 │ invalid / keeps failing
                 ▼
              queue <prefix>.replies.dead-letter   (reason in the headers)

Guarantees:

* :meth:`RabbitMQTransport.send` returns only once the broker *confirmed* the
  persistent message (publisher confirms) and a queue took it (``mandatory``);
  otherwise it raises :class:`TransportError`, so the relay keeps its position
  and sends again later. Delivery is at least once; the command id is the
  message id, so participants drop duplicates.
* :class:`ReplyConsumer` takes the replies the broker has delivered (up to
  ``batch_size``, waiting at most ``batch_wait`` for more after the first), hands
  them to ``manager.handle_many`` — one transaction for the lot — and acks them
  only after it returned, i.e. after their transitions were committed. A
  consumer that dies before that, or whose database fails, leaves the replies
  unacked and the broker redelivers them; a reply handled twice is a duplicate
  the saga ignores (its ``message_id``).
* A reply that can never be valid (malformed, unknown saga or step, unexpected)
  or that keeps failing is *published to the dead-letter queue* with the reason
  in its headers, confirmed, and only then acked: never silently dropped. The
  consumer goes on with the rest of the batch.
* A batch is handled in delivery order (``handle_many`` decides a saga's replies
  one after another, in the order given), and a lost connection puts the unacked
  replies back at the head of their queue, so a consumer sees a saga's replies in
  order; reconnection backs off exponentially.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import wait as futures_wait
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

import pika
import pika.exceptions
from eventsourcing.persistence import PersistenceError, RecordConflictError
from pika.adapters.blocking_connection import BlockingChannel, BlockingConnection
from pika.spec import Basic, BasicProperties

from sagalog.domain import (
    Command,
    InvalidPayloadError,
    InvalidTransitionError,
    ReplyOutcome,
    SagaNotFoundError,
    UnexpectedReplyError,
    UnknownSagaTypeError,
    UnknownStepError,
)
from sagalog.domain.errors import first_line
from sagalog.infrastructure.messaging.bounds import (
    REPLY_BOUNDS,
    MessageBounds,
    MessageBoundsError,
    check_message_bounds,
)
from sagalog.infrastructure.messaging.signing import SignatureError, SigningKeys, service_of
from sagalog.infrastructure.messaging.transport import TransportError
from sagalog.process import DatabaseUnavailableError, InvalidReplyError, Reply, SagaManager
from sagalog.process.store.url import mask_password

logger = logging.getLogger("sagalog.rabbitmq")

T = TypeVar("T")

#: Where the broker is when nothing else is said (``SAGALOG_RABBITMQ_URL`` overrides it).
DEFAULT_RABBITMQ_URL = "amqp://guest:guest@127.0.0.1:5672/%2F"
RABBITMQ_URL_ENV_VAR = "SAGALOG_RABBITMQ_URL"

#: Message headers (AMQP application headers) that sagalog sets and reads.
HEADER_COMMAND_ID = "sagalog-command-id"
HEADER_CORRELATION_ID = "sagalog-correlation-id"
HEADER_CAUSATION_ID = "sagalog-causation-id"
HEADER_SAGA_TYPE = "sagalog-saga-type"
HEADER_STEP = "sagalog-step"
HEADER_KIND = "sagalog-kind"
HEADER_ATTEMPT = "sagalog-attempt"
HEADER_DEAD_LETTER_REASON = "sagalog-dead-letter-reason"
HEADER_DEAD_LETTER_ERROR = "sagalog-dead-letter-error"
HEADER_DEAD_LETTER_QUEUE = "sagalog-dead-letter-queue"
HEADER_DEAD_LETTER_ATTEMPTS = "sagalog-dead-letter-attempts"
HEADER_DEAD_LETTER_AT = "sagalog-dead-letter-at"
HEADER_DEAD_LETTER_TRUNCATED_FROM = "sagalog-dead-letter-truncated-from"

#: An oversized message is dead-lettered cut to this many bytes (enough to see what it was).
DEAD_LETTER_KEPT_BYTES = 64 * 1024

#: Exceptions from the broker connection that a reconnect may cure.
BROKER_ERRORS: tuple[type[BaseException], ...] = (pika.exceptions.AMQPError, OSError)

#: Reply errors that no retry can cure: the reply goes to the dead-letter queue at once.
INVALID_REPLY_ERRORS: tuple[type[BaseException], ...] = (
    InvalidReplyError,
    InvalidPayloadError,
    SagaNotFoundError,
    UnknownStepError,
    UnknownSagaTypeError,
    UnexpectedReplyError,
    InvalidTransitionError,
)

#: The database failing (down, locked, refusing writes): the replies stay unacked and
#: are handed over again after a backoff, however long it takes; never dead-lettered.
#: (A ``RecordConflictError`` is a conflict between writers, not one of these.)
DATABASE_ERRORS: tuple[type[BaseException], ...] = (PersistenceError, DatabaseUnavailableError)

#: The longest reason text put in a dead-letter header.
_MAX_REASON = 2000


def rabbitmq_url(url: str | None = None) -> str:
    """``url``, else ``SAGALOG_RABBITMQ_URL``, else the local default broker."""
    return url or os.environ.get(RABBITMQ_URL_ENV_VAR, "").strip() or DEFAULT_RABBITMQ_URL


def connect(
    url: str | None = None, *, name: str = "sagalog", heartbeat: int = 30
) -> BlockingConnection:
    """Open a blocking connection named ``name`` (shown by ``rabbitmqctl list_connections``).

    Raises :class:`TransportError` (one line, no password) if the broker is unreachable.
    """
    params = _url_parameters(rabbitmq_url(url))
    params.client_properties = {"connection_name": name}
    if "heartbeat=" not in rabbitmq_url(url):  # a heartbeat in the URL wins
        params.heartbeat = heartbeat
    params.blocked_connection_timeout = 30
    params.connection_attempts = 1
    params.socket_timeout = 5
    try:
        return pika.BlockingConnection(params)
    except BROKER_ERRORS as exc:
        where = f"{params.host}:{params.port}"
        raise TransportError(
            f"cannot reach RabbitMQ at {where}: {first_line(exc, named=True)}"
        ) from None


def check_rabbitmq_url(url: str | None) -> None:
    """Raise :class:`TransportError` (one line, no password) unless ``url`` is an AMQP URL."""
    _url_parameters(rabbitmq_url(url))


def _url_parameters(url: str) -> pika.URLParameters:
    """pika's parameters for ``url``; :class:`TransportError` naming the URL if it is not one."""
    scheme = url.partition("://")[0] if "://" in url else ""
    if scheme not in ("amqp", "amqps"):
        raise TransportError(
            f"not a RabbitMQ URL: {mask_password(url)!r} "
            "(expected amqp://user:password@host:port/vhost)"
        )
    try:
        return pika.URLParameters(url)
    except Exception as exc:
        raise TransportError(f"not a RabbitMQ URL: {first_line(exc, named=True)}") from None


#: Dead-letter queues keep at most this many messages by default (oldest dropped first).
DEFAULT_DEAD_LETTER_MAX_LENGTH = 100_000
#: ... and at most this many bytes of message bodies.
DEFAULT_DEAD_LETTER_MAX_BYTES = 1024 * 1024 * 1024
#: ... each for at most this long (milliseconds: 14 days).
DEFAULT_DEAD_LETTER_TTL_MS = 14 * 24 * 3600 * 1000

#: Queues whose bounded declaration the broker refused this process (warned once each).
_UNBOUNDED_WARNED: set[str] = set()


@dataclass(frozen=True)
class Topology:
    """The names of sagalog's exchange and queues, all under one ``prefix``.

    Two deployments (or two tests) with different prefixes share a broker without
    seeing each other's messages.

    The two dead-letter queues are bounded (RabbitMQ queue arguments
    ``x-max-length``, ``x-max-length-bytes`` and ``x-message-ttl``, with
    ``x-overflow: drop-head``: when full, the oldest letter goes): a flood of poison
    messages can never fill the broker's disk and block every publisher. ``None``
    leaves a bound off. RabbitMQ refuses to redeclare a queue with other arguments
    (``PRECONDITION_FAILED``), so a dead-letter queue declared before the bounds (or
    with other bounds) is kept as it is, with a warning saying how to bound it; see
    docs/poison-messages.md.

    With ``signing`` (:class:`~sagalog.infrastructure.messaging.signing.SigningKeys`), every
    part built on this topology signs what it sends and refuses what is unsigned or
    wrongly signed: the relay's commands, participants' commands and replies, the
    reply consumer's replies.
    """

    prefix: str = "sagalog"
    dead_letter_max_length: int | None = DEFAULT_DEAD_LETTER_MAX_LENGTH
    dead_letter_max_bytes: int | None = DEFAULT_DEAD_LETTER_MAX_BYTES
    dead_letter_ttl_ms: int | None = DEFAULT_DEAD_LETTER_TTL_MS
    #: With keys, commands and replies are signed and verified (see ``signing``).
    signing: SigningKeys | None = field(default=None, compare=False, repr=False)

    @property
    def dead_letter_queues(self) -> tuple[str, str]:
        """The replies' and the commands' dead-letter queues."""
        return (self.replies_dead_letter_queue, self.commands_dead_letter_queue)

    def dead_letter_arguments(self) -> dict[str, Any]:
        """The queue arguments that bound a dead-letter queue."""
        arguments: dict[str, Any] = {}
        if self.dead_letter_max_length is not None:
            arguments["x-max-length"] = self.dead_letter_max_length
        if self.dead_letter_max_bytes is not None:
            arguments["x-max-length-bytes"] = self.dead_letter_max_bytes
        if self.dead_letter_ttl_ms is not None:
            arguments["x-message-ttl"] = self.dead_letter_ttl_ms
        if arguments:
            arguments["x-overflow"] = "drop-head"
        return arguments

    def _declare_dead_letter_queue(self, channel: BlockingChannel, queue: str) -> None:
        """Declare ``queue`` bounded; keep an existing queue with other arguments, warning.

        The bounded declaration is tried on a channel of its own, because the
        broker closes the channel that asks for arguments an existing queue lacks.
        """
        probe = channel.connection.channel()
        try:
            probe.queue_declare(queue, durable=True, arguments=self.dead_letter_arguments())
        except pika.exceptions.ChannelClosedByBroker as exc:
            if exc.reply_code != 406:  # PRECONDITION_FAILED: declared with other arguments
                raise
            if queue not in _UNBOUNDED_WARNED:
                _UNBOUNDED_WARNED.add(queue)
                logger.warning(
                    "dead-letter queue %s exists with other arguments than the bounds "
                    "configured (%s), so it is kept as it is and may be unbounded; to bound "
                    "it, save its letters (sagalog dead-letters list --json), delete it "
                    "(sagalog dead-letters purge --delete-queue) and restart",
                    queue,
                    self.dead_letter_arguments(),
                )
        else:
            probe.close()

    @property
    def commands_exchange(self) -> str:
        """Topic exchange the relay publishes commands to, routed by command name."""
        return f"{self.prefix}.commands"

    @property
    def replies_queue(self) -> str:
        """Queue participants answer to (through the default exchange)."""
        return f"{self.prefix}.replies"

    @property
    def replies_dead_letter_queue(self) -> str:
        """Where replies that can never be applied wait for a person."""
        return f"{self.prefix}.replies.dead-letter"

    @property
    def commands_dead_letter_queue(self) -> str:
        """Where commands a participant could not read or handle wait for a person."""
        return f"{self.prefix}.commands.dead-letter"

    def service_queue(self, service: str) -> str:
        """The queue of participant ``service``, bound to the command names it handles."""
        return f"{self.prefix}.service.{service}"

    def declare(self, channel: BlockingChannel) -> None:
        """Declare the exchange and the manager-side queues (idempotent)."""
        channel.exchange_declare(self.commands_exchange, "topic", durable=True)
        channel.queue_declare(self.replies_queue, durable=True)
        for queue in self.dead_letter_queues:
            self._declare_dead_letter_queue(channel, queue)

    def declare_service(
        self, channel: BlockingChannel, service: str, command_names: Iterable[str]
    ) -> str:
        """Declare ``service``'s queue, bound to ``command_names``; return its name."""
        self.declare(channel)
        queue = self.service_queue(service)
        channel.queue_declare(queue, durable=True)
        for name in command_names:
            channel.queue_bind(queue, self.commands_exchange, routing_key=name)
        return queue

    def delete(self, channel: BlockingChannel, services: Iterable[str] = ()) -> None:
        """Delete every queue and the exchange (tests and teardown)."""
        for service in services:
            channel.queue_delete(self.service_queue(service))
        for queue in (
            self.replies_queue,
            self.replies_dead_letter_queue,
            self.commands_dead_letter_queue,
        ):
            channel.queue_delete(queue)
        channel.exchange_delete(self.commands_exchange)


# -- the command side ---------------------------------------------------------------


def command_properties(command: Command, reply_to: str) -> BasicProperties:
    """AMQP properties of a command message: persistent, ids in properties and headers."""
    headers: dict[str, Any] = {
        HEADER_COMMAND_ID: str(command.command_id),
        HEADER_CORRELATION_ID: str(command.saga_id),
        HEADER_SAGA_TYPE: command.saga_type,
        HEADER_STEP: command.step,
        HEADER_KIND: command.kind.value,
        HEADER_ATTEMPT: command.attempt,
    }
    if command.causation_id is not None:
        headers[HEADER_CAUSATION_ID] = command.causation_id
    return BasicProperties(
        content_type="application/json",
        delivery_mode=pika.DeliveryMode.Persistent,
        message_id=str(command.command_id),
        correlation_id=str(command.saga_id),
        reply_to=reply_to,
        type=command.name,
        timestamp=int(datetime.now(UTC).timestamp()),
        headers=headers,
    )


class RabbitMQTransport:
    """A :class:`~sagalog.infrastructure.messaging.transport.Transport` that publishes to RabbitMQ.

    ``send`` publishes the command to the commands exchange with its name as the
    routing key, persistent and ``mandatory``, on a channel in confirm mode, and
    returns only when the broker acknowledged it. A nack, an unroutable command (no
    participant queue bound to its name yet) or a lost connection raises
    :class:`TransportError`; the relay keeps its position and retries with backoff.
    The connection is opened lazily and reopened on the next ``send`` after a loss.

    Not thread-safe (pika connections are not): use it from one thread, the relay's.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        topology: Topology | None = None,
        mandatory: bool = True,
        connection_name: str = "sagalog-relay",
    ) -> None:
        self.url = rabbitmq_url(url)
        self.topology = topology or Topology()
        self.mandatory = mandatory
        self.connection_name = connection_name
        self._connection: BlockingConnection | None = None
        self._channel: BlockingChannel | None = None
        self.confirmed = 0

    def _ensure_channel(self) -> BlockingChannel:
        if self._channel is not None and self._channel.is_open:
            return self._channel
        self._drop()
        connection = connect(self.url, name=self.connection_name)
        try:
            channel = connection.channel()
            channel.confirm_delivery()
            self.topology.declare(channel)
        except BROKER_ERRORS as exc:
            close_quietly(connection)
            raise TransportError(
                f"cannot set up RabbitMQ channel: {first_line(exc, named=True)}"
            ) from None
        self._connection, self._channel = connection, channel
        return channel

    def send(self, command: Command) -> None:
        """Publish ``command``; return once the broker confirmed it, else raise."""
        body = json.dumps(command.to_message(), separators=(",", ":")).encode()
        properties = command_properties(command, self.topology.replies_queue)
        if self.topology.signing is not None:
            try:
                signature = self.topology.signing.sign(
                    "command", service_of(command.name), str(command.command_id), body
                )
            except SignatureError as exc:
                raise TransportError(f"cannot sign command {command.name}: {exc}") from None
            properties.headers = {**(properties.headers or {}), **signature}
        # A connection left idle by the relay may have been closed by the broker
        # (heartbeats are only serviced while we call into pika): reconnect once.
        for attempt in (1, 2):
            channel = self._ensure_channel()
            try:
                channel.basic_publish(
                    self.topology.commands_exchange,
                    command.name,
                    body,
                    properties,
                    mandatory=self.mandatory,
                )
            except pika.exceptions.UnroutableError:
                raise TransportError(
                    f"no queue is bound to command {command.name!r} on "
                    f"{self.topology.commands_exchange!r}: no participant handles it yet"
                ) from None
            except pika.exceptions.NackError:
                raise TransportError(
                    f"the broker refused command {command.command_id} ({command.name})"
                ) from None
            except BROKER_ERRORS as exc:
                self._drop()
                if attempt == 2:
                    raise TransportError(
                        f"lost the RabbitMQ connection sending {command.name}: "
                        f"{first_line(exc, named=True)}"
                    ) from None
                continue
            self.confirmed += 1
            return

    def _drop(self) -> None:
        if self._connection is not None:
            close_quietly(self._connection)
        self._connection = self._channel = None

    def close(self) -> None:
        """Close the connection (idempotent)."""
        self._drop()


# -- consuming, shared by the reply consumer and participants -----------------------


@dataclass
class Delivery:
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
        self._stop = threading.Event()
        self._connection: BlockingConnection | None = None

    def declare(self, channel: BlockingChannel) -> str:
        """Declare what this consumer needs; return the queue to consume."""
        raise NotImplementedError

    def on_message(self, delivery: Delivery) -> None:
        """Handle one message; ack it (or dead-letter and ack it) when done."""
        raise NotImplementedError

    def on_batch(self, deliveries: Sequence[Delivery]) -> None:
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
        backoff = self.initial_backoff
        while not self._stop.is_set():
            try:
                connection = connect(self.url, name=self.connection_name)
            except TransportError as exc:
                logger.warning("%s: %s; retrying in %.2fs", self.connection_name, exc, backoff)
                self._stop.wait(backoff)
                backoff = min(self.max_backoff, backoff * 2)
                continue
            try:
                self._consume(connection)
                backoff = self.initial_backoff
            except BROKER_ERRORS as exc:
                self.ready.clear()
                self.reconnects += 1
                logger.warning(
                    "%s: connection lost (%s); reconnecting in %.2fs",
                    self.connection_name,
                    first_line(exc, named=True),
                    backoff,
                )
                self._stop.wait(backoff)
                backoff = min(self.max_backoff, backoff * 2)
            finally:
                self.ready.clear()
                close_quietly(connection)

    def _consume(self, connection: BlockingConnection) -> None:
        channel = connection.channel()
        channel.confirm_delivery()
        queue = self.declare(channel)
        channel.basic_qos(prefetch_count=self.prefetch)
        received: deque[Delivery] = deque()

        def receive(
            ch: BlockingChannel, method: Basic.Deliver, properties: BasicProperties, body: bytes
        ) -> None:
            received.append(Delivery(ch, method, properties, body))

        tag = channel.basic_consume(queue, receive)
        self._connection = connection
        self.ready.set()
        try:
            while not self._stop.is_set():
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
            channel.basic_cancel(tag)
        finally:
            self._connection = None

    def _signed_only(self, batch: list[Delivery]) -> list[Delivery]:
        """``batch`` without the commands whose signature fails (dead-lettered, acked)."""
        signing = self.topology.signing
        if signing is None or self.signed_kind != "command":
            return batch
        kept: list[Delivery] = []
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

    def _take_batch(self, received: deque[Delivery]) -> list[Delivery]:
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
        delivery: Delivery,
        queue: str,
        reason: str,
        *,
        error: BaseException | None = None,
        attempts: int = 1,
        ack: bool = True,
        max_body: int | None = None,
    ) -> None:
        """Publish ``delivery`` to dead-letter ``queue`` with ``reason`` (confirmed), then ack.

        With ``ack=False`` the caller acks (e.g. a whole batch at once, afterwards).
        With ``max_body``, a longer body is kept cut to that many bytes (header
        ``sagalog-dead-letter-truncated-from`` gives its size): a flood of oversized
        messages must not be kept whole.
        """
        headers = delivery.headers
        body = delivery.body
        if max_body is not None and len(body) > max_body:
            headers[HEADER_DEAD_LETTER_TRUNCATED_FROM] = len(body)
            body = body[:max_body]
        headers[HEADER_DEAD_LETTER_REASON] = reason[:_MAX_REASON]
        headers[HEADER_DEAD_LETTER_ERROR] = type(error).__name__ if error else "none"
        headers[HEADER_DEAD_LETTER_QUEUE] = delivery.method.routing_key or ""
        headers[HEADER_DEAD_LETTER_ATTEMPTS] = attempts
        headers[HEADER_DEAD_LETTER_AT] = datetime.now(UTC).isoformat()
        props = delivery.properties
        delivery.channel.basic_publish(
            "",
            queue,
            body,
            BasicProperties(
                content_type=props.content_type,
                delivery_mode=pika.DeliveryMode.Persistent,
                message_id=props.message_id,
                correlation_id=props.correlation_id,
                type=props.type,
                headers=headers,
            ),
            mandatory=True,
        )
        if ack:
            delivery.ack()


# -- the reply side -----------------------------------------------------------------

ReplyCallback = Callable[[Reply, ReplyOutcome, Delivery], None]

#: Replies handed to ``handle_many`` at most at once (the consumer's prefetch window).
DEFAULT_REPLY_BATCH_SIZE = 200
#: How long a batch waits for more replies after its first (seconds).
DEFAULT_REPLY_BATCH_WAIT = 0.005
#: The most bytes of reply bodies handed to ``handle_many`` at once.
DEFAULT_REPLY_BATCH_BYTES = 16 * 1024 * 1024
DeadLetterCallback = Callable[[Delivery, str, BaseException | None], None]


class ReplyConsumer(ConsumerLoop):
    """Consumes participants' replies in batches and hands each batch to ``manager.handle_many``.

    A batch is what the broker has delivered: up to ``batch_size`` replies (the
    prefetch window), waiting at most ``batch_wait`` seconds after the first for
    more, so a lone reply is not held back. ``handle_many`` commits the batch's
    transitions in one transaction and returns a result per reply; only then are
    the replies acked, with one ``basic.ack`` (``multiple``) up to the last.

    * A reply that fails validation or that the saga rejects goes to the
      replies' dead-letter queue (confirmed) before the batch is acked.
    * A reply whose result is any other error (a conflict storm) is handed over
      again, with backoff, and dead-lettered after ``max_attempts``. If the
      batch as a whole raises something that is not the database, its replies
      are handed over one at a time, so only the culprit is retried that way.
    * If the database fails (``DATABASE_ERRORS``), nothing is acked: the batch
      is handed over again after a backoff (0.05 s doubling to ``max_backoff``)
      until the database is back or the consumer stops — then the broker
      redelivers the replies. Replies of the batch that had been committed come
      back as duplicates the saga ignores by their ``message_id``.

    A batch is handed over in delivery order, and ``handle_many`` decides a
    saga's replies one after another in that order, so per-saga order is kept;
    only a reply retried after a conflict comes after its saga's later replies of
    the same batch (the saga judges a reordered reply, as any late one).

    Runs in one thread; the manager may be shared with other threads (the relay).
    """

    def __init__(
        self,
        manager: SagaManager,
        url: str | None = None,
        *,
        topology: Topology | None = None,
        batch_size: int = DEFAULT_REPLY_BATCH_SIZE,
        batch_wait: float = DEFAULT_REPLY_BATCH_WAIT,
        max_attempts: int = 5,
        retry_backoff: float = 0.05,
        on_reply: ReplyCallback | None = None,
        on_dead_letter: DeadLetterCallback | None = None,
        connection_name: str = "sagalog-replies",
        reply_bounds: MessageBounds = REPLY_BOUNDS,
        max_batch_bytes: int = DEFAULT_REPLY_BATCH_BYTES,
        **loop_options: float,
    ) -> None:
        super().__init__(
            url, topology or Topology(), connection_name=connection_name, **loop_options
        )
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        if batch_wait < 0:
            raise ValueError("batch_wait must not be negative")
        if max_batch_bytes < 1:
            raise ValueError("max_batch_bytes must be at least 1")
        self.manager = manager
        self.reply_bounds = reply_bounds
        self.max_batch_bytes = max_batch_bytes
        self.prefetch = batch_size
        self.batch_wait = batch_wait
        self.max_attempts = max_attempts
        self.retry_backoff = retry_backoff
        self.on_reply = on_reply
        self.on_dead_letter = on_dead_letter
        self.handled = 0
        self.dead_lettered = 0
        #: Batches acked so far.
        self.batches = 0
        #: Times the database failed under a batch (each left it unacked and retried).
        self.database_errors = 0
        self._executor: ThreadPoolExecutor | None = None

    @property
    def batch_size(self) -> int:
        """The most replies handed to ``handle_many`` at once (the prefetch window)."""
        return self.prefetch

    def declare(self, channel: BlockingChannel) -> str:
        self.topology.declare(channel)
        return self.topology.replies_queue

    def on_message(self, delivery: Delivery) -> None:
        self.on_batch([delivery])

    def on_batch(self, deliveries: Sequence[Delivery]) -> None:
        """Handle ``deliveries`` in one ``handle_many``; dead-letter the invalid; ack all."""
        if not deliveries:
            return
        replies: dict[int, Reply] = {}
        results: dict[int, ReplyOutcome] = {}
        dead: dict[int, tuple[str, BaseException, int]] = {}
        signers: dict[int, str] = {}
        for index, delivery in enumerate(deliveries):
            try:
                if self.topology.signing is not None:
                    signers[index] = self.topology.signing.verify(
                        "reply", delivery.headers, delivery.properties.message_id, delivery.body
                    )
                check_message_bounds(delivery.body, self.reply_bounds, "reply")
                replies[index] = Reply.parse(delivery.body)
            except (InvalidReplyError, MessageBoundsError, SignatureError) as exc:
                # Kept without its traceback: the traceback holds this frame, whose
                # deliveries (bodies up to the broker's limit) a cycle would keep alive
                # until the cyclic collector happens to run.
                dead[index] = (str(exc), exc.with_traceback(None), 1)
            except (ValueError, RecursionError) as exc:  # any parser failure is the reply's
                dead[index] = (f"unreadable reply: {exc}", exc.with_traceback(None), 1)
        if signers:
            for index, refusal in self._unbound_signers(replies, signers).items():
                del replies[index]
                dead[index] = (str(refusal), refusal, 1)
        attempts = [0] * len(deliveries)
        todo = list(replies)
        rounds = 0
        while todo:
            answers = self._decide([replies[index] for index in todo])
            again: list[int] = []
            for index, answer in zip(todo, answers, strict=True):
                if isinstance(answer, ReplyOutcome):
                    results[index] = answer
                    continue
                if isinstance(answer, DATABASE_ERRORS) and not isinstance(
                    answer, RecordConflictError
                ):
                    self.database_errors += 1  # not counted against the reply
                    again.append(index)
                    continue
                attempts[index] += 1
                if isinstance(answer, INVALID_REPLY_ERRORS):
                    reason = str(answer)  # its type is in the error header
                    dead[index] = (reason, answer, attempts[index])
                elif attempts[index] >= self.max_attempts:
                    reason = (
                        f"failed {attempts[index]} times, last: {type(answer).__name__}: {answer}"
                    )
                    dead[index] = (reason, answer, attempts[index])
                else:
                    again.append(index)
                    self._log_retry(replies[index], answer, attempts[index])
            todo = again
            if todo:
                rounds += 1
                if self.wait(min(self.max_backoff, self.retry_backoff * 2 ** (rounds - 1))):
                    raise _Stopping from None  # unacked: redelivered to the next consumer
        # Every reply has its outcome, committed, or is to be dead-lettered: publish
        # the dead letters (each confirmed), then ack the whole batch at once.
        for index, (reason, error, tries) in sorted(dead.items()):  # in delivery order
            self.dead_letter(
                deliveries[index],
                self.topology.replies_dead_letter_queue,
                reason,
                error=error,
                attempts=tries,
                ack=False,
                max_body=DEAD_LETTER_KEPT_BYTES if isinstance(error, MessageBoundsError) else None,
            )
        deliveries[-1].ack(multiple=True)
        self.batches += 1
        for index, delivery in enumerate(deliveries):
            reply = replies.get(index)
            if index in dead:
                reason, error, _tries = dead[index]
                self._note_dead_letter(delivery, reason, error, reply)
            elif reply is not None:
                self._note_reply(reply, results[index], delivery)

    def _unbound_signers(
        self, replies: dict[int, Reply], signers: dict[int, str]
    ) -> dict[int, SignatureError]:
        """Replies signed by another service than the one whose command their step sent.

        A reply whose saga or step is unknown is left to ``handle_many``, which
        dead-letters it with its own reason.
        """
        wanted: dict[int, str] = {}
        definitions: dict[Any, Any] = {}

        def load() -> None:
            for index, reply in replies.items():
                if index not in signers:
                    continue
                if reply.saga_id not in definitions:
                    try:
                        definitions[reply.saga_id] = self.manager.get(reply.saga_id).definition
                    except SagaNotFoundError:
                        definitions[reply.saga_id] = None
                definition = definitions[reply.saga_id]
                if definition is None:
                    continue
                try:
                    step = definition.step(reply.step)
                except (UnknownStepError, LookupError):
                    continue
                name = step.compensation if reply.kind.value == "compensation" else step.action
                if name is not None:
                    wanted[index] = service_of(name)

        failures = 0
        while True:
            try:
                self._serviced(load)
                break
            except DATABASE_ERRORS as exc:  # unacked until the check could be made
                failures += 1
                self.database_errors += 1
                delay = min(self.max_backoff, self.retry_backoff * 2 ** (failures - 1))
                logger.warning(
                    "the database failed checking reply signers (%s); retrying in %.2fs",
                    first_line(exc, named=True),
                    delay,
                )
                if self.wait(delay):
                    raise _Stopping from None
        return {
            index: SignatureError(
                f"reply signed by {signers[index]!r} answers a command of {service!r}"
            )
            for index, service in wanted.items()
            if signers[index] != service
        }

    def _decide(self, replies: list[Reply]) -> list[ReplyOutcome | BaseException]:
        """``handle_many(replies)``, handed over again while the database fails.

        Anything else raised for a batch of several is narrowed down by handing
        the replies over one at a time; for a single reply it is its result.
        """
        failures = 0
        while True:
            try:
                return list(self._serviced(lambda: self.manager.handle_many(replies)))
            except DATABASE_ERRORS as exc:
                failures += 1
                self.database_errors += 1
                delay = min(self.max_backoff, self.retry_backoff * 2 ** (failures - 1))
                logger.warning(
                    "the database failed on a batch of %d replies (%s); "
                    "they stay unacked, retrying in %.2fs",
                    len(replies),
                    first_line(exc, named=True),
                    delay,
                )
                if self.wait(delay):
                    raise _Stopping from None  # unacked: redelivered to the next consumer
            except Exception as exc:
                if len(replies) == 1:
                    return [exc]
                logger.warning(
                    "a batch of %d replies failed (%s); handing them over one at a time",
                    len(replies),
                    first_line(exc, named=True),
                )
                return [self._decide([reply])[0] for reply in replies]

    def _serviced(self, work: Callable[[], T]) -> T:
        """Run ``work`` (database work) on the consumer's worker thread, servicing the
        connection meanwhile.

        pika answers the broker's heartbeats only while it is called; a database stall
        of more than two heartbeats on this thread would lose the connection and have
        the broker redeliver the batch. So the work runs on a thread of its own while
        this one keeps calling ``process_data_events`` (deliveries that arrive
        meanwhile wait for the next batch).
        """
        connection = self._connection
        if connection is None or not connection.is_open:
            return work()
        if self._executor is None:
            self._executor = ThreadPoolExecutor(1, thread_name_prefix="sagalog-replies-db")
        future = self._executor.submit(work)
        while True:
            done, _ = futures_wait([future], timeout=self.poll_interval)
            if done:
                return future.result()
            connection.process_data_events(time_limit=0)

    def _log_retry(self, reply: Reply, error: BaseException, attempt: int) -> None:
        logger.warning(
            "reply %s of saga %s failed (attempt %d): %s; retrying",
            reply.message_id,
            reply.saga_id,
            attempt,
            first_line(error, named=True),
            extra=_reply_log_fields(reply),
        )

    def _note_reply(self, reply: Reply, outcome: ReplyOutcome, delivery: Delivery) -> None:
        self.handled += 1
        logger.log(
            logging.DEBUG if outcome.applied else logging.INFO,
            "reply %s to %s of saga %s: %s%s",
            reply.message_id,
            reply.step,
            reply.saga_id,
            outcome.outcome.value,
            f" ({outcome.reason})" if outcome.reason else "",
            extra={**_reply_log_fields(reply), "status": outcome.outcome.value},
        )
        if self.on_reply is not None:
            self.on_reply(reply, outcome, delivery)

    def _note_dead_letter(
        self, delivery: Delivery, reason: str, error: BaseException, reply: Reply | None
    ) -> None:
        self.dead_lettered += 1
        fields: dict[str, Any] = {
            "correlation_id": delivery.properties.correlation_id,
            "message_id": delivery.properties.message_id,
            "causation_id": delivery.headers.get(HEADER_CAUSATION_ID),
        }
        if reply is not None:
            fields.update(_reply_log_fields(reply))
        fields["error"] = type(error).__name__
        logger.error(
            "reply %s dead-lettered: %s",
            delivery.properties.message_id or "(no message id)",
            reason,
            extra=fields,
        )
        if self.on_dead_letter is not None:
            self.on_dead_letter(delivery, reason, error)

    def run(self, stop: threading.Event | None = None) -> None:
        try:
            super().run(stop)
        except _Stopping:
            return
        finally:
            if self._executor is not None:
                self._executor.shutdown(wait=True)
                self._executor = None


class _Stopping(Exception):
    """Raised inside a handler to leave the message unacked because of a stop request."""


def _reply_log_fields(reply: Reply) -> dict[str, Any]:
    return {
        "correlation_id": str(reply.saga_id),
        "step": reply.step,
        "attempt": reply.attempt,
        "kind": reply.kind.value,
        "message_id": reply.message_id,
    }


def reply_properties(reply: Reply, causation_id: str | None) -> BasicProperties:
    """AMQP properties of a reply message: persistent, ids in properties and headers."""
    headers: dict[str, Any] = {HEADER_CORRELATION_ID: str(reply.saga_id)}
    if causation_id is not None:
        headers[HEADER_CAUSATION_ID] = causation_id
    return BasicProperties(
        content_type="application/json",
        delivery_mode=pika.DeliveryMode.Persistent,
        message_id=reply.message_id,
        correlation_id=str(reply.saga_id),
        type=f"{reply.kind.value}.{reply.outcome}",
        timestamp=int(datetime.now(UTC).timestamp()),
        headers=headers,
    )


def publish_reply(
    channel: BlockingChannel,
    reply: Reply,
    *,
    queue: str,
    causation_id: str | None = None,
    signing: SigningKeys | None = None,
    service: str | None = None,
) -> None:
    """Publish ``reply`` to ``queue``; with a confirm-mode channel, return once confirmed.

    With ``signing``, the reply is signed with the key of ``service`` (the service of
    the command it answers).
    """
    body = reply.model_dump_json().encode()
    properties = reply_properties(reply, causation_id)
    if signing is not None:
        if service is None:
            raise ValueError("a signed reply needs the service of its command")
        properties.headers = {
            **(properties.headers or {}),
            **signing.sign("reply", service, reply.message_id, body),
        }
    channel.basic_publish("", queue, body, properties, mandatory=True)


# -- inspection helpers (operators and tests) ---------------------------------------


@dataclass(frozen=True)
class DeadLetter:
    """A message waiting in a dead-letter queue, with the reason it is there."""

    body: bytes
    message_id: str | None
    correlation_id: str | None
    reason: str
    error: str
    attempts: int
    headers: Mapping[str, Any] = field(default_factory=dict)


@contextmanager
def channel_to(url: str | None = None, *, name: str = "sagalog-admin") -> Iterator[BlockingChannel]:
    """A short-lived channel (confirm mode) for administration: declare, inspect, delete."""
    connection = connect(url, name=name)
    try:
        channel = connection.channel()
        channel.confirm_delivery()
        yield channel
    finally:
        close_quietly(connection)


def _dead_letter(props: BasicProperties, body: bytes) -> DeadLetter:
    headers = dict(props.headers or {})
    attempts = headers.get(HEADER_DEAD_LETTER_ATTEMPTS)
    return DeadLetter(
        body=body,
        message_id=props.message_id,
        correlation_id=props.correlation_id,
        reason=str(headers.get(HEADER_DEAD_LETTER_REASON, "")),
        error=str(headers.get(HEADER_DEAD_LETTER_ERROR, "")),
        attempts=attempts if isinstance(attempts, int) else 0,
        headers=headers,
    )


def read_dead_letters(
    queue: str, url: str | None = None, *, limit: int = 1000, remove: bool = False
) -> list[DeadLetter]:
    """The messages in dead-letter ``queue``, oldest first (left in place unless ``remove``)."""
    found: list[DeadLetter] = []
    with channel_to(url) as channel:
        while len(found) < limit:
            method, props, body = channel.basic_get(queue, auto_ack=False)
            if method is None or props is None or body is None:
                break
            found.append(_dead_letter(props, body))
            if remove:
                channel.basic_ack(method.delivery_tag or 0)
        # Unacked gets are returned to the queue, in order, when the channel closes.
    return found


#: Headers a replayed dead letter carries: who replayed it, why and when.
HEADER_REPLAYED_BY = "sagalog-replayed-by"
HEADER_REPLAYED_REASON = "sagalog-replayed-reason"
HEADER_REPLAYED_AT = "sagalog-replayed-at"

_DEAD_LETTER_HEADERS = (
    HEADER_DEAD_LETTER_REASON,
    HEADER_DEAD_LETTER_ERROR,
    HEADER_DEAD_LETTER_QUEUE,
    HEADER_DEAD_LETTER_ATTEMPTS,
    HEADER_DEAD_LETTER_AT,
)


def replay_dead_letters(
    topology: Topology,
    queue: str,
    url: str | None = None,
    *,
    actor: str,
    reason: str,
    limit: int = 1000,
    message_ids: Iterable[str] = (),
) -> list[DeadLetter]:
    """Send dead letters of ``queue`` back where they came from; return those replayed.

    A reply goes back to the queue it was taken from, a command to the commands
    exchange under its command name (so to every service that handles it). Each
    replayed message keeps its body and ids, loses the dead-letter headers and
    gains who replayed it, why and when; each replay is logged at warning with the
    actor. Only ``message_ids`` are replayed when given (the others stay, in order).
    The republish is confirmed before the letter is acked: a failure leaves it.
    """
    wanted = set(message_ids)
    replayed: list[DeadLetter] = []
    with channel_to(url, name="sagalog-dead-letters") as channel:
        for _ in range(limit):
            method, props, body = channel.basic_get(queue, auto_ack=False)
            if method is None or props is None or body is None:
                break
            if wanted and props.message_id not in wanted:
                continue  # unacked: back to the queue when the channel closes
            headers = dict(props.headers or {})
            letter = _dead_letter(props, body)
            origin = str(headers.get(HEADER_DEAD_LETTER_QUEUE) or "")
            for name in _DEAD_LETTER_HEADERS:
                headers.pop(name, None)
            headers[HEADER_REPLAYED_BY] = actor
            headers[HEADER_REPLAYED_REASON] = reason
            headers[HEADER_REPLAYED_AT] = datetime.now(UTC).isoformat()
            if queue == topology.commands_dead_letter_queue:
                exchange, routing_key = topology.commands_exchange, origin
            else:
                exchange, routing_key = "", origin or topology.replies_queue
            channel.basic_publish(
                exchange,
                routing_key,
                body,
                BasicProperties(
                    content_type=props.content_type,
                    delivery_mode=pika.DeliveryMode.Persistent,
                    message_id=props.message_id,
                    correlation_id=props.correlation_id,
                    type=props.type,
                    headers=headers,
                ),
                mandatory=True,
            )
            channel.basic_ack(method.delivery_tag or 0)
            replayed.append(letter)
            logger.warning(
                "dead letter %s replayed from %s to %s by %s: %s",
                props.message_id or "(no message id)",
                queue,
                routing_key,
                actor,
                reason,
                extra={"actor": actor, "reason": reason, "message_id": props.message_id},
            )
    return replayed


def purge_dead_letters(
    queue: str, url: str | None = None, *, actor: str, reason: str, delete_queue: bool = False
) -> int:
    """Drop every letter of ``queue`` (or delete the queue); return how many went.

    Logged at warning with the actor. Deleting the queue lets the next declaration
    create it with the configured bounds (see :class:`Topology`).
    """
    with channel_to(url, name="sagalog-dead-letters") as channel:
        frame = channel.queue_delete(queue) if delete_queue else channel.queue_purge(queue)
        count = int(getattr(frame.method, "message_count", 0) or 0)
    logger.warning(
        "dead-letter queue %s %s by %s (%d letters): %s",
        queue,
        "deleted" if delete_queue else "purged",
        actor,
        count,
        reason,
        extra={"actor": actor, "reason": reason},
    )
    return count


def dead_letter_depths(topology: Topology, url: str | None = None) -> dict[str, int]:
    """How many letters each dead-letter queue holds (for the metrics)."""
    depths: dict[str, int] = {}
    with channel_to(url, name="sagalog-dead-letter-depth") as channel:
        for queue in topology.dead_letter_queues:
            declared = channel.queue_declare(queue, passive=True)
            depths[queue] = int(declared.method.message_count or 0)
    return depths


def queue_depth(queue: str, url: str | None = None) -> int:
    """How many ready messages ``queue`` holds now."""
    with channel_to(url) as channel:
        declared = channel.queue_declare(queue, passive=True)
        return int(declared.method.message_count)


def unique_topology(prefix: str = "sagalog-test") -> Topology:
    """A topology under a fresh prefix (``<prefix>-<hex>``), for tests and demos."""
    return Topology(f"{prefix}-{uuid.uuid4().hex[:12]}")


def close_quietly(connection: BlockingConnection) -> None:
    """Close ``connection`` if open, ignoring broker errors (it may be half dead already)."""
    try:
        if connection.is_open:
            connection.close()
    except BROKER_ERRORS:
        pass
