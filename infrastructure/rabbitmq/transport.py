"""Commands out: the relay's transport publishes each command and waits for the broker's confirm.

:meth:`RabbitMQTransport.send` returns only once the broker confirmed the persistent
message and a queue took it (``mandatory``); otherwise it raises :class:`TransportError`,
so the relay keeps its position and sends again later (at least once; the command id is
the message id, so participants drop duplicates).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pika
import pika.exceptions
from pika.adapters.blocking_connection import BlockingChannel, BlockingConnection
from pika.spec import BasicProperties

from sagalog.domain import Command
from sagalog.domain.errors import first_line
from sagalog.infrastructure.messaging.signing import SignatureError, service_of
from sagalog.infrastructure.messaging.transport import TransportError
from sagalog.infrastructure.rabbitmq.topology import (
    BROKER_ERRORS,
    HEADER_ATTEMPT,
    HEADER_CAUSATION_ID,
    HEADER_COMMAND_ID,
    HEADER_CORRELATION_ID,
    HEADER_KIND,
    HEADER_SAGA_TYPE,
    HEADER_STEP,
    Topology,
    close_quietly,
    connect,
    rabbitmq_url,
)


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
        properties = command_properties(command, self.topology.reply_queue_for(command.saga_id))
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
