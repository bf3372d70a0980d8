"""Catching up, rebuilding and exactly-once: the views against the log, on every backend."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from eventsourcing.persistence import (
    IntegrityError,
    Tracking,
    TrackingRecorder,
    WaitInterruptedError,
)
from eventsourcing.projection import ProjectionRunner
from sqlalchemy import Column, MetaData, Table, Uuid, insert
from sqlalchemy.exc import OperationalError
from support.sagas import DEFINITIONS, T0, TRIP, run_parallel_scenarios, run_scenarios

from sagalog.process import SagaManager
from sagalog.process.clock import ManualClock
from sagalog.projections import SagaLogReader, SagaProjection, SagaProjector, SagaViews, runner_env
from sagalog.projections.schema import SCHEMA_VERSION, tracking

Dump = tuple[list[Any], list[Any]]


def _rebuilt(projector: SagaProjector) -> Dump:
    projector.rebuild()
    return projector.views.dump()


def test_rebuilt_views_equal_views_kept_up_live(
    manager: SagaManager, clock: ManualClock, projector: SagaProjector
) -> None:
    one_by_one = SagaProjector(manager, projector.views, batch_size=1)
    run_scenarios(manager, clock, after=one_by_one.catch_up)
    assert projector.lag() == 0
    live = projector.views.dump()
    assert len(live[1]) == projector.head()  # one timeline row per event: all are saga events
    assert _rebuilt(projector) == live


def test_a_projector_running_in_the_background_keeps_up(
    manager: SagaManager, clock: ManualClock, projector: SagaProjector
) -> None:
    stop = threading.Event()
    thread = threading.Thread(target=projector.run, args=(stop,), kwargs={"poll_interval": 0.01})
    thread.start()
    try:
        run_scenarios(manager, clock)
        deadline = time.monotonic() + 30
        while projector.lag() and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        stop.set()
        thread.join(10)
    assert not thread.is_alive()
    assert projector.lag() == 0
    live = projector.views.dump()
    assert _rebuilt(projector) == live


def test_catch_up_resumes_from_the_tracked_position(
    manager: SagaManager, clock: ManualClock, projector: SagaProjector
) -> None:
    first = manager.start("Shop", {"order": 1})
    manager.handle_step_completed(first, "reserve")
    projector.catch_up()
    position = projector.position()
    assert position == projector.head() == 4
    # The projector is down while the manager goes on.
    manager.handle_step_completed(first, "charge")
    second = manager.start("Slow", {"n": 2})
    later = SagaProjector(manager, projector.views)
    assert later.position() == position
    assert later.catch_up() == later.head() - position == 4
    assert later.catch_up() == 0
    summary = later.views.get(first)
    assert summary is not None
    assert summary.current_step == "ship"
    assert later.views.get(second) is not None
    live = later.views.dump()
    assert _rebuilt(later) == live


@pytest.mark.requires_database(reason="reopens the log and the views after a restart")
def test_catch_up_after_a_restart_applies_only_what_was_missed(database_url: str) -> None:
    clock = ManualClock(T0)
    manager = SagaManager(DEFINITIONS, database_url, clock=clock)
    projector = SagaProjector(manager)
    saga_id = manager.start("Shop", {"order": 1})
    projector.catch_up()
    position = projector.position()
    projector.close()
    manager.close()

    manager = SagaManager([], database_url, clock=clock)  # restarted, registry empty
    try:
        manager.handle_step_completed(saga_id, "reserve")
        manager.handle_step_failed(saga_id, "charge", "declined")
        projector = SagaProjector(manager)
        assert projector.position() == position
        missed = projector.head() - position
        assert projector.catch_up() == missed > 0
        summary = projector.views.get(saga_id)
        assert summary is not None
        assert summary.last_error == "declined"
        live = projector.views.dump()
        assert _rebuilt(projector) == live
        projector.close()
    finally:
        manager.close()


@pytest.mark.requires_database(reason="two processes' worth of views on one database")
def test_concurrent_catch_ups_apply_each_event_once(
    database_url: str, manager: SagaManager, clock: ManualClock
) -> None:
    run_scenarios(manager, clock)
    projectors = [SagaProjector(manager, SagaViews(database_url), batch_size=7) for _ in range(3)]
    errors: list[BaseException] = []

    def catch_up(projector: SagaProjector) -> None:
        try:
            projector.catch_up()
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=catch_up, args=(p,)) for p in projectors]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    summaries, timeline = projectors[0].views.dump()
    assert len(timeline) == projectors[0].head()
    assert _rebuilt(projectors[0]) == (summaries, timeline)
    for projector in projectors:
        projector.close()


def test_a_failing_batch_writes_neither_rows_nor_position(
    manager: SagaManager,
    clock: ManualClock,
    projector: SagaProjector,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    saga_id = manager.start("Shop", {"order": 1})
    projector.catch_up()
    before = projector.views.dump()
    position = projector.position()
    manager.handle_step_completed(saga_id, "reserve")
    original = projector.views._upsert_summaries

    def upsert_then_fail(*args: Any) -> None:
        original(*args)
        # A database error (not one event's fault, which would be quarantined).
        raise OperationalError("upsert", {}, Exception("disk full"))

    monkeypatch.setattr(projector.views, "_upsert_summaries", upsert_then_fail)
    with pytest.raises(OperationalError, match="disk full"):
        projector.catch_up()
    assert projector.position() == position
    assert projector.views.dump() == before
    monkeypatch.undo()
    assert projector.catch_up() == 2


def test_events_at_or_below_the_position_are_skipped(
    manager: SagaManager, projector: SagaProjector
) -> None:
    saga_id = manager.start("Shop", {"order": 1})
    projector.catch_up()
    before = projector.views.dump()
    notifications = manager.recorder.select_notifications(start=1, limit=10)
    items = [
        (manager.mapper.to_domain_event(n), Tracking(manager.name, n.id)) for n in notifications
    ]
    assert projector.views.process(items) == 0
    assert projector.views.dump() == before
    assert projector.views.get(saga_id) is not None


def test_a_batch_must_be_ordered_and_from_one_log(projector: SagaProjector) -> None:
    with pytest.raises(ValueError, match="increasing"):
        projector.views.process([(object(), Tracking("A", 2)), (object(), Tracking("A", 1))])
    with pytest.raises(ValueError, match="one application"):
        projector.views.process([(object(), Tracking("A", 1)), (object(), Tracking("B", 2))])


def test_events_that_are_not_saga_events_only_move_the_position(views: SagaViews) -> None:
    assert views.process([(object(), Tracking("Other", 5))]) == 1
    assert views.max_tracking_id("Other") == 5
    assert views.count_sagas() == 0


def test_schema_creation_is_idempotent(database_url: str, views: SagaViews) -> None:
    views.create_tables()
    views.create_tables()
    again = SagaViews(database_url)
    try:
        assert again.count_sagas() == 0
        assert again.stale_tables() == []
    finally:
        again.close()


def test_stale_tables_are_looked_for_in_the_views_own_schema(
    backend: str, database_url: str, views: SagaViews
) -> None:
    """An old view table in PostgreSQL's default schema belongs to another store."""
    if backend != "postgres":
        pytest.skip("only PostgreSQL stores keep their views in a schema of their own")
    import psycopg

    server = database_url.split("?")[0]
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS public.saga_summary_v0 (x int)")
        try:
            assert views.stale_tables() == []
        finally:
            conn.execute("DROP TABLE IF EXISTS public.saga_summary_v0")


