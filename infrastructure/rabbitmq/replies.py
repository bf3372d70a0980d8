"""Replies in: the reply consumer acks a batch of replies only after its transitions committed.

:class:`ReplyConsumer` hands what the broker delivered to ``manager.handle_many`` (one
transaction) and acks after it returned; a database failure leaves the batch unacked and
retried, a reply that can never apply (or keeps failing) is dead-lettered with its
reason, confirmed, before the ack. :func:`publish_reply` is the participant's side.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Collection, Sequence
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import wait as futures_wait
from datetime import UTC, datetime
from typing import Any, TypeVar

import pika
from eventsourcing.persistence import PersistenceError, RecordConflictError
from pika.adapters.blocking_connection import BlockingChannel
from pika.spec import BasicProperties

from sagalog.domain import (
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
from sagalog.infrastructure.observability.tracing import TRACEPARENT_HEADER, note_reply_parent
from sagalog.infrastructure.rabbitmq.consumer import ConsumerLoop, ReceivedMessage
from sagalog.infrastructure.rabbitmq.dead_letters import DEAD_LETTER_KEPT_BYTES
from sagalog.infrastructure.rabbitmq.topology import (
    HEADER_CAUSATION_ID,
    HEADER_CORRELATION_ID,
    Topology,
)
from sagalog.process import DatabaseUnavailableError, InvalidReplyError, Reply, SagaManager
from sagalog.process.store.loops import Backoff

logger = logging.getLogger("sagalog.rabbitmq")

T = TypeVar("T")

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

ReplyCallback = Callable[[Reply, ReplyOutcome, ReceivedMessage], None]

#: Replies handed to ``handle_many`` at most at once (the consumer's prefetch window).
DEFAULT_REPLY_BATCH_SIZE = 200
#: How long a batch waits for more replies after its first (seconds).
DEFAULT_REPLY_BATCH_WAIT = 0.005
#: The most bytes of reply bodies handed to ``handle_many`` at once.
DEFAULT_REPLY_BATCH_BYTES = 16 * 1024 * 1024
DeadLetterCallback = Callable[[ReceivedMessage, str, BaseException | None], None]


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
        assignment: Callable[[], Collection[int]] | None = None,
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
        #: With reply partitions: which of them to consume now (``None``: all of them).
        #: The worker assigns each live worker its share (see docs/deployment.md).
        self.assignment = assignment

    @property
    def batch_size(self) -> int:
        """The most replies handed to ``handle_many`` at once (the prefetch window)."""
        return self.prefetch

    def declare(self, channel: BlockingChannel) -> str:
        self.topology.declare(channel)
        return self.topology.replies_queue

    def queues(self, declared: str) -> Sequence[str]:
        """The reply partitions assigned now, and the single queue with partition 0.

        Each partition queue has a single active consumer: if two workers briefly both
        consume one (while the assignment moves), the broker delivers to one of them.
        """
        topology = self.topology
        if not topology.reply_partitions:
            return [declared]
        partitions = self.partitions()
        queues = [topology.reply_partition_queue(k) for k in partitions]
        if 0 in partitions:  # replies to commands sent by workers without partitions
            queues.append(declared)
        return queues

    def partitions(self) -> list[int]:
        """The reply partitions this consumer is to consume now, in order."""
        every = range(self.topology.reply_partitions)
        if self.assignment is None:
            return list(every)
        return sorted(k for k in self.assignment() if k in every)

    @property
    def held_partitions(self) -> list[int]:
        """The reply partitions consumed now (empty while disconnected)."""
        prefix = f"{self.topology.replies_queue}."
        return sorted(
            int(name[len(prefix) :])
            for name in self.consuming
            if name.startswith(prefix) and name[len(prefix) :].isdigit()
        )

    def on_message(self, delivery: ReceivedMessage) -> None:
        self.on_batch([delivery])

    def on_batch(self, deliveries: Sequence[ReceivedMessage]) -> None:
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
                if TRACEPARENT_HEADER in delivery.headers:
                    note_reply_parent(
                        replies[index].message_id, delivery.headers[TRACEPARENT_HEADER]
                    )
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
        rounds = Backoff(self.retry_backoff, self.max_backoff)
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
            if todo and self.wait(rounds.next()):
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

        failures = Backoff(self.retry_backoff, self.max_backoff)
        while True:
            try:
                self._serviced(load)
                break
            except DATABASE_ERRORS as exc:  # unacked until the check could be made
                self.database_errors += 1
                delay = failures.next()
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
        failures = Backoff(self.retry_backoff, self.max_backoff)
        while True:
            try:
                return list(self._serviced(lambda: self.manager.handle_many(replies)))
            except DATABASE_ERRORS as exc:
                self.database_errors += 1
                delay = failures.next()
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

    def _note_reply(self, reply: Reply, outcome: ReplyOutcome, delivery: ReceivedMessage) -> None:
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
        self, delivery: ReceivedMessage, reason: str, error: BaseException, reply: Reply | None
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
    traceparent: str | None = None,
) -> None:
    """Publish ``reply`` to ``queue``; with a confirm-mode channel, return once confirmed.

    With ``signing``, the reply is signed with the key of ``service`` (the service of
    the command it answers). ``traceparent`` (tracing on) goes in its headers.
    """
    body = reply.model_dump_json().encode()
    properties = reply_properties(reply, causation_id)
    if traceparent is not None:
        properties.headers = {**(properties.headers or {}), TRACEPARENT_HEADER: traceparent}
    if signing is not None:
        if service is None:
            raise ValueError("a signed reply needs the service of its command")
        properties.headers = {
            **(properties.headers or {}),
            **signing.sign("reply", service, reply.message_id, body),
        }
    channel.basic_publish("", queue, body, properties, mandatory=True)
