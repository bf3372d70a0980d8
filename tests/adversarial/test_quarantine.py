"""Issue 15, case 1 (defence in depth): one event a follower cannot apply never stops it.

The store of ``fixtures/nul_event.sqlite`` was written before NUL characters were
refused; on PostgreSQL its ``StepFailed`` cannot be written into the views' ``text``
columns. The projector sets that event aside (and the saga's later events with it),
the other sagas' views go on, the worker keeps running, the listings answer, and the
quarantine is visible and retried by an operator. An event that does not decode at
all is set aside the same way by the projector, the relay and the metrics observer,
on every backend.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from eventsourcing.persistence import StoredEvent
from eventsourcing.utils import clear_topic_cache, register_topic
from poison_store import HEALTHY, POISONED, poisoned_store
from typer.testing import CliRunner

from sagalog.domain import Saga
from sagalog.infrastructure.cli import app
from sagalog.infrastructure.demo.sagas import DEMO_DEFINITIONS
from sagalog.infrastructure.messaging.observer import SagaEventFollower
from sagalog.infrastructure.messaging.relay import CommandRelay
from sagalog.infrastructure.messaging.transport import InProcessTransport
from sagalog.infrastructure.worker import Worker
from sagalog.process import SagaManager
from sagalog.projections import SagaProjector
from sagalog.projections.quarantine import HELD_BEHIND


def invoke(*args: str) -> Any:
    """Run ``sagalog *args`` in-process; the click ``Result``."""
    return CliRunner().invoke(app, list(args))


#: A topic no class answers to (as if an event class had been renamed without an alias).
LOST_TOPIC = "sagalog_tests_renamed:StepCompletedOfOld"


@pytest.fixture
def poisoned(backend: str, database_url: str, tmp_path: Path) -> str:
    if backend == "memory":
        pytest.skip("the fixture is a store on disk")
    return poisoned_store(backend, database_url, tmp_path)


def _wait_for(condition: object, what: str, limit: float = 60.0) -> None:
    """Poll ``condition()`` until true; fail (not a timing assertion: a hang guard)."""
    deadline = time.monotonic() + limit
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            pytest.fail(f"gave up waiting for {what}")
        time.sleep(0.05)


def test_the_projector_quarantines_the_nul_event_and_projects_the_other_sagas(
    poisoned: str, backend: str
) -> None:
    manager = SagaManager(DEMO_DEFINITIONS, poisoned)
    projector = SagaProjector(manager)
    try:
        projector.catch_up()
        assert projector.lag() == 0
        for saga_id in HEALTHY:
            assert projector.views.get(saga_id) is not None
        held = projector.quarantined()
        if backend == "postgres":
            # The StepFailed, and the saga's two later events held behind it.
            assert [item.saga_id for item in held] == [POISONED] * 3
            assert "NUL" in held[0].error
            assert held[0].topic.endswith("StepFailed")
            assert [item.error for item in held[1:]] == [HELD_BEHIND] * 2
            summary = projector.views.get(POISONED)
            assert summary is not None
            assert summary.status == "PENDING"
            assert projector.status().quarantined == 3
            applied, failed = projector.retry_quarantined()
            assert (applied, list(failed)) == (0, [POISONED])
            assert [item.retries for item in projector.quarantined()] == [1, 0, 0]
        else:
            # SQLite holds a NUL in text: nothing to set aside.
            assert held == []
            summary = projector.views.get(POISONED)
            assert summary is not None
            assert summary.status == "FAILED"
    finally:
        projector.close()
        manager.close()


def test_the_worker_keeps_running_on_the_poisoned_store_and_moves_the_others(
    poisoned: str, backend: str
) -> None:
    manager = SagaManager(DEMO_DEFINITIONS, poisoned)
    worker = Worker(manager, tick_interval=0.05, poll_interval=0.05)
    worker.start()
    try:
        _wait_for(lambda: worker.projector.lag() == 0, "the projections to catch up")
        fresh = manager.start("OrderFulfillment", {"order_id": "after"})
        manager.handle_step_completed(fresh, "reserve_inventory", message_id="ok-1")

        def moved() -> bool:
            summary = worker.projector.views.get(fresh)
            return summary is not None and summary.current_step == "process_payment"

        _wait_for(moved, "the healthy saga's next step to be projected")
        assert not worker.stop_event.is_set()
        if backend == "postgres":
            assert {item.saga_id for item in worker.projector.quarantined()} == {POISONED}
    finally:
        worker.stop()
        worker.join(30)
        worker.close()
        manager.close()
    assert worker._errors == []


@pytest.mark.parametrize(
    "command",
    [
        ("list", "--json"),
        ("stuck", "--json"),
        ("projections", "status", "--json"),
        ("projections", "rebuild"),
        ("quarantine", "list", "--json"),
    ],
)
def test_the_listings_answer_on_the_poisoned_store(
    poisoned: str, backend: str, command: tuple[str, ...]
) -> None:
    if command[0] in ("projections", "quarantine"):  # these read without catching up
        assert invoke("list", "--database-url", poisoned).exit_code == 0
    result = invoke(*command, "--database-url", poisoned)
    assert result.exit_code == 0, result.output
    if command[:2] == ("projections", "status"):
        data = json.loads(result.stdout)
        assert data["quarantined"] == (3 if backend == "postgres" else 0)
    if command[0] == "stuck" and backend == "postgres":
        assert "quarantined: 3 events of 1 sagas" in result.stderr
    if command[0] == "quarantine":
        held = json.loads(result.stdout)
        assert len(held) == (3 if backend == "postgres" else 0)


def test_quarantine_retry_names_what_still_fails(poisoned: str, backend: str) -> None:
    invoke("list", "--database-url", poisoned)
    result = invoke(
        "quarantine", "retry", "--actor", "ops", "--reason", "after the fix",
        "--database-url", poisoned,
    )  # fmt: skip
    if backend == "postgres":
        assert result.exit_code == 1
        assert str(POISONED) in result.stdout
        assert "NUL" in result.stdout
    else:
        assert result.exit_code == 0, result.output
        assert "0 quarantined events applied" in result.stdout


def _write_with_lost_topic(manager: SagaManager, saga_id: UUID) -> None:
    """Record ``saga_id``'s StepCompleted under a topic no class answers to (and what follows)."""
    saga = manager.get(saga_id)
    saga.complete_step("reserve_inventory", {"sku": 1}, now=saga.modified_on)
    first, *rest = [manager.mapper.to_stored_event(e) for e in saga.collect_events()]
    lost = StoredEvent(first.originator_id, first.originator_version, LOST_TOPIC, first.state)
    manager.recorder.insert_events([lost, *rest])


