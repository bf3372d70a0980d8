"""Across processes over the real broker: the worker and a participant killed midway.

The order-fulfillment demo runs with every participant service in its own process
and ``sagalog worker --transport rabbitmq`` (relay, reply consumer, timers,
projections) in another. Midway, the worker and the payment service are killed
with SIGKILL and restarted. Every saga must end, every command recorded in the
log must reach its participant, and none may be acted on twice.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from uuid import UUID

import pytest
from support.broker import wait_until, worker_command

from sagalog.domain import Saga, SagaStatus
from sagalog.infrastructure.demo.participant import demo_services
from sagalog.infrastructure.demo.rabbitmq import ParticipantProcess, participant_command
from sagalog.infrastructure.demo.runner import DemoRates
from sagalog.infrastructure.demo.sagas import DEMO_DEFINITIONS
from sagalog.infrastructure.rabbitmq import Topology
from sagalog.infrastructure.rabbitmq.topology import channel_to
from sagalog.process import SagaManager

pytestmark = [pytest.mark.slow, pytest.mark.requires_database(reason="two processes share it")]

SOME_FAILURES = DemoRates(
    failure=0.15,
    duplicate=0.0,
    late=0.0,
    silent=0.0,
    compensation_failure=0.0,
    compensation_stuck=0.0,
)


def _processed(store: Path) -> set[str]:
    if not store.exists():
        return set()
    with sqlite3.connect(store) as db:
        try:
            return {row[0] for row in db.execute("SELECT command_id FROM processed_commands")}
        except sqlite3.OperationalError:
            return set()


@pytest.fixture
def manager(database_url: str) -> Iterator[SagaManager]:
    app = SagaManager(DEMO_DEFINITIONS, database_url)
    yield app
    app.close()


def test_worker_and_participant_killed_midway_lose_and_repeat_nothing(
    broker_url: str, topology: Topology, manager: SagaManager, database_url: str, tmp_path: Path
) -> None:
    services = demo_services()
    with channel_to(broker_url) as channel:
        topology.declare(channel)
        for service, names in services.items():
            topology.declare_service(channel, service, names)
    stores = {service: tmp_path / f"{service}.db" for service in services}
    children = {
        service: ParticipantProcess(
            service,
            participant_command(
                service,
                topology,
                url=broker_url,
                store=stores[service],
                seed=3,
                rates=SOME_FAILURES,
            ),
        )
        for service in services
    }
    worker = ParticipantProcess("worker", worker_command(database_url, broker_url, topology.prefix))

    def ended(ids: list[UUID]) -> int:
        return sum(manager.get(i).is_terminal for i in ids)

    try:
        for child in children.values():
            child.start()
        worker.start()
        first = [manager.start("OrderFulfillment", {"n": i}) for i in range(6)]
        wait_until(lambda: ended(first) == 6, timeout=90, message="the first wave to end")

        second = [manager.start("OrderFulfillment", {"n": 100 + i}) for i in range(24)]
        wait_until(lambda: ended(second) >= 3, timeout=90, message="the second wave to begin")
        worker.kill()
        children["PaymentService"].kill()
        unfinished_at_kill = 24 - ended(second)
        assert unfinished_at_kill > 0, "the kill came too late to test anything"
        third = [manager.start("TravelBooking", {"n": 200 + i}) for i in range(4)]
        time.sleep(0.5)  # commands pile up in the log while the worker is down
        worker.start()
        children["PaymentService"].start()
        everything = first + second + third
        wait_until(
            lambda: ended(everything) == len(everything),
            timeout=180,
            message="every saga to end after the restarts",
        )
    finally:
        worker.stop()
        for child in children.values():
            child.stop()

    dispatched: set[str] = set()
    statuses: list[SagaStatus] = []
    for saga_id in everything:
        history = manager.history(saga_id)
        statuses.append(manager.get(saga_id).status)
        for event in history:
            if isinstance(event, Saga.StepDispatched | Saga.CompensationDispatched):
                dispatched.add(str(event.command_id))
        completed = [e.step for e in history if isinstance(e, Saga.StepCompleted)]
        assert len(completed) == len(set(completed)), f"{saga_id} completed a step twice"
    assert set(statuses) <= {SagaStatus.COMPLETED, SagaStatus.FAILED}
    assert SagaStatus.FAILED in statuses  # compensations ran across the kills too
    processed: set[str] = set()
    for store in stores.values():
        processed |= _processed(store)
    assert processed == dispatched  # no command lost; none acted on that was not recorded
