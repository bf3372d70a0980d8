"""The relay's batches go to the broker with every confirm in flight at once (``send_many``)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import pytest

from sagalog.domain import Command, SagaDefinition, Step
from sagalog.infrastructure.messaging.relay import CommandRelay
from sagalog.infrastructure.messaging.transport import TransportError
from sagalog.infrastructure.rabbitmq import RabbitMQTransport, Topology
from sagalog.infrastructure.rabbitmq.topology import channel_to, queue_depth
from sagalog.process import SagaManager

HOTEL = SagaDefinition("Hotel", [Step(name="hold", action="Hotel.Hold")])
NOWHERE = SagaDefinition("Nowhere", [Step(name="go", action="Nowhere.Go")])


@pytest.fixture
def manager(database_url: str) -> Iterator[SagaManager]:
    app = SagaManager([HOTEL, NOWHERE], database_url)
    yield app
    app.close()


@pytest.fixture
def hotel_queue(broker_url: str, topology: Topology) -> str:
    with channel_to(broker_url) as channel:
        return topology.declare_service(channel, "hotel", ["Hotel.Hold"])


def _command(manager: SagaManager, saga_type: str) -> Command:
    command = manager.get(manager.start(saga_type, {})).pending_command
    assert command is not None
    return command


def test_a_batch_is_confirmed_whole_and_counted(
    broker_url: str, topology: Topology, manager: SagaManager, hotel_queue: str
) -> None:
    transport = RabbitMQTransport(broker_url, topology=topology)
    try:
        commands = [_command(manager, "Hotel") for _ in range(25)]
        assert transport.send_many(commands) == 25
        assert transport.send_many(commands[:3]) == 3  # the channel serves the next batch
        assert queue_depth(hotel_queue, broker_url) == 28
        assert transport.confirmed == 28
    finally:
        transport.close()


def test_an_unroutable_command_ends_the_count_of_its_batch(
    broker_url: str, topology: Topology, manager: SagaManager, hotel_queue: str
) -> None:
    transport = RabbitMQTransport(broker_url, topology=topology)
    try:
        commands = [_command(manager, "Hotel") for _ in range(3)]
        commands += [_command(manager, "Nowhere"), _command(manager, "Hotel")]
        # The first three are in the broker; the fourth has no queue: the count ends there
        # (the fifth went out too, and will go again: at least once).
        assert transport.send_many(commands) == 3
        assert queue_depth(hotel_queue, broker_url) == 4
    finally:
        transport.close()


def test_the_relay_sends_a_batch_at_once_and_records_its_position_after_it(
    broker_url: str, topology: Topology, manager: SagaManager, hotel_queue: str
) -> None:
    relay = CommandRelay(manager, RabbitMQTransport(broker_url, topology=topology))
    try:
        for _ in range(40):
            manager.start("Hotel", {})
        assert relay.pump() == 40
        assert queue_depth(hotel_queue, broker_url) == 40
        assert relay.position == manager.recorder.max_notification_id()
        manager.start("Hotel", {})
        manager.start("Nowhere", {})
        manager.start("Hotel", {})
        with pytest.raises(TransportError, match="took 1 of 3"):
            relay.pump()  # the position stops before the unroutable command
        assert relay.tracked_position() < (manager.recorder.max_notification_id() or 0)
    finally:
        relay.close()
        relay.transport.close()


def test_partitioned_replies_are_named_in_reply_to(
    broker_url: str, topology: Topology, manager: SagaManager, hotel_queue: str
) -> None:
    partitioned = dataclasses.replace(topology, reply_partitions=4)
    transport = RabbitMQTransport(broker_url, topology=partitioned)
    try:
        command = _command(manager, "Hotel")
        assert transport.send_many([command, _command(manager, "Hotel")]) == 2
        with channel_to(broker_url) as channel:
            method, properties, _body = channel.basic_get(hotel_queue, auto_ack=True)
        assert method is not None
        assert properties is not None
        assert properties.reply_to == partitioned.reply_queue_for(command.saga_id)
    finally:
        transport.close()
        with channel_to(broker_url) as channel:
            for queue in partitioned.reply_partition_queues:
                channel.queue_delete(queue)
