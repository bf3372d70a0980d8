"""The log cursor: head, lag, batches and drain against a real manager's log, on every backend."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from eventsourcing.application import Application

from sagalog.process import SagaManager
from sagalog.projections import SagaProjector
from sagalog.projections.cursor import LogCursor


class CountingCursor(LogCursor):
    """A follower that keeps its position in memory and records the batches it read."""

    def __init__(self, app: Application[Any], *, batch_size: int) -> None:
        super().__init__(app, batch_size=batch_size)
        self.position = 0
        self.batches: list[list[int]] = []
        self.stop_after_first: threading.Event | None = None

    def tracked_position(self) -> int:
        return self.position

    def pump(self) -> int:
        batch = [notification.id for notification in self.read_after(self.position)]
        if batch:
            self.batches.append(batch)
            self.position = batch[-1]
        if self.stop_after_first is not None:
            self.stop_after_first.set()
        return len(batch)


def _start(manager: SagaManager, sagas: int) -> None:
    for number in range(sagas):
        manager.start("Shop", {"order": number})


def test_lag_is_how_far_the_position_is_behind_the_head(manager: SagaManager) -> None:
    cursor = CountingCursor(manager, batch_size=10)
    assert (cursor.head(), cursor.lag()) == (0, 0)
    _start(manager, 3)
    head = manager.recorder.max_notification_id()
    assert head is not None
    assert head > 3
    assert (cursor.head(), cursor.lag()) == (head, head)
    cursor.position = 2
    assert cursor.lag() == head - 2


def test_drain_pumps_batch_by_batch_up_to_the_head_then_stops(manager: SagaManager) -> None:
    _start(manager, 3)
    head = manager.recorder.max_notification_id() or 0
    cursor = CountingCursor(manager, batch_size=2)
    assert cursor.drain() == head
    assert [len(batch) for batch in cursor.batches[:-1]] == [2] * (len(cursor.batches) - 1)
    assert [n for batch in cursor.batches for n in batch] == list(range(1, head + 1))
    assert cursor.lag() == 0
    assert cursor.drain() == 0  # nothing new: one empty read, no batch
    _start(manager, 1)
    assert cursor.drain() == (manager.recorder.max_notification_id() or 0) - head


def test_drain_ends_between_batches_when_stop_is_set(manager: SagaManager) -> None:
    _start(manager, 3)
    cursor = CountingCursor(manager, batch_size=2)
    cursor.stop_after_first = threading.Event()
    assert cursor.drain(stop=cursor.stop_after_first) == 2
    assert len(cursor.batches) == 1
    assert cursor.lag() > 0


def test_read_one_finds_a_notification_by_id_and_refuses_one_not_in_the_log(
    manager: SagaManager,
) -> None:
    _start(manager, 1)
    cursor = CountingCursor(manager, batch_size=10)
    assert cursor.read_one(2).id == 2
    with pytest.raises(LookupError, match="no longer in the log"):
        cursor.read_one(10_000)


def test_a_batch_size_below_one_is_refused(manager: SagaManager) -> None:
    with pytest.raises(ValueError, match="batch_size"):
        CountingCursor(manager, batch_size=0)


def test_the_projector_is_a_cursor_whose_drain_catches_the_views_up(
    manager: SagaManager, projector: SagaProjector
) -> None:
    _start(manager, 2)
    assert isinstance(projector, LogCursor)
    assert projector.lag() == projector.head() > 0
    assert projector.drain() == projector.head()
    assert (projector.lag(), projector.tracked_position()) == (0, projector.head())
    before = projector.head()
    _start(manager, 1)
    assert projector.pump() == projector.head() - before  # one batch holds the new events
    assert projector.lag() == 0
