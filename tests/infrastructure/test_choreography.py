"""Choreographed sagas: services react to events; the tracker records them as sagas."""

from __future__ import annotations

from collections.abc import Iterator
from uuid import uuid4

import pytest
from support.broker import Background, wait_until

from sagalog.domain import SagaNotFoundError, SagaStatus, StepStatus
from sagalog.infrastructure.rabbitmq import RabbitMQEventBus, RabbitMQEventSubscriber, Topology
from sagalog.infrastructure.rabbitmq.events import delete_event_queues
from sagalog.infrastructure.rabbitmq.topology import channel_to
from sagalog.infrastructure.services.choreography import (
    AWAIT_PREFIX,
    ORDER_CHOREOGRAPHY,
    ChoreographyTracker,
    EventMessage,
    InProcessEventBus,
    order_created,
    order_services,
)
from sagalog.process import SagaManager


@pytest.fixture
def manager(database_url: str) -> Iterator[SagaManager]:
    app = SagaManager(ChoreographyTracker.definitions([ORDER_CHOREOGRAPHY]), database_url)
    yield app
    app.close()


def _names(manager: SagaManager, saga_id: object) -> list[str]:
    assert isinstance(saga_id, type(uuid4()))
    return [type(e).__name__ for e in manager.history(saga_id)]


def _wire(manager: SagaManager, **failures: bool) -> tuple[InProcessEventBus, ChoreographyTracker]:
    bus = InProcessEventBus()
    for service in order_services(
        payment_fails=lambda e: failures.get("payment", False),
        shipment_fails=lambda e: failures.get("shipment", False),
    ):
        bus.attach(service)
    tracker = ChoreographyTracker(manager, [ORDER_CHOREOGRAPHY])
    bus.attach_tracker(tracker)
    return bus, tracker


def test_a_successful_choreography_shows_up_as_a_completed_saga(manager: SagaManager) -> None:
    bus, tracker = _wire(manager)
    created = order_created({"order_id": "o-1", "items": 2})
    bus.publish(created)
    bus.deliver()
    assert [e.name for e in bus.published] == [
        "OrderCreated",
        "InventoryReserved",
        "PaymentProcessed",
        "ShipmentCreated",
    ]
    saga = manager.get(created.correlation_id)
    assert saga.saga_type == "OrderChoreography"
    assert saga.status is SagaStatus.COMPLETED
    assert saga.data == {"order_id": "o-1", "items": 2}
    assert saga.results["create_shipment"] == {"tracking": f"t-{created.correlation_id}"}
    assert tracker.unplaced == []
    # Causation: each event names the one it reacted to, all share the correlation id.
    for cause, effect in zip(bus.published, bus.published[1:], strict=False):
        assert effect.causation_id == cause.event_id
        assert effect.correlation_id == created.correlation_id


def test_a_failed_payment_is_compensated_by_inventory(manager: SagaManager) -> None:
    bus, tracker = _wire(manager, payment=True)
    created = order_created({"order_id": "o-2"})
    bus.publish(created)
    bus.deliver()
    assert [e.name for e in bus.published] == [
        "OrderCreated",
        "InventoryReserved",
        "PaymentFailed",
        "InventoryReleased",
    ]
    saga = manager.get(created.correlation_id)
    assert saga.status is SagaStatus.FAILED
    assert "card declined" in (saga.failure_reason or "")
    assert saga.steps["reserve_inventory"].status is StepStatus.COMPENSATED
    assert tracker.unplaced == []


def test_a_failed_shipment_is_compensated_newest_first(manager: SagaManager) -> None:
    bus, tracker = _wire(manager, shipment=True)
    created = order_created({"order_id": "o-3"})
    bus.publish(created)
    bus.deliver()
    assert [e.name for e in bus.published][-3:] == [
        "ShipmentFailed",
        "PaymentRefunded",
        "InventoryReleased",
    ]
    saga = manager.get(created.correlation_id)
    assert saga.status is SagaStatus.FAILED
    assert saga.steps["process_payment"].status is StepStatus.COMPENSATED
    assert saga.steps["reserve_inventory"].status is StepStatus.COMPENSATED
    history = manager.history(created.correlation_id)
    undo_order = [e.step for e in history if type(e).__name__ == "CompensationCompleted"]  # type: ignore[attr-defined]
    assert undo_order == ["process_payment", "reserve_inventory"]
    assert tracker.unplaced == []


def test_the_tracked_saga_awaits_events_not_commands(manager: SagaManager) -> None:
    bus, _tracker = _wire(manager)
    created = order_created({"order_id": "o-4"})
    bus.publish(created)
    bus.deliver(limit=1)  # only OrderCreated delivered: inventory has not answered yet
    saga = manager.get(created.correlation_id)
    assert saga.status is SagaStatus.PENDING
    [pending] = list(saga.commands())
    assert pending.name == f"{AWAIT_PREFIX}InventoryReserved"


