"""``SagaManager``: the process manager, an eventsourcing ``ProcessApplication``.

It turns replies, upstream domain events and clock ticks into saga events, and
records them durably. The flow of one reply (see docs/process-manager.md):

1. *route*: find the saga by its id (the correlation id) — unknown id is an error;
2. *decide*: the ``Saga`` aggregate judges the reply (apply / duplicate / stale /
   invalid) and triggers events, including the next command to dispatch;
3. *record*: the new events, the saga's new wake-up time and — when the reply was
   consumed from a log — the tracking record are committed in one transaction;
4. on an optimistic-concurrency conflict (another manager recorded a transition
   of the same saga first) the saga is reloaded and the reply decided again.

``handle_many`` runs the same flow for many replies, across many sagas, and
commits all their transitions in one transaction (see its docstring for what
happens on a conflict or a bad reply). The sagas recorded last are kept in a
bounded :class:`~sagalog.process.cache.SagaCache`, so the next decision about a
saga usually needs no read; the store's optimistic-concurrency check, not the
cache, guarantees that nothing is decided on a stale saga and recorded.

Commands are not sent from here: the command relay follows this application's
notification log (the log *is* the outbox), so a command is never sent unless
its event is committed.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, ClassVar, TypeAlias, TypeVar, cast
from uuid import UUID, uuid4

from eventsourcing.application import AggregateNotFoundError, ProcessingEvent
from eventsourcing.domain import DomainEventProtocol
from eventsourcing.persistence import (
    Mapper,
    PersistenceError,
    RecordConflictError,
    StoredEvent,
    Tracking,
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
from sagalog.process.cache import SagaCache
from sagalog.process.lifecycle import ClosedAtExit
from sagalog.process.messages import InvalidReplyError, Reply
from sagalog.process.reactions import Reaction, StartSaga, event_message_id
from sagalog.process.registry import DefinitionRegistry
from sagalog.process.store.codec import FastJSONTranscoder, SagaMapper
from sagalog.process.store.loops import run_until_stopped
from sagalog.process.store.timers import SAGA_TIMERS_KWARG, BulkEventReader, TimerIndex
from sagalog.process.store.topics import register_moved_topics
from sagalog.process.store.url import DatabaseUnavailableError, parse_database_url

logger = logging.getLogger("sagalog.manager")

T = TypeVar("T")

Clock = Callable[[], datetime]

#: What ``handle_many`` reports for one reply: its outcome, or the typed error
#: (a :class:`~sagalog.domain.SagalogError`, or :class:`ConcurrencyConflictError`)
#: that ``handle`` would have raised for it alone.
ReplyResult: TypeAlias = ReplyOutcome | Exception

ReplyInput: TypeAlias = Reply | dict[str, Any] | str | bytes


def utc_now() -> datetime:
    """The wall clock in UTC; the manager's default clock."""
    return datetime.now(UTC)


class ConcurrencyConflictError(RecordConflictError):
    """A transition kept conflicting with other writers past the retry budget."""


def project_saga(saga: Saga | None, events: Iterable[DomainEventProtocol[Any]]) -> Saga | None:
    """Rebuild a saga from its events: eventsourcing's projector without its assert.

    eventsourcing's ``project_aggregate`` asserts ``isinstance(event,
    CanMutateProtocol)`` for every event; on Python 3.11 that runtime-protocol
    check costs about as much as decoding the event. Every event read from a
    saga's stream is a ``Saga.Event`` (``mutate`` is called on it either way).
    """
    aggregate: Any = saga
    for event in events:
        aggregate = cast("Saga.Event", event).mutate(aggregate)
    return cast("Saga | None", aggregate)


