"""How the manager commits transitions: one saga at a time, or a batch in one transaction.

A transition is load, decide, record. :class:`CommitsTransitions` gives
``SagaManager`` the two ways of recording it: ``_transition`` for one saga
(re-decided on a fresh read after an optimistic-concurrency conflict, up to
``max_conflict_retries`` times) and ``_handle_chunk`` for many replies across
many sagas, all committed by one ``_record_sagas`` call, redone one by one if
that commit conflicts. The store's version check, not the saga cache, keeps a
decision on a stale saga from being recorded.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeAlias, TypeVar
from uuid import UUID

from eventsourcing.application import ProcessingEvent
from eventsourcing.persistence import RecordConflictError
from eventsourcing.system import ProcessApplication

from sagalog.domain import ReplyOutcome, Saga, SagalogError, SagaNotFoundError
from sagalog.process.cache import SagaCache
from sagalog.process.clock import Clock
from sagalog.process.messages import Reply, ReplyInput
from sagalog.process.store.shredding import DATA_KEYS_KWARG, SagaDataKeys
from sagalog.process.store.timers import SAGA_TIMERS_KWARG
from sagalog.process.tracing import TransitionTracer

__all__ = ["CommitsTransitions", "ConcurrencyConflictError", "ReplyResult", "answer_reply"]

logger = logging.getLogger("sagalog.manager")

T = TypeVar("T")

#: What ``handle_many`` reports for one reply: its outcome, or the typed error
#: (a :class:`~sagalog.domain.SagalogError`, or :class:`ConcurrencyConflictError`)
#: that ``handle`` would have raised for it alone.
ReplyResult: TypeAlias = ReplyOutcome | Exception


class ConcurrencyConflictError(SagalogError, RecordConflictError):
    """A transition kept conflicting with other writers past the retry budget."""


def answer_reply(saga: Saga, message: Reply, now: datetime) -> ReplyOutcome:
    """Decide the reply ``message`` on ``saga`` through ``Saga.answer``."""
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


class CommitsTransitions(ProcessApplication[UUID]):
    """Mixin of ``SagaManager``: decide on a saga, commit its events and wake-up time.

    The attributes and methods declared without a body here are ``SagaManager``'s.
    """

    clock: Clock
    saga_cache: SagaCache
    max_conflict_retries: int
    #: Each saga's data key (crypto-shredding), when encryption is on.
    _data_keys: SagaDataKeys | None = None
    #: Told of every commit when tracing is on (``None``: off, the default).
    tracer: TransitionTracer | None = None

    if TYPE_CHECKING:

        def get(self, saga_id: UUID, version: int | None = None) -> Saga: ...

        def get_many(self, saga_ids: Iterable[UUID]) -> dict[UUID, Saga]: ...

        def handle(self, reply: ReplyInput) -> ReplyOutcome: ...

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
        keys = self._data_keys
        new_ids: list[UUID] = []
        if keys is not None:
            # A new saga's data key is written in the transaction of its first events.
            new_ids = [
                saga.id
                for saga in sagas
                if saga.pending_events and isinstance(saga.pending_events[0], Saga.SagaStarted)
            ]
            processing.saved_kwargs[DATA_KEYS_KWARG] = keys.new_keys(new_ids)
        tracer = self.tracer
        transitions: list[tuple[Saga, Sequence[Any]]] = []
        for saga in sagas:
            events = saga.collect_events()
            processing.events.extend(events)
            processing.aggregates[saga.id] = saga
            timers[saga.id] = saga.next_wakeup
            if tracer is not None:
                transitions.append((saga, events))
        started_ns = time.time_ns() if tracer is not None else 0
        processing.saved_kwargs[SAGA_TIMERS_KWARG] = timers
        try:
            recordings = self._record(processing)
        except BaseException:
            if keys is not None:
                keys.discard(new_ids)  # not committed: another manager's may be the saga's
            raise
        if tracer is not None:
            tracer.recorded(transitions, started_ns, time.time_ns())
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
                outcome = answer_reply(saga, reply, moment)
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
