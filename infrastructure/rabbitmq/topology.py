"""Where the broker is and what sagalog declares on it: URL, connections, exchange and queues.

Every name starts with the :class:`Topology` prefix (``sagalog`` by default), so two
deployments or tests share a broker without seeing each other's messages; everything
is durable, and the dead-letter queues are bounded.
"""

from __future__ import annotations

import logging
import os
import uuid
import zlib
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import pika
import pika.exceptions
from pika.adapters.blocking_connection import BlockingChannel, BlockingConnection

from sagalog.domain.errors import first_line
from sagalog.infrastructure.messaging.signing import SigningKeys
from sagalog.infrastructure.messaging.transport import TransportError
from sagalog.process.store.url import mask_password

logger = logging.getLogger("sagalog.rabbitmq")

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

#: Exceptions from the broker connection that a reconnect may cure.
BROKER_ERRORS: tuple[type[BaseException], ...] = (pika.exceptions.AMQPError, OSError)


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

#: The queue types a topology declares its reply partitions and service queues as.
QUEUE_TYPES = ("classic", "quorum")

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
    #: Reply partitions: ``0`` is the single ``<prefix>.replies`` queue; ``N`` routes each
    #: saga's replies to ``<prefix>.replies.<k>`` (``k`` from its id), each queue with a
    #: single active consumer, so several workers share the replies, one saga in one place.
    reply_partitions: int = 0
    #: ``"quorum"`` declares the reply partitions and the service queues as quorum
    #: queues (replicated, for a broker cluster: the production setting); ``"classic"``.
    queue_type: str = "classic"

    def __post_init__(self) -> None:
        if self.reply_partitions < 0:
            raise ValueError("reply_partitions must not be negative")
        if self.queue_type not in QUEUE_TYPES:
            raise ValueError(
                f"unknown queue type {self.queue_type!r}; choose {' or '.join(QUEUE_TYPES)}"
            )

    def queue_arguments(self) -> dict[str, Any]:
        """Arguments of the queues whose type is configurable (``x-queue-type``)."""
        return {"x-queue-type": self.queue_type} if self.queue_type != "classic" else {}

    def reply_partition(self, saga_id: object) -> int:
        """The partition of ``saga_id``'s replies (CRC-32 of its text, mod the partitions)."""
        if not self.reply_partitions:
            return 0
        return zlib.crc32(str(saga_id).encode()) % self.reply_partitions

    def reply_partition_queue(self, partition: int) -> str:
        """The queue of reply partition ``partition``."""
        return f"{self.prefix}.replies.{partition}"

    @property
    def reply_partition_queues(self) -> list[str]:
        """Every reply partition's queue, in partition order (none without partitions)."""
        return [self.reply_partition_queue(k) for k in range(self.reply_partitions)]

    def reply_queue_for(self, saga_id: object) -> str:
        """Where the replies to ``saga_id``'s commands go: the commands' ``reply_to``."""
        if not self.reply_partitions:
            return self.replies_queue
        return self.reply_partition_queue(self.reply_partition(saga_id))

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
        """Declare the exchange and the manager-side queues (idempotent).

        The single replies queue is declared in any case: with partitions it is drained
        by the holder of partition 0, for replies to commands that workers of an older
        version sent (a rolling upgrade).
        """
        channel.exchange_declare(self.commands_exchange, "topic", durable=True)
        channel.queue_declare(self.replies_queue, durable=True)
        partition_arguments = {"x-single-active-consumer": True, **self.queue_arguments()}
        for queue in self.reply_partition_queues:
            channel.queue_declare(queue, durable=True, arguments=partition_arguments)
        for queue in self.dead_letter_queues:
            self._declare_dead_letter_queue(channel, queue)

    def declare_service(
        self, channel: BlockingChannel, service: str, command_names: Iterable[str]
    ) -> str:
        """Declare ``service``'s queue, bound to ``command_names``; return its name."""
        self.declare(channel)
        queue = self.service_queue(service)
        channel.queue_declare(queue, durable=True, arguments=self.queue_arguments() or None)
        for name in command_names:
            channel.queue_bind(queue, self.commands_exchange, routing_key=name)
        return queue

    def delete(self, channel: BlockingChannel, services: Iterable[str] = ()) -> None:
        """Delete every queue and the exchange (tests and teardown)."""
        for service in services:
            channel.queue_delete(self.service_queue(service))
        for queue in (
            *self.reply_partition_queues,
            self.replies_queue,
            self.replies_dead_letter_queue,
            self.commands_dead_letter_queue,
        ):
            channel.queue_delete(queue)
        channel.exchange_delete(self.commands_exchange)


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
