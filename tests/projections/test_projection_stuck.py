"""The stuck query: each reason, its threshold, and the way out of it."""

from __future__ import annotations

from datetime import timedelta
from uuid import UUID

import pytest
from support.sagas import TRIP

from sagalog.process import SagaManager
from sagalog.process.clock import ManualClock
from sagalog.projections import SagaProjector, SagaViews, StuckPolicy, StuckReason
from sagalog.projections.stuck import format_duration, parse_duration

R = StuckReason


def _dead_letter(manager: SagaManager, clock: ManualClock) -> UUID:
    saga_id = manager.start("Shop", {"order": "dead"})
    for name in ("reserve", "charge", "ship"):
        manager.handle_step_completed(saga_id, name)
    manager.handle_step_failed(saga_id, "notify", "smtp down")
    manager.tick(clock.advance(2))
    manager.handle_step_failed(saga_id, "notify", "smtp down")
    return saga_id


def _compensating(manager: SagaManager) -> UUID:
    saga_id = manager.start("Slow", {"n": "comp"})
    manager.handle_step_completed(saga_id, "prepare")
    manager.handle_step_failed(saga_id, "finish", "nope")
    return saga_id


def _reasons(projector: SagaProjector, **kwargs: object) -> dict[UUID, tuple[StuckReason, ...]]:
    projector.catch_up()
    return {s.saga_id: s.reasons for s in projector.views.stuck(**kwargs)}  # type: ignore[arg-type]


def test_each_reason_is_reported_most_urgent_first(
    manager: SagaManager, clock: ManualClock, projector: SagaProjector
) -> None:
    dead = _dead_letter(manager, clock)
    missed = manager.start("Shop", {"order": "missed"})
    compensating = _compensating(manager)
    idle = manager.start("Slow", {"n": "idle"})
    done = manager.start("Shop", {"order": "done"})
    for name in ("reserve", "charge", "ship", "notify"):
        manager.handle_step_completed(done, name)
    projector.catch_up()

    stuck = projector.views.stuck(now=clock.now + timedelta(hours=2))
    assert [(s.saga_id, s.reasons) for s in stuck] == [
        (dead, (R.DEAD_LETTERED,)),
        (missed, (R.DEADLINE_MISSED, R.NO_PROGRESS)),
        (compensating, (R.COMPENSATION_TOO_LONG, R.NO_PROGRESS)),
        (idle, (R.NO_PROGRESS,)),
    ]
    first = stuck[0]
    assert first.reason is R.DEAD_LETTERED
    assert first.detail == "action of notify gave up 2h ago: smtp down"
    assert stuck[1].detail.startswith("deadline of reserve (attempt 1) passed 1h 59m ago")
    assert stuck[1].since == projector.views.get(missed).next_deadline  # type: ignore[union-attr]
    assert stuck[2].detail == "compensating since 2h ago (now at prepare)"
    assert stuck[3].to_json()["reasons"] == ["NO_PROGRESS"]


def test_a_deadline_counts_as_missed_only_after_the_grace(
    manager: SagaManager, clock: ManualClock, projector: SagaProjector
) -> None:
    saga_id = manager.start("Shop", {})
    start = clock.now
    assert _reasons(projector, now=start + timedelta(seconds=31)) == {}
    assert _reasons(projector, now=start + timedelta(seconds=61)) == {saga_id: (R.DEADLINE_MISSED,)}
    no_grace = StuckPolicy(deadline_grace=timedelta(0))
    assert _reasons(projector, now=start + timedelta(seconds=31), policy=no_grace) == {
        saga_id: (R.DEADLINE_MISSED,)
    }