@pytest.mark.requires_database(reason="concurrent creators on one database")
def test_concurrent_schema_creation_is_harmless(database_url: str) -> None:
    errors: list[BaseException] = []

    def create() -> None:
        try:
            SagaViews(database_url).close()
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=create) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []


def test_reset_empties_the_views_and_forgets_the_position(
    manager: SagaManager, projector: SagaProjector
) -> None:
    manager.start("Shop", {"order": 1})
    projector.catch_up()
    projector.views.reset()
    assert projector.position() == 0
    assert projector.views.dump() == ([], [])
    assert projector.catch_up() == 2


def test_status_reports_position_head_lag_and_rows(
    manager: SagaManager, projector: SagaProjector
) -> None:
    manager.start("Shop", {"order": 1})
    status = projector.status()
    assert (status.position, status.head, status.lag) == (0, 2, 2)
    projector.catch_up()
    status = projector.status()
    assert (status.position, status.head, status.lag, status.sagas, status.events) == (
        2,
        2,
        0,
        1,
        2,
    )
    assert status.schema_version == SCHEMA_VERSION
    assert status.to_json()["name"] == f"saga_views_v{SCHEMA_VERSION}"


def test_catch_up_reports_progress_and_can_be_stopped(
    manager: SagaManager, projector: SagaProjector
) -> None:
    for n in range(5):
        manager.start("Shop", {"order": n})
    small = SagaProjector(manager, projector.views, batch_size=3)
    seen: list[tuple[int, int]] = []
    assert small.catch_up(lambda done, total: seen.append((done, total))) == 10
    assert seen == [(0, 10), (3, 10), (6, 10), (9, 10), (10, 10)]
    stop = threading.Event()
    stop.set()
    manager.start("Shop", {"order": 9})
    assert small.catch_up(stop=stop) == 0


