"""The saga recorders keep a timer index that commits and rolls back with the events.

Runs on the backend chosen by ``SAGALOG_TEST_BACKEND`` (see ``tests/conftest.py``),
through real eventsourcing applications configured only by
``parse_database_url(url).eventsourcing_env(...)``, as the saga manager is.
"""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, cast
from uuid import UUID, uuid4

import pytest
from eventsourcing.application import AggregateNotFoundError, Application, ProcessingEvent
from eventsourcing.domain import Aggregate, DomainEventProtocol, event
from eventsourcing.persistence import (
    InfrastructureFactory,
    IntegrityError,
    ProgrammingError,
    RecordConflictError,
    Tracking,
)
from eventsourcing.system import ProcessApplication
from eventsourcing.utils import resolve_topic

from sagalog.infrastructure.persistence.recorders import (
    POPOSagaFactory,
    POPOSagaRecorder,
    PostgresSagaRecorder,
    SQLiteSagaRecorder,
    timers_table_name,
)
from sagalog.process.store.timers import SAGA_TIMERS_KWARG, TimerIndex
from sagalog.process.store.url import parse_database_url

T0 = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)

EXPECTED_RECORDER = {
    "memory": POPOSagaRecorder,
    "sqlite": SQLiteSagaRecorder,
    "postgres": PostgresSagaRecorder,
}


def at(minutes: float) -> datetime:
    """``T0`` plus some minutes."""
    return T0 + timedelta(minutes=minutes)


class Job(Aggregate):
    """Stands in for a saga: an aggregate whose id keys the timer."""

    def __init__(self) -> None:
        self.runs = 0

    @event("Ran")
    def run(self) -> None:
        self.runs += 1


class TimerTestApp(ProcessApplication[UUID]):
    """A process application like the saga manager, with a trivial policy.

    On any upstream event it runs ``job_id`` and sets its timer to ``next_due``,
    collecting both on the processing event so they commit with the tracking record.
    """

    job_id: UUID | None = None
    next_due: datetime | None = None

    def policy(
        self,
        domain_event: DomainEventProtocol[UUID],
        processing_event: ProcessingEvent[UUID],
    ) -> None:
        assert self.job_id is not None
        job = cast(Job, self.repository.get(self.job_id))
        job.run()
        processing_event.collect_events(job, **{SAGA_TIMERS_KWARG: {job.id: self.next_due}})


class PlainTimerApp(Application[UUID]):
    """A plain application: its factory builds an *application* recorder."""


OpenApp = Callable[..., Any]


@pytest.fixture
def open_app(database_url: str) -> Iterator[OpenApp]:
    """Opens applications on the test's store (closing them afterwards)."""
    apps: list[Application[UUID]] = []

    def open_(
        cls: type[Application[UUID]] = TimerTestApp, extra: dict[str, str] | None = None
    ) -> Any:
        env = parse_database_url(database_url).eventsourcing_env(cls.name)
        app = cls(env={**env, **(extra or {})})
        apps.append(app)
        return app

    yield open_
    for app in reversed(apps):
        app.close()


@pytest.fixture
def app(open_app: OpenApp) -> TimerTestApp:
    return cast(TimerTestApp, open_app())


def timers(app: Application[UUID]) -> TimerIndex:
    assert isinstance(app.recorder, TimerIndex)
    return app.recorder


def save_job(app: Application[UUID], due: datetime | None) -> Job:
    job = Job()
    app.save(job, saga_timers={job.id: due})
    return job


def upstream_event() -> DomainEventProtocol[UUID]:
    """A domain event as if from an upstream application's notification log."""
    return Job().collect_events()[0]


# -- wiring ------------------------------------------------------------------------


def test_the_env_selects_the_saga_recorder_for_the_backend(app: TimerTestApp, backend: str) -> None:
    assert type(app.recorder) is EXPECTED_RECORDER[backend]
    assert isinstance(app.recorder, TimerIndex)