def test_redelivered_events_change_nothing(manager: SagaManager) -> None:
    bus, tracker = _wire(manager)
    created = order_created({"order_id": "o-5"})
    bus.publish(created)
    bus.deliver()
    before = _names(manager, created.correlation_id)
    for event in list(bus.published):  # every event delivered a second time
        bus.publish(event)
    bus.deliver()
    assert _names(manager, created.correlation_id) == before
    # Services answered the copies from memory, with the same event ids.
    ids = [e.event_id for e in bus.published]
    assert len(set(ids)) == 4
    assert tracker.unplaced == []


def test_an_event_out_of_the_declared_order_is_reported_not_applied(
    manager: SagaManager,
) -> None:
    tracker = ChoreographyTracker(manager, [ORDER_CHOREOGRAPHY])
    created = order_created({"order_id": "o-6"})
    tracker.observe(created)
    stray = created.caused("ShipmentCreated")  # the shipment before inventory answered
    [result] = tracker.observe(stray)
    assert result.problem is not None
    assert "UnexpectedReplyError" in result.problem
    assert tracker.unplaced == [result]
    assert manager.get(created.correlation_id).status is SagaStatus.PENDING


def test_event_messages_round_trip_through_json() -> None:
    event = EventMessage("PaymentFailed", uuid4(), {"reason": "declined"}, causation_id="e-1")
    assert EventMessage.from_json(event.to_json()) == event


def test_choreography_over_rabbitmq_reaches_the_same_ends(
    broker_url: str, topology: Topology, manager: SagaManager, background: Background
) -> None:
    good, bad = order_created({"order_id": "good"}), order_created({"order_id": "bad"})
    services = order_services(payment_fails=lambda e: e.correlation_id == bad.correlation_id)
    tracker = ChoreographyTracker(manager, [ORDER_CHOREOGRAPHY])
    loops = [
        RabbitMQEventSubscriber.for_service(s, broker_url, topology=topology) for s in services
    ]
    loops.append(RabbitMQEventSubscriber.for_tracker(tracker, broker_url, topology=topology))
    try:
        for loop in loops:
            background.start(loop.name, loop.run)
        for loop in loops:
            wait_until(loop.ready.is_set, message=f"{loop.name} subscribed")
        bus = RabbitMQEventBus(broker_url, topology=topology)
        try:
            bus.publish(good)
            bus.publish(bad)
        finally:
            bus.close()

        def ended() -> bool:
            try:
                return all(manager.get(e.correlation_id).is_terminal for e in (good, bad))
            except SagaNotFoundError:  # the tracker has not seen OrderCreated yet
                return False

        wait_until(ended, message="both choreographies to end")
        assert manager.get(good.correlation_id).status is SagaStatus.COMPLETED
        assert manager.get(bad.correlation_id).status is SagaStatus.FAILED
        assert tracker.unplaced == []
    finally:
        background.close()
        with channel_to(broker_url) as channel:
            delete_event_queues(channel, topology, [loop.name for loop in loops])


def test_choreographed_sagas_appear_in_list_stuck_and_show(tmp_path: object) -> None:
    import json
    from pathlib import Path

    from typer.testing import CliRunner

    from sagalog.infrastructure.cli import app

    assert isinstance(tmp_path, Path)
    url = f"sqlite:///{tmp_path / 'choreo.db'}"
    tracked = SagaManager(ChoreographyTracker.definitions([ORDER_CHOREOGRAPHY]), url)
    try:
        bus, _ = _wire(tracked, payment=True)
        failed = order_created({"order_id": "o-7", "items": 1})
        bus.publish(failed)
        bus.deliver()
        # Only the tracker hears this one: the inventory service never answers.
        quiet = InProcessEventBus()
        quiet.attach_tracker(ChoreographyTracker(tracked, [ORDER_CHOREOGRAPHY]))
        waiting = order_created({"order_id": "o-8", "items": 1})
        quiet.publish(waiting)
        quiet.deliver()
    finally:
        tracked.close()
    runner = CliRunner()
    listed = runner.invoke(app, ["list", "--database-url", url, "--json"])
    assert listed.exit_code == 0, listed.output
    rows = {row["saga_id"]: row for row in json.loads(listed.stdout)}
    assert rows[str(failed.correlation_id)]["saga_type"] == "OrderChoreography"
    assert rows[str(failed.correlation_id)]["status"] == "FAILED"
    assert rows[str(waiting.correlation_id)]["status"] in ("PENDING", "STARTED")
    shown = runner.invoke(app, ["show", str(failed.correlation_id), "--database-url", url])
    assert shown.exit_code == 0, shown.output
    assert "CompensationCompleted" in shown.stdout
    stuck = runner.invoke(
        app, ["stuck", "--database-url", url, "--json", "--at", "2100-01-01T00:00:00+00:00"]
    )
    assert stuck.exit_code == 0, stuck.output
    assert str(waiting.correlation_id) in stuck.stdout
    assert str(failed.correlation_id) not in stuck.stdout  # ended sagas are never stuck
