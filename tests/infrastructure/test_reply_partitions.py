"""Replies routed by saga id to partitions: several workers share them, one saga in one place.

Each partition is a queue with a single active consumer; the live workers split the
partitions among themselves from their heartbeat rows; the single replies queue of older
versions is drained by the holder of partition 0; quorum queues are declared on request.
"""

from __future__ import annotations

import dataclasses
import threading
import uuid
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pika.exceptions
import pytest
from support.broker import Background, wait_until

from sagalog.domain import Command, SagaDefinition, SagaStatus, Step
from sagalog.infrastructure.persistence.heartbeats import share_of
from sagalog.infrastructure.rabbitmq import RabbitMQTransport, ReplyConsumer, Topology
from sagalog.infrastructure.rabbitmq.replies import publish_reply
from sagalog.infrastructure.rabbitmq.topology import channel_to
from sagalog.infrastructure.services.participant import Participant
from sagalog.infrastructure.worker import Worker
from sagalog.process import Reply, SagaManager

TWO = SagaDefinition(
    "Two",
    [
        Step(name="hold", action="Hotel.Hold", compensation="Hotel.Release"),
        Step(name="pay", action="Pay.Charge"),
    ],
)
ONE = SagaDefinition("One", [Step(name="hold", action="Hotel.Hold")])


@pytest.fixture
def partitioned(topology: Topology, broker_url: str) -> Iterator[Topology]:
    """The test's topology with four reply partitions (their queues deleted afterwards)."""
    names = dataclasses.replace(topology, reply_partitions=4)
    yield names
    with channel_to(broker_url) as channel:
        for queue in names.reply_partition_queues:
            channel.queue_delete(queue)


def test_a_sagas_replies_always_go_to_one_partition_and_every_partition_is_used() -> None:
    names = Topology("t", reply_partitions=8)
    ids = [uuid.uuid4() for _ in range(400)]
    assert all(names.reply_queue_for(i) == names.reply_queue_for(str(i)) for i in ids)
    used = Counter(names.reply_partition(i) for i in ids)
    assert set(used) == set(range(8))
    assert Topology("t").reply_queue_for(ids[0]) == "t.replies"  # no partitions: one queue
    assert names.reply_queue_for(ids[0]).startswith("t.replies.")


@pytest.mark.parametrize("workers", [1, 2, 3, 5])
def test_live_workers_split_the_partitions_between_them_without_overlap(workers: int) -> None:
    live = [f"w{n}" for n in range(workers)]
    shares = [share_of(name, live, 8) for name in live]
    assert sorted(k for share in shares for k in share) == list(range(8))
    assert all(shares)  # with 8 partitions, each of up to 8 workers has some


def test_the_broker_delivers_a_partition_to_one_consumer_at_a_time(
    broker_url: str, partitioned: Topology, background: Background, database_url: str
) -> None:
    manager = SagaManager([ONE], database_url)
    first = ReplyConsumer(manager, broker_url, topology=partitioned, connection_name="first")
    second = ReplyConsumer(manager, broker_url, topology=partitioned, connection_name="second")
    stop_first = threading.Event()
    try:
        threading.Thread(target=first.run, args=(stop_first,), daemon=True).start()
        wait_until(first.ready.is_set, message="the first consumer")
        background.start("second", second.run)
        wait_until(second.ready.is_set, message="the second consumer")
        assert first.held_partitions == second.held_partitions == [0, 1, 2, 3]

        def answer(count: int) -> list[uuid.UUID]:
            sagas = [manager.start("One", {"n": n}) for n in range(count)]
            with channel_to(broker_url) as channel:
                for saga_id in sagas:
                    command = manager.get(saga_id).pending_command
                    assert command is not None
                    publish_reply(
                        channel,
                        Reply.to(command, result="ok"),
                        queue=partitioned.reply_queue_for(saga_id),
                    )
            return sagas

        sagas = answer(12)
        wait_until(
            lambda: all(manager.get(s).status is SagaStatus.COMPLETED for s in sagas),
            message="the first batch of sagas",
        )
        # Both consume every partition, but each queue has one active consumer: the first.
        # (A consumer counts a reply after its ack, just after the commit the saga shows.)
        wait_until(lambda: first.handled + second.handled == 12, message="the replies counted")
        assert (first.handled, second.handled) == (12, 0)
        stop_first.set()  # the first goes away: the broker hands its partitions over
        wait_until(lambda: not first.consuming, message="the first consumer to stop")
        later = answer(8)
        wait_until(
            lambda: all(manager.get(s).status is SagaStatus.COMPLETED for s in later),
            message="the later sagas",
        )
        wait_until(lambda: first.handled + second.handled == 20, message="the replies counted")
        assert (first.handled, second.handled) == (12, 8)
    finally:
        stop_first.set()
        manager.close()


