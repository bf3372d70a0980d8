"""The RabbitMQ transport, reply consumer and participant, against the real local broker."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import pika
import pytest
from support.broker import Background, close_connections, wait_until

from sagalog.domain import (
    Command,
    CommandKind,
    Outcome,
    ReplyOutcome,
    Saga,
    SagaDefinition,
    SagaStatus,
    Step,
    command_id_for,
)
from sagalog.infrastructure.messaging.relay import CommandRelay
from sagalog.infrastructure.messaging.transport import TransportError
from sagalog.infrastructure.rabbitmq import (
    RabbitMQTransport,
    ReceivedMessage,
    ReplyConsumer,
    Topology,
    read_dead_letters,
)
from sagalog.infrastructure.rabbitmq.dead_letters import HEADER_DEAD_LETTER_ATTEMPTS
from sagalog.infrastructure.rabbitmq.topology import (
    HEADER_ATTEMPT,
    HEADER_CAUSATION_ID,
    HEADER_COMMAND_ID,
    HEADER_CORRELATION_ID,
    channel_to,
    queue_depth,
)
from sagalog.infrastructure.services.participant import (
    CommandFailed,
    Participant,
    SQLiteProcessedCommands,
    command_from_message,
)
from sagalog.process import Reply, SagaManager
from sagalog.process.manager import ReplyInput, ReplyResult

ORDER = SagaDefinition(
    "Order",
    [
        Step(name="reserve", action="Inventory.Reserve", compensation="Inventory.Release"),
        Step(name="charge", action="Payment.Charge", compensation="Payment.Refund"),
        Step(name="ship", action="Shipping.Create"),
    ],
)


@pytest.fixture
def manager(database_url: str) -> Iterator[SagaManager]:
    app = SagaManager([ORDER], database_url)
    yield app
    app.close()


def _command(name: str = "Inventory.Reserve", *, attempt: int = 1) -> Command:
    saga_id = uuid4()
    return Command(
        command_id=uuid4(),
        saga_id=saga_id,
        saga_type="Order",
        step="reserve",
        kind=CommandKind.ACTION,
        name=name,
        attempt=attempt,
        payload={"data": {"n": 1}, "results": {}},
        deadline=None,
        causation_id="upstream-7",
    )


def _bind(broker_url: str, topology: Topology, service: str, *names: str) -> str:
    with channel_to(broker_url) as channel:
        return topology.declare_service(channel, service, names)


def _publish_raw(broker_url: str, queue: str, body: bytes, message_id: str) -> None:
    """Publish ``body`` to ``queue`` (declared durable if missing), confirmed."""
    with channel_to(broker_url) as channel:
        channel.queue_declare(queue, durable=True)
        channel.basic_publish(
            "",
            queue,
            body,
            pika.BasicProperties(delivery_mode=2, message_id=message_id),
            mandatory=True,
        )


def _reply(saga_id: UUID, step: str, message_id: str, **fields: Any) -> bytes:
    data: dict[str, Any] = {
        "message_id": message_id,
        "saga_id": str(saga_id),
        "command_id": str(_command_id(saga_id, step, fields)),
        "step": step,
        "outcome": "completed",
    }
    data.update(fields)
    return json.dumps(data).encode()


def _command_id(saga_id: UUID, step: str, fields: dict[str, Any]) -> UUID:
    """The id of the command a reply with ``fields`` answers (attempt 1 unless said)."""
    kind = CommandKind(fields.get("kind", "action"))
    return command_id_for(saga_id, step, kind, int(fields.get("attempt") or 1))


# -- the transport -------------------------------------------------------------------


def test_send_returns_once_confirmed_with_ids_in_properties_and_headers(
    broker_url: str, topology: Topology
) -> None:
    queue = _bind(broker_url, topology, "inventory", "Inventory.Reserve")
    transport = RabbitMQTransport(broker_url, topology=topology)
    command = _command()
    try:
        transport.send(command)
    finally:
        transport.close()
    assert transport.confirmed == 1
    with channel_to(broker_url) as channel:
        method, props, body = channel.basic_get(queue, auto_ack=True)
    assert method is not None
    assert props is not None
    assert body is not None
    assert command_from_message(body) == command
    assert props.delivery_mode == 2  # persistent
    assert props.message_id == str(command.command_id)
    assert props.correlation_id == str(command.saga_id)
    assert props.reply_to == topology.replies_queue
    headers = props.headers or {}
    assert headers[HEADER_COMMAND_ID] == str(command.command_id)
    assert headers[HEADER_CORRELATION_ID] == str(command.saga_id)
    assert headers[HEADER_CAUSATION_ID] == "upstream-7"
    assert headers[HEADER_ATTEMPT] == 1


def test_a_command_no_queue_is_bound_to_is_refused_not_lost(
    broker_url: str, topology: Topology
) -> None:
    transport = RabbitMQTransport(broker_url, topology=topology)
    try:
        with pytest.raises(TransportError, match=r"no queue is bound to command 'Nobody\.Home'"):
            transport.send(_command("Nobody.Home"))
    finally:
        transport.close()
    assert transport.confirmed == 0


def test_an_unreachable_broker_is_a_transport_error() -> None:
    transport = RabbitMQTransport("amqp://guest:guest@127.0.0.1:1/%2F")
    with pytest.raises(TransportError, match=r"cannot reach RabbitMQ at 127\.0\.0\.1:1"):
        transport.send(_command())


def test_send_reconnects_after_the_broker_closed_its_connection(
    broker_url: str, topology: Topology
) -> None:
    queue = _bind(broker_url, topology, "inventory", "Inventory.Reserve")
    name = f"sagalog-relay-{uuid4().hex[:8]}"
    transport = RabbitMQTransport(broker_url, topology=topology, connection_name=name)
    try:
        transport.send(_command())
        assert close_connections(name) == 1
        transport.send(_command())
    finally:
        transport.close()
    assert queue_depth(queue, broker_url) == 2


def test_relay_advances_only_past_commands_the_broker_confirmed(
    broker_url: str, topology: Topology, manager: SagaManager
) -> None:
    relay = CommandRelay(manager, RabbitMQTransport(broker_url, topology=topology))
    try:
        manager.start("Order", {"n": 1})
        with pytest.raises(TransportError):
            relay.pump()  # nobody bound to Inventory.Reserve yet: unroutable
        assert relay.position == 0
        queue = _bind(broker_url, topology, "inventory", "Inventory.Reserve")
        assert relay.pump() == 1
        assert relay.position > 0
        assert relay.lag() == 0
        assert queue_depth(queue, broker_url) == 1
    finally:
        relay.transport.close()


# -- the round trip ------------------------------------------------------------------


def _order_services(
    broker_url: str,
    topology: Topology,
    *,
    charge_fails: bool = False,
    calls: list[str] | None = None,
) -> list[Participant]:
    seen = calls if calls is not None else []
    inventory = Participant("inventory", url=broker_url, topology=topology)
    payment = Participant("payment", url=broker_url, topology=topology)
    shipping = Participant("shipping", url=broker_url, topology=topology)

    @inventory.handles("Inventory.Reserve")
    def reserve(command: Command) -> dict[str, Any]:
        seen.append(command.name)
        return {"reservation": f"r-{command.payload['data']['n']}"}

    @inventory.handles("Inventory.Release")
    def release(command: Command) -> None:
        seen.append(command.name)

    @payment.handles("Payment.Charge")
    def charge(command: Command) -> dict[str, Any]:
        seen.append(command.name)
        if charge_fails:
            raise CommandFailed("card declined")
        return {"charged": 10}

    @payment.handles("Payment.Refund")
    def refund(command: Command) -> None:
        seen.append(command.name)

    @shipping.handles("Shipping.Create")
    def ship(command: Command) -> str:
        seen.append(command.name)
        return "parcel-1"

    return [inventory, payment, shipping]


def _run_everything(
    background: Background,
    manager: SagaManager,
    broker_url: str,
    topology: Topology,
    participants: list[Participant],
) -> ReplyConsumer:
    consumer = ReplyConsumer(manager, broker_url, topology=topology)
    for participant in participants:
        background.start(participant.service, participant.run)
    background.start("replies", consumer.run)
    for loop in [*participants, consumer]:
        wait_until(loop.ready.is_set, message=f"{loop.connection_name} consuming")
    relay = CommandRelay(manager, RabbitMQTransport(broker_url, topology=topology))

    def run_relay(stop: threading.Event) -> None:
        try:
            relay.run(stop, poll_interval=0.02)
        finally:
            relay.transport.close()

    background.start("relay", run_relay)
    return consumer


def test_relay_broker_and_participants_complete_a_saga(
    broker_url: str, topology: Topology, manager: SagaManager, background: Background
) -> None:
    calls: list[str] = []
    services = _order_services(broker_url, topology, calls=calls)
    consumer = _run_everything(background, manager, broker_url, topology, services)
    saga_id = manager.start("Order", {"n": 5})
    wait_until(lambda: manager.get(saga_id).is_terminal, message="the saga to end")
    saga = manager.get(saga_id)
    assert saga.status is SagaStatus.COMPLETED
    assert saga.results == {
        "reserve": {"reservation": "r-5"},
        "charge": {"charged": 10},
        "ship": "parcel-1",
    }
    assert calls == ["Inventory.Reserve", "Payment.Charge", "Shipping.Create"]
    # the consumer counts a reply after acking it, just after the commit that ended the saga
    wait_until(lambda: consumer.handled == 3, message="the consumer to ack all three replies")
    assert consumer.dead_lettered == 0
    assert not background.errors


def test_a_failed_step_is_compensated_through_the_broker(
    broker_url: str, topology: Topology, manager: SagaManager, background: Background
) -> None:
    calls: list[str] = []
    services = _order_services(broker_url, topology, charge_fails=True, calls=calls)
    _run_everything(background, manager, broker_url, topology, services)
    saga_id = manager.start("Order", {"n": 1})
    wait_until(lambda: manager.get(saga_id).is_terminal, message="the saga to end")
    saga = manager.get(saga_id)
    assert saga.status is SagaStatus.FAILED
    assert "card declined" in (saga.failure_reason or "")
    assert calls == ["Inventory.Reserve", "Payment.Charge", "Inventory.Release"]


# -- dead letters ----------------------------------------------------------------------


def test_poison_replies_are_dead_lettered_with_reasons_and_the_next_is_processed(
    broker_url: str, topology: Topology, manager: SagaManager, background: Background
) -> None:
    saga_id = manager.start("Order", {"n": 1})
    dead: list[str] = []
    consumer = ReplyConsumer(
        manager,
        broker_url,
        topology=topology,
        on_dead_letter=lambda delivery, reason, error: dead.append(reason),
    )
    background.start("replies", consumer.run)
    wait_until(consumer.ready.is_set, message="reply consumer consuming")
    queue = topology.replies_queue
    _publish_raw(broker_url, queue, b"{not json", "m-garbage")
    _publish_raw(broker_url, queue, _reply(uuid4(), "reserve", "m-nosaga"), "m-nosaga")
    _publish_raw(broker_url, queue, _reply(saga_id, "teleport", "m-nostep"), "m-nostep")
    _publish_raw(broker_url, queue, _reply(saga_id, "ship", "m-early"), "m-early")
    _publish_raw(broker_url, queue, _reply(saga_id, "reserve", "m-good"), "m-good")
    wait_until(lambda: consumer.handled == 1, message="the valid reply to be handled")
    assert consumer.dead_lettered == 4
    letters = read_dead_letters(topology.replies_dead_letter_queue, broker_url)
    assert [letter.message_id for letter in letters] == [
        "m-garbage",
        "m-nosaga",
        "m-nostep",
        "m-early",
    ]
    assert letters[0].error == "InvalidReplyError"
    assert "invalid reply" in letters[0].reason
    assert letters[1].error == "SagaNotFoundError"
    assert str(letters[1].body, "utf-8").find("m-nosaga") > 0
    assert letters[2].error == "UnknownStepError"
    assert "teleport" in letters[2].reason
    assert letters[3].error == "UnexpectedReplyError"
    assert "never dispatched" in letters[3].reason
    assert dead == [letter.reason for letter in letters]
    assert manager.get(saga_id).steps["reserve"].status.value == "COMPLETED"
    assert queue_depth(queue, broker_url) == 0


class FlakyManager(SagaManager):
    """A manager whose ``handle_many`` raises a non-database error the first ``failures`` times."""

    def __init__(self, *args: Any, failures: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.failures = failures
        self.calls = 0

    def handle_many(self, replies: Iterable[ReplyInput], **kwargs: Any) -> list[ReplyResult]:
        self.calls += 1
        if self.calls <= self.failures:
            raise RuntimeError(f"hiccup #{self.calls}")
        return super().handle_many(replies, **kwargs)


@pytest.mark.parametrize(("failures", "expect_dead"), [(2, False), (10, True)])
def test_a_reply_that_keeps_failing_is_retried_in_place_then_dead_lettered(
    broker_url: str,
    topology: Topology,
    database_url: str,
    background: Background,
    failures: int,
    expect_dead: bool,
) -> None:
    manager = FlakyManager([ORDER], database_url, failures=failures)
    try:
        saga_id = manager.start("Order", {"n": 1})
        consumer = ReplyConsumer(
            manager, broker_url, topology=topology, max_attempts=3, retry_backoff=0.001
        )
        background.start("replies", consumer.run)
        wait_until(consumer.ready.is_set, message="reply consumer consuming")
        _publish_raw(broker_url, topology.replies_queue, _reply(saga_id, "reserve", "m-1"), "m-1")
        wait_until(lambda: consumer.handled + consumer.dead_lettered == 1, message="an outcome")
        status = manager.get(saga_id).steps["reserve"].status.value
        letters = read_dead_letters(topology.replies_dead_letter_queue, broker_url)
        if expect_dead:
            assert status == "DISPATCHED"
            assert [letter.message_id for letter in letters] == ["m-1"]
            assert letters[0].reason.startswith("failed 3 times, last: RuntimeError")
            assert letters[0].headers[HEADER_DEAD_LETTER_ATTEMPTS] == 3
        else:
            assert status == "COMPLETED"
            assert letters == []
            assert manager.calls == 3
    finally:
        manager.close()


# -- ack after commit ----------------------------------------------------------------------


class Crash(BaseException):
    """Stands for the process dying: not an Exception, so nothing catches it."""


class CrashingManager(SagaManager):
    """Dies inside ``handle_many`` before anything is committed."""

    def handle_many(self, replies: Iterable[ReplyInput], **kwargs: Any) -> list[ReplyResult]:
        raise Crash("killed before commit")


@pytest.mark.requires_database(reason="two managers share one store")
def test_a_consumer_that_dies_before_commit_leaves_the_reply_for_the_next(
    broker_url: str, topology: Topology, database_url: str
) -> None:
    survivor = SagaManager([ORDER], database_url)
    doomed = CrashingManager([ORDER], database_url)
    first, second = Background(), Background()
    try:
        saga_id = survivor.start("Order", {"n": 1})
        _publish_raw(broker_url, topology.replies_queue, _reply(saga_id, "reserve", "m-1"), "m-1")
        dying = ReplyConsumer(doomed, broker_url, topology=topology)
        thread = first.start("doomed", dying.run)
        thread.join(timeout=20)
        assert isinstance(first.errors.get("doomed"), Crash)
        assert survivor.get(saga_id).steps["reserve"].status.value == "DISPATCHED"

        seen: list[tuple[str, bool, Outcome]] = []

        def note(reply: Reply, outcome: ReplyOutcome, delivery: ReceivedMessage) -> None:
            seen.append((reply.message_id, delivery.redelivered, outcome.outcome))

        consumer = ReplyConsumer(survivor, broker_url, topology=topology, on_reply=note)
        second.start("survivor", consumer.run)
        wait_until(lambda: consumer.handled == 1, message="the redelivered reply")
        assert seen == [("m-1", True, Outcome.APPLIED)]
        completed = [e for e in survivor.history(saga_id) if isinstance(e, Saga.StepCompleted)]
        assert [e.step for e in completed] == ["reserve"]
    finally:
        first.close()
        second.close()
        doomed.close()
        survivor.close()


def test_a_reply_redelivered_after_commit_is_acked_as_a_duplicate(
    broker_url: str, topology: Topology, manager: SagaManager, background: Background
) -> None:
    saga_id = manager.start("Order", {"n": 1})
    outcomes: list[Outcome] = []
    consumer = ReplyConsumer(
        manager,
        broker_url,
        topology=topology,
        on_reply=lambda reply, outcome, delivery: outcomes.append(outcome.outcome),
    )
    background.start("replies", consumer.run)
    for _ in range(2):  # the same reply, published twice (at-least-once upstream)
        _publish_raw(broker_url, topology.replies_queue, _reply(saga_id, "reserve", "m-1"), "m-1")
    # on_reply runs after the count goes up: wait for the outcomes themselves.
    wait_until(lambda: len(outcomes) == 2, message="both copies handled")
    assert outcomes == [Outcome.APPLIED, Outcome.DUPLICATE]
    assert queue_depth(topology.replies_queue, broker_url) == 0


# -- connection loss ----------------------------------------------------------------------


def test_consumer_reconnects_and_loses_or_reorders_no_reply(
    broker_url: str, topology: Topology, manager: SagaManager, background: Background
) -> None:
    sagas = [manager.start("Order", {"n": i}) for i in range(12)]
    name = f"sagalog-replies-{uuid4().hex[:8]}"
    handled: list[str] = []

    def note(reply: Reply, outcome: ReplyOutcome, delivery: ReceivedMessage) -> None:
        handled.append(reply.message_id)
        if len(handled) == 4:
            assert close_connections(name) == 1  # the broker drops us mid-stream

    # Batches of four: the loss comes after the first batch was acked, with the
    # next ones delivered to the lost connection and not yet acked.
    consumer = ReplyConsumer(
        manager, broker_url, topology=topology, on_reply=note, connection_name=name, batch_size=4
    )
    published = []
    for i, saga_id in enumerate(sagas):
        published.append(f"m-{i}")
        _publish_raw(
            broker_url, topology.replies_queue, _reply(saga_id, "reserve", f"m-{i}"), f"m-{i}"
        )
    background.start("replies", consumer.run)
    wait_until(lambda: len(set(handled)) == len(sagas), timeout=30, message="every reply")
    assert consumer.reconnects >= 1
    assert list(dict.fromkeys(handled)) == published  # first sightings in publish order
    for saga_id in sagas:
        assert manager.get(saga_id).steps["charge"].status.value == "DISPATCHED"


# -- participants --------------------------------------------------------------------------


def test_a_participant_drops_a_duplicate_command_and_answers_it_again(
    broker_url: str, topology: Topology, manager: SagaManager, background: Background
) -> None:
    calls: list[UUID] = []
    inventory = Participant("inventory", url=broker_url, topology=topology)

    @inventory.handles("Inventory.Reserve")
    def reserve(command: Command) -> str:
        calls.append(command.command_id)
        return "ok"

    outcomes: list[Outcome] = []
    consumer = ReplyConsumer(
        manager,
        broker_url,
        topology=topology,
        on_reply=lambda reply, outcome, delivery: outcomes.append(outcome.outcome),
    )
    background.start("inventory", inventory.run)
    background.start("replies", consumer.run)
    wait_until(inventory.ready.is_set, message="participant consuming")
    saga_id = manager.start("Order", {"n": 1})
    command = next(manager.get(saga_id).commands())
    transport = RabbitMQTransport(broker_url, topology=topology)
    try:
        transport.send(command)
        transport.send(command)  # the relay re-sent it after a crash
    finally:
        transport.close()
    wait_until(lambda: consumer.handled == 2, message="both replies")
    assert calls == [command.command_id]
    assert inventory.handled == 1
    assert inventory.duplicates == 1
    assert outcomes == [Outcome.APPLIED, Outcome.DUPLICATE]
    completed = [e for e in manager.history(saga_id) if isinstance(e, Saga.StepCompleted)]
    assert len(completed) == 1


def test_a_sqlite_store_remembers_commands_across_participant_restarts(
    broker_url: str, topology: Topology, tmp_path: Path
) -> None:
    calls: list[UUID] = []

    def reserve(command: Command) -> str:
        calls.append(command.command_id)
        return "ok"

    command = _command()
    transport = RabbitMQTransport(broker_url, topology=topology)
    with channel_to(broker_url) as channel:
        topology.declare_service(channel, "inventory", ["Inventory.Reserve"])
    for life in range(2):
        store = SQLiteProcessedCommands(tmp_path / "inventory.db")
        participant = Participant(
            "inventory",
            {"Inventory.Reserve": reserve},
            url=broker_url,
            topology=topology,
            store=store,
        )
        runner = Background()
        try:
            runner.start("inventory", participant.run)
            transport.send(command)
            wait_until(
                lambda p=participant: p.handled + p.duplicates == 1,  # type: ignore[misc]
                message=f"the command in life {life}",
            )
        finally:
            runner.close()
            store.close()
        assert (participant.handled, participant.duplicates) == ((1, 0) if life == 0 else (0, 1))
    transport.close()
    assert calls == [command.command_id]
    replies = read_dead_letters(topology.replies_queue, broker_url)  # plain get of the queue
    assert [r.message_id for r in replies] == [f"{command.command_id}:reply"] * 2


def test_an_unreadable_command_goes_to_the_commands_dead_letter_queue(
    broker_url: str, topology: Topology, background: Background
) -> None:
    inventory = Participant(
        "inventory", {"Inventory.Reserve": lambda command: "ok"}, url=broker_url, topology=topology
    )
    background.start("inventory", inventory.run)
    wait_until(inventory.ready.is_set, message="participant consuming")
    _publish_raw(broker_url, inventory.queue, b'{"command_id": "nope"}', "c-bad")
    transport = RabbitMQTransport(broker_url, topology=topology)
    try:
        transport.send(_command())
    finally:
        transport.close()
    wait_until(lambda: inventory.handled == 1, message="the good command")
    letters = read_dead_letters(topology.commands_dead_letter_queue, broker_url)
    assert [letter.message_id for letter in letters] == ["c-bad"]
    assert letters[0].error == "InvalidCommandError"
    assert "unreadable command" in letters[0].reason


def test_a_handler_that_keeps_raising_answers_failed_after_its_attempts(
    broker_url: str, topology: Topology, background: Background
) -> None:
    attempts: list[int] = []

    def reserve(command: Command) -> str:
        attempts.append(command.attempt)
        raise ConnectionResetError("stock service down")

    inventory = Participant(
        "inventory",
        {"Inventory.Reserve": reserve},
        url=broker_url,
        topology=topology,
        max_attempts=3,
        retry_backoff=0.001,
    )
    background.start("inventory", inventory.run)
    wait_until(inventory.ready.is_set, message="participant consuming")
    transport = RabbitMQTransport(broker_url, topology=topology)
    try:
        transport.send(_command())
    finally:
        transport.close()
    wait_until(lambda: inventory.handled == 1, message="the answer")
    assert attempts == [1, 1, 1]
    [reply] = read_dead_letters(topology.replies_queue, broker_url)
    parsed = Reply.model_validate_json(reply.body)
    assert parsed.outcome == "failed"
    assert parsed.error == "ConnectionResetError: stock service down"
