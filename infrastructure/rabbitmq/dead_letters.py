"""The dead-letter queues: a message sagalog cannot use waits there, with the reason, for a person.

Letters are published confirmed before the message they replace is acked (never
silently dropped); operators read, replay or purge them (``sagalog dead-letters``),
and every replay or purge is logged with who did it and why.

With store keys set (``SAGALOG_ENCRYPTION_KEYS``, docs/security.md) in the process
that dead-letters a message, the letter's body and reason are kept encrypted under the
writing store key (header ``sagalog-dead-letter-sealed`` names it): a letter waits in
the broker for days, holding a saga's data, results or error text. Reading them back
and replaying them needs the keys.
"""

from __future__ import annotations

import base64
import logging
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pika
from pika.adapters.blocking_connection import BlockingChannel
from pika.spec import BasicProperties

from sagalog.infrastructure.rabbitmq.topology import Topology, channel_to
from sagalog.process.store.encryption import (
    ENCRYPTION_KEY_FILE_ENV_VAR,
    ENCRYPTION_KEYS_ENV_VAR,
    EncryptionKeyMissingError,
    KeyRing,
    encryption_configured,
)
from sagalog.process.store.shredding import ENCRYPTED

logger = logging.getLogger("sagalog.rabbitmq")

#: Headers a dead letter carries: why it is there, from which queue, since when.
HEADER_DEAD_LETTER_REASON = "sagalog-dead-letter-reason"
HEADER_DEAD_LETTER_ERROR = "sagalog-dead-letter-error"
HEADER_DEAD_LETTER_QUEUE = "sagalog-dead-letter-queue"
HEADER_DEAD_LETTER_ATTEMPTS = "sagalog-dead-letter-attempts"
HEADER_DEAD_LETTER_AT = "sagalog-dead-letter-at"
HEADER_DEAD_LETTER_TRUNCATED_FROM = "sagalog-dead-letter-truncated-from"

#: The store key a sealed letter's body and reason are encrypted under (absent: plain).
HEADER_DEAD_LETTER_SEALED = "sagalog-dead-letter-sealed"
#: A sealed letter's reason, encrypted (base64); the plain reason header says ``<encrypted>``.
HEADER_DEAD_LETTER_SEALED_REASON = "sagalog-dead-letter-sealed-reason"
_LETTER_AAD = b"sagalog-dead-letter"
_keyrings: dict[tuple[str, str], KeyRing] = {}


def letter_keyring(environ: Mapping[str, str] | None = None) -> KeyRing | None:
    """The store keys of this process's environment (``None``: encryption off)."""
    env = os.environ if environ is None else environ
    if not encryption_configured(env):
        return None
    settings = (env.get(ENCRYPTION_KEYS_ENV_VAR, ""), env.get(ENCRYPTION_KEY_FILE_ENV_VAR, ""))
    keyring = _keyrings.get(settings)
    if keyring is None:
        keyring = _keyrings[settings] = KeyRing.from_env(env)
    return keyring


#: An oversized message is dead-lettered cut to this many bytes (enough to see what it was).
DEAD_LETTER_KEPT_BYTES = 64 * 1024

#: The longest reason text put in a dead-letter header.
_MAX_REASON = 2000


@dataclass(frozen=True)
class DeadLetteredMessage:
    """A message waiting in a dead-letter queue, with the reason it is there."""

    body: bytes
    message_id: str | None
    correlation_id: str | None
    reason: str
    error: str
    attempts: int
    headers: Mapping[str, Any] = field(default_factory=dict)


def publish_dead_letter(
    channel: BlockingChannel,
    queue: str,
    properties: BasicProperties,
    body: bytes,
    *,
    origin: str,
    reason: str,
    error: BaseException | None = None,
    attempts: int = 1,
    max_body: int | None = None,
) -> None:
    """Publish a message taken from ``origin`` to dead-letter ``queue``, with the reason.

    With a confirm-mode channel, return once confirmed. With ``max_body``, a longer
    body is kept cut to that many bytes (header ``sagalog-dead-letter-truncated-from``
    gives its size): a flood of oversized messages must not be kept whole.
    """
    headers = dict(properties.headers or {})
    if max_body is not None and len(body) > max_body:
        headers[HEADER_DEAD_LETTER_TRUNCATED_FROM] = len(body)
        body = body[:max_body]
    headers[HEADER_DEAD_LETTER_REASON] = reason[:_MAX_REASON]
    keyring = letter_keyring()
    if keyring is not None:
        body = keyring.encrypt(body, _LETTER_AAD)
        sealed_reason = keyring.encrypt(reason[:_MAX_REASON].encode("utf-8"), _LETTER_AAD)
        headers[HEADER_DEAD_LETTER_REASON] = ENCRYPTED
        headers[HEADER_DEAD_LETTER_SEALED] = keyring.write_id
        headers[HEADER_DEAD_LETTER_SEALED_REASON] = base64.b64encode(sealed_reason).decode()
    headers[HEADER_DEAD_LETTER_ERROR] = type(error).__name__ if error else "none"
    headers[HEADER_DEAD_LETTER_QUEUE] = origin
    headers[HEADER_DEAD_LETTER_ATTEMPTS] = attempts
    headers[HEADER_DEAD_LETTER_AT] = datetime.now(UTC).isoformat()
    channel.basic_publish("", queue, body, _resent(properties, headers), mandatory=True)