@pytest.fixture
def lost_topic() -> Iterator[None]:
    yield
    clear_topic_cache()


def test_an_undecodable_event_is_quarantined_by_every_follower_and_retried_once_readable(
    database_url: str, lost_topic: None
) -> None:
    manager = SagaManager(DEMO_DEFINITIONS, database_url)
    projector = SagaProjector(manager)
    transport = InProcessTransport()
    sent: list[str] = []
    transport.subscribe_all(lambda command: sent.append(command.step))
    relay = CommandRelay(manager, transport, quarantine=projector.views.quarantine_log())
    follower = SagaEventFollower(
        manager, start="beginning", quarantine=projector.views.quarantine_log()
    )
    try:
        poisoned = manager.start("OrderFulfillment", {"order_id": "p"})
        _write_with_lost_topic(manager, poisoned)
        healthy = manager.start("OrderFulfillment", {"order_id": "h"})
        for _ in range(5):  # a few pumps: pushed recordings first, then the log
            relay.pump()
        transport.deliver()
        follower.drain()
        projector.catch_up()
        # Everyone went past the poison: the healthy saga's command went out and is projected.
        assert sent.count("reserve_inventory") == 2
        assert projector.views.get(healthy) is not None
        assert follower.quarantined == 1
        assert relay.quarantined == 0
        held = projector.views.quarantine_log().events()
        assert {(item.follower, item.saga_id) for item in held if item.error != HELD_BEHIND} == {
            (projector.views.projection_name, poisoned),
            ("metrics", poisoned),
        }
        # The projector also holds the saga's next event (StepDispatched) behind it.
        assert projector.views.quarantine_counts() == {
            projector.views.projection_name: 2,
            "metrics": 1,
        }
        # Once the topic is known again (an alias), the operator's retry applies it.
        register_topic(LOST_TOPIC, Saga.StepCompleted)
        applied, failed = projector.retry_quarantined()
        assert (applied, failed) == (2, {})
        summary = projector.views.get(poisoned)
        assert summary is not None
        assert summary.event_count == 4
        assert summary.current_step == "process_payment"
        assert projector.quarantined() == []
    finally:
        relay.close()
        projector.close()
        manager.close()


class PickyTransport:
    """A transport that refuses, as such (not as an outage), the commands of some sagas.

    Like a broker client that cannot encode one message: the refusal is that command's
    fault, so the relay must set it aside and go on, not retry the whole log forever.
    """

    def __init__(self, refused: set[UUID]) -> None:
        self.refused = refused
        self.sent: list[UUID] = []

    def send(self, command: Any) -> None:
        if command.saga_id in self.refused:
            raise ValueError(f"cannot encode the command of saga {command.saga_id}")
        self.sent.append(command.saga_id)

    def close(self) -> None:
        pass


def test_the_relay_quarantines_a_command_its_transport_refuses_and_sends_the_others(
    database_url: str,
) -> None:
    manager = SagaManager(DEMO_DEFINITIONS, database_url)
    projector = SagaProjector(manager)
    poisoned, healthy = (manager.start("OrderFulfillment", {}) for _ in range(2))
    transport = PickyTransport({poisoned})
    relay = CommandRelay(manager, transport, quarantine=projector.views.quarantine_log())
    try:
        relay.drain()
        assert transport.sent == [healthy]
        assert relay.quarantined == 1
        [held] = projector.views.quarantine_log().events(follower="CommandRelay")
        assert held.saga_id == poisoned
        assert "ValueError: cannot encode" in held.error
        # Once the transport can send it, the retry does and the quarantine is empty.
        transport.refused.clear()
        assert relay.retry_quarantined() == (1, 0)
        assert transport.sent == [healthy, poisoned]
        assert projector.views.quarantine_log().events(follower="CommandRelay") == []
    finally:
        relay.close()
        projector.close()
        manager.close()


@pytest.mark.slow
def test_the_cli_worker_runs_on_the_poisoned_store_and_stops_cleanly(poisoned: str) -> None:
    import os
    import signal
    import subprocess
    import sys

    process = subprocess.Popen(
        [sys.executable, "-m", "sagalog.infrastructure.cli", "worker",
         "--database-url", poisoned, "--poll-interval", "0.05"],
        stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    try:
        assert process.stderr is not None
        for line in process.stderr:
            if line.startswith("sagalog worker on"):
                break
        _wait_for(
            lambda: (
                invoke("projections", "status", "--database-url", poisoned).exit_code == 0
                and json.loads(
                    invoke("projections", "status", "--json", "--database-url", poisoned).stdout
                )["lag"]
                == 0
            ),
            "the worker's projections to catch up",
        )
        assert process.poll() is None  # still running, on PostgreSQL as on SQLite
        process.send_signal(signal.SIGTERM)
        assert process.wait(60) == 0
    finally:
        if process.poll() is None:
            process.kill()
