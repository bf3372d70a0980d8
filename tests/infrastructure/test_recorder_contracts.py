"""eventsourcing's own recorder contract tests, run against the recorders sagalog builds.

sagalog's recorders (:mod:`sagalog.infrastructure.persistence.recorders` and
:mod:`sagalog.infrastructure.persistence.postgres`) rewrite eventsourcing's insert
path (timers written in the insert transaction; on PostgreSQL a write without a
tracking record is one pipelined round trip) and its notification reads (binary
tuples, statements composed once). eventsourcing ships the contract every
recorder must keep as unittest test cases in ``eventsourcing.tests.persistence``;
each runs here against the recorder sagalog builds for a backend, through the
same environment the saga manager and the relay use
(``parse_database_url(url).application_env("SagaManager")`` handed to
``InfrastructureFactory.construct``), so the recorder topics, pool sizes and
table names are sagalog's:

* ``AggregateRecorderTestCase``, ``ApplicationRecorderTestCase`` (with its
  concurrency variants) and ``ProcessRecorderTestCase`` against the saga
  recorder (``POPOSagaRecorder``, ``SQLiteSagaRecorder``, ``PostgresSagaRecorder``);
* ``NonInterleavingNotificationIDsBaseCase``: two large concurrent writes get
  notification ids in two unbroken runs;
* ``TrackingRecorderTestCase`` against the relay's tracking recorder
  (``PostgresSagaTrackingRecorder`` on PostgreSQL, eventsourcing's elsewhere);
* on PostgreSQL, eventsourcing's optional subscription test (``LISTEN`` wakes
  on the ``NOTIFY`` of sagalog's one-round-trip insert).

Their ``test_performance`` methods only time inserts and print the rate (no
assertion): they are skipped here; ``benchmarks/`` measures sagalog's speed.

unittest classes are not parametrized by pytest, so each class names its
backend, overrides the ``backend`` fixture of ``tests/conftest.py`` and skips
when ``SAGALOG_TEST_BACKEND`` does not select it. The store is that conftest's
``database_url``: a SQLite file in the test's temporary folder, a PostgreSQL
schema created for the test and dropped after it (an unreachable PostgreSQL
skips, and fails when ``CI`` is true).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from typing import Any, ClassVar

import pytest
from eventsourcing.persistence import (
    ApplicationRecorder,
    InfrastructureFactory,
    ProcessRecorder,
    StoredEvent,
    TrackingRecorder,
)
from eventsourcing.tests import persistence as contract
from eventsourcing.utils import Environment, get_topic

from sagalog.infrastructure.persistence.recorders import (
    POPOSagaRecorder,
    PostgresSagaRecorder,
    PostgresSagaTrackingRecorder,
    SQLiteSagaRecorder,
)
from sagalog.process.store.timers import SAGA_TIMERS_KWARG
from sagalog.process.store.url import parse_database_url

#: The application name the saga manager stores under (its tables' prefix on PostgreSQL).
APP_NAME = "SagaManager"

#: The wake-up time the timed variants give every saga they write.
WAKE_UP = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)

TIMING_ONLY = "eventsourcing's insert timing benchmark: prints a rate, asserts nothing"


def with_timers(stored_events: Sequence[StoredEvent], kwargs: dict[str, Any]) -> dict[str, Any]:
    """``kwargs`` plus a wake-up for every saga written, as the saga manager's writes carry."""
    timers = {event.originator_id: WAKE_UP for event in stored_events}
    return {SAGA_TIMERS_KWARG: timers, **kwargs}