def test_a_plain_application_also_gets_the_saga_recorder(open_app: OpenApp, backend: str) -> None:
    plain = open_app(PlainTimerApp)
    assert type(plain.recorder) is EXPECTED_RECORDER[backend]
    job = save_job(plain, at(1))
    assert timers(plain).select_due_timers(at(1), 10) == [(job.id, at(1))]


@pytest.mark.parametrize("kind", ["memory", "sqlite", "postgresql"])
def test_recorder_topics_resolve_to_the_recorder_classes(kind: str) -> None:
    url = {"memory": "memory://", "sqlite": "sqlite:///x.db", "postgresql": "postgresql://h/d"}
    env = parse_database_url(url[kind]).eventsourcing_env("")
    recorder = resolve_topic(env["PROCESS_RECORDER_TOPIC"])
    assert recorder is EXPECTED_RECORDER["postgres" if kind == "postgresql" else kind]
    assert resolve_topic(env["APPLICATION_RECORDER_TOPIC"]) is recorder
    if kind == "postgresql":
        from sagalog.infrastructure.persistence.postgres import PostgresSagaTrackingRecorder

        assert resolve_topic(env["TRACKING_RECORDER_TOPIC"]) is PostgresSagaTrackingRecorder
    else:
        assert "TRACKING_RECORDER_TOPIC" not in env


def test_the_popo_factory_may_be_named_by_class_or_by_module() -> None:
    for topic in (
        "sagalog.infrastructure.persistence.recorders:POPOSagaFactory",
        "sagalog.infrastructure.persistence.recorders",
    ):
        factory = InfrastructureFactory.construct({"PERSISTENCE_MODULE": topic})
        assert type(factory) is POPOSagaFactory
        assert type(factory.process_recorder()) is POPOSagaRecorder
        assert type(factory.application_recorder()) is POPOSagaRecorder


def test_the_popo_factory_honours_and_checks_recorder_topics() -> None:
    factory = POPOSagaFactory({"PROCESS_RECORDER_TOPIC": "eventsourcing.popo:POPOProcessRecorder"})
    assert type(factory.process_recorder()).__name__ == "POPOProcessRecorder"
    bad = POPOSagaFactory({"PROCESS_RECORDER_TOPIC": "eventsourcing.sqlite:SQLiteProcessRecorder"})
    with pytest.raises(ProgrammingError, match="PROCESS_RECORDER_TOPIC"):
        bad.process_recorder()


def test_timers_table_name_follows_the_events_table() -> None:
    assert timers_table_name("sagamanager_events") == "sagamanager_timers"
    assert timers_table_name("stored_events") == "stored_timers"
    assert timers_table_name("events_log") == "events_log_timers"


def test_sqlite_in_memory_url_is_shared_by_the_apps_connections() -> None:
    env = parse_database_url("sqlite:///:memory:").eventsourcing_env(TimerTestApp.name)
    app = TimerTestApp(env=env)
    try:
        job = save_job(app, at(1))
        seen: list[object] = []
        reader = threading.Thread(
            target=lambda: seen.append(timers(app).select_due_timers(at(5), 10))
        )
        reader.start()
        reader.join()
        assert seen == [[(job.id, at(1))]]
    finally:
        app.close()


# -- the index -------------------------------------------------------------------


def test_a_new_store_has_no_timers(app: TimerTestApp) -> None:
    assert timers(app).count_timers() == 0
    assert timers(app).select_due_timers(at(1_000_000), 100) == []


def test_due_timers_come_earliest_first_up_to_the_limit(app: TimerTestApp) -> None:
    jobs = {minutes: save_job(app, at(minutes)) for minutes in (5, 1, 4, 2, 3)}
    due = timers(app).select_due_timers(at(10), 3)
    assert due == [(jobs[m].id, at(m)) for m in (1, 2, 3)]
    assert timers(app).count_timers() == 5


def test_only_timers_at_or_before_now_are_due(app: TimerTestApp) -> None:
    early, on_time, late = save_job(app, at(1)), save_job(app, at(2)), save_job(app, at(3))
    due = timers(app).select_due_timers(at(2), 10)
    assert due == [(early.id, at(1)), (on_time.id, at(2))]
    assert late.id not in {saga_id for saga_id, _ in due}
    assert timers(app).select_due_timers(at(2) - timedelta(microseconds=1), 10) == [
        (early.id, at(1))
    ]


