"""``SagaManager``: the process manager, an eventsourcing ``ProcessApplication``.

This module is what a user calls: start sagas, hand them replies, tick the clock,
act as an operator, read sagas back. It turns replies, upstream domain events and
clock ticks into saga events, and records them durably. The flow of one reply
(see docs/process-manager.md):

1. *route*: find the saga by its id (the correlation id) — unknown id is an error;
2. *decide*: the ``Saga`` aggregate judges the reply (apply / duplicate / stale /
   invalid) and triggers events, including the next command to dispatch;
3. *record*: the new events, the saga's new wake-up time and — when the reply was
   consumed from a log — the tracking record are committed in one transaction;
4. on an optimistic-concurrency conflict (another manager recorded a transition
   of the same saga first) the saga is reloaded and the reply decided again.

How transitions are committed, one saga or a batch in one transaction, is in
:mod:`sagalog.process.batch`; how upstream events find their declared reactions
is in :mod:`sagalog.process.routing`. The sagas recorded last are kept in a
bounded :class:`~sagalog.process.cache.SagaCache`, so the next decision about a
saga usually needs no read.

Commands are not sent from here: the command relay follows this application's
notification log (the log *is* the outbox), so a command is never sent unless
its event is committed.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any, ClassVar, cast
from uuid import UUID, uuid4

from eventsourcing.application import AggregateNotFoundError
from eventsourcing.domain import DomainEventProtocol
from eventsourcing.persistence import (
    Mapper,
    PersistenceError,
    RecordConflictError,
    StoredEvent,
    Transcoder,
)
from eventsourcing.system import ProcessApplication

from sagalog.domain import (
    CommandKind,
    InvalidTransitionError,
    ReplyOutcome,
    Saga,
    SagaDefinition,
    SagalogError,
    SagaNotFoundError,
    UnexpectedReplyError,
)
from sagalog.domain.errors import first_line
from sagalog.process.batch import (
    CommitsTransitions,
    ConcurrencyConflictError,
    ReplyResult,
    answer_reply,
)
from sagalog.process.cache import SagaCache
from sagalog.process.clock import Clock, utc_now
from sagalog.process.lifecycle import ClosedAtExit
from sagalog.process.messages import InvalidReplyError, Reply, ReplyInput
from sagalog.process.reactions import Reaction
from sagalog.process.registry import DefinitionRegistry
from sagalog.process.routing import RoutesReactions, index_reactions
from sagalog.process.store.codec import FastJSONTranscoder, SagaMapper
from sagalog.process.store.encryption import (
    EncryptionKeyMissingError,
    SagaCipher,
    encryption_configured,
    is_encrypted,
)
from sagalog.process.store.loops import run_until_stopped
from sagalog.process.store.shredding import DataKeyTable, ErasureError, SagaDataKeys
from sagalog.process.store.timers import BulkEventReader, TimerIndex
from sagalog.process.store.url import DatabaseUnavailableError, parse_database_url

__all__ = [
    "Clock",
    "ConcurrencyConflictError",
    "ReplyInput",
    "ReplyResult",
    "SagaManager",
    "fold_events",
    "utc_now",
]

logger = logging.getLogger("sagalog.manager")

#: eventsourcing's cipher setting when sagalog's store keys are configured.
_CIPHER_TOPIC = "sagalog.process.store.encryption:SagaCipher"


def fold_events(saga: Saga | None, events: Iterable[DomainEventProtocol[Any]]) -> Saga | None:
    """Apply ``events`` to ``saga`` in order: eventsourcing's projector without its assert.

    eventsourcing's ``project_aggregate`` asserts ``isinstance(event,
    CanMutateProtocol)`` for every event, a runtime-protocol check that costs
    about as much as decoding the event (docs/performance.md). Every event read
    from a saga's stream is a ``Saga.Event`` (``mutate`` is called on it either way).
    """
    aggregate: Any = saga
    for event in events:
        aggregate = cast("Saga.Event", event).mutate(aggregate)
    return cast("Saga | None", aggregate)


class SagaManager(ClosedAtExit, CommitsTransitions, RoutesReactions, ProcessApplication[UUID]):
    """Runs sagas durably on eventsourcing: memory, SQLite or PostgreSQL.

    ``definitions`` may also be declared on a subclass (``definitions = [...]``), as
    must ``reactions`` for use inside an eventsourcing ``System``, whose runners
    construct applications from their class and environment alone.
    """

    name = "SagaManager"
    definitions: ClassVar[Sequence[SagaDefinition]] = ()
    reactions: ClassVar[Sequence[Reaction]] = ()

    #: How often a transition is re-decided after an optimistic-concurrency conflict.
    max_conflict_retries: int = 20
    #: How many sagas the manager keeps in memory between transitions (0: none).
    #: The environment setting ``SAGALOG_SAGA_CACHE_SIZE`` overrides it.
    saga_cache_size: int = 10_000
    #: At most this many replies (or new sagas) are committed in one transaction
    #: by ``handle_many`` (``start_many``); longer lists are recorded in chunks.
    max_batch_size: int = 500
    #: Reply messages must name the ``command_id`` they answer; one that does not is
    #: refused (``UnexpectedReplyError``). ``True`` accepts them for the time it takes
    #: to upgrade participants that predate the field (then any reply naming a saga's
    #: id and step can move it). The environment setting
    #: ``SAGALOG_ACCEPT_UNBOUND_REPLIES=true`` sets it too.
    accept_unbound_replies: bool = False

    def __init__(
        self,
        definitions: Iterable[SagaDefinition] | None = None,
        database_url: str | None = None,
        *,
        env: Mapping[str, str] | None = None,
        clock: Clock | None = None,
    ) -> None:
        """Open (creating if needed) the saga store at ``database_url``.

        ``database_url`` falls back to ``SAGALOG_DATABASE_URL``, then to a SQLite file
        in the working directory. ``env`` adds or overrides eventsourcing settings.
        """
        if database_url is None and env is not None:
            database_url = env.get("SAGALOG_DATABASE_URL")
        self.database_url = parse_database_url(database_url)
        merged: dict[str, str] = self.database_url.application_env(
            self.name, {**os.environ, **(env or {})}
        )
        if env:
            merged.update(env)
        settings = {**os.environ, **merged}
        encrypted = encryption_configured(settings) and not (
            settings.get("CIPHER_TOPIC") or settings.get(f"{self.name.upper()}_CIPHER_TOPIC")
        )
        if encrypted:
            merged["CIPHER_TOPIC"] = _CIPHER_TOPIC
        self.clock: Clock = clock or utc_now
        self.registry = DefinitionRegistry(
            type(self).definitions if definitions is None else definitions
        )
        self._reactions = index_reactions(type(self).reactions)
        try:
            super().__init__(env=merged)
        except PersistenceError as exc:
            raise DatabaseUnavailableError(self.database_url, exc) from None
        if not isinstance(self.recorder, TimerIndex):
            raise TypeError(
                f"the recorder {type(self.recorder).__name__} keeps no timer index; build the "
                "environment with sagalog.process.parse_database_url(...).eventsourcing_env()"
            )
        self.timers: TimerIndex = self.recorder
        if encrypted and isinstance(self.mapper, SagaMapper):
            cipher = self.mapper.cipher
            assert isinstance(cipher, SagaCipher)
            if not isinstance(self.recorder, DataKeyTable):
                raise TypeError(f"the recorder {type(self.recorder).__name__} keeps no data keys")
            self._data_keys = SagaDataKeys(cipher.keyring, self.recorder)
            self.mapper.seal_payloads(self._data_keys)
        self._check_store_key()
        self._bulk_reader = self.recorder if isinstance(self.recorder, BulkEventReader) else None
        size = merged.get("SAGALOG_SAGA_CACHE_SIZE")
        self.saga_cache = SagaCache(int(size) if size else self.saga_cache_size)
        unbound = merged.get("SAGALOG_ACCEPT_UNBOUND_REPLIES", "").strip().lower()
        if unbound:
            self.accept_unbound_replies = unbound in ("1", "true", "yes", "on")
        self._close_at_exit()

    @property
    def encrypted(self) -> bool:
        """Whether sagas' payloads are encrypted, each under its own key (``forget`` works)."""
        return self._data_keys is not None

    def _check_store_key(self) -> None:
        """Refuse, in one line, a store whose events this manager's keys cannot read.

        Reads the first and the last event: a store written with encryption and
        opened without a key (or with keys that do not include the writing one)
        fails here, at once, rather than on the first saga read.
        """
        last = self.recorder.max_notification_id()
        if not last:
            return
        for position in dict.fromkeys((1, last)):
            for notification in self.recorder.select_notifications(position, 1):
                if self.mapper.cipher is None:
                    if is_encrypted(notification.state):
                        raise EncryptionKeyMissingError()
                else:
                    self.mapper.cipher.decrypt(notification.state)

    def construct_mapper(self) -> Mapper[UUID]:
        """A :class:`~sagalog.process.store.codec.SagaMapper`, unless ``MAPPER_TOPIC`` names one.

        It reads events as eventsourcing's ``Mapper`` does, with less work per
        event; the environment's compressor and cipher are passed to it.
        """
        if self.env.get(self.factory.MAPPER_TOPIC):
            return super().construct_mapper()
        return self.factory.mapper(transcoder=self.construct_transcoder(), mapper_class=SagaMapper)

    def construct_transcoder(self) -> Transcoder:
        """eventsourcing's JSON format, decoded faster, unless ``TRANSCODER_TOPIC`` names one.

        :class:`~sagalog.process.store.codec.FastJSONTranscoder` writes what
        eventsourcing's ``JSONTranscoder`` writes (some floats spelled otherwise,
        ``1e-7`` for ``1e-07``) and decodes its bytes to the same objects, so
        stores written by either keep loading in both. A transcoder named
        by the environment (``TRANSCODER_TOPIC``) is used as eventsourcing would;
        compressor and cipher settings apply either way (the mapper adds them).
        """
        if self.env.get(self.factory.TRANSCODER_TOPIC):
            return super().construct_transcoder()
        transcoder = FastJSONTranscoder()
        self.register_transcodings(transcoder)
        return transcoder

    # -- starting ----------------------------------------------------------------

    def start(
        self,
        saga_type: str,
        data: dict[str, Any],
        *,
        saga_id: UUID | None = None,
        version: int | None = None,
        message_id: str | None = None,
    ) -> UUID:
        """Start a saga of ``saga_type`` (its newest version unless ``version``).

        Idempotent for a given ``saga_id``: starting an existing saga returns its id
        and records nothing.
        """
        definition = self.registry.get(saga_type, version)
        new_id = saga_id if saga_id is not None else uuid4()
        saga = Saga.start(definition, data, saga_id=new_id, now=self.clock(), message_id=message_id)
        if saga_id is not None and self._exists(saga_id):
            return self._existing_start(saga_id, saga_type)
        try:
            self._record_sagas([saga])
        except RecordConflictError:
            return self._existing_start(new_id, saga_type)
        self.saga_cache.put(saga)
        return new_id

    def start_many(
        self,
        saga_type: str,
        datas: Iterable[dict[str, Any]],
        *,
        version: int | None = None,
    ) -> list[UUID]:
        """Start one new saga of ``saga_type`` per item of ``datas``; return their ids.

        The sagas get fresh ids and are committed together, up to
        ``max_batch_size`` per transaction: a list of orders arriving at once
        costs one commit instead of one each. Every item is validated before
        anything is written; an invalid one raises and nothing of its chunk is
        recorded. (To start a saga idempotently under a known id, use ``start``.)
        """
        definition = self.registry.get(saga_type, version)
        now = self.clock()
        sagas = [Saga.start(definition, data, saga_id=uuid4(), now=now) for data in datas]
        for first in range(0, len(sagas), self.max_batch_size):
            chunk = sagas[first : first + self.max_batch_size]
            self._record_sagas(chunk)
            for saga in chunk:
                self.saga_cache.put(saga)
        return [saga.id for saga in sagas]

    def _existing_start(self, saga_id: UUID, saga_type: str) -> UUID:
        existing = self.get(saga_id)
        if existing.saga_type != saga_type:
            raise InvalidTransitionError(
                f"saga {saga_id} already exists as a {existing.saga_type!r} saga, not {saga_type!r}"
            )
        return saga_id

    # -- replies -----------------------------------------------------------------

    def handle_step_completed(
        self,
        saga_id: UUID,
        step_name: str,
        result: Any = None,
        *,
        message_id: str | None = None,
        attempt: int | None = None,
    ) -> ReplyOutcome:
        """A participant reports step ``step_name`` done, with ``result``."""
        return self._transition(
            saga_id,
            lambda saga, now: saga.complete_step(
                step_name, result, now=now, attempt=attempt, message_id=message_id
            ),
        )

    def handle_step_failed(
        self,
        saga_id: UUID,
        step_name: str,
        error: str,
        *,
        message_id: str | None = None,
        attempt: int | None = None,
    ) -> ReplyOutcome:
        """A participant reports step ``step_name`` failed, because ``error``."""
        return self._transition(
            saga_id,
            lambda saga, now: saga.fail_step(
                step_name, error, now=now, attempt=attempt, message_id=message_id
            ),
        )

    def handle_compensation_completed(
        self,
        saga_id: UUID,
        step_name: str,
        *,
        message_id: str | None = None,
        attempt: int | None = None,
    ) -> ReplyOutcome:
        """A participant reports the compensation of ``step_name`` done."""
        return self._transition(
            saga_id,
            lambda saga, now: saga.complete_compensation(
                step_name, now=now, attempt=attempt, message_id=message_id
            ),
        )

    def handle_compensation_failed(
        self,
        saga_id: UUID,
        step_name: str,
        error: str,
        *,
        message_id: str | None = None,
        attempt: int | None = None,
    ) -> ReplyOutcome:
        """A participant reports the compensation of ``step_name`` failed."""
        return self._transition(
            saga_id,
            lambda saga, now: saga.fail_compensation(
                step_name, error, now=now, attempt=attempt, message_id=message_id
            ),
        )

    def answer(
        self,
        saga_id: UUID,
        step_name: str,
        kind: CommandKind,
        succeeded: bool,
        *,
        result: Any = None,
        error: str = "",
        attempt: int | None = None,
        message_id: str | None = None,
    ) -> ReplyOutcome:
        """Any outcome of any command of ``step_name``, given as data.

        Routes to what the matching ``handle_*`` method does (``kind`` action or
        compensation, ``succeeded`` or not) through ``Saga.answer``, the one
        routing that reply messages and upstream reactions use too: for callers
        that hold the kind and outcome as values rather than choosing a method.
        ``result`` counts only for a completed action, ``error`` only for a failure.
        """
        return self._transition(
            saga_id,
            lambda saga, now: saga.answer(
                step_name,
                kind,
                succeeded,
                now=now,
                result=result,
                error=error,
                attempt=attempt,
                message_id=message_id,
            ),
        )

    def handle(self, reply: ReplyInput) -> ReplyOutcome:
        """Handle a reply message (a :class:`Reply`, a dict or JSON), validated first."""
        message = self._bound(Reply.parse(reply))
        if self.tracer is None:
            return self._transition(
                message.saga_id, lambda saga, now: answer_reply(saga, message, now)
            )
        try:
            outcome = self._transition(
                message.saga_id, lambda saga, now: answer_reply(saga, message, now)
            )
        except SagalogError as exc:
            self.tracer.reply_handled(message, exc)
            raise
        self.tracer.reply_handled(message, outcome)
        return outcome

    def _bound(self, message: Reply) -> Reply:
        """``message``, if it names the command it answers (or unbound replies are accepted)."""
        if message.command_id is None and not self.accept_unbound_replies:
            raise UnexpectedReplyError(
                f"reply {message.message_id} names no command_id; a reply must name the "
                "command it answers (Reply.to(command, ...) does)"
            )
        return message

    def handle_many(
        self, replies: Iterable[ReplyInput], *, now: datetime | None = None
    ) -> list[ReplyResult]:
        """Handle many reply messages, across many sagas, in as few commits as possible.

        Returns one result per reply, in order: its :class:`ReplyOutcome`, or
        the typed error ``handle`` would have raised for it alone (an
        :class:`InvalidReplyError`, ``SagaNotFoundError``, ``UnexpectedReplyError``,
        …, or :class:`ConcurrencyConflictError`). A bad reply does not hold up
        the others.

        Up to ``max_batch_size`` replies are decided in order (replies to one
        saga one after another on the same saga) and all their transitions —
        events and wake-up times — are committed in **one** transaction. When
        that commit conflicts (another manager moved one of the sagas first),
        nothing of it is recorded and every reply of the chunk is handled again
        one by one, as ``handle`` does, so none is lost or applied twice. A
        reply counts as handled once its result is returned. If the database
        fails, the error is raised; chunks already returned stay committed, so
        hand the replies again: each has a ``message_id`` and a repeat is a
        duplicate that changes nothing.
        """
        items = list(replies)
        results: list[ReplyResult | None] = [None] * len(items)
        parsed: list[tuple[int, Reply]] = []
        for index, item in enumerate(items):
            try:
                parsed.append((index, self._bound(Reply.parse(item))))
            except (InvalidReplyError, UnexpectedReplyError) as exc:
                # Returned without its traceback, which would hold this frame and with
                # it every reply of the call in a cycle until the cyclic collector runs.
                results[index] = exc.with_traceback(None)
        for first in range(0, len(parsed), self.max_batch_size):
            self._handle_chunk(parsed[first : first + self.max_batch_size], results, now)
        if self.tracer is not None:
            for index, message in parsed:
                answered = results[index]
                if answered is not None:
                    self.tracer.reply_handled(message, answered)
        return [result for result in results if result is not None]

    # -- the clock ---------------------------------------------------------------

    def tick(self, now: datetime | None = None, *, limit: int = 1000) -> int:
        """Fire the timeouts and retries due at ``now``; return how many sagas moved.

        The due sagas come from the timer index (an indexed query), not from
        loading every saga. Handles at most ``limit`` sagas per call.
        """
        moment = now if now is not None else self.clock()
        moved = 0
        for saga_id, _due in self.timers.select_due_timers(moment, limit):
            fired = self._transition(saga_id, lambda saga, _now: saga.fire_due(moment), now=moment)
            if fired:
                moved += 1
        return moved

    def run(
        self,
        stop: threading.Event | None = None,
        *,
        interval: float = 0.5,
        on_tick: Callable[[int], None] | None = None,
    ) -> None:
        """Tick every ``interval`` seconds until ``stop`` is set (the worker loop)."""

        def step() -> int:
            moved = self.tick()
            if on_tick is not None:
                on_tick(moved)
            return moved

        def retrying(exc: BaseException, _delay: float) -> None:
            logger.warning("tick failed, retrying: %s", first_line(exc))

        run_until_stopped(
            step,
            stop or threading.Event(),
            interval=interval,
            retry_on=(PersistenceError,),
            on_error=retrying,
        )

    # -- operator actions --------------------------------------------------------

    def retry(
        self,
        saga_id: UUID,
        *,
        actor: str,
        reason: str,
        patch: dict[str, Any] | None = None,
    ) -> None:
        """Try the dead-lettered command of ``saga_id`` again (recorded with who and why).

        ``patch`` corrects the saga's data first (top-level keys replaced or added; see
        ``Saga.retry``): a bad patch raises :class:`InvalidPayloadError` and records nothing.
        """
        self._transition(
            saga_id,
            lambda saga, now: saga.retry(actor=actor, reason=reason, now=now, patch=patch),
        )

    def resolve(self, saga_id: UUID, *, actor: str, reason: str) -> None:
        """Mark the dead-lettered command of ``saga_id`` done by hand; the saga moves on."""
        self._transition(
            saga_id, lambda saga, now: saga.resolve(actor=actor, reason=reason, now=now)
        )

    def abort(self, saga_id: UUID, *, actor: str, reason: str) -> None:
        """Stop the running saga ``saga_id`` and compensate what it has done."""
        self._transition(saga_id, lambda saga, now: saga.abort(actor=actor, reason=reason, now=now))

    def compensate(self, saga_id: UUID, *, actor: str, reason: str) -> list[str]:
        """Compensate the steps of the ``FAILED`` saga ``saga_id`` that may be in force.

        For sagas recorded before uncertain steps were compensated, and for late
        successes that came after a saga ended (``Saga.effects_in_force``).
        Returns the steps whose compensation is dispatched, newest first.
        """
        return self._transition(
            saga_id, lambda saga, now: saga.compensate(actor=actor, reason=reason, now=now)
        )

    def forget(self, saga_id: UUID, *, actor: str, reason: str) -> bool:
        """Erase the data of the ended saga ``saga_id``: record ``SagaForgotten``, destroy its key.

        Its events still replay (statuses, steps, times, command ids); every
        payload reads as ``<erased>``. Needs encryption on
        (``SAGALOG_ENCRYPTION_KEYS``); a running saga is refused. Forgetting a
        saga again destroys its key again (in case that failed) and records
        nothing. Returns whether a key was destroyed by this call.
        """
        keys = self._data_keys
        if keys is None:
            raise ErasureError(
                "forget needs encryption at rest: set SAGALOG_ENCRYPTION_KEYS "
                "(docs/security.md); without it the data is stored in the clear"
            )
        first = self.recorder.select_events(saga_id, limit=1)
        if not first:
            raise SagaNotFoundError(f"no saga with id {saga_id}")
        if not is_encrypted(first[0].state):
            raise ErasureError(
                f"saga {saga_id} was recorded before encryption was turned on: its data is "
                "stored in the clear and destroying a key cannot erase it"
            )
        self._transition(
            saga_id, lambda saga, now: saga.forget(actor=actor, reason=reason, now=now)
        )
        destroyed = keys.forget(saga_id)
        self.saga_cache.discard(saga_id)
        logger.info("saga %s forgotten by %s: its data key is destroyed", saga_id, actor)
        return destroyed

    # -- reading -----------------------------------------------------------------

    def get(self, saga_id: UUID, version: int | None = None) -> Saga:
        """The saga ``saga_id`` as it is now, or as it was at ``version``."""
        try:
            saga: object = self.repository.get(saga_id, version=version, projector_func=fold_events)
        except AggregateNotFoundError:
            raise SagaNotFoundError(f"no saga with id {saga_id}") from None
        if not isinstance(saga, Saga):
            raise SagaNotFoundError(f"{saga_id} is not a saga")
        return saga

    def get_many(self, saga_ids: Iterable[UUID]) -> dict[UUID, Saga]:
        """The sagas ``saga_ids`` as they are now, read in bulk, in the order asked for.

        Unknown ids are left out. One query per ``max_batch_size`` ids instead of
        one per saga, then each saga is rebuilt from its events, so rebuilding
        many sagas (recovery, audits, a batch of replies) costs their decoding
        rather than a round trip each. It reads every event of each saga
        (snapshots, which sagalog does not take, would be ignored).
        """
        ids = list(dict.fromkeys(saga_ids))
        found: dict[UUID, Saga] = {}
        if self._bulk_reader is None:
            for saga_id in ids:
                try:
                    found[saga_id] = self.get(saga_id)
                except SagaNotFoundError:
                    continue
            return found
        mapper = self.mapper
        event_from_row: Callable[[UUID, int, str, bytes], DomainEventProtocol[Any]] = (
            mapper.event_from_row
            if isinstance(mapper, SagaMapper)
            else lambda saga_id, version, topic, state: mapper.to_domain_event(
                StoredEvent(saga_id, version, topic, state)
            )
        )
        for first in range(0, len(ids), self.max_batch_size):
            page_ids = ids[first : first + self.max_batch_size]
            page = self._bulk_reader.select_event_rows_of(page_ids)
            if self._data_keys is not None:
                self._data_keys.prefetch(page_ids)  # the page's keys in one query
            for saga_id in page_ids:  # in the order asked for
                rows = page.get(saga_id)
                if not rows:
                    continue
                saga = fold_events(None, [event_from_row(saga_id, *row) for row in rows])
                if isinstance(saga, Saga):
                    found[saga_id] = saga
        return found

    def history(self, saga_id: UUID) -> list[Saga.Event]:
        """The saga's events, oldest first."""
        events = [e for e in self.events.get(saga_id) if isinstance(e, Saga.Event)]
        if not events:
            raise SagaNotFoundError(f"no saga with id {saga_id}")
        return events

    def _exists(self, saga_id: UUID) -> bool:
        return bool(self.recorder.select_events(saga_id, limit=1))
