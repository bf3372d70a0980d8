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
exports what an application wires up; the rest is imported from its module. See
docs/rabbitmq.md.
"""

from __future__ import annotations

from sagalog.domain._exports import names_on_demand
from sagalog.infrastructure.rabbitmq.consumer import ConsumerLoop, ReceivedMessage
from sagalog.infrastructure.rabbitmq.dead_letters import (
    DeadLetteredMessage,
    dead_letter_depths,
    purge_dead_letters,
    read_dead_letters,
    replay_dead_letters,
)
from sagalog.infrastructure.rabbitmq.events import RabbitMQEventBus, RabbitMQEventSubscriber
from sagalog.infrastructure.rabbitmq.replies import ReplyConsumer, publish_reply
from sagalog.infrastructure.rabbitmq.topology import Topology
from sagalog.infrastructure.rabbitmq.transport import RabbitMQTransport

__all__ = [
    "ConsumerLoop",
    "DeadLetteredMessage",
    "RabbitMQEventBus",
    "RabbitMQEventSubscriber",
    "RabbitMQTransport",
    "ReceivedMessage",
    "ReplyConsumer",
    "Topology",
    "dead_letter_depths",
    "publish_reply",
    "purge_dead_letters",
    "read_dead_letters",
    "replay_dead_letters",
]

#: Second-tier names (import them from their modules) and two renamed classes: ``DeadLetter``
#: is the saga state in ``sagalog.domain``, ``Delivery`` a reply in the testing kit.
MOVED = {
    "BROKER_ERRORS": "sagalog.infrastructure.rabbitmq.topology",
    "DATABASE_ERRORS": "sagalog.infrastructure.rabbitmq.replies",
    "DEAD_LETTER_KEPT_BYTES": "sagalog.infrastructure.rabbitmq.dead_letters",
    "DEFAULT_DEAD_LETTER_MAX_BYTES": "sagalog.infrastructure.rabbitmq.topology",
    "DEFAULT_DEAD_LETTER_MAX_LENGTH": "sagalog.infrastructure.rabbitmq.topology",
    "DEFAULT_DEAD_LETTER_TTL_MS": "sagalog.infrastructure.rabbitmq.topology",
    "DEFAULT_RABBITMQ_URL": "sagalog.infrastructure.rabbitmq.topology",
    "DEFAULT_REPLY_BATCH_BYTES": "sagalog.infrastructure.rabbitmq.replies",
    "DEFAULT_REPLY_BATCH_SIZE": "sagalog.infrastructure.rabbitmq.replies",
    "DEFAULT_REPLY_BATCH_WAIT": "sagalog.infrastructure.rabbitmq.replies",
    "DeadLetterCallback": "sagalog.infrastructure.rabbitmq.replies",
    "HEADER_ATTEMPT": "sagalog.infrastructure.rabbitmq.topology",
    "HEADER_CAUSATION_ID": "sagalog.infrastructure.rabbitmq.topology",
    "HEADER_COMMAND_ID": "sagalog.infrastructure.rabbitmq.topology",
    "HEADER_CORRELATION_ID": "sagalog.infrastructure.rabbitmq.topology",
    "HEADER_DEAD_LETTER_AT": "sagalog.infrastructure.rabbitmq.dead_letters",
    "HEADER_DEAD_LETTER_ATTEMPTS": "sagalog.infrastructure.rabbitmq.dead_letters",
    "HEADER_DEAD_LETTER_ERROR": "sagalog.infrastructure.rabbitmq.dead_letters",
    "HEADER_DEAD_LETTER_QUEUE": "sagalog.infrastructure.rabbitmq.dead_letters",
    "HEADER_DEAD_LETTER_REASON": "sagalog.infrastructure.rabbitmq.dead_letters",
    "HEADER_DEAD_LETTER_TRUNCATED_FROM": "sagalog.infrastructure.rabbitmq.dead_letters",
    "HEADER_KIND": "sagalog.infrastructure.rabbitmq.topology",
    "HEADER_REPLAYED_AT": "sagalog.infrastructure.rabbitmq.dead_letters",
    "HEADER_REPLAYED_BY": "sagalog.infrastructure.rabbitmq.dead_letters",
    "HEADER_REPLAYED_REASON": "sagalog.infrastructure.rabbitmq.dead_letters",
    "HEADER_SAGA_TYPE": "sagalog.infrastructure.rabbitmq.topology",
    "HEADER_STEP": "sagalog.infrastructure.rabbitmq.topology",
    "INVALID_REPLY_ERRORS": "sagalog.infrastructure.rabbitmq.replies",
    "RABBITMQ_URL_ENV_VAR": "sagalog.infrastructure.rabbitmq.topology",
    "ReplyCallback": "sagalog.infrastructure.rabbitmq.replies",
    "channel_to": "sagalog.infrastructure.rabbitmq.topology",
    "check_rabbitmq_url": "sagalog.infrastructure.rabbitmq.topology",
    "close_quietly": "sagalog.infrastructure.rabbitmq.topology",
    "command_properties": "sagalog.infrastructure.rabbitmq.transport",
    "connect": "sagalog.infrastructure.rabbitmq.topology",
    "delete_event_queues": "sagalog.infrastructure.rabbitmq.events",
    "event_properties": "sagalog.infrastructure.rabbitmq.events",
    "events_exchange": "sagalog.infrastructure.rabbitmq.events",
    "events_queue": "sagalog.infrastructure.rabbitmq.events",
    "publish_dead_letter": "sagalog.infrastructure.rabbitmq.dead_letters",
    "publish_event": "sagalog.infrastructure.rabbitmq.events",
    "queue_depth": "sagalog.infrastructure.rabbitmq.topology",
    "rabbitmq_url": "sagalog.infrastructure.rabbitmq.topology",
    "reply_properties": "sagalog.infrastructure.rabbitmq.replies",
    "unique_topology": "sagalog.infrastructure.rabbitmq.topology",
    "DeadLetter": "sagalog.infrastructure.rabbitmq.dead_letters:DeadLetteredMessage",
    "Delivery": "sagalog.infrastructure.rabbitmq.consumer:ReceivedMessage",
}
__getattr__ = names_on_demand(globals(), moved=MOVED)