def test_ties_come_back_in_a_stable_order(app: TimerTestApp) -> None:
    ids = sorted(save_job(app, at(1)).id for _ in range(4))
    first = timers(app).select_due_timers(at(1), 10)
    assert [saga_id for saga_id, _ in first] == ids
    assert timers(app).select_due_timers(at(1), 2) == first[:2]


def test_limit_zero_gives_nothing_and_a_negative_limit_is_an_error(app: TimerTestApp) -> None:
    save_job(app, at(1))
    assert timers(app).select_due_timers(at(1), 0) == []
    with pytest.raises(ValueError, match="limit"):
        timers(app).select_due_timers(at(1), -1)


def test_none_deletes_the_timer(app: TimerTestApp) -> None:
    job = save_job(app, at(1))
    job.run()
    app.save(job, saga_timers={job.id: None})
    assert timers(app).count_timers() == 0
    assert timers(app).select_due_timers(at(10), 10) == []


def test_deleting_a_missing_timer_is_harmless(app: TimerTestApp) -> None:
    save_job(app, None)
    assert timers(app).count_timers() == 0


def test_a_new_time_replaces_the_old_one(app: TimerTestApp) -> None:
    job = save_job(app, at(1))
    job.run()
    app.save(job, saga_timers={job.id: at(7)})
    assert timers(app).count_timers() == 1
    assert timers(app).select_due_timers(at(5), 10) == []
    assert timers(app).select_due_timers(at(7), 10) == [(job.id, at(7))]


def test_one_save_sets_and_clears_timers_of_several_sagas(app: TimerTestApp) -> None:
    keep, clear = save_job(app, at(1)), save_job(app, at(2))
    new = Job()
    app.save(new, saga_timers={keep.id: at(3), clear.id: None, new.id: at(4)})
    assert timers(app).select_due_timers(at(10), 10) == [(keep.id, at(3)), (new.id, at(4))]


def test_saving_without_saga_timers_leaves_the_index_alone(app: TimerTestApp) -> None:
    job = save_job(app, at(1))
    job.run()
    app.save(job)
    assert cast(Job, app.repository.get(job.id)).runs == 1
    assert timers(app).select_due_timers(at(1), 10) == [(job.id, at(1))]


def test_timers_can_change_without_new_events(app: TimerTestApp) -> None:
    job = save_job(app, at(1))
    app.recorder.insert_events([], saga_timers={job.id: at(9)})
    assert timers(app).select_due_timers(at(10), 10) == [(job.id, at(9))]


def test_times_keep_the_instant_and_come_back_in_utc(app: TimerTestApp) -> None:
    plus_two = timezone(timedelta(hours=2))
    local = datetime(2030, 6, 1, 14, 30, 15, 123456, tzinfo=plus_two)
    job = save_job(app, local)
    ((saga_id, due),) = timers(app).select_due_timers(local, 10)
    assert saga_id == job.id
    assert due == local
    assert due.utcoffset() == timedelta(0)
    assert due == datetime(2030, 6, 1, 12, 30, 15, 123456, tzinfo=UTC)


def test_naive_times_are_refused_and_nothing_is_recorded(app: TimerTestApp) -> None:
    job = Job()
    with pytest.raises(ValueError, match="timezone-aware"):
        app.save(job, saga_timers={job.id: datetime(2030, 1, 1)})
    with pytest.raises(AggregateNotFoundError):
        app.repository.get(job.id)
    assert timers(app).count_timers() == 0
    with pytest.raises(ValueError, match="timezone-aware"):
        timers(app).select_due_timers(datetime(2030, 1, 1), 10)


def test_malformed_saga_timers_are_refused(app: TimerTestApp) -> None:
    job = Job()
    with pytest.raises(TypeError, match="UUID"):
        app.save(job, saga_timers={str(job.id): at(1)})
    with pytest.raises(TypeError, match="must map"):
        app.save(job, saga_timers=[(job.id, at(1))])
    assert timers(app).count_timers() == 0


