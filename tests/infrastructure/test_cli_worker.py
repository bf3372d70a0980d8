"""``sagalog worker`` as a real process on a SQLite file: timers, projections, relay, signals."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from uuid import UUID

import pytest

from sagalog.infrastructure.demo.sagas import DEMO_DEFINITIONS
from sagalog.infrastructure.messaging.relay import COMMAND_TOPICS, CommandRelay
from sagalog.infrastructure.messaging.transport import InProcessTransport
from sagalog.process import SagaManager
from sagalog.projections import SagaProjector, SagaViews

HERE = Path(__file__).resolve().parent
FAR_FUTURE = datetime(9999, 1, 1, tzinfo=UTC)


class WorkerProcess:
    """``python -m sagalog.infrastructure.cli worker …`` with its output in files."""

    def __init__(self, url: str, directory: Path, *extra: str) -> None:
        self.stdout_path = directory / "worker.out"
        self.stderr_path = directory / "worker.err"
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(HERE), env.get("PYTHONPATH", "")) if p)
        with self.stdout_path.open("w") as out, self.stderr_path.open("w") as err:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "sagalog.infrastructure.cli",
                    "worker",
                    "--database-url",
                    url,
                    "--tick-interval",
                    "0.05",
                    "--poll-interval",
                    "0.05",
                    *extra,
                ],
                stdout=out,
                stderr=err,
                env=env,
            )

    def wait_ready(self, timeout: float = 60) -> None:
        """Wait for the banner the worker prints once its signal handlers are installed."""
        deadline = time.monotonic() + timeout
        while "sagalog worker on " not in self.stderr:
            assert self.process.poll() is None, f"the worker died:\n{self.stderr}"
            assert time.monotonic() < deadline, "the worker did not start"
            time.sleep(0.02)

    def stop(self, signum: int = signal.SIGTERM, timeout: float = 30) -> int:
        """Send ``signum`` and wait for the exit code."""
        self.process.send_signal(signum)
        return self.process.wait(timeout)

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text()

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'worker.db'}"


@pytest.fixture
def start_worker(url: str, tmp_path: Path) -> Iterator[Callable[..., WorkerProcess]]:
    started: list[WorkerProcess] = []

    def start(*extra: str) -> WorkerProcess:
        worker = WorkerProcess(url, tmp_path, *extra)
        started.append(worker)
        worker.wait_ready()
        return worker

    yield start
    for worker in started:
        worker.kill()


def _start_overdue_sagas(url: str, count: int) -> list[UUID]:
    """Sagas started an hour ago whose first step's deadline passed: their timers are due.

    Trips on ``TravelBooking`` v1, whose first step has a compensation to wait for (v2
    begins with a budget check that has none, so its timeout would end the saga at once).
    """
    an_hour_ago = datetime.now(UTC) - timedelta(hours=1)
    manager = SagaManager(DEMO_DEFINITIONS, url, clock=lambda: an_hour_ago)
    try:
        return [
            manager.start("OrderFulfillment", {"n": n})
            if n % 2
            else manager.start("TravelBooking", {"n": n}, version=1)
            for n in range(count)
        ]
    finally:
        manager.close()


def _wait_until(condition: Callable[[], bool], worker: WorkerProcess, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert worker.process.poll() is None, f"the worker died:\n{worker.stderr}"
        assert time.monotonic() < deadline, f"timed out; worker said:\n{worker.stderr}"
        time.sleep(0.05)


def _assert_consistent(url: str) -> tuple[SagaManager, SagaProjector]:
    """Timers agree with the log; the views are whole batches and equal a rebuild."""
    manager = SagaManager([], url)
    projector = SagaProjector(manager)
    position = projector.position()
    # Nothing half-written: every notification up to the position is in the timeline
    # (the log holds only saga events), and nothing beyond it.
    assert projector.views.count_events() == position
    projector.catch_up()
    live = projector.views.dump()
    projector.rebuild()
    assert projector.views.dump() == live
    timers = dict(manager.timers.select_due_timers(FAR_FUTURE, 1_000_000))
    for summary in live[0]:
        saga = manager.get(summary.saga_id)
        assert summary.status == saga.status.value
        assert timers.get(saga.id) == saga.next_wakeup
    return manager, projector


@pytest.mark.slow
def test_worker_fires_due_timers_keeps_projections_up_and_stops_on_sigterm(
    url: str, start_worker: Callable[..., WorkerProcess]
) -> None:
    ids = _start_overdue_sagas(url, 6)
    worker = start_worker()
    reader = SagaManager([], url)
    views = SagaViews(url)
    try:

        def settled() -> bool:
            head = reader.recorder.max_notification_id() or 0
            due = reader.timers.select_due_timers(datetime.now(UTC), 100)
            return not due and views.max_tracking_id(reader.name) == head and head > 12

        _wait_until(settled, worker)
        for saga_id in ids:
            summary = views.get(saga_id)
            assert summary is not None
            # The first step timed out: it may have been done, so it is being compensated.
            assert summary.status == "COMPENSATING"
            assert summary.last_error is not None
            assert summary.last_error.startswith("timed out at ")
    finally:
        views.close()
        reader.close()
    assert worker.stop(signal.SIGTERM) == 0
    assert "relay off (no transport)" in worker.stderr
    assert "stopped on signal 15: 6 sagas moved by timers, 0 commands sent" in worker.stderr
    manager, projector = _assert_consistent(url)
    try:
        # No transport: the relay never ran, its position did not move.
        relay = CommandRelay(manager, InProcessTransport())
        assert relay.position == 0
    finally:
        projector.close()
        manager.close()


@pytest.mark.slow
def test_worker_stopped_in_the_middle_of_work_leaves_nothing_half_written(
    url: str, start_worker: Callable[..., WorkerProcess]
) -> None:
    _start_overdue_sagas(url, 300)
    worker = start_worker()
    reader = SagaManager([], url)
    try:
        start = reader.recorder.max_notification_id() or 0
        _wait_until(lambda: (reader.recorder.max_notification_id() or 0) > start, worker)
    finally:
        reader.close()
    assert worker.stop(signal.SIGINT) == 0
    assert "stopped on signal 2" in worker.stderr
    manager, projector = _assert_consistent(url)
    try:
        # A second worker finishes the job from where the first one stopped.
        worker = start_worker()

        def done() -> bool:
            return not manager.timers.select_due_timers(datetime.now(UTC), 1)

        _wait_until(done, worker)
        assert worker.stop() == 0
        statuses = {s.status for s in _assert_consistent(url)[1].views.list_sagas(limit=1000)}
        assert statuses == {"COMPENSATING"}  # each timed-out first step, being undone
    finally:
        projector.close()
        manager.close()


@pytest.mark.slow
def test_worker_relays_commands_to_in_process_participants(
    url: str, start_worker: Callable[..., WorkerProcess]
) -> None:
    manager = SagaManager(DEMO_DEFINITIONS, url)
    try:
        ids = [manager.start("OrderFulfillment", {"n": n}) for n in range(5)]
    finally:
        manager.close()
    worker = start_worker(
        "--transport", "in-process", "--participants", "test_cli_participants:complete_everything"
    )
    views = SagaViews(url)
    try:

        def all_completed() -> bool:
            summaries = [views.get(saga_id) for saga_id in ids]
            return all(s is not None and s.status == "COMPLETED" for s in summaries)

        _wait_until(all_completed, worker)
    finally:
        views.close()
    assert worker.stop() == 0
    assert "relay on (in-process)" in worker.stderr
    assert "20 commands sent" in worker.stderr  # 4 steps x 5 sagas
    manager, projector = _assert_consistent(url)
    try:
        relay = CommandRelay(manager, InProcessTransport())
        commands = manager.recorder.select_notifications(1, 10_000, topics=COMMAND_TOPICS)
        assert len(commands) == 20
        assert relay.position >= commands[-1].id  # every command handed over, once
        assert relay.lag() == 0
    finally:
        projector.close()
        manager.close()


def test_the_worker_api_runs_until_stopped_and_reports_a_failing_loop() -> None:
    """``Worker`` in-process: ``stop()`` ends ``run()``; a loop that dies stops the others."""
    import threading

    from sagalog.infrastructure.worker import Worker, WorkerError

    manager = SagaManager(DEMO_DEFINITIONS, "memory://")
    try:
        worker = Worker(manager, tick_interval=0.01, poll_interval=0.01)
        assert worker.loops == ["timers", "projections"]
        manager.start("OrderFulfillment", {"n": 1})
        threading.Timer(0.3, worker.stop).start()
        worker.run()
        assert worker.projector.position() == 2
        worker.close()

        broken = Worker(manager, tick_interval=0.01, poll_interval=0.01)

        def explode(*args: object, **kwargs: object) -> None:
            raise RuntimeError("view damaged")

        broken.projector.run = explode  # type: ignore[method-assign]
        with pytest.raises(WorkerError, match="the projections loop failed: view damaged"):
            broken.run()
        broken.close()
    finally:
        manager.close()