class TimedPOPOSagaRecorder(POPOSagaRecorder):
    """sagalog's recorder, every insert of which also writes the sagas' timers."""

    def insert_events(
        self, stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> Sequence[int] | None:
        return super().insert_events(stored_events, **with_timers(stored_events, kwargs))


class TimedSQLiteSagaRecorder(SQLiteSagaRecorder):
    """sagalog's recorder, every insert of which also writes the sagas' timers."""

    def insert_events(
        self, stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> Sequence[int] | None:
        return super().insert_events(stored_events, **with_timers(stored_events, kwargs))


class TimedPostgresSagaRecorder(PostgresSagaRecorder):
    """sagalog's recorder, every insert of which also writes the sagas' timers."""

    def insert_events(
        self, stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> Sequence[int] | None:
        return super().insert_events(stored_events, **with_timers(stored_events, kwargs))


SagaRecorder = POPOSagaRecorder | SQLiteSagaRecorder | PostgresSagaRecorder

SAGA_RECORDER: dict[str, type[SagaRecorder]] = {
    "memory": POPOSagaRecorder,
    "sqlite": SQLiteSagaRecorder,
    "postgres": PostgresSagaRecorder,
}
TIMED_SAGA_RECORDER: dict[str, type[SagaRecorder]] = {
    "memory": TimedPOPOSagaRecorder,
    "sqlite": TimedSQLiteSagaRecorder,
    "postgres": TimedPostgresSagaRecorder,
}


class SagalogStore:
    """Gives a contract test case the recorders sagalog builds on ``store_backend``."""

    __test__: ClassVar[bool] = False
    store_backend: ClassVar[str]
    #: Whether every insert also carries ``saga_timers`` (then, after the test,
    #: exactly the sagas with events must have a timer: none from a refused insert).
    timed: ClassVar[bool] = False
    database_url: str
    factories: list[InfrastructureFactory[Any]]
    saga_recorders: list[SagaRecorder]

    @pytest.fixture
    def backend(self, selected_backend_names: tuple[str, ...]) -> str:
        if self.store_backend not in selected_backend_names:
            pytest.skip(f"backend {self.store_backend} is not selected by SAGALOG_TEST_BACKEND")
        return self.store_backend

    @pytest.fixture(autouse=True)
    def store(self, database_url: str) -> Iterator[None]:
        self.database_url = database_url
        self.factories = []
        self.saga_recorders = []
        before = set(threading.enumerate())
        yield
        # eventsourcing's concurrent cases set their readers' stop flag but do not join
        # them: a reader still inside select_notifications when the store is closed uses
        # a closed SQLite connection (a segmentation fault). Wait for them first (the
        # test's own threads; connection pools' workers are daemons that live on).
        for thread in set(threading.enumerate()) - before:
            if thread.daemon:
                continue
            thread.join(timeout=30)
            assert not thread.is_alive(), f"{thread.name} still running after the test"
        try:
            if self.timed:
                for recorder in self.saga_recorders:
                    written = recorder.select_notifications(None, limit=1_000_000)
                    assert recorder.count_timers() == len({n.originator_id for n in written})
        finally:
            for factory in self.factories:
                factory.close()

    def factory(self) -> InfrastructureFactory[Any]:
        """A factory configured as the saga manager's (a fresh one per recorder)."""
        env = parse_database_url(self.database_url).application_env(APP_NAME)
        if self.timed:
            topic = get_topic(TIMED_SAGA_RECORDER[self.store_backend])
            prefix = f"{APP_NAME.upper()}_"
            env[f"{prefix}PROCESS_RECORDER_TOPIC"] = topic
            env[f"{prefix}APPLICATION_RECORDER_TOPIC"] = topic
        factory: InfrastructureFactory[Any] = InfrastructureFactory.construct(
            Environment(APP_NAME, env)
        )
        self.factories.append(factory)
        return factory

    def saga_recorder(self, recorder: ApplicationRecorder) -> None:
        """Check the factory built sagalog's recorder, not eventsourcing's."""
        expected = (TIMED_SAGA_RECORDER if self.timed else SAGA_RECORDER)[self.store_backend]
        assert type(recorder) is expected
        assert isinstance(recorder, POPOSagaRecorder | SQLiteSagaRecorder | PostgresSagaRecorder)
        self.saga_recorders.append(recorder)


# The contract test cases, bound to sagalog's recorders. Each is completed by a
# class per backend below; these stay out of collection. (eventsourcing's
# AggregateRecorderTestCase does not apply: it requires ``insert_events`` to
# return no notification ids, which only a recorder without notifications does.)


class ApplicationContract(SagalogStore, contract.ApplicationRecorderTestCase[ApplicationRecorder]):
    def create_recorder(self) -> ApplicationRecorder:
        recorder = self.factory().application_recorder()
        self.saga_recorder(recorder)
        return recorder

    @pytest.mark.skip(reason=TIMING_ONLY)
    def test_performance(self) -> None:  # pragma: no cover
        super().test_performance()


class ProcessContract(SagalogStore, contract.ProcessRecorderTestCase):
    def create_recorder(self) -> ProcessRecorder:
        recorder = self.factory().process_recorder()
        self.saga_recorder(recorder)
        return recorder

    @pytest.mark.skip(reason=TIMING_ONLY)
    def test_performance(self) -> None:  # pragma: no cover
        super().test_performance()


class NonInterleavingContract(SagalogStore, contract.NonInterleavingNotificationIDsBaseCase):
    def create_recorder(self) -> ApplicationRecorder:
        recorder = self.factory().application_recorder()
        self.saga_recorder(recorder)
        return recorder


class TrackingContract(SagalogStore, contract.TrackingRecorderTestCase):
    def create_recorder(self) -> TrackingRecorder:
        recorder: TrackingRecorder = self.factory().tracking_recorder()
        return recorder


# memory:// (POPOSagaFactory, POPOSagaRecorder)


class TestMemoryApplicationContract(ApplicationContract):
    __test__ = True
    store_backend = "memory"


class TestMemoryApplicationContractWithTimers(TestMemoryApplicationContract):
    timed = True


class TestMemoryProcessContract(ProcessContract):
    __test__ = True
    store_backend = "memory"


class TestMemoryProcessContractWithTimers(TestMemoryProcessContract):
    timed = True


class TestMemoryNonInterleavingContract(NonInterleavingContract):
    __test__ = True
    store_backend = "memory"


class TestMemoryNonInterleavingContractWithTimers(TestMemoryNonInterleavingContract):
    timed = True


class TestMemoryTrackingContract(TrackingContract):
    __test__ = True
    store_backend = "memory"


# sqlite:/// (SQLiteSagaRecorder, a file per test)


class TestSQLiteApplicationContract(ApplicationContract):
    __test__ = True
    store_backend = "sqlite"


class TestSQLiteApplicationContractWithTimers(TestSQLiteApplicationContract):
    timed = True


class TestSQLiteProcessContract(ProcessContract):
    __test__ = True
    store_backend = "sqlite"


class TestSQLiteProcessContractWithTimers(TestSQLiteProcessContract):
    timed = True


class TestSQLiteNonInterleavingContract(NonInterleavingContract):
    __test__ = True
    store_backend = "sqlite"


class TestSQLiteNonInterleavingContractWithTimers(TestSQLiteNonInterleavingContract):
    timed = True


class TestSQLiteTrackingContract(TrackingContract):
    __test__ = True
    store_backend = "sqlite"


# postgresql:// (PostgresSagaRecorder and PostgresSagaTrackingRecorder, a schema per test)


class TestPostgresApplicationContract(ApplicationContract):
    __test__ = True
    store_backend = "postgres"

    def test_insert_subscribe(self) -> None:
        self.optional_test_insert_subscribe()


class TestPostgresApplicationContractWithTimers(TestPostgresApplicationContract):
    timed = True


class TestPostgresProcessContract(ProcessContract):
    __test__ = True
    store_backend = "postgres"


class TestPostgresProcessContractWithTimers(TestPostgresProcessContract):
    timed = True


class TestPostgresNonInterleavingContract(NonInterleavingContract):
    __test__ = True
    store_backend = "postgres"


class TestPostgresNonInterleavingContractWithTimers(TestPostgresNonInterleavingContract):
    timed = True


class TestPostgresTrackingContract(TrackingContract):
    __test__ = True
    store_backend = "postgres"

    def test_builds_sagalogs_tracking_recorder(self) -> None:
        assert type(self.create_recorder()) is PostgresSagaTrackingRecorder