# -- atomicity -----------------------------------------------------------------------


def test_a_conflicting_event_insert_rolls_the_timer_back(app: TimerTestApp) -> None:
    job = save_job(app, at(1))
    fresh = cast(Job, app.repository.get(job.id))
    stale = cast(Job, app.repository.get(job.id))
    fresh.run()
    app.save(fresh, saga_timers={job.id: at(2)})
    stale.run()
    other = Job()
    with pytest.raises(IntegrityError) as info:
        app.save(stale, other, saga_timers={job.id: at(9), other.id: at(3)})
    assert isinstance(info.value, RecordConflictError)
    assert timers(app).select_due_timers(at(10), 10) == [(job.id, at(2))]
    with pytest.raises(AggregateNotFoundError):
        app.repository.get(other.id)


def test_after_a_conflict_the_store_takes_the_next_write_and_returns_ids_in_order(
    app: TimerTestApp, caplog: pytest.LogCaptureFixture
) -> None:
    """A refused write leaves no transaction open (PostgreSQL: no pool rollback warning)."""
    job = save_job(app, at(1))
    stale = cast(Job, app.repository.get(job.id))
    fresh = cast(Job, app.repository.get(job.id))
    fresh.run()
    app.save(fresh, saga_timers={job.id: at(2)})
    stale.run()
    with caplog.at_level("WARNING"), pytest.raises(RecordConflictError):
        app.save(stale, saga_timers={job.id: at(9)})
    assert not [r for r in caplog.records if "rolling back" in r.getMessage()]
    first, second = Job(), Job()
    recordings = app.save(first, second, saga_timers={first.id: at(4), second.id: None})
    ids = [r.notification.id for r in recordings]
    assert ids == sorted(ids)
    assert len(ids) == 2
    assert timers(app).select_due_timers(at(10), 10) == [(job.id, at(2)), (first.id, at(4))]


def test_the_processing_path_commits_timers_with_the_tracking_record(app: TimerTestApp) -> None:
    job = save_job(app, None)
    app.job_id, app.next_due = job.id, at(5)
    app.process_event(upstream_event(), Tracking("Upstream", 1))
    assert timers(app).select_due_timers(at(5), 10) == [(job.id, at(5))]
    assert app.recorder.max_tracking_id("Upstream") == 1


def test_a_duplicate_tracking_record_rolls_the_timer_back(app: TimerTestApp) -> None:
    job = save_job(app, None)
    app.job_id, app.next_due = job.id, at(5)
    app.process_event(upstream_event(), Tracking("Upstream", 1))
    app.next_due = at(1)
    with pytest.raises(IntegrityError):
        app.process_event(upstream_event(), Tracking("Upstream", 1))
    assert timers(app).select_due_timers(at(10), 10) == [(job.id, at(5))]
    assert cast(Job, app.repository.get(job.id)).runs == 1


def test_a_duplicate_tracking_record_rolls_back_a_timer_only_write(app: TimerTestApp) -> None:
    saga_id = uuid4()
    app.recorder.insert_events([], tracking=Tracking("Upstream", 1), saga_timers={saga_id: at(1)})
    with pytest.raises(IntegrityError):
        app.recorder.insert_events(
            [], tracking=Tracking("Upstream", 1), saga_timers={saga_id: None, uuid4(): at(2)}
        )
    assert timers(app).select_due_timers(at(10), 10) == [(saga_id, at(1))]


def test_concurrent_saves_all_land(app: TimerTestApp) -> None:
    errors: list[BaseException] = []

    def worker(offset: int) -> None:
        try:
            for i in range(5):
                save_job(app, at(offset * 10 + i))
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert timers(app).count_timers() == 20
    due = timers(app).select_due_timers(at(1000), 100)
    assert [d for _, d in due] == sorted(d for _, d in due)


# -- durability and the tables ----------------------------------------------------------


def test_opening_the_store_twice_is_harmless(open_app: OpenApp) -> None:
    first = open_app()
    job = save_job(first, at(1))
    second = open_app()
    assert timers(second).count_timers() in (0, 1)  # 0 only for memory://
    assert timers(first).select_due_timers(at(1), 10) == [(job.id, at(1))]


