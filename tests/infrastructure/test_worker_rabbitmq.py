"""``Worker`` with the RabbitMQ transport and reply consumer runs sagas to their end."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
from support.broker import Background, wait_until

from sagalog.domain import Command, SagaDefinition, SagaStatus, Step
from sagalog.infrastructure.rabbitmq import RabbitMQTransport, ReplyConsumer, Topology
from sagalog.infrastructure.rabbitmq.topology import channel_to
from sagalog.infrastructure.services.participant import Participant
from sagalog.infrastructure.worker import Worker
from sagalog.process import SagaManager

TWO = SagaDefinition(
    "Two",
    [
        Step(name="hold", action="Hotel.Hold", compensation="Hotel.Release"),
        Step(name="pay", action="Pay.Charge"),
    ],
)


@pytest.fixture
def manager(database_url: str) -> Iterator[SagaManager]:
    app = SagaManager([TWO], database_url)
    yield app
    app.close()


def test_worker_relays_over_the_broker_and_consumes_replies(
    broker_url: str, topology: Topology, manager: SagaManager, background: Background
) -> None:
    seen: list[str] = []
    hotel = Participant("hotel", url=broker_url, topology=topology)
    payment = Participant("payment", url=broker_url, topology=topology)

    @hotel.handles("Hotel.Hold")
    def hold(command: Command) -> dict[str, Any]:
        seen.append(command.name)
        return {"room": 12}

    @payment.handles("Pay.Charge")
    def charge(command: Command) -> str:
        seen.append(command.name)
        return "paid"

    with channel_to(broker_url) as channel:
        topology.declare(channel)
    for participant in (hotel, payment):
        background.start(participant.service, participant.run)
        wait_until(participant.ready.is_set, message=f"{participant.service} consuming")
    consumer = ReplyConsumer(manager, broker_url, topology=topology)
    worker = Worker(
        manager,
        transport=RabbitMQTransport(broker_url, topology=topology),
        replies=consumer,
        tick_interval=0.05,
        poll_interval=0.02,
    )
    assert worker.loops == ["timers", "relay", "projections", "replies"]
    thread = threading.Thread(target=worker.run)
    thread.start()
    try:
        saga_id = manager.start("Two", {"guest": "ada"})
        wait_until(lambda: manager.get(saga_id).is_terminal, message="the saga to end")
        saga = manager.get(saga_id)
        assert saga.status is SagaStatus.COMPLETED
        assert saga.results == {"hold": {"room": 12}, "pay": "paid"}
        assert seen == ["Hotel.Hold", "Pay.Charge"]
    finally:
        worker.stop()
        thread.join(20)
        worker.close()
    assert not thread.is_alive()