class SagaManager(ClosedAtExit, ProcessApplication[UUID]):
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
        register_moved_topics()  # an env may still name a recorder by its old topic
        merged: dict[str, str] = self.database_url.application_env(
            self.name, {**os.environ, **(env or {})}
        )
        if env:
            merged.update(env)
        self.clock: Clock = clock or utc_now
        self.registry = DefinitionRegistry(
            type(self).definitions if definitions is None else definitions
        )
        self._reactions: dict[type[Any], list[Reaction]] = {}
        for reaction in type(self).reactions:
            self._reactions.setdefault(reaction.event, []).append(reaction)
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
        self._bulk_reader = self.recorder if isinstance(self.recorder, BulkEventReader) else None
        size = merged.get("SAGALOG_SAGA_CACHE_SIZE")
        self.saga_cache = SagaCache(int(size) if size else self.saga_cache_size)
        unbound = merged.get("SAGALOG_ACCEPT_UNBOUND_REPLIES", "").strip().lower()
        if unbound:
            self.accept_unbound_replies = unbound in ("1", "true", "yes", "on")
        self._close_at_exit()

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
        return self._transition(message.saga_id, lambda saga, now: _answer(saga, message, now))

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
        return [result for result in results if result is not None]

    def _handle_chunk(
        self,
        chunk: Sequence[tuple[int, Reply]],
        results: list[ReplyResult | None],
        now: datetime | None,
    ) -> None:
        """Decide ``chunk`` on its sagas, commit once; redo one by one what that cannot."""
        moment = now if now is not None else self.clock()
        sagas: dict[UUID, Saga] = {}
        for saga_id in dict.fromkeys(reply.saga_id for _index, reply in chunk):
            cached = self.saga_cache.take(saga_id)
            if cached is not None:
                sagas[saga_id] = cached
        from_cache = set(sagas)
        missing = [reply.saga_id for _index, reply in chunk if reply.saga_id not in sagas]
        sagas.update(self.get_many(missing))
        decided: dict[UUID, list[tuple[int, Reply]]] = {}
        one_by_one: dict[UUID, list[tuple[int, Reply]]] = {}
        for index, reply in chunk:
            saga_id = reply.saga_id
            if saga_id in one_by_one:
                one_by_one[saga_id].append((index, reply))
                continue
            saga = sagas.get(saga_id)
            if saga is None:
                results[index] = SagaNotFoundError(f"no saga with id {saga_id}")
                continue
            decided.setdefault(saga_id, []).append((index, reply))
            version = saga.version
            outcome: ReplyResult
            try:
                outcome = _answer(saga, reply, moment)
            except SagalogError as exc:
                outcome = exc.with_traceback(None)  # (see handle_many)
            # A cached copy may be stale, so only a decision that records something
            # is trusted on it (the commit checks its version); a failed decision
            # that changed the saga halfway cannot be recorded. Either way, that
            # saga's replies are decided again one by one, on a fresh read.
            suspect = saga_id in from_cache and not (
                isinstance(outcome, ReplyOutcome) and outcome.applied
            )
            if suspect or (isinstance(outcome, Exception) and saga.version != version):
                del sagas[saga_id]
                one_by_one[saga_id] = decided.pop(saga_id)
                continue
            results[index] = outcome
        try:
            self._record_sagas([saga for saga in sagas.values() if saga.pending_events])
        except RecordConflictError:
            logger.debug("conflict in a batch of %d replies; handling them one by one", len(chunk))
            for saga_id, replies in decided.items():
                one_by_one.setdefault(saga_id, []).extend(replies)
        else:
            for saga in sagas.values():
                self.saga_cache.put(saga)
        for replies in one_by_one.values():
            for index, reply in sorted(replies, key=lambda item: item[0]):
                try:
                    results[index] = self.handle(reply)
                except (SagalogError, ConcurrencyConflictError) as exc:
                    results[index] = exc.with_traceback(None)  # (see handle_many)

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

    def retry(self, saga_id: UUID, *, actor: str, reason: str) -> None:
        """Try the dead-lettered command of ``saga_id`` again (recorded with who and why)."""
        self._transition(saga_id, lambda saga, now: saga.retry(actor=actor, reason=reason, now=now))

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

    # -- reading -----------------------------------------------------------------

    def get(self, saga_id: UUID, version: int | None = None) -> Saga:
        """The saga ``saga_id`` as it is now, or as it was at ``version``."""
        try:
            saga: object = self.repository.get(
                saga_id, version=version, projector_func=project_saga
            )
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
            for saga_id in page_ids:  # in the order asked for
                rows = page.get(saga_id)
                if not rows:
                    continue
                saga = project_saga(None, [event_from_row(saga_id, *row) for row in rows])
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

    # -- recording ---------------------------------------------------------------

    def _record_sagas(self, sagas: Sequence[Saga]) -> None:
        """Commit the pending events and wake-up times of ``sagas`` in one transaction.

        The events are collected straight from the sagas: eventsourcing's
        ``collect_events`` would run two runtime-protocol ``isinstance`` checks
        per saga, which cost more than the rest of collecting.
        """
        if not sagas:
            return
        processing: ProcessingEvent[UUID] = ProcessingEvent()
        timers: dict[UUID, datetime | None] = {}
        for saga in sagas:
            processing.events.extend(saga.collect_events())
            processing.aggregates[saga.id] = saga
            timers[saga.id] = saga.next_wakeup
        processing.saved_kwargs[SAGA_TIMERS_KWARG] = timers
        recordings = self._record(processing)
        self._take_snapshots(processing)
        self._notify(recordings)

    def _transition(
        self,
        saga_id: UUID,
        decide: Callable[[Saga, datetime], T],
        *,
        now: datetime | None = None,
    ) -> T:
        """Load (from the cache if there), decide, record; on a conflict reload, decide again.

        A decision on a cached saga that records nothing, or raises, is made
        again on a fresh read: the cached copy may be stale (see
        :mod:`sagalog.process.cache`). The saga goes back into the cache only
        once its events are committed.
        """
        if not isinstance(saga_id, UUID):
            raise SagaNotFoundError(f"saga ids are UUIDs, not {type(saga_id).__name__}")
        fresh = False
        for attempt in range(self.max_conflict_retries):
            saga = None if fresh else self.saga_cache.take(saga_id)
            cached = saga is not None
            if saga is None:
                saga = self.get(saga_id)
            try:
                answer = decide(saga, now if now is not None else self.clock())
            except SagalogError:
                if cached:
                    fresh = True
                    continue
                raise
            if not saga.pending_events:
                if cached:
                    fresh = True
                    continue
                self.saga_cache.put(saga)
                return answer
            try:
                self._record_sagas([saga])
            except RecordConflictError:
                logger.debug("conflict on saga %s (try %d); reloading", saga_id, attempt + 1)
                fresh = True
                time.sleep(0.001 * attempt)
                continue
            self.saga_cache.put(saga)
            return answer
        raise ConcurrencyConflictError(
            f"saga {saga_id}: still conflicting after {self.max_conflict_retries} tries"
        )

    # -- reactions to upstream applications ---------------------------------------

    def process_event(self, domain_event: DomainEventProtocol[Any], tracking: Tracking) -> None:
        """Process one upstream event exactly once; re-decide on a version conflict."""
        for attempt in range(self.max_conflict_retries):
            processing: ProcessingEvent[UUID] = ProcessingEvent(tracking=tracking)
            self.policy(domain_event, processing)
            try:
                recordings = self._record(processing)
            except RecordConflictError:
                done = self.recorder.max_tracking_id(tracking.application_name) or 0
                if done >= tracking.notification_id:
                    return  # another manager processed this upstream event already
                time.sleep(0.001 * attempt)
                continue
            self._take_snapshots(processing)
            self.notify(processing.events)
            self._notify(recordings)
            return
        raise ConcurrencyConflictError(
            f"upstream event {event_message_id(domain_event)} kept conflicting"
        )

    def policy(
        self, domain_event: DomainEventProtocol[Any], processing_event: ProcessingEvent[UUID]
    ) -> None:
        """Apply every declared reaction to ``domain_event`` (none: the event is ignored)."""
        reactions = [r for r in self._reactions_for(type(domain_event)) if r.applies(domain_event)]
        if not reactions:
            return
        timers: dict[UUID, datetime | None] = processing_event.saved_kwargs.setdefault(
            SAGA_TIMERS_KWARG, {}
        )
        cause = event_message_id(domain_event)
        now = self.clock()
        for reaction in reactions:
            saga = self._react(reaction, domain_event, cause, now)
            if saga is not None and saga.pending_events:
                processing_event.collect_events(saga)
                timers[saga.id] = saga.next_wakeup

    def _reactions_for(self, event_type: type[Any]) -> list[Reaction]:
        found: list[Reaction] = []
        for cls in event_type.__mro__:
            found.extend(self._reactions.get(cls, ()))
        return found

    def _react(self, reaction: Reaction, event: Any, cause: str, now: datetime) -> Saga | None:
        saga_id = reaction.saga_id(event)
        self.saga_cache.discard(saga_id)  # recorded here, outside the cache
        if isinstance(reaction, StartSaga):
            if self._exists(saga_id):
                return None
            definition = self.registry.get(reaction.saga_type)
            return Saga.start(
                definition, reaction.data(event), saga_id=saga_id, now=now, message_id=cause
            )
        try:
            saga = self.get(saga_id)
        except SagaNotFoundError:
            logger.warning("%s refers to unknown saga %s; ignored", cause, saga_id)
            return None
        reaction.decide(saga, event, now=now, cause=cause)
        return saga


def _answer(saga: Saga, message: Reply, now: datetime) -> ReplyOutcome:
    """Decide the reply ``message`` on ``saga``."""
    return saga.answer(
        message.step,
        message.kind,
        message.outcome == "completed",
        now=now,
        result=message.result,
        error=message.error or "",
        attempt=message.attempt,
        message_id=message.message_id,
        command_id=message.command_id,
    )