def test_a_missed_deadline_clears_once_the_timeout_is_recorded(
    manager: SagaManager, clock: ManualClock, projector: SagaProjector
) -> None:
    saga_id = manager.start("Shop", {})
    later = clock.advance(120)
    assert _reasons(projector, now=later) == {saga_id: (R.DEADLINE_MISSED,)}
    manager.tick(later)  # the worker was down; now it ticks: timed out, so it compensates
    assert _reasons(projector, now=later) == {}
    summary = projector.views.get(saga_id)
    assert summary is not None
    assert summary.status == "COMPENSATING"
    assert summary.current_step == "reserve"  # its release: the reserve may have been done
    assert summary.next_deadline is not None
    assert summary.next_deadline > later


def test_a_missed_retry_counts_as_a_missed_deadline(
    manager: SagaManager, clock: ManualClock, projector: SagaProjector
) -> None:
    saga_id = manager.start("Shop", {})
    manager.handle_step_completed(saga_id, "reserve")
    manager.handle_step_failed(saga_id, "charge", "declined")  # retry due in 10 s
    projector.catch_up()
    [stuck] = projector.views.stuck(now=clock.now + timedelta(minutes=5))
    assert stuck.reason is R.DEADLINE_MISSED
    assert stuck.detail.startswith("retry of charge")


def test_compensating_too_long_has_its_own_threshold(
    manager: SagaManager, clock: ManualClock, projector: SagaProjector
) -> None:
    saga_id = _compensating(manager)
    assert _reasons(projector, now=clock.now + timedelta(minutes=10)) == {}
    assert _reasons(projector, now=clock.now + timedelta(minutes=16)) == {
        saga_id: (R.COMPENSATION_TOO_LONG,)
    }
    policy = StuckPolicy(compensation_too_long=timedelta(minutes=5))
    assert _reasons(projector, now=clock.now + timedelta(minutes=10), policy=policy) == {
        saga_id: (R.COMPENSATION_TOO_LONG,)
    }


def test_no_progress_thresholds_are_per_saga_type(
    manager: SagaManager, clock: ManualClock, projector: SagaProjector
) -> None:
    slow = manager.start("Slow", {})
    shop = manager.start("Shop", {})
    manager.handle_step_completed(shop, "reserve")
    manager.handle_step_completed(shop, "charge")  # waits on "ship", which has no timeout
    now = clock.now + timedelta(hours=2)
    assert _reasons(projector, now=now) == {slow: (R.NO_PROGRESS,), shop: (R.NO_PROGRESS,)}
    patient = StuckPolicy(no_progress_after_by_type={"Slow": timedelta(hours=3)})
    assert _reasons(projector, now=now, policy=patient) == {shop: (R.NO_PROGRESS,)}
    eager = StuckPolicy(no_progress_after_by_type={"Shop": timedelta(minutes=10)})
    assert _reasons(projector, now=clock.now + timedelta(minutes=30), policy=eager) == {
        shop: (R.NO_PROGRESS,)
    }


def test_an_operator_action_takes_a_saga_off_the_list(
    manager: SagaManager, clock: ManualClock, projector: SagaProjector
) -> None:
    saga_id = _dead_letter(manager, clock)
    assert _reasons(projector, now=clock.now) == {saga_id: (R.DEAD_LETTERED,)}
    manager.resolve(saga_id, actor="ops", reason="mailed by hand")
    assert _reasons(projector, now=clock.now + timedelta(days=30)) == {}


def test_the_limit_keeps_the_oldest(
    manager: SagaManager, clock: ManualClock, projector: SagaProjector
) -> None:
    ids = []
    for n in range(5):
        ids.append(manager.start("Slow", {"n": n}))
        clock.advance(60)
    projector.catch_up()
    stuck = projector.views.stuck(now=clock.now + timedelta(hours=3), limit=2)
    assert [s.saga_id for s in stuck] == ids[:2]
    assert projector.views.stuck(now=clock.now, limit=0) == []
    with pytest.raises(ValueError, match="limit"):
        projector.views.stuck(limit=-1)


