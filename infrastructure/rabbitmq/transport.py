"""Commands out: the relay's transport publishes each command and waits for the broker's confirm.

:meth:`RabbitMQTransport.send` returns only once the broker confirmed the persistent
message and a queue took it (``mandatory``); otherwise it raises :class:`TransportError`,
so the relay keeps its position and sends again later (at least once; the command id is
the message id, so participants drop duplicates).
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
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
from sagalog.infrastructure.observability.tracing import TRACEPARENT_HEADER
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
    if command.traceparent is not None:
        headers[TRACEPARENT_HEADER] = command.traceparent
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
        #: Seconds ``send_many`` waits for the broker's confirms of a batch.
        self.confirm_timeout = 30.0
        self._batch: BlockingChannel | None = None
        self._next_tag = 1
        self._confirmed_up_to = 0
        self._early: set[int] = set()
        self._refused: set[int] = set()
        self._returned: set[str] = set()

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

    def _message(self, command: Command) -> tuple[bytes, BasicProperties]:
        """The body and properties of ``command``'s message (signed with keys)."""
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
        return body, properties

    def send_many(self, commands: Sequence[Command]) -> int:
        """Publish ``commands`` with every confirm in flight at once; return how many, from
        the first, the broker confirmed and routed.

        One round trip for the batch instead of one per command. A command the broker
        refused (nack) or could not route ends the count there: the relay records its
        position before it and sends the rest again. A lost connection (or no confirm
        within ``confirm_timeout``) raises :class:`TransportError`: nothing is counted.
        A command whose message cannot be built raises before anything is published.
        """
        messages = [self._message(command) for command in commands]
        for attempt in (1, 2):  # an idle connection may have been closed: reconnect once
            try:
                channel = self._ensure_batch_channel()
                impl: Any = getattr(channel, "_impl")  # noqa: B009 - pika's async channel: confirms as callbacks
                first = self._next_tag
                for command, (body, properties) in zip(commands, messages, strict=True):
                    impl.basic_publish(
                        self.topology.commands_exchange,
                        command.name,
                        body,
                        properties,
                        mandatory=self.mandatory,
                    )
                    self._next_tag += 1
                last = self._next_tag - 1
                deadline = time.monotonic() + self.confirm_timeout
                while self._confirmed_up_to < last:
                    if time.monotonic() > deadline:
                        self._drop()
                        raise TransportError(
                            f"no confirm from RabbitMQ for {last - self._confirmed_up_to} "
                            f"commands within {self.confirm_timeout:g}s"
                        )
                    assert self._connection is not None
                    self._connection.process_data_events(time_limit=0.05)
            except BROKER_ERRORS as exc:
                self._drop()
                if attempt == 2:
                    raise TransportError(
                        f"lost the RabbitMQ connection sending {len(commands)} commands: "
                        f"{first_line(exc, named=True)}"
                    ) from None
                continue
            accepted = 0
            for offset, command in enumerate(commands):
                tag = first + offset
                if tag in self._refused or str(command.command_id) in self._returned:
                    break
                accepted += 1
            self._refused.clear()
            self._returned.clear()
            self.confirmed += accepted
            return accepted
        raise AssertionError("unreachable")  # pragma: no cover

    def _ensure_batch_channel(self) -> BlockingChannel:
        """A channel in confirm mode whose confirms arrive as callbacks, not one by one."""
        if self._batch is not None and self._batch.is_open:
            return self._batch
        self._ensure_channel()  # the connection, and the topology declared
        assert self._connection is not None
        channel = self._connection.channel()
        impl: Any = getattr(channel, "_impl")  # noqa: B009 - see send_many
        selected: list[bool] = []
        self._next_tag, self._confirmed_up_to = 1, 0
        self._refused.clear()
        self._returned.clear()
        impl.add_on_return_callback(self._on_return)
        impl.confirm_delivery(self._on_confirm, callback=lambda _frame: selected.append(True))
        deadline = time.monotonic() + self.confirm_timeout
        while not selected:
            if time.monotonic() > deadline:
                raise TransportError("RabbitMQ did not turn publisher confirms on")
            self._connection.process_data_events(time_limit=0.05)
        self._batch = channel
        return channel

    def _on_confirm(self, frame: Any) -> None:
        """A confirm (ack or nack, of one tag or all up to it) of the batch channel."""
        method = frame.method
        tag = int(method.delivery_tag)
        tags = range(self._confirmed_up_to + 1 if method.multiple else tag, tag + 1)
        if isinstance(method, pika.spec.Basic.Nack):
            self._refused.update(tags)
        self._early.update(tags)
        while self._confirmed_up_to + 1 in self._early:
            self._early.discard(self._confirmed_up_to + 1)
            self._confirmed_up_to += 1

    def _on_return(self, _channel: Any, _method: Any, properties: Any, _body: bytes) -> None:
        if properties.message_id:
            self._returned.add(str(properties.message_id))

    def send(self, command: Command) -> None:
        """Publish ``command``; return once the broker confirmed it, else raise."""
        body, properties = self._message(command)
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
        self._connection = self._channel = self._batch = None
        self._early.clear()

    def close(self) -> None:
        """Close the connection (idempotent)."""
        self._drop()