@pytest.mark.requires_database(reason="an in-memory store is private to one application object")
def test_a_second_application_sees_the_same_index(open_app: OpenApp) -> None:
    first = open_app()
    job = save_job(first, at(1))
    second = open_app()
    assert timers(second).select_due_timers(at(1), 10) == [(job.id, at(1))]
    other = save_job(second, at(2))
    assert timers(first).select_due_timers(at(2), 10) == [(job.id, at(1)), (other.id, at(2))]


@pytest.mark.requires_database(reason="an in-memory store does not survive a restart")
def test_timers_survive_closing_and_reopening(open_app: OpenApp) -> None:
    first = open_app()
    job = save_job(first, at(1))
    first.close()
    reopened = open_app()
    assert timers(reopened).select_due_timers(at(1), 10) == [(job.id, at(1))]


def test_sqlite_timer_table_and_index(app: TimerTestApp, backend: str) -> None:
    if backend != "sqlite":
        pytest.skip("inspects SQLite's catalogue")
    recorder = cast(SQLiteSagaRecorder, app.recorder)
    assert recorder.timers_table_name == "stored_timers"
    with recorder.datastore.transaction(commit=False) as c:
        c.execute("SELECT type, name FROM sqlite_master WHERE tbl_name = 'stored_timers'")
        objects = {(row["type"], row["name"]) for row in c.fetchall()}
        c.execute("SELECT name, type, pk FROM pragma_table_info('stored_timers')")
        columns = {row["name"]: (row["type"], row["pk"]) for row in c.fetchall()}
    assert ("table", "stored_timers") in objects
    assert ("index", "stored_timers_due_at_idx") in objects
    assert columns == {"saga_id": ("TEXT", 1), "due_at": ("INTEGER", 0)}


def test_postgres_timer_table_and_index_live_in_the_schema(
    app: TimerTestApp, backend: str, database_url: str
) -> None:
    if backend != "postgres":
        pytest.skip("inspects PostgreSQL's catalogue")
    schema = parse_database_url(database_url).schema
    recorder = cast(PostgresSagaRecorder, app.recorder)
    assert recorder.timers_table_name == "timertestapp_timers"
    with recorder.datastore.get_connection() as conn:
        columns = {
            row["column_name"]: row["data_type"]
            for row in conn.execute(
                "SELECT column_name, data_type FROM information_schema.columns "
                "WHERE table_schema = %s AND table_name = 'timertestapp_timers'",
                (schema,),
            )
        }
        indexes = {
            row["indexname"]
            for row in conn.execute(
                "SELECT indexname FROM pg_indexes WHERE schemaname = %s "
                "AND tablename = 'timertestapp_timers'",
                (schema,),
            )
        }
    assert columns == {"saga_id": "uuid", "due_at": "timestamp with time zone"}
    assert indexes == {"timertestapp_timers_pkey", "timertestapp_timers_due_at_idx"}


def test_postgres_refuses_database_function_inserts(open_app: OpenApp, backend: str) -> None:
    if backend != "postgres":
        pytest.skip("a PostgreSQL setting")
    with pytest.raises(ProgrammingError, match="POSTGRES_ENABLE_DB_FUNCTIONS"):
        open_app(extra={"POSTGRES_ENABLE_DB_FUNCTIONS": "y"})


@pytest.mark.slow
def test_the_recorders_module_imports_without_psycopg() -> None:
    """psycopg is the optional ``postgres`` extra: memory and SQLite must not need it."""
    script = (
        "import sys; sys.modules['psycopg'] = None\n"
        "import sagalog.infrastructure.persistence.recorders as r\n"
        "assert r.SQLiteSagaRecorder and r.POPOSagaFactory\n"
        "try:\n"
        "    r.PostgresSagaRecorder\n"
        "except ImportError as e:\n"
        "    assert 'sagalog[postgres]' in str(e), e\n"
        "else:\n"
        "    raise AssertionError('expected ImportError')\n"
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=60)
