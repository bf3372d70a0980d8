"""``handle_many`` and ``start_many``: many transitions, one commit, nothing lost or doubled.

Commits are counted as calls of the recorder's ``insert_events`` (each is one
transaction on every backend). The conflict tests use two managers on one
database: the second one moves a saga that the first one still has cached.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any
from uuid import UUID, uuid4

import pytest
from eventsourcing.persistence import OperationalError, StoredEvent
from support.sagas import ORDER

from sagalog.domain import (
    CommandKind,
    Outcome,
    ReplyOutcome,
    SagaNotFoundError,
    SagaStatus,
    UnexpectedReplyError,
    command_id_for,
)
from sagalog.process import InvalidReplyError, Reply, SagaManager
from sagalog.process.clock import ManualClock


class CommitCounter:
    """Counts the recorder's ``insert_events`` calls: one transaction each."""

    def __init__(self, manager: SagaManager) -> None:
        self.calls = 0
        self.original = manager.recorder.insert_events
        setattr(manager.recorder, "insert_events", self)  # noqa: B010 - one instance only

    def __call__(self, stored_events: Sequence[StoredEvent], **kwargs: Any) -> Any:
        self.calls += 1
        return self.original(stored_events, **kwargs)


def done(saga_id: UUID, step: str, message_id: str | None = None, **fields: Any) -> Reply:
    attempt = fields.get("attempt") or 1
    return Reply(
        message_id=message_id or f"{saga_id}:{step}",
        saga_id=saga_id,
        command_id=command_id_for(saga_id, step, CommandKind.ACTION, attempt),
        step=step,
        outcome="completed",
        **fields,
    )


def names(manager: SagaManager, saga_id: UUID) -> list[str]:
    return [type(e).__name__ for e in manager.history(saga_id)]


def test_replies_to_many_sagas_are_committed_in_one_transaction(manager: SagaManager) -> None:
    ids = [manager.start("Order", {"order": i}) for i in range(5)]
    commits = CommitCounter(manager)
    results = manager.handle_many([done(saga_id, "reserve") for saga_id in ids])
    assert results == [ReplyOutcome(Outcome.APPLIED)] * 5
    assert commits.calls == 1
    for saga_id in ids:
        assert manager.get(saga_id).current_step == "charge"


def test_replies_to_one_saga_are_decided_in_order_within_a_batch(manager: SagaManager) -> None:
    saga_id = manager.start("Order", {"order": 1})
    steps = ("reserve", "charge", "ship", "notify")
    results = manager.handle_many([done(saga_id, step) for step in steps])
    assert all(isinstance(r, ReplyOutcome) and r.applied for r in results)
    assert manager.get(saga_id).status is SagaStatus.COMPLETED
    assert names(manager, saga_id).count("StepCompleted") == 4


def test_bad_replies_get_typed_errors_and_do_not_hold_up_the_others(
    manager: SagaManager,
) -> None:
    first = manager.start("Order", {"order": 1})
    second = manager.start("Order", {"order": 2})
    results = manager.handle_many(
        [
            done(first, "reserve"),
            {"message_id": "m", "saga_id": str(second)},  # malformed: no step, no outcome
            done(uuid4(), "reserve"),  # unknown saga
            done(second, "charge"),  # never dispatched
            done(first, "reserve"),  # the same message again
            done(second, "reserve", message_id="second-reserve"),
        ]
    )
    assert results[0] == ReplyOutcome(Outcome.APPLIED)
    assert isinstance(results[1], InvalidReplyError)
    assert isinstance(results[2], SagaNotFoundError)
    assert isinstance(results[3], UnexpectedReplyError)
    assert isinstance(results[4], ReplyOutcome)
    assert results[4].outcome is Outcome.DUPLICATE
    assert results[5] == ReplyOutcome(Outcome.APPLIED)
    assert names(manager, first).count("StepCompleted") == 1
    assert names(manager, second).count("StepCompleted") == 1


def test_an_empty_batch_records_nothing(manager: SagaManager) -> None:
    commits = CommitCounter(manager)
    assert manager.handle_many([]) == []
    assert commits.calls == 0


def test_long_batches_are_committed_in_chunks(manager: SagaManager) -> None:
    manager.max_batch_size = 3
    ids = manager.start_many("Order", [{"order": i} for i in range(7)])
    commits = CommitCounter(manager)
    results = manager.handle_many([done(saga_id, "reserve") for saga_id in ids])
    assert all(isinstance(r, ReplyOutcome) and r.applied for r in results)
    assert commits.calls == 3


def test_start_many_starts_every_saga_in_one_transaction(manager: SagaManager) -> None:
    commits = CommitCounter(manager)
    ids = manager.start_many("Order", [{"order": i} for i in range(4)])
    assert commits.calls == 1
    assert len(set(ids)) == 4
    for saga_id in ids:
        assert names(manager, saga_id) == ["SagaStarted", "StepDispatched"]
    assert manager.timers.count_timers() == 4


