"""A saga with steps in parallel runs over RabbitMQ: branches answered by different services."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
from support.broker import Background, wait_until

from sagalog.domain import Command, Saga, SagaDefinition, SagaStatus, Step
from sagalog.domain.definition import parallel
from sagalog.infrastructure.rabbitmq import RabbitMQTransport, ReplyConsumer, Topology
from sagalog.infrastructure.rabbitmq.topology import channel_to
from sagalog.infrastructure.services.participant import CommandFailed, Participant
from sagalog.infrastructure.worker import Worker
from sagalog.process import SagaManager

FAN = SagaDefinition(
    "FanOut",
    [
        Step(name="budget", action="Budget.Check", compensation="Budget.Release"),
        parallel(
            Step(name="hotel", action="Hotel.Book", compensation="Hotel.Cancel"),
            Step(name="car", action="Car.Rent", compensation="Car.Return"),
        ),
        Step(name="confirm", action="Budget.Confirm", retriable=True),
    ],
)


@pytest.fixture
def manager(database_url: str) -> Iterator[SagaManager]:
    app = SagaManager([FAN], database_url)
    yield app
    app.close()


def test_parallel_branches_complete_and_a_failed_branch_undoes_its_sibling_over_the_broker(
    broker_url: str, topology: Topology, manager: SagaManager, background: Background
) -> None:
    seen: list[str] = []
    budget = Participant("budget", url=broker_url, topology=topology)
    hotel = Participant("hotel", url=broker_url, topology=topology)
    car = Participant("car", url=broker_url, topology=topology)

    def record(command: Command) -> dict[str, Any]:
        seen.append(command.name)
        if command.name == "Car.Rent" and command.payload["data"].get("no_cars"):
            raise CommandFailed("no cars left")
        return {"ok": command.name}

    for participant, names in (
        (budget, ("Budget.Check", "Budget.Release", "Budget.Confirm")),
        (hotel, ("Hotel.Book", "Hotel.Cancel")),
        (car, ("Car.Rent", "Car.Return")),
    ):
        for name in names:
            participant.handles(name)(record)
    with channel_to(broker_url) as channel:
        topology.declare(channel)
    for participant in (budget, hotel, car):
        background.start(participant.service, participant.run)
        wait_until(participant.ready.is_set, message=f"{participant.service} consuming")
    worker = Worker(
        manager,
        transport=RabbitMQTransport(broker_url, topology=topology),
        replies=ReplyConsumer(manager, broker_url, topology=topology),
        tick_interval=0.05,
        poll_interval=0.02,
    )
    thread = threading.Thread(target=worker.run)
    thread.start()
    try:
        done = manager.start("FanOut", {"trip": 1})
        failed = manager.start("FanOut", {"trip": 2, "no_cars": True})
        wait_until(
            lambda: all(manager.get(s).is_terminal for s in (done, failed)),
            message="the sagas to end",
        )
        assert manager.get(done).status is SagaStatus.COMPLETED
        assert set(manager.get(done).results) == {"budget", "hotel", "car", "confirm"}
        assert manager.get(failed).status is SagaStatus.FAILED
        undone = [
            e.step for e in manager.history(failed) if isinstance(e, Saga.CompensationCompleted)
        ]
        assert undone == ["hotel", "budget"]  # the sibling first, then what both waited for
    finally:
        worker.stop()
        thread.join(20)
        worker.close()
    assert not thread.is_alive()
    assert "Hotel.Cancel" in seen