def test_views_keep_the_tracking_recorder_contract(views: SagaViews) -> None:
    """The assertions of eventsourcing's ``TrackingRecorderTestCase.test_insert_tracking``.

    (eventsourcing's test module imports its AES cipher, which needs pycryptodome,
    so the assertions are repeated here rather than imported.)
    """
    recorder: TrackingRecorder = views
    recorder.insert_tracking(Tracking("upstream1", 21))
    recorder.insert_tracking(Tracking("upstream1", 22))
    recorder.insert_tracking(Tracking("upstream2", 21))
    for again in (Tracking("upstream1", 21), Tracking("upstream1", 22), Tracking("upstream2", 21)):
        with pytest.raises(IntegrityError):
            recorder.insert_tracking(again)
    assert recorder.max_tracking_id("upstream1") == 22
    assert recorder.max_tracking_id("upstream2") == 21
    assert recorder.max_tracking_id("upstream3") is None
    assert recorder.has_tracking_id("upstream1", None)
    assert all(recorder.has_tracking_id("upstream1", n) for n in (20, 21, 22))
    assert not recorder.has_tracking_id("upstream1", 23)
    assert recorder.has_tracking_id("upstream2", 21)
    assert not recorder.has_tracking_id("upstream2", 22)
    recorder.insert_tracking(Tracking("upstream1", 24))
    with pytest.raises(IntegrityError):
        recorder.insert_tracking(Tracking("upstream1", 23))  # can't fill in the gap
    assert recorder.has_tracking_id("upstream1", 23)


def test_views_keep_the_tracking_recorder_wait_contract(views: SagaViews) -> None:
    """The assertions of eventsourcing's ``TrackingRecorderTestCase.test_wait``."""
    views.wait("upstream1", None)
    with pytest.raises(TimeoutError):
        views.wait("upstream1", 21, timeout=0.1)
    views.insert_tracking(Tracking("upstream1", 21))
    views.wait("upstream1", None)
    views.wait("upstream1", 10)
    views.wait("upstream1", 21)
    with pytest.raises(TimeoutError):
        views.wait("upstream1", 22, timeout=0.1)
    interrupt = threading.Event()
    interrupt.set()
    with pytest.raises(WaitInterruptedError):
        views.wait("upstream1", 22, interrupt=interrupt)


def test_eventsourcings_projection_runner_drives_the_views(
    backend: str, database_url: str, manager: SagaManager, clock: ManualClock
) -> None:
    """eventsourcing's ``ProjectionRunner`` needs a log with subscriptions: PostgreSQL's."""
    if backend != "postgres":
        pytest.skip(
            "eventsourcing's SQLite recorder has no subscriptions; memory:// can't be shared"
        )
    run_scenarios(manager, clock)
    with ProjectionRunner(
        application_class=SagaLogReader,
        projection_class=SagaProjection,
        view_class=SagaViews,
        env=runner_env(database_url),
    ) as runner:
        runner.wait(manager.recorder.max_notification_id(), timeout=30)
        saga_id = manager.start("Shop", {"order": 99})  # recorded while the runner follows
        runner.wait(manager.recorder.max_notification_id(), timeout=30)
        assert runner.view.get(saga_id) is not None
        live = runner.view.dump()
    runner.view.close()
    assert len(live[1]) == manager.recorder.max_notification_id()
    projector = SagaProjector(manager)
    try:
        assert _rebuilt(projector) == live
    finally:
        projector.close()


@pytest.mark.requires_database(reason="the old tables must outlive one SagaViews")
def test_views_of_version_3_are_left_and_version_4_is_built_from_the_log(
    database_url: str, clock: ManualClock
) -> None:
    """A store whose projections are at version 3, caught up to the head: version 4
    (steps in parallel) starts empty and the next catch-up builds it from the first event."""
    manager = SagaManager([TRIP], database_url, clock=clock)
    views = SagaViews(database_url)
    try:
        ids = run_parallel_scenarios(manager, clock)
        head = manager.recorder.max_notification_id()
        old = MetaData()
        for name in ("saga_summary_v3", "saga_timeline_v3"):
            Table(name, old, Column("saga_id", Uuid, primary_key=True))
        old.create_all(views.engine)
        with views.engine.begin() as conn:
            conn.execute(
                insert(tracking).values(
                    projection_name="saga_views_v3",
                    application_name=manager.name,
                    notification_id=head,
                )
            )
        projector = SagaProjector(manager, views)
        assert (projector.position(), projector.lag()) == (0, head)
        assert views.stale_tables() == ["saga_summary_v3", "saga_timeline_v3"]
        projector.catch_up()
        assert views.count_sagas() == len(ids)
        row = views.get(ids["trip_in_flight"])
        saga = manager.get(ids["trip_in_flight"])
        assert row is not None
        assert (row.parallel, row.steps_in_flight, row.next_deadline) == (
            True,
            saga.steps_in_flight,
            saga.next_wakeup,
        )
        assert saga.steps_in_flight == ["hotel", "car"]
    finally:
        views.close()
        manager.close()