def test_sagas_on_a_clock_ahead_of_now_are_shown_with_dates(
    manager: SagaManager, clock: ManualClock, projector: SagaProjector
) -> None:
    _dead_letter(manager, clock)
    projector.catch_up()
    [stuck] = projector.views.stuck(now=clock.now - timedelta(days=1))
    assert " gave up at 2026-03-01T12:00:02+00:00: smtp down" in stuck.detail


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"deadline_grace": timedelta(seconds=-1)}, "deadline_grace"),
        ({"no_progress_after": timedelta(0)}, "no_progress_after"),
        ({"compensation_too_long": timedelta(0)}, "compensation_too_long"),
        ({"no_progress_after_by_type": {"Shop": timedelta(0)}}, "'Shop'"),
    ],
)
def test_a_policy_refuses_nonsense_thresholds(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        StuckPolicy(**kwargs)  # type: ignore[arg-type]


def test_a_policy_is_immutable() -> None:
    thresholds = {"Shop": timedelta(minutes=5)}
    policy = StuckPolicy(no_progress_after_by_type=thresholds)
    thresholds["Shop"] = timedelta(days=1)
    assert policy.no_progress_threshold("Shop") == timedelta(minutes=5)
    assert policy.no_progress_threshold("Other") == timedelta(hours=1)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90", 90),
        ("90s", 90),
        ("15m", 900),
        ("1h30m", 5400),
        ("2d", 172800),
        ("1w", 604800),
        ("0.5s", 0.5),
        (" 2H ", 7200),
    ],
)
def test_durations_parse(text: str, seconds: float) -> None:
    assert parse_duration(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["", "soon", "5 minutes", "m5", "-5s", "1h-5m", "nan", "99999d"])
def test_bad_durations_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


def test_durations_format_shortly() -> None:
    assert format_duration(timedelta(0)) == "0s"
    assert format_duration(timedelta(seconds=62)) == "1m 2s"
    assert format_duration(timedelta(days=3, hours=4, minutes=5)) == "3d 4h"
    assert format_duration(timedelta(hours=1, seconds=5)) == "1h"
    assert format_duration(timedelta(hours=2)) == "2h"
    assert format_duration(-timedelta(minutes=2)) == "-2m"


def test_a_parallel_saga_with_one_branch_overdue_is_stuck_naming_that_branch(
    database_url: str, clock: ManualClock, views: SagaViews
) -> None:
    manager = SagaManager([TRIP], database_url, clock=clock)
    try:
        saga_id = manager.start("Trip", {"trip": "stuck"})
        manager.handle_step_completed(saga_id, "budget")
        manager.handle_step_completed(saga_id, "flight")  # hotel and car are left in flight
        projector = SagaProjector(manager, views)
        projector.catch_up()
        hotel = manager.get(saga_id).steps["hotel"].deadline
        assert hotel is not None
        row = views.get(saga_id)
        assert row is not None
        assert (row.steps_in_flight, row.current_step, row.next_deadline) == (
            ["hotel", "car"],
            "car",
            hotel,
        )
        # 31s on, only hotel's deadline (30s) is overdue: car's (90s) is not yet due.
        stuck = views.stuck(now=hotel + timedelta(seconds=31), policy=StuckPolicy())
        assert [(s.saga_id, s.reasons) for s in stuck] == [(saga_id, (R.DEADLINE_MISSED,))]
        assert stuck[0].detail.startswith("deadline of hotel (attempt 1) passed 31s ago")
        # Once hotel's timeout is recorded, hotel waits 10s for its retry: the saga is not
        # stuck until that retry is overdue, while car is still in flight.
        manager.tick(hotel + timedelta(seconds=1))
        projector.catch_up()
        row = views.get(saga_id)
        assert row is not None
        assert (row.steps_in_flight, row.wakeup_step, row.wakeup_kind) == (
            ["car"],
            "hotel",
            "retry",
        )
        assert views.stuck(now=hotel + timedelta(seconds=31)) == []
        late = views.stuck(now=hotel + timedelta(seconds=120))
        assert [s.reason for s in late] == [R.DEADLINE_MISSED]
        assert late[0].detail.startswith("retry of hotel (attempt 1) passed 1m 49s ago")
    finally:
        manager.close()
