"""A saga deadline through the manager: in the timer index, fired by ``tick``, shown by stuck."""

from __future__ import annotations

from datetime import timedelta

from support.sagas import T0, TIMED

from sagalog.domain import Saga, SagaStatus
from sagalog.process import SagaManager
from sagalog.process.clock import ManualClock
from sagalog.projections import SagaProjector, SagaViews, StuckReason


def test_the_deadline_is_indexed_fired_by_tick_and_compensates(database_url: str) -> None:
    clock = ManualClock(T0)
    manager = SagaManager([TIMED], database_url, clock=clock)
    try:
        saga_id = manager.start("Timed", {"n": 1})
        assert manager.timers.count_timers() == 1  # no step timeout: the deadline only
        assert manager.tick(clock.advance(299)) == 0
        assert manager.tick(clock.advance(2)) == 1
        saga = manager.get(saga_id)
        assert saga.status is SagaStatus.COMPENSATING
        assert saga.compensation_plan == ["book"]  # in flight when the deadline passed
        names = [type(e).__name__ for e in manager.history(saga_id)]
        assert names[-3:] == [
            "SagaDeadlinePassed",
            "CompensationRequested",
            "CompensationDispatched",
        ]
        assert manager.timers.count_timers() == 0
        manager.handle_compensation_completed(saga_id, "book")
        assert manager.get(saga_id).status is SagaStatus.FAILED
    finally:
        manager.close()


def test_a_deadline_nobody_fires_is_stuck_as_a_missed_deadline(database_url: str) -> None:
    clock = ManualClock(T0)
    manager = SagaManager([TIMED], database_url, clock=clock)
    views = SagaViews(database_url)
    try:
        saga_id = manager.start("Timed", {"n": 2})
        projector = SagaProjector(manager, views)
        projector.catch_up()
        row = views.get(saga_id)
        assert row is not None
        assert (row.saga_deadline, row.next_deadline, row.wakeup_kind) == (
            T0 + timedelta(minutes=5),
            T0 + timedelta(minutes=5),
            "saga_deadline",
        )
        stuck = views.stuck(now=T0 + timedelta(minutes=6))
        mine = [s for s in stuck if s.summary.saga_id == saga_id]
        assert mine
        assert mine[0].reasons[0] is StuckReason.DEADLINE_MISSED
        assert "the saga's deadline passed" in mine[0].detail
        manager.tick(clock.advance(301))
        projector.catch_up()
        row = views.get(saga_id)
        assert row is not None
        assert row.saga_deadline is None
        assert row.wakeup_kind != "saga_deadline"
        assert isinstance(manager.history(saga_id)[-3], Saga.SagaDeadlinePassed)
    finally:
        views.close()
        manager.close()