def test_two_workers_share_the_partitions_and_send_each_command_once(
    broker_url: str, partitioned: Topology, background: Background, database_url: str
) -> None:
    if database_url.startswith("memory"):
        pytest.skip("workers share a SQLite or PostgreSQL store")
    seen: Counter[str] = Counter()
    hotel = Participant("hotel", url=broker_url, topology=partitioned)
    payment = Participant("payment", url=broker_url, topology=partitioned)

    @hotel.handles("Hotel.Hold")
    def hold(command: Command) -> dict[str, Any]:
        seen[str(command.command_id)] += 1
        return {"room": 12}

    @payment.handles("Pay.Charge")
    def charge(command: Command) -> str:
        seen[str(command.command_id)] += 1
        return "paid"

    for participant in (hotel, payment):
        background.start(participant.service, participant.run)
        wait_until(participant.ready.is_set, message=f"{participant.service} consuming")
    managers = [SagaManager([TWO], database_url) for _ in range(3)]
    workers = [
        Worker(
            manager,
            transport=RabbitMQTransport(broker_url, topology=partitioned),
            replies=ReplyConsumer(manager, broker_url, topology=partitioned),
            tick_interval=0.05,
            poll_interval=0.02,
            lease_seconds=1.0,
        )
        for manager in managers[:2]
    ]
    threads = [threading.Thread(target=w.run, daemon=True) for w in workers]
    for thread in threads:
        thread.start()
    try:
        consumers = [w.replies for w in workers]

        def split() -> bool:
            held = [getattr(c, "held_partitions", []) for c in consumers]
            return all(held) and sorted(held[0] + held[1]) == [0, 1, 2, 3]

        wait_until(split, message="the two workers to split the partitions")
        sagas = [managers[2].start("Two", {"n": n}) for n in range(40)]
        wait_until(
            lambda: all(managers[2].get(s).is_terminal for s in sagas),
            message="the sagas to end",
        )
        assert {managers[2].get(s).status for s in sagas} == {SagaStatus.COMPLETED}
        # Each command was sent once, by the one active worker, and seen once.
        assert len(seen) == 80
        assert set(seen.values()) == {1}
        assert sum(w.active.is_set() for w in workers) == 1
        relays = [w.relay for w in workers if w.relay is not None]
        # (The relay counts a batch once its position is recorded, after the send.)
        wait_until(lambda: sum(r.delivered for r in relays) >= 80, message="the sends counted")
        assert [r.resent for r in relays] == [0, 0]
        assert sum(r.delivered for r in relays) == 80
        # Both consumed replies: the replies of each saga in the partition of its id.
        # (A consumer counts a reply after its ack, just after the commit the saga shows.)
        wait_until(
            lambda: sum(getattr(c, "handled", 0) for c in consumers) >= 80,
            message="the replies counted",
        )
        handled = [getattr(c, "handled", 0) for c in consumers]
        assert all(handled), handled
        assert sum(handled) == 80
        registry = workers[0].registry
        assert registry is not None
        rows = {row.holder: row for row in registry.live()}
        assert set(rows) == {w.holder for w in workers}
        assert sorted(row.role for row in rows.values()) == ["active", "standby"]
    finally:
        for worker in workers:
            worker.stop()
        for thread in threads:
            thread.join(20)
        for worker in workers:
            worker.close()
        for manager in managers:
            manager.close()
    assert not any(thread.is_alive() for thread in threads)


def test_replies_in_the_single_queue_of_older_workers_are_drained_by_partition_zero(
    broker_url: str, partitioned: Topology, background: Background, database_url: str
) -> None:
    manager = SagaManager([ONE], database_url)
    try:
        saga_id = manager.start("One", {})
        command = manager.get(saga_id).pending_command
        assert command is not None
        with channel_to(broker_url) as channel:
            partitioned.declare(channel)
            publish_reply(  # as a worker without partitions had asked in reply_to
                channel, Reply.to(command, result="ok"), queue=partitioned.replies_queue
            )
        others = ReplyConsumer(manager, broker_url, topology=partitioned, assignment=lambda: {1, 2})
        zero = ReplyConsumer(manager, broker_url, topology=partitioned, assignment=lambda: {0, 3})
        background.start("others", others.run)
        background.start("zero", zero.run)
        wait_until(lambda: manager.get(saga_id).is_terminal, message="the old reply handled")
        assert manager.get(saga_id).status is SagaStatus.COMPLETED
        wait_until(lambda: zero.handled == 1, message="the reply counted")
        assert (zero.handled, others.handled) == (1, 0)
        assert partitioned.replies_queue in zero.consuming
        assert partitioned.replies_queue not in others.consuming
    finally:
        manager.close()


def test_quorum_reply_partitions_and_service_queues_are_declared_as_quorum_queues(
    broker_url: str, topology: Topology
) -> None:
    quorum = dataclasses.replace(topology, reply_partitions=2, queue_type="quorum")
    try:
        with channel_to(broker_url) as channel:
            quorum.declare_service(channel, "hotel", ["Hotel.Hold"])
            quorum.declare(channel)  # again: idempotent
        for queue, classic in (
            (quorum.reply_partition_queue(1), {"x-single-active-consumer": True}),
            (quorum.service_queue("hotel"), None),
        ):
            # The broker refuses to declare as classic a queue that exists as a quorum queue.
            with (
                channel_to(broker_url) as channel,
                pytest.raises(pika.exceptions.ChannelClosedByBroker) as refused,
            ):
                channel.queue_declare(queue, durable=True, arguments=classic)
            assert refused.value.reply_code == 406
            assert "x-queue-type" in str(refused.value)
    finally:
        with channel_to(broker_url) as channel:
            for queue in quorum.reply_partition_queues:
                channel.queue_delete(queue)
    with pytest.raises(ValueError, match="unknown queue type"):
        Topology("t", queue_type="mirrored")
