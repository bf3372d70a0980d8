"""RabbitMQ: commands out with publisher confirms, replies in with ack-after-commit.

Built on ``pika`` (the optional ``rabbitmq`` extra: ``pip install 'sagalog[rabbitmq]'``;
without it, importing this package raises ``ImportError``). One module per role::

    relay ──► exchange <prefix>.commands ──► queue <prefix>.service.<service> ──► Participant
              (transport: confirmed)                                          │ reply
    ReplyConsumer ◄── queue <prefix>.replies ◄──────────────────────────────────┘
    (replies: ack after commit)  │ invalid or failing for good
                                 ▼
                   queue <prefix>.replies.dead-letter  (dead_letters: reason in headers)

``topology`` (names, declarations, URL and connections), ``transport`` (commands out),
``consumer`` (the consumer loop: batches, reconnect with backoff), ``replies`` (the
reply consumer, publishing replies), ``dead_letters`` (writing, reading, replaying,
purging letters), ``events`` (choreography events over the broker). This package
re-exports their public names; see docs/rabbitmq.md.
"""

from __future__ import annotations

import warnings
from typing import Any

from sagalog.infrastructure.rabbitmq.consumer import ConsumerLoop, ReceivedMessage
from sagalog.infrastructure.rabbitmq.dead_letters import (
    DEAD_LETTER_KEPT_BYTES,
    HEADER_DEAD_LETTER_AT,
    HEADER_DEAD_LETTER_ATTEMPTS,
    HEADER_DEAD_LETTER_ERROR,
    HEADER_DEAD_LETTER_QUEUE,
    HEADER_DEAD_LETTER_REASON,
    HEADER_DEAD_LETTER_TRUNCATED_FROM,
    HEADER_REPLAYED_AT,
    HEADER_REPLAYED_BY,
    HEADER_REPLAYED_REASON,
    DeadLetteredMessage,
    dead_letter_depths,
    publish_dead_letter,
    purge_dead_letters,
    read_dead_letters,
    replay_dead_letters,
)
from sagalog.infrastructure.rabbitmq.events import (
    RabbitMQEventBus,
    RabbitMQEventSubscriber,
    delete_event_queues,
    event_properties,
    events_exchange,
    events_queue,
    publish_event,
)
from sagalog.infrastructure.rabbitmq.replies import (
    DATABASE_ERRORS,
    DEFAULT_REPLY_BATCH_BYTES,
    DEFAULT_REPLY_BATCH_SIZE,
    DEFAULT_REPLY_BATCH_WAIT,
    INVALID_REPLY_ERRORS,
    DeadLetterCallback,
    ReplyCallback,
    ReplyConsumer,
    publish_reply,
    reply_properties,
)
from sagalog.infrastructure.rabbitmq.topology import (
    BROKER_ERRORS,
    DEFAULT_DEAD_LETTER_MAX_BYTES,
    DEFAULT_DEAD_LETTER_MAX_LENGTH,
    DEFAULT_DEAD_LETTER_TTL_MS,
    DEFAULT_RABBITMQ_URL,
    HEADER_ATTEMPT,
    HEADER_CAUSATION_ID,
    HEADER_COMMAND_ID,
    HEADER_CORRELATION_ID,
    HEADER_KIND,
    HEADER_SAGA_TYPE,
    HEADER_STEP,
    RABBITMQ_URL_ENV_VAR,
    Topology,
    channel_to,
    check_rabbitmq_url,
    close_quietly,
    connect,
    queue_depth,
    rabbitmq_url,
    unique_topology,
)
from sagalog.infrastructure.rabbitmq.transport import RabbitMQTransport, command_properties

__all__ = [
    "BROKER_ERRORS",
    "DATABASE_ERRORS",
    "DEAD_LETTER_KEPT_BYTES",
    "DEFAULT_DEAD_LETTER_MAX_BYTES",
    "DEFAULT_DEAD_LETTER_MAX_LENGTH",
    "DEFAULT_DEAD_LETTER_TTL_MS",
    "DEFAULT_RABBITMQ_URL",
    "DEFAULT_REPLY_BATCH_BYTES",
    "DEFAULT_REPLY_BATCH_SIZE",
    "DEFAULT_REPLY_BATCH_WAIT",
    "HEADER_ATTEMPT",
    "HEADER_CAUSATION_ID",
    "HEADER_COMMAND_ID",
    "HEADER_CORRELATION_ID",
    "HEADER_DEAD_LETTER_AT",
    "HEADER_DEAD_LETTER_ATTEMPTS",
    "HEADER_DEAD_LETTER_ERROR",
    "HEADER_DEAD_LETTER_QUEUE",
    "HEADER_DEAD_LETTER_REASON",
    "HEADER_DEAD_LETTER_TRUNCATED_FROM",
    "HEADER_KIND",
    "HEADER_REPLAYED_AT",
    "HEADER_REPLAYED_BY",
    "HEADER_REPLAYED_REASON",
    "HEADER_SAGA_TYPE",
    "HEADER_STEP",
    "INVALID_REPLY_ERRORS",
    "RABBITMQ_URL_ENV_VAR",
    "ConsumerLoop",
    "DeadLetterCallback",
    "DeadLetteredMessage",
    "RabbitMQEventBus",
    "RabbitMQEventSubscriber",
    "RabbitMQTransport",
    "ReceivedMessage",
    "ReplyCallback",
    "ReplyConsumer",
    "Topology",
    "channel_to",
    "check_rabbitmq_url",
    "close_quietly",
    "command_properties",
    "connect",
    "dead_letter_depths",
    "delete_event_queues",
    "event_properties",
    "events_exchange",
    "events_queue",
    "publish_dead_letter",
    "publish_event",
    "publish_reply",
    "purge_dead_letters",
    "queue_depth",
    "rabbitmq_url",
    "read_dead_letters",
    "replay_dead_letters",
    "reply_properties",
    "unique_topology",
]

#: Names this package had before they got one meaning each: old name → new name.
_RENAMED = {"DeadLetter": "DeadLetteredMessage", "Delivery": "ReceivedMessage"}


def __getattr__(name: str) -> Any:
    """Resolve a renamed class under its old name, with a ``DeprecationWarning``.

    ``DeadLetter`` is the saga state (``sagalog.domain``) and ``Delivery`` a reply in
    the testing kit, so the broker's classes have names of their own now.
    """
    new = _RENAMED.get(name)
    if new is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    warnings.warn(
        f"{__name__}.{name} is now {new}; the old name will go",
        DeprecationWarning,
        stacklevel=2,
    )
    return globals()[new]
