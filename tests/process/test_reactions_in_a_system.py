"""Reactions to upstream applications inside an eventsourcing System, exactly once."""

from __future__ import annotations

from typing import ClassVar
from uuid import UUID

from eventsourcing.application import Application
from eventsourcing.domain import Aggregate, event
from eventsourcing.system import SingleThreadedRunner, System
from support.sagas import ORDER

from sagalog.domain import SagaDefinition, SagaStatus, StepStatus
from sagalog.process import (
    CompleteStep,
    FailStep,
    Reaction,
    SagaManager,
    StartSaga,
    saga_id_for,
)


class Order(Aggregate):
    @event("Placed")
    def __init__(self, items: int) -> None:
        self.items = items


class Reservation(Aggregate):
    @event("Reserved")
    def __init__(self, order_id: UUID) -> None:
        self.order_id = order_id

    @event("Rejected")
    def reject(self, reason: str) -> None:
        self.reason = reason


class Orders(Application[UUID]):
    def place(self, items: int) -> UUID:
        order = Order(items)
        self.save(order)
        return order.id


class Inventory(Application[UUID]):
    def reserve(self, order_id: UUID) -> UUID:
        reservation = Reservation(order_id)
        self.save(reservation)
        return reservation.id

    def reject(self, order_id: UUID, reason: str) -> None:
        reservation = Reservation(order_id)
        reservation.reject(reason)
        self.save(reservation)


class OrderSagas(SagaManager):
    definitions: ClassVar[list[SagaDefinition]] = [ORDER]
    reactions: ClassVar[list[Reaction]] = [
        StartSaga(
            Order.Placed,  # type: ignore[attr-defined]  # made by @event
            "Order",
            data=lambda e: {"items": e.items},
        ),
        CompleteStep(
            Reservation.Reserved,  # type: ignore[attr-defined]
            "Order",
            "reserve",
            key=lambda e: e.order_id,
            result=lambda e: {"reservation": str(e.originator_id)},
        ),
        FailStep(
            Reservation.Rejected,  # type: ignore[attr-defined]
            "Order",
            "reserve",
            key=lambda e: e.originator_id,
            error=lambda e: e.reason,
        ),
    ]


def _runner(database_url: str) -> SingleThreadedRunner[UUID]:
    system = System(pipes=[[Orders, OrderSagas], [Inventory, OrderSagas]])
    return SingleThreadedRunner(system, env={"SAGALOG_DATABASE_URL": database_url})


def test_upstream_events_start_a_saga_and_complete_its_step(database_url: str) -> None:
    runner = _runner(database_url)
    runner.start()
    try:
        orders, inventory, sagas = (
            runner.get(Orders),
            runner.get(Inventory),
            runner.get(OrderSagas),
        )
        order_id = orders.place(items=3)
        saga_id = saga_id_for("Order", order_id)
        saga = sagas.get(saga_id)
        assert saga.data == {"items": 3}
        assert saga.status is SagaStatus.PENDING
        reservation_id = inventory.reserve(order_id)
        saga = sagas.get(saga_id)
        assert saga.steps["reserve"].status is StepStatus.COMPLETED
        assert saga.steps["reserve"].result == {"reservation": str(reservation_id)}
        assert saga.pending_command is not None
        assert saga.pending_command.name == "Payment.Charge"
    finally:
        runner.stop()


def test_each_upstream_event_is_processed_exactly_once(database_url: str) -> None:
    runner = _runner(database_url)
    runner.start()
    try:
        orders, sagas = runner.get(Orders), runner.get(OrderSagas)
        order_id = orders.place(items=1)
        saga_id = saga_id_for("Order", order_id)
        version = sagas.get(saga_id).version
        # pulling the upstream log again finds nothing new: the tracking record holds
        sagas.pull_and_process("Orders")
        assert sagas.get(saga_id).version == version
        assert sagas.recorder.max_tracking_id("Orders") == orders.recorder.max_notification_id()
    finally:
        runner.stop()


def test_events_for_unknown_sagas_are_ignored(database_url: str) -> None:
    runner = _runner(database_url)
    runner.start()
    try:
        inventory, sagas = runner.get(Inventory), runner.get(OrderSagas)
        head = sagas.recorder.max_notification_id()
        inventory.reject(order_id=UUID(int=7), reason="no stock")
        assert sagas.recorder.max_notification_id() == head
    finally:
        runner.stop()