def _resent(properties: BasicProperties, headers: dict[str, Any]) -> BasicProperties:
    """The properties of ``properties``' message sent again, persistent, with ``headers``."""
    return BasicProperties(
        content_type=properties.content_type,
        delivery_mode=pika.DeliveryMode.Persistent,
        message_id=properties.message_id,
        correlation_id=properties.correlation_id,
        type=properties.type,
        headers=headers,
    )


def _opened(headers: Mapping[str, Any], body: bytes) -> tuple[bytes, str]:
    """A letter's body and reason, decrypted when sealed; ``<encrypted>`` without the keys."""
    reason = str(headers.get(HEADER_DEAD_LETTER_REASON, ""))
    if not headers.get(HEADER_DEAD_LETTER_SEALED):
        return body, reason
    keyring = letter_keyring()
    if keyring is None:
        return body, ENCRYPTED
    sealed_reason = base64.b64decode(str(headers.get(HEADER_DEAD_LETTER_SEALED_REASON, "")))
    return (
        keyring.decrypt(body, _LETTER_AAD),
        keyring.decrypt(sealed_reason, _LETTER_AAD).decode("utf-8"),
    )


def _dead_lettered_message(props: BasicProperties, body: bytes) -> DeadLetteredMessage:
    headers = dict(props.headers or {})
    attempts = headers.get(HEADER_DEAD_LETTER_ATTEMPTS)
    body, reason = _opened(headers, body)
    return DeadLetteredMessage(
        body=body,
        message_id=props.message_id,
        correlation_id=props.correlation_id,
        reason=reason,
        error=str(headers.get(HEADER_DEAD_LETTER_ERROR, "")),
        attempts=attempts if isinstance(attempts, int) else 0,
        headers=headers,
    )


def read_dead_letters(
    queue: str, url: str | None = None, *, limit: int = 1000, remove: bool = False
) -> list[DeadLetteredMessage]:
    """The messages in dead-letter ``queue``, oldest first (left in place unless ``remove``)."""
    found: list[DeadLetteredMessage] = []
    with channel_to(url) as channel:
        while len(found) < limit:
            method, props, body = channel.basic_get(queue, auto_ack=False)
            if method is None or props is None or body is None:
                break
            found.append(_dead_lettered_message(props, body))
            if remove:
                channel.basic_ack(method.delivery_tag or 0)
        # Unacked gets are returned to the queue, in order, when the channel closes.
    return found


#: Headers a replayed dead letter carries: who replayed it, why and when.
HEADER_REPLAYED_BY = "sagalog-replayed-by"
HEADER_REPLAYED_REASON = "sagalog-replayed-reason"
HEADER_REPLAYED_AT = "sagalog-replayed-at"

_DEAD_LETTER_HEADERS = (
    HEADER_DEAD_LETTER_SEALED,
    HEADER_DEAD_LETTER_SEALED_REASON,
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
) -> list[DeadLetteredMessage]:
    """Send dead letters of ``queue`` back where they came from; return those replayed.

    A reply goes back to the queue it was taken from, a command to the commands
    exchange under its command name (so to every service that handles it). Each
    replayed message keeps its body and ids, loses the dead-letter headers and
    gains who replayed it, why and when; each replay is logged at warning with the
    actor. Only ``message_ids`` are replayed when given (the others stay, in order).
    The republish is confirmed before the letter is acked: a failure leaves it.
    """
    wanted = set(message_ids)
    replayed: list[DeadLetteredMessage] = []
    with channel_to(url, name="sagalog-dead-letters") as channel:
        for _ in range(limit):
            method, props, body = channel.basic_get(queue, auto_ack=False)
            if method is None or props is None or body is None:
                break
            if wanted and props.message_id not in wanted:
                continue  # unacked: back to the queue when the channel closes
            headers = dict(props.headers or {})
            if headers.get(HEADER_DEAD_LETTER_SEALED) and letter_keyring() is None:
                raise EncryptionKeyMissingError("the dead letters are encrypted")
            letter = _dead_lettered_message(props, body)
            body = letter.body  # what was sent, decrypted: participants read it
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
                _resent(props, headers),
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