def test_a_failed_commit_records_nothing_and_a_retry_applies_each_reply_once(
    manager: SagaManager,
) -> None:
    ids = [manager.start("Order", {"order": i}) for i in range(3)]
    original = manager.recorder.insert_events

    def failing(stored_events: Sequence[StoredEvent], **kwargs: Any) -> Any:
        raise OperationalError("connection lost")

    setattr(manager.recorder, "insert_events", failing)  # noqa: B010
    with pytest.raises(OperationalError):
        manager.handle_many([done(saga_id, "reserve") for saga_id in ids])
    setattr(manager.recorder, "insert_events", original)  # noqa: B010
    for saga_id in ids:  # nothing was recorded, and nothing stale stayed cached
        assert manager.get(saga_id).current_step == "reserve"
    results = manager.handle_many([done(saga_id, "reserve") for saga_id in ids])
    assert results == [ReplyOutcome(Outcome.APPLIED)] * 3
    for saga_id in ids:
        assert names(manager, saga_id).count("StepCompleted") == 1


def test_the_saga_cache_is_bounded_and_keeps_no_ended_saga(
    database_url: str, clock: ManualClock
) -> None:
    manager = SagaManager([ORDER], database_url, clock=clock, env={"SAGALOG_SAGA_CACHE_SIZE": "2"})
    try:
        ids = manager.start_many("Order", [{"order": i} for i in range(5)])
        assert len(manager.saga_cache) == 2
        manager.handle_many([done(ids[0], step) for step in ("reserve", "charge", "ship")])
        manager.handle_many([done(ids[0], "notify")])
        assert manager.get(ids[0]).status is SagaStatus.COMPLETED
        assert manager.saga_cache.take(ids[0]) is None
    finally:
        manager.close()


@pytest.fixture
def two_managers(
    database_url: str, clock: ManualClock, backend: str
) -> Iterator[tuple[SagaManager, SagaManager]]:
    if backend == "memory":
        pytest.skip("managers cannot share an in-memory store")
    first = SagaManager([ORDER], database_url, clock=clock)
    second = SagaManager([ORDER], database_url, clock=clock)
    yield first, second
    first.close()
    second.close()


def test_a_conflict_in_a_batch_redoes_it_one_by_one_without_doubling(
    two_managers: tuple[SagaManager, SagaManager],
) -> None:
    mine, other = two_managers
    moved, untouched = mine.start_many("Order", [{"order": 1}, {"order": 2}])
    # The other manager records the reply first; mine still has the saga cached.
    assert other.handle(done(moved, "reserve")).applied
    commits = CommitCounter(mine)
    results = mine.handle_many([done(moved, "reserve"), done(untouched, "reserve")])
    assert isinstance(results[0], ReplyOutcome)
    assert results[0].outcome is Outcome.DUPLICATE
    assert results[1] == ReplyOutcome(Outcome.APPLIED)
    assert commits.calls == 2  # the conflicting batch, then the applied reply alone
    assert names(mine, moved).count("StepCompleted") == 1
    assert names(mine, untouched).count("StepCompleted") == 1


@pytest.mark.parametrize("batched", [True, False], ids=["handle_many", "handle"])
def test_a_reply_judged_on_a_stale_cached_saga_is_judged_again_on_a_fresh_read(
    two_managers: tuple[SagaManager, SagaManager], batched: bool
) -> None:
    mine, other = two_managers
    saga_id = mine.start("Order", {"order": 1})
    other.handle(done(saga_id, "reserve"))
    # On mine's cached copy "charge" was never dispatched; in the store it was.
    reply = done(saga_id, "charge")
    result = mine.handle_many([reply])[0] if batched else mine.handle(reply)
    assert result == ReplyOutcome(Outcome.APPLIED)
    assert mine.get(saga_id).current_step == "ship"


def test_get_many_rebuilds_each_saga_as_get_does_and_leaves_out_unknown_ids(
    manager: SagaManager,
) -> None:
    manager.max_batch_size = 2
    ids = manager.start_many("Order", [{"order": i} for i in range(5)])
    manager.handle_many([done(ids[1], "reserve"), done(ids[3], "reserve")])
    manager.handle_step_failed(ids[3], "charge", "declined")
    unknown = uuid4()
    found = manager.get_many([*ids, unknown, ids[0]])
    assert list(found) == ids
    for saga_id in ids:
        assert found[saga_id].__dict__ == manager.get(saga_id).__dict__


def test_bulk_reads_keep_each_stream_apart_even_one_that_does_not_start_at_version_one(
    manager: SagaManager, backend: str
) -> None:
    # The PostgreSQL bulk read sends a stream's id only with its version-1 event and
    # checks that the rows after it follow on; a stream written some other way (no
    # saga's is) must still come back whole and apart from its neighbours.
    ids = manager.start_many("Order", [{"order": i} for i in range(3)])
    manager.handle_many([done(ids[0], "reserve"), done(ids[1], "reserve")])
    first = manager.recorder.select_events(ids[1], limit=1)[0]
    odd = UUID(int=ids[1].int + 1)  # sorts right after ids[1]: its rows follow them
    head = len(manager.recorder.select_events(ids[1]))
    manager.recorder.insert_events(
        [
            StoredEvent(odd, head + 1, first.topic, first.state),
            StoredEvent(odd, head + 2, first.topic, first.state),
        ]
    )
    reader = manager.recorder
    assert hasattr(reader, "select_event_rows_of")
    rows = reader.select_event_rows_of([*ids, odd])
    assert [version for version, _topic, _state in rows[odd]] == [head + 1, head + 2]
    for saga_id in ids:
        assert rows[saga_id] == [
            (e.originator_version, e.topic, e.state)
            for e in manager.recorder.select_events(saga_id)
        ]
